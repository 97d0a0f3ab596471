//! `MySqlSource`: snapshot and binlog as one source.
//!
//! The binlog stream starts first (at the current position on a fresh start,
//! at the checkpoint on a restart). The snapshot proceeds in rounds: the next
//! keys of the table are split into up to `max_connections` ranges, read in
//! parallel, each in its own consistent snapshot at a known binlog position S
//! (see `snapshot`). A chunk is handed out when the stream has handed out
//! everything up to its S and nothing after it; chunks cover disjoint keys,
//! so their order among themselves does not matter. Checkpoints carry the
//! snapshot's progress after each round, so a restart resumes the stream at
//! its position and the snapshot at the next round.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::try_join_all;
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use tributary_core::{
    BinlogFilePos, Checkpoint, Error, ErrorKind, Result, RetryPolicy, SchemaChangeKind, Source,
    SourceRecord, TableId, Value, changelog::ChangelogEncoder, retry,
};

use crate::binlog::BinlogReader;
use crate::binlog::reader::selected_keys;
use crate::config::{KeylessPolicy, MySqlSourceConfig, SnapshotMode, StartMode, TableFilter};
use crate::conn::{connect, map_err};
use crate::keys::TableKey;
use crate::snapshot::{
    self, Chunk, FlowControl, KeyRange, KeylessRead, SNAPSHOT_PROPERTY, SnapshotProgress,
    TablePlan, load_table_schema,
};

/// What the snapshot's progress becomes once a round's chunks are all out.
struct RoundEnd {
    table_done: bool,
    last_key: Option<Vec<Value>>,
}

pub struct MySqlSource {
    config: Arc<MySqlSourceConfig>,
    binlog: Option<BinlogReader>,
    /// Snapshot connections (empty once the snapshot is done).
    conns: Vec<Conn>,
    progress: SnapshotProgress,
    plans: HashMap<TableId, TablePlan>,
    flow: Arc<FlowControl>,
    /// This round's chunks, by snapshot position, waiting for the stream.
    pending: VecDeque<Chunk>,
    /// A keyless table being read (one round: the whole table).
    keyless: Option<KeylessRead>,
    round_end: Option<RoundEnd>,
    /// Snapshot-only mode keeps one transaction open per table.
    table_txn_open: bool,
    /// Each selected table's key (see `keys`).
    keys: HashMap<TableId, TableKey>,
    /// Under keyless = "changelog": keyless tables' changes as changelog rows.
    changelog: Option<ChangelogEncoder>,
    out: VecDeque<SourceRecord>,
}

impl MySqlSource {
    pub async fn start(
        config: MySqlSourceConfig,
        checkpoint: Option<&Checkpoint>,
    ) -> Result<MySqlSource> {
        config.validate()?;
        let mode = config.snapshot.mode;
        let progress = match checkpoint {
            Some(cp) => match cp.properties.get(SNAPSHOT_PROPERTY) {
                Some(json) => serde_json::from_str(json)?,
                None => SnapshotProgress::default(),
            },
            None if mode == SnapshotMode::Never => SnapshotProgress::default(),
            None => {
                let mut conn = connect(&config).await?;
                let filter = TableFilter::new(&config.tables)?;
                let remaining = snapshot::list_tables(&mut conn, &filter).await?;
                conn.disconnect()
                    .await
                    .map_err(|e| map_err("disconnect", e))?;
                SnapshotProgress {
                    remaining,
                    last_key: None,
                }
            }
        };
        let binlog = match mode {
            SnapshotMode::Only => None,
            _ => {
                let mut binlog_config = config.clone();
                if checkpoint.is_none() && mode == SnapshotMode::Initial {
                    // The stream must cover everything after the first chunk:
                    // start where a consistent snapshot sees the binlog now
                    // (every later chunk's snapshot is at or after it).
                    binlog_config.start = StartMode::Position {
                        position: snapshot_start(&config).await?,
                    };
                }
                Some(BinlogReader::start(binlog_config, checkpoint).await?)
            }
        };
        let keys = match &binlog {
            Some(b) => b.keys().clone(),
            None => {
                let mut conn = connect(&config).await?;
                let filter = TableFilter::new(&config.tables)?;
                let keys = selected_keys(&mut conn, &config, &filter).await?;
                conn.disconnect()
                    .await
                    .map_err(|e| map_err("disconnect", e))?;
                keys
            }
        };
        let mut conns = Vec::new();
        if !progress.is_done() {
            let n = if binlog.is_some() {
                config.snapshot.max_connections
            } else {
                1
            };
            for _ in 0..n {
                let mut conn = connect(&config).await?;
                snapshot::prepare_session(&mut conn).await?;
                conns.push(conn);
            }
        }
        Ok(MySqlSource {
            changelog: (config.keyless == KeylessPolicy::Changelog).then(ChangelogEncoder::default),
            flow: Arc::new(FlowControl::new(&config.snapshot)),
            config: Arc::new(config),
            binlog,
            conns,
            progress,
            plans: HashMap::new(),
            pending: VecDeque::new(),
            keyless: None,
            round_end: None,
            table_txn_open: false,
            keys,
            out: VecDeque::new(),
        })
    }

