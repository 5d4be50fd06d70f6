//! Container registries, asked over the OCI distribution API whether an image a rollback would
//! bring back still exists: `HEAD /v2/<name>/manifests/<tag|digest>`. Only registries listed in
//! `registries:` are asked; an image elsewhere is not (rollbackd makes no call the operator did
//! not configure).
//!
//! Authentication, as registries ask for it (the distribution token spec): a registry that
//! wants a token answers 401 with `WWW-Authenticate: Bearer realm=..,service=..`; rollbackd
//! GETs the realm with `service` and `scope=repository:<name>:pull` (with the configured
//! username and password as Basic credentials, else anonymously), takes `token` or
//! `access_token` from the JSON, keeps it per (registry, scope) for `expires_in` (60 s when
//! absent) and asks once more. A registry that answers `Basic` (htpasswd) gets the credentials
//! themselves. A ready token in `token_env` is sent as it is, and a challenge to it is a
//! refusal. The realm comes from the remote: it is followed only as an http(s) URL of bounded
//! length without user info, over https unless the registry itself is plain http or on
//! loopback, never redirected, its answer read to a bound.
//!
//! A registry is a remote rollbackd does not own: every question runs on a thread of its own
//! with the registry's timeout, the asker waits at most a budget it chooses (the writer: none,
//! it reads the last answer), and what comes back is hostile input (names checked against the
//! distribution spec's patterns before they are put in a URL, bodies never read past a bound).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::RegistryConfig;
use crate::support::asker::Asker;
use crate::support::secret::SecretString;

/// Questions out at once; a registry that hangs them all costs at most this many threads.
const MAX_IN_FLIGHT: usize = 16;
/// An answer older than this is asked again.
const FRESH_FOR: Duration = Duration::from_secs(300);
/// Longest image reference considered (the spec bounds a name at 255 characters).
const MAX_REFERENCE: usize = 512;
/// Longest `WWW-Authenticate` value read.
const MAX_CHALLENGE: usize = 4096;
/// Longest realm URL followed.
const MAX_REALM: usize = 1024;
/// Longest `service` passed on to the token service.
const MAX_SERVICE: usize = 255;
/// Longest token kept and sent.
const MAX_TOKEN: usize = 16 * 1024;
/// Most of a token service's answer read.
const MAX_TOKEN_ANSWER: u64 = 64 * 1024;
/// A token's life when its answer gives none (the spec's default), and the longest kept.
const DEFAULT_TOKEN_LIFE: Duration = Duration::from_secs(60);
const MAX_TOKEN_LIFE: Duration = Duration::from_secs(3600);

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
    /// The registry is plain http or on loopback: a token service it names may be plain http.
    plain_realm: bool,
    auth: Auth,
    agent: ureq::Agent,
    /// Held while a token is fetched, so questions about one repository fetch it once.
    fetching: Mutex<()>,
}

/// What rollbackd sends a registry, from its entry in `registries:`.
enum Auth {
    Anonymous,
    /// `token_env`: a ready bearer token, sent as it is.
    Token(SecretString),
    /// `username` with `password_env` / `password_file`.
    Basic {
        username: String,
        password: SecretString,
    },
    /// Credentials are configured but cannot be read: every question says so.
    Unusable(String),
}

impl Auth {
    fn from_config(c: &RegistryConfig) -> Auth {
        if let Some(username) = &c.username {
            let password = match (&c.password_env, &c.password_file) {
                (Some(var), _) => std::env::var(var).map_err(|_| format!("env var {var} (password_env) is not set")),
                (None, Some(file)) => std::fs::read_to_string(file)
                    .map_err(|e| format!("password_file {} cannot be read: {}", file.display(), e.kind())),
                (None, None) => Err("username has no password_env or password_file".to_string()),
            };
            return match password.map(|p| p.trim().to_string()) {
                Ok(p) if !p.is_empty() => Auth::Basic { username: username.clone(), password: SecretString::new(p) },
                Ok(_) => Auth::Unusable("the password of username is empty".into()),
                Err(why) => Auth::Unusable(why),
            };
        }
        match c.token_env.as_ref().and_then(|v| std::env::var(v).ok()).filter(|t| !t.trim().is_empty()) {
            Some(t) => Auth::Token(SecretString::new(t.trim())),
            None => Auth::Anonymous,
        }
    }

