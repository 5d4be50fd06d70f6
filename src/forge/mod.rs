//! Where proposals live. `local` (the default): a proposal is a branch on the origin and
//! approving merges it there. `github`: the branch gets a pull request, with labels, reviewers and
//! a body that explains the rollback; approving merges it through GitHub's API.

mod api;
pub(crate) mod drill_ci;
pub(crate) mod github;
mod local;
pub(crate) mod needs;
mod outbox;
pub(crate) mod teams;

pub(crate) use crate::config::{ForgeConfig, GithubConfig};
pub(crate) use github::{CiChecks, GithubForge, HookDelivery, Pr, TeamMembership};
pub(crate) use local::LocalForge;
pub(crate) use outbox::{Outbox, Proposal};

use crate::domain::change_plan::ChangePlan;
use crate::domain::policy::MergeMethod;
use crate::domain::rollback::RollbackRef;

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

/// Where proposals live, and everything rollbackd asks of it: the port the engine talks to. The
/// local forge ([`LocalForge`]) keeps a proposal as a branch of the origin and has no
/// conversation to say things in, no checks and no teams; the GitHub forge ([`GithubForge`])
/// opens a pull request for it and talks there. Every call may wait on the network, so the
/// writer makes only the ones a write needs (merging through the forge, the checks an
/// `auto_merge` waits for); what follows a write goes to the [`Outbox`], on a thread of its own.
pub trait Forge: Send + Sync + std::fmt::Debug {
    /// Whether proposals are pull requests on the forge, with checks, teams and a
    /// conversation (GitHub); `false` when the branch is the proposal (local).
    fn hosts_pull_requests(&self) -> bool;

    /// A token for git over https when the forge mints them (a GitHub App installation).
    fn git_token(&self) -> Result<Option<SecretString>, ForgeError>;

    /// Opens (or finds) the pull request of a proposal branch. `None` where the branch is the
    /// proposal.
    fn propose(&self, p: &ProposalRequest<'_>) -> Result<Option<Pr>, ForgeError>;

    /// Says `text` on the conversation of the proposal on `branch`. `Ok(false)` where there is
    /// none (the local forge, or no open pull request).
    fn announce(&self, branch: &str, text: &str) -> Result<bool, ForgeError>;

    /// Says `text` on pull request (or issue) `number`.
    fn comment(&self, number: u64, text: &str) -> Result<(), ForgeError>;

    /// Reacts to comment `comment_id` (`eyes`, `rocket`, `confused`).
    fn react(&self, comment_id: u64, content: &str) -> Result<(), ForgeError>;

    /// The rollback proposal pull request `number` is, if it is one: its branch lives in the
    /// config repo itself (not a fork) and is named like one of ours.
    fn rollback_proposal(&self, number: u64) -> Result<Option<RollbackRef>, ForgeError>;

    /// Merges pull request `pr` at exactly `sha` with `method`; the merged commit's sha.
    /// `MergeRefused` for what a person must change (branch protection, a method not allowed).
    fn merge(&self, pr: &Pr, method: MergeMethod, sha: &str, message: &str) -> Result<String, ForgeError>;

    /// Closes the proposal's pull request, saying why (the local forge has none to close).
    fn close(&self, branch: &str, text: &str) -> Result<(), ForgeError>;

    /// Opens an issue for people to follow up (an emergency rollback's review). `None` where
    /// the forge has no issues: `status` and `history` mark it instead.
    fn open_issue(&self, title: &str, body: &str, labels: &[String]) -> Result<Option<String>, ForgeError>;

    /// Reports on `commit` how the policies it carries fared: `errors` (each
    /// `path:line:col: error: message`) refused, or none and `in_force` policies switched to.
    fn report_policies(&self, commit: &str, errors: &[String], in_force: usize) -> Result<(), ForgeError>;

    /// Reports `rollbackd gate` on pull request `number` at `commit`: each violation is
    /// `path: what`; `plans`, what rollbackd would do if the change went bad after merge, goes
    /// in the summary after them.
    fn report_gate(
        &self,
        number: u64,
        commit: &str,
        violations: &[String],
        plans: &[ChangePlan],
    ) -> Result<(), ForgeError>;

    /// A pull request the gate would not read (over a bound): a failing `rollbackd/gate` saying
    /// `why` (a comment when the check run is refused).
    fn report_gate_refused(&self, number: u64, commit: &str, why: &str) -> Result<(), ForgeError>;

    /// The required checks on `sha` that have not succeeded yet.
    fn checks_pending(&self, sha: &str, required: &[String]) -> Result<Vec<String>, ForgeError>;

    /// What the repository's CI says of `sha`, check by check.
    fn ci_of(&self, sha: &str) -> Result<CiChecks, ForgeError>;

    /// Whether `login` is in `team` (`org/slug`).
    fn team_membership(&self, team: &str, login: &str) -> Result<TeamMembership, ForgeError>;

    /// Whether rollbackd can see the forge's webhook deliveries (only a GitHub App can).
    fn sees_deliveries(&self) -> bool;

    /// The forge's failed webhook deliveries since `since`, newest first: `None` where rollbackd
    /// cannot see them.
    fn deliveries(&self, since: jiff::Timestamp) -> Option<Result<Vec<HookDelivery>, ForgeError>>;

    /// Asks the forge to send delivery `id` again.
    fn redeliver(&self, id: u64) -> Result<(), ForgeError>;

    /// The GitHub adapter itself, for the two edges that exist only there (the `github_issue`
    /// channel of notifications, `check --forge`'s grants). The engine asks only through the
    /// methods above.
    fn github(&self) -> Option<&GithubForge> {
        None
    }
}

/// The forge `config` names.
pub(crate) fn from_config(config: &ForgeConfig) -> Result<std::sync::Arc<dyn Forge>, ForgeError> {
    Ok(match config {
        ForgeConfig::Local => std::sync::Arc::new(LocalForge),
        ForgeConfig::Github(g) => std::sync::Arc::new(GithubForge::new(g)?),
    })
}
