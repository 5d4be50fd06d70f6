//! `rollbackd demo`: a complete, local playground. A bare config repo with two services in two
//! environments, a known-good tag and a bad deploy on top, plus the config, policies and
//! templates to roll it back. Nothing outside the directory is needed.

use std::path::{Path, PathBuf};

use jiff::{SignedDuration, Timestamp};

use crate::git::GitError;
use crate::git::seed::Seeder;

/// The example policies and templates shipped in this repository, embedded so the demo works
/// from the binary alone.
pub const POLICIES: &[(&str, &str)] = &[
    ("10-alerts.yaml", include_str!("../policies/10-alerts.yaml")),
    ("20-gitops.yaml", include_str!("../policies/20-gitops.yaml")),
    ("30-requests.yaml", include_str!("../policies/30-requests.yaml")),
];
pub const TEMPLATES: &[(&str, &str)] = &[
    ("commit.txt.j2", include_str!("../templates/commit.txt.j2")),
    ("tag.txt.j2", include_str!("../templates/tag.txt.j2")),
    ("pr_title.j2", include_str!("../templates/pr_title.j2")),
    ("pr_body.md.j2", include_str!("../templates/pr_body.md.j2")),
    ("notify.txt.j2", include_str!("../templates/notify.txt.j2")),
];

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot write {path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
    #[error(transparent)]
    Git(#[from] GitError),
}

pub struct Demo {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub origin: PathBuf,
    pub alert: PathBuf,
    /// False when an existing demo directory was reused.
    pub created: bool,
}

fn write(path: &Path, text: &str) -> Result<(), DemoError> {
    let io = |cause| DemoError::Io { path: path.to_path_buf(), cause };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::write(path, text).map_err(io)
}

fn deployment(service: &str, env: &str, image: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {service}
  namespace: {env}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{ app: {service} }}
  template:
    metadata:
      labels: {{ app: {service} }}
    spec:
      containers:
        - name: {service}
          image: {image}
          ports: [{{ containerPort: 8080 }}]
"
    )
}

