//! Which of the teams CODEOWNERS names a person is in, asked of GitHub on threads of its own
//! (`GET /orgs/{org}/teams/{team_slug}/memberships/{username}`): GitHub is a remote rollbackd
//! does not own, and the writer never waits on one. The edge (and the CLI) asks before a
//! person's command is queued and waits at most a budget it chooses; the writer only reads the
//! teams the principal arrives with.
//!
//! Bounded: at most [`MAX_QUESTIONS`] (team, login) questions per request, at most
//! [`MAX_IN_FLIGHT`] out at once, each answer kept for five minutes. Fail closed: a question
//! GitHub refused, failed or did not answer in time makes nobody a member, and the person is
//! told why; the failure is logged once per team and kind, never with a token.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::github::TeamMembership;
use super::{Forge, ForgeError};
use crate::domain::principal::ForgeTeams;
use crate::support::asker::Asker;

/// What GitHub said is believed this long (a person removed from a team stops counting after
/// at most this).
const FRESH_FOR: Duration = Duration::from_secs(300);
/// A failure is asked again sooner; until then it is "not known to be a member".
const FAILED_FRESH_FOR: Duration = Duration::from_secs(30);
/// Questions out at once; a GitHub that hangs them all costs at most this many threads.
const MAX_IN_FLIGHT: usize = 8;
/// (team, login) questions asked for one request at most; teams past it are not asked.
pub(crate) const MAX_QUESTIONS: usize = 16;
type Question = (String, String);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Answer {
    Known(TeamMembership),
    /// GitHub did not say, and why (for the person refused).
    Unknown(String),
}

/// Asks the forge about team membership off the asker's thread; see the module doc.
#[derive(Clone, Debug)]
pub(crate) struct TeamLookup {
    /// The forge is GitHub (the local forge has no teams to ask about).
    github: bool,
    asker: Asker<Question, Answer>,
}

impl TeamLookup {
    pub(crate) fn new(forge: Arc<dyn Forge>) -> Self {
        // The failures logged already (team and kind): each once.
        let logged = Mutex::new(HashSet::new());
        let github = forge.hosts_pull_requests();
        let asked = forge;
        let asker = Asker::new("team-lookup", MAX_IN_FLIGHT, freshness, move |(team, login): &Question| {
            match asked.team_membership(team, login) {
                Ok(m) => Answer::Known(m),
                Err(e) => {
                    let why = why(&e);
                    log_once(&logged, team, &e, &why);
                    Answer::Unknown(why)
                }
            }
        });
        TeamLookup { github, asker }
    }

    /// Whether there is a forge to ask (the local forge has no teams).
    pub(crate) fn asks(&self) -> bool {
        self.github
    }

    /// Which of `teams` (`org/team`, from CODEOWNERS on the watched branch) any of `logins` is
    /// an active member of, waiting at most `budget` for GitHub; a note for each team that did
    /// not count for a reason other than "not a member".
    pub(crate) fn ask(&self, logins: &[String], teams: &[String], budget: Duration) -> ForgeTeams {
        if !self.asks() || logins.is_empty() || teams.is_empty() {
            return ForgeTeams::default();
        }
        let all: Vec<Question> = teams
            .iter()
            .flat_map(|t| logins.iter().map(move |l| (t.to_ascii_lowercase(), l.to_ascii_lowercase())))
            .collect();
        let asked = &all[..all.len().min(MAX_QUESTIONS)];
        let kept = self.asker.ask_all(asked, budget);
        let fresh = |q: &Question| kept.get(q).filter(|k| k.fresh).map(|k| &k.value);
        let mut out = ForgeTeams::default();
        // Why GitHub did not say, and of which teams: one note per reason.
        let mut unknown: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for q in asked {
            let (team, login) = q;
            match fresh(q) {
                Some(Answer::Known(TeamMembership::Active)) => {
                    if !out.member_of.contains(team) {
                        out.member_of.push(team.clone());
                    }
                }
                Some(Answer::Known(TeamMembership::Pending)) => out.notes.push(format!(
                    "{login}'s membership of @{team} is pending (an invitation not accepted yet) and does not count"
                )),
                Some(Answer::Known(TeamMembership::NotMember)) => {}
                Some(Answer::Unknown(why)) => {
                    unknown.entry(why.clone()).or_default().push(format!("{login} in @{team}"))
                }
                None => unknown
                    .entry(format!("GitHub did not answer within {}s", budget.as_secs_f32()))
                    .or_default()
                    .push(format!("{login} in @{team}")),
            }
        }
        for (why, which) in unknown {
            out.notes.push(format!("team membership not known, so not counted ({}): {why}", which.join(", ")));
        }
        if all.len() > asked.len() {
            let mut rest: Vec<&str> = all[asked.len()..].iter().map(|(t, _)| t.as_str()).collect();
            rest.dedup();
            out.notes.push(format!(
                "CODEOWNERS names more teams than rollbackd asks GitHub about for one request ({MAX_QUESTIONS} \
                 questions); not asked, so not counted: @{}",
                rest.join(" @")
            ));
        }
        out
    }
}

/// A failure, logged the first time it happens for its team and kind.
fn log_once(logged: &Mutex<HashSet<String>>, team: &str, e: &ForgeError, why: &str) {
    let kind = match e {
        ForgeError::Api { status, .. } => status.to_string(),
        ForgeError::Unreachable(_) => "unreachable".into(),
        ForgeError::RateLimited { .. } => "rate-limited".into(),
        ForgeError::MergeRefused(_) | ForgeError::Config(_) => "config".into(),
    };
    let first = {
        let mut logged = logged.lock().unwrap_or_else(|e| e.into_inner());
        logged.len() < 1_000 && logged.insert(format!("{team} {kind}"))
    };
    if first {
        tracing::warn!(team, error = %e, "cannot learn team membership from GitHub; its members count only through directory.github_teams: {why}");
    }
}

fn freshness(a: &Answer) -> Duration {
    match a {
        Answer::Known(_) => FRESH_FOR,
        Answer::Unknown(_) => FAILED_FRESH_FOR,
    }
}

/// Why GitHub did not say, for the person refused: what to change.
fn why(e: &ForgeError) -> String {
    match e {
        ForgeError::Api { status: 403, message, .. } => format!(
            "GitHub refused to say ({message}): the GitHub App needs the Members permission (Organization, \
             Read-only), a token the read:org scope"
        ),
        ForgeError::Api { status: 401, .. } => "GitHub refused rollbackd's credentials".into(),
        ForgeError::RateLimited { retry_after, .. } => {
            format!("GitHub's rate limit (for {}s)", retry_after.as_secs())
        }
        ForgeError::Api { status, .. } => format!("GitHub answered {status}"),
        ForgeError::Unreachable(_) => "GitHub could not be reached".into(),
        ForgeError::MergeRefused(m) | ForgeError::Config(m) => m.clone(),
    }
}
