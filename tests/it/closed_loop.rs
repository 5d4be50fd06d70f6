//! The whole loop with real components: an exporter whose error ratio the test controls, the
//! real Prometheus scraping it and evaluating an alert rule, the real Alertmanager routing the
//! alert to the real `rollbackd serve`, which rolls back, verifies with the alert and a
//! Prometheus query, and tells a Slack-shaped receiver. Recovery gives one `verified` note and a
//! "verified" message; an error ratio that stays bad gives `not_recovered`, a step back, and an
//! escalation.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::common::procs::{self, Killed};
use crate::common::receiver::Receiver;
use crate::common::*;
use crate::serve::{Serve, TOKEN, get, rollback_commits, serve, with_alertmanager_source};

/// Serves `checkout_error_ratio{service="checkout"}`: 0.5 while bad, 0 once healthy.
struct Exporter {
    url: String,
    healthy: Arc<AtomicBool>,
}

impl Exporter {
    fn start() -> Exporter {
        let healthy = Arc::new(AtomicBool::new(false));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = listener.local_addr().unwrap().to_string();
        let h = healthy.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let app = axum::Router::new().route(
                    "/metrics",
                    axum::routing::get(move || {
                        let ratio = if h.load(Ordering::SeqCst) { "0" } else { "0.5" };
                        async move {
                            format!(
                                "# HELP checkout_error_ratio 5xx share of requests.\n# TYPE checkout_error_ratio gauge\ncheckout_error_ratio{{service=\"checkout\"}} {ratio}\n"
                            )
                        }
                    }),
                );
                axum::serve(tokio::net::TcpListener::from_std(listener).unwrap(), app).await.unwrap();
            });
        });
        Exporter { url, healthy }
    }

    fn recover(&self) {
        self.healthy.store(true, Ordering::SeqCst);
    }
}

struct Loop {
    w: World,
    exporter: Exporter,
    slack: Receiver,
    _rollbackd: Serve,
    _alertmanager: Killed,
    _prometheus: Killed,
}

/// Prometheus → Alertmanager → rollbackd, verifying with `verify`, telling `slack`.
fn start(verify: serde_json::Value) -> Option<Loop> {
    start_with(verify, None)
}

/// `start`, the policy rolling back in `phases` (the first of a canary overlay that the bad
/// deploy changed too).
fn start_with(verify: serde_json::Value, phases: Option<serde_json::Value>) -> Option<Loop> {
    start_refreshing(verify, phases, "1s")
}

/// `start_with`, the server's idle refresh every `refresh`.
fn start_refreshing(verify: serde_json::Value, phases: Option<serde_json::Value>, refresh: &str) -> Option<Loop> {
    procs::installed(&["prometheus"], "prometheus")?;
    procs::installed(&["prometheus-alertmanager", "alertmanager"], "prometheus-alertmanager")?;
    let exporter = Exporter::start();
    let slack = Receiver::start();
    let (prom_port, am_port) = (free_port(), free_port());

    let mut policy = PolicySpec::new("prod").source("alertmanager").set("notify", ["sre"]).set("verify", verify);
    if let Some(phases) = &phases {
        policy = policy.set("target.phases", phases.clone());
    }
    let w = World::with(&[policy]);
    if phases.is_some() {
        let (good, bad) = (image("checkout", "1.4.2"), image("checkout", "1.5.0"));
        w.commit_files("Add a canary", &[(CANARY, Some(&manifest("checkout", "prod", &good)))], 140);
        let bad = manifest("checkout", "prod", &bad);
        w.commit_files("Deploy checkout 1.5.0", &[(&path("checkout", "prod"), Some(&bad)), (CANARY, Some(&bad))], 10);
    } else {
        w.deploy("checkout", "prod", "1.5.0", 10);
    }
    w.write_config(
        &ConfigSpec::new()
            .set("server.refresh_interval", refresh)
            .set("prometheus.url", format!("http://127.0.0.1:{prom_port}"))
            .set("notify.channels.sre", json!({ "kind": "slack_webhook", "url": format!("{}/slack", slack.url) })),
    );
    with_alertmanager_source(&w, "");
    let rollbackd = serve(&w, "data");

    let alertmanager = procs::alertmanager(&w.root().join("alertmanager"), am_port, &rollbackd.url, TOKEN, "1h")?;
    let rules = "groups:\n  - name: checkout\n    rules:\n      - alert: HighErrorRate\n        expr: checkout_error_ratio > 0.05\n        labels: { env: prod, severity: page }\n        annotations: { summary: checkout 5xx above 5% }\n";
    let config = format!(
        "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\nrule_files: [rules.yml]\n\
         alerting:\n  alertmanagers:\n    - static_configs: [{{ targets: ['127.0.0.1:{am_port}'] }}]\n\
         scrape_configs:\n  - job_name: app\n    static_configs: [{{ targets: ['{}'] }}]\n",
        exporter.url
    );
    let prometheus = procs::prometheus(&w.root().join("prometheus"), prom_port, &config, Some(rules))?;
    Some(Loop { w, exporter, slack, _rollbackd: rollbackd, _alertmanager: alertmanager, _prometheus: prometheus })
}

