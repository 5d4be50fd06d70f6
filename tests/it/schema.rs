//! `rollbackd schema config|policy`: JSON Schema (draft 2020-12) from the types serde reads.
//! The copies in docs/schemas/ (what the shipped files' `# yaml-language-server: $schema=` lines
//! point at) are the binary's output, and every shipped file validates against them.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn schema(file: &str) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_rollbackd")).args(["schema", file]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every error the schema finds in the YAML file at `path`, as text.
fn violations(validator: &jsonschema::Validator, path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let value: Value = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    validator.iter_errors(&value).map(|e| format!("{}: {e} at {}", path.display(), e.instance_path())).collect()
}

/// The file's `# yaml-language-server: $schema=<relative path>` line names `schema_file`.
fn points_at(path: &Path, schema_file: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let first = text.lines().next().unwrap_or_default();
    let rel =
        first.strip_prefix("# yaml-language-server: $schema=").unwrap_or_else(|| panic!("{}: {first}", path.display()));
    let target = path.parent().unwrap().join(rel);
    assert_eq!(
        std::fs::canonicalize(&target).unwrap_or_else(|e| panic!("{}: {rel}: {e}", path.display())),
        std::fs::canonicalize(schema_file).unwrap(),
        "{}",
        path.display()
    );
}

fn yaml_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_schemas_are_draft_2020_12_and_the_shipped_copies_are_the_binarys() {
    for (file, copy) in [("config", "docs/schemas/config.schema.json"), ("policy", "docs/schemas/policy.schema.json")] {
        let generated = schema(file);
        assert_eq!(generated["$schema"], "https://json-schema.org/draft/2020-12/schema", "{file}");
        let shipped: Value = serde_json::from_str(&std::fs::read_to_string(root().join(copy)).unwrap()).unwrap();
        assert!(shipped == generated, "{copy} is stale: rollbackd schema {file} > {copy}");
        jsonschema::draft202012::meta::validate(&generated)
            .unwrap_or_else(|e| panic!("{file}: not a valid schema: {e}"));
    }
    // Generated from the types: a field the config reads is in it, with its doc comment.
    let config = schema("config");
    assert!(config["properties"]["prometheus"].is_object(), "{config}");
    assert_eq!(config["additionalProperties"], false, "unknown keys are refused, as serde does");
}

#[test]
fn every_shipped_config_and_policy_file_validates_and_names_its_schema() {
    let config_schema = root().join("docs/schemas/config.schema.json");
    let policy_schema = root().join("docs/schemas/policy.schema.json");
    let configs = jsonschema::draft202012::new(&schema("config")).unwrap();
    let policies = jsonschema::draft202012::new(&schema("policy")).unwrap();
    let mut errors = Vec::new();
    let mut seen = 0;
    for dir in ["policies", "deploy/kubernetes/base/policies", "deploy/kubernetes/overlays/example/policies"] {
        for f in yaml_in(&root().join(dir)) {
            points_at(&f, &policy_schema);
            errors.extend(violations(&policies, &f));
            seen += 1;
        }
    }
    for f in ["deploy/kubernetes/base/rollbackd.yaml", "deploy/kubernetes/overlays/example/rollbackd.yaml"] {
        let f = root().join(f);
        points_at(&f, &config_schema);
        errors.extend(violations(&configs, &f));
        seen += 1;
    }
    // The demo's files, as `rollbackd demo` writes them, with the schemas where the repository keeps them.
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_rollbackd"))
        .args(["demo", "--no-serve", "--dir", demo.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    points_at(&demo.join("rollbackd.yaml"), &demo.join("docs/schemas/config.schema.json"));
    errors.extend(violations(&configs, &demo.join("rollbackd.yaml")));
    for f in yaml_in(&demo.join("policies")) {
        points_at(&f, &demo.join("docs/schemas/policy.schema.json"));
        errors.extend(violations(&policies, &f));
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    assert!(seen >= 7, "{seen}");

    // And the schema can fail: a wrong value and an unknown key, each found.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "- name: p\n  match: { source: alertmanager }\n  target: { service: x, env: prod, paths: [a] }\n  action: { mode: directt }\n  guards: { cooldwn: 5m }\n").unwrap();
    let found = violations(&policies, &bad);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found.iter().any(|e| e.contains("/0/action/mode")) && found.iter().any(|e| e.contains("cooldwn")),
        "{found:#?}"
    );
}
