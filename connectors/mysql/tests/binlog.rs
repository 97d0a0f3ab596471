//! The binlog reader against the real MariaDB from `dev/services up mariadb`.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use tributary_core::{
    Checkpoint, ColumnType, ErrorKind, Op, SchemaChangeKind, Source, SourcePosition, SourceRecord,
    Value,
};
use tributary_mysql::{BinlogReader, StartMode};
use tributary_testkit::unique_name;

mod common;
use common::{
    Db, TYPES_DDL, count_events, database, events, last_checkpoint, max_row, min_row, read_until,
    summary,
};

#[tokio::test]
async fn every_column_type_decodes_exactly_from_the_binlog() {
    let mut db = database().await;
    let table = format!("{}.types", db.name);
    db.sql(format!("CREATE TABLE {table} ({TYPES_DDL})")).await;
    db.config.start = StartMode::Latest;
    let mut reader = BinlogReader::start(db.config.clone(), None).await.unwrap();

    let (max_sql, max) = max_row();
    let (min_sql, min) = min_row();
    let nulls: Vec<Value> = std::iter::once(Value::Int32(3))
        .chain(std::iter::repeat_n(Value::Null, max.len() - 1))
        .collect();
    db.sql(format!(
        "INSERT INTO {table} VALUES {max_sql}, {min_sql}, (3{})",
        ", NULL".repeat(max.len() - 1)
    ))
    .await;
    // Zero dates need a permissive sql_mode; the default policy maps them to NULL.
    db.sql("SET SESSION sql_mode = ''").await;
    db.sql(format!(
        "INSERT INTO {table} (id, dt, dtm) VALUES (4, '0000-00-00', '2020-00-10 00:00:00')"
    ))
    .await;
    db.sql(format!(
        "UPDATE {table} SET i = 42, vc = 'updated' WHERE id = 1"
    ))
    .await;
    db.sql(format!("DELETE FROM {table} WHERE id = 2")).await;

    let records = read_until(&mut reader, |r| {
        count_events(r) >= 6 && matches!(r.last(), Some(SourceRecord::Checkpoint(_)))
    })
    .await;
    let evs = events(&records);
    assert_eq!(evs.len(), 6, "{:#?}", summary(&records));
    let ops: Vec<Op> = evs.iter().map(|e| e.op).collect();
    assert_eq!(
        ops,
        [
            Op::Insert,
            Op::Insert,
            Op::Insert,
            Op::Insert,
            Op::Update,
            Op::Delete
        ]
    );
    for (got, want) in evs[0].after.as_ref().unwrap().iter().zip(&max) {
        assert_eq!(got, want);
    }
    assert_eq!(evs[0].after.as_ref().unwrap(), &max);
    assert_eq!(evs[1].after.as_ref().unwrap(), &min);
    assert_eq!(evs[2].after.as_ref().unwrap(), &nulls);
    let zero = evs[3].after.as_ref().unwrap();
    assert_eq!(
        (&zero[22], &zero[25]),
        (&Value::Null, &Value::Null),
        "zero dates map to NULL"
    );
    let mut updated = max.clone();
    updated[7] = Value::Int32(42);
    updated[17] = Value::String("updated".into());
    assert_eq!(evs[4].before.as_ref().unwrap(), &max);
    assert_eq!(evs[4].after.as_ref().unwrap(), &updated);
    assert_eq!(evs[5].before.as_ref().unwrap(), &min);
    assert!(evs[5].after.is_none());

    // The schema comes from the table map: names, types, key, nullability.
    let SourceRecord::Changes(batch) = records
        .iter()
        .find(|r| matches!(r, SourceRecord::Changes(_)))
        .unwrap()
    else {
        unreachable!()
    };
    let schema = batch.schema();
    assert_eq!(schema.primary_key_names(), ["id"]);
    let col = |n: &str| schema.columns[schema.column_index(n).unwrap()].clone();
    assert!(!col("id").nullable && col("vc").nullable);
    assert_eq!(col("mu").data_type, ColumnType::UInt24);
    assert_eq!(
        col("dec3").data_type,
        ColumnType::Decimal {
            precision: 65,
            scale: 30
        }
    );
    assert_eq!(
        col("vc").data_type,
        ColumnType::String { max_len: Some(300) }
    );
    assert_eq!(col("bn").data_type, ColumnType::Bytes { max_len: Some(4) });
    assert_eq!(col("tm6").data_type, ColumnType::Time { fsp: 6 });
    assert_eq!(col("ts").data_type, ColumnType::Timestamp { fsp: 6 });
    assert_eq!(col("b64").data_type, ColumnType::Bit { width: 64 });
    assert_eq!(
        col("e").data_type,
        ColumnType::Enum {
            labels: vec!["small".into(), "médium".into(), "🚀".into()]
        }
    );
    // Every event carries its transaction's end position; positions only grow.
    let positions: Vec<SourcePosition> = evs.iter().map(|e| e.position.clone().unwrap()).collect();
    assert!(
        positions
            .windows(2)
            .all(|w| w[0].partial_cmp(&w[1]) != Some(std::cmp::Ordering::Greater))
    );
    assert!(
        matches!(positions[0], SourcePosition::MariaDbGtid { .. }),
        "{:?}",
        positions[0]
    );
    db.drop().await;
}

