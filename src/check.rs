//! `rollbackd check`: every problem in the config, the policies and the templates, each with
//! its file, line and column. Errors fail the check; warnings (a glob that matches nothing in the
//! repo) do not.

use std::path::Path;

use crate::config::{Config, ConfigFile, PolicySource, Secrets};
use crate::domain::event::{Event, Source};
use crate::domain::plan::{CommitInfo, KnownGood, KnownGoodSource, Plan, Sha, Strategy, Target};
use crate::domain::policy::PolicySet;
use crate::domain::rollback::{Delivery, RollbackId};
use crate::engine::message_context;
use crate::git::{Auth, ConfigRepo, PathSet};
use crate::support::diagnostic::{Diagnostic, Severity};
use crate::support::template::{TEMPLATE_FILES, TemplateError, Templates};

pub fn has_errors(diags: &[Diagnostic]) -> bool {
    diags.iter().any(|d| d.severity == Severity::Error)
}

/// What `rollbackd check` found, and whether the config repo itself could not be read.
#[derive(Debug, Default)]
pub struct CheckReport {
    pub diagnostics: Vec<Diagnostic>,
    /// Online, the config repo (`repo.url`) could not be fetched: a git/remote failure, not a
    /// mistake in the files.
    pub repo_unreadable: bool,
}

impl CheckReport {
    /// The CLI's exit code: 3 (git or remote failure) when the config repo could not be read,
    /// 1 on any other error, 0 otherwise (warnings do not fail).
    pub fn exit_code(&self) -> u8 {
        if self.repo_unreadable {
            3
        } else if has_errors(&self.diagnostics) {
            1
        } else {
            0
        }
    }
}

/// Every problem found. `offline`: no secret is read and nothing is asked of the network (the
/// config repo, Prometheus), so it runs in the config repo's CI with nothing but the files.
/// What `rollbackd check` is asked to check beyond the files.
#[derive(Clone, Copy, Debug, Default)]
pub struct Checks<'a> {
    /// No secret, no network.
    pub offline: bool,
    /// Check the policy files there instead of where the config says (the config repo's
    /// checkout, in its CI, when the policies live in the repo).
    pub policies: Option<&'a Path>,
    /// Ask GitHub what the forge's credentials are granted and how the repo merges.
    pub forge: bool,
    /// Only this repo of `repos:`.
    pub repo: Option<&'a str>,
}

pub fn run(config_path: &Path, checks: &Checks<'_>) -> CheckReport {
    let (offline, policies_dir) = (checks.offline, checks.policies);
    let loaded = if offline {
        ConfigFile::read(config_path).map(|c| (c, None))
    } else {
        ConfigFile::load(config_path).map(|(c, s)| (c, Some(s)))
    };
    let only = |d: Diagnostic| CheckReport { diagnostics: vec![d], repo_unreadable: false };
    let (file, secrets) = match loaded {
        Ok(c) => c,
        Err(crate::config::ConfigError::Invalid(d)) => return only(d),
        Err(e) => {
            let msg = e.to_string();
            let msg = msg.strip_prefix(&format!("{}: ", config_path.display())).unwrap_or(&msg).to_string();
            let hint = if offline { "" } else { " (`check --offline` checks the files without secrets)" };
            return only(Diagnostic::error(config_path, 0, 0, format!("{msg}{hint}")));
        }
    };
    let mut diags = Vec::new();
    let mut repo_unreadable = false;
    for unset in secrets.iter().flat_map(|s| &s.notify_unset) {
        diags.push(Diagnostic::warning(config_path, 0, 0, format!("{unset}: `serve` will refuse to start without it")));
    }
    // The same checks the engine makes when it starts, so `check` never passes a config that
    // `serve` then refuses.
    if let Err(e) = crate::domain::ident::InputRules::new(&file.shared().input) {
        diags.push(Diagnostic::error(config_path, 0, 0, e));
    }
    let members = match (checks.repo, policies_dir) {
        (Some(name), _) => match file.repo(Some(name)) {
            Ok(m) => vec![m],
            Err(e) => return only(Diagnostic::error(config_path, 0, 0, e)),
        },
        // A directory of policies is one repo's.
        (None, Some(_)) => match file.repo(None) {
            Ok(m) => vec![m],
            Err(e) => return only(Diagnostic::error(config_path, 0, 0, format!("--policies: {e}"))),
        },
        (None, None) => file.repos().to_vec(),
    };
    for member in members {
        let secrets = match secrets.as_ref().map(|_| member.secrets()).transpose() {
            Ok(s) => s,
            Err(e) => {
                diags.push(Diagnostic::error(config_path, 0, 0, e.to_string()));
                continue;
            }
        };
        let (found, unreadable) = check_repo(config_path, &member, secrets, checks);
        repo_unreadable |= unreadable;
        diags.extend(found.into_iter().map(|mut d| {
            if let Some(name) = member.member.as_deref().filter(|_| d.file == config_path) {
                d.message = format!("repos.{name}: {}", d.message);
            }
            d
        }));
    }
    CheckReport { diagnostics: diags, repo_unreadable }
}

