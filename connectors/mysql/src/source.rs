//! `MySqlSource`: snapshot and binlog as one source.
//!
//! The binlog stream starts first (at the current position on a fresh start,
//! at the checkpoint on a restart). Chunks are read one at a time, each at a
//! known binlog position S (see `snapshot`); a chunk is handed out when the
//! stream has handed out everything up to S and nothing after it. Checkpoints
//! carry the snapshot's progress, so a restart resumes the stream at its
//! position and the snapshot at its next chunk.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use tributary_core::{
    BinlogFilePos, Checkpoint, Error, ErrorKind, Result, Source, SourceRecord, TableId,
};

use crate::binlog::BinlogReader;
use crate::config::{MySqlSourceConfig, SnapshotMode, StartMode, TableFilter};
use crate::conn::{connect, map_err};
use crate::snapshot::{
    self, Chunk, FlowControl, SNAPSHOT_PROPERTY, SnapshotProgress, TablePlan, load_table_schema,
};

pub struct MySqlSource {
    config: Arc<MySqlSourceConfig>,
    binlog: Option<BinlogReader>,
    /// The snapshot connection (None once the snapshot is done).
    conn: Option<Conn>,
    progress: SnapshotProgress,
    plans: HashMap<TableId, TablePlan>,
    flow: FlowControl,
    /// A chunk waiting for the stream to reach its position.
    pending: Option<Chunk>,
    /// Snapshot-only mode keeps one transaction open per table.
    table_txn_open: bool,
    out: VecDeque<SourceRecord>,
}

impl MySqlSource {
    pub async fn start(
        config: MySqlSourceConfig,
        checkpoint: Option<&Checkpoint>,
    ) -> Result<MySqlSource> {
        config.validate()?;
        let mode = config.snapshot.mode;
        let mut conn = connect(&config).await?;
        let progress = match checkpoint {
            Some(cp) => match cp.properties.get(SNAPSHOT_PROPERTY) {
                Some(json) => serde_json::from_str(json)?,
                None => SnapshotProgress::default(),
            },
            None if mode == SnapshotMode::Never => SnapshotProgress::default(),
            None => {
                let filter = TableFilter::new(&config.tables)?;
                SnapshotProgress {
                    remaining: snapshot::list_tables(&mut conn, &filter).await?,
                    last_key: None,
                }
            }
        };
        let binlog = match mode {
            SnapshotMode::Only => None,
            _ => {
                let mut binlog_config = config.clone();
                if checkpoint.is_none() && mode == SnapshotMode::Initial {
                    // The stream must cover everything after the first chunk.
                    binlog_config.start = StartMode::Latest;
                }
                Some(BinlogReader::start(binlog_config, checkpoint).await?)
            }
        };
        let conn = if progress.is_done() {
            conn.disconnect()
                .await
                .map_err(|e| map_err("disconnect", e))?;
            None
        } else {
            snapshot::prepare_session(&mut conn).await?;
            Some(conn)
        };
        Ok(MySqlSource {
            flow: FlowControl::new(&config.snapshot),
            config: Arc::new(config),
            binlog,
            conn,
            progress,
            plans: HashMap::new(),
            pending: None,
            table_txn_open: false,
            out: VecDeque::new(),
        })
    }

    /// Where the snapshot stands (for status and tests).
    pub fn snapshot_progress(&self) -> &SnapshotProgress {
        &self.progress
    }

    /// Adds snapshot progress to a checkpoint while the snapshot runs.
    fn with_progress(&self, mut cp: Checkpoint) -> Result<Checkpoint> {
        if !self.progress.is_done() {
            cp.properties.insert(
                SNAPSHOT_PROPERTY.to_string(),
                serde_json::to_string(&self.progress)?,
            );
        }
        Ok(cp)
    }

    fn pass(&self, record: SourceRecord) -> Result<SourceRecord> {
        Ok(match record {
            SourceRecord::Checkpoint(cp) => SourceRecord::Checkpoint(self.with_progress(cp)?),
            other => other,
        })
    }

