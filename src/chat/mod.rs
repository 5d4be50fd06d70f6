//! Chat: the `/rollback` command grammar shared by Slack and GitHub comments.

pub mod command;

pub use command::{Command, ParseError, Scope};
