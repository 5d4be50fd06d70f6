//! `rollbackd serve`: wires the engine, its single writer and the HTTP front together and runs
//! them until a signal asks for a drain.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use crate::config::{ConfigError, ConfigFile};
use crate::engine::{Engine, EngineError};
use crate::fleet::{Fleet, Member};
use crate::server::{self, AppState, HttpSettings};
use crate::support::clock::{Clock, SystemClock};
use crate::support::url::looks_like_url;
use crate::worker;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("cannot listen on {listen}: {cause}")]
    Listen { listen: String, cause: std::io::Error },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the writer thread panicked")]
    WriterPanicked,
    #[error("{0}")]
    Unset(String),
}

/// Serves `config_path` on `listen` (or the config's `listen`) until SIGTERM or Ctrl-C, then
/// drains: in-flight requests finish and the writer finishes what is queued. `banner`, with
/// `{addr}` replaced by the bound address, is printed after the `listening` line.
pub fn serve(config_path: &Path, listen: Option<String>, banner: Option<String>) -> Result<(), ServeError> {
    let (file, secrets) = ConfigFile::load(config_path)?;
    let config = file.shared();
    if let Some(unset) = secrets.notify_unset.first() {
        return Err(ServeError::Unset(format!("{}: {unset}", config_path.display())));
    }
    let listen = listen.unwrap_or_else(|| config.listen.clone());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // Before anything records: an engine counts its channels and policies as it starts, and
    // what is recorded before the recorder exists is lost.
    crate::metrics::install();
    // One engine and one writer per config repo; they share nothing but the HTTP front.
    let mut engines = Vec::new();
    for member in file.repos() {
        let secrets = member.secrets()?;
        engines.push(Engine::new(member.clone(), secrets, clock.clone())?);
    }
    log_start(config_path, config, &engines);
    let local_origin = engines.iter().any(|e| !looks_like_url(&e.config().repo.url));
    let mut members = Vec::new();
    let mut writers = Vec::new();
    for engine in engines {
        let member = engine.config().clone();
        let (handle, writer) = worker::spawn(engine, config.server.queue, config.server.refresh_interval.as_std());
        members.push(Member::new(&member, handle));
        writers.push(writer);
    }
    let fleet = Fleet::new(members);
    let reloader = fleet.clone();
    let state = AppState::new(config, &secrets, fleet, clock);
    let settings = HttpSettings::from_config(config).with_secrets(&secrets);
    let app = server::app(state.clone(), &settings);
    let admin = config.admin.listen.clone().map(|listen| (listen, server::admin_app(state, &settings)));
    let open_reads = admin.is_none() && settings.admin_tokens.is_empty();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let (listener, addr) =
            server::bind(&listen).await.map_err(|cause| ServeError::Listen { listen: listen.clone(), cause })?;
        println!("rollbackd listening on http://{addr}");
        let admin = match admin {
            Some((listen, router)) => {
                let (l, a) = server::bind(&listen)
                    .await
                    .map_err(|cause| ServeError::Listen { listen: listen.clone(), cause })?;
                println!("rollbackd admin listening on http://{a}");
                Some((l, router))
            }
            None => None,
        };
        if let Some(b) = banner {
            println!("{}", b.replace("{addr}", &addr.to_string()));
        }
        std::io::stdout().flush()?;
        warn_if_exposed(local_origin, open_reads, addr);
        let reloads = tokio::spawn(reload_on_sighup(reloader));
        let public = server::serve(listener, app, settings.limits, server::shutdown_signal());
        match admin {
            Some((l, router)) => {
                let admin = server::serve(l, router, settings.limits, server::shutdown_signal());
                let (a, b) = tokio::join!(public, admin);
                a?;
                b?;
            }
            None => public.await?,
        }
        // It holds a handle to the writer, which stops only when every handle is gone.
        reloads.abort();
        Ok::<_, ServeError>(())
    })?;
    // Dropping the runtime drops what is left of its tasks (the SIGHUP listener and its handle):
    // every handle to the writer is then gone, and it finishes what is queued and stops.
    drop(runtime);
    for writer in writers {
        writer.join().map_err(|_| ServeError::WriterPanicked)?;
    }
    Ok(())
}

/// The one line that says what this process serves.
fn log_start(config_path: &Path, config: &crate::Config, engines: &[Engine]) {
    let sources: Vec<&str> = [
        config.sources.alertmanager.as_ref().map(|_| "alertmanager"),
        config.sources.github.as_ref().map(|_| "github"),
        config.sources.slack.as_ref().map(|_| "slack"),
        config.sources.flux.as_ref().map(|_| "flux"),
        config.sources.argocd.as_ref().map(|_| "argocd"),
    ]
    .into_iter()
    .flatten()
    .collect();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        commit = env!("ROLLBACKD_COMMIT"),
        config = %config_path.display(),
        sources = %sources.join(","),
        repos = engines.len(),
        policies = engines.iter().map(|e| e.policies().policies.len()).sum::<usize>(),
        channels = config.notify.channels.len(),
        "rollbackd starting"
    );
}

/// Warnings about a setup fit for a demo, not for production.
fn warn_if_exposed(local_origin: bool, open_reads: bool, addr: std::net::SocketAddr) {
    if local_origin {
        tracing::warn!(
            "repo.url is a path on this machine: pushes are written directly and the origin's hooks never run; use it for demos and tests, not production"
        );
    }
    if open_reads && !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "/metrics and /api/v1 are served without a token on a listener that is not loopback; set admin.listen or admin.token_env"
        );
    }
}

/// SIGHUP asks the writer to reload; the answer is logged (the writer logs it too).
async fn reload_on_sighup(fleet: Fleet) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            // Each writer logs what it did; only a request it could not take is said here.
            for (name, r) in fleet.reload().await {
                if let crate::fleet::Reload::Busy(why) = r {
                    tracing::warn!(repo = name.as_deref().unwrap_or("-"), "SIGHUP: {why}; send it again");
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = fleet;
}
