//! The Hadoop catalog, in Iceberg Java's layout, on a local filesystem or an
//! S3-compatible object store: `<warehouse>/<namespace>/<table>/metadata/
//! v<N>.metadata.json` plus `version-hint.text` naming the newest N.
//!
//! A commit creates `v<N+1>.metadata.json` exclusively, so two committers can
//! never both win and nobody sees a half-written file:
//! - local: write a temporary file, then hard-link it to its name (fails if
//!   the name exists);
//! - S3: a conditional PUT with `If-None-Match: *` (412 if it exists). No
//!   rename-based commits.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use iceberg::io::{FileIO, FileIOBuilder};
use iceberg::spec::{
    FormatVersion, Schema, SortOrder, TableMetadata, TableMetadataBuilder, UnboundPartitionSpec,
};
use iceberg_storage_opendal::OpenDalStorageFactory;
use tributary_core::{Error, ErrorKind, Result};

use crate::{Catalog, CatalogTable, TableName, iceberg_err};

/// Where metadata files live and how they are created exclusively.
#[derive(Debug, Clone)]
enum Store {
    Local,
    S3 { client: aws_sdk_s3::Client },
}

/// A Hadoop catalog (local directory or S3 prefix as the warehouse).
#[derive(Debug, Clone)]
pub struct HadoopCatalog {
    /// `file:///abs/path` or `s3://bucket/prefix`, without a trailing slash.
    warehouse: String,
    store: Store,
    file_io: FileIO,
    /// Set once the store was seen enforcing exclusive creation.
    cas_verified: Arc<tokio::sync::OnceCell<()>>,
}

fn io_err(what: String, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Io, what).with_source(e)
}

fn s3_err(what: String, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::new(ErrorKind::Io, what).with_source(e)
}

/// `s3://bucket/key` → (bucket, key).
fn split_s3(location: &str) -> Result<(&str, &str)> {
    location
        .strip_prefix("s3://")
        .or_else(|| location.strip_prefix("s3a://"))
        .and_then(|rest| rest.split_once('/'))
        .ok_or_else(|| {
            Error::invalid_config(format!("{location:?} is not an s3://bucket/key location"))
        })
}

