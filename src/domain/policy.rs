//! `Policy`: which events may roll back which paths, how, and under which guards.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;

use crate::domain::event::{Event, Source};
use crate::domain::ident::InputRules;
use crate::domain::matcher::Matcher;
use crate::domain::plan::{Strategy, Target};
use crate::domain::principal::Rule;
use crate::support::diagnostic::{Diagnostic, Severity};
use crate::support::duration::Duration;
use crate::support::template;

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(rename = "match")]
    pub matches: MatchSpec,
    pub target: TargetSpec,
    #[serde(default)]
    pub action: Action,
    #[serde(default)]
    pub guards: Guards,
    #[serde(default)]
    pub chatops: Chatops,
    #[serde(default)]
    pub review: Review,
    /// Channels (`notify.channels` in the config) told about what this policy decides: a name
    /// (every state), or `{ channel, events }` (only those states, e.g. a pager for
    /// `escalated`).
    #[serde(default)]
    pub notify: Vec<Route>,
    /// How a pushed rollback is checked, and what happens when it did not help.
    #[serde(default)]
    pub verify: Option<crate::domain::verify::VerifySpec>,
    /// After a rollback, hold the artifacts it undid so `rollbackd gate` fails a change that
    /// brings one back. Default `true`.
    #[serde(default = "yes")]
    pub hold: bool,
    /// Changes git cannot take back (a schema migration that ran): their rollback is never
    /// automatic once they passed `guards.point_of_no_return`.
    #[serde(default)]
    pub irreversible: Option<Irreversible>,
    /// The file the policy came from, for explanations.
    #[serde(skip)]
    pub file: PathBuf,
}

#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    #[serde(default)]
    pub source: SourceMatch,
    #[serde(default)]
    pub matchers: Vec<Matcher>,
    /// Whether CI events from a fork's workflow run may match. Default: false.
    #[serde(default)]
    pub forks: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceMatch {
    Alertmanager,
    Github,
    Chatops,
    Cli,
    Flux,
    Argocd,
    /// A person's request: `chatops` or `cli`.
    Request,
    #[default]
    Any,
}

impl fmt::Display for SourceMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceMatch::Alertmanager => "alertmanager",
            SourceMatch::Github => "github",
            SourceMatch::Chatops => "chatops",
            SourceMatch::Cli => "cli",
            SourceMatch::Flux => "flux",
            SourceMatch::Argocd => "argocd",
            SourceMatch::Request => "request",
            SourceMatch::Any => "any",
        })
    }
}

impl SourceMatch {
    pub(crate) fn admits(self, source: Source) -> bool {
        match self {
            SourceMatch::Any => true,
            SourceMatch::Alertmanager => source == Source::Alertmanager,
            SourceMatch::Github => source == Source::Github,
            SourceMatch::Chatops => source == Source::Chatops,
            SourceMatch::Cli => source == Source::Cli,
            SourceMatch::Flux => source == Source::Flux,
            SourceMatch::Argocd => source == Source::Argocd,
            SourceMatch::Request => matches!(source, Source::Cli | Source::Chatops),
        }
    }
}

/// Where a policy's notices go.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Route {
    /// Every state of every incident.
    Channel(String),
    /// Only these states.
    Only { channel: String, events: Vec<crate::domain::notice::NoticeKind> },
}

impl Route {
    pub fn channel(&self) -> &str {
        match self {
            Route::Channel(c) | Route::Only { channel: c, .. } => c,
        }
    }

    pub fn admits(&self, kind: crate::domain::notice::NoticeKind) -> bool {
        match self {
            Route::Channel(_) => true,
            Route::Only { events, .. } => events.contains(&kind),
        }
    }
}

/// A minijinja expression over the event, checked for syntax when the policy is loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expr(pub String);

crate::support::schema::string_schema!(
    Expr,
    "Template",
    "A value, or a template over the event (`{{ labels.service }}`), checked when the policy is loaded.",
);

