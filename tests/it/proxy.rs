//! Outbound through the proxy the environment names: git and the GitHub API go through
//! `HTTPS_PROXY` / `HTTP_PROXY`, and `NO_PROXY` keeps a host direct. The names `git.test` and
//! `github.test` resolve only in the proxy, so a request that bypassed it could not succeed.
//! The origin is served over smart HTTP by the real `git http-backend`.

use std::collections::HashMap;
use std::process::Command;

use crate::common::fake_github::{FakeGithub, TOKEN};
use crate::common::net::{Proxy, SmartHttp, TlsFront};
use crate::common::*;

/// `rollbackd rollback <service> --env prod` with only the given proxy variables set.
fn rollback(w: &World, service: &str, env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rollbackd"));
    cmd.arg("--config").arg(w.config_path()).args(["rollback", service, "--env", "prod", "--actor", "ops"]);
    for var in
        ["http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"]
    {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied()).env_remove("CI").output().unwrap()
}

fn point_at(w: &World, repo_url: &str, api_url: &str) {
    w.write_config(&ConfigSpec::new().github_forge(api_url, "gh-token").set("git.fetch_freshness", "0s"));
    let cfg = std::fs::read_to_string(w.config_path()).unwrap().replace("url: origin.git", &format!("url: {repo_url}"));
    std::fs::write(w.config_path(), cfg).unwrap();
}

