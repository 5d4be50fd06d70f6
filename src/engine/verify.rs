//! After the push: telling people what happened (a notice to the policy's `notify` route) and
//! checking that the rollback worked (a [`Watch`] per pushed rollback whose policy has
//! `verify:`), then escalating or stepping further back when it did not.
//!
//! Everything here is rebuilt from git: a watch starts from the rollback's audit record and its
//! progress note (`refs/notes/rollbackd-watch`), and ends with the verification note
//! (`refs/notes/rollbackd`), written once. Of two replicas that reach the same verdict, the one
//! whose note lands tells people and acts; the other stays quiet.

use std::collections::{HashMap, HashSet};

use jiff::Timestamp;
use tracing::{info, warn};

use super::facts::Asking;
use super::{Engine, EngineError, Selection, Write, select};
use crate::domain::audit::AuditRecord;
use crate::domain::decide::Verdict;
use crate::domain::decision::{Decision, Report};
use crate::domain::event::{Event, Source, Trigger};
use crate::domain::explain::{DecisionRecord, Explanation, Subject};
use crate::domain::notice::{Follows, Notice, NoticeKind, stepped_back_from, summary, trigger_url};
use crate::domain::plan::Sha;
use crate::domain::policy::Policy;
use crate::domain::rollback::{Delivery, Outcome, Rollback, RollbackId};
use crate::domain::soak::{self, Candidate, SoakState};
use crate::domain::verify::{OnFailure, Signal, Status, Verifying, Watch};
use crate::git::{CANDIDATES_REF, PathSet, PlanRequest, Planned, Try, WATCH_NOTES_REF};
use crate::metrics;
use crate::support::duration::Duration;

/// Rollbacks older than their `within` by more than this are no longer picked up for
/// verification (a service that was down for a day does not page about last week).
const PICK_UP: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);

impl Engine {
    /// Everything git records about `subject` (a rollback id, a trigger, an alert
    /// fingerprint): the decisions that wrote nothing, the rollbacks, their verification.
    pub fn explain(&mut self, subject: &str) -> Result<Explanation, EngineError> {
        let _lock = self.ctx.begin()?;
        self.ctx.fetch_if_stale()?;
        let now = self.ctx.clock.now();
        let decisions: Vec<DecisionRecord> =
            self.ctx.repo.decisions()?.iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
        let records = self.ctx.repo.audit(now)?.records().to_vec();
        let mut explanation = Explanation::select(&Subject::parse(subject), decisions, &records);
        for r in &explanation.rollbacks {
            if let Some(note) = self.ctx.repo.note(&r.commit) {
                explanation.verification.push((r.id.to_string(), note));
            } else if let Some(w) = self.ctx.repo.note_in(WATCH_NOTES_REF, &r.commit).and_then(|n| Watch::resume(&n)) {
                let state = format!(
                    "verifying until {}: firing {}, resolved since {}",
                    w.deadline(),
                    w.firing.len(),
                    w.resolved_since.map_or_else(|| "-".to_string(), |t| t.to_string())
                );
                explanation.verification.push((r.id.to_string(), state));
            }
        }
        Ok(explanation)
    }

    /// Verifies the rollbacks that are due: picks up rollbacks pushed elsewhere (another
    /// replica, the CLI, before a restart), asks Prometheus where a policy has a query, and
    /// settles every watch that has a verdict. Called by the writer when idle.
    pub fn verify_due(&mut self) -> Result<Vec<String>, EngineError> {
        let _lock = self.ctx.begin()?;
        self.ctx.fetch_if_stale()?;
        let now = self.ctx.clock.now();
        pick_up(&mut self.ctx, &mut self.verification, now)?;
        soak_due(&mut self.ctx, &mut self.verification, now);
        // A pull request GitHub would not open may be due again.
        self.ctx.outbox.wake();
        let mut said = super::phases::handle_due(&mut self.ctx, &mut self.stuck, &mut self.verification, now);
        let ids: Vec<RollbackId> = self.verification.watches.keys().cloned().collect();
        // Every watch's query at once, off this thread, for a bounded wait.
        let queries: Vec<String> = self.verification.watches.values().filter_map(|w| w.query.clone()).collect();
        let answers = ask_prometheus(&self.verification, &queries, now);
        for id in ids {
            let query = self.verification.watches.get(&id).and_then(|w| w.query.clone());
            if let Some(q) = query {
                let answer = answers.get(&q).cloned().unwrap_or_else(|| Err("not asked".into()));
                match answer {
                    Ok((holds, at)) => {
                        if let Some(w) = self.verification.watches.get_mut(&id) {
                            w.query_error = None;
                        }
                        said.extend(observe(
                            &mut self.ctx,
                            &mut self.verification,
                            &mut self.alerting,
                            &id,
                            &Signal::Query { holds, at },
                            now,
                        ));
                    }
                    Err(e) => {
                        warn!(rollback_id = %id, error = %e, "verify.query could not be evaluated");
                        if let Some(w) = self.verification.watches.get_mut(&id) {
                            w.query_error = Some(e);
                        }
                    }
                }
            }
            if let Some(s) = settle(&mut self.ctx, &mut self.verification, &mut self.alerting, &id, now) {
                said.push(s);
            }
        }
        Ok(said)
    }

    /// Every alert key a verification in progress waits to see resolve.
    pub fn watched_alerts(&self) -> std::collections::HashSet<String> {
        self.verification.watched_alerts()
    }
}

/// How long the writer waits for Prometheus per tick, all queries together: an alert behind it
/// waits no longer than this, however Prometheus is.
const PROMETHEUS_WAIT: std::time::Duration = std::time::Duration::from_millis(40);

/// How old an answer may be and still count.
const PROMETHEUS_STALE: jiff::SignedDuration = jiff::SignedDuration::from_mins(5);

/// When no known-good candidate was last seen soaking: while the candidates notes ref still
/// points where it did then, no candidate needs reading.
#[derive(Debug, PartialEq, Eq)]
enum NoneSoaking {
    /// Not known: at start, or a candidate was soaking at the last read.
    Unknown,
    /// None was soaking while the ref pointed at this commit (`None`: the ref did not exist).
    At(Option<String>),
}

