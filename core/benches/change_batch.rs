//! Core-path throughput: a reader builds six-column `ChangeBatch`es with typed
//! pushes and a sink walks the Arrow arrays. Target: ≥ 2M rows/s on one core
//! (release). Run: `cargo bench -p tributary-core --bench change_batch`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Decimal128Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType,
};
use tributary_core::{
    BinlogFilePos, ChangeBatch, ChangeBatchBuilder, Column, ColumnType, Image, Op, SourcePosition,
    TableId, TableSchema,
};

const ROWS_PER_BATCH: usize = 4096;
const BATCHES: usize = 500;

fn schema() -> Arc<TableSchema> {
    let cols = vec![
        Column::new("id", ColumnType::Int64, false),
        Column::new("qty", ColumnType::Int32, true),
        Column::new("name", ColumnType::String { max_len: Some(64) }, true),
        Column::new(
            "price",
            ColumnType::Decimal {
                precision: 12,
                scale: 2,
            },
            true,
        ),
        Column::new("score", ColumnType::Double, true),
        Column::new("updated_at", ColumnType::DateTime { fsp: 6 }, true),
    ];
    Arc::new(TableSchema::new(TableId::new("bench", "orders"), cols, &["id"], 1).unwrap())
}

fn build(schema: &Arc<TableSchema>, start: i64, names: &[String]) -> ChangeBatch {
    let mut b = ChangeBatchBuilder::with_capacity(schema.clone(), ROWS_PER_BATCH);
    for i in 0..ROWS_PER_BATCH as i64 {
        if i % 1000 == 0 {
            let pos =
                SourcePosition::FilePos(BinlogFilePos::new("mysql-bin.000001", (start + i) as u64));
            b.begin_txn(Some(pos), 1_700_000_000_000_000 + i);
        }
        b.begin_row(Op::Insert).unwrap();
        let img = b.after();
        let id = start + i;
        img.push_int(id).unwrap();
        img.push_int(id % 100).unwrap();
        img.push_str(&names[(id % 64) as usize]).unwrap();
        img.push_decimal_unscaled(i128::from(id) * 7).unwrap();
        img.push_f64(id as f64 * 0.5).unwrap();
        img.push_timestamp_micros(1_700_000_000_000_000 + id)
            .unwrap();
        b.end_row().unwrap();
    }
    b.finish().unwrap()
}

/// What a sink does at minimum: read every cell of every row once.
fn consume(batch: &ChangeBatch) -> u64 {
    let after = batch.image(Image::After).unwrap();
    let c = after.columns();
    let (id, qty) = (
        c[0].as_primitive::<Int64Type>(),
        c[1].as_primitive::<Int32Type>(),
    );
    let name = c[2].as_string::<i32>();
    let price = c[3].as_primitive::<Decimal128Type>();
    let score = c[4].as_primitive::<Float64Type>();
    let ts = c[5].as_primitive::<TimestampMicrosecondType>();
    let mut acc = 0u64;
    for r in 0..batch.len() {
        acc = acc
            .wrapping_add(id.value(r) as u64)
            .wrapping_add(qty.value(r) as u64)
            .wrapping_add(name.value(r).len() as u64)
            .wrapping_add(price.value(r) as u64)
            .wrapping_add(score.value(r) as u64)
            .wrapping_add(ts.value(r) as u64)
            .wrapping_add(batch.txn_indices().value(r) as u64);
    }
    acc
}

fn main() {
    let schema = schema();
    let names: Vec<String> = (0..64).map(|i| format!("customer-{i:04}-name")).collect();
    // Warm up allocator and caches.
    black_box(consume(&build(&schema, 0, &names)));
    let t = Instant::now();
    let mut acc = 0;
    for n in 0..BATCHES {
        let batch = build(&schema, (n * ROWS_PER_BATCH) as i64, &names);
        acc ^= consume(&batch);
    }
    let secs = t.elapsed().as_secs_f64();
    black_box(acc);
    let rows = (BATCHES * ROWS_PER_BATCH) as f64;
    println!(
        "change_batch typed build+consume, 6 columns: {:.2}M rows/s ({rows} rows in {secs:.3}s; target ≥ 2M rows/s)",
        rows / secs / 1e6,
    );
    // The convenience path, for comparison: per-row `Value`s in, events out.
    let batch = build(&schema, 0, &names);
    let events = batch.to_events();
    let t = Instant::now();
    let rounds = 20;
    for _ in 0..rounds {
        let b = ChangeBatch::from_events(schema.clone(), &events).unwrap();
        black_box(b.to_events());
    }
    let rows = (rounds * events.len()) as f64;
    println!(
        "change_batch Value round trip (from_events + to_events): {:.2}M rows/s",
        rows / t.elapsed().as_secs_f64() / 1e6
    );
}
