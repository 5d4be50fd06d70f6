//! The single writer. One thread owns the [`Engine`] (and so the mirror): events are queued to
//! it and handled one at a time, which is what keeps one incident to one commit inside a process
//! (across processes, compare-and-swap and the trailers do). Reads never wait for it: after every
//! job and every idle refresh it publishes a [`Snapshot`] of the audit index, from which the
//! HTTP layer answers duplicates, history and readiness.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::chat::{ChatRequest, Reply};
use crate::domain::event::Event;
use crate::domain::event::Resolved;
use crate::domain::status::StatusView;
use crate::engine::{Engine, EngineError, FINISH_WITHIN, Options, Triager};
use crate::git::AuditRecord;
use crate::metrics;
use crate::wakeups::{Wake, Wakeups};
use crate::{Outcome, Report};

/// What the writer reports back for one job; the error is kept as text plus whether a retry by
/// the sender can help.
#[derive(Clone, Debug)]
pub enum JobResult {
    Report(Box<Report>),
    Note(String),
    Failed { message: String, transient: bool },
}

/// An event for the writer, and where its answer goes.
pub(crate) type Queued = (Event, oneshot::Sender<JobResult>);

pub enum Job {
    Handle {
        event: Event,
        reply: oneshot::Sender<JobResult>,
    },
    /// The firing alerts of one notification: those that roll back the same bad change for
    /// several targets become one commit.
    Alerts {
        events: Vec<Queued>,
    },
    Resolved {
        resolved: Resolved,
        reply: oneshot::Sender<JobResult>,
    },
    KnownGood {
        event: Event,
        reply: oneshot::Sender<JobResult>,
    },
    /// Flux or Argo CD applied a revision and reports it healthy: known-good, and what
    /// verifies the rollbacks it contains.
    ControllerHealthy {
        event: Event,
        reply: oneshot::Sender<JobResult>,
    },
    /// Read the config, policies and templates again (SIGHUP, `POST /-/reload`).
    Reload {
        reply: oneshot::Sender<JobResult>,
    },
    Chat {
        request: Box<ChatRequest>,
        reply: oneshot::Sender<Reply>,
    },
    GithubComment {
        comment: Box<crate::domain::event::Comment>,
        directory: Box<crate::domain::principal::Directory>,
        /// The teams GitHub confirmed of the sender, asked at the edge.
        teams: Box<crate::domain::principal::ForgeTeams>,
        /// The rollback proposal the pull request is (or why GitHub could not say), asked at
        /// the edge.
        proposal: crate::chat::dispatch::ProposalOf,
        reply: oneshot::Sender<JobResult>,
    },
    ChecksPassed {
        branch: String,
        reply: oneshot::Sender<JobResult>,
    },
    /// A push to the config repo: fetch now if it is the watched branch.
    Fetch {
        git_ref: String,
        reply: oneshot::Sender<JobResult>,
    },
    GatePullRequest {
        number: u64,
        head_sha: String,
        base: String,
        reply: oneshot::Sender<JobResult>,
    },
    PullRequestClosed {
        branch: String,
        merged_sha: Option<String>,
        head_sha: String,
        by: String,
        reply: oneshot::Sender<JobResult>,
    },
    /// rollbackd's state on the origin moved (the state watch saw it): fetch and rebuild the
    /// status now, then say whether that worked.
    Refresh {
        done: std::sync::mpsc::SyncSender<Result<(), String>>,
    },
}

const REFUSED_FOR: Duration = Duration::from_secs(600);

/// The stack of the writer's and the gate's threads, set here rather than left to the platform's
/// default for spawned threads (2 MiB, or whatever `RUST_MIN_STACK` says). Nothing they run
/// recurses on input any more (tree walks keep their own stack and stop at 4096 levels), so
/// this is headroom for libgit2, the YAML parser and the templates, the size a main thread gets.
const THREAD_STACK: usize = 8 << 20;

/// Pull requests waiting for the gate's thread. More at once answers 503 (GitHub redelivers
/// later, and rollbackd asks it to): a burst of pull requests never queues in front of alerts.
const GATE_QUEUE: usize = 16;

