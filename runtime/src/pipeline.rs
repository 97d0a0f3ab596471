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
//!
//! Per-table isolation (`[pipeline] on_table_error = "pause"`): a table
//! whose sink fails for a reason of its own (a refused DDL, a value its
//! target cannot take) is paused — its uncommitted changes dropped, its
//! target left at its last commit, its later changes skipped — while the
//! others go on. The paused set travels in every healthy table's checkpoint
//! (`tributary.paused`), so a restart keeps it, and the resume point ignores
//! paused tables (else one broken table would pin the binlog position for
//! good). `tributary resnapshot` heals one: its target is emptied and marked
//! (`tributary.resnapshot`), and the next start reads it in full while the
//! others resume.

use std::collections::BTreeMap;
use std::sync::Arc;

use tracing::{info, warn};
use tributary_core::{
    ChangeBatch, Checkpoint, Error, ErrorKind, Result, SchemaChange, Sink, SinkFactory,
    SourceFactory, SourceRecord, TableId, TableSchema, TargetState,
};

use crate::metrics::Metrics;
use crate::status::PipelineStatus;

#[cfg(test)]
use tributary_core::RESNAPSHOT_PROPERTY;
pub use tributary_core::ROUND_PROPERTY;
use tributary_core::{EPOCH_PROPERTY, OWNER_PROPERTY, PAUSED_PROPERTY};

/// What a table-scoped failure does (`[pipeline] on_table_error`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnTableError {
    /// The job stops (the default: nothing moves on without you).
    #[default]
    Stop,
    /// The table pauses; the others go on.
    Pause,
}

/// What a source position the source no longer has (purged binlogs) does
/// (`[pipeline] on_position_lost`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnPositionLost {
    /// The job stops, naming the fixes (the default).
    #[default]
    Stop,
    /// Every target is emptied and every table read again in full.
    Resnapshot,
}

/// The `[pipeline]` section of a pipeline file.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineOptions {
    #[serde(default)]
    pub on_table_error: OnTableError,
    /// Where `sync` serves `/metrics`, `/status`, completeness and the
    /// status page (e.g. `127.0.0.1:9464`); unset: no listener.
    #[serde(default)]
    pub http_listen: Option<String>,
    #[serde(default)]
    pub on_position_lost: OnPositionLost,
    /// Transient failures in a row (runs shorter than a minute) after which
    /// `sync` gives up instead of starting again (default: never).
    #[serde(default)]
    pub max_restarts: Option<u32>,
    /// The deadline of one sink call — a batch written, a schema change, a
    /// commit (default 10 min): a stuck store or server (a black-holed
    /// object store under the data files) fails it as a timeout and the
    /// run starts again from its commits, instead of hanging for ever.
    #[serde(default, with = "tributary_core::duration::option")]
    pub sink_timeout: Option<std::time::Duration>,
    /// How often an initial read logs its progress when stderr is not a
    /// terminal (default 10 s; on a terminal a progress bar shows it).
    #[serde(default, with = "tributary_core::duration::option")]
    pub progress_interval: Option<std::time::Duration>,
    /// Start the run again (from the last commit, with the restart backoff)
    /// when the source has handed out nothing — no change, no heartbeat —
    /// for this long (default: never). Set it above the source's
    /// `heartbeat_interval` and its longest snapshot chunk.
    #[serde(default, with = "tributary_core::duration::option")]
    pub restart_on_heartbeat_age: Option<std::time::Duration>,
    /// Start the run again when a table written this run lags more than
    /// this behind the source (now minus its watermark) and its watermark
    /// has not moved for as long: a run catching up after downtime (lag
    /// high but falling) is left alone (default: never).
    #[serde(default, with = "tributary_core::duration::option")]
    pub restart_on_lag: Option<std::time::Duration>,
}

/// `sink_timeout` when unset.
const SINK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

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
    metrics: Metrics,
    options: PipelineOptions,
    /// The source and sink kinds (`mysql`, `iceberg`…), for lineage.
    kinds: (String, String),
}

impl Pipeline {
    pub fn new(source: Arc<dyn SourceFactory>, sink: Arc<dyn SinkFactory>) -> Pipeline {
        Pipeline {
            source,
            sink,
            status: PipelineStatus::default(),
            metrics: Metrics::default(),
            options: PipelineOptions::default(),
            kinds: ("source".into(), "sink".into()),
        }
    }

