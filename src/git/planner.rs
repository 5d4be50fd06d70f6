//! Planning a rollback in memory: known-good, the bad range, and the tree to commit.

use std::collections::HashSet;

use git2::{Commit, Oid, Repository, Tree};

use super::paths::PathSet;
use super::trailers::Trailers;
use super::tree_diff::{self, Bound, Limits};
use super::tree_edit;
use super::{GitError, commit_time, sha};
use crate::domain::artifacts;
use crate::domain::plan::{CommitInfo, FileStat, KnownGood, KnownGoodSource, Plan, Sha, Strategy, Target};
use crate::domain::policy::Irreversible;

pub struct PlanRequest<'a> {
    pub target: &'a Target,
    pub strategy: Strategy,
    /// A revert whose result for the target paths never existed on the branch is replaced by
    /// a restore of the exact known-good state (`action.exact`).
    pub exact: bool,
    /// A revision that overrides the known-good search.
    pub to: Option<&'a str>,
    /// What marks a bad commit as one git cannot fully undo.
    pub irreversible: Option<&'a Irreversible>,
    /// A phase after the first of a phased rollback: the bad commits its first phase named,
    /// undone in these paths to `to` whatever the earlier phases (rollbacks of the same
    /// commits) did already.
    pub continues: Option<&'a [String]>,
    /// `action.allow_removal`: a result with no files under the target paths may be written.
    pub allow_removal: bool,
    /// The newest commit that may be blamed (a full commit id on the branch): the revision a
    /// GitOps controller reported applying. The bad range ends there; later commits, not
    /// applied yet, are never named as undone (a revert keeps them, a restore says it undid them).
    pub upto: Option<&'a str>,
}

#[derive(Debug)]
pub enum Planned {
    Ready(Box<Plan>),
    /// The newest change to the target paths is a rollback, or every bad commit has been
    /// rolled back already.
    AlreadyRolledBack {
        id: String,
        commit: Sha,
        reason: String,
    },
    /// Nothing differs from known-good.
    Noop {
        reason: String,
    },
    /// The result would leave the target with no files (its only change is its first deploy):
    /// a rollback that deletes the service is no rollback, whoever asks, unless the policy
    /// allows removal. The plan is kept so a dry run still shows what it would have done.
    NothingToGoBackTo {
        plan: Box<Plan>,
        reason: String,
    },
}

/// The trailers of a rollback commit, also when it arrived as the second parent of a merge
/// (a proposal merged with a merge commit).
pub(crate) fn rollback_trailers(c: &Commit<'_>) -> Option<Trailers> {
    rollback_commit(c).map(|(t, _)| t)
}

/// Like [`rollback_trailers`], also naming the commit that carries them.
pub(crate) fn rollback_commit(c: &Commit<'_>) -> Option<(Trailers, Oid)> {
    if let Some(t) = Trailers::parse(c.message().unwrap_or_default()) {
        return Some((t, c.id()));
    }
    if c.parent_count() < 2 {
        return None;
    }
    c.parents().skip(1).find_map(|p| Trailers::parse(p.message().unwrap_or_default()).map(|t| (t, p.id())))
}

fn parent_tree<'r>(repo: &'r Repository, c: &Commit<'r>) -> Result<Tree<'r>, git2::Error> {
    match c.parent(0) {
        Ok(p) => p.tree(),
        Err(_) => repo.find_tree(repo.treebuilder(None)?.write()?),
    }
}

fn info(c: &Commit<'_>) -> CommitInfo {
    CommitInfo {
        sha: sha(c.id()),
        summary: c.summary().ok().flatten().unwrap_or("").to_string(),
        author: c.author().name().unwrap_or("").to_string(),
        time: commit_time(c),
        irreversible: Vec::new(),
    }
}

/// Files named in a change's marks; beyond, they are counted.
const MARKED_FILES: usize = 5;
/// Commits a merge brought in whose messages are read for trailers.
const MERGED_COMMITS: usize = 200;

/// Why git cannot fully undo `c` (a commit on the first-parent line, so a merge stands for all
/// it brought in): the irreversible files it changes and the irreversible trailers it carries.
fn irreversible_marks(
    repo: &Repository,
    c: &Commit<'_>,
    paths: Option<&PathSet>,
    marks: &Irreversible,
) -> Result<Vec<String>, GitError> {
    let mut out = Vec::new();
    if let Some(paths) = paths {
        let files = paths.changed_files(repo, &parent_tree(repo, c)?, &c.tree()?)?;
        out.extend(files.iter().take(MARKED_FILES).map(|f| format!("changes `{f}`")));
        if files.len() > MARKED_FILES {
            out.push(format!("changes {} more irreversible files", files.len() - MARKED_FILES));
        }
    }
    if marks.trailers.is_empty() {
        return Ok(out);
    }
    let mut messages = vec![(None, c.message_raw().unwrap_or_default().to_string())];
    if c.parent_count() > 1 {
        let mut walk = repo.revwalk()?;
        for side in c.parent_ids().skip(1) {
            walk.push(side)?;
        }
        walk.hide(c.parent_id(0)?)?;
        for id in walk.take(MERGED_COMMITS) {
            let side = repo.find_commit(id?)?;
            messages.push((Some(sha(side.id())), side.message_raw().unwrap_or_default().to_string()));
        }
    }
    for (from, message) in messages {
        let Ok(found) = git2::message_trailers_strs(&message) else { continue };
        for (key, value) in found.iter() {
            if let Some(t) = marks.trailers.iter().find(|t| t.matches(key, value)) {
                let said = match &from {
                    None => format!("carries `{t}`"),
                    Some(side) => format!("brings in {} carrying `{t}`", side.short()),
                };
                if !out.contains(&said) {
                    out.push(said);
                }
            }
        }
    }
    Ok(out)
}

