//! The webhook server through its router (no socket): every status code, real recorded GitHub
//! payloads signed in the test, and the rollback commits they lead to on the origin.

use crate::common::http::*;
use crate::common::*;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use rollbackd::Config;
use rollbackd::Engine;
use rollbackd::{AppState, HttpSettings};
use tower::ServiceExt;

#[tokio::test(flavor = "multi_thread")]
async fn bad_alertmanager_requests_get_their_status_and_write_nothing() {
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    let s = server(&w, ConfigSpec::new().set("server.body_limit", 4096));
    s.wait_ready();
    let body = alert_body("fp1", "checkout", "firing");
    let json = ("content-type", "application/json");
    let bearer = format!("Bearer {TOKEN}");
    let before = w.count_commits();

    // Every case is checked and every miss reported: one wrong status does not hide the rest.
    let cases: Vec<(&str, Request<Body>, StatusCode, &str)> = vec![
        ("no credentials", post("/webhooks/alertmanager", body.clone(), &[json]), StatusCode::UNAUTHORIZED, ""),
        (
            "wrong token",
            post("/webhooks/alertmanager", body.clone(), &[json, ("authorization", "Bearer nope")]),
            StatusCode::UNAUTHORIZED,
            "",
        ),
        (
            "not JSON",
            post("/webhooks/alertmanager", body.clone(), &[("authorization", &bearer), ("content-type", "text/plain")]),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "",
        ),
        (
            "no startsAt",
            am(r#"{"version":"4","alerts":[{"status":"firing"}]}"#.into()),
            StatusCode::BAD_REQUEST,
            "startsAt",
        ),
        ("cut short", am("{\"version\": ".into()), StatusCode::BAD_REQUEST, "line 1"),
        ("too big", am(format!("{}{}", body, " ".repeat(5000))), StatusCode::PAYLOAD_TOO_LARGE, "server.body_limit"),
        ("no route", Request::get("/no/such/route").body(Body::empty()).unwrap(), StatusCode::NOT_FOUND, ""),
    ];
    let mut misses = Vec::new();
    for (case, req, want, says) in cases {
        let (st, _, b) = s.send(req).await;
        let error = b["error"].as_str().unwrap_or_default();
        if st != want || !error.contains(says) {
            misses.push(format!("{case}: want {want} saying {says:?}, got {st} {b}"));
        }
    }
    assert!(misses.is_empty(), "{misses:#?}");
    assert_eq!(w.count_commits(), before, "nothing written");
    let (_, _, b) = s.send(Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert!(b.as_str().unwrap().contains("rollbackd_webhook_auth_failures_total"), "{b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alert_rolls_back_once_repeats_are_duplicates_and_its_resolve_is_noted() {
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    let s = server(&w, ConfigSpec::new());
    s.wait_ready();
    let body = alert_body("fp1", "checkout", "firing");
    let json = [("content-type", "application/json")];
    let before = w.count_commits();
    let (st, _, b) = s.send(am(body.clone())).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["outcome"], "rolled_back", "{b}");
    assert_eq!(b["commit"].as_str().unwrap(), w.head());
    assert!(b["rollback_id"].as_str().unwrap().starts_with("rb-"));
    assert_eq!(w.count_commits(), before + 1);

    // Alertmanager repeats; its HA peer sends the same; basic auth works as well as bearer.
    let basic = format!("Basic {}", base64_encode(&format!("am:{TOKEN}")));
    let (st, _, b) = s.send(post("/webhooks/alertmanager", body.clone(), &[json[0], ("authorization", &basic)])).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(b["outcome"], "duplicate", "{b}");
    assert_eq!(w.count_commits(), before + 1);

    let (st, _, b) = s.send(Request::get("/api/v1/rollbacks?service=checkout").body(Body::empty()).unwrap()).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(b["rollbacks"][0]["commit"].as_str().unwrap(), w.head());
    let (st, _, b) = s.send(Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!(st, StatusCode::OK);
    let text = b.as_str().unwrap();
    assert!(text.contains(r#"rollbackd_events_total{source="alertmanager",outcome="duplicate"}"#), "{text}");
    assert!(text.contains("rollbackd_time_to_rollback_seconds"), "{text}");

    // The incident resolves: the rollback commit gets a verification note on the origin.
    let (st, _, b) = s.send(am(alert_body("fp1", "checkout", "resolved"))).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["outcome"], "recorded", "{b}");
    let note = w.git(&["notes", "--ref=rollbackd", "show", "main"]);
    // Resolved as it was pushed (the world's clock stands still): recovery took no time.
    assert!(note.contains("Time-To-Recovery: 0s") && note.contains("Incident: alertmanager:fp1@"), "{note}");
    assert!(note.contains("Time-To-Rollback: 5m\n"), "from the alert's start: {note}");
    let (_, _, b) = s.send(am(alert_body("fp1", "checkout", "resolved"))).await;
    assert!(b["reason"].as_str().unwrap().contains("recorded already (verified)"), "{b}");
}

fn base64_encode(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test(flavor = "multi_thread")]
async fn unconfigured_source_has_no_route() {
    let w = World::new();
    let (config, secrets) = Config::load(&w.config_path()).unwrap();
    let engine = Engine::new(config.clone(), secrets.clone(), w.clock.clone()).unwrap();
    let (handle, _j) = rollbackd::spawn_worker(engine, 4, std::time::Duration::from_secs(30));
    let app = rollbackd::router(
        AppState::new(&config, &secrets, rollbackd::Fleet::single(&config, handle), w.clock.clone()),
        &HttpSettings::from_config(&config),
    );
    for path in ["/webhooks/alertmanager", "/webhooks/github"] {
        let resp = app.clone().oneshot(post(path, "{}", &[("content-type", "application/json")])).await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_origin_is_503_and_not_ready() {
    let w = World::new();
    let cfg =
        std::fs::read_to_string(w.config_path()).unwrap().replace("url: origin.git", "url: /nonexistent/origin.git");
    std::fs::write(w.config_path(), cfg).unwrap();
    let s = server(&w, ConfigSpec::new());
    let (st, _, _) = s.send(Request::get("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _, _) = s.send(Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    let (st, headers, b) = s.send(am(alert_body("fp", "checkout", "firing"))).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert!(headers.contains_key("retry-after"));
    assert!(b["reason"].as_str().unwrap().contains("cannot reach the config repo"), "{b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_push_answers_202_then_a_full_queue_answers_503() {
    let w = World::new();
    let _d = daemon(&w);
    let held = hold_pushes(&w);
    w.deploy("checkout", "prod", "1.5.0", 10);
    w.deploy("cart", "prod", "2.1.0", 10);
    let s = server(&w, ConfigSpec::new().set("server.queue", 1).set("server.response_deadline", "300ms"));
    s.wait_ready();

    let (st, _, b) = s.send(am(alert_body("a", "checkout", "firing"))).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b["outcome"], "accepted");
    held.wait_until_held();
    let (st, _, _) = s.send(am(alert_body("b", "cart", "firing"))).await;
    assert_eq!(st, StatusCode::ACCEPTED, "queued behind the first");
    let (st, headers, b) = s.send(am(alert_body("c", "cart", "firing"))).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert_eq!(headers.get("retry-after").unwrap(), "5");

    held.release();
    wait_for("both rollbacks", 30, || w.git(&["tag", "-l", "rollback/*"]).lines().count() == 2);
    // The sender's retry of the first delivery now learns the result.
    wait_for("the snapshot", 10, || {
        s.worker.shared().snapshot().find_trigger("alertmanager:a@2026-11-21T11:55:00Z").is_some()
    });
    let (st, _, b) = s.send(am(alert_body("a", "checkout", "firing"))).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(b["outcome"], "duplicate");
}

/// A failed `deploy` workflow reverts its commit; a successful deployment marks known-good.
fn github_policies() -> [PolicySpec; 2] {
    [
        PolicySpec::new("deploy-workflow-failed")
            .source("github")
            .matchers(&["event=\"workflow_run\"", "workflow=\"deploy\""])
            .target("checkout", "prod", &["apps/checkout/prod/**"])
            .set("target.to", "{{ labels.sha }}~1")
            .strategy(Strategy::Revert),
        PolicySpec::new("deployed")
            .source("github")
            .matchers(&["event=\"deployment_status\"", "state=\"success\""])
            .target(
                "{{ labels.payload_service }}",
                "{{ labels.environment }}",
                &["apps/{{ labels.payload_service }}/{{ labels.environment }}/**"],
            )
            .set("action", json!({ "mode": Mode::KnownGood })),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn github_signatures_and_malformed_deliveries_are_refused() {
    let w = World::with(&github_policies());
    let s = server(&w, ConfigSpec::new());
    s.wait_ready();

    // Signature: absent, wrong, or over other bytes → 401 before anything is parsed.
    let ping = serde_json::to_vec(&fixture("ping.payload.json")).unwrap();
    let (st, _, _) = s
        .send(post(
            "/webhooks/github",
            ping.clone(),
            &[("content-type", "application/json"), ("x-github-event", "ping")],
        ))
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _, _) = s.send(gh("ping", &ping, Some("sha256=00"))).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _, _) = s.send(gh("ping", b"not json", Some(&sign(&ping)))).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _, b) = s.send(gh("ping", &ping, None)).await;
    assert_eq!((st, b["outcome"].as_str()), (StatusCode::OK, Some("ignored")), "{b}");
    assert!(b["reason"].as_str().unwrap().contains("pong"));
    let no_event = post(
        "/webhooks/github",
        ping.clone(),
        &[("content-type", "application/json"), ("x-hub-signature-256", &sign(&ping))],
    );
    assert_eq!(s.send(no_event).await.0, StatusCode::BAD_REQUEST);
    let (st, _, b) = s.send(gh("workflow_run", b"{\"action\":1}", None)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn recorded_github_deliveries_that_report_no_failure_are_ignored() {
    let w = World::with(&github_policies());
    w.deploy("checkout", "prod", "1.5.0", 10);
    let s = server(&w, ConfigSpec::new());
    s.wait_ready();
    let before = w.head();
    // Recorded deliveries as they are: a successful run, comments, pushes.
    let mut misses = Vec::new();
    for (event, file) in [
        ("workflow_run", "workflow_run.completed.payload.json"),
        ("check_suite", "check_suite.completed.payload.json"),
        ("issue_comment", "issue_comment.created.payload.json"),
        ("push", "push.payload.json"),
        ("pull_request", "pull_request.opened.payload.json"),
    ] {
        let body = serde_json::to_vec(&fixture(file)).unwrap();
        let (st, _, b) = s.send(gh(event, &body, None)).await;
        if (st, b["outcome"].as_str()) != (StatusCode::OK, Some("ignored")) {
            misses.push(format!("{event}: {st} {b}"));
        }
    }
    assert!(misses.is_empty(), "{misses:#?}");
    assert_eq!(w.head(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_deploy_workflow_reverts_its_commit_once() {
    let w = World::with(&github_policies());
    let bad = w.deploy("checkout", "prod", "1.5.0", 10);
    let s = server(&w, ConfigSpec::new());
    s.wait_ready();
    let mut run = fixture("workflow_run.completed.payload.json");
    run["workflow_run"]["conclusion"] = "failure".into();
    run["workflow_run"]["name"] = "deploy".into();
    run["workflow_run"]["head_sha"] = bad.0.clone().into();
    let body = serde_json::to_vec(&run).unwrap();
    let (st, _, b) = s.send(gh("workflow_run", &body, None)).await;
    assert_eq!((st, b["outcome"].as_str()), (StatusCode::OK, Some("rolled_back")), "{b}");
    assert_eq!(w.trailers("main", "Rollback-Of"), [bad.0.as_str()]);
    assert_eq!(w.trailers("main", "Rollback-Trigger"), ["github:workflow_run/289782451/1"]);
    // GitHub redelivers.
    let head = w.head();
    let (_, _, b) = s.send(gh("workflow_run", &body, None)).await;
    assert_eq!(b["outcome"], "duplicate", "{b}");
    assert_eq!(w.head(), head);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_successful_deployment_tags_known_good_once() {
    let w = World::with(&github_policies());
    let s = server(&w, ConfigSpec::new());
    s.wait_ready();
    let head = w.head();
    let mut ds = fixture("deployment_status.payload.json");
    ds["deployment"]["sha"] = head.clone().into();
    ds["deployment"]["environment"] = "prod".into();
    ds["deployment"]["payload"] = serde_json::json!({ "service": "checkout" });
    let body = serde_json::to_vec(&ds).unwrap();
    let (st, _, b) = s.send(gh("deployment_status", &body, None)).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert!(b["reason"].as_str().unwrap().contains("tagged known-good/checkout/prod/20190515T152055Z"), "{b}");
    assert_eq!(w.git(&["rev-parse", "known-good/checkout/prod/20190515T152055Z^{commit}"]), head);
    // The same signed delivery replayed does nothing; a new delivery of the same status finds the tag.
    let (_, _, b) = s.send(gh("deployment_status", &body, None)).await;
    assert!(b["reason"].as_str().unwrap().contains("received before"), "{b}");
    let (_, _, b) = s.send(gh_delivery("deployment_status", &body, None, "d-2")).await;
    assert!(b["reason"].as_str().unwrap().contains("exists"), "{b}");
    assert_eq!(w.git(&["tag", "-l", "known-good/checkout/prod/*"]).lines().count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_that_cannot_render_its_target_is_422() {
    let w = World::with(&[PolicySpec::new("broken").source("alertmanager").matchers(&[]).target(
        "{{ labels.team }}",
        "prod",
        &["apps"],
    )]);
    let s = server(&w, ConfigSpec::new());
    s.wait_ready();
    let (st, _, b) = s.send(am(alert_body("fp", "checkout", "firing"))).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert!(b["reason"].as_str().unwrap().contains("policy `broken`"), "{b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_past_the_request_timeout_is_408() {
    let w = World::new();
    let _d = daemon(&w);
    let held = hold_pushes(&w);
    w.deploy("checkout", "prod", "1.5.0", 10);
    let s = server(&w, ConfigSpec::new().set("server.request_timeout", "300ms").set("server.response_deadline", "60s"));
    s.wait_ready();
    let (st, _, _) = s.send(am(alert_body("slow", "checkout", "firing"))).await;
    assert_eq!(st, StatusCode::REQUEST_TIMEOUT);
    held.release();
    // The work itself was not lost: the rollback lands, and the retry says so.
    wait_for("the rollback", 30, || w.git(&["tag", "-l", "rollback/*"]).lines().count() == 1);
    wait_for("the snapshot", 10, || s.worker.shared().snapshot().records.len() == 1);
    let (st, _, b) = s.send(am(alert_body("slow", "checkout", "firing"))).await;
    assert_eq!((st, b["outcome"].as_str()), (StatusCode::OK, Some("duplicate")), "{b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_need_the_admin_token_when_one_is_set() {
    let w = World::new();
    std::fs::write(w.root().join("admin-token"), "admin-secret-1\n").unwrap();
    let s = server(&w, ConfigSpec::new().set("admin.token_file", "admin-token"));
    s.wait_ready();
    let get = |path: &str, token: Option<&str>| {
        let mut r = Request::get(path);
        if let Some(t) = token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        r.body(Body::empty()).unwrap()
    };
    let basic = |path: &str, password: &str| {
        use base64::Engine as _;
        let credentials = base64::engine::general_purpose::STANDARD.encode(format!("on-call:{password}"));
        Request::get(path).header("authorization", format!("Basic {credentials}")).body(Body::empty()).unwrap()
    };
    for path in ["/", "/metrics", "/api/v1/rollbacks", "/api/v1/status"] {
        let (st, headers, b) = s.send(get(path, None)).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{path}: {b}");
        assert!(b["error"].as_str().unwrap().contains("Bearer"), "answers are JSON: {b}");
        // A browser asks for the token as a password.
        assert_eq!(headers["www-authenticate"], "Basic realm=\"rollbackd admin\"");
        assert_eq!(s.send(get(path, Some("wrong"))).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(s.send(basic(path, "wrong")).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(s.send(get(path, Some("admin-secret-1"))).await.0, StatusCode::OK, "{path}");
        assert_eq!(s.send(basic(path, "admin-secret-1")).await.0, StatusCode::OK, "{path}");
    }
    // Health and webhooks are not behind it.
    assert_eq!(s.send(get("/healthz", None)).await.0, StatusCode::OK);
    let (st, _, _) = s.send(am(alert_body("t1", "checkout", "firing"))).await;
    assert_eq!(st, StatusCode::OK);
}

#[test]
fn with_an_admin_listener_the_reads_leave_the_public_one() {
    let w = World::new();
    let port = free_port();
    w.write_config(&ConfigSpec::new().set("admin.listen", format!("127.0.0.1:{port}")));
    let config = Config::load(&w.config_path()).unwrap().0;
    let settings = HttpSettings::from_config(&config);
    assert!(settings.admin_apart);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let engine = Engine::new(config.clone(), Default::default(), w.clock.clone()).unwrap();
    let (handle, _j) = rollbackd::spawn_worker(engine, 4, std::time::Duration::from_secs(30));
    let state = AppState::new(&config, &Default::default(), rollbackd::Fleet::single(&config, handle), w.clock.clone());
    let public = rollbackd::router(state.clone(), &settings);
    let admin = rollbackd::admin_router(state, &settings);
    rt.block_on(async {
        let status = |app: axum::Router, path: &'static str| async move {
            app.oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap().status()
        };
        assert_eq!(status(public.clone(), "/metrics").await, StatusCode::NOT_FOUND);
        assert_eq!(status(public.clone(), "/api/v1/rollbacks").await, StatusCode::NOT_FOUND);
        assert_eq!(status(admin.clone(), "/metrics").await, StatusCode::OK);
        assert_eq!(status(admin.clone(), "/healthz").await, StatusCode::OK);
        let post = Request::post("/webhooks/alertmanager").body(Body::empty()).unwrap();
        assert_eq!(admin.oneshot(post).await.unwrap().status(), StatusCode::NOT_FOUND, "no webhooks on admin");
    });
}

/// Repeats of an alert already handled are answered from memory, the same answer each time and
/// each counted; once git no longer holds the rollback they name (history rewritten by hand
/// and its tag deleted), the next repeat is worked out again and rolls back again.
#[tokio::test(flavor = "multi_thread")]
async fn repeats_are_answered_from_memory_until_the_rollback_they_name_is_gone() {
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    let before = w.head();
    let s = server(&w, ConfigSpec::new());
    s.wait_ready();
    let body = alert_body("storm", "checkout", "firing");
    let (st, _, b) = s.send(am(body.clone())).await;
    assert_eq!((st, b["outcome"].as_str()), (StatusCode::OK, Some("rolled_back")), "{b}");
    let first = b["commit"].as_str().unwrap().to_string();

    // Counters are the process's, shared with tests running beside this one: at least these three.
    let duplicates = || async {
        let (_, _, m) = s.send(Request::get("/metrics").body(Body::empty()).unwrap()).await;
        let line = r#"rollbackd_events_total{source="alertmanager",outcome="duplicate"} "#;
        m.as_str().unwrap().lines().find_map(|l| l.strip_prefix(line)).map_or(0.0, |v| v.parse::<f64>().unwrap())
    };
    let counted = duplicates().await;
    let mut repeats = Vec::new();
    for _ in 0..3 {
        let (st, _, b) = s.send(am(body.clone())).await;
        assert_eq!(
            (st, b["outcome"].as_str(), b["commit"].as_str()),
            (StatusCode::OK, Some("duplicate"), Some(first.as_str())),
            "{b}"
        );
        repeats.push(b);
    }
    assert!(repeats.iter().all(|b| *b == repeats[0]), "{repeats:#?}");
    assert!(duplicates().await >= counted + 3.0, "each repeat is counted");

    // Someone takes the rollback out of history by hand, and its tag with it.
    w.git(&["update-ref", "refs/heads/main", &before]);
    for tag in w.git(&["tag", "-l", "rollback/*"]).lines() {
        w.git(&["tag", "-d", tag]);
    }
    // The server's state watch sees it; from then on a repeat is a new rollback.
    let mut last = serde_json::Value::Null;
    for _ in 0..300 {
        let (_, _, b) = s.send(am(body.clone())).await;
        if b["outcome"] != "duplicate" {
            assert_eq!(b["outcome"], "rolled_back", "{b}");
            assert_eq!(b["commit"].as_str(), Some(w.head().as_str()), "{b}");
            assert_eq!(w.git(&["tag", "-l", "rollback/*"]).lines().count(), 1);
            return;
        }
        last = b;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("a repeat 15 s after the rollback was taken out still says {last}");
}
