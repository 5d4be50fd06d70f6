//! After the push: a rollback is verified (its alert resolves after the deploy time and stays
//! resolved), or it is not and rollbackd escalates or steps further back. The verdict is a note
//! on the origin, written once; progress survives a restart.

use crate::common::receiver::Receiver;
use crate::common::*;
use jiff::SignedDuration;
use rollbackd::{Engine, Event, Options, Outcome};

const WATCH_NOTES: &str = "refs/notes/rollbackd-watch";

fn world(r: &Receiver, verify: serde_json::Value) -> World {
    let w = World::with(&[PolicySpec::new("prod").set("notify", ["oncall"]).set("verify", verify)]);
    w.write_config(
        &ConfigSpec::new()
            .set("notify.channels.oncall", json!({ "kind": "webhook", "url": format!("{}/hook", r.url) }))
            .set("git.fetch_freshness", "0s"),
    );
    w
}

fn roll_back(engine: &mut Engine, alert: &Event) -> rollbackd::Rollback {
    match engine.handle(alert, &Options::default()).unwrap().outcome {
        Outcome::RolledBack { rollback } => rollback,
        other => panic!("{other:?}"),
    }
}

fn resolved(alert: &Event, at: jiff::Timestamp) -> rollbackd::parsers::Resolved {
    World::resolved(alert, at)
}

/// The verification note on `commit` in the origin, read with git.
fn note(w: &World, commit: &str) -> String {
    w.git(&["notes", "--ref=rollbackd", "show", commit])
}

fn events(r: &Receiver, n: usize) -> Vec<String> {
    (0..n).map(|_| r.next().body["event"].as_str().unwrap().to_string()).collect()
}

#[test]
fn a_resolve_after_the_deploy_time_verifies_once() {
    let r = Receiver::start();
    let w = world(&r, json!({ "within": "10m", "deploy_time": "2m" }));
    w.deploy("checkout", "prod", "1.5.0", 10);
    let mut engine = w.engine();
    let alert = w.alert("checkout", "prod", "fp1");
    let rb = roll_back(&mut engine, &alert);
    assert_eq!(events(&r, 1), ["rolled_back"]);

    // Resolved a minute after the push: before the rollback could be deployed, so not its doing.
    w.clock.advance(SignedDuration::from_mins(1));
    let said = engine.record_resolution(&resolved(&alert, w.now())).unwrap();
    assert!(said.contains("before the deploy time (2m) was over"), "{said}");
    assert!(w.git(&["notes", "--ref=rollbackd", "list"]).is_empty(), "no verdict yet");
    // It fires again and resolves after the deploy time: verified.
    let mut refire = w.alert("checkout", "prod", "fp1");
    refire.dedupe_key = format!("fp1@{}", w.now());
    engine.handle(&refire, &Options::default()).unwrap();
    w.clock.advance(SignedDuration::from_mins(2));
    engine.record_resolution(&resolved(&refire, w.now())).unwrap();
    let text = note(&w, &rb.commit.0);
    assert!(text.contains("Verification: verified") && text.contains("Time-To-Recovery: 3m"), "{text}");
    assert!(text.contains("Fired-Again: 1"), "{text}");
    let verified = r.next().body;
    assert_eq!(
        (verified["event"].as_str(), verified["recovered_after_seconds"].as_i64()),
        (Some("verified"), Some(180))
    );

    // Later ticks find nothing more to say.
    w.clock.advance(SignedDuration::from_mins(20));
    assert!(engine.verify_due().unwrap().is_empty());
}

#[test]
fn still_firing_at_the_deadline_is_not_recovered_and_escalates_to_the_pager_alone() {
    let (r, pager) = (Receiver::start(), Receiver::start());
    let w = World::with(&[PolicySpec::new("prod")
        .set("notify", json!(["oncall", { "channel": "pager", "events": ["escalated"] }]))
        .set("verify", json!({ "within": "10m", "on_failure": "escalate" }))]);
    w.write_config(
        &ConfigSpec::new()
            .set("notify.channels.oncall", json!({ "kind": "webhook", "url": format!("{}/hook", r.url) }))
            .set("notify.channels.pager", json!({ "kind": "webhook", "url": format!("{}/page", pager.url) }))
            .set("git.fetch_freshness", "0s"),
    );
    w.deploy("checkout", "prod", "1.5.0", 10);
    let mut engine = w.engine();
    let rb = roll_back(&mut engine, &w.alert("checkout", "prod", "fp1"));
    r.next();
    w.clock.advance(SignedDuration::from_mins(9));
    assert!(engine.verify_due().unwrap().is_empty(), "still within the window");
    w.clock.advance(SignedDuration::from_mins(1));
    let said = engine.verify_due().unwrap();
    assert!(said[0].contains("escalated"), "{said:?}");
    let text = note(&w, &rb.commit.0);
    assert!(text.contains("Verification: not_recovered") && text.contains("still firing"), "{text}");
    let (a, b) = (r.next().body, r.next().body);
    assert_eq!((a["event"].as_str(), b["event"].as_str()), (Some("not_recovered"), Some("escalated")));
    assert_eq!(b["known_good"], w.good.0, "the page says where it went back to: {b}");
    // The pager got the escalation and nothing before it.
    let paged = pager.next().body;
    assert_eq!(paged["event"], "escalated", "{paged}");
    assert!(paged["reason"].as_str().unwrap().contains("a person must act"), "{paged}");
}

