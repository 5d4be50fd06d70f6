//! Where proposals live. `local` (the default): a proposal is a branch on the origin and
//! approving merges it there. `github`: the branch gets a pull request, with labels, reviewers and
//! a body that explains the rollback; approving merges it through GitHub's API.

pub mod github;

use serde::Deserialize;

pub use github::{GithubForge, Pr};

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ForgeConfig {
    #[default]
    Local,
    Github(GithubConfig),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubConfig {
    /// API base URL: `https://api.github.com`, or GitHub Enterprise's `https://host/api/v3`.
    #[serde(default = "default_api_url")]
    pub api_url: String,
    pub owner: String,
    pub repo: String,
    /// Env var holding a token (a PAT or an installation token).
    #[serde(default)]
    pub token_env: Option<String>,
    /// Or a file holding it (a mounted secret).
    #[serde(default)]
    pub token_file: Option<std::path::PathBuf>,
    /// Or authenticate as a GitHub App: its id, its private key, and the installation (looked up
    /// for owner/repo when left out). Installation tokens are refreshed before they expire.
    #[serde(default)]
    pub app_id: Option<u64>,
    #[serde(default)]
    pub private_key_file: Option<std::path::PathBuf>,
    #[serde(default)]
    pub installation_id: Option<u64>,
}

fn default_api_url() -> String {
    "https://api.github.com".into()
}

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
