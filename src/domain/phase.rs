//! Phased rollbacks: a policy's `target.phases` writes one rollback as several commits, the
//! canary overlay first, then the rest, each after the one before soaked and checked healthy.
//! Every phase commit carries the rollback's one `Rollback-Id` and `Rollback-Phase: k/N`; what
//! comes next is read from git alone (the newest phase on the branch, its commit time, the
//! remainder's proposal), so a restart or another replica carries on where the last one stopped.

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::domain::audit::AuditRecord;
use crate::domain::rollback::{Delivery, RollbackId};
use crate::support::duration::Duration;

/// More phases than this is not a rollout plan, it is a typo.
pub(crate) const MAX_PHASES: u32 = 10;

/// Which phase of how many a commit is: `Rollback-Phase: 2/3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Phase {
    pub step: u32,
    pub of: u32,
}

impl Phase {
    pub fn new(step: u32, of: u32) -> Option<Phase> {
        (1 <= step && step <= of && of <= MAX_PHASES).then_some(Phase { step, of })
    }

    /// The trailer's value read back; `None` for anything we would not have written.
    pub fn parse(s: &str) -> Option<Phase> {
        let (k, n) = s.split_once('/')?;
        let num = |t: &str| {
            (!t.is_empty() && t.len() <= 2 && t.bytes().all(|b| b.is_ascii_digit())).then(|| t.parse().ok())?
        };
        Phase::new(num(k)?, num(n)?)
    }

    /// The last phase: it brings the whole target back, is tagged and verified.
    pub fn is_last(self) -> bool {
        self.step == self.of
    }

    pub fn next(self) -> Option<Phase> {
        Phase::new(self.step + 1, self.of)
    }

    /// The last phase of the same rollback (the remainder of a halted one is proposed as it).
    pub fn last(self) -> Phase {
        Phase { step: self.of, of: self.of }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.step, self.of)
    }
}

/// One resolved phase of a target: the paths it brings back, and how long it soaks before the
/// next may be written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseTarget {
    /// What people call this step (`canary`, `consumer`), when the policy names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub paths: Vec<String>,
    #[serde(default)]
    pub soak: Duration,
}

/// Where a phased rollback that is not finished stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub(crate) enum Stage {
    /// Written `phase`; the next waits until `until`.
    Soaking { until: Timestamp },
    /// Soaked: the policy's `verify.query` decides whether the next phase is written.
    Check,
    /// Soaked, and nothing can check it (no `verify.query`): a person says `continue` or `abort`.
    AwaitingContinue,
}

/// What the newest phase on the branch, written at `since`, waits for at `now`.
pub(crate) fn stage(since: Timestamp, soak: Duration, has_query: bool, now: Timestamp) -> Stage {
    let until = since.saturating_add(soak.as_signed()).unwrap_or(since);
    if now < until {
        Stage::Soaking { until }
    } else if has_query {
        Stage::Check
    } else {
        Stage::AwaitingContinue
    }
}

/// Phased rollbacks between phases: for each, its newest phase on the branch, which is not the
/// last, was pushed by rollbackd (it carries its phase tag: trailers alone are text anyone can
/// write), and nothing ended it since (a last phase, the rest proposed, a halt marker).
/// `records` is the audit index, newest first.
pub(crate) fn in_progress(records: &[AuditRecord], halted: impl Fn(&RollbackId) -> bool) -> Vec<&AuditRecord> {
    let finished = |id: &RollbackId| {
        halted(id)
            || records.iter().any(|o| {
                &o.id == id
                    && ((o.phase.is_some_and(Phase::is_last) && (o.delivery == Delivery::Proposal || o.tag.is_some()))
                        // Tagged as the rollback: complete, whatever phase it ended in.
                        || o.tag.as_deref().is_some_and(|t| t.starts_with("rollback/")))
            })
    };
    let mut seen = std::collections::HashSet::new();
    records
        .iter()
        .filter(|r| r.delivery == Delivery::Direct && r.tag.is_some() && r.phase.is_some_and(|p| !p.is_last()))
        .filter(|r| seen.insert(&r.id))
        .filter(|r| !finished(&r.id))
        .collect()
}

/// A phased rollback whose remainder is proposed: the proposal's record, when `id` is one.
pub(crate) fn halted<'r>(records: &'r [AuditRecord], id: &RollbackId) -> Option<&'r AuditRecord> {
    records.iter().find(|r| &r.id == id && r.delivery == Delivery::Proposal && r.phase.is_some_and(Phase::is_last))
}

