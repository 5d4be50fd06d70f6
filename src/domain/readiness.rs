//! Readiness: before anything breaks, whether an automatic rollback of a service in an
//! environment would work now, and what it would be. Pure: the engine plans and decides as for
//! a live alert (dry run) and hands the report here; this module says what stands in the way.
//!
//! A new obstacle is a new [`Reason`] variant, added with [`Readiness::not_ready`] by whoever
//! finds it (the engine for git and policy facts, the registry check for images, a drill's CI
//! result): the row is ready exactly when it has no reason.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Serialize, Serializer};

use crate::domain::decision::Report;
use crate::domain::drill::{CiVerdict, DrillResult};
use crate::domain::guards::GuardCheck;
use crate::domain::plan::{KnownGoodSource, Plan, Strategy};
use crate::domain::policy::Mode;
use crate::domain::rollback::{Cause, Outcome};

/// Why an automatic rollback would not work now. Each says what to look at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// No policy rolls the service back in this environment.
    NoPolicy(String),
    /// No earlier state of the target paths (its only change is its first deploy).
    NothingToGoBackTo(String),
    /// The newest change is a rollback: an alert now would change nothing.
    AlreadyRolledBack(String),
    /// An irreversible change is past the point of no return (names the file or trailer).
    PointOfNoReturn(String),
    /// A freeze, the pause or the breaker turns the push into a proposal or stops it.
    Frozen(String),
    /// The rollback would bring back an artifact a rollback undid and that is still held.
    Held(String),
    /// `require_immutable_artifacts`: the known-good state references a mutable artifact.
    MutableArtifact(String),
    /// An image the known-good state needs is gone from its registry.
    ImageMissing(String),
    /// The known-good state is older than the policy allows (`max_known_good_age`).
    TooOld(String),
    /// Another guard fails now (cooldown, rate).
    Guard { guard: String, detail: String },
    /// The planned result fails validation (it would not be written).
    InvalidResult(String),
    /// The repo's CI failed on the latest drill's branch head: the rolled-back state does not
    /// render (names the failing checks).
    DrillFailed(String),
    /// The rollback would be denied or could not be planned, for the reason given.
    Refused(String),
}

impl Reason {
    /// A short name, for the status page and metrics' readers.
    pub fn name(&self) -> &str {
        match self {
            Reason::NoPolicy(_) => "no_policy",
            Reason::NothingToGoBackTo(_) => "nothing_to_go_back_to",
            Reason::AlreadyRolledBack(_) => "already_rolled_back",
            Reason::PointOfNoReturn(_) => "point_of_no_return",
            Reason::Frozen(_) => "frozen",
            Reason::Held(_) => "held",
            Reason::MutableArtifact(_) => "mutable_artifact",
            Reason::ImageMissing(_) => "image_missing",
            Reason::TooOld(_) => "too_old",
            Reason::Guard { guard, .. } => guard,
            Reason::InvalidResult(_) => "invalid_result",
            Reason::DrillFailed(_) => "drill_failed",
            Reason::Refused(_) => "refused",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NoPolicy(d) => write!(f, "no policy: {d}"),
            Reason::NothingToGoBackTo(d) => write!(f, "nothing to go back to: {d}"),
            Reason::AlreadyRolledBack(d) => write!(f, "already rolled back: {d}"),
            Reason::PointOfNoReturn(d) => write!(f, "point of no return: {d}"),
            Reason::Frozen(d) => write!(f, "frozen: {d}"),
            Reason::Held(d) => write!(f, "held: {d}"),
            Reason::MutableArtifact(d) => write!(f, "mutable artifact: {d}"),
            Reason::ImageMissing(d) => write!(f, "image missing: {d}"),
            Reason::TooOld(d) => write!(f, "known-good too old: {d}"),
            Reason::Guard { guard, detail } => write!(f, "{guard}: {detail}"),
            Reason::InvalidResult(d) => write!(f, "result fails validation: {d}"),
            Reason::DrillFailed(d) => write!(f, "drill failed CI: {d}"),
            Reason::Refused(d) => write!(f, "refused: {d}"),
        }
    }
}

