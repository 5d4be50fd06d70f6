//! Webhook authentication. Every comparison is constant-time; a missing or wrong credential is
//! the same 401 whatever the reason, and no secret or presented credential is ever logged.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::secret::SecretString;

/// Equal in constant time and independent of either length: both sides are hashed first, so the
/// comparison always runs over 32 bytes.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    Sha256::digest(a).ct_eq(&Sha256::digest(b)).into()
}

/// Checks every accepted secret without stopping at the first match, so timing does not tell
/// which one (or whether an old one) matched.
fn any_matches(presented: &[u8], accepted: &[SecretString]) -> bool {
    accepted.iter().fold(false, |ok, s| ok | ct_eq(presented, s.expose().as_bytes()))
}

/// `Authorization: Bearer <token>`.
pub fn bearer(header: Option<&str>, tokens: &[SecretString]) -> bool {
    let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer "))) else {
        return false;
    };
    !tokens.is_empty() && any_matches(token.trim().as_bytes(), tokens)
}

/// `Authorization: Basic base64(user:password)`.
pub fn basic(header: Option<&str>, username: &str, passwords: &[SecretString]) -> bool {
    let Some(encoded) = header.and_then(|h| h.strip_prefix("Basic ").or_else(|| h.strip_prefix("basic "))) else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else { return false };
    let Some(colon) = decoded.iter().position(|&b| b == b':') else { return false };
    let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
    // Both checks always run.
    let user_ok = ct_eq(user, username.as_bytes());
    let password_ok = any_matches(password, passwords);
    user_ok & password_ok
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`, against each secret.
pub fn github_signature(header: Option<&str>, body: &[u8], secrets: &[SecretString]) -> bool {
    let Some(sig) = header.and_then(|h| h.trim().strip_prefix("sha256=")).and_then(hex_decode) else {
        return false;
    };
    secrets.iter().fold(false, |ok, secret| {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) else { return ok };
        mac.update(body);
        // verify_slice compares in constant time.
        ok | mac.verify_slice(&sig).is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(list: &[&str]) -> Vec<SecretString> {
        list.iter().map(|s| SecretString::new(*s)).collect()
    }

    #[test]
    fn githubs_published_example_verifies() {
        // From GitHub's "Validating webhook deliveries" documentation.
        let s = secrets(&["It's a Secret to Everybody"]);
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(github_signature(Some(sig), b"Hello, World!", &s));
        assert!(!github_signature(Some(sig), b"Hello, World?", &s));
        assert!(!github_signature(None, b"Hello, World!", &s));
        assert!(!github_signature(Some("sha1=757107"), b"Hello, World!", &s));
        assert!(!github_signature(Some("sha256=zz"), b"Hello, World!", &s));
        // Rotation: the old secret still verifies while both are configured.
        let rotated = secrets(&["new secret", "It's a Secret to Everybody"]);
        assert!(github_signature(Some(sig), b"Hello, World!", &rotated));
    }

    #[test]
    fn bearer_and_basic() {
        let tokens = secrets(&["t1", "t2"]);
        assert!(bearer(Some("Bearer t2"), &tokens));
        assert!(!bearer(Some("Bearer t3"), &tokens));
        assert!(!bearer(Some("Basic dDE="), &tokens));
        assert!(!bearer(None, &tokens));
        assert!(!bearer(Some("Bearer "), &secrets(&[])));
        let pw = secrets(&["s3cret"]);
        let header = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("am:s3cret"));
        assert!(basic(Some(&header), "am", &pw));
        let wrong_user = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("xx:s3cret"));
        assert!(!basic(Some(&wrong_user), "am", &pw));
        assert!(!basic(Some("Basic !!!"), "am", &pw));
    }
}
