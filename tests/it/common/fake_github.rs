//! A fake GitHub API for tests: the handful of endpoints rollbackd calls, with state, backed by
//! the test's real bare origin so merging a pull request really merges it there. As strict as
//! GitHub: every request is checked against GitHub's REST description, and so is every answer
//! the fake gives (built from the description's examples); lists are paginated as GitHub does
//! (`per_page`, `page` or `cursor`, a `Link` header); an installation token may do only what the
//! installation was granted; and every webhook it sends is checked against GitHub's webhooks
//! description.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{Value, json};

pub const TOKEN: &str = "test-gh-token";
/// What the fake mints for a GitHub App installation.
pub const INSTALLATION_TOKEN: &str = "ghs_fake_installation_token";

#[derive(Clone, Debug)]
pub struct FakePr {
    pub number: u64,
    pub head: String,
    pub base: String,
    pub title: String,
    pub body: String,
    pub state: String,
    pub merged_sha: Option<String>,
    pub labels: Vec<String>,
    pub reviewers: Vec<String>,
    pub teams: Vec<String>,
    /// The (head, base) GitHub has worked out mergeability for; anything else is still being
    /// computed (`mergeable: null`), as right after a push.
    pub computed: Option<(String, String)>,
    /// The head when it was merged (GitHub keeps `head.sha`; the merge is `merge_commit_sha`).
    pub merged_head: Option<String>,
}

/// One attempt at a webhook delivery.
#[derive(Clone, Debug)]
pub struct SentDelivery {
    pub id: u64,
    pub guid: String,
    pub event: String,
    pub payload: Vec<u8>,
    pub redelivery: bool,
    /// What the receiver answered; 0 if it could not be reached.
    pub status_code: u16,
    /// The body of its answer.
    pub answer: String,
    pub delivered_at: String,
}

/// Sends a webhook as GitHub does (signed, with its delivery id), returning the status and body.
fn post_hook(url: &str, secret: &str, event: &str, guid: &str, payload: &[u8]) -> (u16, String) {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(payload);
    let sig: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(30)))
        .build()
        .into();
    agent
        .post(format!("{url}/webhooks/github"))
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-github-delivery", guid)
        .header("x-hub-signature-256", format!("sha256={sig}"))
        .send(payload)
        .map(|mut r| (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default()))
        .unwrap_or((0, String::new()))
}

