//! The relay's producer: a sink writing each table's changes to its topic
//! `<prefix>.<db>.<table>` as Debezium envelopes keyed by primary key.
//!
//! - librdkafka's `murmur2_random` partitioner (a key lands where a Java
//!   producer puts it), `enable.idempotence=true`, `acks=all` (its defaults
//!   are CRC32 and off, and retries could then reorder a key's changes).
//! - A delete is followed by a tombstone (configurable); an update that
//!   changes the key is a delete (+ tombstone) of the old key and a create
//!   of the new one, as Debezium writes it.
//! - A commit waits for every delivery report of what was written, then
//!   records the checkpoint in the compacted topic
//!   `<prefix>.tributary-checkpoints` (key: the table). So a position is
//!   only ever recorded after everything before it is in Kafka; a producer
//!   killed before that replays from the previous checkpoint (duplicates,
//!   never a gap — consumers absorb them by key and source position).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use std::collections::HashSet;

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use tributary_core::{
    ChangeBatch, Checkpoint, Error, ErrorKind, Image, Op, Prepared, Result, SchemaChange, Sink,
    SourcePosition, TableId, TableSchema,
};

use crate::client::{client_config, ensure_topic, kafka_err, read_to_end, watermarks};
use crate::envelope::{
    DecimalMode, EnvelopeConfig, SourceInfo, encode_key, encode_truncate, encode_value,
};
use crate::schemas::{RegisteredSchema, SCHEMA_HEADER, schema_id, schema_topic};

/// `[sink.kafka]`-to-be: where and how the relay writes.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// `host:port,…` of the brokers.
    pub brokers: String,
    /// Topic prefix (Debezium's `topic.prefix`): topics are
    /// `<prefix>.<db>.<table>`.
    pub prefix: String,
    /// Kafka's JsonConverter `schemas.enable` (default true).
    #[serde(default = "yes")]
    pub schemas_enable: bool,
    #[serde(default)]
    pub decimal_mode: DecimalMode,
    /// A tombstone after each delete (default true), for compacted topics.
    #[serde(default = "yes")]
    pub tombstones: bool,
    /// Partitions of the topics it creates (default 1).
    #[serde(default = "one")]
    pub partitions: i32,
    /// Deadline of a delivery (librdkafka `message.timeout.ms`; default 30 s).
    #[serde(default = "thirty_seconds", with = "tributary_core::duration")]
    pub delivery_timeout: Duration,
    /// How often a commit (delivery wait + checkpoint) is due (default 1 s);
    /// also once `commit_messages` messages are unconfirmed.
    #[serde(default = "one_second", with = "tributary_core::duration")]
    pub commit_interval: Duration,
    #[serde(default = "ten_thousand")]
    pub commit_messages: usize,
    /// How often a heartbeat goes to `__debezium-heartbeat.<prefix>`
    /// (Debezium's `heartbeat.interval.ms`; default 10 s, checked at
    /// commits), so consumers of idle tables see the source is alive.
    #[serde(default = "ten_seconds", with = "tributary_core::duration")]
    pub heartbeat_interval: Duration,
    /// More librdkafka producer properties.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}

fn one() -> i32 {
    1
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}

fn ten_thousand() -> usize {
    10_000
}

fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}

fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}

impl KafkaSinkConfig {
    pub fn new(brokers: impl Into<String>, prefix: impl Into<String>) -> KafkaSinkConfig {
        KafkaSinkConfig {
            brokers: brokers.into(),
            prefix: prefix.into(),
            schemas_enable: true,
            decimal_mode: DecimalMode::default(),
            tombstones: true,
            partitions: 1,
            delivery_timeout: thirty_seconds(),
            commit_interval: one_second(),
            commit_messages: ten_thousand(),
            heartbeat_interval: ten_seconds(),
            properties: BTreeMap::new(),
        }
    }

    /// The topic of `schema`'s table.
    pub fn topic(&self, schema: &TableSchema) -> String {
        format!(
            "{}.{}.{}",
            self.prefix, schema.table.database, schema.table.table
        )
    }