pub(super) fn plan(
    repo: &Repository,
    branch: &str,
    head: Oid,
    max_commits: usize,
    req: &PlanRequest<'_>,
    trusted: &HashSet<Oid>,
) -> Result<Planned, GitError> {
    let target = req.target;
    let paths =
        PathSet::new(&target.paths).map_err(|m| GitError::BadRevision { rev: target.paths.join(" "), message: m })?;
    let head_commit = repo.find_commit(head)?;
    // Controller-bounded blame: history is read from the applied revision, not the head.
    let bound = match req.upto {
        Some(rev) => applied_revision(repo, branch, rev, head)?,
        None => head,
    };
    let planning = Planning { repo, branch, head, head_commit, bound, max_commits, req, paths, trusted };
    if let Some(bad) = req.continues {
        return planning.continue_phase(bad);
    }
    match planning.known_good()? {
        Found::KnownGood(known_good) => planning.undo_after(known_good),
        Found::Leftover(known_good, left) => planning.finish(known_good, NewTree::Leftover(left)),
        Found::Settled(planned) => Ok(planned),
    }
}

/// What every stage of planning reads: the repo and its branch, the request, and the history's
/// bounds.
struct Planning<'a, 'r> {
    repo: &'r Repository,
    branch: &'a str,
    head: Oid,
    head_commit: Commit<'r>,
    /// Where the bad range ends: the revision a controller reported applying, else the head.
    bound: Oid,
    max_commits: usize,
    req: &'a PlanRequest<'a>,
    paths: PathSet,
    trusted: &'a HashSet<Oid>,
}

/// Where a rollback goes back to.
enum Found<'r> {
    /// Known-good: the bad range after it is undone.
    KnownGood(KnownGood),
    /// Another target's rollback is the newest change here and left files of these paths
    /// holding the commits it undid: those files go back to before them.
    Leftover(KnownGood, Leftover<'r>),
    /// Nothing to go back to: this target was rolled back already.
    Settled(Planned),
}

impl<'r> Planning<'_, 'r> {
    /// A later phase goes where the first went, undoing the commits its first phase named.
    fn continue_phase(&self, bad: &[String]) -> Result<Planned, GitError> {
        let rev = self.req.to.ok_or_else(|| GitError::BadRevision {
            rev: String::new(),
            message: "a later phase goes where the first went: `to` is needed".into(),
        })?;
        if bad.is_empty() {
            return Err(GitError::BadRevision { rev: rev.to_string(), message: "no bad commits to continue".into() });
        }
        let known_good = requested(self.repo, rev, self.head)?;
        let commits = bad
            .iter()
            .map(|s| Ok(self.repo.find_commit(super::oid(&Sha(s.clone()))?)?))
            .collect::<Result<Vec<_>, GitError>>()?;
        self.finish(known_good, NewTree::Range(commits))
    }

    /// The revision asked for; else the newest known-good tag; else the state before the
    /// newest change to the target's paths.
    fn known_good(&self) -> Result<Found<'r>, GitError> {
        let target = self.req.target;
        if let Some(rev) = self.req.to {
            return Ok(Found::KnownGood(requested(self.repo, rev, self.bound)?));
        }
        // A controller's failure says its revision is bad: a known-good tag there (written when
        // the same revision was reported healthy a moment before) is not where to go back to.
        let tag = newest_known_good_tag(self.repo, &target.service, &target.env, self.bound, self.req.upto.is_none())?;
        if let Some(kg) = tag {
            return Ok(Found::KnownGood(kg));
        }
        match last_change(self.repo, &self.paths, self.bound, self.max_commits)? {
            LastChange::Commit(change) => {
                let c = self.repo.find_commit(change)?;
                let Ok(parent) = c.parent(0) else {
                    return Err(no_known_good(target, &self.paths, self.max_commits));
                };
                Ok(Found::KnownGood(KnownGood {
                    sha: sha(parent.id()),
                    source: KnownGoodSource::ParentOfLastChange { change: sha(change) },
                }))
            }
            LastChange::Rollback { id, commit } => {
                match leftover(self.repo, &self.paths, target, &self.head_commit, commit, self.trusted)? {
                    Some(left) => {
                        let kg = KnownGood { sha: sha(left.before), source: KnownGoodSource::Rollback { id } };
                        Ok(Found::Leftover(kg, left))
                    }
                    None => Ok(Found::Settled(Planned::AlreadyRolledBack {
                        reason: format!("the newest change to {} is rollback {id}", paths_list(&self.paths)),
                        id,
                        commit: sha(commit),
                    })),
                }
            }
            LastChange::None => Err(no_known_good(target, &self.paths, self.max_commits)),
        }
    }

    /// The commits after known-good undone; when rollbacks among them undid them already, what
    /// those left in these paths, or nothing.
    fn undo_after(&self, known_good: KnownGood) -> Result<Planned, GitError> {
        let (repo, paths, bound) = (self.repo, &self.paths, self.bound);
        let (mut bad, rollbacks) = bad_range(repo, paths, bound, &known_good, self.max_commits, self.trusted)?;
        // rollbackd-controllers: the commits after the applied revision (not applied yet).
        let later = match bound == self.head {
            true => None,
            false => Some(unapplied(repo, paths, self.head, bound, self.max_commits, self.trusted, &mut bad)?),
        };
        if let Some(Unapplied { undone_by: Some((id, commit)), .. }) = later.as_ref().filter(|_| bad.is_empty()) {
            return Ok(Planned::AlreadyRolledBack {
                reason: format!(
                    "the applied revision {}'s changes were already rolled back by {id}",
                    sha(bound).short()
                ),
                id: id.clone(),
                commit: sha(*commit),
            });
        }
        if !bad.is_empty() {
            let planned = self.finish(known_good, NewTree::Range(bad))?;
            return Ok(match later {
                Some(later) => later.said_in(planned),
                None => planned,
            });
        }
        for (id, commit) in &rollbacks {
            if let Some(left) = leftover(repo, paths, self.req.target, &self.head_commit, *commit, self.trusted)? {
                let kg = KnownGood { sha: sha(left.before), source: KnownGoodSource::Rollback { id: id.clone() } };
                return self.finish(kg, NewTree::Leftover(left));
            }
        }
        if let Some((id, commit)) = rollbacks.into_iter().next() {
            return Ok(Planned::AlreadyRolledBack {
                reason: format!(
                    "the changes after known-good {} were already rolled back by {id}",
                    known_good.sha.short()
                ),
                id,
                commit: sha(commit),
            });
        }
        Ok(Planned::Noop {
            reason: format!("no commit after known-good {} touches {}", known_good.sha.short(), paths_list(paths)),
        })
    }
}