/// An answer the fake gives instead of handling a request: a rate limit, a 5xx.
#[derive(Clone, Debug)]
pub struct Injected {
    /// `METHOD /path` the request must start with.
    pub request: String,
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct Gh {
    /// Merge methods the repository allows (all when empty), as its settings say.
    pub merge_methods: Vec<String>,
    /// Branch protection's refusal of every merge, when set.
    pub protection: Option<String>,
    /// How many more merges to answer 405 "Base branch was modified" even when computed.
    pub base_modified: u32,
    /// Merge attempts seen.
    pub merge_attempts: u32,
    /// Accounts reviews may be requested from (anyone when empty); GitHub refuses others, 422.
    pub collaborators: Vec<String>,
    /// Answers to give instead of handling, first match first, each once.
    pub inject: Vec<Injected>,
    /// Requests (`METHOD /path` prefix) held unanswered until the test lets them go: a slow
    /// GitHub. See [`FakeGithub::hold`].
    pub held: Option<(String, tokio::sync::watch::Receiver<bool>)>,
    /// Every request, `METHOD /path`.
    pub requests: Vec<String>,
    /// The organization's teams (`org/team-slug`) and their memberships: (login, `active` or
    /// `pending`). Anyone else is not a member (404), as is anyone of a team not here.
    pub teams: HashMap<String, Vec<(String, String)>>,
    /// The App installation's permissions and events (what docs/setup-github-app.md says to
    /// grant, when `None`). An installation token is refused (403) what they do not cover.
    pub app_permissions: Option<Value>,
    pub app_events: Option<Vec<String>>,
    /// Where the App's webhooks go, and their secret: set by [`FakeGithub::hook_to`].
    pub hook: Option<(String, String)>,
    /// Every attempt at a webhook delivery, oldest first, with what was sent.
    pub deliveries: Vec<SentDelivery>,
    /// The delivery ids rollbackd asked GitHub to send again, in order.
    pub redeliveries_asked: Vec<u64>,
    /// The config repo's old name: GitHub answers 301 to the new one (a renamed repository).
    pub renamed_from: Option<String>,
    pub prs: Vec<FakePr>,
    /// (issue number, body)
    pub comments: Vec<(u64, String)>,
    /// (comment id, content)
    pub reactions: Vec<(u64, String)>,
    /// (title, body, labels)
    pub issues: Vec<(String, String, Vec<String>)>,
    /// sha → (check name, conclusion), oldest first
    pub checks: HashMap<String, Vec<(String, String)>>,
    /// sha → (status context, state), of the older Status API
    pub statuses: HashMap<String, Vec<(String, String)>>,
    /// Installation tokens minted, and installation lookups answered (GitHub App auth).
    pub tokens_minted: usize,
    pub installation_lookups: usize,
    /// Check runs rollbackd created (the request bodies).
    pub check_runs_created: Vec<Value>,
    /// (commit, body) of commit comments.
    pub commit_comments: Vec<(String, String)>,
    /// Requests GitHub's REST description does not allow (see `openapi::check`).
    pub violations: Vec<String>,
    /// Requests no route of the fake handles: a call rollbackd makes that GitHub would answer
    /// and the fake cannot, or a typo'd path.
    pub unhandled: Vec<String>,
    next_comment: u64,
}

#[derive(Clone)]
struct App {
    gh: Arc<Mutex<Gh>>,
    origin: PathBuf,
    url: String,
}

pub struct FakeGithub {
    pub url: String,
    pub gh: Arc<Mutex<Gh>>,
}

impl FakeGithub {
    pub fn start(origin: PathBuf) -> FakeGithub {
        let gh = Arc::new(Mutex::new(Gh { next_comment: 1000, ..Gh::default() }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = App { gh: gh.clone(), origin, url: url.clone() };
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                // Every /repos call needs the token (or an installation token); the App's own
                // endpoints check for its JWT themselves.
                let repos = Router::new()
                    .route("/repos/{o}/{r}", get(get_repo))
                    .route("/repos/{o}/{r}/pulls", post(create_pr).get(list_prs))
                    .route("/repos/{o}/{r}/pulls/{n}", get(get_pr).patch(update_pr))
                    .route("/repos/{o}/{r}/pulls/{n}/merge", put(merge_pr))
                    .route("/repos/{o}/{r}/pulls/{n}/requested_reviewers", post(reviewers))
                    .route("/repos/{o}/{r}/issues", post(create_issue))
                    .route("/repos/{o}/{r}/commits/{sha}/check-runs", get(check_runs))
                    .route("/repos/{o}/{r}/commits/{sha}/status", get(combined_status))
                    .route("/repos/{o}/{r}/check-runs", post(create_check_run))
                    .route("/repos/{o}/{r}/check-runs/{id}", axum::routing::patch(update_check_run))
                    .route("/repos/{o}/{r}/commits/{sha}/comments", post(commit_comment))
                    .route("/repos/{o}/{r}/issues/{n}/labels", post(labels))
                    .route("/repos/{o}/{r}/issues/{n}/comments", post(comment))
                    .route("/repos/{o}/{r}/issues/comments/{id}/reactions", post(react))
                    .route("/orgs/{org}/teams/{team}/memberships/{user}", get(team_membership))
                    .layer(axum::middleware::from_fn(require_token));
                let r = Router::new()
                    .route("/repos/{o}/{r}/installation", get(installation))
                    .route("/app/installations/{id}/access_tokens", post(access_token))
                    .route("/app/hook/deliveries", get(list_deliveries))
                    .route("/app/hook/deliveries/{id}/attempts", post(redeliver))
                    .merge(repos)
                    .fallback(unhandled)
                    .layer(axum::middleware::from_fn_with_state(app.clone(), contract))
                    .with_state(app);
                axum::serve(listener, r).await.unwrap();
            });
        });
        FakeGithub { url, gh }
    }

    /// Where the App's webhooks go: rollbackd's base URL, and the webhook secret.
    pub fn hook_to(&self, url: &str, secret: &str) {
        self.gh.lock().unwrap().hook = Some((url.to_string(), secret.to_string()));
    }

    /// Delivers a webhook as GitHub does, and records the attempt; returns the status.
    pub fn deliver(&self, event: &str, guid: &str, payload: &[u8]) -> u16 {
        let (url, secret) = self.gh.lock().unwrap().hook.clone().expect("hook_to first");
        check_payload(&self.gh, event, payload);
        let (status, answer) = post_hook(&url, &secret, event, guid, payload);
        record_attempt(&self.gh, guid, event, payload, false, status, answer);
        status
    }

    /// Holds every request starting with `request` (`METHOD /path`) unanswered until the
    /// returned sender says `true`: GitHub taking its time.
    pub fn hold(&self, request: &str) -> tokio::sync::watch::Sender<bool> {
        let (tx, rx) = tokio::sync::watch::channel(false);
        self.gh.lock().unwrap().held = Some((request.to_string(), rx));
        tx
    }

    /// `body` commented by `login` on pull request `pr` of the config repo (comment `id`), as
    /// GitHub delivers an `issue_comment` (checked against GitHub's webhooks description).
    pub fn pr_comment(&self, pr: u64, id: u64, login: &str, body: &str) -> Vec<u8> {
        let mut c = super::http::fixture("issue_comment.created.payload.json");
        c["issue"]["number"] = pr.into();
        c["issue"]["pull_request"] = json!({ "url": format!("{}/repos/acme/config/pulls/{pr}", self.url),
            "html_url": format!("https://github.example/acme/config/pull/{pr}"), "diff_url": "https://github.example/d",
            "patch_url": "https://github.example/p" });
        c["comment"]["id"] = id.into();
        c["comment"]["body"] = body.into();
        c["comment"]["user"]["login"] = login.into();
        c["sender"]["login"] = login.into();
        c["repository"]["full_name"] = "acme/config".into();
        serde_json::to_vec(&super::openapi::webhook_payload("issue_comment", c)).unwrap()
    }

    pub fn prs(&self) -> Vec<FakePr> {
        self.gh.lock().unwrap().prs.clone()
    }

    pub fn comments(&self) -> Vec<(u64, String)> {
        self.gh.lock().unwrap().comments.clone()
    }

    pub fn set_check(&self, sha: &str, name: &str, conclusion: &str) {
        self.gh.lock().unwrap().checks.entry(sha.to_string()).or_default().push((name.into(), conclusion.into()));
    }

    pub fn app_calls(&self) -> (usize, usize) {
        let gh = self.gh.lock().unwrap();
        (gh.installation_lookups, gh.tokens_minted)
    }

    pub fn issues(&self) -> Vec<(String, String, Vec<String>)> {
        self.gh.lock().unwrap().issues.clone()
    }

    /// Puts `login` in team `org/team` with `state` (`active`, or `pending`: invited, not
    /// accepted yet).
    pub fn add_team_member(&self, team: &str, login: &str, state: &str) {
        self.gh.lock().unwrap().teams.entry(team.to_string()).or_default().push((login.into(), state.into()));
    }

    /// How many times rollbackd asked about team membership.
    pub fn team_lookups(&self) -> usize {
        self.gh.lock().unwrap().requests.iter().filter(|r| r.starts_with("GET /orgs/")).count()
    }

    pub fn reactions(&self) -> Vec<(u64, String)> {
        self.gh.lock().unwrap().reactions.clone()
    }

    /// Ends a test: fails it if rollbackd made a request no route of the fake handled.
    pub fn finish(self) {
        let unhandled = self.gh.lock().unwrap().unhandled.clone();
        assert!(unhandled.is_empty(), "requests the fake GitHub did not handle: {unhandled:?}");
        let violations = self.gh.lock().unwrap().violations.clone();
        assert!(
            violations.is_empty(),
            "requests, answers or webhooks GitHub's descriptions do not allow: {violations:?}"
        );
    }
}

