//! GitHub through octocrab's raw requests: only the few calls rollbackd makes, each checked for
//! its status (octocrab's raw calls return `Ok` on 4xx), parsed into small types of our own.

use std::time::Duration;

use octocrab::Octocrab;
use serde::Deserialize;
use serde_json::{Value, json};

use super::api::{self, Method};
use super::{ForgeError, GithubConfig};
use crate::domain::policy::MergeMethod;
use crate::support::secret::SecretString;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Pr {
    pub number: u64,
    pub html_url: String,
    #[serde(default)]
    pub state: String,
    pub head: PrHead,
    /// Whether it merges cleanly: `None` while GitHub is still working it out (right after the
    /// pull request was opened or its branch or base moved).
    #[serde(default)]
    pub mergeable: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct PrHead {
    #[serde(rename = "ref")]
    pub branch: String,
    pub sha: String,
    /// The repository the branch lives in: another one for a pull request from a fork (`None`
    /// when the fork was deleted).
    #[serde(default)]
    pub repo: Option<PrRepo>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct PrRepo {
    pub full_name: String,
}

/// One attempt at a webhook delivery, as GitHub lists them. Attempts of one delivery share its
/// `guid` (the `X-GitHub-Delivery` header).
#[derive(Clone, Debug, Deserialize)]
pub struct HookDelivery {
    pub id: u64,
    pub guid: String,
    pub delivered_at: jiff::Timestamp,
    #[serde(default)]
    pub redelivery: bool,
    /// The HTTP status rollbackd answered; 0 when GitHub could not connect.
    #[serde(default)]
    pub status_code: u16,
    #[serde(default)]
    pub event: String,
}

/// What the forge's credentials are granted on the config repo, and how it may merge.
#[derive(Clone, Debug, Default)]
pub struct Grants {
    /// `merge`, `squash`, `rebase`: those the repository allows.
    pub merge_methods: Vec<String>,
    /// With a token: whether it may push (GitHub says no more for a token).
    pub token_can_push: Option<bool>,
    /// With a GitHub App: each permission and its level (`read`, `write`).
    pub app_permissions: Option<std::collections::BTreeMap<String, String>>,
    /// With a GitHub App: the webhook events it subscribes to.
    pub app_events: Option<Vec<String>>,
}

pub struct GithubForge {
    rt: tokio::runtime::Runtime,
    client: Octocrab,
    owner: String,
    repo: String,
    /// Set when authenticating as a GitHub App: mints installation tokens for git itself.
    app: Option<AppAuth>,
    git_token: std::sync::Mutex<Option<(SecretString, jiff::Timestamp)>>,
}

struct AppAuth {
    /// Authenticated with the App's JWT.
    client: Octocrab,
    installation: u64,
}

impl std::fmt::Debug for GithubForge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GithubForge({}/{})", self.owner, self.repo)
    }
}

impl GithubForge {
    pub fn new(cfg: &GithubConfig) -> Result<Self, ForgeError> {
        // The engine calls from the writer thread, outside any runtime: the forge brings its own.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ForgeError::Config(e.to_string()))?;
        let (client, app) = rt.block_on(build_client(cfg))?;
        Ok(GithubForge {
            rt,
            client,
            owner: cfg.owner.clone(),
            repo: cfg.repo.clone(),
            app,
            git_token: std::sync::Mutex::new(None),
        })
    }

    /// A token for git over https when authenticating as an App: an installation token, minted
    /// here and reused until five minutes before it expires. `None` with a plain token.
    pub fn git_token(&self) -> Result<Option<SecretString>, ForgeError> {
        let Some(app) = &self.app else { return Ok(None) };
        let mut cache = self.git_token.lock().unwrap_or_else(|e| e.into_inner());
        let now = jiff::Timestamp::now();
        if let Some((token, expires)) = cache.as_ref()
            && expires.duration_since(now) > jiff::SignedDuration::from_mins(5)
        {
            return Ok(Some(token.clone()));
        }
        let path = format!("/app/installations/{}/access_tokens", app.installation);
        // Through `api::call` like every other request: a deadline, and GitHub's rate limit
        // waited out. Minting twice is harmless (each token is valid), so it may be retried.
        let v = self.rt.block_on(api::call(&app.client, Method::Post, &path, None, true))?;
        let token = v.get("token").and_then(Value::as_str).ok_or_else(|| ForgeError::Api {
            method: "POST",
            path: path.clone(),
            status: 201,
            message: "no token in the answer".into(),
        })?;
        let expires = v
            .get("expires_at")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .unwrap_or_else(|| now.checked_add(jiff::SignedDuration::from_mins(30)).unwrap_or(now));
        let token = SecretString::new(token);
        *cache = Some((token.clone(), expires));
        Ok(Some(token))
    }

    fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, ForgeError> {
        // Reads and a merge at an exact sha may be sent twice; a POST may not.
        let idempotent = method != Method::Post;
        self.rt.block_on(api::call(&self.client, method, path, body.as_ref(), idempotent))
    }

    fn repo_path(&self, rest: &str) -> String {
        format!("/repos/{}/{}{rest}", self.owner, self.repo)
    }

    fn pr(&self, v: Value) -> Result<Pr, ForgeError> {
        serde_json::from_value(v).map_err(|e| ForgeError::Api {
            method: "GET",
            path: "pull request".into(),
            status: 200,
            message: format!("unexpected pull request JSON: {e}"),
        })
    }

    /// Opens a pull request from `p.branch` into `p.base`, labelled, with reviewers requested.
    pub fn open_pr(&self, p: &super::ProposalRequest<'_>) -> Result<Pr, ForgeError> {
        let super::ProposalRequest { branch: head, base, title, body, labels, reviewers, teams } = *p;
        let pr = self.pr(self.call(
            Method::Post,
            &self.repo_path("/pulls"),
            Some(json!({ "head": head, "base": base, "title": title, "body": body })),
        )?)?;
        if !labels.is_empty() {
            self.call(
                Method::Post,
                &self.repo_path(&format!("/issues/{}/labels", pr.number)),
                Some(json!({ "labels": labels })),
            )?;
        }
        if !reviewers.is_empty() || !teams.is_empty() {
            // Team slugs without the org, as the API wants them.
            let teams: Vec<&str> = teams.iter().map(|t| t.rsplit('/').next().unwrap_or(t)).collect();
            let asked = self.call(
                Method::Post,
                &self.repo_path(&format!("/pulls/{}/requested_reviewers", pr.number)),
                Some(json!({ "reviewers": reviewers, "team_reviewers": teams })),
            );
            // A reviewer who is not a collaborator (422) must not cost the proposal itself: the
            // pull request is open, and says so to whoever looks.
            match asked {
                Err(ForgeError::Api { status: 422, message, .. }) => {
                    tracing::warn!(pr = pr.number, %message, "GitHub refused the reviewers; the pull request stays open");
                    let _ = self.comment(
                        pr.number,
                        &format!(
                            "Reviewers could not be requested ({message}). Check review.reviewers and review.teams."
                        ),
                    );
                }
                other => {
                    other?;
                }
            }
        }
        Ok(pr)
    }

    pub fn get_pr(&self, number: u64) -> Result<Pr, ForgeError> {
        self.pr(self.call(Method::Get, &self.repo_path(&format!("/pulls/{number}")), None)?)
    }

    /// The rollback proposal a pull request is, if it is one: its branch lives in the config
    /// repo itself (not a fork) and is named like one of ours.
    pub fn proposal_of(&self, pr: &Pr) -> Option<crate::domain::rollback::RollbackRef> {
        let ours = format!("{}/{}", self.owner, self.repo);
        pr.head.repo.as_ref().filter(|r| r.full_name.eq_ignore_ascii_case(&ours))?;
        crate::domain::rollback::RollbackRef::parse_branch(&pr.head.branch)
    }

    /// The open pull request from `branch`, if any.
    pub fn find_open_pr(&self, branch: &str) -> Result<Option<Pr>, ForgeError> {
        let v =
            self.call(Method::Get, &self.repo_path(&format!("/pulls?{}", open_pr_query(&self.owner, branch))), None)?;
        let list: Vec<Pr> = serde_json::from_value(v).unwrap_or_default();
        Ok(list.into_iter().find(|p| p.head.branch == branch))
    }

    /// Comments on an issue or pull request. Every comment passes [`crate::support::text::github_reply`]:
    /// whatever text of a person it quotes cannot mention, link or inject HTML.
    pub fn comment(&self, number: u64, body: &str) -> Result<u64, ForgeError> {
        let v = self.call(
            Method::Post,
            &self.repo_path(&format!("/issues/{number}/comments")),
            Some(json!({ "body": crate::support::text::github_reply(body) })),
        )?;
        Ok(v.get("id").and_then(Value::as_u64).unwrap_or(0))
    }

    /// `eyes` on receipt, `rocket` / `confused` on the outcome.
    pub fn react(&self, comment_id: u64, content: &str) -> Result<(), ForgeError> {
        self.call(
            Method::Post,
            &self.repo_path(&format!("/issues/comments/{comment_id}/reactions")),
            Some(json!({ "content": content })),
        )?;
        Ok(())
    }

