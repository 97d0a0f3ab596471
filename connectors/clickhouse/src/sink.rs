//! `ClickHouseSink`: change batches of one source table as versioned rows of
//! a ReplacingMergeTree, in large RowBinary inserts.
//!
//! Every change becomes one row: inserts, snapshot reads and updates write
//! the new image with `_is_deleted = 0`; deletes write the old image with
//! `_is_deleted = 1`; a key change writes both. `_version` comes from the
//! source position of the change's transaction (`row_version`), so it grows
//! with the binlog and a replayed change carries the same version: replays
//! never add a visible row, and the view `t_live` reads each key's newest
//! state. Rows are buffered (bounded by `batch_rows`/`batch_bytes`) and sent
//! with retries and exponential backoff on transient errors; a buffer is
//! cleared only after the server acknowledged it.
//!
//! Exactly-once: `commit` sends everything buffered, then records the
//! checkpoint in `_tributary_checkpoints` (first server). A crash before
//! that replays from the previous checkpoint — the same rows, the same
//! versions.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow_array::StructArray;
use async_trait::async_trait;
use bytes::Bytes;
use tracing::{info, warn};
use tributary_core::{
    ChangeBatch, Checkpoint, Error, ErrorKind, Image, Prepared, Result, RetryPolicy, SchemaChange,
    Sink, TableSchema, retry_transient,
};

use crate::config::{ClickHouseSinkConfig, ClusterMode};
use crate::ddl::{self, CHECKPOINT_TABLE, DELETED_COLUMN, VERSION_COLUMN, ident, literal};
use crate::types::{CellEncoder, ServerVersion};

/// With nothing written, the checkpoint is recorded at most this often, so
/// an idle table keeps a fresh position without a row per commit.
const IDLE_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(300);

/// Counters for tests, benchmarks and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SinkStats {
    pub rows_sent: u64,
    pub inserts: u64,
    /// Insert attempts that failed transiently and were retried.
    pub retries: u64,
}

/// Where one buffer goes: a server and a table.
struct Target {
    client: clickhouse::Client,
    table: String,
    buffer: Vec<u8>,
    rows: usize,
}

pub struct ClickHouseSink {
    config: ClickHouseSinkConfig,
    /// One client per url (every shard).
    clients: Vec<clickhouse::Client>,
    modern: bool,
    schema: Arc<TableSchema>,
    /// The local table's name (the source table's name).
    table: String,
    targets: Vec<Target>,
    rows_buffered: usize,
    bytes_buffered: usize,
    last_flush: Instant,
    /// When the checkpoint was last recorded, and whether rows were sent since.
    last_checkpoint: Instant,
    sent_since_checkpoint: bool,
    committed: Option<Checkpoint>,
    stats: SinkStats,
    /// The fingerprint of a source schema last fitted to `schema` (its
    /// batches are widened to it without asking the server again).
    fitted_from: Option<u64>,
}

/// `_version` of a row: the core upsert rule's version (binlog file
/// number × 2³⁴ + offset of its transaction), so versions grow with the
/// binlog. Changes without a file position (snapshot-only mode) get 0;
/// equal versions keep the row inserted last.
pub use tributary_core::row_version;

