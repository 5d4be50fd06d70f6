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
    let (_, one) = get(&format!("{}/api/v1/rollbacks?repo=billing", s.url)).unwrap();
    let one: serde_json::Value = serde_json::from_str(&one).unwrap();
    assert_eq!(one["rollbacks"].as_array().unwrap().len(), 1, "{one}");
    assert_eq!(one["rollbacks"][0]["repo"], "billing", "{one}");
    let (code, page) = get(&s.url).unwrap();
    assert_eq!(code, 200);
    assert!(page.contains("id=\"repo-shop\"") && page.contains("id=\"repo-billing\""), "{page}");
    // A writer's gauges are one series per repo.
    let (_, metrics) = get(&format!("{}/metrics", s.url)).unwrap();
    for repo in ["shop", "billing"] {
        assert!(metrics.contains(&format!("rollbackd_origin_reachable{{repo=\"{repo}\"}} 1")), "{metrics}");
        assert!(metrics.contains(&format!("rollbackd_policies{{repo=\"{repo}\"}} 1")), "{metrics}");
    }
    assert!(
        a.root().join("fleet-data/repos/shop/mirror.git").is_dir()
            && a.root().join("fleet-data/repos/billing/mirror.git").is_dir()
    );
    // A reload asks every repo's writer, and says what each did.
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut r = agent.post(format!("{}/-/reload", s.url)).send_empty().unwrap();
    let said = r.body_mut().read_to_string().unwrap();
    assert!(said.contains("repo shop: ") && said.contains("repo billing: "), "{said}");
    drop(s);

    // A restart knows, from each repo's git alone, what each did.
    let s = start_serve(&config);
    let (_, body) = post_alert(&s.url, &alert_for("checkout", "fpcheckout")).unwrap();
    assert_eq!(results(&body), [("shop".to_string(), "duplicate".to_string())], "{body}");
    assert_eq!((rollback_commits(&a), rollback_commits(&b)), (1, 1));
}

/// Two repos whose policies both act on one alert: two rollbacks, one in each repo, with two
/// ids (an id names one rollback in chat, `approve` and the API); the alert sent again is each
/// repo's duplicate, with the id it minted the first time.
#[test]
fn two_repos_acting_on_one_alert_mint_two_ids_and_a_redelivery_the_same_ones() {
    let (a, b, config) = fleet();
    b.set_policies(&[PolicySpec::new("billing-checkout").matchers(&["service=\"checkout\"", "env=\"prod\""])]);
    b.deploy("checkout", "prod", "1.5.0", 10);
    let s = start_serve(&config);
    let ids = |body: &serde_json::Value| -> Vec<(String, String, String)> {
        let mut v: Vec<_> = body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let field = |k: &str| r[k].as_str().unwrap_or("-").to_string();
                (field("repo"), field("outcome"), field("rollback_id"))
            })
            .collect();
        v.sort();
        v
    };
    let (status, first) = post_alert(&s.url, &alert_for("checkout", "fpboth")).unwrap();
    assert_eq!(status, 200, "{first}");
    let first = ids(&first);
    let outcomes: Vec<(&str, &str)> = first.iter().map(|(r, o, _)| (r.as_str(), o.as_str())).collect();
    assert_eq!(outcomes, [("billing", "rolled_back"), ("shop", "rolled_back")], "{first:?}");
    // Read back from each origin with git: two commits, two ids.
    let written = |w: &World| w.trailers("main", "Rollback-Id");
    let (in_a, in_b) = (written(&a), written(&b));
    assert_eq!((in_a.len(), in_b.len()), (1, 1));
    assert_ne!(in_a, in_b, "one alert, two repos, one id");
    assert_eq!(in_b[0], first[0].2);
    assert_eq!(in_a[0], first[1].2);
    let tag = |w: &World, id: &str| w.git(&["tag", "--list", &format!("rollback/checkout/prod/{id}")]);
    assert!(!tag(&a, &in_a[0]).trim().is_empty() && tag(&a, &in_b[0]).trim().is_empty());

    // Redelivered: each repo's duplicate, with its own id; nothing more written.
    let (_, again) = post_alert(&s.url, &alert_for("checkout", "fpboth")).unwrap();
    let again = ids(&again);
    let expected: Vec<_> = first.iter().map(|(r, _, id)| (r.clone(), "duplicate".to_string(), id.clone())).collect();
    assert_eq!(again, expected);
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

