//! Talking to the origin: fetch into the mirror, and compare-and-swap pushes.
//!
//! Network remotes get a real push: receive-pack compares the old value under a lock, and a
//! refusal (hook, protected branch) comes back only through `push_update_reference`, which is
//! why that callback is always installed and read. Local remotes (paths, `file://`) are written
//! directly: libgit2's local transport overwrites refs without comparing, so we copy the missing
//! objects and update the ref with `reference_matching`, which is atomic.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use git2::{Cred, CredentialType, ErrorCode, FetchOptions, Oid, PushOptions, RemoteCallbacks, Repository};

use super::{GitError, PushResult};
use crate::config::redact_url;
use crate::secret::SecretString;

/// Sets libgit2's connect and socket timeouts, so a stuck origin fails a fetch or push in bounded
/// time instead of holding the writer. They are process-wide in libgit2; every mirror of this
/// process shares the last values set.
#[allow(unsafe_code)]
pub(super) fn set_timeouts(connect: std::time::Duration, io: std::time::Duration) {
    let ms = |d: std::time::Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX).max(1);
    // SAFETY: these only store an int in libgit2's global settings; libgit2 reads it when it
    // opens a socket.
    unsafe {
        let _ = git2::opts::set_server_connect_timeout_in_milliseconds(ms(connect));
        let _ = git2::opts::set_server_timeout_in_milliseconds(ms(io));
    }
}

/// Credentials for the origin, loaded once at start.
#[derive(Clone, Debug, Default)]
pub struct Auth {
    pub token: Option<SecretString>,
    pub ssh_key: Option<PathBuf>,
}

/// Everything rollbackd reads: branches, tags, notes, and the shared state (freezes) that other
/// replicas and the CLI write.
const FETCH_REFSPECS: [&str; 4] = [
    "+refs/heads/*:refs/heads/*",
    "+refs/tags/*:refs/tags/*",
    "+refs/notes/*:refs/notes/*",
    "+refs/rollbackd/state/*:refs/rollbackd/state/*",
];

fn callbacks<'a>(auth: &'a Auth) -> RemoteCallbacks<'a> {
    let mut cb = RemoteCallbacks::new();
    let mut attempts = 0;
    cb.credentials(move |_url, username, allowed| {
        // libgit2 asks again after a rejected credential; answering the same thing forever
        // would hang the request.
        attempts += 1;
        if attempts > 2 {
            return Err(git2::Error::from_str("authentication failed (credentials rejected)"));
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT)
            && let Some(token) = &auth.token
        {
            return Cred::userpass_plaintext("x-access-token", token.expose());
        }
        if allowed.contains(CredentialType::SSH_KEY) {
            let user = username.unwrap_or("git");
            return match &auth.ssh_key {
                Some(key) => Cred::ssh_key(user, None, key, None),
                None => Cred::ssh_key_from_agent(user),
            };
        }
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(username.unwrap_or("git"));
        }
        Err(git2::Error::from_str(
            "the remote wants credentials and none are configured (repo.token_env, repo.ssh_key_file)",
        ))
    });
    cb
}

fn unreachable(url: &str, e: &git2::Error) -> GitError {
    GitError::Unreachable { url: redact_url(url), message: e.message().to_string() }
}

pub(super) fn fetch(repo: &Repository, url: &str, auth: &Auth) -> Result<(), GitError> {
    let mut remote = repo.remote_anonymous(url).map_err(|e| unreachable(url, &e))?;
    let mut opts = FetchOptions::new();
    opts.remote_callbacks(callbacks(auth));
    opts.prune(git2::FetchPrune::On);
    opts.download_tags(git2::AutotagOption::None);
    remote.fetch(&FETCH_REFSPECS, Some(&mut opts), None).map_err(|e| unreachable(url, &e))
}

/// The local directory of a path or `file://` URL, if it is one.
pub(super) fn local_path(url: &str) -> Option<PathBuf> {
    if let Some(rest) = url.strip_prefix("file://") {
        return Some(PathBuf::from(rest));
    }
    (!crate::config::looks_like_url(url)).then(|| PathBuf::from(url))
}