    /// Merges the PR at exactly `sha` (GitHub refuses if the branch moved meanwhile). The commit
    /// title and message are given so a squash keeps the rollback's trailers. Returns the sha
    /// that landed on the base branch.
    ///
    /// GitHub works out mergeability in the background after a push: until it sees `sha` as
    /// the head and knows whether it merges, a merge is answered 405 "Base branch was modified"
    /// or 409. So: wait for that, merge, and on those two answers wait and try again. Any other
    /// 405 (a merge method the repository does not allow, branch protection) is a refusal that
    /// says what to change.
    pub fn merge(&self, number: u64, method: MergeMethod, sha: &str, message: &str) -> Result<String, ForgeError> {
        let (title, body) = message.split_once("\n\n").unwrap_or((message, ""));
        let method = match method {
            MergeMethod::Merge => "merge",
            MergeMethod::Squash => "squash",
            MergeMethod::Rebase => "rebase",
        };
        let request = json!({ "merge_method": method, "sha": sha, "commit_title": title, "commit_message": body });
        let path = self.repo_path(&format!("/pulls/{number}/merge"));
        let mut last = String::new();
        for attempt in 0..MERGE_ATTEMPTS {
            if attempt > 0 {
                std::thread::sleep(backoff(attempt));
            }
            self.wait_until_mergeable(number, sha)?;
            match self.call(Method::Put, &path, Some(request.clone())) {
                Ok(v) => {
                    return v.get("sha").and_then(Value::as_str).map(str::to_string).ok_or_else(|| ForgeError::Api {
                        method: "PUT",
                        path,
                        status: 200,
                        message: "no sha in the merge answer".into(),
                    });
                }
                Err(ForgeError::Api { status: 409, message, .. }) => last = message,
                Err(ForgeError::Api { status: 405, message, .. }) if message.contains("Base branch was modified") => {
                    last = message
                }
                Err(ForgeError::Api { status: 405, message, .. }) => {
                    return Err(ForgeError::MergeRefused(self.why_not_merged(method, &message)));
                }
                Err(e) => return Err(e),
            }
        }
        Err(ForgeError::Api { method: "PUT", path, status: 409, message: format!("still not mergeable: {last}") })
    }

    /// Waits (a few seconds at most) until GitHub sees `sha` as the head of pull request
    /// `number` and knows whether it merges. A head that stays elsewhere moved for real: 409.
    fn wait_until_mergeable(&self, number: u64, sha: &str) -> Result<(), ForgeError> {
        let mut seen = None;
        for attempt in 0..MERGE_ATTEMPTS * 2 {
            if attempt > 0 {
                std::thread::sleep(backoff(attempt).min(Duration::from_secs(2)));
            }
            let pr = self.get_pr(number)?;
            if pr.head.sha == sha && pr.mergeable.is_some() {
                return Ok(());
            }
            seen = Some(pr.head.sha);
        }
        match seen {
            Some(head) if head != sha => Err(ForgeError::Api {
                method: "GET",
                path: self.repo_path(&format!("/pulls/{number}")),
                status: 409,
                message: format!("the pull request's head is {head}, not the reviewed {sha}"),
            }),
            // GitHub still computing: let the merge itself say.
            _ => Ok(()),
        }
    }

    /// What to change when GitHub refuses a merge for good.
    fn why_not_merged(&self, method: &str, message: &str) -> String {
        let repo = format!("{}/{}", self.owner, self.repo);
        let m = message.to_ascii_lowercase();
        if m.contains("not allowed") {
            format!(
                "GitHub refuses a {method} merge on {repo} ({message}): allow it in the repository's settings \
                 (General, Pull Requests) or set the policy's review.merge to a method the repository allows"
            )
        } else if m.contains("review") || m.contains("status check") || m.contains("protected") || m.contains("rule") {
            format!(
                "the branch protection or rulesets of {repo} refuse the merge ({message}): meet them on GitHub \
                 (approve the pull request there, wait for the required checks), or let rollbackd's account bypass them"
            )
        } else {
            format!("GitHub refuses to merge on {repo}: {message}")
        }
    }

    /// The check runs (every page) and commit statuses on `sha`.
    fn checks_of(&self, sha: &str) -> Result<(Vec<Value>, Vec<Value>), ForgeError> {
        let mut runs: Vec<Value> = Vec::new();
        for page in 1..=CHECK_PAGES {
            let v = self.call(
                Method::Get,
                &self.repo_path(&format!("/commits/{sha}/check-runs?per_page=100&page={page}")),
                None,
            )?;
            let batch = v.get("check_runs").and_then(Value::as_array).cloned().unwrap_or_default();
            let total = v.get("total_count").and_then(Value::as_u64).unwrap_or(0) as usize;
            let last = batch.len() < 100;
            runs.extend(batch);
            if last || runs.len() >= total {
                break;
            }
        }
        // The combined status lists one status per context, a page at a time.
        let mut statuses: Vec<Value> = Vec::new();
        for page in 1..=CHECK_PAGES {
            let v = self.call(
                Method::Get,
                &self.repo_path(&format!("/commits/{sha}/status?per_page=100&page={page}")),
                None,
            )?;
            let batch = v.get("statuses").and_then(Value::as_array).cloned().unwrap_or_default();
            let total = v.get("total_count").and_then(Value::as_u64).unwrap_or(0) as usize;
            let last = batch.len() < 100;
            statuses.extend(batch);
            if last || statuses.len() >= total {
                break;
            }
        }
        Ok((runs, statuses))
    }

