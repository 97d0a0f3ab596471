//! Rewrite (compaction) commits: replace files with new ones whose data
//! sequence number is the *planning* snapshot's, so equality deletes committed
//! after planning still apply to the rewritten rows; and refuse (typed
//! `ValidationFailed`) when position deletes against a replaced file were
//! committed after planning — those rows would otherwise come back.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use bytes::Bytes;
use iceberg::spec::{
    DataContentType, DataFile, ManifestContentType, ManifestFile, ManifestStatus, Operation,
    TableMetadata,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tributary_core::{Error, ErrorKind, Result};

use super::producer::{
    FileCounts, close_manifest, current_manifests, finish_snapshot, manifest_writer,
    new_snapshot_id, summary,
};
use super::{TableOperation, commit_operation};
use crate::{Catalog, CatalogTable, iceberg_err};

/// Files to replace and their replacement, planned at `starting_snapshot_id`.
#[derive(Debug, Clone)]
pub struct RewriteFiles {
    /// Data (or delete) files that the rewrite removes.
    pub replaced: Vec<DataFile>,
    /// New data files holding the replaced files' live rows.
    pub added: Vec<DataFile>,
    /// The snapshot the rewrite read; its sequence number becomes the added
    /// files' data sequence number.
    pub starting_snapshot_id: i64,
}

fn conflict(msg: String) -> Error {
    Error::new(ErrorKind::ValidationFailed, msg)
}

/// Commits `rewrite`, re-validating on every retry.
pub async fn commit_rewrite(
    catalog: &dyn Catalog,
    table: &CatalogTable,
    rewrite: &RewriteFiles,
) -> Result<CatalogTable> {
    commit_operation(catalog, table, rewrite).await
}

#[async_trait]
impl TableOperation for RewriteFiles {
    async fn apply(&self, base: &CatalogTable) -> Result<Option<TableMetadata>> {
        rewrite_metadata(base, self).await.map(Some)
    }
}

/// Snapshots committed after `start`, newest first.
fn snapshots_after(meta: &TableMetadata, start: i64) -> Result<Vec<i64>> {
    let mut out = Vec::new();
    let mut cur = meta.current_snapshot_id();
    while let Some(id) = cur {
        if id == start {
            return Ok(out);
        }
        out.push(id);
        cur = meta.snapshot_by_id(id).and_then(|s| s.parent_snapshot_id());
    }
    Err(conflict(format!(
        "snapshot {start} is no longer an ancestor of the current snapshot; re-plan the rewrite"
    )))
}

/// The data-file paths a position-delete file names.
async fn position_delete_targets(table: &CatalogTable, file: &DataFile) -> Result<HashSet<String>> {
    let bytes: Bytes = table
        .file_io
        .new_input(file.file_path())
        .map_err(|e| iceberg_err("position delete input", e))?
        .read()
        .await
        .map_err(|e| iceberg_err(format!("reading {}", file.file_path()), e))?;
    let parquet = |e: parquet::errors::ParquetError| {
        Error::new(ErrorKind::Io, "reading a position delete file").with_source(e)
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(parquet)?
        .build()
        .map_err(parquet)?;
    let mut paths = HashSet::new();
    for batch in reader {
        let batch = batch?;
        let col = batch
            .column(0)
            .as_any()
            .downcast_ref::<arrow_array::StringArray>()
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidData,
                    format!("{}: first column is not file_path", file.file_path()),
                )
            })?;
        paths.extend(col.iter().flatten().map(str::to_string));
    }
    Ok(paths)
}

