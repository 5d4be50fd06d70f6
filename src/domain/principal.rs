//! Who is asking: a person in Slack or on GitHub (or at the CLI), and the rules policies use to
//! say who may request, approve or break glass.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// An authenticated person. `id` is `slack:<user id>`, `github:<login>` or `cli:<name>`;
/// `groups` are `slack-group:<id>` / `github-team:<org>/<team>` memberships.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub id: String,
    pub groups: Vec<String>,
    /// What the forge could not confirm of their teams (a membership it would not say, one still
    /// pending), for a refusal to say why a team did not count.
    pub team_notes: Vec<String>,
}

/// What the forge said of a person's teams: those it confirmed they are an active member of
/// (`org/team`), and a note for each it did not (pending, refused to say, did not answer).
/// Nothing confirmed is a member: a lookup that failed admits nobody.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForgeTeams {
    pub member_of: Vec<String>,
    pub notes: Vec<String>,
}

impl Principal {
    pub fn new(id: impl Into<String>) -> Self {
        Principal { id: id.into(), groups: Vec::new(), team_notes: Vec::new() }
    }

    /// Adds the teams the forge confirmed as `github-team:<org>/<team>` groups, and keeps its
    /// notes on the others.
    pub fn with_forge_teams(mut self, teams: &ForgeTeams) -> Self {
        for t in &teams.member_of {
            let group = format!("github-team:{}", t.to_ascii_lowercase());
            if !self.groups.iter().any(|g| g.eq_ignore_ascii_case(&group)) {
                self.groups.push(group);
            }
        }
        self.team_notes.extend(teams.notes.iter().cloned());
        self
    }