    fn basic(&self) -> Option<String> {
        use base64::Engine as _;
        match self {
            Auth::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{}", password.expose()))
            )),
            _ => None,
        }
    }
}

/// The configured registries and the tokens their token services gave.
struct Clients {
    registries: Vec<Registry>,
    /// Tokens from token services, by (registry host, scope), with when they stop being used.
    tokens: Mutex<HashMap<(String, String), (SecretString, Instant)>>,
}

/// Asks the configured registries on threads of their own; see the module doc.
#[derive(Clone)]
pub(crate) struct Registries {
    clients: Arc<Clients>,
    asker: Asker<String, Presence>,
}

impl std::fmt::Debug for Registries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registries").field("registries", &self.clients.registries.len()).finish_non_exhaustive()
    }
}

impl Default for Registries {
    fn default() -> Self {
        Registries::new(&[])
    }
}

impl Registries {
    /// The registries of the config; each token and password is read once, here.
    pub(crate) fn new(configs: &[RegistryConfig]) -> Self {
        let registries = configs
            .iter()
            .map(|c| {
                let base =
                    c.url.clone().unwrap_or_else(|| format!("https://{}", c.host)).trim_end_matches('/').to_string();
                Registry {
                    host: c.host.clone(),
                    plain_realm: base.starts_with("http://") || is_loopback(&c.host),
                    base,
                    auth: Auth::from_config(c),
                    agent: crate::outbound::agent(c.timeout.as_std()),
                    fetching: Mutex::new(()),
                }
            })
            .collect();
        let clients = Arc::new(Clients { registries, tokens: Mutex::new(HashMap::new()) });
        let asked = clients.clone();
        let asker = Asker::new("registry", MAX_IN_FLIGHT, |_| FRESH_FOR, move |image: &String| asked.head(image));
        Registries { clients, asker }
    }

    /// Whether rollbackd would ask about `image` (its registry is configured and it parses).
    pub(crate) fn covers(&self, image: &str) -> bool {
        parse_image(image).is_some_and(|i| self.clients.registries.iter().any(|r| r.host == i.host))
    }

    /// Asks about each image a configured registry holds (unless asked lately or out already),
    /// then waits until each has an answer or `budget` is over. Returns the answers known by
    /// then; an image not asked about (or not answered yet) is absent.
    pub(crate) fn ask_all(&self, images: &[String], budget: Duration) -> HashMap<String, Presence> {
        let wanted: Vec<String> = images.iter().filter(|i| self.covers(i)).cloned().collect();
        self.asker.ask_all(&wanted, budget).into_iter().map(|(i, kept)| (i, kept.value)).collect()
    }
}

impl Clients {
    fn tokens(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), (SecretString, Instant)>> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `HEAD /v2/<name>/manifests/<reference>` on the image's registry, answering the challenge
    /// it makes (see the module doc).
    fn head(&self, image: &str) -> Presence {
        let Some(i) = parse_image(image) else { return Presence::Unknown("not an image reference".into()) };
        let Some(r) = self.registries.iter().find(|r| r.host == i.host) else {
            return Presence::Unknown(format!("{} is not in registries", i.host));
        };
        if let Auth::Unusable(why) = &r.auth {
            return Presence::Unknown(format!("{} was not asked: {why}", r.host));
        }
        let url = format!("{}/v2/{}/manifests/{}", r.base, i.name, i.reference);
        let scope = format!("repository:{}:pull", i.name);
        let key = (r.host.clone(), scope.clone());
        let cached = self.token(&key);
        let first = match (&cached, &r.auth) {
            (Some(t), _) | (None, Auth::Token(t)) => Some(format!("Bearer {}", t.expose())),
            _ => None,
        };
        let challenge = match manifest(r, &url, first.as_deref()) {
            Asked::Said(p) => return p,
            Asked::Challenged(c) => c,
        };
        if cached.is_some() {
            // Expired early or revoked: fetch a new one, once.
            self.tokens().remove(&key);
        }
        let refused = |how: &str| Presence::Unknown(format!("{} refused the question (401{how})", r.host));
        match (challenge, &r.auth) {
            (_, Auth::Token(_)) => refused(", to the token in token_env"),
            (Some(Challenge::Bearer { realm, service }), _) => {
                let token = match self.fetch_token(r, &key, &realm, service.as_deref()) {
                    Ok(t) => t,
                    Err(why) => return Presence::Unknown(why),
                };
                match manifest(r, &url, Some(&format!("Bearer {}", token.expose()))) {
                    Asked::Said(p) => p,
                    Asked::Challenged(_) => refused(&format!(
                        ", to the token its token service gave{}: it grants no pull of {}",
                        who(&r.auth),
                        i.name
                    )),
                }
            }
            (Some(Challenge::Basic), Auth::Basic { username, .. }) => {
                match manifest(r, &url, r.auth.basic().as_deref()) {
                    Asked::Said(p) => p,
                    Asked::Challenged(_) => refused(&format!(", to the credentials of {username}")),
                }
            }
            (Some(Challenge::Basic), _) => refused(": it asks for a username and password, and none is configured"),
            (None, _) => refused(""),
        }
    }

