//! `HaSink`: a primary and a standby sink (two clusters of any kind) behind
//! one `Sink`.
//!
//! Writes go to the active side. A failure of the active side that is
//! transient (`ErrorKind::is_transient`: refused connections, timeouts) is
//! retried there; after `failure_threshold` consecutive failures the sink
//! switches to the other side and first replays every write since the last
//! commit into it, so the batch in flight is not lost. The side left behind
//! drops its uncommitted writes (`Sink::discard_uncommitted`). While on the
//! standby, the primary is health-checked every `health_interval`; once it has
//! stayed healthy for `failback_after`, writes move back at the next commit
//! boundary (nothing to replay then). Every switch is logged and counted.
//!
//! Rows written to one side stay there: readers of a primary/standby pair
//! read both (for ClickHouse, the newest `_version` per key wins).
//! `committed()` is the newer of the two sides' checkpoints, so a restart
//! resumes after everything either side holds.

use std::cmp::Ordering;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use tributary_core::{ChangeBatch, Checkpoint, Error, Prepared, Result, SchemaChange, Sink};

/// Switching policy.
#[derive(Debug, Clone)]
pub struct HaConfig {
    /// Consecutive transient failures of the active side before switching
    /// (default 3; the wrapped sink's own retries come first).
    pub failure_threshold: u32,
    /// How often the primary is probed while the standby is active (default 5 s).
    pub health_interval: Duration,
    /// How long the primary must stay healthy before writes return (default 60 s).
    pub failback_after: Duration,
}

