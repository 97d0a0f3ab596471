//! Chunked, lock-free table snapshots.
//!
//! Each chunk is one keyset query (`WHERE (k1, k2) > (?, ?) ORDER BY k1, k2
//! LIMIT n`) inside `START TRANSACTION WITH CONSISTENT SNAPSHOT`. MariaDB
//! reports the exact binlog position of that snapshot (`binlog_snapshot_file`
//! / `_position`), so a chunk is the table's state at a known position S: the
//! source hands it out when its binlog stream reaches S, between the
//! transactions before and after S, and snapshot + stream is exact per key
//! without buffering binlog events or comparing keys.

mod schema;
mod values;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use serde::{Deserialize, Serialize};
use tributary_core::{
    BinlogFilePos, ChangeBatch, ChangeBatchBuilder, Error, ErrorKind, Image, Op, Result,
    SourcePosition, TableId, TableSchema, Value,
};

use crate::config::{SnapshotConfig, TableFilter, ZeroDates};
use crate::conn::map_err;

pub(crate) use schema::load_table_schema;

/// Checkpoint property holding snapshot progress (JSON).
pub const SNAPSHOT_PROPERTY: &str = "mysql.snapshot";

/// How far the snapshot got: what a checkpoint stores so a restart continues
/// with the next chunk instead of starting over.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotProgress {
    /// Tables still to read; the first is in progress.
    pub remaining: Vec<TableId>,
    /// Key of the last row handed out for the table in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_key: Option<Vec<Value>>,
}

impl SnapshotProgress {
    pub fn is_done(&self) -> bool {
        self.remaining.is_empty()
    }

    /// Queues `tables` to be snapshotted (again) after the ones remaining in
    /// `checkpoint`, so a source resumed from it reads them in full while
    /// streaming from its position. Used when a sink lost a table's state.
    pub fn requeue(checkpoint: &mut tributary_core::Checkpoint, tables: &[TableId]) -> Result<()> {
        let mut progress: SnapshotProgress = match checkpoint.properties.get(SNAPSHOT_PROPERTY) {
            Some(json) => serde_json::from_str(json)?,
            None => SnapshotProgress::default(),
        };
        for t in tables {
            if progress.remaining.first() == Some(t) {
                progress.last_key = None; // its read part is lost too: from the start
            } else if !progress.remaining.contains(t) {
                progress.remaining.push(t.clone());
            }
        }
        checkpoint.properties.insert(
            SNAPSHOT_PROPERTY.to_string(),
            serde_json::to_string(&progress)?,
        );
        Ok(())
    }
}

