//! Flux notification-controller events (the `generic-hmac` provider) → [`ControllerEvent`]s.
//!
//! The body is fluxcd/pkg's `runtime/events` Event: `involvedObject`, `severity`, `timestamp`,
//! `message`, `reason`, `reportingController` and `metadata`, whose revision is under
//! `revision` (Flux ≥ 2.5 strips the API group) or `kustomize.toolkit.fluxcd.io/revision`
//! (older Flux, and Flux's docs), as `<branch>@sha1:<sha>` or the older `<branch>/<sha>`.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Deserialize;

use super::controller::{self, ControllerEvent};
use crate::domain::event::{Event, Source};

/// The metadata keys a revision is read from, newest Flux first.
pub(crate) const REVISION_KEYS: [&str; 2] = ["revision", "kustomize.toolkit.fluxcd.io/revision"];

/// What Flux reports when a Kustomization or HelmRelease is applied and its health checks pass.
pub(crate) const SUCCEEDED: &str = "ReconciliationSucceeded";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("body is not a Flux event: {0}")]
    Json(String),
    #[error("Flux event without {0}")]
    Missing(&'static str),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FluxEvent {
    involved_object: ObjectReference,
    #[serde(default)]
    severity: String,
    #[serde(default)]
    timestamp: Option<Timestamp>,
    #[serde(default)]
    message: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    reporting_controller: String,
}

#[derive(Deserialize)]
struct ObjectReference {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    name: String,
}

