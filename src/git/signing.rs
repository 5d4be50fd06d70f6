//! Signing what rollbackd writes, and believing only what it (or a key it trusts) signed.
//!
//! Commits carry an SSHSIG in `gpgsig` and tags one after their message, exactly as
//! `git -c gpg.format=ssh commit -S` / `tag -s` write them, so `git verify-commit` and
//! `git verify-tag` accept them with an allowed-signers file.
//!
//! After every fetch the mirror is *quarantined*: rollbackd's tags (`rollback/`, `phase/`,
//! `halted/`, `proposed/`, `cancelled/`) that no trusted key signed are removed from the mirror,
//! and each notes or state ref is set back to its newest trusted commit. Everything that reads
//! those refs then reads only what was signed, with no check of its own to forget. The origin's
//! own value of a ref set back is remembered, so rollbackd's next write there replaces it
//! (compare-and-swap against what the origin has), dropping what nobody trusted wrote.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use git2::{ObjectType, Oid, Repository, Signature};

use crate::domain::audit::{AuditRecord, SignatureCheck};
use crate::domain::rollback::Delivery;
use crate::support::signing_key::{Signed, SigningKey, TrustedKeys};

/// The tag namespaces rollbackd writes and acts on.
pub(crate) const OWN_TAG_PREFIXES: [&str; 5] = ["rollback/", "phase/", "halted/", "proposed/", "cancelled/"];

/// How far back a notes or state ref is searched for a trusted commit.
const MAX_UNTRUSTED_RUN: usize = 1000;

/// Where the mirror remembers the last trusted commit of each notes and state ref (never
/// fetched into, so a rewrite of the origin's ref cannot make rollbackd forget its own state).
const MEMORY: &str = "refs/rollbackd/trusted/";

/// A record found on the origin that no trusted key signed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Untrusted {
    /// The ref it was found at.
    pub refname: String,
    /// The object the ref pointed at.
    pub object: String,
    pub why: String,
}

#[derive(Debug)]
pub(crate) struct Trust {
    key: SigningKey,
    keys: TrustedKeys,
    /// Verdicts by object id; trusted ones are also kept in `cache_file` across processes.
    /// Behind a `RefCell` so reading and signing need no `&mut` (the mirror is one thread's).
    verdicts: RefCell<HashMap<Oid, Signed>>,
    cache_file: Option<PathBuf>,
    dirty: Cell<bool>,
    /// What the origin holds at a ref the mirror set back: rollbackd's next write there is a
    /// compare-and-swap against this (`None`: the origin has no such ref).
    origin: HashMap<String, Option<Oid>>,
    /// Every untrusted record as of the last fetch.
    untrusted: Vec<Untrusted>,
    reported: HashSet<(String, String)>,
    /// Records found untrusted for the first time, not yet counted.
    fresh: Vec<Untrusted>,
}

impl Trust {
    pub(crate) fn new(key: SigningKey, keys: TrustedKeys, cache_file: Option<PathBuf>) -> Self {
        let mut t = Trust {
            key,
            keys,
            verdicts: RefCell::new(HashMap::new()),
            cache_file,
            dirty: Cell::new(false),
            origin: HashMap::new(),
            untrusted: Vec::new(),
            reported: HashSet::new(),
            fresh: Vec::new(),
        };
        t.load_cache();
        t
    }

    pub(crate) fn key(&self) -> &SigningKey {
        &self.key
    }

    /// The cache is valid for one set of trusted keys: its first line names them.
    fn cache_header(&self) -> String {
        format!("rollbackd-trust-cache 1 {}", self.keys.fingerprints().join(","))
    }

    fn load_cache(&mut self) {
        let Some(file) = &self.cache_file else { return };
        let Ok(text) = std::fs::read_to_string(file) else { return };
        let mut lines = text.lines();
        if lines.next() != Some(self.cache_header().as_str()) {
            return;
        }
        for line in lines {
            let mut parts = line.splitn(2, ' ');
            if let (Some(id), Some(by)) = (parts.next(), parts.next())
                && let Ok(id) = Oid::from_str(id)
            {
                self.verdicts.get_mut().insert(id, Signed::By(by.to_string()));
            }
        }
    }

