//! Before the incident: `rollbackd readiness` says, for every service/env the policies cover,
//! whether an automatic rollback would work now and what it would be; `rollbackd plan` says
//! what rollbackd would do if a change went bad after merge. Both against real bare origins,
//! and neither writes anything.

use std::time::Duration;

use crate::common::registry::Registry;
use crate::common::*;
use rollbackd::Readiness;

fn readiness(w: &World) -> Vec<Readiness> {
    w.engine().readiness(None, None, Duration::ZERO).unwrap()
}

fn row<'a>(rows: &'a [Readiness], service: &str, env: &str) -> &'a Readiness {
    rows.iter().find(|r| r.service == service && r.env == env).unwrap_or_else(|| panic!("no row for {service}/{env}"))
}

fn reasons(r: &Readiness) -> String {
    r.reasons.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

fn origin_refs(w: &World) -> String {
    w.git(&["for-each-ref", "--format=%(refname) %(objectname)"])
}

#[test]
fn every_service_a_templated_target_covers_gets_a_row_saying_what_it_would_go_back_to() {
    let w = World::new();
    let bad = w.deploy("checkout", "prod", "1.5.0", 10);
    let before = origin_refs(&w);
    let rows = readiness(&w);
    let mut names: Vec<String> = rows.iter().map(|r| format!("{}/{}", r.service, r.env)).collect();
    names.sort();
    assert_eq!(names, ["cart/prod", "cart/staging", "checkout/prod", "checkout/staging"]);

    let checkout = row(&rows, "checkout", "prod");
    assert!(checkout.ready, "{}", reasons(checkout));
    assert_eq!(checkout.known_good.as_deref(), Some(w.git(&["rev-parse", &format!("{bad}^1")]).trim()));
    assert_eq!(checkout.known_good.as_deref(), Some(w.good.0.as_str()));
    assert_eq!(checkout.policy.as_deref(), Some("test-policy"));
    assert_eq!(checkout.strategy, Some(Strategy::Revert));
    assert_eq!(checkout.mode, Some(Mode::Direct));

    // cart/prod has only ever had its first deploy: there is nothing to go back to.
    let cart = row(&rows, "cart", "prod");
    assert!(!cart.ready);
    assert!(reasons(cart).starts_with("nothing to go back to"), "{}", reasons(cart));
    assert_eq!(cart.known_good, None);

    assert_eq!(origin_refs(&w), before, "readiness wrote to the origin");
}

#[test]
fn a_freeze_an_irreversible_change_and_an_old_change_to_undo_are_each_named() {
    let policy = PolicySpec::new("guarded")
        .set("irreversible", json!({ "paths": ["**/migrations/**"] }))
        .guard("point_of_no_return", "30m")
        .guard("max_change_age", "1h");
    let w = World::with(&[policy]);
    let migration = "apps/checkout/prod/migrations/0042_add_column.sql";
    let text = manifest("checkout", "prod", &image("checkout", "1.5.0"));
    w.commit_files(
        "Deploy checkout 1.5.0 with its migration",
        &[(&path("checkout", "prod"), Some(&text)), (migration, Some("ALTER TABLE orders ADD COLUMN note text;\n"))],
        45,
    );
    // checkout/staging: a deploy two hours old, past max_change_age.
    w.deploy("checkout", "staging", "1.5.0", 120);
    w.engine().freeze("cart", Some("prod"), None, Some("launch week"), &rollbackd::Actor::cli("ops")).unwrap();
    w.deploy("cart", "prod", "2.1.0", 5);

    let rows = readiness(&w);
    let checkout = row(&rows, "checkout", "prod");
    assert!(!checkout.ready);
    let why = reasons(checkout);
    assert!(why.contains("point of no return") && why.contains(migration), "{why}");

    // max_change_age is about the change to undo, and says so (not a known-good too old).
    let staging = row(&rows, "checkout", "staging");
    assert!(!staging.ready);
    assert!(reasons(staging).starts_with("max_change_age: oldest change to undo"), "{}", reasons(staging));
    assert!(!reasons(staging).contains("known-good too old"), "{}", reasons(staging));

    let cart = row(&rows, "cart", "prod");
    assert!(!cart.ready);
    assert!(reasons(cart).contains("frozen") && reasons(cart).contains("launch week"), "{}", reasons(cart));
}

#[test]
fn a_known_good_tag_older_than_max_known_good_age_is_named_though_the_bad_change_is_recent() {
    let w = World::with(&[PolicySpec::new("bounded").guard("max_change_age", "6h").guard("max_known_good_age", "2h")]);
    // The known-good tag names checkout 1.4.2, 150 minutes old; the bad change is 10 minutes old.
    w.tag_known_good("checkout", "prod", &w.good.clone(), "20261121T090000Z");
    w.deploy("checkout", "prod", "1.5.0", 10);
    let rows = readiness(&w);
    let checkout = row(&rows, "checkout", "prod");
    assert!(!checkout.ready);
    assert_eq!(checkout.known_good_tag.as_deref(), Some("known-good/checkout/prod/20261121T090000Z"));
    let why = reasons(checkout);
    assert!(
        why.starts_with("known-good too old: known-good ") && why.contains("2h 30m") && why.contains("limit 2h"),
        "{why}"
    );
    assert!(!why.contains("max_change_age"), "the change to undo is recent: {why}");

    // The same decision for a live alert: the guard denies it and the branch is untouched.
    let head = w.head();
    let report = w.engine().handle(&w.alert("checkout", "prod", "fp1"), &rollbackd::Options::default()).unwrap();
    assert_eq!(report.outcome.name(), "denied", "{:?}", report.outcome);
    let failed: Vec<&str> = report.decision.guards.iter().filter(|g| !g.passed).map(|g| g.guard).collect();
    assert_eq!(failed, ["max_known_good_age"]);
    assert_eq!(w.head(), head);
}

#[test]
fn a_point_of_no_return_marked_by_a_trailer_is_named_by_that_trailer() {
    let policy = PolicySpec::new("guarded")
        .set("irreversible", json!({ "trailers": ["Irreversible: true"] }))
        .guard("point_of_no_return", "30m");
    let w = World::with(&[policy]);
    let text = manifest("checkout", "prod", &image("checkout", "1.5.0"));
    let marked = w.commit_files(
        "Deploy checkout 1.5.0, which drops a column\n\nIrreversible: true",
        &[(&path("checkout", "prod"), Some(&text))],
        45,
    );
    let rows = readiness(&w);
    let checkout = row(&rows, "checkout", "prod");
    assert!(!checkout.ready);
    let why = reasons(checkout);
    assert!(
        why.starts_with("point of no return:")
            && why.contains(marked.short())
            && why.contains("carries `Irreversible: true`"),
        "{why}"
    );
    // The same change 20 minutes old is still within the clock: ready.
    let w = World::with(&[PolicySpec::new("guarded")
        .set("irreversible", json!({ "trailers": ["Irreversible: true"] }))
        .guard("point_of_no_return", "30m")]);
    w.commit_files(
        "Deploy checkout 1.5.0, which drops a column\n\nIrreversible: true",
        &[(&path("checkout", "prod"), Some(&text))],
        20,
    );
    let rows = readiness(&w);
    assert!(row(&rows, "checkout", "prod").ready, "{}", reasons(row(&rows, "checkout", "prod")));
}

#[test]
fn a_rollback_whose_result_would_not_parse_is_named_and_writes_nothing() {
    let w = World::new();
    // The known-good state's manifest never parsed; the deploy after it fixed it. Going back
    // would leave a manifest that does not parse where one that does stands now.
    let file = path("checkout", "prod");
    w.commit_files("Half-written manifest", &[(&file, Some("apiVersion: apps/v1\nkind: [Deployment\n"))], 60);
    w.deploy("checkout", "prod", "1.5.0", 10);
    let before = origin_refs(&w);
    let rows = readiness(&w);
    let checkout = row(&rows, "checkout", "prod");
    assert!(!checkout.ready);
    let why = reasons(checkout);
    assert!(why.starts_with("result fails validation: the rollback would leave") && why.contains(&file), "{why}");
    assert_eq!(checkout.known_good, None, "{checkout:?}");
    assert_eq!(origin_refs(&w), before);

    let out = w.run_cli(&["readiness", "checkout", "--env", "prod", "--json"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json[0]["reasons"][0].as_str().unwrap().starts_with("result fails validation"), "{json}");
}

#[test]
fn a_mutable_known_good_image_and_a_held_artifact_are_named() {
    let w = World::with(&[PolicySpec::new("pinned").guard("require_immutable_artifacts", true)]);
    // checkout/staging's known-good state runs `:latest`.
    w.commit_files(
        "staging on latest",
        &[(
            &path("checkout", "staging"),
            Some(&manifest("checkout", "staging", "registry.example.com/checkout:latest")),
        )],
        60,
    );
    w.deploy("checkout", "staging", "1.6.0", 30);
    let rows = readiness(&w);
    let staging = row(&rows, "checkout", "staging");
    assert!(reasons(staging).contains("mutable artifact"), "{}", reasons(staging));

    // A rollback of checkout/prod holds 1.5.0; a later 1.5.1 whose rollback would bring the
    // held 1.5.0 back (known-good is 1.5.0's commit by tag, restored exactly) is not ready.
    let w = World::with(&[PolicySpec::new("restore").strategy(Strategy::Restore)]);
    let bad = w.deploy("checkout", "prod", "1.5.0", 50);
    let report = w.engine().handle(&w.alert("checkout", "prod", "fp1"), &rollbackd::Options::default()).unwrap();
    assert_eq!(report.outcome.name(), "rolled_back", "{:?}", report.outcome);
    w.tag_known_good("checkout", "prod", &bad, "20261121T110000Z");
    w.deploy("checkout", "prod", "1.5.1", 5);
    let rows = readiness(&w);
    let checkout = row(&rows, "checkout", "prod");
    assert!(!checkout.ready, "{checkout:?}");
    assert!(reasons(checkout).contains("held") && reasons(checkout).contains("1.5.0"), "{}", reasons(checkout));
}

#[test]
fn the_cli_prints_a_line_per_target_and_json_with_the_documented_fields() {
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    let before = origin_refs(&w);

    let out = w.run_cli(&["readiness", "--json"]);
    assert_eq!(out.status.code(), Some(2), "cart has nothing to go back to: {out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let all = json.as_array().unwrap();
    assert_eq!(all.len(), 4);
    let checkout = all.iter().find(|r| r["service"] == "checkout" && r["env"] == "prod").unwrap();
    for key in ["service", "env", "ready", "reasons", "known_good", "strategy", "mode", "policy"] {
        assert!(checkout.get(key).is_some(), "{key} missing from {checkout}");
    }
    assert_eq!(checkout["ready"], true);
    assert_eq!(checkout["known_good"], w.good.0.as_str());
    assert_eq!((checkout["strategy"].as_str(), checkout["mode"].as_str()), (Some("revert"), Some("direct")));
    let cart = all.iter().find(|r| r["service"] == "cart" && r["env"] == "prod").unwrap();
    assert_eq!(cart["ready"], false);
    assert_eq!(cart["known_good"], serde_json::Value::Null);
    assert!(cart["reasons"][0].as_str().unwrap().starts_with("nothing to go back to"), "{cart}");

    let out = w.run_cli(&["readiness", "checkout", "--env", "prod"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.starts_with("checkout/prod") && text.contains("ready") && text.contains(w.good.short()), "{text}");

    // A service no policy covers is said to be so.
    let out = w.run_cli(&["readiness", "billing", "--env", "prod", "--json"]);
    assert_eq!(out.status.code(), Some(2));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["ready"], false);
    assert!(json[0]["reasons"][0].as_str().unwrap().starts_with("no policy"), "{json}");
    assert_eq!(origin_refs(&w), before);
}

#[test]
fn plan_says_what_a_change_would_be_rolled_back_to_and_writes_nothing() {
    let w = World::with(&[PolicySpec::new("guarded")
        .set("irreversible", json!({ "paths": ["**/migrations/**"] }))
        .guard("point_of_no_return", "30m")
        .guard("cooldown", "1h")]);
    let migration = "apps/checkout/prod/migrations/0042_add_column.sql";
    let text = manifest("checkout", "prod", &image("checkout", "1.5.0"));
    w.commit_files(
        "Deploy checkout 1.5.0 with its migration",
        &[(&path("checkout", "prod"), Some(&text)), (migration, Some("ALTER TABLE x;\n"))],
        5,
    );
    let before = origin_refs(&w);
    let out = w.run_cli(&["plan", "HEAD", "--base", "HEAD~1", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let plans: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let plans = plans.as_array().unwrap();
    assert_eq!(plans.len(), 1, "only checkout/prod is touched: {plans:?}");
    let p = &plans[0];
    assert_eq!((p["service"].as_str(), p["env"].as_str()), (Some("checkout"), Some("prod")));
    assert_eq!(p["known_good"], w.good.0.as_str());
    assert_eq!(p["strategy"], "revert");
    assert_eq!(p["mode"], "direct");
    let restores = p["restores"].to_string();
    assert!(restores.contains("apps/checkout/prod/deployment.yaml") && restores.contains(migration), "{restores}");
    assert!(p["guards"].to_string().contains("cooldown 1h"), "{p}");
    let clock = p["point_of_no_return"].as_str().unwrap();
    assert!(clock.contains(migration) && clock.contains("30m"), "{clock}");

    let out = w.run_cli(&["plan", "HEAD"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("checkout/prod (policy guarded, direct):"), "{text}");
    assert!(text.contains(&format!("back to {}", w.good.short())), "{text}");
    assert_eq!(origin_refs(&w), before, "plan wrote to the origin");
}

#[test]
fn a_known_good_image_gone_from_its_registry_is_not_ready_until_it_is_pushed_again() {
    let registry = Registry::start();
    let w = World::new();
    let image = |v: &str| format!("{}/acme/checkout:{v}", registry.host());
    for (v, ago) in [("1.4.3", 60), ("1.5.0", 10)] {
        let text = manifest("checkout", "prod", &image(v));
        w.commit_files(&format!("Deploy checkout {v}"), &[(&path("checkout", "prod"), Some(&text))], ago);
    }
    w.write_config(
        &ConfigSpec::new()
            .set("registries", json!([{ "host": registry.host(), "url": registry.url(), "timeout": "5s" }])),
    );
    let ask = || w.engine().readiness(Some("checkout"), Some("prod"), Duration::from_secs(10)).unwrap();

    // Only the bad version is in the registry: the one a rollback needs is gone.
    registry.push_image("acme/checkout", "1.5.0");
    let rows = ask();
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].ready);
    let why = reasons(&rows[0]);
    assert!(why.contains("image missing") && why.contains(&image("1.4.3")), "{why}");

    registry.push_image("acme/checkout", "1.4.3");
    let rows = ask();
    assert!(rows[0].ready, "{}", reasons(&rows[0]));
    assert_eq!(rows[0].images, [image("1.4.3")]);
}

/// The server keeps `rollbackd_rollback_ready{service,env}` current after every fetch, and the
/// status page says the same: a freeze made meanwhile turns it to 0.
#[tokio::test(flavor = "multi_thread")]
async fn the_server_keeps_the_ready_gauge_and_the_status_page_current() {
    use crate::common::http::*;
    use axum::body::Body;
    use axum::http::Request;
    // A service no other test has, so the process-wide gauge is this test's alone.
    let w = World::new();
    w.deploy("beacon", "prod", "1.0.0", 120);
    w.deploy("beacon", "prod", "1.1.0", 10);
    let s = server(&w, ConfigSpec::new().set("server.refresh_interval", "1s"));
    s.wait_ready();
    let metric = |text: &str, value: &str| {
        text.lines().any(|l| {
            l.starts_with("rollbackd_rollback_ready{")
                && l.contains("service=\"beacon\"")
                && l.contains("env=\"prod\"")
                && l.ends_with(&format!(" {value}"))
        })
    };
    let scrape = || async {
        let (_, _, b) = s.send(Request::get("/metrics").body(Body::empty()).unwrap()).await;
        b.as_str().unwrap_or_default().to_string()
    };
    let mut text = String::new();
    for _ in 0..100 {
        text = scrape().await;
        if metric(&text, "1") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(metric(&text, "1"), "beacon/prod ready=1 missing from\n{text}");
    let (_, _, status) = s.send(Request::get("/api/v1/status").body(Body::empty()).unwrap()).await;
    let beacon = status["readiness"].as_array().unwrap().iter().find(|r| r["service"] == "beacon").cloned();
    assert_eq!(beacon.as_ref().map(|b| b["ready"].clone()), Some(json!(true)), "{status}");

    // A freeze written by someone else (another replica, the CLI) reaches the gauge at the next fetch.
    w.engine().freeze("beacon", Some("prod"), None, Some("game day"), &rollbackd::Actor::cli("ops")).unwrap();
    for _ in 0..100 {
        text = scrape().await;
        if metric(&text, "0") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(metric(&text, "0"), "beacon/prod ready=0 missing after the freeze\n{text}");
    let (_, _, page) = s.send(Request::get("/").body(Body::empty()).unwrap()).await;
    let page = page.as_str().unwrap().to_string();
    assert!(page.contains("id=\"readiness\"") && page.contains("game day"), "{page}");
}

/// A target no longer covered (its directory removed from the branch) does not keep its last
/// value: its series reads NaN, so an alert on `== 0` for it resolves.
#[tokio::test(flavor = "multi_thread")]
async fn a_target_no_longer_covered_leaves_the_ready_gauge_as_nan_not_its_last_value() {
    use crate::common::http::*;
    use axum::body::Body;
    use axum::http::Request;
    // A service no other test has, so the process-wide gauge is this test's alone.
    let w = World::new();
    w.deploy("ember", "prod", "1.0.0", 120);
    let s = server(&w, ConfigSpec::new().set("server.refresh_interval", "1s"));
    s.wait_ready();
    let series = |text: &str, value: &str| {
        text.lines().any(|l| {
            l.starts_with("rollbackd_rollback_ready{")
                && l.contains("service=\"ember\"")
                && l.ends_with(&format!(" {value}"))
        })
    };
    let scrape = || async {
        let (_, _, b) = s.send(Request::get("/metrics").body(Body::empty()).unwrap()).await;
        b.as_str().unwrap_or_default().to_string()
    };
    let wait_for_value = |value: &'static str| {
        let scrape = &scrape;
        async move {
            let mut text = String::new();
            for _ in 0..150 {
                text = scrape().await;
                if series(&text, value) {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            text
        }
    };
    // Its first deploy: nothing to go back to, not ready.
    let text = wait_for_value("0").await;
    assert!(series(&text, "0"), "ember/prod ready=0 missing\n{text}");

    w.commit_files("ember leaves", &[(&path("ember", "prod"), None)], 1);
    let text = wait_for_value("NaN").await;
    assert!(series(&text, "NaN"), "ember/prod should read NaN once no policy covers it\n{text}");
    let (_, _, status) = s.send(Request::get("/api/v1/status").body(Body::empty()).unwrap()).await;
    assert!(!status["readiness"].as_array().unwrap().iter().any(|r| r["service"] == "ember"), "{status}");
}

/// A pull request's head on the origin (`refs/pull/<n>/head`, as GitHub keeps it): `files`
/// written on top of main in a clone, committed and pushed there.
fn pull_request(w: &World, number: u64, files: &[(String, String)]) -> String {
    let work = w.root().join(format!("pr-{number}"));
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .current_dir(&work)
            .args(["-c", "user.name=dev", "-c", "user.email=dev@example.com"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let cloned = std::process::Command::new("git").arg("clone").arg("-q").arg(&w.origin).arg(&work).status();
    assert!(cloned.unwrap().success());
    for (p, text) in files {
        let file = work.join(p);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text).unwrap();
    }
    git(&["add", "-A"]);
    git(&["commit", "-qm", &format!("pull request {number}")]);
    git(&["push", "-qf", "origin", &format!("HEAD:refs/pull/{number}/head")]);
    git(&["rev-parse", "HEAD"])
}

/// On the GitHub forge, the `rollbackd/gate` check run on a pull request carries the plan: what
/// rollbackd would do for each service/env it touches if it went bad after merge, within
/// GitHub's 65,535-character cap on a summary.
#[test]
fn the_gate_check_run_on_a_pull_request_carries_the_plan() {
    use crate::common::fake_github::FakeGithub;
    use crate::holds::pull_request_delivery;
    let w = World::new();
    let gh = FakeGithub::start(w.origin.clone());
    std::fs::write(w.root().join("gh-secrets"), "hook-secret\n").unwrap();
    w.write_config(
        &ConfigSpec::new()
            .github_app(&gh.url)
            .set("sources.github", json!({ "secrets_file": "gh-secrets", "workflows": ["deploy"] })),
    );
    let s = crate::serve::serve_app(&w, &gh, "srv");
    let runs = || gh.gh.lock().unwrap().check_runs_created.clone();

    let head =
        pull_request(&w, 11, &[(path("checkout", "prod"), manifest("checkout", "prod", &image("checkout", "1.6.0")))]);
    assert_eq!(gh.deliver("pull_request", "pr-11", &pull_request_delivery(11, "opened", &head)), 200);
    let run = runs().last().cloned().unwrap();
    assert_eq!((run["name"].as_str(), run["head_sha"].as_str()), (Some("rollbackd/gate"), Some(head.as_str())));
    assert_eq!(run["conclusion"], "success", "{run}");
    let summary = run["output"]["summary"].as_str().unwrap();
    assert!(summary.contains("If this change goes bad after merge"), "{summary}");
    assert!(summary.contains("**checkout/prod** (policy `test\\-policy`, direct)"), "{summary}");
    assert!(summary.contains(&format!("back to `{}` by revert", w.good.short())), "{summary}");
    assert!(summary.contains("apps/checkout/prod/deployment.yaml"), "{summary}");
    assert!(!summary.contains("cart/prod"), "only what the change touches: {summary}");

    // A change that touches hundreds of services: the summary stays within GitHub's cap and
    // says how many it left out.
    let many: Vec<(String, String)> = (0..400)
        .map(|i| {
            let service = format!("service-with-a-rather-long-name-{i:04}");
            (path(&service, "prod"), manifest(&service, "prod", &image(&service, "1.0.0")))
        })
        .collect();
    let head = pull_request(&w, 12, &many);
    let started = std::time::Instant::now();
    let status = gh.deliver("pull_request", "pr-12", &pull_request_delivery(12, "opened", &head));
    assert!(status == 200 || status == 202, "{status}");
    wait_for("the second check run", 60, || runs().len() == 2);
    eprintln!("readiness: a pull request touching 400 services was gated and planned in {:?}", started.elapsed());
    let run = runs().last().cloned().unwrap();
    assert_eq!(run["head_sha"], head.as_str());
    let summary = run["output"]["summary"].as_str().unwrap();
    assert!(summary.chars().count() <= 65_535, "{}", summary.chars().count());
    assert!(summary.contains("more service/env not shown (summary limit)"), "{}", &summary[summary.len() - 300..]);
    assert!(summary.contains("nothing to go back to"), "a new service has no earlier state");
    assert!(summary.contains("not planned: the change touches more than 50 service/env"), "{summary}");
    drop(s);
    gh.finish();
}

/// The writer works readiness out only while nothing waits: asked to yield, it keeps what it
/// had (nothing yet) and tries again at the next quiet moment.
#[test]
fn the_writer_stops_working_out_readiness_when_an_event_waits() {
    let w = World::new();
    let mut engine = w.engine();
    engine.refresh_readiness(&|| true);
    assert!(engine.last_readiness().is_empty());
    engine.refresh_readiness(&|| false);
    let names: Vec<String> = engine.last_readiness().iter().map(|r| format!("{}/{}", r.service, r.env)).collect();
    assert_eq!(names, ["cart/prod", "cart/staging", "checkout/prod", "checkout/staging"]);
}
