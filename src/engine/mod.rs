//! The engine: event in, decision and (maybe) a rollback out. It never sees HTTP; git goes
//! through [`ConfigRepo`]. Live webhooks, `simulate`, the CLI and chat all call [`Engine::handle`].

mod breaker;
mod controllers;
mod ctx;
mod drill;
mod facts;
mod fold;
mod follow_up;
mod holds;
mod lifecycle;
mod owners;
mod phases;
mod policies;
mod probe;
mod readiness;
pub(crate) mod redeliver;
mod review;
mod status;
mod verify;

pub(crate) use drill::drill_policy;
pub use holds::GateReport;
pub(crate) use holds::{GateStart, PullGate};
pub use lifecycle::{FINISH_WITHIN, Finishing, Session};
pub(crate) use owners::read_codeowners;
pub(crate) use policies::covers_policies;
pub(crate) use probe::QueryMetrics;

use std::sync::Arc;

use jiff::Timestamp;
use tracing::{debug_span, info, info_span, warn};

use crate::config::{Config, Secrets};
use crate::domain::decide::Verdict;
use crate::domain::decision::{Decision, Report};
use crate::domain::event::Event;
use crate::domain::event::Resolved;
use crate::domain::ident::InputRules;
use crate::domain::phase::Phase;
use crate::domain::plan::{Plan, Sha};
use crate::domain::policy::{Mode, Policy, PolicySet};
use crate::domain::principal::{Principal, first_admitting};
use crate::domain::rollback::{Delivery, Outcome, Rollback, RollbackId, RollbackRef};
use crate::forge::{Forge, ForgeError, Outbox, ProposalRequest};
use crate::git::{Auth, ConfigRepo, GitError, PlanRequest, Planned, PushResult, Trailers, Try, WriteTarget};
use crate::support::clock::Clock;
use crate::support::diagnostic::Diagnostic;
use crate::support::template::{
    COMMIT_TEMPLATE, PR_BODY_TEMPLATE, PR_TITLE_TEMPLATE, TAG_TEMPLATE, TemplateError, Templates,
};
use ctx::Ctx;
use facts::Asking;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("policy `{policy}`: {message}")]
    Policy { policy: String, message: String },
    #[error("policies are invalid:\n{}", .0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
    Policies(Vec<Diagnostic>),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Forge(#[from] ForgeError),
    #[error("configuration: {0}")]
    Config(String),
    /// The event carries values rollbackd will not act on (422 for the sender).
    #[error("refused: {0}")]
    Input(String),
    /// Policies live in the config repo and none could be read yet (503: retry).
    #[error("no policies in force yet: {0}")]
    PoliciesNotLoaded(String),
}

impl EngineError {
    /// The CLI's exit code: 1 for what the user or the config must fix, 3 for git and the remote.
    pub fn exit_code(&self) -> i32 {
        match self {
            EngineError::Git(
                GitError::BadRevision { .. }
                | GitError::NoKnownGood { .. }
                | GitError::RangeTooLong { .. }
                | GitError::BrokenResult { .. }
                | GitError::NoBranch(_)
                | GitError::Bound(_),
            ) => 1,
            EngineError::Git(_) | EngineError::Forge(_) => 3,
            _ => 1,
        }
    }

    /// Whether the origin or GitHub refused our credentials: retrying soon will not help.
    pub fn is_auth(&self) -> bool {
        match self {
            EngineError::Git(e) => e.kind() == crate::git::GitErrorKind::Auth,
            EngineError::Forge(e) => e.is_auth(),
            _ => false,
        }
    }

    /// Whether the sender should retry later (the origin could not be reached or kept moving).
    pub fn is_transient(&self) -> bool {
        match self {
            EngineError::Git(
                GitError::Unreachable { .. }
                | GitError::Auth { .. }
                | GitError::Contended { .. }
                | GitError::NotFetched { .. }
                | GitError::UnreadableState { .. },
            ) => true,
            EngineError::Forge(e) => e.is_transient(),
            EngineError::PoliciesNotLoaded(_) => true,
            _ => false,
        }
    }
}

/// What the caller wants beyond the event itself.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Overrides the known-good search (`--to REV`).
    pub to: Option<String>,
    /// Decide and plan, write nothing.
    pub dry_run: bool,
    /// Who asked, for chat requests: checked against the policy's `chatops` rules.
    pub principal: Option<Principal>,
    /// Break glass: guards and freezes do not apply (only for `chatops.emergency`).
    pub emergency: bool,
}

/// The engine: the context every subsystem works with (`Ctx`), and the state each subsystem
/// owns, passed to it beside the context.
pub struct Engine {
    ctx: Ctx,
    /// When each open proposal was last told "fired again", so a storm makes one comment.
    told_fired_again: follow_up::FiredAgain,
    /// Verification: the watches on pushed rollbacks and what they remember (see [`verify`]).
    verification: verify::Verification,
    /// The artifact changes of each rollback commit, read once (holds).
    held_changes: holds::HeldChanges,
    /// What alerted lately, for the blast-radius breaker.
    alerting: crate::domain::breaker::Alerting,
    /// Phased rollbacks that cannot go on by themselves, whose people were told so.
    stuck: phases::Stuck,
    /// Readiness: the registries it asks and the rows last worked out (the server's gauge).
    readiness: readiness::State,
    /// Scheduled drills that wrote nothing or failed, and when they may be tried again.
    drills_deferred: drill::Deferred,
    /// CODEOWNERS' teams, and how the forge is asked who is in them.
    owners: owners::Owners,
}

impl Engine {
    pub fn new(config: Config, secrets: Secrets, clock: Arc<dyn Clock>) -> Result<Self, EngineError> {
        let policies = match config.policies.dir() {
            Some(dir) => {
                let (policies, warnings) = crate::policy_dir::load(dir).map_err(EngineError::Policies)?;
                for w in warnings {
                    warn!("{w}");
                }
                policies
            }
            // Read from the mirror below, or after the first fetch.
            None => PolicySet::default(),
        };
        let templates = Templates::load(&config.templates)?;
        let rules = InputRules::new(&config.input).map_err(EngineError::Config)?;
        let auth = Auth { token: secrets.git_token.clone(), ssh_key: config.repo.ssh_key_file.clone() };
        let keys = config.keys().map_err(|e| EngineError::Config(e.to_string()))?;
        if let Some(file) = &keys.created {
            warn!(
                key = %file.display(),
                public_key = %keys.signing.public_openssh(),
                allowed_signers = %keys.signing.allowed_signers_line(&config.identity.email),
                "made a new signing key: register its public key (docs/security.md) so other replicas and git trust what rollbackd signs"
            );
        }
        let repo = ConfigRepo::open(&git_settings(&config, &keys), auth)?;
        let forge = crate::forge::from_config(&config.forge)?;
        check_routes(&config, &policies, &file_text).map_err(EngineError::Policies)?;
        let notifier = crate::notify::Notifier::start(&config.notify, &secrets, &templates, forge.clone());
        let repo_identity = format!("{} {}", crate::support::url::repo_key(&config.repo.url), config.repo.branch);
        let prometheus =
            config.prometheus.clone().map(|p| Arc::new(crate::prometheus::Prometheus::new(p)) as Arc<dyn QueryMetrics>);
        let prober = probe::Prober::new(prometheus, clock.clone());
        let readiness = readiness::State::new(&config, forge.clone());
        let owners = owners::Owners::new(forge.clone());
        let outbox = Outbox::start(forge.clone(), notifier.clone(), clock.clone());
        let ctx = Ctx {
            config,
            policies,
            repo_policies: Default::default(),
            policy_generation: 0,
            templates,
            repo,
            clock,
            forge,
            outbox,
            rules,
            notifier,
            repo_identity,
        };
        let mut engine = Engine {
            ctx,
            told_fired_again: Default::default(),
            held_changes: Default::default(),
            alerting: Default::default(),
            stuck: Default::default(),
            verification: verify::Verification::new(prober),
            readiness,
            drills_deferred: Default::default(),
            owners,
        };
        engine.ctx.sync_policies();
        Ok(engine)
    }

