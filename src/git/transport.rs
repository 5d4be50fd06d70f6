//! Talking to the origin: fetch into the mirror, and compare-and-swap pushes.
//!
//! Network remotes get a real compare-and-swap in one push (two HTTP requests): libgit2 reads
//! the origin's advertisement, `push_negotiation` compares it with the values we planned
//! against before anything is sent, and the old value libgit2 then sends for each ref is exactly
//! the one we checked, so receive-pack refuses the update under its lock if the ref moved since.
//! A token goes with the first request, not after a 401. The `+` a rewrite needs only lifts libgit2's
//! client-side fast-forward check; it never overwrites a value we did not see. A refusal (hook,
//! protected branch) comes back only through `push_update_reference`, which is why that callback
//! is always installed and read. Every ref of one write (a rollback commit's branch and its tag)
//! goes in one push. Local remotes (paths, `file://`) are written directly: libgit2's local
//! transport overwrites refs without comparing, so we copy the missing objects and update each
//! ref with `reference_matching`, which is atomic.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use git2::{Cred, CredentialType, ErrorCode, FetchOptions, Oid, PushOptions, RemoteCallbacks, Repository};

use super::{GitError, PushResult};
use crate::support::secret::SecretString;
use crate::support::url::redact_url;

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

/// The origin through the proxy the environment names, as git itself would: `https_proxy` /
/// `HTTPS_PROXY` (`http_proxy` for `http://` origins), minus `no_proxy` / `NO_PROXY`, or the
/// mirror's `http.proxy`. libgit2 uses no proxy unless asked to look.
fn proxy() -> git2::ProxyOptions<'static> {
    let mut p = git2::ProxyOptions::new();
    p.auto();
    p
}

/// The token as the first request's `Authorization`, for an http(s) origin: without it every
/// request is answered 401 first and sent again, a round trip each. Redirects are then not
/// followed, so the header never goes to another host.
fn auth_header(url: &str, auth: &Auth) -> Option<SecretString> {
    use base64::Engine;
    let token = auth.token.as_ref()?;
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return None;
    }
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{}", token.expose()));
    Some(SecretString::new(format!("Authorization: Basic {basic}")))
}

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
        Err(git2::Error::new(
            ErrorCode::Auth,
            git2::ErrorClass::Callback,
            "the remote wants credentials and none are configured (repo.token_env, repo.ssh_key_file)",
        ))
    });
    cb
}

/// What a failed exchange with the origin means: credentials it would not take (libgit2's
/// `Auth` code, which our credentials callback also sets), or an origin that cannot be reached.
fn unreachable(url: &str, e: &git2::Error) -> GitError {
    let (url, message) = (redact_url(url), e.message().to_string());
    if e.code() == ErrorCode::Auth { GitError::Auth { url, message } } else { GitError::Unreachable { url, message } }
}

pub(super) fn fetch(repo: &Repository, url: &str, auth: &Auth) -> Result<(), GitError> {
    // libgit2 calls a missing local path an "unsupported URL protocol": say what is wrong.
    if let Some(path) = local_path(url)
        && !path.exists()
    {
        let shown = std::path::absolute(&path).unwrap_or(path);
        return Err(GitError::Unreachable {
            url: redact_url(url),
            message: format!("no repository at {}", shown.display()),
        });
    }
    super::tls::before_remote(url);
    let mut remote = repo.remote_anonymous(url).map_err(|e| unreachable(url, &e))?;
    let mut opts = FetchOptions::new();
    opts.remote_callbacks(callbacks(auth));
    opts.proxy_options(proxy());
    let header = auth_header(url, auth);
    if let Some(h) = &header {
        opts.custom_headers(&[h.expose()]);
        opts.follow_redirects(git2::RemoteRedirect::None);
    }
    opts.prune(git2::FetchPrune::On);
    opts.download_tags(git2::AutotagOption::None);
    remote.fetch(&FETCH_REFSPECS, Some(&mut opts), None).map_err(|e| unreachable(url, &e))
}