fn as_strings<S: Serializer>(reasons: &[Reason], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(reasons.iter().map(ToString::to_string))
}

/// One service in one environment: would an automatic rollback work now, and what would it do.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Readiness {
    pub service: String,
    pub env: String,
    pub ready: bool,
    /// Every obstacle, said for a person (empty when ready).
    #[serde(serialize_with = "as_strings")]
    pub reasons: Vec<Reason>,
    /// The commit it would go back to, or null when there is none.
    pub known_good: Option<String>,
    /// The `known-good/...` tag that names it, when a tag does.
    pub known_good_tag: Option<String>,
    pub strategy: Option<Strategy>,
    pub mode: Option<Mode>,
    pub policy: Option<String>,
    /// Images the rollback would bring back (`registry/name:tag` or `@digest`), which the
    /// registry check asks about.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    /// Images whose registry did not say whether it has them, each with why (it refused the
    /// question, could not be reached, failed): said, never a reason, since only a 404 tells
    /// that an image is gone.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub images_unknown: Vec<String>,
    /// The latest drill of this service/env (absent: never drilled), with what the repo's CI
    /// said of it (`ci` null: no forge, or it has not answered yet) and the policy it rehearsed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillResult>,
}

impl Readiness {
    /// A row with nothing known yet but the target and its policy.
    pub fn new(service: &str, env: &str, policy: Option<&str>, mode: Option<Mode>) -> Self {
        Readiness {
            service: service.into(),
            env: env.into(),
            ready: true,
            reasons: Vec::new(),
            known_good: None,
            known_good_tag: None,
            strategy: None,
            mode,
            policy: policy.map(str::to_string),
            images: Vec::new(),
            images_unknown: Vec::new(),
            drill: None,
        }
    }

    /// The service is covered by no policy that rolls back.
    pub fn no_policy(service: &str, env: &str) -> Self {
        let mut r = Readiness::new(service, env, None, None);
        r.not_ready(Reason::NoPolicy(format!("no policy's target covers {service}/{env} with a rollback")));
        r
    }

    /// The one place a row stops being ready: add what stands in the way.
    pub fn not_ready(&mut self, reason: Reason) {
        if !self.reasons.contains(&reason) {
            self.reasons.push(reason);
        }
        self.ready = false;
    }

    /// Joins the latest drill: a drill whose CI failed makes the row not ready, naming the
    /// failing checks; one still pending is said on the line, and is no failure.
    pub fn drilled(&mut self, drill: DrillResult) {
        if let Some(CiVerdict::Failed { checks }) = &drill.ci {
            let policy = drill.policy.as_ref().map_or_else(String::new, |p| format!(" under policy {p}"));
            self.not_ready(Reason::DrillFailed(format!(
                "{} failed on {} at {} (the rollback rehearsed{policy} does not pass the repo's CI)",
                checks.join(", "),
                drill.branch,
                drill.commit.short()
            )));
        }
        self.drill = Some(drill);
    }

    /// The drill's state for the text line, when it says something a reason does not.
    fn drill_note(&self) -> Option<String> {
        let d = self.drill.as_ref()?;
        let other_policy = match (&d.policy, &self.policy) {
            (Some(dp), Some(p)) if dp != p => format!(", rehearsed under policy {dp}"),
            _ => String::new(),
        };
        let state = match &d.ci {
            Some(CiVerdict::Pending { checks }) => format!("drill CI pending ({})", checks.join(", ")),
            Some(CiVerdict::Passed) => "drill CI passed".to_string(),
            None if other_policy.is_empty() => return None,
            Some(CiVerdict::Failed { .. }) | None => "drill".to_string(),
        };
        Some(format!("{state}{other_policy}"))
    }

