//! GitHub as it really behaves (issue 22), each against the strict fake: Enterprise Managed
//! Users' logins, nullable webhook fields, a pull request moved onto the watched branch,
//! paginated deliveries and statuses, check-run output limits, the installation token's rate
//! limit, and the permissions `check --forge` asks for.

use crate::common::fake_github::FakeGithub;
use crate::common::openapi::webhook_payload;
use crate::common::*;
use rollbackd::{Options, Outcome};

/// rollbackd on the fake GitHub as an App, with GitHub deliveries signed `hook-secret`.
fn app_config(w: &World, gh: &FakeGithub, extra: &[(&str, serde_json::Value)]) {
    std::fs::write(w.root().join("gh-secrets"), "hook-secret\n").unwrap();
    let mut cfg = ConfigSpec::new()
        .github_app(&gh.url)
        .set("sources.github.secrets_file", "gh-secrets")
        .set("sources.github.workflows", json!(["deploy"]));
    for (k, v) in extra {
        cfg = cfg.set(k, v.clone());
    }
    w.write_config(&cfg);
}

/// The same, served.
/// rollbackd as the App on `gh`, configured with `extra`, serving.
fn served_app(w: &World, gh: &FakeGithub, extra: &[(&str, serde_json::Value)]) -> crate::serve::Serve {
    app_config(w, gh, extra);
    crate::serve::serve_app(w, gh, "srv")
}

#[test]
fn an_enterprise_managed_user_approves_from_a_pull_request_comment() {
    let w = World::with(&[crate::github_forge::policy("merge").chatops("approve", &["github:alice_acme"])]);
    let gh = FakeGithub::start(w.origin.clone());
    w.deploy("checkout", "prod", "1.5.0", 10);
    let teams = [("directory.github_teams", json!({ "acme/sre": ["carol"] }))];
    app_config(&w, &gh, &teams);
    let r = w.engine().handle(&w.alert("checkout", "prod", "fp"), &Options::default()).unwrap();
    assert!(matches!(r.outcome, Outcome::Proposed { .. }), "{:?}", r.outcome);
    let pr = gh.prs()[0].clone();
    let s = served_app(&w, &gh, &teams);

    // An EMU login is `name_shortcode`.
    let c = gh.pr_comment(pr.number, 7001, "alice_acme", "/rollback approve");
    assert_eq!(gh.deliver("issue_comment", "emu-approve-1", &c), 200);
    wait_for("the merge", 30, || gh.prs()[0].state == "closed");
    assert_eq!(w.trailers("main", "Rollback-Id").len(), 1);
    drop(s);
    gh.finish();
}

#[test]
fn a_pull_request_with_merged_null_or_moved_onto_the_watched_branch_is_gated() {
    let w = crate::holds::rolled_back();
    let gh = FakeGithub::start(w.origin.clone());
    let s = served_app(&w, &gh, &[]);
    let bad = crate::holds::push_pull_head(&w, 7, "1.5.0");
    let runs = || gh.gh.lock().unwrap().check_runs_created.clone();

    // A push to a pull request: GitHub sends `merged: null` (the description: boolean | null).
    let mut sync: serde_json::Value =
        serde_json::from_slice(&crate::holds::pull_request_delivery(7, "synchronize", &bad)).unwrap();
    sync["pull_request"]["merged"] = serde_json::Value::Null;
    assert_eq!(gh.deliver("pull_request", "pr-7-sync", &serde_json::to_vec(&sync).unwrap()), 200);
    assert_eq!(runs().len(), 1, "gated");
    assert_eq!(runs()[0]["conclusion"], "failure");

    // A pull request opened against another branch, then moved onto main: gated then.
    let moved = bad.clone();
    let pushed = std::process::Command::new("git")
        .current_dir(w.root().join("pr-work"))
        .args(["push", "-qf", "origin", "HEAD:refs/pull/8/head"])
        .status()
        .unwrap();
    assert!(pushed.success());
    let mut edited: serde_json::Value =
        serde_json::from_slice(&crate::holds::pull_request_delivery(8, "edited", &moved)).unwrap();
    edited["changes"] = json!({ "base": { "ref": { "from": "release" }, "sha": { "from": "0".repeat(40) } } });
    let edited = webhook_payload("pull_request", edited);
    assert_eq!(gh.deliver("pull_request", "pr-8-edited", &serde_json::to_vec(&edited).unwrap()), 200);
    assert_eq!(runs().len(), 2, "gated once moved onto main");
    assert_eq!(
        (runs()[1]["head_sha"].as_str(), runs()[1]["conclusion"].as_str()),
        (Some(moved.as_str()), Some("failure"))
    );

    // A title edit is not a new change.
    let mut retitled: serde_json::Value =
        serde_json::from_slice(&crate::holds::pull_request_delivery(8, "edited", &moved)).unwrap();
    retitled["changes"] = json!({ "title": { "from": "old title" } });
    assert_eq!(gh.deliver("pull_request", "pr-8-title", &serde_json::to_vec(&retitled).unwrap()), 200);
    assert_eq!(runs().len(), 2);
    drop(s);
    gh.finish();
}

