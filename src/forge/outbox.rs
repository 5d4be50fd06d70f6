//! What a write owes the forge, said on a thread of its own: the writer pushes, hands the
//! outbox what follows (the proposal's pull request, "fired again" and what else is said on
//! it, the review issue of a break-glass rollback, the policies' check run) and goes on to the
//! next event. The writer never waits on GitHub for any of it.
//!
//! Work is done in the order it was handed in, one task at a time. Opening a pull request is
//! retried while GitHub's failure is transient (it finds an open one before it opens one, so a
//! retry never opens two); everything else gets one try, as a POST that timed out may have
//! landed. Kept in memory: after a restart the incident's next delivery opens a pull request
//! still missing, as before.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use jiff::Timestamp;

use tracing::{info, warn};

use super::{Forge, ForgeError, ProposalRequest};
use crate::domain::notice::Notice;
use crate::domain::policy::Route;
use crate::notify::Notifier;
use crate::support::clock::Clock;

/// Tasks waiting at most; past it a new one is refused (logged) rather than queued.
const MAX_QUEUED: usize = 1_000;
/// Pull requests whose answer is kept for the asking (the CLI, a test, a notice).
const MAX_KEPT: usize = 1_000;
/// How long a pull request GitHub keeps failing to open is tried again.
const GIVE_UP_AFTER: jiff::SignedDuration = jiff::SignedDuration::from_hours(2);

/// A proposal's pull request as the outbox opens it.
#[derive(Clone, Debug)]
pub(crate) struct Proposal {
    pub(crate) branch: String,
    pub(crate) base: String,
    pub(crate) title: String,
    pub(crate) body: String,
    pub(crate) labels: Vec<String>,
    pub(crate) reviewers: Vec<String>,
    pub(crate) teams: Vec<String>,
}

impl Proposal {
    pub(crate) fn of(p: &ProposalRequest<'_>) -> Self {
        Proposal {
            branch: p.branch.to_string(),
            base: p.base.to_string(),
            title: p.title.to_string(),
            body: p.body.to_string(),
            labels: p.labels.to_vec(),
            reviewers: p.reviewers.to_vec(),
            teams: p.teams.to_vec(),
        }
    }

    fn request(&self) -> ProposalRequest<'_> {
        ProposalRequest {
            branch: &self.branch,
            base: &self.base,
            title: &self.title,
            body: &self.body,
            labels: &self.labels,
            reviewers: &self.reviewers,
            teams: &self.teams,
        }
    }
}

/// What became of a proposal's pull request: its URL once open (`None` where the forge has
/// none), or why its first try failed (later tries go on while GitHub's failure is transient).
pub(crate) type PrAnswer = Result<Option<String>, String>;

/// The answer to one pull request, for whoever may wait on it (never the writer), and the
/// notices that name it, held until its first try is over.
#[derive(Clone, Debug, Default)]
pub(crate) struct PendingPr(Arc<(Mutex<Slot>, Condvar)>);

#[derive(Debug, Default)]
struct Slot {
    answer: Option<PrAnswer>,
    notices: Vec<(Notice, Vec<Route>)>,
}

impl PendingPr {
    fn slot(&self) -> MutexGuard<'_, Slot> {
        self.0.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `answer` and sends the notices that waited for it (with the link, when open).
    fn set(&self, answer: PrAnswer, notifier: &Notifier) {
        let held = {
            let mut slot = self.slot();
            // A later success replaces an earlier failure; nothing replaces a success.
            if !matches!(slot.answer, Some(Ok(_))) {
                slot.answer = Some(answer);
            }
            std::mem::take(&mut slot.notices)
        };
        self.0.1.notify_all();
        let url = self.url();
        for (mut notice, route) in held {
            notice.pr = notice.pr.or_else(|| url.clone());
            notifier.send(&notice, &route);
        }
    }

    fn url(&self) -> Option<String> {
        match &self.slot().answer {
            Some(Ok(url)) => url.clone(),
            _ => None,
        }
    }

    /// The answer now, if there is one.
    pub(crate) fn now(&self) -> Option<PrAnswer> {
        self.slot().answer.clone()
    }

