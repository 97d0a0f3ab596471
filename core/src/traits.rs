//! The traits every connector implements: [`Source`] and [`Sink`] move
//! changes; [`SourceFactory`] and [`SinkFactory`] are what a pipeline runner
//! (`tributary-runtime`) holds per configured source and sink kind.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::batch::ChangeBatch;
use crate::error::Result;
use crate::event::SchemaChange;
use crate::position::Checkpoint;
use crate::schema::{TableId, TableSchema};

/// What a source hands out, in source order.
#[derive(Debug, Clone)]
pub enum SourceRecord {
    /// Row changes of one table at one schema version.
    Changes(ChangeBatch),
    /// A table's schema changed; later `Changes` of it use the new schema.
    SchemaChange(SchemaChange),
    /// Everything before this point is complete: a transaction ended, or a
    /// heartbeat moved the position/watermark on an idle source. Sinks commit
    /// only at checkpoints, so a restart never resumes inside a transaction.
    Checkpoint(Checkpoint),
}

/// A change source (MySQL binlog, snapshot, Kafka relay…).
#[async_trait]
pub trait Source: Send {
    /// The next record; `Ok(None)` when a bounded source is exhausted.
    async fn next(&mut self) -> Result<Option<SourceRecord>>;
}

/// What [`Sink::prepare`] made durable but not yet visible, and the
/// checkpoint it belongs to. Serializable, so that a writer can hand it to a
/// committer elsewhere (scale-out: workers prepare, one committer commits).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Prepared {
    pub checkpoint: Checkpoint,
    /// Sink-specific description of the prepared work (e.g. Iceberg file
    /// metadata); `Null` when there is nothing to make visible.
    #[serde(default)]
    pub payload: serde_json::Value,
}

/// A change sink (Iceberg, ClickHouse, Kafka relay, HBase…).
///
/// Writes are buffered until a commit, which makes them durable and visible
/// together with the checkpoint, atomically where the target allows it. A
/// commit has two steps: `prepare` (files/rows durable, nothing visible) and
/// `commit_prepared` (visible with the checkpoint); `commit` is both in one
/// process. After a restart `committed` returns the last durable checkpoint;
/// the runner resumes the source there and the sink drops anything at or
/// before it.
#[async_trait]
pub trait Sink: Send {
    async fn write(&mut self, batch: &ChangeBatch) -> Result<()>;

    async fn apply_schema_change(&mut self, change: &SchemaChange) -> Result<()>;

    /// Makes every write so far durable without making it visible, for
    /// `checkpoint`.
    async fn prepare(&mut self, checkpoint: &Checkpoint) -> Result<Prepared>;

    /// Makes prepared work visible, with the checkpoint of the last one.
    /// `prepared` comes from `prepare` of this sink (or, for sinks that
    /// support it, of other writers of the same table), oldest first.
    async fn commit_prepared(&mut self, prepared: Vec<Prepared>) -> Result<()>;

    /// Makes every write so far durable and visible, together with
    /// `checkpoint`: the single-process path, `commit_prepared(prepare(cp))`.
    async fn commit(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        let prepared = self.prepare(checkpoint).await?;
        self.commit_prepared(vec![prepared]).await
    }

    /// Whether the sink wants a commit now (its interval passed, or a row or
    /// byte bound was reached). A runner asks at each source checkpoint; the
    /// default commits at every one.
    fn commit_due(&self) -> bool {
        true
    }

    /// Drops writes not yet committed (buffers of a sink being switched
    /// away from, see `HaSink`); they are replayed elsewhere.
    fn discard_uncommitted(&mut self) {}

    /// The last checkpoint made durable, read back from the target.
    async fn committed(&self) -> Result<Option<Checkpoint>>;

    /// Cheap check that the target is reachable and usable.
    async fn health_check(&self) -> Result<()>;

    /// What this sink counted since it was opened (zero where a kind has
    /// nothing to count), for `/metrics`.
    fn counters(&self) -> SinkCounters {
        SinkCounters::default()
    }
}

/// Counters a sink keeps from its opening on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkCounters {
    /// Delete files committed, by kind (Iceberg).
    pub position_delete_files: u64,
    pub equality_delete_files: u64,
    /// Committed data files written again without their changed rows
    /// (copy-on-write, Iceberg).
    pub copy_on_write_files: u64,
    /// Key lookups: committed data files whose key range held the key,
    /// and of those the ones their bloom filter ruled out (a read saved).
    pub bloom_tests: u64,
    pub bloom_skips: u64,
    /// Switches of an HA pair (`HaSink`).
    pub failovers: u64,
    pub failbacks: u64,
}

