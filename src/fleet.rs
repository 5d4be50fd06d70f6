//! Several config repos on one service: a writer per repo, and which writers an input goes to.
//!
//! Routing never trusts the sender to name a repo. An event goes to every repo whose policies
//! act on it (or that has already rolled it back); a GitHub event about the config repo itself
//! goes to the repo whose forge is that repository; a command about a rollback goes to the repo
//! that holds it. With one repo, everything goes to it, as before.

use std::sync::Arc;

use crate::chat::{ChatRequest, Command, Reply};
use crate::config::{Config, ForgeConfig};
use crate::domain::event::Event;
use crate::worker::{Job, JobResult, WorkerHandle};

pub struct Member {
    /// `repos[].name`; `None` for a file with one `repo:`.
    pub name: Option<String>,
    pub handle: WorkerHandle,
    /// `owner/name` on GitHub when the repo's forge is GitHub.
    pub github_repo: Option<String>,
    /// The config repo's URL as one key, whatever way it is written: what a GitOps
    /// controller's event naming its source repo is compared with.
    pub repo_key: String,
}

impl Member {
    /// The writer `handle` of the repo `config` describes.
    pub fn new(config: &Config, handle: WorkerHandle) -> Self {
        let github_repo = match &config.forge {
            ForgeConfig::Github(g) => Some(format!("{}/{}", g.owner, g.repo)),
            ForgeConfig::Local => None,
        };
        let repo_key = crate::support::url::repo_key(&config.repo.url);
        Member { name: config.member.clone(), handle, github_repo, repo_key }
    }

    /// Whether this member's policies have something to say about `event`, or it has already
    /// acted on it.
    fn concerned(&self, event: &Event) -> bool {
        let shared = self.handle.shared();
        if shared.snapshot().find_trigger(&event.trigger()).is_some() {
            return true;
        }
        // Not `triage`: that tells a notify policy's channels, and the event's own dispatch will.
        shared.triager().concerns(event)
    }
}

#[derive(Clone)]
pub struct Fleet(Arc<[Member]>);

impl Fleet {
    pub fn new(members: Vec<Member>) -> Self {
        assert!(!members.is_empty(), "a fleet serves at least one repo");
        Fleet(members.into())
    }

    /// The fleet of one repo.
    pub fn single(config: &Config, handle: WorkerHandle) -> Self {
        Fleet::new(vec![Member::new(config, handle)])
    }

    pub fn members(&self) -> &[Member] {
        &self.0
    }

    /// More than one repo: answers name theirs.
    pub fn is_many(&self) -> bool {
        self.0.len() > 1
    }

    /// The repos an event goes to: those concerned with it, or the first when none is (so the
    /// answer says why nothing acts on it).
    pub fn route(&self, event: &Event) -> Vec<&Member> {
        if !self.is_many() {
            return self.0.iter().collect();
        }
        let concerned: Vec<&Member> = self.0.iter().filter(|m| m.concerned(event)).collect();
        if concerned.is_empty() { vec![&self.0[0]] } else { concerned }
    }

    /// The repos a successful deploy goes to: those with a policy that marks it known-good
    /// (no other policy acts on one); the first when none has.
    pub fn route_known_good(&self, event: &Event) -> Vec<&Member> {
        if !self.is_many() {
            return self.0.iter().collect();
        }
        let marking: Vec<&Member> =
            self.0.iter().filter(|m| m.handle.shared().triager().marks_known_good(event)).collect();
        if marking.is_empty() { vec![&self.0[0]] } else { marking }
    }

    /// The repo whose forge is GitHub repository `full_name` (`owner/name`, any case).
    pub fn by_github_repo(&self, full_name: &str) -> Option<&Member> {
        self.0.iter().find(|m| m.github_repo.as_deref().is_some_and(|r| r.eq_ignore_ascii_case(full_name)))
    }

    /// Whether any repo's proposals are GitHub pull requests.
    pub fn any_github_forge(&self) -> bool {
        self.0.iter().any(|m| m.github_repo.is_some())
    }

    /// The repos that hold rollback `id` (as a commit or a proposal); all of them when none
    /// does, so each can say it does not know it.
    pub fn holding(&self, id: &str) -> Vec<&Member> {
        self.recording(|r| r.id.0 == id)
    }

