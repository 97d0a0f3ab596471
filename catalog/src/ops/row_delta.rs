//! Row deltas: data files plus position- and equality-delete files added
//! in one snapshot (the upsert writer's commit).

use std::collections::HashMap;

use async_trait::async_trait;
use iceberg::spec::{
    DataFile, FormatVersion, ManifestContentType, ManifestFile, Operation, TableMetadata,
};
use tributary_core::{Error, ErrorKind, Result};

use super::producer::{
    FileCounts, close_manifest, current_manifests, finish_snapshot, live_files, manifest_writer,
    new_snapshot_id, summary,
};
use super::{TableOperation, commit_operation};
use crate::{Catalog, CatalogTable, iceberg_err};

/// Files to add in one snapshot — data files, and position- or
/// equality-delete files — with extra summary properties (source offsets,
/// watermarks). Without delete files it is an append.
#[derive(Debug, Clone, Default)]
pub struct RowDelta {
    pub data_files: Vec<DataFile>,
    pub delete_files: Vec<DataFile>,
    pub properties: HashMap<String, String>,
    /// Data files the position deletes point at. If one of them is no longer
    /// live when the commit is (re)built — a rewrite replaced it — the commit
    /// fails with `ValidationFailed` instead of deleting nothing: the caller
    /// must find the rows again in the new files.
    pub referenced_data_files: Vec<String>,
    /// The snapshot the deletes were planned against. While the table is
    /// still there, the referenced files are known to be live and the check
    /// is skipped; after a concurrent commit it runs.
    pub planned_at_snapshot: Option<i64>,
    /// The source table was truncated before these files' rows: every file
    /// live in the base the commit is built on (whoever wrote it) leaves
    /// the table in the same snapshot.
    pub truncate: bool,
}

impl RowDelta {
    /// The delta as JSON, for a commit made elsewhere or later. Each file is
    /// kept as the string of Iceberg's JSON form for `table`'s default spec:
    /// that form is order-sensitive (a partition tuple is an object read back
    /// by position), so it must not pass through a key-sorting JSON value.
    pub fn encode(&self, table: &TableMetadata) -> Result<serde_json::Value> {
        let files = |files: &[DataFile]| -> Result<Vec<String>> {
            files
                .iter()
                .map(|f| {
                    iceberg::spec::serialize_data_file_to_json(
                        f.clone(),
                        table.default_partition_type(),
                        FormatVersion::V2,
                    )
                    .map_err(|e| iceberg_err("encoding a data file", e))
                })
                .collect()
        };
        Ok(serde_json::json!({
            "data_files": files(&self.data_files)?,
            "delete_files": files(&self.delete_files)?,
            "properties": self.properties,
            "referenced_data_files": self.referenced_data_files,
            "planned_at_snapshot": self.planned_at_snapshot,
            "truncate": self.truncate,
        }))
    }

    /// The inverse of `encode`, for the same table.
    pub fn decode(value: &serde_json::Value, table: &TableMetadata) -> Result<RowDelta> {
        let bad = || Error::invalid_data("a prepared row delta is malformed");
        let files = |key: &str| -> Result<Vec<DataFile>> {
            let items = value.get(key).and_then(|v| v.as_array()).ok_or_else(bad)?;
            items
                .iter()
                .map(|item| {
                    iceberg::spec::deserialize_data_file_from_json(
                        item.as_str().ok_or_else(bad)?,
                        table.default_partition_spec_id(),
                        table.default_partition_type(),
                        table.current_schema(),
                    )
                    .map_err(|e| iceberg_err("decoding a data file", e))
                })
                .collect()
        };
        let field = |key: &str| value.get(key).cloned().unwrap_or_default();
        Ok(RowDelta {
            data_files: files("data_files")?,
            delete_files: files("delete_files")?,
            properties: serde_json::from_value(field("properties")).map_err(|_| bad())?,
            referenced_data_files: serde_json::from_value(field("referenced_data_files"))
                .map_err(|_| bad())?,
            planned_at_snapshot: serde_json::from_value(field("planned_at_snapshot"))
                .map_err(|_| bad())?,
            truncate: value
                .get("truncate")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
        })
    }

