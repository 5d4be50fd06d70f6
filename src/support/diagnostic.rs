//! `file:line:col: severity: message`, the one format every validation problem is reported in.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based; 0 when the problem is about the whole file.
    pub line: u64,
    pub column: u64,
    pub severity: Severity,
    pub message: String,
}

impl Diagnostic {
    pub fn error(file: &Path, line: u64, column: u64, message: String) -> Self {
        Diagnostic { file: file.to_path_buf(), line, column, severity: Severity::Error, message }
    }

    pub fn warning(file: &Path, line: u64, column: u64, message: String) -> Self {
        Diagnostic { file: file.to_path_buf(), line, column, severity: Severity::Warning, message }
    }

    /// A YAML or schema error from serde-saphyr, with its position when it has one.
    pub fn from_yaml(file: &Path, err: &serde_saphyr::Error) -> Self {
        let (line, column) = err.location().map_or((0, 0), |l| (l.line(), l.column()));
        let opts = serde_saphyr::render_options! { snippets: serde_saphyr::SnippetMode::Off };
        let rendered = err.render_with_options(opts);
        Diagnostic::error(file, line, column, strip_location_suffix(&rendered).to_string())
    }
}

/// serde-saphyr appends " at line N column M" to plain messages; we print the position up front.
fn strip_location_suffix(msg: &str) -> &str {
    let msg = msg.trim();
    match msg.rfind(" at line ") {
        Some(i) if msg[i + 9..].split_whitespace().nth(1) == Some("column") => &msg[..i],
        _ => msg,
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if self.line == 0 {
            write!(f, "{}: {sev}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}:{}:{}: {sev}: {}", self.file.display(), self.line, self.column, self.message)
        }
    }
}
