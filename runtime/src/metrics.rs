//! Prometheus metrics of a running pipeline (`/metrics`), with Prometheus
//! naming: counters end in `_total`, times are seconds, timestamps are
//! `_timestamp_seconds`. Filled by the runner; lag and watermark gauges are
//! set from the status at each scrape, so they move while the source idles.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tributary_core::{ChangeBatch, Op, TableId};

use crate::status::PipelineStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabel {
    table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableOp {
    table: String,
    op: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableKind {
    table: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableDirection {
    table: String,
    direction: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The pipeline's metrics; cheap to clone and share.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    events: Family<TableOp, Counter>,
    snapshot_rows: Family<TableLabel, Counter>,
    commit_seconds: Family<TableLabel, Histogram>,
    rounds: Counter,
    restarts: Counter,
    dead_letters: Counter,
    watermark: Family<TableLabel, FloatGauge>,
    lag: Family<TableLabel, FloatGauge>,
    paused: Family<TableLabel, Gauge>,
    delete_files: Family<TableKind, Counter>,
    copy_on_write_files: Family<TableLabel, Counter>,
    bloom_tests: Family<TableLabel, Counter>,
    bloom_skips: Family<TableLabel, Counter>,
    bloom_skip_ratio: Family<TableLabel, FloatGauge>,
    record_seconds: Family<TableLabel, Histogram>,
    ha_switches: Family<TableDirection, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let events = Family::<TableOp, Counter>::default();
        registry.register(
            "tributary_events",
            "Change events handed to the sink, by source table and operation (read = snapshot row)",
            events.clone(),
        );
        let snapshot_rows = Family::<TableLabel, Counter>::default();
        registry.register(
            "tributary_snapshot_rows",
            "Rows read by snapshots, by source table",
            snapshot_rows.clone(),
        );
        let commit_seconds = Family::<TableLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 14))
        });
        registry.register(
            "tributary_sink_commit_duration_seconds",
            "Time of one table's commit in a commit round",
            commit_seconds.clone(),
        );
        let rounds = Counter::default();
        registry.register(
            "tributary_commit_rounds",
            "Commit rounds completed",
            rounds.clone(),
        );
        let restarts = Counter::default();
        registry.register(
            "tributary_restarts",
            "Runs started again from the last commit after a transient failure",
            restarts.clone(),
        );
        let dead_letters = Counter::default();
        registry.register(
            "tributary_dead_letters",
            "Messages the source could not read, set aside in its dead-letter topic",
            dead_letters.clone(),
        );
        let watermark = Family::<TableLabel, FloatGauge>::default();
        registry.register(
            "tributary_table_watermark_timestamp_seconds",
            "Every source change committed before this time is in the table's target",
            watermark.clone(),
        );
        let lag = Family::<TableLabel, FloatGauge>::default();
        registry.register(
            "tributary_source_lag_seconds",
            "Now minus the table's watermark",
            lag.clone(),
        );
        let paused = Family::<TableLabel, Gauge>::default();
        registry.register(
            "tributary_table_paused",
            "1 while the table is paused (on_table_error = \"pause\")",
            paused.clone(),
        );
        let delete_files = Family::<TableKind, Counter>::default();
        registry.register(
            "tributary_delete_files",
            "Delete files committed, by table and kind (position, equality)",
            delete_files.clone(),
        );
        let copy_on_write_files = Family::<TableLabel, Counter>::default();
        registry.register(
            "tributary_copy_on_write_files",
            "Committed data files a commit wrote again without their changed rows (instead of \
             position deletes)",
            copy_on_write_files.clone(),
        );
        let bloom_tests = Family::<TableLabel, Counter>::default();
        registry.register(
            "tributary_bloom_filter_tests",
            "Key lookups' data files whose key range held the key (their bloom filter was tested)",
            bloom_tests.clone(),
        );
        let bloom_skips = Family::<TableLabel, Counter>::default();
        registry.register(
            "tributary_bloom_filter_skips",
            "Of those, the files the bloom filter ruled out (a file read saved)",
            bloom_skips.clone(),
        );
        let bloom_skip_ratio = Family::<TableLabel, FloatGauge>::default();
        registry.register(
            "tributary_bloom_filter_skip_ratio",
            "Skips over tests since the job started",
            bloom_skip_ratio.clone(),
        );
        let record_seconds = Family::<TableLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(1e-7, 4.0, 12))
        });
        registry.register(
            "tributary_record_processing_seconds",
            "Time per record of handing a batch to its sink (the batch's write time over its \
             rows, observed once per batch)",
            record_seconds.clone(),
        );
        let ha_switches = Family::<TableDirection, Counter>::default();
        registry.register(
            "tributary_ha_switches",
            "Switches of an HA sink pair, by direction (failover, failback)",
            ha_switches.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                delete_files,
                copy_on_write_files,
                bloom_tests,
                bloom_skips,
                bloom_skip_ratio,
                record_seconds,
                ha_switches,
                registry,
                events,
                snapshot_rows,
                commit_seconds,
                rounds,
                restarts,
                dead_letters,
                watermark,
                lag,
                paused,
            }),
        }
    }
}

