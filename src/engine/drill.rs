//! Drills: the rollback rollbackd would do now, planned exactly as a rollback is planned
//! (`Ctx::plan_rollback`), committed and signed like one, and written compare-and-swap to
//! `rollbackd/drill/<service>/<env>` instead of the watched branch, so the config repo's own CI
//! checks that the rolled-back state renders. Nothing a rollback leaves behind follows a drill:
//! no tag, no audit record, no hold, nothing a guard counts; only a decision record for `explain`.

use jiff::Timestamp;
use tracing::{info, warn};

use super::{Engine, EngineError, Selection, select};
use crate::domain::decision::Decision;
use crate::domain::drill::{self, CiVerdict, DrillOutcome, DrillResult, Schedule};
use crate::domain::event::{Event, Source};
use crate::domain::explain::DecisionRecord;
use crate::domain::ident::InputRules;
use crate::domain::plan::Target;
use crate::domain::policy::Mode;
use crate::domain::policy::{Policy, PolicySet};
use crate::git::{GitError, Planned, PushResult};

/// Scheduled drills that wrote nothing or failed, and when each may be tried again.
#[derive(Default)]
pub(super) struct Deferred(std::collections::HashMap<(String, String), Timestamp>);

impl Deferred {
    fn not_before(&self, service: &str, env: &str) -> Option<Timestamp> {
        self.0.get(&(service.to_string(), env.to_string())).copied()
    }

    fn defer(&mut self, service: String, env: String, until: Timestamp) {
        self.0.insert((service, env), until);
    }
}

impl Engine {
    /// `rollbackd drill SERVICE --env ENV`, and each drill `drills:` schedules: plans the
    /// rollback of `service`/`env` on the origin as it is now and writes it to the drill branch.
    /// `actor` is who asked (`cli:<name>`, or `rollbackd` for the schedule).
    pub fn drill(&mut self, service: &str, env: &str, actor: &str) -> Result<DrillOutcome, EngineError> {
        self.ctx.rules.identifier("service", service).map_err(|e| EngineError::Input(e.to_string()))?;
        self.ctx.rules.identifier("env", env).map_err(|e| EngineError::Input(e.to_string()))?;
        let _lock = self.ctx.begin()?;
        self.ctx.fetch_now()?;
        self.ctx.need_policies()?;
        let attempts = self.ctx.config.git.push_retries + 1;
        for attempt in 0..attempts {
            if attempt > 0 {
                warn!(attempt, service, env, "the drill branch or the watched branch moved; planning the drill again");
                self.ctx.fetch_now()?;
            }
            if let Some(outcome) = self.ctx.drill_once(service, env, actor)? {
                self.ctx.record_drill(&outcome);
                info!("{}", outcome.summary());
                return Ok(outcome);
            }
        }
        Err(GitError::Contended { url: self.ctx.repo.url(), branch: drill::branch(service, env), attempts }.into())
    }

    /// The latest drill of `service`/`env` as the mirror has it (no fetch): the drill branch's
    /// head when rollbackd signed it, and with a GitHub forge what the repo's CI says of it,
    /// asked of GitHub now (the CLI; the writer asks through readiness, off its thread).
    /// This is what a service's readiness joins: a drill whose CI failed is a rollback that
    /// would not render.
    pub fn drill_result(&self, service: &str, env: &str) -> Option<DrillResult> {
        let mut result = self.drill_head(service, env)?;
        result.ci = self.ctx.forge.hosts_pull_requests().then(|| match self.ctx.forge.ci_of(&result.commit.0) {
            Ok(c) => CiVerdict::of(c.failed, c.pending, c.passed),
            Err(e) => CiVerdict::unasked(e),
        });
        Some(result)
    }

    /// The latest drill of `service`/`env` without its CI verdict: the signed drill branch
    /// head in the mirror, and the policy it rehearsed.
    pub(crate) fn drill_head(&self, service: &str, env: &str) -> Option<DrillResult> {
        let branch = drill::branch(service, env);
        let (commit, at) = self.ctx.repo.own_branch_head(&branch)?;
        let policy = self.ctx.repo.message(&commit).ok().and_then(|m| drill::policy_of(&m));
        Some(DrillResult { service: service.to_string(), env: env.to_string(), branch, commit, at, policy, ci: None })
    }

