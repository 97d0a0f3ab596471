//! Snapshot commits built from the spec types: new manifests for the added
//! files, a manifest list carrying the parent's manifests forward, a snapshot
//! with summary totals, and the next metadata version through the catalog.
//! A lost race reloads the table and re-applies the change on the new base
//! (re-running its validation); a failed validation is returned as is.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iceberg::spec::{
    DataContentType, DataFile, FormatVersion, MAIN_BRANCH, ManifestFile, ManifestList,
    ManifestListWriter, ManifestWriterBuilder, Operation, Snapshot, Summary, TableMetadata,
    TableMetadataBuilder,
};
use tributary_core::{Error, ErrorKind, Result};

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
}

impl RowDelta {
    fn operation(&self) -> Operation {
        match (self.data_files.is_empty(), self.delete_files.is_empty()) {
            (_, true) => Operation::Append,
            (true, false) => Operation::Delete,
            (false, false) => Operation::Overwrite,
        }
    }
}

const MAX_ATTEMPTS: u32 = 10;

/// A change to commit as one snapshot.
#[derive(Clone, Copy)]
pub(crate) enum Change<'a> {
    RowDelta(&'a RowDelta),
    Rewrite(&'a crate::RewriteFiles),
    /// A new current schema (metadata only: no snapshot).
    Schema(&'a iceberg::spec::Schema),
}

impl Change<'_> {
    async fn next_metadata(self, base: &CatalogTable) -> Result<TableMetadata> {
        match self {
            Change::RowDelta(d) => row_delta_metadata(base, d).await,
            Change::Rewrite(r) => crate::rewrite::rewrite_metadata(base, r).await,
            Change::Schema(schema) => TableMetadataBuilder::new_from_metadata(
                base.metadata.clone(),
                Some(base.metadata_location.clone()),
            )
            .add_current_schema(schema.clone())
            .and_then(|b| b.build())
            .map(|b| b.metadata)
            .map_err(|e| iceberg_err("adding the schema", e)),
        }
    }
}

/// Builds the next metadata from the newest version and commits it, retrying
/// with bounded backoff when another writer commits first.
pub(crate) async fn commit_with_retries(
    catalog: &dyn Catalog,
    table: &CatalogTable,
    change: Change<'_>,
) -> Result<CatalogTable> {
    let mut base = table.clone();
    let mut wait = Duration::from_millis(5);
    for attempt in 1..=MAX_ATTEMPTS {
        let metadata = change.next_metadata(&base).await?;
        match catalog.commit(&base, metadata).await {
            Ok(t) => return Ok(t),
            Err(e) if e.kind() == ErrorKind::CommitConflict && attempt < MAX_ATTEMPTS => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_millis(500));
                base = catalog.load_table(&base.name).await?;
            }
            Err(e) => return Err(e.with_context("attempts", attempt)),
        }
    }
    unreachable!("the last attempt returns")
}

/// Commits `delta` on top of the newest version of `table`.
pub async fn commit_row_delta(
    catalog: &dyn Catalog,
    table: &CatalogTable,
    delta: &RowDelta,
) -> Result<CatalogTable> {
    commit_with_retries(catalog, table, Change::RowDelta(delta)).await
}

/// Makes `schema` (field ids kept, new fields with ids above the table's
/// last column id) the current schema of the newest version of `table`.
pub async fn commit_schema(
    catalog: &dyn Catalog,
    table: &CatalogTable,
    schema: &iceberg::spec::Schema,
) -> Result<CatalogTable> {
    commit_with_retries(catalog, table, Change::Schema(schema)).await
}

