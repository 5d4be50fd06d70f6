//! Debian's `docker-registry` (distribution 2.8) on a loopback port, open, behind htpasswd
//! (bcrypt), or behind token auth with a token service the test runs: the one the distribution
//! token spec describes, as strict as the spec (a `service` it serves, well-formed `scope`s,
//! Basic credentials checked, only the intersection of asked and granted actions in the JWT).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::{free_port, wait_for};

/// How the registry authenticates.
pub enum RegistryAuth<'a> {
    None,
    /// `auth: htpasswd` with these (username, password) pairs, hashed with bcrypt.
    Htpasswd(&'a [(&'a str, &'a str)]),
    /// `auth: token`, trusting the token service's certificate.
    Token(&'a TokenService),
}

/// The registry process, killed on drop.
pub struct Registry {
    child: std::process::Child,
    pub port: u16,
    /// The `Authorization` header the test's pushes carry.
    pub push_auth: Option<String>,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(bytes);
    format!("sha256:{}", d.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// A bcrypt hash of `password` as htpasswd keeps it. Made by the system's crypt(3) through
/// perl: Debian's libcrypt (libxcrypt) does bcrypt, and perl-base is essential on Debian, so a
/// fresh machine has both and nothing is added to the build for it.
pub fn bcrypt(password: &str) -> String {
    let alphabet = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let salt: String = (0..22).map(|i| alphabet[((nanos >> (i % 20)) as usize + i * 7) % 64] as char).collect();
    let out = std::process::Command::new("perl")
        .args(["-e", "print crypt($ARGV[0], $ARGV[1])", password, &format!("$2b$05${salt}")])
        .output()
        .expect("perl");
    let hash = String::from_utf8(out.stdout).unwrap();
    assert!(hash.starts_with("$2b$05$") && hash.len() == 60, "crypt(3) made no bcrypt hash: {hash:?}");
    hash
}

impl Registry {
    pub fn start() -> Registry {
        Registry::with_auth(RegistryAuth::None)
    }

    pub fn with_auth(auth: RegistryAuth<'_>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let auth_yaml = match auth {
            RegistryAuth::None => String::new(),
            RegistryAuth::Htpasswd(users) => {
                let file = dir.path().join("htpasswd");
                let lines: String = users.iter().map(|(u, p)| format!("{u}:{}\n", bcrypt(p))).collect();
                std::fs::write(&file, lines).unwrap();
                format!("auth:\n  htpasswd:\n    realm: test-registry\n    path: {}\n", file.display())
            }
            RegistryAuth::Token(t) => {
                let bundle = dir.path().join("token-issuer.pem");
                std::fs::write(&bundle, &t.cert_pem).unwrap();
                format!(
                    "auth:\n  token:\n    realm: {}/token\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                    t.url,
                    t.service,
                    t.issuer,
                    bundle.display()
                )
            }
        };
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n{auth_yaml}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = std::process::Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry (Debian package docker-registry) is installed");
        let r = Registry { child, port, push_auth: None, _dir: dir };
        // Open, it answers 200; behind auth, 401 with its challenge.
        wait_for("the registry to answer /v2/", 20, || {
            r.agent()
                .get(&format!("{}/v2/", r.url()))
                .call()
                .is_ok_and(|resp| [200, 401].contains(&resp.status().as_u16()))
        });
        r
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn agent(&self) -> ureq::Agent {
        ureq::Agent::config_builder().http_status_as_error(false).build().into()
    }

    fn authorized<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.push_auth {
            Some(a) => req.header("Authorization", a),
            None => req,
        }
    }

    /// Uploads `bytes` as a blob of `name` (POST then PUT, as `docker push` does).
    pub fn push_blob(&self, name: &str, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let resp = self
            .authorized(self.agent().post(&format!("{}/v2/{name}/blobs/uploads/", self.url())))
            .send_empty()
            .unwrap();
        assert_eq!(resp.status(), 202, "starting an upload");
        let location = resp.headers().get("location").unwrap().to_str().unwrap().to_string();
        let location = if location.starts_with('/') { format!("{}{location}", self.url()) } else { location };
        let sep = if location.contains('?') { '&' } else { '?' };
        let resp = self
            .authorized(self.agent().put(&format!("{location}{sep}digest={digest}")))
            .header("Content-Type", "application/octet-stream")
            .send(bytes)
            .unwrap();
        assert_eq!(resp.status(), 201, "finishing the upload");
        digest
    }

    /// An OCI image manifest for `name:tag`, with a config and one layer: what a real image is.
    pub fn push_image(&self, name: &str, tag: &str) {
        let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let layer = format!("layer of {name}:{tag}").into_bytes();
        let (c, l) = (self.push_blob(name, config), self.push_blob(name, &layer));
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": config.len() },
            "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": l, "size": layer.len() }],
        });
        let resp = self
            .authorized(self.agent().put(&format!("{}/v2/{name}/manifests/{tag}", self.url())))
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .send(manifest.to_string())
            .unwrap();
        assert_eq!(resp.status(), 201, "pushing the manifest");
    }
}

/// A token service (the distribution token spec's "authorization server"): `GET /token` with
/// `service` and `scope`, Basic credentials optional, answering `{"access_token", "expires_in",
/// "issued_at"}` with an ES256 JWT whose `x5c` header carries its self-signed certificate, the
/// one the registry's `rootcertbundle` trusts.
pub struct TokenService {
    pub url: String,
    pub service: String,
    pub issuer: String,
    pub cert_pem: String,
    inner: Arc<Issuer>,
    _dir: tempfile::TempDir,
}

