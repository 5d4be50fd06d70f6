//! CODEOWNERS, as GitHub reads it: who owns each file of the config repo, so a policy can say
//! `codeowners` where it lists who may request or approve a rollback. Pure: the engine hands in
//! the file's bytes (read from the watched branch, never from a proposal) and the files a
//! rollback changes.
//!
//! GitHub's flavour of gitignore patterns: a leading `/` anchors at the root, and so does a `/`
//! inside the pattern; a trailing `/` matches only what is inside a directory; `*` and `?` never
//! cross a `/`; `**` spans directories (leading `**/`, inner `/**/`, trailing `/**`); a pattern
//! that names a directory owns everything below it, except that a last segment that is a lone
//! `*` (`docs/*`) owns only the files directly in it. Not in GitHub's flavour, so refused here
//! too: `!` negation, and `\#` to start a pattern with `#`. `[` and `]` are plain characters.
//! The last matching line wins; a line with a pattern and no owners leaves its files unowned.
//!
//! Anyone with push access writes this file: it is bounded (size, lines, pattern and owner
//! lengths) and a bad line is skipped with the reason, as GitHub skips it; nothing here panics.

use std::fmt;

/// Where GitHub looks for the file, in its order: the first that exists is the one.
pub(crate) const LOCATIONS: [&str; 3] = [".github/CODEOWNERS", "CODEOWNERS", "docs/CODEOWNERS"];

/// GitHub ignores a CODEOWNERS file of 3 MB or more; so does rollbackd.
pub(crate) const MAX_BYTES: usize = 3 * 1024 * 1024;
const MAX_RULES: usize = 20_000;
const MAX_PATTERN_BYTES: usize = 1024;
const MAX_SEGMENTS: usize = 64;
const MAX_OWNERS: usize = 64;
const MAX_OWNER_BYTES: usize = 256;

/// One owner named in the file.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    /// `@login`
    User(String),
    /// `@org/team-slug`
    Team(String),
    /// `someone@example.com`: GitHub maps it to an account; rollbackd cannot, and never
    /// counts it as anyone.
    Email(String),
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::User(u) => write!(f, "@{u}"),
            Owner::Team(t) => write!(f, "@{t}"),
            Owner::Email(e) => f.write_str(e),
        }
    }
}

impl Owner {
    fn parse(token: &str) -> Result<Owner, String> {
        if token.len() > MAX_OWNER_BYTES {
            return Err(format!("an owner of more than {MAX_OWNER_BYTES} bytes"));
        }
        let login_char = |c: char| c.is_ascii_alphanumeric() || c == '-';
        let slug_char = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
        if let Some(name) = token.strip_prefix('@') {
            return match name.split_once('/') {
                Some((org, team))
                    if !org.is_empty()
                        && !team.is_empty()
                        && org.chars().all(login_char)
                        && team.chars().all(slug_char) =>
                {
                    Ok(Owner::Team(format!("{}/{}", org.to_ascii_lowercase(), team.to_ascii_lowercase())))
                }
                None if !name.is_empty() && name.len() <= 39 && name.chars().all(login_char) => {
                    Ok(Owner::User(name.to_ascii_lowercase()))
                }
                _ => Err(format!("`{}` is not a GitHub user or team", crate::support::text::quoted(token))),
            };
        }
        match token.split_once('@') {
            Some((local, domain))
                if !local.is_empty()
                    && domain.contains('.')
                    && !domain.contains('@')
                    && !token.contains(char::is_control) =>
            {
                Ok(Owner::Email(token.to_ascii_lowercase()))
            }
            _ => Err(format!("`{}` is not @user, @org/team or an email address", crate::support::text::quoted(token))),
        }
    }
}

/// A line GitHub would skip, and why: what `check` tells the policy's author.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub line: usize,
    pub reason: String,
}

/// One segment of a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    /// `**`: any number of directories (at least one when it ends a pattern).
    Any,
    /// A glob of one path component: `*` and `?` (escaped with `\`), the rest literal.
    Glob(Vec<Token>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Star,
    One,
    Char(char),
}

