//! Policies kept in a directory (`policies.dir`): the files read here, parsed by the domain
//! ([`PolicySet::parse`]), which reads no files itself.

use std::path::{Path, PathBuf};

use crate::domain::policy::PolicySet;
use crate::support::diagnostic::Diagnostic;

/// Loads every `*.yaml` / `*.yml` in `dir`. Errors (and warnings) come back as diagnostics
/// with file, line and column; any error means no policy set.
pub(crate) fn load(dir: &Path) -> Result<(PolicySet, Vec<Diagnostic>), Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect(),
        Err(e) => {
            return Err(vec![Diagnostic::error(dir, 0, 0, format!("cannot read policy directory: {e}"))]);
        }
    };
    files.sort();
    let mut texts = Vec::new();
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(t) => texts.push((file, t)),
            Err(e) => diags.push(Diagnostic::error(&file, 0, 0, format!("cannot read: {e}"))),
        }
    }
    PolicySet::parse(dir, texts, diags)
}
