//! A fake GitHub API for tests: the handful of endpoints rollbackd calls, with state, backed by
//! the test's real bare origin so merging a pull request really merges it there.

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
    /// Every request, `METHOD /path`.
    pub requests: Vec<String>,
    /// The App installation's permissions and events (all rollbackd may need, when `None`).
    pub app_permissions: Option<Value>,
    pub app_events: Option<Vec<String>>,
    /// Where the App's webhooks go, and their secret: set by [`FakeGithub::hook_to`].
    pub hook: Option<(String, String)>,
    /// Every attempt at a webhook delivery, oldest first, with what was sent.
    pub deliveries: Vec<SentDelivery>,
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
                    .route("/repos/{o}/{r}/commits/{sha}/comments", post(commit_comment))
                    .route("/repos/{o}/{r}/issues/{n}/labels", post(labels))
                    .route("/repos/{o}/{r}/issues/{n}/comments", post(comment))
                    .route("/repos/{o}/{r}/issues/comments/{id}/reactions", post(react))
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
        let (status, answer) = post_hook(&url, &secret, event, guid, payload);
        record_attempt(&self.gh, guid, event, payload, false, status, answer);
        status
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

    pub fn reactions(&self) -> Vec<(u64, String)> {
        self.gh.lock().unwrap().reactions.clone()
    }

    /// Ends a test: fails it if rollbackd made a request no route of the fake handled.
    pub fn finish(self) {
        let unhandled = self.gh.lock().unwrap().unhandled.clone();
        assert!(unhandled.is_empty(), "requests the fake GitHub did not handle: {unhandled:?}");
        let violations = self.gh.lock().unwrap().violations.clone();
        assert!(violations.is_empty(), "requests GitHub's REST description does not allow: {violations:?}");
    }
}

/// Every request is checked against GitHub's REST description first: one it would refuse (or
/// silently misread) is recorded and answered 422, as GitHub answers a request that fails
/// validation.
async fn contract(State(app): State<App>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let (parts, body) = req.into_parts();
    let request = format!("{} {}", parts.method, parts.uri.path());
    {
        let mut gh = app.gh.lock().unwrap();
        gh.requests.push(request.clone());
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
    next.run(axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes))).await
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

fn pr_json(app: &App, pr: &FakePr) -> Value {
    let head = pr.merged_head.clone().or_else(|| head_sha(&app.origin, &pr.head)).unwrap_or_default();
    let base = head_sha(&app.origin, &pr.base).unwrap_or_default();
    let known = pr.state != "open" || pr.computed.as_ref() == Some(&(head.clone(), base));
    json!({
        "number": pr.number,
        "html_url": format!("https://github.example/acme/config/pull/{}", pr.number),
        "state": pr.state,
        "head": { "ref": pr.head, "sha": head, "repo": { "full_name": "acme/config" } },
        "base": { "ref": pr.base },
        "merged": pr.merged_sha.is_some(),
        "merge_commit_sha": pr.merged_sha,
        "mergeable": if known { json!(true) } else { Value::Null },
    })
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
    (StatusCode::CREATED, Json(pr_json(&app, &pr))).into_response()
}

async fn list_prs(State(app): State<App>, Query(q): Query<HashMap<String, String>>) -> Response {
    let gh = app.gh.lock().unwrap();
    let head = q.get("head").map(|h| h.split_once(':').map_or(h.as_str(), |(_, b)| b).to_string());
    let list: Vec<Value> = gh
        .prs
        .iter()
        .filter(|p| q.get("state").is_none_or(|s| s == &p.state) && head.as_ref().is_none_or(|b| b == &p.head))
        .map(|p| pr_json(&app, p))
        .collect();
    Json(Value::Array(list)).into_response()
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
    let Some(p) = gh.prs.iter_mut().find(|p| p.number == n) else { return StatusCode::NOT_FOUND.into_response() };
    if let Some(s) = b["state"].as_str() {
        p.state = s.to_string();
    }
    let p = p.clone();
    Json(pr_json(&app, &p)).into_response()
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
    let Some(pr) = gh.prs.iter_mut().find(|p| p.number == n && p.state == "open") else {
        return (StatusCode::METHOD_NOT_ALLOWED, Json(json!({"message": "Pull Request is not mergeable"})))
            .into_response();
    };
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
    let closed = json!({ "action": "closed", "number": pr.number,
        "pull_request": { "number": pr.number, "state": "closed", "merged": true, "merge_commit_sha": id.to_string(),
                          "head": { "ref": pr.head, "sha": head.to_string(), "repo": { "full_name": "acme/config" } },
                          "base": { "ref": pr.base }, "merged_by": { "login": BOT, "type": "Bot" } },
        "repository": { "full_name": "acme/config", "name": "config", "owner": { "login": "acme" } },
        "sender": { "login": BOT, "type": "Bot" } });
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
    let Some(p) = gh.prs.iter_mut().find(|p| p.number == n) else { return StatusCode::NOT_FOUND.into_response() };
    let reviewers = strings(&b["reviewers"]);
    if !collaborators.is_empty() && reviewers.iter().any(|r| !collaborators.contains(r)) {
        let message = "Reviews may only be requested from collaborators. One or more of the users or teams you specified is not a collaborator of the acme/config repository.";
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({ "message": message }))).into_response();
    }
    p.reviewers = reviewers;
    p.teams = strings(&b["team_reviewers"]);
    (StatusCode::CREATED, Json(json!({}))).into_response()
}

