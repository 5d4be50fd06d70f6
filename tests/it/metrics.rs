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
