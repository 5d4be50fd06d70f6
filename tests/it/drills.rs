//! Drills: the rollback rollbackd would do, written signed to `rollbackd/drill/<service>/<env>`
//! on the origin for the repo's CI, and never a rollback: the watched branch, the tags and the
//! guards do not see it. Everything is read back from the origin with the git CLI.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use jiff::SignedDuration;
use rollbackd::{DrillOutcome, Options, Outcome};

const BRANCH: &str = "rollbackd/drill/checkout/prod";

/// The allowed-signers file an operator writes for git, from the key rollbackd made.
fn allowed_signers(w: &World) -> PathBuf {
    let key = w.root().join("data/signing_key");
    let out = Command::new("ssh-keygen").arg("-y").arg("-f").arg(&key).output().expect("ssh-keygen");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let public = String::from_utf8(out.stdout).unwrap();
    let file = w.root().join("allowed_signers");
    std::fs::write(&file, format!("rollbackd@localhost namespaces=\"git\" {}", public.trim())).unwrap();
    file
}

fn verify_commit(w: &World, signers: &Path, rev: &str) -> (bool, String) {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(&w.origin)
        .arg("-c")
        .arg(format!("gpg.ssh.allowedSignersFile={}", signers.display()))
        .args(["verify-commit", rev])
        .output()
        .expect("git");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn refs_except_drills(w: &World) -> String {
    w.git(&["for-each-ref", "--format=%(refname) %(objectname)", "refs/heads/main", "refs/tags"])
}

fn branch_head(w: &World) -> Option<String> {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(&w.origin)
        .args(["rev-parse", "--verify", "--quiet", &format!("refs/heads/{BRANCH}")])
        .output()
        .unwrap();
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn written(outcome: &DrillOutcome) -> (String, Option<String>) {
    match outcome {
        DrillOutcome::Written { commit, previous, .. } => (commit.0.clone(), previous.as_ref().map(|p| p.0.clone())),
        other => panic!("expected a drill on the branch: {other:?}"),
    }
}

#[test]
fn a_drill_writes_the_signed_rollback_to_its_branch_and_leaves_the_branch_and_tags_alone() {
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    let before = refs_except_drills(&w);
    let main = w.head();

    let outcome = w.engine().drill("checkout", "prod", "cli:alice").unwrap();
    let (commit, previous) = written(&outcome);
    assert_eq!(previous, None, "the branch was created");

    assert_eq!(branch_head(&w).as_deref(), Some(commit.as_str()), "the drill branch is on the origin");
    // The rolled-back state: checkout/prod as known-good (1.4.2), everything else as on main.
    assert_eq!(
        w.show(BRANCH, &path("checkout", "prod")),
        manifest("checkout", "prod", &image("checkout", "1.4.2")).trim_end()
    );
    assert_eq!(w.show(BRANCH, &path("cart", "prod")), w.show("main", &path("cart", "prod")));
    assert_eq!(w.git(&["rev-parse", &format!("{BRANCH}^")]), main, "on the watched branch's head");
    let (ok, said) = verify_commit(&w, &allowed_signers(&w), BRANCH);
    assert!(ok && said.contains("Good \"git\" signature"), "{said}");
    let message = w.message(BRANCH);
    assert!(message.contains("Drill-Service: checkout") && !message.contains("Rollback-"), "{message}");

    assert_eq!(refs_except_drills(&w), before, "the watched branch and every tag are untouched");
    assert_eq!(w.head(), main);
}

#[test]
fn a_rollback_right_after_a_drill_is_not_held_back_by_cooldown_or_rate() {
    let w = World::with(&[PolicySpec::new("test-policy")
        .guard("cooldown", "1h")
        .guard("max_rollbacks", json!({ "count": 1, "per": "1h" }))
        .on_violation(OnViolation::Deny)]);
    w.deploy("checkout", "prod", "1.5.0", 10);
    written(&w.engine().drill("checkout", "prod", "cli:alice").unwrap());
    written(&w.engine().drill("checkout", "prod", "cli:alice").unwrap());

    let report = w.engine().handle(&w.alert("checkout", "prod", "fp1"), &Options::default()).unwrap();
    assert!(matches!(report.outcome, Outcome::RolledBack { .. }), "{:?}", report.outcome);
    assert!(report.decision.guards.iter().all(|g| g.passed), "{:?}", report.decision.guards);
    assert_eq!(
        w.show("main", &path("checkout", "prod")),
        manifest("checkout", "prod", &image("checkout", "1.4.2")).trim_end()
    );
}

#[test]
fn explain_shows_the_drill_and_history_does_not() {
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    let (commit, _) = written(&w.engine().drill("checkout", "prod", "cli:alice").unwrap());

    let mut engine = w.engine();
    let explanation = engine.explain("drill:checkout/prod").unwrap();
    assert_eq!(explanation.decisions.len(), 1, "{explanation:?}");
    let d = &explanation.decisions[0];
    assert_eq!((d.outcome.as_str(), d.service.as_deref(), d.env.as_deref()), ("drill", Some("checkout"), Some("prod")));
    assert!(d.reason.contains(&commit[..7]) && d.reason.contains(BRANCH), "{}", d.reason);
    assert!(explanation.rollbacks.is_empty());
    assert!(engine.history().unwrap().records().is_empty(), "a drill is no rollback");

    let out = w.run_cli(&["explain", "drill:checkout/prod"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("drill under test-policy"), "{text}");
}

#[test]
fn a_second_drill_moves_the_branch_onto_the_new_head_compare_and_swap() {
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    let (first, _) = written(&w.engine().drill("checkout", "prod", "cli:alice").unwrap());
    w.clock.advance(SignedDuration::from_mins(5));
    w.deploy("cart", "prod", "2.1.0", 1);
    let main = w.head();

    let (second, previous) = written(&w.engine().drill("checkout", "prod", "cli:alice").unwrap());
    assert_eq!(previous.as_deref(), Some(first.as_str()), "swapped from what it saw");
    assert_ne!(second, first);
    assert_eq!(branch_head(&w).as_deref(), Some(second.as_str()));
    assert_eq!(w.git(&["rev-parse", &format!("{BRANCH}^")]), main, "rebuilt on the new head, not on the old drill");
    assert_eq!(w.show(BRANCH, &path("cart", "prod")), manifest("cart", "prod", &image("cart", "2.1.0")).trim_end());

    // Someone else moved the drill branch: the next drill swaps from where it is now.
    w.git(&["update-ref", &format!("refs/heads/{BRANCH}"), &main]);
    let (third, previous) = written(&w.engine().drill("checkout", "prod", "cli:alice").unwrap());
    assert_eq!(previous.as_deref(), Some(main.as_str()));
    assert_eq!(branch_head(&w).as_deref(), Some(third.as_str()));
}

#[test]
fn a_drill_refuses_values_that_are_not_identifiers_and_writes_nothing() {
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    for (service, env) in [("../checkout", "prod"), ("checkout", "prod/x"), ("check*", "prod")] {
        let err = w.engine().drill(service, env, "cli:alice").unwrap_err();
        assert!(err.to_string().contains("not an identifier"), "{err}");
    }
    assert!(w.git(&["for-each-ref", "refs/heads/rollbackd"]).is_empty());
}

#[test]
fn a_drill_with_nothing_to_roll_back_says_why_and_writes_no_branch() {
    let w = World::new();
    let out = w.run_cli(&["drill", "nosuch", "--env", "prod", "--actor", "alice"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("nothing written"), "{text}");
    assert!(w.git(&["for-each-ref", "refs/heads/rollbackd"]).is_empty());
}

#[test]
fn serve_runs_the_drills_in_its_config_on_schedule() {
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    w.write_config(
        &ConfigSpec::new()
            .set("drills", json!({ "every": "1s", "targets": [{ "service": "checkout", "env": "prod" }] })),
    );
    let main = w.head();
    let _serve = crate::serve::serve(&w, "data");
    wait_for("the first scheduled drill", 30, || branch_head(&w).is_some());
    let first = branch_head(&w).unwrap();
    wait_for("the next scheduled drill", 30, || branch_head(&w).is_some_and(|h| h != first));
    assert_eq!(
        w.show(BRANCH, &path("checkout", "prod")),
        manifest("checkout", "prod", &image("checkout", "1.4.2")).trim_end()
    );
    assert_eq!(w.head(), main, "the watched branch is untouched");
    assert!(w.git(&["tag", "-l", "rollback/*"]).is_empty());
}

#[test]
fn the_latest_drill_carries_what_the_repos_ci_said_of_it_and_an_unsigned_head_is_no_drill() {
    use crate::common::fake_github::{FakeGithub, TOKEN};
    use rollbackd::CiVerdict;
    let w = World::new();
    let gh = FakeGithub::start(w.origin.clone());
    std::fs::write(w.root().join("gh-token"), TOKEN).unwrap();
    w.write_config(&ConfigSpec::new().github_forge(&gh.url, "gh-token"));
    w.deploy("checkout", "prod", "1.5.0", 10);
    let mut engine = w.engine();
    assert!(engine.drill_result("checkout", "prod").is_none(), "never drilled");
    let (commit, _) = written(&engine.drill("checkout", "prod", "cli:alice").unwrap());

    let result = engine.drill_result("checkout", "prod").unwrap();
    assert_eq!((result.branch.as_str(), result.commit.0.as_str()), (BRANCH, commit.as_str()));
    assert!(matches!(result.ci, Some(CiVerdict::Pending { .. })), "no CI yet: {:?}", result.ci);
    gh.set_check(&commit, "kustomize-build", "failure");
    let ci = engine.drill_result("checkout", "prod").unwrap().ci;
    assert_eq!(ci, Some(CiVerdict::Failed { checks: vec!["kustomize-build".into()] }));
    gh.set_check(&commit, "kustomize-build", "success");
    assert_eq!(engine.drill_result("checkout", "prod").unwrap().ci, Some(CiVerdict::Passed), "the newest run counts");

    // Anyone may push to the drill branch; what rollbackd did not sign is no drill result.
    let main = w.head();
    w.git(&["update-ref", &format!("refs/heads/{BRANCH}"), &main]);
    let mut engine = w.engine();
    engine.explain("anything").unwrap();
    assert!(engine.drill_result("checkout", "prod").is_none());
    gh.finish();
}

#[test]
fn check_warns_about_a_drill_target_no_policy_rolls_back_and_refuses_one_that_is_no_identifier() {
    let w = World::with(&[PolicySpec::new("prod").prod_only()]);
    let targets = json!([{ "service": "checkout", "env": "prod" }, { "service": "checkout", "env": "staging" }]);
    w.write_config(&ConfigSpec::new().set("drills", json!({ "every": "24h", "targets": targets })));
    let out = w.run_cli(&["check", "--offline"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("drills.targets[1] (checkout/staging): nothing would be drilled: ignored: no policy matches"),
        "{text}"
    );
    assert!(!text.contains("drills.targets[0]"), "{text}");

    let bad = json!([{ "service": "checkout", "env": "../prod" }]);
    w.write_config(&ConfigSpec::new().set("drills", json!({ "every": "24h", "targets": bad })));
    let out = w.run_cli(&["check", "--offline"]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        !out.status.success() && text.contains("drills.targets[0]") && text.contains("not an identifier"),
        "{text}"
    );
}

#[test]
fn a_service_only_alerts_roll_back_is_drilled_under_that_policy() {
    let w = World::with(&[PolicySpec::new("alerts-only").source("alertmanager").matchers(&[
        "alertname=\"HighErrorRate\"",
        "service=~\".+\"",
        "env=\"prod\"",
    ])]);
    w.deploy("checkout", "prod", "1.5.0", 10);
    let outcome = w.engine().drill("checkout", "prod", "cli:alice").unwrap();
    let DrillOutcome::Written { policy, .. } = &outcome else { panic!("{outcome:?}") };
    assert_eq!(policy, "alerts-only");
    assert_eq!(
        w.show(BRANCH, &path("checkout", "prod")),
        manifest("checkout", "prod", &image("checkout", "1.4.2")).trim_end()
    );
    // Its env matcher still holds: staging is no target of it.
    let staging = w.engine().drill("checkout", "staging", "cli:alice").unwrap();
    assert!(!staging.is_written(), "{staging:?}");
}

/// A drill written and the fake GitHub (backed by the origin) serving its head's checks.
fn drilled_with_github(service: &str) -> (World, crate::common::fake_github::FakeGithub, String) {
    use crate::common::fake_github::{FakeGithub, TOKEN};
    let w = World::new();
    let gh = FakeGithub::start(w.origin.clone());
    std::fs::write(w.root().join("gh-token"), TOKEN).unwrap();
    w.write_config(&ConfigSpec::new().github_forge(&gh.url, "gh-token"));
    w.deploy(service, "prod", "1.0.0", 120);
    w.deploy(service, "prod", "1.1.0", 10);
    let (commit, _) = written(&w.engine().drill(service, "prod", "cli:alice").unwrap());
    (w, gh, commit)
}

fn readiness_json(w: &World, service: &str) -> (Option<i32>, serde_json::Value) {
    let out = w.run_cli(&["readiness", service, "--env", "prod", "--json"]);
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), json[0].clone())
}

#[test]
fn a_drill_whose_ci_failed_makes_readiness_not_ready_naming_the_checks_and_pending_is_no_failure() {
    let (w, gh, commit) = drilled_with_github("checkout");
    let branch = "rollbackd/drill/checkout/prod";

    // No check has reported yet: pending, said, and no obstacle.
    let (code, row) = readiness_json(&w, "checkout");
    assert_eq!((code, &row["ready"]), (Some(0), &json!(true)), "{row}");
    assert_eq!(
        (row["drill"]["commit"].as_str(), row["drill"]["branch"].as_str()),
        (Some(commit.as_str()), Some(branch))
    );
    assert_eq!(
        (row["drill"]["ci"]["state"].as_str(), row["drill"]["policy"].as_str()),
        (Some("pending"), Some("test-policy"))
    );
    let out = w.run_cli(&["readiness", "checkout", "--env", "prod"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ready") && text.contains("[drill CI pending"), "{text}");

    gh.set_check(&commit, "schema-validation", "success");
    gh.set_check(&commit, "kustomize-build", "failure");
    let (code, row) = readiness_json(&w, "checkout");
    assert_eq!((code, &row["ready"]), (Some(2), &json!(false)), "{row}");
    let reasons: Vec<&str> = row["reasons"].as_array().unwrap().iter().filter_map(|r| r.as_str()).collect();
    assert_eq!(reasons.len(), 1, "{row}");
    assert!(
        reasons[0].starts_with("drill failed CI: kustomize-build failed on rollbackd/drill/checkout/prod")
            && !reasons[0].contains("schema-validation"),
        "{row}"
    );
    assert_eq!(row["drill"]["ci"], json!({ "state": "failed", "checks": ["kustomize-build"] }));

    // The re-run passed: ready again.
    gh.set_check(&commit, "kustomize-build", "success");
    let (code, row) = readiness_json(&w, "checkout");
    assert_eq!((code, &row["drill"]["ci"]["state"]), (Some(0), &json!("passed")), "{row}");

    // A service never drilled has no drill to join.
    let (_, cart) = readiness_json(&w, "cart");
    assert!(cart.get("drill").is_none(), "{cart}");
    gh.finish();
}

/// The server joins the drill's CI too, asked of GitHub off the writer: pending keeps the
/// gauge at 1, the failure the next answer brings turns it to 0 and the status page names it.
#[tokio::test(flavor = "multi_thread")]
async fn the_server_gauge_turns_to_zero_when_the_drills_ci_fails() {
    use crate::common::http::*;
    use axum::body::Body;
    use axum::http::Request;
    // A service no other test has, so the process-wide gauge is this test's alone; the forge
    // runs its own runtime, so the world is built off the test's.
    let (w, gh, commit) = std::thread::spawn(|| drilled_with_github("lantern")).join().unwrap();
    let (root, clock) = (w.root().to_path_buf(), w.clock.clone());
    let s = std::thread::spawn(move || server_in(&root, clock, ConfigSpec::new().set("server.refresh_interval", "1s")))
        .join()
        .unwrap();
    s.wait_ready();
    let gauge = |text: &str, value: &str| {
        text.lines().any(|l| {
            l.starts_with("rollbackd_rollback_ready{")
                && l.contains("service=\"lantern\"")
                && l.ends_with(&format!(" {value}"))
        })
    };
    let scrape = || async {
        let (_, _, b) = s.send(Request::get("/metrics").body(Body::empty()).unwrap()).await;
        b.as_str().unwrap_or_default().to_string()
    };
    let status_row = || async {
        let (_, _, status) = s.send(Request::get("/api/v1/status").body(Body::empty()).unwrap()).await;
        status["readiness"].as_array().into_iter().flatten().find(|r| r["service"] == "lantern").cloned()
    };
    // Ready, with the pending drill joined (GitHub answered on its own thread).
    let mut row = None;
    for _ in 0..200 {
        row = status_row().await;
        if row.as_ref().is_some_and(|r| r["drill"]["ci"]["state"] == "pending") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let row = row.unwrap_or_default();
    assert_eq!((&row["ready"], &row["drill"]["ci"]["state"]), (&json!(true), &json!("pending")), "{row}");
    assert!(gauge(&scrape().await, "1"));

    gh.set_check(&commit, "kustomize-build", "failure");
    // The pending answer goes stale after 5 s, the next refresh asks again, the one after
    // works the rows out: seconds on a quiet machine, longer with the whole suite beside it.
    let mut text = String::new();
    for _ in 0..600 {
        text = scrape().await;
        if gauge(&text, "0") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let row = status_row().await.unwrap_or_default();
    assert!(
        gauge(&text, "0"),
        "lantern/prod ready=0 missing after the drill's CI failed; the status row: {row}\n{text}"
    );
    assert!(row["reasons"][0].as_str().unwrap_or_default().contains("kustomize-build failed"), "{row}");
    std::thread::spawn(move || {
        drop(s);
        drop(w);
        gh.finish();
    })
    .join()
    .unwrap();
}
