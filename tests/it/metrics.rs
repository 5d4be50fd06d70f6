//! `/metrics` as Prometheus's own linter reads it: described series with units, the build info,
//! and counters present at zero before anything happened.

use crate::common::http::*;
use crate::common::*;
use axum::body::Body;
use axum::http::Request;
use std::io::Write as _;

#[tokio::test(flavor = "multi_thread")]
async fn metrics_pass_promtool_and_start_at_zero() {
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    let s = server(&w, ConfigSpec::new());
    s.wait_ready();
    // Histograms appear with their first observation: one rollback.
    let (_, _, b) = s.send(am(alert_body("m1", "checkout", "firing"))).await;
    assert_eq!(b["outcome"], "rolled_back", "{b}");
    let (_, _, b) = s.send(Request::get("/metrics").body(Body::empty()).unwrap()).await;
    let text = b.as_str().expect("text exposition").to_string();
    for expected in [
        "rollbackd_build_info{version=\"",
        "# HELP rollbackd_time_to_rollback_seconds",
        "rollbackd_time_to_rollback_seconds_bucket{from=\"received\",path=\"direct\",le=",
        // Present before any verification ended. The recorder is the process's, shared with the
        // other tests running beside this one, so the value is not asserted.
        "rollbackd_verifications_total{result=\"not_recovered\"} ",
        "rollbackd_escalations_total ",
        "rollbackd_queue_capacity ",
        "rollbackd_origin_reachable 1",
    ] {
        assert!(text.contains(expected), "{expected} missing from\n{text}");
    }
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is installed");
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn promtool(args: &[&str]) -> std::process::Output {
    std::process::Command::new("promtool").args(args).output().expect("promtool (Debian package prometheus)")
}

/// The alert rules and the Grafana dashboard in deploy/ parse as PromQL (promtool) and name only
/// metrics that rollbackd describes.
#[test]
fn the_deploy_rules_and_dashboard_use_real_metrics_and_valid_promql() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let rules = root.join("deploy/rollbackd-alerts.yml");
    let out = promtool(&["check", "rules", rules.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    let dashboard: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("deploy/grafana-dashboard.json")).unwrap()).unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap().to_string()))
        .collect();
    // Grafana's interval variable is not PromQL: check each expression as a recording rule.
    let recording: Vec<serde_json::Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| json!({ "record": format!("dashboard:expr{i}"), "expr": e.replace("$__rate_interval", "5m") }))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-rules.yml");
    std::fs::write(&file, json!({ "groups": [{ "name": "dashboard", "rules": recording }] }).to_string()).unwrap();
    let out = promtool(&["check", "rules", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

    // What rollbackd describes (a series only shows in /metrics once it has a value).
    let source = std::fs::read_to_string(root.join("src/metrics.rs")).unwrap();
    let described: Vec<&str> = regex::Regex::new(r#"describe_(?:counter|gauge|histogram)!\(\s*"(rollbackd_[a-z_]+)""#)
        .unwrap()
        .captures_iter(&source)
        .map(|c| c.get(1).unwrap().as_str())
        .collect();
    assert!(described.len() > 15, "{described:?}");
    // Every family rollbackd describes is on the dashboard: none is found only by reading code.
    let on_dashboard = exprs.join("\n");
    for family in &described {
        assert!(on_dashboard.contains(family), "{family} is on no panel of deploy/grafana-dashboard.json");
    }
    let text = format!("{}\n{}", std::fs::read_to_string(&rules).unwrap(), exprs.join("\n"));
    let names = regex::Regex::new(r"rollbackd_[a-z_]+").unwrap();
    for name in names.find_iter(&text).map(|m| m.as_str()) {
        let base = name.trim_end_matches("_bucket");
        assert!(described.contains(&base), "{name} is not a metric rollbackd describes");
    }
}

/// A proposal an alert made waits for review: its time to propose is `path="proposal"`, never
/// `auto_merge`, which only a merge that needed no person is.
#[tokio::test(flavor = "multi_thread")]
async fn a_plain_proposal_is_not_counted_as_an_automatic_merge() {
    let w = World::with(&[PolicySpec::new("test-policy").mode(Mode::PullRequest)]);
    w.deploy("checkout", "prod", "1.5.0", 10);
    let s = server(&w, ConfigSpec::new());
    s.wait_ready();
    let (_, _, b) = s.send(am(alert_body("p1", "checkout", "firing"))).await;
    assert_eq!(b["outcome"], "proposed", "{b}");
    let (_, _, b) = s.send(Request::get("/metrics").body(Body::empty()).unwrap()).await;
    let text = b.as_str().unwrap();
    assert!(text.contains("rollbackd_time_to_propose_seconds_bucket{from=\"received\",path=\"proposal\""), "{text}");
}

/// The value of the one series of `family` whose labels include every one of `labels`, in
/// `/metrics` text; `None` when there is no such series.
fn series_value(text: &str, family: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) || l.starts_with(&format!("{family} ")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The real `rollbackd serve`, scraped as Prometheus would: the series an engine records as it
/// starts (its channels) and the events' fixed label sets are there before anything happened,
/// which an in-process recorder shared by every test cannot show.
#[test]
fn a_live_server_shows_its_series_at_zero_before_any_event() {
    use crate::serve::*;
    let w = World::new();
    w.write_config(&ConfigSpec::new().set("notify.channels.oncall", json!({"kind": "file", "path": "notices.jsonl"})));
    with_alertmanager_source(&w, "");
    let s = serve(&w, "data");
    let (_, text) = get(&format!("{}/metrics", s.url)).unwrap();
    for (family, labels) in [
        ("rollbackd_notifications_total", &["channel=\"oncall\"", "result=\"sent\""][..]),
        ("rollbackd_notifications_total", &["channel=\"oncall\"", "result=\"failed\""]),
        ("rollbackd_events_total", &["source=\"alertmanager\"", "outcome=\"rolled_back\""]),
        ("rollbackd_events_total", &["source=\"github\"", "outcome=\"error\""]),
    ] {
        assert_eq!(series_value(&text, family, labels), Some(0.0), "{family} {labels:?} in\n{text}");
    }
}

/// A rollback that cannot be pushed is one failed attempt of its target, however often the
/// sender retries it: `rollbackd_rollbacks_total{outcome="failed"}`, present at zero before (so
/// the first failure is an increase for `RollbackdRollbacksFailing`).
#[test]
fn a_failed_rollback_is_counted_once_as_a_failed_attempt_of_its_target() {
    use crate::serve::*;
    let w = World::with(&[PolicySpec::new("checkout-prod").target("checkout", "prod", &["apps/checkout/prod/**"])]);
    w.deploy("checkout", "prod", "1.5.0", 10);
    // Readiness, which puts the attempts' series at zero, is worked out at the idle refresh.
    w.write_config(&ConfigSpec::new().set("server.refresh_interval", "1s"));
    with_alertmanager_source(&w, "");
    let s = serve(&w, "data");
    let failed = ["service=\"checkout\"", "env=\"prod\"", "mode=\"direct\"", "outcome=\"failed\""];
    let scrape = || get(&format!("{}/metrics", s.url)).unwrap().1;
    wait_for("the attempts' series at zero", 30, || {
        series_value(&scrape(), "rollbackd_rollbacks_total", &failed) == Some(0.0)
    });
    // The origin's branch is locked: fetches work, the push cannot update it.
    let lock = w.root().join("origin.git/refs/heads/main.lock");
    std::fs::write(&lock, "").unwrap();
    for _ in 0..3 {
        let (status, body) = post_alert(&s.url, &alert_for("checkout", "fail1")).unwrap();
        assert_ne!(status, 200, "{body}");
    }
    std::fs::remove_file(&lock).unwrap();
    assert_eq!(rollback_commits(&w), 0);
    let text = scrape();
    assert_eq!(series_value(&text, "rollbackd_rollbacks_total", &failed), Some(1.0), "{text}");
}

/// A proposal approved from the CLI beside the running server is merged by the CLI's process,
/// which nobody scrapes: the server counts it when its fetch shows the merge (the signed tag's
/// `Approved-By`/`Merged-By`), as `path="approval"`, once.
#[test]
fn a_cli_approval_is_counted_by_the_server_as_path_approval() {
    use crate::serve::*;
    let w = World::with(&[PolicySpec::new("test-policy").mode(Mode::PullRequest).set("notify", ["oncall"])]);
    w.deploy("checkout", "prod", "1.5.0", 10);
    w.write_config(
        &ConfigSpec::new()
            .set("server.refresh_interval", "1s")
            .set("notify.channels.oncall", json!({"kind": "file", "path": "notices.jsonl"})),
    );
    with_alertmanager_source(&w, "");
    let s = serve(&w, "data");
    let (status, body) = post_alert(&s.url, &alert_for("checkout", "approve1")).unwrap();
    assert_eq!((status, body["outcome"].as_str()), (200, Some("proposed")), "{body}");
    let id = body["rollback_id"].as_str().unwrap().to_string();
    let approval = ["from=\"alert_start\"", "path=\"approval\""];
    let scrape = || get(&format!("{}/metrics", s.url)).unwrap().1;
    assert_eq!(series_value(&scrape(), "rollbackd_time_to_rollback_seconds_count", &approval), None);

    let out = w.run_cli(&["approve", &id, "--actor", "reviewer"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("merged"), "{out:?}");
    // Its notice carries the time to rollback: from the alert's start to this merge.
    let notices = w.root().join("notices.jsonl");
    let merged =
        || -> Option<serde_json::Value> {
            std::fs::read_to_string(&notices).ok()?.lines().filter_map(|l| serde_json::from_str(l).ok()).find(
                |n: &serde_json::Value| n["event"] == "rolled_back" && n["rollback_id"].as_str() == Some(id.as_str()),
            )
        };
    wait_for("the merge's notice", 30, || merged().is_some());
    let notice = merged().unwrap();
    let alert_started: jiff::Timestamp = "2026-11-21T11:55:00Z".parse().unwrap();
    let at: jiff::Timestamp = notice["at"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        notice["time_to_rollback_seconds"].as_i64(),
        Some(at.duration_since(alert_started).as_secs()),
        "{notice}"
    );
    wait_for("the approval counted by the server", 30, || {
        series_value(&scrape(), "rollbackd_time_to_rollback_seconds_count", &approval) == Some(1.0)
    });
    // Later fetches do not count it again: two more idle refreshes (the heartbeat moves).
    let beat = || series_value(&scrape(), "rollbackd_writer_heartbeat_timestamp_seconds", &[]).unwrap_or(0.0);
    let counted_at = beat();
    wait_for("two more refreshes", 30, || beat() >= counted_at + 2.0);
    assert_eq!(series_value(&scrape(), "rollbackd_time_to_rollback_seconds_count", &approval), Some(1.0));
}

/// A rollback whose policy has no `verify` is verified by its alert's resolve: the note, the
/// notice and `rollbackd_time_to_recovery_seconds` all say the same time to recovery.
#[test]
fn a_resolve_without_verify_records_the_time_to_recovery() {
    use crate::serve::*;
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    with_alertmanager_source(&w, "");
    let s = serve(&w, "data");
    let scrape = || get(&format!("{}/metrics", s.url)).unwrap().1;
    let (status, body) = post_alert(&s.url, &alert_for("checkout", "recover1")).unwrap();
    assert_eq!((status, body["outcome"].as_str()), (200, Some("rolled_back")), "{body}");
    assert_eq!(series_value(&scrape(), "rollbackd_time_to_recovery_seconds_count", &[]), None);
    let resolved_at = jiff::Timestamp::now();
    let resolved = alert_for("checkout", "recover1")
        .replace(r#""status":"firing","alerts""#, r#""status":"resolved","alerts""#)
        .replace(r#""status":"firing","labels""#, &format!(r#""status":"resolved","endsAt":"{resolved_at}","labels""#));
    let (status, body) = post_alert(&s.url, &resolved).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.to_string().contains("verified rollback"), "{body}");
    assert_eq!(series_value(&scrape(), "rollbackd_time_to_recovery_seconds_count", &[]), Some(1.0));
}
