//! Policies kept in the config repo (`policies: { repo_path: .rollbackd/policies }`): read from
//! the branch, switched to at the fetch that brings a valid change, a broken change refused
//! with every error at its place (the set in force stays), reported on the commit through the
//! fake GitHub, and nothing decided (503, not ready) before any valid set was read.

use axum::http::StatusCode;

use crate::common::fake_github::{FakeGithub, TOKEN};
use crate::common::http::{alert_body, am, server};
use crate::common::*;
use rollbackd::{Options, Outcome};

const DIR: &str = ".rollbackd/policies";

/// The world's config with the policies in the repo, fetched at every event.
fn in_repo(w: &World, extra: ConfigSpec) {
    w.write_config(&extra.set("git.fetch_freshness", "0s"));
    let cfg = std::fs::read_to_string(w.config_path()).unwrap();
    let cfg = cfg.replace("policies: policies\n", &format!("policies: {{ repo_path: {DIR} }}\n"));
    std::fs::write(w.config_path(), cfg).unwrap();
}

fn push_policies(w: &World, files: &[(&str, &str)]) -> String {
    let paths: Vec<String> = files.iter().map(|(name, _)| format!("{DIR}/{name}")).collect();
    let files: Vec<(&str, Option<&str>)> = paths.iter().zip(files).map(|(p, (_, t))| (p.as_str(), Some(*t))).collect();
    w.commit_files("Change rollbackd policies", &files, 1).0
}

const BROKEN: &str = "- name: a\n  match: {}\n  target: { service: x, env: y, paths: [a] }\n  guards: { cooldown: soon }\n\
                      - name: b\n  match: {}\n  target: { service: x, env: y, paths: [a] }\n  action: { mode: direct, strtegy: revert }\n";

#[test]
fn a_valid_change_on_the_branch_is_switched_to_and_a_broken_one_refused_with_every_error() {
    let w = World::with(&[]);
    in_repo(&w, ConfigSpec::new());
    w.deploy("checkout", "prod", "1.5.0", 30);
    let mut engine = w.engine();
    assert!(!engine.policies_loaded());
    // No policy directory on the branch: nothing to decide with, and the sender retries.
    let err = engine.handle(&w.alert("checkout", "prod", "f0"), &Options::default()).unwrap_err();
    assert!(err.is_transient() && err.to_string().contains(".rollbackd/policies: no such directory on main"), "{err}");

    push_policies(&w, &[("10-prod.yaml", &policy_file(&[PolicySpec::new("watch").mode(Mode::Notify)]))]);
    let r = engine.handle(&w.alert("checkout", "prod", "f1"), &Options::default()).unwrap();
    assert_eq!(r.outcome.name(), "notified", "{:?}", r.outcome);

    // A broken change: both its errors, at their lines in the repo's files; the set in force stays.
    let broken = push_policies(&w, &[("10-prod.yaml", BROKEN)]);
    let r = engine.handle(&w.alert("checkout", "prod", "f2"), &Options::default()).unwrap();
    assert_eq!(r.outcome.name(), "notified", "the old set decided: {:?}", r.outcome);
    let refusal = engine.policy_refusal().expect("refused");
    assert_eq!(refusal.commit, broken);
    assert_eq!(refusal.errors.len(), 2, "{:?}", refusal.errors);
    assert!(refusal.errors[0].starts_with(".rollbackd/policies/10-prod.yaml:4:"), "{:?}", refusal.errors);
    assert!(refusal.errors[1].starts_with(".rollbackd/policies/10-prod.yaml:8:"), "{:?}", refusal.errors);
    let status = engine.status(None).unwrap();
    assert!(status.contains(&format!("POLICIES REFUSED at {broken}")) && status.contains("strtegy"), "{status}");
    assert!(status.contains("policies: 1 in force from repo:main:.rollbackd/policies"), "{status}");

    // Reverting the broken change brings back the set in force: the refusal is over.
    push_policies(&w, &[("10-prod.yaml", &policy_file(&[PolicySpec::new("watch").mode(Mode::Notify)]))]);
    let r = engine.handle(&w.alert("checkout", "prod", "f2b"), &Options::default()).unwrap();
    assert_eq!(r.outcome.name(), "notified");
    assert!(engine.policy_refusal().is_none(), "{:?}", engine.policy_refusal());

    // The fix: the new set decides the next event.
    push_policies(&w, &[("10-prod.yaml", &policy_file(&[PolicySpec::new("prod-direct").mode(Mode::Direct)]))]);
    let r = engine.handle(&w.alert("checkout", "prod", "f3"), &Options::default()).unwrap();
    assert!(matches!(r.outcome, Outcome::RolledBack { .. }), "{:?}", r.outcome);
    assert!(engine.policy_refusal().is_none());
    assert_eq!(w.trailers("main", "Rollback-Policy"), ["prod-direct"]);

    // A restart reads them from the mirror before any fetch.
    drop(engine);
    let engine = w.engine();
    assert!(engine.policies_loaded());
    assert_eq!(engine.policies().policies[0].name(), "prod-direct");
    // A restart on a broken branch decides with the last valid version, as a running one would.
    drop(engine);
    let broken = push_policies(&w, &[("10-prod.yaml", BROKEN)]);
    let mut engine = w.replica("fresh-replica");
    let r = engine.handle(&w.alert("checkout", "prod", "f4"), &Options::default()).unwrap();
    assert_eq!(engine.policy_refusal().map(|r| r.commit.clone()), Some(broken));
    assert_eq!(engine.policies().policies[0].name(), "prod-direct");
    assert!(matches!(r.outcome, Outcome::Duplicate { .. }), "decided (rolled back already): {:?}", r.outcome);
}