impl<'de> Deserialize<'de> for Expr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        template::check_expression(&s).map_err(|e| serde::de::Error::custom(format!("bad template `{s}`: {e}")))?;
        Ok(Expr(s))
    }
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    pub service: Expr,
    pub env: Expr,
    #[schemars(with = "Vec<Expr>")]
    pub paths: Vec<Spanned<Expr>>,
    /// A revision to roll back to instead of searching for known-good, e.g. `"{{ labels.sha }}~1"`
    /// for a CI event that names the bad commit.
    #[serde(default)]
    pub to: Option<Expr>,
    /// Write the rollback in steps (the canary overlay first, then the rest), each soaked and
    /// checked before the next. The last phase is the whole target.
    /// `groups` is the same, read as an ordered rollback of several services' paths (the
    /// consumer before the producer).
    #[serde(default, alias = "groups")]
    #[schemars(with = "Vec<PhaseSpec>")]
    pub phases: Vec<Spanned<PhaseSpec>>,
}

/// One step of a phased rollback, as written in a policy.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PhaseSpec {
    /// What people call this step (`canary`, `consumer`): shown in commits and `status`.
    #[serde(default)]
    pub name: Option<String>,
    /// Paths within the target's; the last phase's may be left out (it is the target's).
    #[serde(default)]
    pub paths: Vec<Expr>,
    /// How long this phase runs before the next may be written. Default `0s`.
    #[serde(default)]
    pub soak: Duration,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Push the rollback to the target branch.
    Direct,
    /// Propose the rollback for review; the target branch is untouched until approved.
    #[default]
    PullRequest,
    /// Explain and record nothing.
    Notify,
    /// Not a rollback: tag the event's `sha` as `known-good/<service>/<env>/<stamp>` when the
    /// target paths exist there (successful deployments).
    KnownGood,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Direct => "direct",
            Mode::PullRequest => "pull_request",
            Mode::Notify => "notify",
            Mode::KnownGood => "known_good",
        })
    }
}

#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Action {
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub strategy: Strategy,
    /// For `mode: known_good`: how long the deployment must stay free of firing alerts for its
    /// service/env before it is tagged. Default `0s`: tagged at once.
    #[serde(default = "zero_duration")]
    pub min_healthy: crate::support::duration::Duration,
    /// Only ever write an exact earlier state: a revert whose result for the target paths never
    /// existed on the branch (a three-way merge over later changes) becomes a restore.
    #[serde(default)]
    pub exact: bool,
    /// A rollback whose result leaves the target with no files at all (the bad change is the
    /// service's first deploy: there is nothing to go back to) deletes the service, and a
    /// controller that prunes deletes the workload. Denied unless this is `true`.
    #[serde(default)]
    pub allow_removal: bool,
}

fn zero_duration() -> crate::support::duration::Duration {
    crate::support::duration::Duration::ZERO
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnViolation {
    #[default]
    Deny,
    Propose,
}

/// What marks a change as irreversible: a file it changes, or a trailer in its message (or in
/// a commit a merge brought in).
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Irreversible {
    #[serde(default)]
    pub paths: Vec<PathPattern>,
    #[serde(default)]
    pub trailers: Vec<TrailerLine>,
}

/// A repository path glob, fixed in the policy (no template).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathPattern(pub String);

crate::support::schema::string_schema!(
    PathPattern,
    "PathPattern",
    "A path glob in the config repo, fixed in the policy (no template), e.g. `**/migrations/**`.",
);

impl<'de> Deserialize<'de> for PathPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        crate::domain::plan::validate_path_pattern(&s)
            .map_err(|e| serde::de::Error::custom(format!("path `{s}`: {e}")))?;
        Ok(PathPattern(s))
    }
}

/// A commit trailer, `Key: value`: the key compared as git does (ignoring case), the value
/// exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrailerLine {
    pub key: String,
    pub value: String,
}

impl TrailerLine {
    pub fn matches(&self, key: &str, value: &str) -> bool {
        self.key.eq_ignore_ascii_case(key.trim()) && self.value == value.trim()
    }
}

impl fmt::Display for TrailerLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.value)
    }
}

