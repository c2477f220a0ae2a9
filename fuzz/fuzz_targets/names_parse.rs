//! Small parsers on the request path: ARNs, IAM names, paths and tags, audit outcome
//! and hash text, the CLI's duration, key=value and RFC 3339 flags, and the PROXY header
//! (v1 or v2) a load balancer puts before a connection's bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stint::audit::chain::decode_hash;
use stint::audit::event::{Outcome, is_secret_key};
use stint::cli::client::duration::parse_duration;
use stint::cli::client::{parse_key_value, parse_rfc3339};
use stint::core::model::{
    Arn, NameKind, Tag, path_or_root, validate_name, validate_path, validate_tags,
};
use stint::core::policy::over_match_cap;
use stint::core::proxy_header::{self, Source};

const NAME_KINDS: [NameKind; 7] = [
    NameKind::User,
    NameKind::Group,
    NameKind::Role,
    NameKind::Policy,
    NameKind::InlinePolicy,
    NameKind::RoleSessionName,
    NameKind::MfaDevice,
];

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((source, rest))) = proxy_header::split(data) {
        // The header is taken off the front; what follows is left whole.
        let shortest = match data.starts_with(proxy_header::V1_PREFIX) {
            true => proxy_header::V1_MIN_LEN,
            false => proxy_header::FIXED_LEN,
        };
        assert!(rest.len() + shortest <= data.len());
        assert_eq!(rest, &data[data.len() - rest.len()..]);
        if data.starts_with(proxy_header::V1_PREFIX) {
            assert!(data.len() - rest.len() <= proxy_header::V1_MAX_LEN);
        }
        if let Source::Client(client) = source {
            for again in [
                proxy_header::encode(client, client),
                proxy_header::encode_v1(client, client),
            ] {
                assert_eq!(proxy_header::split(&again), Ok(Some((source, &[][..]))));
            }
        }
    }
    let text = String::from_utf8_lossy(data);
    if let Some(arn) = Arn::parse(&text) {
        let _ = arn.kind_and_name();
        assert!(!over_match_cap(&text));
    }
    for kind in NAME_KINDS {
        let _ = validate_name(kind, &text);
    }
    let _ = validate_path(&text);
    let _ = path_or_root(&text);
    let tags: Vec<Tag> = text
        .lines()
        .map(|line| {
            let (key, value) = line.split_once('=').unwrap_or((line, ""));
            Tag {
                key: key.into(),
                value: value.into(),
            }
        })
        .collect();
    let _ = validate_tags(&tags);
    let _ = Outcome::parse(&text);
    let _ = decode_hash(&text);
    let _ = is_secret_key(&text);
    let _ = parse_duration(&text);
    let _ = parse_key_value(&text);
    let _ = parse_rfc3339(&text);
});
