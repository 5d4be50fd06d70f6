//! Keeps the status fresh between the writer's idle fetches. Once a second, off the writer's
//! thread, it asks the origin for the values of rollbackd's state refs (the watched branch, the
//! notes, the pause and freezes, the releases, the proposals' branches and tags; never the
//! history): unchanged, the status is
//! confirmed as of that moment (`as_of`); changed (another replica or the CLI paused, froze,
//! released, rolled back), it has the writer fetch and rebuild the status at once. The cost of
//! a look is one connection and a few ref values, whatever the history's length.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tracing::debug;

use crate::git::StateRefs;
use crate::support::clock::Clock;
use crate::worker::{Job, Shared, WorkerHandle};

/// How often the origin is asked.
pub(crate) const EVERY: Duration = Duration::from_secs(1);
/// How long to leave the origin alone after a look or a refresh failed.
const AFTER_FAILURE: Duration = Duration::from_secs(5);
/// How long to wait for the writer to refresh before asking again.
const REFRESH_WAIT: Duration = Duration::from_secs(60);

/// Starts the watch for one writer. It stops once the writer's queue is gone (`queue` can no
/// longer be upgraded): holding only a weak reference, it never keeps the writer alive.
pub(crate) fn spawn(
    name: Option<&str>,
    queue: Weak<std::sync::mpsc::SyncSender<Job>>,
    shared: Arc<Shared>,
    clock: Arc<dyn Clock>,
) {
    let thread = name.map_or_else(|| "rollbackd-watch".into(), |n| format!("watch-{n}"));
    let spawned = std::thread::Builder::new().name(thread).spawn(move || run(&queue, &shared, clock.as_ref()));
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "the state watch could not start; the status is refreshed at idle fetches only");
    }
}

fn run(queue: &Weak<std::sync::mpsc::SyncSender<Job>>, shared: &Arc<Shared>, clock: &dyn Clock) {
    // The state the published status was built from, as last confirmed.
    let mut published: Option<StateRefs> = None;
    loop {
        std::thread::sleep(EVERY);
        if queue.strong_count() == 0 {
            return;
        }
        // Taken fresh each time: a reload may change the origin, a token may be renewed.
        let Some(watcher) = shared.state_watcher() else { continue };
        let asked_at = clock.now();
        let refs = match watcher.look() {
            Ok(refs) => refs,
            Err(e) => {
                debug!(error = %e, "looking at the origin's state failed");
                std::thread::sleep(AFTER_FAILURE);
                continue;
            }
        };
        if published.as_ref() == Some(&refs) {
            shared.confirm_as_of(asked_at);
            continue;
        }
        let Some(tx) = queue.upgrade() else { return };
        let (done, answer) = std::sync::mpsc::sync_channel(1);
        // A full queue: the writer publishes after its jobs anyway; ask again next time.
        let queued = WorkerHandle::from_parts(tx, shared.clone()).submit(Job::Refresh { done });
        if queued.is_err() {
            continue;
        }
        match answer.recv_timeout(REFRESH_WAIT) {
            Ok(Ok(())) => {
                published = Some(refs);
                shared.confirm_as_of(asked_at);
            }
            Ok(Err(error)) => {
                debug!(%error, "refreshing the status failed");
                std::thread::sleep(AFTER_FAILURE);
            }
            Err(_) => {}
        }
    }
}
