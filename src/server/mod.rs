//! The HTTP edge: webhooks in, JSON answers out. Handlers authenticate, parse into [`Event`]s and
//! hand them to the writer; they never touch git. Reads (duplicates, history, health) are served
//! from the writer's published snapshot and never wait for it.

mod alertmanager;
mod answer_cache;
pub(crate) mod auth;
mod controllers;
mod github;
mod listener;
mod slack;
mod status_page;

pub(crate) use listener::{Limits, serve};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::config::{Config, Secrets};
use crate::domain::event::{Event, Source};
use crate::domain::history;
use crate::domain::principal::ForgeTeams;
use crate::engine::Triage;
use crate::fleet::{Fleet, Member};
use crate::metrics;
use crate::support::clock::Clock;
use crate::support::secret::SecretString;
use crate::worker::{self, Job, JobResult, QueueError};

/// How long a person's command waits for GitHub to say which teams they are in (Slack wants
/// its answer within 3 s). A question not answered by then is not counted, and is answered
/// for the next command.
const TEAM_LOOKUP_BUDGET: Duration = Duration::from_secs(2);
/// How long a comment waits for GitHub to say which pull request it is on, before it is
/// answered without acting (GitHub waits 10 s for a webhook's answer).
const PROPOSAL_LOOKUP_BUDGET: Duration = Duration::from_secs(6);

/// Whether a command may be decided by `codeowners` (a request, an approval, a cancel): only
/// then is GitHub asked about the person's teams.
fn judged_by_owners(command: &crate::chat::Command) -> bool {
    matches!(
        command,
        crate::chat::Command::Rollback { .. }
            | crate::chat::Command::Approve { .. }
            | crate::chat::Command::Cancel { .. }
    )
}

/// How an Alertmanager may authenticate.
#[derive(Clone, Debug, Default)]
pub(crate) struct AlertmanagerAuth {
    pub tokens: Vec<SecretString>,
    pub basic: Option<(String, Vec<SecretString>)>,
}

impl AlertmanagerAuth {
    fn check(&self, headers: &HeaderMap) -> bool {
        let h = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let by_token = auth::bearer(h, &self.tokens);
        let by_basic = self.basic.as_ref().is_some_and(|(u, p)| auth::basic(h, u, p));
        by_token || by_basic
    }
}

#[derive(Clone, Debug, Default)]
pub(crate) struct GithubAuth {
    pub secrets: Vec<SecretString>,
    pub workflows: Vec<String>,
}

#[derive(Clone, Debug)]
pub(crate) struct SlackSettings {
    pub secrets: Vec<SecretString>,
    pub default_env: String,
    pub response_url_prefix: String,
}

struct Inner {
    /// The writer of each config repo served, with what routes an input to it.
    fleet: Fleet,
    alertmanager: Option<AlertmanagerAuth>,
    github: Option<GithubAuth>,
    slack: Option<SlackSettings>,
    /// `sources.flux`: the HMAC keys Flux's events are signed with.
    flux: Option<Vec<SecretString>>,
    /// `sources.argocd`: the bearer tokens Argo CD's webhook service sends.
    argocd: Option<Vec<SecretString>>,
    directory: crate::domain::principal::Directory,
    /// Deliveries (GitHub `X-GitHub-Delivery`, Slack `trigger_id`) whose work was queued, so a
    /// replay does nothing and a refused one can be sent again.
    deliveries: Deliveries,
    /// Answers to Alertmanager bodies whose every alert is already rolled back.
    recorded: answer_cache::AnswerCache,
    deadline: Duration,
    /// Bodies are read only after the headers pass, one bounded read at a time per permit.
    bodies: tokio::sync::Semaphore,
    body_limit: usize,
    body_read_timeout: Duration,
    metrics: PrometheusHandle,
    clock: Arc<dyn Clock>,
}

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// Delivery ids taken, each for a day. A delivery is reserved before its work is queued and
/// released again if it could not be queued or must be retried, so "taken" means "queued".
#[derive(Default)]
pub(crate) struct Deliveries {
    taken: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

impl Deliveries {
    const KEEP: Duration = Duration::from_secs(86_400);
    /// Beyond this many, the oldest are forgotten: a flood of distinct ids cannot grow memory.
    const MAX: usize = 100_000;

