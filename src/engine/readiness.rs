//! Before the incident: `rollbackd readiness` (would an automatic rollback of each service
//! work now, and what would it be) and `rollbackd plan` (what rollbackd would do if a change
//! went bad after merge). Neither writes anything.
//!
//! Readiness is the dry run of an alert for each target the policies cover: the same
//! [`Engine::prepare_selected`] a live alert goes through (plan, guards, freezes, decision),
//! read into a [`Readiness`] row; then the holds and, off this thread, the registries. A plan
//! of a change is the planner asked at the change's head, for every target the change touches.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use tracing::warn;

use super::{Engine, EngineError, Options, Prepared};
use crate::domain::change_plan::ChangePlan;
use crate::domain::decision::Decision;
use crate::domain::event::{Event, Source};
use crate::domain::ident::InputRules;
use crate::domain::matcher::MatchOp;
use crate::domain::plan::{Sha, Target};
use crate::domain::policy::{Mode, Policy, PolicySet};
use crate::domain::readiness::{Readiness, Reason, expand};
use crate::forge::drill_ci::DrillCi;
use crate::git::{GitError, PathSet, PlanRequest, Planned, Survey};
use crate::registry::{Presence, Registries};

/// How often the server works readiness out again when nothing changed (guards and the point
/// of no return move with the clock).
const RECOMPUTE_EVERY: Duration = Duration::from_secs(60);

/// The engine's readiness state: the registries it asks, and the last rows it worked out.
#[derive(Debug)]
pub(super) struct State {
    registries: Registries,
    /// What the repo's CI said of each drill's head, asked off the writer.
    drill_ci: DrillCi,
    /// (branch head, freezes ref, policy generation, drill CI answers' generation) the rows
    /// were worked out for, and when.
    last: Option<(String, Instant)>,
    rows: Vec<Readiness>,
}

impl State {
    pub(super) fn new(config: &crate::config::Config, forge: std::sync::Arc<dyn crate::forge::Forge>) -> Self {
        State {
            registries: Registries::new(&config.registries),
            drill_ci: DrillCi::new(forge),
            last: None,
            rows: Vec::new(),
        }
    }
}

/// A target a rolling-back policy covers, with the labels that name it.
struct Covered {
    policy: Policy,
    target: Target,
    labels: BTreeMap<String, String>,
}

impl Engine {
    /// `rollbackd readiness [SERVICE] [--env ENV]`: fetched if stale, every covered target (or
    /// those named), each asked of the registries for at most `wait`.
    pub fn readiness(
        &mut self,
        service: Option<&str>,
        env: Option<&str>,
        wait: Duration,
    ) -> Result<Vec<Readiness>, EngineError> {
        let _lock = self.ctx.begin()?;
        self.ctx.fetch_if_stale()?;
        self.ctx.need_policies()?;
        let mut rows = self.readiness_rows(service, env, &|| false)?.unwrap_or_default();
        ask_registries(&self.readiness, &mut rows, wait);
        self.ask_drill_ci(&mut rows, wait);
        Ok(rows)
    }

    /// The writer, after a fetch: works readiness out again when the branch, the freezes or the
    /// policies changed, or a minute passed; the registries' newest answers only (it never
    /// waits on them). Sets `rollbackd_rollback_ready`. `busy` is asked between targets: when
    /// an event is waiting, the writer stops here (keeping the last rows) and tries again at
    /// the next quiet moment, so readiness never delays a rollback by more than one target.
    pub fn refresh_readiness(&mut self, busy: &dyn Fn() -> bool) {
        let Ok(_lock) = self.ctx.begin() else { return };
        // Fresh within `git.fetch_freshness`, so the publish that follows does not fetch again;
        // a failing origin is said by that publish.
        if self.ctx.fetch_if_stale().is_err() || self.ctx.need_policies().is_err() {
            return;
        }
        // A drill's CI verdict arriving (asked off this thread) is a change too: ask again
        // about the drills of the last rows whose answers are stale, for the next refresh.
        if self.readiness.drill_ci.asks() {
            let drilled: Vec<String> = (self.readiness.rows.iter())
                .filter_map(|r| self.drill_head(&r.service, &r.env).map(|d| d.commit.0))
                .collect();
            self.readiness.drill_ci.ask_all(&drilled, Duration::ZERO);
        }
        let key = format!(
            "{} {} {} {}",
            self.ctx.repo.head().map(|h| h.0).unwrap_or_default(),
            self.ctx.repo.ref_id(crate::git::FREEZES_REF).unwrap_or_default(),
            self.ctx.policy_generation,
            self.readiness.drill_ci.generation()
        );
        if self.readiness.last.as_ref().is_some_and(|(k, at)| *k == key && at.elapsed() < RECOMPUTE_EVERY) {
            return;
        }
        let rows = match self.readiness_rows(None, None, busy) {
            Ok(Some(rows)) => rows,
            Ok(None) => return,
            Err(e) => {
                warn!(error = %e, "working out readiness failed; trying again after the next fetch");
                return;
            }
        };
        let mut rows = rows;
        ask_registries(&self.readiness, &mut rows, Duration::ZERO);
        self.ask_drill_ci(&mut rows, Duration::ZERO);
        let name = self.ctx.config.member.clone();
        let now: BTreeSet<(&str, &str)> = rows.iter().map(|r| (r.service.as_str(), r.env.as_str())).collect();
        let gone: Vec<(String, String)> = (self.readiness.rows.iter())
            .filter(|r| !now.contains(&(r.service.as_str(), r.env.as_str())))
            .map(|r| (r.service.clone(), r.env.clone()))
            .collect();
        crate::metrics::rollback_ready(name.as_deref(), &gone, &rows);
        self.readiness.rows = rows;
        self.readiness.last = Some((key, Instant::now()));
    }