    /// Names the source and sink kinds (for `/status` lineage).
    pub fn with_kinds(mut self, source: &str, sink: &str) -> Pipeline {
        self.kinds = (source.to_string(), sink.to_string());
        self
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn with_options(mut self, options: PipelineOptions) -> Pipeline {
        self.options = options;
        self
    }

    pub fn options(&self) -> &PipelineOptions {
        &self.options
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

    /// `tributary check`: what the source finds, then what the sink finds
    /// on the tables the source selects (none when it cannot list them).
    pub async fn check(&self) -> Vec<tributary_core::CheckFinding> {
        let mut out = self.source.check().await;
        let tables = self.source.list_tables().await.unwrap_or_default();
        out.extend(self.sink.check(&tables).await);
        out
    }

    /// `tributary resnapshot`: empties the targets of `tables` (claimed
    /// with an epoch above every table's) so the next start reads them in
    /// full while the others resume. Returns a line per table.
    pub async fn resnapshot(&self, tables: &[TableId]) -> Result<Vec<String>> {
        let states = self.table_states().await?;
        for t in tables {
            if !states.iter().any(|s| &s.source == t) {
                let selected: Vec<String> = states.iter().map(|s| s.source.to_string()).collect();
                return Err(Error::invalid_config(format!(
                    "{t} is not among the pipeline's selected tables ({}); check the name and \
                     tables.include",
                    selected.join(", ")
                )));
            }
        }
        let epoch = next_epoch(&states);
        let owner = format!("tributary resnapshot, pid {}", std::process::id());
        let mut lines = Vec::new();
        for s in states.iter().filter(|s| tables.contains(&s.source)) {
            if s.state == TargetState::Missing {
                lines.push(format!(
                    "{}: not created yet; the next start reads it in full",
                    s.source
                ));
                continue;
            }
            self.sink
                .discard(&s.source, epoch, &owner)
                .await
                .map_err(|e| e.with_context("table", &s.target))?;
            info!(table = %s.source, target = %s.target, "emptied for a new read");
            lines.push(format!(
                "{} -> {}: emptied; `sync` reads it in full while the other tables resume (a running job starts again at its next round)",
                s.source, s.target
            ));
        }
        Ok(lines)
    }

    /// Runs until the source ends (a bounded source) or `stop` resolves.
    /// Stopping drops uncommitted changes; the next run reads them again.
    /// A transient failure (a dropped or dead connection, a timeout) starts
    /// the run again from the last commit, after a backoff (1 s doubling to
    /// 1 min; back to 1 s after a run that lasted a minute); any other
    /// failure ends it.
    pub async fn run(&self, stop: impl Future<Output = ()>) -> Result<()> {
        tokio::pin!(stop);
        // Aborted when the run ends.
        let _http = match &self.options.http_listen {
            Some(addr) => Some(AbortOnDrop(
                crate::http::serve(
                    addr,
                    self.status.clone(),
                    self.metrics.clone(),
                    self.kinds.clone(),
                )
                .await?,
            )),
            None => None,
        };
        let mut delay = std::time::Duration::from_secs(1);
        let (mut in_a_row, mut resnapshotted) = (0u32, false);
        loop {
            let started = std::time::Instant::now();
            match self.run_once(stop.as_mut()).await {
                Err(e)
                    if e.kind() == ErrorKind::PositionLost
                        && self.options.on_position_lost == OnPositionLost::Resnapshot
                        && !resnapshotted =>
                {
                    // Once: a position lost again right after is not this.
                    resnapshotted = true;
                    warn!(error = %e, "the source position is lost: emptying every target and reading every table again in full (on_position_lost = \"resnapshot\")");
                    let states = self.table_states().await?;
                    let tables: Vec<TableId> = states
                        .into_iter()
                        .filter(|s| s.state != TargetState::Missing)
                        .map(|s| s.source)
                        .collect();
                    self.resnapshot(&tables).await?;
                }
                // A source that names its own fix (the relay's) keeps it.
                Err(e)
                    if e.kind() == ErrorKind::PositionLost
                        && e.to_string().contains("on_position_lost") =>
                {
                    return Err(e);
                }
                Err(e) if e.kind() == ErrorKind::PositionLost => {
                    return Err(e.map_text(|t| {
                        format!(
                            "{t}. Set [pipeline] on_position_lost = \"resnapshot\" to read every \
                             table again in full, or keep binlogs longer (binlog_expire_logs_seconds)"
                        )
                    }));
                }
                // A consumer-group rebalance: nothing failed, start again
                // from the targets' commits at once.
                Err(e) if e.kind() == ErrorKind::Reassigned => {
                    info!(reason = %e, "partitions reassigned: starting again from the last commits");
                    self.metrics.restart();
                }
                Err(e) if e.kind().is_transient() => {
                    if started.elapsed() >= std::time::Duration::from_secs(60) {
                        delay = std::time::Duration::from_secs(1);
                        in_a_row = 0;
                    }
                    in_a_row += 1;
                    if self.options.max_restarts.is_some_and(|max| in_a_row > max) {
                        return Err(e.map_text(|t| {
                            format!(
                                "{t} (gave up after {} restarts in a row: max_restarts)",
                                in_a_row - 1
                            )
                        }));
                    }
                    self.metrics.restart();
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
        // A relay consumer's checkpoint has no source position: its
        // tables' offsets are in the table-scoped properties.
        match checkpoint.as_ref() {
            Some(Checkpoint {
                position: Some(p), ..
            }) => info!(position = %p, round, "resuming"),
            Some(c) if !c.properties.is_empty() => {
                info!(round, "resuming from the tables' own committed state")
            }
            _ => info!("starting: no committed position"),
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
        for s in &states {
            self.status.update(&s.source, |t| {
                t.target = s.target.clone();
                if let Some(cp) = s.state.checkpoint().filter(|cp| !cp.is_resnapshot()) {
                    t.committed_round = cp.round();
                    t.committed_position = cp.position.clone();
                    t.watermark_micros = cp.watermark_micros;
                }
                t.paused = None;
            });
        }
        for (table, cause) in &resume.paused {
            warn!(table = %table, cause = %cause, "paused: its changes are skipped until `tributary resnapshot` heals it");
            self.status
                .update(table, |s| s.paused = Some(cause.clone()));
        }
        let progress = self.snapshot_progress(&states, checkpoint.as_ref()).await;
        let mut run = Run {
            source: self.source.as_ref(),
            progress,
            sink: self.sink.as_ref(),
            status: &self.status,
            metrics: &self.metrics,
            sinks: BTreeMap::new(),
            round,
            rows: 0,
            idle: states
                .iter()
                .filter(|s| s.state.checkpoint().is_some_and(|cp| !cp.is_resnapshot()))
                .filter(|s| !resume.paused.contains_key(&s.source))
                .map(|s| s.source.clone())
                .collect(),
            idle_recorded: None,
            owner,
            on_table_error: self.options.on_table_error,
            sink_timeout: self.options.sink_timeout.unwrap_or(SINK_TIMEOUT),
            paused: resume.paused.clone(),
            counters: BTreeMap::new(),
        };
        let silence = self.options.restart_on_heartbeat_age;
        let mut stall = LagWatch::default();
        loop {
            let quiet_until = silence.map(|age| tokio::time::Instant::now() + age);
            let record = tokio::select! {
                r = source.next() => r?,
                () = stop.as_mut() => {
                    info!(rows = run.rows, "stopped; changes after the last commit are read again on restart");
                    return Ok(());
                }
                () = sleep_until(quiet_until) => {
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        format!(
                            "the source handed out nothing (no change, no heartbeat) for {} \
                             (restart_on_heartbeat_age)",
                            humantime::format_duration(silence.unwrap_or_default())
                        ),
                    ));
                }
            };
            // A stuck commit stalls the watermark too: watched meanwhile.
            let applied = match self.options.restart_on_lag {
                None => run.apply(record).await?,
                Some(max) => tokio::select! {
                    r = run.apply(record) => r?,
                    e = stall.stalled(&self.status, max) => return Err(e),
                },
            };
            if !applied {
                info!(rows = run.rows, round = run.round, "source finished");
                return Ok(());
            }
        }
    }

    /// The progress view of this run's initial reads: the tables without a
    /// committed target are read in full (against the server's estimate of
    /// their rows); a read resumed part-way has no estimate.
    async fn snapshot_progress(
        &self,
        states: &[TableState],
        resume: Option<&Checkpoint>,
    ) -> crate::progress::SnapshotProgressView {
        let fresh: Vec<TableId> = states
            .iter()
            .filter(|s| s.state.checkpoint().is_none_or(Checkpoint::is_resnapshot))
            .map(|s| s.source.clone())
            .collect();
        let partial = resume.is_some_and(|cp| self.source.snapshot_in_progress(cp));
        let expected = match partial || fresh.is_empty() {
            true => None,
            // An estimate of 0 (statistics not gathered yet) is none.
            false => self.source.estimate_rows(&fresh).await.filter(|&n| n > 0),
        };
        let tables = if partial { states.len() } else { fresh.len() };
        crate::progress::SnapshotProgressView::new(
            tables,
            expected,
            self.options
                .progress_interval
                .unwrap_or(crate::progress::PROGRESS_INTERVAL),
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
        )
    }

    /// Takes the next owner epoch (one above any table's) and claims every
    /// committed target with it, before anything is read: a `sync` of the
    /// same pipeline still running (a rolling deploy, a second copy) is
    /// fenced at its next commit instead of adding its rows beside ours.
    async fn claim_tables(&self, states: &[TableState]) -> Result<Owner> {
        let epoch = next_epoch(states);
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "unknown host".into());
        let name = format!("tributary sync on {host}, pid {}", std::process::id());
        if self.source.shared_by_workers() {
            // Workers of one consumer group write the same tables: their
            // commits are kept apart by partition claims, not by fencing.
            return Ok(Owner { epoch: None, name });
        }
        let owner = Owner {
            epoch: Some(epoch),
            name,
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
    /// Tables paused by an earlier run (kept out of the resume point).
    paused: BTreeMap<TableId, String>,
}

/// One above every table's owner epoch: the epoch that fences them all.
fn next_epoch(states: &[TableState]) -> u64 {
    states
        .iter()
        .filter_map(|s| s.state.checkpoint()?.epoch())
        .max()
        .unwrap_or(0)
        + 1
}

/// The tables paused as of the newest commit round, with their causes
/// (a paused table read again since — emptied or gone — is healed).
pub fn paused_tables(states: &[TableState]) -> BTreeMap<TableId, String> {
    resume_point(states).paused
}

fn resume_point(states: &[TableState]) -> Resume {
    let last_round = states
        .iter()
        .filter_map(TableState::round)
        .max()
        .unwrap_or(0);
    // Emptied by `tributary resnapshot`: nothing committed, read again.
    let discarded = |s: &TableState| s.state.checkpoint().is_some_and(Checkpoint::is_resnapshot);
    let lost: Vec<TableId> = states
        .iter()
        .filter(|s| s.state == TargetState::CreatedWithoutCheckpoint || discarded(s))
        .map(|s| s.source.clone())
        .collect();
    let missing: Vec<TableId> = states
        .iter()
        .filter(|s| s.state == TargetState::Missing)
        .map(|s| s.source.clone())
        .collect();
    // The paused set of the newest round; a paused table read again since
    // (its target emptied or gone) is healed.
    let newest = states
        .iter()
        .filter_map(|s| s.state.checkpoint())
        .max_by_key(|cp| cp.round().unwrap_or(0));
    let paused: BTreeMap<TableId, String> = newest
        .map(Checkpoint::paused)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, cause)| {
            let s = states.iter().find(|s| s.source.to_string() == name)?;
            let healed = lost.contains(&s.source) || missing.contains(&s.source);
            (!healed).then(|| (s.source.clone(), cause))
        })
        .collect();
    // The oldest round's checkpoint among tables that count, with each
    // table's own state (its last schema) from that table's checkpoint:
    // each sink stores only its own.
    let counted = |s: &&TableState| !discarded(s) && !paused.contains_key(&s.source);
    let mut checkpoint = states
        .iter()
        .filter(counted)
        .filter_map(|s| s.state.checkpoint())
        .min_by_key(|cp| cp.round().unwrap_or(0))
        .cloned();
    if let Some(cp) = checkpoint.as_mut() {
        for s in states.iter().filter(|s| !discarded(s)) {
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
        paused,
    }
}

/// How often the position of tables idle since the run began is recorded
/// (besides the run's first commit round).
const IDLE_POSITION_INTERVAL: std::time::Duration = std::time::Duration::from_secs(300);

/// Resolves at `at`, or never.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// `restart_on_lag`: the oldest watermark and the newest committed round
/// of the tables written to, and since when neither has moved.
/// (oldest watermark, newest committed round) of the tables written to.
type Progress = (Option<i64>, Option<u64>);

#[derive(Default)]
struct LagWatch {
    progress: Option<(Progress, std::time::Instant)>,
    checked: Option<std::time::Instant>,
}

impl LagWatch {
    /// Resolves to the error that starts the run again once the tables
    /// stand still for `max` while lagging more than `max` (or, before any
    /// watermark — right after a snapshot — once no round committed for
    /// `max`); looks at most once a second.
    async fn stalled(&mut self, status: &PipelineStatus, max: std::time::Duration) -> Error {
        let second = std::time::Duration::from_secs(1);
        loop {
            if self.checked.is_none_or(|at| at.elapsed() >= second) {
                self.checked = Some(std::time::Instant::now());
                if let Err(e) = self.check(status, max) {
                    return e;
                }
            }
            tokio::time::sleep(second).await;
        }
    }

    fn check(&mut self, status: &PipelineStatus, max: std::time::Duration) -> Result<()> {
        // Tables never written to (idle ones) move only at idle commits.
        let tables = status.snapshot();
        let written: Vec<_> = tables
            .values()
            .filter(|s| s.rows_written > 0 && s.paused.is_none())
            .collect();
        if written.is_empty() {
            return Ok(());
        }
        let oldest = written.iter().filter_map(|s| s.watermark_micros).min();
        let round = written.iter().filter_map(|s| s.committed_round).max();
        let now = std::time::Instant::now();
        let since = match self.progress {
            Some((seen, since)) if seen == (oldest, round) => since,
            _ => {
                self.progress = Some(((oldest, round), now));
                now
            }
        };
        let still = now.duration_since(since);
        let now_micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        let lag = oldest
            .map(|w| std::time::Duration::from_micros(now_micros.saturating_sub(w).max(0) as u64));
        if still > max && lag.is_none_or(|lag| lag > max) {
            let behind = lag.map_or("no watermark yet".to_string(), |lag| {
                format!(
                    "{} behind the source",
                    humantime::format_duration(std::time::Duration::from_secs(lag.as_secs()))
                )
            });
            return Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "the targets ({behind}) have not moved for {} (restart_on_lag)",
                    humantime::format_duration(max)
                ),
            ));
        }
        Ok(())
    }
}

/// This run's owner epoch and description, stamped on every commit.
struct Owner {
    /// None for a worker of a consumer group (see `claim_tables`).
    epoch: Option<u64>,
    name: String,
}

/// One run's open sinks and counters.
struct Run<'a> {
    source: &'a dyn SourceFactory,
    progress: crate::progress::SnapshotProgressView,
    sink: &'a dyn SinkFactory,
    status: &'a PipelineStatus,
    metrics: &'a Metrics,
    sinks: BTreeMap<TableId, Box<dyn Sink>>,
    round: u64,
    rows: u64,
    /// Tables with a committed target and no change yet in this run (no
    /// sink open): their commits would otherwise stay where an earlier run
    /// left them and hold the resume point there for good.
    idle: std::collections::BTreeSet<TableId>,
    idle_recorded: Option<std::time::Instant>,
    owner: Owner,
    on_table_error: OnTableError,
    sink_timeout: std::time::Duration,
    /// Paused tables and their causes: their records are skipped.
    paused: BTreeMap<TableId, String>,
    /// Each open sink's counters when last added to the metrics.
    counters: BTreeMap<TableId, tributary_core::SinkCounters>,
}

