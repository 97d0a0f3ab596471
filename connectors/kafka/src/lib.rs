//! The Kafka relay (issue #17). So far: [`envelope`], change events as
//! the Debezium MySQL connector writes them — the message key (the primary
//! key as JSON) and value (`before`, `after`, `source`, `op`, `ts_ms`), with
//! or without the Kafka Connect JSON schemas. The producer (a sink) and the
//! consumer (a source) build on it.

pub mod envelope;
pub mod sink;

pub use envelope::{DecimalMode, EnvelopeConfig, SourceInfo, encode_key, encode_value};
pub use sink::{KafkaSink, KafkaSinkConfig, KafkaSinkFactory, committed_checkpoint};
