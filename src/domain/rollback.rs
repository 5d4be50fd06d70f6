//! `Rollback`: what was done, and the outcome of handling one event.

use serde::{Deserialize, Serialize};

use crate::domain::plan::Sha;

/// Stable id of one rollback: derived from the config repo, the trigger, the service and the
/// env, so a repeat of the same incident in the same repo (a redelivery, a second replica)
/// arrives at the same id and the same refs, and two repos acting on one alert (`repos:`)
/// mint two ids that cannot be mistaken for each other (in chat, `approve`, the API).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RollbackId(pub String);

impl RollbackId {
    /// `repo`: what identifies the config repo and branch, the same however its URL is written
    /// (see `engine::Ctx::repo_identity`).
    pub fn derive(repo: &str, trigger: &str, service: &str, env: &str) -> Self {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for part in [repo, trigger, service, env] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        let digest = h.finalize();
        let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        RollbackId(format!("rb-{hex}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// An id from input (a chat argument, a branch name): `rb-` and twelve hex digits.
    pub fn parse(s: &str) -> Option<Self> {
        let hex = s.strip_prefix("rb-")?;
        (hex.len() == 12 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            .then(|| RollbackId(s.to_string()))
    }
}

/// The refs that name one rollback: its proposal branch and its tag share
/// `rollback/<service>/<env>/<id>`, a cancelled proposal is kept as `cancelled/<service>/<env>/<id>`.
/// The only place these names are made or read back.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RollbackRef {
    pub service: String,
    pub env: String,
    pub id: RollbackId,
}

impl RollbackRef {
    pub fn new(service: &str, env: &str, id: &RollbackId) -> Self {
        RollbackRef { service: service.to_string(), env: env.to_string(), id: id.clone() }
    }

    /// `rollback/<service>/<env>/<id>`: the proposal branch, and the tag of what reached the branch.
    pub fn name(&self) -> String {
        format!("rollback/{}/{}/{}", self.service, self.env, self.id)
    }

    /// `phase/<service>/<env>/<id>/<k>`: the tag rollbackd pushes with phase `k` of a phased
    /// rollback (all but the last, which is tagged `rollback/...`). Only a phase carrying its
    /// tag is one rollbackd wrote: trailers in a commit message alone never make it go on.
    pub fn phase_tag(&self, step: u32) -> String {
        format!("phase/{}/{}/{}/{step}", self.service, self.env, self.id)
    }

    /// Reads `phase/<service>/<env>/<id>/<k>` back.
    pub fn parse_phase_tag(name: &str) -> Option<(Self, u32)> {
        let (rest, step) = name.rsplit_once('/')?;
        let step = step.parse().ok().filter(|s| (1..=crate::domain::phase::MAX_PHASES).contains(s))?;
        Some((Self::parse_with(rest, "phase/")?, step))
    }

    /// `proposed/<service>/<env>/<id>`: the tag rollbackd pushes with a proposal branch, on its
    /// commit. A `rollback/...` branch without it is anyone's, and is never approved, merged or
    /// recorded as a rollback.
    pub fn proposed(&self) -> String {
        format!("proposed/{}/{}/{}", self.service, self.env, self.id)
    }

    /// `halted/<service>/<env>/<id>`: the tag on the marker commit of a phased rollback that
    /// halted; a marker without it is anyone's text, and halts nothing.
    pub fn halted(&self) -> String {
        format!("halted/{}/{}/{}", self.service, self.env, self.id)
    }

    /// Reads `halted/<service>/<env>/<id>` back.
    pub fn parse_halted(name: &str) -> Option<Self> {
        Self::parse_with(name, "halted/")
    }

    /// `cancelled/<service>/<env>/<id>`: the tag a cancelled proposal is kept under.
    pub fn cancelled(&self) -> String {
        format!("cancelled/{}/{}/{}", self.service, self.env, self.id)
    }

    /// Reads `rollback/<service>/<env>/<id>` (a branch or tag short name) back; `None` for any
    /// other name, including one whose parts could not have been written by us.
    pub fn parse_branch(name: &str) -> Option<Self> {
        Self::parse_with(name, "rollback/")
    }

    /// Reads `cancelled/<service>/<env>/<id>` back.
    pub fn parse_cancelled(name: &str) -> Option<Self> {
        Self::parse_with(name, "cancelled/")
    }

    fn parse_with(name: &str, prefix: &str) -> Option<Self> {
        let mut parts = name.strip_prefix(prefix)?.split('/');
        let (service, env, id) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || !crate::domain::ident::is_plain(service) || !crate::domain::ident::is_plain(env) {
            return None;
        }
        Some(RollbackRef { service: service.to_string(), env: env.to_string(), id: RollbackId::parse(id)? })
    }
}

impl std::fmt::Display for RollbackId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a rollback reached the repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Pushed to the target branch.
    Direct,
    /// Pushed to a `rollback/<service>/<env>/<id>` branch for review; the target branch is untouched.
    Proposal,
}

/// What made a decision other than what the policy's mode would do: a rollback proposed for
/// review by a policy that pushes. Carried from [`crate::domain::decide::decide`] to the answer,
/// the commit (`Rollback-Proposed-Because: cooldown: ...`), `explain`, the notice and `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "cause")]
pub enum Cause {
    /// A guard failed under `on_violation: propose` (or an emergency past a guard):
    /// `guard` is its name (`cooldown`, `max_rollbacks`, `point_of_no_return`, ...).
    Guard { guard: String, detail: String },
    /// A freeze covers the target.
    Freeze { detail: String },
    /// A person paused automatic rollbacks.
    Pause { detail: String },
    /// The blast-radius breaker paused automatic rollbacks.
    Breaker { detail: String },
    /// The freezes and the pause cannot be read (fail closed).
    UnreadableFreezes { detail: String },
}

impl Cause {
    /// The cause's one-word name: the guard's name, `freeze`, `pause`, `breaker`,
    /// `unreadable_freezes`.
    pub fn name(&self) -> &str {
        match self {
            Cause::Guard { guard, .. } => guard,
            Cause::Freeze { .. } => "freeze",
            Cause::Pause { .. } => "pause",
            Cause::Breaker { .. } => "breaker",
            Cause::UnreadableFreezes { .. } => "unreadable_freezes",
        }
    }

    pub fn detail(&self) -> &str {
        match self {
            Cause::Guard { detail, .. }
            | Cause::Freeze { detail }
            | Cause::Pause { detail }
            | Cause::Breaker { detail }
            | Cause::UnreadableFreezes { detail } => detail,
        }
    }

    /// Reads back a line written by `Display` (`cooldown: last rollback 5m ago`); `None` for
    /// anything whose name is not one word of letters, digits and `_`.
    pub fn parse(line: &str) -> Option<Cause> {
        let (name, detail) = line.split_once(": ").unwrap_or((line, ""));
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return None;
        }
        let detail = detail.to_string();
        Some(match name {
            "freeze" => Cause::Freeze { detail },
            "pause" => Cause::Pause { detail },
            "breaker" => Cause::Breaker { detail },
            "unreadable_freezes" => Cause::UnreadableFreezes { detail },
            guard => Cause::Guard { guard: guard.to_string(), detail },
        })
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.detail() {
            "" => f.write_str(self.name()),
            d => write!(f, "{}: {d}", self.name()),
        }
    }
}

/// `causes` in one line: `cooldown: ...; freeze: ...`.
pub(crate) fn causes_line(causes: &[Cause]) -> String {
    causes.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollback {
    pub id: RollbackId,
    pub commit: Sha,
    pub delivery: Delivery,
    /// The branch written: the target branch, or the proposal branch.
    pub branch: String,
    /// The annotated tag, for direct rollbacks.
    pub tag: Option<String>,
    /// How many times the push was retried because the branch moved.
    pub push_retries: u32,
    /// The pull request of a proposal, with the GitHub forge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pr_url: Option<String>,
    /// The phase this commit is, for a phased rollback (`target.phases`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<crate::domain::phase::Phase>,
    /// Why a proposal is one when its policy would have pushed (empty otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub because: Vec<Cause>,
}

/// The outcome of handling one event: the values of `outcome` in every API and CLI answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    RolledBack {
        rollback: Rollback,
    },
    Proposed {
        rollback: Rollback,
    },
    /// This incident (or this bad change) was already handled by an existing rollback.
    Duplicate {
        rollback_id: RollbackId,
        commit: Sha,
        reason: String,
    },
    /// The target paths already equal known-good.
    Noop {
        reason: String,
    },
    /// A guard said no and the policy says deny.
    Denied {
        reason: String,
    },
    /// No policy applies.
    Ignored {
        reason: String,
    },
    /// The policy's mode is `notify`: nothing is written.
    Notified {
        reason: String,
    },
    /// `--dry-run` / `simulate`: what would have happened, with nothing written.
    DryRun {
        would: Delivery,
        rollback_id: RollbackId,
    },
}

