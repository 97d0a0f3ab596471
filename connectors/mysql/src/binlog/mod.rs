//! `BinlogReader`: a MySQL/MariaDB binlog dump turned into `SourceRecord`s.
//!
//! Rows are decoded straight into per-table `ChangeBatchBuilder`s and handed
//! out when a batch is full or the server has nothing more to send right now;
//! a `Checkpoint` follows, always at a transaction end. Schemas come from the
//! table maps (`binlog_row_metadata=FULL`), so a restart decodes every row
//! with the schema valid at its position; the last schema per table is kept
//! in the checkpoint so schema-change events stay exact across restarts.

mod ddl;
pub(crate) mod events;
mod json;
pub(crate) mod rows;
pub(crate) mod table;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::{FutureExt, StreamExt};
use mysql_async::binlog::events::{Event, EventData};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn};
use tributary_core::{
    BinlogFilePos, ChangeBatchBuilder, Checkpoint, Error, ErrorKind, MariaDbGtidList, MySqlGtidSet,
    Op, Result, SchemaChange, SchemaChangeKind, Source, SourcePosition, SourceRecord, TableId,
    TableSchema,
};

use self::ddl::Ddl;
use self::events::kind;
use self::table::{DecodedTable, decode_table_map};
use crate::charset::CharsetMap;
use crate::config::{MySqlSourceConfig, StartMode, TableFilter};
use crate::conn::{Flavor, connect, flavor, map_err};

/// Checkpoint property holding the last schema of every table seen (JSON).
pub const SCHEMAS_PROPERTY: &str = "mysql.schemas";

