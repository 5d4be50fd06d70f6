//! `Decision`: the explanation of what was decided for one event and why. The same structure is
//! printed by `simulate`, returned by the API and logged for live events.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::domain::event::Event;
use crate::domain::guards::GuardCheck;
use crate::domain::plan::{Plan, Target};
use crate::domain::policy::{MatchReport, Mode};
use crate::domain::rollback::Outcome;

#[derive(Clone, Debug, Serialize)]
pub struct PolicyTrial {
    pub policy: String,
    pub matched: bool,
    pub reasons: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Decision {
    pub source: String,
    pub trigger: String,
    pub labels: BTreeMap<String, String>,
    pub policies: Vec<PolicyTrial>,
    pub policy: Option<String>,
    pub mode: Option<Mode>,
    pub target: Option<Target>,
    pub guards: Vec<GuardCheck>,
    /// Things worth knowing that are not a guard (a downgrade to a proposal, a fallback).
    pub notes: Vec<String>,
    /// The freeze that turned a push into a proposal, described.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frozen: Option<String>,
    /// Why the rollback is proposed when its policy would have pushed it, as `decide` said.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub because: Vec<crate::domain::rollback::Cause>,
}

impl Decision {
    pub fn for_event(event: &Event) -> Self {
        Decision {
            source: event.source.to_string(),
            trigger: event.trigger(),
            labels: event.labels.clone(),
            ..Decision::default()
        }
    }

    pub fn record_trials(&mut self, tried: Vec<(String, MatchReport)>) {
        self.policies = tried
            .into_iter()
            .map(|(policy, r)| PolicyTrial { policy, matched: r.matched, reasons: r.reasons })
            .collect();
    }
}

/// Everything about one handled event: what came in, what was decided, the plan, the outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub decision: Decision,
    pub plan: Option<Plan>,
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl Report {
    /// The decision trace for people: each policy tried, the guards, the plan, the outcome.
    pub fn explain(&self) -> String {
        let d = &self.decision;
        let mut s = String::new();
        let _ = writeln!(s, "event: {} ({})", d.trigger, d.source);
        if !d.labels.is_empty() {
            let labels: Vec<String> = d.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            let _ = writeln!(s, "  labels: {}", labels.join(" "));
        }
        if !d.policies.is_empty() {
            let _ = writeln!(s, "policies:");
        }
        for t in &d.policies {
            let _ = writeln!(s, "  {} {}", if t.matched { "MATCH" } else { "skip " }, t.policy);
            for r in &t.reasons {
                let _ = writeln!(s, "        {r}");
            }
        }
        if let Some(t) = &d.target {
            let _ = writeln!(
                s,
                "target: {}/{} paths {} (mode {})",
                t.service,
                t.env,
                t.paths.join(", "),
                d.mode.map(|m| m.to_string()).unwrap_or_default()
            );
        }
        if let Some(p) = &self.plan {
            let _ = writeln!(s, "plan:");
            let kg_from = match &p.known_good.source {
                crate::domain::plan::KnownGoodSource::Tag { name } => format!("tag {name}"),
                crate::domain::plan::KnownGoodSource::ParentOfLastChange { change } => {
                    format!("parent of the last change {}", change.short())
                }
                crate::domain::plan::KnownGoodSource::Requested { rev } => format!("requested `{rev}`"),
                crate::domain::plan::KnownGoodSource::Rollback { id } => {
                    format!("before the change rollback {id} undid for other paths")
                }
                crate::domain::plan::KnownGoodSource::Phases { id } => format!("where the first phase of {id} went"),
            };
            let _ = writeln!(s, "  branch {} at {}", p.branch, p.head.short());
            let _ = writeln!(s, "  known-good {} ({kg_from})", p.known_good.sha.short());
            let _ = writeln!(s, "  bad commits (newest first):");
            for c in &p.bad_commits {
                let _ = writeln!(s, "    {} {} ({}, {})", c.sha.short(), c.summary, c.author, c.time);
            }
            let _ = writeln!(
                s,
                "  strategy {}{}",
                p.strategy,
                p.strategy_note.as_deref().map(|n| format!(" ({n})")).unwrap_or_default()
            );
            if let Some(phase) = p.phase {
                let name = (phase.step as usize)
                    .checked_sub(1)
                    .and_then(|i| p.target.phases.get(i))
                    .and_then(|t| t.name.as_deref());
                let _ = writeln!(s, "  phase {phase}{}", name.map(|n| format!(" ({n})")).unwrap_or_default());
            }
            let _ = writeln!(s, "  diffstat:");
            for f in &p.diffstat {
                let _ = writeln!(s, "    {} | +{} -{}", f.path, f.insertions, f.deletions);
            }
            if !p.artifacts.is_empty() {
                let _ = writeln!(s, "  artifacts:");
                for a in &p.artifacts {
                    let _ = writeln!(
                        s,
                        "    {} {}: {} -> {}",
                        a.path,
                        a.name,
                        a.old.as_deref().unwrap_or("(none)"),
                        a.new.as_deref().unwrap_or("(none)")
                    );
                }
            }
        }
        if !d.guards.is_empty() {
            let _ = writeln!(s, "guards:");
            for g in &d.guards {
                let _ = writeln!(s, "  {} {}: {}", if g.passed { "ok  " } else { "FAIL" }, g.guard, g.detail);
            }
        }
        for n in &d.notes {
            let _ = writeln!(s, "note: {n}");
        }
        let _ = writeln!(s, "outcome: {}", self.outcome.summary());
        s
    }
}
