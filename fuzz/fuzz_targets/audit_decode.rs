//! Stored audit records: decode (as `stint audit verify` and the chain reader do), hash,
//! re-serialise, cap and redact. The size cap is an invariant: after `cap_size` an event's
//! canonical bytes fit `MAX_EVENT_BYTES`, whatever it held.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stint::audit::chain::{Record, chain_hash};
use stint::audit::event::{MAX_EVENT_BYTES, redact};

fuzz_target!(|data: &[u8]| {
    if let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(data) {
        redact(&mut value);
    }
    let Ok(record) = Record::decode(7, data) else {
        return;
    };
    let prev = record.hash_bytes().unwrap_or([0; 32]);
    let _ = chain_hash(&prev, &record.event);
    let mut event = record.event;
    redact(&mut event.params);
    event.cap_size();
    assert!(event.canonical_bytes().len() <= MAX_EVENT_BYTES);
});
