//! Carries out a chat command for a person and writes the reply they read. Runs on the writer
//! (it needs the engine); the chat adapters (Slack, GitHub comments) only parse and deliver.

use crate::chat::command::{Command, Scope, help};
use crate::domain::actor::Actor;
use crate::domain::answer::Answer;
use crate::domain::event::{Event, Source};
use crate::domain::history;
use crate::domain::principal::Principal;
use crate::engine::{Engine, Options};
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
    /// When the person typed the command (Slack's signed timestamp, the comment's time): an
    /// `unfreeze` replayed later never lifts a freeze set after it.
    pub asked_at: Option<jiff::Timestamp>,
}

/// The reply, whether it is for everyone in the channel (outcomes) or only the asker, and
/// whether what was asked happened (for a 🚀 or a 😕).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub text: String,
    pub public: bool,
    pub ok: bool,
}

fn private(text: String) -> Reply {
    Reply { text, public: false, ok: true }
}

fn public(text: String) -> Reply {
    Reply { text, public: true, ok: true }
}

fn failed(text: String, public: bool) -> Reply {
    Reply { text, public, ok: false }
}

/// Every argument that names something must be an identifier (a rollback id, a revision of
/// plain names); the refusal says which and why.
fn check_arguments(command: &Command, rules: &crate::domain::ident::InputRules) -> Result<(), String> {
    let ident = |what: &str, v: &Option<String>| v.as_ref().map_or(Ok(()), |v| rules.identifier(what, v));
    let id = |v: &Option<String>| match v {
        Some(v) if crate::domain::rollback::RollbackId::parse(v).is_none() => {
            Err(format!("{} is not a rollback id (rb- and twelve hex digits)", crate::domain::ident::shown(v)))
        }
        _ => Ok(()),
    };
    let scope = |s: &Scope| match s {
        Scope::All => Ok(()),
        Scope::Service(s) => rules.identifier("service", s),
    };
    let e = |r: Result<(), crate::domain::ident::InputError>| r.map_err(|e| e.to_string());
    match command {
        Command::Rollback { service, env, to, .. } => {
            e(rules.identifier("service", service))?;
            e(ident("env", env))?;
            // `to` is a commit id, or a tag of ours (`known-good/...`, `rollback/...`) whose parts
            // are identifiers: never a ref git resolves specially (`FETCH_HEAD`, `HEAD@{1}`).
            if let Some(to) = to {
                let hex = (7..=40).contains(&to.len()) && to.bytes().all(|b| b.is_ascii_hexdigit());
                let parts: Vec<&str> = to.split('/').collect();
                let tag = parts.len() == 4
                    && matches!(parts[0], "known-good" | "rollback")
                    && parts[1..].iter().all(|p| rules.identifier("revision", p).is_ok());
                if !hex && !tag {
                    return Err(format!(
                        "{} is not a commit id or a known-good/ or rollback/ tag",
                        crate::domain::ident::shown(to)
                    ));
                }
            }
            Ok(())
        }
        Command::Approve { id: i } | Command::Cancel { id: i } => id(i),
        Command::Continue { id: i } | Command::Abort { id: i, .. } => id(&Some(i.clone())),
        Command::Status { service } => e(ident("service", service)),
        Command::History { service, env } => e(ident("service", service).and(ident("env", env))),
        Command::Freeze { scope: s, env, .. } | Command::Unfreeze { scope: s, env } => {
            e(scope(s).and(ident("env", env)))
        }
        Command::Release { service, env, .. } => {
            e(ident("service", &Some(service.clone())).and(ident("env", &Some(env.clone()))))
        }
        Command::Pause { .. } | Command::Resume | Command::Help => Ok(()),
    }
}

pub fn execute(engine: &mut Engine, req: &ChatRequest) -> Reply {
    let p = &req.principal;
    let actor = Actor::Person(p.clone());
    if let Err(why) = check_arguments(&req.command, engine.rules()) {
        tracing::info!(principal = %p, reason = %why, "chat command refused");
        return failed(format!("{p}: refused: {why}"), false);
    }
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
                // A denial is the asker's business; outcomes are the channel's.
                match report.outcome {
                    Outcome::Denied { .. } | Outcome::Ignored { .. } => failed(text, false),
                    _ => public(text),
                }
            })
        }
        Command::Approve { id } => match which(id, "approve") {
            Ok(id) => engine.approve(&id, &actor).map(|o| review_reply(p, &o)),
            Err(r) => return r,
        },
        Command::Cancel { id } => match which(id, "cancel") {
            Ok(id) => engine.cancel(&id, &actor).map(|o| review_reply(p, &o)),
            Err(r) => return r,
        },
        Command::Status { service } => engine.status(service.as_deref()).map(private),
        Command::History { service, env } => engine.history().map(|index| {
            let query = history::Query { service: service.as_deref(), env: env.as_deref(), limit: Some(10) };
            private(history::text(&query.select(index.records())))
        }),
        Command::Freeze { scope, env, duration, reason } => engine
            .freeze(&scope.to_string(), env.as_deref(), *duration, reason.as_deref(), &actor)
            .map(|t| announce(p, t)),
        Command::Unfreeze { scope, env } => {
            engine.unfreeze(&scope.to_string(), env.as_deref(), &actor, req.asked_at).map(|t| announce(p, t))
        }
        Command::Pause { duration, reason } => {
            engine.pause(*duration, reason.as_deref(), &actor).map(|t| announce(p, t))
        }
        Command::Resume => engine.resume(&actor, req.asked_at).map(|t| announce(p, t)),
        Command::Release { service, env, reason } => {
            engine.release(service, env, reason.as_deref(), &actor).map(|t| announce(p, t))
        }
        Command::Continue { id } => engine.continue_rollback(id, &actor).map(|t| announce(p, t)),
        Command::Abort { id, reason } => engine.abort_rollback(id, &actor, reason.as_deref()).map(|t| announce(p, t)),
    };
    // An error is the asker's to act on (retry, fix the command), not the channel's news.
    result.unwrap_or_else(|e| failed(format!("{p}: error: {e}"), false))
}