    /// What the plan says it would go back to, and how.
    pub fn planned(&mut self, plan: &Plan) {
        self.known_good = Some(plan.known_good.sha.0.clone());
        self.known_good_tag = match &plan.known_good.source {
            KnownGoodSource::Tag { name } => Some(name.clone()),
            _ => None,
        };
        self.strategy = Some(plan.strategy);
        self.images = plan
            .artifacts
            .iter()
            .filter(|a| a.name.starts_with("image "))
            .filter_map(|a| a.new.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
    }

    /// Reads a dry run's report (the same `Report` a live alert gets) into the row: the plan,
    /// every guard that fails, what turns the push into a proposal, a refusal.
    pub fn read_report(&mut self, report: &Report) {
        if let Some(plan) = &report.plan {
            self.planned(plan);
        }
        for g in report.decision.guards.iter().filter(|g| !g.passed) {
            self.not_ready(guard_reason(g));
        }
        for c in &report.decision.because {
            match c {
                // Said once, as the guard above.
                Cause::Guard { .. } => {}
                Cause::Freeze { detail }
                | Cause::Pause { detail }
                | Cause::Breaker { detail }
                | Cause::UnreadableFreezes { detail } => self.not_ready(Reason::Frozen(detail.clone())),
            }
        }
        match &report.outcome {
            Outcome::DryRun { .. } => {}
            Outcome::Duplicate { reason, .. } => self.not_ready(Reason::AlreadyRolledBack(reason.clone())),
            Outcome::Noop { reason } => self.not_ready(Reason::NothingToGoBackTo(reason.clone())),
            Outcome::Denied { reason } if report.plan.as_ref().is_some_and(|p| p.leaves_no_files) => {
                self.not_ready(Reason::NothingToGoBackTo(reason.clone()))
            }
            // A denial by a failing guard is said by the guard already.
            Outcome::Denied { .. } if report.decision.guards.iter().any(|g| !g.passed) => {}
            Outcome::Denied { reason } => match &report.decision.frozen {
                Some(frozen) => self.not_ready(Reason::Frozen(frozen.clone())),
                None => self.not_ready(Reason::Refused(reason.clone())),
            },
            other => self.not_ready(Reason::Refused(other.summary())),
        }
    }

    /// One line: `checkout/prod  ready  -> 0123456789 (known-good/...) restore, direct, policy p`.
    pub fn line(&self) -> String {
        let target = format!("{}/{}", self.service, self.env);
        let what = match (&self.known_good, &self.policy) {
            (Some(sha), policy) => {
                let short = &sha[..sha.len().min(10)];
                let tag = self.known_good_tag.as_ref().map_or_else(String::new, |t| format!(" ({t})"));
                let strategy = self.strategy.map_or_else(String::new, |s| format!(" {s}"));
                let mode = self.mode.map_or_else(String::new, |m| format!(", {m}"));
                let policy = policy.as_ref().map_or_else(String::new, |p| format!(", policy {p}"));
                format!("-> {short}{tag}{strategy}{mode}{policy}")
            }
            (None, Some(p)) => format!("policy {p}"),
            (None, None) => String::new(),
        };
        let state = if self.ready { "ready" } else { "NOT READY" };
        let mut line = format!("{target:<24} {state:<9} {what}");
        if let Some(note) = self.drill_note() {
            line.push_str(&format!(" [{note}]"));
        }
        for unknown in &self.images_unknown {
            line.push_str(&format!(" [image not checked: {unknown}]"));
        }
        if !self.reasons.is_empty() {
            let why: Vec<String> = self.reasons.iter().map(ToString::to_string).collect();
            line.push_str(&format!(" | {}", why.join("; ")));
        }
        line.trim_end().to_string()
    }

    /// Every row, one line each.
    pub fn text(rows: &[Readiness]) -> String {
        if rows.is_empty() {
            return "no policy rolls back any service: nothing to be ready\n".into();
        }
        rows.iter().map(|r| format!("{}\n", r.line())).collect()
    }
}

/// A failing guard as the obstacle it is.
fn guard_reason(g: &GuardCheck) -> Reason {
    match g.guard {
        crate::domain::guards::POINT_OF_NO_RETURN => Reason::PointOfNoReturn(g.detail.clone()),
        "require_immutable_artifacts" => Reason::MutableArtifact(g.detail.clone()),
        "max_known_good_age" => Reason::TooOld(g.detail.clone()),
        other => Reason::Guard { guard: other.to_string(), detail: g.detail.clone() },
    }
}

/// At most this many targets one policy expands to: a repository with more directories than
/// this under a templated path is read no further (and says so).
pub(crate) const MAX_TARGETS: usize = 1000;

/// One `{{ labels.NAME }}` in a path component, with the literal text around it.
struct Hole<'a> {
    before: &'a str,
    label: &'a str,
    after: &'a str,
}

