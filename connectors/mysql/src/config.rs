//! Source configuration, checked by `validate()` before anything connects.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tributary_core::{Error, Result, SourcePosition, TableId};
pub use tributary_core::{TableFilter, TableFilterConfig};

use crate::credentials::PasswordSource;

/// How MySQL zero dates ('0000-00-00', zero month or day) are delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ZeroDates {
    /// NULL in nullable columns; 1970-01-01 (the epoch) in NOT NULL columns,
    /// which cannot hold NULL (Debezium's behaviour).
    #[default]
    Null,
    /// Always the epoch.
    Epoch,
    /// Fail the reader with an error naming the column.
    Fail,
}

/// Where a binlog reader starts when there is no checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum StartMode {
    /// The oldest binlog the server still has.
    Earliest,
    /// The current end of the binlog.
    #[default]
    Latest,
    /// An explicit position (file+pos, MySQL GTID set or MariaDB GTID list).
    Position { position: SourcePosition },
    /// The first transaction committed at or after this time (RFC 3339,
    /// second precision like the binlog), found by scanning the binlogs.
    Timestamp { at: String },
}

impl StartMode {
    /// The time of a `Timestamp` start in microseconds since the epoch.
    pub fn timestamp_micros(&self) -> Result<Option<i64>> {
        let StartMode::Timestamp { at } = self else {
            return Ok(None);
        };
        let t = chrono::DateTime::parse_from_rfc3339(at).map_err(|e| {
            Error::invalid_config(format!(
                "mysql.start.at {at:?} is not an RFC 3339 time (e.g. 2026-11-22T01:00:00Z): {e}"
            ))
        })?;
        Ok(Some(t.timestamp_micros()))
    }
}

/// Whether and how tables are read in full before (and while) streaming.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    /// Snapshot every selected table, then stream the binlog (the default).
    #[default]
    Initial,
    /// Stream the binlog only.
    Never,
    /// Snapshot only, for servers with binary logging off; never touches the
    /// binlog. Each table is read in one consistent-snapshot transaction, so
    /// it is exact as of that transaction's start (tables are not mutually
    /// consistent with each other).
    Only,
}

/// Snapshot chunking and flow control.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotConfig {
    #[serde(default)]
    pub mode: SnapshotMode,
    /// Rows per chunk (one consistent-snapshot query each).
    #[serde(default = "default_chunk_rows")]
    pub chunk_rows: usize,
    /// Snapshot connections reading chunks in parallel (at least 1).
    #[serde(default = "default_snapshot_connections")]
    pub max_connections: usize,
    /// Upper bound on rows read per second (0: unlimited).
    #[serde(default)]
    pub max_rows_per_sec: u32,
    /// Upper bound on bytes read per second (0: unlimited).
    #[serde(default)]
    pub max_bytes_per_sec: u32,
    /// Older place of the source's `key_columns` (still read; the
    /// source-level setting wins).
    #[serde(default)]
    pub key_columns: std::collections::BTreeMap<String, Vec<String>>,
}

fn default_chunk_rows() -> usize {
    8192
}

fn default_snapshot_connections() -> usize {
    2
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            mode: SnapshotMode::default(),
            chunk_rows: default_chunk_rows(),
            max_connections: default_snapshot_connections(),
            max_rows_per_sec: 0,
            max_bytes_per_sec: 0,
            key_columns: Default::default(),
        }
    }
}

/// Connection and behaviour of a MySQL/MariaDB source.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MySqlSourceConfig {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub user: String,
    #[serde(default)]
    pub password: PasswordSource,
    /// Replica server id of the binlog connection; unique among the server's replicas.
    #[serde(default = "default_server_id")]
    pub server_id: u32,
    #[serde(default)]
    pub tables: TableFilterConfig,
    #[serde(default)]
    pub start: StartMode,
    #[serde(default)]
    pub zero_dates: ZeroDates,
    #[serde(default)]
    pub snapshot: SnapshotConfig,
    /// How often an idle server sends heartbeats (keeps positions and watermarks moving).
    #[serde(default = "default_heartbeat", with = "tributary_core::duration")]
    pub heartbeat_interval: Duration,
    /// Rows buffered per batch before the reader hands them out.
    #[serde(default = "default_batch_rows")]
    pub max_batch_rows: usize,
    /// The columns that key a table's rows (`"db.table"` → NOT NULL
    /// columns), in every sink and for snapshot chunks; without an entry a
    /// table is keyed by its primary key, else by its first unique index
    /// on NOT NULL columns. A selected table with none of these is refused
    /// at start.
    #[serde(default)]
    pub key_columns: std::collections::BTreeMap<String, Vec<String>>,
    /// What happens to selected tables with no key at all.
    #[serde(default)]
    pub keyless: KeylessPolicy,
}

/// The policy for tables with no primary key, no unique index on NOT NULL
/// columns and no configured `key_columns`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeylessPolicy {
    /// The job refuses to start, naming every such table and the fixes
    /// (a table created later without a key stops the stream the same way).
    #[default]
    Refuse,
    /// Each such table becomes an append-only table of its changes: the
    /// change's sequence, op, source position and commit time, then the
    /// row (see `tributary_core::changelog`).
    Changelog,
}

