//! `BinlogReader`: the dump stream turned into `SourceRecord`s — rows decoded
//! into per-table batches, table maps followed as schema versions, and a
//! checkpoint at every handed-out transaction end.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::{FutureExt, StreamExt};
use mysql_async::BinlogStream;
use mysql_async::binlog::events::{Event, EventData};
use tributary_core::{
    BinlogFilePos, ChangeBatchBuilder, Checkpoint, Error, ErrorKind, Op, Result, SchemaChange,
    SchemaChangeKind, Source, SourcePosition, SourceRecord, TableId, TableSchema,
};

use super::cursor::{Cursor, Step};
use super::ddl::{self, Ddl};
use super::events::{self, kind};
use super::rows;
use super::server::{available_binlogs, current_position, dump, position_at_time};
use super::table::{DecodedTable, decode_table_map, rekey};
use super::versions::VersionClock;
use super::{LEGACY_SCHEMAS_PROPERTY, SCHEMA_PROPERTY, VERSION_BASE_PROPERTY};
use crate::charset::CharsetMap;
use crate::config::{KeylessPolicy, MySqlSourceConfig, StartMode, TableFilter};
use crate::conn::{Flavor, connect_for_dump, flavor, map_err};
use crate::keys::{KeyOrigin, TableKey, refuse_keyless, resolve_keys};

/// One table's open batch and the transaction its last row belongs to.
struct TableBuffer {
    builder: ChangeBatchBuilder,
    txn_seq: u64,
}

/// A table map entry: decoded, or skipped by the table filter.
enum Mapped {
    Read(Arc<DecodedTable>),
    Skipped,
}

pub struct BinlogReader {
    config: Arc<MySqlSourceConfig>,
    flavor: Flavor,
    stream: BinlogStream,
    charsets: CharsetMap,
    pub(super) filter: TableFilter,
    cursor: Cursor,
    /// Table id → table map, as the current binlog defines them.
    tables: HashMap<u64, Mapped>,
    /// Last schema per table (versions count up from the checkpoint's).
    pub(super) schemas: HashMap<TableId, Arc<TableSchema>>,
    /// Each selected table's key as resolved at start (table maps carry
    /// only a primary key).
    pub(super) keys: HashMap<TableId, TableKey>,
    /// DDL text seen for a table since its last table map.
    pub(super) pending_ddl: HashMap<TableId, String>,
    /// Open batches, in first-use order.
    buffers: Vec<TableBuffer>,
    buffered_rows: usize,
    /// End of the last transaction processed: heartbeats and other
    /// non-transaction events move the cursor past it, but only transactions
    /// matter when placing a snapshot (see `is_before`).
    txn_frontier: Option<BinlogFilePos>,
    /// Counts transactions; a buffer starts a transaction entry only when the
    /// transaction touches its table.
    txn_seq: u64,
    txn_ts_micros: i64,
    /// The completeness watermark handed out so far (never goes back).
    watermark_micros: i64,
    /// A transaction ended since the last checkpoint was handed out.
    unflushed: bool,
    /// Part of the open transaction was handed out (it was larger than the
    /// batch bound): its end hands out the rest and a checkpoint.
    txn_split: bool,
    /// Rows of the open transaction so far.
    txn_rows: usize,
    /// The first event at or after a snapshot's position, held back until
    /// the snapshot chunk has been handed out (see `next_before`).
    held: Option<Event>,
    versions: VersionClock,
    /// Tables created since the start whose key was looked up.
    looked_up: std::collections::HashSet<TableId>,
    pub(super) out: VecDeque<SourceRecord>,
}