    /// The answer, waiting at most `budget` for it.
    pub(crate) fn wait(&self, budget: Duration) -> Option<PrAnswer> {
        let (slot, cv) = &*self.0;
        let guard = slot.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) =
            cv.wait_timeout_while(guard, budget, |s| s.answer.is_none()).unwrap_or_else(|e| e.into_inner());
        guard.answer.clone()
    }

    /// `notice`, with the link, to send now if the first try is over; else held until it is.
    fn hold_or_fill(&self, mut notice: Notice, route: Vec<Route>) -> Option<(Notice, Vec<Route>)> {
        let mut slot = self.slot();
        match &slot.answer {
            Some(answer) => {
                if let Ok(Some(url)) = answer {
                    notice.pr = notice.pr.or_else(|| Some(url.clone()));
                }
                Some((notice, route))
            }
            None => {
                slot.notices.push((notice, route));
                None
            }
        }
    }

    /// The notices still held (the outbox stops before the first try).
    fn release(&self) -> Vec<(Notice, Vec<Route>)> {
        std::mem::take(&mut self.slot().notices)
    }
}

enum Work {
    Propose {
        proposal: Proposal,
        pending: PendingPr,
        attempts: u32,
        /// When the first try was handed in: tries stop [`GIVE_UP_AFTER`] it.
        since: Timestamp,
    },
    /// Says `text` on the open pull request of `proposal.branch`, opening it (with `proposal`'s
    /// texts) when there is none.
    Announce {
        proposal: Proposal,
        text: String,
    },
    /// Says `text` on the open pull request of `branch`, if there is one.
    Say {
        branch: String,
        text: String,
    },
    Comment {
        number: u64,
        text: String,
    },
    React {
        comment_id: u64,
        content: &'static str,
    },
    OpenIssue {
        title: String,
        body: String,
        labels: Vec<String>,
    },
    ReportPolicies {
        commit: String,
        errors: Vec<String>,
        in_force: usize,
    },
}

impl Work {
    fn name(&self) -> &'static str {
        match self {
            Work::Propose { .. } => "open the pull request",
            Work::Announce { .. } => "comment on the pull request",
            Work::Say { .. } | Work::Comment { .. } => "comment on the pull request",
            Work::React { .. } => "react to the comment",
            Work::OpenIssue { .. } => "open the review issue",
            Work::ReportPolicies { .. } => "report the policies",
        }
    }
}

#[derive(Default)]
struct State {
    /// Each task and when it is due, on the engine's clock.
    queue: VecDeque<(Timestamp, Work)>,
    /// Working on one now.
    busy: bool,
    pending: HashMap<String, PendingPr>,
    stopping: bool,
}

struct Inner {
    forge: Arc<dyn Forge>,
    clock: Arc<dyn Clock>,
    notifier: Notifier,
    state: Mutex<State>,
    changed: Condvar,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// See the module doc.
pub(crate) struct Outbox {
    inner: Arc<Inner>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("queued", &self.inner.state().queue.len()).finish_non_exhaustive()
    }
}

impl Outbox {
    /// Starts the outbox's thread; nothing is started for a forge that hosts no pull requests.
    pub(crate) fn start(forge: Arc<dyn Forge>, notifier: Notifier, clock: Arc<dyn Clock>) -> Self {
        let hosts = forge.hosts_pull_requests();
        let inner = Arc::new(Inner { forge, clock, notifier, state: Mutex::default(), changed: Condvar::new() });
        let thread = hosts.then(|| {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("forge-outbox".into())
                .spawn(move || run(&inner))
                .map_err(|e| warn!(error = %e, "cannot start the forge's outbox: it says nothing"))
                .ok()
        });
        Outbox { inner, thread: thread.flatten() }
    }

    /// Queues `work`; `false` when it was refused (no thread, or the queue is full).
    fn push(&self, work: Work) -> bool {
        if self.thread.is_none() {
            return false;
        }
        let mut st = self.inner.state();
        if st.queue.len() >= MAX_QUEUED {
            warn!(task = work.name(), "the forge's outbox is full; not done");
            return false;
        }
        st.queue.push_back((self.inner.clock.now(), work));
        self.inner.changed.notify_all();
        true
    }

    /// Looks again at what is due (the engine's clock may have been moved by more than time).
    /// Under the lock, so the wake-up cannot fall between the thread's look and its wait.
    pub(crate) fn wake(&self) {
        let _st = self.inner.state();
        self.inner.changed.notify_all();
    }