/// Creates `<db>.<name> (id INT PRIMARY KEY, v VARCHAR(10))`; returns its name.
async fn kv_table(db: &mut Db, name: &str) -> String {
    let table = format!("{}.{name}", db.name);
    db.sql(format!(
        "CREATE TABLE {table} (id INT PRIMARY KEY, v VARCHAR(10))"
    ))
    .await;
    table
}

/// Runs `n` single-row transactions on `table` with ids from `start`.
async fn insert_each(conn: &mut Conn, table: &str, ids: std::ops::Range<i32>) {
    for id in ids {
        conn.query_drop(format!("INSERT INTO {table} VALUES ({id}, 'v{id}')"))
            .await
            .unwrap();
    }
}

fn ids(records: &[SourceRecord]) -> Vec<i32> {
    events(records)
        .iter()
        .map(|e| match e.key_image().unwrap()[0] {
            Value::Int32(i) => i,
            ref v => panic!("{v:?}"),
        })
        .collect()
}

#[tokio::test]
async fn resume_from_gtid_and_file_checkpoints_loses_and_repeats_nothing() {
    let mut db = database().await;
    let table = kv_table(&mut db, "kv").await;
    db.config.start = StartMode::Latest;
    db.config.max_batch_rows = 1; // a checkpoint after every transaction
    let mut reader = BinlogReader::start(db.config.clone(), None).await.unwrap();
    insert_each(&mut db.conn, &table, 0..10).await;
    let first = read_until(&mut reader, |r| {
        ids(r).len() >= 4 && matches!(r.last(), Some(SourceRecord::Checkpoint(_)))
    })
    .await;
    let seen = ids(&first);
    let cp = last_checkpoint(&first).unwrap();
    drop(reader);
    // The file name comes from the dump's first (fake) ROTATE, whose checksum
    // once leaked into it: it must name a binlog the server has.
    let logs: Vec<(String, u64)> = db.conn.query("SHOW BINARY LOGS").await.unwrap();
    let file = &cp.position.as_ref().unwrap().file_pos().unwrap().file;
    assert!(
        logs.iter().any(|(f, _)| f == file),
        "{file:?} not in {logs:?}"
    );
    insert_each(&mut db.conn, &table, 10..15).await;

    // GTID checkpoint (MariaDB's native form).
    assert!(
        matches!(cp.position, Some(SourcePosition::MariaDbGtid { .. })),
        "{cp:?}"
    );
    let mut resumed = BinlogReader::start(db.config.clone(), Some(&cp))
        .await
        .unwrap();
    let rest = read_until(&mut resumed, |r| ids(r).len() >= 15 - seen.len()).await;
    let mut all = seen.clone();
    all.extend(ids(&rest));
    assert_eq!(
        all,
        (0..15).collect::<Vec<_>>(),
        "no loss, no repeat (GTID resume)"
    );

    // The same checkpoint as a plain file position.
    let file_pos = cp.position.as_ref().unwrap().file_pos().unwrap().clone();
    let cp_file = Checkpoint {
        position: Some(SourcePosition::FilePos(file_pos)),
        ..cp.clone()
    };
    let mut resumed = BinlogReader::start(db.config.clone(), Some(&cp_file))
        .await
        .unwrap();
    let rest = read_until(&mut resumed, |r| ids(r).len() >= 15 - seen.len()).await;
    let mut all = seen;
    all.extend(ids(&rest));
    assert_eq!(
        all,
        (0..15).collect::<Vec<_>>(),
        "no loss, no repeat (file resume)"
    );
    db.drop().await;
}

