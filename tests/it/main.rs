//! rollbackd's integration tests, in one binary: each module tests one part against real
//! components (bare git repositories in temp dirs, `git daemon`, the real Alertmanager, the
//! `rollbackd` binary, a fake GitHub backed by the test's origin). `common` is the harness.

mod common;

mod adversarial;
mod breaker;
mod chat_commands;
mod cli;
mod closed_loop;
mod codeowners;
mod controllers;
mod daemon;
mod deadlines;
mod deploy;
mod drills;
mod explain;
mod gate_bounds;
mod github_forge;
mod github_real;
mod grouping;
mod guards;
mod holds;
mod http;
mod irreversible;
mod metrics;
mod notify;
mod one_decision;
mod phases;
mod properties;
mod proxy;
mod readiness;
mod readiness_registries;
mod rebuild;
mod replicas;
mod repo_policies;
mod repos;
mod review;
mod rollback;
mod schema;
mod serve;
mod signing;
mod slack;
mod verify;
mod why_proposed;