    /// Reserves `id`; `false` when it was taken already.
    pub(crate) fn reserve(&self, id: &str) -> bool {
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        if taken.len() >= Self::MAX {
            taken.retain(|_, t| t.elapsed() < Self::KEEP);
            if taken.len() >= Self::MAX
                && let Some(oldest) = taken.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone())
            {
                taken.remove(&oldest);
            }
        }
        match taken.get(id) {
            Some(t) if t.elapsed() < Self::KEEP => false,
            _ => {
                taken.insert(id.to_string(), std::time::Instant::now());
                true
            }
        }
    }

    pub(crate) fn release(&self, id: &str) {
        self.taken.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }
}

/// Settings of the HTTP layer, from the config.
pub struct HttpSettings {
    pub body_limit: usize,
    pub request_timeout: Duration,
    pub response_deadline: Duration,
    pub limits: Limits,
    /// `/metrics` and `/api/v1/*` are on a listener of their own (`admin.listen`).
    pub admin_apart: bool,
    /// Tokens those reads need; none configured means open.
    pub admin_tokens: Vec<SecretString>,
}

impl HttpSettings {
    pub fn from_config(config: &Config) -> Self {
        HttpSettings {
            body_limit: config.server.body_limit,
            request_timeout: config.server.request_timeout.as_std(),
            response_deadline: config.server.response_deadline.as_std(),
            limits: Limits {
                max_connections: config.server.max_connections,
                header_read_timeout: config.server.header_read_timeout.as_std(),
            },
            admin_apart: config.admin.listen.is_some(),
            admin_tokens: Vec::new(),
        }
    }

    /// With the admin tokens from `secrets`.
    pub fn with_secrets(mut self, secrets: &Secrets) -> Self {
        self.admin_tokens = secrets.admin_tokens.clone();
        self
    }
}

impl AppState {
    pub fn new(config: &Config, secrets: &Secrets, fleet: Fleet, clock: Arc<dyn Clock>) -> Self {
        let alertmanager = config.sources.alertmanager.as_ref().map(|_| AlertmanagerAuth {
            tokens: secrets.alertmanager_tokens.clone(),
            basic: secrets.alertmanager_basic.clone(),
        });
        let github = config
            .sources
            .github
            .as_ref()
            .map(|g| GithubAuth { secrets: secrets.github_secrets.clone(), workflows: g.workflows.clone() });
        let slack = config.sources.slack.as_ref().map(|sl| SlackSettings {
            secrets: secrets.slack_secrets.clone(),
            default_env: sl.default_env.clone(),
            response_url_prefix: sl.response_url_prefix.clone(),
        });
        let flux = config.sources.flux.as_ref().map(|_| secrets.flux_secrets.clone());
        let argocd = config.sources.argocd.as_ref().map(|_| secrets.argocd_tokens.clone());
        AppState(Arc::new(Inner {
            fleet,
            alertmanager,
            github,
            slack,
            flux,
            argocd,
            directory: config.directory.clone(),
            deliveries: Deliveries::default(),
            recorded: answer_cache::AnswerCache::default(),
            deadline: config.server.response_deadline.as_std(),
            bodies: tokio::sync::Semaphore::new(config.server.max_body_reads.max(1)),
            body_limit: config.server.body_limit,
            body_read_timeout: config.server.body_read_timeout.as_std(),
            metrics: metrics::install(),
            clock,
        }))
    }
}

/// The public router: webhooks and health, and the reads unless `admin.listen` moves them.
/// Tests drive it with `tower::ServiceExt::oneshot`, without a socket.
pub fn app(state: AppState, settings: &HttpSettings) -> Router {
    let mut router = Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz));
    if !settings.admin_apart {
        router = router.merge(reads(settings));
    }
    // An unconfigured source has no route at all: 404, never "accept unsigned".
    if state.0.alertmanager.is_some() {
        router = router
            .route("/webhooks/alertmanager", rejections(post(alertmanager::alertmanager_webhook), "alertmanager"));
    }
    if state.0.github.is_some() {
        router = router.route("/webhooks/github", rejections(post(github::github_webhook), "github"));
    }
    if state.0.slack.is_some() {
        router = router.route("/webhooks/slack", rejections(post(slack::slack_webhook), "slack"));
    }
    if state.0.flux.is_some() {
        router = router.route("/webhooks/flux", rejections(post(controllers::flux_webhook), "flux"));
    }
    if state.0.argocd.is_some() {
        router = router.route("/webhooks/argocd", rejections(post(controllers::argocd_webhook), "argocd"));
    }
    finish(router, state, settings)
}

