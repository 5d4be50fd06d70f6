//! Saved events, for `simulate` and the demo: an Alertmanager notification, a GitHub delivery
//! (recognised by its keys, or named), a Flux event, an Argo CD notification (rollbackd's
//! template), or an event in rollbackd's own shape.

use jiff::Timestamp;

use crate::domain::event::Event;
use crate::ingest::controller::ControllerEvent;
use crate::ingest::{alertmanager, argocd, flux, github};

/// What a saved file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Alertmanager,
    Github,
    Flux,
    Argocd,
    Event,
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("the event file is not JSON: {0}")]
    Json(String),
    #[error(transparent)]
    Alertmanager(#[from] alertmanager::ParseError),
    #[error(transparent)]
    Github(#[from] github::ParseError),
    #[error(transparent)]
    Flux(#[from] flux::ParseError),
    #[error(transparent)]
    Argocd(#[from] argocd::ParseError),
    #[error("{0}")]
    NotATrigger(String),
}

/// The GitHub payload keys that name the event, in the order they are looked for.
const GITHUB_KEYS: [&str; 4] = ["workflow_run", "check_suite", "deployment_status", "zen"];

/// The rollback triggers in a saved file. `kind` is guessed from the keys when not given;
/// `github_event` names a GitHub delivery's event (the header a saved body lost).
pub fn events(
    body: &[u8],
    kind: Option<Kind>,
    github_event: Option<&str>,
    now: Timestamp,
) -> Result<Vec<Event>, FileError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| FileError::Json(e.to_string()))?;
    let kind = kind.unwrap_or(if value.get("alerts").is_some() {
        Kind::Alertmanager
    } else if GITHUB_KEYS.iter().any(|k| value.get(k).is_some()) {
        Kind::Github
    } else if value.get("involvedObject").is_some() {
        Kind::Flux
    } else if value.get("app").is_some() && value.get("revision").is_some() {
        Kind::Argocd
    } else {
        Kind::Event
    });
    let not_a_trigger = |why: &str| Err(FileError::NotATrigger(why.to_string()));
    match kind {
        Kind::Alertmanager => {
            let n = alertmanager::parse(body, now)?;
            if n.firing.is_empty() {
                return not_a_trigger("the notification has no firing alert");
            }
            Ok(n.firing)
        }
        Kind::Github => {
            let name = match github_event {
                Some(n) => n.to_string(),
                None => match GITHUB_KEYS.iter().find(|k| value.get(**k).is_some()) {
                    Some(&"zen") => "ping".to_string(),
                    Some(k) => k.to_string(),
                    None => return not_a_trigger("cannot tell which GitHub event this is; pass --github-event"),
                },
            };
            // Simulation lists every workflow: which ones count is the server's config.
            let workflows: Vec<String> = ["/workflow_run/name", "/workflow/name"]
                .iter()
                .filter_map(|p| value.pointer(p).and_then(|v| v.as_str()).map(str::to_string))
                .collect();
            match github::parse(&name, body, &workflows, now)? {
                github::GithubEvent::Failure(e) | github::GithubEvent::DeploymentSucceeded(e) => Ok(vec![e]),
                github::GithubEvent::Ping => not_a_trigger("a ping is not a rollback trigger"),
                github::GithubEvent::Comment(_)
                | github::GithubEvent::PullRequestClosed { .. }
                | github::GithubEvent::PullRequestChanged { .. }
                | github::GithubEvent::Pushed { .. }
                | github::GithubEvent::ChecksPassed { .. } => not_a_trigger(
                    "comments, pushes and pull requests are not rollback triggers (`rollbackd gate` checks a change)",
                ),
                github::GithubEvent::Ignored(reason) => Err(FileError::NotATrigger(format!("ignored: {reason}"))),
            }
        }
        Kind::Flux => controller(flux::parse(body, now)?),
        Kind::Argocd => controller(argocd::parse(body, now)?),
        Kind::Event => {
            Ok(vec![serde_json::from_value(value).map_err(|e| FileError::Json(format!("not a rollbackd event: {e}")))?])
        }
    }
}

/// A controller's failure is a trigger; its healthy report and what it ignores are not.
fn controller(parsed: ControllerEvent) -> Result<Vec<Event>, FileError> {
    match parsed {
        ControllerEvent::Failed(e) => Ok(vec![e]),
        ControllerEvent::Healthy(e) => Err(FileError::NotATrigger(format!(
            "{} reports its revision applied and healthy: that marks known-good and verifies rollbacks, it rolls nothing back",
            e.trigger()
        ))),
        ControllerEvent::Ignored(reason) => Err(FileError::NotATrigger(format!("ignored: {reason}"))),
    }
}