/// The checks of one config repo: its policies, templates, routes and paths; and whether the
/// config repo could not be read (online).
fn check_repo(
    config_path: &Path,
    config: &Config,
    secrets: Option<Secrets>,
    checks: &Checks<'_>,
) -> (Vec<Diagnostic>, bool) {
    let (offline, policies_dir) = (checks.offline, checks.policies);
    let mut diags = Vec::new();
    // Online, the config repo: for the paths, and for the policies when they live there.
    // Online only: the signing key may be made in data_dir, as the mirror is.
    let keys = secrets.as_ref().and_then(|_| match config.keys() {
        Ok(k) => Some(k),
        Err(e) => {
            diags.push(Diagnostic::error(config_path, 0, 0, e.to_string()));
            None
        }
    });
    let repo = secrets.zip(keys.as_ref()).map(|(secrets, keys)| {
        let auth = Auth { token: secrets.git_token, ssh_key: config.repo.ssh_key_file.clone() };
        ConfigRepo::open(&crate::engine::git_settings(config, keys), auth).and_then(|mut r| r.fetch_now().map(|_| r))
    });
    // A repo that cannot be read is an error of its own (exit 3), whatever else is checked: a
    // `check` that says "valid" for a URL nobody can fetch sends people to a crash loop. A
    // mirror that cannot be made in data_dir is a local problem (exit 1).
    let repo_unreadable = match &repo {
        Some(Err(e)) => {
            let local = matches!(e, crate::git::GitError::Mirror { .. });
            let field = if local { "data_dir" } else { "repo.url" };
            diags.push(Diagnostic::error(config_path, 0, 0, format!("{field}: {e}")));
            !local
        }
        _ => false,
    };
    let policies = policies_of(config_path, config, policies_dir, repo.as_ref(), &mut diags);
    check_templates(config, policies.as_ref(), &mut diags);
    if let Some(set) = &policies {
        if let Err(d) = crate::engine::check_routes(config, set, &crate::engine::file_text) {
            diags.extend(d);
        }
        check_verify(config, set, offline, &mut diags);
        check_rules_match_someone(config, set, &mut diags);
        check_drills(config, set, &mut diags);
        if checks.forge {
            check_forge(config, set, offline, &mut diags);
        }
        if let Some(Ok(repo)) = &repo {
            check_paths_exist(config, repo, set, &mut diags);
            check_codeowners(config, repo, set, &mut diags);
        }
    }
    (diags, repo_unreadable)
}

/// The policies to check: from `--policies`, the directory, or the config repo (online); their
/// errors and warnings go to `diags`.
fn policies_of(
    config_path: &Path,
    config: &Config,
    policies_dir: Option<&Path>,
    repo: Option<&Result<ConfigRepo, crate::git::GitError>>,
    diags: &mut Vec<Diagnostic>,
) -> Option<PolicySet> {
    let loaded = match (policies_dir, &config.policies) {
        (Some(dir), _) => Some(crate::policy_dir::load(dir)),
        (None, PolicySource::Dir(dir)) => Some(crate::policy_dir::load(dir)),
        (None, PolicySource::Repo(r)) => match repo {
            Some(Ok(repo)) => Some(policies_in_repo(repo, &r.repo_path)),
            // Reported once above.
            Some(Err(_)) => None,
            None => {
                diags.push(Diagnostic::warning(
                    config_path,
                    0,
                    0,
                    format!(
                        "the policies live in the config repo ({}): not checked offline; pass --policies <checkout>/{} to check them",
                        r.repo_path, r.repo_path
                    ),
                ));
                None
            }
        },
    };
    match loaded {
        Some(Ok((set, warnings))) => {
            diags.extend(warnings);
            if let Some(dir) = config.policies.repo_path() {
                diags.extend(crate::engine::covers_policies(&set, dir));
            }
            Some(set)
        }
        Some(Err(errors)) => {
            diags.extend(errors);
            None
        }
        None => None,
    }
}