/// A pull request's gate handed over by the writer, and where its answer goes.
type GateJob = (Box<crate::engine::PullGate>, oneshot::Sender<JobResult>);

/// The audit index as of the last job or refresh.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub records: Vec<AuditRecord>,
    by_trigger: HashMap<String, usize>,
}

impl Snapshot {
    fn new(records: Vec<AuditRecord>) -> Self {
        let mut by_trigger = HashMap::new();
        for (i, r) in records.iter().enumerate().rev() {
            by_trigger.insert(r.trigger.clone(), i);
        }
        Snapshot { records, by_trigger }
    }

    pub fn find_trigger(&self, trigger: &str) -> Option<&AuditRecord> {
        self.by_trigger.get(trigger).map(|&i| &self.records[i])
    }
}

#[derive(Debug, Default)]
pub struct Shared {
    /// The repo's name, when rollbackd serves several.
    name: Option<String>,
    snapshot: RwLock<Arc<Snapshot>>,
    /// The policies and input rules in force, for answering at the edge what no policy acts on.
    triager: RwLock<Arc<Triager>>,
    ready: AtomicBool,
    /// Why the last fetch from the origin failed, while it keeps failing.
    origin_error: RwLock<Option<String>>,
    /// Whether that failure is the origin (or GitHub) refusing our credentials.
    origin_auth: AtomicBool,
    /// Events the writer refused for good (422), by trigger, for ten minutes: a sender that
    /// repeats them is answered from memory instead of making the writer plan them again.
    refused: std::sync::Mutex<HashMap<String, (std::time::Instant, String)>>,
    depth: AtomicUsize,
    /// The engine's policy generation the triager was built from.
    policy_generation: std::sync::atomic::AtomicU64,
    /// Alert keys that verifications in progress wait to see resolve.
    watched: RwLock<std::collections::HashSet<String>>,
    /// What the status page shows, as of the last quiet moment.
    status: RwLock<Arc<StatusView>>,
    /// Why there are no policies to decide with yet (kept in the config repo, none valid read).
    policies_pending: RwLock<Option<String>>,
    /// When the origin was last known to hold the state the published status shows.
    as_of: RwLock<Option<jiff::Timestamp>>,
    /// How the state watch asks the origin (renewed at every publish: reloads, tokens).
    watcher: RwLock<Option<crate::git::StateWatcher>>,
    /// How the forge is asked about team membership, and the teams CODEOWNERS on the watched
    /// branch names (when a policy admits by `codeowners`): what the edge asks before queueing.
    teams: RwLock<Option<(crate::forge::teams::TeamLookup, Arc<[String]>)>>,
    /// The forge in force, for the edge to read what it must know before queuing (which
    /// proposal a commented pull request is).
    forge: RwLock<Option<Arc<dyn crate::forge::Forge>>>,
}

impl Shared {
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn triager(&self) -> Arc<Triager> {
        self.triager.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The mirror has been fetched and the index built at least once, and the origin answered
    /// the last fetch.
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && self.origin_error().is_none() && self.policies_pending().is_none()
    }

