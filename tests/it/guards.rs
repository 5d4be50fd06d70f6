//! Each guard denies or proposes as the policy says, and the decision says which and why.

use crate::common::*;
use jiff::SignedDuration;
use rollbackd::{Options, Outcome};

fn outcome_of(w: &World, fp: &str) -> rollbackd::Report {
    w.engine().handle(&w.alert("checkout", "prod", fp), &Options::default()).unwrap()
}

fn failed_guard(report: &rollbackd::Report) -> Vec<&'static str> {
    report.decision.guards.iter().filter(|g| !g.passed).map(|g| g.guard).collect()
}

/// One rollback at t0, then a new bad deploy and a second incident `minutes` later.
fn second_incident(guards: serde_json::Value, minutes: i64) -> (World, rollbackd::Report) {
    let w = World::with(&[PolicySpec::new("test-policy").set("guards", guards)]);
    w.deploy("checkout", "prod", "1.5.0", 10);
    assert!(matches!(outcome_of(&w, "fp1").outcome, Outcome::RolledBack { .. }));
    w.clock.advance(SignedDuration::from_mins(minutes));
    w.deploy("checkout", "prod", "1.6.0", 1);
    let report = outcome_of(&w, "fp2");
    (w, report)
}

#[test]
fn cooldown_denies() {
    let (w, report) = second_incident(json!({ "cooldown": "30m", "on_violation": OnViolation::Deny }), 5);
    let head = w.head();
    match &report.outcome {
        Outcome::Denied { reason } => assert!(reason.contains("cooldown") && reason.contains("5m ago"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(failed_guard(&report), ["cooldown"]);
    assert_eq!(w.head(), head, "nothing written");
    assert!(w.git(&["for-each-ref", "refs/heads/rollback/"]).is_empty());
}

#[test]
fn cooldown_passes_once_it_has_elapsed() {
    let (_w, report) = second_incident(json!({ "cooldown": "30m", "on_violation": OnViolation::Deny }), 31);
    assert!(matches!(report.outcome, Outcome::RolledBack { .. }), "{:?}", report.outcome);
}

#[test]
fn cooldown_proposes_instead_when_configured() {
    let (w, report) = second_incident(json!({ "cooldown": "30m", "on_violation": OnViolation::Propose }), 5);
    let rb = match &report.outcome {
        Outcome::Proposed { rollback } => rollback.clone(),
        other => panic!("{other:?}"),
    };
    assert!(report.decision.notes.iter().any(|n| n.contains("proposing")), "{:?}", report.decision.notes);
    assert!(w.show("main", &path("checkout", "prod")).contains("1.6.0"), "main untouched");
    assert!(w.show(&format!("refs/heads/{}", rb.branch), &path("checkout", "prod")).contains("1.4.2"));
}

#[test]
fn rate_limit_denies_past_the_count() {
    let (_w, report) = second_incident(json!({ "max_rollbacks": { "count": 1, "per": "24h" } }), 60);
    assert_eq!(failed_guard(&report), ["max_rollbacks"]);
    match &report.outcome {
        Outcome::Denied { reason } => {
            assert!(reason.contains("1 rollbacks of checkout/prod in the last 24h (limit 1)"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn max_change_age_is_the_point_of_no_return() {
    let w =
        World::with(&[PolicySpec::new("test-policy").guard("max_change_age", "6h").on_violation(OnViolation::Deny)]);
    w.deploy("checkout", "prod", "1.5.0", 7 * 60);
    let report = outcome_of(&w, "fp");
    assert_eq!(failed_guard(&report), ["max_change_age"]);
    match &report.outcome {
        Outcome::Denied { reason } => assert!(reason.contains("7h old (limit 6h)"), "{reason}"),
        other => panic!("{other:?}"),
    }

    let young =
        World::with(&[PolicySpec::new("test-policy").guard("max_change_age", "6h").on_violation(OnViolation::Deny)]);
    young.deploy("checkout", "prod", "1.5.0", 30);
    assert!(matches!(outcome_of(&young, "fp").outcome, Outcome::RolledBack { .. }));
}

#[test]
fn a_mutable_artifact_in_the_target_state_is_a_violation() {
    let w = World::with(&[PolicySpec::new("test-policy")
        .guard("require_immutable_artifacts", true)
        .on_violation(OnViolation::Propose)]);
    // known-good (the parent of the bad deploy) runs :latest
    w.commit_files(
        "Use latest",
        &[(&path("checkout", "prod"), Some(&manifest("checkout", "prod", "registry.example.com/checkout:latest")))],
        20,
    );
    w.deploy("checkout", "prod", "1.5.0", 10);
    let report = outcome_of(&w, "fp");
    assert_eq!(failed_guard(&report), ["require_immutable_artifacts"]);
    let detail = &report.decision.guards[0].detail;
    assert!(
        detail.contains("registry.example.com/checkout:latest") && detail.contains("deployment.yaml:12"),
        "{detail}"
    );
    assert!(matches!(report.outcome, Outcome::Proposed { .. }), "{:?}", report.outcome);
}

#[test]
fn notify_mode_writes_nothing_but_explains() {
    let w = World::with(&[PolicySpec::new("test-policy").mode(Mode::Notify)]);
    w.deploy("checkout", "prod", "1.5.0", 10);
    let refs = w.refs_of(&w.origin);
    let report = outcome_of(&w, "fp");
    assert!(matches!(report.outcome, Outcome::Notified { .. }), "{:?}", report.outcome);
    assert!(report.plan.is_some());
    assert_eq!(w.refs_of(&w.origin), refs);
}

#[test]
fn the_kill_switch_stops_automatic_rollbacks_everywhere_until_resumed() {
    let w = World::new();
    w.write_config(&ConfigSpec::new().set("pause.automatic", "nothing").set("git.fetch_freshness", "0s"));
    w.deploy("checkout", "prod", "1.5.0", 10);
    w.deploy("cart", "staging", "2.1.0", 10);
    let out = w.run_cli(&["pause", "--for", "30m", "--reason", "bad release train", "--actor", "ops"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("automatic rollbacks paused until"), "{out:?}");
    let status = w.run_cli(&["status"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("paused until"), "{status:?}");

    for (service, env) in [("checkout", "prod"), ("cart", "staging")] {
        let report = w.engine().handle(&w.alert(service, env, service), &Options::default()).unwrap();
        match &report.outcome {
            Outcome::Denied { reason } => assert!(reason.contains("paused") && reason.contains("bad release train")),
            other => panic!("{service}: {other:?}"),
        }
    }
    // `unfreeze all` is not `resume`.
    assert_eq!(w.run_cli(&["unfreeze", "all", "--actor", "ops"]).status.code(), Some(0));
    let report = w.engine().handle(&w.alert("cart", "staging", "c2"), &Options::default()).unwrap();
    assert!(matches!(report.outcome, Outcome::Denied { .. }), "{:?}", report.outcome);
    // A person may still roll back.
    let out = w.run_cli(&["rollback", "checkout", "--env", "prod", "--actor", "ops"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(w.trailers("main", "Rollback-Actor"), ["cli:ops"]);

    let out = w.run_cli(&["resume", "--actor", "ops"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("resumed by cli:ops"), "{out:?}");
    let report = w.engine().handle(&w.alert("cart", "staging", "c3"), &Options::default()).unwrap();
    assert!(matches!(report.outcome, Outcome::RolledBack { .. }), "{:?}", report.outcome);
}
