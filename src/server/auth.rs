//! Webhook authentication. Every comparison is constant-time; a missing or wrong credential is
//! the same 401 whatever the reason, and no secret or presented credential is ever logged.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::support::secret::SecretString;

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

/// The user and password of `Authorization: Basic base64(user:password)`.
fn basic_credentials(header: Option<&str>) -> Option<(Vec<u8>, Vec<u8>)> {
    let encoded = header.and_then(|h| h.strip_prefix("Basic ").or_else(|| h.strip_prefix("basic ")))?;
    let mut decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let password = decoded.split_off(colon + 1);
    decoded.truncate(colon);
    Some((decoded, password))
}

/// `Authorization: Basic base64(user:password)`.
pub fn basic(header: Option<&str>, username: &str, passwords: &[SecretString]) -> bool {
    let Some((user, password)) = basic_credentials(header) else { return false };
    // Both checks always run.
    let user_ok = ct_eq(&user, username.as_bytes());
    let password_ok = any_matches(&password, passwords);
    user_ok & password_ok
}

/// `Authorization: Basic base64(any user:password)` where the password is one of `passwords`:
/// how a browser sends the admin token.
pub(crate) fn basic_password(header: Option<&str>, passwords: &[SecretString]) -> bool {
    basic_credentials(header).is_some_and(|(_, password)| !passwords.is_empty() && any_matches(&password, passwords))
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

/// Flux's `generic-hmac` provider: `X-Signature: sha256=<hex HMAC-SHA256 of the raw body>`,
/// against each key (the same construction as GitHub's, under another header).
pub fn flux_signature(header: Option<&str>, body: &[u8], secrets: &[SecretString]) -> bool {
    github_signature(header, body, secrets)
}

/// How far a Slack request's timestamp may be from now, either way.
pub(crate) const SLACK_WINDOW_SECS: i64 = 300;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlackRejection {
    MissingHeaders,
    /// Older than five minutes (a replay) or from the future.
    Stale,
    BadSignature,
}

/// Slack's `X-Slack-Signature: v0=<hex HMAC-SHA256 of "v0:<timestamp>:<raw body>">`, with
/// `X-Slack-Request-Timestamp` within five minutes of `now` (seconds since the epoch).
/// Whether the headers could carry a valid GitHub signature (checked before the body is read,
/// so a sender without one never makes us buffer a body).
pub(crate) fn github_signature_present(header: Option<&str>) -> bool {
    header
        .and_then(|h| h.trim().strip_prefix("sha256="))
        .is_some_and(|hex| hex.len() == 64 && hex_decode(hex).is_some())
}

/// Checks Slack's timestamp and the shape of its signature header before the body is read.
pub(crate) fn slack_headers(timestamp: Option<&str>, signature: Option<&str>, now: i64) -> Result<(), SlackRejection> {
    let (Some(ts), Some(sig)) = (timestamp, signature) else { return Err(SlackRejection::MissingHeaders) };
    let Ok(t) = ts.trim().parse::<i64>() else { return Err(SlackRejection::MissingHeaders) };
    if (now - t).abs() > SLACK_WINDOW_SECS {
        return Err(SlackRejection::Stale);
    }
    match sig.trim().strip_prefix("v0=").and_then(hex_decode) {
        Some(s) if s.len() == 32 => Ok(()),
        _ => Err(SlackRejection::BadSignature),
    }
}

pub fn slack_signature(
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    secrets: &[SecretString],
    now: i64,
) -> Result<(), SlackRejection> {
    slack_headers(timestamp, signature, now)?;
    let (Some(ts), Some(sig)) = (timestamp, signature.and_then(|s| s.trim().strip_prefix("v0=")).and_then(hex_decode))
    else {
        return Err(SlackRejection::BadSignature);
    };
    let ok = secrets.iter().fold(false, |ok, secret| {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) else { return ok };
        mac.update(b"v0:");
        mac.update(ts.trim().as_bytes());
        mac.update(b":");
        mac.update(body);
        ok | mac.verify_slice(&sig).is_ok()
    });
    if ok { Ok(()) } else { Err(SlackRejection::BadSignature) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(list: &[&str]) -> Vec<SecretString> {
        list.iter().map(|s| SecretString::new(*s)).collect()
    }

    /// fluxcd/notification-controller `internal/notifier/forwarder_test.go` TestForwarder_Post:
    /// `testEvent()` at `time.Unix(1664520029, 0)`, as Go's `json.Marshal` writes it.
    pub(crate) const FLUX_BODY: &str = r#"{"involvedObject":{"kind":"GitRepository","namespace":"gitops-system","name":"webapp"},"severity":"info","timestamp":"2022-09-30T06:40:29Z","message":"message","reason":"reason","metadata":{"test":"metadata"},"reportingController":"source-controller","reportingInstance":"source-controller-xyz"}"#;
    const FLUX_KEY: &str = "7152fed34dd6149a7c75a276c510da27cb6f82b0";
    const FLUX_SIGNATURE: &str = "sha256=65b018549b1254e7226d1c08f9567ee45bc9de0fc4e7b1a40253f9a018b08be7";

    #[test]
    fn flux_signature_matches_the_vector_from_fluxs_own_tests_with_rotation() {
        let body = FLUX_BODY.as_bytes();
        assert!(flux_signature(Some(FLUX_SIGNATURE), body, &secrets(&[FLUX_KEY])));
        assert!(flux_signature(Some(FLUX_SIGNATURE), body, &secrets(&["old", FLUX_KEY])));
        assert!(!flux_signature(Some(FLUX_SIGNATURE), body, &secrets(&["other"])));
        assert!(!flux_signature(Some(FLUX_SIGNATURE), &body[1..], &secrets(&[FLUX_KEY])));
        assert!(!flux_signature(Some("should be overwritten with actual signature"), body, &secrets(&[FLUX_KEY])));
        assert!(!flux_signature(None, body, &secrets(&[FLUX_KEY])));
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

    /// From Slack's "Verifying requests from Slack" documentation.
    const SLACK_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";

    #[test]
    fn slacks_published_example_verifies_then_and_is_a_replay_now() {
        let s = secrets(&["8f742231b10e8888abcd99yyyzzz85a5"]);
        let sig = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
        let check = |now| slack_signature(Some("1531420618"), Some(sig), SLACK_BODY.as_bytes(), &s, now);
        assert_eq!(check(1_531_420_618), Ok(()));
        assert_eq!(check(1_531_420_618 + 299), Ok(()));
        assert_eq!(check(1_531_420_618 + 301), Err(SlackRejection::Stale));
        let today = 1_795_305_600; // 2026-11-21
        assert_eq!(check(today), Err(SlackRejection::Stale));
        assert_eq!(check(1_531_420_618 - 301), Err(SlackRejection::Stale), "from the future");
        let tampered = SLACK_BODY.replace("roadrunner", "coyote");
        assert_eq!(
            slack_signature(Some("1531420618"), Some(sig), tampered.as_bytes(), &s, 1_531_420_618),
            Err(SlackRejection::BadSignature)
        );
        assert_eq!(slack_signature(None, Some(sig), b"", &s, 0), Err(SlackRejection::MissingHeaders));
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
