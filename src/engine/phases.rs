//! Phased rollbacks after their first phase: the writer's idle loop writes the next phase once
//! the one before has soaked and the policy's `verify.query` holds; without a query a person
//! says `continue`. A new alert for the target, a failed check, a person's `abort`, a change by
//! anyone else to the target's paths, the point of no return or a policy that no longer has
//! these phases halts it: an empty marker commit on the branch says so (compare-and-swap, so a
//! halt and a next phase never both happen) and the rest is proposed on top of it for review.
//!
//! Nothing is kept in memory: where each rollback stands is read from git (its newest phase
//! commit, which rollbackd tags `phase/...` as it pushes it, when it reached the branch, and
//! the halt marker), so a restart or another replica carries on.

use jiff::Timestamp;
use tracing::{info, warn};

use super::facts::Asking;
use super::{Engine, EngineError, Write};
use crate::domain::actor::Actor;
use crate::domain::answer::{Answer, Refusal};
use crate::domain::audit::AuditRecord;
use crate::domain::decide::Verdict;
use crate::domain::decision::Decision;
use crate::domain::event::Event;
use crate::domain::notice::{Notice, NoticeKind};
use crate::domain::phase::{self, Phase, Stage};
use crate::domain::plan::{KnownGood, KnownGoodSource, Plan, Sha, Strategy, Target};
use crate::domain::policy::{Mode, Policy};
use crate::domain::principal::first_admitting;
use crate::domain::rollback::{Delivery, Outcome, Rollback, RollbackId, RollbackRef};
use crate::domain::verify::Verifying;
use crate::git::{PathSet, PlanRequest, Planned, Try};

/// How a note on a phase commit says its trigger resolved before the last phase.
const RESOLVED_BETWEEN_PHASES: &str = "rollbackd: resolved between phases: ";

/// What a phased rollback's next commit is for.
enum Next {
    /// The next phase with anything to change, pushed to the branch, for this reason.
    Phase(String),
    /// The rest as one proposal: the phased rollback halts, for this reason.
    Remainder(String),
}

/// Who has a phased rollback go on: the idle loop (or an alert halting it), or a person
/// (`continue`, `abort`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum By {
    Itself,
    Person,
}

/// A phased rollback going on: what every try of its next write reads.
#[derive(Clone, Copy)]
struct Going<'a> {
    r: &'a AuditRecord,
    phase: Phase,
    policy: &'a Policy,
    target: &'a Target,
    event: &'a Event,
    known_good: &'a KnownGood,
    by: By,
    now: Timestamp,
}

/// Whether a rollback goes in phases, decided before its first is written.
pub(super) enum FirstPhase {
    Phased(Box<Plan>),
    /// In one commit, and why (said in the decision).
    Whole(String),
}

/// Phased rollbacks that cannot go on by themselves, whose people were told so (once per
/// process).
#[derive(Default)]
pub(super) struct Stuck(std::collections::HashSet<crate::domain::rollback::RollbackId>);

impl Stuck {
    /// Whether `id` is newly stuck (its people not told yet).
    fn first_time(&mut self, id: &crate::domain::rollback::RollbackId) -> bool {
        self.0.insert(id.clone())
    }
}

impl Engine {
    /// `continue <id>`: a person says the phase written is healthy; the next is written now,
    /// whatever is left of its soak.
    pub fn continue_rollback(&mut self, id: &str, actor: &Actor) -> Result<Answer, EngineError> {
        handle_continue(&mut self.ctx, &mut self.stuck, &mut self.verification, id, actor)
    }

    /// `abort <id>`: a person stops a phased rollback between phases; the rest is proposed.
    pub fn abort_rollback(&mut self, id: &str, actor: &Actor, reason: Option<&str>) -> Result<Answer, EngineError> {
        handle_abort(&mut self.ctx, &mut self.stuck, &mut self.verification, id, actor, reason)
    }
}

/// Why the policy's phases no longer fit rollback phase `phase` (another count, another mode).
fn phases_changed(policy: &Policy, target: &Target, phase: Phase) -> Option<String> {
    (target.phases.len() as u32 != phase.of || policy.action.mode != Mode::Direct).then(|| {
        format!(
            "policy {} now has {} phases (mode {}), not the {} this rollback began with",
            policy.name(),
            target.phases.len(),
            policy.action.mode,
            phase.of
        )
    })
}

impl super::Ctx {
    /// The phased rollbacks between phases (see [`phase::in_progress`]), newest phase of each.
    fn in_progress(&self) -> Vec<&AuditRecord> {
        let index = self.repo.index();
        phase::in_progress(index.records(), |id| index.halted(id))
    }

    /// Whether anything on the branch after phase `r` names its rollback: a later phase or a
    /// halt marker, whether or not its tag has arrived yet (tags follow the branch in a push, so
    /// a fetch can see another replica's commit before its tag). Going on stops at either; a
    /// look-alike without a tag only stops it, for a person to `abort` (visible in `status`).
    fn superseded(&self, r: &AuditRecord) -> bool {
        self.repo.index().marked_halted(&r.id, self.untagged_since(), self.clock.now()) || self.went_on(r)
    }

