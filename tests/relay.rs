//! The Kafka relay end to end, as a user runs it: one `tributary sync`
//! reads MariaDB into the relay topics (`[sink.kafka]`), a second reads the
//! topics into Iceberg (`[source.kafka]`). The consumer is SIGKILLed at
//! random points under writes and the Iceberg tables end equal to
//! `SELECT *` (iceberg-rust and pyiceberg read them); DDL, heartbeats and
//! the watermark pass through; a poison message is set aside in the
//! dead-letter topic (or stops the job), and a recreated topic is refused.
//! On Apache Kafka 4 from `dev/services`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tributary_catalog::{HadoopCatalog, TableName};
use tributary_core::TableId;
use tributary_testkit::{DevServices, unique_name};

mod common;
use common::fixture::*;
use common::{SyncProcess, tributary};

/// `[sink.kafka]` of the producing job.
fn relay_sink(brokers: &str, prefix: &str, partitions: i32, schemas: bool) -> String {
    format!(
        "\n[sink.kafka]\nbrokers = \"{brokers}\"\nprefix = \"{prefix}\"\npartitions = {partitions}\n\
         schemas_enable = {schemas}\ncommit_interval = 0.3\nheartbeat_interval = 0.5\n"
    )
}

/// The consuming job: the relay's tables of the fixture's database into
/// Iceberg in `warehouse` (with background maintenance, as sync_cli's).
fn consumer_pipeline(f: &Fixture, name: &str, source: &str, warehouse: &Path) -> PathBuf {
    let text = format!(
        "[source.kafka]\n{source}\ntables = {{ include = [\"{db}.*\"] }}\ncheckpoint_interval = 0.2\n{sink}",
        db = f.db,
        sink = iceberg_sink(&f.db, warehouse),
    );
    let path = f.dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn kafka_source(brokers: &str, prefix: &str) -> String {
    format!("brokers = \"{brokers}\"\nprefix = \"{prefix}\"")
}

/// The offsets of `table`'s last Iceberg commit (None: none yet).
async fn committed_offsets(catalog: &HadoopCatalog, db: &str, table: &str) -> Option<String> {
    let t = catalog.load_table(&TableName::new(db, table)).await.ok()?;
    let cp = tributary_iceberg::committed_checkpoint(&t).unwrap()?;
    let key = tributary_core::Checkpoint::table_key(&TableId::new(db, table), "kafka.offsets");
    cp.properties.get(&key).cloned()
}

/// The table as pyiceberg reads it: `(id, v, s, extra)` per row, `extra`
/// None when the table has no such column.
fn pyiceberg_rows(metadata: &str) -> BTreeMap<i64, serde_json::Value> {
    let out = DevServices::load().run_python(
        r#"
import sys, json
from pyiceberg.table import StaticTable
t = StaticTable.from_metadata(sys.argv[1])
for r in t.scan().to_arrow().to_pylist():
    print(json.dumps(r))
"#,
        &[metadata],
    );
    let mut rows = BTreeMap::new();
    for line in out.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = r["id"].as_i64().unwrap();
        assert!(
            rows.insert(id, r).is_none(),
            "pyiceberg: duplicate key {id}"
        );
    }
    rows
}

/// Every message of `topic` (one partition), with its headers as text.
type Headed = (Option<Vec<u8>>, BTreeMap<String, String>);

fn messages_with_headers(brokers: &str, topic: &str) -> Vec<Headed> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique_name("relay_test"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let timeout = Duration::from_secs(10);
    let (_, high) = consumer.fetch_watermarks(topic, 0, timeout).unwrap();
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&list).unwrap();
    let (mut out, deadline) = (Vec::new(), Instant::now() + Duration::from_secs(30));
    while (out.len() as i64) < high {
        assert!(Instant::now() < deadline, "{topic} not read in time");
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.unwrap();
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        let v = String::from_utf8_lossy(h.value.unwrap_or_default());
                        (h.key.to_string(), v.into_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push((m.payload().map(<[u8]>::to_vec), headers));
    }
    out
}

