//! What Flux and Argo CD tell rollbackd, in one shape: a reconciliation that failed at a
//! revision (a rollback trigger bounded by that revision), one that is applied and healthy (a
//! known-good candidate, and what verifies a rollback), or something rollbackd does not act on.

use std::collections::BTreeMap;

use crate::domain::event::Event;
use crate::domain::plan::Sha;

#[derive(Clone, Debug, PartialEq)]
pub enum ControllerEvent {
    /// The controller failed to apply, or the result is unhealthy, at the revision in the
    /// event's `sha` label.
    Failed(Event),
    /// The controller applied the revision in `sha` and reports it healthy.
    Healthy(Event),
    Ignored(String),
}

/// Labels a controller's free-form metadata may not take: the parser's own.
pub(crate) const FIXED_LABELS: [&str; 10] =
    ["kind", "name", "namespace", "reason", "severity", "controller", "revision", "sha", "repo", "branch"];

/// Longest value kept from a sender's free text (a message, a metadata value): a controller's
/// error message can be pages long, and every label must stay under `input.max_value_bytes`.
pub(crate) const MAX_TEXT: usize = 256;

/// Most metadata entries taken as labels from one event.
pub(crate) const MAX_METADATA: usize = 16;

/// The commit id in a revision as Flux and Argo CD write it: `<branch>@sha1:<sha>` (Flux ≥ 2.0),
/// `<branch>/<sha>` (older Flux), `sha1:<sha>` or a bare `<sha>` (Argo CD). `None` for
/// anything else (an OCI digest, a Helm chart version, a short id): not a commit of a branch.
pub fn commit_of(revision: &str) -> Option<String> {
    let revision = revision.trim();
    let candidate = match revision.rsplit_once('@') {
        Some((_, digest)) => digest.strip_prefix("sha1:")?,
        None => match revision.strip_prefix("sha1:") {
            Some(sha) => sha,
            None => revision.rsplit_once('/').map_or(revision, |(_, sha)| sha),
        },
    };
    Sha::is_full_hex(candidate).then(|| candidate.to_ascii_lowercase())
}

/// The branch of a Flux revision (`main@sha1:…`, `refs/heads/main@sha1:…`, `main/…`), if named.
pub(crate) fn branch_of(revision: &str) -> Option<String> {
    let named = match revision.rsplit_once('@') {
        Some((branch, _)) => branch,
        None => revision.rsplit_once('/').map(|(branch, _)| branch)?,
    };
    let branch = named.strip_prefix("refs/heads/").unwrap_or(named);
    (!branch.is_empty()).then(|| branch.to_string())
}

/// Cut to at most [`MAX_TEXT`] bytes, on a character boundary.
pub(crate) fn cut(text: &str) -> String {
    if text.len() <= MAX_TEXT {
        return text.to_string();
    }
    let mut end = MAX_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A metadata key as a label name: letters, digits, `.`, `_` and `-`, at most 63 bytes, an
/// identifier by [`is_plain`](crate::domain::ident::is_plain), and not one of [`FIXED_LABELS`].
/// notification-controller strips the `<group>.toolkit.fluxcd.io/` and
/// `event.toolkit.fluxcd.io/` prefixes before it posts, so the keys worth having are plain.
pub(crate) fn metadata_label(key: &str) -> bool {
    key.len() <= 63
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && crate::domain::ident::is_plain(key)
        && !FIXED_LABELS.contains(&key)
}

/// The metadata entries that become labels: plain keys, short values, at most [`MAX_METADATA`]
/// (in key order, so the same event always gives the same labels).
pub(crate) fn metadata_labels(metadata: &BTreeMap<String, String>) -> impl Iterator<Item = (String, String)> + '_ {
    metadata
        .iter()
        .filter(|(k, v)| metadata_label(k) && v.len() <= MAX_TEXT)
        .take(MAX_METADATA)
        .map(|(k, v)| (k.clone(), v.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn reads_every_revision_form_flux_and_argo_write() {
        for rev in [
            format!("main@sha1:{SHA}"),
            format!("refs/heads/main@sha1:{SHA}"),
            format!("main/{SHA}"),
            format!("release/v1/{SHA}"),
            format!("sha1:{SHA}"),
            SHA.to_string(),
        ] {
            assert_eq!(commit_of(&rev).as_deref(), Some(SHA), "{rev}");
        }
        for rev in [
            "latest@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "6.3.0",
            "main@sha1:0123456",
            "main/HEAD~1",
            "",
            "main@sha1:",
        ] {
            assert_eq!(commit_of(rev), None, "{rev}");
        }
        assert_eq!(branch_of(&format!("refs/heads/main@sha1:{SHA}")).as_deref(), Some("main"));
        assert_eq!(branch_of(&format!("release/v1/{SHA}")).as_deref(), Some("release/v1"));
        assert_eq!(branch_of(SHA), None);
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        let long = "é".repeat(300);
        let c = cut(&long);
        assert!(c.len() <= MAX_TEXT + "…".len());
        assert!(c.ends_with('…'));
    }
}