/// The server's error code in a response (`Code: 60. DB::Exception: …`).
fn server_code(text: &str) -> Option<u32> {
    let rest = &text[text.find("Code: ")? + 6..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The one mapping of ClickHouse errors. Transient (retried): network,
/// timeouts, and server codes for overload or an unreachable shard —
/// 159 timeout, 164 readonly, 202 too many queries, 209/210 socket, 242
/// table read-only, 252 too many parts, 279 all connection tries failed,
/// 319 unknown insert status. Otherwise by code: unknown table or database
/// (60, 81) → NotFound; authentication (192–194, 516) → Authentication;
/// bad SQL, types or values (6, 27, 32, 33, 36, 41, 43, 44, 47, 53, 62, 69,
/// 70, 72, 117, 131) → InvalidData; anything else → Unexpected.
/// Every ClickHouse call's deadline: a black-holed server fails the call
/// (`Timeout`, transient) instead of stalling the job. Generous: inserts are
/// bounded by `batch_rows`, DDL on a cluster waits for every replica.
const CALL_DEADLINE: Duration = Duration::from_secs(120);

/// One ClickHouse call within [`CALL_DEADLINE`], its error classified.
async fn call<T>(
    what: &str,
    request: impl Future<Output = clickhouse::error::Result<T>>,
) -> Result<T> {
    let request = async { request.await.map_err(|e| classify(what, e)) };
    tributary_core::within(CALL_DEADLINE, format!("ClickHouse {what}"), request).await
}

fn classify(what: &str, e: clickhouse::error::Error) -> Error {
    use clickhouse::error::Error as E;
    let kind = match &e {
        E::Network(_) | E::TimedOut => ErrorKind::Connection,
        E::RowNotFound => ErrorKind::NotFound,
        E::BadResponse(text) => match server_code(text) {
            Some(159 | 164 | 202 | 209 | 210 | 242 | 252 | 279 | 319) => ErrorKind::Connection,
            Some(60 | 81) => ErrorKind::NotFound,
            Some(192..=194 | 516) => ErrorKind::Authentication,
            Some(
                6 | 27 | 32 | 33 | 36 | 41 | 43 | 44 | 47 | 53 | 62 | 69 | 70 | 72 | 117 | 131,
            ) => ErrorKind::InvalidData,
            _ => ErrorKind::Unexpected,
        },
        E::InvalidParams(_) => ErrorKind::InvalidConfig,
        E::SchemaMismatch(_) => ErrorKind::SchemaMismatch,
        E::Unsupported(_) => ErrorKind::Unsupported,
        E::Other(_) | E::Custom(_) => ErrorKind::Unexpected,
        _ => ErrorKind::InvalidData,
    };
    Error::new(kind, format!("ClickHouse: {what}")).with_source(e)
}

impl ClickHouseSink {
    /// Connects, creates the tables (every shard) if needed, adds columns
    /// the source has and the table lacks, and reads the committed checkpoint.
    pub async fn open(
        config: ClickHouseSinkConfig,
        schema: &TableSchema,
    ) -> Result<ClickHouseSink> {
        config.validate()?;
        if schema.primary_key.is_empty() {
            return Err(Error::invalid_config(format!(
                "{} has no primary key: a ClickHouse upsert table needs one",
                schema.table
            )));
        }
        create_database(&config).await?;
        let clients: Vec<_> = config.urls.iter().map(|u| config.client(u)).collect();
        let modern = server_version(&clients[0]).await?.is_modern();
        let table = schema.table.table.clone();
        let mut sink = ClickHouseSink {
            targets: Vec::new(),
            config,
            clients,
            modern,
            schema: Arc::new(schema.clone()),
            table,
            rows_buffered: 0,
            bytes_buffered: 0,
            last_flush: Instant::now(),
            last_checkpoint: Instant::now(),
            sent_since_checkpoint: false,
            committed: None,
            stats: SinkStats::default(),
            fitted_from: None,
        };
        check_cluster(&sink.config, &sink.clients[0]).await?;
        sink.create_tables().await?;
        sink.add_missing_columns(schema).await?;
        sink.schema = Arc::new(sink.fit_to_table(schema).await?);
        sink.targets = sink.make_targets();
        sink.committed = sink.read_checkpoint().await?;
        Ok(sink)
    }

    pub fn stats(&self) -> SinkStats {
        self.stats
    }

    pub fn is_modern(&self) -> bool {
        self.modern
    }

    /// The view of current rows (the table to query).
    pub fn live_view(&self) -> String {
        format!("{}_live", self.table)
    }

    fn distributed_name(&self) -> String {
        format!("{}_all", self.table)
    }

    async fn execute_everywhere(&self, sql: &str) -> Result<()> {
        for c in &self.clients {
            execute(c, sql).await?;
        }
        Ok(())
    }

    async fn create_tables(&self) -> Result<()> {
        let s = &self.schema;
        self.execute_everywhere(&ddl::local_table(&self.table, s, self.modern))
            .await?;
        let view_source = match &self.config.cluster {
            Some(cluster) => {
                let dist = self.distributed_name();
                let db = &self.config.database;
                self.execute_everywhere(&ddl::distributed_table(
                    &dist,
                    &self.table,
                    db,
                    cluster,
                    s,
                ))
                .await?;
                dist
            }
            None => self.table.clone(),
        };
        self.execute_everywhere(&ddl::live_view(&self.live_view(), &view_source))
            .await?;
        execute(&self.clients[0], &ddl::checkpoint_table()).await?;
        self.check_layout().await?;
        // The marker that this pipeline created the table: a crash before
        // its first commit may then drop it (and only then).
        if read_checkpoint_row(&self.clients[0], &self.table)
            .await?
            .is_none()
        {
            insert_row(&self.clients[0], &self.table, "").await?;
        }
        Ok(())
    }

    /// Local mode shards keys by url order: the order the tables were
    /// written with is recorded, and another one refused (keys would be
    /// looked for, and deleted, on the wrong shard).
    async fn check_layout(&self) -> Result<()> {
        if self.config.mode != ClusterMode::Local {
            return Ok(());
        }
        let layout = serde_json::to_string(&self.config.urls)?;
        // Every server is asked: after a reorder, the recorded layout is on
        // a server that is no longer first.
        let mut recorded = None;
        for client in &self.clients {
            match read_checkpoint_row(client, LAYOUT_ROW).await {
                Ok(Some(r)) => {
                    recorded = Some(r);
                    break;
                }
                Ok(None) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        match recorded {
            None => insert_row(&self.clients[0], LAYOUT_ROW, &layout).await,
            Some(recorded) if recorded == layout => Ok(()),
            Some(recorded) => Err(Error::invalid_config(format!(
                "sink.clickhouse.urls is {layout}, but the tables of database {} were sharded \
                 over {recorded} (local mode: the n-th url is shard n, and keys are placed by \
                 it). Fix: list the urls in the recorded order; after moving the data between \
                 shards by hand, delete the row table = '{LAYOUT_ROW}' of {CHECKPOINT_TABLE}",
                self.config.database
            ))),
        }
    }

    /// Adds source columns the tables lack, on every server: the local
    /// table, then the Distributed table (each checked on its own, so an
    /// interrupted evolution completes on the next open).
    async fn add_missing_columns(&self, schema: &TableSchema) -> Result<()> {
        let mut tables = vec![self.table.clone()];
        if self.config.cluster.is_some() {
            tables.push(self.distributed_name());
        }
        for client in &self.clients {
            for table in &tables {
                let existing = table_columns(client, &self.config.database, table).await?;
                for c in schema
                    .columns
                    .iter()
                    .filter(|c| !existing.contains(&c.name))
                {
                    let sql = ddl::add_column(table, c, self.modern);
                    execute(client, &sql).await?;
                    info!(table = %table, column = %c.name, "column added");
                }
            }
            self.refresh_view(client, schema).await?;
        }
        Ok(())
    }

    /// 18.16 fixes a view's columns when it is created: a view missing a
    /// source column is created again.
    async fn refresh_view(&self, client: &clickhouse::Client, schema: &TableSchema) -> Result<()> {
        let view = self.live_view();
        let existing = table_columns(client, &self.config.database, &view).await?;
        if schema.columns.iter().all(|c| existing.contains(&c.name)) {
            return Ok(());
        }
        self.recreate_view(client).await
    }

    async fn recreate_view(&self, client: &clickhouse::Client) -> Result<()> {
        let view = self.live_view();
        let source = match self.config.cluster {
            Some(_) => self.distributed_name(),
            None => self.table.clone(),
        };
        for sql in [
            format!("DROP TABLE IF EXISTS {}", ident(&view)),
            ddl::live_view(&view, &source),
        ] {
            execute(client, &sql).await?;
        }
        Ok(())
    }

    fn make_targets(&self) -> Vec<Target> {
        let target = |client: &clickhouse::Client, table: String| Target {
            client: client.clone(),
            table,
            buffer: Vec::new(),
            rows: 0,
        };
        match self.config.mode {
            ClusterMode::Single => vec![target(&self.clients[0], self.table.clone())],
            ClusterMode::Local => self
                .clients
                .iter()
                .map(|c| target(c, self.table.clone()))
                .collect(),
            ClusterMode::Distributed => {
                let c = self.clients[0]
                    .clone()
                    .with_setting("insert_distributed_sync", "1");
                vec![target(&c, self.distributed_name())]
            }
        }
    }

    async fn read_checkpoint(&self) -> Result<Option<Checkpoint>> {
        read_checkpoint(&self.clients[0], &self.table).await
    }

    /// Buffers a batch; sends when a bound is reached.
    pub async fn write_batch(&mut self, batch: &ChangeBatch) -> Result<()> {
        let widened;
        let batch = match batch.schema().fingerprint() {
            f if f == self.schema.fingerprint() => batch,
            f => {
                if self.fitted_from != Some(f) {
                    self.apply_schema(batch.schema()).await?;
                    self.fitted_from = Some(f);
                }
                if f == self.schema.fingerprint() {
                    batch
                } else {
                    widened = batch.widened_to(self.schema.clone())?;
                    &widened
                }
            }
        };
        let (schema, modern) = (self.schema.clone(), self.modern);
        if batch.schema().columns.len() != schema.columns.len() {
            // The insert names the sink schema's columns: rows of another
            // shape would be misread by the server.
            return Err(Error::new(
                ErrorKind::SchemaMismatch,
                format!(
                    "rows of {} v{} ({} columns) sent to its ClickHouse sink at v{} ({} columns)",
                    batch.schema().table,
                    batch.schema().version,
                    batch.schema().columns.len(),
                    schema.version,
                    schema.columns.len()
                ),
            ));
        }
        let after = encoders(batch.image(Image::After), &schema, modern)?;
        let before = encoders(batch.image(Image::Before), &schema, modern)?;
        let key_columns = &schema.primary_key;
        let (mut key, mut old_key) = (Vec::new(), Vec::new());
        let changes = batch.keyed_changes(self.committed.as_ref(), |row| {
            key_bytes(&after, key_columns, row, &mut key)?;
            key_bytes(&before, key_columns, row, &mut old_key)?;
            Ok(key == old_key)
        })?;
        for c in changes {
            if c.delete_before {
                key_bytes(&before, key_columns, c.row, &mut old_key)?;
                self.push_row(&before, c.row, c.version, true, &old_key)?;
            }
            if c.upsert_after {
                key_bytes(&after, key_columns, c.row, &mut key)?;
                self.push_row(&after, c.row, c.version, false, &key)?;
            }
        }
        if self.rows_buffered >= self.config.batch_rows
            || self.bytes_buffered >= self.config.batch_bytes
        {
            self.flush().await?;
        }
        Ok(())
    }

    /// Appends one row in RowBinary to its target's buffer (local mode: the
    /// shard its key hashes to). A row that fails to encode leaves nothing.
    fn push_row(
        &mut self,
        enc: &[CellEncoder],
        row: usize,
        version: u64,
        deleted: bool,
        key: &[u8],
    ) -> Result<()> {
        let n = self.targets.len() as u64;
        let target = match self.config.mode {
            ClusterMode::Local => (xxhash_rust::xxh3::xxh3_64(key) % n) as usize,
            _ => 0,
        };
        let t = &mut self.targets[target];
        let start = t.buffer.len();
        for e in enc {
            if let Err(err) = e.encode(&mut t.buffer, row) {
                t.buffer.truncate(start);
                return Err(err);
            }
        }
        t.buffer.extend(version.to_le_bytes());
        t.buffer.push(deleted as u8);
        t.rows += 1;
        self.rows_buffered += 1;
        self.bytes_buffered += t.buffer.len() - start;
        Ok(())
    }

    /// Sends every non-empty buffer; a buffer is kept until acknowledged.
    pub async fn flush(&mut self) -> Result<()> {
        let columns: Vec<String> = self
            .schema
            .columns
            .iter()
            .map(|c| ident(&c.name))
            .chain([VERSION_COLUMN.to_string(), DELETED_COLUMN.to_string()])
            .collect();
        for i in 0..self.targets.len() {
            if self.targets[i].rows == 0 {
                continue;
            }
            let t = &self.targets[i];
            let sql = format!(
                "INSERT INTO {} ({}) FORMAT RowBinary",
                ident(&t.table),
                columns.join(", ")
            );
            let (client, attempts) = (t.client.clone(), self.config.attempts);
            let data = Bytes::from(std::mem::take(&mut self.targets[i].buffer));
            let sent = send_with_retries(&client, &sql, data.clone(), attempts).await;
            let t = &mut self.targets[i];
            let retries = match sent {
                Ok(r) => r,
                Err(e) => {
                    t.buffer = Vec::from(data); // kept for the next attempt
                    return Err(e);
                }
            };
            self.stats.rows_sent += t.rows as u64;
            self.stats.inserts += 1;
            self.sent_since_checkpoint = true;
            self.stats.retries += retries;
            t.rows = 0;
        }
        (self.rows_buffered, self.bytes_buffered) = (0, 0);
        self.last_flush = Instant::now();
        Ok(())
    }

    /// Sends what is buffered, then records `checkpoint`.
    pub async fn commit_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        let prepared = self.prepare_checkpoint(checkpoint).await?;
        self.record_checkpoint(vec![prepared]).await
    }

    /// Sends what is buffered (durable, and visible through FINAL only with
    /// versions a replay rewrites identically). The payload says whether a
    /// checkpoint row is due: not when nothing was sent since a recent one.
    async fn prepare_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<Prepared> {
        let had_rows = self.rows_buffered > 0;
        self.flush().await?;
        let idle = !had_rows && !self.sent_since_checkpoint && self.committed.is_some();
        let due = !(idle && self.last_checkpoint.elapsed() < IDLE_CHECKPOINT_INTERVAL);
        Ok(Prepared {
            checkpoint: checkpoint.clone(),
            payload: serde_json::Value::Bool(due),
        })
    }

    /// Writes the checkpoint row of the last prepared checkpoint, unless
    /// none is due.
    async fn record_checkpoint(&mut self, prepared: Vec<Prepared>) -> Result<()> {
        let due = prepared
            .iter()
            .any(|p| p.payload != serde_json::Value::Bool(false));
        let Some(last) = prepared.last().filter(|_| due) else {
            // Nothing new: the recorded position is recent enough.
            self.last_flush = Instant::now();
            return Ok(());
        };
        let checkpoint = &last.checkpoint;
        insert_checkpoint(&self.clients[0], &self.table, checkpoint).await?;
        self.committed = Some(checkpoint.clone());
        (self.last_checkpoint, self.sent_since_checkpoint) = (Instant::now(), false);
        Ok(())
    }

    /// `TRUNCATE` of the source table: the rows buffered before it are
    /// dropped and every shard's table is emptied now. A crash before the
    /// next checkpoint replays the rows before the truncate and the
    /// truncate again; a replayed truncate (at or before the committed
    /// position) is skipped.
    async fn truncate(&mut self, change: &SchemaChange) -> Result<()> {
        if tributary_core::is_committed(change.position.as_ref(), self.committed.as_ref()) {
            return Ok(());
        }
        self.discard_uncommitted();
        self.execute_everywhere(&format!("TRUNCATE TABLE {}", ident(&self.table)))
            .await?;
        self.sent_since_checkpoint = true;
        tracing::info!(table = %self.table, "source table truncated: emptied on every server");
        Ok(())
    }

    /// Follows a new schema version: new columns are added everywhere;
    /// a changed key or a changed column type is refused.
    pub async fn apply_schema(&mut self, schema: &TableSchema) -> Result<()> {
        let key = |s: &TableSchema| -> Vec<String> {
            s.primary_key
                .iter()
                .map(|&i| s.columns[i].name.clone())
                .collect()
        };
        if key(schema) != key(&self.schema) {
            return Err(Error::new(
                ErrorKind::SchemaMismatch,
                format!(
                    "{}: the primary key changed; the table's ORDER BY cannot follow",
                    self.table
                ),
            ));
        }
        self.flush().await?;
        let schema = self.fit_to_table(schema).await?;
        self.change_column_types(&schema).await?;
        self.add_missing_columns(&schema).await?;
        self.schema = Arc::new(schema);
        self.fitted_from = None;
        Ok(())
    }

    /// Columns whose type changed: ClickHouse converts a column that is not
    /// in the ORDER BY (`ALTER … MODIFY COLUMN` on every server); a key
    /// column it cannot alter, so the sink stops — before any row of the new
    /// schema is written — naming the steps to take by hand. A column that
    /// already has the new type everywhere (those steps done) passes.
    async fn change_column_types(&self, schema: &TableSchema) -> Result<()> {
        let key = self.schema.primary_key_names();
        for old in &self.schema.columns {
            let Some(new) = schema.columns.iter().find(|c| c.name == old.name) else {
                continue;
            };
            let to = crate::types::column_type(new, self.modern);
            if crate::types::column_type(old, self.modern) == to {
                continue;
            }
            let is_key = key.contains(&old.name.as_str());
            self.complete_column_type(&new.name, &to, is_key).await?;
        }
        Ok(())
    }

    /// The local and Distributed tables of every server, as (server, table).
    fn all_tables(&self) -> Vec<(usize, String)> {
        let mut names = vec![self.table.clone()];
        if self.config.cluster.is_some() {
            names.push(self.distributed_name());
        }
        (0..self.clients.len())
            .flat_map(|i| names.iter().map(move |n| (i, n.clone())))
            .collect()
    }

    /// Each (server, table) whose `column` is not of type `to` yet (an ALTER
    /// cut short by a crash leaves some servers behind).
    async fn lagging(&self, column: &str, to: &str) -> Result<Vec<(usize, String)>> {
        let mut out = Vec::new();
        for (i, table) in self.all_tables() {
            let have = column_types(&self.clients[i], &self.config.database, &table).await?;
            if have.iter().any(|(n, t)| n == column && t != to) {
                out.push((i, table));
            }
        }
        Ok(out)
    }

    /// Gives `column` type `to` on every server and table that lacks it. A
    /// key column cannot be altered in a local table's ORDER BY: lagging
    /// local tables stop the sink with the manual steps (the Distributed
    /// tables, which have no ORDER BY, are altered).
    async fn complete_column_type(&self, column: &str, to: &str, is_key: bool) -> Result<()> {
        let lagging = self.lagging(column, to).await?;
        if is_key && lagging.iter().any(|(_, t)| *t == self.table) {
            return Err(key_type_steps(&self.table, column, to, self.clients.len()));
        }
        if !lagging.is_empty() {
            self.modify_column(column, to, &lagging).await?;
        }
        Ok(())
    }

    /// `ALTER … MODIFY COLUMN` on `tables`, then the views again.
    async fn modify_column(
        &self,
        column: &str,
        to: &str,
        tables: &[(usize, String)],
    ) -> Result<()> {
        for (i, table) in tables {
            let sql = format!(
                "ALTER TABLE {} MODIFY COLUMN {} {to}",
                ident(table),
                ident(column)
            );
            execute(&self.clients[*i], &sql).await?;
        }
        let mut servers: Vec<usize> = tables.iter().map(|t| t.0).collect();
        servers.dedup();
        for i in servers {
            self.recreate_view(&self.clients[i]).await?;
        }
        info!(table = %self.table, column = %column, to = %to, "column type changed");
        Ok(())
    }

    /// `schema` with each column that some server already holds in a wider
    /// type (the source widened it, and a restart replays changes from
    /// before that ALTER) in that wider type — its rows are cast up, never
    /// the table narrowed back — and that type completed on the servers an
    /// interrupted ALTER left behind.
    async fn fit_to_table(&self, schema: &TableSchema) -> Result<TableSchema> {
        let mut held: Vec<(String, String)> = Vec::new();
        for (i, table) in self.all_tables() {
            held.extend(column_types(&self.clients[i], &self.config.database, &table).await?);
        }
        let key = schema.primary_key_names();
        let mut fitted = schema.clone();
        for c in &mut fitted.columns {
            let wider = crate::types::wider_types(&c.data_type)
                .into_iter()
                .rev()
                .find(|w| {
                    let mut candidate = c.clone();
                    candidate.data_type = w.clone();
                    let t = crate::types::column_type(&candidate, self.modern);
                    held.iter().any(|(n, h)| *n == c.name && *h == t)
                });
            let Some(w) = wider else { continue };
            c.data_type = w;
            let to = crate::types::column_type(c, self.modern);
            self.complete_column_type(&c.name, &to, key.contains(&c.name.as_str()))
                .await?;
        }
        Ok(fitted)
    }
}

/// Why a key column's new type cannot be followed, and what to do.
fn key_type_steps(table: &str, column: &str, to: &str, servers: usize) -> Error {
    Error::new(
        ErrorKind::SchemaMismatch,
        format!(
            "{table}.{column} changed type to {to}, and it is in the ORDER BY of the ClickHouse \
             table {table}, which ClickHouse cannot ALTER. Nothing of the new schema was \
             written. On each of the {servers} server(s): (1) SHOW CREATE TABLE {table}, and \
             create {table}_widened from it with `{column}` {to}; (2) INSERT INTO \
             {table}_widened SELECT * FROM {table}; (3) EXCHANGE TABLES {table} AND \
             {table}_widened, then DROP TABLE {table}_widened. Then restart the job: it \
             resumes at this change and finds the column widened"
        ),
    )
    .with_context("table", table)
}

async fn table_columns(
    client: &clickhouse::Client,
    database: &str,
    table: &str,
) -> Result<Vec<String>> {
    let columns = column_types(client, database, table).await?;
    Ok(columns.into_iter().map(|(name, _)| name).collect())
}

/// (name, type) of each column of `table` on one server.
async fn column_types(
    client: &clickhouse::Client,
    database: &str,
    table: &str,
) -> Result<Vec<(String, String)>> {
    let sql = format!(
        "SELECT name, type FROM system.columns WHERE database = {} AND table = {}",
        literal(database),
        literal(table)
    );
    call("reading a table's columns", client.query(&sql).fetch_all()).await
}

/// Runs one statement (DDL) on one server.
async fn execute(client: &clickhouse::Client, sql: &str) -> Result<()> {
    call(&format!("executing {sql}"), client.query(sql).execute()).await
}

/// Creates `config.database` on every server if it is missing.
async fn create_database(config: &ClickHouseSinkConfig) -> Result<()> {
    let sql = format!("CREATE DATABASE IF NOT EXISTS {}", ident(&config.database));
    let admin = ClickHouseSinkConfig {
        database: "default".into(),
        ..config.clone()
    };
    for url in &config.urls {
        execute(&admin.client(url), &sql).await?;
    }
    Ok(())
}

/// `table`'s row in `_tributary_checkpoints`: a checkpoint's JSON, or ""
/// (the marker: created by this pipeline, nothing committed yet).
async fn read_checkpoint_row(client: &clickhouse::Client, table: &str) -> Result<Option<String>> {
    let sql = format!(
        "SELECT checkpoint FROM {CHECKPOINT_TABLE} FINAL WHERE table = {}",
        literal(table)
    );
    let rows: Vec<String> = call(
        "reading the committed checkpoint",
        client.query(&sql).fetch_all(),
    )
    .await?;
    Ok(rows.last().cloned())
}

async fn read_checkpoint(client: &clickhouse::Client, table: &str) -> Result<Option<Checkpoint>> {
    match read_checkpoint_row(client, table).await? {
        Some(text) if !text.is_empty() => Ok(Some(serde_json::from_str(&text)?)),
        _ => Ok(None),
    }
}

/// The row of `_tributary_checkpoints` holding the shard layout (local
/// mode: which url is which shard decides where each key lives).
const LAYOUT_ROW: &str = "#layout";

async fn insert_row(client: &clickhouse::Client, table: &str, value: &str) -> Result<()> {
    let version = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let sql = format!(
        "INSERT INTO {CHECKPOINT_TABLE} (table, checkpoint, {VERSION_COLUMN}) VALUES ({}, {}, {version})",
        literal(table),
        literal(value)
    );
    call("recording the checkpoint", client.query(&sql).execute()).await
}

/// Records `checkpoint` as `table`'s in `_tributary_checkpoints` (the
/// newest version wins under FINAL).
async fn insert_checkpoint(
    client: &clickhouse::Client,
    table: &str,
    checkpoint: &Checkpoint,
) -> Result<()> {
    insert_row(client, table, &serde_json::to_string(checkpoint)?).await
}

/// What the first server holds for the source table `table`, read without
/// opening a sink: None when the table does not exist, else its committed
/// checkpoint (None before the first commit: the marker row the sink writes
/// when it creates the table). A table without any row is an error, never
/// "nothing committed": the runner would drop it, and it may be another's
/// table or hold data whose checkpoint row lives on a server now elsewhere
/// in `urls`.
pub async fn committed_state(
    config: &ClickHouseSinkConfig,
    table: &str,
) -> Result<Option<Option<Checkpoint>>> {
    config.validate()?;
    // system.tables answers whether or not the database exists yet.
    let admin = ClickHouseSinkConfig {
        database: "default".into(),
        ..config.clone()
    };
    let client = admin.client(&config.urls[0]);
    let exists = |name: &str| {
        format!(
            "SELECT count() FROM system.tables WHERE database = {} AND name = {}",
            literal(&config.database),
            literal(name)
        )
    };
    let count = |sql: String| {
        let client = client.clone();
        async move {
            call(
                "reading system.tables",
                client.query(&sql).fetch_one::<u64>(),
            )
            .await
        }
    };
    if count(exists(table)).await? == 0 {
        return Ok(None);
    }
    let client = config.client(&config.urls[0]);
    let row = match count(exists(CHECKPOINT_TABLE)).await? {
        0 => None,
        _ => read_checkpoint_row(&client, table).await?,
    };
    match row {
        Some(text) if text.is_empty() => Ok(Some(None)),
        Some(text) => Ok(Some(Some(serde_json::from_str(&text)?))),
        None => Err(Error::new(
            ErrorKind::InvalidConfig,
            format!(
                "ClickHouse table {}.{table} exists, but {CHECKPOINT_TABLE} on {} has no row for \
                 it: this pipeline did not create it, or the server holding its checkpoints is \
                 no longer the first of urls (reordered or replaced). Nothing is dropped. Fix: \
                 put that server first in urls again, or drop the table by hand to have it \
                 read again in full",
                config.database, config.urls[0]
            ),
        )),
    }
}

/// Drops the tables of source table `table` (local, Distributed, view) on
/// every server: for a table whose writes were never committed, so the next
/// `open` starts it empty.
pub async fn drop_tables(config: &ClickHouseSinkConfig, table: &str) -> Result<()> {
    config.validate()?;
    for url in &config.urls {
        let client = config.client(url);
        for name in [
            format!("{table}_live"),
            format!("{table}_all"),
            table.to_string(),
        ] {
            let sql = format!("DROP TABLE IF EXISTS {}", ident(&name));
            execute(&client, &sql).await?;
        }
    }
    Ok(())
}

/// The RowBinary bytes of a row's key columns, into `out` (cleared).
fn key_bytes(
    enc: &[CellEncoder],
    key_columns: &[usize],
    row: usize,
    out: &mut Vec<u8>,
) -> Result<()> {
    out.clear();
    for &i in key_columns {
        enc[i].encode(out, row)?;
    }
    Ok(())
}

/// One encoder per column of a row image (none when no row has the image).
fn encoders<'a>(
    image: Option<&'a StructArray>,
    schema: &TableSchema,
    modern: bool,
) -> Result<Vec<CellEncoder<'a>>> {
    image.map_or_else(
        || Ok(Vec::new()),
        |a| {
            a.columns()
                .iter()
                .zip(&schema.columns)
                .map(|(col, c)| CellEncoder::new(col, c, modern))
                .collect()
        },
    )
}

/// In cluster modes, `system.clusters` must list as many shards as urls.
/// Returns the shard count (0 without a cluster).
async fn check_cluster(config: &ClickHouseSinkConfig, client: &clickhouse::Client) -> Result<u64> {
    let Some(cluster) = config.cluster.as_ref() else {
        return Ok(0);
    };
    let sql = format!(
        "SELECT count(DISTINCT shard_num) FROM system.clusters WHERE cluster = {}",
        literal(cluster)
    );
    let shards: u64 = call("reading system.clusters", client.query(&sql).fetch_one()).await?;
    if shards as usize != config.urls.len() {
        return Err(Error::invalid_config(format!(
            "sink.clickhouse: cluster {cluster:?} has {shards} shards in system.clusters but \
             urls lists {}: list one HTTP url per shard, in shard order (or define the \
             cluster in remote_servers)",
            config.urls.len()
        )));
    }
    Ok(shards)
}

/// `url` without user information, for messages.
fn redacted(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://{host}{}", &rest[authority.len()..]),
        None => url.to_string(),
    }
}