    /// The tables `config` selects, as the server has them now. A
    /// selection that matches nothing is an error listing the databases
    /// the user can see (a typo in a glob would otherwise start a job that
    /// silently does nothing).
    pub async fn list_tables(config: &MySqlSourceConfig) -> Result<Vec<TableId>> {
        config.validate()?;
        let mut conn = connect(config).await?;
        let tables = snapshot::list_tables(&mut conn, &TableFilter::new(&config.tables)?).await?;
        let visible: Vec<String> = if tables.is_empty() {
            conn.query(
                "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME NOT IN \
                 ('mysql', 'information_schema', 'performance_schema', 'sys') ORDER BY 1",
            )
            .await
            .map_err(|e| map_err("listing databases", e))?
        } else {
            Vec::new()
        };
        conn.disconnect()
            .await
            .map_err(|e| map_err("disconnect", e))?;
        if tables.is_empty() {
            let shown = if visible.is_empty() {
                "none".to_string()
            } else {
                visible.join(", ")
            };
            return Err(Error::invalid_config(format!(
                "mysql.tables (include {:?}, exclude {:?}) matches no table that user {:?} can \
                 see on {}:{}; the databases it can see: {shown}. Fix: write the globs as \
                 \"database.table\" (e.g. \"shop.*\"), or grant the user SELECT on the tables",
                config.tables.include, config.tables.exclude, config.user, config.host, config.port
            )));
        }
        Ok(tables)
    }

    /// Where the snapshot stands (for status and tests).
    pub fn snapshot_progress(&self) -> &SnapshotProgress {
        &self.progress
    }

