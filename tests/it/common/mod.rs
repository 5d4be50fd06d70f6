//! Test harness: a bare "origin" config repo in a temp dir, the service's own data dir (its
//! mirror), policies written per test, and a clock the test controls. Assertions read the origin
//! with the real `git` binary, independent of the code under test.

#![allow(dead_code, unreachable_pub)]

pub mod fake_github;
pub mod http;
pub mod net;
pub mod openapi;
pub mod procs;
pub mod receiver;
pub mod registry;
pub mod spec;

pub use rollbackd::{Mode, OnViolation, Strategy};
pub use serde_json::json;
pub use spec::{ConfigSpec, PolicySpec, policy_file};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use rollbackd::Config;
use rollbackd::FixedClock;
use rollbackd::Seeder;
use rollbackd::Sha;
use rollbackd::{Engine, Event, Source};

pub const TEMPLATES: &[(&str, &str)] = rollbackd::DEMO_TEMPLATES;

pub struct World {
    pub dir: tempfile::TempDir,
    pub origin: PathBuf,
    pub seed: Seeder,
    pub clock: Arc<FixedClock>,
    /// The commit where checkout/prod last was known-good (1.4.2), before any test deploys.
    pub good: Sha,
}

pub fn manifest(service: &str, env: &str, image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {service}\n  namespace: {env}\nspec:\n  replicas: 2\n  template:\n    spec:\n      containers:\n        - name: {service}\n          image: {image}\n"
    )
}

pub fn image(service: &str, version: &str) -> String {
    format!("registry.example.com/{service}:{version}")
}

/// checkout/prod's canary overlay, for phased rollbacks.
pub const CANARY: &str = "apps/checkout/prod/canary/deployment.yaml";

pub fn path(service: &str, env: &str) -> String {
    format!("apps/{service}/{env}/deployment.yaml")
}

impl World {
    /// checkout and cart in prod and staging at 1.4.2 / 2.0.0, two hours ago.
    pub fn new() -> World {
        Self::with(&[PolicySpec::new("test-policy")])
    }

    pub fn with(policies: &[PolicySpec]) -> World {
        Self::with_policy_text(&policy_file(policies))
    }

