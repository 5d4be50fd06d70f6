//! Answers to notifications seen before, kept while what they were read from stands.
//!
//! Alertmanager repeats a firing group every `repeat_interval`, each HA peer sends its own copy,
//! and a storm is mostly the same few bodies again. Once every alert of a body is a rollback
//! already recorded, its answer depends on nothing but the body and the writers' published
//! records and policies: kept here by body, it is served without parsing, matching or
//! serialising again. An entry counts only while every writer still publishes the very
//! snapshot and triager it was worked out from; any publish (a rollback, a cancel, a reload)
//! makes it stale and the next request works the answer out again. An answer that depends on
//! anything else (the clock, the origin's health, a writer's reply) is never kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use axum::body::Bytes;

use crate::engine::Triager;
use crate::fleet::Fleet;
use crate::worker::Snapshot;

/// Distinct bodies kept, and their bytes with their answers; past either the cache starts
/// again. A storm is a handful of bodies of a few kilobytes; a sender that varies its bodies
/// (or pads them up to `server.body_limit`) cannot make memory grow past this.
const MAX_ENTRIES: usize = 256;
const MAX_BYTES: usize = 4 << 20;

/// What the writers published when an answer was worked out: one pair per member, in fleet
/// order. `Weak` so a kept entry does not keep old records alive, and so the allocation
/// compared with cannot be reused by a later snapshot while the entry exists.
pub(super) struct Stamp(Vec<(Weak<Snapshot>, Weak<Triager>)>);

impl Stamp {
    /// As of now. Taken before the answer is worked out: a publish in between leaves the entry
    /// stale (worked out again), never a newer state served an older answer.
    pub(super) fn of(fleet: &Fleet) -> Self {
        Stamp(
            fleet
                .members()
                .iter()
                .map(|m| {
                    let shared = m.handle.shared();
                    (Arc::downgrade(&shared.snapshot()), Arc::downgrade(&shared.triager()))
                })
                .collect(),
        )
    }

    fn current(&self, fleet: &Fleet) -> bool {
        let members = fleet.members();
        members.len() == self.0.len()
            && members.iter().zip(&self.0).all(|(m, (snapshot, triager))| {
                let shared = m.handle.shared();
                std::ptr::eq(snapshot.as_ptr(), Arc::as_ptr(&shared.snapshot()))
                    && std::ptr::eq(triager.as_ptr(), Arc::as_ptr(&shared.triager()))
            })
    }
}

/// A kept answer: the response body, and how many answers it holds (each counted again when
/// served, as the first time).
#[derive(Clone)]
pub(super) struct Kept {
    pub json: Bytes,
    pub answers: usize,
}

struct Entry {
    stamp: Stamp,
    kept: Kept,
}

#[derive(Default)]
pub(super) struct AnswerCache {
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    by_body: HashMap<Bytes, Entry>,
    bytes: usize,
}

impl AnswerCache {
    /// The answer kept for `body`, if what it was worked out from still stands.
    pub(super) fn get(&self, body: &Bytes, fleet: &Fleet) -> Option<Kept> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.by_body.get(body)?;
        entry.stamp.current(fleet).then(|| entry.kept.clone())
    }

    pub(super) fn keep(&self, body: Bytes, stamp: Stamp, kept: Kept) {
        let size = body.len() + kept.json.len();
        if size > MAX_BYTES {
            return;
        }
        // Its own copy: the body read may be a slice of a larger buffer, kept alive with it.
        let body = Bytes::copy_from_slice(&body);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = entries.by_body.remove(&body) {
            entries.bytes -= body.len() + old.kept.json.len();
        }
        if entries.by_body.len() >= MAX_ENTRIES || entries.bytes + size > MAX_BYTES {
            *entries = Entries::default();
        }
        entries.bytes += size;
        entries.by_body.insert(body, Entry { stamp, kept });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(n: usize) -> Kept {
        Kept { json: Bytes::from(vec![b'x'; n]), answers: 1 }
    }

    fn size(cache: &AnswerCache) -> (usize, usize) {
        let entries = cache.entries.lock().unwrap();
        (entries.by_body.len(), entries.bytes)
    }

    #[test]
    fn what_is_kept_stays_within_its_bounds() {
        let cache = AnswerCache::default();
        // A body past the budget on its own is never kept.
        cache.keep(Bytes::from(vec![b'{'; MAX_BYTES]), Stamp(Vec::new()), kept(10));
        assert_eq!(size(&cache), (0, 0));
        // Many distinct large bodies: never past the bytes, never past the entries.
        for i in 0..200 {
            cache.keep(Bytes::from(format!("{i}{}", " ".repeat(100_000))), Stamp(Vec::new()), kept(100));
            let (n, bytes) = size(&cache);
            assert!(n <= MAX_ENTRIES && bytes <= MAX_BYTES, "{n} entries, {bytes} bytes");
        }
        // Many distinct small ones: bounded by the count.
        for i in 0..1000 {
            cache.keep(Bytes::from(format!("{i}")), Stamp(Vec::new()), kept(10));
        }
        assert!(size(&cache).0 <= MAX_ENTRIES);
        // The same body kept again replaces its entry and its bytes.
        let again = AnswerCache::default();
        for _ in 0..3 {
            again.keep(Bytes::from_static(b"{}"), Stamp(Vec::new()), kept(10));
        }
        assert_eq!(size(&again), (1, 12));
    }
}