    /// The compacted topic holding each table's committed checkpoint.
    pub fn checkpoint_topic(&self) -> String {
        format!("{}.tributary-checkpoints", self.prefix)
    }

    fn client(&self) -> ClientConfig {
        client_config(&self.brokers, &self.properties)
    }

    /// Debezium's heartbeat topic.
    pub fn heartbeat_topic(&self) -> String {
        format!("__debezium-heartbeat.{}", self.prefix)
    }
}

/// The checkpoint committed for `table` (`db.table`): the last value of its
/// key in the checkpoint topic, read from the beginning (it is compacted).
pub async fn committed_checkpoint(
    config: &KafkaSinkConfig,
    table: &str,
) -> Result<Option<Checkpoint>> {
    let (client, topic, table) = (
        config.client(),
        config.checkpoint_topic(),
        table.to_string(),
    );
    tokio::task::spawn_blocking(move || {
        let mut found = None;
        read_to_end(&client, &topic, |m| {
            if m.key() == Some(table.as_bytes()) {
                found = m.payload().map(serde_json::from_slice).transpose()?;
            }
            Ok(())
        })?;
        Ok(found)
    })
    .await
    .map_err(|e| Error::new(ErrorKind::Unexpected, format!("checkpoint read: {e}")))?
}

/// Checkpoint property (of the table's own scope): the next offset of each
/// partition of the table's topic once everything this checkpoint covers
/// was delivered, as JSON `{"0": 42, …}`. A consumer that has read up to
/// them has every change up to the checkpoint's watermark.
pub const PRODUCED_PROPERTY: &str = "kafka.produced";

/// The produced offsets a checkpoint records for `table`.
pub fn produced_offsets(cp: &Checkpoint, table: &TableId) -> BTreeMap<i32, i64> {
    cp.properties
        .get(&Checkpoint::table_key(table, PRODUCED_PROPERTY))
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default()
}

fn with_produced(
    cp: &Checkpoint,
    table: &TableId,
    produced: &BTreeMap<i32, i64>,
) -> Result<Checkpoint> {
    let mut cp = cp.clone();
    cp.properties.insert(
        Checkpoint::table_key(table, PRODUCED_PROPERTY),
        serde_json::to_string(produced)?,
    );
    Ok(cp)
}

pub struct KafkaSink {
    config: KafkaSinkConfig,
    envelope: EnvelopeConfig,
    schema: Arc<TableSchema>,
    topic: String,
    producer: FutureProducer,
    /// Deliveries not yet confirmed.
    pending: Vec<DeliveryFuture>,
    /// Next offset per partition of everything confirmed (carried in the
    /// checkpoint, so it survives restarts).
    produced: BTreeMap<i32, i64>,
    /// Schema ids this sink recorded in the registry.
    registered: HashSet<String>,
    committed: Option<Checkpoint>,
    last_commit: std::time::Instant,
    last_heartbeat: Option<std::time::Instant>,
}

impl KafkaSink {
    /// Connects, creates the table's topic and the relay's own topics if
    /// needed, and reads the committed checkpoint.
    pub async fn open(config: KafkaSinkConfig, schema: &TableSchema) -> Result<KafkaSink> {
        if schema.primary_key.is_empty() {
            return Err(Error::invalid_config(format!(
                "{} has no primary key: relay topics are keyed by it",
                schema.table
            )));
        }
        let topic = config.topic(schema);
        let client = config.client();
        ensure_topic(&client, &topic, config.partitions, false).await?;
        ensure_topic(&client, &config.checkpoint_topic(), 1, true).await?;
        ensure_topic(&client, &schema_topic(&config.prefix), 1, true).await?;
        ensure_topic(&client, &config.heartbeat_topic(), 1, false).await?;
        // The schema-change topic: one partition keeps a database's DDL in order.
        ensure_topic(&client, &config.prefix, 1, false).await?;
        let producer: FutureProducer = client
            .clone()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5")
            .set(
                "message.timeout.ms",
                config.delivery_timeout.as_millis().to_string(),
            )
            .create()
            .map_err(|e| kafka_err("producer", e))?;
        let committed = committed_checkpoint(&config, &schema.table.to_string()).await?;
        let produced = committed
            .as_ref()
            .map(|cp| produced_offsets(cp, &schema.table))
            .unwrap_or_default();
        Ok(KafkaSink {
            envelope: EnvelopeConfig {
                prefix: config.prefix.clone(),
                schemas_enable: config.schemas_enable,
                decimal_mode: config.decimal_mode,
            },
            config,
            schema: Arc::new(schema.clone()),
            topic,
            producer,
            pending: Vec::new(),
            produced,
            registered: HashSet::new(),
            committed,
            last_commit: std::time::Instant::now(),
            last_heartbeat: None,
        })
    }

