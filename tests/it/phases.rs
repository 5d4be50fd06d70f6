//! Phased rollbacks (`target.phases`): the canary overlay first, the rest once it soaked and is
//! healthy. Each phase is a commit of its own with the rollback's one id; a new alert, a failed
//! check, a change by someone else or a person's `abort` halts it and proposes the rest. Read
//! back with the git CLI from a real bare origin; the checks ask a real Prometheus.

use crate::common::procs::{self, Killed};
use crate::common::*;
use crate::serve::get;
use jiff::SignedDuration;
use rollbackd::Actor;
use rollbackd::{Engine, Options, Outcome, Principal, Rollback};

/// checkout/prod with a canary overlay, both at 1.4.2, then a deploy of 1.5.0 to both ten
/// minutes ago; the policy rolls back the canary first (soak 5m), then the rest. `extra` is set
/// on the policy (a `verify:` with a query, say).
fn world(extra: &[(&str, serde_json::Value)]) -> World {
    let mut policy = PolicySpec::new("prod")
        .target("{{ labels.service }}", "{{ labels.env }}", &["apps/{{ labels.service }}/{{ labels.env }}/**"])
        .set(
            "target.phases",
            json!([
                { "paths": ["apps/{{ labels.service }}/{{ labels.env }}/canary/**"], "soak": "5m" },
                {},
            ]),
        )
        .chatops("approve", &["slack:UALICE"]);
    for (k, v) in extra {
        policy = policy.set(k, v.clone());
    }
    let w = World::with(&[policy]);
    w.write_config(&ConfigSpec::new().set("git.fetch_freshness", "0s"));
    w.deploy_checkout_with_canary();
    w
}

fn version(w: &World, rev: &str, file: &str) -> String {
    let text = w.show(rev, file);
    text.lines().find_map(|l| l.trim().strip_prefix("image: registry.example.com/checkout:")).unwrap_or("").to_string()
}

/// The first phase, pushed for an alert.
fn first_phase(w: &World, engine: &mut Engine) -> Rollback {
    let report = engine.handle(&w.alert("checkout", "prod", "fp1"), &Options::default()).unwrap();
    match report.outcome {
        Outcome::RolledBack { rollback } => rollback,
        other => panic!("{other:?}"),
    }
}

/// An alert that began `minutes` after the clock's now (after the phase was written).
fn newer_alert(w: &World, service: &str, fingerprint: &str, minutes: i64) -> rollbackd::Event {
    let mut alert = w.alert(service, "prod", fingerprint);
    let began = w.now() + SignedDuration::from_mins(minutes);
    alert.started_at = Some(began);
    alert.dedupe_key = format!("{fingerprint}@{began}");
    alert
}

/// The world of `world(extra)`, an engine, and the id of the rollback whose first phase an
/// alert just pushed.
fn phase_one(extra: &[(&str, serde_json::Value)]) -> (World, Engine, String) {
    let w = world(extra);
    let mut engine = w.engine();
    let id = first_phase(&w, &mut engine).id.to_string();
    (w, engine.into_inner(), id)
}

fn branch_exists(w: &World, name: &str) -> bool {
    !w.git(&["for-each-ref", &format!("refs/heads/{name}")]).is_empty()
}

#[test]
fn the_canary_goes_back_first_and_the_rest_when_a_person_says_continue() {
    let w = world(&[]);
    let mut engine = w.engine();
    let first = first_phase(&w, &mut engine);
    let id = first.id.to_string();

    // Phase 1: the canary alone, a commit carrying the rollback's id and its phase, no tag yet.
    assert_eq!(
        (version(&w, "main", CANARY), version(&w, "main", &path("checkout", "prod"))),
        ("1.4.2".into(), "1.5.0".into())
    );
    assert_eq!(w.trailers("main", "Rollback-Id"), std::slice::from_ref(&id));
    assert_eq!(w.trailers("main", "Rollback-Phase"), ["1/2"]);
    assert_eq!(first.tag.as_deref(), Some(format!("phase/checkout/prod/{id}/1").as_str()), "rollbackd's own phase");
    assert!(w.git(&["tag", "-l", "rollback/*"]).is_empty(), "a phased rollback is tagged by its last phase");
    assert!(w.message("main").contains("Phase 1 of 2: only these paths"), "{}", w.message("main"));

    // The alert repeats: the same incident, nothing more is written.
    let again = engine.handle(&w.alert("checkout", "prod", "fp1"), &Options::default()).unwrap();
    assert!(matches!(again.outcome, Outcome::Duplicate { .. }), "{:?}", again.outcome);

    // Without a verify.query nothing can check the canary: after the soak it waits for a person.
    w.clock.advance(SignedDuration::from_mins(6));
    assert!(engine.verify_due().unwrap().is_empty());
    let status = engine.status(None).unwrap();
    assert!(
        status.contains(&format!("{id} checkout/prod phase 1/2")) && status.contains("waiting for `continue"),
        "{status}"
    );
    assert_eq!(w.trailers("main", "Rollback-Phase"), ["1/2"]);

    let said = engine.continue_rollback(&id, &Actor::cli("alice")).unwrap();
    assert!(said.contains("phase 2/2 pushed"), "{said}");
    assert_eq!(version(&w, "main", &path("checkout", "prod")), "1.4.2");
    assert_eq!(w.trailers("main", "Rollback-Id"), std::slice::from_ref(&id), "one rollback, one id");
    assert_eq!(w.trailers("main", "Rollback-Phase"), ["2/2"]);
    assert_eq!(
        w.git(&["rev-parse", &format!("rollback/checkout/prod/{id}^{{commit}}")]),
        w.head(),
        "tagged at the last phase"
    );
    assert_eq!(w.git(&["rev-list", "--count", "main~2..main"]), "2");
    assert!(w.message("main").contains("alice said continue after phase 1/2"), "{}", w.message("main"));

    // History shows both phases; nothing is left to continue.
    let history = engine.history().unwrap().records().iter().filter(|r| r.id.as_str() == id).count();
    assert_eq!(history, 2);
    let refused = engine.continue_rollback(&id, &Actor::cli("alice")).unwrap();
    assert!(refused.starts_with("refused") && refused.contains("last phase"), "{refused}");
    w.clock.advance(SignedDuration::from_mins(30));
    assert!(engine.verify_due().unwrap().is_empty());
    assert_eq!(w.trailers("main", "Rollback-Phase"), ["2/2"]);
}

