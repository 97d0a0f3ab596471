//! Commits: `prepare` writes every file of the next snapshot (spills, delete
//! files) and returns the encoded `RowDelta`; `commit_prepared` commits it
//! with the checkpoint in the summary, re-planning the deletes if a rewrite
//! removed files they point at; the key index moves on only after the
//! commit is durable.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use tributary_catalog::{CatalogTable, Rebase, RowDelta, commit_row_delta};
use tributary_core::{Checkpoint, ErrorKind, PartitionClaim, Prepared, Result, TableId};

use super::{CHECKPOINT_PROPERTY, UpsertWriter, committed_checkpoint};

/// Puts `checkpoint` in the delta's summary, with its owner epoch and
/// owner as plain properties the commit is fenced by. A checkpoint of a
/// consumer-group worker (a `PartitionClaim` for `table`) is merged into
/// the checkpoint of the version the commit lands on instead, and refused
/// if another worker committed one of its partitions meanwhile; `expected`
/// is where its ranges start (its own last commit in this run).
pub(crate) fn stamp_claimed(
    delta: &mut RowDelta,
    checkpoint: &Checkpoint,
    table: &TableId,
    expected: &BTreeMap<i32, i64>,
) -> Result<Option<PartitionClaim>> {
    stamp(delta, checkpoint)?;
    let Some(claim) = PartitionClaim::of(checkpoint, table)? else {
        return Ok(None);
    };
    // Other workers write the other partitions' keys: rows they add are
    // not ours to delete; the claim keeps partitions apart instead.
    delta.exclusive = false;
    let (ours, table, expected, c) = (
        checkpoint.clone(),
        table.clone(),
        expected.clone(),
        claim.clone(),
    );
    delta.rebase = Some(Rebase(Arc::new(move |base: &CatalogTable| {
        let committed = committed_checkpoint(base)?;
        let merged = c.merge(&ours, committed.as_ref(), &table, &expected)?;
        stamped(&merged)
    })));
    Ok(Some(claim))
}

/// `stamp_claimed` of a checkpoint known to hold no claim.
pub(crate) fn stamp(delta: &mut RowDelta, checkpoint: &Checkpoint) -> Result<()> {
    delta.properties.extend(stamped(checkpoint)?);
    delta.fence_epoch = checkpoint.epoch();
    Ok(())
}

/// The summary properties of `checkpoint`.
fn stamped(checkpoint: &Checkpoint) -> Result<HashMap<String, String>> {
    let mut properties = HashMap::new();
    properties.insert(
        CHECKPOINT_PROPERTY.to_string(),
        serde_json::to_string(checkpoint)?,
    );
    for key in [
        tributary_core::EPOCH_PROPERTY,
        tributary_core::OWNER_PROPERTY,
    ] {
        if let Some(v) = checkpoint.properties.get(key) {
            properties.insert(key.to_string(), v.clone());
        }
    }
    // Completeness for schedulers that read only the catalog: every source
    // change committed before this time is in the table (see
    // `Checkpoint::watermark_micros`).
    if let Some(w) = checkpoint.watermark_micros {
        properties.insert(
            WATERMARK_PROPERTY.to_string(),
            w.div_euclid(1000).to_string(),
        );
    }
    Ok(properties)
}

/// Snapshot summary property: the table's completeness watermark in
/// milliseconds since the Unix epoch (Tributary's name, not Iceberg's).
pub const WATERMARK_PROPERTY: &str = "tributary.watermark-ms";