#[test]
fn git_and_github_go_through_the_environments_proxy_and_no_proxy_is_honoured() {
    let w = World::with(&[PolicySpec::new("prod").mode(Mode::PullRequest)]);
    w.deploy("checkout", "prod", "1.5.0", 10);
    w.deploy("cart", "prod", "2.1.0", 10);
    std::fs::write(w.root().join("gh-token"), TOKEN).unwrap();
    let git = SmartHttp::start(w.root().to_path_buf());
    let gh = FakeGithub::start(w.origin.clone());
    let gh_port: u16 = gh.url.rsplit(':').next().unwrap().parse().unwrap();
    let names = [("git.test", git.addr.port()), ("github.test", gh_port)];
    let proxy = Proxy::start(names.iter().map(|(n, p)| (n.to_string(), *p)).collect::<HashMap<_, _>>());
    let via_proxy = [("HTTP_PROXY", proxy.url.as_str()), ("HTTPS_PROXY", proxy.url.as_str())];
    let said = |o: &std::process::Output| {
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
    };

    // The GitHub API: the pull request is opened through the proxy (github.test resolves
    // nowhere else).
    point_at(&w, "origin.git", "http://github.test");
    let out = rollback(&w, "checkout", &via_proxy);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert_eq!(gh.prs().len(), 1, "the pull request was opened through the proxy");
    assert!(proxy.seen().iter().any(|s| s.ends_with(" github.test")), "{:?}", proxy.seen());

    // git: an https origin is reached through a CONNECT tunnel. (The proxy has no certificate
    // for git.test, so the TLS handshake beyond it fails: what counts is that git asked it.)
    point_at(&w, "https://git.test/origin.git", "http://github.test");
    let out = rollback(&w, "cart", &via_proxy);
    assert_eq!(out.status.code(), Some(3), "{}", said(&out));
    assert!(proxy.seen().iter().any(|s| s == "CONNECT git.test"), "{:?}", proxy.seen());
    // NO_PROXY names it: git goes direct, and git.test resolves nowhere.
    let before = proxy.seen().len();
    let out = rollback(&w, "cart", &[via_proxy[0], via_proxy[1], ("NO_PROXY", "git.test,github.test")]);
    assert_eq!(out.status.code(), Some(3), "{}", said(&out));
    assert!(said(&out).contains("failed to resolve address for git.test"), "{}", said(&out));
    assert_eq!(proxy.seen().len(), before, "{:?}", proxy.seen());

    // Direct to both, as NO_PROXY says: a whole rollback over smart HTTP (the fetch and the
    // compare-and-swap push by `git http-backend`) and the API, none of it through the proxy.
    point_at(&w, &format!("http://{}/origin.git", git.addr), &gh.url);
    let out = rollback(&w, "cart", &[via_proxy[0], via_proxy[1], ("NO_PROXY", "127.0.0.1")]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert_eq!(gh.prs().len(), 2);
    assert_eq!(proxy.seen().len(), before, "{:?}", proxy.seen());
    let served = git.requests.lock().unwrap().clone();
    assert!(served.iter().any(|r| r == "GET /origin.git/info/refs?service=git-upload-pack"), "{served:?}");
    assert!(served.iter().any(|r| r == "POST /origin.git/git-receive-pack"), "the push: {served:?}");
    let branch = &gh.prs()[1].head;
    assert!(!w.git(&["rev-parse", &format!("refs/heads/{branch}")]).is_empty());
    gh.finish();
}

/// The round trips of one rollback to an origin across the network: the token goes with the
/// first request (never a 401 first), and the compare-and-swap push is one push, two requests.
#[test]
fn a_rollback_over_smart_http_sends_its_token_at_once_and_pushes_in_two_requests() {
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    w.deploy("cart", "prod", "2.1.0", 10);
    let git = SmartHttp::with_token(w.root().to_path_buf(), Some("origin-token"));
    let cfg = std::fs::read_to_string(w.config_path()).unwrap().replace(
        "url: origin.git\n  branch: main\n",
        &format!("url: http://{}/origin.git\n  branch: main\n  token_env: GIT_TOKEN\n", git.addr),
    );
    std::fs::write(w.config_path(), cfg).unwrap();
    let run = |service: &str| {
        Command::new(env!("CARGO_BIN_EXE_rollbackd"))
            .arg("--config")
            .arg(w.config_path())
            .args(["rollback", service, "--env", "prod", "--actor", "ops"])
            .env("GIT_TOKEN", "origin-token")
            .env_remove("CI")
            .output()
            .unwrap()
    };
    let out = run("checkout");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let before = git.requests.lock().unwrap().len();
    let out = run("cart");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(w.trailers("main", "Rollback-Service"), ["cart"]);
    let served = git.requests.lock().unwrap()[before..].to_vec();
    assert!(served.iter().all(|r| !r.starts_with("401")), "a request without the token: {served:?}");
    let push: Vec<&String> = served.iter().filter(|r| r.contains("receive-pack")).collect();
    assert_eq!(
        push,
        ["GET /origin.git/info/refs?service=git-receive-pack", "POST /origin.git/git-receive-pack"],
        "{served:?}"
    );
}

/// The origin takes the push and its answer is lost on the way (a proxy timing out, a cut
/// connection): the next fetch tells rollbackd its commit is there, so it answers "rolled
/// back" instead of an error the sender would retry into "duplicate".
#[test]
fn a_push_whose_answer_was_lost_is_known_by_the_next_fetch() {
    let w = World::new();
    w.deploy("checkout", "prod", "1.5.0", 10);
    let git = SmartHttp::start(w.root().to_path_buf());
    let cfg = std::fs::read_to_string(w.config_path())
        .unwrap()
        .replace("url: origin.git", &format!("url: http://{}/origin.git", git.addr));
    std::fs::write(w.config_path(), cfg).unwrap();
    let mut engine = w.engine();
    engine.repo().fetch_now().unwrap();
    git.lose_answers.store(1, std::sync::atomic::Ordering::SeqCst);
    let report = engine.handle(&w.alert("checkout", "prod", "fplost"), &rollbackd::Options::default()).unwrap();
    let rollbackd::Outcome::RolledBack { rollback } = report.outcome else { panic!("{:?}", report.outcome) };
    assert_eq!(git.lose_answers.load(std::sync::atomic::Ordering::SeqCst), 0, "the answer was lost");
    assert_eq!(w.head(), rollback.commit.0, "the commit the origin took is the one answered");
    assert_eq!(w.trailers("main", "Rollback-Id"), std::slice::from_ref(&rollback.id.0));
    let tag = rollback.tag.unwrap();
    assert_eq!(w.git(&["rev-parse", &format!("refs/tags/{tag}^{{commit}}")]), rollback.commit.0);

    // A push the origin refused is still an error: nothing is taken for written.
    w.deploy("cart", "prod", "2.1.0", 5);
    hook(&w, "pre-receive", "#!/bin/sh\nexit 1\n");
    let err = engine.handle(&w.alert("cart", "prod", "fprefused"), &rollbackd::Options::default());
    assert!(err.is_err(), "{err:?}");
    assert_eq!(w.trailers("main", "Rollback-Service"), Vec::<String>::new(), "nothing on the branch for cart");
}

/// An https origin. The binary starts libgit2 without parsing the CA bundle (most commands
/// never need it) and loads it when an https origin is first used: the certificates the
/// environment names are what verify the origin, and a certificate they do not hold is refused
/// before anything is written.
#[test]
fn an_https_origin_is_verified_with_the_ca_certificates_the_environment_names() {
    let w = World::with(&[PolicySpec::new("prod")]);
    w.deploy("checkout", "prod", "1.5.0", 10);
    let git = SmartHttp::start(w.root().to_path_buf());
    let tls = TlsFront::start(git.addr, w.root());
    w.write_config(&ConfigSpec::new().set("git.fetch_freshness", "0s"));
    let url = format!("https://127.0.0.1:{}/origin.git", tls.addr.port());
    let cfg = std::fs::read_to_string(w.config_path()).unwrap().replace("url: origin.git", &format!("url: {url}"));
    std::fs::write(w.config_path(), cfg).unwrap();
    let said = |o: &std::process::Output| {
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
    };
    let before = w.head();

    // The system's certificates do not hold the origin's: refused, nothing written.
    let system = std::env::var("SSL_CERT_FILE").unwrap_or_else(|_| "/etc/ssl/certs/ca-certificates.crt".into());
    let out = rollback(&w, "checkout", &[("SSL_CERT_FILE", system.as_str())]);
    assert_eq!(out.status.code(), Some(3), "{}", said(&out));
    assert!(said(&out).to_lowercase().contains("certificate"), "{}", said(&out));
    assert_eq!(w.head(), before);

    // Trusted as the environment says: the fetch and the push go over TLS.
    let ca = tls.ca_file.to_str().unwrap();
    let out = rollback(&w, "checkout", &[("SSL_CERT_FILE", ca)]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert_ne!(w.head(), before);
    let message = w.git(&["log", "-1", "--format=%B", "refs/heads/main"]);
    assert!(message.contains("Rollback-Service: checkout"), "{message}");
    let served = git.requests.lock().unwrap().clone();
    assert!(served.iter().any(|r| r == "POST /origin.git/git-receive-pack"), "the push: {served:?}");
}
