//! The ClickHouse sink against the two dev ClickHouse 18.16 servers (the
//! cluster `tributary_two_shards`): every type round trips; random
//! upsert/delete/key-change workloads read back as the model through the
//! `_live` view in single, local-shard and distributed modes alike; a
//! replayed batch adds nothing; columns are added on every shard; the DDL
//! for modern servers is accepted by chdb (ClickHouse 26).

use std::collections::BTreeMap;
use std::sync::Arc;

use tributary_clickhouse::{ClickHouseSink, ClickHouseSinkConfig, ClusterMode, ddl};
use tributary_core::{
    ChangeBatch, ChangeEvent, Checkpoint, Column, ColumnType, Decimal, Op, Sink, SourcePosition,
    TableId, TableSchema, Value,
};
use tributary_testkit::kv_workload::{
    self, KvModel, KvValue, Rng, kv_position, kv_row, random_kv_events,
};
use tributary_testkit::{DevServices, unique_name};

type Model = KvModel;

fn ch() -> tributary_testkit::ClickHouse {
    DevServices::load().clickhouse()
}

fn config(mode: ClusterMode) -> ClickHouseSinkConfig {
    let ch = ch();
    match mode {
        ClusterMode::Single => ClickHouseSinkConfig::single(ch.urls[0].clone()),
        mode => ClickHouseSinkConfig::sharded(ch.urls.clone(), &ch.cluster, mode),
    }
}

/// Rows of a query as TSV lines.
async fn query_lines(url: &str, sql: &str) -> Vec<String> {
    let client = clickhouse::Client::default()
        .with_url(url)
        .with_validation(false);
    let mut cursor = client.query(sql).fetch_bytes("TabSeparated").unwrap();
    let bytes = cursor.collect().await.unwrap();
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn pos(offset: u64) -> Option<SourcePosition> {
    kv_position(offset)
}

fn kv_schema(table: &str) -> Arc<TableSchema> {
    kv_workload::kv_schema("db", table)
}

fn kv(id: i32, v: &KvValue) -> Vec<Value> {
    kv_row(id, v)
}

/// Random changes consistent with the model, one transaction each; keys 0..50.
fn random_events(
    schema: &TableSchema,
    rng: &mut Rng,
    model: &mut Model,
    offset: &mut u64,
    n: usize,
) -> Vec<ChangeEvent> {
    random_kv_events(schema, rng, model, offset, 0..50, n)
}

async fn read_live(url: &str, view: &str) -> Model {
    let lines = query_lines(url, &format!("SELECT id, v, s FROM {view} ORDER BY id")).await;
    lines
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let opt = |x: &str| (x != "\\N").then(|| x.to_string());
            (
                f[0].parse().unwrap(),
                (opt(f[1]).map(|v| v.parse().unwrap()), opt(f[2])),
            )
        })
        .collect()
}

/// Runs the same random workload through one sink per mode; after every
/// commit each mode's `_live` view equals the model.
#[tokio::test]
async fn random_workloads_read_back_as_the_model_in_every_mode() {
    let url = ch().urls[0].clone();
    let modes = [
        ClusterMode::Single,
        ClusterMode::Local,
        ClusterMode::Distributed,
    ];
    let mut sinks = Vec::new();
    for mode in modes {
        let schema = kv_schema(&unique_name(&format!("kv_{mode:?}").to_lowercase()));
        let sink = ClickHouseSink::open(config(mode), &schema).await.unwrap();
        sinks.push((schema, sink));
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut model, mut offset) = (Model::new(), 0u64);
    for round in 0..12 {
        let n = 1 + rng.below(40) as usize;
        let events = random_events(&sinks[0].0, &mut rng, &mut model, &mut offset, n);
        for (schema, sink) in &mut sinks {
            let events: Vec<ChangeEvent> = events
                .iter()
                .cloned()
                .map(|mut e| {
                    e.table = schema.table.clone();
                    e
                })
                .collect();
            let batch = ChangeBatch::from_events(schema.clone(), &events).unwrap();
            sink.write(&batch).await.unwrap();
            let cp = Checkpoint {
                position: pos(offset),
                ..Default::default()
            };
            sink.commit(&cp).await.unwrap();
            let got = read_live(&url, &sink.live_view()).await;
            assert_eq!(got, model, "{} after round {round}", sink.live_view());
        }
    }
    // Local mode: each key lives on exactly one shard, and both shards hold keys.
    let local = &sinks[1].0.table.table;
    let mut seen = BTreeMap::new();
    for shard_url in &ch().urls {
        let ids = query_lines(shard_url, &format!("SELECT DISTINCT id FROM {local}")).await;
        assert!(!ids.is_empty(), "shard {shard_url} holds keys");
        for id in ids {
            assert!(
                seen.insert(id.clone(), shard_url).is_none(),
                "key {id} on two shards"
            );
        }
    }
}

