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
    /// A controller reports `sha` applied and healthy: known-good for the `known_good`
    /// policies that match (with their soak), and applied for every rollback being verified
    /// whose commit that revision contains.
    pub fn controller_healthy(&mut self, event: &Event) -> Result<String, EngineError> {
        let Some(sha) = event.applied_revision().map(str::to_string) else {
            return Ok("the event names no revision".into());
        };
        {
            let _lock = self.ctx.begin()?;
            self.ctx.fetch_if_stale()?;
            self.ctx.fetch_for_revision(event)?;
            // An Alert often covers objects of other repositories too: their reports are not
            // errors, only nothing to do here.
            if self.ctx.repo.committed_at(&sha).is_none() {
                return Ok(format!("{sha} is not a commit of this config repo: nothing to mark or verify"));
            }
        }
        let mut said = vec![self.mark_known_good(event)?];
        let _lock = self.ctx.begin()?;
        let now = self.ctx.clock.now();
        super::verify::pick_up(&mut self.ctx, &mut self.verification, now)?;
        let at = event.started_at.unwrap_or(event.received_at).min(now);
        let trigger = event.trigger();
        let reporter = object_of(&trigger);
        let applied: Vec<RollbackId> = self
            .verification
            .watches
            .values()
            .filter(|w| w.awaits_controller && w.applied_at.is_none() && self.ctx.repo.contains(&sha, &w.commit))
            // A rollback the controller asked for is verified by the object that failed: another
            // object healthy at the same revision says nothing about it.
            .filter(|w| object_of(&w.trigger).is_none_or(|o| Some(o) == reporter))
            .map(|w| w.id.clone())
            .collect();
        for id in applied {
            info!(rollback_id = %id, revision = %sha, "the controller applied the rollback");
            said.push(format!("{id}: reached the cluster at {at}"));
            said.extend(super::verify::observe(
                &mut self.ctx,
                &mut self.verification,
                &mut self.alerting,
                &id,
                &Signal::Applied { at },
                now,
            ));
        }
        Ok(said.join("; "))
    }
}

/// The controller object a trigger is about: `flux:<kind>/<namespace>/<name>` or
/// `argocd:<app>` (see the parsers' dedupe keys); `None` for any other source.
fn object_of(trigger: &str) -> Option<&str> {
    let end = |s: &str, segments: usize| s.match_indices('/').nth(segments - 1).map_or(s.len(), |(i, _)| i);
    if let Some(key) = trigger.strip_prefix("flux:") {
        return Some(&trigger[..5 + end(key, 3)]);
    }
    let key = trigger.strip_prefix("argocd:")?;
    Some(&trigger[..7 + end(key, 1)])
}

impl super::Ctx {
    /// A controller may report a commit pushed a moment ago: fetch at once when the mirror does
    /// not have the revision yet, so "not on the branch" is never said of a stale mirror.
    pub(super) fn fetch_for_revision(&mut self, event: &Event) -> Result<(), EngineError> {
        if let Some(rev) = event.applied_revision()
            && self.repo.committed_at(rev).is_none()
        {
            self.fetch_now()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::object_of;

    #[test]
    fn the_object_of_a_controllers_trigger() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            object_of(&format!("flux:Kustomization/flux-system/checkout-prod/{sha}/HealthCheckFailed")),
            Some("flux:Kustomization/flux-system/checkout-prod")
        );
        assert_eq!(
            object_of(&format!("flux:Kustomization/flux-system/checkout-prod/{sha}/ReconciliationSucceeded")),
            Some("flux:Kustomization/flux-system/checkout-prod")
        );
        assert_eq!(object_of(&format!("argocd:checkout-prod/{sha}/degraded")), Some("argocd:checkout-prod"));
        assert_eq!(object_of("alertmanager:fp@2026-11-21T10:00:00Z"), None);
    }
}
