//! Insert throughput into the dev ClickHouse 18.16 servers: 1M change rows
//! (id, v, s, ts) through `ClickHouseSink` (single server; local mode over
//! both shards), against the peer measured in the same run: the clickhouse
//! crate's own typed `Insert` of the same rows (serde RowBinary, no
//! versioning, one plain MergeTree table) — the fastest hand-written path.
//!
//! `cargo bench -p tributary-clickhouse --bench insert` (release; needs
//! `dev/services up clickhouse`). `CH_BENCH_ROWS` sets the row count.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tributary_clickhouse::{ClickHouseSink, ClickHouseSinkConfig, ClusterMode};
use tributary_core::{
    BinlogFilePos, ChangeBatch, ChangeBatchBuilder, Checkpoint, Column, ColumnType, Op, Sink,
    SourcePosition, TableId, TableSchema, Value,
};
use tributary_testkit::{DevServices, unique_name};

const BATCH: usize = 8192;

fn schema(table: &str) -> Arc<TableSchema> {
    let cols = vec![
        Column::new("id", ColumnType::Int64, false),
        Column::new("v", ColumnType::Int32, true),
        Column::new("s", ColumnType::String { max_len: Some(64) }, true),
        Column::new("ts", ColumnType::DateTime { fsp: 6 }, true),
    ];
    Arc::new(TableSchema::new(TableId::new("bench", table), cols, &["id"], 1).unwrap())
}

fn position(offset: u64) -> Option<SourcePosition> {
    Some(SourcePosition::FilePos(BinlogFilePos::new(
        "mysql-bin.000001",
        offset,
    )))
}

/// The rows as source batches of 8192 inserts (one transaction each).
fn batches(schema: &Arc<TableSchema>, rows: usize) -> Vec<ChangeBatch> {
    (0..rows)
        .step_by(BATCH)
        .map(|start| {
            let mut b = ChangeBatchBuilder::new(schema.clone());
            b.begin_txn(position(start as u64), 0);
            for id in start..(start + BATCH).min(rows) {
                let row = [
                    Value::Int64(id as i64),
                    Value::Int32(id as i32 % 1000),
                    Value::String(format!("customer-{id}")),
                    Value::DateTime(1_700_000_000_000_000 + id as i64),
                ];
                b.push_row(Op::Insert, None, Some(&row)).unwrap();
            }
            b.close_txn(position(start as u64), 0);
            b.finish().unwrap()
        })
        .collect()
}

async fn ours(config: ClickHouseSinkConfig, rows: usize) -> f64 {
    let schema = schema(&unique_name("bench_ours"));
    let input = batches(&schema, rows);
    let mut sink = ClickHouseSink::open(config, &schema).await.unwrap();
    let t = Instant::now();
    for b in &input {
        sink.write(b).await.unwrap();
    }
    sink.commit(&Checkpoint {
        position: position(rows as u64),
        ..Default::default()
    })
    .await
    .unwrap();
    t.elapsed().as_secs_f64()
}

#[derive(clickhouse::Row, Serialize)]
struct PeerRow {
    id: i64,
    v: Option<i32>,
    s: Option<String>,
    ts: Option<i64>,
}

/// The clickhouse crate's typed insert of the same rows (built before timing).
async fn peer(url: &str, rows: usize) -> f64 {
    let client = clickhouse::Client::default()
        .with_url(url)
        .with_validation(false);
    let table = unique_name("bench_peer");
    client
        .query(&format!(
            "CREATE TABLE {table} (id Int64, v Nullable(Int32), s Nullable(String), ts Nullable(Int64)) \
             ENGINE = MergeTree ORDER BY id"
        ))
        .execute()
        .await
        .unwrap();
    let data: Vec<PeerRow> = (0..rows)
        .map(|id| PeerRow {
            id: id as i64,
            v: Some(id as i32 % 1000),
            s: Some(format!("customer-{id}")),
            ts: Some(1_700_000_000_000_000 + id as i64),
        })
        .collect();
    let t = Instant::now();
    for chunk in data.chunks(100_000) {
        let mut insert = client.insert::<PeerRow>(&table).await.unwrap();
        for r in chunk {
            insert.write(r).await.unwrap();
        }
        insert.end().await.unwrap();
    }
    t.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let rows: usize = std::env::var("CH_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let ch = DevServices::load().clickhouse();
    let peer_s = peer(&ch.urls[0], rows).await;
    let single = ours(ClickHouseSinkConfig::single(ch.urls[0].clone()), rows).await;
    let local = ours(
        ClickHouseSinkConfig::sharded(ch.urls.clone(), &ch.cluster, ClusterMode::Local),
        rows,
    )
    .await;
    let rate = |s: f64| rows as f64 / s / 1e6;
    println!("rows: {rows}");
    println!(
        "peer  clickhouse crate typed insert: {peer_s:.2} s ({:.2} M rows/s)",
        rate(peer_s)
    );
    println!(
        "ours  ClickHouseSink single:         {single:.2} s ({:.2} M rows/s, {:.2}x the peer's rate)",
        rate(single),
        peer_s / single
    );
    println!(
        "ours  ClickHouseSink local, 2 shards: {local:.2} s ({:.2} M rows/s, {:.2}x the peer's rate)",
        rate(local),
        peer_s / local
    );
}
