//! Schema evolution and the commit policy of the upsert writer, read back by
//! pyiceberg (an independent reader) and iceberg-rust.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tributary_catalog::{HadoopCatalog, TableName};
use tributary_core::{
    BinlogFilePos, ChangeBatch, ChangeEvent, Checkpoint, Column, ColumnType, ErrorKind, Op,
    SchemaChange, SchemaChangeKind, Sink, SourcePosition, TableId, TableSchema, Value,
};
use tributary_iceberg::{ColumnPolicy, DeleteMode, UpsertConfig, UpsertWriter};
use tributary_testkit::{DevServices, dev_dir, unique_name};

fn table_schema(cols: Vec<Column>, version: u64) -> Arc<TableSchema> {
    Arc::new(TableSchema::new(TableId::new("shop", "evolving"), cols, &["id"], version).unwrap())
}

fn string() -> ColumnType {
    ColumnType::String { max_len: Some(20) }
}

fn v1() -> Arc<TableSchema> {
    table_schema(
        vec![
            Column::new("id", ColumnType::Int32, false),
            Column::new("v", ColumnType::Int32, true),
            Column::new("s", string(), true),
            Column::new("gone", string(), false),
        ],
        1,
    )
}

/// v widened to BIGINT, `gone` dropped, `n` added.
fn v2() -> Arc<TableSchema> {
    table_schema(
        vec![
            Column::new("id", ColumnType::Int32, false),
            Column::new("v", ColumnType::Int64, true),
            Column::new("s", string(), true),
            Column::new("n", ColumnType::Int64, true),
        ],
        2,
    )
}

/// `s` became an INT: not an Iceberg promotion.
fn v3() -> Arc<TableSchema> {
    let mut cols = v2().columns.clone();
    cols[2] = Column::new("s", ColumnType::Int32, true);
    table_schema(cols, 3)
}

fn event(schema: &TableSchema, op: Op, row: Vec<Value>, offset: u64) -> ChangeEvent {
    ChangeEvent {
        table: schema.table.clone(),
        op,
        before: None,
        after: Some(row),
        position: Some(SourcePosition::FilePos(BinlogFilePos::new(
            "mysql-bin.000001",
            offset,
        ))),
        commit_ts_micros: offset as i64,
        schema_version: schema.version,
    }
}

async fn write(w: &mut UpsertWriter, schema: &Arc<TableSchema>, rows: Vec<Vec<Value>>, at: u64) {
    let events: Vec<ChangeEvent> = rows
        .into_iter()
        .enumerate()
        .map(|(i, r)| event(schema, Op::Insert, r, at + i as u64))
        .collect();
    let batch = ChangeBatch::from_events(schema.clone(), &events).unwrap();
    w.write(&batch).await.unwrap();
}

fn checkpoint(offset: u64) -> Checkpoint {
    Checkpoint {
        position: Some(SourcePosition::FilePos(BinlogFilePos::new(
            "mysql-bin.000001",
            offset,
        ))),
        ..Default::default()
    }
}

/// pyiceberg's view: the schema as `name type required` lines, then the rows
/// sorted by id as JSON.
fn read_py(metadata: &str) -> (Vec<String>, Vec<serde_json::Value>) {
    let out = DevServices::load().run_python(
        r#"
import sys, json
from pyiceberg.table import StaticTable
t = StaticTable.from_metadata(sys.argv[1])
print(json.dumps([f"{f.name} {f.field_type} {f.required}" for f in t.schema().fields]))
rows = sorted(t.scan().to_arrow().to_pylist(), key=lambda r: r["id"])
print(json.dumps(rows))
"#,
        &[metadata],
    );
    let mut lines = out.lines();
    let fields = serde_json::from_str(lines.next().unwrap()).unwrap();
    let rows = serde_json::from_str(lines.next().unwrap()).unwrap();
    (fields, rows)
}

fn catalog() -> Arc<HadoopCatalog> {
    Arc::new(HadoopCatalog::new_local(dev_dir().join("tmp").join(unique_name("evolve"))).unwrap())
}

fn s(v: &str) -> Value {
    Value::String(v.into())
}

