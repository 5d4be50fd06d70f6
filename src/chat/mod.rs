//! Chat: the `/rollback` command grammar shared by Slack and GitHub comments, and carrying the
//! commands out for a person.

pub mod command;
pub mod dispatch;

pub use command::{Command, ParseError, Scope};
pub use dispatch::{ChatRequest, Reply};
