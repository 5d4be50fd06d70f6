//! How rollbackd talks to GitHub's REST API, whatever the call: one request with a deadline,
//! its status checked (octocrab's raw calls return `Ok` on 4xx), a redirect followed once for a
//! read (a renamed or transferred repository answers 301), rate limits (429, or 403 with the
//! limit spent or a secondary limit) waited out when the wait is short and reported as transient
//! when it is not, and server errors retried only where sending twice cannot do anything twice.

use std::time::Duration;

use octocrab::Octocrab;
use serde_json::Value;

use super::ForgeError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Post,
    Put,
    Patch,
}

impl Method {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
        }
    }
}

/// Longest wait for a rate limit inside one call; longer, and the caller hears it as transient
/// (the sender retries the event later).
const MAX_WAIT: Duration = Duration::from_secs(10);

/// How many times a call may be answered "wait" or "try again" before it gives up.
const ATTEMPTS: u32 = 3;

/// One request; `Ok((status, headers, body))` whatever the status.
async fn send(
    client: &Octocrab,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, http::HeaderMap, String), ForgeError> {
    let fut = async {
        match method {
            Method::Get => client._get(path).await,
            Method::Post => client._post(path, body).await,
            Method::Put => client._put(path, body).await,
            Method::Patch => client._patch(path, body).await,
        }
    };
    let resp = tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .map_err(|_| ForgeError::Unreachable(format!("{} {path}: timed out", method.name())))?
        .map_err(|e| ForgeError::Unreachable(format!("{} {path}: {e}", method.name())))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = client.body_to_string(resp).await.map_err(|e| ForgeError::Unreachable(e.to_string()))?;
    Ok((status, headers, text))
}

/// The call's JSON answer, or why not. `idempotent`: sending it twice does no more than once (a
/// read, a merge at an exact sha), so a 5xx may be retried; a POST that failed on GitHub's side
/// may have happened, and is left to the caller, who looks before trying again.
pub(crate) async fn call(
    client: &Octocrab,
    method: Method,
    path: &str,
    body: Option<&Value>,
    idempotent: bool,
) -> Result<Value, ForgeError> {
    call_paged(client, method, path, body, idempotent).await.map(|(v, _)| v)
}

/// A page of a list: its JSON, and the path (with its query) of the next page when the `Link`
/// header names one (`rel="next"`). Only the path is kept: the next page is asked of the
/// configured API host, whatever host the header names.
pub(crate) async fn get_page(client: &Octocrab, path: &str) -> Result<(Value, Option<String>), ForgeError> {
    call_paged(client, Method::Get, path, None, true).await
}

async fn call_paged(
    client: &Octocrab,
    method: Method,
    path: &str,
    body: Option<&Value>,
    idempotent: bool,
) -> Result<(Value, Option<String>), ForgeError> {
    let mut path = path.to_string();
    let mut redirected = false;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (status, headers, text) = send(client, method, &path, body).await?;
        let message = || {
            serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| text.chars().take(200).collect())
        };
        if (200..300).contains(&status) {
            let next = headers.get(http::header::LINK).and_then(|l| l.to_str().ok()).and_then(next_page);
            return Ok((serde_json::from_str(&text).unwrap_or(Value::Null), next));
        }
        if matches!(status, 301 | 302 | 307 | 308)
            && method == Method::Get
            && !redirected
            && let Some(to) = headers.get(http::header::LOCATION).and_then(|l| l.to_str().ok())
            && let Ok(to) = to.parse::<http::Uri>()
            && let Some(to) = to.path_and_query()
        {
            // Only the path is followed, on the configured API host: credentials never go
            // anywhere else, whatever the Location says.
            path = to.to_string();
            redirected = true;
            continue;
        }
        // A rate-limited request was refused, not done: it may be sent again whatever it is.
        if let Some(wait) = rate_limit_wait(status, &headers, &message(), jiff::Timestamp::now()) {
            if wait <= MAX_WAIT && attempt < ATTEMPTS {
                tracing::info!(path = %path, wait_ms = wait.as_millis() as u64, "GitHub rate limit; waiting");
                tokio::time::sleep(wait).await;
                continue;
            }
            return Err(ForgeError::RateLimited { path, retry_after: wait });
        }
        if status >= 500 && idempotent && attempt < ATTEMPTS {
            tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
            continue;
        }
        return Err(ForgeError::Api { method: method.name(), path, status, message: message() });
    }
}

