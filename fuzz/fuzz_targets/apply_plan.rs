//! `stint apply` files: parse as JSON, YAML and TOML, and plan each declaration against
//! an empty server (everything to create) and with pruning on.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use stint::cli::client::apply::{FileFormat, Scope, Snapshot, parse, plan};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let scope = Scope {
        partition: "aws".into(),
        account: "123456789012".into(),
        caller_user: Some("admin".into()),
        caller_role: None,
        prune: true,
    };
    for format in [FileFormat::Json, FileFormat::Yaml, FileFormat::Toml] {
        if let Ok(declaration) = parse(Path::new("fuzz"), &text, format) {
            let _ = plan(&declaration, &Snapshot::default(), &scope);
        }
    }
});
