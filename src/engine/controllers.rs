//! GitOps controllers (Flux, Argo CD) as the engine sees them: the revision a failure names
//! must be in the mirror before it bounds a plan, and a revision reported applied and healthy
//! marks known-good and tells the verifications of the rollbacks it contains that they
//! reached the cluster.

use tracing::info;

use super::{Engine, EngineError};
use crate::domain::event::Event;
use crate::domain::rollback::RollbackId;
use crate::domain::verify::Signal;

impl Engine {
    /// A controller may report a commit pushed a moment ago: fetch at once when the mirror does
    /// not have the revision yet, so "not on the branch" is never said of a stale mirror.
    pub(super) fn fetch_for_revision(&mut self, event: &Event) -> Result<(), EngineError> {
        if let Some(rev) = event.applied_revision()
            && self.repo.committed_at(rev).is_none()
        {
            self.fetch(true)?;
        }
        Ok(())
    }

    /// A controller reports `sha` applied and healthy: known-good for the `known_good`
    /// policies that match (with their soak), and applied for every rollback being verified
    /// whose commit that revision contains.
    pub fn controller_healthy(&mut self, event: &Event) -> Result<String, EngineError> {
        let Some(sha) = event.applied_revision().map(str::to_string) else {
            return Ok("the event names no revision".into());
        };
        {
            let _lock = self.begin()?;
            self.fetch(false)?;
            self.fetch_for_revision(event)?;
        }
        let mut said = vec![self.mark_known_good(event)?];
        let _lock = self.begin()?;
        let now = self.clock.now();
        self.pick_up(now)?;
        let at = event.started_at.unwrap_or(event.received_at).min(now);
        let applied: Vec<RollbackId> = self
            .watches
            .values()
            .filter(|w| w.awaits_controller && w.applied_at.is_none() && self.repo.contains(&sha, &w.commit))
            .map(|w| w.id.clone())
            .collect();
        for id in applied {
            info!(rollback_id = %id, revision = %sha, "the controller applied the rollback");
            said.push(format!("{id}: reached the cluster at {at}"));
            said.extend(self.observe(&id, &Signal::Applied { at }, now));
        }
        Ok(said.join("; "))
    }
}