    /// Adds snapshot progress to a checkpoint while the snapshot runs. Such
    /// a checkpoint has no watermark: the rows of tables not read yet come
    /// from their snapshot later, so no time is complete for them yet.
    fn with_progress(&self, mut cp: Checkpoint) -> Result<Checkpoint> {
        if !self.progress.is_done() {
            cp.watermark_micros = None;
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

    /// The plan of the table in progress, loading its schema on first use.
    async fn plan(&mut self) -> Result<TableId> {
        let table = self.progress.remaining[0].clone();
        if !self.plans.contains_key(&table) {
            let key = self.keys.get(&table).map(|k| k.columns.as_slice());
            let schema = load_table_schema(&mut self.conns[0], &table, key, 1).await?;
            let schema = match self.binlog.as_mut() {
                Some(b) => b.adopt_schema(schema),
                None => Arc::new(schema),
            };
            let mut plan = TablePlan::new(schema);
            plan.detect_dense_key(&mut self.conns[0]).await?;
            self.plans.insert(table.clone(), plan);
        }
        Ok(table)
    }

    /// Ends whatever snapshot transaction a failed round left open.
    async fn rollback_snapshots(&mut self) -> Result<()> {
        for conn in &mut self.conns {
            conn.query_drop("ROLLBACK")
                .await
                .map_err(|e| map_err("ROLLBACK", e))?;
        }
        self.table_txn_open = false;
        Ok(())
    }

    /// Reads the next round of chunks into `pending`.
    async fn read_round(&mut self) -> Result<()> {
        let table = self.plan().await?;
        if self.plans[&table].is_keyless() {
            return self.start_keyless_read(&table).await;
        }
        let plan = &self.plans[&table];
        let limit = self.flow.chunk_rows(self.config.snapshot.chunk_rows);
        let after = self.progress.last_key.as_deref();
        let zero = self.config.zero_dates;
        let mut chunks = match self.binlog.as_ref() {
            None => {
                // Without a binlog: one consistent snapshot for the whole table.
                let conn = &mut self.conns[0];
                if !self.table_txn_open {
                    snapshot::begin_snapshot(conn, false).await?;
                    self.table_txn_open = true;
                }
                let range = KeyRange::starting_after(after);
                let chunk =
                    snapshot::read_chunk(conn, plan, &range, limit, None, zero, &self.flow).await?;
                if chunk.table_done {
                    conn.query_drop("COMMIT")
                        .await
                        .map_err(|e| map_err("COMMIT", e))?;
                    self.table_txn_open = false;
                }
                vec![chunk]
            }
            Some(binlog) => {
                let parallel = self.conns.len();
                let ranges = plan
                    .split(&mut self.conns[0], after, limit, parallel)
                    .await?;
                let flow = &self.flow;
                let reads = self
                    .conns
                    .iter_mut()
                    .zip(&ranges)
                    .map(|(conn, range)| async move {
                        let at = begin_snapshot_behind_stream(conn, binlog).await?;
                        let chunk =
                            snapshot::read_chunk(conn, plan, range, limit, Some(at), zero, flow)
                                .await;
                        conn.query_drop("COMMIT")
                            .await
                            .map_err(|e| map_err("COMMIT", e))?;
                        chunk
                    });
                try_join_all(reads).await?
            }
        };
        // The last (open-ended) range decides how far the round got.
        let last = chunks.last().expect("a round has a chunk");
        let last_key = chunks.iter().rev().find_map(|c| c.last_key.clone());
        self.round_end = Some(RoundEnd {
            table_done: last.table_done,
            last_key,
        });
        chunks.sort_by(|a, b| a.at.cmp(&b.at));
        self.pending = chunks.into();
        Ok(())
    }

    /// A keyless table's round: its whole table in one consistent snapshot,
    /// streamed in batches (see `snapshot::read_keyless`).
    async fn start_keyless_read(&mut self, table: &TableId) -> Result<()> {
        let mut conn = self.conns.swap_remove(0);
        let at = match self.binlog.as_ref() {
            Some(binlog) => begin_snapshot_behind_stream(&mut conn, binlog)
                .await
                .map(Some),
            None => snapshot::begin_snapshot(&mut conn, false).await,
        };
        let at = match at {
            Ok(at) => at,
            Err(e) => {
                self.conns.push(conn);
                return Err(e);
            }
        };
        let batch_rows = self.flow.chunk_rows(self.config.snapshot.chunk_rows);
        let plan = &self.plans[table];
        let zero = self.config.zero_dates;
        match snapshot::read_keyless(conn, plan, batch_rows, at, zero, self.flow.clone()).await {
            Ok(read) => {
                self.keyless = Some(read);
                self.round_end = Some(RoundEnd {
                    table_done: true,
                    last_key: None,
                });
                Ok(())
            }
            Err(e) => {
                // The connection went with the failed read: open another.
                let mut conn = connect(&self.config).await?;
                snapshot::prepare_session(&mut conn).await?;
                self.conns.push(conn);
                Err(e)
            }
        }
    }

    /// The next batch of the keyless read, once the stream has reached its
    /// snapshot; after the last, the round ends.
    async fn emit_keyless(&mut self) -> Result<()> {
        let read = self.keyless.as_mut().expect("a keyless read");
        if let (Some(binlog), Some(at)) = (self.binlog.as_mut(), read.at.clone())
            && let Some(r) = binlog.next_before(&at).await?
        {
            let r = self.pass(r)?;
            self.out.push_back(r);
            return Ok(());
        }
        match read.batches.recv().await {
            Some(batch) => {
                let mut batch = batch?;
                if let Some(b) = &self.binlog {
                    batch.set_version_base(b.version_base());
                }
                self.out.push_back(SourceRecord::Changes(batch));
                Ok(())
            }
            None => {
                let read = self.keyless.take().expect("a keyless read");
                let conn = read.done.await.map_err(|e| {
                    Error::new(ErrorKind::Unexpected, format!("keyless snapshot task: {e}"))
                })??;
                self.conns.push(conn);
                self.end_round().await
            }
        }
    }

    /// Hands out the first pending chunk; after a round's last, records the
    /// progress it made in a checkpoint.
    async fn emit_chunk(&mut self) -> Result<()> {
        let mut chunk = self.pending.pop_front().expect("a pending chunk");
        if !chunk.batch.is_empty() {
            if let Some(b) = &self.binlog {
                // The stream has reached the chunk's position: its versions
                // continue the stream's.
                chunk.batch.set_version_base(b.version_base());
            }
            self.out.push_back(SourceRecord::Changes(chunk.batch));
        }
        if !self.pending.is_empty() {
            return Ok(());
        }
        self.end_round().await
    }

    /// Records the progress of the round just handed out in a checkpoint.
    async fn end_round(&mut self) -> Result<()> {
        let end = self.round_end.take().expect("a round in progress");
        if end.table_done {
            let done = self.progress.remaining.remove(0);
            self.plans.remove(&done);
            self.progress.last_key = None;
        } else {
            self.progress.last_key = end.last_key;
        }
        let cp = match &self.binlog {
            Some(b) => b.checkpoint(None)?,
            None => Checkpoint::default(),
        };
        self.out
            .push_back(SourceRecord::Checkpoint(self.with_progress(cp)?));
        if self.progress.is_done() {
            for conn in self.conns.drain(..) {
                conn.disconnect()
                    .await
                    .map_err(|e| map_err("disconnect", e))?;
            }
        }
        Ok(())
    }
}

/// The binlog position of a consistent snapshot taken now, with its GTID
/// state (`BINLOG_GTID_POS`) so checkpoints stay GTID-based.
async fn snapshot_start(config: &MySqlSourceConfig) -> Result<tributary_core::SourcePosition> {
    let mut conn = connect(config).await?;
    let at = snapshot::begin_snapshot(&mut conn, true)
        .await?
        .expect("a position with a binlog");
    conn.query_drop("COMMIT")
        .await
        .map_err(|e| map_err("COMMIT", e))?;
    let position = crate::binlog::mariadb_position_at(&mut conn, config, at).await?;
    conn.disconnect()
        .await
        .map_err(|e| map_err("disconnect", e))?;
    Ok(position)
}

/// Starts a chunk's snapshot at a position the stream has not passed yet: a
/// transaction the reader already received may still be invisible to new
/// snapshots for a moment (binlog write precedes engine commit), so retry
/// until the snapshot includes everything the reader has seen.
async fn begin_snapshot_behind_stream(
    conn: &mut Conn,
    binlog: &BinlogReader,
) -> Result<BinlogFilePos> {
    const BEHIND: &str = "for 30 s no snapshot caught up with the binlog stream";
    let policy = RetryPolicy {
        attempts: u32::MAX,
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(100),
        total_delay: Some(Duration::from_secs(30)),
    };
    let conn = tokio::sync::Mutex::new(conn);
    let behind = |e: &Error| e.kind() == ErrorKind::Timeout && e.message().starts_with(BEHIND);
    retry(&policy, behind, |_| async {
        let mut conn = conn.lock().await;
        let at = snapshot::begin_snapshot(&mut conn, true)
            .await?
            .expect("a position with a binlog");
        if binlog.is_before(&at) {
            return Ok(at);
        }
        conn.query_drop("ROLLBACK")
            .await
            .map_err(|e| map_err("ROLLBACK", e))?;
        Err(Error::new(
            ErrorKind::Timeout,
            format!("{BEHIND} (last snapshot at {at})"),
        ))
    })
    .await
}

#[async_trait]
impl Source for MySqlSource {
    async fn next(&mut self) -> Result<Option<SourceRecord>> {
        let record = self.next_record().await?;
        let Some(changelog) = self.changelog.as_mut() else {
            return Ok(record);
        };
        // Tables with no key at all, under keyless = "changelog".
        Ok(match record {
            Some(SourceRecord::Changes(b)) if b.schema().primary_key.is_empty() => {
                Some(SourceRecord::Changes(changelog.encode(&b)?))
            }
            Some(SourceRecord::SchemaChange(c))
                if c.kind == SchemaChangeKind::Truncate && changelog.is_changelog(&c) =>
            {
                let base = self.binlog.as_ref().map_or(0, |b| b.version_base());
                Some(SourceRecord::Changes(changelog.truncate(&c, base)?))
            }
            Some(SourceRecord::SchemaChange(c)) if changelog.is_changelog(&c) => {
                Some(SourceRecord::SchemaChange(changelog.schema_change(&c)?))
            }
            other => other,
        })
    }
}

impl MySqlSource {
    async fn next_record(&mut self) -> Result<Option<SourceRecord>> {
        loop {
            if let Some(r) = self.out.pop_front() {
                return Ok(Some(r));
            }
            if self.keyless.is_some() {
                self.emit_keyless().await?;
                continue;
            }
            if let Some(chunk) = self.pending.front() {
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
                match self.read_round().await {
                    // DDL mid-snapshot: the round again, with the new columns.
                    Err(e) if snapshot::is_stale_plan(&e) => {
                        let table = self.progress.remaining[0].clone();
                        tracing::info!(%table, "schema changed mid-snapshot: reading the round again");
                        self.plans.remove(&table);
                        self.rollback_snapshots().await?;
                    }
                    other => other?,
                }
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

/// `[source.mysql]` as a pipeline's source kind: the validated config, from
/// which every run and `status` list tables and open the source.
pub struct MySqlSourceFactory {
    config: MySqlSourceConfig,
}

impl MySqlSourceFactory {
    pub fn new(config: MySqlSourceConfig) -> Result<MySqlSourceFactory> {
        config.validate()?;
        Ok(MySqlSourceFactory { config })
    }
}

#[async_trait]
impl tributary_core::SourceFactory for MySqlSourceFactory {
    async fn list_tables(&self) -> Result<Vec<TableId>> {
        MySqlSource::list_tables(&self.config).await
    }

    fn requeue(&self, checkpoint: &mut Checkpoint, tables: &[TableId]) -> Result<()> {
        if self.config.snapshot.mode == SnapshotMode::Never {
            return Err(Error::new(
                ErrorKind::PositionLost,
                format!(
                    "{tables:?} have no committed checkpoint and snapshot.mode is never: their \
                     changes before the resume point cannot be read again; run once with \
                     snapshot.mode = \"initial\", or drop those target tables and accept the gap"
                ),
            ));
        }
        SnapshotProgress::requeue(checkpoint, tables)
    }

    fn snapshot_in_progress(&self, checkpoint: &Checkpoint) -> bool {
        checkpoint.properties.contains_key(SNAPSHOT_PROPERTY)
    }

    async fn open(&self, resume: Option<&Checkpoint>) -> Result<Box<dyn Source>> {
        Ok(Box::new(
            MySqlSource::start(self.config.clone(), resume).await?,
        ))
    }

    /// `information_schema.TABLES.TABLE_ROWS`: InnoDB's estimate (it can be
    /// off by tens of percent; good enough for an ETA).
    async fn estimate_rows(&self, tables: &[TableId]) -> Option<u64> {
        let mut conn = connect(&self.config).await.ok()?;
        let mut total = 0u64;
        for t in tables {
            let rows: Option<Option<u64>> = conn
                .exec_first(
                    "SELECT TABLE_ROWS FROM information_schema.TABLES \
                     WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                    (&t.database, &t.table),
                )
                .await
                .ok()?;
            total += rows.flatten().unwrap_or(0);
        }
        Some(total)
    }

    /// The server (version, binlog settings, replication grants), the
    /// tables the include list selects, and SELECT on each of them.
    async fn check(&self) -> Vec<tributary_core::CheckFinding> {
        use tributary_core::{CheckFinding, CheckStatus};
        const C: &str = "source.mysql";
        let at = format!("{}:{}", self.config.host, self.config.port);
        let report = match crate::check::check_server(&self.config).await {
            Ok(r) => r,
            Err(e) => {
                return vec![CheckFinding::new(
                    C,
                    CheckStatus::Failed,
                    "server",
                    format!("{at}: {e}"),
                )];
            }
        };
        let mut out = vec![CheckFinding::new(
            C,
            CheckStatus::Ok,
            "server",
            format!(
                "{} {} at {at}",
                match report.flavor {
                    crate::conn::Flavor::MariaDb => "MariaDB",
                    crate::conn::Flavor::MySql => "MySQL",
                },
                report.version
            ),
        )];
        for p in &report.problems {
            // Grants through roles do not show in SHOW GRANTS lines.
            let status = if p.what.starts_with("privilege ") {
                CheckStatus::Warning
            } else {
                CheckStatus::Failed
            };
            out.push(CheckFinding::new(
                C,
                status,
                &p.what,
                format!("{}; fix: {}", p.found, p.fix),
            ));
        }
        let tables = match MySqlSource::list_tables(&self.config).await {
            Ok(t) => t,
            Err(e) => {
                out.push(CheckFinding::new(
                    C,
                    CheckStatus::Failed,
                    "tables",
                    e.to_string(),
                ));
                return out;
            }
        };
        if tables.is_empty() {
            out.push(CheckFinding::new(
                C,
                CheckStatus::Failed,
                "tables",
                "the include list selects no table on this server: check the database and \
                 table names in tables.include (patterns are db.table, `*` matches any name)",
            ));
            return out;
        }
        let names: Vec<String> = tables.iter().take(5).map(ToString::to_string).collect();
        let more = tables.len().saturating_sub(names.len());
        out.push(CheckFinding::new(
            C,
            CheckStatus::Ok,
            "tables",
            format!(
                "{} selected: {}{}",
                tables.len(),
                names.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            ),
        ));
        match connect(&self.config).await {
            Ok(mut conn) => {
                for t in &tables {
                    let q = |s: &str| s.replace('`', "``");
                    let sql = format!(
                        "SELECT * FROM `{}`.`{}` LIMIT 0",
                        q(&t.database),
                        q(&t.table)
                    );
                    if let Err(e) = conn.query_drop(&sql).await {
                        out.push(CheckFinding::new(
                            C,
                            CheckStatus::Failed,
                            format!("SELECT on {t}"),
                            format!("{e}; fix: GRANT SELECT ON `{}`.* TO <user>", t.database),
                        ));
                    }
                }
            }
            Err(e) => out.push(CheckFinding::new(
                C,
                CheckStatus::Failed,
                "server",
                e.to_string(),
            )),
        }
        out
    }
}
