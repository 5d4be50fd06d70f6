//! Prometheus metrics. Names, labels and units are part of the operator interface
//! (docs/metrics.md); every series is described, and counters whose labels are known in advance
//! are present at zero from the start, so `rate()` and alert rules work before the first event.

use std::sync::OnceLock;

use jiff::Timestamp;
use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::domain::event::{Event, Source};
use crate::domain::policy::Mode;
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
            describe();
            handle
        })
        .clone()
}

/// Every series' help text and unit, and the zeros, one group per subsystem.
fn describe() {
    describe_build_info();
    describe_webhooks();
    describe_decisions();
    describe_timings();
    describe_follow_up();
    describe_writer();
    describe_policies();
}

fn describe_build_info() {
    describe_gauge!("rollbackd_build_info", "Always 1; the labels say which rollbackd is running.");
    gauge!("rollbackd_build_info", "version" => env!("CARGO_PKG_VERSION"), "commit" => env!("ROLLBACKD_COMMIT"))
        .set(1.0);
}

/// What arrives at the edge: events, and the requests turned away before they became one.
fn describe_webhooks() {
    describe_counter!("rollbackd_events_total", "Events received, by source and how they were answered.");
    describe_counter!(
        "rollbackd_event_errors_total",
        "Events whose handling failed (the sender was told to retry or why not)."
    );
    describe_counter!(
        "rollbackd_webhook_auth_failures_total",
        "Webhook requests refused for a missing or wrong credential."
    );
    describe_counter!(
        "rollbackd_webhook_rejected_total",
        "Webhook requests turned away before any event was handled (400 bad request, 413 too large, 415 wrong content type) or answered 422 (refused or failed for good), by source and status."
    );
    for source in ["alertmanager", "github", "slack", "admin", "flux", "argocd"] {
        counter!("rollbackd_webhook_auth_failures_total", "source" => source).increment(0);
    }
    for source in WEBHOOK_SOURCES {
        for status in REJECTED_STATUSES {
            counter!("rollbackd_webhook_rejected_total", "source" => source, "status" => status).increment(0);
        }
    }
    for source in ["alertmanager", "github", "chatops", "cli", "flux", "argocd"] {
        counter!("rollbackd_event_errors_total", "source" => source).increment(0);
    }
    for source in EVENT_SOURCES {
        for outcome in EVENT_OUTCOMES {
            counter!("rollbackd_events_total", "source" => source, "outcome" => outcome).increment(0);
        }
    }
}

/// The decision on a rollback and what held it back.
fn describe_decisions() {
    describe_counter!(
        "rollbackd_rollbacks_total",
        "Decisions on rollbacks, by validated service, env, policy mode and outcome."
    );
    describe_counter!(
        "rollbackd_push_retries_total",
        "Pushes retried because the branch moved (compare-and-swap lost)."
    );
    describe_counter!("rollbackd_guard_denials_total", "Rollbacks denied, by the guard that failed.");
    describe_counter!(
        "rollbackd_oscillations_total",
        "Rollbacks of a service/env that was already rolled back in the last 24 hours."
    );
    describe_counter!(
        "rollbackd_breaker_trips_total",
        "Times the blast-radius breaker paused automatic rollbacks (too many services alerting at once)."
    );
    for guard in [
        "cooldown",
        "max_rollbacks",
        "max_change_age",
        "max_known_good_age",
        "point_of_no_return",
        "require_immutable_artifacts",
    ] {
        counter!("rollbackd_guard_denials_total", "guard" => guard).increment(0);
    }
    for name in ["rollbackd_push_retries_total", "rollbackd_oscillations_total", "rollbackd_breaker_trips_total"] {
        counter!(name).increment(0);
    }
}

fn describe_timings() {
    describe_histogram!(
        "rollbackd_time_to_rollback_seconds",
        Unit::Seconds,
        "From the alert's start (from=alert_start) or the event's receipt (from=received) to the rollback on the branch, by path."
    );
    describe_histogram!(
        "rollbackd_time_to_propose_seconds",
        Unit::Seconds,
        "From the alert's start or the event's receipt to the proposal pushed for review."
    );
    describe_histogram!(
        "rollbackd_time_to_recovery_seconds",
        Unit::Seconds,
        "From the push that put the rollback on the branch to the recovery seen: its verification's, or the alert's resolve under a policy without verify."
    );
}