fn digest(seed: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(seed.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The demo's Flux event: checkout 1.5.0's health checks failed in prod.
pub const FLUX_EVENT: &str = "events/checkout-prod-flux-event.json";

/// The `X-Signature` header Flux's `generic-hmac` provider would send with the demo's Flux
/// event, signed with the demo's key: what `rollbackd demo` prints in its curl line.
pub fn flux_signature(dir: &Path) -> Result<String, DemoError> {
    use hmac::Mac;
    let read = |p: PathBuf| std::fs::read(&p).map_err(|cause| DemoError::Io { path: p, cause });
    let key = String::from_utf8_lossy(&read(dir.join("secrets/flux-hmac-keys"))?).trim().to_string();
    let body = read(dir.join(FLUX_EVENT))?;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).map_err(|e| DemoError::Io {
        path: dir.join("secrets/flux-hmac-keys"),
        cause: std::io::Error::other(e.to_string()),
    })?;
    mac.update(&body);
    Ok(format!("sha256={}", mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect::<String>()))
}

/// Creates the demo under `dir`, or reuses it when it is already there.
pub fn create(dir: &Path, now: Timestamp) -> Result<Demo, DemoError> {
    let demo = Demo {
        dir: dir.to_path_buf(),
        config: dir.join("rollbackd.yaml"),
        origin: dir.join("origin.git"),
        alert: dir.join("events/checkout-prod-alert.json"),
        created: !dir.join("rollbackd.yaml").exists(),
    };
    if !demo.created {
        return Ok(demo);
    }
    write_policies(dir)?;
    let bad = seed_history(&demo.origin, now)?;
    write_config(&demo.config)?;
    // A token of the demo's own, and the key Flux's Provider signs with; a real deployment
    // reads both from a Secret.
    let salt = format!("{now}{}", std::process::id());
    write_secret(&dir.join("secrets/alertmanager-tokens"), &format!("demo-{}\n", &digest(&salt)[..24]))?;
    write_secret(&dir.join("secrets/flux-hmac-keys"), &format!("{}\n", &digest(&format!("flux{salt}"))[..40]))?;
    let at = |minutes_ago: i64| now.checked_sub(SignedDuration::from_mins(minutes_ago)).unwrap_or(now);
    write_flux_event(dir, at(4), &bad)?;
    write_alerts(dir, at(5))?;
    Ok(demo)
}

/// The shipped policies and templates, and the schemas their first lines point editors at.
fn write_policies(dir: &Path) -> Result<(), DemoError> {
    for (name, text) in POLICIES {
        write(&dir.join("policies").join(name), text)?;
    }
    for (name, text) in TEMPLATES {
        write(&dir.join("templates").join(name), text)?;
    }
    // What the files' `# yaml-language-server: $schema=` lines point at, for an editor.
    for (name, schema) in [("config", crate::support::schema::config()), ("policy", crate::support::schema::policy())] {
        let text = serde_json::to_string_pretty(&schema).unwrap_or_default();
        write(&dir.join("docs").join("schemas").join(format!("{name}.schema.json")), &format!("{text}\n"))?;
    }
    Ok(())
}

/// The config repo's history: checkout and cart deployed over five hours, checkout 1.4.2
/// tagged known-good, and the bad deploy (checkout 1.5.0 to prod, returned) twenty minutes ago.
fn seed_history(origin: &Path, now: Timestamp) -> Result<crate::domain::plan::Sha, DemoError> {
    let seed = Seeder::init(origin, "main")?;
    let at = |minutes_ago: i64| now.checked_sub(SignedDuration::from_mins(minutes_ago)).unwrap_or(now);
    let checkout = |v: &str| format!("registry.example.com/acme/checkout:{v}");
    let cart = |v: &str| format!("registry.example.com/acme/cart:{v}@sha256:{}", digest(v));
    let files: Vec<(String, String)> = vec![
        ("apps/checkout/prod/deployment.yaml".into(), deployment("checkout", "prod", &checkout("1.4.0"), 4)),
        ("apps/checkout/staging/deployment.yaml".into(), deployment("checkout", "staging", &checkout("1.4.0"), 1)),
        ("apps/cart/prod/deployment.yaml".into(), deployment("cart", "prod", &cart("2.2.0"), 3)),
        // cart runs a canary in prod: the shape `slo-immediate-canary` rolls back in phases.
        ("apps/cart/prod/canary/deployment.yaml".into(), deployment("cart-canary", "prod", &cart("2.2.0"), 1)),
        ("apps/cart/staging/deployment.yaml".into(), deployment("cart", "staging", &cart("2.2.0"), 1)),
        (
            "README.md".into(),
            "# Config repo\n\nManifests deployed by the GitOps controller. Managed by CI and rollbackd.\n".into(),
        ),
    ];
    let refs: Vec<(&str, Option<&str>)> = files.iter().map(|(p, t)| (p.as_str(), Some(t.as_str()))).collect();
    seed.commit("Initial config: checkout and cart in prod and staging", &refs, "Platform Team", at(300))?;
    let deploy = |msg: &str, path: &str, text: String, minutes: i64| -> Result<crate::domain::plan::Sha, DemoError> {
        Ok(seed.commit(msg, &[(path, Some(text.as_str()))], "deploy-bot", at(minutes))?)
    };
    deploy(
        "Deploy checkout 1.4.2 to staging",
        "apps/checkout/staging/deployment.yaml",
        deployment("checkout", "staging", &checkout("1.4.2"), 1),
        240,
    )?;
    let good = deploy(
        "Deploy checkout 1.4.2 to prod",
        "apps/checkout/prod/deployment.yaml",
        deployment("checkout", "prod", &checkout("1.4.2"), 4),
        200,
    )?;
    seed.tag("known-good/checkout/prod/20261121T080000Z", &good, "checkout 1.4.2 healthy in prod for 1h", at(140))?;
    deploy(
        "Deploy cart 2.3.0 to prod",
        "apps/cart/prod/deployment.yaml",
        deployment("cart", "prod", &cart("2.3.0"), 3),
        90,
    )?;
    deploy(
        "Deploy checkout 1.5.0 to staging",
        "apps/checkout/staging/deployment.yaml",
        deployment("checkout", "staging", &checkout("1.5.0"), 1),
        60,
    )?;
    let bad = deploy(
        "Deploy checkout 1.5.0 to prod",
        "apps/checkout/prod/deployment.yaml",
        deployment("checkout", "prod", &checkout("1.5.0"), 4),
        20,
    )?;

    Ok(bad)
}

fn write_config(path: &Path) -> Result<(), DemoError> {
    write(
        path,
        r#"# yaml-language-server: $schema=docs/schemas/config.schema.json
# rollbackd demo configuration; every field is described in docs/configuration.md.
repo:
  url: origin.git        # the bare config repo next to this file
  branch: main
data_dir: data           # rollbackd's own mirror lives here
policies: policies
templates: templates
identity: { name: rollbackd, email: rollbackd@localhost }
listen: 127.0.0.1:8080
sources:
  alertmanager:
    bearer_tokens_file: secrets/alertmanager-tokens
  # Flux's notification-controller, provider generic-hmac (docs/setup-flux.md).
  flux:
    hmac_secrets_file: secrets/flux-hmac-keys
# The route the policies tell every state of an incident to. Here a file, so the demo needs no
# network: each notice is one JSON line of notices.jsonl. Point it at your pager or chat instead
# (`kind: webhook`, `slack_webhook`, `slack_api`; docs/configuration.md#notifications).
notify:
  channels:
    oncall: { kind: file, path: notices.jsonl }
# Where policies/30-requests.yaml's `verify.query` is asked (a rollback people asked for has no
# alert to resolve). Without a Prometheus here the verdict is `unverified`, and `check` says the
# query was not tried; point it at yours.
prometheus: { url: "http://127.0.0.1:9090" }
# Who is in the groups and teams policies/30-requests.yaml names (rollbackd cannot ask Slack or
# GitHub); replace the example members with yours.
directory:
  slack_groups:
    S0SRE: [U0EXAMPLE1]
    S0INCIDENT: [U0EXAMPLE1]
  github_teams:
    acme/sre: [example-sre]
"#,
    )?;
    Ok(())
}

/// A secret file readable by its owner only, as a mounted Secret would be.
fn write_secret(path: &Path, text: &str) -> Result<(), DemoError> {
    write(path, text)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|cause| DemoError::Io { path: path.to_path_buf(), cause })?;
    }
    Ok(())
}