impl Default for HaConfig {
    fn default() -> Self {
        HaConfig {
            failure_threshold: 3,
            health_interval: Duration::from_secs(5),
            failback_after: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Primary,
    Standby,
}

/// Switch counters, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HaStats {
    pub failovers: u64,
    pub failbacks: u64,
    /// Transient failures absorbed (retried or switched away from).
    pub failures: u64,
}

/// One operation on the active side.
#[derive(Clone, Copy)]
enum Op<'a> {
    Write(&'a ChangeBatch),
    Schema(&'a SchemaChange),
    Commit(&'a Checkpoint),
    Prepare(&'a Checkpoint),
    /// Prepared work of the active side, and the checkpoint to commit
    /// instead if a switch makes the prepared work void.
    CommitPrepared(&'a [Prepared], &'a Checkpoint),
}

/// A write since the last commit, kept for a replay on the other side.
enum Pending {
    Batch(ChangeBatch),
    Schema(SchemaChange),
}

pub struct HaSink<S: Sink> {
    primary: S,
    standby: S,
    active: Side,
    config: HaConfig,
    pending: Vec<Pending>,
    consecutive_failures: u32,
    last_probe: Option<Instant>,
    healthy_since: Option<Instant>,
    stats: HaStats,
}

impl<S: Sink> HaSink<S> {
    pub fn new(primary: S, standby: S, config: HaConfig) -> HaSink<S> {
        HaSink {
            primary,
            standby,
            active: Side::Primary,
            config,
            pending: Vec::new(),
            consecutive_failures: 0,
            last_probe: None,
            healthy_since: None,
            stats: HaStats::default(),
        }
    }

    pub fn active(&self) -> Side {
        self.active
    }

    pub fn stats(&self) -> HaStats {
        self.stats
    }

    pub fn side(&self, side: Side) -> &S {
        match side {
            Side::Primary => &self.primary,
            Side::Standby => &self.standby,
        }
    }

    fn active_mut(&mut self) -> &mut S {
        match self.active {
            Side::Primary => &mut self.primary,
            Side::Standby => &mut self.standby,
        }
    }

    /// Runs `op` on the active side, absorbing transient failures: retry,
    /// and past the threshold switch sides (replaying pending writes).
    /// Returns what a `Prepare` prepared.
    async fn on_active(&mut self, mut op: Op<'_>) -> Result<Option<Prepared>> {
        let mut switched = false;
        loop {
            let sink = self.active_mut();
            let result = match op {
                Op::Write(b) => sink.write(b).await.map(|()| None),
                Op::Schema(c) => sink.apply_schema_change(c).await.map(|()| None),
                Op::Commit(cp) => sink.commit(cp).await.map(|()| None),
                Op::Prepare(cp) => sink.prepare(cp).await.map(Some),
                Op::CommitPrepared(p, _) => sink.commit_prepared(p.to_vec()).await.map(|()| None),
            };
            match result {
                Ok(done) => {
                    self.consecutive_failures = 0;
                    return Ok(done);
                }
                Err(e) if e.kind().is_transient() => {
                    self.stats.failures += 1;
                    self.consecutive_failures += 1;
                    if self.consecutive_failures < self.config.failure_threshold {
                        continue;
                    }
                    let both = |e: Error| e.with_context("ha", "primary and standby both failing");
                    if switched {
                        return Err(both(e));
                    }
                    self.switch(&e).await.map_err(both)?;
                    switched = true;
                    match op {
                        // The old side's prepared work was discarded: the
                        // replay rewrote it here, commit it in one step.
                        Op::CommitPrepared(_, cp) => op = Op::Commit(cp),
                        Op::Commit(_) | Op::Prepare(_) => {}
                        // The replay wrote it: it was pending too.
                        Op::Write(_) | Op::Schema(_) => return Ok(None),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Moves writes to the other side, replaying everything since the last
    /// commit there.
    async fn switch(&mut self, cause: &Error) -> Result<()> {
        let from = self.active;
        self.active_mut().discard_uncommitted();
        self.active = match from {
            Side::Primary => Side::Standby,
            Side::Standby => Side::Primary,
        };
        self.consecutive_failures = 0;
        self.healthy_since = None;
        match from {
            Side::Primary => self.stats.failovers += 1,
            Side::Standby => self.stats.failbacks += 1,
        }
        tracing::warn!(from = ?from, to = ?self.active, cause = %cause, replay = self.pending.len(), "sink switched");
        let pending = std::mem::take(&mut self.pending);
        let result = self.replay(&pending).await;
        self.pending = pending;
        result
    }

    async fn replay(&mut self, pending: &[Pending]) -> Result<()> {
        let target = self.active_mut();
        for p in pending {
            match p {
                Pending::Batch(b) => target.write(b).await?,
                Pending::Schema(c) => target.apply_schema_change(c).await?,
            }
        }
        Ok(())
    }

    /// While on the standby: probe the primary; fail back once it has been
    /// healthy long enough. Called at commit boundaries (nothing pending).
    async fn maybe_fail_back(&mut self) {
        if self.active != Side::Standby {
            return;
        }
        let due = self
            .last_probe
            .is_none_or(|t| t.elapsed() >= self.config.health_interval);
        if !due {
            return;
        }
        self.last_probe = Some(Instant::now());
        match self.primary.health_check().await {
            Ok(()) => {
                let since = *self.healthy_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= self.config.failback_after {
                    self.active = Side::Primary;
                    self.healthy_since = None;
                    self.stats.failbacks += 1;
                    tracing::info!("primary healthy again: sink switched back");
                }
            }
            Err(_) => self.healthy_since = None,
        }
    }
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Primary => "primary",
        Side::Standby => "standby",
    }
}

#[async_trait]
impl<S: Sink + Sync> Sink for HaSink<S> {
    async fn write(&mut self, batch: &ChangeBatch) -> Result<()> {
        self.pending.push(Pending::Batch(batch.clone()));
        self.on_active(Op::Write(batch)).await.map(drop)
    }

    async fn apply_schema_change(&mut self, change: &SchemaChange) -> Result<()> {
        self.pending.push(Pending::Schema(change.clone()));
        self.on_active(Op::Schema(change)).await.map(drop)
    }

    /// Prepares on the active side; the payload names that side.
    async fn prepare(&mut self, checkpoint: &Checkpoint) -> Result<Prepared> {
        let inner = self
            .on_active(Op::Prepare(checkpoint))
            .await?
            .ok_or_else(|| {
                Error::new(
                    tributary_core::ErrorKind::Unexpected,
                    "prepare returned nothing",
                )
            })?;
        Ok(Prepared {
            payload: serde_json::json!({ "side": side_name(self.active), "inner": inner.payload }),
            checkpoint: inner.checkpoint,
        })
    }

    /// Commits on the side that prepared; if the sides switched since, the
    /// replayed writes are committed on the active side in one step.
    async fn commit_prepared(&mut self, prepared: Vec<Prepared>) -> Result<()> {
        let Some(last) = prepared.last().map(|p| p.checkpoint.clone()) else {
            return Ok(());
        };
        let active = side_name(self.active);
        let inner: Option<Vec<Prepared>> = prepared
            .into_iter()
            .map(|p| {
                (p.payload.get("side").and_then(|s| s.as_str()) == Some(active)).then(|| Prepared {
                    checkpoint: p.checkpoint,
                    payload: p.payload.get("inner").cloned().unwrap_or_default(),
                })
            })
            .collect();
        match inner {
            Some(inner) => self.on_active(Op::CommitPrepared(&inner, &last)).await?,
            None => self.on_active(Op::Commit(&last)).await?,
        };
        self.pending.clear();
        self.maybe_fail_back().await;
        Ok(())
    }

    async fn commit(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        self.on_active(Op::Commit(checkpoint)).await?;
        self.pending.clear();
        self.maybe_fail_back().await;
        Ok(())
    }

    fn commit_due(&self) -> bool {
        self.side(self.active).commit_due()
    }

    /// The newer of the two sides' checkpoints.
    async fn committed(&self) -> Result<Option<Checkpoint>> {
        let a = self.primary.committed().await.ok().flatten();
        let b = self.standby.committed().await.ok().flatten();
        Ok(match (a, b) {
            (Some(a), Some(b)) => match b.position.partial_cmp(&a.position) {
                Some(Ordering::Greater) => Some(b),
                _ => Some(a),
            },
            (a, b) => a.or(b),
        })
    }

    async fn health_check(&self) -> Result<()> {
        self.side(self.active).health_check().await
    }

    fn discard_uncommitted(&mut self) {
        self.pending.clear();
        self.primary.discard_uncommitted();
        self.standby.discard_uncommitted();
    }

    /// Both sides' counters added up, and the pair's switches.
    fn counters(&self) -> tributary_core::SinkCounters {
        let (p, s) = (self.primary.counters(), self.standby.counters());
        tributary_core::SinkCounters {
            position_delete_files: p.position_delete_files + s.position_delete_files,
            equality_delete_files: p.equality_delete_files + s.equality_delete_files,
            copy_on_write_files: p.copy_on_write_files + s.copy_on_write_files,
            bloom_tests: p.bloom_tests + s.bloom_tests,
            bloom_skips: p.bloom_skips + s.bloom_skips,
            failovers: self.stats.failovers,
            failbacks: self.stats.failbacks,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};

    use super::*;
    use tributary_core::{
        ChangeEvent, Column, ColumnType, ErrorKind, Op, TableId, TableSchema, Value,
    };

    /// An in-memory sink whose endpoint can be made unreachable.
    #[derive(Default)]
    struct Endpoint {
        down: Arc<AtomicBool>,
        buffered: Vec<i32>,
        committed: Vec<i32>,
        commits: usize,
    }

    impl Endpoint {
        fn check(&self) -> Result<()> {
            if self.down.load(AtomicOrdering::SeqCst) {
                Err(Error::new(ErrorKind::Connection, "connection refused"))
            } else {
                Ok(())
            }
        }
    }

    #[async_trait]
    impl Sink for Endpoint {
        async fn write(&mut self, batch: &ChangeBatch) -> Result<()> {
            self.check()?;
            for e in batch.to_events() {
                if let Some(Value::Int32(id)) = e.after.as_ref().map(|r| r[0].clone()) {
                    self.buffered.push(id);
                }
            }
            Ok(())
        }
        async fn apply_schema_change(&mut self, _: &SchemaChange) -> Result<()> {
            self.check()
        }
        async fn prepare(&mut self, cp: &Checkpoint) -> Result<Prepared> {
            self.check()?;
            Ok(Prepared {
                checkpoint: cp.clone(),
                payload: serde_json::json!(self.buffered.len()),
            })
        }
        async fn commit_prepared(&mut self, _: Vec<Prepared>) -> Result<()> {
            self.check()?;
            self.committed.append(&mut self.buffered);
            self.commits += 1;
            Ok(())
        }
        fn discard_uncommitted(&mut self) {
            self.buffered.clear();
        }
        async fn committed(&self) -> Result<Option<Checkpoint>> {
            Ok(None)
        }
        async fn health_check(&self) -> Result<()> {
            self.check()
        }
    }

    fn batch(ids: &[i32]) -> ChangeBatch {
        let schema = Arc::new(
            TableSchema::new(
                TableId::new("d", "t"),
                vec![Column::new("id", ColumnType::Int32, false)],
                &["id"],
                1,
            )
            .unwrap(),
        );
        let events: Vec<ChangeEvent> = ids
            .iter()
            .map(|&id| ChangeEvent {
                table: schema.table.clone(),
                op: Op::Insert,
                before: None,
                after: Some(vec![Value::Int32(id)]),
                position: None,
                commit_ts_micros: 0,
                schema_version: 1,
            })
            .collect();
        ChangeBatch::from_events(schema, &events).unwrap()
    }

    #[tokio::test]
    async fn fails_over_with_the_batch_in_flight_and_fails_back_when_healthy() {
        let (primary, standby) = (Endpoint::default(), Endpoint::default());
        let primary_down = primary.down.clone();
        let config = HaConfig {
            failure_threshold: 2,
            health_interval: Duration::ZERO,
            failback_after: Duration::ZERO,
        };
        let mut ha = HaSink::new(primary, standby, config);
        ha.write(&batch(&[1, 2])).await.unwrap();
        ha.commit(&Checkpoint::default()).await.unwrap();

        // The primary goes down between a write and its commit.
        ha.write(&batch(&[3])).await.unwrap();
        primary_down.store(true, AtomicOrdering::SeqCst);
        ha.write(&batch(&[4])).await.unwrap();
        ha.commit(&Checkpoint::default()).await.unwrap();
        assert_eq!(ha.active(), Side::Standby);
        assert_eq!(
            ha.side(Side::Standby).committed,
            [3, 4],
            "in-flight rows replayed"
        );
        assert_eq!(
            ha.side(Side::Primary).buffered,
            Vec::<i32>::new(),
            "discarded"
        );
        assert_eq!(ha.stats().failovers, 1);

        // Still down: stays on the standby.
        ha.write(&batch(&[5])).await.unwrap();
        ha.commit(&Checkpoint::default()).await.unwrap();
        assert_eq!(ha.active(), Side::Standby);

        // Healthy again: back at the next commit boundary.
        primary_down.store(false, AtomicOrdering::SeqCst);
        ha.write(&batch(&[6])).await.unwrap();
        ha.commit(&Checkpoint::default()).await.unwrap();
        assert_eq!(ha.active(), Side::Primary);
        ha.write(&batch(&[7])).await.unwrap();
        ha.commit(&Checkpoint::default()).await.unwrap();
        assert_eq!(ha.side(Side::Primary).committed, [1, 2, 7]);
        assert_eq!(ha.side(Side::Standby).committed, [3, 4, 5, 6]);
        assert_eq!((ha.stats().failovers, ha.stats().failbacks), (1, 1));
    }

    #[tokio::test]
    async fn both_sides_down_is_an_error_and_other_errors_never_switch() {
        let (primary, standby) = (Endpoint::default(), Endpoint::default());
        let (p, s) = (primary.down.clone(), standby.down.clone());
        let mut ha = HaSink::new(primary, standby, HaConfig::default());
        p.store(true, AtomicOrdering::SeqCst);
        s.store(true, AtomicOrdering::SeqCst);
        let e = ha.write(&batch(&[1])).await.unwrap_err();
        assert!(e.to_string().contains("both failing"), "{e}");
    }

    #[tokio::test]
    async fn a_switch_between_prepare_and_commit_commits_the_replayed_writes_on_the_new_side() {
        let (primary, standby) = (Endpoint::default(), Endpoint::default());
        let primary_down = primary.down.clone();
        let config = HaConfig {
            failure_threshold: 1,
            ..HaConfig::default()
        };
        let mut ha = HaSink::new(primary, standby, config);
        ha.write(&batch(&[1, 2])).await.unwrap();
        let prepared = ha.prepare(&Checkpoint::default()).await.unwrap();
        assert_eq!(prepared.payload["side"], "primary");
        // Serializable: a committer elsewhere gets it back as it was.
        let prepared: Prepared =
            serde_json::from_str(&serde_json::to_string(&prepared).unwrap()).unwrap();
        primary_down.store(true, AtomicOrdering::SeqCst);
        ha.commit_prepared(vec![prepared]).await.unwrap();
        assert_eq!(ha.active(), Side::Standby);
        assert_eq!(ha.side(Side::Standby).committed, [1, 2]);
        assert!(ha.side(Side::Primary).committed.is_empty());
    }
}