pub(crate) fn quote(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

/// How one table is read.
pub(crate) struct TablePlan {
    pub schema: Arc<TableSchema>,
    /// Keyset columns (primary key or configured key); empty: the table is
    /// read whole in one snapshot (`read_keyless`).
    key: Vec<usize>,
    /// Smallest key, when the key is one integer column whose values are
    /// dense: chunks are then split arithmetically, without probing the index.
    dense_min: Option<i128>,
}

/// Whether `rows` (the server's estimate) fill at least 80 % of `min..=max`.
fn is_dense(rows: u64, min: i128, max: i128) -> bool {
    let span = max - min + 1;
    span > 0 && (rows as i128) * 5 >= span * 4
}

fn as_i128(v: &mysql_async::Value) -> Option<i128> {
    match v {
        mysql_async::Value::Int(i) => Some((*i).into()),
        mysql_async::Value::UInt(u) => Some((*u).into()),
        _ => None,
    }
}

impl TablePlan {
    pub(crate) fn new(schema: Arc<TableSchema>) -> TablePlan {
        // The schema carries the resolved key (configured, primary or unique).
        let key = schema.primary_key.clone();
        // ENUM/SET compare as strings but sort by index: no keyset on them.
        let sortable = key.iter().all(|&i| {
            !matches!(
                schema.columns[i].data_type,
                tributary_core::ColumnType::Enum { .. } | tributary_core::ColumnType::Set { .. }
            )
        });
        TablePlan {
            key: if sortable { key } else { Vec::new() },
            schema,
            dense_min: None,
        }
    }

    /// Checks once whether a single integer key is dense enough to split
    /// arithmetically (MIN/MAX read the index ends; the row count is the
    /// server's estimate).
    pub(crate) async fn detect_dense_key(&mut self, conn: &mut Conn) -> Result<()> {
        let [k] = self.key[..] else { return Ok(()) };
        let integer = matches!(
            self.schema.columns[k].data_type,
            tributary_core::ColumnType::Int8
                | tributary_core::ColumnType::Int16
                | tributary_core::ColumnType::Int24
                | tributary_core::ColumnType::Int32
                | tributary_core::ColumnType::Int64
                | tributary_core::ColumnType::UInt8
                | tributary_core::ColumnType::UInt16
                | tributary_core::ColumnType::UInt24
                | tributary_core::ColumnType::UInt32
                | tributary_core::ColumnType::UInt64
        );
        if !integer {
            return Ok(());
        }
        let ends = format!(
            "SELECT MIN({k}), MAX({k}) FROM {t}",
            k = self.key_list(),
            t = self.table()
        );
        let row: Option<(mysql_async::Value, mysql_async::Value)> =
            conn.query_first(&ends)
                .await
                .map_err(|e| map_err("reading key bounds", e))?;
        let rows: Option<u64> = conn
            .exec_first(
                "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (&self.schema.table.database, &self.schema.table.table),
            )
            .await
            .map_err(|e| map_err("reading the row estimate", e))?
            .flatten();
        if let (Some((min, max)), Some(rows)) = (row, rows)
            && let (Some(min), Some(max)) = (as_i128(&min), as_i128(&max))
            && is_dense(rows, min, max)
        {
            self.dense_min = Some(min);
        }
        Ok(())
    }

    pub(crate) fn is_keyless(&self) -> bool {
        self.key.is_empty()
    }

    fn table(&self) -> String {
        format!(
            "{}.{}",
            quote(&self.schema.table.database),
            quote(&self.schema.table.table)
        )
    }

    fn key_list(&self) -> String {
        let key: Vec<String> = self
            .key
            .iter()
            .map(|&i| quote(&self.schema.columns[i].name))
            .collect();
        key.join(", ")
    }

    /// `WHERE (k…) > (after) AND (k…) <= (upto)` with its parameters.
    fn range(&self, range: &KeyRange) -> (String, Vec<mysql_async::Value>) {
        let marks = vec!["?"; self.key.len()].join(", ");
        let mut conds = Vec::new();
        let mut params = Vec::new();
        if let Some(after) = &range.after {
            conds.push(format!("({}) > ({marks})", self.key_list()));
            params.extend(after.iter().cloned());
        }
        if let Some(upto) = &range.upto {
            conds.push(format!("({}) <= ({marks})", self.key_list()));
            params.extend(upto.iter().cloned());
        }
        let clause = if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        };
        (clause, params)
    }

    /// The query of one chunk: a key range in key order, at most `limit`
    /// rows when the range is open-ended.
    fn sql(&self, range: &KeyRange, limit: usize) -> (String, Vec<mysql_async::Value>) {
        let cols: Vec<String> = self.schema.columns.iter().map(|c| quote(&c.name)).collect();
        let mut sql = format!("SELECT {} FROM {}", cols.join(", "), self.table());
        if self.key.is_empty() {
            return (sql, Vec::new());
        }
        let (clause, params) = self.range(range);
        sql.push_str(&clause);
        sql.push_str(&format!(" ORDER BY {}", self.key_list()));
        if range.upto.is_none() {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        (sql, params)
    }

    /// Splits the keys after `after` into up to `n` ranges of about `rows`
    /// rows each by index-only probes of the key; the last range is open.
    pub(crate) async fn split(
        &self,
        conn: &mut Conn,
        after: Option<&[Value]>,
        rows: usize,
        n: usize,
    ) -> Result<Vec<KeyRange>> {
        let mut lo: Option<Vec<mysql_async::Value>> =
            after.map(|a| a.iter().map(values::to_param).collect());
        let mut ranges = Vec::new();
        if let Some(min) = self.dense_min {
            // Dense integer key: equal-width ranges from the last key.
            let mut lo_key = lo.as_ref().and_then(|l| as_i128(&l[0])).unwrap_or(min - 1);
            for _ in 1..n {
                let hi = lo_key + rows as i128;
                let hi_param = i64::try_from(hi)
                    .map(mysql_async::Value::Int)
                    .unwrap_or(mysql_async::Value::UInt(hi as u64));
                ranges.push(KeyRange {
                    after: lo.take(),
                    upto: Some(vec![hi_param.clone()]),
                });
                lo = Some(vec![hi_param]);
                lo_key = hi;
            }
        }
        while !self.key.is_empty() && ranges.len() + 1 < n {
            let (clause, params) = self.range(&KeyRange {
                after: lo.clone(),
                upto: None,
            });
            let sql = format!(
                "SELECT {k} FROM {t}{clause} ORDER BY {k} LIMIT 1 OFFSET {off}",
                k = self.key_list(),
                t = self.table(),
                off = rows.saturating_sub(1)
            );
            let row: Option<mysql_async::Row> = conn
                .exec_first(&sql, params)
                .await
                .map_err(|e| map_err("splitting a table into chunks", e))?;
            let Some(row) = row else { break };
            let hi: Vec<mysql_async::Value> = row.unwrap();
            ranges.push(KeyRange {
                after: lo.take(),
                upto: Some(hi.clone()),
            });
            lo = Some(hi);
        }
        ranges.push(KeyRange {
            after: lo,
            upto: None,
        });
        Ok(ranges)
    }
}

/// Keys in `(after, upto]` (either bound may be open), as query parameters.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyRange {
    after: Option<Vec<mysql_async::Value>>,
    upto: Option<Vec<mysql_async::Value>>,
}