async fn server_version(client: &clickhouse::Client) -> Result<ServerVersion> {
    let version = client.query("SELECT version()").fetch_one();
    let text: String = call("reading the server version", version).await?;
    ServerVersion::parse(&text)
}

/// One insert, retried with backoff (100 ms doubling to 10 s, at most
/// `attempts` tries) while the failure is transient. Returns the retries.
async fn send_with_retries(
    client: &clickhouse::Client,
    sql: &str,
    data: Bytes,
    attempts: u32,
) -> Result<u64> {
    let policy = RetryPolicy::new(
        attempts,
        Duration::from_millis(100),
        Duration::from_secs(10),
    );
    let tries = std::sync::atomic::AtomicU32::new(0);
    retry_transient(&policy, |attempt| {
        tries.store(attempt, std::sync::atomic::Ordering::Relaxed);
        let data = data.clone();
        async move {
            let mut insert = client.insert_formatted_with(sql.to_string());
            let sent = async {
                insert.send(data).await?;
                insert.end().await
            };
            call("insert", sent).await.map_err(|e| {
                if e.kind().is_transient() {
                    warn!(attempt, error = %e, "insert failed; retrying");
                }
                e
            })
        }
    })
    .await?;
    Ok(u64::from(tries.into_inner() - 1))
}

