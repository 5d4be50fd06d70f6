//! GitHub never retries a webhook delivery on its own: one answered 503 while the config repo
//! was unreachable (or sent while rollbackd was down) is lost, unlike Alertmanager's. So the
//! writer, once the origin answers again, lists the App's recent deliveries (every page of the
//! three days GitHub keeps) and asks GitHub to send again each one that failed on rollbackd's
//! side for a reason that passes (a 5xx, a timeout, no connection). Never one rollbackd refused
//! (400, 401, 413, 415, ...): it would be refused again, and each redelivery is a new failed
//! attempt, so it would be asked for forever. Handling stays exactly once: a CI failure is
//! deduplicated by the audit trail in git, a comment's command by what it already did.
//!
//! The asking is GitHub's network, not the writer's: the writer hands a [`Round`] (what to ask
//! with) to a thread of its own, which keeps the [`Redelivery`] state and never holds up an
//! event behind a slow GitHub.

use std::collections::HashMap;

use jiff::{SignedDuration, Timestamp};
use tracing::{info, warn};

use std::sync::Arc;

use super::Engine;
use crate::forge::{Forge, HookDelivery};
use crate::support::clock::Clock;

/// GitHub keeps deliveries for three days; older ones cannot be sent again.
const KEPT: SignedDuration = SignedDuration::from_hours(72);
/// At most this many redeliveries asked for at once: a long outage is worked off over a few
/// rounds instead of flooding the listener.
const PER_ROUND: usize = 25;
/// At most this many asks for one delivery, each after a new failed attempt of it (a new
/// outage): a delivery that keeps failing is given up rather than asked for forever.
const ASKS_PER_DELIVERY: u32 = 3;

/// The deliveries asked for again, by guid: how many times, and when last.
/// What redelivery remembers from one round to the next: when it last looked, and which
/// deliveries it asked for again.
#[derive(Debug, Default)]
pub(crate) struct Redelivery {
    looked_at: Option<Timestamp>,
    asked: Asked,
}

#[derive(Debug, Default)]
pub(crate) struct Asked(HashMap<String, (u32, Timestamp)>);

/// Whether an attempt answered `status` failed in a way that passes: GitHub could not connect
/// or timed out (0), rollbackd was busy or its origin away (408, 429, 5xx).
fn transient(status: u16) -> bool {
    matches!(status, 0 | 408 | 429) || status >= 500
}

/// The latest attempt of each delivery to ask for again, oldest first: no attempt of it
/// succeeded, none was refused, its latest failed transiently, after any ask of ours for it,
/// and it was asked for fewer than [`ASKS_PER_DELIVERY`] times.
pub(crate) fn to_redeliver<'a>(list: &'a [HookDelivery], asked: &Asked, now: Timestamp) -> Vec<&'a HookDelivery> {
    let mut latest: HashMap<&str, &HookDelivery> = HashMap::new();
    let mut settled = std::collections::HashSet::new();
    for d in list {
        // Handled, or refused: either way, sending it again cannot help.
        if !transient(d.status_code) {
            settled.insert(d.guid.as_str());
        }
        let newer = latest.get(d.guid.as_str()).is_none_or(|l| d.delivered_at > l.delivered_at);
        if newer {
            latest.insert(&d.guid, d);
        }
    }
    let since = now.checked_sub(KEPT).unwrap_or(Timestamp::UNIX_EPOCH);
    let mut due: Vec<&HookDelivery> = latest
        .into_values()
        .filter(|d| !settled.contains(d.guid.as_str()) && d.delivered_at > since)
        .filter(|d| match asked.0.get(&d.guid) {
            Some((times, at)) => *times < ASKS_PER_DELIVERY && d.delivered_at > *at,
            None => true,
        })
        .collect();
    due.sort_by_key(|d| d.delivered_at);
    due.truncate(PER_ROUND);
    due
}

impl Asked {
    fn record(&mut self, guid: &str, now: Timestamp) {
        let entry = self.0.entry(guid.to_string()).or_insert((0, now));
        *entry = (entry.0 + 1, now);
    }

    /// Forgets what GitHub no longer keeps.
    fn prune(&mut self, now: Timestamp) {
        let since = now.checked_sub(KEPT).unwrap_or(Timestamp::UNIX_EPOCH);
        self.0.retain(|_, (_, at)| *at > since);
    }
}

/// What one round of redelivery asks with: how often, the clock, and the forge (one whose
/// App can see its deliveries).
pub(crate) struct Round {
    every: SignedDuration,
    clock: Arc<dyn Clock>,
    forge: Arc<dyn Forge>,
}