#[tokio::test(flavor = "multi_thread")]
async fn before_any_valid_policy_is_read_the_server_is_not_ready_and_senders_retry() {
    let w = World::with(&[]);
    in_repo(&w, ConfigSpec::new().set("server.refresh_interval", "1s"));
    let s = server(&w, ConfigSpec::new());
    wait_for("the first fetch", 20, || {
        s.worker.shared().snapshot().records.is_empty() && s.worker.shared().policies_pending().is_some()
    });
    let (st, _, b) = s.send(axum::http::Request::get("/readyz").body(axum::body::Body::empty()).unwrap()).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert!(b["error"].as_str().unwrap().contains("no such directory"), "{b}");
    let (st, headers, b) = s.send(am(alert_body("r1", "checkout", "firing"))).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert!(headers.contains_key("retry-after"));

    push_policies(&w, &[("10-prod.yaml", &policy_file(&[PolicySpec::new("watch").mode(Mode::Notify)]))]);
    wait_for("ready with the repo's policies", 20, || s.worker.shared().ready());
    let (st, _, b) = s.send(am(alert_body("r1", "checkout", "firing"))).await;
    assert_eq!((st, b["outcome"].as_str()), (StatusCode::OK, Some("notified")), "{b}");
}

#[test]
fn a_refused_change_is_reported_on_its_commit_as_a_check_run_or_a_comment() {
    let w = World::with(&[]);
    let gh = FakeGithub::start(w.origin.clone());
    push_policies(&w, &[("10-prod.yaml", &policy_file(&[PolicySpec::new("watch").mode(Mode::Notify)]))]);

    // As a GitHub App: a check run, each error an annotation at its line.
    in_repo(&w, ConfigSpec::new().github_app(&gh.url));
    let mut engine = w.engine();
    let broken = push_policies(&w, &[("10-prod.yaml", BROKEN)]);
    engine.handle(&w.alert("checkout", "prod", "f1"), &Options::default()).unwrap();
    // Reported by the outbox, off the writer: waited for as the CLI does before it exits.
    assert!(engine.settle_forge(std::time::Duration::from_secs(30)));
    let runs = gh.gh.lock().unwrap().check_runs_created.clone();
    let refused = runs.iter().find(|r| r["head_sha"] == broken.as_str()).expect("a check run on the broken commit");
    assert_eq!(refused["name"], "rollbackd/policies");
    assert_eq!(refused["conclusion"], "failure");
    let notes = refused["output"]["annotations"].as_array().unwrap();
    assert_eq!(notes.len(), 2, "{refused}");
    assert_eq!(notes[0]["path"], ".rollbackd/policies/10-prod.yaml");
    assert_eq!((notes[0]["start_line"].as_u64(), notes[1]["start_line"].as_u64()), (Some(4), Some(8)));
    assert!(notes[1]["message"].as_str().unwrap().contains("strtegy"), "{refused}");
    // Refused once, not at every fetch.
    engine.handle(&w.alert("checkout", "prod", "f2"), &Options::default()).unwrap();
    assert!(engine.settle_forge(std::time::Duration::from_secs(30)));
    assert_eq!(gh.gh.lock().unwrap().check_runs_created.iter().filter(|r| r["head_sha"] == broken.as_str()).count(), 1);
    drop(engine);

    // With a personal token GitHub refuses check runs: a commit comment says the same.
    std::fs::write(w.root().join("gh-token"), TOKEN).unwrap();
    in_repo(&w, ConfigSpec::new().github_forge(&gh.url, "gh-token"));
    let broken_again = push_policies(&w, &[("20-more.yaml", BROKEN)]);
    let mut engine = w.engine();
    engine.handle(&w.alert("checkout", "prod", "f3"), &Options::default()).unwrap();
    assert!(engine.settle_forge(std::time::Duration::from_secs(30)));
    let comments = gh.gh.lock().unwrap().commit_comments.clone();
    let (_, body) = comments.iter().find(|(sha, _)| *sha == broken_again).expect("a commit comment");
    assert!(body.contains(".rollbackd/policies/20-more.yaml:8:") && body.contains("refused"), "{body}");
    gh.finish();
}