/// The bad commits, and the rollbacks among them (id, commit).
type BadRange<'r> = (Vec<Commit<'r>>, Vec<(String, Oid)>);

/// The commits after known-good that touched the target's paths, along the first-parent
/// history (a merge is judged by what it brought in, so its side branch is never reverted
/// twice), less those a rollback among them undid; and those rollbacks, newest first.
fn bad_range<'r>(
    repo: &'r Repository,
    paths: &PathSet,
    head: Oid,
    known_good: &KnownGood,
    max_commits: usize,
    trusted: &HashSet<Oid>,
) -> Result<BadRange<'r>, GitError> {
    // No sorting: libgit2 reads the whole history before yielding the first commit of any
    // sorted walk. First-parent order is already newest first.
    let mut walk = repo.revwalk()?;
    walk.push(head)?;
    walk.hide(super::oid(&known_good.sha)?)?;
    walk.simplify_first_parent()?;
    let mut bad: Vec<Commit<'_>> = Vec::new();
    let mut covered: HashSet<String> = HashSet::new();
    let mut rollbacks: Vec<(String, Oid)> = Vec::new();
    for (n, id) in walk.enumerate() {
        if n >= max_commits {
            return Err(GitError::RangeTooLong { known_good: known_good.sha.short().to_string(), limit: max_commits });
        }
        let c = repo.find_commit(id?)?;
        if !paths.differs(repo, &c.tree()?, &parent_tree(repo, &c)?)? {
            continue;
        }
        // Only a rollback rollbackd pushed (its tag names it) undid anything: a look-alike's
        // `Rollback-Of` would hide a bad commit, so it is a change like any other.
        match rollback_trailers(&c).filter(|_| trusted.contains(&c.id())) {
            Some(t) => {
                covered.extend(t.of);
                rollbacks.push((t.id, c.id()));
            }
            None => bad.push(c),
        }
    }
    bad.retain(|c| !covered.contains(&c.id().to_string()));
    Ok((bad, rollbacks))
}

/// The revision a controller reported applying, as a commit of the branch: a full commit id
/// that is the head or in its history. Anything else names nothing rollbackd may blame.
fn applied_revision(repo: &Repository, branch: &str, rev: &str, head: Oid) -> Result<Oid, GitError> {
    let bad_rev = |message: String| GitError::BadRevision { rev: crate::domain::ident::shown(rev), message };
    if !Sha::is_full_hex(rev) {
        return Err(bad_rev("the applied revision is not a full commit id".into()));
    }
    let id = Oid::from_str(rev).map_err(|e| bad_rev(e.message().to_string()))?;
    if repo.find_commit(id).is_err() {
        return Err(bad_rev(format!("the applied revision is not a commit of branch {branch}: nothing to blame")));
    }
    if id != head && !repo.graph_descendant_of(head, id)? {
        return Err(bad_rev(format!(
            "the applied revision is not in the history of branch {branch}: nothing to blame"
        )));
    }
    Ok(id)
}

/// What came after the applied revision: changes to the target paths the controller has not
/// applied, and a rollback among them that already undid the bad range.
struct Unapplied {
    changes: Vec<CommitInfo>,
    undone_by: Option<(String, Oid)>,
}

/// Reads the commits between the applied revision and the head, and drops from `bad` those a
/// rollback among them undid already.
fn unapplied(
    repo: &Repository,
    paths: &PathSet,
    head: Oid,
    bound: Oid,
    max_commits: usize,
    trusted: &HashSet<Oid>,
    bad: &mut Vec<Commit<'_>>,
) -> Result<Unapplied, GitError> {
    let from = KnownGood { sha: sha(bound), source: KnownGoodSource::Requested { rev: sha(bound).0 } };
    let (changes, rollbacks) = bad_range(repo, paths, head, &from, max_commits, trusted)?;
    let mut undone_by = None;
    for (id, commit) in &rollbacks {
        let of = repo.find_commit(*commit).ok().and_then(|c| rollback_trailers(&c)).map(|t| t.of).unwrap_or_default();
        let before = bad.len();
        bad.retain(|c| !of.contains(&c.id().to_string()));
        if bad.len() < before && undone_by.is_none() {
            undone_by = Some((id.clone(), *commit));
        }
    }
    Ok(Unapplied { changes: changes.iter().map(info).collect(), undone_by })
}

impl Unapplied {
    /// The plan, saying what became of the changes not applied yet.
    fn said_in(self, planned: Planned) -> Planned {
        let Planned::Ready(mut plan) = planned else { return planned };
        if self.changes.is_empty() {
            return Planned::Ready(plan);
        }
        let shas = self.changes.iter().map(|c| c.sha.short().to_string()).collect::<Vec<_>>().join(", ");
        let n = self.changes.len();
        let said = match plan.strategy {
            Strategy::Restore => format!(
                "the restore also undoes {n} later change(s) the controller has not applied yet ({shas}); they are not blamed"
            ),
            _ => format!("{n} later change(s) the controller has not applied yet are kept ({shas})"),
        };
        plan.strategy_note = Some(plan.strategy_note.map_or_else(|| said.clone(), |n| format!("{n}; {said}")));
        plan.unapplied = self.changes;
        Planned::Ready(plan)
    }
}

/// How the new tree of a plan is found.
enum NewTree<'r> {
    /// The bad range after known-good, reverted or restored as the policy says.
    Range(Vec<Commit<'r>>),
    /// Files another target's rollback left holding the commits it undid.
    Leftover(Leftover<'r>),
}

/// What a plan's new tree undoes, and how.
struct Undo<'r> {
    bad: Vec<Commit<'r>>,
    strategy: Strategy,
    tree: Oid,
    note: Option<String>,
    /// The rollback whose leftovers this completes.
    completes: Option<String>,
    /// The target paths look exactly as they once did on the branch.
    exact: bool,
}

