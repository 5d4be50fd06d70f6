//! Prometheus metrics. Names are part of the operator interface (docs/operations.md).

use std::sync::OnceLock;

use jiff::Timestamp;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::domain::event::{Event, Source};
use crate::{Outcome, Report};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and returns the handle `/metrics` renders from.
pub(crate) fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0])
                .expect("static buckets")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder (a test harness) may be installed already; ours still renders.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

pub(crate) fn received(source: Source, outcome: &str) {
    counter!("rollbackd_events_total", "source" => source.as_str(), "outcome" => outcome.to_string()).increment(1);
}

pub(crate) fn auth_failure(source: &'static str) {
    counter!("rollbackd_webhook_auth_failures_total", "source" => source).increment(1);
}

pub(crate) fn queue_depth(depth: usize) {
    gauge!("rollbackd_queue_depth").set(depth as f64);
}

pub(crate) fn event_failed(source: Source) {
    counter!("rollbackd_event_errors_total", "source" => source.as_str()).increment(1);
}

fn seconds_between(a: Timestamp, b: Timestamp) -> f64 {
    b.duration_since(a).as_secs_f64().max(0.0)
}

/// How many distinct service/env pairs get their own series; later ones are counted as `other`,
/// so `/metrics` stays bounded whatever names senders manage to get past the policies.
const MAX_TARGETS: usize = 500;

fn target_labels(service: &str, env: &str) -> (String, String) {
    static SEEN: OnceLock<std::sync::Mutex<std::collections::HashSet<(String, String)>>> = OnceLock::new();
    let mut seen = SEEN.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    let key = (service.to_string(), env.to_string());
    if seen.contains(&key) || seen.len() < MAX_TARGETS {
        seen.insert(key.clone());
        return key;
    }
    ("other".into(), "other".into())
}

/// After the writer handled an event. Service and env are the validated target's.
pub(crate) fn handled(event: &Event, report: &Report, now: Timestamp) {
    let (service, env, mode) = match (&report.decision.target, report.decision.mode) {
        (Some(t), Some(m)) => {
            let (service, env) = target_labels(&t.service, &t.env);
            (service, env, m.to_string())
        }
        _ => return,
    };
    counter!(
        "rollbackd_rollbacks_total",
        "service" => service, "env" => env, "mode" => mode, "outcome" => report.outcome.name()
    )
    .increment(1);
    if let Outcome::RolledBack { rollback } | Outcome::Proposed { rollback } = &report.outcome {
        counter!("rollbackd_push_retries_total").increment(u64::from(rollback.push_retries));
        histogram!("rollbackd_time_to_rollback_seconds", "from" => "received")
            .record(seconds_between(event.received_at, now));
        if let Some(started) = event.started_at {
            histogram!("rollbackd_time_to_rollback_seconds", "from" => "alert_start")
                .record(seconds_between(started, now));
        }
    }
}

/// A notification channel exists: its counters start at zero.
pub(crate) fn notification_channel(channel: &str) {
    for result in ["sent", "failed", "dropped"] {
        counter!("rollbackd_notifications_total", "channel" => channel.to_string(), "result" => result).increment(0);
    }
}

/// One message to `channel`: `sent`, `failed` (given up after its tries) or `dropped` (queue full).
pub(crate) fn notification(channel: &str, result: &'static str) {
    counter!("rollbackd_notifications_total", "channel" => channel.to_string(), "result" => result).increment(1);
}

/// A rollback's verification ended: `verified` (with seconds from the push) or `not_recovered`.
pub(crate) fn verification(result: &'static str, recovered_after: Option<i64>) {
    counter!("rollbackd_verifications_total", "result" => result).increment(1);
    if let Some(s) = recovered_after {
        histogram!("rollbackd_time_to_recovery_seconds").record(s as f64);
    }
}

pub(crate) fn escalation() {
    counter!("rollbackd_escalations_total").increment(1);
}

pub(crate) fn step_back() {
    counter!("rollbackd_step_backs_total").increment(1);
}