#[tokio::test]
async fn columns_are_added_widened_and_dropped_and_incompatible_changes_follow_the_policy() {
    let catalog = catalog();
    let name = TableName::new("shop", "evolving");
    let (one, two) = (v1(), v2());
    let mut w = UpsertWriter::open(catalog.clone(), name.clone(), &one)
        .await
        .unwrap();
    write(
        &mut w,
        &one,
        vec![vec![Value::Int32(1), Value::Int32(10), s("a"), s("x")]],
        100,
    )
    .await;
    w.commit(&checkpoint(100)).await.unwrap();

    // ALTER: v INT → BIGINT, DROP gone, ADD n BIGINT; rows buffered before
    // the change are carried over to the new file schema.
    write(
        &mut w,
        &one,
        vec![vec![Value::Int32(4), Value::Int32(40), s("d"), s("y")]],
        150,
    )
    .await;
    let change = SchemaChange::between(
        SchemaChangeKind::Alter,
        Some((*one).clone()),
        Some((*two).clone()),
    );
    w.apply_schema_change(&change).await.unwrap();
    let big = 5_000_000_000i64;
    write(
        &mut w,
        &two,
        vec![
            vec![Value::Int32(2), Value::Int64(big), s("b"), Value::Int64(7)],
            vec![Value::Int32(1), Value::Int64(11), s("a2"), Value::Int64(8)],
        ],
        200,
    )
    .await;
    w.commit(&checkpoint(201)).await.unwrap();
    let (fields, rows) = read_py(&w.table().metadata_location);
    assert_eq!(
        fields,
        [
            "id int True",
            "v long False",
            "s string False",
            "gone string False",
            "n long False"
        ]
    );
    assert_eq!(
        serde_json::Value::Array(rows),
        serde_json::json!([
            {"id": 1, "v": 11, "s": "a2", "gone": null, "n": 8},
            {"id": 2, "v": big, "s": "b", "gone": null, "n": 7},
            {"id": 4, "v": 40, "s": "d", "gone": "y", "n": null},
        ])
    );

    // A reopen with the same source schema changes nothing.
    let schema_id = w.table().metadata.current_schema_id();
    drop(w);
    let w = UpsertWriter::open(catalog.clone(), name.clone(), &two)
        .await
        .unwrap();
    assert_eq!(w.table().metadata.current_schema_id(), schema_id);

    // s VARCHAR → INT: refused by default, naming the column and the fix…
    let mut w = w;
    let three = v3();
    let change = SchemaChange::between(
        SchemaChangeKind::Alter,
        Some((*two).clone()),
        Some((*three).clone()),
    );
    let err = w.apply_schema_change(&change).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SchemaMismatch);
    let msg = err.to_string();
    assert!(
        msg.contains("shop.evolving.s") && msg.contains("column_policy"),
        "{msg}"
    );
    drop(w);

    // …and with the skip policy the column is no longer written.
    let config = UpsertConfig {
        column_policy: ColumnPolicy::Skip,
        ..UpsertConfig::default()
    };
    let mut w = UpsertWriter::open_config(catalog.clone(), name.clone(), &three, config.clone())
        .await
        .unwrap();
    write(
        &mut w,
        &three,
        vec![vec![
            Value::Int32(3),
            Value::Int64(3),
            Value::Int32(42),
            Value::Int64(9),
        ]],
        300,
    )
    .await;
    w.commit(&checkpoint(300)).await.unwrap();
    let (_, rows) = read_py(&w.table().metadata_location);
    assert_eq!(
        rows[2],
        serde_json::json!({"id": 3, "v": 3, "s": null, "gone": null, "n": 9})
    );

    // A key column's type change that is no promotion is never skipped.
    let mut cols = three.columns.clone();
    cols[0] = Column::new("id", string(), false);
    let four = table_schema(cols, 4);
    let err = UpsertWriter::open_config(catalog.clone(), name.clone(), &four, config)
        .await
        .err()
        .expect("a key type change is refused");
    assert!(
        err.to_string().contains("key columns cannot be skipped"),
        "{err}"
    );
    // iceberg-rust reads the evolved table too (promoted and null columns).
    let t = catalog.load_table(&name).await.unwrap();
    assert_eq!(scan_rows(&t).await, 4);
    // And the reference implementation reads every evolved version the same
    // (longs come back as strings: nothing is rounded).
    let java = tributary_testkit::DevServices::load().iceberg_java_read(&[&t.metadata_location]);
    let mut java: Vec<serde_json::Value> = java[0].iter().cloned().map(Into::into).collect();
    java.sort_by_key(|r| r["id"].as_i64());
    assert_eq!(
        serde_json::Value::Array(java),
        serde_json::json!([
            {"id": 1, "v": "11", "s": "a2", "gone": null, "n": "8"},
            {"id": 2, "v": big.to_string(), "s": "b", "gone": null, "n": "7"},
            {"id": 3, "v": "3", "s": null, "gone": null, "n": "9"},
            {"id": 4, "v": "40", "s": "d", "gone": "y", "n": null},
        ])
    );
}

async fn scan_rows(t: &tributary_catalog::CatalogTable) -> usize {
    t.scan(None)
        .await
        .unwrap()
        .iter()
        .map(|b| b.num_rows())
        .sum()
}

