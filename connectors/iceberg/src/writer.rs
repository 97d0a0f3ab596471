//! `UpsertWriter`: applies CDC batches to an Iceberg v2 table.
//!
//! Between commits, events are reduced per primary key to their final state
//! (a key change is a delete of the old key plus an upsert of the new). When
//! the buffered rows reach `target_file_bytes` they are written as a data
//! file right away (a spill; not yet committed), so memory stays bounded; a
//! later change of a spilled key deletes its spilled row by position in the
//! same commit. At commit the rest is written as one more data file, the
//! touched keys' committed rows are deleted (position mode: found through
//! the key index; equality mode: an equality delete only for keys the bloom
//! filters say may exist), and everything is committed as one snapshot with
//! the source checkpoint in its summary.
//!
//! Exactly-once: the checkpoint committed with the data is read back on
//! open; change events at or before its position are skipped, so a source
//! resumed there never applies a change twice. A crash before the catalog
//! commit leaves only unreferenced files behind (orphans for maintenance).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{Array, RecordBatch};
use arrow_row::SortField;
use async_trait::async_trait;
use iceberg::spec::{DataContentType, DataFile, Struct};
use tributary_catalog::{
    Catalog, CatalogTable, RowDelta, TableName, commit_row_delta, commit_schema, live_files,
    write_position_deletes,
};
use tributary_core::{
    ChangeBatch, Checkpoint, Error, ErrorKind, Image, Prepared, Result, SchemaChange, Sink,
    TableSchema,
};

use crate::key_index::{FileKeys, IndexStats, KeyIndex};
use crate::partition::{PartitionField, Partitioner, spec_fields, unbound_spec};
use crate::types::{ColumnMap, ColumnPolicy, evolve, iceberg_schema, to_file_batch};

/// Snapshot-summary property holding the committed source checkpoint (JSON).
pub const CHECKPOINT_PROPERTY: &str = "tributary.checkpoint";

/// How replaced and deleted rows are removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeleteMode {
    /// Position deletes for the exact rows (default; every reader reads them).
    #[default]
    Position,
    /// Flink-compatible equality deletes on the key, written only for keys
    /// the bloom filters say may exist already; new keys get none.
    Equality,
}

/// Writer settings. Sizes are in-memory Arrow bytes (Parquet files come out
/// smaller).
#[derive(Debug, Clone)]
pub struct UpsertConfig {
    pub delete_mode: DeleteMode,
    /// A commit is due this long after the previous one (default 10 s)…
    pub commit_interval: Duration,
    /// …or once this many changes are buffered (default 1 M)…
    pub commit_rows: usize,
    /// …or once this many bytes were buffered or spilled (default 512 MiB).
    pub commit_bytes: usize,
    /// Buffered rows are written out as a data file at this size (default
    /// 128 MiB): the bound on buffered row memory, and the data file size.
    pub target_file_bytes: usize,
    /// Parquet row-group size in rows (default 1 Mi).
    pub row_group_rows: usize,
    /// Source columns Iceberg cannot follow (default: fail).
    pub column_policy: ColumnPolicy,
    /// With nothing to write, a due commit still records the advanced source
    /// position, at most this often (default 5 min), so an idle table's
    /// position never falls behind the source's retention (purged binlogs).
    pub idle_commit_interval: Duration,
    /// Partition spec of a table the writer creates (default: none). An
    /// existing table keeps its spec; a different one here is an error.
    pub partition_by: Vec<PartitionField>,
}

impl Default for UpsertConfig {
    fn default() -> Self {
        UpsertConfig {
            delete_mode: DeleteMode::Position,
            commit_interval: Duration::from_secs(10),
            commit_rows: 1 << 20,
            commit_bytes: 512 << 20,
            target_file_bytes: 128 << 20,
            row_group_rows: 1 << 20,
            column_policy: ColumnPolicy::Fail,
            idle_commit_interval: Duration::from_secs(300),
            partition_by: Vec::new(),
        }
    }
}

impl UpsertConfig {
    /// Checks the settings before anything connects.
    pub fn validate(&self) -> Result<()> {
        let zero = [
            ("commit_interval", self.commit_interval.is_zero()),
            ("commit_rows", self.commit_rows == 0),
            ("commit_bytes", self.commit_bytes == 0),
            ("target_file_bytes", self.target_file_bytes == 0),
            ("row_group_rows", self.row_group_rows == 0),
        ];
        match zero.iter().find(|(_, z)| *z) {
            Some((name, _)) => Err(Error::invalid_config(format!(
                "iceberg sink: {name} must be greater than zero"
            ))),
            None => Ok(()),
        }
    }

