//! The `rollbackd` binary: parses options, sets up logging, and hands over to the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use jiff::Timestamp;

use rollbackd::{
    Clock, ConfigFile, Engine, EngineError, Event, EventFileKind, FixedClock, HistoryQuery, Options, Outcome, Report,
    ServeError, Source, SystemClock,
};

#[derive(Parser)]
#[command(
    name = "rollbackd",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("ROLLBACKD_COMMIT"), ")"),
    about = "GitOps rollbacks from alerts, CI events and chat, audited in git"
)]
struct Cli {
    /// Configuration file.
    #[arg(long, global = true, env = "ROLLBACKD_CONFIG", default_value = "rollbackd.yaml")]
    config: PathBuf,
    /// Which config repo, by its name under `repos:`, when the file serves several.
    #[arg(long = "config-repo", global = true, env = "ROLLBACKD_CONFIG_REPO", value_name = "NAME")]
    config_repo: Option<String>,
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// A person at the CLI, as the audit trail records them.
#[derive(clap::Args)]
struct Who {
    /// Who you are, e.g. `--actor alice@example.com` (default: git's user.email, then $USER).
    /// Once people in `directory.people` have SSH keys, you are the person your key belongs to.
    #[arg(long, env = "ROLLBACKD_ACTOR")]
    actor: Option<String>,
    /// Your SSH private key (ed25519, mode 0600): you act as the person `directory.people`
    /// lists it under, and the policies' `chatops` rules apply to you as in chat.
    #[arg(long, env = "ROLLBACKD_SIGNING_KEY", value_name = "FILE")]
    signing_key: Option<PathBuf>,
}

impl Who {
    /// The person acting (when they signed with a key) and the name the audit trail records.
    fn resolve(self, engine: &Engine) -> anyhow::Result<rollbackd::Actor> {
        let principal = engine.config().operator(self.signing_key.as_deref()).map_err(Usage)?;
        match principal {
            Some(p) => {
                let name = p.id.trim_start_matches("cli:").to_string();
                if let Some(asserted) = self.actor.filter(|a| !a.trim().is_empty() && a.trim() != name) {
                    return Err(Usage(format!(
                        "--actor {asserted:?}: your key belongs to {name}; drop --actor or use your own key"
                    ))
                    .into());
                }
                Ok(rollbackd::Actor::Person(p))
            }
            None => Ok(rollbackd::Actor::Cli(whoami(self.actor)?)),
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the config, every policy and every template: every error with its file, line
    /// and column. Online (the default outside CI) it also reads the secrets, checks the paths
    /// against the config repo and tries each verify query on Prometheus.
    /// Example: `rollbackd --config rollbackd.yaml check --offline`
    Check {
        /// Check the files alone: no secret, no network. The default when `CI` is set.
        #[arg(long, conflicts_with = "online")]
        offline: bool,
        /// Read the secrets and ask the config repo and Prometheus, even when `CI` is set.
        #[arg(long)]
        online: bool,
        /// Check the policy files in this directory instead of where the config says: the
        /// checkout's `.rollbackd/policies` in the config repo's CI, when `policies.repo_path`
        /// keeps them there. Example: `check --offline --policies .rollbackd/policies`
        #[arg(long, value_name = "DIR")]
        policies: Option<PathBuf>,
        /// Also ask GitHub (online) whether the forge's token or App is granted every
        /// permission and webhook event the policies need, and allows their merge methods.
        /// Example: `check --forge`
        #[arg(long, conflicts_with = "offline")]
        forge: bool,
    },
    /// Show what an event would do: every policy tried, the guards, the plan. Writes nothing.
    Simulate {
        /// An Alertmanager webhook body, or an rollbackd event (JSON).
        #[arg(long)]
        event: PathBuf,
        /// What the file is; guessed from its content when left out.
        #[arg(long, value_enum)]
        source: Option<SimSource>,
        /// For a GitHub payload: the X-GitHub-Event name (guessed from the payload otherwise).
        #[arg(long)]
        github_event: Option<String>,
        /// Evaluate as if the time were this (RFC 3339), for guards.
        #[arg(long)]
        at: Option<Timestamp>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Roll a service back in one environment, as the policies allow.
    Rollback {
        /// The service to roll back, as the policies' targets name it, e.g. `checkout`.
        service: String,
        /// The environment, e.g. `prod`.
        #[arg(long)]
        env: String,
        /// Roll back to this revision instead of the known-good one.
        #[arg(long)]
        to: Option<String>,
        /// Why, in a few words: recorded in the commit's `Rollback-Reason` trailer.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        who: Who,
        /// Decide and plan; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Break glass: guards and freezes do not apply; recorded as an emergency.
        #[arg(long)]
        emergency: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Rehearse a rollback: write the rollback rollbackd would do now to the branch
    /// `rollbackd/drill/<service>/<env>` (never the watched branch), so the config repo's CI
    /// checks the rolled-back state. Not a rollback: no guard counts it, no hold follows.
    /// Example: `rollbackd drill checkout --env prod`
    Drill {
        /// The service, as the policies' targets name it, e.g. `checkout`.
        service: String,
        /// The environment, e.g. `prod`.
        #[arg(long)]
        env: String,
        #[command(flatten)]
        who: Who,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Rollbacks recorded in the config repo, newest first.
    History {
        /// Only this service's rollbacks.
        #[arg(long)]
        service: Option<String>,
        /// Only rollbacks in this environment.
        #[arg(long)]
        env: Option<String>,
        /// At most this many rollbacks, newest first.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Why something was or was not rolled back: the decisions, the rollbacks and their
    /// verification that git records about a rollback id, a trigger or an alert fingerprint.
    Explain {
        /// `rb-...`, a trigger (`alertmanager:<fingerprint>@<startsAt>`, `github:...`), or an
        /// alert fingerprint.
        subject: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The audit trail's signatures: `audit verify`.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Approve a proposed rollback (merged once the policy's approvals are met).
    Approve {
        /// The rollback id, `rb-...` (from the answer, `history` or `status`).
        id: String,
        #[command(flatten)]
        who: Who,
    },
    /// Cancel a proposed rollback: its branch is deleted, its commit kept as a tag.
    Cancel {
        /// The rollback id, `rb-...` (from the answer, `history` or `status`).
        id: String,
        #[command(flatten)]
        who: Who,
    },
    /// A phased rollback between phases: write the next phase now, whatever is left of the
    /// soak. Example: `rollbackd continue rb-0123456789ab`
    Continue {
        /// The rollback id, `rb-...` (from the answer, `history` or `status`).
        id: String,
        #[command(flatten)]
        who: Who,
    },
    /// A phased rollback between phases: stop it; the rest is proposed for review.
    /// Example: `rollbackd abort rb-0123456789ab --reason "canary still errors"`
    Abort {
        /// The rollback id, `rb-...` (from the answer, `history` or `status`).
        id: String,
        /// Why it stops: recorded with the halt and told to the channels.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        who: Who,
    },
    /// Freeze automatic rollbacks of a service (or `all`): they become proposals.
    Freeze {
        /// A service, or `all` for every service.
        scope: String,
        /// Only in this environment (default: every environment).
        #[arg(long)]
        env: Option<String>,
        /// How long (default 1h).
        #[arg(long = "for")]
        duration: Option<rollbackd::Duration>,
        /// Why: shown on the status page and recorded with the freeze.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        who: Who,
    },
    /// The kill switch: stop every automatic rollback fleet-wide (they become proposals, or are
    /// denied with `pause.automatic: nothing`) until `resume` or the end of `--for` (default 1h).
    Pause {
        /// How long, e.g. `30m`, `2h` (default 1h); `resume` ends it sooner.
        #[arg(long = "for")]
        duration: Option<rollbackd::Duration>,
        /// Why: shown on the status page and recorded with the pause.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        who: Who,
    },
    /// Lift the pause.
    Resume {
        #[command(flatten)]
        who: Who,
    },
    /// End a freeze.
    Unfreeze {
        /// The service the freeze names, or `all`.
        scope: String,
        /// The environment of the freeze to end.
        #[arg(long)]
        env: Option<String>,
        #[command(flatten)]
        who: Who,
    },
    /// Before the incident: for every service/env the policies cover, whether an automatic
    /// rollback would work now and what it would be (one line each; exit 2 when any is not
    /// ready). Writes nothing.
    /// Example: `rollbackd readiness checkout --env prod --json`
    Readiness {
        /// Only this service.
        service: Option<String>,
        /// Only this environment.
        #[arg(long)]
        env: Option<String>,
        /// Print JSON instead of text: an array of objects with `service`, `env`, `ready`,
        /// `reasons`, `known_good`, `strategy`, `mode`, `policy`.
        #[arg(long)]
        json: bool,
    },
    /// What rollbackd would do if a change went bad after merge: for each service/env it
    /// touches, the known-good version, strategy and mode, the files restored, the guards and
    /// the point-of-no-return clock. Writes nothing.
    /// Example: `rollbackd plan HEAD --base HEAD~1`
    Plan {
        /// The change's head revision (in rollbackd's mirror of the config repo).
        rev: String,
        /// What it is compared with (default: where it forked from the branch, or its parent
        /// when it is on the branch).
        #[arg(long)]
        base: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Freezes in force, open proposals and the last rollbacks.
    Status {
        /// Only this service.
        service: Option<String>,
    },
    /// Serve the webhooks (Alertmanager, GitHub, Slack) until SIGTERM.
    Serve {
        /// Overrides `listen` from the config (`127.0.0.1:0` picks a free port).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Exit 0 when the server on this machine answers `/healthz` (or `/readyz` with --ready),
    /// 1 otherwise: for a container's HEALTHCHECK, where there is no curl.
    /// Example: `rollbackd healthcheck --ready`
    Healthcheck {
        /// The server's base URL; by default the config's `listen` (an unspecified address
        /// such as 0.0.0.0 is asked on loopback).
        #[arg(long)]
        url: Option<String>,
        /// Ask `/readyz`: the config repo fetched and reachable, not only the process up.
        #[arg(long)]
        ready: bool,
    },
    /// Print the JSON Schema (draft 2020-12) of `rollbackd.yaml` or of a policy file, generated
    /// from the types rollbackd reads them with: for editors (`# yaml-language-server:
    /// $schema=...`) and CI. Example: `rollbackd schema policy > policy.schema.json`
    Schema {
        /// Which file: `config` (rollbackd.yaml) or `policy` (a file of the policies directory).
        #[arg(value_enum)]
        file: SchemaFile,
    },
    /// Fail (exit 2) when a change brings back an artifact a rollback undid and that is still
    /// held: for the config repo's CI. Exit 0 when clean.
    /// Example: `rollbackd gate HEAD --base origin/main --repo .`
    Gate {
        /// The revision to check.
        rev: String,
        /// What it is compared with (default: its parent).
        #[arg(long)]
        base: Option<String>,
        /// Read the revisions from this checkout instead of rollbackd's mirror (a pull request's
        /// commits are in the CI checkout, not yet on the origin's branch).
        #[arg(long, value_name = "DIR")]
        repo: Option<PathBuf>,
    },
    /// Lift the holds of a service in one environment: its held artifacts may come back.
    /// Example: `rollbackd release checkout --env prod --reason "1.5.1 fixes the leak"`
    Release {
        /// The service whose holds are lifted.
        service: String,
        /// The environment, e.g. `prod`.
        #[arg(long)]
        env: String,
        /// Why they may come back: recorded with the release.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        who: Who,
    },
    /// Print a shell completion script: `rollbackd completions bash > /etc/bash_completion.d/rollbackd`.
    Completions { shell: clap_complete::Shell },
    /// Create a local demo (config repo, config, policies), show what to try, and serve it.
    Demo {
        /// Where the demo is created (reused when it exists).
        #[arg(long, default_value = "demo")]
        dir: PathBuf,
        /// Create and explain the demo, but do not start the server.
        #[arg(long)]
        no_serve: bool,
        /// Where the demo's server listens (default 127.0.0.1:8080; `127.0.0.1:0` picks a free port).
        #[arg(long)]
        listen: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Every record rollbackd relies on (rollback commits through their tags, its tags, notes
    /// and state) with its signature status. Exit 0 when all are signed by a trusted key, 2 when
    /// any is unsigned or forged.
    Verify {
        /// From this date (`2026-11-01`), time (RFC 3339) or revision on; default: the audit window.
        #[arg(long, value_name = "REV|DATE")]
        since: Option<String>,
        /// One JSON object per record, in an array.
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum SchemaFile {
    Config,
    Policy,
}

#[derive(Clone, Copy, ValueEnum)]
enum SimSource {
    Alertmanager,
    Github,
    Flux,
    Argocd,
    Event,
}

impl SimSource {
    fn kind(self) -> EventFileKind {
        match self {
            SimSource::Alertmanager => EventFileKind::Alertmanager,
            SimSource::Github => EventFileKind::Github,
            SimSource::Flux => EventFileKind::Flux,
            SimSource::Argocd => EventFileKind::Argocd,
            SimSource::Event => EventFileKind::Event,
        }
    }
}

fn init_tracing(format: LogFormat, serving: bool) {
    let default = if serving { "rollbackd=info,warn" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("ROLLBACKD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // The HTTP client logs every URL it calls at debug, and webhook URLs carry their secret in
    // the path: its logs stop at warn whatever ROLLBACKD_LOG asks for.
    let filter = ["ureq=warn", "ureq_proto=warn"]
        .into_iter()
        .filter_map(|d| d.parse().ok())
        .fold(filter, |f, d| f.add_directive(d));
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// A mistake in how rollbackd was called: exit 64 (sysexits' EX_USAGE), never 2 ("denied").
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Usage(String);

const EX_USAGE: u8 = 64;

/// Who a person at the CLI is: `--actor` / `ROLLBACKD_ACTOR`, else git's `user.email`, else
/// `$USER`. In a bare container none is set, and a person's action is refused rather than
/// recorded as nobody.
fn whoami(flag: Option<String>) -> Result<String, Usage> {
    let non_empty = |s: &String| !s.trim().is_empty();
    let name = flag
        .filter(non_empty)
        .or_else(|| rollbackd::git_user_email().filter(non_empty))
        .or_else(|| std::env::var("USER").ok().filter(non_empty))
        .ok_or_else(|| {
            Usage("cannot tell who you are: pass --actor NAME or set ROLLBACKD_ACTOR (git's user.email and $USER are not set either)".into())
        })?;
    let name = name.trim().to_string();
    let ok = |c: char| c.is_ascii_alphanumeric() || "._@+-".contains(c);
    if name.len() > 64 || !name.chars().all(ok) {
        return Err(Usage(format!(
            "--actor {name:?}: use letters, digits and . _ @ + - (at most 64), e.g. alice@example.com"
        )));
    }
    Ok(name)
}

fn main() -> ExitCode {
    // Before any thread: libgit2 starts without parsing the CA bundle, which the first https
    // origin loads (most commands never need it, and it was half a CLI command's time).
    rollbackd::defer_ca_bundle();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EX_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let serving = matches!(cli.command, Command::Serve { .. } | Command::Demo { no_serve: false, .. });
    init_tracing(cli.log_format, serving);
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = match (e.downcast_ref::<EngineError>(), e.downcast_ref::<Usage>()) {
                (Some(engine), _) => engine.exit_code() as u8,
                (None, Some(_)) => EX_USAGE,
                (None, None) => 1,
            };
            eprintln!("{}", error_text(&format!("{e:#}")));
            ExitCode::from(code)
        }
    }
}

/// `error: <message>`, unless the message carries diagnostics that say so themselves
/// (`file:line:col: error: ...`, under a heading such as `policies are invalid:`): `error:`
/// once per problem, never `error: ... error: ...`.
fn error_text(message: &str) -> String {
    if message.lines().any(|l| l.contains(": error: ")) { message.to_string() } else { format!("error: {message}") }
}

fn engine(config: &Path, repo: Option<&str>, clock: Arc<dyn Clock>) -> anyhow::Result<CliEngine> {
    open_engine(config, repo, clock, true)
}

/// The engine of a command that only reads (`status`, `history`, `explain`, `readiness`,
/// `audit verify`): it tells no channel anything, so an unset channel secret is not worth a
/// warning.
fn reader(config: &Path, repo: Option<&str>, clock: Arc<dyn Clock>) -> anyhow::Result<CliEngine> {
    open_engine(config, repo, clock, false)
}

fn open_engine(config: &Path, repo: Option<&str>, clock: Arc<dyn Clock>, tells: bool) -> anyhow::Result<CliEngine> {
    let config = ConfigFile::read(config)?.repo(repo).map_err(Usage)?;
    let secrets = config.secrets()?;
    for unset in secrets.notify_unset.iter().filter(|_| tells) {
        tracing::warn!("{unset}: that channel is not told about what this command does");
    }
    Ok(CliEngine::new(Engine::new(config, secrets, clock)?, rollbackd::FINISH_WITHIN))
}

/// The engine of one command: the process exits as soon as the command is done, so what the
/// engine owes the forge and told people (a CLI rollback's pull request and notice) is given up
/// to ten seconds to go out then.
type CliEngine = rollbackd::Session;

/// 0 done (or nothing to do), 2 denied or not allowed by any policy.
fn exit_code(outcome: &Outcome) -> u8 {
    match outcome {
        Outcome::Denied { .. } | Outcome::Ignored { .. } => 2,
        _ => 0,
    }
}

fn print_reports(reports: &[Report], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(reports)?);
    } else {
        for (i, r) in reports.iter().enumerate() {
            if i > 0 {
                println!();
            }
            print!("{}", r.explain());
        }
    }
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    let paths = Paths { config: &cli.config, repo: cli.config_repo.as_deref() };
    match cli.command {
        Command::Check { offline, online, policies, forge } => cmd_check(paths, offline, online, policies, forge),
        Command::Simulate { event, source, github_event, at, json } => {
            cmd_simulate(paths, event, source, github_event, at, json)
        }
        Command::Rollback { service, env, to, reason, who, dry_run, emergency, json } => {
            let clock: Arc<dyn Clock> = Arc::new(SystemClock);
            let now = clock.now();
            let mut engine = engine(paths.config, paths.repo, clock)?;
            let asker = who.resolve(&engine)?;
            let asker = with_teams(&mut engine, asker);
            let actor = asker.id();
            let name = actor.trim_start_matches("cli:");
            let request_id = format!("{name}-{}-{}", now.as_nanosecond(), std::process::id());
            let principal = asker.principal().cloned();
            let event = Event::request(Source::Cli, &service, &env, &actor, reason.as_deref(), now, &request_id);
            let mut report = engine.handle(&event, &Options { to, dry_run, emergency, principal })?;
            // The outbox opens a proposal's pull request; a person at a terminal wants its link.
            engine.await_pull_request(&mut report, std::time::Duration::from_secs(30));
            print_reports(std::slice::from_ref(&report), json)?;
            Ok(exit_code(&report.outcome))
        }
        Command::Drill { service, env, who, json } => cmd_drill(paths, service, env, who, json),
        Command::History { service, env, limit, json } => cmd_history(paths, service, env, limit, json),
        Command::Audit { command: AuditCommand::Verify { since, json } } => cmd_audit(paths, since, json),
        Command::Explain { subject, json } => cmd_explain(paths, subject, json),
        Command::Approve { id, who } => review(paths.config, paths.repo, who, |e, actor| e.approve(&id, actor)),
        Command::Cancel { id, who } => review(paths.config, paths.repo, who, |e, actor| e.cancel(&id, actor)),
        Command::Continue { id, who } => {
            let mut engine = engine(paths.config, paths.repo, Arc::new(SystemClock))?;
            let actor = who.resolve(&engine)?;
            said(engine.continue_rollback(&id, &actor)?)
        }
        Command::Abort { id, reason, who } => {
            let mut engine = engine(paths.config, paths.repo, Arc::new(SystemClock))?;
            let actor = who.resolve(&engine)?;
            said(engine.abort_rollback(&id, &actor, reason.as_deref())?)
        }
        Command::Healthcheck { url, ready } => healthcheck(&cli.config, url, ready),
        Command::Schema { file } => cmd_schema(file),
        Command::Gate { rev, base, repo } => cmd_gate(paths, rev, base, repo),
        Command::Release { service, env, reason, who } => {
            let mut engine = engine(paths.config, paths.repo, Arc::new(SystemClock))?;
            let actor = who.resolve(&engine)?;
            said(engine.release(&service, &env, reason.as_deref(), &actor)?)
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "rollbackd",
                &mut std::io::stdout(),
            );
            Ok(0)
        }
        Command::Freeze { scope, env, duration, reason, who } => {
            let mut engine = engine(paths.config, paths.repo, Arc::new(SystemClock))?;
            let actor = who.resolve(&engine)?;
            said(engine.freeze(&scope, env.as_deref(), duration, reason.as_deref(), &actor)?)
        }
        Command::Pause { duration, reason, who } => {
            let mut engine = engine(paths.config, paths.repo, Arc::new(SystemClock))?;
            let actor = who.resolve(&engine)?;
            said(engine.pause(duration, reason.as_deref(), &actor)?)
        }
        Command::Resume { who } => {
            let mut engine = engine(paths.config, paths.repo, Arc::new(SystemClock))?;
            let actor = who.resolve(&engine)?;
            said(engine.resume(&actor, None)?)
        }
        Command::Unfreeze { scope, env, who } => {
            let mut engine = engine(paths.config, paths.repo, Arc::new(SystemClock))?;
            let actor = who.resolve(&engine)?;
            said(engine.unfreeze(&scope, env.as_deref(), &actor, None)?)
        }
        Command::Status { service } => {
            let mut engine = reader(paths.config, paths.repo, Arc::new(SystemClock))?;
            print!("{}", engine.status(service.as_deref())?);
            Ok(0)
        }
        Command::Readiness { service, env, json } => cmd_readiness(paths, service, env, json),
        Command::Plan { rev, base, json } => cmd_plan(paths, rev, base, json),
        Command::Serve { listen } => run_serve(&cli.config, listen, None),
        Command::Demo { dir, no_serve, listen } => run_demo(&dir, no_serve, listen),
    }
}

/// Where the config file is, and the config repo a command was pointed at instead of its own.
#[derive(Clone, Copy)]
struct Paths<'a> {
    config: &'a Path,
    repo: Option<&'a str>,
}

/// `rollbackd check`: the config, its policies and (online) what they point at.
fn cmd_check(
    paths: Paths<'_>,
    offline: bool,
    online: bool,
    policies: Option<PathBuf>,
    forge: bool,
) -> anyhow::Result<u8> {
    let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    let offline = offline || (in_ci && !online && !forge);
    let checks = rollbackd::Checks { offline, policies: policies.as_deref(), forge, repo: paths.repo };
    let report = rollbackd::check(paths.config, &checks);
    for d in &report.diagnostics {
        println!("{d}");
    }
    let code = report.exit_code();
    if code != 0 {
        return Ok(code);
    }
    let how = if offline { " (offline: secrets, repo paths and queries not checked)" } else { "" };
    println!("ok: {} is valid{how}", paths.config.display());
    Ok(0)
}

/// `rollbackd simulate`: a saved event through the live path, as a dry run.
fn cmd_simulate(
    paths: Paths<'_>,
    event: PathBuf,
    source: Option<SimSource>,
    github_event: Option<String>,
    at: Option<Timestamp>,
    json: bool,
) -> anyhow::Result<u8> {
    let clock: Arc<dyn Clock> = match at {
        Some(t) => Arc::new(FixedClock::new(t)),
        None => Arc::new(SystemClock),
    };
    let body = std::fs::read(&event).with_context(|| format!("cannot read {}", event.display()))?;
    let events = rollbackd::events_from_file(&body, source.map(SimSource::kind), github_event.as_deref(), clock.now())?;
    let mut engine = engine(paths.config, paths.repo, clock)?;
    let opts = Options { dry_run: true, ..Options::default() };
    // Each alert of a notification is its own decision: one that cannot be planned does
    // not hide the others.
    let mut reports = Vec::new();
    let mut code = 0;
    for e in &events {
        match engine.handle(e, &opts) {
            Ok(r) => {
                // The same code `rollback` gives for the same outcome.
                code = code.max(exit_code(&r.outcome));
                reports.push(r);
            }
            Err(err) => {
                eprintln!("error: {}: {err}", e.trigger());
                code = code.max(err.exit_code() as u8);
            }
        }
    }
    print_reports(&reports, json)?;
    Ok(code)
}

/// `rollbackd drill`: the rollback it would do, written to the drill branch.
fn cmd_drill(paths: Paths<'_>, service: String, env: String, who: Who, json: bool) -> anyhow::Result<u8> {
    let mut engine = engine(paths.config, paths.repo, Arc::new(SystemClock))?;
    let actor = who.resolve(&engine)?.id();
    let outcome = engine.drill(&service, &env, &actor)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        println!("{}", outcome.summary());
    }
    Ok(if outcome.is_written() { 0 } else { 2 })
}

/// `rollbackd history`.
fn cmd_history(
    paths: Paths<'_>,
    service: Option<String>,
    env: Option<String>,
    limit: usize,
    json: bool,
) -> anyhow::Result<u8> {
    let mut engine = reader(paths.config, paths.repo, Arc::new(SystemClock))?;
    let index = engine.history()?;
    let query = HistoryQuery { service: service.as_deref(), env: env.as_deref(), limit: Some(limit) };
    let records = query.select(index.records());
    if json {
        println!("{}", serde_json::to_string_pretty(&rollbackd::history_json(&records))?);
    } else {
        println!("{}", rollbackd::history_text(&records));
    }
    Ok(0)
}

/// `rollbackd audit verify`: every record's signature.
fn cmd_audit(paths: Paths<'_>, since: Option<String>, json: bool) -> anyhow::Result<u8> {
    let mut engine = reader(paths.config, paths.repo, Arc::new(SystemClock))?;
    let checks = engine.audit_verify(since.as_deref())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        print!("{}", rollbackd::SignatureCheck::text(&checks));
    }
    Ok(if checks.iter().all(rollbackd::SignatureCheck::verified) { 0 } else { 2 })
}

/// `rollbackd explain`: why something was or was not rolled back.
fn cmd_explain(paths: Paths<'_>, subject: String, json: bool) -> anyhow::Result<u8> {
    let mut engine = reader(paths.config, paths.repo, Arc::new(SystemClock))?;
    let explanation = engine.explain(&subject)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&explanation)?);
    } else if explanation.is_empty() {
        println!("nothing recorded about {subject} in the audit window");
    } else {
        print!("{}", explanation.text());
    }
    Ok(if explanation.is_empty() { 2 } else { 0 })
}

/// `rollbackd schema`: the JSON Schema of a file serde reads.
fn cmd_schema(file: SchemaFile) -> anyhow::Result<u8> {
    let schema = match file {
        SchemaFile::Config => rollbackd::config_schema(),
        SchemaFile::Policy => rollbackd::policy_schema(),
    };
    // A closed pipe (`| head`) is the reader's choice, not an error.
    let _ = std::io::Write::write_all(
        &mut std::io::stdout().lock(),
        format!("{}\n", serde_json::to_string_pretty(&schema)?).as_bytes(),
    );
    Ok(0)
}

/// `rollbackd gate`: whether a change brings back a held artifact.
fn cmd_gate(paths: Paths<'_>, rev: String, base: Option<String>, repo: Option<PathBuf>) -> anyhow::Result<u8> {
    let mut engine = engine(paths.config, paths.repo, Arc::new(SystemClock))?;
    let report = engine.gate(&rev, base.as_deref(), repo.as_deref())?;
    if report.violations.is_empty() {
        println!("ok: {} artifact changes, none brings back a held artifact", report.checked);
        return Ok(0);
    }
    for v in &report.violations {
        println!("held: {v}");
    }
    Ok(2)
}

/// `rollbackd readiness`: whether each covered target could be rolled back now.
fn cmd_readiness(paths: Paths<'_>, service: Option<String>, env: Option<String>, json: bool) -> anyhow::Result<u8> {
    let mut engine = reader(paths.config, paths.repo, Arc::new(SystemClock))?;
    let wait = engine.config().registries.iter().map(|r| r.timeout.as_std()).max().unwrap_or_default();
    let rows = engine.readiness(service.as_deref(), env.as_deref(), wait + std::time::Duration::from_secs(1))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", rollbackd::Readiness::text(&rows));
    }
    Ok(if rows.iter().all(|r| r.ready) { 0 } else { 2 })
}

/// `rollbackd plan`: what a change would be rolled back to.
fn cmd_plan(paths: Paths<'_>, rev: String, base: Option<String>, json: bool) -> anyhow::Result<u8> {
    let mut engine = engine(paths.config, paths.repo, Arc::new(SystemClock))?;
    let plans = engine.plan_change(&rev, base.as_deref())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&plans)?);
    } else {
        print!("{}", rollbackd::ChangePlan::text_all(&plans));
    }
    Ok(0)
}

/// Prints what a person's action said: exit 2 when it was refused (a rule said no).
fn said(answer: rollbackd::Answer) -> anyhow::Result<u8> {
    println!("{answer}");
    Ok(answer.exit_code())
}

fn review(
    config: &Path,
    repo: Option<&str>,
    who: Who,
    f: impl FnOnce(&mut Engine, &rollbackd::Actor) -> Result<rollbackd::ReviewOutcome, EngineError>,
) -> anyhow::Result<u8> {
    let mut engine = engine(config, repo, Arc::new(SystemClock))?;
    let actor = who.resolve(&engine)?;
    let actor = with_teams(&mut engine, actor);
    let outcome = f(&mut engine, &actor)?;
    println!("{}", outcome.summary());
    Ok(if matches!(outcome, rollbackd::ReviewOutcome::Refused { .. }) { 2 } else { 0 })
}

/// A key-signed person with the teams GitHub confirms of the GitHub logins `directory.people`
/// lists for them, among those CODEOWNERS names, for `codeowners`: the CLI is a process of its
/// own and may wait on GitHub, a few seconds at most.
fn with_teams(engine: &mut Engine, actor: rollbackd::Actor) -> rollbackd::Actor {
    match actor {
        rollbackd::Actor::Person(p) => {
            rollbackd::Actor::Person(engine.with_forge_teams(p, std::time::Duration::from_secs(5)))
        }
        operator => operator,
    }
}

fn healthcheck(config: &Path, url: Option<String>, ready: bool) -> anyhow::Result<u8> {
    let base = match url {
        Some(u) => u,
        None => {
            let listen = ConfigFile::read(config)?.shared().listen.clone();
            format!("http://{}", rollbackd::loopback_for(&listen))
        }
    };
    let url = format!("{}/{}", base.trim_end_matches('/'), if ready { "readyz" } else { "healthz" });
    match rollbackd::probe(&url) {
        Ok(()) => {
            println!("ok: {url}");
            Ok(0)
        }
        Err(why) => {
            eprintln!("unhealthy: {url}: {why}");
            Ok(1)
        }
    }
}

fn run_serve(config_path: &Path, listen: Option<String>, banner: Option<String>) -> anyhow::Result<u8> {
    rollbackd::serve(config_path, listen, banner).map_err(|e| match e {
        // Keeps the engine's exit code (3: the origin is unreachable).
        ServeError::Engine(e) => anyhow::Error::from(e),
        other => other.into(),
    })?;
    Ok(0)
}

fn run_demo(dir: &Path, no_serve: bool, listen: Option<String>) -> anyhow::Result<u8> {
    let d = rollbackd::create_demo(dir, Timestamp::now())?;
    let dir = std::fs::canonicalize(&d.dir).unwrap_or(d.dir.clone());
    let config = dir.join("rollbackd.yaml");
    let alert = dir.join("events/checkout-prod-alert.json");
    if d.created {
        println!("Created a demo config repo at {}", dir.join("origin.git").display());
    } else {
        println!("Reusing the demo at {} (delete it for a fresh one)", dir.display());
    }
    println!("\nWhat the sample alert would do:\n");
    let mut engine = engine(&config, None, Arc::new(SystemClock))?;
    let events = rollbackd::events_from_file(
        &std::fs::read(&alert)?,
        Some(EventFileKind::Alertmanager),
        None,
        Timestamp::now(),
    )?;
    let report = engine.handle(&events[0], &Options { dry_run: true, ..Options::default() })?;
    print!("{}", report.explain());
    println!("\nBefore the incident: would an automatic rollback work now? (`rollbackd readiness`)\n");
    let rows = engine.readiness(None, None, std::time::Duration::ZERO)?;
    print!("{}", rollbackd::Readiness::text(&rows));
    let branch = engine.config().repo.branch.clone();
    println!(
        "\nThe plan of the last change on {branch}, as every pull request shows it (`rollbackd plan {branch}`):\n"
    );
    print!("{}", rollbackd::ChangePlan::text_all(&engine.plan_change(&branch, None)?));
    let c = config.display();
    println!(
        "\nTry next:
  rollbackd --config {c} check
  rollbackd --config {c} simulate --event {alert}
  rollbackd --config {c} rollback checkout --env prod --reason \"5xx after 1.5.0\" --dry-run
  rollbackd --config {c} rollback checkout --env prod --reason \"5xx after 1.5.0\"
  rollbackd --config {c} history
  rollbackd --config {c} readiness --json
  rollbackd --config {c} plan {branch}
  git --git-dir {origin} log --format='%h %s' -3
",
        alert = alert.display(),
        origin = dir.join("origin.git").display()
    );
    let token = std::fs::read_to_string(dir.join("secrets/alertmanager-tokens"))?.trim().to_string();
    // The Flux event as notification-controller's generic-hmac provider sends it: signed body.
    let flux_event = dir.join(rollbackd::DEMO_FLUX_EVENT);
    let flux = |addr: &str| -> anyhow::Result<String> {
        Ok(format!(
            "Or fire Flux's report that checkout 1.5.0 failed its health checks (signed as Flux signs it):
  curl -sS -H 'X-Signature: {sig}' -H 'Content-Type: application/json' \\
       --data-binary @{file} http://{addr}/webhooks/flux",
            sig = rollbackd::demo_flux_signature(&dir)?,
            file = flux_event.display()
        ))
    };
    if no_serve {
        println!(
            "To serve it, then fire the sample alert at it from a second terminal:
  rollbackd --config {c} serve --listen 127.0.0.1:8080
Status page: http://127.0.0.1:8080/ (JSON: http://127.0.0.1:8080/api/v1/status)
  curl -sS -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\
       --data @{alert} http://127.0.0.1:8080/webhooks/alertmanager
{flux}",
            alert = alert.display(),
            flux = flux("127.0.0.1:8080")?
        );
        return Ok(0);
    }
    let banner = format!(
        "Status page: http://{{addr}}/ (JSON: http://{{addr}}/api/v1/status)
Fire the sample alert at the server (Ctrl-C stops it):
  curl -sS -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\
       --data @{alert} http://{{addr}}/webhooks/alertmanager
{flux}",
        alert = alert.display(),
        flux = flux("{addr}")?
    );
    run_serve(&config, listen, Some(banner))
}