    /// Whether a later phase of `r`'s rollback is on the branch: tagged, or untagged but recent
    /// (its tag may still be on its way). An older untagged one is a look-alike and pins nothing.
    fn went_on(&self, r: &AuditRecord) -> bool {
        let since = self.untagged_since();
        self.repo.index().records().iter().any(|o| {
            o.id == r.id
                && o.delivery == Delivery::Direct
                && o.phase.zip(r.phase).is_some_and(|(o, r)| o.step > r.step)
                && (o.tag.is_some() || (o.at >= since && o.at <= self.clock.now()))
        })
    }

    /// Untagged commits newer than this may be another replica's whose tag is on its way.
    fn untagged_since(&self) -> Timestamp {
        self.clock.now() - jiff::SignedDuration::from_mins(2)
    }

    /// The phased rollback of `target` that answers for it: one between phases, or one that
    /// halted and whose rest is an open proposal (people decide it; nothing else is written
    /// for the target meanwhile).
    pub(super) fn between_phases_of(&self, target: &Target) -> Option<AuditRecord> {
        let of_target = |r: &&AuditRecord| r.service == target.service && r.env == target.env;
        if let Some(r) = self.in_progress().into_iter().find(of_target) {
            return Some(r.clone());
        }
        let index = self.repo.index();
        index
            .records()
            .iter()
            .filter(of_target)
            .find(|r| {
                r.delivery == Delivery::Proposal
                    && !r.cancelled
                    && r.phase.is_some_and(Phase::is_last)
                    && index.halted(&r.id)
            })
            .cloned()
    }

    /// Whether the rollback `plan` (the whole target's) goes in phases, and its first phase with
    /// anything to change: the same bad commits and known-good, that phase's paths.
    pub(super) fn first_phase(&self, policy: &Policy, plan: &Plan, event: &Event) -> Result<FirstPhase, EngineError> {
        if plan.completes.is_some() {
            return Ok(FirstPhase::Whole("it completes another rollback's files: written in one commit".into()));
        }
        // Later phases are planned from git alone: the target must come out the same from
        // what the commit records (trigger, service, env), or they could not be.
        let again = Event::again(
            &event.trigger(),
            &plan.target.service,
            &plan.target.env,
            event.reason(),
            event.actor(),
            event.received_at,
        );
        if policy.resolve_target(&again, &self.rules).ok().as_ref() != Some(&plan.target) {
            return Ok(FirstPhase::Whole(
                "the target uses labels beyond service and env, which later phases could not read back: written in one commit"
                    .into(),
            ));
        }
        let of = plan.target.phases.len() as u32;
        for step in 1..=of {
            let paths = &plan.target.phases[step as usize - 1].paths;
            let phase = Phase::new(step, of).unwrap_or(Phase { step: of, of });
            match self.plan_part(policy, &plan.target, paths, &plan.bad_commits_shas(), phase, &plan.known_good)? {
                // Its first phase with changes is all of it: one commit, no phases to wait for.
                Ok(Some(p)) if p.tree == plan.tree && !phase.is_last() => {
                    return Ok(FirstPhase::Whole(format!(
                        "phase {phase} is the whole rollback here: written in one commit"
                    )));
                }
                Ok(Some(p)) => return Ok(FirstPhase::Phased(Box::new(p))),
                Ok(None) => continue,
                Err(why) => return Ok(FirstPhase::Whole(format!("{why}: written in one commit"))),
            }
        }
        Ok(FirstPhase::Whole("no phase has anything to change".into()))
    }

    /// A plan of `paths` (a phase's, or the whole target's for the rest) that puts them back as
    /// they were at `known_good`, as phase `phase`. Always a restore: a revert would undo whole
    /// commits, beyond the phase. `Ok(Err(why))` when it would write outside the target (or
    /// delete all of it).
    fn plan_part(
        &self,
        policy: &Policy,
        target: &Target,
        paths: &[String],
        bad: &[String],
        phase: Phase,
        known_good: &KnownGood,
    ) -> Result<Result<Option<Plan>, String>, EngineError> {
        let part = Target { paths: paths.to_vec(), ..target.clone() };
        let request = PlanRequest {
            target: &part,
            strategy: Strategy::Restore,
            exact: true,
            to: Some(&known_good.sha.0),
            irreversible: policy.irreversible.as_ref(),
            continues: Some(bad),
            allow_removal: policy.action.allow_removal,
            upto: None,
        };
        let mut plan = match self.repo.plan(&request)? {
            Planned::Ready(plan) => *plan,
            Planned::Noop { .. } | Planned::AlreadyRolledBack { .. } => return Ok(Ok(None)),
            // Not for a part of a plan (`continues`); said here so a change to the planner
            // cannot make a phase write what the whole plan was denied.
            Planned::NothingToGoBackTo { reason, .. } => return Ok(Err(reason)),
        };
        let whole = PathSet::new(&target.paths)
            .map_err(|message| EngineError::Policy { policy: policy.name().to_string(), message })?;
        if let Some(f) = plan.diffstat.iter().find(|f| !whole.matches(&f.path)) {
            return Ok(Err(format!("phase {phase}'s paths reach {} outside the target's paths", f.path)));
        }
        plan.phase = Some(phase);
        plan.known_good = known_good.clone();
        plan.requested_strategy = policy.action.strategy;
        plan.strategy_note = Some("every phase of a phased rollback restores its paths".into());
        Ok(Ok(Some(plan)))
    }

