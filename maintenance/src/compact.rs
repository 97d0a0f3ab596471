//! Compaction: per partition, small files (fragments) and files with many deleted rows
//! are bin-packed into groups; each group is read with its deletes applied
//! and written back as files of about the target size (with statistics and
//! key sidecars, so the writer's index reads kilobytes), then committed as a
//! rewrite planned at the snapshot it read (groups commit one after another:
//! partial progress survives a failure). The rewrite says where each old
//! row went, so position deletes a live writer commits meanwhile are
//! rebased, never lost.

use std::collections::HashMap;
use std::sync::Arc;

use iceberg::spec::{DataContentType, Struct};
use tributary_catalog::{
    Catalog, CatalogTable, FileKeys, LiveFile, ParquetFile, RewriteFiles, RowMap, commit_rewrite,
    write_key_sidecar,
};
use tributary_core::Result;

use crate::deletes::{TableDeletes, encode};

/// One group of files of one partition to rewrite together.
#[derive(Debug, Clone)]
pub struct FileGroup {
    pub partition: Struct,
    pub files: Vec<LiveFile>,
    pub bytes: u64,
}

/// Which files compaction takes.
#[derive(Debug, Clone, Copy)]
pub struct CompactionSettings {
    pub target_file_bytes: u64,
    /// Files under this size are small.
    pub small_bytes: u64,
    /// A file whose deleted rows reach this fraction is rewritten alone too.
    pub delete_ratio: f64,
    /// Bytes read per group at most (bounds one commit's work).
    pub max_group_bytes: u64,
}

/// The groups worth rewriting in `data` (live data files).
pub fn plan(data: &[LiveFile], deletes: &TableDeletes, s: &CompactionSettings) -> Vec<FileGroup> {
    let small = s.small_bytes;
    let mut by_partition: HashMap<Struct, Vec<(LiveFile, bool)>> = HashMap::new();
    for f in data {
        let rows = f.file.record_count().max(1) as f64;
        let deleted = deletes.deleted_positions(f).len() as f64
            + if deletes.equality_for(f).next().is_some() {
                1.0
            } else {
                0.0
            };
        let heavy = deleted / rows >= s.delete_ratio;
        if f.file.file_size_in_bytes() < small || heavy {
            let part = f.file.partition().clone();
            by_partition
                .entry(part)
                .or_default()
                .push((f.clone(), heavy));
        }
    }
    let mut groups = Vec::new();
    for (partition, mut files) in by_partition {
        files.sort_by_key(|(f, _)| f.file.file_path().to_string());
        let mut current: Option<(FileGroup, bool)> = None;
        for (f, heavy) in files {
            let size = f.file.file_size_in_bytes();
            if let Some((g, _)) = &current
                && g.bytes + size > s.max_group_bytes
            {
                groups.extend(current.take().filter(|(g, h)| g.files.len() > 1 || *h));
            }
            let (g, h) = current.get_or_insert_with(|| {
                let g = FileGroup {
                    partition: partition.clone(),
                    files: Vec::new(),
                    bytes: 0,
                };
                (g, false)
            });
            g.files.push(f);
            g.bytes += size;
            *h |= heavy;
        }
        groups.extend(current.filter(|(g, h)| g.files.len() > 1 || *h));
    }
    groups.into_iter().map(|(g, _)| g).collect()
}

/// What one rewritten group did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GroupResult {
    pub files_before: usize,
    pub bytes_before: u64,
    pub files_after: usize,
    pub bytes_after: u64,
    pub rows: u64,
    /// Position-delete files that named only this group's files, removed
    /// with them.
    pub deletes_applied: usize,
}

