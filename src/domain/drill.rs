//! Drills: the rollback rollbackd would do for a service/env, written to a branch of its own so
//! the config repo's CI proves the rolled-back state renders, before an incident needs it. A
//! drill is recorded (for `explain`) but is never a rollback: no guard counts it, no hold
//! follows, no incident is deduplicated against it.

use jiff::Timestamp;
use serde::Serialize;

use crate::domain::plan::Sha;

/// Where every drill branch lives on the origin: `rollbackd/drill/<service>/<env>`.
pub(crate) const BRANCH_PREFIX: &str = "rollbackd/drill/";

/// The branch a drill of `service`/`env` is written to. Both are identifiers checked against the
/// input rules before this is called.
pub(crate) fn branch(service: &str, env: &str) -> String {
    format!("{BRANCH_PREFIX}{service}/{env}")
}

/// The trigger a drill is recorded under (`rollbackd explain drill:<service>/<env>`). It is
/// never a rollback's `Rollback-Trigger`, so no incident is ever found "already handled" by it.
pub(crate) fn trigger(service: &str, env: &str) -> String {
    format!("drill:{service}/{env}")
}

/// The outcome name a drill's decision record carries.
pub(crate) const OUTCOME: &str = "drill";

/// What one drill did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum DrillOutcome {
    /// The rolled-back state is on the drill branch, for the repo's CI to check.
    Written {
        service: String,
        env: String,
        policy: String,
        branch: String,
        commit: Sha,
        /// Where the branch was before (`None`: it was created).
        previous: Option<Sha>,
        known_good: Sha,
        strategy: String,
        /// The files the rollback would change.
        files: Vec<String>,
    },
    /// Nothing to write: no policy rolls this service back, or there is nothing to go back to.
    /// The reason is what a rollback would be told now.
    NotWritten { service: String, env: String, reason: String },
}

impl DrillOutcome {
    pub fn summary(&self) -> String {
        match self {
            DrillOutcome::Written { service, env, policy, branch, commit, previous, known_good, strategy, files } => {
                let moved = match previous {
                    Some(p) => format!("moved from {}", p.short()),
                    None => "created".to_string(),
                };
                format!(
                    "drill of {service}/{env} under policy {policy}: {strategy} to {} ({} file{}) written to {branch} at {} ({moved}); the repo's CI checks it",
                    known_good.short(),
                    files.len(),
                    if files.len() == 1 { "" } else { "s" },
                    commit.short(),
                )
            }
            DrillOutcome::NotWritten { service, env, reason } => {
                format!("drill of {service}/{env}: nothing written: {reason}")
            }
        }
    }

    pub fn is_written(&self) -> bool {
        matches!(self, DrillOutcome::Written { .. })
    }
}

/// The latest drill of a service/env, as the origin shows it: what readiness joins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DrillResult {
    pub service: String,
    pub env: String,
    pub branch: String,
    /// The drill branch's head, signed by a trusted key (an unsigned head is no drill result).
    pub commit: Sha,
    pub at: Timestamp,
    /// The policy the drill rehearsed (its `Drill-Policy` trailer): the one a person's
    /// `rollbackd rollback` would meet, which may differ from the one readiness probes.
    pub policy: Option<String>,
    /// The forge's CI verdict on `commit`, when there is a forge to ask (and, off the writer,
    /// once it has answered).
    pub ci: Option<CiVerdict>,
}

/// The policy a drill commit's message names (`Drill-Policy:`), read from a commit rollbackd
/// signed.
pub(crate) fn policy_of(message: &str) -> Option<String> {
    message.lines().rev().find_map(|l| l.strip_prefix("Drill-Policy: ")).map(|p| p.trim().to_string())
}

impl CiVerdict {
    /// What the checks on a drill's head say: any failed check fails it; it has passed when
    /// every check has reported and one at least ran; anything else is pending.
    pub(crate) fn of(failed: Vec<String>, pending: Vec<String>, passed: Vec<String>) -> CiVerdict {
        if !failed.is_empty() {
            CiVerdict::Failed { checks: failed }
        } else if !pending.is_empty() {
            CiVerdict::Pending { checks: pending }
        } else if passed.is_empty() {
            CiVerdict::Pending { checks: vec!["no check has reported on the drill branch yet".into()] }
        } else {
            CiVerdict::Passed
        }
    }

    /// The forge could not be asked: not known, never taken for a failure.
    pub(crate) fn unasked(why: impl std::fmt::Display) -> CiVerdict {
        CiVerdict::Pending { checks: vec![format!("GitHub could not be asked: {why}")] }
    }
}

/// What the repo's CI said about a drill branch's head.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CiVerdict {
    Passed,
    Pending { checks: Vec<String> },
    Failed { checks: Vec<String> },
}

