//! The relay's consumer: a source reading the topics `<prefix>.<db>.<table>`
//! back into change batches for any sink.
//!
//! - The table, not the consumer group, is the source of truth: each
//!   checkpoint carries, per table, the next offset of every partition of
//!   its topic (`table:<db>.<table>:kafka.offsets`) and the schema id of its
//!   last row; a sink commits that with the rows, and a start seeks there.
//!   Nothing is committed to the group.
//! - Rows are decoded with the exact schema the producer recorded in the
//!   registry (`schemas.rs`); a new schema id of a table becomes a
//!   `SchemaChange` before its rows.
//! - The watermark: the producer's checkpoint of a table records the ends
//!   of its topic after everything up to that checkpoint was delivered; once
//!   this consumer has read past those ends, the table is complete up to
//!   that checkpoint's watermark. The checkpoint's watermark is the lowest
//!   of the selected tables'.
//! - A message that cannot be decoded goes to the dead-letter topic with the
//!   error in its headers (`on_bad_message = "dead_letter"`, the default)
//!   and the offset moves on, or stops the job naming it (`"stop"`).
//! - Committed offsets the topic no longer has (retention deleted them, or
//!   the topic was recreated) are refused as `PositionLost`: the table
//!   would miss changes. `[pipeline] on_position_lost = "resnapshot"`
//!   empties the targets and reads the topics from their beginning.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Deserialize;
use tracing::{info, warn};
use tributary_core::partitions::CLAIM_PROPERTY;
use tributary_core::{
    ChangeBatchBuilder, ChangeEvent, CheckFinding, CheckStatus, Checkpoint, Error, ErrorKind,
    PartitionClaim, Result, SchemaChange, SchemaChangeKind, Source, SourceFactory, SourceRecord,
    TableFilter, TableFilterConfig, TableId,
};

use crate::client::{client_config, ensure_topic, kafka_err, watermarks};
use crate::envelope::{DecodedMessage, decode_message};
use crate::group::{GroupContext, GroupMember, RelayStream};
use crate::schemas::{RegisteredSchema, SCHEMA_HEADER, SchemaRegistry};
use crate::sink::produced_offsets;

/// What a message that cannot be read does (`on_bad_message`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnBadMessage {
    /// Set aside in the dead-letter topic, with the error in its headers.
    #[default]
    DeadLetter,
    /// Stop the job, naming the message.
    Stop,
}

/// `[source.kafka]`: the relay topics a job reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// `host:port,…` of the brokers.
    pub brokers: String,
    /// The producer's topic prefix.
    pub prefix: String,
    /// Which relayed tables to read (`db.table` globs); default all.
    #[serde(default)]
    pub tables: TableFilterConfig,
    #[serde(default)]
    pub on_bad_message: OnBadMessage,
    /// Default `<prefix>.tributary-dead-letters`.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// Rows of one table handed out in one batch at most (default 10 000).
    #[serde(default = "ten_thousand")]
    pub max_batch_rows: usize,
    /// How often a checkpoint is handed out (default 500 ms); sinks commit
    /// at checkpoints when their own interval is due.
    #[serde(default = "half_a_second", with = "tributary_core::duration")]
    pub checkpoint_interval: Duration,
    /// Scale-out: the name of a consumer group that every worker reading
    /// these tables joins; each reads a share of the partitions. Unset: this
    /// process reads every partition itself.
    #[serde(default)]
    pub group: Option<String>,
    /// More librdkafka consumer properties.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn ten_thousand() -> usize {
    10_000
}

fn half_a_second() -> Duration {
    Duration::from_millis(500)
}

/// Checkpoint properties (table-scoped): the next offset per partition, as
/// JSON `{"0": 42, …}`, and the schema id of the table's last row.
pub use tributary_core::partitions::OFFSETS_PROPERTY;
pub const SCHEMA_PROPERTY: &str = "kafka.schema";

impl KafkaSourceConfig {
    pub fn new(brokers: impl Into<String>, prefix: impl Into<String>) -> KafkaSourceConfig {
        KafkaSourceConfig {
            brokers: brokers.into(),
            prefix: prefix.into(),
            tables: TableFilterConfig::default(),
            on_bad_message: OnBadMessage::default(),
            dead_letter_topic: None,
            max_batch_rows: ten_thousand(),
            checkpoint_interval: half_a_second(),
            group: None,
            properties: BTreeMap::new(),
        }
    }

    pub fn dead_letter_topic(&self) -> String {
        self.dead_letter_topic
            .clone()
            .unwrap_or_else(|| format!("{}.tributary-dead-letters", self.prefix))
    }

    fn topic(&self, table: &TableId) -> String {
        format!("{}.{}.{}", self.prefix, table.database, table.table)
    }

    fn client(&self) -> ClientConfig {
        client_config(&self.brokers, &self.properties)
    }