crate::support::schema::string_schema!(
    TrailerLine,
    "TrailerLine",
    "A commit trailer, `Key: value`, e.g. `Irreversible: true`.",
    pattern = "^[A-Za-z][A-Za-z0-9-]*:\\s*\\S.*$"
);

impl<'de> Deserialize<'de> for TrailerLine {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let bad = || serde::de::Error::custom(format!("trailer `{s}`: write it as `Key: value`"));
        let (key, value) = s.split_once(':').ok_or_else(bad)?;
        let (key, value) = (key.trim(), value.trim());
        let key_ok = key.starts_with(|c: char| c.is_ascii_alphabetic())
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !key_ok || value.is_empty() || value.contains(|c: char| c.is_control()) {
            return Err(bad());
        }
        Ok(TrailerLine { key: key.to_string(), value: value.to_string() })
    }
}

#[derive(Clone, Copy, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub count: u32,
    pub per: Duration,
}

#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Guards {
    #[serde(default)]
    pub cooldown: Option<Duration>,
    #[serde(default)]
    pub max_rollbacks: Option<RateLimit>,
    #[serde(default)]
    pub max_change_age: Option<Duration>,
    /// How old the known-good state a rollback would go back to may be (the time its commit
    /// reached the branch): older, and restoring it is no longer a safe automatic step.
    #[serde(default)]
    pub max_known_good_age: Option<Duration>,
    /// How long an irreversible change (any change, when the policy declares no
    /// `irreversible`) may have been on the branch before its rollback must be reviewed.
    #[serde(default)]
    pub point_of_no_return: Option<Duration>,
    #[serde(default)]
    pub require_immutable_artifacts: bool,
    #[serde(default)]
    pub on_violation: OnViolation,
}

/// Who may act on this policy's rollbacks from chat (Slack, GitHub comments).
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Chatops {
    /// May request a rollback.
    #[serde(default)]
    pub allow: Vec<Rule>,
    /// May approve (and cancel) a proposed rollback.
    #[serde(default)]
    pub approve: Vec<Rule>,
    /// May break glass (`--emergency`): guards and freezes do not apply, and the rollback is
    /// pushed directly, recorded as an emergency and flagged for review.
    #[serde(default)]
    pub emergency: Vec<Rule>,
    /// Nobody approves their own request.
    #[serde(default)]
    pub two_person: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MergeMethod {
    #[default]
    Merge,
    Squash,
    Rebase,
}

/// How proposals are reviewed and merged.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Review {
    /// Approvals by people in `chatops.approve` needed to merge. Default: 1.
    #[serde(default = "one")]
    pub approvals: u32,
    #[serde(default)]
    pub merge: MergeMethod,
    /// Merge as soon as required checks pass, without approvals.
    #[serde(default)]
    pub auto_merge: bool,
    /// Requested reviewers (GitHub logins) and teams (`org/team`) on a proposal's PR.
    #[serde(default)]
    pub reviewers: Vec<String>,
    #[serde(default)]
    pub teams: Vec<String>,
    /// Checks that must pass before an auto-merge.
    #[serde(default)]
    pub required_checks: Vec<String>,
}

fn one() -> u32 {
    1
}

impl Default for Review {
    fn default() -> Self {
        Review {
            approvals: 1,
            merge: MergeMethod::default(),
            auto_merge: false,
            reviewers: Vec::new(),
            teams: Vec::new(),
            required_checks: Vec::new(),
        }
    }
}

/// Why a policy did or did not match an event: one line of the decision trace.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MatchReport {
    pub matched: bool,
    pub reasons: Vec<String>,
}

impl Policy {
    pub fn name(&self) -> &str {
        &self.name.value
    }