impl<'r> Planning<'_, 'r> {
    /// The plan that goes back to `known_good` with the new tree `built`: every file it writes
    /// still parses, and one that would delete the target is refused unless the policy allows it.
    fn finish(&self, known_good: KnownGood, built: NewTree<'r>) -> Result<Planned, GitError> {
        let (repo, req, paths) = (self.repo, self.req, &self.paths);
        let target = req.target;
        let head_tree = repo.find_commit(self.head)?.tree()?;
        let kg_commit = repo.find_commit(super::oid(&known_good.sha)?)?;
        let known_good_at = super::commit_time(&kg_commit);
        let kg_tree = kg_commit.tree()?;
        let Undo { bad, strategy, tree, note, completes, exact } = self.undo(built, &head_tree, &kg_tree)?;
        if tree == head_tree.id() {
            return Ok(Planned::Noop {
                reason: format!("{} already equal known-good {}", paths_list(paths), known_good.sha.short()),
            });
        }
        let bad_commits = bad_commits(repo, req.irreversible, &bad)?;
        let new_tree = repo.find_tree(tree)?;
        let (diffstat, artifact_changes) = describe_change(repo, &head_tree, &new_tree)?;
        for f in &diffstat {
            check_parses(repo, &f.path, &head_tree, &kg_tree, &new_tree)?;
        }
        let (mutable, leaves_no_files) = mutable_artifacts(repo, paths, &new_tree)?;
        let plan = Box::new(Plan {
            target: target.clone(),
            branch: self.branch.to_string(),
            head: sha(self.head),
            known_good,
            known_good_at: Some(known_good_at),
            bad_commits,
            requested_strategy: req.strategy,
            strategy,
            strategy_note: note,
            completes,
            tree: tree.to_string(),
            exact,
            diffstat,
            artifacts: artifact_changes,
            mutable_artifacts: mutable,
            leaves_no_files,
            phase: None,
            halted: None,
            went_on: None,
            also: Vec::new(),
            unapplied: Vec::new(),
        });
        // A later phase is part of a plan that was checked whole before its first phase was
        // written (a canary overlay the bad change added may go while the rest stays).
        if leaves_no_files && !req.allow_removal && req.continues.is_none() {
            let first = plan.bad_commits.last().map_or(&plan.known_good.sha, |c| &c.sha);
            let reason = format!(
                "nothing to go back to: {}/{} has no state before {}; rolling back would delete every file of {}",
                target.service,
                target.env,
                first.short(),
                paths_list(paths)
            );
            return Ok(Planned::NothingToGoBackTo { plan, reason });
        }
        Ok(Planned::Ready(plan))
    }

    /// The new tree: the bad range reverted or restored as the policy says (restored exactly
    /// under `action.exact` when a revert would make a state the branch never had), or the
    /// files another target's rollback left.
    fn undo(&self, built: NewTree<'r>, head_tree: &Tree<'_>, kg_tree: &Tree<'_>) -> Result<Undo<'r>, GitError> {
        let (repo, paths) = (self.repo, &self.paths);
        let mut undo = match built {
            NewTree::Range(bad) => {
                let (strategy, tree, note) =
                    choose_and_build(repo, paths, self.req.strategy, &bad, head_tree, kg_tree)?;
                let exact = strategy == Strategy::Restore || !paths.differs(repo, &repo.find_tree(tree)?, kg_tree)?;
                Undo { bad, strategy, tree, note, completes: None, exact }
            }
            NewTree::Leftover(left) => {
                let said = format!(
                    "rollback {} of {} undid {} only for its own paths; these files still held {}: {}",
                    left.id,
                    left.of,
                    left.commits.iter().map(|c| sha(c.id()).short().to_string()).collect::<Vec<_>>().join(", "),
                    if left.commits.len() == 1 { "it" } else { "them" },
                    left.files.join(", ")
                );
                // Only those files change, each exactly as it was before the commit that changed
                // it: the rest of the target's paths keep what happened since.
                Undo {
                    bad: left.commits,
                    strategy: Strategy::Restore,
                    tree: left.tree,
                    note: Some(said),
                    completes: Some(left.id),
                    exact: true,
                }
            }
        };
        if !undo.exact && self.req.exact {
            undo.strategy = Strategy::Restore;
            undo.tree = restore_tree(repo, paths, kg_tree, head_tree)?;
            undo.note = Some(
                "action.exact: a revert would leave a state that never existed on the branch; restored known-good exactly"
                    .into(),
            );
            undo.exact = true;
        }
        if !undo.exact {
            let said = "the result is a three-way merge: the target paths never looked like this on the branch";
            undo.note = Some(undo.note.map_or_else(|| said.to_string(), |n| format!("{n}; {said}")));
        }
        Ok(undo)
    }
}

