//! `Plan`: what a rollback will change in git, computed before anything is written.

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::domain::artifacts::ArtifactChange;

/// A full 40-hex commit id. Kept as text so the domain does not depend on git2.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sha(pub String);

impl Sha {
    pub fn short(&self) -> &str {
        &self.0[..self.0.len().min(10)]
    }

    /// A full commit id (40 or 64 lowercase hex digits), as GitHub sends them.
    pub fn is_full_hex(s: &str) -> bool {
        (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }
}

impl fmt::Display for Sha {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How the target paths are brought back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Revert when the bad range is one plain commit that touches only the target paths and
    /// reverts cleanly; restore otherwise.
    #[default]
    Auto,
    /// Revert the bad commits, newest first.
    Revert,
    /// Put the target paths back exactly as they were at known-good.
    Restore,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Auto => "auto",
            Strategy::Revert => "revert",
            Strategy::Restore => "restore",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the known-good point came from; shown in every explanation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KnownGoodSource {
    /// An annotated `known-good/<service>/<env>/<stamp>` tag.
    Tag { name: String },
    /// The parent of the newest commit that touched the target paths.
    ParentOfLastChange { change: Sha },
    /// Given by the requester (`--to`, `to <rev>`).
    Requested { rev: String },
    /// Before the bad commits an earlier rollback undid for another target's paths only (one
    /// bad commit, several services alerting).
    Rollback { id: String },
    /// Where the first phase of phased rollback `id` went: every phase goes to the same place.
    Phases { id: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownGood {
    pub sha: Sha,
    pub source: KnownGoodSource,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitInfo {
    pub sha: Sha,
    pub summary: String,
    pub author: String,
    /// Committer time. On the first-parent line that is when the change reached the branch
    /// (a merge's own time for what it brought in), not when its author wrote it.
    pub time: Timestamp,
    /// Why git cannot fully undo it, by the policy's `irreversible` (files, trailers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub irreversible: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStat {
    pub path: String,
    pub insertions: usize,
    pub deletions: usize,
}

/// The resolved target of a policy for one event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub service: String,
    pub env: String,
    pub paths: Vec<String>,
    /// The steps of a phased rollback (`target.phases`), the last being `paths`; empty for a
    /// rollback in one commit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<crate::domain::phase::PhaseTarget>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub target: Target,
    pub branch: String,
    pub head: Sha,
    pub known_good: KnownGood,
    /// When the known-good commit reached the branch (its committer time), for
    /// `max_known_good_age`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_good_at: Option<Timestamp>,
    /// Commits after known-good that touch the target paths, newest first.
    pub bad_commits: Vec<CommitInfo>,
    /// Strategy asked for by the policy.
    pub requested_strategy: Strategy,
    /// Strategy used: never `Auto`.
    pub strategy: Strategy,
    /// Why `strategy` differs from what was asked, if it does (auto choice, revert conflict).
    pub strategy_note: Option<String>,
    /// The rollback that undid these bad commits for other paths only (another service's
    /// alert about the same change): this one undoes them for the target's paths too.
    #[serde(default)]
    pub completes: Option<String>,
    /// The tree the rollback commit will have (hex id).
    pub tree: String,
    /// The target paths end exactly as they were at known-good. A revert on top of later
    /// changes may instead produce a three-way merge that never existed on the branch.
    pub exact: bool,
    pub diffstat: Vec<FileStat>,
    pub artifacts: Vec<ArtifactChange>,
    /// Mutable references (`:latest`, untagged) in the target state, for the immutability guard.
    pub mutable_artifacts: Vec<String>,
    /// The target state has no files: the rollback deletes every file of the target paths
    /// (written only when a policy sets `action.allow_removal`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub leaves_no_files: bool,
    /// The phase this plan writes, for a phased rollback: its paths are `target.paths`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<crate::domain::phase::Phase>,
    /// Why the rest of a phased rollback is proposed instead of written phase by phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted: Option<String>,
    /// Why a later phase was written when it was (the check held, a person said continue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub went_on: Option<String>,
    /// Other targets this one commit rolls back too: one bad change, several services alerting
    /// in one notification. The tree, diffstat and artifacts cover them all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<AlsoTarget>,
    /// Changes to the target paths after the revision a GitOps controller reported applying:
    /// not blamed (never in `Rollback-Of`); kept by a revert, undone by a restore, and said so.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unapplied: Vec<CommitInfo>,
}

/// Another target folded into a plan, and the alert that asked for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlsoTarget {
    pub target: Target,
    pub trigger: String,
    pub policy: String,
}

impl Plan {
    /// The bad commits' ids, newest first (`Rollback-Of`).
    pub fn bad_commits_shas(&self) -> Vec<String> {
        self.bad_commits.iter().map(|c| c.sha.0.clone()).collect()
    }

    /// Age of the oldest change being undone: the point-of-no-return guard looks at this.
    pub fn oldest_bad_change(&self) -> Option<&CommitInfo> {
        self.bad_commits.iter().min_by_key(|c| c.time)
    }
}

/// A target path pattern must be relative, without `.` or `..` components, and a valid glob
/// (`*` within a directory, `**` across directories).
pub(crate) fn validate_path_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("empty path".into());
    }
    if pattern.starts_with('/') {
        return Err("paths are relative to the repository root; remove the leading `/`".into());
    }
    if pattern.split('/').any(|c| c == ".." || c == ".") {
        return Err("`.` and `..` are not allowed in paths".into());
    }
    globset::GlobBuilder::new(pattern).literal_separator(true).build().map(|_| ()).map_err(|e| e.kind().to_string())
}

/// Whether `pattern` (a target path glob: `*` within a directory, `**` across) could match `dir`,
/// a directory above it, or any path under it: whether a rollback of those paths could write
/// there. Conservative: when in doubt, it could.
pub(crate) fn could_reach(pattern: &str, dir: &str) -> bool {
    let dir: Vec<&str> = dir.split('/').filter(|c| !c.is_empty()).collect();
    let Some(comps) = components(pattern.trim_end_matches('/')) else {
        // An alternation or class holding a `/` spans directories: judged by the literal text
        // before its first wildcard alone.
        let literal: String = pattern.chars().take_while(|c| !is_special(*c)).collect();
        let dir = dir.join("/");
        return dir.starts_with(&literal) || literal.starts_with(&dir);
    };
    for (i, glob) in comps.iter().enumerate() {
        if glob.contains("**") {
            return true;
        }
        // Past `dir`: the rest of the pattern matches some path under it.
        let Some(name) = dir.get(i) else { return true };
        let matches = if glob.chars().any(is_special) {
            match globset::GlobBuilder::new(glob).literal_separator(true).build() {
                Ok(g) => g.compile_matcher().is_match(name),
                Err(_) => true,
            }
        } else {
            glob == name
        };
        if !matches {
            return false;
        }
    }
    // The pattern names `dir` or a directory above it: everything under it is in the target.
    true
}

fn is_special(c: char) -> bool {
    matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\')
}

/// The `/`-separated parts of a glob; `None` when a `/` falls inside `{...}` or `[...]`.
fn components(pattern: &str) -> Option<Vec<&str>> {
    let (mut depth, mut start, mut out) = (0usize, 0usize, Vec::new());
    for (i, c) in pattern.char_indices() {
        match c {
            '{' | '[' => depth += 1,
            '}' | ']' => depth = depth.saturating_sub(1),
            '/' if depth > 0 => return None,
            '/' => {
                out.push(&pattern[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&pattern[start..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_reaches_a_directory_when_it_could_match_anything_under_it() {
        let dir = ".rollbackd/policies";
        for reaches in [
            "**",
            "**/*.yml",
            "**/*.yaml",
            "*/policies/*",
            "*/*/*.yaml",
            ".rollbackd",
            ".rollbackd/**",
            ".rollbackd/policies",
            ".rollbackd/policies/10-prod.yaml",
            ".rollback*/**",
            ".rollbackd/*",
            ".rollbackd/{policies,other}/*.yaml",
            "{.rollbackd/policies,apps}/**",
            ".r[a-z]llbackd/p?licies/x",
            "*",
            ".rollbackd/policies/sub/deeper/*.json",
            "a**b/x",
        ] {
            assert!(could_reach(reaches, dir), "{reaches}");
        }
        for misses in [
            "apps/**",
            "apps/*/prod/**",
            "*/prod/**",
            ".rollbackd/other/**",
            ".rollbackd/policiesx/*",
            ".rollbackd/polic/*.yaml",
            "{apps,clusters}/**",
            "[a-z]*/**",
            "README.md",
            ".rollbackd/policies.yaml",
        ] {
            assert!(!could_reach(misses, dir), "{misses}");
        }
    }
}
