//! `rollbackd.yaml`: where the config repo is, where the service keeps its state, and how it writes.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::support::diagnostic::Diagnostic;
use crate::support::duration::Duration;
use crate::support::secret::SecretString;

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The config repo. A file that serves several sets `repos:` instead.
    #[serde(default)]
    pub repo: RepoConfig,
    /// Several config repos on one service, each with its own branch, credentials, policies,
    /// forge and writer. Everything else in the file is shared.
    #[serde(default)]
    pub repos: Vec<RepoEntry>,
    /// Where the service keeps its bare mirror of the config repo. Default: `./data`.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Where the policy files are: a directory on disk (default `policies/`), or a directory of
    /// the config repo's branch, `{ repo_path: .rollbackd/policies }`.
    #[serde(default = "default_policies")]
    pub policies: PolicySource,
    /// Directory of the message templates. Default: `templates/`.
    #[serde(default = "default_templates")]
    pub templates: PathBuf,
    #[serde(default)]
    pub identity: Identity,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub git: GitConfig,
    /// Address `rollbackd serve` listens on. Default: `127.0.0.1:8080`.
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default)]
    pub server: ServerConfig,
    /// Webhook senders. A sender that is not configured has no route (404), never an open one.
    #[serde(default)]
    pub sources: Sources,
    /// Slack user groups and GitHub teams, for `chatops` rules that name them.
    #[serde(default)]
    pub directory: crate::domain::principal::Directory,
    /// Where proposals live: `{ kind: local }` (default) or `{ kind: github, ... }`.
    #[serde(default)]
    pub forge: ForgeConfig,
    /// What values from senders must look like, and how much of them is read.
    #[serde(default)]
    pub input: crate::domain::ident::InputConfig,
    /// Where people are told what happened: named channels a policy's `notify` routes to.
    #[serde(default)]
    pub notify: NotifyConfig,
    /// The Prometheus that `verify.query` asks.
    #[serde(default)]
    pub prometheus: Option<PrometheusConfig>,
    /// Where `/metrics` and `/api/v1/*` are served, and who may read them.
    #[serde(default)]
    pub admin: AdminConfig,
    /// What the kill switch (`rollbackd pause`) does to automatic rollbacks.
    #[serde(default)]
    pub pause: PauseConfig,
    /// Container registries `readiness` asks whether a known-good image still exists. An
    /// image whose registry is not listed is not asked about. Default: none.
    #[serde(default)]
    pub registries: Vec<RegistryConfig>,
    /// Rollback drills `serve` runs on a schedule (`rollbackd drill` on demand). Default: none.
    #[serde(default)]
    pub drills: Option<DrillsConfig>,
    /// The file this was read from, for a reload.
    #[serde(skip)]
    pub path: PathBuf,
    /// `repos[].name` when this is one repo of a file that serves several.
    #[serde(skip)]
    pub member: Option<String>,
}

/// A config file as read: the settings its repos share (the HTTP front, the sources, the
/// server), and the config each repo's writer runs. A file with one `repo:` serves that one
/// repo, unnamed; with `repos:`, each entry laid over the rest of the file.
#[derive(Clone, Debug)]
pub struct ConfigFile {
    shared: Config,
    /// Never empty; paths resolved, each checked.
    repos: Vec<Config>,
}

/// `drills:`: each target's rollback written to its drill branch once every `every`.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DrillsConfig {
    /// How often each target is drilled, counted from its last drill. Default: `24h`.
    #[serde(default = "default_drill_every")]
    pub every: Duration,
    /// The service/env pairs to drill.
    pub targets: Vec<DrillTarget>,
}

/// One service in one environment to drill.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DrillTarget {
    pub service: String,
    pub env: String,
}

fn default_drill_every() -> Duration {
    Duration::from_secs(24 * 3600)
}

/// One entry of `repos:`. What it leaves out (`identity`, `templates`, `audit`, `git`) is
/// taken from the top of the file; `policies` it must say, since policies are what route an
/// event to a repo, and `forge` is local unless it says otherwise: a forge names one repo.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RepoEntry {
    /// Names the repo in logs, answers, `status` and `--config-repo`; also its directory under
    /// `data_dir`. Lowercase letters, digits, `.`, `_` and `-`.
    pub name: String,
    pub repo: RepoConfig,
    pub policies: PolicySource,
    #[serde(default)]
    pub forge: ForgeConfig,
    #[serde(default)]
    pub templates: Option<PathBuf>,
    #[serde(default)]
    pub identity: Option<Identity>,
    #[serde(default)]
    pub audit: Option<AuditConfig>,
    #[serde(default)]
    pub git: Option<GitConfig>,
}

/// Which keys the file sets at its top, whatever their values: with `repos:`, a top-level
/// `repo`, `policies` or `forge` would be silently unused, so it is refused instead.
#[derive(Deserialize)]
struct TopKeys {
    #[serde(default)]
    repo: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    policies: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    forge: Option<serde::de::IgnoredAny>,
}

#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseConfig {
    /// `propose` (default): automatic rollbacks become proposals while paused. `nothing`: they
    /// are denied (and said so); only people's requests write.
    #[serde(default)]
    pub automatic: PauseMode,
    /// The blast-radius breaker: pauses by itself when more services alert at once than one
    /// bad deploy explains.
    #[serde(default)]
    pub breaker: crate::domain::breaker::BreakerConfig,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PauseMode {
    #[default]
    Propose,
    Nothing,
}

/// `admin:`: the read endpoints by trust. With `listen`, they move to a listener of their own
/// (loopback or cluster-internal) and the public one serves only webhooks and health. With a
/// token, every read needs `Authorization: Bearer <token>` wherever it is served.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default)]
    pub listen: Option<String>,
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

/// `notify:`: named channels, and how hard delivery tries.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    #[serde(default)]
    pub channels: std::collections::BTreeMap<String, ChannelConfig>,
    /// Tries per message before it is given up (counted and logged). Default 5.
    #[serde(default = "default_notify_attempts")]
    pub attempts: u32,
    /// Time allowed per try. Default `10s`.
    #[serde(default = "default_notify_timeout")]
    pub timeout: Duration,
    /// Messages waiting per channel; when full, new ones are dropped (counted). Default 256.
    #[serde(default = "default_notify_queue")]
    pub queue: usize,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            channels: Default::default(),
            attempts: default_notify_attempts(),
            timeout: default_notify_timeout(),
            queue: default_notify_queue(),
        }
    }
}