impl SinkCounters {
    /// What `self` counted since `earlier` (a sink opened again counts
    /// from zero: then all of `self`).
    pub fn since(&self, earlier: &SinkCounters) -> SinkCounters {
        let d = |now: u64, then: u64| if now >= then { now - then } else { now };
        SinkCounters {
            position_delete_files: d(self.position_delete_files, earlier.position_delete_files),
            equality_delete_files: d(self.equality_delete_files, earlier.equality_delete_files),
            copy_on_write_files: d(self.copy_on_write_files, earlier.copy_on_write_files),
            bloom_tests: d(self.bloom_tests, earlier.bloom_tests),
            bloom_skips: d(self.bloom_skips, earlier.bloom_skips),
            failovers: d(self.failovers, earlier.failovers),
            failbacks: d(self.failbacks, earlier.failbacks),
        }
    }
}

/// What a target table holds, read without opening a sink (for resume and
/// `status`).
#[derive(Debug, Clone, PartialEq)]
pub enum TargetState {
    /// No target table: nothing was ever written.
    Missing,
    /// The table exists but no commit recorded a checkpoint (a crash inside
    /// its first commit): nothing of it counts as committed.
    CreatedWithoutCheckpoint,
    Committed(Checkpoint),
}

impl TargetState {
    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        match self {
            TargetState::Committed(cp) => Some(cp),
            _ => None,
        }
    }
}

/// One configured sink kind: opens a sink per source table and answers
/// questions about target tables without opening one. Built from a
/// validated configuration by the runtime's registry.
#[async_trait]
pub trait SinkFactory: Send + Sync {
    /// Where a source table's rows go (for logs, status and collisions).
    fn target_name(&self, table: &TableId) -> String;

    /// The committed state of `table`'s target. A target that cannot be
    /// reached is an error, never `Missing`.
    async fn state(&self, table: &TableId) -> Result<TargetState>;

    /// Empties a target that holds nothing committed
    /// (`CreatedWithoutCheckpoint`) before its table is read again.
    async fn reset(&self, table: &TableId) -> Result<()>;

    /// Opens (creating the target if needed) the sink of `schema`'s table.
    async fn open(&self, schema: &TableSchema) -> Result<Box<dyn Sink>>;

    /// Claims `table`'s existing target for the owner `epoch` (a process
    /// description in `owner`): from then on, commits of a lower epoch —
    /// another `sync` of the same pipeline still running — are `Fenced`.
    /// Kinds whose writes are idempotent across writers need not (the
    /// default does nothing).
    async fn claim(&self, _table: &TableId, _epoch: u64, _owner: &str) -> Result<()> {
        Ok(())
    }

    /// Records `checkpoint` on `table`'s existing target without writing
    /// rows: the runner calls it for a table that had no change since its
    /// last commit (idle all this run), so its target is complete up to the
    /// checkpoint and its old commit no longer holds back the resume
    /// point. False when this kind cannot (the table keeps its commit).
    async fn commit_position(&self, _table: &TableId, _checkpoint: &Checkpoint) -> Result<bool> {
        Ok(false)
    }

    /// Empties `table`'s existing target and marks it as holding nothing
    /// committed (`tributary resnapshot`): the next start reads the table
    /// in full while the others resume. Claims the target with `epoch`
    /// first, so a `sync` still writing to it is fenced, not merged in.
    async fn discard(&self, table: &TableId, _epoch: u64, _owner: &str) -> Result<()> {
        Err(crate::Error::new(
            crate::ErrorKind::Unsupported,
            format!(
                "this sink cannot empty {}'s target for a new read: drop it by hand (with the job \
                 stopped); the next start reads the table in full",
                table
            ),
        ))
    }

    /// How often a table with no change records its position (the runner
    /// commits it with `commit_position`); None: the runner's default, 5
    /// minutes. Its watermark moves on no faster.
    fn idle_interval(&self) -> Option<std::time::Duration> {
        None
    }

    /// Whether commits merge a consumer-group worker's `PartitionClaim`
    /// into the target's committed offsets, refusing ranges another worker
    /// committed (see `tributary_core::partitions`).
    fn merges_partition_claims(&self) -> bool {
        false
    }

    /// Upkeep of this kind's targets (compaction, expiry…), if it has any.
    fn maintenance(&self) -> Option<&dyn TargetMaintenance> {
        None
    }

    /// `tributary inspect`: what `table`'s target holds now — its commits,
    /// files and health — read without writing. Kinds with nothing more to
    /// show than `state` need not.
    async fn inspect(&self, table: &TableId) -> Result<Report> {
        Err(crate::Error::new(
            crate::ErrorKind::Unsupported,
            format!(
                "this sink has nothing to inspect beyond `tributary status` for {}",
                self.target_name(table)
            ),
        ))
    }

    /// `tributary check`: connects and reports what a job on `tables` would
    /// meet (server versions, cluster layout, reachability of each target,
    /// compare-and-swap), every finding at once; never writes rows.
    async fn check(&self, _tables: &[TableId]) -> Vec<CheckFinding> {
        Vec::new()
    }
}

