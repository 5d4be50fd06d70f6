//! Writing commits of whole files into a bare repository, without a worktree. Used by `demo`,
//! the tests and the benchmark generator to build config repos.

use std::path::Path;

use git2::{FileMode, Oid, Repository};
use jiff::Timestamp;

use super::tree_edit;
use super::{GitError, oid, sha};
use crate::domain::plan::Sha;

pub struct Seeder {
    repo: Repository,
    branch: String,
}

impl Seeder {
    /// Creates a bare repository at `path` (or opens it) whose HEAD is `branch`.
    pub fn init(path: &Path, branch: &str) -> Result<Self, GitError> {
        let repo = match Repository::open_bare(path) {
            Ok(r) => r,
            Err(_) => {
                let r = Repository::init_bare(path)?;
                r.set_head(&format!("refs/heads/{branch}"))?;
                r
            }
        };
        Ok(Seeder { repo, branch: branch.to_string() })
    }

    pub fn repo(&self) -> &Repository {
        &self.repo
    }

    pub fn head(&self) -> Option<Sha> {
        self.repo.refname_to_id(&format!("refs/heads/{}", self.branch)).ok().map(sha)
    }

    /// Commits `files` (path, new content or `None` to delete) on top of the branch.
    pub fn commit(
        &self,
        message: &str,
        files: &[(&str, Option<&str>)],
        author: &str,
        at: Timestamp,
    ) -> Result<Sha, GitError> {
        let parent = self.repo.refname_to_id(&format!("refs/heads/{}", self.branch)).ok();
        let parent_commit = parent.map(|p| self.repo.find_commit(p)).transpose()?;
        let mut root: Option<Oid> = parent_commit.as_ref().map(|c| c.tree_id());
        for (path, content) in files {
            let entry = match content {
                Some(text) => Some((self.repo.blob(text.as_bytes())?, i32::from(FileMode::Blob))),
                None => None,
            };
            root = tree_edit::set_path(&self.repo, root, path, entry)?;
        }
        let tree_id = match root {
            Some(r) => r,
            None => self.repo.treebuilder(None)?.write()?,
        };
        let tree = self.repo.find_tree(tree_id)?;
        let sig = git2::Signature::new(
            author,
            &format!("{}@example.com", author.replace(' ', ".")),
            &git2::Time::new(at.as_second(), 0),
        )?;
        let parents: Vec<&git2::Commit<'_>> = parent_commit.iter().collect();
        let id =
            self.repo.commit(Some(&format!("refs/heads/{}", self.branch)), &sig, &sig, message, &tree, &parents)?;
        Ok(sha(id))
    }

    /// An annotated tag at `target`.
    pub fn tag(&self, name: &str, target: &Sha, message: &str, at: Timestamp) -> Result<(), GitError> {
        let obj = self.repo.find_object(oid(target)?, None)?;
        let sig = git2::Signature::new("rollbackd", "rollbackd@localhost", &git2::Time::new(at.as_second(), 0))?;
        self.repo.tag(name, &obj, &sig, message, false)?;
        Ok(())
    }
}
