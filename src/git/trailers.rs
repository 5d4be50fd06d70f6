//! The `Rollback-*` commit trailers: written on every rollback commit, read back for the audit
//! index. One module writes and parses them so the two cannot drift.
//!
//! ```
//! use rollbackd::parsers::Trailers;
//!
//! let t = Trailers { id: "rb-0123456789ab".into(), service: "checkout".into(), env: "prod".into(),
//!     of: vec!["a".repeat(40)], to: "b".repeat(40), trigger: "cli:alice-1".into(), ..Default::default() };
//! let message = t.append_to("Roll back checkout/prod\n\nThis reverts commit ...\n");
//! assert!(message.contains("\n\nRollback-Id: rb-0123456789ab\n"));
//! assert_eq!(Trailers::parse(&message), Some(t));
//! ```

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trailers {
    pub id: String,
    pub service: String,
    pub env: String,
    /// The bad commits undone, newest first.
    pub of: Vec<String>,
    /// The known-good commit.
    pub to: String,
    pub policy: String,
    /// `source:dedupe-key`: one incident, one rollback.
    pub trigger: String,
    pub actor: String,
    pub reason: Option<String>,
    pub strategy: String,
    pub emergency: bool,
    /// Which phase of a phased rollback this commit is (`2/3`); `None` for a rollback in one.
    pub phase: Option<crate::domain::phase::Phase>,
    /// The other targets this one commit rolls back for the same bad change, each with the
    /// alert that asked (`Rollback-Also: cart/prod alertmanager:...`).
    pub also: Vec<Also>,
    /// Why a proposal is one when its policy pushes (`cooldown: ...`), one line:
    /// `Rollback-Proposed-Because: cooldown: last rollback 5m ago; freeze: ...`.
    pub because: Vec<crate::domain::rollback::Cause>,
    /// When the alert began (`startsAt`), for an alert's rollback: time to rollback is
    /// measured from it to the push.
    pub alert_started: Option<jiff::Timestamp>,
    /// When rollbackd received the event that asked: time to rollback from receipt.
    pub received: Option<jiff::Timestamp>,
}

/// Another target of a rollback that one bad change made several services alert about.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Also {
    pub service: String,
    pub env: String,
    pub trigger: String,
}

impl Also {
    fn render(&self) -> String {
        format!("{}/{} {}", self.service, self.env, self.trigger)
    }

    /// Only what we write: plain names and a trigger without spaces.
    fn parse(value: &str) -> Option<Also> {
        let (target, trigger) = value.split_once(' ')?;
        let (service, env) = target.split_once('/')?;
        let plain = |v: &str| crate::domain::ident::is_plain(v);
        (plain(service) && plain(env) && !trigger.is_empty() && !trigger.contains(char::is_whitespace)).then(|| Also {
            service: service.to_string(),
            env: env.to_string(),
            trigger: trigger.to_string(),
        })
    }
}

/// A trailer value is one line of printable text: a newline would end the trailer block early,
/// and control characters have no place in an audit trail.
fn one_line(s: &str) -> String {
    s.split(|c: char| c.is_whitespace() || c.is_control()).filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ")
}