/// Fetches one ref of the origin into `local` (a pull request's head, which the usual
/// refspecs leave out).
pub(super) fn fetch_one(
    repo: &Repository,
    url: &str,
    auth: &Auth,
    remote_ref: &str,
    local: &str,
) -> Result<(), GitError> {
    super::tls::before_remote(url);
    let mut remote = repo.remote_anonymous(url).map_err(|e| unreachable(url, &e))?;
    let mut opts = FetchOptions::new();
    opts.remote_callbacks(callbacks(auth));
    opts.proxy_options(proxy());
    let header = auth_header(url, auth);
    if let Some(h) = &header {
        opts.custom_headers(&[h.expose()]);
        opts.follow_redirects(git2::RemoteRedirect::None);
    }
    opts.download_tags(git2::AutotagOption::None);
    // FETCH_HEAD is shared by every fetch into the mirror; this one (a pull request's head,
    // fetched by the gate's thread beside the writer's fetches) needs none.
    opts.update_fetchhead(false);
    remote.fetch(&[format!("+{remote_ref}:{local}")], Some(&mut opts), None).map_err(|e| unreachable(url, &e))
}

/// The origin's values of `names` (`None`: absent), in that order, without fetching. A local
/// origin is read ref by ref; a network origin is asked for its advertisement, which is the
/// first step of every fetch and push too (libgit2 speaks protocol v0/v1, which has no
/// server-side filter), then filtered here.
/// The origin's values of `names`, and every ref under one of `prefixes` with its value
/// (sorted by name), in one look.
pub(super) type RemoteValues = (Vec<Option<Oid>>, Vec<(String, Oid)>);

pub(super) fn remote_values(
    url: &str,
    auth: &Auth,
    names: &[String],
    prefixes: &[String],
) -> Result<RemoteValues, GitError> {
    let under = |n: &str| prefixes.iter().any(|p| n.starts_with(p.as_str()));
    let mut listed_under: Vec<(String, Oid)>;
    let values;
    if let Some(path) = local_path(url) {
        let origin = Repository::open_bare(&path).map_err(|e| unreachable(url, &e))?;
        values = names.iter().map(|n| origin.refname_to_id(n).ok()).collect();
        listed_under = Vec::new();
        for prefix in prefixes {
            let refs = origin.references_glob(&format!("{prefix}*")).map_err(|e| unreachable(url, &e))?;
            for r in refs.flatten() {
                if let (Ok(name), Some(oid)) = (r.name(), r.target()) {
                    listed_under.push((name.to_string(), oid));
                }
            }
        }
    } else {
        super::tls::before_remote(url);
        let mut remote = git2::Remote::create_detached(url).map_err(|e| unreachable(url, &e))?;
        let connection = remote
            .connect_auth(git2::Direction::Fetch, Some(callbacks(auth)), Some(proxy()))
            .map_err(|e| unreachable(url, &e))?;
        let listed = connection.list().map_err(|e| unreachable(url, &e))?;
        values = names.iter().map(|n| listed.iter().find(|h| h.name() == n).map(|h| h.oid())).collect();
        listed_under = listed.iter().filter(|h| under(h.name())).map(|h| (h.name().to_string(), h.oid())).collect();
    }
    listed_under.sort();
    listed_under.dedup();
    Ok((values, listed_under))
}

/// The local directory of a path or `file://` URL, if it is one.
pub(super) fn local_path(url: &str) -> Option<PathBuf> {
    if let Some(rest) = url.strip_prefix("file://") {
        return Some(PathBuf::from(rest));
    }
    (!crate::support::url::looks_like_url(url)).then(|| PathBuf::from(url))
}

/// One ref update of a push: `refname` becomes `new` (`None`: deleted) if it currently is
/// `expected` (`None`: it must not exist).
#[derive(Clone, Copy, Debug)]
pub(super) struct Update<'a> {
    pub refname: &'a str,
    pub new: Option<Oid>,
    pub expected: Option<Oid>,
    /// `new` need not descend from `expected` (a proposal replayed onto a moved branch).
    pub rewrite: bool,
}

