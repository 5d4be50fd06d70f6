//! The plan on a deploy pull request: for each service/env a change touches, what rollbackd
//! would do if that change went bad after merge (as Atlantis shows a plan before apply). Built
//! by the engine from the planner's answer at the change's head; rendered here once for the
//! terminal (`rollbackd plan`) and once for GitHub (the `rollbackd/gate` check run's summary).

use serde::Serialize;

use crate::domain::plan::{KnownGoodSource, Plan, Strategy};
use crate::domain::policy::{Guards, Mode, OnViolation};

/// GitHub refuses a check run whose summary is longer than this (characters).
pub(crate) const GITHUB_SUMMARY_MAX: usize = 65_535;
/// Files listed per target; beyond, counted.
const FILES_SHOWN: usize = 20;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChangePlan {
    pub service: String,
    pub env: String,
    pub policy: String,
    pub mode: Mode,
    /// The files of the target the change touches.
    pub touched: Vec<String>,
    /// The commit it would go back to (null when it could not be planned).
    pub known_good: Option<String>,
    pub known_good_tag: Option<String>,
    pub strategy: Option<Strategy>,
    /// The files the rollback would restore (`path (+ins -del)`).
    pub restores: Vec<String>,
    /// The guards that would apply, as the policy sets them.
    pub guards: Vec<String>,
    /// The clock an irreversible change starts: after it, no automatic rollback.
    pub point_of_no_return: Option<String>,
    /// Why no rollback could be planned, when none could.
    pub unplanned: Option<String>,
}

impl ChangePlan {
    pub fn new(service: &str, env: &str, policy: &str, mode: Mode, touched: Vec<String>, guards: &Guards) -> Self {
        ChangePlan {
            service: service.into(),
            env: env.into(),
            policy: policy.into(),
            mode,
            touched,
            known_good: None,
            known_good_tag: None,
            strategy: None,
            restores: Vec::new(),
            guards: describe_guards(guards),
            point_of_no_return: None,
            unplanned: None,
        }
    }

    /// What the planner said it would do.
    pub fn planned(&mut self, plan: &Plan, guards: &Guards, irreversible: bool) {
        self.known_good = Some(plan.known_good.sha.0.clone());
        self.known_good_tag = match &plan.known_good.source {
            KnownGoodSource::Tag { name } => Some(name.clone()),
            _ => None,
        };
        self.strategy = Some(plan.strategy);
        self.restores =
            plan.diffstat.iter().map(|f| format!("{} (+{} -{})", f.path, f.insertions, f.deletions)).collect();
        let marks: Vec<String> = plan
            .bad_commits
            .iter()
            .flat_map(|c| c.irreversible.iter().map(move |m| format!("{} {m}", c.sha.short())))
            .collect();
        // Declaring what is irreversible without a duration means: irreversible at once.
        let limit = guards.point_of_no_return.or(irreversible.then_some(crate::support::duration::Duration::ZERO));
        self.point_of_no_return = match (limit, irreversible, marks.is_empty()) {
            (Some(limit), true, false) => Some(format!(
                "irreversible ({}): once merged, rollbackd rolls this back by itself for {limit}; after that only \
                 a person can (git can put the files back, not undo what they did)",
                marks.join("; ")
            )),
            (Some(limit), false, _) => Some(format!(
                "every change: once merged, rollbackd rolls this back by itself for {limit}; after that only a \
                 person can"
            )),
            _ => None,
        };
    }

    fn files(&self) -> String {
        let mut shown: Vec<&str> = self.restores.iter().take(FILES_SHOWN).map(String::as_str).collect();
        let more;
        if self.restores.len() > FILES_SHOWN {
            more = format!("{} more", self.restores.len() - FILES_SHOWN);
            shown.push(&more);
        }
        shown.join(", ")
    }

    /// For the terminal: a paragraph per target.
    pub fn text(&self) -> String {
        let mut out = format!("{}/{} (policy {}, {}):\n", self.service, self.env, self.policy, self.mode);
        match (&self.known_good, &self.unplanned) {
            (_, Some(why)) => out.push_str(&format!("  no rollback could be planned: {why}\n")),
            (Some(sha), None) => {
                let tag = self.known_good_tag.as_ref().map_or_else(String::new, |t| format!(" ({t})"));
                let strategy = self.strategy.map_or_else(String::new, |s| format!(" by {s}"));
                out.push_str(&format!("  back to {}{tag}{strategy}\n", &sha[..sha.len().min(10)]));
                out.push_str(&format!("  restores: {}\n", self.files()));
            }
            (None, None) => {}
        }
        let guards = if self.guards.is_empty() { "none".to_string() } else { self.guards.join("; ") };
        out.push_str(&format!("  guards: {guards}\n"));
        if let Some(p) = &self.point_of_no_return {
            out.push_str(&format!("  point of no return: {p}\n"));
        }
        out
    }

