//! The decision, pure: given what the policy says and what is known about the world (guards,
//! freezes, who asked, an open proposal for the same change), how a planned rollback is
//! delivered, or why it is not. No repository, no clock, no forge: the engine gathers the
//! [`Facts`] and carries out the [`Verdict`].

use crate::domain::audit::AuditRecord;
use crate::domain::freeze::Freeze;
use crate::domain::guards::{GuardCheck, POINT_OF_NO_RETURN};
use crate::domain::policy::{Mode, OnViolation};
use crate::domain::rollback::{Cause, Delivery, Outcome, RollbackId};

/// What `decide` reads.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Facts<'a> {
    pub policy: &'a str,
    pub mode: Mode,
    pub on_violation: OnViolation,
    /// The guards that ran (none for an emergency request).
    pub guards: &'a [GuardCheck],
    /// A freeze covering the target now, if any (the pause covers every target).
    pub freeze: Option<&'a Freeze>,
    /// While paused, automatic rollbacks are denied rather than proposed (`pause.automatic:
    /// nothing`).
    pub pause_denies: bool,
    /// Why the freezes (and the pause) could not be read, if they could not: an automatic
    /// write is then treated as paused (fails closed), never as "not frozen".
    pub unreadable: Option<&'a str>,
    /// A person asked (chat or CLI), rather than an alert or a CI event.
    pub human_request: bool,
    /// Break glass: guards and freezes do not apply.
    pub emergency: bool,
    /// An open proposal that undoes exactly the same commits.
    pub open_proposal: Option<&'a AuditRecord>,
    pub dry_run: bool,
    pub id: &'a RollbackId,
}

/// What `decide` concluded.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Verdict {
    /// Write the rollback this way.
    Deliver(Delivery),
    /// Nothing is written; this is the outcome.
    Settled(Outcome),
    /// An open proposal already is this rollback: tell it the incident fired again.
    SameAsOpenProposal(Outcome),
}