impl HadoopCatalog {
    /// A catalog whose warehouse is a local directory.
    pub fn new_local(warehouse: impl Into<PathBuf>) -> Result<HadoopCatalog> {
        let dir = warehouse.into();
        std::fs::create_dir_all(&dir)
            .map_err(|e| io_err(format!("cannot create warehouse {}", dir.display()), e))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| io_err(format!("warehouse {}", dir.display()), e))?;
        Ok(HadoopCatalog {
            warehouse: format!("file://{}", dir.display()),
            store: Store::Local,
            file_io: FileIO::new_with_fs(),
            cas_verified: Default::default(),
        })
    }

    /// A catalog from the property names pyiceberg and Iceberg Java use:
    /// `warehouse` (a local path, `file://…` or `s3://bucket/prefix`) and for
    /// S3 `s3.endpoint`, `s3.region`, `s3.access-key-id`,
    /// `s3.secret-access-key`, `s3.path-style-access`.
    pub fn from_properties(props: &HashMap<String, String>) -> Result<HadoopCatalog> {
        let warehouse = props
            .get("warehouse")
            .ok_or_else(|| Error::invalid_config("catalog property `warehouse` is missing"))?
            .trim_end_matches('/')
            .to_string();
        if !warehouse.starts_with("s3://") && !warehouse.starts_with("s3a://") {
            return Self::new_local(warehouse.strip_prefix("file://").unwrap_or(&warehouse));
        }
        let file_io = s3_file_io(props);
        Ok(HadoopCatalog {
            warehouse,
            store: Store::S3 {
                client: crate::storage::s3_client(props),
            },
            file_io,
            cas_verified: Default::default(),
        })
    }

    pub fn file_io(&self) -> &FileIO {
        &self.file_io
    }

    fn table_location(&self, name: &TableName) -> String {
        format!("{}/{}/{}", self.warehouse, name.namespace, name.table)
    }

    fn metadata_file(location: &str, version: u32) -> String {
        format!("{location}/metadata/v{version}.metadata.json")
    }

    async fn exists(&self, location: &str) -> Result<bool> {
        self.file_io
            .exists(location)
            .await
            .map_err(|e| iceberg_err(format!("checking {location}"), e))
    }

    /// Creates the table at version 1 (format v2). Fails if it exists.
    pub async fn create_table(
        &self,
        name: &TableName,
        schema: Schema,
        spec: UnboundPartitionSpec,
        properties: HashMap<String, String>,
    ) -> Result<CatalogTable> {
        let location = self.table_location(name);
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
        self.write_version(name, 1, &metadata)
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::CommitConflict => Error::new(
                    ErrorKind::InvalidConfig,
                    format!("table {name} already exists"),
                ),
                _ => e,
            })?;
        self.load_table(name).await
    }

    /// The version the hint names, or the highest listed (1 if neither).
    async fn hinted_version(&self, location: &str) -> Result<Option<u32>> {
        let hint = format!("{location}/metadata/version-hint.text");
        if let Ok(bytes) = self
            .file_io
            .new_input(&hint)
            .map_err(|e| iceberg_err("hint", e))?
            .read()
            .await
            && let Some(v) = std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| s.trim().parse().ok())
        {
            return Ok(Some(v));
        }
        let names: Vec<String> = match &self.store {
            Store::Local => {
                let dir = format!("{location}/metadata");
                let dir = dir.strip_prefix("file://").unwrap_or(&dir).to_string();
                let entries = std::fs::read_dir(&dir).into_iter().flatten().flatten();
                entries
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            }
            Store::S3 { client } => {
                let (bucket, key) = split_s3(location)?;
                let out = client
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(format!("{key}/metadata/v"))
                    .send()
                    .await
                    .map_err(|e| s3_err(format!("listing {location}/metadata"), e))?;
                out.contents()
                    .iter()
                    .filter_map(|o| o.key()?.rsplit('/').next().map(str::to_string))
                    .collect()
            }
        };
        let version = names
            .iter()
            .filter_map(|n| {
                n.strip_prefix('v')?
                    .strip_suffix(".metadata.json")?
                    .parse()
                    .ok()
            })
            .max();
        Ok(version)
    }

    /// Loads the newest version: the hint, then probing for newer files a
    /// committer that stopped before updating the hint left behind.
    pub async fn load_table(&self, name: &TableName) -> Result<CatalogTable> {
        let location = self.table_location(name);
        let mut version = self.hinted_version(&location).await?.ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("table {name} does not exist (no metadata under {location})"),
            )
        })?;
        while self
            .exists(&Self::metadata_file(&location, version + 1))
            .await?
        {
            version += 1;
        }
        let path = Self::metadata_file(&location, version);
        let bytes = self
            .file_io
            .new_input(&path)
            .map_err(|e| iceberg_err("metadata input", e))?
            .read()
            .await
            .map_err(|e| iceberg_err(format!("table {name} has no metadata at {path}"), e))?;
        let metadata: TableMetadata = serde_json::from_slice(&bytes)?;
        Ok(CatalogTable {
            name: name.clone(),
            version,
            metadata_location: path,
            metadata,
            file_io: self.file_io.clone(),
        })
    }

    /// Creates `path` with `bytes` unless it exists (then `CommitConflict`).
    async fn create_exclusive(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
        let lost = || {
            Error::new(
                ErrorKind::CommitConflict,
                format!("{path} was created by another writer first"),
            )
        };
        match &self.store {
            Store::Local => {
                let target = PathBuf::from(path.strip_prefix("file://").unwrap_or(path));
                let dir = target.parent().expect("metadata files have a directory");
                std::fs::create_dir_all(dir)
                    .map_err(|e| io_err(format!("{}", dir.display()), e))?;
                let tmp = dir.join(format!(".{}.tmp", uuid::Uuid::new_v4()));
                std::fs::write(&tmp, bytes).map_err(|e| io_err(format!("{}", tmp.display()), e))?;
                let linked = std::fs::hard_link(&tmp, &target);
                let _ = std::fs::remove_file(&tmp);
                match linked {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(lost()),
                    Err(e) => Err(io_err(format!("{}", target.display()), e)),
                }
            }
            Store::S3 { client } => {
                let (bucket, key) = split_s3(path)?;
                let put = client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .if_none_match("*")
                    .body(ByteStream::from(bytes.clone()));
                match put.send().await {
                    Ok(_) => Ok(()),
                    // The SDK retries a PUT whose reply was lost; the retry
                    // meets the object the first try created: ours, not a
                    // lost race, when it holds exactly our bytes.
                    Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 412) => {
                        let stored = match self.file_io.new_input(path) {
                            Ok(input) => input.read().await.ok(),
                            Err(_) => None,
                        };
                        match stored {
                            Some(b) if *b == *bytes => Ok(()),
                            _ => Err(lost()),
                        }
                    }
                    // Unknown outcome: the commit checks whether it landed.
                    Err(e) => Err(Error::new(
                        ErrorKind::Connection,
                        format!("PUT {path} failed; it may or may not have been applied"),
                    )
                    .with_source(e)),
                }
            }
        }
    }

    /// Writes `metadata` as version `version` if no one else has; a lost race
    /// is `CommitConflict`. The hint is then best effort: readers probe past it.
    async fn write_version(
        &self,
        name: &TableName,
        version: u32,
        metadata: &TableMetadata,
    ) -> Result<()> {
        let location = self.table_location(name);
        self.create_exclusive(
            &Self::metadata_file(&location, version),
            serde_json::to_vec(metadata)?,
        )
        .await?;
        self.write_hint(&location, version).await;
        Ok(())
    }

    /// Whether the table at `location` has a version after `version`: the
    /// hint names one, or the next file exists.
    async fn newer_than(&self, location: &str, version: u32) -> Result<bool> {
        if self
            .hinted_version(location)
            .await?
            .is_some_and(|v| v > version)
        {
            return Ok(true);
        }
        self.exists(&Self::metadata_file(location, version + 1))
            .await
    }

    /// Points the hint at `version`; best effort (readers probe past it).
    async fn write_hint(&self, location: &str, version: u32) {
        let hint = format!("{location}/metadata/version-hint.text");
        let written = match &self.store {
            Store::Local => {
                let path = PathBuf::from(hint.strip_prefix("file://").unwrap_or(&hint));
                let tmp = path.with_extension(format!("{}.tmp", uuid::Uuid::new_v4()));
                std::fs::write(&tmp, version.to_string())
                    .and_then(|()| std::fs::rename(&tmp, &path))
                    .is_ok()
            }
            Store::S3 { .. } => match self.file_io.new_output(&hint) {
                Ok(out) => out.write(version.to_string().into()).await.is_ok(),
                Err(_) => false,
            },
        };
        if !written {
            tracing::warn!(%hint, "could not update the version hint; readers probe past it");
        }
    }

    /// Atomically replaces `base` with `metadata` as the next version. With
    /// `write.metadata.delete-after-commit.enabled`, metadata files that fell
    /// out of the log (`write.metadata.previous-versions-max`) are deleted.
    pub async fn commit(
        &self,
        base: &CatalogTable,
        metadata: TableMetadata,
    ) -> Result<CatalogTable> {
        let version = base.version + 1;
        let location = self.table_location(&base.name);
        // Creating v<N+1> exclusively is a compare-and-swap only while
        // v<N+1> has never existed: with `delete-after-commit`, a version
        // more than `previous-versions-max` behind the newest is deleted, and
        // a base that stale would "win" a version the table left long ago —
        // a commit that lands nowhere (or, had it updated the hint, rolls the
        // table back), while its caller goes on as if it had landed (expiry
        // would delete files the real table still names). So a stale base is
        // a lost race before the write, and a newer version found after it
        // makes the outcome unknown (the retry looks for the snapshot in the
        // newest version, as after a lost reply).
        if self.newer_than(&location, base.version).await? {
            return Err(Error::new(
                ErrorKind::CommitConflict,
                format!("{} has versions after {}", base.name, base.version),
            ));
        }
        self.create_exclusive(
            &Self::metadata_file(&location, version),
            serde_json::to_vec(&metadata)?,
        )
        .await?;
        if self.newer_than(&location, version).await? {
            return Err(Error::new(
                ErrorKind::Connection,
                format!(
                    "{} has versions after {version}, which was just written: it may be a \
                     version the table left behind",
                    base.name
                ),
            ));
        }
        self.write_hint(&location, version).await;
        crate::delete_dropped_metadata(base, &metadata).await;
        // The version just created is the table now: no need to read it back.
        Ok(CatalogTable {
            name: base.name.clone(),
            version,
            metadata_location: Self::metadata_file(&self.table_location(&base.name), version),
            metadata,
            file_io: self.file_io.clone(),
        })
    }
}

