//! Planning and writing rollbacks against real repositories: a bare origin and the service's
//! mirror. Every assertion reads the origin with the git CLI.

use crate::common::*;
use rollbackd::Delivery;
use rollbackd::{KnownGoodSource, Strategy};
use rollbackd::{Options, Outcome};

fn rolled_back(outcome: &Outcome) -> &rollbackd::Rollback {
    match outcome {
        Outcome::RolledBack { rollback } => rollback,
        other => panic!("expected a rollback, got {other:?}"),
    }
}

#[test]
fn single_bad_commit_is_reverted() {
    let w = World::new();
    let bad = w.deploy("checkout", "prod", "1.5.0", 10);
    let report = w.engine().handle(&w.alert("checkout", "prod", "fp1"), &Options::default()).unwrap();
    let rb = rolled_back(&report.outcome);

    assert_eq!(w.head(), rb.commit.0, "origin main is the rollback commit");
    assert_eq!(w.git(&["rev-parse", "main^"]), bad.0, "parent is the bad head");
    assert_eq!(w.show("main", &path("checkout", "prod")), w.show(&w.good.0, &path("checkout", "prod")).as_str());
    let msg = w.message("main");
    assert!(msg.contains(&format!("This reverts commit {}.", bad.0)), "{msg}");
    assert_eq!(w.trailers("main", "Rollback-Strategy"), ["revert"]);
    assert_eq!(w.trailers("main", "Rollback-Of"), [bad.0.as_str()]);
    assert_eq!(w.trailers("main", "Rollback-To"), [w.good.0.as_str()]);
    assert_eq!(w.trailers("main", "Rollback-Id"), [rb.id.to_string()]);
    assert_eq!(w.trailers("main", "Rollback-Service"), ["checkout"]);
    assert_eq!(w.trailers("main", "Rollback-Env"), ["prod"]);
    assert_eq!(w.trailers("main", "Rollback-Policy"), ["test-policy"]);
    assert_eq!(w.trailers("main", "Rollback-Actor"), ["alertmanager"]);
    assert_eq!(w.trailers("main", "Rollback-Reason"), ["5xx above 5%"]);
    assert!(w.trailers("main", "Rollback-Trigger")[0].starts_with("alertmanager:fp1@"));
    let tag = rb.tag.clone().unwrap();
    assert_eq!(tag, format!("rollback/checkout/prod/{}", rb.id));
    assert_eq!(w.git(&["cat-file", "-t", &format!("refs/tags/{tag}")]), "tag", "annotated");
    assert_eq!(w.git(&["rev-parse", &format!("{tag}^{{commit}}")]), rb.commit.0);
    let plan = report.plan.unwrap();
    assert_eq!(plan.artifacts.len(), 1);
    assert_eq!(plan.artifacts[0].old.as_deref(), Some("registry.example.com/checkout:1.5.0"));
    assert_eq!(plan.artifacts[0].new.as_deref(), Some("registry.example.com/checkout:1.4.2"));
    // The mirror follows the origin.
    assert_eq!(crate::common::git_in(&w.mirror(), &["rev-parse", "refs/heads/main"]), rb.commit.0);
}

#[test]
fn three_bad_commits_are_restored() {
    let w = World::new();
    let b1 = w.deploy("checkout", "prod", "1.5.0", 30);
    let b2 = w.deploy("checkout", "prod", "1.5.1", 20);
    let b3 = w.deploy("checkout", "prod", "1.5.2", 10);
    w.tag_known_good("checkout", "prod", &w.good, "20261121T100000Z");
    let report = w.engine().handle(&w.alert("checkout", "prod", "fp"), &Options::default()).unwrap();
    rolled_back(&report.outcome);
    assert_eq!(w.trailers("main", "Rollback-Strategy"), ["restore"]);
    assert_eq!(w.trailers("main", "Rollback-Of"), [b3.0, b2.0, b1.0], "newest first");
    assert_eq!(w.show("main", &path("checkout", "prod")), w.show(&w.good.0, &path("checkout", "prod")));
}

#[test]
fn known_good_tag_is_honoured_over_the_last_change() {
    let w = World::new();
    let older = w.git(&["rev-parse", &format!("{}^", w.good.0)]);
    w.tag_known_good("checkout", "prod", &rollbackd::Sha(older.clone()), "20261120T000000Z");
    w.deploy("checkout", "prod", "1.5.0", 10);
    let report = w.engine().handle(&w.alert("checkout", "prod", "fp"), &Options::default()).unwrap();
    let plan = report.plan.clone().unwrap();
    assert_eq!(plan.known_good.sha.0, older);
    assert!(
        matches!(plan.known_good.source, KnownGoodSource::Tag { ref name } if name == "known-good/checkout/prod/20261120T000000Z")
    );
    assert_eq!(plan.bad_commits.len(), 2);
    assert!(w.show("main", &path("checkout", "prod")).contains("checkout:1.4.0"));
}

