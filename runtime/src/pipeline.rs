//! The pipeline runner: one source applied to one sink kind, exactly once.
//!
//! Every source table gets its own sink (and target table), opened at the
//! table's first change. At a source checkpoint, when any sink says a
//! commit is due, all sinks commit in one *round* with the same checkpoint,
//! stamped with the round number (`tributary.round`). Sinks with nothing
//! new skip the commit, so their tables keep an older round.
//!
//! Resume: the oldest committed round among the source's tables is where
//! every table is complete (round numbers order checkpoints even where source
//! positions tie, e.g. snapshot progress on an idle server). The source
//! restarts there; sinks drop change events their own table already has,
//! and re-read snapshot rows are upserts. A target table that exists without
//! any checkpoint (a crash before its first commit) holds nothing committed:
//! it is emptied and queued for a new read in the resume checkpoint.
//! (Restarting everything from scratch instead would be wrong: a new
//! snapshot cannot delete rows that other tables already hold and that the
//! source deleted meanwhile.)

use std::collections::BTreeMap;
use std::sync::Arc;

use tracing::{info, warn};
use tributary_core::{
    ChangeBatch, Checkpoint, Error, ErrorKind, Result, SchemaChange, Sink, SinkFactory,
    SourceFactory, SourceRecord, TableId, TableSchema, TargetState,
};

use crate::status::PipelineStatus;

pub use tributary_core::ROUND_PROPERTY;
use tributary_core::{EPOCH_PROPERTY, OWNER_PROPERTY};

/// Aborts a background task when the run that started it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What one table holds, for `status` and the resume decision.
#[derive(Debug, Clone)]
pub struct TableState {
    pub source: TableId,
    pub target: String,
    pub state: TargetState,
}

impl TableState {
    fn round(&self) -> Option<u64> {
        self.state.checkpoint()?.round()
    }
}

/// A configured pipeline: the factories of its source and sink.
pub struct Pipeline {
    source: Arc<dyn SourceFactory>,
    sink: Arc<dyn SinkFactory>,
    status: PipelineStatus,
}

impl Pipeline {
    pub fn new(source: Arc<dyn SourceFactory>, sink: Arc<dyn SinkFactory>) -> Pipeline {
        Pipeline {
            source,
            sink,
            status: PipelineStatus::default(),
        }
    }

    pub fn sink(&self) -> &dyn SinkFactory {
        self.sink.as_ref()
    }

    pub fn source(&self) -> &dyn SourceFactory {
        self.source.as_ref()
    }

    /// Live per-table status of `run`.
    pub fn status(&self) -> PipelineStatus {
        self.status.clone()
    }

    /// The committed state of every table the source selects.
    pub async fn table_states(&self) -> Result<Vec<TableState>> {
        let mut states = Vec::new();
        for source in self.source.list_tables().await? {
            let target = self.sink.target_name(&source);
            let state = self
                .sink
                .state(&source)
                .await
                .map_err(|e| e.with_context("table", &target))?;
            states.push(TableState {
                source,
                target,
                state,
            });
        }
        Ok(states)
    }