    /// The rows for the covered targets (those named); `None` when `busy` said stop.
    fn readiness_rows(
        &mut self,
        service: Option<&str>,
        env: Option<&str>,
        busy: &dyn Fn() -> bool,
    ) -> Result<Option<Vec<Readiness>>, EngineError> {
        let now = self.ctx.clock.now();
        self.ctx.repo.audit(now)?;
        let head = self.ctx.repo.head()?;
        let covered = covered(&self.ctx.policies, &self.ctx.rules, &self.ctx.repo.survey()?, &head);
        let holds = super::holds::current(&mut self.ctx, &mut self.held_changes)?;
        let mut rows = Vec::new();
        for c in covered {
            if service.is_some_and(|s| s != c.target.service) || env.is_some_and(|e| e != c.target.env) {
                continue;
            }
            if busy() {
                return Ok(None);
            }
            rows.push(self.readiness_of(c, &holds));
        }
        rows.sort_by(|a, b| (&a.service, &a.env).cmp(&(&b.service, &b.env)));
        if rows.is_empty()
            && let Some(service) = service
        {
            rows.push(Readiness::no_policy(service, env.unwrap_or("*")));
        }
        Ok(Some(rows))
    }

    /// One target: the dry run of an alert for it, read into a row.
    fn readiness_of(&mut self, c: Covered, holds: &[crate::domain::hold::Hold]) -> Readiness {
        let Covered { policy, target, labels } = c;
        let mut row = Readiness::new(&target.service, &target.env, Some(policy.name()), Some(policy.action.mode));
        let event = probe_event(&policy, Some(&target), labels, self.ctx.clock.now());
        let mut decision = Decision::for_event(&event);
        decision.policy = Some(policy.name().to_string());
        decision.mode = Some(policy.action.mode);
        decision.target = Some(target.clone());
        let opts = Options { dry_run: true, ..Options::default() };
        match self.prepare_selected(&event, &opts, policy, target, decision, &tracing::Span::none()) {
            Ok(Prepared::Done(report)) => {
                if let Some(held) = report.plan.as_ref().and_then(|p| held(&p.artifacts, holds)) {
                    row.not_ready(Reason::Held(held));
                }
                row.read_report(&report);
            }
            // A dry run never gets this far; if it did, what it planned is what it would write.
            Ok(Prepared::Ready(ready)) => row.planned(&ready.plan),
            Err(EngineError::Git(e @ GitError::NoKnownGood { .. })) => {
                row.not_ready(Reason::NothingToGoBackTo(e.to_string()))
            }
            Err(EngineError::Git(e @ GitError::BrokenResult { .. })) => {
                row.not_ready(Reason::InvalidResult(e.to_string()))
            }
            Err(e) => row.not_ready(Reason::Refused(e.to_string())),
        }
        row
    }

    /// Joins each row's latest drill and what the repo's CI said of its head, asked of the
    /// forge for at most `wait` (the writer: none, it takes the last answer and the next
    /// refresh the new one). A verdict not in yet leaves `ci` null: not known is no failure.
    fn ask_drill_ci(&self, rows: &mut [Readiness], wait: Duration) {
        let drills: Vec<Option<crate::domain::drill::DrillResult>> =
            rows.iter().map(|r| self.drill_head(&r.service, &r.env)).collect();
        let commits: Vec<String> = drills.iter().flatten().map(|d| d.commit.0.clone()).collect();
        let answers = self.readiness.drill_ci.ask_all(&commits, wait);
        for (row, drill) in rows.iter_mut().zip(drills) {
            if let Some(mut drill) = drill {
                drill.ci = answers.get(&drill.commit.0).cloned();
                row.drilled(drill);
            }
        }
    }

