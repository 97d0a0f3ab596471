//! The Hive Metastore catalog (thrift, HMS 2.3+). Tables are registered as
//! `EXTERNAL_TABLE` with `table_type=ICEBERG` and `metadata_location`; Hive-2
//! column types describe the schema for Hive-side tools. A commit writes the
//! next metadata file, then swaps `metadata_location` with
//! `alter_table_with_environment_context`, whose `expected_parameter_key/value`
//! make the metastore compare-and-set it: a stale value is "The table has been
//! modified", reported as `CommitConflict` (the unused file is deleted).

use std::collections::HashMap;
use std::net::SocketAddr;

use hive_metastore::{
    Database, EnvironmentContext, FieldSchema, SerDeInfo, StorageDescriptor, Table,
    ThriftHiveMetastoreAlterTableWithEnvironmentContextException, ThriftHiveMetastoreClient,
    ThriftHiveMetastoreClientBuilder, ThriftHiveMetastoreCreateDatabaseException,
    ThriftHiveMetastoreCreateTableException, ThriftHiveMetastoreGetDatabaseException,
    ThriftHiveMetastoreGetTableException,
};
use iceberg::io::FileIO;
use iceberg::spec::{
    FormatVersion, PrimitiveType, Schema, SortOrder, TableMetadata, TableMetadataBuilder, Type,
    UnboundPartitionSpec,
};
use pilota::{AHashMap, FastStr};
use tributary_core::{Error, ErrorKind, Result};
use volo_thrift::MaybeException;

use crate::{Catalog, CatalogTable, TableName, iceberg_err};

/// A Hive Metastore catalog whose table files live under `warehouse`.
#[derive(Clone)]
pub struct HiveCatalog {
    /// `host:port` of the metastore, resolved at the first call (a name
    /// that only resolves where the job runs, e.g. a compose service, is
    /// valid configuration).
    endpoint: String,
    client: std::sync::Arc<tokio::sync::OnceCell<ThriftHiveMetastoreClient>>,
    /// `file:///…` or `s3://…` root for new tables (`<db>.db/<table>` below it).
    warehouse: String,
    file_io: FileIO,
    /// Lists table files on S3 (orphan cleanup).
    s3: Option<aws_sdk_s3::Client>,
    /// Every metastore call's deadline (`timeout-ms`, default 30 s).
    timeout: std::time::Duration,
    /// Set once the metastore was seen enforcing compare-and-swap.
    cas_verified: std::sync::Arc<tokio::sync::OnceCell<()>>,
}

impl std::fmt::Debug for HiveCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HiveCatalog")
            .field("endpoint", &self.endpoint)
            .field("warehouse", &self.warehouse)
            .finish()
    }
}

/// A transport failure: the metastore may not have seen the call, or may
/// have applied it (a lost reply) — transient either way.
fn hms_err(what: String, e: impl std::fmt::Debug) -> Error {
    Error::new(ErrorKind::Connection, format!("{what}: {e:?}"))
}

/// The kind of a metastore exception, by its type.
trait HmsException: std::fmt::Debug {
    fn kind(&self) -> ErrorKind;
}

impl HmsException for ThriftHiveMetastoreGetTableException {
    fn kind(&self) -> ErrorKind {
        match self {
            ThriftHiveMetastoreGetTableException::O2(_) => ErrorKind::NotFound,
            ThriftHiveMetastoreGetTableException::O1(_) => ErrorKind::Unexpected,
        }
    }
}

impl HmsException for ThriftHiveMetastoreGetDatabaseException {
    fn kind(&self) -> ErrorKind {
        match self {
            ThriftHiveMetastoreGetDatabaseException::O1(_) => ErrorKind::NotFound,
            ThriftHiveMetastoreGetDatabaseException::O2(_) => ErrorKind::Unexpected,
        }
    }
}

