//! What people do to proposals and freezes (from chat or the CLI): approve, cancel, freeze,
//! unfreeze, status. With the local forge a proposal is a branch; approving merges it onto the
//! target branch (replayed if the branch moved), tags it, and deletes the branch.

use jiff::{SignedDuration, Timestamp};
use tracing::{info, warn};

use super::facts::Asking;
use super::owners::Admission;
use super::{Engine, EngineError};
use crate::domain::actor::Actor;
use crate::domain::answer::{Answer, Refusal};
use crate::domain::decide::Verdict;
use crate::domain::decision::Decision;
use crate::domain::event::Event;
use crate::domain::freeze::Freeze;
use crate::domain::plan::Sha;
use crate::domain::plan::{Plan, Strategy};
use crate::domain::policy::{Mode, Policy};
use crate::domain::principal::first_admitting;
use crate::domain::rollback::{Delivery, Rollback, RollbackId, RollbackRef};
use crate::git::{PlanRequest, Planned, PushResult, Try, WriteTarget};

/// An open proposal being merged: its branch at the reviewed commit, what it rolls back, and
/// who merges it when.
#[derive(Clone, Copy)]
pub(super) struct Merge<'a> {
    pub branch: &'a str,
    pub commit: &'a Sha,
    pub service: &'a str,
    pub env: &'a str,
    pub id: &'a str,
    pub by: &'a str,
    pub now: Timestamp,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ReviewOutcome {
    Merged { rollback: Rollback },
    Approved { id: String, approvals: usize, needed: u32 },
    Cancelled { id: String, tag: String },
    Refused { reason: String },
}

impl ReviewOutcome {
    pub fn summary(&self) -> String {
        match self {
            ReviewOutcome::Merged { rollback } => format!(
                "merged: {} is on {} as {} (tag {})",
                rollback.id,
                rollback.branch,
                rollback.commit.short(),
                rollback.tag.as_deref().unwrap_or("-")
            ),
            ReviewOutcome::Approved { id, approvals, needed } => {
                format!("approved {id}: {approvals} of {needed} approvals; waiting for more")
            }
            ReviewOutcome::Cancelled { id, tag } => format!("cancelled {id}: branch deleted, kept as tag {tag}"),
            ReviewOutcome::Refused { reason } => format!("refused: {reason}"),
        }
    }
}

/// Who merges a proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Merging {
    /// People approved it: the review it waited for.
    Approved,
    /// `review.auto_merge`: nobody reviewed it; for a request by a person, or not.
    Automatic { asked_by_person: bool },
}

impl Engine {
    /// Approves proposal `id`; merges it once the policy's approvals are met.
    pub fn approve(&mut self, id: &str, actor: &Actor) -> Result<ReviewOutcome, EngineError> {
        handle_approve(&mut self.ctx, &mut self.verification, id, actor)
    }

    /// Checks finished on a proposal branch: an `auto_merge` proposal whose required checks have
    /// all succeeded is merged now.
    pub fn checks_completed(&mut self, branch: &str) -> Result<String, EngineError> {
        handle_checks_completed(&mut self.ctx, branch)
    }

    /// A rollback PR merged or closed by hand on GitHub: recorded in the audit trail as a
    /// `rollback/...` tag on what landed, or a `cancelled/...` tag on the closed proposal.
    pub fn record_pr_closed(
        &mut self,
        branch: &str,
        merged_sha: Option<&str>,
        head_sha: &str,
        by: &str,
    ) -> Result<String, EngineError> {
        handle_pr_closed(&mut self.ctx, branch, merged_sha, head_sha, by)
    }

    /// Closes proposal `id`: its branch is deleted and its commit kept as `cancelled/...` tag.
    pub fn cancel(&mut self, id: &str, actor: &Actor) -> Result<ReviewOutcome, EngineError> {
        handle_cancel(&mut self.ctx, id, actor)
    }