/// What follows a rollback on the branch: its verification, what is done when it does not
/// bring recovery, its later phases, and the people told.
fn describe_follow_up() {
    describe_counter!("rollbackd_verifications_total", "Verifications ended, by result (verified, not_recovered).");
    describe_counter!(
        "rollbackd_escalations_total",
        "Rollbacks that did not bring recovery and were escalated to people."
    );
    describe_counter!(
        "rollbackd_step_backs_total",
        "Further rollbacks made because a rollback did not bring recovery."
    );
    describe_counter!(
        "rollbackd_phases_total",
        "Phased rollbacks after their first phase, by result: pushed (a later phase), halted (the rest proposed)."
    );
    describe_counter!(
        "rollbackd_notifications_total",
        "Notification messages by channel and result (sent, failed after its tries, dropped when the queue was full)."
    );
    for result in ["verified", "not_recovered", "unverified"] {
        counter!("rollbackd_verifications_total", "result" => result).increment(0);
    }
    for result in ["pushed", "halted"] {
        counter!("rollbackd_phases_total", "result" => result).increment(0);
    }
    for name in ["rollbackd_escalations_total", "rollbackd_step_backs_total"] {
        counter!(name).increment(0);
    }
}

/// The writer's health: its queue, its origin, the records it found there, and its liveness.
fn describe_writer() {
    describe_counter!(
        "rollbackd_untrusted_records_total",
        "Records found on the origin where rollbackd writes (its notes, state refs, rollback tags) that no trusted key signed, each counted once, by ref kind."
    );
    describe_gauge!("rollbackd_queue_depth", "Events waiting for the writer.");
    describe_gauge!("rollbackd_queue_capacity", "How many events the writer's queue holds (server.queue).");
    describe_gauge!("rollbackd_origin_reachable", "1 while the last fetch from the config repo succeeded, else 0.");
    describe_gauge!(
        "rollbackd_rollback_ready",
        "1 while an automatic rollback of the service in the environment would work now (rollbackd readiness), else 0."
    );
    describe_counter!(
        "rollbackd_writer_panics_total",
        "Jobs that panicked on the writer; each time the engine was rebuilt from git (or kept, if that failed)."
    );
    describe_gauge!(
        "rollbackd_writer_heartbeat_timestamp_seconds",
        Unit::Seconds,
        "When the writer last finished a job or an idle refresh (Unix time): a stuck writer stops moving it."
    );
    for r in UNTRUSTED_REF_KINDS {
        counter!("rollbackd_untrusted_records_total", "ref" => r).increment(0);
    }
    counter!("rollbackd_writer_panics_total").increment(0);
}

fn describe_policies() {
    describe_gauge!("rollbackd_policies", "Policies in force.");
    describe_gauge!(
        "rollbackd_policies_valid",
        "0 while the policies on the config repo's branch are refused (the previous set stays in force), else 1."
    );
    describe_counter!("rollbackd_policy_reloads_total", "Policy sets read from the config repo, by result.");
    for result in ["switched", "refused"] {
        counter!("rollbackd_policy_reloads_total", "result" => result).increment(0);
    }
}

/// The `ref` label of `rollbackd_untrusted_records_total`: a bounded set, whatever refs an
/// attacker invents.
const UNTRUSTED_REF_KINDS: [&str; 12] = [
    "notes/rollbackd",
    "notes/rollbackd-watch",
    "notes/rollbackd-decisions",
    "notes/rollbackd-candidates",
    "notes/rollbackd-approvals",
    "state/freezes",
    "state/holds",
    "tags/rollback",
    "tags/phase",
    "tags/halted",
    "tags/proposed",
    "tags/cancelled",
];

/// A record no trusted key signed, found at `refname`.
pub(crate) fn untrusted_record(refname: &str) {
    let short = refname.trim_start_matches("refs/").trim_start_matches("rollbackd/");
    let kind = UNTRUSTED_REF_KINDS
        .iter()
        .find(|k| short == **k || short.strip_prefix(**k).is_some_and(|rest| rest.starts_with('/')))
        .copied()
        .unwrap_or("other");
    counter!("rollbackd_untrusted_records_total", "ref" => kind).increment(1);
}

/// The writer's queue: its size, set once at start.
pub(crate) fn queue_capacity(capacity: usize) {
    gauge!("rollbackd_queue_capacity").set(capacity as f64);
}

/// The gauges of a writer's state carry its repo's name when rollbackd serves several (one
/// series per repo, so one repo's unreachable origin is not hidden by another's fetch); with
/// one repo (`None`), no label.
fn repo_label(repo: Option<&str>) -> Vec<metrics::Label> {
    repo.map(|n| metrics::Label::new("repo", n.to_string())).into_iter().collect()
}

/// Whether the origin answered the last fetch.
pub(crate) fn origin_reachable(repo: Option<&str>, reachable: bool) {
    gauge!("rollbackd_origin_reachable", repo_label(repo)).set(if reachable { 1.0 } else { 0.0 });
}

