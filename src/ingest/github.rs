//! GitHub webhook deliveries → [`Event`]s. Only what rollbackd acts on is read: failed workflow
//! runs and check suites, and deployment statuses. Everything else is "ignored", with the reason.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Deserialize;

use crate::domain::event::{Event, Source};

#[derive(Debug, PartialEq)]
pub enum GithubEvent {
    Ping,
    /// A failed CI run or deployment: a rollback trigger.
    Failure(Event),
    /// A deployment that succeeded: its sha is known-good for its environment.
    DeploymentSucceeded(Event),
    /// A comment on an issue or pull request, perhaps a `/rollback` command.
    Comment(Comment),
    /// Checks succeeded on a rollback proposal's branch (for `auto_merge` with `required_checks`).
    ChecksPassed {
        branch: String,
    },
    /// A pull request closed, merged or not.
    PullRequestClosed {
        repository: String,
        branch: String,
        merged_sha: Option<String>,
        head_sha: String,
        by: String,
    },
    /// A pull request opened or pushed to: `rollbackd gate` runs on its head.
    PullRequestChanged {
        repository: String,
        number: u64,
        /// A full commit id (checked).
        head_sha: String,
        /// The branch it is to be merged into.
        base: String,
    },
    /// Commits pushed to a ref of a repository: the mirror is brought up to date at once, so
    /// the next event needs no fetch.
    Pushed {
        repository: String,
        git_ref: String,
    },
    Ignored(String),
}

pub use crate::domain::event::Comment;

#[derive(Deserialize)]
struct IssueCommentPayload {
    action: String,
    issue: IssueRef,
    comment: CommentBody,
    #[serde(default)]
    changes: Option<serde_json::Value>,
    repository: Repository,
    sender: Sender,
}

#[derive(Deserialize)]
struct IssueRef {
    number: u64,
    #[serde(default)]
    pull_request: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct CommentBody {
    id: u64,
    /// Null as well as missing reads as empty: GitHub sends `null` for an emptied body.
    #[serde(default, deserialize_with = "null_as_empty")]
    body: String,
    #[serde(default)]
    created_at: Option<Timestamp>,
    #[serde(default)]
    updated_at: Option<Timestamp>,
}

#[derive(Deserialize)]
struct PullRequestPayload {
    action: String,
    pull_request: PullRequest,
    repository: Repository,
    #[serde(default)]
    sender: Option<Sender>,
}

#[derive(Deserialize)]
struct PullRequest {
    #[serde(default)]
    merged: bool,
    #[serde(default)]
    merge_commit_sha: Option<String>,
    head: PullRequestHead,
    #[serde(default)]
    number: u64,
    #[serde(default)]
    base: Option<PullRequestBase>,
}

#[derive(Deserialize)]
struct PullRequestBase {
    #[serde(rename = "ref")]
    branch: String,
}

#[derive(Deserialize)]
struct PushPayload {
    #[serde(rename = "ref")]
    git_ref: String,
    repository: Repository,
}

#[derive(Deserialize)]
struct PullRequestHead {
    #[serde(rename = "ref")]
    branch: String,
    sha: String,
    /// Absent when the fork was deleted.
    #[serde(default)]
    repo: Option<Repository>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("body is not a GitHub `{event}` payload: {message}")]
    Json { event: String, message: String },
}

#[derive(Deserialize)]
struct Repository {
    full_name: String,
}