/// Applies `updates` on the origin, each compare-and-swap on its expected value. `Moved` when
/// the first that does not match is found before anything is written (local) or when the
/// origin's advertisement or receive-pack says a ref moved (network); nothing is written then.
pub(super) fn push_refs(
    repo: &Repository,
    url: &str,
    auth: &Auth,
    updates: &[Update<'_>],
) -> Result<PushResult, GitError> {
    match local_path(url) {
        Some(path) => push_local(repo, url, &path, updates),
        None => push_network(repo, url, auth, updates),
    }
}

/// The origin's current value of `refname` (`None`: it does not exist).
fn remote_value(repo: &Repository, url: &str, auth: &Auth, refname: &str) -> Result<Option<Oid>, GitError> {
    super::tls::before_remote(url);
    let mut remote = repo.remote_anonymous(url).map_err(|e| unreachable(url, &e))?;
    remote
        .connect_auth(git2::Direction::Fetch, Some(callbacks(auth)), Some(proxy()))
        .map_err(|e| unreachable(url, &e))?;
    let value = remote.list().map_err(|e| unreachable(url, &e))?.iter().find(|h| h.name() == refname).map(|h| h.oid());
    remote.disconnect().ok();
    Ok(value)
}

fn push_local(repo: &Repository, url: &str, path: &Path, updates: &[Update<'_>]) -> Result<PushResult, GitError> {
    let origin = Repository::open_bare(path).map_err(|e| unreachable(url, &e))?;
    let (src, dst) = (repo.odb()?, origin.odb()?);
    for u in updates {
        if let Some(new) = u.new {
            copy_missing(repo, &src, &dst, new)?;
        }
    }
    let refused = |refname: &str, e: git2::Error| GitError::Refused {
        url: redact_url(url),
        refname: refname.into(),
        message: e.message().into(),
    };
    for (i, u) in updates.iter().enumerate() {
        let msg = "rollbackd";
        let result = match (u.new, u.expected) {
            (Some(new), Some(old)) => origin.reference_matching(u.refname, new, true, old, msg).map(|_| ()),
            (Some(new), None) => origin.reference(u.refname, new, false, msg).map(|_| ()),
            (None, expected) => match origin.find_reference(u.refname) {
                Ok(mut r) if r.target() == expected => r.delete(),
                _ => return Ok(PushResult::Moved),
            },
        };
        match result {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.code(),
                    ErrorCode::Modified | ErrorCode::Exists | ErrorCode::Locked | ErrorCode::NotFound
                ) =>
            {
                // Later refs (a rollback's tag) name what the first one (its branch) carries:
                // once the first is written they follow it, so only a first update can lose.
                if i == 0 {
                    return Ok(PushResult::Moved);
                }
                tracing::warn!(refname = u.refname, "ref already exists on the origin");
            }
            Err(e) => return Err(refused(u.refname, e)),
        }
    }
    Ok(PushResult::Pushed)
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

fn push_network(repo: &Repository, url: &str, auth: &Auth, updates: &[Update<'_>]) -> Result<PushResult, GitError> {
    // A push needs local refs as sources; scratch refs keep the mirror's real refs untouched
    // until the origin accepted.
    let mut scratch = Vec::new();
    let mut specs = Vec::new();
    for (i, u) in updates.iter().enumerate() {
        match u.new {
            Some(new) => {
                let name = format!("refs/rollbackd/outgoing/{i}-{new}");
                repo.reference(&name, new, true, "rollbackd: outgoing")?;
                specs.push(format!("{}{name}:{}", if u.rewrite { "+" } else { "" }, u.refname));
                scratch.push(name);
            }
            None => specs.push(format!(":{}", u.refname)),
        }
    }
    let result = send_checked(repo, url, auth, updates, &specs);
    for name in scratch {
        if let Ok(mut r) = repo.find_reference(&name) {
            let _ = r.delete();
        }
    }
    result
}

/// One push, compare-and-swap: libgit2 reads the origin's advertisement and, before sending
/// anything, hands the updates it would make (each with the origin's current value) to
/// `push_negotiation`, which refuses the push if any differs from what was planned against;
/// receive-pack then checks the same old values under its lock. A refusal by the server (hook,
/// protected branch) is reported by libgit2 only through `push_update_reference`, so that
/// callback is always read, and the sideband ("remote:" lines, what hooks print) is kept as the
/// useful half of the message.
fn send_checked(
    repo: &Repository,
    url: &str,
    auth: &Auth,
    updates: &[Update<'_>],
    specs: &[String],
) -> Result<PushResult, GitError> {
    super::tls::before_remote(url);
    let mut remote = repo.remote_anonymous(url).map_err(|e| unreachable(url, &e))?;
    // refname → the server's refusal, for every ref it refused.
    let rejections: RefCell<Vec<(String, String)>> = RefCell::new(Vec::new());
    let remote_text: RefCell<String> = RefCell::new(String::new());
    let moved = std::cell::Cell::new(false);
    let pushed = {
        let mut cb = callbacks(auth);
        cb.push_negotiation(|proposed| {
            for p in proposed {
                let Some(u) = updates.iter().find(|u| p.dst_refname().is_ok_and(|n| n == u.refname)) else { continue };
                let current = Some(p.src()).filter(|o| !o.is_zero());
                if current != u.expected {
                    moved.set(true);
                    return Err(git2::Error::from_str("the origin moved since the plan"));
                }
            }
            Ok(())
        });
        cb.push_update_reference(|name, status| {
            if let Some(msg) = status {
                rejections.borrow_mut().push((name.to_string(), msg.to_string()));
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
        opts.proxy_options(proxy());
        if let Some(header) = auth_header(url, auth) {
            opts.custom_headers(&[header.expose()]);
            opts.follow_redirects(git2::RemoteRedirect::None);
        }
        remote.push(specs, Some(&mut opts))
    };
    if moved.get() {
        return Ok(PushResult::Moved);
    }
    match pushed {
        Ok(()) => {}
        Err(e) if e.code() == ErrorCode::NotFastForward => return Ok(PushResult::Moved),
        Err(e) => return Err(unreachable(url, &e)),
    }
    let rejections = rejections.into_inner();
    let Some((_, mut message)) = rejections.first().cloned() else { return Ok(PushResult::Pushed) };
    // libgit2 cannot ask for receive-pack's atomic mode: a ref the server accepted next to one it
    // refused (a tag beside a refused branch) is taken back at once, compare-and-swap on what
    // we set it to, so the origin never keeps half of a write.
    // Only creations are taken back (a tag): the first update, the branch, is the one refused.
    for u in updates.iter().filter(|u| u.expected.is_none() && !rejections.iter().any(|(n, _)| n == u.refname)) {
        let undo = Update { refname: u.refname, new: None, expected: u.new, rewrite: false };
        if let Err(e) = send_checked(repo, url, auth, &[undo], &[format!(":{}", u.refname)]) {
            tracing::warn!(refname = u.refname, error = %e, "could not take back half of a refused push");
        }
    }
    let said = remote_text.into_inner();
    let said = said.split(['\n', '\r']).map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" / ");
    if !said.is_empty() {
        message = format!("{message} (remote: {said})");
    }
    // The server said no. If the first ref moved meanwhile that is a lost race; otherwise it is
    // a refusal (hook, protection) that retrying cannot fix.
    let first = &updates[0];
    if remote_value(repo, url, auth, first.refname)? != first.expected {
        return Ok(PushResult::Moved);
    }
    Err(GitError::Refused { url: redact_url(url), refname: first.refname.to_string(), message })
}