impl Outcome {
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::RolledBack { .. } => "rolled_back",
            Outcome::Proposed { .. } => "proposed",
            Outcome::Duplicate { .. } => "duplicate",
            Outcome::Noop { .. } => "noop",
            Outcome::Denied { .. } => "denied",
            Outcome::Ignored { .. } => "ignored",
            Outcome::Notified { .. } => "notified",
            Outcome::DryRun { .. } => "dry_run",
        }
    }

    pub fn rollback_id(&self) -> Option<&RollbackId> {
        match self {
            Outcome::RolledBack { rollback } | Outcome::Proposed { rollback } => Some(&rollback.id),
            Outcome::Duplicate { rollback_id, .. } | Outcome::DryRun { rollback_id, .. } => Some(rollback_id),
            _ => None,
        }
    }

    pub fn commit(&self) -> Option<&Sha> {
        match self {
            Outcome::RolledBack { rollback } | Outcome::Proposed { rollback } => Some(&rollback.commit),
            Outcome::Duplicate { commit, .. } => Some(commit),
            _ => None,
        }
    }

    /// One line for a human.
    pub fn summary(&self) -> String {
        match self {
            Outcome::RolledBack { rollback } => match rollback.phase.filter(|p| !p.is_last()) {
                Some(phase) => format!(
                    "rolled back phase {phase}: {} pushed to {} as {}; `status` says what the next phase waits for",
                    rollback.id,
                    rollback.branch,
                    rollback.commit.short()
                ),
                None => format!(
                    "rolled back: {} pushed to {} as {} (tag {})",
                    rollback.id,
                    rollback.branch,
                    rollback.commit.short(),
                    rollback.tag.as_deref().unwrap_or("-")
                ),
            },
            Outcome::Proposed { rollback } => format!(
                "proposed: {} pushed to branch {} as {} for review{}{}",
                rollback.id,
                rollback.branch,
                rollback.commit.short(),
                match rollback.because.as_slice() {
                    [] => String::new(),
                    causes => format!(" because of {}", causes_line(causes)),
                },
                rollback.pr_url.as_deref().map(|u| format!(": {u}")).unwrap_or_default()
            ),
            Outcome::Duplicate { rollback_id, commit, reason } => {
                format!("duplicate: {reason} (rollback {rollback_id}, commit {})", commit.short())
            }
            Outcome::Noop { reason } => format!("noop: {reason}"),
            Outcome::Denied { reason } => format!("denied: {reason}"),
            Outcome::Ignored { reason } => format!("ignored: {reason}"),
            Outcome::Notified { reason } => format!("notify only: {reason}"),
            Outcome::DryRun { would, rollback_id } => match would {
                Delivery::Direct => {
                    format!("dry run: would push rollback {rollback_id} to the branch")
                }
                Delivery::Proposal => {
                    format!("dry run: would propose rollback {rollback_id} for review")
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_stable_and_depends_on_every_part() {
        let repo = "https://github.com/acme/config main";
        let a = RollbackId::derive(repo, "alertmanager:abc", "checkout", "prod");
        assert_eq!(a, RollbackId::derive(repo, "alertmanager:abc", "checkout", "prod"));
        assert_ne!(a, RollbackId::derive(repo, "alertmanager:abc", "checkout", "staging"));
        assert_ne!(a, RollbackId::derive(repo, "alertmanager:abd", "checkout", "prod"));
        assert_ne!(
            a,
            RollbackId::derive("https://github.com/acme/billing main", "alertmanager:abc", "checkout", "prod")
        );
        // The parts are separated: moving text from one part to the next is another id.
        assert_ne!(
            a,
            RollbackId::derive("https://github.com/acme/config", " mainalertmanager:abc", "checkout", "prod")
        );
        assert!(a.as_str().starts_with("rb-") && a.as_str().len() == 15);
        assert_eq!(RollbackId::parse(a.as_str()), Some(a));
        for bad in ["rb-", "rb-0123456789aB", "rb-0123456789abc", "x-0123456789ab", "rb-01234567/9ab"] {
            assert_eq!(RollbackId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn refs_round_trip_and_refuse_what_we_never_write() {
        let r = RollbackRef::new("checkout", "prod", &RollbackId("rb-0123456789ab".into()));
        assert_eq!(r.name(), "rollback/checkout/prod/rb-0123456789ab");
        assert_eq!(RollbackRef::parse_branch(&r.name()), Some(r.clone()));
        assert_eq!(RollbackRef::parse_cancelled(&r.cancelled()), Some(r.clone()));
        assert_eq!(RollbackRef::parse_phase_tag(&r.phase_tag(2)), Some((r.clone(), 2)));
        assert_eq!(RollbackRef::parse_phase_tag("phase/checkout/prod/rb-0123456789ab/0"), None);
        for bad in [
            "rollback/checkout/prod",
            "rollback/checkout/prod/rb-0123456789ab/x",
            "rollback/*/prod/rb-0123456789ab",
            "rollback/../prod/rb-0123456789ab",
            "rollback/checkout/prod/not-an-id",
            "feature/checkout/prod/rb-0123456789ab",
        ] {
            assert_eq!(RollbackRef::parse_branch(bad), None, "{bad}");
        }
    }
}
