//! Phased rollbacks after their first phase: the writer's idle loop writes the next phase once
//! the one before has soaked and the policy's `verify.query` holds; without a query a person
//! says `continue`. A new alert for the target, a failed check, a person's `abort`, a change by
//! someone else to the target's paths or a policy that no longer has these phases halts it: the
//! rest is proposed as one commit (the last phase) for review.
//!
//! Nothing is kept in memory: where each rollback stands is read from git (its newest phase
//! commit and when it reached the branch, and the remainder's proposal), so a restart or
//! another replica carries on.

use tracing::{info, warn};

use super::review::{Actor, actor_id};
use super::{Engine, EngineError, Write};
use crate::domain::audit::AuditRecord;
use crate::domain::decision::Decision;
use crate::domain::event::Event;
use crate::domain::notice::{Notice, NoticeKind};
use crate::domain::phase::{self, Phase, Stage};
use crate::domain::plan::{KnownGoodSource, Plan, Target};
use crate::domain::policy::{Mode, Policy};
use crate::domain::principal::first_admitting;
use crate::domain::rollback::{Delivery, Rollback, RollbackId};
use crate::git::{PathSet, PlanRequest, Planned};
use jiff::Timestamp;

/// How a note on a phase commit says its trigger resolved before the last phase.
const RESOLVED_BETWEEN_PHASES: &str = "rollbackd: resolved between phases: ";