    /// Refuses what cannot work, naming the key.
    pub fn validate(&self) -> Result<()> {
        let fail = |m: &str| Err(Error::invalid_config(format!("source.kafka.{m}")));
        if self.brokers.trim().is_empty() {
            return fail("brokers is empty: list host:port of at least one broker");
        }
        if self.prefix.is_empty() {
            return fail("prefix is empty: give the producer's topic prefix");
        }
        if self.max_batch_rows == 0 || self.checkpoint_interval.is_zero() {
            return fail("max_batch_rows and checkpoint_interval must be greater than zero");
        }
        if self.group.as_deref().is_some_and(|g| g.trim().is_empty()) {
            return fail("group is empty: name the consumer group of the workers, or leave it out");
        }
        TableFilter::new(&self.tables)?;
        Ok(())
    }
}

/// The offsets a checkpoint records for `table`.
pub fn committed_offsets(cp: &Checkpoint, table: &TableId) -> BTreeMap<i32, i64> {
    tributary_core::partitions::committed_offsets(cp, table)
}

/// `[source.kafka]` as a pipeline's source kind.
pub struct KafkaSourceFactory {
    config: KafkaSourceConfig,
    filter: TableFilter,
    dead_letters: Arc<AtomicU64>,
    /// This process's member of `group`, kept across runs.
    member: tokio::sync::Mutex<Option<GroupMember>>,
}

impl KafkaSourceFactory {
    pub fn new(config: KafkaSourceConfig) -> Result<KafkaSourceFactory> {
        config.validate()?;
        Ok(KafkaSourceFactory {
            filter: TableFilter::new(&config.tables)?,
            config,
            dead_letters: Arc::default(),
            member: tokio::sync::Mutex::default(),
        })
    }

    /// The member of the configured group, subscribed to `topics` (joined
    /// at the first run; subscribed again when the tables changed).
    async fn member(&self, group: &str, topics: Vec<String>) -> Result<Arc<RelayStream>> {
        let mut member = self.member.lock().await;
        if let Some(m) = member.as_ref().filter(|m| m.topics == topics) {
            return Ok(m.consumer.clone());
        }
        *member = None;
        let group = format!("tributary-{}-{group}", self.config.prefix);
        let joined = GroupMember::join(&self.config.client(), &group, topics)?;
        let consumer = joined.consumer.clone();
        *member = Some(joined);
        Ok(consumer)
    }

    async fn selected(&self, registry: &SchemaRegistry) -> Vec<Arc<RegisteredSchema>> {
        registry
            .newest()
            .into_iter()
            .filter(|e| self.filter.matches_id(&e.schema.table))
            .collect()
    }

    /// Where each of `table`'s partitions starts: its committed offset, or
    /// the beginning. Committed offsets the topic no longer has are refused.
    fn start_offsets(
        &self,
        table: &TableId,
        committed: &BTreeMap<i32, i64>,
        ends: &[(i32, i64, i64)],
    ) -> Result<Vec<(i32, Offset)>> {
        let topic = self.config.topic(table);
        let lost = |why: String| {
            Error::new(
                ErrorKind::PositionLost,
                format!(
                    "{topic}: {why}; {table}'s target would miss changes. Set [pipeline] \
                     on_position_lost = \"resnapshot\" to empty the targets and read the topics \
                     from their beginning"
                ),
            )
        };
        for (p, offset) in committed {
            let Some(&(_, low, high)) = ends.iter().find(|(id, ..)| id == p) else {
                return Err(lost(format!(
                    "partition {p} is gone (the topic has {} partitions): it was recreated",
                    ends.len()
                )));
            };
            if *offset > high {
                return Err(lost(format!(
                    "partition {p} ends at offset {high}, before the committed offset {offset}: \
                     the topic was recreated"
                )));
            }
            if *offset < low {
                return Err(lost(format!(
                    "partition {p} starts at offset {low}, after the committed offset {offset}: \
                     retention deleted messages not yet read"
                )));
            }
        }
        Ok(ends
            .iter()
            .map(|&(p, ..)| {
                let at = committed
                    .get(&p)
                    .map_or(Offset::Beginning, |&o| Offset::Offset(o));
                (p, at)
            })
            .collect())
    }
}

#[async_trait]
impl SourceFactory for KafkaSourceFactory {
    /// The relayed tables (those with a schema in the registry) the filter
    /// selects.
    async fn list_tables(&self) -> Result<Vec<TableId>> {
        let registry = SchemaRegistry::load(&self.config.client(), &self.config.prefix).await?;
        Ok(self
            .selected(&registry)
            .await
            .into_iter()
            .map(|e| e.schema.table.clone())
            .collect())
    }

    /// Those tables are read from their topics' beginning.
    fn requeue(&self, checkpoint: &mut Checkpoint, tables: &[TableId]) -> Result<()> {
        for t in tables {
            for name in [OFFSETS_PROPERTY, SCHEMA_PROPERTY] {
                checkpoint
                    .properties
                    .remove(&Checkpoint::table_key(t, name));
            }
        }
        Ok(())
    }