    /// Why no policies are in force yet, while none are.
    pub fn policies_pending(&self) -> Option<String> {
        self.policies_pending.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Why the origin cannot be reached now, if it cannot.
    pub fn origin_error(&self) -> Option<String> {
        self.origin_error.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Why the writer refused this trigger for good, if it did within the last ten minutes.
    pub fn refused(&self, trigger: &str) -> Option<String> {
        let refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        refused.get(trigger).filter(|(at, _)| at.elapsed() < REFUSED_FOR).map(|(_, why)| why.clone())
    }

    fn remember_refusal(&self, trigger: String, why: String) {
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        if refused.len() >= 10_000 {
            refused.retain(|_, (at, _)| at.elapsed() < REFUSED_FOR);
        }
        if refused.len() < 10_000 {
            refused.insert(trigger, (std::time::Instant::now(), why));
        }
    }

    /// The origin failed with `e`: why, and whether retrying soon can help.
    fn origin_failed(&self, e: &EngineError) {
        self.origin_auth.store(e.is_auth(), Ordering::Release);
        self.set_origin_error(Some(e.to_string()));
    }

    fn set_origin_error(&self, error: Option<String>) {
        if error.is_none() {
            self.origin_auth.store(false, Ordering::Release);
        }
        metrics::origin_reachable(self.name.as_deref(), error.is_none());
        *self.origin_error.write().unwrap_or_else(|e| e.into_inner()) = error;
    }

    /// Whether a verification in progress waits for the alert `key` to resolve.
    pub fn watched(&self, key: &str) -> bool {
        self.watched.read().unwrap_or_else(|e| e.into_inner()).contains(key)
    }

    /// The status as of the writer's last quiet moment, with the origin's state as of now,
    /// and `as_of` the last moment the origin was known to hold what it shows.
    pub fn status(&self) -> StatusView {
        let mut view = StatusView::clone(&self.status.read().unwrap_or_else(|e| e.into_inner()));
        view.origin_error = self.origin_error();
        let confirmed = *self.as_of.read().unwrap_or_else(|e| e.into_inner());
        view.as_of = view.as_of.max(confirmed).map(crate::domain::status::as_of_second);
        view
    }

    /// The origin held what the published status shows at `at`.
    pub(crate) fn confirm_as_of(&self, at: jiff::Timestamp) {
        let mut as_of = self.as_of.write().unwrap_or_else(|e| e.into_inner());
        *as_of = (*as_of).max(Some(at));
    }

    /// How to ask the forge about team membership, and which teams: `None` when there is
    /// nothing to ask (no policy admits by `codeowners`, CODEOWNERS names no team, no GitHub).
    pub(crate) fn team_question(&self) -> Option<(crate::forge::teams::TeamLookup, Arc<[String]>)> {
        self.teams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .filter(|(lookup, teams)| lookup.asks() && !teams.is_empty())
    }

    /// The forge in force (published by the writer).
    pub(crate) fn forge(&self) -> Option<Arc<dyn crate::forge::Forge>> {
        self.forge.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn state_watcher(&self) -> Option<crate::git::StateWatcher> {
        self.watcher.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn queue_depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
pub struct WorkerHandle {
    // Shared so the state watch can hold it weakly: the writer stops when the last handle goes.
    tx: Arc<SyncSender<Job>>,
    shared: Arc<Shared>,
}

/// Why a job was not queued.
#[derive(Debug)]
pub enum QueueError {
    Full,
    Stopped,
}

impl WorkerHandle {
    pub(crate) fn from_parts(tx: Arc<SyncSender<Job>>, shared: Arc<Shared>) -> Self {
        WorkerHandle { tx, shared }
    }

    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    pub fn submit(&self, job: Job) -> Result<(), QueueError> {
        self.shared.depth.fetch_add(1, Ordering::Relaxed);
        let r = self.tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => QueueError::Full,
            TrySendError::Disconnected(_) => QueueError::Stopped,
        });
        if r.is_err() {
            self.shared.depth.fetch_sub(1, Ordering::Relaxed);
        }
        metrics::queue_depth(self.shared.name.as_deref(), self.shared.queue_depth());
        r
    }
}

/// Starts the writer thread. It stops after every `WorkerHandle` is dropped and the queue is drained.
pub fn spawn(engine: Engine, capacity: usize, refresh: Duration) -> (WorkerHandle, std::thread::JoinHandle<()>) {
    let name = engine.config().member.clone();
    let (tx, rx) = std::sync::mpsc::sync_channel(capacity.max(1));
    metrics::install();
    metrics::queue_capacity(capacity.max(1));
    let shared = Arc::new(Shared {
        name: engine.config().member.clone(),
        triager: RwLock::new(Arc::new(engine.triager())),
        ..Shared::default()
    });
    let s = shared.clone();
    let tx = Arc::new(tx);
    *shared.watcher.write().unwrap_or_else(|e| e.into_inner()) = Some(engine.state_watcher());
    *shared.forge.write().unwrap_or_else(|e| e.into_inner()) = Some(engine.forge_handle());
    crate::state_watch::spawn(name.as_deref(), Arc::downgrade(&tx), shared.clone(), engine.clock());
    let gates = spawn_gate_thread(name.as_deref());
    let redeliver = spawn_redelivery_thread(name.as_deref());
    let join = std::thread::Builder::new()
        .name(name.as_ref().map_or_else(|| "rollbackd-writer".into(), |n| format!("writer-{n}")))
        .stack_size(THREAD_STACK)
        .spawn(move || {
            // With several repos, every line the writer logs names its repo.
            let span = name.map(|n| tracing::info_span!("repo", repo = %n));
            let _entered = span.as_ref().map(|s| s.enter());
            metrics::policies_in_force(
                engine.config().member.as_deref(),
                engine.policies().policies.len(),
                engine.policy_refusal().is_none(),
            );
            run(engine, rx, s, refresh, (&gates, &redeliver))
        })
        .expect("spawn the writer thread");
    (WorkerHandle { tx, shared }, join)
}

/// A helper thread of the writer: `work` takes each item the writer sends on the returned
/// queue (at most `capacity` waiting), in the repo's span, and the thread stops when the
/// writer does (its queue closes). Named `role` (`role-<repo>` with several repos).
fn spawn_helper<T: Send + 'static>(
    role: &str,
    repo: Option<&str>,
    capacity: usize,
    mut work: impl FnMut(T) + Send + 'static,
) -> SyncSender<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<T>(capacity);
    let span_name = repo.map(str::to_string);
    std::thread::Builder::new()
        .name(repo.map_or_else(|| format!("rollbackd-{role}"), |n| format!("{role}-{n}")))
        .stack_size(THREAD_STACK)
        .spawn(move || {
            let span = span_name.map(|n| tracing::info_span!("repo", repo = %n));
            let _entered = span.as_ref().map(|s| s.enter());
            for item in rx {
                work(item);
            }
        })
        .unwrap_or_else(|e| panic!("spawn the {role} thread: {e}"));
    tx
}

/// The gate's thread: reads pull requests (fetch, diff, scan; sizes their authors choose) and
/// reports their check runs, so the writer only reads the holds and an alert never waits
/// behind a pull request.
fn spawn_gate_thread(name: Option<&str>) -> SyncSender<GateJob> {
    spawn_helper("gate", name, GATE_QUEUE, |(gate, reply): GateJob| {
        let number = gate.number();
        let ran = std::panic::catch_unwind(AssertUnwindSafe(|| gate.run()));
        let result = match ran {
            Ok(Ok(said)) => JobResult::Note(said),
            Ok(Err(e)) => failed(&e),
            Err(_) => {
                tracing::error!(pull = number, "the gate panicked; the gate thread carries on");
                JobResult::Failed { message: "the gate failed".into(), transient: true }
            }
        };
        let _ = reply.send(result);
    })
}

/// Redelivery's thread: asks GitHub for the App's failed deliveries and to send them again,
/// when the writer says a round may be due (see `engine::redeliver`). It keeps what it asked
/// for; a round still under way is not doubled (one waits at most).
fn spawn_redelivery_thread(name: Option<&str>) -> SyncSender<crate::engine::redeliver::Round> {
    let mut state = crate::engine::redeliver::Redelivery::default();
    spawn_helper("redeliver", name, 1, move |round: crate::engine::redeliver::Round| {
        let asked = std::panic::catch_unwind(AssertUnwindSafe(|| {
            crate::engine::redeliver::handle_due(&round, &mut state);
        }));
        if asked.is_err() {
            tracing::error!("redelivery panicked; it starts over from nothing asked");
            state = Default::default();
        }
    })
}

fn failed(e: &EngineError) -> JobResult {
    JobResult::Failed { message: e.to_string(), transient: e.is_transient() }
}

/// The threads the writer hands work to: the gate's, and redelivery's.
type Helpers<'a> = (&'a SyncSender<GateJob>, &'a SyncSender<crate::engine::redeliver::Round>);

fn run(mut engine: Engine, rx: Receiver<Job>, shared: Arc<Shared>, refresh: Duration, helpers: Helpers<'_>) {
    let (gates, redeliver) = helpers;
    let mut wakeups = Wakeups::new(Instant::now());
    let mut failures = 0u32;
    // A rebuild after a panic that failed: tried again before the next piece of work.
    let mut rebuild = false;
    // When what was due was last done, on the engine's clock: deadlines up to then are done.
    let mut acted_at = engine.now();
    loop {
        if rebuild {
            rebuild = !rebuilt(&mut engine, &shared, &mut wakeups);
        }
        let now = Instant::now();
        match wakeups.due(now) {
            // Idle: work out readiness, fetch, so rollbacks pushed by other replicas reach the
            // snapshot, then do what is due.
            Some(Wake::Refresh) => {
                if shared.ready() {
                    // Before publishing, so the status page shows what the gauge says.
                    let busy = || shared.queue_depth() > 0;
                    let worked_out = std::panic::catch_unwind(AssertUnwindSafe(|| engine.refresh_readiness(&busy)));
                    if worked_out.is_err() {
                        tracing::error!("working out readiness panicked; rebuilding the engine from git");
                        metrics::writer_panic();
                        rebuild = !rebuilt(&mut engine, &shared, &mut wakeups);
                    }
                }
                publish(&mut engine, &shared, true, false);
                wakeups.refreshed(now, next_refresh(&shared, refresh, &mut failures));
                acted_at = engine.now();
                rebuild |= !act_on_deadlines(&mut engine, &shared, &mut wakeups);
                // Watches picked up just now (pushed elsewhere, or read back by a rebuilt
                // engine): their resolves are queued from now on, not after the next job.
                *shared.watched.write().unwrap_or_else(|e| e.into_inner()) = engine.watched_alerts();
                // Only while the origin answers: a delivery sent again now can be handled. Asked
                // on redelivery's thread; a round still under way is not doubled.
                if shared.ready()
                    && let Some(round) = engine.redelivery_round()
                {
                    let _ = redeliver.try_send(round);
                }
            }
            Some(Wake::Deadline) => {
                wakeups.deadline_ran(now);
                acted_at = engine.now();
                rebuild |= !act_on_deadlines(&mut engine, &shared, &mut wakeups);
                publish(&mut engine, &shared, false, false);
            }
            None => match rx.recv_timeout(wakeups.wait(now)) {
                Ok(job) => {
                    shared.depth.fetch_sub(1, Ordering::Relaxed);
                    metrics::queue_depth(shared.name.as_deref(), shared.queue_depth());
                    // A bug in one job must not take the writer down with it: its sender sees
                    // the reply dropped (503, retry), and the engine the job may have left
                    // half-changed is replaced by one read back from git.
                    // A refresh publishes as it goes: the watch is answered once the status shows it.
                    let refresh = matches!(job, Job::Refresh { .. });
                    let handled =
                        std::panic::catch_unwind(AssertUnwindSafe(|| process(&mut engine, &shared, job, gates)));
                    if handled.is_err() {
                        tracing::error!("a job panicked; rebuilding the engine from git");
                        metrics::writer_panic();
                        rebuild = !rebuilt(&mut engine, &shared, &mut wakeups);
                    }
                    if !refresh || handled.is_err() {
                        publish(&mut engine, &shared, false, false);
                    }
                }
                // Something fell due: the top of the loop says what.
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    info!("writer stopping: queue closed and drained");
                    // Shutting down: what the engine told people goes out before the process ends.
                    engine.finish().wait(FINISH_WITHIN);
                    return;
                }
            },
        }
        metrics::writer_heartbeat(shared.name.as_deref(), engine.now());
        let next = engine.next_deadline(acted_at).map(|t| {
            let left = t.duration_since(engine.now());
            Duration::try_from(left).unwrap_or(Duration::ZERO)
        });
        wakeups.set_deadline(Instant::now(), next);
    }
}

