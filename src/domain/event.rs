//! `Event`: something that happened, from any source, in the one shape policies match on.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Alertmanager,
    Github,
    Chatops,
    Cli,
    /// rollbackd itself: a step back after a rollback that did not bring recovery. Never read
    /// from a sender or an event file.
    #[serde(skip_deserializing)]
    Rollbackd,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Alertmanager => "alertmanager",
            Source::Github => "github",
            Source::Chatops => "chatops",
            Source::Cli => "cli",
            Source::Rollbackd => "rollbackd",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Source {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "alertmanager" => Ok(Source::Alertmanager),
            "github" => Ok(Source::Github),
            "chatops" => Ok(Source::Chatops),
            "cli" => Ok(Source::Cli),
            other => Err(format!("unknown source `{other}` (alertmanager, github, chatops, cli)")),
        }
    }
}

/// What set a rollback off: a source and its key (an alert's dedupe key, a request's id),
/// written `source:key` in commits, notes and ids. Read back from those, it is parsed here once
/// instead of each reader looking for prefixes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Trigger {
    pub source: Source,
    pub key: String,
}

/// The key prefix of rollbackd's own step backs: `rollbackd:step-back/<id>/<n>`.
const STEP_BACK: &str = "step-back/";

impl Trigger {
    /// Reads a `source:key` trigger as written in git. A source rollbackd does not know (or no
    /// `:`) is rollbackd's own.
    pub fn parse(text: &str) -> Trigger {
        let (source, key) = text.split_once(':').unwrap_or(("rollbackd", text));
        let source = match source {
            "alertmanager" => Source::Alertmanager,
            "github" => Source::Github,
            "chatops" => Source::Chatops,
            "cli" => Source::Cli,
            _ => Source::Rollbackd,
        };
        Trigger { source, key: key.to_string() }
    }

    /// An alert (which resolves, and whose resolve verifies the rollback).
    pub fn is_alert(&self) -> bool {
        self.source == Source::Alertmanager
    }

    /// Which step back this is (1 for the first), 0 for anything else.
    pub fn step_back(&self) -> u32 {
        if self.source != Source::Rollbackd {
            return 0;
        }
        self.key
            .strip_prefix(STEP_BACK)
            .and_then(|rest| rest.rsplit('/').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Nobody asked for it: an alert, CI, or a step back.
    pub fn is_automatic(&self) -> bool {
        match self.source {
            Source::Alertmanager | Source::Github => true,
            Source::Rollbackd => self.key.starts_with(STEP_BACK),
            Source::Chatops | Source::Cli => false,
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.source, self.key)
    }
}

/// What happened. Every adapter (alert, CI event, chat command, CLI) produces this, so a policy
/// matches them all the same way and the engine never sees a vendor's payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub source: Source,
    /// Identifies one incident within its source: the same incident delivered twice has the same
    /// key, and the key is written into the rollback commit so replicas and restarts see it.
    pub dedupe_key: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub received_at: Timestamp,
    /// When the incident began (an alert's `startsAt`), for time-to-rollback.
    #[serde(default)]
    pub started_at: Option<Timestamp>,
    /// The person who asked, as the chat service or the CLI authenticated them (`slack:U123`,
    /// `github:alice`, `cli:bob`). Only [`Event::request`] sets it: a label that says `actor`
    /// is data from the sender and never makes an event a person's request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<String>,
    /// A CI event from a fork's workflow run: no policy acts on it unless it sets
    /// `match.forks: true`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_fork: bool,
}

impl Event {
    /// A human request (CLI or chat): labels `service`, `env`, `actor` and `reason`, as the
    /// policies expect, and a key of its own so two requests are two requests.
    pub fn request(
        source: Source,
        service: &str,
        env: &str,
        actor: &str,
        reason: Option<&str>,
        now: Timestamp,
        request_id: &str,
    ) -> Self {
        let mut labels = BTreeMap::from([
            ("service".to_string(), service.to_string()),
            ("env".to_string(), env.to_string()),
            ("actor".to_string(), actor.to_string()),
        ]);
        if let Some(reason) = reason {
            labels.insert("reason".to_string(), reason.to_string());
        }
        Event {
            source,
            dedupe_key: request_id.to_string(),
            labels,
            annotations: BTreeMap::new(),
            received_at: now,
            started_at: None,
            requester: Some(actor.to_string()),
            from_fork: false,
        }
    }