    /// [`Ctx::retry_on_moved`] for an attempt that needs the whole engine (an event's
    /// handling, the next phase, a step back: they reach several subsystems' state).
    fn retry_on_moved<T>(
        &mut self,
        attempt: impl FnMut(&mut Self, u32) -> Result<crate::git::Try<T>, EngineError>,
    ) -> Result<T, EngineError> {
        let attempts = self.ctx.repo.push_retries() + 1;
        match crate::git::retry_on_moved(self, attempts, |engine| engine.ctx.refetch(), attempt)? {
            Some(value) => Ok(value),
            None => Err(self.ctx.contended(attempts)),
        }
    }

    /// Whether policies are in force (read from the directory, or from the repo once fetched).
    pub fn policies_loaded(&self) -> bool {
        self.ctx.policies_loaded()
    }

    /// The repo's policies refused last, while the ones before stay in force.
    pub fn policy_refusal(&self) -> Option<&policies::PolicyRefusal> {
        self.ctx.policy_refusal()
    }

    /// An error for work that needs policies before any was read from the repo.
    pub(crate) fn need_policies(&self) -> Result<(), EngineError> {
        self.ctx.need_policies()
    }

    /// Changes each time another policy set comes into force.
    pub fn policy_generation(&self) -> u64 {
        self.ctx.policy_generation
    }

    pub fn config(&self) -> &Config {
        &self.ctx.config
    }

    /// A new engine from the config file this one was read from (config, secrets, policies,
    /// templates, channels), on the same clock: what SIGHUP and `POST /-/reload` switch to. An
    /// error leaves the caller with the engine it has.
    pub fn reloaded(&self) -> Result<Engine, EngineError> {
        let file =
            crate::config::ConfigFile::read(&self.ctx.config.path).map_err(|e| EngineError::Config(e.to_string()))?;
        // A repo added to or removed from `repos:` needs a restart: a writer is one repo.
        let config = file
            .repo(self.ctx.config.member.as_deref())
            .map_err(|e| EngineError::Config(format!("{e}; adding or removing a repo takes a restart")))?;
        let secrets = config.secrets().map_err(|e| EngineError::Config(e.to_string()))?;
        // As `serve` refuses to start: a channel whose secret is unset would be dropped, and its
        // notices (escalations to the pager) with it.
        if !secrets.notify_unset.is_empty() {
            return Err(EngineError::Config(format!(
                "{}: {}; set it and reload again (the channels in force stay)",
                config.path.display(),
                secrets.notify_unset.join("; ")
            )));
        }
        Engine::new(config, secrets, self.ctx.clock.clone())
    }

    /// `rollbackd audit verify`: every record rollbackd relies on since `since` (a date, a
    /// time or a revision; default: the audit window), fetched fresh, with its signature.
    pub fn audit_verify(
        &mut self,
        since: Option<&str>,
    ) -> Result<Vec<crate::domain::audit::SignatureCheck>, EngineError> {
        let _lock = self.ctx.begin()?;
        self.ctx.fetch_now()?;
        let now = self.ctx.clock.now();
        self.ctx.repo.audit(now)?;
        let since = match since {
            None => now.checked_sub(self.ctx.config.audit.window.as_signed()).unwrap_or(Timestamp::UNIX_EPOCH),
            Some(s) => match (s.parse::<Timestamp>(), s.parse::<jiff::civil::Date>()) {
                (Ok(t), _) => t,
                (_, Ok(d)) => {
                    d.to_zoned(jiff::tz::TimeZone::UTC).map(|z| z.timestamp()).unwrap_or(Timestamp::UNIX_EPOCH)
                }
                _ => self.ctx.repo.committed_at(s).ok_or_else(|| {
                    EngineError::Git(GitError::BadRevision {
                        rev: crate::domain::ident::shown(s),
                        message: "not a date, a time (RFC 3339) or a revision of the config repo".into(),
                    })
                })?,
            },
        };
        Ok(self.ctx.repo.check_signatures(since)?)
    }

    pub fn forge(&self) -> &dyn Forge {
        &*self.ctx.forge
    }

    /// The forge itself, for a thread of the edge to ask (never the writer).
    pub(crate) fn forge_handle(&self) -> Arc<dyn Forge> {
        self.ctx.forge.clone()
    }

    /// Says `text` on pull request (or issue) `number`, through the outbox.
    pub(crate) fn comment_on(&self, number: u64, text: String) {
        self.ctx.outbox.comment(number, text);
    }

    /// Reacts to comment `comment_id`, through the outbox.
    pub(crate) fn react_to(&self, comment_id: u64, content: &'static str) {
        self.ctx.outbox.react(comment_id, content);
    }

    /// Waits until what the writes so far owe the forge (pull requests to open, comments, the
    /// review issue) is done, or `budget` is over; whether it all was. For a caller that is not
    /// the writer: the CLI before it exits, a test before it looks at the forge.
    pub fn settle_forge(&self, budget: std::time::Duration) -> bool {
        self.ctx.outbox.settle(budget)
    }

    /// What became of the pull request of proposal `branch`, waiting at most `budget` for it
    /// (never the writer's call): its URL, `None` where the forge has none, or why it failed.
    pub fn pull_request(&self, branch: &str, budget: std::time::Duration) -> Option<Result<Option<String>, String>> {
        self.ctx.outbox.pending(branch)?.wait(budget)
    }

    /// Completes `report` of a proposal with its pull request, waiting at most `budget` for
    /// the outbox to open it: for a caller that is not the writer and answers a person (the
    /// CLI). Where it could not be opened, the report's notes say why.
    pub fn await_pull_request(&self, report: &mut Report, budget: std::time::Duration) {
        let Outcome::Proposed { rollback } = &mut report.outcome else { return };
        if rollback.pr_url.is_some() {
            return;
        }
        match self.pull_request(&rollback.branch, budget) {
            Some(Ok(url)) => rollback.pr_url = url,
            Some(Err(e)) => report.decision.notes.push(format!("the pull request could not be opened yet: {e}")),
            None if self.ctx.outbox.pending(&rollback.branch).is_some() => {
                report.decision.notes.push("the pull request is still being opened".into());
            }
            None => {}
        }
    }

    pub fn policies(&self) -> &PolicySet {
        &self.ctx.policies
    }

    /// What values from input must look like.
    pub fn rules(&self) -> &InputRules {
        &self.ctx.rules
    }

    /// What the HTTP layer needs to answer events no policy would act on without queueing them.
    pub fn triager(&self) -> Triager {
        Triager {
            policies: self.ctx.policies.clone(),
            rules: self.ctx.rules.clone(),
            notifier: self.ctx.notifier.clone(),
            loaded: self.ctx.policies_loaded(),
        }
    }

    pub fn repo(&mut self) -> &mut ConfigRepo {
        &mut self.ctx.repo
    }

    pub fn now(&self) -> Timestamp {
        self.ctx.clock.now()
    }

