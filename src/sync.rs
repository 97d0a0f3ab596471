//! `tributary sync`: a MySQL/MariaDB source applied to Iceberg upsert tables
//! or ClickHouse tables, exactly once.
//!
//! Every source table gets its own sink (`UpsertWriter` or `ClickHouseSink`,
//! and its target table), opened at the table's first change. At a source checkpoint, when any writer says
//! a commit is due, all writers commit in one *round* with the same
//! checkpoint, stamped with the round number (`tributary.round`). Writers with
//! nothing new skip the commit, so their tables keep an older round.
//!
//! Resume: the oldest committed round among the source's tables is where
//! every table is complete (round numbers order checkpoints even where source
//! positions tie, e.g. snapshot progress on an idle server). The source
//! restarts there; writers drop change events their own table already has,
//! and re-read snapshot rows are upserts. A target table that exists without
//! any checkpoint (a crash before its first commit) holds nothing committed:
//! it is emptied and queued for a new snapshot in the resume checkpoint.
//! (Restarting everything from scratch instead would be wrong: a new
//! snapshot cannot delete rows that other tables already hold and that the
//! source deleted meanwhile.)

use std::collections::BTreeMap;

use tracing::{info, warn};
use tributary_core::{
    ChangeBatch, Checkpoint, Error, ErrorKind, Result, SchemaChange, Sink, Source, SourceRecord,
    TableId, TableSchema,
};
use tributary_mysql::{MySqlSource, SnapshotMode, SnapshotProgress};

use crate::config::PipelineConfig;
use crate::sinks::Target;

/// Checkpoint property: the commit round of the runner that wrote it.
pub const ROUND_PROPERTY: &str = "tributary.round";

/// What one table holds, for `status` and the resume decision.
#[derive(Debug)]
pub struct TableState {
    pub source: TableId,
    pub table: String,
    /// None: no target table yet. Some(None): a table without checkpoint.
    pub committed: Option<Option<Checkpoint>>,
}

impl TableState {
    fn round(&self) -> Option<u64> {
        let cp = self.committed.as_ref()?.as_ref()?;
        cp.properties.get(ROUND_PROPERTY)?.parse().ok()
    }
}

/// The committed state of every table the source selects.
pub async fn table_states(config: &PipelineConfig) -> Result<Vec<TableState>> {
    let target = Target::new(&config.sink)?;
    let mut states = Vec::new();
    for source in MySqlSource::list_tables(&config.source.mysql).await? {
        let table = target.table_name(&source);
        let committed = target
            .committed(&source)
            .await
            .map_err(|e| e.with_context("table", &table))?;
        states.push(TableState {
            source,
            table,
            committed,
        });
    }
    Ok(states)
}

/// Where to resume.
#[derive(Debug)]
struct Resume {
    /// The oldest committed round's checkpoint (None: from the start).
    checkpoint: Option<Checkpoint>,
    last_round: u64,
    /// Target tables that exist without a checkpoint: nothing of theirs is
    /// committed, so they are emptied and snapshotted again.
    lost: Vec<TableId>,
}

fn resume_point(states: &[TableState]) -> Resume {
    let last_round = states
        .iter()
        .filter_map(TableState::round)
        .max()
        .unwrap_or(0);
    let lost = states
        .iter()
        .filter(|s| matches!(s.committed, Some(None)))
        .map(|s| s.source.clone())
        .collect();
    let checkpoint = states
        .iter()
        .filter(|s| matches!(s.committed, Some(Some(_))))
        .min_by_key(|s| s.round().unwrap_or(0))
        .and_then(|s| s.committed.clone().flatten());
    Resume {
        checkpoint,
        last_round,
        lost,
    }
}

/// Empties the tables that lost their state and queues them for a new
/// snapshot in the resume checkpoint. Without snapshots (mode never) their
/// changes before the resume point cannot be read again: an error.
async fn recover_lost_tables(
    config: &PipelineConfig,
    target: &Target,
    resume: &mut Resume,
) -> Result<()> {
    if resume.lost.is_empty() {
        return Ok(());
    }
    if resume.checkpoint.is_some() && config.source.mysql.snapshot.mode == SnapshotMode::Never {
        return Err(Error::new(
            ErrorKind::PositionLost,
            format!(
                "{:?} have no committed checkpoint and snapshot.mode is never: their changes \
                 before the resume point cannot be read again; run once with snapshot.mode = \
                 \"initial\", or drop those target tables and accept the gap",
                resume.lost
            ),
        ));
    }
    for t in &resume.lost {
        warn!(table = %t, "no committed checkpoint: emptied, to be snapshotted again");
        target.reset(t).await?;
    }
    if let Some(cp) = resume.checkpoint.as_mut() {
        SnapshotProgress::requeue(cp, &resume.lost)?;
    }
    Ok(())
}

pub struct SyncJob {
    target: Target,
    writers: BTreeMap<TableId, Box<dyn Sink>>,
    round: u64,
    rows: u64,
}

