//! The target paths of a policy: globs over repository paths, and the cheap questions the planner
//! asks of them ("does this commit touch them?", "what must change to restore them?").
//!
//! Each glob has a literal directory prefix (`apps/checkout/prod` for `apps/checkout/prod/**`).
//! Comparing the tree ids at that prefix answers most questions without diffing anything, which is
//! what keeps planning independent of the size of the repository.

use globset::{Glob, GlobBuilder, GlobMatcher};

use super::GitError;
use super::tree_diff::{self, Limits};
use super::tree_edit::{self, Entry};

#[derive(Clone, Debug)]
struct PathGlob {
    pattern: String,
    /// Literal directories before the first wildcard ("" for a pattern that starts with one).
    prefix: String,
    /// The pattern is `prefix/**` or a literal path: everything under the prefix is in.
    whole: bool,
    matcher: GlobMatcher,
}

#[derive(Clone, Debug)]
pub struct PathSet {
    globs: Vec<PathGlob>,
}

fn build_glob(pattern: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(pattern).literal_separator(true).build()
}

impl PathSet {
    /// A pattern must be relative, without `..`, and a valid glob.
    pub fn validate_pattern(pattern: &str) -> Result<(), String> {
        crate::domain::plan::validate_path_pattern(pattern)
    }

    pub fn new(patterns: &[String]) -> Result<Self, String> {
        let mut globs = Vec::new();
        for pattern in patterns {
            Self::validate_pattern(pattern)?;
            let pattern = pattern.trim_end_matches('/').to_string();
            let comps: Vec<&str> = pattern.split('/').collect();
            let literal = comps.iter().take_while(|c| !c.contains(['*', '?', '[', '{'])).count();
            let whole = literal == comps.len() || (literal == comps.len() - 1 && comps[literal] == "**");
            let prefix = comps[..literal.min(comps.len())].join("/");
            let matcher = build_glob(&pattern).map_err(|e| e.to_string())?.compile_matcher();
            globs.push(PathGlob { pattern, prefix, whole, matcher });
        }
        Ok(PathSet { globs })
    }

    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.globs.iter().map(|g| g.pattern.as_str())
    }

    pub fn matches(&self, path: &str) -> bool {
        self.globs.iter().any(|g| {
            g.matcher.is_match(path) || (g.whole && (path == g.prefix || path.starts_with(&format!("{}/", g.prefix))))
        })
    }

    /// Whether any target path differs between two trees.
    pub(crate) fn differs(
        &self,
        repo: &git2::Repository,
        a: &git2::Tree<'_>,
        b: &git2::Tree<'_>,
    ) -> Result<bool, GitError> {
        for g in &self.globs {
            let (ea, eb) = (tree_edit::entry_at(repo, a, &g.prefix), tree_edit::entry_at(repo, b, &g.prefix));
            if ea == eb {
                continue;
            }
            if g.whole {
                return Ok(true);
            }
            if changed_under(repo, &g.prefix, ea, eb)?.iter().any(|p| g.matcher.is_match(p)) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The edits that make the target paths of `current` equal to those of `wanted`.
    pub(crate) fn restore_edits(
        &self,
        repo: &git2::Repository,
        wanted: &git2::Tree<'_>,
        current: &git2::Tree<'_>,
    ) -> Result<Vec<(String, Entry)>, GitError> {
        let mut edits = Vec::new();
        for g in &self.globs {
            let (ew, ec) =
                (tree_edit::entry_at(repo, wanted, &g.prefix), tree_edit::entry_at(repo, current, &g.prefix));
            if ew == ec {
                continue;
            }
            if g.whole {
                edits.push((g.prefix.clone(), ew));
                continue;
            }
            for path in changed_under(repo, &g.prefix, ew, ec)? {
                if g.matcher.is_match(&path) {
                    let entry = tree_edit::entry_at(repo, wanted, &path);
                    edits.push((path, entry));
                }
            }
        }
        edits.sort_by(|a, b| a.0.cmp(&b.0));
        edits.dedup_by(|a, b| a.0 == b.0);
        Ok(edits)
    }

    /// The files matching the set that differ between two trees.
    pub(crate) fn changed_files(
        &self,
        repo: &git2::Repository,
        a: &git2::Tree<'_>,
        b: &git2::Tree<'_>,
    ) -> Result<Vec<String>, GitError> {
        let mut out = Vec::new();
        for g in &self.globs {
            let (ea, eb) = (tree_edit::entry_at(repo, a, &g.prefix), tree_edit::entry_at(repo, b, &g.prefix));
            if ea != eb {
                out.extend(
                    changed_under(repo, &g.prefix, ea, eb)?.into_iter().filter(|p| g.whole || g.matcher.is_match(p)),
                );
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Whether every path that differs between the two trees is a target path.
    pub(crate) fn covers_all_changes(
        &self,
        repo: &git2::Repository,
        a: &git2::Tree<'_>,
        b: &git2::Tree<'_>,
    ) -> Result<bool, GitError> {
        Ok(tree_diff::tree_changes(repo, a, b, Limits::HISTORY)?.iter().all(|c| self.matches(&c.path)))
    }

    /// Every file under the target paths in `tree`, for scanning (artifact checks).
    pub(crate) fn files_in(
        &self,
        repo: &git2::Repository,
        tree: &git2::Tree<'_>,
    ) -> Result<Vec<(String, git2::Oid)>, GitError> {
        let mut out = Vec::new();
        for g in &self.globs {
            match tree_edit::entry_at(repo, tree, &g.prefix) {
                Some((oid, mode)) if mode == i32::from(git2::FileMode::Tree) => {
                    let keep = |path: &str| g.whole || g.matcher.is_match(path);
                    out.extend(tree_diff::files(repo, &g.prefix, oid, Limits::HISTORY, &keep)?);
                }
                Some((oid, _)) if g.whole || g.matcher.is_match(&g.prefix) => out.push((g.prefix.clone(), oid)),
                _ => {}
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// Paths (repository-relative) of files that differ between two entries found at `prefix`.
fn changed_under(repo: &git2::Repository, prefix: &str, a: Entry, b: Entry) -> Result<Vec<String>, GitError> {
    Ok(tree_diff::changes(repo, prefix, a, b, Limits::HISTORY)?.into_iter().map(|c| c.path).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_matching() {
        let set = PathSet::new(&[
            "apps/checkout/prod/**".into(),
            "shared/*.yaml".into(),
            "clusters/prod/checkout.yaml".into(),
        ])
        .unwrap();
        let g: Vec<_> = set.globs.iter().map(|g| (g.prefix.as_str(), g.whole)).collect();
        assert_eq!(g, vec![("apps/checkout/prod", true), ("shared", false), ("clusters/prod/checkout.yaml", true)]);
        assert!(set.matches("apps/checkout/prod/deployment.yaml"));
        assert!(set.matches("apps/checkout/prod/a/b.yaml"));
        assert!(!set.matches("apps/checkout/production/x.yaml"));
        assert!(set.matches("shared/x.yaml"));
        assert!(!set.matches("shared/sub/x.yaml"));
        assert!(set.matches("clusters/prod/checkout.yaml"));
    }

    #[test]
    fn rejects_escapes() {
        for bad in ["", "/etc/**", "apps/../x", "apps/[x"] {
            assert!(PathSet::validate_pattern(bad).is_err(), "{bad}");
        }
    }
}