    /// Every target, for the terminal.
    pub fn text_all(plans: &[ChangePlan]) -> String {
        if plans.is_empty() {
            return "this change touches no path a rolling-back policy covers\n".into();
        }
        plans.iter().map(ChangePlan::text).collect::<Vec<_>>().join("\n")
    }

    /// For a check run's summary (Markdown; every value from the repository escaped), never
    /// longer than `max` characters: targets that do not fit are counted.
    pub fn markdown_all(plans: &[ChangePlan], max: usize) -> String {
        let esc = crate::support::text::markdown;
        let mut out = String::from("### If this change goes bad after merge\n\n");
        if plans.is_empty() {
            out.push_str("It touches no path a rolling-back policy covers: rollbackd would not roll it back.\n");
            return out;
        }
        for (i, p) in plans.iter().enumerate() {
            let mut s = format!("**{}/{}** (policy `{}`, {})\n", esc(&p.service), esc(&p.env), esc(&p.policy), p.mode);
            match (&p.known_good, &p.unplanned) {
                (_, Some(why)) => s.push_str(&format!("- no rollback could be planned: {}\n", esc(why))),
                (Some(sha), None) => {
                    let tag = p.known_good_tag.as_ref().map_or_else(String::new, |t| format!(" ({})", esc(t)));
                    let strategy = p.strategy.map_or_else(String::new, |s| format!(" by {s}"));
                    s.push_str(&format!("- back to `{}`{tag}{strategy}\n", &sha[..sha.len().min(10)]));
                    s.push_str(&format!("- restores: {}\n", esc(&p.files())));
                }
                (None, None) => {}
            }
            let guards = if p.guards.is_empty() { "none".to_string() } else { esc(&p.guards.join("; ")) };
            s.push_str(&format!("- guards: {guards}\n"));
            if let Some(pnr) = &p.point_of_no_return {
                s.push_str(&format!("- point of no return: {}\n", esc(pnr)));
            }
            s.push('\n');
            let tail = format!("…and {} more service/env not shown (summary limit)\n", plans.len() - i);
            if out.chars().count() + s.chars().count() + tail.chars().count() > max {
                out.push_str(&tail);
                return out;
            }
            out.push_str(&s);
        }
        out
    }
}

/// The guards a policy sets, said as they would apply.
pub(crate) fn describe_guards(g: &Guards) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(c) = g.cooldown {
        out.push(format!("cooldown {c}"));
    }
    if let Some(r) = g.max_rollbacks {
        out.push(format!("max_rollbacks {} per {}", r.count, r.per));
    }
    if let Some(a) = g.max_change_age {
        out.push(format!("max_change_age {a}"));
    }
    if let Some(a) = g.max_known_good_age {
        out.push(format!("max_known_good_age {a}"));
    }
    if let Some(p) = g.point_of_no_return {
        out.push(format!("point_of_no_return {p}"));
    }
    if g.require_immutable_artifacts {
        out.push("require_immutable_artifacts".into());
    }
    if !out.is_empty() {
        out.push(match g.on_violation {
            OnViolation::Deny => "on violation: deny".into(),
            OnViolation::Propose => "on violation: propose".into(),
        });
    }
    out.push("freezes and the pause in force at the time".into());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(service: &str) -> ChangePlan {
        let mut p = ChangePlan::new(
            service,
            "prod",
            "auto",
            Mode::Direct,
            vec!["apps/x/prod/a.yaml".into()],
            &Guards::default(),
        );
        p.known_good = Some("0123456789abcdef0123456789abcdef01234567".into());
        p.strategy = Some(Strategy::Revert);
        p.restores = vec!["apps/x/prod/a.yaml (+1 -1)".into()];
        p
    }

    #[test]
    fn the_summary_never_passes_githubs_limit_and_counts_what_it_leaves_out() {
        let plans: Vec<ChangePlan> = (0..5000).map(|i| plan(&format!("service-{i}"))).collect();
        let md = ChangePlan::markdown_all(&plans, GITHUB_SUMMARY_MAX);
        assert!(md.chars().count() <= GITHUB_SUMMARY_MAX, "{}", md.chars().count());
        assert!(md.contains("more service/env not shown"), "{}", &md[md.len() - 200..]);
        assert!(md.contains("**service\\-0/prod**"), "{}", &md[..300]);
    }

    #[test]
    fn values_from_the_repository_are_escaped_in_markdown() {
        let mut p = plan("x");
        p.restores = vec!["apps/<img src=x>/a.yaml (+1 -1)".into()];
        let md = ChangePlan::markdown_all(&[p], GITHUB_SUMMARY_MAX);
        assert!(md.contains("\\<img"), "{md}");
    }
}
