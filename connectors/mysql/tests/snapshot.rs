//! Snapshot + binlog as one source, against the real MariaDB.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use tributary_core::{BinlogFilePos, Op, Source, SourceRecord, Value};
use tributary_mysql::{MySqlSource, SnapshotMode};
use tributary_testkit::DevServices;

mod common;
use common::{TYPES_DDL, database, events, last_checkpoint, max_row, min_row, read_until, summary};

/// A tiny deterministic generator for reproducible workloads.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The table state a sink would hold after applying `records` in order.
fn apply(model: &mut BTreeMap<i32, Vec<Value>>, records: &[SourceRecord]) {
    for e in events(records) {
        let key = |row: &Vec<Value>| match row[0] {
            Value::Int32(k) => k,
            ref v => panic!("{v:?}"),
        };
        if let Some(before) = &e.before {
            model.remove(&key(before));
        }
        if let (Some(after), true) = (&e.after, e.op != Op::Delete) {
            model.insert(key(after), after.clone());
        }
    }
}

async fn table_rows(conn: &mut Conn, table: &str) -> BTreeMap<i32, Vec<Value>> {
    let rows: Vec<(i32, Option<i32>, Option<String>)> = conn
        .query(format!("SELECT id, v, s FROM {table} ORDER BY id"))
        .await
        .unwrap();
    rows.into_iter()
        .map(|(id, v, s)| {
            let v = v.map_or(Value::Null, Value::Int32);
            let s = s.map_or(Value::Null, Value::String);
            (id, vec![Value::Int32(id), v, s])
        })
        .collect()
}

async fn master_position(conn: &mut Conn) -> BinlogFilePos {
    let row: mysql_async::Row = conn
        .query_first("SHOW MASTER STATUS")
        .await
        .unwrap()
        .unwrap();
    BinlogFilePos::new(
        row.get::<String, _>(0).unwrap(),
        row.get::<u64, _>(1).unwrap(),
    )
}

fn snapshot_done_and_past(records: &[SourceRecord], end: &BinlogFilePos) -> bool {
    match records.last() {
        Some(SourceRecord::Checkpoint(cp)) => {
            !cp.properties.contains_key("mysql.snapshot")
                && cp
                    .position
                    .as_ref()
                    .and_then(|p| p.file_pos())
                    .is_some_and(|p| p >= end)
        }
        _ => false,
    }
}

/// Random single- and multi-row transactions: inserts, updates, deletes and
/// primary-key changes over ids 0..8000, until `stop`.
async fn write_randomly(url: String, table: String, seed: u64, stop: Arc<AtomicBool>) -> usize {
    let mut conn = Conn::new(Opts::from_url(&url).unwrap()).await.unwrap();
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut ops = 0;
    while !stop.load(Ordering::Relaxed) && ops < 5000 {
        let multi = rng.below(4) == 0;
        if multi {
            conn.query_drop("BEGIN").await.unwrap();
        }
        for _ in 0..if multi { 1 + rng.below(5) } else { 1 } {
            let (a, b, v) = (rng.below(8000), rng.below(8000), rng.below(1000));
            let sql = match rng.below(4) {
                0 => format!("INSERT IGNORE INTO {table} VALUES ({a}, {v}, 'ins-{v}')"),
                1 => format!("UPDATE {table} SET v = {v}, s = 'upd-{v}' WHERE id = {a}"),
                2 => format!("DELETE FROM {table} WHERE id = {a}"),
                _ => format!("UPDATE IGNORE {table} SET id = {b} WHERE id = {a}"),
            };
            conn.query_drop(sql).await.unwrap();
            ops += 1;
        }
        if multi {
            conn.query_drop("COMMIT").await.unwrap();
        }
    }
    ops
}