    /// Adds `other`'s files and references (prepared by another writer of
    /// the same table, or earlier); properties of `other` win.
    pub fn merge(&mut self, other: RowDelta) {
        if other.truncate {
            // A later truncate removes what the earlier delta added.
            *self = RowDelta::default();
            self.truncate = true;
        }
        self.data_files.extend(other.data_files);
        self.delete_files.extend(other.delete_files);
        self.properties.extend(other.properties);
        self.referenced_data_files
            .extend(other.referenced_data_files);
        self.planned_at_snapshot = match (self.planned_at_snapshot, other.planned_at_snapshot) {
            (a, b) if a == b => a,
            // Different planning snapshots: always validate.
            _ => None,
        };
    }

    fn operation(&self) -> Operation {
        match (self.data_files.is_empty(), self.delete_files.is_empty()) {
            _ if self.truncate => Operation::Overwrite,
            (_, true) => Operation::Append,
            (true, false) => Operation::Delete,
            (false, false) => Operation::Overwrite,
        }
    }
}

/// Commits `delta` on top of the newest version of `table`.
pub async fn commit_row_delta(
    catalog: &dyn Catalog,
    table: &CatalogTable,
    delta: &RowDelta,
) -> Result<CatalogTable> {
    commit_operation(catalog, table, delta).await
}

#[async_trait]
impl TableOperation for RowDelta {
    async fn apply(&self, base: &CatalogTable) -> Result<Option<TableMetadata>> {
        row_delta_metadata(base, self).await.map(Some)
    }
}

/// The next metadata of `table` with `delta` as its current snapshot.
async fn row_delta_metadata(table: &CatalogTable, delta: &RowDelta) -> Result<TableMetadata> {
    let moved_on = table.metadata.current_snapshot_id() != delta.planned_at_snapshot;
    if !delta.referenced_data_files.is_empty() && moved_on {
        let (live, _) = live_files(table).await?;
        let live: std::collections::HashSet<&str> = live.iter().map(|f| f.file_path()).collect();
        if let Some(gone) = delta
            .referenced_data_files
            .iter()
            .find(|f| !live.contains(f.as_str()))
        {
            return Err(Error::new(
                ErrorKind::ValidationFailed,
                format!(
                    "position deletes point at {gone}, which is no longer in the table (rewritten?); re-plan them"
                ),
            ));
        }
    }
    let meta = &table.metadata;
    let snapshot_id = new_snapshot_id();
    let sequence = meta.next_sequence_number();
    let mut manifests = Vec::new();
    for (files, deletes) in [(&delta.data_files, false), (&delta.delete_files, true)] {
        if files.is_empty() {
            continue;
        }
        let mut writer = manifest_writer(
            table,
            snapshot_id,
            deletes,
            &format!("m{}", manifests.len()),
        )?;
        for file in files.iter() {
            writer
                .add_file(file.clone(), sequence)
                .map_err(|e| iceberg_err("adding a file to a manifest", e))?;
        }
        manifests.push(close_manifest(writer).await?);
    }
    let (carried, gone) = if delta.truncate {
        let (removed, gone) = remove_everything(table, snapshot_id).await?;
        manifests.extend(removed);
        (Vec::new(), gone)
    } else {
        (current_manifests(table).await?, FileCounts::default())
    };
    let parent = meta
        .current_snapshot()
        .map(|s| &s.summary().additional_properties);
    let added = FileCounts::of(delta.data_files.iter().chain(&delta.delete_files));
    let summary = summary(delta.operation(), parent, &added, &gone, &delta.properties);
    finish_snapshot(table, snapshot_id, sequence, manifests, carried, summary).await
}

/// Manifests marking every live file of `table` deleted in `snapshot_id`
/// (what a truncate removes), and what left.
async fn remove_everything(
    table: &CatalogTable,
    snapshot_id: i64,
) -> Result<(Vec<ManifestFile>, FileCounts)> {
    let (mut written, mut gone) = (Vec::new(), FileCounts::default());
    for manifest in current_manifests(table).await? {
        let loaded = manifest
            .load_manifest(&table.file_io)
            .await
            .map_err(|e| iceberg_err("loading a manifest", e))?;
        let live: Vec<_> = loaded.entries().iter().filter(|e| e.is_alive()).collect();
        if live.is_empty() {
            continue;
        }
        let deletes = manifest.content == ManifestContentType::Deletes;
        let tag = format!("t{}", written.len());
        let mut w = manifest_writer(table, snapshot_id, deletes, &tag)?;
        for e in live {
            gone.add(e.data_file());
            w.add_delete_file(
                e.data_file().clone(),
                e.sequence_number().unwrap_or(0),
                e.file_sequence_number,
            )
            .map_err(|e| iceberg_err("removing a file", e))?;
        }
        written.push(close_manifest(w).await?);
    }
    Ok((written, gone))
}