#[test]
fn step_back_rolls_back_the_change_before_and_verifies_that_in_turn() {
    let r = Receiver::start();
    let w = world(&r, json!({ "within": "10m", "on_failure": "step_back", "max_steps": 1 }));
    w.deploy("checkout", "prod", "1.5.0", 10);
    let mut engine = w.engine();
    let alert = w.alert("checkout", "prod", "fp1");
    let first = roll_back(&mut engine, &alert);
    assert!(w.show("main", &path("checkout", "prod")).contains("checkout:1.4.2"));
    r.next();

    w.clock.advance(SignedDuration::from_mins(10));
    let said = engine.verify_due().unwrap();
    assert!(said[0].contains("stepped back"), "{said:?}");
    // The change before known-good (1.4.0 → 1.4.2) is undone too, in a commit of its own.
    assert!(w.show("main", &path("checkout", "prod")).contains("checkout:1.4.0"));
    let trigger = format!("rollbackd:step-back/{}/1", first.id);
    assert_eq!(w.trailers("main", "Rollback-Trigger"), [trigger.as_str()]);
    assert_eq!(w.trailers("main", "Rollback-Of"), [w.good.0.as_str()]);
    assert!(note(&w, &first.commit.0).contains("Verification: not_recovered"));
    assert_eq!(events(&r, 2), ["not_recovered", "stepped_back"]);

    // The alert resolves now: the step is what verified.
    let step = w.head();
    w.clock.advance(SignedDuration::from_mins(1));
    engine.record_resolution(&resolved(&alert, w.now())).unwrap();
    assert!(note(&w, &step).contains("Verification: verified"), "{}", note(&w, &step));
    assert_eq!(events(&r, 1), ["verified"]);
}

#[test]
fn when_the_steps_run_out_a_person_is_called() {
    let r = Receiver::start();
    let w = world(&r, json!({ "within": "10m", "on_failure": "step_back", "max_steps": 1 }));
    w.deploy("checkout", "prod", "1.5.0", 10);
    let mut engine = w.engine();
    roll_back(&mut engine, &w.alert("checkout", "prod", "fp1"));
    w.clock.advance(SignedDuration::from_mins(10));
    engine.verify_due().unwrap();
    w.clock.advance(SignedDuration::from_mins(10));
    let said = engine.verify_due().unwrap();
    assert!(said[0].contains("escalated") && said[0].contains("max_steps"), "{said:?}");
    assert_eq!(events(&r, 5), ["rolled_back", "not_recovered", "stepped_back", "not_recovered", "escalated"]);
    assert_eq!(w.count_commits(), 5, "initial, 1.4.2, 1.5.0, the rollback and one step: nothing more");
}

#[test]
fn a_restart_and_a_second_replica_carry_on_from_git_and_say_it_once() {
    let r = Receiver::start();
    let w = world(&r, json!({ "within": "10m", "stable_for": "5m" }));
    w.deploy("checkout", "prod", "1.5.0", 10);
    let alert = w.alert("checkout", "prod", "fp1");
    let rb = {
        let mut engine = w.engine();
        let rb = roll_back(&mut engine, &alert);
        w.clock.advance(SignedDuration::from_mins(1));
        engine.record_resolution(&resolved(&alert, w.now())).unwrap();
        rb
        // The process stops here: what it knew is only in git.
    };
    assert!(w.git(&["notes", &format!("--ref={WATCH_NOTES}"), "show", &rb.commit.0]).contains("resolved_since"));
    r.next();

    w.clock.advance(SignedDuration::from_mins(5));
    let (mut a, mut b) = (w.replica("replica-a"), w.replica("replica-b"));
    let said_a = a.verify_due().unwrap();
    let said_b = b.verify_due().unwrap();
    assert_eq!(said_a.len() + said_b.len(), 1, "{said_a:?} {said_b:?}");
    assert!(note(&w, &rb.commit.0).contains("Verification: verified"));
    let msg = r.next().body;
    assert_eq!(msg["event"], "verified", "{msg}");
    assert_eq!(msg["recovered_after_seconds"], 60, "resolved 1m after the push, then stable for 5m: {msg}");
}