impl SyncJob {
    /// Runs until the source ends (snapshot-only mode) or `stop` resolves.
    /// Stopping drops uncommitted changes; the next run reads them again.
    pub async fn run(config: PipelineConfig, stop: impl Future<Output = ()>) -> Result<()> {
        let target = Target::new(&config.sink)?;
        let mut resume = resume_point(&table_states(&config).await?);
        recover_lost_tables(&config, &target, &mut resume).await?;
        let (resume, round) = (resume.checkpoint, resume.last_round);
        match resume.as_ref().and_then(|c| c.position.as_ref()) {
            Some(p) => info!(position = %p, round, "resuming"),
            None => info!("starting: no committed position"),
        }
        let mut source = MySqlSource::start(config.source.mysql.clone(), resume.as_ref()).await?;
        let mut job = SyncJob {
            target,
            writers: BTreeMap::new(),
            round,
            rows: 0,
        };
        tokio::pin!(stop);
        loop {
            let record = tokio::select! {
                r = source.next() => r?,
                () = &mut stop => {
                    info!(rows = job.rows, "stopped; changes after the last commit are read again on restart");
                    return Ok(());
                }
            };
            if !job.apply(record).await? {
                info!(rows = job.rows, round = job.round, "source finished");
                return Ok(());
            }
        }
    }

    /// Applies one source record; false when the source has ended.
    async fn apply(&mut self, record: Option<SourceRecord>) -> Result<bool> {
        match record {
            Some(SourceRecord::Changes(batch)) => self.write(&batch).await?,
            Some(SourceRecord::SchemaChange(change)) => self.schema_change(&change).await?,
            Some(SourceRecord::Checkpoint(cp)) => {
                if self.writers.values().any(|w| w.commit_due()) {
                    self.commit_round(cp).await?;
                }
            }
            None => return Ok(false),
        }
        Ok(true)
    }

    async fn write(&mut self, batch: &ChangeBatch) -> Result<()> {
        self.rows += batch.len() as u64;
        self.writer(batch.schema()).await?.write(batch).await
    }

    async fn schema_change(&mut self, change: &SchemaChange) -> Result<()> {
        if let Some(after) = &change.after {
            return self.writer(after).await?.apply_schema_change(change).await;
        }
        if let Some(w) = self.writers.get_mut(&change.table) {
            return w.apply_schema_change(change).await;
        }
        match self.target.committed(&change.table).await? {
            None => {
                info!(table = %change.table, kind = ?change.kind, "ignored: no target table");
                Ok(())
            }
            // The sink refuses it with the explanation.
            Some(_) => self.writer_for_change(change).await,
        }
    }

    /// Opens the sink of a table whose target exists, only to have it
    /// judge a drop/truncate/rename (it has no schema to open with otherwise).
    async fn writer_for_change(&mut self, change: &SchemaChange) -> Result<()> {
        let schema = change.before.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                format!(
                    "{:?} of {}: its target table exists; stop, handle the table by hand, then resume",
                    change.kind, change.table
                ),
            )
        })?;
        self.writer(schema).await?.apply_schema_change(change).await
    }

    /// The sink of `schema`'s table, opened (and the table created) on
    /// first use.
    async fn writer(&mut self, schema: &TableSchema) -> Result<&mut Box<dyn Sink>> {
        let id = schema.table.clone();
        if !self.writers.contains_key(&id) {
            let name = self.target.table_name(&id);
            if let Some(other) = self
                .writers
                .keys()
                .find(|t| self.target.table_name(t) == name)
            {
                return Err(Error::invalid_config(format!(
                    "{id} and {other} would both be written to {name}: leave sink.iceberg.namespace \
                     unset (each database gets its own), or select only one of them"
                )));
            }
            let writer = self
                .target
                .open(schema)
                .await
                .map_err(|e| e.with_context("table", &name))?;
            info!(source = %id, table = %name, "writing");
            self.writers.insert(id.clone(), writer);
        }
        Ok(self.writers.get_mut(&id).expect("inserted above"))
    }

    /// Commits every writer with `checkpoint`, in table order.
    async fn commit_round(&mut self, mut checkpoint: Checkpoint) -> Result<()> {
        self.round += 1;
        checkpoint
            .properties
            .insert(ROUND_PROPERTY.to_string(), self.round.to_string());
        for (id, writer) in &mut self.writers {
            writer
                .commit(&checkpoint)
                .await
                .map_err(|e| e.with_context("table", id))?;
        }
        match &checkpoint.position {
            Some(p) => info!(round = self.round, position = %p, rows = self.rows, "committed"),
            None => warn!(round = self.round, "committed without a source position"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(table: &str, committed: Option<Option<u64>>) -> TableState {
        let cp = |round: u64| Checkpoint {
            properties: [(ROUND_PROPERTY.to_string(), round.to_string())].into(),
            ..Checkpoint::default()
        };
        TableState {
            source: TableId::new("db", table),
            table: format!("db.{table}"),
            committed: committed.map(|c| c.map(cp)),
        }
    }

    #[test]
    fn resume_from_the_oldest_round_and_list_tables_without_a_checkpoint() {
        let round = |r: &Resume| {
            r.checkpoint
                .as_ref()
                .map(|c| c.properties[ROUND_PROPERTY].clone())
        };
        let r = resume_point(&[
            state("a", Some(Some(7))),
            state("b", Some(Some(5))),
            state("c", None),
        ]);
        assert_eq!((round(&r).as_deref(), r.last_round), (Some("5"), 7));
        assert!(r.lost.is_empty());
        let r = resume_point(&[state("a", Some(Some(7))), state("b", Some(None))]);
        assert_eq!(
            (round(&r).as_deref(), r.lost),
            (Some("7"), vec![TableId::new("db", "b")])
        );
        let r = resume_point(&[state("c", None)]);
        assert_eq!((r.checkpoint.is_none(), r.last_round), (true, 0));
    }
}