/// The round the engine's config asks for: none without `sources.github` (or with
/// `redeliver_every: 0`), or where the forge cannot see its deliveries (only a GitHub App can).
pub(super) fn round(ctx: &super::Ctx) -> Option<Round> {
    let every = ctx.config.sources.github.as_ref()?.redeliver_every.as_signed();
    (!every.is_zero() && ctx.forge.sees_deliveries()).then(|| Round {
        every,
        clock: ctx.clock.clone(),
        forge: ctx.forge.clone(),
    })
}

/// Asks GitHub to send again the failed deliveries, every `sources.github.redeliver_every`.
pub(crate) fn handle_due(round: &Round, state: &mut Redelivery) -> Vec<String> {
    let now = round.clock.now();
    if state.looked_at.is_some_and(|t| now.duration_since(t) < round.every) {
        return Vec::new();
    }
    state.looked_at = Some(now);
    let since = now.checked_sub(KEPT).unwrap_or(Timestamp::UNIX_EPOCH);
    let list = match round.forge.deliveries(since) {
        None => return Vec::new(),
        Some(Ok(list)) => list,
        Some(Err(e)) => {
            warn!(error = %e, "could not list the App's webhook deliveries; trying again later");
            return Vec::new();
        }
    };
    state.asked.prune(now);
    let mut said = Vec::new();
    for d in to_redeliver(&list, &state.asked, now) {
        match round.forge.redeliver(d.id) {
            Ok(()) => {
                info!(delivery = %d.guid, event = %d.event, status = d.status_code, "asked GitHub to send a failed delivery again");
                said.push(format!("redelivery of {} ({}) requested", d.guid, d.event));
            }
            Err(e) => warn!(delivery = %d.guid, error = %e, "could not ask GitHub to send a delivery again"),
        }
        // Asked, answered or not: a refusal (too old, gone) would be the same next round.
        state.asked.record(&d.guid, now);
    }
    said
}

impl Engine {
    /// What the redelivery thread asks GitHub with now (the config in force), if anything.
    pub(crate) fn redelivery_round(&self) -> Option<Round> {
        round(&self.ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(id: u64, guid: &str, at: &str, status: u16) -> HookDelivery {
        HookDelivery {
            id,
            guid: guid.into(),
            delivered_at: at.parse().unwrap(),
            redelivery: id > 1,
            status_code: status,
            event: "workflow_run".into(),
        }
    }

    #[test]
    fn only_deliveries_that_failed_transiently_and_never_succeeded_are_sent_again_once() {
        let now: Timestamp = "2026-11-21T12:00:00Z".parse().unwrap();
        let list = [
            d(1, "a", "2026-11-21T11:00:00Z", 503),
            d(2, "a", "2026-11-21T11:10:00Z", 200), // redelivered already, handled
            d(3, "b", "2026-11-21T11:20:00Z", 503),
            d(4, "b", "2026-11-21T11:30:00Z", 0), // its redelivery could not connect either
            d(5, "c", "2026-11-17T11:00:00Z", 503), // beyond GitHub's three days
            d(6, "e", "2026-11-21T11:40:00Z", 202),
            d(7, "f", "2026-11-21T11:41:00Z", 400), // refused by rollbackd: never again
            d(8, "g", "2026-11-21T11:42:00Z", 413),
            d(9, "h", "2026-11-21T11:43:00Z", 415),
            d(10, "f", "2026-11-21T11:44:00Z", 503), // a refused one that later failed otherwise
            d(11, "i", "2026-11-21T11:45:00Z", 504),
        ];
        let mut asked = Asked::default();
        let due: Vec<u64> = to_redeliver(&list, &asked, now).iter().map(|d| d.id).collect();
        assert_eq!(due, [4, 11]);
        asked.record("b", now);
        asked.record("i", now);
        // Asked for: not again until a new attempt fails (a new outage)...
        assert!(to_redeliver(&list, &asked, now).is_empty());
        let later: Timestamp = "2026-11-21T12:10:00Z".parse().unwrap();
        let mut list = list.to_vec();
        list.push(d(12, "b", "2026-11-21T12:05:00Z", 503));
        let due: Vec<u64> = to_redeliver(&list, &asked, later).iter().map(|d| d.id).collect();
        assert_eq!(due, [12]);
        // ... and at most three times in all.
        asked.record("b", later);
        asked.record("b", later);
        list.push(d(13, "b", "2026-11-21T12:20:00Z", 503));
        assert!(to_redeliver(&list, &asked, later).is_empty());
    }
}