/// What the decision says of a phased target before anything is written.
pub(crate) fn describe(phases: &[PhaseTarget], checked: bool) -> String {
    let steps: Vec<String> = phases
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let soak = if i + 1 < phases.len() { format!(", soak {}", p.soak) } else { String::new() };
            let name = p.name.as_deref().map(|n| format!("{n}: ")).unwrap_or_default();
            format!("{}) {name}{}{soak}", i + 1, p.paths.join(", "))
        })
        .collect();
    let gate = if checked { "verify.query holds" } else { "a person says `continue <id>`" };
    format!(
        "pushed in {} phases: {}; each next phase once the one before soaked and {gate}",
        phases.len(),
        steps.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_round_trip_and_refuse_what_we_never_write() {
        let p = Phase::new(2, 3).unwrap();
        assert_eq!(Phase::parse(&p.to_string()), Some(p));
        assert!(!p.is_last() && p.next().unwrap().is_last() && p.next().unwrap().next().is_none());
        assert_eq!(p.last(), Phase { step: 3, of: 3 });
        for bad in ["0/3", "4/3", "1/11", "1/", "/3", "1/3/4", "+1/3", " 1/3", "1 /3", "001/3", "1/x"] {
            assert_eq!(Phase::parse(bad), None, "{bad}");
        }
    }

    fn record(id: &str, phase: Option<Phase>, tag: Option<&str>, delivery: Delivery) -> AuditRecord {
        AuditRecord {
            id: RollbackId(id.into()),
            at: "2026-11-21T12:00:00Z".parse().unwrap(),
            service: "checkout".into(),
            env: "prod".into(),
            delivery,
            commit: crate::domain::plan::Sha("a".repeat(40)),
            branch: "main".into(),
            tag: tag.map(str::to_string),
            strategy: "restore".into(),
            bad_commits: vec!["b".repeat(40)],
            known_good: "c".repeat(40),
            policy: "p".into(),
            trigger: "cli:x".into(),
            actor: "cli:x".into(),
            reason: None,
            emergency: false,
            cancelled: false,
            review: Default::default(),
            phase,
            together_with: Vec::new(),
            because: Vec::new(),
            alert_started: None,
            received: None,
        }
    }

    #[test]
    fn only_tagged_phases_are_in_progress_until_a_last_phase_a_rollback_tag_or_a_halt() {
        let (one, two) = (Phase::new(1, 2), Phase::new(2, 2));
        let id = "rb-0123456789ab";
        let tagged = record(id, one, Some("phase/checkout/prod/rb-0123456789ab/1"), Delivery::Direct);
        let none = |_: &RollbackId| false;
        assert_eq!(in_progress(std::slice::from_ref(&tagged), none).len(), 1);
        let forged = record(id, one, None, Delivery::Direct);
        assert!(in_progress(&[forged], none).is_empty(), "no phase tag: not rollbackd's");
        let last = record(id, two, Some("rollback/checkout/prod/rb-0123456789ab"), Delivery::Direct);
        assert!(in_progress(&[last, tagged.clone()], none).is_empty());
        let forged_last = record(id, two, None, Delivery::Direct);
        assert_eq!(in_progress(&[forged_last, tagged.clone()], none).len(), 1, "a forged last phase ends nothing");
        let completed = record(id, one, Some("rollback/checkout/prod/rb-0123456789ab"), Delivery::Direct);
        assert!(in_progress(&[completed], none).is_empty(), "tagged as the rollback: complete");
        let rest = record(id, two, None, Delivery::Proposal);
        assert!(in_progress(&[rest, tagged.clone()], none).is_empty());
        assert!(in_progress(&[tagged], |_| true).is_empty(), "halted");
    }

    #[test]
    fn a_phase_soaks_then_is_checked_or_waits_for_a_person() {
        let t0: Timestamp = "2026-11-21T12:00:00Z".parse().unwrap();
        let soak = Duration::from_secs(300);
        let at = |s: i64| t0 + jiff::SignedDuration::from_secs(s);
        assert_eq!(stage(t0, soak, true, at(299)), Stage::Soaking { until: at(300) });
        assert_eq!(stage(t0, soak, true, at(300)), Stage::Check);
        assert_eq!(stage(t0, soak, false, at(300)), Stage::AwaitingContinue);
        assert_eq!(stage(t0, Duration::ZERO, false, t0), Stage::AwaitingContinue);
    }
}