/// What verification keeps between ticks: the watches on pushed rollbacks, and what it has
/// recorded or read already, so each is written or read once.
pub(super) struct Verification {
    /// Pushed rollbacks being verified.
    pub(super) watches: std::collections::BTreeMap<RollbackId, Watch>,
    /// Rollbacks whose verification is recorded in git (or too old to pick up).
    settled: std::collections::HashSet<RollbackId>,
    /// (trigger, outcome) of decisions already recorded for `explain`.
    recorded: std::collections::HashSet<(String, String)>,
    /// The candidates notes ref as it was when no known-good candidate was soaking.
    none_soaking: NoneSoaking,
    /// Asks Prometheus off the writer thread (verification and phase checks).
    prober: super::probe::Prober,
    /// What each recent alert said (its summary and link), by trigger, for the notices that
    /// come after the rollback (verification, step backs, escalations). Bounded; after a
    /// restart the summary is read back from the commit (`Rollback-Reason`).
    incidents: Incidents,
    /// Triggers whose failure is counted (`rollbackd_rollbacks_total{outcome="failed"}`), so a
    /// retried incident is one failed attempt. Bounded like `incidents`.
    failed: SeenTriggers,
    /// Merged proposals whose time to rollback is counted (here, or by whoever merged them
    /// before this engine first looked).
    merges: MergesSeen,
}

#[derive(Default)]
struct MergesSeen {
    looked: bool,
    seen: HashSet<RollbackId>,
}

impl Verification {
    pub(super) fn new(prober: super::probe::Prober) -> Self {
        Verification {
            watches: Default::default(),
            settled: Default::default(),
            recorded: Default::default(),
            none_soaking: NoneSoaking::Unknown,
            prober,
            incidents: Default::default(),
            failed: Default::default(),
            merges: Default::default(),
        }
    }
}

/// Triggers seen, the oldest forgotten first.
#[derive(Default)]
struct SeenTriggers {
    seen: HashSet<String>,
    order: std::collections::VecDeque<String>,
}

impl SeenTriggers {
    const KEPT: usize = 1_000;

    /// Whether `trigger` is new (and now seen).
    fn first(&mut self, trigger: &str) -> bool {
        if !self.seen.insert(trigger.to_string()) {
            return false;
        }
        self.order.push_back(trigger.to_string());
        if self.order.len() > Self::KEPT
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        true
    }
}

/// What recent alerts said, by trigger: their summary and link. Bounded: the oldest is
/// forgotten first.
#[derive(Default)]
struct Incidents {
    by_trigger: HashMap<String, (Option<String>, Option<String>)>,
    order: std::collections::VecDeque<String>,
}

impl Incidents {
    const KEPT: usize = 1_000;

    fn remember(&mut self, event: &Event) {
        let (said, url) = (summary(event), trigger_url(event));
        if said.is_none() && url.is_none() {
            return;
        }
        let trigger = event.trigger();
        if self.by_trigger.insert(trigger.clone(), (said, url)).is_none() {
            self.order.push_back(trigger);
            if self.order.len() > Self::KEPT
                && let Some(old) = self.order.pop_front()
            {
                self.by_trigger.remove(&old);
            }
        }
    }

    fn get(&self, trigger: &str) -> Option<&(Option<String>, Option<String>)> {
        self.by_trigger.get(trigger)
    }
}

/// What a step back came to.
/// A step back being written: what every try of it reads.
#[derive(Clone, Copy)]
struct SteppingBack<'a> {
    watch: &'a Watch,
    policy: &'a Policy,
    n: u32,
    event: &'a Event,
    trigger: &'a str,
    target: &'a crate::domain::plan::Target,
    to: &'a Sha,
    id: &'a RollbackId,
    now: Timestamp,
}

enum Step {
    /// Pushed to the branch, and verified in turn.
    Pushed(Rollback),
    /// Proposed for review instead (the policy's mode, a guard, a freeze, the pause), and why.
    Proposed(Rollback, String),
    /// Decided against (a guard denied it, the pause with `pause.automatic: nothing`, an open
    /// proposal already does it), and why.
    NotWritten(String),
    /// Nothing further back, or another replica stepped back already.
    Nothing,
}

/// When an alert trigger's incident began: Alertmanager keys end in `@<startsAt>`.
fn alert_start(trigger: &str) -> Option<Timestamp> {
    let trigger = Trigger::parse(trigger);
    if !trigger.is_alert() {
        return None;
    }
    trigger.key.rsplit_once('@')?.1.parse().ok()
}

impl super::Ctx {
    /// Records a known-good candidate on its commit (once per tag name).
    pub(super) fn add_candidate(&mut self, candidate: Candidate) -> Result<String, EngineError> {
        let commit = Sha(candidate.sha.clone());
        let mut all = soak::parse(&self.repo.note_in(CANDIDATES_REF, &commit).unwrap_or_default());
        if self.repo.tag_exists(&candidate.name) || all.iter().any(|c| c.name == candidate.name) {
            return Ok(format!("{} exists", candidate.name));
        }
        let said =
            format!("{} is a candidate: tagged at {} unless an alert fires first", candidate.name, candidate.until);
        all.push(candidate);
        self.repo.write_note(CANDIDATES_REF, &commit, &soak::note(&all), self.clock.now(), true)?;
        Ok(said)
    }

    pub(super) fn policy_named(&self, name: &str) -> Option<&Policy> {
        self.policies.policies.iter().find(|p| p.name() == name)
    }

    /// The policy of a rollback record and its target, as the policy renders it now from what
    /// the commit records (trigger, service, env, reason). An error says why there is none: the
    /// policy is gone, or its target cannot be rendered from that, or is another one now.
    pub(super) fn target_of(&self, r: &AuditRecord) -> Result<(Policy, crate::domain::plan::Target), String> {
        let Some(policy) = self.policy_named(&r.policy).cloned() else {
            return Err(format!("policy {} no longer exists", r.policy));
        };
        let event = Event::of_record(r, self.clock.now());
        let target = policy.resolve_target(&event, &self.rules).map_err(|e| format!("policy {}: {e}", r.policy))?;
        if target.service != r.service || target.env != r.env {
            return Err(format!("policy {} now names another target", r.policy));
        }
        Ok((policy, target))
    }
}

