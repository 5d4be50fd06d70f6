//! `/rollback` from Slack through the router: signatures and replays, the immediate ack, the
//! outcome posted to `response_url` (a local server), retries, and the review flow.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use crate::common::*;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use hmac::{Hmac, Mac};
use http_body_util::BodyExt;
use rollbackd::Config;
use rollbackd::{AppState, HttpSettings};
use rollbackd::{Clock, Engine};
use sha2::Sha256;
use tower::ServiceExt;

pub(super) const SECRET: &str = "slack-test-secret";
/// Prod through proposals; U1 may ask, U1 and U2 may approve, never their own.
fn policy() -> PolicySpec {
    PolicySpec::new("prod")
        .prod_only()
        .mode(Mode::PullRequest)
        .chatops("allow", &["slack:U1"])
        .chatops("approve", &["slack:U1", "slack:U2"])
        .set("chatops.two_person", true)
}

/// A stand-in for Slack's response_url: every POST body arrives on the channel.
pub(super) fn response_server() -> (String, Receiver<serde_json::Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/commands/T1/1/x", listener.local_addr().unwrap());
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
            let _ = tx.send(serde_json::from_slice(&body).unwrap_or_default());
        }
    });
    (url, rx)
}

pub(super) fn app(w: &World) -> Router {
    std::fs::write(w.root().join("slack-secrets"), format!("{SECRET}\n")).unwrap();
    let cfg = std::fs::read_to_string(w.config_path()).unwrap();
    std::fs::write(
        w.config_path(),
        format!("{cfg}sources:\n  slack:\n    signing_secrets_file: slack-secrets\n    response_url_prefix: \"http://127.0.0.1:\"\n"),
    )
    .unwrap();
    let (config, secrets) = Config::load(&w.config_path()).unwrap();
    let clock: Arc<dyn Clock> = w.clock.clone();
    let engine = Engine::new(config.clone(), secrets.clone(), clock.clone()).unwrap();
    let (handle, _j) = rollbackd::spawn_worker(engine, 8, Duration::from_secs(30));
    wait_for("ready", 20, || handle.shared().ready());
    rollbackd::router(
        AppState::new(&config, &secrets, rollbackd::Fleet::single(&config, handle), clock),
        &HttpSettings::from_config(&config),
    )
}

pub(super) fn form(user: &str, text: &str, trigger: &str, response_url: &str) -> String {
    serde_urlencoded::to_string([
        ("token", "x"),
        ("team_id", "T1"),
        ("channel_id", "C1"),
        ("user_id", user),
        ("user_name", "someone"),
        ("command", "/rollback"),
        ("text", text),
        ("response_url", response_url),
        ("trigger_id", trigger),
    ])
    .unwrap()
}

pub(super) fn signed(body: &str, ts: i64, extra: &[(&str, &str)]) -> Request<Body> {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    let sig: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let mut r = Request::post("/webhooks/slack")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", ts.to_string())
        .header("x-slack-signature", format!("v0={sig}"));
    for (k, v) in extra {
        r = r.header(*k, *v);
    }
    r.body(Body::from(body.to_string())).unwrap()
}

pub(super) async fn send(app: &Router, req: Request<Body>) -> (StatusCode, serde_json::Value) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}

pub(super) fn next(rx: &Receiver<serde_json::Value>) -> serde_json::Value {
    rx.recv_timeout(Duration::from_secs(30)).expect("an outcome posted to response_url")
}