#[test]
fn check_reads_them_from_the_repo_online_and_from_a_checkout_offline() {
    let w = World::with(&[]);
    in_repo(&w, ConfigSpec::new());
    push_policies(&w, &[("10-prod.yaml", BROKEN)]);
    let said = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).into_owned();
    let online = w.run_cli(&["check"]);
    assert_eq!(online.status.code(), Some(1), "{}", said(&online));
    assert!(
        said(&online).contains(".rollbackd/policies/10-prod.yaml:8:27: error: unknown field `strtegy`"),
        "{}",
        said(&online)
    );

    let offline = w.run_cli(&["check", "--offline"]);
    assert_eq!(offline.status.code(), Some(0), "{}", said(&offline));
    assert!(said(&offline).contains("pass --policies <checkout>/.rollbackd/policies"), "{}", said(&offline));

    // The config repo's CI checks its checkout.
    let checkout = w.root().join("checkout/.rollbackd/policies");
    std::fs::create_dir_all(&checkout).unwrap();
    std::fs::write(checkout.join("10-prod.yaml"), BROKEN).unwrap();
    let gate = w.run_cli(&["check", "--offline", "--policies", checkout.to_str().unwrap()]);
    assert_eq!(gate.status.code(), Some(1), "{}", said(&gate));
    assert!(said(&gate).contains("10-prod.yaml:4:23: error: invalid duration"), "{}", said(&gate));
}

#[test]
fn a_process_started_on_refused_policies_says_so_in_its_metrics_and_status() {
    let w = World::with(&[]);
    in_repo(&w, ConfigSpec::new());
    push_policies(&w, &[("10-prod.yaml", &policy_file(&[PolicySpec::new("watch").mode(Mode::Notify)]))]);
    let broken = push_policies(&w, &[("10-prod.yaml", BROKEN)]);
    std::fs::write(w.root().join("am-tokens"), "t\n").unwrap();
    let s = crate::serve::serve(&w, "fresh");
    let (_, metrics) = crate::serve::get(&format!("{}/metrics", s.url)).unwrap();
    assert!(metrics.contains("rollbackd_policies_valid 0"), "{metrics}");
    assert!(metrics.contains("rollbackd_policies 1"), "the last valid set decides: {metrics}");
    let (_, status) = crate::serve::get(&format!("{}/api/v1/status", s.url)).unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["policies"]["refused_commit"], broken.as_str(), "{status}");
}

