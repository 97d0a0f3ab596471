//! `HBaseSink`: one source table as an HBase table, through a Thrift2
//! gateway.
//!
//! Each row is an HBase row (key from the primary key, see `encoding`),
//! one cell per non-NULL column in `column_family`. Changes are reduced per
//! row key between flushes; an upsert is a put of the row's cells plus a
//! column delete of its NULL columns, a delete removes the whole row, a key
//! change does both. Cell timestamps come from the source position (`2v+1`
//! for puts, `2v` for deletes, `v` = binlog file number × 2³⁴ + offset), so
//! HBase's own version order is the binlog's: a replayed change rewrites
//! the same cells at the same timestamps, and a key deleted and re-inserted
//! in one transaction stays. `commit` flushes, then stores the checkpoint as
//! a cell of row `<table>` in `checkpoint_table`.
//!
//! The tables must exist (`create 'ns:t', 'cf'` and the checkpoint table
//! with the same family): the sink never creates or alters HBase tables.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::Deserialize;
use tributary_core::{
    ChangeBatch, Checkpoint, Error, ErrorKind, Image, Prepared, Result, SchemaChange, Sink,
    TableSchema, Value,
};

use crate::encoding::{RowKeyEncoding, ValueEncoding, cell, row_key};
use crate::gateway::{Endpoint, Gateway};
use crate::hbase2::{TColumn, TColumnValue, TDelete, TDeleteType, TPut};

/// `[sink.hbase]`. Durations: seconds, or a string such as `"5s"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HBaseSinkConfig {
    /// The Thrift2 gateway, `host:port` (HBase's default port 9090).
    pub address: String,
    /// The HBase table (`namespace:table`); default: the source table's
    /// name, in `namespace` when set.
    #[serde(default)]
    pub table: Option<String>,
    /// HBase namespace of the default table names (`<namespace>:<table>`).
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default = "default_family")]
    pub column_family: String,
    #[serde(default)]
    pub row_key: RowKeyEncoding,
    #[serde(default)]
    pub values: ValueEncoding,
    /// The gateway runs with `-f` (framed transport).
    #[serde(default)]
    pub framed: bool,
    /// The gateway runs with `-c` (compact protocol).
    #[serde(default)]
    pub compact: bool,
    /// Rows (after per-key reduction) buffered before a flush (default 10 000).
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// A commit is due this long after the previous one (default 1 s).
    #[serde(default = "default_commit_interval", with = "tributary_core::duration")]
    pub commit_interval: Duration,
    /// Connect/read/write timeout (default 5 s).
    #[serde(default = "default_timeout", with = "tributary_core::duration")]
    pub timeout: Duration,
    #[serde(default = "default_checkpoint_table")]
    pub checkpoint_table: String,
}

fn default_family() -> String {
    "cf".into()
}
fn default_batch_rows() -> usize {
    10_000
}
fn default_commit_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_checkpoint_table() -> String {
    "tributary_checkpoints".into()
}

impl HBaseSinkConfig {
    pub fn new(address: impl Into<String>) -> HBaseSinkConfig {
        HBaseSinkConfig {
            address: address.into(),
            table: None,
            namespace: None,
            column_family: default_family(),
            row_key: RowKeyEncoding::default(),
            values: ValueEncoding::default(),
            framed: false,
            compact: false,
            batch_rows: default_batch_rows(),
            commit_interval: default_commit_interval(),
            timeout: default_timeout(),
            checkpoint_table: default_checkpoint_table(),
        }
    }

