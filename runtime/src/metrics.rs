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
    watermark: Family<TableLabel, FloatGauge>,
    lag: Family<TableLabel, FloatGauge>,
    paused: Family<TableLabel, Gauge>,
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
        Metrics {
            inner: Arc::new(Inner {
                registry,
                events,
                snapshot_rows,
                commit_seconds,
                rounds,
                restarts,
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
