//! Policies kept in the config repo (`policies: { repo_path: .rollbackd/policies }`): read from
//! the branch head when the engine starts (a warm mirror) and after every fetch. A change is
//! switched to whole, between two decisions, only when every file parses and every route
//! resolves; otherwise the set in force stays, and the refusal is logged, counted, shown in
//! `status` and, on the GitHub forge, reported on the commit that brought it (a check run with
//! each error at its file, line and column).

use std::path::PathBuf;

use serde::Serialize;
use tracing::{info, warn};

use super::{Ctx, EngineError};
use crate::domain::policy::PolicySet;
use crate::metrics;
use crate::support::diagnostic::Diagnostic;

/// Where the repo's policies stand.
#[derive(Debug, Default)]
pub(crate) struct RepoPolicies {
    /// The tree in force, once one was loaded.
    loaded: Option<String>,
    /// The last tree refused: one bad change is reported once, not at every fetch.
    refused: Option<String>,
    error: Option<PolicyRefusal>,
}

/// A change to the repo's policies that was not switched to.
#[derive(Clone, Debug, Serialize)]
pub struct PolicyRefusal {
    /// The branch head that carried it.
    pub commit: String,
    /// Each error, `path:line:col: error: message`.
    pub errors: Vec<String>,
}

impl Ctx {
    /// Whether there are policies to decide with: always for a directory on disk; for the repo,
    /// once a valid set was read from the branch.
    pub(super) fn policies_loaded(&self) -> bool {
        self.config.policies.repo_path().is_none() || self.repo_policies.loaded.is_some()
    }

    /// The last change to the repo's policies that was refused, while the branch still has it.
    pub(super) fn policy_refusal(&self) -> Option<&PolicyRefusal> {
        self.repo_policies.error.as_ref()
    }

    /// Reads the repo's policies again if the branch changed them; `true` when another set is
    /// now in force. Cheap when nothing changed: two lookups.
    pub(crate) fn sync_policies(&mut self) -> bool {
        let Some(dir) = self.config.policies.repo_path().map(str::to_string) else { return false };
        let (tree, head) = match self.repo.dir_at_head(&dir) {
            Ok(Some(found)) => found,
            Ok(None) => {
                let head = self.repo.head().map(|h| h.0).unwrap_or_default();
                let why = format!("{dir}: no such directory on {}", self.repo.branch());
                self.refuse(format!("missing:{head}"), head, vec![why]);
                return self.repo_policies.loaded.is_none() && self.fall_back(&dir);
            }
            // Not fetched yet: nothing to read.
            Err(_) => return false,
        };
        if self.repo_policies.loaded.as_deref() == Some(tree.as_str()) {
            // Back to the set in force (the broken change reverted): the refusal is over.
            if self.repo_policies.error.take().is_some() {
                self.repo_policies.refused = None;
                info!(commit = %head.short(), "the policies on the branch are the ones in force again");
                metrics::policies_loaded(self.config.member.as_deref(), self.policies.policies.len(), true);
                self.report_policies(&head.0, &[]);
            }
            return false;
        }
        if self.repo_policies.refused.as_deref() == Some(tree.as_str()) {
            return false;
        }
        match self.parse_repo_policies(&dir, &tree) {
            Ok(set) => {
                info!(
                    policies = set.policies.len(),
                    commit = %head.short(),
                    "policies from {}:{dir} are in force",
                    self.repo.branch()
                );
                self.policies = set;
                self.repo_policies = RepoPolicies { loaded: Some(tree), ..RepoPolicies::default() };
                metrics::policies_loaded(self.config.member.as_deref(), self.policies.policies.len(), true);
                self.report_policies(&head.0, &[]);
                true
            }
            Err(diags) => {
                self.refuse(tree, head.0, diags.iter().map(ToString::to_string).collect());
                // Nothing in force (a start on a broken branch): the newest earlier version that
                // is valid decides, as it would have had this process been running.
                self.repo_policies.loaded.is_none() && self.fall_back(&dir)
            }
        }
    }

