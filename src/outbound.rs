//! The one HTTP client stack for the calls rollbackd makes itself: notifications, replies to
//! Slack, Prometheus queries. ureq, blocking (every caller is already on a thread of its own),
//! with the system's trust store (enterprise roots are honoured) and `HTTPS_PROXY` /
//! `HTTP_PROXY` / `ALL_PROXY` / `NO_PROXY` from the environment. The GitHub forge keeps
//! octocrab's stack (over reqwest, which reads the same variables); git reads them through
//! libgit2.

use std::time::Duration;

use ureq::tls::{RootCerts, TlsConfig};

/// An agent whose every call gives up after `timeout`.
pub(crate) fn agent(timeout: Duration) -> ureq::Agent {
    configured(timeout, ureq::Proxy::try_from_env())
}

/// The same, never through a proxy: for a server on this machine (`rollbackd healthcheck`).
pub(crate) fn local_agent(timeout: Duration) -> ureq::Agent {
    configured(timeout, None)
}

fn configured(timeout: Duration, proxy: Option<ureq::Proxy>) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        // A redirect would be followed as a GET without the body (a message lost while counted
        // as sent) and possibly to another host: it is an answer, and a refusal.
        .max_redirects(0)
        .tls_config(TlsConfig::builder().root_certs(RootCerts::PlatformVerifier).build())
        .proxy(proxy)
        .user_agent(concat!("rollbackd/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// What came back from a call that reached the other side.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub body: String,
    /// `Retry-After`, in seconds, when the other side asked for patience.
    pub retry_after: Option<Duration>,
}

impl Answer {
    pub(crate) fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Worth trying again later: the other side failed or asked us to slow down.
    pub(crate) fn transient(&self) -> bool {
        self.status >= 500 || self.status == 429 || self.status == 408
    }
}

/// Why a call did not reach the other side. The text never holds the URL: webhook URLs carry
/// their secret in the path.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Unreachable(String);

/// POSTs `body` as JSON.
pub(crate) fn post_json(
    agent: &ureq::Agent,
    url: &str,
    bearer: Option<&str>,
    body: &serde_json::Value,
) -> Result<Answer, Unreachable> {
    let mut req = agent.post(url).header("Content-Type", "application/json; charset=utf-8");
    if let Some(token) = bearer {
        req = req.header("Authorization", &format!("Bearer {token}"));
    }
    answer(req.send(body.to_string()), url)
}

/// GETs `url` with `query` pairs, URL-encoded.
pub(crate) fn get(agent: &ureq::Agent, url: &str, query: &[(&str, &str)]) -> Result<Answer, Unreachable> {
    let mut req = agent.get(url);
    for (k, v) in query {
        req = req.query(*k, *v);
    }
    answer(req.call(), url)
}

fn answer(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>, url: &str) -> Result<Answer, Unreachable> {
    let mut resp = result.map_err(|e| Unreachable(e.to_string().replace(url, "<url>")))?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = resp.body_mut().with_config().limit(64 * 1024).read_to_string().unwrap_or_default();
    // A receiver (or a proxy in front of it) may echo the URL, secret and all.
    let path = url.split_once("://").and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..])).unwrap_or("");
    let mut body = body.replace(url, "<url>");
    if path.len() > 1 {
        body = body.replace(path, "/<path>");
    }
    Ok(Answer { status, body, retry_after })
}
