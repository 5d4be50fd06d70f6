//! Flux notification-controller events (fluxcd/pkg runtime/events): never a panic; an event
//! it acts on names a full commit id (the revision that bounds the blame), carries the parser's
//! labels and at most 16 from metadata, and has a one-line key.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rollbackd::parsers::ControllerEvent;

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = rollbackd::parsers::flux(data, jiff::Timestamp::UNIX_EPOCH) else { return };
    let (ControllerEvent::Failed(e) | ControllerEvent::Healthy(e)) = parsed else { return };
    let sha = &e.labels["sha"];
    assert!(sha.len() == 40 || sha.len() == 64, "{sha:?}");
    assert!(sha.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{sha:?}");
    assert_eq!(e.applied_revision(), Some(sha.as_str()));
    assert!(e.labels.len() <= 10 + 16, "{} labels", e.labels.len());
    assert!(e.annotations.values().all(|v| v.len() <= 256 + "…".len()));
    assert!(!e.dedupe_key.is_empty());
});
