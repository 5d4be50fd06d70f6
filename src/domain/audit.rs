//! The audit record: one rollback as git remembers it (trailers, tags, proposal branches). The
//! git adapter reads it back; guards, dedupe, `history` and the API use it.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::domain::plan::Sha;
use crate::domain::rollback::{Delivery, RollbackId};

/// One rollback as recorded in git. This is the `history --json` schema; fields are only ever
/// added.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub id: RollbackId,
    pub at: Timestamp,
    pub service: String,
    pub env: String,
    pub delivery: Delivery,
    pub commit: Sha,
    pub branch: String,
    pub tag: Option<String>,
    pub strategy: String,
    pub bad_commits: Vec<String>,
    pub known_good: String,
    pub policy: String,
    pub trigger: String,
    pub actor: String,
    pub reason: Option<String>,
    pub emergency: bool,
    /// A proposal closed without merging (kept as a `cancelled/...` tag).
    #[serde(default)]
    pub cancelled: bool,
    /// Who reviewed a proposal, as its tag records it.
    #[serde(default, flatten)]
    pub review: Review,
    /// Which phase of a phased rollback this commit is; one rollback id has a record per phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<crate::domain::phase::Phase>,
    /// The other targets (`service/env`) the same commit rolled back, when one bad change made
    /// several services alert at once: each has a record of its own, with its own trigger.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub together_with: Vec<String>,
    /// Why a proposal is one when its policy pushes (`Rollback-Proposed-Because`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub because: Vec<crate::domain::rollback::Cause>,
    /// When the alert began (`Rollback-Alert-Started`, or the alert's trigger): time to rollback
    /// is from it to the push (`at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_started: Option<Timestamp>,
    /// When rollbackd received the event (`Rollback-Received`): time to rollback from receipt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received: Option<Timestamp>,
}

/// When an Alertmanager alert began, from its trigger (`alertmanager:<key>@<startsAt>`).
pub(crate) fn alert_start_of(trigger: &str) -> Option<Timestamp> {
    trigger.strip_prefix("alertmanager:")?.rsplit_once('@')?.1.parse().ok()
}

impl AuditRecord {
    /// Time to rollback, from the alert's start to the push; `None` when there was no alert.
    pub fn time_to_rollback(&self) -> Option<jiff::SignedDuration> {
        let started = self.alert_started.or_else(|| alert_start_of(&self.trigger))?;
        Some(self.at.duration_since(started).max(jiff::SignedDuration::ZERO))
    }

    /// Time to rollback from the event's receipt to the push.
    pub fn time_to_rollback_from_receipt(&self) -> Option<jiff::SignedDuration> {
        Some(self.at.duration_since(self.received?).max(jiff::SignedDuration::ZERO))
    }
}

/// Who approved, merged or cancelled a proposal: lines of its `rollback/...` or `cancelled/...`
/// tag message (`Approved-By: github:alice`), written by rollbackd when it tags.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approved_by: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_by: Option<String>,
}

impl Review {
    /// The lines a tag message carries (each value one word: principal ids are).
    pub fn render(&self) -> String {
        let word = |s: &str| s.split_whitespace().next().unwrap_or("").to_string();
        let mut out = String::new();
        for a in &self.approved_by {
            out.push_str(&format!("Approved-By: {}\n", word(a)));
        }
        if let Some(m) = &self.merged_by {
            out.push_str(&format!("Merged-By: {}\n", word(m)));
        }
        if let Some(c) = &self.cancelled_by {
            out.push_str(&format!("Cancelled-By: {}\n", word(c)));
        }
        out
    }

    pub fn parse(message: &str) -> Review {
        let mut r = Review::default();
        for line in message.lines() {
            let value = |p: &str| line.strip_prefix(p).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
            if let Some(v) = value("Approved-By:") {
                r.approved_by.push(v);
            } else if let Some(v) = value("Merged-By:") {
                r.merged_by = Some(v);
            } else if let Some(v) = value("Cancelled-By:") {
                r.cancelled_by = Some(v);
            }
        }
        r
    }

    /// `approved by a, b; merged by c`, or nothing.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.approved_by.is_empty() {
            parts.push(format!("approved by {}", self.approved_by.join(", ")));
        }
        if let Some(m) = &self.merged_by {
            parts.push(format!("merged by {m}"));
        }
        if let Some(c) = &self.cancelled_by {
            parts.push(format!("cancelled by {c}"));
        }
        parts.join("; ")
    }
}

/// One record rollbackd relies on, with what its signature says (`rollbackd audit verify`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SignatureCheck {
    /// `rollback`, `tag`, `notes` or `state`.
    pub kind: &'static str,
    /// The ref it was read at (for a rollback commit, its tag or the branch).
    #[serde(rename = "ref")]
    pub refname: String,
    pub object: String,
    pub at: Option<Timestamp>,
    /// `signed`, `unsigned` or `forged` (signed, but not by a trusted key or not over this content).
    pub status: &'static str,
    /// The key that signed it, or why it does not count.
    pub detail: String,
}

impl SignatureCheck {
    pub fn verified(&self) -> bool {
        self.status == "signed"
    }

    /// One line per record and a count: what `audit verify` prints.
    pub fn text(checks: &[SignatureCheck]) -> String {
        let mut out = String::new();
        for c in checks {
            let object = c.object.get(..12).unwrap_or(&c.object);
            let at = c.at.map(|t| t.to_string()).unwrap_or_else(|| "-".into());
            out.push_str(&format!("{:<8} {:<8} {object} {at} {}: {}\n", c.status, c.kind, c.refname, c.detail));
        }
        let bad = checks.iter().filter(|c| !c.verified()).count();
        out.push_str(&format!(
            "{} record(s): {} signed by a trusted key, {bad} not\n",
            checks.len(),
            checks.len() - bad
        ));
        out
    }
}