/// The commit message of a drill: says what it rehearses, in trailers of its own. It carries no
/// `Rollback-*` trailer, so nothing that reads rollbacks back (the audit index, the planner,
/// holds) can take it for one, even merged by mistake.
pub(crate) fn message(
    service: &str,
    env: &str,
    policy: &str,
    known_good: &Sha,
    strategy: &str,
    bad: &[Sha],
    at: Timestamp,
) -> String {
    let mut m = format!(
        "rollbackd drill: roll back {service}/{env} to {}\n\n\
         The rollback rollbackd would do now, for the repo's CI to check that the rolled-back\n\
         state renders. Not a rollback: never merge this branch.\n\n",
        known_good.short()
    );
    m.push_str(&format!("Drill-Service: {service}\nDrill-Env: {env}\nDrill-Policy: {policy}\n"));
    m.push_str(&format!("Drill-To: {}\nDrill-Strategy: {strategy}\n", known_good.0));
    for b in bad {
        m.push_str(&format!("Drill-Undoes: {}\n", b.0));
    }
    m.push_str(&format!("Drill-At: {at}\n"));
    m
}

/// The drills a schedule wants: each target once every `every`, counted from its last drill.
/// Pure: the engine hands in when each target was last drilled.
#[derive(Clone, Debug, Default)]
pub(crate) struct Schedule {
    pub(crate) every: jiff::SignedDuration,
    pub(crate) targets: Vec<(String, String)>,
}

impl Schedule {
    /// The most overdue target at `now`, if any is due. `last` tells when a target was last
    /// drilled (`None`: never, so due at once); `not_before` when a drill that wrote nothing or
    /// failed may be tried again.
    pub(crate) fn due(
        &self,
        now: Timestamp,
        last: impl Fn(&str, &str) -> Option<Timestamp>,
        not_before: impl Fn(&str, &str) -> Option<Timestamp>,
    ) -> Option<(String, String)> {
        self.targets
            .iter()
            .map(|(s, e)| (self.next(last(s, e)).max(not_before(s, e).unwrap_or(Timestamp::UNIX_EPOCH)), s, e))
            .filter(|(at, _, _)| *at <= now)
            .min_by_key(|(at, _, _)| *at)
            .map(|(_, s, e)| (s.clone(), e.clone()))
    }

    /// When the next drill of any target is due (the writer's deadline).
    pub(crate) fn next_due(
        &self,
        last: impl Fn(&str, &str) -> Option<Timestamp>,
        not_before: impl Fn(&str, &str) -> Option<Timestamp>,
    ) -> Option<Timestamp> {
        self.targets
            .iter()
            .map(|(s, e)| self.next(last(s, e)).max(not_before(s, e).unwrap_or(Timestamp::UNIX_EPOCH)))
            .min()
    }

    fn next(&self, last: Option<Timestamp>) -> Timestamp {
        match last {
            None => Timestamp::UNIX_EPOCH,
            Some(t) => t.saturating_add(self.every).unwrap_or(Timestamp::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_most_overdue_target_goes_first_and_a_fresh_one_waits() {
        let s = Schedule {
            every: jiff::SignedDuration::from_hours(24),
            targets: vec![("a".into(), "prod".into()), ("b".into(), "prod".into()), ("c".into(), "prod".into())],
        };
        let now = at("2026-12-07T12:00:00Z");
        let last = |svc: &str, _: &str| match svc {
            "a" => Some(at("2026-12-06T11:00:00Z")),
            "b" => Some(at("2026-12-05T12:00:00Z")),
            _ => Some(at("2026-12-07T11:00:00Z")),
        };
        let free = |_: &str, _: &str| None;
        assert_eq!(s.due(now, last, free), Some(("b".into(), "prod".into())));
        let later = Some(at("2026-12-07T13:00:00Z"));
        let b_waits = |svc: &str, _: &str| (svc == "b").then_some(later).flatten();
        assert_eq!(s.due(now, last, b_waits), Some(("a".into(), "prod".into())), "b failed lately: a goes first");
        let none_due = |svc: &str, _: &str| match svc {
            "a" => Some(at("2026-12-07T11:00:00Z")),
            _ => Some(at("2026-12-07T10:00:00Z")),
        };
        assert_eq!(s.due(now, none_due, free), None);
        assert_eq!(s.next_due(none_due, free), Some(at("2026-12-08T10:00:00Z")));
        assert_eq!(s.due(now, |_, _| None, free), Some(("a".into(), "prod".into())), "never drilled: due at once");
    }

    #[test]
    fn the_branch_and_trigger_never_look_like_a_rollback() {
        assert_eq!(branch("checkout", "prod"), "rollbackd/drill/checkout/prod");
        assert!(crate::domain::rollback::RollbackRef::parse_branch(&branch("checkout", "prod")).is_none());
        let m = message("checkout", "prod", "p", &Sha("a".repeat(40)), "restore", &[], at("2026-12-07T12:00:00Z"));
        assert!(!m.contains("Rollback-"), "{m}");
    }
}