    /// The repos that hold a rollback proposed on `branch`; all of them when none does.
    pub fn proposing(&self, branch: &str) -> Vec<&Member> {
        self.recording(|r| r.branch == branch)
    }

    fn recording(&self, pred: impl Fn(&crate::git::AuditRecord) -> bool) -> Vec<&Member> {
        if !self.is_many() {
            return self.0.iter().collect();
        }
        let holding: Vec<&Member> =
            self.0.iter().filter(|m| m.handle.shared().snapshot().records.iter().any(&pred)).collect();
        if holding.is_empty() { self.0.iter().collect() } else { holding }
    }

    /// The repo an event about GitHub repository `full_name` (a pull request, a push, a
    /// comment) concerns: the one whose forge it is; with one repo and no GitHub forge, that
    /// repo.
    pub fn config_repo(&self, full_name: &str) -> Option<&Member> {
        self.by_github_repo(full_name).or_else(|| (!self.is_many() && !self.any_github_forge()).then(|| &self.0[0]))
    }

    /// The repos a chat command goes to: a rollback to those whose policies act on it, an
    /// approval or cancellation to the repo holding the rollback, the rest (status, freezes,
    /// the kill switch, releases) to every repo.
    pub fn route_command(&self, request: &ChatRequest, now: jiff::Timestamp) -> Vec<&Member> {
        match &request.command {
            Command::Rollback { service, env, .. } => {
                let env = env.as_deref().unwrap_or(&request.default_env);
                let event = Event::request(
                    crate::domain::event::Source::Chatops,
                    service,
                    env,
                    &request.principal.id,
                    None,
                    now,
                    &request.request_id,
                );
                self.route(&event)
            }
            Command::Approve { id: Some(id) }
            | Command::Cancel { id: Some(id) }
            | Command::Continue { id }
            | Command::Abort { id, .. } => self.holding(id),
            _ => self.0.iter().collect(),
        }
    }

    /// Asks every repo's writer to read its config, policies and templates again, each on its
    /// own: one refusing keeps its own config and does not stop the others taking theirs. What
    /// each said, by repo.
    pub async fn reload(&self) -> Vec<(Option<String>, Reload)> {
        let mut said = Vec::new();
        for m in self.0.iter() {
            let (reply, rx) = tokio::sync::oneshot::channel();
            let r = if m.handle.submit(Job::Reload { reply }).is_err() {
                Reload::Busy("the writer is busy; try again")
            } else {
                match rx.await {
                    Ok(JobResult::Note(note)) => Reload::Done(note),
                    Ok(JobResult::Failed { message, .. }) => Reload::Refused(message),
                    _ => Reload::Busy("the writer stopped"),
                }
            };
            said.push((m.name.clone(), r));
        }
        said
    }

    /// Why the fleet is not ready, naming the repo, while any of its repos is not.
    pub fn not_ready(&self) -> Option<String> {
        self.0.iter().find(|m| !m.handle.shared().ready()).map(|m| {
            let shared = m.handle.shared();
            let why = shared
                .origin_error()
                .or_else(|| shared.policies_pending())
                .unwrap_or_else(|| "the config repo has not been fetched yet".into());
            match &m.name {
                Some(n) => format!("repo {n}: {why}"),
                None => why,
            }
        })
    }
}

/// What one repo's writer said to a reload.
pub enum Reload {
    Done(String),
    /// The new config was refused; the one in force stays.
    Refused(String),
    /// The writer could not take the request.
    Busy(&'static str),
}

/// The replies of the repos a command went to, as one; with several repos served, each line
/// is led by its repo's name, even when one repo answered.
pub(crate) fn combine(replies: Vec<(Option<String>, Reply)>) -> Option<Reply> {
    if replies.iter().all(|(name, _)| name.is_none()) {
        return replies.into_iter().next().map(|(_, r)| r);
    }
    let text = replies
        .iter()
        .map(|(name, r)| format!("[{}] {}", name.as_deref().unwrap_or("-"), r.text))
        .collect::<Vec<_>>()
        .join("\n");
    Some(Reply { text, public: replies.iter().any(|(_, r)| r.public), ok: replies.iter().all(|(_, r)| r.ok) })
}