/// A crash after an insert but before the checkpoint: the restarted sink
/// resumes at the old checkpoint and sends the same changes again. The live
/// view, and FINAL counts, show each key once with its last state.
#[tokio::test]
async fn a_replayed_batch_adds_nothing() {
    let schema = kv_schema(&unique_name("kv_replay"));
    let mut sink = ClickHouseSink::open(config(ClusterMode::Local), &schema)
        .await
        .unwrap();
    let mut rng = Rng(77);
    let (mut model, mut offset) = (Model::new(), 0u64);
    let first = random_events(&schema, &mut rng, &mut model, &mut offset, 30);
    sink.write(&ChangeBatch::from_events(schema.clone(), &first).unwrap())
        .await
        .unwrap();
    sink.commit(&Checkpoint {
        position: pos(offset),
        ..Default::default()
    })
    .await
    .unwrap();
    let second = random_events(&schema, &mut rng, &mut model, &mut offset, 30);
    let batch = ChangeBatch::from_events(schema.clone(), &second).unwrap();
    sink.write(&batch).await.unwrap();
    sink.flush().await.unwrap(); // sent, but the checkpoint never recorded
    drop(sink);

    let mut again = ClickHouseSink::open(config(ClusterMode::Local), &schema)
        .await
        .unwrap();
    let resumed = again.committed().await.unwrap().unwrap();
    assert!(
        resumed.position < pos(offset),
        "resumes at the first commit"
    );
    again.write(&batch).await.unwrap();
    again
        .commit(&Checkpoint {
            position: pos(offset),
            ..Default::default()
        })
        .await
        .unwrap();
    let url = ch().urls[0].clone();
    assert_eq!(read_live(&url, &again.live_view()).await, model);
    let all = format!("{}_all", schema.table.table);
    let live_count = query_lines(
        &url,
        &format!("SELECT count() FROM {all} FINAL WHERE _is_deleted = 0"),
    )
    .await;
    assert_eq!(live_count, [model.len().to_string()]);
    let raw = query_lines(&url, &format!("SELECT count() FROM {all}")).await;
    let raw: usize = raw[0].parse().unwrap();
    assert!(
        raw > model.len(),
        "the replay was really sent twice ({raw} rows before merges)"
    );
}

fn all_types_schema(table: &str) -> Arc<TableSchema> {
    use ColumnType as C;
    let types = [
        C::Bool,
        C::Int8,
        C::Int16,
        C::Int24,
        C::Int32,
        C::Int64,
        C::UInt8,
        C::UInt16,
        C::UInt24,
        C::UInt32,
        C::UInt64,
        C::Float,
        C::Double,
        C::Decimal {
            precision: 9,
            scale: 2,
        },
        C::Decimal {
            precision: 18,
            scale: 4,
        },
        C::Decimal {
            precision: 38,
            scale: 10,
        },
        C::Decimal {
            precision: 65,
            scale: 30,
        },
        C::String { max_len: None },
        C::Bytes { max_len: None },
        C::Date,
        C::Time { fsp: 6 },
        C::DateTime { fsp: 6 },
        C::Timestamp { fsp: 6 },
        C::Year,
        C::Bit { width: 64 },
        C::Enum {
            labels: vec!["a".into(), "b".into()],
        },
        C::Set {
            labels: vec!["x".into(), "y".into()],
        },
        C::Json,
    ];
    let mut cols = vec![Column::new("id", C::Int32, false)];
    for (i, t) in types.iter().enumerate() {
        cols.push(Column::new(format!("c{i}"), t.clone(), true));
    }
    Arc::new(TableSchema::new(TableId::new("db", table), cols, &["id"], 1).unwrap())
}