    /// The clock this engine reads.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.ctx.clock.clone()
    }

    /// Fetches (if stale) and returns the audit index, for `history` and the API.
    pub fn history(&mut self) -> Result<&crate::git::AuditIndex, EngineError> {
        let _lock = self.ctx.begin()?;
        self.ctx.fetch_if_stale()?;
        let now = self.ctx.clock.now();
        Ok(self.ctx.repo.audit(now)?)
    }

    /// GitHub says `git_ref` of the config repo moved: when it is the watched branch, the
    /// mirror fetches now, so the next event finds it fresh.
    pub fn fetch_pushed(&mut self, git_ref: &str) -> Result<String, EngineError> {
        if git_ref.strip_prefix("refs/heads/") != Some(self.ctx.repo.branch()) {
            return Ok(format!("{} is not the watched branch", crate::domain::ident::shown(git_ref)));
        }
        let _lock = self.ctx.begin()?;
        self.ctx.fetch_now()?;
        Ok(format!("fetched {} at {}", self.ctx.repo.branch(), self.ctx.repo.head()?.short()))
    }

    /// The audit index as it stands in the mirror, without fetching.
    pub fn audit_records(&mut self) -> Result<Vec<crate::git::AuditRecord>, EngineError> {
        let _lock = self.ctx.begin()?;
        let now = self.ctx.clock.now();
        Ok(self.ctx.repo.audit(now)?.records().to_vec())
    }

    /// A resolved alert: if its incident was rolled back, note on the rollback commit when it
    /// resolved and how long recovery took (`refs/notes/rollbackd`, pushed to the origin).
    pub fn record_resolution(&mut self, resolved: &Resolved) -> Result<String, EngineError> {
        let _lock = self.ctx.begin()?;
        self.ctx.fetch_if_stale()?;
        let now = self.ctx.clock.now();
        let trigger = format!("alertmanager:{}", resolved.dedupe_key);
        if let Some(said) = verify::resolve_watched(
            &mut self.ctx,
            &mut self.verification,
            &mut self.alerting,
            &trigger,
            resolved.resolved_at.unwrap_or(now),
        )? {
            return Ok(said);
        }
        let Some(r) = self.ctx.repo.audit(now)?.find_trigger(&trigger).cloned() else {
            return Ok(format!("no rollback for {trigger}; nothing to verify"));
        };
        if let Some(said) = self.ctx.resolved_between_phases(&r, resolved.resolved_at.unwrap_or(now), now)? {
            return Ok(said);
        }
        if r.delivery != Delivery::Direct {
            return Ok(format!("{} is a proposal; nothing reached the branch to verify", r.id));
        }
        if verify::verified_by_watch(&self.ctx, &self.verification, &r.id, &r.policy) {
            // Its policy verifies it: this resolve was counted already (a duplicate from an HA
            // pair of Alertmanagers), or the verdict is in.
            return Ok(format!(
                "{}: this resolve changes nothing (counted already, or verified by its policy's verify)",
                r.id
            ));
        }
        let resolved_at = resolved.resolved_at.unwrap_or(now);
        // A resolve dated before the rollback, or in the future, verifies nothing: the note is
        // written once and kept, so it must not record a time the sender made up.
        if resolved_at < r.at || resolved_at > now + jiff::SignedDuration::from_mins(5) {
            return Ok(format!(
                "{trigger} resolved at {resolved_at}, outside {} .. now: not counted as the rollback's verification",
                r.at
            ));
        }
        // One definition of each time (docs/metrics.md): to recovery is from the push.
        let ttr = crate::support::duration::Duration::from_secs(resolved_at.duration_since(r.at).as_secs().max(0));
        let text = format!(
            "rollbackd verification: the incident resolved after the rollback\n\n\
             Rollback-Id: {}\nIncident: {trigger}\nStarted-At: {}\nRolled-Back-At: {}\nResolved-At: {resolved_at}\n\
             {}Time-To-Recovery: {ttr}\n",
            r.id,
            resolved.started_at,
            r.at,
            crate::domain::status::times_to_rollback(&r),
        );
        let added = self.ctx.repo.add_note(&r.commit, &text, now)?;
        info!(rollback_id = %r.id, %ttr, "incident resolved");
        if added {
            let mut notice = crate::domain::notice::Notice::about(
                crate::domain::notice::NoticeKind::Verified,
                &r.service,
                &r.env,
                &r.policy,
                &trigger,
                format!("the incident resolved {ttr} after the rollback"),
                now,
            );
            notice.rollback_id = Some(r.id.clone());
            notice.commit = Some(r.commit.0.clone());
            notice.actor = r.actor.clone();
            let recovered_after = resolved_at.duration_since(r.at).as_secs().max(0);
            notice.recovered_after_seconds = Some(recovered_after);
            verify::tell(&self.ctx, &self.verification, &notice);
            // The same time to recovery as a verification's (once: the note is new).
            crate::metrics::time_to_recovery(recovered_after);
        }
        Ok(if added {
            format!("verified rollback {}: resolved {ttr} after the rollback", r.id)
        } else {
            let verdict = self
                .ctx
                .repo
                .note(&r.commit)
                .and_then(|n| n.lines().find_map(|l| l.strip_prefix("Verification: ").map(str::to_string)))
                .unwrap_or_else(|| "verified".into());
            format!("rollback {}'s verification is recorded already ({verdict}); this resolve changes nothing", r.id)
        })
    }

    /// A successful deployment: every `known_good` policy that matches tags the event's `sha`
    /// for its service/env, when the service's paths exist at that commit.
    pub fn mark_known_good(&mut self, event: &Event) -> Result<String, EngineError> {
        let _lock = self.ctx.begin()?;
        self.ctx.fetch_if_stale()?;
        let Some(sha) = event.labels.get("sha").cloned() else {
            return Ok("the event names no sha".into());
        };
        // A commit id from the payload reaches git only as a full hex id, never as revision
        // syntax (`main~5` would tag some other commit as known-good).
        if !Sha::is_full_hex(&sha) {
            return Err(EngineError::Input(format!(
                "sha {} is not a full commit id",
                crate::domain::ident::shown(&sha)
            )));
        }
        let stamp = event.started_at.unwrap_or(event.received_at).strftime("%Y%m%dT%H%M%SZ").to_string();
        let now = self.ctx.clock.now();
        let mut done = Vec::new();
        let policies: Vec<Policy> = self
            .ctx
            .policies
            .policies
            .iter()
            .filter(|p| p.action.mode == Mode::KnownGood && p.evaluate(event).matched)
            .cloned()
            .collect();
        for policy in policies {
            let target = match policy.resolve_target(event, &self.ctx.rules) {
                Ok(t) => t,
                Err(e) => {
                    done.push(format!("{}: {e}", policy.name()));
                    continue;
                }
            };
            let set = crate::git::PathSet::new(&target.paths)
                .map_err(|message| EngineError::Policy { policy: policy.name().to_string(), message })?;
            if !self.ctx.repo.paths_exist_at(&sha, &set)? {
                done.push(format!("{}/{}: no target paths at {sha}", target.service, target.env));
                continue;
            }
            if let Some(why) = self.ctx.still_rolled_back(&target.service, &target.env, &sha, now)? {
                done.push(format!("{}/{}: {why}: not known-good", target.service, target.env));
                continue;
            }
            let name = format!("known-good/{}/{}/{stamp}", target.service, target.env);
            let message = format!(
                "Known-good: {} in {} at {sha}\n\nTrigger: {}\nPolicy: {}\n",
                target.service,
                target.env,
                event.trigger(),
                policy.name()
            );
            let min_healthy = policy.action.min_healthy;
            if min_healthy > crate::support::duration::Duration::ZERO {
                let candidate = crate::domain::soak::Candidate {
                    name: name.clone(),
                    sha: sha.clone(),
                    service: target.service.clone(),
                    env: target.env.clone(),
                    policy: policy.name().to_string(),
                    trigger: event.trigger(),
                    since: now,
                    until: now.saturating_add(min_healthy.as_signed()).unwrap_or(now),
                    state: crate::domain::soak::SoakState::Soaking,
                    reason: None,
                };
                done.push(self.ctx.add_candidate(candidate)?);
                continue;
            }
            let created = self.ctx.repo.tag_commit(&name, &sha, &message, now)?;
            done.push(if created { format!("tagged {name}") } else { format!("{name} exists") });
        }
        if done.is_empty() {
            return Ok("no known_good policy matches this event".into());
        }
        Ok(done.join("; "))
    }

    /// Handles one event end to end. Retries when the branch moved between plan and push; each
    /// retry re-reads the origin, so a rollback another replica pushed meanwhile turns this
    /// attempt into a duplicate instead of a second commit.
    pub fn handle(&mut self, event: &Event, opts: &Options) -> Result<Report, EngineError> {
        let span = info_span!("event", trigger = %event.trigger(), rollback_id = tracing::field::Empty);
        let _enter = span.enter();
        let _lock = self.ctx.begin()?;
        let result = self.handle_locked(event, opts, &span);
        if !opts.dry_run {
            let _stage = debug_span!("after").entered();
            verify::after_handle(&mut self.ctx, &mut self.verification, &mut self.alerting, event, &result);
        }
        result
    }

    fn handle_locked(&mut self, event: &Event, opts: &Options, span: &tracing::Span) -> Result<Report, EngineError> {
        debug_span!("fetch").in_scope(|| self.ctx.fetch_if_stale())?;
        // rollbackd-controllers: a controller may report a commit pushed a moment ago.
        self.ctx.fetch_for_revision(event)?;
        self.ctx.need_policies()?;
        let report = self.retry_on_moved(|engine, attempt| {
            if attempt > 0 {
                warn!(attempt, "branch moved during the rollback; fetching and planning again");
            }
            engine.attempt(event, opts, attempt, span)
        })?;
        info!(outcome = report.outcome.name(), "{}", report.outcome.summary());
        Ok(*report)
    }

    fn attempt(
        &mut self,
        event: &Event,
        opts: &Options,
        retries: u32,
        span: &tracing::Span,
    ) -> Result<Try<Box<Report>>, EngineError> {
        match self.prepare(event, opts, span)? {
            Prepared::Done(report) => Ok(Try::Done(report)),
            Prepared::Ready(ready) => self.deliver(event, opts, retries, *ready),
        }
    }

    /// Everything up to writing: dedupe, policy, plan, guards, the decision. Writes only what
    /// deciding itself writes (a tripped breaker, a halted phased rollback).
    fn prepare(&mut self, event: &Event, opts: &Options, span: &tracing::Span) -> Result<Prepared, EngineError> {
        let now = self.ctx.clock.now();
        let mut decision = Decision::for_event(event);
        let done = |decision: Decision, plan: Option<Plan>, outcome: Outcome| {
            Ok(Prepared::Done(Box::new(Report { decision, plan, outcome })))
        };

        let trigger = event.trigger();
        let index = debug_span!("audit").in_scope(|| self.ctx.repo.audit(now))?;
        if let Some(r) = index.find_trigger(&trigger).cloned() {
            let reason = format!("{trigger} was already handled by {} at {}", r.id, r.at);
            if r.delivery == Delivery::Proposal && !r.cancelled {
                follow_up::fired_again(&self.ctx, &mut self.told_fired_again, &r, event);
            }
            let outcome = Outcome::Duplicate { rollback_id: r.id.clone(), commit: r.commit.clone(), reason };
            return done(decision, None, outcome);
        }

        let selected =
            debug_span!("select").in_scope(|| select(&self.ctx.policies, &self.ctx.rules, event, &mut decision))?;
        let (policy, target) = match selected {
            Selection::Settled(outcome) => return done(decision, None, outcome),
            Selection::Target { policy, target } => (policy.clone(), target),
        };
        self.prepare_selected(event, opts, policy, target, decision, span)
    }

    /// [`Engine::prepare`] once a policy and its target are chosen: who asked, the plan, the
    /// guards and the decision. `readiness` enters here with each policy's targets in turn, so
    /// what it says is what an alert would meet.
    fn prepare_selected(
        &mut self,
        event: &Event,
        opts: &Options,
        policy: Policy,
        target: crate::domain::plan::Target,
        mut decision: Decision,
        span: &tracing::Span,
    ) -> Result<Prepared, EngineError> {
        let now = self.ctx.clock.now();
        let trigger = event.trigger();
        let done = |decision: Decision, plan: Option<Plan>, outcome: Outcome| {
            Ok(Prepared::Done(Box::new(Report { decision, plan, outcome })))
        };
        let id = self.ctx.rollback_id(&trigger, &target.service, &target.env);
        span.record("rollback_id", id.as_str());
        let if_owner = match authorize(event, &policy, opts) {
            Authorization::Allowed => false,
            Authorization::Denied(reason) => {
                warn!(%reason, "request denied");
                return done(decision, None, Outcome::Denied { reason });
            }
            Authorization::IfOwner => true,
        };
        let rolls_back = matches!(policy.action.mode, Mode::Direct | Mode::PullRequest);
        if rolls_back && !event.is_human_request() && !opts.dry_run {
            breaker::count(&mut self.ctx, &mut self.alerting, &target.service, now, &mut decision)?;
        }
        if opts.emergency {
            decision
                .notes
                .push(format!("emergency rollback requested by {}: guards and freezes do not apply", event.actor()));
        }

        // A phased rollback of this target is between phases: it answers for the target until
        // it ends (a newer alert halts it; a person is told how to go on).
        if let Some(outcome) = self.between_phases_answer(&target, event, opts, now)? {
            return done(decision, None, outcome);
        }
        let plan = match self.ctx.plan_to_write(&policy, &target, event, opts)? {
            Ok(plan) => plan,
            Err((plan, outcome)) => return done(decision, plan, outcome),
        };
        if let (true, Some(p)) = (if_owner, &opts.principal) {
            let (rules, list) = request_rules(&policy, opts);
            let files = plan.diffstat.iter().map(|f| f.path.clone()).collect();
            if let owners::Admission::Refused(why) = self.ctx.admit(rules, list, p, || Ok(files))? {
                let reason = format!("{p} may not request rollbacks under policy {} ({why})", policy.name());
                warn!(%reason, "request denied");
                return done(decision, Some(plan), Outcome::Denied { reason });
            }
        }
        // An open proposal that undoes exactly these commits is this rollback, if this one would
        // be a proposal too.
        let open_proposal = self.ctx.open_proposal_for(&plan);
        if plan.target.phases.len() > 1 {
            let checked = self.ctx.verify_query(&policy, &target.service, &target.env).is_some();
            decision
                .notes
                .push(format!("when pushed, {}", crate::domain::phase::describe(&plan.target.phases, checked)));
        }
        // A sender that retries (an alert, CI) is answered 503 while the freezes cannot be read:
        // nothing is written for it meanwhile. A person's request is decided (it goes through,
        // saying so); rollbackd's own writes, with nobody to retry them, are proposed instead.
        let _stage = debug_span!("decide").entered();
        if !event.is_human_request() && !opts.emergency {
            self.ctx.repo.freezes()?;
        }
        let asking = Asking {
            policy: &policy,
            mode: policy.action.mode,
            human: event.is_human_request(),
            emergency: opts.emergency,
            dry_run: opts.dry_run,
            id: &id,
            open_proposal: open_proposal.as_ref(),
        };
        let verdict = self.ctx.decide_write(&asking, Some(&plan), (&target.service, &target.env), now, &mut decision);
        // A dry run plans what would be written exactly as the write would (the first phase
        // with changes, or one commit): it only stops before writing.
        let (delivery, dry_run) = match verdict {
            Verdict::Deliver(delivery) => (delivery, None),
            Verdict::Settled(Outcome::DryRun { would, rollback_id }) => {
                (would, Some(Outcome::DryRun { would, rollback_id }))
            }
            Verdict::Settled(outcome) => return done(decision, Some(plan), outcome),
            Verdict::SameAsOpenProposal(outcome) => {
                if let Some(open) = &open_proposal {
                    follow_up::fired_again(&self.ctx, &mut self.told_fired_again, open, event);
                }
                return done(decision, Some(plan), outcome);
            }
        };
        let plan = self.ctx.first_write(delivery, &policy, plan, event, &mut decision)?;
        if let Some(outcome) = dry_run {
            return done(decision, Some(plan), outcome);
        }
        Ok(Prepared::Ready(Box::new(Ready { decision, policy, plan, id, delivery, now })))
    }

    /// A phased rollback of this target is between phases: what it answers for the target.
    fn between_phases_answer(
        &mut self,
        target: &crate::domain::plan::Target,
        event: &Event,
        opts: &Options,
        now: Timestamp,
    ) -> Result<Option<Outcome>, EngineError> {
        let Some(r) = self.ctx.between_phases_of(target) else { return Ok(None) };
        Ok(Some(match opts.dry_run {
            false => {
                phases::answer_between_phases(&mut self.ctx, &mut self.stuck, &mut self.verification, &r, event, now)?
            }
            true => Outcome::Duplicate {
                rollback_id: r.id.clone(),
                commit: r.commit.clone(),
                reason: format!("{} is between phases; an alert newer than its phase would halt it", r.id),
            },
        }))
    }

    /// Writes what `prepare` decided. `Moved` when the branch moved: plan again.
    fn deliver(
        &mut self,
        event: &Event,
        opts: &Options,
        retries: u32,
        ready: Ready,
    ) -> Result<Try<Box<Report>>, EngineError> {
        let Ready { mut decision, policy, plan, id, delivery, now } = ready;
        let done = |decision: Decision, plan: Option<Plan>, outcome: Outcome| {
            Ok(Try::Done(Box::new(Report { decision, plan, outcome })))
        };
        let w =
            Write { event, policy: &policy, plan: &plan, id: &id, delivery, retries, now, emergency: opts.emergency };
        match self.ctx.write(&w, &mut decision)? {
            Some(rollback) => {
                if opts.emergency {
                    self.ctx.emergency_follow_up(event, &plan, &rollback, &mut decision);
                }
                let outcome = match delivery {
                    Delivery::Direct => Outcome::RolledBack { rollback },
                    Delivery::Proposal if policy.review.auto_merge => {
                        self.auto_merge(rollback, &plan, &policy, event.is_human_request(), now, &mut decision)?
                    }
                    Delivery::Proposal => Outcome::Proposed { rollback },
                };
                done(decision, Some(plan), outcome)
            }
            None => Ok(Try::Moved),
        }
    }
}

