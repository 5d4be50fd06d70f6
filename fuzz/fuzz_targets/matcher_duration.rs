//! Matchers and durations: never a panic, and a matcher prints what parses back to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rollbackd::parsers::Matcher;

fuzz_target!(|text: &str| {
    if let Ok(m) = text.parse::<Matcher>() {
        let again: Matcher = m.to_string().parse().expect("a printed matcher parses");
        assert_eq!(again.to_string(), m.to_string());
    }
    let _ = text.parse::<rollbackd::Duration>();
});
