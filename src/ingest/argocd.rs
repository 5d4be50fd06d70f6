//! Argo CD Notifications → [`ControllerEvent`]s. The body is the one the webhook template in
//! `deploy/argocd/notifications-cm.yaml` renders: `app`, `project`, `revision`, `health`,
//! `sync`, `phase`, `path`, `repo`, `message`. Those keys are the event's labels.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Deserialize;

use super::controller::{self, ControllerEvent};
use crate::domain::event::{Event, Source};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("body is not rollbackd's Argo CD notification (deploy/argocd/notifications-cm.yaml): {0}")]
    Json(String),
    #[error("Argo CD notification without {0}")]
    Missing(&'static str),
}

/// Every field may be `null`: the template renders a missing status field that way.
#[derive(Deserialize)]
struct Notification {
    #[serde(default)]
    app: Option<String>,
    #[serde(default)]
    project: Option<String>,
    #[serde(default)]
    revision: Option<String>,
    #[serde(default)]
    health: Option<String>,
    #[serde(default)]
    sync: Option<String>,
    #[serde(default)]
    phase: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    repo: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// Parses one notification.
pub fn parse(body: &[u8], now: Timestamp) -> Result<ControllerEvent, ParseError> {
    let n: Notification = serde_json::from_slice(body).map_err(|e| ParseError::Json(e.to_string()))?;
    let app = n.app.filter(|a| !a.trim().is_empty()).ok_or(ParseError::Missing("app"))?;
    let revision = n.revision.unwrap_or_default();
    let (health, sync, phase) = (n.health.unwrap_or_default(), n.sync.unwrap_or_default(), n.phase.unwrap_or_default());
    // The triggers of the template: on-sync-failed (the operation's phase), on-health-degraded,
    // and on-deployed (synced and healthy) for known-good and verification.
    let reason = if matches!(phase.as_str(), "Error" | "Failed") {
        Some("sync_failed")
    } else if health == "Degraded" {
        Some("degraded")
    } else if sync == "Synced" && health == "Healthy" {
        None
    } else {
        return Ok(ControllerEvent::Ignored(format!(
            "application {}: health {health:?}, sync {sync:?}, phase {phase:?}: neither failed, degraded nor synced and healthy",
            crate::domain::ident::shown(&app)
        )));
    };
    let Some(sha) = controller::commit_of(&revision) else {
        return Ok(ControllerEvent::Ignored(format!(
            "application {}: revision {} is not a commit id (a Helm chart, or an app of several sources)",
            crate::domain::ident::shown(&app),
            crate::domain::ident::shown(&revision)
        )));
    };
    let mut labels = BTreeMap::from([
        ("app".to_string(), app.clone()),
        ("revision".to_string(), revision),
        ("sha".to_string(), sha.clone()),
        ("health".to_string(), health),
        ("sync".to_string(), sync),
        ("phase".to_string(), phase),
    ]);
    for (key, value) in [("project", n.project), ("path", n.path), ("repo", n.repo)] {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            labels.insert(key.to_string(), controller::cut(&v));
        }
    }
    let message = n.message.map(|m| controller::cut(m.trim())).filter(|m| !m.is_empty());
    if let Some(m) = &message {
        labels.insert("message".into(), m.clone());
    }
    let annotations = message.map(|m| BTreeMap::from([("summary".to_string(), m)])).unwrap_or_default();
    let event = |kind: &str| Event {
        source: Source::Argocd,
        // One incident per application, revision and kind of failure: Argo CD sends a trigger
        // again when its condition flaps, and a sync retried at the same revision is the same.
        dedupe_key: format!("{app}/{sha}/{kind}"),
        labels: labels.clone(),
        annotations: annotations.clone(),
        received_at: now,
        started_at: None,
        requester: None,
        from_fork: false,
    };
    Ok(match reason {
        Some(kind) => {
            let mut e = event(kind);
            e.labels.insert("reason".into(), kind.to_string());
            ControllerEvent::Failed(e)
        }
        None => ControllerEvent::Healthy(event("healthy")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn body(health: &str, sync: &str, phase: Option<&str>) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "app": "checkout-prod", "project": "default", "revision": SHA, "health": health,
            "sync": sync, "phase": phase, "path": "apps/checkout/prod",
            "repo": "https://github.com/acme/deploy.git", "message": "one or more objects failed to apply"
        }))
        .unwrap()
    }

    fn now() -> Timestamp {
        "2026-12-07T06:00:01Z".parse().unwrap()
    }

    #[test]
    fn degraded_and_failed_syncs_are_triggers_and_synced_healthy_is_healthy() {
        let ControllerEvent::Failed(e) = parse(&body("Degraded", "Synced", Some("Succeeded")), now()).unwrap() else {
            panic!()
        };
        assert_eq!(e.trigger(), format!("argocd:checkout-prod/{SHA}/degraded"));
        assert_eq!(e.labels["app"], "checkout-prod");
        assert_eq!(e.labels["path"], "apps/checkout/prod");
        assert_eq!(e.labels["repo"], "https://github.com/acme/deploy.git");
        assert_eq!(e.applied_revision(), Some(SHA));
        let ControllerEvent::Failed(e) = parse(&body("Progressing", "OutOfSync", Some("Failed")), now()).unwrap()
        else {
            panic!()
        };
        assert_eq!(e.labels["reason"], "sync_failed");
        assert!(matches!(
            parse(&body("Healthy", "Synced", Some("Succeeded")), now()).unwrap(),
            ControllerEvent::Healthy(_)
        ));
        assert!(matches!(parse(&body("Healthy", "Synced", None), now()).unwrap(), ControllerEvent::Healthy(_)));
        assert!(matches!(parse(&body("Progressing", "Synced", None), now()).unwrap(), ControllerEvent::Ignored(_)));
    }

    #[test]
    fn malformed_bodies_and_revisions_that_are_no_commit() {
        assert!(matches!(parse(b"\"text\"", now()), Err(ParseError::Json(_))));
        assert_eq!(parse(br#"{"revision":"x"}"#, now()), Err(ParseError::Missing("app")));
        let helm = br#"{"app":"a","revision":"6.3.0","health":"Degraded"}"#;
        assert!(matches!(parse(helm, now()).unwrap(), ControllerEvent::Ignored(r) if r.contains("not a commit")));
    }
}