/// Verifies what is due and takes phased rollbacks on (see [`Engine::verify_due`]). `false`
/// when it panicked and the engine could not be rebuilt.
fn act_on_deadlines(engine: &mut Engine, shared: &Shared, wakeups: &mut Wakeups) -> bool {
    if !shared.ready() {
        return true;
    }
    match std::panic::catch_unwind(AssertUnwindSafe(|| engine.verify_due())) {
        Ok(Ok(said)) => said.iter().for_each(|s| info!("{s}")),
        Ok(Err(e)) => warn!(error = %e, "verifying rollbacks failed; trying again later"),
        Err(_) => {
            tracing::error!("verifying rollbacks panicked; rebuilding the engine from git");
            metrics::writer_panic();
            return rebuilt(engine, shared, wakeups);
        }
    }
    // One drill per turn, so an event waits behind at most one.
    match std::panic::catch_unwind(AssertUnwindSafe(|| engine.drill_due())) {
        Ok(None) => {}
        Ok(Some(Ok(outcome))) => info!("{}", outcome.summary()),
        Ok(Some(Err(e))) => warn!(error = %e, "a scheduled drill failed; trying again later"),
        Err(_) => {
            tracing::error!("a scheduled drill panicked; rebuilding the engine from git");
            metrics::writer_panic();
            return rebuilt(engine, shared, wakeups);
        }
    }
    true
}

