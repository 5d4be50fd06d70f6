//! `readiness` asking registries that want credentials, against the real `docker-registry`:
//! behind htpasswd (Basic, bcrypt), and behind token auth with a token service that mints the
//! JWT the registry checks. With the right credentials it sees an image present or gone; with
//! wrong or none it says the registry refused, and never takes that for "gone".

use std::time::Duration;

use crate::common::registry::{Registry, RegistryAuth, TokenService, readiness_cli};
use crate::common::*;
use rollbackd::Readiness;

const PASSWORD: &str = "correct-horse-battery-7f3a";
const WRONG: &str = "not-the-password-91c2";

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

fn image(r: &Registry, v: &str) -> String {
    format!("{}/acme/checkout:{v}", r.host())
}

/// checkout/prod deployed 1.4.3 then 1.5.0, both from `r`: a rollback needs 1.4.3.
fn world_on(r: &Registry) -> World {
    let w = World::new();
    for (v, ago) in [("1.4.3", 60), ("1.5.0", 10)] {
        let text = manifest("checkout", "prod", &image(r, v));
        w.commit_files(&format!("Deploy checkout {v}"), &[(&path("checkout", "prod"), Some(&text))], ago);
    }
    std::fs::write(w.root().join("registry-password"), format!("{PASSWORD}\n")).unwrap();
    std::fs::write(w.root().join("wrong-password"), format!("{WRONG}\n")).unwrap();
    w
}

/// `registries:` with one entry for `r`, plus `auth` (username, password_file, token_env...).
fn configure(w: &World, r: &Registry, auth: serde_json::Value) {
    let mut entry = json!({ "host": r.host(), "url": r.url(), "timeout": "5s" });
    entry.as_object_mut().unwrap().extend(auth.as_object().unwrap().clone());
    w.write_config(&ConfigSpec::new().set("registries", json!([entry])));
}

fn ask(w: &World, env: Option<&str>) -> Vec<Readiness> {
    w.engine().readiness(Some("checkout"), env, Duration::from_secs(10)).unwrap()
}

fn prod(w: &World) -> Readiness {
    ask(w, Some("prod")).into_iter().next().expect("a row for checkout/prod")
}

fn reasons(r: &Readiness) -> String {
    r.reasons.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// The row says the registry refused, and neither calls the image gone nor leaks `secrets`.
fn refused_not_gone(row: &Readiness, says: &str, secrets: &[&str]) {
    assert!(row.ready, "a refusal is not an obstacle: {}", reasons(row));
    assert!(!reasons(row).contains("image missing"), "{}", reasons(row));
    let unknown = row.images_unknown.join("; ");
    assert!(unknown.contains("refused") && unknown.contains(says), "{unknown}");
    let shown = format!("{row:?} {} {}", row.line(), serde_json::to_string(row).unwrap());
    for s in secrets {
        assert!(!shown.contains(s), "a secret in {shown}");
    }
}

fn gone(row: &Readiness, image: &str) {
    assert!(!row.ready);
    let why = reasons(row);
    assert!(why.contains("image missing") && why.contains(image), "{why}");
    assert!(row.images_unknown.is_empty(), "{:?}", row.images_unknown);
}

#[test]
fn a_registry_behind_htpasswd_is_asked_with_basic_credentials_and_a_refusal_is_not_taken_for_gone() {
    let mut registry = Registry::with_auth(RegistryAuth::Htpasswd(&[("reader", PASSWORD)]));
    registry.push_auth = Some(basic("reader", PASSWORD));
    let w = world_on(&registry);
    // Only the bad version is in the registry: the one a rollback needs is gone.
    registry.push_image("acme/checkout", "1.5.0");

    // No credentials, then wrong ones: the registry refuses, and readiness says so.
    configure(&w, &registry, json!({}));
    refused_not_gone(&prod(&w), "asks for a username and password, and none is configured", &[]);
    configure(&w, &registry, json!({ "username": "reader", "password_file": "wrong-password" }));
    refused_not_gone(&prod(&w), "to the credentials of reader", &[WRONG]);

    // The right ones, from a file beside the config: gone, then back once pushed again.
    configure(&w, &registry, json!({ "username": "reader", "password_file": "registry-password" }));
    gone(&prod(&w), &image(&registry, "1.4.3"));
    registry.push_image("acme/checkout", "1.4.3");
    let row = prod(&w);
    assert!(row.ready && row.images_unknown.is_empty(), "{} {:?}", reasons(&row), row.images_unknown);

    // From an env var, as an operator runs the CLI; the password is in no output.
    configure(&w, &registry, json!({ "username": "reader", "password_env": "ROLLBACKD_TEST_REGISTRY_PASSWORD" }));
    for (password, ready) in [(PASSWORD, true), (WRONG, true)] {
        let out =
            readiness_cli(&w.config_path(), "checkout", "prod", &[("ROLLBACKD_TEST_REGISTRY_PASSWORD", password)]);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json[0]["ready"], ready, "{json}");
        let unknown = json[0]["images_unknown"].to_string();
        assert_eq!(
            password == WRONG,
            unknown.contains("refused the question (401, to the credentials of reader)"),
            "{json}"
        );
        assert!(
            !stdout.contains(password) && !stderr.contains(password),
            "the password was shown:\n{stdout}\n{stderr}"
        );
    }
}