/// The reader's place in the binlog and the GTID state that goes with it.
#[derive(Debug, Clone, Default)]
struct Cursor {
    file: String,
    pos: u64,
    mariadb: MariaDbGtidList,
    mysql: MySqlGtidSet,
}

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
    filter: TableFilter,
    cursor: Cursor,
    /// Table id → table map, as the current binlog defines them.
    tables: HashMap<u64, Mapped>,
    /// Last schema per table (versions count up from the checkpoint's).
    schemas: HashMap<TableId, Arc<TableSchema>>,
    /// DDL text seen for a table since its last table map.
    pending_ddl: HashMap<TableId, String>,
    /// Open batches, in first-use order.
    buffers: Vec<TableBuffer>,
    buffered_rows: usize,
    in_txn: bool,
    /// End of the last transaction processed: heartbeats and other
    /// non-transaction events move the cursor past it, but only transactions
    /// matter when placing a snapshot (see `is_before`).
    txn_frontier: Option<BinlogFilePos>,
    /// Counts transactions; a buffer starts a transaction entry only when the
    /// transaction touches its table.
    txn_seq: u64,
    txn_ts_micros: i64,
    /// A transaction ended since the last checkpoint was handed out.
    unflushed: bool,
    /// The first event at or after a snapshot's position, held back until
    /// the snapshot chunk has been handed out (see `next_before`).
    held: Option<Event>,
    out: VecDeque<SourceRecord>,
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
        let mut conn = connect(&config).await?;
        let (flavor, _version) = flavor(&mut conn).await?;
        let charsets = CharsetMap::load(&mut conn).await?;
        let position = match checkpoint.and_then(|c| c.position.clone()) {
            Some(p) => Some(p),
            None => match &config.start {
                StartMode::Earliest => None,
                StartMode::Latest => Some(current_position(&mut conn, flavor).await?),
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
        let cursor = cursor_for(position.as_ref());
        let stream = dump(conn, &config, flavor, position.as_ref()).await?;
        Ok(BinlogReader {
            filter: TableFilter::new(&config.tables)?,
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
            in_txn: false,
            txn_frontier: None,
            txn_seq: 0,
            txn_ts_micros: 0,
            unflushed: false,
            held: None,
            out: VecDeque::new(),
        })
    }

    pub fn flavor(&self) -> Flavor {
        self.flavor
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
        (!self.cursor.file.is_empty())
            .then(|| BinlogFilePos::new(self.cursor.file.clone(), self.cursor.pos))
    }

    /// Like `next`, but hands out only what lies before `at`: `Ok(None)` once
    /// everything before `at` is out, so a snapshot chunk taken at `at` can go
    /// next. The first event at or after `at` is held until then.
    pub(crate) async fn next_before(&mut self, at: &BinlogFilePos) -> Result<Option<SourceRecord>> {
        loop {
            if let Some(r) = self.out.pop_front() {
                return Ok(Some(r));
            }
            let at_or_past = !self.in_txn && self.cursor_file_pos().is_some_and(|c| c >= *at);
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
                let ts = self.txn_ts_micros;
                self.flush(Some(ts))?;
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
        if self.in_txn {
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
    fn position(&self) -> SourcePosition {
        let file_pos = BinlogFilePos::new(self.cursor.file.clone(), self.cursor.pos);
        match self.flavor {
            Flavor::MariaDb if !self.cursor.mariadb.is_empty() => SourcePosition::MariaDbGtid {
                gtid_list: self.cursor.mariadb.clone(),
                file_pos: Some(file_pos),
            },
            Flavor::MySql if !self.cursor.mysql.is_empty() => SourcePosition::MySqlGtid {
                gtid_set: self.cursor.mysql.clone(),
                file_pos: Some(file_pos),
            },
            _ => SourcePosition::FilePos(file_pos),
        }
    }

    pub(crate) fn checkpoint(&self, watermark_micros: Option<i64>) -> Result<Checkpoint> {
        let mut schemas: Vec<&TableSchema> = self.schemas.values().map(Arc::as_ref).collect();
        schemas.sort_by(|a, b| a.table.cmp(&b.table));
        let mut properties = std::collections::BTreeMap::new();
        if !schemas.is_empty() {
            properties.insert(
                SCHEMAS_PROPERTY.to_string(),
                serde_json::to_string(&schemas)?,
            );
        }
        Ok(Checkpoint {
            position: Some(self.position()),
            watermark_micros,
            properties,
        })
    }

    /// Hands out every buffered batch, then a checkpoint.
    fn flush(&mut self, watermark_micros: Option<i64>) -> Result<()> {
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

    fn flush_table(&mut self, table: &TableId) -> Result<()> {
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
        let next = if self.unflushed && !self.in_txn {
            match self.stream.next().now_or_never() {
                Some(ev) => ev,
                None => {
                    let ts = self.txn_ts_micros;
                    self.flush(Some(ts))?;
                    return Ok(None);
                }
            }
        } else {
            self.stream.next().await
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
        let err = map_err("binlog stream failed", e);
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
        let code = header.event_type_raw();
        let end_pos = u64::from(header.log_pos());
        let ts_micros = i64::from(header.timestamp()) * 1_000_000;
        match code {
            kind::ROTATE => {
                (self.cursor.file, self.cursor.pos) = events::rotate(&header, ev.data())?;
                return Ok(());
            }
            kind::HEARTBEAT => {
                if !self.in_txn && end_pos > 0 {
                    self.cursor.pos = end_pos;
                    let now = now_micros();
                    self.flush(Some(now))?;
                }
                return Ok(());
            }
            kind::MARIADB_GTID_LIST => {
                for g in events::mariadb_gtid_list(ev.data())? {
                    self.cursor.mariadb.update(g);
                }
            }
            kind::MARIADB_GTID => {
                let (gtid, _standalone) = events::mariadb_gtid(ev.data(), header.server_id())?;
                self.begin_txn(ts_micros)?;
                self.cursor.mariadb.update(gtid);
            }
            kind::MYSQL_GTID => {
                let (uuid, gno) = events::mysql_gtid(ev.data())?;
                self.begin_txn(ts_micros)?;
                self.cursor.mysql.add(&uuid, gno);
            }
            kind::TABLE_MAP => self.table_map(&ev)?,
            kind::WRITE_ROWS | kind::WRITE_ROWS_V1 => self.rows(&ev, Op::Insert)?,
            kind::UPDATE_ROWS | kind::UPDATE_ROWS_V1 => self.rows(&ev, Op::Update)?,
            kind::DELETE_ROWS | kind::DELETE_ROWS_V1 => self.rows(&ev, Op::Delete)?,
            kind::XID => {
                self.end_txn(end_pos)?;
                return Ok(());
            }
            kind::QUERY => {
                self.query(&ev, ts_micros, end_pos)?;
                return Ok(());
            }
            _ => {}
        }
        // Outside transactions the position moves with every event.
        if !self.in_txn && end_pos > 0 {
            self.cursor.pos = end_pos;
        }
        Ok(())
    }

    fn begin_txn(&mut self, ts_micros: i64) -> Result<()> {
        self.in_txn = true;
        self.txn_seq += 1;
        self.txn_ts_micros = ts_micros;
        Ok(())
    }

    fn end_txn(&mut self, end_pos: u64) -> Result<()> {
        self.in_txn = false;
        if end_pos > 0 {
            self.cursor.pos = end_pos;
        }
        self.txn_frontier = self.cursor_file_pos();
        let position = self.position();
        for b in self
            .buffers
            .iter_mut()
            .filter(|b| b.txn_seq == self.txn_seq)
        {
            b.builder
                .close_txn(Some(position.clone()), self.txn_ts_micros);
        }
        self.unflushed = true;
        if self.buffered_rows >= self.config.max_batch_rows {
            let ts = self.txn_ts_micros;
            self.flush(Some(ts))?;
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

    fn query(&mut self, ev: &Event, ts_micros: i64, end_pos: u64) -> Result<()> {
        let Ok(Some(EventData::QueryEvent(q))) = ev.read_data() else {
            return Err(Error::new(ErrorKind::InvalidData, "unreadable QUERY event"));
        };
        let sql = q.query();
        let trimmed = sql.trim();
        if trimmed.eq_ignore_ascii_case("BEGIN") {
            if !self.in_txn {
                self.begin_txn(ts_micros)?;
            }
            return Ok(());
        }
        if trimmed.eq_ignore_ascii_case("COMMIT") {
            return self.end_txn(end_pos);
        }
        // DDL commits implicitly: it is a transaction of its own.
        let schema = q.schema();
        match ddl::classify(&sql, &schema) {
            Ddl::Create(t) | Ddl::Alter(t) if self.filter.matches_id(&t) => {
                self.pending_ddl.insert(t, sql.to_string());
            }
            Ddl::Drop(ts) => {
                let ts: Vec<TableId> = ts
                    .into_iter()
                    .filter(|t| self.filter.matches_id(t))
                    .collect();
                for t in ts {
                    self.flush_table(&t)?;
                    let before = self.schemas.remove(&t).map(|s| (*s).clone());
                    self.schema_event(SchemaChangeKind::Drop, t, before, None, &sql, ts_micros);
                }
            }
            Ddl::Truncate(t) if self.filter.matches_id(&t) => {
                self.flush_table(&t)?;
                let s = self.schemas.get(&t).map(|s| (**s).clone());
                self.schema_event(SchemaChangeKind::Truncate, t, s.clone(), s, &sql, ts_micros);
            }
            Ddl::Rename(pairs) => {
                let pairs: Vec<(TableId, TableId)> = pairs
                    .into_iter()
                    .filter(|(from, to)| self.filter.matches_id(from) || self.filter.matches_id(to))
                    .collect();
                for (from, to) in pairs {
                    self.flush_table(&from)?;
                    let before = self.schemas.remove(&from).map(|s| (*s).clone());
                    let after = before.as_ref().map(|s| TableSchema {
                        table: to.clone(),
                        ..s.clone()
                    });
                    if let Some(a) = &after {
                        self.schemas.insert(to.clone(), Arc::new(a.clone()));
                    }
                    let kind = SchemaChangeKind::Rename { from };
                    self.schema_event(kind, to, before, after, &sql, ts_micros);
                }
            }
            _ => {}
        }
        if !self.in_txn {
            self.begin_txn(ts_micros)?;
        }
        self.end_txn(end_pos)
    }

    fn schema_event(
        &mut self,
        kind: SchemaChangeKind,
        table: TableId,
        before: Option<TableSchema>,
        after: Option<TableSchema>,
        sql: &str,
        ts: i64,
    ) {
        let columns = match (&before, &after) {
            (Some(b), Some(a)) => b.diff(a),
            _ => Vec::new(),
        };
        self.out.push_back(SourceRecord::SchemaChange(SchemaChange {
            table,
            kind,
            before,
            after,
            columns,
            ddl: Some(sql.to_string()),
            position: Some(self.position()),
            commit_ts_micros: ts,
        }));
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
                self.handle(ev)?;
                continue;
            }
            if let Some(ev) = self.next_event().await? {
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

fn restore_schemas(cp: &Checkpoint) -> Result<HashMap<TableId, Arc<TableSchema>>> {
    let Some(json) = cp.properties.get(SCHEMAS_PROPERTY) else {
        return Ok(HashMap::new());
    };
    let list: Vec<TableSchema> = serde_json::from_str(json)?;
    Ok(list
        .into_iter()
        .map(|s| (s.table.clone(), Arc::new(s)))
        .collect())
}

fn cursor_for(position: Option<&SourcePosition>) -> Cursor {
    let mut c = Cursor::default();
    if let Some(p) = position {
        if let Some(fp) = p.file_pos() {
            c.file = fp.file.clone();
            c.pos = fp.pos;
        }
        match p {
            SourcePosition::MariaDbGtid { gtid_list, .. } => c.mariadb = gtid_list.clone(),
            SourcePosition::MySqlGtid { gtid_set, .. } => c.mysql = gtid_set.clone(),
            SourcePosition::FilePos(_) => {}
        }
    }
    c
}

/// The current end of the binlog, as a position of the server's flavor.
async fn current_position(conn: &mut Conn, flavor: Flavor) -> Result<SourcePosition> {
    let row: Option<mysql_async::Row> = conn
        .query_first("SHOW MASTER STATUS")
        .await
        .map_err(|e| map_err("SHOW MASTER STATUS", e))?;
    let row = row.ok_or_else(|| {
        Error::invalid_config("binary logging is off on the server: start it with --log-bin (or use a snapshot-only source)")
    })?;
    let file: String = row.get(0).unwrap_or_default();
    let pos: u64 = row.get(1).unwrap_or(4);
    let at = BinlogFilePos::new(file, pos);
    match flavor {
        Flavor::MariaDb => mariadb_position_at(conn, at).await,
        Flavor::MySql => {
            // MySQL reports the file position and the GTID set in one row.
            let set: String = row.get(4).unwrap_or_default();
            let gtid_set: MySqlGtidSet = set.replace('\n', "").parse()?;
            Ok(if gtid_set.is_empty() {
                SourcePosition::FilePos(at)
            } else {
                SourcePosition::MySqlGtid {
                    gtid_set,
                    file_pos: Some(at),
                }
            })
        }
    }
}

/// The MariaDB position at `at` with the GTID state of exactly that point
/// (`BINLOG_GTID_POS`): reading `@@gtid_binlog_pos` separately could include
/// a transaction committed after `at`, and a GTID resume would then skip it.
pub(crate) async fn mariadb_position_at(
    conn: &mut Conn,
    at: BinlogFilePos,
) -> Result<SourcePosition> {
    let gtid: Option<String> = conn
        .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (&at.file, at.pos))
        .await
        .map_err(|e| map_err("BINLOG_GTID_POS", e))?;
    let gtid_list: MariaDbGtidList = gtid.unwrap_or_default().parse()?;
    Ok(if gtid_list.is_empty() {
        SourcePosition::FilePos(at)
    } else {
        SourcePosition::MariaDbGtid {
            gtid_list,
            file_pos: Some(at),
        }
    })
}

/// Starts the dump on `conn` at `position` (None: the oldest binlog).
async fn dump(
    mut conn: Conn,
    config: &MySqlSourceConfig,
    flavor: Flavor,
    position: Option<&SourcePosition>,
) -> Result<BinlogStream> {
    let heartbeat_ns = config
        .heartbeat_interval
        .as_nanos()
        .min(u128::from(u32::MAX) * 1_000_000_000);
    let mut setup = vec![format!("SET @master_heartbeat_period = {heartbeat_ns}")];
    let mut file = String::new();
    let mut pos = 4u64;
    let mut mysql_gtids = None;
    match (flavor, position) {
        (Flavor::MariaDb, Some(SourcePosition::MariaDbGtid { gtid_list, .. })) => {
            setup.push(format!("SET @slave_connect_state = '{gtid_list}'"));
            setup.push("SET @slave_gtid_strict_mode = 1".into());
            setup.push("SET @slave_gtid_ignore_duplicates = 0".into());
        }
        (Flavor::MySql, Some(SourcePosition::MySqlGtid { gtid_set, .. })) => {
            // COM_BINLOG_DUMP_GTID (untested: no MySQL server runs here).
            mysql_gtids = Some(mysql_sids(gtid_set)?);
        }
        (_, Some(SourcePosition::FilePos(fp))) => {
            file = fp.file.clone();
            pos = fp.pos;
        }
        (_, Some(other)) => {
            return Err(Error::invalid_config(format!(
                "position {other} does not fit a {flavor:?} server"
            )));
        }
        (_, None) => {}
    }
    if flavor == Flavor::MariaDb {
        // Without it MariaDB replaces GTID events with QUERY "BEGIN".
        setup.push("SET @mariadb_slave_capability = 4".into());
    }
    for sql in setup {
        conn.query_drop(&sql)
            .await
            .map_err(|e| map_err(format!("binlog setup: {sql}"), e))?;
    }
    let mut request = BinlogStreamRequest::new(config.server_id)
        .with_filename(file.as_bytes())
        .with_pos(pos);
    if let Some(sids) = mysql_gtids {
        request = request.with_gtid().with_gtid_set(sids);
    }
    conn.get_binlog_stream(request)
        .await
        .map_err(|e| map_err("cannot start the binlog dump", e))
}

/// The position of the first transaction whose binlog timestamp is at or
/// after `at_micros`: scans the binlogs from the oldest (a non-blocking dump
/// that ends at the current end). None later: the current end.
async fn position_at_time(
    config: &MySqlSourceConfig,
    flavor: Flavor,
    at_micros: i64,
) -> Result<SourcePosition> {
    let mut conn = connect(config).await?;
    if flavor == Flavor::MariaDb {
        conn.query_drop("SET @mariadb_slave_capability = 4")
            .await
            .map_err(|e| map_err("binlog setup", e))?;
    }
    let request = BinlogStreamRequest::new(config.server_id)
        .with_filename(b"")
        .with_pos(4u64)
        .with_non_blocking();
    let mut stream = conn
        .get_binlog_stream(request)
        .await
        .map_err(|e| map_err("cannot start the binlog scan", e))?;
    let mut cursor = Cursor::default();
    let mut in_txn = false;
    while let Some(ev) = stream.next().await {
        let ev = ev.map_err(|e| map_err("scanning the binlog for a start time", e))?;
        let header = ev.header();
        let (code, end_pos) = (header.event_type_raw(), u64::from(header.log_pos()));
        let starts_txn = matches!(code, kind::MARIADB_GTID | kind::MYSQL_GTID)
            || (code == kind::QUERY && !in_txn && ev.data().ends_with(b"BEGIN"));
        if starts_txn && i64::from(header.timestamp()) * 1_000_000 >= at_micros {
            break;
        }
        match code {
            kind::ROTATE => {
                (cursor.file, cursor.pos) = events::rotate(&header, ev.data())?;
                continue;
            }
            kind::MARIADB_GTID_LIST => events::mariadb_gtid_list(ev.data())?
                .into_iter()
                .for_each(|g| cursor.mariadb.update(g)),
            kind::MARIADB_GTID => cursor
                .mariadb
                .update(events::mariadb_gtid(ev.data(), header.server_id())?.0),
            kind::MYSQL_GTID => {
                let (uuid, gno) = events::mysql_gtid(ev.data())?;
                cursor.mysql.add(&uuid, gno);
            }
            kind::XID => in_txn = false,
            _ => {}
        }
        in_txn |= starts_txn;
        if code == kind::QUERY && !starts_txn {
            in_txn = false; // COMMIT or a DDL statement ends its transaction
        }
        if !in_txn && end_pos > 0 {
            cursor.pos = end_pos;
        }
    }
    drop(stream);
    let file_pos = BinlogFilePos::new(cursor.file, cursor.pos);
    Ok(match flavor {
        Flavor::MariaDb if !cursor.mariadb.is_empty() => SourcePosition::MariaDbGtid {
            gtid_list: cursor.mariadb,
            file_pos: Some(file_pos),
        },
        Flavor::MySql if !cursor.mysql.is_empty() => SourcePosition::MySqlGtid {
            gtid_set: cursor.mysql,
            file_pos: Some(file_pos),
        },
        _ => SourcePosition::FilePos(file_pos),
    })
}

/// A MySQL GTID set in the dump command's form (intervals end-exclusive).
fn mysql_sids(set: &MySqlGtidSet) -> Result<Vec<mysql_async::Sid<'static>>> {
    set.iter()
        .map(|(source, intervals)| {
            let hex: String = source.chars().filter(|c| *c != '-').collect();
            let uuid: Option<Vec<u8>> = (hex.len() == 32)
                .then(|| {
                    (0..16)
                        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
                        .collect()
                })
                .flatten();
            let uuid: [u8; 16] = uuid.and_then(|u| u.try_into().ok()).ok_or_else(|| {
                Error::new(
                    ErrorKind::Unsupported,
                    format!("GTID source {source:?}: tagged GTIDs cannot be resumed yet"),
                )
            })?;
            let intervals = intervals
                .iter()
                .map(|&(s, e)| mysql_async::GnoInterval::new(s, e + 1))
                .collect();
            Ok(mysql_async::Sid::new(uuid).with_intervals(intervals))
        })
        .collect()
}

/// "mysql-bin.000003 … mysql-bin.000007 (gtid 0-1-1…)" for PositionLost messages.
async fn available_binlogs(config: &MySqlSourceConfig) -> Result<String> {
    let mut conn = connect(config).await?;
    let logs: Vec<(String, u64)> = conn
        .query("SHOW BINARY LOGS")
        .await
        .map_err(|e| map_err("SHOW BINARY LOGS", e))?;
    let range = match (logs.first(), logs.last()) {
        (Some(a), Some(b)) => format!("binlogs {} to {}", a.0, b.0),
        _ => "no binlogs".to_string(),
    };
    let gtid: Option<String> = conn
        .query_first("SELECT @@gtid_binlog_state")
        .await
        .ok()
        .flatten();
    Ok(match gtid {
        Some(g) if !g.is_empty() => format!("{range} (gtid_binlog_state {g})"),
        _ => range,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_gtid_sets_become_dump_sids_with_exclusive_ends() {
        let set: MySqlGtidSet = "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7"
            .parse()
            .unwrap();
        let sids = mysql_sids(&set).unwrap();
        assert_eq!(sids.len(), 1);
        assert_eq!(sids[0].uuid()[..2], [0x3e, 0x11]);
        let ivs: Vec<(u64, u64)> = sids[0]
            .intervals()
            .iter()
            .map(|i| (i.start(), i.end()))
            .collect();
        assert_eq!(ivs, [(1, 6), (7, 8)]);
        let tagged: MySqlGtidSet = "3e11fa47-71ca-11e1-9e33-c80aa9429562:etl:1-2"
            .parse()
            .unwrap();
        assert!(mysql_sids(&tagged).is_err());
    }

    /// A Latest start's GTID state and file position name the same point even
    /// while other sessions commit (a GTID resume would otherwise skip or
    /// repeat the transactions in between). Needs the dev MariaDB.
    #[tokio::test]
    async fn mariadb_current_position_is_consistent_under_concurrent_commits() {
        use mysql_async::Opts;
        let m = tributary_testkit::DevServices::load().mariadb();
        let opts = Opts::from_url(&m.url).unwrap();
        let db = tributary_testkit::unique_name("curpos");
        let mut conn = Conn::new(opts.clone()).await.unwrap();
        conn.query_drop(format!("CREATE DATABASE {db}"))
            .await
            .unwrap();
        conn.query_drop(format!("CREATE TABLE {db}.t (id INT PRIMARY KEY)"))
            .await
            .unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = tokio::spawn({
            let (opts, db, stop) = (opts.clone(), db.clone(), stop.clone());
            async move {
                let mut w = Conn::new(opts).await.unwrap();
                let mut id = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    w.query_drop(format!("INSERT INTO {db}.t VALUES ({id})"))
                        .await
                        .unwrap();
                    id += 1;
                }
                id
            }
        });
        for _ in 0..200 {
            let SourcePosition::MariaDbGtid {
                gtid_list,
                file_pos: Some(at),
            } = current_position(&mut conn, Flavor::MariaDb).await.unwrap()
            else {
                panic!("a GTID position with its file position");
            };
            // The server's own GTID state at that file position, asked for
            // after the fact: it cannot depend on later commits.
            let truth: Option<String> = conn
                .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (&at.file, at.pos))
                .await
                .unwrap();
            assert_eq!(gtid_list, truth.unwrap().parse().unwrap(), "at {at:?}");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(writer.await.unwrap() > 0, "the writer committed nothing");
        conn.query_drop(format!("DROP DATABASE {db}"))
            .await
            .unwrap();
    }
}