/// The templates load, and render a sample rollback of the first policy in every form.
fn check_templates(config: &Config, policies: Option<&PolicySet>, diags: &mut Vec<Diagnostic>) {
    match Templates::load(&config.templates) {
        Ok(t) => {
            // A trial render catches references to values that do not exist.
            let sample_policy = policies.and_then(|p| p.policies.first());
            if let Some(policy) = sample_policy {
                let (event, plan) = sample();
                let mut decision = crate::domain::decision::Decision::for_event(&event);
                decision.guards.push(crate::domain::guards::GuardCheck {
                    guard: "cooldown",
                    passed: true,
                    detail: "sample".into(),
                });
                decision.notes.push("sample note".into());
                let ctx = message_context(
                    &event,
                    policy,
                    &plan,
                    &RollbackId("rb-000000000000".into()),
                    Delivery::Direct,
                    &decision,
                    crate::support::text::quoted,
                );
                for name in TEMPLATE_FILES {
                    if let Err(e) = t.render(name, &ctx) {
                        diags.push(template_diagnostic(&config.templates, e));
                    }
                }
                let notice = crate::domain::notice::Notice::from_report(
                    &event,
                    &crate::domain::decision::Report {
                        decision: {
                            let mut d = decision.clone();
                            d.target = Some(plan.target.clone());
                            d
                        },
                        plan: Some(plan.clone()),
                        outcome: crate::domain::rollback::Outcome::Denied { reason: "sample".into() },
                    },
                    event.received_at,
                );
                for style in [crate::notify::Style::Plain, crate::notify::Style::Slack, crate::notify::Style::Markdown]
                {
                    if let Some(n) = &notice
                        && let Err(e) = crate::notify::render(&t, n, style)
                    {
                        diags.push(template_diagnostic(&config.templates, e));
                        break;
                    }
                }
            }
        }
        Err(e) => diags.push(template_diagnostic(&config.templates, e)),
    }
}

/// What the GitHub forge's credentials lack for these policies (`--forge`).
fn check_forge(config: &Config, set: &PolicySet, offline: bool, diags: &mut Vec<Diagnostic>) {
    let at = |error: bool, msg: String| {
        if error { Diagnostic::error(&config.path, 0, 0, msg) } else { Diagnostic::warning(&config.path, 0, 0, msg) }
    };
    if offline {
        diags.push(at(true, "--forge asks GitHub: it cannot run offline (pass --online)".into()));
        return;
    }
    let forge = match crate::forge::from_config(&config.forge) {
        Ok(f) => f,
        Err(e) => return diags.push(at(true, format!("forge: {e}"))),
    };
    let Some(gh) = forge.github() else {
        return diags.push(at(false, "forge.kind is local: no forge to check".into()));
    };
    match gh.grants() {
        Ok(grants) => {
            for (error, msg) in crate::forge::needs::compare(config, set, &grants) {
                diags.push(at(error, format!("forge: {msg}")));
            }
        }
        Err(e) => diags.push(at(true, format!("forge: cannot read what the credentials are granted: {e}"))),
    }
}