    /// Runs until the source ends (a bounded source) or `stop` resolves.
    /// Stopping drops uncommitted changes; the next run reads them again.
    /// A transient failure (a dropped or dead connection, a timeout) starts
    /// the run again from the last commit, after a backoff (1 s doubling to
    /// 1 min; back to 1 s after a run that lasted a minute); any other
    /// failure ends it.
    pub async fn run(&self, stop: impl Future<Output = ()>) -> Result<()> {
        tokio::pin!(stop);
        let mut delay = std::time::Duration::from_secs(1);
        loop {
            let started = std::time::Instant::now();
            match self.run_once(stop.as_mut()).await {
                Err(e) if e.kind().is_transient() => {
                    if started.elapsed() >= std::time::Duration::from_secs(60) {
                        delay = std::time::Duration::from_secs(1);
                    }
                    warn!(error = %e, retry_in = ?delay, "transient failure: starting again from the last commit");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = &mut stop => return Ok(()),
                    }
                    delay = (delay * 2).min(std::time::Duration::from_secs(60));
                }
                other => return other,
            }
        }
    }

    async fn run_once(&self, mut stop: std::pin::Pin<&mut impl Future<Output = ()>>) -> Result<()> {
        let states = self.table_states().await?;
        let owner = self.claim_tables(&states).await?;
        let resume = resume_point(&states);
        let (checkpoint, round) = (self.recover_lost_tables(&resume).await?, resume.last_round);
        match checkpoint.as_ref().and_then(|c| c.position.as_ref()) {
            Some(p) => info!(position = %p, round, "resuming"),
            None => info!("starting: no committed position"),
        }
        let mut source = self.source.open(checkpoint.as_ref()).await?;
        // Dropped (cancelled) when the run ends.
        let _maintenance = self
            .sink
            .maintenance()
            .and_then(|m| m.background_interval())
            .map(|interval| {
                let task = crate::maintenance::background(
                    self.sink.clone(),
                    self.status.clone(),
                    interval,
                );
                AbortOnDrop(tokio::spawn(task))
            });
        let mut run = Run {
            sink: self.sink.as_ref(),
            status: &self.status,
            sinks: BTreeMap::new(),
            round,
            rows: 0,
            idle: states
                .iter()
                .filter(|s| matches!(s.state, TargetState::Committed(_)))
                .map(|s| s.source.clone())
                .collect(),
            idle_recorded: None,
            owner,
        };
        loop {
            let record = tokio::select! {
                r = source.next() => r?,
                () = stop.as_mut() => {
                    info!(rows = run.rows, "stopped; changes after the last commit are read again on restart");
                    return Ok(());
                }
            };
            if !run.apply(record).await? {
                info!(rows = run.rows, round = run.round, "source finished");
                return Ok(());
            }
        }
    }

    /// Takes the next owner epoch (one above any table's) and claims every
    /// committed target with it, before anything is read: a `sync` of the
    /// same pipeline still running (a rolling deploy, a second copy) is
    /// fenced at its next commit instead of adding its rows beside ours.
    async fn claim_tables(&self, states: &[TableState]) -> Result<Owner> {
        let epoch = states
            .iter()
            .filter_map(|s| s.state.checkpoint()?.epoch())
            .max()
            .unwrap_or(0)
            + 1;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "unknown host".into());
        let owner = Owner {
            epoch,
            name: format!("tributary sync on {host}, pid {}", std::process::id()),
        };
        let mut claimed = 0;
        for s in states.iter().filter(|s| s.state.checkpoint().is_some()) {
            self.sink
                .claim(&s.source, epoch, &owner.name)
                .await
                .map_err(|e| e.with_context("table", &s.target))?;
            claimed += 1;
        }
        info!(epoch, tables = claimed, "claimed the targets");
        Ok(owner)
    }

    /// Empties the tables that lost their state and queues them for a new
    /// read in the resume checkpoint (which the source may refuse, e.g.
    /// without snapshots). Returns the checkpoint to resume from.
    async fn recover_lost_tables(&self, resume: &Resume) -> Result<Option<Checkpoint>> {
        let mut checkpoint = resume.checkpoint.clone();
        // Tables selected now whose target was never written (added to the
        // include list since, or a target dropped by hand): read in full
        // while the others resume — else they would get only the changes
        // from here on.
        if let Some(cp) = checkpoint.as_mut()
            && !resume.missing.is_empty()
        {
            let mut queued = cp.clone();
            match self.source.requeue(&mut queued, &resume.missing) {
                Ok(()) => {
                    for t in &resume.missing {
                        info!(table = %t, "not read yet: snapshotted while the others resume");
                    }
                    *cp = queued;
                }
                Err(e) => {
                    for t in &resume.missing {
                        warn!(table = %t, "not read yet, and the source cannot read it in full ({e}): its changes from here on only");
                    }
                }
            }
        }
        if resume.lost.is_empty() {
            return Ok(checkpoint);
        }
        if let Some(cp) = checkpoint.as_mut() {
            self.source.requeue(cp, &resume.lost)?;
        }
        for t in &resume.lost {
            warn!(table = %t, "no committed checkpoint: emptied, to be snapshotted again");
            self.sink.reset(t).await?;
        }
        Ok(checkpoint)
    }
}

