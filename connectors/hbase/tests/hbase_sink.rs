//! The HBase sink against a real HBase 2.6 through its real Thrift2 gateway
//! (`dev/services up hbase`; HBase servers of the tests' own where one is
//! killed), read back with HBase's own Java client: random
//! upsert/delete/key-change workloads read back as the model, replays change
//! nothing, a key deleted and re-inserted in one transaction stays, and
//! behind `HaSink` a killed primary loses no row and is returned to once it
//! recovers.

use std::sync::Arc;
use std::time::Duration;

use tributary_core::{
    ChangeBatch, ChangeEvent, Checkpoint, Op, Sink, SourcePosition, TableSchema, Value,
};
use tributary_hbase::{HBaseSink, HBaseSinkConfig};
use tributary_runtime::{HaConfig, HaSink, Side};
use tributary_testkit::kv_workload::{
    KvModel, KvValue, Rng, kv_position, kv_row, kv_schema, random_kv_events,
};
use tributary_testkit::{DevServices, HBase, HBaseServer, dev_dir, unique_name};

type Model = KvModel;

fn schema() -> Arc<TableSchema> {
    kv_schema("shop", "kv")
}

fn row(id: i32, v: &KvValue) -> Vec<Value> {
    kv_row(id, v)
}

fn pos(offset: u64) -> Option<SourcePosition> {
    kv_position(offset)
}

fn event(
    op: Op,
    before: Option<Vec<Value>>,
    after: Option<Vec<Value>>,
    offset: u64,
) -> ChangeEvent {
    ChangeEvent {
        table: schema().table.clone(),
        op,
        before,
        after,
        position: pos(offset),
        commit_ts_micros: 0,
        schema_version: 1,
    }
}

/// Random changes on keys `base..base+span`, one transaction each.
/// Random changes on keys `base..base+span`, one transaction each.
fn random_events(
    rng: &mut Rng,
    model: &mut Model,
    offset: &mut u64,
    base: i32,
    span: i32,
    n: usize,
) -> Vec<ChangeEvent> {
    random_kv_events(&schema(), rng, model, offset, base..base + span, n)
}

/// A table of its own on the shared dev HBase, and the sink config for it.
fn shared_table() -> (HBase, HBaseSinkConfig) {
    let hbase = DevServices::load().hbase();
    let table = unique_name("kv");
    hbase.create_tables(&[(&table, "cf")]);
    let config = HBaseSinkConfig {
        table: Some(table),
        ..HBaseSinkConfig::new(hbase.address())
    };
    (hbase, config)
}

/// The rows decoded: binary row key of an INT, text cells.
fn read(server: &HBase, table: &str) -> Model {
    server
        .rows(table)
        .into_iter()
        .map(|(key, cells)| {
            let id = (u64::from_be_bytes(key.try_into().unwrap()) ^ (1 << 63)) as i64 as i32;
            let text = |q: &str| {
                cells
                    .get(q.as_bytes())
                    .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
            };
            assert_eq!(
                text("cf:id"),
                Some(id.to_string()),
                "the key column is a cell too"
            );
            (id, (text("cf:v").map(|v| v.parse().unwrap()), text("cf:s")))
        })
        .collect()
}