fn failed_deploy_policy() -> PolicySpec {
    PolicySpec::new("deploy-failed")
        .source("github")
        .matchers(&["event=\"workflow_run\"", "workflow=\"deploy\""])
        .target("checkout", "prod", &["apps/checkout/prod/**"])
        .set("target.to", "{{ labels.sha }}~1")
        .mode(Mode::Direct)
}

/// A delivery attempt as GitHub records it, added to the fake's list as if it had been sent.
fn recorded(gh: &FakeGithub, guid: &str, event: &str, payload: &[u8], status: u16) -> u64 {
    let mut g = gh.gh.lock().unwrap();
    let id = g.deliveries.len() as u64 + 1;
    g.deliveries.push(crate::common::fake_github::SentDelivery {
        id,
        guid: guid.into(),
        event: event.into(),
        payload: payload.to_vec(),
        redelivery: false,
        status_code: status,
        answer: String::new(),
        delivered_at: jiff::Timestamp::now().to_string(),
    });
    id
}

#[test]
fn a_delivery_lost_behind_more_than_a_page_is_sent_again_once_and_a_refused_one_never() {
    let w = World::with(&[failed_deploy_policy()]);
    let bad = w.deploy("checkout", "prod", "1.5.0", 10);
    let gh = FakeGithub::start(w.origin.clone());
    let mut run = crate::common::http::fixture("workflow_run.completed.payload.json");
    run["workflow_run"]["name"] = "deploy".into();
    run["workflow_run"]["conclusion"] = "failure".into();
    run["workflow_run"]["head_branch"] = "main".into();
    run["workflow_run"]["head_sha"] = bad.0.clone().into();
    let run = serde_json::to_vec(&webhook_payload("workflow_run", run)).unwrap();
    // While rollbackd was away: the failed deploy answered 503, one delivery it refused (400),
    // and then 150 more (its own comments and merges) that it handled.
    let lost = recorded(&gh, "guid-lost", "workflow_run", &run, 503);
    let refused = recorded(&gh, "guid-refused", "workflow_run", b"{not json", 400);
    let too_big = recorded(&gh, "guid-413", "workflow_run", b"{}", 413);
    for i in 0..150 {
        recorded(&gh, &format!("guid-ok-{i}"), "issue_comment", b"{}", 200);
    }
    let s = served_app(
        &w,
        &gh,
        &[
            ("sources.github.redeliver_every", json!("1s")),
            ("server.refresh_interval", json!("1s")),
            ("git.fetch_freshness", json!("0s")),
        ],
    );
    wait_for("the redelivered rollback", 60, || crate::serve::rollback_commits(&w) == 1);
    let looked = || gh.gh.lock().unwrap().requests.iter().filter(|r| r.starts_with("GET /app/hook/deliveries")).count();
    let now = looked();
    wait_for("more rounds of looking", 30, || looked() >= now + 4);
    let asked = gh.gh.lock().unwrap().redeliveries_asked.clone();
    assert_eq!(asked, [lost], "the lost one once; never the refused ({refused}, {too_big})");
    assert_eq!(crate::serve::rollback_commits(&w), 1);
    drop(s);
    gh.finish();
}