    /// `rollbackd plan <rev> [--base <rev>]`: for each target the change touches, what
    /// rollbackd would do if it went bad after merge. `base` defaults to where `rev` forked
    /// from the branch (its parent, when it is on the branch). Writes nothing.
    pub fn plan_change(&mut self, rev: &str, base: Option<&str>) -> Result<Vec<ChangePlan>, EngineError> {
        let _lock = self.ctx.begin()?;
        self.ctx.fetch_if_stale()?;
        self.ctx.need_policies()?;
        self.ctx.repo.audit(self.ctx.clock.now())?;
        let survey = self.ctx.repo.survey()?;
        let rev = survey.resolve(rev)?;
        let base = match base {
            Some(b) => survey.resolve(b)?,
            None => default_base(&survey, &rev)?,
        };
        Ok(plan_change(&survey, &self.ctx.policies, &self.ctx.rules, &rev, &base))
    }

    /// What a pull request's gate needs to plan the change on its own thread.
    pub(crate) fn change_planner(&self) -> ChangePlanner {
        ChangePlanner {
            policies: self.ctx.policies.clone(),
            rules: self.ctx.rules.clone(),
            trusted: self.ctx.repo.index().trusted_commits().clone(),
            max_commits: self.ctx.config.audit.max_commits,
        }
    }
}

/// The artifacts of a rollback that bring back a held one, said; `None` when none does.
fn held(artifacts: &[crate::domain::artifacts::ArtifactChange], holds: &[crate::domain::hold::Hold]) -> Option<String> {
    let found: Vec<String> = crate::domain::hold::violations(holds, artifacts)
        .into_iter()
        .map(|(h, c)| {
            format!(
                "{}: {} would go back to {}, held since rollback {} (`rollbackd release {} --env {}` lifts it)",
                c.path, h.name, h.value, h.rollback_id, h.service, h.env
            )
        })
        .collect();
    (!found.is_empty()).then(|| found.join("; "))
}

/// The parent of `rev` when it is on the branch, else where it forked from it.
fn default_base(survey: &Survey<'_>, rev: &Sha) -> Result<Sha, EngineError> {
    let fork = survey.fork_point(rev)?;
    if fork == *rev {
        return Ok(survey.resolve(&format!("{}^1", rev.0))?);
    }
    Ok(fork)
}

/// The policies and rules a pull request's gate plans with, off the writer.
#[derive(Clone)]
pub(crate) struct ChangePlanner {
    policies: PolicySet,
    rules: InputRules,
    trusted: std::collections::HashSet<git2::Oid>,
    max_commits: usize,
}

impl ChangePlanner {
    /// The plan of the change from `base` to `head`, read through `reader`.
    pub(crate) fn plan(&self, reader: &crate::git::PullReader, head: &Sha, base: &Sha) -> Vec<ChangePlan> {
        let survey = reader.survey(&self.trusted, self.max_commits);
        plan_change(&survey, &self.policies, &self.rules, head, base)
    }
}

/// At most this many targets of one change are planned.
const MAX_PLANNED: usize = 50;

/// For each target the change from `base` to `rev` touches (expanded over the tree at `rev`,
/// so a service the change adds is covered too), the rollback the planner would make with
/// `rev` as the branch head.
fn plan_change(
    survey: &Survey<'_>,
    policies: &PolicySet,
    rules: &InputRules,
    rev: &Sha,
    base: &Sha,
) -> Vec<ChangePlan> {
    let mut out = Vec::new();
    for c in covered(policies, rules, survey, rev) {
        let Ok(set) = PathSet::new(&c.target.paths) else { continue };
        let touched = match survey.changed(&set, base, rev) {
            Ok(t) if !t.is_empty() => t,
            Ok(_) => continue,
            Err(e) => {
                warn!(error = %e, service = %c.target.service, "cannot compare the change");
                continue;
            }
        };
        let p = &c.policy;
        let mut plan = ChangePlan::new(&c.target.service, &c.target.env, p.name(), p.action.mode, touched, &p.guards);
        // A change's author chooses how many services it touches; the planner's cost is per
        // target. The rest are named, not planned.
        if out.len() >= MAX_PLANNED {
            plan.unplanned = Some(format!("not planned: the change touches more than {MAX_PLANNED} service/env"));
            out.push(plan);
            continue;
        }
        let request = PlanRequest {
            target: &c.target,
            strategy: p.action.strategy,
            exact: p.action.exact,
            to: None,
            irreversible: p.irreversible.as_ref(),
            continues: None,
            allow_removal: p.action.allow_removal,
            upto: None,
        };
        match survey.plan_at(rev, &request) {
            Ok(Planned::Ready(ready)) => plan.planned(&ready, &p.guards, p.irreversible.is_some()),
            Ok(Planned::NothingToGoBackTo { reason, .. }) => {
                plan.unplanned = Some(format!("nothing to go back to: {reason}"))
            }
            Ok(Planned::AlreadyRolledBack { reason, .. }) => plan.unplanned = Some(reason),
            Ok(Planned::Noop { reason }) => plan.unplanned = Some(reason),
            Err(e) => plan.unplanned = Some(e.to_string()),
        }
        out.push(plan);
    }
    out
}