#[test]
fn a_new_alert_during_the_soak_halts_and_proposes_the_rest() {
    let (w, mut engine, id) = phase_one(&[]);
    let phase_one = w.head();

    // Another alert that was firing before the phase was written is the same incident.
    let older = engine.handle(&w.alert("checkout", "prod", "fp-latency"), &Options::default()).unwrap();
    let Outcome::Duplicate { reason, .. } = &older.outcome else { panic!("{:?}", older.outcome) };
    assert!(reason.contains("before phase 1/2") && reason.contains("its soak and check decide"), "{reason}");
    assert_eq!(w.head(), phase_one);

    // It fired again: the canary's rollback did not help. The branch gets only a marker
    // saying so; the rest is a proposal on top of it, with the same id, the last phase.
    w.clock.advance(SignedDuration::from_mins(2));
    let report = engine.handle(&newer_alert(&w, "checkout", "fp2", 0), &Options::default()).unwrap();
    let Outcome::Duplicate { rollback_id, reason, .. } = &report.outcome else { panic!("{:?}", report.outcome) };
    assert_eq!(rollback_id.as_str(), id);
    assert!(reason.contains("halted after phase 1/2") && reason.contains("while phase 1/2 soaked"), "{reason}");
    assert_eq!(w.git(&["rev-parse", "main~1"]), phase_one);
    assert_eq!(w.git(&["diff", "--stat", "main~1", "main"]), "", "the marker changes no file");
    assert!(w.message("main").contains(&format!("Rollback-Halted: {id}")), "{}", w.message("main"));
    assert_eq!(version(&w, "main", &path("checkout", "prod")), "1.5.0");
    let branch = format!("rollback/checkout/prod/{id}");
    assert!(branch_exists(&w, &branch));
    assert_eq!(w.trailers(&branch, "Rollback-Id"), std::slice::from_ref(&id));
    assert_eq!(w.trailers(&branch, "Rollback-Phase"), ["2/2"]);
    assert_eq!(version(&w, &branch, &path("checkout", "prod")), "1.4.2");
    assert!(w.message(&branch).contains("proposed because it halted"), "{}", w.message(&branch));

    // Later ticks leave it to people; a third alert changes nothing; continue is refused.
    w.clock.advance(SignedDuration::from_mins(10));
    assert!(engine.verify_due().unwrap().is_empty());
    let again = engine.handle(&newer_alert(&w, "checkout", "fp3", 0), &Options::default()).unwrap();
    assert!(matches!(again.outcome, Outcome::Duplicate { .. }), "{:?}", again.outcome);
    let refused = engine.continue_rollback(&id, &Actor::cli("alice")).unwrap();
    assert!(refused.contains("halted already"), "{refused}");
    assert_eq!(w.git(&["for-each-ref", "--format=%(refname)", "refs/heads/rollback/"]).lines().count(), 1);

    // Approving the rest completes the rollback, tagged as its last phase.
    let merged = engine.approve(&id, &Actor::cli("bob")).unwrap();
    assert!(matches!(merged, rollbackd::ReviewOutcome::Merged { .. }), "{merged:?}");
    assert_eq!(version(&w, "main", &path("checkout", "prod")), "1.4.2");
    assert_eq!(w.trailers("main", "Rollback-Phase"), ["2/2"]);
    assert!(!w.git(&["tag", "-l", &branch]).is_empty());
}

