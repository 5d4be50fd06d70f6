//! The gate is bounded: a fork's pull request chooses the size of what rollbackd reads, so
//! trees are walked without recursion and no deeper than git's own bound, files over 1 MiB are
//! never read, and a pull request over a bound gets a failing `rollbackd/gate` naming it. The
//! gate runs on its own thread: an alert is not queued behind it. Each pull request is built
//! with git2 straight into the origin (`refs/pull/<n>/head`), as a fork's would arrive.

use std::time::Instant;

use crate::common::fake_github::FakeGithub;
use crate::common::*;
use crate::holds::{pull_request_delivery, rolled_back};

/// A commit on top of the origin's main with the entries `edit` returns (path, id, mode) put
/// into main's tree, pushed as pull request `number`'s head.
fn pull_head(w: &World, number: u64, edit: impl FnOnce(&git2::Repository) -> Vec<(String, git2::Oid, u32)>) -> String {
    let repo = git2::Repository::open_bare(&w.origin).unwrap();
    let main = repo.find_reference("refs/heads/main").unwrap().peel_to_commit().unwrap();
    let mut update = git2::build::TreeUpdateBuilder::new();
    for (path, id, mode) in edit(&repo) {
        let mode = if mode == 0o040000 { git2::FileMode::Tree } else { git2::FileMode::Blob };
        update.upsert(path, id, mode);
    }
    let tree = repo.find_tree(update.create_updated(&repo, &main.tree().unwrap()).unwrap()).unwrap();
    let sig = git2::Signature::now("fork", "fork@example.com").unwrap();
    let id = repo.commit(None, &sig, &sig, "a fork's change", &tree, &[&main]).unwrap();
    repo.reference(&format!("refs/pull/{number}/head"), id, true, "pull request").unwrap();
    id.to_string()
}

/// The checkout manifest for prod with the held image back in it.
fn held_image_back(repo: &git2::Repository) -> (String, git2::Oid, u32) {
    let text = manifest("checkout", "prod", &image("checkout", "1.5.0"));
    (path("checkout", "prod"), repo.blob(text.as_bytes()).unwrap(), 0o100644)
}

struct Gated {
    w: World,
    gh: FakeGithub,
    s: crate::serve::Serve,
}

fn served() -> Gated {
    let w = rolled_back();
    // Something for an alert to roll back while a gate runs.
    w.deploy("cart", "prod", "2.0.0", 30);
    w.deploy("cart", "prod", "2.1.0", 0);
    let gh = FakeGithub::start(w.origin.clone());
    std::fs::write(w.root().join("gh-secrets"), "hook-secret\n").unwrap();
    std::fs::write(w.root().join("am-tokens"), format!("{}\n", crate::serve::TOKEN)).unwrap();
    w.write_config(&ConfigSpec::new().github_app(&gh.url).set(
        "sources",
        json!({ "github": { "secrets_file": "gh-secrets", "workflows": ["deploy"] },
                "alertmanager": { "bearer_tokens_file": "am-tokens" } }),
    ));
    let s = crate::serve::serve_app(&w, &gh, "srv");
    Gated { w, gh, s }
}

impl Gated {
    /// Delivers pull request `number` opened at `head`; its status, and the check run made.
    fn gate(&self, number: u64, head: &str) -> (u16, serde_json::Value) {
        let before = self.gh.gh.lock().unwrap().check_runs_created.len();
        let started = Instant::now();
        let status =
            self.gh.deliver("pull_request", &format!("pr-{number}"), &pull_request_delivery(number, "opened", head));
        eprintln!("gate_bounds: pull request #{number} answered {status} in {:?}", started.elapsed());
        let runs = self.gh.gh.lock().unwrap().check_runs_created.clone();
        assert_eq!(runs.len(), before + 1, "one check run for #{number}: {runs:?}");
        let run = runs[before].clone();
        assert_eq!((run["name"].as_str(), run["head_sha"].as_str()), (Some("rollbackd/gate"), Some(head)));
        (status, run)
    }

    /// The server still gates: a small pull request that brings back the held image fails.
    fn still_gates(&self, number: u64) {
        let head = pull_head(&self.w, number, |repo| vec![held_image_back(repo)]);
        let (status, run) = self.gate(number, &head);
        assert_eq!(status, 200);
        assert_eq!(run["conclusion"], "failure", "{run}");
        let summary = run["output"]["summary"].as_str().unwrap();
        assert!(summary.contains("held since rollback"), "{summary}");
    }