/// Warns about chat rules that can admit nobody: a group or team the directory does not list
/// (rollbackd cannot ask Slack or GitHub who is in one), or lists with no members.
fn check_rules_match_someone(config: &Config, set: &PolicySet, diags: &mut Vec<Diagnostic>) {
    let dir = &config.directory;
    for p in &set.policies {
        let c = &p.chatops;
        for (role, rules) in [("allow", &c.allow), ("approve", &c.approve), ("emergency", &c.emergency)] {
            for rule in rules.iter().map(ToString::to_string) {
                let members = match rule.split_once(':') {
                    Some(("slack-group", g)) => dir.slack_groups.get(g).map(Vec::len),
                    Some(("github-team", t)) => {
                        dir.github_teams.iter().find(|(k, _)| k.eq_ignore_ascii_case(t)).map(|(_, m)| m.len())
                    }
                    _ => continue,
                };
                let why = match members {
                    None => "is not in the config's `directory`, so it matches nobody",
                    Some(0) => "has no members in the config's `directory`, so it matches nobody",
                    Some(_) => continue,
                };
                diags.push(Diagnostic::warning(
                    &p.file,
                    0,
                    0,
                    format!("policy {}: chatops.{role}: `{rule}` {why}", p.name()),
                ));
            }
        }
    }
}

/// Every `drills:` target is one a policy would roll back, as `rollbackd drill` asks (a
/// person's request for that service/env): a target no policy rolls back is drilled for nothing.
fn check_drills(config: &Config, set: &PolicySet, diags: &mut Vec<Diagnostic>) {
    let Some(drills) = &config.drills else { return };
    let Ok(rules) = crate::domain::ident::InputRules::new(&config.input) else { return };
    for (i, t) in drills.targets.iter().enumerate() {
        let event = Event::request(
            Source::Cli,
            &t.service,
            &t.env,
            "cli:check",
            Some("drill"),
            jiff::Timestamp::UNIX_EPOCH,
            "check-drill",
        );
        let why = match crate::engine::drill_policy(set, &rules, &event) {
            Ok(Ok(_)) => continue,
            Ok(Err(why)) => why,
            Err(e) => e.to_string(),
        };
        diags.push(Diagnostic::warning(
            &config.path,
            0,
            0,
            format!("drills.targets[{i}] ({}/{}): nothing would be drilled: {why}", t.service, t.env),
        ));
    }
}

/// A policy that names `codeowners` needs a CODEOWNERS file on the watched branch that owns
/// every file its targets cover: warns where there is none, where a line is skipped (as GitHub
/// skips it), and where a target path holds a file nobody owns (nobody could approve it).
fn check_codeowners(config: &Config, repo: &ConfigRepo, set: &PolicySet, diags: &mut Vec<Diagnostic>) {
    let uses = |p: &crate::domain::policy::Policy| {
        let c = &p.chatops;
        c.allow.iter().chain(&c.approve).chain(&c.emergency).any(crate::domain::principal::Rule::is_codeowners)
            || p.review.reviewers.iter().any(|r| r == "codeowners")
    };
    let users: Vec<_> = set.policies.iter().filter(|p| uses(p)).collect();
    if users.is_empty() {
        return;
    }
    let owners = match crate::engine::read_codeowners(repo) {
        Ok(Some(o)) => o,
        Ok(None) => {
            for p in &users {
                diags.push(Diagnostic::warning(
                    &p.file,
                    0,
                    0,
                    format!(
                        "policy {}: uses codeowners, but {} has no CODEOWNERS file ({}): nobody is a code owner",
                        p.name(),
                        config.repo.branch,
                        crate::domain::codeowners::LOCATIONS.join(", ")
                    ),
                ));
            }
            return;
        }
        Err(e) => {
            diags.push(Diagnostic::warning(&config.path, 0, 0, format!("CODEOWNERS: {e}")));
            return;
        }
    };
    for s in &owners.skipped {
        diags.push(Diagnostic::warning(
            Path::new(&owners.path),
            s.line as u64,
            1,
            format!("{} line {} is skipped (as GitHub skips it): {}", owners.path, s.line, s.reason),
        ));
    }
    for policy in users {
        for p in &policy.target.paths {
            let glob = policy.path_glob(&p.value.0);
            let Ok(files) = PathSet::new(std::slice::from_ref(&glob))
                .map_err(|e| e.to_string())
                .and_then(|s| repo.files_matching(&s).map_err(|e| e.to_string()))
            else {
                continue;
            };
            let unowned: Vec<&String> = files.iter().filter(|f| owners.owners_of(f).is_empty()).collect();
            if let Some(first) = unowned.first() {
                diags.push(Diagnostic::warning(
                    &policy.file,
                    p.referenced.line(),
                    p.referenced.column(),
                    format!(
                        "policy {}: path `{}` has {} file(s) with no owner in {} (first: {first}): codeowners admits nobody for a rollback that changes them",
                        policy.name(),
                        p.value.0,
                        unowned.len(),
                        owners.path
                    ),
                ));
            }
        }
    }
}

