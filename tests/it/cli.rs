//! The `rollbackd` binary: exit codes, `check` positions, `history --json`, `simulate`.

use crate::common::*;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn check_accepts_a_valid_setup() {
    let w = World::new();
    let out = w.run_cli(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("is valid"));
}

#[test]
fn check_refuses_what_serve_would_refuse() {
    let w = World::new();
    for (pattern, says) in [("[a-z]+", "anchored"), ("^[$", "identifier_pattern")] {
        w.write_config(&ConfigSpec::new().set("input.identifier_pattern", pattern));
        let out = w.run_cli(&["check"]);
        assert_eq!(out.status.code(), Some(1), "{pattern}");
        assert!(
            stdout(&out).contains(says) || String::from_utf8_lossy(&out.stderr).contains(says),
            "{pattern}: {out:?}"
        );
    }
}

#[test]
fn check_reports_file_line_and_column() {
    let w = World::new();
    let cases = [
        // (policy text, expected position, expected words)
        (
            "- name: p\n  match:\n    source: alertmanager\n    matchers: ['service=~\"(\"']\n  target: { service: x, env: y, paths: [a] }\n",
            ":4:",
            "regular expression",
        ),
        (
            "- name: p\n  match: {}\n  target: { service: x, env: y, paths: [a] }\n  guards:\n    cooldown: soon\n",
            ":5:",
            "invalid duration",
        ),
        (
            "- name: p\n  match: {}\n  target: { service: x, env: y, paths: [a] }\n  action: { mode: direct, strtegy: revert }\n",
            ":4:",
            "strtegy",
        ),
        (
            "- name: p\n  match: {}\n  target: { service: \"{{ labels.service \", env: y, paths: [a] }\n",
            ":3:",
            "bad template",
        ),
    ];
    for (text, pos, words) in cases {
        w.set_policy_text(text);
        let out = w.run_cli(&["check"]);
        let text_out = stdout(&out);
        assert_eq!(out.status.code(), Some(1), "{text_out}");
        assert!(text_out.contains(&format!("10-test.yaml{pos}")), "want {pos} in {text_out}");
        assert!(text_out.contains(words), "want {words} in {text_out}");
    }
}

