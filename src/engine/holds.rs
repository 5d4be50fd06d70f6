//! Held artifacts (see [`crate::domain::hold`]): what is held now, the gate a change must pass,
//! and a person's release.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tracing::info;

use super::{Engine, EngineError};
use crate::domain::actor::Actor;
use crate::domain::answer::Answer;
use crate::domain::artifacts::ArtifactChange;
use crate::domain::hold::{self, Hold, Release};
use crate::domain::rollback::Delivery;
use crate::forge::Forge;
use crate::git::{Bound, GateLimits, GitError, MAX_TEXT_BYTES, MAX_TREE_DEPTH, PullReader};

/// What `rollbackd gate` found: each change that brings a held artifact back, said in full.
#[derive(Debug)]
pub struct GateReport {
    pub checked: usize,
    pub violations: Vec<String>,
}

/// The artifact changes of each rollback commit, read once: a commit never changes.
#[derive(Default)]
pub(super) struct HeldChanges(std::collections::HashMap<String, Vec<ArtifactChange>>);

impl HeldChanges {
    fn of(&mut self, commit: &str, read: impl FnOnce() -> Vec<ArtifactChange>) -> Vec<ArtifactChange> {
        self.0.entry(commit.to_string()).or_insert_with(read).clone()
    }
}

impl Engine {
    /// Whether the change from `base` (default: `rev`'s parent) to `rev` brings back a held
    /// artifact. The revisions are read from `local` (a checkout, as in the config repo's CI)
    /// or the mirror; the holds from the origin.
    pub fn gate(&mut self, rev: &str, base: Option<&str>, local: Option<&Path>) -> Result<GateReport, EngineError> {
        let _lock = self.ctx.begin()?;
        self.ctx.fetch_now()?;
        let holds = current(&mut self.ctx, &mut self.held_changes)?;
        let base = base.map_or_else(|| format!("{rev}^1"), str::to_string);
        let changes: Vec<ArtifactChange> = match local {
            Some(dir) => crate::git::artifact_changes_in(dir, &base, rev)?,
            None => self.ctx.repo.gate_changes(&base, rev)?,
        };
        Ok(judge(&holds, &changes))
    }

    /// A pull request to the branch: the gate over what it changes since it forked, told to
    /// GitHub as the `rollbackd/gate` check run on `head_sha` (a comment when refused). A
    /// head that moved on meanwhile is left to the delivery that says so. Runs both halves of
    /// [`Engine::start_pull_gate`] here; the server runs the second on the gate's own thread.
    pub fn gate_pull_request(&mut self, number: u64, head_sha: &str, base: &str) -> Result<String, EngineError> {
        match self.start_pull_gate(number, head_sha, base)? {
            GateStart::Said(said) => Ok(said),
            GateStart::Run(gate) => gate.run(),
        }
    }

    /// The writer's half of a pull request's gate, and all it costs the writer: the holds as of
    /// now (cached per rollback) and a handle on the mirror. Reading the pull request, whose
    /// size its author chooses, is the [`PullGate`]'s.
    pub fn start_pull_gate(&mut self, number: u64, head_sha: &str, base: &str) -> Result<GateStart, EngineError> {
        if base != self.ctx.repo.branch() {
            return Ok(GateStart::Said(format!(
                "pull request #{number} is against {base}, not {}: not gated",
                self.ctx.repo.branch()
            )));
        }
        let _lock = self.ctx.begin()?;
        self.ctx.fetch_if_stale()?;
        let holds = current(&mut self.ctx, &mut self.held_changes)?;
        Ok(GateStart::Run(Box::new(PullGate {
            number,
            head_sha: head_sha.to_string(),
            holds,
            reader: self.ctx.repo.pull_reader()?,
            forge: self.ctx.forge.clone(),
            limits: GateLimits::DEFAULT,
            planner: Box::new(self.change_planner()),
        })))
    }