fn dec(s: &str) -> Value {
    Value::Decimal(s.parse::<Decimal>().unwrap())
}

/// Row 1: extremes; row 2: NULLs. Each with the TSV ClickHouse 18.16 prints.
fn all_types_rows() -> Vec<(Vec<Value>, Vec<&'static str>)> {
    let extremes = vec![
        (Value::Bool(true), "1"),
        (Value::Int8(-128), "-128"),
        (Value::Int16(-32768), "-32768"),
        (Value::Int32(-8_388_608), "-8388608"),
        (Value::Int32(i32::MIN), "-2147483648"),
        (Value::Int64(i64::MIN), "-9223372036854775808"),
        (Value::UInt8(255), "255"),
        (Value::UInt16(65535), "65535"),
        (Value::UInt32(16_777_215), "16777215"),
        (Value::UInt32(u32::MAX), "4294967295"),
        (Value::UInt64(u64::MAX), "18446744073709551615"),
        (Value::Float(1.5), "1.5"),
        (Value::Double(-2.25e-10), "-2.25e-10"),
        (dec("-9999999.99"), "-9999999.99"),
        (dec("12345678901234.5678"), "12345678901234.5678"),
        (
            dec("-1234567890123456789012345678.0123456789"),
            "-1234567890123456789012345678.0123456789",
        ),
        (
            dec("12345678901234567890123456789012345.123456789012345678901234567890"),
            "12345678901234567890123456789012345.123456789012345678901234567890",
        ),
        (Value::String("héllo ✓".into()), "héllo ✓"),
        (Value::Bytes(vec![0, 1, 254, 255]), "0001FEFF"), // selected as hex()
        (Value::Date(-25_567), "-25567"),                 // 1900-01-01: before 18.16's Date range
        (Value::Time(-3_020_399_999_999), "-3020399999999"), // -838:59:59.999999
        (
            Value::DateTime(253_402_300_799_999_999),
            "253402300799999999",
        ), // 9999-12-31 23:59:59.999999
        (Value::Timestamp(1), "1"),
        (Value::Year(2155), "2155"),
        (Value::Bit(u64::MAX), "18446744073709551615"),
        (Value::Enum("b".into()), "b"),
        (Value::Set("x,y".into()), "x,y"),
        (Value::Json("{\"a\":[1,2]}".into()), "{\"a\":[1,2]}"),
    ];
    let (mut values, mut text): (Vec<Value>, Vec<&str>) = extremes.into_iter().unzip();
    values.insert(0, Value::Int32(1));
    text.insert(0, "1");
    let mut nulls = vec![Value::Int32(2)];
    nulls.extend(std::iter::repeat_n(Value::Null, values.len() - 1));
    let mut null_text = vec!["2"];
    null_text.extend(std::iter::repeat_n("\\N", values.len() - 1));
    vec![(values, text), (nulls, null_text)]
}

#[tokio::test]
async fn every_type_round_trips_on_18_16() {
    let schema = all_types_schema(&unique_name("types"));
    let mut sink = ClickHouseSink::open(config(ClusterMode::Single), &schema)
        .await
        .unwrap();
    assert!(!sink.is_modern(), "the dev servers are 18.16");
    let rows = all_types_rows();
    let events: Vec<ChangeEvent> = rows
        .iter()
        .map(|(values, _)| ChangeEvent {
            table: schema.table.clone(),
            op: Op::Insert,
            before: None,
            after: Some(values.clone()),
            position: pos(4),
            commit_ts_micros: 0,
            schema_version: 1,
        })
        .collect();
    sink.write(&ChangeBatch::from_events(schema.clone(), &events).unwrap())
        .await
        .unwrap();
    sink.commit(&Checkpoint {
        position: pos(4),
        ..Default::default()
    })
    .await
    .unwrap();
    let columns: Vec<String> = schema.columns.iter().map(|c| c.name.clone()).collect();
    let select: Vec<String> = schema
        .columns
        .iter()
        .map(|c| match c.data_type {
            ColumnType::Bytes { .. } => format!("if(isNull({0}), NULL, hex({0}))", c.name),
            _ => c.name.clone(),
        })
        .collect();
    let sql = format!(
        "SELECT {} FROM {} ORDER BY id",
        select.join(", "),
        sink.live_view()
    );
    let lines = query_lines(&ch().urls[0], &sql).await;
    assert_eq!(lines.len(), 2);
    for (line, (_, expected)) in lines.iter().zip(&rows) {
        let got: Vec<&str> = line.split('\t').collect();
        assert_eq!(got.len(), expected.len());
        for ((g, e), name) in got.iter().zip(expected).zip(&columns) {
            assert_eq!(g, e, "column {name}");
        }
    }
}

