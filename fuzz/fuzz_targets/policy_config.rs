//! Policy files and rollbackd.yaml: errors with a position, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = rollbackd::parsers::policy_file(std::path::Path::new("fuzz.yaml"), text);
    let _ = serde_saphyr::from_str::<rollbackd::Config>(text);
});
