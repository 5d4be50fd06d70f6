//! Free text from input (reasons, alert summaries and annotations, commit summaries, labels) as
//! quoted data in what rollbackd writes: one line, printable, bounded, and, in Markdown, inert.
//! No value can start a trailer, a `---` line, a heading, a link, a mention or a command.

/// Longest free-text value written anywhere, in characters.
const MAX_CHARS: usize = 300;

/// One line of printable text: white space and control characters fold to single spaces, and
/// a long value is cut with `…`.
pub(crate) fn quoted(s: &str) -> String {
    let line = s.split(|c: char| c.is_whitespace() || c.is_control()).filter(|w| !w.is_empty()).collect::<Vec<_>>();
    let line = line.join(" ");
    if line.chars().count() <= MAX_CHARS {
        return line;
    }
    let mut cut: String = line.chars().take(MAX_CHARS).collect();
    cut.push('…');
    cut
}

/// Characters that start Markdown syntax anywhere in a line (emphasis, code, links, HTML,
/// entities, tables, strikethrough) or at its start (headings, lists, quotes, rules).
const MARKDOWN: &[char] =
    &['\\', '`', '*', '_', '{', '}', '[', ']', '(', ')', '<', '>', '#', '+', '-', '!', '|', '~', '&', '='];

/// [`quoted`], then inert in Markdown: syntax characters are backslash-escaped (CommonMark
/// allows it for all ASCII punctuation), URLs are broken so nothing autolinks, and `@` cannot
/// mention anyone.
pub(crate) fn markdown(s: &str) -> String {
    let mut out = String::new();
    for c in quoted(s).chars() {
        match c {
            '@' => out.push_str("@\u{2060}"),
            c if MARKDOWN.contains(&c) => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    // GitHub links bare `https://...` and `www.` even when escaped.
    out.replace("://", ":\u{200b}//").replace("www.", "www\u{200b}.")
}

/// A reply of ours for a GitHub comment: our own Markdown (code spans for ids) stays, but
/// nothing in it can mention anyone, link anywhere or inject HTML.
pub(crate) fn github_reply(s: &str) -> String {
    s.replace('@', "@\u{2060}").replace('<', "&lt;").replace("](", "]\\(").replace("://", ":\u{200b}//")
}

/// A message for Slack: `&`, `<` and `>` are its control characters (`<!channel>`, links).
pub(crate) fn slack(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A regex error on one line: what is wrong (`unclosed group`), without the regex crate's
/// multi-line drawing of the pattern and its own `error:` prefix, which a diagnostic line (and a
/// YAML error, which escapes the newlines) cannot carry.
pub(crate) fn regex_error(e: &regex::Error) -> String {
    match e {
        regex::Error::Syntax(text) => {
            let what = text.lines().rev().find_map(|l| l.trim().strip_prefix("error: ")).map(str::trim);
            quoted(what.unwrap_or(text))
        }
        regex::Error::CompiledTooBig(limit) => format!("the compiled expression is larger than {limit} bytes"),
        other => quoted(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_is_one_bounded_line() {
        assert_eq!(quoted("a\nRollback-Id: rb-1\r\n---\t x\u{0}y"), "a Rollback-Id: rb-1 --- x y");
        assert_eq!(quoted(&"x".repeat(400)).chars().count(), MAX_CHARS + 1);
    }

    #[test]
    fn markdown_is_inert() {
        let m = markdown("[click](https://evil.example) **b** <img> @alice /rollback approve `x` www.x.y");
        for bad in ["[click]", "](", "**", "<img>", "@alice", "https://", "`x`", "www."] {
            assert!(!m.contains(bad), "{bad} in {m}");
        }
        assert!(m.starts_with("\\[click\\]"), "{m}");
    }

    #[test]
    fn replies_cannot_mention_or_link() {
        let r = github_reply("merged `rb-1` by @alice: [x](https://evil) <img>");
        assert!(r.contains("`rb-1`") && !r.contains("@alice") && !r.contains("](") && !r.contains("<img>"), "{r}");
        assert_eq!(slack("<!channel> a & b"), "&lt;!channel&gt; a &amp; b");
    }
}