impl BinlogReader {
    /// Connects and starts the dump at `checkpoint` if given, else at the
    /// configured start mode.
    pub async fn start(
        config: MySqlSourceConfig,
        checkpoint: Option<&Checkpoint>,
    ) -> Result<BinlogReader> {
        config.validate()?;
        let config = Arc::new(config);
        // A server whose settings would lose changes is refused up front.
        crate::check::check_server(&config)
            .await?
            .settings_only()
            .into_result()?;
        let mut conn = connect_for_dump(&config).await?;
        let (flavor, _version) = flavor(&mut conn).await?;
        let charsets = CharsetMap::load(&mut conn).await?;
        let filter = TableFilter::new(&config.tables)?;
        let keys = selected_keys(&mut conn, &config, &filter).await?;
        let position = match checkpoint.and_then(|c| c.position.clone()) {
            Some(p) => Some(p),
            None => match &config.start {
                StartMode::Earliest => None,
                StartMode::Latest => Some(current_position(&mut conn, &config, flavor).await?),
                StartMode::Position { position } => Some(position.clone()),
                StartMode::Timestamp { .. } => {
                    let at = config.start.timestamp_micros()?.expect("a timestamp start");
                    Some(position_at_time(&config, flavor, at).await?)
                }
            },
        };
        let schemas = checkpoint
            .map(restore_schemas)
            .transpose()?
            .unwrap_or_default();
        let cursor = Cursor::at(position.as_ref());
        let stream = dump(conn, &config, flavor, position.as_ref()).await?;
        Ok(BinlogReader {
            filter,
            keys,
            config,
            flavor,
            stream,
            charsets,
            cursor,
            tables: HashMap::new(),
            schemas,
            pending_ddl: HashMap::new(),
            buffers: Vec::new(),
            buffered_rows: 0,
            txn_frontier: None,
            txn_seq: 0,
            txn_ts_micros: 0,
            watermark_micros: 0,
            unflushed: false,
            txn_split: false,
            txn_rows: 0,
            held: None,
            versions: VersionClock::resume(checkpoint)?,
            looked_up: Default::default(),
            out: VecDeque::new(),
        })
    }

    /// The row-version base now (snapshot chunks read beside the stream use it).
    pub(crate) fn version_base(&self) -> u64 {
        self.versions.base()
    }

    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// Each selected table's key, as resolved at start.
    pub(crate) fn keys(&self) -> &HashMap<TableId, TableKey> {
        &self.keys
    }

    /// Ends the dump and closes its connection (dropping the reader also
    /// disconnects, without waiting).
    pub async fn close(self) -> Result<()> {
        self.stream
            .close()
            .await
            .map_err(|e| map_err("closing the binlog stream", e))
    }

    fn cursor_file_pos(&self) -> Option<BinlogFilePos> {
        self.cursor.file_pos()
    }

    /// Like `next`, but hands out only what lies before `at`: `Ok(None)` once
    /// everything before `at` is out, so a snapshot chunk taken at `at` can go
    /// next. The first event at or after `at` is held until then.
    pub(crate) async fn next_before(&mut self, at: &BinlogFilePos) -> Result<Option<SourceRecord>> {
        loop {
            if let Some(r) = self.out.pop_front() {
                return Ok(Some(r));
            }
            let at_or_past =
                !self.cursor.in_txn && self.cursor_file_pos().is_some_and(|c| c >= *at);
            if at_or_past && (self.held.is_some() || self.buffered_rows == 0) {
                return Ok(None);
            }
            // An event held for an earlier snapshot position comes first.
            if let Some(ev) = self.held.take() {
                self.handle(ev)?;
                continue;
            }
            let Some(ev) = self.next_event().await? else {
                continue;
            };
            if at_or_past {
                self.held = Some(ev);
                self.flush(Some(self.txn_watermark()))?;
            } else {
                self.handle(ev)?;
            }
        }
    }

    /// Whether the reader has processed no transaction at or after `at`, so a
    /// snapshot taken at `at` can still be placed in the stream. (A transaction
    /// can reach the binlog, and this reader, before the storage engine makes
    /// it visible to snapshots.)
    pub(crate) fn is_before(&self, at: &BinlogFilePos) -> bool {
        if self.cursor.in_txn {
            // The open transaction started at the cursor.
            return self.cursor_file_pos().is_none_or(|c| c < *at);
        }
        self.txn_frontier.as_ref().is_none_or(|f| f <= at)
    }

    /// Makes `schema` (read by a snapshot) the reader's schema of its table,
    /// reusing the reader's own when the shape is the same, so snapshot and
    /// stream rows share one schema version.
    pub(crate) fn adopt_schema(&mut self, schema: TableSchema) -> Arc<TableSchema> {
        let table = schema.table.clone();
        let adopted = match self.schemas.get(&table) {
            Some(s) if s.fingerprint() == schema.fingerprint() => return s.clone(),
            Some(s) => TableSchema {
                version: s.version + 1,
                ..schema
            },
            None => TableSchema {
                version: 1,
                ..schema
            },
        };
        let adopted = Arc::new(adopted);
        self.schemas.insert(table, adopted.clone());
        adopted
    }