/// Every target the rolling-back policies cover at `at`, first policy first; a service/env
/// two policies cover is the first's (as an alert for it would most likely meet it).
fn covered(policies: &PolicySet, rules: &InputRules, survey: &Survey<'_>, at: &Sha) -> Vec<Covered> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for policy in policies.policies.iter().filter(|p| matches!(p.action.mode, Mode::Direct | Mode::PullRequest)) {
        let pinned: BTreeMap<String, String> = policy
            .matches
            .matchers
            .iter()
            .filter(|m| m.op == MatchOp::Equal)
            .map(|m| (m.name.clone(), m.value.clone()))
            .collect();
        let templated = policy.target.paths.iter().map(|p| p.value.0.as_str()).find(|p| p.contains("{{"));
        let bindings = match templated {
            None => vec![pinned.clone()],
            Some(expr) => {
                let mut dirs = |dir: &str| survey.subdirs(at, dir).unwrap_or_default();
                let valid = |v: &str| rules.identifier("label", v).is_ok();
                match expand(expr, &pinned, &mut dirs, &valid) {
                    Ok(b) => b,
                    Err(e) => {
                        warn!(policy = policy.name(), error = %e, "readiness cannot expand the policy's target");
                        continue;
                    }
                }
            }
        };
        for labels in bindings {
            let probe = probe_event(policy, None, labels.clone(), jiff::Timestamp::UNIX_EPOCH);
            let Ok(target) = policy.resolve_target(&probe, rules) else { continue };
            if seen.insert((target.service.clone(), target.env.clone())) {
                out.push(Covered { policy: policy.clone(), target, labels });
            }
        }
    }
    out
}

/// The alert readiness pretends: from a source the policy admits (an automatic one first),
/// with the labels that name the target. Never sent, never written.
fn probe_event(
    policy: &Policy,
    target: Option<&Target>,
    mut labels: BTreeMap<String, String>,
    now: jiff::Timestamp,
) -> Event {
    let source = [Source::Alertmanager, Source::Github, Source::Cli, Source::Chatops]
        .into_iter()
        .find(|s| policy.matches.source.admits(*s))
        .unwrap_or(Source::Alertmanager);
    let key = match target {
        Some(t) => {
            labels.entry("service".into()).or_insert_with(|| t.service.clone());
            labels.entry("env".into()).or_insert_with(|| t.env.clone());
            format!("readiness.{}.{}", t.service, t.env)
        }
        None => "readiness".to_string(),
    };
    Event {
        source,
        dedupe_key: key,
        labels,
        annotations: BTreeMap::new(),
        received_at: now,
        started_at: None,
        requester: matches!(source, Source::Cli | Source::Chatops).then(|| "rollbackd-readiness".to_string()),
        from_fork: false,
    }
}

/// The rows as the server last worked them out (`rollbackd_rollback_ready`, the status page).
pub(super) fn last(state: &State) -> &[Readiness] {
    &state.rows
}

/// Asks the registries about every image the rows would bring back; a missing one makes
/// its row not ready. An answer that does not tell (refused, unreachable) is said in
/// `images_unknown` and changes nothing else.
pub(super) fn ask_registries(state: &State, rows: &mut [Readiness], wait: Duration) {
    let images: Vec<String> =
        rows.iter().flat_map(|r| r.images.iter().cloned()).collect::<BTreeSet<_>>().into_iter().collect();
    if images.is_empty() {
        return;
    }
    let answers = state.registries.ask_all(&images, wait);
    for row in rows.iter_mut() {
        for image in row.images.clone() {
            match answers.get(&image) {
                Some(Presence::Missing) => row.not_ready(Reason::ImageMissing(format!(
                    "{image} is not in its registry (HEAD manifests answered 404)"
                ))),
                Some(Presence::Unknown(why)) => {
                    warn!(%image, %why, "the registry did not say whether it has the image");
                    let said = format!("{image}: {why}");
                    if !row.images_unknown.contains(&said) {
                        row.images_unknown.push(said);
                    }
                }
                Some(Presence::Present) | None => {}
            }
        }
    }
}

impl Engine {
    /// Readiness as the writer last worked it out.
    pub fn last_readiness(&self) -> &[Readiness] {
        last(&self.readiness)
    }
}
