//! What people are told: one [`Notice`] per change in an incident's state (rolled back,
//! proposed, denied, frozen, failed, verified, not recovered, escalated, stepped back). Pure: the
//! engine builds notices from its reports, the notify adapter delivers them.

use std::fmt;

use jiff::Timestamp;
use serde::Serialize;

use crate::domain::artifacts::ArtifactChange;
use crate::domain::decision::Report;
use crate::domain::event::Event;
use crate::domain::rollback::{Outcome, RollbackId};

/// The state an incident moved to. The names are the generic webhook's `event` field.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    RolledBack,
    Proposed,
    /// Proposed instead of pushed because a freeze covers the target.
    Frozen,
    Denied,
    /// `mode: notify`: what would have been done; nothing was written.
    Notified,
    Failed,
    Verified,
    NotRecovered,
    Escalated,
    SteppedBack,
    /// A phased rollback stopped between phases; the rest is proposed for review.
    Halted,
    /// A later phase of a phased rollback was pushed.
    Phase,
}

impl NoticeKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            NoticeKind::RolledBack => "rolled_back",
            NoticeKind::Proposed => "proposed",
            NoticeKind::Frozen => "frozen",
            NoticeKind::Denied => "denied",
            NoticeKind::Notified => "notified",
            NoticeKind::Failed => "failed",
            NoticeKind::Verified => "verified",
            NoticeKind::NotRecovered => "not_recovered",
            NoticeKind::Escalated => "escalated",
            NoticeKind::SteppedBack => "stepped_back",
            NoticeKind::Halted => "halted",
            NoticeKind::Phase => "phase",
        }
    }
}

impl fmt::Display for NoticeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One message's worth of facts: the generic webhook's JSON body, and the context of the
/// `notify.txt.j2` template. Fields are only ever added.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Notice {
    pub event: NoticeKind,
    pub rollback_id: Option<RollbackId>,
    pub service: String,
    pub env: String,
    pub policy: String,
    /// `source:key` of the event that started it (the `Rollback-Trigger` trailer).
    pub trigger: String,
    /// Where the trigger can be seen: the alert's generator URL, the workflow run.
    pub trigger_url: Option<String>,
    /// What the alert said it is about: its `summary` annotation.
    pub summary: Option<String>,
    pub actor: String,
    pub commit: Option<String>,
    pub pr: Option<String>,
    /// The commit on the forge, when one is configured.
    pub commit_url: Option<String>,
    pub known_good: Option<String>,
    pub artifacts: Vec<ArtifactChange>,
    /// The rollback this one comes after: for a step back and what is said about it (not
    /// recovered, escalated), the rollback it stepped back from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub follows: Option<Follows>,
    /// Guards that failed, as `name: detail`.
    pub failed_guards: Vec<String>,
    /// Why, in one line: the denial, the error, the verification's finding.
    pub reason: String,
    /// Why a proposal is one when its policy pushes: `cooldown`, `freeze`, `pause`, `breaker`...
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub because: Vec<String>,
    /// Time to recovery: seconds from the push to the recovery (`verified` only).
    pub recovered_after_seconds: Option<i64>,
    /// Time to rollback: seconds from the alert's start to the push (`rolled_back` of an alert).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_to_rollback_seconds: Option<i64>,
    /// Time to rollback from rollbackd's receipt of the event to the push (`rolled_back`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_to_rollback_from_receipt_seconds: Option<i64>,
    pub at: Timestamp,
}

/// Whole seconds from `from` to `to`, never negative.
pub(crate) fn seconds(from: Timestamp, to: Timestamp) -> i64 {
    to.duration_since(from).as_secs().max(0)
}

/// A rollback an incident went through before the one a notice is about.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Follows {
    pub rollback_id: RollbackId,
    pub commit: String,
    pub commit_url: Option<String>,
    pub artifacts: Vec<ArtifactChange>,
}

impl Notice {
    /// The notice a report deserves, if any. Duplicates, no-ops, events no policy acts on and
    /// dry runs change nothing and say nothing.
    pub(crate) fn from_report(event: &Event, report: &Report, at: Timestamp) -> Option<Notice> {
        let target = report.decision.target.as_ref()?;
        let failed_guards: Vec<String> =
            report.decision.guards.iter().filter(|g| !g.passed).map(|g| format!("{}: {}", g.guard, g.detail)).collect();
        let (kind, rollback, reason) = match &report.outcome {
            Outcome::RolledBack { rollback } => (NoticeKind::RolledBack, Some(rollback), report.outcome.summary()),
            Outcome::Proposed { rollback } => {
                let kind = if report.decision.frozen.is_some() { NoticeKind::Frozen } else { NoticeKind::Proposed };
                // The summary names what made it a proposal (`because of cooldown: ...`).
                let reason = report.decision.frozen.clone().unwrap_or_else(|| report.outcome.summary());
                (kind, Some(rollback), reason)
            }
            Outcome::Denied { reason } => (NoticeKind::Denied, None, reason.clone()),
            Outcome::Notified { reason } => (NoticeKind::Notified, None, reason.clone()),
            Outcome::Duplicate { .. } | Outcome::Noop { .. } | Outcome::Ignored { .. } | Outcome::DryRun { .. } => {
                return None;
            }
        };
        let plan = report.plan.as_ref();
        Some(Notice {
            event: kind,
            rollback_id: rollback.map(|r| r.id.clone()),
            service: target.service.clone(),
            env: target.env.clone(),
            policy: report.decision.policy.clone().unwrap_or_default(),
            trigger: event.trigger(),
            trigger_url: trigger_url(event),
            summary: summary(event),
            actor: event.actor(),
            commit: rollback.map(|r| r.commit.0.clone()),
            pr: rollback.and_then(|r| r.pr_url.clone()),
            commit_url: None,
            known_good: plan.map(|p| p.known_good.sha.0.clone()),
            artifacts: plan.map(|p| p.artifacts.clone()).unwrap_or_default(),
            follows: None,
            failed_guards,
            reason,
            because: rollback.map(|r| r.because.iter().map(|c| c.name().to_string()).collect()).unwrap_or_default(),
            recovered_after_seconds: None,
            time_to_rollback_seconds: (kind == NoticeKind::RolledBack)
                .then(|| event.started_at.map(|t| seconds(t, at)))
                .flatten(),
            time_to_rollback_from_receipt_seconds: (kind == NoticeKind::RolledBack)
                .then(|| seconds(event.received_at, at)),
            at,
        })
    }

