//! `[sink.iceberg]` as a pipeline's sink kind: one catalog, one
//! `UpsertWriter` per source table.

use std::sync::Arc;

use async_trait::async_trait;
use tributary_catalog::{
    Catalog, CatalogTable, RowDelta, TableOperation, commit_operation, commit_row_delta,
};
use tributary_core::{
    Checkpoint, ErrorKind, MaintainOptions, MaintenanceReport, Result, Sink, SinkFactory, TableId,
    TableSchema, TargetMaintenance, TargetState,
};

use crate::config::IcebergSinkConfig;
use crate::writer::{UpsertWriter, committed_checkpoint, stamp};

pub struct IcebergSinkFactory {
    config: IcebergSinkConfig,
    catalog: Arc<dyn Catalog>,
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
        if let Some(done) = committed_checkpoint(&t)?
            && done.round() >= checkpoint.round()
        {
            return Ok(true);
        }
        let mut delta = RowDelta::default();
        stamp(&mut delta, checkpoint)?;
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

    fn maintenance(&self) -> Option<&dyn TargetMaintenance> {
        Some(self)
    }
}

#[async_trait]
impl TargetMaintenance for IcebergSinkFactory {
    fn background_interval(&self) -> Option<std::time::Duration> {
        let m = &self.config.maintenance;
        m.enabled.then_some(m.interval)
    }

    async fn maintain(
        &self,
        table: &TableId,
        options: &MaintainOptions,
    ) -> Result<MaintenanceReport> {
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
                return Ok(MaintenanceReport {
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
        Ok(MaintenanceReport {
            text: report.to_string(),
            json: serde_json::to_value(&report)?,
        })
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