/// The admin router (`admin.listen`): health and the reads, no webhooks.
pub fn admin_app(state: AppState, settings: &HttpSettings) -> Router {
    let router = Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).merge(reads(settings));
    finish(router, state, settings)
}

/// `/metrics` and `/api/v1/*`, behind the admin token when there is one.
fn reads(settings: &HttpSettings) -> Router<AppState> {
    let router = Router::new()
        .route("/", get(status_page::page))
        .route("/metrics", get(prometheus))
        .route("/api/v1/rollbacks", get(rollbacks))
        .route("/api/v1/status", get(status_page::json))
        .route("/-/reload", post(reload));
    if settings.admin_tokens.is_empty() {
        return router;
    }
    let tokens = Arc::new(settings.admin_tokens.clone());
    router.route_layer(axum::middleware::from_fn(move |req: axum::extract::Request, next: axum::middleware::Next| {
        let tokens = tokens.clone();
        async move {
            let header = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            // A browser cannot send a bearer token: it may send the token as a Basic password.
            if auth::bearer(header, &tokens) || auth::basic_password(header, &tokens) {
                next.run(req).await
            } else {
                metrics::auth_failure("admin", "missing or wrong admin bearer token");
                let mut resp = error(
                    StatusCode::UNAUTHORIZED,
                    "admin endpoints need Authorization: Bearer <admin token> (or the token as a Basic password)",
                );
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"rollbackd admin\""));
                resp
            }
        }
    }))
}

fn finish(router: Router<AppState>, state: AppState, settings: &HttpSettings) -> Router {
    router
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
        // Nothing rollbackd serves is to be sniffed into another type, framed or followed
        // with a referrer.
        .layer(axum::middleware::map_response(|mut resp: Response| async move {
            let h = resp.headers_mut();
            h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
            h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
            resp
        }))
        .layer(DefaultBodyLimit::max(settings.body_limit))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            settings.request_timeout,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }))
        .with_state(state)
}

/// Whether reading a body failed on the size limit.
fn is_too_large(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

fn error(status: StatusCode, message: &str) -> Response {
    let mut resp = (status, axum::Json(serde_json::json!({ "error": message }))).into_response();
    resp.extensions_mut().insert(Why(message.to_string()));
    resp
}

/// What an answer says went wrong, kept on the response for the webhook routes' log and counter
/// ([`rejections`]): rollbackd's own words, never the request's body.
#[derive(Clone)]
struct Why(String);

/// Counts and logs (rate-limited) the webhook answers that reject the request: 400, 413, 415,
/// 422 (`rollbackd_webhook_rejected_total{source,status}`).
fn rejections(route: MethodRouter<AppState>, source: &'static str) -> MethodRouter<AppState> {
    route.layer(axum::middleware::map_response(move |resp: Response| async move {
        if resp.status().is_client_error() {
            let why = resp.extensions().get::<Why>().map_or("", |w| w.0.as_str());
            metrics::webhook_rejected(source, resp.status().as_u16(), why);
        }
        resp
    }))
}

fn is_json(headers: &HeaderMap) -> bool {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    ct.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

fn not_json() -> Response {
    error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "expected Content-Type: application/json")
}

/// One event's answer. The top level of a webhook response repeats the first of these.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Answer {
    /// The config repo it concerns, when rollbackd serves several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    pub trigger: String,
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    pub reason: String,
}

/// One answer to come, from the writer of `repo`.
struct Pending {
    repo: Option<String>,
    state: PendingState,
}

enum PendingState {
    Ready(Answer),
    /// A rollback the published snapshot records already: the same answer for as long as that
    /// snapshot stands (see [`answer_cache`]).
    Recorded(Answer),
    /// Refused before queueing: the event names nothing rollbackd may touch (422).
    Refused(Answer),
    Waiting {
        trigger: String,
        rx: oneshot::Receiver<JobResult>,
    },
    Busy {
        trigger: String,
        why: String,
    },
}