    /// Policies as written by hand: for tests about how that text is read.
    pub fn with_policy_text(policies: &str) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let origin = dir.path().join("origin.git");
        let seed = Seeder::init(&origin, "main").expect("init origin");
        let now: Timestamp = "2026-11-21T12:00:00Z".parse().unwrap();
        let clock = Arc::new(FixedClock::new(now));
        let mut files = Vec::new();
        for (service, version) in [("checkout", "1.4.0"), ("cart", "2.0.0")] {
            for env in ["prod", "staging"] {
                files.push((path(service, env), manifest(service, env, &image(service, version))));
            }
        }
        files.push(("README.md".into(), "config repo\n".into()));
        files.push(("shared/versions.yaml".into(), "checkout: 1.4.0\ncart: 2.0.0\n".into()));
        let refs: Vec<(&str, Option<&str>)> = files.iter().map(|(p, t)| (p.as_str(), Some(t.as_str()))).collect();
        let mut w = World { dir, origin, seed, clock, good: Sha(String::new()) };
        w.seed.commit("Initial config", &refs, "platform", w.ago(180)).unwrap();
        w.good = w.deploy("checkout", "prod", "1.4.2", 150);
        w.write_config(&ConfigSpec::new());
        w.set_policy_text(policies);
        w
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.root().join("rollbackd.yaml")
    }

    pub fn write_config(&self, extra: &ConfigSpec) {
        std::fs::write(
            self.config_path(),
            format!(
                "repo:\n  url: origin.git\n  branch: main\ndata_dir: data\npolicies: policies\ntemplates: templates\n{}",
                extra.yaml_lines()
            ),
        )
        .unwrap();
        let t = self.root().join("templates");
        std::fs::create_dir_all(&t).unwrap();
        for (name, text) in TEMPLATES {
            std::fs::write(t.join(name), text).unwrap();
        }
    }

    pub fn set_policies(&self, policies: &[PolicySpec]) {
        self.set_policy_text(&policy_file(policies));
    }

    pub fn set_policy_text(&self, yaml: &str) {
        let p = self.root().join("policies");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("10-test.yaml"), yaml).unwrap();
    }

    pub fn now(&self) -> Timestamp {
        use rollbackd::Clock;
        self.clock.now()
    }

    pub fn ago(&self, minutes: i64) -> Timestamp {
        self.now().checked_sub(SignedDuration::from_mins(minutes)).unwrap()
    }

    /// A deploy commit on the origin, `minutes_ago` old.
    pub fn deploy(&self, service: &str, env: &str, version: &str, minutes_ago: i64) -> Sha {
        let text = manifest(service, env, &image(service, version));
        self.seed
            .commit(
                &format!("Deploy {service} {version} to {env}"),
                &[(&path(service, env), Some(&text))],
                "deploy-bot",
                self.ago(minutes_ago),
            )
            .unwrap()
    }

    pub fn commit_files(&self, message: &str, files: &[(&str, Option<&str>)], minutes_ago: i64) -> Sha {
        self.seed.commit(message, files, "someone", self.ago(minutes_ago)).unwrap()
    }

    pub fn tag_known_good(&self, service: &str, env: &str, at: &Sha, stamp: &str) {
        self.seed.tag(&format!("known-good/{service}/{env}/{stamp}"), at, "healthy", self.ago(100)).unwrap();
    }

    /// An engine as the CLI has one: when it goes, it waits (as the CLI does before it exits)
    /// for the pull requests, comments and notices its writes owe, so a test looks at the forge
    /// after they were sent. `into_inner` is the engine itself, for a writer.
    pub fn engine(&self) -> rollbackd::Session {
        let (config, secrets) = Config::load(&self.config_path()).expect("config");
        rollbackd::Session::new(
            Engine::new(config, secrets, self.clock.clone()).expect("engine"),
            std::time::Duration::from_secs(30),
        )
    }

    /// An engine with its own data dir: another replica of the service.
    pub fn replica(&self, name: &str) -> Engine {
        let (mut config, secrets) = Config::load(&self.config_path()).expect("config");
        // Replicas share one signing key (as from one Kubernetes secret): the first's.
        if config.identity.signing_key_file.is_none() && config.identity.signing_key_env.is_none() {
            config.keys().expect("the first replica's signing key");
            config.identity.signing_key_file = Some(config.data_dir.join("signing_key"));
        }
        config.data_dir = self.root().join(name);
        Engine::new(config, secrets, self.clock.clone()).expect("engine")
    }

    pub fn alert(&self, service: &str, env: &str, fingerprint: &str) -> Event {
        let started = self.ago(5);
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("alertname".to_string(), "HighErrorRate".to_string());
        labels.insert("service".to_string(), service.to_string());
        labels.insert("env".to_string(), env.to_string());
        labels.insert("severity".to_string(), "page".to_string());
        Event {
            source: Source::Alertmanager,
            dedupe_key: format!("{fingerprint}@{started}"),
            labels,
            annotations: [("summary".to_string(), "5xx above 5%".to_string())].into(),
            received_at: self.now(),
            started_at: Some(started),
            requester: None,
            from_fork: false,
        }
    }

    /// `alert`, resolved at `at` as Alertmanager reports it (`endsAt`).
    pub fn resolved(alert: &Event, at: Timestamp) -> rollbackd::parsers::Resolved {
        rollbackd::parsers::Resolved {
            dedupe_key: alert.dedupe_key.clone(),
            labels: alert.labels.clone(),
            started_at: alert.started_at.expect("an alert"),
            resolved_at: Some(at),
        }
    }

    pub fn request(&self, service: &str, env: &str, id: &str) -> Event {
        Event::request(Source::Cli, service, env, "alice", Some("asked in test"), self.now(), id)
    }

    /// A canary for checkout/prod at 1.4.2 (140 minutes ago), then 1.5.0 deployed to it and the
    /// rest of checkout/prod in one commit (10 minutes ago).
    pub fn deploy_checkout_with_canary(&self) {
        self.add_checkout_canary();
        let bad = manifest("checkout", "prod", &image("checkout", "1.5.0"));
        self.commit_files(
            "Deploy checkout 1.5.0 to prod",
            &[(&path("checkout", "prod"), Some(&bad)), (CANARY, Some(&bad))],
            10,
        );
    }

    /// A canary for checkout/prod at 1.4.2, 140 minutes ago.
    pub fn add_checkout_canary(&self) {
        self.commit_files(
            "Add a canary for checkout",
            &[(CANARY, Some(&manifest("checkout", "prod", &image("checkout", "1.4.2"))))],
            140,
        );
    }

    /// A deployment of `sha` to checkout/prod reported successful, as GitHub sends it.
    pub fn deployment_succeeded(&self, sha: &str) -> Event {
        let mut ds = http::fixture("deployment_status.payload.json");
        ds["deployment"]["sha"] = sha.into();
        ds["deployment"]["environment"] = "prod".into();
        ds["deployment"]["payload"] = json!({ "service": "checkout" });
        let body = serde_json::to_vec(&ds).unwrap();
        match rollbackd::parsers::github("deployment_status", &body, &[], self.now()).unwrap() {
            rollbackd::parsers::GithubEvent::DeploymentSucceeded(e) => e,
            other => panic!("{other:?}"),
        }
    }

    pub fn git(&self, args: &[&str]) -> String {
        git_in(&self.origin, args)
    }

    pub fn head(&self) -> String {
        self.git(&["rev-parse", "refs/heads/main"])
    }

    pub fn show(&self, rev: &str, path: &str) -> String {
        self.git(&["show", &format!("{rev}:{path}")])
    }

    pub fn message(&self, rev: &str) -> String {
        self.git(&["log", "-1", "--format=%B", rev])
    }

    pub fn trailers(&self, rev: &str, key: &str) -> Vec<String> {
        let out = self.git(&["log", "-1", &format!("--format=%(trailers:key={key},valueonly)"), rev]);
        out.lines().filter(|l| !l.is_empty()).map(str::to_string).collect()
    }

    /// `git for-each-ref` of a repository: every ref and what it points at.
    pub fn refs_of(&self, repo: &Path) -> String {
        git_in(repo, &["for-each-ref", "--format=%(refname) %(objectname)"])
    }

    pub fn mirror(&self) -> PathBuf {
        self.root().join("data/mirror.git")
    }

    pub fn count_commits(&self) -> usize {
        self.git(&["rev-list", "--count", "refs/heads/main"]).trim().parse().unwrap()
    }

    pub fn run_cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_rollbackd"))
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .env_remove("ROLLBACKD_CONFIG")
            // `check` is offline by default under CI: the tests say which they mean.
            .env_remove("CI")
            .output()
            .expect("run rollbackd")
    }
}