/// The trailers of the commit `w` writes: what every reader of the audit trail reads back.
fn trailers_of(w: &Write<'_>, decision: &Decision) -> Trailers {
    let Write { event, policy, plan, id, delivery, emergency, .. } = *w;
    Trailers {
        id: id.to_string(),
        service: plan.target.service.clone(),
        env: plan.target.env.clone(),
        of: plan.bad_commits.iter().map(|c| c.sha.0.clone()).collect(),
        to: plan.known_good.sha.0.clone(),
        policy: policy.name().to_string(),
        trigger: event.trigger(),
        actor: event.actor(),
        reason: event.reason(),
        strategy: plan.strategy.to_string(),
        emergency,
        phase: plan.phase,
        also: plan
            .also
            .iter()
            .map(|a| crate::git::Also {
                service: a.target.service.clone(),
                env: a.target.env.clone(),
                trigger: a.trigger.clone(),
            })
            .collect(),
        because: match delivery {
            Delivery::Proposal => decision.because.clone(),
            Delivery::Direct => Vec::new(),
        },
        alert_started: event.started_at.map(crate::domain::freeze::to_the_second),
        received: Some(crate::domain::freeze::to_the_second(event.received_at)),
    }
}

/// The labels every proposal's pull request carries.
pub(crate) fn proposal_labels(service: &str, env: &str) -> Vec<String> {
    vec!["rollback".to_string(), format!("service:{service}"), format!("env:{env}")]
}

