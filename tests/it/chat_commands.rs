//! The chat grammar, table-driven, and a property: no input makes it panic.

use proptest::prelude::*;
use rollbackd::parsers::{
    chat_args as parse_args, chat_command as parse, chat_help as help, chat_markdown as parse_markdown,
};
use rollbackd::{Command, ParseError, Scope};

fn rb(service: &str, env: Option<&str>, to: Option<&str>, reason: Option<&str>, emergency: bool) -> Command {
    Command::Rollback {
        service: service.into(),
        env: env.map(Into::into),
        to: to.map(Into::into),
        reason: reason.map(Into::into),
        emergency,
    }
}

#[test]
fn commands() {
    let d = |s: &str| Some(s.parse::<rollbackd::Duration>().unwrap());
    let cases: Vec<(&str, Command)> = vec![
        ("/rollback", Command::Help),
        ("/rollback help", Command::Help),
        ("/rollback checkout", rb("checkout", None, None, None, false)),
        ("/rollback checkout prod", rb("checkout", Some("prod"), None, None, false)),
        ("/rollback checkout prod to a1b2c3d", rb("checkout", Some("prod"), Some("a1b2c3d"), None, false)),
        ("/rollback checkout to v1.4.2", rb("checkout", None, Some("v1.4.2"), None, false)),
        (
            "/rollback checkout prod because 5xx after the 1.5.0 deploy",
            rb("checkout", Some("prod"), None, Some("5xx after the 1.5.0 deploy"), false),
        ),
        (
            "/rollback checkout prod to abc because it broke --emergency",
            rb("checkout", Some("prod"), Some("abc"), Some("it broke"), true),
        ),
        ("/rollback checkout prod --emergency", rb("checkout", Some("prod"), None, None, true)),
        ("/rollback   checkout    prod  ", rb("checkout", Some("prod"), None, None, false)),
        ("/rollback approve", Command::Approve { id: None }),
        ("/rollback approve rb-0123456789ab", Command::Approve { id: Some("rb-0123456789ab".into()) }),
        ("/rollback APPROVE", Command::Approve { id: None }),
        ("/rollback cancel rb-1", Command::Cancel { id: Some("rb-1".into()) }),
        ("/rollback status", Command::Status { service: None }),
        ("/rollback status cart", Command::Status { service: Some("cart".into()) }),
        ("/rollback history", Command::History { service: None, env: None }),
        ("/rollback pause", Command::Pause { duration: None, reason: None }),
        (
            "/rollback pause for 2h because flapping alert",
            Command::Pause { duration: d("2h"), reason: Some("flapping alert".into()) },
        ),
        ("/rollback resume", Command::Resume),
        ("/rollback history cart prod", Command::History { service: Some("cart".into()), env: Some("prod".into()) }),
        ("/rollback freeze all", Command::Freeze { scope: Scope::All, env: None, duration: None, reason: None }),
        (
            "/rollback freeze checkout prod for 2h because load test",
            Command::Freeze {
                scope: Scope::Service("checkout".into()),
                env: Some("prod".into()),
                duration: d("2h"),
                reason: Some("load test".into()),
            },
        ),
        (
            "/rollback freeze all for 30m",
            Command::Freeze { scope: Scope::All, env: None, duration: d("30m"), reason: None },
        ),
        ("/rollback unfreeze all", Command::Unfreeze { scope: Scope::All, env: None }),
        (
            "/rollback unfreeze cart staging",
            Command::Unfreeze { scope: Scope::Service("cart".into()), env: Some("staging".into()) },
        ),
        ("please\n/rollback cart prod\nthanks", rb("cart", Some("prod"), None, None, false)),
    ];
    for (text, want) in cases {
        assert_eq!(parse(text), Ok(Some(want)), "{text}");
    }
}

#[test]
fn not_for_us() {
    for text in [
        "",
        "hello",
        "rollback checkout",
        "/rollbacks checkout",
        "see /rollback in the docs? no: mid-line",
        "`/rollback checkout`",
    ] {
        assert_eq!(parse_markdown(text), Ok(None), "{text:?}");
    }
}

#[test]
fn markdown_code_and_quotes_are_never_commands() {
    let md = "Try this:\n\n```\n/rollback checkout prod\n```\n\n> /rollback cart prod\n\n    /rollback indented code\n";
    assert_eq!(parse_markdown(md), Ok(None));
    let md = "> someone said /rollback cart\n\n/rollback approve\n";
    assert_eq!(parse_markdown(md), Ok(Some(Command::Approve { id: None })));
}

#[test]
fn errors_are_typed_and_suggest() {
    let cases: Vec<(&str, ParseError)> = vec![
        ("/rollback staus", ParseError::UnknownCommand { word: "staus".into(), suggestion: Some("status") }),
        ("/rollback aprove", ParseError::UnknownCommand { word: "aprove".into(), suggestion: Some("approve") }),
        (
            "/rollback checkout prod becuase it broke",
            ParseError::UnexpectedWord { command: "rollback", word: "becuase".into(), suggestion: Some("because") },
        ),
        (
            "/rollback checkout prod --emergancy",
            ParseError::UnexpectedWord {
                command: "rollback",
                word: "--emergancy".into(),
                suggestion: Some("--emergency"),
            },
        ),
        (
            "/rollback checkout prod staging",
            ParseError::UnexpectedWord { command: "rollback", word: "staging".into(), suggestion: None },
        ),
        ("/rollback checkout to", ParseError::Missing { command: "rollback", what: "a revision after `to`" }),
        ("/rollback checkout because", ParseError::Missing { command: "rollback", what: "a reason after `because`" }),
        ("/rollback checkout to a to b", ParseError::Duplicate { command: "rollback", word: "to" }),
        ("/rollback freeze", ParseError::Missing { command: "freeze", what: "a service, or `all`" }),
        ("/rollback freeze all for soon", ParseError::BadDuration { text: "soon".into() }),
        (
            "/rollback approve a b",
            ParseError::UnexpectedWord { command: "approve", word: "b".into(), suggestion: None },
        ),
        ("/rollback help me", ParseError::UnexpectedWord { command: "help", word: "me".into(), suggestion: None }),
    ];
    for (text, want) in cases {
        assert_eq!(parse(text), Err(want), "{text}");
    }
    let msg = parse("/rollback staus").unwrap_err().to_string();
    assert_eq!(msg, "`staus` is not a rollbackd command; did you mean `status`?");
}

#[test]
fn help_lists_every_command() {
    let h = help();
    for word in ["approve", "cancel", "status", "history", "freeze", "unfreeze", "help", "--emergency", "because"] {
        assert!(h.contains(word), "{word} missing from:\n{h}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn never_panics(text in "\\PC{0,80}") {
        let _ = parse(&text);
        let _ = parse_markdown(&text);
        let _ = parse_args(&text);
    }

    #[test]
    fn never_panics_on_command_like_text(words in prop::collection::vec(prop_oneof![
        Just("to"), Just("because"), Just("for"), Just("--emergency"), Just("all"), Just("approve"),
        Just("freeze"), Just("unfreeze"), Just("history"), Just("status"), Just("cancel"), Just("help"),
        Just("checkout"), Just("prod"), Just("2h"), Just("```"), Just(">"), Just("\n"),
    ], 0..10)) {
        let text = format!("/rollback {}", words.join(" "));
        if let Ok(Some(Command::Rollback { service, .. })) = parse(&text) {
            prop_assert!(!service.is_empty());
        }
        let _ = parse_markdown(&text);
    }
}