/// A new source column appears on both shards' local tables, on the
/// Distributed table and in the live view; earlier rows read NULL there.
#[tokio::test]
async fn added_columns_reach_every_shard_and_the_distributed_table() {
    let v1 = kv_schema(&unique_name("kv_evolve"));
    let mut sink = ClickHouseSink::open(config(ClusterMode::Distributed), &v1)
        .await
        .unwrap();
    let ev = |schema: &Arc<TableSchema>, id: i32, extra: Option<Value>| ChangeEvent {
        table: schema.table.clone(),
        op: Op::Insert,
        before: None,
        after: Some({
            let mut r = kv(id, &(Some(id), None));
            r.extend(extra);
            r
        }),
        position: pos(id as u64 * 10),
        commit_ts_micros: 0,
        schema_version: schema.version,
    };
    let batch = ChangeBatch::from_events(v1.clone(), &[ev(&v1, 1, None)]).unwrap();
    sink.write(&batch).await.unwrap();
    let mut cols = v1.columns.clone();
    cols.push(Column::new(
        "note",
        ColumnType::String { max_len: None },
        true,
    ));
    let v2 = Arc::new(TableSchema::new(v1.table.clone(), cols, &["id"], 2).unwrap());
    let batch =
        ChangeBatch::from_events(v2.clone(), &[ev(&v2, 2, Some(Value::String("new".into())))])
            .unwrap();
    sink.write(&batch).await.unwrap();
    sink.commit(&Checkpoint {
        position: pos(20),
        ..Default::default()
    })
    .await
    .unwrap();
    let t = &v1.table.table;
    for url in &ch().urls {
        for table in [t.clone(), format!("{t}_all")] {
            let has = query_lines(
                url,
                &format!(
                    "SELECT count() FROM system.columns WHERE table = '{table}' AND name = 'note'"
                ),
            )
            .await;
            assert_eq!(has, ["1"], "{table} on {url}");
        }
    }
    let rows = query_lines(
        &ch().urls[1],
        &format!("SELECT id, note FROM {} ORDER BY id", sink.live_view()),
    )
    .await;
    assert_eq!(rows, ["1\t\\N", "2\tnew"]);
}