#[test]
fn a_policy_routing_to_an_unknown_channel_or_querying_without_prometheus_is_refused() {
    let w = World::with(&[PolicySpec::new("prod").set("notify", ["nowhere"])]);
    let err = w.run_cli(&["check"]);
    assert_eq!(err.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&err.stdout).contains("`nowhere`, which is not in notify.channels"), "{err:?}");
    w.set_policies(&[PolicySpec::new("prod").set("verify", json!({ "within": "5m", "query": "up == 1" }))]);
    let err = w.run_cli(&["check"]);
    assert!(String::from_utf8_lossy(&err.stdout).contains("verify.query needs `prometheus:"), "{err:?}");
    // Settings that can never mean anything.
    w.set_policies(&[
        PolicySpec::new("slow").set("verify", json!({ "within": "5m", "deploy_time": "4m", "stable_for": "2m" })),
        PolicySpec::new("soak").set("action.min_healthy", "10m"),
    ]);
    let out = w.run_cli(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("is longer than within 5m: nothing could ever verify"), "{text}");
    assert!(text.contains("min_healthy only means something with mode: known_good"), "{text}");
}

fn soaking_world() -> World {
    let known_good = PolicySpec::new("deployed")
        .source("github")
        .matchers(&["event=\"deployment_status\""])
        .target(
            "{{ labels.payload_service }}",
            "{{ labels.environment }}",
            &["apps/{{ labels.payload_service }}/{{ labels.environment }}/**"],
        )
        .set("action", json!({ "mode": Mode::KnownGood, "min_healthy": "10m" }));
    let w = World::with(&[known_good, PolicySpec::new("alerts").source("alertmanager")]);
    w.write_config(&ConfigSpec::new().set("git.fetch_freshness", "0s"));
    w
}

fn known_good_tags(w: &World) -> Vec<String> {
    w.git(&["tag", "-l", "known-good/*"]).lines().map(str::to_string).collect()
}

#[test]
fn a_deployment_is_known_good_only_after_it_soaked_without_an_alert() {
    let w = soaking_world();
    let head = w.deploy("checkout", "prod", "1.5.0", 10);
    let mut engine = w.engine();
    let said = engine.mark_known_good(&w.deployment_succeeded(&head.0)).unwrap();
    assert!(said.contains("is a candidate"), "{said}");
    assert!(known_good_tags(&w).is_empty(), "not yet");
    w.clock.advance(SignedDuration::from_mins(9));
    engine.verify_due().unwrap();
    assert!(known_good_tags(&w).is_empty(), "not yet");
    w.clock.advance(SignedDuration::from_mins(1));
    // A restarted rollbackd finishes the soak from git.
    drop(engine);
    w.engine().verify_due().unwrap();
    let tags = known_good_tags(&w);
    assert_eq!(tags.len(), 1, "{tags:?}");
    assert_eq!(w.git(&["rev-parse", &format!("{}^{{commit}}", tags[0])]), head.0);
}

#[test]
fn an_alert_during_the_soak_rejects_the_candidate_and_the_rollback_goes_past_it() {
    let w = soaking_world();
    let head = w.deploy("checkout", "prod", "1.5.0", 10);
    let mut engine = w.engine();
    engine.mark_known_good(&w.deployment_succeeded(&head.0)).unwrap();
    w.clock.advance(SignedDuration::from_mins(2));
    let report = engine.handle(&w.alert("checkout", "prod", "fp1"), &Options::default()).unwrap();
    // Tagged at once, the deployment would have been known-good and this a no-op.
    assert!(matches!(report.outcome, Outcome::RolledBack { .. }), "{:?}", report.outcome);
    assert!(w.show("main", &path("checkout", "prod")).contains("checkout:1.4.2"));
    let note = w.git(&["notes", "--ref=rollbackd-candidates", "show", &head.0]);
    assert!(note.contains("\"state\":\"rejected\"") && note.contains("fired during the soak"), "{note}");
    w.clock.advance(SignedDuration::from_mins(10));
    engine.verify_due().unwrap();
    assert!(known_good_tags(&w).is_empty(), "a rejected candidate is never tagged");
}

