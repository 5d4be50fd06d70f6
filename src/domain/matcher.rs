//! Alertmanager label matchers: `name="value"`, `name!="value"`, `name=~"regex"`, `name!~"regex"`.
//!
//! ```
//! use std::collections::BTreeMap;
//! use rollbackd::parsers::Matcher;
//!
//! let m: Matcher = r#"severity=~"critical|page""#.parse().unwrap();
//! let labels = BTreeMap::from([("severity".to_string(), "page".to_string())]);
//! assert!(m.matches(&labels));
//! // Anchored, as in Alertmanager: "pag" is not "page".
//! assert!(!r#"severity=~"pag""#.parse::<Matcher>().unwrap().matches(&labels));
//! // A missing label reads as the empty string.
//! assert!(r#"team="""#.parse::<Matcher>().unwrap().matches(&labels));
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

impl MatchOp {
    fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

/// One matcher, with Alertmanager's semantics: a missing label reads as the empty string, and
/// regular expressions are anchored at both ends.
#[derive(Clone, Debug)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    regex: Option<Regex>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad matcher `{input}`: {reason}")]
pub struct MatcherError {
    pub input: String,
    pub reason: String,
}

impl Matcher {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let actual = labels.get(&self.name).map(String::as_str).unwrap_or("");
        match self.op {
            MatchOp::Equal => actual == self.value,
            MatchOp::NotEqual => actual != self.value,
            MatchOp::Regex => self.regex.as_ref().is_some_and(|r| r.is_match(actual)),
            MatchOp::NotRegex => !self.regex.as_ref().is_some_and(|r| r.is_match(actual)),
        }
    }
}

impl FromStr for Matcher {
    type Err = MatcherError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let fail = |reason: &str| MatcherError { input: input.to_string(), reason: reason.to_string() };
        let s = input.trim();
        let name_len = s
            .char_indices()
            .find(|&(i, c)| !(c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
            .map_or(s.len(), |(i, _)| i);
        if name_len == 0 {
            return Err(fail("expected a label name first, like service=\"checkout\""));
        }
        let (name, rest) = s.split_at(name_len);
        let rest = rest.trim_start();
        let (op, rest) = [MatchOp::Regex, MatchOp::NotRegex, MatchOp::NotEqual, MatchOp::Equal]
            .into_iter()
            .find_map(|op| rest.strip_prefix(op.as_str()).map(|r| (op, r)))
            .ok_or_else(|| fail("expected one of = != =~ !~ after the label name"))?;
        let value = parse_value(rest.trim()).map_err(|r| fail(&r))?;
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(Regex::new(&format!("^(?:{value})$")).map_err(|e| {
                fail(&format!("invalid regular expression: {}", crate::support::text::regex_error(&e)))
            })?),
            _ => None,
        };
        Ok(Matcher { name: name.to_string(), op, value, regex })
    }
}

/// A quoted value with Go-style escapes (`\"`, `\\`, `\n`), or a bare word.
fn parse_value(s: &str) -> Result<String, String> {
    let Some(body) = s.strip_prefix('"') else {
        if s.contains(['"', ',', '{', '}']) || s.chars().any(char::is_whitespace) {
            return Err("an unquoted value may not contain quotes, commas, braces or spaces".into());
        }
        return Ok(s.to_string());
    };
    let mut out = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                return if chars.as_str().trim().is_empty() {
                    Ok(out)
                } else {
                    Err(format!("unexpected text after the closing quote: `{}`", chars.as_str()))
                };
            }
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(c @ ('"' | '\\')) => out.push(c),
                Some(c) => {
                    out.push('\\');
                    out.push(c);
                }
                None => break,
            },
            c => out.push(c),
        }
    }
    Err("the value's closing quote is missing".into())
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Escapes exactly what `parse_value` unescapes, so Display and FromStr round-trip.
        let mut quoted = String::with_capacity(self.value.len() + 2);
        for c in self.value.chars() {
            match c {
                '"' => quoted.push_str("\\\""),
                '\\' => quoted.push_str("\\\\"),
                '\n' => quoted.push_str("\\n"),
                '\t' => quoted.push_str("\\t"),
                c => quoted.push(c),
            }
        }
        write!(f, "{}{}\"{quoted}\"", self.name, self.op.as_str())
    }
}

crate::support::schema::string_schema!(
    Matcher,
    "Matcher",
    "A label matcher as Alertmanager writes one: `name=\"value\"`, `!=`, `=~` or `!~` (a regular expression matching the whole value).",
    pattern = "^\\s*[A-Za-z_][A-Za-z0-9_]*\\s*(=|!=|=~|!~)\\s*\".*\"\\s*$"
);

impl<'de> Deserialize<'de> for Matcher {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Matcher {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn table() {
        let l = labels(&[("service", "checkout"), ("env", "prod"), ("severity", "page")]);
        let cases = [
            (r#"service="checkout""#, true),
            (r#"service = "checkout""#, true),
            (r#"service="cart""#, false),
            (r#"service!="cart""#, true),
            (r#"severity=~"critical|page""#, true),
            (r#"severity=~"pag""#, false), // anchored
            (r#"severity!~"critical|page""#, false),
            (r#"team="""#, true), // missing label reads as empty
            (r#"team!="""#, false),
            ("env=prod", true),
            (r#"service="check\"out""#, false),
        ];
        for (text, want) in cases {
            let m: Matcher = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(m.matches(&l), want, "{text}");
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        for (text, needle) in [
            ("", "label name"),
            (r#"="x""#, "label name"),
            (r#"service~"x""#, "one of"),
            (r#"service="x"#, "closing quote"),
            (r#"service=~"(""#, "regular expression"),
            (r#"service="x" y"#, "after the closing quote"),
            ("service=a b", "unquoted"),
        ] {
            let err = text.parse::<Matcher>().unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn display_round_trips() {
        let m: Matcher = r#"severity=~"critical|page""#.parse().unwrap();
        assert_eq!(m.to_string().parse::<Matcher>().unwrap().to_string(), m.to_string());
    }
}
