//! `codeowners` in `chatops.allow`, `chatops.approve` and `review.reviewers`: the owners the
//! config repo's CODEOWNERS names for every file a rollback changes. The file is read from the
//! watched branch's head, never from the rollback or proposal being decided: a CODEOWNERS
//! change inside a proposal grants nothing until a person merged it onto the branch.

use crate::domain::codeowners::{self, Codeowners, Owner};
use crate::domain::principal::{Principal, Rule, first_admitting};

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

impl Engine {
    /// The CODEOWNERS file in force: the first of GitHub's locations on the watched branch's
    /// head. `Ok(None)`: there is none.
    pub(crate) fn codeowners(&self) -> Result<Option<Codeowners>, EngineError> {
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
            Some(why) => Admission::Refused(format!("not in {list} and not a code owner of every file: {why}")),
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
