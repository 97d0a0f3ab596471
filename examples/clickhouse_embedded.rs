//! Embedding the ClickHouse sink in a program of your own (no CLI): one
//! source table's changes, built by hand here, written to a primary
//! ClickHouse with a standby behind `HaSink`.
//!
//! ```sh
//! dev/services up clickhouse
//! CLICKHOUSE_PRIMARY=http://127.0.0.1:8123 CLICKHOUSE_STANDBY=http://127.0.0.1:8124 \
//!   cargo run --example clickhouse_embedded
//! ```
//!
//! Your program supplies `ChangeBatch`es (from `tributary_mysql::MySqlSource`
//! or your own code), calls `write`, and `commit`s with the source position
//! it would resume from; `committed()` tells it where to resume after a
//! restart. `dev/test` runs this example against the dev servers.

use std::sync::Arc;
use std::time::Duration;

use tributary_clickhouse::{ClickHouseSink, ClickHouseSinkConfig};
use tributary_core::{
    BinlogFilePos, ChangeBatch, ChangeEvent, Checkpoint, Column, ColumnType, Op, Sink,
    SourcePosition, TableId, TableSchema, Value,
};
use tributary_runtime::{HaConfig, HaSink};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let primary = std::env::var("CLICKHOUSE_PRIMARY").unwrap_or("http://127.0.0.1:8123".into());
    let standby = std::env::var("CLICKHOUSE_STANDBY").unwrap_or("http://127.0.0.1:8124".into());

    // The source table's schema: `shop.orders (id BIGINT PRIMARY KEY, amount DECIMAL(10,2), note TEXT)`.
    let table = format!("orders_example_{}", std::process::id());
    let schema = Arc::new(TableSchema::new(
        TableId::new("shop", &table),
        vec![
            Column::new("id", ColumnType::Int64, false),
            Column::new(
                "amount",
                ColumnType::Decimal {
                    precision: 10,
                    scale: 2,
                },
                true,
            ),
            Column::new("note", ColumnType::String { max_len: None }, true),
        ],
        &["id"],
        1,
    )?);

    // One sink per cluster (each creates its tables), behind an HA pair.
    let mut sink = HaSink::new(
        ClickHouseSink::open(ClickHouseSinkConfig::single(primary.clone()), &schema).await?,
        ClickHouseSink::open(ClickHouseSinkConfig::single(standby), &schema).await?,
        HaConfig {
            failback_after: Duration::from_secs(30),
            ..HaConfig::default()
        },
    );
    println!("resume from: {:?}", sink.committed().await?);

    // Three inserts, an update and a delete, each its own transaction.
    let at = |offset: u64| {
        Some(SourcePosition::FilePos(BinlogFilePos::new(
            "mysql-bin.000001",
            offset,
        )))
    };
    let row = |id: i64, amount: &str, note: &str| {
        Some(vec![
            Value::Int64(id),
            Value::Decimal(amount.parse().unwrap()),
            Value::String(note.into()),
        ])
    };
    let change = |op, before, after, offset| ChangeEvent {
        table: schema.table.clone(),
        op,
        before,
        after,
        position: at(offset),
        commit_ts_micros: 0,
        schema_version: 1,
    };
    let events = vec![
        change(Op::Insert, None, row(1, "9.99", "first"), 100),
        change(Op::Insert, None, row(2, "20.00", "second"), 200),
        change(Op::Insert, None, row(3, "5.50", "third"), 300),
        change(
            Op::Update,
            row(2, "20.00", "second"),
            row(2, "25.00", "second, repriced"),
            400,
        ),
        change(Op::Delete, row(3, "5.50", "third"), None, 500),
    ];
    sink.write(&ChangeBatch::from_events(schema.clone(), &events)?)
        .await?;
    sink.commit(&Checkpoint {
        position: at(500),
        ..Default::default()
    })
    .await?;

    // Read back the current rows through the view the sink created.
    let client = clickhouse::Client::default()
        .with_url(&primary)
        .with_validation(false);
    let rows: Vec<(i64, Option<String>)> = client
        .query(&format!("SELECT id, note FROM {table}_live ORDER BY id"))
        .fetch_all()
        .await?;
    println!("{table}_live: {rows:?} (active side: {:?})", sink.active());
    let expected = vec![
        (1, Some("first".to_string())),
        (2, Some("second, repriced".to_string())),
    ];
    if rows != expected {
        return Err(format!("expected {expected:?}").into());
    }
    Ok(())
}