/// Watches `rollback` when its policy says how to verify it and something can.
pub(super) fn start_watch(
    ctx: &super::Ctx,
    state: &mut Verification,
    policy: &Policy,
    rollback: &Rollback,
    of: &Verifying<'_>,
    firing: Option<std::collections::BTreeSet<String>>,
) -> Option<Watch> {
    let Verifying { service, env, trigger, at, .. } = *of;
    let spec = policy.verify.as_ref()?;
    // One commit for several alerts: each of their alerts must resolve.
    if let Some(w) = state.watches.get_mut(&rollback.id) {
        if Trigger::parse(trigger).is_alert() {
            w.also_firing([trigger.to_string()]);
        }
        return Some(w.clone());
    }
    let query = ctx.verify_query(policy, service, env);
    let mut watch = Watch::start(spec, (rollback.id.clone(), rollback.commit.clone()), policy.name(), of, query);
    if let Some(firing) = firing {
        watch.also_firing(firing);
    }
    // rollbackd-controllers: with Flux or Argo CD configured, the rollback counts as
    // deployed when the controller reports it applied and healthy, not after deploy_time.
    watch.awaits_controller = ctx.config.sources.flux.is_some() || ctx.config.sources.argocd.is_some();
    // The last phase of a phased rollback whose alert resolved between phases: it is not
    // firing now, so it counts as resolved from when this phase could be deployed.
    if rollback.phase.is_some_and(|p| p.is_last() && p.of > 1)
        && Trigger::parse(trigger).is_alert()
        && ctx.resolved_before_last_phase(&rollback.id)
    {
        let deployed = at.saturating_add(spec.deploy_time.as_signed()).unwrap_or(at);
        watch.observe(&Signal::Resolved { key: trigger.to_string(), at: deployed });
    }
    if !watch.verifiable() {
        info!(rollback_id = %rollback.id, "verify: nothing can verify this rollback (no alert to resolve, no query)");
        return None;
    }
    info!(rollback_id = %rollback.id, deadline = %watch.deadline(), "verifying the rollback");
    state.watches.insert(watch.id.clone(), watch.clone());
    Some(watch)
}

/// Applies `change` to every candidate in git; rewrites the notes it changed.
pub(super) fn update_candidates(
    ctx: &mut super::Ctx,
    state: &mut Verification,
    now: Timestamp,
    mut change: impl FnMut(&mut Candidate) -> bool,
) {
    // Every alert comes through here: while the notes ref is what it was when nothing was
    // soaking, there is nothing to read.
    let current = ctx.repo.ref_id(CANDIDATES_REF);
    if state.none_soaking == NoneSoaking::At(current) {
        return;
    }
    let notes = match ctx.repo.notes_of(CANDIDATES_REF) {
        Ok(n) => n,
        Err(e) => {
            warn!(error = %e, "known-good candidates could not be read");
            return;
        }
    };
    let mut soaking = false;
    for (commit, text) in notes {
        let mut all = soak::parse(&text);
        let mut changed = false;
        for c in all.iter_mut() {
            changed |= change(c);
        }
        soaking |= all.iter().any(|c| c.state == SoakState::Soaking);
        if changed && let Err(e) = ctx.repo.write_note(CANDIDATES_REF, &commit, &soak::note(&all), now, true) {
            warn!(error = %e, "a known-good candidate's state could not be recorded");
        }
    }
    state.none_soaking = match soaking {
        true => NoneSoaking::Unknown,
        false => NoneSoaking::At(ctx.repo.ref_id(CANDIDATES_REF)),
    };
}

/// Keeps a decision that wrote nothing in git, once per (trigger, outcome), for `explain`.
pub(super) fn record_decision(
    ctx: &mut super::Ctx,
    state: &mut Verification,
    event: &Event,
    report: &Report,
    now: Timestamp,
) {
    let head = match report.plan.as_ref() {
        Some(plan) => plan.head.clone(),
        None => match ctx.repo.head() {
            Ok(h) => h,
            Err(_) => return,
        },
    };
    let Some(record) = DecisionRecord::of(event, report, &head.0, now) else { return };
    if !state.recorded.insert((record.trigger.clone(), record.outcome.clone())) {
        return;
    }
    if state.recorded.len() > 10_000 {
        state.recorded.clear();
    }
    if let Err(e) = ctx.repo.add_decision(&head, &record.line(), now) {
        warn!(trigger = %record.trigger, error = %e, "the decision could not be recorded in git");
    }
}

/// `n` with what people need to find the incident: the alert's summary and link (also
/// after the rollback, when no alert is at hand), the commit on the forge, the artifacts of
/// its rollback, and for a step back (and what is said of it) the rollback it follows.
pub(super) fn with_incident(ctx: &super::Ctx, state: &Verification, mut n: Notice) -> Notice {
    let index = ctx.repo.index();
    let records = index.records();
    let find = |id: &RollbackId, commit: Option<&str>| {
        records.iter().rev().find(|r| &r.id == id && commit.is_none_or(|c| r.commit.0 == c))
    };
    // The incident's first trigger: step backs name the rollback they stepped back from.
    let mut trigger = n.trigger.clone();
    let mut first = n.rollback_id.as_ref().and_then(|id| find(id, n.commit.as_deref()));
    // A proposal merged later reached the branch when this notice says (`at`).
    if n.event == crate::domain::notice::NoticeKind::RolledBack
        && let Some(r) = first
    {
        let started = r.alert_started.or_else(|| crate::domain::audit::alert_start_of(&r.trigger));
        let secs = |t: Option<Timestamp>| t.map(|t| crate::domain::notice::seconds(t, n.at));
        n.time_to_rollback_seconds = n.time_to_rollback_seconds.or_else(|| secs(started));
        n.time_to_rollback_from_receipt_seconds = n.time_to_rollback_from_receipt_seconds.or_else(|| secs(r.received));
    }
    for _ in 0..64 {
        let Some(prev) = stepped_back_from(&trigger) else { break };
        let Some(r) = find(&prev, None) else { break };
        if n.follows.is_none() && n.rollback_id.as_ref() != Some(&prev) {
            n.follows = Some(Follows {
                rollback_id: prev.clone(),
                commit: r.commit.0.clone(),
                commit_url: None,
                artifacts: Vec::new(),
            });
        }
        trigger.clone_from(&r.trigger);
        first = Some(r);
    }
    if let Some((said, url)) = state.incidents.get(&trigger) {
        n.summary = n.summary.or_else(|| said.clone());
        n.trigger_url = n.trigger_url.or_else(|| url.clone());
    }
    // An alert's rollback records its summary as `Rollback-Reason` (a restart forgets the rest).
    if n.summary.is_none() && Trigger::parse(&trigger).is_alert() {
        n.summary = first.filter(|r| r.trigger == trigger).and_then(|r| r.reason.clone());
    }
    let changes = |commit: &str| ctx.repo.artifact_changes(&format!("{commit}^1"), commit).unwrap_or_default();
    if n.artifacts.is_empty()
        && n.rollback_id.is_some()
        && let Some(commit) = &n.commit
    {
        n.artifacts = changes(commit);
    }
    n.commit_url = n.commit.as_deref().and_then(|c| ctx.config.forge.commit_url(c));
    if let Some(f) = &mut n.follows {
        f.commit_url = ctx.config.forge.commit_url(&f.commit);
        if f.artifacts.is_empty() {
            f.artifacts = changes(&f.commit);
        }
    }
    n
}

