//! Why something was, or was not, rolled back, from git alone. Decisions that wrote nothing
//! (denied, no-op, nothing to do) leave a one-line [`DecisionRecord`] in a git note on the head
//! they were decided against; with the rollbacks' trailers and verification notes they make an
//! [`Explanation`] that any replica, or the CLI, can give.

use std::fmt::Write as _;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::domain::audit::AuditRecord;
use crate::domain::decision::Report;
use crate::domain::event::Event;
use crate::domain::rollback::Outcome;

/// One decision that wrote nothing, as recorded. One JSON line; fields are only ever added.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    pub at: Timestamp,
    pub trigger: String,
    pub outcome: String,
    #[serde(default)]
    pub policy: Option<String>,
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub env: Option<String>,
    pub reason: String,
    #[serde(default)]
    pub failed_guards: Vec<String>,
    /// The branch head it was decided against.
    pub head: String,
}

impl DecisionRecord {
    /// The record of a decision worth remembering: denials and no-ops. Rollbacks and proposals
    /// are their own record; duplicates point at one; events no policy acts on are not kept.
    pub fn of(event: &Event, report: &Report, head: &str, at: Timestamp) -> Option<DecisionRecord> {
        let reason = match &report.outcome {
            Outcome::Denied { reason } | Outcome::Noop { reason } => crate::support::text::quoted(reason),
            _ => return None,
        };
        let target = report.decision.target.as_ref();
        Some(DecisionRecord {
            at,
            trigger: event.trigger(),
            outcome: report.outcome.name().to_string(),
            policy: report.decision.policy.clone(),
            service: target.map(|t| t.service.clone()),
            env: target.map(|t| t.env.clone()),
            reason,
            failed_guards: report
                .decision
                .guards
                .iter()
                .filter(|g| !g.passed)
                .map(|g| crate::support::text::quoted(&format!("{}: {}", g.guard, g.detail)))
                .collect(),
            head: head.to_string(),
        })
    }

    pub fn line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// What is asked about: a rollback id, a trigger, or an alert fingerprint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    Rollback(String),
    Trigger(String),
    Fingerprint(String),
}

impl Subject {
    pub fn parse(s: &str) -> Subject {
        if s.starts_with("rb-") {
            Subject::Rollback(s.to_string())
        } else if s.contains(':') {
            Subject::Trigger(s.to_string())
        } else {
            Subject::Fingerprint(s.to_string())
        }
    }

    fn is_trigger(&self, trigger: &str) -> bool {
        match self {
            Subject::Trigger(t) => t == trigger,
            Subject::Fingerprint(f) => trigger
                .strip_prefix("alertmanager:")
                .is_some_and(|key| key == f || key.split_once('@').is_some_and(|(fp, _)| fp == f)),
            Subject::Rollback(_) => false,
        }
    }
}

/// Everything git knows about one subject, oldest first.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Explanation {
    pub decisions: Vec<DecisionRecord>,
    pub rollbacks: Vec<AuditRecord>,
    /// The verification note of each rollback that has one, by rollback id.
    pub verification: Vec<(String, String)>,
}

impl Explanation {
    /// Picks what concerns `subject` out of everything recorded. A rollback id brings in its
    /// trigger's decisions too; a step back brings in the rollback it stepped back from.
    pub fn select(subject: &Subject, decisions: Vec<DecisionRecord>, records: &[AuditRecord]) -> Explanation {
        let mut triggers: Vec<String> = Vec::new();
        let mut rollbacks: Vec<AuditRecord> = Vec::new();
        for r in records {
            let hit = match subject {
                Subject::Rollback(id) => r.id.as_str() == id || r.trigger.contains(&format!("step-back/{id}/")),
                other => other.is_trigger(&r.trigger),
            };
            if hit {
                triggers.push(r.trigger.clone());
                rollbacks.push(r.clone());
            }
        }
        let mut decisions: Vec<DecisionRecord> =
            decisions.into_iter().filter(|d| triggers.contains(&d.trigger) || subject.is_trigger(&d.trigger)).collect();
        decisions.sort_by_key(|d| d.at);
        rollbacks.sort_by_key(|r| r.at);
        Explanation { decisions, rollbacks, verification: Vec::new() }
    }

    pub fn is_empty(&self) -> bool {
        self.decisions.is_empty() && self.rollbacks.is_empty()
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        for d in &self.decisions {
            let _ = writeln!(
                out,
                "{}  {}  {} under {}: {}",
                d.at,
                d.trigger,
                d.outcome,
                d.policy.as_deref().unwrap_or("-"),
                d.reason
            );
            for g in &d.failed_guards {
                let _ = writeln!(out, "      FAIL {g}");
            }
        }
        for r in &self.rollbacks {
            let _ = writeln!(out, "{}", crate::domain::history::line(r));
            if !r.because.is_empty() {
                let _ = writeln!(
                    out,
                    "      proposed for review, not pushed, because of {}",
                    crate::domain::rollback::causes_line(&r.because)
                );
            }
            if let Some(p) = r.phase.filter(|p| !p.is_last()) {
                let _ = writeln!(out, "      phase {p}: a phased rollback is verified from its last phase");
            } else if let Some((_, note)) = self.verification.iter().find(|(id, _)| id == r.id.as_str()) {
                for l in note.lines().filter(|l| !l.is_empty()) {
                    let _ = writeln!(out, "      {l}");
                }
            } else {
                let _ = writeln!(out, "      not verified (yet)");
            }
        }
        out
    }
}
