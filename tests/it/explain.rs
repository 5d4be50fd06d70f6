//! `rollbackd explain`: why something was or was not rolled back, from git alone, read by a
//! process that took no part in the decision.

use crate::common::*;
use jiff::SignedDuration;
use rollbackd::{Options, Outcome};

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[test]
fn a_denial_is_explained_from_git_once_however_often_it_repeats() {
    let w = World::with(&[PolicySpec::new("prod").guard("max_change_age", "1m").on_violation(OnViolation::Deny)]);
    w.deploy("checkout", "prod", "1.5.0", 10);
    let mut engine = w.engine();
    for _ in 0..3 {
        let report = engine.handle(&w.alert("checkout", "prod", "fp1"), &Options::default()).unwrap();
        assert!(matches!(report.outcome, Outcome::Denied { .. }));
    }
    let note = w.git(&["notes", "--ref=rollbackd-decisions", "show", "main"]);
    assert_eq!(note.lines().count(), 1, "one line for three repeats: {note}");

    // Another process, its own mirror: only what is in the origin.
    let out = w.run_cli(&["explain", "fp1"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("denied under prod") && text.contains("FAIL max_change_age"), "{text}");

    let out = w.run_cli(&["explain", "nothing-like-it"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).contains("nothing recorded about nothing-like-it"));
}

#[test]
fn a_rollback_is_explained_with_its_verification() {
    let w = World::with(&[PolicySpec::new("prod").set("verify", json!({ "within": "10m" }))]);
    w.deploy("checkout", "prod", "1.5.0", 10);
    let mut engine = w.engine();
    let alert = w.alert("checkout", "prod", "fp1");
    let Outcome::RolledBack { rollback } = engine.handle(&alert, &Options::default()).unwrap().outcome else {
        panic!("not rolled back")
    };
    let out = w.run_cli(&["explain", rollback.id.as_str()]);
    assert!(stdout(&out).contains("not verified (yet)"), "{}", stdout(&out));

    w.clock.advance(SignedDuration::from_mins(2));
    let resolved = World::resolved(&alert, w.now());
    engine.record_resolution(&resolved).unwrap();
    let out = w.run_cli(&["explain", &alert.trigger(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rollbacks"][0]["id"], rollback.id.as_str(), "{v}");
    assert!(v["verification"][0][1].as_str().unwrap().contains("Verification: verified"), "{v}");
}
