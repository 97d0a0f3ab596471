//! The Iceberg sink's configuration (the `[sink.iceberg]` section of a
//! pipeline file), checked by `validate()` before anything connects.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tributary_catalog::{Catalog, HadoopCatalog, HiveCatalog, TableName};
use tributary_core::{Error, Result, TableId};

use crate::partition::PartitionField;
use crate::types::ColumnPolicy;
use crate::writer::{DeleteMode, UpsertConfig};

/// Which catalog holds the tables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatalogKind {
    /// Metadata files under the warehouse (local path, `file://` or `s3://`).
    #[default]
    Hadoop,
    /// A Hive Metastore (`uri = "thrift://host:9083"`).
    Hive,
}

/// `[sink.iceberg]`: the catalog, where each source table goes, and the
/// writer's settings. Durations: seconds, or a string such as `"10s"`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcebergSinkConfig {
    #[serde(default)]
    pub catalog: CatalogKind,
    /// Catalog properties under pyiceberg/Java names: `warehouse`, `uri`
    /// (Hive), `s3.endpoint`, `s3.region`, `s3.access-key-id`,
    /// `s3.secret-access-key`, `s3.path-style-access`.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Namespace of every table (default: the source database's name).
    pub namespace: Option<String>,
    #[serde(default)]
    pub delete_mode: DeleteMode,
    #[serde(default)]
    pub column_policy: ColumnPolicy,
    #[serde(default, with = "tributary_core::duration::option")]
    pub commit_interval: Option<Duration>,
    pub commit_rows: Option<usize>,
    pub commit_bytes: Option<usize>,
    pub target_file_bytes: Option<usize>,
    pub row_group_rows: Option<usize>,
    /// Touched data files up to this many bytes in all (per commit) are
    /// written again without the changed rows instead of getting position
    /// deletes (default 8 MiB; 0: always merge-on-read).
    pub copy_on_write_bytes: Option<usize>,
    #[serde(default, with = "tributary_core::duration::option")]
    pub idle_commit_interval: Option<Duration>,
    /// Partition spec per source table (`"db.table" = ["day(ts)", …]`),
    /// used when the writer creates the table.
    #[serde(default)]
    pub partition_by: BTreeMap<String, Vec<String>>,
    /// Memory for cached key → row maps, shared by every table of the job
    /// (default 256 MiB).
    pub key_cache_bytes: Option<usize>,
    /// `[sink.iceberg.maintenance]`: compaction, delete conversion,
    /// expiry; run in the background by `sync` unless `enabled = false`.
    #[serde(default)]
    pub maintenance: tributary_maintenance::MaintenanceConfig,
}

/// Property names whose values are credentials: never shown.
fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["secret", "password", "token", "credential"]
        .iter()
        .any(|s| k.contains(s))
}

impl fmt::Debug for IcebergSinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let props: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), if is_secret(k) { "***" } else { v.as_str() }))
            .collect();
        f.debug_struct("IcebergSinkConfig")
            .field("catalog", &self.catalog)
            .field("properties", &props)
            .field("namespace", &self.namespace)
            .field("delete_mode", &self.delete_mode)
            .field("partition_by", &self.partition_by)
            .field("maintenance", &self.maintenance)
            .finish_non_exhaustive()
    }
}

fn positive(name: &str, v: Option<Duration>, default: Duration) -> Result<Duration> {
    match v {
        None => Ok(default),
        Some(d) if d.is_zero() => Err(Error::invalid_config(format!(
            "sink.iceberg.{name} = 0: expected a positive duration"
        ))),
        Some(d) => Ok(d),
    }
}

impl IcebergSinkConfig {
    /// Checks everything that can be checked without a catalog.
    pub fn validate(&self) -> Result<()> {
        let need = |key: &str| {
            if self.properties.contains_key(key) {
                Ok(())
            } else {
                Err(Error::invalid_config(format!(
                    "sink.iceberg.properties.{key} is missing: the {:?} catalog needs it",
                    self.catalog
                )))
            }
        };
        need("warehouse")?;
        if self.catalog == CatalogKind::Hive {
            need("uri")?;
        }
        self.writer_config(&TableId::new("-", "-"))?.validate()?;
        self.maintenance.validate(false).map_err(|e| {
            e.map_text(|t| t.replacen("maintenance:", "sink.iceberg.maintenance:", 1))
        })?;
        for table in self.partition_by.keys() {
            if table.split_once('.').is_none() {
                return Err(Error::invalid_config(format!(
                    "sink.iceberg.partition_by: {table:?} is not `database.table`"
                )));
            }
            self.partition_fields(table)?;
        }
        Ok(())
    }

