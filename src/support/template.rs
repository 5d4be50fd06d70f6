//! minijinja, configured once: policy target expressions and the message templates.

use std::path::{Path, PathBuf};

use minijinja::{Environment, UndefinedBehavior, Value};

/// The templates rollbackd renders, and the file each is read from inside `templates/`.
pub(crate) const COMMIT_TEMPLATE: &str = "commit.txt.j2";
pub(crate) const TAG_TEMPLATE: &str = "tag.txt.j2";
pub(crate) const PR_TITLE_TEMPLATE: &str = "pr_title.j2";
pub(crate) const PR_BODY_TEMPLATE: &str = "pr_body.md.j2";
pub(crate) const TEMPLATE_FILES: &[&str] = &[COMMIT_TEMPLATE, TAG_TEMPLATE, PR_TITLE_TEMPLATE, PR_BODY_TEMPLATE];
/// Notifications. Optional in `templates/`: without the file the built-in text is used, so a
/// templates directory made before notifications existed keeps working.
pub(crate) const NOTIFY_TEMPLATE: &str = "notify.txt.j2";
pub(crate) const NOTIFY_DEFAULT: &str = include_str!("../../templates/notify.txt.j2");

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("{file}: cannot read template: {cause}")]
    Read { file: PathBuf, cause: std::io::Error },
    #[error("{}:{line}:{column}: {message}", file.display())]
    Syntax { file: PathBuf, line: usize, column: usize, message: String },
    /// A template that compiled but could not be rendered, at the expression that failed.
    #[error("{name}:{line}:{column}: {message}")]
    RenderAt { name: String, line: usize, column: usize, message: String },
    #[error("{0}")]
    Render(String),
}

/// An environment where an undefined value is an error when printed, so a typo in
/// `{{ labels.servce }}` fails loudly instead of producing an empty path.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder().keep_trailing_newline(true).build() {
        env.set_syntax(syntax);
    }
    env
}

/// A template value from anything serializable.
pub fn value<T: serde::Serialize>(v: T) -> Value {
    Value::from(minijinja::value::Serde(v))
}

/// Where in `source` the error is (1-based line and column) and the text of the expression
/// there; an undefined value is named.
fn locate(source: &str, err: &minijinja::Error) -> (usize, usize, String) {
    let line = err.line().unwrap_or(1);
    let Some(range) = err.range() else { return (line, 1, describe(err)) };
    let Some(before) = source.get(..range.start) else { return (line, 1, describe(err)) };
    let line = before.matches('\n').count() + 1;
    let column = before[before.rfind('\n').map_or(0, |i| i + 1)..].chars().count() + 1;
    let what = source.get(range).unwrap_or_default().trim();
    let message = match err.kind() {
        minijinja::ErrorKind::UndefinedError if !what.is_empty() => format!("undefined value `{what}`"),
        _ if !what.is_empty() => format!("{} in `{what}`", describe(err)),
        _ => describe(err),
    };
    (line, column, message)
}

fn describe(err: &minijinja::Error) -> String {
    // Our own refusals (a value that is not an identifier) say everything in their detail.
    if err.kind() == minijinja::ErrorKind::InvalidOperation
        && let Some(detail) = err.detail()
    {
        return detail.to_string();
    }
    let mut msg = err.kind().to_string();
    if let Some(detail) = err.detail() {
        msg.push_str(": ");
        msg.push_str(detail);
    }
    msg
}

/// Checks that `source` compiles as a template; the error names what is wrong.
pub(crate) fn check_expression(source: &str) -> Result<(), String> {
    environment().template_from_str(source).map(|_| ()).map_err(|e| describe(&e))
}

/// What every value an expression prints must pass: the domain's identifier rules
/// (`domain::ident::InputRules`), handed in so this module knows nothing of them.
pub trait ValueCheck: Clone + Send + Sync + 'static {
    fn check(&self, what: &str, value: &str) -> Result<(), String>;
}

/// Renders a one-line policy expression such as `apps/{{ labels.service }}/**`. Every value
/// the expression prints comes from input, so each must be an identifier (`rules`): the policy
/// author's literal text is the only place a glob, a `/` or a revision suffix can come from.
pub fn render_expression(source: &str, ctx: &Value, rules: &impl ValueCheck) -> Result<String, String> {
    let mut env = environment();
    let rules = rules.clone();
    env.set_formatter(move |out, state, value| {
        if value.is_undefined() {
            return Err(minijinja::Error::from(minijinja::ErrorKind::UndefinedError));
        }
        let text = value.to_string();
        rules
            .check("a value printed by the expression", &text)
            .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e))?;
        minijinja::escape_formatter(out, state, value)
    });
    env.render_str(source, ctx).map(|s| s.trim().to_string()).map_err(|e| describe(&e))
}

/// The message templates, loaded and compiled once.
#[derive(Clone)]
pub(crate) struct Templates {
    env: Environment<'static>,
}

impl Templates {
    pub(crate) fn load(dir: &Path) -> Result<Self, TemplateError> {
        let mut env = environment();
        for name in TEMPLATE_FILES {
            let file = dir.join(name);
            let source =
                std::fs::read_to_string(&file).map_err(|cause| TemplateError::Read { file: file.clone(), cause })?;
            add(&mut env, name, source, &file)?;
        }
        let file = dir.join(NOTIFY_TEMPLATE);
        let source = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => NOTIFY_DEFAULT.to_string(),
            Err(cause) => return Err(TemplateError::Read { file, cause }),
        };
        add(&mut env, NOTIFY_TEMPLATE, source, &file)?;
        Ok(Templates { env })
    }

    pub(crate) fn render(&self, name: &str, ctx: &Value) -> Result<String, TemplateError> {
        let tmpl = self.env.get_template(name).map_err(|e| TemplateError::Render(describe(&e)))?;
        tmpl.render(ctx).map_err(|e| {
            let (line, column, message) = locate(tmpl.source(), &e);
            TemplateError::RenderAt { name: name.to_string(), line, column, message }
        })
    }
}

fn add(env: &mut Environment<'static>, name: &str, source: String, file: &Path) -> Result<(), TemplateError> {
    let located = |e: minijinja::Error| {
        let (line, column, message) = locate(&source, &e);
        TemplateError::Syntax { file: file.to_path_buf(), line, column, message }
    };
    let checked = env.template_from_str(&source).map(|_| ()).map_err(located);
    checked?;
    env.add_template_owned(name.to_string(), source).map_err(|e| TemplateError::Syntax {
        file: file.to_path_buf(),
        line: e.line().unwrap_or(1),
        column: 1,
        message: describe(&e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_render_and_typos_fail() {
        let ctx = value(serde_json::json!({"labels": {"service": "checkout"}}));
        let rules = crate::domain::ident::InputRules::default();
        assert_eq!(render_expression("apps/{{ labels.service }}/**", &ctx, &rules).unwrap(), "apps/checkout/**");
        assert!(render_expression("{{ labels.servce }}", &ctx, &rules).is_err());
        assert!(check_expression("{{ labels.service ").is_err());
    }

    #[test]
    fn printed_values_must_be_identifiers() {
        let rules = crate::domain::ident::InputRules::default();
        for bad in ["*", "a/b", "..", "x\nRollback-Id: rb-1", "{a,b}"] {
            let ctx = value(serde_json::json!({"labels": {"service": bad}}));
            let err = render_expression("apps/{{ labels.service }}/prod/**", &ctx, &rules).unwrap_err();
            assert!(err.contains("not an identifier"), "{bad}: {err}");
        }
    }
}
