//! The network between rollbackd and its origin, on loopback: the origin served over smart HTTP
//! by the real `git http-backend` (as GitHub and GitLab serve it), and a forward proxy that
//! reaches names only it can resolve (`*.test`), so a request that did not go through it fails.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs `serve` on a thread of its own with its own runtime; returns the bound address.
pub fn spawn<F, Fut>(serve: F) -> std::net::SocketAddr
where
    F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move { serve(tokio::net::TcpListener::from_std(listener).unwrap()).await });
    });
    addr
}

/// `git http-backend` as a CGI program for every repository under `root`, push enabled.
pub struct SmartHttp {
    pub addr: std::net::SocketAddr,
    /// Requests served, as `METHOD /path?query`.
    pub requests: Arc<Mutex<Vec<String>>>,
    /// While above zero, a push is taken by the origin and its answer lost (502, as from a
    /// proxy that timed out), one push at a time.
    pub lose_answers: Arc<std::sync::atomic::AtomicUsize>,
}

impl SmartHttp {
    pub fn start(root: PathBuf) -> SmartHttp {
        Self::with_token(root, None)
    }

    /// Answers 401 (as GitHub does) to a request without `token` as its Basic password; such
    /// requests are logged with a leading `401 `.
    pub fn with_token(root: PathBuf, token: Option<&str>) -> SmartHttp {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let lose_answers = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let state = (root, requests.clone(), token.map(str::to_string), lose_answers.clone());
        let addr = spawn(move |listener| async move {
            let app = axum::Router::new().fallback(cgi).with_state(state);
            axum::serve(listener, app).await.unwrap();
        });
        SmartHttp { addr, requests, lose_answers }
    }
}

type CgiState = (PathBuf, Arc<Mutex<Vec<String>>>, Option<String>, Arc<std::sync::atomic::AtomicUsize>);

async fn cgi(State((root, log, token, lose)): State<CgiState>, req: Request) -> Response {
    use base64::Engine;
    let (parts, body) = req.into_parts();
    let query = parts.uri.query().unwrap_or_default().to_string();
    let shown = if query.is_empty() { String::new() } else { format!("?{query}") };
    let authorized = token.as_ref().is_none_or(|t| {
        let given = parts.headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
        let decoded = given
            .strip_prefix("Basic ")
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        decoded.ends_with(&format!(":{t}"))
    });
    let status = if authorized { "" } else { "401 " };
    log.lock().unwrap().push(format!("{status}{} {}{shown}", parts.method, parts.uri.path()));
    if !authorized {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("WWW-Authenticate", "Basic realm=\"origin\"")
            .body(Body::empty())
            .unwrap();
    }
    let body = axum::body::to_bytes(body, 64 << 20).await.unwrap();
    let header = |h: &HeaderMap, name: &str| h.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let method = parts.method.to_string();
    let (ctype, encoding, protocol) = (
        header(&parts.headers, "content-type"),
        header(&parts.headers, "content-encoding"),
        header(&parts.headers, "git-protocol"),
    );
    let path = parts.uri.path().to_string();
    let push = method == "POST" && path.ends_with("/git-receive-pack");
    let out = tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new("git")
            .arg("http-backend")
            .env("GIT_PROJECT_ROOT", &root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            // http-backend takes pushes only from a user the server authenticated.
            .env("REMOTE_USER", "rollbackd")
            .env("REQUEST_METHOD", method)
            .env("PATH_INFO", path)
            .env("QUERY_STRING", &query)
            .env("CONTENT_TYPE", ctype)
            .env("CONTENT_LENGTH", body.len().to_string())
            .env("HTTP_CONTENT_ENCODING", encoding)
            .env("GIT_PROTOCOL", protocol)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&body);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        out
    })
    .await
    .unwrap();
    use std::sync::atomic::Ordering;
    if push && lose.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
        return Response::builder().status(StatusCode::BAD_GATEWAY).body(Body::empty()).unwrap();
    }
    // CGI: headers, a blank line, the body.
    let split = out.stdout.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, 4));
    let split = split.or_else(|| out.stdout.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let Some((end, gap)) = split else {
        return Response::builder().status(StatusCode::BAD_GATEWAY).body(Body::empty()).unwrap();
    };
    let mut resp = Response::builder();
    for line in String::from_utf8_lossy(&out.stdout[..end]).lines() {
        let Some((name, value)) = line.split_once(':') else { continue };
        if name.eq_ignore_ascii_case("status") {
            let code = value.trim().split(' ').next().and_then(|c| c.parse().ok()).unwrap_or(200);
            resp = resp.status(code);
        } else {
            resp = resp.header(name.trim(), value.trim());
        }
    }
    resp.body(Body::from(out.stdout[end + gap..].to_vec())).unwrap()
}

/// A forward proxy: `CONNECT host:port` tunnels (https) and absolute-form requests (http).
/// It resolves only the names it was given, each to a loopback port.
pub struct Proxy {
    pub url: String,
    /// The first request of every connection, as `METHOD host`.
    pub seen: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    pub fn start(names: HashMap<String, u16>) -> Proxy {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let names = Arc::new(names);
        let addr = spawn(move |listener| async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else { return };
                tokio::spawn(tunnel(conn, names.clone(), log.clone()));
            }
        });
        Proxy { url: format!("http://{addr}"), seen }
    }

    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

async fn tunnel(mut client: tokio::net::TcpStream, names: Arc<HashMap<String, u16>>, log: Arc<Mutex<Vec<String>>>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 << 10 || client.read(&mut byte).await.unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut words = text.split_whitespace();
    let (method, target) = (words.next().unwrap_or_default().to_string(), words.next().unwrap_or_default());
    let authority = match method.as_str() {
        "CONNECT" => target.to_string(),
        _ => target.strip_prefix("http://").and_then(|t| t.split('/').next()).unwrap_or_default().to_string(),
    };
    let host = authority.split(':').next().unwrap_or_default().to_string();
    log.lock().unwrap().push(format!("{method} {host}"));
    let Some(port) = names.get(&host) else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
        return;
    };
    let Ok(mut upstream) = tokio::net::TcpStream::connect(("127.0.0.1", *port)).await else { return };
    if method == "CONNECT" {
        let _ = client.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n").await;
    } else if upstream.write_all(&head).await.is_err() {
        // Servers take absolute-form requests as they are (RFC 9112, 3.2.2).
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// TLS in front of a loopback server, as a load balancer ends it: a certificate for `127.0.0.1`
/// made by the `openssl` CLI, its PEM (the CA a client must trust) beside it in `dir`.
pub struct TlsFront {
    pub addr: std::net::SocketAddr,
    pub ca_file: PathBuf,
}

impl TlsFront {
    pub fn start(upstream: std::net::SocketAddr, dir: &std::path::Path) -> TlsFront {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let (cert, key) = (dir.join("tls-cert.pem"), dir.join("tls-key.pem"));
        let made = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl");
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
        let chain = vec![CertificateDer::from_pem_file(&cert).unwrap()];
        let key_der = PrivateKeyDer::from_pem_file(&key).unwrap();
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key_der)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let addr = spawn(move |listener| async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else { return };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that refuses the certificate ends the handshake: nothing to serve.
                    let Ok(mut tls) = acceptor.accept(conn).await else { return };
                    let Ok(mut plain) = tokio::net::TcpStream::connect(upstream).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        TlsFront { addr, ca_file: cert }
    }
}