    /// The HBase table of a source table.
    pub fn table_for(&self, source: &tributary_core::TableId) -> String {
        match (&self.table, &self.namespace) {
            (Some(t), _) => t.clone(),
            (None, Some(ns)) => format!("{ns}:{}", source.table),
            (None, None) => source.table.clone(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        let fail = |m: &str| Err(Error::invalid_config(format!("sink.hbase: {m}")));
        if !self.address.contains(':') {
            return fail("address must be host:port of the Thrift2 gateway");
        }
        if self.column_family.is_empty() || self.batch_rows == 0 {
            return fail("column_family must be set and batch_rows at least 1");
        }
        if let RowKeyEncoding::Text { separator } = &self.row_key
            && separator.is_empty()
        {
            return fail("the text row key needs a non-empty separator");
        }
        for (name, secs) in [
            ("timeout", self.timeout),
            ("commit_interval", self.commit_interval),
        ] {
            if secs.is_zero() {
                return fail(&format!("{name} must be a positive duration"));
            }
        }
        Ok(())
    }
}

fn endpoint(config: &HBaseSinkConfig) -> Endpoint {
    Endpoint {
        address: config.address.clone(),
        framed: config.framed,
        compact: config.compact,
        timeout: config.timeout,
    }
}

/// Runs a gateway call on the blocking pool (the thrift crate blocks).
async fn on_gateway<T: Send + 'static>(
    gateway: &Arc<Mutex<Gateway>>,
    f: impl FnOnce(&mut Gateway) -> Result<T> + Send + 'static,
) -> Result<T> {
    let gateway = gateway.clone();
    tokio::task::spawn_blocking(move || {
        let mut g = gateway.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    })
    .await
    .map_err(|e| Error::new(ErrorKind::Unexpected, format!("HBase call panicked: {e}")))?
}

/// The checkpoint recorded for HBase table `table` in `checkpoint_table`.
async fn read_checkpoint(
    gateway: &Arc<Mutex<Gateway>>,
    checkpoint_table: &str,
    table: &str,
) -> Result<Option<Checkpoint>> {
    let (checkpoint_table, row) = (checkpoint_table.to_string(), table.as_bytes().to_vec());
    let result = on_gateway(gateway, move |g| g.get(&checkpoint_table, &row)).await?;
    let value = result
        .column_values
        .iter()
        .find(|c| c.qualifier == b"checkpoint")
        .map(|c| c.value.clone());
    value
        .map(|v| serde_json::from_slice(&v).map_err(Error::from))
        .transpose()
}

/// The checkpoint committed for HBase table `table`, read without opening a
/// sink (None before its first commit; the sink never creates tables, so
/// "no checkpoint" is all a runner can know).
pub async fn committed_checkpoint(
    config: &HBaseSinkConfig,
    table: &str,
) -> Result<Option<Checkpoint>> {
    let gateway = Arc::new(Mutex::new(Gateway::new(endpoint(config))));
    read_checkpoint(&gateway, &config.checkpoint_table, table).await
}

/// A row's final state since the last flush.
#[derive(Debug, Clone)]
enum Mutation {
    /// (qualifier, value or None for NULL) per column.
    Put(Vec<(Vec<u8>, Option<Vec<u8>>)>, u64),
    Delete(u64),
}

pub struct HBaseSink {
    config: HBaseSinkConfig,
    table: String,
    schema: Arc<TableSchema>,
    gateway: Arc<Mutex<Gateway>>,
    pending: BTreeMap<Vec<u8>, Mutation>,
    last_commit: std::time::Instant,
    committed: Option<Checkpoint>,
}

impl HBaseSink {
    /// Connects and reads the committed checkpoint.
    pub async fn open(config: HBaseSinkConfig, schema: &TableSchema) -> Result<HBaseSink> {
        config.validate()?;
        if schema.primary_key.is_empty() {
            return Err(Error::invalid_config(format!(
                "{} has no primary key: HBase row keys come from it",
                schema.table
            )));
        }
        let endpoint = endpoint(&config);
        let mut sink = HBaseSink {
            table: config.table_for(&schema.table),
            config,
            schema: Arc::new(schema.clone()),
            gateway: Arc::new(Mutex::new(Gateway::new(endpoint))),
            pending: BTreeMap::new(),
            last_commit: std::time::Instant::now(),
            committed: None,
        };
        sink.committed = sink.read_checkpoint().await?;
        Ok(sink)
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Runs a gateway call on the blocking pool.
    async fn on_gateway<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Gateway) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        on_gateway(&self.gateway, f).await
    }

    async fn read_checkpoint(&self) -> Result<Option<Checkpoint>> {
        read_checkpoint(&self.gateway, &self.config.checkpoint_table, &self.table).await
    }

    fn key_of(&self, values: &[Value]) -> Result<Vec<u8>> {
        let key: Vec<Value> = self
            .schema
            .primary_key
            .iter()
            .map(|&i| values[i].clone())
            .collect();
        row_key(&key, &self.config.row_key)
    }