    /// Fills in group memberships from the configured directory.
    pub fn with_groups(mut self, directory: &Directory) -> Self {
        let user = self.id.split_once(':').map(|(_, u)| u).unwrap_or("");
        for (group, members) in &directory.slack_groups {
            if self.id.starts_with("slack:") && members.iter().any(|m| m == user) {
                self.groups.push(format!("slack-group:{group}"));
            }
        }
        for (team, members) in &directory.github_teams {
            if self.id.starts_with("github:") && members.iter().any(|m| m.eq_ignore_ascii_case(user)) {
                self.groups.push(format!("github-team:{team}"));
            }
        }
        self
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

/// `slack:<user id>`, `slack-group:<group id>`, `github:<login>`, `github-team:<org>/<team>`,
/// or `codeowners`: whoever the config repo's CODEOWNERS names for every file the rollback
/// changes (decided by the engine, which has the files; never admitted here).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule(String);

/// The rule that defers to CODEOWNERS.
pub(crate) const CODEOWNERS: &str = "codeowners";

impl Rule {
    /// Whether this is `codeowners`.
    pub fn is_codeowners(&self) -> bool {
        self.0 == CODEOWNERS
    }

    pub fn admits(&self, p: &Principal) -> bool {
        let r = self.0.as_str();
        if r == CODEOWNERS {
            return false;
        }
        if r.starts_with("github:") {
            return p.id.eq_ignore_ascii_case(r) || p.groups.iter().any(|g| g.eq_ignore_ascii_case(r));
        }
        if r.starts_with("github-team:") {
            return p.groups.iter().any(|g| g.eq_ignore_ascii_case(r));
        }
        p.id == r || p.groups.iter().any(|g| g == r)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Rule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == CODEOWNERS {
            return Ok(Rule(s.to_string()));
        }
        let (kind, value) = s.split_once(':').ok_or_else(|| {
            format!(
                "`{s}`: expected slack:<user>, slack-group:<group>, github:<login>, github-team:<org>/<team> or codeowners"
            )
        })?;
        let ok = match kind {
            "slack" | "slack-group" | "github" => !value.is_empty() && !value.contains(char::is_whitespace),
            "github-team" => value.split_once('/').is_some_and(|(o, t)| !o.is_empty() && !t.is_empty()),
            _ => false,
        };
        if !ok {
            return Err(format!(
                "`{s}`: expected slack:<user>, slack-group:<group>, github:<login>, github-team:<org>/<team> or codeowners"
            ));
        }
        Ok(Rule(s.to_string()))
    }
}

crate::support::schema::string_schema!(
    Rule,
    "Rule",
    "Who: `slack:<user>`, `slack-group:<group>`, `github:<login>` or `github-team:<org>/<team>` (`*` for anyone where allowed).",
);

impl<'de> Deserialize<'de> for Rule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Group and team memberships rollbackd cannot ask a chat service about.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Directory {
    /// Slack user group id → member user ids.
    #[serde(default)]
    pub slack_groups: BTreeMap<String, Vec<String>>,
    /// `org/team` → member logins.
    #[serde(default)]
    pub github_teams: BTreeMap<String, Vec<String>>,
    /// A person → their accounts (`slack:U024BE7LH`, `github:alice`, `cli:alice`), so rules that
    /// need two different people (`two_person`, counting approvals) see one person behind
    /// several accounts; and their SSH public keys (`ssh-ed25519 AAAA... alice@laptop`), with
    /// which they sign what they do at the CLI.
    #[serde(default)]
    pub people: BTreeMap<String, Vec<String>>,
}

/// An SSH public key as compared: its type and base64 blob, without the comment.
pub(crate) fn key_id(key: &str) -> Option<String> {
    let mut parts = key.split_whitespace();
    let (kind, blob) = (parts.next()?, parts.next()?);
    kind.starts_with("ssh-").then(|| format!("{kind} {blob}"))
}

/// A principal id as compared: GitHub logins are case-insensitive.
fn normalized(id: &str) -> String {
    match id.split_once(':') {
        Some(("github", login)) => format!("github:{}", login.to_ascii_lowercase()),
        _ => id.to_string(),
    }
}

impl Directory {
    /// Who is behind `id`: the person it is listed under in `people`, or the account itself.
    pub fn person(&self, id: &str) -> String {
        let id = normalized(id);
        // A key-signed CLI principal is named after the person already.
        if let Some(name) = id.strip_prefix("cli:")
            && self.people.get(name).is_some_and(|accounts| accounts.iter().any(|a| key_id(a).is_some()))
        {
            return format!("person:{name}");
        }
        self.people
            .iter()
            .find(|(_, accounts)| accounts.iter().any(|a| normalized(a) == id))
            .map_or(id, |(person, _)| format!("person:{person}"))
    }

    /// Every SSH public key listed in `people`, as written.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.people.values().flatten().filter(|a| key_id(a).is_some())
    }

    /// Whether anyone in `people` has a key: then CLI writes must be signed.
    pub fn has_keys(&self) -> bool {
        self.keys().next().is_some()
    }

    /// The person whose key is `public` (`ssh-ed25519 AAAA...`), as the CLI principal
    /// `cli:<person>` holding every account of theirs and those accounts' groups, so a policy's
    /// `chatops` rules admit them at the CLI as in chat.
    pub fn person_with_key(&self, public: &str) -> Option<Principal> {
        let wanted = key_id(public)?;
        let (name, accounts) =
            self.people.iter().find(|(_, accounts)| accounts.iter().any(|a| key_id(a).as_ref() == Some(&wanted)))?;
        let mut groups = Vec::new();
        for a in accounts.iter().filter(|a| key_id(a).is_none()) {
            let p = Principal::new(a.clone()).with_groups(self);
            groups.push(p.id);
            groups.extend(p.groups);
        }
        Some(Principal { id: format!("cli:{name}"), groups, team_notes: Vec::new() })
    }

    /// The GitHub logins behind principal `p`: its own (`github:<login>`), and every
    /// `github:` account `people` lists with it (a Slack user, a key-signed CLI person). What
    /// the forge is asked about for their teams; lowercased, each once.
    pub fn github_logins(&self, p: &Principal) -> Vec<String> {
        let mut ids: Vec<String> = vec![p.id.clone()];
        // A key-signed CLI principal holds its accounts as groups.
        ids.extend(p.groups.iter().filter(|g| g.starts_with("github:")).cloned());
        if let Some(name) = self.person(&p.id).strip_prefix("person:")
            && let Some(accounts) = self.people.get(name)
        {
            ids.extend(accounts.iter().cloned());
        }
        let mut logins: Vec<String> = ids
            .iter()
            .filter_map(|i| i.strip_prefix("github:"))
            .map(str::to_ascii_lowercase)
            .filter(|l| !l.is_empty())
            .collect();
        logins.sort();
        logins.dedup();
        logins
    }

    /// Whether two principal ids are the same person.
    pub fn same_person(&self, a: &str, b: &str) -> bool {
        self.person(a) == self.person(b)
    }
}

/// GitHub logins: letters, digits and hyphens, at most 39 characters, not starting with a
/// hyphen; Enterprise Managed Users are `name_shortcode`, so one `_` before the enterprise's
/// short code (itself letters and digits) is allowed too.
pub(crate) fn is_github_login(login: &str) -> bool {
    let (name, shortcode) = match login.rsplit_once('_') {
        Some((name, code)) => (name, Some(code)),
        None => (login, None),
    };
    let plain =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') && !s.starts_with('-');
    login.len() <= 39
        && plain(name)
        && shortcode.is_none_or(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// The first rule that admits `p`, if any.
pub(crate) fn first_admitting<'a>(rules: &'a [Rule], p: &Principal) -> Option<&'a Rule> {
    rules.iter().find(|r| r.admits(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_person_behind_several_accounts() {
        let dir = Directory {
            people: [("alice".into(), vec!["slack:UALICE".into(), "github:alice".into()])].into(),
            ..Directory::default()
        };
        assert!(dir.same_person("github:ALICE", "github:alice"));
        assert!(dir.same_person("slack:UALICE", "github:Alice"));
        assert!(!dir.same_person("slack:UBOB", "github:alice"));
        assert!(!dir.same_person("slack:ualice", "slack:UALICE"), "Slack ids are exact");
    }

    #[test]
    fn a_key_names_its_person_with_every_account_and_group() {
        let dir = Directory {
            slack_groups: [("S1".into(), vec!["UALICE".into()])].into(),
            people: [(
                "alice".into(),
                vec!["slack:UALICE".into(), "github:Alice".into(), "ssh-ed25519 AAAAkey alice@laptop".into()],
            )]
            .into(),
            ..Directory::default()
        };
        assert!(dir.has_keys());
        let p = dir.person_with_key("ssh-ed25519 AAAAkey other-comment").unwrap();
        assert_eq!(p.id, "cli:alice");
        let rules: Vec<Rule> = ["slack-group:S1", "github:alice"].iter().map(|r| r.parse().unwrap()).collect();
        assert!(rules.iter().all(|r| r.admits(&p)), "{p:?}");
        assert!(dir.same_person("cli:alice", "slack:UALICE"));
        assert!(dir.person_with_key("ssh-ed25519 AAAAother").is_none());
    }

    #[test]
    fn the_github_logins_behind_a_person_and_the_teams_the_forge_confirmed() {
        let dir = Directory {
            people: [
                ("dave".into(), vec!["slack:UDAVE".into(), "github:Dave".into(), "github:dave-work".into()]),
                ("bob".into(), vec!["slack:UBOB".into()]),
            ]
            .into(),
            ..Directory::default()
        };
        assert_eq!(dir.github_logins(&Principal::new("slack:UDAVE")), ["dave", "dave-work"]);
        assert_eq!(dir.github_logins(&Principal::new("github:DAVE")), ["dave", "dave-work"]);
        assert_eq!(dir.github_logins(&Principal::new("github:carol")), ["carol"]);
        assert!(dir.github_logins(&Principal::new("slack:UBOB")).is_empty());

        let teams = ForgeTeams { member_of: vec!["acme/Checkout".into()], notes: vec!["pending".into()] };
        let p = Principal::new("slack:UDAVE").with_forge_teams(&teams).with_forge_teams(&teams);
        assert_eq!(p.groups, ["github-team:acme/checkout"], "each team once");
        let rule: Rule = "github-team:acme/checkout".parse().unwrap();
        assert!(rule.admits(&p));
        assert_eq!(p.team_notes.len(), 2);
    }

    #[test]
    fn rules_and_groups() {
        let dir = Directory {
            slack_groups: [("S1".into(), vec!["U2".into()])].into(),
            github_teams: [("acme/sre".into(), vec!["Alice".into()])].into(),
            ..Directory::default()
        };
        let rules: Vec<Rule> =
            ["slack:U1", "slack-group:S1", "github-team:acme/sre"].iter().map(|r| r.parse().unwrap()).collect();
        assert!(first_admitting(&rules, &Principal::new("slack:U1")).is_some());
        assert!(first_admitting(&rules, &Principal::new("slack:U2").with_groups(&dir)).is_some());
        assert!(first_admitting(&rules, &Principal::new("slack:U3").with_groups(&dir)).is_none());
        assert!(first_admitting(&rules, &Principal::new("github:alice").with_groups(&dir)).is_some());
        assert!(first_admitting(&rules, &Principal::new("github:bob").with_groups(&dir)).is_none());
        for bad in ["U1", "slack:", "team:x", "github-team:acme", "github:a b"] {
            assert!(bad.parse::<Rule>().is_err(), "{bad}");
        }
    }
}