    /// A notice about `target` that no report carries: a failure, a decision made at the edge,
    /// or what verification found.
    pub(crate) fn about(
        kind: NoticeKind,
        service: &str,
        env: &str,
        policy: &str,
        trigger: &str,
        reason: String,
        at: Timestamp,
    ) -> Notice {
        Notice {
            event: kind,
            rollback_id: None,
            service: service.to_string(),
            env: env.to_string(),
            policy: policy.to_string(),
            trigger: trigger.to_string(),
            trigger_url: None,
            summary: None,
            actor: String::new(),
            commit: None,
            pr: None,
            commit_url: None,
            known_good: None,
            artifacts: Vec::new(),
            follows: None,
            failed_guards: Vec::new(),
            reason,
            because: Vec::new(),
            recovered_after_seconds: None,
            time_to_rollback_seconds: None,
            time_to_rollback_from_receipt_seconds: None,
            at,
        }
    }

    /// The same incident, in a new state.
    pub(crate) fn becomes(&self, kind: NoticeKind, reason: String) -> Notice {
        Notice { event: kind, reason, ..self.clone() }
    }

    /// What people read first: `Rolled back checkout/prod`.
    pub(crate) fn headline(&self) -> String {
        let what = match self.event {
            NoticeKind::RolledBack => "Rolled back",
            NoticeKind::Proposed => "Proposed a rollback of",
            NoticeKind::Frozen => "Frozen: proposed (not pushed) a rollback of",
            NoticeKind::Denied => "Denied a rollback of",
            NoticeKind::Notified => "Would roll back",
            NoticeKind::Failed => "Failed to roll back",
            NoticeKind::Verified => "Verified the rollback of",
            NoticeKind::NotRecovered => "Not recovered after the rollback of",
            NoticeKind::Escalated => "Escalated: the rollback did not fix",
            NoticeKind::SteppedBack => "Stepped further back on",
            NoticeKind::Halted => "Halted the phased rollback of",
            NoticeKind::Phase => "Rolled back the next phase of",
        };
        format!("{what} {}/{}", self.service, self.env)
    }

    /// Which incident this notice belongs to: the rollback, or the trigger when nothing was
    /// written. Threads and "one message per state change" are keyed on it.
    pub(crate) fn thread(&self) -> String {
        self.rollback_id.as_ref().map_or_else(|| self.trigger.clone(), |id| id.to_string())
    }
}

/// Where the trigger can be looked at, when its sender said.
pub(crate) fn trigger_url(event: &Event) -> Option<String> {
    ["generator_url", "url"]
        .iter()
        .find_map(|k| event.annotations.get(*k))
        .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
        // A link is shown as `<url>`: one that could close it or add its own text is dropped.
        .filter(|u| u.len() <= 2048 && !u.chars().any(|c| c.is_whitespace() || c.is_control() || "|<>\"'`".contains(c)))
        .cloned()
}

/// What the alert says it is about (its `summary` annotation), on one line, when it says.
pub(crate) fn summary(event: &Event) -> Option<String> {
    let s = event.annotations.get("summary")?;
    let one_line: String =
        s.split(|c: char| c.is_whitespace() || c.is_control()).filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ");
    (!one_line.is_empty()).then(|| one_line.chars().take(500).collect())
}

/// The rollback a step back stepped back from, from its trigger (`rollbackd:step-back/<id>/<n>`).
pub(crate) fn stepped_back_from(trigger: &str) -> Option<RollbackId> {
    let (id, _) = trigger.strip_prefix("rollbackd:step-back/")?.rsplit_once('/')?;
    RollbackId::parse(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_url(url: &str) -> Event {
        let mut e =
            Event::request(crate::domain::event::Source::Cli, "a", "b", "cli:x", None, Timestamp::UNIX_EPOCH, "k");
        e.annotations.insert("generator_url".into(), url.into());
        e
    }

    #[test]
    fn a_trigger_link_cannot_carry_its_own_text_or_close_the_link() {
        assert_eq!(
            trigger_url(&with_url("http://prom/graph?g0.expr=up")).as_deref(),
            Some("http://prom/graph?g0.expr=up")
        );
        for bad in
            ["https://evil.example/x|Click to approve", "https://a/b> <!channel>", "javascript:alert(1)", "https://a b"]
        {
            assert_eq!(trigger_url(&with_url(bad)), None, "{bad}");
        }
    }
}