/// Deletes `refname` on the origin if it currently is `expected`.
pub(super) fn delete_ref(
    repo: &Repository,
    url: &str,
    auth: &Auth,
    refname: &str,
    expected: Oid,
) -> Result<PushResult, GitError> {
    match local_path(url) {
        Some(path) => {
            let origin = Repository::open_bare(&path).map_err(|e| unreachable(url, &e))?;
            let Ok(mut r) = origin.find_reference(refname) else { return Ok(PushResult::Moved) };
            if r.target() != Some(expected) {
                return Ok(PushResult::Moved);
            }
            r.delete().map_err(|e| GitError::Refused {
                url: redact_url(url),
                refname: refname.into(),
                message: e.message().into(),
            })?;
            Ok(PushResult::Pushed)
        }
        None => {
            if remote_value(repo, url, auth, refname)? != Some(expected) {
                return Ok(PushResult::Moved);
            }
            match send(repo, url, auth, &format!(":{refname}"))? {
                Sent::Accepted => Ok(PushResult::Pushed),
                Sent::NotFastForward => Ok(PushResult::Moved),
                Sent::Rejected(message) => {
                    Err(GitError::Refused { url: redact_url(url), refname: refname.into(), message })
                }
            }
        }
    }
}

/// The origin's current value of `refname` (`None`: it does not exist).
fn remote_value(repo: &Repository, url: &str, auth: &Auth, refname: &str) -> Result<Option<Oid>, GitError> {
    let mut remote = repo.remote_anonymous(url).map_err(|e| unreachable(url, &e))?;
    remote.connect_auth(git2::Direction::Fetch, Some(callbacks(auth)), None).map_err(|e| unreachable(url, &e))?;
    let value = remote.list().map_err(|e| unreachable(url, &e))?.iter().find(|h| h.name() == refname).map(|h| h.oid());
    remote.disconnect().ok();
    Ok(value)
}

/// What the server said of one pushed refspec.
enum Sent {
    Accepted,
    NotFastForward,
    /// The server's status for the ref, with what its hooks printed.
    Rejected(String),
}

/// Pushes one refspec. A refusal by the server (hook, protected branch) is reported by libgit2
/// only through `push_update_reference`, so that callback is always read, and the sideband
/// ("remote:" lines, what hooks print) is kept as the useful half of the message.
fn send(repo: &Repository, url: &str, auth: &Auth, spec: &str) -> Result<Sent, GitError> {
    let mut remote = repo.remote_anonymous(url).map_err(|e| unreachable(url, &e))?;
    let rejection: RefCell<Option<String>> = RefCell::new(None);
    let remote_text: RefCell<String> = RefCell::new(String::new());
    let mut cb = callbacks(auth);
    cb.push_update_reference(|_name, status| {
        if let Some(msg) = status {
            *rejection.borrow_mut() = Some(msg.to_string());
        }
        Ok(())
    });
    cb.sideband_progress(|data| {
        let mut text = remote_text.borrow_mut();
        if text.len() < 4096 {
            text.push_str(&String::from_utf8_lossy(data));
        }
        true
    });
    let mut opts = PushOptions::new();
    opts.remote_callbacks(cb);
    match remote.push(&[spec], Some(&mut opts)) {
        Ok(()) => {}
        Err(e) if e.code() == ErrorCode::NotFastForward => return Ok(Sent::NotFastForward),
        Err(e) => return Err(unreachable(url, &e)),
    }
    drop(opts);
    let Some(mut message) = rejection.into_inner() else { return Ok(Sent::Accepted) };
    let said = remote_text.into_inner();
    let said = said.split(['\n', '\r']).map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" / ");
    if !said.is_empty() {
        message = format!("{message} (remote: {said})");
    }
    Ok(Sent::Rejected(message))
}

/// Sets `refname` on the origin to `new` if it currently is `expected` (`None`: must not exist).
pub(super) fn push_ref(
    repo: &Repository,
    url: &str,
    auth: &Auth,
    refname: &str,
    new: Oid,
    expected: Option<Oid>,
) -> Result<PushResult, GitError> {
    push_ref_with(repo, url, auth, refname, new, expected, false)
}

/// Like [`push_ref`], also when `new` does not descend from `expected` (replacing a proposal
/// branch with its replay): still compare-and-swap on `expected`.
pub(super) fn push_ref_with(
    repo: &Repository,
    url: &str,
    auth: &Auth,
    refname: &str,
    new: Oid,
    expected: Option<Oid>,
    rewrite: bool,
) -> Result<PushResult, GitError> {
    match local_path(url) {
        Some(path) => push_local(repo, url, &path, refname, new, expected),
        None => push_network(repo, url, auth, refname, new, expected, rewrite),
    }
}