#[tokio::test]
async fn random_workloads_read_back_as_the_model_and_resume_from_the_checkpoint() {
    let (server, config) = shared_table();
    let kv = config.table.clone().unwrap();
    let schema = schema();
    let mut sink = HBaseSink::open(config.clone(), &schema).await.unwrap();
    assert!(sink.committed().await.unwrap().is_none());
    let (mut seed, mut model, mut offset) = (Rng(0x9E37_79B9_7F4A_7C15), Model::new(), 0u64);
    for round in 0..20 {
        let events = random_events(&mut seed, &mut model, &mut offset, 0, 30, 25);
        sink.write(&ChangeBatch::from_events(schema.clone(), &events).unwrap())
            .await
            .unwrap();
        sink.commit(&Checkpoint {
            position: pos(offset),
            ..Default::default()
        })
        .await
        .unwrap();
        // A scan starts a JVM: check every fifth round.
        if round % 5 == 4 {
            assert_eq!(read(&server, &kv), model, "after commit {round}");
        }
    }

    // A crash after a flush but before the checkpoint: the restarted sink
    // resumes at the last checkpoint and the same changes come again.
    let committed_at = offset;
    let events = random_events(&mut seed, &mut model, &mut offset, 0, 30, 25);
    let batch = ChangeBatch::from_events(schema.clone(), &events).unwrap();
    sink.write(&batch).await.unwrap();
    sink.flush().await.unwrap();
    let cells_before = server.rows(&kv);
    drop(sink);
    let mut again = HBaseSink::open(config, &schema).await.unwrap();
    let resumed = again.committed().await.unwrap().unwrap();
    assert_eq!(resumed.position, pos(committed_at));
    again.write(&batch).await.unwrap();
    again
        .commit(&Checkpoint {
            position: pos(offset),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        server.rows(&kv),
        cells_before,
        "a replay rewrites the same cells at the same timestamps"
    );
    assert_eq!(read(&server, &kv), model);
}

#[tokio::test]
async fn a_key_deleted_and_reinserted_in_one_transaction_stays() {
    let (server, config) = shared_table();
    let kv = config.table.clone().unwrap();
    let schema = schema();
    let mut sink = HBaseSink::open(config, &schema).await.unwrap();
    let old = (Some(1), Some("old".to_string()));
    let new = (Some(2), None);
    sink.write(
        &ChangeBatch::from_events(
            schema.clone(),
            &[event(Op::Insert, None, Some(row(7, &old)), 100)],
        )
        .unwrap(),
    )
    .await
    .unwrap();
    sink.commit(&Checkpoint {
        position: pos(100),
        ..Default::default()
    })
    .await
    .unwrap();
    // One transaction (one position), split over two batches: delete, then insert.
    for e in [
        event(Op::Delete, Some(row(7, &old)), None, 200),
        event(Op::Insert, None, Some(row(7, &new)), 200),
    ] {
        sink.write(&ChangeBatch::from_events(schema.clone(), &[e]).unwrap())
            .await
            .unwrap();
        sink.flush().await.unwrap();
    }
    sink.commit(&Checkpoint {
        position: pos(200),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        read(&server, &kv),
        Model::from([(7, new)]),
        "the NULL column's old cell is gone too"
    );
}

/// The newest of each row over both servers; keys of one round live on one
/// side, so visible rows of the two never overlap.
fn union(a: &HBase, b: &HBase) -> Model {
    let (mut m, other) = (read(a, "kv"), read(b, "kv"));
    for (k, v) in other {
        assert!(m.insert(k, v).is_none(), "key {k} on both sides");
    }
    m
}

/// Opens a sink on a server that just started: its gateway accepts
/// connections before HBase serves the checkpoint table through it (a cold
/// gateway's first lookups can outlast the 2 s call deadline under load), so
/// retry the open until a deadline.
async fn open_once_served(config: HBaseSinkConfig, schema: &Arc<TableSchema>) -> HBaseSink {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        match HBaseSink::open(config.clone(), schema).await {
            Ok(sink) => return sink,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("HBase not serving yet ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("HBase at {} never served: {e}", config.address),
        }
    }
}

#[tokio::test]
async fn behind_ha_a_killed_primary_loses_nothing_and_writes_return_after_it_recovers() {
    let dir = dev_dir().join("tmp").join(unique_name("hbase_ha"));
    let (mut primary, standby) = std::thread::scope(|s| {
        let start = |side: &str| {
            let d = dir.join(side);
            s.spawn(move || HBaseServer::start(&d, &[("kv", "cf")]))
        };
        let (p, s) = (start("primary"), start("standby"));
        (p.join().unwrap(), s.join().unwrap())
    });
    let schema = schema();
    let config = |addr: String| HBaseSinkConfig {
        timeout: std::time::Duration::from_secs(2),
        ..HBaseSinkConfig::new(addr)
    };
    let mut ha = HaSink::new(
        open_once_served(config(primary.address()), &schema).await,
        open_once_served(config(standby.address()), &schema).await,
        HaConfig {
            failure_threshold: 2,
            health_interval: Duration::ZERO,
            failback_after: Duration::ZERO,
        },
    );
    let (mut seed, mut model, mut offset) = (Rng(7), Model::new(), 0u64);
    // Rounds 0–3 on the primary; it is killed with round 4's batch in
    // flight; rounds 4–7 on the standby; then it restarts, and a real HBase
    // needs a while before it serves its regions again: rounds go on (on the
    // standby) until the health check passes and writes move back.
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let mut back_at = None;
    for round in 0.. {
        // Each round its own keys (base = round × 1000; key changes stay in it).
        let events = random_events(&mut seed, &mut model, &mut offset, round * 1000, 20, 15);
        ha.write(&ChangeBatch::from_events(schema.clone(), &events).unwrap())
            .await
            .unwrap();
        if round == 4 {
            primary.kill(); // the round's batch is in flight
        }
        if round == 8 {
            primary.restart();
        }
        ha.commit(&Checkpoint {
            position: pos(offset),
            ..Default::default()
        })
        .await
        .unwrap();
        match round {
            0..4 => assert_eq!(ha.active(), Side::Primary, "round {round}"),
            4..8 => assert_eq!(ha.active(), Side::Standby, "round {round}"),
            _ if back_at.is_none() && ha.active() == Side::Primary => back_at = Some(round),
            _ => {}
        }
        if back_at.is_some_and(|b| round >= b + 2) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the restarted primary never took writes back"
        );
        if round >= 8 && back_at.is_none() {
            tokio::time::sleep(Duration::from_millis(500)).await; // a round per half second
        }
    }
    assert_eq!(ha.active(), Side::Primary, "writes stay on the primary");
    assert_eq!((ha.stats().failovers, ha.stats().failbacks), (1, 1));
    assert!(
        !read(standby.handle(), "kv").is_empty(),
        "the standby took rounds 4–7"
    );
    assert_eq!(
        union(primary.handle(), standby.handle()),
        model,
        "no row lost over both clusters"
    );
    drop((primary, standby));
    std::fs::remove_dir_all(dir).unwrap();
}

/// The sink never creates tables: writing to a missing one fails at the
/// flush with an error that names it and is not transient (an HA pair must
/// not fail over on a configuration mistake).
#[tokio::test]
async fn a_missing_table_is_a_named_non_transient_error() {
    let hbase = DevServices::load().hbase();
    let table = unique_name("missing");
    let config = HBaseSinkConfig {
        table: Some(table.clone()),
        ..HBaseSinkConfig::new(hbase.address())
    };
    let schema = schema();
    let mut sink = HBaseSink::open(config, &schema).await.unwrap();
    let events = [event(Op::Insert, None, Some(row(1, &(Some(1), None))), 100)];
    sink.write(&ChangeBatch::from_events(schema.clone(), &events).unwrap())
        .await
        .unwrap();
    let err = sink.flush().await.unwrap_err();
    assert_eq!(err.kind(), tributary_core::ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains(&table), "{err}");
}
