//! The Hadoop catalog on a local filesystem, in Iceberg Java's layout:
//! `<warehouse>/<namespace>/<table>/metadata/v<N>.metadata.json` plus
//! `version-hint.text` naming the newest N.
//!
//! A commit creates `v<N+1>.metadata.json` exclusively: the new metadata is
//! written to a temporary file and hard-linked to its final name, which fails
//! if the name exists. Two committers can never both win, and a reader never
//! sees a half-written metadata file.

use std::path::{Path, PathBuf};

use iceberg::io::FileIO;
use iceberg::spec::{
    FormatVersion, Schema, SortOrder, TableMetadata, TableMetadataBuilder, UnboundPartitionSpec,
};
use tributary_core::{Error, ErrorKind, Result};

use crate::{CatalogTable, TableName, iceberg_err};

/// Table property: delete metadata files dropped from the metadata log.
pub const DELETE_AFTER_COMMIT: &str = "write.metadata.delete-after-commit.enabled";

/// A Hadoop catalog whose warehouse is a local directory.
#[derive(Debug, Clone)]
pub struct HadoopCatalog {
    warehouse: PathBuf,
    file_io: FileIO,
}

fn io_err(what: String, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Io, what).with_source(e)
}

impl HadoopCatalog {
    pub fn new_local(warehouse: impl Into<PathBuf>) -> Result<HadoopCatalog> {
        let warehouse = warehouse.into();
        std::fs::create_dir_all(&warehouse).map_err(|e| {
            io_err(
                format!("cannot create warehouse {}", warehouse.display()),
                e,
            )
        })?;
        let warehouse = warehouse
            .canonicalize()
            .map_err(|e| io_err(format!("warehouse {}", warehouse.display()), e))?;
        Ok(HadoopCatalog {
            warehouse,
            file_io: FileIO::new_with_fs(),
        })
    }

    pub fn file_io(&self) -> &FileIO {
        &self.file_io
    }

    fn table_dir(&self, name: &TableName) -> PathBuf {
        self.warehouse.join(&name.namespace).join(&name.table)
    }

    fn metadata_path(dir: &Path, version: u32) -> PathBuf {
        dir.join("metadata")
            .join(format!("v{version}.metadata.json"))
    }

    /// Creates the table at version 1 (format v2). Fails if it exists.
    pub async fn create_table(
        &self,
        name: &TableName,
        schema: Schema,
        spec: UnboundPartitionSpec,
        properties: std::collections::HashMap<String, String>,
    ) -> Result<CatalogTable> {
        let dir = self.table_dir(name);
        if Self::metadata_path(&dir, 1).exists() {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!("table {name} already exists"),
            ));
        }
        let location = format!("file://{}", dir.display());
        let metadata = TableMetadataBuilder::new(
            schema,
            spec,
            SortOrder::unsorted_order(),
            location,
            FormatVersion::V2,
            properties,
        )
        .and_then(|b| b.build())
        .map_err(|e| iceberg_err("building table metadata", e))?
        .metadata;
        self.write_version(name, 1, &metadata)?;
        self.load_table(name).await
    }

    /// Loads the newest version (version-hint, then probing for newer files
    /// a crashed committer may not have hinted).
    pub async fn load_table(&self, name: &TableName) -> Result<CatalogTable> {
        let dir = self.table_dir(name);
        let hint = std::fs::read_to_string(dir.join("metadata").join("version-hint.text"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or_else(|| Self::newest_listed(&dir));
        let mut version = hint;
        while Self::metadata_path(&dir, version + 1).exists() {
            version += 1;
        }
        let path = Self::metadata_path(&dir, version);
        let bytes = std::fs::read(&path).map_err(|e| {
            io_err(
                format!("table {name} has no metadata at {}", path.display()),
                e,
            )
        })?;
        let metadata: TableMetadata = serde_json::from_slice(&bytes)?;
        Ok(CatalogTable {
            name: name.clone(),
            version,
            metadata_location: format!("file://{}", path.display()),
            metadata,
            file_io: self.file_io.clone(),
        })
    }

    /// The highest `vN.metadata.json` in the directory (1 if none): used when
    /// the hint is missing and old versions were deleted.
    fn newest_listed(dir: &Path) -> u32 {
        let versions = std::fs::read_dir(dir.join("metadata"))
            .into_iter()
            .flatten()
            .flatten();
        versions
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix('v')?
                    .strip_suffix(".metadata.json")?
                    .parse()
                    .ok()
            })
            .max()
            .unwrap_or(1)
    }

    /// Writes `metadata` as version `version` if no one else has; a lost race
    /// is `CommitConflict`.
    fn write_version(
        &self,
        name: &TableName,
        version: u32,
        metadata: &TableMetadata,
    ) -> Result<()> {
        let dir = self.table_dir(name);
        let meta_dir = dir.join("metadata");
        std::fs::create_dir_all(&meta_dir)
            .map_err(|e| io_err(format!("{}", meta_dir.display()), e))?;
        let tmp = meta_dir.join(format!(".v{version}.{}.tmp", uuid::Uuid::new_v4()));
        let json = serde_json::to_vec_pretty(metadata)?;
        std::fs::write(&tmp, json).map_err(|e| io_err(format!("{}", tmp.display()), e))?;
        let target = Self::metadata_path(&dir, version);
        let linked = std::fs::hard_link(&tmp, &target);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::new(
                    ErrorKind::CommitConflict,
                    format!("another writer committed version {version} of {name} first"),
                ));
            }
            Err(e) => return Err(io_err(format!("{}", target.display()), e)),
        }
        // The hint is only an optimisation: readers probe past it.
        let hint = meta_dir.join("version-hint.text");
        let hint_tmp = meta_dir.join(format!(".version-hint.{}.tmp", uuid::Uuid::new_v4()));
        std::fs::write(&hint_tmp, version.to_string())
            .and_then(|()| std::fs::rename(&hint_tmp, &hint))
            .map_err(|e| io_err(format!("{}", hint.display()), e))
    }

    /// Atomically replaces `base` with `metadata` as the next version. With
    /// `write.metadata.delete-after-commit.enabled`, metadata files that fell
    /// out of the log (`write.metadata.previous-versions-max`) are deleted.
    pub async fn commit(
        &self,
        base: &CatalogTable,
        metadata: TableMetadata,
    ) -> Result<CatalogTable> {
        self.write_version(&base.name, base.version + 1, &metadata)?;
        let delete_old = metadata
            .properties()
            .get(DELETE_AFTER_COMMIT)
            .is_some_and(|v| v == "true");
        if delete_old {
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
                // Best effort: a leftover file is harmless, the log no longer names it.
                let _ = std::fs::remove_file(file.strip_prefix("file://").unwrap_or(file));
            }
        }
        self.load_table(&base.name).await
    }
}