/// The path and query of the `rel="next"` page in a `Link` header
/// (`<https://api.github.com/...?page=2>; rel="next", <...>; rel="last"`).
pub(crate) fn next_page(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (url, params) = part.trim().split_once(';')?;
        let next = params.split(';').any(|p| matches!(p.trim(), "rel=\"next\"" | "rel=next"));
        let url = url.trim().strip_prefix('<')?.strip_suffix('>')?;
        let uri = url.parse::<http::Uri>().ok()?;
        next.then(|| uri.path_and_query().map(|pq| pq.to_string())).flatten()
    })
}

/// How long GitHub asks us to wait, when the answer is a rate limit: 429, or 403 with the
/// primary limit spent (`x-ratelimit-remaining: 0`) or a secondary limit. `retry-after` (seconds)
/// wins; else `x-ratelimit-reset` (a Unix time); else a minute, as GitHub's docs advise.
pub(crate) fn rate_limit_wait(
    status: u16,
    headers: &http::HeaderMap,
    message: &str,
    now: jiff::Timestamp,
) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let spent = header("x-ratelimit-remaining") == Some("0");
    let secondary = message.to_ascii_lowercase().contains("rate limit");
    if !(status == 429 || (status == 403 && (spent || secondary))) {
        return None;
    }
    if let Some(secs) = header("retry-after").and_then(|s| s.parse::<u64>().ok()) {
        return Some(Duration::from_secs(secs));
    }
    if spent && let Some(reset) = header("x-ratelimit-reset").and_then(|s| s.parse::<i64>().ok()) {
        return Some(Duration::from_secs((reset - now.as_second()).max(1) as u64));
    }
    Some(Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        pairs.iter().map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap())).collect()
    }

    #[test]
    fn the_next_page_is_read_from_the_link_header_by_path_only() {
        let link = "<https://api.github.com/app/hook/deliveries?per_page=100&cursor=v1_42>; rel=\"next\", \
                    <https://api.github.com/app/hook/deliveries?per_page=100>; rel=\"first\"";
        assert_eq!(next_page(link).as_deref(), Some("/app/hook/deliveries?per_page=100&cursor=v1_42"));
        let last = "<https://api.github.com/x?page=1>; rel=\"prev\", <https://api.github.com/x?page=1>; rel=\"first\"";
        assert_eq!(next_page(last), None);
        assert_eq!(next_page("<https://evil.example/steal?page=2>; rel=\"next\"").as_deref(), Some("/steal?page=2"));
        assert_eq!(next_page("garbage"), None);
        assert_eq!(next_page(""), None);
    }

    proptest::proptest! {
        #[test]
        fn any_link_header_is_read_without_panic(link in ".{0,300}") {
            let _ = next_page(&link);
        }
    }

    #[test]
    fn rate_limits_are_told_from_refusals() {
        let now = jiff::Timestamp::from_second(1_000).unwrap();
        let wait = |status, h: &[(&'static str, &str)], msg| rate_limit_wait(status, &headers(h), msg, now);
        assert_eq!(wait(429, &[("retry-after", "7")], ""), Some(Duration::from_secs(7)));
        let spent = [("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1030")];
        assert_eq!(wait(403, &spent, "API rate limit exceeded"), Some(Duration::from_secs(30)));
        assert_eq!(wait(403, &[], "You have exceeded a secondary rate limit."), Some(Duration::from_secs(60)));
        // A permission refusal is not a rate limit.
        assert_eq!(wait(403, &[("x-ratelimit-remaining", "4999")], "Resource not accessible by integration"), None);
        assert_eq!(wait(404, &[], "Not Found"), None);
    }
}