/// What a phased rollback's next commit is for.
enum Next<'a> {
    /// The next phase, pushed to the branch; `why` goes into its notes.
    Phase { why: &'a str },
    /// The rest as one proposal: the phased rollback halted, for `why`.
    Remainder { why: &'a str },
}

impl Engine {
    /// The first phase with anything to change, planned from `plan` (the whole target's): its
    /// paths, the same bad commits and known-good. `None` when no phase has.
    pub(super) fn first_phase(&self, policy: &Policy, plan: &Plan) -> Result<Option<Plan>, EngineError> {
        for step in 1..=plan.target.phases.len() as u32 {
            if let Some(p) = self.plan_phase(policy, &plan.target, plan, step)? {
                return Ok(Some(p));
            }
        }
        Ok(None)
    }

    /// Phase `step` of `target`, to where `first` (a plan of the same rollback) went.
    fn plan_phase(
        &self,
        policy: &Policy,
        target: &Target,
        first: &Plan,
        step: u32,
    ) -> Result<Option<Plan>, EngineError> {
        let of = target.phases.len() as u32;
        let Some(phase) = Phase::new(step, of) else { return Ok(None) };
        let spec = &target.phases[step as usize - 1];
        let bad: Vec<String> = first.bad_commits.iter().map(|c| c.sha.0.clone()).collect();
        self.plan_part(policy, target, &spec.paths, &first.known_good.sha.0, &bad, phase, &first.known_good)
    }

    /// A plan of `paths` that undoes `bad` to `to`, as phase `phase`.
    #[allow(clippy::too_many_arguments)]
    fn plan_part(
        &self,
        policy: &Policy,
        target: &Target,
        paths: &[String],
        to: &str,
        bad: &[String],
        phase: Phase,
        known_good: &crate::domain::plan::KnownGood,
    ) -> Result<Option<Plan>, EngineError> {
        let part = Target { paths: paths.to_vec(), ..target.clone() };
        let request = PlanRequest {
            target: &part,
            strategy: policy.action.strategy,
            exact: policy.action.exact,
            to: Some(to),
            irreversible: policy.irreversible.as_ref(),
            continues: Some(bad),
        };
        Ok(match self.repo.plan(&request)? {
            Planned::Ready(plan) => {
                let mut plan = *plan;
                plan.phase = Some(phase);
                plan.known_good = known_good.clone();
                Some(plan)
            }
            Planned::Noop { .. } | Planned::AlreadyRolledBack { .. } => None,
        })
    }

    /// Advances the phased rollbacks that are due. Called by the writer when idle.
    pub(super) fn phases_due(&mut self, now: Timestamp) -> Vec<String> {
        let records: Vec<AuditRecord> = phase::in_progress(self.repo.index().records()).into_iter().cloned().collect();
        let mut said = Vec::new();
        for r in records {
            match self.phase_due(&r, now) {
                Ok(Some(s)) => said.push(s),
                Ok(None) => {}
                Err(e) => warn!(rollback_id = %r.id, error = %e, "the phased rollback could not go on; retrying later"),
            }
        }
        said
    }

    fn phase_due(&mut self, r: &AuditRecord, now: Timestamp) -> Result<Option<String>, EngineError> {
        let Some(phase) = r.phase else { return Ok(None) };
        let (policy, target) = match self.phased_target(r) {
            Ok(found) => found,
            Err(why) => return self.next_commit(r, None, Next::Remainder { why: &why }, now).map(Some),
        };
        let paths = PathSet::new(&target.paths)
            .map_err(|message| EngineError::Policy { policy: policy.name().to_string(), message })?;
        if let Some(c) = self.repo.changed_since(&paths, &r.commit)? {
            let why = format!("{} changed {} after phase {phase} was written", c.short(), target.paths.join(", "));
            return self.next_commit(r, Some((&policy, &target)), Next::Remainder { why: &why }, now).map(Some);
        }
        let soak = target.phases[phase.step as usize - 1].soak;
        let query = self.verify_query(&policy, &r.service, &r.env);
        match phase::stage(r.at, soak, query.is_some(), now) {
            Stage::Soaking { .. } | Stage::AwaitingContinue => Ok(None),
            Stage::Check => {
                // The kill switch and freezes stop what rollbackd does on its own; a person's
                // `continue` still goes on.
                let freezes = self.repo.freezes()?;
                if freezes.paused(now).or_else(|| freezes.covering(&r.service, &r.env, now)).is_some() {
                    return Ok(None);
                }
                let Some(q) = query else { return Ok(None) };
                match self.query_holds_now(&q) {
                    Ok(true) => {
                        let why = format!("phase {phase} soaked {soak} and verify.query holds");
                        self.next_commit(r, Some((&policy, &target)), Next::Phase { why: &why }, now).map(Some)
                    }
                    Ok(false) => {
                        let why = format!("verify.query does not hold after phase {phase} soaked {soak}");
                        self.next_commit(r, Some((&policy, &target)), Next::Remainder { why: &why }, now).map(Some)
                    }
                    Err(e) => {
                        warn!(rollback_id = %r.id, error = %e, "verify.query could not be evaluated; the next phase waits");
                        Ok(None)
                    }
                }
            }
        }
    }

    /// The policy of a phased rollback and its target, as the policy says now. An error says why
    /// it cannot go on phase by phase (the policy is gone, or its phases changed).
    fn phased_target(&self, r: &AuditRecord) -> Result<(Policy, Target), String> {
        let Some(phase) = r.phase else { return Err("not a phased rollback".into()) };
        let Some(policy) = self.policy_named(&r.policy).cloned() else {
            return Err(format!("policy {} no longer exists", r.policy));
        };
        let event = Event::of_record(r, self.clock.now());
        let target = policy.resolve_target(&event, &self.rules).map_err(|e| format!("policy {}: {e}", r.policy))?;
        if target.phases.len() as u32 != phase.of || policy.action.mode != Mode::Direct {
            return Err(format!(
                "policy {} now has {} phases (mode {}), not the {} this rollback began with",
                r.policy,
                target.phases.len(),
                policy.action.mode,
                phase.of
            ));
        }
        Ok((policy, target))
    }

    /// Where each phased rollback between phases stands, for `status`.
    pub(super) fn phased_views(&self, now: Timestamp) -> Vec<crate::domain::status::PhasedView> {
        phase::in_progress(self.repo.index().records())
            .into_iter()
            .filter_map(|r| {
                let phase = r.phase?;
                let mut name = None;
                let waiting_for = match self.phased_target(r) {
                    Err(why) => format!("cannot go on: {why}"),
                    Ok((policy, target)) => {
                        name = target.phases[phase.step as usize - 1].name.clone();
                        let soak = target.phases[phase.step as usize - 1].soak;
                        let query = self.verify_query(&policy, &r.service, &r.env).is_some();
                        match phase::stage(r.at, soak, query, now) {
                            Stage::Soaking { until } => format!(
                                "soaking until {until}; then {}",
                                if query { "verify.query decides" } else { "waits for `continue`" }
                            ),
                            Stage::Check => "verify.query decides at the next check".into(),
                            Stage::AwaitingContinue => format!("waiting for `continue {}` or `abort {}`", r.id, r.id),
                        }
                    }
                };
                Some(crate::domain::status::PhasedView {
                    id: r.id.to_string(),
                    service: r.service.clone(),
                    env: r.env.clone(),
                    phase: phase.to_string(),
                    name,
                    since: crate::domain::freeze::to_the_second(r.at),
                    waiting_for,
                })
            })
            .collect()
    }

    /// The policy's `verify.query` for a service/env, rendered.
    pub(super) fn verify_query(&self, policy: &Policy, service: &str, env: &str) -> Option<String> {
        let q = policy.verify.as_ref()?.query.as_ref()?;
        let ctx = crate::support::template::value(serde_json::json!({
            "service": service, "env": env, "labels": { "service": service, "env": env },
        }));
        match crate::support::template::render_expression(&q.0, &ctx, &self.rules) {
            Ok(q) => Some(q),
            Err(e) => {
                warn!(policy = policy.name(), error = %e, "verify.query cannot be rendered; the query is not checked");
                None
            }
        }
    }

    fn query_holds_now(&self, query: &str) -> Result<bool, String> {
        let Some(p) = &self.config.prometheus else { return Err("no `prometheus:` configured".into()) };
        super::verify::query_holds(p, query)
    }

    /// Writes what comes after `r` (the newest phase on the branch): the next phase with
    /// anything to change, or the remainder as a proposal. Plans again when the branch moved,
    /// and stops when someone else went on meanwhile.
    fn next_commit(
        &mut self,
        r: &AuditRecord,
        found: Option<(&Policy, &Target)>,
        next: Next<'_>,
        now: Timestamp,
    ) -> Result<String, EngineError> {
        let Some(phase) = r.phase else { return Ok(format!("{} is not a phased rollback", r.id)) };
        let looked_up;
        let (policy, target) = match found {
            Some(found) => found,
            None => match self.phased_target(r) {
                Ok(f) => {
                    looked_up = f;
                    (&looked_up.0, &looked_up.1)
                }
                // Nothing to plan the rest from: say so, and leave it to a person.
                Err(why) => return Ok(self.cannot_go_on(r, &why, now)),
            },
        };
        let event = Event::of_record(r, now);
        let known_good = crate::domain::plan::KnownGood {
            sha: crate::domain::plan::Sha(r.known_good.clone()),
            source: KnownGoodSource::Phases { id: r.id.to_string() },
        };
        let attempts = self.config.git.push_retries + 1;
        for retries in 0..attempts {
            // Another replica (or this one, before a restart) may have gone on already.
            let still =
                phase::in_progress(self.repo.index().records()).iter().any(|o| o.id == r.id && o.phase == r.phase);
            if !still {
                return Ok(format!("{}: phase {phase} was already followed up", r.id));
            }
            let (plan, delivery) = match &next {
                Next::Phase { why } => {
                    let mut planned = None;
                    let mut step = phase.step + 1;
                    while planned.is_none() && step <= phase.of {
                        let spec = &target.phases[step as usize - 1];
                        let p = Phase::new(step, phase.of).unwrap_or(phase.last());
                        planned =
                            self.plan_part(policy, target, &spec.paths, &r.known_good, &r.bad_commits, p, &known_good)?;
                        step += 1;
                    }
                    match planned {
                        Some(mut plan) => {
                            plan.went_on = Some(why.to_string());
                            (plan, Delivery::Direct)
                        }
                        None => return Ok(self.cannot_go_on(r, "the remaining phases change nothing", now)),
                    }
                }
                Next::Remainder { why } => {
                    let last = phase.last();
                    match self.plan_part(
                        policy,
                        target,
                        &target.paths,
                        &r.known_good,
                        &r.bad_commits,
                        last,
                        &known_good,
                    )? {
                        Some(mut plan) => {
                            plan.halted = Some(why.to_string());
                            (plan, Delivery::Proposal)
                        }
                        None => return Ok(self.cannot_go_on(r, &format!("{why}; the rest changes nothing"), now)),
                    }
                }
            };
            let mut decision = Decision::for_event(&event);
            decision.policy = Some(policy.name().to_string());
            decision.mode = Some(Mode::Direct);
            decision.target = Some(plan.target.clone());
            let why = match &next {
                Next::Phase { why } | Next::Remainder { why } => *why,
            };
            decision.notes.push(why.to_string());
            let w =
                Write { event: &event, policy, plan: &plan, id: &r.id, delivery, retries, now, emergency: r.emergency };
            match self.write(&w, &mut decision)? {
                Some(rollback) => return Ok(self.after_phase(r, policy, &plan, &rollback, &decision, now)),
                None => {
                    self.fetch(true)?;
                    self.repo.audit(now)?;
                }
            }
        }
        Err(crate::git::GitError::Contended { url: self.repo.url(), branch: self.repo.branch().to_string(), attempts }
            .into())
    }

    /// Tells the route what was written, and verifies a last phase.
    fn after_phase(
        &mut self,
        r: &AuditRecord,
        policy: &Policy,
        plan: &Plan,
        rollback: &Rollback,
        decision: &Decision,
        now: Timestamp,
    ) -> String {
        let phase = plan.phase.unwrap_or(Phase { step: 1, of: 1 });
        let (kind, said) = match (&plan.halted, rollback.delivery) {
            (Some(why), _) => (
                NoticeKind::Halted,
                format!(
                    "{}: halted after phase {}: {why}; the rest is proposed as {}",
                    r.id,
                    r.phase.map_or_else(String::new, |p| p.to_string()),
                    rollback.branch
                ),
            ),
            (None, _) => (
                NoticeKind::RolledBack,
                format!(
                    "{}: phase {phase} pushed as {}{}",
                    r.id,
                    rollback.commit.short(),
                    if phase.is_last() { " (the last: the rollback is complete)" } else { "" }
                ),
            ),
        };
        info!(rollback_id = %r.id, phase = %phase, notes = ?decision.notes, "{said}");
        let mut notice = Notice::about(kind, &r.service, &r.env, &r.policy, &r.trigger, said.clone(), now);
        notice.rollback_id = Some(r.id.clone());
        notice.commit = Some(rollback.commit.0.clone());
        notice.actor = r.actor.clone();
        notice.known_good = Some(r.known_good.clone());
        self.tell(&notice);
        if phase.is_last() && rollback.delivery == Delivery::Direct {
            self.start_watch(policy, rollback, &r.service, &r.env, &r.trigger, now, 0, None);
        }
        said
    }

    /// A phased rollback that cannot go on by itself: people are told, once per process.
    fn cannot_go_on(&mut self, r: &AuditRecord, why: &str, now: Timestamp) -> String {
        let said = format!(
            "{}: cannot go on after phase {}: {why}; a person must act",
            r.id,
            r.phase.map_or_else(String::new, |p| p.to_string())
        );
        if self.stuck.insert(r.id.clone()) {
            warn!(rollback_id = %r.id, "{said}");
            let mut notice =
                Notice::about(NoticeKind::Halted, &r.service, &r.env, &r.policy, &r.trigger, said.clone(), now);
            notice.rollback_id = Some(r.id.clone());
            notice.commit = Some(r.commit.0.clone());
            self.tell(&notice);
        }
        said
    }

    /// A new alert (or CI failure) about a target whose phased rollback `id` is between phases:
    /// it halts, and the rest is proposed. `None` when `id` is not between phases.
    pub(super) fn halt_on_signal(
        &mut self,
        id: &RollbackId,
        target: &Target,
        event: &Event,
        now: Timestamp,
    ) -> Result<Option<String>, EngineError> {
        let Some(r) = self.between(id, target).cloned() else { return Ok(None) };
        let why = format!(
            "{} fired while phase {} soaked",
            event.trigger(),
            r.phase.map_or_else(String::new, |p| p.to_string())
        );
        self.next_commit(&r, None, Next::Remainder { why: &why }, now).map(Some)
    }

    /// Phased rollback `id` of this very target, between phases. Another target's alert whose
    /// paths a phase happened to cover does not speak for this one.
    fn between(&self, id: &RollbackId, target: &Target) -> Option<&AuditRecord> {
        phase::in_progress(self.repo.index().records())
            .into_iter()
            .find(|r| &r.id == id && r.service == target.service && r.env == target.env)
    }

    /// What a person asking again for a target between phases is told: how to go on.
    pub(super) fn between_phases(&self, id: &RollbackId, target: &Target) -> Option<String> {
        let r = self.between(id, target)?;
        let phase = r.phase?;
        Some(format!(
            "it is between phases ({phase} written): `continue {id}` writes the next now, `abort {id}` stops it"
        ))
    }

    /// The trigger of a phased rollback between phases resolved (the canary's rollback may be
    /// enough to clear it): kept as a note on the phase commit, so the last phase's
    /// verification, in this process or after a restart, does not wait for it to resolve
    /// again. `None` when `r` is not between phases.
    pub(super) fn resolved_between_phases(
        &mut self,
        r: &AuditRecord,
        at: Timestamp,
        now: Timestamp,
    ) -> Result<Option<String>, EngineError> {
        let Some(newest) = phase::in_progress(self.repo.index().records()).into_iter().find(|o| o.id == r.id).cloned()
        else {
            return Ok(None);
        };
        let at = at.min(now);
        let text = format!("{RESOLVED_BETWEEN_PHASES}{} at {at}\n", r.trigger);
        let retries = self.config.git.push_retries;
        self.repo.write_note(crate::git::WATCH_NOTES_REF, &newest.commit, &text, now, retries, false)?;
        let phase = newest.phase.map_or_else(String::new, |p| p.to_string());
        Ok(Some(format!(
            "{}: {} resolved while phase {phase} soaked; the last phase's verification starts from it",
            r.id, r.trigger
        )))
    }

    /// Whether the trigger of phased rollback `id` resolved between its phases (a note on one).
    pub(super) fn resolved_before_last_phase(&self, id: &RollbackId) -> bool {
        self.repo.index().records().iter().filter(|r| &r.id == id && r.phase.is_some_and(|p| !p.is_last())).any(|r| {
            self.repo
                .note_in(crate::git::WATCH_NOTES_REF, &r.commit)
                .is_some_and(|n| n.starts_with(RESOLVED_BETWEEN_PHASES))
        })
    }

    /// `continue <id>`: a person says the phase written is healthy; the next is written now,
    /// whatever is left of its soak.
    pub fn continue_rollback(&mut self, id: &str, actor: Actor<'_>, cli_name: &str) -> Result<String, EngineError> {
        self.person_on_phases(id, actor, cli_name, true, None)
    }

    /// `abort <id>`: a person stops a phased rollback between phases; the rest is proposed.
    pub fn abort_rollback(
        &mut self,
        id: &str,
        actor: Actor<'_>,
        cli_name: &str,
        reason: Option<&str>,
    ) -> Result<String, EngineError> {
        self.person_on_phases(id, actor, cli_name, false, reason)
    }

    fn person_on_phases(
        &mut self,
        id: &str,
        actor: Actor<'_>,
        cli_name: &str,
        go_on: bool,
        reason: Option<&str>,
    ) -> Result<String, EngineError> {
        if RollbackId::parse(id).is_none() {
            return Ok(format!("refused: {} is not a rollback id", crate::domain::ident::shown(id)));
        }
        let (_lock, now) = self.begin_fresh()?;
        let records = self.repo.audit(now)?.records();
        let Some(r) = phase::in_progress(records).into_iter().find(|r| r.id.as_str() == id).cloned() else {
            let why = match records.iter().find(|r| r.id.as_str() == id) {
                Some(r) if phase::halted(records, &r.id).is_some() => {
                    format!("{id} halted already; its rest is a proposal (`approve` or `cancel` it)")
                }
                Some(r) if r.phase.is_some() => format!("{id} has written its last phase"),
                Some(_) => format!("{id} is not a phased rollback"),
                None => format!("no rollback {id} in the audit window"),
            };
            return Ok(format!("refused: {why}"));
        };
        let Some(policy) = self.policy_named(&r.policy).cloned() else {
            return Ok(format!("refused: policy {} of {id} no longer exists", r.policy));
        };
        // The people who may approve a proposal of this policy may say whether it goes on.
        if let Some(p) = actor
            && first_admitting(&policy.chatops.approve, p).is_none()
        {
            return Ok(format!(
                "refused: {p} may not continue or abort rollbacks of policy {} (not in chatops.approve)",
                policy.name()
            ));
        }
        let who = actor_id(actor, cli_name);
        let phase = r.phase.map_or_else(String::new, |p| p.to_string());
        if go_on {
            let why = format!("{who} said continue after phase {phase}");
            return self.next_commit(&r, None, Next::Phase { why: &why }, now);
        }
        let why = match reason {
            Some(reason) => format!("aborted by {who} after phase {phase}: {reason}"),
            None => format!("aborted by {who} after phase {phase}"),
        };
        self.next_commit(&r, None, Next::Remainder { why: &why }, now)
    }
}
