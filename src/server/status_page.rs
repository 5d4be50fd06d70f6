//! `GET /`: the status page, server-rendered from the writer's published [`StatusView`], with
//! no script, so it loads on a phone over a bad link during an incident. Every value is
//! HTML-escaped by the template engine: trigger names and reasons come from senders.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{AppState, error};
use crate::domain::status::StatusView;

const PAGE: &str = include_str!("../../templates/status.html.j2");
const CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// One view per config repo served; each names its repo when there are several.
fn render(views: &[StatusView]) -> Result<String, minijinja::Error> {
    let mut env = minijinja::Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    env.add_template("status.html", PAGE)?;
    env.get_template("status.html")?.render(minijinja::context! { views => crate::support::template::value(views) })
}

pub(super) async fn page(State(st): State<AppState>) -> Response {
    match render(&views(&st)) {
        Ok(html) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
                // No script, no outside resource, no form: the page's own style only.
                (header::CONTENT_SECURITY_POLICY, CSP),
            ],
            html,
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "the status page could not be rendered");
            error(StatusCode::INTERNAL_SERVER_ERROR, "the status page could not be rendered")
        }
    }
}

fn views(st: &AppState) -> Vec<StatusView> {
    st.0.fleet.members().iter().map(|m| StatusView { repo: m.name.clone(), ..m.handle.shared().status() }).collect()
}

/// `GET /api/v1/status`: the same, as JSON: the view itself for one repo, `{"repos": [...]}`
/// (each naming its `repo`) for several.
pub(super) async fn json(State(st): State<AppState>) -> Response {
    let mut views = views(&st);
    if views.len() == 1 {
        return axum::Json(views.remove(0)).into_response();
    }
    axum::Json(serde_json::json!({ "repos": views })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_from_senders_are_escaped() {
        let view = StatusView { paused: Some("<script>alert(1)</script>".into()), ..StatusView::default() };
        let html = render(std::slice::from_ref(&view)).unwrap();
        assert!(html.contains("&lt;script&gt;alert(1)&lt;"), "{html}");
        assert!(!html.contains("<script>alert"));
    }
}
