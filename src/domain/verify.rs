//! Did the rollback work? A policy's `verify:` says how long recovery may take and what counts
//! as recovered; a [`Watch`] follows one pushed rollback through the signals that arrive (its
//! alerts firing and resolving, the Prometheus query holding or not) to `verified` or
//! `not_recovered`. Pure: the engine feeds it signals and the time.

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::domain::plan::Sha;
use crate::domain::policy::Expr;
use crate::domain::rollback::RollbackId;
use crate::support::duration::Duration;

/// What happens when a rollback does not bring recovery within `verify.within`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Tell the policy's `notify` route, marked for a person to act (page).
    #[default]
    Escalate,
    /// Roll back the change before the known-good too (bounded by `max_steps`), each step its
    /// own commit with its own verification; escalate when the steps run out.
    StepBack,
    /// Record `not_recovered` and say so; do nothing more.
    Stop,
}

/// A policy's `verify:` section.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifySpec {
    /// Recovered within this after the push, or `not_recovered`.
    pub within: Duration,
    /// How long the alert stays resolved (and the query holds) before it counts. Default `0s`.
    #[serde(default = "zero")]
    pub stable_for: Duration,
    /// How long the rollback takes to be deployed after the push: a resolve (or a query that
    /// holds) before then is not the rollback's doing. Default `0s`.
    #[serde(default = "zero")]
    pub deploy_time: Duration,
    /// A Prometheus instant query that must return at least one series to count as healthy,
    /// e.g. an error ratio `< 0.05`. `{{ service }}` and `{{ env }}` are the rollback's.
    #[serde(default)]
    pub query: Option<Expr>,
    #[serde(default)]
    pub on_failure: OnFailure,
    /// For `step_back`: how many further rollbacks at most. Default 1.
    #[serde(default = "one")]
    pub max_steps: u32,
}

fn zero() -> Duration {
    Duration::ZERO
}
fn one() -> u32 {
    1
}

/// At most this many alerts are followed per watch.
pub(crate) const MAX_FIRING: usize = 32;

/// What arrived about a watched rollback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Signal {
    /// An alert for the target is firing (the trigger itself, a repeat, or a re-fire).
    Fired { key: String, at: Timestamp },
    /// An alert for the target resolved.
    Resolved { key: String, at: Timestamp },
    /// The policy's query was evaluated.
    Query { holds: bool, at: Timestamp },
    /// The GitOps controller reported a revision containing the rollback applied and healthy.
    Applied { at: Timestamp },
}

/// Where a watch stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    Watching,
    /// `recovered_at`: when the stable healthy period began.
    Verified {
        recovered_at: Timestamp,
    },
    NotRecovered {
        reason: String,
    },
    /// Never shown healthy nor failed: the query could not be evaluated (Prometheus down or
    /// hanging) and nothing else says it failed. Said and escalated; never stepped back, which
    /// needs evidence of failure.
    Unverified {
        reason: String,
    },
}

/// One pushed rollback under verification. Its progress is what [`Watch::progress`] writes to
/// git (so a restart or another replica carries on) and [`Watch::resume`] reads back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Watch {
    pub id: RollbackId,
    pub commit: Sha,
    pub service: String,
    pub env: String,
    pub policy: String,
    pub trigger: String,
    pub rolled_back_at: Timestamp,
    /// 0 for the first rollback of an incident, n for its n-th step back.
    pub step: u32,
    /// The rendered query, when the policy has one.
    pub query: Option<String>,
    pub within: Duration,
    pub stable_for: Duration,
    pub deploy_time: Duration,
    /// Alert keys (`alertmanager:...`) firing for the target as far as we know.
    pub firing: BTreeSet<String>,
    /// Since when no alert for the target has fired (after the deploy time).
    pub resolved_since: Option<Timestamp>,
    pub query_holds_since: Option<Timestamp>,
    /// How many times an alert fired again after the rollback.
    pub fired_again: u32,
    /// An alert was firing when the watch began: it must resolve (after the deploy time).
    pub must_resolve: bool,
    /// A resolve that came before the deploy time ended: not counted, but said in the verdict.
    #[serde(default)]
    pub resolved_early: Option<Timestamp>,
    /// Why the query could not be asked, the last time it could not.
    #[serde(default)]
    pub query_error: Option<String>,
    /// Prometheus answered the query at least once (held or not).
    #[serde(default)]
    pub query_answered: bool,
    /// A GitOps controller (Flux, Argo CD) is configured: the rollback is deployed when it
    /// reports a revision containing it applied and healthy, not after `deploy_time`.
    #[serde(default)]
    pub awaits_controller: bool,
    /// When the controller reported that.
    #[serde(default)]
    pub applied_at: Option<Timestamp>,
}