    /// The position after the last complete transaction handed out.
    pub(super) fn position(&self) -> SourcePosition {
        self.cursor.position(self.flavor)
    }

    /// A checkpoint here; each table's last schema goes in a table-scoped
    /// property, so each sink stores only its own table's.
    pub(crate) fn checkpoint(&self, watermark_micros: Option<i64>) -> Result<Checkpoint> {
        let mut properties = std::collections::BTreeMap::new();
        for schema in self.schemas.values() {
            properties.insert(
                Checkpoint::table_key(&schema.table, SCHEMA_PROPERTY),
                serde_json::to_string(schema.as_ref())?,
            );
        }
        if self.versions.base() > 0 {
            properties.insert(
                VERSION_BASE_PROPERTY.to_string(),
                self.versions.base().to_string(),
            );
        }
        Ok(Checkpoint {
            position: Some(self.position()),
            watermark_micros,
            properties,
        })
    }

    /// The watermark after the current transaction: binlog times are whole
    /// seconds, and another transaction of the same second may follow, so
    /// only commits before that second are known complete.
    fn txn_watermark(&self) -> i64 {
        self.txn_ts_micros - 1
    }

    /// Hands out every buffered batch, then a checkpoint whose watermark is
    /// the highest so far (a heartbeat's "caught up at" may pass the next
    /// transaction's second).
    fn flush(&mut self, watermark_micros: Option<i64>) -> Result<()> {
        let watermark_micros = watermark_micros.map(|w| {
            self.watermark_micros = self.watermark_micros.max(w);
            self.watermark_micros
        });
        for mut b in self.buffers.drain(..) {
            if !b.builder.is_empty() {
                self.out
                    .push_back(SourceRecord::Changes(b.builder.finish()?));
            }
        }
        self.buffered_rows = 0;
        self.unflushed = false;
        let cp = self.checkpoint(watermark_micros)?;
        self.out.push_back(SourceRecord::Checkpoint(cp));
        Ok(())
    }

    pub(super) fn flush_table(&mut self, table: &TableId) -> Result<()> {
        if let Some(i) = self
            .buffers
            .iter()
            .position(|b| &b.builder.schema().table == table)
        {
            let mut b = self.buffers.remove(i).builder;
            self.buffered_rows -= b.len();
            if !b.is_empty() {
                self.out.push_back(SourceRecord::Changes(b.finish()?));
            }
        }
        Ok(())
    }

