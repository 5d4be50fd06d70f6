//! One `rollbackd serve` for several config repos (`repos:`): each alert goes to the repo whose
//! policies act on it, each repo keeps its own mirror, audit and answers, and a restart finds
//! what each did in its own git.

use crate::common::*;
use crate::serve::{TOKEN, alert_for, get, post_alert, rollback_commits, start_serve};

/// Two config repos, `shop` (the world `a`: checkout) and `billing` (the world `b`: cart),
/// each with a bad deploy to roll back, served by one file in `a`'s root.
fn fleet() -> (World, World, std::path::PathBuf) {
    let a = World::with(&[PolicySpec::new("shop-checkout").matchers(&["service=\"checkout\"", "env=\"prod\""])]);
    let b = World::with(&[PolicySpec::new("billing-cart").matchers(&["service=\"cart\"", "env=\"prod\""])]);
    a.deploy("checkout", "prod", "1.5.0", 10);
    b.deploy("cart", "prod", "2.1.0", 10);
    std::fs::write(a.root().join("am-tokens"), format!("{TOKEN}\n")).unwrap();
    let config = a.root().join("fleet.yaml");
    std::fs::write(
        &config,
        format!(
            "data_dir: fleet-data\ntemplates: templates\nrepos:\n  - name: shop\n    repo: {{ url: origin.git }}\n    policies: policies\n  - name: billing\n    repo: {{ url: {} }}\n    policies: {}\n    identity: {{ name: billing-bot, email: billing@example.com }}\nsources:\n  alertmanager:\n    bearer_tokens_file: am-tokens\n",
            b.origin.display(),
            b.root().join("policies").display()
        ),
    )
    .unwrap();
    (a, b, config)
}

fn results(body: &serde_json::Value) -> Vec<(String, String)> {
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["repo"].as_str().unwrap_or("-").to_string(), r["outcome"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn each_alert_goes_to_the_repo_whose_policies_act_on_it() {
    let (a, b, config) = fleet();
    let s = start_serve(&config);

    let (status, body) = post_alert(&s.url, &alert_for("checkout", "fpcheckout")).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(results(&body), [("shop".to_string(), "rolled_back".to_string())], "{body}");
    assert_eq!((rollback_commits(&a), rollback_commits(&b)), (1, 0));

    let (status, body) = post_alert(&s.url, &alert_for("cart", "fpcart")).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(results(&body), [("billing".to_string(), "rolled_back".to_string())], "{body}");
    assert_eq!((rollback_commits(&a), rollback_commits(&b)), (1, 1));
    // Each repo writes as its own identity.
    assert_eq!(b.git(&["log", "-1", "--format=%an <%ae>", "main"]).trim(), "billing-bot <billing@example.com>");
    assert_eq!(a.git(&["log", "-1", "--format=%an", "main"]).trim(), "rollbackd");

    // No repo's policies act on it: answered once, by the first, nothing written anywhere.
    let (status, body) = post_alert(&s.url, &alert_for("search", "fpsearch")).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(results(&body), [("shop".to_string(), "ignored".to_string())], "{body}");

    // Alertmanager repeats: the duplicate is the repo's that rolled it back.
    let (_, body) = post_alert(&s.url, &alert_for("cart", "fpcart")).unwrap();
    assert_eq!(results(&body), [("billing".to_string(), "duplicate".to_string())], "{body}");
    assert_eq!((rollback_commits(&a), rollback_commits(&b)), (1, 1));

    // Reads name the repo of each view and record.
    let (_, status) = get(&format!("{}/api/v1/status", s.url)).unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let repos: Vec<&str> = status["repos"].as_array().unwrap().iter().map(|v| v["repo"].as_str().unwrap()).collect();
    assert_eq!(repos, ["shop", "billing"], "{status}");
    let (_, history) = get(&format!("{}/api/v1/rollbacks", s.url)).unwrap();
    let history: serde_json::Value = serde_json::from_str(&history).unwrap();
    let mut rows: Vec<(String, String)> = history["rollbacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["repo"].as_str().unwrap().to_string(), r["service"].as_str().unwrap().to_string()))
        .collect();
    rows.sort();
    assert_eq!(rows, [("billing".into(), "cart".into()), ("shop".into(), "checkout".into())], "{history}");
    let (code, page) = get(&s.url).unwrap();
    assert_eq!(code, 200);
    assert!(page.contains("id=\"repo-shop\"") && page.contains("id=\"repo-billing\""), "{page}");
    assert!(
        a.root().join("fleet-data/shop/mirror.git").is_dir() && a.root().join("fleet-data/billing/mirror.git").is_dir()
    );
    drop(s);

    // A restart knows, from each repo's git alone, what each did.
    let s = start_serve(&config);
    let (_, body) = post_alert(&s.url, &alert_for("checkout", "fpcheckout")).unwrap();
    assert_eq!(results(&body), [("shop".to_string(), "duplicate".to_string())], "{body}");
    assert_eq!((rollback_commits(&a), rollback_commits(&b)), (1, 1));
}

#[test]
fn the_cli_asks_which_repo_and_check_reads_them_all() {
    let (a, _b, config) = fleet();
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_rollbackd"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .env_remove("ROLLBACKD_CONFIG")
            .env_remove("ROLLBACKD_CONFIG_REPO")
            .env_remove("CI")
            .output()
            .unwrap()
    };
    let out = cli(&["history"]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("serves 2 repos (shop, billing)") && err.contains("--config-repo"), "{err}");

    let out =
        cli(&["--config-repo", "billing", "rollback", "cart", "--env", "prod", "--actor", "alice", "--reason", "bad"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = cli(&["--config-repo", "billing", "history", "--json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"cart\"") && !text.contains("\"checkout\""), "{text}");
    let out = cli(&["--config-repo", "nope", "history"]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in"), "{out:?}");

    let out = cli(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // A broken policy in one repo fails the check, named by its file.
    std::fs::write(a.root().join("policies/10-test.yaml"), "- name: broken\n  match: {}\n").unwrap();
    let out = cli(&["check"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("10-test.yaml"), "{said}");
}
