//! `POST /webhooks/github`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use tokio::sync::oneshot;
use tracing::info;

use super::{Answer, AppState, auth, error, is_json, not_json, respond};
use crate::domain::event::Source;
use crate::domain::principal::is_github_login;
use crate::domain::principal::{ForgeTeams, Principal};
use crate::ingest::github;
use crate::metrics;
use crate::worker::Job;

pub(super) async fn github_webhook(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let Some(gh) = &st.0.github else { return error(StatusCode::NOT_FOUND, "no such route") };
    let sig = headers.get("x-hub-signature-256").and_then(|v| v.to_str().ok());
    // The signature covers the body, so it is checked after reading; a request without one is
    // turned away before a byte of its body is buffered.
    if !auth::github_signature_present(sig) {
        metrics::auth_failure("github", "no X-Hub-Signature-256");
        return error(StatusCode::UNAUTHORIZED, "missing or wrong X-Hub-Signature-256");
    }
    let body = match st.read_body(body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    // The signature is checked on the raw bytes before anything else looks at them.
    if !auth::github_signature(sig, &body, &gh.secrets) {
        metrics::auth_failure("github", "wrong X-Hub-Signature-256");
        return error(StatusCode::UNAUTHORIZED, "missing or wrong X-Hub-Signature-256");
    }
    let Some(event_name) = headers.get("x-github-event").and_then(|v| v.to_str().ok()) else {
        return error(StatusCode::BAD_REQUEST, "missing X-GitHub-Event header");
    };
    // GitHub's delivery ids are GUIDs; anything else is not remembered (and not echoed).
    let delivery = headers
        .get("x-github-delivery")
        .and_then(|v| v.to_str().ok())
        .filter(|d| !d.is_empty() && d.len() <= 64 && d.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .map(str::to_string);
    if !is_json(&headers) {
        return not_json();
    }
    let parsed = match github::parse(event_name, &body, &gh.workflows, st.0.clock.now()) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    info!(event = event_name, delivery = delivery.as_deref().unwrap_or("-"), "GitHub delivery");
    let shown = delivery.clone().unwrap_or_else(|| "-".into());
    let ignored = |reason: String| {
        let a = Answer::new(format!("github:{shown}"), "ignored", reason);
        metrics::received(Source::Github, "ignored");
        respond(StatusCode::OK, vec![a])
    };
    let (trigger, members, make) = match route(&st, parsed) {
        Routed::Ignored(reason) => return ignored(reason),
        Routed::Event(event) => {
            let p = st.dispatch_event(event);
            return st.collect(Source::Github, p).await;
        }
        Routed::Jobs(trigger, members, make) => (trigger, members, make),
        Routed::Comment { trigger, member, comment, judged } => {
            // The sender's teams, as GitHub says, asked here: never by the writer.
            let teams = match judged {
                true => st.forge_teams(member, &Principal::new(format!("github:{}", comment.sender))).await,
                false => ForgeTeams::default(),
            };
            // Which proposal the pull request is, asked here too; GitHub not saying for now is
            // a 503 (the delivery is not taken, so GitHub's redelivery brings it again).
            let proposal = match st.proposal_of(member, &comment).await {
                Ok(proposal) => proposal,
                Err(why) => return error(StatusCode::SERVICE_UNAVAILABLE, &why),
            };
            let directory = st.0.directory.clone();
            let make: MakeJob = Box::new(move |reply| Job::GithubComment {
                comment: Box::new(comment.clone()),
                directory: Box::new(directory.clone()),
                teams: Box::new(teams.clone()),
                proposal: proposal.clone(),
                reply,
            });
            (trigger, vec![member], make)
        }
    };
    if let Some(id) = &delivery
        && !st.0.deliveries.reserve(&format!("github/{id}"))
    {
        return ignored(format!("delivery {id} was received before"));
    }
    let pending = members
        .into_iter()
        .map(|m| {
            let (reply, rx) = oneshot::channel();
            st.submit(m, trigger.clone(), make(reply), rx)
        })
        .collect();
    let resp = st.collect(Source::Github, pending).await;
    release_if_retry(&st, delivery.as_deref(), &resp);
    resp
}

type MakeJob = Box<dyn Fn(oneshot::Sender<crate::worker::JobResult>) -> Job + Send>;

/// Where a delivery goes: nowhere (and why), through the policies as an event, or as a job to
/// the writers of the config repos it names.
enum Routed<'a> {
    Ignored(String),
    Event(crate::domain::event::Event),
    Jobs(String, Vec<&'a crate::fleet::Member>, MakeJob),
    /// A command in a comment on a pull request, for the writer of `member`; `judged`: it may be
    /// decided by `codeowners`, so the sender's teams are asked of GitHub first.
    Comment {
        trigger: String,
        member: &'a crate::fleet::Member,
        comment: crate::domain::event::Comment,
        judged: bool,
    },
}

fn route(st: &AppState, parsed: github::GithubEvent) -> Routed<'_> {
    let fleet = &st.0.fleet;
    match parsed {
        github::GithubEvent::Ping => Routed::Ignored("pong: the webhook reaches rollbackd".into()),
        github::GithubEvent::Ignored(reason) => Routed::Ignored(reason),
        github::GithubEvent::Failure(event) => Routed::Event(event),
        github::GithubEvent::Comment(comment) => {
            if !fleet.any_github_forge() {
                return Routed::Ignored("comments are answered only with forge.kind: github".into());
            }
            if comment.sender_is_bot {
                return Routed::Ignored(format!("comment by a bot ({}): bots do not give commands", comment.sender));
            }
            let Some(member) = fleet.by_github_repo(&comment.repository) else {
                return Routed::Ignored("comment on a repository other than the config repo".into());
            };
            if !comment.is_pull_request {
                return Routed::Ignored("commands are read only on rollback pull requests".into());
            }
            if !is_github_login(&comment.sender) {
                return Routed::Ignored("the sender is not a GitHub login".into());
            }
            let command = crate::chat::command::parse_markdown(&comment.body);
            if matches!(command, Ok(None)) {
                return Routed::Ignored("no /rollback command in the comment".into());
            }
            let judged = command.is_ok_and(|c| c.as_ref().is_some_and(super::judged_by_owners));
            let trigger = format!("github:comment/{}", comment.id);
            Routed::Comment { trigger, member, comment, judged }
        }
        github::GithubEvent::ChecksPassed { branch } => {
            let trigger = format!("github:checks/{branch}");
            let members = fleet.proposing(&branch);
            Routed::Jobs(trigger, members, Box::new(move |reply| Job::ChecksPassed { branch: branch.clone(), reply }))
        }
        github::GithubEvent::PullRequestClosed { repository, branch, merged_sha, head_sha, by } => {
            let Some(member) = fleet.config_repo(&repository) else {
                return Routed::Ignored("pull request on a repository other than the config repo".into());
            };
            if crate::domain::rollback::RollbackRef::parse_branch(&branch).is_none() {
                return Routed::Ignored(format!(
                    "pull request from {} is not a rollback proposal",
                    crate::domain::ident::shown(&branch)
                ));
            }
            let trigger = format!("github:pull_request/{branch}");
            let make: MakeJob = Box::new(move |reply| Job::PullRequestClosed {
                branch: branch.clone(),
                merged_sha: merged_sha.clone(),
                head_sha: head_sha.clone(),
                by: by.clone(),
                reply,
            });
            Routed::Jobs(trigger, vec![member], make)
        }
        github::GithubEvent::PullRequestChanged { repository, number, head_sha, base } => {
            if !fleet.any_github_forge() {
                return Routed::Ignored("pull requests are gated only with forge.kind: github".into());
            }
            let Some(member) = fleet.by_github_repo(&repository) else {
                return Routed::Ignored("pull request on a repository other than the config repo".into());
            };
            let trigger = format!("github:gate/{number}/{head_sha}");
            let make: MakeJob = Box::new(move |reply| Job::GatePullRequest {
                number,
                head_sha: head_sha.clone(),
                base: base.clone(),
                reply,
            });
            Routed::Jobs(trigger, vec![member], make)
        }
        github::GithubEvent::Pushed { repository, git_ref } => {
            let Some(member) = fleet.by_github_repo(&repository) else {
                return Routed::Ignored("a push to a repository other than the config repo".into());
            };
            let trigger = format!("github:push/{git_ref}");
            Routed::Jobs(trigger, vec![member], Box::new(move |reply| Job::Fetch { git_ref: git_ref.clone(), reply }))
        }
        github::GithubEvent::DeploymentSucceeded(event) => {
            let trigger = event.trigger();
            let members = fleet.route_known_good(&event);
            Routed::Jobs(trigger, members, Box::new(move |reply| Job::KnownGood { event: event.clone(), reply }))
        }
    }
}

fn release_if_retry(st: &AppState, delivery: Option<&str>, resp: &Response) {
    if resp.status() == StatusCode::SERVICE_UNAVAILABLE
        && let Some(id) = delivery
    {
        st.0.deliveries.release(&format!("github/{id}"));
    }
}

#[cfg(test)]
mod tests {
    use super::is_github_login;

    #[test]
    fn github_logins_and_enterprise_managed_users_are_accepted_and_nothing_else() {
        for ok in ["alice", "a-b-c", "octo-cat42", "erin_acme", "mona-lisa_octo", "x"] {
            assert!(is_github_login(ok), "{ok}");
        }
        for bad in ["", "-alice", "a_", "_acme", "a__b", "a_b_c", "a b", "a/b", "alice[bot]", "a_b-c", &"a".repeat(40)]
        {
            assert!(!is_github_login(bad), "{bad}");
        }
    }
}