    fn save_cache(&mut self) {
        let Some(file) = &self.cache_file else { return };
        if !self.dirty.get() {
            return;
        }
        let mut text = self.cache_header();
        text.push('\n');
        for (id, v) in self.verdicts.borrow().iter() {
            if let Signed::By(by) = v {
                text.push_str(&format!("{id} {by}\n"));
            }
        }
        let tmp = file.with_extension("tmp");
        if std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, file)).is_ok() {
            self.dirty.set(false);
        }
    }

    /// Writes a commit signed with rollbackd's key (no ref changes).
    pub(crate) fn commit(
        &self,
        repo: &Repository,
        author: &Signature<'_>,
        committer: &Signature<'_>,
        message: &str,
        tree: &git2::Tree<'_>,
        parents: &[&git2::Commit<'_>],
    ) -> Result<Oid, git2::Error> {
        let buf = repo.commit_create_buffer(author, committer, message, tree, parents)?;
        let content = buf.as_str().map_err(|_| git2::Error::from_str("commit content is not UTF-8"))?;
        let signature = self.key.sign(content.as_bytes());
        // git writes the header without a newline after the armor's last line.
        let id = repo.commit_signed(content, signature.trim_end(), Some("gpgsig"))?;
        self.verdicts.borrow_mut().insert(id, Signed::By(self.key.fingerprint()));
        Ok(id)
    }

    /// The same commit as `id` (tree, parents, author, committer, message), signed.
    pub(crate) fn resign(&self, repo: &Repository, id: Oid) -> Result<Oid, git2::Error> {
        let c = repo.find_commit(id)?;
        let parents: Vec<git2::Commit<'_>> = c.parents().collect();
        let parents: Vec<&git2::Commit<'_>> = parents.iter().collect();
        let message = String::from_utf8_lossy(c.message_bytes()).into_owned();
        self.commit(repo, &c.author(), &c.committer(), &message, &c.tree()?, &parents)
    }

    /// Writes an annotated tag object `name` for `target`, signed (no ref yet).
    pub(crate) fn tag(
        &self,
        repo: &Repository,
        name: &str,
        target: Oid,
        tagger: &Signature<'_>,
        message: &str,
    ) -> Result<Oid, git2::Error> {
        let kind = repo.find_object(target, None)?.kind().unwrap_or(ObjectType::Commit);
        let when = tagger.when();
        let offset = when.offset_minutes();
        let sign = if offset < 0 { '-' } else { '+' };
        let mut payload = format!(
            "object {target}\ntype {}\ntag {name}\ntagger {} <{}> {} {sign}{:02}{:02}\n\n{message}",
            kind.str(),
            String::from_utf8_lossy(tagger.name_bytes()),
            String::from_utf8_lossy(tagger.email_bytes()),
            when.seconds(),
            offset.abs() / 60,
            offset.abs() % 60,
        );
        if !payload.ends_with('\n') {
            payload.push('\n');
        }
        let signature = self.key.sign(payload.as_bytes());
        payload.push_str(&signature);
        let id = repo.odb()?.write(ObjectType::Tag, payload.as_bytes())?;
        self.verdicts.borrow_mut().insert(id, Signed::By(self.key.fingerprint()));
        Ok(id)
    }

    /// Whose signature a commit carries.
    pub(crate) fn commit_signed(&self, repo: &Repository, id: Oid) -> Signed {
        if let Some(v) = self.verdicts.borrow().get(&id) {
            return v.clone();
        }
        let v = match repo.extract_signature(&id, Some("gpgsig")) {
            Ok((sig, data)) => self.keys.check(&data, &sig),
            Err(_) => Signed::Unsigned,
        };
        self.remember(id, &v);
        v
    }

    /// Whose signature a tag object carries; anything but a tag object is unsigned.
    pub(crate) fn tag_signed(&self, repo: &Repository, id: Oid) -> Signed {
        if let Some(v) = self.verdicts.borrow().get(&id) {
            return v.clone();
        }
        let odb = match repo.odb() {
            Ok(odb) => odb,
            Err(_) => return Signed::Unsigned,
        };
        let v = match odb.read(id) {
            Ok(obj) if obj.kind() == ObjectType::Tag => match split_signed_tag(obj.data()) {
                Some((payload, sig)) => self.keys.check(payload, sig),
                None => Signed::Unsigned,
            },
            _ => Signed::Unsigned,
        };
        self.remember(id, &v);
        v
    }

    fn remember(&self, id: Oid, v: &Signed) {
        if v.trusted() {
            self.dirty.set(true);
        }
        self.verdicts.borrow_mut().insert(id, v.clone());
    }

    /// Sets the mirror's view of rollbackd's refs to what trusted keys signed (see the module
    /// doc). `refs` are the notes and state refs.
    pub(crate) fn quarantine(&mut self, repo: &Repository, refs: &[&str]) -> Result<(), git2::Error> {
        let mut found = Vec::new();
        for prefix in OWN_TAG_PREFIXES {
            for r in repo.references_glob(&format!("refs/tags/{prefix}*"))? {
                let mut r = r?;
                let (Some(name), Some(target)) = (r.name().ok().map(str::to_string), r.target()) else {
                    continue;
                };
                let why = match self.tag_signed(repo, target) {
                    Signed::By(_) => match repo.find_tag(target) {
                        // A signed tag of ours replayed under another name is not that name's.
                        Ok(t) if Some(t.name_bytes()) == name.strip_prefix("refs/tags/").map(str::as_bytes) => continue,
                        _ => "a signed tag of rollbackd's under another name".to_string(),
                    },
                    Signed::Unsigned => "not signed".into(),
                    Signed::Bad(why) => why,
                };
                r.delete()?;
                found.push(Untrusted { refname: name, object: target.to_string(), why });
            }
        }
        for refname in refs {
            self.settle_ref(repo, refname, &mut found)?;
        }
        for u in &found {
            if self.reported.insert((u.refname.clone(), u.object.clone())) {
                tracing::warn!(
                    r#ref = %crate::domain::ident::shown(&u.refname),
                    object = %u.object,
                    why = %u.why,
                    "a record on the origin that no trusted key signed; not believed"
                );
                self.fresh.push(u.clone());
            }
        }
        self.untrusted = found;
        self.save_cache();
        Ok(())
    }

    /// One notes or state ref: back to its newest trusted commit.
    fn settle_ref(&mut self, repo: &Repository, refname: &str, found: &mut Vec<Untrusted>) -> Result<(), git2::Error> {
        let memory_name = format!("{MEMORY}{}", refname.trim_start_matches("refs/"));
        let memory = repo.refname_to_id(&memory_name).ok();
        let tip = repo.refname_to_id(refname).ok();
        let mut newest = None;
        let mut dropped = 0usize;
        if let Some(tip) = tip {
            let mut walk = repo.revwalk()?;
            walk.push(tip)?;
            walk.simplify_first_parent()?;
            for id in walk.take(MAX_UNTRUSTED_RUN) {
                let id = id?;
                if self.commit_signed(repo, id).trusted() {
                    newest = Some(id);
                    break;
                }
                dropped += 1;
            }
        }
        // A history that no longer holds the trusted commit rollbackd knew (a force-push over
        // it, a deleted ref) keeps that commit: dropping rollbackd's state needs its key too.
        let chosen = match (newest, memory) {
            (Some(n), Some(m)) if n == m || repo.graph_descendant_of(n, m).unwrap_or(false) => Some(n),
            (Some(n), None) => Some(n),
            (_, Some(m)) => Some(m),
            (None, None) => None,
        };
        if chosen == tip {
            self.origin.remove(refname);
        } else {
            let why = match (tip, chosen == newest) {
                (None, _) => "the ref was deleted on the origin; rollbackd's last trusted state is kept".to_string(),
                (Some(_), true) => format!("{dropped} commit(s) on top that no trusted key signed"),
                (Some(_), false) => {
                    "the ref was rewritten without rollbackd's last trusted commit; that commit is kept".to_string()
                }
            };
            found.push(Untrusted {
                refname: refname.to_string(),
                object: tip.map(|t| t.to_string()).unwrap_or_default(),
                why,
            });
            self.origin.insert(refname.to_string(), tip);
            match chosen {
                Some(c) => {
                    repo.reference(refname, c, true, "rollbackd: newest trusted")?;
                }
                None => {
                    if let Ok(mut r) = repo.find_reference(refname) {
                        r.delete()?;
                    }
                }
            }
        }
        if let Some(c) = chosen {
            repo.reference(&memory_name, c, true, "rollbackd: newest trusted")?;
        }
        Ok(())
    }

    /// What the origin holds at `refname` (the mirror's value unless quarantine set it back),
    /// and whether a write there replaces untrusted history (a forced compare-and-swap).
    pub(crate) fn origin_of(&self, repo: &Repository, refname: &str) -> (Option<Oid>, bool) {
        match self.origin.get(refname) {
            Some(at) => (*at, true),
            None => (repo.refname_to_id(refname).ok(), false),
        }
    }

    /// rollbackd's own write reached the origin at `refname`.
    pub(crate) fn pushed(&mut self, repo: &Repository, refname: &str, new: Oid) -> Result<(), git2::Error> {
        self.origin.remove(refname);
        let memory_name = format!("{MEMORY}{}", refname.trim_start_matches("refs/"));
        repo.reference(&memory_name, new, true, "rollbackd: pushed")?;
        Ok(())
    }

    /// Every untrusted record as of the last fetch.
    pub(crate) fn untrusted(&self) -> &[Untrusted] {
        &self.untrusted
    }

    /// Records found untrusted since the last call (each once).
    pub(crate) fn take_fresh(&mut self) -> Vec<Untrusted> {
        std::mem::take(&mut self.fresh)
    }
}