impl HadoopCatalog {
    /// Creates one probe object twice with `If-None-Match: *`: a store that
    /// enforces it refuses the second (412); one that ignores it would let
    /// two committers both write the same metadata version.
    async fn probe_compare_and_swap(&self, table: &CatalogTable) -> Result<()> {
        let Store::S3 { .. } = &self.store else {
            return Ok(()); // hard links are exclusive on every local filesystem
        };
        let probe = format!(
            "{}/metadata/.tributary-cas-probe-{}",
            self.table_location(&table.name),
            uuid::Uuid::new_v4()
        );
        self.create_exclusive(&probe, b"1".to_vec()).await?;
        let second = self.create_exclusive(&probe, b"2".to_vec()).await;
        let _ = self.file_io.delete(&probe).await;
        match second {
            Err(e) if e.kind() == ErrorKind::CommitConflict => Ok(()),
            Err(e) => Err(e.with_context("probe", "compare-and-swap")),
            Ok(()) => Err(Error::invalid_config(format!(
                "the object store under {} ignores conditional writes: a PUT with \
                 `If-None-Match: *` replaced an existing object, so two committers could \
                 both write one metadata version. Use a store that enforces it (AWS S3, \
                 recent MinIO, moto) or a Hive catalog",
                self.warehouse
            ))),
        }
    }
}

