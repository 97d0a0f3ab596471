//! Scale-out of the relay's consumer: worker processes of one consumer
//! group (`[source.kafka] group`) share the topics' partitions and commit
//! to the same Iceberg tables. Three workers read 4 partitions per table
//! under writes; one is SIGKILLed mid-stream and another added later (two
//! rebalances): the tables end equal to `SELECT *` (iceberg-rust and
//! pyiceberg, no key twice), no snapshot ever moves a partition's
//! committed offset back (each range committed once, in order), and the
//! tables' watermark passes idle partitions. On Apache Kafka 4 and on
//! tansu from `dev/services`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tributary_catalog::{HadoopCatalog, TableName};
use tributary_core::{Checkpoint, TableId};
use tributary_testkit::{DevServices, unique_name};

mod common;
use common::SyncProcess;
use common::fixture::*;

/// The partitions of the last share a worker's log names (`db.a [0, 1],
/// db.b [2]`), or None before its first.
fn last_share(log: &str) -> Option<String> {
    let line = log
        .lines()
        .rfind(|l| l.contains("this worker's share of the group"))?;
    Some(line.split("partitions=").nth(1).unwrap_or("").to_string())
}

/// Per snapshot of `table`, oldest first: the committed offsets per
/// partition.
async fn offsets_history(
    catalog: &HadoopCatalog,
    db: &str,
    table: &str,
) -> Vec<BTreeMap<i32, i64>> {
    let Ok(t) = catalog.load_table(&TableName::new(db, table)).await else {
        return Vec::new();
    };
    let mut snapshots: Vec<_> = t.metadata.snapshots().collect();
    snapshots.sort_by_key(|s| s.sequence_number());
    let id = TableId::new(db, table);
    snapshots
        .iter()
        .filter_map(|s| {
            let json = s
                .summary()
                .additional_properties
                .get("tributary.checkpoint")?;
            let cp: Checkpoint = serde_json::from_str(json).unwrap();
            Some(tributary_core::partitions::committed_offsets(&cp, &id))
        })
        .collect()
}