    /// A target path expression as the glob of every path it can render to: a label an
    /// equality matcher pins is that value, any other template part is `*`. What `check` and
    /// the safety checks of policies read a policy's reach from.
    pub(crate) fn path_glob(&self, expr: &str) -> String {
        static LABEL: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
        static ANY: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
        let label = LABEL.get_or_init(|| regex::Regex::new(r"\{\{\s*labels\.(\w+)\s*\}\}").expect("static regex"));
        let any = ANY.get_or_init(|| regex::Regex::new(r"\{\{.*?\}\}").expect("static regex"));
        let pinned = label.replace_all(expr, |c: &regex::Captures<'_>| {
            self.matches
                .matchers
                .iter()
                .find(|m| m.name == c[1] && m.op == crate::domain::matcher::MatchOp::Equal)
                .map_or_else(|| "*".to_string(), |m| m.value.clone())
        });
        any.replace_all(&pinned, "*").into_owned()
    }

    /// Whether the target path expression `expr` could render to a pattern matching `file`.
    pub(crate) fn path_reaches(&self, expr: &str, file: &str) -> bool {
        globset::Glob::new(&self.path_glob(expr)).is_ok_and(|g| g.compile_matcher().is_match(file))
    }

    /// Whether the policy's `match` holds, with a reason for every check.
    pub fn evaluate(&self, event: &Event) -> MatchReport {
        let mut reasons = Vec::new();
        let mut matched = true;
        if self.matches.source.admits(event.source) {
            reasons.push(format!("source {} admitted (policy wants {})", event.source, self.matches.source));
        } else {
            matched = false;
            reasons.push(format!("source is {}, policy wants {}", event.source, self.matches.source));
        }
        if event.from_fork && !self.matches.forks {
            matched = false;
            reasons.push("the CI run is from a fork, and the policy does not set match.forks: true".into());
        }
        for m in &self.matches.matchers {
            let actual = event.labels.get(&m.name);
            let shown = actual.map_or_else(|| "absent".to_string(), |v| format!("{v:?}"));
            if m.matches(&event.labels) {
                reasons.push(format!("{m} holds ({} is {shown})", m.name));
            } else {
                matched = false;
                reasons.push(format!("{m} fails ({} is {shown})", m.name));
            }
        }
        MatchReport { matched, reasons }
    }

    /// Renders service, env and paths for an event. Every value the expressions print from the
    /// event must be an identifier, and so must the service and env that come out, so a label
    /// can name one service but never widen, redirect or escape the policy's own paths.
    /// What is wrong with `target.phases`, and where (line, column) when a phase is to blame.
    fn phases_problem(&self) -> Option<(Option<(u64, u64)>, String)> {
        let phases = &self.target.phases;
        let at = |p: &Spanned<PhaseSpec>| Some((p.referenced.line(), p.referenced.column()));
        match phases.len() {
            0 => return None,
            1 => {
                return Some((
                    at(&phases[0]),
                    "target.phases: one phase is the rollback itself; write two or more, or none".into(),
                ));
            }
            n if n > crate::domain::phase::MAX_PHASES as usize => {
                return Some((
                    at(&phases[0]),
                    format!("target.phases: {n} phases; at most {}", crate::domain::phase::MAX_PHASES),
                ));
            }
            _ => {}
        }
        if self.action.mode != Mode::Direct {
            return Some((
                at(&phases[0]),
                "target.phases needs `action.mode: direct`: a proposal is reviewed and merged whole".into(),
            ));
        }
        let plain = |n: &str| n.len() <= 40 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if let Some(p) = phases.iter().find(|p| p.value.name.as_deref().is_some_and(|n| !plain(n))) {
            return Some((at(p), "a phase's name is letters, digits, `.`, `_` and `-`, at most 40".into()));
        }
        let (last, steps) = phases.split_last()?;
        if let Some((i, p)) = steps.iter().enumerate().find(|(_, p)| p.value.paths.is_empty()) {
            return Some((at(p), format!("target.phases[{i}] names no paths")));
        }
        let target: Vec<&str> = self.target.paths.iter().map(|p| p.value.0.as_str()).collect();
        let named: Vec<&str> = last.value.paths.iter().map(|p| p.0.as_str()).collect();
        if !named.is_empty() && named != target {
            return Some((
                at(last),
                "the last phase is the whole target: leave its paths out, or write target.paths".into(),
            ));
        }
        None
    }

    pub fn resolve_target(&self, event: &Event, rules: &InputRules) -> Result<Target, String> {
        let ctx = template_context(event);
        let render = |field: &str, e: &Expr| {
            template::render_expression(&e.0, &ctx, rules).map_err(|err| format!("target.{field} `{}`: {err}", e.0))
        };
        let service = render("service", &self.target.service)?;
        let env = render("env", &self.target.env)?;
        for (what, v) in [("target.service", &service), ("target.env", &env)] {
            rules.identifier(what, v).map_err(|e| e.to_string())?;
        }
        let mut paths = Vec::new();
        for p in &self.target.paths {
            let path = render("paths", &p.value)?;
            crate::domain::plan::validate_path_pattern(&path)
                .map_err(|e| format!("target.paths `{}`: {e}", p.value.0))?;
            paths.push(path);
        }
        if paths.is_empty() {
            return Err("target.paths is empty".into());
        }
        let mut phases = Vec::new();
        for (i, phase) in self.target.phases.iter().enumerate() {
            let last = i + 1 == self.target.phases.len();
            let mut phase_paths = Vec::new();
            for p in &phase.value.paths {
                let path = render("phases.paths", p)?;
                crate::domain::plan::validate_path_pattern(&path)
                    .map_err(|e| format!("target.phases[{i}].paths `{}`: {e}", p.0))?;
                phase_paths.push(path);
            }
            if last {
                phase_paths = paths.clone();
            }
            phases.push(crate::domain::phase::PhaseTarget {
                name: phase.value.name.clone(),
                paths: phase_paths,
                soak: phase.value.soak,
            });
        }
        Ok(Target { service, env, paths, phases })
    }

    /// The rendered `target.to`, when the policy has one: a commit id or a name, with the
    /// policy's own `~N` / `^N` suffixes. Nothing from input reaches git's revision syntax.
    pub fn resolve_to(&self, event: &Event, rules: &InputRules) -> Result<Option<String>, String> {
        let Some(e) = &self.target.to else { return Ok(None) };
        let rev = template::render_expression(&e.0, &template_context(event), rules)
            .map_err(|err| format!("target.to `{}`: {err}", e.0))?;
        if rev.is_empty() {
            return Ok(None);
        }
        let base = rev.trim_end_matches(|c: char| c == '~' || c == '^' || c.is_ascii_digit());
        let base = if base.is_empty() { rev.as_str() } else { base };
        rules.identifier("target.to", base).map_err(|e| e.to_string())?;
        Ok(Some(rev))
    }
}