/// Parses one event as notification-controller posts it.
pub fn parse(body: &[u8], now: Timestamp) -> Result<ControllerEvent, ParseError> {
    let e: FluxEvent = serde_json::from_slice(body).map_err(|e| ParseError::Json(e.to_string()))?;
    let o = &e.involved_object;
    for (value, what) in [(&o.kind, "involvedObject.kind"), (&o.name, "involvedObject.name"), (&e.reason, "reason")] {
        if value.trim().is_empty() {
            return Err(ParseError::Missing(what));
        }
    }
    let object = format!("{} {}/{}", o.kind, o.namespace, o.name);
    let failed = match e.severity.as_str() {
        "error" => true,
        "info" if e.reason == SUCCEEDED => false,
        other => {
            return Ok(ControllerEvent::Ignored(format!(
                "{object}: a {other:?} event with reason {:?}; only errors and {SUCCEEDED} are acted on",
                controller::cut(&e.reason)
            )));
        }
    };
    let Some(revision) = REVISION_KEYS.iter().find_map(|k| e.metadata.get(*k)) else {
        return Ok(ControllerEvent::Ignored(format!(
            "{object}: the event names no revision (metadata `revision` or `kustomize.toolkit.fluxcd.io/revision`)"
        )));
    };
    let Some(sha) = controller::commit_of(revision) else {
        return Ok(ControllerEvent::Ignored(format!(
            "{object}: revision {} is not a commit of a git branch",
            crate::domain::ident::shown(revision)
        )));
    };
    let mut labels: BTreeMap<String, String> = controller::metadata_labels(&e.metadata).collect();
    labels.extend([
        ("kind".to_string(), o.kind.clone()),
        ("name".to_string(), o.name.clone()),
        ("namespace".to_string(), o.namespace.clone()),
        ("reason".to_string(), e.reason.clone()),
        ("severity".to_string(), e.severity.clone()),
        ("controller".to_string(), e.reporting_controller.clone()),
        ("revision".to_string(), revision.clone()),
        ("sha".to_string(), sha.clone()),
    ]);
    if let Some(branch) = controller::branch_of(revision) {
        labels.insert("branch".into(), branch);
    }
    // The Alert may add the source's URL (`spec.eventMetadata.repo`): events for another repo
    // are then told apart from this one's.
    if let Some(repo) = e.metadata.get("repo").filter(|r| r.len() <= controller::MAX_TEXT) {
        labels.insert("repo".into(), repo.clone());
    }
    let mut annotations = BTreeMap::new();
    if !e.message.trim().is_empty() {
        annotations.insert("summary".to_string(), controller::cut(e.message.trim()));
    }
    // One incident per object, revision and reason: Flux reports a failing reconciliation
    // again at every retry, and each report is the same incident.
    let dedupe_key = format!("{}/{}/{}/{sha}/{}", o.kind, o.namespace, o.name, e.reason);
    let event = Event {
        source: Source::Flux,
        dedupe_key,
        labels,
        annotations,
        received_at: now,
        started_at: e.timestamp,
        requester: None,
        from_fork: false,
    };
    Ok(if failed { ControllerEvent::Failed(event) } else { ControllerEvent::Healthy(event) })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn body(severity: &str, reason: &str, metadata: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "involvedObject": {"kind": "Kustomization", "namespace": "flux-system", "name": "checkout-prod",
                "uid": "7d0cdc51-ddcf-4743-b223-83ca5c699632", "apiVersion": "kustomize.toolkit.fluxcd.io/v1"},
            "severity": severity,
            "timestamp": "2026-12-07T06:00:00Z",
            "message": "Health check failed after 5m0s: timeout waiting for: [Deployment/prod/checkout status: 'Failed']",
            "reason": reason,
            "metadata": metadata,
            "reportingController": "kustomize-controller",
            "reportingInstance": "kustomize-controller-7f8c9d-abcde"
        }))
        .unwrap()
    }

    fn now() -> Timestamp {
        "2026-12-07T06:00:01Z".parse().unwrap()
    }

    #[test]
    fn a_failed_reconciliation_is_a_trigger_bounded_by_its_revision_under_either_key_and_form() {
        for (key, value) in [
            ("revision", format!("main@sha1:{SHA}")),
            ("kustomize.toolkit.fluxcd.io/revision", format!("main@sha1:{SHA}")),
            ("kustomize.toolkit.fluxcd.io/revision", format!("main/{SHA}")),
        ] {
            let b = body("error", "HealthCheckFailed", serde_json::json!({ key: value }));
            let ControllerEvent::Failed(e) = parse(&b, now()).unwrap() else { panic!("{key}: not a failure") };
            assert_eq!(e.labels["sha"], SHA);
            assert_eq!(e.labels["kind"], "Kustomization");
            assert_eq!(e.labels["namespace"], "flux-system");
            assert_eq!(e.labels["name"], "checkout-prod");
            assert_eq!(e.labels["controller"], "kustomize-controller");
            assert_eq!(e.labels["severity"], "error");
            assert_eq!(e.labels["branch"], "main");
            assert_eq!(e.applied_revision(), Some(SHA));
            assert_eq!(e.trigger(), format!("flux:Kustomization/flux-system/checkout-prod/{SHA}/HealthCheckFailed"));
            assert!(e.annotations["summary"].starts_with("Health check failed"));
        }
    }

    #[test]
    fn succeeded_is_healthy_other_info_and_unknown_revisions_are_ignored() {
        let ok = body("info", SUCCEEDED, serde_json::json!({"revision": format!("main@sha1:{SHA}")}));
        assert!(matches!(parse(&ok, now()).unwrap(), ControllerEvent::Healthy(_)));
        let progressing = body("info", "Progressing", serde_json::json!({"revision": format!("main@sha1:{SHA}")}));
        assert!(matches!(parse(&progressing, now()).unwrap(), ControllerEvent::Ignored(_)));
        let oci = body("error", "ReconciliationFailed", serde_json::json!({"revision": "latest@sha256:abc"}));
        assert!(matches!(parse(&oci, now()).unwrap(), ControllerEvent::Ignored(r) if r.contains("not a commit")));
        let none = body("error", "ReconciliationFailed", serde_json::json!({}));
        assert!(matches!(parse(&none, now()).unwrap(), ControllerEvent::Ignored(r) if r.contains("no revision")));
    }

    #[test]
    fn metadata_becomes_labels_without_shadowing_the_parsers_own() {
        let b = body(
            "error",
            "ReconciliationFailed",
            serde_json::json!({
                "revision": format!("main@sha1:{SHA}"),
                "sha": "ffffffffffffffffffffffffffffffffffffffff",
                "cluster": "eu-1",
                "bad key": "x",
                "long": "x".repeat(1000),
                "repo": "https://github.com/acme/deploy",
            }),
        );
        let ControllerEvent::Failed(e) = parse(&b, now()).unwrap() else { panic!() };
        assert_eq!(e.labels["sha"], SHA);
        assert_eq!(e.labels["cluster"], "eu-1");
        assert_eq!(e.labels["repo"], "https://github.com/acme/deploy");
        assert!(!e.labels.contains_key("bad key") && !e.labels.contains_key("long"));
        let older = body(
            "error",
            "HealthCheckFailed",
            serde_json::json!({"kustomize.toolkit.fluxcd.io/revision": format!("main/{SHA}")}),
        );
        let ControllerEvent::Failed(e) = parse(&older, now()).unwrap() else { panic!() };
        assert!(!e.labels.keys().any(|k| k.contains('/')), "{:?}", e.labels);
    }

    #[test]
    fn malformed_bodies_are_errors_with_the_reason() {
        assert!(matches!(parse(b"{", now()), Err(ParseError::Json(_))));
        assert!(
            matches!(parse(br#"{"severity":"error"}"#, now()), Err(ParseError::Json(m)) if m.contains("involvedObject"))
        );
        let no_reason = br#"{"involvedObject":{"kind":"Kustomization","name":"a"},"severity":"error"}"#;
        assert_eq!(parse(no_reason, now()), Err(ParseError::Missing("reason")));
    }
}