impl Pending {
    fn of(member: &Member, state: PendingState) -> Self {
        Pending { repo: member.name.clone(), state }
    }
}

impl Answer {
    fn new(trigger: String, outcome: &str, reason: String) -> Self {
        Answer { repo: None, trigger, outcome: outcome.into(), rollback_id: None, commit: None, reason }
    }
}

impl AppState {
    /// Reads a request's body once its headers have passed: at most `server.body_limit` bytes
    /// (413), within `server.body_read_timeout` (408), and at most `server.max_body_reads`
    /// bodies buffered at once, so senders that trickle or stall cannot hold memory or the
    /// listener.
    pub(crate) async fn read_body(&self, body: axum::body::Body) -> Result<axum::body::Bytes, Response> {
        let Ok(_permit) = self.0.bodies.acquire().await else {
            return Err(error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"));
        };
        match tokio::time::timeout(self.0.body_read_timeout, axum::body::to_bytes(body, self.0.body_limit)).await {
            Err(_) => Err(error(StatusCode::REQUEST_TIMEOUT, "the body did not arrive in time")),
            Ok(Err(e)) if is_too_large(&e) => Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the body is larger than server.body_limit ({} bytes)", self.0.body_limit),
            )),
            Ok(Err(_)) => Err(error(StatusCode::BAD_REQUEST, "the body could not be read")),
            Ok(Ok(bytes)) => Ok(bytes),
        }
    }

    /// The teams GitHub confirms `p` is in (through every GitHub login `directory.people` links
    /// to theirs), among those CODEOWNERS names on `member`'s watched branch: asked here,
    /// before the command is queued, on a blocking thread and within [`TEAM_LOOKUP_BUDGET`],
    /// so the writer never waits on GitHub. Nothing to ask (no policy admits by `codeowners`,
    /// no GitHub forge, no login): nothing confirmed.
    async fn forge_teams(&self, member: &Member, p: &crate::domain::principal::Principal) -> ForgeTeams {
        let Some((lookup, teams)) = member.handle.shared().team_question() else { return ForgeTeams::default() };
        let logins: Vec<String> = self
            .0
            .directory
            .github_logins(p)
            .into_iter()
            .filter(|l| crate::domain::principal::is_github_login(l))
            .collect();
        if logins.is_empty() {
            return ForgeTeams::default();
        }
        tokio::task::spawn_blocking(move || lookup.ask(&logins, &teams, TEAM_LOOKUP_BUDGET)).await.unwrap_or_default()
    }

    /// Which rollback proposal the pull request `c` comments on is, asked of GitHub here, on a
    /// blocking thread within [`PROPOSAL_LOOKUP_BUDGET`], before the comment is queued: the
    /// writer never waits on GitHub for it. `Err`: GitHub did not say for now (unreachable,
    /// rate limited, too slow), for a 503 and GitHub's redelivery; a refusal is the writer's
    /// to answer.
    async fn proposal_of(
        &self,
        member: &Member,
        c: &crate::domain::event::Comment,
    ) -> Result<crate::chat::dispatch::ProposalOf, String> {
        let Some(forge) = member.handle.shared().forge() else { return Ok(Ok(None)) };
        if !c.is_pull_request || !forge.hosts_pull_requests() {
            return Ok(Ok(None));
        }
        let issue = c.issue;
        let asked = tokio::task::spawn_blocking(move || forge.rollback_proposal(issue));
        let cannot = |why: &dyn std::fmt::Display| format!("cannot read pull request #{issue}: {why}");
        match tokio::time::timeout(PROPOSAL_LOOKUP_BUDGET, asked).await {
            Ok(Ok(Ok(proposal))) => Ok(Ok(proposal)),
            Ok(Ok(Err(e))) if e.is_transient() => Err(cannot(&e)),
            Ok(Ok(Err(e))) => {
                warn!(issue, error = %e, "cannot read the pull request of a comment");
                Ok(Err(cannot(&e)))
            }
            Ok(Err(_)) => Err(cannot(&"the lookup failed")),
            Err(_) => Err(cannot(&format_args!("GitHub did not answer within {}s", PROPOSAL_LOOKUP_BUDGET.as_secs()))),
        }
    }

    fn submit(&self, member: &Member, trigger: String, job: Job, rx: oneshot::Receiver<JobResult>) -> Pending {
        let state = match member.handle.submit(job) {
            Ok(()) => PendingState::Waiting { trigger, rx },
            Err(QueueError::Full) => PendingState::Busy { trigger, why: "queue full".into() },
            Err(QueueError::Stopped) => PendingState::Busy { trigger, why: "shutting down".into() },
        };
        Pending::of(member, state)
    }

    /// A rollback trigger, for each repo it concerns: answered from the snapshot when it is a
    /// known duplicate, otherwise queued for that repo's writer.
    fn dispatch_event(&self, event: Event) -> Vec<Pending> {
        let members = self.0.fleet.route(&event);
        members.into_iter().map(|m| Pending::of(m, self.dispatch_to(m, &event))).collect()
    }

    /// The firing alerts of one notification: each answered like [`AppState::dispatch_event`],
    /// but those that need a writer go to it as one job per repo, so alerts about the same
    /// bad change can be one rollback.
    fn dispatch_alerts(&self, events: Vec<Event>) -> Vec<Pending> {
        let mut pending = Vec::new();
        let mut batches: Vec<(&Member, Vec<crate::worker::Queued>)> = Vec::new();
        for event in events {
            for m in self.0.fleet.route(&event) {
                if let Some(state) = self.answer_now(m, &event) {
                    pending.push(Pending::of(m, state));
                    continue;
                }
                let (reply, rx) = oneshot::channel();
                pending.push(Pending::of(m, PendingState::Waiting { trigger: event.trigger(), rx }));
                match batches.iter_mut().find(|(b, _)| std::ptr::eq(*b, m)) {
                    Some((_, batch)) => batch.push((event.clone(), reply)),
                    None => batches.push((m, vec![(event.clone(), reply)])),
                }
            }
        }
        for (m, mut batch) in batches {
            let triggers: Vec<String> = batch.iter().map(|(e, _)| e.trigger()).collect();
            let job = match batch.len() {
                1 => {
                    let (event, reply) = batch.remove(0);
                    Job::Handle { event, reply }
                }
                _ => Job::Alerts { events: batch },
            };
            let why = match m.handle.submit(job) {
                Ok(()) => continue,
                Err(QueueError::Full) => "queue full",
                Err(QueueError::Stopped) => "shutting down",
            };
            for p in pending.iter_mut().filter(|p| p.repo == m.name) {
                if let PendingState::Waiting { trigger, .. } = &p.state
                    && triggers.contains(trigger)
                {
                    p.state = PendingState::Busy { trigger: trigger.clone(), why: why.into() };
                }
            }
        }
        pending
    }

    fn dispatch_to(&self, member: &Member, event: &Event) -> PendingState {
        if let Some(state) = self.answer_now(member, event) {
            return state;
        }
        let (reply, rx) = oneshot::channel();
        self.submit(member, event.trigger(), Job::Handle { event: event.clone(), reply }, rx).state
    }

    /// The answer to `event` for `member` when the writer is not needed for it (a known
    /// duplicate, a refusal, an origin that is down, an event no policy acts on).
    fn answer_now(&self, member: &Member, event: &Event) -> Option<PendingState> {
        let trigger = event.trigger();
        let shared = member.handle.shared();
        if let Some(r) = shared.snapshot().find_trigger(&trigger) {
            // An open pull request hears "fired again" from the writer (rate-limited there).
            let open_pr = member.github_repo.is_some()
                && r.delivery == crate::domain::rollback::Delivery::Proposal
                && !r.cancelled;
            if !open_pr {
                let o = worker::duplicate_from_snapshot(r, &trigger);
                return Some(PendingState::Recorded(answer(&trigger, &o)));
            }
        }
        if let Some(reason) = shared.refused(&trigger) {
            return Some(PendingState::Refused(Answer::new(trigger, "refused", reason)));
        }
        // A stuck or unreachable origin answers at once: the sender retries, nothing queues.
        if let Some(error) = shared.origin_error() {
            return Some(PendingState::Busy { trigger, why: format!("{error}; retry later") });
        }
        match shared.triager().triage(event) {
            Triage::Answer(o) => Some(PendingState::Ready(answer(&trigger, &o))),
            Triage::Refused(reason) => {
                warn!(%trigger, %reason, "event refused");
                Some(PendingState::Refused(Answer::new(trigger, "refused", reason)))
            }
            Triage::Queue => None,
        }
    }

    /// Waits for every pending answer until the deadline and picks the status: 503 when the
    /// sender must retry, 202 when work is still running, 422 when it failed for good.
    async fn collect(&self, source: Source, pending: Vec<Pending>) -> Response {
        let (status, answers) = self.answers(source, pending).await;
        respond(status, answers)
    }

    /// Each pending answer as it comes (within the deadline), and the status they add up to.
    async fn answers(&self, source: Source, pending: Vec<Pending>) -> (StatusCode, Vec<Answer>) {
        let deadline = tokio::time::Instant::now() + self.0.deadline;
        let mut answers = Vec::new();
        let (mut retry, mut running, mut failed) = (false, false, false);
        for p in pending {
            let mut a = match p.state {
                PendingState::Ready(a) | PendingState::Recorded(a) => a,
                PendingState::Refused(a) => {
                    failed = true;
                    a
                }
                PendingState::Busy { trigger, why } => {
                    retry = true;
                    Answer::new(trigger, "unavailable", why)
                }
                PendingState::Waiting { trigger, rx } => match tokio::time::timeout_at(deadline, rx).await {
                    Ok(Ok(JobResult::Report(report))) => answer(&trigger, &report.outcome),
                    Ok(Ok(JobResult::Note(note))) => Answer::new(trigger, "recorded", note),
                    Ok(Ok(JobResult::Failed { message, transient })) => {
                        if transient {
                            retry = true;
                        } else {
                            failed = true;
                        }
                        Answer::new(trigger, "error", message)
                    }
                    Ok(Err(_)) => {
                        retry = true;
                        Answer::new(trigger, "error", "the writer stopped".into())
                    }
                    Err(_) => {
                        running = true;
                        Answer::new(
                            trigger,
                            "accepted",
                            "still running; a retry of this delivery will report the result".into(),
                        )
                    }
                },
            };
            a.repo = p.repo;
            metrics::received(source, &a.outcome);
            answers.push(a);
        }
        let status = if retry {
            StatusCode::SERVICE_UNAVAILABLE
        } else if running {
            StatusCode::ACCEPTED
        } else if failed {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::OK
        };
        (status, answers)
    }
}

