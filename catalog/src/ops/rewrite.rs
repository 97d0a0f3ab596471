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
    DataContentType, DataFile, Manifest, ManifestContentType, ManifestFile, Operation, Struct,
    TableMetadata,
};
use tributary_core::{Error, ErrorKind, Result};

use super::producer::{
    FileCounts, SnapshotManifests, carried_state, current_manifests, finish_snapshot, live_files,
    new_snapshot_id, summary,
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
    /// What earlier attempts of this commit read and wrote.
    pub attempts: Arc<AttemptCache>,
}

/// The `(replaced data file, position)` pairs one delete file names.
pub(crate) type Hits = Arc<Vec<(String, i64)>>;

/// What one attempt of a rewrite commit leaves for the next (after a lost
/// race): manifests it loaded, the replaced files' positions each newer
/// delete file deletes, and the rebased delete files written for it. Files
/// are immutable, so a retry reads and writes only what the winner of the
/// race added — beside a writer committing every few milliseconds each
/// attempt otherwise redid all the work and lost again.
#[derive(Debug, Default)]
pub struct AttemptCache {
    manifests: std::sync::Mutex<HashMap<String, Arc<Manifest>>>,
    hits: std::sync::Mutex<HashMap<String, Hits>>,
    rebased: std::sync::Mutex<HashMap<String, Arc<Vec<DataFile>>>>,
}

impl AttemptCache {
    pub(crate) async fn manifest(
        &self,
        base: &CatalogTable,
        file: &ManifestFile,
    ) -> Result<Arc<Manifest>> {
        if let Some(m) = self.lock_manifests().get(&file.manifest_path) {
            return Ok(m.clone());
        }
        let loaded = Arc::new(
            file.load_manifest(&base.file_io)
                .await
                .map_err(|e| iceberg_err("loading a manifest", e))?,
        );
        self.lock_manifests()
            .insert(file.manifest_path.clone(), loaded.clone());
        Ok(loaded)
    }

    fn lock_manifests(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Manifest>>> {
        self.manifests.lock().expect("not poisoned")
    }
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

/// Delete files that snapshots after `start` added, still live: the
/// position-delete files with the `(data file, position)` pairs each names
/// among `replaced`, and the equality-delete files (paths).
#[derive(Debug, Default)]
pub(crate) struct NewerDeletes {
    pub(crate) position: Vec<(String, Hits)>,
    pub(crate) equality: Vec<String>,
}

/// The delete files committed after `start` (see [`NewerDeletes`]).
pub(crate) async fn newer_deletes(
    base: &CatalogTable,
    start: i64,
    replaced: &HashSet<&str>,
    cache: &AttemptCache,
) -> Result<NewerDeletes> {
    let newer: HashSet<i64> = snapshots_after(&base.metadata, start)?
        .into_iter()
        .collect();
    let mut out = NewerDeletes::default();
    for manifest in current_manifests(base).await? {
        if manifest.content != ManifestContentType::Deletes
            || !newer.contains(&manifest.added_snapshot_id)
        {
            continue;
        }
        let loaded = cache.manifest(base, &manifest).await?;
        for entry in loaded.entries() {
            // By snapshot, not status: a merged manifest lists a newer
            // snapshot's files as existing.
            let added_after =
                entry.is_alive() && entry.snapshot_id().is_some_and(|s| newer.contains(&s));
            let df = entry.data_file();
            if !added_after {
                continue;
            }
            let path = df.file_path().to_string();
            if df.content_type() == DataContentType::EqualityDeletes {
                out.equality.push(path);
                continue;
            }
            let known = cache.hits.lock().expect("not poisoned").get(&path).cloned();
            let hits = match known {
                Some(hits) => hits,
                None => {
                    let size = Some(df.file_size_in_bytes());
                    let read = read_position_deletes(&base.file_io, &path, size).await?;
                    let hits: Vec<(String, i64)> = read
                        .into_iter()
                        .filter(|(p, _)| replaced.contains(p.as_str()))
                        .collect();
                    let hits = Arc::new(hits);
                    cache
                        .hits
                        .lock()
                        .expect("not poisoned")
                        .insert(path.clone(), hits.clone());
                    hits
                }
            };
            if !hits.is_empty() {
                out.position.push((path, hits));
            }
        }
    }
    Ok(out)
}

/// Position-delete files moving the hits of each newer delete file onto
/// the rewrite's new files (written once per delete file, reused by later
/// attempts).
async fn rebase(
    base: &CatalogTable,
    rewrite: &RewriteFiles,
    hits: Vec<(String, Hits)>,
) -> Result<Vec<DataFile>> {
    let Some(rows) = &rewrite.rows else {
        let (delete_file, hit) = &hits[0];
        return Err(conflict(format!(
            "cannot commit the rewrite: position deletes added after snapshot {} ({delete_file}) \
             apply to replaced file {}; re-plan",
            rewrite.starting_snapshot_id, hit[0].0
        )));
    };
    let mut files = Vec::new();
    for (delete_file, hits) in hits {
        let known = rewrite
            .attempts
            .rebased
            .lock()
            .expect("not poisoned")
            .get(&delete_file)
            .cloned();
        let written = match known {
            Some(written) => written,
            None => {
                let written = Arc::new(write_rebased(base, rows, &hits).await?);
                rewrite
                    .attempts
                    .rebased
                    .lock()
                    .expect("not poisoned")
                    .insert(delete_file, written.clone());
                written
            }
        };
        files.extend(written.iter().cloned());
    }
    Ok(files)
}

/// The rebased delete files of one delete file's `hits`: one per new file
/// that a deleted row moved to.
async fn write_rebased(
    base: &CatalogTable,
    rows: &RowMap,
    hits: &[(String, i64)],
) -> Result<Vec<DataFile>> {
    let mut by_file: HashMap<u32, Vec<(String, i64)>> = HashMap::new();
    for (old, pos) in hits {
        let moved = rows
            .moved
            .get(old)
            .and_then(|m| m.get(*pos as usize).copied());
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
    let cache = &rewrite.attempts;
    let hits = newer_deletes(base, rewrite.starting_snapshot_id, &replaced, cache)
        .await?
        .position;
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

    // The added files at the planning snapshot's data sequence number (see
    // module docs); manifests without a replaced file carried as they are.
    let mut out = SnapshotManifests::new(base, snapshot_id, "r");
    out.add(&rewrite.added, false, start_seq)?;
    out.add(&added_deletes, true, start_seq)?;
    let (carried, gone) = out.remove(&replaced, cache).await?;
    let written = out.close().await?;

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