    /// Records `schema` in the registry (once per sink and schema) and waits
    /// for it: the rows naming it are sent only after.
    async fn register(&mut self, schema: &TableSchema) -> Result<String> {
        let id = schema_id(schema);
        if self.registered.contains(&id) {
            return Ok(id);
        }
        let entry = RegisteredSchema {
            schema: schema.clone(),
            schemas_enable: self.config.schemas_enable,
            decimal_mode: self.config.decimal_mode,
        };
        let value = serde_json::to_vec(&entry)?;
        let topic = schema_topic(&self.config.prefix);
        self.send_and_wait(&topic, id.as_bytes(), &value, "recording the schema")
            .await?;
        self.registered.insert(id.clone());
        Ok(id)
    }

    /// Sends one message and waits for its delivery report.
    async fn send_and_wait(&self, topic: &str, key: &[u8], value: &[u8], what: &str) -> Result<()> {
        self.producer
            .send(
                FutureRecord::to(topic).key(key).payload(value),
                self.config.delivery_timeout,
            )
            .await
            .map(|_| ())
            .map_err(|(e, _)| kafka_err(what, e))
    }

    fn send(
        &mut self,
        schema_id: &str,
        key: &serde_json::Value,
        value: Option<&serde_json::Value>,
    ) -> Result<()> {
        let key = serde_json::to_vec(key)?;
        let value = value.map(serde_json::to_vec).transpose()?;
        self.enqueue(schema_id, Some(&key), value.as_deref(), None)
    }

