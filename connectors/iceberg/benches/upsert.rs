//! 100k updates into Iceberg tables of 1M and 10M rows, both delete modes,
//! on the local filesystem; pyiceberg's `Table.upsert` of 100k rows into 1M
//! rows is measured in the same run as the peer.
//!
//! `cargo bench -p tributary-iceberg --bench upsert` (release). Needs the dev
//! Python (`dev/services up pyiceberg`) for the peer; without it the peer row
//! is skipped. `UPSERT_BENCH_ROWS=1000000` limits the table sizes.

use std::sync::Arc;
use std::time::Instant;

use tributary_catalog::{HadoopCatalog, TableName};
use tributary_core::{
    BinlogFilePos, ChangeBatch, ChangeBatchBuilder, Checkpoint, Column, ColumnType, Op,
    SourcePosition, TableId, TableSchema, Value,
};
use tributary_iceberg::{DeleteMode, UpsertWriter};
use tributary_testkit::{DevServices, dev_dir, unique_name};

const UPDATES: i64 = 100_000;
const FILE_ROWS: i64 = 1_000_000;

fn schema() -> Arc<TableSchema> {
    let cols = vec![
        Column::new("id", ColumnType::Int64, false),
        Column::new("v", ColumnType::Int64, true),
        Column::new("s", ColumnType::String { max_len: Some(32) }, true),
    ];
    Arc::new(TableSchema::new(TableId::new("bench", "t"), cols, &["id"], 1).unwrap())
}

fn row(id: i64, v: i64) -> [Value; 3] {
    [
        Value::Int64(id),
        Value::Int64(v),
        Value::String(format!("row {id}")),
    ]
}

fn position(offset: u64) -> Option<SourcePosition> {
    Some(SourcePosition::FilePos(BinlogFilePos::new(
        "mysql-bin.000001",
        offset,
    )))
}

fn batch(ops: impl Iterator<Item = (Op, i64, i64)>, offset: u64) -> ChangeBatch {
    let mut b = ChangeBatchBuilder::new(schema());
    b.begin_txn(position(offset), 0);
    for (op, id, v) in ops {
        let after = row(id, v);
        let before = row(id, v - 1);
        let before = (op == Op::Update).then_some(&before[..]);
        b.push_row(op, before, Some(&after)).unwrap();
    }
    b.close_txn(position(offset), 0);
    b.finish().unwrap()
}

/// Loads `rows` rows (1M-row data files), then times 100k updates of keys
/// chosen by `pick` in one commit after a restart (index from sidecars).
async fn run(rows: i64, mode: DeleteMode, label: &str, pick: impl Fn(i64) -> i64) -> f64 {
    let dir = dev_dir().join("tmp").join(unique_name("bench-upsert"));
    let catalog = Arc::new(HadoopCatalog::new_local(&dir).unwrap());
    let name = TableName::new("bench", "t");
    let mut w = UpsertWriter::open_with(catalog.clone(), name.clone(), &schema(), mode)
        .await
        .unwrap();
    for (i, start) in (0..rows).step_by(FILE_ROWS as usize).enumerate() {
        let ids = start..(start + FILE_ROWS).min(rows);
        w.write_batch(&batch(ids.map(|id| (Op::Insert, id, 0)), i as u64 + 1))
            .await
            .unwrap();
        let cp = Checkpoint {
            position: position(i as u64 + 1),
            ..Default::default()
        };
        w.commit_checkpoint(&cp).await.unwrap();
    }
    drop(w);
    let t0 = Instant::now();
    let mut w = UpsertWriter::open_with(catalog, name, &schema(), mode)
        .await
        .unwrap();
    let open = t0.elapsed().as_secs_f64();
    let updates = batch(
        (0..UPDATES).map(|i| (Op::Update, pick(i) % rows, 1)),
        1_000_000,
    );
    let t1 = Instant::now();
    w.write_batch(&updates).await.unwrap();
    let cp = Checkpoint {
        position: position(1_000_000),
        ..Default::default()
    };
    w.commit_checkpoint(&cp).await.unwrap();
    let commit = t1.elapsed().as_secs_f64();
    let summary = &w
        .table()
        .metadata
        .current_snapshot()
        .unwrap()
        .summary()
        .additional_properties;
    let stats = w.index_stats();
    println!(
        "{:>10} rows {mode:?} {label:>6}: open {open:.2} s, 100k updates {commit:.2} s \
         ({:.0} rows/s); data files probed {} of {}; added eq deletes {}, pos deletes {}",
        rows,
        UPDATES as f64 / commit,
        stats.key_columns_read,
        (rows + FILE_ROWS - 1) / FILE_ROWS,
        summary
            .get("added-equality-deletes")
            .map_or("0", String::as_str),
        summary
            .get("added-position-deletes")
            .map_or("0", String::as_str),
    );
    let _ = std::fs::remove_dir_all(&dir);
    commit
}

/// pyiceberg `Table.upsert` of 100k updates into 1M rows (seconds).
fn pyiceberg_upsert() -> Option<f64> {
    let services = DevServices::load();
    services.try_python().ok()?;
    let dir = dev_dir().join("tmp").join(unique_name("bench-pyiceberg"));
    std::fs::create_dir_all(&dir).unwrap();
    let out = services.run_python(
        r#"
import sys, time, random
import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
d = sys.argv[1]
cat = SqlCatalog("b", uri=f"sqlite:///{d}/cat.db", warehouse=f"file://{d}")
cat.create_namespace("bench")
n = 1_000_000
schema = pa.schema([pa.field("id", pa.int64(), nullable=False), ("v", pa.int64()), ("s", pa.string())])
t = cat.create_table("bench.t", schema=schema)
from pyiceberg.table.update.schema import UpdateSchema
with t.update_schema() as u:
    u.set_identifier_fields("id")
t.append(pa.table({"id": range(n), "v": [0] * n, "s": [f"row {i}" for i in range(n)]}, schema=schema))
ids = random.Random(1).sample(range(n), 100_000)
up = pa.table({"id": ids, "v": [1] * len(ids), "s": [f"row {i}" for i in ids]}, schema=schema)
t0 = time.perf_counter()
t.upsert(up)
print(time.perf_counter() - t0)
"#,
        &[dir.to_str().unwrap()],
    );
    let _ = std::fs::remove_dir_all(&dir);
    out.trim().lines().last()?.parse().ok()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let sizes: Vec<i64> = match std::env::var("UPSERT_BENCH_ROWS") {
        Ok(v) => vec![v.parse().expect("UPSERT_BENCH_ROWS: a row count")],
        Err(_) => vec![1_000_000, 10_000_000],
    };
    // Spread: multiplicative hashing over the whole key space (every file
    // holds candidates); recent: the newest 100k keys (one file).
    let spread = |i: i64| i.wrapping_mul(2_654_435_761) & i64::MAX;
    let mut ours_1m = None;
    for &rows in &sizes {
        for mode in [DeleteMode::Position, DeleteMode::Equality] {
            let t = rt.block_on(run(rows, mode, "spread", spread));
            if rows == 1_000_000 && mode == DeleteMode::Position {
                ours_1m = Some(t);
            }
            rt.block_on(run(rows, mode, "recent", move |i| rows - UPDATES + i));
        }
    }
    match (pyiceberg_upsert(), ours_1m) {
        (Some(py), Some(ours)) => println!(
            "peer: pyiceberg Table.upsert 100k into 1M: {py:.2} s; tributary position mode \
             (spread keys) is {:.1}x faster",
            py / ours
        ),
        (None, _) => println!("peer: pyiceberg not available (dev/services up pyiceberg)"),
        (_, None) => {}
    }
}
