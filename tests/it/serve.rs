//! `rollbackd serve` as processes: graceful SIGTERM, two replicas racing on one alert, a kill -9
//! between receiving and pushing, and the real Alertmanager posting to the real server.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;

pub(super) const TOKEN: &str = "e2e-token";

pub(super) struct Serve {
    child: Child,
    pub(super) url: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

/// Adds the Alertmanager source to the world's config (token in a file).
pub(super) fn with_alertmanager_source(w: &World, extra: &str) {
    std::fs::write(w.root().join("am-tokens"), format!("{TOKEN}\n")).unwrap();
    let cfg = std::fs::read_to_string(w.config_path()).unwrap();
    std::fs::write(
        w.config_path(),
        format!("{cfg}sources:\n  alertmanager:\n    bearer_tokens_file: am-tokens\n{extra}"),
    )
    .unwrap();
}

/// Starts `rollbackd serve` on a free port with `data_dir` overridden, and waits until it is ready.
/// Another data dir is another replica of the same deployment: it signs with the same key.
pub(super) fn serve(w: &World, data_dir: &str) -> Serve {
    serve_with_listen(w, data_dir, "127.0.0.1:0")
}

/// [`serve`] on `port`: for a sender that must know the address before the server starts.
fn serve_at(w: &World, data_dir: &str, port: u16) -> Serve {
    let s = serve_with_listen(w, data_dir, &format!("127.0.0.1:{port}"));
    assert_eq!(s.url, format!("http://127.0.0.1:{port}"));
    s
}

/// [`serve`] for rollbackd as a GitHub App on `gh`: the App's webhook points at the server
/// (deliveries signed `hook-secret`) before it starts, as on GitHub, so nothing the server asks
/// of GitHub at start (a round of redeliveries) finds no hook.
pub(super) fn serve_app(w: &World, gh: &crate::common::fake_github::FakeGithub, data_dir: &str) -> Serve {
    let port = free_port();
    gh.hook_to(&format!("http://127.0.0.1:{port}"), "hook-secret");
    serve_at(w, data_dir, port)
}

fn serve_with_listen(w: &World, data_dir: &str, listen: &str) -> Serve {
    let mut cfg =
        std::fs::read_to_string(w.config_path()).unwrap().replace("data_dir: data", &format!("data_dir: {data_dir}"));
    if !cfg.contains("identity:") {
        let (config, _) = rollbackd::Config::load(&w.config_path()).unwrap();
        config.keys().expect("the signing key");
        cfg.push_str(&format!("identity:\n  signing_key_file: {}\n", config.data_dir.join("signing_key").display()));
    }
    let path = w.root().join(format!("rollbackd-{data_dir}.yaml"));
    std::fs::write(&path, cfg).unwrap();
    let s = spawn_serve_listening(&path, listen, "warn", Stdio::inherit(), &[]);
    wait_for("readyz", 30, || get(&format!("{}/readyz", s.url)).map(|(st, _)| st == 200).unwrap_or(false));
    s
}

/// Runs `rollbackd --config <config> serve` on a free port and waits until it is ready.
pub(super) fn start_serve(config: &std::path::Path) -> Serve {
    let s = spawn_serve(config);
    wait_for("readyz", 30, || get(&format!("{}/readyz", s.url)).map(|(st, _)| st == 200).unwrap_or(false));
    s
}

/// Runs `rollbackd --config <config> serve` on a free port, ready or not.
fn spawn_serve(config: &std::path::Path) -> Serve {
    spawn_serve_with(config, "warn", Stdio::inherit(), &[])
}

/// [`spawn_serve`] logging at `level` to `log`, with `env` set, and waits until it is ready.
fn serve_logged(config: &std::path::Path, level: &str, log: &std::path::Path, env: &[(&str, String)]) -> Serve {
    let s = spawn_serve_with(config, level, Stdio::from(std::fs::File::create(log).unwrap()), env);
    wait_for("readyz", 30, || get(&format!("{}/readyz", s.url)).map(|(st, _)| st == 200).unwrap_or(false));
    s
}

fn spawn_serve_with(config: &std::path::Path, level: &str, stderr: Stdio, env: &[(&str, String)]) -> Serve {
    spawn_serve_listening(config, "127.0.0.1:0", level, stderr, env)
}

fn spawn_serve_listening(
    config: &std::path::Path,
    listen: &str,
    level: &str,
    stderr: Stdio,
    env: &[(&str, String)],
) -> Serve {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rollbackd"))
        .arg("--config")
        .arg(config)
        .args(["serve", "--listen", listen])
        .env("ROLLBACKD_LOG", level)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url =
        line.trim().strip_prefix("rollbackd listening on ").unwrap_or_else(|| panic!("unexpected: {line}")).to_string();
    Serve { child, url }
}

pub(super) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

pub(super) fn get(url: &str) -> Result<(u16, String), ureq::Error> {
    let mut r = agent().get(url).call()?;
    Ok((r.status().as_u16(), r.body_mut().read_to_string()?))
}

pub(super) fn post_alert(url: &str, body: &str) -> Result<(u16, serde_json::Value), ureq::Error> {
    let mut r = agent()
        .post(format!("{url}/webhooks/alertmanager"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .header("Content-Type", "application/json")
        .send(body)?;
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string()?;
    Ok((status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))))
}

fn alert(fingerprint: &str) -> String {
    alert_for("checkout", fingerprint)
}

pub(super) fn alert_for(service: &str, fingerprint: &str) -> String {
    format!(
        r#"{{"version":"4","status":"firing","alerts":[{{"status":"firing","labels":{{"alertname":"HighErrorRate","service":"{service}","env":"prod","severity":"page"}},
        "annotations":{{"summary":"5xx"}},"startsAt":"2026-11-21T11:55:00Z","fingerprint":"{fingerprint}"}}]}}"#
    )
}

