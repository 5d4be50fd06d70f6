//! Identifiers from input. A sender may tell us *that* something happened; the values it sends
//! (alert labels, payload fields, chat arguments) are never patterns, paths or ref syntax. Every
//! value that becomes part of a service, env, path, ref name, revision, trigger or metric label
//! passes [`InputRules::identifier`] first.

use regex::Regex;
use serde::Deserialize;

/// The default pattern for identifiers from input: a letter or digit, then up to 62 letters,
/// digits, `.`, `_` or `-`.
pub(crate) const DEFAULT_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$";

/// `input:` in `rollbackd.yaml`.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    /// What a value from input must look like to name a service, an env or a path component.
    /// It can only narrow the built-in rules (no `/`, `\`, `..`, glob characters, control
    /// characters, or `.lock` endings). Default: `^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`.
    #[serde(default = "default_pattern")]
    pub identifier_pattern: String,
    /// Most labels (and annotations) one event may carry. Default: 64.
    #[serde(default = "default_max_labels")]
    pub max_labels: usize,
    /// Longest label or annotation value, in bytes. Default: 4096.
    #[serde(default = "default_max_value_bytes")]
    pub max_value_bytes: usize,
}

fn default_pattern() -> String {
    DEFAULT_PATTERN.into()
}
fn default_max_labels() -> usize {
    64
}
fn default_max_value_bytes() -> usize {
    4096
}

impl Default for InputConfig {
    fn default() -> Self {
        InputConfig {
            identifier_pattern: default_pattern(),
            max_labels: default_max_labels(),
            max_value_bytes: default_max_value_bytes(),
        }
    }
}

/// Why a value from input was refused. The value is shown escaped and cut short, so it cannot
/// forge a log line or flood a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("{what} {} is not an identifier: {why}", shown(.value))]
    NotIdentifier { what: String, value: String, why: &'static str },
    #[error("{what}: {count} entries, at most {max} are accepted")]
    TooMany { what: String, count: usize, max: usize },
    #[error("{what} `{key}` is {len} bytes, at most {max} are accepted")]
    TooLong { what: String, key: String, len: usize, max: usize },
}

/// A value for messages and logs: Rust's escaping (no raw control characters), at most 64 chars.
pub(crate) fn shown(value: &str) -> String {
    let cut: String = value.chars().take(64).collect();
    let more = if cut.len() < value.len() { "…" } else { "" };
    format!("{cut:?}{more}")
}

/// The checks, compiled once from [`InputConfig`].
#[derive(Clone, Debug)]
pub struct InputRules {
    pattern: Regex,
    pub max_labels: usize,
    pub max_value_bytes: usize,
}

impl Default for InputRules {
    fn default() -> Self {
        InputRules::new(&InputConfig::default()).expect("the default pattern compiles")
    }
}

impl InputRules {
    pub fn new(config: &InputConfig) -> Result<Self, String> {
        let pattern = Regex::new(&config.identifier_pattern).map_err(|e| {
            format!(
                "input.identifier_pattern `{}`: invalid regular expression: {}",
                crate::support::text::quoted(&config.identifier_pattern),
                crate::support::text::regex_error(&e)
            )
        })?;
        if !config.identifier_pattern.starts_with('^') || !config.identifier_pattern.ends_with('$') {
            return Err("input.identifier_pattern must be anchored (start with ^, end with $)".into());
        }
        Ok(InputRules { pattern, max_labels: config.max_labels, max_value_bytes: config.max_value_bytes })
    }

    /// Checks one value from input that names something: the built-in rules first (they hold
    /// whatever the configured pattern says), then the pattern.
    pub fn identifier(&self, what: &str, value: &str) -> Result<(), InputError> {
        let refuse = |why| Err(InputError::NotIdentifier { what: what.to_string(), value: value.to_string(), why });
        if let Some(why) = builtin_refusal(value) {
            return refuse(why);
        }
        if !self.pattern.is_match(value) {
            return refuse("it does not match input.identifier_pattern");
        }
        Ok(())
    }

