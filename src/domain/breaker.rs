//! The blast-radius breaker. One bad deploy breaks one service, or a few that share it; when
//! more distinct services alert at once, the cause is probably not a deploy (the network, a
//! shared dependency, the monitoring itself), and rolling each back would only add changes to
//! the incident. Pure: the engine feeds it what alerted and carries out the trip (a pause).

use std::collections::{BTreeSet, HashMap};

use jiff::Timestamp;
use serde::Deserialize;

use crate::support::duration::Duration;

/// `pause.breaker` in the config.
#[derive(Clone, Copy, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// More distinct services than this alerting within `window` trips the breaker. `0`: off.
    #[serde(default = "three")]
    pub max_services: u32,
    #[serde(default = "ten_minutes")]
    pub window: Duration,
}

fn three() -> u32 {
    3
}

fn ten_minutes() -> Duration {
    Duration::from_secs(600)
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig { max_services: three(), window: ten_minutes() }
    }
}

/// Services remembered at most: a flood of distinct names trips the breaker long before.
const REMEMBERED: usize = 10_000;

/// When each service last had an automatic event that a rolling-back policy acted on.
#[derive(Debug, Default)]
pub(crate) struct Alerting {
    last: HashMap<String, Timestamp>,
}

impl Alerting {
    pub(crate) fn observe(&mut self, service: &str, at: Timestamp) {
        if self.last.len() >= REMEMBERED && !self.last.contains_key(service) {
            return;
        }
        let t = self.last.entry(service.to_string()).or_insert(at);
        *t = (*t).max(at);
    }

    /// The services alerting within the window ending `now` and after `since` (when the pause
    /// was last set or lifted: a person's `resume` starts the count afresh), together with
    /// `others` (rollbacks other replicas pushed, as git records them), when they are more than
    /// the config allows.
    pub(crate) fn tripped<'a>(
        &mut self,
        config: &BreakerConfig,
        now: Timestamp,
        since: Option<Timestamp>,
        others: impl Iterator<Item = (&'a str, Timestamp)>,
    ) -> Option<Vec<String>> {
        if config.max_services == 0 {
            return None;
        }
        let window_start = now.checked_sub(config.window.as_signed()).unwrap_or(Timestamp::MIN);
        self.last.retain(|_, t| *t > window_start);
        let from = since.map_or(window_start, |s| s.max(window_start));
        let mut services: BTreeSet<String> =
            self.last.iter().filter(|(_, t)| **t > from).map(|(s, _)| s.clone()).collect();
        services.extend(others.filter(|(_, t)| *t > from).map(|(s, _)| s.to_string()));
        (services.len() > config.max_services as usize).then(|| services.into_iter().collect())
    }
}

/// The pause reason a trip records.
pub(crate) fn reason(services: &[String], config: &BreakerConfig) -> String {
    format!(
        "blast-radius breaker: {} services alerting within {} ({}), more than {}: probably not a deploy",
        services.len(),
        config.window,
        services.join(", "),
        config.max_services
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(min: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + min * 60).unwrap()
    }

    #[test]
    fn trips_past_the_count_within_the_window_only() {
        let config = BreakerConfig { max_services: 2, window: Duration::from_secs(600) };
        let mut a = Alerting::default();
        a.observe("checkout", at(0));
        a.observe("cart", at(1));
        a.observe("cart", at(2));
        assert_eq!(a.tripped(&config, at(2), None, std::iter::empty()), None, "two services, same one twice");
        assert_eq!(
            a.tripped(&config, at(3), None, [("search", at(3))].into_iter()),
            Some(vec!["cart".into(), "checkout".into(), "search".into()]),
            "a third, pushed by another replica"
        );
        a.observe("search", at(12));
        assert_eq!(a.tripped(&config, at(12), None, std::iter::empty()), None, "checkout fell out of the window");
        assert_eq!(a.tripped(&config, at(3), Some(at(1)), [("search", at(3))].into_iter()), None, "since a resume");
        let off = BreakerConfig { max_services: 0, ..config };
        assert_eq!(a.tripped(&off, at(12), None, [("x", at(12)), ("y", at(12))].into_iter()), None);
    }
}