/// Which policy decides `event`, and the one service/env/paths it names. Pure: no repository, no
/// clock. The writer calls it for every event, and the HTTP layer calls it before an event may
/// take a place in the writer's queue, so events no policy acts on never wait behind, or delay,
/// the one that matters.
pub(crate) fn select<'p>(
    policies: &'p PolicySet,
    rules: &InputRules,
    event: &Event,
    decision: &mut Decision,
) -> Result<Selection<'p>, EngineError> {
    // Bounded before any work is done on them; refused with the reason.
    let refused = |message: String| EngineError::Input(message);
    rules.bounded("labels", event.labels.iter()).map_err(|e| refused(e.to_string()))?;
    rules.bounded("annotations", event.annotations.iter()).map_err(|e| refused(e.to_string()))?;
    let key = &event.dedupe_key;
    let key_char = |c: char| c.is_ascii_alphanumeric() || ".:_@/+-".contains(c);
    if key.is_empty() || key.len() > 200 || !key.chars().all(key_char) {
        return Err(refused(format!(
            "the event's key {} cannot identify an incident",
            crate::domain::ident::shown(key)
        )));
    }
    let (policy, tried) = policies.first_match(event);
    decision.record_trials(tried);
    let Some(policy) = policy else {
        let reason = format!("no policy matches this {} event", event.source);
        return Ok(Selection::Settled(Outcome::Ignored { reason }));
    };
    decision.policy = Some(policy.name().to_string());
    decision.mode = Some(policy.action.mode);
    let target = policy
        .resolve_target(event, rules)
        .map_err(|message| EngineError::Policy { policy: policy.name().to_string(), message })?;
    decision.target = Some(target.clone());
    Ok(Selection::Target { policy, target })
}

pub(crate) enum Selection<'p> {
    /// Nothing will be written, whatever the repository says.
    Settled(Outcome),
    Target {
        policy: &'p Policy,
        target: crate::domain::plan::Target,
    },
}

/// What the HTTP layer may answer without the writer.
#[derive(Debug)]
pub enum Triage {
    /// Answer now: no policy acts on the event, or its policy only notifies.
    Answer(Outcome),
    /// Refused: the event names no valid target (422, with the reason).
    Refused(String),
    /// The writer must decide.
    Queue,
}

/// The HTTP edge's view of [`select`]: the policies and input rules in force.
#[derive(Clone, Default)]
pub struct Triager {
    pub policies: PolicySet,
    pub rules: InputRules,
    /// A `mode: notify` decision is made (and told) at the edge.
    notifier: crate::notify::Notifier,
    /// False while policies kept in the config repo have not been read: nothing can be
    /// answered at the edge, so everything goes to the writer (which says why, 503).
    loaded: bool,
}

impl std::fmt::Debug for Triager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Triager").field("policies", &self.policies.policies.len()).finish_non_exhaustive()
    }
}

impl Triager {
    /// Whether a policy acts on `event` (rolls back, proposes, notifies, or refuses what it
    /// names), without acting: [`Triager::triage`] tells a `notify` policy's channels.
    pub fn concerns(&self, event: &Event) -> bool {
        if !self.loaded {
            return true;
        }
        let mut decision = Decision::for_event(event);
        match select(&self.policies, &self.rules, event, &mut decision) {
            Ok(Selection::Settled(outcome)) => !matches!(outcome, Outcome::Ignored { .. }),
            Ok(Selection::Target { policy, .. }) => policy.action.mode != Mode::KnownGood,
            Err(_) => true,
        }
    }

    /// Whether a `mode: known_good` policy marks `event` (a successful deploy) as known-good.
    pub fn marks_known_good(&self, event: &Event) -> bool {
        !self.loaded
            || self.policies.policies.iter().any(|p| p.action.mode == Mode::KnownGood && p.evaluate(event).matched)
    }

