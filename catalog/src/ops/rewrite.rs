//! Rewrite (compaction) commits: replace files with new ones whose data
//! sequence number is the *planning* snapshot's, so equality deletes committed
//! after planning still apply to the rewritten rows. Position deletes
//! committed after planning against a replaced data file are *rebased* onto
//! the new files when the rewrite says where each old row went
//! ([`RowMap`]); without a map the commit fails typed (`ValidationFailed`)
//! so the caller re-plans — a delete is never dropped. Snapshot-summary
//! properties under `tributary.` (the writer's checkpoint) are carried
//! forward, so the writer resumes from a table whose newest snapshot is a
//! rewrite.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use iceberg::spec::{
    DataContentType, DataFile, ManifestContentType, ManifestFile, Operation, Struct, TableMetadata,
};
use tributary_core::{Error, ErrorKind, Result};

use super::producer::{
    FileCounts, carried_state, close_manifest, current_manifests, finish_snapshot, live_files,
    manifest_writer, new_snapshot_id, summary,
};
use super::{TableOperation, commit_operation};
use crate::files::{read_position_deletes, write_position_deletes};
use crate::{Catalog, CatalogTable, iceberg_err};

/// Files to replace and their replacement, planned at `starting_snapshot_id`.
#[derive(Debug, Clone, Default)]
pub struct RewriteFiles {
    /// Data or delete files that the rewrite removes.
    pub replaced: Vec<DataFile>,
    /// New data files holding the replaced files' live rows.
    pub added: Vec<DataFile>,
    /// New delete files (converted or merged deletes).
    pub added_deletes: Vec<DataFile>,
    /// The snapshot the rewrite read; its sequence number becomes the added
    /// files' data sequence number.
    pub starting_snapshot_id: i64,
    /// Data files the added position deletes point at: they must still be
    /// live when the rewrite commits.
    pub referenced_data_files: Vec<String>,
    /// Where each live row of the replaced data files went.
    pub rows: Option<Arc<RowMap>>,
}

/// Old row → new row of a compaction: for each replaced data file, per row
/// position, the index into `new_files` and the row's position there (None:
/// the row was deleted and not carried over).
#[derive(Debug, Default)]
pub struct RowMap {
    pub new_files: Vec<(String, Struct)>,
    pub moved: HashMap<String, Vec<Option<(u32, u32)>>>,
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

/// Position deletes that snapshots after planning added against replaced
/// data files: `(data file, position)` pairs, with the delete file named.
async fn newer_position_deletes(
    base: &CatalogTable,
    rewrite: &RewriteFiles,
    replaced: &HashSet<&str>,
) -> Result<Vec<(String, String, i64)>> {
    let newer: HashSet<i64> = snapshots_after(&base.metadata, rewrite.starting_snapshot_id)?
        .into_iter()
        .collect();
    let mut hits = Vec::new();
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
            // By snapshot, not status: a merged manifest lists a newer
            // snapshot's files as existing.
            let added_after =
                entry.is_alive() && entry.snapshot_id().is_some_and(|s| newer.contains(&s));
            let df = entry.data_file();
            if !added_after || df.content_type() != DataContentType::PositionDeletes {
                continue;
            }
            let size = Some(df.file_size_in_bytes());
            for (path, pos) in read_position_deletes(&base.file_io, df.file_path(), size).await? {
                if replaced.contains(path.as_str()) {
                    hits.push((df.file_path().to_string(), path, pos));
                }
            }
        }
    }
    Ok(hits)
}