    async fn open(&self, resume: Option<&Checkpoint>) -> Result<Box<dyn Source>> {
        let client = self.config.client();
        let registry = SchemaRegistry::load(&client, &self.config.prefix).await?;
        let selected = self.selected(&registry).await;
        let checkpoint_topic = format!("{}.tributary-checkpoints", self.config.prefix);
        let mut topics = vec![checkpoint_topic.clone()];
        topics.extend(selected.iter().map(|e| self.config.topic(&e.schema.table)));
        let ends = {
            let (client, topics) = (client.clone(), topics.clone());
            tokio::task::spawn_blocking(move || -> Result<Vec<Vec<(i32, i64, i64)>>> {
                let c: BaseConsumer = client.create().map_err(|e| kafka_err("client", e))?;
                topics.iter().map(|t| watermarks(&c, t)).collect()
            })
            .await
            .map_err(|e| Error::new(ErrorKind::Unexpected, format!("watermarks: {e}")))??
        };
        let mut assignment = TopicPartitionList::new();
        for (p, ..) in &ends[0] {
            assignment
                .add_partition_offset(&checkpoint_topic, *p, Offset::Beginning)
                .map_err(|e| kafka_err("assign", e))?;
        }
        let progress_partitions = assignment.clone();
        let mut tables = HashMap::new();
        let mut next_offsets = BTreeMap::new();
        let mut current = BTreeMap::new();
        let mut partitions = BTreeMap::new();
        // Per (topic, partition): where it starts, its committed offset and
        // its first offset (for a worker of a group, which reads a share).
        let mut starts = HashMap::new();
        for (entry, ends) in selected.iter().zip(&ends[1..]) {
            let table = &entry.schema.table;
            let topic = self.config.topic(table);
            let committed = resume.map(|cp| committed_offsets(cp, table));
            let committed = committed.unwrap_or_default();
            for (p, at) in self.start_offsets(table, &committed, ends)? {
                assignment
                    .add_partition_offset(&topic, p, at)
                    .map_err(|e| kafka_err("assign", e))?;
                let low = ends.iter().find(|e| e.0 == p).map_or(0, |e| e.1);
                starts.insert((topic.clone(), p), (at, committed.get(&p).copied(), low));
            }
            let schema = resume
                .and_then(|cp| {
                    cp.properties
                        .get(&Checkpoint::table_key(table, SCHEMA_PROPERTY))
                })
                .and_then(|id| registry.get(id));
            if let Some(s) = schema {
                current.insert(table.clone(), s);
            }
            partitions.insert(table.clone(), ends.iter().map(|&(p, ..)| p).collect());
            info!(table = %table, topic = %topic, offsets = ?committed, "reading the relay");
            next_offsets.insert(table.clone(), committed);
            tables.insert(topic, table.clone());
        }
        let (consumer, share) = match &self.config.group {
            None => {
                let consumer: RelayStream = client
                    .clone()
                    .set(
                        "group.id",
                        format!("tributary-{}-relay-consumer", self.config.prefix),
                    )
                    .set("enable.auto.commit", "false")
                    .set("enable.auto.offset.store", "false")
                    .create_with_context(GroupContext::default())
                    .map_err(|e| kafka_err("consumer", e))?;
                consumer
                    .assign(&assignment)
                    .map_err(|e| kafka_err("assign", e))?;
                (Arc::new(consumer), None)
            }
            Some(group) => {
                let topics = selected
                    .iter()
                    .map(|e| self.config.topic(&e.schema.table))
                    .collect();
                let consumer = self.member(group, topics).await?;
                let share =
                    GroupShare::take(&consumer, &client, &progress_partitions, &tables, &starts)?;
                next_offsets = share.next.clone();
                (consumer, Some(share))
            }
        };
        let dead_letter = match self.config.on_bad_message {
            OnBadMessage::Stop => None,
            OnBadMessage::DeadLetter => {
                let topic = self.config.dead_letter_topic();
                ensure_topic(&client, &topic, 1, false).await?;
                let producer: FutureProducer = client
                    .clone()
                    .set("enable.idempotence", "true")
                    .set("acks", "all")
                    .create()
                    .map_err(|e| kafka_err("producer", e))?;
                Some((producer, topic))
            }
        };
        Ok(Box::new(RelayConsumer {
            consumer,
            share,
            client,
            prefix: self.config.prefix.clone(),
            registry,
            checkpoint_topic,
            tables,
            next_offsets,
            partitions,
            truncating: BTreeMap::new(),
            current,
            builders: BTreeMap::new(),
            out: VecDeque::new(),
            progress: ProducerProgress::default(),
            dead_letter,
            dead_letters: self.dead_letters.clone(),
            max_batch_rows: self.config.max_batch_rows,
            checkpoint_interval: self.config.checkpoint_interval,
        }))
    }

