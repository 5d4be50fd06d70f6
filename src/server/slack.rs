//! `POST /webhooks/slack`: the `/rollback` slash command.

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::{AppState, auth, error};
use crate::domain::event::Source;
use crate::metrics;
use crate::worker::Job;

/// The fields of a slash command rollbackd reads.
#[derive(Deserialize)]
struct SlashCommand {
    user_id: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    response_url: String,
    trigger_id: String,
}

fn slack_message(text: &str, public: bool) -> Response {
    let kind = if public { "in_channel" } else { "ephemeral" };
    axum::Json(serde_json::json!({ "response_type": kind, "text": crate::support::text::slack(text) })).into_response()
}

/// `/rollback ...` from Slack: verified, acknowledged at once (Slack gives up after 3 s), carried
/// out by the writer, and the outcome posted to the command's `response_url`.
pub(super) async fn slack_webhook(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let Some(slack) = &st.0.slack else { return error(StatusCode::NOT_FOUND, "no such route") };
    let body = match signed_form(&st, slack, &headers, body).await {
        Ok(b) => b,
        Err(answer) => return answer,
    };
    let (cmd, command) = match slash_command(&body) {
        Ok(c) => c,
        Err(no) => return no.answer(),
    };
    let delivery = format!("slack/{}", cmd.trigger_id);
    // Reserved before queueing and released if it could not be queued, so a retry of a command
    // that was carried out is not run twice, and one that was refused can be sent again.
    if !st.0.deliveries.reserve(&delivery) {
        metrics::received(Source::Chatops, "duplicate");
        return slack_message("already on it: this command was received before", false);
    }
    let asked_at = headers
        .get("x-slack-request-timestamp")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.parse::<i64>().ok())
        .and_then(|t| jiff::Timestamp::from_second(t).ok());
    let request = crate::chat::ChatRequest {
        principal: crate::domain::principal::Principal::new(format!("slack:{}", cmd.user_id))
            .with_groups(&st.0.directory),
        command,
        request_id: delivery.clone(),
        channel: "slack".into(),
        implied_id: None,
        default_env: slack.default_env.clone(),
        asked_at,
    };
    // The command's text is the person's words: not logged at INFO.
    info!(user = %request.principal, "slack command");
    tracing::debug!(command = %crate::domain::ident::shown(&cmd.text), "slack command text");
    let queued = queue_on_each_repo(&st, &request).await;
    if queued.answers.is_empty() {
        st.0.deliveries.release(&delivery);
        return slack_message("rollbackd is busy; try again in a minute", false);
    }
    metrics::received(Source::Chatops, "accepted");
    let allowed = cmd.response_url.starts_with(&slack.response_url_prefix);
    if !allowed {
        warn!("response_url is outside sources.slack.response_url_prefix; the outcome will not be posted");
    }
    tokio::spawn(post_outcome_when_answered(queued, allowed.then(|| cmd.response_url.clone())));
    slack_message(&format!("working on `/rollback {}`...", cmd.text.trim()), false)
}

/// The body of a form-encoded request Slack signed. `Err` is the answer already: a refusal,
/// or the 200 to Slack's SSL check.
async fn signed_form(
    st: &AppState,
    slack: &super::SlackSettings,
    headers: &HeaderMap,
    body: Body,
) -> Result<axum::body::Bytes, Response> {
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let now = st.0.clock.now().as_second();
    let reject = |why: auth::SlackRejection| {
        let msg = match why {
            auth::SlackRejection::Stale => "request timestamp is more than 5 minutes from now (replayed?)",
            _ => "missing or wrong X-Slack-Signature",
        };
        metrics::auth_failure("slack", msg);
        error(StatusCode::UNAUTHORIZED, msg)
    };
    let ct = h("content-type").unwrap_or("");
    let form = ct.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    // Timestamp and signature shape first: a stale or unsigned request never gets a body read,
    // unless it is a form, which may be Slack's SSL check (unsigned, answered 200 before any
    // signature check, as Slack's Bolt does: it asks nothing and gets nothing).
    let signed = auth::slack_headers(h("x-slack-request-timestamp"), h("x-slack-signature"), now);
    if let Err(why) = &signed
        && !form
    {
        return Err(reject(*why));
    }
    let body = st.read_body(body).await?;
    if form && is_ssl_check(&body) {
        return Err(StatusCode::OK.into_response());
    }
    if let Err(why) = signed {
        return Err(reject(why));
    }
    if let Err(why) =
        auth::slack_signature(h("x-slack-request-timestamp"), h("x-slack-signature"), &body, &slack.secrets, now)
    {
        return Err(reject(why));
    }
    if !form {
        return Err(error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "expected a form-encoded slash command"));
    }
    Ok(body)
}

/// Why a signed form carries no command to queue; each is answered at once.
enum NoCommand {
    /// Not a slash command's form.
    Malformed(String),
    /// `/rollback help`, or nothing after `/rollback`.
    Help,
    /// Words that are no command: the person is told why.
    Unparsed(crate::chat::command::ParseError),
    /// `user_id` or `trigger_id` is not a Slack id.
    BadIds,
}