    /// The token kept for (registry, scope), while it lasts.
    fn token(&self, key: &(String, String)) -> Option<SecretString> {
        let mut tokens = self.tokens();
        match tokens.get(key) {
            Some((t, until)) if Instant::now() < *until => Some(t.clone()),
            Some(_) => {
                tokens.remove(key);
                None
            }
            None => None,
        }
    }

    /// GETs a token from the realm a Bearer challenge named, with `service` and the scope (and
    /// Basic credentials when configured); keeps it for `expires_in`. One fetch at a time per
    /// registry: a question that waited takes the token the one before it fetched.
    fn fetch_token(
        &self,
        r: &Registry,
        key: &(String, String),
        realm: &str,
        service: Option<&str>,
    ) -> Result<SecretString, String> {
        let _one = r.fetching.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = self.token(key) {
            return Ok(t);
        }
        let realm = allowed_realm(realm, r.plain_realm)
            .map_err(|why| format!("{} named a token service rollbackd does not ask: {why}", r.host))?;
        let started = Instant::now();
        let mut req = r.agent.get(realm).query("scope", &key.1);
        if let Some(s) = service {
            req = req.query("service", s);
        }
        if let Some(basic) = r.auth.basic() {
            req = req.header("Authorization", &basic);
        }
        // The error text names the realm (not a secret: the credentials are a header).
        let mut resp = req.call().map_err(|e| format!("{}'s token service cannot be reached: {e}", r.host))?;
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            return Err(format!(
                "{}'s token service refused {} ({status})",
                r.host,
                match &r.auth {
                    Auth::Basic { username, .. } => format!("the credentials of {username}"),
                    _ => "an anonymous request (set username and password_env or password_file)".to_string(),
                }
            ));
        }
        if !(200..300).contains(&status) {
            return Err(format!("{}'s token service answered {status}", r.host));
        }
        let body =
            resp.body_mut().with_config().limit(MAX_TOKEN_ANSWER).read_to_vec().map_err(|_| {
                format!("{}'s token service sent an answer that cannot be read (at most 64 KiB)", r.host)
            })?;
        let (token, life) = parse_token_answer(&body)
            .ok_or_else(|| format!("{}'s token service answered without a usable token", r.host))?;
        self.tokens().insert(key.clone(), (token.clone(), started + life));
        Ok(token)
    }
}

/// What one HEAD came to: an answer that settles it, or a 401 and the challenge it made.
enum Asked {
    Said(Presence),
    Challenged(Option<Challenge>),
}

