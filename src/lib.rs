//! rollbackd: turns alerts, CI events and chat requests into audited rollbacks of a GitOps
//! config repository.
//!
//! The folders tell the story:
//! - [`domain`]: events, policies, the pure decision, plans and rollbacks. No I/O.
//! - adapters at the edge: [`ingest`] (payloads → events), [`server`] (HTTP), [`chat`] (the
//!   `/rollback` grammar), [`git`] (the only user of git2), `forge` (proposals on GitHub).
//! - the application: `engine` ([`Engine`]: decide and write), [`worker`] (the single writer behind the
//!   server), [`check`] and [`demo`].
//! - [`support`], [`config`] and `metrics`: what the rest leans on.

pub mod domain;

pub mod chat;
mod forge;
pub mod git;
pub mod ingest;
pub mod server;

pub mod check;
pub mod demo;
mod engine;
pub mod worker;

pub mod config;
mod metrics;
pub mod support;

pub use config::Config;
pub use domain::decision::{Decision, Report};
pub use domain::event::{Event, Source};
pub use domain::plan::Plan;
pub use domain::policy::{Policy, PolicySet};
pub use domain::rollback::{Outcome, Rollback, RollbackId};
pub use engine::{Engine, EngineError, Options, ReviewOutcome};