/// Rollback commits on the origin's main (commits carrying a Rollback-Id trailer).
pub(super) fn rollback_commits(w: &World) -> usize {
    w.git(&["log", "--format=%(trailers:key=Rollback-Id,valueonly)", "main"]).lines().filter(|l| !l.is_empty()).count()
}

fn kill(sig: &str, pid: &str) {
    assert!(Command::new("kill").args([sig, pid]).status().unwrap().success());
}

#[test]
fn sigterm_finishes_the_rollback_in_flight_and_exits_0() {
    let w = World::new();
    let _d = daemon(&w);
    let held = hold_pushes(&w);
    w.deploy("checkout", "prod", "1.5.0", 10);
    with_alertmanager_source(&w, "server: { response_deadline: 60s }\n");
    let mut s = serve(&w, "data");
    let url = s.url.clone();
    let request = std::thread::spawn(move || post_alert(&url, &alert("term")));
    held.wait_until_held();
    kill("-TERM", &s.pid());
    // No new connections once shutting down.
    let addr = s.url.trim_start_matches("http://").to_string();
    wait_for("the listener to close", 30, || std::net::TcpStream::connect(&addr).is_err());
    held.release();
    let (status, body) = request.join().unwrap().expect("the in-flight request is answered");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "rolled_back", "{body}");
    let code = s.child.wait().unwrap();
    assert_eq!(code.code(), Some(0));
    assert_eq!(rollback_commits(&w), 1);
}

