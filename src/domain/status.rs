//! What is going on now, as one value: the pause and freezes in force, open proposals, rollbacks
//! being verified and the recent history. The engine builds it from git; `rollbackd status`
//! prints it as text and the status page renders it as HTML, so both say the same.

use jiff::Timestamp;
use serde::Serialize;

use crate::domain::audit::AuditRecord;
use crate::domain::rollback::Delivery;
use crate::support::duration::Duration;

/// How many past rollbacks the status keeps.
pub(crate) const RECENT: usize = 20;

#[derive(Clone, Debug, Default, Serialize)]
pub struct StatusView {
    /// The config repo, when rollbackd serves several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    pub at: Option<Timestamp>,
    /// How fresh the view is: the last moment the origin was known to hold what it shows.
    pub as_of: Option<Timestamp>,
    /// Whether automatic rollbacks happen now, in one word and one sentence.
    pub automatic: AutomaticView,
    /// The kill switch, described, when it is on.
    pub paused: Option<String>,
    pub freezes: Vec<FreezeView>,
    /// Artifacts rollbacks undid, held until released.
    pub holds: Vec<crate::domain::hold::Hold>,
    /// Whether an automatic rollback of each covered service/env would work now, as the
    /// server last worked it out (empty until it has, and for `rollbackd status`).
    #[serde(default)]
    pub readiness: Vec<crate::domain::readiness::Readiness>,
    pub proposals: Vec<ProposalView>,
    /// Phased rollbacks between phases.
    #[serde(default)]
    pub phased: Vec<PhasedView>,
    /// Pushed rollbacks whose verification is not in yet (on this replica).
    pub verifying: Vec<VerifyingView>,
    pub recent: Vec<RecentView>,
    /// Why the config repo cannot be reached, while it cannot.
    pub origin_error: Option<String>,
    /// rollbackd's records on the origin (notes, state, tags) that no trusted key signed, and
    /// so are not believed: someone wrote where only rollbackd should.
    #[serde(default)]
    pub untrusted: Vec<UntrustedView>,
    pub policies: PoliciesView,
}

/// `active`, `paused` (by whom, until when, why) or `frozen` (for what): what the page says first.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AutomaticView {
    /// `active`, `paused` or `frozen` (some scope frozen; the rest acts).
    pub state: &'static str,
    /// Who paused, until when and why, while paused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What is frozen (`search`, `all in prod`), while something is.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub frozen: Vec<String>,
    /// The sentence people read.
    pub text: String,
}

impl AutomaticView {
    /// From the pause in force (if any) and the other freezes in force.
    pub(crate) fn of(pause: Option<&crate::domain::freeze::Freeze>, freezes: &[FreezeView]) -> AutomaticView {
        let frozen: Vec<String> = freezes
            .iter()
            .map(|f| match &f.env {
                Some(env) => format!("{} in {env}", f.scope),
                None => f.scope.clone(),
            })
            .collect();
        if let Some(p) = pause {
            let until = crate::domain::freeze::to_the_second(p.until);
            let reason = p.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
            return AutomaticView {
                state: "paused",
                by: Some(p.by.clone()),
                until: Some(until),
                reason: p.reason.clone(),
                text: format!("Automatic rollbacks are PAUSED by {} until {until}{reason}", p.by),
                frozen,
            };
        }
        if !frozen.is_empty() {
            return AutomaticView {
                state: "frozen",
                text: format!("Automatic rollbacks are active, except FROZEN for {}", frozen.join(", ")),
                frozen,
                ..AutomaticView::default()
            };
        }
        AutomaticView { state: "active", text: "Automatic rollbacks are active".into(), ..AutomaticView::default() }
    }

