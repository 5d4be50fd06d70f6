//! Turning what senders post into [`Event`](crate::Event)s. Pure parsing: no HTTP, no git.

pub mod alertmanager;
pub mod file;
pub mod github;
