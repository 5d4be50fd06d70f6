//! The audit index: every rollback within the window, read from git itself (commit trailers,
//! `rollback/*` tags and proposal branches). It answers dedupe, guards and `history`, and is
//! kept current incrementally: after the first build only new commits are read.

use std::collections::HashMap;
use std::path::PathBuf;

use git2::{Oid, Repository};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::planner::rollback_commit;
use super::trailers::{Halt, Trailers};
use super::{GitError, commit_time, sha};
pub(crate) use crate::domain::audit::AuditRecord;
use crate::domain::rollback::{Delivery, RollbackId, RollbackRef};

/// The records of the rollback whose trailers are `t`, carried by `commit`: one for its target,
/// and one for each other target the same commit rolled back (`Rollback-Also`).
fn records_of(t: Trailers, commit: Oid, at: Timestamp, delivery: Delivery, branch: &str) -> Vec<AuditRecord> {
    let targets: Vec<String> = std::iter::once(format!("{}/{}", t.service, t.env))
        .chain(t.also.iter().map(|a| format!("{}/{}", a.service, a.env)))
        .collect();
    let first = AuditRecord {
        id: RollbackId(t.id),
        at,
        service: t.service,
        env: t.env,
        delivery,
        commit: sha(commit),
        branch: branch.to_string(),
        tag: None,
        strategy: t.strategy,
        bad_commits: t.of,
        known_good: t.to,
        policy: t.policy,
        trigger: t.trigger,
        actor: t.actor,
        reason: t.reason,
        emergency: t.emergency,
        cancelled: false,
        review: Default::default(),
        phase: t.phase,
        together_with: Vec::new(),
        because: t.because,
        alert_started: t.alert_started,
        received: t.received,
    };
    let mut out = Vec::with_capacity(targets.len());
    for a in &t.also {
        let mut r = first.clone();
        r.service = a.service.clone();
        r.env = a.env.clone();
        r.trigger = a.trigger.clone();
        r.actor = "alertmanager".into();
        r.alert_started = crate::domain::audit::alert_start_of(&r.trigger);
        r.together_with = targets.iter().filter(|x| **x != format!("{}/{}", a.service, a.env)).cloned().collect();
        out.push(r);
    }
    let mut first = first;
    first.together_with = targets[1..].to_vec();
    out.insert(0, first);
    out
}

/// One commit of one rollback for one target: its id, its phase (0 for a rollback in one
/// commit), service and env. A tag, a proposal branch and a commit on the branch are the same
/// record when their keys are.
type Key = (String, u32, String, String);

fn key(t: &Trailers) -> Key {
    (t.id.clone(), t.phase.map_or(0, |p| p.step), t.service.clone(), t.env.clone())
}

fn key_of(r: &AuditRecord) -> Key {
    (r.id.0.clone(), r.phase.map_or(0, |p| p.step), r.service.clone(), r.env.clone())
}

#[derive(Debug, Default)]
pub struct AuditIndex {
    /// Rollback commits found on the branch, newest first.
    on_branch: Vec<AuditRecord>,
    /// Halt markers of phased rollbacks found on the branch, newest first, with their time and
    /// commit.
    halts: Vec<(Halt, Timestamp, String)>,
    /// The rollback commits rollbackd pushed, as of the last refresh (see `find_trusted`).
    trusted: std::collections::HashSet<Oid>,
    /// The ids of halts whose marker carries rollbackd's `halted/` tag.
    trusted_halts: std::collections::HashSet<String>,
    walked_head: Option<Oid>,
    /// Where the branch walk is remembered between processes (a cache: derived from git, safe
    /// to delete), so a one-shot CLI run reads only the commits since the last run.
    cache_file: Option<PathBuf>,
    /// The walk moved since the cache was last written (see [`AuditIndex::save`]).
    unsaved: bool,
    /// The merged view: branch, tags and proposals, newest first.
    records: Vec<AuditRecord>,
    by_trigger: HashMap<String, usize>,
    /// What each `rollback/*` and `cancelled/*` tag resolved to, by the object it pointed at.
    /// Tags accumulate for as long as the repo lives; only new or moved ones are read again.
    tags: HashMap<String, (Oid, Option<Tagged>)>,
}