#[test]
fn a_policy_that_could_roll_back_the_policies_and_a_huge_broken_file_are_refused_cheaply() {
    let w = World::with(&[]);
    in_repo(&w, ConfigSpec::new());
    push_policies(&w, &[("10-prod.yaml", &policy_file(&[PolicySpec::new("watch").mode(Mode::Notify)]))]);
    let mut engine = w.engine();
    engine.handle(&w.alert("checkout", "prod", "f1"), &Options::default()).unwrap();
    for (i, paths) in [json!([".rollbackd/**"]), json!(["**"]), json!([".rollback*/**"])].iter().enumerate() {
        let evil = policy_file(&[PolicySpec::new("evil").set("target.paths", paths.clone())]);
        push_policies(&w, &[("05-evil.yaml", &evil)]);
        engine.handle(&w.alert("checkout", "prod", &format!("evil{i}")), &Options::default()).unwrap();
        let refusal = engine.policy_refusal().expect("refused");
        assert!(
            refusal.errors.iter().any(|e| e.contains("could match files in the policy directory")),
            "{paths}: {:?}",
            refusal.errors
        );
        assert_eq!(engine.policies().policies[0].name(), "watch");
    }
    // Thousands of broken items: one parse, the first error, never minutes of the writer.
    let bomb: String = (0..5_000).map(|i| format!("- {{name: p{i}, bogus: 1}}\n")).collect();
    push_policies(&w, &[("05-evil.yaml", &bomb)]);
    engine.handle(&w.alert("checkout", "prod", "bomb"), &Options::default()).unwrap();
    let refusal = engine.policy_refusal().expect("refused");
    assert!(refusal.errors.len() <= 51, "{}", refusal.errors.len());
}

/// `**/*.yml` names no file in `.rollbackd/policies` literally, yet matches `10-prod.yml` there:
/// a policy whose paths could match anything under the policy directory is refused at load
/// (the set in force stays, and decides) and by `check`, online and offline. Judged by what the
/// globs could match, not by one sample file name.
#[test]
fn a_glob_that_could_match_a_policy_file_is_refused_by_check_and_at_load() {
    let w = World::with(&[]);
    in_repo(&w, ConfigSpec::new());
    push_policies(&w, &[("10-prod.yml", &policy_file(&[PolicySpec::new("watch").mode(Mode::Notify)]))]);
    let mut engine = w.engine();
    engine.handle(&w.alert("checkout", "prod", "f0"), &Options::default()).unwrap();
    let said = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).into_owned();
    for (i, path) in ["**/*.yml", "*/policies/*", ".rollbackd/{policies,other}/**", "{{ labels.team }}/*/10-prod.yml"]
        .into_iter()
        .enumerate()
    {
        let evil = policy_file(&[PolicySpec::new("evil").set("target.paths", [path])]);
        push_policies(&w, &[("05-evil.yml", &evil)]);
        let branches = w.git(&["for-each-ref", "--format=%(refname) %(objectname)", "refs/heads", "refs/tags"]);
        let r = engine.handle(&w.alert("checkout", "prod", &format!("evil{i}")), &Options::default()).unwrap();
        assert_eq!(r.outcome.name(), "notified", "{path}: the set in force decides: {:?}", r.outcome);
        let refusal = engine.policy_refusal().expect("refused");
        assert!(
            refusal
                .errors
                .iter()
                .any(|e| e.contains(&format!("target path `{path}` could match files in the policy directory"))),
            "{path}: {:?}",
            refusal.errors
        );
        assert_eq!(w.git(&["for-each-ref", "--format=%(refname) %(objectname)", "refs/heads", "refs/tags"]), branches);
        assert_eq!(
            w.show("main", ".rollbackd/policies/10-prod.yml"),
            policy_file(&[PolicySpec::new("watch").mode(Mode::Notify)])
        );

        let online = w.run_cli(&["check"]);
        assert_eq!(online.status.code(), Some(1), "{path}: {}", said(&online));
        assert!(said(&online).contains(".rollbackd/policies/05-evil.yml:"), "{path}: {}", said(&online));
        assert!(said(&online).contains("could match files in the policy directory"), "{path}: {}", said(&online));
    }
    // The config repo's CI, on a checkout: the same refusal.
    let checkout = w.root().join("checkout/.rollbackd/policies");
    std::fs::create_dir_all(&checkout).unwrap();
    let evil = policy_file(&[PolicySpec::new("evil").set("target.paths", ["**/*.yml"])]);
    std::fs::write(checkout.join("05-evil.yml"), evil).unwrap();
    let gate = w.run_cli(&["check", "--offline", "--policies", checkout.to_str().unwrap()]);
    assert_eq!(gate.status.code(), Some(1), "{}", said(&gate));
    // Paths that cannot reach it stay accepted.
    let fine = policy_file(&[PolicySpec::new("fine").set("target.paths", ["apps/*/prod/**", "*/prod/**"])]);
    std::fs::write(checkout.join("05-evil.yml"), fine).unwrap();
    let gate = w.run_cli(&["check", "--offline", "--policies", checkout.to_str().unwrap()]);
    assert_eq!(gate.status.code(), Some(0), "{}", said(&gate));
}