    fn shared_by_workers(&self) -> bool {
        self.config.group.is_some()
    }

    /// The committed offset per partition: `offsets 0@42 1@40`.
    fn describe_position(&self, checkpoint: &Checkpoint, table: &TableId) -> Option<String> {
        let offsets = committed_offsets(checkpoint, table);
        if offsets.is_empty() {
            return None;
        }
        let each: Vec<String> = offsets.iter().map(|(p, o)| format!("{p}@{o}")).collect();
        Some(format!("offsets {}", each.join(" ")))
    }

    /// Messages set aside in the dead-letter topic by every run so far.
    fn dead_letters(&self) -> u64 {
        self.dead_letters.load(Ordering::Relaxed)
    }

    /// The brokers and the registry's tables the filter selects.
    async fn check(&self) -> Vec<CheckFinding> {
        const C: &str = "source.kafka";
        let what = format!(
            "brokers {}, prefix {}",
            self.config.brokers, self.config.prefix
        );
        let registry = SchemaRegistry::load(&self.config.client(), &self.config.prefix).await;
        let registry = match registry {
            Ok(r) => r,
            Err(e) => {
                return vec![CheckFinding::new(
                    C,
                    CheckStatus::Failed,
                    what,
                    e.to_string(),
                )];
            }
        };
        let selected = self.selected(&registry).await;
        let status = match selected.is_empty() {
            true => CheckStatus::Warning,
            false => CheckStatus::Ok,
        };
        let names: Vec<String> = selected
            .iter()
            .map(|e| e.schema.table.to_string())
            .collect();
        let detail = match names.is_empty() {
            true => format!(
                "no relayed table matches: none is in {}.tributary-schemas yet (start the \
                 producer first) or the table filter selects none",
                self.config.prefix
            ),
            false => format!("relayed tables: {}", names.join(", ")),
        };
        vec![CheckFinding::new(C, status, what, detail)]
    }
}

/// `topic/partition@offset`.
fn message_origin(m: &BorrowedMessage<'_>) -> String {
    format!("{}/{}@{}", m.topic(), m.partition(), m.offset())
}

/// Per partition: the topic's next offset after a producer checkpoint.
type TopicEnds = BTreeMap<i32, i64>;

/// What the producer's checkpoints say about each table's completeness.
#[derive(Default)]
struct ProducerProgress {
    /// Per table: (the topic's ends after that checkpoint, its watermark),
    /// oldest first, not yet reached by this consumer.
    pending: BTreeMap<TableId, VecDeque<(TopicEnds, i64)>>,
    /// Per table: the watermark of the newest producer checkpoint reached.
    reached: BTreeMap<TableId, i64>,
    /// The same per partition (a worker of a group).
    reached_by_partition: BTreeMap<TableId, BTreeMap<i32, i64>>,
}

impl ProducerProgress {
    fn record(&mut self, m: &BorrowedMessage<'_>) {
        let (Some(key), Some(value)) = (m.key(), m.payload()) else {
            return;
        };
        let Some((db, table)) = std::str::from_utf8(key)
            .ok()
            .and_then(|k| k.split_once('.'))
        else {
            return;
        };
        let Ok(cp) = serde_json::from_slice::<Checkpoint>(value) else {
            return;
        };
        let table = TableId::new(db, table);
        if let Some(wm) = cp.watermark_micros {
            let ends = produced_offsets(&cp, &table);
            self.pending.entry(table).or_default().push_back((ends, wm));
        }
    }

    /// Moves `table` past every producer checkpoint whose ends it has read.
    fn advance(&mut self, table: &TableId, read: &BTreeMap<i32, i64>) {
        let Some(queue) = self.pending.get_mut(table) else {
            return;
        };
        while let Some((ends, wm)) = queue.front() {
            let done = ends
                .iter()
                .all(|(p, end)| *end == 0 || read.get(p).is_some_and(|r| r >= end));
            if !done {
                break;
            }
            let reached = self.reached.entry(table.clone()).or_insert(*wm);
            *reached = (*reached).max(*wm);
            queue.pop_front();
        }
    }

    /// Per partition of `table` read up to `read`: the watermark of the
    /// newest producer checkpoint whose end it has reached (a worker of a
    /// group, which reads some partitions). Checkpoints every one of them
    /// passed are dropped.
    fn partition_watermarks(
        &mut self,
        table: &TableId,
        read: &BTreeMap<i32, i64>,
    ) -> BTreeMap<i32, i64> {
        let reached = self.reached_by_partition.entry(table.clone()).or_default();
        let Some(queue) = self.pending.get_mut(table) else {
            return reached.clone();
        };
        let passed =
            |ends: &TopicEnds, p: i32, r: i64| ends.get(&p).is_none_or(|e| *e == 0 || r >= *e);
        for (&p, &r) in read {
            for (ends, wm) in queue.iter() {
                if !passed(ends, p, r) {
                    break;
                }
                let w = reached.entry(p).or_insert(*wm);
                *w = (*w).max(*wm);
            }
        }
        while let Some((ends, _)) = queue.front() {
            if !read.iter().all(|(&p, &r)| passed(ends, p, r)) {
                break;
            }
            queue.pop_front();
        }
        reached.clone()
    }