impl Trailers {
    /// The trailer block, to be appended after a blank line.
    pub fn render(&self) -> String {
        let mut lines = vec![
            ("Rollback-Id", self.id.clone()),
            ("Rollback-Service", self.service.clone()),
            ("Rollback-Env", self.env.clone()),
        ];
        lines.extend(self.of.iter().map(|sha| ("Rollback-Of", sha.clone())));
        lines.extend([
            ("Rollback-To", self.to.clone()),
            ("Rollback-Policy", self.policy.clone()),
            ("Rollback-Trigger", self.trigger.clone()),
            ("Rollback-Actor", self.actor.clone()),
        ]);
        if let Some(reason) = &self.reason {
            lines.push(("Rollback-Reason", reason.clone()));
        }
        lines.push(("Rollback-Strategy", self.strategy.clone()));
        if self.emergency {
            lines.push(("Rollback-Emergency", "true".into()));
        }
        if let Some(phase) = self.phase {
            lines.push(("Rollback-Phase", phase.to_string()));
        }
        lines.extend(self.also.iter().map(|a| ("Rollback-Also", a.render())));
        if let Some(t) = self.alert_started {
            lines.push(("Rollback-Alert-Started", t.to_string()));
        }
        if let Some(t) = self.received {
            lines.push(("Rollback-Received", t.to_string()));
        }
        if !self.because.is_empty() {
            // One line (a trailer repeated is refused by earlier readers); `; ` separates the
            // causes, so none may say it.
            let causes: Vec<String> = self.because.iter().map(|c| c.to_string().replace("; ", ", ")).collect();
            lines.push(("Rollback-Proposed-Because", causes.join("; ")));
        }
        // An empty value would make git read the next trailer as its continuation.
        lines
            .into_iter()
            .map(|(k, v)| (k, one_line(&v)))
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k}: {v}\n"))
            .collect()
    }

    /// `message` with the trailer block appended, separated by exactly one blank line.
    pub fn append_to(&self, message: &str) -> String {
        format!("{}\n\n{}", message.trim_end(), self.render())
    }

    /// The trailers of a rollback commit, or `None` for any other commit. Read strictly and by
    /// us alone: only the message's final paragraph counts, every line of it must be a
    /// `Rollback-*` trailer, and the id, service and env must be names we could have written.
    /// Text earlier in the message (a reason, a commit summary, a `---` line) cannot add,
    /// hide or change a trailer.
    pub fn parse(message: &str) -> Option<Trailers> {
        // Cheap reject: nearly every commit in a config repo is not ours.
        if !message.contains("Rollback-Id:") {
            return None;
        }
        let message = message.trim_end_matches(['\n', '\r']);
        let block = &message[message.rfind("\n\n")? + 2..];
        let mut t = Trailers::default();
        let mut seen = std::collections::HashSet::new();
        for line in block.lines() {
            let (key, value) = line.split_once(": ")?;
            if !key.starts_with("Rollback-") || value.is_empty() || value.trim() != value {
                return None;
            }
            if key != "Rollback-Of" && key != "Rollback-Also" && !seen.insert(key) {
                return None;
            }
            let value = value.to_string();
            match key {
                "Rollback-Id" => t.id = value,
                "Rollback-Service" => t.service = value,
                "Rollback-Env" => t.env = value,
                "Rollback-Of" => t.of.push(value),
                "Rollback-To" => t.to = value,
                "Rollback-Policy" => t.policy = value,
                "Rollback-Trigger" => t.trigger = value,
                "Rollback-Actor" => t.actor = value,
                "Rollback-Reason" => t.reason = Some(value),
                "Rollback-Strategy" => t.strategy = value,
                "Rollback-Emergency" => t.emergency = value == "true",
                "Rollback-Phase" => t.phase = Some(crate::domain::phase::Phase::parse(&value)?),
                "Rollback-Also" => t.also.push(Also::parse(&value)?),
                "Rollback-Alert-Started" => t.alert_started = Some(value.parse().ok()?),
                "Rollback-Received" => t.received = Some(value.parse().ok()?),
                "Rollback-Proposed-Because" => {
                    t.because = value.split("; ").filter_map(crate::domain::rollback::Cause::parse).collect();
                }
                // Written by a newer rollbackd: kept readable, not understood.
                _ => {}
            }
        }
        let plain = |v: &str| crate::domain::ident::is_plain(v);
        // Commit ids are written in full: anything else would reach git as revision syntax.
        let full = |v: &str| crate::domain::plan::Sha::is_full_hex(v);
        (crate::domain::rollback::RollbackId::parse(&t.id).is_some()
            && plain(&t.service)
            && plain(&t.env)
            && full(&t.to)
            && !t.of.is_empty()
            && t.of.iter().all(|s| full(s)))
        .then_some(t)
    }
}

/// A halt of a phased rollback, as its marker commit on the branch records it: the branch
/// moves by one empty commit, compare-and-swap, so a halt and a next phase cannot both happen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Halt {
    pub id: String,
    pub service: String,
    pub env: String,
}

impl Halt {
    pub(crate) fn render(&self) -> String {
        format!("Rollback-Halted: {}\nRollback-Halted-Target: {}/{}\n", self.id, self.service, self.env)
    }