/// What a watch verifies: the service and env a rollback was pushed for, the trigger it
/// answered, when it was pushed, and which step back it is (0 for the rollback itself).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Verifying<'a> {
    pub service: &'a str,
    pub env: &'a str,
    pub trigger: &'a str,
    pub at: Timestamp,
    pub step: u32,
}

impl Watch {
    /// Starts watching rollback `id` (`commit`) of policy `policy`. An alert trigger must
    /// resolve; any other trigger (CI, chat, CLI) is judged by the query alone.
    pub(crate) fn start(
        spec: &VerifySpec,
        (id, commit): (RollbackId, Sha),
        policy: &str,
        of: &Verifying<'_>,
        query: Option<String>,
    ) -> Watch {
        let Verifying { service, env, trigger, at, step } = *of;
        let firing = if crate::domain::event::Trigger::parse(trigger).is_alert() {
            BTreeSet::from([trigger.to_string()])
        } else {
            BTreeSet::new()
        };
        Watch {
            id,
            commit,
            service: service.to_string(),
            env: env.to_string(),
            policy: policy.to_string(),
            trigger: trigger.to_string(),
            rolled_back_at: at,
            step,
            query,
            within: spec.within,
            stable_for: spec.stable_for,
            deploy_time: spec.deploy_time,
            resolved_since: None,
            firing,
            query_holds_since: None,
            fired_again: 0,
            must_resolve: crate::domain::event::Trigger::parse(trigger).is_alert(),
            resolved_early: None,
            query_error: None,
            query_answered: false,
            awaits_controller: false,
            applied_at: None,
        }
    }

    /// Alerts still firing when this watch begins (a step back inherits them): they must
    /// resolve too.
    pub(crate) fn also_firing(&mut self, keys: impl IntoIterator<Item = String>) {
        self.firing.extend(keys);
        self.must_resolve |= !self.firing.is_empty();
    }

    /// Whether anything can verify this rollback: an alert to resolve or a query to hold.
    pub(crate) fn verifiable(&self) -> bool {
        !self.firing.is_empty() || self.query.is_some() || self.awaits_controller
    }

    pub(crate) fn deadline(&self) -> Timestamp {
        self.rolled_back_at.saturating_add(self.within.as_signed()).unwrap_or(self.rolled_back_at)
    }

    /// The moments at which [`Watch::status`] can change with no new signal: `stable_for` after
    /// the alerts resolved and after the query began to hold, and the deadline.
    pub(crate) fn deadlines(&self) -> impl Iterator<Item = Timestamp> + use<> {
        let stable = |since: Option<Timestamp>| since.and_then(|s| s.saturating_add(self.stable_for.as_signed()).ok());
        let resolved = self.resolved_since.filter(|_| self.firing.is_empty());
        [stable(resolved), stable(self.query_holds_since), Some(self.deadline())].into_iter().flatten()
    }

    fn deployed_at(&self) -> Timestamp {
        if self.awaits_controller {
            // Not deployed until the controller says so: nothing before counts.
            return self.applied_at.unwrap_or(Timestamp::MAX);
        }
        self.rolled_back_at.saturating_add(self.deploy_time.as_signed()).unwrap_or(self.rolled_back_at)
    }