    /// The next event; `None` when the server had nothing ready and the
    /// buffered rows were handed out instead (keeps latency low when idle).
    async fn next_event(&mut self) -> Result<Option<Event>> {
        let next = if self.unflushed && !self.cursor.in_txn {
            match self.stream.next().now_or_never() {
                Some(ev) => ev,
                None => {
                    self.flush(Some(self.txn_watermark()))?;
                    return Ok(None);
                }
            }
        } else {
            // The server sends a heartbeat every `heartbeat_interval` when it
            // has nothing else: silence past three of them is a dead
            // connection (a black-holed network never closes it).
            let deadline = self.config.heartbeat_interval * 3 + std::time::Duration::from_secs(2);
            match tokio::time::timeout(deadline, self.stream.next()).await {
                Ok(next) => next,
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        format!(
                            "no event or heartbeat from the server for {deadline:?} (heartbeats \
                             every {:?}): the binlog connection is dead",
                            self.config.heartbeat_interval
                        ),
                    ));
                }
            }
        };
        match next {
            Some(Ok(ev)) => Ok(Some(ev)),
            Some(Err(e)) => Err(self.stream_error(e).await),
            None => Err(Error::new(
                ErrorKind::Connection,
                "the server closed the binlog stream",
            )),
        }
    }

    async fn stream_error(&self, e: mysql_async::Error) -> Error {
        // MariaDB refuses a second replica with our server_id (4052); MySQL
        // says so in a 1236, which must not read as a lost position.
        let same_id = matches!(&e, mysql_async::Error::Server(s)
            if s.code == 4052 || (s.code == 1236 && s.message.contains("same server_uuid/server_id")));
        let err = map_err("binlog stream failed", e);
        if same_id {
            return Error::new(
                ErrorKind::Connection,
                format!(
                    "another replica is reading the binlog with server_id {}: a second job, an \
                     old process not yet gone, or a real replica. Give each job its own \
                     [source.mysql] server_id; retrying",
                    self.config.server_id
                ),
            )
            .with_source(err);
        }
        if err.kind() != ErrorKind::PositionLost {
            return err;
        }
        let available = available_binlogs(&self.config)
            .await
            .unwrap_or_else(|e| format!("unknown ({e})"));
        Error::new(
            ErrorKind::PositionLost,
            format!(
                "the server no longer has the requested binlog position {}; it has {available}. \
                 Re-snapshot the tables or start from a position the server still has",
                self.position()
            ),
        )
        .with_source(err)
    }

    fn handle(&mut self, ev: Event) -> Result<()> {
        let header = ev.header();
        let end_pos = u64::from(header.log_pos());
        let ts_micros = i64::from(header.timestamp()) * 1_000_000;
        let step = self.cursor.classify(&ev)?;
        // What the event does to the stream, at the position before it.
        match &step {
            Step::Begin(_) => self.begin_txn(ts_micros),
            Step::Rows(kind::TABLE_MAP) => self.table_map(&ev)?,
            Step::Rows(kind::WRITE_ROWS | kind::WRITE_ROWS_V1) => self.rows(&ev, Op::Insert)?,
            Step::Rows(kind::UPDATE_ROWS | kind::UPDATE_ROWS_V1) => self.rows(&ev, Op::Update)?,
            Step::Rows(_) => self.rows(&ev, Op::Delete)?, // DELETE_ROWS(_V1)
            // DDL commits implicitly: it is a transaction of its own.
            Step::Statement => {
                self.statement(&ev, ts_micros)?;
                if !self.cursor.in_txn {
                    self.begin_txn(ts_micros);
                }
            }
            Step::TxnStatement => self.txn_statement(&ev)?,
            Step::Rotate { .. } | Step::Heartbeat | Step::GtidList(_) | Step::Commit => {}
            Step::ExplicitBegin => {}
            Step::Other => self.other_event(&ev)?,
        }
        let was_in_txn = self.cursor.in_txn;
        self.cursor.apply(&step, end_pos);
        match step {
            Step::Commit | Step::Statement => self.end_txn()?,
            Step::Heartbeat if !was_in_txn && end_pos > 0 => self.flush(Some(now_micros()))?,
            _ => {}
        }
        Ok(())
    }

    /// A table the stream meets that was not there at start (created
    /// since): its key is resolved like the others' — a table map names
    /// only a primary key, so a table keyed by a unique index would
    /// otherwise look keyless. Looked up once, at its first table map.
    async fn learn_key(&mut self, ev: &Event) -> Result<()> {
        if ev.header().event_type_raw() != kind::TABLE_MAP || ev.data().len() < 6 {
            return Ok(());
        }
        let mut id = [0u8; 8];
        id[..6].copy_from_slice(&ev.data()[..6]);
        if self.tables.contains_key(&u64::from_le_bytes(id)) {
            return Ok(());
        }
        let Ok(Some(EventData::TableMapEvent(tme))) = ev.read_data() else {
            return Ok(()); // `handle` reports it
        };
        let table = TableId::new(tme.database_name(), tme.table_name());
        if !self.filter.matches_id(&table)
            || self.keys.contains_key(&table)
            || !self.looked_up.insert(table.clone())
        {
            return Ok(());
        }
        let mut conn = crate::conn::connect(&self.config).await?;
        let found = resolve_keys(&mut conn, &self.config, std::slice::from_ref(&table)).await;
        let _ = conn.disconnect().await;
        match found {
            Ok(found) => self.keys.extend(found),
            // Dropped since (a replay of old binlog): its table map decides.
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Where an event is, for errors: the file and the event's end offset.
    fn event_at(&self, ev: &Event) -> String {
        format!("{}:{}", self.cursor.file, ev.header().log_pos())
    }

    /// A statement inside a transaction: `SAVEPOINT` and the like pass; DML
    /// logged as a statement on a selected table stops the stream, since
    /// its rows are not in the binlog (dropping it would lose them).
    fn txn_statement(&mut self, ev: &Event) -> Result<()> {
        let Ok(Some(EventData::QueryEvent(q))) = ev.read_data() else {
            return Err(Error::new(ErrorKind::InvalidData, "unreadable QUERY event"));
        };
        if let Ddl::Dml(tables) = ddl::classify(&q.query(), &q.schema()) {
            self.refuse_statement_dml(&tables, ev)?;
        }
        Ok(())
    }

    pub(super) fn refuse_statement_dml(&self, tables: &[TableId], ev: &Event) -> Result<()> {
        let Some(t) = tables.iter().find(|t| {
            self.filter.matches_id(t) && (self.keys.contains_key(t) || self.schemas.contains_key(t))
        }) else {
            return Ok(());
        };
        Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "a change to {t} reached the binlog as an SQL statement, not as rows (the writing \
                 session used binlog_format=STATEMENT or MIXED), at {}: its rows cannot be read, \
                 so the stream stops rather than lose them. Fix: SET GLOBAL binlog_format='ROW' \
                 (and binlog_format=ROW in the server config), keep sessions from setting \
                 binlog_format, then re-snapshot {t} (drop its target table and restart)",
                self.event_at(ev)
            ),
        )
        .with_context("table", t))
    }

    /// Events the reader does not decode: those without rows pass; row
    /// events it cannot read stop the stream when they touch a selected
    /// table (or when it cannot tell), naming the event and the fix.
    fn other_event(&mut self, ev: &Event) -> Result<()> {
        let code = ev.header().event_type_raw();
        if kind::WITHOUT_ROWS.contains(&code) {
            return Ok(());
        }
        let at = self.event_at(ev);
        let (what, fix) = if kind::MARIADB_ROWS_COMPRESSED.contains(&code) {
            let table = events::rows_table_id(ev.data()).and_then(|id| self.tables.get(&id));
            let Some(Mapped::Read(t)) = table else {
                return Ok(()); // a table the filter skips
            };
            (
                format!("a compressed row event of {}", t.schema.table),
                "SET GLOBAL log_bin_compress=OFF (and in the server config), then re-snapshot the table",
            )
        } else {
            match code {
                kind::MARIADB_QUERY_COMPRESSED => (
                    "a compressed statement".to_string(),
                    "SET GLOBAL log_bin_compress=OFF (and in the server config), then re-snapshot the selected tables",
                ),
                kind::MYSQL_TRANSACTION_PAYLOAD => (
                    "a compressed transaction".to_string(),
                    "SET GLOBAL binlog_transaction_compression=OFF (and in the server config), then re-snapshot the selected tables",
                ),
                kind::MYSQL_PARTIAL_UPDATE_ROWS => (
                    "a partial JSON row update".to_string(),
                    "SET GLOBAL binlog_row_value_options='' (and in the server config), then re-snapshot the selected tables",
                ),
                kind::INCIDENT => (
                    "an incident (the server says changes may be missing from the binlog)"
                        .to_string(),
                    "re-snapshot the selected tables",
                ),
                other => (
                    format!("an event of type {other}, which this reader does not know"),
                    "report it with the server version; re-snapshot the selected tables once a reader handles it",
                ),
            }
        };
        Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "the binlog holds {what} at {at}: its changes cannot be read, so the stream stops rather than lose them. Fix: {fix}"
            ),
        ))
    }

    fn begin_txn(&mut self, ts_micros: i64) {
        self.txn_seq += 1;
        self.txn_rows = 0;
        self.txn_ts_micros = ts_micros;
    }

    /// After the cursor moved past a transaction's end: its rows' batches
    /// get the position, and a full buffer is handed out.
    fn end_txn(&mut self) -> Result<()> {
        self.txn_frontier = self.cursor_file_pos();
        let position = self.position();
        let base = self.versions.advance(Some(&position));
        for b in self
            .buffers
            .iter_mut()
            .filter(|b| b.txn_seq == self.txn_seq)
        {
            b.builder.set_version_base(base);
            b.builder
                .close_txn(Some(position.clone()), self.txn_ts_micros);
        }
        self.unflushed = true;
        if self.buffered_rows >= self.config.max_batch_rows || self.txn_split {
            self.txn_split = false;
            self.flush(Some(self.txn_watermark()))?;
        }
        Ok(())
    }

    fn table_map(&mut self, ev: &Event) -> Result<()> {
        let Ok(Some(EventData::TableMapEvent(tme))) = ev.read_data() else {
            return Err(Error::new(
                ErrorKind::InvalidData,
                "unreadable TABLE_MAP event",
            ));
        };
        let id = tme.table_id();
        if !self.filter.matches(&tme.database_name(), &tme.table_name()) {
            self.tables.insert(id, Mapped::Skipped);
            return Ok(());
        }
        let table = TableId::new(tme.database_name(), tme.table_name());
        let previous = self.schemas.get(&table).cloned();
        let version = previous.as_ref().map_or(1, |s| s.version);
        let mut decoded = decode_table_map(&tme, &self.charsets, version)?;
        if let Some(key) = self.keys.get(&table) {
            let replace =
                key.origin == KeyOrigin::Configured || decoded.schema.primary_key.is_empty();
            if replace && decoded.schema.primary_key_names() != key.columns {
                decoded.schema = Arc::new(rekey(&decoded.schema, &key.columns)?);
            }
        }
        if decoded.schema.primary_key.is_empty() && self.config.keyless == KeylessPolicy::Refuse {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!(
                    "{table} (at {}) has no primary key, no unique index on NOT NULL columns \
                     and no key_columns entry, so its rows cannot be upserted; the stream stops \
                     before writing any of them. Fix: add a primary key, or name its key in \
                     key_columns, or set keyless = \"changelog\" to keep its changes as an \
                     append-only table, or leave it out with tables.exclude; then restart",
                    self.event_at(ev)
                ),
            ));
        }
        match &previous {
            Some(p) if p.fingerprint() == decoded.schema.fingerprint() => {
                decoded.schema = p.clone()
            }
            // A snapshot's schema whose ENUM/SET labels lost 4-byte characters
            // in information_schema: same shape, take the exact labels.
            Some(p) if same_but_lossy_labels(p, &decoded.schema) => {
                self.schemas.insert(table, decoded.schema.clone());
            }
            _ => {
                let ddl = self.pending_ddl.remove(&table);
                if previous.is_some() || ddl.is_some() {
                    let mut schema = (*decoded.schema).clone();
                    schema.version = version + u64::from(previous.is_some());
                    decoded.schema = Arc::new(schema);
                    self.flush_table(&table)?;
                    let kind = if previous.is_some() {
                        SchemaChangeKind::Alter
                    } else {
                        SchemaChangeKind::Create
                    };
                    let mut change = SchemaChange::between(
                        kind,
                        previous.as_deref().cloned(),
                        Some((*decoded.schema).clone()),
                    );
                    change.ddl = ddl;
                    change.position = Some(self.position());
                    change.commit_ts_micros = self.txn_ts_micros;
                    self.out.push_back(SourceRecord::SchemaChange(change));
                }
                self.schemas.insert(table, decoded.schema.clone());
            }
        }
        self.tables.insert(id, Mapped::Read(Arc::new(decoded)));
        Ok(())
    }

    fn rows(&mut self, ev: &Event, op: Op) -> Result<()> {
        let Ok(Some(EventData::RowsEvent(rows))) = ev.read_data() else {
            return Err(Error::new(ErrorKind::InvalidData, "unreadable ROWS event"));
        };
        let table = match self.tables.get(&rows.table_id()) {
            Some(Mapped::Read(t)) => t.clone(),
            Some(Mapped::Skipped) => return Ok(()),
            None => {
                return Err(Error::new(
                    ErrorKind::InvalidData,
                    "ROWS event without a preceding TABLE_MAP",
                ));
            }
        };
        let full_before = rows.columns_before_image().is_none_or(|b| b.all());
        let full_after = rows.columns_after_image().is_none_or(|b| b.all());
        if !full_before || !full_after {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                "a row image is not complete: set binlog_row_image=FULL on the server",
            )
            .with_context("table", &table.schema.table));
        }
        let zero_dates = self.config.zero_dates;
        let builder = self.builder_for(&table);
        let n = rows::decode_rows(&table, op, rows.rows_data(), builder, zero_dates)?;
        self.buffered_rows += n;
        self.txn_rows += n;
        let bound = self.config.max_batch_rows;
        if self.cursor.in_txn && self.txn_rows > bound && self.buffered_rows > bound {
            self.hand_out_partial()?;
        }
        Ok(())
    }

    /// A transaction larger than the batch bound: its rows so far go out
    /// now, without a checkpoint (checkpoints only ever follow a complete
    /// transaction, so a restart replays the whole of it). Their row
    /// versions sit just after the previous transaction's end, below this
    /// one's: later rows of the same transaction still win.
    fn hand_out_partial(&mut self) -> Result<()> {
        let provisional = self
            .cursor
            .file_pos()
            .map(|fp| SourcePosition::FilePos(BinlogFilePos::new(fp.file, fp.pos + 1)));
        let base = self.versions.advance(provisional.as_ref());
        for mut b in self.buffers.drain(..) {
            if b.txn_seq == self.txn_seq {
                b.builder.set_version_base(base);
                b.builder.close_txn(provisional.clone(), self.txn_ts_micros);
            }
            if !b.builder.is_empty() {
                self.out
                    .push_back(SourceRecord::Changes(b.builder.finish()?));
            }
        }
        self.buffered_rows = 0;
        self.txn_split = true;
        Ok(())
    }

    /// The open batch of `table`'s schema, with an entry for the current transaction.
    fn builder_for(&mut self, table: &DecodedTable) -> &mut ChangeBatchBuilder {
        let i = match self
            .buffers
            .iter()
            .position(|b| Arc::ptr_eq(b.builder.schema(), &table.schema))
        {
            Some(i) => i,
            None => {
                let builder = ChangeBatchBuilder::with_capacity(table.schema.clone(), 1024);
                self.buffers.push(TableBuffer {
                    builder,
                    txn_seq: 0,
                });
                self.buffers.len() - 1
            }
        };
        let b = &mut self.buffers[i];
        if b.txn_seq != self.txn_seq {
            b.builder.begin_txn(None, self.txn_ts_micros);
            b.txn_seq = self.txn_seq;
        }
        &mut b.builder
    }
}