    pub fn triage(&self, event: &Event) -> Triage {
        if !self.loaded {
            return Triage::Queue;
        }
        let mut decision = Decision::for_event(event);
        match select(&self.policies, &self.rules, event, &mut decision) {
            Ok(Selection::Settled(outcome)) => Triage::Answer(outcome),
            Ok(Selection::Target { policy, target }) => match policy.action.mode {
                Mode::Notify => {
                    let reason = format!("policy {} only notifies; nothing was written", policy.name());
                    let mut notice = crate::domain::notice::Notice::about(
                        crate::domain::notice::NoticeKind::Notified,
                        &target.service,
                        &target.env,
                        policy.name(),
                        &event.trigger(),
                        format!(
                            "{} asks for a rollback of {}/{}; policy {} only notifies",
                            event.trigger(),
                            target.service,
                            target.env,
                            policy.name()
                        ),
                        event.received_at,
                    );
                    notice.actor = event.actor();
                    notice.trigger_url = crate::domain::notice::trigger_url(event);
                    self.notifier.send(&notice, &policy.notify);
                    Triage::Answer(Outcome::Notified { reason })
                }
                Mode::KnownGood => Triage::Answer(Outcome::Ignored {
                    reason: format!("policy {} marks known-good states; it does not roll back", policy.name()),
                }),
                Mode::Direct | Mode::PullRequest => Triage::Queue,
            },
            Err(e) => Triage::Refused(e.to_string()),
        }
    }
}

/// What the git layer needs of the config (the git layer does not read the config itself).
pub(crate) fn git_settings(config: &Config, keys: &crate::config::Keys) -> crate::git::Settings {
    crate::git::Settings {
        signing_key: keys.signing.clone(),
        trusted_keys: keys.trusted.clone(),
        url: config.repo.url.clone(),
        branch: config.repo.branch.clone(),
        data_dir: config.data_dir.clone(),
        name: config.identity.name.clone(),
        email: config.identity.email.clone(),
        fetch_freshness: config.git.fetch_freshness.as_std(),
        push_retries: config.git.push_retries,
        connect_timeout: config.git.connect_timeout.as_std(),
        io_timeout: config.git.io_timeout.as_std(),
        audit_window: config.audit.window.as_signed(),
        max_commits: config.audit.max_commits,
    }
}

/// Checks a chat request against the policy's `chatops` rules; `Some(reason)` denies it. A CLI
/// request is checked the same way when its person signed with their key (`--signing-key`);
/// without one (nobody in `directory.people` has a key) it comes from an operator holding the
/// config and credentials, and is not.
fn authorize(event: &Event, policy: &Policy, opts: &Options) -> Authorization {
    use crate::domain::event::Source;
    let signed_cli = event.source == Source::Cli && opts.principal.is_some();
    if event.source != Source::Chatops && !signed_cli {
        return Authorization::Allowed;
    }
    let Some(p) = &opts.principal else {
        return Authorization::Denied("a chat request must name who asked".into());
    };
    let (rules, list) = request_rules(policy, opts);
    match first_admitting(rules, p) {
        Some(rule) => {
            info!(principal = %p, %rule, policy = policy.name(), "request allowed");
            Authorization::Allowed
        }
        // Whether they own what the rollback changes is known once it is planned.
        None if rules.iter().any(crate::domain::principal::Rule::is_codeowners) => Authorization::IfOwner,
        None => Authorization::Denied(format!(
            "{p} may not {} under policy {} (not in {list})",
            if opts.emergency { "break glass" } else { "request rollbacks" },
            policy.name()
        )),
    }
}

/// The rules a request is checked against, and their name.
fn request_rules<'p>(policy: &'p Policy, opts: &Options) -> (&'p [crate::domain::principal::Rule], &'static str) {
    if opts.emergency {
        (&policy.chatops.emergency, "chatops.emergency")
    } else {
        (&policy.chatops.allow, "chatops.allow")
    }
}

/// What [`authorize`] decided.
enum Authorization {
    Allowed,
    Denied(String),
    /// Only `codeowners` could admit them: decided on the plan's files.
    IfOwner,
}

pub use review::ReviewOutcome;

enum Prepared {
    Done(Box<Report>),
    Ready(Box<Ready>),
}

/// A rollback decided and planned, not yet written.
struct Ready {
    decision: Decision,
    policy: Policy,
    plan: Plan,
    id: RollbackId,
    delivery: Delivery,
    now: Timestamp,
}

/// One rollback about to be written, as decided.
#[derive(Clone, Copy)]
struct Write<'a> {
    event: &'a Event,
    policy: &'a Policy,
    plan: &'a Plan,
    id: &'a RollbackId,
    delivery: Delivery,
    /// How many times the branch moved before this attempt.
    retries: u32,
    now: Timestamp,
    emergency: bool,
}

/// How free text is written into a message: [`crate::support::text::quoted`] for commit and tag
/// messages, [`crate::support::text::markdown`] for pull request titles and bodies.
pub(crate) type Escape = fn(&str) -> String;