/// The bad commits as the plan names them, with why git cannot fully undo each when the
/// policy says what marks that.
fn bad_commits(
    repo: &Repository,
    irreversible: Option<&Irreversible>,
    bad: &[Commit<'_>],
) -> Result<Vec<CommitInfo>, GitError> {
    let marked = match irreversible {
        Some(i) if !i.paths.is_empty() => Some(
            PathSet::new(&i.paths.iter().map(|p| p.0.clone()).collect::<Vec<_>>())
                .map_err(|message| GitError::BadRevision { rev: "irreversible.paths".into(), message })?,
        ),
        _ => None,
    };
    let mut bad_commits = Vec::with_capacity(bad.len());
    for c in bad {
        let mut i = info(c);
        if let Some(marks) = irreversible {
            i.irreversible = irreversible_marks(repo, c, marked.as_ref(), marks)?;
        }
        bad_commits.push(i);
    }
    Ok(bad_commits)
}

/// The mutable artifacts the target's files reference in `tree` (`path:line: name `value``),
/// and whether it has no files there at all.
fn mutable_artifacts(repo: &Repository, paths: &PathSet, tree: &Tree<'_>) -> Result<(Vec<String>, bool), GitError> {
    let mut mutable = Vec::new();
    let files = paths.files_in(repo, tree)?;
    let leaves_no_files = files.is_empty();
    for (path, blob) in files {
        if let Some(text) = text_of(repo, blob) {
            for r in artifacts::scan(&text).into_iter().filter(|r| r.mutable) {
                mutable.push(format!("{path}:{}: {} `{}`", r.line, r.name, r.value));
            }
        }
    }
    Ok((mutable, leaves_no_files))
}

/// A YAML or JSON file the rollback writes must parse when it parsed before (at the head or at
/// known-good): templated YAML that never parsed is left alone.
fn check_parses(repo: &Repository, path: &str, head: &Tree<'_>, kg: &Tree<'_>, new: &Tree<'_>) -> Result<(), GitError> {
    let kind = match path.rsplit('.').next() {
        Some("yaml" | "yml") => "YAML",
        Some("json") => "JSON",
        _ => return Ok(()),
    };
    let parse = |text: &str| -> Result<(), String> {
        if kind == "JSON" {
            serde_json::from_str::<serde::de::IgnoredAny>(text).map(|_| ()).map_err(|e| e.to_string())
        } else {
            serde_saphyr::from_multiple::<serde::de::IgnoredAny>(text).map(|_| ()).map_err(|e| e.to_string())
        }
    };
    let text_at = |tree: &Tree<'_>| tree.get_path(std::path::Path::new(path)).ok().and_then(|e| text_of(repo, e.id()));
    let Some(after) = text_at(new) else { return Ok(()) };
    let parsed_before = [head, kg].iter().any(|t| text_at(t).is_some_and(|b| parse(&b).is_ok()));
    match parse(&after) {
        Err(message) if parsed_before => {
            Err(GitError::BrokenResult { path: path.to_string(), message: format!("not {kind}: {message}") })
        }
        _ => Ok(()),
    }
}

fn paths_list(paths: &PathSet) -> String {
    paths.patterns().collect::<Vec<_>>().join(", ")
}

fn no_known_good(target: &Target, paths: &PathSet, searched: usize) -> GitError {
    GitError::NoKnownGood {
        service: target.service.clone(),
        env: target.env.clone(),
        paths: paths_list(paths),
        searched,
    }
}

fn requested(repo: &Repository, rev: &str, head: Oid) -> Result<KnownGood, GitError> {
    let bad_rev = |message: String| GitError::BadRevision { rev: rev.to_string(), message };
    let commit = repo
        .revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map_err(|e| bad_rev(format!("not found in the config repo ({})", e.message())))?;
    if commit.id() != head && !repo.graph_descendant_of(head, commit.id())? {
        return Err(bad_rev(
            "is not in the history of the branch; rolling back to it would drop unrelated work".into(),
        ));
    }
    Ok(KnownGood { sha: sha(commit.id()), source: KnownGoodSource::Requested { rev: rev.to_string() } })
}

/// The newest `known-good/<service>/<env>/*` tag whose commit is in the history of `head`;
/// at `head` itself only when `at_head` (not when `head` is a revision reported failing).
fn newest_known_good_tag(
    repo: &Repository,
    service: &str,
    env: &str,
    head: Oid,
    at_head: bool,
) -> Result<Option<KnownGood>, GitError> {
    let mut candidates = Vec::new();
    // The glob is a constant: service and env are compared as plain strings, never put into a
    // pattern.
    for r in repo.references_glob("refs/tags/known-good/*")? {
        let r = r?;
        let Some(name) = r.shorthand().ok().map(str::to_string) else {
            continue;
        };
        let mut parts = name.split('/').skip(1);
        if parts.next() != Some(service) || parts.next() != Some(env) || parts.clone().count() != 1 {
            continue;
        }
        let Ok(commit) = r.peel_to_commit() else {
            continue;
        };
        let when = match r.peel_to_tag() {
            Ok(tag) => tag.tagger().map_or(commit.time().seconds(), |s| s.when().seconds()),
            Err(_) => commit.time().seconds(),
        };
        candidates.push((when, name, commit.id()));
    }
    candidates.sort_by(|a, b| b.cmp(a));
    for (_, name, id) in candidates {
        if (at_head && id == head) || repo.graph_descendant_of(head, id)? {
            return Ok(Some(KnownGood { sha: sha(id), source: KnownGoodSource::Tag { name } }));
        }
    }
    Ok(None)
}

enum LastChange {
    Commit(Oid),
    Rollback { id: String, commit: Oid },
    None,
}

/// Files of these paths that another target's rollback left holding the commits it undid.
struct Leftover<'r> {
    /// The rollback, and the target it was for.
    id: String,
    of: String,
    /// The commits undone here, newest first; the state before the oldest is `before`.
    commits: Vec<Commit<'r>>,
    before: Oid,
    files: Vec<String>,
    tree: Oid,
}

/// What rollback `rollback` left undone in these paths: a rollback undoes its bad commits only
/// within its own target's paths. A file counts when one of those commits changed it, the
/// rollback did not, and the head still holds that commit's version (a later change to it is
/// left alone: whoever made it moved on from the bad one); it goes back to the version before
/// the commit, or before a run of them. Nothing when the rollback is this target's own (a step
/// back, a merged proposal, one to an older `to`): that is what this target asked for; unless
/// it is a phase before the last, which undid only part of it.
fn leftover<'r>(
    repo: &'r Repository,
    paths: &PathSet,
    target: &Target,
    head: &Commit<'r>,
    rollback: Oid,
    trusted: &HashSet<Oid>,
) -> Result<Option<Leftover<'r>>, GitError> {
    // What is written from here comes from the rollback's trailers (`Rollback-Of`): only a
    // rollback rollbackd pushed (its tag names the commit) is read that way. Trailers in
    // anyone else's commit at most make a change look rolled back already.
    if !trusted.contains(&rollback) {
        return Ok(None);
    }
    let r = repo.find_commit(rollback)?;
    let Some(t) = rollback_trailers(&r) else { return Ok(None) };
    // A phase before the last undid the change in part of this target's own paths: what it
    // left is counted like another target's (a phased rollback that halted, its rest cancelled).
    if t.service == target.service && t.env == target.env && t.phase.is_none_or(|p| p.is_last()) {
        return Ok(None);
    }
    let head_tree = head.tree()?;
    let undone: HashSet<String> = paths.changed_files(repo, &r.tree()?, &parent_tree(repo, &r)?)?.into_iter().collect();
    // Per file, the version it should have; files a later change took over are settled.
    let mut wanted: std::collections::BTreeMap<String, tree_edit::Entry> = Default::default();
    let mut settled: HashSet<String> = HashSet::new();
    let (mut commits, mut before) = (Vec::new(), None);
    for of in &t.of {
        let Some(c) = Oid::from_str(of).ok().and_then(|id| repo.find_commit(id).ok()) else { continue };
        // Only a commit of this branch's history, with a parent to go back to.
        let Ok(parent) = c.parent(0) else { continue };
        if !repo.graph_descendant_of(head.id(), c.id()).unwrap_or(false) {
            continue;
        }
        let (c_tree, p_tree) = (c.tree()?, parent.tree()?);
        let mut used = false;
        for f in paths.changed_files(repo, &c_tree, &p_tree)? {
            if undone.contains(&f) || settled.contains(&f) {
                continue;
            }
            let now = wanted.get(&f).copied().unwrap_or_else(|| tree_edit::entry_at(repo, &head_tree, &f));
            if tree_edit::entry_at(repo, &c_tree, &f) == now {
                let before = tree_edit::entry_at(repo, &p_tree, &f);
                wanted.insert(f, before);
                used = true;
            } else {
                settled.insert(f);
            }
        }
        if used {
            before = Some(parent.id());
            commits.push(c);
        }
    }
    wanted.retain(|f, e| *e != tree_edit::entry_at(repo, &head_tree, f));
    let Some(before) = before.filter(|_| !wanted.is_empty()) else { return Ok(None) };
    let mut tree = Some(head_tree.id());
    for (f, e) in &wanted {
        tree = tree_edit::set_path(repo, tree, f, *e)?;
    }
    let tree = match tree {
        Some(t) => t,
        None => repo.treebuilder(None)?.write()?,
    };
    Ok(Some(Leftover {
        id: t.id,
        of: format!("{}/{}", t.service, t.env),
        commits,
        before,
        files: wanted.into_keys().collect(),
        tree,
    }))
}