    /// The state could not be read: said as such, never as active.
    pub(crate) fn unknown(why: &str) -> AutomaticView {
        AutomaticView {
            state: "unknown",
            text: format!("Whether automatic rollbacks are paused is unknown: {why}"),
            ..AutomaticView::default()
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct UntrustedView {
    #[serde(rename = "ref")]
    pub refname: String,
    pub object: String,
    pub why: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PoliciesView {
    /// `disk:<dir>` or `repo:<branch>:<dir>`.
    pub source: String,
    pub in_force: usize,
    /// The branch's policies, refused: the commit that carries them and each error.
    pub refused_commit: Option<String>,
    pub refused_errors: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct FreezeView {
    /// A service, or `all`.
    pub scope: String,
    pub env: Option<String>,
    pub until: Timestamp,
    pub by: String,
    pub reason: Option<String>,
    /// The sentence people read.
    pub text: String,
}

impl FreezeView {
    pub(crate) fn of(f: &crate::domain::freeze::Freeze) -> FreezeView {
        FreezeView {
            scope: f.scope.clone(),
            env: f.env.clone(),
            until: crate::domain::freeze::to_the_second(f.until),
            by: f.by.clone(),
            reason: f.reason.clone(),
            text: f.describe(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ProposalView {
    pub id: String,
    pub at: Timestamp,
    pub service: String,
    pub env: String,
    pub branch: String,
    pub actor: String,
    pub approvals: Vec<String>,
    /// Why it is a proposal when its policy pushes (`Rollback-Proposed-Because`): the guard,
    /// `freeze`, `pause`, `breaker`...
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub because: Vec<BecauseView>,
    /// Where people review it, when the forge has a web page for it.
    pub link: Option<String>,
}

/// One cause of a proposal: its name and what it said.
#[derive(Clone, Debug, Serialize)]
pub struct BecauseView {
    pub cause: String,
    pub detail: String,
}

impl BecauseView {
    pub fn of(c: &crate::domain::rollback::Cause) -> Self {
        BecauseView { cause: c.name().to_string(), detail: c.detail().to_string() }
    }
}

/// A phased rollback between phases: where it stands and what it waits for.
#[derive(Clone, Debug, Serialize)]
pub struct PhasedView {
    pub id: String,
    pub service: String,
    pub env: String,
    /// The newest phase on the branch, `1/2`.
    pub phase: String,
    /// Its name, when the policy gives one (`canary`).
    pub name: Option<String>,
    /// When it reached the branch.
    pub since: Timestamp,
    /// What comes next: `soaking until ...`, `verify.query decides next`, `waiting for continue`.
    pub waiting_for: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct VerifyingView {
    pub id: String,
    pub service: String,
    pub env: String,
    pub since: Timestamp,
    /// Not recovered by then means `not_recovered`.
    pub deadline: Timestamp,
    /// 0 for the incident's first rollback, n for its n-th step back.
    pub step: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct RecentView {
    pub id: String,
    pub at: Timestamp,
    pub service: String,
    pub env: String,
    /// `direct`, `proposal` (merged or open is said by the proposal list) or `cancelled`.
    pub delivery: &'static str,
    pub actor: String,
    pub trigger: String,
    pub emergency: bool,
    /// Who approved, merged or cancelled it (`approved by a; merged by b`), for proposals.
    pub reviewed: String,
    /// Time to rollback: from the alert's start to the push (none without an alert).
    pub time_to_rollback: Option<String>,
    /// Time to rollback from rollbackd's receipt of the event to the push.
    pub time_to_rollback_from_receipt: Option<String>,
    /// `verified`, `not_recovered`, `resolved` (the incident resolved, no policy check), or
    /// none while nothing is known.
    pub verification: Option<String>,
    /// Time to recovery: from the push to the verification's recovery (or the incident's
    /// resolve, with no verification of the policy's).
    pub time_to_recovery: Option<String>,
    /// Which phase this commit is, for a phased rollback (`1/2`).
    pub phase: Option<String>,
}

impl RecentView {
    /// `note` is the verification note on the rollback commit, if any.
    pub(crate) fn of(r: &AuditRecord, note: Option<&str>) -> RecentView {
        let shown = |d: jiff::SignedDuration| Duration::from_secs(d.as_secs().max(0)).to_string();
        let field =
            |name: &str| note.and_then(|n| n.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string())));
        let verification = field("Verification:").or_else(|| note.map(|_| "resolved".to_string()));
        RecentView {
            id: r.id.to_string(),
            at: crate::domain::freeze::to_the_second(r.at),
            service: r.service.clone(),
            env: r.env.clone(),
            delivery: match (r.delivery, r.cancelled) {
                (_, true) => "cancelled",
                (Delivery::Direct, _) => "direct",
                (Delivery::Proposal, _) => "proposal",
            },
            actor: r.actor.clone(),
            trigger: r.trigger.clone(),
            emergency: r.emergency,
            reviewed: r.review.describe(),
            time_to_rollback: r.time_to_rollback().map(shown),
            time_to_rollback_from_receipt: r.time_to_rollback_from_receipt().map(shown),
            verification,
            // Notes before one definition carried the push-based time as `Resolved-After-Rollback`.
            time_to_recovery: field("Resolved-After-Rollback:").or_else(|| field("Time-To-Recovery:")),
            phase: r.phase.map(|p| p.to_string()),
        }
    }
}

/// The note's lines for time to rollback (`Time-To-Rollback:` from the alert's start,
/// `Time-To-Rollback-From-Receipt:`), each when known.
pub(crate) fn times_to_rollback(r: &AuditRecord) -> String {
    let line = |name: &str, d: Option<jiff::SignedDuration>| {
        d.map(|d| format!("{name}: {}\n", Duration::from_secs(d.as_secs().max(0)))).unwrap_or_default()
    };
    line("Time-To-Rollback", r.time_to_rollback())
        + &line("Time-To-Rollback-From-Receipt", r.time_to_rollback_from_receipt())
}

impl StatusView {
    /// Only what concerns `service` (freezes of `all` and the pause concern everyone).
    pub fn for_service(mut self, service: Option<&str>) -> StatusView {
        let Some(s) = service else { return self };
        self.freezes.retain(|f| f.scope == "all" || f.scope == s);
        self.holds.retain(|h| h.service == s);
        self.readiness.retain(|r| r.service == s);
        self.proposals.retain(|p| p.service == s);
        self.verifying.retain(|v| v.service == s);
        self.phased.retain(|v| v.service == s);
        self.recent.retain(|r| r.service == s);
        self
    }

    /// The text `rollbackd status` and `/rollback status` print.
    pub fn text(&self) -> String {
        let mut out = String::new();
        if let Some(p) = &self.paused {
            out.push_str(&format!("PAUSED: {p}\n"));
        }
        if !self.automatic.text.is_empty() && self.automatic.state != "paused" {
            out.push_str(&format!("{}\n", self.automatic.text));
        }
        section(&mut out, "freezes", self.freezes.iter().map(|f| f.text.clone()));
        section(
            &mut out,
            "held",
            self.holds
                .iter()
                .map(|h| format!("{}/{} {} in {} (rollback {})", h.service, h.env, h.value, h.path, h.rollback_id)),
        );
        section(&mut out, "open proposals", self.proposals.iter().map(ProposalView::line));
        if !self.phased.is_empty() {
            section(&mut out, "phased rollbacks", self.phased.iter().map(PhasedView::line));
        }
        if !self.verifying.is_empty() {
            section(
                &mut out,
                "being verified",
                self.verifying.iter().map(|v| format!("{} {}/{} until {}", v.id, v.service, v.env, v.deadline)),
            );
        }
        section(&mut out, "recent rollbacks", self.recent.iter().take(5).map(RecentView::line));
        if let Some(e) = &self.origin_error {
            out.push_str(&format!("config repo unreachable: {e}\n"));
        }
        if !self.untrusted.is_empty() {
            out.push_str("UNTRUSTED records on the origin (not believed; see docs/security.md):\n");
            for u in &self.untrusted {
                let object = u.object.get(..12).unwrap_or(&u.object);
                out.push_str(&format!("  {} at {object}: {}\n", crate::domain::ident::shown(&u.refname), u.why));
            }
        }
        out.push_str(&self.policies.text());
        out
    }
}

impl ProposalView {
    /// Its line under `open proposals`.
    fn line(&self) -> String {
        format!(
            "{} {}/{} on {} asked by {} ({} approvals{}){}{}",
            self.id,
            self.service,
            self.env,
            self.branch,
            self.actor,
            self.approvals.len(),
            if self.approvals.is_empty() { String::new() } else { format!(": {}", self.approvals.join(", ")) },
            match self.because.as_slice() {
                [] => String::new(),
                causes => format!(
                    "; proposed because of {}",
                    causes
                        .iter()
                        .map(|c| if c.detail.is_empty() {
                            c.cause.clone()
                        } else {
                            format!("{}: {}", c.cause, c.detail)
                        })
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            },
            self.link.as_deref().map(|l| format!(" {l}")).unwrap_or_default()
        )
    }
}

impl PhasedView {
    /// Its line under `phased rollbacks`.
    fn line(&self) -> String {
        let name = self.name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default();
        format!(
            "{} {}/{} phase {}{name} since {}: {}",
            self.id, self.service, self.env, self.phase, self.since, self.waiting_for
        )
    }
}

impl RecentView {
    /// Its line under `recent rollbacks`.
    fn line(&self) -> String {
        format!(
            "{} {} {}/{} {}{} by {}{}{}{}",
            self.id,
            self.at,
            self.service,
            self.env,
            self.delivery,
            self.phase.as_deref().map(|p| format!(" phase {p}")).unwrap_or_default(),
            self.actor,
            if self.reviewed.is_empty() { String::new() } else { format!(" ({})", self.reviewed) },
            if self.emergency { " (EMERGENCY)" } else { "" },
            self.verification.as_deref().map(|v| format!(", {v}")).unwrap_or_default()
        )
    }
}

impl PoliciesView {
    /// The policies in force, and each error of a set that was refused.
    fn text(&self) -> String {
        let mut out = format!("policies: {} in force from {}\n", self.in_force, self.source);
        if let Some(commit) = &self.refused_commit {
            out.push_str(&format!("POLICIES REFUSED at {commit} (the set in force stays):\n"));
            for e in &self.refused_errors {
                out.push_str(&format!("  {e}\n"));
            }
        }
        out
    }
}

fn section(out: &mut String, title: &str, lines: impl Iterator<Item = String>) {
    let lines: Vec<String> = lines.collect();
    if lines.is_empty() {
        out.push_str(&format!("{title}: none\n"));
        return;
    }
    out.push_str(&format!("{title}:\n"));
    for l in lines {
        out.push_str(&format!("  {l}\n"));
    }
}

/// `as_of` to the second, never later than it was: a view must not claim to be fresher than it is.
pub(crate) fn as_of_second(t: Timestamp) -> Timestamp {
    t.round(jiff::TimestampRound::new().smallest(jiff::Unit::Second).mode(jiff::RoundMode::Trunc)).unwrap_or(t)
}
