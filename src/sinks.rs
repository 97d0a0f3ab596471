//! The sink a pipeline writes to, seen by the runner as one kind of thing:
//! open a table's sink, name its target, and read a table's committed state
//! without opening it.

use std::sync::Arc;

use tributary_catalog::Catalog;
use tributary_clickhouse::{ClickHouseSink, ClickHouseSinkConfig};
use tributary_core::{Checkpoint, Error, ErrorKind, Result, Sink, TableId, TableSchema};
use tributary_iceberg::{IcebergSinkConfig, UpsertWriter, committed_checkpoint};

use crate::config::SinkConfig;

pub enum Target {
    Iceberg {
        config: IcebergSinkConfig,
        catalog: Arc<dyn Catalog>,
    },
    ClickHouse(ClickHouseSinkConfig),
}

impl Target {
    pub fn new(config: &SinkConfig) -> Result<Target> {
        match (&config.iceberg, &config.clickhouse) {
            (Some(iceberg), None) => Ok(Target::Iceberg {
                catalog: iceberg.catalog()?,
                config: iceberg.clone(),
            }),
            (None, Some(clickhouse)) => Ok(Target::ClickHouse(clickhouse.clone())),
            _ => Err(Error::invalid_config(
                "the pipeline needs exactly one sink: [sink.iceberg] or [sink.clickhouse]",
            )),
        }
    }

    /// Where a source table's rows go, for logs, status and collisions.
    pub fn table_name(&self, id: &TableId) -> String {
        match self {
            Target::Iceberg { config, .. } => config.table_name(id).to_string(),
            Target::ClickHouse(c) => format!("{}.{}", c.database, id.table),
        }
    }

    /// None: the target table does not exist; Some(None): it exists
    /// without a committed checkpoint.
    pub async fn committed(&self, id: &TableId) -> Result<Option<Option<Checkpoint>>> {
        match self {
            Target::Iceberg { config, catalog } => {
                match catalog.load_table(&config.table_name(id)).await {
                    Ok(t) => Ok(Some(committed_checkpoint(&t)?)),
                    Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e),
                }
            }
            Target::ClickHouse(c) => tributary_clickhouse::committed_state(c, &id.table).await,
        }
    }

    /// Empties a target table that holds no committed state (no checkpoint),
    /// before its source table is snapshotted again. Iceberg tables only get
    /// data in commits that carry a checkpoint: nothing to do there.
    pub async fn reset(&self, id: &TableId) -> Result<()> {
        match self {
            Target::Iceberg { .. } => Ok(()),
            Target::ClickHouse(c) => tributary_clickhouse::drop_tables(c, &id.table).await,
        }
    }

    /// Opens (creating the target table if needed) the sink of `schema`'s table.
    pub async fn open(&self, schema: &TableSchema) -> Result<Box<dyn Sink + Send>> {
        let id = &schema.table;
        Ok(match self {
            Target::Iceberg { config, catalog } => {
                let writer = UpsertWriter::open_config(
                    catalog.clone(),
                    config.table_name(id),
                    schema,
                    config.writer_config(id)?,
                )
                .await?;
                Box::new(writer)
            }
            Target::ClickHouse(c) => Box::new(ClickHouseSink::open(c.clone(), schema).await?),
        })
    }
}