fn note(w: &World, rev: &str) -> Option<String> {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(&w.origin)
        .args(["notes", "--ref=rollbackd", "show", rev])
        .output()
        .unwrap();
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).to_string())
}

fn next_text(slack: &Receiver) -> String {
    slack.next().body["text"].as_str().unwrap_or_default().to_string()
}

#[test]
fn recovery_after_the_rollback_is_verified_once_and_told() {
    let Some(l) = start(json!({
        "within": "2m",
        "query": "checkout_error_ratio{service=\"{{ service }}\"} < 0.05",
    })) else {
        return;
    };
    wait_for("the rollback commit on the origin", 90, || rollback_commits(&l.w) == 1);
    let commit = l.w.head();
    assert!(next_text(&l.slack).starts_with("*Rolled back checkout/prod*"));
    // The rollback is deployed: the errors stop, the alert resolves, the query holds.
    l.exporter.recover();
    wait_for("the verification note", 90, || note(&l.w, &commit).is_some());
    let text = note(&l.w, &commit).unwrap();
    assert!(text.contains("Verification: verified"), "{text}");
    assert!(next_text(&l.slack).starts_with("*Verified the rollback of checkout/prod*"));
    assert_eq!(rollback_commits(&l.w), 1);
    let (_, metrics) = get(&format!("{}/metrics", l._rollbackd.url)).unwrap();
    assert!(metrics.contains("rollbackd_verifications_total{result=\"verified\"} 1"), "{metrics}");
}

#[test]
fn errors_that_stay_are_not_recovered_step_back_then_escalate() {
    let Some(l) = start(json!({
        "within": "4s",
        "query": "checkout_error_ratio{service=\"{{ service }}\"} < 0.05",
        "on_failure": "step_back",
        "max_steps": 1,
    })) else {
        return;
    };
    wait_for("the rollback commit on the origin", 90, || rollback_commits(&l.w) == 1);
    let first = l.w.head();
    assert!(next_text(&l.slack).starts_with("*Rolled back checkout/prod*"));
    wait_for("the step back", 90, || rollback_commits(&l.w) == 2);
    assert!(note(&l.w, &first).unwrap().contains("Verification: not_recovered"));
    let trigger = l.w.trailers("main", "Rollback-Trigger");
    assert!(trigger[0].starts_with("rollbackd:step-back/rb-"), "{trigger:?}");
    assert!(l.w.show("main", &path("checkout", "prod")).contains("checkout:1.4.0"));
    let step = l.w.head();
    wait_for("the step's verdict", 90, || note(&l.w, &step).is_some());
    assert!(note(&l.w, &step).unwrap().contains("Verification: not_recovered"));
    let told: Vec<String> = (0..4).map(|_| next_text(&l.slack)).collect();
    let headlines: Vec<&str> = told.iter().map(|t| t.lines().next().unwrap_or_default()).collect();
    assert!(headlines[0].starts_with("*Not recovered after the rollback of checkout/prod*"), "{told:#?}");
    assert!(headlines[1].starts_with("*Stepped further back on checkout/prod*"), "{told:#?}");
    assert!(headlines[2].starts_with("*Not recovered"), "{told:#?}");
    assert!(headlines[3].starts_with("*Escalated"), "{told:#?}");
    assert_eq!(rollback_commits(&l.w), 2, "max_steps: 1");
}

