//! Iceberg catalogs and the commit protocol, built on the public spec types of
//! the `iceberg` crate (iceberg-rust has no row-delta or rewrite commit, and
//! its `TableCommit` cannot be built from outside).
//!
//! - [`Catalog`]: Hadoop (local FS and S3) and Hive Metastore catalogs, an
//!   atomic swap from one metadata version to the next.
//! - [`ops`]: the table operations (row delta, rewrite, schema, expiry), one
//!   file each over a shared snapshot producer, all committed through one
//!   retry path.
//! - [`files`]: Parquet writers for data, position-delete and
//!   equality-delete files.

pub mod files;
pub mod hadoop;
pub mod hive;
pub mod ops;
pub mod storage;

use std::fmt;

use iceberg::io::FileIO;
use iceberg::spec::TableMetadata;
use tributary_core::{Error, ErrorKind};

pub use files::{
    FileKeys, KeyEncoder, ParquetFile, canonical_key_type, position_delete_schema,
    project_to_arrow, project_to_schema, read_parquet, read_position_deletes, sidecar_path,
    write_data_file, write_equality_deletes, write_key_sidecar, write_position_deletes,
};
pub use hadoop::HadoopCatalog;
pub use hive::HiveCatalog;
pub use ops::expire::{ExpireSnapshots, expire_snapshots};
pub use ops::merge::MergePolicy;
pub use ops::producer::{
    FileCounts, LiveFile, current_manifests, live_entries, live_files, snapshot_manifests,
};
pub use ops::rewrite::{RewriteFiles, RowMap, commit_rewrite};
pub use ops::rewrite_manifests::RewriteManifests;
pub use ops::row_delta::{Rebase, RowDelta, commit_row_delta};
pub use ops::schema::{SetCurrentSchema, commit_schema};
pub use ops::{TableOperation, commit_operation, commit_retry_policy};
pub use storage::StoredFile;

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

    /// Every stored file under `location` (a table's location), for orphan
    /// cleanup.
    async fn list_files(&self, location: &str) -> tributary_core::Result<Vec<StoredFile>>;

    /// Checks, once per catalog, that its compare-and-swap is enforced (a
    /// metastore ignoring the expected-parameter check, an object store
    /// ignoring `If-None-Match`, would let concurrent commits overwrite
    /// each other silently); fails `InvalidConfig` naming what to change.
    /// `table` is one of the job's tables (a metastore probe alters it
    /// without changing it).
    async fn verify_compare_and_swap(&self, table: &CatalogTable) -> tributary_core::Result<()> {
        let _ = table;
        Ok(())
    }
}

/// Catalog property: the deadline of every metastore and object-store call
/// in milliseconds (default 30 s). A call past it fails `Timeout`.
pub const TIMEOUT_MS: &str = "timeout-ms";

/// The call deadline from `timeout-ms`.
pub(crate) fn catalog_timeout(
    props: &std::collections::HashMap<String, String>,
) -> std::time::Duration {
    let ms = props
        .get(TIMEOUT_MS)
        .and_then(|v| v.parse().ok())
        .unwrap_or(30_000);
    std::time::Duration::from_millis(ms)
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
/// Table property: metadata files kept in the log.
pub const PREVIOUS_VERSIONS_MAX: &str = "write.metadata.previous-versions-max";
/// Table properties: snapshot retention (Iceberg's expiry settings).
pub const MAX_SNAPSHOT_AGE_MS: &str = "history.expire.max-snapshot-age-ms";
pub const MIN_SNAPSHOTS_TO_KEEP: &str = "history.expire.min-snapshots-to-keep";

/// The properties of tables Tributary creates, chosen for a table committed
/// every few seconds for months (each overridable on the table afterwards):
/// old metadata files are deleted after each commit and at most 10 kept;
/// manifests merge once 16 have accumulated (Iceberg's default of 100 lets
/// a reader open 200 manifests per scan); snapshots older than 10 minutes
/// are expired by maintenance, keeping at least 10 — every `metadata.json`
/// rewrites the whole snapshot log, so retention bounds the metadata size
/// (at one commit a second: 600 snapshots, about 1 MB per version). Raise
/// `history.expire.max-snapshot-age-ms` for longer time travel.
pub fn created_table_properties() -> std::collections::HashMap<String, String> {
    [
        (DELETE_AFTER_COMMIT, "true"),
        (PREVIOUS_VERSIONS_MAX, "10"),
        (ops::merge::MIN_COUNT_TO_MERGE, "16"),
        (MAX_SNAPSHOT_AGE_MS, "600000"),
        (MIN_SNAPSHOTS_TO_KEEP, "10"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

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

/// The one mapping of iceberg-rust errors: its kinds, its `retryable()`
/// flag, and the storage error underneath (opendal: missing object,
/// failed condition, temporary failure) decide the kind.
pub fn iceberg_err(what: impl Into<String>, e: iceberg::Error) -> Error {
    use iceberg::ErrorKind as I;
    let storage =
        std::error::Error::source(&e).and_then(|s| s.downcast_ref::<opendal_core::Error>());
    let kind = match (e.kind(), storage.map(|s| s.kind())) {
        (I::TableNotFound | I::NamespaceNotFound, _) => ErrorKind::NotFound,
        (I::CatalogCommitConflicts | I::PreconditionFailed, _) => ErrorKind::CommitConflict,
        (I::DataInvalid, _) => ErrorKind::InvalidData,
        (I::FeatureUnsupported, _) => ErrorKind::Unsupported,
        (_, Some(opendal_core::ErrorKind::NotFound)) => ErrorKind::NotFound,
        (_, Some(opendal_core::ErrorKind::ConditionNotMatch)) => ErrorKind::CommitConflict,
        (_, Some(opendal_core::ErrorKind::PermissionDenied)) => ErrorKind::Authentication,
        _ if e.retryable() || storage.is_some_and(|s| s.is_temporary()) => ErrorKind::Connection,
        (_, Some(_)) => ErrorKind::Io,
        _ => ErrorKind::Unexpected,
    };
    Error::new(kind, what).with_source(e)
}
