//! Relay throughput against rdkafka itself, measured in the same run on the
//! dev Apache Kafka (release build):
//! - produce: `KafkaSink` writing ROWS changes (Debezium envelopes keyed by
//!   primary key, idempotent, acks=all) and committing, vs an rdkafka
//!   `FutureProducer` with the same settings sending the same bytes
//!   already encoded;
//! - consume: the relay consumer (`[source.kafka]`) turning the topic back
//!   into change batches, vs an rdkafka `BaseConsumer` and an async
//!   `StreamConsumer` (what the source reads with) reading the same
//!   messages raw; and how long the source takes to open.
//!
//! One worker; `benches/relay_workers.rs` measures 1, 2 and 3 workers of a group.
//! Run: `dev/services up apache_kafka && cargo bench -p tributary-kafka --bench relay`.
//! ROWS (default 200_000) sets the row count, PARTITIONS (default 4) the
//! topic's partitions.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use tributary_core::{ChangeBatch, ChangeEvent, Checkpoint, Op, Sink, SourceFactory, SourceRecord};
use tributary_kafka::{
    EnvelopeConfig, KafkaSink, KafkaSinkConfig, KafkaSourceConfig, KafkaSourceFactory, SourceInfo,
    decode_value, encode_key, encode_value,
};
use tributary_testkit::kv_workload::{kv_insert, kv_schema};
use tributary_testkit::{DevServices, unique_name};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rate(rows: usize, elapsed: Duration) -> f64 {
    rows as f64 / elapsed.as_secs_f64()
}

