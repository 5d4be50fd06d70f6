//! Repository URLs: telling a network remote from a path, and printing one without its
//! credentials.

/// Whether a repo URL names a network remote (`https://`, `ssh://`, `git://`, `git@host:path`)
/// rather than a path on this machine (`file://` counts as a path).
pub(crate) fn looks_like_url(s: &str) -> bool {
    (s.contains("://") && !s.starts_with("file://")) || (s.contains('@') && s.contains(':'))
}

/// The URL without any userinfo, for messages and logs.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// What identifies a repository whatever way its URL is written: no credentials, no `file://`,
/// no trailing `/` or `.git`, a path made absolute and resolved, the rest lowercased (hosts
/// are, and GitHub's and GitLab's paths compare without case). Two URLs with the same key name
/// one repository.
pub(crate) fn repo_key(url: &str) -> String {
    let redacted = redact_url(url);
    let bare = redacted.strip_prefix("file://").unwrap_or(&redacted).trim_end_matches('/');
    let bare = bare.strip_suffix(".git").unwrap_or(bare).trim_end_matches('/');
    if looks_like_url(url) {
        let bare = bare.replace("://***@", "://");
        return bare.to_ascii_lowercase();
    }
    let path = std::path::Path::new(bare);
    let with_git = std::path::PathBuf::from(format!("{bare}.git"));
    std::fs::canonicalize(path)
        .or_else(|_| std::fs::canonicalize(&with_git).map(|p| p.with_extension("")))
        .unwrap_or_else(|_| path.to_path_buf())
        .to_string_lossy()
        .into_owned()
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
    fn one_repository_has_one_key_however_it_is_written() {
        let same = [
            "https://bot:s3cret@GitHub.com/Acme/Config.git",
            "https://github.com/acme/config/",
            "https://github.com/acme/config",
        ];
        for u in same {
            assert_eq!(repo_key(u), "https://github.com/acme/config", "{u}");
        }
        let dir = std::env::temp_dir().join(format!("repo-key-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("shop.git")).unwrap();
        let plain = repo_key(&dir.join("shop.git").to_string_lossy());
        for u in [format!("file://{}/shop.git/", dir.display()), format!("{}/x/../shop.git", dir.display())] {
            std::fs::create_dir_all(dir.join("x")).unwrap();
            assert_eq!(repo_key(&u), plain, "{u}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