#[async_trait::async_trait]
impl Catalog for HadoopCatalog {
    async fn verify_compare_and_swap(&self, table: &CatalogTable) -> Result<()> {
        self.cas_verified
            .get_or_try_init(|| self.probe_compare_and_swap(table))
            .await
            .map(|_| ())
    }

    async fn create_table(
        &self,
        name: &TableName,
        schema: Schema,
        spec: UnboundPartitionSpec,
        properties: HashMap<String, String>,
    ) -> Result<CatalogTable> {
        HadoopCatalog::create_table(self, name, schema, spec, properties).await
    }

    async fn load_table(&self, name: &TableName) -> Result<CatalogTable> {
        HadoopCatalog::load_table(self, name).await
    }

    async fn commit(&self, base: &CatalogTable, metadata: TableMetadata) -> Result<CatalogTable> {
        HadoopCatalog::commit(self, base, metadata).await
    }

    async fn list_files(&self, location: &str) -> Result<Vec<crate::StoredFile>> {
        let s3 = match &self.store {
            Store::S3 { client } => Some(client),
            Store::Local => None,
        };
        crate::storage::list_files(location, s3).await
    }
}

/// A FileIO for S3 from the `s3.*` catalog properties.
pub(crate) fn s3_file_io(props: &HashMap<String, String>) -> FileIO {
    FileIOBuilder::new(Arc::new(OpenDalStorageFactory::S3 {
        customized_credential_load: None,
    }))
    .with_props(props.iter().filter(|(k, _)| k.starts_with("s3.")))
    .build()
}