    /// Queues one message of the table's topic, with the schema header;
    /// its delivery is confirmed before the next checkpoint.
    fn enqueue(
        &mut self,
        schema_id: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        partition: Option<i32>,
    ) -> Result<()> {
        let headers = OwnedHeaders::new().insert(Header {
            key: SCHEMA_HEADER,
            value: Some(schema_id),
        });
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic).headers(headers);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        let delivery = self
            .producer
            .send_result(record)
            .map_err(|(e, _)| kafka_err(&format!("producing to {}", self.topic), e))?;
        self.pending.push(delivery);
        Ok(())
    }

    /// A truncate marker on every partition of the table's topic, after
    /// the rows before it there: a consumer applies it once it has read up
    /// to the marker on all of them. Not sent again for a truncate the
    /// committed position already holds (a replay), which would wipe the
    /// rows after it that are not sent again.
    async fn send_truncate(&mut self, change: &SchemaChange) -> Result<()> {
        if tributary_core::is_committed(change.position.as_ref(), self.committed.as_ref()) {
            return Ok(());
        }
        let id = self.register(&self.schema.clone()).await?;
        let partitions = {
            let (client, topic) = (self.config.client(), self.topic.clone());
            tokio::task::spawn_blocking(move || -> Result<Vec<i32>> {
                let c: BaseConsumer = client.create().map_err(|e| kafka_err("client", e))?;
                Ok(watermarks(&c, &topic)?
                    .into_iter()
                    .map(|(p, ..)| p)
                    .collect())
            })
            .await
            .map_err(|e| Error::new(ErrorKind::Unexpected, format!("partitions: {e}")))??
        };
        let source = position_source(change.position.as_ref(), change.commit_ts_micros);
        let value = serde_json::to_vec(&encode_truncate(
            &self.envelope,
            &self.schema,
            &source,
            now_ms(),
        )?)?;
        for p in partitions {
            self.enqueue(&id, None, Some(&value), Some(p))?;
        }
        Ok(())
    }

    /// Waits for every delivery report so far; any failure fails the commit
    /// (transient: the run replays from the last checkpoint).
    async fn confirm_deliveries(&mut self) -> Result<()> {
        for d in std::mem::take(&mut self.pending) {
            match d.await {
                Ok(Ok(d)) => {
                    let next = self.produced.entry(d.partition).or_default();
                    *next = (*next).max(d.offset + 1);
                }
                Ok(Err((e, _))) => return Err(kafka_err("delivery", e)),
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::Connection,
                        "Kafka: a delivery report was lost (producer gone)",
                    ));
                }
            }
        }
        Ok(())
    }

    /// A Debezium heartbeat (key `serverName`, value `ts_ms`), at most every
    /// `heartbeat_interval`.
    async fn heartbeat(&mut self) -> Result<()> {
        if self
            .last_heartbeat
            .is_some_and(|t| t.elapsed() < self.config.heartbeat_interval)
        {
            return Ok(());
        }
        let (key, value) = heartbeat_message(&self.envelope, now_ms());
        let (key, value) = (serde_json::to_vec(&key)?, serde_json::to_vec(&value)?);
        let topic = self.config.heartbeat_topic();
        self.send_and_wait(&topic, &key, &value, "sending a heartbeat")
            .await?;
        self.last_heartbeat = Some(std::time::Instant::now());
        Ok(())
    }
}

/// Debezium's heartbeat message: key `{"serverName"}`, value `{"ts_ms"}`.
fn heartbeat_message(env: &EnvelopeConfig, ts_ms: i64) -> (serde_json::Value, serde_json::Value) {
    use serde_json::json;
    let key = json!({"serverName": env.prefix});
    let value = json!({"ts_ms": ts_ms});
    if !env.schemas_enable {
        return (key, value);
    }
    let struct_of = |name: &str, field: &str, kind: &str| {
        json!({"type": "struct", "name": name, "optional": false,
               "fields": [{"type": kind, "optional": false, "field": field}]})
    };
    (
        json!({"schema": struct_of("io.debezium.connector.common.ServerNameKey", "serverName", "string"),
               "payload": key}),
        json!({"schema": struct_of("io.debezium.connector.common.Heartbeat", "ts_ms", "int64"),
               "payload": value}),
    )
}

/// The envelope's `source` block of `batch`'s row `row`.
fn source_info(batch: &ChangeBatch, row: usize, ordinal: u32) -> SourceInfo {
    let meta = batch.txn_of(row);
    SourceInfo {
        row: ordinal,
        snapshot: batch.op(row) == Op::Read,
        ..position_source(meta.position.as_ref(), meta.commit_ts_micros)
    }
}

/// The `source` block's position fields and time for a change at
/// `position`.
fn position_source(position: Option<&SourcePosition>, commit_ts_micros: i64) -> SourceInfo {
    let (file_pos, gtid) = match position {
        Some(SourcePosition::FilePos(p)) => (Some(p), None),
        Some(SourcePosition::MySqlGtid {
            gtid_set, file_pos, ..
        }) => (file_pos.as_ref(), Some(gtid_set.to_string())),
        Some(SourcePosition::MariaDbGtid {
            gtid_list,
            file_pos,
            ..
        }) => (file_pos.as_ref(), Some(gtid_list.to_string())),
        None => (None, None),
    };
    SourceInfo {
        server_id: 0,
        gtid,
        file: file_pos.map(|p| p.file.clone()).unwrap_or_default(),
        pos: file_pos.map_or(0, |p| p.pos),
        row: 0,
        ts_ms: commit_ts_micros.div_euclid(1000),
        snapshot: false,
    }
}

