//! Embedding the HBase sink (primary and standby clusters) in a program of
//! your own. Needs HBase Thrift2 gateways (`hbase thrift2 -p 9090`) and the
//! tables: `create 'orders', 'cf'` and `create 'tributary_checkpoints', 'cf'`
//! on both clusters.
//!
//! ```sh
//! HBASE_PRIMARY=hbase-a:9090 HBASE_STANDBY=hbase-b:9090 cargo run --example hbase_embedded
//! ```
//!
//! `dev/test` compiles this example (the sink's tests run against the dev
//! HBase 2.6.1 and HBase servers of their own).

use std::sync::Arc;

use tributary_core::{
    BinlogFilePos, ChangeBatch, ChangeEvent, Checkpoint, Column, ColumnType, Op, Sink,
    SourcePosition, TableId, TableSchema, Value,
};
use tributary_hbase::{HBaseSink, HBaseSinkConfig, RowKeyEncoding};
use tributary_runtime::{HaConfig, HaSink};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let primary = std::env::var("HBASE_PRIMARY").unwrap_or("127.0.0.1:9090".into());
    let standby = std::env::var("HBASE_STANDBY").unwrap_or("127.0.0.1:9091".into());
    let schema = Arc::new(TableSchema::new(
        TableId::new("shop", "orders"),
        vec![
            Column::new("region", ColumnType::String { max_len: Some(8) }, false),
            Column::new("id", ColumnType::Int64, false),
            Column::new("note", ColumnType::String { max_len: None }, true),
        ],
        &["region", "id"],
        1,
    )?);
    // Readable row keys such as `eu|42`.
    let config = |address: String| HBaseSinkConfig {
        row_key: RowKeyEncoding::Text {
            separator: "|".into(),
        },
        ..HBaseSinkConfig::new(address)
    };
    let mut sink = HaSink::new(
        HBaseSink::open(config(primary), &schema).await?,
        HBaseSink::open(config(standby), &schema).await?,
        HaConfig::default(),
    );
    println!("resume from: {:?}", sink.committed().await?);
    let at = Some(SourcePosition::FilePos(BinlogFilePos::new(
        "mysql-bin.000001",
        100,
    )));
    let insert = ChangeEvent {
        table: schema.table.clone(),
        op: Op::Insert,
        before: None,
        after: Some(vec![
            Value::String("eu".into()),
            Value::Int64(42),
            Value::String("first order".into()),
        ]),
        position: at.clone(),
        commit_ts_micros: 0,
        schema_version: 1,
    };
    sink.write(&ChangeBatch::from_events(schema.clone(), &[insert])?)
        .await?;
    sink.commit(&Checkpoint {
        position: at,
        ..Default::default()
    })
    .await?;
    println!("written; active side: {:?}", sink.active());
    Ok(())
}
