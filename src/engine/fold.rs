//! One bad change, several services alerting at once: when the firing alerts of one
//! Alertmanager notification would each push a rollback of the same bad commits for its own
//! target, they become one commit that names every target and every trigger
//! (`Rollback-Also`), instead of a partial restore per alert. Alertmanager's `group_wait` is
//! the window: alerts that arrive in one notification are grouped; one that comes later finds
//! its files restored already (a duplicate), or restores what is left of them.
//!
//! Each alert is still decided on its own (its policy, guards, freezes): only those decided
//! `direct` under the same policy, for the same bad commits, whose changes agree on every file
//! both touch, are folded; everything else is handled one by one as it always is.

use std::collections::{BTreeMap, HashSet};

use tracing::{info, info_span, warn};

use super::{Engine, EngineError, Options, Prepared, Ready, Write};
use crate::domain::decision::Report;
use crate::domain::event::Event;
use crate::domain::rollback::{Delivery, Outcome};

impl Engine {
    /// Handles the firing alerts of one notification: one result per event, in order.
    pub fn handle_alerts(&mut self, events: &[Event], opts: &Options) -> Vec<Result<Report, EngineError>> {
        let mut results: Vec<Option<Result<Report, EngineError>>> = events.iter().map(|_| None).collect();
        self.handle_alerts_each(events, opts, |i, r| results[i] = Some(r));
        results.into_iter().flatten().collect()
    }

    /// [`Engine::handle_alerts`], giving each event's result to `done` as soon as it is known
    /// (the folded ones first), so no sender waits for the whole notification.
    pub fn handle_alerts_each(
        &mut self,
        events: &[Event],
        opts: &Options,
        mut done: impl FnMut(usize, Result<Report, EngineError>),
    ) {
        let mut answered = vec![false; events.len()];
        if events.len() > 1 && !opts.dry_run && !opts.emergency && opts.to.is_none() {
            match self.fold_alerts(events, opts) {
                Ok(reports) => {
                    for (i, report) in reports {
                        answered[i] = true;
                        done(i, Ok(report));
                    }
                }
                // Nothing was written: each is handled on its own, as without folding.
                Err(e) => warn!(error = %e, "alerts not folded; handling each on its own"),
            }
        }
        for (i, event) in events.iter().enumerate().filter(|(i, _)| !answered[*i]) {
            done(i, self.handle(event, opts));
        }
    }

