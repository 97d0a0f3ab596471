//! Table maintenance from the runtime: `sync` runs the sink kind's policy
//! in the background beside its writers (so a user who never sets up cron
//! still has healthy tables), and `tributary maintain` runs it once or on a
//! schedule. Maintenance commits like any other writer; the writers follow
//! its snapshots (see the Iceberg writer and the rewrite operation).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};
use tributary_core::{MaintainOptions, Report, Result, SinkFactory, SourceFactory, TableId};

use crate::status::PipelineStatus;

/// Runs the policy on every table the running pipeline has committed to,
/// every `interval`, and the sink's cheap check every `check_interval`
/// between those, until the task is dropped. Failures are logged and
/// retried at the next interval: the writers never wait for maintenance.
pub(crate) async fn background(
    sink: Arc<dyn SinkFactory>,
    status: PipelineStatus,
    interval: Duration,
) {
    let options = MaintainOptions::default();
    let Some(m) = sink.maintenance() else { return };
    let tick = m.check_interval().unwrap_or(interval).min(interval);
    let (mut next_full, mut ticks) = (Instant::now() + interval, 0usize);
    loop {
        tokio::time::sleep(tick).await;
        let full = Instant::now() >= next_full;
        if full {
            next_full = Instant::now() + interval;
        }
        let mut tables: Vec<TableId> = status
            .snapshot()
            .into_iter()
            .filter(|(_, s)| s.committed_round.is_some())
            .map(|(t, _)| t)
            .collect();
        // The cheap checks share one time budget: each tick starts at the
        // next table, so the first ones do not take it every time.
        if !tables.is_empty() {
            let start = ticks % tables.len();
            tables.rotate_left(start);
        }
        ticks += 1;
        for t in tables {
            let done = match full {
                true => m.maintain(&t, &options).await.map(Some),
                false => m.maintain_if_needed(&t).await,
            };
            match done {
                Ok(Some(r)) => info!(table = %t, "maintenance: {}", r.text),
                Ok(None) => {}
                Err(e) => {
                    warn!(table = %t, error = %e, "maintenance failed; retried next interval")
                }
            }
        }
    }
}

/// One maintenance pass over `tables` (default: every table the source
/// selects); stops at the first failure.
pub async fn maintain_once(
    source: &dyn SourceFactory,
    sink: &dyn SinkFactory,
    tables: &[TableId],
    options: &MaintainOptions,
) -> Result<Vec<Report>> {
    let Some(m) = sink.maintenance() else {
        return Err(tributary_core::Error::invalid_config(
            "this pipeline's sink kind has no table maintenance (only iceberg has)",
        ));
    };
    let tables = match tables {
        [] => source.list_tables().await?,
        t => t.to_vec(),
    };
    let mut reports = Vec::new();
    for t in &tables {
        reports.push(m.maintain(t, options).await?);
    }
    Ok(reports)
}
