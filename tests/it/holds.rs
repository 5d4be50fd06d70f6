//! Rollbacks that stick: the artifact a rollback undid is held; `rollbackd gate` fails a change
//! that brings it back to that file (image automation re-applying the bad tag), in the mirror
//! or in a CI checkout, until a person releases the hold; holds show in `status`.

use crate::common::*;
use rollbackd::{Options, Outcome, Principal};

pub(super) fn rolled_back() -> World {
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

/// A pull request's commit as GitHub keeps it: `refs/pull/<n>/head` on the origin, pushed
/// from a work tree (`work`, cloned on first use) with the checkout image at `version`.
pub(super) fn push_pull_head(w: &World, number: u64, version: &str) -> String {
    let work = w.root().join("pr-work");
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .current_dir(&work)
            .args(["-c", "user.name=bot", "-c", "user.email=bot@example.com"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    if !work.exists() {
        let cloned = std::process::Command::new("git").arg("clone").arg("-q").arg(&w.origin).arg(&work).status();
        assert!(cloned.unwrap().success());
    }
    std::fs::write(work.join(path("checkout", "prod")), manifest("checkout", "prod", &image("checkout", version)))
        .unwrap();
    git(&["commit", "-qam", &format!("Update checkout to {version}")]);
    git(&["push", "-qf", "origin", &format!("HEAD:refs/pull/{number}/head")]);
    git(&["rev-parse", "HEAD"])
}

pub(super) fn pull_request_delivery(number: u64, action: &str, head: &str) -> Vec<u8> {
    let mut p = crate::common::http::fixture("pull_request.opened.payload.json");
    p["action"] = action.into();
    p["number"] = number.into();
    p["pull_request"]["number"] = number.into();
    p["pull_request"]["head"]["sha"] = head.into();
    p["pull_request"]["head"]["ref"] = "renovate/checkout".into();
    p["pull_request"]["base"]["ref"] = "main".into();
    p["repository"]["full_name"] = "acme/config".into();
    serde_json::to_vec(&crate::common::openapi::webhook_payload("pull_request", p)).unwrap()
}

#[test]
fn the_gate_is_a_check_run_on_every_push_to_a_pull_request() {
    use crate::common::fake_github::FakeGithub;
    let w = rolled_back();
    let id = w.trailers("main", "Rollback-Id")[0].clone();
    let gh = FakeGithub::start(w.origin.clone());
    std::fs::write(w.root().join("gh-secrets"), "hook-secret\n").unwrap();
    w.write_config(
        &ConfigSpec::new()
            .github_app(&gh.url)
            .set("sources.github", json!({ "secrets_file": "gh-secrets", "workflows": ["deploy"] })),
    );
    let s = crate::serve::serve_app(&w, &gh, "srv");

    // Image automation opens a pull request that puts the bad tag back (GitHub keeps its head
    // as refs/pull/7/head, which the mirror does not fetch); main moves on meanwhile, so what
    // counts is the change since the fork point.
    let bad = push_pull_head(&w, 7, "1.5.0");
    w.deploy("cart", "prod", "2.1.0", 0);
    assert_eq!(gh.deliver("pull_request", "pr-7-opened", &pull_request_delivery(7, "opened", &bad)), 200);
    let runs = || gh.gh.lock().unwrap().check_runs_created.clone();
    assert_eq!(runs().len(), 1, "answered once the run is created");
    let run = &runs()[0];
    assert_eq!((run["name"].as_str(), run["head_sha"].as_str()), (Some("rollbackd/gate"), Some(bad.as_str())));
    assert_eq!(run["conclusion"], "failure", "{run}");
    let summary = run["output"]["summary"].as_str().unwrap();
    assert!(summary.contains(&format!("held since rollback {id} of checkout/prod")), "{summary}");
    let note = &run["output"]["annotations"][0];
    assert_eq!(note["path"], path("checkout", "prod"));
    assert!(note["message"].as_str().unwrap().contains("rollbackd release checkout --env prod"), "{note}");

    // A push of the fixed version to the same pull request passes.
    let fixed = push_pull_head(&w, 7, "1.5.1");
    assert_eq!(gh.deliver("pull_request", "pr-7-sync", &pull_request_delivery(7, "synchronize", &fixed)), 200);
    assert_eq!(runs().len(), 2);
    assert_eq!(
        (runs()[1]["head_sha"].as_str(), runs()[1]["conclusion"].as_str()),
        (Some(fixed.as_str()), Some("success"))
    );
    // A delivery for a head the pull request has moved past reports nothing.
    assert_eq!(gh.deliver("pull_request", "pr-7-old", &pull_request_delivery(7, "synchronize", &bad)), 200);
    assert_eq!(runs().len(), 2);
    drop(s);
    gh.finish();
}

#[test]
fn with_a_token_a_refused_pull_request_gets_a_comment() {
    use crate::common::fake_github::{FakeGithub, TOKEN};
    let w = rolled_back();
    let gh = FakeGithub::start(w.origin.clone());
    std::fs::write(w.root().join("gh-token"), TOKEN).unwrap();
    std::fs::write(w.root().join("gh-secrets"), "hook-secret\n").unwrap();
    w.write_config(
        &ConfigSpec::new()
            .github_forge(&gh.url, "gh-token")
            .set("sources.github", json!({ "secrets_file": "gh-secrets", "workflows": ["deploy"] })),
    );
    let s = crate::serve::serve_app(&w, &gh, "srv");
    let bad = push_pull_head(&w, 9, "1.5.0");
    assert_eq!(gh.deliver("pull_request", "pr-9", &pull_request_delivery(9, "opened", &bad)), 200);
    let comments = gh.comments();
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert_eq!(comments[0].0, 9);
    assert!(comments[0].1.contains("rollbackd/gate: 1 change brings back a held artifact"), "{}", comments[0].1);
    drop(s);
    gh.finish();
}