/// Counts the proposals merged by someone else (the CLI's `approve`, another replica, a
/// merge on GitHub) as this server's own merges are counted: `rollbackd_time_to_rollback_seconds`
/// by path, from the signed tag's review (`Approved-By`, `Merged-By`) and times. What was
/// on the origin when this engine first looked was counted by whoever saw it then. Reads
/// the index as [`pick_up`] just refreshed it.
pub(super) fn count_merges_seen(ctx: &super::Ctx, state: &mut Verification) {
    let index = ctx.repo.index();
    let merges = &mut state.merges;
    let baseline = !merges.looked;
    merges.looked = true;
    for r in index.records() {
        let Some(by) = r.review.merged_by.as_deref() else { continue };
        // An automatic merge is counted where it is made, as `auto_merge`.
        if by == "auto_merge" || r.cancelled || !merges.seen.insert(r.id.clone()) || baseline {
            continue;
        }
        let path = if r.review.approved_by.iter().any(|a| a == by) { "approval" } else { "merged_by_hand" };
        let started = r.alert_started.or_else(|| alert_start(&r.trigger));
        metrics::merged(path, started, r.at);
    }
}

/// Whether rollback `id`'s policy verifies it (so the plain "resolved" note is not its verdict).
pub(super) fn verified_by_watch(ctx: &super::Ctx, state: &Verification, id: &RollbackId, policy: &str) -> bool {
    state.watches.contains_key(id)
        || state.settled.contains(id)
        || ctx.policy_named(policy).is_some_and(|p| p.verify.is_some())
}

/// Whether each of `queries` holds, and when Prometheus said so, asked off the writer
/// thread: the writer waits at most [`PROMETHEUS_WAIT`] for all of them together. An answer
/// older than [`PROMETHEUS_STALE`] is no answer: the state is unknown, never "not holding".
pub(super) fn ask_prometheus(
    state: &Verification,
    queries: &[String],
    now: Timestamp,
) -> HashMap<String, Result<(bool, Timestamp), String>> {
    if queries.is_empty() {
        return HashMap::new();
    }
    state
        .prober
        .ask_all(queries, PROMETHEUS_WAIT)
        .into_iter()
        .map(|(q, answer)| {
            let result = match answer {
                None => Err("Prometheus has not answered yet".to_string()),
                Some(a) if now.duration_since(a.at) > PROMETHEUS_STALE => {
                    Err(format!("no answer from Prometheus since {}", a.at))
                }
                Some(a) => a.result.map(|holds| (holds, a.at)),
            };
            (q, result)
        })
        .collect()
}

/// Sends `notice` to the route of the policy it names.
pub(super) fn tell(ctx: &super::Ctx, state: &Verification, notice: &Notice) {
    let Some(policy) = ctx.policy_named(&notice.policy) else { return };
    let notice = with_incident(ctx, state, notice.clone());
    // A proposal's notice links its pull request: while the outbox's first try at opening it is
    // under way, the notice waits for that try (the writer does not).
    let branch = (notice.rollback_id.as_ref().filter(|_| notice.pr.is_none()))
        .map(|id| crate::domain::rollback::RollbackRef::new(&notice.service, &notice.env, id).name());
    match branch {
        Some(branch) => ctx.outbox.notify(notice, &policy.notify, &branch),
        None => ctx.notifier.send(&notice, &policy.notify),
    }
}

/// A proposal reached the branch (approved, or merged by hand): tell the route, measure it,
/// and verify it from now.
pub(super) fn merged(
    ctx: &mut super::Ctx,
    state: &mut Verification,
    rollback: &Rollback,
    t: &crate::git::Trailers,
    path: &'static str,
    now: Timestamp,
) {
    let mut notice = Notice::about(
        NoticeKind::RolledBack,
        &t.service,
        &t.env,
        &t.policy,
        &t.trigger,
        format!("proposal {} merged ({path})", rollback.id),
        now,
    );
    notice.rollback_id = Some(rollback.id.clone());
    notice.commit = Some(rollback.commit.0.clone());
    notice.actor = t.actor.clone();
    notice.known_good = Some(t.to.clone());
    // Time to rollback of a proposal: from the alert's start (and the receipt) to this merge.
    let started = t.alert_started.or_else(|| alert_start(&t.trigger));
    notice.time_to_rollback_seconds = started.map(|s| crate::domain::notice::seconds(s, now));
    notice.time_to_rollback_from_receipt_seconds = t.received.map(|r| crate::domain::notice::seconds(r, now));
    tell(ctx, state, &notice);
    // Counted here, so the merge is not counted again when the next fetch shows it.
    state.merges.seen.insert(rollback.id.clone());
    metrics::merged(path, started, now);
    if let Some(policy) = ctx.policy_named(&t.policy).cloned() {
        // A step back that was proposed counts as its step once merged (max_steps).
        let step = Trigger::parse(&t.trigger).step_back();
        start_watch(
            ctx,
            state,
            &policy,
            rollback,
            &Verifying { service: &t.service, env: &t.env, trigger: &t.trigger, at: now, step },
            None,
        );
    }
}

/// An alert for `service`/`env` fired: candidates soaking for it are not known-good.
fn reject_candidates(
    ctx: &mut super::Ctx,
    verification: &mut Verification,
    service: &str,
    env: &str,
    event: &Event,
    now: Timestamp,
) {
    // Firing now: whenever it started, it fires during the soak.
    let at = event.received_at;
    update_candidates(ctx, verification, now, |c| {
        if c.rejected_by(service, env, at) {
            c.state = SoakState::Rejected;
            c.reason = Some(format!("{} fired during the soak", event.trigger()));
            info!(candidate = %c.name, "known-good candidate rejected: an alert fired");
            true
        } else {
            false
        }
    });
}

