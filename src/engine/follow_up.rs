//! What follows a write when proposals live on a forge: auto-merging, telling an open pull
//! request that its incident fired again, and the review issue a break-glass rollback owes.

use crate::support::text::markdown;
use jiff::Timestamp;
use tracing::warn;

use super::review::Merging;
use super::{Engine, EngineError, ReviewOutcome};
use crate::domain::decision::Decision;
use crate::domain::event::Event;
use crate::domain::plan::Plan;
use crate::domain::policy::Policy;
use crate::forge::{Forge, ProposalRequest};
use crate::{Outcome, Rollback};

/// A pull request that could not be opened when its proposal branch was pushed (GitHub down or
/// rate limited): opened by the writer when due, so the proposal does not wait for its incident
/// to fire again. Kept in memory: after a restart the next delivery of the incident opens it.
#[derive(Clone, Debug)]
pub(crate) struct DeferredPr {
    branch: String,
    base: String,
    title: String,
    body: String,
    labels: Vec<String>,
    reviewers: Vec<String>,
    teams: Vec<String>,
    attempts: u32,
    due: Timestamp,
}

impl DeferredPr {
    fn request(&self) -> ProposalRequest<'_> {
        ProposalRequest {
            branch: &self.branch,
            base: &self.base,
            title: &self.title,
            body: &self.body,
            labels: &self.labels,
            reviewers: &self.reviewers,
            teams: &self.teams,
        }
    }
}

/// When to try again: what GitHub asked for, else 30 s doubling, at most 15 minutes.
fn retry_at(now: Timestamp, attempts: u32, e: &crate::forge::ForgeError) -> Timestamp {
    let backoff = std::time::Duration::from_secs(30u64 << attempts.min(5));
    let wait = match e {
        crate::forge::ForgeError::RateLimited { retry_after, .. } => *retry_after,
        _ => backoff,
    }
    .min(std::time::Duration::from_secs(900));
    now.checked_add(jiff::SignedDuration::try_from(wait).unwrap_or_default()).unwrap_or(now)
}

impl Engine {
    /// Keeps `request` to be opened later, after `e`.
    pub(super) fn defer_pr(&mut self, request: &ProposalRequest<'_>, e: &crate::forge::ForgeError, now: Timestamp) {
        self.follow_ups.deferred_prs.retain(|d| d.branch != request.branch);
        self.follow_ups.deferred_prs.push(DeferredPr {
            branch: request.branch.to_string(),
            base: request.base.to_string(),
            title: request.title.to_string(),
            body: request.body.to_string(),
            labels: request.labels.to_vec(),
            reviewers: request.reviewers.to_vec(),
            teams: request.teams.to_vec(),
            attempts: 0,
            due: retry_at(now, 0, e),
        });
    }