    /// When the phased rollbacks between phases end their soak (see [`handle_due`]).
    pub(super) fn soak_ends(&self, now: Timestamp) -> Vec<Timestamp> {
        let mut ends = Vec::new();
        for r in self.in_progress().into_iter().filter(|r| !self.superseded(r)) {
            let (Some(phase), Ok((policy, target))) = (r.phase, self.target_of(r)) else { continue };
            let soak = self.soak_of(&policy, &target, phase);
            let query = self.verify_query(&policy, &r.service, &r.env);
            if let Stage::Soaking { until } = phase::stage(r.at, soak, query.is_some(), now) {
                ends.push(until);
            }
        }
        ends
    }

    /// How long phase `phase` soaks: its `soak`, and never less than the policy's
    /// `verify.deploy_time` (a check before the phase is deployed would judge the old state).
    fn soak_of(&self, policy: &Policy, target: &Target, phase: Phase) -> crate::support::duration::Duration {
        let soak = target.phases.get(phase.step as usize - 1).map(|p| p.soak).unwrap_or_default();
        policy.verify.as_ref().map_or(soak, |v| soak.max(v.deploy_time))
    }

    /// Why the commits after phase `r` on the branch stop it: a commit by anyone but this
    /// rollback (a person's hotfix, another rollback) changed the target's paths since.
    fn changed_after(&self, r: &AuditRecord, target: &Target) -> Result<Option<String>, EngineError> {
        let paths =
            PathSet::new(&target.paths).map_err(|message| EngineError::Policy { policy: r.policy.clone(), message })?;
        let phase = r.phase.map_or_else(String::new, |p| p.to_string());
        // Its own commits are those its tags name, not whatever carries its id in a message.
        let own = self
            .repo
            .index()
            .records()
            .iter()
            .filter(|o| o.id == r.id && o.tag.is_some())
            .map(|o| o.commit.clone())
            .collect();
        Ok(self
            .repo
            .changed_since(&paths, &r.commit, &own)?
            .map(|c| format!("{} changed {} after phase {phase} was written", c.short(), target.paths.join(", "))))
    }