    /// Reads the next chunk of the table in progress into `pending`.
    async fn read_next_chunk(&mut self) -> Result<()> {
        let table = self.progress.remaining[0].clone();
        let only = self.binlog.is_none();
        let conn = self
            .conn
            .as_mut()
            .expect("a snapshot connection while the snapshot runs");
        if !self.plans.contains_key(&table) {
            let schema = load_table_schema(conn, &table, 1).await?;
            let schema = match self.binlog.as_mut() {
                Some(b) => b.adopt_schema(schema),
                None => Arc::new(schema),
            };
            self.plans.insert(
                table.clone(),
                TablePlan::new(schema, &self.config.snapshot)?,
            );
        }
        let plan = &self.plans[&table];
        // Per chunk a fresh snapshot at a known position; without a binlog
        // one snapshot for the whole table.
        let at = if only && self.table_txn_open {
            None
        } else {
            self.table_txn_open = true;
            begin_snapshot_behind_stream(conn, self.binlog.as_ref()).await?
        };
        let limit = self.flow.chunk_rows(self.config.snapshot.chunk_rows);
        let after = self.progress.last_key.as_deref();
        let chunk = snapshot::read_chunk(
            conn,
            plan,
            after,
            limit,
            at,
            self.config.zero_dates,
            &self.flow,
        )
        .await?;
        if !only || chunk.table_done {
            conn.query_drop("COMMIT")
                .await
                .map_err(|e| map_err("COMMIT", e))?;
            self.table_txn_open = false;
        }
        self.pending = Some(chunk);
        Ok(())
    }

    /// Hands out the pending chunk and records the progress it makes.
    async fn emit_chunk(&mut self) -> Result<()> {
        let chunk = self.pending.take().expect("a pending chunk");
        if !chunk.batch.is_empty() {
            self.out.push_back(SourceRecord::Changes(chunk.batch));
        }
        if chunk.table_done {
            let done = self.progress.remaining.remove(0);
            self.plans.remove(&done);
            self.progress.last_key = None;
        } else {
            self.progress.last_key = chunk.last_key;
        }
        let cp = match &self.binlog {
            Some(b) => b.checkpoint(None)?,
            None => Checkpoint::default(),
        };
        self.out
            .push_back(SourceRecord::Checkpoint(self.with_progress(cp)?));
        if self.progress.is_done()
            && let Some(conn) = self.conn.take()
        {
            conn.disconnect()
                .await
                .map_err(|e| map_err("disconnect", e))?;
        }
        Ok(())
    }
}

/// Starts a chunk's snapshot at a position the stream has not passed yet: a
/// transaction the reader already received may still be invisible to new
/// snapshots for a moment (binlog write precedes engine commit), so retry
/// until the snapshot includes everything the reader has seen.
async fn begin_snapshot_behind_stream(
    conn: &mut Conn,
    binlog: Option<&BinlogReader>,
) -> Result<Option<BinlogFilePos>> {
    let Some(binlog) = binlog else {
        return snapshot::begin_snapshot(conn, false).await;
    };
    let mut wait = Duration::from_millis(1);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let at = snapshot::begin_snapshot(conn, true)
            .await?
            .expect("a position with a binlog");
        if binlog.is_before(&at) {
            return Ok(Some(at));
        }
        conn.query_drop("ROLLBACK")
            .await
            .map_err(|e| map_err("ROLLBACK", e))?;
        if Instant::now() > deadline {
            return Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "for 30 s no snapshot caught up with the binlog stream (last snapshot at {at})"
                ),
            ));
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(100));
    }
}

#[async_trait]
impl Source for MySqlSource {
    async fn next(&mut self) -> Result<Option<SourceRecord>> {
        loop {
            if let Some(r) = self.out.pop_front() {
                return Ok(Some(r));
            }
            if let Some(chunk) = &self.pending {
                let record = match (self.binlog.as_mut(), chunk.at.clone()) {
                    (Some(binlog), Some(at)) => binlog.next_before(&at).await?,
                    _ => None,
                };
                match record {
                    Some(r) => {
                        let r = self.pass(r)?;
                        self.out.push_back(r);
                    }
                    None => self.emit_chunk().await?,
                }
                continue;
            }
            if !self.progress.is_done() {
                self.read_next_chunk().await?;
                continue;
            }
            let Some(binlog) = self.binlog.as_mut() else {
                return Ok(None);
            };
            let record = binlog.next().await?;
            return record.map(|r| self.pass(r)).transpose();
        }
    }
}