/// Decides how (or whether) the rollback is delivered; every reason for a change of course is
/// added to `notes`, in the words the decision trace shows, and each cause that turned a push
/// into a proposal to `because` (empty when the delivery is what the policy's mode says).
pub(crate) fn decide(f: &Facts<'_>, notes: &mut Vec<String>, because: &mut Vec<Cause>) -> Verdict {
    let mut delivery = match f.mode {
        Mode::Direct => Delivery::Direct,
        Mode::PullRequest => Delivery::Proposal,
        Mode::Notify => {
            let reason = format!("policy {} only notifies; rollback {} was not written", f.policy, f.id);
            return Verdict::Settled(Outcome::Notified { reason });
        }
        Mode::KnownGood => {
            let reason = format!("policy {} marks known-good states; it does not roll back", f.policy);
            return Verdict::Settled(Outcome::Ignored { reason });
        }
    };
    let failed: Vec<String> =
        f.guards.iter().filter(|g| !g.passed).map(|g| format!("{}: {}", g.guard, g.detail)).collect();
    // Past the point of no return a person reviews the rollback, whoever asked and however:
    // even breaking glass cannot make git undo a migration.
    let no_return = f.guards.iter().any(|g| !g.passed && g.guard == POINT_OF_NO_RETURN);
    if !failed.is_empty() {
        match f.on_violation {
            OnViolation::Deny if !f.emergency => {
                return Verdict::Settled(Outcome::Denied { reason: failed.join("; ") });
            }
            OnViolation::Deny | OnViolation::Propose => {
                if delivery == Delivery::Direct {
                    notes.push(format!("guard failed, proposing for review instead of pushing: {}", failed.join("; ")));
                    because.extend(
                        f.guards
                            .iter()
                            .filter(|g| !g.passed)
                            .map(|g| Cause::Guard { guard: g.guard.to_string(), detail: g.detail.clone() }),
                    );
                }
                delivery = Delivery::Proposal;
            }
        }
    }
    if let Some(freeze) = f.freeze {
        if f.emergency {
            notes.push(format!("{}; broken by an emergency request", freeze.describe()));
        } else if f.human_request {
            notes.push(format!("{}; a person asked, so the rollback goes through", freeze.describe()));
        } else {
            if freeze.pause && f.pause_denies {
                return Verdict::Settled(Outcome::Denied { reason: freeze.describe() });
            }
            if delivery == Delivery::Direct {
                notes.push(format!("{}: proposing for review instead of pushing", freeze.describe()));
            }
            if f.mode == Mode::Direct {
                because.push(freeze.cause());
            }
            delivery = Delivery::Proposal;
        }
    }
    if let Some(why) = f.unreadable {
        let why = format!("the freezes and the pause cannot be read ({why})");
        if f.emergency || f.human_request {
            notes.push(format!("{why}; a person asked, so the rollback goes through"));
        } else {
            if f.pause_denies {
                return Verdict::Settled(Outcome::Denied {
                    reason: format!("{why}: automatic rollbacks are not written until they can be"),
                });
            }
            if delivery == Delivery::Direct {
                notes.push(format!("{why}: proposing for review instead of pushing"));
            }
            if f.mode == Mode::Direct {
                because.push(Cause::UnreadableFreezes { detail: why });
            }
            delivery = Delivery::Proposal;
        }
    }
    if f.emergency && no_return {
        notes.push("an emergency, but past the point of no return: proposing for review".into());
    } else if f.emergency {
        delivery = Delivery::Direct;
        because.clear();
    }
    if let Some(open) = f.open_proposal.filter(|_| delivery == Delivery::Proposal) {
        let reason = format!("open proposal {} on {} already rolls back these commits", open.id, open.branch);
        return Verdict::SameAsOpenProposal(Outcome::Duplicate {
            rollback_id: open.id.clone(),
            commit: open.commit.clone(),
            reason,
        });
    }
    if f.dry_run {
        return Verdict::Settled(Outcome::DryRun { would: delivery, rollback_id: f.id.clone() });
    }
    Verdict::Deliver(delivery)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(passed: bool) -> GuardCheck {
        named_guard("cooldown", passed)
    }

    fn named_guard(name: &'static str, passed: bool) -> GuardCheck {
        GuardCheck { guard: name, passed, detail: "last rollback 5m ago".into() }
    }

    fn freeze() -> Freeze {
        Freeze {
            scope: "checkout".into(),
            env: None,
            until: "2026-11-21T13:00:00Z".parse().unwrap(),
            reason: None,
            by: "cli:ops".into(),
            at: "2026-11-21T11:00:00Z".parse().unwrap(),
            pause: false,
        }
    }

    fn open() -> AuditRecord {
        serde_json::from_value(serde_json::json!({
            "id": "rb-0123456789ab", "at": "2026-11-21T11:00:00Z", "service": "checkout", "env": "prod",
            "delivery": "proposal", "commit": "a".repeat(40), "branch": "rollback/checkout/prod/rb-0123456789ab",
            "tag": null, "strategy": "restore", "bad_commits": [], "known_good": "b".repeat(40),
            "policy": "p", "trigger": "alertmanager:x", "actor": "alertmanager", "reason": null, "emergency": false
        }))
        .unwrap()
    }

    /// One row: the facts that differ from a plain direct policy, and what must come out.
    struct Row {
        name: &'static str,
        mode: Mode,
        on_violation: OnViolation,
        guard_passed: Option<bool>,
        guard_name: &'static str,
        frozen: bool,
        /// The freeze is the pause, set by this principal.
        paused_by: Option<&'static str>,
        unreadable: bool,
        human: bool,
        emergency: bool,
        open: bool,
        dry_run: bool,
        want: &'static str,
        /// The causes `decide` gives for it, by name.
        because: &'static str,
    }

    const BASE: Row = Row {
        name: "",
        mode: Mode::Direct,
        on_violation: OnViolation::Deny,
        guard_passed: None,
        guard_name: "cooldown",
        frozen: false,
        paused_by: None,
        unreadable: false,
        human: false,
        emergency: false,
        open: false,
        dry_run: false,
        want: "",
        because: "",
    };

    fn shown(v: &Verdict) -> String {
        match v {
            Verdict::Deliver(Delivery::Direct) => "direct".into(),
            Verdict::Deliver(Delivery::Proposal) => "proposal".into(),
            Verdict::Settled(o) => o.name().into(),
            Verdict::SameAsOpenProposal(_) => "same as open proposal".into(),
        }
    }

    /// Each mode, and a failed guard under each `on_violation`.
    fn mode_and_guard_rows() -> Vec<Row> {
        vec![
            Row { name: "direct", want: "direct", ..BASE },
            Row { name: "pull request", mode: Mode::PullRequest, want: "proposal", ..BASE },
            Row { name: "notify writes nothing", mode: Mode::Notify, want: "notified", ..BASE },
            Row { name: "known_good does not roll back", mode: Mode::KnownGood, want: "ignored", ..BASE },
            Row { name: "guard passes", guard_passed: Some(true), want: "direct", ..BASE },
            Row { name: "guard fails, deny", guard_passed: Some(false), want: "denied", ..BASE },
            Row {
                name: "guard fails, propose",
                guard_passed: Some(false),
                on_violation: OnViolation::Propose,
                want: "proposal",
                because: "cooldown",
                ..BASE
            },
            Row {
                name: "max_rollbacks fails, propose",
                guard_passed: Some(false),
                guard_name: "max_rollbacks",
                on_violation: OnViolation::Propose,
                want: "proposal",
                because: "max_rollbacks",
                ..BASE
            },
            Row {
                name: "past the point of no return, propose",
                guard_passed: Some(false),
                guard_name: POINT_OF_NO_RETURN,
                on_violation: OnViolation::Propose,
                want: "proposal",
                because: "point_of_no_return",
                ..BASE
            },
            Row {
                name: "guard fails under a pull_request policy: its own mode, no cause",
                mode: Mode::PullRequest,
                guard_passed: Some(false),
                on_violation: OnViolation::Propose,
                want: "proposal",
                ..BASE
            },
        ]
    }

    /// Freezes and pauses, alone and with a failed guard, and freezes that cannot be read.
    fn freeze_rows() -> Vec<Row> {
        vec![
            Row { name: "frozen alert becomes a proposal", frozen: true, want: "proposal", because: "freeze", ..BASE },
            Row {
                name: "paused by a person",
                frozen: true,
                paused_by: Some("cli:ops"),
                want: "proposal",
                because: "pause",
                ..BASE
            },
            Row {
                name: "paused by the breaker",
                frozen: true,
                paused_by: Some(crate::domain::freeze::BREAKER),
                want: "proposal",
                because: "breaker",
                ..BASE
            },
            Row {
                name: "freezes cannot be read",
                unreadable: true,
                want: "proposal",
                because: "unreadable_freezes",
                ..BASE
            },
            Row {
                name: "guard and freeze: both said",
                guard_passed: Some(false),
                on_violation: OnViolation::Propose,
                frozen: true,
                want: "proposal",
                because: "cooldown, freeze",
                ..BASE
            },
        ]
    }

    /// Who asked, what is open already, and a dry run.
    fn request_rows() -> Vec<Row> {
        vec![
            Row { name: "frozen, a person asked: no cause", frozen: true, human: true, want: "direct", ..BASE },
            Row { name: "frozen, emergency", frozen: true, emergency: true, want: "direct", ..BASE },
            Row {
                name: "emergency beats a pull_request policy",
                mode: Mode::PullRequest,
                emergency: true,
                want: "direct",
                ..BASE
            },
            Row {
                name: "open proposal is reused",
                mode: Mode::PullRequest,
                open: true,
                want: "same as open proposal",
                ..BASE
            },
            Row { name: "open proposal ignored when pushing", open: true, want: "direct", ..BASE },
            Row {
                name: "frozen alert joins the open proposal",
                frozen: true,
                open: true,
                want: "same as open proposal",
                because: "freeze",
                ..BASE
            },
            Row { name: "dry run", dry_run: true, want: "dry_run", ..BASE },
            Row { name: "dry run still denies", dry_run: true, guard_passed: Some(false), want: "denied", ..BASE },
        ]
    }

    /// `decide` on the row's facts gives the row's verdict and causes.
    fn check(row: &Row) {
        let (o, id) = (open(), RollbackId("rb-ffffffffffff".into()));
        let guards: Vec<GuardCheck> =
            row.guard_passed.map(|passed| named_guard(row.guard_name, passed)).into_iter().collect();
        let stop = match row.paused_by {
            Some(by) => Freeze { scope: "all".into(), pause: true, by: by.into(), ..freeze() },
            None => freeze(),
        };
        let facts = Facts {
            policy: "p",
            mode: row.mode,
            on_violation: row.on_violation,
            guards: &guards,
            freeze: row.frozen.then_some(&stop),
            pause_denies: false,
            unreadable: row.unreadable.then_some("refs/rollbackd/state/freezes: invalid"),
            human_request: row.human,
            emergency: row.emergency,
            open_proposal: row.open.then_some(&o),
            dry_run: row.dry_run,
            id: &id,
        };
        let (mut notes, mut because) = (Vec::new(), Vec::new());
        assert_eq!(shown(&decide(&facts, &mut notes, &mut because)), row.want, "{}", row.name);
        let names: Vec<&str> = because.iter().map(Cause::name).collect();
        assert_eq!(names.join(", "), row.because, "{}", row.name);
    }

    #[test]
    fn decisions_as_a_table() {
        for row in mode_and_guard_rows().into_iter().chain(freeze_rows()).chain(request_rows()) {
            check(&row);
        }
    }

    #[test]
    fn past_the_point_of_no_return_even_an_emergency_is_reviewed() {
        let id = RollbackId("rb-ffffffffffff".into());
        let crossed = [GuardCheck { guard: POINT_OF_NO_RETURN, passed: false, detail: "migration".into() }];
        for (on_violation, emergency, want) in [
            (OnViolation::Deny, false, "denied"),
            (OnViolation::Propose, false, "proposal"),
            (OnViolation::Deny, true, "proposal"),
            (OnViolation::Propose, true, "proposal"),
        ] {
            let facts = Facts {
                policy: "p",
                mode: Mode::Direct,
                on_violation,
                guards: &crossed,
                freeze: None,
                pause_denies: false,
                unreadable: None,
                human_request: emergency,
                emergency,
                open_proposal: None,
                dry_run: false,
                id: &id,
            };
            let mut notes = Vec::new();
            assert_eq!(
                shown(&decide(&facts, &mut notes, &mut Vec::new())),
                want,
                "{on_violation:?} emergency={emergency}"
            );
        }
    }

    #[test]
    fn every_change_of_course_is_explained() {
        let (f, id) = (freeze(), RollbackId("rb-ffffffffffff".into()));
        let guards = [guard(false)];
        let facts = Facts {
            policy: "p",
            mode: Mode::Direct,
            on_violation: OnViolation::Propose,
            guards: &guards,
            freeze: Some(&f),
            pause_denies: false,
            unreadable: None,
            human_request: false,
            emergency: false,
            open_proposal: None,
            dry_run: false,
            id: &id,
        };
        let mut notes = Vec::new();
        assert_eq!(decide(&facts, &mut notes, &mut Vec::new()), Verdict::Deliver(Delivery::Proposal));
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("guard failed") && notes[0].contains("cooldown"), "{notes:?}");
    }

    #[test]
    fn freezes_that_cannot_be_read_fail_closed_for_automatic_writes_only() {
        let id = RollbackId("rb-ffffffffffff".into());
        let facts = |denies: bool, human: bool, emergency: bool| Facts {
            policy: "p",
            mode: Mode::Direct,
            on_violation: OnViolation::Deny,
            guards: &[],
            freeze: None,
            pause_denies: denies,
            unreadable: Some("refs/rollbackd/state/freezes:freezes.json: invalid type"),
            human_request: human,
            emergency,
            open_proposal: None,
            dry_run: false,
            id: &id,
        };
        let mut notes = Vec::new();
        assert_eq!(
            decide(&facts(false, false, false), &mut notes, &mut Vec::new()),
            Verdict::Deliver(Delivery::Proposal)
        );
        assert!(notes.iter().any(|n| n.contains("cannot be read")), "said why: {notes:?}");
        assert!(matches!(
            decide(&facts(true, false, false), &mut notes, &mut Vec::new()),
            Verdict::Settled(Outcome::Denied { .. })
        ));
        assert_eq!(
            decide(&facts(true, true, false), &mut notes, &mut Vec::new()),
            Verdict::Deliver(Delivery::Direct),
            "a person"
        );
        assert_eq!(
            decide(&facts(true, false, true), &mut notes, &mut Vec::new()),
            Verdict::Deliver(Delivery::Direct),
            "break glass"
        );
    }

    #[test]
    fn the_pause_covers_every_target_and_denies_or_proposes_as_configured() {
        let pause = Freeze { scope: "all".into(), pause: true, ..freeze() };
        assert!(pause.covers("cart", "staging", "2026-11-21T12:00:00Z".parse().unwrap()));
        let id = RollbackId("rb-ffffffffffff".into());
        let facts = |denies: bool, human: bool| Facts {
            policy: "p",
            mode: Mode::Direct,
            on_violation: OnViolation::Deny,
            guards: &[],
            freeze: Some(&pause),
            pause_denies: denies,
            unreadable: None,
            human_request: human,
            emergency: false,
            open_proposal: None,
            dry_run: false,
            id: &id,
        };
        let mut notes = Vec::new();
        assert_eq!(decide(&facts(false, false), &mut notes, &mut Vec::new()), Verdict::Deliver(Delivery::Proposal));
        assert!(matches!(
            decide(&facts(true, false), &mut notes, &mut Vec::new()),
            Verdict::Settled(Outcome::Denied { .. })
        ));
        assert_eq!(
            decide(&facts(true, true), &mut notes, &mut Vec::new()),
            Verdict::Deliver(Delivery::Direct),
            "a person still can"
        );
    }
}