impl Run<'_> {
    /// Applies one source record; false when the source has ended.
    async fn apply(&mut self, record: Option<SourceRecord>) -> Result<bool> {
        match record {
            Some(SourceRecord::Changes(batch)) => {
                let table = batch.schema().table.clone();
                if !self.paused.contains_key(&table) {
                    let r = self.write(&batch).await;
                    self.isolate(&table, r).await?;
                }
            }
            Some(SourceRecord::SchemaChange(change)) => {
                if !self.paused.contains_key(&change.table) {
                    let r = self.schema_change(&change).await;
                    self.isolate(&change.table, r).await?;
                }
            }
            Some(SourceRecord::Checkpoint(cp)) => {
                self.metrics.dead_letters(self.source.dead_letters());
                if !self.source.snapshot_in_progress(&cp) {
                    self.progress.finished();
                }
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
        self.metrics.batch(batch);
        let reads = (0..batch.len())
            .filter(|&r| batch.op(r) == tributary_core::Op::Read)
            .count();
        self.progress.rows(table, reads as u64);
        let limit = self.sink_timeout;
        let sink = self.sink_of(batch.schema()).await?;
        let started = std::time::Instant::now();
        tributary_core::within(
            limit,
            format!("writing to {table}'s sink"),
            sink.write(batch),
        )
        .await?;
        self.metrics
            .batch_written(table, batch.len(), started.elapsed().as_secs_f64());
        Ok(())
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
            (ROUND_PROPERTY, Some(self.round.to_string())),
            (EPOCH_PROPERTY, self.owner.epoch.map(|e| e.to_string())),
            (OWNER_PROPERTY, Some(self.owner.name.clone())),
        ] {
            if let Some(value) = value {
                checkpoint.properties.insert(key.to_string(), value);
            }
        }
        // A paused table has no sink to be fenced on: its healing is seen here.
        for table in self.paused.keys() {
            if let Some(restart) = self.resnapshot_requested(table).await {
                return Err(restart);
            }
        }
        let ids: Vec<TableId> = self.sinks.keys().cloned().collect();
        self.record_paused(&mut checkpoint)?;
        for id in ids {
            let Some(sink) = self.sinks.get_mut(&id) else {
                continue;
            };
            let started = std::time::Instant::now();
            let what = format!("committing {id}");
            let committed = tributary_core::within(
                self.sink_timeout,
                what,
                sink.commit(&checkpoint.for_table(&id)),
            )
            .await
            .map_err(|e| e.with_context("table", &id));
            self.metrics.commit(&id, started.elapsed().as_secs_f64());
            let counters = sink.counters();
            let last = self.counters.entry(id.clone()).or_default();
            self.metrics.sink_counters(&id, &counters.since(last));
            *last = counters;
            let ok = self.isolate(&id, committed).await?;
            // Paused by this round: the later tables' commits list it.
            self.record_paused(&mut checkpoint)?;
            // A worker of a group commits a claim: the table's watermark is
            // the merged one the sink committed.
            let mut watermark = checkpoint.watermark_micros;
            if ok && self.source.shared_by_workers() {
                let sink = self.sinks.get(&id).expect("committed above");
                watermark = sink.committed().await?.and_then(|c| c.watermark_micros);
            }
            if ok {
                self.status.update(&id, |s| {
                    s.committed_round = Some(self.round);
                    s.committed_position = checkpoint.position.clone();
                    s.watermark_micros = watermark.or(s.watermark_micros);
                });
            }
        }
        self.record_idle_positions(&checkpoint).await?;
        self.metrics.round();
        match &checkpoint.position {
            Some(p) => info!(round = self.round, position = %p, rows = self.rows, "committed"),
            // The relay's position is its offsets, in the properties.
            None => info!(round = self.round, rows = self.rows, "committed"),
        }
        Ok(())
    }

    /// When `tributary resnapshot` emptied `table` (its target is gone or
    /// holds a resnapshot checkpoint), the transient error that starts the
    /// run again: the new run reads it in full while the others resume.
    async fn resnapshot_requested(&self, table: &TableId) -> Option<Error> {
        let discarded = match self.sink.state(table).await.ok()? {
            TargetState::Missing => true,
            TargetState::Committed(cp) => cp.is_resnapshot(),
            TargetState::CreatedWithoutCheckpoint => false,
        };
        discarded.then(|| {
            Error::new(
                ErrorKind::CommitConflict,
                format!(
                    "{table} was emptied by `tributary resnapshot`: starting again to read it in \
                     full while the other tables resume"
                ),
            )
        })
    }

    /// Lists the paused tables in `checkpoint` (every healthy table's commit
    /// carries the set, so a restart keeps them paused).
    fn record_paused(&self, checkpoint: &mut Checkpoint) -> Result<()> {
        if !self.paused.is_empty() {
            let paused: BTreeMap<String, &String> = self
                .paused
                .iter()
                .map(|(t, c)| (t.to_string(), c))
                .collect();
            checkpoint
                .properties
                .insert(PAUSED_PROPERTY.to_string(), serde_json::to_string(&paused)?);
        }
        Ok(())
    }

    /// Passes `result` on, unless it is a failure of `table` alone and
    /// tables pause: then the table pauses (its sink and uncommitted
    /// changes dropped; the target stays at its last commit) and the run
    /// goes on. Transient failures restart the run; a fenced process, bad
    /// credentials or configuration, and I/O failures stop it.
    /// True when `result` was a success.
    async fn isolate(&mut self, table: &TableId, result: Result<()>) -> Result<bool> {
        let e = match result {
            Ok(()) => return Ok(true),
            Err(e) => e,
        };
        // Only what one table's data or schema causes pauses it: a failure
        // of the whole job's reach (credentials, configuration, I/O, a
        // newer owner) would otherwise pause every table one by one.
        let table_scoped = matches!(
            e.kind(),
            ErrorKind::SchemaMismatch
                | ErrorKind::Unsupported
                | ErrorKind::InvalidData
                | ErrorKind::ValidationFailed
                | ErrorKind::NotFound
                | ErrorKind::Unexpected
        );
        if e.kind() == ErrorKind::Fenced {
            return Err(self.resnapshot_requested(table).await.unwrap_or(e));
        }
        if self.on_table_error == OnTableError::Stop || !table_scoped {
            return Err(e);
        }
        if let Some(mut sink) = self.sinks.remove(table) {
            sink.discard_uncommitted();
        }
        self.idle.remove(table);
        let cause = e.to_string();
        tracing::error!(
            table = %table,
            cause = %cause,
            "paused: the table stays at its last commit and its changes are skipped; \
             the other tables go on. Fix the cause, then `tributary resnapshot {table}`"
        );
        self.status
            .update(table, |s| s.paused = Some(cause.clone()));
        self.paused.insert(table.clone(), cause);
        Ok(false)
    }

    /// Whether idle tables' positions are due (a round then happens even
    /// with no open sink: a pipeline with nothing to write still moves on).
    fn idle_due(&self) -> bool {
        self.idle.iter().any(|t| !self.sinks.contains_key(t))
            && self.idle_recorded.is_none_or(|at| {
                at.elapsed() >= self.sink.idle_interval().unwrap_or(IDLE_POSITION_INTERVAL)
            })
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
            let done = match self.sink.commit_position(t, &checkpoint.for_table(t)).await {
                Err(e) if e.kind() == ErrorKind::Fenced => {
                    return Err(self.resnapshot_requested(t).await.unwrap_or(e));
                }
                r => r.map_err(|e| e.with_context("table", t))?,
            };
            if done {
                recorded += 1;
                self.status.update(t, |s| {
                    s.committed_round = Some(self.round);
                    s.committed_position = checkpoint.position.clone();
                    s.watermark_micros = checkpoint.watermark_micros.or(s.watermark_micros);
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

    #[test]
    fn paused_tables_stay_paused_and_out_of_the_resume_point_until_read_again() {
        let with = |mut st: TableState, key: &str, value: &str| {
            if let TargetState::Committed(cp) = &mut st.state {
                cp.properties.insert(key.into(), value.into());
            }
            st
        };
        let paused = r#"{"db.a": "refused DDL"}"#;
        // a is paused at round 3; b and c committed later rounds listing it.
        let states = [
            state("a", Some(Some(3))),
            with(state("b", Some(Some(9))), PAUSED_PROPERTY, paused),
            with(state("c", Some(Some(8))), PAUSED_PROPERTY, paused),
        ];
        let r = resume_point(&states);
        assert_eq!(
            r.checkpoint.unwrap().round(),
            Some(8),
            "a does not pin the resume"
        );
        assert_eq!(
            r.paused.get(&TableId::new("db", "a")).map(String::as_str),
            Some("refused DDL")
        );
        // Discarded by `tributary resnapshot`: read again, no longer paused.
        let states = [
            with(state("a", Some(Some(3))), RESNAPSHOT_PROPERTY, "true"),
            states[1].clone(),
            states[2].clone(),
        ];
        let r = resume_point(&states);
        assert!(r.paused.is_empty());
        assert_eq!(r.lost, [TableId::new("db", "a")]);
        assert_eq!(r.checkpoint.unwrap().round(), Some(8));
    }
}