impl KeyRange {
    /// All keys after `after` (all keys if None).
    pub(crate) fn starting_after(after: Option<&[Value]>) -> KeyRange {
        KeyRange {
            after: after.map(|a| a.iter().map(values::to_param).collect()),
            upto: None,
        }
    }

    pub(crate) fn is_last(&self) -> bool {
        self.upto.is_none()
    }
}

/// One chunk read: its rows as `Read` events, and where it stands.
pub(crate) struct Chunk {
    pub batch: ChangeBatch,
    /// Binlog position of the chunk's snapshot (None without a binlog).
    pub at: Option<BinlogFilePos>,
    pub last_key: Option<Vec<Value>>,
    pub table_done: bool,
}

/// Rate limits for snapshot reads (rows/s and bytes/s).
pub(crate) struct FlowControl {
    rows: Option<DefaultDirectRateLimiter>,
    bytes: Option<DefaultDirectRateLimiter>,
    /// Largest request either limiter takes in one call (its burst).
    rows_burst: u32,
    bytes_burst: u32,
}

impl FlowControl {
    pub(crate) fn new(config: &SnapshotConfig) -> FlowControl {
        // A burst of a tenth of a second keeps the rate within a few percent over 10 s.
        let limiter = |per_sec: u32| {
            NonZeroU32::new(per_sec).map(|rate| {
                let burst = NonZeroU32::new((per_sec / 10).max(1)).unwrap();
                (
                    RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)),
                    burst.get(),
                )
            })
        };
        let (rows, rows_burst) =
            limiter(config.max_rows_per_sec).map_or((None, u32::MAX), |(l, b)| (Some(l), b));
        let (bytes, bytes_burst) =
            limiter(config.max_bytes_per_sec).map_or((None, u32::MAX), |(l, b)| (Some(l), b));
        FlowControl {
            rows,
            bytes,
            rows_burst,
            bytes_burst,
        }
    }

    /// Rows per chunk: a chunk never asks the limiter for more than its burst.
    pub(crate) fn chunk_rows(&self, configured: usize) -> usize {
        configured.min(self.rows_burst as usize).max(1)
    }

    async fn take(limiter: &Option<DefaultDirectRateLimiter>, burst: u32, mut n: u64) {
        let Some(l) = limiter else { return };
        while n > 0 {
            let part = n.min(u64::from(burst)) as u32;
            // Cannot fail: `part` never exceeds the burst.
            let _ = l.until_n_ready(NonZeroU32::new(part).unwrap()).await;
            n -= u64::from(part);
        }
    }

    pub(crate) async fn before_rows(&self, rows: usize) {
        Self::take(&self.rows, self.rows_burst, rows as u64).await;
    }

    pub(crate) async fn after_bytes(&self, bytes: u64) {
        Self::take(&self.bytes, self.bytes_burst, bytes).await;
    }
}