#[tokio::test]
async fn commits_fall_due_at_the_row_and_byte_bounds_and_the_interval() {
    let catalog = catalog();
    let one = v1();
    let row = |id| vec![Value::Int32(id), Value::Null, Value::Null, s("x")];
    let by_rows = UpsertConfig {
        commit_rows: 3,
        commit_interval: Duration::from_secs(3600),
        ..UpsertConfig::default()
    };
    let mut w =
        UpsertWriter::open_config(catalog.clone(), TableName::new("p", "rows"), &one, by_rows)
            .await
            .unwrap();
    assert!(!w.commit_due());
    write(&mut w, &one, vec![row(1), row(2)], 10).await;
    assert!(!w.commit_due(), "2 of 3 rows");
    write(&mut w, &one, vec![row(3)], 20).await;
    assert!(w.commit_due(), "3 of 3 rows");
    w.commit(&checkpoint(20)).await.unwrap();
    assert!(!w.commit_due(), "a commit starts over");

    let by_bytes = UpsertConfig {
        commit_bytes: 1,
        commit_interval: Duration::from_secs(3600),
        ..UpsertConfig::default()
    };
    let mut w = UpsertWriter::open_config(
        catalog.clone(),
        TableName::new("p", "bytes"),
        &one,
        by_bytes,
    )
    .await
    .unwrap();
    write(&mut w, &one, vec![row(1)], 10).await;
    assert!(w.commit_due(), "byte bound");

    let by_time = UpsertConfig {
        commit_interval: Duration::from_millis(50),
        ..UpsertConfig::default()
    };
    let w = UpsertWriter::open_config(catalog.clone(), TableName::new("p", "time"), &one, by_time)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !w.commit_due() {
        assert!(Instant::now() < deadline, "the interval never fell due");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn an_idle_writer_records_its_position_only_every_idle_interval() {
    let catalog = catalog();
    let one = v1();
    let snapshots = |w: &UpsertWriter| w.table().metadata.snapshots().count();
    let mut w = UpsertWriter::open(catalog.clone(), TableName::new("p", "idle"), &one)
        .await
        .unwrap();
    // A table without any checkpoint records one at once (a runner reads
    // "none" as "start from the beginning")…
    w.commit(&checkpoint(10)).await.unwrap();
    assert_eq!(snapshots(&w), 1, "the first position is recorded");
    // …then, with nothing written, not again within the idle interval.
    w.commit(&checkpoint(15)).await.unwrap();
    assert_eq!(
        snapshots(&w),
        1,
        "nothing written, position recorded recently"
    );
    let eager = UpsertConfig {
        idle_commit_interval: Duration::ZERO,
        ..UpsertConfig::default()
    };
    let mut w =
        UpsertWriter::open_config(catalog.clone(), TableName::new("p", "idle"), &one, eager)
            .await
            .unwrap();
    w.commit(&checkpoint(20)).await.unwrap();
    assert_eq!(snapshots(&w), 2);
    assert_eq!(
        w.committed().await.unwrap().unwrap().position,
        checkpoint(20).position
    );
}

/// `ALTER TABLE … MODIFY id BIGINT` (an INT key widened as its
/// auto-increment nears 2³¹): the table's key is promoted in place, and a
/// key written before the change and after it is one key — an update or a
/// delete after the widening removes the row written before it, through
/// the writer's index, after a restart (sidecars), and in equality mode.
#[tokio::test]
async fn a_widened_key_is_one_key_before_and_after_the_change_in_both_delete_modes() {
    for mode in [DeleteMode::Position, DeleteMode::Equality] {
        let catalog = catalog();
        let name = TableName::new("shop", "evolving");
        let schema = |id: ColumnType, version| {
            let cols = vec![
                Column::new("id", id, false),
                Column::new("v", ColumnType::Int32, true),
            ];
            table_schema(cols, version)
        };
        let (narrow, wide) = (schema(ColumnType::Int32, 1), schema(ColumnType::Int64, 2));
        let config = UpsertConfig {
            delete_mode: mode,
            ..UpsertConfig::default()
        };
        let mut w =
            UpsertWriter::open_config(catalog.clone(), name.clone(), &narrow, config.clone())
                .await
                .unwrap();
        let rows = (1..=50)
            .map(|i| vec![Value::Int32(i), Value::Int32(1)])
            .collect();
        write(&mut w, &narrow, rows, 100).await;
        w.commit(&checkpoint(200)).await.unwrap();

        // After the widening: updates of keys 1..=25 and a delete of 50,
        // with the new type.
        let change = |op, id: i64, v: Option<i32>, at| ChangeEvent {
            table: wide.table.clone(),
            op,
            before: Some(vec![Value::Int64(id), Value::Int32(1)]),
            after: v.map(|v| vec![Value::Int64(id), Value::Int32(v)]),
            position: Some(SourcePosition::FilePos(BinlogFilePos::new(
                "mysql-bin.000001",
                at,
            ))),
            commit_ts_micros: at as i64,
            schema_version: wide.version,
        };
        let mut events: Vec<ChangeEvent> = (1..=25)
            .map(|i| change(Op::Update, i, Some(2), 300 + i as u64))
            .collect();
        events.push(change(Op::Delete, 50, None, 400));
        w.write(&ChangeBatch::from_events(wide.clone(), &events).unwrap())
            .await
            .unwrap();
        w.commit(&checkpoint(400)).await.unwrap();
        drop(w);
        // A restart reads the committed files' summaries back.
        let mut w = UpsertWriter::open_config(catalog.clone(), name.clone(), &wide, config.clone())
            .await
            .unwrap();
        let events = vec![change(Op::Update, 26, Some(3), 500)];
        w.write(&ChangeBatch::from_events(wide.clone(), &events).unwrap())
            .await
            .unwrap();
        w.commit(&checkpoint(500)).await.unwrap();

        let t = catalog.load_table(&name).await.unwrap();
        let field = t
            .metadata
            .current_schema()
            .field_by_name("id")
            .unwrap()
            .clone();
        assert_eq!(
            field.field_type.to_string(),
            "long",
            "{mode:?}: the key was promoted"
        );
        // Iceberg Java applies both delete kinds (pyiceberg refuses
        // equality deletes); longs come back as strings.
        let java = DevServices::load().iceberg_java_read(&[&t.metadata_location]);
        let mut got: Vec<(i64, i64)> = java[0]
            .iter()
            .map(|r| {
                let r: serde_json::Value = r.clone().into();
                let num = |v: &serde_json::Value| {
                    v.as_i64().or_else(|| v.as_str()?.parse().ok()).unwrap()
                };
                (num(&r["id"]), num(&r["v"]))
            })
            .collect();
        got.sort();
        let want: Vec<(i64, i64)> = (1..=49)
            .map(|i| {
                (
                    i,
                    if i <= 25 {
                        2
                    } else if i == 26 {
                        3
                    } else {
                        1
                    },
                )
            })
            .collect();
        assert_eq!(got, want, "{mode:?}: each key once, the newest value");
        if mode == DeleteMode::Position {
            let (_, rows) = read_py(&t.metadata_location);
            assert_eq!(rows.len(), 49, "pyiceberg: no row twice");
        }
    }
}

/// `TRUNCATE` of the source: the commit after it removes every file of the
/// table (rows committed before, rows buffered before the truncate) and
/// adds the rows written after it; a replayed truncate changes nothing.
#[tokio::test]
async fn a_truncate_empties_the_table_at_its_position_and_a_replay_is_skipped() {
    let catalog = catalog();
    let name = TableName::new("shop", "evolving");
    let cols = vec![
        Column::new("id", ColumnType::Int32, false),
        Column::new("v", ColumnType::Int32, true),
    ];
    let schema = table_schema(cols, 1);
    let mut w = UpsertWriter::open(catalog.clone(), name.clone(), &schema)
        .await
        .unwrap();
    let rows = |ids: std::ops::Range<i32>| {
        ids.map(|i| vec![Value::Int32(i), Value::Int32(i)])
            .collect()
    };
    write(&mut w, &schema, rows(0..40), 100).await;
    w.commit(&checkpoint(200)).await.unwrap();
    // Buffered before the truncate, in the same commit round: gone too.
    write(&mut w, &schema, rows(40..60), 300).await;
    let mut truncate = SchemaChange::between(
        SchemaChangeKind::Truncate,
        Some((*schema).clone()),
        Some((*schema).clone()),
    );
    truncate.position = Some(SourcePosition::FilePos(BinlogFilePos::new(
        "mysql-bin.000001",
        400,
    )));
    w.apply_schema_change(&truncate).await.unwrap();
    write(&mut w, &schema, rows(5..8), 500).await;
    w.commit(&checkpoint(600)).await.unwrap();
    let t = catalog.load_table(&name).await.unwrap();
    let (_, got) = read_py(&t.metadata_location);
    let ids: Vec<i64> = got.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [5, 6, 7], "only the rows after the truncate");
    let summary = t.metadata.current_snapshot().unwrap().summary();
    assert_eq!(summary.operation, iceberg::spec::Operation::Overwrite);
    assert_eq!(scan_rows(&t).await, 3, "iceberg-rust agrees");
    drop(w);

    // A restart after the commit replays the truncate: skipped.
    let mut w = UpsertWriter::open(catalog.clone(), name.clone(), &schema)
        .await
        .unwrap();
    w.apply_schema_change(&truncate).await.unwrap();
    write(&mut w, &schema, rows(8..9), 700).await;
    w.commit(&checkpoint(800)).await.unwrap();
    let t = catalog.load_table(&name).await.unwrap();
    let (_, got) = read_py(&t.metadata_location);
    assert_eq!(
        got.len(),
        4,
        "the replayed truncate removed nothing: {got:?}"
    );
}
