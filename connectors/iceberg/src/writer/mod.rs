//! `UpsertWriter`: applies CDC batches to an Iceberg v2 table.
//!
//! Between commits, events are reduced per primary key to their final state
//! (a key change is a delete of the old key plus an upsert of the new). When
//! the buffered rows reach `target_file_bytes` they are written as a data
//! file right away (a spill; not yet committed), so memory stays bounded; a
//! later change of a spilled key deletes its spilled row by position in the
//! same commit. At commit the rest is written as one more data file, the
//! touched keys' committed rows are deleted (position mode: found through
//! the key index, and small files holding them written again without them
//! — copy-on-write — instead of getting position deletes; equality mode: an
//! equality delete only for keys the bloom filters say may exist), and
//! everything is committed as one snapshot with the source checkpoint in
//! its summary.
//!
//! Exactly-once: the checkpoint committed with the data is read back on
//! open; change events at or before its position are skipped, so a source
//! resumed there never applies a change twice. A crash before the catalog
//! commit leaves only unreferenced files behind (orphans for maintenance).
//!
//! The roles live in one file each: `config` (settings), `table` (open,
//! create, schema evolution, partition checks), `reduction` (the per-key
//! state machine), `spill` (data files before their commit), `deletes`
//! (delete planning), `copy_on_write` (small touched files written again),
//! `commit` (prepare and commit).

mod commit;
mod config;
mod copy_on_write;
mod deletes;
mod reduction;
mod spill;
mod table;
mod truncate;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use iceberg::spec::Struct;
use tributary_catalog::{Catalog, CatalogTable, TableName};
use tributary_core::{
    ChangeBatch, Checkpoint, Error, ErrorKind, Image, Prepared, Result, SchemaChange, Sink,
    TableSchema,
};

pub use self::commit::WATERMARK_PROPERTY;
pub(crate) use self::commit::{stamp, stamp_claimed};
pub use self::config::{DeleteMode, UpsertConfig};
use self::reduction::Reduction;
use self::spill::Spill;
pub use self::table::committed_checkpoint;
use self::table::{key_index, partitioner};
use crate::key_index::{IndexStats, KeyIndex};
use crate::partition::Partitioner;
use crate::types::{ColumnMap, to_file_batch};

/// A committed live data file, as the writer needs it.
#[derive(Debug, Clone)]
struct CommittedFile {
    partition: Struct,
    bytes: u64,
}

/// Snapshot-summary property holding the committed source checkpoint (JSON).
pub const CHECKPOINT_PROPERTY: &str = "tributary.checkpoint";

pub struct UpsertWriter {
    catalog: Arc<dyn Catalog>,
    table: CatalogTable,
    config: UpsertConfig,
    source: Arc<TableSchema>,
    columns: ColumnMap,
    /// Finds the live row of a key in committed files.
    index: KeyIndex,
    partitioner: Partitioner,
    /// Every committed live data file's partition (deletes go there) and
    /// size (the copy-on-write budget).
    committed_files: HashMap<Arc<str>, CommittedFile>,
    /// The table has live equality deletes (no copy-on-write then).
    equality_deletes_live: bool,
    /// Each touched key's final state since the last commit.
    reduction: Reduction,
    spills: Vec<Spill>,
    /// Committed files the pending commit writes again (copy-on-write).
    rewritten: Vec<Spill>,
    /// The data files each position-delete file of the pending commit names.
    planned_delete_targets: HashMap<String, HashSet<Arc<str>>>,
    changes_since_commit: usize,
    bytes_since_commit: usize,
    last_commit: Instant,
    last_snapshot: Instant,
    committed: Option<Checkpoint>,
    /// Committed rows the prepared deletes remove (the index marks them
    /// once the commit is durable).
    planned_found: Vec<(Arc<str>, i64)>,
    /// The source table was truncated since the last commit (see `truncate`).
    truncate_pending: bool,
    /// The snapshot the index reflects. Deletes are planned against it, not
    /// against `table`'s current snapshot: a schema change commits on the
    /// newest version, which may hold a compaction the index has not seen,
    /// and deletes planned at that snapshot would skip the check that their
    /// files are still live (and delete nothing).
    index_at: Option<i64>,
    /// Another committer (a compaction) changed the table lately: the next
    /// plan follows the current version first (see `plan_delta`).
    others_commit: bool,
    /// Delete files committed since the writer opened, by kind.
    delete_files_committed: (u64, u64),
    /// Committed data files written again since the writer opened.
    copy_on_write_files: u64,
    /// A consumer-group worker's: where its next range of each partition
    /// starts (its last commit's ends; see `PartitionClaim`).
    claimed: std::collections::BTreeMap<i32, i64>,
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
        let table = table::load_or_create(&*catalog, &name, source, &config).await?;
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
            committed_files: HashMap::new(),
            equality_deletes_live: false,
            reduction: Reduction::default(),
            spills: Vec::new(),
            rewritten: Vec::new(),
            planned_delete_targets: HashMap::new(),
            changes_since_commit: 0,
            bytes_since_commit: 0,
            last_commit: Instant::now(),
            last_snapshot: Instant::now(),
            committed,
            planned_found: Vec::new(),
            truncate_pending: false,
            index_at: None,
            others_commit: false,
            delete_files_committed: (0, 0),
            copy_on_write_files: 0,
            claimed: Default::default(),
        };
        writer.load_index().await?;
        Ok(writer)
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
        let (slot, mut used) = (self.reduction.next_slot(), false);
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
                self.reduction.delete(key(&before_keys, c.row)?);
            }
            if c.upsert_after {
                self.reduction.upsert(key(&after_keys, c.row)?, slot, c.row);
                used = true;
            }
            self.changes_since_commit += 1;
        }
        // A batch whose rows were all replays holds nothing to keep.
        if let Some(a) = after.filter(|_| used) {
            self.bytes_since_commit += self.reduction.push_batch(a);
        }
        if self.reduction.buffered_bytes() >= self.config.target_file_bytes {
            self.spill().await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for UpsertWriter {
    async fn write(&mut self, batch: &ChangeBatch) -> Result<()> {
        self.write_batch(batch).await
    }

    async fn apply_schema_change(&mut self, change: &SchemaChange) -> Result<()> {
        if change.kind == tributary_core::SchemaChangeKind::Truncate {
            return self.truncate(change).await;
        }
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

    fn counters(&self) -> tributary_core::SinkCounters {
        let index = self.index.stats;
        tributary_core::SinkCounters {
            position_delete_files: self.delete_files_committed.0,
            equality_delete_files: self.delete_files_committed.1,
            copy_on_write_files: self.copy_on_write_files,
            bloom_tests: index.bloom_tests,
            bloom_skips: index.bloom_skips,
            ..Default::default()
        }
    }

    async fn health_check(&self) -> Result<()> {
        self.catalog.load_table(&self.table.name).await.map(drop)
    }
}