    pub fn freeze(
        &mut self,
        scope: &str,
        env: Option<&str>,
        duration: Option<crate::support::duration::Duration>,
        reason: Option<&str>,
        actor: &Actor,
    ) -> Result<Answer, EngineError> {
        handle_freeze(&mut self.ctx, scope, env, duration, reason, actor)
    }

    /// The kill switch: every automatic rollback (and step back) stops, fleet-wide, until
    /// `resume` or the end of `duration` (default 1h). Authorised like a freeze; recorded in git.
    pub fn pause(
        &mut self,
        duration: Option<crate::support::duration::Duration>,
        reason: Option<&str>,
        actor: &Actor,
    ) -> Result<Answer, EngineError> {
        handle_pause(&mut self.ctx, duration, reason, actor)
    }

    /// Lifts the pause.
    pub fn resume(&mut self, actor: &Actor, asked_at: Option<Timestamp>) -> Result<Answer, EngineError> {
        handle_resume(&mut self.ctx, actor, asked_at)
    }

    /// Lifts freezes of `scope` (in `env`, or every env). `asked_at` is when the person asked
    /// (chat): a freeze set after that is left in place, so a replayed `unfreeze` cannot lift a
    /// newer freeze.
    pub fn unfreeze(
        &mut self,
        scope: &str,
        env: Option<&str>,
        actor: &Actor,
        asked_at: Option<Timestamp>,
    ) -> Result<Answer, EngineError> {
        handle_unfreeze(&mut self.ctx, scope, env, actor, asked_at)
    }
}

impl super::Ctx {
    /// What a person's action starts with: the data dir's lock, the origin as it is now (people
    /// act on what they just saw, so the freshness window does not apply), and the time.
    pub(super) fn begin_fresh(&mut self) -> Result<(crate::git::MirrorLock, Timestamp), EngineError> {
        let lock = self.begin()?;
        self.fetch_now()?;
        Ok((lock, self.clock.now()))
    }

    /// Says something on a proposal's conversation, where there is one, through the outbox:
    /// what people are told is never worth failing the action for, nor waiting on the forge.
    fn say(&self, branch: &str, text: &str) {
        self.outbox.say(branch.to_string(), text.to_string());
    }

    /// Merges the proposal's pull request through the forge at exactly the reviewed commit
    /// (replayed onto the base first if the base moved), then tags what landed and says so on
    /// the PR. On the writer: the merge is the write.
    pub(super) fn merge_on_forge(
        &mut self,
        m: &Merge<'_>,
        method: crate::domain::policy::MergeMethod,
    ) -> Result<ReviewOutcome, EngineError> {
        let Merge { branch, commit, service, env, id, by: who, now } = *m;
        let message = self.repo.message(commit)?;
        let pr = self.forge.propose(&crate::forge::ProposalRequest {
            branch,
            base: self.repo.branch(),
            title: &format!("Roll back {service}/{env} ({id})"),
            body: &message,
            labels: &["rollback".into(), format!("service:{service}"), format!("env:{env}")],
            reviewers: &[],
            teams: &[],
        })?;
        let Some(pr) = pr else {
            return Ok(ReviewOutcome::Refused { reason: "the forge keeps no pull request to merge".into() });
        };
        let Some(tip) = self.repo.onto_head(commit, now)? else {
            let reason =
                format!("{} moved and {id} no longer applies cleanly; cancel it and ask again", self.repo.branch());
            self.say(branch, &format!("Not merged: {reason}."));
            return Ok(ReviewOutcome::Refused { reason });
        };
        if &tip != commit && self.repo.replace_branch(branch, &tip, commit)? == PushResult::Moved {
            return Ok(ReviewOutcome::Refused {
                reason: format!("{branch} changed while it was being updated; try again"),
            });
        }
        let merged = match self.forge.merge(&pr, method, &tip.0, &message) {
            Ok(sha) => Sha(sha),
            Err(crate::forge::ForgeError::MergeRefused(reason)) => {
                warn!(rollback_id = id, pr = pr.number, %reason, "GitHub refused the merge");
                self.say(branch, &format!("Not merged: {reason}."));
                return Ok(ReviewOutcome::Refused { reason });
            }
            Err(e) => return Err(e.into()),
        };
        self.fetch_now()?;
        let tag = RollbackRef::new(service, env, &RollbackId(id.to_string())).name();
        let review = self.review_of(commit, Some(who), None);
        self.repo.tag_commit(
            &tag,
            &merged.0,
            &format!("Rollback {id} of {service}/{env}, merged from #{}\n\n{review}", pr.number),
            now,
        )?;
        // GitHub may have deleted the branch already: then there is nothing left to delete.
        if let Err(e) = self.repo.delete_branch(branch, &tip) {
            warn!(branch, error = %e, "the merged proposal's branch could not be deleted");
        }
        self.outbox.comment(pr.number, format!("Merged by {who} as `{}`, tagged `{tag}`.", merged.short()));
        self.outbox.forget(branch);
        info!(rollback_id = id, pr = pr.number, "proposal merged on GitHub");
        let rollback = Rollback {
            id: RollbackId(id.to_string()),
            commit: merged,
            delivery: Delivery::Direct,
            branch: self.repo.branch().to_string(),
            tag: Some(tag),
            push_retries: 0,
            pr_url: Some(pr.html_url),
            phase: None,
            because: Vec::new(),
        };
        Ok(ReviewOutcome::Merged { rollback })
    }