/// Fails if a snapshot after planning added position deletes against a replaced file.
async fn validate_no_new_position_deletes(
    base: &CatalogTable,
    rewrite: &RewriteFiles,
    replaced: &HashSet<&str>,
) -> Result<()> {
    let newer: HashSet<i64> = snapshots_after(&base.metadata, rewrite.starting_snapshot_id)?
        .into_iter()
        .collect();
    for manifest in current_manifests(base).await? {
        if manifest.content != ManifestContentType::Deletes
            || !newer.contains(&manifest.added_snapshot_id)
        {
            continue;
        }
        let loaded = manifest
            .load_manifest(&base.file_io)
            .await
            .map_err(|e| iceberg_err("loading a manifest", e))?;
        for entry in loaded.entries() {
            let added_after = entry.status() == ManifestStatus::Added
                && entry.snapshot_id().is_some_and(|s| newer.contains(&s));
            if !added_after || entry.content_type() != DataContentType::PositionDeletes {
                continue;
            }
            let targets = position_delete_targets(base, entry.data_file()).await?;
            if let Some(hit) = targets.iter().find(|t| replaced.contains(t.as_str())) {
                return Err(conflict(format!(
                    "cannot commit the rewrite: position deletes added after snapshot {} ({}) apply to replaced file {hit}; re-plan",
                    rewrite.starting_snapshot_id,
                    entry.data_file().file_path()
                )));
            }
        }
    }
    Ok(())
}

async fn rewrite_metadata(base: &CatalogTable, rewrite: &RewriteFiles) -> Result<TableMetadata> {
    let meta = &base.metadata;
    let replaced: HashSet<&str> = rewrite.replaced.iter().map(|f| f.file_path()).collect();
    validate_no_new_position_deletes(base, rewrite, &replaced).await?;
    let start_seq = meta
        .snapshot_by_id(rewrite.starting_snapshot_id)
        .map(|s| s.sequence_number())
        .ok_or_else(|| {
            conflict(format!(
                "snapshot {} no longer exists",
                rewrite.starting_snapshot_id
            ))
        })?;
    let snapshot_id = new_snapshot_id();
    let sequence = meta.next_sequence_number();
    let io = &base.file_io;

    // Carry manifests over; rewrite the ones holding replaced files.
    let mut manifests: Vec<ManifestFile> = Vec::new();
    let mut found: HashSet<String> = HashSet::new();
    // What leaves the table: data files/records/bytes, and delete files with
    // their position and equality delete counts.
    let mut gone = FileCounts::default();
    for manifest in current_manifests(base).await? {
        let loaded = manifest
            .load_manifest(io)
            .await
            .map_err(|e| iceberg_err("loading a manifest", e))?;
        let hit = loaded
            .entries()
            .iter()
            .any(|e| e.is_alive() && replaced.contains(e.data_file().file_path()));
        if !hit {
            manifests.push(manifest);
            continue;
        }
        let deletes = manifest.content == ManifestContentType::Deletes;
        let mut w = manifest_writer(base, snapshot_id, deletes, &format!("r{}", manifests.len()))?;
        for e in loaded.entries().iter().filter(|e| e.is_alive()) {
            let (df, seq, file_seq) = (
                e.data_file().clone(),
                e.sequence_number().unwrap_or(0),
                e.file_sequence_number,
            );
            if replaced.contains(df.file_path()) {
                found.insert(df.file_path().to_string());
                gone.add(&df);
                w.add_delete_file(df, seq, file_seq)
            } else {
                w.add_existing_file(df, e.snapshot_id().unwrap_or(snapshot_id), seq, file_seq)
            }
            .map_err(|e| iceberg_err("rewriting a manifest", e))?;
        }
        manifests.push(close_manifest(w).await?);
    }
    if let Some(missing) = replaced.iter().find(|p| !found.contains(**p)) {
        return Err(conflict(format!(
            "file {missing} to replace is no longer in the table; re-plan the rewrite"
        )));
    }
    if !rewrite.added.is_empty() {
        let mut w = manifest_writer(base, snapshot_id, false, "r-added")?;
        for f in &rewrite.added {
            // Data sequence number of the planning snapshot (see module docs).
            w.add_file(f.clone(), start_seq)
                .map_err(|e| iceberg_err("adding a file", e))?;
        }
        manifests.insert(0, close_manifest(w).await?);
    }

    let parent = meta
        .current_snapshot()
        .map(|s| &s.summary().additional_properties);
    let added = FileCounts::of(&rewrite.added);
    let summary = summary(Operation::Replace, parent, &added, &gone, &HashMap::new());
    finish_snapshot(base, snapshot_id, sequence, manifests, summary).await
}