    fn partition_fields(&self, table: &str) -> Result<Vec<PartitionField>> {
        let fields = self.partition_by.get(table).map(Vec::as_slice);
        fields
            .unwrap_or_default()
            .iter()
            .map(|f| {
                f.parse()
                    .map_err(|e: Error| e.with_context("sink.iceberg.partition_by", table))
            })
            .collect()
    }

    /// The writer settings for one source table.
    pub fn writer_config(&self, table: &TableId) -> Result<UpsertConfig> {
        let d = UpsertConfig::default();
        Ok(UpsertConfig {
            delete_mode: self.delete_mode,
            commit_interval: positive("commit_interval", self.commit_interval, d.commit_interval)?,
            commit_rows: self.commit_rows.unwrap_or(d.commit_rows),
            commit_bytes: self.commit_bytes.unwrap_or(d.commit_bytes),
            target_file_bytes: self.target_file_bytes.unwrap_or(d.target_file_bytes),
            row_group_rows: self.row_group_rows.unwrap_or(d.row_group_rows),
            column_policy: self.column_policy,
            idle_commit_interval: positive(
                "idle_commit_interval",
                self.idle_commit_interval,
                d.idle_commit_interval,
            )?,
            partition_by: self.partition_fields(&format!("{}.{}", table.database, table.table))?,
            copy_on_write_bytes: self.copy_on_write_bytes.unwrap_or(d.copy_on_write_bytes),
        })
    }

    /// Where a source table's rows go.
    pub fn table_name(&self, table: &TableId) -> TableName {
        let namespace = self.namespace.as_deref().unwrap_or(&table.database);
        TableName::new(namespace, &table.table)
    }

    /// The catalog (no connection is made until it is used).
    pub fn catalog(&self) -> Result<Arc<dyn Catalog>> {
        let props: HashMap<String, String> = self.properties.clone().into_iter().collect();
        Ok(match self.catalog {
            CatalogKind::Hadoop => Arc::new(HadoopCatalog::from_properties(&props)?),
            CatalogKind::Hive => Arc::new(HiveCatalog::from_properties(&props)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> IcebergSinkConfig {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn settings_map_onto_the_writer_and_bad_ones_are_named() {
        let c = parse(serde_json::json!({
            "properties": {"warehouse": "/tmp/wh", "s3.secret-access-key": "hunter2"},
            "delete_mode": "equality",
            "commit_interval": 2.5,
            "partition_by": {"shop.orders": ["bucket(8, id)"]}
        }));
        c.validate().unwrap();
        let w = c.writer_config(&TableId::new("shop", "orders")).unwrap();
        assert_eq!(w.delete_mode, DeleteMode::Equality);
        assert_eq!(w.commit_interval, Duration::from_millis(2500));
        assert_eq!(w.partition_by[0].to_string(), "bucket(8, id)");
        assert!(
            c.writer_config(&TableId::new("shop", "x"))
                .unwrap()
                .partition_by
                .is_empty()
        );
        assert_eq!(
            c.table_name(&TableId::new("shop", "orders")).to_string(),
            "shop.orders"
        );
        assert!(
            !format!("{c:?}").contains("hunter2"),
            "secrets never in Debug"
        );

        let e = parse(serde_json::json!({"properties": {}}))
            .validate()
            .unwrap_err();
        assert!(
            e.to_string().contains("properties.warehouse is missing"),
            "{e}"
        );
        let e = parse(serde_json::json!({"catalog": "hive", "properties": {"warehouse": "w"}}))
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("properties.uri"), "{e}");
        let e = parse(serde_json::json!({"properties": {"warehouse": "w"}, "commit_interval": 0}))
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("commit_interval = 0"), "{e}");
        let e = parse(serde_json::json!({
            "properties": {"warehouse": "w"}, "partition_by": {"shop.orders": ["week(ts)"]}
        }))
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("week(ts)"), "{e}");
        assert!(
            serde_json::from_value::<IcebergSinkConfig>(serde_json::json!({"warehous": "w"}))
                .is_err(),
            "unknown keys are refused"
        );
    }
}