/// What policy expressions can refer to.
pub(crate) fn template_context(event: &Event) -> minijinja::Value {
    crate::support::template::value(serde_json::json!({
        "source": event.source,
        "labels": event.labels,
        "annotations": event.annotations,
        "dedupe_key": event.dedupe_key,
    }))
}

/// All policies, in evaluation order: file-name order, then document order.
#[derive(Clone, Debug, Default)]
pub struct PolicySet {
    pub policies: Vec<Policy>,
}

impl PolicySet {
    /// The policies of `files` (name, text), in order; `dir` names where they are in messages.
    /// Every error of every file, or the set with its warnings.
    pub fn parse(
        dir: &Path,
        files: Vec<(PathBuf, String)>,
        mut diags: Vec<Diagnostic>,
    ) -> Result<(PolicySet, Vec<Diagnostic>), Vec<Diagnostic>> {
        let mut policies: Vec<Policy> = Vec::new();
        let mut names: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for (file, text) in files {
            // A name is shown in logs, `status` and check runs: a terminal escape in one (a
            // file pushed to the repo) must not reach them.
            let name = file.to_string_lossy();
            if name.chars().any(char::is_control) {
                let shown = PathBuf::from(name.escape_debug().to_string());
                diags.push(Diagnostic::error(&shown, 0, 0, "control characters in a policy file's name".into()));
                continue;
            }
            match parse_file(&file, &text) {
                Ok(found) => {
                    for p in found {
                        if let Some(prev) = names.get(&p.name.value).map(|&i| &policies[i]) {
                            diags.push(Diagnostic::error(
                                &file,
                                p.name.referenced.line(),
                                p.name.referenced.column(),
                                format!(
                                    "policy name `{}` is already used at {}:{}",
                                    p.name.value,
                                    prev.file.display(),
                                    prev.name.referenced.line()
                                ),
                            ));
                        }
                        if let Some((at, message)) = p.phases_problem() {
                            let (line, column) =
                                at.map_or((p.name.referenced.line(), p.name.referenced.column()), |l| l);
                            diags.push(Diagnostic::error(
                                &file,
                                line,
                                column,
                                format!("policy {}: {message}", p.name.value),
                            ));
                        }
                        names.entry(p.name.value.clone()).or_insert(policies.len());
                        policies.push(p);
                    }
                }
                Err(errors) => diags.extend(errors),
            }
        }
        if policies.is_empty() && diags.is_empty() {
            diags.push(Diagnostic::warning(dir, 0, 0, "no policies: every event will be ignored".into()));
        }
        if diags.len() > MAX_ERRORS {
            let more = diags.len() - MAX_ERRORS;
            diags.truncate(MAX_ERRORS);
            diags.push(Diagnostic::error(dir, 0, 0, format!("and {more} more")));
        }
        if diags.iter().any(|d| d.severity == Severity::Error) {
            return Err(diags);
        }
        Ok((PolicySet { policies }, diags))
    }