    /// What the credentials may do on the config repo and how it merges: `GET /repos/{o}/{r}`
    /// (its `allow_*_merge` settings, and for a token its coarse `permissions`), and for a
    /// GitHub App its installation (`permissions` by scope, subscribed `events`).
    pub fn grants(&self) -> Result<Grants, ForgeError> {
        let repo = self.call(Method::Get, &self.repo_path(""), None)?;
        let installation = match &self.app {
            Some(app) => {
                let path = self.repo_path("/installation");
                Some(self.rt.block_on(api::call(&app.client, Method::Get, &path, None, true))?)
            }
            None => None,
        };
        let text = |v: &Value| v.as_str().map(str::to_string);
        let methods =
            [("merge", "allow_merge_commit"), ("squash", "allow_squash_merge"), ("rebase", "allow_rebase_merge")];
        Ok(Grants {
            merge_methods: methods
                .iter()
                .filter(|(_, k)| repo.get(k).and_then(Value::as_bool).unwrap_or(true))
                .map(|(m, _)| m.to_string())
                .collect(),
            token_can_push: repo.pointer("/permissions/push").and_then(Value::as_bool),
            app_permissions: installation.as_ref().map(|i| {
                i.get("permissions")
                    .and_then(Value::as_object)
                    .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), text(v)?))).collect())
                    .unwrap_or_default()
            }),
            app_events: installation.as_ref().map(|i| {
                i.get("events")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(text).collect())
                    .unwrap_or_default()
            }),
        })
    }

    /// Whether it authenticates as a GitHub App (which alone can read its webhook deliveries).
    pub fn is_app(&self) -> bool {
        self.app.is_some()
    }

    /// The App's webhook deliveries since `since`, newest first; empty without an App. GitHub
    /// lists them a page at a time (cursor in the `Link` header): pages are read until one
    /// reaches back past `since`, or there are no more.
    pub fn deliveries(&self, since: jiff::Timestamp) -> Result<Vec<HookDelivery>, ForgeError> {
        let Some(app) = &self.app else { return Ok(Vec::new()) };
        let mut out: Vec<HookDelivery> = Vec::new();
        let mut path = Some("/app/hook/deliveries?per_page=100".to_string());
        for _ in 0..DELIVERY_PAGES {
            let Some(p) = path.take() else { break };
            let (v, next) = self.rt.block_on(api::get_page(&app.client, &p))?;
            let page: Vec<HookDelivery> = serde_json::from_value(v).map_err(|e| ForgeError::Api {
                method: "GET",
                path: "/app/hook/deliveries".into(),
                status: 200,
                message: format!("unexpected deliveries JSON: {e}"),
            })?;
            let covered = page.is_empty() || page.iter().any(|d| d.delivered_at < since);
            out.extend(page);
            if covered {
                break;
            }
            path = next;
        }
        Ok(out)
    }

    /// Opens an issue; returns its URL.
    pub fn open_issue(&self, title: &str, body: &str, labels: &[String]) -> Result<String, ForgeError> {
        let v = self.call(
            Method::Post,
            &self.repo_path("/issues"),
            Some(json!({ "title": title, "body": body, "labels": labels })),
        )?;
        Ok(v.get("html_url").and_then(Value::as_str).unwrap_or_default().to_string())
    }

    /// A completed check run: its summary cut to what GitHub takes (with a pointer to
    /// `rollbackd status`, which has it all), its annotations 50 to a request, the first 50 with
    /// the run and the rest in updates of it (GitHub adds each update's to those it has).
    fn check_run(
        &self,
        name: &str,
        commit: &str,
        conclusion: &str,
        title: &str,
        summary: &str,
        annotations: Vec<Value>,
    ) -> Result<(), ForgeError> {
        let summary = capped(summary);
        let mut batches = annotations.chunks(ANNOTATIONS_PER_REQUEST);
        let mut output = json!({ "title": title, "summary": summary });
        if let Some(first) = batches.next() {
            output["annotations"] = json!(first);
        }
        let run = json!({ "name": name, "head_sha": commit, "status": "completed", "conclusion": conclusion,
                          "output": output });
        let created = self.call(Method::Post, &self.repo_path("/check-runs"), Some(run))?;
        let Some(id) = created.get("id").and_then(Value::as_u64) else { return Ok(()) };
        for batch in batches {
            let more = json!({ "output": { "title": title, "summary": summary, "annotations": batch } });
            self.call(Method::Patch, &self.repo_path(&format!("/check-runs/{id}")), Some(more))?;
        }
        Ok(())
    }

    pub fn close(&self, number: u64) -> Result<(), ForgeError> {
        self.call(Method::Patch, &self.repo_path(&format!("/pulls/{number}")), Some(json!({ "state": "closed" })))?;
        Ok(())
    }
}

