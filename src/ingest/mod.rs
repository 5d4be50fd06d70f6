//! Turning what senders post into [`Event`](crate::Event)s. Pure parsing: no HTTP, no git.

pub(crate) mod alertmanager;
pub(crate) mod argocd;
pub(crate) mod controller;
pub(crate) mod file;
pub(crate) mod flux;
pub(crate) mod github;