#[async_trait]
impl Sink for ClickHouseSink {
    async fn write(&mut self, batch: &ChangeBatch) -> Result<()> {
        self.write_batch(batch).await
    }

    async fn apply_schema_change(&mut self, change: &SchemaChange) -> Result<()> {
        if change.kind == tributary_core::SchemaChangeKind::Truncate {
            return self.truncate(change).await;
        }
        let target = format!("ClickHouse table {}", self.table);
        self.apply_schema(change.followed_schema(&target)?).await
    }

    async fn prepare(&mut self, checkpoint: &Checkpoint) -> Result<Prepared> {
        self.prepare_checkpoint(checkpoint).await
    }

    async fn commit_prepared(&mut self, prepared: Vec<Prepared>) -> Result<()> {
        self.record_checkpoint(prepared).await
    }

    fn commit_due(&self) -> bool {
        self.rows_buffered >= self.config.batch_rows
            || self.last_flush.elapsed() >= self.config.flush_interval
    }

    fn discard_uncommitted(&mut self) {
        for t in &mut self.targets {
            t.buffer.clear();
            t.rows = 0;
        }
        (self.rows_buffered, self.bytes_buffered) = (0, 0);
    }

    async fn committed(&self) -> Result<Option<Checkpoint>> {
        Ok(self.committed.clone())
    }

