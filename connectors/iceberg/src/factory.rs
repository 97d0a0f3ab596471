//! `[sink.iceberg]` as a pipeline's sink kind: one catalog, one
//! `UpsertWriter` per source table.

use std::sync::Arc;

use async_trait::async_trait;
use tributary_catalog::Catalog;
use tributary_core::{ErrorKind, Result, Sink, SinkFactory, TableId, TableSchema, TargetState};

use crate::config::IcebergSinkConfig;
use crate::writer::{UpsertWriter, committed_checkpoint};

pub struct IcebergSinkFactory {
    config: IcebergSinkConfig,
    catalog: Arc<dyn Catalog>,
}

impl IcebergSinkFactory {
    /// Validates `config` and builds its catalog (no connection yet).
    pub fn new(config: IcebergSinkConfig) -> Result<IcebergSinkFactory> {
        config.validate()?;
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
    /// one without holds nothing to empty.
    async fn reset(&self, _table: &TableId) -> Result<()> {
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
}