/// A freeze, pause or their end is news for the channel; a refusal is for the asker alone.
fn announce(p: &Principal, answer: Answer) -> Reply {
    if answer.is_public() { public(format!("{p}: {answer}")) } else { failed(format!("{p}: {answer}"), false) }
}

fn review_reply(p: &Principal, o: &ReviewOutcome) -> Reply {
    match o {
        ReviewOutcome::Refused { reason } => {
            tracing::info!(principal = %p, %reason, "approval or cancel refused");
            failed(o.summary(), false)
        }
        _ => public(format!("{p}: {}", o.summary())),
    }
}

/// The rollback proposal a commented pull request is: `None` where it is none (or the comment
/// is not on a pull request), an error where GitHub could not say.
pub(crate) type ProposalOf = Result<Option<crate::domain::rollback::RollbackRef>, String>;

/// Asks the forge which rollback proposal pull request `c.issue` is: never on the writer (the
/// edge asks before queuing the comment; the CLI and tests ask here).
pub(crate) fn proposal_of(forge: &dyn crate::forge::Forge, c: &crate::domain::event::Comment) -> ProposalOf {
    if !c.is_pull_request || !forge.hosts_pull_requests() {
        return Ok(None);
    }
    forge.rollback_proposal(c.issue).map_err(|e| {
        tracing::warn!(issue = c.issue, error = %e, "cannot read the pull request of a comment");
        format!("cannot read pull request #{}: {e}", c.issue)
    })
}

/// A comment on the config repo's issues or pull requests (GitHub forge): commands are read
/// outside code and quotes, acknowledged with 👀, answered with a comment, and marked 🚀 or 😕.
/// An edit is acted on only when it adds a command that was not there before. Which proposal
/// the pull request is, is asked of GitHub here: for a caller that is not the writer.
pub fn github_comment(
    engine: &mut Engine,
    c: &crate::domain::event::Comment,
    directory: &crate::domain::principal::Directory,
) -> String {
    let proposal = proposal_of(engine.forge(), c);
    github_comment_with(engine, c, directory, &crate::domain::principal::ForgeTeams::default(), proposal)
}

/// [`github_comment`], its sender in the teams `teams` says GitHub confirmed and its pull
/// request the `proposal` GitHub said (both asked at the edge, before the comment was queued:
/// the writer asks GitHub nothing). The reactions and the reply go through the outbox.
pub(crate) fn github_comment_with(
    engine: &mut Engine,
    c: &crate::domain::event::Comment,
    directory: &crate::domain::principal::Directory,
    teams: &crate::domain::principal::ForgeTeams,
    proposal: ProposalOf,
) -> String {
    use crate::chat::command::parse_markdown;
    let command = match parse_markdown(&c.body) {
        Ok(None) => return "no /rollback command in the comment".into(),
        Ok(Some(cmd)) => Ok(cmd),
        Err(e) => Err(e),
    };
    if let Some(before) = &c.previous_body
        && parse_markdown(before).ok().flatten() == command.as_ref().ok().cloned()
    {
        return "the edit adds no new command".into();
    }
    if !engine.forge().hosts_pull_requests() {
        return "comments are answered with forge.kind: github".into();
    }
    // Commands are read only on our own rollback pull requests: a comment elsewhere (an issue,
    // someone's feature PR, a fork's PR named like ours) is not answered at all.
    if !c.is_pull_request {
        return format!("#{} is not a rollback pull request; commands are read only there", c.issue);
    }
    let proposal = match proposal {
        Ok(proposal) => proposal,
        Err(why) => return why,
    };
    let Some(proposal) = proposal else {
        tracing::info!(issue = c.issue, sender = %c.sender, "command on a pull request that is not a rollback proposal");
        return format!("#{} is not a rollback pull request; commands are read only there", c.issue);
    };
    engine.react_to(c.id, "eyes");
    let reply = match command {
        Err(e) => failed(format!("@{}: {e}\n\n(`/rollback help` lists the commands)", c.sender), true),
        Ok(command) => {
            let request = ChatRequest {
                principal: Principal::new(format!("github:{}", c.sender))
                    .with_groups(directory)
                    .with_forge_teams(teams),
                command,
                request_id: format!("github-comment/{}", c.id),
                channel: "github".into(),
                implied_id: Some(proposal.id.to_string()),
                default_env: "prod".into(),
                asked_at: c.at,
            };
            execute(engine, &request)
        }
    };
    engine.comment_on(c.issue, reply.text.clone());
    engine.react_to(c.id, if reply.ok { "rocket" } else { "confused" });
    reply.text
}