fn default_notify_attempts() -> u32 {
    5
}
fn default_notify_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_notify_queue() -> usize {
    256
}

/// One notification channel. URLs and tokens that carry a secret are read from the
/// environment (`url_env`, `token_env`) and never logged.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChannelConfig {
    /// A JSON POST of the notice (for PagerDuty, Opsgenie or Teams bridges).
    Webhook {
        #[serde(default)]
        url: Option<String>,
        #[serde(default)]
        url_env: Option<String>,
    },
    /// A Slack incoming webhook.
    SlackWebhook {
        #[serde(default)]
        url: Option<String>,
        #[serde(default)]
        url_env: Option<String>,
    },
    /// Slack's `chat.postMessage` with a bot token: later messages of an incident go in the
    /// thread of its first.
    SlackApi {
        #[serde(default)]
        token_env: Option<String>,
        /// A file holding the bot token (a mounted secret).
        #[serde(default)]
        token_file: Option<PathBuf>,
        channel: String,
        #[serde(default = "default_slack_api")]
        api_url: String,
    },
    /// A comment on the rollback's pull request, or an issue on the config repo (one per
    /// incident, commented on after). Needs `forge.kind: github`.
    GithubIssue {},
    /// One JSON line per notice (the webhook's body), appended to `path` (relative to the
    /// config file; its directory is created). For a log shipper, or a demo with no network.
    File { path: PathBuf },
}

fn default_slack_api() -> String {
    "https://slack.com/api".into()
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PrometheusConfig {
    /// Base URL, e.g. `http://prometheus:9090`.
    pub url: String,
    /// Time allowed per query. Default `10s`.
    #[serde(default = "default_notify_timeout")]
    pub timeout: Duration,
}

/// One registry in `registries:`.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// The host as images name it: `ghcr.io`, `registry.example.com:5000`.
    pub host: String,
    /// Where its API is, when not `https://<host>` (e.g. `http://127.0.0.1:5000`).
    #[serde(default)]
    pub url: Option<String>,
    /// An env var holding a ready bearer token, sent as it is on every question (a token the
    /// registry itself checks, such as a JWT its token service minted). Not with `username`.
    /// Default: none.
    #[serde(default)]
    pub token_env: Option<String>,
    /// A user name for the registry: sent with the password as Basic credentials to the token
    /// service its `WWW-Authenticate: Bearer` challenge names, or to the registry itself when it
    /// asks for Basic (htpasswd). Needs `password_env` or `password_file`. Default: none (tokens
    /// are asked for anonymously, as for a public image).
    #[serde(default)]
    pub username: Option<String>,
    /// An env var holding the password (or access token used as one) of `username`.
    #[serde(default)]
    pub password_env: Option<String>,
    /// A file holding the password of `username` (surrounding whitespace dropped); relative to
    /// the config file.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Time allowed per question. Default `5s`.
    #[serde(default = "default_registry_timeout")]
    pub timeout: crate::support::duration::Duration,
}

fn default_registry_timeout() -> crate::support::duration::Duration {
    crate::support::duration::Duration::from_secs(5)
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Largest request body accepted, in bytes; larger gets 413. Default: 1048576 (1 MiB).
    #[serde(default = "default_body_limit")]
    pub body_limit: usize,
    /// A request still unanswered after this gets 408. Default: `30s`.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Duration,
    /// How long a webhook waits for its rollback before answering 202. Default: `5s`.
    #[serde(default = "default_response_deadline")]
    pub response_deadline: Duration,
    /// Events waiting for the writer; when full, senders get 503 and retry. Default: 64.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// How often the mirror is fetched while idle, to see other replicas' rollbacks. Default: `30s`.
    #[serde(default = "default_refresh")]
    pub refresh_interval: Duration,
    /// Connections open at once; more wait in the kernel's backlog. Default: 1024.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A connection that has not sent a request's headers within this is closed. Default: `10s`.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: Duration,
    /// A body not received within this (after its headers passed) is 408. Default: `10s`.
    #[serde(default = "default_body_read_timeout")]
    pub body_read_timeout: Duration,
    /// Request bodies buffered at once; more wait their turn. Default: 64.
    #[serde(default = "default_max_body_reads")]
    pub max_body_reads: usize,
}

fn default_body_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_body_reads() -> usize {
    64
}

fn default_max_connections() -> usize {
    1024
}
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            body_limit: default_body_limit(),
            request_timeout: default_request_timeout(),
            response_deadline: default_response_deadline(),
            queue: default_queue(),
            refresh_interval: default_refresh(),
            max_connections: default_max_connections(),
            header_read_timeout: default_header_read_timeout(),
            body_read_timeout: default_body_read_timeout(),
            max_body_reads: default_max_body_reads(),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sources {
    #[serde(default)]
    pub alertmanager: Option<AlertmanagerSource>,
    #[serde(default)]
    pub github: Option<GithubSource>,
    #[serde(default)]
    pub slack: Option<SlackSource>,
    /// Flux's notification-controller (`POST /webhooks/flux`, provider `generic-hmac`).
    #[serde(default)]
    pub flux: Option<FluxSource>,
    /// Argo CD Notifications (`POST /webhooks/argocd`, the template in `deploy/argocd/`).
    #[serde(default)]
    pub argocd: Option<ArgocdSource>,
}

/// Flux signs each event with `X-Signature: sha256=<hex HMAC-SHA256 of the body>`.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FluxSource {
    /// Env var with comma-separated HMAC keys (the Provider's secret `token`; several, for rotation).
    #[serde(default)]
    pub hmac_secrets_env: Option<String>,
    /// File with HMAC keys, one per line or comma-separated.
    #[serde(default)]
    pub hmac_secrets_file: Option<PathBuf>,
}