/// Row versions of a batch's changes, in order.
fn versions(records: &[SourceRecord]) -> Vec<u64> {
    records
        .iter()
        .filter_map(|r| match r {
            SourceRecord::Changes(b) => Some(b.keyed_changes(None, |_| Ok(true)).unwrap()),
            _ => None,
        })
        .flatten()
        .map(|c| c.version)
        .collect()
}

/// A resume on a server whose binlog numbers are lower than those of the
/// server the checkpoint came from (a promoted replica; the GTIDs carry
/// over): versions continue above the checkpoint's, the raised base is
/// in the next checkpoint, and a replay from it computes the same ones.
#[tokio::test]
async fn row_versions_keep_growing_across_a_failover_to_lower_binlog_numbers() {
    let mut db = database().await;
    let table = kv_table(&mut db, "kv").await;
    db.config.start = StartMode::Latest;
    db.config.max_batch_rows = 1;
    let mut reader = BinlogReader::start(db.config.clone(), None).await.unwrap();
    insert_each(&mut db.conn, &table, 0..2).await;
    let first = read_until(&mut reader, |r| {
        ids(r).len() >= 2 && matches!(r.last(), Some(SourceRecord::Checkpoint(_)))
    })
    .await;
    drop(reader);
    let cp = last_checkpoint(&first).unwrap();
    let Some(SourcePosition::MariaDbGtid { gtid_list, .. }) = cp.position.clone() else {
        panic!("{cp:?}")
    };
    // The old primary was at binlog 9999.
    let old = Checkpoint {
        position: Some(SourcePosition::MariaDbGtid {
            gtid_list,
            file_pos: Some(tributary_core::BinlogFilePos::new("mysql-bin.009999", 5000)),
        }),
        ..cp.clone()
    };
    let old_version = tributary_core::row_version(old.position.as_ref());
    insert_each(&mut db.conn, &table, 2..5).await;
    let mut resumed = BinlogReader::start(db.config.clone(), Some(&old))
        .await
        .unwrap();
    let rest = read_until(&mut resumed, |r| {
        ids(r).len() >= 3 && matches!(r.last(), Some(SourceRecord::Checkpoint(_)))
    })
    .await;
    drop(resumed);
    assert_eq!(ids(&rest), vec![2, 3, 4]);
    let v = versions(&rest);
    assert!(v[0] > old_version, "{v:?} after {old_version}");
    assert!(v.windows(2).all(|w| w[0] < w[1]), "{v:?}");
    // Replaying from the first checkpoint after the jump: the same versions.
    let first_change = rest
        .iter()
        .position(|r| matches!(r, SourceRecord::Changes(_)))
        .unwrap();
    let after_jump = rest[first_change..]
        .iter()
        .find_map(|r| match r {
            SourceRecord::Checkpoint(c) => Some(c.clone()),
            _ => None,
        })
        .unwrap();
    assert!(
        after_jump.properties.contains_key("mysql.version_base"),
        "{after_jump:?}"
    );
    let mut replay = BinlogReader::start(db.config.clone(), Some(&after_jump))
        .await
        .unwrap();
    let again = read_until(&mut replay, |r| ids(r).len() >= 2).await;
    assert_eq!(versions(&again)[..2], v[1..3]);
    db.drop().await;
}

