//! Opening the table and following the source's schema: load or create,
//! evolve the schema, map source columns onto it, check the partition spec,
//! and build the key index.

use std::sync::Arc;

use arrow_array::RecordBatch;
use iceberg::spec::DataContentType;
use tributary_catalog::{Catalog, CatalogTable, TableName, commit_schema, live_files};
use tributary_core::{Checkpoint, Error, ErrorKind, Result, TableSchema};

use super::config::{UpsertConfig, check_partition_columns};
use super::{CHECKPOINT_PROPERTY, UpsertWriter};
use crate::key_index::KeyIndex;
use crate::partition::{PartitionField, Partitioner, spec_fields, unbound_spec};
use crate::types::{ColumnMap, evolve, iceberg_schema};

/// Loads the table `name`, creating it for `source` when it does not exist
/// (with the configured partition spec).
pub(super) async fn load_or_create(
    catalog: &dyn Catalog,
    name: &TableName,
    source: &TableSchema,
    config: &UpsertConfig,
) -> Result<CatalogTable> {
    let table = match catalog.load_table(name).await {
        Ok(t) => Ok(t),
        Err(load) if load.kind() == ErrorKind::NotFound => {
            let schema = iceberg_schema(source)?;
            let spec = unbound_spec(&config.partition_by, &schema)?;
            let created = catalog
                .create_table(
                    name,
                    schema,
                    spec,
                    tributary_catalog::created_table_properties(),
                )
                .await;
            created.map_err(|e| e.with_context("load error", load))
        }
        Err(e) => Err(e),
    }?;
    catalog.verify_compare_and_swap(&table).await?;
    Ok(table)
}

impl UpsertWriter {
    /// Evolves the table's schema to take rows of `source` (committing the
    /// new schema when it changes) and maps the source's columns onto it.
    pub(super) async fn fit_schema(
        catalog: &dyn Catalog,
        table: CatalogTable,
        source: &TableSchema,
        config: &UpsertConfig,
    ) -> Result<(CatalogTable, ColumnMap)> {
        let current = table.metadata.current_schema().clone();
        let last_id = table.metadata.last_column_id();
        let evolution = evolve(&current, last_id, source, config.column_policy)?;
        let table = match &evolution.schema {
            Some(next) => commit_schema(catalog, &table, next).await?,
            None => table,
        };
        let columns = ColumnMap::new(table.metadata.current_schema(), source, &evolution.skipped)?;
        Ok((table, columns))
    }

    /// Loads the key index from the live files.
    pub(super) async fn load_index(&mut self) -> Result<()> {
        self.index_at = self.table.metadata.current_snapshot_id();
        let (data, deletes) = live_files(&self.table)
            .await
            .map_err(|e| e.with_context("table", &self.table.name))?;
        self.committed_files = data
            .iter()
            .map(|f| {
                let file = super::CommittedFile {
                    partition: f.partition().clone(),
                    bytes: f.file_size_in_bytes(),
                };
                (Arc::from(f.file_path()), file)
            })
            .collect();
        self.equality_deletes_live = deletes
            .iter()
            .any(|d| d.content_type() == DataContentType::EqualityDeletes);
        let data: Vec<String> = data.iter().map(|f| f.file_path().to_string()).collect();
        let positions: Vec<String> = deletes
            .iter()
            .filter(|d| d.content_type() == DataContentType::PositionDeletes)
            .map(|d| d.file_path().to_string())
            .collect();
        self.index.load(&data, &positions).await
    }

    /// Evolves the table to `source` (a new schema version of the table):
    /// buffered rows are carried over to the new data-file schema.
    pub async fn apply_schema(&mut self, source: &TableSchema) -> Result<()> {
        if source.table != self.source.table {
            return Err(Error::new(
                ErrorKind::SchemaMismatch,
                format!(
                    "rows of {} sent to the writer of {}",
                    source.table, self.source.table
                ),
            ));
        }
        let table = self.table.clone();
        let (table, columns) =
            Self::fit_schema(&*self.catalog, table, source, &self.config).await?;
        if columns.key_columns(source)? != self.index.key_columns() {
            return Err(Error::new(
                ErrorKind::SchemaMismatch,
                format!("{}: key columns moved in the data files", source.table),
            ));
        }
        self.reduction.map_buffered(|b| carry_over(b, &columns))?;
        self.partitioner = partitioner(&table, source, &self.config)?;
        (self.table, self.columns, self.source) = (table, columns, Arc::new(source.clone()));
        Ok(())
    }
}

