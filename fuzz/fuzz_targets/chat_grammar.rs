//! The chat grammar, plain and Markdown: never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = rollbackd::parsers::chat_command(text);
    let _ = rollbackd::parsers::chat_markdown(text);
    let _ = rollbackd::parsers::chat_args(text);
});