/// Replaces `engine` with one built afresh from the same config, reading its state back from
/// git; the old one's notices go out on their own thread. `false` when that failed (the old
/// engine carries on meanwhile).
fn rebuilt(engine: &mut Engine, shared: &Shared, wakeups: &mut Wakeups) -> bool {
    match engine.rebuilt() {
        Ok(fresh) => {
            std::mem::replace(engine, fresh).finish().in_background();
            *shared.triager.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(engine.triager());
            // Its watches and phases are read back at the next refresh: now.
            wakeups.refresh_now(Instant::now());
            info!("the engine was rebuilt from git");
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "rebuilding the engine failed; the old one carries on until the next try");
            false
        }
    }
}

/// When to refresh again. Until the first fetch succeeds, and while the origin fails, soon,
/// backing off: doubling up to the refresh interval, or up to five minutes for rejected
/// credentials (retrying those quickly only locks accounts and floods logs).
fn next_refresh(shared: &Shared, refresh: Duration, failures: &mut u32) -> Duration {
    match shared.origin_error() {
        None if shared.ready() => {
            *failures = 0;
            refresh
        }
        None => Duration::from_secs(1),
        Some(_) => {
            *failures = failures.saturating_add(1);
            let cap = if shared.origin_auth.load(Ordering::Acquire) { Duration::from_secs(300) } else { refresh };
            Duration::from_secs(1u64 << (*failures).min(9)).min(cap.max(Duration::from_secs(1)))
        }
    }
}