/// The key index for the table's data files, on the data-file key columns.
pub(super) fn key_index(
    table: &CatalogTable,
    columns: &ColumnMap,
    source: &TableSchema,
) -> Result<KeyIndex> {
    let key_columns = columns.key_columns(source)?;
    let key_types: Vec<_> = key_columns
        .iter()
        .map(|&i| columns.file_schema.field(i).data_type().clone())
        .collect();
    KeyIndex::new(table.file_io.clone(), key_columns, &key_types)
}

/// The partitioner of the table's spec, checked against the configuration:
/// the configured spec (if any) is the table's, there is no older spec
/// (partition evolution is not followed), and equality mode partitions by
/// key columns only.
pub(super) fn partitioner(
    table: &CatalogTable,
    source: &TableSchema,
    config: &UpsertConfig,
) -> Result<Partitioner> {
    let meta = &table.metadata;
    let schema = meta.current_schema();
    let spec = meta.default_partition_spec();
    let actual = spec_fields(spec, schema);
    let show = |f: &[PartitionField]| {
        let parts: Vec<String> = f.iter().map(ToString::to_string).collect();
        format!("[{}]", parts.join(", "))
    };
    if !config.partition_by.is_empty() && config.partition_by != actual {
        return Err(Error::invalid_config(format!(
            "{} exists partitioned by {}, but partition_by is {}: the writer does not change \
             an existing table's partition spec; set partition_by to the table's spec (or leave \
             it empty), or write to a new table",
            table.name,
            show(&actual),
            show(&config.partition_by)
        )));
    }
    if meta.partition_specs_iter().count() > 1 {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "{} has {} partition specs (its spec evolved): the upsert writer needs every \
                 data file in the current spec; rewrite the table into it first",
                table.name,
                meta.partition_specs_iter().count()
            ),
        ));
    }
    let names: Vec<&str> = actual.iter().map(|f| f.column.as_str()).collect();
    let what = format!("the partition spec of {}", table.name);
    check_partition_columns(&names, source, config.delete_mode, &what)?;
    Partitioner::new(spec, schema)
}

/// The checkpoint committed with the table's current snapshot: the newest
/// one on the current snapshot's ancestry, so a snapshot of another engine
/// (or a maintenance run that did not carry it forward) does not hide it.
pub fn committed_checkpoint(table: &CatalogTable) -> Result<Option<Checkpoint>> {
    let meta = &table.metadata;
    let mut cur = meta.current_snapshot();
    while let Some(snapshot) = cur {
        if let Some(json) = snapshot
            .summary()
            .additional_properties
            .get(CHECKPOINT_PROPERTY)
        {
            return Ok(Some(serde_json::from_str(json)?));
        }
        cur = snapshot
            .parent_snapshot_id()
            .and_then(|id| meta.snapshot_by_id(id));
    }
    Ok(None)
}

/// A buffered batch (old data-file schema) in the new data-file schema:
/// columns matched by field id, promoted by cast, new fields null.
fn carry_over(batch: &RecordBatch, to: &ColumnMap) -> Result<RecordBatch> {
    let id = |f: &arrow_schema::Field| f.metadata().get("PARQUET:field_id").cloned();
    let from = batch.schema();
    let columns: Result<Vec<_>> = to
        .file_schema
        .fields()
        .iter()
        .map(
            |f| match from.fields().iter().position(|g| id(g) == id(f)) {
                Some(i) => Ok(arrow_cast::cast(batch.column(i), f.data_type())?),
                None => Ok(arrow_array::new_null_array(f.data_type(), batch.num_rows())),
            },
        )
        .collect();
    let relaxed: Vec<_> = to
        .file_schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    Ok(RecordBatch::try_new(
        Arc::new(arrow_schema::Schema::new(relaxed)),
        columns?,
    )?)
}