fn write_flux_event(dir: &Path, at: Timestamp, bad: &crate::domain::plan::Sha) -> Result<(), DemoError> {
    // What kustomize-controller reports when checkout 1.5.0's health checks fail in prod
    // (fluxcd/pkg runtime/events Event; `service` and `env` come from the Alert's eventMetadata).
    write(
        &dir.join(FLUX_EVENT),
        &serde_json::json!({
            "involvedObject": {"kind": "Kustomization", "namespace": "flux-system", "name": "checkout-prod",
                "apiVersion": "kustomize.toolkit.fluxcd.io/v1"},
            "severity": "error",
            "timestamp": at.round(jiff::Unit::Second).unwrap_or(at).to_string(),
            "message": "Health check failed after 2m0s: timeout waiting for: [Deployment/prod/checkout status: 'InProgress']",
            "reason": "HealthCheckFailed",
            "metadata": {"revision": format!("main@sha1:{}", bad.0), "service": "checkout", "env": "prod"},
            "reportingController": "kustomize-controller",
            "reportingInstance": "kustomize-controller-5f7c9b8d6-x2k4q"
        })
        .to_string(),
    )?;
    Ok(())
}

/// The notifications Alertmanager would send for checkout's error rate, in prod and staging.
fn write_alerts(dir: &Path, started: Timestamp) -> Result<(), DemoError> {
    for (env, fingerprint, file) in [
        ("prod", "3f6a2b1c9d8e7f60", "checkout-prod-alert.json"),
        ("staging", "7c1d9e2f4a6b8c05", "checkout-staging-alert.json"),
    ] {
        let severity = if env == "prod" { "page" } else { "ticket" };
        write(
            &dir.join("events").join(file),
            &serde_json::to_string_pretty(&serde_json::json!({
                "version": "4",
                "groupKey": "{}:{alertname=\"CheckoutErrorRate\"}",
                "truncatedAlerts": 0,
                "status": "firing",
                "receiver": "rollbackd",
                "groupLabels": {"alertname": "CheckoutErrorRate"},
                "commonLabels": {"alertname": "CheckoutErrorRate", "service": "checkout", "env": env, "severity": severity},
                "commonAnnotations": {},
                "externalURL": "http://alertmanager.example.com",
                "alerts": [{
                    "status": "firing",
                    "labels": {"alertname": "CheckoutErrorRate", "service": "checkout", "env": env, "severity": severity},
                    "annotations": {"summary": format!("checkout 5xx rate above 5% for 5m in {env}")},
                    "startsAt": started.to_string(),
                    "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "http://prometheus.example.com/graph",
                    "fingerprint": fingerprint
                }]
            }))
            .unwrap_or_default(),
        )?;
    }
    Ok(())
}
