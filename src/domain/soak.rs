//! Known-good needs soak: a deployment that reported success becomes a `known-good/` tag only
//! after `min_healthy` without a firing alert for its service/env. Until then it is a
//! [`Candidate`], kept as a line in a git note on its commit, so a restart or another replica
//! finishes the soak. An alert inside the window rejects it (as does a GitOps controller's
//! failure at its revision or an earlier one), and a rollback in that window goes past it to
//! the known-good before.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SoakState {
    Soaking,
    Tagged,
    Rejected,
}

/// A commit that may become known-good.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Candidate {
    /// The tag it becomes: `known-good/<service>/<env>/<stamp>`.
    pub name: String,
    pub sha: String,
    pub service: String,
    pub env: String,
    pub policy: String,
    pub trigger: String,
    pub since: Timestamp,
    pub until: Timestamp,
    pub state: SoakState,
    #[serde(default)]
    pub reason: Option<String>,
}

impl Candidate {
    /// Whether an alert for `service`/`env` that fired at `at` rejects this candidate.
    pub(crate) fn rejected_by(&self, service: &str, env: &str, at: Timestamp) -> bool {
        self.state == SoakState::Soaking && self.service == service && self.env == env && at <= self.until
    }

    /// Soaked long enough, with no alert.
    pub(crate) fn ready(&self, now: Timestamp) -> bool {
        self.state == SoakState::Soaking && now >= self.until
    }
}

/// The lines of a candidates note, one candidate each; unreadable lines are skipped.
pub(crate) fn parse(note: &str) -> Vec<Candidate> {
    note.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The note holding `candidates`.
pub(crate) fn note(candidates: &[Candidate]) -> String {
    candidates.iter().filter_map(|c| serde_json::to_string(c).ok()).map(|l| l + "\n").collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(min: i64) -> Timestamp {
        "2026-11-21T12:00:00Z".parse::<Timestamp>().unwrap() + jiff::SignedDuration::from_mins(min)
    }

    fn candidate() -> Candidate {
        Candidate {
            name: "known-good/checkout/prod/20261121T120000Z".into(),
            sha: "a".repeat(40),
            service: "checkout".into(),
            env: "prod".into(),
            policy: "kg".into(),
            trigger: "github:deployment_status/1".into(),
            since: at(0),
            until: at(10),
            state: SoakState::Soaking,
            reason: None,
        }
    }

    #[test]
    fn an_alert_in_the_window_for_the_same_target_rejects_it() {
        let c = candidate();
        assert!(c.rejected_by("checkout", "prod", at(5)));
        assert!(!c.rejected_by("cart", "prod", at(5)), "another service");
        assert!(!c.rejected_by("checkout", "prod", at(11)), "after the soak");
        assert!(!c.ready(at(9)) && c.ready(at(10)));
        let done = Candidate { state: SoakState::Tagged, ..c.clone() };
        assert!(!done.ready(at(20)) && !done.rejected_by("checkout", "prod", at(5)));
        assert_eq!(parse(&note(&[c.clone(), done.clone()])), [c, done]);
    }
}