/// Every request is checked against GitHub's REST description first: one it would refuse (or
/// silently misread) is recorded and answered 422, as GitHub answers a request that fails
/// validation.
async fn contract(State(app): State<App>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let (parts, body) = req.into_parts();
    let request = format!("{} {}", parts.method, parts.uri.path());
    app.gh.lock().unwrap().requests.push(request.clone());
    let held = app.gh.lock().unwrap().held.clone().filter(|(r, _)| request.starts_with(r.as_str()));
    if let Some((_, mut released)) = held {
        let _ = released.wait_for(|go| *go).await;
    }
    {
        let mut gh = app.gh.lock().unwrap();
        if let Some(i) = gh.inject.iter().position(|i| request.starts_with(&i.request)) {
            let i = gh.inject.remove(i);
            let mut resp =
                (StatusCode::from_u16(i.status).unwrap(), Json(json!({ "message": i.message }))).into_response();
            for (k, v) in i.headers {
                resp.headers_mut().insert(k, v.parse().unwrap());
            }
            return resp;
        }
    }
    let renamed = app.gh.lock().unwrap().renamed_from.clone();
    if let Some(rest) =
        renamed.and_then(|old| parts.uri.path().strip_prefix(&format!("/repos/acme/{old}/")).map(str::to_string))
    {
        let to = format!("{}/repos/acme/config/{rest}", app.url);
        let mut resp =
            (StatusCode::MOVED_PERMANENTLY, Json(json!({ "message": "Moved Permanently", "url": to }))).into_response();
        resp.headers_mut().insert("location", to.parse().unwrap());
        return resp;
    }
    // Only the config repo exists here.
    let path = parts.uri.path();
    if path.starts_with("/repos/") && path != "/repos/acme/config" && !path.starts_with("/repos/acme/config/") {
        app.gh.lock().unwrap().unhandled.push(format!("{request}: not acme/config"));
        return (StatusCode::NOT_FOUND, Json(json!({ "message": "Not Found" }))).into_response();
    }
    let bytes = http_body_util::BodyExt::collect(body).await.map(|b| b.to_bytes()).unwrap_or_default();
    let checked = super::openapi::check(parts.method.as_str(), parts.uri.path(), parts.uri.query(), &bytes);
    if let Err(why) = checked {
        app.gh.lock().unwrap().violations.push(why.clone());
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({ "message": "Validation Failed", "errors": [why] })))
            .into_response();
    }
    if let Some(refused) = not_granted(&app, &parts) {
        return refused;
    }
    let (method, path) = (parts.method.to_string(), parts.uri.path().to_string());
    let resp = next.run(axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes))).await;
    // The fake's own answer is held to the same description.
    let (parts, body) = resp.into_parts();
    let bytes = http_body_util::BodyExt::collect(body).await.map(|b| b.to_bytes()).unwrap_or_default();
    if let Err(why) = super::openapi::check_answer(&method, &path, parts.status.as_u16(), &bytes) {
        app.gh.lock().unwrap().violations.push(format!("the fake's own {why}"));
    }
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// What an installation's permission covers: GitHub answers 403 "Resource not accessible by
/// integration" to a call the installation was not granted.
fn permission_for(method: &str, path: &str) -> Option<(&'static str, bool)> {
    // An organization's teams and their members: the Members permission (Organization).
    if path.starts_with("/orgs/") && path.contains("/teams/") {
        return Some(("members", method != "GET"));
    }
    let rest = path.strip_prefix("/repos/acme/config")?;
    let write = method != "GET";
    Some(match rest {
        "" => ("metadata", false),
        r if r.starts_with("/pulls") => ("pull_requests", write),
        r if r.starts_with("/issues") => ("issues", write),
        r if r.starts_with("/check-runs") || r.ends_with("/check-runs") => ("checks", write),
        r if r.ends_with("/status") => ("statuses", write),
        r if r.ends_with("/comments") && r.starts_with("/commits/") => ("contents", write),
        _ => return None,
    })
}

/// The installation's grants (what docs/setup-github-app.md says to grant, unless a test set
/// others).
fn granted(gh: &Gh) -> Value {
    gh.app_permissions.clone().unwrap_or_else(|| {
        json!({ "metadata": "read", "contents": "write", "pull_requests": "write", "issues": "write",
                "checks": "write", "statuses": "read", "actions": "read", "deployments": "read",
                "workflows": "write", "members": "read" })
    })
}

fn not_granted(app: &App, parts: &axum::http::request::Parts) -> Option<Response> {
    let auth = parts.headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !auth.ends_with(INSTALLATION_TOKEN) {
        return None;
    }
    let (permission, write) = permission_for(parts.method.as_str(), parts.uri.path())?;
    let level = granted(&app.gh.lock().unwrap())[permission].as_str().unwrap_or("none").to_string();
    let enough = matches!(level.as_str(), "write" | "admin") || (level == "read" && !write);
    (!enough).then(|| {
        let message = "Resource not accessible by integration";
        (StatusCode::FORBIDDEN, Json(json!({ "message": message }))).into_response()
    })
}

