//! The point of no return by content: a change the policy marks irreversible (a file it
//! changes, a trailer it carries) is never rolled back automatically once it has been on the
//! branch longer than `guards.point_of_no_return`, counted from when it reached the branch.

use std::path::Path;
use std::process::Command;

use crate::common::*;
use rollbackd::{Options, Outcome, Principal};

const MIGRATION: &str = "apps/checkout/prod/migrations/0042_add_column.sql";

fn policy() -> PolicySpec {
    PolicySpec::new("test-policy")
        .set("irreversible", json!({ "paths": ["**/migrations/**"], "trailers": ["Irreversible: true"] }))
        .guard("point_of_no_return", "30m")
        .on_violation(OnViolation::Propose)
        .chatops("allow", &["slack:UONCALL"])
        .chatops("emergency", &["slack:UONCALL"])
}

fn alert(w: &World) -> rollbackd::Report {
    w.engine().handle(&w.alert("checkout", "prod", "fp"), &Options::default()).unwrap()
}

/// A bad deploy that also adds a migration, `minutes_ago` on the branch.
fn deploy_with_migration(w: &World, minutes_ago: i64) {
    let text = manifest("checkout", "prod", &image("checkout", "1.5.0"));
    w.commit_files(
        "Deploy checkout 1.5.0 with its migration",
        &[(&path("checkout", "prod"), Some(&text)), (MIGRATION, Some("ALTER TABLE orders ADD COLUMN note text;\n"))],
        minutes_ago,
    );
}

