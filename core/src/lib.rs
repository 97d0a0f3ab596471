//! Tributary's change-event model, shared by every connector, catalog and the CLI.
//!
//! - [`Value`], [`ColumnType`], [`TableSchema`]: typed values and schemas
//!   covering every MySQL/MariaDB type without loss (time semantics in [`value`]).
//! - [`SourcePosition`], [`Checkpoint`]: where a change came from and what a
//!   sink commits with its data.
//! - [`ChangeEvent`] (per row) and [`ChangeBatch`] (Arrow arrays, the bulk path).
//! - [`Source`] and [`Sink`]: the connector traits; [`HaSink`]: any sink as a
//!   primary/standby pair with failover and fail-back.
//! - [`Error`]: one error type with a kind, a message and context.

pub mod batch;
pub mod error;
pub mod event;
pub mod ha;
pub mod position;
pub mod schema;
pub mod traits;
pub mod value;

pub use batch::{ChangeBatch, ChangeBatchBuilder, Image, RowImageBuilder, TxnMeta};
pub use error::{Error, ErrorKind, Result};
pub use event::{ChangeEvent, Op, Row, SchemaChange, SchemaChangeKind};
pub use ha::{HaConfig, HaSink, HaStats, Side};
pub use position::{
    BinlogFilePos, Checkpoint, MariaDbGtid, MariaDbGtidList, MySqlGtidSet, SourcePosition,
};
pub use schema::{Column, ColumnChange, ColumnType, DefaultValue, TableId, TableSchema};
pub use traits::{Sink, Source, SourceRecord};
pub use value::{Decimal, Value};
