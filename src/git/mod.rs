//! The config repository: a bare mirror the service owns, fetched from and pushed to the origin.
//! This is the only module that uses git2; the engine talks to it through [`ConfigRepo`].

mod audit;
mod paths;
mod planner;
pub(crate) mod seed;
mod signing;
mod survey;
mod tls;
mod trailers;
mod transport;
mod tree_diff;
mod tree_edit;

use std::path::{Path, PathBuf};
use std::time::Instant;

use git2::{Oid, Repository};
use jiff::Timestamp;

pub(crate) use audit::{AuditIndex, AuditRecord};
pub(crate) use paths::PathSet;
pub(crate) use planner::GateLimits;
pub(crate) use planner::MAX_TEXT_BYTES;
pub(crate) use planner::{PlanRequest, Planned};
pub(crate) use signing::Untrusted;
pub use signing::split_signed_tag;
pub(crate) use survey::Survey;
pub use tls::defer_ca_bundle;
pub(crate) use trailers::Halt;
pub use trailers::{Also, Trailers};
pub(crate) use transport::Auth;

use transport::Update;
pub(crate) use tree_diff::Bound;
pub(crate) use tree_diff::MAX_TREE_DEPTH;

use crate::domain::plan::Sha;
use crate::support::url::redact_url;

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot reach the config repo {url}: {message}")]
    Unreachable { url: String, message: String },
    /// The origin would not take our credentials: retrying soon will not help.
    #[error("cannot reach the config repo {url}: {message}")]
    Auth { url: String, message: String },
    #[error("the config repo {url} refused the push to {refname}: {message}")]
    Refused { url: String, refname: String, message: String },
    #[error("branch {branch} kept moving on {url}: gave up after {attempts} attempts")]
    Contended { url: String, branch: String, attempts: u32 },
    #[error("branch `{0}` does not exist in the config repo")]
    NoBranch(String),
    /// Nothing has been fetched yet (the fetch failed, or has not run): saying "no such branch"
    /// here would send people looking for the wrong problem.
    #[error(
        "the config repo {url} has not been fetched yet, so branch `{branch}` cannot be read; the fetch's own error says why"
    )]
    NotFetched { url: String, branch: String },
    #[error("revision `{rev}`: {message}")]
    BadRevision { rev: String, message: String },
    #[error(
        "no known-good state for {service}/{env}: no known-good tag, and no commit within the last {searched} commits touched {paths}; pass --to REV"
    )]
    NoKnownGood { service: String, env: String, paths: String, searched: usize },
    #[error("more than {limit} commits after known-good {known_good}: tag a newer known-good or pass --to REV")]
    RangeTooLong { known_good: String, limit: usize },
    /// The rollback would write a file that parsed before and would not after (a three-way
    /// merge gone wrong): nothing is written.
    #[error(
        "the rollback would leave {path} unparsable ({message}); nothing was written: use strategy restore or --to REV"
    )]
    BrokenResult { path: String, message: String },
    #[error("cannot prepare the mirror at {path}: {message}")]
    Mirror { path: PathBuf, message: String },
    /// rollbackd's state (freezes, holds) cannot be believed or read: nothing automatic is
    /// pushed until a person writes it again (`pause`, `resume`, `freeze`, `release`...).
    #[error(
        "{refname} cannot be read ({why}); automatic rollbacks wait until a person writes it again (pause, resume, freeze, unfreeze or release)"
    )]
    UnreadableState { refname: String, why: String },
    /// Past what rollbackd reads of a tree or a change (a pull request's gate, a tree deeper
    /// than git's own default bound): refused, never half read.
    #[error("{0}")]
    Bound(#[from] tree_diff::Bound),
    #[error("git: {0}")]
    Git(#[from] git2::Error),
}

/// What kind of failure a [`GitError`] is, for callers that branch on it (backoff, status
/// codes) rather than read its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GitErrorKind {
    /// The origin refused our credentials.
    Auth,
    /// The origin could not be reached (or has not been fetched yet).
    Unreachable,
    /// The branch kept moving under our writes.
    Moved,
    /// The origin refused a push for another reason (a hook, branch protection).
    Refused,
    /// Anything else: bad input, state rollbackd cannot read, git itself.
    Other,
}

impl GitError {
    pub fn kind(&self) -> GitErrorKind {
        match self {
            GitError::Auth { .. } => GitErrorKind::Auth,
            GitError::Unreachable { .. } | GitError::NotFetched { .. } => GitErrorKind::Unreachable,
            GitError::Contended { .. } => GitErrorKind::Moved,
            GitError::Refused { .. } => GitErrorKind::Refused,
            _ => GitErrorKind::Other,
        }
    }
}

/// Where a write goes on the origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteTarget {
    /// The target branch, compare-and-swap from `expected`.
    Branch { name: String, expected: Sha },
    /// A new branch (a proposal); it must not exist yet.
    NewBranch { name: String },
}

/// One try of a compare-and-swap write.
pub(crate) enum Try<T> {
    Done(T),
    /// Another writer got there first: fetch and try again.
    Moved,
}

/// The one compare-and-swap loop behind every write rollbackd makes to the origin: runs
/// `attempt` (given the try's number, from 0) until it is done, calling `refetch` before every
/// retry; `Ok(None)` when all `attempts` tries lost to other writers (the caller says
/// `Contended` with what it knows of the origin).
pub(crate) fn retry_on_moved<C: ?Sized, T, E>(
    ctx: &mut C,
    attempts: u32,
    mut refetch: impl FnMut(&mut C) -> Result<(), E>,
    mut attempt: impl FnMut(&mut C, u32) -> Result<Try<T>, E>,
) -> Result<Option<T>, E> {
    for n in 0..attempts {
        if n > 0 {
            refetch(ctx)?;
        }
        if let Try::Done(value) = attempt(ctx, n)? {
            return Ok(Some(value));
        }
    }
    Ok(None)
}

/// What happened to a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushResult {
    Pushed,
    /// The branch is no longer where we expected (or the new branch exists): fetch and re-plan.
    Moved,
}

pub struct ConfigRepo {
    repo: Repository,
    mirror_dir: PathBuf,
    url: String,
    branch: String,
    auth: Auth,
    name: String,
    email: String,
    last_fetch: Option<Instant>,
    freshness: std::time::Duration,
    max_commits: usize,
    window: jiff::SignedDuration,
    push_retries: u32,
    index: AuditIndex,
    trust: signing::Trust,
}

/// git's `user.email` from the user's and the system's git config, if set.
pub fn git_user_email() -> Option<String> {
    git2::Config::open_default().ok()?.get_string("user.email").ok()
}

/// Held while an operation uses the mirror; see [`ConfigRepo::lock`].
#[derive(Debug)]
pub struct MirrorLock {
    _file: std::fs::File,
}

