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

/// Distinct bodies kept; past this the cache starts again (a flood of distinct bodies does
/// not grow memory, and a storm is a handful of bodies).
const MAX_ENTRIES: usize = 256;

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
    entries: Mutex<HashMap<Bytes, Entry>>,
}

impl AnswerCache {
    /// The answer kept for `body`, if what it was worked out from still stands.
    pub(super) fn get(&self, body: &Bytes, fleet: &Fleet) -> Option<Kept> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(body)?;
        entry.stamp.current(fleet).then(|| entry.kept.clone())
    }

    pub(super) fn keep(&self, body: Bytes, stamp: Stamp, kept: Kept) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&body) {
            entries.clear();
        }
        entries.insert(body, Entry { stamp, kept });
    }
}
