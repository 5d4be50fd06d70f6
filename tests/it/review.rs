//! Proposals reviewed by people (local forge), freezes, and who may ask: against real repos.

use crate::common::*;
use jiff::SignedDuration;
use rollbackd::Actor;
use rollbackd::{Directory, Principal};
use rollbackd::{Event, Options, Outcome, ReviewOutcome, Source};

/// Prod through reviewed proposals, with a cooldown that denies and chat roles.
fn prod(approvals: u32) -> PolicySpec {
    PolicySpec::new("prod")
        .prod_only()
        .mode(Mode::PullRequest)
        .guard("cooldown", "30m")
        .on_violation(OnViolation::Deny)
        .chatops("allow", &["slack:U1", "slack-group:SRE"])
        .chatops("approve", &["slack:U1", "slack:U2", "slack:U3", "github-team:acme/sre"])
        .chatops("emergency", &["slack:U9"])
        .set("chatops.two_person", true)
        .review("approvals", approvals)
}

fn world(approvals: u32) -> World {
    World::with(&[prod(approvals)])
}

fn chat(w: &World, who: &str, id: &str) -> (Event, Options) {
    let mut e = Event::request(Source::Chatops, "checkout", "prod", who, Some("from chat"), w.now(), id);
    e.labels.insert("chat".into(), "slack".into());
    let dir = Directory { slack_groups: [("SRE".into(), vec!["U4".into()])].into(), ..Directory::default() };
    let opts = Options { principal: Some(Principal::new(who).with_groups(&dir)), ..Options::default() };
    (e, opts)
}

fn proposed(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Proposed { rollback } => rollback.id.to_string(),
        other => panic!("expected a proposal, got {other:?}"),
    }
}