impl HmsException for ThriftHiveMetastoreCreateTableException {
    fn kind(&self) -> ErrorKind {
        match self {
            // Another creator won the race.
            ThriftHiveMetastoreCreateTableException::O1(_) => ErrorKind::CommitConflict,
            ThriftHiveMetastoreCreateTableException::O2(_) => ErrorKind::InvalidConfig,
            ThriftHiveMetastoreCreateTableException::O4(_) => ErrorKind::NotFound,
            ThriftHiveMetastoreCreateTableException::O3(_) => ErrorKind::Unexpected,
        }
    }
}

impl HmsException for ThriftHiveMetastoreCreateDatabaseException {
    fn kind(&self) -> ErrorKind {
        match self {
            ThriftHiveMetastoreCreateDatabaseException::O1(_) => ErrorKind::CommitConflict,
            ThriftHiveMetastoreCreateDatabaseException::O2(_) => ErrorKind::InvalidConfig,
            ThriftHiveMetastoreCreateDatabaseException::O3(_) => ErrorKind::Unexpected,
        }
    }
}

impl HmsException for ThriftHiveMetastoreAlterTableWithEnvironmentContextException {
    fn kind(&self) -> ErrorKind {
        use ThriftHiveMetastoreAlterTableWithEnvironmentContextException as E;
        match self {
            // The expected-parameter check failed: HMS reports it as a
            // MetaException whose message is the only distinguishing mark.
            E::O2(m)
                if m.message
                    .as_ref()
                    .is_some_and(|t| t.contains("has been modified")) =>
            {
                ErrorKind::CommitConflict
            }
            E::O1(_) => ErrorKind::InvalidData,
            E::O2(_) => ErrorKind::Unexpected,
        }
    }
}

/// Awaits a thrift call within the catalog's deadline and unwraps it:
/// transport errors, timeouts and metastore exceptions all become errors
/// (exceptions arrive as `Ok(Exception)`, easy to lose).
async fn call<T, E: HmsException>(
    limit: std::time::Duration,
    what: &str,
    r: impl Future<Output = std::result::Result<MaybeException<T, E>, volo_thrift::ClientError>>,
) -> Result<T> {
    tributary_core::within(limit, format!("the metastore's {what}"), async {
        match r.await {
            Ok(MaybeException::Ok(v)) => Ok(v),
            Ok(MaybeException::Exception(e)) => Err(Error::new(e.kind(), format!("{what}: {e:?}"))),
            Err(e) => Err(hms_err(what.to_string(), e)),
        }
    })
    .await
}

/// The Hive-2 type of an Iceberg type (what pyiceberg writes with
/// `hive.hive2-compatible`).
fn hive_type(t: &Type) -> String {
    match t {
        Type::Primitive(p) => match p {
            PrimitiveType::Boolean => "boolean".into(),
            PrimitiveType::Int => "int".into(),
            PrimitiveType::Long => "bigint".into(),
            PrimitiveType::Float => "float".into(),
            PrimitiveType::Double => "double".into(),
            PrimitiveType::Decimal { precision, scale } => format!("decimal({precision},{scale})"),
            PrimitiveType::Date => "date".into(),
            PrimitiveType::Timestamp | PrimitiveType::Timestamptz => "timestamp".into(),
            PrimitiveType::TimestampNs | PrimitiveType::TimestamptzNs => "timestamp".into(),
            PrimitiveType::Binary | PrimitiveType::Fixed(_) => "binary".into(),
            PrimitiveType::Time | PrimitiveType::String | PrimitiveType::Uuid => "string".into(),
        },
        Type::Struct(s) => {
            let fields: Vec<String> = s
                .fields()
                .iter()
                .map(|f| format!("{}:{}", f.name, hive_type(&f.field_type)))
                .collect();
            format!("struct<{}>", fields.join(","))
        }
        Type::List(l) => format!("array<{}>", hive_type(&l.element_field.field_type)),
        Type::Map(m) => format!(
            "map<{},{}>",
            hive_type(&m.key_field.field_type),
            hive_type(&m.value_field.field_type)
        ),
    }
}

fn fast(s: impl Into<String>) -> FastStr {
    FastStr::from(s.into())
}