/// Rewrites `group` of `table` (planned at its current snapshot) and
/// commits it; returns the new table version.
pub async fn rewrite_group(
    catalog: &dyn Catalog,
    table: &CatalogTable,
    planned_at: i64,
    deletes: &TableDeletes,
    group: &FileGroup,
    target_file_bytes: u64,
) -> Result<(CatalogTable, GroupResult)> {
    let schema = table.metadata.current_schema();
    // The key columns in data-file order: the writer's index encoding.
    let mut key_ids: Vec<i32> = schema.identifier_field_ids().collect();
    key_ids.sort_by_key(|id| schema.as_struct().fields().iter().position(|f| f.id == *id));
    let spec = table.metadata.default_partition_spec_id();
    let mut out = OutputFiles::new(table, group.partition.clone(), spec, target_file_bytes);
    // All live rows of the group, sorted by key, so the new files have
    // disjoint key ranges: the writer's index then finds a key's file by
    // binary search instead of testing every file's filter. Memory: the
    // group's rows (bounded by `max_group_bytes`).
    let (mut batches, mut origin) = (Vec::new(), Vec::new());
    let mut lives = Vec::with_capacity(group.files.len());
    for (n, f) in group.files.iter().enumerate() {
        let (file_batches, live) = deletes.live_rows(table, f).await?;
        origin.extend(
            live.iter()
                .enumerate()
                .filter(|(_, l)| **l)
                .map(|(pos, _)| (n, pos)),
        );
        // Files written before a schema change (a column added, a key
        // widened) are read in the current schema, so they merge.
        for b in file_batches.into_iter().filter(|b| b.num_rows() > 0) {
            batches.push(tributary_catalog::project_to_schema(&b, schema)?);
        }
        lives.push(live);
    }
    let mut map = RowMap::default();
    let mut moved: Vec<Vec<Option<(u32, u32)>>> =
        lives.iter().map(|l| vec![None; l.len()]).collect();
    if let Some(first) = batches.first() {
        let all = arrow_select::concat::concat_batches(&first.schema(), &batches)?;
        drop(batches);
        let order = key_order(&all, &key_ids)?;
        let sorted = arrow_select::take::take_record_batch(&all, &order)?;
        drop(all);
        // Written in slices so files roll at the target size.
        let mut slots = Vec::with_capacity(sorted.num_rows());
        let step = 1024;
        for start in (0..sorted.num_rows()).step_by(step) {
            let len = step.min(sorted.num_rows() - start);
            slots.extend(out.write(&sorted.slice(start, len), &key_ids).await?);
        }
        for (k, slot) in slots.into_iter().enumerate() {
            let (file, pos) = origin[order.value(k) as usize];
            moved[file][pos] = Some(slot);
        }
    }
    for (f, m) in group.files.iter().zip(moved) {
        map.moved.insert(f.file.file_path().to_string(), m);
    }
    let (added, new_files) = out.finish().await?;
    map.new_files = new_files;
    // Position-delete files naming only this group's files are applied by
    // it: replaced in the same commit, not left for readers to open until
    // a later run drops them.
    let paths: std::collections::HashSet<&str> =
        group.files.iter().map(|f| f.file.file_path()).collect();
    let applied = deletes.applied_by(&paths);
    let result = GroupResult {
        files_before: group.files.len(),
        bytes_before: group.bytes,
        files_after: added.len(),
        bytes_after: added.iter().map(|f| f.file_size_in_bytes()).sum(),
        rows: added.iter().map(|f| f.record_count()).sum(),
        deletes_applied: applied.len(),
    };
    let mut replaced: Vec<_> = group.files.iter().map(|f| f.file.clone()).collect();
    replaced.extend(applied);
    let rewrite = RewriteFiles {
        replaced,
        added,
        starting_snapshot_id: planned_at,
        rows: Some(Arc::new(map)),
        ..RewriteFiles::default()
    };
    let table = commit_rewrite(catalog, table, &rewrite).await?;
    Ok((table, result))
}

/// The permutation that sorts `batch` by the columns `key_ids` (rows with
/// no such columns keep their order).
fn key_order(
    batch: &arrow_array::RecordBatch,
    key_ids: &[i32],
) -> Result<arrow_array::UInt32Array> {
    let mut order: Vec<u32> = (0..batch.num_rows() as u32).collect();
    if let Some(rows) = encode(batch, key_ids)? {
        order.sort_by(|&a, &b| rows.row(a as usize).cmp(&rows.row(b as usize)));
    }
    Ok(arrow_array::UInt32Array::from(order))
}

/// Rolling output: files of about `target` bytes, each with its key sidecar.
struct OutputFiles<'a> {
    table: &'a CatalogTable,
    partition: Struct,
    spec: i32,
    target: u64,
    current: Option<(ParquetFile, String, Vec<Vec<u8>>)>,
    done: Vec<iceberg::spec::DataFile>,
    paths: Vec<(String, Struct)>,
}

impl<'a> OutputFiles<'a> {
    fn new(table: &'a CatalogTable, partition: Struct, spec: i32, target: u64) -> Self {
        OutputFiles {
            table,
            partition,
            spec,
            target,
            current: None,
            done: Vec::new(),
            paths: Vec::new(),
        }
    }

    /// Writes `batch`; returns (new file index, position) of each row.
    async fn write(
        &mut self,
        batch: &arrow_array::RecordBatch,
        key_ids: &[i32],
    ) -> Result<Vec<(u32, u32)>> {
        if batch.num_rows() == 0 {
            return Ok(Vec::new());
        }
        if self
            .current
            .as_ref()
            .is_some_and(|(f, _, _)| f.written_bytes() as u64 >= self.target)
        {
            self.roll().await?;
        }
        if self.current.is_none() {
            let path = format!(
                "{}/data/{}-compacted.parquet",
                self.table.metadata.location(),
                uuid::Uuid::new_v4()
            );
            let file =
                ParquetFile::create(&self.table.file_io, &path, &batch.schema(), None).await?;
            self.current = Some((file, path, Vec::new()));
        }
        let index = self.paths.len() as u32;
        let (file, _, keys) = self.current.as_mut().expect("opened above");
        let first = file.rows() as u32;
        file.write(batch).await?;
        if let Some(rows) = encode(batch, key_ids)? {
            keys.extend(rows.iter().map(|r| r.as_ref().to_vec()));
        }
        Ok((0..batch.num_rows() as u32)
            .map(|i| (index, first + i))
            .collect())
    }

    async fn roll(&mut self) -> Result<()> {
        let Some((file, path, keys)) = self.current.take() else {
            return Ok(());
        };
        let written = file
            .finish(DataContentType::Data, self.partition.clone(), self.spec)
            .await?;
        if let Some(df) = written {
            if !keys.is_empty() {
                let summary =
                    FileKeys::build(Arc::from(path.as_str()), keys.iter().map(Vec::as_slice))?;
                write_key_sidecar(&self.table.file_io, &summary).await?;
            }
            self.done.push(df);
            self.paths.push((path, self.partition.clone()));
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<(Vec<iceberg::spec::DataFile>, Vec<(String, Struct)>)> {
        self.roll().await?;
        Ok((self.done, self.paths))
    }
}
