//! A new current schema (metadata only: no snapshot).

use async_trait::async_trait;
use iceberg::spec::{Schema, TableMetadata, TableMetadataBuilder};
use tributary_core::Result;

use super::{TableOperation, commit_operation};
use crate::{Catalog, CatalogTable, iceberg_err};

/// Makes a schema current: field ids kept, new fields with ids above the
/// table's last column id.
pub struct SetCurrentSchema<'a>(pub &'a Schema);

#[async_trait]
impl TableOperation for SetCurrentSchema<'_> {
    async fn apply(&self, base: &CatalogTable) -> Result<Option<TableMetadata>> {
        TableMetadataBuilder::new_from_metadata(
            base.metadata.clone(),
            Some(base.metadata_location.clone()),
        )
        .add_current_schema(self.0.clone())
        .and_then(|b| b.build())
        .map(|b| Some(b.metadata))
        .map_err(|e| iceberg_err("adding the schema", e))
    }
}

/// Makes `schema` the current schema of the newest version of `table`.
pub async fn commit_schema(
    catalog: &dyn Catalog,
    table: &CatalogTable,
    schema: &Schema,
) -> Result<CatalogTable> {
    commit_operation(catalog, table, &SetCurrentSchema(schema)).await
}
