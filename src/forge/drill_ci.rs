//! What the config repo's CI said of each drill branch's head, asked of GitHub on a thread of
//! its own: GitHub is a remote rollbackd does not own, and readiness is worked out on the
//! writer, which never waits on one. The asker waits at most a budget it chooses (the writer:
//! none, it reads the last answer; the CLI: a few seconds) and the answer is kept for the next.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::Forge;
use crate::domain::drill::CiVerdict;

/// A verdict older than this is asked again (a re-run changes it).
const FRESH_FOR: Duration = Duration::from_secs(60);
/// A pending answer is asked again sooner: CI is expected to report soon.
const PENDING_FRESH_FOR: Duration = Duration::from_secs(5);
/// Questions out at once; a GitHub that hangs them all costs at most this many threads.
const MAX_IN_FLIGHT: usize = 8;

#[derive(Default)]
struct State {
    answers: HashMap<String, (CiVerdict, Instant)>,
    in_flight: HashSet<String>,
}

struct Inner {
    forge: Arc<Forge>,
    state: Mutex<State>,
    changed: Condvar,
    /// Bumped whenever a commit's verdict changes: the writer works readiness out again.
    generation: AtomicU64,
}

/// Asks the forge about drill heads off the asker's thread; see the module doc.
#[derive(Clone)]
pub(crate) struct DrillCi {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DrillCi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DrillCi").finish_non_exhaustive()
    }
}

impl DrillCi {
    pub(crate) fn new(forge: Arc<Forge>) -> Self {
        DrillCi {
            inner: Arc::new(Inner {
                forge,
                state: Mutex::new(State::default()),
                changed: Condvar::new(),
                generation: AtomicU64::new(0),
            }),
        }
    }

    /// Whether there is a forge to ask at all (the local forge runs no CI).
    pub(crate) fn asks(&self) -> bool {
        self.inner.forge.github().is_some()
    }

    /// Changes whenever an answer does.
    pub(crate) fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Relaxed)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks about each commit (unless asked lately or out already), then waits until each has
    /// an answer or `budget` is over. A commit with no answer yet is absent.
    pub(crate) fn ask_all(&self, commits: &[String], budget: Duration) -> HashMap<String, CiVerdict> {
        if !self.asks() {
            return HashMap::new();
        }
        for c in commits {
            self.ask(c);
        }
        let deadline = Instant::now() + budget;
        let mut st = self.state();
        loop {
            let settled = commits.iter().all(|c| !st.in_flight.contains(c));
            let now = Instant::now();
            if settled || now >= deadline {
                break;
            }
            st = match self.inner.changed.wait_timeout(st, deadline - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
        commits.iter().filter_map(|c| st.answers.get(c).map(|(v, _)| (c.clone(), v.clone()))).collect()
    }

    fn ask(&self, commit: &str) {
        {
            let mut st = self.state();
            let fresh = st.answers.get(commit).is_some_and(|(v, at)| {
                at.elapsed() < if matches!(v, CiVerdict::Pending { .. }) { PENDING_FRESH_FOR } else { FRESH_FOR }
            });
            if fresh || st.in_flight.contains(commit) || st.in_flight.len() >= MAX_IN_FLIGHT {
                return;
            }
            st.in_flight.insert(commit.to_string());
        }
        let me = self.clone();
        let commit = commit.to_string();
        let spawned = std::thread::Builder::new().name("drill-ci".into()).spawn({
            let commit = commit.clone();
            move || {
                let verdict = match me.inner.forge.github() {
                    Some(gh) => match gh.ci_of(&commit) {
                        Ok(c) => CiVerdict::of(c.failed, c.pending, c.passed),
                        Err(e) => CiVerdict::unasked(e),
                    },
                    None => CiVerdict::unasked("no GitHub forge"),
                };
                let mut st = me.state();
                st.in_flight.remove(&commit);
                let before = st.answers.insert(commit, (verdict.clone(), Instant::now()));
                if before.is_none_or(|(v, _)| v != verdict) {
                    me.inner.generation.fetch_add(1, Ordering::Relaxed);
                }
                drop(st);
                me.inner.changed.notify_all();
            }
        });
        if spawned.is_err() {
            self.state().in_flight.remove(&commit);
        }
    }
}