/// A template error at its file, line and column.
fn template_diagnostic(dir: &Path, e: TemplateError) -> Diagnostic {
    match e {
        TemplateError::Syntax { file, line, column, message } => {
            Diagnostic::error(&file, line as u64, column as u64, message)
        }
        TemplateError::RenderAt { name, line, column, message } => {
            Diagnostic::error(&dir.join(name), line as u64, column as u64, message)
        }
        e => Diagnostic::error(dir, 0, 0, e.to_string()),
    }
}

/// What `verify` and `min_healthy` can and cannot mean, and a trial of every query against the
/// configured Prometheus (a query it refuses is an error; an unreachable one, a warning).
fn check_verify(config: &Config, set: &PolicySet, offline: bool, diags: &mut Vec<Diagnostic>) {
    use crate::domain::policy::Mode;
    for p in &set.policies {
        let at = |msg: String| Diagnostic::error(&p.file, 0, 0, format!("policy {}: {msg}", p.name()));
        if p.action.min_healthy > crate::support::duration::Duration::ZERO && p.action.mode != Mode::KnownGood {
            diags.push(at("action.min_healthy only means something with mode: known_good".into()));
        }
        let Some(v) = &p.verify else { continue };
        if matches!(p.action.mode, Mode::Notify | Mode::KnownGood) {
            diags.push(at(format!("verify: mode {} writes no rollback to verify", p.action.mode)));
        }
        if v.deploy_time.as_signed() + v.stable_for.as_signed() > v.within.as_signed() {
            diags.push(at(format!(
                "verify: deploy_time {} + stable_for {} is longer than within {}: nothing could ever verify",
                v.deploy_time, v.stable_for, v.within
            )));
        }
        let alerts = matches!(
            p.matches.source,
            crate::domain::policy::SourceMatch::Alertmanager | crate::domain::policy::SourceMatch::Any
        );
        // A configured GitOps controller verifies too: its report that it applied the rollback.
        let controller = config.sources.flux.is_some() || config.sources.argocd.is_some();
        if v.query.is_none() && !alerts && !controller {
            diags.push(Diagnostic::warning(
                &p.file,
                0,
                0,
                format!("policy {}: verify without a query: its rollbacks have no alert to resolve, so nothing can verify them", p.name()),
            ));
        }
        if let (Some(q), Some(prom)) = (&v.query, &config.prometheus) {
            let prom = (!offline).then_some(prom);
            let ctx = crate::support::template::value(serde_json::json!({
                "service": "sample", "env": "sample", "labels": { "service": "sample", "env": "sample" },
            }));
            let rendered = match crate::support::template::render_expression(
                &q.0,
                &ctx,
                &crate::domain::ident::InputRules::default(),
            ) {
                Ok(r) => r,
                Err(e) => {
                    diags.push(at(format!("verify.query: {e}")));
                    continue;
                }
            };
            let Some(prom) = prom else { continue };
            match crate::prometheus::query_holds(prom, &rendered) {
                Ok(_) => {}
                Err(e) if e.starts_with("Prometheus unreachable") => diags.push(Diagnostic::warning(
                    &p.file,
                    0,
                    0,
                    format!("policy {}: verify.query not tried: {e}", p.name()),
                )),
                Err(e) => diags.push(at(format!("verify.query `{rendered}`: {e}"))),
            }
        }
    }
}

