//! Guards: the checks between "a policy matched" and "we write". Each reads the plan, the audit
//! trail and the clock, and says why it passed or failed.

use jiff::Timestamp;
use serde::Serialize;

use crate::domain::audit::AuditRecord;
use crate::domain::plan::Plan;
use crate::domain::policy::{Guards, RateLimit};
use crate::domain::rollback::Delivery;
use crate::support::duration::Duration;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GuardCheck {
    pub guard: &'static str,
    pub passed: bool,
    pub detail: String,
}

fn ago(now: Timestamp, then: Timestamp) -> String {
    let secs = now.duration_since(then).as_secs().max(0);
    Duration::from_secs(secs).to_string()
}

/// The guard no request overrides: not an emergency, not `on_violation: propose` pushing.
pub(crate) const POINT_OF_NO_RETURN: &str = "point_of_no_return";

/// `records`: the audit trail, newest first. `irreversible`: the policy says what marks a
/// change as irreversible (else every change counts for the point of no return).
pub(crate) fn evaluate(
    guards: &Guards,
    irreversible: bool,
    plan: &Plan,
    records: &[AuditRecord],
    now: Timestamp,
) -> Vec<GuardCheck> {
    let applied = Applied { records, service: &plan.target.service, env: &plan.target.env };
    // Declaring what is irreversible without a duration means: irreversible at once.
    let no_return = guards.point_of_no_return.or(irreversible.then_some(Duration::ZERO));
    [
        guards.cooldown.map(|cooldown| cooldown_check(&applied, cooldown, now)),
        guards.max_rollbacks.map(|limit| max_rollbacks(&applied, limit, now)),
        guards.max_change_age.and_then(|max_age| max_change_age(plan, max_age, now)),
        guards.max_known_good_age.and_then(|max_age| max_known_good_age(plan, max_age, now)),
        no_return.map(|limit| point_of_no_return(plan, irreversible, limit, now)),
        guards.require_immutable_artifacts.then(|| immutable_artifacts(plan)),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The audit trail as the guards on one service/env read it.
struct Applied<'a> {
    records: &'a [AuditRecord],
    service: &'a str,
    env: &'a str,
}

impl Applied<'_> {
    /// Rollbacks rollbackd pushed to the branch for this service/env (a tag of ours names them:
    /// trailers in anyone's commit do not count); proposals do not count.
    fn rollbacks(&self) -> impl Iterator<Item = &AuditRecord> {
        self.records.iter().filter(|r| {
            r.delivery == Delivery::Direct && r.tag.is_some() && r.service == self.service && r.env == self.env
        })
    }
}

fn cooldown_check(applied: &Applied<'_>, cooldown: Duration, now: Timestamp) -> GuardCheck {
    let (service, env) = (applied.service, applied.env);
    match applied.rollbacks().next() {
        Some(r) if now.duration_since(r.at) < cooldown.as_signed() => GuardCheck {
            guard: "cooldown",
            passed: false,
            detail: format!("{service}/{env} was rolled back {} ago by {} (cooldown {cooldown})", ago(now, r.at), r.id),
        },
        Some(r) => GuardCheck {
            guard: "cooldown",
            passed: true,
            detail: format!("last rollback of {service}/{env} was {} ago (cooldown {cooldown})", ago(now, r.at)),
        },
        None => GuardCheck {
            guard: "cooldown",
            passed: true,
            detail: format!("no earlier rollback of {service}/{env} in the audit window"),
        },
    }
}

fn max_rollbacks(applied: &Applied<'_>, limit: RateLimit, now: Timestamp) -> GuardCheck {
    // Rollbacks, not commits: a phased rollback's phases are one.
    let n = applied
        .rollbacks()
        .filter(|r| now.duration_since(r.at) < limit.per.as_signed())
        .map(|r| &r.id)
        .collect::<std::collections::HashSet<_>>()
        .len();
    let passed = n < limit.count as usize;
    let (service, env) = (applied.service, applied.env);
    GuardCheck {
        guard: "max_rollbacks",
        passed,
        detail: format!("{n} rollbacks of {service}/{env} in the last {} (limit {})", limit.per, limit.count),
    }
}

/// Nothing to check when the plan undoes no commit.
fn max_change_age(plan: &Plan, max_age: Duration, now: Timestamp) -> Option<GuardCheck> {
    let oldest = plan.oldest_bad_change()?;
    let age = now.duration_since(oldest.time);
    let passed = age <= max_age.as_signed();
    Some(GuardCheck {
        guard: "max_change_age",
        passed,
        detail: format!(
            "oldest change to undo, {} \"{}\", is {} old (limit {max_age})",
            oldest.sha.short(),
            oldest.summary,
            ago(now, oldest.time)
        ),
    })
}

/// Nothing to check when the known-good's time is not known.
fn max_known_good_age(plan: &Plan, max_age: Duration, now: Timestamp) -> Option<GuardCheck> {
    let at = plan.known_good_at?;
    let passed = now.duration_since(at) <= max_age.as_signed();
    Some(GuardCheck {
        guard: "max_known_good_age",
        passed,
        detail: format!(
            "known-good {} reached the branch {} ago (limit {max_age})",
            plan.known_good.sha.short(),
            ago(now, at)
        ),
    })
}

fn point_of_no_return(plan: &Plan, irreversible: bool, limit: Duration, now: Timestamp) -> GuardCheck {
    let crossed: Vec<String> = plan
        .bad_commits
        .iter()
        .filter(|c| (!irreversible || !c.irreversible.is_empty()) && now.duration_since(c.time) >= limit.as_signed())
        .map(|c| {
            let what =
                if c.irreversible.is_empty() { String::new() } else { format!(" and {}", c.irreversible.join(", ")) };
            format!("{} \"{}\" reached the branch {} ago{what}", c.sha.short(), c.summary, ago(now, c.time))
        })
        .collect();
    let detail = match (crossed.is_empty(), irreversible) {
        (true, true) => format!("no irreversible change has been on the branch for {limit}"),
        (true, false) => format!("every change reached the branch less than {limit} ago"),
        (false, _) => format!(
            "past the point of no return ({limit}): {}; git can put the files back, not undo what they did",
            crossed.join("; ")
        ),
    };
    GuardCheck { guard: POINT_OF_NO_RETURN, passed: crossed.is_empty(), detail }
}

fn immutable_artifacts(plan: &Plan) -> GuardCheck {
    // An empty state pins nothing: "every artifact is pinned" must not hold vacuously for
    // a rollback that deletes the service.
    let passed = plan.mutable_artifacts.is_empty() && !plan.leaves_no_files;
    let detail = if plan.leaves_no_files {
        "the target state has no files: no artifact in it is pinned".to_string()
    } else if passed {
        "every artifact in the target state is pinned by digest or version".to_string()
    } else {
        format!("the target state references mutable artifacts: {}", plan.mutable_artifacts.join("; "))
    };
    GuardCheck { guard: "require_immutable_artifacts", passed, detail }
}