    /// The marker's final paragraph, read as strictly as the trailers.
    pub(crate) fn parse(message: &str) -> Option<Halt> {
        if !message.contains("Rollback-Halted:") {
            return None;
        }
        let message = message.trim_end_matches(['\n', '\r']);
        let block = &message[message.rfind("\n\n")? + 2..];
        let mut lines = block.lines();
        let id = lines.next()?.strip_prefix("Rollback-Halted: ")?;
        let (service, env) = lines.next()?.strip_prefix("Rollback-Halted-Target: ")?.split_once('/')?;
        let plain = |v: &str| crate::domain::ident::is_plain(v);
        (lines.next().is_none()
            && crate::domain::rollback::RollbackId::parse(id).is_some()
            && plain(service)
            && plain(env))
        .then(|| Halt { id: id.to_string(), service: service.to_string(), env: env.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Trailers {
        Trailers {
            id: "rb-0123456789ab".into(),
            service: "checkout".into(),
            env: "prod".into(),
            of: vec!["a".repeat(40), "b".repeat(40)],
            to: "c".repeat(40),
            policy: "checkout-prod".into(),
            trigger: "alertmanager:fp@2026-11-21T10:00:00Z".into(),
            actor: "alertmanager".into(),
            reason: Some("error rate\nabove 5%".into()),
            strategy: "restore".into(),
            emergency: false,
            phase: crate::domain::phase::Phase::new(2, 3),
            also: vec![Also {
                service: "cart".into(),
                env: "prod".into(),
                trigger: "alertmanager:fp2@2026-11-21T10:00:01Z".into(),
            }],
            alert_started: "2026-11-21T10:00:00Z".parse().ok(),
            received: "2026-11-21T10:00:02Z".parse().ok(),
            because: vec![
                crate::domain::rollback::Cause::Guard {
                    guard: "cooldown".into(),
                    detail: "last rollback 5m ago".into(),
                },
                crate::domain::rollback::Cause::Pause { detail: "automatic rollbacks paused by cli:ops".into() },
            ],
        }
    }

    #[test]
    fn a_halt_marker_round_trips_and_nothing_else_reads_as_one() {
        let h = Halt { id: "rb-0123456789ab".into(), service: "checkout".into(), env: "prod".into() };
        let message = format!("Halt rollback rb-0123456789ab\n\nwhy\n\n{}", h.render());
        assert_eq!(Halt::parse(&message), Some(h.clone()));
        assert_eq!(Trailers::parse(&message), None, "a marker is not a rollback");
        assert_eq!(Halt::parse(&format!("x\n\n{}Extra: y\n", h.render())), None);
        assert_eq!(Halt::parse(&format!("x\n\n{}", h.render().replace("checkout", "../x"))), None);
    }

    #[test]
    fn round_trip() {
        let msg = sample().append_to("Roll back checkout/prod\n\nBody text.\n");
        let back = Trailers::parse(&msg).unwrap();
        let mut want = sample();
        want.reason = Some("error rate above 5%".into());
        assert_eq!(back, want);
        assert!(msg.contains("\n\nRollback-Id: rb-0123456789ab\n"));
    }

    #[test]
    fn only_the_final_block_counts() {
        let forged = "Roll back\n\nRollback-Id: rb-ffffffffffff\nRollback-Service: other\nRollback-Env: prod\n";
        // A forged block earlier in the message is ignored; ours at the end is read.
        let msg = sample().append_to(forged);
        assert_eq!(Trailers::parse(&msg).unwrap().id, "rb-0123456789ab");
        // A final paragraph with anything but our trailers in it is not ours.
        let msg = format!("{}Signed-off-by: x <x@y>\n", sample().render());
        assert_eq!(Trailers::parse(&format!("x\n\n{msg}")), None);
        // A `---` line before the block does not hide it (git's parser would stop there).
        let msg = sample().append_to("Roll back\n\n---\nnot a patch\n");
        assert_eq!(Trailers::parse(&msg).unwrap().service, "checkout");
        // Names we could never have written are not trusted.
        let mut bad = sample();
        bad.service = "*".into();
        assert_eq!(Trailers::parse(&bad.append_to("x")), None);
        bad = sample();
        bad.id = "rb-../../x".into();
        assert_eq!(Trailers::parse(&bad.append_to("x")), None);
        let forged_also = sample().append_to("x").replace("Rollback-Also: cart/prod", "Rollback-Also: ../prod");
        assert_eq!(Trailers::parse(&forged_also), None, "a target we would not write");
        let forged_phase = sample().append_to("x").replace("Rollback-Phase: 2/3", "Rollback-Phase: 4/3");
        assert_eq!(Trailers::parse(&forged_phase), None, "a phase we would not write");
    }

    #[test]
    fn other_commits_have_none() {
        assert_eq!(Trailers::parse("Deploy checkout 1.5.0\n\nSigned-off-by: a <a@b>\n"), None);
        assert_eq!(Trailers::parse("mentions Rollback-Id: in the body only\n"), None);
    }
}