pub fn git_in(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git").arg("--git-dir").arg(repo).args(args).output().expect("git");
    assert!(out.status.success(), "git {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim_end().to_string()
}

/// `git daemon --enable=receive-pack` serving the world's root on a free loopback port; the
/// world's config is pointed at it. Killed on drop.
pub struct Daemon {
    child: std::process::Child,
    pub port: u16,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port for a process a test starts (Prometheus, Alertmanager, a server that is told its
/// port). Taken below the kernel's ephemeral range (32768 and up on Linux), which is where every
/// `bind(":0")` of the tests running beside this one lands: a port handed out here cannot be
/// taken by them between now and the process binding it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed =
        std::process::id() ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    for _ in 0..1000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed).wrapping_add(seed);
        let port = 20_000 + (n % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 20000 and 32000");
}

/// Waits for a condition, polling; panics with `what` after `secs`.
pub fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

pub fn daemon(w: &World) -> Daemon {
    let port = free_port();
    // `git daemon` forks git-daemon and would outlive a kill of the wrapper: run it directly.
    let exec_path = Command::new("git").arg("--exec-path").output().expect("git");
    let git_daemon = std::path::Path::new(String::from_utf8_lossy(&exec_path.stdout).trim()).join("git-daemon");
    let child = Command::new(git_daemon)
        .args(["--reuseaddr", "--export-all", "--enable=receive-pack", "--listen=127.0.0.1"])
        .arg(format!("--port={port}"))
        .arg(format!("--base-path={}", w.root().display()))
        .arg(w.root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("git daemon (part of Debian's git package) must be installed");
    wait_for("git daemon to listen", 20, || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let cfg = std::fs::read_to_string(w.config_path())
        .unwrap()
        .replace("url: origin.git", &format!("url: git://127.0.0.1:{port}/origin.git"));
    std::fs::write(w.config_path(), cfg).unwrap();
    Daemon { child, port }
}

/// Installs an executable hook in the origin.
pub fn hook(w: &World, name: &str, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = w.origin.join("hooks").join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Holds every push to the origin in a pre-receive hook until released: a way to stand between
/// "received" and "pushed" without sleeping. Needs the origin served by [`daemon`] (file-path
/// remotes run no hooks).
pub struct HeldPushes {
    entered: PathBuf,
    release: PathBuf,
}

impl HeldPushes {
    /// Whether a push has reached the hook (and is being held).
    pub fn is_held(&self) -> bool {
        self.entered.exists()
    }

    pub fn wait_until_held(&self) {
        wait_for("a push to reach the hook", 30, || self.is_held());
    }

    pub fn release(&self) {
        std::fs::write(&self.release, "").unwrap();
    }
}

pub fn hold_pushes(w: &World) -> HeldPushes {
    let held = HeldPushes { entered: w.root().join("entered"), release: w.root().join("release") };
    hook(
        w,
        "pre-receive",
        &format!(
            "#!/bin/sh\ntouch {}\nwhile [ ! -f {} ]; do sleep 0.05; done\nexit 0\n",
            held.entered.display(),
            held.release.display()
        ),
    );
    held
}

/// A person's `/rollback ...` from chat, carried out by a fresh engine of the world the way the
/// writer carries out a Slack command. The request id differs per person and text.
pub fn chat_as(w: &World, principal: rollbackd::Principal, text: &str) -> rollbackd::Reply {
    let request = rollbackd::ChatRequest {
        request_id: format!("slack/{}-{}", principal.id.replace(':', "-"), text.len()),
        principal,
        command: rollbackd::parsers::chat_command(text).unwrap().expect("a /rollback command"),
        channel: "slack".into(),
        implied_id: None,
        default_env: "prod".into(),
        asked_at: None,
    };
    rollbackd::execute_chat(&mut w.engine(), &request)
}