/// A schema change as Debezium's schema-change topic carries it.
fn schema_change_value(change: &SchemaChange, now_ms: i64) -> serde_json::Value {
    use tributary_core::SchemaChangeKind as K;
    let kind = match change.kind {
        K::Create => "CREATE",
        K::Drop => "DROP",
        K::Alter | K::Truncate | K::Rename { .. } => "ALTER",
    };
    let table = change.after.as_ref().or(change.before.as_ref()).map(|t| {
        let columns: Vec<serde_json::Value> = t
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                serde_json::json!({
                    "name": c.name,
                    "typeName": c.source_type.clone().unwrap_or_else(|| format!("{:?}", c.data_type)),
                    "position": i + 1,
                    "optional": c.nullable,
                })
            })
            .collect();
        serde_json::json!({
            "primaryKeyColumnNames": t.primary_key_names(),
            "columns": columns,
        })
    });
    let (file, pos) = match &change.position {
        Some(SourcePosition::FilePos(p)) => (p.file.clone(), p.pos),
        _ => (String::new(), 0),
    };
    serde_json::json!({
        "source": {
            "connector": "mysql",
            "db": change.table.database,
            "table": change.table.table,
            "file": file,
            "pos": pos,
            "ts_ms": change.commit_ts_micros.div_euclid(1000),
        },
        "ts_ms": now_ms,
        "databaseName": change.table.database,
        "schemaName": null,
        "ddl": change.ddl,
        "tableChanges": [{
            "type": kind,
            "id": format!("\"{}\".\"{}\"", change.table.database, change.table.table),
            "table": table,
        }],
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[async_trait]
impl Sink for KafkaSink {
    async fn write(&mut self, batch: &ChangeBatch) -> Result<()> {
        let schema = batch.schema().clone();
        let id = self.register(&schema).await?;
        let key_of = |row: &[tributary_core::Value]| {
            schema
                .primary_key
                .iter()
                .map(|&i| row[i].clone())
                .collect::<Vec<_>>()
        };
        let now = now_ms();
        for row in 0..batch.len() {
            // Already in Kafka up to the committed position: not sent again.
            if batch.is_committed_in(row, self.committed.as_ref()) {
                continue;
            }
            let op = batch.op(row);
            let (before, after) = (batch.row(Image::Before, row), batch.row(Image::After, row));
            let source = source_info(batch, row, row as u32);
            let key_changed = op == Op::Update
                && before
                    .as_ref()
                    .zip(after.as_ref())
                    .is_some_and(|(b, a)| key_of(b) != key_of(a));
            let env = self.envelope.clone();
            if op == Op::Delete || key_changed {
                let b = before.as_deref().ok_or_else(|| {
                    Error::invalid_data(format!(
                        "{}: a delete without its before image",
                        schema.table
                    ))
                })?;
                let key = encode_key(&env, &schema, b)?;
                let value = encode_value(&env, &schema, Op::Delete, Some(b), None, &source, now)?;
                self.send(&id, &key, Some(&value))?;
                if self.config.tombstones {
                    self.send(&id, &key, None)?;
                }
            }
            if op == Op::Delete {
                continue;
            }
            let a = after.as_deref().ok_or_else(|| {
                Error::invalid_data(format!(
                    "{}: a {op:?} without its after image",
                    schema.table
                ))
            })?;
            let key = encode_key(&env, &schema, a)?;
            let (op, before) = if key_changed {
                (Op::Insert, None)
            } else {
                (op, before.as_deref())
            };
            let value = encode_value(&env, &schema, op, before, Some(a), &source, now)?;
            self.send(&id, &key, Some(&value))?;
        }
        Ok(())
    }

    /// The change goes to the schema-change topic `<prefix>` (Debezium's:
    /// key `databaseName`, value `ddl` and `tableChanges`), delivered with
    /// the round; later rows are encoded with the new schema.
    async fn apply_schema_change(&mut self, change: &SchemaChange) -> Result<()> {
        if change.kind == tributary_core::SchemaChangeKind::Truncate {
            self.send_truncate(change).await?;
        }
        let key = serde_json::json!({"databaseName": change.table.database});
        let value = schema_change_value(change, now_ms());
        let (topic, key, value) = (
            self.config.prefix.clone(),
            serde_json::to_vec(&key)?,
            serde_json::to_vec(&value)?,
        );
        let delivery = self
            .producer
            .send_result(FutureRecord::to(&topic).key(&key).payload(&value))
            .map_err(|(e, _)| kafka_err(&format!("producing to {topic}"), e))?;
        self.pending.push(delivery);
        if let Some(after) = &change.after {
            self.schema = Arc::new(after.clone());
        }
        Ok(())
    }

    async fn prepare(&mut self, checkpoint: &Checkpoint) -> Result<Prepared> {
        self.confirm_deliveries().await?;
        let key = self.schema.table.to_string();
        let checkpoint = &with_produced(checkpoint, &self.schema.table, &self.produced)?;
        let value = serde_json::to_vec(checkpoint)?;
        let topic = self.config.checkpoint_topic();
        self.send_and_wait(&topic, key.as_bytes(), &value, "recording the checkpoint")
            .await?;
        self.committed = Some(checkpoint.clone());
        self.last_commit = std::time::Instant::now();
        self.heartbeat().await?;
        Ok(Prepared {
            checkpoint: checkpoint.clone(),
            payload: serde_json::Value::Null,
        })
    }

    /// Everything was made visible by `prepare` (Kafka has no invisible
    /// writes without transactions, which the relay does not rely on).
    async fn commit_prepared(&mut self, _prepared: Vec<Prepared>) -> Result<()> {
        Ok(())
    }

    fn commit_due(&self) -> bool {
        self.last_commit.elapsed() >= self.config.commit_interval
            || self.pending.len() >= self.config.commit_messages
    }

    fn discard_uncommitted(&mut self) {
        self.pending.clear();
    }

    async fn committed(&self) -> Result<Option<Checkpoint>> {
        Ok(self.committed.clone())
    }

    async fn health_check(&self) -> Result<()> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || {
            rdkafka::producer::Producer::client(&producer)
                .fetch_metadata(None, Duration::from_secs(5))
                .map(drop)
                .map_err(|e| kafka_err("metadata", e))
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Unexpected, format!("health check: {e}")))?
    }
}

