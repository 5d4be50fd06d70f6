//! The CA certificates libgit2 verifies an https origin with, loaded when an https origin is
//! first used rather than when libgit2 starts.
//!
//! libgit2 (built against OpenSSL) sets OpenSSL's default verify paths as it starts, and OpenSSL
//! parses every certificate of the bundle file there and then: on Debian 25 ms of a 45 ms CLI
//! command, paid by every command whether or not it speaks TLS. The binary starts libgit2 with
//! the bundle deferred ([`defer_ca_bundle`]); the first https remote loads exactly the files
//! libgit2 would have loaded ([`before_remote`]). An origin over ssh or on disk never pays; an
//! https origin pays what it paid before, once per process.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

/// Where the certificates are, once deferred: the environment's `SSL_CERT_FILE` /
/// `SSL_CERT_DIR` when they name something that exists, else what git2 would have probed.
struct Deferred {
    file: Option<PathBuf>,
    dir: Option<PathBuf>,
    loaded: Mutex<bool>,
}

static DEFERRED: OnceLock<Deferred> = OnceLock::new();

/// Starts libgit2 without loading the CA bundle. Call first thing in `main`, before any other
/// thread exists: it sets and restores two environment variables around libgit2's start.
#[cfg(all(unix, not(target_os = "macos")))]
#[allow(unsafe_code)]
pub fn defer_ca_bundle() {
    const FILE: &str = "SSL_CERT_FILE";
    const DIR: &str = "SSL_CERT_DIR";
    if DEFERRED.get().is_some() {
        return;
    }
    let probed = openssl_probe::probe();
    if probed.cert_file.is_none() && probed.cert_dir.is_none() {
        // Nothing found to load later: libgit2 keeps OpenSSL's compiled-in defaults.
        return;
    }
    let saved: [(&str, Option<OsString>); 2] = [(FILE, std::env::var_os(FILE)), (DIR, std::env::var_os(DIR))];
    // SAFETY: called at the start of `main`, before any other thread exists, so no thread reads
    // the environment while it changes, and both variables are as they were when it returns.
    // `/dev/null` exists (git2's probe keeps a variable naming something that exists) and holds
    // no certificate, so OpenSSL's default paths load nothing. Reading a setting starts libgit2.
    unsafe {
        std::env::set_var(FILE, "/dev/null");
        std::env::set_var(DIR, "/dev/null");
        let _ = git2::opts::get_mwindow_size();
        for (name, value) in &saved {
            match value {
                Some(v) => std::env::set_var(name, v),
                None => std::env::remove_var(name),
            }
        }
    }
    let _ = DEFERRED.set(Deferred { file: probed.cert_file, dir: probed.cert_dir, loaded: Mutex::new(false) });
}

/// libgit2 speaks TLS through the platform's own library here: nothing to defer.
#[cfg(not(all(unix, not(target_os = "macos"))))]
pub fn defer_ca_bundle() {}

/// Loads the deferred certificates before the first https remote of this process. Without
/// [`defer_ca_bundle`] (tests, the library used on its own), libgit2 loaded them as it started
/// and this does nothing.
#[allow(unsafe_code)]
pub(super) fn before_remote(url: &str) {
    if !url.get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://")) {
        return;
    }
    let Some(d) = DEFERRED.get() else { return };
    let mut loaded = d.loaded.lock().unwrap_or_else(|e| e.into_inner());
    if *loaded {
        return;
    }
    // SAFETY: these hand paths to libgit2's global TLS context under `loaded`'s lock, before
    // any connection of this process uses it (no https remote was made before this one).
    unsafe {
        if let Some(file) = &d.file
            && let Err(e) = git2::opts::set_ssl_cert_file(file.as_path())
        {
            tracing::warn!(file = %file.display(), error = %e.message(), "could not load the CA certificates");
        }
        if let Some(dir) = &d.dir
            && let Err(e) = git2::opts::set_ssl_cert_dir(dir.as_path())
        {
            tracing::warn!(dir = %dir.display(), error = %e.message(), "could not load the CA certificates");
        }
    }
    *loaded = true;
}
