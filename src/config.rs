//! `rollbackd.yaml`: where the config repo is, where the service keeps its state, and how it writes.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::diagnostic::Diagnostic;
use crate::duration::Duration;
use crate::secret::SecretString;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub repo: RepoConfig,
    /// Where the service keeps its bare mirror of the config repo. Default: `./data`.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Directory of `*.yaml` policy files. Default: `policies/`.
    #[serde(default = "default_policies")]
    pub policies: PathBuf,
    /// Directory of the message templates. Default: `templates/`.
    #[serde(default = "default_templates")]
    pub templates: PathBuf,
    #[serde(default)]
    pub identity: Identity,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub git: GitConfig,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    /// Local path, `file://`, `https://` or `ssh://` / `git@host:path` URL of the config repo.
    pub url: String,
    /// The branch the deploy tooling watches. Default: `main`.
    #[serde(default = "default_branch")]
    pub branch: String,
    /// Name of the env var holding an https token (never the token itself).
    #[serde(default)]
    pub token_env: Option<String>,
    /// Private key for ssh remotes; without it the ssh agent is asked.
    #[serde(default)]
    pub ssh_key_file: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    pub name: String,
    pub email: String,
}

impl Default for Identity {
    fn default() -> Self {
        Identity { name: "rollbackd".into(), email: "rollbackd@localhost".into() }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// How far back history is read for dedupe, guards and `history`. Default: `30d`.
    #[serde(default = "default_window")]
    pub window: Duration,
    /// At most this many commits are read, whichever limit comes first. Default: 10000.
    #[serde(default = "default_max_commits")]
    pub max_commits: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig { window: default_window(), max_commits: default_max_commits() }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitConfig {
    /// A fetch younger than this is reused. Default: `2s`.
    #[serde(default = "default_fetch_freshness")]
    pub fetch_freshness: Duration,
    /// Retries when the branch moved between fetch and push. Default: 5.
    #[serde(default = "default_push_retries")]
    pub push_retries: u32,
}

impl Default for GitConfig {
    fn default() -> Self {
        GitConfig { fetch_freshness: default_fetch_freshness(), push_retries: default_push_retries() }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}
fn default_policies() -> PathBuf {
    PathBuf::from("policies")
}
fn default_templates() -> PathBuf {
    PathBuf::from("templates")
}
fn default_branch() -> String {
    "main".into()
}
fn default_window() -> Duration {
    Duration::from_secs(30 * 86_400)
}
fn default_max_commits() -> usize {
    10_000
}
fn default_fetch_freshness() -> Duration {
    Duration::from_secs(2)
}
fn default_push_retries() -> u32 {
    5
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read config: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Invalid(Diagnostic),
    #[error("{path}: env var {var} (repo.token_env) is not set")]
    MissingSecret { path: PathBuf, var: String },
}

/// Secrets read from the environment at load time, so handlers never read env vars.
#[derive(Clone, Debug, Default)]
pub struct Secrets {
    pub git_token: Option<SecretString>,
}

impl Config {
    /// Reads the file; relative paths inside it are taken relative to the file's directory.
    pub fn load(path: &Path) -> Result<(Config, Secrets), ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let mut config: Config =
            serde_saphyr::from_str(&text).map_err(|e| ConfigError::Invalid(Diagnostic::from_yaml(path, &e)))?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_relative_to(base);
        let git_token = match &config.repo.token_env {
            Some(var) => Some(SecretString::new(
                std::env::var(var)
                    .map_err(|_| ConfigError::MissingSecret { path: path.to_path_buf(), var: var.clone() })?,
            )),
            None => None,
        };
        Ok((config, Secrets { git_token }))
    }

    fn resolve_relative_to(&mut self, base: &Path) {
        for p in [&mut self.data_dir, &mut self.policies, &mut self.templates] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let Some(k) = &mut self.repo.ssh_key_file
            && k.is_relative()
        {
            *k = base.join(&*k);
        }
        // A relative local path for the repo is relative to the config too.
        if !looks_like_url(&self.repo.url)
            && !self.repo.url.starts_with("file://")
            && Path::new(&self.repo.url).is_relative()
        {
            self.repo.url = base.join(&self.repo.url).to_string_lossy().into_owned();
        }
    }

    pub fn mirror_dir(&self) -> PathBuf {
        self.data_dir.join("mirror.git")
    }
}

/// Whether a repo URL names a network remote (`https://`, `ssh://`, `git://`, `git@host:path`)
/// rather than a path on this machine (`file://` counts as a path).
pub(crate) fn looks_like_url(s: &str) -> bool {
    (s.contains("://") && !s.starts_with("file://")) || (s.contains('@') && s.contains(':'))
}

/// The URL without any userinfo, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_userinfo() {
        assert_eq!(redact_url("https://x-access-token:s3cret@github.com/a/b.git"), "https://***@github.com/a/b.git");
        assert_eq!(redact_url("https://github.com/a/b.git"), "https://github.com/a/b.git");
        assert_eq!(redact_url("/srv/config.git"), "/srv/config.git");
        assert_eq!(redact_url("git@github.com:a/b.git"), "git@github.com:a/b.git");
    }

    #[test]
    fn unknown_keys_are_rejected_with_a_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rollbackd.yaml");
        std::fs::write(&path, "repo:\n  url: /x\n  brnch: main\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains(":3:"), "{err}");
        assert!(err.contains("brnch"), "{err}");
    }

    #[test]
    fn defaults_and_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rollbackd.yaml");
        std::fs::write(&path, "repo: { url: origin.git }\n").unwrap();
        let (c, s) = Config::load(&path).unwrap();
        assert_eq!(c.repo.branch, "main");
        assert_eq!(c.policies, dir.path().join("policies"));
        assert_eq!(c.repo.url, dir.path().join("origin.git").to_string_lossy());
        assert!(s.git_token.is_none());
        assert_eq!(c.audit.max_commits, 10_000);
    }
}