/// `[sink.kafka]` as a pipeline's sink kind: one `KafkaSink` per source
/// table. A table's state is its checkpoint in the checkpoint topic; a topic
/// holding messages without one (a producer killed before its first commit)
/// counts as missing: the table is read again and its messages sent again
/// (duplicates a consumer absorbs by key, never a gap).
pub struct KafkaSinkFactory {
    config: KafkaSinkConfig,
}

impl KafkaSinkFactory {
    pub fn new(config: KafkaSinkConfig) -> Result<KafkaSinkFactory> {
        config.validate()?;
        Ok(KafkaSinkFactory { config })
    }
}

impl KafkaSinkConfig {
    /// Refuses what cannot work, naming the key.
    pub fn validate(&self) -> Result<()> {
        let fail = |m: &str| Err(Error::invalid_config(format!("sink.kafka.{m}")));
        if self.brokers.trim().is_empty() {
            return fail("brokers is empty: list host:port of at least one broker");
        }
        if self.prefix.is_empty()
            || self
                .prefix
                .contains(|c: char| !(c.is_ascii_alphanumeric() || "._-".contains(c)))
        {
            return fail(
                "prefix must be non-empty ASCII letters, digits, '.', '_' or '-' (it starts every topic name)",
            );
        }
        if self.partitions < 1 {
            return fail("partitions must be at least 1");
        }
        if self.commit_interval.is_zero() || self.commit_messages == 0 {
            return fail("commit_interval and commit_messages must be greater than zero");
        }
        Ok(())
    }
}

#[async_trait]
impl tributary_core::SinkFactory for KafkaSinkFactory {
    fn target_name(&self, table: &tributary_core::TableId) -> String {
        format!("{}.{}.{}", self.config.prefix, table.database, table.table)
    }

