//! Container registries, asked over the OCI distribution API whether an image a rollback would
//! bring back still exists: `HEAD /v2/<name>/manifests/<tag|digest>`, anonymously or with the
//! bearer token the config names. Only registries listed in `registries:` are asked; an image
//! elsewhere is not (rollbackd makes no call the operator did not configure).
//!
//! A registry is a remote rollbackd does not own: every question runs on a thread of its own
//! with the registry's timeout, the asker waits at most a budget it chooses (the writer: none,
//! it reads the last answer), and what comes back is hostile input (names checked against the
//! distribution spec's patterns before they are put in a URL, bodies never read past a bound).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::config::RegistryConfig;
use crate::support::secret::SecretString;

/// Questions out at once; a registry that hangs them all costs at most this many threads.
const MAX_IN_FLIGHT: usize = 16;
/// An answer older than this is asked again.
const FRESH_FOR: Duration = Duration::from_secs(300);
/// Longest image reference considered (the spec bounds a name at 255 characters).
const MAX_REFERENCE: usize = 512;

/// An image reference split as the distribution API names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageName<'a> {
    pub host: &'a str,
    /// The repository within the registry, e.g. `acme/checkout`.
    pub name: &'a str,
    /// A digest when the reference has one, else the tag.
    pub reference: &'a str,
}

/// `host/name:tag` or `host/name@sha256:...` into its parts; `None` when it has no host, no
/// tag or digest, or a part the distribution spec does not allow.
pub fn parse_image(image: &str) -> Option<ImageName<'_>> {
    if image.len() > MAX_REFERENCE {
        return None;
    }
    let (host, rest) = image.split_once('/')?;
    if !(host.contains('.') || host.contains(':') || host == "localhost") || !valid_host(host) {
        return None;
    }
    let parsed = crate::domain::artifacts::ImageRef::parse(rest);
    let reference = match (parsed.digest, parsed.tag) {
        (Some(d), _) if valid_digest(d) => d,
        (Some(_), _) => return None,
        (None, Some(t)) if valid_tag(t) => t,
        _ => return None,
    };
    valid_name(parsed.repository).then_some(ImageName { host, name: parsed.repository, reference })
}

