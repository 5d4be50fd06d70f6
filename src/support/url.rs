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
}