async fn unhandled(State(app): State<App>, req: axum::extract::Request) -> Response {
    app.gh.lock().unwrap().unhandled.push(format!("{} {}", req.method(), req.uri()));
    (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"}))).into_response()
}

fn authorized(h: &HeaderMap) -> bool {
    let v = h.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    [TOKEN, INSTALLATION_TOKEN].iter().any(|t| v == format!("Bearer {t}") || v == format!("token {t}"))
}

/// A GitHub App authenticates with a JWT (three base64url parts) signed with its key.
fn app_jwt(h: &HeaderMap) -> bool {
    let v = h.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    v.strip_prefix("Bearer ").is_some_and(|t| t.split('.').count() == 3 && t.len() > 100)
}

async fn require_token(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if authorized(req.headers()) { next.run(req).await } else { unauthorized() }
}

/// A JSON array of strings (labels, reviewers), empty for anything else.
fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

fn unauthorized() -> Response {
    (StatusCode::UNAUTHORIZED, Json(json!({"message": "Bad credentials"}))).into_response()
}

fn head_sha(origin: &std::path::Path, branch: &str) -> Option<String> {
    let repo = git2::Repository::open_bare(origin).ok()?;
    repo.refname_to_id(&format!("refs/heads/{branch}")).ok().map(|o| o.to_string())
}

/// A pull request as `template` answers it (the full one, or `pull-request-simple` in a list,
/// which has no `mergeable`), built from the description's example.
fn pr_as(app: &App, pr: &FakePr, method: &str, template: &str, status: u16) -> Value {
    let head = pr.merged_head.clone().or_else(|| head_sha(&app.origin, &pr.head)).unwrap_or_default();
    let base = head_sha(&app.origin, &pr.base).unwrap_or_default();
    let known = pr.state != "open" || pr.computed.as_ref() == Some(&(head.clone(), base.clone()));
    let mut v = super::openapi::example(method, template, status);
    if let Some(list) = v.as_array_mut() {
        v = list.remove(0);
    }
    v["number"] = pr.number.into();
    v["html_url"] = format!("https://github.example/acme/config/pull/{}", pr.number).into();
    v["url"] = format!("{}/repos/acme/config/pulls/{}", app.url, pr.number).into();
    v["state"] = pr.state.clone().into();
    v["title"] = pr.title.clone().into();
    v["body"] = pr.body.clone().into();
    v["head"]["ref"] = pr.head.clone().into();
    v["head"]["label"] = format!("acme:{}", pr.head).into();
    v["head"]["sha"] = head.into();
    v["head"]["repo"]["full_name"] = "acme/config".into();
    v["head"]["repo"]["name"] = "config".into();
    v["head"]["repo"]["owner"]["login"] = "acme".into();
    v["base"]["ref"] = pr.base.clone().into();
    v["base"]["label"] = format!("acme:{}", pr.base).into();
    v["base"]["sha"] = base.into();
    v["base"]["repo"]["full_name"] = "acme/config".into();
    v["merge_commit_sha"] = pr.merged_sha.clone().into();
    v["merged_at"] = pr.merged_sha.as_ref().map(|_| "2026-11-21T12:00:00Z").into();
    v["labels"] = Value::Array(Vec::new());
    v["requested_reviewers"] = Value::Array(Vec::new());
    if v.get("mergeable").is_some() {
        v["merged"] = pr.merged_sha.is_some().into();
        v["mergeable"] = if known { json!(true) } else { Value::Null };
        v["mergeable_state"] = if known { "clean" } else { "unknown" }.into();
    }
    v
}

fn pr_json(app: &App, pr: &FakePr) -> Value {
    pr_as(app, pr, "get", "/repos/{owner}/{repo}/pulls/{pull_number}", 200)
}

/// GitHub works mergeability out in the background: a read that finds it unknown starts the
/// work, and the next read has the answer.
fn compute(app: &App, pr: &mut FakePr) {
    let head = head_sha(&app.origin, &pr.head).unwrap_or_default();
    let base = head_sha(&app.origin, &pr.base).unwrap_or_default();
    pr.computed = Some((head, base));
}

async fn create_pr(State(app): State<App>, Json(b): Json<Value>) -> Response {
    let head = b["head"].as_str().unwrap_or_default().to_string();
    if head_sha(&app.origin, &head).is_none() {
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"message": "Validation Failed: head"}))).into_response();
    }
    let mut gh = app.gh.lock().unwrap();
    if gh.prs.iter().any(|p| p.head == head && p.state == "open") {
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"message": "A pull request already exists"})))
            .into_response();
    }
    let pr = FakePr {
        number: gh.prs.len() as u64 + 1,
        head,
        base: b["base"].as_str().unwrap_or("main").to_string(),
        title: b["title"].as_str().unwrap_or_default().to_string(),
        body: b["body"].as_str().unwrap_or_default().to_string(),
        state: "open".into(),
        merged_sha: None,
        labels: vec![],
        reviewers: vec![],
        teams: vec![],
        computed: None,
        merged_head: None,
    };
    gh.prs.push(pr.clone());
    (StatusCode::CREATED, Json(pr_as(&app, &pr, "post", "/repos/{owner}/{repo}/pulls", 201))).into_response()
}

/// `pull-request-simple`s: no `mergeable` (GitHub works it out only for a single pull request).
/// `head` is `owner:branch`: a branch of another owner's fork is another pull request.
async fn list_prs(State(app): State<App>, Query(q): Query<HashMap<String, String>>) -> Response {
    let gh = app.gh.lock().unwrap();
    let head = q.get("head").map(|h| match h.split_once(':') {
        Some((owner, branch)) => (Some(owner.to_string()), branch.to_string()),
        None => (None, h.clone()),
    });
    let list: Vec<Value> = gh
        .prs
        .iter()
        .filter(|p| q.get("state").is_none_or(|s| s == "all" || s == &p.state))
        .filter(|p| head.as_ref().is_none_or(|(owner, b)| b == &p.head && owner.as_deref().is_none_or(|o| o == "acme")))
        .map(|p| pr_as(&app, p, "get", "/repos/{owner}/{repo}/pulls", 200))
        .collect();
    let (page, link) = paged(&app, "/repos/acme/config/pulls", &q, list);
    with_link(Json(Value::Array(page)).into_response(), link)
}

/// One page of `all` as GitHub pages it (`per_page`, 30 unless asked, at most 100; `page` from
/// 1), and the `Link` header that says where the next and last pages are.
fn paged(app: &App, path: &str, q: &HashMap<String, String>, all: Vec<Value>) -> (Vec<Value>, Option<String>) {
    let per_page = q.get("per_page").and_then(|p| p.parse().ok()).unwrap_or(30usize).clamp(1, 100);
    let page = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1usize).max(1);
    let pages = all.len().div_ceil(per_page).max(1);
    let items = all.into_iter().skip((page - 1) * per_page).take(per_page).collect();
    let url = |n: usize| {
        let mut q: Vec<(String, String)> = q.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        q.retain(|(k, _)| k != "page");
        q.sort();
        q.push(("page".into(), n.to_string()));
        format!("{}{path}?{}", app.url, serde_urlencoded::to_string(q).unwrap())
    };
    let link = (page < pages).then(|| format!("<{}>; rel=\"next\", <{}>; rel=\"last\"", url(page + 1), url(pages)));
    (items, link)
}

