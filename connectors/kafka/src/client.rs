//! What the producer and the consumer share about talking to Kafka: the
//! client settings, the one mapping of rdkafka's errors, topic creation and
//! reading a (compacted) topic from its beginning to its end.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tributary_core::{Error, ErrorKind, Result};

/// How long metadata, watermark and whole-topic reads may take.
pub(crate) const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

/// `bootstrap.servers` and the user's extra librdkafka properties.
pub(crate) fn client_config(brokers: &str, properties: &BTreeMap<String, String>) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (k, v) in properties {
        c.set(k, v);
    }
    c
}

/// rdkafka's errors: the broker is unreachable or refused (transient: the
/// run starts again from the last commit).
pub(crate) fn kafka_err(what: &str, e: rdkafka::error::KafkaError) -> Error {
    Error::new(ErrorKind::Connection, format!("Kafka: {what}: {e}"))
}

/// Creates `topic` unless it exists.
pub(crate) async fn ensure_topic(
    client: &ClientConfig,
    topic: &str,
    partitions: i32,
    compact: bool,
) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        client.create().map_err(|e| kafka_err("admin client", e))?;
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    if compact {
        new = new.set("cleanup.policy", "compact");
    }
    let options = AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT));
    let results = admin
        .create_topics([&new], &options)
        .await
        .map_err(|e| kafka_err(&format!("creating {topic}"), e))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(Error::new(
                    ErrorKind::Connection,
                    format!("Kafka: creating topic {t}: {code}"),
                ));
            }
        }
    }
    Ok(())
}

/// Each partition of `topic` with its low and high watermarks (empty when
/// the topic does not exist). Blocking: call from a blocking task.
pub(crate) fn watermarks(consumer: &BaseConsumer, topic: &str) -> Result<Vec<(i32, i64, i64)>> {
    let metadata = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .map_err(|e| kafka_err("metadata", e))?;
    let mut out = Vec::new();
    for t in metadata.topics() {
        if t.error().is_some() {
            continue; // unknown topic
        }
        for p in t.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), METADATA_TIMEOUT)
                .map_err(|e| kafka_err(&format!("watermarks of {topic}"), e))?;
            out.push((p.id(), low, high));
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Reads every message of `topic` from its beginning up to the end it has
/// now, handing each to `each`. Blocking: call from a blocking task.
pub(crate) fn read_to_end(
    client: &ClientConfig,
    topic: &str,
    mut each: impl FnMut(&BorrowedMessage<'_>) -> Result<()>,
) -> Result<()> {
    let consumer: BaseConsumer = client
        .clone()
        .set("group.id", "tributary-topic-reader")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| kafka_err("consumer", e))?;
    let mut ends = BTreeMap::new();
    let mut list = TopicPartitionList::new();
    for (p, low, high) in watermarks(&consumer, topic)? {
        if high > low {
            ends.insert(p, high);
            list.add_partition_offset(topic, p, Offset::Beginning)
                .map_err(|e| kafka_err("assign", e))?;
        }
    }
    if ends.is_empty() {
        return Ok(());
    }
    consumer.assign(&list).map_err(|e| kafka_err("assign", e))?;
    let deadline = std::time::Instant::now() + METADATA_TIMEOUT;
    while !ends.is_empty() {
        if std::time::Instant::now() > deadline {
            return Err(Error::new(
                ErrorKind::Timeout,
                format!("Kafka: reading {topic} took longer than {METADATA_TIMEOUT:?}"),
            ));
        }
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.map_err(|e| kafka_err(&format!("reading {topic}"), e))?;
        use rdkafka::Message;
        each(&m)?;
        if ends
            .get(&m.partition())
            .is_some_and(|&e| m.offset() + 1 >= e)
        {
            ends.remove(&m.partition());
        }
    }
    Ok(())
}
