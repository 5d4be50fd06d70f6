//! Notifications: each outcome a person wants to know reaches the policy's channels once, with
//! its facts, threaded on Slack; a dead or failing receiver never delays a rollback.

use crate::common::http::*;
use crate::common::receiver::{Received, Receiver};
use crate::common::*;
use axum::http::StatusCode;
use rollbackd::Actor;
use rollbackd::{Options, Outcome};

/// A generic webhook and a Slack Web API channel on `r`, routed from `policy`.
fn world(r: &Receiver, policy: PolicySpec, extra: ConfigSpec) -> World {
    let w = World::with(&[policy.set("notify", ["oncall", "sre-slack"])]);
    std::fs::write(w.root().join("slack-token"), "xoxb-test-token\n").unwrap();
    w.write_config(
        &extra
            .set("notify.channels.oncall", json!({ "kind": "webhook", "url": format!("{}/hook", r.url) }))
            .set(
                "notify.channels.sre-slack",
                json!({ "kind": "slack_api", "token_file": "slack-token", "channel": "C0SRE", "api_url": format!("{}/api", r.url) }),
            )
            .set("notify.attempts", 3),
    );
    w
}

/// The next message on each channel, in whatever order they arrive.
fn next_pair(r: &Receiver) -> (serde_json::Value, serde_json::Value) {
    let (hook, slack) = next_received(r);
    (hook.body, slack.body)
}

fn next_received(r: &Receiver) -> (Received, Received) {
    let (a, b) = (r.next(), r.next());
    let (hook, slack) = if a.path == "/hook" { (a, b) } else { (b, a) };
    assert_eq!((hook.path.as_str(), slack.path.as_str()), ("/hook", "/api/chat.postMessage"));
    assert_eq!(slack.authorization.as_deref(), Some("Bearer xoxb-test-token"));
    (hook, slack)
}

#[test]
fn a_rollback_is_told_once_per_channel_with_its_facts_and_its_verification_in_the_thread() {
    let r = Receiver::start();
    let w = world(&r, PolicySpec::new("prod"), ConfigSpec::new());
    w.deploy("checkout", "prod", "1.5.0", 10);
    let mut engine = w.engine();
    let alert = w.alert("checkout", "prod", "fp1");
    let report = engine.handle(&alert, &Options::default()).unwrap();
    let Outcome::RolledBack { rollback } = &report.outcome else { panic!("{:?}", report.outcome) };

    let (hook, first) = next_received(&r);
    let (hook, slack) = (hook.body, first.body);
    assert_eq!(hook["event"], "rolled_back");
    assert_eq!(hook["rollback_id"], rollback.id.as_str());
    assert_eq!((hook["service"].as_str(), hook["env"].as_str()), (Some("checkout"), Some("prod")));
    assert_eq!(hook["trigger"], alert.trigger());
    assert_eq!(hook["commit"], w.head(), "the commit that is on main");
    assert_eq!(hook["known_good"], w.good.0);
    assert_eq!(hook["artifacts"][0]["new"], "registry.example.com/checkout:1.4.2", "{hook}");
    assert!(hook["text"].as_str().unwrap().contains("Rolled back checkout/prod"), "{hook}");
    assert_eq!(slack["channel"], "C0SRE");
    assert!(slack.get("thread_ts").is_none(), "the first message starts the thread: {slack}");
    assert!(slack["text"].as_str().unwrap().starts_with("*Rolled back checkout/prod*"), "{slack}");

    // Alertmanager repeats the alert: a duplicate, and nothing more is said about it. The next
    // message anyone gets is the resolution's.
    let again = engine.handle(&alert, &Options::default()).unwrap();
    assert!(matches!(again.outcome, Outcome::Duplicate { .. }));
    w.clock.advance(jiff::SignedDuration::from_mins(3));
    let resolved = World::resolved(&alert, w.now());
    engine.record_resolution(&resolved).unwrap();
    let (hook, slack) = next_pair(&r);
    assert_eq!(hook["event"], "verified", "{hook}");
    assert_eq!(hook["recovered_after_seconds"], 180);
    assert_eq!(slack["thread_ts"], first.ts.as_str(), "in the thread of the first message: {slack}");
}