/// Every event sits where its position says relative to the snapshot reads of
/// its key: a read at S comes after the key's changes at or before S and
/// before those after S, so the key's state never goes back in time.
fn assert_stream_order(records: &[SourceRecord], seed: u64) {
    let mut last_read: BTreeMap<i32, BinlogFilePos> = BTreeMap::new();
    let mut last_change: BTreeMap<i32, BinlogFilePos> = BTreeMap::new();
    for e in events(records) {
        let pos = e
            .position
            .as_ref()
            .and_then(|p| p.file_pos())
            .cloned()
            .expect("positions");
        for row in [&e.before, &e.after].into_iter().flatten() {
            let Value::Int32(k) = row[0] else {
                unreachable!()
            };
            if e.op == Op::Read {
                if let Some(c) = last_change.get(&k) {
                    assert!(
                        *c <= pos,
                        "seed {seed}: key {k} read at {pos} after its change at {c}"
                    );
                }
                last_read.insert(k, pos.clone());
            } else {
                if let Some(r) = last_read.get(&k) {
                    assert!(
                        *r < pos,
                        "seed {seed}: key {k} changed at {pos} after its read at {r}"
                    );
                }
                last_change.insert(k, pos.clone());
            }
        }
    }
}

async fn snapshot_under_writes(seed: u64) {
    let mut db = database().await;
    let table = format!("{}.kv", db.name);
    db.sql(format!(
        "CREATE TABLE {table} (id INT PRIMARY KEY, v INT, s VARCHAR(20))"
    ))
    .await;
    let values: Vec<String> = (0..4000)
        .map(|i| format!("({}, {i}, 'init-{i}')", i * 2))
        .collect();
    db.sql(format!("INSERT INTO {table} VALUES {}", values.join(",")))
        .await;
    db.config.snapshot.chunk_rows = 53;
    let mut source = MySqlSource::start(db.config.clone(), None).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let url = DevServices::load().mariadb().url;
    let writer = tokio::spawn(write_randomly(url, table.clone(), seed, stop.clone()));
    let snapshot = read_until(&mut source, |r| {
        matches!(r.last(), Some(SourceRecord::Checkpoint(cp)) if !cp.properties.contains_key("mysql.snapshot"))
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let ops = writer.await.unwrap();
    let end = master_position(&mut db.conn).await;
    let catch_up = read_until(&mut source, |r| snapshot_done_and_past(r, &end)).await;

    let reads = events(&snapshot)
        .iter()
        .filter(|e| e.op == Op::Read)
        .count();
    assert!(
        reads > 0 && ops > 0,
        "seed {seed}: {reads} reads, {ops} writes"
    );
    let all: Vec<SourceRecord> = snapshot.iter().chain(&catch_up).cloned().collect();
    assert_stream_order(&all, seed);
    let mut model = BTreeMap::new();
    apply(&mut model, &snapshot);
    apply(&mut model, &catch_up);
    let actual = table_rows(&mut db.conn, &table).await;
    if model != actual {
        let keys: Vec<i32> = model
            .keys()
            .chain(actual.keys())
            .filter(|k| model.get(k) != actual.get(k))
            .copied()
            .collect();
        let all: Vec<_> = snapshot.iter().chain(&catch_up).cloned().collect();
        for r in &all {
            match r {
                SourceRecord::Changes(b) => {
                    let ps: Vec<String> = b
                        .txns()
                        .iter()
                        .map(|t| {
                            t.position
                                .as_ref()
                                .and_then(|p| p.file_pos())
                                .map(|p| p.pos.to_string())
                                .unwrap_or_default()
                        })
                        .collect();
                    eprintln!("changes {:?} rows={} txns={:?}", b.op(0), b.len(), ps);
                }
                SourceRecord::Checkpoint(c) => eprintln!(
                    "checkpoint {:?}",
                    c.position
                        .as_ref()
                        .and_then(|p| p.file_pos())
                        .map(|p| p.pos)
                ),
                _ => {}
            }
        }
        let history: Vec<String> = events(&all)
            .iter()
            .filter(|e| {
                let key = |r: &Option<Vec<Value>>| r.as_ref().map(|r| r[0].clone());
                keys.iter().any(|k| {
                    key(&e.before) == Some(Value::Int32(*k))
                        || key(&e.after) == Some(Value::Int32(*k))
                })
            })
            .map(|e| {
                format!(
                    "{:?} {:?} -> {:?} at {:?}",
                    e.op,
                    e.before,
                    e.after,
                    e.position
                        .as_ref()
                        .and_then(|p| p.file_pos())
                        .map(|p| p.to_string())
                )
            })
            .collect();
        panic!(
            "seed {seed}: keys {keys:?} differ ({ops} writes)\nmodel {:?}\ntable {:?}\n{history:#?}",
            keys.iter().map(|k| model.get(k)).collect::<Vec<_>>(),
            keys.iter().map(|k| actual.get(k)).collect::<Vec<_>>()
        );
    }
    db.drop().await;
}

#[tokio::test]
async fn snapshot_plus_stream_equals_the_table_under_concurrent_writes_seed_1() {
    snapshot_under_writes(1).await;
}
#[tokio::test]
async fn snapshot_plus_stream_equals_the_table_under_concurrent_writes_seed_2() {
    snapshot_under_writes(2).await;
}
#[tokio::test]
async fn snapshot_plus_stream_equals_the_table_under_concurrent_writes_seed_3() {
    snapshot_under_writes(3).await;
}
#[tokio::test]
async fn snapshot_plus_stream_equals_the_table_under_concurrent_writes_seed_4() {
    snapshot_under_writes(4).await;
}
#[tokio::test]
async fn snapshot_plus_stream_equals_the_table_under_concurrent_writes_seed_5() {
    snapshot_under_writes(5).await;
}

#[tokio::test]
async fn snapshot_and_binlog_decode_every_type_alike() {
    let mut db = database().await;
    let table = format!("{}.types", db.name);
    db.sql(format!("CREATE TABLE {table} ({TYPES_DDL})")).await;
    let (max_sql, max) = max_row();
    let (min_sql, min) = min_row();
    db.sql(format!("INSERT INTO {table} VALUES {max_sql}, {min_sql}"))
        .await;
    let mut source = MySqlSource::start(db.config.clone(), None).await.unwrap();
    let snap = read_until(&mut source, |r| {
        matches!(r.last(), Some(SourceRecord::Checkpoint(cp)) if !cp.properties.contains_key("mysql.snapshot"))
    })
    .await;
    let reads = events(&snap);
    assert_eq!(reads.len(), 2, "{:?}", summary(&snap));
    assert_eq!(reads[0].after.as_ref().unwrap(), &max);
    assert_eq!(reads[1].after.as_ref().unwrap(), &min);

    // The same row through the binlog decodes to the same values and schema.
    db.sql(format!("INSERT INTO {table} SELECT 5, t, tu, s, su, m, mu, i, iu, b, bu, f, d, dec1, dec2, dec3, c, vc, tx, bn, vb, bl, dt, tm, tm6, dtm, dtm3, ts, y, b1, b64, e, st, j, l1 FROM {table} WHERE id = 1")).await;
    let streamed = read_until(&mut source, |r| !events(r).is_empty()).await;
    let diffs: Vec<_> = streamed
        .iter()
        .filter_map(|r| {
            if let SourceRecord::SchemaChange(c) = r {
                Some(c.columns.clone())
            } else {
                None
            }
        })
        .collect();
    assert!(
        diffs.is_empty(),
        "snapshot and table-map schemas differ: {diffs:#?}"
    );
    let mut expect = max.clone();
    expect[0] = Value::Int32(5);
    let ev = &events(&streamed)[0];
    assert_eq!(ev.after.as_ref().unwrap(), &expect);
    assert_eq!(ev.schema_version, reads[0].schema_version);
    db.drop().await;
}

#[tokio::test]
async fn a_killed_snapshot_resumes_at_its_next_chunk() {
    let mut db = database().await;
    let table = format!("{}.kv", db.name);
    db.sql(format!(
        "CREATE TABLE {table} (id INT PRIMARY KEY, v INT, s VARCHAR(20))"
    ))
    .await;
    let values: Vec<String> = (0..3000).map(|i| format!("({i}, {i}, 's{i}')")).collect();
    db.sql(format!("INSERT INTO {table} VALUES {}", values.join(",")))
        .await;
    db.config.snapshot.chunk_rows = 200;
    db.config.snapshot.max_connections = 3; // rounds of 3 parallel chunks
    let mut source = MySqlSource::start(db.config.clone(), None).await.unwrap();
    let first = read_until(&mut source, |r| {
        events(r).len() >= 1000 && matches!(r.last(), Some(SourceRecord::Checkpoint(_)))
    })
    .await;
    let cp = last_checkpoint(&first).unwrap();
    let progress: serde_json::Value =
        serde_json::from_str(&cp.properties["mysql.snapshot"]).unwrap();
    let done = progress["last_key"][0]["value"].as_i64().unwrap() as i32;
    assert_eq!(
        (done + 1) % 600,
        0,
        "progress moves by rounds of 3 × 200 rows: {progress}"
    );
    drop(source); // killed: nothing after the checkpoint was committed

    db.sql(format!("UPDATE {table} SET v = -1 WHERE id IN (5, 2500)"))
        .await;
    db.sql(format!("DELETE FROM {table} WHERE id = 2999")).await;
    let end = master_position(&mut db.conn).await;
    let mut resumed = MySqlSource::start(db.config.clone(), Some(&cp))
        .await
        .unwrap();
    let second = read_until(&mut resumed, |r| snapshot_done_and_past(r, &end)).await;
    let second_reads: Vec<i32> = events(&second)
        .iter()
        .filter(|e| e.op == Op::Read)
        .map(|e| {
            if let Value::Int32(k) = e.after.as_ref().unwrap()[0] {
                k
            } else {
                unreachable!()
            }
        })
        .collect();
    let mut sorted = second_reads.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        (done + 1..2999).collect::<Vec<_>>(),
        "the rest once each (2999 deleted)"
    );

    let mut model = BTreeMap::new();
    apply(&mut model, &first);
    apply(&mut model, &second);
    assert_eq!(model, table_rows(&mut db.conn, &table).await);
    db.drop().await;
}

#[tokio::test]
async fn composite_unique_and_configured_keys_are_read_exactly_once_and_keyless_tables_refused() {
    let mut db = database().await;
    let comp = format!("{}.comp", db.name);
    let bare = format!("{}.bare", db.name);
    db.sql(format!(
        "CREATE TABLE {comp} (a INT, b VARCHAR(10), n INT, PRIMARY KEY (a, b))"
    ))
    .await;
    db.sql(format!(
        "CREATE TABLE {bare} (x INT NOT NULL, y VARCHAR(10))"
    ))
    .await;
    let rows: Vec<String> = (0..500)
        .map(|i| format!("({}, 'k{}', {i})", i / 7, i % 7))
        .collect();
    db.sql(format!("INSERT INTO {comp} VALUES {}", rows.join(",")))
        .await;
    let rows: Vec<String> = (0..300).map(|i| format!("({i}, 'y{i}')")).collect();
    db.sql(format!("INSERT INTO {bare} VALUES {}", rows.join(",")))
        .await;
    // A table keyed only by a unique index on NOT NULL columns is chunked
    // (and keyed in every sink) by it.
    let keyed = format!("{}.keyed", db.name);
    db.sql(format!(
        "CREATE TABLE {keyed} (u INT NOT NULL, UNIQUE KEY (u), w INT)"
    ))
    .await;
    let rows: Vec<String> = (0..100).map(|i| format!("({i}, {i})")).collect();
    db.sql(format!("INSERT INTO {keyed} VALUES {}", rows.join(",")))
        .await;
    db.config.snapshot.chunk_rows = 37;
    db.config.snapshot.mode = SnapshotMode::Only;
    // A table with no key at all is refused before anything is read,
    // naming the table and the fixes.
    let err = MySqlSource::start(db.config.clone(), None)
        .await
        .err()
        .expect("a keyless table is refused")
        .to_string();
    assert!(
        err.contains("have no primary key and no unique index")
            && err.contains(&bare)
            && err.contains("key_columns")
            && !err.contains(&keyed),
        "{err}"
    );
    // Configured columns key it.
    db.config.key_columns.insert(bare.clone(), vec!["x".into()]);
    let mut source = MySqlSource::start(db.config.clone(), None).await.unwrap();
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Some(r) = tokio::time::timeout_at(deadline.into(), source.next())
        .await
        .unwrap()
        .unwrap()
    {
        records.push(r);
    }
    let evs = events(&records);
    assert!(
        evs.iter().all(|e| e.op == Op::Read && e.position.is_none()),
        "snapshot-only: no binlog positions"
    );
    let bare_rows = evs.iter().filter(|e| e.table.table == "bare").count();
    let mut comp_keys: Vec<(Value, Value)> = evs
        .iter()
        .filter(|e| e.table.table == "comp")
        .map(|e| {
            let r = e.after.as_ref().unwrap();
            (r[0].clone(), r[1].clone())
        })
        .collect();
    assert_eq!(bare_rows, 300, "every row of the configured-key table once");
    let bare_batches = records
        .iter()
        .filter(|r| matches!(r, SourceRecord::Changes(b) if b.schema().table.table == "bare"))
        .count();
    assert_eq!(bare_batches, 9, "chunked by the configured key (300 / 37)");
    let keyed_batches: Vec<usize> = records
        .iter()
        .filter_map(|r| match r {
            SourceRecord::Changes(b) if b.schema().table.table == "keyed" => Some(b.len()),
            _ => None,
        })
        .collect();
    assert_eq!(keyed_batches, [37, 37, 26], "chunked by the configured key");
    assert_eq!(comp_keys.len(), 500);
    let n = comp_keys.len();
    comp_keys.dedup();
    assert_eq!(comp_keys.len(), n, "no row twice");
    let changes = records
        .iter()
        .filter(|r| matches!(r, SourceRecord::Changes(_)))
        .count();
    assert!(changes >= 500 / 37, "chunked: {changes} batches");
    let last = last_checkpoint(&records).unwrap();
    assert!(
        !last.properties.contains_key("mysql.snapshot"),
        "done: no progress left"
    );
    db.drop().await;
}

/// Reads for `secs` seconds and returns the snapshot rows per second.
async fn measured_rate(source: &mut MySqlSource, secs: u64) -> f64 {
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut rows = 0;
    while let Ok(r) = tokio::time::timeout_at(deadline, source.next()).await {
        if let Some(SourceRecord::Changes(b)) = r.unwrap() {
            rows += b.len();
        }
    }
    rows as f64 / start.elapsed().as_secs_f64()
}

#[tokio::test]
async fn row_and_byte_rate_limits_hold_within_ten_percent_over_ten_seconds() {
    let mut db = database().await;
    let table = format!("{}.big", db.name);
    db.sql(format!(
        "CREATE TABLE {table} (id INT PRIMARY KEY, pad CHAR(92))"
    ))
    .await;
    for chunk in 0..6 {
        let rows: Vec<String> = (chunk * 10_000..(chunk + 1) * 10_000)
            .map(|i| format!("({i}, REPEAT('p', 92))"))
            .collect();
        db.sql(format!("INSERT INTO {table} VALUES {}", rows.join(",")))
            .await;
    }
    let mut rows_config = db.config.clone();
    rows_config.snapshot.max_rows_per_sec = 2000;
    let mut by_rows = MySqlSource::start(rows_config, None).await.unwrap();
    let rate = measured_rate(&mut by_rows, 10).await;
    drop(by_rows); // its open snapshot transaction would block DROP DATABASE
    assert!(
        (1800.0..=2200.0).contains(&rate),
        "rows/s limit 2000, measured {rate:.0}"
    );

    // ~100 bytes a row (4-byte id + 92 characters): 200 kB/s ≈ 2000 rows/s.
    let mut bytes_config = db.config.clone();
    bytes_config.snapshot.max_bytes_per_sec = 200_000;
    bytes_config.snapshot.chunk_rows = 500;
    let mut by_bytes = MySqlSource::start(bytes_config, None).await.unwrap();
    let rate = measured_rate(&mut by_bytes, 10).await;
    drop(by_bytes);
    assert!(
        (1800.0..=2200.0).contains(&rate),
        "bytes/s limit ≈ 2000 rows/s, measured {rate:.0}"
    );
    db.drop().await;
}

/// `ALTER TABLE … ADD COLUMN` while the table is being snapshotted: the
/// chunks read after it carry the new column (with its value), every row
/// comes out, and the stream reports the change.
#[tokio::test]
async fn ddl_mid_snapshot_makes_the_remaining_chunks_read_the_new_columns() {
    let mut db = database().await;
    let table = format!("{}.growing", db.name);
    db.sql(format!("CREATE TABLE {table} (id INT PRIMARY KEY, v INT)"))
        .await;
    let rows: Vec<String> = (0..300).map(|i| format!("({i}, {i})")).collect();
    db.sql(format!("INSERT INTO {table} VALUES {}", rows.join(",")))
        .await;
    db.config.snapshot.chunk_rows = 50;
    db.config.snapshot.max_connections = 1;
    let mut source = MySqlSource::start(db.config.clone(), None).await.unwrap();
    // The first chunk out, then the DDL.
    let mut records = read_until(&mut source, |r| !events(r).is_empty()).await;
    db.sql(format!(
        "ALTER TABLE {table} ADD COLUMN note VARCHAR(10) NOT NULL DEFAULT 'new'"
    ))
    .await;
    records.extend(
        read_until(&mut source, |r| {
            let seen: std::collections::BTreeSet<i32> = events(r).iter().map(id_of).collect();
            seen.len() + 50 >= 300 && matches!(r.last(), Some(SourceRecord::Checkpoint(c)) if !c.properties.contains_key("mysql.snapshot"))
        })
        .await,
    );
    let evs = events(&records);
    let ids: std::collections::BTreeSet<i32> = evs.iter().map(id_of).collect();
    assert_eq!(ids.len(), 300, "every row once at least");
    let last = evs.last().unwrap().after.as_ref().unwrap();
    assert_eq!(last.len(), 3, "the last chunk has the new column: {last:?}");
    assert_eq!(last[2], Value::String("new".into()));
    db.drop().await;
}

fn id_of(e: &tributary_core::ChangeEvent) -> i32 {
    match e.after.as_ref().unwrap()[0] {
        Value::Int32(i) => i,
        ref v => panic!("{v:?}"),
    }
}

/// The changelog rows of `table` in `records`: (op, `_change_seq`,
/// `_change_row`, the source row's `n`).
fn changelog_rows(records: &[SourceRecord], table: &str) -> Vec<(String, i64, i64, Value)> {
    let mut out = Vec::new();
    for r in records {
        let SourceRecord::Changes(b) = r else {
            continue;
        };
        if b.schema().table.table != table {
            continue;
        }
        for i in 0..b.len() {
            let row = b.row(tributary_core::Image::After, i).unwrap();
            let (Value::Int64(seq), Value::Int64(n), Value::String(op)) =
                (&row[0], &row[1], &row[2])
            else {
                panic!("{row:?}")
            };
            out.push((op.clone(), *seq, *n, row[6].clone()));
        }
    }
    out
}

/// Under keyless = "changelog" a table with no key is read whole in one
/// snapshot, handed out in batches of at most chunk_rows, and streamed
/// as an append-only table of changes — an update as its before and after
/// image; a keyless table created mid-stream too.
#[tokio::test]
async fn keyless_tables_under_changelog_are_read_in_bounded_batches_and_streamed_as_changes() {
    let mut db = database().await;
    let logs = format!("{}.logs", db.name);
    db.sql(format!("CREATE TABLE {logs} (msg VARCHAR(20), n INT)"))
        .await;
    // Duplicate rows, as keyless tables hold.
    let rows: Vec<String> = (0..2500).map(|i| format!("('m', {})", i % 100)).collect();
    db.sql(format!("INSERT INTO {logs} VALUES {}", rows.join(",")))
        .await;
    db.config.snapshot.chunk_rows = 1000;
    db.config.keyless = tributary_mysql::KeylessPolicy::Changelog;
    let mut source = MySqlSource::start(db.config.clone(), None).await.unwrap();
    let snapshot = read_until(&mut source, |r| changelog_rows(r, "logs").len() >= 2500).await;
    let sizes: Vec<usize> = snapshot
        .iter()
        .filter_map(|r| match r {
            SourceRecord::Changes(b) => Some(b.len()),
            _ => None,
        })
        .collect();
    assert!(
        sizes.iter().all(|&n| n <= 1000),
        "bounded batches: {sizes:?}"
    );
    let reads = changelog_rows(&snapshot, "logs");
    assert!(reads.iter().all(|r| r.0 == "read"));
    let mut ordinals: Vec<i64> = reads.iter().map(|r| r.2).collect();
    ordinals.sort_unstable();
    assert_eq!(
        ordinals,
        (0..2500).collect::<Vec<_>>(),
        "one identity per row"
    );
    let SourceRecord::Changes(b) = &snapshot[0] else {
        panic!()
    };
    assert_eq!(
        b.schema().primary_key_names(),
        ["_change_seq", "_change_row", "_change_op"]
    );

    db.sql(format!("UPDATE {logs} SET n = -1 WHERE n = 5 LIMIT 1"))
        .await;
    db.sql(format!("DELETE FROM {logs} WHERE n = 7 LIMIT 1"))
        .await;
    db.sql(format!("INSERT INTO {logs} VALUES ('new', 1000)"))
        .await;
    let later = format!("{}.later", db.name);
    db.sql(format!("CREATE TABLE {later} (a INT, b VARCHAR(5), n INT)"))
        .await;
    db.sql(format!(
        "INSERT INTO {later} VALUES (1, 'x', 1), (1, 'x', 1)"
    ))
    .await;
    let stream = read_until(&mut source, |r| changelog_rows(r, "later").len() >= 2).await;
    let changes: Vec<(String, Value)> = changelog_rows(&stream, "logs")
        .into_iter()
        .map(|r| (r.0, r.3))
        .collect();
    assert_eq!(
        changes,
        [
            ("update_before".to_string(), Value::Int32(5)),
            ("update_after".to_string(), Value::Int32(-1)),
            ("delete".to_string(), Value::Int32(7)),
            ("insert".to_string(), Value::Int32(1000)),
        ]
    );
    let seqs: Vec<i64> = changelog_rows(&stream, "logs")
        .iter()
        .map(|r| r.1)
        .collect();
    assert!(
        seqs[0] == seqs[1] && seqs[1] < seqs[2] && seqs[2] < seqs[3],
        "{seqs:?}"
    );
    assert!(seqs[0] > reads[0].1, "stream changes follow the snapshot");
    let later_rows = changelog_rows(&stream, "later");
    assert_eq!(
        later_rows
            .iter()
            .map(|r| (r.0.as_str(), r.2))
            .collect::<Vec<_>>(),
        [("insert", 0), ("insert", 1)],
        "two equal rows, two changes"
    );

    // DDL: a new column follows in the changelog schema; a TRUNCATE is a
    // `truncate` row (the changelog keeps its history).
    db.sql(format!("ALTER TABLE {logs} ADD COLUMN note VARCHAR(5)"))
        .await;
    db.sql(format!("TRUNCATE TABLE {logs}")).await;
    db.sql(format!("INSERT INTO {logs} VALUES ('z', 1, 'n')"))
        .await;
    let ddl = read_until(&mut source, |r| {
        changelog_rows(r, "logs").iter().any(|c| c.0 == "insert")
    })
    .await;
    let change = ddl
        .iter()
        .find_map(|r| match r {
            SourceRecord::SchemaChange(c) => Some(c.clone()),
            _ => None,
        })
        .expect("the ALTER");
    let after = change.after.unwrap();
    assert_eq!(after.columns.len(), 8, "{after:?}");
    assert_eq!(after.columns[7].name, "note");
    assert!(!change.columns.is_empty(), "the column diff");
    let ops: Vec<String> = changelog_rows(&ddl, "logs")
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(ops, ["truncate", "insert"]);
    db.drop().await;
}
