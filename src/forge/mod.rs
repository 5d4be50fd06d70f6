//! Where proposals live. `local` (the default): a proposal is a branch on the origin and
//! approving merges it there. `github`: the branch gets a pull request, with labels, reviewers and
//! a body that explains the rollback; approving merges it through GitHub's API.

mod api;
pub(crate) mod drill_ci;
pub(crate) mod github;
pub(crate) mod needs;
pub(crate) mod teams;

pub(crate) use crate::config::{ForgeConfig, GithubConfig};
pub(crate) use github::{GithubForge, HookDelivery, Pr};

use crate::support::secret::SecretString;

#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    #[error("GitHub API {method} {path}: {status}: {message}")]
    Api { method: &'static str, path: String, status: u16, message: String },
    #[error("cannot reach the GitHub API: {0}")]
    Unreachable(String),
    /// GitHub's rate limit, for longer than one call waits.
    #[error("GitHub API {path}: rate limited for {}s", retry_after.as_secs())]
    RateLimited { path: String, retry_after: std::time::Duration },
    /// GitHub will not merge, for a reason a person must act on (a merge method the repository
    /// does not allow, branch protection): what to change.
    #[error("{0}")]
    MergeRefused(String),
    #[error("forge configuration: {0}")]
    Config(String),
}

impl ForgeError {
    /// GitHub refused our credentials (401, or 403 without a rate limit).
    pub fn is_auth(&self) -> bool {
        matches!(self, ForgeError::Api { status: 401 | 403, .. })
    }

    /// Worth retrying later: the API was unreachable or failed on its side.
    pub fn is_transient(&self) -> bool {
        match self {
            ForgeError::Unreachable(_) | ForgeError::RateLimited { .. } => true,
            ForgeError::MergeRefused(_) => false,
            ForgeError::Api { status, .. } => *status >= 500 || *status == 429,
            ForgeError::Config(_) => false,
        }
    }
}

/// A proposal's pull request, as the engine asks for it.
#[derive(Clone, Copy, Debug)]
pub struct ProposalRequest<'a> {
    pub branch: &'a str,
    pub base: &'a str,
    pub title: &'a str,
    pub body: &'a str,
    pub labels: &'a [String],
    pub reviewers: &'a [String],
    pub teams: &'a [String],
}

/// Where proposals live, and everything the engine asks of it. The local forge keeps a
/// proposal as a branch of the origin and has no conversation to say things in; the GitHub forge
/// opens a pull request for it and talks there.
pub enum Forge {
    Local,
    Github(Box<GithubForge>),
}

impl Forge {
    pub fn from_config(config: &ForgeConfig) -> Result<Self, ForgeError> {
        Ok(match config {
            ForgeConfig::Local => Forge::Local,
            ForgeConfig::Github(g) => Forge::Github(Box::new(GithubForge::new(g)?)),
        })
    }

    /// The GitHub forge itself, for what exists only there (reactions and replies to comments).
    pub fn github(&self) -> Option<&GithubForge> {
        match self {
            Forge::Github(g) => Some(g),
            Forge::Local => None,
        }
    }

    /// A token for git over https when the forge mints them (a GitHub App installation).
    pub fn git_token(&self) -> Result<Option<SecretString>, ForgeError> {
        match self {
            Forge::Github(gh) => gh.git_token(),
            Forge::Local => Ok(None),
        }
    }

    /// Opens (or finds) the pull request of a proposal branch. `None` for the local forge: the
    /// branch is the proposal.
    pub fn propose(&self, p: &ProposalRequest<'_>) -> Result<Option<Pr>, ForgeError> {
        let Forge::Github(gh) = self else { return Ok(None) };
        if let Some(pr) = gh.find_open_pr(p.branch)? {
            return Ok(Some(pr));
        }
        gh.open_pr(&ProposalRequest { title: p.title.trim(), ..*p }).map(Some)
    }

    /// Says `text` on the conversation of the proposal on `branch`. `Ok(false)` where there is
    /// none (the local forge, or no open pull request).
    pub fn announce(&self, branch: &str, text: &str) -> Result<bool, ForgeError> {
        let Forge::Github(gh) = self else { return Ok(false) };
        match gh.find_open_pr(branch)? {
            Some(pr) => gh.comment(pr.number, text).map(|_| true),
            None => Ok(false),
        }
    }

    /// Reports on `commit` how the policies it carries fared: `errors` (each
    /// `path:line:col: error: message`) refused, or none and `in_force` policies switched to.
    /// Nothing for the local forge.
    pub fn report_policies(&self, commit: &str, errors: &[String], in_force: usize) -> Result<(), ForgeError> {
        let Forge::Github(gh) = self else { return Ok(()) };
        gh.report_policies(commit, errors, in_force)
    }

    /// Reports `rollbackd gate` on pull request `number` at `commit`: each violation is
    /// `path: what`; `plans`, what rollbackd would do if the change went bad after merge, goes
    /// in the summary after them. Nothing for the local forge.
    pub fn report_gate(
        &self,
        number: u64,
        commit: &str,
        violations: &[String],
        plans: &[crate::domain::change_plan::ChangePlan],
    ) -> Result<(), ForgeError> {
        let Forge::Github(gh) = self else { return Ok(()) };
        gh.report_gate(number, commit, violations, plans)
    }

    /// A pull request the gate would not read (over a bound): a failing `rollbackd/gate` saying
    /// `why` (a comment when the check run is refused).
    pub fn report_gate_refused(&self, number: u64, commit: &str, why: &str) -> Result<(), ForgeError> {
        let Forge::Github(gh) = self else { return Ok(()) };
        gh.report_gate_refused(number, commit, why)
    }

    /// Closes the proposal's pull request, saying why (the local forge has none to close).
    pub fn close(&self, branch: &str, text: &str) -> Result<(), ForgeError> {
        let Forge::Github(gh) = self else { return Ok(()) };
        if let Some(pr) = gh.find_open_pr(branch)? {
            gh.comment(pr.number, text)?;
            gh.close(pr.number)?;
        }
        Ok(())
    }

    /// Opens an issue for people to follow up (an emergency rollback's review). `None` where
    /// the forge has no issues: `status` and `history` mark it instead.
    pub fn open_issue(&self, title: &str, body: &str, labels: &[String]) -> Result<Option<String>, ForgeError> {
        match self {
            Forge::Github(gh) => gh.open_issue(title, body, labels).map(Some),
            Forge::Local => Ok(None),
        }
    }

    /// The required checks on `sha` that have not succeeded yet.
    pub fn checks_pending(&self, sha: &str, required: &[String]) -> Result<Vec<String>, ForgeError> {
        match self {
            Forge::Github(gh) => gh.checks_pending(sha, required),
            Forge::Local => Err(ForgeError::Config("required_checks need forge.kind: github".into())),
        }
    }
}