/// One definition of each time, on every surface: time to rollback is from the alert's start
/// (and from receipt) to the push; time to recovery is from the push to the recovery. The
/// commit records both starts, and the note, the status, the notices and the docs agree.
#[test]
fn time_to_rollback_and_to_recovery_mean_the_same_everywhere() {
    let r = Receiver::start();
    let w = world(&r, PolicySpec::new("prod"), ConfigSpec::new());
    w.deploy("checkout", "prod", "1.5.0", 10);
    let mut engine = w.engine();
    // The alert began 5m ago (World::alert) and is received now: pushed at once.
    let alert = w.alert("checkout", "prod", "fp1");
    let report = engine.handle(&alert, &Options::default()).unwrap();
    assert!(matches!(report.outcome, Outcome::RolledBack { .. }), "{:?}", report.outcome);
    assert_eq!(w.trailers("main", "Rollback-Alert-Started"), [alert.started_at.unwrap().to_string()]);
    assert_eq!(w.trailers("main", "Rollback-Received"), [w.now().to_string()]);
    let (hook, _) = next_pair(&r);
    assert_eq!(
        (hook["time_to_rollback_seconds"].as_i64(), hook["time_to_rollback_from_receipt_seconds"].as_i64()),
        (Some(300), Some(0)),
        "{hook}"
    );
    let text = hook["text"].as_str().unwrap();
    assert!(text.contains("Time to rollback: 300s from the alert's start (0s from receipt) to the push"), "{text}");

    // Recovered 3m after the push.
    w.clock.advance(jiff::SignedDuration::from_mins(3));
    engine.record_resolution(&World::resolved(&alert, w.now())).unwrap();
    let (hook, _) = next_pair(&r);
    assert_eq!(
        (hook["event"].as_str(), hook["recovered_after_seconds"].as_i64()),
        (Some("verified"), Some(180)),
        "{hook}"
    );
    assert!(hook["text"].as_str().unwrap().contains("Time to recovery: 180s from the push to recovery"), "{hook}");
    let note = w.git(&["notes", "--ref=rollbackd", "show", "main"]);
    for line in ["Time-To-Rollback: 5m", "Time-To-Rollback-From-Receipt: 0s", "Time-To-Recovery: 3m"] {
        assert!(note.lines().any(|l| l == line), "{line}: {note}");
    }
    let view = serde_json::to_value(engine.status_view(true).unwrap()).unwrap();
    let recent = &view["recent"][0];
    assert_eq!(
        (&recent["time_to_rollback"], &recent["time_to_rollback_from_receipt"], &recent["time_to_recovery"]),
        (&json!("5m"), &json!("0s"), &json!("3m")),
        "{recent}"
    );

    // The docs say the same, in the metrics reference and after-the-rollback.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for doc in ["docs/metrics.md", "docs/after-the-rollback.md", "docs/server.md"] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap().split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(text.contains("**Time to rollback**: from the alert's start (and, separately, from rollbackd's receipt of the event) to the push"), "{doc}");
        assert!(text.contains("**Time to recovery**: from the push to the recovery"), "{doc}");
        assert!(!text.contains("newest bad commit to the rollback"), "{doc}: the old definition");
    }
}

#[test]
fn a_denial_names_the_guard_and_is_said_once() {
    let r = Receiver::start();
    let policy = PolicySpec::new("prod").guard("max_change_age", "1m").on_violation(OnViolation::Deny);
    let w = world(&r, policy, ConfigSpec::new());
    w.deploy("checkout", "prod", "1.5.0", 10);
    let mut engine = w.engine();
    for _ in 0..3 {
        let report = engine.handle(&w.alert("checkout", "prod", "fp1"), &Options::default()).unwrap();
        assert!(matches!(report.outcome, Outcome::Denied { .. }), "{:?}", report.outcome);
    }
    let (hook, _) = next_pair(&r);
    assert_eq!(hook["event"], "denied");
    assert!(hook["failed_guards"][0].as_str().unwrap().starts_with("max_change_age:"), "{hook}");
    // Three denials of one incident made one message; a second incident makes its own.
    engine.handle(&w.alert("checkout", "prod", "fp2"), &Options::default()).unwrap();
    let (hook, _) = next_pair(&r);
    assert!(hook["trigger"].as_str().unwrap().starts_with("alertmanager:fp2@"), "{hook}");
}

#[test]
fn a_dead_receiver_never_delays_a_rollback() {
    let r = Receiver::start();
    let w = world(&r, PolicySpec::new("prod"), ConfigSpec::new());
    w.deploy("checkout", "prod", "1.5.0", 10);
    w.deploy("cart", "prod", "2.1.0", 10);
    r.hold();
    let mut engine = w.engine();
    // Both rollbacks are pushed while the receiver has not answered the first message.
    for service in ["checkout", "cart"] {
        let report = engine.handle(&w.alert(service, "prod", service), &Options::default()).unwrap();
        assert!(matches!(report.outcome, Outcome::RolledBack { .. }), "{:?}", report.outcome);
    }
    assert_eq!(w.trailers("main", "Rollback-Service"), ["cart"]);
    r.next();
    r.release();
    let services: std::collections::BTreeSet<String> =
        (0..3).map(|_| r.next().body.to_string()).filter(|b| b.contains("\"rolled_back\"")).collect();
    assert!(services.iter().any(|b| b.contains("cart")), "the queued message goes out after: {services:?}");
}

