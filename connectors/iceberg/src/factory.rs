//! `[sink.iceberg]` as a pipeline's sink kind: one catalog, one
//! `UpsertWriter` per source table.

use std::sync::Arc;

use async_trait::async_trait;
use tributary_catalog::{
    Catalog, CatalogTable, RowDelta, TableOperation, commit_operation, commit_row_delta,
};
use tributary_core::{
    Checkpoint, ErrorKind, MaintainOptions, Report, Result, Sink, SinkFactory, TableId,
    TableSchema, TargetMaintenance, TargetState,
};

use crate::config::IcebergSinkConfig;
use crate::writer::{UpsertWriter, committed_checkpoint, stamp, stamp_claimed};

pub struct IcebergSinkFactory {
    config: IcebergSinkConfig,
    catalog: Arc<dyn Catalog>,
    read_cost_check: tributary_maintenance::ReadCostCheck,
}

impl IcebergSinkFactory {
    /// Validates `config` and builds its catalog (no connection yet).
    pub fn new(config: IcebergSinkConfig) -> Result<IcebergSinkFactory> {
        config.validate()?;
        if let Some(bytes) = config.key_cache_bytes {
            crate::key_index::set_key_cache_budget(bytes);
        }
        Ok(IcebergSinkFactory {
            catalog: config.catalog()?,
            config,
            read_cost_check: Default::default(),
        })
    }
}

#[async_trait]
impl SinkFactory for IcebergSinkFactory {
    fn target_name(&self, table: &TableId) -> String {
        self.config.table_name(table).to_string()
    }