/// What a handled event's sender is answered, and what the writer learns from it.
fn job_result(engine: &Engine, shared: &Shared, event: &Event, result: Result<Report, EngineError>) -> JobResult {
    job_result_at(shared, event, result, engine.now())
}

fn job_result_at(
    shared: &Shared,
    event: &Event,
    result: Result<Report, EngineError>,
    now: jiff::Timestamp,
) -> JobResult {
    match result {
        Ok(report) => {
            shared.set_origin_error(None);
            metrics::handled(event, &report, now);
            JobResult::Report(Box::new(report))
        }
        Err(e) => {
            if matches!(
                e,
                EngineError::Git(crate::git::GitError::Unreachable { .. } | crate::git::GitError::Auth { .. })
            ) {
                shared.origin_failed(&e);
            }
            if !e.is_transient() {
                shared.remember_refusal(event.trigger(), e.to_string());
            }
            warn!(trigger = %event.trigger(), error = %e, "event failed");
            metrics::event_failed(event.source);
            failed(&e)
        }
    }
}

fn process(engine: &mut Engine, shared: &Shared, job: Job, gates: &SyncSender<GateJob>) {
    match job {
        Job::Handle { event, reply } => {
            let result = engine.handle(&event, &Options::default());
            let _ = reply.send(job_result(engine, shared, &event, result));
        }
        Job::Alerts { events } => handle_alerts(engine, shared, events),
        Job::Resolved { resolved, reply } => {
            let _ = reply.send(noted(engine.record_resolution(&resolved)));
        }
        Job::Chat { request, reply } => {
            let _ = reply.send(crate::chat::dispatch::execute(engine, &request));
        }
        Job::GithubComment { comment, directory, teams, proposal, reply } => {
            let text = crate::chat::dispatch::github_comment_with(engine, &comment, &directory, &teams, proposal);
            let _ = reply.send(JobResult::Note(text));
        }
        Job::ChecksPassed { branch, reply } => {
            let _ = reply.send(noted(engine.checks_completed(&branch)));
        }
        Job::Fetch { git_ref, reply } => {
            let _ = reply.send(noted(engine.fetch_pushed(&git_ref)));
        }
        Job::GatePullRequest { number, head_sha, base, reply } => {
            gate_pull_request(engine, gates, number, &head_sha, &base, reply);
        }
        Job::PullRequestClosed { branch, merged_sha, head_sha, by, reply } => {
            let _ = reply.send(noted(engine.record_pr_closed(&branch, merged_sha.as_deref(), &head_sha, &by)));
        }
        Job::Reload { reply } => {
            let _ = reply.send(reload(engine, shared));
        }
        Job::Refresh { done } => {
            let _ = done.send(refresh(engine, shared));
        }
        Job::KnownGood { event, reply } => {
            let _ = reply.send(noted(engine.mark_known_good(&event)));
        }
        Job::ControllerHealthy { event, reply } => {
            let _ = reply.send(noted(engine.controller_healthy(&event)));
        }
    }
}