    /// The first policy whose `match` holds, and the report of every policy tried.
    pub fn first_match(&self, event: &Event) -> (Option<&Policy>, Vec<(String, MatchReport)>) {
        let mut tried = Vec::new();
        for p in &self.policies {
            let report = p.evaluate(event);
            let matched = report.matched;
            tried.push((p.name().to_string(), report));
            if matched {
                return (Some(p), tried);
            }
        }
        (None, tried)
    }
}

/// The policies of one file, or every error in it: when the file as a whole does not parse,
/// each top-level list item is read on its own, so one bad policy does not hide the next.
fn yes() -> bool {
    true
}

pub fn parse_file(file: &Path, text: &str) -> Result<Vec<Policy>, Vec<Diagnostic>> {
    let whole = parse_text(file, text);
    let Err(first) = whole else { return whole.map_err(|e| vec![e]) };
    if text.len() > MAX_FILE_BYTES {
        return Err(vec![Diagnostic::error(
            file,
            0,
            0,
            format!("larger than {MAX_FILE_BYTES} bytes: not a policy file"),
        )]);
    }
    let items = top_level_items(text);
    // Rereading item by item costs each item a parse of its own: bounded, so a huge broken
    // file costs one parse and its first error, never minutes of the writer.
    if items.is_empty() || items.len() > MAX_REREAD_ITEMS {
        return Err(vec![first]);
    }
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut errors: Vec<Diagnostic> = Vec::new();
    for (i, &start) in items.iter().enumerate() {
        let end = items.get(i + 1).copied().unwrap_or(lines.len());
        // Blank lines in front keep every line number where it is in the file.
        let item = format!("{}{}", "\n".repeat(start), lines[start..end].concat());
        for e in item_errors(file, item) {
            if !errors.iter().any(|x| x.line == e.line && x.message == e.message) {
                errors.push(e);
            }
        }
    }
    // Items fine on their own but not together (a stray document marker, say): the first error.
    if errors.is_empty() {
        errors.push(first);
    }
    Err(errors)
}