    /// Checks the partition spec against the source table: the columns
    /// exist, and in equality mode they are key columns (an equality delete
    /// applies only in its own partition, so a row must never change
    /// partition without changing key).
    pub fn validate_for(&self, source: &TableSchema) -> Result<()> {
        self.validate()?;
        let names: Vec<&str> = self
            .partition_by
            .iter()
            .map(|f| f.column.as_str())
            .collect();
        check_partition_columns(&names, source, self.delete_mode, "partition_by")
    }
}

/// See `UpsertConfig::validate_for`; `what` names the spec in errors.
fn check_partition_columns(
    columns: &[&str],
    source: &TableSchema,
    mode: DeleteMode,
    what: &str,
) -> Result<()> {
    for &c in columns {
        let Some(i) = source.columns.iter().position(|col| col.name == c) else {
            return Err(Error::invalid_config(format!(
                "{what}: {} has no column {c:?}",
                source.table
            )));
        };
        if mode == DeleteMode::Equality && !source.primary_key.contains(&i) {
            return Err(Error::invalid_config(format!(
                "{what}: equality delete mode needs every partition column to be a key column,                  and {c:?} is not in the primary key of {}: an update of {c} would move the row                  to another partition, where the equality delete of its old row does not apply.                  Partition by key columns only, or use delete_mode = \"position\"",
                source.table
            )));
        }
    }
    Ok(())
}

/// The final state of a key touched since the last commit.
#[derive(Debug, Clone, Copy)]
enum KeyState {
    Deleted,
    /// Row `.1` of buffered batch `.0`.
    Buffered(usize, usize),
    /// Row `.1` of spill file `.0`.
    Spilled(usize, i64),
}

/// A data file written before its commit.
struct Spill {
    file: DataFile,
    summary: FileKeys,
    /// Encoded keys in row order.
    keys: Vec<Vec<u8>>,
}

pub struct UpsertWriter {
    catalog: Arc<dyn Catalog>,
    table: CatalogTable,
    config: UpsertConfig,
    source: Arc<TableSchema>,
    columns: ColumnMap,
    /// Finds the live row of a key in committed files.
    index: KeyIndex,
    partitioner: Partitioner,
    /// The partition of every committed live data file (deletes go there).
    file_partitions: HashMap<Arc<str>, Struct>,
    state: HashMap<Vec<u8>, KeyState>,
    buffered: Vec<RecordBatch>,
    buffered_bytes: usize,
    spills: Vec<Spill>,
    /// Rows of spill files whose key changed again after the spill.
    superseded: Vec<(Arc<str>, i64)>,
    changes_since_commit: usize,
    bytes_since_commit: usize,
    last_commit: Instant,
    last_snapshot: Instant,
    committed: Option<Checkpoint>,
    /// Committed rows the prepared deletes remove (the index marks them
    /// once the commit is durable).
    planned_found: Vec<(Arc<str>, i64)>,
}

impl UpsertWriter {
    /// Opens (creating if needed) the table for `source` in position mode.
    pub async fn open(
        catalog: Arc<dyn Catalog>,
        name: TableName,
        source: &TableSchema,
    ) -> Result<UpsertWriter> {
        Self::open_with(catalog, name, source, DeleteMode::Position).await
    }

    /// Opens with default settings and `delete_mode`.
    pub async fn open_with(
        catalog: Arc<dyn Catalog>,
        name: TableName,
        source: &TableSchema,
        delete_mode: DeleteMode,
    ) -> Result<UpsertWriter> {
        let config = UpsertConfig {
            delete_mode,
            ..UpsertConfig::default()
        };
        Self::open_config(catalog, name, source, config).await
    }