/// Argo CD Notifications cannot sign: the webhook service sends `Authorization: Bearer`.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArgocdSource {
    /// Env var with comma-separated bearer tokens (several, for rotation).
    #[serde(default)]
    pub bearer_tokens_env: Option<String>,
    /// File with bearer tokens, one per line or comma-separated.
    #[serde(default)]
    pub bearer_tokens_file: Option<PathBuf>,
}

/// The `/rollback` Slack slash command.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlackSource {
    /// Env var with comma-separated signing secrets (several, for rotation).
    #[serde(default)]
    pub signing_secrets_env: Option<String>,
    #[serde(default)]
    pub signing_secrets_file: Option<PathBuf>,
    /// The env of `/rollback <service>` when none is named. Default: `prod`.
    #[serde(default = "default_env")]
    pub default_env: String,
    /// Outcomes are posted only to `response_url`s under this prefix. Default:
    /// `https://hooks.slack.com/`.
    #[serde(default = "default_response_url_prefix")]
    pub response_url_prefix: String,
}

fn default_env() -> String {
    "prod".into()
}

fn default_response_url_prefix() -> String {
    "https://hooks.slack.com/".into()
}

/// Alertmanager cannot sign its webhooks: it authenticates with a bearer token or basic auth.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerSource {
    /// Env var with comma-separated bearer tokens (several, for rotation).
    #[serde(default)]
    pub bearer_tokens_env: Option<String>,
    /// File with bearer tokens, one per line or comma-separated.
    #[serde(default)]
    pub bearer_tokens_file: Option<PathBuf>,
    #[serde(default)]
    pub basic_auth: Option<BasicAuthSource>,
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthSource {
    pub username: String,
    #[serde(default)]
    pub passwords_env: Option<String>,
    #[serde(default)]
    pub passwords_file: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GithubSource {
    /// Env var with comma-separated webhook secrets (several, for rotation).
    #[serde(default)]
    pub secrets_env: Option<String>,
    #[serde(default)]
    pub secrets_file: Option<PathBuf>,
    /// Workflow names whose failed runs are rollback triggers.
    #[serde(default)]
    pub workflows: Vec<String>,
    /// How often the writer asks GitHub (as the forge's App) for deliveries that failed, and
    /// has those not handled since sent again: GitHub never retries a delivery on its own.
    /// Default `5m`; `0s` turns it off.
    #[serde(default = "default_redeliver_every")]
    pub redeliver_every: Duration,
}

fn default_redeliver_every() -> Duration {
    Duration::from_secs(300)
}

#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
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

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Identity {
    pub name: String,
    pub email: String,
    /// The OpenSSH ed25519 private key rollbackd signs its commits, tags, notes and state with
    /// (mode 0600). Default: `<data_dir>/signing_key`, made on first use.
    #[serde(default)]
    pub signing_key_file: Option<PathBuf>,
    /// Or the name of an env var holding that key's text.
    #[serde(default)]
    pub signing_key_env: Option<String>,
    /// Public keys (`ssh-ed25519 AAAA... comment`) whose signed records count besides rollbackd's
    /// own: other replicas', and the previous key while rotating.
    #[serde(default)]
    pub trusted_keys: Vec<String>,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            name: "rollbackd".into(),
            email: "rollbackd@localhost".into(),
            signing_key_file: None,
            signing_key_env: None,
            trusted_keys: Vec::new(),
        }
    }
}