/// A rollback tag, read once: the trailers, the commit carrying them, the tagged commit's time.
#[derive(Clone, Debug)]
struct Tagged {
    trailers: Trailers,
    commit: Oid,
    /// What the tag names: `commit`, or the merge that brought it to the branch.
    tip: Oid,
    at: Timestamp,
    /// Who reviewed it, from the tag's message.
    review: crate::domain::audit::Review,
}

/// Resolves a tag through the memo. `via_merge`: the tagged commit may be a merge whose merged
/// side carries the trailers (a proposal merged on GitHub).
fn tagged(
    memo: &mut HashMap<String, (Oid, Option<Tagged>)>,
    r: &git2::Reference<'_>,
    via_merge: bool,
) -> Option<Tagged> {
    let (name, target) = (r.name().ok()?.to_string(), r.target()?);
    if let Some((seen, t)) = memo.get(&name)
        && *seen == target
    {
        return t.clone();
    }
    let resolved = r.peel_to_commit().ok().and_then(|c| {
        let (trailers, commit) =
            if via_merge { rollback_commit(&c)? } else { (Trailers::parse(c.message().unwrap_or_default())?, c.id()) };
        let message = r
            .peel_to_tag()
            .ok()
            .and_then(|t| t.message_bytes().map(|m| String::from_utf8_lossy(m).into_owned()))
            .unwrap_or_default();
        let review = crate::domain::audit::Review::parse(&message);
        Some(Tagged { trailers, commit, tip: c.id(), at: commit_time(&c), review })
    });
    // The tag's name and the trailers it points at must tell the same story; one that does not
    // was not written by us (or was moved), and is reported instead of counted.
    let resolved = resolved.filter(|t| {
        let short = name.strip_prefix("refs/tags/").unwrap_or(&name);
        let named = if via_merge { RollbackRef::parse_branch(short) } else { RollbackRef::parse_cancelled(short) };
        let agrees = named.is_some_and(|n| {
            n.id.as_str() == t.trailers.id && n.service == t.trailers.service && n.env == t.trailers.env
        });
        if !agrees {
            tracing::warn!(
                tag = %crate::domain::ident::shown(short),
                trailers = %format!("{}/{}/{}", t.trailers.service, t.trailers.env, t.trailers.id),
                "a rollback tag disagrees with the trailers of its commit; not trusted"
            );
        }
        agrees
    });
    memo.insert(name, (target, resolved.clone()));
    resolved
}

/// The cached part of the index: the rollback commits along the branch up to `head`.
#[derive(Serialize, Deserialize)]
struct BranchCache {
    version: u32,
    branch: String,
    max_commits: usize,
    head: String,
    records: Vec<AuditRecord>,
    #[serde(default)]
    halts: Vec<(Halt, Timestamp, String)>,
}

const CACHE_VERSION: u32 = 4;

impl AuditIndex {
    pub(super) fn with_cache(file: PathBuf) -> Self {
        AuditIndex { cache_file: Some(file), ..AuditIndex::default() }
    }

    fn load_cache(&mut self, branch: &str, max_commits: usize) {
        let Some(file) = &self.cache_file else { return };
        let Ok(bytes) = std::fs::read(file) else { return };
        let Ok(cache) = serde_json::from_slice::<BranchCache>(&bytes) else { return };
        if cache.version != CACHE_VERSION || cache.branch != branch || cache.max_commits != max_commits {
            return;
        }
        if let Ok(head) = Oid::from_str(&cache.head) {
            self.walked_head = Some(head);
            self.on_branch = cache.records;
            self.halts = cache.halts;
        }
    }

    /// Writes the walk to the cache file if it moved since it was last written: at the
    /// writer's quiet moments and when a process ends, never on an event's way to its push (a
    /// lost write costs the next start a longer walk, nothing else).
    pub(super) fn save(&mut self, branch: &str, max_commits: usize) {
        if std::mem::take(&mut self.unsaved) {
            self.save_cache(branch, max_commits);
        }
    }