    fn put_of(&self, values: &[Value], version: u64) -> Mutation {
        let cells = self
            .schema
            .columns
            .iter()
            .zip(values)
            .map(|(c, v)| (c.name.clone().into_bytes(), cell(v, self.config.values)))
            .collect();
        Mutation::Put(cells, version)
    }

    /// Buffers a batch, reduced per row key; flushes at `batch_rows`.
    pub async fn write_batch(&mut self, batch: &ChangeBatch) -> Result<()> {
        if batch.schema().fingerprint() != self.schema.fingerprint() {
            // New columns become new qualifiers: nothing to alter in HBase.
            self.schema = batch.schema().clone();
        }
        let changes = batch.keyed_changes(self.committed.as_ref(), |row| {
            let key = |image| match batch.row(image, row) {
                Some(values) => self.key_of(&values),
                None => Ok(Vec::new()),
            };
            Ok(key(Image::Before)? == key(Image::After)?)
        })?;
        for c in changes {
            if c.delete_before
                && let Some(old) = batch.row(Image::Before, c.row)
            {
                self.pending
                    .insert(self.key_of(&old)?, Mutation::Delete(c.version));
            }
            if c.upsert_after
                && let Some(new) = batch.row(Image::After, c.row)
            {
                let put = self.put_of(&new, c.version);
                self.pending.insert(self.key_of(&new)?, put);
            }
        }
        if self.pending.len() >= self.config.batch_rows {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends the buffered mutations: row and NULL-column deletes, then puts.
    /// The buffer is kept until both calls succeeded.
    pub async fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let family = self.config.column_family.clone().into_bytes();
        let (mut puts, mut deletes) = (Vec::new(), Vec::new());
        for (key, m) in &self.pending {
            match m {
                Mutation::Delete(v) => {
                    deletes.push(TDelete::new(key.clone(), None, (2 * v) as i64, None));
                }
                Mutation::Put(cells, v) => {
                    let ts = (2 * v + 1) as i64;
                    let (mut values, mut nulls) = (Vec::new(), Vec::new());
                    for (q, value) in cells {
                        match value {
                            Some(val) => values.push(TColumnValue::new(
                                family.clone(),
                                q.clone(),
                                val.clone(),
                                ts,
                            )),
                            None => nulls.push(TColumn::new(family.clone(), q.clone(), ts)),
                        }
                    }
                    if !nulls.is_empty() {
                        deletes.push(TDelete::new(
                            key.clone(),
                            nulls,
                            None,
                            TDeleteType::DELETE_COLUMNS,
                        ));
                    }
                    puts.push(TPut::new(key.clone(), values, ts));
                }
            }
        }
        let table = self.table.clone();
        self.on_gateway(move |g| {
            if !deletes.is_empty() {
                g.delete_multiple(&table, deletes)?;
            }
            g.put_multiple(&table, puts)
        })
        .await?;
        self.pending.clear();
        Ok(())
    }

    pub async fn commit_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        self.flush().await?;
        self.record_checkpoint(checkpoint).await
    }

    /// Writes the checkpoint row (after the data it covers is flushed).
    async fn record_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        let value = TColumnValue::new(
            self.config.column_family.clone().into_bytes(),
            b"checkpoint".to_vec(),
            serde_json::to_vec(checkpoint)?,
            ts,
        );
        let put = TPut::new(self.table.clone().into_bytes(), vec![value], ts);
        let table = self.config.checkpoint_table.clone();
        self.on_gateway(move |g| g.put_multiple(&table, vec![put]))
            .await?;
        self.committed = Some(checkpoint.clone());
        self.last_commit = std::time::Instant::now();
        Ok(())
    }
}

#[async_trait]
impl Sink for HBaseSink {
    async fn write(&mut self, batch: &ChangeBatch) -> Result<()> {
        self.write_batch(batch).await
    }

    async fn apply_schema_change(&mut self, change: &SchemaChange) -> Result<()> {
        let target = format!("HBase table {}", self.table);
        // New columns become new qualifiers: nothing to alter in HBase.
        self.schema = Arc::new(change.followed_schema(&target)?.clone());
        Ok(())
    }

