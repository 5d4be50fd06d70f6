//! rollbackd: turns alerts, CI events and chat requests into audited rollbacks of a GitOps
//! config repository.
//!
//! Domain types sit at the centre ([`Event`], [`Policy`], [`Decision`], [`Plan`], [`Rollback`]);
//! the [`engine`] decides and writes through the [`git`] adapter.

pub mod artifacts;
pub mod chat;
pub mod check;
pub mod clock;
pub mod config;
pub mod decide;
pub mod decision;
pub mod demo;
pub mod diagnostic;
pub mod duration;
pub mod engine;
pub mod event;
pub mod forge;
pub mod freeze;
pub mod git;
pub mod guards;
pub mod ident;
pub mod ingest;
pub mod matcher;
pub mod metrics;
pub mod plan;
pub mod policy;
pub mod principal;
pub mod rollback;
pub mod secret;
pub mod server;
pub mod template;
pub mod text;
pub mod worker;

pub use config::Config;
pub use decision::{Decision, Report};
pub use engine::{Engine, EngineError, Options, ReviewOutcome};
pub use event::{Event, Source};
pub use plan::Plan;
pub use policy::{Policy, PolicySet};
pub use rollback::{Outcome, Rollback, RollbackId};
