//! Flux and Argo CD as triggers, through `rollbackd serve`: signed (Flux, `X-Signature` as
//! notification-controller's `generic-hmac` provider writes it) and bearer-authenticated (Argo
//! CD) events against a real bare origin. The event's revision bounds the blame: later commits
//! the controller has not applied are never named in `Rollback-Of`.

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::serve::{Serve, agent, rollback_commits, serve};
use crate::common::*;
use rollbackd::Sha;

const FLUX_KEYS: [&str; 2] = ["old-flux-key", "7152fed34dd6149a7c75a276c510da27cb6f82b0"];
const ARGO_TOKEN: &str = "argo-token-1";

/// Both sources, and a small body limit (8 KiB) so an oversized event is cheap to send.
fn with_controller_sources(w: &World) {
    std::fs::write(w.root().join("flux-keys"), FLUX_KEYS.join("\n")).unwrap();
    std::fs::write(w.root().join("argo-tokens"), format!("{ARGO_TOKEN}\n")).unwrap();
    let cfg = std::fs::read_to_string(w.config_path()).unwrap();
    std::fs::write(
        w.config_path(),
        format!(
            "{cfg}server: {{ body_limit: 8192 }}\nsources:\n  flux:\n    hmac_secrets_file: flux-keys\n  argocd:\n    bearer_tokens_file: argo-tokens\n"
        ),
    )
    .unwrap();
}

