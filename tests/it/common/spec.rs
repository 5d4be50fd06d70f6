//! Typed builders for what the tests write to disk: policy files and `rollbackd.yaml`. They
//! emit JSON, which is YAML, so a test names fields and values instead of splicing YAML text.
//! Tests about the parsers themselves (positions, unknown keys) still write their text raw.

use rollbackd::{Mode, OnViolation, Strategy};
use serde::Serialize;
use serde_json::{Map, Value, json};

/// One policy. [`PolicySpec::new`] is the usual test policy: alerts and requests for any service
/// and environment, a direct rollback of `apps/<service>/<env>/**`, no guards.
#[derive(Clone, Debug)]
pub struct PolicySpec(Value);

impl PolicySpec {
    pub fn new(name: &str) -> PolicySpec {
        PolicySpec(json!({
            "name": name,
            "match": { "source": "any", "matchers": ["service=~\".+\"", "env=~\".+\""] },
            "target": {
                "service": "{{ labels.service }}",
                "env": "{{ labels.env }}",
                "paths": ["apps/{{ labels.service }}/{{ labels.env }}/**"],
            },
            "action": { "mode": Mode::Direct, "strategy": Strategy::Auto },
            "guards": {},
        }))
    }

    pub fn mode(self, mode: Mode) -> Self {
        self.set("action.mode", mode)
    }

    pub fn strategy(self, strategy: Strategy) -> Self {
        self.set("action.strategy", strategy)
    }

    /// `source: any|alertmanager|github|chatops|cli|request`.
    pub fn source(self, source: &str) -> Self {
        self.set("match.source", source)
    }

    pub fn matchers(self, matchers: &[&str]) -> Self {
        self.set("match.matchers", matchers)
    }

    /// Only `env="prod"`.
    pub fn prod_only(self) -> Self {
        self.matchers(&["service=~\".+\"", "env=\"prod\""])
    }

    /// A fixed target instead of the one taken from the labels.
    pub fn target(self, service: &str, env: &str, paths: &[&str]) -> Self {
        self.set("target", json!({ "service": service, "env": env, "paths": paths }))
    }

    pub fn guard(self, name: &str, value: impl Serialize) -> Self {
        self.set(&format!("guards.{name}"), value)
    }

    pub fn on_violation(self, what: OnViolation) -> Self {
        self.guard("on_violation", what)
    }

    /// `chatops.<role>`: `allow`, `approve`, `emergency`, ...
    pub fn chatops(self, role: &str, principals: &[&str]) -> Self {
        self.set(&format!("chatops.{role}"), principals)
    }

    pub fn review(self, name: &str, value: impl Serialize) -> Self {
        self.set(&format!("review.{name}"), value)
    }

    /// Any other field, by its dotted path (`target.to`, `match.forks`, ...).
    pub fn set(mut self, path: &str, value: impl Serialize) -> Self {
        put(&mut self.0, path, value);
        self
    }
}

/// The text of a policy file holding `policies`.
pub fn policy_file(policies: &[PolicySpec]) -> String {
    let list: Vec<&Value> = policies.iter().map(|p| &p.0).collect();
    serde_json::to_string_pretty(&list).unwrap()
}

/// What a test adds to the harness's `rollbackd.yaml` (repo, data_dir, policies and templates
/// are always set).
#[derive(Clone, Debug, Default)]
pub struct ConfigSpec(Map<String, Value>);

impl ConfigSpec {
    pub fn new() -> ConfigSpec {
        ConfigSpec::default()
    }

    /// A field by its dotted path: `server.queue`, `git.fetch_freshness`, ...
    pub fn set(mut self, path: &str, value: impl Serialize) -> Self {
        let mut root = Value::Object(std::mem::take(&mut self.0));
        put(&mut root, path, value);
        let Value::Object(map) = root else { unreachable!("the root stays an object") };
        self.0 = map;
        self
    }

    /// `forge: github` against `api_url`, with the token in `token_file`, for `acme/config`.
    pub fn github_forge(self, api_url: &str, token_file: &str) -> Self {
        self.set(
            "forge",
            json!({ "kind": "github", "api_url": api_url, "owner": "acme", "repo": "config", "token_file": token_file }),
        )
    }

    /// `forge: github` against `api_url` as the tests' GitHub App (its key is a fixture), for
    /// `acme/config`.
    pub fn github_app(self, api_url: &str) -> Self {
        let key = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/github-app-test-key.pem");
        self.set(
            "forge",
            json!({ "kind": "github", "api_url": api_url, "owner": "acme", "repo": "config", "app_id": 12345, "private_key_file": key }),
        )
    }

    /// The config's text after the harness's own lines.
    pub fn yaml_lines(&self) -> String {
        self.0.iter().map(|(k, v)| format!("{k}: {v}\n")).collect()
    }
}

fn put(root: &mut Value, path: &str, value: impl Serialize) {
    let value = serde_json::to_value(value).expect("a test value serializes");
    let mut at = root;
    let mut parts = path.split('.').peekable();
    while let Some(key) = parts.next() {
        let map = at.as_object_mut().unwrap_or_else(|| panic!("{path}: {key} is inside a value, not a map"));
        if parts.peek().is_none() {
            map.insert(key.to_string(), value);
            return;
        }
        at = map.entry(key).or_insert_with(|| json!({}));
    }
}
