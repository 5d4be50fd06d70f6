//! Freezes: windows (planned maintenance, a launch) in which automatic rollbacks become
//! proposals. A person with the right to ask still gets their rollback. Stored in the config repo
//! (see `git::ConfigRepo::freezes`), so replicas share them and their history is the audit trail.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freeze {
    /// A service, or `all`.
    pub scope: String,
    /// One environment, or every one when absent.
    #[serde(default)]
    pub env: Option<String>,
    pub until: Timestamp,
    #[serde(default)]
    pub reason: Option<String>,
    pub by: String,
    pub at: Timestamp,
    /// The kill switch (`rollbackd pause`): every automatic write stops, fleet-wide. Lifted only
    /// by `resume`, never by `unfreeze all`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pause: bool,
}

/// Who the blast-radius breaker's pause is recorded by, where a person's pause names the person.
pub(crate) const BREAKER: &str = "rollbackd:breaker";

impl Freeze {
    /// What this freeze is as a cause of a proposal: a freeze, a person's pause or the
    /// breaker's.
    pub fn cause(&self) -> crate::domain::rollback::Cause {
        use crate::domain::rollback::Cause;
        let detail = self.describe();
        match (self.pause, self.by == BREAKER) {
            (true, true) => Cause::Breaker { detail },
            (true, false) => Cause::Pause { detail },
            (false, _) => Cause::Freeze { detail },
        }
    }

    pub fn covers(&self, service: &str, env: &str, now: Timestamp) -> bool {
        now < self.until
            && (self.pause || self.scope == "all" || self.scope == service)
            && self.env.as_deref().is_none_or(|e| e == env)
    }

    pub fn describe(&self) -> String {
        let until = to_the_second(self.until);
        if self.pause {
            let reason = self.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
            return format!("automatic rollbacks paused until {until} by {}{reason}", self.by);
        }
        let env = self.env.as_deref().map(|e| format!(" in {e}")).unwrap_or_default();
        let reason = self.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
        format!("{}{env} frozen until {until} by {}{reason}", self.scope, self.by)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freezes {
    pub freezes: Vec<Freeze>,
    /// When the pause was last set or lifted: the blast-radius breaker counts only what
    /// alerted after it, so a person's `resume` resets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_changed_at: Option<Timestamp>,
}

impl Freezes {
    pub fn covering(&self, service: &str, env: &str, now: Timestamp) -> Option<&Freeze> {
        self.freezes.iter().find(|f| f.covers(service, env, now))
    }

    pub fn active(&self, now: Timestamp) -> impl Iterator<Item = &Freeze> {
        self.freezes.iter().filter(move |f| now < f.until)
    }

    /// Adds a freeze, dropping expired ones so the file does not grow forever (git keeps them).
    pub fn add(&mut self, f: Freeze, now: Timestamp) {
        self.freezes.retain(|x| now < x.until && !(x.scope == f.scope && x.env == f.env && x.pause == f.pause));
        if f.pause {
            self.pause_changed_at = Some(f.at);
        }
        self.freezes.push(f);
    }

    /// Removes freezes of exactly this scope and env (`env: None` lifts them in every env) that
    /// were set no later than `asked_at`.
    pub fn remove(&mut self, scope: &str, env: Option<&str>, now: Timestamp, asked_at: Timestamp) -> usize {
        let before = self.freezes.len();
        // `all` lifts every freeze (of any service) it may, as it says; never the pause.
        self.freezes.retain(|x| {
            let scope_matches = scope == "all" || x.scope == scope;
            now < x.until
                && (x.pause || !(scope_matches && (env.is_none() || x.env.as_deref() == env) && x.at <= asked_at))
        });
        before - self.freezes.len()
    }

    /// Lifts the pause (if it was set no later than `asked_at`).
    pub fn resume(&mut self, now: Timestamp, asked_at: Timestamp) -> usize {
        let before = self.freezes.len();
        self.freezes.retain(|x| now < x.until && !(x.pause && x.at <= asked_at));
        let removed = before - self.freezes.len();
        if removed > 0 {
            self.pause_changed_at = Some(now);
        }
        removed
    }
}

impl Freezes {
    /// The pause in force, if any.
    pub fn paused(&self, now: Timestamp) -> Option<&Freeze> {
        self.active(now).find(|f| f.pause)
    }
}

/// Times people read: to the second.
pub(crate) fn to_the_second(t: Timestamp) -> Timestamp {
    t.round(jiff::Unit::Second).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn freeze(scope: &str, pause: bool) -> Freeze {
        Freeze {
            scope: scope.into(),
            env: None,
            until: at("2026-11-21T13:00:00.123456789Z"),
            reason: None,
            by: "cli:ops".into(),
            at: at("2026-11-21T11:00:00Z"),
            pause,
        }
    }

    #[test]
    fn unfreeze_all_lifts_every_freeze_it_says_but_never_the_pause() {
        let now = at("2026-11-21T12:00:00Z");
        let mut set = Freezes::default();
        for f in [freeze("checkout", false), freeze("cart", false), freeze("all", false), freeze("all", true)] {
            set.add(f, now);
        }
        assert_eq!(set.freezes.len(), 4, "a pause and a freeze of all are two things");
        assert_eq!(set.remove("all", None, now, now), 3);
        assert!(set.paused(now).is_some());
        assert_eq!(set.resume(now, now), 1);
        assert!(set.freezes.is_empty());
    }

    #[test]
    fn times_are_said_to_the_second() {
        assert_eq!(freeze("checkout", false).describe(), "checkout frozen until 2026-11-21T13:00:00Z by cli:ops");
    }
}
