//! Table operations: each snapshot-producing (or metadata-only) change is
//! one [`TableOperation`] in a file of its own, over the shared
//! [`producer`] (manifests, manifest list, summary totals, sequence
//! numbers). Every operation commits through [`commit_operation`]: the next
//! metadata is rebuilt from the newest version on every attempt (re-running
//! the operation's validation), with the table's `commit.retry.*` policy
//! when another writer won the race; a failed validation is returned as is.
//! New operations (maintenance) are new files implementing the trait.

pub mod expire;
pub mod merge;
pub mod producer;
pub mod rewrite;
pub mod rewrite_manifests;
pub mod row_delta;
pub mod schema;

use std::time::Duration;

use async_trait::async_trait;
use iceberg::spec::{Snapshot, TableMetadata};
use tributary_core::{Error, ErrorKind, Result, RetryPolicy, retry};

use crate::{Catalog, CatalogTable};

/// A change to a table, expressed as the next metadata of a given version.
#[async_trait]
pub trait TableOperation: Send + Sync {
    /// The next metadata of `base` with this change applied; `Ok(None)`
    /// when there is nothing to change. Fails `ValidationFailed` when the
    /// change no longer fits `base` (never retried).
    async fn apply(&self, base: &CatalogTable) -> Result<Option<TableMetadata>>;
}

/// Commits `op` on top of the newest version of `table`, retrying lost
/// races with the table's commit retry policy. Returns the new version (or
/// `table` when the operation had nothing to change).
///
/// Commits are idempotent: a commit whose outcome is unknown (a transport
/// error, a timeout, an S3 PUT retried by the SDK that meets its own object,
/// an HMS reply lost after the swap) is retried like a lost race, and every
/// attempt first looks for the snapshots earlier attempts made — the
/// snapshot id is the commit id. Found, the commit landed and is not applied
/// again. Operations without a snapshot (schema, properties, claims) are
/// idempotent by construction: applied again they change nothing.
pub async fn commit_operation(
    catalog: &dyn Catalog,
    table: &CatalogTable,
    op: &dyn TableOperation,
) -> Result<CatalogTable> {
    let policy = commit_retry_policy(&table.metadata);
    let conflict = |e: &Error| e.kind() == ErrorKind::CommitConflict;
    // The snapshots of attempts that did not land (lost a race: `true`) or
    // may have (outcome unknown: `false`, kept for every later check — a
    // delayed write lands only on the version it was built for, so a later
    // attempt either conflicts with it or it never lands).
    let made: std::sync::Mutex<Vec<(Snapshot, bool)>> = std::sync::Mutex::new(Vec::new());
    let made = &made;
    // A refused partition claim is final for this commit (the caller reads
    // again from the table), though the job goes on.
    let retried = |e: &Error| e.kind().is_transient() && e.kind() != ErrorKind::Reassigned;
    retry(&policy, retried, |attempt| async move {
        let base = match attempt {
            1 => table.clone(),
            _ => catalog.load_table(&table.name).await?,
        };
        let earlier = std::mem::take(&mut *made.lock().expect("not poisoned"));
        if let Some((landed, _)) = earlier
            .iter()
            .find(|(s, _)| base.metadata.snapshot_by_id(s.snapshot_id()).is_some())
        {
            tracing::info!(
                table = %table.name,
                snapshot = landed.snapshot_id(),
                "a commit whose outcome was unknown had landed; not applied again"
            );
            return Ok(base);
        }
        for (snapshot, lost) in earlier {
            if lost {
                clean_lost_attempt(&base, &snapshot).await;
            } else {
                made.lock().expect("not poisoned").push((snapshot, false));
            }
        }
        let next = match op.apply(&base).await {
            Ok(next) => next,
            // The caller's version may be stale, and its files expired by
            // maintenance meanwhile: a failure to build on it is a lost race
            // when a newer version exists (the retry builds on that).
            Err(e)
                if attempt == 1
                    && !matches!(e.kind(), ErrorKind::ValidationFailed | ErrorKind::Reassigned) =>
            {
                let newest = catalog.load_table(&table.name).await?;
                if newest.metadata_location == base.metadata_location {
                    return Err(e);
                }
                return Err(Error::new(
                    ErrorKind::CommitConflict,
                    format!("{} moved on while the commit was built", table.name),
                )
                .with_source(e));
            }
            Err(e) => return Err(e),
        };
        match next {
            Some(metadata) => {
                let snapshot = metadata
                    .current_snapshot()
                    .filter(|s| base.metadata.snapshot_by_id(s.snapshot_id()).is_none())
                    .map(|s| (**s).clone());
                let result = catalog.commit(&base, metadata).await;
                if let (Err(e), Some(snapshot)) = (&result, snapshot)
                    && retried(e)
                {
                    if !conflict(e) {
                        tracing::warn!(table = %table.name, error = %e, "commit outcome unknown; checking whether it landed");
                    }
                    made.lock()
                        .expect("not poisoned")
                        .push((snapshot, conflict(e)));
                }
                result
            }
            None => Ok(base),
        }
    })
    .await
}

/// After a lost race, deletes what the losing attempt wrote — its manifest
/// list and the manifests it added (merged ones too); the caller checked
/// that the newest version `base` does not hold its snapshot: every retry
/// would otherwise leave them behind as orphans (at one commit a second
/// beside maintenance, ~6 a minute). Data and delete files stay: the retry
/// commits them. Best effort.
async fn clean_lost_attempt(base: &CatalogTable, failed: &Snapshot) {
    let io = &base.file_io;
    if let Ok(manifests) = producer::snapshot_manifests(base, failed).await {
        for m in manifests
            .iter()
            .filter(|m| m.added_snapshot_id == failed.snapshot_id())
        {
            let _ = io.delete(&m.manifest_path).await;
        }
    }
    let _ = io.delete(failed.manifest_list()).await;
}

/// The retry policy of commits to `table`, from its `commit.retry.*`
/// properties (Iceberg's names and meaning: `num-retries` retries after the
/// first try, waits between `min-wait-ms` and `max-wait-ms`, no retry after
/// `total-timeout-ms`). Defaults differ from Java's (4 retries, 100 ms–60 s)
/// because a streaming writer and maintenance commit to one table: 10
/// retries, 10 ms–2 s, 30 min.
pub fn commit_retry_policy(table: &TableMetadata) -> RetryPolicy {
    let prop = |key: &str, default: u64| -> u64 {
        table
            .properties()
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let retries = prop("commit.retry.num-retries", 10);
    let min = prop("commit.retry.min-wait-ms", 10);
    RetryPolicy {
        attempts: u32::try_from(retries.saturating_add(1)).unwrap_or(u32::MAX),
        min_delay: Duration::from_millis(min),
        max_delay: Duration::from_millis(prop("commit.retry.max-wait-ms", 2000).max(min)),
        total_delay: Some(Duration::from_millis(prop(
            "commit.retry.total-timeout-ms",
            1_800_000,
        ))),
    }
}