/// `text` cut to what GitHub takes in a check run's output (and near what it shows of a
/// comment), ending with where the rest is.
fn capped(text: &str) -> String {
    const MORE: &str = "\n\n… cut short here: GitHub takes 65,535 characters; `rollbackd status` (or the \
                        service's log) has the whole list.";
    if text.chars().count() <= OUTPUT_CHARS {
        return text.to_string();
    }
    let keep = OUTPUT_CHARS - MORE.chars().count();
    let mut out: String = text.chars().take(keep).collect();
    out.push_str(MORE);
    out
}

/// A check run annotation from `path:line:col: error: message` (a position of 0 is the file).
fn annotation(error: &str) -> Value {
    let mut parts = error.splitn(4, ':');
    let (path, line, col, rest) = (parts.next(), parts.next(), parts.next(), parts.next());
    let num = |s: Option<&str>| s.and_then(|s| s.trim().parse::<u64>().ok());
    match (path, num(line), num(col), rest) {
        (Some(path), Some(line), Some(col), Some(message)) => {
            let message = message.trim().strip_prefix("error:").unwrap_or(message).trim();
            let mut a = json!({
                "path": path, "start_line": line.max(1), "end_line": line.max(1),
                "annotation_level": "failure", "message": message,
            });
            if col > 0 {
                a["start_column"] = json!(col);
                a["end_column"] = json!(col);
            }
            a
        }
        _ => json!({
            "path": path.unwrap_or_default(), "start_line": 1, "end_line": 1,
            "annotation_level": "failure", "message": error,
        }),
    }
}

/// The HTTP client under octocrab: reqwest, so `HTTPS_PROXY` / `NO_PROXY` apply here as to
/// every other outbound call, with the system's trust store. It follows no redirect: a 301 is
/// followed by `forge::api`, for reads, by path, on the configured API host.
fn http_client() -> Result<reqwest::Client, ForgeError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("rollbackd/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ForgeError::Config(format!("HTTP client: {e}")))
}

async fn build_client(cfg: &GithubConfig) -> Result<(Octocrab, Option<AppAuth>), ForgeError> {
    let builder =
        Octocrab::builder().base_uri(cfg.api_url.as_str()).map_err(|e| ForgeError::Config(format!("api_url: {e}")))?;
    let token = match (&cfg.token_env, &cfg.token_file) {
        (Some(var), _) => Some(
            std::env::var(var)
                .ok()
                .filter(|t| !t.trim().is_empty())
                .ok_or_else(|| ForgeError::Config(format!("env var {var} (forge.token_env) is not set")))?,
        ),
        (None, Some(file)) => Some(
            std::fs::read_to_string(file)
                .map_err(|e| ForgeError::Config(format!("cannot read {}: {e}", file.display())))?
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    match (token.map(SecretString::new), cfg.app_id, &cfg.private_key_file) {
        (Some(token), _, _) => builder
            .personal_token(token.expose().to_string())
            .build_with_reqwest(http_client()?)
            .map(|c| (c, None))
            .map_err(|e| ForgeError::Config(e.to_string())),
        (None, Some(app_id), Some(key_file)) => {
            let pem = std::fs::read(key_file)
                .map_err(|e| ForgeError::Config(format!("cannot read {}: {e}", key_file.display())))?;
            let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem)
                .map_err(|e| ForgeError::Config(format!("{}: not an RSA private key: {e}", key_file.display())))?;
            let app = builder
                .app(app_id.into(), key)
                .build_with_reqwest(http_client()?)
                .map_err(|e| ForgeError::Config(e.to_string()))?;
            let installation = match cfg.installation_id {
                Some(id) => id,
                None => {
                    let path = format!("/repos/{}/{}/installation", cfg.owner, cfg.repo);
                    // A renamed or transferred repository answers 301: followed.
                    api::call(&app, Method::Get, &path, None, true)
                        .await?
                        .get("id")
                        .and_then(Value::as_u64)
                        .ok_or_else(|| ForgeError::Config("no installation id in GitHub's answer".into()))?
                }
            };
            // Octocrab mints installation tokens from the app's JWT and renews them before expiry.
            let client = app.installation(installation.into()).map_err(|e| ForgeError::Config(e.to_string()))?;
            Ok((client, Some(AppAuth { client: app, installation })))
        }
        _ => {
            Err(ForgeError::Config("forge.github needs token_env or token_file, or app_id and private_key_file".into()))
        }
    }
}

/// Pages of 100 check runs read at most (GitHub lists at most 1,000 per commit).
const CHECK_PAGES: usize = 10;

/// Pages of 100 webhook deliveries read at most in one look (GitHub keeps three days of them).
const DELIVERY_PAGES: usize = 100;

/// Most characters GitHub takes in a check run's `output.summary` or `output.text`.
const OUTPUT_CHARS: usize = 65_535;

/// Most annotations GitHub takes in one check run request; more go in updates of the run.
const ANNOTATIONS_PER_REQUEST: usize = 50;

/// Merge attempts (and twice as many looks at the pull request) before giving up.
const MERGE_ATTEMPTS: u32 = 5;

/// 250 ms, doubling.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250 << attempt.min(5))
}

