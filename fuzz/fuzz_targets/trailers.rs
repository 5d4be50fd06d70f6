//! The audit reader: never a panic, and what it accepts has names we could have written.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Some(t) = rollbackd::git::Trailers::parse(text) {
        assert!(rollbackd::domain::ident::is_plain(&t.service) && rollbackd::domain::ident::is_plain(&t.env));
        assert!(rollbackd::RollbackId::parse(&t.id).is_some());
        assert_eq!(rollbackd::git::Trailers::parse(&t.append_to("x")).as_ref(), Some(&t));
    }
});
