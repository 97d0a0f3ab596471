//! Snapshot commits built from the spec types: a new manifest for the added
//! files, a manifest list carrying the parent's manifests forward, a snapshot
//! with summary totals, and the next metadata version through the catalog.
//! A lost race reloads the table and re-applies the commit on the new base.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iceberg::spec::{
    DataFile, FormatVersion, MAIN_BRANCH, ManifestFile, ManifestList, ManifestListWriter,
    ManifestWriterBuilder, Operation, Snapshot, Summary, TableMetadataBuilder,
};
use tributary_core::{Error, ErrorKind, Result};

use crate::{CatalogTable, HadoopCatalog, iceberg_err};

/// Data files to add in one snapshot, with extra summary properties (source
/// offsets, watermarks).
#[derive(Debug, Clone, Default)]
pub struct AppendCommit {
    pub data_files: Vec<DataFile>,
    pub properties: HashMap<String, String>,
}

const MAX_ATTEMPTS: u32 = 10;

/// Commits `append` on top of the newest version of `table`, retrying with
/// bounded backoff when another writer commits first.
pub async fn commit_append(
    catalog: &HadoopCatalog,
    table: &CatalogTable,
    append: &AppendCommit,
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
fn summary(table: &CatalogTable, append: &AppendCommit) -> Summary {
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
    for key in [
        "total-delete-files",
        "total-position-deletes",
        "total-equality-deletes",
    ] {
        props.insert(key.into(), total(key).to_string());
    }
    Summary {
        operation: Operation::Append,
        additional_properties: props,
    }
}

/// The next metadata of `table` with `append` as its current snapshot.
async fn append_metadata(
    table: &CatalogTable,
    append: &AppendCommit,
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

    let manifest_path = format!("{dir}/{}-m0.avro", uuid::Uuid::new_v4());
    let output = io
        .new_output(&manifest_path)
        .map_err(err("manifest output"))?;
    let mut writer = ManifestWriterBuilder::new(
        output,
        Some(snapshot_id),
        meta.current_schema().clone(),
        meta.default_partition_spec().as_ref().clone(),
    )
    .build_v2_data();
    for file in &append.data_files {
        writer
            .add_file(file.clone(), sequence)
            .map_err(err("adding a data file"))?;
    }
    let manifest = writer
        .write_manifest_file()
        .await
        .map_err(err("writing the manifest"))?;

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
    let manifests = std::iter::once(manifest).chain(current_manifests(table).await?);
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
