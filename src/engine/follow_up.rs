//! What follows a write when proposals live on a forge: auto-merging, telling an open pull
//! request that its incident fired again, and the review issue a break-glass rollback owes.

use crate::support::text::markdown;
use jiff::Timestamp;

use super::review::Merging;
use super::{Engine, EngineError, ReviewOutcome};
use crate::domain::decision::Decision;
use crate::domain::event::Event;
use crate::domain::plan::Plan;
use crate::domain::policy::Policy;
use crate::forge::Proposal;
use crate::{Outcome, Rollback};

impl Engine {
    /// `review.auto_merge`: merge the proposal at once, by the same path as an approval.
    pub(super) fn auto_merge(
        &mut self,
        rollback: Rollback,
        plan: &Plan,
        policy: &Policy,
        asked_by_person: bool,
        now: Timestamp,
        decision: &mut Decision,
    ) -> Result<Outcome, EngineError> {
        let required = &policy.review.required_checks;
        if !required.is_empty() {
            let pending = self.ctx.forge.checks_pending(&rollback.commit.0, required).map_err(|e| e.to_string());
            match pending {
                Ok(p) if p.is_empty() => {}
                Ok(p) => {
                    decision.notes.push(format!("auto_merge waits for checks: {}", p.join(", ")));
                    return Ok(Outcome::Proposed { rollback });
                }
                Err(e) => {
                    decision.notes.push(format!("auto_merge waits for an approval: {e}"));
                    return Ok(Outcome::Proposed { rollback });
                }
            }
        }
        // Nobody reviewed it: it is merged only where the same rollback would have been pushed
        // (no freeze, no pause, every guard passing), decided now.
        let t = crate::git::Trailers::parse(&self.ctx.repo.message(&rollback.commit)?);
        let Some(t) = t else {
            decision.notes.push("auto_merge waits for an approval: its commit cannot be read back".into());
            return Ok(Outcome::Proposed { rollback });
        };
        let by = Merging::Automatic { asked_by_person };
        if let Some(why) = self.ctx.may_merge(policy, Some(plan), &t, &rollback.id, by, now) {
            decision.notes.push(format!("auto_merge waits for an approval: {why}"));
            return Ok(Outcome::Proposed { rollback });
        }
        let (service, env, id) = (&plan.target.service, &plan.target.env, rollback.id.to_string());
        let merge = super::review::Merge {
            branch: &rollback.branch,
            commit: &rollback.commit,
            service,
            env,
            id: &id,
            by: "auto_merge",
            now,
        };
        let merged = if self.ctx.forge.hosts_pull_requests() {
            self.ctx.merge_on_forge(&merge, policy.review.merge)?
        } else {
            super::review::merge_proposal(&mut self.ctx, &merge)?
        };
        Ok(match merged {
            ReviewOutcome::Merged { rollback: mut merged } => {
                decision.notes.push("auto_merge: merged at once".into());
                merged.pr_url = merged.pr_url.or(rollback.pr_url);
                Outcome::RolledBack { rollback: merged }
            }
            other => {
                decision.notes.push(format!("auto_merge did not merge: {}", other.summary()));
                Outcome::Proposed { rollback }
            }
        })
    }
}

/// When each open proposal was last told "fired again", so a storm makes one comment.
#[derive(Default)]
pub(super) struct FiredAgain(std::collections::HashMap<crate::domain::rollback::RollbackId, std::time::Instant>);

impl super::Ctx {
    /// A break-glass rollback skipped review, so it always gets one afterwards: an issue with the
    /// GitHub forge; with the local forge, `status` and `history` mark it.
    pub(super) fn emergency_follow_up(&self, event: &Event, plan: &Plan, rollback: &Rollback, decision: &mut Decision) {
        let bad: Vec<String> =
            plan.bad_commits.iter().map(|c| format!("- `{}` {}", c.sha.short(), markdown(&c.summary))).collect();
        let body = format!(
            "Emergency rollback **{}** of {}/{} by **{}**, without review: guards and freezes did not apply.\n\n\
             Reason: {}\n\nUndid:\n{}\n\nCommit `{}` on {}, tag `{}`.\n\nPlease review it.",
            rollback.id,
            plan.target.service,
            plan.target.env,
            markdown(&event.actor()),
            event.reason().map_or_else(|| "(none given)".into(), |r| markdown(&r)),
            bad.join("\n"),
            rollback.commit,
            rollback.branch,
            rollback.tag.as_deref().unwrap_or("-"),
        );
        let title = format!("Review emergency rollback {} of {}/{}", rollback.id, plan.target.service, plan.target.env);
        let labels = ["rollback".to_string(), "emergency".to_string()];
        if self.forge.hosts_pull_requests() {
            self.outbox.open_issue(title, body, labels.to_vec());
            decision.notes.push("emergency rollback: an issue for its review is being opened on the forge".into());
        } else {
            decision.notes.push("emergency rollback: review it afterwards (`rollbackd status` marks it)".into());
        }
    }
}

/// The same problem fired again while its proposal is open: say so on the PR (on a forge
/// that has them), at most once every ten minutes, and open the PR if an earlier attempt
/// could not. Said by the outbox: the writer does not wait for it.
pub(super) fn fired_again(ctx: &super::Ctx, state: &mut FiredAgain, open: &crate::git::AuditRecord, event: &Event) {
    if !ctx.forge.hosts_pull_requests() {
        return;
    }
    let last = state.0.get(&open.id);
    if last.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(600)) {
        return;
    }
    let said = format!("Fired again: {} ({}).", markdown(&event.trigger()), event.source);
    let body = format!(
        "Rollback {} of {}/{} to `{}`, asked by {} ({}).\n\nTo approve, comment `/rollback approve`.",
        open.id,
        open.service,
        open.env,
        open.known_good,
        markdown(&open.actor),
        markdown(&open.trigger)
    );
    let proposal = Proposal {
        branch: open.branch.clone(),
        base: ctx.repo.branch().to_string(),
        title: format!("Roll back {}/{} ({})", open.service, open.env, open.id),
        body,
        labels: super::proposal_labels(&open.service, &open.env),
        reviewers: Vec::new(),
        teams: Vec::new(),
    };
    ctx.outbox.announce(proposal, said);
    state.0.insert(open.id.clone(), std::time::Instant::now());
}