#[test]
fn a_required_status_past_the_first_page_of_the_combined_status_is_seen() {
    let w = World::with(&[crate::github_forge::policy("rebase")
        .review("auto_merge", true)
        .review("required_checks", ["ci/legacy"])]);
    let gh = FakeGithub::start(w.origin.clone());
    app_config(&w, &gh, &[("directory.github_teams", json!({ "acme/sre": ["carol"] }))]);
    w.deploy("checkout", "prod", "1.5.0", 10);
    let report = w.engine().handle(&w.alert("checkout", "prod", "fp"), &Options::default()).unwrap();
    let Outcome::Proposed { rollback: rb } = &report.outcome else { panic!("{:?}", report.outcome) };
    // 130 contexts: the required one is on the second page of 100.
    let mut statuses: Vec<(String, String)> = (0..129).map(|i| (format!("lint-{i}"), "success".into())).collect();
    statuses.push(("ci/legacy".into(), "success".into()));
    gh.gh.lock().unwrap().statuses.insert(rb.commit.0.clone(), statuses);
    let msg = w.engine().checks_completed(&rb.branch).unwrap();
    assert!(msg.starts_with("merged"), "{msg}");
    gh.finish();
}

#[test]
fn a_long_gate_report_is_cut_to_what_github_takes_and_its_annotations_sent_50_at_a_time() {
    let w = World::with(&[crate::github_forge::policy("merge")]);
    let gh = FakeGithub::start(w.origin.clone());
    app_config(&w, &gh, &[("directory.github_teams", json!({ "acme/sre": ["carol"] }))]);
    let engine = w.engine();
    let forge = engine.forge();
    let violations: Vec<String> =
        (0..120).map(|i| format!("apps/s{i}/prod/deploy.yaml: brings back {} held", "x".repeat(1000))).collect();
    forge.report_gate(7, &w.good.0, &violations, &[]).unwrap();
    let runs = gh.gh.lock().unwrap().check_runs_created.clone();
    assert_eq!(runs.len(), 1);
    let summary = runs[0]["output"]["summary"].as_str().unwrap();
    assert!(summary.chars().count() <= 65_535, "{}", summary.chars().count());
    assert!(summary.contains("rollbackd status"), "{}", &summary[summary.len() - 300..]);
    assert_eq!(runs[0]["output"]["annotations"].as_array().unwrap().len(), 120, "every annotation, in three requests");
    let patches =
        gh.gh.lock().unwrap().requests.iter().filter(|r| r.starts_with("PATCH /repos/acme/config/check-runs/")).count();
    assert_eq!(patches, 2);
    drop(engine);
    gh.finish();
}

#[test]
fn the_installation_token_waits_out_a_rate_limit() {
    use crate::common::fake_github::Injected;
    let w = World::with(&[crate::github_forge::policy("merge")]);
    let gh = FakeGithub::start(w.origin.clone());
    app_config(&w, &gh, &[("directory.github_teams", json!({ "acme/sre": ["carol"] }))]);
    let engine = w.engine();
    gh.gh.lock().unwrap().inject.push(Injected {
        request: "POST /app/installations/4242/access_tokens".into(),
        status: 403,
        headers: vec![("retry-after", "1".into())],
        message: "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.".into(),
    });
    let token = engine.forge().github().unwrap().git_token().unwrap().unwrap();
    assert_eq!(token.expose(), crate::common::fake_github::INSTALLATION_TOKEN);
    assert!(gh.gh.lock().unwrap().inject.is_empty(), "the rate limit was met and waited out");
    drop(engine);
    gh.finish();
}

#[test]
fn an_installation_without_checks_write_gets_the_gate_as_a_comment() {
    let w = World::with(&[crate::github_forge::policy("merge")]);
    let gh = FakeGithub::start(w.origin.clone());
    gh.gh.lock().unwrap().app_permissions = Some(json!({ "metadata": "read", "contents": "write",
        "pull_requests": "write", "issues": "write", "checks": "read", "statuses": "read" }));
    app_config(&w, &gh, &[("directory.github_teams", json!({ "acme/sre": ["carol"] }))]);
    let engine = w.engine();
    let forge = engine.forge();
    forge.report_gate(7, &w.good.0, &["apps/checkout/prod/deploy.yaml: brings back 1.5.0".to_string()], &[]).unwrap();
    assert!(gh.gh.lock().unwrap().check_runs_created.is_empty(), "GitHub refused the check run (403)");
    let comments = gh.comments();
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert!(comments[0].1.contains("rollbackd/gate: 1 change brings back a held artifact"), "{}", comments[0].1);
    drop(engine);
    gh.finish();
}
