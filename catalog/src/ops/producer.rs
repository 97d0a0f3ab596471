//! What every snapshot-producing operation shares: snapshot ids, the
//! current manifests, manifest writers, summary totals, and the step that
//! writes the manifest list and makes the new snapshot current.

use std::collections::{HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use iceberg::spec::{
    DataContentType, DataFile, FormatVersion, MAIN_BRANCH, ManifestContentType, ManifestFile,
    ManifestList, ManifestListWriter, ManifestWriter, ManifestWriterBuilder, Operation, Snapshot,
    Summary, TableMetadata, TableMetadataBuilder,
};
use tributary_core::{Error, ErrorKind, Result};

use super::merge::{MergePolicy, merge_manifests};
use super::rewrite::AttemptCache;
use crate::{CatalogTable, iceberg_err};

pub(crate) fn new_snapshot_id() -> i64 {
    (uuid::Uuid::new_v4().as_u64_pair().0 & (i64::MAX as u64)) as i64
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The manifests of the current snapshot (empty for a new table).
pub async fn current_manifests(table: &CatalogTable) -> Result<Vec<ManifestFile>> {
    match table.metadata.current_snapshot() {
        Some(snapshot) => snapshot_manifests(table, snapshot).await,
        None => Ok(Vec::new()),
    }
}

/// The manifests of `snapshot` of `table`.
pub async fn snapshot_manifests(
    table: &CatalogTable,
    snapshot: &iceberg::spec::Snapshot,
) -> Result<Vec<ManifestFile>> {
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

/// A live file of a snapshot with what its manifest entry says about it.
#[derive(Debug, Clone)]
pub struct LiveFile {
    pub file: DataFile,
    /// Data sequence number: which deletes apply to it (data) or which data
    /// it applies to (deletes).
    pub sequence: i64,
    /// The snapshot that added the file.
    pub snapshot_id: i64,
}

/// Every live file of the current snapshot, data and deletes.
pub async fn live_entries(table: &CatalogTable) -> Result<Vec<LiveFile>> {
    let mut out = Vec::new();
    for manifest in current_manifests(table).await? {
        let loaded = manifest
            .load_manifest(&table.file_io)
            .await
            .map_err(|e| iceberg_err("loading a manifest", e))?;
        for entry in loaded.entries().iter().filter(|e| e.is_alive()) {
            out.push(LiveFile {
                file: entry.data_file().clone(),
                sequence: entry.sequence_number().unwrap_or(manifest.sequence_number),
                snapshot_id: entry.snapshot_id().unwrap_or(manifest.added_snapshot_id),
            });
        }
    }
    Ok(out)
}

/// The live data files and delete files of the current snapshot.
pub async fn live_files(table: &CatalogTable) -> Result<(Vec<DataFile>, Vec<DataFile>)> {
    let (data, deletes): (Vec<LiveFile>, Vec<LiveFile>) = live_entries(table)
        .await?
        .into_iter()
        .partition(|f| f.file.content_type() == DataContentType::Data);
    let files = |v: Vec<LiveFile>| v.into_iter().map(|f| f.file).collect();
    Ok((files(data), files(deletes)))
}

/// A writer of one new manifest of snapshot `snapshot_id` (data or
/// deletes) at a fresh path under the table's metadata directory.
pub(crate) fn manifest_writer(
    base: &CatalogTable,
    snapshot_id: i64,
    deletes: bool,
    tag: &str,
) -> Result<ManifestWriter> {
    let meta = &base.metadata;
    let path = format!(
        "{}/metadata/{}-{tag}.avro",
        meta.location(),
        uuid::Uuid::new_v4()
    );
    let output = base
        .file_io
        .new_output(&path)
        .map_err(|e| iceberg_err("manifest output", e))?;
    let builder = ManifestWriterBuilder::new(
        output,
        Some(snapshot_id),
        meta.current_schema().clone(),
        meta.default_partition_spec().as_ref().clone(),
    );
    Ok(if deletes {
        builder.build_v2_deletes()
    } else {
        builder.build_v2_data()
    })
}

pub(crate) async fn close_manifest(writer: ManifestWriter) -> Result<ManifestFile> {
    writer
        .write_manifest_file()
        .await
        .map_err(|e| iceberg_err("writing a manifest", e))
}

/// The manifests a snapshot writes: one per content (data, deletes),
/// each opened on first use. One each, not one per rewritten manifest:
/// a reader opens every manifest of the current snapshot.
pub(crate) struct SnapshotManifests<'a> {
    base: &'a CatalogTable,
    snapshot_id: i64,
    tag: &'static str,
    writers: [Option<ManifestWriter>; 2],
}

impl<'a> SnapshotManifests<'a> {
    pub(crate) fn new(base: &'a CatalogTable, snapshot_id: i64, tag: &'static str) -> Self {
        SnapshotManifests {
            base,
            snapshot_id,
            tag,
            writers: [None, None],
        }
    }

    /// The writer of data (`deletes` false) or delete entries.
    pub(crate) fn writer(&mut self, deletes: bool) -> Result<&mut ManifestWriter> {
        let slot = &mut self.writers[usize::from(deletes)];
        if slot.is_none() {
            let tag = format!("{}-{}", self.tag, if deletes { "deletes" } else { "data" });
            *slot = Some(manifest_writer(self.base, self.snapshot_id, deletes, &tag)?);
        }
        Ok(slot.as_mut().expect("set above"))
    }

    /// Adds `files` as new in this snapshot at data sequence `sequence`.
    pub(crate) fn add(&mut self, files: &[DataFile], deletes: bool, sequence: i64) -> Result<()> {
        for f in files {
            self.writer(deletes)?
                .add_file(f.clone(), sequence)
                .map_err(|e| iceberg_err("adding a file to a manifest", e))?;
        }
        Ok(())
    }

    /// Marks `removed` (paths of live data or delete files) deleted in
    /// this snapshot: every entry of a current manifest holding one of them
    /// goes into this snapshot's manifest of its content (the removed as
    /// deleted, the rest as existing, keeping their snapshot ids and
    /// sequence numbers); the other manifests are returned to be carried
    /// as they are, with what left the table. A path that is not live
    /// fails `ValidationFailed` (another commit removed it: re-plan).
    pub(crate) async fn remove(
        &mut self,
        removed: &HashSet<&str>,
        cache: &AttemptCache,
    ) -> Result<(Vec<ManifestFile>, FileCounts)> {
        let (mut carried, mut gone) = (Vec::new(), FileCounts::default());
        let mut found: HashSet<&str> = HashSet::new();
        for manifest in current_manifests(self.base).await? {
            let loaded = cache.manifest(self.base, &manifest).await?;
            let hit = loaded
                .entries()
                .iter()
                .any(|e| e.is_alive() && removed.contains(e.data_file().file_path()));
            if !hit {
                carried.push(manifest);
                continue;
            }
            let deletes = manifest.content == ManifestContentType::Deletes;
            let snapshot_id = self.snapshot_id;
            let w = self.writer(deletes)?;
            for e in loaded.entries().iter().filter(|e| e.is_alive()) {
                let (df, seq, file_seq) = (
                    e.data_file().clone(),
                    e.sequence_number().unwrap_or(0),
                    e.file_sequence_number,
                );
                match removed.get(df.file_path()) {
                    Some(path) => {
                        found.insert(path);
                        gone.add(&df);
                        w.add_delete_file(df, seq, file_seq)
                    }
                    None => w.add_existing_file(
                        df,
                        e.snapshot_id().unwrap_or(snapshot_id),
                        seq,
                        file_seq,
                    ),
                }
                .map_err(|e| iceberg_err("rewriting a manifest", e))?;
            }
        }
        if let Some(missing) = removed.iter().find(|p| !found.contains(**p)) {
            return Err(Error::new(
                ErrorKind::ValidationFailed,
                format!("file {missing} to replace is no longer in the table; re-plan"),
            ));
        }
        Ok((carried, gone))
    }

    pub(crate) async fn close(self) -> Result<Vec<ManifestFile>> {
        let mut written = Vec::new();
        for w in self.writers.into_iter().flatten() {
            written.push(close_manifest(w).await?);
        }
        Ok(written)
    }
}

/// Counts of files and rows added to or removed from a table.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FileCounts {
    pub data_files: u64,
    pub records: u64,
    pub position_delete_files: u64,
    pub equality_delete_files: u64,
    pub position_deletes: u64,
    pub equality_deletes: u64,
    /// Bytes of all files, data and deletes.
    pub size: u64,
}

impl FileCounts {
    pub fn of<'a>(files: impl IntoIterator<Item = &'a DataFile>) -> FileCounts {
        let mut c = FileCounts::default();
        for f in files {
            c.add(f);
        }
        c
    }

    pub fn add(&mut self, f: &DataFile) {
        self.size += f.file_size_in_bytes();
        match f.content_type() {
            DataContentType::Data => {
                self.data_files += 1;
                self.records += f.record_count();
            }
            DataContentType::PositionDeletes => {
                self.position_delete_files += 1;
                self.position_deletes += f.record_count();
            }
            DataContentType::EqualityDeletes => {
                self.equality_delete_files += 1;
                self.equality_deletes += f.record_count();
            }
        }
    }

    fn delete_files(&self) -> u64 {
        self.position_delete_files + self.equality_delete_files
    }
}