/// Posts a GitHub delivery signed with the tests' webhook secret.
fn deliver(url: &str, event: &str, guid: &str, payload: &serde_json::Value) -> (u16, serde_json::Value) {
    let body = serde_json::to_vec(payload).unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut r = agent
        .post(format!("{url}/webhooks/github"))
        .header("Content-Type", "application/json")
        .header("X-GitHub-Event", event)
        .header("X-GitHub-Delivery", guid)
        .header("X-Hub-Signature-256", crate::common::http::sign(&body))
        .send(&body[..])
        .unwrap();
    let status = r.status().as_u16();
    (status, serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap())
}

#[test]
fn a_github_event_about_a_config_repo_goes_to_the_repo_whose_forge_it_is() {
    let (a, b, config) = fleet();
    std::fs::write(a.root().join("gh-secrets"), format!("{}\n", crate::common::http::GH_SECRET)).unwrap();
    std::fs::write(a.root().join("gh-token"), "not-used\n").unwrap();
    // Both repos on GitHub (acme/shop-config, acme/billing-config); nothing here calls its API.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(
            "    policies: policies\n",
            "    policies: policies\n    forge: { kind: github, api_url: \"http://127.0.0.1:9\", owner: acme, repo: shop-config, token_file: gh-token }\n",
        )
        .replace(
            "    identity: {",
            "    forge: { kind: github, api_url: \"http://127.0.0.1:9\", owner: acme, repo: billing-config, token_file: gh-token }\n    identity: {",
        );
    let text = format!(
        "{text}  github: {{ secrets_file: gh-secrets, workflows: [deploy] }}\nserver: {{ refresh_interval: 1h }}\ngit: {{ fetch_freshness: 1h }}\n"
    );
    std::fs::write(&config, text).unwrap();
    let s = start_serve(&config);
    let mirror_head =
        |name: &str| git_in(&a.root().join(format!("fleet-data/repos/{name}/mirror.git")), &["rev-parse", "main"]);
    let (shop_before, billing_before) = (mirror_head("shop"), mirror_head("billing"));

    let pushed = b.deploy("cart", "staging", "2.2.0", 0);
    a.deploy("checkout", "staging", "1.6.0", 0);
    let mut push = crate::common::http::fixture("push.payload.json");
    push["ref"] = "refs/heads/main".into();
    push["repository"]["full_name"] = "acme/billing-config".into();
    let (status, body) = deliver(&s.url, "push", "push-billing", &push);
    assert_eq!(status, 200, "{body}");
    assert_eq!(results(&body), [("billing".to_string(), "recorded".to_string())], "{body}");
    assert_eq!(mirror_head("billing").trim(), pushed.0, "the billing mirror is fetched at once");
    assert_eq!(mirror_head("shop"), shop_before, "the shop mirror is not touched");
    assert_ne!(mirror_head("billing"), billing_before);

    // A repository no entry's forge names is not any repo's business.
    push["repository"]["full_name"] = "acme/somebody-else".into();
    let (status, body) = deliver(&s.url, "push", "push-other", &push);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "ignored", "{body}");
    assert_eq!(mirror_head("shop"), shop_before);
}