#[test]
fn a_registry_behind_a_token_service_is_asked_with_a_token_fetched_for_its_challenge() {
    let tokens = TokenService::start(&[("reader", PASSWORD, &["acme/checkout"])]);
    let mut registry = Registry::with_auth(RegistryAuth::Token(&tokens));
    registry.push_auth = Some(format!("Bearer {}", tokens.mint("pusher", "acme/checkout", &["pull", "push"])));
    let w = world_on(&registry);
    // checkout/staging too: two images of one repository asked about at once.
    for (v, ago) in [("1.4.2", 70), ("1.5.0", 20)] {
        let text = manifest("checkout", "staging", &image(&registry, v));
        w.commit_files(&format!("Deploy checkout {v} to staging"), &[(&path("checkout", "staging"), Some(&text))], ago);
    }
    registry.push_image("acme/checkout", "1.5.0");
    registry.push_image("acme/checkout", "1.4.2");
    let asked = |user: &str| format!("{user} service={} scope=repository:acme/checkout:pull", tokens.service);

    // Anonymous: the service mints a token granting nothing (no error, as the spec says), and
    // the registry refuses it.
    configure(&w, &registry, json!({}));
    refused_not_gone(
        &prod(&w),
        "to the token its token service gave anonymously: it grants no pull of acme/checkout",
        &[],
    );
    assert_eq!(tokens.requests().last(), Some(&asked("-")));

    // Wrong credentials: the token service itself refuses them.
    configure(&w, &registry, json!({ "username": "reader", "password_file": "wrong-password" }));
    refused_not_gone(&prod(&w), "token service refused the credentials of reader (401)", &[WRONG]);
    assert_eq!(tokens.requests().last(), Some(&asked("401")));

    // The right ones: one token for both questions (kept per registry and scope), and the
    // registry's answers as they are.
    configure(&w, &registry, json!({ "username": "reader", "password_file": "registry-password" }));
    let before = tokens.requests().len();
    let rows = ask(&w, None);
    let row = |env: &str| rows.iter().find(|r| r.env == env).unwrap_or_else(|| panic!("no row for {env}"));
    gone(row("prod"), &image(&registry, "1.4.3"));
    assert!(row("staging").ready && row("staging").images_unknown.is_empty(), "{:?}", row("staging"));
    assert_eq!(tokens.requests()[before..], [asked("reader")], "one token fetched for both images");

    registry.push_image("acme/checkout", "1.4.3");
    let row = prod(&w);
    assert!(row.ready && row.images_unknown.is_empty(), "{} {:?}", reasons(&row), row.images_unknown);
}

#[test]
fn a_ready_token_in_token_env_is_sent_as_it_is_and_its_refusal_is_said_not_taken_for_gone() {
    let tokens = TokenService::start(&[]);
    let mut registry = Registry::with_auth(RegistryAuth::Token(&tokens));
    registry.push_auth = Some(format!("Bearer {}", tokens.mint("pusher", "acme/checkout", &["pull", "push"])));
    let w = world_on(&registry);
    registry.push_image("acme/checkout", "1.5.0");
    configure(&w, &registry, json!({ "token_env": "ROLLBACKD_TEST_REGISTRY_TOKEN" }));
    let run = |token: &str| {
        let out = readiness_cli(&w.config_path(), "checkout", "prod", &[("ROLLBACKD_TEST_REGISTRY_TOKEN", token)]);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!stdout.contains(token) && !stderr.contains(token), "the token was shown:\n{stdout}\n{stderr}");
        let json: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{stdout}\n{stderr}"));
        (out.status.code(), json[0].clone())
    };

    // A token for another repository: refused, said, and the image is not called gone.
    let (code, row) = run(&tokens.mint("ci", "acme/other", &["pull"]));
    assert_eq!(code, Some(0), "{row}");
    assert!(
        row["images_unknown"][0]
            .as_str()
            .is_some_and(|u| u.contains("refused the question (401, to the token in token_env)")),
        "{row}"
    );

    // A token that grants the pull: gone, then there once pushed again.
    let pull = tokens.mint("ci", "acme/checkout", &["pull"]);
    let (code, row) = run(&pull);
    assert_eq!(code, Some(2), "{row}");
    let why = row["reasons"].to_string();
    assert!(why.contains("image missing") && why.contains(&image(&registry, "1.4.3")), "{row}");
    registry.push_image("acme/checkout", "1.4.3");
    let (code, row) = run(&pull);
    assert_eq!((code, &row["ready"]), (Some(0), &json!(true)), "{row}");
    assert_eq!(row.get("images_unknown"), None, "{row}");
    assert!(tokens.requests().is_empty(), "a ready token is sent as it is: {:?}", tokens.requests());
}