fn last_change(repo: &Repository, paths: &PathSet, head: Oid, max_commits: usize) -> Result<LastChange, GitError> {
    let mut walk = repo.revwalk()?;
    walk.push(head)?;
    walk.simplify_first_parent()?;
    for id in walk.take(max_commits) {
        let c = repo.find_commit(id?)?;
        if paths.differs(repo, &c.tree()?, &parent_tree(repo, &c)?)? {
            return Ok(match rollback_trailers(&c) {
                Some(t) => LastChange::Rollback { id: t.id, commit: c.id() },
                None => LastChange::Commit(c.id()),
            });
        }
    }
    Ok(LastChange::None)
}

/// The newest commit on the branch (first parent) that changed `paths`, rollbacks included.
pub(super) fn newest_change(
    repo: &Repository,
    paths: &PathSet,
    head: Oid,
    max_commits: usize,
) -> Result<Option<Oid>, GitError> {
    Ok(match last_change(repo, paths, head, max_commits)? {
        LastChange::Commit(c) | LastChange::Rollback { commit: c, .. } => Some(c),
        LastChange::None => None,
    })
}

type Built = (Strategy, Oid, Option<String>);

fn choose_and_build(
    repo: &Repository,
    paths: &PathSet,
    asked: Strategy,
    bad: &[Commit<'_>],
    head_tree: &Tree<'_>,
    kg_tree: &Tree<'_>,
) -> Result<Built, GitError> {
    let restore = |note: Option<String>| -> Result<Built, GitError> {
        Ok((Strategy::Restore, restore_tree(repo, paths, kg_tree, head_tree)?, note))
    };
    let try_revert = |fallback_note: &dyn Fn(String) -> String| -> Result<Built, GitError> {
        match revert_chain(repo, head_tree, bad)? {
            Ok(tree) => Ok((Strategy::Revert, tree, None)),
            Err(conflict) => restore(Some(fallback_note(conflict))),
        }
    };
    match asked {
        Strategy::Restore => restore(None),
        Strategy::Revert => try_revert(&|c| format!("revert conflicts ({c}); restored the target paths instead")),
        Strategy::Auto => {
            if bad.len() > 1 {
                return restore(Some(format!("auto: {} commits in the bad range, restore", bad.len())));
            }
            let c = &bad[0];
            if c.parent_count() > 1 {
                return restore(Some(format!("auto: {} is a merge commit, restore", &c.id().to_string()[..10])));
            }
            if !paths.covers_all_changes(repo, &parent_tree(repo, c)?, &c.tree()?)? {
                return restore(Some(format!(
                    "auto: {} also changes paths outside the target, restore",
                    &c.id().to_string()[..10]
                )));
            }
            let (strategy, tree, _) = try_revert(&|c| format!("auto: revert conflicts ({c}), restore"))?;
            let note = match strategy {
                Strategy::Revert => Some("auto: one commit touching only the target paths, revert".to_string()),
                _ => Some("auto: revert conflicts, restore".to_string()),
            };
            Ok((strategy, tree, note))
        }
    }
}

/// Reverts `bad` (newest first) on top of `head_tree`. This is what `git_revert_commit` does (a
/// three-way merge with the commit as base and its first parent as "theirs"), done on trees so a
/// chain of reverts needs no intermediate commits. Outside the deepest directory the commit
/// changed, base and "theirs" are identical, so the merge there is "ours" by definition: only that
/// directory is merged and spliced back, which keeps the cost independent of the repo's size.
/// `Err` names the conflicting paths.
fn revert_chain(repo: &Repository, head_tree: &Tree<'_>, bad: &[Commit<'_>]) -> Result<Result<Oid, String>, GitError> {
    let mut current = head_tree.id();
    for c in bad {
        let (base, theirs) = (c.tree()?, parent_tree(repo, c)?);
        let ours = repo.find_tree(current)?;
        let changed = tree_diff::tree_changes(repo, &theirs, &base, Limits::HISTORY)?;
        let mut dir = tree_diff::common_dir(changed.iter().map(|ch| ch.path.as_str()));
        // The scope must be a directory on all three sides; widen it until it is.
        let subtree = |t: &Tree<'_>, d: &str| match tree_edit::entry_at(repo, t, d) {
            Some((oid, mode)) if mode == i32::from(git2::FileMode::Tree) => Some(oid),
            _ => None,
        };
        let scope = loop {
            if let (Some(b), Some(o), Some(t)) = (subtree(&base, &dir), subtree(&ours, &dir), subtree(&theirs, &dir)) {
                break (b, o, t);
            }
            dir = match dir.rfind('/') {
                Some(i) => dir[..i].to_string(),
                None => String::new(),
            };
        };
        let (b, o, t) = (repo.find_tree(scope.0)?, repo.find_tree(scope.1)?, repo.find_tree(scope.2)?);
        let mut index = repo.merge_trees(&b, &o, &t, None)?;
        if index.has_conflicts() {
            let mut paths: Vec<String> = index
                .conflicts()?
                .filter_map(|c| c.ok())
                .filter_map(|c| c.our.or(c.their).or(c.ancestor))
                .map(|e| {
                    let p = String::from_utf8_lossy(&e.path).into_owned();
                    if dir.is_empty() { p } else { format!("{dir}/{p}") }
                })
                .collect();
            paths.dedup();
            return Ok(Err(format!("{} in {}", &c.id().to_string()[..10], paths.join(", "))));
        }
        let merged = index.write_tree_to(repo)?;
        current = if dir.is_empty() {
            merged
        } else {
            let spliced =
                tree_edit::set_path(repo, Some(current), &dir, Some((merged, i32::from(git2::FileMode::Tree))))?;
            match spliced {
                Some(t) => t,
                None => repo.treebuilder(None)?.write()?,
            }
        };
    }
    Ok(Ok(current))
}

