//! A job that panics half-way on the writer: its sender is told to retry (503), the writer
//! throws the engine away and builds a new one from git, and nothing is lost or done twice:
//! the retry finds the rollback the panicked job pushed, the next alert is rolled back, and the
//! pushed rollback is verified by the new engine.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Body;
use axum::http::Request;
use jiff::Timestamp;
use rollbackd::{Clock, FixedClock};

use crate::common::http::*;
use crate::common::*;

/// The world's clock, except that once armed, the first time the writer reads it after the
/// origin's branch moved away from `armed_at`, it panics: a bug right after a push, before
/// the engine has taken in what it pushed.
struct Tripwire {
    clock: Arc<FixedClock>,
    origin: PathBuf,
    armed_at: std::sync::Mutex<Option<String>>,
    tripped: AtomicBool,
}

impl Tripwire {
    fn arm(&self, head: String) {
        *self.armed_at.lock().unwrap() = Some(head);
    }
}

impl Clock for Tripwire {
    fn now(&self) -> Timestamp {
        let writer = std::thread::current().name().is_some_and(|n| n.contains("writer"));
        let armed = self.armed_at.lock().unwrap().clone();
        if let Some(at) = armed.filter(|_| writer && !self.tripped.load(Ordering::SeqCst)) {
            let out = Command::new("git").arg("--git-dir").arg(&self.origin).args(["rev-parse", "main"]).output();
            let head = out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
            if head != at && !self.tripped.swap(true, Ordering::SeqCst) {
                panic!("a bug right after the push (test tripwire)");
            }
        }
        self.clock.now()
    }
}

/// `rollbackd_writer_panics_total` as `/metrics` says it.
async fn panics(s: &Server) -> f64 {
    let (_, _, b) = s.send(Request::get("/metrics").body(Body::empty()).unwrap()).await;
    b.as_str()
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("rollbackd_writer_panics_total "))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_panics_after_its_push_leaves_a_rebuilt_engine_that_loses_and_repeats_nothing() {
    let w = World::with(&[PolicySpec::new("test-policy").set("verify", json!({ "within": "1h" }))]);
    w.deploy("checkout", "prod", "1.5.0", 10);
    w.deploy("cart", "prod", "2.1.0", 9);
    let tripwire = Arc::new(Tripwire {
        clock: w.clock.clone(),
        origin: w.origin.clone(),
        armed_at: Default::default(),
        tripped: AtomicBool::new(false),
    });
    let s = server_on(w.root(), tripwire.clone(), ConfigSpec::new());
    s.wait_ready();
    let before = panics(&s).await;

    tripwire.arm(w.head());
    let (status, _, b) = s.send(am(alert_body("boom", "checkout", "firing"))).await;
    assert!(tripwire.tripped.load(Ordering::SeqCst), "the tripwire went off: {b}");
    assert_eq!(status, 503, "the sender retries: {b}");
    // Counted once the writer has caught it (the reply was dropped as the job unwound).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while panics(&s).await < before + 1.0 {
        assert!(std::time::Instant::now() < deadline, "the panic was never counted");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(panics(&s).await, before + 1.0);
    let pushed = w.head();
    let trigger = w.trailers("main", "Rollback-Trigger");
    assert_eq!(trigger.len(), 1, "the push before the panic is on the origin");

    // The new engine reads the rollback back from git and watches it, as the old one never did.
    wait_for("the rebuilt engine to watch the pushed rollback", 10, || s.worker.shared().watched(&trigger[0]));

    // The retry is a duplicate of what was pushed; the next alert is rolled back once.
    let (status, _, b) = s.send(am(alert_body("boom", "checkout", "firing"))).await;
    assert_eq!((status.as_u16(), b["outcome"].as_str()), (200, Some("duplicate")), "{b}");
    assert_eq!(b["rollback_id"].as_str().map(str::to_string), w.trailers(&pushed, "Rollback-Id").pop());
    let (status, _, b) = s.send(am(alert_body("next", "cart", "firing"))).await;
    assert_eq!((status.as_u16(), b["outcome"].as_str()), (200, Some("rolled_back")), "{b}");
    let ids = w.git(&["log", "--format=%(trailers:key=Rollback-Id,valueonly)", "main"]);
    let ids: Vec<&str> = ids.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(ids.len(), 2, "one commit per incident: {ids:?}");
    assert_ne!(ids[0], ids[1]);
    assert_eq!(w.git(&["tag", "--list", "rollback/*"]).lines().count(), 2);
}
