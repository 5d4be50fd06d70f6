//! `POST /webhooks/alertmanager`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use tokio::sync::oneshot;
use tracing::warn;

use super::answer_cache::{Kept, Stamp};
use super::{AppState, PendingState, error, is_json, not_json, reply_json, respond, respond_json};
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
    // A repeat of a body whose alerts are all rolled back already: the answer it had.
    if let Some(kept) = st.0.recorded.get(&body, &st.0.fleet) {
        for _ in 0..kept.answers {
            metrics::received(Source::Alertmanager, "duplicate");
        }
        return respond_json(StatusCode::OK, kept.json, None);
    }
    let stamp = Stamp::of(&st.0.fleet);
    let n = match alertmanager::parse(&body, st.0.clock.now()) {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let whole = n.truncated == 0 && n.resolved.is_empty();
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
    let recorded = whole && pending.iter().all(|p| matches!(p.state, PendingState::Recorded(_)));
    let (status, answers) = st.answers(Source::Alertmanager, pending).await;
    if !recorded {
        return respond(status, answers);
    }
    let json = reply_json(&answers);
    st.0.recorded.keep(body, stamp, Kept { json: json.clone(), answers: answers.len() });
    respond_json(status, json, None)
}
