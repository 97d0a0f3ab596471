//! MySQL/MariaDB source for Tributary.
//!
//! - [`BinlogReader`]: binlog CDC (MariaDB GTIDs decoded by hand; MySQL file
//!   positions and GTID events), rows decoded straight into `ChangeBatch`es
//!   with the schema of each row's own table map, checkpoints at transaction
//!   ends, heartbeats on idle servers, typed `PositionLost` errors.
//! - [`MySqlSource`]: chunked, lock-free snapshot (each chunk at an exact
//!   binlog position, rate-limited, resumable) merged into the binlog stream;
//!   snapshot-only mode for servers without a binlog.
//! - [`MySqlSourceConfig`]: connection, table filters, start mode, zero-date
//!   policy, validated before anything connects.
//! - [`PasswordSource`]: password from env, file or command, re-read after an
//!   authentication failure; never logged.
//!
//! Only MariaDB can run in this project's test environment: the MySQL 8 paths
//! (GTID sets, binary JSON) follow the protocol but are untested.

pub mod binlog;
mod charset;
pub mod check;
pub mod config;
pub mod conn;
pub mod credentials;
mod keys;
pub mod snapshot;
mod source;

pub use binlog::BinlogReader;
pub use check::{Problem, ServerReport, check_server};
pub use config::{
    KeylessPolicy, MySqlSourceConfig, SnapshotConfig, SnapshotMode, StartMode, TableFilter,
    TableFilterConfig, ZeroDates,
};
pub use conn::Flavor;
pub use credentials::{PasswordSource, Secret};
pub use snapshot::SnapshotProgress;
pub use source::{MySqlSource, MySqlSourceFactory};
