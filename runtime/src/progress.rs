//! How a long initial read shows its progress: a bar on a terminal
//! (indicatif: rows, rows/s, ETA against the server's row estimates) and
//! a plain log line every `progress_interval` otherwise (a service's log,
//! `kubectl logs`), then one line when the read is done.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tracing::info;
use tributary_core::TableId;

/// `progress_interval` when unset.
pub(crate) const PROGRESS_INTERVAL: Duration = Duration::from_secs(10);

/// The progress of one run's snapshot reads.
pub(crate) struct SnapshotProgressView {
    /// Rows the server estimates for the tables this run reads in full
    /// (None: resuming a read part-way, or no estimate).
    expected: Option<u64>,
    tables: usize,
    read: BTreeMap<TableId, u64>,
    started: Option<Instant>,
    last_line: Instant,
    interval: Duration,
    bar: Option<indicatif::ProgressBar>,
    done: bool,
}

impl SnapshotProgressView {
    /// `tables` are read in full this run (`expected` rows in all, when
    /// known); `terminal`: draw a bar instead of log lines.
    pub(crate) fn new(
        tables: usize,
        expected: Option<u64>,
        interval: Duration,
        terminal: bool,
    ) -> SnapshotProgressView {
        let bar = terminal.then(|| {
            let bar = match expected {
                Some(n) => indicatif::ProgressBar::new(n),
                None => indicatif::ProgressBar::no_length(),
            };
            let template = if expected.is_some() {
                "snapshot {bar:30} {human_pos}/~{human_len} rows, {per_sec}, ETA {eta} {msg}"
            } else {
                "snapshot {spinner} {human_pos} rows, {per_sec} {msg}"
            };
            if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            bar
        });
        SnapshotProgressView {
            expected,
            tables,
            read: BTreeMap::new(),
            started: None,
            last_line: Instant::now(),
            interval,
            bar,
            done: false,
        }
    }

    /// `n` snapshot rows of `table` were read.
    pub(crate) fn rows(&mut self, table: &TableId, n: u64) {
        if self.done || n == 0 {
            return;
        }
        let now = Instant::now();
        let started = *self.started.get_or_insert(now);
        *self.read.entry(table.clone()).or_default() += n;
        let total = self.total();
        if let Some(bar) = &self.bar {
            if self.expected.is_some_and(|e| total > e) {
                bar.set_length(total); // the estimate was low
            }
            bar.set_position(total);
            bar.set_message(format!(
                "({} of {} tables begun)",
                self.read.len(),
                self.tables
            ));
            return;
        }
        if now.duration_since(self.last_line) < self.interval {
            return;
        }
        self.last_line = now;
        let secs = now.duration_since(started).as_secs_f64().max(1e-3);
        let rate = total as f64 / secs;
        let of = match self.expected {
            Some(e) if e > 0 => {
                let left = e.saturating_sub(total) as f64 / rate.max(1.0);
                format!(
                    " of ~{e} ({:.0}%), ETA {}",
                    (total as f64 * 100.0 / e as f64).min(100.0),
                    humantime::format_duration(Duration::from_secs(left.ceil() as u64))
                )
            }
            _ => String::new(),
        };
        info!(
            tables_begun = self.read.len(),
            tables = self.tables,
            "snapshot progress: {total} rows{of}, {rate:.0} rows/s, table {table}"
        );
    }

    /// The source's checkpoint says its initial read is over.
    pub(crate) fn finished(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        let Some(started) = self.started else {
            return; // nothing was read this run
        };
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let secs = started.elapsed().as_secs_f64();
        let total = self.total();
        info!(
            tables = self.read.len(),
            "snapshot done: {total} rows in {secs:.1} s ({:.0} rows/s)",
            total as f64 / secs.max(1e-3)
        );
    }

    fn total(&self) -> u64 {
        self.read.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_rows_per_table_and_finishes_once() {
        let mut v = SnapshotProgressView::new(2, Some(10), Duration::ZERO, false);
        let (a, b) = (TableId::new("d", "a"), TableId::new("d", "b"));
        v.rows(&a, 4);
        v.rows(&b, 3);
        v.rows(&a, 1);
        assert_eq!((v.total(), v.read.len()), (8, 2));
        v.finished();
        v.rows(&a, 5);
        assert_eq!(v.total(), 8, "rows after the end are not the snapshot's");
    }
}