fn with_link(mut resp: Response, link: Option<String>) -> Response {
    if let Some(link) = link {
        resp.headers_mut().insert("link", link.parse().unwrap());
    }
    resp
}

async fn get_pr(State(app): State<App>, Path((_o, _r, n)): Path<(String, String, u64)>) -> Response {
    let mut gh = app.gh.lock().unwrap();
    match gh.prs.iter_mut().find(|p| p.number == n) {
        Some(p) => {
            let answer = pr_json(&app, p);
            compute(&app, p);
            Json(answer).into_response()
        }
        None => (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"}))).into_response(),
    }
}

async fn update_pr(
    State(app): State<App>,
    Path((_o, _r, n)): Path<(String, String, u64)>,
    Json(b): Json<Value>,
) -> Response {
    let mut gh = app.gh.lock().unwrap();
    let Some(p) = gh.prs.iter_mut().find(|p| p.number == n) else {
        return (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"}))).into_response();
    };
    if let Some(s) = b["state"].as_str() {
        p.state = s.to_string();
    }
    let p = p.clone();
    Json(pr_as(&app, &p, "patch", "/repos/{owner}/{repo}/pulls/{pull_number}", 200)).into_response()
}

/// Really merges in the origin: a merge commit, or one commit for squash and rebase.
async fn merge_pr(
    State(app): State<App>,
    Path((_o, _r, n)): Path<(String, String, u64)>,
    Json(b): Json<Value>,
) -> Response {
    let mut gh = app.gh.lock().unwrap();
    gh.merge_attempts += 1;
    let method = b["merge_method"].as_str().unwrap_or("merge").to_string();
    if !gh.merge_methods.is_empty() && !gh.merge_methods.contains(&method) {
        let what = match method.as_str() {
            "squash" => "Squash merges",
            "rebase" => "Rebase merges",
            _ => "Merge commits",
        };
        let message = format!("{what} are not allowed on this repository.");
        return (StatusCode::METHOD_NOT_ALLOWED, Json(json!({ "message": message }))).into_response();
    }
    if let Some(message) = gh.protection.clone() {
        return (StatusCode::METHOD_NOT_ALLOWED, Json(json!({ "message": message }))).into_response();
    }
    let base_modified = gh.base_modified > 0;
    gh.base_modified = gh.base_modified.saturating_sub(1);
    // GitHub: 404 for a pull request that does not exist, 405 for one that cannot be merged.
    let Some(pr) = gh.prs.iter_mut().find(|p| p.number == n) else {
        return (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"}))).into_response();
    };
    if pr.state != "open" {
        return (StatusCode::METHOD_NOT_ALLOWED, Json(json!({"message": "Pull Request is not mergeable"})))
            .into_response();
    }
    let repo = git2::Repository::open_bare(&app.origin).unwrap();
    let head = repo.refname_to_id(&format!("refs/heads/{}", pr.head)).unwrap();
    if b["sha"].as_str().is_some_and(|s| s != head.to_string()) {
        return (
            StatusCode::CONFLICT,
            Json(json!({"message": "Head branch was modified. Review and try the merge again."})),
        )
            .into_response();
    }
    // Right after a push GitHub has not worked out mergeability yet.
    let now = (head.to_string(), head_sha(&app.origin, &pr.base).unwrap_or_default());
    if base_modified || pr.computed.as_ref() != Some(&now) {
        pr.computed = Some(now);
        let message = "Base branch was modified. Review and try the merge again.";
        return (StatusCode::METHOD_NOT_ALLOWED, Json(json!({ "message": message }))).into_response();
    }
    let base_ref = format!("refs/heads/{}", pr.base);
    let base = repo.refname_to_id(&base_ref).unwrap();
    let (bc, hc) = (repo.find_commit(base).unwrap(), repo.find_commit(head).unwrap());
    let ancestor = repo.find_commit(repo.merge_base(base, head).unwrap()).unwrap();
    let mut index =
        repo.merge_trees(&ancestor.tree().unwrap(), &bc.tree().unwrap(), &hc.tree().unwrap(), None).unwrap();
    if index.has_conflicts() {
        return (StatusCode::METHOD_NOT_ALLOWED, Json(json!({"message": "merge conflict"}))).into_response();
    }
    let tree = repo.find_tree(index.write_tree_to(&repo).unwrap()).unwrap();
    let sig = git2::Signature::now("GitHub", "noreply@github.example").unwrap();
    let message =
        format!("{}\n\n{}", b["commit_title"].as_str().unwrap_or(""), b["commit_message"].as_str().unwrap_or(""));
    let parents: Vec<&git2::Commit<'_>> = match b["merge_method"].as_str() {
        Some("merge") => vec![&bc, &hc],
        _ => vec![&bc],
    };
    let id = repo.commit(Some(&base_ref), &sig, &sig, &message, &tree, &parents).unwrap();
    pr.state = "closed".into();
    pr.merged_sha = Some(id.to_string());
    pr.merged_head = Some(head.to_string());
    let mut closed = crate::common::http::fixture("pull_request.closed.payload.json");
    closed["number"] = pr.number.into();
    closed["pull_request"] = pr_as(&app, pr, "get", "/repos/{owner}/{repo}/pulls/{pull_number}", 200);
    closed["pull_request"]["merged_by"] = json!({ "login": BOT, "type": "Bot" });
    own_repository_and_sender(&mut closed);
    drop(gh);
    emit(&app, "pull_request", closed);
    Json(json!({"merged": true, "sha": id.to_string(), "message": "Pull Request successfully merged"})).into_response()
}

async fn reviewers(
    State(app): State<App>,
    Path((_o, _r, n)): Path<(String, String, u64)>,
    Json(b): Json<Value>,
) -> Response {
    let mut gh = app.gh.lock().unwrap();
    let collaborators = gh.collaborators.clone();
    let Some(p) = gh.prs.iter_mut().find(|p| p.number == n) else {
        return (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"}))).into_response();
    };
    let reviewers = strings(&b["reviewers"]);
    if !collaborators.is_empty() && reviewers.iter().any(|r| !collaborators.contains(r)) {
        let message = "Reviews may only be requested from collaborators. One or more of the users or teams you specified is not a collaborator of the acme/config repository.";
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({ "message": message }))).into_response();
    }
    p.reviewers = reviewers;
    p.teams = strings(&b["team_reviewers"]);
    let p = p.clone();
    drop(gh);
    let answer = pr_as(&app, &p, "post", "/repos/{owner}/{repo}/pulls/{pull_number}/requested_reviewers", 201);
    (StatusCode::CREATED, Json(answer)).into_response()
}

async fn labels(
    State(app): State<App>,
    Path((_o, _r, n)): Path<(String, String, u64)>,
    Json(b): Json<Value>,
) -> Response {
    let mut gh = app.gh.lock().unwrap();
    let Some(p) = gh.prs.iter_mut().find(|p| p.number == n) else {
        return (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"}))).into_response();
    };
    // POST adds to the labels a pull request has (PUT would replace them).
    for l in strings(&b["labels"]) {
        if !p.labels.contains(&l) {
            p.labels.push(l);
        }
    }
    let example = super::openapi::example("post", "/repos/{owner}/{repo}/issues/{issue_number}/labels", 200)[0].clone();
    let all: Vec<Value> = p
        .labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let mut label = example.clone();
            label["id"] = (i + 1).into();
            label["name"] = l.clone().into();
            label
        })
        .collect();
    Json(Value::Array(all)).into_response()
}