fn remove_stale_git_locks(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(kind) = e.file_type() else { continue };
        if kind.is_dir() {
            // Objects are written through temp files, never locks; refs are what get locked.
            // Pull request heads are fetched by the gate's own thread without this lock
            // (see `PullReader`), so a lock file there may be live.
            if path.file_name().is_some_and(|n| n != "objects") && !path.ends_with("refs/rollbackd/pulls") {
                remove_stale_git_locks(&path);
            }
        } else if path.extension().is_some_and(|x| x == "lock") {
            tracing::warn!(file = %path.display(), "removing a lock file left by a crash");
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Where verification notes live.
pub(crate) const NOTES_REF: &str = "refs/notes/rollbackd";
/// Where a verification in progress keeps its state (rewritten as it changes), so a restart or
/// another replica carries on.
pub(crate) const WATCH_NOTES_REF: &str = "refs/notes/rollbackd-watch";
/// Where decisions that wrote nothing are kept (one JSON line each, on the head they were
/// decided against), for `rollbackd explain`.
pub(crate) const DECISIONS_REF: &str = "refs/notes/rollbackd-decisions";
/// Known-good candidates soaking, one JSON line each, on their commit.
pub(crate) const CANDIDATES_REF: &str = "refs/notes/rollbackd-candidates";
/// Most files one rollback's approval is checked against (CODEOWNERS).
const MAX_CHANGED_FILES: usize = 10_000;
/// A head's decisions note stops growing at this size: a storm of distinct denials against one
/// head is summarised by its first entries.
const DECISIONS_NOTE_MAX: usize = 64 * 1024;
/// Where approvals of proposals live (local forge).
pub(crate) const APPROVALS_REF: &str = "refs/notes/rollbackd-approvals";
/// Where freezes live: a commit per change, holding [`FREEZES_FILE`].
pub(crate) const FREEZES_REF: &str = "refs/rollbackd/state/freezes";
pub(crate) const FREEZES_FILE: &str = "freezes.json";
/// Where releases of held artifacts live, the same way.
pub(crate) const HOLDS_REF: &str = "refs/rollbackd/state/holds";
pub(crate) const HOLDS_FILE: &str = "holds.json";
/// The notes and state refs rollbackd writes, and believes only up to their newest signed commit.
const OWN_REFS: [&str; 7] =
    [NOTES_REF, WATCH_NOTES_REF, DECISIONS_REF, CANDIDATES_REF, APPROVALS_REF, FREEZES_REF, HOLDS_REF];

impl std::fmt::Debug for ConfigRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigRepo").field("url", &redact_url(&self.url)).field("branch", &self.branch).finish()
    }
}

/// Whether git accepts `name` (a short branch or tag name) as a ref name.
pub(crate) fn is_valid_ref_name(name: &str) -> bool {
    git2::Reference::is_valid_name(&format!("refs/tags/{name}"))
}

pub(crate) fn sha(oid: Oid) -> Sha {
    Sha(oid.to_string())
}

pub(crate) fn oid(sha: &Sha) -> Result<Oid, GitError> {
    Oid::from_str(&sha.0).map_err(GitError::from)
}

/// rollbackd's state on the origin as cheaply as it can be asked: the watched branch, the notes
/// and the state refs (pause, freezes, releases, verifications), never the history. Used off
/// the writer's thread to notice what another replica or the CLI wrote, so the status can be
/// refreshed at once instead of at the next idle fetch.
#[derive(Clone, Debug)]
pub struct StateWatcher {
    url: String,
    auth: Auth,
    refs: Vec<String>,
    /// Refs named by what they hold (proposal branches, proposed and cancelled tags): every
    /// one under these.
    prefixes: Vec<String>,
}

/// The values of a [`StateWatcher`]'s refs at one moment; equal values, same state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateRefs(Vec<Option<Oid>>, Vec<(String, Oid)>);

/// Where proposals and what became of them live: a proposal opened, approved into the branch
/// or cancelled by another process changes one of these.
const STATE_PREFIXES: [&str; 4] =
    ["refs/heads/rollback/", "refs/tags/proposed/", "refs/tags/cancelled/", "refs/tags/rollback/"];

impl StateWatcher {
    /// Asks the origin now. One connection, no objects transferred.
    pub fn look(&self) -> Result<StateRefs, GitError> {
        transport::remote_values(&self.url, &self.auth, &self.refs, &self.prefixes).map(|(v, u)| StateRefs(v, u))
    }
}

/// A pull request's side of the mirror, for the gate: a second handle on the mirror's
/// directory, used by the gate's own thread while the writer goes on with its own. It writes
/// only pack files (written aside and renamed, as git does) and `refs/rollbackd/pulls/<n>`,
/// which nothing else writes.
pub struct PullReader {
    repo: Repository,
    url: String,
    auth: Auth,
    branch: String,
    branch_head: Oid,
}

impl PullReader {
    /// Fetches pull request `number`'s head (GitHub keeps it as `refs/pull/<n>/head`, also for
    /// a fork's) and returns it with where it forked from the branch. `None` when the origin
    /// has no such ref.
    pub fn fetch_pull(&self, number: u64) -> Result<Option<(Sha, Sha)>, GitError> {
        let local = format!("refs/rollbackd/pulls/{number}");
        transport::fetch_one(&self.repo, &self.url, &self.auth, &format!("refs/pull/{number}/head"), &local)?;
        let Ok(head) = self.repo.refname_to_id(&local) else { return Ok(None) };
        let base = self.repo.merge_base(self.branch_head, head)?;
        Ok(Some((sha(head), sha(base))))
    }

    /// The artifact references that change from `from` to `to`, within `limits`
    /// ([`GitError::Bound`] names the one reached).
    pub fn gate_changes(
        &self,
        from: &Sha,
        to: &Sha,
        limits: GateLimits,
    ) -> Result<Vec<crate::domain::artifacts::ArtifactChange>, GitError> {
        planner::gate_changes(&self.repo, &from.0, &to.0, limits)
    }
}

/// The artifact references that change from `from` to `to` in the repository at `dir` (a
/// checkout: the config repo's CI gates a pull request before rollbackd's mirror has it).
pub(crate) fn artifact_changes_in(
    dir: &Path,
    from: &str,
    to: &str,
) -> Result<Vec<crate::domain::artifacts::ArtifactChange>, GitError> {
    let repo = Repository::open(dir)?;
    planner::gate_changes(&repo, from, to, GateLimits::DEFAULT)
}

pub(crate) fn commit_time(c: &git2::Commit<'_>) -> Timestamp {
    Timestamp::from_second(c.time().seconds()).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// What the git layer needs to know, from whatever configures it (the git layer reads no
/// config file of its own).
#[derive(Clone, Debug)]
pub struct Settings {
    /// The origin: a path, `file://`, or a network URL.
    pub url: String,
    pub branch: String,
    /// Where the mirror (`mirror.git`), its lock and the audit cache live.
    pub data_dir: PathBuf,
    /// Author, committer and tagger of what is written.
    pub name: String,
    pub email: String,
    /// A fetch younger than this is reused.
    pub fetch_freshness: std::time::Duration,
    pub push_retries: u32,
    pub connect_timeout: std::time::Duration,
    pub io_timeout: std::time::Duration,
    /// How far back, and at most how many commits, the audit index and the planner read.
    pub audit_window: jiff::SignedDuration,
    pub max_commits: usize,
    /// What rollbackd signs with.
    pub signing_key: crate::support::signing_key::SigningKey,
    /// Whose signed notes, state and tags count (rollbackd's own key among them).
    pub trusted_keys: crate::support::signing_key::TrustedKeys,
}

/// Lets libgit2 keep parsed trees of any size in its object cache. Its default keeps only those
/// under 4 KiB, so a directory of a few hundred services (`apps/`, 20 KiB) was read from the
/// pack, inflated and parsed again at every path lookup of every commit a plan walks.
#[allow(unsafe_code)]
fn cache_trees() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: stores a size in libgit2's global settings, once, before this process opens its
    // first repository; libgit2 reads it when it caches an object.
    ONCE.call_once(|| unsafe {
        let _ = git2::opts::set_cache_object_limit(git2::ObjectType::Tree, 1 << 20);
    });
}

