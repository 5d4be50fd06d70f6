//! `POST /webhooks/alertmanager`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use tokio::sync::oneshot;
use tracing::warn;

use super::{AppState, error, is_json, not_json, respond};
use crate::domain::event::Source;
use crate::ingest::alertmanager;
use crate::metrics;
use crate::worker::Job;

pub(super) async fn alertmanager_webhook(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let Some(auth) = &st.0.alertmanager else { return error(StatusCode::NOT_FOUND, "no such route") };
    // Credentials are in the headers: nobody without them gets a body read.
    if !auth.check(&headers) {
        metrics::auth_failure("alertmanager", "missing or wrong credential");
        return error(StatusCode::UNAUTHORIZED, "missing or wrong credentials");
    }
    if !is_json(&headers) {
        return not_json();
    }
    let body = match st.read_body(body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let n = match alertmanager::parse(&body, st.0.clock.now()) {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    if n.truncated > 0 {
        warn!(truncated = n.truncated, "Alertmanager left alerts out of this notification (max_alerts)");
    }
    let mut pending = st.dispatch_alerts(n.firing);
    for r in n.resolved {
        let trigger = format!("alertmanager:{}", r.dedupe_key);
        // Only incidents that were rolled back, or alerts a verification waits for, matter,
        // and only to the repos they were rolled back in.
        for m in st.0.fleet.members() {
            let shared = m.handle.shared();
            if shared.snapshot().find_trigger(&trigger).is_none() && !shared.watched(&trigger) {
                continue;
            }
            let (reply, rx) = oneshot::channel();
            pending.push(st.submit(m, trigger.clone(), Job::Resolved { resolved: r.clone(), reply }, rx));
        }
    }
    if pending.is_empty() {
        return respond(StatusCode::OK, vec![]);
    }
    st.collect(Source::Alertmanager, pending).await
}
