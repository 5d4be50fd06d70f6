//! Alertmanager webhook bodies: never a panic; every firing alert's key is one line.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(n) = rollbackd::parsers::alertmanager(data, jiff::Timestamp::UNIX_EPOCH) {
        for e in &n.firing {
            assert!(!e.dedupe_key.contains(['\n', '\r']), "{:?}", e.dedupe_key);
        }
    }
});
