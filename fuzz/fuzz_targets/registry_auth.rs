//! What a registry and its token service send back: a `WWW-Authenticate` challenge, the realm
//! it names, the token answer. Never a panic; a realm that passes is an https URL (the registry
//! asked over https) of bounded length with a host and no user info; a token that passes is
//! visible ASCII (it goes into a header) and lasts at most an hour.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rollbackd::parsers::{RegistryChallenge, registry_challenge, registry_realm, registry_token_answer};

fuzz_target!(|data: &[u8]| {
    if let Some((token, life)) = registry_token_answer(data) {
        assert!(!token.expose().is_empty() && token.expose().bytes().all(|b| b.is_ascii_graphic()));
        assert!(life.as_secs() <= 3600);
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Some(RegistryChallenge::Bearer { realm, service }) = registry_challenge(text) else { return };
    assert!(service.is_none_or(|s| s.len() <= 255 && !s.chars().any(char::is_control)));
    if let Ok(url) = registry_realm(&realm, false) {
        let rest = &url[8..];
        assert!(url[..8].eq_ignore_ascii_case("https://") && url.len() <= 1024, "{url:?}");
        let authority = rest.split(['/', '?']).next().unwrap();
        assert!(!authority.is_empty() && !authority.contains('@'), "{url:?}");
    }
});