    /// Opens (creating if needed) the table for `source`, evolves its schema
    /// to `source` if needed, and loads the key index and the committed
    /// checkpoint.
    pub async fn open_config(
        catalog: Arc<dyn Catalog>,
        name: TableName,
        source: &TableSchema,
        config: UpsertConfig,
    ) -> Result<UpsertWriter> {
        config.validate_for(source)?;
        if source.primary_key.is_empty() {
            return Err(Error::invalid_config(format!(
                "{} has no primary key: an upsert table needs one (configure a key or use append mode)",
                source.table
            )));
        }
        let table = match catalog.load_table(&name).await {
            Ok(t) => t,
            Err(load) if load.kind() == ErrorKind::NotFound => {
                let schema = iceberg_schema(source)?;
                let spec = unbound_spec(&config.partition_by, &schema)?;
                let created = catalog
                    .create_table(&name, schema, spec, HashMap::new())
                    .await;
                created.map_err(|e| e.with_context("load error", load))?
            }
            Err(e) => return Err(e),
        };
        let (table, columns) = Self::fit_schema(&*catalog, table, source, &config).await?;
        let index = key_index(&table, &columns, source)?;
        let partitioner = partitioner(&table, source, &config)?;
        let committed = committed_checkpoint(&table)?;
        let mut writer = UpsertWriter {
            catalog,
            table,
            config,
            source: Arc::new(source.clone()),
            columns,
            index,
            partitioner,
            file_partitions: HashMap::new(),
            state: HashMap::new(),
            buffered: Vec::new(),
            buffered_bytes: 0,
            spills: Vec::new(),
            superseded: Vec::new(),
            changes_since_commit: 0,
            bytes_since_commit: 0,
            last_commit: Instant::now(),
            last_snapshot: Instant::now(),
            committed,
            planned_found: Vec::new(),
        };
        writer.load_index().await?;
        Ok(writer)
    }

    /// Evolves the table's schema to take rows of `source` (committing the
    /// new schema when it changes) and maps the source's columns onto it.
    async fn fit_schema(
        catalog: &dyn Catalog,
        table: CatalogTable,
        source: &TableSchema,
        config: &UpsertConfig,
    ) -> Result<(CatalogTable, ColumnMap)> {
        let current = table.metadata.current_schema().clone();
        let last_id = table.metadata.last_column_id();
        let evolution = evolve(&current, last_id, source, config.column_policy)?;
        let table = match &evolution.schema {
            Some(next) => commit_schema(catalog, &table, next).await?,
            None => table,
        };
        let columns = ColumnMap::new(table.metadata.current_schema(), source, &evolution.skipped)?;
        Ok((table, columns))
    }

    pub fn table(&self) -> &CatalogTable {
        &self.table
    }

    /// Key-index counters (files probed, sidecars read).
    pub fn index_stats(&self) -> IndexStats {
        self.index.stats
    }

    /// Data files written before their commit so far (spills).
    pub fn spilled_files(&self) -> usize {
        self.spills.len()
    }

    /// Loads the key index from the live files.
    async fn load_index(&mut self) -> Result<()> {
        let (data, deletes) = live_files(&self.table)
            .await
            .map_err(|e| e.with_context("table", &self.table.name))?;
        self.file_partitions = data
            .iter()
            .map(|f| (Arc::from(f.file_path()), f.partition().clone()))
            .collect();
        let data: Vec<String> = data.iter().map(|f| f.file_path().to_string()).collect();
        let positions: Vec<String> = deletes
            .iter()
            .filter(|d| d.content_type() == DataContentType::PositionDeletes)
            .map(|d| d.file_path().to_string())
            .collect();
        self.index.load(&data, &positions).await
    }

    /// Whether a commit is due: the interval passed, or the row or byte bound
    /// was reached. A runner asks at each source checkpoint.
    pub fn commit_due(&self) -> bool {
        self.last_commit.elapsed() >= self.config.commit_interval
            || self.changes_since_commit >= self.config.commit_rows
            || self.bytes_since_commit >= self.config.commit_bytes
    }