/// A snapshot summary with Iceberg's property names: what this snapshot
/// added and removed, and the table totals (the parent's plus added minus
/// removed), next to the caller's own properties.
pub fn summary(
    operation: Operation,
    parent: Option<&HashMap<String, String>>,
    added: &FileCounts,
    removed: &FileCounts,
    properties: &HashMap<String, String>,
) -> Summary {
    let total = |key: &str| -> u64 {
        parent
            .and_then(|p| p.get(key))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let mut props = properties.clone();
    let mut put = |key: &str, value: u64| {
        props.insert(key.to_string(), value.to_string());
    };
    let changes = [
        ("data-files", added.data_files, removed.data_files),
        ("records", added.records, removed.records),
        ("files-size", added.size, removed.size),
        ("delete-files", added.delete_files(), removed.delete_files()),
        (
            "position-delete-files",
            added.position_delete_files,
            removed.position_delete_files,
        ),
        (
            "equality-delete-files",
            added.equality_delete_files,
            removed.equality_delete_files,
        ),
        (
            "position-deletes",
            added.position_deletes,
            removed.position_deletes,
        ),
        (
            "equality-deletes",
            added.equality_deletes,
            removed.equality_deletes,
        ),
    ];
    for (name, add, remove) in changes {
        let always = matches!(name, "data-files" | "records" | "files-size");
        if add > 0 || always {
            put(&format!("added-{name}"), add);
        }
        if remove > 0 {
            // Iceberg's names: deleted data files and records, removed the rest.
            let verb = match name {
                "data-files" | "records" => "deleted",
                _ => "removed",
            };
            put(&format!("{verb}-{name}"), remove);
        }
    }
    for (name, add, remove) in [
        changes[0], changes[1], changes[2], changes[3], changes[6], changes[7],
    ] {
        let key = format!("total-{name}");
        put(&key, (total(&key) + add).saturating_sub(remove));
    }
    Summary {
        operation,
        additional_properties: props,
    }
}

/// The parent's `tributary.*` summary properties (the writer's checkpoint
/// and round), which snapshots that change no rows carry forward so the
/// newest snapshot still tells a writer where to resume.
pub(crate) fn carried_state(meta: &TableMetadata) -> HashMap<String, String> {
    meta.current_snapshot()
        .into_iter()
        .flat_map(|s| s.summary().additional_properties.iter())
        .filter(|(k, _)| k.starts_with("tributary."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Writes the manifest list of a new snapshot — the manifests this commit
/// `written` and those `carried` from the parent, merged by the table's
/// manifest-merge policy — and returns the metadata with that snapshot
/// current on `main`.
pub(crate) async fn finish_snapshot(
    base: &CatalogTable,
    snapshot_id: i64,
    sequence: i64,
    written: Vec<ManifestFile>,
    carried: Vec<ManifestFile>,
    summary: Summary,
) -> Result<TableMetadata> {
    let meta = &base.metadata;
    let policy = MergePolicy::of(meta);
    // A parent's manifest holding only deleted entries (what a rewrite
    // leaves of the manifests it emptied) describes the parent's change,
    // not the table: dropped, as Iceberg Java does — else every compaction
    // leaves one more manifest for each reader to open.
    let carried = carried
        .into_iter()
        .filter(|m| m.has_added_files() || m.has_existing_files())
        .collect();
    let manifests = merge_manifests(base, snapshot_id, written, carried, policy).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(
        data_files: u64,
        records: u64,
        pos: (u64, u64),
        eq: (u64, u64),
        size: u64,
    ) -> FileCounts {
        FileCounts {
            data_files,
            records,
            position_delete_files: pos.0,
            position_deletes: pos.1,
            equality_delete_files: eq.0,
            equality_deletes: eq.1,
            size,
        }
    }

    #[test]
    fn totals_are_the_parents_plus_added_minus_removed() {
        let first = summary(
            Operation::Append,
            None,
            &counts(2, 10, (0, 0), (0, 0), 100),
            &FileCounts::default(),
            &HashMap::from([("tributary.round".to_string(), "1".to_string())]),
        );
        let p = &first.additional_properties;
        assert_eq!(p["total-data-files"], "2");
        assert_eq!(p["total-records"], "10");
        assert_eq!(p["total-files-size"], "100");
        assert_eq!(p["total-delete-files"], "0");
        assert_eq!(p["tributary.round"], "1");
        assert!(!p.contains_key("added-position-deletes"));

        let delta = summary(
            Operation::Overwrite,
            Some(p),
            &counts(1, 3, (1, 4), (1, 2), 50),
            &FileCounts::default(),
            &HashMap::new(),
        );
        let p = delta.additional_properties.clone();
        assert_eq!(p["added-position-deletes"], "4");
        assert_eq!(p["added-equality-deletes"], "2");
        assert_eq!(p["added-delete-files"], "2");
        assert_eq!(p["total-delete-files"], "2");
        assert_eq!(p["total-position-deletes"], "4");
        assert_eq!(p["total-records"], "13");
        assert_eq!(p["total-files-size"], "150");

        // A rewrite: two data files and the position deletes out, one in.
        let rewrite = summary(
            Operation::Replace,
            Some(&p),
            &counts(1, 9, (0, 0), (0, 0), 60),
            &counts(2, 10, (1, 4), (0, 0), 90),
            &HashMap::new(),
        );
        let r = &rewrite.additional_properties;
        assert_eq!(r["deleted-data-files"], "2");
        assert_eq!(r["deleted-records"], "10");
        assert_eq!(r["removed-delete-files"], "1");
        assert_eq!(r["removed-position-deletes"], "4");
        assert_eq!(r["total-data-files"], "2");
        assert_eq!(r["total-records"], "12");
        assert_eq!(r["total-delete-files"], "1");
        assert_eq!(r["total-position-deletes"], "0");
        assert_eq!(r["total-equality-deletes"], "2");
        assert_eq!(r["total-files-size"], "120");
    }
}