/// Position-delete files moving `hits` onto the rewrite's new files.
async fn rebase(
    base: &CatalogTable,
    rewrite: &RewriteFiles,
    hits: Vec<(String, String, i64)>,
) -> Result<Vec<DataFile>> {
    let Some(rows) = &rewrite.rows else {
        let (delete_file, hit, _) = &hits[0];
        return Err(conflict(format!(
            "cannot commit the rewrite: position deletes added after snapshot {} ({delete_file}) \
             apply to replaced file {hit}; re-plan",
            rewrite.starting_snapshot_id
        )));
    };
    let mut by_file: HashMap<u32, Vec<(String, i64)>> = HashMap::new();
    for (_, old, pos) in hits {
        let moved = rows
            .moved
            .get(&old)
            .and_then(|m| m.get(pos as usize).copied());
        // None: the row was already deleted when the rewrite read it.
        if let Some(Some((file, new_pos))) = moved {
            let path = rows.new_files[file as usize].0.clone();
            by_file
                .entry(file)
                .or_default()
                .push((path, new_pos as i64));
        }
    }
    let spec = base.metadata.default_partition_spec_id();
    let mut files = Vec::new();
    for (file, deletes) in by_file {
        let partition = rows.new_files[file as usize].1.clone();
        let path = format!(
            "{}/data/{}-rebased-deletes.parquet",
            base.metadata.location(),
            uuid::Uuid::new_v4()
        );
        files.push(write_position_deletes(&base.file_io, &path, deletes, partition, spec).await?);
    }
    Ok(files)
}

/// Fails when a data file the added deletes point at is gone.
async fn validate_referenced(base: &CatalogTable, rewrite: &RewriteFiles) -> Result<()> {
    if rewrite.referenced_data_files.is_empty()
        || base.metadata.current_snapshot_id() == Some(rewrite.starting_snapshot_id)
    {
        return Ok(());
    }
    let (live, _) = live_files(base).await?;
    let live: HashSet<&str> = live.iter().map(|f| f.file_path()).collect();
    match rewrite
        .referenced_data_files
        .iter()
        .find(|f| !live.contains(f.as_str()))
    {
        Some(gone) => Err(conflict(format!(
            "the rewrite's deletes point at {gone}, which is no longer in the table; re-plan"
        ))),
        None => Ok(()),
    }
}

async fn rewrite_metadata(base: &CatalogTable, rewrite: &RewriteFiles) -> Result<TableMetadata> {
    let meta = &base.metadata;
    let replaced: HashSet<&str> = rewrite.replaced.iter().map(|f| f.file_path()).collect();
    validate_referenced(base, rewrite).await?;
    let hits = newer_position_deletes(base, rewrite, &replaced).await?;
    let mut added_deletes = rewrite.added_deletes.clone();
    if !hits.is_empty() {
        added_deletes.extend(rebase(base, rewrite, hits).await?);
    }
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
    let (mut written, mut carried): (Vec<ManifestFile>, Vec<ManifestFile>) = (vec![], vec![]);
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
            carried.push(manifest);
            continue;
        }
        let deletes = manifest.content == ManifestContentType::Deletes;
        let mut w = manifest_writer(base, snapshot_id, deletes, &format!("r{}", written.len()))?;
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
        written.push(close_manifest(w).await?);
    }
    if let Some(missing) = replaced.iter().find(|p| !found.contains(**p)) {
        return Err(conflict(format!(
            "file {missing} to replace is no longer in the table; re-plan the rewrite"
        )));
    }
    // Data sequence number of the planning snapshot (see module docs).
    for (files, deletes, tag) in [
        (&rewrite.added, false, "r-added"),
        (&added_deletes, true, "r-deletes"),
    ] {
        if files.is_empty() {
            continue;
        }
        let mut w = manifest_writer(base, snapshot_id, deletes, tag)?;
        for f in files.iter() {
            w.add_file(f.clone(), start_seq)
                .map_err(|e| iceberg_err("adding a file", e))?;
        }
        written.insert(0, close_manifest(w).await?);
    }

    let parent = meta
        .current_snapshot()
        .map(|s| &s.summary().additional_properties);
    let added = FileCounts::of(rewrite.added.iter().chain(&added_deletes));
    // The writer's checkpoint (and any tributary.* state) stays findable in
    // the newest snapshot.
    let state = carried_state(meta);
    let summary = summary(Operation::Replace, parent, &added, &gone, &state);
    finish_snapshot(base, snapshot_id, sequence, written, carried, summary).await
}
