//! Chat: the `/rollback` command grammar shared by Slack and GitHub comments, and carrying the
//! commands out for a person.

pub(crate) mod command;
pub(crate) mod dispatch;

pub use command::{Command, ParseError, Scope};
pub use dispatch::{ChatRequest, Reply};
