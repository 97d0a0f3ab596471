//! `tributary sync`: a MySQL/MariaDB source applied to Iceberg upsert tables,
//! exactly once.
//!
//! Every source table gets its own `UpsertWriter` (and Iceberg table), opened
//! at the table's first change. At a source checkpoint, when any writer says
//! a commit is due, all writers commit in one *round* with the same
//! checkpoint, stamped with the round number (`tributary.round`). Writers with
//! nothing new skip the commit, so their tables keep an older round.
//!
//! Resume: the oldest committed round among the source's tables is where
//! every table is complete (round numbers order checkpoints even where source
//! positions tie, e.g. snapshot progress on an idle server). The source
//! restarts there; writers drop change events their own table already has,
//! and re-read snapshot rows are upserts. A table that exists without any
//! checkpoint (a crash before its first commit) restarts the pipeline from
//! the beginning, which the same rules make safe.

use std::collections::BTreeMap;
use std::sync::Arc;

use tracing::{info, warn};
use tributary_catalog::{Catalog, TableName};
use tributary_core::{
    ChangeBatch, Checkpoint, Error, ErrorKind, Result, SchemaChange, Sink, Source, SourceRecord,
    TableId, TableSchema,
};
use tributary_iceberg::{UpsertWriter, committed_checkpoint};
use tributary_mysql::MySqlSource;

use crate::config::PipelineConfig;

/// Checkpoint property: the commit round of the runner that wrote it.
pub const ROUND_PROPERTY: &str = "tributary.round";

/// What one table holds, for `status` and the resume decision.
#[derive(Debug)]
pub struct TableState {
    pub source: TableId,
    pub table: TableName,
    /// None: no Iceberg table yet. Some(None): a table without checkpoint.
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
    let catalog = config.sink.iceberg.catalog()?;
    let mut states = Vec::new();
    for source in MySqlSource::list_tables(&config.source.mysql).await? {
        let table = config.sink.iceberg.table_name(&source);
        let committed = match catalog.load_table(&table).await {
            Ok(t) => Some(committed_checkpoint(&t)?),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(e.with_context("table", &table)),
        };
        states.push(TableState {
            source,
            table,
            committed,
        });
    }
    Ok(states)
}

/// Where to resume (None: from the start) and the last round committed.
fn resume_point(states: &[TableState]) -> (Option<Checkpoint>, u64) {
    let last_round = states
        .iter()
        .filter_map(TableState::round)
        .max()
        .unwrap_or(0);
    let existing: Vec<&TableState> = states.iter().filter(|s| s.committed.is_some()).collect();
    if let Some(s) = existing.iter().find(|s| matches!(s.committed, Some(None))) {
        info!(table = %s.table, "table has no committed checkpoint: starting from the beginning");
        return (None, last_round);
    }
    let oldest = existing
        .into_iter()
        .min_by_key(|s| s.round().unwrap_or(0))
        .and_then(|s| s.committed.clone().flatten());
    (oldest, last_round)
}

pub struct SyncJob {
    config: PipelineConfig,
    catalog: Arc<dyn Catalog>,
    writers: BTreeMap<TableId, UpsertWriter>,
    round: u64,
    rows: u64,
}

impl SyncJob {
    /// Runs until the source ends (snapshot-only mode) or `stop` resolves.
    /// Stopping drops uncommitted changes; the next run reads them again.
    pub async fn run(config: PipelineConfig, stop: impl Future<Output = ()>) -> Result<()> {
        let catalog = config.sink.iceberg.catalog()?;
        let (resume, round) = resume_point(&table_states(&config).await?);
        match resume.as_ref().and_then(|c| c.position.as_ref()) {
            Some(p) => info!(position = %p, round, "resuming"),
            None => info!("starting: no committed position"),
        }
        let mut source = MySqlSource::start(config.source.mysql.clone(), resume.as_ref()).await?;
        let mut job = SyncJob {
            config,
            catalog,
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
        let name = self.config.sink.iceberg.table_name(&change.table);
        match self.catalog.load_table(&name).await {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                info!(table = %change.table, kind = ?change.kind, "ignored: no Iceberg table");
                Ok(())
            }
            Err(e) => Err(e),
            // The writer refuses it with the explanation.
            Ok(_) => self.writer_for_change(change).await,
        }
    }

    /// Opens the writer of a table that exists in Iceberg, only to have it
    /// judge a drop/truncate/rename (it has no schema to open with otherwise).
    async fn writer_for_change(&mut self, change: &SchemaChange) -> Result<()> {
        let schema = change.before.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                format!(
                    "{:?} of {}: its Iceberg table exists; stop, handle the table by hand, then resume",
                    change.kind, change.table
                ),
            )
        })?;
        self.writer(schema).await?.apply_schema_change(change).await
    }

    /// The writer of `schema`'s table, opened (and the table created) on
    /// first use.
    async fn writer(&mut self, schema: &TableSchema) -> Result<&mut UpsertWriter> {
        let id = schema.table.clone();
        if !self.writers.contains_key(&id) {
            let sink = &self.config.sink.iceberg;
            let name = sink.table_name(&id);
            if let Some((other, _)) = self
                .writers
                .iter()
                .find(|(t, _)| sink.table_name(t) == name)
            {
                return Err(Error::invalid_config(format!(
                    "{id} and {other} would both be written to {name}: set no sink.iceberg.namespace \
                     (each database gets its own) or select only one of them"
                )));
            }
            let config = sink.writer_config(&id)?;
            let writer =
                UpsertWriter::open_config(self.catalog.clone(), name.clone(), schema, config)
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
            table: TableName::new("db", table),
            committed: committed.map(|c| c.map(cp)),
        }
    }

    #[test]
    fn resume_from_the_oldest_round_or_from_scratch_when_a_table_has_none() {
        let round =
            |c: &Option<Checkpoint>| c.as_ref().map(|c| c.properties[ROUND_PROPERTY].clone());
        let (cp, last) = resume_point(&[
            state("a", Some(Some(7))),
            state("b", Some(Some(5))),
            state("c", None),
        ]);
        assert_eq!((round(&cp).as_deref(), last), (Some("5"), 7));
        let (cp, last) = resume_point(&[state("a", Some(Some(7))), state("b", Some(None))]);
        assert_eq!((cp.is_none(), last), (true, 7));
        let (cp, last) = resume_point(&[state("c", None)]);
        assert_eq!((cp.is_none(), last), (true, 0));
    }
}
