//! The engine's side of the blast-radius breaker: counting what alerts, and tripping it as a
//! pause recorded in git, which every replica then honours.

use jiff::Timestamp;
use tracing::warn;

use super::EngineError;
use crate::domain::breaker;
use crate::domain::decision::Decision;
use crate::domain::freeze::Freeze;
use crate::domain::rollback::Delivery;

/// The name a trip is recorded by, where a person's pause names the person.
const BY: &str = crate::domain::freeze::BREAKER;

/// Triggers of rollbacks no person asked for (`source:key`): alerts, CI, and rollbackd's own
/// step backs.
fn is_automatic(trigger: &str) -> bool {
    crate::domain::event::Trigger::parse(trigger).is_automatic()
}

/// Counts an automatic event a rolling-back policy acts on for `service` (a step back
/// counts too). When more
/// distinct services than `pause.breaker.max_services` are alerting within its window,
/// pauses automatic rollbacks (the `rollbackd pause` record in git, by
/// `rollbackd:breaker`) for the window: they become proposals (or are denied, by
/// `pause.automatic`) until a person resumes or the window passes.
pub(super) fn count(
    ctx: &mut super::Ctx,
    state: &mut crate::domain::breaker::Alerting,
    service: &str,
    now: Timestamp,
    decision: &mut Decision,
) -> Result<(), EngineError> {
    let config = ctx.config.pause.breaker;
    if config.max_services == 0 {
        return Ok(());
    }
    state.observe(service, now);
    // Unreadable freezes: every automatic write is treated as paused already (see
    // `facts`), and a trip could not be written on top of them.
    let Ok(freezes) = ctx.repo.freezes() else { return Ok(()) };
    if freezes.paused(now).is_some() {
        return Ok(());
    }
    // Rollbacks other replicas pushed for alerts they were sent count too.
    let pushed = ctx
        .repo
        .index()
        .records()
        .iter()
        .filter(|r| r.delivery == Delivery::Direct && r.tag.is_some() && is_automatic(&r.trigger))
        .map(|r| (r.service.as_str(), r.at));
    let Some(services) = state.tripped(&config, now, freezes.pause_changed_at, pushed) else {
        return Ok(());
    };
    let reason = breaker::reason(&services, &config);
    let until = now.checked_add(config.window.as_signed()).unwrap_or(now);
    let trip = Freeze {
        scope: "all".into(),
        env: None,
        until,
        reason: Some(reason.clone()),
        by: BY.into(),
        at: now,
        pause: true,
    };
    let message = format!("Pause: {}\n", trip.describe());
    // Another replica may have tripped it (or a person paused) meanwhile: one pause.
    let tripped = ctx.repo.update_freezes(&message, now, |set| {
        let free = set.paused(now).is_none();
        if free {
            set.add(trip.clone(), now);
        }
        free
    })?;
    if tripped {
        crate::metrics::breaker_tripped();
        warn!(services = services.len(), until = %until, "{reason}");
        decision.notes.push(format!("{reason}: automatic rollbacks paused until {until}"));
    }
    Ok(())
}
