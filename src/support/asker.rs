//! Questions to a remote rollbackd does not own (GitHub, a container registry), asked on
//! threads of their own and their answers kept: the asker waits at most a budget it chooses
//! (the writer: none, it reads the last answer) and never more than one question per key is
//! out. Bounded: at most `max_in_flight` threads out at once, at most [`MAX_ANSWERS`] kept.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Answers kept at most; past it the stale ones go, then all.
const MAX_ANSWERS: usize = 10_000;

/// What an answer is worth: the latest one, and whether it is still fresh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Kept<V> {
    pub value: V,
    pub fresh: bool,
}

type Answer<K, V> = dyn Fn(&K) -> V + Send + Sync;

struct State<K, V> {
    answers: HashMap<K, (V, Instant)>,
    in_flight: HashSet<K>,
}

struct Inner<K, V> {
    /// The thread name, for a stack dump.
    name: &'static str,
    max_in_flight: usize,
    /// How long an answer is believed (a failure may be asked again sooner than a success).
    fresh_for: fn(&V) -> Duration,
    answer: Box<Answer<K, V>>,
    state: Mutex<State<K, V>>,
    changed: Condvar,
    /// Bumped whenever an answer changes.
    generation: AtomicU64,
}

/// See the module doc.
pub(crate) struct Asker<K, V> {
    inner: Arc<Inner<K, V>>,
}

impl<K, V> Clone for Asker<K, V> {
    fn clone(&self) -> Self {
        Asker { inner: self.inner.clone() }
    }
}

impl<K, V> std::fmt::Debug for Asker<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Asker").field("name", &self.inner.name).finish_non_exhaustive()
    }
}

impl<K, V> Asker<K, V>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    V: Clone + PartialEq + Send + Sync + 'static,
{
    /// `answer` runs on a thread named `name` for each question asked.
    pub(crate) fn new(
        name: &'static str,
        max_in_flight: usize,
        fresh_for: fn(&V) -> Duration,
        answer: impl Fn(&K) -> V + Send + Sync + 'static,
    ) -> Self {
        Asker {
            inner: Arc::new(Inner {
                name,
                max_in_flight,
                fresh_for,
                answer: Box::new(answer),
                state: Mutex::new(State { answers: HashMap::new(), in_flight: HashSet::new() }),
                changed: Condvar::new(),
                generation: AtomicU64::new(0),
            }),
        }
    }

    /// Changes whenever an answer does.
    pub(crate) fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Relaxed)
    }

    fn state(&self) -> MutexGuard<'_, State<K, V>> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks about each key without a fresh answer (unless out already), then waits until each
    /// has a fresh answer or `budget` is over. Returns the latest answer of each key that has
    /// one, fresh or not; a key never answered is absent.
    pub(crate) fn ask_all(&self, keys: &[K], budget: Duration) -> HashMap<K, Kept<V>> {
        let deadline = Instant::now() + budget;
        let mut st = self.state();
        loop {
            for k in keys {
                st = self.start(st, k);
            }
            let now = Instant::now();
            if keys.iter().all(|k| self.fresh(&st, k)) || now >= deadline {
                break;
            }
            st = match self.inner.changed.wait_timeout(st, deadline - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
        keys.iter()
            .filter_map(|k| {
                let (value, _) = st.answers.get(k)?;
                Some((k.clone(), Kept { value: value.clone(), fresh: self.fresh(&st, k) }))
            })
            .collect()
    }

    fn fresh(&self, st: &State<K, V>, k: &K) -> bool {
        st.answers.get(k).is_some_and(|(v, at)| at.elapsed() < (self.inner.fresh_for)(v))
    }

    /// Sends the question about `k` off on a thread of its own unless it has a fresh answer, is
    /// out already, or too many are.
    fn start<'a>(&'a self, mut st: MutexGuard<'a, State<K, V>>, k: &K) -> MutexGuard<'a, State<K, V>> {
        if self.fresh(&st, k) || st.in_flight.contains(k) || st.in_flight.len() >= self.inner.max_in_flight {
            return st;
        }
        st.in_flight.insert(k.clone());
        let me = self.clone();
        let key = k.clone();
        let spawned = std::thread::Builder::new().name(self.inner.name.into()).spawn(move || {
            let value = (me.inner.answer)(&key);
            let mut st = me.state();
            st.in_flight.remove(&key);
            if st.answers.len() >= MAX_ANSWERS {
                let fresh_for = me.inner.fresh_for;
                st.answers.retain(|_, (v, at)| at.elapsed() < fresh_for(v));
                if st.answers.len() >= MAX_ANSWERS {
                    st.answers.clear();
                }
            }
            let before = st.answers.insert(key, (value.clone(), Instant::now()));
            if before.is_none_or(|(v, _)| v != value) {
                me.inner.generation.fetch_add(1, Ordering::Relaxed);
            }
            drop(st);
            me.inner.changed.notify_all();
        });
        if spawned.is_err() {
            st.in_flight.remove(k);
        }
        st
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn one_question_per_key_answers_kept_and_a_zero_budget_reads_the_last_answer() {
        let asked = Arc::new(AtomicUsize::new(0));
        let count = asked.clone();
        let a = Asker::new(
            "test",
            4,
            |_: &u32| Duration::from_secs(60),
            move |k: &u32| {
                count.fetch_add(1, Ordering::SeqCst);
                k * 2
            },
        );
        let got = a.ask_all(&[1, 2], Duration::from_secs(10));
        assert_eq!(got[&1], Kept { value: 2, fresh: true });
        assert_eq!(got[&2], Kept { value: 4, fresh: true });
        assert_eq!(a.ask_all(&[1, 2], Duration::ZERO).len(), 2);
        assert_eq!(asked.load(Ordering::SeqCst), 2, "fresh answers are not asked again");
        assert!(a.generation() >= 2);
    }

    #[test]
    fn a_stale_answer_is_returned_as_stale_and_asked_again() {
        let a = Asker::new("test", 4, |_: &u32| Duration::ZERO, |k: &u32| *k);
        let got = a.ask_all(&[7], Duration::from_millis(200));
        // Never fresh: the wait ends at the budget with the latest answer, said to be stale.
        assert_eq!(got[&7], Kept { value: 7, fresh: false });
    }

    #[test]
    fn past_max_in_flight_the_rest_are_asked_as_the_first_come_back() {
        let a = Asker::new("test", 1, |_: &u32| Duration::from_secs(60), |k: &u32| *k);
        let got = a.ask_all(&[1, 2, 3], Duration::from_secs(10));
        assert_eq!(got.len(), 3);
        assert!(got.values().all(|k| k.fresh));
    }
}
