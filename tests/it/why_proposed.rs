//! A rollback proposed when its policy pushes says why (the guard, `freeze`, `pause`) in the
//! answer, the commit on the proposal branch, `explain` and `status`, read back from git.

use crate::common::*;
use jiff::SignedDuration;
use rollbackd::{Options, Outcome, Rollback};

fn proposed(report: &rollbackd::Report) -> Rollback {
    match &report.outcome {
        Outcome::Proposed { rollback } => rollback.clone(),
        other => panic!("{other:?}"),
    }
}

/// The cause is said in the answer, the commit's body and trailer on the origin, `explain`
/// and `status` (each a fresh process reading git).
fn says_why_everywhere(w: &World, report: &rollbackd::Report, cause: &str) {
    let rb = proposed(report);
    let summary = report.outcome.summary();
    assert!(summary.contains(&format!("because of {cause}")), "answer: {summary}");
    let message = w.message(&format!("refs/heads/{}", rb.branch));
    assert!(message.contains("Proposed for review, not pushed, because of:"), "{message}");
    assert!(message.contains(&format!("  {cause}")), "{message}");
    let because = w.trailers(&format!("refs/heads/{}", rb.branch), "Rollback-Proposed-Because");
    assert!(because.len() == 1 && because[0].starts_with(cause), "{because:?}");
    let explain = w.run_cli(&["explain", rb.id.as_str()]);
    let text = String::from_utf8_lossy(&explain.stdout);
    assert!(text.contains(&format!("proposed for review, not pushed, because of {cause}")), "{explain:?}");
    let status = w.run_cli(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains(rb.id.as_str()) && text.contains(&format!("proposed because of {cause}")), "{status:?}");
}

#[test]
fn a_rollback_proposed_inside_a_cooldown_says_cooldown() {
    let w = World::with(&[PolicySpec::new("test-policy")
        .set("guards", json!({ "cooldown": "30m", "on_violation": OnViolation::Propose }))]);
    w.deploy("checkout", "prod", "1.5.0", 10);
    let first = w.engine().handle(&w.alert("checkout", "prod", "fp1"), &Options::default()).unwrap();
    assert!(matches!(first.outcome, Outcome::RolledBack { .. }), "{:?}", first.outcome);
    w.clock.advance(SignedDuration::from_mins(5));
    w.deploy("checkout", "prod", "1.6.0", 1);
    let report = w.engine().handle(&w.alert("checkout", "prod", "fp2"), &Options::default()).unwrap();
    says_why_everywhere(&w, &report, "cooldown");
    assert!(proposed(&report).because.iter().all(|c| c.name() == "cooldown"));
}

#[test]
fn a_rollback_proposed_under_the_pause_says_pause() {
    let w = World::new();
    w.write_config(&ConfigSpec::new().set("git.fetch_freshness", "0s"));
    w.deploy("checkout", "prod", "1.5.0", 10);
    let out = w.run_cli(&["pause", "--for", "30m", "--reason", "bad release train", "--actor", "ops"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let report = w.engine().handle(&w.alert("checkout", "prod", "fp1"), &Options::default()).unwrap();
    says_why_everywhere(&w, &report, "pause");
}

#[test]
fn a_rollback_proposed_under_a_freeze_says_freeze() {
    let w = World::new();
    w.write_config(&ConfigSpec::new().set("git.fetch_freshness", "0s"));
    w.deploy("checkout", "prod", "1.5.0", 10);
    let out = w.run_cli(&[
        "freeze",
        "checkout",
        "--env",
        "prod",
        "--for",
        "2h",
        "--reason",
        "db migration",
        "--actor",
        "ops",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let report = w.engine().handle(&w.alert("checkout", "prod", "fp1"), &Options::default()).unwrap();
    says_why_everywhere(&w, &report, "freeze");
}
