//! Relay scale-out: ROWS rows (default 300 000) produced into one table's
//! topic of PARTITIONS partitions (default 6), then read into Iceberg by 1,
//! 2 and 3 `tributary sync` worker processes of one consumer group
//! (`[source.kafka] group`, release build), each time into a fresh
//! warehouse with a fresh group. Reported per worker count: rows/s from
//! the workers' start until the table's committed offsets reach the topic's
//! end, and from its first commit on (without process start and group
//! join), against the same rows read by one rdkafka consumer raw in the same
//! run. The broker and the workers share this machine's cores.
//!
//! Run: `dev/services up apache_kafka && cargo bench -p tributary --bench relay_workers`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tributary_catalog::{HadoopCatalog, TableName};
use tributary_core::{ChangeBatch, ChangeEvent, Checkpoint, Sink};
use tributary_kafka::{KafkaSink, KafkaSinkConfig};
use tributary_testkit::kv_workload::{kv_insert, kv_schema};
use tributary_testkit::{DevServices, dev_dir, unique_name};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The topic's end offset per partition.
fn ends(brokers: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    (0..partitions)
        .map(|p| {
            let (_, high) = c
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap();
            (p, high)
        })
        .collect()
}

async fn committed(catalog: &HadoopCatalog, db: &str) -> Option<BTreeMap<i32, i64>> {
    let t = catalog.load_table(&TableName::new(db, "kv")).await.ok()?;
    let cp = tributary_iceberg::committed_checkpoint(&t).ok()??;
    let table = tributary_core::TableId::new(db, "kv");
    Some(tributary_core::partitions::committed_offsets(&cp, &table))
}

/// Reads the topic into a fresh warehouse with `workers` processes;
/// (seconds to the end, seconds from the first commit to the end).
async fn run(
    workers: usize,
    brokers: &str,
    prefix: &str,
    db: &str,
    end: &BTreeMap<i32, i64>,
) -> (f64, f64) {
    let dir = dev_dir().join("tmp").join(unique_name("relay_workers"));
    std::fs::create_dir_all(&dir).unwrap();
    let warehouse = dir.join("warehouse");
    let config = dir.join("worker.toml");
    std::fs::write(
        &config,
        format!(
            "[source.kafka]\nbrokers = \"{brokers}\"\nprefix = \"{prefix}\"\ngroup = \"{group}\"\n\
             tables = {{ include = [\"{db}.kv\"] }}\n\n[sink.iceberg]\ncommit_interval = 1\n\
             properties = {{ warehouse = \"{warehouse}\" }}\n",
            group = unique_name("bench"),
            warehouse = warehouse.display()
        ),
    )
    .unwrap();
    let catalog = HadoopCatalog::new_local(&warehouse).unwrap();
    let start = Instant::now();
    let mut children: Vec<Child> = (0..workers)
        .map(|i| spawn(&config, &dir.join(format!("worker{i}.log"))))
        .collect();
    let mut first = None;
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        if let Some(c) = committed(&catalog, db).await {
            first.get_or_insert_with(Instant::now);
            if end.iter().all(|(p, e)| c.get(p).is_some_and(|o| o >= e)) {
                break;
            }
        }
        for c in &mut children {
            assert!(
                c.try_wait().unwrap().is_none(),
                "a worker exited: see {}",
                dir.display()
            );
        }
        assert!(
            Instant::now() < deadline,
            "not done in 900 s: see {}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done = Instant::now();
    for c in &mut children {
        c.kill().ok();
        c.wait().ok();
    }
    // Where the time went: runs restarted by rebalances, commits.
    let (mut restarts, mut commits) = (0, 0);
    for i in 0..workers {
        let log = std::fs::read_to_string(dir.join(format!("worker{i}.log"))).unwrap_or_default();
        restarts += log.matches("partitions reassigned").count();
        commits += log.matches(" committed").count();
    }
    println!(
        "  {workers} worker(s): {restarts} runs restarted by rebalances, {commits} commit rounds"
    );
    std::fs::remove_dir_all(&dir).ok();
    let first = first.expect("committed");
    ((done - start).as_secs_f64(), (done - first).as_secs_f64())
}

fn spawn(config: &Path, log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["sync", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

#[tokio::main]
async fn main() {
    let rows = env_or("ROWS", 300_000);
    let partitions = env_or("PARTITIONS", 6) as i32;
    let brokers = DevServices::load().apache_kafka();
    let prefix = unique_name("bench");
    let db = unique_name("bench");
    let schema = kv_schema(&db, "kv");
    let mut config = KafkaSinkConfig::new(&brokers, &prefix);
    config.partitions = partitions;
    config.schemas_enable = false;
    let mut sink = KafkaSink::open(config.clone(), &schema).await.unwrap();
    for chunk in (0..rows).collect::<Vec<_>>().chunks(10_000) {
        let events: Vec<ChangeEvent> = chunk.iter().map(|&i| kv_insert(&schema, i)).collect();
        sink.write(&ChangeBatch::from_events(schema.clone(), &events).unwrap())
            .await
            .unwrap();
        let cp = Checkpoint {
            position: events.last().unwrap().position.clone(),
            ..Default::default()
        };
        sink.commit(&cp).await.unwrap();
    }
    let topic = config.topic(&schema);
    let end = ends(&brokers, &topic, partitions);

    // The same messages read raw by one rdkafka consumer.
    let (b, t) = (brokers.clone(), topic.clone());
    let raw = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &b)
            .set("group.id", unique_name("bench_raw"))
            .create()
            .unwrap();
        let mut list = TopicPartitionList::new();
        for p in 0..partitions {
            list.add_partition_offset(&t, p, Offset::Beginning).unwrap();
        }
        let start = Instant::now();
        consumer.assign(&list).unwrap();
        let mut n = 0;
        while n < rows {
            if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                assert!(m.unwrap().payload().is_some());
                n += 1;
            }
        }
        start.elapsed().as_secs_f64()
    })
    .await
    .unwrap();

    println!(
        "relay scale-out bench: {rows} rows, {partitions} partitions, into Iceberg (local warehouse)"
    );
    println!(
        "rdkafka raw read, 1 consumer: {:>9.0} rows/s",
        rows as f64 / raw
    );
    let mut one = None;
    for workers in 1..=3 {
        let (total, steady) = run(workers, &brokers, &prefix, &db, &end).await;
        let rate = rows as f64 / total;
        let base = *one.get_or_insert(rate);
        println!(
            "{workers} worker(s): {:>9.0} rows/s start to end ({total:.1} s; {:.2}x of 1 worker), \
             {:>9.0} rows/s from the first commit ({steady:.1} s)",
            rate,
            rate / base,
            rows as f64 / steady
        );
    }
}