/// One plan out of several made against the same head for the same bad commits, each for its
/// own target: the first's, with each other's target paths as its plan has them. `None` when
/// they cannot be one commit (another head, other bad commits, another strategy, overlapping
/// changes).
pub(super) fn fold(repo: &Repository, plans: &[(Plan, String, String)]) -> Result<Option<Plan>, GitError> {
    let Some(((first, _, _), rest)) = plans.split_first() else { return Ok(None) };
    let head_tree = repo.find_commit(super::oid(&first.head)?)?.tree()?;
    let mut tree = repo.find_tree(Oid::from_str(&first.tree)?)?;
    let entry = |t: &Tree<'_>, path: &str| t.get_path(std::path::Path::new(path)).ok().map(|e| (e.id(), e.filemode()));
    let mut touched: std::collections::HashMap<String, Option<(Oid, i32)>> =
        first.diffstat.iter().map(|f| (f.path.clone(), entry(&tree, &f.path))).collect();
    let mut folded = first.clone();
    for (plan, trigger, policy) in rest {
        let same = plan.head == first.head
            && plan.strategy == first.strategy
            && plan.known_good.sha == first.known_good.sha
            && plan.bad_commits.iter().map(|c| &c.sha).eq(first.bad_commits.iter().map(|c| &c.sha));
        if !same {
            return Ok(None);
        }
        let theirs = repo.find_tree(Oid::from_str(&plan.tree)?)?;
        // A file both change (a shared base in both targets) must come out the same in both;
        // otherwise which result is right is not ours to pick, and they are not folded.
        for f in &plan.diffstat {
            let mine = entry(&theirs, &f.path);
            if touched.get(&f.path).is_some_and(|other| *other != mine) {
                return Ok(None);
            }
            touched.insert(f.path.clone(), mine);
        }
        // Exactly the files this plan changes, as it changes them: nothing else of its paths.
        let mut root = Some(tree.id());
        for f in &plan.diffstat {
            root = tree_edit::set_path(repo, root, &f.path, entry(&theirs, &f.path))?;
        }
        tree = match root {
            Some(r) => repo.find_tree(r)?,
            None => repo.find_tree(repo.treebuilder(None)?.write()?)?,
        };
        folded.exact &= plan.exact;
        folded.mutable_artifacts.extend(plan.mutable_artifacts.iter().cloned());
        folded.leaves_no_files |= plan.leaves_no_files;
        folded.also.push(crate::domain::plan::AlsoTarget {
            target: plan.target.clone(),
            trigger: trigger.clone(),
            policy: policy.clone(),
        });
    }
    let (diffstat, artifacts) = describe_change(repo, &head_tree, &tree)?;
    folded.tree = tree.id().to_string();
    folded.diffstat = diffstat;
    folded.artifacts = artifacts;
    Ok(Some(folded))
}

fn restore_tree(repo: &Repository, paths: &PathSet, kg_tree: &Tree<'_>, head_tree: &Tree<'_>) -> Result<Oid, GitError> {
    let mut root = Some(head_tree.id());
    for (path, entry) in paths.restore_edits(repo, kg_tree, head_tree)? {
        root = tree_edit::set_path(repo, root, &path, entry)?;
    }
    match root {
        Some(r) => Ok(r),
        None => Ok(repo.treebuilder(None)?.write()?),
    }
}

/// The largest file whose text rollbackd reads (to count lines, scan for artifacts, check that it
/// parses). Config files are kilobytes; a bigger file is data, counted as binary from its
/// header alone, never inflated: one 66 MB blob under ten paths once cost the writer 7 s.
pub(crate) const MAX_TEXT_BYTES: usize = 1 << 20;

/// What one pull request's gate may read. A change past any of these is refused whole (a
/// failing `rollbackd/gate` naming the bound), never read in part: a held artifact must not
/// slip through behind 10,001 other files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GateLimits {
    /// Changed files.
    pub paths: usize,
    /// Tree entries compared (directories that differ but hold no changed file cost too).
    pub entries: usize,
    /// Bytes of file content read, both sides together (files over [`MAX_TEXT_BYTES`] are not
    /// read and do not count).
    pub bytes: u64,
}

impl GateLimits {
    /// Far above any real change to a config repo (a rename of everything in a 10,000-file
    /// repo fits), and small enough that the worst gate run costs well under a second.
    pub const DEFAULT: GateLimits = GateLimits { paths: 10_000, entries: 100_000, bytes: 64 << 20 };
}

/// The size of object `oid`, read from its header without inflating it.
fn object_size(repo: &Repository, oid: Oid) -> Result<usize, git2::Error> {
    Ok(repo.odb()?.read_header(oid)?.0)
}

fn is_gitlink(mode: i32) -> bool {
    mode == i32::from(git2::FileMode::Commit)
}

