//! Slack's signature check over arbitrary headers and bodies: never a panic, never accepts
//! without the secret's signature.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rollbackd::parsers::SecretString;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let (ts, sig, body) = (parts.next(), parts.next(), parts.next().unwrap_or(""));
    let secrets = [SecretString::new("fuzz-secret".to_string())];
    let ok = rollbackd::parsers::slack_signature(ts, sig, body.as_bytes(), &secrets, 1_700_000_000);
    assert!(ok.is_err() || sig.is_some_and(|s| s.starts_with("v0=")));
    let _ = rollbackd::parsers::chat_args(body);
});