impl NoCommand {
    fn answer(self) -> Response {
        match self {
            NoCommand::Malformed(e) => error(StatusCode::BAD_REQUEST, &format!("not a slash command: {e}")),
            NoCommand::Help => slack_message(&crate::chat::command::help(), false),
            NoCommand::Unparsed(e) => slack_message(&format!("{e}\n(`/rollback help` lists the commands)"), false),
            NoCommand::BadIds => error(StatusCode::UNPROCESSABLE_ENTITY, "user_id and trigger_id must be Slack ids"),
        }
    }
}

/// The slash command in a signed form, and the command its text asks for.
fn slash_command(body: &[u8]) -> Result<(SlashCommand, crate::chat::Command), NoCommand> {
    let cmd: SlashCommand = serde_urlencoded::from_bytes(body).map_err(|e| NoCommand::Malformed(e.to_string()))?;
    let command = match crate::chat::command::parse_args(&cmd.text) {
        Ok(crate::chat::Command::Help) => return Err(NoCommand::Help),
        Ok(c) => c,
        Err(e) => return Err(NoCommand::Unparsed(e)),
    };
    // Slack's ids are short words; anything else cannot name a person or a delivery.
    let word = |v: &str| {
        !v.is_empty()
            && v.len() <= 64
            && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    };
    if !word(&cmd.user_id) || !word(&cmd.trigger_id) {
        return Err(NoCommand::BadIds);
    }
    Ok((cmd, command))
}

/// A command handed to the writers of the repos it concerns: the answers to wait for, and the
/// repos too busy to take it.
struct Queued {
    answers: Vec<(Option<String>, oneshot::Receiver<crate::chat::Reply>)>,
    busy: Vec<Option<String>>,
}

async fn queue_on_each_repo(st: &AppState, request: &crate::chat::ChatRequest) -> Queued {
    let mut queued = Queued { answers: Vec::new(), busy: Vec::new() };
    let judged = super::judged_by_owners(&request.command);
    for m in st.0.fleet.route_command(request, st.0.clock.now()) {
        let (reply, rx) = oneshot::channel();
        let mut request = request.clone();
        // Their teams, as GitHub says (through the GitHub login directory.people links to their
        // Slack account), asked here: never by the writer.
        if judged {
            let teams = st.forge_teams(m, &request.principal).await;
            request.principal = request.principal.with_forge_teams(&teams);
        }
        if m.handle.submit(Job::Chat { request: Box::new(request), reply }).is_err() {
            queued.busy.push(m.name.clone());
            continue;
        }
        queued.answers.push((m.name.clone(), rx));
    }
    queued
}

/// Waits for every repo's answer and posts them as one message to `response_url` (none: the
/// URL was not allowed, nothing is posted).
async fn post_outcome_when_answered(queued: Queued, response_url: Option<String>) {
    let mut replies = Vec::new();
    for (name, rx) in queued.answers {
        if let Ok(reply) = rx.await {
            replies.push((name, reply));
        }
    }
    // The repos that were too busy to take the command: said, so a pause or a freeze that
    // reached only some of them is not taken for done everywhere.
    for name in queued.busy {
        let text = "busy: not done here; send the command again".to_string();
        replies.push((name, crate::chat::Reply { text, public: false, ok: false }));
    }
    if let Some(reply) = crate::fleet::combine(replies)
        && let Some(url) = response_url
    {
        post_to_slack(url, reply).await;
    }
}

/// How long Slack takes posts to a command's `response_url`.
const RESPONSE_URL_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// Slack's SSL check of a slash command's URL: a form with `ssl_check=1` (and a `token`).
fn is_ssl_check(body: &[u8]) -> bool {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .is_ok_and(|f| f.iter().any(|(k, v)| k == "ssl_check" && v == "1"))
}

async fn post_to_slack(url: String, reply: crate::chat::Reply) {
    let body = serde_json::json!({
        "response_type": if reply.public { "in_channel" } else { "ephemeral" },
        "text": crate::support::text::slack(&reply.text),
    });
    // A response_url takes a few posts for half an hour: a failure on Slack's side is tried
    // again, twice, before it is given up, after the wait Slack asks for (`Retry-After`) or a
    // second, then four.
    let sent = tokio::task::spawn_blocking(move || {
        let agent = crate::outbound::agent(Duration::from_secs(10));
        let mut last = String::new();
        let mut wait = Duration::ZERO;
        for backoff in [1u64, 4, 0] {
            std::thread::sleep(wait);
            match crate::outbound::post_json(&agent, &url, None, &body) {
                Ok(a) if a.ok() => return Ok(()),
                Ok(a) if !a.transient() => return Err(format!("Slack refused the outcome message: HTTP {}", a.status)),
                Ok(a) => {
                    last = format!("HTTP {}", a.status);
                    wait = a.retry_after.unwrap_or(Duration::from_secs(backoff));
                }
                Err(e) => {
                    last = e.to_string();
                    wait = Duration::from_secs(backoff);
                }
            }
            // Past the response_url's half hour a post cannot land.
            if wait > RESPONSE_URL_LIFETIME {
                break;
            }
        }
        Err(format!("posting the outcome to Slack failed: {last}"))
    })
    .await;
    match sent {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "the outcome did not reach Slack"),
        Err(e) => warn!(error = %e, "posting the outcome to Slack failed"),
    }
}
