//! One grammar for chat: Slack slash commands and `/rollback` comments on GitHub. A pure
//! function from text to `Result<Option<Command>, ParseError>`: `Ok(None)` means "not for me".
//!
//! ```text
//! /rollback <service> [<env>] [to <rev>] [because <reason...>] [--emergency]
//! /rollback approve [<id>]            /rollback cancel [<id>]
//! /rollback status [<service>]        /rollback history [<service>] [<env>]
//! /rollback freeze <service>|all [<env>] [for <duration>] [because <reason...>]
//! /rollback unfreeze <service>|all [<env>]
//! /rollback pause [for <duration>] [because <reason...>]      /rollback resume
//! /rollback help
//! ```
//!
//! ```
//! use rollbackd::Command;
//! use rollbackd::parsers::{chat_command as parse, chat_markdown as parse_markdown};
//!
//! let cmd = parse("/rollback checkout prod because 5xx after 1.5.0").unwrap().unwrap();
//! assert!(matches!(cmd, Command::Rollback { ref service, .. } if service == "checkout"));
//! assert_eq!(parse("hello").unwrap(), None);
//! // Markdown code is never a command.
//! assert_eq!(parse_markdown("```\n/rollback checkout\n```").unwrap(), None);
//! let err = parse("/rollback staus").unwrap_err();
//! assert_eq!(err.to_string(), "`staus` is not a rollbackd command; did you mean `status`?");
//! ```

use std::fmt;

use crate::support::duration::Duration;

pub(crate) const PREFIX: &str = "/rollback";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    All,
    Service(String),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::All => f.write_str("all"),
            Scope::Service(s) => f.write_str(s),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Rollback {
        service: String,
        env: Option<String>,
        to: Option<String>,
        reason: Option<String>,
        emergency: bool,
    },
    Approve {
        id: Option<String>,
    },
    Cancel {
        id: Option<String>,
    },
    Status {
        service: Option<String>,
    },
    History {
        service: Option<String>,
        env: Option<String>,
    },
    Freeze {
        scope: Scope,
        env: Option<String>,
        duration: Option<Duration>,
        reason: Option<String>,
    },
    Unfreeze {
        scope: Scope,
        env: Option<String>,
    },
    Pause {
        duration: Option<Duration>,
        reason: Option<String>,
    },
    Resume,
    Release {
        service: String,
        env: String,
        reason: Option<String>,
    },
    /// A phased rollback between phases: write the next now.
    Continue {
        id: String,
    },
    /// A phased rollback between phases: stop, and propose the rest.
    Abort {
        id: String,
        reason: Option<String>,
    },
    Help,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("`{word}` is not a rollbackd command{}", did_you_mean(.suggestion))]
    UnknownCommand { word: String, suggestion: Option<&'static str> },
    #[error("unexpected `{word}` in `{command}`{}", did_you_mean(.suggestion))]
    UnexpectedWord { command: &'static str, word: String, suggestion: Option<&'static str> },
    #[error("`{command}` needs {what}")]
    Missing { command: &'static str, what: &'static str },
    #[error("`{word}` is given twice in `{command}`")]
    Duplicate { command: &'static str, word: &'static str },
    #[error("`{text}` is not a duration (try 30m, 2h, 1d)")]
    BadDuration { text: String },
}

fn did_you_mean(s: &Option<&'static str>) -> String {
    s.map(|w| format!("; did you mean `{w}`?")).unwrap_or_default()
}

/// Every command, for suggestions and help. Adding a `Command` variant does not compile until
/// [`usage`] describes it.
const SUBCOMMANDS: [&str; 12] = [
    "approve", "cancel", "status", "history", "freeze", "unfreeze", "pause", "resume", "release", "continue", "abort",
    "help",
];

fn suggest(word: &str, candidates: &[&'static str], max: usize) -> Option<&'static str> {
    let w = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(&w, c), *c))
        .filter(|(d, c)| *d > 0 && *d <= max && c.len() > 3)
        .min()
        .map(|(_, c)| c)
}