    /// Prepare = flush: the cells are in HBase, at versions a replay
    /// rewrites identically; the checkpoint row makes them count.
    async fn prepare(&mut self, checkpoint: &Checkpoint) -> Result<Prepared> {
        self.flush().await?;
        Ok(Prepared {
            checkpoint: checkpoint.clone(),
            payload: serde_json::Value::Bool(true),
        })
    }

    async fn commit_prepared(&mut self, prepared: Vec<Prepared>) -> Result<()> {
        match prepared.last() {
            Some(last) => self.record_checkpoint(&last.checkpoint).await,
            None => Ok(()),
        }
    }

    fn commit_due(&self) -> bool {
        self.pending.len() >= self.config.batch_rows
            || self.last_commit.elapsed() >= self.config.commit_interval
    }

    fn discard_uncommitted(&mut self) {
        self.pending.clear();
    }

    async fn committed(&self) -> Result<Option<Checkpoint>> {
        Ok(self.committed.clone())
    }

    async fn health_check(&self) -> Result<()> {
        let table = self.config.checkpoint_table.clone();
        self.on_gateway(move |g| g.exists(&table, b"health"))
            .await
            .map(drop)
    }
}

/// `[sink.hbase]` as a pipeline's sink kind: one `HBaseSink` per source
/// table. HBase tables are never created: a missing checkpoint row is all
/// there is to know, so a target is `Missing` until its first commit.
pub struct HBaseSinkFactory {
    config: HBaseSinkConfig,
}

impl HBaseSinkFactory {
    pub fn new(config: HBaseSinkConfig) -> Result<HBaseSinkFactory> {
        config.validate()?;
        Ok(HBaseSinkFactory { config })
    }

    fn table(&self, table: &tributary_core::TableId) -> String {
        self.config.table_for(table)
    }
}

#[async_trait]
impl tributary_core::SinkFactory for HBaseSinkFactory {
    fn target_name(&self, table: &tributary_core::TableId) -> String {
        self.table(table)
    }

    async fn state(&self, table: &tributary_core::TableId) -> Result<tributary_core::TargetState> {
        Ok(
            match committed_checkpoint(&self.config, &self.table(table)).await? {
                Some(cp) => tributary_core::TargetState::Committed(cp),
                None => tributary_core::TargetState::Missing,
            },
        )
    }

    async fn reset(&self, _table: &tributary_core::TableId) -> Result<()> {
        Ok(())
    }

    async fn open(&self, schema: &TableSchema) -> Result<Box<dyn Sink>> {
        Ok(Box::new(
            HBaseSink::open(self.config.clone(), schema).await?,
        ))
    }

    /// The gateway and the checkpoint table, then each target table (the
    /// sink never creates tables, so a missing one is a failure here).
    async fn check(&self, tables: &[tributary_core::TableId]) -> Vec<tributary_core::CheckFinding> {
        use tributary_core::{CheckFinding, CheckStatus};
        const C: &str = "sink.hbase";
        let gateway = Arc::new(Mutex::new(Gateway::new(endpoint(&self.config))));
        let checkpoints = self.config.checkpoint_table.clone();
        let probe = on_gateway(&gateway, move |g| g.exists(&checkpoints, b"health")).await;
        let mut out = vec![CheckFinding::from_result(
            C,
            format!("gateway {}", self.config.address),
            &probe,
            |_| {
                format!(
                    "serves the checkpoint table {}",
                    self.config.checkpoint_table
                )
            },
        )];
        if probe.is_err() {
            return out;
        }
        for table in tables {
            let name = self.table(table);
            let t = name.clone();
            let exists = on_gateway(&gateway, move |g| g.exists(&t, b"tributary-check")).await;
            out.push(match exists {
                Ok(_) => CheckFinding::new(C, CheckStatus::Ok, format!("table {name}"), "exists"),
                Err(e) => CheckFinding::new(
                    C,
                    CheckStatus::Failed,
                    format!("table {name}"),
                    format!(
                        "{e}; fix: create it in the HBase shell (create '{name}', '{}')",
                        self.config.column_family
                    ),
                ),
            });
        }
        out
    }
}
