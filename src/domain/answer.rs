//! What a person's action (approve, freeze, continue, release...) came to, as a value: the
//! text the person reads, and whether a rule said no and why. Exit codes, chat visibility and
//! HTTP statuses are read from the kind, once, never from the text.

use std::fmt;

/// Why an action was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The person may not do this (not in the policy's `chatops` rules).
    NotAllowed,
    /// What was named does not exist or is not in a state that takes this (no such rollback,
    /// halted already, its policy gone).
    NotFound,
    /// A value out of bounds (a freeze longer than a year, an id that is not one).
    BadInput,
    /// A phased rollback cannot go on from where it is.
    CannotGoOn,
}

/// The answer to a person's action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    text: String,
    refused: Option<Refusal>,
    /// Where the reason starts in `text` (after `refused: `).
    why_at: usize,
}

impl Answer {
    /// The action was done (or had nothing to do): `text` says what.
    pub fn done(text: impl Into<String>) -> Self {
        Answer { text: text.into(), refused: None, why_at: 0 }
    }

    /// A rule said no: `why` is shown after `refused: `.
    pub fn refused(kind: Refusal, why: impl fmt::Display) -> Self {
        let text = format!("refused: {why}");
        Answer { text, refused: Some(kind), why_at: "refused: ".len() }
    }

    /// Why it was refused, if it was.
    pub fn refusal(&self) -> Option<Refusal> {
        self.refused
    }

    pub fn is_refused(&self) -> bool {
        self.refused.is_some()
    }

    /// The text without the `refused: ` a person reads in front of a refusal.
    pub fn why(&self) -> &str {
        &self.text[self.why_at..]
    }

    pub fn into_why(mut self) -> String {
        self.text.split_off(self.why_at)
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The CLI's exit code: 2 when a rule said no.
    pub fn exit_code(&self) -> u8 {
        if self.is_refused() { 2 } else { 0 }
    }

    /// Whether the channel sees it: what was done is news for everyone, a refusal is for the
    /// asker alone.
    pub fn is_public(&self) -> bool {
        !self.is_refused()
    }
}

impl std::ops::Deref for Answer {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq<&str> for Answer {
    fn eq(&self, other: &&str) -> bool {
        self.text == *other
    }
}

impl PartialEq<str> for Answer {
    fn eq(&self, other: &str) -> bool {
        self.text == other
    }
}

impl From<Answer> for String {
    fn from(a: Answer) -> String {
        a.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_reads_refused_and_exits_2_for_the_asker_alone() {
        let a = Answer::refused(Refusal::NotAllowed, "slack:U1 may not freeze");
        assert_eq!(a, "refused: slack:U1 may not freeze");
        assert_eq!(a.why(), "slack:U1 may not freeze");
        assert_eq!((a.exit_code(), a.is_public()), (2, false));
        let done = Answer::done("refused-looking text is not a refusal");
        assert_eq!((done.exit_code(), done.is_public()), (0, true));
    }
}
