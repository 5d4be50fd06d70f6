//! The chat grammar, plain and Markdown: never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = rollbackd::chat::command::parse(text);
    let _ = rollbackd::chat::command::parse_markdown(text);
    let _ = rollbackd::chat::command::parse_args(text);
});