pub(crate) fn new_snapshot_id() -> i64 {
    (uuid::Uuid::new_v4().as_u64_pair().0 & (i64::MAX as u64)) as i64
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A summary total of the parent snapshot (0 when absent).
pub(crate) fn total(parent: &Option<HashMap<String, String>>, key: &str) -> u64 {
    parent
        .as_ref()
        .and_then(|p| p.get(key))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The manifests of the current snapshot (empty for a new table).
pub(crate) async fn current_manifests(table: &CatalogTable) -> Result<Vec<ManifestFile>> {
    let Some(snapshot) = table.metadata.current_snapshot() else {
        return Ok(Vec::new());
    };
    let bytes = table
        .file_io
        .new_input(snapshot.manifest_list())
        .map_err(|e| iceberg_err("manifest list", e))?
        .read()
        .await
        .map_err(|e| iceberg_err(format!("reading {}", snapshot.manifest_list()), e))?;
    let list = ManifestList::parse_with_version(&bytes, FormatVersion::V2)
        .map_err(|e| iceberg_err("parsing the manifest list", e))?;
    Ok(list.consume_entries().into_iter().collect())
}

/// The live data files and delete files of the current snapshot.
pub async fn live_files(table: &CatalogTable) -> Result<(Vec<DataFile>, Vec<DataFile>)> {
    let (mut data, mut deletes) = (Vec::new(), Vec::new());
    for manifest in current_manifests(table).await? {
        let loaded = manifest
            .load_manifest(&table.file_io)
            .await
            .map_err(|e| iceberg_err("loading a manifest", e))?;
        for entry in loaded.entries().iter().filter(|e| e.is_alive()) {
            let file = entry.data_file().clone();
            if file.content_type() == DataContentType::Data {
                data.push(file)
            } else {
                deletes.push(file)
            }
        }
    }
    Ok((data, deletes))
}

/// Writes the manifest list of a new snapshot and returns the metadata with
/// that snapshot current on `main`.
pub(crate) async fn finish_snapshot(
    base: &CatalogTable,
    snapshot_id: i64,
    sequence: i64,
    manifests: Vec<ManifestFile>,
    summary: Summary,
) -> Result<TableMetadata> {
    let meta = &base.metadata;
    let err = |what: &'static str| move |e| iceberg_err(what, e);
    let list_path = format!(
        "{}/metadata/snap-{snapshot_id}-1-{}.avro",
        meta.location(),
        uuid::Uuid::new_v4()
    );
    let out = base
        .file_io
        .new_output(&list_path)
        .map_err(err("manifest list output"))?;
    let parent = meta.current_snapshot_id();
    let writer = out.writer().await.map_err(err("manifest list writer"))?;
    let mut list = ManifestListWriter::v2(writer, snapshot_id, parent, sequence);
    list.add_manifests(manifests.into_iter())
        .map_err(err("adding manifests"))?;
    list.close()
        .await
        .map_err(err("writing the manifest list"))?;
    let snapshot = Snapshot::builder()
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(parent)
        .with_sequence_number(sequence)
        .with_timestamp_ms(now_ms())
        .with_manifest_list(list_path)
        .with_summary(summary)
        .with_schema_id(meta.current_schema_id())
        .build();
    let built =
        TableMetadataBuilder::new_from_metadata(meta.clone(), Some(base.metadata_location.clone()))
            .set_branch_snapshot(snapshot, MAIN_BRANCH)
            .and_then(|b| b.build())
            .map_err(err("building the next metadata"))?;
    if built.metadata.current_snapshot_id() != Some(snapshot_id) {
        return Err(Error::new(
            ErrorKind::Unexpected,
            "the new snapshot did not become current",
        ));
    }
    Ok(built.metadata)
}

/// Removes snapshots older than `older_than_ms` from the metadata, keeping
/// the current snapshot and the `retain_last` newest ancestors. Files are
/// not deleted (orphan cleanup is maintenance's job); the current snapshot,
/// whose summary holds the writer's source position, always stays.
pub async fn expire_snapshots(
    catalog: &dyn Catalog,
    table: &CatalogTable,
    older_than_ms: i64,
    retain_last: usize,
) -> Result<CatalogTable> {
    let meta = &table.metadata;
    let mut keep = std::collections::HashSet::new();
    let mut cur = meta.current_snapshot_id();
    while let Some(id) = cur {
        if keep.len() >= retain_last.max(1) {
            break;
        }
        keep.insert(id);
        cur = meta.snapshot_by_id(id).and_then(|s| s.parent_snapshot_id());
    }
    let expired: Vec<i64> = meta
        .snapshots()
        .filter(|s| !keep.contains(&s.snapshot_id()) && s.timestamp_ms() < older_than_ms)
        .map(|s| s.snapshot_id())
        .collect();
    if expired.is_empty() {
        return Ok(table.clone());
    }
    let next = TableMetadataBuilder::new_from_metadata(
        meta.clone(),
        Some(table.metadata_location.clone()),
    )
    .remove_snapshots(&expired)
    .build()
    .map_err(|e| iceberg_err("expiring snapshots", e))?;
    catalog.commit(table, next.metadata).await
}

/// Summary totals: the parent's plus what this snapshot adds.
fn row_delta_summary(table: &CatalogTable, delta: &RowDelta) -> Summary {
    let parent = table
        .metadata
        .current_snapshot()
        .map(|s| s.summary().additional_properties.clone());
    let files = delta.data_files.len() as u64;
    let records: u64 = delta.data_files.iter().map(|f| f.record_count()).sum();
    let size: u64 = delta
        .data_files
        .iter()
        .map(|f| f.file_size_in_bytes())
        .sum();
    let mut props = delta.properties.clone();
    props.insert("added-data-files".into(), files.to_string());
    props.insert("added-records".into(), records.to_string());
    props.insert("added-files-size".into(), size.to_string());
    props.insert(
        "total-data-files".into(),
        (total(&parent, "total-data-files") + files).to_string(),
    );
    props.insert(
        "total-records".into(),
        (total(&parent, "total-records") + records).to_string(),
    );
    props.insert(
        "total-files-size".into(),
        (total(&parent, "total-files-size") + size).to_string(),
    );
    let count = |content: DataContentType| -> (u64, u64) {
        let files = delta
            .delete_files
            .iter()
            .filter(|f| f.content_type() == content);
        files.fold((0, 0), |(n, rows), f| (n + 1, rows + f.record_count()))
    };
    let (pos_files, pos_rows) = count(DataContentType::PositionDeletes);
    let (eq_files, eq_rows) = count(DataContentType::EqualityDeletes);
    if !delta.delete_files.is_empty() {
        props.insert(
            "added-delete-files".into(),
            (pos_files + eq_files).to_string(),
        );
        props.insert("added-position-delete-files".into(), pos_files.to_string());
        props.insert("added-equality-delete-files".into(), eq_files.to_string());
        props.insert("added-position-deletes".into(), pos_rows.to_string());
        props.insert("added-equality-deletes".into(), eq_rows.to_string());
    }
    for (key, added) in [
        ("total-delete-files", pos_files + eq_files),
        ("total-position-deletes", pos_rows),
        ("total-equality-deletes", eq_rows),
    ] {
        props.insert(key.into(), (total(&parent, key) + added).to_string());
    }
    Summary {
        operation: delta.operation(),
        additional_properties: props,
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
        let path = format!(
            "{}/metadata/{}-m{}.avro",
            meta.location(),
            uuid::Uuid::new_v4(),
            manifests.len()
        );
        let output = table
            .file_io
            .new_output(&path)
            .map_err(|e| iceberg_err("manifest output", e))?;
        let builder = ManifestWriterBuilder::new(
            output,
            Some(snapshot_id),
            meta.current_schema().clone(),
            meta.default_partition_spec().as_ref().clone(),
        );
        let mut writer = if deletes {
            builder.build_v2_deletes()
        } else {
            builder.build_v2_data()
        };
        for file in files.iter() {
            writer
                .add_file(file.clone(), sequence)
                .map_err(|e| iceberg_err("adding a file to a manifest", e))?;
        }
        manifests.push(
            writer
                .write_manifest_file()
                .await
                .map_err(|e| iceberg_err("writing a manifest", e))?,
        );
    }
    manifests.extend(current_manifests(table).await?);
    finish_snapshot(
        table,
        snapshot_id,
        sequence,
        manifests,
        row_delta_summary(table, delta),
    )
    .await
}