fn manifest(r: &Registry, url: &str, authorization: Option<&str>) -> Asked {
    let mut req = r.agent.head(url).header(
        "Accept",
        "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
         application/vnd.docker.distribution.manifest.list.v2+json, \
         application/vnd.docker.distribution.manifest.v2+json",
    );
    if let Some(a) = authorization {
        req = req.header("Authorization", a);
    }
    match req.call() {
        Ok(resp) => match resp.status().as_u16() {
            200..=299 => Asked::Said(Presence::Present),
            404 => Asked::Said(Presence::Missing),
            401 => Asked::Challenged(
                resp.headers()
                    .get_all("www-authenticate")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .find_map(parse_challenge),
            ),
            403 => Asked::Said(Presence::Unknown(format!("{} refused the question (403)", r.host))),
            s => Asked::Said(Presence::Unknown(format!("{} answered {s}", r.host))),
        },
        // The error text can hold the URL; it holds no secret (the credentials are a header).
        Err(e) => Asked::Said(Presence::Unknown(format!("{} cannot be reached: {e}", r.host))),
    }
}

/// ` as <username>` when credentials went with the request.
fn who(auth: &Auth) -> String {
    match auth {
        Auth::Basic { username, .. } => format!(" as {username}"),
        _ => " anonymously".to_string(),
    }
}

fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => {
            host.rsplit_once(':').filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h)
        }
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// How a registry asks to be authenticated, from one `WWW-Authenticate` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// Get a token from `realm` (a URL, unchecked here), naming `service`.
    Bearer { realm: String, service: Option<String> },
    /// Send a username and password.
    Basic,
}

/// `Bearer realm="https://auth.example/token",service="registry.example",scope="..."` or
/// `Basic realm="..."` (RFC 7235 auth-params, quoted or not); `None` for another scheme, a
/// Bearer challenge without a realm, a value past the bound, or one that does not parse.
pub fn parse_challenge(value: &str) -> Option<Challenge> {
    if value.len() > MAX_CHALLENGE {
        return None;
    }
    let value = value.trim_start();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params: HashMap<String, String> = HashMap::new();
    let mut rest = rest.trim_start();
    while !rest.is_empty() {
        let Some((name, after)) = rest.split_once('=') else { break };
        let name = name.trim();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)) {
            // Another challenge after this one: this one is read.
            break;
        }
        let after = after.trim_start();
        let (v, after) = if let Some(quoted) = after.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((at, c)) = chars.next() {
                match c {
                    '\\' => v.push(chars.next()?.1),
                    '"' => {
                        end = Some(at + 1);
                        break;
                    }
                    c => v.push(c),
                }
            }
            (v, &quoted[end?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.entry(name.to_ascii_lowercase()).or_insert(v);
        rest = after.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    let realm = params.remove("realm").filter(|r| !r.is_empty())?;
    let service = params
        .remove("service")
        .filter(|s| !s.is_empty() && s.len() <= MAX_SERVICE && !s.chars().any(char::is_control));
    Some(Challenge::Bearer { realm, service })
}

/// The realm as a URL rollbackd will GET, or why not: http(s) only (plain http only when
/// `plain` allows), bounded, visible ASCII, a host, no user info, no fragment.
pub fn allowed_realm(realm: &str, plain: bool) -> Result<&str, &'static str> {
    if realm.len() > MAX_REALM {
        return Err("its URL is too long");
    }
    if !realm.bytes().all(|b| b.is_ascii_graphic()) || realm.contains(['#', '\\']) {
        return Err("its URL holds characters a URL here must not");
    }
    let lower = realm.get(..8).unwrap_or(realm).to_ascii_lowercase();
    let rest = if lower.starts_with("https://") {
        &realm[8..]
    } else if lower.starts_with("http://") {
        if !plain {
            return Err("plain http for a registry asked over https");
        }
        &realm[7..]
    } else {
        return Err("not an http(s) URL");
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return Err("no host, or user info in its URL");
    }
    Ok(realm)
}