fn label(table: &TableId) -> TableLabel {
    TableLabel {
        table: table.to_string(),
    }
}

impl Metrics {
    /// Counts a batch's rows by operation.
    pub(crate) fn batch(&self, batch: &ChangeBatch) {
        let table = batch.schema().table.to_string();
        let mut counts = [0u64; 4];
        for row in 0..batch.len() {
            counts[batch.op(row) as usize] += 1;
        }
        for (op, n) in [Op::Read, Op::Insert, Op::Update, Op::Delete]
            .into_iter()
            .zip(counts)
            .filter(|(_, n)| *n > 0)
        {
            let name = match op {
                Op::Read => "read",
                Op::Insert => "insert",
                Op::Update => "update",
                Op::Delete => "delete",
            };
            self.inner
                .events
                .get_or_create(&TableOp {
                    table: table.clone(),
                    op: name.to_string(),
                })
                .inc_by(n);
            if op == Op::Read {
                let t = TableLabel {
                    table: table.clone(),
                };
                self.inner.snapshot_rows.get_or_create(&t).inc_by(n);
            }
        }
    }

    /// A batch of `rows` took `seconds` to hand to its sink.
    pub(crate) fn batch_written(&self, table: &TableId, rows: usize, seconds: f64) {
        if rows > 0 {
            self.inner
                .record_seconds
                .get_or_create(&label(table))
                .observe(seconds / rows as f64);
        }
    }

    /// What a table's sink counted since the last call (`SinkCounters::since`).
    pub(crate) fn sink_counters(&self, table: &TableId, d: &tributary_core::SinkCounters) {
        let name = table.to_string();
        for (kind, n) in [
            ("position", d.position_delete_files),
            ("equality", d.equality_delete_files),
        ] {
            let l = TableKind {
                table: name.clone(),
                kind: kind.to_string(),
            };
            self.inner.delete_files.get_or_create(&l).inc_by(n);
        }
        for (direction, n) in [("failover", d.failovers), ("failback", d.failbacks)] {
            if n > 0 {
                let l = TableDirection {
                    table: name.clone(),
                    direction: direction.to_string(),
                };
                self.inner.ha_switches.get_or_create(&l).inc_by(n);
            }
        }
        let l = label(table);
        self.inner
            .copy_on_write_files
            .get_or_create(&l)
            .inc_by(d.copy_on_write_files);
        let tests = self
            .inner
            .bloom_tests
            .get_or_create(&l)
            .inc_by(d.bloom_tests)
            + d.bloom_tests;
        let skips = self
            .inner
            .bloom_skips
            .get_or_create(&l)
            .inc_by(d.bloom_skips)
            + d.bloom_skips;
        if tests > 0 {
            self.inner
                .bloom_skip_ratio
                .get_or_create(&l)
                .set(skips as f64 / tests as f64);
        }
    }

    pub(crate) fn commit(&self, table: &TableId, seconds: f64) {
        self.inner
            .commit_seconds
            .get_or_create(&label(table))
            .observe(seconds);
    }

    pub(crate) fn round(&self) {
        self.inner.rounds.inc();
    }

    pub(crate) fn restart(&self) {
        self.inner.restarts.inc();
    }

    /// Follows the source's running count of set-aside messages.
    pub(crate) fn dead_letters(&self, total: u64) {
        let counted = self.inner.dead_letters.get();
        if total > counted {
            self.inner.dead_letters.inc_by(total - counted);
        }
    }

    /// The text exposition (OpenMetrics), with the gauges set from `status`.
    pub fn render(&self, status: &PipelineStatus) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        for (table, s) in status.snapshot() {
            let l = label(&table);
            if let Some(w) = s.watermark_micros {
                let w = w as f64 / 1e6;
                self.inner.watermark.get_or_create(&l).set(w);
                self.inner.lag.get_or_create(&l).set((now - w).max(0.0));
            }
            self.inner
                .paused
                .get_or_create(&l)
                .set(i64::from(s.paused.is_some()));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry);
        out
    }
}
