//! Believe only what rollbackd signed. Everything rollbackd writes (rollback commits, tags, notes,
//! state) carries an SSH signature stock git verifies; what anyone else with push access writes
//! where rollbackd keeps its records (notes, state refs, rollback tags) is not believed, and
//! rollbackd's next write there drops it. Each forgery below is made with the git CLI on the
//! origin, as an attacker with push access would, and the outcome read back with the git CLI.

use rollbackd::Actor;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use rollbackd::{Options, Outcome};

/// The allowed-signers file an operator writes for git, from the key rollbackd made.
fn allowed_signers(w: &World) -> PathBuf {
    let key = w.root().join("data/signing_key");
    let out = Command::new("ssh-keygen").arg("-y").arg("-f").arg(&key).output().expect("ssh-keygen");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let public = String::from_utf8(out.stdout).unwrap();
    let file = w.root().join("allowed_signers");
    std::fs::write(&file, format!("rollbackd@localhost namespaces=\"git\" {}", public.trim())).unwrap();
    file
}

/// `git verify-commit` / `verify-tag` on the origin: (ok, what git said).
fn git_verifies(w: &World, signers: &Path, verb: &str, rev: &str) -> (bool, String) {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(&w.origin)
        .arg("-c")
        .arg(format!("gpg.ssh.allowedSignersFile={}", signers.display()))
        .args([verb, rev])
        .output()
        .expect("git");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// A commit made by the git CLI on the origin, holding `file` with `text`, with `parent` (or
/// none), set as `refname`: what someone with push access can do to any ref.
fn forge_state(w: &World, refname: &str, file: &str, text: &str, parent: Option<&str>) -> String {
    let blob_file = w.root().join("forged");
    std::fs::write(&blob_file, text).unwrap();
    let blob = w.git(&["hash-object", "-w", blob_file.to_str().unwrap()]);
    let listing = w.root().join("forged-tree");
    std::fs::write(&listing, format!("100644 blob {blob}\t{file}\n")).unwrap();
    let tree = Command::new("git")
        .arg("--git-dir")
        .arg(&w.origin)
        .arg("mktree")
        .stdin(std::fs::File::open(&listing).unwrap())
        .output()
        .unwrap();
    let tree = String::from_utf8(tree.stdout).unwrap().trim().to_string();
    let mut args = vec!["commit-tree", tree.as_str(), "-m", "state"];
    if let Some(p) = parent {
        args.extend(["-p", p]);
    }
    let commit = attacker(w, &args);
    w.git(&["update-ref", refname, &commit]);
    commit
}

fn refs(w: &World) -> String {
    w.git(&["for-each-ref", "--format=%(refname) %(objectname)", "refs/heads", "refs/tags"])
}

#[test]
fn what_rollbackd_writes_is_signed_and_stock_git_verifies_it() {
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    let mut engine = w.engine();
    let report = engine.handle(&w.alert("checkout", "prod", "s1"), &Options::default()).unwrap();
    let Outcome::RolledBack { rollback } = &report.outcome else { panic!("{:?}", report.outcome) };
    engine.freeze("cart", Some("prod"), None, Some("launch"), &Actor::cli("ops")).unwrap();
    let signers = allowed_signers(&w);

    let (ok, said) = git_verifies(&w, &signers, "verify-commit", &rollback.commit.0);
    assert!(ok, "the rollback commit: {said}");
    assert!(said.contains("Good \"git\" signature"), "{said}");
    let tag = rollback.tag.as_deref().expect("a direct rollback is tagged");
    let (ok, said) = git_verifies(&w, &signers, "verify-tag", tag);
    assert!(ok, "the rollback tag: {said}");
    let (ok, said) = git_verifies(&w, &signers, "verify-commit", "refs/rollbackd/state/freezes");
    assert!(ok, "the freeze: {said}");
    // The deploy before it was not rollbackd's: git says so too.
    let (ok, _) = git_verifies(&w, &signers, "verify-commit", &format!("{}^", rollback.commit.0));
    assert!(!ok);
}

#[test]
fn an_unsigned_state_commit_does_not_lift_the_pause_and_the_next_write_drops_it() {
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    let mut engine = w.engine();
    engine.pause(None, Some("incident"), &Actor::cli("ops")).unwrap();
    let paused = w.git(&["rev-parse", "refs/rollbackd/state/freezes"]);
    // Someone lifts the kill switch by pushing a commit of their own on top.
    let forged = forge_state(&w, "refs/rollbackd/state/freezes", "freezes.json", "{\"freezes\": []}", Some(&paused));

    let report = w.engine().handle(&w.alert("checkout", "prod", "p1"), &Options::default()).unwrap();
    assert!(!matches!(report.outcome, Outcome::RolledBack { .. }), "{:?}", report.outcome);
    assert_eq!(w.git(&["rev-parse", "main"]), w.head());
    assert!(w.git(&["tag", "-l", "rollback/*"]).is_empty(), "nothing pushed while paused");
    let status = w.engine().status(None).unwrap();
    assert!(status.contains("paused"), "{status}");
    assert!(status.contains("UNTRUSTED") && status.contains("refs/rollbackd/state/freezes"), "{status}");
    assert!(status.contains(&forged[..12]), "{status}");

    // A rewrite that drops rollbackd's history keeps the pause too.
    forge_state(&w, "refs/rollbackd/state/freezes", "freezes.json", "{\"freezes\": []}", None);
    let report = w.engine().handle(&w.alert("checkout", "prod", "p2"), &Options::default()).unwrap();
    assert!(!matches!(report.outcome, Outcome::RolledBack { .. }), "{:?}", report.outcome);

    // Back on the first forgery: a person's resume is written on the trusted state, over it.
    w.git(&["update-ref", "refs/rollbackd/state/freezes", &forged]);
    let before = refs(&w);
    let said = w.engine().resume(&Actor::cli("ops"), None).unwrap();
    assert!(said.contains("resumed"), "{said}");
    assert_eq!(w.git(&["rev-parse", "refs/rollbackd/state/freezes^"]), paused, "the forged commit is dropped");
    let signers = allowed_signers(&w);
    assert!(git_verifies(&w, &signers, "verify-commit", "refs/rollbackd/state/freezes").0);
    assert_eq!(refs(&w), before, "no branch or tag moved");
}

#[test]
fn a_forged_known_good_candidate_makes_no_tag() {
    let w = World::new();
    let head = w.deploy("checkout", "prod", "1.5.0", 10);
    let line = serde_json::json!({
        "name": "release/9.9.9", "sha": head.0, "service": "checkout", "env": "prod",
        "policy": "test-policy", "trigger": "github:x", "since": w.ago(120).to_string(),
        "until": w.ago(60).to_string(), "state": "soaking"
    });
    attacker(&w, &["notes", "--ref=rollbackd-candidates", "add", "-m", &line.to_string(), &head.0]);
    let before = refs(&w);
    let mut engine = w.engine();
    engine.verify_due().unwrap();
    assert_eq!(refs(&w), before, "no tag pushed from a note nobody trusted");
    let status = engine.status(None).unwrap();
    assert!(status.contains("refs/notes/rollbackd-candidates"), "{status}");
}

#[test]
fn a_forged_verification_note_is_not_what_explain_shows() {
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    let report = w.engine().handle(&w.alert("checkout", "prod", "v1"), &Options::default()).unwrap();
    let Outcome::RolledBack { rollback } = &report.outcome else { panic!("{:?}", report.outcome) };
    let forged = format!(
        "rollbackd verification: verified\n\nRollback-Id: {}\nVerification: verified\nReason: recovered\n",
        rollback.id
    );
    attacker(&w, &["notes", "--ref=rollbackd", "add", "-m", &forged, &rollback.commit.0]);
    let explained = w.engine().explain(rollback.id.as_str()).unwrap();
    assert!(explained.verification.iter().all(|(_, note)| !note.contains("verified")), "{:?}", explained.verification);
}

#[test]
fn a_proposal_moved_by_someone_else_with_an_unsigned_tag_cannot_be_approved() {
    let w = World::with(&[PolicySpec::new("test-policy").mode(Mode::PullRequest)]);
    w.deploy("checkout", "prod", "1.5.0", 10);
    let report = w.engine().handle(&w.alert("checkout", "prod", "m1"), &Options::default()).unwrap();
    let Outcome::Proposed { rollback } = &report.outcome else { panic!("{:?}", report.outcome) };
    let real = w.git(&["rev-parse", &rollback.branch]);
    // Someone puts a commit of their own (same trailers, another tree: the first config, with
    // every later change gone) on the proposal branch, and moves the `proposed/` tag onto it.
    let first = w.git(&["rev-list", "--max-parents=0", "main"]);
    let tree = w.git(&["rev-parse", &format!("{first}^{{tree}}")]);
    let evil = attacker(&w, &["commit-tree", &tree, "-p", &real, "-m", &w.message(&real)]);
    w.git(&["update-ref", &format!("refs/heads/{}", rollback.branch), &evil]);
    let tag = format!("proposed/checkout/prod/{}", rollback.id);
    attacker(&w, &["tag", "-f", "-a", "-m", "proposed", &tag, &evil]);
    let before = refs(&w);

    let outcome = w.engine().approve(rollback.id.as_str(), &Actor::cli("ops")).unwrap();
    assert!(outcome.summary().contains("no open proposal"), "{}", outcome.summary());
    assert_eq!(refs(&w), before, "nothing merged, nothing tagged");
    let status = w.engine().status(None).unwrap();
    assert!(status.contains(&format!("refs/tags/{tag}")), "{status}");
}

/// git as someone else with push access: their own name, whatever this machine's git config says.
fn attacker(w: &World, args: &[&str]) -> String {
    let mut all = vec!["-c", "user.name=mallory", "-c", "user.email=mallory@example.com"];
    all.extend_from_slice(args);
    w.git(&all)
}

#[test]
fn audit_verify_passes_on_rollbackds_trail_and_exits_2_on_a_forged_record() {
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    let mut engine = w.engine();
    let report = engine.handle(&w.alert("checkout", "prod", "a1"), &Options::default()).unwrap();
    let Outcome::RolledBack { rollback } = &report.outcome else { panic!("{:?}", report.outcome) };
    engine.freeze("cart", Some("prod"), None, Some("launch"), &Actor::cli("ops")).unwrap();
    drop(engine);

    let out = w.run_cli(&["audit", "verify"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("signed   rollback") && text.contains("refs/rollbackd/state/freezes"), "{text}");

    // Someone adds a note where rollbackd keeps its verdicts, and a rollback tag of their own.
    attacker(&w, &["notes", "--ref=rollbackd", "add", "-m", "verified", &rollback.commit.0]);
    attacker(&w, &["tag", "-a", "-m", "x", "rollback/cart/prod/rb-aaaaaaaaaaaa", &rollback.commit.0]);
    let out = w.run_cli(&["audit", "verify", "--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let checks: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let bad: Vec<(&str, &str)> = checks
        .iter()
        .filter(|c| c["status"] != "signed")
        .map(|c| (c["ref"].as_str().unwrap(), c["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        bad,
        [("refs/tags/rollback/cart/prod/rb-aaaaaaaaaaaa", "unsigned"), ("refs/notes/rollbackd", "unsigned")],
        "{checks:?}"
    );
}

#[test]
fn state_no_trusted_key_signed_holds_automatic_rollbacks_until_a_person_writes_it() {
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    // A freezes ref rollbackd never wrote (or wrote with a key it no longer has).
    forge_state(&w, "refs/rollbackd/state/freezes", "freezes.json", "{\"freezes\": \"oops\"}", None);
    let before = refs(&w);
    let err = w.engine().handle(&w.alert("checkout", "prod", "u1"), &Options::default()).unwrap_err();
    assert!(err.is_transient(), "the sender retries (503): {err}");
    assert!(err.to_string().contains("refs/rollbackd/state/freezes cannot be read"), "{err}");
    assert_eq!(refs(&w), before, "nothing pushed on a state nobody trusted");
    // A person writes the state again, on top; automatic rollbacks go on.
    let mut engine = w.engine();
    engine.pause(None, Some("repair"), &Actor::cli("ops")).unwrap();
    let said = engine.resume(&Actor::cli("ops"), None).unwrap();
    assert!(said.contains("resumed"), "{said}");
    let report = w.engine().handle(&w.alert("checkout", "prod", "u1"), &Options::default()).unwrap();
    assert!(matches!(report.outcome, Outcome::RolledBack { .. }), "{:?}", report.outcome);
}

/// A person's SSH key, made as they would make it: (private key file, public key line).
pub(super) fn person_key(w: &World, name: &str) -> (String, String) {
    let path = w.root().join(format!("{name}-key"));
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .output()
        .expect("ssh-keygen");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap().trim().to_string();
    (path.display().to_string(), public)
}

#[test]
fn at_the_cli_a_person_is_whoever_their_key_says_and_chat_rules_apply() {
    let w = World::with(&[PolicySpec::new("test-policy")
        .chatops("allow", &["slack:UALICE"])
        .chatops("approve", &["slack:UALICE"])
        .chatops("emergency", &["slack:UALICE"])]);
    w.deploy("checkout", "prod", "1.5.0", 10);
    let (alice, alice_pub) = person_key(&w, "alice");
    let (bob, bob_pub) = person_key(&w, "bob");
    let (mallory, _) = person_key(&w, "mallory");
    w.write_config(
        &ConfigSpec::new()
            .set("directory.people", json!({ "alice": ["slack:UALICE", alice_pub], "bob": ["slack:UBOB", bob_pub] })),
    );
    let before = refs(&w);
    let rollback = |extra: &[&str]| {
        let mut args = vec!["rollback", "checkout", "--env", "prod", "--reason", "5xx"];
        args.extend_from_slice(extra);
        let out = w.run_cli(&args);
        (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    };

    // Once people have keys, an asserted name is not enough, break glass included.
    let (code, said) = rollback(&["--actor", "nobody-checked", "--emergency"]);
    assert_eq!(code, Some(64), "{said}");
    assert!(said.contains("must be signed"), "{said}");
    // A key nobody is listed under.
    let (code, said) = rollback(&["--signing-key", &mallory]);
    assert_eq!(code, Some(64), "{said}");
    assert!(said.contains("belongs to nobody in directory.people"), "{said}");
    // Bob is somebody, but no rule lets him ask; nor does he become alice by saying so.
    let (code, said) = rollback(&["--signing-key", &bob]);
    assert_eq!(code, Some(2), "{said}");
    let (code, said) = rollback(&["--signing-key", &bob, "--actor", "alice"]);
    assert_eq!(code, Some(64), "{said}");
    assert_eq!(refs(&w), before, "nothing written");

    // Alice's key: alice, with her Slack account's rights; recorded as her.
    let (code, said) = rollback(&["--signing-key", &alice]);
    assert_eq!(code, Some(0), "{said}");
    assert_eq!(w.trailers("main", "Rollback-Actor"), ["cli:alice"]);
    // The same rules for a person's other actions: bob may not pause, alice may.
    let out = w.run_cli(&["pause", "--signing-key", &bob]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stdout));
    let out = w.run_cli(&["pause", "--signing-key", &alice]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(w.engine().status(None).unwrap().contains("cli:alice"));
}

#[tokio::test(flavor = "multi_thread")]
async fn untrusted_records_are_shown_counted_and_fail_alerts_closed_over_http() {
    use crate::common::http::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    let forged = forge_state(&w, "refs/rollbackd/state/freezes", "freezes.json", "{\"freezes\": []}", None);
    let s = server(&w, ConfigSpec::new());
    s.wait_ready();
    let mut status = serde_json::Value::Null;
    for _ in 0..200 {
        status = s.send(Request::get("/api/v1/status").body(Body::empty()).unwrap()).await.2;
        if status["untrusted"].as_array().is_some_and(|u| !u.is_empty()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status["untrusted"][0]["ref"], "refs/rollbackd/state/freezes", "{status}");
    assert_eq!(status["untrusted"][0]["object"], forged.as_str(), "{status}");
    let (_, _, page) = s.send(Request::get("/").body(Body::empty()).unwrap()).await;
    assert!(page.as_str().unwrap().contains("no trusted key signed"), "{page}");
    let (_, _, metrics) = s.send(Request::get("/metrics").body(Body::empty()).unwrap()).await;
    // The recorder is the process's: other tests here count their forgeries too.
    let counted: f64 = metrics
        .as_str()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("rollbackd_untrusted_records_total{ref=\"state/freezes\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(counted >= 1.0, "{metrics}");
    // Freezes nobody trusted: the alert is not acted on, and Alertmanager is told to retry.
    let (code, headers, body) = s.send(am(alert_body("f1", "checkout", "firing"))).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(headers.contains_key("retry-after"), "{headers:?}");
    assert!(w.git(&["tag", "-l", "rollback/*"]).is_empty());
}