    /// Buffers a batch, reducing per key; spills to a data file when the
    /// buffer reaches `target_file_bytes`. A batch of another schema version
    /// first evolves the table (see `apply_schema`).
    pub async fn write_batch(&mut self, batch: &ChangeBatch) -> Result<()> {
        if batch.schema().fingerprint() != self.source.fingerprint() {
            self.apply_schema(batch.schema()).await?;
        }
        let image = |i| {
            batch
                .image(i)
                .map(|a| to_file_batch(a, &self.columns))
                .transpose()
        };
        let (after, before) = (image(Image::After)?, image(Image::Before)?);
        let after_keys = after.as_ref().map(|a| self.index.encode(a)).transpose()?;
        let before_keys = before.as_ref().map(|b| self.index.encode(b)).transpose()?;
        let (slot, mut used) = (self.buffered.len(), false);
        let key = |keys: &Option<arrow_row::Rows>, row| {
            keys.as_ref()
                .map(|k| k.row(row).as_ref().to_vec())
                .ok_or_else(|| Error::new(ErrorKind::Unexpected, "a change without its image"))
        };
        let changes = batch.keyed_changes(self.committed.as_ref(), |row| {
            Ok(key(&after_keys, row)? == key(&before_keys, row)?)
        })?;
        for c in changes {
            if c.delete_before {
                self.set_state(key(&before_keys, c.row)?, KeyState::Deleted);
            }
            if c.upsert_after {
                self.set_state(key(&after_keys, c.row)?, KeyState::Buffered(slot, c.row));
                used = true;
            }
            self.changes_since_commit += 1;
        }
        // A batch whose rows were all replays holds nothing to keep.
        if let Some(a) = after.filter(|_| used) {
            let bytes = a.get_array_memory_size();
            self.buffered_bytes += bytes;
            self.bytes_since_commit += bytes;
            self.buffered.push(a);
        }
        if self.buffered_bytes >= self.config.target_file_bytes {
            self.spill().await?;
        }
        Ok(())
    }

    fn set_state(&mut self, key: Vec<u8>, state: KeyState) {
        if let Some(KeyState::Spilled(file, pos)) = self.state.insert(key, state) {
            let path = self.spills[file].summary.path().clone();
            self.superseded.push((path, pos));
        }
    }

    /// Evolves the table to `source` (a new schema version of the table):
    /// buffered rows are carried over to the new data-file schema.
    pub async fn apply_schema(&mut self, source: &TableSchema) -> Result<()> {
        if source.table != self.source.table {
            return Err(Error::new(
                ErrorKind::SchemaMismatch,
                format!(
                    "rows of {} sent to the writer of {}",
                    source.table, self.source.table
                ),
            ));
        }
        let table = self.table.clone();
        let (table, columns) =
            Self::fit_schema(&*self.catalog, table, source, &self.config).await?;
        if columns.key_columns(source)? != self.index.key_columns() {
            return Err(Error::new(
                ErrorKind::SchemaMismatch,
                format!("{}: key columns moved in the data files", source.table),
            ));
        }
        let carried: Result<Vec<RecordBatch>> = self
            .buffered
            .iter()
            .map(|b| carry_over(b, &columns))
            .collect();
        self.buffered = carried?;
        self.partitioner = partitioner(&table, source, &self.config)?;
        (self.table, self.columns, self.source) = (table, columns, Arc::new(source.clone()));
        Ok(())
    }

    /// Writes the buffered rows (each key's final row) as data files, one per
    /// partition, that the next commit adds.
    async fn spill(&mut self) -> Result<()> {
        let (mut rows, mut keys) = (Vec::new(), Vec::new());
        for (k, s) in &self.state {
            if let KeyState::Buffered(b, r) = s {
                rows.push((*b, *r));
                keys.push(k.clone());
            }
        }
        if !rows.is_empty() {
            let batch = interleave_rows(&self.buffered, &rows)?;
            let strict =
                RecordBatch::try_new(self.columns.file_schema.clone(), batch.columns().to_vec())?;
            let groups = self.partitioner.group(&strict)?;
            if let [(partition, _)] = &groups[..] {
                self.spill_file(strict, keys, partition.clone()).await?;
            } else {
                for (partition, rows) in groups {
                    let taken = arrow_select::take::take_record_batch(
                        &strict,
                        &arrow_array::UInt32Array::from(rows.clone()),
                    )?;
                    let keys = rows.iter().map(|&r| keys[r as usize].clone()).collect();
                    self.spill_file(taken, keys, partition).await?;
                }
            }
        }
        self.buffered.clear();
        self.buffered_bytes = 0;
        Ok(())
    }