/// `token` or `access_token` from a token service's JSON, and how long to keep it.
pub fn parse_token_answer(body: &[u8]) -> Option<(SecretString, Duration)> {
    #[derive(serde::Deserialize)]
    struct TokenAnswer {
        token: Option<String>,
        access_token: Option<String>,
        expires_in: Option<u64>,
    }
    let a: TokenAnswer = serde_json::from_slice(body).ok()?;
    let token = a.token.filter(|t| !t.is_empty()).or(a.access_token)?;
    // It goes into a header: visible ASCII only (no CR/LF, no space), bounded.
    if token.is_empty() || token.len() > MAX_TOKEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let life = match a.expires_in {
        Some(0) | None => DEFAULT_TOKEN_LIFE,
        Some(s) => Duration::from_secs(s).min(MAX_TOKEN_LIFE),
    };
    Some((SecretString::new(token), life))
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

    #[test]
    fn challenges_read_as_registries_write_them() {
        let hub = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#;
        assert_eq!(
            parse_challenge(hub),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into())
            })
        );
        // Unquoted values, odd spacing, an escaped quote, a second challenge after the first.
        assert_eq!(
            parse_challenge(r#"bearer  realm=https://a.example/t , service="s\"x", Basic realm="r""#),
            Some(Challenge::Bearer { realm: "https://a.example/t".into(), service: Some("s\"x".into()) })
        );
        assert_eq!(parse_challenge(r#"Basic realm="Registry Realm""#), Some(Challenge::Basic));
        for refused in [
            "Bearer service=\"x\"",     // no realm
            "Bearer realm=\"\"",        // empty realm
            "Bearer realm=\"https://a", // unterminated
            "Negotiate",
            "",
        ] {
            assert_eq!(parse_challenge(refused), None, "{refused}");
        }
        let long = format!("Bearer realm=\"https://a.example/{}\"", "x".repeat(MAX_CHALLENGE));
        assert_eq!(parse_challenge(&long), None);
    }

    #[test]
    fn a_realm_is_followed_only_where_the_registry_allows() {
        assert_eq!(allowed_realm("https://auth.example/token?x=1", false), Ok("https://auth.example/token?x=1"));
        assert!(allowed_realm("HTTPS://auth.example/token", false).is_ok());
        assert!(allowed_realm("http://127.0.0.1:5001/token", true).is_ok());
        for (realm, plain) in [
            ("http://auth.example/token", false), // plain http for an https registry
            ("ftp://auth.example/token", true),
            ("file:///etc/passwd", true),
            ("https://user:pw@auth.example/token", false),
            ("https:///token", false),
            ("https://auth.example/to ken", false),
            ("https://auth.example/token\r\nX: y", false),
            ("https://auth.example/#x", false),
            ("//auth.example/token", false),
        ] {
            assert!(allowed_realm(realm, plain).is_err(), "{realm}");
        }
        assert!(allowed_realm(&format!("https://a.example/{}", "x".repeat(MAX_REALM)), false).is_err());
        assert!(is_loopback("127.0.0.1:5000") && is_loopback("localhost") && is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry.example.com:5000") && !is_loopback("10.0.0.1"));
    }

    #[test]
    fn a_token_answer_gives_token_or_access_token_for_expires_in_or_a_minute() {
        let (t, life) = parse_token_answer(br#"{"token":"abc.def","expires_in":300}"#).unwrap();
        assert_eq!((t.expose(), life), ("abc.def", Duration::from_secs(300)));
        let (t, life) = parse_token_answer(br#"{"access_token":"xyz"}"#).unwrap();
        assert_eq!((t.expose(), life), ("xyz", DEFAULT_TOKEN_LIFE));
        let (_, life) = parse_token_answer(br#"{"token":"a","expires_in":99999999}"#).unwrap();
        assert_eq!(life, MAX_TOKEN_LIFE);
        for refused in
            [&br#"{"token":""}"#[..], br#"{"token":"a\r\nX-Evil: 1"}"#, br#"{}"#, b"not json", br#"{"token":"a b"}"#]
        {
            assert!(parse_token_answer(refused).is_none(), "{}", String::from_utf8_lossy(refused));
        }
    }

    proptest::proptest! {
        /// Whatever a registry sends as a challenge, reading it never panics, and a realm that
        /// passes is an http(s) URL of bounded length without user info.
        #[test]
        fn any_challenge_reads_without_panic(s in "\\PC{0,300}") {
            if let Some(Challenge::Bearer { realm, .. }) = parse_challenge(&s)
                && let Ok(url) = allowed_realm(&realm, false)
            {
                proptest::prop_assert!(url.to_ascii_lowercase().starts_with("https://") && url.len() <= MAX_REALM);
            }
        }

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