    /// Where each phased rollback between phases stands, for `status`.
    pub(super) fn phased_views(&self, now: Timestamp) -> Vec<crate::domain::status::PhasedView> {
        self.in_progress()
            .into_iter()
            .filter_map(|r| {
                let phase = r.phase?;
                let mut name = None;
                let waiting_for = match self.target_of(r) {
                    _ if self.superseded(r) => format!(
                        "stopped: a later commit on the branch names it without rollbackd's tag; `abort {}` ends it",
                        r.id
                    ),
                    Err(why) => format!("cannot go on: {why}; a person must act"),
                    Ok((policy, target)) => {
                        name = target.phases.get(phase.step as usize - 1).and_then(|p| p.name.clone());
                        let soak = self.soak_of(&policy, &target, phase);
                        let query = self.verify_query(&policy, &r.service, &r.env).is_some();
                        // Freezes that cannot be read stop it as a freeze would.
                        let stopped = self.stopping(&r.service, &r.env, now).describe().is_some();
                        match phase::stage(r.at, soak, query, now) {
                            _ if phases_changed(&policy, &target, phase).is_some() => {
                                "halts at the next check: its policy's phases changed".into()
                            }
                            Stage::Soaking { until } => format!(
                                "soaking until {until}; then {}",
                                if query { "verify.query decides" } else { "waits for `continue`" }
                            ),
                            Stage::Check if stopped => format!(
                                "paused or frozen: waits for the end of it, or `continue {}` / `abort {}`",
                                r.id, r.id
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

    /// What comes next of `going`, planned: the next phase with anything to change (unless
    /// the rest changed meanwhile or the point of no return is past), or the rest.
    fn plan_next(&mut self, going: &Going<'_>, next: &Next) -> Result<(Next, Option<Plan>), EngineError> {
        let Going { r, phase, policy, target, known_good, now, .. } = *going;
        let mut next = match next {
            Next::Phase(why) => match self.changed_after(r, target)? {
                Some(changed) => Next::Remainder(changed),
                None if phases_changed(policy, target, phase).is_some() => {
                    Next::Remainder(phases_changed(policy, target, phase).unwrap_or_default())
                }
                None => Next::Phase(why.clone()),
            },
            Next::Remainder(why) => Next::Remainder(why.clone()),
        };
        let mut plan = match &next {
            Next::Phase(_) => {
                let mut planned = None;
                for step in phase.step + 1..=phase.of {
                    let paths = &target.phases[step as usize - 1].paths;
                    let p = Phase::new(step, phase.of).unwrap_or(phase.last());
                    match self.plan_part(policy, target, paths, &r.bad_commits, p, known_good)? {
                        Ok(Some(plan)) => {
                            planned = Some(plan);
                            break;
                        }
                        Ok(None) => continue,
                        Err(why) => {
                            next = Next::Remainder(why);
                            break;
                        }
                    }
                }
                planned
            }
            Next::Remainder(_) => None,
        };
        // Past the point of no return, nothing more goes to the branch by itself or by a
        // `continue`: the rest is for review.
        if let (Next::Phase(_), Some(p)) = (&next, &plan) {
            let checks = crate::domain::guards::evaluate(
                &policy.guards,
                policy.irreversible.is_some(),
                p,
                self.repo.index().records(),
                now,
            );
            if let Some(g) = checks.iter().find(|g| !g.passed && g.guard == crate::domain::guards::POINT_OF_NO_RETURN) {
                next = Next::Remainder(format!("past the point of no return: {}", g.detail));
                plan = None;
            }
        }
        Ok((next, plan))
    }

    /// The empty commit on `head` that says rollback `rref` halted (`why`, then the
    /// `Rollback-Halted` trailers), and its `halted/...` tag: written, not pushed.
    pub(super) fn halt_marker(
        &self,
        head: &Sha,
        rref: &RollbackRef,
        why: &str,
        now: Timestamp,
    ) -> Result<(Sha, Sha), EngineError> {
        let halt = crate::git::Halt { id: rref.id.to_string(), service: rref.service.clone(), env: rref.env.clone() };
        let (id, service, env) = (&rref.id, &rref.service, &rref.env);
        let text = format!("Halt rollback {id} of {service}/{env}\n\n{why}\n\n{}", halt.render());
        let marker = self.repo.create_commit(head, &self.repo.tree_of(head)?, &text, now)?;
        let tag = self.repo.create_tag(
            &rref.halted(),
            &marker,
            &format!("Halted rollback {id} of {service}/{env}\n"),
            now,
        )?;
        Ok((marker, tag))
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
        let Some(newest) = self.in_progress().into_iter().find(|o| o.id == r.id).cloned() else {
            return Ok(None);
        };
        let phase = newest.phase.map_or_else(String::new, |p| p.to_string());
        // A resolve dated before the first phase, or in the future, is not the phases' doing.
        let first = self.repo.index().records().iter().filter(|o| o.id == r.id).map(|o| o.at).min().unwrap_or(r.at);
        if at < first || at > now + jiff::SignedDuration::from_mins(5) {
            return Ok(Some(format!("{}: {} resolved at {at}, outside {first} .. now: not counted", r.id, r.trigger)));
        }
        let text = format!("{RESOLVED_BETWEEN_PHASES}{} at {at}\n", r.trigger);
        self.repo.write_note(crate::git::WATCH_NOTES_REF, &newest.commit, &text, now, false)?;
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
}

/// The phases written already leave nothing for the rest to change: the newest is the
/// rollback's end. It is tagged as the rollback and verified from now.
pub(super) fn complete(
    ctx: &mut super::Ctx,
    verification: &mut super::verify::Verification,
    r: &AuditRecord,
    policy: &Policy,
    now: Timestamp,
) -> Result<String, EngineError> {
    let name = RollbackRef::new(&r.service, &r.env, &r.id).name();
    let message = format!(
        "Rollback {} of {}/{}: complete after phase {}, the rest changes nothing\n",
        r.id,
        r.service,
        r.env,
        r.phase.map_or_else(String::new, |p| p.to_string())
    );
    ctx.repo.tag_commit(&name, &r.commit.0, &message, now)?;
    let rollback = Rollback {
        id: r.id.clone(),
        commit: r.commit.clone(),
        delivery: Delivery::Direct,
        branch: r.branch.clone(),
        tag: Some(name),
        push_retries: 0,
        pr_url: None,
        phase: r.phase.map(Phase::last),
        because: Vec::new(),
    };
    super::verify::start_watch(
        ctx,
        verification,
        policy,
        &rollback,
        &Verifying { service: &r.service, env: &r.env, trigger: &r.trigger, at: now, step: 0 },
        None,
    );
    Ok(format!("{}: complete; the rest changes nothing (tagged {})", r.id, rollback.tag.as_deref().unwrap_or("-")))
}

/// Tells the route what was written, and verifies a last phase.
pub(super) fn after_phase(
    ctx: &mut super::Ctx,
    verification: &mut super::verify::Verification,
    r: &AuditRecord,
    policy: &Policy,
    plan: &Plan,
    rollback: &Rollback,
    now: Timestamp,
) -> String {
    let phase = plan.phase.unwrap_or(Phase { step: 1, of: 1 });
    let after = r.phase.map_or_else(String::new, |p| p.to_string());
    let (kind, said) = match &plan.halted {
        Some(why) => (
            NoticeKind::Halted,
            format!("{}: halted after phase {after}: {why}; the rest is proposed as {}", r.id, rollback.branch),
        ),
        None => (
            NoticeKind::Phase,
            format!(
                "{}: phase {phase} pushed as {}{}",
                r.id,
                rollback.commit.short(),
                if phase.is_last() { " (the last: the rollback is complete)" } else { "" }
            ),
        ),
    };
    info!(rollback_id = %r.id, phase = %phase, "{said}");
    crate::metrics::phase(if plan.halted.is_some() { "halted" } else { "pushed" });
    let mut notice = Notice::about(kind, &r.service, &r.env, &r.policy, &r.trigger, said.clone(), now);
    notice.rollback_id = Some(r.id.clone());
    notice.commit = Some(rollback.commit.0.clone());
    notice.actor = r.actor.clone();
    notice.known_good = Some(r.known_good.clone());
    notice.artifacts = plan.artifacts.clone();
    super::verify::tell(ctx, verification, &notice);
    if phase.is_last() && rollback.delivery == Delivery::Direct {
        super::verify::start_watch(
            ctx,
            verification,
            policy,
            rollback,
            &Verifying { service: &r.service, env: &r.env, trigger: &r.trigger, at: now, step: 0 },
            None,
        );
    }
    said
}

/// Ends a phased rollback that cannot go on, proposing nothing: a halt marker (tagged, and
/// compare-and-swap like any halt) frees its target for the next alert or request.
pub(super) fn end(
    ctx: &mut super::Ctx,
    verification: &mut super::verify::Verification,
    r: &AuditRecord,
    why: &str,
    now: Timestamp,
) -> Result<String, EngineError> {
    let phase = r.phase.map_or_else(String::new, |p| p.to_string());
    let rref = RollbackRef::new(&r.service, &r.env, &r.id);
    ctx.retry_on_moved(verification, |ctx, verification, _| {
        if !ctx.in_progress().iter().any(|o| o.id == r.id) || ctx.went_on(r) {
            return Ok(Try::Done(format!("{}: already ended or followed up", r.id)));
        }
        let head = ctx.repo.head()?;
        let said = format!(
            "{}\nNothing more of it is proposed; roll back by hand if needed (to {}).",
            crate::support::text::quoted(why),
            r.known_good
        );
        let (marker, tag) = ctx.halt_marker(&head, &rref, &said, now)?;
        Ok(match ctx.repo.publish_halt(&marker, &head, (&rref.halted(), &tag), None, None)? {
            crate::git::PushResult::Pushed => {
                let said = format!("{}: ended after phase {phase}: {why}; nothing is proposed", r.id);
                let mut notice =
                    Notice::about(NoticeKind::Halted, &r.service, &r.env, &r.policy, &r.trigger, said.clone(), now);
                notice.rollback_id = Some(r.id.clone());
                notice.commit = Some(marker.0.clone());
                super::verify::tell(ctx, verification, &notice);
                crate::metrics::phase("halted");
                Try::Done(said)
            }
            crate::git::PushResult::Moved => Try::Moved,
        })
    })
}

/// A phased rollback that cannot go on by itself, nor be proposed (nothing to plan the rest
/// from): people are told once per process; what to say, the first time only.
pub(super) fn cannot_go_on(
    ctx: &mut super::Ctx,
    stuck: &mut Stuck,
    verification: &mut super::verify::Verification,
    r: &AuditRecord,
    why: &str,
    now: Timestamp,
) -> Option<String> {
    let phase = r.phase.map_or_else(String::new, |p| p.to_string());
    let said = format!(
        "{}: cannot go on after phase {phase}: {why}; a person must act: `abort {}` ends it, then roll back by hand with `--to {}`",
        r.id, r.id, r.known_good
    );
    if !stuck.first_time(&r.id) {
        return None;
    }
    warn!(rollback_id = %r.id, "{said}");
    let mut notice = Notice::about(NoticeKind::Halted, &r.service, &r.env, &r.policy, &r.trigger, said.clone(), now);
    notice.rollback_id = Some(r.id.clone());
    notice.commit = Some(r.commit.0.clone());
    super::verify::tell(ctx, verification, &notice);
    Some(said)
}

/// One try of [`next_commit`]: `Moved` when the branch moved under the write.
fn next_commit_try(
    ctx: &mut super::Ctx,
    stuck: &mut Stuck,
    verification: &mut super::verify::Verification,
    going: &Going<'_>,
    next: &Next,
    retries: u32,
) -> Result<Try<Answer>, EngineError> {
    let Going { r, phase, policy, target, event, known_good, by, now } = *going;
    // Another replica (or this one, before a restart) may have gone on already.
    if !ctx.in_progress().iter().any(|o| o.id == r.id && o.phase == r.phase) || ctx.went_on(r) {
        return Ok(Try::Done(Answer::done(format!("{}: phase {phase} was already followed up", r.id))));
    }
    // A marker stops it going on; a halt (an abort) still writes its own, tagged.
    if matches!(next, Next::Phase(_)) && ctx.repo.index().marked_halted(&r.id, ctx.untagged_since(), ctx.clock.now()) {
        return Ok(Try::Done(Answer::done(format!(
            "{}: a halt marker for it is on the branch (another replica halting it, or a commit saying so); `abort {}` ends it",
            r.id, r.id
        ))));
    }
    let (mut next, mut plan) = ctx.plan_next(going, next)?;
    // The next phase is decided like any write: every guard (this rollback's own
    // phases do not count against it), the freezes and the pause, read fail-closed,
    // and who asked (a person's `continue` goes through a freeze, as their request
    // would; the idle loop does not).
    let mut decided = Decision::for_event(event);
    if let (Next::Phase(_), Some(p)) = (&next, &plan) {
        let asking = Asking {
            policy,
            mode: policy.action.mode,
            human: by == By::Person,
            emergency: r.emergency,
            dry_run: false,
            id: &r.id,
            open_proposal: None,
        };
        match ctx.decide_write(&asking, Some(p), (&r.service, &r.env), now, &mut decided) {
            Verdict::Deliver(Delivery::Direct) => {}
            // A freeze, the pause, or freezes that cannot be read: it waits for the end
            // of it (`status` says so), as it does before the check.
            _ if decided.frozen.is_some() => {
                info!(rollback_id = %r.id, "the next phase waits: {}", decided.frozen.as_deref().unwrap_or(""));
                return Ok(Try::Done(Answer::done(String::new())));
            }
            // A guard failed and the policy proposes instead: the rest is proposed.
            Verdict::Deliver(Delivery::Proposal) => {
                next = Next::Remainder(decided.notes.join("; "));
                plan = None;
            }
            Verdict::Settled(outcome) | Verdict::SameAsOpenProposal(outcome) => {
                let why = format!("the next phase is not written: {}", outcome.summary());
                let said = match by {
                    By::Person => format!("{}: cannot go on after phase {phase}: {why}", r.id),
                    By::Itself => cannot_go_on(ctx, stuck, verification, r, &why, now).unwrap_or_default(),
                };
                return Ok(Try::Done(Answer::refused(Refusal::CannotGoOn, said)));
            }
        }
    }
    let (plan, delivery) = match (&next, plan) {
        (Next::Phase(why), Some(mut plan)) => {
            plan.went_on = Some(why.clone());
            (plan, Delivery::Direct)
        }
        (Next::Phase(_), None) => {
            return complete(ctx, verification, r, policy, now).map(|said| Try::Done(Answer::done(said)));
        }
        (Next::Remainder(why), _) => {
            match ctx.plan_part(policy, target, &target.paths, &r.bad_commits, phase.last(), known_good)? {
                Ok(Some(mut plan)) => {
                    plan.halted = Some(why.clone());
                    (plan, Delivery::Proposal)
                }
                Ok(None) => {
                    return complete(ctx, verification, r, policy, now).map(|said| Try::Done(Answer::done(said)));
                }
                Err(e) => {
                    let said = cannot_go_on(ctx, stuck, verification, r, &e, now).unwrap_or_default();
                    return Ok(Try::Done(Answer::refused(Refusal::CannotGoOn, said)));
                }
            }
        }
    };
    let mut decision = Decision::for_event(event);
    decision.policy = Some(policy.name().to_string());
    decision.mode = Some(Mode::Direct);
    decision.target = Some(plan.target.clone());
    decision.notes.extend(plan.went_on.clone().or_else(|| plan.halted.clone()));
    decision.notes.append(&mut decided.notes);
    decision.guards = decided.guards;
    let w = Write { event, policy, plan: &plan, id: &r.id, delivery, retries, now, emergency: r.emergency };
    Ok(match ctx.write(&w, &mut decision)? {
        Some(rollback) => Try::Done(Answer::done(after_phase(ctx, verification, r, policy, &plan, &rollback, now))),
        None => Try::Moved,
    })
}

fn phase_due(
    ctx: &mut super::Ctx,
    stuck: &mut Stuck,
    verification: &mut super::verify::Verification,
    r: &AuditRecord,
    now: Timestamp,
) -> Result<Option<String>, EngineError> {
    let Some(phase) = r.phase else { return Ok(None) };
    if ctx.superseded(r) {
        return Ok(None);
    }
    let (policy, target) = match ctx.target_of(r) {
        Ok(found) => found,
        // Said once; nothing to plan the rest from.
        Err(why) => return Ok(cannot_go_on(ctx, stuck, verification, r, &why, now)),
    };
    if let Some(why) = phases_changed(&policy, &target, phase) {
        return next_commit(ctx, stuck, verification, r, Next::Remainder(why), By::Itself, now)
            .map(|a| Some(a.into_why()));
    }
    // A foreign change halts it now, not only when the soak ends.
    if let Some(why) = ctx.changed_after(r, &target)? {
        return next_commit(ctx, stuck, verification, r, Next::Remainder(why), By::Itself, now)
            .map(|a| Some(a.into_why()));
    }
    let soak = ctx.soak_of(&policy, &target, phase);
    let query = ctx.verify_query(&policy, &r.service, &r.env);
    let Stage::Check = phase::stage(r.at, soak, query.is_some(), now) else { return Ok(None) };
    // The kill switch and freezes stop what rollbackd does on its own (and freezes that
    // cannot be read count as both); a person's `continue` still goes on.
    if ctx.stopping(&r.service, &r.env, now).describe().is_some() {
        return Ok(None);
    }
    let Some(q) = query else { return Ok(None) };
    let answer = super::verify::ask_prometheus(verification, std::slice::from_ref(&q), now)
        .remove(&q)
        .unwrap_or_else(|| Err("not asked".into()));
    match answer.map(|(holds, _)| holds) {
        Ok(true) => {
            let why = format!("phase {phase} soaked {soak} and verify.query holds");
            next_commit(ctx, stuck, verification, r, Next::Phase(why), By::Itself, now).map(|a| Some(a.into_why()))
        }
        Ok(false) => {
            let why = format!("verify.query does not hold after phase {phase} soaked {soak}");
            next_commit(ctx, stuck, verification, r, Next::Remainder(why), By::Itself, now).map(|a| Some(a.into_why()))
        }
        Err(e) => {
            warn!(rollback_id = %r.id, error = %e, "verify.query could not be evaluated; the next phase waits");
            Ok(None)
        }
    }
}

/// Writes what comes after `r` (the newest phase on the branch): the next phase with
/// anything to change, or the rest as a proposal. Plans again when the branch moved, and
/// stops when someone else went on meanwhile. Every attempt looks for a change by anyone
/// else first, and past the point of no return nothing more is pushed.
/// A phase that cannot be written answers [`Refusal::CannotGoOn`] (for the idle loop, its
/// reason is all that is said).
fn next_commit(
    ctx: &mut super::Ctx,
    stuck: &mut Stuck,
    verification: &mut super::verify::Verification,
    r: &AuditRecord,
    next: Next,
    by: By,
    now: Timestamp,
) -> Result<Answer, EngineError> {
    let Some(phase) = r.phase else { return Ok(Answer::done(format!("{} is not a phased rollback", r.id))) };
    let (policy, target) = match ctx.target_of(r) {
        Ok(found) => found,
        Err(why) => {
            let said = cannot_go_on(ctx, stuck, verification, r, &why, now)
                .unwrap_or_else(|| format!("{}: cannot go on", r.id));
            return Ok(Answer::refused(Refusal::CannotGoOn, said));
        }
    };
    let event = Event::of_record(r, now);
    let known_good =
        KnownGood { sha: Sha(r.known_good.clone()), source: KnownGoodSource::Phases { id: r.id.to_string() } };
    let going = Going { r, phase, policy: &policy, target: &target, event: &event, known_good: &known_good, by, now };
    ctx.retry_on_moved(&mut (stuck, verification), |ctx, (stuck, verification), retries| {
        next_commit_try(ctx, stuck, verification, &going, &next, retries)
    })
}

fn person_on_phases(
    ctx: &mut super::Ctx,
    stuck: &mut Stuck,
    verification: &mut super::verify::Verification,
    id: &str,
    asker: &Actor,
    go_on: bool,
    reason: Option<&str>,
) -> Result<Answer, EngineError> {
    if RollbackId::parse(id).is_none() {
        return Ok(Answer::refused(
            Refusal::BadInput,
            format!("{} is not a rollback id", crate::domain::ident::shown(id)),
        ));
    }
    let actor = asker.principal();
    let (_lock, now) = ctx.begin_fresh()?;
    ctx.repo.audit(now)?;
    let Some(r) = ctx.in_progress().into_iter().find(|r| r.id.as_str() == id).cloned() else {
        let index = ctx.repo.index();
        let records = index.records();
        let why = match records.iter().find(|r| r.id.as_str() == id) {
            Some(r) if index.halted(&r.id) || phase::halted(records, &r.id).is_some() => {
                format!("{id} halted already; its rest is a proposal (`approve` or `cancel` it)")
            }
            Some(r) if r.phase.is_some() => format!("{id} has written its last phase"),
            Some(_) => format!("{id} is not a phased rollback"),
            None => format!("no rollback {id} in the audit window"),
        };
        return Ok(Answer::refused(Refusal::NotFound, why));
    };
    let policy = ctx.policy_named(&r.policy).cloned();
    // The people who may approve a proposal of this policy may say whether it goes on; with
    // the policy gone, only an operator at the CLI.
    if let (Some(p), None) = (actor, &policy) {
        return Ok(Answer::refused(
            Refusal::NotFound,
            format!("policy {} of {id} no longer exists; {p} cannot be checked against it", r.policy),
        ));
    }
    if let (Some(p), Some(policy)) = (actor, &policy)
        && first_admitting(&policy.chatops.approve, p).is_none()
    {
        return Ok(Answer::refused(
            Refusal::NotAllowed,
            format!("{p} may not continue or abort rollbacks of policy {} (not in chatops.approve)", policy.name()),
        ));
    }
    let who = asker.id();
    let phase = r.phase.map_or_else(String::new, |p| p.to_string());
    // Nothing to plan the rest from: abort ends it (so the target is free again), continue
    // cannot.
    if let Err(why) = ctx.target_of(&r) {
        if go_on {
            return Ok(Answer::refused(
                Refusal::CannotGoOn,
                format!("{}: cannot go on after phase {phase}: {why}; `abort {id}` ends it", r.id),
            ));
        }
        return end(ctx, verification, &r, &format!("aborted by {who}: {why}"), now).map(Answer::done);
    }
    let next = if go_on {
        Next::Phase(format!("{who} said continue after phase {phase}"))
    } else {
        Next::Remainder(match reason {
            Some(reason) => format!("aborted by {who}: {reason}"),
            None => format!("aborted by {who}"),
        })
    };
    next_commit(ctx, stuck, verification, &r, next, By::Person, now)
}

/// An event about a target whose phased rollback is between phases. A person asking again
/// is told how to go on; an alert that began before the phase was written is the incident
/// the phase is answering; a newer one halts it, and the rest is proposed.
pub(super) fn answer_between_phases(
    ctx: &mut super::Ctx,
    stuck: &mut Stuck,
    verification: &mut super::verify::Verification,
    r: &AuditRecord,
    event: &Event,
    now: Timestamp,
) -> Result<Outcome, EngineError> {
    let phase = r.phase.unwrap_or(Phase { step: 1, of: 1 });
    let duplicate = |reason: String| Outcome::Duplicate { rollback_id: r.id.clone(), commit: r.commit.clone(), reason };
    if r.delivery == Delivery::Proposal {
        return Ok(duplicate(format!(
            "{} halted; the rest of it is proposed as {} for people to decide (`approve {}` or `cancel {}`)",
            r.id, r.branch, r.id, r.id
        )));
    }
    if event.is_human_request() {
        return Ok(duplicate(format!(
            "{} is between phases ({phase} written at {}): `continue {}` writes the next now, `abort {}` stops it",
            r.id, r.at, r.id, r.id
        )));
    }
    let began = event.started_at.unwrap_or(event.received_at);
    if began <= r.at {
        return Ok(duplicate(format!(
            "{} began at {began}, before phase {phase} of {} was written: its soak and check decide what follows",
            event.trigger(),
            r.id
        )));
    }
    let why = format!("{} fired at {began}, while phase {phase} soaked", event.trigger());
    let said = next_commit(ctx, stuck, verification, r, Next::Remainder(why), By::Itself, now)?.into_why();
    Ok(duplicate(said))
}

/// Advances the phased rollbacks that are due. Called by the writer when idle.
pub(super) fn handle_due(
    ctx: &mut super::Ctx,
    stuck: &mut Stuck,
    verification: &mut super::verify::Verification,
    now: Timestamp,
) -> Vec<String> {
    let records: Vec<AuditRecord> = ctx.in_progress().into_iter().cloned().collect();
    let mut said = Vec::new();
    for r in records {
        match phase_due(ctx, stuck, verification, &r, now) {
            // Nothing to say: it waits (a freeze, the pause), or people were told already.
            Ok(Some(s)) if !s.is_empty() => said.push(s),
            Ok(_) => {}
            Err(e) => warn!(rollback_id = %r.id, error = %e, "the phased rollback could not go on; retrying later"),
        }
    }
    said
}

/// `continue <id>`: a person says the phase written is healthy; the next is written now,
/// whatever is left of its soak.
pub(super) fn handle_continue(
    ctx: &mut super::Ctx,
    stuck: &mut Stuck,
    verification: &mut super::verify::Verification,
    id: &str,
    actor: &Actor,
) -> Result<Answer, EngineError> {
    person_on_phases(ctx, stuck, verification, id, actor, true, None)
}

/// `abort <id>`: a person stops a phased rollback between phases; the rest is proposed.
pub(super) fn handle_abort(
    ctx: &mut super::Ctx,
    stuck: &mut Stuck,
    verification: &mut super::verify::Verification,
    id: &str,
    actor: &Actor,
    reason: Option<&str>,
) -> Result<Answer, EngineError> {
    person_on_phases(ctx, stuck, verification, id, actor, false, reason)
}
