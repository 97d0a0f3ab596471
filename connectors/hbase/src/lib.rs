//! HBase sink for Tributary, through the HBase Thrift2 gateway.
//!
//! Tested against a real HBase 2.6.1 (standalone) through its own Thrift2
//! gateway (`dev/services up hbase`), read back with HBase's Java client.
//! The wire format follows HBase's own IDL (`thrift/hbase2.thrift` lists the
//! subset the sink calls).

#[allow(clippy::all, unused)]
#[rustfmt::skip]
pub mod hbase2;

pub mod encoding;
mod gateway;
pub mod sink;

pub use encoding::{RowKeyEncoding, ValueEncoding};
pub use sink::{HBaseSink, HBaseSinkConfig, HBaseSinkFactory, committed_checkpoint};