/// What the engine said, or why it could not.
fn noted(result: Result<String, EngineError>) -> JobResult {
    match result {
        Ok(msg) => JobResult::Note(msg),
        Err(e) => failed(&e),
    }
}

/// The firing alerts of one notification, handled together.
fn handle_alerts(engine: &mut Engine, shared: &Shared, events: Vec<Queued>) {
    let (events, replies): (Vec<Event>, Vec<_>) = events.into_iter().unzip();
    let mut replies: Vec<Option<_>> = replies.into_iter().map(Some).collect();
    let clock = engine.clock();
    // Each sender is answered as soon as its alert is settled.
    engine.handle_alerts_each(&events, &Options::default(), |i, result| {
        if let Some(reply) = replies[i].take() {
            let _ = reply.send(job_result_at(shared, &events[i], result, clock.now()));
        }
    });
}

/// The writer reads the holds; the gate's thread reads the pull request.
fn gate_pull_request(
    engine: &mut Engine,
    gates: &SyncSender<GateJob>,
    number: u64,
    head_sha: &str,
    base: &str,
    reply: oneshot::Sender<JobResult>,
) {
    match engine.start_pull_gate(number, head_sha, base) {
        Ok(crate::engine::GateStart::Said(said)) => {
            let _ = reply.send(JobResult::Note(said));
        }
        Ok(crate::engine::GateStart::Run(gate)) => match gates.try_send((gate, reply)) {
            Ok(()) => {}
            Err(TrySendError::Full((_, reply))) => {
                let busy = format!("the gate has {GATE_QUEUE} pull requests waiting; pull request #{number} later");
                let _ = reply.send(JobResult::Failed { message: busy, transient: true });
            }
            Err(TrySendError::Disconnected((_, reply))) => {
                let _ = reply.send(JobResult::Failed { message: "the gate has stopped".into(), transient: true });
            }
        },
        Err(e) => {
            let _ = reply.send(failed(&e));
        }
    }
}

/// Swaps in an engine built from the config, policies and templates read again; a refused
/// reload leaves the one in force.
fn reload(engine: &mut Engine, shared: &Shared) -> JobResult {
    match engine.reloaded() {
        Ok(new) => {
            let said = format!("reloaded {}: {} policies", new.config().path.display(), new.policies().policies.len());
            // The old engine's notices go out on their own; the writer does not wait.
            std::mem::replace(engine, new).finish().in_background();
            *shared.triager.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(engine.triager());
            metrics::policies_in_force(
                shared.name.as_deref(),
                engine.policies().policies.len(),
                engine.policy_refusal().is_none(),
            );
            info!("{said}");
            JobResult::Note(said)
        }
        Err(e) => {
            warn!(error = %e, "reload refused; the config and policies in force are unchanged");
            JobResult::Failed { message: e.to_string(), transient: false }
        }
    }
}