    fn finish(self) {
        drop(self.s);
        self.gh.finish();
    }
}

#[test]
fn a_pull_request_with_a_tree_8000_levels_deep_gets_a_failing_gate_and_the_server_carries_on() {
    let g = served();
    let head = pull_head(&g.w, 21, |repo| {
        let blob = repo.blob(b"deep\n").unwrap();
        let mut b = repo.treebuilder(None).unwrap();
        b.insert("f.yaml", blob, 0o100644).unwrap();
        let mut tree = b.write().unwrap();
        for _ in 0..8_000 {
            let mut b = repo.treebuilder(None).unwrap();
            b.insert("d", tree, 0o040000).unwrap();
            tree = b.write().unwrap();
        }
        vec![("deep".into(), tree, 0o040000), held_image_back(repo)]
    });
    let (status, run) = g.gate(21, &head);
    assert_eq!(status, 200);
    assert_eq!(run["conclusion"], "failure", "{run}");
    let summary = run["output"]["summary"].as_str().unwrap();
    assert!(summary.contains("this pull request has a tree more than 4096 levels deep"), "{summary}");
    assert!(summary.contains("rollbackd release checkout --env prod"), "{summary}");
    g.still_gates(22);
    g.finish();
}

#[test]
fn a_66_mb_file_under_ten_paths_is_not_read_and_the_rest_is_gated() {
    let g = served();
    // Text that would bring the held image back, were it read: it is over 1 MiB, so it is not.
    let line = format!("image: {}\n", image("checkout", "1.5.0"));
    let big = line.repeat(66_000_000 / line.len());
    let head = pull_head(&g.w, 23, |repo| {
        let blob = repo.blob(big.as_bytes()).unwrap();
        let mut b = repo.treebuilder(None).unwrap();
        for i in 0..10 {
            b.insert(format!("copy-{i}.yaml"), blob, 0o100644).unwrap();
        }
        vec![("big".into(), b.write().unwrap(), 0o040000), held_image_back(repo)]
    });
    // An alert for another service while the gate runs: the writer is not the gate's.
    let url = g.s.url.clone();
    let alert = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let started = Instant::now();
        let (status, body) = crate::serve::post_alert(&url, &crate::serve::alert_for("cart", "cartfp")).unwrap();
        eprintln!("gate_bounds: an alert during the gate answered {status} in {:?}", started.elapsed());
        (status, body)
    });
    let (status, run) = g.gate(23, &head);
    assert_eq!(status, 200);
    assert_eq!(run["conclusion"], "failure", "{run}");
    let summary = run["output"]["summary"].as_str().unwrap();
    assert!(summary.contains(&format!("{}: image", path("checkout", "prod"))), "{summary}");
    assert!(!summary.contains("big/copy-"), "files over 1 MiB are not read: {summary}");
    let (status, body) = alert.join().unwrap();
    assert_eq!((status, body["outcome"].as_str()), (200, Some("rolled_back")), "{body}");
    g.finish();
}

#[test]
fn a_pull_request_over_the_path_bound_gets_a_failing_gate_naming_it() {
    let g = served();
    let head = pull_head(&g.w, 25, |repo| {
        let mut b = repo.treebuilder(None).unwrap();
        for i in 0..10_001 {
            let blob = repo.blob(format!("n: {i}\n").as_bytes()).unwrap();
            b.insert(format!("f{i:05}.yaml"), blob, 0o100644).unwrap();
        }
        vec![("many".into(), b.write().unwrap(), 0o040000), held_image_back(repo)]
    });
    let (status, run) = g.gate(25, &head);
    assert_eq!(status, 200);
    assert_eq!(run["conclusion"], "failure", "{run}");
    assert_eq!(run["output"]["title"], "too large to gate");
    let summary = run["output"]["summary"].as_str().unwrap();
    assert!(
        summary.contains("this pull request changes more than 10000 paths; rollbackd gates at most 10000: split it"),
        "{summary}"
    );
    assert!(summary.contains("rollbackd release checkout --env prod"), "{summary}");
    g.still_gates(26);
    g.finish();
}