    async fn health_check(&self) -> Result<()> {
        for c in &self.clients {
            call("health check", c.query("SELECT 1").execute()).await?;
        }
        Ok(())
    }
}

/// `[sink.clickhouse]` as a pipeline's sink kind: one `ClickHouseSink` per
/// source table, in `database`.
pub struct ClickHouseSinkFactory {
    config: ClickHouseSinkConfig,
}

impl ClickHouseSinkFactory {
    pub fn new(config: ClickHouseSinkConfig) -> Result<ClickHouseSinkFactory> {
        config.validate()?;
        Ok(ClickHouseSinkFactory { config })
    }
}

#[async_trait]
impl tributary_core::SinkFactory for ClickHouseSinkFactory {
    fn target_name(&self, table: &tributary_core::TableId) -> String {
        format!("{}.{}", self.config.database, table.table)
    }

    async fn state(&self, table: &tributary_core::TableId) -> Result<tributary_core::TargetState> {
        use tributary_core::TargetState;
        Ok(match committed_state(&self.config, &table.table).await? {
            None => TargetState::Missing,
            Some(None) => TargetState::CreatedWithoutCheckpoint,
            Some(Some(cp)) => TargetState::Committed(cp),
        })
    }

    async fn reset(&self, table: &tributary_core::TableId) -> Result<()> {
        drop_tables(&self.config, &table.table).await
    }