fn answer(trigger: &str, o: &crate::Outcome) -> Answer {
    Answer {
        repo: None,
        trigger: trigger.to_string(),
        outcome: o.name().to_string(),
        rollback_id: o.rollback_id().map(|i| i.to_string()),
        commit: o.commit().map(|c| c.to_string()),
        reason: o.summary(),
    }
}

/// A webhook's answer: the first event's answer at the top level, all of them in `results`.
#[derive(Serialize)]
struct Reply<'a> {
    #[serde(flatten)]
    first: Head<'a>,
    results: &'a [Answer],
}

#[derive(Serialize)]
#[serde(untagged)]
enum Head<'a> {
    Answer(&'a Answer),
    Nothing { outcome: &'static str, reason: &'static str },
}

fn respond(status: StatusCode, answers: Vec<Answer>) -> Response {
    // Only a rejection's reason is logged and counted (see `rejections`).
    let why = answers.first().filter(|_| status.is_client_error()).map(|a| format!("{}: {}", a.outcome, a.reason));
    respond_json(status, reply_json(&answers), why)
}

/// The body [`respond`] sends for `answers`.
fn reply_json(answers: &[Answer]) -> axum::body::Bytes {
    let first = match answers.first() {
        Some(a) => Head::Answer(a),
        None => Head::Nothing { outcome: "ignored", reason: "nothing to do" },
    };
    // Strings and numbers only: serialising cannot fail.
    serde_json::to_vec(&Reply { first, results: answers }).unwrap_or_default().into()
}