    /// The writer's idle work: the most overdue scheduled drill, if one is due (one per idle
    /// turn, so an event waits behind at most one drill).
    pub(crate) fn drill_due(&mut self) -> Option<Result<DrillOutcome, EngineError>> {
        let schedule = self.ctx.drill_schedule()?;
        let now = self.ctx.clock.now();
        let (service, env) =
            schedule.due(now, |s, e| self.ctx.last_drill(s, e), |s, e| self.drills_deferred.not_before(s, e))?;
        let outcome = self.drill(&service, &env, "rollbackd");
        // The next one waits `every` whatever the branch shows (a drill that wrote nothing leaves
        // no branch to date it by; a head someone else pushed unsigned must not make the writer
        // drill in a loop). One that failed (the origin away) is tried again sooner.
        let wait = match &outcome {
            Ok(_) => schedule.every,
            Err(_) => schedule.every.min(jiff::SignedDuration::from_mins(5)),
        };
        self.drills_deferred.defer(service, env, now.saturating_add(wait).unwrap_or(Timestamp::MAX));
        Some(outcome)
    }
}

/// The policy a drill of `event`'s service/env rehearses, and its target: the one that would
/// decide a person's `rollbackd rollback` of it; else, for a service only alerts or CI roll back
/// (`match.source: alertmanager`), the first policy that rolls back, whose matchers on `service`
/// and `env` hold (those on other labels are what an incident brings: not asked), and whose
/// target names exactly this service/env. `Ok(Err(reason))`: none does, and why.
pub(crate) fn drill_policy<'p>(
    policies: &'p PolicySet,
    rules: &InputRules,
    event: &Event,
) -> Result<Result<(&'p Policy, Target), String>, EngineError> {
    let rolls_back = |p: &Policy| matches!(p.action.mode, Mode::Direct | Mode::PullRequest);
    let mut decision = Decision::for_event(event);
    let why = match select(policies, rules, event, &mut decision)? {
        Selection::Target { policy, target } if rolls_back(policy) => return Ok(Ok((policy, target))),
        Selection::Target { policy, .. } => {
            format!("policy {} decides it and does not roll back (mode {})", policy.name(), policy.action.mode)
        }
        Selection::Settled(outcome) => outcome.summary(),
    };
    let (service, env) = (event.labels.get("service"), event.labels.get("env"));
    let names_it = |p: &Policy| {
        p.matches.matchers.iter().filter(|m| m.name == "service" || m.name == "env").all(|m| m.matches(&event.labels))
    };
    for p in policies.policies.iter().filter(|p| rolls_back(p) && names_it(p)) {
        if let Ok(target) = p.resolve_target(event, rules)
            && Some(&target.service) == service
            && Some(&target.env) == env
        {
            return Ok(Ok((p, target)));
        }
    }
    Ok(Err(format!("{why}, and no policy that rolls back targets it")))
}