#[tokio::main]
async fn main() {
    let rows = env_or("ROWS", 200_000);
    let partitions = env_or("PARTITIONS", 4) as i32;
    let brokers = DevServices::load().apache_kafka();
    let prefix = unique_name("bench");
    let schema = kv_schema("bench", "kv");
    let mut config = KafkaSinkConfig::new(&brokers, &prefix);
    config.partitions = partitions;
    config.schemas_enable = false;
    let events: Vec<ChangeEvent> = (0..rows).map(|i| kv_insert(&schema, i)).collect();
    let batches: Vec<ChangeBatch> = events
        .chunks(10_000)
        .map(|c| ChangeBatch::from_events(schema.clone(), c).unwrap())
        .collect();

    // Produce through the sink: write, then one commit per batch (each
    // waits for every delivery report).
    let mut sink = KafkaSink::open(config.clone(), &schema).await.unwrap();
    let start = Instant::now();
    for (b, chunk) in batches.iter().zip(events.chunks(10_000)) {
        sink.write(b).await.unwrap();
        let cp = Checkpoint {
            position: chunk.last().unwrap().position.clone(),
            ..Default::default()
        };
        sink.commit(&cp).await.unwrap();
    }
    let produce = start.elapsed();

    // The same bytes through rdkafka alone, to a topic of its own.
    let env = EnvelopeConfig {
        prefix: prefix.clone(),
        schemas_enable: false,
        decimal_mode: Default::default(),
    };
    let start = Instant::now();
    let encoded: Vec<(Vec<u8>, Vec<u8>)> = events
        .iter()
        .map(|e| {
            let after = e.after.as_deref().unwrap();
            let key = encode_key(&env, &schema, after).unwrap();
            let value = encode_value(
                &env,
                &schema,
                Op::Insert,
                None,
                Some(after),
                &SourceInfo::default(),
                0,
            )
            .unwrap();
            (
                serde_json::to_vec(&key).unwrap(),
                serde_json::to_vec(&value).unwrap(),
            )
        })
        .collect();
    let encode = start.elapsed();
    // Where the consumer's time goes: decoding alone.
    let start = Instant::now();
    for (_, v) in &encoded {
        decode_value(&schema, false, Default::default(), v).unwrap();
    }
    let decode = start.elapsed();
    let raw_topic = format!("{prefix}.raw");
    let admin: rdkafka::admin::AdminClient<_> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let new = rdkafka::admin::NewTopic::new(
        &raw_topic,
        partitions,
        rdkafka::admin::TopicReplication::Fixed(1),
    );
    admin
        .create_topics(&[new], &rdkafka::admin::AdminOptions::new())
        .await
        .unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let start = Instant::now();
    for chunk in encoded.chunks(10_000) {
        let deliveries: Vec<_> = chunk
            .iter()
            .map(|(k, v)| {
                producer
                    .send_result(FutureRecord::to(&raw_topic).key(k).payload(v))
                    .map_err(|(e, _)| e)
                    .unwrap()
            })
            .collect();
        for d in deliveries {
            d.await.unwrap().map_err(|(e, _)| e).unwrap();
        }
    }
    let raw_produce = start.elapsed();

    // Consume through the relay consumer until every row is handed out.
    let mut source_config = KafkaSourceConfig::new(&brokers, &prefix);
    source_config.checkpoint_interval = Duration::from_millis(200);
    let factory = KafkaSourceFactory::new(source_config).unwrap();
    let start = Instant::now();
    let mut source = factory.open(None).await.unwrap();
    let opened = start.elapsed();
    let mut seen = 0;
    while seen < rows {
        if let Some(SourceRecord::Changes(b)) = source.next().await.unwrap() {
            seen += b.len();
        }
    }
    let consume = start.elapsed();

    // The raw messages of the sink's topic, read by rdkafka alone.
    let topic = config.topic(&schema);
    let (stream_brokers, stream_topic) = (brokers.clone(), topic.clone());
    let raw_consume = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", unique_name("bench_raw"))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut list = TopicPartitionList::new();
        for p in 0..partitions {
            list.add_partition_offset(&topic, p, Offset::Beginning)
                .unwrap();
        }
        let start = Instant::now();
        consumer.assign(&list).unwrap();
        let (mut n, mut bytes) = (0, 0usize);
        while n < rows {
            if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                bytes += m.unwrap().payload().map_or(0, <[u8]>::len);
                n += 1;
            }
        }
        assert!(bytes > 0);
        start.elapsed()
    })
    .await
    .unwrap();

    // The same through rdkafka's async StreamConsumer (what the relay
    // source reads with), raw.
    let stream_consume = {
        use rdkafka::consumer::StreamConsumer;
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &stream_brokers)
            .set("group.id", unique_name("bench_stream"))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut list = TopicPartitionList::new();
        for p in 0..partitions {
            list.add_partition_offset(&stream_topic, p, Offset::Beginning)
                .unwrap();
        }
        let start = Instant::now();
        consumer.assign(&list).unwrap();
        let mut n = 0;
        while n < rows {
            let m = consumer.recv().await.unwrap();
            assert!(m.payload().is_some());
            n += 1;
        }
        start.elapsed()
    };

    println!("relay bench: {rows} rows, {partitions} partitions, 1 worker");
    println!(
        "produce  KafkaSink    {:>10.0} rows/s   rdkafka (pre-encoded) {:>10.0} rows/s   ratio {:.2}",
        rate(rows, produce),
        rate(rows, raw_produce),
        raw_produce.as_secs_f64() / produce.as_secs_f64()
    );
    println!(
        "consume  relay source {:>10.0} rows/s   rdkafka (raw)         {:>10.0} rows/s   ratio {:.2}",
        rate(rows, consume),
        rate(rows, raw_consume),
        raw_consume.as_secs_f64() / consume.as_secs_f64()
    );
    println!(
        "consume  rdkafka StreamConsumer (raw, async) {:>10.0} rows/s",
        rate(rows, stream_consume)
    );
    println!(
        "  of the relay source's time: {:.2} s opening (registry, watermarks, topics), {:.2} s reading",
        opened.as_secs_f64(),
        (consume - opened).as_secs_f64()
    );
    println!(
        "on one core: encoding alone {:>10.0} rows/s, decoding alone {:>10.0} rows/s",
        rate(rows, encode),
        rate(rows, decode)
    );
}
