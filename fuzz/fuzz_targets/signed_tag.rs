//! Tag objects and SSH signatures read back from the origin (anyone with push access writes
//! them): splitting a tag into payload and signature, and parsing and checking the signature,
//! never panic; the split loses no byte.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((payload, signature)) = rollbackd::parsers::split_signed_tag(data) {
        assert_eq!(payload.len() + signature.len(), data.len());
        let verdict = rollbackd::parsers::TrustedKeys::default().check(payload, signature);
        assert!(!verdict.trusted(), "no key is trusted, so nothing verifies");
    }
});