/// Parses a path component holding one `{{ labels.NAME }}`; `None` when it holds another
/// expression (a filter, two labels), which readiness cannot expand.
fn hole(component: &str) -> Option<Hole<'_>> {
    let open = component.find("{{")?;
    let close = component[open..].find("}}")? + open;
    let inner = component[open + 2..close].trim();
    let label = inner.strip_prefix("labels.")?;
    if label.is_empty() || !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    let after = &component[close + 2..];
    if after.contains("{{") {
        return None;
    }
    Some(Hole { before: &component[..open], label, after })
}

fn is_glob(component: &str) -> bool {
    component.chars().any(|c| matches!(c, '*' | '?' | '[' | ']' | '{' | '}'))
}

/// The label values under which a templated target path names directories of the repository:
/// `apps/{{ labels.service }}/{{ labels.env }}/**` over `apps/checkout/prod`, `apps/cart/dev`
/// gives `{service: checkout, env: prod}` and `{service: cart, env: dev}`. `pinned` holds the
/// labels a policy's equality matchers fix (those are not listed, only used). `dirs(path)`
/// lists the directories directly under `path` of the branch head (`""` is the root); `valid`
/// says whether a directory name may be a label's value (the input rules' identifier pattern).
pub(crate) fn expand(
    pattern: &str,
    pinned: &BTreeMap<String, String>,
    dirs: &mut dyn FnMut(&str) -> Vec<String>,
    valid: &dyn Fn(&str) -> bool,
) -> Result<Vec<BTreeMap<String, String>>, String> {
    let mut states: Vec<(String, BTreeMap<String, String>)> = vec![(String::new(), pinned.clone())];
    for component in pattern.split('/') {
        if !component.contains("{{") {
            if is_glob(component) {
                break;
            }
            for (prefix, _) in &mut states {
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(component);
            }
            continue;
        }
        let Some(h) = hole(component) else {
            return Err(format!("`{component}`: only `{{{{ labels.NAME }}}}` in a path component can be expanded"));
        };
        let mut next = Vec::new();
        for (prefix, labels) in states {
            for name in dirs(&prefix) {
                let Some(value) = name.strip_prefix(h.before).and_then(|n| n.strip_suffix(h.after)) else { continue };
                if value.is_empty() || !valid(value) || labels.get(h.label).is_some_and(|v| v != value) {
                    continue;
                }
                let mut labels = labels.clone();
                labels.insert(h.label.to_string(), value.to_string());
                let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
                next.push((path, labels));
                if next.len() > MAX_TARGETS {
                    return Err(format!("`{pattern}` names more than {MAX_TARGETS} directories; read no further"));
                }
            }
        }
        states = next;
    }
    Ok(states.into_iter().map(|(_, labels)| labels).collect())
}

#[cfg(test)]
#[path = "readiness_tests.rs"]
mod tests;
