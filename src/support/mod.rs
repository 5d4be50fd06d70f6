//! Small support modules the rest leans on: the clock, durations, diagnostics with positions,
//! secrets that never print, templates, and quoting free text.

pub mod clock;
pub mod diagnostic;
pub mod duration;
pub mod secret;
pub mod template;
pub mod text;
pub mod url;
