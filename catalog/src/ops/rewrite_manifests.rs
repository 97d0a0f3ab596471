//! Rewriting the current snapshot's manifests into as few as the target
//! size allows (no file changes): what a table whose manifests were never
//! merged — written by another engine, or before merging existed — needs.

use async_trait::async_trait;
use iceberg::spec::{Operation, TableMetadata};
use tributary_core::Result;

use super::TableOperation;
use super::merge::{MergePolicy, merge_manifests};
use super::producer::{
    FileCounts, carried_state, current_manifests, finish_snapshot, new_snapshot_id, summary,
};
use crate::CatalogTable;

/// Merges every manifest bin of two or more manifests.
pub struct RewriteManifests;

#[async_trait]
impl TableOperation for RewriteManifests {
    async fn apply(&self, base: &CatalogTable) -> Result<Option<TableMetadata>> {
        let meta = &base.metadata;
        let current = current_manifests(base).await?;
        if current.len() < 2 {
            return Ok(None);
        }
        let snapshot_id = new_snapshot_id();
        let policy = MergePolicy {
            enabled: true,
            min_count: 1,
            ..MergePolicy::of(meta)
        };
        let merged =
            merge_manifests(base, snapshot_id, Vec::new(), current.clone(), policy).await?;
        if merged.len() >= current.len() {
            return Ok(None);
        }
        let parent = meta
            .current_snapshot()
            .map(|s| &s.summary().additional_properties);
        let state = carried_state(meta);
        let none = FileCounts::default();
        let summary = summary(Operation::Replace, parent, &none, &none, &state);
        let sequence = meta.next_sequence_number();
        finish_snapshot(base, snapshot_id, sequence, merged, Vec::new(), summary)
            .await
            .map(Some)
    }
}
