//! Snapshot expiry (metadata only; deleting the files no snapshot
//! references any more is maintenance's job).

use std::collections::HashSet;

use async_trait::async_trait;
use iceberg::spec::{TableMetadata, TableMetadataBuilder};
use tributary_core::Result;

use super::{TableOperation, commit_operation};
use crate::{Catalog, CatalogTable, iceberg_err};

/// Removes snapshots older than `older_than_ms`, keeping the current
/// snapshot and its `retain_last` newest ancestors. The current snapshot,
/// whose summary holds the writer's source position, always stays.
#[derive(Debug, Clone, Default)]
pub struct ExpireSnapshots {
    pub older_than_ms: i64,
    pub retain_last: usize,
    /// Snapshots that stay whatever their age (the one holding a writer's
    /// checkpoint).
    pub keep: Vec<i64>,
    /// At most this many snapshots stay: the oldest beyond it go even when
    /// younger than `older_than_ms` — but never one younger than
    /// `count_floor_ms` (a reader that planned on it has that long to read
    /// its files). At a commit a second an age limit alone keeps hundreds,
    /// and every `metadata.json` rewrites them all.
    pub max_count: Option<usize>,
    pub count_floor_ms: i64,
}

#[async_trait]
impl TableOperation for ExpireSnapshots {
    async fn apply(&self, base: &CatalogTable) -> Result<Option<TableMetadata>> {
        let meta = &base.metadata;
        let mut keep: HashSet<i64> = self.keep.iter().copied().collect();
        let mut kept = 0;
        let mut cur = meta.current_snapshot_id();
        while let Some(id) = cur {
            if kept >= self.retain_last.max(1) {
                break;
            }
            keep.insert(id);
            kept += 1;
            cur = meta.snapshot_by_id(id).and_then(|s| s.parent_snapshot_id());
        }
        let mut candidates: Vec<(i64, i64)> = meta
            .snapshots()
            .filter(|s| !keep.contains(&s.snapshot_id()))
            .map(|s| (s.timestamp_ms(), s.snapshot_id()))
            .collect();
        candidates.sort_unstable();
        let mut excess = self
            .max_count
            .map_or(0, |max| meta.snapshots().count().saturating_sub(max));
        let mut expired = Vec::new();
        for (ts, id) in candidates {
            if ts < self.older_than_ms {
                expired.push(id);
                excess = excess.saturating_sub(1);
            } else if excess > 0 && ts < self.count_floor_ms {
                expired.push(id);
                excess -= 1;
            }
        }
        if expired.is_empty() {
            return Ok(None);
        }
        let next = TableMetadataBuilder::new_from_metadata(
            meta.clone(),
            Some(base.metadata_location.clone()),
        )
        .remove_snapshots(&expired)
        .build()
        .map_err(|e| iceberg_err("expiring snapshots", e))?;
        Ok(Some(next.metadata))
    }
}

/// Expires snapshots of the newest version of `table` (see
/// [`ExpireSnapshots`]), retrying lost races like every commit.
pub async fn expire_snapshots(
    catalog: &dyn Catalog,
    table: &CatalogTable,
    older_than_ms: i64,
    retain_last: usize,
) -> Result<CatalogTable> {
    let op = ExpireSnapshots {
        older_than_ms,
        retain_last,
        ..ExpireSnapshots::default()
    };
    commit_operation(catalog, table, &op).await
}
