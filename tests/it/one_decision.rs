//! One decision for every write. A step back, the next phase of a phased rollback, `continue`,
//! an approval and an automatic merge are decided like a live alert: the policy's mode, every
//! guard, the freezes and the pause (read fail-closed), the breaker. Each test shows a freeze,
//! the pause and a denying guard stopping the write, read back from a real bare origin with the
//! git CLI.

use crate::common::*;
use jiff::SignedDuration;
use rollbackd::Actor;
use rollbackd::{Engine, Event, Options, Outcome, ReviewOutcome, Rollback};

/// The branches and tags of the origin with what they point at: what a write changes (notes,
/// such as the verification's, are not writes of a rollback).
fn writes(w: &World) -> String {
    w.git(&["for-each-ref", "--format=%(refname) %(objectname)", "refs/heads/", "refs/tags/"])
}

/// The proposal branches on the origin.
fn proposals(w: &World) -> Vec<String> {
    w.git(&["for-each-ref", "--format=%(refname:short)", "refs/heads/rollback/"]).lines().map(str::to_string).collect()
}

fn version(w: &World, rev: &str) -> String {
    let text = w.show(rev, &path("checkout", "prod"));
    text.lines().find_map(|l| l.trim().strip_prefix("image: registry.example.com/checkout:")).unwrap_or("").to_string()
}

fn handled(engine: &mut Engine, event: &Event) -> Outcome {
    engine.handle(event, &Options::default()).unwrap().outcome
}

fn pushed(outcome: Outcome) -> Rollback {
    match outcome {
        Outcome::RolledBack { rollback } => rollback,
        other => panic!("{other:?}"),
    }
}

/// What stops a write, done to the world before it is tried.
type Stop = fn(&World, &mut Engine);

/// What a test adds to its policy.
type Policy = fn(PolicySpec) -> PolicySpec;