/// The key rollbackd signs with and the keys whose records it believes.
#[derive(Clone, Debug)]
pub struct Keys {
    pub signing: crate::support::signing_key::SigningKey,
    pub trusted: crate::support::signing_key::TrustedKeys,
    /// The key was made just now (`<data_dir>/signing_key`): its public half must be registered.
    pub created: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
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

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GitConfig {
    /// A fetch younger than this is reused. Default: `2s`.
    #[serde(default = "default_fetch_freshness")]
    pub fetch_freshness: Duration,
    /// Retries when the branch moved between fetch and push. Default: 5.
    #[serde(default = "default_push_retries")]
    pub push_retries: u32,
    /// Connecting to a network origin gives up after this. Default: `10s`.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    /// A network origin that sends or takes nothing for this long is given up on. Default: `30s`.
    #[serde(default = "default_io_timeout")]
    pub io_timeout: Duration,
}

impl Default for GitConfig {
    fn default() -> Self {
        GitConfig {
            fetch_freshness: default_fetch_freshness(),
            push_retries: default_push_retries(),
            connect_timeout: default_connect_timeout(),
            io_timeout: default_io_timeout(),
        }
    }
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_io_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_body_limit() -> usize {
    1 << 20
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_response_deadline() -> Duration {
    Duration::from_secs(5)
}
fn default_queue() -> usize {
    64
}
fn default_refresh() -> Duration {
    Duration::from_secs(30)
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}
fn default_policies() -> PolicySource {
    PolicySource::Dir(PathBuf::from("policies"))
}

/// Where the policies are read from.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum PolicySource {
    /// `*.yaml` files in a directory on disk (a ConfigMap, the image), read at start and reload.
    Dir(PathBuf),
    /// `*.yaml` files in a directory of the config repo's branch, switched to at the fetch that
    /// brings a valid change.
    Repo(RepoPolicies),
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RepoPolicies {
    /// Relative to the repository root, e.g. `.rollbackd/policies`.
    pub repo_path: String,
}

impl PolicySource {
    /// The directory on disk, when the policies are there.
    pub fn dir(&self) -> Option<&Path> {
        match self {
            PolicySource::Dir(d) => Some(d),
            PolicySource::Repo(_) => None,
        }
    }

    /// The directory in the config repo, when the policies are there.
    pub fn repo_path(&self) -> Option<&str> {
        match self {
            PolicySource::Repo(r) => Some(&r.repo_path),
            PolicySource::Dir(_) => None,
        }
    }
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

/// Where proposals live: `{ kind: local }` (default) or `{ kind: github, ... }`.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ForgeConfig {
    #[default]
    Local,
    Github(GithubConfig),
}

impl ForgeConfig {
    /// Where people can look at `commit` on the forge: `None` for the local forge.
    pub(crate) fn commit_url(&self, commit: &str) -> Option<String> {
        let ForgeConfig::Github(g) = self else { return None };
        let api = g.api_url.trim_end_matches('/');
        // `https://api.github.com` is served by `https://github.com`; Enterprise's API lives
        // under `https://host/api/v3`.
        let web = match api.strip_prefix("https://api.") {
            Some(host) if !host.contains('/') => format!("https://{host}"),
            _ => api.strip_suffix("/api/v3").unwrap_or(api).to_string(),
        };
        Some(format!("{web}/{}/{}/commit/{commit}", g.owner, g.repo))
    }
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
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

impl ForgeConfig {
    /// The web page listing the pull request of proposal `branch`, where the forge has one.
    pub fn proposal_link(&self, branch: &str) -> Option<String> {
        let ForgeConfig::Github(g) = self else { return None };
        // api.github.com serves github.com; GitHub Enterprise serves its API under /api/v3.
        let api = g.api_url.trim_end_matches('/');
        let web = match api.strip_suffix("/api/v3") {
            Some(host) => host.to_string(),
            None => api.replacen("://api.", "://", 1),
        };
        let q: String = url_query(&format!("is:pr head:{branch}"));
        Some(format!("{web}/{}/{}/pulls?q={q}", g.owner, g.repo))
    }
}

fn url_query(s: &str) -> String {
    serde_urlencoded::to_string([("q", s)]).unwrap_or_default().trim_start_matches("q=").to_string()
}

fn default_api_url() -> String {
    "https://api.github.com".into()
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read config: {cause}")]
    Read { path: PathBuf, cause: std::io::Error },
    #[error("{0}")]
    Invalid(Diagnostic),
    #[error("{path}: env var {var} ({field}) is not set or empty")]
    MissingSecret { path: PathBuf, var: String, field: &'static str },
    #[error("{path}: cannot read {field} file {file}: {cause}")]
    SecretFile { path: PathBuf, field: &'static str, file: PathBuf, cause: std::io::Error },
    #[error("{path}: {field}: no secret configured; set an env var or a file, or remove the source")]
    NoSecret { path: PathBuf, field: &'static str },
}

/// Secrets read from the environment at load time, so handlers never read env vars.
#[derive(Clone, Debug, Default)]
pub struct Secrets {
    pub git_token: Option<SecretString>,
    pub alertmanager_tokens: Vec<SecretString>,
    /// (username, accepted passwords)
    pub alertmanager_basic: Option<(String, Vec<SecretString>)>,
    pub github_secrets: Vec<SecretString>,
    pub slack_secrets: Vec<SecretString>,
    /// `sources.flux` HMAC keys.
    pub flux_secrets: Vec<SecretString>,
    /// `sources.argocd` bearer tokens.
    pub argocd_tokens: Vec<SecretString>,
    /// Each notification channel's URL or token, by channel name.
    pub notify: std::collections::BTreeMap<String, SecretString>,
    /// Bearer tokens for `/metrics` and `/api/v1/*` (`admin.token_env` / `admin.token_file`).
    pub admin_tokens: Vec<SecretString>,
    /// Channels whose secret's env var is unset: `serve` refuses to start, other commands run
    /// without those channels and say so.
    pub notify_unset: Vec<String>,
}

/// Reads a list of secrets from an env var and/or a file: comma- or newline-separated, blanks
/// dropped. Several values are accepted so a secret can be rotated without downtime.
fn secret_list(
    path: &Path,
    field: &'static str,
    env: Option<&String>,
    file: Option<&PathBuf>,
) -> Result<Vec<SecretString>, ConfigError> {
    let mut raw = String::new();
    if let Some(var) = env {
        let v = std::env::var(var).unwrap_or_default();
        if v.trim().is_empty() && file.is_none() {
            return Err(ConfigError::MissingSecret { path: path.to_path_buf(), var: var.clone(), field });
        }
        raw.push_str(&v);
        raw.push('\n');
    }
    if let Some(f) = file {
        let text = std::fs::read_to_string(f).map_err(|cause| ConfigError::SecretFile {
            path: path.to_path_buf(),
            field,
            file: f.clone(),
            cause,
        })?;
        raw.push_str(&text);
    }
    let list: Vec<SecretString> =
        raw.split([',', '\n']).map(str::trim).filter(|s| !s.is_empty()).map(SecretString::new).collect();
    if list.is_empty() {
        return Err(ConfigError::NoSecret { path: path.to_path_buf(), field });
    }
    Ok(list)
}

impl ConfigFile {
    /// Reads the file and the secrets its shared settings name; relative paths inside it are
    /// taken relative to the file's directory. Each repo's own secrets are its config's
    /// ([`Config::secrets`]).
    pub fn load(path: &Path) -> Result<(ConfigFile, Secrets), ConfigError> {
        let file = ConfigFile::read(path)?;
        let secrets = file.shared.secrets()?;
        Ok((file, secrets))
    }

    /// Reads and checks the file alone: no secret is read, nothing is asked of the network
    /// (`rollbackd check --offline`, the healthcheck).
    pub fn read(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|cause| ConfigError::Read { path: path.to_path_buf(), cause })?;
        let mut config: Config =
            serde_saphyr::from_str(&text).map_err(|e| ConfigError::Invalid(Diagnostic::from_yaml(path, &e)))?;
        let keys: TopKeys =
            serde_saphyr::from_str(&text).map_err(|e| ConfigError::Invalid(Diagnostic::from_yaml(path, &e)))?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.path = path.to_path_buf();
        if config.repos.is_empty() {
            if keys.repo.is_none() {
                return Err(invalid(path, "set repo (the config repo), or repos (several)".into()));
            }
        } else {
            for (key, set) in [("repo", &keys.repo), ("policies", &keys.policies), ("forge", &keys.forge)] {
                if set.is_some() {
                    return Err(invalid(path, format!("`{key}` goes inside each entry of repos, not at the top")));
                }
            }
        }
        let repos = if config.repos.is_empty() { Vec::new() } else { config.expand(base)? };
        config.resolve_relative_to(base);
        config.check_limits().map_err(|message| ConfigError::Invalid(Diagnostic::error(path, 0, 0, message)))?;
        config.check_shape()?;
        let repos = if repos.is_empty() { vec![config.clone()] } else { repos };
        Ok(ConfigFile { shared: config, repos })
    }

    /// The settings every repo of the file shares: listeners, sources, server, admin.
    pub fn shared(&self) -> &Config {
        &self.shared
    }

    /// The config of each repo the file serves (at least one).
    pub fn repos(&self) -> &[Config] {
        &self.repos
    }

    /// The one repo `name` names, or the only one there is. `Err` with several and no name:
    /// the caller must say which (`--config-repo`).
    pub fn repo(&self, name: Option<&str>) -> Result<Config, String> {
        let path = self.shared.path.display();
        let names = || self.repos.iter().filter_map(|m| m.member.clone()).collect::<Vec<_>>().join(", ");
        let named = self.repos[0].member.is_some();
        match (name, named) {
            (None, false) => Ok(self.repos[0].clone()),
            (Some(n), false) => Err(format!("--config-repo {n}: {path} serves one repo, which has no name")),
            (None, true) => Err(format!(
                "{path} serves {} repos ({}): say which with --config-repo NAME",
                self.repos.len(),
                names()
            )),
            (Some(n), true) => self.repos.iter().find(|m| m.member.as_deref() == Some(n)).cloned().ok_or_else(|| {
                format!("--config-repo {}: not in {path} (it serves {})", crate::domain::ident::shown(n), names())
            }),
        }
    }
}

impl Config {
    /// The config of the one repo the file at `path` serves, and its secrets: for a file of
    /// one `repo:` (tests, the benchmarks); [`ConfigFile`] reads any.
    pub fn load(path: &Path) -> Result<(Config, Secrets), ConfigError> {
        let config = ConfigFile::read(path)?.repo(None).map_err(|message| invalid(path, message))?;
        let secrets = config.secrets()?;
        Ok((config, secrets))
    }

    /// Each entry of `repos:` laid over the top of the file, as the config its writer runs.
    fn expand(&self, base: &Path) -> Result<Vec<Config>, ConfigError> {
        let path = &self.path;
        let mut seen = std::collections::HashSet::new();
        let mut origins = std::collections::HashSet::new();
        let mut forges = std::collections::HashSet::new();
        let mut members = Vec::new();
        let mut redeliverer = false;
        for e in &self.repos {
            let n = &e.name;
            let valid = !n.is_empty()
                && n.len() <= 63
                && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
                && !n.starts_with('.');
            if !valid {
                return Err(invalid(
                    path,
                    format!(
                        "repos: name `{}`: lowercase letters, digits, `.`, `_` and `-`, at most 63",
                        crate::domain::ident::shown(n)
                    ),
                ));
            }
            if !seen.insert(n.clone()) {
                return Err(invalid(path, format!("repos: the name `{n}` is used twice")));
            }
            let mut m = self.clone();
            m.repos = Vec::new();
            m.member = Some(n.clone());
            m.repo = e.repo.clone();
            m.policies = e.policies.clone();
            m.forge = e.forge.clone();
            // Apart from anything a single-repo file keeps in data_dir (`mirror.git`, ...).
            m.data_dir = self.data_dir.join("repos").join(n);
            if let Some(t) = &e.templates {
                m.templates = t.clone();
            }
            if let Some(i) = &e.identity {
                // One key for the file unless the entry names its own; trusted keys add up.
                let mut i = i.clone();
                if i.signing_key_file.is_none() && i.signing_key_env.is_none() {
                    i.signing_key_file = self.identity.signing_key_file.clone();
                    i.signing_key_env = self.identity.signing_key_env.clone();
                }
                i.trusted_keys.extend(self.identity.trusted_keys.iter().cloned());
                m.identity = i;
            }
            if let Some(a) = &e.audit {
                m.audit = a.clone();
            }
            if let Some(g) = &e.git {
                m.git = g.clone();
            }
            // GitHub lists one App's failed deliveries to whoever asks as that App: one writer
            // asks for them all, so a failed delivery is sent again once, not once per repo.
            let app = matches!(&m.forge, ForgeConfig::Github(g) if g.app_id.is_some());
            if let Some(gh) = m.sources.github.as_mut() {
                if redeliverer || !app {
                    gh.redeliver_every = Duration::from_secs(0);
                }
                redeliverer |= app;
            }
            m.resolve_relative_to(base);
            // One writer per repository: two would each see the other's proposals and records
            // (a branch list is the repository's, not the entry's), and one approval would
            // merge twice. Two branches of one repository are not two repos here.
            if !origins.insert(crate::support::url::repo_key(&m.repo.url)) {
                return Err(invalid(
                    path,
                    format!(
                        "repos.{n}: {} is served by an earlier entry already (one entry per repository)",
                        crate::support::url::redact_url(&m.repo.url)
                    ),
                ));
            }
            if let ForgeConfig::Github(g) = &m.forge {
                let key = format!("{}/{}/{}", g.api_url.trim_end_matches('/'), g.owner, g.repo).to_ascii_lowercase();
                if !forges.insert(key) {
                    return Err(invalid(
                        path,
                        format!("repos.{n}: forge {}/{} is an earlier entry's already", g.owner, g.repo),
                    ));
                }
            }
            let within = |e: ConfigError| match e {
                ConfigError::Invalid(d) => invalid(path, format!("repos.{n}: {}", d.message)),
                e => e,
            };
            m.check_limits().map_err(|message| invalid(path, format!("repos.{n}: {message}")))?;
            m.check_shape().map_err(within)?;
            members.push(m);
        }
        Ok(members)
    }

    /// What the file must say whatever the secrets are.
    fn check_shape(&self) -> Result<(), ConfigError> {
        let path = &self.path;
        // Keys are read whole here, so a typo in one is said at load, not when that person acts.
        let mut all_keys = self.identity.trusted_keys.clone();
        all_keys.extend(self.directory.keys().cloned());
        if let Err(e) = crate::support::signing_key::TrustedKeys::parse(&all_keys) {
            return Err(invalid(path, format!("identity.trusted_keys or directory.people: {e}")));
        }
        if let Some(dir) = self.policies.repo_path() {
            let plain = Path::new(dir).components().all(|c| matches!(c, std::path::Component::Normal(_)));
            if dir.is_empty() || !plain || dir.contains('\\') {
                return Err(invalid(
                    path,
                    format!("policies.repo_path `{dir}`: a directory inside the repo, like .rollbackd/policies"),
                ));
            }
        }
        if let Some(sl) = &self.sources.slack {
            // A prefix must end where the host does (`/`, or `:` before any port):
            // `https://hooks.slack.com` would also admit `https://hooks.slack.com.evil.example/`.
            if !sl.response_url_prefix.ends_with(['/', ':']) {
                return Err(invalid(
                    path,
                    "sources.slack.response_url_prefix must end with `/` (or `:` before a port)".into(),
                ));
            }
        }
        for r in &self.registries {
            let host = crate::domain::ident::shown(&r.host);
            let password = r.password_env.is_some() as u8 + r.password_file.is_some() as u8;
            match (&r.username, password) {
                (Some(_), 1) | (None, 0) => {}
                (Some(_), _) => {
                    return Err(invalid(path, format!("registries {host}: set one of password_env or password_file")));
                }
                (None, _) => {
                    return Err(invalid(path, format!("registries {host}: a password needs its username")));
                }
            }
            if r.username.is_some() && r.token_env.is_some() {
                return Err(invalid(
                    path,
                    format!("registries {host}: set token_env (a ready token) or username (credentials), not both"),
                ));
            }
        }
        for (name, channel) in &self.notify.channels {
            match channel {
                ChannelConfig::Webhook { url, url_env } | ChannelConfig::SlackWebhook { url, url_env }
                    if url.is_some() == url_env.is_some() =>
                {
                    return Err(invalid(path, format!("notify.channels.{name}: set one of url or url_env")));
                }
                ChannelConfig::SlackApi { token_env, token_file, .. }
                    if token_env.is_some() == token_file.is_some() =>
                {
                    return Err(invalid(path, format!("notify.channels.{name}: set one of token_env or token_file")));
                }
                // With `repos:`, each repo is checked on its own.
                ChannelConfig::GithubIssue {}
                    if !matches!(self.forge, ForgeConfig::Github(_)) && self.repos.is_empty() =>
                {
                    return Err(invalid(
                        path,
                        format!("notify.channels.{name}: github_issue needs forge.kind: github"),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The secrets the file names, read from the environment and files.
    /// The signing key (from `identity.signing_key_env` or `_file`, else `<data_dir>/signing_key`,
    /// made there when missing) and the trusted keys: `identity.trusted_keys` plus its own.
    pub fn keys(&self) -> Result<Keys, ConfigError> {
        use crate::support::signing_key::{SigningKey, TrustedKeys};
        let path = &self.path;
        let bad = |e: crate::support::signing_key::KeyError| invalid(path, e.to_string());
        let (signing, created) = if let Some(var) = &self.identity.signing_key_env {
            let text = std::env::var(var).ok().filter(|v| !v.trim().is_empty()).ok_or_else(|| {
                ConfigError::MissingSecret { path: path.clone(), var: var.clone(), field: "identity.signing_key_env" }
            })?;
            (SigningKey::from_openssh(&text, &format!("in ${var}")).map_err(bad)?, None)
        } else if let Some(file) = &self.identity.signing_key_file {
            (SigningKey::read_file(file).map_err(bad)?, None)
        } else {
            let file = self.own_key_file();
            let (key, made) = SigningKey::load_or_create(&file).map_err(bad)?;
            (key, made.then_some(file))
        };
        let trusted = TrustedKeys::parse(&self.identity.trusted_keys).map_err(bad)?.with(signing.public());
        Ok(Keys { signing, trusted, created })
    }

    /// Who is at the CLI. With `key` (`--signing-key`), the person in `directory.people` whose
    /// public key it is, so the policies' `chatops` rules apply to them as in chat; an unknown
    /// key is refused. Without a key, `None` (the CLI's asserted `--actor`) while nobody in
    /// `directory.people` has a key, refused once anyone has.
    pub fn operator(&self, key: Option<&Path>) -> Result<Option<crate::domain::principal::Principal>, String> {
        let Some(file) = key else {
            if self.directory.has_keys() {
                return Err("people in directory.people have SSH keys, so CLI writes must be signed: pass --signing-key FILE or set ROLLBACKD_SIGNING_KEY (your private key; docs/security.md)".into());
            }
            return Ok(None);
        };
        let key = crate::support::signing_key::SigningKey::read_file(file).map_err(|e| e.to_string())?;
        self.directory.person_with_key(&key.public_openssh()).map(Some).ok_or_else(|| {
            format!("the key {} ({}) belongs to nobody in directory.people: refused", file.display(), key.fingerprint())
        })
    }

    /// `<data_dir>/signing_key` of the file (one key for every repo of a `repos:` file).
    fn own_key_file(&self) -> PathBuf {
        let top = match &self.member {
            Some(_) => self.data_dir.parent().and_then(Path::parent).unwrap_or(&self.data_dir),
            None => &self.data_dir,
        };
        top.join("signing_key")
    }

    pub fn secrets(&self) -> Result<Secrets, ConfigError> {
        let (config, path) = (self, self.path.as_path());
        let git_token = match &config.repo.token_env {
            Some(var) => Some(SecretString::new(std::env::var(var).map_err(|_| ConfigError::MissingSecret {
                path: path.to_path_buf(),
                var: var.clone(),
                field: "repo.token_env",
            })?)),
            None => None,
        };
        let mut secrets = Secrets { git_token, ..Secrets::default() };
        self.source_secrets(&mut secrets)?;
        self.channel_secrets(&mut secrets)?;
        Ok(secrets)
    }

    /// The webhook senders' secrets and the admin token.
    fn source_secrets(&self, secrets: &mut Secrets) -> Result<(), ConfigError> {
        let (config, path) = (self, self.path.as_path());
        if let Some(am) = &config.sources.alertmanager {
            if am.bearer_tokens_env.is_some() || am.bearer_tokens_file.is_some() {
                secrets.alertmanager_tokens = secret_list(
                    path,
                    "sources.alertmanager.bearer_tokens",
                    am.bearer_tokens_env.as_ref(),
                    am.bearer_tokens_file.as_ref(),
                )?;
            }
            if let Some(b) = &am.basic_auth {
                let pw = secret_list(
                    path,
                    "sources.alertmanager.basic_auth.passwords",
                    b.passwords_env.as_ref(),
                    b.passwords_file.as_ref(),
                )?;
                secrets.alertmanager_basic = Some((b.username.clone(), pw));
            }
            if secrets.alertmanager_tokens.is_empty() && secrets.alertmanager_basic.is_none() {
                return Err(ConfigError::NoSecret { path: path.to_path_buf(), field: "sources.alertmanager" });
            }
        }
        if let Some(gh) = &config.sources.github {
            secrets.github_secrets =
                secret_list(path, "sources.github.secrets", gh.secrets_env.as_ref(), gh.secrets_file.as_ref())?;
        }
        if let Some(sl) = &config.sources.slack {
            secrets.slack_secrets = secret_list(
                path,
                "sources.slack.signing_secrets",
                sl.signing_secrets_env.as_ref(),
                sl.signing_secrets_file.as_ref(),
            )?;
        }
        if let Some(f) = &config.sources.flux {
            secrets.flux_secrets = secret_list(
                path,
                "sources.flux.hmac_secrets",
                f.hmac_secrets_env.as_ref(),
                f.hmac_secrets_file.as_ref(),
            )?;
        }
        if let Some(a) = &config.sources.argocd {
            secrets.argocd_tokens = secret_list(
                path,
                "sources.argocd.bearer_tokens",
                a.bearer_tokens_env.as_ref(),
                a.bearer_tokens_file.as_ref(),
            )?;
        }
        if config.admin.token_env.is_some() || config.admin.token_file.is_some() {
            secrets.admin_tokens =
                secret_list(path, "admin.token", config.admin.token_env.as_ref(), config.admin.token_file.as_ref())?;
        }
        Ok(())
    }

    /// Each channel's URL or token; a channel whose variable is unset is named in
    /// `notify_unset` rather than refused (read-only commands run without it).
    fn channel_secrets(&self, secrets: &mut Secrets) -> Result<(), ConfigError> {
        let (config, path) = (self, self.path.as_path());
        for (name, channel) in &config.notify.channels {
            let (url, var, field) = match channel {
                ChannelConfig::Webhook { url, url_env } | ChannelConfig::SlackWebhook { url, url_env } => {
                    (url.clone(), url_env.clone(), "url_env")
                }
                ChannelConfig::SlackApi { token_env, token_file, .. } => {
                    let from_file = match token_file {
                        Some(file) => Some(std::fs::read_to_string(file).map_err(|cause| ConfigError::SecretFile {
                            path: path.to_path_buf(),
                            field: "notify.channels.token_file",
                            file: file.clone(),
                            cause,
                        })?),
                        None => None,
                    };
                    (from_file, token_env.clone(), "token_env or token_file")
                }
                ChannelConfig::GithubIssue {} | ChannelConfig::File { .. } => continue,
            };
            let value = match (url, var) {
                (Some(url), None) => url,
                (None, Some(var)) => match std::env::var(&var).ok().filter(|v| !v.trim().is_empty()) {
                    Some(v) => v,
                    // Read-only commands (history, explain, status, check) run where the paging
                    // URL is not; `serve` refuses to start without it (see `notify_unset`).
                    None => {
                        secrets.notify_unset.push(format!("notify.channels.{name}: env var {var} is not set or empty"));
                        continue;
                    }
                },
                _ => {
                    let what = if field == "url_env" { "url or url_env" } else { field };
                    return Err(invalid(path, format!("notify.channels.{name}: set one of {what}")));
                }
            };
            let value = value.trim().to_string();
            if field == "url_env" && !(value.starts_with("https://") || value.starts_with("http://")) {
                return Err(invalid(path, format!("notify.channels.{name}: not an http(s) URL")));
            }
            secrets.notify.insert(name.clone(), SecretString::new(value));
        }
        Ok(())
    }

    fn resolve_relative_to(&mut self, base: &Path) {
        let policies = match &mut self.policies {
            PolicySource::Dir(d) => Some(d),
            PolicySource::Repo(_) => None,
        };
        for p in [Some(&mut self.data_dir), policies, Some(&mut self.templates)].into_iter().flatten() {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        let mut files: Vec<&mut PathBuf> = Vec::new();
        files.extend(self.repo.ssh_key_file.as_mut());
        files.extend(self.identity.signing_key_file.as_mut());
        if let Some(a) = self.sources.alertmanager.as_mut() {
            files.extend(a.bearer_tokens_file.as_mut());
            if let Some(b) = a.basic_auth.as_mut() {
                files.extend(b.passwords_file.as_mut());
            }
        }
        if let Some(g) = self.sources.github.as_mut() {
            files.extend(g.secrets_file.as_mut());
        }
        if let Some(sl) = self.sources.slack.as_mut() {
            files.extend(sl.signing_secrets_file.as_mut());
        }
        if let Some(f) = self.sources.flux.as_mut() {
            files.extend(f.hmac_secrets_file.as_mut());
        }
        if let Some(a) = self.sources.argocd.as_mut() {
            files.extend(a.bearer_tokens_file.as_mut());
        }
        files.extend(self.admin.token_file.as_mut());
        for r in &mut self.registries {
            files.extend(r.password_file.as_mut());
        }
        for channel in self.notify.channels.values_mut() {
            match channel {
                ChannelConfig::SlackApi { token_file, .. } => files.extend(token_file.as_mut()),
                ChannelConfig::File { path } => files.push(path),
                _ => {}
            }
        }
        if let ForgeConfig::Github(g) = &mut self.forge {
            files.extend(g.private_key_file.as_mut());
            files.extend(g.token_file.as_mut());
        }
        for k in files {
            if k.is_relative() {
                *k = base.join(&*k);
            }
        }
        // A relative local path for the repo is relative to the config too.
        if !self.repo.url.is_empty()
            && !crate::support::url::looks_like_url(&self.repo.url)
            && !self.repo.url.starts_with("file://")
            && Path::new(&self.repo.url).is_relative()
        {
            self.repo.url = base.join(&self.repo.url).to_string_lossy().into_owned();
        }
    }

    /// Limits of zero would stop the server from doing anything (or from ever giving up).
    fn check_limits(&self) -> Result<(), String> {
        if let Some(d) = &self.drills {
            if d.every == Duration::ZERO {
                return Err("drills.every must be more than 0s".into());
            }
            let rules = crate::domain::ident::InputRules::new(&self.input)?;
            for (i, t) in d.targets.iter().enumerate() {
                rules.identifier("service", &t.service).map_err(|e| format!("drills.targets[{i}]: {e}"))?;
                rules.identifier("env", &t.env).map_err(|e| format!("drills.targets[{i}]: {e}"))?;
            }
        }
        let s = &self.server;
        for (name, n) in [
            ("server.queue", s.queue),
            ("server.max_connections", s.max_connections),
            ("server.max_body_reads", s.max_body_reads),
            ("server.body_limit", s.body_limit),
            ("notify.queue", self.notify.queue),
            ("notify.attempts", self.notify.attempts as usize),
        ] {
            if n == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        for (name, d) in [
            ("server.request_timeout", s.request_timeout),
            ("server.response_deadline", s.response_deadline),
            ("server.header_read_timeout", s.header_read_timeout),
            ("server.body_read_timeout", s.body_read_timeout),
            ("server.refresh_interval", s.refresh_interval),
            ("git.connect_timeout", self.git.connect_timeout),
            ("git.io_timeout", self.git.io_timeout),
            ("notify.timeout", self.notify.timeout),
        ] {
            if d.as_std().is_zero() {
                return Err(format!("{name} must be longer than 0s"));
            }
        }
        Ok(())
    }

    pub fn mirror_dir(&self) -> PathBuf {
        self.data_dir.join("mirror.git")
    }
}

fn invalid(path: &Path, message: String) -> ConfigError {
    ConfigError::Invalid(Diagnostic::error(path, 0, 0, message))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn limits_of_zero_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rollbackd.yaml");
        for (field, says) in [("server: { queue: 0 }", "server.queue"), ("git: { io_timeout: 0s }", "git.io_timeout")] {
            std::fs::write(&path, format!("repo: {{ url: /x }}\n{field}\n")).unwrap();
            let err = Config::load(&path).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn repos_are_laid_over_the_top_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rollbackd.yaml");
        std::fs::write(
            &path,
            "data_dir: state\nidentity: { name: bot, email: bot@example.com }\nrepos:\n  - name: shop\n    repo: { url: shop.git }\n    policies: shop-policies\n  - name: billing\n    repo: { url: https://git.example.com/billing.git, branch: live }\n    policies: { repo_path: .rollbackd/policies }\n    identity: { name: billing, email: b@example.com }\n",
        )
        .unwrap();
        let (c, _) = ConfigFile::load(&path).unwrap();
        let m = c.repos();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].member.as_deref(), Some("shop"));
        assert_eq!(m[0].repo.url, dir.path().join("shop.git").to_string_lossy());
        assert_eq!(m[0].data_dir, dir.path().join("state/repos/shop"));
        assert_eq!(m[0].policies, PolicySource::Dir(dir.path().join("shop-policies")));
        assert_eq!(m[0].identity.name, "bot");
        assert_eq!((m[1].repo.branch.as_str(), m[1].identity.name.as_str()), ("live", "billing"));
        assert_eq!(m[1].data_dir, dir.path().join("state/repos/billing"));
        assert_eq!(c.repo(Some("billing")).unwrap().repo.branch, "live");
        assert!(c.repo(None).unwrap_err().contains("serves 2 repos (shop, billing)"));
        assert!(c.repo(Some("x")).unwrap_err().contains("not in"));
    }

    #[test]
    fn a_repos_file_that_could_mean_two_things_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rollbackd.yaml");
        let entry = |name: &str, url: &str| format!("  - name: {name}\n    repo: {{ url: {url} }}\n    policies: p\n");
        for (text, says) in [
            ("data_dir: d\n".to_string(), "set repo"),
            (format!("repo: {{ url: /x }}\nrepos:\n{}", entry("a", "/a")), "`repo` goes inside each entry"),
            (format!("policies: p\nrepos:\n{}", entry("a", "/a")), "`policies` goes inside each entry"),
            (format!("forge: {{ kind: local }}\nrepos:\n{}", entry("a", "/a")), "`forge` goes inside"),
            (format!("repos:\n{}{}", entry("a", "/a"), entry("a", "/b")), "used twice"),
            (format!("repos:\n{}{}", entry("a", "/a"), entry("b", "/a")), "served by an earlier entry"),
            (format!("repos:\n{}{}", entry("a", "/a.git"), entry("b", "file:///a/")), "served by an earlier entry"),
            (
                format!(
                    "repos:\n{}{}",
                    entry("a", "https://h.example/A"),
                    entry("b", "https://t:SECRET@h.example/a.git")
                ),
                "https://***@h.example/a.git is served",
            ),
            (format!("repos:\n{}", entry("Shop", "/a")), "lowercase"),
            (format!("repos:\n{}", entry("../x", "/a")), "lowercase"),
            ("repos:\n  - name: a\n    repo: { url: /a }\n".to_string(), "policies"),
        ] {
            std::fs::write(&path, &text).unwrap();
            let err = Config::load(&path).unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn defaults_and_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rollbackd.yaml");
        std::fs::write(&path, "repo: { url: origin.git }\n").unwrap();
        let (c, s) = Config::load(&path).unwrap();
        assert_eq!(c.repo.branch, "main");
        assert_eq!(c.policies, PolicySource::Dir(dir.path().join("policies")));
        assert_eq!(c.repo.url, dir.path().join("origin.git").to_string_lossy());
        assert!(s.git_token.is_none());
        assert_eq!(c.audit.max_commits, 10_000);
    }
}