/// The query of "the open pull request from `owner:branch`", every value URL-encoded.
fn open_pr_query(owner: &str, branch: &str) -> String {
    serde_urlencoded::to_string([("state", "open"), ("head", &format!("{owner}:{branch}"))]).unwrap_or_default()
}

/// The gate's summary, then the plan of the change, within GitHub's cap on a check run's
/// summary: the violations are kept whole when they fit (cut to the cap otherwise, saying where
/// the rest is), the plan gets what is left.
fn with_plan(held: String, plans: &[crate::domain::change_plan::ChangePlan]) -> String {
    use crate::domain::change_plan::{ChangePlan, GITHUB_SUMMARY_MAX};
    let mut summary = capped(&held);
    let room = GITHUB_SUMMARY_MAX.saturating_sub(summary.chars().count() + 2);
    // Too little room says nothing useful: the gate's verdict matters more.
    if room > 200 {
        summary.push_str("\n\n");
        summary.push_str(&ChangePlan::markdown_all(plans, room));
    }
    summary
}

/// What GitHub says of one person in one team.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TeamMembership {
    Active,
    /// Invited, not accepted yet: not a member.
    Pending,
    /// Not a member (or a team these credentials cannot see).
    NotMember,
}

/// The checks on one commit, by name, as they stand.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CiChecks {
    pub failed: Vec<String>,
    pub pending: Vec<String>,
    pub passed: Vec<String>,
}

/// The port, spoken to GitHub: a proposal is a pull request, found by its branch.
impl super::Forge for GithubForge {
    fn hosts_pull_requests(&self) -> bool {
        true
    }

    fn git_token(&self) -> Result<Option<SecretString>, ForgeError> {
        GithubForge::git_token(self)
    }

