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
/// Tries at opening a pull request GitHub keeps failing, over about two hours.
const MAX_ATTEMPTS: u32 = 12;

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

/// The answer to one pull request, for whoever may wait on it (never the writer).
#[derive(Clone, Debug, Default)]
pub(crate) struct PendingPr(Arc<(Mutex<Option<PrAnswer>>, Condvar)>);

impl PendingPr {
    fn set(&self, answer: PrAnswer) {
        let (slot, cv) = &*self.0;
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        // A later success replaces an earlier failure; nothing replaces a success.
        if !matches!(*slot, Some(Ok(_))) {
            *slot = Some(answer);
        }
        cv.notify_all();
    }

    /// The answer now, if there is one.
    pub(crate) fn now(&self) -> Option<PrAnswer> {
        self.0.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The answer, waiting at most `budget` for it.
    pub(crate) fn wait(&self, budget: Duration) -> Option<PrAnswer> {
        let (slot, cv) = &*self.0;
        let guard = slot.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = cv.wait_timeout_while(guard, budget, |a| a.is_none()).unwrap_or_else(|e| e.into_inner());
        guard.clone()
    }
}

enum Work {
    Propose {
        proposal: Proposal,
        pending: PendingPr,
        attempts: u32,
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
    /// A notice that names the pull request of `branch`: sent once the pull request was tried.
    Notify {
        notice: Box<Notice>,
        route: Vec<Route>,
        branch: String,
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
            Work::Notify { .. } => "notify",
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

    fn push(&self, work: Work) {
        if self.thread.is_none() {
            return;
        }
        let mut st = self.inner.state();
        if st.queue.len() >= MAX_QUEUED {
            warn!(task = work.name(), "the forge's outbox is full; not done");
            return;
        }
        st.queue.push_back((self.inner.clock.now(), work));
        self.inner.changed.notify_all();
    }

    /// Looks again at what is due (the engine's clock may have been moved by more than time).
    pub(crate) fn wake(&self) {
        self.inner.changed.notify_all();
    }

    /// Opens the pull request of `proposal` (a branch just pushed); its answer is kept by branch.
    pub(crate) fn propose(&self, proposal: Proposal) -> Option<PendingPr> {
        self.thread.as_ref()?;
        let pending = PendingPr::default();
        {
            let mut st = self.inner.state();
            if st.pending.len() >= MAX_KEPT {
                st.pending.retain(|_, p| p.now().is_none());
            }
            st.pending.insert(proposal.branch.clone(), pending.clone());
        }
        self.push(Work::Propose { proposal, pending: pending.clone(), attempts: 0 });
        Some(pending)
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

    /// Sends `notice` once the pull request of `branch` was tried, with its URL when it opened.
    pub(crate) fn notify_after_pr(&self, notice: Notice, route: Vec<Route>, branch: String) {
        self.push(Work::Notify { notice: Box::new(notice), route, branch });
    }

    /// Waits until everything handed in is done (retries that are not due yet are not waited
    /// for), or `budget` is over. Whether it all was.
    pub(crate) fn settle(&self, budget: Duration) -> bool {
        let deadline = std::time::Instant::now() + budget;
        let mut st = self.inner.state();
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
        self.inner.state().stopping = true;
        self.inner.changed.notify_all();
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
        let again = work.and_then(|w| perform(inner, w, inner.clock.now()));
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
        Work::Propose { proposal, pending, attempts } => {
            return propose(forge, proposal, pending, attempts, now);
        }
        Work::Announce { proposal, text } => {
            let said = forge
                .announce(&proposal.branch, &text)
                .and_then(|done| if done { Ok(()) } else { forge.propose(&proposal.request()).map(|_| ()) });
            if let Err(e) = said {
                failed("comment on the pull request", &e);
            }
        }
        Work::Say { branch, text } => {
            if let Err(e) = forge.announce(&branch, &text) {
                warn!(branch, error = %e, "could not say so on the pull request");
            }
        }
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
        Work::Notify { mut notice, route, branch } => {
            let pending = inner.state().pending.get(&branch).cloned();
            if let Some(Ok(Some(url))) = pending.and_then(|p| p.now()) {
                notice.pr = Some(url);
            }
            inner.notifier.send(&notice, &route);
        }
    }
    None
}

fn propose(
    forge: &dyn Forge,
    proposal: Proposal,
    pending: PendingPr,
    attempts: u32,
    now: Timestamp,
) -> Option<(Timestamp, Work)> {
    match forge.propose(&proposal.request()) {
        Ok(pr) => {
            if attempts > 0 {
                info!(branch = %proposal.branch, pr = pr.as_ref().map_or("-", |p| &p.html_url), "opened the pull request");
            }
            pending.set(Ok(pr.map(|p| p.html_url)));
            None
        }
        Err(e) => {
            pending.set(Err(e.to_string()));
            if !e.is_transient() || attempts + 1 >= MAX_ATTEMPTS {
                warn!(branch = %proposal.branch, error = %e, "the pull request cannot be opened; giving up");
                return None;
            }
            warn!(branch = %proposal.branch, error = %e, "the pull request cannot be opened yet; trying again later");
            let wait = jiff::SignedDuration::try_from(retry_after(attempts, &e)).unwrap_or_default();
            let due = now.checked_add(wait).unwrap_or(now);
            Some((due, Work::Propose { proposal, pending, attempts: attempts + 1 }))
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