fn status_of(v: &Signed) -> (&'static str, String) {
    match v {
        Signed::By(key) => ("signed", format!("signed by {key}")),
        Signed::Unsigned => ("unsigned", "not signed".into()),
        Signed::Bad(why) => ("forged", why.clone()),
    }
}

/// How many commits of one notes or state ref `audit verify` reads at most.
const MAX_AUDITED: usize = 10_000;

impl Trust {
    /// Every record rollbackd relies on from `since` on, as the origin has it, with what its
    /// signature says: rollback commits on the branch (through the tag that names them), its
    /// tags, and the commits of its notes and state refs.
    pub(crate) fn check_records(
        &self,
        repo: &Repository,
        refs: &[&str],
        records: &[AuditRecord],
        since: jiff::Timestamp,
    ) -> Result<Vec<SignatureCheck>, git2::Error> {
        let mut checks = Vec::new();
        let time = |c: &git2::Commit<'_>| jiff::Timestamp::from_second(c.time().seconds()).ok();
        for r in records.iter().filter(|r| r.delivery == Delivery::Direct && r.at >= since) {
            let (status, detail) = match &r.tag {
                // After the quarantine, a tag of ours in the mirror is one a trusted key signed.
                Some(tag) => ("signed", format!("named by {tag}, a tag a trusted key signed")),
                None => (
                    "unsigned",
                    "no tag rollbackd signed names it: a look-alike, or a rollback whose tag was lost (not held, verified or counted by guards)"
                        .into(),
                ),
            };
            checks.push(SignatureCheck {
                kind: "rollback",
                refname: r.tag.clone().map(|t| format!("refs/tags/{t}")).unwrap_or_else(|| r.branch.clone()),
                object: r.commit.0.clone(),
                at: Some(r.at),
                status,
                detail,
            });
        }
        let mut tags: Vec<(String, Oid)> = Vec::new();
        for prefix in OWN_TAG_PREFIXES {
            for r in repo.references_glob(&format!("refs/tags/{prefix}*"))? {
                let r = r?;
                if let (Ok(name), Some(target)) = (r.name(), r.target()) {
                    tags.push((name.to_string(), target));
                }
            }
        }
        for u in self.untrusted.iter().filter(|u| u.refname.starts_with("refs/tags/")) {
            if let Ok(id) = Oid::from_str(&u.object) {
                tags.push((u.refname.clone(), id));
            }
        }
        for (name, id) in tags {
            let at = repo
                .find_tag(id)
                .ok()
                .and_then(|t| t.tagger().map(|s| s.when().seconds()))
                .and_then(|s| jiff::Timestamp::from_second(s).ok());
            if at.is_some_and(|at| at < since) {
                continue;
            }
            let (status, detail) = status_of(&self.tag_signed(repo, id));
            checks.push(SignatureCheck { kind: "tag", refname: name, object: id.to_string(), at, status, detail });
        }
        for refname in refs {
            let Some(tip) = self.origin_of(repo, refname).0 else { continue };
            let mut walk = repo.revwalk()?;
            walk.push(tip)?;
            walk.simplify_first_parent()?;
            for id in walk.take(MAX_AUDITED) {
                let c = repo.find_commit(id?)?;
                let at = time(&c);
                if at.is_some_and(|at| at < since) {
                    break;
                }
                let (status, detail) = status_of(&self.commit_signed(repo, c.id()));
                let kind = if refname.starts_with("refs/notes/") { "notes" } else { "state" };
                checks.push(SignatureCheck {
                    kind,
                    refname: refname.to_string(),
                    object: c.id().to_string(),
                    at,
                    status,
                    detail,
                });
            }
        }
        Ok(checks)
    }
}

/// A tag object's signed payload and its SSH signature, as git splits them: the signature
/// starts at the last line that begins `-----BEGIN SSH SIGNATURE-----`.
pub fn split_signed_tag(data: &[u8]) -> Option<(&[u8], &[u8])> {
    const BEGIN: &[u8] = b"-----BEGIN SSH SIGNATURE-----";
    let mut at = None;
    let mut start = 0;
    while start < data.len() {
        if data[start..].starts_with(BEGIN) {
            at = Some(start);
        }
        match data[start..].iter().position(|&b| b == b'\n') {
            Some(n) => start += n + 1,
            None => break,
        }
    }
    let at = at?;
    Some((&data[..at], &data[at..]))
}