async fn labels(
    State(app): State<App>,
    Path((_o, _r, n)): Path<(String, String, u64)>,
    Json(b): Json<Value>,
) -> Response {
    let mut gh = app.gh.lock().unwrap();
    let Some(p) = gh.prs.iter_mut().find(|p| p.number == n) else { return StatusCode::NOT_FOUND.into_response() };
    // POST adds to the labels a pull request has (PUT would replace them).
    for l in strings(&b["labels"]) {
        if !p.labels.contains(&l) {
            p.labels.push(l);
        }
    }
    let all: Vec<Value> = p.labels.iter().map(|l| json!({ "name": l })).collect();
    Json(Value::Array(all)).into_response()
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
    let mut issue = json!({ "number": n, "title": "t", "state": "open" });
    if is_pr {
        issue["pull_request"] = json!({ "url": format!("{}/repos/acme/config/pulls/{n}", app.url) });
    }
    emit(
        &app,
        "issue_comment",
        json!({ "action": "created", "issue": issue,
                "comment": { "id": id, "body": body, "user": { "login": BOT, "type": "Bot" } },
                "repository": { "full_name": "acme/config", "name": "config", "owner": { "login": "acme" } },
                "sender": { "login": BOT, "type": "Bot" } }),
    );
    (StatusCode::CREATED, Json(json!({"id": id}))).into_response()
}

async fn react(
    State(app): State<App>,
    Path((_o, _r, id)): Path<(String, String, u64)>,
    Json(b): Json<Value>,
) -> Response {
    app.gh.lock().unwrap().reactions.push((id, b["content"].as_str().unwrap_or_default().to_string()));
    (StatusCode::CREATED, Json(json!({"content": b["content"]}))).into_response()
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
    (
        StatusCode::CREATED,
        Json(json!({"number": number, "html_url": format!("https://github.example/acme/config/issues/{number}")})),
    )
        .into_response()
}

/// Newest first, a page at a time (at most 100), as GitHub lists them.
async fn check_runs(
    State(app): State<App>,
    Path((_o, _r, sha)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let gh = app.gh.lock().unwrap();
    let all: Vec<Value> = gh
        .checks
        .get(&sha)
        .map(|c| {
            c.iter()
                .enumerate()
                .rev()
                .map(|(i, (n, c))| {
                    json!({"id": i + 1, "name": n, "status": "completed", "conclusion": c,
                           "started_at": format!("2026-11-21T11:{:02}:{:02}Z", i / 60 % 60, i % 60)})
                })
                .collect()
        })
        .unwrap_or_default();
    let per_page = q.get("per_page").and_then(|p| p.parse().ok()).unwrap_or(30usize).min(100);
    let page = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1usize).max(1);
    let runs: Vec<Value> = all.iter().skip((page - 1) * per_page).take(per_page).cloned().collect();
    Json(json!({"total_count": all.len(), "check_runs": runs})).into_response()
}

async fn combined_status(State(app): State<App>, Path((_o, _r, sha)): Path<(String, String, String)>) -> Response {
    let gh = app.gh.lock().unwrap();
    let statuses: Vec<Value> = gh
        .statuses
        .get(&sha)
        .map(|s| s.iter().map(|(c, st)| json!({"context": c, "state": st})).collect())
        .unwrap_or_default();
    let state = if statuses.iter().all(|s| s["state"] == "success") { "success" } else { "pending" };
    Json(json!({"state": state, "sha": sha, "total_count": statuses.len(), "statuses": statuses})).into_response()
}

/// Only a GitHub App may create check runs: a personal token gets 403, as on GitHub.
async fn create_check_run(State(app): State<App>, h: HeaderMap, Json(b): Json<Value>) -> Response {
    let v = h.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !v.ends_with(INSTALLATION_TOKEN) {
        let message = "You must authenticate via a GitHub App.";
        return (StatusCode::FORBIDDEN, Json(json!({ "message": message }))).into_response();
    }
    let ok = b["name"].is_string()
        && b["head_sha"].as_str().is_some_and(|s| s.len() == 40)
        && ["success", "failure", "neutral"].contains(&b["conclusion"].as_str().unwrap_or_default())
        && b["output"]["annotations"].as_array().is_none_or(|a| {
            a.iter().all(|x| {
                x["path"].is_string()
                    && x["start_line"].as_u64().is_some_and(|l| l >= 1)
                    && x["end_line"].is_u64()
                    && ["notice", "warning", "failure"].contains(&x["annotation_level"].as_str().unwrap_or_default())
            })
        });
    if !ok {
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({ "message": "Invalid request." }))).into_response();
    }
    app.gh.lock().unwrap().check_runs_created.push(b);
    (StatusCode::CREATED, Json(json!({ "id": 1 }))).into_response()
}