    /// Lifts the holds of `service`/`env` (those from rollbacks up to now), recorded in git
    /// with who and why. Authorised like a freeze.
    pub fn release(
        &mut self,
        service: &str,
        env: &str,
        reason: Option<&str>,
        actor: &Actor,
    ) -> Result<Answer, EngineError> {
        if let Some(refused) = self.ctx.may_freeze(actor, "release holds") {
            return Ok(refused);
        }
        let (_lock, now) = self.ctx.begin_fresh()?;
        let held: Vec<Hold> = current(&mut self.ctx, &mut self.held_changes)?
            .into_iter()
            .filter(|h| h.service == service && h.env == env)
            .collect();
        if held.is_empty() {
            return Ok(Answer::done(format!("nothing is held for {service}/{env}")));
        }
        let who = actor.id();
        let oldest = now.checked_sub(self.ctx.config.audit.window.as_signed()).unwrap_or(now);
        let release = Release {
            service: service.into(),
            env: env.into(),
            by: who.clone(),
            at: now,
            reason: reason.map(str::to_string),
        };
        self.ctx.repo.update_hold_releases(&format!("Release holds of {service}/{env} by {who}\n"), now, |r| {
            r.add(release.clone(), oldest)
        })?;
        let what: Vec<String> = held.iter().map(|h| h.value.clone()).collect();
        info!(service, env, by = %who, released = %what.join(", "), "holds released");
        Ok(Answer::done(format!("released {} held for {service}/{env} by {who}: {}", held.len(), what.join(", "))))
    }
}

/// What the writer's half of a pull request's gate came to.
pub enum GateStart {
    /// Nothing to gate (another base branch), said.
    Said(String),
    /// The rest, to run on any thread.
    Run(Box<PullGate>),
}

/// The rest of a pull request's gate: fetch its head, read what it changes within
/// [`GateLimits`], judge it against the holds, report the `rollbackd/gate` check run. Reads the
/// mirror through its own handle, so it runs beside the writer.
pub struct PullGate {
    number: u64,
    head_sha: String,
    holds: Vec<Hold>,
    reader: PullReader,
    forge: Arc<dyn Forge>,
    limits: GateLimits,
    /// Plans the change (what rollbackd would do if it went bad after merge) for the summary.
    planner: Box<super::readiness::ChangePlanner>,
}

impl PullGate {
    pub fn number(&self) -> u64 {
        self.number
    }

    pub fn run(self) -> Result<String, EngineError> {
        let started = Instant::now();
        let number = self.number;
        let Some((head, fork_point)) = self.reader.fetch_pull(number)? else {
            return Ok(format!("the origin has no head for pull request #{number}"));
        };
        if head.0 != self.head_sha {
            return Ok(format!("pull request #{number} moved on to {}: that head is gated instead", head.short()));
        }
        let fetched = started.elapsed();
        // Nothing held, nothing to bring back: a change of any size passes unread.
        let changes = if self.holds.is_empty() {
            Ok(Vec::new())
        } else {
            self.reader.gate_changes(&fork_point, &head, self.limits)
        };
        let changes = match changes {
            Ok(changes) => changes,
            Err(GitError::Bound(bound)) => {
                let why = over_bound(&bound, &self.holds);
                self.forge.report_gate_refused(number, &head.0, &why)?;
                info!(pull = number, head = %head.short(), %bound, fetch_ms = fetched.as_millis(),
                      gate_ms = (started.elapsed() - fetched).as_millis(), "gate refused: over a bound");
                return Ok(format!("pull request #{number}: not gated: {why}"));
            }
            Err(e) => return Err(e.into()),
        };
        let report = judge(&self.holds, &changes);
        let gated = started.elapsed();
        let plans = self.planner.plan(&self.reader, &head, &fork_point);
        let planned = started.elapsed();
        self.forge.report_gate(number, &head.0, &report.violations, &plans)?;
        info!(pull = number, head = %head.short(), violations = report.violations.len(), planned = plans.len(),
              fetch_ms = fetched.as_millis(), gate_ms = (gated - fetched).as_millis(),
              plan_ms = (planned - gated).as_millis(), "gated");
        Ok(match report.violations.len() {
            0 => format!("pull request #{number}: {} artifact changes, none brings back a held one", report.checked),
            n => format!("pull request #{number}: {n} change(s) bring back held artifacts"),
        })
    }
}