impl super::Ctx {
    /// One try: `None` when the drill branch moved between reading and pushing.
    fn drill_once(&mut self, service: &str, env: &str, actor: &str) -> Result<Option<DrillOutcome>, EngineError> {
        let now = self.clock.now();
        let not_written = |reason: String| {
            Ok(Some(DrillOutcome::NotWritten { service: service.to_string(), env: env.to_string(), reason }))
        };
        // The event a person's `rollbackd rollback SERVICE --env ENV` makes: the drill rehearses
        // that rollback, under the policy that would decide it.
        let key = format!("drill-{service}-{env}-{}", now.as_second());
        let event = Event::request(Source::Cli, service, env, actor, Some("drill"), now, &key);
        let (policy, target) = match drill_policy(&self.policies, &self.rules, &event)? {
            Ok((policy, target)) => (policy.clone(), target),
            Err(reason) => return not_written(reason),
        };
        let planned = match self.plan_rollback(&policy, &target, &event, None) {
            // What a drill is for: finding out there is nothing to go back to before an incident.
            Err(EngineError::Git(
                e @ (GitError::NoKnownGood { .. } | GitError::RangeTooLong { .. } | GitError::BrokenResult { .. }),
            )) => {
                return not_written(e.to_string());
            }
            other => other?,
        };
        let plan = match planned {
            Planned::Ready(plan) => *plan,
            Planned::AlreadyRolledBack { reason, .. } => return not_written(reason),
            Planned::Noop { reason } => return not_written(reason),
            Planned::NothingToGoBackTo { reason, .. } => return not_written(reason),
        };
        let branch = drill::branch(&target.service, &target.env);
        if branch == self.repo.branch() {
            return Err(EngineError::Config(format!("the watched branch is {branch}: a drill never writes it")));
        }
        let bad: Vec<_> = plan.bad_commits.iter().map(|c| c.sha.clone()).collect();
        let message = drill::message(
            &target.service,
            &target.env,
            policy.name(),
            &plan.known_good.sha,
            &plan.strategy.to_string(),
            &bad,
            now,
        );
        // On the watched branch's head as it is, like the rollback it rehearses: CI checks the
        // state a rollback would leave now.
        let commit = self.repo.create_commit(&plan.head, &plan.tree, &message, now)?;
        let previous = self.repo.ref_id(&format!("refs/heads/{branch}")).map(crate::domain::plan::Sha);
        if self.repo.set_side_branch(&branch, &commit)? == PushResult::Moved {
            return Ok(None);
        }
        let files = self.repo.changed_by(&commit)?;
        Ok(Some(DrillOutcome::Written {
            service: target.service,
            env: target.env,
            policy: policy.name().to_string(),
            branch,
            commit,
            previous,
            known_good: plan.known_good.sha.clone(),
            strategy: plan.strategy.to_string(),
            files,
        }))
    }

    /// Keeps the drill for `explain drill:<service>/<env>`: a decision record, never an audit
    /// record, so nothing counts it as a rollback.
    fn record_drill(&mut self, outcome: &DrillOutcome) {
        let (service, env, reason, policy) = match outcome {
            DrillOutcome::Written { service, env, policy, .. } => {
                (service, env, outcome.summary(), Some(policy.clone()))
            }
            DrillOutcome::NotWritten { service, env, .. } => (service, env, outcome.summary(), None),
        };
        let Ok(head) = self.repo.head() else { return };
        let now = self.clock.now();
        let record = DecisionRecord {
            at: now,
            trigger: drill::trigger(service, env),
            outcome: drill::OUTCOME.to_string(),
            policy,
            service: Some(service.clone()),
            env: Some(env.clone()),
            reason: crate::support::text::quoted(&reason),
            failed_guards: Vec::new(),
            head: head.0.clone(),
        };
        if let Err(e) = self.repo.add_decision(&head, &record.line(), now) {
            warn!(error = %e, "the drill could not be recorded in git");
        }
    }

    /// `drills:` as a schedule, with its targets checked against the input rules.
    fn drill_schedule(&self) -> Option<Schedule> {
        let d = self.config.drills.as_ref()?;
        let targets = d
            .targets
            .iter()
            .filter(|t| {
                self.rules.identifier("service", &t.service).is_ok() && self.rules.identifier("env", &t.env).is_ok()
            })
            .map(|t| (t.service.clone(), t.env.clone()))
            .collect();
        Some(Schedule { every: d.every.as_signed(), targets })
    }

    fn last_drill(&self, service: &str, env: &str) -> Option<Timestamp> {
        self.repo.own_branch_head(&drill::branch(service, env)).map(|(_, at)| at)
    }
}

/// When the next scheduled drill is due, from the drill branches' signed heads: a restart or
/// another replica does not drill again what was drilled within `every`.
pub(super) fn next_at(ctx: &super::Ctx, state: &Deferred) -> Option<Timestamp> {
    let schedule = ctx.drill_schedule()?;
    schedule.next_due(|s, e| ctx.last_drill(s, e), |s, e| state.not_before(s, e))
}
