//! Attacks by senders we authenticate: each request below is signed or carries a valid token,
//! and tries to widen or redirect a rollback, forge the audit trail, pose as a person, or stall
//! the service. Each test shows the refusal and that the origin's refs did not change (read with
//! the git CLI).

use crate::common::http::*;
use crate::common::*;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use rollbackd::Actor;
use rollbackd::{Directory, Principal};
use rollbackd::{Options, Outcome};
use serde_json::json;

/// Every ref on the origin with what it points at.
fn refs(w: &World) -> String {
    w.git(&["for-each-ref", "--format=%(refname) %(objectname)"])
}

/// The origin's branches and tags: what a rollback writes (a denial may add a decision note).
fn branches_and_tags(w: &World) -> String {
    w.git(&["for-each-ref", "--format=%(refname) %(objectname)", "refs/heads", "refs/tags"])
}

/// An Alertmanager notification with one firing alert of these labels and annotations.
fn alert(labels: serde_json::Value, annotations: serde_json::Value, fingerprint: &str) -> String {
    json!({
        "version": "4", "status": "firing", "receiver": "rollbackd", "groupKey": "g", "truncatedAlerts": 0,
        "alerts": [{ "status": "firing", "labels": labels, "annotations": annotations,
            "startsAt": "2026-11-21T11:55:00Z", "endsAt": "0001-01-01T00:00:00Z", "fingerprint": fingerprint }]
    })
    .to_string()
}

fn prod_alert(service: &str) -> String {
    alert(json!({"alertname": "HighErrorRate", "service": service, "env": "prod"}), json!({}), "abc123")
}

