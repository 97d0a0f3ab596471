//! ClickHouse upsert sink for Tributary.
//!
//! - [`ClickHouseSink`]: one source table as a ReplacingMergeTree of
//!   versioned rows (`_version` from the binlog position, `_is_deleted`),
//!   written in large RowBinary inserts straight to each shard's local table
//!   (key-hashed) or through the Distributed table; replays add nothing.
//! - [`types`]: the documented type mapping, for modern servers and for
//!   18.16 (no DateTime64/Date32/Decimal256: lossless integer encodings).
//! - [`ddl`]: the tables and the `_live` view of current rows.

pub mod config;
pub mod ddl;
pub mod sink;
pub mod types;

pub use config::{ClickHouseSinkConfig, ClusterMode};
pub use sink::{
    ClickHouseSink, ClickHouseSinkFactory, SinkStats, committed_state, drop_tables, row_version,
};
pub use types::ServerVersion;