#[test]
fn a_failing_receiver_is_tried_again_then_given_up() {
    let r = Receiver::start();
    let w = World::with(&[PolicySpec::new("prod").set("notify", ["oncall"])]);
    w.write_config(
        &ConfigSpec::new()
            .set("notify.channels.oncall", json!({ "kind": "webhook", "url": format!("{}/hook", r.url) }))
            .set("notify.attempts", 3),
    );
    w.deploy("checkout", "prod", "1.5.0", 10);
    w.deploy("cart", "prod", "2.1.0", 10);
    r.answer(503);
    let mut engine = w.engine();
    engine.handle(&w.alert("checkout", "prod", "fp1"), &Options::default()).unwrap();
    let tries: Vec<String> = (0..3).map(|_| r.next().body["rollback_id"].to_string()).collect();
    assert!(tries.iter().all(|t| t == &tries[0]), "the same message, three times: {tries:?}");
    // A refusal that will not change (400) is not retried: the next request is a new message.
    r.answer(400);
    engine.handle(&w.alert("cart", "prod", "fp2"), &Options::default()).unwrap();
    assert_eq!(r.next().body["service"], "cart");
    r.answer(200);
    let report = engine.handle(&w.alert("checkout", "prod", "fp1"), &Options::default()).unwrap();
    assert!(matches!(report.outcome, Outcome::Duplicate { .. }));
    let mut engine = w.engine();
    engine.freeze("all", None, None, None, &Actor::cli("cli:ops")).unwrap();
    w.deploy("checkout", "prod", "1.6.0", 1);
    drop(engine);
    let mut engine = w.engine();
    engine.handle(&w.alert("checkout", "prod", "fp3"), &Options::default()).unwrap();
    let next = r.next().body;
    assert_eq!(next["event"], "frozen", "the refused message was not sent again: {next}");
}

#[tokio::test(flavor = "multi_thread")]
async fn notify_mode_tells_the_decision_and_writes_nothing() {
    let r = Receiver::start();
    let w = world(&r, PolicySpec::new("watch").mode(Mode::Notify), ConfigSpec::new());
    w.deploy("checkout", "prod", "1.5.0", 10);
    let s = server(&w, ConfigSpec::new());
    s.wait_ready();
    let before = w.refs_of(&w.origin);
    let (st, _, b) = s.send(am(alert_body("fp1", "checkout", "firing"))).await;
    assert_eq!((st, b["outcome"].as_str()), (StatusCode::OK, Some("notified")), "{b}");
    let (hook, _) = next_pair(&r);
    assert_eq!(hook["event"], "notified");
    assert!(hook["reason"].as_str().unwrap().contains("only notifies"), "{hook}");
    assert_eq!(w.refs_of(&w.origin), before);
}

#[test]
fn a_freeze_is_told_as_frozen() {
    let r = Receiver::start();
    let w = world(&r, PolicySpec::new("prod"), ConfigSpec::new());
    w.deploy("checkout", "prod", "1.5.0", 10);
    let mut engine = w.engine();
    engine.freeze("checkout", Some("prod"), None, Some("launch"), &Actor::cli("cli:ops")).unwrap();
    let report = engine.handle(&w.alert("checkout", "prod", "fp1"), &Options::default()).unwrap();
    assert!(matches!(report.outcome, Outcome::Proposed { .. }), "{:?}", report.outcome);
    let (hook, _) = next_pair(&r);
    assert_eq!(hook["event"], "frozen");
    assert!(hook["reason"].as_str().unwrap().contains("launch"), "{hook}");
}

#[test]
fn an_unreachable_origin_is_told_as_failed() {
    let r = Receiver::start();
    let w = world(&r, PolicySpec::new("prod"), ConfigSpec::new().set("git.fetch_freshness", "0s"));
    w.deploy("checkout", "prod", "1.5.0", 10);
    let mut engine = w.engine();
    std::fs::rename(&w.origin, w.root().join("origin-away.git")).unwrap();
    let err = engine.handle(&w.alert("checkout", "prod", "fp1"), &Options::default()).unwrap_err();
    assert!(err.is_transient(), "{err}");
    let (hook, _) = next_pair(&r);
    assert_eq!(hook["event"], "failed");
    assert!(hook["reason"].as_str().unwrap().contains("origin"), "{hook}");
}