#[tokio::test]
async fn ddl_mid_stream_produces_schema_changes_and_new_rows_use_the_new_schema() {
    let mut db = database().await;
    let table = format!("{}.evolving", db.name);
    db.config.start = StartMode::Latest;
    let mut reader = BinlogReader::start(db.config.clone(), None).await.unwrap();
    db.sql(format!("CREATE TABLE {table} (id INT PRIMARY KEY, n INT)"))
        .await;
    db.sql(format!("INSERT INTO {table} VALUES (1, 10)")).await;
    db.sql(format!(
        "ALTER TABLE {table} ADD COLUMN note VARCHAR(20), MODIFY n BIGINT"
    ))
    .await;
    db.sql(format!("INSERT INTO {table} VALUES (2, 20, 'hi')"))
        .await;
    db.sql(format!("TRUNCATE TABLE {table}")).await;
    db.sql(format!("DROP TABLE {table}")).await;
    let records = read_until(&mut reader, |r| {
        r.iter()
            .any(|x| matches!(x, SourceRecord::SchemaChange(c) if c.kind == SchemaChangeKind::Drop))
    })
    .await;
    let changes: Vec<_> = records
        .iter()
        .filter_map(|r| {
            if let SourceRecord::SchemaChange(c) = r {
                Some(c)
            } else {
                None
            }
        })
        .collect();
    let kinds: Vec<_> = changes.iter().map(|c| c.kind.clone()).collect();
    assert_eq!(
        kinds,
        [
            SchemaChangeKind::Create,
            SchemaChangeKind::Alter,
            SchemaChangeKind::Truncate,
            SchemaChangeKind::Drop
        ]
    );
    let alter = changes[1];
    assert!(alter.ddl.as_deref().unwrap().contains("ADD COLUMN note"));
    assert_eq!(alter.columns.len(), 2, "{:?}", alter.columns);
    let evs = events(&records);
    assert_eq!(
        evs[0].after.as_ref().unwrap(),
        &vec![Value::Int32(1), Value::Int32(10)]
    );
    assert_eq!(evs[0].schema_version, 1);
    assert_eq!(
        evs[1].after.as_ref().unwrap(),
        &vec![
            Value::Int32(2),
            Value::Int64(20),
            Value::String("hi".into())
        ]
    );
    assert_eq!(evs[1].schema_version, 2);
    // Order: the create before the first row, the alter between the rows.
    let order: Vec<String> = summary(&records)
        .into_iter()
        .filter(|s| !s.starts_with("checkpoint"))
        .collect();
    assert_eq!(order[0], format!("Create {table}"));
    assert_eq!(order[2], format!("Alter {table}"));
    db.drop().await;
}

#[tokio::test]
async fn an_idle_server_still_moves_the_checkpoint_watermark() {
    let db = database().await;
    let mut reader = BinlogReader::start(db.config.clone(), None).await.unwrap();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let records = read_until(&mut reader, |r| {
        r.iter().filter(|x| matches!(x, SourceRecord::Checkpoint(c) if c.watermark_micros.unwrap_or(0) >= before)).count() >= 2
    })
    .await;
    assert!(
        records
            .iter()
            .all(|r| matches!(r, SourceRecord::Checkpoint(_))),
        "{:?}",
        summary(&records)
    );
}

/// PURGE affects every reader of the server: this test is in the nextest
/// group `mariadb-binlog` (one test at a time, see .config/nextest.toml).
#[tokio::test]
async fn resuming_from_a_purged_binlog_is_position_lost() {
    let mut db = database().await;
    let table = kv_table(&mut db, "kv").await;
    db.config.start = StartMode::Latest;
    db.config.max_batch_rows = 1;
    let mut reader = BinlogReader::start(db.config.clone(), None).await.unwrap();
    insert_each(&mut db.conn, &table, 0..2).await;
    let records = read_until(&mut reader, |r| ids(r).len() >= 2).await;
    let cp = last_checkpoint(&records).unwrap();
    reader.close().await.unwrap();
    let newest = tributary_testkit::purge_binlogs(&mut db.conn).await;
    insert_each(&mut db.conn, &table, 2..3).await;

    let old = cp.position.as_ref().unwrap().file_pos().unwrap().clone();
    assert_ne!(old.file, newest);
    for position in [
        SourcePosition::FilePos(old.clone()),
        cp.position.clone().unwrap(),
    ] {
        let lost = Checkpoint {
            position: Some(position.clone()),
            ..Default::default()
        };
        let err = match BinlogReader::start(db.config.clone(), Some(&lost)).await {
            Err(e) => e,
            Ok(mut r) => tokio::time::timeout(Duration::from_secs(30), r.next())
                .await
                .unwrap()
                .unwrap_err(),
        };
        assert_eq!(err.kind(), ErrorKind::PositionLost, "{position}: {err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("binlogs {newest}")),
            "says what the server still has: {text}"
        );
    }
    db.drop().await;
}

#[tokio::test]
async fn a_binlog_file_that_never_existed_is_position_lost() {
    let db = database().await;
    let mut config = db.config.clone();
    config.start = StartMode::Position {
        position: SourcePosition::FilePos(tributary_core::BinlogFilePos::new(
            "mysql-bin.999999",
            4,
        )),
    };
    let mut reader = BinlogReader::start(config, None).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(30), reader.next())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PositionLost, "{err}");
    assert!(err.to_string().contains("mysql-bin.999999"), "{err}");
}

