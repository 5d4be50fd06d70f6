//! Prometheus queries off the writer thread. The writer asks and reads the newest answer; it
//! never waits on Prometheus for longer than a short, fixed budget per tick, so a Prometheus that
//! hangs holds one of the prober's threads, not the alerts queued behind the writer.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;

use crate::support::clock::Clock;

/// The port to Prometheus: whether an instant query holds now (at least one series, or a
/// non-zero scalar). The adapter (`crate::prometheus`) speaks HTTP; the engine calls it only
/// through [`Prober`], off the writer thread. An error is "unknown", never "does not hold".
pub(crate) trait QueryMetrics: Send + Sync {
    fn holds(&self, query: &str) -> Result<bool, String>;
}

/// How many distinct queries may be out at once (one thread each). Queries come from policies,
/// so there are few; a Prometheus that hangs them all still costs at most this many threads.
const MAX_IN_FLIGHT: usize = 32;

/// What Prometheus said to one query, and when.
#[derive(Clone, Debug)]
pub(crate) struct Answer {
    /// Whether the query held; an error is "unknown", never "not recovered".
    pub result: Result<bool, String>,
    pub at: Timestamp,
}

#[derive(Default)]
struct State {
    answers: HashMap<String, Answer>,
    in_flight: HashSet<String>,
}

struct Inner {
    /// `None` when no `prometheus:` is configured.
    metrics: Option<Arc<dyn QueryMetrics>>,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    changed: Condvar,
}

/// Asks Prometheus on threads of its own; see the module doc.
#[derive(Clone)]
pub(crate) struct Prober {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Prober {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prober").finish_non_exhaustive()
    }
}

impl Prober {
    pub(crate) fn new(metrics: Option<Arc<dyn QueryMetrics>>, clock: Arc<dyn Clock>) -> Self {
        Prober {
            inner: Arc::new(Inner { metrics, clock, state: Mutex::new(State::default()), changed: Condvar::new() }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends each of `queries` to Prometheus unless it is out already, then waits until every
    /// one of them has an answer newer than it had, or `budget` is over, whichever is first.
    /// Returns the newest answer of each (`None`: never answered yet).
    pub(crate) fn ask_all(&self, queries: &[String], budget: Duration) -> HashMap<String, Option<Answer>> {
        let before: HashMap<String, Option<Timestamp>> = {
            let st = self.state();
            queries.iter().map(|q| (q.clone(), st.answers.get(q).map(|a| a.at))).collect()
        };
        for q in queries {
            self.ask(q);
        }
        let deadline = Instant::now() + budget;
        let mut st = self.state();
        loop {
            let all_new = queries.iter().all(|q| {
                let now = st.answers.get(q).map(|a| a.at);
                // Answered since we asked, or nothing out for it (the in-flight cap was hit).
                now != before[q] || !st.in_flight.contains(q)
            });
            let left = deadline.saturating_duration_since(Instant::now());
            if all_new || left.is_zero() {
                break;
            }
            st = self.inner.changed.wait_timeout(st, left).map(|(g, _)| g).unwrap_or_else(|e| e.into_inner().0);
        }
        queries.iter().map(|q| (q.clone(), st.answers.get(q).cloned())).collect()
    }

    /// Sends `query` on a thread of its own, unless it is out already or too many are.
    fn ask(&self, query: &str) {
        {
            let mut st = self.state();
            if st.in_flight.contains(query) || st.in_flight.len() >= MAX_IN_FLIGHT {
                return;
            }
            st.in_flight.insert(query.to_string());
        }
        let inner = self.inner.clone();
        let q = query.to_string();
        let spawned = std::thread::Builder::new().name("prometheus-query".into()).spawn(move || {
            let result = match &inner.metrics {
                Some(m) => m.holds(&q),
                None => Err("no `prometheus:` configured".into()),
            };
            let at = inner.clock.now();
            let mut st = inner.state.lock().unwrap_or_else(|e| e.into_inner());
            st.answers.insert(q.clone(), Answer { result, at });
            st.in_flight.remove(&q);
            drop(st);
            inner.changed.notify_all();
        });
        if spawned.is_err() {
            self.state().in_flight.remove(query);
        }
    }
}