#[test]
fn check_warns_about_paths_that_match_nothing_and_still_passes() {
    let w = World::new();
    w.set_policy_text(
        "- name: p\n  match: { matchers: ['service=\"checkout\"'] }\n  target:\n    service: x\n    env: y\n    paths:\n      - \"apps/{{ labels.service }}/prod/**\"\n      - \"apps/{{ labels.service }}/qa/**\"\n",
    );
    let out = w.run_cli(&["check"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("10-test.yaml:8:") && text.contains("warning") && text.contains("apps/checkout/qa/**"),
        "{text}"
    );
    assert!(!text.contains("prod/**` (as"), "{text}");
}

#[test]
fn check_reports_a_broken_template() {
    let w = World::new();
    std::fs::write(w.root().join("templates/commit.txt.j2"), "Roll back\n{% if id %}\nno end\n").unwrap();
    let out = w.run_cli(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("commit.txt.j2:"), "{}", stdout(&out));
    std::fs::write(w.root().join("templates/commit.txt.j2"), "Roll back\n\nof {{ service }} by {{ servce }}\n")
        .unwrap();
    let out = w.run_cli(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    // The position of the expression, and what it names.
    assert!(stdout(&out).contains("commit.txt.j2:3:24: error: undefined value `servce`"), "{}", stdout(&out));
}

#[test]
fn check_reports_every_broken_policy_in_a_file_not_just_the_first() {
    let w = World::new();
    w.set_policy_text(concat!(
        "# two mistakes, one good policy between them\n",
        "- name: a\n  match: {}\n  target: { service: x, env: y, paths: [a] }\n  guards: { cooldown: soon }\n",
        "- name: b\n  match: {}\n  target: { service: x, env: y, paths: [a] }\n",
        "- name: c\n  match: {}\n  target: { service: x, env: y, paths: [a] }\n  action: { mode: direct, strtegy: revert }\n",
    ));
    let out = w.run_cli(&["check"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("10-test.yaml:5:") && text.contains("invalid duration"), "{text}");
    assert!(text.contains("10-test.yaml:12:") && text.contains("strtegy"), "{text}");
    assert_eq!(text.matches("error").count(), 2, "{text}");
}

#[test]
fn check_warns_about_chat_rules_that_match_nobody() {
    let w = World::new();
    w.write_config(&ConfigSpec::new().set("directory.slack_groups", json!({ "S0EMPTY": [], "S1SRE": ["U1"] })));
    w.set_policy_text(concat!(
        "- name: chat\n  match: { source: chatops }\n  target: { service: x, env: y, paths: [a] }\n",
        "  chatops:\n    allow: ['slack-group:S1SRE', 'slack-group:S9GONE']\n",
        "    approve: ['slack-group:S0EMPTY', 'github-team:acme/sre']\n",
    ));
    let out = w.run_cli(&["check"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "warnings do not fail the check: {text}");
    assert!(text.contains("chatops.allow: `slack-group:S9GONE` is not in the config's `directory`"), "{text}");
    assert!(text.contains("chatops.approve: `slack-group:S0EMPTY` has no members"), "{text}");
    assert!(text.contains("chatops.approve: `github-team:acme/sre` is not in"), "{text}");
    assert!(!text.contains("S1SRE"), "{text}");
}

#[test]
fn check_offline_needs_no_secret_and_no_network_and_is_the_default_in_ci() {
    let w = World::new();
    // A token the CI of the config repo does not have, and an origin it cannot reach.
    let cfg = std::fs::read_to_string(w.config_path())
        .unwrap()
        .replace("url: origin.git", "url: https://127.0.0.1:9/none.git\n  token_env: ROLLBACKD_TEST_NO_SUCH_TOKEN");
    std::fs::write(w.config_path(), cfg).unwrap();
    let online = w.run_cli(&["check"]);
    assert_eq!(online.status.code(), Some(1));
    assert!(
        stdout(&online).contains("ROLLBACKD_TEST_NO_SUCH_TOKEN") && stdout(&online).contains("--offline"),
        "{}",
        stdout(&online)
    );
    let offline = w.run_cli(&["check", "--offline"]);
    assert_eq!(offline.status.code(), Some(0), "{}", stdout(&offline));
    assert!(stdout(&offline).contains("(offline"), "{}", stdout(&offline));
    // Under CI it is offline unless asked otherwise.
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_rollbackd"))
            .arg("--config")
            .arg(w.config_path())
            .args(args)
            .env("CI", "true")
            .output()
            .unwrap()
    };
    assert_eq!(run(&["check"]).status.code(), Some(0));
    assert_eq!(run(&["check", "--online"]).status.code(), Some(1));
    // Offline still finds what is wrong in the files.
    w.set_policy_text(
        "- name: p\n  match: {}\n  target: { service: x, env: y, paths: [a] }\n  guards: { cooldown: soon }\n",
    );
    assert_eq!(run(&["check"]).status.code(), Some(1));
}

#[test]
fn check_online_exits_3_naming_the_url_when_the_config_repo_cannot_be_read() {
    let w = World::new();
    let original = std::fs::read_to_string(w.config_path()).unwrap();
    // A repo that does not exist, and one behind a closed port whose URL carries a password.
    for (url, shown) in [
        ("no-such-origin.git", "no-such-origin.git"),
        ("https://rollbackd:pw-5e1b@127.0.0.1:9/none.git", "127.0.0.1:9/none.git"),
    ] {
        std::fs::write(w.config_path(), original.replace("url: origin.git", &format!("url: {url}"))).unwrap();
        let online = w.run_cli(&["check"]);
        let said = format!("{}{}", stdout(&online), stderr(&online));
        assert_eq!(online.status.code(), Some(3), "{url}: {said}");
        assert!(said.contains(shown) && said.contains("repo.url: cannot reach the config repo"), "{url}: {said}");
        assert!(!said.contains("pw-5e1b"), "the password is never shown: {said}");
        assert!(!said.contains("is valid"), "{said}");
        let offline = w.run_cli(&["check", "--offline"]);
        assert_eq!(offline.status.code(), Some(0), "{url}: offline asks no remote: {}", stdout(&offline));
    }
}

#[test]
fn rollback_then_history_json_round_trips_the_trailers() {
    let w = World::new();
    let bad = w.deploy("checkout", "prod", "1.5.0", 10);
    let out = w.run_cli(&["rollback", "checkout", "--env", "prod", "--reason", "5xx after 1.5.0", "--actor", "alice"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("outcome: rolled back"));
    let out = w.run_cli(&["history", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &v["rollbacks"][0];
    assert_eq!(r["service"], "checkout");
    assert_eq!(r["env"], "prod");
    assert_eq!(r["delivery"], "direct");
    assert_eq!(r["strategy"], "revert");
    assert_eq!(r["actor"], "cli:alice");
    assert_eq!(r["reason"], "5xx after 1.5.0");
    assert_eq!(r["bad_commits"][0], bad.0);
    assert_eq!(r["known_good"], w.good.0);
    assert_eq!(r["policy"], "test-policy");
    assert_eq!(r["commit"], w.head());
    assert_eq!(r["tag"], format!("rollback/checkout/prod/{}", r["id"].as_str().unwrap()));
    assert!(r["trigger"].as_str().unwrap().starts_with("cli:alice-"));
    // Filters
    let out = w.run_cli(&["history", "--json", "--service", "cart"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rollbacks"].as_array().unwrap().len(), 0);
}

#[test]
fn denied_exits_2_and_no_policy_exits_2() {
    let w = World::with(&[PolicySpec::new("test-policy").guard("max_change_age", "1m")]);
    w.deploy("checkout", "prod", "1.5.0", 10);
    let out = w.run_cli(&["rollback", "checkout", "--env", "prod"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stdout(&out).contains("FAIL max_change_age"));
    w.set_policies(&[PolicySpec::new("only-alerts").source("alertmanager").matchers(&[]).target("x", "y", &["apps"])]);
    let out = w.run_cli(&["rollback", "checkout", "--env", "prod"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stdout(&out).contains("no policy matches"));
}

#[test]
fn unreachable_origin_exits_3_and_writes_nothing() {
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    let out = w.run_cli(&["history"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mirror = w.refs_of(&w.mirror());
    let moved = w.root().join("origin-away.git");
    std::fs::rename(&w.origin, &moved).unwrap();
    let out = w.run_cli(&["rollback", "checkout", "--env", "prod"]);
    std::fs::rename(&moved, &w.origin).unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("cannot reach the config repo"), "{err}");
    assert_eq!(w.refs_of(&w.mirror()), mirror);
    assert!(w.message("main").starts_with("Deploy checkout 1.5.0"));
}

#[test]
fn simulate_prints_the_trace_and_writes_nothing() {
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    let cart_head = rollbackd::Sha(w.head());
    w.tag_known_good("cart", "prod", &cart_head, "20261121T110000Z");
    w.run_cli(&["history"]);
    let (origin, mirror) = (w.refs_of(&w.origin), w.refs_of(&w.mirror()));
    let alert = w.root().join("alert.json");
    std::fs::write(
        &alert,
        r#"{"version":"4","status":"firing","alerts":[
            {"status":"firing","labels":{"service":"checkout","env":"prod"},"annotations":{},"startsAt":"2026-11-21T11:55:00Z","fingerprint":"ab"},
            {"status":"firing","labels":{"service":"cart","env":"prod"},"annotations":{},"startsAt":"2026-11-21T11:55:00Z","fingerprint":"cd"}]}"#,
    )
    .unwrap();
    let out = w.run_cli(&["simulate", "--event", alert.to_str().unwrap(), "--at", "2026-11-21T12:00:00Z"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(text.contains("MATCH test-policy"), "{text}");
    assert!(text.contains("strategy revert"), "{text}");
    assert!(text.contains("apps/checkout/prod/deployment.yaml | +1 -1"), "{text}");
    assert!(text.contains("outcome: dry run: would push rollback"), "{text}");
    assert!(text.contains("outcome: noop"), "cart has nothing to roll back: {text}");
    assert_eq!(w.refs_of(&w.origin), origin);
    assert_eq!(w.refs_of(&w.mirror()), mirror);

    let out = w.run_cli(&["simulate", "--event", alert.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["outcome"], "dry_run");
    assert_eq!(v[0]["decision"]["policy"], "test-policy");
    assert_eq!(v[1]["outcome"], "noop");
}

#[test]
fn malformed_event_file_is_a_clear_error() {
    let w = World::new();
    let f = w.root().join("bad.json");
    std::fs::write(&f, r#"{"version":"4","alerts":[{"status":"firing","startsAt":"soon"}]}"#).unwrap();
    let out = w.run_cli(&["simulate", "--event", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("startsAt \"soon\""), "{}", stderr(&out));
}

#[test]
fn the_demo_and_its_example_policies_pass_check() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rollbackd"))
        .args(["demo", "--no-serve", "--dir", demo.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("would push rollback"), "{}", stdout(&out));
    // The demo shows readiness (checkout/prod can go back to its known-good tag) and the plan
    // of the last change.
    let said = stdout(&out);
    let ready = said.lines().find(|l| l.starts_with("checkout/prod ")).unwrap_or_else(|| panic!("{said}"));
    assert!(ready.contains(" ready ") && ready.contains("known-good/checkout/prod/"), "{ready}");
    assert!(said.contains("The plan of the last change on main") && said.contains("back to "), "{said}");
    // Where the status page would be, as the serving demo prints it.
    assert!(said.contains("Status page: http://127.0.0.1:8080/ (JSON: http://127.0.0.1:8080/api/v1/status)"), "{said}");
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_rollbackd"))
        .args(["--config", demo.join("rollbackd.yaml").to_str().unwrap(), "check"])
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(0), "{}", stdout(&check));
    // The one warning: the request policy's verify.query, with no Prometheus on this machine.
    let said = stdout(&check);
    let mut warnings = said.lines().filter(|l| l.contains("warning"));
    assert!(warnings.all(|w| w.contains("policy request: verify.query not tried")), "{said}");
    // The embedded policies are the files in policies/.
    for (name, text) in rollbackd::DEMO_POLICIES {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies").join(name);
        assert_eq!(std::fs::read_to_string(file).unwrap(), *text);
    }
}

#[test]
fn simulate_a_recorded_github_delivery() {
    let w = World::with(&[PolicySpec::new("ci")
        .source("github")
        .matchers(&["event=\"workflow_run\""])
        .target("checkout", "prod", &["apps/checkout/prod/**"])
        .set("target.to", "{{ labels.sha }}~1")]);
    let bad = w.deploy("checkout", "prod", "1.5.0", 10);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/github/workflow_run.completed.payload.json");
    let mut run: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    run["workflow_run"]["conclusion"] = "failure".into();
    run["workflow_run"]["head_sha"] = bad.0.clone().into();
    let f = w.root().join("run.json");
    std::fs::write(&f, run.to_string()).unwrap();
    let out = w.run_cli(&["simulate", "--event", f.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(text.contains("event: github:workflow_run/289782451/1 (github)"), "{text}");
    assert!(text.contains(&format!("known-good {} (requested", &w.good.0[..10])), "{text}");
    assert!(text.contains("outcome: dry run: would push rollback"), "{text}");
}

#[test]
fn usage_errors_exit_64_not_the_code_for_denied() {
    let w = World::new();
    for args in [
        &["bogus"][..],
        &["rollback", "checkout"][..],
        &["rollback", "checkout", "--env", "prod", "--actor", "a b"][..],
    ] {
        let out = w.run_cli(args);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {out:?}");
    }
    assert_eq!(w.run_cli(&["--help"]).status.code(), Some(0));
    let version = w.run_cli(&["--version"]);
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("rollbackd 0."), "{version:?}");
}

#[test]
fn a_person_is_named_by_flag_env_or_git_and_nobody_is_refused() {
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    let home = w.root().join("empty-home");
    std::fs::create_dir_all(&home).unwrap();
    // A bare container: no --actor, no ROLLBACKD_ACTOR, no git identity, no $USER.
    let bare = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_rollbackd"))
            .arg("--config")
            .arg(w.config_path())
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("HOME", &home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .unwrap()
    };
    let out = bare(&["freeze", "checkout"]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass --actor NAME or set ROLLBACKD_ACTOR"), "{out:?}");
    assert!(w.git(&["for-each-ref", "refs/rollbackd/"]).is_empty(), "no freeze written by nobody");

    std::fs::write(home.join(".gitconfig"), "[user]\n\temail = dana@example.com\n").unwrap();
    let out = bare(&["rollback", "checkout", "--env", "prod"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(w.trailers("main", "Rollback-Actor"), ["cli:dana@example.com"]);
}

#[test]
fn completions_for_each_shell() {
    let w = World::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = w.run_cli(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0));
        assert!(String::from_utf8_lossy(&out.stdout).contains("rollback"), "{shell}");
    }
}

#[test]
fn a_policy_file_named_with_a_terminal_escape_is_refused_and_shown_escaped() {
    let w = World::new();
    std::fs::write(w.root().join("policies").join("evil\u{1b}[2J.yaml"), "[]\n").unwrap();
    let out = w.run_cli(&["check", "--offline"]);
    let text = stdout(&out) + &stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("control characters in a policy file's name"), "{text}");
    assert!(!text.contains('\u{1b}') && text.contains("evil\\u{1b}[2J.yaml"), "{text:?}");
}

/// Every subcommand the binary has, as its help lists them.
fn subcommands() -> Vec<String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rollbackd")).arg("--help").output().unwrap();
    let help = stdout(&out);
    let commands = help.split("Commands:").nth(1).and_then(|s| s.split("Options:").next()).unwrap_or_default();
    commands.lines().filter_map(|l| l.split_whitespace().next()).filter(|c| *c != "help").map(str::to_string).collect()
}

#[test]
fn every_argument_and_option_of_every_command_has_a_description() {
    let commands = subcommands();
    assert!(commands.len() > 20 && commands.iter().any(|c| c == "healthcheck"), "{commands:?}");
    let mut missing = Vec::new();
    let mut helps = Vec::new();
    for cmd in commands.iter().map(|c| vec![c.as_str()]).chain([vec!["audit", "verify"]]) {
        let mut args = cmd.clone();
        args.push("--help");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rollbackd")).args(&args).output().unwrap();
        let help = stdout(&out);
        // Entries of `Arguments:` and `Options:`: the name, then two spaces and what it is.
        let mut in_list = false;
        for line in help.lines() {
            if line.ends_with(':') && !line.starts_with(' ') {
                in_list = line == "Arguments:" || line == "Options:";
                continue;
            }
            let entry = line.trim_start();
            if in_list
                && line.starts_with("  ")
                && (entry.starts_with('-') || entry.starts_with('<') || entry.starts_with('['))
            {
                let described = entry.split("  ").map(str::trim).filter(|p| !p.is_empty()).count() > 1;
                if !described {
                    missing.push(format!("{}: {entry}", cmd.join(" ")));
                }
            }
        }
        helps.push((cmd.join(" "), help));
    }
    assert!(missing.is_empty(), "without a description:\n{}", missing.join("\n"));
    for (cmd, help) in helps.iter().filter(|(c, _)| c == "freeze" || c == "unfreeze") {
        let scope = help.lines().find(|l| l.trim_start().starts_with("<SCOPE>")).unwrap_or_default();
        assert!(scope.contains("`all`"), "{cmd}: {scope}");
    }
}

#[test]
fn every_command_is_in_the_cli_reference() {
    let docs = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cli.md")).unwrap();
    let headings: Vec<&str> = docs.lines().filter(|l| l.starts_with("## ")).collect();
    for cmd in subcommands() {
        let named = format!("rollbackd {cmd}");
        assert!(
            headings.iter().any(|h| h.contains(&format!("`{named} ")) || h.contains(&format!("`{named}`"))),
            "docs/cli.md has no section for `{named}`"
        );
    }
}

/// Every command an on-call engineer acts with has its commands in the runbook, and its index.
#[test]
fn every_acting_command_is_in_the_runbook() {
    let runbook =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/runbook.md")).unwrap();
    let index: String = runbook.lines().take_while(|l| !l.starts_with("## ")).collect::<Vec<_>>().join("\n");
    let known = subcommands();
    for cmd in [
        "rollback", "approve", "cancel", "continue", "abort", "freeze", "unfreeze", "pause", "resume", "release",
        "gate",
    ] {
        assert!(known.iter().any(|k| k == cmd), "`{cmd}` is not a subcommand: {known:?}");
        let named = format!("rollbackd {cmd}");
        let shown = |l: &str| [" ", "`"].iter().any(|end| l.contains(&format!("{named}{end}")));
        assert!(runbook.lines().any(shown), "docs/runbook.md never shows `{named}`");
        assert!(index.contains(&format!("`rollbackd {cmd}")), "the runbook's index does not name `rollbackd {cmd}`");
    }
}

#[test]
fn errors_are_one_line_each_with_one_error_prefix() {
    let w = World::new();
    let original = std::fs::read_to_string(w.config_path()).unwrap();
    // A regex error: what is wrong on one line, no literal `\n`, no second `error:` of the regex crate.
    w.set_policy_text(
        "- name: p\n  match:\n    source: alertmanager\n    matchers: ['service=~\"(\"']\n  target: { service: x, env: y, paths: [a] }\n",
    );
    let check = w.run_cli(&["check"]);
    let said = stdout(&check);
    assert_eq!(check.status.code(), Some(1), "{said}");
    let line = said.lines().find(|l| l.contains("bad matcher")).unwrap_or_else(|| panic!("{said}"));
    assert!(line.ends_with("invalid regular expression: unclosed group"), "{said}");
    assert!(!said.contains("\\n") && line.matches("error:").count() == 1, "{said}");
    let history = w.run_cli(&["history"]);
    let err = stderr(&history);
    assert!(err.contains("unclosed group") && !err.contains("\\n"), "{err}");
    for l in err.lines() {
        assert!(l.matches("error:").count() <= 1, "{err}");
    }
    w.set_policies(&[PolicySpec::new("test-policy")]);

    for extra in ["input:\n  identifier_pattern: \"^[$\"\n", "bogus_field: 1\n"] {
        std::fs::write(w.config_path(), format!("{original}{extra}")).unwrap();
        let out = w.run_cli(&["history"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert_eq!(err.matches("error:").count(), 1, "{err}");
    }
}

/// Two wrong values in one policy item are two errors, each at its own line, not the first one
/// alone; the blanking that finds the second reports nothing of its own making.
#[test]
fn check_reports_every_error_of_a_policy_item_each_at_its_line() {
    let w = World::new();
    w.set_policy_text(
        "- name: p\n  match:\n    source: alertmanager\n  target: { service: x, env: prod, paths: [a] }\n  action:\n    mode: directt\n  guards:\n    cooldown: 5x\n    on_violation: deny\n",
    );
    let check = w.run_cli(&["check", "--offline"]);
    let said = stdout(&check);
    assert_eq!(check.status.code(), Some(1), "{said}");
    let errors: Vec<&str> = said.lines().filter(|l| l.contains("10-test.yaml") && l.contains(": error: ")).collect();
    assert_eq!(errors.len(), 2, "{said}");
    assert!(errors[0].contains("10-test.yaml:6:11: error: unknown variant `directt`"), "{said}");
    assert!(errors[1].contains("10-test.yaml:8:15: error: invalid duration `5x`"), "{said}");
}

/// Two wrong values on one line, in a flow mapping, are two errors, each at its column.
#[test]
fn check_reports_two_wrong_values_on_one_inline_line_each_at_its_column() {
    let w = World::new();
    w.set_policy_text(
        "- name: p\n  match: { source: request }\n  target: { service: x, env: y, paths: [a] }\n  guards: { max_change_age: 2x, cooldown: 1q, on_violation: deny }\n",
    );
    let check = w.run_cli(&["check", "--offline"]);
    let said = stdout(&check);
    assert_eq!(check.status.code(), Some(1), "{said}");
    let errors: Vec<&str> = said.lines().filter(|l| l.contains("10-test.yaml") && l.contains(": error: ")).collect();
    assert_eq!(errors.len(), 2, "{said}");
    assert!(errors[0].contains("10-test.yaml:4:29: error: invalid duration `2x`"), "{said}");
    assert!(errors[1].contains("10-test.yaml:4:43: error: invalid duration `1q`"), "{said}");
}

/// Every route to an unknown channel, and every query without Prometheus, is an error of its
/// own at its line: one run of `check` shows them all, not the first.
#[test]
fn check_reports_every_unknown_route_and_query_without_prometheus_not_the_first() {
    let w = World::new();
    w.set_policy_text(
        "- name: first\n  match: { source: request }\n  target: { service: x, env: y, paths: [a] }\n  notify: [pager]\n\
         - name: second\n  match:\n    source: alertmanager\n  target: { service: x, env: y, paths: [a] }\n  notify:\n    - oncall\n\
         \x20 verify: { within: 5m, query: 'up == 1' }\n",
    );
    let check = w.run_cli(&["check", "--offline"]);
    let said = stdout(&check);
    assert_eq!(check.status.code(), Some(1), "{said}");
    let errors: Vec<&str> = said.lines().filter(|l| l.contains("10-test.yaml") && l.contains(": error: ")).collect();
    assert_eq!(errors.len(), 3, "{said}");
    assert!(errors.iter().any(|l| l.contains("10-test.yaml:4:") && l.contains("`pager`")), "{said}");
    assert!(errors.iter().any(|l| l.contains("10-test.yaml:10:") && l.contains("`oncall`")), "{said}");
    assert!(errors.iter().any(|l| l.contains("verify.query needs `prometheus:")), "{said}");
}

/// A typo in a policy's `notify` route is the policy file's error, at the route's line and
/// column, for `check` and for any command that loads the policies; never `rollbackd.yaml`'s.
#[test]
fn a_notify_route_typo_is_reported_at_its_line_in_the_policy_file() {
    let w = World::new();
    let cfg = std::fs::read_to_string(w.config_path()).unwrap();
    std::fs::write(
        w.config_path(),
        format!("{cfg}notify:\n  channels:\n    oncall: {{ kind: file, path: n.jsonl }}\n"),
    )
    .unwrap();
    w.set_policy_text(
        "- name: first\n  match: { source: request }\n  target: { service: x, env: y, paths: [a] }\n  notify: [oncall]\n\
         - name: second\n  match:\n    source: alertmanager\n  target: { service: x, env: y, paths: [a] }\n  notify:\n    - oncall\n    - oncal\n",
    );
    let check = w.run_cli(&["check", "--offline"]);
    let said = stdout(&check);
    assert_eq!(check.status.code(), Some(1), "{said}");
    let line = said.lines().find(|l| l.contains("oncal`")).unwrap_or_else(|| panic!("{said}"));
    assert!(line.contains("10-test.yaml:11:7: error: policy second: notify names `oncal`"), "{said}");
    assert!(line.contains("(defined: oncall)") && !line.starts_with("rollbackd.yaml"), "{line}");
    let history = w.run_cli(&["history"]);
    let err = stderr(&history);
    assert_eq!(history.status.code(), Some(1), "{err}");
    assert!(err.contains("10-test.yaml:11:7: error: policy second: notify names `oncal`"), "{err}");
    assert!(err.lines().all(|l| l.matches("error:").count() <= 1), "{err}");
}

#[test]
fn an_unset_channel_is_said_once_per_command() {
    let w = World::new();
    let cfg = std::fs::read_to_string(w.config_path()).unwrap();
    std::fs::write(
        w.config_path(),
        format!("{cfg}notify:\n  channels:\n    pager: {{ kind: webhook, url_env: ROLLBACKD_TEST_UNSET_PAGER }}\n"),
    )
    .unwrap();
    // A command that tells the channels says so, once.
    let out = w.run_cli(&["freeze", "checkout", "--reason", "drill"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("pager")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("ROLLBACKD_TEST_UNSET_PAGER"), "{err}");
    // One that only reads tells nobody: not a word.
    for args in [&["history"][..], &["status"], &["explain", "checkout"], &["readiness"]] {
        let out = w.run_cli(args);
        let err = stderr(&out);
        assert!(!err.contains("pager"), "{args:?}: {err}");
    }
}

/// What the audit index walked is kept for the next process, written as the command ends
/// rather than on the way to its push: after a rollback, the cache in `data_dir` is at a head
/// of the branch, and a second command starts from it.
#[test]
fn a_cli_command_leaves_the_audit_cache_for_the_next_one() {
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    let before = w.head();
    let cache = w.root().join("data/audit-cache.json");
    let out = w.run_cli(&["rollback", "checkout", "--env", "prod", "--actor", "alice"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let read = || -> serde_json::Value { serde_json::from_slice(&std::fs::read(&cache).unwrap()).unwrap() };
    let head = read()["head"].as_str().unwrap().to_string();
    assert!(head == before || head == w.head(), "{head}");
    // The next command walks on from there and keeps the rollback it finds.
    let out = w.run_cli(&["history"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let after = read();
    assert_eq!(after["head"].as_str(), Some(w.head().as_str()));
    assert_eq!(after["records"].as_array().map(Vec::len), Some(1), "{after}");
}