impl UpsertWriter {
    /// Commits everything buffered together with `checkpoint`. If a rewrite
    /// (compaction) replaced files our position deletes point at, the table
    /// and index are reloaded and the deletes planned again.
    pub async fn commit_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        let prepared = self.prepare_checkpoint(checkpoint).await?;
        self.commit_prepared_deltas(vec![prepared]).await
    }

    /// Writes every file the next commit adds (spills, position and
    /// equality deletes) without committing: the returned payload is the
    /// encoded `RowDelta`, or null when nothing is due (nothing to write and
    /// the position was recorded recently; a table with no checkpoint yet
    /// records one at once: a runner resumes from the oldest, and "none"
    /// means from the start).
    pub async fn prepare_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<Prepared> {
        let idle = self.reduction.is_empty() && self.spills.is_empty() && !self.truncate_pending;
        let recorded = self.committed.is_some();
        let payload = if idle
            && recorded
            && self.last_snapshot.elapsed() < self.config.idle_commit_interval
        {
            serde_json::Value::Null
        } else {
            let delta = self.plan_delta().await?;
            delta.encode(&self.table.metadata)?
        };
        Ok(Prepared {
            checkpoint: checkpoint.clone(),
            payload,
        })
    }

    /// Commits prepared deltas (of this writer, oldest first) as one
    /// snapshot carrying the last checkpoint. A concurrent rewrite of files
    /// the deletes point at (`ValidationFailed`) reloads the table and
    /// index and plans the deletes again, up to 5 times.
    pub(super) async fn commit_prepared_deltas(&mut self, prepared: Vec<Prepared>) -> Result<()> {
        let Some(checkpoint) = prepared.last().map(|p| p.checkpoint.clone()) else {
            return Ok(());
        };
        let mut delta: Option<RowDelta> = None;
        for p in prepared.iter().filter(|p| !p.payload.is_null()) {
            let next = RowDelta::decode(&p.payload, &self.table.metadata)?;
            match delta.as_mut() {
                Some(d) => d.merge(next),
                None => delta = Some(next),
            }
        }
        let Some(mut delta) = delta else {
            self.last_commit = Instant::now();
            return Ok(());
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let claim = stamp_claimed(&mut delta, &checkpoint, &self.source.table, &self.claimed)?;
            let known = self.table.metadata.current_snapshot_id();
            match commit_row_delta(self.catalog.as_ref(), &self.table, &delta).await {
                Ok(table) => {
                    let checkpoint = match claim {
                        Some(claim) => {
                            claim.committed_to(&mut self.claimed);
                            committed_checkpoint(&table)?.unwrap_or(checkpoint.clone())
                        }
                        None => checkpoint.clone(),
                    };
                    // Another writer's snapshot (a compaction) landed before
                    // ours: the index must follow its removed and added files.
                    let foreign = table
                        .metadata
                        .current_snapshot()
                        .is_some_and(|s| s.parent_snapshot_id() != known);
                    self.table = table;
                    let found = std::mem::take(&mut self.planned_found);
                    self.committed_now(found, &delta, &checkpoint);
                    self.others_commit |= foreign;
                    if foreign || known != self.index_at {
                        self.load_index().await?;
                    } else {
                        self.index_at = self.table.metadata.current_snapshot_id();
                    }
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::ValidationFailed && attempt < 5 => {
                    self.others_commit = true;
                    self.table = self.catalog.load_table(&self.table.name).await?;
                    self.load_index().await?;
                    delta = self.plan_delta().await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// After a durable commit: the index takes the new files and deletes,
    /// and the buffers start over.
    fn committed_now(
        &mut self,
        found: Vec<(Arc<str>, i64)>,
        delta: &RowDelta,
        checkpoint: &Checkpoint,
    ) {
        for d in &delta.delete_files {
            match d.content_type() {
                iceberg::spec::DataContentType::EqualityDeletes => {
                    self.delete_files_committed.1 += 1;
                }
                _ => {
                    let targets = self
                        .planned_delete_targets
                        .remove(d.file_path())
                        .unwrap_or_default();
                    self.index.applied_delete_file(d.file_path(), targets);
                    self.delete_files_committed.0 += 1;
                }
            }
        }
        self.planned_delete_targets.clear();
        let superseded: Vec<(Arc<str>, i64)> = self
            .superseded_rows()
            .map(|(path, pos)| (path.clone(), pos))
            .collect();
        for (path, pos) in found.iter().chain(&superseded) {
            self.index.mark_deleted(path, *pos);
        }
        for path in &delta.removed {
            self.index.remove_file(path);
            let data = self.committed_files.remove(path.as_str());
            self.copy_on_write_files += u64::from(data.is_some());
        }
        for spill in self.spills.drain(..).chain(self.rewritten.drain(..)) {
            let path = spill.summary.path().clone();
            let file = super::CommittedFile {
                partition: spill.file.partition().clone(),
                bytes: spill.file.file_size_in_bytes(),
            };
            self.committed_files.insert(path, file);
            self.index.add_file(spill.summary, spill.keys);
        }
        self.reduction.clear();
        if delta.truncate {
            self.truncate_pending = false;
        }
        (self.changes_since_commit, self.bytes_since_commit) = (0, 0);
        (self.last_commit, self.last_snapshot) = (Instant::now(), Instant::now());
        self.committed = Some(checkpoint.clone());
    }
}
