//! The Kafka relay (issue #17): [`envelope`], change events as the Debezium
//! MySQL connector writes them; [`sink`], the producer writing each table's
//! changes to its topic; [`source`], the consumer reading them back into
//! any sink with its offsets in that sink's checkpoint; [`schemas`], the
//! registry of the exact table schemas both share; [`group`], a worker's
//! membership of the consumer group that shares the topics (scale-out).

mod client;
pub mod envelope;
pub mod group;
pub mod schemas;
pub mod sink;
pub mod source;

pub use envelope::{DecimalMode, EnvelopeConfig, SourceInfo, encode_key, encode_value};
pub use envelope::{DecodedChange, DecodedMessage, decode_message, decode_value, encode_truncate};
pub use sink::{
    KafkaSink, KafkaSinkConfig, KafkaSinkFactory, committed_checkpoint, produced_offsets,
};
pub use source::{KafkaSourceConfig, KafkaSourceFactory};
