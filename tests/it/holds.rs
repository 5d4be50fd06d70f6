//! Rollbacks that stick: the artifact a rollback undid is held; `rollbackd gate` fails a change
//! that brings it back to that file (image automation re-applying the bad tag), in the mirror
//! or in a CI checkout, until a person releases the hold; holds show in `status`.

use crate::common::*;
use rollbackd::{Options, Outcome, Principal};

fn rolled_back() -> World {
    let w = World::with(&[PolicySpec::new("prod").chatops("approve", &["slack:UAPPROVER"])]);
    w.deploy("checkout", "prod", "1.5.0", 10);
    let r = w.engine().handle(&w.alert("checkout", "prod", "fp"), &Options::default()).unwrap();
    assert!(matches!(r.outcome, Outcome::RolledBack { .. }), "{:?}", r.outcome);
    w
}

fn gate(w: &World, args: &[&str]) -> (Option<i32>, String) {
    let out = w.run_cli(&[&["gate"], args].concat());
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn the_undone_artifact_is_held_and_the_gate_fails_a_change_that_brings_it_back() {
    let w = rolled_back();
    let holds = w.engine().holds().unwrap();
    assert_eq!(holds.len(), 1, "{holds:?}");
    assert_eq!(holds[0].value, image("checkout", "1.5.0"));
    assert_eq!(holds[0].path, path("checkout", "prod"));
    let id = w.trailers("main", "Rollback-Id")[0].clone();

    // Image automation writes the bad tag back right after the revert.
    let again = w.deploy("checkout", "prod", "1.5.0", 0);
    let (code, said) = gate(&w, &[&again.0]);
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains(&format!("held since rollback {id} of checkout/prod")), "{said}");
    assert!(said.contains("rollbackd release checkout --env prod"), "{said}");
    // A fix, or the same tag in another environment, passes.
    let fix = w.deploy("checkout", "prod", "1.5.1", 0);
    assert_eq!(gate(&w, &[&fix.0]).0, Some(0));
    let staging = w.deploy("checkout", "staging", "1.5.0", 0);
    assert_eq!(gate(&w, &[&staging.0]).0, Some(0));
    // Against an explicit base: the whole range is what counts.
    let (code, _) = gate(&w, &[&staging.0, "--base", &format!("{}^1", again.0)]);
    assert_eq!(code, Some(0), "1.5.1 is what the range leaves in prod");
    assert!(w.engine().status(None).unwrap().contains(&format!("checkout/prod {} in", image("checkout", "1.5.0"))));
}

#[test]
fn the_gate_reads_a_pull_requests_commit_from_the_ci_checkout() {
    let w = rolled_back();
    let checkout = w.root().join("ci-checkout");
    let run = |args: &[&str]| {
        let out = std::process::Command::new("git").current_dir(&checkout).args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let cloned =
        std::process::Command::new("git").arg("clone").arg("-q").arg(&w.origin).arg(&checkout).status().unwrap();
    assert!(cloned.success());
    std::fs::write(checkout.join(path("checkout", "prod")), manifest("checkout", "prod", &image("checkout", "1.5.0")))
        .unwrap();
    run(&["-c", "user.name=bot", "-c", "user.email=bot@example.com", "commit", "-qam", "Update checkout image"]);
    let head = run(&["rev-parse", "HEAD"]);
    let (code, said) = gate(&w, &[&head, "--base", "origin/main", "--repo", checkout.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("goes back to registry.example.com/checkout:1.5.0"), "{said}");
}

#[test]
fn a_release_lifts_the_holds_and_is_for_approvers() {
    let w = rolled_back();
    let again = w.deploy("checkout", "prod", "1.5.0", 0);
    let denied = chat_as(&w, Principal::new("slack:USTRANGER"), "/rollback release checkout prod because fixed").text;
    assert!(denied.contains("may not release holds"), "{denied}");
    let said =
        chat_as(&w, Principal::new("slack:UAPPROVER"), "/rollback release checkout prod because 1.5.0 was fine").text;
    assert!(said.contains("released 1 held for checkout/prod by slack:UAPPROVER"), "{said}");
    assert_eq!(gate(&w, &[&again.0]).0, Some(0));
    assert!(w.engine().holds().unwrap().is_empty());
    assert!(w.git(&["show", "refs/rollbackd/state/holds:holds.json"]).contains("1.5.0 was fine"));
    // From the CLI too, with a name.
    let out = w.run_cli(&["release", "checkout", "--env", "prod", "--actor", "ops@example.com"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing is held for checkout/prod"), "{out:?}");
}

#[test]
fn a_policy_that_does_not_hold_makes_no_hold() {
    let w = World::with(&[PolicySpec::new("prod").set("hold", false)]);
    w.deploy("checkout", "prod", "1.5.0", 10);
    w.engine().handle(&w.alert("checkout", "prod", "fp"), &Options::default()).unwrap();
    assert!(w.engine().holds().unwrap().is_empty());
}