/// The DDL for modern servers (ReplacingMergeTree with the deleted flag,
/// Date32, DateTime64, Decimal256, Bool) runs on chdb's ClickHouse 26, and
/// its FINAL drops deleted keys.
#[test]
fn modern_ddl_is_accepted_by_chdb() {
    let schema = all_types_schema("types_modern");
    let table = ddl::local_table("t", &schema, true);
    let view = ddl::live_view("t_live", "t");
    let out = DevServices::load().run_python(
        r#"
import sys, chdb
from chdb import session
s = session.Session()
s.query("CREATE DATABASE IF NOT EXISTS d; USE d")
s.query(sys.argv[1])
s.query(sys.argv[2])
s.query("INSERT INTO t (id, c0, _version, _is_deleted) VALUES (1, true, 1, 0), (2, false, 1, 0)")
s.query("INSERT INTO t (id, c0, _version, _is_deleted) VALUES (2, false, 2, 1)")
print(s.query("SELECT id FROM t_live ORDER BY id", "CSV").bytes().decode().strip())
print(s.query("SELECT type FROM system.columns WHERE database = 'd' AND table = 't' AND name IN ('c16', 'c19', 'c21') ORDER BY name", "CSV").bytes().decode().strip())
"#,
        &[&table, &view],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1", "FINAL drops the deleted key:\n{out}");
    assert_eq!(
        &lines[1..],
        [
            "\"Nullable(Decimal(65, 30))\"",
            "\"Nullable(Date32)\"",
            "\"Nullable(DateTime64(6))\""
        ],
        "{out}"
    );
}

/// With nothing written, a commit does not record another checkpoint row
/// (an idle table would add one per commit interval); a commit with rows
/// does. (Read through FINAL: background merges collapse the raw rows.)
#[tokio::test]
async fn idle_commits_record_no_checkpoint_rows() {
    let schema = kv_schema(&unique_name("kv_idle"));
    let mut sink = ClickHouseSink::open(config(ClusterMode::Single), &schema)
        .await
        .unwrap();
    let stored = || async {
        let sql = format!(
            "SELECT checkpoint FROM {} FINAL WHERE table = '{}'",
            ddl::CHECKPOINT_TABLE,
            schema.table.table
        );
        let json = query_lines(&ch().urls[0], &sql).await.pop().unwrap();
        serde_json::from_str::<Checkpoint>(&json.replace("\\\\", "\\"))
            .unwrap()
            .position
    };
    let cp = |offset| Checkpoint {
        position: pos(offset),
        ..Default::default()
    };
    sink.commit(&cp(10)).await.unwrap();
    assert_eq!(stored().await, pos(10), "the first position is recorded");
    sink.commit(&cp(20)).await.unwrap();
    sink.commit(&cp(30)).await.unwrap();
    assert_eq!(stored().await, pos(10), "idle commits record nothing");
    let (mut model, mut offset) = (Model::new(), 30);
    let events = random_events(&schema, &mut Rng(5), &mut model, &mut offset, 3);
    sink.write(&ChangeBatch::from_events(schema.clone(), &events).unwrap())
        .await
        .unwrap();
    sink.commit(&cp(offset)).await.unwrap();
    assert_eq!(stored().await, pos(offset));
}

/// `MODIFY COLUMN v BIGINT` is followed on every shard; the same on the
/// key column stops the sink with the steps to take by hand (nothing of
/// the new schema written), and once they are done the sink goes on. A
/// TRUNCATE of the source empties every shard's table.
#[tokio::test]
async fn widened_columns_are_altered_a_key_column_names_the_manual_steps_and_truncate_empties() {
    let v1 = kv_schema(&unique_name("kv_widen"));
    let mut sink = ClickHouseSink::open(config(ClusterMode::Local), &v1)
        .await
        .unwrap();
    let row = |schema: &Arc<TableSchema>, id: i64, v: i64, at: u64| ChangeEvent {
        table: schema.table.clone(),
        op: Op::Insert,
        before: None,
        after: Some(
            schema
                .columns
                .iter()
                .map(|c| match (&c.name[..], &c.data_type) {
                    ("id", ColumnType::Int64) => Value::Int64(id),
                    ("id", _) => Value::Int32(id as i32),
                    ("v", ColumnType::Int64) => Value::Int64(v),
                    ("v", _) => Value::Int32(v as i32),
                    _ => Value::Null,
                })
                .collect(),
        ),
        position: pos(at),
        commit_ts_micros: 0,
        schema_version: schema.version,
    };
    let write = |schema: &Arc<TableSchema>, rows: Vec<ChangeEvent>| {
        ChangeBatch::from_events(schema.clone(), &rows).unwrap()
    };
    let cp = |at| Checkpoint {
        position: pos(at),
        ..Default::default()
    };
    sink.write(&write(&v1, vec![row(&v1, 1, 1, 10)]))
        .await
        .unwrap();
    sink.commit(&cp(10)).await.unwrap();
    let with = |id: ColumnType, v: ColumnType, version| {
        let mut cols = v1.columns.clone();
        cols[0].data_type = id;
        cols[1].data_type = v;
        Arc::new(TableSchema::new(v1.table.clone(), cols, &["id"], version).unwrap())
    };
    let big = 5_000_000_000i64;
    let v2 = with(ColumnType::Int32, ColumnType::Int64, 2);
    sink.write(&write(&v2, vec![row(&v2, 2, big, 20)]))
        .await
        .unwrap();
    sink.commit(&cp(20)).await.unwrap();
    let t = &v1.table.table;
    for url in &ch().urls {
        let types = query_lines(
            url,
            &format!("SELECT type FROM system.columns WHERE table = '{t}' AND name = 'v'"),
        )
        .await;
        assert_eq!(types, ["Nullable(Int64)"], "{url}");
    }
    // The key column: refused with the steps, nothing written.
    let v3 = with(ColumnType::Int64, ColumnType::Int64, 3);
    let err = sink
        .write(&write(&v3, vec![row(&v3, 3, 3, 30)]))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ORDER BY") && err.contains("EXCHANGE TABLES") && err.contains("Int64"),
        "{err}"
    );
    // The steps, done by hand on every shard; a reopened sink goes on.
    for url in &ch().urls {
        let create = query_lines(url, &format!("SHOW CREATE TABLE {t}"))
            .await
            .join("\n");
        let create = create
            .replace("\\n", "\n")
            .replace("\\'", "'")
            .replacen(&format!(".{t} "), &format!(".{t}_widened "), 1)
            .replacen("`id` Int32", "`id` Int64", 1)
            .replacen("id Int32", "id Int64", 1);
        for sql in [
            create,
            format!("INSERT INTO {t}_widened SELECT * FROM {t}"),
            format!("RENAME TABLE {t} TO {t}_old, {t}_widened TO {t}"),
            format!("DROP TABLE {t}_old"),
        ] {
            let client = clickhouse::Client::default().with_url(url);
            client
                .query(&sql)
                .execute()
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }
    let mut sink = ClickHouseSink::open(config(ClusterMode::Local), &v2)
        .await
        .unwrap();
    sink.write(&write(&v3, vec![row(&v3, 3, 3, 30)]))
        .await
        .unwrap();
    sink.commit(&cp(30)).await.unwrap();
    let count_all = || async {
        let mut total = 0;
        for url in &ch().urls {
            let n = query_lines(url, &format!("SELECT count() FROM {t} FINAL")).await;
            total += n[0].parse::<u64>().unwrap();
        }
        total
    };
    assert_eq!(count_all().await, 3, "ids 1, 2 and 3 across the shards");
    // TRUNCATE: every shard's table is empty, later rows land.
    let truncate = tributary_core::SchemaChange {
        position: pos(40),
        ..tributary_core::SchemaChange::between(
            tributary_core::SchemaChangeKind::Truncate,
            Some((*v3).clone()),
            Some((*v3).clone()),
        )
    };
    sink.apply_schema_change(&truncate).await.unwrap();
    sink.write(&write(&v3, vec![row(&v3, 9, 9, 50)]))
        .await
        .unwrap();
    sink.commit(&cp(50)).await.unwrap();
    assert_eq!(count_all().await, 1, "only the row after the truncate");
}

/// A widening `ALTER` cut short by a crash (the first shard altered, the
/// second not) and a restart that replays rows from before it: the sink
/// completes the ALTER on the lagging shard and casts the narrower rows
/// up — it neither sends Int32 bytes into an Int64 column nor narrows the
/// table back.
#[tokio::test]
async fn an_alter_cut_short_on_one_shard_is_completed_and_replayed_narrow_rows_cast_up() {
    let v1 = kv_schema(&unique_name("kv_cut"));
    let t = v1.table.table.clone();
    let mut sink = ClickHouseSink::open(config(ClusterMode::Local), &v1)
        .await
        .unwrap();
    let rows = |from: i32| -> Vec<ChangeEvent> {
        (from..from + 20)
            .map(|id| ChangeEvent {
                table: v1.table.clone(),
                op: Op::Insert,
                before: None,
                after: Some(kv(id, &(Some(id), Some(format!("r{id}"))))),
                position: pos(if from == 0 { 10 } else { 300 } + id as u64),
                commit_ts_micros: 0,
                schema_version: v1.version,
            })
            .collect()
    };
    sink.write(&ChangeBatch::from_events(v1.clone(), &rows(0)).unwrap())
        .await
        .unwrap();
    sink.commit(&Checkpoint {
        position: pos(100),
        ..Default::default()
    })
    .await
    .unwrap();
    drop(sink);
    let urls = ch().urls;
    let v_type = async |url: &str, table: &str| {
        query_lines(
            url,
            &format!("SELECT type FROM system.columns WHERE table = '{table}' AND name = 'v'"),
        )
        .await
    };
    let before = v_type(&urls[0], &t).await;
    assert_eq!(before, ["Nullable(Int32)"]);
    // The crash came after the first shard's ALTER.
    let client = clickhouse::Client::default().with_url(&urls[0]);
    client
        .query(&format!("ALTER TABLE {t} MODIFY COLUMN v Nullable(Int64)"))
        .execute()
        .await
        .unwrap();
    let mut sink = ClickHouseSink::open(config(ClusterMode::Local), &v1)
        .await
        .unwrap();
    sink.write(&ChangeBatch::from_events(v1.clone(), &rows(20)).unwrap())
        .await
        .unwrap();
    sink.commit(&Checkpoint {
        position: pos(200),
        ..Default::default()
    })
    .await
    .unwrap();
    for url in &urls {
        assert_eq!(v_type(url, &t).await, ["Nullable(Int64)"], "{url} {t}");
        assert_eq!(
            v_type(url, &format!("{t}_all")).await,
            ["Nullable(Int64)"],
            "{url} {t}_all"
        );
    }
    let mut total = 0;
    for url in &urls {
        let n = query_lines(url, &format!("SELECT count() FROM {t} FINAL")).await;
        total += n[0].parse::<u64>().unwrap();
    }
    assert_eq!(total, 40, "every row on its shard");
}

/// Reordered urls (local mode: the n-th url is shard n): the first url no
/// longer holds the checkpoint rows. That is never read as "nothing
/// committed" (the runner would drop every shard's table), and a sink on
/// the new order is refused naming the recorded one; the table keeps its
/// rows.
#[tokio::test]
async fn reordered_urls_are_refused_and_nothing_is_dropped() {
    let schema = kv_schema(&unique_name("kv_order"));
    let t = schema.table.table.clone();
    let ch = ch();
    let mut database = unique_name("ch_order");
    database.truncate(40);
    let mut ordered = config(ClusterMode::Local);
    ordered.database = database.clone();
    let mut sink = ClickHouseSink::open(ordered.clone(), &schema)
        .await
        .unwrap();
    let rows: Vec<ChangeEvent> = (0..50)
        .map(|id| ChangeEvent {
            table: schema.table.clone(),
            op: Op::Insert,
            before: None,
            after: Some(kv(id, &(Some(id), None))),
            position: pos(10 + id as u64),
            commit_ts_micros: 0,
            schema_version: schema.version,
        })
        .collect();
    sink.write(&ChangeBatch::from_events(schema.clone(), &rows).unwrap())
        .await
        .unwrap();
    sink.commit(&Checkpoint {
        position: pos(100),
        ..Default::default()
    })
    .await
    .unwrap();
    drop(sink);
    let mut reordered = ordered.clone();
    reordered.urls.reverse();
    let err = tributary_clickhouse::committed_state(&reordered, &t)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no row for it") && err.contains("Nothing is dropped"),
        "{err}"
    );
    let err = ClickHouseSink::open(reordered, &schema)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("were sharded over") && err.contains(&ch.urls[0]),
        "{err}"
    );
    // In the recorded order all is as it was.
    let state = tributary_clickhouse::committed_state(&ordered, &t)
        .await
        .unwrap();
    assert_eq!(state.unwrap().unwrap().position, pos(100));
    let mut total = 0;
    for url in &ch.urls {
        let n = query_lines(url, &format!("SELECT count() FROM {database}.{t} FINAL")).await;
        total += n[0].parse::<u64>().unwrap();
    }
    assert_eq!(total, 50);
    for url in &ch.urls {
        let client = clickhouse::Client::default().with_url(url);
        client
            .query(&format!("DROP DATABASE IF EXISTS {database}"))
            .execute()
            .await
            .unwrap();
    }
}
