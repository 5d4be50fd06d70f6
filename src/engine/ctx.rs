//! What every subsystem of the engine works with: the config repo (the writer's mirror), the
//! clock, the forge and what a write owes it, the notifier, and the policies in force. Each
//! subsystem owns its state and takes this beside it, as `ctx`.

use std::sync::Arc;

use crate::config::Config;
use crate::domain::policy::PolicySet;
use crate::forge::{Forge, Outbox};
use crate::git::ConfigRepo;
use crate::support::clock::Clock;
use crate::support::template::Templates;

use super::{EngineError, InputRules};
use crate::domain::rollback::RollbackId;

pub(crate) struct Ctx {
    pub(super) config: Config,
    /// The policies in force.
    pub(super) policies: PolicySet,
    /// Policies kept in the config repo: what is in force and what was refused.
    pub(super) repo_policies: super::policies::RepoPolicies,
    /// Counts switches of the policy set, so the writer knows when to republish them.
    pub(super) policy_generation: u64,
    pub(super) templates: Templates,
    pub(super) repo: ConfigRepo,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) forge: Arc<dyn Forge>,
    /// What a write owes the forge, said on a thread of its own (see [`Outbox`]).
    pub(super) outbox: Outbox,
    pub(super) rules: InputRules,
    pub(super) notifier: crate::notify::Notifier,
    /// The config repo and branch as one key, whatever way the URL is written: part of every
    /// rollback id, so two repos never mint the same one.
    pub(super) repo_identity: String,
}

impl Ctx {
    /// Fetches unless a fetch is younger than the freshness window, and takes up a change to
    /// the repo's policies.
    pub(super) fn fetch_if_stale(&mut self) -> Result<(), EngineError> {
        self.repo.fetch_if_stale()?;
        self.after_fetch();
        Ok(())
    }

    /// Fetches now (the branch moved, or someone said it did), and takes up a change to the
    /// repo's policies.
    pub(super) fn fetch_now(&mut self) -> Result<(), EngineError> {
        self.repo.fetch_now()?;
        self.after_fetch();
        Ok(())
    }

    pub(super) fn after_fetch(&mut self) {
        for u in self.repo.take_untrusted() {
            crate::metrics::untrusted_record(&u.refname);
        }
        if self.sync_policies() {
            self.policy_generation += 1;
        }
    }

    /// The id of the rollback `trigger` asks for of `service`/`env` in this config repo.
    pub(super) fn rollback_id(&self, trigger: &str, service: &str, env: &str) -> RollbackId {
        RollbackId::derive(&self.repo_identity, trigger, service, env)
    }

    /// Starts an operation on the mirror: takes the data dir's lock and, when git authenticates
    /// through a GitHub App, makes sure its installation token is current.
    pub(super) fn begin(&mut self) -> Result<crate::git::MirrorLock, EngineError> {
        let lock = self.repo.lock()?;
        if self.config.repo.token_env.is_none()
            && self.config.repo.url.starts_with("https://")
            && let Some(token) = self.forge.git_token()?
        {
            self.repo.set_token(token);
        }
        Ok(lock)
    }

    /// Runs `attempt` (given the try's number, from 0) until it is done, fetching and
    /// re-reading the audit index before every retry: every compare-and-swap write the engine
    /// makes goes through here (or through `Engine::retry_on_moved`, which shares the rest).
    /// `state` is what the attempt may change besides the context. `Contended` after
    /// `push_retries + 1` tries lost to other writers.
    pub(super) fn retry_on_moved<S, T>(
        &mut self,
        state: &mut S,
        mut attempt: impl FnMut(&mut Ctx, &mut S, u32) -> Result<crate::git::Try<T>, EngineError>,
    ) -> Result<T, EngineError> {
        let attempts = self.repo.push_retries() + 1;
        let tried = crate::git::retry_on_moved(
            &mut (&mut *self, state),
            attempts,
            |(ctx, _)| ctx.refetch(),
            |(ctx, state), n| attempt(ctx, state, n),
        )?;
        tried.ok_or_else(|| self.contended(attempts))
    }

    /// Fetches and re-reads the audit index: where a retry after the branch moved starts.
    pub(super) fn refetch(&mut self) -> Result<(), EngineError> {
        self.fetch_now()?;
        let now = self.clock.now();
        self.repo.audit(now)?;
        Ok(())
    }

    /// The branch kept moving for `attempts` tries.
    pub(super) fn contended(&self, attempts: u32) -> EngineError {
        crate::git::GitError::Contended { url: self.repo.url(), branch: self.repo.branch().to_string(), attempts }
            .into()
    }
}