/// Finds the `/rollback` line of a message (a Slack `text` field starts after the command;
/// use [`parse_args`] for it). Lines inside code blocks and quotes are never commands.
pub fn parse(text: &str) -> Result<Option<Command>, ParseError> {
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix(PREFIX) else { continue };
        if !(rest.is_empty() || rest.starts_with(char::is_whitespace)) {
            continue; // `/rollbacks` is someone else's.
        }
        return parse_args(rest).map(Some);
    }
    Ok(None)
}

/// GitHub comments are Markdown: only text outside code and quotes counts.
pub fn parse_markdown(markdown: &str) -> Result<Option<Command>, ParseError> {
    parse(&plain_text(markdown))
}

fn plain_text(markdown: &str) -> String {
    use pulldown_cmark::{Event, Parser, Tag, TagEnd};
    let mut out = String::new();
    let (mut code, mut quote) = (0usize, 0usize);
    for ev in Parser::new(markdown) {
        match ev {
            Event::Start(Tag::CodeBlock(_)) => code += 1,
            Event::End(TagEnd::CodeBlock) => code = code.saturating_sub(1),
            Event::Start(Tag::BlockQuote(_)) => quote += 1,
            Event::End(TagEnd::BlockQuote(_)) => quote = quote.saturating_sub(1),
            Event::Text(t) if code == 0 && quote == 0 => out.push_str(&t),
            Event::SoftBreak | Event::HardBreak | Event::End(TagEnd::Paragraph) if code == 0 && quote == 0 => {
                out.push('\n')
            }
            _ => {}
        }
    }
    out
}

/// The words after `/rollback`.
pub fn parse_args(args: &str) -> Result<Command, ParseError> {
    let words: Vec<&str> = args.split_whitespace().collect();
    let Some((first, rest)) = words.split_first() else { return Ok(Command::Help) };
    match first.to_ascii_lowercase().as_str() {
        "help" => match rest {
            [] => Ok(Command::Help),
            [w, ..] => Err(ParseError::UnexpectedWord { command: "help", word: w.to_string(), suggestion: None }),
        },
        "approve" => Ok(Command::Approve { id: optional_id("approve", rest)? }),
        "cancel" => Ok(Command::Cancel { id: optional_id("cancel", rest)? }),
        "status" => Ok(Command::Status { service: optional_id("status", rest)? }),
        "history" => history(rest),
        "freeze" => freeze(rest),
        "unfreeze" => {
            let (scope, rest) = scope("unfreeze", rest)?;
            let opts = options("unfreeze", rest, &[])?;
            Ok(Command::Unfreeze { scope, env: opts.positional })
        }
        "pause" => pause(rest),
        "release" => release(rest),
        "continue" => match rest {
            [id] => Ok(Command::Continue { id: id.to_string() }),
            [] => Err(ParseError::Missing { command: "continue", what: "<id>" }),
            [_, extra, ..] => {
                Err(ParseError::UnexpectedWord { command: "continue", word: extra.to_string(), suggestion: None })
            }
        },
        "abort" => abort(rest),
        "resume" => match rest.first() {
            None => Ok(Command::Resume),
            Some(extra) => {
                Err(ParseError::UnexpectedWord { command: "resume", word: extra.to_string(), suggestion: None })
            }
        },
        _ => rollback(first, rest),
    }
}

/// One optional word after the command (an id, a service).
fn optional_id(command: &'static str, rest: &[&str]) -> Result<Option<String>, ParseError> {
    match rest {
        [] => Ok(None),
        [id] => Ok(Some(id.to_string())),
        [_, extra, ..] => Err(ParseError::UnexpectedWord { command, word: extra.to_string(), suggestion: None }),
    }
}

fn history(rest: &[&str]) -> Result<Command, ParseError> {
    match rest {
        [] => Ok(Command::History { service: None, env: None }),
        [s] => Ok(Command::History { service: Some(s.to_string()), env: None }),
        [s, e] => Ok(Command::History { service: Some(s.to_string()), env: Some(e.to_string()) }),
        [_, _, extra, ..] => {
            Err(ParseError::UnexpectedWord { command: "history", word: extra.to_string(), suggestion: None })
        }
    }
}

/// The duration after `for`, if given.
fn duration_for(opts: &Options) -> Result<Option<Duration>, ParseError> {
    match opts.value("for") {
        Some(text) => Ok(Some(text.parse::<Duration>().map_err(|_| ParseError::BadDuration { text })?)),
        None => Ok(None),
    }
}

