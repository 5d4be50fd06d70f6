//! `codeowners` in `chatops.allow`, `chatops.approve` and `review.reviewers`: the owners the
//! config repo's CODEOWNERS names for every file a rollback changes. The file is read from the
//! watched branch's head, never from the rollback or proposal being decided: a CODEOWNERS
//! change inside a proposal grants nothing until a person merged it onto the branch.

use crate::domain::codeowners::{self, Codeowners, Owner};
use crate::domain::principal::{Principal, Rule, first_admitting};

use std::sync::Arc;

use super::{Engine, EngineError};

/// The CODEOWNERS file on `repo`'s watched branch head: the first of GitHub's locations that
/// exists. `Ok(None)`: there is none.
pub(crate) fn read_codeowners(repo: &crate::git::ConfigRepo) -> Result<Option<Codeowners>, EngineError> {
    for path in codeowners::LOCATIONS {
        if let Some(bytes) = repo.file_at_head(path, codeowners::MAX_BYTES)? {
            return Codeowners::parse(path, &bytes).map(Some).map_err(EngineError::Config);
        }
    }
    Ok(None)
}

/// What deciding a person against a list of rules came to.
pub(super) enum Admission {
    /// A rule admits them.
    Admitted,
    /// Refused, with the reason for them.
    Refused(String),
}

/// CODEOWNERS' teams and how the forge is asked who is in them.
pub(super) struct Owners {
    /// The teams CODEOWNERS names, as of a head of the watched branch.
    teams: Option<(crate::domain::plan::Sha, Arc<[String]>)>,
    /// Asks the forge whom those teams hold, off the writer (the edge and the CLI ask it).
    lookup: crate::forge::teams::TeamLookup,
}

impl Owners {
    pub(super) fn new(forge: Arc<dyn crate::forge::Forge>) -> Self {
        Owners { teams: None, lookup: crate::forge::teams::TeamLookup::new(forge) }
    }
}

impl super::Ctx {
    /// The CODEOWNERS file in force: the first of GitHub's locations on the watched branch's
    /// head. `Ok(None)`: there is none.
    pub(super) fn codeowners(&self) -> Result<Option<Codeowners>, EngineError> {
        read_codeowners(&self.repo)
    }

    /// Whether `p` is admitted by `rules` (named `list` in what they are told) to act on a
    /// rollback that changes `files`: a plain rule first, then `codeowners` when the list has
    /// it, which needs them to own every file.
    pub(super) fn admit(
        &self,
        rules: &[Rule],
        list: &str,
        p: &Principal,
        files: impl FnOnce() -> Result<Vec<String>, EngineError>,
    ) -> Result<Admission, EngineError> {
        if let Some(rule) = first_admitting(rules, p) {
            tracing::debug!(principal = %p, %rule, list, "admitted");
            return Ok(Admission::Admitted);
        }
        if !rules.iter().any(Rule::is_codeowners) {
            return Ok(Admission::Refused(format!("not in {list}")));
        }
        let Some(owners) = self.codeowners()? else {
            return Ok(Admission::Refused(format!(
                "not in {list}, and {list} names codeowners but the config repo has no CODEOWNERS file on {}",
                self.repo.branch()
            )));
        };
        let files = files()?;
        let ids = codeowners::identities(p, &self.config.directory);
        Ok(match codeowners::not_owned(&owners, &files, &ids) {
            None => {
                tracing::info!(principal = %p, list, codeowners = owners.path, "admitted as a code owner of every file");
                Admission::Admitted
            }
            Some(why) if p.team_notes.is_empty() => {
                Admission::Refused(format!("not in {list} and not a code owner of every file: {why}"))
            }
            // A team the forge did not confirm counts for nothing: said, so they know whether
            // to ask an org owner to grant Members read or to accept an invitation.
            Some(why) => Admission::Refused(format!(
                "not in {list} and not a code owner of every file: {why}; {}",
                p.team_notes.join("; ")
            )),
        })
    }

