//! Looking at the config repo without changing it: the directories a templated target names,
//! what a change touches, and the rollback the planner would make at any commit (not only the
//! branch head). `readiness` and `plan` read through this; the writer's mirror and a pull
//! request's reader (on the gate's thread) both hand one out.

use std::collections::HashSet;
use std::path::Path;

use git2::{Oid, Repository};

use super::paths::PathSet;
use super::planner::{self, PlanRequest, Planned};
use super::{ConfigRepo, GitError, PullReader, oid, sha};
use crate::domain::plan::Sha;

/// At most this many entries of one directory are listed (a templated target expands over no
/// more than this).
const MAX_LISTED: usize = 5000;

/// Read-only questions about one repository; see the module doc.
pub struct Survey<'r> {
    repo: &'r Repository,
    branch: &'r str,
    /// The branch head as of the last fetch.
    head: Oid,
    max_commits: usize,
    trusted: &'r HashSet<Oid>,
}

impl ConfigRepo {
    /// Questions about the mirror at its branch head.
    pub fn survey(&self) -> Result<Survey<'_>, GitError> {
        Ok(Survey {
            repo: &self.repo,
            branch: &self.branch,
            head: self.head_oid()?,
            max_commits: self.max_commits,
            trusted: self.index.trusted_commits(),
        })
    }
}

impl PullReader {
    /// Questions about the mirror as this reader sees it (a pull request's head fetched into
    /// it), with the writer's trusted rollback commits as of when the reader was made.
    pub fn survey<'r>(&'r self, trusted: &'r HashSet<Oid>, max_commits: usize) -> Survey<'r> {
        Survey { repo: &self.repo, branch: &self.branch, head: self.branch_head, max_commits, trusted }
    }
}

impl Survey<'_> {
    pub fn head(&self) -> Sha {
        sha(self.head)
    }

    pub fn branch(&self) -> &str {
        self.branch
    }

    /// `rev` as a commit id. Only revisions of this repository.
    pub fn resolve(&self, rev: &str) -> Result<Sha, GitError> {
        let bad = |message: String| GitError::BadRevision { rev: crate::domain::ident::shown(rev), message };
        let commit =
            self.repo.revparse_single(rev).and_then(|o| o.peel_to_commit()).map_err(|e| bad(e.message().into()))?;
        Ok(sha(commit.id()))
    }

    /// Where `rev` forked from the branch (the branch head's merge base with it): what a
    /// change is compared with when no base is given.
    pub fn fork_point(&self, rev: &Sha) -> Result<Sha, GitError> {
        Ok(sha(self.repo.merge_base(self.head, oid(rev)?)?))
    }

    /// The directories directly under `dir` at `at` (`""`: the root), by name, at most
    /// [`MAX_LISTED`] entries read.
    pub fn subdirs(&self, at: &Sha, dir: &str) -> Result<Vec<String>, GitError> {
        let root = self.repo.find_commit(oid(at)?)?.tree()?;
        let tree = if dir.is_empty() {
            root
        } else {
            match root.get_path(Path::new(dir)) {
                Ok(e) if e.kind() == Some(git2::ObjectType::Tree) => self.repo.find_tree(e.id())?,
                _ => return Ok(Vec::new()),
            }
        };
        Ok(tree
            .iter()
            .take(MAX_LISTED)
            .filter(|e| e.kind() == Some(git2::ObjectType::Tree))
            .filter_map(|e| e.name().ok().map(str::to_string))
            .collect())
    }

    /// The files under `paths` that differ between `base` and `rev`.
    pub fn changed(&self, paths: &PathSet, base: &Sha, rev: &Sha) -> Result<Vec<String>, GitError> {
        let a = self.repo.find_commit(oid(base)?)?.tree()?;
        let b = self.repo.find_commit(oid(rev)?)?.tree()?;
        paths.changed_files(self.repo, &a, &b)
    }

    /// The rollback the planner makes with `head` as the branch head: the one code that plans
    /// every rollback, asked about a moment that has not happened (a change merged).
    pub fn plan_at(&self, head: &Sha, req: &PlanRequest<'_>) -> Result<Planned, GitError> {
        planner::plan(self.repo, self.branch, oid(head)?, self.max_commits, req, self.trusted)
    }
}