/// A policy set read from the config repo: switched to (`valid`), or refused with `in_force`
/// still in force.
pub(crate) fn policies_loaded(repo: Option<&str>, in_force: usize, valid: bool) {
    policies_in_force(repo, in_force, valid);
    let result = if valid { "switched" } else { "refused" };
    counter!("rollbackd_policy_reloads_total", "result" => result).increment(1);
}

/// The policies in force, and whether the branch's are (not) refused: at start and after a
/// reload, when the recorder may not have seen what the engine did before it existed.
pub(crate) fn policies_in_force(repo: Option<&str>, count: usize, valid: bool) {
    gauge!("rollbackd_policies", repo_label(repo)).set(count as f64);
    gauge!("rollbackd_policies_valid", repo_label(repo)).set(if valid { 1.0 } else { 0.0 });
}

/// Readiness as last worked out: one series per service/env a policy covers. A target no
/// longer covered (`gone`) reads NaN, neither ready nor not (the recorder cannot drop a series
/// until the process restarts): an alert on `== 0` for it resolves instead of firing forever.
pub(crate) fn rollback_ready(
    repo: Option<&str>,
    gone: &[(String, String)],
    rows: &[crate::domain::readiness::Readiness],
) {
    let labels = |service: &str, env: &str| {
        let mut labels = repo_label(repo);
        labels.push(metrics::Label::new("service", service.to_string()));
        labels.push(metrics::Label::new("env", env.to_string()));
        labels
    };
    for (service, env) in gone {
        gauge!("rollbackd_rollback_ready", labels(service, env)).set(f64::NAN);
    }
    for r in rows {
        gauge!("rollbackd_rollback_ready", labels(&r.service, &r.env)).set(if r.ready { 1.0 } else { 0.0 });
        // The attempts' outcomes from zero, so the first failure after a start is an increase.
        if let Some(mode) = r.mode.filter(|m| matches!(m, Mode::Direct | Mode::PullRequest)) {
            let (service, env) = target_labels(&r.service, &r.env);
            for outcome in ATTEMPT_OUTCOMES {
                counter!(
                    "rollbackd_rollbacks_total",
                    "service" => service.clone(), "env" => env.clone(), "mode" => mode.to_string(), "outcome" => outcome
                )
                .increment(0);
            }
        }
    }
}

/// The writer did something (a job, an idle refresh).
pub(crate) fn writer_heartbeat(repo: Option<&str>, now: Timestamp) {
    gauge!("rollbackd_writer_heartbeat_timestamp_seconds", repo_label(repo)).set(now.as_millisecond() as f64 / 1000.0);
}

/// A job panicked on the writer.
pub(crate) fn writer_panic() {
    counter!("rollbackd_writer_panics_total").increment(1);
}

pub(crate) fn received(source: Source, outcome: &str) {
    counter!("rollbackd_events_total", "source" => source.as_str(), "outcome" => outcome.to_string()).increment(1);
}

/// A request refused for its credential: counted, and logged at INFO with the reason (never
/// the credential), at most once a minute per source with how many were refused meanwhile, so
/// a flood of bad requests cannot flood the log.
pub(crate) fn auth_failure(source: &'static str, why: &str) {
    counter!("rollbackd_webhook_auth_failures_total", "source" => source).increment(1);
    static LAST: OnceLock<std::sync::Mutex<std::collections::HashMap<&'static str, (i64, u64)>>> = OnceLock::new();
    let minute = Timestamp::now().as_second() / 60;
    let mut last = LAST.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    let entry = last.entry(source).or_insert((i64::MIN, 0));
    if entry.0 == minute {
        entry.1 += 1;
        return;
    }
    let suppressed = std::mem::replace(entry, (minute, 0)).1;
    tracing::info!(source, reason = why, refused_since_last_line = suppressed, "request refused");
}

/// The senders whose events the server answers (`source` of `rollbackd_events_total`).
const EVENT_SOURCES: [&str; 5] = ["alertmanager", "github", "chatops", "flux", "argocd"];
/// What an event can be answered (`outcome` of `rollbackd_events_total`): a decision's outcome,
/// or what the server said without one.
const EVENT_OUTCOMES: [&str; 12] = [
    "rolled_back",
    "proposed",
    "duplicate",
    "noop",
    "denied",
    "ignored",
    "notified",
    "recorded",
    "accepted",
    "refused",
    "unavailable",
    "error",
];

/// The webhook routes, as `source` in the webhook counters.
pub(crate) const WEBHOOK_SOURCES: [&str; 5] = ["alertmanager", "github", "slack", "flux", "argocd"];
/// The answers that say the sender's request was rejected: counted and logged.
const REJECTED_STATUSES: [&str; 4] = ["400", "413", "415", "422"];