#[tokio::test]
async fn a_timestamp_start_begins_at_the_first_transaction_at_or_after_it() {
    let mut db = database().await;
    let table = kv_table(&mut db, "kv").await;
    insert_each(&mut db.conn, &table, 1..2).await;
    // Binlog timestamps have whole seconds: wait (polling the server clock)
    // until the second after the first insert's.
    let first: i64 = db
        .conn
        .query_first("SELECT UNIX_TIMESTAMP()")
        .await
        .unwrap()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let at = loop {
        let now: i64 = db
            .conn
            .query_first("SELECT UNIX_TIMESTAMP()")
            .await
            .unwrap()
            .unwrap();
        if now > first {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "the server clock did not advance"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    insert_each(&mut db.conn, &table, 2..4).await;
    let at = chrono::DateTime::from_timestamp(at, 0)
        .unwrap()
        .to_rfc3339();
    db.config.start = StartMode::Timestamp { at };
    let mut reader = BinlogReader::start(db.config.clone(), None).await.unwrap();
    let records = read_until(&mut reader, |r| ids(r).len() >= 2).await;
    assert_eq!(
        ids(&records),
        [2, 3],
        "starts after the earlier transaction"
    );
    db.drop().await;
}

#[tokio::test]
async fn excluded_tables_never_reach_the_output() {
    let mut db = database().await;
    let kept = kv_table(&mut db, "kept").await;
    let dropped = kv_table(&mut db, "skipped").await;
    db.config.tables.exclude = vec![format!("{}.skip*", db.name)];
    db.config.start = StartMode::Latest;
    let mut reader = BinlogReader::start(db.config.clone(), None).await.unwrap();
    insert_each(&mut db.conn, &dropped, 0..5).await;
    insert_each(&mut db.conn, &kept, 10..12).await;
    let records = read_until(&mut reader, |r| ids(r).len() >= 2).await;
    let tables: Vec<String> = events(&records)
        .iter()
        .map(|e| e.table.table.clone())
        .collect();
    assert_eq!(tables, ["kept", "kept"], "{:?}", summary(&records));
    db.drop().await;
}

#[tokio::test]
async fn an_earliest_start_reads_from_the_oldest_binlog_and_renames_are_reported() {
    let mut db = database().await;
    let table = kv_table(&mut db, "old_name").await;
    insert_each(&mut db.conn, &table, 0..3).await;
    db.sql(format!("RENAME TABLE {table} TO {}.new_name", db.name))
        .await;
    insert_each(&mut db.conn, &format!("{}.new_name", db.name), 3..4).await;
    db.config.start = StartMode::Earliest;
    let mut reader = BinlogReader::start(db.config.clone(), None).await.unwrap();
    let records = read_until(&mut reader, |r| ids(r).len() >= 4).await;
    assert_eq!(ids(&records), [0, 1, 2, 3]);
    let changes: Vec<String> = records
        .iter()
        .filter_map(|r| match r {
            SourceRecord::SchemaChange(c) => Some(format!("{:?} {}", c.kind, c.table.table)),
            _ => None,
        })
        .collect();
    assert_eq!(
        changes[0],
        "Create old_name",
        "{changes:?} {:?}",
        summary(&records)
    );
    assert!(
        changes[1].starts_with("Rename") && changes[1].ends_with("new_name"),
        "{changes:?}"
    );
    let tables: Vec<String> = events(&records)
        .iter()
        .map(|e| e.table.table.clone())
        .collect();
    assert_eq!(tables, ["old_name", "old_name", "old_name", "new_name"]);
    db.drop().await;
}

/// The first byte of the checksum the server appends to the fake ROTATE that
/// starts a GTID dump of the current binlog (read with a raw dump).
async fn fake_rotate_checksum_head(db: &Db) -> (String, u8) {
    let m = tributary_testkit::DevServices::load().mariadb();
    let mut conn = Conn::new(mysql_async::Opts::from_url(&m.url).unwrap())
        .await
        .unwrap();
    let gtid: String = conn
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .unwrap()
        .unwrap();
    for sql in [
        format!("SET @slave_connect_state = '{gtid}'"),
        "SET @mariadb_slave_capability = 4".into(),
    ] {
        conn.query_drop(sql).await.unwrap();
    }
    let request = mysql_async::BinlogStreamRequest::new(db.config.server_id + 500).with_pos(4);
    let mut stream = conn.get_binlog_stream(request).await.unwrap();
    let ev = stream.next().await.unwrap().unwrap();
    assert_eq!(
        ev.header().event_type_raw(),
        4,
        "the dump starts with a ROTATE"
    );
    let body = ev.data();
    let name = String::from_utf8_lossy(&body[8..body.len() - 4]).into_owned();
    let head = body[body.len() - 4];
    stream.close().await.unwrap();
    (name, head)
}

/// Regression: the fake ROTATE's CRC leaked into the file name whenever its
/// first byte was an ASCII digit (`mysql-bin.000105` became
/// `mysql-bin.0001051`), which put the cursor past every snapshot chunk and
/// made resumes fail with PositionLost. Rotates the binlog until the current
/// file has such a checksum (about 1 file in 25), then starts by GTID there.
/// FLUSH affects every reader of the server: in the `mariadb-binlog` group.
#[tokio::test]
async fn a_gtid_start_names_the_real_file_whatever_its_fake_rotate_checksum() {
    let mut db = database().await;
    let table = kv_table(&mut db, "kv").await;
    let mut tries = 0;
    let file = loop {
        let (file, head) = fake_rotate_checksum_head(&db).await;
        if head.is_ascii_digit() {
            break file;
        }
        tries += 1;
        assert!(
            tries < 400,
            "no binlog with a digit-led fake-rotate checksum"
        );
        db.sql("FLUSH BINARY LOGS").await;
    };
    db.config.start = StartMode::Latest;
    db.config.max_batch_rows = 1;
    let mut reader = BinlogReader::start(db.config.clone(), None).await.unwrap();
    insert_each(&mut db.conn, &table, 0..1).await;
    let records = read_until(&mut reader, |r| {
        ids(r).len() == 1 && matches!(r.last(), Some(SourceRecord::Checkpoint(_)))
    })
    .await;
    let cp = last_checkpoint(&records).unwrap();
    assert_eq!(cp.position.unwrap().file_pos().unwrap().file, file);
    reader.close().await.unwrap();
    db.drop().await;
}

/// The reader's first error, failing after 30 s.
async fn first_error(reader: &mut BinlogReader) -> tributary_core::Error {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no error within 30 s");
        match tokio::time::timeout(left, reader.next()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => panic!("the stream ended without an error"),
            Ok(Err(e)) => return e,
            Err(_) => panic!("no error within 30 s"),
        }
    }
}

#[tokio::test]
async fn a_table_keyed_only_by_a_unique_index_streams_with_that_key_and_keyless_tables_are_refused()
{
    let mut db = database().await;
    let uk = format!("{}.uk", db.name);
    db.sql(format!(
        "CREATE TABLE {uk} (n INT, code VARCHAR(10) NOT NULL, v INT, UNIQUE KEY by_n (n), \
         UNIQUE KEY by_code (code))"
    ))
    .await;
    let bare = format!("{}.bare", db.name);
    db.sql(format!("CREATE TABLE {bare} (x INT NOT NULL, y INT)"))
        .await;
    db.config.start = StartMode::Latest;
    let err = BinlogReader::start(db.config.clone(), None)
        .await
        .err()
        .expect("a keyless table is refused at start");
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    let msg = err.to_string();
    assert!(
        msg.contains(&bare) && !msg.contains(&uk) && msg.contains("key_columns"),
        "{msg}"
    );

    db.config.key_columns.insert(bare.clone(), vec!["x".into()]);
    let mut reader = BinlogReader::start(db.config.clone(), None).await.unwrap();
    db.sql(format!(
        "INSERT INTO {uk} VALUES (1, 'a', 1), (NULL, 'b', 2)"
    ))
    .await;
    db.sql(format!("UPDATE {uk} SET v = 3 WHERE code = 'b'"))
        .await;
    db.sql(format!("INSERT INTO {bare} VALUES (7, 1)")).await;
    let records = read_until(&mut reader, |r| count_events(r) >= 4).await;
    let keys: Vec<(String, Vec<String>)> = records
        .iter()
        .filter_map(|r| match r {
            SourceRecord::Changes(b) => Some((
                b.schema().table.table.clone(),
                b.schema()
                    .primary_key_names()
                    .into_iter()
                    .map(String::from)
                    .collect(),
            )),
            _ => None,
        })
        .collect();
    // `by_n` allows NULLs: the first unique index on NOT NULL columns keys it.
    assert!(
        keys.iter().any(|(t, k)| t == "uk" && k == &["code"]),
        "{keys:?}"
    );
    assert!(
        keys.iter().any(|(t, k)| t == "bare" && k == &["x"]),
        "{keys:?}"
    );
    assert!(keys.iter().all(|(_, k)| !k.is_empty()), "{keys:?}");

    // Tables created mid-stream: one keyed only by a unique index is keyed
    // by it (its table map names no key); one with no key stops the
    // stream before any of its rows is handed out, naming it and the fixes.
    let later_uk = format!("{}.later_uk", db.name);
    db.sql(format!(
        "CREATE TABLE {later_uk} (code VARCHAR(10) NOT NULL, v INT, UNIQUE KEY (code))"
    ))
    .await;
    db.sql(format!("INSERT INTO {later_uk} VALUES ('a', 1)"))
        .await;
    let records = read_until(&mut reader, |r| {
        r.iter()
            .any(|r| matches!(r, SourceRecord::Changes(b) if b.schema().table.table == "later_uk"))
    })
    .await;
    let key = records
        .iter()
        .find_map(|r| match r {
            SourceRecord::Changes(b) if b.schema().table.table == "later_uk" => {
                Some(b.schema().primary_key_names().join(","))
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(key, "code");
    let later_bare = format!("{}.later_bare", db.name);
    db.sql(format!("CREATE TABLE {later_bare} (x INT, y INT)"))
        .await;
    db.sql(format!("INSERT INTO {later_bare} VALUES (1, 1)"))
        .await;
    let err = first_error(&mut reader).await;
    let msg = err.to_string();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{msg}");
    assert!(
        msg.contains(&later_bare)
            && msg.contains("keyless = \"changelog\"")
            && msg.contains("key_columns"),
        "{msg}"
    );
    db.drop().await;
}

#[tokio::test]
async fn dml_logged_as_a_statement_on_a_selected_table_stops_the_stream_naming_it() {
    let mut db = database().await;
    let table = kv_table(&mut db, "kv").await;
    let other = unique_name("other");
    db.sql(format!("CREATE DATABASE {other}")).await;
    db.sql(format!("CREATE TABLE {other}.t (id INT PRIMARY KEY)"))
        .await;
    db.config.start = StartMode::Latest;
    let mut reader = BinlogReader::start(db.config.clone(), None).await.unwrap();
    db.sql("SET SESSION binlog_format = 'STATEMENT'").await;
    // A table the job does not select: nothing to lose, the stream goes on.
    db.sql(format!("INSERT INTO {other}.t VALUES (1)")).await;
    db.sql("SET SESSION binlog_format = 'ROW'").await;
    insert_each(&mut db.conn, &table, 0..2).await;
    let records = read_until(&mut reader, |r| ids(r).len() >= 2).await;
    assert_eq!(ids(&records), [0, 1]);
    // In a transaction with a savepoint (a statement that is no DML).
    db.sql("SET SESSION binlog_format = 'STATEMENT'").await;
    db.sql("BEGIN").await;
    db.sql("SAVEPOINT sp").await;
    db.sql(format!("UPDATE {table} SET v = 'changed' WHERE id = 1"))
        .await;
    db.sql("COMMIT").await;
    db.sql("SET SESSION binlog_format = 'ROW'").await;
    let err = first_error(&mut reader).await;
    let msg = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{msg}");
    assert!(
        msg.contains(&table)
            && msg.contains("as an SQL statement")
            && msg.contains("binlog_format='ROW'"),
        "{msg}"
    );
    assert!(
        msg.contains("-bin.") || msg.contains(':'),
        "names the position: {msg}"
    );
    db.sql(format!("DROP DATABASE {other}")).await;
    db.drop().await;
}

#[tokio::test]
async fn a_transaction_larger_than_the_batch_bound_comes_out_in_batches_with_one_checkpoint_after_it()
 {
    let mut db = database().await;
    let table = kv_table(&mut db, "big").await;
    db.config.start = StartMode::Latest;
    db.config.max_batch_rows = 100;
    let mut reader = BinlogReader::start(db.config.clone(), None).await.unwrap();
    insert_each(&mut db.conn, &table, 0..1).await;
    db.sql("BEGIN").await;
    for chunk in 0..10 {
        let rows: Vec<String> = (0..100)
            .map(|i| {
                let id = 1 + chunk * 100 + i;
                format!("({id}, 'v{id}')")
            })
            .collect();
        db.sql(format!("INSERT INTO {table} VALUES {}", rows.join(",")))
            .await;
    }
    db.sql(format!("UPDATE {table} SET v = 'last' WHERE id = 1"))
        .await;
    db.sql("COMMIT").await;
    let records = read_until(&mut reader, |r| {
        count_events(r) >= 1002 && matches!(r.last(), Some(SourceRecord::Checkpoint(_)))
    })
    .await;
    // The big transaction's batches (the single-row one may share the
    // first): each within the bound plus what one rows event adds (here
    // 100 rows: the INSERTs are 100 rows each), and no
    // checkpoint between the first and the last of them, one right after.
    let batches: Vec<(usize, usize)> = records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            SourceRecord::Changes(b) => Some((i, b.len())),
            _ => None,
        })
        .collect();
    // The first batch with a row of the big transaction (ids from 1).
    let first = records
        .iter()
        .position(|r| {
            matches!(r, SourceRecord::Changes(_))
                && ids(std::slice::from_ref(r)).iter().any(|&i| i >= 1)
        })
        .unwrap();
    let last = batches.last().unwrap().0;
    let inside = records[first..last]
        .iter()
        .filter(|r| matches!(r, SourceRecord::Checkpoint(_)))
        .count();
    assert_eq!(inside, 0, "{:?}", summary(&records));
    assert!(matches!(
        records.get(last + 1),
        Some(SourceRecord::Checkpoint(_))
    ));
    let sizes: Vec<usize> = batches.iter().map(|b| b.1).collect();
    assert!(
        sizes.len() >= 5 && sizes.iter().all(|&n| n <= 201),
        "{sizes:?}"
    );
    assert_eq!(sizes.iter().sum::<usize>(), 1002);
    let rest = &records[first..];
    // Versions grow through the transaction: the update at its end wins.
    let evs = events(rest);
    let versions: Vec<u64> = evs
        .iter()
        .map(|e| tributary_core::row_version(e.position.as_ref()))
        .collect();
    assert!(versions.windows(2).all(|w| w[0] <= w[1]), "{versions:?}");
    assert!(versions[1] > 0 && versions[1] < *versions.last().unwrap());
    db.drop().await;
}

/// An UPDATE of a 9 MB BLOB logs both images in one 18 MB event, over the
/// server's default 16 MB packet: the dump connection takes it (replicas
/// accept up to 1 GiB, so do we).
#[tokio::test]
async fn a_row_event_larger_than_the_default_packet_is_read() {
    let mut db = database().await;
    let table = format!("{}.blobs", db.name);
    db.sql(format!(
        "CREATE TABLE {table} (id INT PRIMARY KEY, b LONGBLOB)"
    ))
    .await;
    db.config.start = StartMode::Latest;
    let mut reader = BinlogReader::start(db.config.clone(), None).await.unwrap();
    let size = 9 << 20;
    db.sql(format!(
        "INSERT INTO {table} VALUES (1, REPEAT('a', {size}))"
    ))
    .await;
    db.sql(format!(
        "UPDATE {table} SET b = REPEAT('b', {size}) WHERE id = 1"
    ))
    .await;
    let records = read_until(&mut reader, |r| count_events(r) >= 2).await;
    let evs = events(&records);
    let after = evs[1].after.as_ref().unwrap();
    match &after[1] {
        Value::Bytes(b) => assert!(b.len() == size && b.iter().all(|&c| c == b'b')),
        v => panic!("{:?}", std::mem::discriminant(v)),
    }
    // Past that event the server's BINLOG_GTID_POS answers NULL (it reads
    // with its own 16 MB packet): a Latest start still finds its GTID
    // state (by scanning the file) and reads what follows.
    let mut later = BinlogReader::start(db.config.clone(), None).await.unwrap();
    db.sql(format!("INSERT INTO {table} VALUES (2, 'x')")).await;
    let records = read_until(&mut later, |r| count_events(r) >= 1).await;
    assert!(matches!(
        last_checkpoint(&read_until(&mut later, |r| last_checkpoint(r).is_some()).await)
            .and_then(|c| c.position),
        Some(SourcePosition::MariaDbGtid { .. })
    ));
    assert_eq!(
        events(&records)[0].after.as_ref().unwrap()[0],
        Value::Int32(2)
    );
    // The rest of the suite shares this server: start a clean binlog file.
    db.sql("FLUSH BINARY LOGS").await;
    db.drop().await;
}