    fn save_cache(&self, branch: &str, max_commits: usize) {
        let (Some(file), Some(head)) = (&self.cache_file, self.walked_head) else { return };
        let cache = BranchCache {
            version: CACHE_VERSION,
            branch: branch.to_string(),
            max_commits,
            head: head.to_string(),
            records: self.on_branch.clone(),
            halts: self.halts.clone(),
        };
        let tmp = file.with_extension("tmp");
        // Written aside and renamed, so a crash leaves the old cache or the new one.
        let written = serde_json::to_vec(&cache)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, file));
        if let Err(e) = written {
            tracing::debug!(error = %e, "audit cache not saved");
        }
    }

    pub fn records(&self) -> &[AuditRecord] {
        &self.records
    }

    /// The rollback commits rollbackd pushed: those a tag of ours names.
    pub fn trusted_commits(&self) -> &std::collections::HashSet<Oid> {
        &self.trusted
    }

    /// Every rollback tag ever read (also those past the audit window), what it names and the
    /// commit carrying the trailers (a merge brings a proposal in), and the tagged records.
    fn find_trusted(&self) -> std::collections::HashSet<Oid> {
        let tags = self.tags.values().filter_map(|(_, t)| t.as_ref()).flat_map(|t| [t.commit, t.tip]);
        let records = self
            .records
            .iter()
            .filter(|r| r.delivery == Delivery::Direct && r.tag.is_some())
            .filter_map(|r| Oid::from_str(&r.commit.0).ok());
        tags.chain(records).collect()
    }

    /// Whether a halt marker on the branch names `id`: tagged, or untagged and written since
    /// `since` (a marker whose tag has not arrived yet is a halt another replica is writing; an
    /// old untagged one is anyone's text).
    pub fn marked_halted(&self, id: &RollbackId, since: Timestamp, now: Timestamp) -> bool {
        self.halts
            .iter()
            .any(|(h, at, _)| h.id == id.0 && (self.trusted_halts.contains(&h.id) || (*at >= since && *at <= now)))
    }

    /// Whether phased rollback `id` was halted (a marker commit on the branch says so).
    pub fn halted(&self, id: &RollbackId) -> bool {
        self.trusted_halts.contains(&id.0)
    }

    pub fn find_trigger(&self, trigger: &str) -> Option<&AuditRecord> {
        self.by_trigger.get(trigger).map(|&i| &self.records[i])
    }

    /// Rollbacks that reached the branch for one service/env, newest first.
    pub fn applied(&self, service: &str, env: &str) -> impl Iterator<Item = &AuditRecord> {
        self.records.iter().filter(move |r| r.delivery == Delivery::Direct && r.service == service && r.env == env)
    }

    /// Brings the index up to `head`: the branch's rollback commits since `since` (only the
    /// commits since the last walk when `head` descends from it), then what the refs add: the
    /// rollback, phase and cancelled tags, and the proposal branches rollbackd pushed.
    pub(super) fn refresh(
        &mut self,
        repo: &Repository,
        branch: &str,
        head: Oid,
        since: Timestamp,
        max_commits: usize,
    ) -> Result<(), GitError> {
        if self.walked_head.is_none() {
            self.load_cache(branch, max_commits);
        }
        if self.walked_head != Some(head) {
            self.walk(repo, branch, head, since, max_commits)?;
        }
        self.on_branch.retain(|r| r.at >= since);
        self.halts.retain(|(_, at, _)| *at >= since);
        self.trust_halts(repo)?;

        let mut found = Found::new(self.on_branch.clone());
        self.read_rollback_tags(repo, branch, since, &mut found)?;
        found.mark_phase_tags(repo)?;
        found.share_tags();
        found.read_proposals(repo, since)?;
        self.read_cancelled(repo, since, &mut found)?;
        let Found { mut records, live_tags, .. } = found;
        self.tags.retain(|name, _| live_tags.contains(name));
        // A rollback's phases can share a second: the later phase is the newer record.
        records.sort_by(|a, b| b.at.cmp(&a.at).then_with(|| b.id.cmp(&a.id)).then_with(|| b.phase.cmp(&a.phase)));
        self.by_trigger.clear();
        for (i, r) in records.iter().enumerate().rev() {
            self.by_trigger.insert(r.trigger.clone(), i);
        }
        self.records = records;
        self.trusted = self.find_trusted();
        Ok(())
    }

    /// The branch's rollback commits and halt markers from `head` back to `since`.
    fn walk(
        &mut self,
        repo: &Repository,
        branch: &str,
        head: Oid,
        since: Timestamp,
        max_commits: usize,
    ) -> Result<(), GitError> {
        let incremental = match self.walked_head {
            Some(old) => repo.graph_descendant_of(head, old).unwrap_or(false),
            None => false,
        };
        // First-parent and unsorted, so the walk is lazy and stops at the window's edge
        // (any sorted walk reads the whole history first). Proposals merged with a merge
        // commit are found through the merge's second parent.
        let mut walk = repo.revwalk()?;
        walk.simplify_first_parent()?;
        walk.push(head)?;
        if incremental && let Some(old) = self.walked_head {
            walk.hide(old)?;
        } else {
            self.on_branch.clear();
            self.halts.clear();
        }
        let mut fresh = Vec::new();
        let mut halts = Vec::new();
        for id in walk.take(max_commits) {
            let c = repo.find_commit(id?)?;
            let at = commit_time(&c);
            if at < since {
                break;
            }
            if let Some((t, id)) = rollback_commit(&c) {
                fresh.extend(records_of(t, id, at, Delivery::Direct, branch));
            } else if let Some(h) = Halt::parse(c.message().unwrap_or_default()) {
                halts.push((h, at, c.id().to_string()));
            }
        }
        fresh.append(&mut self.on_branch);
        self.on_branch = fresh;
        halts.append(&mut self.halts);
        self.halts = halts;
        self.walked_head = Some(head);
        self.unsaved = true;
        Ok(())
    }

    /// A marker counts only with the `halted/` tag rollbackd pushed on it.
    fn trust_halts(&mut self, repo: &Repository) -> Result<(), GitError> {
        self.trusted_halts.clear();
        if self.halts.is_empty() {
            return Ok(());
        }
        for r in repo.references_glob("refs/tags/halted/*")? {
            let r = r?;
            let Some(named) = r.shorthand().ok().and_then(RollbackRef::parse_halted) else { continue };
            let Ok(commit) = r.peel_to_commit() else { continue };
            let marker = commit.id().to_string();
            if self.halts.iter().any(|(h, _, c)| h.id == named.id.0 && *c == marker) {
                self.trusted_halts.insert(named.id.0.clone());
            }
        }
        Ok(())
    }

    /// Tags name direct rollbacks; one whose commit fell outside the walk (a long-lived
    /// branch, a merge) still counts while it is inside the time window.
    fn read_rollback_tags(
        &mut self,
        repo: &Repository,
        branch: &str,
        since: Timestamp,
        found: &mut Found,
    ) -> Result<(), GitError> {
        for r in repo.references_glob("refs/tags/rollback/*")? {
            let r = r?;
            let Some(name) = r.shorthand().ok().map(str::to_string) else { continue };
            found.live_tags.extend(r.name().ok().map(str::to_string));
            let Some(Tagged { trailers: t, commit: id, at, review, .. }) = tagged(&mut self.tags, &r, true) else {
                continue;
            };
            if let Some(&i) = found.by_id.get(&key(&t)) {
                found.records[i].tag = Some(name);
                found.records[i].review = review;
                continue;
            }
            if at >= since {
                for mut rec in records_of(t, id, at, Delivery::Direct, branch) {
                    rec.tag = Some(name.clone());
                    rec.review = review.clone();
                    found.push(rec);
                }
            }
        }
        Ok(())
    }

    /// Proposals rollbackd cancelled: their `cancelled/` tag keeps the record.
    fn read_cancelled(&mut self, repo: &Repository, since: Timestamp, found: &mut Found) -> Result<(), GitError> {
        for r in repo.references_glob("refs/tags/cancelled/*")? {
            let r = r?;
            found.live_tags.extend(r.name().ok().map(str::to_string));
            let Some(Tagged { trailers: t, commit, at, review, .. }) = tagged(&mut self.tags, &r, false) else {
                continue;
            };
            if at >= since && !found.by_id.contains_key(&key(&t)) {
                for mut rec in records_of(t, commit, at, Delivery::Proposal, "") {
                    rec.tag = r.shorthand().ok().map(str::to_string);
                    rec.cancelled = true;
                    rec.review = review.clone();
                    found.records.push(rec);
                }
            }
        }
        Ok(())
    }
}