/// Every error of one policy item, not only the first serde meets: after each error its line
/// (with the lines nested under it) is blanked and the item read again, so two wrong values
/// are two errors, each at its line. Bounded; an error the blanking itself caused (the key it
/// removed is now missing) ends the search.
fn item_errors(file: &Path, item: String) -> Vec<Diagnostic> {
    const MAX_PER_ITEM: usize = 10;
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut lines: Vec<String> = item.split_inclusive('\n').map(str::to_string).collect();
    let mut errors: Vec<Diagnostic> = Vec::new();
    let mut removed: Vec<String> = Vec::new();
    // Spans taken out of a line (line, byte offset, length), in order.
    let mut cut: Vec<(usize, usize, usize)> = Vec::new();
    for _ in 0..MAX_PER_ITEM {
        let Err(e) = parse_text(file, &lines.concat()) else { break };
        if removed.iter().any(|k| e.message.contains(&format!("missing field `{k}`"))) {
            break;
        }
        let mut e = e;
        let at = usize::try_from(e.line).unwrap_or(0).checked_sub(1);
        let column = usize::try_from(e.column).unwrap_or(0).checked_sub(1);
        // Said at the column of the file as written, before entries were taken out of the line.
        if let (Some(line), Some(mut c)) = (at, column) {
            for &(_, from, len) in cut.iter().rev().filter(|(l, ..)| *l == line) {
                if c >= from {
                    c += len;
                }
            }
            e.column = c as u64 + 1;
        }
        errors.push(e);
        // The item's own first line (`- name: ...`) cannot go without taking the item with it.
        let Some(at) = at.filter(|&i| i < lines.len() && !lines[i].starts_with('-')) else { break };
        // A value in a flow mapping (`guards: { cooldown: 1q, max_change_age: 2x }`): only its
        // entry goes, so the line's other entries are read again.
        if let Some((line, key)) = column.and_then(|c| without_flow_entry(&lines[at], c)) {
            let len = lines[at].len() - line.len();
            let from = lines[at].bytes().zip(line.bytes()).take_while(|(a, b)| a == b).count();
            cut.push((at, from, len));
            lines[at] = line;
            removed.push(key);
            continue;
        }
        let depth = indent(&lines[at]);
        let key =
            lines[at].trim_start().trim_start_matches("- ").split(':').next().unwrap_or_default().trim().to_string();
        removed.push(key);
        let mut j = at;
        while j < lines.len() && (j == at || lines[j].trim().is_empty() || indent(&lines[j]) > depth) {
            lines[j] = "\n".to_string();
            j += 1;
        }
        // A key left with nothing under it would read as null: it goes too (up to the item).
        let mut child = at;
        while let Some(parent) = (0..child).rev().find(|&p| !lines[p].trim().is_empty()) {
            let d = indent(&lines[parent]);
            if lines[parent].starts_with('-') || d >= depth || !lines[parent].trim_end().ends_with(':') {
                break;
            }
            let rest = (parent + 1..lines.len()).take_while(|&k| lines[k].trim().is_empty() || indent(&lines[k]) > d);
            if rest.clone().any(|k| !lines[k].trim().is_empty()) {
                break;
            }
            removed.push(lines[parent].trim().trim_end_matches(':').to_string());
            lines[parent] = "\n".to_string();
            child = parent;
        }
    }
    errors
}

/// `line` without the `key: value` entry of a one-level flow mapping that byte `column` is in,
/// and that entry's key; `None` when `column` is not in such an entry (nested, or block style).
fn without_flow_entry(line: &str, column: usize) -> Option<(String, String)> {
    if !line.is_char_boundary(column) || column >= line.len() {
        return None;
    }
    let start = line[..column].rfind([',', '{'])?;
    let end = column + line[column..].find([',', '}'])?;
    let entry = &line[start + 1..end];
    if entry.contains(['{', '[', ']', '}']) || !line[..start].contains('{') && !line[start..].starts_with('{') {
        return None;
    }
    let key = entry.split(':').next()?.trim().to_string();
    if key.is_empty() {
        return None;
    }
    let (from, to) = match (line.as_bytes()[start], line.as_bytes()[end]) {
        // `{ a: 1, b: 2 }` without a: from after `{` through the comma.
        (b'{', b',') => (start + 1, end + 1),
        // Without b (or the only entry): from the comma before it (or after `{`) to the `}`.
        (b',', _) => (start, end),
        _ => (start + 1, end),
    };
    Some((format!("{}{}", &line[..from], &line[to..]), key))
}

/// A policy file larger than this is refused unread (a policy set is kilobytes).
pub(crate) const MAX_FILE_BYTES: usize = 1 << 20;
/// Items of a broken file reread one by one to find every error; beyond, the first error.
const MAX_REREAD_ITEMS: usize = 200;
/// Errors kept per policy set: the rest are counted, not listed.
const MAX_ERRORS: usize = 50;