/// One pattern, compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    segments: Vec<Segment>,
    /// A trailing `/`: only what is inside a matching directory.
    dir_only: bool,
    /// Ends in a lone `*` (`docs/*`): owns the files directly under, not deeper.
    shallow: bool,
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, String> {
        if text.len() > MAX_PATTERN_BYTES {
            return Err(format!("a pattern of more than {MAX_PATTERN_BYTES} bytes"));
        }
        if text.starts_with('!') {
            return Err("`!` (negation) is not supported in CODEOWNERS".into());
        }
        if text.starts_with("\\#") {
            return Err("`\\#` cannot start a pattern in CODEOWNERS".into());
        }
        let mut rest = text;
        let mut anchored = false;
        if let Some(r) = rest.strip_prefix('/') {
            rest = r;
            anchored = true;
        }
        let mut dir_only = false;
        if let Some(r) = rest.strip_suffix('/') {
            rest = r;
            dir_only = true;
        }
        if rest.is_empty() {
            return Err(if dir_only && anchored {
                "`/` alone names nothing".into()
            } else {
                "an empty pattern".into()
            });
        }
        if rest.contains('/') {
            anchored = true;
        }
        let mut segments = Vec::new();
        if !anchored {
            segments.push(Segment::Any);
        }
        for part in rest.split('/') {
            if part.is_empty() {
                return Err("`//` in a pattern".into());
            }
            let seg = if part == "**" { Segment::Any } else { Segment::Glob(glob(part)?) };
            // `**/**` is one `**`.
            if !(seg == Segment::Any && segments.last() == Some(&Segment::Any)) {
                segments.push(seg);
            }
        }
        if segments.len() > MAX_SEGMENTS {
            return Err(format!("a pattern of more than {MAX_SEGMENTS} segments"));
        }
        let shallow = !dir_only && matches!(segments.last(), Some(Segment::Glob(t)) if t == &[Token::Star]) && anchored;
        Ok(Pattern { text: text.to_string(), segments, dir_only, shallow })
    }

    /// Whether this pattern owns the file at `path` (relative to the root, `/`-separated).
    pub fn matches(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        if parts.is_empty() || parts.len() > 4 * MAX_SEGMENTS.max(64) {
            return false;
        }
        // The file itself, or (unless shallow) a directory it is in.
        (1..=parts.len()).any(|k| {
            let whole = k == parts.len();
            if whole && self.dir_only {
                return false;
            }
            if !whole && self.shallow {
                return false;
            }
            self.matches_exactly(&parts[..k])
        })
    }

    /// The segments against exactly these path components: a table over (segment, component),
    /// so `**` costs no backtracking whatever the pattern.
    fn matches_exactly(&self, parts: &[&str]) -> bool {
        let (n, m) = (self.segments.len(), parts.len());
        // ok[i][j]: segments[i..] match parts[j..].
        let mut ok = vec![vec![false; m + 1]; n + 1];
        ok[n][m] = true;
        for i in (0..n).rev() {
            for j in (0..=m).rev() {
                ok[i][j] = match &self.segments[i] {
                    // A trailing `**` of a file pattern (`foo/**`) needs something inside.
                    Segment::Any if i + 1 == n && !self.dir_only => j < m,
                    Segment::Any => ok[i + 1][j] || (j < m && ok[i][j + 1]),
                    Segment::Glob(tokens) => j < m && ok[i + 1][j + 1] && glob_matches(tokens, parts[j]),
                };
            }
        }
        ok[0][0]
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn glob(part: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = part.chars();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            '\\' => Token::Char(chars.next().ok_or("a pattern ends in `\\`")?),
            '*' => {
                // `***` is `*` within a segment.
                if tokens.last() == Some(&Token::Star) {
                    continue;
                }
                Token::Star
            }
            '?' => Token::One,
            c if c.is_control() => return Err("a control character in a pattern".into()),
            c => Token::Char(c),
        });
    }
    Ok(tokens)
}

/// Wildcard match of one component, linear in practice: the classic backtrack to the last `*`.
fn glob_matches(tokens: &[Token], name: &str) -> bool {
    let name: Vec<char> = name.chars().collect();
    let (mut t, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match tokens.get(t) {
            Some(Token::Star) => {
                star = Some((t, n));
                t += 1;
            }
            Some(Token::One) => {
                t += 1;
                n += 1;
            }
            Some(Token::Char(c)) if *c == name[n] => {
                t += 1;
                n += 1;
            }
            _ => match star {
                Some((st, sn)) => {
                    t = st + 1;
                    n = sn + 1;
                    star = Some((st, sn + 1));
                }
                None => return false,
            },
        }
    }
    tokens[t.min(tokens.len())..].iter().all(|x| *x == Token::Star)
}

/// One line: a pattern and its owners (none: the files are unowned).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub line: usize,
    pub pattern: Pattern,
    pub owners: Vec<Owner>,
}

/// A parsed CODEOWNERS file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Codeowners {
    /// Where it was found (one of [`LOCATIONS`]).
    pub path: String,
    pub rules: Vec<Rule>,
    /// Lines GitHub would skip, and why.
    pub skipped: Vec<Skipped>,
}