/// Found by an attacker's probe: an alert that joined a verification must be able to resolve it
/// (its resolve reaches the writer), and a resolve repeated by an HA pair of Alertmanagers must
/// not write a verdict that skips `stable_for`.
#[tokio::test(flavor = "multi_thread")]
async fn every_alert_of_the_incident_resolves_it_and_a_repeated_resolve_skips_nothing() {
    use crate::common::http::{alert_body, am, server};
    let w = World::with(&[PolicySpec::new("prod").set("verify", json!({ "within": "10m", "stable_for": "5m" }))]);
    w.deploy("checkout", "prod", "1.5.0", 10);
    let s = server(&w, ConfigSpec::new().set("git.fetch_freshness", "0s"));
    s.wait_ready();
    let (_, _, b) = s.send(am(alert_body("c1", "checkout", "firing"))).await;
    assert_eq!(b["outcome"], "rolled_back", "{b}");
    let commit = w.head();
    // A second alert for the same service joins the verification.
    let (_, _, b) = s.send(am(alert_body("c2", "checkout", "firing"))).await;
    assert_eq!(b["outcome"], "duplicate", "{b}");
    for fp in ["c1", "c2", "c1"] {
        let (_, _, b) = s.send(am(alert_body(fp, "checkout", "resolved"))).await;
        assert_eq!(b["outcome"], "recorded", "{fp}: reaches the writer: {b}");
    }
    assert!(w.git(&["notes", "--ref=rollbackd", "list"]).is_empty(), "stable_for has not passed: no verdict");
    let progress = w.git(&["notes", "--ref=rollbackd-watch", "show", &commit]);
    assert!(progress.contains("\"firing\":[]") && progress.contains("resolved_since"), "{progress}");
    w.clock.advance(SignedDuration::from_mins(5));
    let said = w.replica("later").verify_due().unwrap();
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(note(&w, &commit).contains("Verification: verified"));
}

/// A Prometheus that takes every connection and never answers: how many connections it took,
/// and how many the client has given up on (closed) since.
type Counter = std::sync::Arc<std::sync::atomic::AtomicUsize>;
fn prometheus_that_hangs() -> (String, Counter, Counter) {
    use std::io::Read;
    use std::sync::atomic::Ordering;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (held, closed) = (Counter::default(), Counter::default());
    let (h, c) = (held.clone(), closed.clone());
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            h.fetch_add(1, Ordering::SeqCst);
            let c = c.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
                c.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (url, held, closed)
}

#[test]
fn a_prometheus_that_never_answers_holds_up_no_alert_and_steps_nothing_back() {
    use std::sync::atomic::Ordering;
    let (url, held, closed) = prometheus_that_hangs();
    let w = World::with(&[PolicySpec::new("prod")
        .set("verify", json!({ "within": "10m", "query": "up == 1", "on_failure": "step_back", "max_steps": 1 }))]);
    w.write_config(
        &ConfigSpec::new().set("git.fetch_freshness", "0s").set("prometheus.url", url).set("prometheus.timeout", "60s"),
    );
    w.deploy("checkout", "prod", "1.5.0", 10);
    w.deploy("cart", "prod", "2.1.0", 10);
    let mut engine = w.engine();
    // A person's rollback: judged by the query alone.
    let report = engine.handle(&w.request("checkout", "prod", "r1"), &Options::default()).unwrap();
    let Outcome::RolledBack { rollback } = report.outcome else { panic!("{:?}", report.outcome) };
    engine.verify_due().unwrap();
    wait_for("the query to reach Prometheus", 20, || held.load(Ordering::SeqCst) >= 1);
    // The writer is not waiting on it: the next alert is handled while the query still hangs
    // (Prometheus holds the connection for 60s).
    let report = engine.handle(&w.alert("cart", "prod", "c1"), &Options::default()).unwrap();
    assert!(matches!(report.outcome, Outcome::RolledBack { .. }), "{:?}", report.outcome);
    assert!(engine.verify_due().is_ok());
    assert_eq!(closed.load(Ordering::SeqCst), 0, "the query was still out when the alert was handled");
    // At the deadline nothing showed it healthy or failed: unverified, escalated, not stepped back.
    w.clock.advance(SignedDuration::from_mins(11));
    let said = engine.verify_due().unwrap();
    assert!(said.iter().any(|s| s.contains(&format!("{}: unverified; escalated", rollback.id))), "{said:?}");
    let verdict = note(&w, &rollback.commit.0);
    assert!(verdict.contains("Verification: unverified"), "{verdict}");
    assert!(w.show("main", &path("checkout", "prod")).contains("checkout:1.4.2"), "no step back to 1.4.0");
}