async fn wait_for_share(worker: &mut SyncProcess, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        worker.assert_running();
        if last_share(&worker.log()).is_some_and(|s| s.contains('[') && !s.trim().is_empty()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} got no partitions in 90 s:\n{}",
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn three_workers_of_a_group_one_killed_and_one_added_commit_every_row_once() {
    three_workers_one_killed_one_added(DevServices::load().apache_kafka()).await;
}

/// The same on tansu, whose group coordinator rebalanced 3-5× more often
/// in these runs.
#[tokio::test]
async fn the_same_group_on_tansu_commits_every_row_once() {
    three_workers_one_killed_one_added(DevServices::load().kafka()).await;
}

async fn three_workers_one_killed_one_added(brokers: String) {
    let mut f = Fixture::new("relay_group").await;
    let (db, tables) = (f.db.clone(), f.tables());
    let prefix = unique_name("relay");
    let producing = f.pipeline(&format!(
        "\n[sink.kafka]\nbrokers = \"{brokers}\"\nprefix = \"{prefix}\"\npartitions = 4\n\
         commit_interval = 0.3\nheartbeat_interval = 0.5\n"
    ));
    let mut producer = SyncProcess::start(&producing, &f.dir.join("producer.log"));
    wait_relayed(&brokers, &prefix, &f, &mut producer).await;

    // Workers leave the group 6 s after they stop heartbeating (the
    // broker's minimum), so a SIGKILLed one's partitions move on soon.
    let warehouse = f.warehouse();
    let worker_file = f.dir.join("worker.toml");
    std::fs::write(
        &worker_file,
        format!(
            "[source.kafka]\nbrokers = \"{brokers}\"\nprefix = \"{prefix}\"\n\
             group = \"{group}\"\ncheckpoint_interval = 0.2\n\
             tables = {{ include = [\"{db}.*\"] }}\n\
             properties = {{ \"session.timeout.ms\" = \"6000\", \"heartbeat.interval.ms\" = \"500\" }}\n{sink}",
            group = unique_name("workers"),
            // Idle partitions record their watermark every second.
            sink = iceberg_sink(&db, &warehouse) + "idle_commit_interval = 1\n",
        ),
    )
    .unwrap();
    let start = |i: usize| SyncProcess::start(&worker_file, &f.dir.join(format!("worker{i}.log")));
    let catalog = HadoopCatalog::new_local(&warehouse).unwrap();

    let (url, written) = (f.url.clone(), tables.clone());
    let writes = tokio::spawn(async move {
        for i in 0..80 {
            write_randomly(url.clone(), written.clone(), 40, 900 + i).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut workers: Vec<SyncProcess> = (0..3).map(start).collect();
    for (i, w) in workers.iter_mut().enumerate() {
        wait_for_share(w, &format!("worker {i}")).await;
    }
    // Mid-stream: worker 1 dies once a has commits; worker 3 joins later.
    let deadline = Instant::now() + Duration::from_secs(60);
    while offsets_history(&catalog, &db, "a").await.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "no commits of a:\n{}",
            workers[0].log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    workers[1].kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut added = start(3);
    wait_for_share(&mut added, "the added worker").await;
    writes.await.unwrap();
    let reader = Reader::Iceberg(&catalog);
    wait_until_equal(&mut f.conn, &reader, &db, &mut workers[0]).await;

    // The watermark passes through the group: each table's snapshot says
    // it is complete up to a time after the last write, though its
    // partitions are idle now and each worker commits only its own.
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for table in ["a", "b"] {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let t = catalog
                .load_table(&TableName::new(&db, table))
                .await
                .unwrap();
            let watermark = t
                .metadata
                .current_snapshot()
                .and_then(|s| {
                    s.summary()
                        .additional_properties
                        .get("tributary.watermark-ms")
                        .cloned()
                })
                .and_then(|w| w.parse::<i64>().ok());
            if watermark.is_some_and(|w| w >= until) {
                break;
            }
            workers[0].assert_running();
            assert!(
                Instant::now() < deadline,
                "{table} not complete up to {until} (watermark {watermark:?}):\n{}",
                workers[0].log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // The survivors and the added worker each read a share at the end;
    // stopped, their background maintenance leaves the files alone.
    let killed = workers.remove(1);
    drop(killed);
    workers.push(added);
    for mut w in workers {
        let log = w.log();
        let count = |what: &str| log.matches(what).count();
        eprintln!(
            "worker: {} rebalances, {} claims refused, last share {:?}",
            count("partitions reassigned"),
            count("by another worker since"),
            last_share(&log)
        );
        w.assert_running();
        assert!(
            last_share(&w.log()).is_some_and(|s| s.contains('[')),
            "{}",
            w.log()
        );
        assert!(w.terminate().success(), "{}", w.log());
    }
    for table in ["a", "b"] {
        // No snapshot moves a partition's committed offset back.
        let history = offsets_history(&catalog, &db, table).await;
        for pair in history.windows(2) {
            for (p, before) in &pair[0] {
                let after = pair[1].get(p);
                assert!(
                    after.is_some_and(|a| a >= before),
                    "{table}: partition {p} went from {before} to {after:?}"
                );
            }
        }
        assert_eq!(
            history.last().unwrap().len(),
            4,
            "{table}: every partition committed"
        );
        // pyiceberg reads the same rows, none twice.
        let t = catalog
            .load_table(&TableName::new(&db, table))
            .await
            .unwrap();
        let out = DevServices::load().run_python(
            "import sys\nfrom pyiceberg.table import StaticTable\n\
             t = StaticTable.from_metadata(sys.argv[1]).scan().to_arrow()\n\
             ids = t.column('id').to_pylist()\n\
             print(len(ids), len(set(ids)))",
            &[&t.metadata_location],
        );
        let expected = source_rows(&mut f.conn, &format!("{db}.{table}"))
            .await
            .len();
        assert_eq!(
            out.trim(),
            format!("{expected} {expected}"),
            "pyiceberg on {table}"
        );
    }
    assert!(producer.terminate().success(), "{}", producer.log());
    f.drop().await;
}