/// Where to resume.
#[derive(Debug)]
struct Resume {
    /// The oldest committed round's checkpoint (None: from the start).
    checkpoint: Option<Checkpoint>,
    last_round: u64,
    /// Target tables that exist without a checkpoint: nothing of theirs is
    /// committed, so they are emptied and read again.
    lost: Vec<TableId>,
    /// Selected tables without a target table: never read.
    missing: Vec<TableId>,
}

fn resume_point(states: &[TableState]) -> Resume {
    let last_round = states
        .iter()
        .filter_map(TableState::round)
        .max()
        .unwrap_or(0);
    let with_state = |state: TargetState| -> Vec<TableId> {
        states
            .iter()
            .filter(|s| s.state == state)
            .map(|s| s.source.clone())
            .collect()
    };
    let (lost, missing) = (
        with_state(TargetState::CreatedWithoutCheckpoint),
        with_state(TargetState::Missing),
    );
    // The oldest round's checkpoint, with each table's own state (its last
    // schema) from that table's checkpoint: each sink stores only its own.
    let mut checkpoint = states
        .iter()
        .filter_map(|s| s.state.checkpoint())
        .min_by_key(|cp| cp.round().unwrap_or(0))
        .cloned();
    if let Some(cp) = checkpoint.as_mut() {
        for s in states {
            if let Some(own) = s.state.checkpoint() {
                cp.adopt_table_state(&s.source, own);
            }
        }
    }
    Resume {
        checkpoint,
        last_round,
        lost,
        missing,
    }
}

/// How often the position of tables idle since the run began is recorded
/// (besides the run's first commit round).
const IDLE_POSITION_INTERVAL: std::time::Duration = std::time::Duration::from_secs(300);

/// This run's owner epoch and description, stamped on every commit.
struct Owner {
    epoch: u64,
    name: String,
}

/// One run's open sinks and counters.
struct Run<'a> {
    sink: &'a dyn SinkFactory,
    status: &'a PipelineStatus,
    sinks: BTreeMap<TableId, Box<dyn Sink>>,
    round: u64,
    rows: u64,
    /// Tables with a committed target and no change yet in this run (no
    /// sink open): their commits would otherwise stay where an earlier run
    /// left them and hold the resume point there for good.
    idle: std::collections::BTreeSet<TableId>,
    idle_recorded: Option<std::time::Instant>,
    owner: Owner,
}

