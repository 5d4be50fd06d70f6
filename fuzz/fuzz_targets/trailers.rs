//! The audit reader: never a panic, and what it accepts has names we could have written.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Some(t) = rollbackd::parsers::Trailers::parse(text) {
        assert!(rollbackd::parsers::is_plain(&t.service) && rollbackd::parsers::is_plain(&t.env));
        assert!(rollbackd::RollbackId::parse(&t.id).is_some());
        assert_eq!(rollbackd::parsers::Trailers::parse(&t.append_to("x")).as_ref(), Some(&t));
    }
});