/// Opens the snapshot connection's session settings.
pub(crate) async fn prepare_session(conn: &mut Conn) -> Result<()> {
    for sql in [
        "SET time_zone = '+00:00'",
        "SET NAMES utf8mb4",
        "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
    ] {
        conn.query_drop(sql).await.map_err(|e| map_err(sql, e))?;
    }
    Ok(())
}

/// Base tables the filter selects, in name order.
pub(crate) async fn list_tables(conn: &mut Conn, filter: &TableFilter) -> Result<Vec<TableId>> {
    let rows: Vec<(String, String)> = conn
        .query(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
             WHERE TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_SCHEMA, TABLE_NAME",
        )
        .await
        .map_err(|e| map_err("listing tables", e))?;
    Ok(rows
        .into_iter()
        .filter(|(d, t)| filter.matches(d, t))
        .map(|(d, t)| TableId::new(d, t))
        .collect())
}

/// Starts a consistent-snapshot transaction; returns its binlog position if
/// binary logging is on (MariaDB reports it exactly).
pub(crate) async fn begin_snapshot(
    conn: &mut Conn,
    with_binlog: bool,
) -> Result<Option<BinlogFilePos>> {
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        .await
        .map_err(|e| map_err("START TRANSACTION WITH CONSISTENT SNAPSHOT", e))?;
    if !with_binlog {
        return Ok(None);
    }
    let rows: Vec<(String, String)> = conn
        .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
        .await
        .map_err(|e| map_err("binlog_snapshot status", e))?;
    let get = |name: &str| {
        rows.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    match (get("Binlog_snapshot_file"), get("Binlog_snapshot_position")) {
        (Some(file), Some(pos)) if !file.is_empty() => {
            let pos = pos.parse().map_err(|_| {
                Error::new(
                    ErrorKind::Unexpected,
                    format!("binlog_snapshot_position {pos:?}"),
                )
            })?;
            Ok(Some(BinlogFilePos::new(file, pos)))
        }
        _ => Err(Error::new(
            ErrorKind::Unsupported,
            "the server does not report the binlog position of a consistent snapshot \
             (binlog_snapshot_file): snapshots with streaming need MariaDB; use snapshot.mode = \"only\" or \"never\"",
        )),
    }
}

/// Reads one chunk of `plan` in the open transaction.
pub(crate) async fn read_chunk(
    conn: &mut Conn,
    plan: &TablePlan,
    range: &KeyRange,
    limit: usize,
    at: Option<BinlogFilePos>,
    zero: ZeroDates,
    flow: &FlowControl,
) -> Result<Chunk> {
    flow.before_rows(limit).await;
    let (sql, params) = plan.sql(range, limit);
    let mut b = ChangeBatchBuilder::with_capacity(plan.schema.clone(), limit.min(65_536));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    b.begin_txn(at.clone().map(SourcePosition::FilePos), now);
    let mut bytes = 0u64;
    // Rows stream from the server straight into the batch.
    let mut first_error = None;
    let query_error = |e: mysql_async::Error| {
        // A column the plan names was dropped, or the table was altered
        // after this snapshot began: the plan is stale.
        if let mysql_async::Error::Server(s) = &e
            && matches!(s.code, 1054 | 1412)
        {
            return stale_plan(&plan.schema.table);
        }
        map_err(format!("snapshot query on {}", plan.schema.table), e)
    };
    let mut result = conn.exec_iter(&sql, params).await.map_err(query_error)?;
    result
        .for_each(|row| {
            if first_error.is_none()
                && let Err(e) = push_row(&mut b, plan, &row, zero, &mut bytes)
            {
                first_error = Some(e);
            }
        })
        .await
        .map_err(query_error)?;
    if let Some(e) = first_error {
        return Err(e);
    }
    flow.after_bytes(bytes).await;
    // DDL before this snapshot began (a column added or retyped) leaves the
    // plan's column list behind; the SELECT's metadata lock keeps the
    // definition still until the transaction ends, so this compares like
    // with like.
    let key: Vec<String> = plan
        .schema
        .primary_key_names()
        .into_iter()
        .map(String::from)
        .collect();
    let now = load_table_schema(conn, &plan.schema.table, Some(&key), plan.schema.version).await?;
    if now.fingerprint() != plan.schema.fingerprint() {
        return Err(stale_plan(&plan.schema.table));
    }
    let batch = b.finish()?;
    let last_key = match batch.len() {
        0 => None,
        n => batch
            .row(Image::After, n - 1)
            .map(|r| plan.key.iter().map(|&i| r[i].clone()).collect()),
    };
    Ok(Chunk {
        table_done: range.is_last() && batch.len() < limit,
        batch,
        at,
        last_key,
    })
}

/// A keyless table's rows in one consistent snapshot, read by a task that
/// owns the connection and hands out batches of at most `batch_rows` rows
/// over a channel of one: memory holds about two batches, whatever the
/// table's size (a keyless table has no key to read it in ranges by).
pub(crate) struct KeylessRead {
    pub at: Option<BinlogFilePos>,
    pub batches: tokio::sync::mpsc::Receiver<Result<ChangeBatch>>,
    /// The connection back, once the rows are out and the snapshot ended.
    pub done: tokio::task::JoinHandle<Result<Conn>>,
}

/// Starts reading every row of keyless `plan` in the snapshot open on
/// `conn`. The table definition is compared with the plan first, under the
/// snapshot's metadata lock (held until it ends, so no DDL can change the
/// table while its rows are handed out).
pub(crate) async fn read_keyless(
    mut conn: Conn,
    plan: &TablePlan,
    batch_rows: usize,
    at: Option<BinlogFilePos>,
    zero: ZeroDates,
    flow: Arc<FlowControl>,
) -> Result<KeylessRead> {
    let (sql, _) = plan.sql(&KeyRange::starting_after(None), usize::MAX);
    let table = plan.schema.table.clone();
    let lock = format!("SELECT 1 FROM {} LIMIT 0", plan.table());
    conn.query_drop(&lock)
        .await
        .map_err(|e| map_err(format!("snapshot query on {table}"), e))?;
    let now = load_table_schema(
        &mut conn,
        &table,
        Some(&[] as &[String]),
        plan.schema.version,
    )
    .await?;
    if now.fingerprint() != plan.schema.fingerprint() {
        return Err(stale_plan(&table));
    }
    let (tx, batches) = tokio::sync::mpsc::channel(1);
    let schema = plan.schema.clone();
    let batch_rows = batch_rows.max(1);
    let position = at.clone().map(SourcePosition::FilePos);
    let done = tokio::spawn(async move {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        let new_batch = || {
            let mut b = ChangeBatchBuilder::with_capacity(schema.clone(), batch_rows.min(65_536));
            b.begin_txn(position.clone(), now);
            b
        };
        let read = async {
            let mut b = new_batch();
            let mut bytes = 0u64;
            // The binary protocol: typed values, as chunks read them.
            let mut result = conn
                .exec_iter(&sql, ())
                .await
                .map_err(|e| map_err(format!("snapshot query on {table}"), e))?;
            let plan = TablePlan::new(schema.clone());
            while let Some(row) = result
                .next()
                .await
                .map_err(|e| map_err(format!("snapshot query on {table}"), e))?
            {
                push_row(&mut b, &plan, &row, zero, &mut bytes)?;
                if b.len() >= batch_rows {
                    flow.before_rows(b.len()).await;
                    flow.after_bytes(std::mem::take(&mut bytes)).await;
                    let batch = std::mem::replace(&mut b, new_batch()).finish()?;
                    if tx.send(Ok(batch)).await.is_err() {
                        return Ok(()); // the source went away
                    }
                }
            }
            drop(result);
            if !b.is_empty() {
                let _ = tx.send(Ok(b.finish()?)).await;
            }
            Ok(())
        };
        let outcome: Result<()> = read.await;
        if let Err(e) = outcome {
            let _ = tx.send(Err(e)).await;
        }
        conn.query_drop("COMMIT")
            .await
            .map_err(|e| map_err("COMMIT", e))?;
        Ok(conn)
    });
    Ok(KeylessRead { at, batches, done })
}

const STALE_PLAN: &str = "changed while its snapshot was read";

fn stale_plan(table: &TableId) -> Error {
    Error::new(ErrorKind::SchemaMismatch, format!("{table} {STALE_PLAN}"))
}

/// Whether `e` says a chunk was read with an outdated column list (the
/// round is read again with a fresh plan).
pub(crate) fn is_stale_plan(e: &Error) -> bool {
    e.kind() == ErrorKind::SchemaMismatch && e.message().ends_with(STALE_PLAN)
}

fn push_row(
    b: &mut ChangeBatchBuilder,
    plan: &TablePlan,
    row: &mysql_async::Row,
    zero: ZeroDates,
    bytes: &mut u64,
) -> Result<()> {
    b.begin_row(Op::Read)?;
    for (i, c) in plan.schema.columns.iter().enumerate() {
        let v = row.as_ref(i).unwrap_or(&mysql_async::Value::NULL);
        *bytes += value_len(v);
        values::push_cell(b.after(), &c.data_type, v, c.nullable, zero).map_err(|e| {
            e.with_context("table", &plan.schema.table)
                .with_context("column", &c.name)
        })?;
    }
    b.end_row()
}

fn value_len(v: &mysql_async::Value) -> u64 {
    match v {
        mysql_async::Value::Bytes(b) => b.len() as u64,
        mysql_async::Value::NULL => 1,
        _ => 8,
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn requeued_tables_are_read_again_from_their_start() {
        let (a, b, c) = (
            TableId::new("d", "a"),
            TableId::new("d", "b"),
            TableId::new("d", "c"),
        );
        let mut cp = tributary_core::Checkpoint::default();
        SnapshotProgress::requeue(&mut cp, std::slice::from_ref(&b)).unwrap();
        let read = |cp: &tributary_core::Checkpoint| -> SnapshotProgress {
            serde_json::from_str(&cp.properties[SNAPSHOT_PROPERTY]).unwrap()
        };
        assert_eq!(
            read(&cp).remaining,
            vec![b.clone()],
            "a finished snapshot starts again"
        );
        let progress = SnapshotProgress {
            remaining: vec![a.clone(), c.clone()],
            last_key: Some(vec![Value::Int32(7)]),
        };
        cp.properties.insert(
            SNAPSHOT_PROPERTY.into(),
            serde_json::to_string(&progress).unwrap(),
        );
        SnapshotProgress::requeue(&mut cp, &[b.clone(), c.clone()]).unwrap();
        let p = read(&cp);
        assert_eq!(
            (p.remaining, p.last_key.is_some()),
            (vec![a.clone(), c.clone(), b.clone()], true)
        );
        SnapshotProgress::requeue(&mut cp, std::slice::from_ref(&a)).unwrap();
        assert_eq!(read(&cp).last_key, None, "the table in progress restarts");
    }

    use super::{SNAPSHOT_PROPERTY, SnapshotProgress, TableId, Value, is_dense};

    #[test]
    fn density_needs_four_fifths_of_the_key_span() {
        assert!(is_dense(1000, 1, 1000));
        assert!(is_dense(800, 1, 1000));
        assert!(!is_dense(799, 1, 1000));
        assert!(!is_dense(10, 0, i64::MAX as i128));
        assert!(!is_dense(5, 10, 1));
    }
}
