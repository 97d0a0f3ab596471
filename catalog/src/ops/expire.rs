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
pub struct ExpireSnapshots {
    pub older_than_ms: i64,
    pub retain_last: usize,
    /// Snapshots that stay whatever their age (the one holding a writer's
    /// checkpoint).
    pub keep: Vec<i64>,
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
        let expired: Vec<i64> = meta
            .snapshots()
            .filter(|s| !keep.contains(&s.snapshot_id()) && s.timestamp_ms() < self.older_than_ms)
            .map(|s| s.snapshot_id())
            .collect();
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
        keep: Vec::new(),
    };
    commit_operation(catalog, table, &op).await
}