/// The records one refresh puts together, indexed by rollback, phase and target so each ref
/// read adds to the record it names instead of a second one.
struct Found {
    records: Vec<AuditRecord>,
    by_id: HashMap<Key, usize>,
    /// Every tag still on the mirror: the parsed-tag cache keeps only those.
    live_tags: std::collections::HashSet<String>,
}

impl Found {
    fn new(records: Vec<AuditRecord>) -> Self {
        let by_id = records.iter().enumerate().map(|(i, r)| (key_of(r), i)).collect();
        Found { records, by_id, live_tags: Default::default() }
    }

    fn push(&mut self, rec: AuditRecord) {
        self.by_id.insert(key_of(&rec), self.records.len());
        self.records.push(rec);
    }

    /// Phase tags mark the phases rollbackd itself pushed (see `RollbackRef::phase_tag`).
    fn mark_phase_tags(&mut self, repo: &Repository) -> Result<(), GitError> {
        let phased: std::collections::HashSet<String> =
            self.records.iter().filter(|r| r.phase.is_some()).map(|r| r.id.0.clone()).collect();
        if phased.is_empty() {
            return Ok(());
        }
        for r in repo.references_glob("refs/tags/phase/*")? {
            let r = r?;
            let Some(name) = r.shorthand().ok().map(str::to_string) else { continue };
            let Some((named, step)) = RollbackRef::parse_phase_tag(&name) else { continue };
            if !phased.contains(named.id.as_str()) {
                continue;
            }
            let Ok(commit) = r.peel_to_commit() else { continue };
            let key = (named.id.0.clone(), step, named.service.clone(), named.env.clone());
            if let Some(&i) = self.by_id.get(&key)
                && self.records[i].commit == sha(commit.id())
                && self.records[i].tag.is_none()
            {
                self.records[i].tag = Some(name);
            }
        }
        Ok(())
    }