#[test]
fn someone_changing_the_paths_during_the_soak_halts_it() {
    let (w, mut engine, id) = phase_one(&[]);
    // A person deploys a fix by hand while the canary soaks.
    w.deploy("checkout", "prod", "1.5.1", 0);
    w.clock.advance(SignedDuration::from_mins(1));
    let said = engine.verify_due().unwrap();
    assert!(
        said.iter().any(|s| s.contains("halted after phase 1/2") && s.contains("changed apps/checkout/prod/**")),
        "{said:?}"
    );
    assert_eq!(version(&w, "main", &path("checkout", "prod")), "1.5.1", "the person's change stays");
    assert!(branch_exists(&w, &format!("rollback/checkout/prod/{id}")));
}

#[test]
fn continue_and_abort_from_chat_are_for_the_approvers() {
    let w = world(&[]);
    let id = first_phase(&w, &mut w.engine()).id.to_string();
    let mallory = chat_as(&w, Principal::new("slack:UMALLORY"), &format!("/rollback abort {id}"));
    assert!(!mallory.ok && mallory.text.contains("not in chatops.approve"), "{mallory:?}");
    let typo = chat_as(&w, Principal::new("slack:UALICE"), "/rollback abort rb-nothex");
    assert!(!typo.ok && typo.text.contains("not a rollback id"), "{typo:?}");
    assert!(!branch_exists(&w, &format!("rollback/checkout/prod/{id}")));

    let alice =
        chat_as(&w, Principal::new("slack:UALICE"), &format!("/rollback abort {id} because canary logs look odd"));
    assert!(alice.ok && alice.public && alice.text.contains("aborted by slack:UALICE"), "{alice:?}");
    let branch = format!("rollback/checkout/prod/{id}");
    assert!(w.message(&branch).contains("aborted by slack:UALICE: canary logs look odd"), "{}", w.message(&branch));
    assert_eq!(version(&w, "main", &path("checkout", "prod")), "1.5.0", "abort writes nothing to the branch");
}

#[test]
fn a_restart_between_phases_carries_on_from_git() {
    let w = world(&[]);
    let id = first_phase(&w, &mut w.engine()).id.to_string();
    // Another process (a restart, another replica) with its own mirror knows only git.
    w.clock.advance(SignedDuration::from_mins(2));
    let mut other = w.replica("other");
    let status = other.status(None).unwrap();
    assert!(status.contains(&format!("{id} checkout/prod phase 1/2")) && status.contains("soaking until"), "{status}");
    let said = other.continue_rollback(&id, &Actor::cli("carol")).unwrap();
    assert!(said.contains("phase 2/2 pushed"), "{said}");
    assert_eq!(w.trailers("main", "Rollback-Phase"), ["2/2"]);
    assert_eq!(w.trailers("main", "Rollback-Id"), [id]);
}

/// A real Prometheus on a free port, scraping nothing: the policies ask it constant queries.
fn prometheus(w: &World) -> Option<(Killed, u16)> {
    procs::installed(&["prometheus"], "prometheus")?;
    let port = free_port();
    let config = "global: { scrape_interval: 1s, evaluation_interval: 1s }\nscrape_configs: []\n";
    let p = procs::prometheus(&w.root().join("prometheus"), port, config, None)?;
    let url = format!("http://127.0.0.1:{port}");
    wait_for("Prometheus ready", 60, || get(&format!("{url}/-/ready")).is_ok_and(|(s, _)| s == 200));
    Some((p, port))
}

/// A world whose policy checks each phase with `query`, asking a real Prometheus.
fn checked_world(query: &str) -> Option<(World, Killed)> {
    let w = world(&[("verify", json!({ "within": "10m", "query": query }))]);
    let (p, port) = prometheus(&w)?;
    w.write_config(
        &ConfigSpec::new().set("git.fetch_freshness", "0s").set("prometheus.url", format!("http://127.0.0.1:{port}")),
    );
    Some((w, p))
}

#[test]
fn a_check_that_holds_after_the_soak_writes_the_next_phase() {
    let Some((w, _prometheus)) = checked_world("vector(1) > 0") else { return };
    let mut engine = w.engine();
    let id = first_phase(&w, &mut engine).id.to_string();
    w.clock.advance(SignedDuration::from_mins(4));
    assert!(engine.verify_due().unwrap().is_empty(), "still soaking");
    assert_eq!(w.trailers("main", "Rollback-Phase"), ["1/2"]);
    w.clock.advance(SignedDuration::from_mins(1));
    let said = engine.verify_due().unwrap();
    assert!(said.iter().any(|s| s.contains("phase 2/2 pushed")), "{said:?}");
    assert_eq!(version(&w, "main", &path("checkout", "prod")), "1.4.2");
    assert!(w.message("main").contains("phase 1/2 soaked 5m and verify.query holds"), "{}", w.message("main"));
    assert_eq!(w.trailers("main", "Rollback-Id"), [id]);
}