fn respond_json(status: StatusCode, json: axum::body::Bytes, why: Option<String>) -> Response {
    let mut resp =
        (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], json).into_response();
    if let Some(why) = why.filter(|_| status.is_client_error()) {
        resp.extensions_mut().insert(Why(why));
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    resp
}

async fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

async fn readyz(State(st): State<AppState>) -> Response {
    match st.0.fleet.not_ready() {
        None => axum::Json(serde_json::json!({ "status": "ready" })).into_response(),
        Some(why) => error(StatusCode::SERVICE_UNAVAILABLE, &why),
    }
}

async fn prometheus(State(st): State<AppState>) -> Response {
    for m in st.0.fleet.members() {
        metrics::queue_depth(m.name.as_deref(), m.handle.shared().queue_depth());
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], st.0.metrics.render()).into_response()
}

#[derive(Deserialize)]
struct HistoryQuery {
    service: Option<String>,
    env: Option<String>,
    limit: Option<usize>,
    /// One config repo of several.
    repo: Option<String>,
}

async fn rollbacks(State(st): State<AppState>, Query(q): Query<HistoryQuery>) -> Response {
    let query =
        history::Query { service: q.service.as_deref(), env: q.env.as_deref(), limit: Some(q.limit.unwrap_or(100)) };
    if !st.0.fleet.is_many() {
        let snap = st.0.fleet.members()[0].handle.shared().snapshot();
        return axum::Json(history::json(&query.select(&snap.records))).into_response();
    }
    // Newest first across the repos, each record naming its repo.
    let snaps: Vec<_> =
        st.0.fleet
            .members()
            .iter()
            .filter(|m| q.repo.is_none() || m.name == q.repo)
            .map(|m| (m.name.clone(), m.handle.shared().snapshot()))
            .collect();
    let mut rows: Vec<(jiff::Timestamp, serde_json::Value)> = Vec::new();
    for (name, snap) in &snaps {
        for r in query.select(&snap.records) {
            let mut v = serde_json::to_value(r).unwrap_or_default();
            v["repo"] = serde_json::json!(name);
            rows.push((r.at, v));
        }
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.0));
    rows.truncate(query.limit.unwrap_or(usize::MAX));
    axum::Json(serde_json::json!({ "rollbacks": rows.into_iter().map(|(_, v)| v).collect::<Vec<_>>() })).into_response()
}