impl Run<'_> {
    /// Applies one source record; false when the source has ended.
    async fn apply(&mut self, record: Option<SourceRecord>) -> Result<bool> {
        match record {
            Some(SourceRecord::Changes(batch)) => self.write(&batch).await?,
            Some(SourceRecord::SchemaChange(change)) => self.schema_change(&change).await?,
            Some(SourceRecord::Checkpoint(cp)) => {
                if self.sinks.values().any(|w| w.commit_due()) || self.idle_due() {
                    self.commit_round(cp).await?;
                }
            }
            None => return Ok(false),
        }
        Ok(true)
    }

    async fn write(&mut self, batch: &ChangeBatch) -> Result<()> {
        self.rows += batch.len() as u64;
        let table = &batch.schema().table;
        self.status
            .update(table, |s| s.rows_written += batch.len() as u64);
        self.sink_of(batch.schema()).await?.write(batch).await
    }

    async fn schema_change(&mut self, change: &SchemaChange) -> Result<()> {
        if let Some(after) = &change.after {
            return self.sink_of(after).await?.apply_schema_change(change).await;
        }
        if let Some(w) = self.sinks.get_mut(&change.table) {
            return w.apply_schema_change(change).await;
        }
        match self.sink.state(&change.table).await? {
            TargetState::Missing => {
                info!(table = %change.table, kind = ?change.kind, "ignored: no target table");
                Ok(())
            }
            // The sink refuses it with the explanation.
            _ => self.sink_for_change(change).await,
        }
    }

    /// Opens the sink of a table whose target exists, only to have it
    /// judge a drop/truncate/rename (it has no schema to open with otherwise).
    async fn sink_for_change(&mut self, change: &SchemaChange) -> Result<()> {
        let schema = change.before.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                format!(
                    "{:?} of {}: its target table exists; stop, handle the table by hand, then resume",
                    change.kind, change.table
                ),
            )
        })?;
        self.sink_of(schema)
            .await?
            .apply_schema_change(change)
            .await
    }

    /// The sink of `schema`'s table, opened (and the target created) on
    /// first use.
    async fn sink_of(&mut self, schema: &TableSchema) -> Result<&mut Box<dyn Sink>> {
        let id = schema.table.clone();
        if !self.sinks.contains_key(&id) {
            let name = self.sink.target_name(&id);
            if let Some(other) = self.sinks.keys().find(|t| self.sink.target_name(t) == name) {
                return Err(Error::invalid_config(format!(
                    "{id} and {other} would both be written to {name}: give the sink a target \
                     per table (leave its namespace/table setting unset), or select only one of them"
                )));
            }
            let sink = self
                .sink
                .open(schema)
                .await
                .map_err(|e| e.with_context("table", &name))?;
            info!(source = %id, table = %name, "writing");
            self.status.update(&id, |s| s.target = name);
            self.sinks.insert(id.clone(), sink);
        }
        Ok(self.sinks.get_mut(&id).expect("inserted above"))
    }

    /// Commits every sink with `checkpoint`, in table order.
    async fn commit_round(&mut self, mut checkpoint: Checkpoint) -> Result<()> {
        self.round += 1;
        for (key, value) in [
            (ROUND_PROPERTY, self.round.to_string()),
            (EPOCH_PROPERTY, self.owner.epoch.to_string()),
            (OWNER_PROPERTY, self.owner.name.clone()),
        ] {
            checkpoint.properties.insert(key.to_string(), value);
        }
        for (id, sink) in &mut self.sinks {
            sink.commit(&checkpoint.for_table(id))
                .await
                .map_err(|e| e.with_context("table", id))?;
            self.status.update(id, |s| {
                s.committed_round = Some(self.round);
                s.committed_position = checkpoint.position.clone();
            });
        }
        self.record_idle_positions(&checkpoint).await?;
        match &checkpoint.position {
            Some(p) => info!(round = self.round, position = %p, rows = self.rows, "committed"),
            None => warn!(round = self.round, "committed without a source position"),
        }
        Ok(())
    }

    /// Whether idle tables' positions are due (a round then happens even
    /// with no open sink: a pipeline with nothing to write still moves on).
    fn idle_due(&self) -> bool {
        self.idle.iter().any(|t| !self.sinks.contains_key(t))
            && self
                .idle_recorded
                .is_none_or(|at| at.elapsed() >= IDLE_POSITION_INTERVAL)
    }

    /// Records `checkpoint` on each table idle since the run began (at the
    /// first round, then every `IDLE_POSITION_INTERVAL`): none of its
    /// changes arrived since the resume point, so it is complete up to here.
    async fn record_idle_positions(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        if !self.idle_due() {
            return Ok(());
        }
        let sinks = &self.sinks;
        self.idle.retain(|t| !sinks.contains_key(t));
        self.idle_recorded = Some(std::time::Instant::now());
        let mut recorded = 0;
        for t in &self.idle {
            if self
                .sink
                .commit_position(t, &checkpoint.for_table(t))
                .await
                .map_err(|e| e.with_context("table", t))?
            {
                recorded += 1;
                self.status.update(t, |s| {
                    s.committed_round = Some(self.round);
                    s.committed_position = checkpoint.position.clone();
                });
            }
        }
        if recorded > 0 {
            info!(
                round = self.round,
                tables = recorded,
                "recorded the position of idle tables"
            );
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
            target: format!("db.{table}"),
            state: match committed {
                None => TargetState::Missing,
                Some(None) => TargetState::CreatedWithoutCheckpoint,
                Some(Some(r)) => TargetState::Committed(cp(r)),
            },
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
