//! The relay's producer against a real Apache Kafka 4 (`dev/services up
//! apache_kafka`), read back by rdkafka's own consumer: random changes with
//! key changes and deletes on 4 partitions; the topic replayed per key
//! rebuilds the model, each key lives on one partition, every delete has
//! its tombstone, and a reopened sink finds its checkpoint and sends
//! nothing it already committed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tributary_core::{ChangeBatch, Checkpoint, Sink};
use tributary_kafka::{KafkaSink, KafkaSinkConfig, committed_checkpoint, produced_offsets};
use tributary_testkit::kv_workload::{KvModel, Rng, kv_position, kv_schema, random_kv_events};
use tributary_testkit::{DevServices, unique_name};

/// Every message of `topic` (key, value), per partition in offset order.
fn read_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
) -> BTreeMap<i32, Vec<(String, Option<serde_json::Value>)>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique_name("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap();
        if high > 0 {
            ends.insert(p, high);
            list.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
    }
    consumer.assign(&list).unwrap();
    let mut out: BTreeMap<i32, Vec<_>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ends.is_empty() {
        assert!(Instant::now() < deadline, "topic {topic} not read in time");
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.unwrap();
        let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
        let value = m.payload().map(|p| serde_json::from_slice(p).unwrap());
        out.entry(m.partition()).or_default().push((key, value));
        if ends
            .get(&m.partition())
            .is_some_and(|&e| m.offset() + 1 >= e)
        {
            ends.remove(&m.partition());
        }
    }
    out
}

#[tokio::test]
async fn changes_land_keyed_ordered_and_once_and_the_checkpoint_follows_the_deliveries() {
    let brokers = DevServices::load()
        .try_apache_kafka()
        .unwrap_or_else(|e| panic!("{e}"));
    let prefix = unique_name("relay");
    let schema = kv_schema("shop", "kv");
    let mut config = KafkaSinkConfig::new(&brokers, &prefix);
    config.partitions = 4;
    config.schemas_enable = false;
    let mut sink = KafkaSink::open(config.clone(), &schema).await.unwrap();
    assert_eq!(sink.committed().await.unwrap(), None);
    let (mut rng, mut model, mut offset) = (Rng(17), KvModel::new(), 0u64);
    let mut last = None;
    for _ in 0..10 {
        let events = random_kv_events(&schema, &mut rng, &mut model, &mut offset, 0..40, 30);
        let batch = ChangeBatch::from_events(schema.clone(), &events).unwrap();
        sink.write(&batch).await.unwrap();
        let cp = Checkpoint {
            position: kv_position(offset),
            ..Default::default()
        };
        sink.commit(&cp).await.unwrap();
        last = Some((batch, cp));
    }
    let (batch, cp) = last.unwrap();
    let topic = config.topic(&schema);
    let before = read_topic(&brokers, &topic, 4);

    // Reopened, the sink finds its checkpoint, and a replay of the last
    // round sends nothing again.
    drop(sink);
    // Its checkpoint is the source's, plus the offsets it produced up to:
    // each partition's end, which the relay consumer's watermark follows.
    let mut again = KafkaSink::open(config.clone(), &schema).await.unwrap();
    let committed = again.committed().await.unwrap().unwrap();
    assert_eq!(committed.position, cp.position);
    let ends: BTreeMap<i32, i64> = before.iter().map(|(p, m)| (*p, m.len() as i64)).collect();
    assert_eq!(produced_offsets(&committed, &schema.table), ends);
    assert_eq!(
        committed_checkpoint(&config, "shop.kv").await.unwrap(),
        Some(committed.clone())
    );
    again.write(&batch).await.unwrap();
    again.commit(&cp).await.unwrap();
    let after = read_topic(&brokers, &topic, 4);
    assert_eq!(after, before, "a replay of committed changes sends nothing");

    // Per key: one partition, and replayed in offset order the messages
    // rebuild the model; each delete is followed by its tombstone.
    let mut home: BTreeMap<String, i32> = BTreeMap::new();
    let mut rebuilt = KvModel::new();
    for (p, messages) in &after {
        for (i, (key, value)) in messages.iter().enumerate() {
            assert_eq!(
                *home.entry(key.clone()).or_insert(*p),
                *p,
                "{key} on two partitions"
            );
            let id: i32 = serde_json::from_str::<serde_json::Value>(key).unwrap()["id"]
                .as_i64()
                .unwrap() as i32;
            match value {
                None => assert!(!rebuilt.contains_key(&id), "tombstone of a live key {key}"),
                Some(v) => match v["op"].as_str().unwrap() {
                    "d" => {
                        assert_eq!(v["before"]["id"], id);
                        rebuilt.remove(&id);
                        assert_eq!(
                            messages.get(i + 1).map(|m| (&m.0, m.1.is_none())),
                            Some((key, true)),
                            "a tombstone follows the delete of {key}"
                        );
                    }
                    "c" | "u" | "r" => {
                        let a = &v["after"];
                        assert_eq!(a["id"], id);
                        rebuilt.insert(
                            id,
                            (
                                a["v"].as_i64().map(|x| x as i32),
                                a["s"].as_str().map(str::to_string),
                            ),
                        );
                    }
                    other => panic!("op {other}"),
                },
            }
        }
    }
    assert_eq!(rebuilt, model);
    assert!(
        after.len() > 1,
        "keys spread over the partitions: {:?}",
        after.keys()
    );
}
