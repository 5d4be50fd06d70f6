//! Small support modules the rest leans on: the clock, durations, diagnostics with positions,
//! secrets that never print, templates, and quoting free text.

pub(crate) mod asker;
pub(crate) mod clock;
pub(crate) mod diagnostic;
pub(crate) mod duration;
pub(crate) mod schema;
pub(crate) mod secret;
pub(crate) mod signing_key;
pub(crate) mod template;
pub(crate) mod text;
pub(crate) mod url;