async fn metrics(s: &Server) -> String {
    let (_, _, b) = s.send(Request::get("/metrics").body(Body::empty()).unwrap()).await;
    b.as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_label_cannot_widen_or_redirect_the_target() {
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    w.deploy("cart", "prod", "2.1.0", 10);
    let s = server(&w, ConfigSpec::new());
    s.wait_ready();
    let before = refs(&w);
    let long = "a".repeat(200);
    for service in [
        "*",
        "check*",
        "{checkout,cart}",
        "[a-z]*",
        "checkout/../cart",
        "..",
        "checkout/prod",
        "!checkout",
        "checkout\\x",
        "checkout\nRollback-Id: rb-000000000000",
        "checkout\u{1b}[2J",
        "HEAD@{1}",
        "x.lock",
        long.as_str(),
    ] {
        let (st, _, b) = s.send(am(prod_alert(service))).await;
        let reason = b["reason"].as_str().unwrap();
        if service.contains('\n') {
            // `service=~".+"` does not match across lines: no policy takes it.
            assert_eq!((st, b["outcome"].as_str()), (StatusCode::OK, Some("ignored")), "{b}");
        } else {
            assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{service:?}: {b}");
            assert!(reason.contains("not an identifier"), "{service:?}: {reason}");
        }
        assert!(!reason.contains('\n') && !reason.contains('\u{1b}'), "escaped in the answer: {reason:?}");
        assert_eq!(refs(&w), before, "{service:?} wrote something");
    }
    // No refused value became a metric label.
    let m = metrics(&s).await;
    assert!(!m.contains("check*") && !m.contains("rb-000000000000") && !m.contains(&long), "{m}");
    // The plain name still works.
    let (st, _, b) = s.send(am(prod_alert("checkout"))).await;
    assert_eq!((st, b["outcome"].as_str()), (StatusCode::OK, Some("rolled_back")), "{b}");
    assert_eq!(w.trailers("main", "Rollback-Service"), ["checkout"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn label_counts_and_sizes_are_bounded() {
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    let s = server(&w, ConfigSpec::new());
    s.wait_ready();
    let before = refs(&w);
    let mut many = serde_json::Map::new();
    many.insert("service".into(), "checkout".into());
    many.insert("env".into(), "prod".into());
    for i in 0..100 {
        many.insert(format!("l{i}"), "x".into());
    }
    let (st, _, b) = s.send(am(alert(many.into(), json!({}), "a1"))).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert!(b["reason"].as_str().unwrap().contains("at most 64"), "{b}");
    let big = json!({"service": "checkout", "env": "prod", "team": "x".repeat(5000)});
    let (st, _, b) = s.send(am(alert(big, json!({}), "a2"))).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert!(b["reason"].as_str().unwrap().contains("at most 4096"), "{b}");
    // A fingerprint is part of the incident's key, and so of a trailer.
    let (st, _, b) = s.send(am(alert(json!({"service": "checkout", "env": "prod"}), json!({}), "a\nb"))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(refs(&w), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_actor_label_is_data_not_a_person() {
    // People's requests only: an alert that claims to be carol matches nothing.
    let w = World::with(&[PolicySpec::new("request").source("request").matchers(&[])]);
    w.deploy("checkout", "prod", "1.5.0", 10);
    let s = server(&w, ConfigSpec::new());
    s.wait_ready();
    let before = refs(&w);
    let claims = alert(json!({"service": "checkout", "env": "prod", "actor": "slack:UCAROL"}), json!({}), "c1");
    let (st, _, b) = s.send(am(claims.clone())).await;
    assert_eq!((st, b["outcome"].as_str()), (StatusCode::OK, Some("ignored")), "{b}");
    assert_eq!(refs(&w), before);

    // Under a policy that does act on alerts, the audit trail names the source, not the label.
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    let s = server(&w, ConfigSpec::new());
    s.wait_ready();
    let (_, _, b) = s.send(am(claims)).await;
    assert_eq!(b["outcome"], "rolled_back", "{b}");
    assert_eq!(w.trailers("main", "Rollback-Actor"), ["alertmanager"]);
}

#[test]
fn free_text_cannot_forge_hide_or_change_trailers() {
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    let mut event = w.alert("checkout", "prod", "f1");
    let forged = "5xx\n\nRollback-Id: rb-ffffffffffff\nRollback-Service: cart\nRollback-Trigger: cli:x\n---\n[click](https://evil.example) @everyone\n/rollback approve";
    event.annotations.insert("summary".into(), forged.into());
    event.annotations.insert("description".into(), "Rollback-Env: staging\n\n---\n".into());
    let report = w.engine().handle(&event, &Options::default()).unwrap();
    let Outcome::RolledBack { rollback } = &report.outcome else { panic!("{:?}", report.outcome) };
    // git's own trailer parser and ours agree on the one block we wrote.
    assert_eq!(w.trailers("main", "Rollback-Id"), [rollback.id.as_str()]);
    assert_eq!(w.trailers("main", "Rollback-Service"), ["checkout"]);
    assert_eq!(w.trailers("main", "Rollback-Env"), ["prod"]);
    assert_eq!(w.trailers("main", "Rollback-Trigger"), [event.trigger().as_str()]);
    let body = w.git(&["log", "-1", "--format=%B", "main"]);
    assert!(!body.lines().any(|l| l.starts_with("Rollback-Id: rb-ffff") || l == "---"), "{body}");
    let history = w.engine().history().unwrap().records().to_vec();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!((history[0].service.as_str(), history[0].env.as_str()), ("checkout", "prod"));
    // The incident is still recognised when it repeats.
    let again = w.engine().handle(&event, &Options::default()).unwrap();
    assert!(matches!(again.outcome, Outcome::Duplicate { .. }), "{:?}", again.outcome);
}

#[test]
fn a_tag_that_disagrees_with_its_trailers_is_not_trusted() {
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    let report = w.engine().handle(&w.alert("checkout", "prod", "t1"), &Options::default()).unwrap();
    let Outcome::RolledBack { rollback } = &report.outcome else { panic!("{:?}", report.outcome) };
    // Someone tags the same commit as a rollback of another service.
    w.git(&["tag", "rollback/cart/prod/rb-aaaaaaaaaaaa", rollback.commit.0.as_str()]);
    let history = w.engine().history().unwrap().records().to_vec();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].service, "checkout");
}

#[test]
fn a_person_at_chat_cannot_smuggle_revisions_or_ids() {
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    let before = refs(&w);
    for text in [
        "/rollback checkout prod to HEAD@{1}",
        "/rollback checkout prod to main~3",
        "/rollback checkout prod to FETCH_HEAD",
        "/rollback checkout prod to :/Deploy",
        "/rollback check* prod",
        "/rollback approve rb-../../x",
        "/rollback freeze * prod",
        "/rollback unfreeze ../x",
    ] {
        let reply = chat_as(&w, Principal::new("slack:U1"), text);
        assert!(!reply.ok && reply.text.contains("refused"), "{text}: {}", reply.text);
        assert!(!reply.public, "a refusal goes to the asker alone: {text}");
    }
    assert_eq!(refs(&w), before);
}

#[test]
fn a_replayed_unfreeze_cannot_lift_a_newer_freeze() {
    let w = World::new();
    w.write_config(&ConfigSpec::new().set("directory.slack_groups.S1", ["U1"]));
    w.set_policies(&[PolicySpec::new("test-policy").chatops("allow", &["slack:U1"]).chatops("approve", &["slack:U1"])]);
    let u1 = Principal::new("slack:U1");
    let early = w.ago(10);
    w.engine().freeze("checkout", None, None, Some("launch"), &Actor::Person(u1.clone())).unwrap();
    // An unfreeze typed before the freeze was set, arriving now (a replay).
    let said = w.engine().unfreeze("checkout", None, &Actor::Person(u1.clone()), Some(early)).unwrap();
    assert_eq!(said, "checkout was not frozen");
    let status = w.engine().status(None).unwrap();
    assert!(status.contains("checkout frozen until"), "{status}");
    // Typed now, it lifts it.
    let said = w.engine().unfreeze("checkout", None, &Actor::Person(u1.clone()), Some(w.now())).unwrap();
    assert!(said.contains("unfrozen"), "{said}");
}

#[test]
fn a_proposal_closed_on_the_forge_cannot_be_approved() {
    let w = World::with(&[PolicySpec::new("test-policy").mode(Mode::PullRequest)]);
    w.deploy("checkout", "prod", "1.5.0", 10);
    let report = w.engine().handle(&w.alert("checkout", "prod", "p1"), &Options::default()).unwrap();
    let Outcome::Proposed { rollback } = &report.outcome else { panic!("{:?}", report.outcome) };
    let head = w.git(&["rev-parse", &rollback.branch]);
    let said = w.engine().record_pr_closed(&rollback.branch, None, &head, "mallory").unwrap();
    assert!(said.contains("recorded cancelled/"), "{said}");
    let before = refs(&w);
    let outcome = w.engine().approve(rollback.id.as_str(), &Actor::cli("ops")).unwrap();
    assert!(outcome.summary().contains("no open proposal"), "{}", outcome.summary());
    assert_eq!(refs(&w), before, "nothing merged");
    assert!(w.git(&["branch", "--list", "rollback/*"]).is_empty(), "the closed proposal's branch is gone");
    // Commit ids from a payload never reach revision syntax.
    let said = w.engine().record_pr_closed(&rollback.branch, Some("main~1"), &head, "mallory").unwrap();
    assert!(said.contains("not a commit id"), "{said}");
}

#[test]
fn a_freeze_set_by_another_replica_is_seen_by_a_running_one() {
    let w = World::new();
    w.write_config(&ConfigSpec::new().set("git.fetch_freshness", "0s"));
    w.deploy("checkout", "prod", "1.5.0", 10);
    let mut a = w.engine();
    a.history().unwrap(); // A has fetched once and keeps running.
    let mut b = w.replica("replica-b");
    b.freeze("checkout", Some("prod"), None, Some("launch"), &Actor::cli("ops")).unwrap();
    let report = a.handle(&w.alert("checkout", "prod", "r1"), &Options::default()).unwrap();
    assert!(matches!(report.outcome, Outcome::Proposed { .. }), "{:?}", report.outcome);
    assert_eq!(w.git(&["rev-parse", "main"]), w.head(), "main untouched");
    assert!(w.git(&["tag", "-l", "rollback/*"]).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn alerts_no_policy_acts_on_never_take_the_writers_queue() {
    let prod = |name: &str, env: &str| {
        PolicySpec::new(name).source("alertmanager").matchers(&[&format!("env=\"{env}\"")]).target(
            "{{ labels.service }}",
            "prod",
            &["apps/{{ labels.service }}/prod/**"],
        )
    };
    let w = World::with(&[prod("prod", "prod"), prod("watch", "watch").mode(Mode::Notify)]);
    w.deploy("checkout", "prod", "1.5.0", 10);
    // A queue of one: before, the first unmatched alert took it and the real one got 503.
    let s = server(&w, ConfigSpec::new().set("server.queue", 1));
    s.wait_ready();
    let mut alerts: Vec<serde_json::Value> = (0..100)
        .map(|i| {
            let env = if i % 2 == 0 { "dev" } else { "watch" };
            json!({ "status": "firing", "labels": {"service": format!("svc{i}"), "env": env},
                "startsAt": "2026-11-21T11:55:00Z", "fingerprint": format!("u{i}") })
        })
        .collect();
    alerts.push(json!({ "status": "firing", "labels": {"service": "checkout", "env": "prod"},
        "startsAt": "2026-11-21T11:55:00Z", "fingerprint": "real" }));
    let body = json!({ "version": "4", "status": "firing", "alerts": alerts }).to_string();
    let (st, _, b) = s.send(am(body)).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let results = b["results"].as_array().unwrap();
    assert_eq!(results.iter().filter(|r| r["outcome"] == "ignored").count(), 50, "{b}");
    assert_eq!(results.iter().filter(|r| r["outcome"] == "notified").count(), 50, "{b}");
    assert_eq!(results[100]["outcome"], "rolled_back", "{b}");
    assert_eq!(w.trailers("main", "Rollback-Trigger"), ["alertmanager:real@2026-11-21T11:55:00Z"]);
}

fn github_world() -> (World, crate::common::fake_github::FakeGithub, Server) {
    let w = World::new();
    let gh = crate::common::fake_github::FakeGithub::start(w.origin.clone());
    std::fs::write(w.root().join("gh-token"), crate::common::fake_github::TOKEN).unwrap();
    w.write_config(&ConfigSpec::new().github_forge(&gh.url, "gh-token"));
    // The GitHub forge runs its own runtime: build it off the test's.
    let (root, clock) = (w.root().to_path_buf(), w.clock.clone());
    let s = std::thread::spawn(move || server_in(&root, clock, ConfigSpec::new())).join().unwrap();
    s.wait_ready();
    (w, gh, s)
}

fn comment_payload(sender: &str, sender_type: &str, author: &str, repo: &str, on_pr: bool) -> Vec<u8> {
    let mut issue = json!({ "number": 1 });
    if on_pr {
        issue["pull_request"] = json!({ "url": "https://api.github.com/repos/acme/config/pulls/1" });
    }
    serde_json::to_vec(&json!({
        "action": "created",
        "issue": issue,
        "comment": { "id": 77, "body": "/rollback approve", "user": { "login": author, "type": "User" } },
        "repository": { "full_name": repo },
        "sender": { "login": sender, "type": sender_type },
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn comments_from_bots_other_repositories_and_issues_are_not_commands() {
    let (w, gh, s) = github_world();
    let before = refs(&w);
    for (body, why) in [
        (comment_payload("rollbackd[bot]", "Bot", "rollbackd[bot]", "acme/config", true), "bot"),
        (comment_payload("carol", "User", "carol", "evil/fork", true), "other than the config repo"),
        (comment_payload("carol", "User", "carol", "acme/config", false), "rollback pull requests"),
    ] {
        let (st, _, b) = s.send(gh_delivery("issue_comment", &body, None, "c-1")).await;
        assert_eq!((st, b["outcome"].as_str()), (StatusCode::OK, Some("ignored")), "{b}");
        assert!(b["reason"].as_str().unwrap().contains(why), "{why}: {b}");
    }
    assert!(gh.comments().is_empty() && gh.reactions().is_empty(), "nothing was said on GitHub");
    assert_eq!(refs(&w), before);
    gh.finish();
}

#[test]
fn the_commenter_is_the_sender_not_the_comment_author_field() {
    let body = comment_payload("mallory", "User", "carol", "acme/config", true);
    let parsed = rollbackd::parsers::github("issue_comment", &body, &[], w_now()).unwrap();
    let rollbackd::parsers::GithubEvent::Comment(c) = parsed else { panic!("{parsed:?}") };
    assert_eq!(c.sender, "mallory");
    let p = Principal::new(format!("github:{}", c.sender)).with_groups(&Directory {
        github_teams: [("acme/sre".into(), vec!["carol".into()])].into(),
        ..Default::default()
    });
    assert!(p.groups.is_empty(), "mallory gains nothing from carol's name in the payload");
}

fn w_now() -> jiff::Timestamp {
    "2026-11-21T12:00:00Z".parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fork_workflow_run_rolls_nothing_back_unless_a_policy_opts_in() {
    let w = World::with(&[PolicySpec::new("ci").source("github").matchers(&[]).target(
        "checkout",
        "prod",
        &["apps/checkout/prod/**"],
    )]);
    let bad = w.deploy("checkout", "prod", "1.5.0", 10);
    let s = server(&w, ConfigSpec::new());
    s.wait_ready();
    let before = refs(&w);
    let mut run = fixture("workflow_run.completed.payload.json");
    run["workflow_run"]["conclusion"] = "failure".into();
    run["workflow_run"]["name"] = "deploy".into();
    run["workflow_run"]["head_sha"] = bad.0.clone().into();
    run["workflow_run"]["head_repository"] = json!({ "full_name": "mallory/fork" });
    let body = serde_json::to_vec(&run).unwrap();
    let (st, _, b) = s.send(gh("workflow_run", &body, None)).await;
    assert_eq!((st, b["outcome"].as_str()), (StatusCode::OK, Some("ignored")), "{b}");
    assert_eq!(refs(&w), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_signed_delivery_does_nothing() {
    let (w, gh, s) = github_world();
    let before = refs(&w);
    // A pull request closed unmerged, delivered twice with the same id.
    let body = serde_json::to_vec(&json!({
        "action": "closed",
        "pull_request": { "merged": false, "head": { "ref": "rollback/checkout/prod/rb-0123456789ab",
            "sha": "0".repeat(40), "repo": { "full_name": "acme/config" } } },
        "repository": { "full_name": "acme/config" },
        "sender": { "login": "carol" },
    }))
    .unwrap();
    let (st, _, first) = s.send(gh_delivery("pull_request", &body, None, "replayed-1")).await;
    assert_eq!(st, StatusCode::OK, "{first}");
    assert!(first["reason"].as_str().unwrap().contains("not a proposal rollbackd made"), "{first}");
    let (st, _, b) = s.send(gh_delivery("pull_request", &body, None, "replayed-1")).await;
    assert_eq!((st, b["outcome"].as_str()), (StatusCode::OK, Some("ignored")), "{b}");
    assert!(b["reason"].as_str().unwrap().contains("received before"), "{b}");
    gh.finish();
    assert_eq!(refs(&w), before, "a closed PR of an unknown commit recorded nothing");
}

mod round_trip {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Whatever text arrives in the free-text fields (alert summary and description, a
        /// bad commit's message), `history --json` reads back exactly the id, service, env,
        /// trigger and actor that were written.
        #[test]
        fn history_reads_back_exactly_what_was_written(
            summary in any::<String>(),
            description in any::<String>(),
            commit_message in any::<String>(),
        ) {
            let w = World::new();
            // git keeps a message as a C string.
            let commit_message = format!("Deploy {}", commit_message.replace('\0', " "));
            let manifest = manifest("checkout", "prod", &image("checkout", "1.5.0"));
            w.commit_files(&commit_message, &[(&path("checkout", "prod"), Some(&manifest))], 10);
            let mut event = w.alert("checkout", "prod", "prop");
            event.annotations.insert("summary".into(), summary);
            event.annotations.insert("description".into(), description);
            let report = w.engine().handle(&event, &Options::default()).unwrap();
            let Outcome::RolledBack { rollback } = &report.outcome else { panic!("{:?}", report.outcome) };
            let records = w.engine().history().unwrap().records().to_vec();
            let json = serde_json::to_value(&records).unwrap();
            prop_assert_eq!(json.as_array().unwrap().len(), 1);
            let r = &json[0];
            prop_assert_eq!(r["id"].as_str(), Some(rollback.id.as_str()));
            prop_assert_eq!(r["service"].as_str(), Some("checkout"));
            prop_assert_eq!(r["env"].as_str(), Some("prod"));
            let trigger = event.trigger();
            prop_assert_eq!(r["trigger"].as_str(), Some(trigger.as_str()));
            prop_assert_eq!(r["actor"].as_str(), Some("alertmanager"));
        }
    }
}

/// A body that never arrives: reading it would hang the test.
fn stalled_body() -> Body {
    Body::from_stream(futures_util::stream::pending::<Result<Vec<u8>, std::io::Error>>())
}

#[tokio::test(flavor = "multi_thread")]
async fn no_body_is_read_for_a_sender_that_fails_its_headers() {
    let w = World::new();
    let s = server(&w, ConfigSpec::new().set("server.body_read_timeout", "300ms"));
    s.wait_ready();
    let within = |st| async move {
        tokio::time::timeout(std::time::Duration::from_secs(10), st).await.expect("answered without reading the body")
    };
    let json = ("content-type", "application/json");
    let req = |path: &str, headers: &[(&str, &str)]| {
        let mut r = Request::post(path);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.body(stalled_body()).unwrap()
    };
    let (st, _, _) = within(s.send(req("/webhooks/alertmanager", &[json, ("authorization", "Bearer wrong")]))).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _, _) = within(s.send(req("/webhooks/github", &[json, ("x-github-event", "ping")]))).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    // Authenticated but stalling: cut off after server.body_read_timeout.
    let token = format!("Bearer {TOKEN}");
    let (st, _, b) = within(s.send(req("/webhooks/alertmanager", &[json, ("authorization", &token)]))).await;
    assert_eq!(st, StatusCode::REQUEST_TIMEOUT, "{b}");
    assert!(b["error"].is_string(), "answers are JSON: {b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_sha_is_a_commit_id_not_revision_syntax() {
    let w = World::with(&[PolicySpec::new("kg")
        .source("github")
        .matchers(&[])
        .target("checkout", "prod", &["apps/checkout/prod/**"])
        .mode(Mode::KnownGood)]);
    let s = server(&w, ConfigSpec::new());
    s.wait_ready();
    let before = refs(&w);
    for sha in ["main~5", ":/Initial", "main^{/Initial}", "HEAD@{1}"] {
        let mut ds = fixture("deployment_status.payload.json");
        ds["deployment"]["sha"] = sha.into();
        ds["deployment"]["environment"] = "prod".into();
        let body = serde_json::to_vec(&ds).unwrap();
        let (st, _, b) = s.send(gh_delivery("deployment_status", &body, None, &format!("kg-{}", sha.len()))).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{sha}: {b}");
        assert!(b["reason"].as_str().unwrap().contains("not a full commit id"), "{b}");
    }
    assert_eq!(refs(&w), before, "no known-good tag");
}

#[test]
fn one_person_cannot_approve_their_own_request_from_another_account() {
    let w = World::with(&[PolicySpec::new("test-policy")
        .mode(Mode::PullRequest)
        .chatops("allow", &["slack:UALICE", "github:alice"])
        .chatops("approve", &["slack:UALICE", "github:alice", "github:bob"])
        .set("chatops.two_person", true)
        .review("approvals", 2)]);
    w.write_config(&ConfigSpec::new().set("directory.people.alice", ["slack:UALICE", "github:alice"]));
    w.deploy("checkout", "prod", "1.5.0", 10);
    let ask = |who: &str, text: &str| chat_as(&w, Principal::new(who), text).text;
    let reply = ask("github:alice", "/rollback checkout prod");
    let id = reply.split("approve with `/rollback approve ").nth(1).unwrap().trim_end_matches('`').to_string();
    let id = id.lines().next().unwrap().trim_end_matches('`').to_string();
    for who in ["slack:UALICE", "github:ALICE", "github:Alice"] {
        let said = ask(who, &format!("/rollback approve {id}"));
        assert!(said.contains("two-person"), "{who}: {said}");
    }
    // bob approves twice (two accounts' worth of spelling): still one approval of two.
    assert!(ask("github:bob", &format!("/rollback approve {id}")).contains("1 of 2"));
    assert!(ask("github:BOB", &format!("/rollback approve {id}")).contains("1 of 2"));
    assert!(w.git(&["tag", "-l", "rollback/*"]).is_empty(), "nothing merged");
}

#[test]
fn a_freeze_is_bounded_and_a_resolve_from_before_the_rollback_verifies_nothing() {
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    let said = w.engine().freeze("all", None, Some("100000000d".parse().unwrap()), None, &Actor::cli("ops")).unwrap();
    assert!(said.starts_with("refused"), "{said}");
    let event = w.alert("checkout", "prod", "v1");
    w.engine().handle(&event, &Options::default()).unwrap();
    let resolved = rollbackd::parsers::Resolved {
        dedupe_key: event.dedupe_key.clone(),
        labels: event.labels.clone(),
        started_at: event.started_at.unwrap(),
        resolved_at: Some("2000-01-01T00:00:00Z".parse().unwrap()),
    };
    let said = w.engine().record_resolution(&resolved).unwrap();
    assert!(said.contains("not counted"), "{said}");
    assert!(w.git(&["notes", "--ref", "rollbackd", "list"]).is_empty(), "no note written");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_event_the_writer_refused_is_answered_from_memory() {
    let w = World::new();
    let s = server(&w, ConfigSpec::new());
    s.wait_ready();
    // A service with no files: the writer refuses it for good (no known-good state).
    let (st, _, first) = s.send(am(prod_alert("ghost"))).await;
    assert_eq!((st, first["outcome"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("error")), "{first}");
    let (st, _, again) = s.send(am(prod_alert("ghost"))).await;
    assert_eq!((st, again["outcome"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("refused")), "{again}");
    assert_eq!(again["reason"], first["reason"]);
}

/// Real payloads in shapes GitHub sends but a tidy fixture does not: a deployment payload as a
/// string holding JSON, a comment by a deleted account (`user: null`) with a null body.
#[test]
fn github_payloads_in_their_less_tidy_shapes_are_read() {
    let now: jiff::Timestamp = "2026-11-21T12:00:00Z".parse().unwrap();
    let mut ds = fixture("deployment_status.payload.json");
    ds["deployment_status"]["state"] = "failure".into();
    ds["deployment"]["payload"] = r#"{"service": "checkout", "blob": {"nested": true}}"#.into();
    let body = serde_json::to_vec(&ds).unwrap();
    match rollbackd::parsers::github("deployment_status", &body, &[], now).unwrap() {
        rollbackd::parsers::GithubEvent::Failure(e) => {
            assert_eq!(e.labels.get("payload_service").map(String::as_str), Some("checkout"), "{:?}", e.labels);
        }
        other => panic!("{other:?}"),
    }
    for odd in [json!(""), json!("not json"), json!(null), json!(["a"])] {
        ds["deployment"]["payload"] = odd.clone();
        let body = serde_json::to_vec(&ds).unwrap();
        assert!(rollbackd::parsers::github("deployment_status", &body, &[], now).is_ok(), "{odd}");
    }

    let mut c = fixture("issue_comment.created.payload.json");
    c["comment"]["user"] = serde_json::Value::Null;
    c["comment"]["body"] = serde_json::Value::Null;
    let body = serde_json::to_vec(&c).unwrap();
    match rollbackd::parsers::github("issue_comment", &body, &[], now).unwrap() {
        rollbackd::parsers::GithubEvent::Comment(comment) => assert_eq!(comment.body, ""),
        other => panic!("{other:?}"),
    }
}

/// A service whose first deploy is its only change has nothing to go back to: a rollback would
/// delete every file of it (and, with a controller that prunes, the workload). Denied whoever
/// asks and however (an alert over HTTP, a person's dry run on the CLI, break glass), with the
/// plan still shown; a policy must say `action.allow_removal: true`, and even then an empty
/// state never passes `require_immutable_artifacts`.
#[tokio::test(flavor = "multi_thread")]
async fn a_first_deploys_rollback_never_deletes_the_service() {
    let w = World::new();
    let first = w.deploy("newsvc", "prod", "1.0.0", 10);
    let before = branches_and_tags(&w);
    let said = format!("nothing to go back to: newsvc/prod has no state before {}", &first.0[..10]);

    let s = server(&w, ConfigSpec::new());
    s.wait_ready();
    let (st, _, b) = s.send(am(prod_alert("newsvc"))).await;
    assert_eq!((st, b["outcome"].as_str()), (StatusCode::OK, Some("denied")), "{b}");
    assert!(b["reason"].as_str().unwrap().contains(&said), "{b}");
    assert_eq!(branches_and_tags(&w), before, "the alert wrote something");
    drop(s);

    // A person's dry run: the plan is shown (a file removed, the image to none), and denied.
    let out = w.run_cli(&["rollback", "newsvc", "--env", "prod", "--dry-run", "--actor", "alice"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains(&said) && text.contains("apps/newsvc/prod/deployment.yaml"), "{text}");
    // Breaking glass does not delete a service either.
    let emergency = Options { emergency: true, ..Options::default() };
    let r = w.engine().handle(&w.request("newsvc", "prod", "glass"), &emergency).unwrap();
    match &r.outcome {
        Outcome::Denied { reason } => assert!(reason.contains(&said), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(r.plan.as_ref().is_some_and(|p| p.leaves_no_files), "{:?}", r.plan);
    assert_eq!(branches_and_tags(&w), before, "the CLI wrote something");
    assert_eq!(
        w.show("main", "apps/newsvc/prod/deployment.yaml").trim_end(),
        manifest("newsvc", "prod", &image("newsvc", "1.0.0")).trim_end()
    );

    // Allowed by the policy: the immutability guard still finds nothing pinned in an empty state.
    w.set_policies(&[PolicySpec::new("removal")
        .set("action.allow_removal", true)
        .guard("require_immutable_artifacts", true)]);
    let check = w.run_cli(&["check", "--offline"]);
    assert_eq!(check.status.code(), Some(0), "{}", String::from_utf8_lossy(&check.stdout));
    let r = w.engine().handle(&w.alert("newsvc", "prod", "after"), &Options::default()).unwrap();
    match &r.outcome {
        Outcome::Denied { reason } => assert!(reason.contains("the target state has no files"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(branches_and_tags(&w), before, "the guard let an empty state through");
    // Without that guard, a policy that allows removal removes.
    w.set_policies(&[PolicySpec::new("removal").set("action.allow_removal", true)]);
    let r = w.engine().handle(&w.alert("newsvc", "prod", "allowed"), &Options::default()).unwrap();
    assert_eq!(r.outcome.name(), "rolled_back", "{:?}", r.outcome);
    assert_eq!(w.git(&["ls-tree", "-r", "--name-only", "main", "apps/newsvc"]), "");
}
