//! Row deltas: data files plus position- and equality-delete files added
//! in one snapshot (the upsert writer's commit).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use iceberg::spec::{
    DataFile, FormatVersion, ManifestContentType, ManifestFile, Operation, TableMetadata,
};
use tributary_core::{Error, ErrorKind, Result};

use super::producer::{
    FileCounts, SnapshotManifests, close_manifest, current_manifests, finish_snapshot, live_files,
    manifest_writer, new_snapshot_id, summary,
};
use super::rewrite::{AttemptCache, newer_deletes};
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
    /// The committing process's owner epoch: the commit is `Fenced` when
    /// the table's current snapshot carries a higher one (another process
    /// took the table over).
    pub fence_epoch: Option<u64>,
    /// The delta was planned against the table's rows as of
    /// `planned_at_snapshot` (an upsert writer's): it fails
    /// `ValidationFailed` when another writer added rows since (their keys
    /// are not in its deletes). Plain appends leave it off.
    pub exclusive: bool,
    /// Summary properties computed from the snapshot the commit is built on
    /// (a consumer-group worker's partition claim merged into the base's
    /// checkpoint); an error refuses the commit. Not encoded: set at commit.
    pub rebase: Option<Rebase>,
    /// Live files the delta removes (copy-on-write: committed data files
    /// whose surviving rows it writes again among `data_files`, and the
    /// position-delete files that named only them). Each must still be
    /// live; and since those rows were read with the deletes of
    /// `planned_at_snapshot`, a delete file committed after it that names a
    /// removed data file, or any newer equality delete, fails the commit
    /// `ValidationFailed` (re-plan): it would be lost with the file.
    pub removed: Vec<String>,
}

/// Computes summary properties from the table version a commit is built
/// on (see
/// `RowDelta::rebase`).
#[derive(Clone)]
pub struct Rebase(pub Arc<RebaseFn>);

pub type RebaseFn = dyn Fn(&CatalogTable) -> Result<HashMap<String, String>> + Send + Sync;

impl std::fmt::Debug for Rebase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rebase(..)")
    }
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
            "fence_epoch": self.fence_epoch,
            "exclusive": self.exclusive,
            "removed": self.removed,
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
            fence_epoch: value.get("fence_epoch").and_then(|v| v.as_u64()),
            exclusive: value
                .get("exclusive")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
            rebase: None,
            removed: match value.get("removed") {
                Some(v) => serde_json::from_value(v.clone()).map_err(|_| bad())?,
                None => Vec::new(),
            },
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
        self.removed.extend(other.removed);
        self.fence_epoch = self.fence_epoch.max(other.fence_epoch);
        self.exclusive |= other.exclusive;
        if other.rebase.is_some() {
            self.rebase = other.rebase;
        }
        self.planned_at_snapshot = match (self.planned_at_snapshot, other.planned_at_snapshot) {
            (a, b) if a == b => a,
            // Different planning snapshots: always validate.
            _ => None,
        };
    }

    fn operation(&self) -> Operation {
        match (self.data_files.is_empty(), self.delete_files.is_empty()) {
            _ if self.truncate || !self.removed.is_empty() => Operation::Overwrite,
            (_, true) => Operation::Append,
            (true, false) => Operation::Delete,
            (false, false) => Operation::Overwrite,
        }
    }
}