    /// Takes a signal in. `true` when it changed what the watch knows (so it is worth
    /// recording); repeats of what is known change nothing.
    pub(crate) fn observe(&mut self, signal: &Signal) -> bool {
        match signal {
            Signal::Fired { key, .. } => {
                // Bounded: past this many distinct alerts, more change nothing (the watch is
                // not recovering anyway), so no sender can grow its note without end.
                if self.firing.len() >= MAX_FIRING && !self.firing.contains(key) {
                    return false;
                }
                let new = self.firing.insert(key.clone());
                let was_resolved = self.resolved_since.take().is_some();
                if was_resolved || (new && key != &self.trigger) {
                    self.fired_again += 1;
                }
                new || was_resolved
            }
            Signal::Resolved { key, at } => {
                if !self.firing.remove(key) {
                    return false;
                }
                // A resolve before the rollback could have been deployed is not the rollback's
                // doing ("the metrics disappeared"): the alert must resolve again later.
                if *at < self.deployed_at() {
                    self.resolved_early = Some(*at);
                    return true;
                }
                if self.firing.is_empty() {
                    self.resolved_since = Some(*at);
                }
                true
            }
            Signal::Query { holds, at } => {
                let first = !std::mem::replace(&mut self.query_answered, true);
                let before = self.query_holds_since;
                self.query_holds_since = match (holds, before) {
                    (true, Some(since)) => Some(since),
                    (true, None) if *at >= self.deployed_at() => Some(*at),
                    _ => None,
                };
                first || before != self.query_holds_since
            }
            Signal::Applied { at } => {
                if self.applied_at.is_some() {
                    return false;
                }
                // Never before the push: the controller's clock is its own.
                self.applied_at = Some((*at).max(self.rolled_back_at));
                true
            }
        }
    }

    /// Where the watch stands at `now`.
    pub(crate) fn status(&self, now: Timestamp) -> Status {
        // Each signal: `None` not (yet) healthy, `Some(None)` nothing to wait for, `Some(Some(t))`
        // healthy since `t`.
        let stable_for = self.stable_for.as_signed();
        let stable = |since: Option<Timestamp>| since.filter(|s| now.duration_since(*s) >= stable_for);
        let alert = if !self.firing.is_empty() {
            None
        } else if self.must_resolve || self.resolved_since.is_some() {
            stable(self.resolved_since).map(Some)
        } else {
            Some(None)
        };
        let query = match &self.query {
            Some(_) => stable(self.query_holds_since).map(Some),
            None => Some(None),
        };
        let applied = match self.awaits_controller {
            true => self.applied_at.map(Some),
            false => Some(None),
        };
        if let (Some(a), Some(q), Some(c)) = (alert, query, applied)
            && let Some(recovered_at) = a.max(q).max(c)
        {
            return Status::Verified { recovered_at };
        }
        if now < self.deadline() {
            return Status::Watching;
        }
        if applied.is_none() {
            return Status::NotRecovered {
                reason: format!(
                    "not recovered within {}: the controller never reported the rollback applied and healthy",
                    self.within
                ),
            };
        }
        // Evidence of failure is an alert still firing or a query that answered "does not hold".
        // A query that could not be evaluated is neither: the state is unknown.
        let query_unknown = self.query.is_some()
            && query.is_none()
            && self.query_holds_since.is_none()
            && (self.query_error.is_some() || !self.query_answered);
        if alert.is_some() && query_unknown {
            let why = match &self.query_error {
                Some(e) => format!("the query could not be evaluated: {e}"),
                None => "Prometheus never answered the query".to_string(),
            };
            return Status::Unverified {
                reason: format!(
                    "not shown healthy or failed within {}: {why}; nothing is stepped back without evidence of failure",
                    self.within
                ),
            };
        }
        let mut why = Vec::new();
        if !self.firing.is_empty() {
            let keys: Vec<&str> = self.firing.iter().map(String::as_str).collect();
            why.push(format!("still firing: {}", keys.join(", ")));
        } else if alert.is_none() {
            why.push(match (self.resolved_since, self.resolved_early) {
                (None, Some(early)) => format!(
                    "the alert resolved at {early}, before the deploy time ({}) was over, which is not counted as the rollback's doing; no later resolve came",
                    self.deploy_time
                ),
                _ => format!("resolved, but not for {} yet", self.stable_for),
            });
        }
        if self.query.is_some() && query.is_none() {
            why.push(match (&self.query_holds_since, &self.query_error) {
                (Some(_), _) => format!("the query has held for less than {}", self.stable_for),
                (None, Some(e)) => format!("the query could not be evaluated: {e}"),
                (None, None) => "the query does not hold".to_string(),
            });
        }
        Status::NotRecovered { reason: format!("not recovered within {}: {}", self.within, why.join("; ")) }
    }

    /// The note that records where the watch stands, for a restart or another replica.
    pub(crate) fn progress(&self) -> String {
        format!(
            "rollbackd verification in progress\n\n{}\n",
            serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
        )
    }