    /// The other targets of a commit that rolled back several (`Rollback-Also`) share its tag.
    fn share_tags(&mut self) {
        let tag_of: HashMap<crate::domain::plan::Sha, String> = self
            .records
            .iter()
            .filter(|r| r.delivery == Delivery::Direct)
            .filter_map(|r| Some((r.commit.clone(), r.tag.clone()?)))
            .collect();
        for r in self.records.iter_mut().filter(|r| r.delivery == Delivery::Direct && r.tag.is_none()) {
            r.tag = tag_of.get(&r.commit).cloned();
        }
    }

    /// Open proposals: only a branch rollbackd proposed counts (its `proposed/...` tag names
    /// the commit).
    fn read_proposals(&mut self, repo: &Repository, since: Timestamp) -> Result<(), GitError> {
        for r in repo.references_glob("refs/heads/rollback/*")? {
            let r = r?;
            let Some(branch) = r.shorthand().ok().map(str::to_string) else {
                continue;
            };
            let Ok(c) = r.peel_to_commit() else { continue };
            let ours = RollbackRef::parse_branch(&branch).is_some_and(|rref| {
                repo.find_reference(&format!("refs/tags/{}", rref.proposed()))
                    .and_then(|t| t.peel_to_commit())
                    .is_ok_and(|t| t.id() == c.id())
            });
            if !ours {
                continue;
            }
            let Some(t) = Trailers::parse(c.message().unwrap_or_default()) else {
                continue;
            };
            if self.by_id.contains_key(&key(&t)) {
                continue;
            }
            let at = commit_time(&c);
            if at >= since {
                for rec in records_of(t, c.id(), at, Delivery::Proposal, &branch) {
                    self.push(rec);
                }
            }
        }
        Ok(())
    }
}