/// Writes `text` as the freezes file on the origin, as anyone with push access could.
fn unreadable_freezes(w: &World, text: &str) {
    let dir = w.root().join("bad-state");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("freezes.json"), text).unwrap();
    let blob = w.git(&["hash-object", "-w", &dir.join("freezes.json").display().to_string()]);
    let tree = {
        let out = std::process::Command::new("git")
            .arg("--git-dir")
            .arg(&w.origin)
            .args(["mktree"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(format!("100644 blob {blob}\tfreezes.json\n").as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let commit = w.git(&[
        "-c",
        "user.name=someone",
        "-c",
        "user.email=someone@example.com",
        "commit-tree",
        &tree,
        "-m",
        "Freeze: oops",
    ]);
    w.git(&["update-ref", "refs/rollbackd/state/freezes", &commit]);
}

// --- Step back -------------------------------------------------------------------------------

/// checkout/prod deployed 1.5.0 ten minutes ago; the policy verifies within 10m and steps back
/// once. `policy` adds to it, `config` to the config.
fn stepping(policy: impl FnOnce(PolicySpec) -> PolicySpec, config: ConfigSpec) -> World {
    let spec =
        PolicySpec::new("prod").set("verify", json!({ "within": "10m", "on_failure": "step_back", "max_steps": 1 }));
    let w = World::with(&[policy(spec)]);
    w.write_config(&config.set("git.fetch_freshness", "0s"));
    w.deploy("checkout", "prod", "1.5.0", 10);
    w
}

/// The alert's rollback is pushed; then `meanwhile` happens; then it is not recovered at the
/// deadline. What the verification said, with the origin's branches and tags before the step.
fn not_recovered(w: &World, meanwhile: impl FnOnce(&mut Engine)) -> (Vec<String>, String) {
    let mut engine = w.engine();
    pushed(handled(&mut engine, &w.alert("checkout", "prod", "fp1")));
    assert_eq!(version(w, "main"), "1.4.2");
    meanwhile(&mut engine);
    let before = writes(w);
    w.clock.advance(SignedDuration::from_mins(10));
    (engine.verify_due().unwrap(), before)
}

#[test]
fn a_step_back_of_a_frozen_service_is_proposed_not_pushed() {
    let w = stepping(|p| p, ConfigSpec::new());
    let (said, _) = not_recovered(&w, |e| {
        e.freeze("checkout", Some("prod"), Some("1h".parse().unwrap()), Some("launch"), &Actor::cli("ops")).unwrap();
    });
    let head = w.head();
    assert!(said[0].contains("escalated") && said[0].contains("proposed as rollback/checkout/prod/"), "{said:?}");
    assert!(said[0].contains("checkout in prod frozen until"), "{said:?}");
    assert_eq!(version(&w, "main"), "1.4.2", "main keeps the first rollback only");
    assert_eq!(w.head(), head);
    let branches = proposals(&w);
    assert_eq!(branches.len(), 1, "{branches:?}");
    assert_eq!(version(&w, &branches[0]), "1.4.0", "the step back, for review");
    assert_eq!(w.git(&["tag", "-l", "rollback/*"]).lines().count(), 1, "only the first rollback is tagged");
}

#[test]
fn a_step_back_under_the_pause_is_proposed_and_with_pause_automatic_nothing_not_written() {
    let w = stepping(|p| p, ConfigSpec::new());
    let (said, _) = not_recovered(&w, |e| {
        e.pause(None, Some("incident"), &Actor::cli("ops")).unwrap();
    });
    assert!(said[0].contains("proposed as") && said[0].contains("automatic rollbacks paused"), "{said:?}");
    assert_eq!(version(&w, "main"), "1.4.2");
    assert_eq!(proposals(&w).len(), 1);

    let w = stepping(|p| p, ConfigSpec::new().set("pause.automatic", "nothing"));
    let (said, before) = not_recovered(&w, |e| {
        e.pause(None, Some("incident"), &Actor::cli("ops")).unwrap();
    });
    assert!(said[0].contains("did not step back") && said[0].contains("automatic rollbacks paused"), "{said:?}");
    assert_eq!(writes(&w), before, "nothing written");
}

#[test]
fn a_step_back_a_guard_denies_is_not_written() {
    // The first rollback undoes a change of ten minutes ago; the step back would undo one of
    // two and a half hours ago: older than max_change_age.
    let w = stepping(|p| p.guard("max_change_age", "1h"), ConfigSpec::new());
    let (said, before) = not_recovered(&w, |_| {});
    assert!(said[0].contains("did not step back") && said[0].contains("max_change_age"), "{said:?}");
    assert_eq!(writes(&w), before, "no commit, no tag, no branch");
    assert_eq!(version(&w, "main"), "1.4.2");

    // Step backs count as rollbacks of the service for max_rollbacks.
    let w = stepping(|p| p.guard("max_rollbacks", json!({ "count": 1, "per": "1h" })), ConfigSpec::new());
    let (said, before) = not_recovered(&w, |_| {});
    assert!(said[0].contains("did not step back") && said[0].contains("max_rollbacks"), "{said:?}");
    assert_eq!(writes(&w), before);

    // `on_violation: propose`: for review instead.
    let w = stepping(|p| p.guard("max_change_age", "1h").on_violation(OnViolation::Propose), ConfigSpec::new());
    let (said, _) = not_recovered(&w, |_| {});
    assert!(said[0].contains("proposed as") && said[0].contains("guard failed"), "{said:?}");
    assert_eq!(version(&w, "main"), "1.4.2");
    assert_eq!(proposals(&w).len(), 1);
}

#[test]
fn a_step_back_under_a_pull_request_policy_is_a_proposal_branch() {
    let w = stepping(|p| p.mode(Mode::PullRequest), ConfigSpec::new());
    let mut engine = w.engine();
    let Outcome::Proposed { rollback } = handled(&mut engine, &w.alert("checkout", "prod", "fp1")) else {
        panic!("a proposal")
    };
    let merged = engine.approve(rollback.id.as_str(), &Actor::cli("ops")).unwrap();
    assert!(matches!(merged, ReviewOutcome::Merged { .. }), "{merged:?}");
    let head = w.head();
    assert_eq!(version(&w, "main"), "1.4.2");
    w.clock.advance(SignedDuration::from_mins(10));
    let said = engine.verify_due().unwrap();
    assert!(said[0].contains("proposed as rollback/checkout/prod/"), "{said:?}");
    assert_eq!(w.head(), head, "no commit on main");
    let branches = proposals(&w);
    assert_eq!(branches.len(), 1, "{branches:?}");
    assert_eq!(version(&w, &branches[0]), "1.4.0");
    let trigger = format!("rollbackd:step-back/{}/1", rollback.id);
    assert_eq!(w.trailers(&branches[0], "Rollback-Trigger"), [trigger.as_str()]);
}

#[test]
fn a_step_back_while_the_freezes_cannot_be_read_is_proposed_and_says_why() {
    let w = stepping(|p| p, ConfigSpec::new());
    let (said, _) = not_recovered(&w, |_| unreadable_freezes(&w, r#"{"freezes":"oops"}"#));
    assert!(said[0].contains("proposed as") && said[0].contains("cannot be read"), "{said:?}");
    assert_eq!(version(&w, "main"), "1.4.2");
    assert_eq!(proposals(&w).len(), 1);
    // A live alert for another service is answered 503 (its sender retries), nothing pushed; a
    // person's request goes through, saying so.
    w.deploy("cart", "prod", "2.1.0", 0);
    let head = w.head();
    let err = w.engine().handle(&w.alert("cart", "prod", "fp2"), &Options::default()).unwrap_err();
    assert!(err.is_transient() && err.to_string().contains("cannot be read"), "{err}");
    assert_eq!(w.head(), head);
    let report = w.engine().handle(&w.request("cart", "prod", "req-1"), &Options::default()).unwrap();
    assert!(matches!(report.outcome, Outcome::RolledBack { .. }), "{:?}", report.outcome);
    assert!(report.decision.notes.iter().any(|n| n.contains("cannot be read")), "{:?}", report.decision.notes);
}

#[test]
fn step_backs_count_toward_the_breaker() {
    // One service may alert; a second trips the breaker. The first rollback falls out of the
    // window before the second alert; its step back does not.
    let w = stepping(|p| p, ConfigSpec::new().set("pause.breaker", json!({ "max_services": 1, "window": "10m" })));
    let (said, _) = not_recovered(&w, |_| {});
    assert!(said[0].contains("stepped back"), "{said:?}");
    w.clock.advance(SignedDuration::from_mins(5));
    w.deploy("cart", "prod", "2.1.0", 0);
    let head = w.head();
    let report = w.replica("other").handle(&w.alert("cart", "prod", "fp2"), &Options::default()).unwrap();
    assert!(matches!(report.outcome, Outcome::Proposed { .. }), "{:?}", report.outcome);
    let frozen = report.decision.frozen.unwrap_or_default();
    assert!(frozen.contains("rollbackd:breaker") && frozen.contains("cart, checkout"), "{frozen}");
    assert_eq!(w.head(), head);
}

// --- The next phase: the idle loop, and `continue` ---------------------------------------------

/// A Prometheus whose every query holds (one series): what lets the idle loop go on.
fn prometheus_that_holds() -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let body =
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[0,"1"]}]}}"#;
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

/// checkout/prod with a canary, both deployed 1.5.0 ten minutes ago; the policy rolls back the
/// canary first (soak 5m), then the rest once `verify.query` holds (a Prometheus that says it
/// does) or a person says `continue`. `policy` adds to it, `config` to the config.
fn phased(policy: impl FnOnce(PolicySpec) -> PolicySpec, config: ConfigSpec) -> World {
    let spec = PolicySpec::new("prod")
        .set(
            "target.phases",
            json!([{ "paths": ["apps/{{ labels.service }}/{{ labels.env }}/canary/**"], "soak": "5m" }, {}]),
        )
        .set("verify", json!({ "within": "30m", "query": "up" }));
    let w = World::with(&[policy(spec)]);
    w.write_config(&config.set("git.fetch_freshness", "0s").set("prometheus.url", prometheus_that_holds()));
    w.deploy_checkout_with_canary();
    w
}

/// The first phase, pushed for an alert: the engine and the rollback's id.
fn first_phase(w: &World) -> (Engine, String) {
    let mut engine = w.engine();
    let rollback = pushed(handled(&mut engine, &w.alert("checkout", "prod", "fp1")));
    assert_eq!(w.trailers("main", "Rollback-Phase"), ["1/2"]);
    (engine.into_inner(), rollback.id.to_string())
}

#[test]
fn the_idle_loop_writes_the_next_phase_when_nothing_stops_it() {
    let w = phased(|p| p, ConfigSpec::new());
    let (mut engine, _) = first_phase(&w);
    w.clock.advance(SignedDuration::from_mins(5));
    let said = engine.verify_due().unwrap();
    assert!(said.iter().any(|s| s.contains("phase 2/2 pushed")), "{said:?}");
    assert_eq!(w.trailers("main", "Rollback-Phase"), ["2/2"]);
}

#[test]
fn a_freeze_the_pause_or_unreadable_freezes_hold_the_next_phase_back() {
    let stops: [(&str, Stop); 3] = [
        ("freeze", |_, e| {
            e.freeze("checkout", Some("prod"), Some("1h".parse().unwrap()), None, &Actor::cli("ops")).unwrap();
        }),
        ("pause", |_, e| {
            e.pause(None, None, &Actor::cli("ops")).unwrap();
        }),
        ("unreadable", |w, _| unreadable_freezes(w, "{\"freezes\":\"oops\"}")),
    ];
    for (what, stop) in stops {
        let w = phased(|p| p, ConfigSpec::new());
        let (mut engine, id) = first_phase(&w);
        stop(&w, &mut engine);
        let before = writes(&w);
        w.clock.advance(SignedDuration::from_mins(6));
        let said = engine.verify_due().unwrap();
        assert!(said.is_empty(), "{what}: {said:?}");
        assert_eq!(writes(&w), before, "{what}: nothing written");
        assert_eq!(w.trailers("main", "Rollback-Phase"), ["1/2"], "{what}");
        if what != "unreadable" {
            let status = engine.status(None).unwrap();
            assert!(
                status.contains(&format!("paused or frozen: waits for the end of it, or `continue {id}`")),
                "{status}"
            );
        }
    }
}

#[test]
fn a_guard_that_denies_stops_the_idle_loops_next_phase_and_a_persons_continue() {
    // The change undone was ten minutes old at the first phase; 35 by the next.
    let w = phased(|p| p.guard("max_change_age", "30m"), ConfigSpec::new());
    let (mut engine, id) = first_phase(&w);
    let before = writes(&w);
    w.clock.advance(SignedDuration::from_mins(25));
    let said = engine.verify_due().unwrap();
    assert_eq!(said.len(), 1, "told once: {said:?}");
    assert!(said[0].contains("cannot go on after phase 1/2") && said[0].contains("max_change_age"), "{said:?}");
    assert!(engine.verify_due().unwrap().is_empty(), "and only once");
    assert_eq!(writes(&w), before, "nothing written");

    let said = engine.continue_rollback(&id, &Actor::cli("alice")).unwrap();
    assert!(said.starts_with("refused") && said.contains("max_change_age"), "{said}");
    assert_eq!(writes(&w), before, "a person's continue is denied by the guard too");
    assert_eq!(version(&w, "main"), "1.5.0");
}

#[test]
fn the_rollbacks_own_first_phase_does_not_count_against_its_next() {
    let w = phased(
        |p| p.guard("cooldown", "1h").guard("max_rollbacks", json!({ "count": 1, "per": "1h" })),
        ConfigSpec::new(),
    );
    let (mut engine, _) = first_phase(&w);
    w.clock.advance(SignedDuration::from_mins(5));
    let said = engine.verify_due().unwrap();
    assert!(said.iter().any(|s| s.contains("phase 2/2 pushed")), "{said:?}");
}

#[test]
fn a_persons_continue_goes_through_a_freeze_and_the_pause_as_their_request_would() {
    let w = phased(|p| p, ConfigSpec::new());
    let (mut engine, id) = first_phase(&w);
    engine.freeze("checkout", Some("prod"), Some("1h".parse().unwrap()), None, &Actor::cli("ops")).unwrap();
    engine.pause(None, None, &Actor::cli("ops")).unwrap();
    let said = engine.continue_rollback(&id, &Actor::cli("alice")).unwrap();
    assert!(said.contains("phase 2/2 pushed"), "{said}");
    assert_eq!(version(&w, "main"), "1.4.2");
    assert_eq!(w.trailers("main", "Rollback-Phase"), ["2/2"]);
}

// --- Approve and automatic merges --------------------------------------------------------------

/// A proposal for the alert under a `mode: pull_request` policy (`policy` adds to it).
fn proposed(w: &World, engine: &mut Engine) -> Rollback {
    match handled(engine, &w.alert("checkout", "prod", "fp1")) {
        Outcome::Proposed { rollback } => rollback,
        other => panic!("{other:?}"),
    }
}

fn reviewed(policy: impl FnOnce(PolicySpec) -> PolicySpec) -> World {
    let w = World::with(&[policy(PolicySpec::new("prod").mode(Mode::PullRequest))]);
    w.write_config(&ConfigSpec::new().set("git.fetch_freshness", "0s"));
    w.deploy("checkout", "prod", "1.5.0", 10);
    w
}

#[test]
fn a_guard_that_denies_now_stops_an_approval() {
    // Proposed when the change was ten minutes old; approved when it is 35.
    let w = reviewed(|p| p.guard("max_change_age", "30m"));
    let mut engine = w.engine();
    let rollback = proposed(&w, &mut engine);
    let before = writes(&w);
    w.clock.advance(SignedDuration::from_mins(25));
    let outcome = engine.approve(rollback.id.as_str(), &Actor::cli("ops")).unwrap();
    let ReviewOutcome::Refused { reason } = &outcome else { panic!("{outcome:?}") };
    assert!(reason.contains("max_change_age") && reason.contains("is not merged"), "{reason}");
    assert_eq!(writes(&w), before, "main, the tags and the proposal branch as they were");
    assert_eq!(version(&w, "main"), "1.5.0");
}

#[test]
fn an_approval_goes_through_a_freeze_and_the_pause_as_a_persons_request_would() {
    let w = reviewed(|p| p);
    let mut engine = w.engine();
    let rollback = proposed(&w, &mut engine);
    engine.freeze("checkout", Some("prod"), Some("1h".parse().unwrap()), None, &Actor::cli("ops")).unwrap();
    engine.pause(None, None, &Actor::cli("ops")).unwrap();
    let outcome = engine.approve(rollback.id.as_str(), &Actor::cli("ops")).unwrap();
    assert!(matches!(outcome, ReviewOutcome::Merged { .. }), "{outcome:?}");
    assert_eq!(version(&w, "main"), "1.4.2");
}

#[test]
fn an_automatic_merge_is_stopped_by_a_freeze_the_pause_and_a_failed_guard() {
    let stops: [(&str, Policy, Stop); 3] = [
        (
            "frozen until",
            |p| p,
            |_, e| {
                e.freeze("checkout", Some("prod"), Some("1h".parse().unwrap()), None, &Actor::cli("ops")).unwrap();
            },
        ),
        (
            "paused until",
            |p| p,
            |_, e| {
                e.pause(None, None, &Actor::cli("ops")).unwrap();
            },
        ),
        // The change undone is ten minutes old.
        ("max_change_age", |p| p.guard("max_change_age", "5m").on_violation(OnViolation::Propose), |_, _| {}),
    ];
    for (why, policy, stop) in stops {
        let w = reviewed(|p| policy(p.review("auto_merge", true)));
        let mut engine = w.engine();
        stop(&w, &mut engine);
        let head = w.head();
        let report = engine.handle(&w.alert("checkout", "prod", "fp1"), &Options::default()).unwrap();
        assert!(matches!(report.outcome, Outcome::Proposed { .. }), "{why}: {:?}", report.outcome);
        let notes = report.decision.notes.join("\n");
        assert!(notes.contains("auto_merge waits for an approval") && notes.contains(why), "{why}: {notes}");
        assert_eq!(w.head(), head, "{why}: nothing merged");
        assert_eq!(proposals(&w).len(), 1, "{why}: the proposal waits");
        assert!(w.git(&["tag", "-l", "rollback/*"]).is_empty(), "{why}");
    }
    // Nothing stopping it: merged at once, as before.
    let w = reviewed(|p| p.review("auto_merge", true));
    let report = w.engine().handle(&w.alert("checkout", "prod", "fp1"), &Options::default()).unwrap();
    assert!(matches!(report.outcome, Outcome::RolledBack { .. }), "{:?}", report.outcome);
    assert_eq!(version(&w, "main"), "1.4.2");
}

// --- Known-good tags from candidates -----------------------------------------------------------

#[test]
fn a_candidate_is_not_tagged_known_good_under_the_pause_or_unreadable_freezes() {
    let known_good = PolicySpec::new("deployed")
        .source("github")
        .matchers(&["event=\"deployment_status\""])
        .target(
            "{{ labels.payload_service }}",
            "{{ labels.environment }}",
            &["apps/{{ labels.payload_service }}/{{ labels.environment }}/**"],
        )
        .set("action", json!({ "mode": Mode::KnownGood, "min_healthy": "10m" }));
    let w = World::with(&[known_good]);
    w.write_config(&ConfigSpec::new().set("git.fetch_freshness", "0s"));
    let head = w.deploy("checkout", "prod", "1.5.0", 10);
    let mut engine = w.engine();
    let said = engine.mark_known_good(&w.deployment_succeeded(&head.0)).unwrap();
    assert!(said.contains("is a candidate"), "{said}");
    // Freezes nobody trusted (or could parse) hold it back; a person's pause repairs them and
    // still holds it back; once resumed it is tagged.
    unreadable_freezes(&w, "{\"freezes\":\"oops\"}");
    w.clock.advance(SignedDuration::from_mins(11));
    engine.verify_due().unwrap();
    assert!(w.git(&["tag", "-l", "known-good/*"]).is_empty(), "not while the freezes cannot be read");
    engine.pause(None, None, &Actor::cli("ops")).unwrap();
    engine.verify_due().unwrap();
    assert!(w.git(&["tag", "-l", "known-good/*"]).is_empty(), "not while paused");
    engine.resume(&Actor::cli("ops"), None).unwrap();
    engine.verify_due().unwrap();
    assert_eq!(w.git(&["tag", "-l", "known-good/*"]).lines().count(), 1);
}
