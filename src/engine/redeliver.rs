//! GitHub never retries a webhook delivery on its own: one answered 503 while the config repo
//! was unreachable (or sent while rollbackd was down) is lost, unlike Alertmanager's. So the
//! writer, once the origin answers again, lists the App's recent deliveries and asks GitHub to
//! send again each one that no attempt got a 2xx for. Handling stays exactly once: a CI failure
//! is deduplicated by the audit trail in git, a comment's command by what it already did.

use jiff::{SignedDuration, Timestamp};
use tracing::{info, warn};

use super::Engine;
use crate::forge::HookDelivery;

/// GitHub keeps deliveries for three days; older ones cannot be sent again.
const KEPT: SignedDuration = SignedDuration::from_hours(72);
/// At most this many redeliveries asked for at once: a long outage is worked off over a few
/// rounds instead of flooding the listener.
const PER_ROUND: usize = 25;

/// The latest attempt of each delivery no attempt of which succeeded, oldest first.
pub(crate) fn to_redeliver(list: &[HookDelivery], now: Timestamp) -> Vec<&HookDelivery> {
    let mut latest: std::collections::HashMap<&str, &HookDelivery> = std::collections::HashMap::new();
    let mut ok = std::collections::HashSet::new();
    for d in list {
        if (200..300).contains(&d.status_code) {
            ok.insert(d.guid.as_str());
        }
        let newer = latest.get(d.guid.as_str()).is_none_or(|l| d.delivered_at > l.delivered_at);
        if newer {
            latest.insert(&d.guid, d);
        }
    }
    let since = now.checked_sub(KEPT).unwrap_or(Timestamp::UNIX_EPOCH);
    let mut due: Vec<&HookDelivery> =
        latest.into_values().filter(|d| !ok.contains(d.guid.as_str()) && d.delivered_at > since).collect();
    due.sort_by_key(|d| d.delivered_at);
    due.truncate(PER_ROUND);
    due
}

impl Engine {
    /// Asks GitHub to send again the failed deliveries, every `sources.github.redeliver_every`.
    /// Only with the GitHub forge as an App (GitHub shows deliveries to the App alone).
    pub fn redeliver_failed(&mut self) -> Vec<String> {
        let Some(every) = self.config.sources.github.as_ref().map(|g| g.redeliver_every.as_signed()) else {
            return Vec::new();
        };
        let Some(gh) = self.forge.github().filter(|g| g.is_app()) else { return Vec::new() };
        let now = self.clock.now();
        if every.is_zero() || self.redelivered_at.is_some_and(|t| now.duration_since(t) < every) {
            return Vec::new();
        }
        self.redelivered_at = Some(now);
        let list = match gh.deliveries() {
            Ok(list) => list,
            Err(e) => {
                warn!(error = %e, "could not list the App's webhook deliveries; trying again later");
                return Vec::new();
            }
        };
        let mut said = Vec::new();
        for d in to_redeliver(&list, now) {
            match gh.redeliver(d.id) {
                Ok(()) => {
                    info!(delivery = %d.guid, event = %d.event, status = d.status_code, "asked GitHub to send a failed delivery again");
                    said.push(format!("redelivery of {} ({}) requested", d.guid, d.event));
                }
                Err(e) => warn!(delivery = %d.guid, error = %e, "could not ask GitHub to send a delivery again"),
            }
        }
        said
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
    fn only_deliveries_no_attempt_of_which_succeeded_are_sent_again_once() {
        let now: Timestamp = "2026-11-21T12:00:00Z".parse().unwrap();
        let list = [
            d(1, "a", "2026-11-21T11:00:00Z", 503),
            d(2, "a", "2026-11-21T11:10:00Z", 200), // redelivered already, handled
            d(3, "b", "2026-11-21T11:20:00Z", 503),
            d(4, "b", "2026-11-21T11:30:00Z", 0), // its redelivery could not connect either
            d(5, "c", "2026-11-17T11:00:00Z", 503), // beyond GitHub's three days
            d(6, "e", "2026-11-21T11:40:00Z", 202),
        ];
        let due: Vec<u64> = to_redeliver(&list, now).iter().map(|d| d.id).collect();
        assert_eq!(due, [4]);
    }
}