#[test]
fn a_check_that_fails_after_the_soak_halts() {
    let Some((w, _prometheus)) = checked_world("vector(1) < 0") else { return };
    let mut engine = w.engine();
    let id = first_phase(&w, &mut engine).id.to_string();
    w.clock.advance(SignedDuration::from_mins(5));
    let said = engine.verify_due().unwrap();
    assert!(said.iter().any(|s| s.contains("verify.query does not hold after phase 1/2 soaked 5m")), "{said:?}");
    assert_eq!(version(&w, "main", &path("checkout", "prod")), "1.5.0");
    assert_eq!(w.trailers(&format!("rollback/checkout/prod/{id}"), "Rollback-Phase"), ["2/2"]);
}

#[test]
fn an_alert_that_resolves_between_phases_is_not_awaited_again_even_after_a_restart() {
    let Some((w, _prometheus)) = checked_world("vector(1) > 0") else { return };
    let mut engine = w.engine();
    let alert = w.alert("checkout", "prod", "fp1");
    let id = first_phase(&w, &mut engine).id.to_string();
    let phase_one = w.head();
    // The canary's rollback cleared the alert.
    w.clock.advance(SignedDuration::from_mins(1));
    let said = engine.record_resolution(&World::resolved(&alert, w.now())).unwrap();
    assert!(said.contains("resolved while phase 1/2 soaked"), "{said}");
    assert!(w.git(&["notes", "--ref=rollbackd-watch", "show", &phase_one]).contains("resolved between phases"));
    drop(engine);

    // Another process writes the last phase and verifies it: it does not wait for the alert.
    let mut other = w.replica("other");
    w.clock.advance(SignedDuration::from_mins(4));
    let said = other.verify_due().unwrap();
    assert!(said.iter().any(|s| s.contains("phase 2/2 pushed")), "{said:?}");
    // No deploy time, no stable_for: the query holding is all it waits for.
    assert!(said.iter().any(|s| s.contains(&format!("{id}: verified"))), "{said:?}");
    let last = w.head();
    assert!(w.git(&["notes", "--ref=rollbackd", "show", &last]).contains("Verification: verified"));
}