async fn commit_comment(
    State(app): State<App>,
    Path((_o, _r, sha)): Path<(String, String, String)>,
    Json(b): Json<Value>,
) -> Response {
    app.gh.lock().unwrap().commit_comments.push((sha, b["body"].as_str().unwrap_or_default().to_string()));
    (StatusCode::CREATED, Json(json!({ "id": 1 }))).into_response()
}

async fn get_repo(State(app): State<App>) -> Response {
    let gh = app.gh.lock().unwrap();
    let allows = |m: &str| gh.merge_methods.is_empty() || gh.merge_methods.iter().any(|x| x == m);
    Json(json!({
        "id": 1, "name": "config", "full_name": "acme/config", "default_branch": "main",
        "allow_merge_commit": allows("merge"), "allow_squash_merge": allows("squash"), "allow_rebase_merge": allows("rebase"),
        "permissions": { "admin": false, "maintain": false, "push": true, "triage": true, "pull": true },
    }))
    .into_response()
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

/// GitHub tells the App's webhook about the App's own actions too (its comments, its merges):
/// sent, when a hook is set, as GitHub would, soon after the action.
fn emit(app: &App, event: &'static str, payload: Value) {
    let Some((url, secret)) = app.gh.lock().unwrap().hook.clone() else { return };
    let gh = app.gh.clone();
    std::thread::spawn(move || {
        let guid = format!("own-{}-{}", event, jiff::Timestamp::now().as_nanosecond());
        let body = serde_json::to_vec(&payload).unwrap();
        let (status, answer) = post_hook(&url, &secret, event, &guid, &body);
        record_attempt(&gh, &guid, event, &body, false, status, answer);
    });
}

const BOT: &str = "rollbackd-app[bot]";

/// Newest first, as GitHub lists them (JWT auth: the App's own deliveries).
async fn list_deliveries(State(app): State<App>, h: HeaderMap) -> Response {
    if !app_jwt(&h) {
        return unauthorized();
    }
    let gh = app.gh.lock().unwrap();
    let list: Vec<Value> = gh
        .deliveries
        .iter()
        .rev()
        .map(|d| {
            json!({ "id": d.id, "guid": d.guid, "delivered_at": d.delivered_at, "redelivery": d.redelivery,
                    "duration": 0.1, "status": if (200..300).contains(&d.status_code) { "OK" } else { "failed" },
                    "status_code": d.status_code, "event": d.event, "action": "completed",
                    "installation_id": 4242, "repository_id": 1 })
        })
        .collect();
    Json(Value::Array(list)).into_response()
}

/// Answers 202 at once and sends the delivery again soon, as GitHub does.
async fn redeliver(State(app): State<App>, h: HeaderMap, Path(id): Path<u64>) -> Response {
    if !app_jwt(&h) {
        return unauthorized();
    }
    let found = app.gh.lock().unwrap().deliveries.iter().find(|d| d.id == id).cloned();
    let Some(d) = found else { return (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"}))).into_response() };
    let Some((url, secret)) = app.gh.lock().unwrap().hook.clone() else { return StatusCode::NOT_FOUND.into_response() };
    let gh = app.gh.clone();
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
    let permissions = gh.app_permissions.clone().unwrap_or_else(|| {
        json!({ "metadata": "read", "contents": "write", "pull_requests": "write", "issues": "write",
                "checks": "write", "statuses": "read", "actions": "read", "deployments": "read",
                "members": "read", "workflows": "write" })
    });
    let events = gh.app_events.clone().unwrap_or_else(|| {
        ["issue_comment", "pull_request", "workflow_run", "deployment_status", "check_suite"].map(String::from).to_vec()
    });
    Json(json!({"id": 4242, "app_id": 12345, "permissions": permissions, "events": events})).into_response()
}

async fn access_token(State(app): State<App>, h: HeaderMap, Path(id): Path<u64>) -> Response {
    if !app_jwt(&h) || id != 4242 {
        return unauthorized();
    }
    app.gh.lock().unwrap().tokens_minted += 1;
    let expires = jiff::Timestamp::now().checked_add(jiff::SignedDuration::from_hours(1)).unwrap();
    let body = json!({"token": INSTALLATION_TOKEN, "expires_at": expires.to_string(), "permissions": {"contents": "write", "pull_requests": "write", "issues": "write", "checks": "read"}, "repository_selection": "selected"});
    (StatusCode::CREATED, Json(body)).into_response()
}
