//! The engine's life on the writer: when it next has something to do on its own (its
//! deadlines), how it is rebuilt from git after a job panicked, and how it finishes. Finishing
//! is a call, never a `Drop`: a reload hands the old engine's notices to a thread of their own
//! instead of making the writer wait for them (or for what they owe the forge).

use jiff::Timestamp;

use super::{Engine, EngineError};
use crate::notify::Notifier;

/// Notices still queued when an engine finishes: how long they may take to go out.
pub const FINISH_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// What is left of an engine that has been let go: what it owes the forge and its notices,
/// on their way out.
pub struct Finishing {
    outbox: crate::forge::Outbox,
    notifier: Notifier,
}

impl Finishing {
    /// Waits up to `within` for the forge's work and the notices to be done (the forge's
    /// first: its work may end in a notice).
    pub fn wait(self, within: std::time::Duration) {
        let deadline = std::time::Instant::now() + within;
        if !self.outbox.settle(within) {
            tracing::warn!("what was owed to the forge was not all done before the end");
        }
        self.notifier.finish(deadline.saturating_duration_since(std::time::Instant::now()));
    }

    /// Lets the notices go out on a thread of their own: a writer switching engines (reload, a
    /// rebuild after a panic) does not wait for a slow chat service.
    pub fn in_background(self) {
        let spawned =
            std::thread::Builder::new().name("rollbackd-finish".into()).spawn(move || self.wait(FINISH_WITHIN));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no thread to finish the previous engine's notices; they go out as they can");
        }
    }
}

/// The engine of one command (the CLI's, or a test's). The process goes on or exits as soon
/// as the command is done, so when this goes, what the engine owes the forge and the notices it
/// queued are given up to `within` to go out: finishing, explicitly, on the caller's thread
/// (never the writer's). `into_inner` is the engine itself, for a caller that finishes it.
pub struct Session {
    engine: Option<Engine>,
    within: std::time::Duration,
}

impl Session {
    pub fn new(engine: Engine, within: std::time::Duration) -> Self {
        Session { engine: Some(engine), within }
    }

    pub fn into_inner(mut self) -> Engine {
        self.engine.take().expect("present until dropped")
    }
}

impl std::ops::Deref for Session {
    type Target = Engine;
    fn deref(&self) -> &Engine {
        self.engine.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for Session {
    fn deref_mut(&mut self) -> &mut Engine {
        self.engine.as_mut().expect("present until dropped")
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(engine) = self.engine.take() {
            engine.finish().wait(self.within);
        }
    }
}

impl Engine {
    /// Lets go of the mirror and everything else at once, and returns the notices still on
    /// their way out, for the caller to wait for or not.
    pub fn finish(mut self) -> Finishing {
        self.ctx.repo.save_index();
        Finishing { notifier: self.ctx.notifier.clone(), outbox: self.ctx.outbox }
    }

    /// Keeps what the audit index walked for the next process (see `ConfigRepo::save_index`).
    pub(crate) fn save_index(&mut self) {
        self.ctx.repo.save_index();
    }

    /// A new engine on the config in force and the same clock, with nothing carried over from
    /// this one: everything it knows (rollbacks, watches, phases, holds, candidates) is read
    /// back from git, which is where the state is. The writer's way out of a job that
    /// panicked half-way through changing this one. Secrets are read again from where the
    /// config says they are.
    pub fn rebuilt(&self) -> Result<Engine, EngineError> {
        let secrets = self.ctx.config.secrets().map_err(|e| EngineError::Config(e.to_string()))?;
        Engine::new(self.ctx.config.clone(), secrets, self.ctx.clock.clone())
    }

    /// The earliest moment after `after` (when what was due was last done) at which something
    /// this engine waits for falls due without any new event: a verification whose alerts
    /// stayed resolved (or whose query held) for `stable_for`, a verification's `within`, the
    /// end of a phase's soak, the next scheduled drill. The writer wakes then rather than at its
    /// next idle refresh; a moment already past is due at once.
    pub fn next_deadline(&self, after: Timestamp) -> Option<Timestamp> {
        let watches = self.verification.watches.values().flat_map(|w| w.deadlines());
        watches
            .chain(self.ctx.soak_ends(self.ctx.clock.now()))
            .chain(super::drill::next_at(&self.ctx, &self.drills_deferred))
            .filter(|t| *t > after)
            .min()
    }
}