    /// Decides every event against one head and writes the ones that fold as one commit. The
    /// reports of what was settled here (folded, or answered without writing); the rest is
    /// left to [`Engine::handle`].
    fn fold_alerts(&mut self, events: &[Event], opts: &Options) -> Result<Vec<(usize, Report)>, EngineError> {
        let _lock = self.ctx.begin()?;
        self.ctx.fetch_if_stale()?;
        self.ctx.need_policies()?;
        // A cheap look first: only alerts whose targets' newest change is the same commit can
        // fold. The rest (a storm of distinct changes) are handled one by one, planned once.
        let mut by_newest: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, event) in events.iter().enumerate() {
            let mut decision = crate::domain::decision::Decision::for_event(event);
            let Ok(super::Selection::Target { target, .. }) =
                super::select(&self.ctx.policies, &self.ctx.rules, event, &mut decision)
            else {
                continue;
            };
            let Ok(paths) = crate::git::PathSet::new(&target.paths) else { continue };
            if let Some(newest) = self.ctx.repo.newest_change(&paths)? {
                by_newest.entry(newest.0).or_default().push(i);
            }
        }
        let candidates: HashSet<usize> = by_newest.into_values().filter(|v| v.len() > 1).flatten().collect();
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let mut settled: Vec<(usize, Report)> = Vec::new();
        let mut ready: Vec<(usize, Ready)> = Vec::new();
        let mut targets = HashSet::new();
        for (i, event) in events.iter().enumerate().filter(|(i, _)| candidates.contains(i)) {
            let span = info_span!("event", trigger = %event.trigger(), rollback_id = tracing::field::Empty);
            let _enter = span.enter();
            let prepared = match self.prepare(event, opts, &span) {
                Ok(p) => p,
                // That alert's own answer, when it is handled on its own below.
                Err(e) => {
                    warn!(trigger = %event.trigger(), error = %e, "an alert of the notification failed; the others may still fold");
                    continue;
                }
            };
            match prepared {
                Prepared::Done(report) => settled.push((i, *report)),
                Prepared::Ready(r) => {
                    let foldable = r.delivery == Delivery::Direct
                        && r.plan.phase.is_none()
                        && r.plan.completes.is_none()
                        && !r.plan.bad_commits.is_empty();
                    // A second alert for a target already in the notification is its duplicate.
                    if foldable && targets.insert((r.plan.target.service.clone(), r.plan.target.env.clone())) {
                        ready.push((i, *r));
                    }
                }
            }
        }
        // The largest set of rollbacks of the same bad commits under one policy (the commit
        // records one); the others go one by one.
        let mut by_change: BTreeMap<(Vec<String>, String), Vec<usize>> = BTreeMap::new();
        for (k, (_, r)) in ready.iter().enumerate() {
            by_change.entry((r.plan.bad_commits_shas(), r.policy.name().to_string())).or_default().push(k);
        }
        let group = by_change.into_values().max_by_key(Vec::len).filter(|g| g.len() > 1).unwrap_or_default();
        if !group.is_empty() {
            settled.extend(self.ctx.write_folded(events, &ready, &group)?);
        }
        for (i, report) in &settled {
            super::verify::after_handle(
                &mut self.ctx,
                &mut self.verification,
                &mut self.alerting,
                &events[*i],
                &Ok(report.clone()),
            );
        }
        Ok(settled)
    }
}

impl super::Ctx {
    /// Writes `group` (indexes into `ready`) as one commit; nothing when they cannot be one
    /// (the branch moved, or their changes overlap): each is then handled on its own.
    fn write_folded(
        &mut self,
        events: &[Event],
        ready: &[(usize, Ready)],
        group: &[usize],
    ) -> Result<Vec<(usize, Report)>, EngineError> {
        let members: Vec<_> = group
            .iter()
            .map(|&k| {
                let (i, r) = &ready[k];
                (r.plan.clone(), events[*i].trigger(), r.policy.name().to_string())
            })
            .collect();
        // The breaker may have tripped while the notification was decided (its alerts are counted
        // as they are): then each goes its own way, as a proposal.
        // Freezes that cannot be read fail closed the same way.
        if self.repo.freezes().map_or(true, |f| f.paused(ready[group[0]].1.now).is_some()) {
            return Ok(Vec::new());
        }
        let Some(plan) = self.repo.fold(&members)? else { return Ok(Vec::new()) };
        let (first_i, first) = &ready[group[0]];
        let named: Vec<String> = members
            .iter()
            .map(|(p, trigger, _)| format!("{}/{} ({trigger})", p.target.service, p.target.env))
            .collect();
        let note = format!("one commit for {} alerts about the same change: {}", members.len(), named.join(", "));
        let mut decision = first.decision.clone();
        decision.notes.push(note.clone());
        let w = Write {
            event: &events[*first_i],
            policy: &first.policy,
            plan: &plan,
            id: &first.id,
            delivery: Delivery::Direct,
            retries: 0,
            now: first.now,
            emergency: false,
        };
        let Some(rollback) = self.write(&w, &mut decision)? else { return Ok(Vec::new()) };
        info!(rollback_id = %rollback.id, alerts = members.len(), "one rollback for several alerts about the same change");
        Ok(group
            .iter()
            .map(|&k| {
                let (i, r) = &ready[k];
                let mut decision = r.decision.clone();
                decision.notes.push(note.clone());
                let report = Report {
                    decision,
                    plan: Some(plan.clone()),
                    outcome: Outcome::RolledBack { rollback: rollback.clone() },
                };
                (*i, report)
            })
            .collect())
    }
}