/// Fails `Fenced` when the table's current snapshot carries a higher owner
/// epoch than the delta's (maintenance rewrites carry it forward).
fn check_fence(table: &CatalogTable, delta: &RowDelta) -> Result<()> {
    let Some(mine) = delta.fence_epoch else {
        return Ok(());
    };
    let Some(current) = table.metadata.current_snapshot() else {
        return Ok(());
    };
    let props = &current.summary().additional_properties;
    let theirs = props
        .get(tributary_core::EPOCH_PROPERTY)
        .and_then(|e| e.parse::<u64>().ok());
    match theirs {
        Some(theirs) if theirs > mine => {
            let owner = props
                .get(tributary_core::OWNER_PROPERTY)
                .map_or("another process", String::as_str);
            Err(Error::new(
                ErrorKind::Fenced,
                format!(
                    "{} was taken over by {owner} (owner epoch {theirs}); this process (epoch \
                     {mine}) stops writing it. Run one `tributary sync` per pipeline",
                    table.name
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// Fails `ValidationFailed` when a snapshot after `planned_at` (on the
/// current ancestry) added rows — another writer's, whose keys the
/// deltas's deletes were not planned against: committing on top would
/// leave both rows of a key. Rewrites (`replace`) keep rows and are fine.
fn check_no_foreign_writes(table: &CatalogTable, planned_at: Option<i64>) -> Result<()> {
    let meta = &table.metadata;
    let mut at = meta.current_snapshot();
    while let Some(s) = at {
        if Some(s.snapshot_id()) == planned_at {
            return Ok(());
        }
        if s.summary().operation != iceberg::spec::Operation::Replace {
            return Err(Error::new(
                ErrorKind::ValidationFailed,
                format!(
                    "snapshot {} of {} added rows after this commit was planned (another \
                     writer): re-plan against it",
                    s.snapshot_id(),
                    table.name
                ),
            ));
        }
        at = s.parent_snapshot_id().and_then(|p| meta.snapshot_by_id(p));
    }
    Ok(())
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
    check_fence(table, delta)?;
    let moved_on = table.metadata.current_snapshot_id() != delta.planned_at_snapshot;
    let adds = !delta.data_files.is_empty()
        || !delta.delete_files.is_empty()
        || !delta.removed.is_empty()
        || delta.truncate;
    if delta.exclusive && adds && moved_on {
        check_no_foreign_writes(table, delta.planned_at_snapshot)?;
    }
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
    let cache = AttemptCache::default();
    if !delta.removed.is_empty() && moved_on {
        check_no_newer_deletes(table, delta, &cache).await?;
    }
    let meta = &table.metadata;
    let snapshot_id = new_snapshot_id();
    let sequence = meta.next_sequence_number();
    let mut out = SnapshotManifests::new(table, snapshot_id, "m");
    out.add(&delta.data_files, false, sequence)?;
    out.add(&delta.delete_files, true, sequence)?;
    let (carried, gone, manifests) = if delta.truncate {
        let written = out.close().await?;
        let (removed, gone) = remove_everything(table, snapshot_id).await?;
        (Vec::new(), gone, [written, removed].concat())
    } else if !delta.removed.is_empty() {
        let removed: HashSet<&str> = delta.removed.iter().map(String::as_str).collect();
        let (carried, gone) = out.remove(&removed, &cache).await?;
        (carried, gone, out.close().await?)
    } else {
        let written = out.close().await?;
        (
            current_manifests(table).await?,
            FileCounts::default(),
            written,
        )
    };
    let parent = meta
        .current_snapshot()
        .map(|s| &s.summary().additional_properties);
    let added = FileCounts::of(delta.data_files.iter().chain(&delta.delete_files));
    let mut properties = delta.properties.clone();
    if let Some(rebase) = &delta.rebase {
        properties.extend((rebase.0)(table)?);
    }
    let summary = summary(delta.operation(), parent, &added, &gone, &properties);
    finish_snapshot(table, snapshot_id, sequence, manifests, carried, summary).await
}

/// Fails `ValidationFailed` when a delete committed after the delta was
/// planned applies to a file it removes: the rows it wrote again were read
/// without that delete.
async fn check_no_newer_deletes(
    table: &CatalogTable,
    delta: &RowDelta,
    cache: &AttemptCache,
) -> Result<()> {
    let conflict = |what: String| {
        Error::new(
            ErrorKind::ValidationFailed,
            format!(
                "{what} was committed after this copy-on-write commit was planned and would be \
                 lost with the rewritten file; re-plan"
            ),
        )
    };
    let Some(planned_at) = delta.planned_at_snapshot else {
        return Err(conflict("a commit (planning snapshot unknown)".to_string()));
    };
    let removed: HashSet<&str> = delta.removed.iter().map(String::as_str).collect();
    let newer = newer_deletes(table, planned_at, &removed, cache).await?;
    if let Some(eq) = newer.equality.first() {
        return Err(conflict(format!("equality-delete file {eq}")));
    }
    if let Some((file, hits)) = newer.position.first() {
        return Err(conflict(format!(
            "position-delete file {file} (naming {})",
            hits[0].0
        )));
    }
    Ok(())
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