    /// Opens the pull request of `proposal` (a branch just pushed); its answer is kept by branch.
    pub(crate) fn propose(&self, proposal: Proposal) -> Option<PendingPr> {
        self.thread.as_ref()?;
        let pending = PendingPr::default();
        let branch = proposal.branch.clone();
        {
            let mut st = self.inner.state();
            if st.pending.len() >= MAX_KEPT {
                // The opened ones go first; those still being tried stay.
                st.pending.retain(|_, p| !matches!(p.now(), Some(Ok(_))));
            }
            st.pending.insert(branch.clone(), pending.clone());
        }
        let since = self.inner.clock.now();
        if !self.push(Work::Propose { proposal, pending: pending.clone(), attempts: 0, since }) {
            self.inner.state().pending.remove(&branch);
            pending.set(Err("the forge's outbox is full".into()), &self.inner.notifier);
        }
        Some(pending)
    }

    /// Stops trying to open the pull request of `branch` (merged or cancelled meanwhile).
    pub(crate) fn forget(&self, branch: &str) {
        let mut st = self.inner.state();
        st.queue.retain(|(_, w)| !matches!(w, Work::Propose { proposal, .. } if proposal.branch == branch));
    }

    /// What became (or will become) of the pull request of `branch`, if it was handed in here.
    pub(crate) fn pending(&self, branch: &str) -> Option<PendingPr> {
        self.inner.state().pending.get(branch).cloned()
    }

    /// Says `text` on the pull request of `proposal.branch`, opening it first if it is not open.
    pub(crate) fn announce(&self, proposal: Proposal, text: String) {
        self.push(Work::Announce { proposal, text });
    }

    /// Says `text` on the open pull request of `branch`, if there is one.
    pub(crate) fn say(&self, branch: String, text: String) {
        self.push(Work::Say { branch, text });
    }

    /// Says `text` on pull request (or issue) `number`, open or not.
    pub(crate) fn comment(&self, number: u64, text: String) {
        self.push(Work::Comment { number, text });
    }

    /// Reacts to comment `comment_id` with `content`.
    pub(crate) fn react(&self, comment_id: u64, content: &'static str) {
        self.push(Work::React { comment_id, content });
    }

    pub(crate) fn open_issue(&self, title: String, body: String, labels: Vec<String>) {
        self.push(Work::OpenIssue { title, body, labels });
    }

    pub(crate) fn report_policies(&self, commit: String, errors: Vec<String>, in_force: usize) {
        self.push(Work::ReportPolicies { commit, errors, in_force });
    }

    /// Sends `notice`, which names the proposal on `branch`: now, with the pull request's link
    /// when it is open, if its first try is over (or it was never handed in here); else when
    /// that try is over.
    pub(crate) fn notify(&self, notice: Notice, route: &[Route], branch: &str) {
        let now = match self.pending(branch) {
            Some(pending) => pending.hold_or_fill(notice, route.to_vec()),
            None => Some((notice, route.to_vec())),
        };
        if let Some((notice, route)) = now {
            self.inner.notifier.send(&notice, &route);
        }
    }

    /// Waits until everything handed in is done (retries that are not due yet are not waited
    /// for), or `budget` is over. Whether it all was.
    pub(crate) fn settle(&self, budget: Duration) -> bool {
        let deadline = std::time::Instant::now() + budget;
        let mut st = self.inner.state();
        // The clock may have moved: the thread looks again at what is due.
        self.inner.changed.notify_all();
        loop {
            let now = self.inner.clock.now();
            let idle = !st.busy && st.queue.iter().all(|(due, _)| *due > now);
            let now = std::time::Instant::now();
            if idle || now >= deadline {
                return idle;
            }
            let wait = (deadline - now).min(Duration::from_millis(100));
            st = self.inner.changed.wait_timeout(st, wait).map_or_else(|e| e.into_inner().0, |(g, _)| g);
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let pending: Vec<PendingPr> = {
            let mut st = self.inner.state();
            st.stopping = true;
            st.pending.values().cloned().collect()
        };
        self.inner.changed.notify_all();
        // Notices held for a pull request that will not be tried now go out without its link.
        for (notice, route) in pending.iter().flat_map(PendingPr::release) {
            self.inner.notifier.send(&notice, &route);
        }
        // The thread finishes the task at hand (one API call's deadline at most) and stops; it
        // is not joined, so a process never waits on GitHub to end.
        drop(self.thread.take());
    }
}

fn run(inner: &Inner) {
    loop {
        let work = {
            let mut st = inner.state();
            loop {
                if st.stopping {
                    return;
                }
                let now = inner.clock.now();
                if let Some(i) = st.queue.iter().position(|(due, _)| *due <= now) {
                    st.busy = true;
                    break st.queue.remove(i).map(|(_, w)| w);
                }
                // Woken by new work and by the writer; at the latest when the next task is due.
                let next = st.queue.iter().map(|(due, _)| due.duration_since(now)).min();
                let wait = next.and_then(|d| Duration::try_from(d).ok()).unwrap_or(Duration::from_secs(60));
                let wait = wait.clamp(Duration::from_millis(10), Duration::from_secs(60));
                st = inner.changed.wait_timeout(st, wait).map_or_else(|e| e.into_inner().0, |(g, _)| g);
            }
        };
        let again = work.and_then(|w| {
            let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| perform(inner, w, inner.clock.now())));
            done.unwrap_or_else(|_| {
                tracing::error!("a task of the forge's outbox panicked; the outbox carries on");
                None
            })
        });
        let mut st = inner.state();
        if let Some(later) = again {
            st.queue.push_back(later);
        }
        st.busy = false;
        inner.changed.notify_all();
    }
}

