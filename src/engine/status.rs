//! What is going on now ([`StatusView`]), built from the mirror and the verifications this
//! process is running, for `rollbackd status`, chat and the status page.

use super::{Engine, EngineError};
use crate::config::PolicySource;
use crate::domain::freeze::to_the_second;
use crate::domain::rollback::Delivery;
use crate::domain::status::{
    AutomaticView, BecauseView, FreezeView, PoliciesView, ProposalView, RECENT, RecentView, StatusView, UntrustedView,
    VerifyingView,
};

impl Engine {
    /// The status as the mirror has it; `fetch` brings the mirror up to date first (the CLI).
    /// Reads a handful of notes and no history: cheap enough for the writer to publish after
    /// every quiet moment.
    pub fn status_view(&mut self, fetch: bool) -> Result<StatusView, EngineError> {
        let _lock = self.ctx.begin()?;
        // Fetched here, the view is as fresh as the moment the fetch began.
        let as_of = fetch.then(|| crate::domain::status::as_of_second(self.ctx.clock.now()));
        if fetch {
            self.ctx.fetch_if_stale()?;
        }
        let now = self.ctx.clock.now();
        // Freezes that cannot be read are said as such, in place of the pause: what the page is for.
        let (paused, freezes, automatic) = match self.ctx.repo.freezes() {
            Ok(f) => {
                let freezes: Vec<FreezeView> = f.active(now).filter(|f| !f.pause).map(FreezeView::of).collect();
                let automatic = AutomaticView::of(f.paused(now), &freezes);
                (f.paused(now).map(|p| p.describe()), freezes, automatic)
            }
            Err(e @ crate::git::GitError::UnreadableState { .. }) => {
                (Some(e.to_string()), Vec::new(), AutomaticView::unknown(&e.to_string()))
            }
            Err(e) => return Err(e.into()),
        };
        // Brings the audit index up to date as well: the records below are read from it.
        let holds = super::holds::current(&mut self.ctx, &mut self.held_changes)?;
        let records = self.ctx.repo.index().records();
        let (open, done): (Vec<_>, Vec<_>) =
            records.iter().partition(|r| r.delivery == Delivery::Proposal && !r.cancelled);
        let proposals = open
            .into_iter()
            .map(|r| ProposalView {
                id: r.id.to_string(),
                at: to_the_second(r.at),
                service: r.service.clone(),
                env: r.env.clone(),
                branch: r.branch.clone(),
                actor: r.actor.clone(),
                approvals: self.ctx.repo.approvals(&r.commit),
                because: r.because.iter().map(BecauseView::of).collect(),
                link: self.ctx.config.forge.proposal_link(&r.branch),
            })
            .collect();
        let recent = done
            .into_iter()
            .take(RECENT)
            .map(|r| RecentView::of(r, self.ctx.repo.note(&r.commit).as_deref()))
            .collect();
        let phased = self.ctx.phased_views(now);
        let verifying = self
            .verification
            .watches
            .values()
            .map(|w| VerifyingView {
                id: w.id.to_string(),
                service: w.service.clone(),
                env: w.env.clone(),
                since: to_the_second(w.rolled_back_at),
                deadline: to_the_second(w.deadline()),
                step: w.step,
            })
            .collect();
        Ok(StatusView {
            repo: self.ctx.config.member.clone(),
            at: Some(to_the_second(now)),
            as_of,
            automatic,
            paused,
            freezes,
            holds,
            readiness: super::readiness::last(&self.readiness).to_vec(),
            proposals,
            phased,
            verifying,
            recent,
            origin_error: None,
            untrusted: self
                .ctx
                .repo
                .untrusted()
                .iter()
                .map(|u| UntrustedView {
                    // Raw: JSON and the page escape it; the text status quotes it.
                    refname: u.refname.clone(),
                    object: u.object.clone(),
                    why: u.why.clone(),
                })
                .collect(),
            policies: self.ctx.policies_view(),
        })
    }

    /// What watches this repo's state on the origin off the writer's thread (with the
    /// credentials in use now).
    pub fn state_watcher(&self) -> crate::git::StateWatcher {
        self.ctx.repo.state_watcher()
    }

    /// `rollbackd status [service]`: freezes in force, open proposals (with approvals),
    /// rollbacks being verified and the last rollbacks, fetched fresh.
    pub fn status(&mut self, service: Option<&str>) -> Result<String, EngineError> {
        Ok(self.status_view(true)?.for_service(service).text())
    }
}

impl super::Ctx {
    fn policies_view(&self) -> PoliciesView {
        let refused = self.policy_refusal();
        PoliciesView {
            source: match &self.config.policies {
                PolicySource::Dir(d) => format!("disk:{}", d.display()),
                PolicySource::Repo(r) => format!("repo:{}:{}", self.repo.branch(), r.repo_path),
            },
            in_force: self.policies.policies.len(),
            refused_commit: refused.map(|r| r.commit.clone()),
            refused_errors: refused.map(|r| r.errors.clone()).unwrap_or_default(),
        }
    }
}
