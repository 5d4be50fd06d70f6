//! The webhook server through its router (no socket): a world's config plus sources, the real
//! writer and router, and requests signed as each sender signs them.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use hmac::{Hmac, Mac};
use http_body_util::BodyExt;
use rollbackd::Config;
use rollbackd::WorkerHandle;
use rollbackd::{AppState, HttpSettings};
use rollbackd::{Clock, Engine};
use sha2::Sha256;
use tower::ServiceExt;

use super::{ConfigSpec, World, wait_for};

pub const TOKEN: &str = "test-token-1";
pub const GH_SECRET: &str = "gh-test-secret";

/// The real router and writer of a world, driven without a socket.
pub struct Server {
    pub app: Router,
    pub worker: WorkerHandle,
}

/// Writes the sources into the world's config and starts the writer and the router.
pub fn server(w: &World, extra: ConfigSpec) -> Server {
    server_in(w.root(), w.clock.clone(), extra)
}

/// [`server`] from the parts of a world that may cross threads (a GitHub forge must be built
/// outside the test's runtime).
pub fn server_in(root: &std::path::Path, clock: Arc<rollbackd::FixedClock>, extra: ConfigSpec) -> Server {
    server_on(root, clock, extra)
}

/// [`server_in`] on any clock.
pub fn server_on(root: &std::path::Path, clock: Arc<dyn Clock>, extra: ConfigSpec) -> Server {
    std::fs::write(root.join("am-tokens"), format!("old-token, {TOKEN}\n")).unwrap();
    std::fs::write(root.join("gh-secrets"), format!("{GH_SECRET}\n")).unwrap();
    let config_path = root.join("rollbackd.yaml");
    let cfg = std::fs::read_to_string(&config_path).unwrap();
    let cfg = format!(
        "{cfg}sources:\n  alertmanager:\n    bearer_tokens_file: am-tokens\n    basic_auth: {{ username: am, passwords_file: am-tokens }}\n  github:\n    secrets_file: gh-secrets\n    workflows: [deploy]\n{}",
        extra.yaml_lines()
    );
    std::fs::write(&config_path, cfg).unwrap();
    let (config, secrets) = Config::load(&config_path).unwrap();
    let engine = Engine::new(config.clone(), secrets.clone(), clock.clone()).unwrap();
    let (handle, _join) = rollbackd::spawn_worker(engine, config.server.queue, config.server.refresh_interval.as_std());
    let state = AppState::new(&config, &secrets, rollbackd::Fleet::single(&config, handle.clone()), clock);
    Server { app: rollbackd::router(state, &HttpSettings::from_config(&config).with_secrets(&secrets)), worker: handle }
}

impl Server {
    pub async fn send(&self, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let json =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| serde_json::json!(String::from_utf8_lossy(&bytes)));
        (status, headers, json)
    }

    pub fn wait_ready(&self) {
        wait_for("the writer to fetch", 20, || self.worker.shared().ready());
    }
}

pub fn alert_body(fingerprint: &str, service: &str, status: &str) -> String {
    let ends = if status == "resolved" { "2026-11-21T12:00:00Z" } else { "0001-01-01T00:00:00Z" };
    format!(
        r#"{{"version":"4","status":"{status}","receiver":"rollbackd","groupKey":"g","truncatedAlerts":0,
        "alerts":[{{"status":"{status}","labels":{{"alertname":"HighErrorRate","service":"{service}","env":"prod","severity":"page"}},
        "annotations":{{"summary":"5xx above 5%"}},"startsAt":"2026-11-21T11:55:00Z","endsAt":"{ends}","fingerprint":"{fingerprint}"}}]}}"#
    )
}

pub fn post(path: &str, body: impl Into<Body>, headers: &[(&str, &str)]) -> Request<Body> {
    let mut r = Request::post(path);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.body(body.into()).unwrap()
}

pub fn am(body: String) -> Request<Body> {
    post(
        "/webhooks/alertmanager",
        body,
        &[("content-type", "application/json"), ("authorization", &format!("Bearer {TOKEN}"))],
    )
}

pub fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(GH_SECRET.as_bytes()).unwrap();
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    format!("sha256={}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

pub fn fixture(name: &str) -> serde_json::Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/github").join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

pub fn gh(event: &str, body: &[u8], signature: Option<&str>) -> Request<Body> {
    gh_delivery(event, body, signature, "d-1")
}

pub fn gh_delivery(event: &str, body: &[u8], signature: Option<&str>, delivery: &str) -> Request<Body> {
    let sig = signature.map(str::to_string).unwrap_or_else(|| sign(body));
    post(
        "/webhooks/github",
        body.to_vec(),
        &[
            ("content-type", "application/json"),
            ("x-github-event", event),
            ("x-github-delivery", delivery),
            ("x-hub-signature-256", &sig),
        ],
    )
}
