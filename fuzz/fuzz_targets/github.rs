//! GitHub deliveries of every event rollbackd reads: never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

const EVENTS: [&str; 7] =
    ["workflow_run", "check_suite", "deployment_status", "issue_comment", "pull_request", "ping", "push"];

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else { return };
    let event = EVENTS[usize::from(first) % EVENTS.len()];
    let _ = rollbackd::parsers::github(event, body, &["deploy".to_string()], jiff::Timestamp::UNIX_EPOCH);
});