    /// The lowest watermark of the tables the producer has checkpointed;
    /// None while one of them has reached none yet.
    fn watermark(&self, tables: impl Iterator<Item = TableId>) -> Option<i64> {
        let mut low: Option<i64> = None;
        for t in tables {
            let known = self.pending.get(&t).is_some_and(|q| !q.is_empty());
            match self.reached.get(&t) {
                Some(&w) => low = Some(low.map_or(w, |l| l.min(w))),
                None if known => return None,
                None => {}
            }
        }
        low
    }
}

/// A truncate read on some partitions of a table's topic: the marker's
/// offset per partition, and where the source truncated.
struct PendingTruncate {
    markers: BTreeMap<i32, i64>,
    position: Option<tributary_core::SourcePosition>,
    commit_ts_micros: i64,
}

/// What a worker of a group reads in one run: its share of the partitions,
/// from the offsets its tables held when the run started.
struct GroupShare {
    /// The member's rebalance count at the start: any change ends the run.
    generation: u64,
    /// Per selected table: the partitions of this worker (maybe none).
    owned: BTreeMap<TableId, Vec<i32>>,
    /// Per table: the committed offsets its partitions started at.
    from: BTreeMap<TableId, BTreeMap<i32, i64>>,
    /// Per table: the next offset of each partition of this worker.
    next: BTreeMap<TableId, BTreeMap<i32, i64>>,
    /// Reads the producer's checkpoints (the group shares only table topics).
    progress: BaseConsumer,
}

impl GroupShare {
    /// Seeks the partitions the group gave this member to their tables'
    /// committed offsets (they wait paused until then) and resumes them.
    fn take(
        consumer: &RelayStream,
        client: &ClientConfig,
        progress_partitions: &TopicPartitionList,
        tables: &HashMap<String, TableId>,
        starts: &HashMap<(String, i32), (Offset, Option<i64>, i64)>,
    ) -> Result<GroupShare> {
        let generation = consumer.context().generation();
        let assigned = consumer
            .assignment()
            .map_err(|e| kafka_err("reading the assignment", e))?;
        let mut share = GroupShare {
            generation,
            owned: tables.values().map(|t| (t.clone(), Vec::new())).collect(),
            from: tables
                .values()
                .map(|t| (t.clone(), BTreeMap::new()))
                .collect(),
            next: tables
                .values()
                .map(|t| (t.clone(), BTreeMap::new()))
                .collect(),
            progress: progress_reader(client, progress_partitions)?,
        };
        let mut seek = TopicPartitionList::new();
        for e in assigned.elements() {
            let (topic, p) = (e.topic().to_string(), e.partition());
            let (Some(table), Some(&(at, committed, low))) =
                (tables.get(&topic), starts.get(&(topic.clone(), p)))
            else {
                continue;
            };
            seek.add_partition_offset(&topic, p, at)
                .map_err(|e| kafka_err("seek", e))?;
            share.owned.get_mut(table).expect("every table").push(p);
            if let Some(c) = committed {
                share.from.get_mut(table).expect("every table").insert(p, c);
            }
            let next = committed.unwrap_or(low);
            share
                .next
                .get_mut(table)
                .expect("every table")
                .insert(p, next);
        }
        if seek.count() > 0 {
            let sought = consumer
                .seek_partitions(seek.clone(), Duration::from_secs(10))
                .map_err(|e| kafka_err("seeking the assigned partitions", e))?;
            for e in sought.elements() {
                if let Err(err) = e.error() {
                    return Err(kafka_err("seeking an assigned partition", err)
                        .with_context("partition", format!("{}/{}", e.topic(), e.partition())));
                }
            }
            consumer
                .resume(&seek)
                .map_err(|e| kafka_err("resuming the assigned partitions", e))?;
        }
        let owned: Vec<String> = share
            .owned
            .iter()
            .filter(|(_, ps)| !ps.is_empty())
            .map(|(t, ps)| format!("{t} {ps:?}"))
            .collect();
        info!(generation, partitions = %owned.join(", "), "this worker's share of the group");
        Ok(share)
    }

