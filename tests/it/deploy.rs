//! The deploy artifacts as users apply them: the kustomize base and example overlay rendered by
//! the real `kubectl kustomize`, their config and policies passed through `rollbackd check
//! --offline`, the pods given every secret and port the config names; the example Prometheus
//! rules and Alertmanager config through promtool and amtool; the Dockerfile copying what the
//! build needs. (`kubernetes-validate --strict` checks the rendered objects' schemas in .ci/run.)

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::common::procs::installed;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The objects `kubectl kustomize deploy/kubernetes/<dir>` renders.
fn kustomize(kubectl: &Path, dir: &str) -> Vec<Value> {
    let out = Command::new(kubectl).arg("kustomize").arg(root().join("deploy/kubernetes").join(dir)).output().unwrap();
    assert!(out.status.success(), "{dir}: {}", String::from_utf8_lossy(&out.stderr));
    serde_saphyr::from_multiple::<Value>(&String::from_utf8_lossy(&out.stdout)).unwrap()
}

fn object<'a>(objects: &'a [Value], kind: &str, name_prefix: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"].as_str().unwrap().starts_with(name_prefix))
        .unwrap_or_else(|| panic!("no {kind} {name_prefix}"))
}

/// Every string under a key ending in `suffix`, anywhere in `v`.
fn values_of(v: &Value, suffix: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match x.as_str() {
                    Some(s) if k.ends_with(suffix) => out.push(s.to_string()),
                    _ => values_of(x, suffix, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| values_of(x, suffix, out)),
        _ => {}
    }
}