#[test]
fn a_chat_command_goes_to_the_repos_it_concerns_and_the_reply_names_them() {
    let (a, b, config) = fleet();
    for (w, service) in [(&a, "checkout"), (&b, "cart")] {
        w.set_policies(&[PolicySpec::new(&format!("{service}-prod"))
            .matchers(&[&format!("service=\"{service}\""), "env=\"prod\""])
            .chatops("allow", &["slack:U1"])
            .chatops("approve", &["slack:U1"])]);
    }
    std::fs::write(a.root().join("slack-secrets"), format!("{}\n", crate::slack::SECRET)).unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!(
            "{text}  slack: {{ signing_secrets_file: slack-secrets, response_url_prefix: \"http://127.0.0.1:\" }}\n"
        ),
    )
    .unwrap();
    let s = start_serve(&config);
    let (response_url, replies) = crate::slack::response_server();
    let slash = |text: &str, trigger: &str| {
        use hmac::Mac as _;
        let body = crate::slack::form("U1", text, trigger, &response_url);
        let ts = jiff::Timestamp::now().as_second();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(crate::slack::SECRET.as_bytes()).unwrap();
        mac.update(format!("v0:{ts}:{body}").as_bytes());
        let sig: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let r = agent
            .post(format!("{}/webhooks/slack", s.url))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("X-Slack-Request-Timestamp", ts.to_string())
            .header("X-Slack-Signature", format!("v0={sig}"))
            .send(body)
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let reply = replies.recv_timeout(std::time::Duration::from_secs(30)).expect("a reply at response_url");
        reply["text"].as_str().unwrap().to_string()
    };

    // A rollback goes to the one repo whose policies act on it.
    let said = slash("cart prod because bad deploy", "t1");
    assert!(said.starts_with("[billing] ") && !said.contains("[shop]"), "{said}");
    assert_eq!((rollback_commits(&a), rollback_commits(&b)), (0, 1));

    // The kill switch goes to every repo, each recording it in its own git.
    let said = slash("pause because storm", "t2");
    assert!(said.contains("[shop] ") && said.contains("[billing] "), "{said}");
    // The status view is published by each writer once it is idle again.
    let paused_everywhere = || {
        let (_, status) = get(&format!("{}/api/v1/status", s.url)).unwrap();
        let status: serde_json::Value = serde_json::from_str(&status).unwrap();
        status["repos"].as_array().unwrap().iter().all(|v| v["paused"].as_str().is_some_and(|p| p.contains("storm")))
    };
    wait_for("every repo's status to say paused", 30, paused_everywhere);
}

#[test]
fn a_successful_deploy_is_marked_known_good_in_the_repo_whose_policy_asks() {
    let (a, b, config) = fleet();
    b.set_policies(&[
        PolicySpec::new("billing-cart").matchers(&["service=\"cart\"", "env=\"prod\""]),
        PolicySpec::new("billing-kg")
            .source("github")
            .matchers(&[])
            .target("cart", "prod", &["apps/cart/prod/**"])
            .mode(Mode::KnownGood),
    ]);
    std::fs::write(a.root().join("gh-secrets"), format!("{}\n", crate::common::http::GH_SECRET)).unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}  github: {{ secrets_file: gh-secrets, workflows: [deploy] }}\n")).unwrap();
    let s = start_serve(&config);
    let mut ds = crate::common::http::fixture("deployment_status.payload.json");
    ds["deployment"]["sha"] = b.head().trim().into();
    ds["deployment"]["environment"] = "prod".into();
    let (status, body) = deliver(&s.url, "deployment_status", "kg-1", &ds);
    assert_eq!(status, 200, "{body}");
    assert_eq!(results(&body)[0].0, "billing", "{body}");
    assert!(b.git(&["tag", "-l", "known-good/cart/prod/*"]).contains("known-good/cart/prod/"), "{body}");
    assert_eq!(a.git(&["tag", "-l", "known-good/*"]).trim(), "");
}

#[test]
fn a_notify_policy_in_one_repo_answers_and_tells_its_channel() {
    let (a, b, config) = fleet();
    let r = crate::common::receiver::Receiver::start();
    b.set_policies(&[PolicySpec::new("billing-watch")
        .matchers(&["service=\"cart\"", "env=\"prod\""])
        .mode(Mode::Notify)
        .set("notify", ["hook"])]);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}notify:\n  channels:\n    hook: {{ kind: webhook, url: \"{}/hook\" }}\n", r.url),
    )
    .unwrap();
    let s = start_serve(&config);
    let (status, body) = post_alert(&s.url, &alert_for("cart", "fpone")).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(results(&body), [("billing".to_string(), "notified".to_string())], "{body}");
    assert!(r.next().body.to_string().contains("fpone"));
    // Deliveries to a channel keep their order: a second copy of the first would come before
    // this one.
    let (_, body) = post_alert(&s.url, &alert_for("cart", "fptwo")).unwrap();
    assert_eq!(results(&body), [("billing".to_string(), "notified".to_string())], "{body}");
    let next = r.next().body.to_string();
    assert!(next.contains("fptwo") && !next.contains("fpone"), "{next}");
    assert_eq!((rollback_commits(&a), rollback_commits(&b)), (0, 0));
}
