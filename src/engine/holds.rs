//! Held artifacts (see [`crate::domain::hold`]): what is held now, the gate a change must pass,
//! and a person's release.

use std::path::Path;

use tracing::info;

use super::review::{Actor, actor_id};
use super::{Engine, EngineError};
use crate::domain::artifacts::ArtifactChange;
use crate::domain::hold::{self, Hold, Release};
use crate::domain::rollback::Delivery;

/// What `rollbackd gate` found: each change that brings a held artifact back, said in full.
#[derive(Debug)]
pub struct GateReport {
    pub checked: usize,
    pub violations: Vec<String>,
}

impl Engine {
    /// The artifacts held now: those undone by each rollback in the audit window whose policy
    /// holds (the default), not released since. Each rollback's changes are read from its
    /// commit once per process.
    pub fn holds(&mut self) -> Result<Vec<Hold>, EngineError> {
        let now = self.clock.now();
        self.repo.audit(now)?;
        // Releases that cannot be believed release nothing: every hold stays (fail closed).
        let releases = match self.repo.hold_releases() {
            Err(crate::git::GitError::UnreadableState { .. }) => Default::default(),
            other => other?,
        };
        let records: Vec<_> = self
            .repo
            .index()
            .records()
            .iter()
            // Only rollbacks rollbackd pushed (a tag of ours names them) hold anything.
            .filter(|r| r.delivery == Delivery::Direct && !r.cancelled && r.tag.is_some())
            .filter(|r| self.policy_named(&r.policy).is_none_or(|p| p.hold))
            .filter(|r| !releases.released(&r.service, &r.env, r.at))
            .cloned()
            .collect();
        let mut holds: Vec<Hold> = Vec::new();
        for r in records {
            let changes = match self.held_changes.get(&r.commit.0) {
                Some(c) => c.clone(),
                None => {
                    let c = self.repo.artifact_changes(&format!("{}^1", r.commit.0), &r.commit.0).unwrap_or_default();
                    self.held_changes.insert(r.commit.0.clone(), c.clone());
                    c
                }
            };
            // A commit that rolled back several services holds each artifact under the service
            // whose paths hold the file.
            let changes = match self.paths_of(&r) {
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

    /// The target paths of a rollback's record, as its policy renders them now.
    fn paths_of(&self, r: &crate::domain::audit::AuditRecord) -> Option<crate::git::PathSet> {
        let (_, target) = self.target_of(r).ok()?;
        crate::git::PathSet::new(&target.paths).ok()
    }

    /// Whether the change from `base` (default: `rev`'s parent) to `rev` brings back a held
    /// artifact. The revisions are read from `local` (a checkout, as in the config repo's CI)
    /// or the mirror; the holds from the origin.
    pub fn gate(&mut self, rev: &str, base: Option<&str>, local: Option<&Path>) -> Result<GateReport, EngineError> {
        let _lock = self.begin()?;
        self.fetch(true)?;
        let holds = self.holds()?;
        let base = base.map_or_else(|| format!("{rev}^1"), str::to_string);
        let changes: Vec<ArtifactChange> = match local {
            Some(dir) => crate::git::artifact_changes_in(dir, &base, rev)?,
            None => self.repo.artifact_changes(&base, rev)?,
        };
        Ok(judge(&holds, &changes))
    }

    /// A pull request to the branch: the gate over what it changes since it forked, told to
    /// GitHub as the `rollbackd/gate` check run on `head_sha` (a comment when refused). A
    /// head that moved on meanwhile is left to the delivery that says so.
    pub fn gate_pull_request(&mut self, number: u64, head_sha: &str, base: &str) -> Result<String, EngineError> {
        if base != self.repo.branch() {
            return Ok(format!("pull request #{number} is against {base}, not {}: not gated", self.repo.branch()));
        }
        let _lock = self.begin()?;
        self.fetch(false)?;
        let Some((head, fork_point)) = self.repo.fetch_pull(number)? else {
            return Ok(format!("the origin has no head for pull request #{number}"));
        };
        if head.0 != head_sha {
            return Ok(format!("pull request #{number} moved on to {}: that head is gated instead", head.short()));
        }
        let holds = self.holds()?;
        let changes = self.repo.artifact_changes(&fork_point.0, &head.0)?;
        let report = judge(&holds, &changes);
        self.forge.report_gate(number, &head.0, &report.violations)?;
        info!(pull = number, head = %head.short(), violations = report.violations.len(), "gated");
        Ok(match report.violations.len() {
            0 => format!("pull request #{number}: {} artifact changes, none brings back a held one", report.checked),
            n => format!("pull request #{number}: {n} change(s) bring back held artifacts"),
        })
    }

    /// Lifts the holds of `service`/`env` (those from rollbacks up to now), recorded in git
    /// with who and why. Authorised like a freeze.
    pub fn release(
        &mut self,
        service: &str,
        env: &str,
        reason: Option<&str>,
        actor: Actor<'_>,
        cli_name: &str,
    ) -> Result<String, EngineError> {
        if let Some(refused) = self.may_freeze(actor, "release holds") {
            return Ok(refused);
        }
        let (_lock, now) = self.begin_fresh()?;
        let held: Vec<Hold> = self.holds()?.into_iter().filter(|h| h.service == service && h.env == env).collect();
        if held.is_empty() {
            return Ok(format!("nothing is held for {service}/{env}"));
        }
        let who = actor_id(actor, cli_name);
        let oldest = now.checked_sub(self.config.audit.window.as_signed()).unwrap_or(now);
        let release = Release {
            service: service.into(),
            env: env.into(),
            by: who.clone(),
            at: now,
            reason: reason.map(str::to_string),
        };
        self.repo.update_hold_releases(&format!("Release holds of {service}/{env} by {who}\n"), now, |r| {
            r.add(release.clone(), oldest)
        })?;
        let what: Vec<String> = held.iter().map(|h| h.value.clone()).collect();
        info!(service, env, by = %who, released = %what.join(", "), "holds released");
        Ok(format!("released {} held for {service}/{env} by {who}: {}", held.len(), what.join(", ")))
    }
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