#[test]
fn approve_merges_tags_and_deletes_the_branch() {
    let w = world(1);
    w.deploy("checkout", "prod", "1.5.0", 10);
    let id = proposed(&w.engine().handle(&w.alert("checkout", "prod", "fp"), &Options::default()).unwrap().outcome);
    let branch = format!("refs/heads/rollback/checkout/prod/{id}");
    let proposal = w.git(&["rev-parse", &branch]);

    let out = w.engine().approve(&id, &Actor::cli("bob")).unwrap();
    let rb = match out {
        ReviewOutcome::Merged { rollback } => rollback,
        other => panic!("{other:?}"),
    };
    assert_eq!(w.head(), proposal, "fast-forwarded: the reviewed commit is what lands");
    assert_eq!(rb.commit.0, proposal);
    assert_eq!(w.git(&["rev-parse", &format!("rollback/checkout/prod/{id}^{{commit}}")]), proposal);
    assert!(w.git(&["for-each-ref", &branch]).is_empty(), "branch deleted");
    assert!(w.git(&["notes", "--ref=rollbackd-approvals", "show", &proposal]).contains("Approved-By: cli:bob"));
    assert!(w.show("main", &path("checkout", "prod")).contains("1.4.2"));
    // Who approved and merged is read back from the tag by history and status.
    let out = w.run_cli(&["history", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rollbacks"][0]["approved_by"], json!(["cli:bob"]), "{v}");
    assert_eq!(v["rollbacks"][0]["merged_by"], "cli:bob", "{v}");
    let text = String::from_utf8_lossy(&w.run_cli(&["history"]).stdout).into_owned();
    assert!(text.contains("(approved by cli:bob; merged by cli:bob)"), "{text}");
    assert!(w.engine().status(None).unwrap().contains("(approved by cli:bob; merged by cli:bob)"));
}

#[test]
fn approve_after_the_branch_moved_replays_the_rollback() {
    let w = world(1);
    w.deploy("checkout", "prod", "1.5.0", 10);
    let id = proposed(&w.engine().handle(&w.alert("checkout", "prod", "fp"), &Options::default()).unwrap().outcome);
    let other = w.deploy("cart", "prod", "2.1.0", 1);
    assert!(matches!(w.engine().approve(&id, &Actor::cli("bob")).unwrap(), ReviewOutcome::Merged { .. }));
    assert_eq!(w.git(&["rev-parse", "main^"]), other.0);
    assert!(w.show("main", &path("cart", "prod")).contains("2.1.0"));
    assert!(w.show("main", &path("checkout", "prod")).contains("1.4.2"));
    assert_eq!(w.trailers("main", "Rollback-Id"), [id.as_str()]);
}

#[test]
fn chat_rules_two_person_and_approval_counts() {
    let w = world(2);
    w.deploy("checkout", "prod", "1.5.0", 10);
    // Not allowed to ask.
    let (e, o) = chat(&w, "slack:U7", "t0");
    match w.engine().handle(&e, &o).unwrap().outcome {
        Outcome::Denied { reason } => {
            assert!(reason.contains("slack:U7") && reason.contains("chatops.allow"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // A group member may ask.
    let (e, o) = chat(&w, "slack:U4", "t-group");
    assert!(matches!(w.engine().handle(&e, &o).unwrap().outcome, Outcome::Proposed { .. }));
    let (e, o) = chat(&w, "slack:U1", "t1");
    // U4's proposal already covers the bad change: U1's own request is a duplicate of it.
    assert!(matches!(w.engine().handle(&e, &o).unwrap().outcome, Outcome::Duplicate { .. }));

    let id = w.git(&["for-each-ref", "--format=%(refname:lstrip=5)", "refs/heads/rollback/checkout/prod/"]);
    let p = |who: &str| Principal::new(who);
    match w.engine().approve(&id, &Actor::Person(p("slack:U7"))).unwrap() {
        ReviewOutcome::Refused { reason } => assert!(reason.contains("chatops.approve"), "{reason}"),
        other => panic!("{other:?}"),
    }
    match w.engine().approve(&id, &Actor::Person(p("slack:U4"))).unwrap() {
        ReviewOutcome::Refused { reason } => assert!(reason.contains("chatops.approve"), "{reason}"),
        other => panic!("{other:?}"),
    }
    match w.engine().approve(&id, &Actor::Person(p("slack:U1"))).unwrap() {
        ReviewOutcome::Approved { approvals: 1, needed: 2, .. } => {}
        other => panic!("{other:?}"),
    }
    let head = w.head();
    match w.engine().approve(&id, &Actor::Person(p("slack:U1"))).unwrap() {
        ReviewOutcome::Approved { approvals: 1, needed: 2, .. } => {}
        other => panic!("the same person twice counts once: {other:?}"),
    }
    assert_eq!(w.head(), head);
    assert!(matches!(w.engine().approve(&id, &Actor::Person(p("slack:U2"))).unwrap(), ReviewOutcome::Merged { .. }));
}

#[test]
fn two_person_rule_refuses_self_approval() {
    let w = world(1);
    w.deploy("checkout", "prod", "1.5.0", 10);
    let (e, o) = chat(&w, "slack:U1", "self");
    let id = proposed(&w.engine().handle(&e, &o).unwrap().outcome);
    match w.engine().approve(&id, &Actor::Person(Principal::new("slack:U1"))).unwrap() {
        ReviewOutcome::Refused { reason } => assert!(reason.contains("two-person rule"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        w.engine().approve(&id, &Actor::Person(Principal::new("slack:U2"))).unwrap(),
        ReviewOutcome::Merged { .. }
    ));
}

#[test]
fn cancel_deletes_the_branch_keeps_a_tag_and_the_incident_stays_handled() {
    let w = world(1);
    w.deploy("checkout", "prod", "1.5.0", 10);
    let alert = w.alert("checkout", "prod", "fp");
    let id = proposed(&w.engine().handle(&alert, &Options::default()).unwrap().outcome);
    match w.engine().cancel(&id, &Actor::Person(Principal::new("slack:U8"))).unwrap() {
        ReviewOutcome::Refused { reason } => assert!(reason.contains("may not cancel"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let out = w.engine().cancel(&id, &Actor::Person(Principal::new("slack:U2"))).unwrap();
    assert!(matches!(out, ReviewOutcome::Cancelled { .. }), "{out:?}");
    assert!(w.git(&["for-each-ref", "refs/heads/rollback/"]).is_empty());
    assert_eq!(w.git(&["tag", "-l", "cancelled/*"]), format!("cancelled/checkout/prod/{id}"));
    let again = w.engine().handle(&alert, &Options::default()).unwrap();
    assert!(matches!(again.outcome, Outcome::Duplicate { .. }), "{:?}", again.outcome);
    let out = w.run_cli(&["history", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rollbacks"][0]["cancelled"], true);
    assert_eq!(v["rollbacks"][0]["cancelled_by"], "slack:U2", "{v}");
}

#[test]
fn freeze_turns_automatic_rollbacks_into_proposals_but_not_requests() {
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    let msg = w
        .engine()
        .freeze("checkout", Some("prod"), Some("2h".parse().unwrap()), Some("load test"), &Actor::cli("ops"))
        .unwrap();
    assert!(msg.contains("frozen until"), "{msg}");
    // Stored in git: a new engine (another replica, a restart) sees it.
    assert!(w.git(&["show", "refs/rollbackd/state/freezes:freezes.json"]).contains("load test"));
    let status = w.engine().status(None).unwrap();
    assert!(status.contains("checkout in prod frozen until") && status.contains("load test"), "{status}");

    let report = w.engine().handle(&w.alert("checkout", "prod", "fp"), &Options::default()).unwrap();
    assert!(matches!(report.outcome, Outcome::Proposed { .. }), "{:?}", report.outcome);
    assert!(report.decision.notes.iter().any(|n| n.contains("frozen")), "{:?}", report.decision.notes);

    let report = w.engine().handle(&w.request("checkout", "prod", "human"), &Options::default()).unwrap();
    assert!(matches!(report.outcome, Outcome::RolledBack { .. }), "{:?}", report.outcome);

    // Other services are not frozen; expired freezes do nothing.
    w.deploy("cart", "prod", "2.1.0", 5);
    let report = w.engine().handle(&w.alert("cart", "prod", "fp-cart"), &Options::default()).unwrap();
    assert!(matches!(report.outcome, Outcome::RolledBack { .. }), "{:?}", report.outcome);
    assert_eq!(
        w.engine().unfreeze("checkout", None, &Actor::cli("ops"), None).unwrap(),
        "checkout unfrozen by cli:ops"
    );
    assert!(w.engine().status(None).unwrap().contains("freezes: none"));
}

#[test]
fn emergency_breaks_glass_and_is_recorded() {
    let w = world(1);
    w.deploy("checkout", "prod", "1.5.0", 40);
    // A rollback 5 minutes ago puts checkout/prod in its cooldown.
    let id = proposed(&w.engine().handle(&w.alert("checkout", "prod", "fp"), &Options::default()).unwrap().outcome);
    assert!(matches!(w.engine().approve(&id, &Actor::cli("bob")).unwrap(), ReviewOutcome::Merged { .. }));
    w.clock.advance(SignedDuration::from_mins(5));
    w.deploy("checkout", "prod", "1.6.0", 0);

    let (e, mut o) = chat(&w, "slack:U1", "e1");
    o.emergency = true;
    match w.engine().handle(&e, &o).unwrap().outcome {
        Outcome::Denied { reason } => assert!(reason.contains("chatops.emergency"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let (e, o) = chat(&w, "slack:U1", "e2");
    match w.engine().handle(&e, &o).unwrap().outcome {
        Outcome::Denied { reason } => assert!(reason.contains("cooldown"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let (e, mut o) = chat(&w, "slack:U9", "e3");
    o.emergency = true;
    o.principal = Some(Principal::new("slack:U9"));
    let mut e = e;
    e.labels.insert("actor".into(), "slack:U9".into());
    let report = w.engine().handle(&e, &o).unwrap();
    assert!(
        matches!(report.outcome, Outcome::RolledBack { .. }),
        "direct despite mode pull_request and the cooldown: {:?}",
        report.outcome
    );
    assert_eq!(w.trailers("main", "Rollback-Emergency"), ["true"]);
    assert_eq!(w.trailers("main", "Rollback-Actor"), ["slack:U9"]);
    assert!(w.engine().status(None).unwrap().contains("(EMERGENCY)"));
}

#[test]
fn auto_merge_merges_a_proposal_at_once() {
    let w = World::with(&[PolicySpec::new("test-policy").mode(Mode::PullRequest).review("auto_merge", true)]);
    w.deploy("checkout", "prod", "1.5.0", 10);
    let report = w.engine().handle(&w.alert("checkout", "prod", "fp"), &Options::default()).unwrap();
    let rb = match report.outcome {
        Outcome::RolledBack { rollback } => rollback,
        other => panic!("{other:?}"),
    };
    assert!(report.decision.notes.iter().any(|n| n.contains("auto_merge: merged")), "{:?}", report.decision.notes);
    assert_eq!(w.head(), rb.commit.0);
    assert!(w.git(&["for-each-ref", "refs/heads/rollback/"]).is_empty());
    assert_eq!(w.git(&["tag", "-l", "rollback/*"]).lines().count(), 1);
}

#[test]
fn the_kill_switch_from_chat_is_for_approvers_and_resume_lifts_it() {
    let w = world(1);
    w.deploy("checkout", "prod", "1.5.0", 10);
    let refused = chat_as(&w, Principal::new("slack:U7"), "/rollback pause for 1h because flapping");
    assert!(refused.text.contains("may not pause or resume"), "{}", refused.text);
    assert!(!refused.public, "a refusal goes to the asker alone");
    let paused = chat_as(&w, Principal::new("slack:U2"), "/rollback pause for 1h because flapping");
    assert!(
        paused.public && paused.text.contains("paused until") && paused.text.contains("flapping"),
        "{}",
        paused.text
    );
    // Automatic rollbacks become proposals (the default `pause.automatic: propose`).
    let report = w.engine().handle(&w.alert("checkout", "prod", "p1"), &Options::default()).unwrap();
    assert!(matches!(report.outcome, Outcome::Proposed { .. }), "{:?}", report.outcome);
    let resumed = chat_as(&w, Principal::new("slack:U2"), "/rollback resume");
    assert!(resumed.text.contains("resumed by slack:U2"), "{}", resumed.text);
}

/// Anyone who can push a branch can name it `rollback/...`. Without the `proposed/...` tag
/// rollbackd pushes with its proposals it is nobody's proposal: never approved, merged, listed,
/// or recorded as a rollback when its pull request is merged.
#[test]
fn a_rollback_named_branch_rollbackd_did_not_propose_is_nobodys_proposal() {
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    let head = w.head();
    let tree = w.git(&["rev-parse", "main^{tree}"]);
    let message = format!(
        "Roll back cart\n\nRollback-Id: rb-aaaaaaaaaaaa\nRollback-Service: cart\nRollback-Env: prod\nRollback-Of: {head}\nRollback-To: {}\nRollback-Policy: test-policy\nRollback-Trigger: cli:x\nRollback-Actor: cli:x\nRollback-Strategy: restore\n",
        w.good.0
    );
    let forged = w.git(&["commit-tree", &tree, "-p", &head, "-m", &message]);
    let branch = "rollback/cart/prod/rb-aaaaaaaaaaaa";
    w.git(&["update-ref", &format!("refs/heads/{branch}"), &forged]);
    let mut engine = w.engine();
    let refused = engine.approve("rb-aaaaaaaaaaaa", &Actor::cli("bob")).unwrap();
    assert!(matches!(refused, rollbackd::ReviewOutcome::Refused { .. }), "{refused:?}");
    assert!(!engine.status(None).unwrap().contains("rb-aaaaaaaaaaaa"), "not listed as a proposal");
    let said = engine.record_pr_closed(branch, Some(&forged), &forged, "mallory").unwrap();
    assert!(said.contains("not a proposal rollbackd made"), "{said}");
    assert!(w.git(&["tag", "-l", "rollback/*"]).is_empty(), "nothing tagged");
    assert_eq!(w.head(), head);
}