/// How one `tributary check` finding came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Ok,
    /// Works, but something is likely to bite (named with the fix).
    Warning,
    /// The job cannot run (named with the fix).
    Failed,
}

/// One thing `tributary check` looked at on a live system: what, how it
/// came out, and the detail (the version found, or the problem and its fix).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckFinding {
    /// `source.mysql`, `sink.iceberg`…
    pub component: String,
    pub status: CheckStatus,
    pub what: String,
    pub detail: String,
}

impl CheckFinding {
    pub fn new(
        component: &str,
        status: CheckStatus,
        what: impl Into<String>,
        detail: impl Into<String>,
    ) -> CheckFinding {
        CheckFinding {
            component: component.to_string(),
            status,
            what: what.into(),
            detail: detail.into(),
        }
    }

    /// `Ok` with `detail`, or `Failed` with the error's message.
    pub fn from_result<T>(
        component: &str,
        what: impl Into<String>,
        result: &Result<T>,
        detail: impl FnOnce(&T) -> String,
    ) -> CheckFinding {
        match result {
            Ok(v) => CheckFinding::new(component, CheckStatus::Ok, what, detail(v)),
            Err(e) => CheckFinding::new(component, CheckStatus::Failed, what, e.to_string()),
        }
    }
}

/// What a maintenance run may do beyond the configured policy.
#[derive(Debug, Clone, Default)]
pub struct MaintainOptions {
    /// Plan and report only: commit and delete nothing.
    pub dry_run: bool,
    /// Remove orphan files too (younger than `orphan_min_age` stay).
    pub orphans: bool,
    pub orphan_min_age: Option<std::time::Duration>,
    /// Allow an orphan age under the safe minimum.
    pub force: bool,
}

/// A result for people and for scripts (a maintenance run, `inspect`):
/// text, and the same as JSON.
#[derive(Debug, Clone)]
pub struct Report {
    pub text: String,
    pub json: serde_json::Value,
}

/// Keeps a kind's target tables healthy over a long life; `tributary
/// maintain` runs it once (cron) and `sync` runs it in the background.
#[async_trait]
pub trait TargetMaintenance: Send + Sync {
    /// How often `sync` runs it beside the writers (None: not at all).
    fn background_interval(&self) -> Option<std::time::Duration>;

    /// Runs what is due on `table`'s target.
    async fn maintain(&self, table: &TableId, options: &MaintainOptions) -> Result<Report>;

    /// How often `sync` runs [`Self::maintain_if_needed`] between full runs
    /// (None: never).
    fn check_interval(&self) -> Option<std::time::Duration> {
        None
    }

    /// A cheap check of `table`'s target that runs what is due only when
    /// the target needs it now (a reader's cost has grown); None when it
    /// did nothing.
    async fn maintain_if_needed(&self, _table: &TableId) -> Result<Option<Report>> {
        Ok(None)
    }
}

/// One configured source kind.
#[async_trait]
pub trait SourceFactory: Send + Sync {
    /// The tables the configuration selects, as they exist now.
    async fn list_tables(&self) -> Result<Vec<TableId>>;

    /// Rewrites a resume checkpoint so that `tables` are read again in full
    /// (their targets lost their state) while the rest resumes. An error
    /// when this source cannot (e.g. snapshots are turned off).
    fn requeue(&self, checkpoint: &mut Checkpoint, tables: &[TableId]) -> Result<()>;

    /// Where `checkpoint` says `table`'s reading stands, for people
    /// (`tributary status`): the source position by default.
    fn describe_position(&self, checkpoint: &Checkpoint, _table: &TableId) -> Option<String> {
        checkpoint.position.as_ref().map(ToString::to_string)
    }

    /// Whether `checkpoint` was taken while an initial read was in progress.
    fn snapshot_in_progress(&self, _checkpoint: &Checkpoint) -> bool {
        false
    }

    /// Starts reading, from `resume` or from the beginning.
    async fn open(&self, resume: Option<&Checkpoint>) -> Result<Box<dyn Source>>;

    /// The server's estimate of how many rows `tables` hold in all, for the
    /// progress of an initial read (None: no estimate).
    async fn estimate_rows(&self, _tables: &[TableId]) -> Option<u64> {
        None
    }

    /// `tributary check`: connects and reports the server's settings and
    /// privileges as a reader needs them, every finding at once.
    async fn check(&self) -> Vec<CheckFinding> {
        Vec::new()
    }

    /// Whether several processes read this source's tables at once, each a
    /// share of the partitions (the relay's consumer group): their commits
    /// are kept apart by `PartitionClaim`s, so the runner fences no one.
    fn shared_by_workers(&self) -> bool {
        false
    }

    /// Messages this source set aside as unreadable (the relay's
    /// dead-letter topic) since it was built, for `/metrics`.
    fn dead_letters(&self) -> u64 {
        0
    }
}