/// The bytes of a file no bigger than [`MAX_TEXT_BYTES`]; `None` for a bigger one, unread.
/// A submodule (a commit, not in this repository) reads as empty.
fn small_content(repo: &Repository, entry: tree_edit::Entry) -> Result<Option<Vec<u8>>, git2::Error> {
    match entry {
        None => Ok(Some(Vec::new())),
        Some((_, mode)) if is_gitlink(mode) => Ok(Some(Vec::new())),
        Some((oid, _)) if object_size(repo, oid)? > MAX_TEXT_BYTES => Ok(None),
        Some((oid, _)) => Ok(Some(repo.find_blob(oid)?.content().to_vec())),
    }
}

/// The text of a small file that is valid UTF-8 and not binary.
fn as_text(bytes: &[u8]) -> Option<&str> {
    if bytes.contains(&0) {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}

fn text_of(repo: &Repository, blob: Oid) -> Option<String> {
    if blob.is_zero() || object_size(repo, blob).ok()? > MAX_TEXT_BYTES {
        return None;
    }
    let b = repo.find_blob(blob).ok()?;
    if b.is_binary() {
        return None;
    }
    String::from_utf8(b.content().to_vec()).ok()
}

fn tree_of<'r>(repo: &'r Repository, rev: &str) -> Result<Tree<'r>, GitError> {
    repo.revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .and_then(|c| c.tree())
        .map_err(|e| GitError::BadRevision { rev: rev.to_string(), message: e.message().to_string() })
}

/// The artifact references that change from revision `from` to `to` of `repo` (rollbackd's own
/// commits, for holds).
pub(crate) fn artifact_changes(
    repo: &Repository,
    from: &str,
    to: &str,
) -> Result<Vec<artifacts::ArtifactChange>, GitError> {
    Ok(describe_change(repo, &tree_of(repo, from)?, &tree_of(repo, to)?)?.1)
}

/// The artifact references that change from revision `from` to `to` of `repo`, for the gate:
/// within `limits`, or [`GitError::Bound`] naming the one reached. Only files of at most
/// [`MAX_TEXT_BYTES`] are read; no line is counted.
pub(crate) fn gate_changes(
    repo: &Repository,
    from: &str,
    to: &str,
    limits: GateLimits,
) -> Result<Vec<artifacts::ArtifactChange>, GitError> {
    let walk = Limits { depth: tree_diff::MAX_TREE_DEPTH, paths: limits.paths, entries: limits.entries };
    let mut budget = limits.bytes;
    let mut scan = |entry: tree_edit::Entry| -> Result<Vec<artifacts::ArtifactRef>, GitError> {
        let Some((oid, mode)) = entry.filter(|(_, m)| !is_gitlink(*m)) else { return Ok(Vec::new()) };
        let size = object_size(repo, oid)?;
        if size > MAX_TEXT_BYTES {
            return Ok(Vec::new());
        }
        budget = budget.checked_sub(size as u64).ok_or(Bound::Bytes { limit: limits.bytes })?;
        let _ = mode;
        let blob = repo.find_blob(oid)?;
        Ok(as_text(blob.content()).map(artifacts::scan).unwrap_or_default())
    };
    let mut changes = Vec::new();
    for ch in tree_diff::tree_changes(repo, &tree_of(repo, from)?, &tree_of(repo, to)?, walk)? {
        let (before, after) = (scan(ch.old)?, scan(ch.new)?);
        changes.extend(artifacts::diff(&ch.path, &before, &after));
    }
    Ok(changes)
}

/// The diffstat and the artifact changes from `old` to `new`. A file over [`MAX_TEXT_BYTES`] on
/// either side counts as binary (`+0 -0`) and is not scanned, without being read.
fn describe_change(
    repo: &Repository,
    old: &Tree<'_>,
    new: &Tree<'_>,
) -> Result<(Vec<FileStat>, Vec<artifacts::ArtifactChange>), GitError> {
    let mut stats = Vec::new();
    let mut changes = Vec::new();
    for ch in tree_diff::tree_changes(repo, old, new, Limits::HISTORY)? {
        let (Some(before), Some(after)) = (small_content(repo, ch.old)?, small_content(repo, ch.new)?) else {
            stats.push(FileStat { path: ch.path.clone(), insertions: 0, deletions: 0 });
            continue;
        };
        let patch = git2::Patch::from_buffers(&before, None, &after, None, None)?;
        let (_, insertions, deletions) = patch.line_stats()?;
        stats.push(FileStat { path: ch.path.clone(), insertions, deletions });
        let scan = |bytes: &[u8]| as_text(bytes).map(artifacts::scan).unwrap_or_default();
        changes.extend(artifacts::diff(&ch.path, &scan(&before), &scan(&after)));
    }
    Ok((stats, changes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_with<'r>(repo: &'r Repository, path: &str, text: &str) -> Tree<'r> {
        let blob = repo.blob(text.as_bytes()).unwrap();
        let mut tb = repo.treebuilder(None).unwrap();
        tb.insert(path, blob, 0o100644).unwrap();
        repo.find_tree(tb.write().unwrap()).unwrap()
    }

    #[test]
    fn a_file_that_parsed_must_still_parse_and_a_template_that_never_did_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let good = tree_with(&repo, "values.yaml", "a: 1\nb: 2\n");
        let broken = tree_with(&repo, "values.yaml", "a: 1\na: 2\n");
        let err = check_parses(&repo, "values.yaml", &good, &good, &broken).unwrap_err();
        assert!(matches!(err, GitError::BrokenResult { ref path, .. } if path == "values.yaml"), "{err}");
        assert!(check_parses(&repo, "values.yaml", &good, &good, &good).is_ok());
        // Helm templates never parsed as YAML: not rollbackd's to judge.
        let template = tree_with(&repo, "values.yaml", "a: {{ .Values.a }\n");
        assert!(check_parses(&repo, "values.yaml", &template, &template, &broken).is_ok());
        let json_ok = tree_with(&repo, "c.json", "{\"a\": 1}");
        let json_bad = tree_with(&repo, "c.json", "{\"a\": 1,}");
        assert!(check_parses(&repo, "c.json", &json_ok, &json_ok, &json_bad).is_err());
        assert!(check_parses(&repo, "c.txt", &good, &good, &broken).is_ok());
    }
}