/// The repository and sender of a webhook the App's own action caused.
fn own_repository_and_sender(payload: &mut Value) {
    payload["repository"]["full_name"] = "acme/config".into();
    payload["repository"]["name"] = "config".into();
    payload["repository"]["owner"]["login"] = "acme".into();
    payload["sender"]["login"] = BOT.into();
    payload["sender"]["type"] = "Bot".into();
}

async fn comment(
    State(app): State<App>,
    Path((_o, _r, n)): Path<(String, String, u64)>,
    Json(b): Json<Value>,
) -> Response {
    let mut gh = app.gh.lock().unwrap();
    gh.next_comment += 1;
    let id = gh.next_comment;
    let body = b["body"].as_str().unwrap_or_default().to_string();
    gh.comments.push((n, body.clone()));
    let is_pr = gh.prs.iter().any(|p| p.number == n);
    drop(gh);
    let mut answer = super::openapi::example("post", "/repos/{owner}/{repo}/issues/{issue_number}/comments", 201);
    answer["id"] = id.into();
    answer["body"] = body.clone().into();
    answer["user"]["login"] = BOT.into();
    answer["user"]["type"] = "Bot".into();
    let mut hook = crate::common::http::fixture("issue_comment.created.payload.json");
    hook["issue"]["number"] = n.into();
    match is_pr {
        true => {
            hook["issue"]["pull_request"] = json!({ "url": format!("{}/repos/acme/config/pulls/{n}", app.url),
            "html_url": format!("https://github.example/acme/config/pull/{n}"), "diff_url": format!("https://github.example/acme/config/pull/{n}.diff"),
            "patch_url": format!("https://github.example/acme/config/pull/{n}.patch") })
        }
        false => {
            hook["issue"].as_object_mut().unwrap().remove("pull_request");
        }
    }
    hook["comment"]["id"] = id.into();
    hook["comment"]["body"] = body.into();
    hook["comment"]["user"]["login"] = BOT.into();
    hook["comment"]["user"]["type"] = "Bot".into();
    own_repository_and_sender(&mut hook);
    emit(&app, "issue_comment", hook);
    (StatusCode::CREATED, Json(answer)).into_response()
}

async fn react(
    State(app): State<App>,
    Path((_o, _r, id)): Path<(String, String, u64)>,
    Json(b): Json<Value>,
) -> Response {
    app.gh.lock().unwrap().reactions.push((id, b["content"].as_str().unwrap_or_default().to_string()));
    let mut answer =
        super::openapi::example("post", "/repos/{owner}/{repo}/issues/comments/{comment_id}/reactions", 201);
    answer["content"] = b["content"].clone();
    (StatusCode::CREATED, Json(answer)).into_response()
}

async fn create_issue(State(app): State<App>, Json(b): Json<Value>) -> Response {
    let mut gh = app.gh.lock().unwrap();
    let labels = strings(&b["labels"]);
    gh.issues.push((
        b["title"].as_str().unwrap_or_default().into(),
        b["body"].as_str().unwrap_or_default().into(),
        labels,
    ));
    let number = 500 + gh.issues.len() as u64;
    let mut answer = super::openapi::example("post", "/repos/{owner}/{repo}/issues", 201);
    answer["number"] = number.into();
    answer["html_url"] = format!("https://github.example/acme/config/issues/{number}").into();
    answer["title"] = b["title"].clone();
    (StatusCode::CREATED, Json(answer)).into_response()
}