/// Does `work`; a pull request to try again later comes back with when.
fn perform(inner: &Inner, work: Work, now: Timestamp) -> Option<(Timestamp, Work)> {
    let forge = &*inner.forge;
    let failed = |task: &str, e: &ForgeError| warn!(error = %e, "could not {task}");
    match work {
        Work::Propose { proposal, pending, attempts, since } => {
            return propose(inner, Propose { proposal, pending, attempts, since }, now);
        }
        Work::Announce { proposal, text } => {
            let said = forge
                .announce(&proposal.branch, &text)
                .and_then(|done| if done { Ok(()) } else { forge.propose(&proposal.request()).map(|_| ()) });
            if let Err(e) = said {
                failed("comment on the pull request", &e);
            }
        }
        Work::Say { branch, text } => match forge.announce(&branch, &text) {
            Ok(true) => {}
            Ok(false) => info!(branch, "no open pull request to say it on (merged or closed meanwhile)"),
            Err(e) => warn!(branch, error = %e, "could not say so on the pull request"),
        },
        Work::Comment { number, text } => {
            if let Err(e) = forge.comment(number, &text) {
                warn!(number, error = %e, "could not say so on the pull request");
            }
        }
        Work::React { comment_id, content } => {
            if let Err(e) = forge.react(comment_id, content) {
                warn!(comment_id, content, error = %e, "could not react to the comment");
            }
        }
        Work::OpenIssue { title, body, labels } => match forge.open_issue(&title, &body, &labels) {
            Ok(url) => info!(issue = url.as_deref().unwrap_or("-"), "opened the review issue"),
            Err(e) => failed("open the review issue", &e),
        },
        Work::ReportPolicies { commit, errors, in_force } => {
            if let Err(e) = forge.report_policies(&commit, &errors, in_force) {
                warn!(commit, error = %e, "could not report the policies on the forge");
            }
        }
    }
    None
}

/// A pull request to open, and how far its tries are.
struct Propose {
    proposal: Proposal,
    pending: PendingPr,
    attempts: u32,
    since: Timestamp,
}

fn propose(inner: &Inner, p: Propose, now: Timestamp) -> Option<(Timestamp, Work)> {
    let Propose { proposal, pending, attempts, since } = p;
    match inner.forge.propose(&proposal.request()) {
        Ok(pr) => {
            if attempts > 0 {
                info!(branch = %proposal.branch, pr = pr.as_ref().map_or("-", |p| &p.html_url), "opened the pull request");
            }
            pending.set(Ok(pr.map(|p| p.html_url)), &inner.notifier);
            None
        }
        Err(e) => {
            pending.set(Err(e.to_string()), &inner.notifier);
            let wait = jiff::SignedDuration::try_from(retry_after(attempts, &e)).unwrap_or_default();
            let due = now.checked_add(wait).unwrap_or(now);
            if !e.is_transient() || due.duration_since(since) > GIVE_UP_AFTER {
                warn!(branch = %proposal.branch, error = %e, "the pull request cannot be opened; giving up");
                return None;
            }
            warn!(branch = %proposal.branch, error = %e, "the pull request cannot be opened yet; trying again later");
            Some((due, Work::Propose { proposal, pending, attempts: attempts + 1, since }))
        }
    }
}

/// When to try again: what GitHub asked for, else 30 s doubling, at most 15 minutes.
fn retry_after(attempts: u32, e: &ForgeError) -> Duration {
    match e {
        ForgeError::RateLimited { retry_after, .. } => *retry_after,
        _ => Duration::from_secs(30u64 << attempts.min(5)),
    }
    .min(Duration::from_secs(900))
}
