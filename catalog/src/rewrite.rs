//! Rewrite (compaction) commits: replace files with new ones whose data
//! sequence number is the *planning* snapshot's, so equality deletes committed
//! after planning still apply to the rewritten rows; and refuse (typed
//! `ValidationFailed`) when position deletes against a replaced file were
//! committed after planning — those rows would otherwise come back.

use std::collections::HashSet;

use bytes::Bytes;
use iceberg::spec::{
    DataContentType, DataFile, ManifestContentType, ManifestFile, ManifestStatus,
    ManifestWriterBuilder, Operation, Summary, TableMetadata,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tributary_core::{Error, ErrorKind, Result};

use crate::commit::{
    Change, commit_with_retries, current_manifests, finish_snapshot, new_snapshot_id, total,
};
use crate::{Catalog, CatalogTable, iceberg_err};

/// Counts of what a rewrite removes from the table.
#[derive(Default)]
struct Removed {
    data_files: u64,
    records: u64,
    size: u64,
    delete_files: u64,
    position_deletes: u64,
    equality_deletes: u64,
}

impl Removed {
    fn count(&mut self, f: &DataFile) {
        self.size += f.file_size_in_bytes();
        match f.content_type() {
            DataContentType::Data => {
                self.data_files += 1;
                self.records += f.record_count();
            }
            DataContentType::PositionDeletes => {
                self.delete_files += 1;
                self.position_deletes += f.record_count();
            }
            DataContentType::EqualityDeletes => {
                self.delete_files += 1;
                self.equality_deletes += f.record_count();
            }
        }
    }
}

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
    commit_with_retries(catalog, table, Change::Rewrite(rewrite)).await
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

pub(crate) async fn rewrite_metadata(
    base: &CatalogTable,
    rewrite: &RewriteFiles,
) -> Result<TableMetadata> {
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
    let dir = format!("{}/metadata", meta.location());
    let io = &base.file_io;
    let builder = |path: &str| -> Result<ManifestWriterBuilder> {
        let out = io
            .new_output(path)
            .map_err(|e| iceberg_err("manifest output", e))?;
        Ok(ManifestWriterBuilder::new(
            out,
            Some(snapshot_id),
            meta.current_schema().clone(),
            meta.default_partition_spec().as_ref().clone(),
        ))
    };

    // Carry manifests over; rewrite the ones holding replaced files.
    let mut manifests: Vec<ManifestFile> = Vec::new();
    let mut found: HashSet<String> = HashSet::new();
    // What leaves the table: data files/records/bytes, and delete files with
    // their position and equality delete counts.
    let mut gone = Removed::default();
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
        let path = format!("{dir}/{}-r{}.avro", uuid::Uuid::new_v4(), manifests.len());
        let b = builder(&path)?;
        let mut w = if manifest.content == ManifestContentType::Deletes {
            b.build_v2_deletes()
        } else {
            b.build_v2_data()
        };
        for e in loaded.entries().iter().filter(|e| e.is_alive()) {
            let (df, seq, file_seq) = (
                e.data_file().clone(),
                e.sequence_number().unwrap_or(0),
                e.file_sequence_number,
            );
            if replaced.contains(df.file_path()) {
                found.insert(df.file_path().to_string());
                gone.count(&df);
                w.add_delete_file(df, seq, file_seq)
            } else {
                w.add_existing_file(df, e.snapshot_id().unwrap_or(snapshot_id), seq, file_seq)
            }
            .map_err(|e| iceberg_err("rewriting a manifest", e))?;
        }
        manifests.push(
            w.write_manifest_file()
                .await
                .map_err(|e| iceberg_err("writing a manifest", e))?,
        );
    }
    if let Some(missing) = replaced.iter().find(|p| !found.contains(**p)) {
        return Err(conflict(format!(
            "file {missing} to replace is no longer in the table; re-plan the rewrite"
        )));
    }
    if !rewrite.added.is_empty() {
        let path = format!("{dir}/{}-r-added.avro", uuid::Uuid::new_v4());
        let mut w = builder(&path)?.build_v2_data();
        for f in &rewrite.added {
            // Data sequence number of the planning snapshot (see module docs).
            w.add_file(f.clone(), start_seq)
                .map_err(|e| iceberg_err("adding a file", e))?;
        }
        manifests.insert(
            0,
            w.write_manifest_file()
                .await
                .map_err(|e| iceberg_err("writing a manifest", e))?,
        );
    }

    let parent = meta
        .current_snapshot()
        .map(|s| s.summary().additional_properties.clone());
    let added_records: u64 = rewrite.added.iter().map(|f| f.record_count()).sum();
    let added_size: u64 = rewrite.added.iter().map(|f| f.file_size_in_bytes()).sum();
    let mut props = std::collections::HashMap::new();
    props.insert("added-data-files".into(), rewrite.added.len().to_string());
    props.insert("deleted-data-files".into(), gone.data_files.to_string());
    props.insert("added-records".into(), added_records.to_string());
    props.insert("deleted-records".into(), gone.records.to_string());
    props.insert("removed-delete-files".into(), gone.delete_files.to_string());
    let totals = [
        (
            "total-data-files",
            rewrite.added.len() as u64,
            gone.data_files,
        ),
        ("total-records", added_records, gone.records),
        ("total-files-size", added_size, gone.size),
        ("total-delete-files", 0, gone.delete_files),
        ("total-position-deletes", 0, gone.position_deletes),
        ("total-equality-deletes", 0, gone.equality_deletes),
    ];
    for (key, added, removed) in totals {
        let value = (total(&parent, key) + added).saturating_sub(removed);
        props.insert(key.into(), value.to_string());
    }
    let summary = Summary {
        operation: Operation::Replace,
        additional_properties: props,
    };
    finish_snapshot(base, snapshot_id, sequence, manifests, summary).await
}