/// Newest first, a page at a time, as GitHub lists them; `filter=latest` (the default) lists
/// only the most recent run of each name.
async fn check_runs(
    State(app): State<App>,
    Path((_o, _r, sha)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let gh = app.gh.lock().unwrap();
    let example =
        super::openapi::example("get", "/repos/{owner}/{repo}/commits/{ref}/check-runs", 200)["check_runs"][0].clone();
    let latest = q.get("filter").is_none_or(|f| f == "latest");
    let mut seen = std::collections::HashSet::new();
    let all: Vec<Value> = gh
        .checks
        .get(&sha)
        .map(|c| {
            c.iter()
                .enumerate()
                .rev()
                .filter(|(_, (n, _))| !latest || seen.insert(n.clone()))
                .map(|(i, (n, c))| {
                    let mut run = example.clone();
                    run["id"] = (i + 1).into();
                    run["name"] = n.clone().into();
                    run["head_sha"] = sha.clone().into();
                    run["status"] = "completed".into();
                    run["conclusion"] = c.clone().into();
                    run["started_at"] = format!("2026-11-21T11:{:02}:{:02}Z", i / 60 % 60, i % 60).into();
                    run
                })
                .collect()
        })
        .unwrap_or_default();
    let total = all.len();
    let path = format!("/repos/acme/config/commits/{sha}/check-runs");
    let (runs, link) = paged(&app, &path, &q, all);
    with_link(Json(json!({"total_count": total, "check_runs": runs})).into_response(), link)
}

/// The combined status: the latest status of each context, a page of them at a time
/// (`per_page`, `page`), with the state of all of them.
async fn combined_status(
    State(app): State<App>,
    Path((_o, _r, sha)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let gh = app.gh.lock().unwrap();
    let mut answer = super::openapi::example("get", "/repos/{owner}/{repo}/commits/{ref}/status", 200);
    let example = answer["statuses"][0].clone();
    let all: Vec<Value> = gh
        .statuses
        .get(&sha)
        .map(|s| {
            s.iter()
                .enumerate()
                .map(|(i, (c, st))| {
                    let mut status = example.clone();
                    status["id"] = (i + 1).into();
                    status["context"] = c.clone().into();
                    status["state"] = st.clone().into();
                    status
                })
                .collect()
        })
        .unwrap_or_default();
    let state = if all.iter().all(|s| s["state"] == "success") { "success" } else { "pending" };
    let total = all.len();
    let (statuses, link) = paged(&app, &format!("/repos/acme/config/commits/{sha}/status"), &q, all);
    answer["state"] = state.into();
    answer["sha"] = sha.into();
    answer["total_count"] = total.into();
    answer["statuses"] = Value::Array(statuses);
    with_link(Json(answer).into_response(), link)
}

/// Only a GitHub App may create check runs: a personal token gets 403, as on GitHub.
async fn create_check_run(State(app): State<App>, h: HeaderMap, Json(b): Json<Value>) -> Response {
    let v = h.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !v.ends_with(INSTALLATION_TOKEN) {
        let message = "You must authenticate via a GitHub App.";
        return (StatusCode::FORBIDDEN, Json(json!({ "message": message }))).into_response();
    }
    if b["head_sha"].as_str().is_none_or(|s| s.len() != 40) {
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({ "message": "Invalid request." }))).into_response();
    }
    let mut gh = app.gh.lock().unwrap();
    gh.check_runs_created.push(b.clone());
    let id = gh.check_runs_created.len();
    let mut answer = super::openapi::example("post", "/repos/{owner}/{repo}/check-runs", 201);
    answer["id"] = id.into();
    answer["name"] = b["name"].clone();
    answer["head_sha"] = b["head_sha"].clone();
    (StatusCode::CREATED, Json(answer)).into_response()
}