/// Sends `payload` to `topic`'s partition 0 with `headers`; its offset.
fn send(brokers: &str, topic: &str, payload: &[u8], headers: &[(&str, &str)]) -> i64 {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let mut h = OwnedHeaders::new();
    for (key, value) in headers {
        h = h.insert(Header {
            key,
            value: Some(*value),
        });
    }
    let record = BaseRecord::to(topic)
        .partition(0)
        .key("{\"id\":-1}")
        .payload(payload)
        .headers(h);
    producer.send(record).map_err(|(e, _)| e).unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let (_, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .unwrap();
    high - 1
}

/// Source writes in bursts for a few seconds, so that kills land
/// mid-stream.
async fn write_in_bursts(url: String, tables: [String; 2], bursts: u64, seed: u64) {
    for i in 0..bursts {
        write_randomly(url.clone(), tables.clone(), 40, seed + i).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn relayed_into_iceberg_with_the_consumer_sigkilled_the_tables_equal_the_source() {
    let (brokers, prefix) = (relay_brokers(), unique_name("relay"));
    let (mut f, mut producer) = relayed_fixture(
        "relay",
        &brokers,
        &prefix,
        &relay_sink(&brokers, &prefix, 4, true),
    )
    .await;
    let (db, tables) = (f.db.clone(), f.tables());

    let port = tributary_testkit::free_port();
    let warehouse = f.warehouse();
    let consuming = consumer_pipeline(
        &f,
        "consumer.toml",
        &kafka_source(&brokers, &prefix),
        &warehouse,
    );
    let http = format!("\n[pipeline]\nhttp_listen = \"127.0.0.1:{port}\"\n");
    let text = std::fs::read_to_string(&consuming).unwrap() + &http;
    std::fs::write(&consuming, text).unwrap();
    let catalog = HadoopCatalog::new_local(&warehouse).unwrap();
    let log = f.dir.join("consumer.log");

    // Writes for ~5 s; the consumer is SIGKILLed three times, each at a
    // random moment after a commit of a.
    let writes = tokio::spawn(write_in_bursts(f.url.clone(), tables.clone(), 40, 300));
    let mut consumer = SyncProcess::start(&consuming, &log);
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..3 {
        let before = committed_offsets(&catalog, &db, "a").await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while committed_offsets(&catalog, &db, "a").await == before {
            consumer.assert_running();
            producer.assert_running();
            assert!(
                Instant::now() < deadline,
                "no commit of a in 60 s:\n{}",
                consumer.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        tokio::time::sleep(Duration::from_millis(x % 600)).await;
        consumer.kill();
        consumer = SyncProcess::start(&consuming, &log);
    }
    writes.await.unwrap();
    let reader = Reader::Iceberg(&catalog);
    wait_until_equal(&mut f.conn, &reader, &db, &mut consumer).await;
    assert!(
        consumer.log().contains("resuming"),
        "the restarted consumer resumed from the table's offsets:\n{}",
        consumer.log()
    );

    // DDL passes through: a's next rows carry the new column.
    add_extra_column(&mut f.conn, &db).await;
    wait_until_tables_equal(&mut f.conn, &reader, &db, &["a"], &mut consumer).await;
    // pyiceberg reads the same rows, and the new column's value.
    let a = catalog.load_table(&TableName::new(&db, "a")).await.unwrap();
    let rows = pyiceberg_rows(&a.metadata_location);
    let expected = source_rows(&mut f.conn, &tables[0]).await;
    let read: Rows = rows
        .iter()
        .map(|(id, r)| {
            let v = r["v"].as_i64().map(|v| v as i32);
            (*id as i32, (v, r["s"].as_str().map(str::to_string)))
        })
        .collect();
    assert!(read == expected, "pyiceberg differs from SELECT * in a");
    assert_eq!(rows[&100001]["extra"], 7, "{:?}", rows[&100001]);

    // A TRUNCATE passes through: a marker on each of the 4 partitions,
    // applied once every one is reached; the rows written after it stay.
    f.conn
        .query_drop(format!("TRUNCATE TABLE {db}.a"))
        .await
        .unwrap();
    let after: Vec<String> = (0..40)
        .map(|i| format!("({i}, {i}, 'after-truncate')"))
        .collect();
    for sql in [
        format!("INSERT INTO {db}.a (id, v, s) VALUES {}", after.join(",")),
        format!("UPDATE {db}.a SET v = v + 100 WHERE id % 3 = 0"),
        format!("DELETE FROM {db}.a WHERE id % 5 = 0"),
    ] {
        f.conn.query_drop(sql).await.unwrap();
    }
    wait_until_tables_equal(&mut f.conn, &reader, &db, &["a"], &mut consumer).await;
    assert_eq!(source_rows(&mut f.conn, &tables[0]).await.len(), 32);

    // The producer's heartbeats reach their topic, and the watermark
    // passes through the relay: a is complete up to a time after the last
    // write.
    let heartbeats = kafka_messages(&brokers, &format!("__debezium-heartbeat.{prefix}"))
        .expect("the heartbeat topic");
    assert_eq!(heartbeats[0].0["payload"]["serverName"], prefix.as_str());
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let ready = format!("/v1/tables/{}/ready?until={until}", tables[0]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_get(port, &ready)
        .await
        .is_none_or(|(code, _)| code != 200)
    {
        consumer.assert_running();
        assert!(
            Instant::now() < deadline,
            "a never complete up to {until} through the relay:\n{}",
            consumer.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // `status` shows where each table's reading stands: its offsets.
    let (ok, out) = tributary(&["status", "--config", consuming.to_str().unwrap()]);
    assert!(ok.success(), "{out}");
    assert!(
        out.contains(&format!("{db}.a -> ")) && out.contains("offsets 0@"),
        "{out}"
    );
    assert!(consumer.terminate().success(), "{}", consumer.log());
    assert!(producer.terminate().success(), "{}", producer.log());
    f.drop().await;
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_or_stops_the_job_and_a_recreated_topic_is_refused() {
    let (brokers, prefix) = (relay_brokers(), unique_name("relay"));
    let (mut f, mut producer) = relayed_fixture(
        "relay_bad",
        &brokers,
        &prefix,
        &relay_sink(&brokers, &prefix, 1, false),
    )
    .await;
    let (db, tables) = (f.db.clone(), f.tables());

    // Two poison messages in a's topic: one without the schema header (a
    // foreign producer's), one with a's schema header that is not JSON.
    let topic = format!("{prefix}.{db}.a");
    let schema_header = messages_with_headers(&brokers, &topic)[0].1["tributary.schema"].clone();
    let no_header = send(&brokers, &topic, br#"{"op":"c"}"#, &[]);
    let not_json = send(
        &brokers,
        &topic,
        b"\xff not json",
        &[("tributary.schema", &schema_header)],
    );
    write_randomly(f.url.clone(), tables.clone(), 200, 401).await;

    // Dead-lettered (the default): the job goes on to equal the source.
    let warehouse = f.warehouse();
    let source = kafka_source(&brokers, &prefix);
    let consuming = consumer_pipeline(&f, "consumer.toml", &source, &warehouse);
    let port = tributary_testkit::free_port();
    let text = std::fs::read_to_string(&consuming).unwrap()
        + &format!("\n[pipeline]\nhttp_listen = \"127.0.0.1:{port}\"\n");
    std::fs::write(&consuming, text).unwrap();
    let catalog = HadoopCatalog::new_local(&warehouse).unwrap();
    let mut consumer = SyncProcess::start(&consuming, &f.dir.join("consumer.log"));
    wait_until_equal(&mut f.conn, &Reader::Iceberg(&catalog), &db, &mut consumer).await;
    let letters = messages_with_headers(&brokers, &format!("{prefix}.tributary-dead-letters"));
    assert_eq!(letters.len(), 2, "{letters:?}");
    for ((payload, headers), (offset, cause)) in letters.iter().zip([
        (no_header, "no tributary.schema header"),
        (not_json, "not JSON"),
    ]) {
        assert!(headers["tributary.error"].contains(cause), "{headers:?}");
        assert_eq!(headers["tributary.topic"], topic);
        assert_eq!(headers["tributary.partition"], "0");
        assert_eq!(headers["tributary.offset"], offset.to_string());
        assert!(payload.is_some(), "the message itself is kept");
    }
    assert_eq!(letters[1].0.as_deref(), Some(&b"\xff not json"[..]));
    let (_, metrics) = http_get(port, "/metrics").await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "tributary_dead_letters_total 2"),
        "{metrics}"
    );
    assert!(consumer.terminate().success(), "{}", consumer.log());

    // on_bad_message = "stop": the job ends at the first one, naming it
    // and the fix.
    let stopping = consumer_pipeline(
        &f,
        "stopping.toml",
        &format!("{source}\non_bad_message = \"stop\""),
        &f.dir.join("warehouse2"),
    );
    let mut stopped = SyncProcess::start(&stopping, &f.dir.join("stopping.log"));
    assert!(!stopped.wait_exit(Duration::from_secs(60)).await.success());
    let text = stopped.log();
    assert!(text.contains(&format!("{topic}/0@{no_header}")), "{text}");
    assert!(
        text.contains("on_bad_message = \\\"dead_letter\\\"")
            || text.contains("on_bad_message = \"dead_letter\""),
        "{text}"
    );

    // The topic recreated under the consumer: its committed offsets are
    // past the new topic's end, and the job refuses to start.
    assert!(producer.terminate().success(), "{}", producer.log());
    recreate_topic(&brokers, &topic).await;
    let mut refused = SyncProcess::start(&consuming, &f.dir.join("refused.log"));
    assert!(!refused.wait_exit(Duration::from_secs(60)).await.success());
    let text = refused.log();
    assert!(text.contains("the topic was recreated"), "{text}");
    assert!(
        text.contains("on_position_lost = \\\"resnapshot\\\"")
            || text.contains("on_position_lost = \"resnapshot\""),
        "{text}"
    );
    assert!(!text.contains("binlog_expire_logs_seconds"), "{text}");
    // `check` names the relayed tables it would read.
    let (ok, out) = tributary(&["check", consuming.to_str().unwrap()]);
    assert!(ok.success(), "{out}");
    assert!(
        out.contains(&format!("relayed tables: {db}.a, {db}.b")),
        "{out}"
    );
    f.drop().await;
}

/// Deletes `topic` and creates it again empty, with one partition.
async fn recreate_topic(brokers: &str, topic: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<_> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let options = AdminOptions::new();
    admin.delete_topics(&[topic], &options).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let new = NewTopic::new(topic, 1, TopicReplication::Fixed(1));
        let result = admin.create_topics(&[new], &options).await.unwrap();
        match &result[0] {
            Ok(_) => return,
            // The deletion is still under way.
            Err((_, e)) => assert!(Instant::now() < deadline, "{topic} not created again: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The broker (one of the test's own) SIGKILLed mid-stream and restarted
/// after an outage of a few seconds: both jobs ride it out — the
/// producer's deliveries wait or its run replays from its checkpoint, the
/// consumer reconnects or restarts from the table's offsets — and the
/// Iceberg tables end equal to the source.
#[tokio::test]
async fn a_broker_sigkilled_mid_stream_and_restarted_loses_nothing() {
    let mut f = Fixture::new("relay_brk").await;
    let (db, tables) = (f.db.clone(), f.tables());
    let mut broker = tributary_testkit::KafkaBroker::start(&f.dir.join("broker"));
    let brokers = broker.bootstrap_servers();
    let prefix = unique_name("relay");
    let producing = f.pipeline(&relay_sink(&brokers, &prefix, 2, false));
    let mut producer = SyncProcess::start(&producing, &f.dir.join("producer.log"));
    wait_relayed(&brokers, &prefix, &f, &mut producer).await;
    let warehouse = f.warehouse();
    let source = kafka_source(&brokers, &prefix);
    let consuming = consumer_pipeline(&f, "consumer.toml", &source, &warehouse);
    let catalog = HadoopCatalog::new_local(&warehouse).unwrap();
    let mut consumer = SyncProcess::start(&consuming, &f.dir.join("consumer.log"));
    let writes = tokio::spawn(write_in_bursts(f.url.clone(), tables.clone(), 40, 700));
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed_offsets(&catalog, &db, "a").await.is_none() {
        consumer.assert_running();
        assert!(Instant::now() < deadline, "{}", consumer.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    broker.kill();
    // The outage: writes go on at the source meanwhile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    producer.assert_running();
    consumer.assert_running();
    broker.restart();
    writes.await.unwrap();
    wait_until_equal(&mut f.conn, &Reader::Iceberg(&catalog), &db, &mut consumer).await;
    producer.assert_running();
    assert!(consumer.terminate().success(), "{}", consumer.log());
    assert!(producer.terminate().success(), "{}", producer.log());
    drop(broker);
    f.drop().await;
}

/// The relay consumer into ClickHouse: its offsets go in the sink's own
/// checkpoint row (`_tributary_checkpoints`), and a SIGKILLed consumer
/// resumes there; the `_live` views end equal to `SELECT *`.
#[tokio::test]
async fn relayed_into_clickhouse_with_the_consumer_sigkilled_the_tables_equal_the_source() {
    let ch = DevServices::load().clickhouse();
    let (brokers, prefix) = (relay_brokers(), unique_name("relay"));
    let (mut f, mut producer) = relayed_fixture(
        "relay_ch",
        &brokers,
        &prefix,
        &relay_sink(&brokers, &prefix, 4, true),
    )
    .await;
    let (db, tables) = (f.db.clone(), f.tables());
    let urls: Vec<String> = ch.urls.iter().map(|u| format!("\"{u}\"")).collect();
    let consuming = f.dir.join("consumer.toml");
    std::fs::write(
        &consuming,
        format!(
            "[source.kafka]\n{}\ntables = {{ include = [\"{db}.*\"] }}\ncheckpoint_interval = 0.2\n\n\
             [sink.clickhouse]\nurls = [{}]\ncluster = \"{}\"\nmode = \"local\"\n\
             database = \"{db}\"\nflush_interval = 0.3\n",
            kafka_source(&brokers, &prefix),
            urls.join(", "),
            ch.cluster
        ),
    )
    .unwrap();
    let client = clickhouse::Client::default()
        .with_url(&ch.urls[0])
        .with_validation(false);
    let checkpoint_of_a =
        format!("SELECT checkpoint FROM {db}._tributary_checkpoints FINAL WHERE table = 'a'");
    let offsets_of_a = async || -> Option<String> {
        let rows: Vec<String> = client
            .query(&checkpoint_of_a)
            .fetch_all()
            .await
            .unwrap_or_default();
        rows.into_iter().find(|c| c.contains("kafka.offsets"))
    };

    let writes = tokio::spawn(write_in_bursts(f.url.clone(), tables.clone(), 30, 700));
    let log = f.dir.join("consumer.log");
    let mut consumer = SyncProcess::start(&consuming, &log);
    for pause in [150, 420] {
        let before = offsets_of_a().await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while offsets_of_a().await == before {
            consumer.assert_running();
            assert!(
                Instant::now() < deadline,
                "no checkpoint of a in 60 s:\n{}",
                consumer.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(pause)).await;
        consumer.kill();
        consumer = SyncProcess::start(&consuming, &log);
    }
    writes.await.unwrap();
    let reader = Reader::ClickHouse(ch.urls[0].clone());
    wait_until_equal(&mut f.conn, &reader, &db, &mut consumer).await;
    assert!(
        consumer.log().contains("resuming"),
        "the restarted consumer resumed from the checkpoint row:\n{}",
        consumer.log()
    );
    assert!(consumer.terminate().success(), "{}", consumer.log());
    assert!(producer.terminate().success(), "{}", producer.log());
    f.drop().await;
}
