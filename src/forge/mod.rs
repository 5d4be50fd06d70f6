//! Where proposals live. `local` (the default): a proposal is a branch on the origin and
//! approving merges it there. `github`: the branch gets a pull request, with labels, reviewers and
//! a body that explains the rollback; approving merges it through GitHub's API.

pub mod github;

pub use crate::config::{ForgeConfig, GithubConfig};
pub use github::{GithubForge, Pr};

#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    #[error("GitHub API {method} {path}: {status}: {message}")]
    Api { method: &'static str, path: String, status: u16, message: String },
    #[error("cannot reach the GitHub API: {0}")]
    Unreachable(String),
    #[error("forge configuration: {0}")]
    Config(String),
}

impl ForgeError {
    /// Worth retrying later: the API was unreachable or failed on its side.
    pub fn is_transient(&self) -> bool {
        match self {
            ForgeError::Unreachable(_) => true,
            ForgeError::Api { status, .. } => *status >= 500 || *status == 429,
            ForgeError::Config(_) => false,
        }
    }
}

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

    pub fn github(&self) -> Option<&GithubForge> {
        match self {
            Forge::Github(g) => Some(g),
            Forge::Local => None,
        }
    }
}