#[test]
fn check_refuses_phases_that_cannot_work_and_says_where() {
    let w = World::new();
    let head = "- name: p\n  match: {}\n  action: { mode: direct }\n  target:\n    service: x\n    env: y\n    paths: [apps/x/**]\n    phases:\n";
    let cases = [
        ("      - { paths: [apps/x/canary/**], soak: 5m }\n", ":9:", "one phase is the rollback itself"),
        ("      - { soak: 5m }\n      - {}\n", ":9:", "phases[0] names no paths"),
        (
            "      - { paths: [apps/x/canary/**] }\n      - { paths: [apps/x/main/**] }\n",
            ":10:",
            "the last phase is the whole target",
        ),
        ("      - { paths: [apps/x/canary/**], soak: never }\n      - {}\n", ":9:", "invalid duration"),
    ];
    for (phases, pos, words) in cases {
        w.set_policy_text(&format!("{head}{phases}"));
        let out = w.run_cli(&["check"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(text.contains(&format!("10-test.yaml{pos}")) && text.contains(words), "want {pos} {words} in {text}");
    }
    // A proposal is reviewed and merged whole.
    let proposal = format!("{head}      - {{ paths: [apps/x/canary/**] }}\n      - {{}}\n")
        .replace("mode: direct", "mode: pull_request");
    w.set_policy_text(&proposal);
    let out = w.run_cli(&["check"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("needs `action.mode: direct`"), "{out:?}");
    // And one that works passes; a phase matching nothing on the branch (a typo) is warned about.
    w.set_policy_text(&format!("{head}      - {{ paths: [apps/x/canary/**], soak: 5m }}\n      - {{}}\n"));
    assert_eq!(w.run_cli(&["check"]).status.code(), Some(0));
    let typo = "- name: p\n  match: {}\n  action: { mode: direct }\n  target:\n    service: checkout\n    env: prod\n    paths: [apps/checkout/prod/**]\n    phases:\n      - { paths: [apps/checkout/prod/kanary/**] }\n      - {}\n";
    w.set_policy_text(typo);
    let out = w.run_cli(&["check", "--online"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("10-test.yaml:9:") && text.contains("kanary/**` match nothing"), "{text}");
}

#[test]
fn another_services_alert_does_not_halt_it_and_a_person_asking_again_is_told_how_to_go_on() {
    // checkout and cart share `shared/**`; checkout's canary phase takes the shared file back too.
    let w = World::with(&[PolicySpec::new("prod")
        .target("{{ labels.service }}", "{{ labels.env }}", &["apps/{{ labels.service }}/{{ labels.env }}/**", "shared/**"])
        .set(
            "target.phases",
            json!([{ "paths": ["apps/{{ labels.service }}/{{ labels.env }}/canary/**", "shared/**"], "soak": "5m" }, {}]),
        )]);
    w.commit_files("Add a canary", &[(CANARY, Some(&manifest("checkout", "prod", &image("checkout", "1.4.2"))))], 140);
    let bad = manifest("checkout", "prod", &image("checkout", "1.5.0"));
    w.commit_files(
        "Deploy checkout 1.5.0",
        &[
            (&path("checkout", "prod"), Some(&bad)),
            (CANARY, Some(&bad)),
            ("shared/versions.yaml", Some("checkout: 1.5.0\n")),
        ],
        10,
    );
    let mut engine = w.engine();
    let id = first_phase(&w, &mut engine).id.to_string();
    let phase_one = w.head();

    // cart's alert: the newest change to cart's paths is checkout's canary phase (the shared
    // file). It is answered as that rollback's, and checkout's rollback goes on undisturbed.
    let cart = engine.handle(&w.alert("cart", "prod", "fpc"), &Options::default()).unwrap();
    assert!(matches!(cart.outcome, Outcome::Duplicate { .. }), "{:?}", cart.outcome);
    assert!(!branch_exists(&w, &format!("rollback/checkout/prod/{id}")), "not halted by another service");
    assert_eq!(w.head(), phase_one);

    // A person asks for checkout again: told how to go on, nothing is written.
    let asked = engine.handle(&w.request("checkout", "prod", "again-1"), &Options::default()).unwrap();
    let Outcome::Duplicate { reason, .. } = &asked.outcome else { panic!("{:?}", asked.outcome) };
    assert!(reason.contains(&format!("`continue {id}` writes the next now")), "{reason}");
    assert_eq!(w.head(), phase_one);
    assert!(engine.status(None).unwrap().contains(&format!("{id} checkout/prod phase 1/2")));
}

#[test]
fn groups_roll_back_several_services_in_order_and_a_halt_keeps_the_later_ones_unwritten() {
    // One release bumped checkout (the consumer) and cart (the producer): the consumer goes back
    // first, the producer only after it.
    let w = World::with(&[PolicySpec::new("shop")
        .target("shop", "prod", &["apps/checkout/prod/**", "apps/cart/prod/**"])
        .set(
            "target.groups",
            json!([{ "name": "checkout", "paths": ["apps/checkout/prod/**"], "soak": "10m" }, { "name": "cart" }]),
        )]);
    w.write_config(&ConfigSpec::new().set("git.fetch_freshness", "0s"));
    let (c, k) =
        (manifest("checkout", "prod", &image("checkout", "9.9.9")), manifest("cart", "prod", &image("cart", "9.9.9")));
    w.commit_files("Release 2026.11", &[(&path("checkout", "prod"), Some(&c)), (&path("cart", "prod"), Some(&k))], 10);
    let mut engine = w.engine();
    let first = first_phase(&w, &mut engine);
    assert_eq!(version(&w, "main", &path("checkout", "prod")), "1.4.2");
    assert!(w.show("main", &path("cart", "prod")).contains("cart:9.9.9"), "the producer waits");
    assert!(w.message("main").contains("Phase 1 of 2 (checkout): only these paths"), "{}", w.message("main"));
    assert_eq!(w.trailers("main", "Rollback-Service"), ["shop"]);
    let status = engine.status(None).unwrap();
    assert!(status.contains("phase 1/2 (checkout)"), "{status}");

    // The consumer's rollback did not help: the producer is never written; it is proposed.
    let again = engine.handle(&newer_alert(&w, "checkout", "fp9", 1), &Options::default()).unwrap();
    assert!(matches!(again.outcome, Outcome::Duplicate { .. }), "{:?}", again.outcome);
    w.clock.advance(SignedDuration::from_mins(30));
    assert!(engine.verify_due().unwrap().is_empty());
    assert!(w.show("main", &path("cart", "prod")).contains("cart:9.9.9"));
    let branch = format!("rollback/shop/prod/{}", first.id);
    assert!(w.show(&branch, &path("cart", "prod")).contains("cart:2.0.0"));
    assert_eq!(w.trailers(&branch, "Rollback-Phase"), ["2/2"]);
}

#[test]
fn trailers_in_someone_elses_commit_never_make_it_go_on() {
    let w = world(&[]);
    let good = w.git(&["rev-parse", "main~1"]);
    let bad = w.head();
    // Text anyone can put in a commit message (a merged pull request, say): a "phase 1/2" for
    // cart, and one without the commits it undid.
    for of in [format!("Rollback-Of: {bad}\n"), String::new()] {
        let message = format!(
            "Update the readme\n\nRollback-Id: rb-0123456789ab\nRollback-Service: cart\nRollback-Env: prod\n{of}Rollback-To: {good}\nRollback-Policy: prod\nRollback-Trigger: cli:x\nRollback-Actor: cli:x\nRollback-Strategy: restore\nRollback-Phase: 1/2\n"
        );
        w.seed
            .commit(&message, &[("README.md", Some(&format!("readme {}\n", of.len())))], "someone", w.ago(1))
            .unwrap();
    }
    let head = w.head();
    let mut engine = w.engine();
    w.clock.advance(SignedDuration::from_mins(30));
    assert!(engine.verify_due().unwrap().is_empty());
    let refused = engine.continue_rollback("rb-0123456789ab", &Actor::cli("mallory")).unwrap();
    assert!(refused.starts_with("refused"), "{refused}");
    assert!(!engine.status(None).unwrap().contains("phased rollbacks:"));
    assert_eq!(w.head(), head, "nothing written");
}

#[test]
fn continue_after_someone_elses_change_halts_instead_and_leaves_the_change() {
    let (w, mut engine, id) = phase_one(&[]);
    w.deploy("checkout", "prod", "1.5.1", 0);
    let said = engine.continue_rollback(&id, &Actor::cli("alice")).unwrap();
    assert!(said.contains("halted after phase 1/2") && said.contains("changed apps/checkout/prod/**"), "{said}");
    assert_eq!(version(&w, "main", &path("checkout", "prod")), "1.5.1", "the hotfix stays");
    // Another replica asking to continue now is told it halted; nothing more is written.
    let head = w.head();
    let refused = w.replica("other").continue_rollback(&id, &Actor::cli("bob")).unwrap();
    assert!(refused.contains("halted already"), "{refused}");
    assert_eq!(w.head(), head);
}

#[test]
fn a_revert_policy_still_writes_each_phase_within_its_paths() {
    let w = world(&[("action.strategy", json!("revert"))]);
    let mut engine = w.engine();
    let id = first_phase(&w, &mut engine).id.to_string();
    assert_eq!(
        (version(&w, "main", CANARY), version(&w, "main", &path("checkout", "prod"))),
        ("1.4.2".into(), "1.5.0".into())
    );
    assert!(engine.continue_rollback(&id, &Actor::cli("alice")).unwrap().contains("phase 2/2 pushed"));
    assert_eq!(version(&w, "main", &path("checkout", "prod")), "1.4.2");
}

#[test]
fn cancelling_the_rest_lets_the_next_alert_finish_what_the_phases_left() {
    let (w, mut engine, id) = phase_one(&[]);
    assert!(engine.abort_rollback(&id, &Actor::cli("alice"), Some("looks odd")).unwrap().contains("halted"));
    let cancelled = engine.cancel(&id, &Actor::cli("alice")).unwrap();
    assert!(matches!(cancelled, rollbackd::ReviewOutcome::Cancelled { .. }), "{cancelled:?}");
    w.clock.advance(SignedDuration::from_mins(5));
    let next = engine.handle(&newer_alert(&w, "checkout", "fp7", 0), &Options::default()).unwrap();
    assert!(matches!(next.outcome, Outcome::RolledBack { .. }), "{:?}", next.outcome);
    assert_eq!(version(&w, "main", &path("checkout", "prod")), "1.4.2");
}

#[test]
fn a_policy_that_lost_its_phases_halts_and_proposes_the_rest() {
    let w = world(&[]);
    let id = first_phase(&w, &mut w.engine()).id.to_string();
    w.set_policies(&[PolicySpec::new("prod").target(
        "{{ labels.service }}",
        "{{ labels.env }}",
        &["apps/{{ labels.service }}/{{ labels.env }}/**"],
    )]);
    w.clock.advance(SignedDuration::from_mins(1));
    let said = w.engine().verify_due().unwrap();
    assert!(said.iter().any(|s| s.contains("now has 0 phases")), "{said:?}");
    assert_eq!(w.trailers(&format!("rollback/checkout/prod/{id}"), "Rollback-Phase"), ["2/2"]);
}

#[test]
fn past_the_point_of_no_return_the_next_phase_is_proposed_even_on_continue() {
    let w = world(&[("guards", json!({ "point_of_no_return": "15m", "on_violation": "propose" }))]);
    let mut engine = w.engine();
    let id = first_phase(&w, &mut engine).id.to_string();
    w.clock.advance(SignedDuration::from_mins(10));
    let said = engine.continue_rollback(&id, &Actor::cli("alice")).unwrap();
    assert!(said.contains("past the point of no return"), "{said}");
    assert_eq!(version(&w, "main", &path("checkout", "prod")), "1.5.0");
    assert_eq!(w.trailers(&format!("rollback/checkout/prod/{id}"), "Rollback-Phase"), ["2/2"]);
}

#[test]
fn phase_paths_reaching_outside_the_target_give_one_commit_instead() {
    let w = World::with(&[PolicySpec::new("prod")
        .target("{{ labels.service }}", "{{ labels.env }}", &["apps/{{ labels.service }}/{{ labels.env }}/**"])
        .set("target.phases", json!([{ "paths": ["apps/{{ labels.service }}/staging/**"], "soak": "5m" }, {}]))]);
    w.deploy("checkout", "prod", "1.5.0", 10);
    w.deploy("checkout", "staging", "1.6.0-rc1", 5);
    let report = w.engine().handle(&w.alert("checkout", "prod", "fp1"), &Options::default()).unwrap();
    let Outcome::RolledBack { rollback } = &report.outcome else { panic!("{:?}", report.outcome) };
    assert_eq!(rollback.phase, None);
    assert!(
        report.decision.notes.iter().any(|n| n.contains("outside the target's paths")),
        "{:?}",
        report.decision.notes
    );
    assert!(w.show("main", &path("checkout", "staging")).contains("1.6.0-rc1"), "staging untouched");
    assert!(w.show("main", &path("checkout", "prod")).contains("checkout:1.4.2"));
}

#[test]
fn a_later_phase_in_someone_elses_commit_pins_nothing() {
    let (w, mut engine, id) = phase_one(&[]);
    // Phase 1's trailers, copied into a readme change as if it were phase 2/2.
    let copied = w.message("main").replace("Rollback-Phase: 1/2", "Rollback-Phase: 2/2");
    w.seed.commit(&copied, &[("README.md", Some("z\n"))], "someone", w.ago(0)).unwrap();
    // Just after it, it might be another replica's phase whose tag is on its way: it waits.
    let said = engine.continue_rollback(&id, &Actor::cli("alice")).unwrap();
    assert!(said.contains("already followed up"), "{said}");
    // Minutes later, without rollbackd's tag, it is a look-alike: the rollback goes on.
    w.clock.advance(SignedDuration::from_mins(5));
    let said = engine.continue_rollback(&id, &Actor::cli("alice")).unwrap();
    assert!(said.contains("phase 2/2 pushed"), "{said}");
    assert_eq!(version(&w, "main", &path("checkout", "prod")), "1.4.2");
}

#[test]
fn a_halt_marker_in_someone_elses_commit_halts_nothing() {
    let (w, mut engine, id) = phase_one(&[]);
    let marker = format!("Update readme\n\nRollback-Halted: {id}\nRollback-Halted-Target: checkout/prod\n");
    w.seed.commit(&marker, &[("README.md", Some("y\n"))], "someone", w.ago(0)).unwrap();
    // It stops the rollback going on (a halt being written looks the same until its tag
    // arrives), but ends nothing quietly: status says so, and abort ends it properly.
    let said = engine.continue_rollback(&id, &Actor::cli("alice")).unwrap();
    assert!(said.contains("a halt marker for it is on the branch"), "{said}");
    let status = engine.status(None).unwrap();
    assert!(
        status.contains(&format!("{id} checkout/prod phase 1/2")) && status.contains("without rollbackd's tag"),
        "{status}"
    );
    let ended = engine.abort_rollback(&id, &Actor::cli("alice"), None).unwrap();
    assert!(ended.contains("halted after phase 1/2"), "{ended}");
    assert!(branch_exists(&w, &format!("rollback/checkout/prod/{id}")), "the rest is proposed");
}

#[test]
fn abort_ends_a_rollback_that_cannot_go_on_and_frees_its_target() {
    let w = world(&[]);
    let id = first_phase(&w, &mut w.engine()).id.to_string();
    // Its policy is renamed: nothing to plan the rest from.
    w.set_policies(&[PolicySpec::new("renamed").target(
        "{{ labels.service }}",
        "{{ labels.env }}",
        &["apps/{{ labels.service }}/{{ labels.env }}/**"],
    )]);
    let mut engine = w.engine();
    let refused = engine.continue_rollback(&id, &Actor::cli("alice")).unwrap();
    assert!(refused.starts_with("refused") && refused.contains(&format!("`abort {id}` ends it")), "{refused}");
    let ended = engine.abort_rollback(&id, &Actor::cli("alice"), None).unwrap();
    assert!(ended.contains("ended after phase 1/2") && ended.contains("nothing is proposed"), "{ended}");
    assert!(w.message("main").contains(&format!("Rollback-Halted: {id}")));
    assert!(!branch_exists(&w, &format!("rollback/checkout/prod/{id}")));
    // The target is free: the next alert rolls back what the phase left.
    w.clock.advance(SignedDuration::from_mins(1));
    let next = engine.handle(&newer_alert(&w, "checkout", "fp8", 0), &Options::default()).unwrap();
    assert!(matches!(next.outcome, Outcome::RolledBack { .. }), "{:?}", next.outcome);
    assert_eq!(version(&w, "main", &path("checkout", "prod")), "1.4.2");
}

/// Two replicas told at the same moment, one `continue`, the other `abort`: exactly one
/// happens, whatever the timing (both compare-and-swap on the branch).
#[test]
fn continue_and_abort_racing_on_two_replicas_never_both_happen() {
    for round in 0..5 {
        let w = world(&[]);
        let id = first_phase(&w, &mut w.engine()).id.to_string();
        let (mut a, mut b) = (w.replica(&format!("a{round}")), w.replica(&format!("b{round}")));
        let barrier = std::sync::Barrier::new(2);
        let (went_on, halted) = std::thread::scope(|s| {
            let (id_a, id_b, barrier) = (&id, &id, &barrier);
            let one = s.spawn(move || {
                barrier.wait();
                a.continue_rollback(id_a, &Actor::cli("alice")).unwrap()
            });
            let two = s.spawn(move || {
                barrier.wait();
                b.abort_rollback(id_b, &Actor::cli("bob"), None).unwrap()
            });
            (one.join().unwrap(), two.join().unwrap())
        });
        let pushed = w.trailers("main", "Rollback-Phase") == ["2/2"];
        let marker = w.message("main").contains(&format!("Rollback-Halted: {id}"));
        assert!(pushed != marker, "round {round}: exactly one of them: {went_on} / {halted}");
        assert_eq!(branch_exists(&w, &format!("rollback/checkout/prod/{id}")), marker, "round {round}");
        assert_eq!(version(&w, "main", &path("checkout", "prod")), if pushed { "1.4.2" } else { "1.5.0" });
    }
}

#[test]
fn a_dry_run_says_what_the_push_then_does_when_the_first_phase_has_nothing_to_change() {
    // The bad deploy left the canary alone: phase 1 has nothing to change.
    let w = World::with(&[PolicySpec::new("prod")
        .target("{{ labels.service }}", "{{ labels.env }}", &["apps/{{ labels.service }}/{{ labels.env }}/**"])
        .set(
            "target.phases",
            json!([{ "paths": ["apps/{{ labels.service }}/{{ labels.env }}/canary/**"], "soak": "5m" }, {}]),
        )]);
    w.write_config(&ConfigSpec::new().set("git.fetch_freshness", "0s"));
    w.add_checkout_canary();
    w.deploy("checkout", "prod", "1.5.0", 10);
    let before = w.head();
    let alert = w.alert("checkout", "prod", "fp1");

    // `simulate`, from the CLI, and a dry run through the engine.
    let file = w.root().join("alert.json");
    let started = alert.started_at.unwrap();
    std::fs::write(
        &file,
        json!({ "version": "4", "status": "firing", "alerts": [{ "status": "firing",
            "labels": { "service": "checkout", "env": "prod" }, "annotations": {},
            "startsAt": started.to_string(), "fingerprint": "fp1" }] })
        .to_string(),
    )
    .unwrap();
    let out = w.run_cli(&["simulate", "--event", file.to_str().unwrap(), "--at", &w.now().to_string(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let simulated: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let simulated = &simulated[0];
    assert_eq!((simulated["outcome"].as_str(), simulated["would"].as_str()), (Some("dry_run"), Some("direct")));
    let mut engine = w.engine();
    let dry = engine.handle(&alert, &Options { dry_run: true, ..Options::default() }).unwrap();
    assert!(matches!(dry.outcome, Outcome::DryRun { .. }), "{:?}", dry.outcome);
    let plan = dry.plan.as_ref().unwrap();
    let (strategy, phase) = (plan.strategy.to_string(), plan.phase.map(|p| p.to_string()).unwrap_or_default());
    let text = dry.explain();
    assert!(text.contains(&format!("strategy {strategy}")) && text.contains(&format!("phase {phase}\n")), "{text}");
    assert!(text.contains("the phases before 2/2 change nothing here: skipped"), "{text}");
    assert_eq!(simulated["plan"]["strategy"], strategy.as_str(), "{simulated}");
    assert_eq!(simulated["plan"]["phase"], json!(plan.phase), "{simulated}");
    assert_eq!(w.head(), before, "a dry run writes nothing");

    // The push: one commit on the origin, exactly as said.
    let Outcome::RolledBack { .. } = engine.handle(&alert, &Options::default()).unwrap().outcome else {
        panic!("not pushed")
    };
    assert_eq!(w.git(&["rev-list", "--count", &format!("{before}..main")]).trim(), "1");
    assert_eq!(w.trailers("main", "Rollback-Strategy"), [strategy.as_str()]);
    assert_eq!(w.trailers("main", "Rollback-Phase"), [phase.as_str()]);
    assert_eq!((strategy.as_str(), phase.as_str()), ("restore", "2/2"));
    assert_eq!(
        (version(&w, "main", CANARY), version(&w, "main", &path("checkout", "prod"))),
        ("1.4.2".into(), "1.4.2".into())
    );
}