    /// Ends the run when the group moved partitions since it started.
    fn check(&self, consumer: &RelayStream) -> Result<()> {
        if consumer.context().generation() == self.generation {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Reassigned,
            "the consumer group moved partitions to or from this worker",
        ))
    }

    /// The checkpoint of this worker: a claim per table instead of offsets.
    fn claims(
        &self,
        cp: &mut Checkpoint,
        next: &BTreeMap<TableId, BTreeMap<i32, i64>>,
        partitions: &BTreeMap<TableId, Vec<i32>>,
        progress: &mut ProducerProgress,
    ) -> Result<()> {
        for (t, owned) in &self.owned {
            let next: BTreeMap<i32, i64> = owned
                .iter()
                .filter_map(|p| Some((*p, *next.get(t)?.get(p)?)))
                .collect();
            let claim = PartitionClaim {
                from: self.from[t].clone(),
                watermarks: progress.partition_watermarks(t, &next),
                next,
                partitions: partitions.get(t).map_or(0, Vec::len),
            };
            cp.properties.insert(
                Checkpoint::table_key(t, CLAIM_PROPERTY),
                serde_json::to_string(&claim)?,
            );
        }
        Ok(())
    }
}

/// A consumer of the producer's checkpoint topic (`partitions`, from
/// their beginning).
fn progress_reader(client: &ClientConfig, partitions: &TopicPartitionList) -> Result<BaseConsumer> {
    let consumer: BaseConsumer = client
        .clone()
        .set("group.id", "tributary-checkpoint-reader")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| kafka_err("consumer", e))?;
    consumer
        .assign(partitions)
        .map_err(|e| kafka_err("assign", e))?;
    Ok(consumer)
}

/// The consumer of one run (a `Source`).
struct RelayConsumer {
    /// Shared so that a message borrowed from it does not borrow `self`.
    consumer: Arc<RelayStream>,
    /// A worker of a group: its share (None: every partition is read).
    share: Option<GroupShare>,
    client: ClientConfig,
    prefix: String,
    registry: SchemaRegistry,
    checkpoint_topic: String,
    /// Data topic → its table.
    tables: HashMap<String, TableId>,
    /// Per table: the next offset of each partition (read up to here).
    next_offsets: BTreeMap<TableId, BTreeMap<i32, i64>>,
    /// Per table: its topic's partitions.
    partitions: BTreeMap<TableId, Vec<i32>>,
    /// Per table: a truncate whose markers were read on some partitions
    /// (those wait there) but not yet on all.
    truncating: BTreeMap<TableId, PendingTruncate>,
    /// Per table: the schema of the last row handed out.
    current: BTreeMap<TableId, Arc<RegisteredSchema>>,
    builders: BTreeMap<TableId, ChangeBatchBuilder>,
    out: VecDeque<SourceRecord>,
    progress: ProducerProgress,
    dead_letter: Option<(FutureProducer, String)>,
    dead_letters: Arc<AtomicU64>,
    max_batch_rows: usize,
    checkpoint_interval: Duration,
}

#[async_trait]
impl Source for RelayConsumer {
    async fn next(&mut self) -> Result<Option<SourceRecord>> {
        loop {
            if let Some(r) = self.out.pop_front() {
                return Ok(Some(r));
            }
            self.fill().await?;
        }
    }
}

