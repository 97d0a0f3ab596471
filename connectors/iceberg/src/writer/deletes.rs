//! Delete planning: for every key touched since the last commit, its
//! committed row is deleted — position mode: found through the key index;
//! equality mode: an equality delete only for keys some file's bloom filter
//! admits — plus the spilled rows a later change superseded; delete files go
//! to the partition of what they delete.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arrow_array::RecordBatch;
use iceberg::spec::{DataFile, Struct};
use tributary_catalog::{RowDelta, write_position_deletes};
use tributary_core::{Error, ErrorKind, Result};

use super::UpsertWriter;
use super::config::DeleteMode;

impl UpsertWriter {
    /// Spills what is buffered and plans and writes the deletes of every
    /// touched key's committed row; the rows found by position are kept
    /// for the index until the commit is durable. A committed file found
    /// gone (a rewrite replaced it and expiry deleted it before this writer
    /// followed the table) makes the writer follow the table and plan again.
    pub(super) async fn plan_delta(&mut self) -> Result<RowDelta> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.plan_once().await {
                Err(e) if e.kind() == ErrorKind::CommitConflict && attempt < 3 => {
                    self.others_commit = true;
                    self.table = self.catalog.load_table(&self.table.name).await?;
                    self.load_index().await?;
                }
                planned => return planned,
            }
        }
    }

    async fn plan_once(&mut self) -> Result<RowDelta> {
        self.spill().await?;
        // Position deletes planned on files a compaction has replaced fail
        // their commit (after writing it) and are planned again: while
        // another committer is active (the read-cost trigger compacts small
        // tables after nearly every commit), following the table first is
        // the cheaper path. A table nobody else commits to pays no extra
        // metadata read: the flag clears at the first plan that finds
        // nothing new.
        if self.others_commit
            && self.config.delete_mode == DeleteMode::Position
            && !self.reduction.is_empty()
        {
            let current = self.catalog.load_table(&self.table.name).await?;
            self.others_commit = current.metadata.current_snapshot_id() != self.index_at;
            if self.others_commit {
                self.table = current;
                self.load_index().await?;
            }
        }
        let (mut found, mut equality) = (BTreeMap::<Arc<str>, Vec<i64>>::new(), Vec::new());
        for key in self.reduction.keys() {
            match self.config.delete_mode {
                DeleteMode::Equality if self.index.may_exist(key) => equality.push(key.as_slice()),
                DeleteMode::Equality => {}
                DeleteMode::Position => {
                    if let Some((path, pos)) = self.index.lookup(key).await? {
                        found.entry(path).or_default().push(pos);
                    }
                }
            }
        }
        let equality = match equality.is_empty() {
            true => Vec::new(),
            false => self.write_equality_deletes(&equality).await?,
        };
        // Small touched files are written again without the rows instead.
        let removed = self.copy_on_write(&mut found).await?;
        let mut delta = RowDelta {
            // Only committed files can vanish under a rewrite; spills are ours.
            referenced_data_files: found.keys().map(|p| p.to_string()).collect(),
            planned_at_snapshot: self.index_at,
            exclusive: true,
            data_files: self
                .spills
                .iter()
                .chain(&self.rewritten)
                .map(|s| s.file.clone())
                .collect(),
            truncate: self.truncate_pending,
            removed,
            ..RowDelta::default()
        };
        let found: Vec<(Arc<str>, i64)> = found
            .into_iter()
            .flat_map(|(path, positions)| positions.into_iter().map(move |p| (path.clone(), p)))
            .collect();
        let deletes = found
            .iter()
            .map(|(p, pos)| (p.clone(), *pos))
            .chain(self.superseded_rows().map(|(p, pos)| (p.clone(), pos)))
            .collect();
        self.planned_delete_targets.clear();
        for (file, targets) in self.write_position_deletes(deletes).await? {
            self.planned_delete_targets
                .insert(file.file_path().to_string(), targets);
            delta.delete_files.push(file);
        }
        delta.delete_files.extend(equality);
        self.planned_found = found;
        Ok(delta)
    }

    /// The spilled rows superseded since the last commit, as (file, row).
    pub(super) fn superseded_rows(&self) -> impl Iterator<Item = (&Arc<str>, i64)> {
        self.reduction
            .superseded()
            .iter()
            .map(|&(file, pos)| (self.spills[file].summary.path(), pos))
    }

    /// Writes the key columns of `keys` as equality-delete files, one per
    /// partition (in equality mode the partition follows from the key).
    async fn write_equality_deletes(&self, keys: &[&[u8]]) -> Result<Vec<DataFile>> {
        let file_schema = &self.columns.file_schema;
        let key_columns = self.index.key_columns();
        let fields: Vec<_> = key_columns
            .iter()
            .map(|&i| file_schema.field(i).clone())
            .collect();
        let types: Vec<_> = fields.iter().map(|f| f.data_type().clone()).collect();
        let columns = self.index.decode(keys, &types)?;
        let batch = RecordBatch::try_new(Arc::new(arrow_schema::Schema::new(fields)), columns)?;
        let current = self.table.metadata.current_schema();
        let ids: Vec<i32> = key_columns
            .iter()
            .map(|&i| current.as_struct().fields()[i].id)
            .collect();
        let mut files = Vec::new();
        for (partition, rows) in self.partitioner.group(&batch)? {
            let rows = arrow_array::UInt32Array::from(rows);
            let part = arrow_select::take::take_record_batch(&batch, &rows)?;
            let path = self.new_file_path("eq-deletes");
            let file = tributary_catalog::write_equality_deletes(
                &self.table.file_io,
                &path,
                &part,
                ids.clone(),
                partition,
                self.partitioner.spec_id(),
            )
            .await?;
            files.push(file);
        }
        Ok(files)
    }

    /// Writes position deletes, one file per partition of the data files
    /// they point at; each file with the data files it names.
    async fn write_position_deletes(
        &self,
        deletes: Vec<(Arc<str>, i64)>,
    ) -> Result<Vec<(DataFile, HashSet<Arc<str>>)>> {
        // Partitions of the files deletes can name: committed ones, then spills.
        let spilled: HashMap<&str, &Struct> = self
            .spills
            .iter()
            .map(|s| (s.file.file_path(), s.file.partition()))
            .collect();
        let mut by_partition: HashMap<&Struct, Vec<(String, i64)>> = HashMap::new();
        let mut targets: HashMap<&Struct, HashSet<Arc<str>>> = HashMap::new();
        for (path, pos) in deletes {
            let partition = spilled
                .get(&*path)
                .copied()
                .or_else(|| self.committed_files.get(&*path).map(|f| &f.partition))
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::Unexpected,
                        format!("a delete points at {path}, which is not a live data file"),
                    )
                })?;
            by_partition
                .entry(partition)
                .or_default()
                .push((path.to_string(), pos));
            targets.entry(partition).or_default().insert(path);
        }
        let mut files = Vec::new();
        for (partition, deletes) in by_partition {
            let path = self.new_file_path("deletes");
            let file_io = &self.table.file_io;
            let spec = self.partitioner.spec_id();
            let file =
                write_position_deletes(file_io, &path, deletes, partition.clone(), spec).await?;
            files.push((file, targets.remove(partition).unwrap_or_default()));
        }
        Ok(files)
    }
}