/// git in a work tree cloned from `origin`, with author and committer dates set apart.
fn git_at(dir: &Path, authored: jiff::Timestamp, committed: jiff::Timestamp, args: &[&str]) {
    let out = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=dev", "-c", "user.email=dev@example.com"])
        .args(args)
        .env("GIT_AUTHOR_DATE", authored.to_string())
        .env("GIT_COMMITTER_DATE", committed.to_string())
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn work_clone(w: &World) -> std::path::PathBuf {
    let dir = w.root().join("work");
    let out = Command::new("git").arg("clone").arg(&w.origin).arg(&dir).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    dir
}

#[test]
fn an_irreversible_change_past_the_point_of_no_return_is_proposed_naming_the_file() {
    let w = World::with(&[policy()]);
    deploy_with_migration(&w, 45);
    let head = w.head();
    let report = alert(&w);
    let rollback = match &report.outcome {
        Outcome::Proposed { rollback } => rollback.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(w.head(), head, "nothing pushed to main");
    let guard = report.decision.guards.iter().find(|g| g.guard == "point_of_no_return").expect("the guard ran");
    assert!(!guard.passed);
    assert!(guard.detail.contains(MIGRATION) && guard.detail.contains("45m ago"), "{}", guard.detail);
    // The proposal says, in git, what it cannot undo.
    let message = w.message(&format!("refs/heads/{}", rollback.branch));
    assert!(message.contains("Irreversible by policy") && message.contains(MIGRATION), "{message}");

    // Denied outright when the policy says so.
    let deny = World::with(&[policy().on_violation(OnViolation::Deny)]);
    deploy_with_migration(&deny, 45);
    match alert(&deny).outcome {
        Outcome::Denied { reason } => {
            assert!(reason.contains("point_of_no_return") && reason.contains(MIGRATION), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn before_the_point_of_no_return_and_without_irreversible_content_the_rollback_is_pushed() {
    let young = World::with(&[policy()]);
    deploy_with_migration(&young, 10);
    let report = alert(&young);
    assert!(matches!(report.outcome, Outcome::RolledBack { .. }), "{:?}", report.outcome);
    let guard = report.decision.guards.iter().find(|g| g.guard == "point_of_no_return").unwrap();
    assert!(guard.passed, "{guard:?}");

    // Old, but nothing irreversible in it: the point of no return is about content.
    let plain = World::with(&[policy()]);
    plain.deploy("checkout", "prod", "1.5.0", 300);
    assert!(matches!(alert(&plain).outcome, Outcome::RolledBack { .. }));
}

/// The migration deploy, written `authored_ago` and pushed `landed_ago` minutes ago.
fn landed(authored_ago: i64, landed_ago: i64) -> World {
    let w = World::with(&[policy()]);
    let work = work_clone(&w);
    std::fs::create_dir_all(work.join("apps/checkout/prod/migrations")).unwrap();
    std::fs::write(work.join(MIGRATION), "ALTER TABLE orders ADD COLUMN note text;\n").unwrap();
    std::fs::write(work.join(path("checkout", "prod")), manifest("checkout", "prod", &image("checkout", "1.5.0")))
        .unwrap();
    let (authored, landed) = (w.ago(authored_ago), w.ago(landed_ago));
    git_at(&work, authored, landed, &["add", "-A"]);
    git_at(&work, authored, landed, &["commit", "-qm", "Deploy checkout 1.5.0"]);
    git_at(&work, authored, landed, &["push", "-q", "origin", "HEAD:main"]);
    w
}

#[test]
fn the_clock_starts_when_the_change_reached_the_branch_not_when_it_was_written() {
    // Written three hours ago, landed ten minutes ago: within the point of no return.
    let w = landed(180, 10);
    let report = alert(&w);
    assert!(matches!(report.outcome, Outcome::RolledBack { .. }), "{:?}", report.decision.guards);

    // Landed forty minutes ago: past it.
    let w = landed(180, 40);
    let report = alert(&w);
    assert!(matches!(report.outcome, Outcome::Proposed { .. }), "{:?}", report.outcome);
    let guard = report.decision.guards.iter().find(|g| g.guard == "point_of_no_return").unwrap();
    assert!(guard.detail.contains("reached the branch 40m ago"), "{}", guard.detail);
}

#[test]
fn a_trailer_on_a_merged_commit_marks_the_merge() {
    let w = World::with(&[policy()]);
    let work = work_clone(&w);
    git_at(&work, w.ago(120), w.ago(120), &["checkout", "-qb", "feature"]);
    std::fs::write(work.join(path("checkout", "prod")), manifest("checkout", "prod", &image("checkout", "1.5.0")))
        .unwrap();
    git_at(
        &work,
        w.ago(120),
        w.ago(120),
        &["commit", "-qam", "Switch checkout to the new schema\n\nIrreversible: true"],
    );
    git_at(&work, w.ago(60), w.ago(60), &["checkout", "-q", "main"]);
    git_at(&work, w.ago(60), w.ago(60), &["merge", "-q", "--no-ff", "-m", "Merge feature", "feature"]);
    git_at(&work, w.ago(60), w.ago(60), &["push", "-q", "origin", "HEAD:main"]);
    let side = git_in(&work.join(".git"), &["rev-parse", "--short=10", "feature"]);

    let report = alert(&w);
    assert!(matches!(report.outcome, Outcome::Proposed { .. }), "{:?}", report.outcome);
    let guard = report.decision.guards.iter().find(|g| g.guard == "point_of_no_return").unwrap();
    assert!(
        guard.detail.contains(&format!("brings in {side} carrying `Irreversible: true`"))
            && guard.detail.contains("reached the branch 1h ago"),
        "{}",
        guard.detail
    );
}

#[test]
fn breaking_glass_past_the_point_of_no_return_still_proposes() {
    let w = World::with(&[policy().source("any")]);
    deploy_with_migration(&w, 45);
    let reply = chat_as(&w, Principal::new("slack:UONCALL"), "/rollback checkout prod because it burns --emergency");
    assert!(reply.text.contains("proposed"), "{}", reply.text);
    assert!(reply.text.contains("past the point of no return"), "{}", reply.text);
    assert!(w.git(&["log", "--format=%s", "refs/heads/main"]).lines().next().unwrap().starts_with("Deploy checkout"));
    assert_eq!(w.git(&["for-each-ref", "--format=%(refname)", "refs/heads/rollback/"]).lines().count(), 1);
}

#[test]
fn irreversible_without_a_duration_means_at_once() {
    let w =
        World::with(&[PolicySpec::new("test-policy").set("irreversible", json!({ "paths": ["**/migrations/**"] }))]);
    deploy_with_migration(&w, 1);
    let report = alert(&w);
    match &report.outcome {
        // on_violation defaults to deny
        Outcome::Denied { reason } => assert!(reason.contains("past the point of no return (0s)"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_malformed_irreversible_section_is_refused_at_load() {
    for (bad, want) in [
        (json!({ "trailers": ["Irreversible"] }), "write it as `Key: value`"),
        (json!({ "paths": ["../migrations/**"] }), "`..`"),
        (json!({ "paths": ["/db/**"] }), "relative"),
    ] {
        let w = World::with(&[PolicySpec::new("test-policy")]);
        w.set_policies(&[PolicySpec::new("test-policy").set("irreversible", bad)]);
        let out = w.run_cli(&["check", "--offline"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(text.contains(want), "{want}: {text}");
    }
}