impl RelayConsumer {
    /// Reads for up to one checkpoint interval (less once messages stop
    /// coming), then hands out the batches and a checkpoint covering them.
    async fn fill(&mut self) -> Result<()> {
        let deadline = Instant::now() + self.checkpoint_interval;
        let mut read = 0usize;
        let consumer = self.consumer.clone();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let wait = if read == 0 {
                left
            } else {
                left.min(Duration::from_millis(20))
            };
            if wait.is_zero() {
                break;
            }
            let message = match tokio::time::timeout(wait, consumer.recv()).await {
                Err(_) => break,
                Ok(m) => m.map_err(|e| kafka_err("consuming", e))?,
            };
            // A rebalance is served inside `recv`: a message after it may
            // be of a partition not yet sought to its table's offset.
            if let Some(share) = &self.share {
                share.check(&consumer)?;
            }
            self.handle(&message).await?;
            read += 1;
            if read >= self.max_batch_rows {
                break;
            }
        }
        if let Some(share) = &self.share {
            share.check(&consumer)?;
            while let Some(m) = share.progress.poll(Duration::ZERO) {
                let m = m.map_err(|e| kafka_err("reading the producer's checkpoints", e))?;
                self.progress.record(&m);
            }
        }
        self.flush_all()?;
        let mut cp = match &self.share {
            // A worker of a group: a claim per table instead of offsets.
            Some(share) => {
                let mut cp = Checkpoint::default();
                share.claims(
                    &mut cp,
                    &self.next_offsets,
                    &self.partitions,
                    &mut self.progress,
                )?;
                cp
            }
            None => {
                let tables: Vec<TableId> = self.next_offsets.keys().cloned().collect();
                for t in &tables {
                    self.progress.advance(t, &self.next_offsets[t]);
                }
                let mut cp = Checkpoint {
                    position: None,
                    watermark_micros: self.progress.watermark(tables.into_iter()),
                    properties: BTreeMap::new(),
                };
                for (t, offsets) in self.next_offsets.iter().filter(|(_, o)| !o.is_empty()) {
                    cp.properties.insert(
                        Checkpoint::table_key(t, OFFSETS_PROPERTY),
                        serde_json::to_string(offsets)?,
                    );
                }
                cp
            }
        };
        for (t, s) in &self.current {
            cp.properties.insert(
                Checkpoint::table_key(t, SCHEMA_PROPERTY),
                crate::schemas::schema_id(&s.schema),
            );
        }
        self.out.push_back(SourceRecord::Checkpoint(cp));
        Ok(())
    }

    async fn handle(&mut self, m: &BorrowedMessage<'_>) -> Result<()> {
        if m.topic() == self.checkpoint_topic {
            self.progress.record(m);
            return Ok(());
        }
        let Some(table) = self.tables.get(m.topic()).cloned() else {
            return Ok(());
        };
        if self.waits_at_truncate(&table, m.partition()) {
            // Past the marker this partition waits at: read again once the
            // truncate is applied.
            return Ok(());
        }
        match self.take(&table, m).await {
            // The message itself is wrong: set aside (or stop).
            Err(e) if matches!(e.kind(), ErrorKind::InvalidData | ErrorKind::SchemaMismatch) => {
                self.set_aside(m, e).await?
            }
            // Kafka or the registry failed: the message may be fine.
            Err(e) => return Err(e.with_context("message", message_origin(m))),
            Ok(()) => {}
        }
        if self.waits_at_truncate(&table, m.partition()) {
            // The marker: its offset is committed only once it is applied.
            return Ok(());
        }
        match self.next_offsets.get_mut(&table) {
            Some(next) => next.insert(m.partition(), m.offset() + 1),
            None => {
                let next = BTreeMap::from([(m.partition(), m.offset() + 1)]);
                self.next_offsets.insert(table, next);
                None
            }
        };
        Ok(())
    }

    /// Decodes one message of `table` into its builder; a tombstone is
    /// nothing (it only lets compaction drop the key).
    async fn take(&mut self, table: &TableId, m: &BorrowedMessage<'_>) -> Result<()> {
        let Some(payload) = m.payload() else {
            return Ok(());
        };
        let id = m
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == SCHEMA_HEADER))
            .and_then(|h| h.value)
            .map(String::from_utf8_lossy)
            .ok_or_else(|| {
                Error::invalid_data(format!(
                    "no {SCHEMA_HEADER} header: not written by Tributary's relay producer \
                     (topics of other producers are not read)"
                ))
            })?;
        let entry = match self.registry.get(&id) {
            Some(e) => e,
            None => {
                // Recorded before the message was sent: read the registry again.
                self.registry = SchemaRegistry::load(&self.client, &self.prefix).await?;
                self.registry.get(&id).ok_or_else(|| {
                    Error::invalid_data(format!("schema {id} is not in the registry"))
                })?
            }
        };
        if entry.schema.table != *table {
            return Err(Error::invalid_data(format!(
                "schema {id} is {}'s, in {table}'s topic",
                entry.schema.table
            )));
        }
        let change = match decode_message(
            &entry.schema,
            entry.schemas_enable,
            entry.decimal_mode,
            payload,
        )? {
            DecodedMessage::Change(c) => c,
            DecodedMessage::Truncate {
                position,
                commit_ts_micros,
            } => {
                let pending = PendingTruncate {
                    markers: BTreeMap::new(),
                    position,
                    commit_ts_micros,
                };
                return self.truncate_marker(table, &entry, m, pending);
            }
        };
        let (want_before, want_after) = change.op.images();
        if want_before != change.before.is_some() || want_after != change.after.is_some() {
            return Err(Error::invalid_data(format!(
                "a {:?} with before {} and after {}",
                change.op,
                change.before.is_some(),
                change.after.is_some()
            )));
        }
        self.follow_schema(table, &entry, &change)?;
        let event = ChangeEvent {
            table: table.clone(),
            op: change.op,
            before: change.before,
            after: change.after,
            position: change.position,
            commit_ts_micros: change.commit_ts_micros,
            schema_version: entry.schema.version,
        };
        if !self.builders.contains_key(table) {
            let builder = ChangeBatchBuilder::new(Arc::new(entry.schema.clone()));
            self.builders.insert(table.clone(), builder);
        }
        let builder = self.builders.get_mut(table).expect("inserted above");
        builder.push_event(&event)?;
        if builder.len() >= self.max_batch_rows {
            self.flush(table)?;
        }
        Ok(())
    }

    fn waits_at_truncate(&self, table: &TableId, partition: i32) -> bool {
        self.truncating
            .get(table)
            .is_some_and(|t| t.markers.contains_key(&partition))
    }

    /// A truncate marker on one partition: that partition waits (paused)
    /// until every partition of the topic reached its marker — then the
    /// rows read before the markers go out, then the truncate, and every
    /// partition goes on after its marker. Rows after the marker on one
    /// partition are never applied before rows before it on another.
    fn truncate_marker(
        &mut self,
        table: &TableId,
        entry: &Arc<RegisteredSchema>,
        m: &BorrowedMessage<'_>,
        marker: PendingTruncate,
    ) -> Result<()> {
        if self.share.is_some() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "{table} was truncated at the source ({}): a worker of a consumer group sees \
                     only its share of the partitions and cannot apply a truncate alone. Stop the \
                     group's workers and run one without [source.kafka] group past this point",
                    message_origin(m)
                ),
            ));
        }
        let topic = m.topic().to_string();
        let pending = self.truncating.entry(table.clone()).or_insert(marker);
        pending.markers.insert(m.partition(), m.offset());
        let all = &self.partitions[table];
        let mut here = TopicPartitionList::new();
        if !all.iter().all(|p| pending.markers.contains_key(p)) {
            here.add_partition(&topic, m.partition());
            return self
                .consumer
                .pause(&here)
                .map_err(|e| kafka_err("pausing at a truncate", e));
        }
        let done = self.truncating.remove(table).expect("pending");
        self.flush(table)?;
        let schema = self
            .current
            .get(table)
            .map_or_else(|| entry.schema.clone(), |c| c.schema.clone());
        let mut change = SchemaChange::between(
            SchemaChangeKind::Truncate,
            Some(schema.clone()),
            Some(schema),
        );
        change.position = done.position;
        change.commit_ts_micros = done.commit_ts_micros;
        info!(table = %table, "the producer's truncate reached on every partition: applying it");
        self.out.push_back(SourceRecord::SchemaChange(change));
        let next = self.next_offsets.entry(table.clone()).or_default();
        for (&p, &offset) in &done.markers {
            next.insert(p, offset + 1);
            here.add_partition(&topic, p);
            self.consumer
                .seek(
                    &topic,
                    p,
                    Offset::Offset(offset + 1),
                    Duration::from_secs(10),
                )
                .map_err(|e| kafka_err("seeking past a truncate", e))?;
        }
        self.consumer
            .resume(&here)
            .map_err(|e| kafka_err("resuming after a truncate", e))
    }

    /// A row of another schema than the table's last: the rows so far go
    /// out, then the change from the old schema to this one.
    fn follow_schema(
        &mut self,
        table: &TableId,
        entry: &Arc<RegisteredSchema>,
        change: &crate::envelope::DecodedChange,
    ) -> Result<()> {
        let same = self
            .current
            .get(table)
            .is_some_and(|c| Arc::ptr_eq(c, entry) || c.schema == entry.schema);
        if same {
            return Ok(());
        }
        self.flush(table)?;
        if let Some(old) = self.current.get(table) {
            let mut sc = SchemaChange::between(
                SchemaChangeKind::Alter,
                Some(old.schema.clone()),
                Some(entry.schema.clone()),
            );
            sc.position = change.position.clone();
            sc.commit_ts_micros = change.commit_ts_micros;
            self.out.push_back(SourceRecord::SchemaChange(sc));
        }
        self.current.insert(table.clone(), entry.clone());
        Ok(())
    }

    fn flush(&mut self, table: &TableId) -> Result<()> {
        if let Some(mut b) = self.builders.remove(table)
            && !b.is_empty()
        {
            self.out.push_back(SourceRecord::Changes(b.finish()?));
        }
        Ok(())
    }

    fn flush_all(&mut self) -> Result<()> {
        let tables: Vec<TableId> = self.builders.keys().cloned().collect();
        tables.iter().try_for_each(|t| self.flush(t))
    }

    /// A message that cannot be read: into the dead-letter topic (its key,
    /// value and headers, with the error and where it came from), or the
    /// end of the run.
    async fn set_aside(&mut self, m: &BorrowedMessage<'_>, error: Error) -> Result<()> {
        let origin = message_origin(m);
        let Some((producer, topic)) = &self.dead_letter else {
            return Err(error
                .with_context("message", &origin)
                .map_text(|t| format!("{t} (set [source.kafka] on_bad_message = \"dead_letter\" to set such messages aside)")));
        };
        warn!(message = %origin, error = %error, dead_letter_topic = %topic, "a message that cannot be read was set aside");
        let mut headers = OwnedHeaders::new();
        if let Some(h) = m.headers() {
            for h in h.iter() {
                headers = headers.insert(h);
            }
        }
        let (error_text, partition, offset) = (
            error.to_string(),
            m.partition().to_string(),
            m.offset().to_string(),
        );
        for (key, value) in [
            ("tributary.error", error_text.as_str()),
            ("tributary.topic", m.topic()),
            ("tributary.partition", partition.as_str()),
            ("tributary.offset", offset.as_str()),
        ] {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
        if let Some(k) = m.key() {
            record = record.key(k);
        }
        if let Some(p) = m.payload() {
            record = record.payload(p);
        }
        producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| kafka_err("writing to the dead-letter topic", e))?;
        self.dead_letters.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