    /// Writes one spill file (rows of one partition, `keys` in row order)
    /// and its key-index sidecar; its keys now live there.
    async fn spill_file(
        &mut self,
        batch: RecordBatch,
        keys: Vec<Vec<u8>>,
        partition: Struct,
    ) -> Result<()> {
        let file = self.write_data_file(&batch, partition).await?;
        let path = Arc::<str>::from(file.file_path());
        let summary = FileKeys::build(path.clone(), keys.iter().map(Vec::as_slice))?;
        tributary_catalog::write_key_sidecar(&self.table.file_io, &summary).await?;
        let n = self.spills.len();
        for (pos, k) in keys.iter().enumerate() {
            self.state
                .insert(k.clone(), KeyState::Spilled(n, pos as i64));
        }
        self.spills.push(Spill {
            file,
            summary,
            keys,
        });
        Ok(())
    }

    /// Writes the key columns of `keys` as equality-delete files, one per
    /// partition (in equality mode the partition follows from the key).
    async fn write_equality_deletes(&self, keys: &[&[u8]]) -> Result<Vec<DataFile>> {
        let columns = self.index.decode(keys)?;
        let file_schema = &self.columns.file_schema;
        let key_columns = self.index.key_columns();
        let fields: Vec<_> = key_columns
            .iter()
            .map(|&i| file_schema.field(i).clone())
            .collect();
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
    /// they point at.
    async fn write_position_deletes(&self, deletes: Vec<(String, i64)>) -> Result<Vec<DataFile>> {
        // Partitions of the files deletes can name: committed ones, then spills.
        let spilled: HashMap<&str, &Struct> = self
            .spills
            .iter()
            .map(|s| (s.file.file_path(), s.file.partition()))
            .collect();
        let mut by_partition: HashMap<&Struct, Vec<(String, i64)>> = HashMap::new();
        for (path, pos) in deletes {
            let partition = spilled
                .get(path.as_str())
                .copied()
                .or_else(|| self.file_partitions.get(path.as_str()))
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::Unexpected,
                        format!("a delete points at {path}, which is not a live data file"),
                    )
                })?;
            by_partition.entry(partition).or_default().push((path, pos));
        }
        let mut files = Vec::new();
        for (partition, deletes) in by_partition {
            let path = self.new_file_path("deletes");
            let file_io = &self.table.file_io;
            let spec = self.partitioner.spec_id();
            let file =
                write_position_deletes(file_io, &path, deletes, partition.clone(), spec).await?;
            files.push(file);
        }
        Ok(files)
    }

    fn new_file_path(&self, suffix: &str) -> String {
        format!(
            "{}/data/{}-{suffix}.parquet",
            self.table.metadata.location(),
            uuid::Uuid::new_v4()
        )
    }

    /// Writes `batch` (file schema, strict; rows of one partition) as a
    /// Parquet data file.
    async fn write_data_file(&self, batch: &RecordBatch, partition: Struct) -> Result<DataFile> {
        let path = self.new_file_path("data");
        let spec = self.partitioner.spec_id();
        let file_io = &self.table.file_io;
        let row_group = Some(self.config.row_group_rows);
        tributary_catalog::write_data_file(file_io, &path, batch, partition, spec, row_group).await
    }

    /// Commits everything buffered together with `checkpoint`. If a rewrite
    /// (compaction) replaced files our position deletes point at, the table
    /// and index are reloaded and the deletes planned again.
    pub async fn commit_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        let prepared = self.prepare_checkpoint(checkpoint).await?;
        self.commit_prepared_deltas(vec![prepared]).await
    }

    /// Writes every file the next commit adds (spills, position and
    /// equality deletes) without committing: the returned payload is the
    /// encoded `RowDelta`, or null when nothing is due (nothing to write and
    /// the position was recorded recently; a table with no checkpoint yet
    /// records one at once: a runner resumes from the oldest, and "none"
    /// means from the start).
    pub async fn prepare_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<Prepared> {
        let idle = self.state.is_empty() && self.spills.is_empty();
        let recorded = self.committed.is_some();
        let payload = if idle
            && recorded
            && self.last_snapshot.elapsed() < self.config.idle_commit_interval
        {
            serde_json::Value::Null
        } else {
            let delta = self.plan_delta().await?;
            delta.encode(&self.table.metadata)?
        };
        Ok(Prepared {
            checkpoint: checkpoint.clone(),
            payload,
        })
    }

    /// Commits prepared deltas (of this writer, oldest first) as one
    /// snapshot carrying the last checkpoint. A concurrent rewrite of files
    /// the deletes point at (`ValidationFailed`) reloads the table and
    /// index and plans the deletes again, up to 5 times.
    async fn commit_prepared_deltas(&mut self, prepared: Vec<Prepared>) -> Result<()> {
        let Some(checkpoint) = prepared.last().map(|p| p.checkpoint.clone()) else {
            return Ok(());
        };
        let mut delta: Option<RowDelta> = None;
        for p in prepared.iter().filter(|p| !p.payload.is_null()) {
            let next = RowDelta::decode(&p.payload, &self.table.metadata)?;
            match delta.as_mut() {
                Some(d) => d.merge(next),
                None => delta = Some(next),
            }
        }
        let Some(mut delta) = delta else {
            self.last_commit = Instant::now();
            return Ok(());
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            delta.properties.insert(
                CHECKPOINT_PROPERTY.to_string(),
                serde_json::to_string(&checkpoint)?,
            );
            match commit_row_delta(self.catalog.as_ref(), &self.table, &delta).await {
                Ok(table) => {
                    self.table = table;
                    let found = std::mem::take(&mut self.planned_found);
                    self.committed_now(found, &checkpoint);
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::ValidationFailed && attempt < 5 => {
                    self.table = self.catalog.load_table(&self.table.name).await?;
                    self.index.reset();
                    self.load_index().await?;
                    delta = self.plan_delta().await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Spills what is buffered and plans and writes the deletes of every
    /// touched key's committed row; the rows found by position are kept
    /// for the index until the commit is durable.
    async fn plan_delta(&mut self) -> Result<RowDelta> {
        self.spill().await?;
        let (mut deletes, mut found, mut equality) = (Vec::new(), Vec::new(), Vec::new());
        for key in self.state.keys() {
            match self.config.delete_mode {
                DeleteMode::Equality if self.index.may_exist(key) => equality.push(key.as_slice()),
                DeleteMode::Equality => {}
                DeleteMode::Position => {
                    if let Some(loc) = self.index.lookup(key).await? {
                        deletes.push((loc.0.to_string(), loc.1));
                        found.push(loc);
                    }
                }
            }
        }
        let mut delta = RowDelta {
            // Only committed files can vanish under a rewrite; spills are ours.
            referenced_data_files: deletes
                .iter()
                .map(|(p, _)| p.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            planned_at_snapshot: self.table.metadata.current_snapshot_id(),
            data_files: self.spills.iter().map(|s| s.file.clone()).collect(),
            ..RowDelta::default()
        };
        deletes.extend(self.superseded.iter().map(|(p, pos)| (p.to_string(), *pos)));
        delta
            .delete_files
            .extend(self.write_position_deletes(deletes).await?);
        if !equality.is_empty() {
            delta
                .delete_files
                .extend(self.write_equality_deletes(&equality).await?);
        }
        self.planned_found = found;
        Ok(delta)
    }

    /// After a durable commit: the index takes the new files and deletes,
    /// and the buffers start over.
    fn committed_now(&mut self, found: Vec<(Arc<str>, i64)>, checkpoint: &Checkpoint) {
        for (path, pos) in found.iter().chain(&self.superseded) {
            self.index.mark_deleted(path, *pos);
        }
        for spill in self.spills.drain(..) {
            let path = spill.summary.path().clone();
            self.file_partitions
                .insert(path, spill.file.partition().clone());
            self.index.add_file(spill.summary, spill.keys);
        }
        self.state.clear();
        self.superseded.clear();
        (self.changes_since_commit, self.bytes_since_commit) = (0, 0);
        (self.last_commit, self.last_snapshot) = (Instant::now(), Instant::now());
        self.committed = Some(checkpoint.clone());
    }
}

/// The key index for the table's data files, on the data-file key columns.
fn key_index(table: &CatalogTable, columns: &ColumnMap, source: &TableSchema) -> Result<KeyIndex> {
    let key_columns = columns.key_columns(source)?;
    let key_fields = key_columns
        .iter()
        .map(|&i| SortField::new(columns.file_schema.field(i).data_type().clone()))
        .collect();
    KeyIndex::new(table.file_io.clone(), key_columns, key_fields)
}

/// The partitioner of the table's spec, checked against the configuration:
/// the configured spec (if any) is the table's, there is no older spec
/// (partition evolution is not followed), and equality mode partitions by
/// key columns only.
fn partitioner(
    table: &CatalogTable,
    source: &TableSchema,
    config: &UpsertConfig,
) -> Result<Partitioner> {
    let meta = &table.metadata;
    let schema = meta.current_schema();
    let spec = meta.default_partition_spec();
    let actual = spec_fields(spec, schema);
    let show = |f: &[PartitionField]| {
        let parts: Vec<String> = f.iter().map(ToString::to_string).collect();
        format!("[{}]", parts.join(", "))
    };
    if !config.partition_by.is_empty() && config.partition_by != actual {
        return Err(Error::invalid_config(format!(
            "{} exists partitioned by {}, but partition_by is {}: the writer does not change \
             an existing table's partition spec; set partition_by to the table's spec (or leave \
             it empty), or write to a new table",
            table.name,
            show(&actual),
            show(&config.partition_by)
        )));
    }
    if meta.partition_specs_iter().count() > 1 {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "{} has {} partition specs (its spec evolved): the upsert writer needs every \
                 data file in the current spec; rewrite the table into it first",
                table.name,
                meta.partition_specs_iter().count()
            ),
        ));
    }
    let names: Vec<&str> = actual.iter().map(|f| f.column.as_str()).collect();
    let what = format!("the partition spec of {}", table.name);
    check_partition_columns(&names, source, config.delete_mode, &what)?;
    Partitioner::new(spec, schema)
}

/// The checkpoint committed with the table's current snapshot.
pub fn committed_checkpoint(table: &CatalogTable) -> Result<Option<Checkpoint>> {
    let json = table.metadata.current_snapshot().and_then(|s| {
        s.summary()
            .additional_properties
            .get(CHECKPOINT_PROPERTY)
            .cloned()
    });
    Ok(json.map(|j| serde_json::from_str(&j)).transpose()?)
}

/// A buffered batch (old data-file schema) in the new data-file schema:
/// columns matched by field id, promoted by cast, new fields null.
fn carry_over(batch: &RecordBatch, to: &ColumnMap) -> Result<RecordBatch> {
    let id = |f: &arrow_schema::Field| f.metadata().get("PARQUET:field_id").cloned();
    let from = batch.schema();
    let columns: Result<Vec<_>> = to
        .file_schema
        .fields()
        .iter()
        .map(
            |f| match from.fields().iter().position(|g| id(g) == id(f)) {
                Some(i) => Ok(arrow_cast::cast(batch.column(i), f.data_type())?),
                None => Ok(arrow_array::new_null_array(f.data_type(), batch.num_rows())),
            },
        )
        .collect();
    let relaxed: Vec<_> = to
        .file_schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    Ok(RecordBatch::try_new(
        Arc::new(arrow_schema::Schema::new(relaxed)),
        columns?,
    )?)
}

/// Gathers `(batch, row)` rows of `batches` into one record batch.
fn interleave_rows(batches: &[RecordBatch], rows: &[(usize, usize)]) -> Result<RecordBatch> {
    let schema = batches[0].schema();
    let mut columns = Vec::with_capacity(schema.fields().len());
    for c in 0..schema.fields().len() {
        let arrays: Vec<&dyn Array> = batches.iter().map(|b| b.column(c).as_ref()).collect();
        columns.push(arrow_select::interleave::interleave(&arrays, rows)?);
    }
    Ok(RecordBatch::try_new(schema, columns)?)
}

#[async_trait]
impl Sink for UpsertWriter {
    async fn write(&mut self, batch: &ChangeBatch) -> Result<()> {
        self.write_batch(batch).await
    }

    async fn apply_schema_change(&mut self, change: &SchemaChange) -> Result<()> {
        let target = format!("the Iceberg table {}", self.table.name);
        self.apply_schema(change.followed_schema(&target)?).await
    }

    async fn prepare(&mut self, checkpoint: &Checkpoint) -> Result<Prepared> {
        self.prepare_checkpoint(checkpoint).await
    }

    async fn commit_prepared(&mut self, prepared: Vec<Prepared>) -> Result<()> {
        self.commit_prepared_deltas(prepared).await
    }

    fn commit_due(&self) -> bool {
        UpsertWriter::commit_due(self)
    }

    async fn committed(&self) -> Result<Option<Checkpoint>> {
        Ok(self.committed.clone())
    }

    async fn health_check(&self) -> Result<()> {
        self.catalog.load_table(&self.table.name).await.map(drop)
    }
}