    /// The event a rollback recorded in git was made for, as far as its trailers tell (trigger,
    /// who asked, why, service and env): what a later phase of the same rollback is written
    /// for, so it carries the same trailers as the first.
    pub fn of_record(r: &crate::domain::audit::AuditRecord, now: Timestamp) -> Event {
        Event::again(&r.trigger, &r.service, &r.env, r.reason.clone(), r.actor.clone(), now)
    }

    /// An event made again from what a rollback commit records of it.
    pub fn again(
        trigger: &str,
        service: &str,
        env: &str,
        reason: Option<String>,
        actor: String,
        now: Timestamp,
    ) -> Event {
        let Trigger { source, key } = Trigger::parse(trigger);
        let key = key.as_str();
        let mut labels =
            BTreeMap::from([("service".to_string(), service.to_string()), ("env".to_string(), env.to_string())]);
        if let Some(reason) = reason {
            labels.insert("reason".into(), reason);
        }
        Event {
            source,
            dedupe_key: key.to_string(),
            labels,
            annotations: BTreeMap::new(),
            received_at: now,
            started_at: None,
            requester: matches!(source, Source::Cli | Source::Chatops).then_some(actor),
            from_fork: false,
        }
    }

    /// `source:dedupe_key`, the value of the `Rollback-Trigger` trailer.
    pub fn trigger(&self) -> String {
        format!("{}:{}", self.source, self.dedupe_key)
    }

    /// Who asked, for the audit trail: the authenticated person for requests, the source
    /// otherwise (never a label).
    pub fn actor(&self) -> String {
        match (&self.requester, self.source) {
            (Some(person), Source::Cli | Source::Chatops) => person.clone(),
            _ => self.source.to_string(),
        }
    }

    pub fn reason(&self) -> Option<String> {
        self.labels.get("reason").or_else(|| self.annotations.get("summary")).filter(|r| !r.trim().is_empty()).cloned()
    }

    pub fn is_human_request(&self) -> bool {
        matches!(self.source, Source::Cli | Source::Chatops)
    }
}

/// An alert that stopped firing: the incident it closes, and when.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    pub dedupe_key: String,
    pub labels: BTreeMap<String, String>,
    pub started_at: Timestamp,
    pub resolved_at: Option<Timestamp>,
}

/// A comment on a GitHub issue or pull request, as the engine reads it (commands in it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Comment {
    pub id: u64,
    pub issue: u64,
    pub is_pull_request: bool,
    pub body: String,
    /// For an edit: the body before it, so only commands that are new are acted on.
    pub previous_body: Option<String>,
    /// Who acted, as GitHub authenticated them: the delivery's `sender` (the editor of an
    /// edit), never the comment's author field.
    pub sender: String,
    /// The sender is a bot or an app (rollbackd's own replies among them).
    pub sender_is_bot: bool,
    /// `owner/name` of the repository the comment is in.
    pub repository: String,
    /// When the command was typed: the comment's `updated_at` (its `created_at` if absent).
    pub at: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trigger_reads_back_as_written_and_says_what_it_is() {
        let alert = Trigger::parse("alertmanager:abc:def");
        assert_eq!((alert.source, alert.key.as_str()), (Source::Alertmanager, "abc:def"));
        assert_eq!(alert.to_string(), "alertmanager:abc:def");
        assert!(alert.is_alert() && alert.is_automatic());
        let step = Trigger::parse("rollbackd:step-back/rb-0123456789ab/2");
        assert_eq!((step.step_back(), step.is_automatic(), step.is_alert()), (2, true, false));
        let person = Trigger::parse("chatops:req-1");
        assert_eq!((person.step_back(), person.is_automatic()), (0, false));
        assert!(Trigger::parse("github:deploy-7").is_automatic());
    }
}