impl ConfigRepo {
    /// Opens (or creates) the bare mirror under `data_dir`. Nothing is fetched yet.
    pub fn open(settings: &Settings, auth: Auth) -> Result<Self, GitError> {
        let mirror_dir = settings.data_dir.join("mirror.git");
        let mirror_err = |message: String| GitError::Mirror { path: mirror_dir.clone(), message };
        std::fs::create_dir_all(&settings.data_dir).map_err(|e| mirror_err(e.to_string()))?;
        // The mirror is ours, fetched from a trusted origin; re-hashing every object on read
        // (libgit2's default, not git's) was a third of the cost of planning.
        git2::opts::strict_hash_verification(false);
        cache_trees();
        transport::set_timeouts(settings.connect_timeout, settings.io_timeout);
        let repo = match Repository::open_bare(&mirror_dir) {
            Ok(r) => r,
            Err(_) => match transport::local_path(&settings.url) {
                // A new mirror of an origin on this machine: libgit2's local clone copies (or
                // hardlinks) the object store instead of packing it, seconds instead of minutes
                // for a long history. The mirror fetch then sets up the refs as usual.
                Some(origin) if origin.exists() => git2::build::RepoBuilder::new()
                    .bare(true)
                    .clone_local(git2::build::CloneLocal::Local)
                    .clone(&origin.to_string_lossy(), &mirror_dir)
                    // The mirror fetch keeps refs/heads itself; the clone's remote is not used.
                    .inspect(|r| {
                        let _ = r.remote_delete("origin");
                    })
                    .or_else(|_| Repository::init_bare(&mirror_dir))
                    .map_err(|e| mirror_err(e.message().to_string()))?,
                _ => Repository::init_bare(&mirror_dir).map_err(|e| mirror_err(e.message().to_string()))?,
            },
        };
        Ok(ConfigRepo {
            repo,
            mirror_dir,
            url: settings.url.clone(),
            branch: settings.branch.clone(),
            auth,
            name: settings.name.clone(),
            email: settings.email.clone(),
            last_fetch: None,
            freshness: settings.fetch_freshness,
            max_commits: settings.max_commits,
            window: settings.audit_window,
            push_retries: settings.push_retries,
            index: AuditIndex::with_cache(settings.data_dir.join("audit-cache.json")),
            trust: signing::Trust::new(
                settings.signing_key.clone(),
                settings.trusted_keys.clone(),
                Some(settings.data_dir.join("trust-cache")),
            ),
        })
    }

    /// Replaces the https token (a GitHub App's installation token, renewed by the forge).
    pub fn set_token(&mut self, token: crate::support::secret::SecretString) {
        self.auth.token = Some(token);
    }

    pub fn branch(&self) -> &str {
        &self.branch
    }

    pub fn url(&self) -> String {
        redact_url(&self.url)
    }

    pub fn mirror_dir(&self) -> &Path {
        &self.mirror_dir
    }

