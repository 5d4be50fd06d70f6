//! Alertmanager webhook payloads (version 4).

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Deserialize;

use crate::domain::event::{Event, Source};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Webhook {
    version: String,
    #[serde(default)]
    truncated_alerts: u64,
    alerts: Vec<Alert>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Alert {
    status: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    starts_at: String,
    #[serde(default)]
    ends_at: Option<String>,
    #[serde(default, rename = "generatorURL")]
    generator_url: Option<String>,
    #[serde(default)]
    fingerprint: Option<String>,
}

pub use crate::domain::event::Resolved;

#[derive(Debug, Default)]
pub struct Notification {
    pub firing: Vec<Event>,
    pub resolved: Vec<Resolved>,
    /// Alerts Alertmanager left out because of `max_alerts`.
    pub truncated: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("body is not an Alertmanager webhook: {0}")]
    Json(String),
    #[error("unsupported webhook version {0:?}; rollbackd reads version 4")]
    Version(String),
    #[error("alert {index}: startsAt {value:?} is not an RFC 3339 time")]
    Time { index: usize, value: String },
    #[error("alert {index}: fingerprint {} is not a word of at most 64 letters and digits", crate::domain::ident::shown(.value))]
    Fingerprint { index: usize, value: String },
}

fn time(index: usize, value: &str) -> Result<Timestamp, ParseError> {
    value.parse().map_err(|_| ParseError::Time { index, value: value.to_string() })
}

/// Alertmanager's own fingerprint when present (hex from Alertmanager; letters and digits are
/// accepted: it becomes part of the incident's key, and so of a commit trailer); older senders get one from the sorted labels.
fn fingerprint(index: usize, alert: &Alert) -> Result<String, ParseError> {
    if let Some(f) = alert.fingerprint.as_deref().filter(|f| !f.is_empty()) {
        if f.len() > 64 || !f.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ParseError::Fingerprint { index, value: f.to_string() });
        }
        return Ok(f.to_string());
    }
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (k, v) in &alert.labels {
        h.update(k.as_bytes());
        h.update([0xff]);
        h.update(v.as_bytes());
        h.update([0xff]);
    }
    Ok(h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect())
}

pub fn parse(body: &[u8], received_at: Timestamp) -> Result<Notification, ParseError> {
    let hook: Webhook = serde_json::from_slice(body).map_err(|e| ParseError::Json(e.to_string()))?;
    if hook.version != "4" {
        return Err(ParseError::Version(hook.version));
    }
    let mut out = Notification { truncated: hook.truncated_alerts, ..Notification::default() };
    for (index, alert) in hook.alerts.into_iter().enumerate() {
        let started_at = time(index, &alert.starts_at)?;
        // One incident = one alert series from one start: a repeat notification, or the same
        // alert from an HA peer, has the same key.
        let dedupe_key = format!("{}@{}", fingerprint(index, &alert)?, started_at);
        if alert.status == "resolved" {
            let resolved_at =
                alert.ends_at.as_deref().and_then(|t| t.parse::<Timestamp>().ok()).filter(|t| t.as_second() > 0);
            out.resolved.push(Resolved { dedupe_key, labels: alert.labels, started_at, resolved_at });
            continue;
        }
        let mut annotations = alert.annotations;
        if let Some(url) = alert.generator_url.filter(|u| !u.is_empty()) {
            annotations.entry("generator_url".into()).or_insert(url);
        }
        out.firing.push(Event {
            source: Source::Alertmanager,
            dedupe_key,
            labels: alert.labels,
            annotations,
            received_at,
            started_at: Some(started_at),
            requester: None,
            from_fork: false,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{
      "version": "4", "groupKey": "{}:{alertname=\"HighErrorRate\"}", "truncatedAlerts": 0,
      "status": "firing", "receiver": "rollbackd",
      "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
      "alerts": [
        {"status": "firing", "labels": {"alertname": "HighErrorRate", "service": "checkout", "env": "prod", "severity": "page"},
         "annotations": {"summary": "5xx above 5%"}, "startsAt": "2026-11-21T10:00:00.123Z",
         "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom/graph", "fingerprint": "c0ffee"},
        {"status": "resolved", "labels": {"alertname": "HighErrorRate", "service": "cart", "env": "prod"},
         "annotations": {}, "startsAt": "2026-11-21T09:00:00Z", "endsAt": "2026-11-21T09:30:00Z", "fingerprint": "beef"}
      ]}"#;

    #[test]
    fn splits_firing_and_resolved() {
        let n = parse(SAMPLE.as_bytes(), Timestamp::UNIX_EPOCH).unwrap();
        assert_eq!(n.firing.len(), 1);
        let e = &n.firing[0];
        assert_eq!(e.dedupe_key, "c0ffee@2026-11-21T10:00:00.123Z");
        assert_eq!(e.labels["service"], "checkout");
        assert_eq!(e.annotations["generator_url"], "http://prom/graph");
        assert_eq!(e.reason().as_deref(), Some("5xx above 5%"));
        assert_eq!(n.resolved.len(), 1);
        assert_eq!(n.resolved[0].dedupe_key, "beef@2026-11-21T09:00:00Z");
        assert!(n.resolved[0].resolved_at.is_some());
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(matches!(parse(b"{", Timestamp::UNIX_EPOCH), Err(ParseError::Json(m)) if m.contains("line 1")));
        assert!(matches!(parse(br#"{"version":"3","alerts":[]}"#, Timestamp::UNIX_EPOCH), Err(ParseError::Version(_))));
        let bad_time = br#"{"version":"4","alerts":[{"status":"firing","startsAt":"yesterday"}]}"#;
        assert!(matches!(parse(bad_time, Timestamp::UNIX_EPOCH), Err(ParseError::Time { index: 0, .. })));
    }

    #[test]
    fn fingerprint_falls_back_to_labels() {
        let body =
            br#"{"version":"4","alerts":[{"status":"firing","labels":{"a":"1"},"startsAt":"2026-11-21T10:00:00Z"}]}"#;
        let a = parse(body, Timestamp::UNIX_EPOCH).unwrap();
        let b = parse(body, Timestamp::UNIX_EPOCH).unwrap();
        assert_eq!(a.firing[0].dedupe_key, b.firing[0].dedupe_key);
        assert_eq!(a.firing[0].dedupe_key.len(), 16 + 1 + 20);
    }
}