/// A controller reported `service`/`env` failing at a revision: the candidates soaking for it
/// at that revision or a later one are not known-good (a healthy report for the same
/// revision often comes first: Argo CD's on-deployed, then Degraded). Candidates at earlier
/// revisions soak on: the failure names the revision it applied, not those before.
fn reject_failed_revision(
    ctx: &mut super::Ctx,
    verification: &mut Verification,
    service: &str,
    env: &str,
    event: &Event,
    now: Timestamp,
) {
    if !matches!(event.source, Source::Flux | Source::Argocd) {
        return;
    }
    let Some(revision) = event.applied_revision().map(|r| Sha(r.to_string())) else { return };
    let Ok(notes) = ctx.repo.notes_of(CANDIDATES_REF) else {
        warn!("known-good candidates could not be read; a controller failure rejects none");
        return;
    };
    // The rollbacks of this service/env written after the failing revision: a revision
    // holding one of them is the way back from the failure (a late report of a failure at
    // the revision rolled back must not reject the rolled-back state's own soak).
    let rollbacks: Vec<Sha> = ctx
        .repo
        .index()
        .applied(service, env)
        .filter(|r| r.commit != revision && ctx.repo.contains(&r.commit.0, &revision))
        .map(|r| r.commit.clone())
        .collect();
    let failing: std::collections::HashSet<String> = notes
        .iter()
        .flat_map(|(_, text)| soak::parse(text))
        .filter(|c| {
            c.state == SoakState::Soaking
                && c.service == service
                && c.env == env
                && ctx.repo.contains(&c.sha, &revision)
                && !rollbacks.iter().any(|r| ctx.repo.contains(&c.sha, r))
        })
        .map(|c| c.name)
        .collect();
    if failing.is_empty() {
        return;
    }
    let trigger = event.trigger();
    update_candidates(ctx, verification, now, |c| {
        if c.state == SoakState::Soaking && failing.contains(&c.name) {
            c.state = SoakState::Rejected;
            c.reason = Some(format!("{trigger} reported revision {} failing during the soak", revision.short()));
            info!(candidate = %c.name, "known-good candidate rejected: its controller reported a failure");
            true
        } else {
            false
        }
    });
}

/// Tags the candidates that soaked long enough. Tagging is an automatic write: while the
/// pause or a freeze covers a candidate's service (or the freezes cannot be read) it keeps
/// soaking, and is tagged once they end.
fn soak_due(ctx: &mut super::Ctx, verification: &mut Verification, now: Timestamp) {
    let freezes = ctx.repo.freezes().map_err(|e| {
        warn!(error = %e, "the freezes cannot be read: known-good candidates are not tagged meanwhile");
    });
    let stopped = |c: &Candidate| {
        freezes.as_ref().map_or(true, |f| f.paused(now).or_else(|| f.covering(&c.service, &c.env, now)).is_some())
    };
    let mut ready = Vec::new();
    update_candidates(ctx, verification, now, |c| {
        if c.ready(now) && !stopped(c) {
            ready.push(c.clone());
            c.state = SoakState::Tagged;
            true
        } else {
            false
        }
    });
    for c in ready {
        // A candidate becomes a known-good tag of its own service/env, never any other ref
        // (a second line of defence: its note is believed only when rollbackd signed it).
        let prefix = format!("known-good/{}/{}/", c.service, c.env);
        if !c.name.strip_prefix(&prefix).is_some_and(|stamp| !stamp.is_empty() && !stamp.contains('/')) {
            warn!(tag = %crate::domain::ident::shown(&c.name), "a known-good candidate names another tag; not tagged");
            continue;
        }
        let message = format!(
            "Known-good: {} in {} at {}\n\nTrigger: {}\nPolicy: {}\nSoaked: {} .. {} without a firing alert\n",
            c.service, c.env, c.sha, c.trigger, c.policy, c.since, c.until
        );
        match ctx.repo.tag_commit(&c.name, &c.sha, &message, now) {
            Ok(_) => info!(tag = %c.name, "known-good after its soak"),
            Err(e) => warn!(tag = %c.name, error = %e, "the known-good tag could not be written"),
        }
    }
}

/// Starts watches for direct rollbacks in the audit index that nobody here watches yet and
/// no note settles.
pub(super) fn pick_up(
    ctx: &mut super::Ctx,
    verification: &mut Verification,
    now: Timestamp,
) -> Result<(), EngineError> {
    // Only the records nobody watches or settled yet: a tick copies nothing else.
    let (watches, settled) = (&verification.watches, &verification.settled);
    let records: Vec<AuditRecord> = ctx
        .repo
        .audit(now)?
        .records()
        .iter()
        .filter(|r| {
            r.delivery == Delivery::Direct
                // Only rollbacks rollbackd pushed (a tag of ours names them): a step back
                // writes from the record's `Rollback-To`, which anyone's commit could carry.
                && r.tag.is_some()
                // A phased rollback is verified once its last phase is written.
                && r.phase.is_none_or(crate::domain::phase::Phase::is_last)
                && !r.cancelled
                && !watches.contains_key(&r.id)
                && !settled.contains(&r.id)
        })
        .cloned()
        .collect();
    for r in records {
        let Some(policy) = ctx.policy_named(&r.policy).cloned() else { continue };
        let Some(spec) = &policy.verify else { continue };
        let too_old = r.at.saturating_add(spec.within.as_signed()).and_then(|t| t.saturating_add(PICK_UP));
        if too_old.is_ok_and(|t| t < now) || ctx.repo.note(&r.commit).is_some() {
            verification.settled.insert(r.id.clone());
            continue;
        }
        if let Some(w) = ctx.repo.note_in(WATCH_NOTES_REF, &r.commit).and_then(|n| Watch::resume(&n))
            && w.id == r.id
        {
            verification.watches.insert(w.id.clone(), w);
            continue;
        }
        let rollback = Rollback {
            id: r.id.clone(),
            commit: r.commit.clone(),
            delivery: r.delivery,
            branch: r.branch.clone(),
            tag: r.tag.clone(),
            push_retries: 0,
            pr_url: None,
            phase: r.phase,
            because: Vec::new(),
        };
        let step = Trigger::parse(&r.trigger).step_back();
        if start_watch(
            ctx,
            verification,
            &policy,
            &rollback,
            &Verifying { service: &r.service, env: &r.env, trigger: &r.trigger, at: r.at, step },
            None,
        )
        .is_none()
        {
            verification.settled.insert(r.id.clone());
        }
    }
    count_merges_seen(ctx, verification);
    Ok(())
}

