//! The audit trail as people and programs read it: one filter and one line format, shared by
//! `rollbackd history`, `/rollback history` in chat and `GET /api/v1/rollbacks`.

use crate::domain::audit::AuditRecord;
use crate::domain::rollback::Delivery;

/// Which records to show, newest first.
#[derive(Clone, Copy, Debug, Default)]
pub struct Query<'a> {
    pub service: Option<&'a str>,
    pub env: Option<&'a str>,
    pub limit: Option<usize>,
}

impl Query<'_> {
    pub fn select<'r>(&self, records: &'r [AuditRecord]) -> Vec<&'r AuditRecord> {
        records
            .iter()
            .filter(|r| self.service.is_none_or(|s| r.service == s))
            .filter(|r| self.env.is_none_or(|e| r.env == e))
            .take(self.limit.unwrap_or(usize::MAX))
            .collect()
    }
}

/// One line per rollback, for a terminal or a chat reply.
pub(crate) fn line(r: &AuditRecord) -> String {
    let short = |s: &str| s[..s.len().min(10)].to_string();
    let bad: Vec<String> = r.bad_commits.iter().map(|s| short(s)).collect();
    let delivery = match (r.delivery, r.cancelled) {
        (_, true) => "cancelled",
        (Delivery::Direct, _) => "direct",
        (Delivery::Proposal, _) => "proposal",
    };
    format!(
        "{}  {}  {}/{}  {}{} {}  undid {}  to {}  by {} via {}{}",
        r.id,
        r.at,
        r.service,
        r.env,
        delivery,
        r.phase.map(|p| format!(" phase {p}")).unwrap_or_default(),
        r.strategy,
        bad.join(","),
        short(&r.known_good),
        r.actor,
        r.trigger,
        r.reason.as_deref().map(|x| format!("  \"{x}\"")).unwrap_or_default()
    ) + &match r.review.describe() {
        d if d.is_empty() => String::new(),
        d => format!("  ({d})"),
    }
}

/// The lines of `records`, or a sentence saying there are none.
pub fn text(records: &[&AuditRecord]) -> String {
    if records.is_empty() {
        return "no rollbacks in the audit window".into();
    }
    records.iter().map(|r| line(r)).collect::<Vec<_>>().join("\n")
}

/// The `history --json` document (the API answers the same).
pub fn json(records: &[&AuditRecord]) -> serde_json::Value {
    serde_json::json!({ "rollbacks": records })
}