    async fn state(&self, table: &tributary_core::TableId) -> Result<tributary_core::TargetState> {
        Ok(
            match committed_checkpoint(&self.config, &table.to_string()).await? {
                Some(cp) => tributary_core::TargetState::Committed(cp),
                None => tributary_core::TargetState::Missing,
            },
        )
    }

    async fn reset(&self, _table: &tributary_core::TableId) -> Result<()> {
        Ok(())
    }

    /// An idle table's checkpoint moves on (so consumers' watermarks do):
    /// nothing of it is in flight, so its topic's ends are what it produced.
    async fn commit_position(&self, table: &TableId, checkpoint: &Checkpoint) -> Result<bool> {
        let (client, topic) = (self.config.client(), self.target_name(table));
        let ends = tokio::task::spawn_blocking(move || -> Result<BTreeMap<i32, i64>> {
            let consumer: BaseConsumer = client.create().map_err(|e| kafka_err("client", e))?;
            Ok(watermarks(&consumer, &topic)?
                .into_iter()
                .map(|(p, _, high)| (p, high))
                .collect())
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Unexpected, format!("watermarks: {e}")))??;
        let checkpoint = with_produced(checkpoint, table, &ends)?;
        let producer: FutureProducer = self
            .config
            .client()
            .set("acks", "all")
            .create()
            .map_err(|e| kafka_err("producer", e))?;
        let (key, value) = (table.to_string(), serde_json::to_vec(&checkpoint)?);
        let topic = self.config.checkpoint_topic();
        producer
            .send(
                FutureRecord::to(&topic).key(&key).payload(&value),
                self.config.delivery_timeout,
            )
            .await
            .map_err(|(e, _)| kafka_err("recording the checkpoint", e))?;
        Ok(true)
    }

    async fn open(&self, schema: &TableSchema) -> Result<Box<dyn Sink>> {
        Ok(Box::new(
            KafkaSink::open(self.config.clone(), schema).await?,
        ))
    }

    /// The brokers, and each table's topic (created at the first start if
    /// missing) with its partitions.
    async fn check(&self, tables: &[tributary_core::TableId]) -> Vec<tributary_core::CheckFinding> {
        use tributary_core::{CheckFinding, CheckStatus};
        const C: &str = "sink.kafka";
        let config = self.config.clone();
        let topics: Vec<String> = tables.iter().map(|t| self.target_name(t)).collect();
        let found = tokio::task::spawn_blocking(move || -> Result<Vec<(String, usize)>> {
            let consumer: BaseConsumer = config
                .client()
                .create()
                .map_err(|e| kafka_err("client", e))?;
            let metadata = consumer
                .fetch_metadata(None, Duration::from_secs(10))
                .map_err(|e| kafka_err("metadata", e))?;
            Ok(metadata
                .topics()
                .iter()
                .map(|t| (t.name().to_string(), t.partitions().len()))
                .collect())
        })
        .await
        .unwrap_or_else(|e| Err(Error::new(ErrorKind::Unexpected, e.to_string())));
        let existing = match found {
            Ok(t) => t,
            Err(e) => {
                return vec![CheckFinding::new(
                    C,
                    CheckStatus::Failed,
                    format!("brokers {}", self.config.brokers),
                    e.to_string(),
                )];
            }
        };
        let mut out = vec![CheckFinding::new(
            C,
            CheckStatus::Ok,
            format!("brokers {}", self.config.brokers),
            format!("reachable, {} topics", existing.len()),
        )];
        for topic in topics {
            let detail = match existing.iter().find(|(n, _)| *n == topic) {
                Some((_, p)) => format!("exists, {p} partitions"),
                None => format!(
                    "not created yet: the first start creates it with {} partitions",
                    self.config.partitions
                ),
            };
            out.push(CheckFinding::new(
                C,
                CheckStatus::Ok,
                format!("topic {topic}"),
                detail,
            ));
        }
        out
    }
}
