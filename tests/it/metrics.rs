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
        "rollbackd_verifications_total{result=\"not_recovered\"} 0",
        "rollbackd_escalations_total 0",
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
