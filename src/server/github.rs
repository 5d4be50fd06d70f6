//! `POST /webhooks/github`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use tokio::sync::oneshot;
use tracing::info;

use super::{Answer, AppState, auth, error, is_json, not_json, respond};
use crate::event::Source;
use crate::ingest::github;
use crate::metrics;
use crate::worker::Job;

pub(super) async fn github_webhook(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(gh) = &st.0.github else { return error(StatusCode::NOT_FOUND, "no such route") };
    let sig = headers.get("x-hub-signature-256").and_then(|v| v.to_str().ok());
    // The signature is checked on the raw bytes before anything else looks at them.
    if !auth::github_signature(sig, &body, &gh.secrets) {
        metrics::auth_failure("github");
        return error(StatusCode::UNAUTHORIZED, "missing or wrong X-Hub-Signature-256");
    }
    let Some(event_name) = headers.get("x-github-event").and_then(|v| v.to_str().ok()) else {
        return error(StatusCode::BAD_REQUEST, "missing X-GitHub-Event header");
    };
    let delivery = headers.get("x-github-delivery").and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
    if !is_json(&headers) {
        return not_json();
    }
    let parsed = match github::parse(event_name, &body, &gh.workflows, st.0.clock.now()) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    info!(event = event_name, delivery = %delivery, "GitHub delivery");
    let ignored = |reason: String| {
        let a = Answer {
            trigger: format!("github:{delivery}"),
            outcome: "ignored".into(),
            rollback_id: None,
            commit: None,
            reason,
        };
        metrics::received(Source::Github, "ignored");
        respond(StatusCode::OK, vec![a])
    };
    match parsed {
        github::GithubEvent::Ping => ignored("pong: the webhook reaches rollbackd".into()),
        github::GithubEvent::Ignored(reason) => ignored(reason),
        github::GithubEvent::Failure(event) => {
            let p = st.dispatch_event(event);
            st.collect(Source::Github, vec![p]).await
        }
        github::GithubEvent::Comment(comment) => {
            if !st.0.github_forge {
                return ignored("comments are answered only with forge.kind: github".into());
            }
            let new_command = crate::chat::command::parse_markdown(&comment.body).map(|c| c.is_some()).unwrap_or(true);
            if !new_command {
                return ignored("no /rollback command in the comment".into());
            }
            let trigger = format!("github:comment/{}", comment.id);
            let (reply, rx) = oneshot::channel();
            let job =
                Job::GithubComment { comment: Box::new(comment), directory: Box::new(st.0.directory.clone()), reply };
            let p = st.submit(trigger, job, rx);
            st.collect(Source::Github, vec![p]).await
        }
        github::GithubEvent::ChecksPassed { branch } => {
            let trigger = format!("github:checks/{branch}");
            let (reply, rx) = oneshot::channel();
            let p = st.submit(trigger, Job::ChecksPassed { branch, reply }, rx);
            st.collect(Source::Github, vec![p]).await
        }
        github::GithubEvent::PullRequestClosed { branch, merged_sha, head_sha, by } => {
            if !branch.starts_with("rollback/") {
                return ignored(format!("pull request from {branch} is not a rollback proposal"));
            }
            let trigger = format!("github:pull_request/{branch}");
            let (reply, rx) = oneshot::channel();
            let p = st.submit(trigger, Job::PullRequestClosed { branch, merged_sha, head_sha, by, reply }, rx);
            st.collect(Source::Github, vec![p]).await
        }
        github::GithubEvent::DeploymentSucceeded(event) => {
            let trigger = event.trigger();
            let (reply, rx) = oneshot::channel();
            let p = st.submit(trigger, Job::KnownGood { event, reply }, rx);
            st.collect(Source::Github, vec![p]).await
        }
    }
}
