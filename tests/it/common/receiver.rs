//! A local stand-in for whatever rollbackd notifies (a generic webhook, a Slack incoming
//! webhook, Slack's Web API): records every request, answers with the status the test sets,
//! and can hold its answers until the test releases them.

use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver as Rx, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};

#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub authorization: Option<String>,
    pub body: serde_json::Value,
    /// The `ts` this request was answered with (as Slack's Web API does).
    pub ts: String,
}

pub struct Receiver {
    pub url: String,
    rx: Mutex<Rx<Received>>,
    status: Arc<AtomicU16>,
    held: Arc<(Mutex<bool>, Condvar)>,
}

struct State {
    tx: Mutex<Sender<Received>>,
    status: Arc<AtomicU16>,
    held: Arc<(Mutex<bool>, Condvar)>,
    ts: AtomicU64,
}

impl Receiver {
    pub fn start() -> Receiver {
        let (tx, rx) = std::sync::mpsc::channel();
        let status = Arc::new(AtomicU16::new(200));
        let held = Arc::new((Mutex::new(false), Condvar::new()));
        let state =
            Arc::new(State { tx: Mutex::new(tx), status: status.clone(), held: held.clone(), ts: AtomicU64::new(1) });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let app = Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
                    let state = state.clone();
                    async move { record(&state, uri, headers, body).await }
                });
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        Receiver { url, rx: Mutex::new(rx), status, held }
    }

    /// The next request, waiting up to 30 s for it.
    pub fn next(&self) -> Received {
        self.rx.lock().unwrap().recv_timeout(Duration::from_secs(30)).expect("a notification within 30s")
    }

    /// Answers every later request with `status`.
    pub fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// Requests are recorded at once but answered only after [`Receiver::release`].
    pub fn hold(&self) {
        *self.held.0.lock().unwrap() = true;
    }

    pub fn release(&self) {
        *self.held.0.lock().unwrap() = false;
        self.held.1.notify_all();
    }
}

async fn record(state: &State, uri: Uri, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let ts = format!("1700000000.{:06}", state.ts.fetch_add(1, Ordering::SeqCst));
    let received = Received {
        path: uri.path().to_string(),
        authorization: headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string),
        body: serde_json::from_slice(&body).unwrap_or_else(|_| serde_json::json!(String::from_utf8_lossy(&body))),
        ts: ts.clone(),
    };
    let _ = state.tx.lock().unwrap().send(received);
    let held = state.held.clone();
    tokio::task::spawn_blocking(move || {
        let mut h = held.0.lock().unwrap();
        while *h {
            h = held.1.wait(h).unwrap();
        }
    })
    .await
    .unwrap();
    let status = StatusCode::from_u16(state.status.load(Ordering::SeqCst)).unwrap();
    (status, serde_json::json!({ "ok": true, "ts": ts }).to_string())
}