/// A policy for the Flux Kustomization and the Argo CD Application of checkout in prod.
fn controller_policy(strategy: &str) -> PolicySpec {
    PolicySpec::new("gitops")
        .matchers(&[r#"sha=~".+""#])
        .target("checkout", "prod", &["apps/checkout/prod/**"])
        .set("action.strategy", strategy)
}

/// The Event of fluxcd/pkg runtime/events, fields in the order Go's `json.Marshal` writes them.
fn flux_event(severity: &str, reason: &str, revision_key: &str, revision: &str, extra: serde_json::Value) -> String {
    let now = jiff::Timestamp::now().round(jiff::Unit::Second).unwrap();
    flux_event_at(now, severity, reason, revision_key, revision, extra)
}

/// [`flux_event`] with its `timestamp` at `at` (an engine test's clock).
fn flux_event_at(
    at: jiff::Timestamp,
    severity: &str,
    reason: &str,
    revision_key: &str,
    revision: &str,
    extra: serde_json::Value,
) -> String {
    let mut metadata = serde_json::Map::new();
    metadata.insert(revision_key.into(), json!(revision));
    if let serde_json::Value::Object(m) = extra {
        metadata.extend(m);
    }
    format!(
        r#"{{"involvedObject":{{"kind":"Kustomization","namespace":"flux-system","name":"checkout-prod","uid":"7d0cdc51-ddcf-4743-b223-83ca5c699632","apiVersion":"kustomize.toolkit.fluxcd.io/v1","resourceVersion":"91234"}},"severity":"{severity}","timestamp":"{}","message":"Health check failed after 2m0s: timeout waiting for: [Deployment/prod/checkout status: 'InProgress']","reason":"{reason}","metadata":{},"reportingController":"kustomize-controller","reportingInstance":"kustomize-controller-5f7c9b8d6-x2k4q"}}"#,
        at,
        serde_json::Value::Object(metadata)
    )
}

fn hmac_hex(key: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

fn post(url: &str, headers: &[(&str, String)], body: &str) -> (u16, serde_json::Value) {
    let mut req = agent().post(url).header("Content-Type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    let mut r = req.send(body).unwrap();
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
}

/// Posts a Flux event signed with `key`, as notification-controller does.
fn post_flux(s: &Serve, key: &str, body: &str) -> (u16, serde_json::Value) {
    post(
        &format!("{}/webhooks/flux", s.url),
        &[
            ("X-Signature", format!("sha256={}", hmac_hex(key, body.as_bytes()))),
            ("gotk-component", "kustomize-controller".into()),
        ],
        body,
    )
}

fn post_argo(s: &Serve, token: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    post(&format!("{}/webhooks/argocd", s.url), &[("Authorization", format!("Bearer {token}"))], &body.to_string())
}

/// checkout's bad deploy (the revision the controller applied), then a later change to
/// checkout's paths the controller has not applied yet.
fn bad_then_later(w: &World) -> (Sha, Sha) {
    let bad = w.deploy("checkout", "prod", "1.5.0", 10);
    let later = w.commit_files(
        "Scale checkout in prod",
        &[(
            "apps/checkout/prod/hpa.yaml",
            Some("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nspec:\n  maxReplicas: 8\n"),
        )],
        5,
    );
    (bad, later)
}

fn rollback_of(w: &World) -> Vec<String> {
    w.trailers("main", "Rollback-Of")
}

#[test]
fn a_signed_flux_failure_reverts_exactly_its_revision_and_keeps_the_later_change() {
    let w = World::with(&[controller_policy("revert")]);
    with_controller_sources(&w);
    let (bad, later) = bad_then_later(&w);
    let s = serve(&w, "data");
    let body = flux_event("error", "HealthCheckFailed", "revision", &format!("main@sha1:{}", bad.0), json!({}));

    // Wrong key, no signature, a body changed after signing: 401, nothing read further.
    let before = w.head();
    assert_eq!(post_flux(&s, "not-the-key", &body).0, 401);
    let (st, _) = post(&format!("{}/webhooks/flux", s.url), &[], &body);
    assert_eq!(st, 401);
    let sig = format!("sha256={}", hmac_hex(FLUX_KEYS[1], body.as_bytes()));
    let (st, _) = post(&format!("{}/webhooks/flux", s.url), &[("X-Signature", sig)], &body.replace("error", "info"));
    assert_eq!(st, 401);
    // Signed but malformed: 400 with the reason. Oversized: 413.
    let (st, said) = post_flux(&s, FLUX_KEYS[1], r#"{"severity":"error"}"#);
    assert_eq!(st, 400);
    assert!(said["error"].as_str().unwrap().contains("involvedObject"), "{said}");
    let huge = format!(r#"{{"pad":"{}"}}"#, "x".repeat(8192));
    assert_eq!(post_flux(&s, FLUX_KEYS[1], &huge).0, 413);
    assert_eq!(w.head(), before, "nothing written");

    // Signed with the second key (rotation): rolled back.
    let (st, said) = post_flux(&s, FLUX_KEYS[1], &body);
    assert_eq!(st, 200, "{said}");
    assert_eq!(said["outcome"], "rolled_back", "{said}");
    assert_eq!(rollback_of(&w), [bad.0.as_str()], "only the applied revision is blamed");
    assert_eq!(w.git(&["rev-parse", "main^"]), later.0);
    assert!(w.show("main", "apps/checkout/prod/deployment.yaml").contains("1.4.2"));
    assert!(w.show("main", "apps/checkout/prod/hpa.yaml").contains("maxReplicas: 8"), "the later change is kept");
    let trigger = format!("flux:Kustomization/flux-system/checkout-prod/{}/HealthCheckFailed", bad.0);
    assert_eq!(w.trailers("main", "Rollback-Trigger"), [trigger]);
    let message = w.message("main");
    assert!(
        message.contains("Kept: changes after the revision the controller applied") && message.contains(&later.0[..10]),
        "{message}"
    );

    // Flux reports the failure again (and again, with the older metadata key and revision form):
    // one incident, one commit.
    let (st, said) = post_flux(&s, FLUX_KEYS[0], &body);
    assert_eq!((st, said["outcome"].as_str()), (200, Some("duplicate")), "{said}");
    let older = flux_event(
        "error",
        "HealthCheckFailed",
        "kustomize.toolkit.fluxcd.io/revision",
        &format!("main/{}", bad.0),
        json!({}),
    );
    let (st, said) = post_flux(&s, FLUX_KEYS[1], &older);
    assert_eq!((st, said["outcome"].as_str()), (200, Some("duplicate")), "{said}");
    assert_eq!(rollback_commits(&w), 1);
}

#[test]
fn a_restore_bounded_by_the_revision_undoes_the_later_change_too_and_says_so() {
    let w = World::with(&[controller_policy("restore")]);
    with_controller_sources(&w);
    let (bad, later) = bad_then_later(&w);
    let s = serve(&w, "data");
    let body = flux_event("error", "ReconciliationFailed", "revision", &format!("main@sha1:{}", bad.0), json!({}));
    let (st, said) = post_flux(&s, FLUX_KEYS[0], &body);
    assert_eq!((st, said["outcome"].as_str()), (200, Some("rolled_back")), "{said}");
    assert_eq!(rollback_of(&w), [bad.0.as_str()], "the later change is undone, not blamed");
    assert_eq!(w.git(&["ls-tree", "--name-only", "main", "apps/checkout/prod/"]), "apps/checkout/prod/deployment.yaml");
    let message = w.message("main");
    assert!(message.contains("Also undone, not blamed") && message.contains(&later.0[..10]), "{message}");
}

#[test]
fn argo_cd_degraded_rolls_back_and_other_repos_unknown_revisions_and_bad_tokens_write_nothing() {
    let w = World::with(&[controller_policy("revert")]);
    with_controller_sources(&w);
    let (bad, _later) = bad_then_later(&w);
    let s = serve(&w, "data");
    let origin = std::fs::canonicalize(&w.origin).unwrap().display().to_string();
    let notification = |revision: &str, repo: &str, health: &str| {
        json!({
            "app": "checkout-prod", "project": "default", "revision": revision, "health": health,
            "sync": "Synced", "phase": "Succeeded", "path": "apps/checkout/prod", "repo": repo,
            "message": "successfully synced (all tasks run)"
        })
    };
    let before = w.head();
    assert_eq!(post_argo(&s, "wrong", &notification(&bad.0, &origin, "Degraded")).0, 401);
    let (st, said) =
        post(&format!("{}/webhooks/argocd", s.url), &[("Authorization", format!("Bearer {ARGO_TOKEN}"))], "{");
    assert_eq!(st, 400, "{said}");

    let other =
        post_argo(&s, ARGO_TOKEN, &notification(&bad.0, "https://github.com/acme/other-deploy.git", "Degraded"));
    assert_eq!((other.0, other.1["outcome"].as_str()), (200, Some("ignored")), "{}", other.1);
    assert!(other.1["reason"].as_str().unwrap().contains("not a config repo"), "{}", other.1);

    let unknown = "0123456789abcdef0123456789abcdef01234567";
    let (st, said) = post_argo(&s, ARGO_TOKEN, &notification(unknown, &origin, "Degraded"));
    assert_eq!(st, 422, "{said}");
    assert!(said["reason"].as_str().unwrap().contains("not a commit of branch main"), "{said}");
    assert_eq!(w.head(), before, "nothing written for a refused event");

    let (st, said) = post_argo(&s, ARGO_TOKEN, &notification(&bad.0, &format!("file://{origin}"), "Degraded"));
    assert_eq!((st, said["outcome"].as_str()), (200, Some("rolled_back")), "{said}");
    assert_eq!(rollback_of(&w), [bad.0.as_str()]);
    assert_eq!(w.trailers("main", "Rollback-Trigger"), [format!("argocd:checkout-prod/{}/degraded", bad.0)]);
    let (st, said) = post_argo(&s, ARGO_TOKEN, &notification(&bad.0, &origin, "Degraded"));
    assert_eq!((st, said["outcome"].as_str()), (200, Some("duplicate")), "{said}");
    assert_eq!(rollback_commits(&w), 1);
}

#[test]
fn a_rollback_is_verified_when_flux_reports_a_revision_containing_it_applied_and_healthy() {
    let policy = controller_policy("revert").set("verify", json!({ "within": "10m", "deploy_time": "0s" }));
    let w = World::with(&[policy]);
    with_controller_sources(&w);
    let (bad, _later) = bad_then_later(&w);
    let s = serve(&w, "data");
    let failed = flux_event("error", "HealthCheckFailed", "revision", &format!("main@sha1:{}", bad.0), json!({}));
    let (st, said) = post_flux(&s, FLUX_KEYS[1], &failed);
    assert_eq!((st, said["outcome"].as_str()), (200, Some("rolled_back")), "{said}");
    let rollback = w.head();
    let note = || verification_note(&w, &rollback);
    // The controller applying an older revision verifies nothing.
    let healthy_old =
        flux_event("info", "ReconciliationSucceeded", "revision", &format!("main@sha1:{}", bad.0), json!({}));
    assert_eq!(post_flux(&s, FLUX_KEYS[1], &healthy_old).0, 200);
    assert!(note().is_none(), "not verified by a revision without the rollback");

    let healthy =
        flux_event("info", "ReconciliationSucceeded", "revision", &format!("main@sha1:{rollback}"), json!({}));
    // Another Kustomization healthy at that revision says nothing about checkout's.
    let (st, said) = post_flux(&s, FLUX_KEYS[1], &healthy.replace("checkout-prod", "cart-prod"));
    assert_eq!(st, 200, "{said}");
    assert!(!said["reason"].as_str().unwrap().contains("reached the cluster"), "{said}");
    assert!(note().is_none(), "not verified by another object");
    let (st, said) = post_flux(&s, FLUX_KEYS[1], &healthy);
    assert_eq!(st, 200, "{said}");
    assert!(said["reason"].as_str().unwrap().contains("reached the cluster"), "{said}");
    wait_for("the verification note on the origin", 60, || {
        note().is_some_and(|n| n.contains("Verification: verified"))
    });
    let n = note().unwrap();
    assert!(n.contains("Applied-At: ") && n.contains("reached the cluster"), "{n}");
}

/// deploy/argocd/notifications-cm.yaml is what Argo CD Notifications reads: a webhook service
/// pointing at `/webhooks/argocd` with the bearer token from the secret, the template's body
/// naming every key rollbackd reads, and the triggers sending to it. Its body, rendered as
/// `toJson` renders each value, is accepted by rollbackd's parser as the event it describes.
#[test]
fn the_shipped_argo_cd_configmap_sends_what_rollbackd_reads() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/argocd/notifications-cm.yaml"),
    )
    .unwrap();
    let cm: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "argocd-notifications-cm");
    let data = &cm["data"];
    let yaml = |key: &str| -> serde_json::Value {
        serde_saphyr::from_str(data[key].as_str().unwrap_or_else(|| panic!("{key} missing"))).unwrap()
    };
    let service = yaml("service.webhook.rollbackd");
    assert!(service["url"].as_str().unwrap().ends_with("/webhooks/argocd"));
    let headers = service["headers"].as_array().unwrap();
    assert!(headers.iter().any(|h| h["name"] == "Authorization" && h["value"] == "Bearer $rollbackd-token"));
    assert!(headers.iter().any(|h| h["name"] == "Content-Type" && h["value"] == "application/json"));
    let template = yaml("template.rollbackd");
    assert!(template["message"].is_string(), "every template needs a message");
    let webhook = &template["webhook"]["rollbackd"];
    assert_eq!(webhook["method"], "POST");
    for trigger in ["trigger.on-health-degraded", "trigger.on-sync-failed", "trigger.on-deployed"] {
        assert_eq!(yaml(trigger)[0]["send"], json!(["rollbackd"]), "{trigger}");
    }

    // Render the body: each `{{ ... | toJson }}` becomes the JSON of a sample value of its key.
    let sample = json!({
        "app": "checkout-prod", "project": "default", "revision": "0123456789abcdef0123456789abcdef01234567",
        "health": "Degraded", "sync": "Synced", "phase": "Succeeded", "path": "apps/checkout/prod",
        "repo": "https://github.com/acme/deploy.git", "message": "one \"quoted\"\nline"
    });
    let body = webhook["body"].as_str().unwrap();
    let placeholder = regex::Regex::new(r#""(\w+)": \{\{[^}]*\| toJson \}\}"#).unwrap();
    let keys: Vec<String> = placeholder.captures_iter(body).map(|c| c[1].to_string()).collect();
    assert_eq!(keys, ["app", "project", "revision", "health", "sync", "phase", "path", "repo", "message"]);
    let rendered = placeholder.replace_all(body, |c: &regex::Captures<'_>| format!("\"{}\": {}", &c[1], sample[&c[1]]));
    let now = jiff::Timestamp::now();
    match rollbackd::parsers::argocd(rendered.as_bytes(), now).unwrap() {
        rollbackd::parsers::ControllerEvent::Failed(e) => {
            for key in ["app", "project", "revision", "health", "sync", "phase", "path", "repo", "message"] {
                assert_eq!(e.labels[key], sample[key].as_str().unwrap(), "{key}");
            }
        }
        other => panic!("{other:?}"),
    }
    // on-deployed sends what the parser reads as healthy, and only that: synced and healthy.
    let deployed = yaml("trigger.on-deployed")[0]["when"].as_str().unwrap().to_string();
    assert!(
        deployed.contains("app.status.sync.status == 'Synced'")
            && deployed.contains("app.status.health.status == 'Healthy'"),
        "{deployed}"
    );
    let render = |health: &str, sync: &str| {
        let mut s = sample.clone();
        s["health"] = json!(health);
        s["sync"] = json!(sync);
        placeholder.replace_all(body, |c: &regex::Captures<'_>| format!("\"{}\": {}", &c[1], s[&c[1]])).into_owned()
    };
    let parsed = |text: String| rollbackd::parsers::argocd(text.as_bytes(), now).unwrap();
    assert!(matches!(parsed(render("Healthy", "Synced")), rollbackd::parsers::ControllerEvent::Healthy(_)));
    assert!(matches!(parsed(render("Healthy", "OutOfSync")), rollbackd::parsers::ControllerEvent::Ignored(_)));
}

fn parsed_flux(body: &str, now: jiff::Timestamp) -> rollbackd::Event {
    match rollbackd::parsers::flux(body.as_bytes(), now).unwrap() {
        rollbackd::parsers::ControllerEvent::Failed(e) | rollbackd::parsers::ControllerEvent::Healthy(e) => e,
        other => panic!("{other:?}"),
    }
}

/// With a controller source configured, a rollback the controller never reports applied is
/// `not_recovered` at `within`, with that reason, whatever `deploy_time` says.
#[test]
fn a_rollback_the_controller_never_applies_is_not_recovered_with_that_reason() {
    let policy = controller_policy("revert").set("verify", json!({ "within": "10m", "deploy_time": "1m" }));
    let w = World::with(&[policy]);
    with_controller_sources(&w);
    let (bad, _) = bad_then_later(&w);
    let mut engine = w.engine();
    let failed = parsed_flux(
        &flux_event("error", "HealthCheckFailed", "revision", &format!("main@sha1:{}", bad.0), json!({})),
        w.now(),
    );
    let report = engine.handle(&failed, &rollbackd::Options::default()).unwrap();
    assert_eq!(report.outcome.name(), "rolled_back", "{}", report.explain());
    let rollback = w.head();
    w.clock.advance(jiff::SignedDuration::from_mins(5));
    engine.verify_due().unwrap();
    assert!(verification_note(&w, &rollback).is_none(), "past deploy_time, not applied: still watching");
    w.clock.advance(jiff::SignedDuration::from_mins(6));
    engine.verify_due().unwrap();
    let text = verification_note(&w, &rollback).expect("the verdict is recorded");
    assert!(text.contains("Verification: not_recovered"), "{text}");
    assert!(text.contains("never reported the rollback applied and healthy"), "{text}");
}

/// A healthy report for a later revision marks known-good through a `known_good` policy.
#[test]
fn a_healthy_flux_report_marks_its_revision_known_good() {
    let known_good = PolicySpec::new("flux-known-good")
        .source("flux")
        .matchers(&[r#"reason="ReconciliationSucceeded""#])
        .target("checkout", "prod", &["apps/checkout/prod/**"])
        .set("action.mode", "known_good");
    let w = World::with(&[known_good]);
    with_controller_sources(&w);
    let (_, later) = bad_then_later(&w);
    let s = serve(&w, "data");
    let healthy =
        flux_event("info", "ReconciliationSucceeded", "revision", &format!("main@sha1:{}", later.0), json!({}));
    let (st, said) = post_flux(&s, FLUX_KEYS[0], &healthy);
    assert_eq!((st, said["outcome"].as_str()), (200, Some("recorded")), "{said}");
    let tags = w.git(&["tag", "--list", "known-good/checkout/prod/*", "--points-at", &later.0]);
    assert_eq!(tags.lines().count(), 1, "{said}");
    // A Kustomization of another repository healthy at its own revision: nothing to do here.
    let elsewhere = "89abcdef0123456789abcdef0123456789abcdef";
    let other = flux_event("info", "ReconciliationSucceeded", "revision", &format!("main@sha1:{elsewhere}"), json!({}));
    let (st, said) = post_flux(&s, FLUX_KEYS[0], &other);
    assert_eq!(st, 200, "{said}");
    assert!(said["reason"].as_str().unwrap().contains("not a commit of this config repo"), "{said}");
}

/// `simulate --event` reads both bodies and plans the failure bounded by its revision.
#[test]
fn simulate_reads_flux_and_argo_cd_bodies() {
    let w = World::with(&[controller_policy("revert")]);
    with_controller_sources(&w);
    let (bad, later) = bad_then_later(&w);
    let flux = w.root().join("flux.json");
    std::fs::write(
        &flux,
        flux_event("error", "HealthCheckFailed", "revision", &format!("main@sha1:{}", bad.0), json!({})),
    )
    .unwrap();
    let argo = w.root().join("argo.json");
    std::fs::write(
        &argo,
        json!({"app": "checkout-prod", "revision": bad.0, "health": "Degraded", "sync": "Synced"}).to_string(),
    )
    .unwrap();
    for file in [&flux, &argo] {
        let out = w.run_cli(&["simulate", "--event", file.to_str().unwrap(), "--json"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("dry_run"), "{text}");
        let blamed = shas_under(&serde_json::from_str(&text).unwrap(), "bad_commits");
        assert_eq!(blamed, [bad.0.as_str()], "{text}");
        let kept = shas_under(&serde_json::from_str(&text).unwrap(), "unapplied");
        assert_eq!(kept, [later.0.as_str()], "{text}");
    }
    let healthy = w.root().join("healthy.json");
    std::fs::write(
        &healthy,
        flux_event("info", "ReconciliationSucceeded", "revision", &format!("main@sha1:{}", bad.0), json!({})),
    )
    .unwrap();
    let out = w.run_cli(&["simulate", "--event", healthy.to_str().unwrap(), "--source", "flux"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("rolls nothing back"));
}

/// Every `sha` inside any `key` array of `v`.
fn shas_under(v: &serde_json::Value, key: &str) -> Vec<String> {
    let mut out = Vec::new();
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                if k == key {
                    out.extend(
                        x.as_array().into_iter().flatten().filter_map(|c| c["sha"].as_str().map(str::to_string)),
                    );
                } else {
                    out.extend(shas_under(x, key));
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| out.extend(shas_under(x, key))),
        _ => {}
    }
    out
}

/// The verification note on `commit` in the origin (`refs/notes/rollbackd`), if any.
fn verification_note(w: &World, commit: &str) -> Option<String> {
    std::process::Command::new("git")
        .arg("--git-dir")
        .arg(&w.origin)
        .args(["notes", "--ref=rollbackd", "show", commit])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// rollbackd's Argo CD notification for `revision` of checkout-prod in `repo`.
fn argo_notification(revision: &str, repo: &str, health: &str, sync: &str) -> serde_json::Value {
    json!({
        "app": "checkout-prod", "project": "default", "revision": revision, "health": health,
        "sync": sync, "phase": "Succeeded", "path": "apps/checkout/prod", "repo": repo,
        "message": "successfully synced (all tasks run)"
    })
}

/// The origin's path, as Argo CD's `repoURL` names it.
fn origin_url(w: &World) -> String {
    std::fs::canonicalize(&w.origin).unwrap().display().to_string()
}

/// Known-good for checkout in prod from Argo CD's on-deployed (synced and healthy).
fn argo_known_good(min_healthy: &str) -> PolicySpec {
    PolicySpec::new("argo-known-good")
        .source("argocd")
        .matchers(&[r#"health="Healthy""#, r#"sync="Synced""#])
        .target("checkout", "prod", &["apps/checkout/prod/**"])
        .set("action.mode", "known_good")
        .set("action.min_healthy", min_healthy)
}

fn known_good_tags_at(w: &World, commit: &str) -> usize {
    w.git(&["tag", "--list", "known-good/checkout/prod/*", "--points-at", commit]).lines().count()
}

/// Argo CD's realistic order: on-deployed (synced and healthy, so tagged known-good at once),
/// then Degraded at the same revision. The failure says the revision is bad: the rollback goes
/// to the known-good before it, not to the revision that fails (which would be a no-op).
#[test]
fn argo_cd_healthy_then_degraded_at_one_revision_rolls_back_to_the_known_good_before_it() {
    let w = World::with(&[controller_policy("revert"), argo_known_good("0s")]);
    with_controller_sources(&w);
    w.tag_known_good("checkout", "prod", &w.good, "20261121T100000Z");
    let (bad, later) = bad_then_later(&w);
    let s = serve(&w, "data");
    let origin = origin_url(&w);

    let (st, said) = post_argo(&s, ARGO_TOKEN, &argo_notification(&bad.0, &origin, "Healthy", "Synced"));
    assert_eq!((st, said["outcome"].as_str()), (200, Some("recorded")), "{said}");
    assert_eq!(known_good_tags_at(&w, &bad.0), 1, "healthy first: tagged known-good ({said})");

    let (st, said) = post_argo(&s, ARGO_TOKEN, &argo_notification(&bad.0, &origin, "Degraded", "Synced"));
    assert_eq!((st, said["outcome"].as_str()), (200, Some("rolled_back")), "{said}");
    assert_eq!(rollback_of(&w), [bad.0.as_str()]);
    assert_eq!(w.trailers("main", "Rollback-To"), [w.good.0.as_str()], "the known-good before the failing revision");
    assert_eq!(w.git(&["rev-parse", "main^"]), later.0);
    assert!(w.show("main", "apps/checkout/prod/deployment.yaml").contains("1.4.2"));

    // Health flaps back at the rolled-back revision, or a later one without the rollback: not
    // known-good (it still holds what was rolled back). The rollback itself is.
    let rollback = w.head();
    for revision in [&bad.0, &later.0] {
        let (st, said) = post_argo(&s, ARGO_TOKEN, &argo_notification(revision, &origin, "Healthy", "Synced"));
        assert_eq!(st, 200, "{said}");
        let reason = said["reason"].as_str().unwrap();
        assert!(reason.contains(&format!("holds {}", &bad.0[..10])) && reason.contains("not known-good"), "{said}");
    }
    assert_eq!(known_good_tags_at(&w, &bad.0), 1, "only the tag from before the failure");
    assert_eq!(known_good_tags_at(&w, &later.0), 0);
    // Tags are named by the second: one within the second of the first tag is `exists`, so the
    // report is sent again (as Argo CD would at its next on-deployed) until it is tagged.
    wait_for("the rollback tagged known-good", 10, || {
        let (st, said) = post_argo(&s, ARGO_TOKEN, &argo_notification(&rollback, &origin, "Healthy", "Synced"));
        assert_eq!(st, 200, "{said}");
        known_good_tags_at(&w, &rollback) == 1
    });
}

/// A controller failure during `min_healthy` rejects the candidates soaking at the failing
/// revision (and later ones): when the soak ends no known-good tag is written there. A
/// candidate at an earlier revision soaks on and is tagged.
#[test]
fn a_controller_failure_during_the_soak_means_no_known_good_tag_at_its_revision() {
    let known_good = PolicySpec::new("flux-known-good")
        .source("flux")
        .matchers(&[r#"reason="ReconciliationSucceeded""#])
        .target("checkout", "prod", &["apps/checkout/prod/**"])
        .set("action.mode", "known_good")
        .set("action.min_healthy", "10m");
    let w = World::with(&[controller_policy("revert"), known_good]);
    with_controller_sources(&w);
    let (bad, _later) = bad_then_later(&w);
    let mut engine = w.engine();
    let event = |severity: &str, reason: &str, at: &Sha| {
        parsed_flux(
            &flux_event_at(w.now(), severity, reason, "revision", &format!("main@sha1:{}", at.0), json!({})),
            w.now(),
        )
    };
    let said = engine.controller_healthy(&event("info", "ReconciliationSucceeded", &w.good)).unwrap();
    assert!(said.contains("is a candidate"), "{said}");
    w.clock.advance(jiff::SignedDuration::from_mins(1));
    let said = engine.controller_healthy(&event("info", "ReconciliationSucceeded", &bad)).unwrap();
    assert!(said.contains("is a candidate"), "{said}");

    w.clock.advance(jiff::SignedDuration::from_mins(2));
    let report = engine.handle(&event("error", "HealthCheckFailed", &bad), &rollbackd::Options::default()).unwrap();
    assert_eq!(report.outcome.name(), "rolled_back", "{}", report.explain());
    assert_eq!(w.trailers("main", "Rollback-To"), [w.good.0.as_str()]);
    // The rollback is applied and healthy (a candidate of its own, after the failing revision);
    // a late report of another failure at the revision rolled back does not reject the way back.
    let rollback = Sha(w.head());
    w.clock.advance(jiff::SignedDuration::from_mins(1));
    let said = engine.controller_healthy(&event("info", "ReconciliationSucceeded", &rollback)).unwrap();
    assert!(said.contains("is a candidate"), "{said}");
    let late = engine.handle(&event("error", "ReconciliationFailed", &bad), &rollbackd::Options::default()).unwrap();
    assert_ne!(late.outcome.name(), "rolled_back", "{}", late.explain());
    assert_eq!(w.head(), rollback.0, "rolled back already: nothing more written");

    w.clock.advance(jiff::SignedDuration::from_mins(15));
    engine.verify_due().unwrap();
    assert_eq!(known_good_tags_at(&w, &bad.0), 0, "the failing revision is never tagged known-good");
    assert_eq!(known_good_tags_at(&w, &w.good.0), 1, "the earlier candidate soaked on");
    assert_eq!(known_good_tags_at(&w, &rollback.0), 1, "the rolled-back state soaked on");
    let note = w.git(&["notes", "--ref=refs/notes/rollbackd-candidates", "show", &bad.0]);
    assert!(note.contains("\"rejected\"") && note.contains("HealthCheckFailed"), "{note}");
}

/// A Flux failure at a revision the branch does not hold (a commit of another branch, or none
/// at all) is refused with 422; one for another repository is ignored with the reason. Nothing
/// is written for either.
#[test]
fn flux_failures_off_the_branch_or_for_another_repo_write_nothing() {
    let w = World::with(&[controller_policy("revert")]);
    with_controller_sources(&w);
    let (bad, _later) = bad_then_later(&w);
    let side = w.git(&["commit-tree", "main^{tree}", "-p", "main", "-m", "an experiment on another branch"]);
    w.git(&["update-ref", "refs/heads/experiment", &side]);
    let s = serve(&w, "data");
    let before = w.git(&["for-each-ref"]);

    for revision in [format!("experiment@sha1:{side}"), "main@sha1:0123456789abcdef0123456789abcdef01234567".into()] {
        let body = flux_event("error", "HealthCheckFailed", "revision", &revision, json!({}));
        let (st, said) = post_flux(&s, FLUX_KEYS[0], &body);
        assert_eq!(st, 422, "{revision}: {said}");
        let reason = said["reason"].as_str().unwrap();
        assert!(reason.contains("of branch main: nothing to blame"), "{said}");
    }

    let elsewhere = flux_event(
        "error",
        "HealthCheckFailed",
        "revision",
        &format!("main@sha1:{}", bad.0),
        json!({ "repo": "https://github.com/acme/other-deploy" }),
    );
    let (st, said) = post_flux(&s, FLUX_KEYS[0], &elsewhere);
    assert_eq!((st, said["outcome"].as_str()), (200, Some("ignored")), "{said}");
    assert!(said["reason"].as_str().unwrap().contains("not a config repo rollbackd serves"), "{said}");
    assert_eq!(w.git(&["for-each-ref"]), before, "no ref of the origin moved");
}

/// End to end with Argo CD: Degraded rolls back; a notification for the rollback commit that is
/// healthy but OutOfSync verifies nothing; Synced + Healthy at a revision containing the
/// rollback verifies it, and the note says when it reached the cluster.
#[test]
fn a_rollback_is_verified_when_argo_cd_reports_it_synced_and_healthy() {
    let policy = controller_policy("revert").set("verify", json!({ "within": "10m", "deploy_time": "0s" }));
    let w = World::with(&[policy]);
    with_controller_sources(&w);
    let (bad, _later) = bad_then_later(&w);
    let s = serve(&w, "data");
    let origin = origin_url(&w);
    let (st, said) = post_argo(&s, ARGO_TOKEN, &argo_notification(&bad.0, &origin, "Degraded", "Synced"));
    assert_eq!((st, said["outcome"].as_str()), (200, Some("rolled_back")), "{said}");
    let rollback = w.head();

    let (st, said) = post_argo(&s, ARGO_TOKEN, &argo_notification(&rollback, &origin, "Healthy", "OutOfSync"));
    assert_eq!((st, said["outcome"].as_str()), (200, Some("ignored")), "{said}");
    assert!(verification_note(&w, &rollback).is_none(), "not synced: not applied");

    let (st, said) = post_argo(&s, ARGO_TOKEN, &argo_notification(&rollback, &origin, "Healthy", "Synced"));
    assert_eq!(st, 200, "{said}");
    assert!(said["reason"].as_str().unwrap().contains("reached the cluster"), "{said}");
    wait_for("the verification note on the origin", 60, || {
        verification_note(&w, &rollback).is_some_and(|n| n.contains("Verification: verified"))
    });
    let n = verification_note(&w, &rollback).unwrap();
    assert!(n.contains("Applied-At: ") && n.contains("reached the cluster"), "{n}");
}

/// A rollback the controller applied but nothing showed healthy (the query could not be
/// evaluated): the unverified notice still says when the rollback reached the cluster.
#[test]
fn an_unverified_notice_says_when_the_controller_applied_the_rollback() {
    let r = crate::common::receiver::Receiver::start();
    let policy = controller_policy("revert")
        .set("notify", ["oncall"])
        .set("verify", json!({ "within": "10m", "deploy_time": "0s", "query": "up == 1" }));
    let w = World::with(&[policy]);
    // Nothing listens there: every query fails at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    w.write_config(
        &ConfigSpec::new()
            .set("notify.channels.oncall", json!({ "kind": "webhook", "url": format!("{}/hook", r.url) }))
            .set("prometheus.url", format!("http://{closed}"))
            .set("git.fetch_freshness", "0s"),
    );
    with_controller_sources(&w);
    let (bad, _) = bad_then_later(&w);
    let mut engine = w.engine();
    let at = |reason: &str, severity: &str, rev: &str| {
        parsed_flux(
            &flux_event_at(w.now(), severity, reason, "revision", &format!("main@sha1:{rev}"), json!({})),
            w.now(),
        )
    };
    let report = engine.handle(&at("HealthCheckFailed", "error", &bad.0), &rollbackd::Options::default()).unwrap();
    assert_eq!(report.outcome.name(), "rolled_back", "{}", report.explain());
    assert_eq!(r.next().body["event"], "rolled_back");
    let rollback = w.head();
    w.clock.advance(jiff::SignedDuration::from_mins(2));
    let said = engine.controller_healthy(&at("ReconciliationSucceeded", "info", &rollback)).unwrap();
    assert!(said.contains("reached the cluster"), "{said}");
    w.clock.advance(jiff::SignedDuration::from_mins(9));
    engine.verify_due().unwrap();
    let note = verification_note(&w, &rollback).expect("the verdict is recorded");
    assert!(note.contains("Verification: unverified") && note.contains("Applied-At: "), "{note}");
    let msg = r.next().body;
    assert_eq!(msg["event"], "escalated", "{msg}");
    assert!(msg.to_string().contains("the rollback reached the cluster at"), "{msg}");
}