/// Fetches the watched branch and rebuilds the status from it.
fn refresh(engine: &mut Engine, shared: &Shared) -> Result<(), String> {
    let branch = format!("refs/heads/{}", engine.config().repo.branch);
    match engine.fetch_pushed(&branch) {
        // Answered only once the status shows what was fetched: `as_of` follows it.
        Ok(_) if publish(engine, shared, false, true) => Ok(()),
        Ok(_) => Err("reading the status failed".to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Publishes the audit index; `fetch` also brings the mirror up to date first (idle refresh).
/// The status is rebuilt too when no work is queued, or always with `status`; returns whether
/// it was. A failing origin is logged when it starts failing, when the reason changes, and
/// when it recovers, never once per attempt.
fn publish(engine: &mut Engine, shared: &Shared, fetch: bool, status: bool) -> bool {
    let started = engine.now();
    let mut rebuilt = false;
    let records = if fetch { engine.history().map(|i| i.records().to_vec()) } else { engine.audit_records() };
    // A policy set from the config repo switched to by a fetch: the edge decides with it too.
    let generation = engine.policy_generation();
    if shared.policy_generation.swap(generation, Ordering::AcqRel) != generation {
        *shared.triager.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(engine.triager());
    }
    *shared.policies_pending.write().unwrap_or_else(|e| e.into_inner()) =
        engine.need_policies().err().map(|e| e.to_string());
    match records {
        Ok(records) => {
            *shared.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Snapshot::new(records));
            *shared.watched.write().unwrap_or_else(|e| e.into_inner()) = engine.watched_alerts();
            if shared.queue_depth() == 0 {
                engine.save_index();
            }
            // Not while a storm queues work: the page may lag a burst, never slow it.
            if status || shared.queue_depth() == 0 {
                match engine.status_view(false) {
                    Ok(mut view) => {
                        // Fetched just now: the view is as fresh as the moment the fetch began;
                        // else the mirror is at least as fresh as for the view before.
                        view.as_of = if fetch {
                            Some(started)
                        } else {
                            shared.status.read().unwrap_or_else(|e| e.into_inner()).as_of
                        };
                        *shared.status.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(view);
                        rebuilt = true;
                    }
                    Err(e) => warn!(error = %e, "reading the status failed"),
                }
            }
            *shared.watcher.write().unwrap_or_else(|e| e.into_inner()) = Some(engine.state_watcher());
            *shared.teams.write().unwrap_or_else(|e| e.into_inner()) =
                Some((engine.team_lookup(), engine.codeowner_teams()));
            *shared.forge.write().unwrap_or_else(|e| e.into_inner()) = Some(engine.forge_handle());
            if fetch {
                metrics::origin_reachable(shared.name.as_deref(), true);
            }
            if fetch && shared.origin_error().is_some() {
                info!("the config repo can be reached again");
                shared.set_origin_error(None);
            }
            if !shared.ready.swap(true, Ordering::AcqRel) {
                info!("mirror fetched, ready");
            }
        }
        Err(e) => {
            let error = e.to_string();
            if fetch && e.is_transient() {
                if shared.origin_error().as_deref() != Some(error.as_str()) {
                    warn!(%error, "the config repo cannot be reached; retrying with backoff");
                }
                shared.origin_failed(&e);
            } else {
                warn!(%error, "refreshing the mirror failed");
            }
        }
    }
    rebuilt
}

/// The one-line outcome name a duplicate found in the snapshot answers with.
pub(crate) fn duplicate_from_snapshot(record: &AuditRecord, trigger: &str) -> Outcome {
    Outcome::Duplicate {
        rollback_id: record.id.clone(),
        commit: record.commit.clone(),
        reason: format!("{trigger} was already handled by {} at {}", record.id, record.at),
    }
}
