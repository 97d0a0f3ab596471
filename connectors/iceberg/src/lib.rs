//! Iceberg upsert sink for Tributary.
//!
//! - [`UpsertWriter`]: CDC batches reduced per key, written as data files plus
//!   position deletes (readable by every Iceberg reader) or bloom-filtered
//!   equality deletes, committed with the source checkpoint for exactly-once
//!   resume; bounded memory (spills), schema evolution, partitioned tables.
//! - [`types`]: the documented source → Iceberg type mapping.

pub mod config;
pub mod factory;
pub mod key_index;
pub mod partition;
pub mod types;
pub mod writer;

pub use config::{CatalogKind, IcebergSinkConfig};
pub use factory::IcebergSinkFactory;
pub use key_index::IndexStats;
pub use partition::PartitionField;
pub use types::ColumnPolicy;
pub use writer::{
    CHECKPOINT_PROPERTY, DeleteMode, UpsertConfig, UpsertWriter, WATERMARK_PROPERTY,
    committed_checkpoint,
};
