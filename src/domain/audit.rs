//! The audit record: one rollback as git remembers it (trailers, tags, proposal branches). The
//! git adapter reads it back; guards, dedupe, `history` and the API use it.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::domain::plan::Sha;
use crate::domain::rollback::{Delivery, RollbackId};

/// One rollback as recorded in git. This is the `history --json` schema; fields are only ever
/// added.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub id: RollbackId,
    pub at: Timestamp,
    pub service: String,
    pub env: String,
    pub delivery: Delivery,
    pub commit: Sha,
    pub branch: String,
    pub tag: Option<String>,
    pub strategy: String,
    pub bad_commits: Vec<String>,
    pub known_good: String,
    pub policy: String,
    pub trigger: String,
    pub actor: String,
    pub reason: Option<String>,
    pub emergency: bool,
    /// A proposal closed without merging (kept as a `cancelled/...` tag).
    #[serde(default)]
    pub cancelled: bool,
}