/// One try of [`step_back`]: `Moved` when the branch moved under the write.
fn step_back_try(
    ctx: &mut super::Ctx,
    verification: &mut Verification,
    stepping: &SteppingBack<'_>,
    counted: &mut Decision,
    retries: u32,
) -> Result<Try<Step>, EngineError> {
    let SteppingBack { watch, policy, n, event, trigger, target, to, id, now } = *stepping;
    let request = PlanRequest {
        target,
        strategy: policy.action.strategy,
        exact: policy.action.exact,
        to: Some(&to.0),
        irreversible: policy.irreversible.as_ref(),
        continues: None,
        allow_removal: policy.action.allow_removal,
        upto: None,
    };
    let plan = match ctx.repo.plan(&request)? {
        Planned::Ready(plan) => *plan,
        Planned::Noop { .. } | Planned::AlreadyRolledBack { .. } => return Ok(Try::Done(Step::Nothing)),
        // Stepping back past the service's first deploy would delete it.
        Planned::NothingToGoBackTo { reason, .. } => return Ok(Try::Done(Step::NotWritten(reason))),
    };
    let mut decision = Decision::for_event(event);
    decision.policy = Some(policy.name().to_string());
    decision.mode = Some(policy.action.mode);
    decision.target = Some(target.clone());
    decision.notes.push(format!("step back {n}: {} did not bring recovery", watch.id));
    decision.notes.append(&mut counted.notes);
    let open = ctx.open_proposal_for(&plan);
    let asking = Asking {
        policy,
        mode: policy.action.mode,
        human: false,
        emergency: false,
        dry_run: false,
        id,
        open_proposal: open.as_ref(),
    };
    let delivery = match ctx.decide_write(&asking, Some(&plan), (&target.service, &target.env), now, &mut decision) {
        Verdict::Deliver(delivery) => delivery,
        Verdict::Settled(outcome) | Verdict::SameAsOpenProposal(outcome) => {
            let why = outcome.summary();
            info!(of = %watch.id, step = n, "not stepping back: {why}");
            let report = Report { decision, plan: Some(plan), outcome };
            record_decision(ctx, verification, event, &report, now);
            return Ok(Try::Done(Step::NotWritten(why)));
        }
    };
    let w = Write { event, policy, plan: &plan, id, delivery, retries, now, emergency: false };
    Ok(match ctx.write(&w, &mut decision)? {
        Some(rollback) if delivery == Delivery::Proposal => {
            let why = decision.frozen.clone().unwrap_or_else(|| decision.notes.join("; "));
            info!(rollback_id = %rollback.id, of = %watch.id, step = n, "step back proposed: {why}");
            Try::Done(Step::Proposed(rollback, why))
        }
        Some(rollback) => {
            metrics::step_back();
            info!(rollback_id = %rollback.id, of = %watch.id, step = n, "stepped back");
            let firing = Some(watch.firing.clone());
            if let Some(next) = start_watch(
                ctx,
                verification,
                policy,
                &rollback,
                &Verifying { service: &target.service, env: &target.env, trigger, at: now, step: n },
                firing,
            ) && let Err(e) = ctx.repo.write_note(WATCH_NOTES_REF, &next.commit, &next.progress(), now, true)
            {
                warn!(rollback_id = %next.id, error = %e, "verification progress not recorded in git");
            }
            Try::Done(Step::Pushed(rollback))
        }
        None => Try::Moved,
    })
}

impl Verification {
    /// Every alert key a verification in progress waits to see resolve.
    fn watched_alerts(&self) -> std::collections::HashSet<String> {
        self.watches.values().flat_map(|w| w.firing.iter().cloned()).collect()
    }
}

/// Rolls back the change before the known-good the watched rollback went to: its own
/// commit, trailers and tag, verified in turn. It is decided like any automatic rollback
/// (`Ctx::decide_write`): the policy's mode, every guard, the freezes and the pause
/// (read fail-closed), and it counts toward the blast-radius breaker. `Step::Nothing` when
/// there is nothing further back (or another replica already stepped back).
fn step_back(
    ctx: &mut super::Ctx,
    verification: &mut Verification,
    alerting: &mut crate::domain::breaker::Alerting,
    watch: &Watch,
    policy: &Policy,
    now: Timestamp,
) -> Result<Step, EngineError> {
    let n = watch.step + 1;
    let event = Event::again(
        &format!("rollbackd:step-back/{}/{n}", watch.id),
        &watch.service,
        &watch.env,
        Some(format!("{} did not bring recovery", watch.id)),
        "rollbackd".into(),
        now,
    );
    let trigger = event.trigger();
    if ctx.repo.audit(now)?.find_trigger(&trigger).is_some() {
        return Ok(Step::Nothing);
    }
    let Some(record) = ctx.repo.index().records().iter().find(|r| r.id == watch.id).cloned() else {
        return Ok(Step::Nothing);
    };
    let target = policy
        .resolve_target(&event, &ctx.rules)
        .map_err(|message| EngineError::Policy { policy: policy.name().to_string(), message })?;
    let paths = PathSet::new(&target.paths)
        .map_err(|message| EngineError::Policy { policy: policy.name().to_string(), message })?;
    let Some(to) = ctx.repo.before_previous_change(&paths, &Sha(record.known_good.clone()))? else {
        return Ok(Step::Nothing);
    };
    let id = ctx.rollback_id(&trigger, &target.service, &target.env);
    let mut counted = Decision::for_event(&event);
    super::breaker::count(ctx, alerting, &target.service, now, &mut counted)?;
    let stepping =
        SteppingBack { watch, policy, n, event: &event, trigger: &trigger, target: &target, to: &to, id: &id, now };
    ctx.retry_on_moved(verification, |ctx, verification, retries| {
        step_back_try(ctx, verification, &stepping, &mut counted, retries)
    })
}

