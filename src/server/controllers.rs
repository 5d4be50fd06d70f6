//! `POST /webhooks/flux` and `POST /webhooks/argocd`: GitOps controllers reporting what they
//! applied. A failure is a rollback trigger bounded by its revision; a healthy report marks
//! known-good and verifies the rollbacks it contains. Events for another repository than a
//! config repo rollbackd serves are answered "ignored", with the reason.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use tokio::sync::oneshot;
use tracing::info;

use super::{Answer, AppState, Pending, auth, error, is_json, not_json, respond};
use crate::domain::event::Source;
use crate::fleet::Member;
use crate::ingest::controller::ControllerEvent;
use crate::ingest::{argocd, flux};
use crate::metrics;
use crate::worker::Job;

pub(super) async fn flux_webhook(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let Some(secrets) = &st.0.flux else { return error(StatusCode::NOT_FOUND, "no such route") };
    let sig = headers.get("x-signature").and_then(|v| v.to_str().ok());
    // The signature covers the body: a request without one is turned away before any is read.
    if !auth::github_signature_present(sig) {
        metrics::auth_failure("flux", "no X-Signature");
        return error(StatusCode::UNAUTHORIZED, "missing or wrong X-Signature");
    }
    let body = match st.read_body(body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    if !auth::flux_signature(sig, &body, secrets) {
        metrics::auth_failure("flux", "wrong X-Signature");
        return error(StatusCode::UNAUTHORIZED, "missing or wrong X-Signature");
    }
    if !is_json(&headers) {
        return not_json();
    }
    match flux::parse(&body, st.0.clock.now()) {
        Ok(parsed) => act(&st, Source::Flux, parsed).await,
        Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

pub(super) async fn argocd_webhook(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let Some(tokens) = &st.0.argocd else { return error(StatusCode::NOT_FOUND, "no such route") };
    if !auth::bearer(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()), tokens) {
        metrics::auth_failure("argocd", "missing or wrong bearer token");
        return error(StatusCode::UNAUTHORIZED, "missing or wrong credentials");
    }
    if !is_json(&headers) {
        return not_json();
    }
    let body = match st.read_body(body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    match argocd::parse(&body, st.0.clock.now()) {
        Ok(parsed) => act(&st, Source::Argocd, parsed).await,
        Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

async fn act(st: &AppState, source: Source, parsed: ControllerEvent) -> Response {
    let ignored = |trigger: String, reason: String| {
        metrics::received(source, "ignored");
        respond(StatusCode::OK, vec![Answer::new(trigger, "ignored", reason)])
    };
    let (event, healthy) = match parsed {
        ControllerEvent::Ignored(reason) => return ignored(format!("{source}:-"), reason),
        ControllerEvent::Failed(e) => (e, false),
        ControllerEvent::Healthy(e) => (e, true),
    };
    let trigger = event.trigger();
    info!(%trigger, healthy, "GitOps controller event");
    // An event naming its repository goes to the config repos it names, and only to them.
    let members: Vec<&Member> = match event.labels.get("repo") {
        None if healthy => st.0.fleet.members().iter().collect(),
        None => st.0.fleet.route(&event),
        Some(repo) => st.0.fleet.members().iter().filter(|m| same_repo(repo, &m.repo_key)).collect(),
    };
    if members.is_empty() {
        let repo = event.labels.get("repo").map(|r| crate::domain::ident::shown(r)).unwrap_or_default();
        return ignored(trigger, format!("the event is for repository {repo}, not a config repo rollbackd serves"));
    }
    let pending: Vec<Pending> = match healthy {
        true => members
            .into_iter()
            .map(|m| {
                let (reply, rx) = oneshot::channel();
                st.submit(m, trigger.clone(), Job::ControllerHealthy { event: event.clone(), reply }, rx)
            })
            .collect(),
        false => members.into_iter().map(|m| Pending::of(m, st.dispatch_to(m, &event))).collect(),
    };
    st.collect(source, pending).await
}

/// Whether a controller's repository URL names the config repo (`key`: its
/// [`repo_key`](crate::support::url::repo_key)). Argo CD and Flux often name it over HTTPS
/// where rollbackd pushes over SSH, so both are read as host and path. The sender's value is
/// never looked up on this machine's disk.
fn same_repo(event_repo: &str, key: &str) -> bool {
    let ours = host_and_path(key);
    !ours.is_empty() && host_and_path(event_repo) == ours
}

fn host_and_path(url: &str) -> String {
    let u = url.trim();
    let u = u.strip_prefix("file://").unwrap_or(u);
    let remote = crate::support::url::looks_like_url(u);
    let rest = match u.split_once("://") {
        // scheme://[user@]host/path
        Some((_, rest)) => {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{host}/{path}")
        }
        // user@host:path (scp-like)
        None if remote => match u.split_once(':') {
            Some((user_host, path)) => {
                let host = user_host.rsplit_once('@').map_or(user_host, |(_, h)| h);
                format!("{host}/{}", path.trim_start_matches('/'))
            }
            None => u.to_string(),
        },
        None => u.to_string(),
    };
    let rest = rest.trim_end_matches('/');
    let rest = rest.strip_suffix(".git").unwrap_or(rest).trim_end_matches('/');
    if remote { rest.to_ascii_lowercase() } else { rest.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_repository_however_its_url_is_written() {
        let key = crate::support::url::repo_key("git@github.com:Acme/deploy.git");
        for url in [
            "https://github.com/acme/deploy",
            "https://github.com/acme/deploy.git",
            "ssh://git@github.com/acme/deploy",
            "git@github.com:acme/deploy.git",
            "https://token@github.com/Acme/deploy/",
        ] {
            assert!(same_repo(url, &key), "{url}");
        }
        assert!(!same_repo("https://github.com/acme/other", &key));
        assert!(!same_repo("https://gitlab.com/acme/deploy", &key));
        assert!(same_repo("/srv/git/deploy.git", "/srv/git/deploy"));
        assert!(!same_repo("", ""));
    }
}
