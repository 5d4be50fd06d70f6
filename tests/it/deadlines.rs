//! Timers are deadlines: the real server, with an idle refresh five minutes apart, gives a
//! verification's verdict when its `stable_for` or `within` ends, not at the next refresh. (The
//! phase's soak end, which needs Prometheus, is in `closed_loop`.) The tests wait on the
//! outcome on the origin and give up long before the refresh would have come.

use std::process::Command;

use crate::common::*;
use crate::serve::{Serve, alert_for, post_alert, rollback_commits, serve, with_alertmanager_source};

/// The server on a world whose policy verifies with `verify`, refreshing every five minutes
/// (and fetching before an event only when the mirror is older than that).
fn start(verify: serde_json::Value) -> (World, Serve) {
    let w = World::with(&[PolicySpec::new("prod").source("alertmanager").set("verify", verify)]);
    w.deploy("checkout", "prod", "1.5.0", 10);
    w.write_config(&ConfigSpec::new().set("server.refresh_interval", "300s"));
    with_alertmanager_source(&w, "");
    let s = serve(&w, "data");
    (w, s)
}

fn verdict(w: &World, commit: &str) -> Option<String> {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(&w.origin)
        .args(["notes", "--ref=rollbackd", "show", commit])
        .output()
        .unwrap();
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).to_string())
}

fn roll_back(w: &World, s: &Serve) -> String {
    let (status, body) = post_alert(&s.url, &alert_for("checkout", "dl1")).unwrap();
    assert_eq!((status, body["outcome"].as_str()), (200, Some("rolled_back")), "{body}");
    assert_eq!(rollback_commits(w), 1);
    w.head()
}

#[test]
fn a_verdict_is_given_when_stable_for_ends_not_at_the_next_refresh() {
    let (w, s) = start(json!({ "within": "10m", "stable_for": "3s" }));
    let commit = roll_back(&w, &s);
    let resolved = format!(
        r#"{{"version":"4","status":"resolved","alerts":[{{"status":"resolved","labels":{{"alertname":"HighErrorRate","service":"checkout","env":"prod","severity":"page"}},
        "annotations":{{"summary":"5xx"}},"startsAt":"2026-11-21T11:55:00Z","endsAt":"{}","fingerprint":"dl1"}}]}}"#,
        jiff::Timestamp::now()
    );
    let (status, body) = post_alert(&s.url, &resolved).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(verdict(&w, &commit).is_none(), "not before it stayed resolved for 3s");
    // The refresh is 300 s away: only the deadline can bring the verdict this soon.
    wait_for("the verdict 3 s after the resolve", 20, || verdict(&w, &commit).is_some());
    let text = verdict(&w, &commit).unwrap();
    assert!(text.contains("Verification: verified"), "{text}");
}

#[test]
fn a_rollback_still_firing_at_its_within_is_judged_then_not_at_the_next_refresh() {
    let (w, s) = start(json!({ "within": "3s" }));
    let commit = roll_back(&w, &s);
    wait_for("the verdict when `within` ends", 20, || verdict(&w, &commit).is_some());
    let text = verdict(&w, &commit).unwrap();
    assert!(text.contains("Verification: not_recovered") && text.contains("still firing"), "{text}");
}