fn freeze(rest: &[&str]) -> Result<Command, ParseError> {
    let (scope, rest) = scope("freeze", rest)?;
    let opts = options("freeze", rest, &["for", "because"])?;
    let duration = duration_for(&opts)?;
    let reason = opts.value("because");
    Ok(Command::Freeze { scope, env: opts.positional, duration, reason })
}

fn pause(rest: &[&str]) -> Result<Command, ParseError> {
    let opts = options("pause", rest, &["for", "because"])?;
    if let Some(word) = opts.positional {
        return Err(ParseError::UnexpectedWord { command: "pause", word, suggestion: Some("for") });
    }
    let duration = duration_for(&opts)?;
    Ok(Command::Pause { duration, reason: opts.value("because") })
}

fn release(rest: &[&str]) -> Result<Command, ParseError> {
    let [service, env, rest @ ..] = rest else {
        return Err(ParseError::Missing { command: "release", what: "<service> <env>" });
    };
    let opts = options("release", rest, &["because"])?;
    if let Some(word) = opts.positional {
        return Err(ParseError::UnexpectedWord { command: "release", word, suggestion: Some("because") });
    }
    Ok(Command::Release { service: service.to_string(), env: env.to_string(), reason: opts.value("because") })
}

fn abort(rest: &[&str]) -> Result<Command, ParseError> {
    let [id, rest @ ..] = rest else {
        return Err(ParseError::Missing { command: "abort", what: "<id>" });
    };
    let opts = options("abort", rest, &["because"])?;
    if let Some(word) = opts.positional {
        return Err(ParseError::UnexpectedWord { command: "abort", word, suggestion: Some("because") });
    }
    Ok(Command::Abort { id: id.to_string(), reason: opts.value("because") })
}

/// Any first word that is no command names a service to roll back.
fn rollback(service: &str, rest: &[&str]) -> Result<Command, ParseError> {
    if service.starts_with('-') || service.contains(['/', '\\', '"']) {
        return Err(ParseError::UnknownCommand {
            word: service.to_string(),
            suggestion: suggest(service, &SUBCOMMANDS, 2),
        });
    }
    // A near miss of a command is a typo, not a service called "staus".
    if let Some(s) = suggest(service, &SUBCOMMANDS, 1) {
        return Err(ParseError::UnknownCommand { word: service.to_string(), suggestion: Some(s) });
    }
    let opts = options("rollback", rest, &["to", "because", "--emergency"])?;
    Ok(Command::Rollback {
        service: service.to_string(),
        env: opts.positional.clone(),
        to: opts.value("to"),
        reason: opts.value("because"),
        emergency: opts.flags.contains(&"--emergency"),
    })
}

fn scope<'a>(command: &'static str, rest: &'a [&'a str]) -> Result<(Scope, &'a [&'a str]), ParseError> {
    match rest.split_first() {
        None => Err(ParseError::Missing { command, what: "a service, or `all`" }),
        Some((w, tail)) if w.eq_ignore_ascii_case("all") => Ok((Scope::All, tail)),
        Some((w, tail)) => Ok((Scope::Service(w.to_string()), tail)),
    }
}

struct Options {
    positional: Option<String>,
    values: Vec<(&'static str, String)>,
    flags: Vec<&'static str>,
}

impl Options {
    fn value(&self, key: &str) -> Option<String> {
        self.values.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone())
    }
}