/// `verify.on_failure` for a rollback that did not bring recovery.
fn on_failure(
    ctx: &mut super::Ctx,
    verification: &mut Verification,
    alerting: &mut crate::domain::breaker::Alerting,
    watch: &Watch,
    notice: &Notice,
    now: Timestamp,
) -> String {
    let Some(policy) = ctx.policy_named(&watch.policy).cloned() else {
        return "its policy is gone; stopping".into();
    };
    let Some(spec) = policy.verify.clone() else { return "stopping".into() };
    let escalate = |ctx: &super::Ctx, verification: &Verification, why: String| {
        metrics::escalation();
        tell(ctx, verification, &notice.becomes(NoticeKind::Escalated, why.clone()));
        format!("escalated: {why}")
    };
    match spec.on_failure {
        OnFailure::Stop => "stopping (on_failure: stop)".into(),
        OnFailure::Escalate => escalate(ctx, verification, format!("{}; a person must act", notice.reason)),
        // One commit that rolled back several services (one bad change, several alerts) is
        // not stepped back by itself: which of them to take further back is for people.
        OnFailure::StepBack
            if ctx.repo.index().records().iter().any(|r| r.id == watch.id && !r.together_with.is_empty()) =>
        {
            escalate(
                ctx,
                verification,
                format!(
                    "{}; this rollback undid the change for several services in one commit, which is not stepped back automatically; a person must act",
                    notice.reason
                ),
            )
        }
        OnFailure::StepBack if watch.step >= spec.max_steps => escalate(
            ctx,
            verification,
            format!(
                "{}; {} step(s) back did not help either (max_steps); a person must act",
                notice.reason, watch.step
            ),
        ),
        OnFailure::StepBack => match step_back(ctx, verification, alerting, watch, &policy, now) {
            Ok(Step::Pushed(rollback)) => {
                let mut stepped = notice.becomes(
                    NoticeKind::SteppedBack,
                    format!("step {} of at most {}: rolled back the change before too", watch.step + 1, spec.max_steps),
                );
                stepped.rollback_id = Some(rollback.id.clone());
                stepped.commit = Some(rollback.commit.0.clone());
                stepped.artifacts = Vec::new();
                stepped.follows = Some(Follows {
                    rollback_id: watch.id.clone(),
                    commit: watch.commit.0.clone(),
                    commit_url: None,
                    artifacts: notice.artifacts.clone(),
                });
                tell(ctx, verification, &stepped);
                format!("stepped back: {} ({})", rollback.id, rollback.commit.short())
            }
            Ok(Step::Proposed(rollback, why)) => escalate(
                ctx,
                verification,
                format!(
                    "{}; the step back was proposed as {} instead of pushed ({why}); a person must act",
                    notice.reason, rollback.branch
                ),
            ),
            Ok(Step::NotWritten(why)) => {
                escalate(ctx, verification, format!("{}; did not step back: {why}; a person must act", notice.reason))
            }
            Ok(Step::Nothing) => {
                escalate(ctx, verification, format!("{}; there is no earlier change to step back to", notice.reason))
            }
            Err(e) => escalate(ctx, verification, format!("{}; stepping back failed: {e}", notice.reason)),
        },
    }
}

/// Ends a watch that has a verdict: writes the verification note and, if this process wrote
/// it, tells people and carries out `on_failure`.
fn settle(
    ctx: &mut super::Ctx,
    verification: &mut Verification,
    alerting: &mut crate::domain::breaker::Alerting,
    id: &RollbackId,
    now: Timestamp,
) -> Option<String> {
    let status = verification.watches.get(id)?.status(now);
    if status == Status::Watching {
        return None;
    }
    let watch = verification.watches.remove(id)?;
    let (verdict, reason, recovered_at) = match &status {
        Status::Verified { recovered_at } => ("verified", "recovered".to_string(), Some(*recovered_at)),
        Status::NotRecovered { reason } => ("not_recovered", reason.clone(), None),
        Status::Unverified { reason } => ("unverified", reason.clone(), None),
        Status::Watching => return None,
    };
    // rollbackd-controllers: when the rollback reached the cluster, as its controller said,
    // whatever the verdict: on a failed verification it tells the rollback was live, not
    // stuck before the cluster.
    let reason = match watch.applied_at {
        Some(t) => {
            format!(
                "{reason}; the rollback reached the cluster at {t} (applied and healthy, as its controller reported)"
            )
        }
        None => reason,
    };
    let after = recovered_at.map(|t| t.duration_since(watch.rolled_back_at).as_secs().max(0));
    let times = ctx
        .repo
        .index()
        .records()
        .iter()
        .rev()
        .find(|r| r.id == watch.id && r.commit == watch.commit)
        .map(crate::domain::status::times_to_rollback)
        .unwrap_or_default();
    let text = format!(
        "rollbackd verification: {verdict}\n\nRollback-Id: {}\nVerification: {verdict}\nIncident: {}\n\
         Rolled-Back-At: {}\n{times}{}{}Reason: {}\nFired-Again: {}\n",
        watch.id,
        watch.trigger,
        watch.rolled_back_at,
        watch.applied_at.map(|t| format!("Applied-At: {t}\n")).unwrap_or_default(),
        match (recovered_at, after) {
            (Some(t), Some(s)) => format!("Recovered-At: {t}\nTime-To-Recovery: {}\n", Duration::from_secs(s)),
            _ => String::new(),
        },
        crate::support::text::quoted(&reason),
        watch.fired_again,
    );
    let won = match ctx.repo.add_note(&watch.commit, &text, now) {
        Ok(won) => won,
        Err(e) => {
            // Try again at the next tick: the verdict stands, only its record is missing.
            warn!(rollback_id = %id, error = %e, "the verification note could not be written; retrying later");
            verification.watches.insert(id.clone(), watch);
            return None;
        }
    };
    verification.settled.insert(id.clone());
    if !won {
        return Some(format!("{id}: {verdict} (recorded by another replica)"));
    }
    metrics::verification(verdict, after);
    info!(rollback_id = %id, verdict, %reason, "rollback verification");
    let unverified = matches!(status, Status::Unverified { .. });
    let kind = match (recovered_at, unverified) {
        (Some(_), _) => NoticeKind::Verified,
        // Nobody could tell: people must look, and nothing is stepped back.
        (None, true) => NoticeKind::Escalated,
        (None, false) => NoticeKind::NotRecovered,
    };
    let mut notice =
        Notice::about(kind, &watch.service, &watch.env, &watch.policy, &watch.trigger, reason.clone(), now);
    notice.rollback_id = Some(watch.id.clone());
    notice.commit = Some(watch.commit.0.clone());
    notice.recovered_after_seconds = after;
    if let Some(r) = ctx.repo.index().records().iter().find(|r| r.id == watch.id) {
        notice.actor = r.actor.clone();
        notice.known_good = Some(r.known_good.clone());
    }
    tell(ctx, verification, &notice);
    if recovered_at.is_some() {
        return Some(format!("{id}: verified"));
    }
    if unverified {
        metrics::escalation();
        return Some(format!("{id}: unverified; escalated: {reason}"));
    }
    Some(format!("{id}: not recovered; {}", on_failure(ctx, verification, alerting, &watch, &notice, now)))
}

