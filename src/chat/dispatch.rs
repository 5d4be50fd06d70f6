//! Carries out a chat command for a person and writes the reply they read. Runs on the writer
//! (it needs the engine); the chat adapters (Slack, GitHub comments) only parse and deliver.

use crate::chat::command::{Command, help};
use crate::engine::{Engine, Options};
use crate::event::{Event, Source};
use crate::principal::Principal;
use crate::{Outcome, ReviewOutcome};

#[derive(Clone, Debug)]
pub struct ChatRequest {
    pub principal: Principal,
    pub command: Command,
    /// Unique per chat message (Slack `trigger_id`, GitHub comment id): the dedupe key.
    pub request_id: String,
    /// `slack` or `github`.
    pub channel: String,
    /// The rollback a PR conversation is about, for `approve` / `cancel` without an id.
    pub implied_id: Option<String>,
    /// The env of `/rollback <service>` when none is named.
    pub default_env: String,
}

/// The reply, and whether it is for everyone in the channel (outcomes) or only the asker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub text: String,
    pub public: bool,
}

fn private(text: String) -> Reply {
    Reply { text, public: false }
}

fn public(text: String) -> Reply {
    Reply { text, public: true }
}

pub fn execute(engine: &mut Engine, req: &ChatRequest) -> Reply {
    let p = &req.principal;
    let which = |id: &Option<String>, verb: &str| -> Result<String, Reply> {
        id.clone()
            .or_else(|| req.implied_id.clone())
            .ok_or_else(|| private(format!("which rollback? `/rollback {verb} <id>` (ids are in `/rollback status`)")))
    };
    let result = match &req.command {
        Command::Help => return private(help()),
        Command::Rollback { service, env, to, reason, emergency } => {
            let env = env.clone().unwrap_or_else(|| req.default_env.clone());
            let mut event =
                Event::request(Source::Chatops, service, &env, &p.id, reason.as_deref(), engine.now(), &req.request_id);
            event.labels.insert("chat".into(), req.channel.clone());
            let opts =
                Options { to: to.clone(), principal: Some(p.clone()), emergency: *emergency, ..Options::default() };
            engine.handle(&event, &opts).map(|report| {
                let mut text = format!("{p}: /rollback {service} {env}: {}", report.outcome.summary());
                if let Outcome::Proposed { rollback } = &report.outcome {
                    text.push_str(&format!("\napprove with `/rollback approve {}`", rollback.id));
                }
                for n in &report.decision.notes {
                    text.push_str(&format!("\nnote: {n}"));
                }
                public(text)
            })
        }
        Command::Approve { id } => match which(id, "approve") {
            Ok(id) => engine.approve(&id, Some(p), "").map(|o| review_reply(p, &o)),
            Err(r) => return r,
        },
        Command::Cancel { id } => match which(id, "cancel") {
            Ok(id) => engine.cancel(&id, Some(p), "").map(|o| review_reply(p, &o)),
            Err(r) => return r,
        },
        Command::Status { service } => engine.status(service.as_deref()).map(private),
        Command::History { service, env } => engine.history().map(|index| {
            let lines: Vec<String> = index
                .records()
                .iter()
                .filter(|r| {
                    service.as_ref().is_none_or(|s| &r.service == s) && env.as_ref().is_none_or(|e| &r.env == e)
                })
                .take(10)
                .map(|r| {
                    format!(
                        "{} {} {}/{} {:?}{} by {}{}",
                        r.id,
                        r.at,
                        r.service,
                        r.env,
                        r.delivery,
                        if r.cancelled { " (cancelled)" } else { "" },
                        r.actor,
                        r.reason.as_deref().map(|x| format!(": {x}")).unwrap_or_default()
                    )
                })
                .collect();
            private(if lines.is_empty() { "no rollbacks in the audit window".into() } else { lines.join("\n") })
        }),
        Command::Freeze { scope, env, duration, reason } => engine
            .freeze(&scope.to_string(), env.as_deref(), *duration, reason.as_deref(), Some(p), "")
            .map(|t| public(format!("{p}: {t}"))),
        Command::Unfreeze { scope, env } => {
            engine.unfreeze(&scope.to_string(), env.as_deref(), Some(p), "").map(|t| public(format!("{p}: {t}")))
        }
    };
    result.unwrap_or_else(|e| public(format!("{p}: error: {e}")))
}

fn review_reply(p: &Principal, o: &ReviewOutcome) -> Reply {
    match o {
        ReviewOutcome::Refused { .. } => private(o.summary()),
        _ => public(format!("{p}: {}", o.summary())),
    }
}
