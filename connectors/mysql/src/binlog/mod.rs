//! `BinlogReader`: a MySQL/MariaDB binlog dump turned into `SourceRecord`s.
//!
//! Rows are decoded straight into per-table `ChangeBatchBuilder`s and handed
//! out when a batch is full or the server has nothing more to send right now;
//! a `Checkpoint` follows, always at a transaction end. Schemas come from the
//! table maps (`binlog_row_metadata=FULL`), so a restart decodes every row
//! with the schema valid at its position; the last schema per table is kept
//! in the checkpoint so schema-change events stay exact across restarts.
//!
//! Files: `reader` (the state machine and event dispatch), `cursor` (the
//! one rule that moves the position, shared with the start-time scan),
//! `schema_events` (DDL in the stream), `versions` (row versions across
//! position jumps), `server` (queries outside the
//! stream), `events`/`table`/`rows`/`json` (decoding), `ddl` (naming the
//! tables a DDL statement touches).

mod cursor;
mod ddl;
pub(crate) mod events;
mod json;
pub(crate) mod reader;
pub(crate) mod rows;
mod schema_events;
mod server;
pub(crate) mod table;
mod versions;

pub use reader::BinlogReader;
pub(crate) use server::mariadb_position_at;

/// Checkpoint property holding the last schema of every table seen (JSON).
/// The table-scoped checkpoint property holding a table's last schema.
pub const SCHEMA_PROPERTY: &str = "mysql.schema";
/// Checkpoint property holding the row-version base (see `VersionClock`).
pub const VERSION_BASE_PROPERTY: &str = "mysql.version_base";
/// Where checkpoints written before table-scoped state kept all schemas.
pub const LEGACY_SCHEMAS_PROPERTY: &str = "mysql.schemas";