/// Feeds `signal` to one watch; records its progress when it changed, and settles it when
/// it has a verdict.
pub(super) fn observe(
    ctx: &mut super::Ctx,
    verification: &mut Verification,
    alerting: &mut crate::domain::breaker::Alerting,
    id: &RollbackId,
    signal: &Signal,
    now: Timestamp,
) -> Option<String> {
    let watch = verification.watches.get_mut(id)?;
    if watch.observe(signal) {
        let (commit, text) = (watch.commit.clone(), watch.progress());
        if let Err(e) = ctx.repo.write_note(WATCH_NOTES_REF, &commit, &text, now, true) {
            warn!(rollback_id = %id, error = %e, "verification progress not recorded in git; kept in memory");
        }
    }
    settle(ctx, verification, alerting, id, now)
}

/// A resolved alert, for the watches it was firing for. `None` when no watch knew it.
pub(super) fn resolve_watched(
    ctx: &mut super::Ctx,
    verification: &mut Verification,
    alerting: &mut crate::domain::breaker::Alerting,
    key: &str,
    at: Timestamp,
) -> Result<Option<String>, EngineError> {
    let now = ctx.clock.now();
    // `endsAt` is the sender's word: a time in the future is read as now.
    let at = at.min(now);
    pick_up(ctx, verification, now)?;
    let ids: Vec<RollbackId> =
        verification.watches.values().filter(|w| w.firing.contains(key)).map(|w| w.id.clone()).collect();
    if ids.is_empty() {
        return Ok(None);
    }
    let mut said = Vec::new();
    for id in ids {
        observe(ctx, verification, alerting, &id, &Signal::Resolved { key: key.to_string(), at }, now);
        said.push(match verification.watches.get(&id) {
            Some(w) if !w.firing.is_empty() => format!("{id}: {key} resolved; still firing: {}", w.firing.len()),
            Some(w) if w.resolved_since.is_none() => format!(
                "{id}: {key} resolved at {at}, before the deploy time ({}) was over: not counted as the rollback's doing",
                w.deploy_time
            ),
            Some(w) => format!("{id}: resolved; verified once it stays so for {} (by {})", w.stable_for, w.deadline()),
            None => format!("{id}: settled"),
        });
    }
    Ok(Some(said.join("; ")))
}

/// After `handle`: tell the route what was decided, feed a firing alert to the watches of
/// its target, and start watching a rollback that was pushed.
pub(super) fn after_handle(
    ctx: &mut super::Ctx,
    verification: &mut Verification,
    alerting: &mut crate::domain::breaker::Alerting,
    event: &Event,
    result: &Result<Report, EngineError>,
) {
    let now = ctx.clock.now();
    verification.incidents.remember(event);
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            let mut decision = Decision::for_event(event);
            if let Ok(Selection::Target { policy, target }) = select(&ctx.policies, &ctx.rules, event, &mut decision) {
                // One failed attempt per incident, however often its sender retries; only a
                // policy that rolls back makes rollback attempts.
                let rolls_back = matches!(
                    policy.action.mode,
                    crate::domain::policy::Mode::Direct | crate::domain::policy::Mode::PullRequest
                );
                if rolls_back && verification.failed.first(&event.trigger()) {
                    metrics::rollback_failed(&target.service, &target.env, policy.action.mode);
                }
                let mut notice = Notice::about(
                    NoticeKind::Failed,
                    &target.service,
                    &target.env,
                    policy.name(),
                    &event.trigger(),
                    e.to_string(),
                    now,
                );
                notice.actor = event.actor();
                notice.trigger_url = trigger_url(event);
                notice.summary = summary(event);
                ctx.notifier.send(&notice, &policy.notify);
                // Whatever became of the rollback, the controller said the revision is bad.
                reject_failed_revision(ctx, verification, &target.service, &target.env, event, now);
            }
            return;
        }
    };
    if let Some(notice) = Notice::from_report(event, report, now) {
        tell(ctx, verification, &notice);
    }
    record_decision(ctx, verification, event, report, now);
    if event.source == Source::Alertmanager
        && let Some(t) = report.decision.target.clone()
    {
        reject_candidates(ctx, verification, &t.service, &t.env, event, now);
    }
    if let Some(t) = report.decision.target.clone() {
        reject_failed_revision(ctx, verification, &t.service, &t.env, event, now);
    }
    if event.source == Source::Alertmanager {
        let dup = match &report.outcome {
            Outcome::Duplicate { rollback_id, .. } => Some(rollback_id),
            _ => None,
        };
        let target = report.decision.target.as_ref();
        let ids: Vec<RollbackId> = verification
            .watches
            .values()
            .filter(|w| dup == Some(&w.id) || target.is_some_and(|t| t.service == w.service && t.env == w.env))
            .map(|w| w.id.clone())
            .collect();
        let signal = Signal::Fired { key: event.trigger(), at: event.received_at };
        for id in ids {
            observe(ctx, verification, alerting, &id, &signal, now);
        }
    }
    // A phased rollback is verified from its last phase.
    if let Outcome::RolledBack { rollback } = &report.outcome
        && rollback.phase.is_none_or(crate::domain::phase::Phase::is_last)
        && let Some(policy) = report.decision.policy.as_deref().and_then(|n| ctx.policy_named(n))
    {
        let policy = policy.clone();
        let target = report.decision.target.as_ref().map(|t| (t.service.clone(), t.env.clone()));
        if let Some((service, env)) = target {
            let day_ago = now - jiff::SignedDuration::from_hours(24);
            if ctx.repo.index().applied(&service, &env).any(|r| r.id != rollback.id && r.at > day_ago) {
                metrics::oscillation();
            }
            start_watch(
                ctx,
                verification,
                &policy,
                rollback,
                &Verifying { service: &service, env: &env, trigger: &event.trigger(), at: now, step: 0 },
                None,
            );
        }
    }
}
