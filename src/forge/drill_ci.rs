//! What the config repo's CI said of each drill branch's head, asked of GitHub on a thread of
//! its own: GitHub is a remote rollbackd does not own, and readiness is worked out on the
//! writer, which never waits on one. The asker waits at most a budget it chooses (the writer:
//! none, it reads the last answer; the CLI: a few seconds) and the answer is kept for the next.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::Forge;
use crate::domain::drill::CiVerdict;
use crate::support::asker::Asker;

/// A verdict older than this is asked again (a re-run changes it).
const FRESH_FOR: Duration = Duration::from_secs(60);
/// A pending answer is asked again sooner: CI is expected to report soon.
const PENDING_FRESH_FOR: Duration = Duration::from_secs(5);
/// Questions out at once; a GitHub that hangs them all costs at most this many threads.
const MAX_IN_FLIGHT: usize = 8;

/// Asks the forge about drill heads off the asker's thread; see the module doc.
#[derive(Clone, Debug)]
pub(crate) struct DrillCi {
    /// The forge is GitHub (the local forge runs no CI).
    github: bool,
    asker: Asker<String, CiVerdict>,
}

impl DrillCi {
    pub(crate) fn new(forge: Arc<dyn Forge>) -> Self {
        let fresh_for =
            |v: &CiVerdict| if matches!(v, CiVerdict::Pending { .. }) { PENDING_FRESH_FOR } else { FRESH_FOR };
        let github = forge.hosts_pull_requests();
        let asked = forge;
        let asker =
            Asker::new("drill-ci", MAX_IN_FLIGHT, fresh_for, move |commit: &String| match asked.ci_of(commit) {
                Ok(c) => CiVerdict::of(c.failed, c.pending, c.passed),
                Err(e) => CiVerdict::unasked(e),
            });
        DrillCi { github, asker }
    }

    /// Whether there is a forge to ask at all (the local forge runs no CI).
    pub(crate) fn asks(&self) -> bool {
        self.github
    }

    /// Changes whenever an answer does.
    pub(crate) fn generation(&self) -> u64 {
        self.asker.generation()
    }

    /// Asks about each commit (unless asked lately or out already), then waits until each has
    /// an answer or `budget` is over. A commit with no answer yet is absent.
    pub(crate) fn ask_all(&self, commits: &[String], budget: Duration) -> HashMap<String, CiVerdict> {
        if !self.asks() {
            return HashMap::new();
        }
        self.asker.ask_all(commits, budget).into_iter().map(|(c, kept)| (c, kept.value)).collect()
    }
}