fn default_port() -> u16 {
    3306
}
fn default_server_id() -> u32 {
    5_407_001
}
fn default_heartbeat() -> Duration {
    Duration::from_secs(5)
}
fn default_batch_rows() -> usize {
    8192
}

impl MySqlSourceConfig {
    /// A config with defaults for everything but the address and user.
    pub fn new(host: impl Into<String>, port: u16, user: impl Into<String>) -> Self {
        MySqlSourceConfig {
            host: host.into(),
            port,
            user: user.into(),
            password: PasswordSource::None,
            server_id: default_server_id(),
            tables: TableFilterConfig::default(),
            start: StartMode::default(),
            zero_dates: ZeroDates::default(),
            snapshot: SnapshotConfig::default(),
            heartbeat_interval: default_heartbeat(),
            max_batch_rows: default_batch_rows(),
            key_columns: Default::default(),
            keyless: KeylessPolicy::default(),
        }
    }

    /// The configured key columns of `table`, if any.
    pub fn configured_key(&self, table: &TableId) -> Option<&Vec<String>> {
        let name = table.to_string();
        self.key_columns
            .get(&name)
            .or_else(|| self.snapshot.key_columns.get(&name))
    }

    /// Checks everything that can be checked without a server.
    pub fn validate(&self) -> Result<()> {
        if self.host.trim().is_empty() {
            return Err(Error::invalid_config(
                "mysql.host is empty: set the server's host name or address",
            ));
        }
        if self.user.trim().is_empty() {
            return Err(Error::invalid_config(
                "mysql.user is empty: set the replication user",
            ));
        }
        if self.server_id == 0 {
            return Err(Error::invalid_config(
                "mysql.server_id is 0: the server refuses binlog dumps from id 0; pick an id unique among its replicas",
            ));
        }
        if self.snapshot.max_connections == 0 {
            return Err(Error::invalid_config(
                "mysql.snapshot.max_connections must be at least 1",
            ));
        }
        if self.snapshot.chunk_rows == 0 {
            return Err(Error::invalid_config(
                "mysql.snapshot.chunk_rows must be at least 1",
            ));
        }
        if self.max_batch_rows == 0 {
            return Err(Error::invalid_config(
                "mysql.max_batch_rows must be at least 1",
            ));
        }
        if self.heartbeat_interval.is_zero() || self.heartbeat_interval > Duration::from_secs(4_294)
        {
            return Err(Error::invalid_config(
                "mysql.heartbeat_interval must be between 1 ms and 4294 s",
            ));
        }
        for (table, cols) in self.key_columns.iter().chain(&self.snapshot.key_columns) {
            if table
                .split_once('.')
                .is_none_or(|(d, t)| d.is_empty() || t.is_empty())
            {
                return Err(Error::invalid_config(format!(
                    "mysql.key_columns: {table:?} is not a table name: write \"database.table\""
                )));
            }
            if cols.is_empty() {
                return Err(Error::invalid_config(format!(
                    "mysql.key_columns[{table:?}] is empty: list the columns that identify a row"
                )));
            }
        }
        self.start.timestamp_micros()?;
        self.password.validate()?;
        TableFilter::new(&self.tables)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_use_globs_exclusions_win_and_system_schemas_never_match() {
        let f = TableFilter::new(&TableFilterConfig {
            include: vec!["shop.*".into(), "crm.customer?".into()],
            exclude: vec!["shop.tmp_*".into()],
        })
        .unwrap();
        assert!(f.matches("shop", "orders"));
        assert!(!f.matches("shop", "tmp_x"));
        assert!(f.matches("crm", "customers"));
        assert!(!f.matches("crm", "customer_notes"));
        assert!(!f.matches("mysql", "user"));
        let all = TableFilter::new(&TableFilterConfig::default()).unwrap();
        assert!(all.matches("any", "table") && !all.matches("sys", "x"));
    }

    #[test]
    fn validate_names_the_setting_and_the_fix() {
        let mut c = MySqlSourceConfig::new("db", 3306, "repl");
        c.validate().unwrap();
        c.server_id = 0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("mysql.server_id")
        );
        c.server_id = 7;
        c.key_columns.insert("no_dot".into(), vec!["id".into()]);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("\"no_dot\" is not a table name"), "{e}");
        c.key_columns.clear();
        c.key_columns.insert("shop.t".into(), vec![]);
        assert!(c.validate().unwrap_err().to_string().contains("is empty"));
        c.key_columns.clear();
        c.tables.include = vec!["[".into()];
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("not a valid glob")
        );
    }

    #[test]
    fn config_reads_from_json_with_defaults() {
        let c: MySqlSourceConfig = serde_json::from_str(
            r#"{"host":"db","user":"repl","password":{"env":"DB_PASS"},"start":{"mode":"earliest"},"heartbeat_interval":1.5}"#,
        )
        .unwrap();
        assert_eq!((c.port, c.start.clone()), (3306, StartMode::Earliest));
        assert_eq!(c.heartbeat_interval, Duration::from_millis(1500));
    }
}
