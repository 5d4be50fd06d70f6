//! The one decision every write goes through. Whatever writes or merges a rollback (an alert,
//! CI, a person, a step back, the next phase of a phased rollback, `continue`, an approval, an
//! automatic merge) gathers the facts of its moment here and asks the pure
//! [`crate::domain::decide::decide`]: every guard of its policy on what it would write, the
//! freezes and the pause as git records them now, who asked, and the mode it writes under.
//!
//! The freezes are read fail-closed: state that cannot be read is never taken for "not
//! frozen". An automatic write is then proposed (or not written, with `pause.automatic:
//! nothing`), and the decision says why.

use jiff::Timestamp;
use tracing::warn;

use super::Ctx;
use crate::domain::audit::AuditRecord;
use crate::domain::decide::{Facts, Verdict, decide};
use crate::domain::decision::Decision;
use crate::domain::freeze::Freeze;
use crate::domain::guards;
use crate::domain::plan::Plan;
use crate::domain::policy::{Mode, Policy};
use crate::domain::rollback::{Delivery, RollbackId};

/// Who asks for a write, and under what, beyond what it would write.
#[derive(Clone, Copy)]
pub(super) struct Asking<'a> {
    pub policy: &'a Policy,
    /// The mode the write is decided under: the policy's, or `Direct` for an automatic merge
    /// (`review.auto_merge` lets the checks stand for the review).
    pub mode: Mode,
    /// A person asked (chat, the CLI, `continue`, an approval): as for any request by a
    /// person, freezes and the pause do not stop it; guards do.
    pub human: bool,
    /// Break glass: only the point of no return applies.
    pub emergency: bool,
    pub dry_run: bool,
    /// The rollback this write is (or is part of): its own earlier commits (the phases before
    /// this one) do not count against its guards.
    pub id: &'a RollbackId,
    /// An open proposal that undoes the same commits.
    pub open_proposal: Option<&'a AuditRecord>,
}

/// What stops automatic writes to one target now, as git records it.
#[derive(Clone, Debug, Default)]
pub(super) struct Stopping {
    /// The pause, or else a freeze covering the target.
    pub freeze: Option<Freeze>,
    /// Why the freezes could not be read, when they could not.
    pub unreadable: Option<String>,
}

impl Stopping {
    /// Why automatic writes to the target stop now, if they do.
    pub(super) fn describe(&self) -> Option<String> {
        match (&self.freeze, &self.unreadable) {
            (Some(f), _) => Some(f.describe()),
            (None, Some(why)) => Some(format!("the freezes and the pause cannot be read ({why})")),
            (None, None) => None,
        }
    }
}

impl Ctx {
    /// The freezes and the pause for `service`/`env` now. Unreadable state is said, never
    /// read as "not frozen".
    pub(super) fn stopping(&self, service: &str, env: &str, now: Timestamp) -> Stopping {
        match self.repo.freezes() {
            Ok(f) => {
                Stopping { freeze: f.paused(now).or_else(|| f.covering(service, env, now)).cloned(), unreadable: None }
            }
            Err(e) => {
                warn!(error = %e, "the freezes cannot be read: automatic writes are treated as paused");
                Stopping { freeze: None, unreadable: Some(e.to_string()) }
            }
        }
    }

    /// An open proposal that undoes exactly the commits `plan` undoes, for its target.
    pub(super) fn open_proposal_for(&self, plan: &Plan) -> Option<AuditRecord> {
        let bad: Vec<&str> = plan.bad_commits.iter().map(|c| c.sha.0.as_str()).collect();
        self.repo
            .index()
            .records()
            .iter()
            .find(|r| {
                r.delivery == Delivery::Proposal
                    && !r.cancelled
                    && r.service == plan.target.service
                    && r.env == plan.target.env
                    && r.bad_commits.iter().map(String::as_str).eq(bad.iter().copied())
            })
            .cloned()
    }

    /// Gathers the facts of this moment for writing `plan` (none: nothing left to check the
    /// guards on) and decides. The guards land in `decision.guards`, a freeze that changes
    /// the course in `decision.frozen`, every reason in `decision.notes`, what made a push a
    /// proposal in `decision.because`.
    pub(super) fn decide_write(
        &self,
        asking: &Asking<'_>,
        plan: Option<&Plan>,
        target: (&str, &str),
        now: Timestamp,
        decision: &mut Decision,
    ) -> Verdict {
        let policy = asking.policy;
        let all = self.repo.index().records();
        let others: Vec<AuditRecord>;
        let records = if all.iter().any(|r| &r.id == asking.id) {
            others = all.iter().filter(|r| &r.id != asking.id).cloned().collect();
            &others[..]
        } else {
            all
        };
        let mut checks = match plan {
            Some(plan) => guards::evaluate(&policy.guards, policy.irreversible.is_some(), plan, records, now),
            None => Vec::new(),
        };
        if asking.emergency {
            checks.retain(|g| g.guard == guards::POINT_OF_NO_RETURN);
        }
        let stopping = self.stopping(target.0, target.1, now);
        let facts = Facts {
            policy: policy.name(),
            mode: asking.mode,
            on_violation: policy.guards.on_violation,
            guards: &checks,
            freeze: stopping.freeze.as_ref(),
            pause_denies: self.config.pause.automatic == crate::config::PauseMode::Nothing,
            unreadable: stopping.unreadable.as_deref(),
            human_request: asking.human,
            emergency: asking.emergency,
            open_proposal: asking.open_proposal,
            dry_run: asking.dry_run,
            id: asking.id,
        };
        let (mut notes, mut because) = (Vec::new(), Vec::new());
        let verdict = decide(&facts, &mut notes, &mut because);
        if !asking.emergency && !asking.human {
            decision.frozen = stopping.describe();
        }
        decision.guards = checks;
        decision.notes.append(&mut notes);
        decision.because = because;
        verdict
    }
}