/// `POST /-/reload`: the writer reads the config, policies and templates again; an invalid
/// change is refused (422) and what is in force stays.
///
/// Browsers are refused: a page elsewhere could make a browser that holds the admin password
/// post here (a form needs no script), and every browser names the page's origin on a POST.
async fn reload(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if headers.contains_key(header::ORIGIN) {
        return error(StatusCode::FORBIDDEN, "reload is for operators' tools (curl, SIGHUP), not browsers");
    }
    let (mut said, mut refused, mut busy) = (Vec::new(), Vec::new(), Vec::new());
    for (name, r) in st.0.fleet.reload().await {
        let named = |text: &str| match &name {
            Some(n) => format!("repo {n}: {text}"),
            None => text.to_string(),
        };
        match r {
            crate::fleet::Reload::Done(note) => said.push(named(&note)),
            crate::fleet::Reload::Refused(message) => refused.push(named(&message)),
            crate::fleet::Reload::Busy(why) => busy.push(named(why)),
        }
    }
    let all: Vec<String> = refused.iter().chain(&busy).chain(&said).cloned().collect();
    if !busy.is_empty() {
        return error(StatusCode::SERVICE_UNAVAILABLE, &all.join("; "));
    }
    if !refused.is_empty() {
        return error(StatusCode::UNPROCESSABLE_ENTITY, &all.join("; "));
    }
    axum::Json(serde_json::json!({ "status": "reloaded", "reason": said.join("; ") })).into_response()
}

/// Resolves on SIGTERM or Ctrl-C.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    info!("shutting down: no new connections, finishing in-flight work");
}

/// Binds `listen`, returning the bound address (port 0 picks a free one).
pub(crate) async fn bind(listen: &str) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    let l = tokio::net::TcpListener::bind(listen).await?;
    let addr = l.local_addr()?;
    Ok((l, addr))
}