    /// Takes the data dir's lock: one writer to the mirror at a time across processes (a CLI run
    /// next to the server waits for the server's current job). The kernel releases it when the
    /// process dies, even by kill -9; so any git `*.lock` file found while holding it was left by
    /// a crash, and is removed.
    pub fn lock(&self) -> Result<MirrorLock, GitError> {
        let path = self.mirror_dir.with_file_name("rollbackd.lock");
        let err = |message: String| GitError::Mirror { path: path.clone(), message };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| err(e.to_string()))?;
        if file.try_lock().is_err() {
            tracing::info!(lock = %path.display(), "waiting for another rollbackd using this data_dir");
            file.lock().map_err(|e| err(e.to_string()))?;
        }
        remove_stale_git_locks(&self.mirror_dir);
        Ok(MirrorLock { _file: file })
    }

    /// Fetches branches, tags and notes from the origin unless a fetch is younger than the
    /// freshness window.
    pub fn fetch_if_stale(&mut self) -> Result<(), GitError> {
        if self.last_fetch.is_some_and(|t| t.elapsed() < self.freshness) {
            return Ok(());
        }
        self.fetch_now()
    }

    /// Fetches branches, tags and notes from the origin now (after a rejected push, or when
    /// the origin is known to have moved).
    pub fn fetch_now(&mut self) -> Result<(), GitError> {
        transport::fetch(&self.repo, &self.url, &self.auth)?;
        self.trust.quarantine(&self.repo, &OWN_REFS)?;
        self.last_fetch = Some(Instant::now());
        Ok(())
    }

    /// What watches rollbackd's state on the origin from another thread.
    pub fn state_watcher(&self) -> StateWatcher {
        let mut refs = vec![format!("refs/heads/{}", self.branch)];
        refs.extend(OWN_REFS.iter().map(|r| r.to_string()));
        let prefixes = STATE_PREFIXES.iter().map(|p| p.to_string()).collect();
        StateWatcher { url: self.url.clone(), auth: self.auth.clone(), refs, prefixes }
    }

    /// What a pull request's gate needs of the mirror, to run off the writer's thread: its own
    /// handle on the mirror's directory, the origin, and the branch's head as of now.
    pub fn pull_reader(&self) -> Result<PullReader, GitError> {
        Ok(PullReader {
            repo: Repository::open_bare(&self.mirror_dir)?,
            url: self.url.clone(),
            auth: self.auth.clone(),
            branch: self.branch.clone(),
            branch_head: self.head_oid()?,
        })
    }

    pub fn head(&self) -> Result<Sha, GitError> {
        self.head_oid().map(sha)
    }

    fn head_oid(&self) -> Result<Oid, GitError> {
        self.repo.refname_to_id(&format!("refs/heads/{}", self.branch)).map_err(|_| {
            if self.last_fetch.is_none() {
                GitError::NotFetched { url: self.url(), branch: self.branch.clone() }
            } else {
                GitError::NoBranch(self.branch.clone())
            }
        })
    }

    /// Brings the audit index up to date with the mirror and returns it.
    pub fn audit(&mut self, now: Timestamp) -> Result<&AuditIndex, GitError> {
        let head = self.head_oid()?;
        let since = now.checked_sub(self.window).unwrap_or(Timestamp::UNIX_EPOCH);
        self.index.refresh(&self.repo, &self.branch, head, since, self.max_commits)?;
        Ok(&self.index)
    }

    pub fn index(&self) -> &AuditIndex {
        &self.index
    }

    /// Writes what the audit index walked to its cache in `data_dir`, if it moved.
    pub fn save_index(&mut self) {
        self.index.save(&self.branch, self.max_commits);
    }

    pub fn plan(&self, req: &PlanRequest<'_>) -> Result<Planned, GitError> {
        planner::plan(&self.repo, &self.branch, self.head_oid()?, self.max_commits, req, self.index.trusted_commits())
    }

    /// The newest commit that changed any of `paths` (a cheap look, before any planning).
    pub fn newest_change(&self, paths: &PathSet) -> Result<Option<Sha>, GitError> {
        Ok(planner::newest_change(&self.repo, paths, self.head_oid()?, self.max_commits)?.map(sha))
    }

    /// Several plans for the same bad commits, each with its trigger and policy, as one
    /// commit's plan; `None` when they cannot be one.
    pub fn fold(
        &self,
        plans: &[(crate::domain::plan::Plan, String, String)],
    ) -> Result<Option<crate::domain::plan::Plan>, GitError> {
        planner::fold(&self.repo, plans)
    }

    /// Writes the rollback commit (parent: the plan's head, tree: the plan's tree) into the
    /// mirror's object database. No ref changes: nothing is visible until `publish`.
    pub fn create_commit(&self, parent: &Sha, tree: &str, message: &str, at: Timestamp) -> Result<Sha, GitError> {
        let sig = self.signature(at)?;
        let parent = self.repo.find_commit(oid(parent)?)?;
        let tree = self.repo.find_tree(Oid::from_str(tree)?)?;
        let id = self.trust.commit(&self.repo, &sig, &sig, message, &tree, &[&parent])?;
        Ok(sha(id))
    }

    /// The tree of `commit` (hex id).
    pub fn tree_of(&self, commit: &Sha) -> Result<String, GitError> {
        Ok(self.repo.find_commit(oid(commit)?)?.tree_id().to_string())
    }

    /// Writes an annotated tag object for `commit` (no ref yet).
    pub fn create_tag(&self, name: &str, commit: &Sha, message: &str, at: Timestamp) -> Result<Sha, GitError> {
        let sig = self.signature(at)?;
        let target = self.repo.find_object(oid(commit)?, Some(git2::ObjectType::Commit))?;
        Ok(sha(self.trust.tag(&self.repo, name, target.id(), &sig, message)?))
    }

    /// Publishes a commit to the origin (compare-and-swap on the branch) together with its tag,
    /// in one push. The mirror's refs follow the origin only once the origin has accepted.
    pub fn publish(
        &mut self,
        commit: &Sha,
        target: &WriteTarget,
        tag: Option<(&str, &Sha)>,
    ) -> Result<PushResult, GitError> {
        let (branch, expected) = match target {
            WriteTarget::Branch { name, expected } => (name.as_str(), Some(oid(expected)?)),
            WriteTarget::NewBranch { name } => (name.as_str(), None),
        };
        let tag = tag.map(|(name, id)| Ok::<_, GitError>((format!("refs/tags/{name}"), oid(id)?))).transpose()?;
        // The branch and the tag that names the commit go in one push: the commit is never on
        // the origin without its tag, and the tag never without the commit on the branch.
        self.publish_refs(&format!("refs/heads/{branch}"), oid(commit)?, expected, tag.into_iter().collect())
    }

    /// A phased rollback halts: the branch moves to `marker` (an empty commit saying so,
    /// compare-and-swap on `expected`, so a next phase pushed meanwhile makes this lose), tagged
    /// `halted/...`, and the rest, when there is one, is proposed on top of it as branch
    /// `proposal`, in one push.
    pub fn publish_halt(
        &mut self,
        marker: &Sha,
        expected: &Sha,
        halted_tag: (&str, &Sha),
        proposal: Option<(&str, &Sha)>,
        proposal_tag: Option<(&str, &Sha)>,
    ) -> Result<PushResult, GitError> {
        let branch_ref = format!("refs/heads/{}", self.branch);
        let mut followers = vec![(format!("refs/tags/{}", halted_tag.0), oid(halted_tag.1)?)];
        if let Some((name, commit)) = proposal {
            followers.push((format!("refs/heads/{name}"), oid(commit)?));
        }
        if let Some((name, tag)) = proposal_tag {
            followers.push((format!("refs/tags/{name}"), oid(tag)?));
        }
        self.publish_refs(&branch_ref, oid(marker)?, Some(oid(expected)?), followers)
    }

    /// Pushes `branch_ref` to `new` (compare-and-swap on `expected`; created when `None`) and
    /// creates `followers` in the same push. The mirror's refs follow the origin only once the
    /// origin has accepted.
    fn publish_refs(
        &mut self,
        branch_ref: &str,
        new: Oid,
        expected: Option<Oid>,
        followers: Vec<(String, Oid)>,
    ) -> Result<PushResult, GitError> {
        let mut updates = vec![Update { refname: branch_ref, new: Some(new), expected, rewrite: false }];
        for (refname, id) in &followers {
            updates.push(Update { refname, new: Some(*id), expected: None, rewrite: false });
        }
        match transport::push_refs(&self.repo, &self.url, &self.auth, &updates) {
            Ok(PushResult::Moved) => return Ok(PushResult::Moved),
            Ok(PushResult::Pushed) => {}
            // The origin may have taken the push and the answer been lost on the way back (a
            // proxy timing out, a cut connection): the branch on the origin tells. Without
            // this, a rollback that happened would be answered as an error.
            Err(e @ GitError::Unreachable { .. }) => {
                if !self.fetch_now().is_ok_and(|()| self.branch_is(branch_ref, new)) {
                    return Err(e);
                }
                tracing::warn!(error = %e, "the push's answer was lost; the origin has the commit");
            }
            Err(e) => return Err(e),
        }
        self.repo.reference(branch_ref, new, true, "rollbackd: pushed")?;
        for (refname, id) in &followers {
            self.repo.reference(refname, *id, true, "rollbackd: pushed")?;
        }
        Ok(PushResult::Pushed)
    }

    /// Whether the mirror's `refname` (as of the last fetch) is `id`.
    fn branch_is(&self, refname: &str, id: Oid) -> bool {
        self.repo.refname_to_id(refname).is_ok_and(|at| at == id)
    }

    /// Sets `refname` on the origin to `new` if it currently is `expected` (`None`: must not exist).
    fn push_one(&self, refname: &str, new: Oid, expected: Option<Oid>) -> Result<PushResult, GitError> {
        transport::push_refs(
            &self.repo,
            &self.url,
            &self.auth,
            &[Update { refname, new: Some(new), expected, rewrite: false }],
        )
    }

    /// Adds a note (in `refs/notes/rollbackd`) to `commit` and pushes it, compare-and-swap on the
    /// notes ref. `Ok(false)` when the commit already has a note: verification is recorded once,
    /// and of two replicas that both try, one wins.
    pub fn add_note(&mut self, commit: &Sha, text: &str, at: Timestamp) -> Result<bool, GitError> {
        self.write_note(NOTES_REF, commit, text, at, false)
    }

    /// Sets the note on `commit` in `notes_ref` (replacing one there) and pushes it,
    /// compare-and-swap on the notes ref. `Ok(false)` only when `overwrite` is off and a note
    /// exists.
    pub fn write_note(
        &mut self,
        notes_ref: &str,
        commit: &Sha,
        text: &str,
        at: Timestamp,
        overwrite: bool,
    ) -> Result<bool, GitError> {
        let target = oid(commit)?;
        self.until_written(notes_ref, |this| {
            if !overwrite && this.repo.find_note(Some(notes_ref), target).is_ok() {
                return Ok(Try::Done(false));
            }
            Ok(match this.push_note(notes_ref, target, text, at)? {
                PushResult::Pushed => Try::Done(true),
                PushResult::Moved => Try::Moved,
            })
        })
    }

    /// Sets the note on `target` in `notes_ref` as a signed notes commit on top of the newest
    /// trusted one, and pushes it, compare-and-swap against what the origin has.
    fn push_note(&mut self, notes_ref: &str, target: Oid, text: &str, at: Timestamp) -> Result<PushResult, GitError> {
        let before = self.repo.refname_to_id(notes_ref).ok();
        let origin = self.trust.origin_of(&self.repo, notes_ref);
        let sig = self.signature(at)?;
        self.repo.note(&sig, &sig, Some(notes_ref), target, text, true)?;
        // libgit2 writes the notes commit unsigned: the same commit, signed, replaces it.
        let unsigned = self.repo.refname_to_id(notes_ref)?;
        let new = self.trust.resign(&self.repo, unsigned)?;
        let pushed = self.push_own(notes_ref, new, origin);
        if matches!(pushed, Ok(PushResult::Pushed)) {
            self.repo.reference(notes_ref, new, true, "rollbackd: note")?;
        } else {
            // Put the local ref back; the next fetch would overwrite it anyway.
            match before {
                Some(old) => {
                    self.repo.reference(notes_ref, old, true, "rollbackd: note not pushed")?;
                }
                None => {
                    if let Ok(mut r) = self.repo.find_reference(notes_ref) {
                        r.delete()?;
                    }
                }
            }
        }
        pushed
    }

    /// Pushes `new` (a signed commit on top of the newest trusted one) to one of rollbackd's
    /// notes or state refs, compare-and-swap against what the origin holds there: untrusted
    /// commits above the trusted one are replaced, and the log says so.
    /// `origin` is [`signing::Trust::origin_of`] the ref, read before anything was written.
    fn push_own(&mut self, refname: &str, new: Oid, origin: (Option<Oid>, bool)) -> Result<PushResult, GitError> {
        let (expected, replaces) = origin;
        if replaces {
            tracing::warn!(
                r#ref = refname,
                "writing over commits no trusted key signed; they are dropped from the ref"
            );
        }
        let update = Update { refname, new: Some(new), expected, rewrite: replaces };
        let pushed = transport::push_refs(&self.repo, &self.url, &self.auth, &[update])?;
        if pushed == PushResult::Pushed {
            self.trust.pushed(&self.repo, refname, new)?;
        }
        Ok(pushed)
    }

    /// The note on `commit`, if any.
    pub fn note(&self, commit: &Sha) -> Option<String> {
        self.note_in(NOTES_REF, commit)
    }

    /// The note on `commit` in `notes_ref`, if any.
    pub fn note_in(&self, notes_ref: &str, commit: &Sha) -> Option<String> {
        let n = self.repo.find_note(Some(notes_ref), oid(commit).ok()?).ok()?;
        n.message().ok().map(str::to_string)
    }

    /// Appends `line` to the decisions note on `head` and pushes it. `Ok(false)` when the note
    /// is full.
    pub fn add_decision(&mut self, head: &Sha, line: &str, at: Timestamp) -> Result<bool, GitError> {
        let existing = self.note_in(DECISIONS_REF, head).unwrap_or_default();
        if existing.len() + line.len() > DECISIONS_NOTE_MAX {
            return Ok(false);
        }
        let text = format!("{existing}{line}\n");
        self.write_note(DECISIONS_REF, head, &text, at, true)
    }

    /// Every line of every decisions note.
    pub fn decisions(&self) -> Result<Vec<String>, GitError> {
        Ok(self
            .notes_of(DECISIONS_REF)?
            .into_iter()
            .flat_map(|(_, text)| text.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect::<Vec<_>>())
            .collect())
    }

    /// When `rev` was committed, if the mirror has it.
    pub fn committed_at(&self, rev: &str) -> Option<Timestamp> {
        let c = self.repo.revparse_single(rev).ok()?.peel_to_commit().ok()?;
        Some(commit_time(&c))
    }

    /// Whether the mirror has commit `descendant` (a full id) and `commit` is it or in its
    /// history: a revision a controller applied "contains" a rollback (rollbackd-controllers).
    pub fn contains(&self, descendant: &str, commit: &Sha) -> bool {
        let (Ok(d), Ok(c)) = (Oid::from_str(descendant), oid(commit)) else { return false };
        self.repo.find_commit(d).is_ok() && (d == c || self.repo.graph_descendant_of(d, c).unwrap_or(false))
    }

    /// What `name` points at in the mirror, if it exists.
    pub fn ref_id(&self, name: &str) -> Option<String> {
        self.repo.refname_to_id(name).ok().map(|o| o.to_string())
    }

    /// Whether the tag `name` exists in the mirror.
    pub fn tag_exists(&self, name: &str) -> bool {
        self.repo.find_reference(&format!("refs/tags/{name}")).is_ok()
    }

    /// Every note in `notes_ref`, with the commit it is on.
    pub fn notes_of(&self, notes_ref: &str) -> Result<Vec<(Sha, String)>, GitError> {
        let mut all = Vec::new();
        let Ok(notes) = self.repo.notes(Some(notes_ref)) else { return Ok(all) };
        for n in notes {
            let (_, annotated) = n?;
            let commit = sha(annotated);
            if let Some(text) = self.note_in(notes_ref, &commit) {
                all.push((commit, text));
            }
        }
        Ok(all)
    }

    /// The parent of the newest commit at or before `before` (first parent) that changed
    /// `paths` and is not itself a rollback: where a step back restores to.
    pub fn before_previous_change(&self, paths: &PathSet, before: &Sha) -> Result<Option<Sha>, GitError> {
        let mut walk = self.repo.revwalk()?;
        walk.push(oid(before)?)?;
        walk.simplify_first_parent()?;
        for id in walk.take(self.max_commits) {
            let c = self.repo.find_commit(id?)?;
            let parent = match c.parent(0) {
                Ok(p) => p,
                Err(_) => return Ok(None),
            };
            if paths.differs(&self.repo, &c.tree()?, &parent.tree()?)? && planner::rollback_trailers(&c).is_none() {
                return Ok(Some(sha(parent.id())));
            }
        }
        Ok(None)
    }

    /// The newest commit after `since` on the branch (first parent) that changed `paths` and is
    /// not one of `own` (the rollback's own commits, as its tags name them): someone else acting
    /// on them (a person, another rollback).
    pub fn changed_since(
        &self,
        paths: &PathSet,
        since: &Sha,
        own: &std::collections::HashSet<Sha>,
    ) -> Result<Option<Sha>, GitError> {
        let mut walk = self.repo.revwalk()?;
        walk.push(self.head_oid()?)?;
        walk.hide(oid(since)?)?;
        walk.simplify_first_parent()?;
        for id in walk.take(self.max_commits) {
            let c = self.repo.find_commit(id?)?;
            let parent = match c.parent(0) {
                Ok(p) => p.tree()?,
                Err(_) => continue,
            };
            if paths.differs(&self.repo, &c.tree()?, &parent)? && !own.contains(&sha(c.id())) {
                return Ok(Some(sha(c.id())));
            }
        }
        Ok(None)
    }

    /// Creates and pushes the annotated tag `name` at `rev`. `Ok(false)` when it exists already.
    pub fn tag_commit(&mut self, name: &str, rev: &str, message: &str, at: Timestamp) -> Result<bool, GitError> {
        let commit = self
            .repo
            .revparse_single(rev)
            .and_then(|o| o.peel_to_commit())
            .map_err(|e| GitError::BadRevision { rev: rev.to_string(), message: e.message().to_string() })?;
        let tag_ref = format!("refs/tags/{name}");
        if self.repo.find_reference(&tag_ref).is_ok() {
            return Ok(false);
        }
        let commit = sha(commit.id());
        let tag = self.create_tag(name, &commit, message, at)?;
        let tag_oid = oid(&tag)?;
        match self.push_one(&tag_ref, tag_oid, None)? {
            PushResult::Pushed => {
                self.repo.reference(&tag_ref, tag_oid, true, "rollbackd: pushed")?;
                Ok(true)
            }
            PushResult::Moved => Ok(false),
        }
    }

    /// Whether any target path exists at `rev`.
    pub fn paths_exist_at(&self, rev: &str, set: &PathSet) -> Result<bool, GitError> {
        let commit = self
            .repo
            .revparse_single(rev)
            .and_then(|o| o.peel_to_commit())
            .map_err(|e| GitError::BadRevision { rev: rev.to_string(), message: e.message().to_string() })?;
        Ok(!set.files_in(&self.repo, &commit.tree()?)?.is_empty())
    }

    /// The open proposal with this rollback id: (branch, commit, trailers). A proposal kept
    /// as a `cancelled/` tag (closed on the forge) is not open, even while its branch remains.
    pub fn find_proposal(&self, id: &str) -> Result<Option<(String, Sha, Trailers)>, GitError> {
        for r in self.repo.references_glob("refs/heads/rollback/*")? {
            let r = r?;
            let Some(name) = r.shorthand().ok().map(str::to_string) else { continue };
            let Some(rref) = crate::domain::rollback::RollbackRef::parse_branch(&name) else { continue };
            if rref.id.as_str() != id {
                continue;
            }
            if self.repo.find_reference(&format!("refs/tags/{}", rref.cancelled())).is_ok() {
                return Ok(None);
            }
            let c = r.peel_to_commit()?;
            if !self.proposed_by_us(&rref, &sha(c.id())) {
                tracing::warn!(branch = %name, "a rollback branch rollbackd did not propose; not treated as a proposal");
                continue;
            }
            if let Some(t) = Trailers::parse(c.message().unwrap_or_default()) {
                return Ok(Some((name, sha(c.id()), t)));
            }
        }
        Ok(None)
    }

    /// Whether `commit` is the one rollbackd proposed as `rref`: its `proposed/...` tag names it.
    pub fn proposed_by_us(&self, rref: &crate::domain::rollback::RollbackRef, commit: &Sha) -> bool {
        self.repo
            .find_reference(&format!("refs/tags/{}", rref.proposed()))
            .and_then(|r| r.peel_to_commit())
            .is_ok_and(|c| sha(c.id()) == *commit)
    }

    /// Approvals recorded on a proposal commit: one `Approved-By: <principal>` line each.
    pub fn approvals(&self, commit: &Sha) -> Vec<String> {
        let Ok(target) = oid(commit) else { return Vec::new() };
        let Ok(note) = self.repo.find_note(Some(APPROVALS_REF), target) else { return Vec::new() };
        note.message()
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("Approved-By: "))
            .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
            .collect()
    }

    /// Records an approval (a note line on the proposal commit), pushed with compare-and-swap.
    pub fn add_approval(&mut self, commit: &Sha, who: &str, at: Timestamp) -> Result<(), GitError> {
        let target = oid(commit)?;
        self.until_written(APPROVALS_REF, |this| {
            let mut text = this
                .repo
                .find_note(Some(APPROVALS_REF), target)
                .ok()
                .and_then(|n| n.message().ok().map(str::to_string))
                .unwrap_or_default();
            text.push_str(&format!("Approved-By: {who} {at}\n"));
            Ok(match this.push_note(APPROVALS_REF, target, &text, at)? {
                PushResult::Pushed => Try::Done(()),
                PushResult::Moved => Try::Moved,
            })
        })
    }

    /// `commit` replayed onto the branch head: itself when its parent is the head, else a new
    /// commit with the same message and author (a three-way merge of its change). `None` when the
    /// change no longer applies cleanly.
    pub fn onto_head(&self, commit: &Sha, at: Timestamp) -> Result<Option<Sha>, GitError> {
        let head = self.head_oid()?;
        let c = self.repo.find_commit(oid(commit)?)?;
        if c.parent_id(0).ok() == Some(head) {
            return Ok(Some(commit.clone()));
        }
        let head_commit = self.repo.find_commit(head)?;
        let base = c.parent(0)?.tree()?;
        let mut index = self.repo.merge_trees(&base, &head_commit.tree()?, &c.tree()?, None)?;
        if index.has_conflicts() {
            return Ok(None);
        }
        let tree = self.repo.find_tree(index.write_tree_to(&self.repo)?)?;
        let sig = self.signature(at)?;
        let message = String::from_utf8_lossy(c.message_bytes()).into_owned();
        let id = self.trust.commit(&self.repo, &c.author(), &sig, &message, &tree, &[&head_commit])?;
        Ok(Some(sha(id)))
    }

    /// Points a branch of ours (a proposal) at `new` if it still is `expected`, even when `new`
    /// does not descend from it.
    pub fn replace_branch(&mut self, name: &str, new: &Sha, expected: &Sha) -> Result<PushResult, GitError> {
        let refname = format!("refs/heads/{name}");
        let (new, old) = (oid(new)?, oid(expected)?);
        let update = Update { refname: &refname, new: Some(new), expected: Some(old), rewrite: true };
        let r = transport::push_refs(&self.repo, &self.url, &self.auth, &[update])?;
        if r == PushResult::Pushed {
            self.repo.reference(&refname, new, true, "rollbackd: proposal replayed")?;
        }
        Ok(r)
    }

    /// A branch of rollbackd's own that is not the watched branch (a drill), as the mirror has
    /// it: its head when a trusted key signed that commit, with its commit time. Anyone can push
    /// to such a branch; an unsigned head is nobody's drill.
    pub fn own_branch_head(&self, name: &str) -> Option<(Sha, Timestamp)> {
        let id = self.repo.refname_to_id(&format!("refs/heads/{name}")).ok()?;
        if !self.trust.commit_signed(&self.repo, id).trusted() {
            return None;
        }
        let c = self.repo.find_commit(id).ok()?;
        Some((sha(id), commit_time(&c)))
    }

    /// Points branch `name` (never the watched branch) at `new`, compare-and-swap on what the
    /// mirror last saw there: created when it had none, moved (even when `new` does not descend
    /// from it) when it still is what was seen. `Moved` when someone else moved it meanwhile.
    pub fn set_side_branch(&mut self, name: &str, new: &Sha) -> Result<PushResult, GitError> {
        if name == self.branch {
            return Err(GitError::Refused {
                url: self.url(),
                refname: format!("refs/heads/{name}"),
                message: "rollbackd writes side branches only, never the watched branch".into(),
            });
        }
        match self.repo.refname_to_id(&format!("refs/heads/{name}")).ok() {
            Some(old) => self.replace_branch(name, new, &sha(old)),
            None => self.publish(new, &WriteTarget::NewBranch { name: name.to_string() }, None),
        }
    }

    /// The files `commit` changes against its first parent (a rollback's, a proposal's, a
    /// drill's commit), bounded.
    pub fn changed_by(&self, commit: &Sha) -> Result<Vec<String>, GitError> {
        let c = self.repo.find_commit(oid(commit)?)?;
        let b = c.tree()?;
        let a = match c.parent(0) {
            Ok(p) => Some(p.tree()?),
            Err(_) => None,
        };
        let mut opts = git2::DiffOptions::new();
        let diff = self.repo.diff_tree_to_tree(a.as_ref(), Some(&b), Some(&mut opts))?;
        let mut files = Vec::new();
        for d in diff.deltas() {
            if files.len() >= MAX_CHANGED_FILES {
                return Err(GitError::Bound(tree_diff::Bound::Paths { limit: MAX_CHANGED_FILES }));
            }
            for f in [d.old_file().path(), d.new_file().path()].into_iter().flatten() {
                let p = f.to_string_lossy().into_owned();
                if !files.contains(&p) {
                    files.push(p);
                }
            }
        }
        Ok(files)
    }

    /// The bytes of the file at `path` on the watched branch's head, when it is a file of at
    /// most `max` bytes: `Ok(None)` when there is none; a bigger file is refused, never read.
    pub fn file_at_head(&self, path: &str, max: usize) -> Result<Option<Vec<u8>>, GitError> {
        let head = self.repo.find_commit(self.head_oid()?)?;
        let Ok(entry) = head.tree()?.get_path(Path::new(path)) else { return Ok(None) };
        let Ok(blob) = self.repo.find_blob(entry.id()) else { return Ok(None) };
        if blob.size() > max {
            return Err(GitError::Bound(tree_diff::Bound::Bytes { limit: max as u64 }));
        }
        Ok(Some(blob.content().to_vec()))
    }

    /// The full message of a commit.
    pub fn message(&self, commit: &Sha) -> Result<String, GitError> {
        Ok(self.repo.find_commit(oid(commit)?)?.message().unwrap_or_default().to_string())
    }

    /// Deletes a branch on the origin if it still points at `expected`, and in the mirror.
    pub fn delete_branch(&mut self, name: &str, expected: &Sha) -> Result<PushResult, GitError> {
        let refname = format!("refs/heads/{name}");
        let update = Update { refname: &refname, new: None, expected: Some(oid(expected)?), rewrite: false };
        let r = transport::push_refs(&self.repo, &self.url, &self.auth, &[update])?;
        if r == PushResult::Pushed
            && let Ok(mut local) = self.repo.find_reference(&refname)
        {
            local.delete()?;
        }
        Ok(r)
    }

    /// The freezes in force, as of the last fetch.
    pub fn freezes(&self) -> Result<crate::domain::freeze::Freezes, GitError> {
        self.state(FREEZES_REF, FREEZES_FILE)
    }

    /// Changes the freezes: `change` edits the current set; the result is committed on
    /// `refs/rollbackd/state/freezes` and pushed with compare-and-swap, retried if another writer
    /// got there first. Returns what `change` returned.
    pub fn update_freezes<T>(
        &mut self,
        message: &str,
        at: Timestamp,
        change: impl FnMut(&mut crate::domain::freeze::Freezes) -> T,
    ) -> Result<T, GitError> {
        self.update_state(FREEZES_REF, FREEZES_FILE, message, at, change)
    }

    /// The id of the tree at `dir` on the branch head, and the head: what says whether files
    /// under `dir` changed, in two lookups whatever the history. `None` when `dir` is not there.
    pub fn dir_at_head(&self, dir: &str) -> Result<Option<(String, Sha)>, GitError> {
        let head = self.head_oid()?;
        let tree = self.repo.find_commit(head)?.tree()?;
        Ok(match tree.get_path(Path::new(dir)) {
            Ok(entry) if entry.kind() == Some(git2::ObjectType::Tree) => Some((entry.id().to_string(), sha(head))),
            _ => None,
        })
    }

    /// The versions of `dir` on the branch (tree ids), newest first, each with the commit that
    /// made it: at most `versions`, looking back at most `max_commits` first-parent commits.
    pub fn dir_versions(&self, dir: &str, versions: usize, max_commits: usize) -> Result<Vec<(String, Sha)>, GitError> {
        let mut walk = self.repo.revwalk()?;
        walk.push(self.head_oid()?)?;
        walk.simplify_first_parent()?;
        let mut found: Vec<(String, Sha)> = Vec::new();
        let mut current: Option<String> = None;
        for oid in walk.take(max_commits) {
            let oid = oid?;
            let tree = self.repo.find_commit(oid)?.tree()?;
            let here = tree.get_path(Path::new(dir)).ok().map(|e| e.id().to_string());
            if here != current {
                if let Some(t) = &here {
                    found.push((t.clone(), sha(oid)));
                }
                current = here;
            } else if let (Some(last), Some(_)) = (found.last_mut(), &here) {
                // The same version, made by an older commit.
                last.1 = sha(oid);
            }
            if found.len() > versions {
                break;
            }
        }
        found.truncate(versions);
        Ok(found)
    }

    /// The `*.yaml` / `*.yml` files directly in the tree `tree_id` (from [`Self::dir_at_head`]),
    /// by name, with their text.
    pub fn yaml_files_in(&self, tree_id: &str) -> Result<Vec<(String, String)>, GitError> {
        let tree = self.repo.find_tree(Oid::from_str(tree_id)?)?;
        let mut files = Vec::new();
        for entry in tree.iter() {
            let Ok(name) = entry.name() else { continue };
            if entry.kind() != Some(git2::ObjectType::Blob) || !(name.ends_with(".yaml") || name.ends_with(".yml")) {
                continue;
            }
            let blob = self.repo.find_blob(entry.id())?;
            // Refused whole by the parser (a size it names) rather than read into memory.
            let text = if blob.size() > crate::domain::policy::MAX_FILE_BYTES {
                " ".repeat(crate::domain::policy::MAX_FILE_BYTES + 1)
            } else {
                String::from_utf8_lossy(blob.content()).into_owned()
            };
            files.push((name.to_string(), text));
        }
        files.sort();
        Ok(files)
    }

    /// The releases of held artifacts.
    pub fn hold_releases(&self) -> Result<crate::domain::hold::Releases, GitError> {
        self.state(HOLDS_REF, HOLDS_FILE)
    }

    /// Changes the releases as [`Self::update_freezes`] changes the freezes.
    pub fn update_hold_releases<T>(
        &mut self,
        message: &str,
        at: Timestamp,
        change: impl FnMut(&mut crate::domain::hold::Releases) -> T,
    ) -> Result<T, GitError> {
        self.update_state(HOLDS_REF, HOLDS_FILE, message, at, change)
    }

    /// A JSON document kept as `file` in the commit `refname` points at (the default when none).
    fn state<S: serde::de::DeserializeOwned + Default>(&self, refname: &str, file: &str) -> Result<S, GitError> {
        let Ok(id) = self.repo.refname_to_id(refname) else {
            // The origin has the ref, but nothing in it that a trusted key signed (a key that
            // changed, or a forgery): no state is not the same as "nothing frozen".
            if let (Some(_), true) = self.trust.origin_of(&self.repo, refname) {
                return Err(GitError::UnreadableState {
                    refname: refname.into(),
                    why: "no commit in it is signed by a trusted key".into(),
                });
            }
            return Ok(S::default());
        };
        let tree = self.repo.find_commit(id)?.tree()?;
        let Some(entry) = tree.get_name(file) else { return Ok(S::default()) };
        let blob = self.repo.find_blob(entry.id())?;
        serde_json::from_slice(blob.content())
            .map_err(|e| GitError::UnreadableState { refname: refname.into(), why: format!("{file}: {e}") })
    }

    /// Edits the document of [`Self::state`] with `change`, commits it on `refname` and pushes
    /// it with compare-and-swap, retried if another writer got there first.
    fn update_state<S, T>(
        &mut self,
        refname: &str,
        file: &str,
        message: &str,
        at: Timestamp,
        mut change: impl FnMut(&mut S) -> T,
    ) -> Result<T, GitError>
    where
        S: serde::de::DeserializeOwned + serde::Serialize + Default,
    {
        self.until_written(refname, |this| {
            // A person's write repairs a state that cannot be read: it starts again from empty,
            // and the bad version stays in the ref's history.
            let mut set: S = match this.state(refname, file) {
                Err(GitError::UnreadableState { why, .. }) => {
                    tracing::warn!(r#ref = refname, %why, "writing a new state over one that cannot be read");
                    S::default()
                }
                other => other?,
            };
            let result = change(&mut set);
            let text =
                serde_json::to_string_pretty(&set).map_err(|e| GitError::Git(git2::Error::from_str(&e.to_string())))?;
            let id = this.state_commit(refname, file, &text, message, at)?;
            let origin = this.trust.origin_of(&this.repo, refname);
            match this.push_own(refname, id, origin)? {
                PushResult::Pushed => {
                    this.repo.reference(refname, id, true, "rollbackd: state")?;
                    Ok(Try::Done(result))
                }
                PushResult::Moved => Ok(Try::Moved),
            }
        })
    }

    /// A signed commit holding `text` as `file`, on top of the newest trusted state of
    /// `refname` (the origin may hold more: see `push_own`).
    fn state_commit(
        &self,
        refname: &str,
        file: &str,
        text: &str,
        message: &str,
        at: Timestamp,
    ) -> Result<Oid, GitError> {
        let blob = self.repo.blob(text.as_bytes())?;
        let mut tb = self.repo.treebuilder(None)?;
        tb.insert(file, blob, i32::from(git2::FileMode::Blob))?;
        let tree = self.repo.find_tree(tb.write()?)?;
        let parent = self.repo.refname_to_id(refname).ok().map(|p| self.repo.find_commit(p)).transpose()?;
        let sig = self.signature(at)?;
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        Ok(self.trust.commit(&self.repo, &sig, &sig, message, &tree, &parents)?)
    }

    /// The artifact references that change from `from` to `to` (revisions of this repository),
    /// within the gate's limits.
    pub fn gate_changes(
        &self,
        from: &str,
        to: &str,
    ) -> Result<Vec<crate::domain::artifacts::ArtifactChange>, GitError> {
        planner::gate_changes(&self.repo, from, to, GateLimits::DEFAULT)
    }

    /// The artifact references that change from `from` to `to` (revisions of this repository).
    pub fn artifact_changes(
        &self,
        from: &str,
        to: &str,
    ) -> Result<Vec<crate::domain::artifacts::ArtifactChange>, GitError> {
        planner::artifact_changes(&self.repo, from, to)
    }

    /// Runs `attempt` until it writes, fetching before every retry: the one loop behind every
    /// compare-and-swap write of rollbackd's own refs (notes, approvals, freezes).
    /// `Contended` after `push_retries + 1` tries lost to other writers.
    fn until_written<T>(
        &mut self,
        refname: &str,
        mut attempt: impl FnMut(&mut Self) -> Result<Try<T>, GitError>,
    ) -> Result<T, GitError> {
        let attempts = self.push_retries + 1;
        match retry_on_moved(self, attempts, |this| this.fetch_now(), |this, _| attempt(this))? {
            Some(value) => Ok(value),
            None => Err(GitError::Contended { url: self.url(), branch: refname.into(), attempts }),
        }
    }

    /// rollbackd's records on the origin that no trusted key signed, as of the last fetch.
    pub fn untrusted(&self) -> &[Untrusted] {
        self.trust.untrusted()
    }

    /// Untrusted records found since the last call, each once (for the counter).
    pub fn take_untrusted(&mut self) -> Vec<Untrusted> {
        self.trust.take_fresh()
    }

    /// Every record rollbackd relies on from `since` on, with its signature (`audit verify`).
    /// Reads the audit index as of the last refresh.
    pub fn check_signatures(&self, since: Timestamp) -> Result<Vec<crate::domain::audit::SignatureCheck>, GitError> {
        Ok(self.trust.check_records(&self.repo, &OWN_REFS, self.index.records(), since)?)
    }

    /// The key rollbackd signs with.
    pub fn signing_key(&self) -> &crate::support::signing_key::SigningKey {
        self.trust.key()
    }

    /// The push retry budget from the config, for callers that push through this repo.
    pub fn push_retries(&self) -> u32 {
        self.push_retries
    }

    fn signature(&self, at: Timestamp) -> Result<git2::Signature<'static>, GitError> {
        let time = git2::Time::new(at.as_second(), 0);
        Ok(git2::Signature::new(&self.name, &self.email, &time)?)
    }

    /// Whether a file or directory exists at `path` on the branch head (for `check`).
    pub fn any_path_matches(&self, set: &PathSet) -> Result<bool, GitError> {
        let head = self.repo.find_commit(self.head_oid()?)?;
        Ok(!set.files_in(&self.repo, &head.tree()?)?.is_empty())
    }

    /// The files on the branch head under `set` (for `check`).
    pub fn files_matching(&self, set: &PathSet) -> Result<Vec<String>, GitError> {
        let head = self.repo.find_commit(self.head_oid()?)?;
        Ok(set.files_in(&self.repo, &head.tree()?)?.into_iter().map(|(p, _)| p).collect())
    }

    /// Direct access for tests and the demo, which build repositories.
    pub fn raw(&self) -> &Repository {
        &self.repo
    }
}
