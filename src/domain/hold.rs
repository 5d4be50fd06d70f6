//! Rollbacks that stick. After a rollback, the artifact references it undid (an image tag or
//! digest, a chart version) are *held* for its service and environment: a later change that
//! brings one back to the same file (image-update automation re-applying the bad tag right after
//! the revert, a hand edit) fails `rollbackd gate`, until a person releases the hold.
//!
//! Holds are derived from git, not stored: every rollback in the audit window, read from its
//! commit (what it changed from, in which file), minus the releases recorded on
//! `refs/rollbackd/state/holds`.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::domain::artifacts::ArtifactChange;
use crate::domain::audit::AuditRecord;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Hold {
    pub service: String,
    pub env: String,
    /// The file the rollback changed it in.
    pub path: String,
    /// The artifact (`image registry/acme/checkout`, `image.tag`).
    pub name: String,
    /// The reference that is held: the one the rollback undid.
    pub value: String,
    pub rollback_id: String,
    pub trigger: String,
    pub at: Timestamp,
}

/// A person lifted the holds of a service/env: those from rollbacks up to then.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub service: String,
    pub env: String,
    pub by: String,
    pub at: Timestamp,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Releases {
    pub releases: Vec<Release>,
}

impl Releases {
    /// Whether a hold of `service`/`env` made at `held_at` was released since.
    pub fn released(&self, service: &str, env: &str, held_at: Timestamp) -> bool {
        self.releases.iter().any(|r| r.service == service && r.env == env && r.at >= held_at)
    }

    /// Keeps the releases that still lift something: those newer than `oldest` (the audit
    /// window's edge), so the file does not grow forever (git keeps the rest).
    pub fn add(&mut self, release: Release, oldest: Timestamp) {
        self.releases.retain(|r| r.at >= oldest);
        self.releases.push(release);
    }
}

/// The holds a rollback makes: each artifact it changed, at the value it changed from.
pub(crate) fn from_rollback(record: &AuditRecord, changes: &[ArtifactChange]) -> Vec<Hold> {
    changes
        .iter()
        .filter_map(|c| {
            let old = c.old.as_ref()?;
            (c.new.as_ref() != Some(old)).then(|| Hold {
                service: record.service.clone(),
                env: record.env.clone(),
                path: c.path.clone(),
                name: c.name.clone(),
                value: old.clone(),
                rollback_id: record.id.to_string(),
                trigger: record.trigger.clone(),
                at: record.at,
            })
        })
        .collect()
}

/// The changes that bring a held artifact back to the file it was held in.
pub(crate) fn violations<'a>(holds: &'a [Hold], changes: &'a [ArtifactChange]) -> Vec<(&'a Hold, &'a ArtifactChange)> {
    let mut out = Vec::new();
    for c in changes {
        for h in holds {
            if c.path == h.path && c.new.as_deref() == Some(h.value.as_str()) && c.old.as_deref() != c.new.as_deref() {
                out.push((h, c));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(path: &str, old: Option<&str>, new: Option<&str>) -> ArtifactChange {
        ArtifactChange {
            path: path.into(),
            name: "image reg/checkout".into(),
            old: old.map(Into::into),
            new: new.map(Into::into),
        }
    }

    #[test]
    fn a_hold_catches_the_undone_value_coming_back_to_its_file_only() {
        let record = AuditRecord {
            id: crate::domain::rollback::RollbackId("rb-1".into()),
            at: Timestamp::UNIX_EPOCH,
            service: "checkout".into(),
            env: "prod".into(),
            delivery: crate::domain::rollback::Delivery::Direct,
            commit: crate::domain::plan::Sha("c".into()),
            branch: "main".into(),
            tag: None,
            strategy: "revert".into(),
            bad_commits: vec![],
            known_good: "k".into(),
            policy: "p".into(),
            trigger: "alertmanager:x".into(),
            actor: "alertmanager".into(),
            reason: None,
            emergency: false,
            cancelled: false,
            review: Default::default(),
            phase: None,
            together_with: Vec::new(),
            because: Vec::new(),
            alert_started: None,
            received: None,
        };
        let holds = from_rollback(
            &record,
            &[change("apps/checkout/prod/d.yaml", Some("reg/checkout:1.5.0"), Some("reg/checkout:1.4.2"))],
        );
        assert_eq!(holds.len(), 1);
        let back = [change("apps/checkout/prod/d.yaml", Some("reg/checkout:1.4.2"), Some("reg/checkout:1.5.0"))];
        assert_eq!(violations(&holds, &back).len(), 1);
        let staging = [change("apps/checkout/staging/d.yaml", Some("reg/checkout:1.4.2"), Some("reg/checkout:1.5.0"))];
        assert!(violations(&holds, &staging).is_empty(), "held for prod only");
        let newer = [change("apps/checkout/prod/d.yaml", Some("reg/checkout:1.4.2"), Some("reg/checkout:1.5.1"))];
        assert!(violations(&holds, &newer).is_empty(), "a fix is not the bad artifact");
    }
}
