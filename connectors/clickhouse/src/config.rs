//! The ClickHouse sink's configuration, checked by `validate()` before
//! anything connects.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use tributary_core::{Error, Result};

/// How rows reach the shards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterMode {
    /// One server (`urls[0]`), one table.
    #[default]
    Single,
    /// Each row goes straight to one shard's local table, chosen by a stable
    /// hash (xxh3) of its primary key, bypassing the Distributed engine: one
    /// key always lives on one shard. `urls` lists the shards in order.
    Local,
    /// Rows are inserted into the Distributed table on `urls[0]`
    /// (`insert_distributed_sync=1`: an insert returns once the shards have
    /// it), sharded by `cityHash64` of the primary key.
    Distributed,
}

/// `[sink.clickhouse]`. Durations: seconds, or a string such as `"1s"`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseSinkConfig {
    /// HTTP endpoints: the server (single), or every shard in shard order.
    pub urls: Vec<String>,
    #[serde(default)]
    pub user: Option<String>,
    /// Environment variable holding the password (never in the file).
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default = "default_database")]
    pub database: String,
    #[serde(default)]
    pub mode: ClusterMode,
    /// The cluster of the Distributed table (`system.clusters`); needed by
    /// the local and distributed modes.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Rows buffered before an insert is sent (default 100 000)…
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// …or bytes of RowBinary (default 64 MiB)…
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: usize,
    /// …or this long after the previous insert (default 1 s).
    #[serde(default = "default_flush_interval", with = "tributary_core::duration")]
    pub flush_interval: Duration,
    /// Attempts of an insert on transient errors (default 5; exponential
    /// backoff from 100 ms).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
}

fn default_database() -> String {
    "default".into()
}
fn default_batch_rows() -> usize {
    100_000
}
fn default_batch_bytes() -> usize {
    64 << 20
}
fn default_flush_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_attempts() -> u32 {
    5
}

impl fmt::Debug for ClickHouseSinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClickHouseSinkConfig")
            .field("urls", &self.urls)
            .field("user", &self.user)
            .field("password_env", &self.password_env)
            .field("database", &self.database)
            .field("mode", &self.mode)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl ClickHouseSinkConfig {
    /// A single-server config with defaults.
    pub fn single(url: impl Into<String>) -> ClickHouseSinkConfig {
        ClickHouseSinkConfig {
            urls: vec![url.into()],
            user: None,
            password_env: None,
            database: default_database(),
            mode: ClusterMode::Single,
            cluster: None,
            batch_rows: default_batch_rows(),
            batch_bytes: default_batch_bytes(),
            flush_interval: default_flush_interval(),
            attempts: default_attempts(),
        }
    }

    /// A config for `urls` as the shards of `cluster`.
    pub fn sharded(urls: Vec<String>, cluster: &str, mode: ClusterMode) -> ClickHouseSinkConfig {
        ClickHouseSinkConfig {
            urls,
            mode,
            cluster: Some(cluster.to_string()),
            ..ClickHouseSinkConfig::single("")
        }
    }

    pub fn validate(&self) -> Result<()> {
        let fail = |m: String| Err(Error::invalid_config(format!("sink.clickhouse: {m}")));
        if self.urls.is_empty() || self.urls.iter().any(|u| !u.starts_with("http")) {
            return fail("urls must list http(s):// endpoints, one per shard".into());
        }
        if self.mode != ClusterMode::Single && self.cluster.is_none() {
            return fail(format!(
                "mode {:?} needs `cluster`, the cluster name in system.clusters",
                self.mode
            ));
        }
        if self.mode == ClusterMode::Single && self.urls.len() > 1 {
            return fail("mode single takes one url; use local or distributed for shards".into());
        }
        if self.batch_rows == 0 || self.batch_bytes == 0 || self.attempts == 0 {
            return fail("batch_rows, batch_bytes and attempts must be at least 1".into());
        }
        if self.flush_interval.is_zero() {
            return fail("flush_interval = 0: expected a positive duration".into());
        }
        if let Some(var) = &self.password_env
            && std::env::var(var).is_err()
        {
            return fail(format!(
                "password_env names {var}, which is not set in the environment"
            ));
        }
        Ok(())
    }

    /// A client of one endpoint (validation off: 18.16 lacks
    /// RowBinaryWithNamesAndTypes).
    pub fn client(&self, url: &str) -> clickhouse::Client {
        let mut c = clickhouse::Client::default()
            .with_url(url)
            .with_database(&self.database)
            .with_validation(false);
        if let Some(user) = &self.user {
            c = c.with_user(user);
        }
        if let Some(pw) = self
            .password_env
            .as_ref()
            .and_then(|v| std::env::var(v).ok())
        {
            c = c.with_password(pw);
        }
        c
    }
}