/// What the message templates can use. Every value that came from input (labels, annotations,
/// reasons, commit summaries, notes) is passed through `esc`, so templates cannot forget to.
pub(crate) fn message_context(
    event: &Event,
    policy: &Policy,
    plan: &Plan,
    id: &RollbackId,
    delivery: Delivery,
    decision: &Decision,
    esc: Escape,
) -> minijinja::Value {
    let short = |s: &Sha| s.short().to_string();
    let map = |m: &std::collections::BTreeMap<String, String>| {
        m.iter().map(|(k, v)| (esc(k), esc(v))).collect::<std::collections::BTreeMap<_, _>>()
    };
    let guards: Vec<_> = decision
        .guards
        .iter()
        .map(|g| serde_json::json!({ "guard": g.guard, "passed": g.passed, "detail": esc(&g.detail) }))
        .collect();
    // File paths, artifact references and ref names come from the repository, where anyone who
    // can push names a file `` a`<img>|b ``: escaped like any other text.
    let paths = |ps: &[String]| ps.iter().map(|p| esc(p)).collect::<Vec<_>>();
    let known_good_source = match serde_json::to_value(&plan.known_good.source) {
        Ok(serde_json::Value::Object(fields)) => serde_json::Value::Object(
            fields
                .into_iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) if k != "kind" => (k, serde_json::Value::String(esc(&s))),
                    v => (k, v),
                })
                .collect(),
        ),
        _ => serde_json::Value::Null,
    };
    crate::support::template::value(serde_json::json!({
        "id": id,
        "service": plan.target.service,
        "env": plan.target.env,
        "paths": paths(&plan.target.paths),
        "branch": plan.branch,
        "delivery": delivery,
        "strategy": plan.strategy,
        "strategy_note": plan.strategy_note.as_deref().map(esc),
        "completes": plan.completes,
        "phase": plan.phase,
        "phase_name": plan.phase.and_then(|p| plan.target.phases.get(p.step as usize - 1)).and_then(|p| p.name.clone()),
        "phases": plan.target.phases,
        "halted": plan.halted.as_deref().map(esc),
        "went_on": plan.went_on.as_deref().map(esc),
        // Built by rollbackd from checked names and triggers, like `trigger`.
        "also": plan.also.iter().map(|a| serde_json::json!({
            "service": a.target.service, "env": a.target.env, "paths": paths(&a.target.paths), "trigger": a.trigger, "policy": a.policy,
        })).collect::<Vec<_>>(),
        "exact": plan.exact,
        // rollbackd-controllers: later changes the controller had not applied.
        "unapplied": plan.unapplied.iter().map(|c| serde_json::json!({
            "sha": c.sha, "short": short(&c.sha), "summary": esc(&c.summary),
        })).collect::<Vec<_>>(),
        "known_good": {
            "sha": plan.known_good.sha,
            "short": short(&plan.known_good.sha),
            "source": known_good_source,
        },
        "bad_commits": plan.bad_commits.iter().map(|c| serde_json::json!({
            "sha": c.sha, "short": short(&c.sha), "summary": esc(&c.summary), "author": esc(&c.author), "time": c.time,
            "irreversible": c.irreversible.iter().map(|m| esc(m)).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        // What a revert of the files leaves as it is: `policy.irreversible` marks.
        "irreversible": plan.bad_commits.iter().flat_map(|c| c.irreversible.iter().map(move |m| esc(&format!("{} {m}", c.sha.short())))).collect::<Vec<_>>(),
        "diffstat": plan.diffstat.iter().map(|f| serde_json::json!({
            "path": esc(&f.path), "insertions": f.insertions, "deletions": f.deletions,
        })).collect::<Vec<_>>(),
        "artifacts": plan.artifacts.iter().map(|a| serde_json::json!({
            "path": esc(&a.path), "name": esc(&a.name), "old": a.old.as_deref().map(esc), "new": a.new.as_deref().map(esc),
        })).collect::<Vec<_>>(),
        "policy": policy.name(),
        "source": event.source,
        // Both are built by rollbackd from checked parts (see `select`).
        "trigger": event.trigger(),
        "actor": event.actor(),
        "reason": event.reason().map(|r| esc(&r)),
        "labels": map(&event.labels),
        "annotations": map(&event.annotations),
        "guards": guards,
        "notes": decision.notes.iter().map(|n| esc(n)).collect::<Vec<_>>(),
        // Why a proposal is one when its policy pushes: `cause` is one word we name, `detail`
        // may hold a person's freeze reason.
        "because": match delivery {
            Delivery::Proposal => decision.because.iter().map(|c| serde_json::json!({
                "cause": c.name(), "detail": esc(c.detail()),
            })).collect::<Vec<_>>(),
            Delivery::Direct => Vec::new(),
        },
    }))
}

/// Every channel a policy routes to exists, and a policy that queries Prometheus has one to ask.
/// Each error is placed in the policy's file, at the line that says it (`text` gives a file's
/// contents: on disk, or from the config repo's tree). Every error is said, not the first.
pub(crate) fn check_routes(
    config: &Config,
    policies: &PolicySet,
    text: &dyn Fn(&std::path::Path) -> Option<String>,
) -> Result<(), Vec<Diagnostic>> {
    let at = |p: &crate::domain::policy::Policy, key: &str, needle: &str, message: String| {
        let (line, column) = text(&p.file).map_or((0, 0), |t| crate::domain::policy::locate(&t, p.name(), key, needle));
        Diagnostic::error(&p.file, line, column, format!("policy {}: {message}", p.name()))
    };
    let mut errors = Vec::new();
    for p in &policies.policies {
        for name in p.notify.iter().map(|r| r.channel()) {
            if !config.notify.channels.contains_key(name) {
                let known: Vec<&str> = config.notify.channels.keys().map(String::as_str).collect();
                let known = if known.is_empty() {
                    "none is defined".to_string()
                } else {
                    format!("defined: {}", known.join(", "))
                };
                errors.push(at(
                    p,
                    "notify",
                    name,
                    format!(
                        "notify names `{name}`, which is not in notify.channels of {} ({known})",
                        config.path.display()
                    ),
                ));
            }
        }
        if p.verify.as_ref().is_some_and(|v| v.query.is_some()) && config.prometheus.is_none() {
            errors.push(at(
                p,
                "verify",
                "query",
                format!("verify.query needs `prometheus: {{ url: ... }}` in {}", config.path.display()),
            ));
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

/// A policy file's text on disk, for placing an error in it.
pub(crate) fn file_text(path: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

impl Ctx {
    /// Why `sha` cannot be known-good for `service`/`env`: it holds a commit that a rollback of
    /// that service/env (one rollbackd pushed: its tag names it) undid, and not the rollback.
    /// A healthy report that comes after the failure at the same revision (Argo CD's health
    /// flapping back) or a late one for a revision before the rollback says nothing good of it.
    fn still_rolled_back(
        &mut self,
        service: &str,
        env: &str,
        sha: &str,
        now: Timestamp,
    ) -> Result<Option<String>, EngineError> {
        let rollbacks: Vec<(RollbackId, Sha, Vec<String>)> = self
            .repo
            .audit(now)?
            .applied(service, env)
            .filter(|r| r.tag.is_some() && !r.cancelled)
            .map(|r| (r.id.clone(), r.commit.clone(), r.bad_commits.clone()))
            .collect();
        for (id, commit, bad) in rollbacks {
            if self.repo.contains(sha, &commit) {
                continue;
            }
            if let Some(b) = bad.iter().find(|b| self.repo.contains(sha, &Sha((*b).clone()))) {
                let b = Sha(b.clone());
                return Ok(Some(format!("{sha} holds {}, which rollback {id} undid", b.short())));
            }
        }
        Ok(None)
    }

    /// The plan of the rollback, or the outcome that ends it here (and the plan, when there is
    /// one to show).
    fn plan_to_write(
        &mut self,
        policy: &Policy,
        target: &crate::domain::plan::Target,
        event: &Event,
        opts: &Options,
    ) -> Result<Result<Plan, (Option<Plan>, Outcome)>, EngineError> {
        Ok(match debug_span!("plan").in_scope(|| self.plan_rollback(policy, target, event, opts.to.clone()))? {
            Planned::Ready(plan) => Ok(*plan),
            Planned::AlreadyRolledBack { id, commit, reason } => {
                Err((None, Outcome::Duplicate { rollback_id: RollbackId(id), commit, reason }))
            }
            Planned::Noop { reason } => Err((None, Outcome::Noop { reason })),
            // Not even an emergency deletes a service: that is a change for a person to write.
            Planned::NothingToGoBackTo { plan, reason } => {
                let reason = format!("{reason} (policy {} does not set action.allow_removal)", policy.name());
                warn!(%reason, "request denied");
                Err((Some(*plan), Outcome::Denied { reason }))
            }
        })
    }

    /// What the push writes first: a phased rollback pushes its first phase with changes (the
    /// idle loop writes the rest); anything else, the whole plan.
    fn first_write(
        &mut self,
        delivery: Delivery,
        policy: &Policy,
        plan: Plan,
        event: &Event,
        decision: &mut Decision,
    ) -> Result<Plan, EngineError> {
        if delivery != Delivery::Direct || plan.target.phases.len() <= 1 {
            return Ok(plan);
        }
        Ok(match self.first_phase(policy, &plan, event)? {
            phases::FirstPhase::Phased(first) => {
                if let Some(p) = first.phase.filter(|p| p.step > 1) {
                    decision.notes.push(format!("the phases before {p} change nothing here: skipped"));
                }
                *first
            }
            phases::FirstPhase::Whole(why) => {
                decision.notes.push(format!("not in phases: {why}"));
                plan
            }
        })
    }

    /// What rolling `target` back under `policy` would write, on the mirror as it is: the one
    /// planning step of a rollback, a dry run and a drill. `to` overrides the known-good search.
    fn plan_rollback(
        &self,
        policy: &Policy,
        target: &crate::domain::plan::Target,
        event: &Event,
        to: Option<String>,
    ) -> Result<Planned, EngineError> {
        let policy_to = policy
            .resolve_to(event, &self.rules)
            .map_err(|message| EngineError::Policy { policy: policy.name().to_string(), message })?;
        let to = to.or(policy_to);
        let request = PlanRequest {
            target,
            strategy: policy.action.strategy,
            exact: policy.action.exact,
            to: to.as_deref(),
            irreversible: policy.irreversible.as_ref(),
            continues: None,
            allow_removal: policy.action.allow_removal,
            // rollbackd-controllers: a Flux / Argo CD event blames up to the revision it applied.
            upto: event.applied_revision(),
        };
        Ok(self.repo.plan(&request)?)
    }

    /// Writes the rollback: commit (and tag) pushed with compare-and-swap, or the proposal
    /// branch and its pull request. `Ok(None)` when the branch moved: plan again.
    fn write(&mut self, w: &Write<'_>, decision: &mut Decision) -> Result<Option<Rollback>, EngineError> {
        let Write { event, policy, plan, id, delivery, retries, now, .. } = *w;
        let stage = debug_span!("write").entered();
        let phase = plan.phase;
        let trailers = trailers_of(w, decision);
        // The names are checked before anything is written: a commit never goes out without
        // the tag (or branch) that names it.
        let name = RollbackRef::new(&plan.target.service, &plan.target.env, id).name();
        if !crate::git::is_valid_ref_name(&name) {
            return Err(EngineError::Policy {
                policy: policy.name().to_string(),
                message: format!("{} cannot name a git ref", crate::domain::ident::shown(&name)),
            });
        }
        let ctx = message_context(event, policy, plan, id, delivery, decision, crate::support::text::quoted);
        let body = self.templates.render(COMMIT_TEMPLATE, &ctx)?;
        // A phased rollback is tagged once, by its last phase: the tag names the state it ends in.
        let tag_msg = match delivery {
            Delivery::Direct if phase.is_none_or(Phase::is_last) => Some(self.templates.render(TAG_TEMPLATE, &ctx)?),
            Delivery::Direct => None,
            Delivery::Proposal => None,
        };
        let message = trailers.append_to(&body);
        // A phased rollback halts with an empty commit on the branch saying so; the rest is
        // proposed on top of it (see `ConfigRepo::publish_halt`).
        let marker = match (&plan.halted, delivery) {
            (Some(why), Delivery::Proposal) => {
                let rref = RollbackRef::new(&plan.target.service, &plan.target.env, id);
                let why = format!("{}\nThe rest of it is proposed as {name}.", crate::support::text::quoted(why));
                Some(self.halt_marker(&plan.head, &rref, &why, now)?)
            }
            _ => None,
        };
        let parent = marker.as_ref().map_or_else(|| plan.head.clone(), |(m, _)| m.clone());
        let commit = self.repo.create_commit(&parent, &plan.tree, &message, now)?;
        let (target, tag) = self.mark(w, &commit, tag_msg, name, now)?;
        // Rendered before anything is pushed: a template error must not leave a branch behind.
        let pr_texts = match delivery {
            Delivery::Proposal if self.forge.hosts_pull_requests() => {
                // A pull request's title and body are Markdown (GitHub renders code spans and
                // mentions in both): their context is built only for them.
                let md = message_context(event, policy, plan, id, delivery, decision, crate::support::text::markdown);
                Some((self.templates.render(PR_TITLE_TEMPLATE, &md)?, self.templates.render(PR_BODY_TEMPLATE, &md)?))
            }
            _ => None,
        };
        let tag_ref = tag.as_ref().map(|(n, t)| (n.as_str(), t));
        drop(stage);
        let _stage = debug_span!("push").entered();
        let pushed = match (&marker, &target) {
            (Some((marker, halted_tag)), WriteTarget::NewBranch { name }) => {
                let rref = RollbackRef::new(&plan.target.service, &plan.target.env, id);
                let proposal = tag.as_ref().map(|(n, t)| (n.as_str(), t));
                self.repo.publish_halt(
                    marker,
                    &plan.head,
                    (&rref.halted(), halted_tag),
                    Some((name, &commit)),
                    proposal,
                )?
            }
            _ => self.repo.publish(&commit, &target, tag_ref)?,
        };
        match pushed {
            PushResult::Moved => Ok(None),
            PushResult::Pushed => {
                let branch = match &target {
                    WriteTarget::Branch { name, .. } | WriteTarget::NewBranch { name } => name.clone(),
                };
                let mut rollback = Rollback {
                    id: id.clone(),
                    commit,
                    delivery,
                    branch,
                    // A proposal's `proposed/...` tag marks it as ours; it names no rollback yet.
                    tag: tag.filter(|_| delivery == Delivery::Direct).map(|(n, _)| n),
                    push_retries: retries,
                    pr_url: None,
                    phase,
                    because: match delivery {
                        Delivery::Proposal => decision.because.clone(),
                        Delivery::Direct => Vec::new(),
                    },
                };
                if let Some(texts) = &pr_texts {
                    self.open_pr_for(&mut rollback, w, texts, decision);
                }
                Ok(Some(rollback))
            }
        }
    }

    /// Where commit `commit` goes and the tag that marks it as rollbackd's: the rollback's tag
    /// (`tag_msg`, on its last or only phase), a phase's tag, or a proposal's tag and branch.
    fn mark(
        &self,
        w: &Write<'_>,
        commit: &Sha,
        tag_msg: Option<String>,
        name: String,
        now: Timestamp,
    ) -> Result<(WriteTarget, Option<(String, Sha)>), EngineError> {
        let Write { plan, id, delivery, .. } = *w;
        let phase = plan.phase;
        let on_branch = WriteTarget::Branch { name: plan.branch.clone(), expected: plan.head.clone() };
        Ok(match (tag_msg, delivery) {
            (Some(tag_msg), _) => {
                let tag_id = self.repo.create_tag(&name, commit, &tag_msg, now)?;
                (on_branch, Some((name, tag_id)))
            }
            // A phase before the last carries its own tag: what marks it as rollbackd's.
            (None, Delivery::Direct) => {
                let step = phase.map_or(1, |p| p.step);
                let phase_tag = RollbackRef::new(&plan.target.service, &plan.target.env, id).phase_tag(step);
                let text = format!(
                    "Phase {} of rollback {id} of {}/{}\n",
                    phase.map_or_else(String::new, |p| p.to_string()),
                    plan.target.service,
                    plan.target.env
                );
                let tag_id = self.repo.create_tag(&phase_tag, commit, &text, now)?;
                (on_branch, Some((phase_tag, tag_id)))
            }
            // A proposal carries its own tag: what marks the branch as rollbackd's.
            (None, Delivery::Proposal) => {
                let proposed = RollbackRef::new(&plan.target.service, &plan.target.env, id).proposed();
                let text = format!("Proposed rollback {id} of {}/{}\n", plan.target.service, plan.target.env);
                let tag_id = self.repo.create_tag(&proposed, commit, &text, now)?;
                (WriteTarget::NewBranch { name }, Some((proposed, tag_id)))
            }
        })
    }

    /// Hands the pull request of proposal `rollback`, just pushed, to the outbox: the writer
    /// does not wait for GitHub to open it (the branch is the proposal meanwhile). An
    /// `auto_merge` proposal is merged through its pull request at once, on the writer as any
    /// merge: that one is opened now, and handed to the outbox only if GitHub would not open it.
    fn open_pr_for(
        &mut self,
        rollback: &mut Rollback,
        w: &Write<'_>,
        (title, body): &(String, String),
        decision: &mut Decision,
    ) {
        let Write { policy, plan, .. } = *w;
        let labels = proposal_labels(&plan.target.service, &plan.target.env);
        let files: Vec<String> = plan.diffstat.iter().map(|f| f.path.clone()).collect();
        let (reviewers, teams) = self.reviewers_for(&policy.review.reviewers, &policy.review.teams, &files);
        let request = ProposalRequest {
            branch: &rollback.branch,
            base: &plan.branch,
            title,
            body,
            labels: &labels,
            reviewers: &reviewers,
            teams: &teams,
        };
        if !policy.review.auto_merge {
            self.outbox.propose(crate::forge::Proposal::of(&request));
            return;
        }
        match self.forge.propose(&request) {
            Ok(pr) => rollback.pr_url = pr.map(|pr| pr.html_url),
            Err(e) => {
                warn!(error = %e, "the pull request could not be opened yet");
                decision.notes.push(format!("the pull request could not be opened yet: {e}"));
                if e.is_transient() {
                    self.outbox.propose(crate::forge::Proposal::of(&request));
                }
            }
        }
    }
}