    /// Reads back what [`Watch::progress`] wrote.
    pub(crate) fn resume(note: &str) -> Option<Watch> {
        let json = note.strip_prefix("rollbackd verification in progress\n\n")?;
        serde_json::from_str(json.trim()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(min: i64) -> Timestamp {
        let base: Timestamp = "2026-11-21T12:00:00Z".parse().unwrap();
        base + jiff::SignedDuration::from_mins(min)
    }

    fn spec(within: i64, stable: i64, deploy: i64) -> VerifySpec {
        VerifySpec {
            within: Duration::from_secs(within * 60),
            stable_for: Duration::from_secs(stable * 60),
            deploy_time: Duration::from_secs(deploy * 60),
            query: None,
            on_failure: OnFailure::Escalate,
            max_steps: 1,
        }
    }

    fn watch(spec: &VerifySpec, trigger: &str, query: Option<&str>) -> Watch {
        let of = Verifying { service: "checkout", env: "prod", trigger, at: t(0), step: 0 };
        Watch::start(
            spec,
            (RollbackId("rb-000000000001".into()), Sha("a".repeat(40))),
            "p",
            &of,
            query.map(str::to_string),
        )
    }

    const ALERT: &str = "alertmanager:fp1@2026-11-21T11:55:00Z";

    fn resolved(key: &str, min: i64) -> Signal {
        Signal::Resolved { key: key.into(), at: t(min) }
    }
    fn fired(key: &str, min: i64) -> Signal {
        Signal::Fired { key: key.into(), at: t(min) }
    }

    #[test]
    fn a_resolve_after_the_deploy_verifies_at_once_without_stable_for() {
        let mut w = watch(&spec(10, 0, 2), ALERT, None);
        assert_eq!(w.status(t(1)), Status::Watching);
        assert!(w.observe(&resolved(ALERT, 3)));
        assert_eq!(w.status(t(3)), Status::Verified { recovered_at: t(3) });
    }

    #[test]
    fn a_resolve_before_the_deploy_could_land_does_not_count() {
        let mut w = watch(&spec(10, 0, 2), ALERT, None);
        assert!(w.observe(&resolved(ALERT, 1)));
        assert_eq!(w.status(t(5)), Status::Watching);
        match w.status(t(10)) {
            Status::NotRecovered { reason } => {
                assert!(
                    reason.contains("not recovered within 10m") && reason.contains("before the deploy time"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_query_that_cannot_be_asked_says_so_and_is_no_evidence_of_failure() {
        let mut w = watch(&spec(10, 0, 0), "cli:alice-1", Some("up =="));
        w.query_error = Some("Prometheus answered 400: parse error".into());
        match w.status(t(10)) {
            Status::Unverified { reason } => {
                assert!(reason.contains("could not be evaluated: Prometheus answered 400"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        // Never answered at all: the same.
        let w = watch(&spec(10, 0, 0), "cli:alice-1", Some("up == 1"));
        assert!(matches!(w.status(t(10)), Status::Unverified { .. }));
        // Answered "does not hold" once, then unreachable: still unknown now.
        let mut w = watch(&spec(10, 0, 0), "cli:alice-1", Some("up == 1"));
        w.observe(&Signal::Query { holds: false, at: t(2) });
        assert!(matches!(w.status(t(10)), Status::NotRecovered { .. }), "answered, and it did not hold");
        w.query_error = Some("Prometheus unreachable".into());
        assert!(matches!(w.status(t(10)), Status::Unverified { .. }));
        // An alert still firing is evidence, whatever the query.
        let mut w = watch(&spec(10, 0, 0), ALERT, Some("up == 1"));
        w.query_error = Some("Prometheus unreachable".into());
        assert!(matches!(w.status(t(10)), Status::NotRecovered { .. }));
    }

    #[test]
    fn stable_for_waits_and_a_refire_resets_it() {
        let mut w = watch(&spec(10, 3, 0), ALERT, None);
        w.observe(&resolved(ALERT, 1));
        assert_eq!(w.status(t(2)), Status::Watching, "resolved only 1m ago");
        let refire = "alertmanager:fp1@2026-11-21T12:02:30Z";
        assert!(w.observe(&fired(refire, 2)));
        assert_eq!(w.fired_again, 1);
        assert_eq!(w.status(t(5)), Status::Watching);
        w.observe(&resolved(refire, 5));
        assert_eq!(w.status(t(7)), Status::Watching);
        assert_eq!(w.status(t(8)), Status::Verified { recovered_at: t(5) }, "recovered when it resolved");
    }

    #[test]
    fn still_firing_at_the_deadline_is_not_recovered_and_says_what() {
        let w = watch(&spec(10, 0, 0), ALERT, None);
        assert_eq!(w.status(t(9)), Status::Watching);
        match w.status(t(10)) {
            Status::NotRecovered { reason } => {
                assert!(reason.contains("still firing") && reason.contains("fp1"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn repeats_of_what_is_known_change_nothing() {
        let mut w = watch(&spec(10, 0, 0), ALERT, None);
        assert!(!w.observe(&fired(ALERT, 1)), "Alertmanager repeating the firing alert");
        assert!(!w.observe(&resolved("alertmanager:other@x", 1)), "an alert we never saw firing");
        assert_eq!(w.fired_again, 0);
    }

    #[test]
    fn two_alerts_firing_must_both_resolve() {
        let mut w = watch(&spec(10, 0, 0), ALERT, None);
        let other = "alertmanager:fp2@2026-11-21T12:01:00Z";
        w.observe(&fired(other, 1));
        w.observe(&resolved(ALERT, 2));
        assert_eq!(w.status(t(3)), Status::Watching);
        w.observe(&resolved(other, 4));
        assert_eq!(w.status(t(4)), Status::Verified { recovered_at: t(4) });
    }

    #[test]
    fn the_query_must_hold_as_well_as_the_alert_resolve() {
        let mut w = watch(&spec(10, 2, 0), ALERT, Some("up == 1"));
        w.observe(&resolved(ALERT, 1));
        assert_eq!(w.status(t(4)), Status::Watching, "the query has not held yet");
        w.observe(&Signal::Query { holds: true, at: t(4) });
        assert!(!w.observe(&Signal::Query { holds: true, at: t(5) }), "still holding changes nothing");
        assert_eq!(w.status(t(5)), Status::Watching);
        assert_eq!(w.status(t(6)), Status::Verified { recovered_at: t(4) });
    }

    #[test]
    fn a_request_is_judged_by_the_query_alone() {
        let mut w = watch(&spec(10, 0, 1), "cli:alice-1", Some("up == 1"));
        assert!(w.verifiable());
        w.observe(&Signal::Query { holds: true, at: t(0) });
        assert_eq!(w.status(t(0)), Status::Watching, "before the deploy time");
        w.observe(&Signal::Query { holds: true, at: t(2) });
        assert_eq!(w.status(t(2)), Status::Verified { recovered_at: t(2) });
        let mut failing = watch(&spec(10, 0, 0), "cli:alice-1", Some("up == 1"));
        failing.observe(&Signal::Query { holds: false, at: t(5) });
        match failing.status(t(10)) {
            Status::NotRecovered { reason } => assert!(reason.contains("query does not hold"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert!(!watch(&spec(10, 0, 0), "cli:alice-1", None).verifiable(), "nothing can verify it");
    }

    #[test]
    fn progress_round_trips() {
        let mut w = watch(&spec(10, 3, 0), ALERT, Some("up == 1"));
        w.observe(&resolved(ALERT, 1));
        assert_eq!(Watch::resume(&w.progress()), Some(w));
        assert_eq!(Watch::resume("rollbackd verification: the incident resolved"), None);
    }

    #[test]
    fn with_a_controller_the_rollback_counts_from_when_it_was_applied_and_never_applied_is_not_recovered() {
        let mut w = watch(&spec(30, 0, 5), "flux:Kustomization/ns/app/x/HealthCheckFailed", None);
        w.awaits_controller = true;
        assert!(w.verifiable());
        // Past the deploy time, still not applied: watching, then not recovered with that reason.
        assert_eq!(w.status(t(10)), Status::Watching);
        match w.status(t(31)) {
            Status::NotRecovered { reason } => {
                assert!(reason.contains("never reported the rollback applied"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert!(w.observe(&Signal::Applied { at: t(12) }));
        assert!(!w.observe(&Signal::Applied { at: t(13) }), "the first report counts");
        assert_eq!(w.status(t(12)), Status::Verified { recovered_at: t(12) });
    }
}