#[test]
fn on_github_an_incident_gets_one_issue_and_its_later_states_are_comments_on_it() {
    use crate::common::fake_github::{FakeGithub, TOKEN};
    let w = World::with(&[PolicySpec::new("prod").set("notify", ["repo"]).set("verify", json!({ "within": "10m" }))]);
    let gh = FakeGithub::start(w.origin.clone());
    std::fs::write(w.root().join("gh-token"), TOKEN).unwrap();
    w.write_config(
        &ConfigSpec::new()
            .github_forge(&gh.url, "gh-token")
            .set("notify.channels.repo", json!({ "kind": "github_issue" }))
            .set("git.fetch_freshness", "0s"),
    );
    w.deploy("checkout", "prod", "1.5.0", 10);
    let mut engine = w.engine();
    engine.handle(&w.alert("checkout", "prod", "fp1"), &Options::default()).unwrap();
    w.clock.advance(jiff::SignedDuration::from_mins(10));
    engine.verify_due().unwrap();
    // Finishing waits for what is queued to be delivered.
    engine.into_inner().finish().wait(rollbackd::FINISH_WITHIN);
    let issues = gh.issues();
    assert_eq!(issues.len(), 1, "{issues:?}");
    let (title, body, labels) = &issues[0];
    assert_eq!(title, "Rolled back checkout/prod");
    assert!(body.contains("Trigger: alertmanager:fp1@"), "{body}");
    assert!(body.contains("Alert: 5xx above 5%"), "the alert's summary: {body}");
    // Escaped for Markdown as every value is (a link cannot be made by a sender's text).
    let commit_url = format!("/acme/config/commit/{}>", w.head());
    assert!(body.contains(&commit_url), "the commit on the forge: {body}");
    assert_eq!(labels, &["rollback", "rollback:rolled_back"]);
    let comments: Vec<(u64, String)> = gh.comments();
    let on_issue: Vec<&String> = comments.iter().filter(|(n, _)| *n == 501).map(|(_, t)| t).collect();
    assert_eq!(on_issue.len(), 2, "{comments:?}");
    assert!(on_issue[0].contains("Not recovered after the rollback of checkout/prod"), "{}", on_issue[0]);
    assert!(on_issue[1].contains("Escalated"), "{}", on_issue[1]);
    gh.finish();
}