struct Issuer {
    key: jsonwebtoken::EncodingKey,
    /// The certificate, base64 DER, for `x5c`.
    cert: String,
    service: String,
    issuer: String,
    /// username → (password, repositories it may pull).
    users: HashMap<String, (String, Vec<String>)>,
    /// Each request, as `<user or -> service=<service> scope=<scope>` (or `401 ...`).
    log: Mutex<Vec<String>>,
    minted: std::sync::atomic::AtomicU64,
}

impl TokenService {
    /// `users`: (username, password, repositories it may pull). Anonymous requests get tokens
    /// granting nothing.
    pub fn start(users: &[(&str, &str, &[&str])]) -> TokenService {
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
        let out = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .args(["-subj", "/CN=rollbackd test token issuer", "-days", "2", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl (Debian package openssl)");
        assert!(out.status.success(), "openssl req: {}", String::from_utf8_lossy(&out.stderr));
        let cert_pem = std::fs::read_to_string(&cert).unwrap();
        let der_b64: String = cert_pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let issuer = Arc::new(Issuer {
            key: jsonwebtoken::EncodingKey::from_ec_pem(&std::fs::read(&key).unwrap()).unwrap(),
            cert: der_b64,
            service: "rollbackd-test-registry".into(),
            issuer: "rollbackd-test-issuer".into(),
            users: users
                .iter()
                .map(|(u, p, repos)| (u.to_string(), (p.to_string(), repos.iter().map(|r| r.to_string()).collect())))
                .collect(),
            log: Mutex::new(Vec::new()),
            minted: Default::default(),
        });
        let state = issuer.clone();
        let addr = super::net::spawn(move |listener| async move {
            let app = axum::Router::new().route("/token", axum::routing::get(token)).with_state(state);
            axum::serve(listener, app).await.unwrap();
        });
        TokenService {
            url: format!("http://{addr}"),
            service: issuer.service.clone(),
            issuer: issuer.issuer.clone(),
            cert_pem,
            inner: issuer,
            _dir: dir,
        }
    }

    /// A token granting `actions` on `repository`, as the service would mint it.
    pub fn mint(&self, sub: &str, repository: &str, actions: &[&str]) -> String {
        self.inner.mint(sub, &[json!({ "type": "repository", "name": repository, "actions": actions })])
    }

    /// The requests served so far.
    pub fn requests(&self) -> Vec<String> {
        self.inner.log.lock().unwrap().clone()
    }
}

impl Issuer {
    fn mint(&self, sub: &str, access: &[Value]) -> String {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let n = self.minted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.typ = Some("JWT".into());
        header.x5c = Some(vec![self.cert.clone()]);
        let claims = json!({
            "iss": self.issuer, "sub": sub, "aud": self.service,
            "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("token-{now}-{n}"),
            "access": access,
        });
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap()
    }
}

fn error(status: StatusCode, code: &str, extra: Option<(&str, &str)>) -> Response {
    let mut resp = Response::builder().status(status).header("Content-Type", "application/json");
    if let Some((k, v)) = extra {
        resp = resp.header(k, v);
    }
    resp.body(Body::from(json!({ "errors": [{ "code": code, "message": code }] }).to_string())).unwrap()
}

async fn token(State(issuer): State<Arc<Issuer>>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    use base64::Engine as _;
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query.as_deref().unwrap_or_default()).unwrap_or_default();
    let service = pairs.iter().find(|(k, _)| k == "service").map(|(_, v)| v.clone()).unwrap_or_default();
    let scopes: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
        .collect();
    let user = match headers.get("authorization").map(|v| v.to_str().unwrap_or_default()) {
        None => Some(String::new()),
        Some(value) => value
            .strip_prefix("Basic ")
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|pair| {
                let (u, p) = pair.split_once(':')?;
                issuer.users.get(u).filter(|(pw, _)| pw == p).map(|_| u.to_string())
            }),
    };
    let shown = format!("service={service} scope={}", scopes.join(" "));
    let Some(user) = user else {
        issuer.log.lock().unwrap().push(format!("401 {shown}"));
        return error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", Some(("WWW-Authenticate", "Basic realm=\"token\"")));
    };
    issuer.log.lock().unwrap().push(format!("{} {shown}", if user.is_empty() { "-" } else { &user }));
    if service != issuer.service {
        return error(StatusCode::BAD_REQUEST, "UNSUPPORTED_SERVICE", None);
    }
    let granted: &[String] = issuer.users.get(&user).map_or(&[], |(_, repos)| repos);
    let mut access = Vec::new();
    for scope in &scopes {
        // `repository:<name>:<action>[,<action>]`; anything else is a bad request.
        let parsed = scope
            .strip_prefix("repository:")
            .and_then(|rest| rest.rsplit_once(':'))
            .filter(|(name, actions)| !name.is_empty() && !actions.is_empty());
        let Some((name, actions)) = parsed else {
            return error(StatusCode::BAD_REQUEST, "INVALID_SCOPE", None);
        };
        let allowed: Vec<&str> =
            actions.split(',').filter(|a| *a == "pull" && granted.iter().any(|g| g == name)).collect();
        access.push(json!({ "type": "repository", "name": name, "actions": allowed }));
    }
    let token = issuer.mint(&user, &access);
    let issued_at = jiff::Timestamp::now().to_string();
    Response::builder()
        .header("Content-Type", "application/json")
        .body(Body::from(json!({ "access_token": token, "expires_in": 300, "issued_at": issued_at }).to_string()))
        .unwrap()
}

/// `rollbackd readiness SERVICE --env ENV --json` with `env` set, as an operator runs it.
pub fn readiness_cli(config: &Path, service: &str, env: &str, vars: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_rollbackd"));
    cmd.arg("--config").arg(config).args(["readiness", service, "--env", env, "--json"]);
    cmd.env_remove("ROLLBACKD_CONFIG").env_remove("CI");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}
