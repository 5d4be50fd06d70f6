//! Human durations in configuration (`30m`, `24h`, `1h 30m`).

use std::fmt;
use std::str::FromStr;

use jiff::SignedDuration;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative duration written the way people write them in YAML. Parsing is jiff's
/// "friendly" format (also ISO 8601), so `30m`, `6h`, `1d` and `PT30M` all work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(SignedDuration);

impl Duration {
    pub const ZERO: Duration = Duration(SignedDuration::ZERO);

    pub fn from_secs(secs: i64) -> Self {
        Self(SignedDuration::from_secs(secs))
    }

    pub fn as_signed(self) -> SignedDuration {
        self.0
    }

    pub fn as_std(self) -> std::time::Duration {
        // Non-negative by construction.
        std::time::Duration::try_from(self.0).unwrap_or_default()
    }
}

impl FromStr for Duration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        // jiff's friendly format has no plain-days unit for absolute durations; a day in a
        // guard means 24 hours, never a calendar day.
        let parsed = match trimmed.strip_suffix('d').and_then(|n| n.trim().parse::<i64>().ok()) {
            Some(days) => days.checked_mul(86_400).map(SignedDuration::from_secs),
            None => trimmed.parse::<SignedDuration>().ok(),
        };
        match parsed {
            Some(d) if d.is_negative() => Err(format!("duration `{s}` is negative")),
            Some(d) => Ok(Duration(d)),
            None => Err(format!("invalid duration `{s}`: expected a number and a unit, like 90s, 30m, 6h or 7d")),
        }
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

crate::support::schema::string_schema!(
    Duration,
    "Duration",
    "A duration: a number and a unit (`s`, `m`, `h`, `d`), e.g. `30s`, `15m`, `2h`, `1h30m`.",
    pattern = "^\\s*([0-9]+\\s*[a-z]+\\s*)+$"
);

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_people_write() {
        for (text, secs) in [
            ("30m", 1800),
            ("24h", 86_400),
            ("6h", 21_600),
            ("90s", 90),
            ("1h 30m", 5400),
            ("7d", 604_800),
            ("PT30M", 1800),
        ] {
            assert_eq!(text.parse::<Duration>().unwrap(), Duration::from_secs(secs), "{text}");
        }
    }

    #[test]
    fn rejects_nonsense_with_a_hint() {
        for text in ["", "soon", "30", "-5m", "m30"] {
            let err = text.parse::<Duration>().unwrap_err();
            assert!(err.contains("duration"), "{text}: {err}");
        }
    }

    #[test]
    fn displays_compactly() {
        assert_eq!("30m".parse::<Duration>().unwrap().to_string(), "30m");
    }
}