fn push_local(
    repo: &Repository,
    url: &str,
    path: &Path,
    refname: &str,
    new: Oid,
    expected: Option<Oid>,
) -> Result<PushResult, GitError> {
    let origin = Repository::open_bare(path).map_err(|e| unreachable(url, &e))?;
    let (src, dst) = (repo.odb()?, origin.odb()?);
    copy_missing(repo, &src, &dst, new)?;
    let msg = "rollbackd";
    let result = match expected {
        Some(old) => origin.reference_matching(refname, new, true, old, msg).map(|_| ()),
        None => origin.reference(refname, new, false, msg).map(|_| ()),
    };
    match result {
        Ok(()) => Ok(PushResult::Pushed),
        Err(e) if matches!(e.code(), ErrorCode::Modified | ErrorCode::Exists | ErrorCode::Locked) => {
            Ok(PushResult::Moved)
        }
        Err(e) if e.code() == ErrorCode::NotFound => Ok(PushResult::Moved),
        Err(e) => Err(GitError::Refused { url: redact_url(url), refname: refname.into(), message: e.message().into() }),
    }
}

/// Copies `id` and everything it reaches that the destination lacks. Children are written
/// before their parents, so the destination never holds an object with missing parts.
fn copy_missing(repo: &Repository, src: &git2::Odb<'_>, dst: &git2::Odb<'_>, id: Oid) -> Result<(), GitError> {
    if dst.exists(id) {
        return Ok(());
    }
    let obj = src.read(id)?;
    match obj.kind() {
        git2::ObjectType::Commit => {
            let c = repo.find_commit(id)?;
            copy_missing(repo, src, dst, c.tree_id())?;
            for p in c.parent_ids() {
                copy_missing(repo, src, dst, p)?;
            }
        }
        git2::ObjectType::Tree => {
            let t = repo.find_tree(id)?;
            for e in t.iter() {
                // Submodule entries point at commits of another repository.
                if e.kind() != Some(git2::ObjectType::Commit) {
                    copy_missing(repo, src, dst, e.id())?;
                }
            }
        }
        git2::ObjectType::Tag => {
            let t = repo.find_tag(id)?;
            copy_missing(repo, src, dst, t.target_id())?;
        }
        _ => {}
    }
    dst.write(obj.kind(), obj.data())?;
    Ok(())
}

fn push_network(
    repo: &Repository,
    url: &str,
    auth: &Auth,
    refname: &str,
    new: Oid,
    expected: Option<Oid>,
    rewrite: bool,
) -> Result<PushResult, GitError> {
    // A push needs a local ref as its source; a scratch ref keeps the mirror's real refs
    // untouched until the origin accepted.
    let scratch = format!("refs/rollbackd/outgoing/{new}");
    repo.reference(&scratch, new, true, "rollbackd: outgoing")?;
    let result = push_network_inner(repo, url, auth, &scratch, refname, expected, rewrite);
    if let Ok(mut r) = repo.find_reference(&scratch) {
        let _ = r.delete();
    }
    result
}

fn push_network_inner(
    repo: &Repository,
    url: &str,
    auth: &Auth,
    scratch: &str,
    refname: &str,
    expected: Option<Oid>,
    rewrite: bool,
) -> Result<PushResult, GitError> {
    // Compare the origin's current value with what we planned against before sending anything.
    if remote_value(repo, url, auth, refname)? != expected {
        return Ok(PushResult::Moved);
    }
    // The remote's value was compared above; `+` only lifts the fast-forward rule for a rewrite.
    let spec = format!("{}{scratch}:{refname}", if rewrite { "+" } else { "" });
    match send(repo, url, auth, &spec)? {
        Sent::Accepted => Ok(PushResult::Pushed),
        Sent::NotFastForward => Ok(PushResult::Moved),
        // The server said no. If the ref moved meanwhile that is a lost race; otherwise it is a
        // refusal (hook, protection) that retrying cannot fix.
        Sent::Rejected(message) => {
            if remote_value(repo, url, auth, refname)? != expected {
                return Ok(PushResult::Moved);
            }
            Err(GitError::Refused { url: redact_url(url), refname: refname.to_string(), message })
        }
    }
}