#[derive(Deserialize)]
struct Sender {
    login: String,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

impl Sender {
    fn is_bot(&self) -> bool {
        self.kind.as_deref() == Some("Bot") || self.login.ends_with("[bot]")
    }
}

#[derive(Deserialize)]
struct Named {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    slug: Option<String>,
}

#[derive(Deserialize)]
struct WorkflowRunPayload {
    action: String,
    repository: Repository,
    #[serde(default)]
    sender: Option<Sender>,
    #[serde(default)]
    workflow: Option<Named>,
    workflow_run: WorkflowRun,
}

#[derive(Deserialize)]
struct WorkflowRun {
    id: u64,
    #[serde(default)]
    name: Option<String>,
    head_sha: String,
    #[serde(default)]
    head_branch: Option<String>,
    #[serde(default)]
    conclusion: Option<String>,
    #[serde(default)]
    run_attempt: Option<u64>,
    #[serde(default)]
    html_url: Option<String>,
    /// What started the run: `push`, `pull_request`, `workflow_dispatch`, ...
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    head_repository: Option<Repository>,
}

#[derive(Deserialize)]
struct CheckSuitePayload {
    action: String,
    repository: Repository,
    #[serde(default)]
    sender: Option<Sender>,
    check_suite: CheckSuite,
}

#[derive(Deserialize)]
struct CheckSuite {
    id: u64,
    head_sha: String,
    #[serde(default)]
    head_branch: Option<String>,
    #[serde(default)]
    conclusion: Option<String>,
    #[serde(default)]
    app: Option<Named>,
}

#[derive(Deserialize)]
struct DeploymentStatusPayload {
    repository: Repository,
    #[serde(default)]
    sender: Option<Sender>,
    deployment_status: DeploymentStatus,
    deployment: Deployment,
}

#[derive(Deserialize)]
struct DeploymentStatus {
    id: u64,
    state: String,
    #[serde(default)]
    created_at: Option<Timestamp>,
    #[serde(default)]
    target_url: Option<String>,
}

#[derive(Deserialize)]
struct Deployment {
    id: u64,
    sha: String,
    #[serde(rename = "ref", default)]
    git_ref: Option<String>,
    environment: String,
    #[serde(default)]
    task: Option<String>,
    #[serde(default)]
    payload: serde_json::Value,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

fn json<'a, T: Deserialize<'a>>(event: &str, body: &'a [u8]) -> Result<T, ParseError> {
    serde_json::from_slice(body).map_err(|e| ParseError::Json { event: event.to_string(), message: e.to_string() })
}

fn base_labels(event: &str, repo: &Repository, sender: &Option<Sender>) -> BTreeMap<String, String> {
    let mut l =
        BTreeMap::from([("event".to_string(), event.to_string()), ("repository".to_string(), repo.full_name.clone())]);
    if let Some(s) = sender {
        l.insert("sender".into(), s.login.clone());
    }
    l
}

fn event(
    dedupe_key: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    now: Timestamp,
) -> Event {
    Event {
        source: Source::Github,
        dedupe_key,
        labels,
        annotations,
        received_at: now,
        started_at: None,
        requester: None,
        from_fork: false,
    }
}

/// `event_name` is the `X-GitHub-Event` header; `workflows` the names from `sources.github.workflows`.
pub fn parse(event_name: &str, body: &[u8], workflows: &[String], now: Timestamp) -> Result<GithubEvent, ParseError> {
    match event_name {
        "ping" => Ok(GithubEvent::Ping),
        "workflow_run" => parse_workflow_run(event_name, body, workflows, now),
        "check_suite" => parse_check_suite(event_name, body, now),
        "deployment_status" => parse_deployment_status(event_name, body, now),
        "issue_comment" => parse_issue_comment(event_name, body),
        "pull_request" => parse_pull_request(event_name, body),
        "push" => {
            let p: PushPayload = json(event_name, body)?;
            Ok(GithubEvent::Pushed { repository: p.repository.full_name, git_ref: p.git_ref })
        }
        other => Ok(GithubEvent::Ignored(format!("GitHub event {other:?} is not one rollbackd acts on"))),
    }
}

/// `workflow_run`: see [`parse`].
fn parse_workflow_run(
    event_name: &str,
    body: &[u8],
    workflows: &[String],
    now: Timestamp,
) -> Result<GithubEvent, ParseError> {
    let p: WorkflowRunPayload = json(event_name, body)?;
    let run = p.workflow_run;
    let name = run.name.filter(|n| !n.is_empty()).or(p.workflow.and_then(|w| w.name)).unwrap_or_default();
    let conclusion = run.conclusion.unwrap_or_default();
    if p.action != "completed" || conclusion != "failure" {
        return Ok(GithubEvent::Ignored(format!(
            "workflow_run {} with conclusion {:?}: only completed failures are acted on",
            p.action, conclusion
        )));
    }
    if !workflows.iter().any(|w| w == &name) {
        return Ok(GithubEvent::Ignored(format!("workflow {name:?} is not listed in sources.github.workflows")));
    }
    let mut labels = base_labels(event_name, &p.repository, &p.sender);
    labels.insert("workflow".into(), name);
    labels.insert("conclusion".into(), conclusion);
    labels.insert("sha".into(), run.head_sha);
    if let Some(b) = run.head_branch {
        labels.insert("branch".into(), b);
    }
    // A run of a fork's code (a pull request from a fork) says nothing about what was
    // deployed from this repository.
    let from_fork =
        run.head_repository.as_ref().is_some_and(|h| !h.full_name.eq_ignore_ascii_case(&p.repository.full_name));
    if let Some(trigger) = run.event {
        labels.insert("trigger_event".into(), trigger);
    }
    if let Some(h) = run.head_repository {
        labels.insert("head_repository".into(), h.full_name);
    }
    labels.insert("fork".into(), from_fork.to_string());
    let annotations = run.html_url.map(|u| BTreeMap::from([("url".to_string(), u)])).unwrap_or_default();
    let key = format!("workflow_run/{}/{}", run.id, run.run_attempt.unwrap_or(1));
    let mut e = event(key, labels, annotations, now);
    e.from_fork = from_fork;
    Ok(GithubEvent::Failure(e))
}

/// `check_suite`: see [`parse`].
fn parse_check_suite(event_name: &str, body: &[u8], now: Timestamp) -> Result<GithubEvent, ParseError> {
    let p: CheckSuitePayload = json(event_name, body)?;
    let cs = p.check_suite;
    let conclusion = cs.conclusion.unwrap_or_default();
    if let Some(branch) = cs.head_branch.as_ref().filter(|b| b.starts_with("rollback/"))
        && p.action == "completed"
        && conclusion == "success"
    {
        return Ok(GithubEvent::ChecksPassed { branch: branch.clone() });
    }
    if p.action != "completed" || conclusion != "failure" {
        return Ok(GithubEvent::Ignored(format!(
            "check_suite {} with conclusion {:?}: only completed failures are acted on",
            p.action, conclusion
        )));
    }
    let mut labels = base_labels(event_name, &p.repository, &p.sender);
    labels.insert("conclusion".into(), conclusion);
    labels.insert("sha".into(), cs.head_sha);
    if let Some(b) = cs.head_branch {
        labels.insert("branch".into(), b);
    }
    if let Some(app) = cs.app.and_then(|a| a.slug.or(a.name)) {
        labels.insert("app".into(), app);
    }
    Ok(GithubEvent::Failure(event(format!("check_suite/{}", cs.id), labels, BTreeMap::new(), now)))
}

/// `deployment_status`: see [`parse`].
fn parse_deployment_status(event_name: &str, body: &[u8], now: Timestamp) -> Result<GithubEvent, ParseError> {
    let p: DeploymentStatusPayload = json(event_name, body)?;
    let (d, st) = (p.deployment, p.deployment_status);
    let mut labels = base_labels(event_name, &p.repository, &p.sender);
    labels.insert("environment".into(), d.environment);
    labels.insert("sha".into(), d.sha);
    labels.insert("state".into(), st.state.clone());
    if let Some(r) = d.git_ref {
        labels.insert("ref".into(), r);
    }
    if let Some(t) = d.task {
        labels.insert("task".into(), t);
    }
    // Deploy tooling often names the service in the deployment payload. GitHub hands
    // it back as it was given: an object, or a string holding one (or anything else).
    let payload = match d.payload {
        serde_json::Value::String(text) => serde_json::from_str(&text).unwrap_or_default(),
        other => other,
    };
    if let serde_json::Value::Object(map) = &payload {
        // Keys become label names: only plain words, so a payload cannot shadow or
        // invent one of ours.
        for (k, v) in map.iter().filter(|(k, _)| {
            !k.is_empty() && k.len() <= 64 && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        }) {
            // Short strings only: a payload may carry blobs that are nobody's label, and
            // they must not push the event over input.max_value_bytes.
            if let Some(s) = v.as_str().filter(|s| s.len() <= 256) {
                labels.insert(format!("payload_{k}"), s.to_string());
            }
        }
    }
    let annotations = st.target_url.map(|u| BTreeMap::from([("url".to_string(), u)])).unwrap_or_default();
    match st.state.as_str() {
        // One incident per deployment: its failure and error statuses are one trigger.
        "failure" | "error" => {
            Ok(GithubEvent::Failure(event(format!("deployment/{}", d.id), labels, annotations, now)))
        }
        "success" => {
            let stamp = st.created_at.unwrap_or(now);
            let key = format!("deployment/{}/status/{}", d.id, st.id);
            let mut e = event(key, labels, annotations, now);
            e.started_at = Some(stamp);
            Ok(GithubEvent::DeploymentSucceeded(e))
        }
        other => Ok(GithubEvent::Ignored(format!("deployment_status {other:?} is neither a failure nor a success"))),
    }
}

/// `issue_comment`: see [`parse`].
fn parse_issue_comment(event_name: &str, body: &[u8]) -> Result<GithubEvent, ParseError> {
    let p: IssueCommentPayload = json(event_name, body)?;
    if p.action != "created" && p.action != "edited" {
        return Ok(GithubEvent::Ignored(format!("issue_comment {}: only new and edited comments are read", p.action)));
    }
    let previous_body =
        p.changes.as_ref().and_then(|c| c.pointer("/body/from")).and_then(|b| b.as_str()).map(str::to_string);
    Ok(GithubEvent::Comment(Comment {
        id: p.comment.id,
        issue: p.issue.number,
        is_pull_request: p.issue.pull_request.is_some(),
        body: p.comment.body,
        previous_body,
        sender_is_bot: p.sender.is_bot(),
        sender: p.sender.login,
        repository: p.repository.full_name,
        at: p.comment.updated_at.or(p.comment.created_at),
    }))
}

/// `pull_request`: see [`parse`].
fn parse_pull_request(event_name: &str, body: &[u8]) -> Result<GithubEvent, ParseError> {
    let p: PullRequestPayload = json(event_name, body)?;
    let pr = p.pull_request;
    if matches!(p.action.as_str(), "opened" | "synchronize" | "reopened") {
        let Some(base) = pr.base.filter(|_| pr.number > 0) else {
            return Ok(GithubEvent::Ignored("pull request without a number or base".into()));
        };
        if !crate::domain::plan::Sha::is_full_hex(&pr.head.sha) {
            return Ok(GithubEvent::Ignored("pull request head is not a commit id".into()));
        }
        return Ok(GithubEvent::PullRequestChanged {
            repository: p.repository.full_name,
            number: pr.number,
            head_sha: pr.head.sha,
            base: base.branch,
        });
    }
    if p.action != "closed" {
        return Ok(GithubEvent::Ignored(format!(
            "pull_request {}: only opening, pushes and closing are read",
            p.action
        )));
    }
    // Only a branch of the config repo itself can be one of our proposals; a fork can
    // name its branch anything.
    let same_repo = pr.head.repo.as_ref().is_some_and(|r| r.full_name.eq_ignore_ascii_case(&p.repository.full_name));
    if !same_repo {
        return Ok(GithubEvent::Ignored("pull request from another repository (a fork)".into()));
    }
    Ok(GithubEvent::PullRequestClosed {
        repository: p.repository.full_name,
        branch: pr.head.branch,
        merged_sha: pr.merge_commit_sha.filter(|_| pr.merged),
        head_sha: pr.head.sha,
        by: p.sender.map(|s| s.login).unwrap_or_default(),
    })
}