/// More of a check run's output: GitHub adds the annotations to those it has (50 per request).
async fn update_check_run(
    State(app): State<App>,
    Path((_o, _r, id)): Path<(String, String, usize)>,
    Json(b): Json<Value>,
) -> Response {
    let mut gh = app.gh.lock().unwrap();
    let Some(run) = id.checked_sub(1).and_then(|i| gh.check_runs_created.get_mut(i)) else {
        return (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"}))).into_response();
    };
    let more = b["output"]["annotations"].as_array().cloned().unwrap_or_default();
    if let Some(had) = run["output"]["annotations"].as_array_mut() {
        had.extend(more);
    } else {
        run["output"]["annotations"] = Value::Array(more);
    }
    let (name, sha) = (run["name"].clone(), run["head_sha"].clone());
    let mut answer = super::openapi::example("patch", "/repos/{owner}/{repo}/check-runs/{check_run_id}", 200);
    answer["id"] = id.into();
    answer["name"] = name;
    answer["head_sha"] = sha;
    Json(answer).into_response()
}

async fn commit_comment(
    State(app): State<App>,
    Path((_o, _r, sha)): Path<(String, String, String)>,
    Json(b): Json<Value>,
) -> Response {
    app.gh.lock().unwrap().commit_comments.push((sha.clone(), b["body"].as_str().unwrap_or_default().to_string()));
    let mut answer = super::openapi::example("post", "/repos/{owner}/{repo}/commits/{commit_sha}/comments", 201);
    answer["commit_id"] = sha.into();
    answer["body"] = b["body"].clone();
    (StatusCode::CREATED, Json(answer)).into_response()
}

/// A team membership, as GitHub answers it: `state` active or pending; 404 for anyone who is
/// not a member, or a team that does not exist (names compared as GitHub does, ignoring case).
async fn team_membership(State(app): State<App>, Path((org, team, user)): Path<(String, String, String)>) -> Response {
    let gh = app.gh.lock().unwrap();
    let key = format!("{org}/{team}").to_ascii_lowercase();
    let found = gh.teams.get(&key).and_then(|m| m.iter().find(|(l, _)| l.eq_ignore_ascii_case(&user)));
    let Some((login, state)) = found else {
        return (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"}))).into_response();
    };
    let mut answer = super::openapi::example("get", "/orgs/{org}/teams/{team_slug}/memberships/{username}", 200);
    answer["url"] = format!("{}/teams/1/memberships/{login}", app.url).into();
    answer["role"] = "member".into();
    answer["state"] = state.clone().into();
    Json(answer).into_response()
}

async fn get_repo(State(app): State<App>) -> Response {
    let gh = app.gh.lock().unwrap();
    let allows = |m: &str| gh.merge_methods.is_empty() || gh.merge_methods.iter().any(|x| x == m);
    let mut answer = super::openapi::example("get", "/repos/{owner}/{repo}", 200);
    answer["id"] = 1.into();
    answer["name"] = "config".into();
    answer["full_name"] = "acme/config".into();
    answer["default_branch"] = "main".into();
    answer["allow_merge_commit"] = allows("merge").into();
    answer["allow_squash_merge"] = allows("squash").into();
    answer["allow_rebase_merge"] = allows("rebase").into();
    answer["permissions"] = json!({ "admin": false, "maintain": false, "push": true, "triage": true, "pull": true });
    Json(answer).into_response()
}

fn record_attempt(
    gh: &Mutex<Gh>,
    guid: &str,
    event: &str,
    payload: &[u8],
    redelivery: bool,
    status: u16,
    answer: String,
) {
    let mut gh = gh.lock().unwrap();
    let id = gh.deliveries.len() as u64 + 1;
    let delivered_at = jiff::Timestamp::now().to_string();
    gh.deliveries.push(SentDelivery {
        id,
        guid: guid.into(),
        event: event.into(),
        payload: payload.to_vec(),
        redelivery,
        status_code: status,
        answer,
        delivered_at,
    });
}

/// A webhook the fake is about to send, checked against GitHub's webhooks description: one it
/// would never send is a violation, as a request GitHub would refuse is.
fn check_payload(gh: &Mutex<Gh>, event: &str, payload: &[u8]) {
    let v: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
    if let Err(why) = super::openapi::check_webhook(event, &v) {
        gh.lock().unwrap().violations.push(format!("a webhook GitHub would not send: {why}"));
    }
}

/// GitHub tells the App's webhook about the App's own actions too (its comments, its merges):
/// sent, when a hook is set, as GitHub would, soon after the action.
fn emit(app: &App, event: &'static str, payload: Value) {
    let Some((url, secret)) = app.gh.lock().unwrap().hook.clone() else { return };
    let gh = app.gh.clone();
    let payload = super::openapi::webhook_payload(event, payload);
    std::thread::spawn(move || {
        let guid = format!("own-{}-{}", event, jiff::Timestamp::now().as_nanosecond());
        let body = serde_json::to_vec(&payload).unwrap();
        check_payload(&gh, event, &body);
        let (status, answer) = post_hook(&url, &secret, event, &guid, &body);
        record_attempt(&gh, &guid, event, &body, false, status, answer);
    });
}

const BOT: &str = "rollbackd-app[bot]";

/// Newest first, as GitHub lists them (JWT auth: the App's own deliveries), a page at a time:
/// `per_page` (30 unless asked, at most 100) from `cursor`, and a `Link` header to the next page.
async fn list_deliveries(State(app): State<App>, h: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    if !app_jwt(&h) {
        return unauthorized();
    }
    let gh = app.gh.lock().unwrap();
    let per_page = q.get("per_page").and_then(|p| p.parse().ok()).unwrap_or(30usize).clamp(1, 100);
    // The cursor is opaque to the caller; here it is the id the page starts at.
    let from = match q.get("cursor") {
        Some(c) => match c.strip_prefix("v1_").and_then(|id| id.parse::<u64>().ok()) {
            Some(id) => id,
            None => return (StatusCode::BAD_REQUEST, Json(json!({"message": "invalid cursor"}))).into_response(),
        },
        None => u64::MAX,
    };
    let newest_first: Vec<&SentDelivery> = gh.deliveries.iter().rev().filter(|d| d.id <= from).collect();
    let list: Vec<Value> = newest_first
        .iter()
        .take(per_page)
        .map(|d| {
            json!({ "id": d.id, "guid": d.guid, "delivered_at": d.delivered_at, "redelivery": d.redelivery,
                    "duration": 0.1, "status": if (200..300).contains(&d.status_code) { "OK" } else { "failed" },
                    "status_code": d.status_code, "event": d.event, "action": "completed",
                    "installation_id": 4242, "repository_id": 1 })
        })
        .collect();
    let link = newest_first.get(per_page).map(|next| {
        format!("<{}/app/hook/deliveries?per_page={per_page}&cursor=v1_{}>; rel=\"next\"", app.url, next.id)
    });
    with_link(Json(Value::Array(list)).into_response(), link)
}

/// Answers 202 at once and sends the delivery again soon, as GitHub does; a delivery older than
/// the three days GitHub keeps them cannot be sent again.
async fn redeliver(State(app): State<App>, h: HeaderMap, Path(id): Path<u64>) -> Response {
    if !app_jwt(&h) {
        return unauthorized();
    }
    let found = app.gh.lock().unwrap().deliveries.iter().find(|d| d.id == id).cloned();
    let Some(d) = found else { return (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"}))).into_response() };
    let at: jiff::Timestamp = d.delivered_at.parse().unwrap();
    if jiff::Timestamp::now().duration_since(at) > jiff::SignedDuration::from_hours(72) {
        let message = "Validation Failed: the delivery is older than three days";
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({ "message": message }))).into_response();
    }
    let Some((url, secret)) = app.gh.lock().unwrap().hook.clone() else {
        return (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"}))).into_response();
    };
    let gh = app.gh.clone();
    app.gh.lock().unwrap().redeliveries_asked.push(id);
    std::thread::spawn(move || {
        let (status, answer) = post_hook(&url, &secret, &d.event, &d.guid, &d.payload);
        record_attempt(&gh, &d.guid, &d.event, &d.payload, true, status, answer);
    });
    (StatusCode::ACCEPTED, Json(json!({}))).into_response()
}

async fn installation(State(app): State<App>, h: HeaderMap) -> Response {
    if !app_jwt(&h) {
        return unauthorized();
    }
    let mut gh = app.gh.lock().unwrap();
    gh.installation_lookups += 1;
    let permissions = granted(&gh);
    let events = gh.app_events.clone().unwrap_or_else(|| {
        ["issue_comment", "pull_request", "push", "workflow_run", "deployment_status", "check_suite"]
            .map(String::from)
            .to_vec()
    });
    let mut answer = super::openapi::example("get", "/repos/{owner}/{repo}/installation", 200);
    answer["id"] = 4242.into();
    answer["app_id"] = 12345.into();
    answer["permissions"] = permissions;
    answer["events"] = events.into();
    Json(answer).into_response()
}

async fn access_token(State(app): State<App>, h: HeaderMap, Path(id): Path<u64>) -> Response {
    if !app_jwt(&h) || id != 4242 {
        return unauthorized();
    }
    let mut gh = app.gh.lock().unwrap();
    gh.tokens_minted += 1;
    let expires = jiff::Timestamp::now().checked_add(jiff::SignedDuration::from_hours(1)).unwrap();
    let mut answer = super::openapi::example("post", "/app/installations/{installation_id}/access_tokens", 201);
    answer["token"] = INSTALLATION_TOKEN.into();
    answer["expires_at"] = expires.to_string().into();
    answer["permissions"] = granted(&gh);
    answer["repository_selection"] = "selected".into();
    (StatusCode::CREATED, Json(answer)).into_response()
}
