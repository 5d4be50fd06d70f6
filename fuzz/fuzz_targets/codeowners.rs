//! CODEOWNERS files (anyone with push access writes one): never a panic; every line that is not
//! blank or a comment is a rule or a skip; asking who owns any path never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (file, path) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], String::from_utf8_lossy(&data[i + 1..]).into_owned()),
        None => (data, "apps/checkout/prod/deployment.yaml".to_string()),
    };
    if let Ok(c) = rollbackd::parsers::codeowners::Codeowners::parse("CODEOWNERS", file) {
        let text = String::from_utf8_lossy(file);
        let meaningful = text.lines().filter(|l| !l.trim().is_empty() && !l.trim().starts_with('#')).count();
        assert!(c.rules.len() + c.skipped.len() <= meaningful);
        let _ = c.owners_of(&path);
    }
});
