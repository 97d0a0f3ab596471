//! Primary/standby ClickHouse behind `HaSink`, with servers of the test's own
//! (the primary is killed and restarted): writes continue on the standby
//! when the primary dies, nothing is lost (the newest version of each key
//! over both servers is the model: same count, same checksum), and writes
//! return to the primary once it has been healthy for `failback_after`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tributary_clickhouse::{ClickHouseSink, ClickHouseSinkConfig};
use tributary_core::{
    BinlogFilePos, ChangeBatch, ChangeEvent, Checkpoint, Column, ColumnType, Op, Sink,
    SourcePosition, TableId, TableSchema, Value,
};
use tributary_runtime::{HaConfig, HaSink, Side};
use tributary_testkit::{ClickHouseServer, dev_dir, unique_name};

type Model = BTreeMap<i32, i32>;

fn schema() -> Arc<TableSchema> {
    let cols = vec![
        Column::new("id", ColumnType::Int32, false),
        Column::new("v", ColumnType::Int32, false),
    ];
    Arc::new(TableSchema::new(TableId::new("db", "ha_kv"), cols, &["id"], 1).unwrap())
}

fn pos(offset: u64) -> Option<SourcePosition> {
    Some(SourcePosition::FilePos(BinlogFilePos::new(
        "mysql-bin.000003",
        offset,
    )))
}

/// Ten random upserts/deletes, one transaction each, on ten keys of the
/// round's own (a lost round stays visible: no later round overwrites it).
fn events(
    schema: &TableSchema,
    round: i32,
    model: &mut Model,
    offset: &mut u64,
    seed: &mut u64,
) -> Vec<ChangeEvent> {
    (0..10)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *offset += 100;
            let id = round * 1000 + (*seed % 10) as i32;
            let v = ((*seed >> 8) % 1000) as i32;
            let row = |v: i32| Some(vec![Value::Int32(id), Value::Int32(v)]);
            let (op, before, after) = match model.get(&id).copied() {
                Some(old) if (*seed).is_multiple_of(3) => {
                    model.remove(&id);
                    (Op::Delete, row(old), None)
                }
                Some(old) => {
                    model.insert(id, v);
                    (Op::Update, row(old), row(v))
                }
                None => {
                    model.insert(id, v);
                    (Op::Insert, None, row(v))
                }
            };
            ChangeEvent {
                table: schema.table.clone(),
                op,
                before,
                after,
                position: pos(*offset),
                commit_ts_micros: 0,
                schema_version: 1,
            }
        })
        .collect()
}

/// Each key's newest row on one server: id → (version, deleted, v).
async fn newest(url: &str) -> BTreeMap<i32, (u64, u8, i32)> {
    let client = clickhouse::Client::default()
        .with_url(url)
        .with_validation(false);
    let rows: Vec<(i32, u64, u8, i32)> = client
        .query("SELECT id, _version, _is_deleted, v FROM ha_kv FINAL")
        .fetch_all()
        .await
        .unwrap();
    rows.into_iter()
        .map(|(id, ver, del, v)| (id, (ver, del, v)))
        .collect()
}

/// The newest version of every key over both servers, deleted keys dropped.
async fn union_of(a: &str, b: &str) -> Model {
    let mut all = newest(a).await;
    for (id, row) in newest(b).await {
        if all.get(&id).is_none_or(|r| r.0 < row.0) {
            all.insert(id, row);
        }
    }
    all.into_iter()
        .filter(|(_, (_, del, _))| *del == 0)
        .map(|(id, (_, _, v))| (id, v))
        .collect()
}

fn checksum(m: &Model) -> u64 {
    m.iter().fold(0u64, |acc, (k, v)| {
        acc.wrapping_add(xxhash_rust::xxh3::xxh3_64(
            &[k.to_le_bytes(), v.to_le_bytes()].concat(),
        ))
    })
}

#[tokio::test]
async fn writes_survive_a_killed_primary_and_fail_back_after_it_recovers() {
    let base = dev_dir().join("tmp").join(unique_name("ch_ha"));
    let mut primary = ClickHouseServer::start(&base.join("primary"));
    let standby = ClickHouseServer::start(&base.join("standby"));
    let config = |url: String| ClickHouseSinkConfig {
        attempts: 2,
        ..ClickHouseSinkConfig::single(url)
    };
    let schema = schema();
    let ha_config = HaConfig {
        failure_threshold: 2,
        health_interval: Duration::ZERO,
        failback_after: Duration::from_millis(500),
    };
    let mut ha = HaSink::new(
        ClickHouseSink::open(config(primary.url()), &schema)
            .await
            .unwrap(),
        ClickHouseSink::open(config(standby.url()), &schema)
            .await
            .unwrap(),
        ha_config,
    );
    let (mut model, mut offset, mut seed) = (Model::new(), 0u64, 0x2545_F491_4F6C_DD1Du64);
    let mut round = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            Instant::now() < deadline,
            "no fail-back within 120 s: {:?}",
            ha.stats()
        );
        round += 1;
        let batch = ChangeBatch::from_events(
            schema.clone(),
            &events(&schema, round, &mut model, &mut offset, &mut seed),
        )
        .unwrap();
        ha.write(&batch).await.unwrap();
        if round == 5 {
            primary.kill(); // between a write and its commit: the batch is in flight
        }
        ha.commit(&Checkpoint {
            position: pos(offset),
            ..Default::default()
        })
        .await
        .unwrap();
        match round {
            1..5 => assert_eq!(ha.active(), Side::Primary),
            5..10 => assert_eq!(ha.active(), Side::Standby, "round {round}"),
            10 => primary.restart(),
            _ if ha.active() == Side::Primary && ha.stats().failbacks == 1 => break,
            _ => {}
        }
    }
    // A few more rounds on the primary after the fail-back.
    for _ in 0..3 {
        round += 1;
        let batch = ChangeBatch::from_events(
            schema.clone(),
            &events(&schema, round, &mut model, &mut offset, &mut seed),
        )
        .unwrap();
        ha.write(&batch).await.unwrap();
        ha.commit(&Checkpoint {
            position: pos(offset),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    assert_eq!(ha.active(), Side::Primary);
    let stats = ha.stats();
    assert_eq!((stats.failovers, stats.failbacks), (1, 1), "{stats:?}");
    let both = union_of(&primary.url(), &standby.url()).await;
    assert_eq!(
        (both.len(), checksum(&both)),
        (model.len(), checksum(&model)),
        "count and checksum"
    );
    assert_eq!(both, model);
    let committed = ha.committed().await.unwrap().unwrap();
    assert_eq!(
        committed.position,
        pos(offset),
        "the newest checkpoint of the pair"
    );
}