#[tokio::test(flavor = "multi_thread")]
async fn signatures_replays_and_help() {
    let w = World::with(&[policy()]);
    let app = app(&w);
    let now = w.now().as_second();
    let (url, _rx) = response_server();
    let body = form("U1", "help", "t1", &url);

    let (st, _) = send(&app, signed(&body, now - 301, &[])).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "a replay of an old request");
    let (st, _) = send(&app, signed(&body, now + 301, &[])).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "from the future");
    let mut tampered = signed(&body, now, &[]);
    *tampered.body_mut() = Body::from(body.replace("U1", "U2"));
    assert_eq!(send(&app, tampered).await.0, StatusCode::UNAUTHORIZED);
    let unsigned = Request::post("/webhooks/slack")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(body.clone()))
        .unwrap();
    assert_eq!(send(&app, unsigned).await.0, StatusCode::UNAUTHORIZED);

    let (st, b) = send(&app, signed(&body, now, &[])).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(b["response_type"], "ephemeral");
    assert!(b["text"].as_str().unwrap().contains("/rollback approve"), "{b}");
    let (st, b) = send(&app, signed(&form("U1", "staus", "t2", &url), now, &[])).await;
    assert_eq!(st, StatusCode::OK);
    assert!(b["text"].as_str().unwrap().contains("did you mean `status`"), "{b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn request_is_acked_before_the_work_and_the_outcome_is_posted() {
    let w = World::with(&[policy()]);
    let _d = daemon(&w);
    let held = hold_pushes(&w);
    w.deploy("checkout", "prod", "1.5.0", 10);
    let app = app(&w);
    let now = w.now().as_second();
    let (url, rx) = response_server();

    let body = form("U1", "checkout prod because 5xx after 1.5.0", "trig-1", &url);
    let (st, b) = send(&app, signed(&body, now, &[])).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(b["response_type"], "ephemeral");
    assert!(b["text"].as_str().unwrap().starts_with("working on"), "{b}");
    // The ack came back while the push is still held by the hook: it did not wait for the work.
    held.wait_until_held();
    assert!(rx.try_recv().is_err(), "no outcome before the work is done");

    // Slack retries the same command: acknowledged, not run again.
    let (st, b) = send(&app, signed(&body, now, &[("x-slack-retry-num", "1")])).await;
    assert_eq!(st, StatusCode::OK);
    assert!(b["text"].as_str().unwrap().contains("already"), "{b}");

    held.release();
    let posted = next(&rx);
    assert_eq!(posted["response_type"], "in_channel");
    let text = posted["text"].as_str().unwrap();
    assert!(text.contains("proposed") && text.contains("/rollback approve rb-"), "{text}");
    assert_eq!(w.git(&["for-each-ref", "--format=%(refname)", "refs/heads/rollback/"]).lines().count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn approval_from_slack_keeps_the_two_person_rule_and_the_approver_list() {
    let w = World::with(&[policy()]);
    w.deploy("checkout", "prod", "1.5.0", 10);
    let app = app(&w);
    let now = w.now().as_second();
    let (url, rx) = response_server();
    send(&app, signed(&form("U1", "checkout prod because 5xx after 1.5.0", "trig-1", &url), now, &[])).await;
    let text = next(&rx)["text"].as_str().unwrap().to_string();
    let id = text.split("/rollback approve ").nth(1).unwrap().trim_end_matches('`').trim().to_string();

    // The requester cannot approve; someone not in chatops.approve cannot either.
    let (st, _) = send(&app, signed(&form("U1", &format!("approve {id}"), "trig-2", &url), now, &[])).await;
    assert_eq!(st, StatusCode::OK);
    let posted = next(&rx);
    assert_eq!(posted["response_type"], "ephemeral");
    assert!(posted["text"].as_str().unwrap().contains("two-person rule"), "{posted}");
    send(&app, signed(&form("U3", &format!("approve {id}"), "trig-3", &url), now, &[])).await;
    let posted = next(&rx);
    assert!(posted["text"].as_str().unwrap().contains("chatops.approve"), "{posted}");
    assert!(w.trailers("main", "Rollback-Id").is_empty(), "nothing merged yet");

    send(&app, signed(&form("U2", &format!("approve {id}"), "trig-4", &url), now, &[])).await;
    let posted = next(&rx);
    assert!(posted["text"].as_str().unwrap().contains("merged"), "{posted}");
    assert_eq!(w.trailers("main", "Rollback-Id"), [id.as_str()]);
    assert_eq!(w.trailers("main", "Rollback-Actor"), ["slack:U1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_person_not_allowed_to_ask_is_told_which_rule() {
    let w = World::with(&[policy()]);
    w.deploy("cart", "prod", "2.1.0", 10);
    let app = app(&w);
    let (url, rx) = response_server();
    let before = w.refs_of(&w.origin);
    send(&app, signed(&form("U7", "cart prod", "trig-5", &url), w.now().as_second(), &[])).await;
    let posted = next(&rx);
    assert!(posted["text"].as_str().unwrap().contains("not in chatops.allow"), "{posted}");
    assert_eq!(posted["response_type"], "ephemeral", "a denial goes to the asker alone");
    // Nothing rolled back; the denial itself is kept for `rollbackd explain`.
    let after = w.refs_of(&w.origin);
    let written: Vec<&str> = after.lines().filter(|l| !before.contains(*l)).collect();
    assert!(written.len() == 1 && written[0].starts_with("refs/notes/rollbackd-decisions "), "{written:?}");
    let note = w.git(&["notes", "--ref=rollbackd-decisions", "show", "main"]);
    assert!(note.contains("not in chatops.allow"), "{note}");
}

#[tokio::test(flavor = "multi_thread")]
async fn slacks_ssl_check_is_answered_before_the_signature_check_and_nothing_else_is() {
    let w = World::with(&[policy()]);
    let app = app(&w);
    // Slack checks the certificate of a slash command's URL with an unsigned form.
    let check = Request::post("/webhooks/slack")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from("ssl_check=1&token=gIkuvaNzQIHg97ATvDxqgjtO"))
        .unwrap();
    assert_eq!(send(&app, check).await.0, StatusCode::OK);
    // Anything else unsigned is still refused, the SSL check's field notwithstanding.
    let (url, _rx) = response_server();
    let sneaky = form("U1", "checkout prod", "t-ssl", &url) + "&ssl_check=0";
    let unsigned = Request::post("/webhooks/slack")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(sneaky))
        .unwrap();
    assert_eq!(send(&app, unsigned).await.0, StatusCode::UNAUTHORIZED);
    let json = Request::post("/webhooks/slack")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"ssl_check":"1"}"#))
        .unwrap();
    assert_eq!(send(&app, json).await.0, StatusCode::UNAUTHORIZED);
}

/// A response_url that answers 429 with `Retry-After: 3` once, then takes the post; each post's
/// arrival time goes on the channel.
fn rate_limited_response_server() -> (String, Receiver<std::time::Instant>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/commands/T1/1/x", listener.local_addr().unwrap());
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let answer: &[u8] = if n == 0 {
                b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 3\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
            };
            let _ = stream.write_all(answer);
            let _ = tx.send(std::time::Instant::now());
        }
    });
    (url, rx)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_response_url_that_asks_for_patience_gets_it() {
    let w = World::with(&[policy()]);
    let _d = daemon(&w);
    let app = app(&w);
    let now = w.now().as_second();
    let (url, rx) = rate_limited_response_server();
    let (st, _) = send(&app, signed(&form("U1", "status", "trig-ra", &url), now, &[])).await;
    assert_eq!(st, StatusCode::OK);
    let first = rx.recv_timeout(Duration::from_secs(30)).expect("the outcome posted");
    let second = rx.recv_timeout(Duration::from_secs(30)).expect("posted again");
    let waited = second - first;
    assert!(waited >= Duration::from_millis(2_500), "Retry-After: 3 was not waited out: {waited:?}");
}
