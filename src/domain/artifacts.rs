//! Artifact references in manifests: container images and `tag` / `version` / `digest` keys.
//!
//! The scan is line-based on purpose: config repos hold Helm values, Kustomize overlays and
//! templated YAML that a YAML parser would reject, and all we need is "which pinned artifact
//! does this file reference". Nested keys are named by indentation (`image.tag`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One artifact reference found in a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactRef {
    /// `image checkout` for images (repository without tag), or the dotted key (`image.tag`).
    pub name: String,
    /// The full reference (`registry/checkout:1.4.2`) or the key's value.
    pub value: String,
    pub line: usize,
    pub mutable: bool,
}

/// An artifact whose reference differs between the current state and the rollback target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactChange {
    pub path: String,
    pub name: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

const IMAGE_KEYS: &[&str] = &["image", "newImage"];
const VERSION_KEYS: &[&str] = &["tag", "newTag", "version", "digest"];

pub fn scan(text: &str) -> Vec<ArtifactRef> {
    let mut found = Vec::new();
    // (indent, key) of the enclosing mappings, to name nested keys.
    let mut stack: Vec<(usize, String)> = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        let content = line.trim_start();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let mut indent = line.len() - content.len();
        let mut content = content;
        if let Some(rest) = content.strip_prefix("- ") {
            indent += 2;
            content = rest.trim_start();
        }
        let Some((key, value)) = split_key_value(content) else {
            continue;
        };
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        if value.is_empty() {
            stack.push((indent, key.to_string()));
            continue;
        }
        let value = unquote(value);
        if IMAGE_KEYS.contains(&key) && !value.is_empty() {
            let image = ImageRef::parse(value);
            found.push(ArtifactRef {
                name: format!("image {}", image.repository),
                value: value.to_string(),
                line: idx + 1,
                mutable: image.is_mutable(),
            });
        } else if VERSION_KEYS.contains(&key) {
            let mut name: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).collect();
            name.push(key);
            let mutable = key != "digest" && (value.is_empty() || value == "latest" || value == "*");
            found.push(ArtifactRef { name: name.join("."), value: value.to_string(), line: idx + 1, mutable });
        }
    }
    found
}

/// Pairs the references of one file before and after, by name and occurrence.
pub(crate) fn diff(path: &str, old: &[ArtifactRef], new: &[ArtifactRef]) -> Vec<ArtifactChange> {
    fn by_name(refs: &[ArtifactRef]) -> BTreeMap<(&str, usize), &str> {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        refs.iter()
            .map(|r| {
                let n = seen.entry(r.name.as_str()).or_default();
                *n += 1;
                ((r.name.as_str(), *n), r.value.as_str())
            })
            .collect()
    }
    let (old, new) = (by_name(old), by_name(new));
    let mut keys: Vec<_> = old.keys().chain(new.keys()).copied().collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| old.get(k) != new.get(k))
        .map(|k| ArtifactChange {
            path: path.to_string(),
            name: k.0.to_string(),
            old: old.get(&k).map(|s| s.to_string()),
            new: new.get(&k).map(|s| s.to_string()),
        })
        .collect()
}

fn split_key_value(content: &str) -> Option<(&str, &str)> {
    let (key, rest) = content.split_once(':')?;
    let key = unquote(key.trim());
    if key.is_empty() || key.contains(char::is_whitespace) {
        return None;
    }
    // `key:value` without a space is not a YAML mapping (it may be an image reference in a list).
    if !(rest.is_empty() || rest.starts_with(' ') || rest.starts_with('\t')) {
        return None;
    }
    let value = match rest.find(" #") {
        Some(i) => &rest[..i],
        None => rest,
    };
    Some((key, value.trim()))
}

fn unquote(s: &str) -> &str {
    let s = s.trim();
    for q in ['"', '\''] {
        if let Some(inner) = s.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return inner;
        }
    }
    s
}

/// `[registry[:port]/]repository[:tag][@digest]`
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ImageRef<'a> {
    pub repository: &'a str,
    pub tag: Option<&'a str>,
    pub digest: Option<&'a str>,
}

impl<'a> ImageRef<'a> {
    pub(crate) fn parse(s: &'a str) -> Self {
        let (name, digest) = match s.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (s, None),
        };
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match name[last_slash..].rfind(':') {
            Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
            None => (name, None),
        };
        ImageRef { repository, tag, digest }
    }

    /// Pinned by digest, or by a tag that is not `latest`.
    pub(crate) fn is_mutable(&self) -> bool {
        if self.digest.is_some_and(|d| !d.is_empty()) {
            return false;
        }
        !matches!(self.tag, Some(t) if !t.is_empty() && t != "latest")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_refs() {
        let cases = [
            ("nginx", "nginx", None, None, true),
            ("nginx:latest", "nginx", Some("latest"), None, true),
            ("ghcr.io/acme/checkout:1.4.2", "ghcr.io/acme/checkout", Some("1.4.2"), None, false),
            ("localhost:5000/cart", "localhost:5000/cart", None, None, true),
            ("localhost:5000/cart:2", "localhost:5000/cart", Some("2"), None, false),
            ("acme/cart@sha256:abcd", "acme/cart", None, Some("sha256:abcd"), false),
            ("acme/cart:latest@sha256:abcd", "acme/cart", Some("latest"), Some("sha256:abcd"), false),
        ];
        for (s, repo, tag, digest, mutable) in cases {
            let r = ImageRef::parse(s);
            assert_eq!((r.repository, r.tag, r.digest), (repo, tag, digest), "{s}");
            assert_eq!(r.is_mutable(), mutable, "{s}");
        }
    }

    #[test]
    fn scans_images_and_nested_keys() {
        let text = "\
spec:
  containers:
    - name: app
      image: \"ghcr.io/acme/checkout:1.4.2\" # pinned
    - name: sidecar
      image: envoy:latest
image:
  repository: acme/cart
  tag: 2.0.1
chart:
  version: '^1.2'
  digest: sha256:ff
";
        let refs = scan(text);
        let summary: Vec<_> = refs.iter().map(|r| (r.name.as_str(), r.value.as_str(), r.mutable)).collect();
        assert_eq!(
            summary,
            vec![
                ("image ghcr.io/acme/checkout", "ghcr.io/acme/checkout:1.4.2", false),
                ("image envoy", "envoy:latest", true),
                ("image.tag", "2.0.1", false),
                ("chart.version", "^1.2", false),
                ("chart.digest", "sha256:ff", false),
            ]
        );
        assert_eq!(refs[0].line, 4);
    }

    #[test]
    fn diff_pairs_by_name() {
        let old = scan("image: acme/checkout:1.5.0\nreplicas: 3\n");
        let new = scan("image: acme/checkout:1.4.2\nreplicas: 3\n");
        assert_eq!(
            diff("apps/checkout/prod/deployment.yaml", &old, &new),
            vec![ArtifactChange {
                path: "apps/checkout/prod/deployment.yaml".into(),
                name: "image acme/checkout".into(),
                old: Some("acme/checkout:1.5.0".into()),
                new: Some("acme/checkout:1.4.2".into()),
            }]
        );
        assert!(diff("x", &old, &old).is_empty());
    }
}
