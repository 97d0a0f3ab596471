//! The two traits every connector implements.

use async_trait::async_trait;

use crate::batch::ChangeBatch;
use crate::error::Result;
use crate::event::SchemaChange;
use crate::position::Checkpoint;

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

/// A change sink (Iceberg, ClickHouse, Kafka relay, HBase…).
///
/// Writes are buffered until `commit`, which makes them durable and visible
/// together with the checkpoint, atomically where the target allows it. After
/// a restart `committed` returns the last durable checkpoint; the runner
/// resumes the source there and the sink drops anything at or before it.
#[async_trait]
pub trait Sink: Send {
    async fn write(&mut self, batch: &ChangeBatch) -> Result<()>;

    async fn apply_schema_change(&mut self, change: &SchemaChange) -> Result<()>;

    /// Makes every write so far durable, together with `checkpoint`.
    async fn commit(&mut self, checkpoint: &Checkpoint) -> Result<()>;

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
}