/// `[<positional>] [key value]... [because <rest of the line>] [--flag]`
fn options(command: &'static str, words: &[&str], keys: &[&'static str]) -> Result<Options, ParseError> {
    let mut o = Options { positional: None, values: Vec::new(), flags: Vec::new() };
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        let lower = w.to_ascii_lowercase();
        let key = keys.iter().find(|k| **k == lower).copied();
        match key {
            Some(k) if k.starts_with("--") => {
                if o.flags.contains(&k) {
                    return Err(ParseError::Duplicate { command, word: k });
                }
                o.flags.push(k);
                i += 1;
            }
            Some("because") => {
                // The reason is the rest of the line, flags at its end aside.
                let mut tail: Vec<&str> = words[i + 1..].to_vec();
                while let Some(last) = tail.last() {
                    match keys.iter().find(|k| k.starts_with("--") && **k == last.to_ascii_lowercase()) {
                        Some(flag) => {
                            o.flags.push(flag);
                            tail.pop();
                        }
                        None => break,
                    }
                }
                if tail.is_empty() {
                    return Err(ParseError::Missing { command, what: "a reason after `because`" });
                }
                o.values.push(("because", tail.join(" ")));
                return Ok(o);
            }
            Some(k) => {
                if o.values.iter().any(|(x, _)| *x == k) {
                    return Err(ParseError::Duplicate { command, word: k });
                }
                let what = match k {
                    "to" => "a revision after `to`",
                    "for" => "a duration after `for`",
                    _ => "a value",
                };
                let v = words.get(i + 1).ok_or(ParseError::Missing { command, what })?;
                o.values.push((k, v.to_string()));
                i += 2;
            }
            None if o.positional.is_none()
                && o.values.is_empty()
                && suggest(w, keys, 2).is_none()
                && !w.starts_with('-') =>
            {
                o.positional = Some(w.to_string());
                i += 1;
            }
            None => {
                let suggestion = suggest(w.trim_start_matches('-'), keys, 2).or_else(|| suggest(w, keys, 2));
                return Err(ParseError::UnexpectedWord { command, word: w.to_string(), suggestion });
            }
        }
    }
    Ok(o)
}

/// One line of usage per command. The exhaustive `match` is the point: a new command does not
/// compile until its help exists.
pub(crate) fn usage(c: &Command) -> (&'static str, &'static str) {
    match c {
        Command::Rollback { .. } => (
            "/rollback <service> [<env>] [to <rev>] [because <reason...>] [--emergency]",
            "roll a service back to its known-good state (or to <rev>); policies decide how",
        ),
        Command::Approve { .. } => {
            ("/rollback approve [<id>]", "approve a proposed rollback (the PR's own on a rollback PR)")
        }
        Command::Cancel { .. } => ("/rollback cancel [<id>]", "close a proposed rollback and delete its branch"),
        Command::Status { .. } => ("/rollback status [<service>]", "open proposals, freezes and the last rollbacks"),
        Command::History { .. } => ("/rollback history [<service>] [<env>]", "rollbacks recorded in the config repo"),
        Command::Freeze { .. } => (
            "/rollback freeze <service>|all [<env>] [for <duration>] [because <reason...>]",
            "automatic rollbacks become proposals until the freeze ends",
        ),
        Command::Unfreeze { .. } => ("/rollback unfreeze <service>|all [<env>]", "end a freeze"),
        Command::Pause { .. } => (
            "/rollback pause [for <duration>] [because <reason...>]",
            "the kill switch: every automatic rollback stops, everywhere, until resume",
        ),
        Command::Resume => ("/rollback resume", "lift the pause"),
        Command::Release { .. } => (
            "/rollback release <service> <env> [because <reason...>]",
            "lift the holds: artifacts a rollback undid may come back",
        ),
        Command::Continue { .. } => {
            ("/rollback continue <id>", "a phased rollback between phases: write the next phase now")
        }
        Command::Abort { .. } => (
            "/rollback abort <id> [because <reason...>]",
            "a phased rollback between phases: stop, and propose the rest for review",
        ),
        Command::Help => ("/rollback help", "this help"),
    }
}

pub fn help() -> String {
    let all = [
        Command::Rollback { service: String::new(), env: None, to: None, reason: None, emergency: false },
        Command::Approve { id: None },
        Command::Cancel { id: None },
        Command::Status { service: None },
        Command::History { service: None, env: None },
        Command::Freeze { scope: Scope::All, env: None, duration: None, reason: None },
        Command::Unfreeze { scope: Scope::All, env: None },
        Command::Pause { duration: None, reason: None },
        Command::Resume,
        Command::Release { service: String::new(), env: String::new(), reason: None },
        Command::Continue { id: String::new() },
        Command::Abort { id: String::new(), reason: None },
        Command::Help,
    ];
    let mut s = String::from("rollbackd commands:\n");
    for c in &all {
        let (u, what) = usage(c);
        s.push_str(&format!("  {u}\n      {what}\n"));
    }
    s
}