    fn propose(&self, p: &super::ProposalRequest<'_>) -> Result<Option<Pr>, ForgeError> {
        if let Some(pr) = self.find_open_pr(p.branch)? {
            return Ok(Some(pr));
        }
        match self.open_pr(&super::ProposalRequest { title: p.title.trim(), ..*p }) {
            Ok(pr) => Ok(Some(pr)),
            // "A pull request already exists": the outbox and the writer (an approval, an
            // auto_merge) may both find none and open one; the one that loses takes the other's.
            Err(e @ ForgeError::Api { status: 422, .. }) => match self.find_open_pr(p.branch)? {
                Some(pr) => Ok(Some(pr)),
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    fn announce(&self, branch: &str, text: &str) -> Result<bool, ForgeError> {
        match self.find_open_pr(branch)? {
            Some(pr) => GithubForge::comment(self, pr.number, text).map(|_| true),
            None => Ok(false),
        }
    }

    fn comment(&self, number: u64, text: &str) -> Result<(), ForgeError> {
        GithubForge::comment(self, number, text).map(|_| ())
    }

    fn react(&self, comment_id: u64, content: &str) -> Result<(), ForgeError> {
        GithubForge::react(self, comment_id, content)
    }

    fn rollback_proposal(&self, number: u64) -> Result<Option<crate::domain::rollback::RollbackRef>, ForgeError> {
        let pr = self.get_pr(number)?;
        Ok(self.proposal_of(&pr))
    }

    fn merge(&self, pr: &Pr, method: MergeMethod, sha: &str, message: &str) -> Result<String, ForgeError> {
        GithubForge::merge(self, pr.number, method, sha, message)
    }

    fn close(&self, branch: &str, text: &str) -> Result<(), ForgeError> {
        if let Some(pr) = self.find_open_pr(branch)? {
            GithubForge::comment(self, pr.number, text)?;
            GithubForge::close(self, pr.number)?;
        }
        Ok(())
    }

    fn open_issue(&self, title: &str, body: &str, labels: &[String]) -> Result<Option<String>, ForgeError> {
        GithubForge::open_issue(self, title, body, labels).map(Some)
    }

    /// A `rollbackd/policies` check run on `commit`, each error an annotation at its file and
    /// line. Only a GitHub App may create check runs: with a personal token (403), a commit
    /// comment says the same.
    fn report_policies(&self, commit: &str, errors: &[String], in_force: usize) -> Result<(), ForgeError> {
        let (conclusion, title) = if errors.is_empty() {
            ("success", format!("{in_force} policies in force"))
        } else {
            ("failure", format!("refused: {} errors; the {in_force} policies in force stay", errors.len()))
        };
        let annotations: Vec<Value> = errors.iter().map(|e| annotation(e)).collect();
        let summary = if errors.is_empty() {
            "rollbackd switched to the policies of this commit.".to_string()
        } else {
            format!("rollbackd did not switch to the policies of this commit:\n\n```\n{}\n```", errors.join("\n"))
        };
        match self.check_run("rollbackd/policies", commit, conclusion, &title, &summary, annotations) {
            Err(ForgeError::Api { status: 403, .. }) if !errors.is_empty() => {
                let body = format!("**rollbackd/policies: {title}**\n\n{}", capped(&summary));
                self.call(
                    Method::Post,
                    &self.repo_path(&format!("/commits/{commit}/comments")),
                    Some(json!({ "body": body })),
                )
                .map(|_| ())
            }
            Err(ForgeError::Api { status: 403, .. }) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// The `rollbackd/gate` check run on `commit`; GitHub refuses check runs to a token (403),
    /// so then a refusal is a comment on the pull request.
    fn report_gate(
        &self,
        number: u64,
        commit: &str,
        violations: &[String],
        plans: &[crate::domain::change_plan::ChangePlan],
    ) -> Result<(), ForgeError> {
        let (conclusion, title) = match violations.len() {
            0 => ("success", "no held artifact comes back".to_string()),
            1 => ("failure", "1 change brings back a held artifact".to_string()),
            n => ("failure", format!("{n} changes bring back held artifacts")),
        };
        let annotations: Vec<Value> = violations
            .iter()
            .map(|v| {
                let (path, message) = v.split_once(": ").unwrap_or(("", v));
                json!({ "path": path, "start_line": 1, "end_line": 1, "annotation_level": "failure",
                        "title": "held by a rollback", "message": message })
            })
            .collect();
        let held = if violations.is_empty() {
            "rollbackd found no change that reintroduces an artifact a rollback undid.".to_string()
        } else {
            format!(
                "A rollback undid these artifacts; this change brings them back:\n\n{}",
                violations.iter().map(|v| format!("- {v}")).collect::<Vec<_>>().join("\n")
            )
        };
        let summary = with_plan(held, plans);
        match self.check_run("rollbackd/gate", commit, conclusion, &title, &summary, annotations) {
            Err(ForgeError::Api { status: 403, .. }) if !violations.is_empty() => {
                self.comment(number, &format!("**rollbackd/gate: {title}**\n\n{}", capped(&summary))).map(|_| ())
            }
            Err(ForgeError::Api { status: 403, .. }) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    fn report_gate_refused(&self, number: u64, commit: &str, why: &str) -> Result<(), ForgeError> {
        let title = "too large to gate";
        match self.check_run("rollbackd/gate", commit, "failure", title, why, Vec::new()) {
            Err(ForgeError::Api { status: 403, .. }) => {
                self.comment(number, &format!("**rollbackd/gate: {title}**\n\n{why}")).map(|_| ())
            }
            other => other.map(|_| ()),
        }
    }

    /// The required checks that have not (yet) passed on `sha`. A required name may be a check
    /// run (every page of them) or a commit status context (the older Status API); a check run
    /// passes when it completed as `success`, `neutral` or `skipped`, as GitHub's required
    /// checks count them, and a status when it is `success`. The newest run of a name counts.
    fn checks_pending(&self, sha: &str, required: &[String]) -> Result<Vec<String>, ForgeError> {
        if required.is_empty() {
            return Ok(Vec::new());
        }
        let (runs, statuses) = self.checks_of(sha)?;
        let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let passed = |name: &str| {
            let run = runs.iter().filter(|r| field(r, "name").as_deref() == Some(name)).max_by_key(|r| {
                (field(r, "started_at").unwrap_or_default(), r.get("id").and_then(Value::as_u64).unwrap_or(0))
            });
            if let Some(r) = run {
                return field(r, "status").as_deref() == Some("completed")
                    && matches!(field(r, "conclusion").as_deref(), Some("success" | "neutral" | "skipped"));
            }
            statuses.iter().any(|s| {
                field(s, "context").as_deref() == Some(name) && field(s, "state").as_deref() == Some("success")
            })
        };
        Ok(required.iter().filter(|n| !passed(n)).cloned().collect())
    }

    /// Every check on `sha` (the newest run of each name, and each commit status), by what it
    /// said: what a drill branch's CI said.
    fn ci_of(&self, sha: &str) -> Result<CiChecks, ForgeError> {
        let (runs, statuses) = self.checks_of(sha)?;
        let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let mut newest: std::collections::BTreeMap<String, &Value> = std::collections::BTreeMap::new();
        for r in &runs {
            let Some(name) = field(r, "name") else { continue };
            let key = |v: &Value| {
                (field(v, "started_at").unwrap_or_default(), v.get("id").and_then(Value::as_u64).unwrap_or(0))
            };
            if newest.get(&name).is_none_or(|old| key(old) < key(r)) {
                newest.insert(name, r);
            }
        }
        let (mut failed, mut pending, mut passed) = (Vec::new(), Vec::new(), Vec::new());
        for (name, r) in newest {
            match (field(r, "status").as_deref(), field(r, "conclusion").as_deref()) {
                (Some("completed"), Some("success" | "neutral" | "skipped")) => passed.push(name),
                (Some("completed"), _) => failed.push(name),
                _ => pending.push(name),
            }
        }
        for st in &statuses {
            let Some(name) = field(st, "context") else { continue };
            match field(st, "state").as_deref() {
                Some("success") => passed.push(name),
                Some("failure" | "error") => failed.push(name),
                _ => pending.push(name),
            }
        }
        Ok(CiChecks { failed, pending, passed })
    }

    /// Whether GitHub user `login` is in team `org/team`: `GET /orgs/{org}/teams/{team_slug}/memberships/{username}`.
    /// An `active` membership is one; a `pending` one (an invitation not accepted yet) is not,
    /// nor is a 404 (no membership, or a team these credentials cannot see). Anything else,
    /// a 403 above all (an App not granted Members read), is an error: nobody is taken for a
    /// member on it.
    fn team_membership(&self, team: &str, login: &str) -> Result<TeamMembership, ForgeError> {
        let plain =
            |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        let (org, slug) = team.split_once('/').unwrap_or(("", ""));
        // `.` and `..` would be resolved away by the URL: no such team.
        if !plain(org) || !plain(slug) || !plain(login) || [org, slug, login].iter().any(|s| s.starts_with('.')) {
            return Err(ForgeError::Config(format!("`{team}` / `{login}` is not a GitHub team and login")));
        }
        let path = format!("/orgs/{org}/teams/{slug}/memberships/{login}");
        match self.call(Method::Get, &path, None) {
            Ok(v) => match v.get("state").and_then(Value::as_str) {
                Some("active") => Ok(TeamMembership::Active),
                Some("pending") => Ok(TeamMembership::Pending),
                other => Err(ForgeError::Api {
                    method: "GET",
                    path,
                    status: 200,
                    message: format!("unexpected membership state {other:?}"),
                }),
            },
            Err(ForgeError::Api { status: 404, .. }) => Ok(TeamMembership::NotMember),
            Err(e) => Err(e),
        }
    }

    fn sees_deliveries(&self) -> bool {
        self.is_app()
    }

    fn deliveries(&self, since: jiff::Timestamp) -> Option<Result<Vec<HookDelivery>, ForgeError>> {
        self.is_app().then(|| GithubForge::deliveries(self, since))
    }

    /// Asks GitHub to send delivery `id` again (it answers 202 and sends it soon).
    fn redeliver(&self, id: u64) -> Result<(), ForgeError> {
        let Some(app) = &self.app else { return Ok(()) };
        let path = format!("/app/hook/deliveries/{id}/attempts");
        self.rt.block_on(api::call(&app.client, Method::Post, &path, None, false)).map(|_| ())
    }

    fn github(&self) -> Option<&GithubForge> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_long_output_is_cut_to_what_github_takes_and_says_where_the_rest_is() {
        let short = "x".repeat(100);
        assert_eq!(super::capped(&short), short);
        let long = "é".repeat(70_000);
        let cut = super::capped(&long);
        assert_eq!(cut.chars().count(), super::OUTPUT_CHARS);
        assert!(cut.ends_with("has the whole list."), "{}", &cut[cut.len() - 200..]);
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(
            super::open_pr_query("acme", "rollback/checkout/prod/rb-0123456789ab"),
            "state=open&head=acme%3Arollback%2Fcheckout%2Fprod%2Frb-0123456789ab"
        );
        assert!(super::open_pr_query("a&b", "x#y").contains("a%26b%3Ax%23y"));
    }
}