impl HiveCatalog {
    /// Connects to the metastore at `addr` (`host:port`). HMS 2.3 speaks
    /// plain buffered thrift; the client's default framing fails with it.
    pub fn new(addr: SocketAddr, warehouse: impl Into<String>, file_io: FileIO) -> HiveCatalog {
        Self::at(addr.to_string(), warehouse, file_io)
    }

    fn at(endpoint: String, warehouse: impl Into<String>, file_io: FileIO) -> HiveCatalog {
        HiveCatalog {
            endpoint,
            client: Default::default(),
            warehouse: warehouse.into().trim_end_matches('/').to_string(),
            file_io,
            s3: None,
            timeout: crate::catalog_timeout(&HashMap::new()),
            cas_verified: Default::default(),
        }
    }

    /// A catalog from pyiceberg/Java property names: `uri`
    /// (`thrift://host:port`), `warehouse`, and the `s3.*` FileIO properties
    /// when the warehouse is on S3.
    pub fn from_properties(props: &HashMap<String, String>) -> Result<HiveCatalog> {
        let uri = props
            .get("uri")
            .ok_or_else(|| Error::invalid_config("catalog property `uri` is missing"))?;
        let endpoint = uri
            .strip_prefix("thrift://")
            .filter(|a| {
                a.rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
            })
            .ok_or_else(|| {
                Error::invalid_config(format!("catalog uri {uri:?} is not thrift://host:port"))
            })?;
        let warehouse = props
            .get("warehouse")
            .ok_or_else(|| Error::invalid_config("catalog property `warehouse` is missing"))?;
        let on_s3 = warehouse.starts_with("s3");
        let file_io = if on_s3 {
            crate::hadoop::s3_file_io(props)
        } else {
            FileIO::new_with_fs()
        };
        let mut catalog = HiveCatalog::at(endpoint.to_string(), warehouse.clone(), file_io);
        catalog.s3 = on_s3.then(|| crate::storage::s3_client(props));
        catalog.timeout = crate::catalog_timeout(props);
        Ok(catalog)
    }

    /// The thrift client, connected on first use (the name resolved then).
    async fn client(&self) -> Result<&ThriftHiveMetastoreClient> {
        self.client
            .get_or_try_init(|| async {
                let resolve = async {
                    tokio::net::lookup_host(&self.endpoint)
                        .await
                        .ok()
                        .and_then(|mut addrs| addrs.next())
                        .ok_or_else(|| {
                            Error::new(
                                ErrorKind::Connection,
                                format!("cannot resolve the metastore address {}", self.endpoint),
                            )
                        })
                };
                let addr = tributary_core::within(self.timeout, "resolving the metastore", resolve)
                    .await?;
                Ok(ThriftHiveMetastoreClientBuilder::new("hms")
                    .address(addr)
                    .make_codec(volo_thrift::codec::default::DefaultMakeCodec::buffered())
                    .build())
            })
            .await
    }

    /// Creates the database if it does not exist.
    pub async fn ensure_database(&self, name: &str) -> Result<()> {
        let got = call(
            self.timeout,
            "get_database",
            self.client().await?.get_database(fast(name)),
        )
        .await;
        match got {
            Ok(_) => return Ok(()),
            Err(e) if e.kind().is_transient() => return Err(e),
            Err(_) => {}
        }
        let db = Database {
            name: Some(fast(name)),
            location_uri: Some(fast(format!("{}/{name}.db", self.warehouse))),
            ..Default::default()
        };
        match call(
            self.timeout,
            "create_database",
            self.client().await?.create_database(db),
        )
        .await
        {
            // Created meanwhile by someone else: there it is.
            Err(e) if e.kind() == ErrorKind::CommitConflict => Ok(()),
            other => other,
        }
    }