/// Why a pull request over a bound is not gated, and what its author or an operator can do.
fn over_bound(bound: &Bound, holds: &[Hold]) -> String {
    let over = match bound {
        Bound::Paths { limit } => {
            format!("this pull request changes more than {limit} paths; rollbackd gates at most {limit}")
        }
        Bound::Entries { limit } => {
            format!("this pull request changes more than {limit} tree entries; rollbackd compares at most {limit}")
        }
        Bound::Depth { limit } => format!(
            "this pull request has a tree more than {limit} levels deep; rollbackd reads trees at most \
             {MAX_TREE_DEPTH} levels deep"
        ),
        Bound::Bytes { limit } => format!(
            "this pull request changes more than {} MiB of files; rollbackd reads at most {} MiB per pull \
             request (files over {} MiB are not read at all)",
            limit >> 20,
            limit >> 20,
            MAX_TEXT_BYTES >> 20
        ),
    };
    let mut held: Vec<String> = holds.iter().map(|h| format!("{} --env {}", h.service, h.env)).collect();
    held.sort();
    held.dedup();
    format!(
        "{over}: split it, or ask an operator to `rollbackd release {}` once what was rolled back is fixed \
         (with nothing held, no pull request is read)",
        held.join("` / `rollbackd release ")
    )
}

/// The changes that bring a held artifact back, each said in full.
fn judge(holds: &[Hold], changes: &[ArtifactChange]) -> GateReport {
    let violations = hold::violations(holds, changes)
        .into_iter()
        .map(|(h, c)| {
            format!(
                "{}: {} goes back to {}, held since rollback {} of {}/{} ({}); if it is fixed, \
                 `rollbackd release {} --env {}` (or `/rollback release {} {}`) lifts the hold",
                c.path, h.name, h.value, h.rollback_id, h.service, h.env, h.trigger, h.service, h.env, h.service, h.env
            )
        })
        .collect();
    GateReport { checked: changes.len(), violations }
}

impl super::Ctx {
    /// The target paths of a rollback's record, as its policy renders them now.
    fn paths_of(&self, r: &crate::domain::audit::AuditRecord) -> Option<crate::git::PathSet> {
        let (_, target) = self.target_of(r).ok()?;
        crate::git::PathSet::new(&target.paths).ok()
    }
}

/// The artifacts held now: those undone by each rollback in the audit window whose policy
/// holds (the default), not released since. Each rollback's changes are read from its
/// commit once per process.
pub(super) fn current(ctx: &mut super::Ctx, state: &mut HeldChanges) -> Result<Vec<Hold>, EngineError> {
    let now = ctx.clock.now();
    ctx.repo.audit(now)?;
    // Releases that cannot be believed release nothing: every hold stays (fail closed).
    let releases = match ctx.repo.hold_releases() {
        Err(crate::git::GitError::UnreadableState { .. }) => Default::default(),
        other => other?,
    };
    let records: Vec<_> = ctx
        .repo
        .index()
        .records()
        .iter()
        // Only rollbacks rollbackd pushed (a tag of ours names them) hold anything.
        .filter(|r| r.delivery == Delivery::Direct && !r.cancelled && r.tag.is_some())
        .filter(|r| ctx.policy_named(&r.policy).is_none_or(|p| p.hold))
        .filter(|r| !releases.released(&r.service, &r.env, r.at))
        .cloned()
        .collect();
    let mut holds: Vec<Hold> = Vec::new();
    for r in records {
        let repo = &ctx.repo;
        let changes = state
            .of(&r.commit.0, || repo.artifact_changes(&format!("{}^1", r.commit.0), &r.commit.0).unwrap_or_default());
        // A commit that rolled back several services holds each artifact under the service
        // whose paths hold the file.
        let changes = match ctx.paths_of(&r) {
            Some(paths) if !r.together_with.is_empty() => {
                changes.into_iter().filter(|c| paths.matches(&c.path)).collect()
            }
            _ => changes,
        };
        for h in hold::from_rollback(&r, &changes) {
            if !holds.iter().any(|x| x.path == h.path && x.value == h.value) {
                holds.push(h);
            }
        }
    }
    Ok(holds)
}

impl Engine {
    /// The holds in force (see `holds::current`).
    pub fn holds(&mut self) -> Result<Vec<Hold>, EngineError> {
        current(&mut self.ctx, &mut self.held_changes)
    }
}