#[test]
fn two_replicas_one_alert_one_commit() {
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    with_alertmanager_source(&w, "");
    let (a, b) = (serve(&w, "replica-a"), serve(&w, "replica-b"));
    let barrier = std::sync::Barrier::new(2);
    let body = alert("race");
    let outcomes: Vec<String> = std::thread::scope(|scope| {
        let hs: Vec<_> = [&a.url, &b.url]
            .into_iter()
            .map(|url| {
                let (barrier, body) = (&barrier, &body);
                scope.spawn(move || {
                    barrier.wait();
                    let (st, b) = post_alert(url, body).unwrap();
                    assert_eq!(st, 200, "{b}");
                    b["outcome"].as_str().unwrap().to_string()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut sorted = outcomes.clone();
    sorted.sort();
    assert_eq!(sorted, ["duplicate", "rolled_back"], "{outcomes:?}");
    assert_eq!(rollback_commits(&w), 1);
}

#[test]
fn kill_9_between_receiving_and_pushing_then_redelivery_makes_one_commit() {
    let w = World::new();
    let _d = daemon(&w);
    let held = hold_pushes(&w);
    w.deploy("checkout", "prod", "1.5.0", 10);
    with_alertmanager_source(&w, "server: { response_deadline: 60s }\n");
    let s = serve(&w, "data");
    let url = s.url.clone();
    let request = std::thread::spawn(move || post_alert(&url, &alert("k9")));
    held.wait_until_held();
    kill("-KILL", &s.pid());
    assert!(request.join().unwrap().is_err(), "the sender saw the connection die, so it will redeliver");
    drop(s);
    held.release();

    // The restarted service gets the redelivery.
    let restarted = serve(&w, "data");
    let (status, body) = post_alert(&restarted.url, &alert("k9")).unwrap();
    assert_eq!(status, 200, "{body}");
    let outcome = body["outcome"].as_str().unwrap();
    assert!(outcome == "rolled_back" || outcome == "duplicate", "{body}");
    let (_, again) = post_alert(&restarted.url, &alert("k9")).unwrap();
    assert_eq!(again["outcome"], "duplicate", "{again}");
    assert_eq!(rollback_commits(&w), 1);
}

#[test]
fn real_alertmanager_rolls_back_once_and_verifies_on_resolve() {
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    with_alertmanager_source(&w, "");
    let s = serve(&w, "data");
    let am_port = free_port();
    let Some(_am) = crate::common::procs::alertmanager(&w.root().join("alertmanager"), am_port, &s.url, TOKEN, "1s")
    else {
        return;
    };
    let am_url = format!("http://127.0.0.1:{am_port}");
    wait_for("alertmanager ready", 30, || get(&format!("{am_url}/-/ready")).map(|(st, _)| st == 200).unwrap_or(false));

    let starts = jiff::Timestamp::now();
    let post_to_am = |ends: jiff::Timestamp| {
        let body = serde_json::json!([{
            "labels": {"alertname": "HighErrorRate", "service": "checkout", "env": "prod", "severity": "page"},
            "annotations": {"summary": "checkout 5xx above 5%"},
            "startsAt": starts.to_string(),
            "endsAt": ends.to_string(),
        }]);
        let mut r = agent()
            .post(format!("{am_url}/api/v2/alerts"))
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{}", r.body_mut().read_to_string().unwrap_or_default());
    };
    let in_an_hour = starts.checked_add(jiff::SignedDuration::from_hours(1)).unwrap();
    post_to_am(in_an_hour);
    wait_for("the rollback commit on the origin", 60, || rollback_commits(&w) == 1);
    assert!(w.trailers("main", "Rollback-Trigger")[0].starts_with("alertmanager:"));
    assert_eq!(w.trailers("main", "Rollback-Actor"), ["alertmanager"]);

    // Alertmanager repeats the notification (repeat_interval); the server answers duplicate.
    post_to_am(in_an_hour);
    let duplicates = || {
        let (_, m) = get(&format!("{}/metrics", s.url)).unwrap();
        m.lines()
            .find(|l| l.starts_with(r#"rollbackd_events_total{source="alertmanager",outcome="duplicate"}"#))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    wait_for("a repeated notification", 60, || duplicates() >= 1.0);
    assert_eq!(rollback_commits(&w), 1, "the repeat made no second commit");

    // Resolving the alert adds the verification note.
    post_to_am(jiff::Timestamp::now());
    wait_for("the verification note on the origin", 60, || {
        Command::new("git")
            .arg("--git-dir")
            .arg(&w.origin)
            .args(["notes", "--ref=rollbackd", "show", "main"])
            .output()
            .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("Time-To-Recovery"))
            .unwrap_or(false)
    });
}

#[test]
fn demo_end_to_end_propose_then_approve_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let bin = env!("CARGO_BIN_EXE_rollbackd");
    let out = Command::new(bin).args(["demo", "--no-serve", "--dir"]).arg(&demo).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let config = demo.join("rollbackd.yaml");
    let server = start_serve(&config);
    let token = std::fs::read_to_string(demo.join("secrets/alertmanager-tokens")).unwrap().trim().to_string();
    let post = |file: &str| -> serde_json::Value {
        let body = std::fs::read_to_string(demo.join("events").join(file)).unwrap();
        let mut r = agent()
            .post(format!("{}/webhooks/alertmanager", server.url))
            .header("Authorization", format!("Bearer {token}"))
            .header("Content-Type", "application/json")
            .send(body)
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap()
    };
    let origin = demo.join("origin.git");
    let git = |args: &[&str]| git_in(&origin, args);

    // Staging: proposed for review.
    let staging = post("checkout-staging-alert.json");
    assert_eq!(staging["outcome"], "proposed", "{staging}");
    let id = staging["rollback_id"].as_str().unwrap().to_string();
    assert!(git(&["show", "main:apps/checkout/staging/deployment.yaml"]).contains("1.5.0"), "main untouched");

    // Approved from the CLI beside the running server: merged, tagged, branch gone.
    let out =
        Command::new(bin).arg("--config").arg(&config).args(["approve", &id, "--actor", "reviewer"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.starts_with("merged"), "{text}");
    assert!(git(&["show", "main:apps/checkout/staging/deployment.yaml"]).contains("1.4.2"));
    assert_eq!(git(&["log", "-1", "--format=%(trailers:key=Rollback-Id,valueonly)", "main"]).trim(), id);
    assert!(git(&["for-each-ref", "refs/heads/rollback/"]).is_empty());

    // Prod: rolled back at once by the paging policy.
    let prod = post("checkout-prod-alert.json");
    assert_eq!(prod["outcome"], "rolled_back", "{prod}");
    assert!(git(&["show", "main:apps/checkout/prod/deployment.yaml"]).contains("1.4.2"));

    // The shipped policies' `notify: [oncall]` route works offline: the demo's channel is a
    // file, one JSON line per notice (the server's and the CLI's alike).
    let prod_id = prod["rollback_id"].as_str().unwrap().to_string();
    let notices = demo.join("notices.jsonl");
    wait_for("the notices", 30, || {
        std::fs::read_to_string(&notices).is_ok_and(|t| t.contains(&id) && t.contains(&prod_id))
    });
    let told: Vec<(String, String)> = std::fs::read_to_string(&notices)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|n| (n["event"].as_str().unwrap().to_string(), n["rollback_id"].as_str().unwrap_or("").to_string()))
        .collect();
    for expected in [("proposed", &id), ("rolled_back", &prod_id)] {
        assert!(told.iter().any(|(e, r)| e == expected.0 && r == expected.1), "{expected:?} not in {told:?}");
    }
}

/// `rollbackd demo` serving says where its status page is, and the page is there.
#[test]
fn the_serving_demo_prints_its_status_page_url() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rollbackd"))
        .args(["demo", "--listen", "127.0.0.1:0", "--dir"])
        .arg(dir.path().join("demo"))
        .env("ROLLBACKD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let _stopped_on_drop = Serve { child, url: String::new() };
    let page = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("Status page: ").map(|r| r.split_whitespace().next().unwrap().to_string()))
        .expect("the demo prints its status page URL");
    assert!(page.starts_with("http://127.0.0.1:") && page.ends_with('/'), "{page}");
    wait_for("the status page", 30, || {
        get(&page).map(|(st, body)| st == 200 && body.contains("<title>rollbackd status</title>")).unwrap_or(false)
    });
}

#[test]
fn idle_and_trickling_connections_cannot_take_healthz_down() {
    let w = World::new();
    with_alertmanager_source(&w, "server: { header_read_timeout: 1s, max_connections: 64 }\n");
    let s = serve(&w, "data");
    let addr = s.url.strip_prefix("http://").unwrap().to_string();
    // 300 connections that never send a byte, and one that sends half a request line.
    let idle: Vec<std::net::TcpStream> = (0..300).map(|_| std::net::TcpStream::connect(&addr).unwrap()).collect();
    let mut trickle = std::net::TcpStream::connect(&addr).unwrap();
    use std::io::{Read, Write};
    trickle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
    // The listener keeps answering: the idle ones are closed after the header timeout, and
    // the cap keeps the rest waiting in the backlog meanwhile.
    wait_for("/healthz", 30, || get(&format!("{}/healthz", s.url)).map(|(st, _)| st == 200).unwrap_or(false));
    // The trickling client was cut off, not served.
    trickle.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = Vec::new();
    let closed = trickle.read_to_end(&mut buf);
    assert!(closed.is_ok(), "the server never closed the trickling connection: {closed:?}");
    let text = String::from_utf8_lossy(&buf);
    assert!(!text.contains("200 OK"), "{text}");
    drop(idle);
}

/// A TCP front for the origin's `git daemon` that, while `stuck`, accepts connections and never
/// answers: an origin that hangs rather than refuses.
struct Front {
    port: u16,
    stuck: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

fn front(to: u16) -> Front {
    use std::sync::atomic::Ordering;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let stuck = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let s = stuck.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            if s.load(Ordering::SeqCst) {
                held.push(conn);
                continue;
            }
            let Ok(upstream) = std::net::TcpStream::connect(("127.0.0.1", to)) else { continue };
            let (mut a, mut b) = (conn.try_clone().unwrap(), upstream.try_clone().unwrap());
            let (mut c, mut d) = (conn, upstream);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut a, &mut b);
                let _ = b.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut d, &mut c);
                let _ = c.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    Front { port, stuck }
}

#[test]
fn a_stuck_origin_makes_the_service_unready_and_senders_retry_until_it_recovers() {
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    let d = daemon(&w);
    let f = front(d.port);
    let cfg = std::fs::read_to_string(w.config_path())
        .unwrap()
        .replace(&format!("127.0.0.1:{}/", d.port), &format!("127.0.0.1:{}/", f.port));
    std::fs::write(w.config_path(), cfg).unwrap();
    with_alertmanager_source(&w, "git: { connect_timeout: 1s, io_timeout: 1s }\nserver: { refresh_interval: 1s }\n");
    let path = w.root().join("rollbackd-stuck.yaml");
    std::fs::write(&path, std::fs::read_to_string(w.config_path()).unwrap()).unwrap();
    let s = spawn_serve(&path);
    let readyz = || get(&format!("{}/readyz", s.url)).unwrap();
    wait_for("a fetch to time out", 30, || readyz().1.contains("cannot reach"));
    assert_eq!(readyz().0, 503);
    let r = agent()
        .post(format!("{}/webhooks/alertmanager", s.url))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .header("Content-Type", "application/json")
        .send(alert("stuck"))
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(rollback_commits(&w), 0);

    f.stuck.store(false, std::sync::atomic::Ordering::SeqCst);
    wait_for("the writer to recover", 60, || readyz().0 == 200);
    let (status, body) = post_alert(&s.url, &alert("stuck")).unwrap();
    assert_eq!((status, body["outcome"].as_str()), (200, Some("rolled_back")), "{body}");
    assert_eq!(rollback_commits(&w), 1);
}

/// Every secret the suite hands rollbackd in this run, and where it could leak to.
#[test]
fn no_secret_reaches_logs_answers_the_data_dir_or_git() {
    use hmac::{Hmac, Mac};
    use sha2::Sha256;
    const AM: &str = "am-secret-tok-7f3a";
    const BASIC: &str = "am-basic-pw-91c2";
    const GH: &str = "gh-hook-secret-5d1e";
    const SLACK: &str = "slack-sign-secret-a8b4";
    const GIT: &str = "git-token-secret-c6d0";
    // Notification channels whose URL and token are secrets; both unreachable, so the failure
    // (which must not name them) is logged.
    const HOOK: &str = "hook-url-secret-e9f1";
    const BOT: &str = "xoxb-bot-secret-3c7d";
    let secrets = [AM, BASIC, GH, SLACK, GIT, HOOK, BOT];
    let w = World::with(&[PolicySpec::new("test-policy").set("notify", ["hook", "bot"])]);
    let _d = daemon(&w);
    w.deploy("checkout", "prod", "1.5.0", 10);
    for (file, value) in [("am", AM), ("basic", BASIC), ("gh", GH), ("slack", SLACK)] {
        std::fs::write(w.root().join(file), format!("{value}\n")).unwrap();
    }
    let cfg = std::fs::read_to_string(w.config_path())
        .unwrap()
        .replace("  branch: main\n", "  branch: main\n  token_env: TEST_GIT_TOKEN\n");
    let cfg = format!(
        "{cfg}sources:\n  alertmanager:\n    bearer_tokens_file: am\n    basic_auth: {{ username: am, passwords_file: basic }}\n  github:\n    secrets_file: gh\n    workflows: [deploy]\n  slack:\n    signing_secrets_file: slack\n    response_url_prefix: http://127.0.0.1:1/\n\
         notify:\n  attempts: 1\n  channels:\n    hook: {{ kind: webhook, url_env: TEST_HOOK_URL }}\n\
         \x20   bot: {{ kind: slack_api, token_env: TEST_SLACK_BOT, channel: C1, api_url: \"http://127.0.0.1:1/api\" }}\n"
    );
    let path = w.root().join("rollbackd-secrets.yaml");
    std::fs::write(&path, cfg).unwrap();
    let log = w.root().join("serve.log");
    let env = [
        ("TEST_GIT_TOKEN", GIT.to_string()),
        ("TEST_HOOK_URL", format!("http://127.0.0.1:1/{HOOK}")),
        ("TEST_SLACK_BOT", BOT.to_string()),
    ];
    let s = serve_logged(&path, "trace", &log, &env);

    let mut answers = String::new();
    let mut send = |path: &str, body: &str, headers: &[(&str, String)]| {
        let mut r = agent().post(format!("{}{path}", s.url));
        for (k, v) in headers {
            r = r.header(*k, v);
        }
        let mut resp = r.send(body).unwrap();
        answers.push_str(&resp.body_mut().read_to_string().unwrap_or_default());
    };
    let json = ("Content-Type", "application/json".to_string());
    // Right and wrong credentials, a rollback, a bad body.
    send("/webhooks/alertmanager", &alert("s1"), &[json.clone(), ("Authorization", format!("Bearer {AM}"))]);
    send("/webhooks/alertmanager", &alert("s2"), &[json.clone(), ("Authorization", format!("Bearer {AM}x"))]);
    let basic = base64_encode(&format!("am:{BASIC}"));
    send("/webhooks/alertmanager", "{not json", &[json.clone(), ("Authorization", format!("Basic {basic}"))]);
    let ping = r#"{"zen":"x","hook_id":1}"#;
    let mut mac = Hmac::<Sha256>::new_from_slice(GH.as_bytes()).unwrap();
    mac.update(ping.as_bytes());
    let sig: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let gh = |sig: String| {
        vec![json.clone(), ("X-GitHub-Event", "ping".to_string()), ("X-Hub-Signature-256", format!("sha256={sig}"))]
    };
    send("/webhooks/github", ping, &gh(sig));
    send("/webhooks/github", ping, &gh("00".repeat(32)));
    let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let form = "user_id=U1&text=status&response_url=http%3A%2F%2F127.0.0.1%3A1%2Fx&trigger_id=t.1";
    let mut mac = Hmac::<Sha256>::new_from_slice(SLACK.as_bytes()).unwrap();
    mac.update(format!("v0:{ts}:{form}").as_bytes());
    let sig: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    send(
        "/webhooks/slack",
        form,
        &[
            ("Content-Type", "application/x-www-form-urlencoded".to_string()),
            ("X-Slack-Request-Timestamp", ts.to_string()),
            ("X-Slack-Signature", format!("v0={sig}")),
        ],
    );
    assert_eq!(rollback_commits(&w), 1, "the run did real work");
    wait_for("both notification failures logged", 30, || {
        std::fs::read_to_string(&log).unwrap_or_default().matches("notification not delivered").count() >= 2
    });
    let (_, metrics) = get(&format!("{}/metrics", s.url)).unwrap();
    answers.push_str(&metrics);
    drop(s);

    let mut places: Vec<(String, Vec<u8>)> = vec![("answers".into(), answers.into_bytes())];
    places.push(("the log".into(), std::fs::read(&log).unwrap()));
    fn walk(dir: &std::path::Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.push((p.display().to_string(), bytes));
            }
        }
    }
    walk(&w.root().join("data"), &mut places);
    // Objects are compressed on disk: read them through git, in the origin and in the mirror.
    for repo in [w.origin.clone(), w.root().join("data").join("mirror.git")] {
        let objects = Command::new("git")
            .args(["--git-dir", repo.to_str().unwrap(), "cat-file", "--batch-all-objects", "--batch"])
            .output()
            .unwrap();
        assert!(objects.status.success() && !objects.stdout.is_empty());
        places.push((format!("the objects of {}", repo.display()), objects.stdout));
    }
    for (place, bytes) in &places {
        let text = String::from_utf8_lossy(bytes);
        for secret in secrets {
            assert!(
                !text.contains(secret),
                "{secret} found in {place}: {}",
                text.lines().filter(|l| l.contains(secret)).take(3).collect::<Vec<_>>().join("\n")
            );
        }
    }
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(log_text.lines().count() > 5, "the log was captured");
    // The refusals are logged with their reason (and, above, without any secret).
    for why in ["missing or wrong credential", "wrong X-Hub-Signature-256"] {
        assert!(log_text.contains("request refused") && log_text.contains(why), "{why} not logged");
    }
}

fn base64_encode(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Runs `rollbackd serve` with `admin.listen` set: the public listener and the admin one, each
/// from its own banner line, once the admin one says ready.
fn serve_with_admin(w: &World) -> (Serve, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rollbackd"))
        .arg("--config")
        .arg(w.config_path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("ROLLBACKD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let (mut public, mut admin) = (String::new(), String::new());
    out.read_line(&mut public).unwrap();
    out.read_line(&mut admin).unwrap();
    let s = Serve { child, url: public.trim().trim_start_matches("rollbackd listening on ").to_string() };
    let admin =
        admin.trim().strip_prefix("rollbackd admin listening on ").unwrap_or_else(|| panic!("{admin}")).to_string();
    wait_for("readyz", 30, || get(&format!("{admin}/readyz")).map(|(st, _)| st == 200).unwrap_or(false));
    (s, admin)
}

#[test]
fn serve_prints_one_line_per_listener_and_the_admin_one_serves_the_reads() {
    let w = World::new();
    w.write_config(&ConfigSpec::new().set("admin.listen", "127.0.0.1:0"));
    with_alertmanager_source(&w, "");
    let (s, admin) = serve_with_admin(&w);
    let (st, metrics) = get(&format!("{admin}/metrics")).unwrap();
    assert!(st == 200 && metrics.contains("rollbackd_build_info"), "{st}");
    assert_eq!(get(&format!("{}/metrics", s.url)).unwrap().0, 404, "not on the public listener");
    assert_eq!(get(&format!("{}/", s.url)).unwrap().0, 404, "nor the status page");
    assert_eq!(get(&format!("{}/healthz", s.url)).unwrap().0, 200);
}

#[test]
fn sighup_and_post_reload_switch_policies_and_a_broken_change_keeps_the_old_ones() {
    let w = World::with(&[PolicySpec::new("staging-only").matchers(&["env=\"staging\""])]);
    with_alertmanager_source(&w, "");
    let s = serve(&w, "data");
    let prod_alert = || post_alert(&s.url, &alert("r1")).unwrap().1["outcome"].as_str().unwrap_or_default().to_string();
    assert_eq!(prod_alert(), "ignored", "no policy for prod yet");

    w.set_policies(&[PolicySpec::new("prod-watch").mode(Mode::Notify)]);
    kill("-HUP", &s.pid());
    wait_for("the reloaded policies", 30, || prod_alert() == "notified");

    // A broken change is refused with its position; what is in force stays.
    w.set_policy_text("- name: broken\n  match: { source: nowhere }\n");
    let mut r = agent().post(format!("{}/-/reload", s.url)).send("").unwrap();
    let status = r.status().as_u16();
    let body = r.body_mut().read_to_string().unwrap();
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("10-test.yaml:2"), "{body}");
    assert_eq!(prod_alert(), "notified");
    assert_eq!(get(&format!("{}/healthz", s.url)).unwrap().0, 200, "SIGHUP did not end the process");
}

#[test]
fn a_reload_naming_a_channel_whose_secret_is_unset_is_refused_and_the_set_in_force_stays() {
    let w = World::with(&[PolicySpec::new("staging-only").matchers(&["env=\"staging\""])]);
    with_alertmanager_source(&w, "");
    let s = serve(&w, "data");
    let prod_alert = || post_alert(&s.url, &alert("u1")).unwrap().1["outcome"].as_str().unwrap_or_default().to_string();
    assert_eq!(prod_alert(), "ignored");

    // New policies, and a pager channel whose URL is in a variable the process does not have.
    w.set_policies(&[PolicySpec::new("prod-watch").mode(Mode::Notify)]);
    let path = w.root().join("rollbackd-data.yaml");
    let cfg = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!("{cfg}notify:\n  channels:\n    pager: {{ kind: webhook, url_env: ROLLBACKD_TEST_UNSET_PAGER_URL }}\n"),
    )
    .unwrap();
    let mut r = agent().post(format!("{}/-/reload", s.url)).send("").unwrap();
    let status = r.status().as_u16();
    let body = r.body_mut().read_to_string().unwrap();
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("notify.channels.pager") && body.contains("ROLLBACKD_TEST_UNSET_PAGER_URL"), "{body}");
    assert_eq!(prod_alert(), "ignored", "the policies in force stay");

    // SIGHUP is refused the same way: nothing switches.
    kill("-HUP", &s.pid());
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(prod_alert(), "ignored", "SIGHUP switched to a set that drops the pager");
    assert_eq!(get(&format!("{}/healthz", s.url)).unwrap().0, 200);
}

#[test]
fn rejected_webhook_requests_are_counted_by_source_and_status_and_logged_once_a_minute_without_the_body() {
    let w = World::new();
    with_alertmanager_source(&w, "server: { body_limit: 4096 }\n");
    let path = w.root().join("rollbackd-rejections.yaml");
    std::fs::copy(w.config_path(), &path).unwrap();
    let log = w.root().join("serve.log");
    let s = serve_logged(&path, "warn", &log, &[]);
    let metric = |source: &str, status: &str| -> u64 {
        let (_, text) = get(&format!("{}/metrics", s.url)).unwrap();
        let series = format!("rollbackd_webhook_rejected_total{{source=\"{source}\",status=\"{status}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .unwrap_or_else(|| panic!("{series} missing from\n{text}"))
            .trim()
            .parse()
            .unwrap()
    };
    // Present at zero before anything was rejected, for every known source and status.
    for source in ["alertmanager", "github", "slack"] {
        for status in ["400", "413", "415", "422"] {
            assert_eq!(metric(source, status), 0, "{source} {status}");
        }
    }
    const MARKER: &str = "body-marker-7c2a";
    let send = |content_type: &str, body: String| {
        agent()
            .post(format!("{}/webhooks/alertmanager", s.url))
            .header("Authorization", format!("Bearer {TOKEN}"))
            .header("Content-Type", content_type)
            .send(body)
            .unwrap()
            .status()
            .as_u16()
    };
    for _ in 0..10 {
        assert_eq!(send("application/json", format!("{{\"{MARKER}\": [")), 400);
    }
    assert_eq!(send("text/plain", MARKER.into()), 415);
    assert_eq!(send("application/json", format!("\"{MARKER}{}\"", " ".repeat(5000))), 413);
    assert_eq!(metric("alertmanager", "400"), 10);
    assert_eq!(metric("alertmanager", "415"), 1);
    assert_eq!(metric("alertmanager", "413"), 1);
    assert_eq!(metric("github", "400"), 0, "counted under its own source");

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("webhook request rejected")).collect();
    assert!(!text.contains(MARKER), "the body is never logged:\n{text}");
    // One line per source and status a minute (ten 400s: one line, two across a minute's
    // turn), each with the reason.
    let at = |status: &str| lines.iter().filter(|l| l.contains(&format!("status=\"{status}\""))).count();
    assert!((1..=2).contains(&at("400")) && at("415") == 1 && at("413") == 1, "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("Content-Type: application/json")), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("server.body_limit")), "{lines:#?}");
}

#[test]
fn the_status_page_cannot_be_framed_or_scripted_and_a_browser_cannot_reload() {
    let w = World::new();
    with_alertmanager_source(&w, "");
    let s = serve(&w, "data");
    let r = agent().get(format!("{}/", s.url)).call().unwrap();
    let h = |name: &str| r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert_eq!(h("x-content-type-options"), "nosniff");
    assert_eq!(h("x-frame-options"), "DENY");
    let csp = h("content-security-policy");
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    let r = agent().get(format!("{}/healthz", s.url)).call().unwrap();
    assert_eq!(r.headers().get("x-content-type-options").unwrap(), "nosniff", "every response");

    // A page elsewhere posting a form to /-/reload: the browser names its origin.
    let mut r = agent().post(format!("{}/-/reload", s.url)).header("Origin", "https://evil.example").send("").unwrap();
    let status = r.status().as_u16();
    assert_eq!(status, 403, "{}", r.body_mut().read_to_string().unwrap());
    assert_eq!(agent().post(format!("{}/-/reload", s.url)).send("").unwrap().status().as_u16(), 200, "curl may");
}

/// Headless Chromium, as the machine's notes say it runs here: no background networking (the
/// network is closed), a fresh profile.
fn chromium(bin: &std::path::Path, profile: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("run chromium");
    assert!(out.status.success(), "chromium: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_status_page_shows_a_real_browser_what_is_going_on() {
    let Some(browser) = crate::common::procs::installed(&["chromium", "chromium-browser"], "chromium") else { return };
    let w = World::with(&[
        PolicySpec::new("checkout-direct")
            .mode(Mode::Direct)
            .matchers(&["service=\"checkout\""])
            .set("verify", serde_json::json!({ "within": "2h" })),
        PolicySpec::new("cart-reviewed").matchers(&["service=\"cart\""]).mode(Mode::PullRequest),
    ]);
    w.deploy("checkout", "prod", "1.5.0", 30);
    w.deploy("cart", "prod", "2.1.0", 20);
    w.write_config(&ConfigSpec::new().set("admin.listen", "127.0.0.1:0").set("server.refresh_interval", "1s"));
    with_alertmanager_source(&w, "");
    let (s, admin) = serve_with_admin(&w);

    let (st, direct) = post_alert(&s.url, &alert_for("checkout", "f1")).unwrap();
    assert_eq!((st, direct["outcome"].as_str()), (200, Some("rolled_back")), "{direct}");
    let (st, proposed) = post_alert(&s.url, &alert_for("cart", "f2")).unwrap();
    assert_eq!((st, proposed["outcome"].as_str()), (200, Some("proposed")), "{proposed}");
    let freeze =
        w.run_cli(&["freeze", "search", "--for", "2h", "--reason", "launch <b>day</b>", "--actor", "ops@example.com"]);
    assert!(freeze.status.success(), "{}", String::from_utf8_lossy(&freeze.stderr));
    let pause = w.run_cli(&["pause", "--for", "30m", "--reason", "bad metrics", "--actor", "ops@example.com"]);
    assert!(pause.status.success(), "{}", String::from_utf8_lossy(&pause.stderr));
    // The server sees what the CLI wrote at its next fetch.
    wait_for("the freeze and the pause on the status", 30, || {
        let (_, body) = get(&format!("{admin}/api/v1/status")).unwrap();
        body.contains("launch <b>day</b>") && body.contains("bad metrics")
    });

    let profile = w.root().join("chromium-profile");
    let dom = chromium(&browser, &profile, &["--dump-dom", &format!("{admin}/")]);
    let direct_id = direct["rollback_id"].as_str().unwrap();
    let proposal_id = proposed["rollback_id"].as_str().unwrap();
    assert!(dom.contains("<title>PAUSED · rollbackd status</title>"), "{dom}");
    assert!(
        dom.contains("Automatic rollbacks are PAUSED by cli:ops@example.com until") && dom.contains("bad metrics"),
        "{dom}"
    );
    // The sender's markup is text on the page, not markup.
    assert!(dom.contains("launch &lt;b&gt;day&lt;/b&gt;") && !dom.contains("launch <b>day"), "{dom}");
    let section = |id: &str| {
        dom.split(&format!("id=\"{id}\"")).nth(1).unwrap_or_default().split("<h2>").next().unwrap().to_string()
    };
    assert!(section("proposals").contains(proposal_id) && section("proposals").contains("cart/prod"), "{dom}");
    assert!(section("verifying").contains(direct_id), "{dom}");
    let recent = section("recent");
    assert!(recent.contains(direct_id) && recent.contains("checkout/prod") && !recent.contains(">?<"), "{recent}");
    // Time to rollback as everywhere: from the alert's start (and from receipt) to the push.
    assert!(recent.contains("from the alert's start (") && recent.contains("from receipt)"), "{recent}");
    assert!(!recent.contains(proposal_id), "an open proposal is not history yet: {recent}");

    // A phone-sized screenshot, kept beside the build for people to look at.
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &browser,
        &profile,
        &[&format!("--screenshot={}", shot.display()), "--window-size=390,1400", &format!("{admin}/")],
    );
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{} bytes", png.len());
    drop(s);
}

/// Issue 23: any change to rollbackd's state in git shows within 3 s of reaching the origin.
const STATE_SHOWS_WITHIN: Duration = Duration::from_secs(3);

/// Another process's freeze, proposal and cancellation show on `/api/v1/status` within 3 s,
/// with an hour between idle fetches: the state watch sees the freezes ref, the proposal's
/// branch and tags, not only the branch.
#[test]
fn a_freeze_a_proposal_and_a_cancel_from_the_cli_show_on_the_status_within_3s() {
    let w = World::with(&[PolicySpec::new("test-policy").mode(Mode::PullRequest)]);
    w.deploy("checkout", "prod", "1.5.0", 10);
    w.write_config(&ConfigSpec::new().set("admin.listen", "127.0.0.1:0").set("server.refresh_interval", "1h"));
    with_alertmanager_source(&w, "");
    let (s, admin) = serve_with_admin(&w);
    let status =
        || serde_json::from_str::<serde_json::Value>(&get(&format!("{admin}/api/v1/status")).unwrap().1).unwrap();
    wait_for("a first view", 15, || status()["automatic"]["state"] == "active");
    let shows = |what: &str, cli: &[&str], seen: &dyn Fn(&serde_json::Value) -> bool| {
        let out = w.run_cli(cli);
        assert!(out.status.success(), "{what}: {out:?}");
        let started = std::time::Instant::now();
        wait_for(what, 15, || seen(&status()));
        let took = started.elapsed();
        eprintln!("{what} showed after {took:?}");
        assert!(took < STATE_SHOWS_WITHIN, "{what} took {took:?} to show");
    };
    shows("the CLI's freeze", &["freeze", "cart", "--reason", "release train"], &|v| {
        v["freezes"].as_array().is_some_and(|f| f.iter().any(|f| f["scope"] == "cart"))
    });
    shows("the CLI's proposal", &["rollback", "checkout", "--env", "prod", "--reason", "5xx"], &|v| {
        v["proposals"].as_array().is_some_and(|p| p.len() == 1)
    });
    let id = status()["proposals"][0]["id"].as_str().unwrap().to_string();
    shows("the CLI's cancel", &["cancel", &id, "--actor", "sre"], &|v| {
        v["proposals"].as_array().is_some_and(Vec::is_empty)
    });
    drop(s);
}

#[test]
fn a_pause_from_the_cli_shows_on_the_status_within_seconds_not_at_the_next_refresh() {
    let w = World::new();
    // An hour between idle fetches: only the state watch can bring the pause in time.
    w.write_config(&ConfigSpec::new().set("admin.listen", "127.0.0.1:0").set("server.refresh_interval", "1h"));
    with_alertmanager_source(&w, "");
    let (s, admin) = serve_with_admin(&w);
    let status =
        || serde_json::from_str::<serde_json::Value>(&get(&format!("{admin}/api/v1/status")).unwrap().1).unwrap();
    wait_for("a first view", 15, || status()["automatic"]["state"] == "active");
    let before = status();
    assert_eq!(before["automatic"]["text"], "Automatic rollbacks are active", "{before}");

    // Another process writes the pause to the origin.
    let pause = w.run_cli(&["pause", "--for", "30m", "--reason", "noisy deploy", "--actor", "sre@example.com"]);
    assert!(pause.status.success(), "{}", String::from_utf8_lossy(&pause.stderr));
    let reached_origin = jiff::Timestamp::now();
    let started = std::time::Instant::now();
    wait_for("the CLI's pause on /api/v1/status", 15, || status()["automatic"]["state"] == "paused");
    let took = started.elapsed();
    eprintln!("the pause showed after {took:?}");
    assert!(took < STATE_SHOWS_WITHIN, "the pause took {took:?} to show");
    let view = status();
    let automatic = &view["automatic"];
    assert_eq!(automatic["by"], "cli:sre@example.com", "{view}");
    assert_eq!(automatic["reason"], "noisy deploy", "{view}");
    let until: jiff::Timestamp = automatic["until"].as_str().unwrap().parse().unwrap();
    let in_30m = reached_origin.checked_add(jiff::SignedDuration::from_mins(30)).unwrap();
    assert!(until.duration_since(in_30m).abs() < jiff::SignedDuration::from_secs(60), "{until} vs {in_30m}");
    // `as_of`: RFC 3339, no older than the moment the origin already held the pause (to the second).
    let as_of: jiff::Timestamp = view["as_of"].as_str().expect("as_of").parse().expect("RFC 3339");
    assert!(
        as_of >= reached_origin.checked_sub(jiff::SignedDuration::from_secs(1)).unwrap(),
        "{as_of} {reached_origin}"
    );
    assert!(as_of <= jiff::Timestamp::now(), "{as_of}");

    // The page says it plainly, in a real browser.
    let Some(browser) = crate::common::procs::installed(&["chromium", "chromium-browser"], "chromium") else { return };
    let dom = chromium(&browser, &w.root().join("chromium-profile"), &["--dump-dom", &format!("{admin}/")]);
    let banner = dom.split("id=\"automatic\"").nth(1).unwrap_or_default().split("</div>").next().unwrap_or_default();
    assert!(banner.contains("data-state=\"paused\""), "{dom}");
    assert!(
        banner.contains(&format!("PAUSED by cli:sre@example.com until {until}")) && banner.contains("noisy deploy"),
        "{banner}"
    );
    let shown_as_of = dom.split("id=\"as-of\">").nth(1).unwrap_or_default().split('<').next().unwrap_or_default();
    let shown: jiff::Timestamp = shown_as_of.trim().trim_start_matches("As of ").parse().expect(shown_as_of);
    assert!(shown >= as_of, "{shown_as_of}");
    drop(s);
}

#[test]
fn healthcheck_answers_for_the_server_the_config_names() {
    let w = World::new();
    let port = free_port();
    w.write_config(&ConfigSpec::new().set("listen", format!("0.0.0.0:{port}")));
    with_alertmanager_source(&w, "");
    let healthcheck = |args: &[&str]| {
        let out = w.run_cli(&[&["healthcheck"], args].concat());
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };
    let (code, said) = healthcheck(&[]);
    assert_eq!(code, Some(1), "nothing listens yet: {said}");
    assert!(said.contains(&format!("unhealthy: http://127.0.0.1:{port}/healthz")), "{said}");

    let mut child = Command::new(env!("CARGO_BIN_EXE_rollbackd"))
        .arg("--config")
        .arg(w.config_path())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("ROLLBACKD_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let s = Serve { child, url: format!("http://127.0.0.1:{port}") };
    // 0.0.0.0 in the config is asked on loopback.
    assert_eq!(healthcheck(&[]).0, Some(0));
    wait_for("ready", 30, || healthcheck(&["--ready"]).0 == Some(0));
    assert_eq!(healthcheck(&["--url", &s.url]).0, Some(0));
    drop(s);
    let (code, said) = healthcheck(&[]);
    assert_eq!(code, Some(1), "stopped: {said}");
}