#[async_trait]
impl Source for BinlogReader {
    async fn next(&mut self) -> Result<Option<SourceRecord>> {
        loop {
            if let Some(r) = self.out.pop_front() {
                return Ok(Some(r));
            }
            if let Some(ev) = self.held.take() {
                self.learn_key(&ev).await?;
                self.handle(ev)?;
                continue;
            }
            if let Some(ev) = self.next_event().await? {
                self.learn_key(&ev).await?;
                self.handle(ev)?;
            }
        }
    }
}

/// Whether `lossy` equals `exact` except that ENUM/SET labels show `?` where
/// `exact` has characters outside the BMP (MariaDB's information_schema is
/// utf8mb3 and cannot hold them).
fn same_but_lossy_labels(lossy: &TableSchema, exact: &TableSchema) -> bool {
    use tributary_core::ColumnType as C;
    fn mangle(labels: &[String]) -> Vec<String> {
        labels
            .iter()
            .map(|l| {
                l.chars()
                    .map(|c| if c.len_utf8() == 4 { '?' } else { c })
                    .collect()
            })
            .collect()
    }
    let mut exact = exact.clone();
    for c in &mut exact.columns {
        if let C::Enum { labels } | C::Set { labels } = &mut c.data_type {
            *labels = mangle(labels);
        }
    }
    exact.version = lossy.version;
    exact == *lossy
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The keys of the tables `filter` selects; refuses tables without one.
pub(crate) async fn selected_keys(
    conn: &mut mysql_async::Conn,
    config: &MySqlSourceConfig,
    filter: &TableFilter,
) -> Result<HashMap<TableId, TableKey>> {
    let tables = crate::snapshot::list_tables(conn, filter).await?;
    let keys = resolve_keys(conn, config, &tables).await?;
    let keyless: Vec<TableId> = tables
        .into_iter()
        .filter(|t| !keys.contains_key(t))
        .collect();
    if config.keyless == KeylessPolicy::Refuse {
        refuse_keyless(&keyless)?;
    }
    Ok(keys)
}

fn restore_schemas(cp: &Checkpoint) -> Result<HashMap<TableId, Arc<TableSchema>>> {
    let mut schemas: Vec<TableSchema> = Vec::new();
    // Checkpoints before table-scoped state kept every schema in one list.
    if let Some(json) = cp.properties.get(LEGACY_SCHEMAS_PROPERTY) {
        schemas = serde_json::from_str(json)?;
    }
    for json in cp.table_properties(SCHEMA_PROPERTY) {
        schemas.push(serde_json::from_str(json)?);
    }
    Ok(schemas
        .into_iter()
        .map(|s| (s.table.clone(), Arc::new(s)))
        .collect())
}
