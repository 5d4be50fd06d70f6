//! rollbackd: turns alerts, CI events and chat requests into audited rollbacks of a GitOps
//! config repository.
//!
//! The folders tell the story:
//! - `domain`: events, policies, the pure decision, plans and rollbacks. No I/O.
//! - adapters at the edge: `ingest` (payloads → events), `server` (HTTP), `chat` (the
//!   `/rollback` grammar), `git` (the only user of git2), `forge` (proposals on GitHub).
//! - the application: `engine` ([`Engine`]: decide and write), `worker` (the single writer behind
//!   the server), `check`, `demo` and `serve` (what the binary's subcommands call).
//! - `support`, `config` and `metrics`: what the rest leans on.
//!
//! Every module is private; what follows is the whole public surface: what the binary, the
//! benchmarks, the integration tests and the fuzz targets use.

mod domain;

mod chat;
mod forge;
mod git;
mod ingest;
mod notify;
mod outbound;
mod policy_dir;
mod prometheus;
mod registry;
mod server;

mod check;
mod demo;
mod engine;
mod fleet;
mod healthcheck;
mod serve;
mod state_watch;
mod wakeups;
mod worker;

mod config;
mod metrics;
mod support;

// Running the service: its configuration, the engine, the HTTP front and its single writer.
pub use config::{Config, ConfigError, ConfigFile, Secrets};
pub use engine::{Engine, EngineError, FINISH_WITHIN, Finishing, GateReport, Options, ReviewOutcome, Session};
pub use fleet::Fleet;
pub use serve::{ServeError, serve};
pub use server::{AppState, HttpSettings, admin_app as admin_router, app as router};
pub use support::clock::{Clock, FixedClock, SystemClock};
pub use worker::{WorkerHandle, spawn as spawn_worker};

// What the engine reasons about and answers with.
pub use domain::actor::Actor;
pub use domain::answer::{Answer, Refusal};
pub use domain::audit::SignatureCheck;
pub use domain::change_plan::ChangePlan;
pub use domain::decision::{Decision, Report};
pub use domain::drill::{CiVerdict, DrillOutcome, DrillResult};
pub use domain::event::{Event, Source, Trigger};
pub use domain::explain::Explanation;
pub use domain::history::Query as HistoryQuery;
pub use domain::notice::NoticeKind;
pub use domain::plan::{KnownGoodSource, Plan, Sha, Strategy};
pub use domain::policy::{Mode, OnViolation, Policy, PolicySet};
pub use domain::principal::{Directory, Principal};
pub use domain::readiness::{Readiness, Reason as ReadinessReason};
pub use domain::rollback::{Cause, Delivery, Outcome, Rollback, RollbackId};
pub use support::duration::Duration;

// Chat: the `/rollback` grammar and what a request answers.
pub use chat::dispatch::{execute as execute_chat, github_comment};
pub use chat::{ChatRequest, Command, ParseError, Reply, Scope};

// The other subcommands.
pub use check::{CheckReport, Checks, has_errors, run as check};
pub use demo::{
    Demo, DemoError, FLUX_EVENT as DEMO_FLUX_EVENT, POLICIES as DEMO_POLICIES, TEMPLATES as DEMO_TEMPLATES,
    create as create_demo, flux_signature as demo_flux_signature,
};
pub use domain::history::{json as history_json, text as history_text};
pub use healthcheck::{loopback_for, probe};
pub use ingest::file::{FileError, Kind as EventFileKind, events as events_from_file};
/// JSON Schema (draft 2020-12) of `rollbackd.yaml` and of a policy file, from the types serde reads.
pub use support::schema::{config as config_schema, policy as policy_schema};

/// Builds config repositories commit by commit with fixed authors and times: the demo, the tests
/// and the benchmarks.
pub use git::seed::Seeder;

pub use git::defer_ca_bundle;
/// git's `user.email`, for naming a person at the CLI.
pub use git::git_user_email;

/// Everything that reads bytes from the network or from a policy author, one door each. The fuzz
/// targets (`fuzz/`) and the property tests drive these directly.
pub mod parsers {
    pub use crate::chat::command::parse_markdown as chat_markdown;
    /// CODEOWNERS as GitHub reads it (anyone with push access writes that file).
    pub mod codeowners {
        pub use crate::domain::codeowners::{Codeowners, Owner, Pattern, Rule, Skipped};
    }
    pub use crate::chat::command::{help as chat_help, parse as chat_command, parse_args as chat_args};
    pub use crate::domain::artifacts::scan as artifacts;
    pub use crate::domain::ident::{InputRules, is_plain};
    pub use crate::domain::matcher::Matcher;
    pub use crate::domain::phase::Phase;
    pub use crate::domain::policy::parse_file as policy_file;
    pub use crate::git::{Also, Trailers, split_signed_tag};
    pub use crate::ingest::alertmanager::{Resolved, parse as alertmanager};
    pub use crate::ingest::argocd::parse as argocd;
    pub use crate::ingest::controller::{ControllerEvent, commit_of as controller_revision};
    pub use crate::ingest::flux::parse as flux;
    pub use crate::ingest::github::{Comment, GithubEvent, parse as github};
    pub use crate::registry::parse_image as image_reference;
    /// A registry's `WWW-Authenticate`, the realm it names, its token service's answer.
    pub use crate::registry::{
        Challenge as RegistryChallenge, allowed_realm as registry_realm, parse_challenge as registry_challenge,
        parse_token_answer as registry_token_answer,
    };
    pub use crate::server::auth::{basic, bearer, flux_signature, github_signature, slack_signature};
    pub use crate::support::secret::SecretString;
    pub use crate::support::signing_key::{Signed, TrustedKeys};
    pub use crate::support::template::{render_expression, value as template_value};
}