#[test]
fn a_known_good_tag_outside_the_branch_history_is_ignored() {
    let w = World::new();
    // A tag on a commit that never reached main.
    let bad = w.deploy("checkout", "prod", "1.5.0", 10);
    let orphan_tree = w.seed.repo().treebuilder(None).unwrap().write().unwrap();
    let tree = w.seed.repo().find_tree(orphan_tree).unwrap();
    let sig = git2::Signature::now("x", "x@x").unwrap();
    let orphan = w.seed.repo().commit(None, &sig, &sig, "orphan", &tree, &[]).unwrap();
    w.tag_known_good("checkout", "prod", &rollbackd::Sha(orphan.to_string()), "20261121T110000Z");
    let report = w.engine().handle(&w.alert("checkout", "prod", "fp"), &Options::default()).unwrap();
    let plan = report.plan.unwrap();
    assert_eq!(plan.bad_commits[0].sha, bad);
    assert!(matches!(plan.known_good.source, KnownGoodSource::ParentOfLastChange { .. }));
}

#[test]
fn to_overrides_known_good() {
    let w = World::new();
    let first = w.git(&["rev-list", "--max-parents=0", "main"]);
    w.deploy("checkout", "prod", "1.5.0", 10);
    let report = w
        .engine()
        .handle(&w.request("checkout", "prod", "r1"), &Options { to: Some(first.clone()), ..Options::default() })
        .unwrap();
    rolled_back(&report.outcome);
    assert_eq!(w.trailers("main", "Rollback-To"), [first.as_str()]);
    assert!(w.show("main", &path("checkout", "prod")).contains("checkout:1.4.0"));

    let err = w
        .engine()
        .handle(&w.request("checkout", "prod", "r2"), &Options { to: Some("no-such-rev".into()), ..Options::default() })
        .unwrap_err();
    assert_eq!(err.exit_code(), 1, "{err}");
    assert!(err.to_string().contains("no-such-rev"), "{err}");
}

