//! `POST /webhooks/github`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use tokio::sync::oneshot;
use tracing::info;

use super::{Answer, AppState, auth, error, is_json, not_json, respond};
use crate::domain::event::Source;
use crate::ingest::github;
use crate::metrics;
use crate::worker::Job;

pub(super) async fn github_webhook(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let Some(gh) = &st.0.github else { return error(StatusCode::NOT_FOUND, "no such route") };
    let sig = headers.get("x-hub-signature-256").and_then(|v| v.to_str().ok());
    // The signature covers the body, so it is checked after reading; a request without one is
    // turned away before a byte of its body is buffered.
    if !auth::github_signature_present(sig) {
        metrics::auth_failure("github", "no X-Hub-Signature-256");
        return error(StatusCode::UNAUTHORIZED, "missing or wrong X-Hub-Signature-256");
    }
    let body = match st.read_body(body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    // The signature is checked on the raw bytes before anything else looks at them.
    if !auth::github_signature(sig, &body, &gh.secrets) {
        metrics::auth_failure("github", "wrong X-Hub-Signature-256");
        return error(StatusCode::UNAUTHORIZED, "missing or wrong X-Hub-Signature-256");
    }
    let Some(event_name) = headers.get("x-github-event").and_then(|v| v.to_str().ok()) else {
        return error(StatusCode::BAD_REQUEST, "missing X-GitHub-Event header");
    };
    // GitHub's delivery ids are GUIDs; anything else is not remembered (and not echoed).
    let delivery = headers
        .get("x-github-delivery")
        .and_then(|v| v.to_str().ok())
        .filter(|d| !d.is_empty() && d.len() <= 64 && d.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .map(str::to_string);
    if !is_json(&headers) {
        return not_json();
    }
    let parsed = match github::parse(event_name, &body, &gh.workflows, st.0.clock.now()) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    info!(event = event_name, delivery = delivery.as_deref().unwrap_or("-"), "GitHub delivery");
    let shown = delivery.clone().unwrap_or_else(|| "-".into());
    let ignored = |reason: String| {
        let a = Answer {
            trigger: format!("github:{shown}"),
            outcome: "ignored".into(),
            rollback_id: None,
            commit: None,
            reason,
        };
        metrics::received(Source::Github, "ignored");
        respond(StatusCode::OK, vec![a])
    };
    let not_ours =
        |repository: &str| st.0.config_repo.as_deref().is_some_and(|mine| !mine.eq_ignore_ascii_case(repository));
    // What needs the writer, as a job; everything else is answered here.
    let (trigger, job, rx) = match parsed {
        github::GithubEvent::Ping => return ignored("pong: the webhook reaches rollbackd".into()),
        github::GithubEvent::Ignored(reason) => return ignored(reason),
        // A failure is one incident: its redelivery is answered from the audit trail (the
        // rollback it led to), which outlives any memory of delivery ids.
        github::GithubEvent::Failure(event) => {
            let p = st.dispatch_event(event);
            return st.collect(Source::Github, vec![p]).await;
        }
        github::GithubEvent::Comment(comment) => {
            if !st.0.github_forge {
                return ignored("comments are answered only with forge.kind: github".into());
            }
            if comment.sender_is_bot {
                return ignored(format!("comment by a bot ({}): bots do not give commands", comment.sender));
            }
            if not_ours(&comment.repository) {
                return ignored("comment on a repository other than the config repo".into());
            }
            if !comment.is_pull_request {
                return ignored("commands are read only on rollback pull requests".into());
            }
            if !is_github_login(&comment.sender) {
                return ignored("the sender is not a GitHub login".into());
            }
            let new_command = crate::chat::command::parse_markdown(&comment.body).map(|c| c.is_some()).unwrap_or(true);
            if !new_command {
                return ignored("no /rollback command in the comment".into());
            }
            let trigger = format!("github:comment/{}", comment.id);
            let (reply, rx) = oneshot::channel();
            let job =
                Job::GithubComment { comment: Box::new(comment), directory: Box::new(st.0.directory.clone()), reply };
            (trigger, job, rx)
        }
        github::GithubEvent::ChecksPassed { branch } => {
            let trigger = format!("github:checks/{branch}");
            let (reply, rx) = oneshot::channel();
            (trigger, Job::ChecksPassed { branch, reply }, rx)
        }
        github::GithubEvent::PullRequestClosed { repository, branch, merged_sha, head_sha, by } => {
            if not_ours(&repository) {
                return ignored("pull request on a repository other than the config repo".into());
            }
            if crate::domain::rollback::RollbackRef::parse_branch(&branch).is_none() {
                return ignored(format!(
                    "pull request from {} is not a rollback proposal",
                    crate::domain::ident::shown(&branch)
                ));
            }
            let trigger = format!("github:pull_request/{branch}");
            let (reply, rx) = oneshot::channel();
            (trigger, Job::PullRequestClosed { branch, merged_sha, head_sha, by, reply }, rx)
        }
        github::GithubEvent::PullRequestChanged { repository, number, head_sha, base } => {
            if !st.0.github_forge {
                return ignored("pull requests are gated only with forge.kind: github".into());
            }
            if not_ours(&repository) {
                return ignored("pull request on a repository other than the config repo".into());
            }
            let trigger = format!("github:gate/{number}/{head_sha}");
            let (reply, rx) = oneshot::channel();
            (trigger, Job::GatePullRequest { number, head_sha, base, reply }, rx)
        }
        github::GithubEvent::Pushed { repository, git_ref } => {
            // Only the forge names the config repo's GitHub repository.
            if st.0.config_repo.is_none() || not_ours(&repository) {
                return ignored("a push to a repository other than the config repo".into());
            }
            let trigger = format!("github:push/{git_ref}");
            let (reply, rx) = oneshot::channel();
            (trigger, Job::Fetch { git_ref, reply }, rx)
        }
        github::GithubEvent::DeploymentSucceeded(event) => {
            let trigger = event.trigger();
            let (reply, rx) = oneshot::channel();
            (trigger, Job::KnownGood { event, reply }, rx)
        }
    };
    if let Some(id) = &delivery
        && !st.0.deliveries.reserve(&format!("github/{id}"))
    {
        return ignored(format!("delivery {id} was received before"));
    }
    let p = st.submit(trigger, job, rx);
    let resp = st.collect(Source::Github, vec![p]).await;
    release_if_retry(&st, delivery.as_deref(), &resp);
    resp
}

/// A delivery answered 503 was not done: forget it, so GitHub's redelivery is carried out.
fn release_if_retry(st: &AppState, delivery: Option<&str>, resp: &Response) {
    if resp.status() == StatusCode::SERVICE_UNAVAILABLE
        && let Some(id) = delivery
    {
        st.0.deliveries.release(&format!("github/{id}"));
    }
}

/// GitHub logins: letters, digits and single hyphens, at most 39 characters.
fn is_github_login(login: &str) -> bool {
    !login.is_empty()
        && login.len() <= 39
        && login.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !login.starts_with('-')
}