    /// Puts the newest valid earlier version of `dir` in force; `true` when one was found.
    fn fall_back(&mut self, dir: &str) -> bool {
        let versions = match self.repo.dir_versions(dir, 20, 5_000) {
            Ok(v) => v,
            Err(e) => {
                warn!(error = %e, "reading the history of the policies failed");
                return false;
            }
        };
        let refused = self.repo_policies.refused.clone();
        for (tree, commit) in versions.into_iter().filter(|(t, _)| Some(t) != refused.as_ref()) {
            if let Ok(set) = self.parse_repo_policies(dir, &tree) {
                warn!(
                    policies = set.policies.len(),
                    commit = %commit.short(),
                    "the policies on the branch are invalid; using the last valid ones, from {}",
                    commit.short()
                );
                self.policies = set;
                self.repo_policies.loaded = Some(tree);
                metrics::policies_in_force(self.config.member.as_deref(), self.policies.policies.len(), false);
                return true;
            }
        }
        false
    }

    fn parse_repo_policies(&self, dir: &str, tree: &str) -> Result<PolicySet, Vec<Diagnostic>> {
        let files: Vec<(PathBuf, String)> = self
            .repo
            .yaml_files_in(tree)
            .map_err(|e| vec![Diagnostic::error(&PathBuf::from(dir), 0, 0, e.to_string())])?
            .into_iter()
            .map(|(name, text)| (PathBuf::from(dir).join(name), text))
            .collect();
        let texts: std::collections::HashMap<PathBuf, String> = files.iter().cloned().collect();
        let (set, warnings) = PolicySet::parse(&PathBuf::from(dir), files, Vec::new())?;
        for w in warnings {
            warn!("{w}");
        }
        super::check_routes(&self.config, &set, &|f| texts.get(f).cloned())?;
        let covering = covers_policies(&set, dir);
        if !covering.is_empty() {
            return Err(covering);
        }
        Ok(set)
    }

    fn refuse(&mut self, tree: String, commit: String, errors: Vec<String>) {
        if self.repo_policies.refused.as_deref() == Some(tree.as_str()) {
            return;
        }
        let stays = if self.repo_policies.loaded.is_some() {
            "the set in force stays"
        } else {
            "no policies are in force yet: events are answered 503 until a valid set is read"
        };
        warn!(commit = %commit, errors = %errors.join("; "), "the policies on the branch are invalid; {stays}");
        metrics::policies_loaded(self.config.member.as_deref(), self.policies.policies.len(), false);
        self.report_policies(&commit, &errors);
        self.repo_policies.refused = Some(tree);
        self.repo_policies.error = Some(PolicyRefusal { commit, errors });
    }

    /// Tells the forge how the policies at `commit` fared (nothing for the local forge).
    fn report_policies(&self, commit: &str, errors: &[String]) {
        if commit.is_empty() {
            return;
        }
        let in_force = self.policies.policies.len();
        self.outbox.report_policies(commit.to_string(), errors.to_vec(), in_force);
    }

    /// An error for work that needs policies before any was read from the repo (transient: the
    /// sender retries after the next fetch).
    pub(crate) fn need_policies(&self) -> Result<(), EngineError> {
        if self.policies_loaded() {
            return Ok(());
        }
        let why = match &self.repo_policies.error {
            Some(r) => r.errors.join("; "),
            None => "the config repo has not been fetched yet".into(),
        };
        Err(EngineError::PoliciesNotLoaded(why))
    }
}

/// A policy whose target paths could match anything in the policy directory could roll the
/// policies themselves back (or delete them) on an alert: refused. Judged on every path the
/// expression could render to (each unpinned label is `*`), by glob intersection: `**/*.yml`
/// reaches `.rollbackd/policies` as surely as `.rollbackd/**` does.
pub(crate) fn covers_policies(set: &PolicySet, dir: &str) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for p in &set.policies {
        for path in &p.target.paths {
            let expr = &path.value.0;
            // A template statement (`{% if %}`) can print anything: no telling where it reaches.
            if expr.contains("{%") || crate::domain::plan::could_reach(&p.path_glob(expr), dir) {
                out.push(Diagnostic::error(
                    &p.file,
                    path.referenced.line(),
                    path.referenced.column(),
                    format!(
                        "policy {}: target path `{expr}` could match files in the policy directory {dir}: a rollback could rewrite or delete the policies",
                        p.name()
                    ),
                ));
            }
        }
    }
    out
}