impl Codeowners {
    /// Reads the file's bytes. Refused whole only when it is past GitHub's own bound; a bad
    /// line is skipped, as GitHub skips it.
    pub fn parse(path: &str, bytes: &[u8]) -> Result<Codeowners, String> {
        if bytes.len() >= MAX_BYTES {
            return Err(format!("{path} is {} bytes; GitHub (and rollbackd) ignore it from 3 MB", bytes.len()));
        }
        let text = String::from_utf8_lossy(bytes);
        let mut out = Codeowners { path: path.to_string(), ..Codeowners::default() };
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if out.rules.len() >= MAX_RULES {
                out.skipped
                    .push(Skipped { line, reason: format!("more than {MAX_RULES} rules; the rest is not read") });
                break;
            }
            match rule(trimmed) {
                Ok((pattern, owners)) => out.rules.push(Rule { line, pattern, owners }),
                Err(reason) => out.skipped.push(Skipped { line, reason }),
            }
        }
        Ok(out)
    }

    /// The rule that decides who owns `path`: the last one that matches.
    pub fn rule_for(&self, path: &str) -> Option<&Rule> {
        self.rules.iter().rev().find(|r| r.pattern.matches(path))
    }

    /// Who owns `path`: empty when no rule matches or the last match names nobody.
    pub fn owners_of(&self, path: &str) -> &[Owner] {
        self.rule_for(path).map_or(&[], |r| r.owners.as_slice())
    }
}

/// A pattern then owners, split on unescaped whitespace; a token starting with `#` ends the line.
fn rule(line: &str) -> Result<(Pattern, Vec<Owner>), String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                current.push('\\');
                if let Some(n) = chars.next() {
                    current.push(n);
                }
            }
            c if c.is_whitespace() => {
                if !current.is_empty() {
                    tokens.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    let mut tokens = tokens.into_iter();
    let pattern = Pattern::parse(&tokens.next().ok_or("an empty line")?)?;
    let mut owners = Vec::new();
    for t in tokens {
        if t.starts_with('#') {
            break;
        }
        if owners.len() >= MAX_OWNERS {
            return Err(format!("more than {MAX_OWNERS} owners on one line"));
        }
        owners.push(Owner::parse(&t)?);
    }
    Ok((pattern, owners))
}

/// Who a person is, as CODEOWNERS names people: their GitHub logins and teams, gathered from
/// every account `directory.people` links to theirs (so a Slack user is the GitHub user they
/// are listed with) and from `directory.github_teams`, plus the groups already known of them.
pub(crate) fn identities(
    p: &crate::domain::principal::Principal,
    dir: &crate::domain::principal::Directory,
) -> Vec<String> {
    let mut ids: Vec<String> = vec![p.id.clone()];
    ids.extend(p.groups.iter().cloned());
    let person = dir.person(&p.id);
    if let Some(name) = person.strip_prefix("person:")
        && let Some(accounts) = dir.people.get(name)
    {
        for a in accounts.iter().filter(|a| crate::domain::principal::key_id(a).is_none()) {
            let linked = crate::domain::principal::Principal::new(a.clone()).with_groups(dir);
            ids.push(linked.id);
            ids.extend(linked.groups);
        }
    }
    // A CLI principal made from a key holds its accounts as groups: their teams count too.
    let more: Vec<String> = ids
        .iter()
        .filter(|i| i.starts_with("github:"))
        .flat_map(|i| crate::domain::principal::Principal::new(i.clone()).with_groups(dir).groups)
        .collect();
    ids.extend(more);
    ids.iter_mut().for_each(|i| {
        if i.starts_with("github:") || i.starts_with("github-team:") {
            *i = i.to_ascii_lowercase();
        }
    });
    ids.sort();
    ids.dedup();
    ids
}

/// Whether `owner` is one of `ids` (from [`identities`]).
pub(crate) fn is_owner(owner: &Owner, ids: &[String]) -> bool {
    let wanted = match owner {
        Owner::User(u) => format!("github:{u}"),
        Owner::Team(t) => format!("github-team:{t}"),
        Owner::Email(_) => return false,
    };
    ids.contains(&wanted)
}

/// Why `ids` do not own every one of `files` under `owners`: the first file they do not own,
/// said for the person refused. `None`: they own them all.
pub(crate) fn not_owned(owners: &Codeowners, files: &[String], ids: &[String]) -> Option<String> {
    if files.is_empty() {
        return Some("the rollback changes no file, so nobody owns it".into());
    }
    for f in files {
        let named = owners.owners_of(f);
        if named.is_empty() {
            return Some(format!("{f} has no owner in {}", owners.path));
        }
        if !named.iter().any(|o| is_owner(o, ids)) {
            let list: Vec<String> = named.iter().map(ToString::to_string).collect();
            return Some(format!("{f} is owned by {} ({}), not by them", list.join(" "), owners.path));
        }
    }
    None
}

#[cfg(test)]
#[path = "codeowners_tests.rs"]
mod tests;
