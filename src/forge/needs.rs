//! What the GitHub forge must be granted for the config and policies in force, each need with
//! the feature that has it, and how that compares with what GitHub says is granted
//! (`rollbackd check --forge`). A missing grant fails silently on GitHub's side (an event never
//! arrives, a merge is refused), so it is named here instead.

use super::github::Grants;
use crate::config::Config;
use crate::domain::policy::{MergeMethod, PolicySet};

/// One permission (as GitHub names it in an App's settings), the level, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Need {
    pub permission: &'static str,
    pub write: bool,
    pub why: String,
    /// Without it rollbackd cannot do its job at all (an error, not a warning).
    pub essential: bool,
}

/// A webhook event the App must subscribe to, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EventNeed {
    pub event: &'static str,
    pub why: String,
}

fn need(permission: &'static str, write: bool, why: &str, essential: bool) -> Need {
    Need { permission, write, why: why.to_string(), essential }
}

pub(crate) fn permissions(config: &Config, set: &PolicySet) -> Vec<Need> {
    let mut needs = vec![
        need("contents", true, "push rollback commits, tags, notes and proposal branches; merge", true),
        need("pull_requests", true, "open, merge and close proposal pull requests", true),
        need("issues", true, "comment and react on pull requests, label them, open follow-up issues", true),
    ];
    let policies = &set.policies;
    if policies.iter().any(|p| !p.review.required_checks.is_empty()) {
        needs.push(need("checks", false, "review.required_checks: read check runs", false));
        needs.push(need("statuses", false, "review.required_checks: read commit statuses", false));
    }
    if config.policies.repo_path().is_some() {
        needs.push(need("checks", true, "policies.repo_path: report refused policy changes as check runs", false));
    }
    if config.sources.github.is_some() && policies.iter().any(|p| p.hold) {
        needs.push(need("checks", true, "hold: the rollbackd/gate check run on pull requests", false));
    }
    if let Some(src) = &config.sources.github {
        if !src.workflows.is_empty() {
            needs.push(need("actions", false, "sources.github.workflows: receive workflow_run deliveries", false));
        }
        needs.push(need("deployments", false, "sources.github: receive deployment_status deliveries", false));
    }
    // review.teams needs nothing more: `POST .../requested_reviewers` takes team slugs with Pull
    // requests write alone; nor does `review.reviewers: [codeowners]`, which only requests.
    // `codeowners` that admits people asks GitHub whom the teams CODEOWNERS names hold.
    let judges = policies.iter().any(|p| {
        let c = &p.chatops;
        c.allow.iter().chain(&c.approve).chain(&c.emergency).any(crate::domain::principal::Rule::is_codeowners)
    });
    if judges {
        needs.push(need(
            "members",
            false,
            "codeowners in chatops: learn who is in the teams CODEOWNERS names (without it, only \
             directory.github_teams says)",
            false,
        ));
    }
    let workflows = policies
        .iter()
        .any(|p| p.target.paths.iter().any(|path| p.path_reaches(&path.value.0, ".github/workflows/deploy.yml")));
    if workflows {
        needs.push(need(
            "workflows",
            true,
            "a target path covers .github/workflows: GitHub refuses such pushes without it",
            false,
        ));
    }
    needs
}

pub(crate) fn events(config: &Config, set: &PolicySet) -> Vec<EventNeed> {
    let mut out = vec![
        EventNeed { event: "issue_comment", why: "/rollback commands on pull requests".into() },
        EventNeed {
            event: "pull_request",
            why: "proposals merged or closed by hand; the rollbackd/gate check run".into(),
        },
    ];
    if let Some(src) = &config.sources.github {
        if !src.workflows.is_empty() {
            out.push(EventNeed { event: "workflow_run", why: "sources.github.workflows".into() });
        }
        out.push(EventNeed {
            event: "deployment_status",
            why: "sources.github: failed and successful deployments".into(),
        });
        if set.policies.iter().any(|p| p.review.auto_merge && !p.review.required_checks.is_empty()) {
            out.push(EventNeed { event: "check_suite", why: "review.auto_merge with required_checks".into() });
        }
    }
    out
}

/// Each problem: (`true` for an error, the message).
pub(crate) fn compare(config: &Config, set: &PolicySet, grants: &Grants) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    for p in &set.policies {
        let method = match p.review.merge {
            MergeMethod::Merge => "merge",
            MergeMethod::Squash => "squash",
            MergeMethod::Rebase => "rebase",
        };
        let proposes = p.action.mode == crate::domain::policy::Mode::PullRequest
            || p.guards.on_violation == crate::OnViolation::Propose;
        if proposes && !grants.merge_methods.iter().any(|m| m == method) {
            out.push((
                true,
                format!(
                    "policy {}: review.merge is {method}, which the repository does not allow (it allows: {}); \
                     allow it in the repository's settings or change review.merge",
                    p.name(),
                    grants.merge_methods.join(", ")
                ),
            ));
        }
    }
    if grants.token_can_push == Some(false) && grants.app_permissions.is_none() {
        out.push((true, "the token cannot push to the config repo (permissions.push is false)".into()));
    }
    if let Some(granted) = &grants.app_permissions {
        for n in permissions(config, set) {
            let level = granted.get(n.permission).map(String::as_str);
            let enough = match level {
                Some("write" | "admin") => true,
                Some("read") => !n.write,
                _ => false,
            };
            if !enough {
                let want = if n.write { "Read and write" } else { "Read-only" };
                let has = level.unwrap_or("none");
                out.push((
                    n.essential,
                    format!("the App needs {} permission {want} (has {has}) to {}", n.permission, n.why),
                ));
            }
        }
    }
    if let Some(subscribed) = &grants.app_events {
        for e in events(config, set) {
            if !subscribed.iter().any(|s| s == e.event) {
                out.push((
                    false,
                    format!("the App does not subscribe to {} events: {} will not arrive", e.event, e.why),
                ));
            }
        }
    }
    out
}