    /// What proposal `t` would change if merged now, planned again from the branch as it is:
    /// its bad commits (`Rollback-Of`) undone to its known-good (`Rollback-To`) in its
    /// policy's target. `None` when that changes nothing any more; an error says why it cannot
    /// be planned (the policy names another target now, say).
    pub(super) fn proposal_plan(
        &self,
        policy: &Policy,
        t: &crate::git::Trailers,
        now: Timestamp,
    ) -> Result<Option<Plan>, String> {
        let event = Event::again(&t.trigger, &t.service, &t.env, t.reason.clone(), t.actor.clone(), now);
        let target = policy.resolve_target(&event, &self.rules)?;
        if target.service != t.service || target.env != t.env {
            return Err(format!("policy {} now names another target", policy.name()));
        }
        let request = PlanRequest {
            target: &target,
            strategy: Strategy::Restore,
            exact: true,
            to: Some(&t.to),
            irreversible: policy.irreversible.as_ref(),
            continues: (!t.of.is_empty()).then_some(&t.of[..]),
            allow_removal: policy.action.allow_removal,
            upto: None,
        };
        match self.repo.plan(&request) {
            Ok(Planned::Ready(plan)) => Ok(Some(*plan)),
            Ok(Planned::Noop { .. } | Planned::AlreadyRolledBack { .. }) => Ok(None),
            Ok(Planned::NothingToGoBackTo { reason, .. }) => Err(reason),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Whether a proposal may be merged now, decided like any write (`Ctx::decide_write`):
    /// `None` to merge, or why not. An approval is the review the proposal waited for, so only
    /// a denial stops it (a guard with `on_violation: deny`, `pause.automatic: nothing` for an
    /// automatic one, a policy that no longer rolls back); an automatic merge goes ahead only
    /// where a push would.
    pub(super) fn may_merge(
        &self,
        policy: &Policy,
        plan: Option<&Plan>,
        t: &crate::git::Trailers,
        id: &RollbackId,
        by: Merging,
        now: Timestamp,
    ) -> Option<String> {
        let event = Event::again(&t.trigger, &t.service, &t.env, t.reason.clone(), t.actor.clone(), now);
        let mut decision = Decision::for_event(&event);
        let (mode, human) = match by {
            Merging::Approved => (policy.action.mode, true),
            Merging::Automatic { asked_by_person } => (Mode::Direct, asked_by_person),
        };
        let asking = Asking { policy, mode, human, emergency: t.emergency, dry_run: false, id, open_proposal: None };
        let verdict = self.decide_write(&asking, plan, (&t.service, &t.env), now, &mut decision);
        match (verdict, by) {
            (Verdict::Deliver(Delivery::Direct), _) | (Verdict::Deliver(_), Merging::Approved) => None,
            (Verdict::Deliver(_), Merging::Automatic { .. }) => {
                Some(decision.frozen.unwrap_or_else(|| decision.notes.join("; ")))
            }
            (Verdict::Settled(outcome) | Verdict::SameAsOpenProposal(outcome), _) => Some(outcome.summary()),
        }
    }

    /// The review lines of a tag: the approvals recorded on `proposal`, and who merged or
    /// cancelled it.
    fn review_of(&self, proposal: &Sha, merged_by: Option<&str>, cancelled_by: Option<&str>) -> String {
        crate::domain::audit::Review {
            approved_by: self.repo.approvals(proposal),
            merged_by: merged_by.map(str::to_string),
            cancelled_by: cancelled_by.map(str::to_string),
        }
        .render()
    }

    /// Who may `act` (freeze, pause, release holds): anyone an approver in some policy (chat),
    /// or an operator (CLI). The refusal, if refused.
    pub(super) fn may_freeze(&self, actor: &Actor, act: &str) -> Option<Answer> {
        let p = actor.principal()?;
        let ok = self.policies.policies.iter().any(|pol| first_admitting(&pol.chatops.approve, p).is_some());
        (!ok).then(|| Answer::refused(Refusal::NotAllowed, format!("{p} may not {act}: not an approver in any policy")))
    }

    /// Records a freeze (or the pause) in git. A freeze is for a launch or an incident, not
    /// forever: more than 0s, a year at most.
    fn add_freeze(
        &mut self,
        scope: &str,
        env: Option<&str>,
        duration: Option<crate::support::duration::Duration>,
        reason: Option<&str>,
        by: String,
        pause: bool,
    ) -> Result<Answer, EngineError> {
        let what = if pause { "a pause" } else { "a freeze" };
        let refused = || Ok(Answer::refused(Refusal::BadInput, format!("{what} lasts more than 0s and at most 366d")));
        let length = duration.map_or(SignedDuration::from_hours(1), |d| d.as_signed());
        if length <= SignedDuration::ZERO || length > SignedDuration::from_hours(24 * 366) {
            return refused();
        }
        let (_lock, now) = self.begin_fresh()?;
        let Some(until) = now.checked_add(length).ok() else { return refused() };
        let f = Freeze {
            scope: scope.to_string(),
            env: env.map(str::to_string),
            until,
            reason: reason.map(crate::support::text::quoted),
            by,
            at: now,
            pause,
        };
        let text = f.describe();
        let message = if pause { format!("Pause: {text}\n") } else { format!("Freeze: {text}\n") };
        self.repo.update_freezes(&message, now, |set| set.add(f.clone(), now))?;
        Ok(Answer::done(text))
    }
}

/// Approves proposal `id`; merges it once the policy's approvals are met.
pub(super) fn handle_approve(
    ctx: &mut super::Ctx,
    verification: &mut super::verify::Verification,
    id: &str,
    actor: &Actor,
) -> Result<ReviewOutcome, EngineError> {
    let (who, actor) = (actor.id(), actor.principal());
    let (_lock, now) = ctx.begin_fresh()?;
    let Some((branch, commit, t)) = ctx.repo.find_proposal(id)? else {
        return Ok(ReviewOutcome::Refused { reason: format!("no open proposal {id}") });
    };
    let Some(policy) = ctx.policies.policies.iter().find(|p| p.name() == t.policy).cloned() else {
        return Ok(ReviewOutcome::Refused { reason: format!("policy {} of {id} no longer exists", t.policy) });
    };
    // `codeowners` is decided on the files this proposal changes, with CODEOWNERS as the
    // watched branch has it (never as the proposal would leave it).
    if let Some(p) = actor
        && let Admission::Refused(why) =
            ctx.admit(&policy.chatops.approve, "chatops.approve", p, || Ok(ctx.repo.changed_by(&commit)?))?
    {
        return Ok(ReviewOutcome::Refused {
            reason: format!("{p} may not approve rollbacks of policy {} ({why})", policy.name()),
        });
    }
    let directory = ctx.config.directory.clone();
    if policy.chatops.two_person && directory.same_person(&who, &t.actor) {
        return Ok(ReviewOutcome::Refused {
            reason: format!("two-person rule of policy {}: {who} asked for {id} and cannot approve it", policy.name()),
        });
    }
    let mut approvers = ctx.repo.approvals(&commit);
    if !approvers.iter().any(|a| directory.same_person(a, &who)) {
        ctx.repo.add_approval(&commit, &who, now)?;
        approvers.push(who.clone());
        info!(rollback_id = id, approver = %who, "proposal approved");
    }
    // Approvals count people, not accounts: one person's Slack and GitHub approvals are one.
    approvers.retain(|a| !(policy.chatops.two_person && directory.same_person(a, &t.actor)));
    let mut seen = std::collections::HashSet::new();
    approvers.retain(|a| seen.insert(directory.person(a)));
    let needed = policy.review.approvals.max(1);
    if (approvers.len() as u32) < needed {
        ctx.say(&branch, &format!("Approved by {who}: {} of {needed}.", approvers.len()));
        return Ok(ReviewOutcome::Approved { id: id.to_string(), approvals: approvers.len(), needed });
    }
    // Merging is a write like any other: decided now, with the guards, freezes and pause of
    // this moment. The approval is the review a proposal waits for; a guard that denies,
    // or a policy that no longer rolls back, still stops it.
    let plan = match ctx.proposal_plan(&policy, &t, now) {
        Ok(plan) => plan,
        Err(why) => {
            let reason = format!("{id} cannot be checked against policy {} now: {why}", policy.name());
            ctx.say(&branch, &format!("Not merged: {reason}."));
            return Ok(ReviewOutcome::Refused { reason });
        }
    };
    let rid = RollbackId(id.to_string());
    if let Some(why) = ctx.may_merge(&policy, plan.as_ref(), &t, &rid, Merging::Approved, now) {
        let reason = format!("{id} is not merged: {why}");
        warn!(rollback_id = id, "{reason}");
        ctx.say(&branch, &format!("Not merged: {why}."));
        return Ok(ReviewOutcome::Refused { reason });
    }
    let merge = Merge { branch: &branch, commit: &commit, service: &t.service, env: &t.env, id, by: &who, now };
    let outcome = if ctx.forge.hosts_pull_requests() {
        ctx.merge_on_forge(&merge, policy.review.merge)?
    } else {
        merge_proposal(ctx, &merge)?
    };
    let outcome = match outcome {
        // The rest of a phased rollback is its last phase.
        ReviewOutcome::Merged { mut rollback } => {
            rollback.phase = t.phase;
            super::verify::merged(ctx, verification, &rollback, &t, "approval", now);
            ReviewOutcome::Merged { rollback }
        }
        other => other,
    };
    Ok(outcome)
}

/// Checks finished on a proposal branch: an `auto_merge` proposal whose required checks have
/// all succeeded is merged now.
pub(super) fn handle_checks_completed(ctx: &mut super::Ctx, branch: &str) -> Result<String, EngineError> {
    let (_lock, now) = ctx.begin_fresh()?;
    let Some(rref) = RollbackRef::parse_branch(branch) else {
        return Ok(format!("{} is not a rollback proposal", crate::domain::ident::shown(branch)));
    };
    let id = rref.id.as_str();
    let Some((branch, commit, t)) = ctx.repo.find_proposal(id)? else {
        return Ok(format!("no open proposal {id}"));
    };
    let Some(policy) = ctx.policies.policies.iter().find(|p| p.name() == t.policy).cloned() else {
        return Ok(format!("policy {} of {id} no longer exists", t.policy));
    };
    if !policy.review.auto_merge {
        return Ok(format!("{id} waits for approval (policy {} has no auto_merge)", policy.name()));
    }
    if !ctx.forge.hosts_pull_requests() {
        return Ok("checks are read from GitHub only".into());
    }
    let pending = ctx.forge.checks_pending(&commit.0, &policy.review.required_checks)?;
    if !pending.is_empty() {
        return Ok(format!("{id} waits for checks: {}", pending.join(", ")));
    }
    let plan = match ctx.proposal_plan(&policy, &t, now) {
        Ok(plan) => plan,
        Err(why) => return Ok(format!("{id} waits for an approval: it cannot be checked now: {why}")),
    };
    let rid = RollbackId(id.to_string());
    let by = Merging::Automatic { asked_by_person: false };
    if let Some(why) = ctx.may_merge(&policy, plan.as_ref(), &t, &rid, by, now) {
        return Ok(format!("{id} waits for an approval: {why}"));
    }
    let merge = Merge { branch: &branch, commit: &commit, service: &t.service, env: &t.env, id, by: "auto_merge", now };
    let outcome = ctx.merge_on_forge(&merge, policy.review.merge)?;
    Ok(outcome.summary())
}

/// A rollback PR merged or closed by hand on GitHub: recorded in the audit trail as a
/// `rollback/...` tag on what landed, or a `cancelled/...` tag on the closed proposal.
pub(super) fn handle_pr_closed(
    ctx: &mut super::Ctx,
    branch: &str,
    merged_sha: Option<&str>,
    head_sha: &str,
    by: &str,
) -> Result<String, EngineError> {
    let (_lock, now) = ctx.begin_fresh()?;
    let Some(rref) = RollbackRef::parse_branch(branch) else {
        return Ok(format!("{} is not a rollback proposal", crate::domain::ident::shown(branch)));
    };
    // Closed or merged on GitHub: a pull request still to open for it is not.
    ctx.outbox.forget(branch);
    let id = &rref.id;
    // A GitHub login, from an authenticated delivery; anything else is said, not recorded.
    let by = if crate::domain::ident::is_plain(by) { by.to_string() } else { crate::domain::ident::shown(by) };
    let by = if crate::domain::ident::is_plain(&by) { format!("github:{by}") } else { "github:(unknown)".into() };
    let (tag, message) = match merged_sha {
        Some(sha) => {
            let review = ctx.review_of(&Sha(head_sha.to_string()), Some(&by), None);
            (rref.name(), format!("Rollback {id} merged on GitHub by {by} at {sha}\n\n{review}"))
        }
        None => {
            let review = ctx.review_of(&Sha(head_sha.to_string()), None, Some(&by));
            (rref.cancelled(), format!("Cancelled {id}: pull request closed by {by}\n\n{review}"))
        }
    };
    let at = merged_sha.unwrap_or(head_sha);
    // Commit ids from the payload reach git only as full hex ids, never as revision syntax.
    if !Sha::is_full_hex(at) || !Sha::is_full_hex(head_sha) {
        return Ok(format!("{} is not a commit id", crate::domain::ident::shown(at)));
    }
    // Only a proposal rollbackd made, as it made it: anyone who can push a branch can name
    // it `rollback/...`, and a tag here would make its commit a trusted rollback.
    if !ctx.repo.proposed_by_us(&rref, &Sha(head_sha.to_string())) {
        warn!(%branch, head = head_sha, "a pull request from a rollback-named branch rollbackd did not propose; not recorded");
        return Ok(format!("{branch} at {head_sha} is not a proposal rollbackd made; nothing recorded"));
    }
    let created = ctx.repo.tag_commit(&tag, at, &message, now)?;
    if merged_sha.is_none() {
        // A proposal closed unmerged is cancelled: its branch goes, so nobody can approve
        // it afterwards (compare-and-swap: a branch that moved since is left alone).
        let _ = ctx.repo.delete_branch(branch, &Sha(head_sha.to_string()))?;
    }
    Ok(if created { format!("recorded {tag}") } else { format!("{tag} was recorded already") })
}

pub(super) fn merge_proposal(ctx: &mut super::Ctx, m: &Merge<'_>) -> Result<ReviewOutcome, EngineError> {
    let Merge { branch, commit, service, env, id, by: merged_by, now } = *m;
    let review = ctx.review_of(commit, Some(merged_by), None);
    ctx.retry_on_moved(&mut (), |ctx, _, attempt| {
        let head = ctx.repo.head()?;
        let Some(merged) = ctx.repo.onto_head(commit, now)? else {
            return Ok(Try::Done(ReviewOutcome::Refused {
                reason: format!(
                    "{} moved and {id} no longer applies cleanly; cancel it and ask for a new rollback",
                    ctx.repo.branch()
                ),
            }));
        };
        let tag_name = RollbackRef::new(service, env, &RollbackId(id.to_string())).name();
        let tag_msg = format!("Rollback {id} of {service}/{env}, merged from {branch}\n\n{review}");
        let tag = ctx.repo.create_tag(&tag_name, &merged, &tag_msg, now)?;
        let target = WriteTarget::Branch { name: ctx.repo.branch().to_string(), expected: head };
        Ok(match ctx.repo.publish(&merged, &target, Some((&tag_name, &tag)))? {
            PushResult::Moved => Try::Moved,
            PushResult::Pushed => {
                ctx.repo.delete_branch(branch, commit)?;
                let rollback = Rollback {
                    id: RollbackId(id.to_string()),
                    commit: merged,
                    delivery: Delivery::Direct,
                    branch: ctx.repo.branch().to_string(),
                    tag: Some(tag_name),
                    push_retries: attempt,
                    pr_url: None,
                    phase: None,
                    because: Vec::new(),
                };
                ctx.outbox.forget(branch);
                info!(rollback_id = id, "proposal merged");
                Try::Done(ReviewOutcome::Merged { rollback })
            }
        })
    })
}

/// Closes proposal `id`: its branch is deleted and its commit kept as `cancelled/...` tag.
pub(super) fn handle_cancel(ctx: &mut super::Ctx, id: &str, actor: &Actor) -> Result<ReviewOutcome, EngineError> {
    let (who, actor) = (actor.id(), actor.principal());
    let (_lock, now) = ctx.begin_fresh()?;
    let Some((branch, commit, t)) = ctx.repo.find_proposal(id)? else {
        return Ok(ReviewOutcome::Refused { reason: format!("no open proposal {id}") });
    };
    if let Some(p) = actor {
        let approver = match ctx.policies.policies.iter().find(|x| x.name() == t.policy) {
            Some(pol) => matches!(
                ctx.admit(&pol.chatops.approve, "chatops.approve", p, || Ok(ctx.repo.changed_by(&commit)?))?,
                Admission::Admitted
            ),
            None => false,
        };
        if !approver && !ctx.config.directory.same_person(&p.id, &t.actor) {
            return Ok(ReviewOutcome::Refused {
                reason: format!("{p} may not cancel {id}: only its requester or an approver of policy {}", t.policy),
            });
        }
    }
    let tag = RollbackRef::new(&t.service, &t.env, &RollbackId(id.to_string())).cancelled();
    let review = ctx.review_of(&commit, None, Some(&who));
    ctx.repo.tag_commit(&tag, &commit.0, &format!("Cancelled {id} by {who}\n\n{review}"), now)?;
    // Closing is part of the cancel, as merging is part of an approval: done before the
    // branch goes (GitHub closes a pull request whose branch is deleted, and then nothing
    // would say who cancelled it).
    ctx.forge.close(&branch, &format!("Cancelled by {who}."))?;
    ctx.repo.delete_branch(&branch, &commit)?;
    ctx.outbox.forget(&branch);
    info!(rollback_id = id, by = %who, "proposal cancelled");
    Ok(ReviewOutcome::Cancelled { id: id.to_string(), tag })
}

pub(super) fn handle_freeze(
    ctx: &mut super::Ctx,
    scope: &str,
    env: Option<&str>,
    duration: Option<crate::support::duration::Duration>,
    reason: Option<&str>,
    actor: &Actor,
) -> Result<Answer, EngineError> {
    if let Some(refused) = ctx.may_freeze(actor, "freeze or unfreeze") {
        return Ok(refused);
    }
    ctx.add_freeze(scope, env, duration, reason, actor.id(), false)
}

/// The kill switch: every automatic rollback (and step back) stops, fleet-wide, until
/// `resume` or the end of `duration` (default 1h). Authorised like a freeze; recorded in git.
pub(super) fn handle_pause(
    ctx: &mut super::Ctx,
    duration: Option<crate::support::duration::Duration>,
    reason: Option<&str>,
    actor: &Actor,
) -> Result<Answer, EngineError> {
    if let Some(refused) = ctx.may_freeze(actor, "pause or resume") {
        return Ok(refused);
    }
    let said = ctx.add_freeze("all", None, duration, reason, actor.id(), true)?;
    if !said.is_refused() {
        warn!("{said}");
    }
    Ok(said)
}

/// Lifts the pause.
pub(super) fn handle_resume(
    ctx: &mut super::Ctx,
    actor: &Actor,
    asked_at: Option<Timestamp>,
) -> Result<Answer, EngineError> {
    let who = actor.id();
    let lifted =
        lift_freezes(ctx, actor, "pause or resume", asked_at, &format!("Resume by {who}\n"), |set, now, asked| {
            set.resume(now, asked)
        })?;
    Ok(match lifted {
        Err(refused) => refused,
        Ok(0) => Answer::done("automatic rollbacks were not paused"),
        Ok(_) => Answer::done(format!("automatic rollbacks resumed by {who}")),
    })
}

/// Lifts freezes of `scope` (in `env`, or every env). `asked_at` is when the person asked
/// (chat): a freeze set after that is left in place, so a replayed `unfreeze` cannot lift a
/// newer freeze.
pub(super) fn handle_unfreeze(
    ctx: &mut super::Ctx,
    scope: &str,
    env: Option<&str>,
    actor: &Actor,
    asked_at: Option<Timestamp>,
) -> Result<Answer, EngineError> {
    let who = actor.id();
    let message = format!("Unfreeze {scope} by {who}\n");
    let lifted = lift_freezes(ctx, actor, "freeze or unfreeze", asked_at, &message, |set, now, asked| {
        set.remove(scope, env, now, asked)
    })?;
    Ok(match lifted {
        Err(refused) => refused,
        Ok(0) => Answer::done(format!("{scope} was not frozen")),
        Ok(1) => Answer::done(format!("{scope} unfrozen by {who}")),
        Ok(n) => Answer::done(format!("{scope} unfrozen by {who}: {n} freezes lifted")),
    })
}

/// Lifts freezes for `actor` (authorised to `act` like a freeze), recorded with `message`:
/// `lift` removes them given now and when the person asked (`asked_at`, default now: a freeze
/// set after that stays, so a replayed request cannot lift a newer one). How many it lifted,
/// or the refusal.
fn lift_freezes(
    ctx: &mut super::Ctx,
    actor: &Actor,
    act: &str,
    asked_at: Option<Timestamp>,
    message: &str,
    mut lift: impl FnMut(&mut crate::domain::freeze::Freezes, Timestamp, Timestamp) -> usize,
) -> Result<Result<usize, Answer>, EngineError> {
    if let Some(refused) = ctx.may_freeze(actor, act) {
        return Ok(Err(refused));
    }
    let (_lock, now) = ctx.begin_fresh()?;
    let asked_at = asked_at.unwrap_or(now);
    Ok(Ok(ctx.repo.update_freezes(message, now, |set| lift(set, now, asked_at))?))
}