    fn table_object(
        &self,
        name: &TableName,
        metadata: &TableMetadata,
        location: &str,
        previous: Option<&str>,
    ) -> Table {
        let cols = metadata
            .current_schema()
            .as_struct()
            .fields()
            .iter()
            .map(|f| FieldSchema {
                name: Some(fast(f.name.clone())),
                r#type: Some(fast(hive_type(&f.field_type))),
                comment: None,
            })
            .collect();
        let mut params: AHashMap<FastStr, FastStr> = AHashMap::default();
        params.insert(fast("EXTERNAL"), fast("TRUE"));
        params.insert(fast("table_type"), fast("ICEBERG"));
        params.insert(fast("metadata_location"), fast(location));
        if let Some(p) = previous {
            params.insert(fast("previous_metadata_location"), fast(p));
        }
        Table {
            table_name: Some(fast(name.table.clone())),
            db_name: Some(fast(name.namespace.clone())),
            table_type: Some(fast("EXTERNAL_TABLE")),
            // Iceberg partitions live in its metadata, not in Hive.
            partition_keys: Some(Vec::new()),
            parameters: Some(params),
            sd: Some(StorageDescriptor {
                cols: Some(cols),
                location: Some(fast(metadata.location())),
                input_format: Some(fast("org.apache.hadoop.mapred.FileInputFormat")),
                output_format: Some(fast("org.apache.hadoop.mapred.FileOutputFormat")),
                serde_info: Some(SerDeInfo {
                    serialization_lib: Some(fast(
                        "org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe",
                    )),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn metadata_path(location: &str, version: u32) -> String {
        format!(
            "{location}/metadata/{version:05}-{}.metadata.json",
            uuid::Uuid::new_v4()
        )
    }

    async fn write_metadata(&self, path: &str, metadata: &TableMetadata) -> Result<()> {
        let out = self
            .file_io
            .new_output(path)
            .map_err(|e| iceberg_err("metadata output", e))?;
        out.write(serde_json::to_vec(metadata)?.into())
            .await
            .map_err(|e| iceberg_err(format!("writing {path}"), e))
    }

    /// Creates the table (and its database) with metadata version 0.
    pub async fn create_table(
        &self,
        name: &TableName,
        schema: Schema,
        spec: UnboundPartitionSpec,
        properties: HashMap<String, String>,
    ) -> Result<CatalogTable> {
        self.ensure_database(&name.namespace).await?;
        let location = format!("{}/{}.db/{}", self.warehouse, name.namespace, name.table);
        let metadata = TableMetadataBuilder::new(
            schema,
            spec,
            SortOrder::unsorted_order(),
            location.clone(),
            FormatVersion::V2,
            properties,
        )
        .and_then(|b| b.build())
        .map_err(|e| iceberg_err("building table metadata", e))?
        .metadata;
        let path = Self::metadata_path(&location, 0);
        self.write_metadata(&path, &metadata).await?;
        let table = self.table_object(name, &metadata, &path, None);
        call(
            self.timeout,
            "create_table",
            self.client().await?.create_table(table),
        )
        .await
        .map_err(|e| e.map_text(|t| format!("cannot create {name}: {t}")))?;
        self.load(name).await
    }

    async fn load(&self, name: &TableName) -> Result<CatalogTable> {
        let got = self
            .client()
            .await?
            .get_table(fast(name.namespace.clone()), fast(name.table.clone()));
        let table = call(self.timeout, "get_table", got)
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => Error::new(
                    ErrorKind::NotFound,
                    format!("table {name} does not exist in the metastore"),
                ),
                _ => e,
            })?;
        let params = table.parameters.unwrap_or_default();
        let is_iceberg = params
            .get("table_type")
            .is_some_and(|t| t.eq_ignore_ascii_case("ICEBERG"));
        let location = params
            .get("metadata_location")
            .filter(|_| is_iceberg)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidConfig,
                    format!("{name} is not an Iceberg table"),
                )
            })?
            .to_string();
        let bytes = self
            .file_io
            .new_input(&location)
            .map_err(|e| iceberg_err("metadata input", e))?
            .read()
            .await
            .map_err(|e| iceberg_err(format!("reading {location}"), e))?;
        let metadata: TableMetadata = serde_json::from_slice(&bytes)?;
        let version = location
            .rsplit('/')
            .next()
            .and_then(|f| f.split('-').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        Ok(CatalogTable {
            name: name.clone(),
            version,
            metadata_location: location,
            metadata,
            file_io: self.file_io.clone(),
        })
    }

    async fn swap(&self, base: &CatalogTable, metadata: TableMetadata) -> Result<CatalogTable> {
        let path = Self::metadata_path(metadata.location(), base.version + 1);
        self.write_metadata(&path, &metadata).await?;
        let table = self.table_object(&base.name, &metadata, &path, Some(&base.metadata_location));
        let mut expected: AHashMap<FastStr, FastStr> = AHashMap::default();
        expected.insert(fast("expected_parameter_key"), fast("metadata_location"));
        expected.insert(
            fast("expected_parameter_value"),
            fast(base.metadata_location.clone()),
        );
        let ctx = EnvironmentContext {
            properties: Some(expected),
        };
        let (db, tbl) = (
            fast(base.name.namespace.clone()),
            fast(base.name.table.clone()),
        );
        let alter = self
            .client()
            .await?
            .alter_table_with_environment_context(db, tbl, table, ctx);
        match call(self.timeout, "alter_table", alter).await {
            Ok(()) => {
                crate::delete_dropped_metadata(base, &metadata).await;
                Ok(CatalogTable {
                    name: base.name.clone(),
                    version: base.version + 1,
                    metadata_location: path,
                    metadata,
                    file_io: self.file_io.clone(),
                })
            }
            Err(e) if e.kind() == ErrorKind::CommitConflict => {
                let _ = self.file_io.delete(&path).await;
                Err(Error::new(
                    ErrorKind::CommitConflict,
                    format!("{} was committed by another writer first", base.name),
                ))
            }
            // The metastore may have applied the alter and lost the reply:
            // the new file may be the table's now, so it stays (an orphan
            // at worst).
            Err(e) if e.kind() == ErrorKind::Connection => Err(e),
            Err(e) => {
                let _ = self.file_io.delete(&path).await;
                Err(e)
            }
        }
    }
}

impl HiveCatalog {
    /// Alters `table` unchanged but expecting a `metadata_location` it does
    /// not have: a metastore that enforces the check refuses ("has been
    /// modified"); one that applies it would let two committers both win.
    async fn probe_compare_and_swap(&self, table: &CatalogTable) -> Result<()> {
        let name = &table.name;
        let (db, tbl) = (fast(name.namespace.clone()), fast(name.table.clone()));
        let current = call(
            self.timeout,
            "get_table",
            self.client().await?.get_table(db.clone(), tbl.clone()),
        )
        .await?;
        let mut expected: AHashMap<FastStr, FastStr> = AHashMap::default();
        expected.insert(fast("expected_parameter_key"), fast("metadata_location"));
        expected.insert(
            fast("expected_parameter_value"),
            fast(format!("tributary-cas-probe-{}", uuid::Uuid::new_v4())),
        );
        let ctx = EnvironmentContext {
            properties: Some(expected),
        };
        let alter = self
            .client()
            .await?
            .alter_table_with_environment_context(db, tbl, current, ctx);
        match call(self.timeout, "alter_table", alter).await {
            Err(e) if e.kind() == ErrorKind::CommitConflict => Ok(()),
            Err(e) => Err(e.with_context("probe", "compare-and-swap")),
            Ok(()) => Err(Error::invalid_config(format!(
                "the Hive Metastore does not enforce compare-and-swap: it applied an \
                 alter_table of {name} whose expected metadata_location was wrong, so two \
                 committers could overwrite each other's commits. Use a metastore that \
                 honours the `expected_parameter_key/value` environment context of \
                 alter_table (Hive 2.3.10 and later, as tested here), or another catalog"
            ))),
        }
    }
}

#[async_trait::async_trait]
impl Catalog for HiveCatalog {
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
        HiveCatalog::create_table(self, name, schema, spec, properties).await
    }

    async fn load_table(&self, name: &TableName) -> Result<CatalogTable> {
        self.load(name).await
    }

    async fn commit(&self, base: &CatalogTable, metadata: TableMetadata) -> Result<CatalogTable> {
        self.swap(base, metadata).await
    }

    async fn list_files(&self, location: &str) -> Result<Vec<crate::StoredFile>> {
        crate::storage::list_files(location, self.s3.as_ref()).await
    }
}
