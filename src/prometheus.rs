//! The Prometheus adapter: instant queries over HTTP, for verification and phase checks (the
//! engine asks through [`crate::engine::QueryMetrics`], off the writer thread) and for `check`.

use crate::config::PrometheusConfig;
use crate::engine::QueryMetrics;

/// Prometheus at `prometheus.url`, asked over HTTP.
pub(crate) struct Prometheus {
    config: PrometheusConfig,
}

impl Prometheus {
    pub(crate) fn new(config: PrometheusConfig) -> Self {
        Prometheus { config }
    }
}

impl QueryMetrics for Prometheus {
    fn holds(&self, query: &str) -> Result<bool, String> {
        query_holds(&self.config, query)
    }
}

/// Asks Prometheus `query` (an instant query): whether it returns at least one series, or a
/// non-zero scalar. An error says whether Prometheus refused the query (a 4xx: fix the query)
/// or could not be reached.
pub(crate) fn query_holds(p: &PrometheusConfig, query: &str) -> Result<bool, String> {
    let agent = crate::outbound::agent(p.timeout.as_std());
    let url = format!("{}/api/v1/query", p.url.trim_end_matches('/'));
    let a =
        crate::outbound::get(&agent, &url, &[("query", query)]).map_err(|e| format!("Prometheus unreachable: {e}"))?;
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap_or_default();
    if !a.ok() || v["status"] != "success" {
        let why = v["error"].as_str().map_or_else(|| a.body.chars().take(200).collect(), str::to_string);
        return Err(format!("Prometheus answered {}: {why}", a.status));
    }
    let data = &v["data"];
    Ok(match data["resultType"].as_str() {
        Some("vector") | Some("matrix") => data["result"].as_array().is_some_and(|r| !r.is_empty()),
        Some("scalar") => data["result"][1].as_str().and_then(|s| s.parse::<f64>().ok()).is_some_and(|x| x != 0.0),
        _ => false,
    })
}
