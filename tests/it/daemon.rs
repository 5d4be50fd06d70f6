//! Pushes over the network, against `git daemon --enable=receive-pack` on loopback: the real
//! receive-pack with its compare-and-swap and its hooks (file-path remotes run no hooks).

use crate::common::*;
use rollbackd::Actor;
use rollbackd::{Options, Outcome};

#[test]
fn rollback_is_pushed_over_the_network() {
    let w = World::new();
    let _d = daemon(&w);
    w.deploy("checkout", "prod", "1.5.0", 10);
    let report = w.engine().handle(&w.alert("checkout", "prod", "fp"), &Options::default()).unwrap();
    let rb = match report.outcome {
        Outcome::RolledBack { rollback } => rollback,
        other => panic!("{other:?}"),
    };
    assert_eq!(w.head(), rb.commit.0);
    assert_eq!(w.git(&["rev-parse", &format!("refs/tags/{}^{{commit}}", rb.tag.unwrap())]), rb.commit.0);
    assert!(w.git(&["for-each-ref", "refs/rollbackd/"]).is_empty(), "no scratch refs reach the origin");
    assert!(
        crate::common::git_in(&w.mirror(), &["for-each-ref", "refs/rollbackd/"]).is_empty(),
        "scratch refs are cleaned up"
    );
}

#[test]
fn moved_branch_over_the_network_is_retried() {
    let w = World::new();
    let _d = daemon(&w);
    let cfg = std::fs::read_to_string(w.config_path()).unwrap();
    std::fs::write(w.config_path(), format!("{cfg}git: {{ fetch_freshness: 1h }}\n")).unwrap();
    w.deploy("checkout", "prod", "1.5.0", 10);
    let mut engine = w.engine();
    engine.repo().fetch_now().unwrap();
    let unrelated = w.deploy("cart", "prod", "2.1.0", 1);
    let report = engine.handle(&w.alert("checkout", "prod", "fp"), &Options::default()).unwrap();
    match report.outcome {
        Outcome::RolledBack { rollback } => assert_eq!(rollback.push_retries, 1),
        other => panic!("{other:?}"),
    }
    assert_eq!(w.git(&["rev-parse", "main^"]), unrelated.0);
}

#[test]
fn a_push_refused_by_a_hook_fails_with_the_servers_message() {
    let w = World::new();
    let d = daemon(&w);
    hook(
        &w,
        "update",
        "#!/bin/sh\ncase \"$1\" in refs/heads/main) echo \"main is protected: changes go through review\" >&2; exit 1;; esac\nexit 0\n",
    );
    w.deploy("checkout", "prod", "1.5.0", 10);
    let before = w.refs_of(&w.origin);

    let err = w.engine().handle(&w.alert("checkout", "prod", "fp"), &Options::default()).unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.exit_code(), 3, "{msg}");
    assert!(msg.contains("refused") && msg.contains("main is protected"), "{msg}");
    assert!(!err.is_transient(), "a refusal is not retried by the sender");
    assert_eq!(w.refs_of(&w.origin), before, "nothing half-written on the origin");
    let mirror_main = crate::common::git_in(&w.mirror(), &["rev-parse", "refs/heads/main"]);
    assert_eq!(mirror_main, w.head(), "the mirror's branch did not move");

    let out = w.run_cli(&["rollback", "checkout", "--env", "prod"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("main is protected"));
    drop(d);
}

#[test]
fn proposal_approved_and_cancelled_over_the_network() {
    let w = World::with(&[PolicySpec::new("test-policy").mode(Mode::PullRequest)]);
    let _d = daemon(&w);
    w.deploy("checkout", "prod", "1.5.0", 10);
    let propose =
        |fp: &str| match w.engine().handle(&w.alert("checkout", "prod", fp), &Options::default()).unwrap().outcome {
            Outcome::Proposed { rollback } => rollback,
            other => panic!("{other:?}"),
        };
    let first = propose("fp1");
    assert!(matches!(
        w.engine().cancel(first.id.as_str(), &Actor::cli("ops")).unwrap(),
        rollbackd::ReviewOutcome::Cancelled { .. }
    ));
    assert!(w.git(&["for-each-ref", "refs/heads/rollback/"]).is_empty(), "deleted on the origin");
    // A new incident proposes again; the base moves; approval replays it and merges.
    let second = propose("fp2");
    let other = w.deploy("cart", "prod", "2.1.0", 1);
    assert!(matches!(
        w.engine().approve(second.id.as_str(), &Actor::cli("ops")).unwrap(),
        rollbackd::ReviewOutcome::Merged { .. }
    ));
    assert_eq!(w.git(&["rev-parse", "main^"]), other.0);
    assert!(w.git(&["for-each-ref", "refs/heads/rollback/"]).is_empty());
}
