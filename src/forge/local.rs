//! The local forge: a proposal is a branch of the origin, and approving merges it there. It has
//! no conversation, no checks, no teams and no webhooks: what only a forge could answer is
//! refused with the setting that would make it answerable.

use super::{CiChecks, Forge, ForgeError, HookDelivery, Pr, ProposalRequest, TeamMembership};
use crate::domain::change_plan::ChangePlan;
use crate::domain::policy::MergeMethod;
use crate::support::secret::SecretString;

#[derive(Debug, Default)]
pub(crate) struct LocalForge;

fn needs_github(what: &str) -> ForgeError {
    ForgeError::Config(format!("{what} need forge.kind: github"))
}

impl Forge for LocalForge {
    fn hosts_pull_requests(&self) -> bool {
        false
    }

    fn git_token(&self) -> Result<Option<SecretString>, ForgeError> {
        Ok(None)
    }

    fn propose(&self, _: &ProposalRequest<'_>) -> Result<Option<Pr>, ForgeError> {
        Ok(None)
    }

    fn announce(&self, _: &str, _: &str) -> Result<bool, ForgeError> {
        Ok(false)
    }

    fn comment(&self, _: u64, _: &str) -> Result<(), ForgeError> {
        Err(needs_github("comments on pull requests"))
    }

    fn react(&self, _: u64, _: &str) -> Result<(), ForgeError> {
        Err(needs_github("reactions to comments"))
    }

    fn rollback_proposal(&self, _: u64) -> Result<Option<crate::domain::rollback::RollbackRef>, ForgeError> {
        Ok(None)
    }

    fn merge(&self, _: &Pr, _: MergeMethod, _: &str, _: &str) -> Result<String, ForgeError> {
        Err(needs_github("merges through pull requests"))
    }

    fn close(&self, _: &str, _: &str) -> Result<(), ForgeError> {
        Ok(())
    }

    fn open_issue(&self, _: &str, _: &str, _: &[String]) -> Result<Option<String>, ForgeError> {
        Ok(None)
    }

    fn report_policies(&self, _: &str, _: &[String], _: usize) -> Result<(), ForgeError> {
        Ok(())
    }

    fn report_gate(&self, _: u64, _: &str, _: &[String], _: &[ChangePlan]) -> Result<(), ForgeError> {
        Ok(())
    }

    fn report_gate_refused(&self, _: u64, _: &str, _: &str) -> Result<(), ForgeError> {
        Ok(())
    }

    fn checks_pending(&self, _: &str, _: &[String]) -> Result<Vec<String>, ForgeError> {
        Err(needs_github("required_checks"))
    }

    fn ci_of(&self, _: &str) -> Result<CiChecks, ForgeError> {
        Err(needs_github("CI verdicts"))
    }

    fn team_membership(&self, _: &str, _: &str) -> Result<TeamMembership, ForgeError> {
        Err(needs_github("team memberships"))
    }

    fn sees_deliveries(&self) -> bool {
        false
    }

    fn deliveries(&self, _: jiff::Timestamp) -> Option<Result<Vec<HookDelivery>, ForgeError>> {
        None
    }

    fn redeliver(&self, _: u64) -> Result<(), ForgeError> {
        Err(needs_github("redeliveries"))
    }
}
