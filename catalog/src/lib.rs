//! Iceberg catalogs and the commit protocol, built on the public spec types of
//! the `iceberg` crate (iceberg-rust has no row-delta or rewrite commit, and
//! its `TableCommit` cannot be built from outside).
//!
//! Status: the Hadoop catalog on a local filesystem and append commits with
//! optimistic retries. S3 and Hive catalogs, row-delta, rewrite and expiry are
//! the rest of their issue.

pub mod commit;
pub mod delete_file;
pub mod hadoop;
pub mod hive;
pub mod rewrite;

use std::fmt;

use iceberg::io::FileIO;
use iceberg::spec::TableMetadata;
use tributary_core::{Error, ErrorKind};

pub use commit::{RowDelta, commit_row_delta, commit_schema, expire_snapshots, live_files};
pub use delete_file::{write_data_file, write_equality_deletes, write_position_deletes};
pub use hadoop::HadoopCatalog;
pub use hive::HiveCatalog;
pub use rewrite::{RewriteFiles, commit_rewrite};

/// `namespace.table` in a catalog.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName {
    pub namespace: String,
    pub table: String,
}

impl TableName {
    pub fn new(namespace: impl Into<String>, table: impl Into<String>) -> Self {
        TableName {
            namespace: namespace.into(),
            table: table.into(),
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.namespace, self.table)
    }
}

/// What the commit protocol needs from a catalog: the newest metadata of a
/// table, and an atomic swap from one version to the next that fails with
/// `CommitConflict` when another writer committed first.
#[async_trait::async_trait]
pub trait Catalog: Send + Sync {
    /// Creates a format-v2 table; fails if it exists.
    async fn create_table(
        &self,
        name: &TableName,
        schema: iceberg::spec::Schema,
        spec: iceberg::spec::UnboundPartitionSpec,
        properties: std::collections::HashMap<String, String>,
    ) -> tributary_core::Result<CatalogTable>;

    async fn load_table(&self, name: &TableName) -> tributary_core::Result<CatalogTable>;

    async fn commit(
        &self,
        base: &CatalogTable,
        metadata: TableMetadata,
    ) -> tributary_core::Result<CatalogTable>;
}

/// A table as loaded from its catalog: the metadata of one version.
#[derive(Debug, Clone)]
pub struct CatalogTable {
    pub name: TableName,
    /// Metadata version number (the N of `vN.metadata.json`).
    pub version: u32,
    pub metadata_location: String,
    pub metadata: TableMetadata,
    pub file_io: FileIO,
}

/// Table property: delete metadata files dropped from the metadata log.
pub const DELETE_AFTER_COMMIT: &str = "write.metadata.delete-after-commit.enabled";

/// After a commit from `base` to `metadata`: with `DELETE_AFTER_COMMIT`,
/// deletes the metadata files that fell out of the metadata log
/// (`write.metadata.previous-versions-max`). Best effort: a leftover file is
/// harmless, nothing names it any more.
pub(crate) async fn delete_dropped_metadata(base: &CatalogTable, metadata: &TableMetadata) {
    if metadata
        .properties()
        .get(DELETE_AFTER_COMMIT)
        .is_none_or(|v| v != "true")
    {
        return;
    }
    let kept: std::collections::HashSet<&str> = metadata
        .metadata_log()
        .iter()
        .map(|l| l.metadata_file.as_str())
        .collect();
    let old = base
        .metadata
        .metadata_log()
        .iter()
        .map(|l| l.metadata_file.as_str());
    for file in old
        .chain([base.metadata_location.as_str()])
        .filter(|f| !kept.contains(f))
    {
        let _ = base.file_io.delete(file).await;
    }
}

impl CatalogTable {
    /// This version as a read-only `iceberg` table, for scans (iceberg-rust's
    /// reader applies position and equality deletes).
    pub fn to_iceberg_table(&self) -> tributary_core::Result<iceberg::table::Table> {
        let ident = iceberg::TableIdent::new(
            iceberg::NamespaceIdent::new(self.name.namespace.clone()),
            self.name.table.clone(),
        );
        iceberg::table::Table::builder()
            .metadata(self.metadata.clone())
            .metadata_location(self.metadata_location.clone())
            .identifier(ident)
            .file_io(self.file_io.clone())
            .readonly(true)
            .runtime(iceberg::Runtime::current())
            .build()
            .map_err(|e| iceberg_err("opening the table for reading", e))
    }
}

impl CatalogTable {
    /// Every live row of this version as iceberg-rust's scan reads it
    /// (position and equality deletes applied), optionally filtered.
    pub async fn scan(
        &self,
        filter: Option<iceberg::expr::Predicate>,
    ) -> tributary_core::Result<Vec<arrow_array::RecordBatch>> {
        use futures_util::TryStreamExt;
        let table = self.to_iceberg_table()?;
        let mut scan = table.scan();
        if let Some(f) = filter {
            scan = scan.with_filter(f);
        }
        let err = |e| iceberg_err(format!("scanning {}", self.name), e);
        let stream = scan.build().map_err(err)?.to_arrow().await.map_err(err)?;
        stream.try_collect().await.map_err(err)
    }
}

pub(crate) fn iceberg_err(what: impl Into<String>, e: iceberg::Error) -> Error {
    Error::new(ErrorKind::Unexpected, what).with_source(e)
}