#[test]
fn other_paths_are_untouched_byte_for_byte() {
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 40);
    w.deploy("cart", "prod", "2.1.0", 30);
    w.commit_files("Bump shared", &[("shared/versions.yaml", Some("checkout: 1.5.0\ncart: 2.1.0\n"))], 25);
    w.deploy("checkout", "prod", "1.5.1", 20);
    w.deploy("checkout", "staging", "1.6.0", 10);
    let before = w.head();
    rolled_back(&w.engine().handle(&w.alert("checkout", "prod", "fp"), &Options::default()).unwrap().outcome);
    let listing = |rev: &str| -> Vec<String> {
        w.git(&["ls-tree", "-r", "--full-tree", rev])
            .lines()
            .filter(|l| !l.contains("apps/checkout/prod/"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(listing("main"), listing(&before));
    assert_ne!(w.show("main", &path("checkout", "prod")), w.show(&before, &path("checkout", "prod")));
}

#[test]
fn revert_conflict_falls_back_to_restore() {
    let w = World::with(&[PolicySpec::new("test-policy").strategy(Strategy::Revert)]);
    let v = manifest("checkout", "prod", &image("checkout", "1.5.0"));
    let bad = w.commit_files(
        "Deploy checkout 1.5.0 everywhere",
        &[(&path("checkout", "prod"), Some(&v)), ("shared/versions.yaml", Some("checkout: 1.5.0\ncart: 2.0.0\n"))],
        20,
    );
    // A later change to the same line outside the target paths makes the revert conflict.
    w.commit_files("Pin checkout", &[("shared/versions.yaml", Some("checkout: 1.5.0-hotfix\ncart: 2.0.0\n"))], 10);
    let report = w.engine().handle(&w.alert("checkout", "prod", "fp"), &Options::default()).unwrap();
    rolled_back(&report.outcome);
    let plan = report.plan.unwrap();
    assert_eq!(plan.requested_strategy, Strategy::Revert);
    assert_eq!(plan.strategy, Strategy::Restore);
    let note = plan.strategy_note.unwrap();
    assert!(note.contains("conflict") && note.contains("shared/versions.yaml"), "{note}");
    assert_eq!(w.trailers("main", "Rollback-Of"), [bad.0]);
    assert_eq!(w.show("main", "shared/versions.yaml"), "checkout: 1.5.0-hotfix\ncart: 2.0.0");
    assert!(w.show("main", &path("checkout", "prod")).contains("checkout:1.4.2"));
}

#[test]
fn auto_restores_when_the_bad_commit_touches_other_paths() {
    let w = World::new();
    let v = manifest("checkout", "prod", &image("checkout", "1.5.0"));
    w.commit_files("Deploy and bump", &[(&path("checkout", "prod"), Some(&v)), ("README.md", Some("changed\n"))], 10);
    let report = w.engine().handle(&w.alert("checkout", "prod", "fp"), &Options::default()).unwrap();
    let plan = report.plan.unwrap();
    assert_eq!(plan.strategy, Strategy::Restore);
    assert!(plan.strategy_note.unwrap().contains("outside the target"));
    assert_eq!(w.show("main", "README.md"), "changed", "the other path keeps the change");
}

#[test]
fn branch_moved_between_fetch_and_push_is_retried() {
    let w = World::new();
    // A long freshness window: the second event reuses the first fetch, so the origin moves
    // behind the engine's back exactly as it would between fetch and push.
    w.write_config(&ConfigSpec::new().set("git.fetch_freshness", "1h"));
    w.deploy("checkout", "prod", "1.5.0", 10);
    let mut engine = w.engine();
    let dry =
        engine.handle(&w.alert("checkout", "prod", "fp0"), &Options { dry_run: true, ..Options::default() }).unwrap();
    assert!(matches!(dry.outcome, Outcome::DryRun { .. }));
    let unrelated = w.deploy("cart", "staging", "2.1.0", 1);

    let report = engine.handle(&w.alert("checkout", "prod", "fp1"), &Options::default()).unwrap();
    let rb = rolled_back(&report.outcome);
    assert_eq!(rb.push_retries, 1);
    assert_eq!(w.git(&["rev-parse", "main^"]), unrelated.0, "planned again on top of the new head");
    assert!(w.show("main", &path("cart", "staging")).contains("2.1.0"), "the other change survives");
    assert!(w.show("main", &path("checkout", "prod")).contains("1.4.2"));
}

#[test]
fn the_same_trigger_twice_makes_one_commit_even_after_a_restart() {
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    let alert = w.alert("checkout", "prod", "fp");
    let first = w.engine().handle(&alert, &Options::default()).unwrap();
    let id = rolled_back(&first.outcome).id.clone();
    let commits = w.count_commits();

    // A new engine over the same data dir is a restarted process.
    for mut engine in [w.engine().into_inner(), w.replica("other-replica")] {
        let again = engine.handle(&alert, &Options::default()).unwrap();
        match again.outcome {
            Outcome::Duplicate { rollback_id, .. } => assert_eq!(rollback_id, id),
            other => panic!("expected duplicate, got {other:?}"),
        }
    }
    assert_eq!(w.count_commits(), commits);
}

#[test]
fn two_replicas_racing_on_one_alert_make_one_commit() {
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    let alert = w.alert("checkout", "prod", "fp-race");
    let before = w.count_commits();
    let barrier = std::sync::Barrier::new(2);
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let handles: Vec<_> = ["replica-a", "replica-b"]
            .into_iter()
            .map(|name| {
                let mut engine = w.replica(name);
                let (alert, barrier) = (&alert, &barrier);
                s.spawn(move || {
                    engine.repo().fetch_now().unwrap();
                    barrier.wait();
                    engine.handle(alert, &Options::default()).unwrap().outcome
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(w.count_commits(), before + 1, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| matches!(o, Outcome::RolledBack { .. })).count(), 1, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| matches!(o, Outcome::Duplicate { .. })).count(), 1, "{outcomes:?}");
}

#[test]
fn nothing_to_roll_back_is_noop() {
    let w = World::new();
    w.tag_known_good("checkout", "prod", &w.good, "20261121T100000Z");
    // Head is known-good itself.
    let report = w.engine().handle(&w.alert("checkout", "prod", "fp"), &Options::default()).unwrap();
    assert!(matches!(report.outcome, Outcome::Noop { .. }), "{:?}", report.outcome);

    // A change that touched the paths and was undone by hand leaves nothing to do either.
    w.deploy("checkout", "prod", "1.5.0", 20);
    w.deploy("checkout", "prod", "1.4.2", 10);
    let before = w.head();
    let report = w.engine().handle(&w.alert("checkout", "prod", "fp2"), &Options::default()).unwrap();
    assert!(matches!(report.outcome, Outcome::Noop { .. }), "{:?}", report.outcome);
    assert_eq!(w.head(), before);
}

#[test]
fn a_second_incident_after_a_rollback_is_a_duplicate_not_a_deeper_rollback() {
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    let first = w.engine().handle(&w.alert("checkout", "prod", "fp1"), &Options::default()).unwrap();
    let id = rolled_back(&first.outcome).id.clone();
    let head = w.head();
    let second = w.engine().handle(&w.alert("checkout", "prod", "fp2"), &Options::default()).unwrap();
    match second.outcome {
        Outcome::Duplicate { rollback_id, .. } => assert_eq!(rollback_id, id),
        other => panic!("{other:?}"),
    }
    assert_eq!(w.head(), head);
}

#[test]
fn a_new_bad_deploy_after_a_rollback_is_rolled_back_to_the_rollback_state() {
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 30);
    rolled_back(&w.engine().handle(&w.alert("checkout", "prod", "fp1"), &Options::default()).unwrap().outcome);
    w.clock.advance(jiff::SignedDuration::from_mins(1));
    let again = w.deploy("checkout", "prod", "1.6.0", 0);
    let report = w.engine().handle(&w.alert("checkout", "prod", "fp2"), &Options::default()).unwrap();
    rolled_back(&report.outcome);
    assert_eq!(w.trailers("main", "Rollback-Of"), [again.0]);
    assert!(w.show("main", &path("checkout", "prod")).contains("1.4.2"));
}

#[test]
fn proposals_go_to_a_branch_and_leave_main_alone() {
    let w = World::with(&[PolicySpec::new("test-policy").mode(Mode::PullRequest)]);
    w.deploy("checkout", "prod", "1.5.0", 10);
    let head = w.head();
    let report = w.engine().handle(&w.alert("checkout", "prod", "fp"), &Options::default()).unwrap();
    let rb = match &report.outcome {
        Outcome::Proposed { rollback } => rollback.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(rb.delivery, Delivery::Proposal);
    assert_eq!(w.head(), head);
    assert_eq!(rb.branch, format!("rollback/checkout/prod/{}", rb.id));
    assert_eq!(w.git(&["rev-parse", &format!("refs/heads/{}", rb.branch)]), rb.commit.0);
    assert_eq!(w.git(&["rev-parse", &format!("{}^", rb.commit.0)]), head);
    // The repeat notification finds the open proposal.
    let again = w.engine().handle(&w.alert("checkout", "prod", "fp"), &Options::default()).unwrap();
    assert!(matches!(again.outcome, Outcome::Duplicate { .. }), "{:?}", again.outcome);
}

#[test]
fn dry_run_leaves_origin_and_mirror_unchanged() {
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    let mut engine = w.engine();
    engine.repo().fetch_now().unwrap();
    let (origin, mirror) = (w.refs_of(&w.origin), w.refs_of(&w.mirror()));
    let objects = w.git(&["count-objects", "-v"]);
    let report =
        engine.handle(&w.request("checkout", "prod", "dry"), &Options { dry_run: true, ..Options::default() }).unwrap();
    assert!(matches!(report.outcome, Outcome::DryRun { would: Delivery::Direct, .. }), "{:?}", report.outcome);
    assert!(report.plan.is_some());
    assert_eq!(w.refs_of(&w.origin), origin);
    assert_eq!(w.refs_of(&w.mirror()), mirror);
    assert_eq!(w.git(&["count-objects", "-v"]), objects);
}

#[test]
fn a_lock_file_left_by_a_crash_does_not_block_the_next_rollback() {
    let w = World::new();
    let mut engine = w.engine();
    engine.repo().fetch_now().unwrap();
    drop(engine);
    w.deploy("checkout", "prod", "1.5.0", 10);
    // What a kill -9 during a ref update leaves behind.
    std::fs::write(w.mirror().join("refs/heads/main.lock"), "").unwrap();
    let report = w.engine().handle(&w.alert("checkout", "prod", "fp"), &Options::default()).unwrap();
    rolled_back(&report.outcome);
    assert!(!w.mirror().join("refs/heads/main.lock").exists());
}

#[test]
fn before_any_fetch_the_error_says_so_not_that_the_branch_is_missing() {
    let w = World::new();
    std::fs::rename(&w.origin, w.root().join("origin-away.git")).unwrap();
    let mut engine = w.engine();
    let err = engine.audit_records().unwrap_err();
    assert!(err.to_string().contains("has not been fetched yet"), "{err}");
    assert!(err.is_transient(), "the sender should retry: {err}");
    let err = engine.history().unwrap_err();
    assert!(err.to_string().contains("cannot reach the config repo"), "the fetch's own error: {err}");
}

#[test]
fn a_rollback_says_whether_it_restores_an_exact_earlier_state() {
    let w = World::with(&[PolicySpec::new("prod").set("action.exact", true)]);
    w.deploy("checkout", "prod", "1.5.0", 10);
    let r = w.engine().handle(&w.alert("checkout", "prod", "fp"), &Options::default()).unwrap();
    let plan = r.plan.expect("a plan");
    assert!(plan.exact, "{plan:?}");
    assert!(!w.message("main").contains("three-way"), "{}", w.message("main"));
    // What a revert would leave is compared with known-good, file by file.
    assert_eq!(w.show("main", &path("checkout", "prod")), w.show(&plan.known_good.sha.0, &path("checkout", "prod")));
}