/// A webhook request answered with one of [`REJECTED_STATUSES`]: counted, and logged with its
/// reason (never the body) at most once a minute per source and status, with how many were not
/// logged since. Other statuses are not rejections (401 counts as an auth failure).
pub(crate) fn webhook_rejected(source: &'static str, status: u16, why: &str) {
    let Some(status) = REJECTED_STATUSES.into_iter().find(|s| *s == status.to_string()) else {
        return;
    };
    counter!("rollbackd_webhook_rejected_total", "source" => source, "status" => status).increment(1);
    type Last = std::collections::HashMap<(&'static str, &'static str), (i64, u64)>;
    static LAST: OnceLock<std::sync::Mutex<Last>> = OnceLock::new();
    let minute = Timestamp::now().as_second() / 60;
    let mut last = LAST.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    let entry = last.entry((source, status)).or_insert((i64::MIN, 0));
    if entry.0 == minute {
        entry.1 += 1;
        return;
    }
    let suppressed = std::mem::replace(entry, (minute, 0)).1;
    // The reason is rollbackd's own answer; bounded, so a long parser message stays one line.
    let reason: String = why.chars().take(300).collect();
    tracing::warn!(source, status, %reason, rejected_since_last_line = suppressed, "webhook request rejected");
}

/// Events waiting for the writer of `repo` (named when rollbackd serves several).
pub(crate) fn queue_depth(repo: Option<&str>, depth: usize) {
    gauge!("rollbackd_queue_depth", repo_label(repo)).set(depth as f64);
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
    for g in report.decision.guards.iter().filter(|g| !g.passed) {
        if matches!(report.outcome, Outcome::Denied { .. }) {
            counter!("rollbackd_guard_denials_total", "guard" => g.guard).increment(1);
        }
    }
    let (rollback, name) = match &report.outcome {
        Outcome::RolledBack { rollback } => (rollback, "rollbackd_time_to_rollback_seconds"),
        Outcome::Proposed { rollback } => (rollback, "rollbackd_time_to_propose_seconds"),
        _ => return,
    };
    counter!("rollbackd_push_retries_total").increment(u64::from(rollback.push_retries));
    let path = match (event.source, &report.outcome, report.decision.mode) {
        (Source::Chatops, ..) => "chat",
        (Source::Cli, ..) => "cli",
        // A proposal waits for review: nothing was merged, automatically or not.
        (_, Outcome::Proposed { .. }, _) => "proposal",
        (_, _, Some(Mode::PullRequest)) => "auto_merge",
        _ => "direct",
    };
    histogram!(name, "from" => "received", "path" => path).record(seconds_between(event.received_at, now));
    if let Some(started) = event.started_at {
        histogram!(name, "from" => "alert_start", "path" => path).record(seconds_between(started, now));
    }
}

/// The outcomes of a rollback attempt, which `RollbackdRollbacksFailing` divides: present at
/// zero for every target a policy covers.
const ATTEMPT_OUTCOMES: [&str; 3] = ["rolled_back", "proposed", "failed"];

/// An attempt to roll `service`/`env` back failed (its fetch, push or forge call): counted once
/// per incident by the caller, beside the decisions' outcomes, so the failure rate is over
/// attempts.
pub(crate) fn rollback_failed(service: &str, env: &str, mode: Mode) {
    let (service, env) = target_labels(service, env);
    counter!(
        "rollbackd_rollbacks_total",
        "service" => service, "env" => env, "mode" => mode.to_string(), "outcome" => "failed"
    )
    .increment(1);
}

/// A proposal reached the branch by `path` (`approval`, `merged_by_hand`).
pub(crate) fn merged(path: &'static str, alert_start: Option<Timestamp>, now: Timestamp) {
    if let Some(started) = alert_start {
        histogram!("rollbackd_time_to_rollback_seconds", "from" => "alert_start", "path" => path)
            .record(seconds_between(started, now));
    }
}

/// A service/env rolled back again within a day.
pub(crate) fn oscillation() {
    counter!("rollbackd_oscillations_total").increment(1);
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
        time_to_recovery(s);
    }
}

/// Seconds from the push to the recovery seen (a verification, or the alert's resolve under a
/// policy without `verify`).
pub(crate) fn time_to_recovery(seconds: i64) {
    histogram!("rollbackd_time_to_recovery_seconds").record(seconds as f64);
}

pub(crate) fn escalation() {
    counter!("rollbackd_escalations_total").increment(1);
}

pub(crate) fn breaker_tripped() {
    counter!("rollbackd_breaker_trips_total").increment(1);
}

/// A phased rollback went on (`pushed`) or halted (`halted`).
pub(crate) fn phase(result: &'static str) {
    counter!("rollbackd_phases_total", "result" => result).increment(1);
}

pub(crate) fn step_back() {
    counter!("rollbackd_step_backs_total").increment(1);
}