fn parse_text(file: &Path, text: &str) -> Result<Vec<Policy>, Diagnostic> {
    if text.len() > MAX_FILE_BYTES {
        return Err(Diagnostic::error(file, 0, 0, format!("larger than {MAX_FILE_BYTES} bytes: not a policy file")));
    }
    let docs: Vec<Vec<Policy>> = serde_saphyr::from_multiple(text).map_err(|e| Diagnostic::from_yaml(file, &e))?;
    let mut out: Vec<Policy> = docs.into_iter().flatten().collect();
    for p in &mut out {
        p.file = file.to_path_buf();
    }
    Ok(out)
}

/// Where, in a policy file's `text`, the policy named `name` says `key` (`notify`, `verify`):
/// the 1-based line and column of `needle` in that key's lines (a route's name), else of the
/// key; `(0, 0)` when the file is not written so this reading can find it.
pub(crate) fn locate(text: &str, name: &str, key: &str, needle: &str) -> (u64, u64) {
    let lines: Vec<&str> = text.lines().collect();
    let starts = top_level_items(text);
    let bare = |l: &str| l.trim_start().trim_start_matches("- ").trim_start().to_string();
    let unquote = |v: &str| v.trim().trim_matches(|c| c == '"' || c == '\'').to_string();
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(lines.len());
        let item = &lines[start..end];
        let named = item.iter().any(|l| bare(l).strip_prefix("name:").is_some_and(|v| unquote(v) == name));
        if !named {
            continue;
        }
        let Some(k) = item.iter().position(|l| bare(l).starts_with(&format!("{key}:"))) else { return (0, 0) };
        let indent = |l: &str| l.len() - l.trim_start().len();
        let key_indent = indent(item[k]);
        let word = |l: &str| -> Option<usize> {
            l.match_indices(needle).map(|(at, _)| at).find(|&at| {
                let before = l[..at].chars().next_back();
                let after = l[at + needle.len()..].chars().next();
                let edge = |c: Option<char>| c.is_none_or(|c| !(c.is_alphanumeric() || c == '-' || c == '_'));
                edge(before) && edge(after)
            })
        };
        let mut j = k;
        while j < item.len() && (j == k || item[j].trim().is_empty() || indent(item[j]) > key_indent) {
            if let Some(at) = word(item[j]) {
                return ((start + j + 1) as u64, (at + 1) as u64);
            }
            j += 1;
        }
        return ((start + k + 1) as u64, (indent(item[k]) + 1) as u64);
    }
    (0, 0)
}

/// The 0-based lines where an item of a top-level block list starts (`- ` in column 0), or
/// nothing when the file is not written that way.
fn top_level_items(text: &str) -> Vec<usize> {
    let mut starts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line == "-" || line.starts_with("- ") {
            starts.push(i);
        } else if line.starts_with("---") || line.starts_with("...") || line.starts_with('%') {
            // Several documents, or directives: not one list this reading can split.
            return Vec::new();
        }
    }
    starts
}

#[cfg(test)]
mod flow_entry_tests {
    use super::without_flow_entry;

    #[test]
    fn an_entry_goes_with_one_comma_and_the_key_is_named() {
        let line = "  guards: { a: 1q, b: 2x, c: 3 }\n";
        let at = |v: &str| line.find(v).unwrap();
        assert_eq!(without_flow_entry(line, at("1q")), Some(("  guards: { b: 2x, c: 3 }\n".into(), "a".into())));
        assert_eq!(without_flow_entry(line, at("2x")), Some(("  guards: { a: 1q, c: 3 }\n".into(), "b".into())));
        assert_eq!(without_flow_entry(line, at("3")), Some(("  guards: { a: 1q, b: 2x}\n".into(), "c".into())));
        // Block style, or nested: not this function's.
        assert_eq!(without_flow_entry("    cooldown: 5x\n", 14), None);
        assert_eq!(without_flow_entry("  a: { b: [1, 2x] }\n", 15), None);
    }

    proptest::proptest! {
        #[test]
        fn any_line_and_column_is_read_without_panic(line in ".{0,80}", column in 0usize..100) {
            let _ = without_flow_entry(&line, column);
        }
    }
}