fn valid_host(h: &str) -> bool {
    !h.is_empty() && h.len() <= 253 && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b))
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`, at most 255.
fn valid_name(name: &str) -> bool {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| {
        regex::Regex::new(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$")
            .expect("static regex")
    });
    name.len() <= 255 && re.is_match(name)
}

/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
fn valid_tag(tag: &str) -> bool {
    let mut b = tag.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
        && tag.len() <= 128
        && b.all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
}

/// `sha256:` and 64 hex, or `sha512:` and 128.
fn valid_digest(d: &str) -> bool {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
    match d.split_once(':') {
        Some(("sha256", h)) => hex(h, 64),
        Some(("sha512", h)) => hex(h, 128),
        _ => false,
    }
}

/// What a registry said about one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Presence {
    Present,
    /// The registry answered 404: the manifest is gone.
    Missing,
    /// No answer that tells (unreachable, refused, an error): never taken for "missing".
    Unknown(String),
}

struct Registry {
    host: String,
    base: String,
    token: Option<SecretString>,
    agent: ureq::Agent,
}

#[derive(Default)]
struct State {
    answers: HashMap<String, (Presence, Instant)>,
    in_flight: HashSet<String>,
}

struct Inner {
    registries: Vec<Registry>,
    state: Mutex<State>,
    changed: Condvar,
}

/// Asks the configured registries on threads of their own; see the module doc.
#[derive(Clone)]
pub(crate) struct Registries {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Registries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registries").field("registries", &self.inner.registries.len()).finish_non_exhaustive()
    }
}

impl Default for Registries {
    fn default() -> Self {
        Registries::new(&[])
    }
}

impl Registries {
    /// The registries of the config; each token is read from its env var once, here.
    pub(crate) fn new(configs: &[RegistryConfig]) -> Self {
        let registries = configs
            .iter()
            .map(|c| Registry {
                host: c.host.clone(),
                base: c.url.clone().unwrap_or_else(|| format!("https://{}", c.host)).trim_end_matches('/').to_string(),
                token: c
                    .token_env
                    .as_ref()
                    .and_then(|v| std::env::var(v).ok())
                    .filter(|t| !t.trim().is_empty())
                    .map(|t| SecretString::new(t.trim())),
                agent: crate::outbound::agent(c.timeout.as_std()),
            })
            .collect();
        Registries {
            inner: Arc::new(Inner { registries, state: Mutex::new(State::default()), changed: Condvar::new() }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether rollbackd would ask about `image` (its registry is configured and it parses).
    pub(crate) fn covers(&self, image: &str) -> bool {
        parse_image(image).is_some_and(|i| self.inner.registries.iter().any(|r| r.host == i.host))
    }

    /// Asks about each image a configured registry holds (unless asked lately or out already),
    /// then waits until each has an answer or `budget` is over. Returns the answers known by
    /// then; an image not asked about (or not answered yet) is absent.
    pub(crate) fn ask_all(&self, images: &[String], budget: Duration) -> HashMap<String, Presence> {
        let wanted: Vec<&String> = images.iter().filter(|i| self.covers(i)).collect();
        for image in &wanted {
            self.ask(image);
        }
        let deadline = Instant::now() + budget;
        let mut st = self.state();
        loop {
            let settled = wanted.iter().all(|i| !st.in_flight.contains(*i));
            let now = Instant::now();
            if settled || now >= deadline {
                break;
            }
            st = match self.inner.changed.wait_timeout(st, deadline - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
        wanted.into_iter().filter_map(|i| st.answers.get(i).map(|(p, _)| (i.clone(), p.clone()))).collect()
    }

    fn ask(&self, image: &str) {
        {
            let mut st = self.state();
            let fresh = st.answers.get(image).is_some_and(|(_, at)| at.elapsed() < FRESH_FOR);
            if fresh || st.in_flight.contains(image) || st.in_flight.len() >= MAX_IN_FLIGHT {
                return;
            }
            st.in_flight.insert(image.to_string());
        }
        let me = self.clone();
        let image = image.to_string();
        let spawned = std::thread::Builder::new().name("registry".into()).spawn({
            let image = image.clone();
            move || {
                let answer = me.head(&image);
                let mut st = me.state();
                st.in_flight.remove(&image);
                st.answers.insert(image, (answer, Instant::now()));
                drop(st);
                me.inner.changed.notify_all();
            }
        });
        if spawned.is_err() {
            self.state().in_flight.remove(&image);
        }
    }

    /// `HEAD /v2/<name>/manifests/<reference>` on the image's registry.
    fn head(&self, image: &str) -> Presence {
        let Some(i) = parse_image(image) else { return Presence::Unknown("not an image reference".into()) };
        let Some(r) = self.inner.registries.iter().find(|r| r.host == i.host) else {
            return Presence::Unknown(format!("{} is not in registries", i.host));
        };
        let url = format!("{}/v2/{}/manifests/{}", r.base, i.name, i.reference);
        let mut req = r.agent.head(&url).header(
            "Accept",
            "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
             application/vnd.docker.distribution.manifest.list.v2+json, \
             application/vnd.docker.distribution.manifest.v2+json",
        );
        if let Some(t) = &r.token {
            req = req.header("Authorization", &format!("Bearer {}", t.expose()));
        }
        match req.call() {
            Ok(resp) => match resp.status().as_u16() {
                200..=299 => Presence::Present,
                404 => Presence::Missing,
                401 | 403 => Presence::Unknown(format!("{} refused the question ({})", r.host, resp.status().as_u16())),
                s => Presence::Unknown(format!("{} answered {s}", r.host)),
            },
            // The error text can hold the URL; it holds no secret (the token is a header).
            Err(e) => Presence::Unknown(format!("{} cannot be reached: {e}", r.host)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_split_as_the_distribution_api_names_them() {
        let d = format!("sha256:{}", "a".repeat(64));
        let with_digest = format!("reg.example.com/acme/cart@{d}");
        assert_eq!(
            parse_image("127.0.0.1:5000/acme/checkout:1.4.0"),
            Some(ImageName { host: "127.0.0.1:5000", name: "acme/checkout", reference: "1.4.0" })
        );
        assert_eq!(parse_image(&with_digest).map(|i| i.reference), Some(d.as_str()));
        for refused in [
            "checkout:1.4.0",                // no host: not asked about
            "reg.example.com/acme/checkout", // no tag
            "reg.example.com/acme/checkout:latest/../x",
            "reg.example.com/Acme/checkout:1",    // upper case name
            "reg.example.com/acme/checkout:-bad", // tag must not start with '-'
            "reg.example.com/acme/cart@sha256:zz",
            "reg.example.com/a?b=c/x:1",
            "reg.example.com/a/x:1#frag",
        ] {
            assert_eq!(parse_image(refused), None, "{refused}");
        }
    }

    proptest::proptest! {
        /// Whatever a repository's file says, what reaches a URL is only what the spec allows.
        #[test]
        fn nothing_but_spec_characters_reach_the_url(s in "\\PC{0,300}") {
            if let Some(i) = parse_image(&s) {
                let ok = |c: char| c.is_ascii_alphanumeric() || "._-/:".contains(c);
                proptest::prop_assert!(i.name.chars().all(ok) && i.reference.chars().all(ok));
                proptest::prop_assert!(!i.name.contains("..") && !i.name.starts_with('/'));
            }
        }
    }
}