    /// `review.reviewers` and `review.teams` with `codeowners` replaced by the owners of
    /// `files`: the users and the teams (`org/team`), each once.
    pub(super) fn reviewers_for(
        &self,
        reviewers: &[String],
        teams: &[String],
        files: &[String],
    ) -> (Vec<String>, Vec<String>) {
        let mut users: Vec<String> = reviewers.iter().filter(|r| r.as_str() != "codeowners").cloned().collect();
        let mut teams = teams.to_vec();
        if reviewers.iter().any(|r| r == "codeowners")
            && let Ok(Some(owners)) = self.codeowners()
        {
            for f in files {
                for o in owners.owners_of(f) {
                    match o {
                        Owner::User(u) if !users.iter().any(|x| x.eq_ignore_ascii_case(u)) => users.push(u.clone()),
                        Owner::Team(t) if !teams.iter().any(|x| x.eq_ignore_ascii_case(t)) => teams.push(t.clone()),
                        _ => {}
                    }
                }
            }
        }
        (users, teams)
    }
}

/// The teams (`org/team`) CODEOWNERS on the watched branch names, when a policy in force
/// admits people by `codeowners` (`chatops.allow`, `approve`, `emergency`): the only teams
/// the edge asks the forge about, never one a request names. Empty otherwise. Read again
/// only when the branch's head moved.
pub(super) fn codeowner_teams(ctx: &super::Ctx, state: &mut Owners) -> Arc<[String]> {
    let judges = ctx.policies.policies.iter().any(|p| {
        let c = &p.chatops;
        c.allow.iter().chain(&c.approve).chain(&c.emergency).any(Rule::is_codeowners)
    });
    let Some(head) = judges.then(|| ctx.repo.head().ok()).flatten() else { return Arc::from([]) };
    if let Some((at, teams)) = &state.teams
        && *at == head
    {
        return teams.clone();
    }
    let teams: Arc<[String]> = match ctx.codeowners() {
        Ok(Some(owners)) => {
            let mut teams: Vec<String> = owners
                .rules
                .iter()
                .flat_map(|r| &r.owners)
                .filter_map(|o| match o {
                    Owner::Team(t) => Some(t.clone()),
                    _ => None,
                })
                .collect();
            teams.sort();
            teams.dedup();
            teams.into()
        }
        Ok(None) => Arc::from([]),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read CODEOWNERS; no team membership is asked of the forge");
            Arc::from([])
        }
    };
    state.teams = Some((head, teams.clone()));
    teams
}

/// How the forge is asked about team membership (off the writer: the edge and the CLI ask).
pub(super) fn team_lookup(state: &Owners) -> crate::forge::teams::TeamLookup {
    state.lookup.clone()
}

/// `p` with the teams the forge confirms they are in, among those CODEOWNERS names on the
/// watched branch, waiting at most `budget` for GitHub. For the CLI, a process of its own
/// that may wait on GitHub; the service's writer never calls this (its edge asks before
/// queueing).
pub(super) fn with_forge_teams(
    ctx: &mut super::Ctx,
    state: &mut Owners,
    p: Principal,
    budget: std::time::Duration,
) -> Principal {
    if !state.lookup.asks() {
        return p;
    }
    // CODEOWNERS as the branch has it now; unreadable, no team is asked (fail closed).
    if let Ok(_lock) = ctx.begin()
        && let Err(e) = ctx.fetch_if_stale()
    {
        tracing::warn!(error = %e, "cannot fetch the config repo to read CODEOWNERS");
    }
    let teams = codeowner_teams(ctx, state);
    let logins: Vec<String> = ctx
        .config
        .directory
        .github_logins(&p)
        .into_iter()
        .filter(|l| crate::domain::principal::is_github_login(l))
        .collect();
    let found = state.lookup.ask(&logins, &teams, budget);
    p.with_forge_teams(&found)
}

impl Engine {
    /// The teams CODEOWNERS names, for the edge to ask the forge about (see `owners::codeowner_teams`).
    pub(crate) fn codeowner_teams(&mut self) -> Arc<[String]> {
        codeowner_teams(&self.ctx, &mut self.owners)
    }

    /// How the forge is asked about team membership, off the writer.
    pub(crate) fn team_lookup(&self) -> crate::forge::teams::TeamLookup {
        team_lookup(&self.owners)
    }

    /// `p` with the CODEOWNERS teams the forge says they are in (see `owners::with_forge_teams`).
    pub fn with_forge_teams(&mut self, p: Principal, budget: std::time::Duration) -> Principal {
        with_forge_teams(&mut self.ctx, &mut self.owners, p, budget)
    }
}