    /// Drops the table on every server (its checkpoint row proves this
    /// pipeline created it): the next start finds it missing and reads it
    /// in full. ClickHouse writes are not fenced: stop the job first.
    async fn discard(
        &self,
        table: &tributary_core::TableId,
        _epoch: u64,
        _owner: &str,
    ) -> Result<()> {
        match committed_state(&self.config, &table.table).await? {
            None => Ok(()),
            Some(_) => drop_tables(&self.config, &table.table).await,
        }
    }

    /// The checkpoint row alone (the table's rows are all there).
    async fn commit_position(
        &self,
        table: &tributary_core::TableId,
        checkpoint: &Checkpoint,
    ) -> Result<bool> {
        let client = self.config.client(&self.config.urls[0]);
        insert_checkpoint(&client, &table.table, checkpoint).await?;
        Ok(true)
    }

    async fn open(&self, schema: &TableSchema) -> Result<Box<dyn Sink>> {
        Ok(Box::new(
            ClickHouseSink::open(self.config.clone(), schema).await?,
        ))
    }

    /// Every server's version (and the credentials), the cluster's shards
    /// against `urls`, and each target's checkpoint.
    async fn check(&self, tables: &[tributary_core::TableId]) -> Vec<tributary_core::CheckFinding> {
        use tributary_core::{CheckFinding, CheckStatus};
        const C: &str = "sink.clickhouse";
        let mut out = Vec::new();
        for url in &self.config.urls {
            // The database may not exist yet: the first start creates it.
            let client = self.config.client(url).with_database("default");
            out.push(CheckFinding::from_result(
                C,
                format!("server {}", redacted(url)),
                &server_version(&client).await,
                |v| format!("ClickHouse {}.{}", v.major, v.minor),
            ));
        }
        if out.iter().any(|f| f.status == CheckStatus::Failed) {
            return out;
        }
        let first = self
            .config
            .client(&self.config.urls[0])
            .with_database("default");
        if let Some(cluster) = &self.config.cluster {
            out.push(CheckFinding::from_result(
                C,
                format!("cluster {cluster}"),
                &check_cluster(&self.config, &first).await,
                |n| format!("{n} shards, one url each ({:?} mode)", self.config.mode),
            ));
        }
        for table in tables {
            let state = self.state(table).await;
            out.push(CheckFinding::from_result(
                C,
                format!("table {}", self.target_name(table)),
                &state,
                |s| match s {
                    tributary_core::TargetState::Missing => {
                        "not created yet: the first start creates it".into()
                    }
                    tributary_core::TargetState::CreatedWithoutCheckpoint => {
                        "created, nothing committed yet".into()
                    }
                    tributary_core::TargetState::Committed(cp) => cp
                        .position
                        .as_ref()
                        .map_or("committed".into(), |p| format!("committed at {p}")),
                },
            ));
        }
        out
    }
}