#[test]
fn check_tries_each_verify_query_against_prometheus() {
    let port = free_port();
    let w = World::with(&[
        PolicySpec::new("prod").set("verify", json!({ "within": "5m", "query": "sum(rate(up[1m]) == 1" }))
    ]);
    w.write_config(&ConfigSpec::new().set("prometheus.url", format!("http://127.0.0.1:{port}")));
    let Some(_p) = procs::prometheus(&w.root().join("prometheus"), port, "global: { scrape_interval: 1m }\n", None)
    else {
        return;
    };
    wait_for("prometheus ready", 60, || {
        get(&format!("http://127.0.0.1:{port}/-/ready")).is_ok_and(|(st, _)| st == 200)
    });
    let out = w.run_cli(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("verify.query") && text.contains("Prometheus answered 400"), "{text}");
    w.set_policies(&[
        PolicySpec::new("prod").set("verify", json!({ "within": "5m", "query": "up{job=\"{{ service }}\"} == 1" }))
    ]);
    let out = w.run_cli(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn a_phased_rollback_goes_on_when_the_canary_is_healthy_and_is_verified_at_the_end() {
    let Some(l) = start_with(
        json!({ "within": "2m", "query": "checkout_error_ratio{service=\"{{ service }}\"} < 0.05" }),
        Some(json!([{ "paths": ["apps/{{ labels.service }}/{{ labels.env }}/canary/**"], "soak": "2s" }, {}])),
    ) else {
        return;
    };
    wait_for("phase 1 on the origin", 90, || rollback_commits(&l.w) == 1);
    assert_eq!(l.w.trailers("main", "Rollback-Phase"), ["1/2"]);
    assert!(l.w.show("main", CANARY).contains("checkout:1.4.2"));
    assert!(l.w.show("main", &path("checkout", "prod")).contains("checkout:1.5.0"), "the rest waits for the canary");
    let phase_one = l.w.head();
    assert!(next_text(&l.slack).starts_with("*Rolled back checkout/prod*"));
    // The canary on the old version is healthy: the errors stop, the query holds after the soak.
    l.exporter.recover();
    wait_for("phase 2 on the origin", 90, || rollback_commits(&l.w) == 2);
    assert_eq!(l.w.trailers("main", "Rollback-Phase"), ["2/2"]);
    assert_eq!(l.w.trailers("main", "Rollback-Id"), l.w.trailers(&phase_one, "Rollback-Id"));
    assert!(l.w.show("main", &path("checkout", "prod")).contains("checkout:1.4.2"));
    let last = l.w.head();
    // Verified from the last phase: one verdict, on it.
    wait_for("the verification note", 90, || note(&l.w, &last).is_some());
    assert!(note(&l.w, &last).unwrap().contains("Verification: verified"));
    assert!(note(&l.w, &phase_one).is_none(), "an earlier phase is not verified on its own");
    let (_, metrics) = get(&format!("{}/metrics", l._rollbackd.url)).unwrap();
    assert!(metrics.contains("rollbackd_phases_total{result=\"pushed\"} 1"), "{metrics}");
}

/// A phase's soak end is a deadline: with the idle refresh five minutes apart, the next phase
/// is written when the canary's soak ends and the query holds, not at the next refresh.
#[test]
fn the_next_phase_is_written_when_its_soak_ends_not_at_the_next_refresh() {
    let Some(l) = start_refreshing(
        json!({ "within": "2m", "query": "checkout_error_ratio{service=\"{{ service }}\"} < 0.05" }),
        Some(json!([{ "paths": ["apps/{{ labels.service }}/{{ labels.env }}/canary/**"], "soak": "5s" }, {}])),
        "300s",
    ) else {
        return;
    };
    wait_for("phase 1 on the origin", 90, || rollback_commits(&l.w) == 1);
    assert_eq!(l.w.trailers("main", "Rollback-Phase"), ["1/2"]);
    l.exporter.recover();
    // The refresh is 300 s away. The step is the next phase when Prometheus (scraping every
    // second) has seen the recovery by the soak's end, or the rest proposed when it has not:
    // either way it comes when the soak ends.
    let proposed = || !l.w.git(&["for-each-ref", "--format=%(refname)", "refs/heads/rollback/"]).trim().is_empty();
    wait_for("the step after phase 1's soak", 20, || rollback_commits(&l.w) >= 2 || proposed());
    if !proposed() {
        assert_eq!(l.w.trailers("main", "Rollback-Phase"), ["2/2"]);
        assert_eq!(rollback_commits(&l.w), 2);
    }
}