/// Warns about target paths that match nothing on the branch. Templated parts are read as `*`
/// unless an equality matcher pins the label.
fn check_paths_exist(config: &Config, repo: &ConfigRepo, set: &PolicySet, diags: &mut Vec<Diagnostic>) {
    for policy in &set.policies {
        for p in &policy.target.paths {
            let glob = policy.path_glob(&p.value.0);
            let (line, col) = (p.referenced.line(), p.referenced.column());
            let result = PathSet::new(std::slice::from_ref(&glob))
                .map_err(|e| e.to_string())
                .and_then(|s| repo.any_path_matches(&s).map_err(|e| e.to_string()));
            match result {
                Ok(true) => {}
                Ok(false) => diags.push(Diagnostic::warning(
                    &policy.file,
                    line,
                    col,
                    format!("path `{}` (as `{glob}`) matches nothing on {}", p.value.0, config.repo.branch),
                )),
                Err(e) => diags.push(Diagnostic::error(&policy.file, line, col, format!("path `{}`: {e}", p.value.0))),
            }
        }
        // A phase whose paths match nothing is skipped at every rollback: a typo there quietly
        // removes the canary step.
        let steps = policy.target.phases.len().saturating_sub(1);
        for phase in policy.target.phases.iter().take(steps) {
            let globs: Vec<String> = phase.value.paths.iter().map(|p| policy.path_glob(&p.0)).collect();
            let matches = PathSet::new(&globs).ok().map(|s| repo.any_path_matches(&s));
            if let Some(Ok(false)) = matches {
                diags.push(Diagnostic::warning(
                    &policy.file,
                    phase.referenced.line(),
                    phase.referenced.column(),
                    format!(
                        "phase paths `{}` match nothing on {}: the phase would be skipped",
                        globs.join(", "),
                        config.repo.branch
                    ),
                ));
            }
        }
    }
}

/// The policies in `dir` of the config repo's branch, named by their path in the repo.
fn policies_in_repo(repo: &ConfigRepo, dir: &str) -> Result<(PolicySet, Vec<Diagnostic>), Vec<Diagnostic>> {
    let at = |msg: String| vec![Diagnostic::error(Path::new(dir), 0, 0, msg)];
    let (tree, _) = repo
        .dir_at_head(dir)
        .map_err(|e| at(e.to_string()))?
        .ok_or_else(|| at(format!("no such directory on {}", repo.branch())))?;
    let files = repo.yaml_files_in(&tree).map_err(|e| at(e.to_string()))?;
    let files = files.into_iter().map(|(name, text)| (Path::new(dir).join(name), text)).collect();
    PolicySet::parse(Path::new(dir), files, Vec::new())
}

fn sample() -> (Event, Plan) {
    let now = jiff::Timestamp::UNIX_EPOCH;
    let mut event = Event::request(Source::Cli, "checkout", "prod", "alice", Some("sample reason"), now, "check");
    // Every kind of value the templates may meet, so a trial render walks every branch.
    event.annotations.insert("summary".into(), "5xx above 5%".into());
    event.annotations.insert("generator_url".into(), "http://prometheus.example/graph".into());
    let sha = |c: char| Sha(c.to_string().repeat(40));
    let plan = Plan {
        target: Target {
            service: "checkout".into(),
            env: "prod".into(),
            paths: vec!["apps/checkout/prod/**".into()],
            phases: vec![],
        },
        branch: "main".into(),
        head: sha('a'),
        known_good: KnownGood {
            sha: sha('b'),
            source: KnownGoodSource::Tag { name: "known-good/checkout/prod/1".into() },
        },
        known_good_at: Some(now),
        bad_commits: vec![CommitInfo {
            sha: sha('c'),
            summary: "Deploy checkout 1.5.0".into(),
            author: "ci".into(),
            time: now,
            irreversible: vec!["changes `apps/checkout/prod/migrations/0042.sql`".into()],
        }],
        requested_strategy: Strategy::Auto,
        strategy: Strategy::Revert,
        strategy_note: None,
        completes: None,
        tree: "d".repeat(40),
        exact: false,
        diffstat: vec![crate::domain::plan::FileStat {
            path: "apps/checkout/prod/deployment.yaml".into(),
            insertions: 1,
            deletions: 1,
        }],
        artifacts: vec![crate::domain::artifacts::ArtifactChange {
            path: "apps/checkout/prod/deployment.yaml".into(),
            name: "image acme/checkout".into(),
            old: Some("acme/checkout:1.5.0".into()),
            new: Some("acme/checkout:1.4.2".into()),
        }],
        mutable_artifacts: vec![],
        leaves_no_files: false,
        phase: None,
        halted: None,
        went_on: None,
        also: Vec::new(),
        unapplied: Vec::new(),
    };
    (event, plan)
}
