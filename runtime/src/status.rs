//! What the runner knows per table, shared with whoever reports it (the
//! `status` command today; metrics and the status page later).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tributary_core::{SourcePosition, TableId};

/// One source table as the running pipeline sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableStatus {
    /// Where its rows go.
    pub target: String,
    /// Rows handed to its sink since the start of this run.
    pub rows_written: u64,
    /// The round and position of its last commit in this run.
    pub committed_round: Option<u64>,
    pub committed_position: Option<SourcePosition>,
    /// Why the table is paused (`on_table_error = "pause"`), if it is.
    pub paused: Option<String>,
    /// The committed completeness watermark (microseconds since the epoch).
    pub watermark_micros: Option<i64>,
}

/// Per-table status of a running pipeline; cheap to clone and share.
#[derive(Debug, Clone, Default)]
pub struct PipelineStatus {
    tables: Arc<Mutex<BTreeMap<TableId, TableStatus>>>,
}

impl PipelineStatus {
    pub fn snapshot(&self) -> BTreeMap<TableId, TableStatus> {
        self.lock().clone()
    }

    pub(crate) fn update(&self, table: &TableId, f: impl FnOnce(&mut TableStatus)) {
        f(self.lock().entry(table.clone()).or_default());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<TableId, TableStatus>> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }
}