#[test]
fn a_cli_rollback_is_told_before_the_process_exits() {
    let r = Receiver::start();
    let w = world(&r, PolicySpec::new("prod"), ConfigSpec::new());
    w.deploy("checkout", "prod", "1.5.0", 10);
    let out = w.run_cli(&["rollback", "checkout", "--env", "prod", "--reason", "5xx", "--actor", "alice"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let (hook, _) = next_pair(&r);
    assert_eq!((hook["event"].as_str(), hook["actor"].as_str()), (Some("rolled_back"), Some("cli:alice")), "{hook}");
}

#[test]
fn a_proposal_is_told_as_proposed_with_its_commit() {
    let r = Receiver::start();
    let w = world(&r, PolicySpec::new("prod").mode(Mode::PullRequest), ConfigSpec::new());
    w.deploy("checkout", "prod", "1.5.0", 10);
    let mut engine = w.engine();
    let report = engine.handle(&w.alert("checkout", "prod", "fp1"), &Options::default()).unwrap();
    let Outcome::Proposed { rollback } = &report.outcome else { panic!("{:?}", report.outcome) };
    let (hook, slack) = next_pair(&r);
    assert_eq!(hook["event"], "proposed");
    assert_eq!(hook["commit"], rollback.commit.0.as_str());
    assert!(hook["reason"].as_str().unwrap().contains(&rollback.branch), "{hook}");
    assert!(slack["text"].as_str().unwrap().starts_with("*Proposed a rollback of checkout/prod*"), "{slack}");
}

#[test]
fn a_rolled_back_notice_carries_the_alerts_summary_and_its_link_escaped_for_each_channel() {
    let r = Receiver::start();
    let w = world(&r, PolicySpec::new("prod"), ConfigSpec::new());
    w.deploy("checkout", "prod", "1.5.0", 10);
    let mut engine = w.engine();
    let mut alert = w.alert("checkout", "prod", "fp1");
    let url = "http://prom.example/graph?g0.expr=rate(http_5xx[5m])";
    alert.annotations.insert("summary".into(), "5xx above 5% <!channel>".into());
    alert.annotations.insert("generator_url".into(), url.into());
    let report = engine.handle(&alert, &Options::default()).unwrap();
    assert!(matches!(report.outcome, Outcome::RolledBack { .. }), "{:?}", report.outcome);

    let (hook, slack) = next_pair(&r);
    assert_eq!(hook["event"], "rolled_back");
    assert_eq!(hook["summary"], "5xx above 5% <!channel>", "{hook}");
    assert_eq!(hook["trigger_url"], url, "{hook}");
    let text = hook["text"].as_str().unwrap();
    assert!(text.contains("Alert: 5xx above 5% <!channel>") && text.contains(&format!("<{url}>")), "{text}");
    // On Slack the summary cannot mention anyone: it arrives escaped, as every value does.
    let text = slack["text"].as_str().unwrap();
    assert!(text.contains("Alert: 5xx above 5% &lt;!channel&gt;"), "{text}");
    assert!(!text.contains("<!channel>"), "{text}");
    assert!(text.contains(&format!("<{url}>")), "{text}");
}

#[test]
fn an_escalation_after_a_failed_step_back_names_the_rollback_it_follows_and_its_artifacts() {
    let r = Receiver::start();
    let w = World::with(&[PolicySpec::new("prod")
        .set("notify", ["oncall"])
        .set("verify", json!({ "within": "10m", "on_failure": "step_back", "max_steps": 1 }))]);
    w.write_config(
        &ConfigSpec::new()
            .set("notify.channels.oncall", json!({ "kind": "webhook", "url": format!("{}/hook", r.url) }))
            .set("git.fetch_freshness", "0s"),
    );
    w.deploy("checkout", "prod", "1.5.0", 10);
    let mut engine = w.engine();
    let mut alert = w.alert("checkout", "prod", "fp1");
    let url = "http://prom.example/graph?g0.expr=up";
    alert.annotations.insert("generator_url".into(), url.into());
    let Outcome::RolledBack { rollback: first } = engine.handle(&alert, &Options::default()).unwrap().outcome else {
        panic!("not rolled back")
    };
    let image = |v: &str| format!("registry.example.com/checkout:{v}");
    let told: Vec<serde_json::Value> = {
        w.clock.advance(jiff::SignedDuration::from_mins(10));
        engine.verify_due().unwrap();
        w.clock.advance(jiff::SignedDuration::from_mins(10));
        let said = engine.verify_due().unwrap();
        assert!(said[0].contains("escalated"), "{said:?}");
        (0..5).map(|_| r.next().body).collect()
    };
    let events: Vec<&str> = told.iter().map(|b| b["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["rolled_back", "not_recovered", "stepped_back", "not_recovered", "escalated"]);
    let step = w.head();

    // The step back says which rollback it stepped back from, and what that one changed.
    let stepped = &told[2];
    assert_eq!(stepped["commit"], step.as_str(), "{stepped}");
    assert_eq!(stepped["follows"]["rollback_id"], first.id.as_str(), "{stepped}");
    assert_eq!(stepped["follows"]["commit"], first.commit.0.as_str(), "{stepped}");

    // The escalation: about the step back (its artifacts), after the first rollback (its id,
    // commit and artifacts), with the alert's summary and link though no alert is at hand.
    let escalated = &told[4];
    assert_ne!(escalated["rollback_id"], first.id.as_str(), "{escalated}");
    assert_eq!(escalated["commit"], step.as_str(), "{escalated}");
    assert_eq!(escalated["artifacts"][0]["old"], image("1.4.2"), "{escalated}");
    assert_eq!(escalated["artifacts"][0]["new"], image("1.4.0"), "{escalated}");
    assert_eq!(escalated["follows"]["rollback_id"], first.id.as_str(), "{escalated}");
    assert_eq!(escalated["follows"]["commit"], first.commit.0.as_str(), "{escalated}");
    assert_eq!(escalated["follows"]["artifacts"][0]["old"], image("1.5.0"), "{escalated}");
    assert_eq!(escalated["follows"]["artifacts"][0]["new"], image("1.4.2"), "{escalated}");
    assert_eq!(escalated["summary"], "5xx above 5%", "{escalated}");
    assert_eq!(escalated["trigger_url"], url, "{escalated}");
    let text = escalated["text"].as_str().unwrap();
    assert!(text.contains(&format!("After rollback {} ({})", first.id, &first.commit.0[..12])), "{text}");
}
