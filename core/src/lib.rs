//! Tributary's change-event model, shared by every connector, catalog and the CLI.
//!
//! - [`Value`], [`ColumnType`], [`TableSchema`]: typed values and schemas
//!   covering every MySQL/MariaDB type without loss (time semantics in [`value`]).
//! - [`SourcePosition`], [`Checkpoint`]: where a change came from and what a
//!   sink commits with its data.
//! - [`ChangeEvent`] (per row) and [`ChangeBatch`] (Arrow arrays, the bulk path).
//! - [`Source`] and [`Sink`]: the connector traits; [`SourceFactory`] and
//!   [`SinkFactory`]: what a pipeline runner (`tributary-runtime`) holds per
//!   configured kind.
//! - [`changelog`]: the append-only form of tables without a key.
//! - [`Error`]: one error type with a kind, a message and context.

pub mod batch;
pub mod changelog;
pub mod duration;
pub mod error;
pub mod event;
pub mod filter;
pub mod partitions;
pub mod position;
pub mod retry;
pub mod schema;
pub mod traits;
pub mod value;

pub use batch::{
    ChangeBatch, ChangeBatchBuilder, Image, KeyedChange, RowImageBuilder, TxnMeta, is_committed,
    row_version,
};
pub use error::{Error, ErrorKind, Result};
pub use event::{ChangeEvent, Op, Row, SchemaChange, SchemaChangeKind};
pub use filter::{TableFilter, TableFilterConfig};
pub use partitions::PartitionClaim;
pub use position::{
    BinlogFilePos, Checkpoint, EPOCH_PROPERTY, MariaDbGtid, MariaDbGtidList, MySqlGtidSet,
    OWNER_PROPERTY, PAUSED_PROPERTY, RESNAPSHOT_PROPERTY, ROUND_PROPERTY, SourcePosition,
};
pub use retry::{RetryPolicy, retry, retry_transient, within};
pub use schema::{Column, ColumnChange, ColumnType, DefaultValue, TableId, TableSchema};
pub use traits::{
    CheckFinding, CheckStatus, MaintainOptions, Prepared, Report, Sink, SinkCounters, SinkFactory,
    Source, SourceFactory, SourceRecord, TargetMaintenance, TargetState,
};
pub use value::{Decimal, Value};