    /// Bounds the labels and annotations of one event before any work is done on them.
    pub fn bounded<'a>(
        &self,
        what: &str,
        entries: impl ExactSizeIterator<Item = (&'a String, &'a String)>,
    ) -> Result<(), InputError> {
        let count = entries.len();
        if count > self.max_labels {
            return Err(InputError::TooMany { what: what.to_string(), count, max: self.max_labels });
        }
        for (k, v) in entries {
            let len = k.len().max(v.len());
            if len > self.max_value_bytes {
                let key: String = k.chars().take(64).collect();
                return Err(InputError::TooLong { what: what.to_string(), key, len, max: self.max_value_bytes });
            }
        }
        Ok(())
    }
}

/// Whether `value` passes the built-in rules (whatever the configured pattern): for names read
/// back from git, which were checked against the full rules when they were written.
pub fn is_plain(value: &str) -> bool {
    builtin_refusal(value).is_none()
}

/// What no configured pattern can let through: anything that would be read as a path, a glob, a
/// ref-name trick or a second line.
fn builtin_refusal(value: &str) -> Option<&'static str> {
    if value.is_empty() {
        return Some("it is empty");
    }
    if value.len() > 255 {
        return Some("it is longer than 255 bytes");
    }
    if value.chars().any(char::is_control) {
        return Some("it contains a control character");
    }
    if value.chars().any(char::is_whitespace) {
        return Some("it contains white space");
    }
    if value.contains(['/', '\\']) {
        return Some("it contains a path separator");
    }
    if value.contains(['*', '?', '[', ']', '{', '}', '!']) {
        return Some("it contains a glob character");
    }
    if value.contains("..") {
        return Some("it contains `..`");
    }
    if value.contains(['~', '^', ':', '@', '"', '\'', '`', '<', '>', '|', ';', '$', '&', '%', '#']) {
        return Some("it contains a character reserved by git, shells or templates");
    }
    if value.starts_with(['.', '-']) || value.ends_with('.') || value.ends_with(".lock") {
        return Some("git cannot name a ref with it");
    }
    None
}

impl crate::support::template::ValueCheck for InputRules {
    fn check(&self, what: &str, value: &str) -> Result<(), String> {
        self.identifier(what, value).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_refuse_every_kind_of_trick() {
        let r = InputRules::default();
        for ok in ["checkout", "cart-v2", "api_gateway", "svc.internal", "A1"] {
            assert!(r.identifier("service", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "*",
            "check*",
            "c?",
            "[ab]",
            "{a,b}",
            "!x",
            "a/b",
            "a\\b",
            "..",
            "a..b",
            ".hidden",
            "-x",
            "x.lock",
            "a b",
            "a\nb",
            "a\u{7}",
            "a:b",
            "a~1",
            "a^",
            "a@{0}",
            "x$",
            "x`",
            &"a".repeat(64),
        ] {
            let e = r.identifier("service", bad).unwrap_err();
            assert!(!e.to_string().contains('\n'), "{e}");
        }
    }

    #[test]
    fn a_configured_pattern_narrows_but_cannot_widen() {
        let wide = InputRules::new(&InputConfig { identifier_pattern: "^.*$".into(), ..Default::default() }).unwrap();
        assert!(wide.identifier("service", "a/b").is_err());
        assert!(wide.identifier("service", "a*").is_err());
        let narrow =
            InputRules::new(&InputConfig { identifier_pattern: "^[a-z]+$".into(), ..Default::default() }).unwrap();
        assert!(narrow.identifier("service", "Checkout").is_err());
        assert!(InputRules::new(&InputConfig { identifier_pattern: "[a-z]+".into(), ..Default::default() }).is_err());
    }

    #[test]
    fn labels_are_bounded() {
        let r = InputRules { max_labels: 2, max_value_bytes: 8, ..InputRules::default() };
        let big = std::collections::BTreeMap::from([("a".to_string(), "x".repeat(9))]);
        assert!(matches!(r.bounded("labels", big.iter()), Err(InputError::TooLong { .. })));
        let many: std::collections::BTreeMap<String, String> = (0..3).map(|i| (i.to_string(), String::new())).collect();
        assert!(matches!(r.bounded("labels", many.iter()), Err(InputError::TooMany { count: 3, .. })));
    }
}