    /// Opens the deferred pull requests that are due, while their branch is still a proposal.
    pub(super) fn open_deferred_prs(&mut self, now: Timestamp) -> Vec<String> {
        let mut said = Vec::new();
        let (due, later): (Vec<DeferredPr>, Vec<DeferredPr>) =
            std::mem::take(&mut self.follow_ups.deferred_prs).into_iter().partition(|d| d.due <= now);
        self.follow_ups.deferred_prs = later;
        for mut d in due {
            if self.repo.ref_id(&format!("refs/heads/{}", d.branch)).is_none() {
                continue; // cancelled or merged meanwhile
            }
            match self.forge.propose(&d.request()) {
                Ok(pr) => said.push(format!(
                    "opened the pull request of {}{}",
                    d.branch,
                    pr.map(|p| format!(": {}", p.html_url)).unwrap_or_default()
                )),
                Err(e) if e.is_transient() => {
                    d.attempts += 1;
                    d.due = retry_at(now, d.attempts, &e);
                    warn!(branch = %d.branch, error = %e, "the pull request still cannot be opened; trying again later");
                    self.follow_ups.deferred_prs.push(d);
                }
                Err(e) => warn!(branch = %d.branch, error = %e, "the pull request cannot be opened; giving up"),
            }
        }
        said
    }

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
        match self.forge.open_issue(&title, &body, &labels) {
            Ok(Some(url)) => decision.notes.push(format!("emergency rollback: follow-up for review at {url}")),
            Ok(None) => {
                decision.notes.push("emergency rollback: review it afterwards (`rollbackd status` marks it)".into())
            }
            Err(e) => {
                warn!(rollback_id = %rollback.id, error = %e, "the emergency follow-up issue could not be opened");
                decision.notes.push(format!("emergency rollback: the follow-up issue could not be opened: {e}"));
            }
        }
    }

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
            let pending = self.forge.checks_pending(&rollback.commit.0, required).map_err(|e| e.to_string());
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
        let t = crate::git::Trailers::parse(&self.repo.message(&rollback.commit)?);
        let Some(t) = t else {
            decision.notes.push("auto_merge waits for an approval: its commit cannot be read back".into());
            return Ok(Outcome::Proposed { rollback });
        };
        let by = Merging::Automatic { asked_by_person };
        if let Some(why) = self.may_merge(policy, Some(plan), &t, &rollback.id, by, now) {
            decision.notes.push(format!("auto_merge waits for an approval: {why}"));
            return Ok(Outcome::Proposed { rollback });
        }
        let (service, env, id) = (&plan.target.service, &plan.target.env, rollback.id.to_string());
        let forge = self.forge.clone();
        let merge = super::review::Merge {
            branch: &rollback.branch,
            commit: &rollback.commit,
            service,
            env,
            id: &id,
            by: "auto_merge",
            now,
        };
        let merged = if let Forge::Github(gh) = &*forge {
            self.merge_on_github(gh, &merge, policy.review.merge)?
        } else {
            self.merge_proposal(&merge)?
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

    /// The same problem fired again while its proposal is open: say so on the PR (GitHub forge),
    /// at most once every ten minutes, and open the PR if an earlier attempt could not.
    pub(super) fn fired_again(&mut self, open: &crate::git::AuditRecord, event: &Event, decision: &mut Decision) {
        if matches!(*self.forge, Forge::Local) {
            return;
        }
        let last = self.follow_ups.fired_again.get(&open.id);
        if last.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(600)) {
            return;
        }
        let said = format!("Fired again: {} ({}).", markdown(&event.trigger()), event.source);
        let result = self.forge.announce(&open.branch, &said).and_then(|announced| {
            if announced {
                return Ok(());
            }
            let body = format!(
                "Rollback {} of {}/{} to `{}`, asked by {} ({}).\n\nTo approve, comment `/rollback approve`.",
                open.id,
                open.service,
                open.env,
                open.known_good,
                markdown(&open.actor),
                markdown(&open.trigger)
            );
            let request = ProposalRequest {
                branch: &open.branch,
                base: self.repo.branch(),
                title: &format!("Roll back {}/{} ({})", open.service, open.env, open.id),
                body: &body,
                labels: &super::proposal_labels(&open.service, &open.env),
                reviewers: &[],
                teams: &[],
            };
            self.forge.propose(&request).map(|_| ())
        });
        match result {
            Ok(()) => {
                self.follow_ups.fired_again.insert(open.id.clone(), std::time::Instant::now());
            }
            Err(e) => {
                warn!(rollback_id = %open.id, error = %e, "could not comment on the pull request");
                decision.notes.push(format!("could not comment on the pull request: {e}"));
            }
        }
    }
}

/// What is owed to GitHub beyond the write itself.
#[derive(Default)]
pub(super) struct FollowUps {
    /// When each open proposal was last told "fired again", so a storm makes one comment.
    pub(super) fired_again: std::collections::HashMap<crate::domain::rollback::RollbackId, std::time::Instant>,
    /// Pull requests to open when GitHub answers again.
    pub(super) deferred_prs: Vec<DeferredPr>,
}