fn port_of(listen: &str) -> u64 {
    listen.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn the_kustomize_base_and_overlay_render_and_agree_with_the_binary() {
    let Some(kubectl) = installed(&["kubectl"], "kubectl") else { return };
    for dir in ["base", "overlays/example"] {
        let objects = kustomize(&kubectl, dir);
        let config_map = object(&objects, "ConfigMap", "rollbackd-config");
        let policies_map = object(&objects, "ConfigMap", "rollbackd-policies");
        let deployment = object(&objects, "Deployment", "rollbackd");
        let pod = &deployment["spec"]["template"];
        let container = &pod["spec"]["containers"][0];
        let config_text = config_map["data"]["rollbackd.yaml"].as_str().unwrap();
        let config: Value = serde_saphyr::from_str(config_text).unwrap();

        // The config and policies, where the pod mounts them, pass the offline check.
        let work = tempfile::tempdir().unwrap();
        let mounted = |path: &str| -> PathBuf {
            let mount = container["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| path.starts_with(m["mountPath"].as_str().unwrap()))
                .unwrap_or_else(|| panic!("{dir}: {path} is not mounted"));
            work.path().join(mount["name"].as_str().unwrap())
        };
        let policies_dir = mounted(config["policies"].as_str().unwrap());
        std::fs::create_dir_all(&policies_dir).unwrap();
        for (name, text) in policies_map["data"].as_object().unwrap() {
            std::fs::write(policies_dir.join(name), text.as_str().unwrap()).unwrap();
        }
        // Templates are in the image (deploy/Dockerfile copies templates/).
        assert_eq!(config["templates"], "/etc/rollbackd/templates");
        let local = config_text
            .replace(config["policies"].as_str().unwrap(), policies_dir.to_str().unwrap())
            .replace("/etc/rollbackd/templates", root().join("templates").to_str().unwrap());
        let config_file = work.path().join("rollbackd.yaml");
        std::fs::write(&config_file, local).unwrap();
        let check = Command::new(env!("CARGO_BIN_EXE_rollbackd"))
            .arg("--config")
            .arg(&config_file)
            .args(["check", "--offline"])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&check.stdout);
        assert!(check.status.success() && !said.contains("warning"), "{dir}: {said}");

        // The config file is where ROLLBACKD_CONFIG says, from the generated ConfigMap.
        let env: Vec<&Value> = container["env"].as_array().unwrap().iter().collect();
        let env_value = |name: &str| env.iter().find(|e| e["name"] == name).map(|e| e["value"].clone());
        assert_eq!(env_value("ROLLBACKD_CONFIG"), Some(Value::from("/etc/rollbackd/rollbackd.yaml")), "{dir}");
        mounted("/etc/rollbackd/rollbackd.yaml");
        // Every secret the config names comes from the Secret, and nothing is left over.
        let mut named = Vec::new();
        values_of(&config, "_env", &mut named);
        let mut given: Vec<String> = env
            .iter()
            .filter(|e| e["valueFrom"]["secretKeyRef"]["name"] == "rollbackd")
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect();
        named.sort();
        given.sort();
        assert_eq!(named, given, "{dir}: env vars the config names vs those the pod gets");
        let mut files = Vec::new();
        values_of(&config, "_file", &mut files);
        files.iter().for_each(|f| drop(mounted(f)));

        // Ports: webhooks, and the admin listener the ServiceMonitor scrapes.
        let ports: Vec<u64> =
            container["ports"].as_array().unwrap().iter().map(|p| p["containerPort"].as_u64().unwrap()).collect();
        assert!(ports.contains(&port_of(config["listen"].as_str().unwrap())), "{dir}: {ports:?}");
        let admin = port_of(config["admin"]["listen"].as_str().unwrap());
        assert!(ports.contains(&admin), "{dir}: {ports:?}");
        let monitor = object(&objects, "ServiceMonitor", "rollbackd");
        assert_eq!(monitor["spec"]["endpoints"][0]["port"], "admin");
        let service = object(&objects, "Service", "rollbackd-admin");
        assert_eq!(service["spec"]["ports"][0]["port"].as_u64(), Some(admin));
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            assert_eq!(container[probe]["httpGet"]["port"], "http", "{dir}: {probe}");
            // A shared origin's outage must not take every replica out of the Service.
            assert_eq!(container[probe]["httpGet"]["path"], "/healthz", "{dir}: {probe}");
        }
        // Behind an admin token, Prometheus must send it.
        if config["admin"]["token_env"].is_string() {
            let key = env
                .iter()
                .find(|e| e["name"] == config["admin"]["token_env"])
                .map(|e| e["valueFrom"]["secretKeyRef"]["key"].clone())
                .unwrap();
            let auth = &monitor["spec"]["endpoints"][0]["authorization"];
            assert_eq!((&auth["type"], &auth["credentials"]["key"]), (&Value::from("Bearer"), &key), "{dir}");
        }

        // A config or policy change rolls the pods: the checksum annotations name the hashed
        // ConfigMaps, as the volumes do.
        let annotations = &pod["metadata"]["annotations"];
        assert_eq!(annotations["rollbackd.io/config-checksum"], config_map["metadata"]["name"], "{dir}");
        assert_eq!(annotations["rollbackd.io/policies-checksum"], policies_map["metadata"]["name"], "{dir}");
        assert_ne!(config_map["metadata"]["name"], "rollbackd-config", "{dir}: no content hash");

        // Hardening.
        assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
        assert_eq!(object(&objects, "ServiceAccount", "rollbackd")["automountServiceAccountToken"], false);
        assert_eq!(pod["spec"]["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
        assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(container["securityContext"]["capabilities"]["drop"][0], "ALL");
        object(&objects, "PodDisruptionBudget", "rollbackd");
        object(&objects, "NetworkPolicy", "rollbackd");
    }
}

#[test]
fn the_example_rules_and_alertmanager_config_are_valid() {
    if let Some(promtool) = installed(&["promtool"], "prometheus") {
        for rules in ["deploy/prometheus-rules.yml", "deploy/rollbackd-alerts.yml"] {
            let out = Command::new(&promtool).args(["check", "rules"]).arg(root().join(rules)).output().unwrap();
            assert!(out.status.success(), "{rules}: {}", String::from_utf8_lossy(&out.stdout));
        }
    }
    if let Some(amtool) = installed(&["amtool"], "prometheus-alertmanager") {
        let out =
            Command::new(amtool).args(["check-config"]).arg(root().join("deploy/alertmanager.yml")).output().unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The real promtool evaluates each rollback rule on its unit test's series: it fires where
/// the thresholds say, and not just below.
#[test]
fn the_rollback_rules_fire_at_their_thresholds() {
    if !promtool_unit_tests("prometheus-rules.test.yml") {
        return;
    }
    let tested = std::fs::read_to_string(root().join("deploy/prometheus-rules.test.yml")).unwrap();
    let rules = std::fs::read_to_string(root().join("deploy/prometheus-rules.yml")).unwrap();
    for alert in rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")) {
        assert!(tested.contains(&format!("alertname: {alert}")), "{alert} has no unit test");
    }
}

/// rollbackd's own health alerts fire for one repo of several (the writers' gauges carry a
/// `repo` label, the queue's capacity does not) as they do for a single repo.
#[test]
fn the_health_alerts_fire_per_config_repo() {
    promtool_unit_tests("rollbackd-alerts.test.yml");
}

/// Runs `promtool test rules` on a unit-test file of deploy/, asserting it passes; `false`
/// when promtool is not installed (outside CI).
fn promtool_unit_tests(file: &str) -> bool {
    let Some(promtool) = installed(&["promtool"], "prometheus") else { return false };
    let out = Command::new(promtool).args(["test", "rules", file]).current_dir(root().join("deploy")).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.contains("SUCCESS"), "{file}: {said}");
    true
}

/// The example alerts (what Alertmanager sends for each rule) through `rollbackd simulate`
/// against the shipped policies: the decisions deploy/examples/alerts/README.md promises.
#[test]
fn the_example_alerts_decide_as_documented() {
    use crate::common::*;
    let policies = std::fs::read_to_string(root().join("policies/10-alerts.yaml")).unwrap();
    let simulate = |w: &World, file: &str| -> Value {
        let event = root().join("deploy/examples/alerts").join(file);
        let out =
            w.run_cli(&["simulate", "--event", event.to_str().unwrap(), "--at", "2026-11-21T12:00:00Z", "--json"]);
        serde_json::from_slice::<Value>(&out.stdout).unwrap_or_else(|e| panic!("{file}: {e} {out:?}"))[0].clone()
    };
    // The shipped policies tell `oncall`; the config must define it.
    let with_oncall = |w: &World| {
        w.write_config(
            &ConfigSpec::new().set("notify.channels.oncall", json!({"kind": "file", "path": "notices.jsonl"})),
        )
    };
    let w = World::with_policy_text(&policies);
    with_oncall(&w);
    w.deploy("checkout", "prod", "1.5.0", 10);
    let mut files: Vec<String> = std::fs::read_dir(root().join("deploy/examples/alerts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".json"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 5, "{files:?}");
    for file in &files {
        let r = simulate(&w, file);
        let (policy, would) = match file {
            f if f.starts_with("immediate-canary") => ("slo-immediate-canary", "direct"),
            f if f.starts_with("immediate-") => ("slo-immediate", "direct"),
            _ => ("slo-propose", "proposal"),
        };
        assert_eq!(r["decision"]["policy"], policy, "{file}: {r}");
        if policy == "slo-immediate-canary" {
            let notes = r["decision"]["notes"].to_string();
            assert!(notes.contains("pushed in 2 phases: 1) canary: apps/checkout/prod/canary/**, soak 5m"), "{notes}");
        }
        assert_eq!((r["outcome"].as_str(), r["would"].as_str()), (Some("dry_run"), Some(would)), "{file}: {r}");
    }
    // The same alert when the bad deploy added a migration 45 minutes ago: past the point of
    // no return, proposed.
    let w = World::with_policy_text(&policies);
    with_oncall(&w);
    let text = manifest("checkout", "prod", &image("checkout", "1.5.0"));
    let migration = "apps/checkout/prod/migrations/0042.sql";
    w.commit_files(
        "Deploy checkout 1.5.0",
        &[(&path("checkout", "prod"), Some(&text)), (migration, Some("ALTER"))],
        45,
    );
    let r = simulate(&w, "immediate-error-rate-high.json");
    assert_eq!(r["would"], "proposal", "{r}");
    let guards = r["decision"]["guards"].as_array().unwrap();
    let g = guards.iter().find(|g| g["guard"] == "point_of_no_return").unwrap();
    assert!(g["passed"] == false && g["detail"].as_str().unwrap().contains(migration), "{g}");
}

/// No Docker engine runs here, so the image is not built; what the build needs is checked
/// instead: every file Cargo.toml names is copied, nothing copied is ignored, and the
/// HEALTHCHECK's command exists.
#[test]
fn the_dockerfile_copies_what_the_build_needs() {
    let dockerfile = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    let ignored: Vec<String> = std::fs::read_to_string(root().join(".dockerignore"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.trim().to_string())
        .collect();
    let mut copied = Vec::new();
    for line in dockerfile.lines().filter(|l| l.starts_with("COPY ") && !l.contains("--from=")) {
        let words: Vec<&str> = line.split_whitespace().skip(1).collect();
        for src in &words[..words.len() - 1] {
            assert!(root().join(src).exists(), "COPY {src}: no such file");
            assert!(!ignored.iter().any(|i| i == src), "COPY {src}: excluded by .dockerignore");
            copied.push(src.to_string());
        }
    }
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    for needed in ["Cargo.toml", "Cargo.lock", "build.rs", "src", "bench", "templates", "policies"] {
        assert!(copied.iter().any(|c| c == needed), "the build needs {needed}: {copied:?}");
    }
    assert!(manifest.contains("build = \"build.rs\"") && manifest.contains("path = \"bench/engine.rs\""));
    assert!(dockerfile.contains("FROM ${RUST_IMAGE}") && dockerfile.contains("ARG RUST_IMAGE=rust:1.95.0-"));
    assert!(dockerfile.contains("org.opencontainers.image.revision"));
    let healthcheck = dockerfile.lines().find(|l| l.starts_with("HEALTHCHECK")).expect("a HEALTHCHECK");
    assert!(healthcheck.contains(r#"CMD ["rollbackd", "healthcheck"]"#), "{healthcheck}");
    let help = Command::new(env!("CARGO_BIN_EXE_rollbackd")).args(["healthcheck", "--help"]).output().unwrap();
    assert!(help.status.success());
}

/// Every shipped policy that rolls back is safe by default: what git cannot undo is named, a
/// point of no return hands such rollbacks to a person, every state is told to a route, and an
/// alert's rollback is verified against the alert.
#[test]
fn every_shipped_policy_that_rolls_back_has_the_safety_net() {
    let mut seen = 0;
    let mut shipped: Vec<(String, String)> =
        rollbackd::DEMO_POLICIES.iter().map(|(n, t)| (format!("policies/{n}"), t.to_string())).collect();
    // The Kubernetes base and example overlay ship policies people copy too.
    for dir in ["deploy/kubernetes/base/policies", "deploy/kubernetes/overlays/example/policies"] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            shipped.push((
                format!("{dir}/{}", path.file_name().unwrap().to_string_lossy()),
                std::fs::read_to_string(&path).unwrap(),
            ));
        }
    }
    let mut overlay = 0;
    for (name, text) in &shipped {
        let policies: Vec<Value> = serde_saphyr::from_str(text).unwrap();
        for p in policies {
            let who = format!("{name}: {}", p["name"]);
            // Neither notifying nor marking known-good rolls anything back.
            if p["action"]["mode"] == "notify" || p["action"]["mode"] == "known_good" {
                continue;
            }
            seen += 1;
            let irreversible =
                p["irreversible"]["paths"].as_array().unwrap_or_else(|| panic!("{who}: no irreversible"));
            assert!(irreversible.iter().any(|g| g == "**/migrations/**"), "{who}: {irreversible:?}");
            assert!(p["guards"]["point_of_no_return"].is_string(), "{who}: no point_of_no_return");
            assert!(p["notify"].as_array().is_some_and(|n| !n.is_empty()), "{who}: no notify route");
            // Every rollback is verified: an alert's against the alert, a controller's by the
            // controller's healthy report, any other by its query.
            assert!(p["verify"]["within"].is_string(), "{who}: no verify");
            if !["alertmanager", "flux", "argocd"].iter().any(|s| p["match"]["source"] == *s) {
                assert!(p["verify"]["query"].is_string(), "{who}: nothing to verify it with but a query");
            }
            overlay += usize::from(name.contains("overlays/example"));
        }
    }
    assert!(seen >= 8 && overlay == 2, "{seen} {overlay}");
}

/// The issue's case: a paging prod alert two hours after a commit that added
/// `migrations/002.sql` (at the repo's root) is not pushed by `alert-prod`: it is proposed,
/// the reason naming the migration; and the demo's configuration, which defines `oncall`, passes.
#[test]
fn alert_prod_proposes_a_rollback_past_a_migration() {
    use crate::common::*;
    let policies = std::fs::read_to_string(root().join("policies/10-alerts.yaml")).unwrap();
    let w = World::with_policy_text(&policies);
    w.write_config(&ConfigSpec::new().set("notify.channels.oncall", json!({"kind": "file", "path": "notices.jsonl"})));
    let text = manifest("checkout", "prod", &image("checkout", "1.5.0"));
    w.commit_files(
        "Deploy checkout 1.5.0 with its schema",
        &[(&path("checkout", "prod"), Some(&text)), ("migrations/002.sql", Some("ALTER TABLE orders ADD x int"))],
        120,
    );
    let event = w.root().join("page.json");
    std::fs::write(&event, crate::common::http::alert_body("p1", "checkout", "firing")).unwrap();
    let out = w.run_cli(&["simulate", "--event", event.to_str().unwrap(), "--at", "2026-11-21T12:00:00Z", "--json"]);
    let r = serde_json::from_slice::<Value>(&out.stdout).unwrap_or_else(|e| panic!("{e} {out:?}"))[0].clone();
    assert_eq!(r["decision"]["policy"], "alert-prod", "{r}");
    assert_eq!(r["would"], "proposal", "{r}");
    let guards = r["decision"]["guards"].as_array().unwrap();
    let g = guards.iter().find(|g| g["guard"] == "point_of_no_return").unwrap();
    assert!(g["passed"] == false && g["detail"].as_str().unwrap().contains("migrations/002.sql"), "{g}");
}

/// Every alert's `runbook_url` is an absolute link to a heading that exists in docs/runbook.md,
/// and the image says where its source and docs are, as absolute URLs.
#[test]
fn runbook_links_and_image_labels_are_absolute_and_lead_somewhere() {
    const BASE: &str = "https://github.com/acme/rollbackd/blob/main/docs/runbook.md#";
    let runbook = std::fs::read_to_string(root().join("docs/runbook.md")).unwrap();
    // GitHub's anchors: lower case, spaces to dashes, punctuation other than `-` dropped.
    let anchors: Vec<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("## ").or_else(|| l.strip_prefix("### ")))
        .map(|h| {
            h.to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect();
    let mut links = 0;
    for file in ["deploy/rollbackd-alerts.yml", "deploy/prometheus-rules.yml"] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        assert!(!text.contains("runbook:"), "{file}: use runbook_url, an absolute URL");
        for line in text.lines().filter(|l| l.trim_start().starts_with("runbook_url:")) {
            let url = line.split_once(':').unwrap().1.trim().trim_matches('"');
            let anchor = url.strip_prefix(BASE).unwrap_or_else(|| panic!("{file}: {url} is not under {BASE}"));
            assert!(anchors.iter().any(|a| a == anchor), "{file}: #{anchor} is no heading of docs/runbook.md");
            links += 1;
        }
    }
    assert!(links >= 10, "{links}");
    let dockerfile = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    assert!(dockerfile.contains("ARG SOURCE=https://"), "{dockerfile}");
    for label in
        ["org.opencontainers.image.source=\"${SOURCE}\"", "org.opencontainers.image.documentation=\"${SOURCE}/"]
    {
        assert!(dockerfile.contains(label), "{label} missing");
    }
}