    async fn state(&self, table: &TableId) -> Result<TargetState> {
        match self
            .catalog
            .load_table(&self.config.table_name(table))
            .await
        {
            Ok(t) => Ok(match committed_checkpoint(&t)? {
                Some(cp) => TargetState::Committed(cp),
                None => TargetState::CreatedWithoutCheckpoint,
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(TargetState::Missing),
            Err(e) => Err(e),
        }
    }

    /// Iceberg tables only get data in commits that carry a checkpoint:
    /// one without holds nothing to empty (nor does one `discard` emptied).
    async fn reset(&self, _table: &TableId) -> Result<()> {
        Ok(())
    }

    /// One snapshot that removes every live file (as a TRUNCATE does) and
    /// carries a checkpoint with no position, marked `tributary.resnapshot`
    /// and claimed with `epoch`: a `sync` still writing is fenced at its
    /// next commit instead of adding rows over the emptied table.
    async fn discard(&self, table: &TableId, epoch: u64, owner: &str) -> Result<()> {
        let name = self.config.table_name(table);
        let t = self.catalog.load_table(&name).await?;
        let mut checkpoint = Checkpoint::default();
        for (key, value) in [
            (tributary_core::EPOCH_PROPERTY, epoch.to_string()),
            (tributary_core::OWNER_PROPERTY, owner.to_string()),
            (tributary_core::RESNAPSHOT_PROPERTY, "requested".to_string()),
        ] {
            checkpoint.properties.insert(key.to_string(), value);
        }
        let mut delta = RowDelta {
            truncate: true,
            ..RowDelta::default()
        };
        stamp(&mut delta, &checkpoint)?;
        commit_row_delta(&*self.catalog, &t, &delta)
            .await
            .map_err(|e| e.with_context("table", &name))?;
        Ok(())
    }

    async fn open(&self, schema: &TableSchema) -> Result<Box<dyn Sink>> {
        let id = &schema.table;
        let writer = UpsertWriter::open_config(
            self.catalog.clone(),
            self.config.table_name(id),
            schema,
            self.config.writer_config(id)?,
        )
        .await?;
        Ok(Box::new(writer))
    }

    /// One snapshot with no files and the checkpoint in its summary (what
    /// an idle writer commits); skipped if the table already holds a
    /// commit of this round or a later one.
    async fn commit_position(&self, table: &TableId, checkpoint: &Checkpoint) -> Result<bool> {
        let name = self.config.table_name(table);
        let t = self.catalog.load_table(&name).await?;
        let done = committed_checkpoint(&t)?;
        let claim = tributary_core::PartitionClaim::of(checkpoint, table)?;
        // Rounds are a single runner's; workers of a group each count theirs.
        if claim.is_none()
            && let Some(done) = &done
            && done.round() >= checkpoint.round()
        {
            return Ok(true);
        }
        // A claim starts where this run started it; a partition already
        // committed to where it ends is fine too (no rows are written).
        let mut expected = std::collections::BTreeMap::new();
        if let (Some(claim), Some(done)) = (&claim, &done) {
            let committed = tributary_core::partitions::committed_offsets(done, table);
            for (p, next) in &claim.next {
                if committed.get(p) == Some(next) {
                    expected.insert(*p, *next);
                }
            }
        }
        let mut delta = RowDelta::default();
        stamp_claimed(&mut delta, checkpoint, table, &expected)?;
        commit_row_delta(&*self.catalog, &t, &delta)
            .await
            .map_err(|e| e.with_context("table", &name))?;
        Ok(true)
    }

    async fn claim(&self, table: &TableId, epoch: u64, owner: &str) -> Result<()> {
        let name = self.config.table_name(table);
        let t = self.catalog.load_table(&name).await?;
        let claim = Claim {
            epoch,
            owner: owner.to_string(),
        };
        commit_operation(&*self.catalog, &t, &claim)
            .await
            .map_err(|e| e.with_context("table", &name))?;
        Ok(())
    }

    fn merges_partition_claims(&self) -> bool {
        true
    }

    /// The writers' `idle_commit_interval`, so that idle tables and open
    /// idle writers move their watermarks on alike.
    fn idle_interval(&self) -> Option<std::time::Duration> {
        self.config.idle_commit_interval
    }

    fn maintenance(&self) -> Option<&dyn TargetMaintenance> {
        Some(self)
    }

    /// The table's version and metadata file, the writer's checkpoint and
    /// watermark, what it holds (files by kind, bytes, manifests,
    /// snapshots), the newest snapshots, and what maintenance finds due (a
    /// dry run of the configured policy).
    async fn inspect(&self, table: &TableId) -> Result<Report> {
        let name = self.config.table_name(table);
        let t = self
            .catalog
            .load_table(&name)
            .await
            .map_err(|e| e.with_context("table", &name))?;
        let policy = self.config.maintenance.for_table(&table.to_string())?;
        let shape = tributary_maintenance::shape(&t, &policy).await?;
        let checkpoint = committed_checkpoint(&t)?;
        let due = tributary_maintenance::maintain_table(&*self.catalog, &name, &policy, true)
            .await
            .map(|r| r.actions)
            .map_err(|e| e.with_context("table", &name))?;
        let at = |ms: i64| {
            let t = std::time::UNIX_EPOCH
                + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
            humantime::format_rfc3339_millis(t).to_string()
        };
        let mut snapshots: Vec<_> = t.metadata.snapshots().collect();
        snapshots.sort_by_key(|s| std::cmp::Reverse((s.sequence_number(), s.timestamp_ms())));
        let newest: Vec<serde_json::Value> = snapshots
            .iter()
            .take(5)
            .map(|s| {
                let p = &s.summary().additional_properties;
                serde_json::json!({
                    "snapshot_id": s.snapshot_id(),
                    "sequence_number": s.sequence_number(),
                    "time": at(s.timestamp_ms()),
                    "operation": s.summary().operation.as_str(),
                    "added_records": p.get("added-records"),
                    "deleted_records": p.get("deleted-records"),
                    "by_tributary": p.contains_key("tributary.checkpoint"),
                })
            })
            .collect();
        let watermark = checkpoint
            .as_ref()
            .and_then(|c| c.watermark_micros)
            .map(|w| at(w.div_euclid(1000)));
        let position = checkpoint
            .as_ref()
            .and_then(|c| c.position.as_ref())
            .map(ToString::to_string);
        let json = serde_json::json!({
            "table": name.to_string(),
            "source": table.to_string(),
            "version": t.version,
            "metadata_location": t.metadata_location,
            "location": t.metadata.location(),
            "position": position,
            "round": checkpoint.as_ref().and_then(Checkpoint::round),
            "watermark": watermark,
            "shape": shape,
            "newest_snapshots": newest,
            "maintenance_due": due,
        });
        let mut text = vec![
            format!(
                "{name} (from {table}), version {} at {}",
                t.version, t.metadata_location
            ),
            format!(
                "  committed: position {}, watermark {}",
                position.as_deref().unwrap_or("-"),
                watermark.as_deref().unwrap_or("-")
            ),
            format!(
                "  files: {} data ({} small), {} position-delete, {} equality-delete; {} data \
                 bytes, {} delete bytes; {} manifests, {} snapshots",
                shape.data_files,
                shape.small_files,
                shape.position_delete_files,
                shape.equality_delete_files,
                shape.data_bytes,
                shape.delete_bytes,
                shape.manifests,
                shape.snapshots
            ),
            "  newest snapshots:".to_string(),
        ];
        for s in &newest {
            text.push(format!(
                "    {} seq {} {} {} (+{} -{} records)",
                s["snapshot_id"],
                s["sequence_number"],
                s["time"].as_str().unwrap_or(""),
                s["operation"].as_str().unwrap_or(""),
                s["added_records"].as_str().unwrap_or("0"),
                s["deleted_records"].as_str().unwrap_or("0"),
            ));
        }
        text.push(match due.is_empty() {
            true => "  health: no maintenance due".to_string(),
            false => format!("  health: maintenance due: {}", due.join(", ")),
        });
        Ok(Report {
            text: text.join("\n"),
            json,
        })
    }

    /// Each target through the catalog (which also shows the catalog and
    /// its store are reachable), and the catalog's compare-and-swap on the
    /// first existing one (a probe that changes nothing).
    async fn check(&self, tables: &[TableId]) -> Vec<tributary_core::CheckFinding> {
        use tributary_core::{CheckFinding, CheckStatus};
        const C: &str = "sink.iceberg";
        let mut out = Vec::new();
        let mut first = None;
        for table in tables {
            let name = self.config.table_name(table);
            let what = format!("table {name}");
            match self.catalog.load_table(&name).await {
                Ok(t) => {
                    let summary = t
                        .metadata
                        .current_snapshot()
                        .map(|s| s.summary().additional_properties.clone());
                    let total = |k: &str| {
                        summary
                            .as_ref()
                            .and_then(|p| p.get(k).cloned())
                            .unwrap_or_else(|| "0".into())
                    };
                    let committed = match committed_checkpoint(&t) {
                        Ok(Some(cp)) => cp
                            .position
                            .map_or("committed".into(), |p| format!("committed at {p}")),
                        Ok(None) => "nothing committed yet".into(),
                        Err(e) => format!("unreadable checkpoint: {e}"),
                    };
                    out.push(CheckFinding::new(
                        C,
                        CheckStatus::Ok,
                        what,
                        format!(
                            "version {}, {} snapshots, {} data files, {} delete files; {committed}",
                            t.version,
                            t.metadata.snapshots().count(),
                            total("total-data-files"),
                            total("total-delete-files"),
                        ),
                    ));
                    first.get_or_insert(t);
                }
                Err(e) if e.kind() == ErrorKind::NotFound => out.push(CheckFinding::new(
                    C,
                    CheckStatus::Ok,
                    what,
                    "not created yet: the first start creates it",
                )),
                Err(e) => out.push(CheckFinding::new(
                    C,
                    CheckStatus::Failed,
                    what,
                    e.to_string(),
                )),
            }
        }
        out.push(match first {
            Some(t) => CheckFinding::from_result(
                C,
                "compare-and-swap",
                &self.catalog.verify_compare_and_swap(&t).await,
                |()| format!("enforced (probed on {})", t.name),
            ),
            None => CheckFinding::new(
                C,
                CheckStatus::Warning,
                "compare-and-swap",
                "no target table exists yet to probe it on: the first start checks it before \
                 its first commit",
            ),
        });
        out
    }
}

#[async_trait]
impl TargetMaintenance for IcebergSinkFactory {
    fn background_interval(&self) -> Option<std::time::Duration> {
        let m = &self.config.maintenance;
        m.enabled.then_some(m.interval)
    }

    async fn maintain(&self, table: &TableId, options: &MaintainOptions) -> Result<Report> {
        let mut config = self.config.maintenance.for_table(&table.to_string())?;
        config.orphans |= options.orphans;
        if let Some(age) = options.orphan_min_age {
            config.orphan_min_age = age;
        }
        config.validate(options.force)?;
        let name = self.config.table_name(table);
        // A table `sync` has not created yet has nothing to maintain.
        if let Err(e) = self.catalog.load_table(&name).await {
            if e.kind() == ErrorKind::NotFound {
                return Ok(Report {
                    text: format!("{name}: not created yet"),
                    json: serde_json::json!({"table": name.to_string(), "missing": true}),
                });
            }
            return Err(e.with_context("table", &name));
        }
        let report =
            tributary_maintenance::maintain_table(&*self.catalog, &name, &config, options.dry_run)
                .await
                .map_err(|e| e.with_context("table", &name))?;
        Ok(Report {
            text: report.to_string(),
            json: serde_json::to_value(&report)?,
        })
    }

    fn check_interval(&self) -> Option<std::time::Duration> {
        let m = &self.config.maintenance;
        (m.enabled && m.read_amplification > 0.0).then_some(m.check_interval)
    }

    async fn maintain_if_needed(&self, table: &TableId) -> Result<Option<Report>> {
        let config = self.config.maintenance.for_table(&table.to_string())?;
        let name = self.config.table_name(table);
        let report = self
            .read_cost_check
            .run(&*self.catalog, &name, &config)
            .await
            .map_err(|e| e.with_context("table", &name))?;
        report
            .map(|r| {
                Ok(Report {
                    text: r.to_string(),
                    json: serde_json::to_value(&r)?,
                })
            })
            .transpose()
    }
}

/// A table claimed for an owner epoch: one snapshot without files whose
/// summary is the table's own newest checkpoint with the epoch and owner —
/// built on whichever version is current when it commits (a retry after
/// a lost race takes the newer checkpoint, never an older one).
struct Claim {
    epoch: u64,
    owner: String,
}

#[async_trait]
impl TableOperation for Claim {
    async fn apply(&self, base: &CatalogTable) -> Result<Option<iceberg::spec::TableMetadata>> {
        let Some(mut checkpoint) = committed_checkpoint(base)? else {
            return Ok(None);
        };
        if checkpoint.epoch() == Some(self.epoch) {
            return Ok(None);
        }
        for (key, value) in [
            (tributary_core::EPOCH_PROPERTY, self.epoch.to_string()),
            (tributary_core::OWNER_PROPERTY, self.owner.clone()),
        ] {
            checkpoint.properties.insert(key.to_string(), value);
        }
        let mut delta = RowDelta::default();
        stamp(&mut delta, &checkpoint)?;
        delta.apply(base).await
    }
}
