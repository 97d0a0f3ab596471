//! Snapshot commits built from the spec types: a new manifest for the added
//! files, a manifest list carrying the parent's manifests forward, a snapshot
//! with summary totals, and the next metadata version through the catalog.
//! A lost race reloads the table and re-applies the commit on the new base.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iceberg::spec::{
    DataContentType, DataFile, FormatVersion, MAIN_BRANCH, ManifestFile, ManifestList,
    ManifestListWriter, ManifestWriterBuilder, Operation, Snapshot, Summary, TableMetadataBuilder,
};
use tributary_core::{Error, ErrorKind, Result};

use crate::{CatalogTable, HadoopCatalog, iceberg_err};

/// Files to add in one snapshot — data files, and position- or
/// equality-delete files — with extra summary properties (source offsets,
/// watermarks). Without delete files it is an append.
#[derive(Debug, Clone, Default)]
pub struct RowDelta {
    pub data_files: Vec<DataFile>,
    pub delete_files: Vec<DataFile>,
    pub properties: HashMap<String, String>,
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

/// Commits `append` on top of the newest version of `table`, retrying with
/// bounded backoff when another writer commits first.
pub async fn commit_row_delta(
    catalog: &HadoopCatalog,
    table: &CatalogTable,
    append: &RowDelta,
) -> Result<CatalogTable> {
    let mut base = table.clone();
    let mut wait = Duration::from_millis(5);
    for attempt in 1..=MAX_ATTEMPTS {
        let metadata = append_metadata(&base, append).await?;
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

fn new_snapshot_id() -> i64 {
    (uuid::Uuid::new_v4().as_u64_pair().0 & (i64::MAX as u64)) as i64
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The manifests of the current snapshot (empty for a new table).
async fn current_manifests(table: &CatalogTable) -> Result<Vec<ManifestFile>> {
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

/// Summary totals: the parent's plus what this snapshot adds.
fn summary(table: &CatalogTable, append: &RowDelta) -> Summary {
    let parent = table
        .metadata
        .current_snapshot()
        .map(|s| s.summary().additional_properties.clone());
    let total = |key: &str| -> u64 {
        parent
            .as_ref()
            .and_then(|p| p.get(key))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let files = append.data_files.len() as u64;
    let records: u64 = append.data_files.iter().map(|f| f.record_count()).sum();
    let size: u64 = append
        .data_files
        .iter()
        .map(|f| f.file_size_in_bytes())
        .sum();
    let mut props = append.properties.clone();
    props.insert("added-data-files".into(), files.to_string());
    props.insert("added-records".into(), records.to_string());
    props.insert("added-files-size".into(), size.to_string());
    props.insert(
        "total-data-files".into(),
        (total("total-data-files") + files).to_string(),
    );
    props.insert(
        "total-records".into(),
        (total("total-records") + records).to_string(),
    );
    props.insert(
        "total-files-size".into(),
        (total("total-files-size") + size).to_string(),
    );
    let count = |content: DataContentType| -> (u64, u64) {
        let files = append
            .delete_files
            .iter()
            .filter(|f| f.content_type() == content);
        files.fold((0, 0), |(n, rows), f| (n + 1, rows + f.record_count()))
    };
    let (pos_files, pos_rows) = count(DataContentType::PositionDeletes);
    let (eq_files, eq_rows) = count(DataContentType::EqualityDeletes);
    if !append.delete_files.is_empty() {
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
        props.insert(key.into(), (total(key) + added).to_string());
    }
    Summary {
        operation: append.operation(),
        additional_properties: props,
    }
}

/// The next metadata of `table` with `append` as its current snapshot.
async fn append_metadata(
    table: &CatalogTable,
    append: &RowDelta,
) -> Result<iceberg::spec::TableMetadata> {
    let meta = &table.metadata;
    let snapshot_id = new_snapshot_id();
    let sequence = meta.next_sequence_number();
    let dir = format!("{}/metadata", meta.location());
    let io = &table.file_io;
    let err = |what: &str| {
        let what = what.to_string();
        move |e| iceberg_err(what, e)
    };

    let mut manifests = Vec::new();
    for (files, deletes) in [(&append.data_files, false), (&append.delete_files, true)] {
        if files.is_empty() {
            continue;
        }
        let path = format!("{dir}/{}-m{}.avro", uuid::Uuid::new_v4(), manifests.len());
        let output = io.new_output(&path).map_err(err("manifest output"))?;
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
                .map_err(err("adding a file to a manifest"))?;
        }
        manifests.push(
            writer
                .write_manifest_file()
                .await
                .map_err(err("writing a manifest"))?,
        );
    }

    let list_path = format!("{dir}/snap-{snapshot_id}-1-{}.avro", uuid::Uuid::new_v4());
    let list_out = io
        .new_output(&list_path)
        .map_err(err("manifest list output"))?;
    let parent = meta.current_snapshot_id();
    let mut list = ManifestListWriter::v2(
        list_out
            .writer()
            .await
            .map_err(err("manifest list writer"))?,
        snapshot_id,
        parent,
        sequence,
    );
    let manifests = manifests.into_iter().chain(current_manifests(table).await?);
    list.add_manifests(manifests)
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
        .with_summary(summary(table, append))
        .with_schema_id(meta.current_schema_id())
        .build();
    let built = TableMetadataBuilder::new_from_metadata(
        meta.clone(),
        Some(table.metadata_location.clone()),
    )
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
