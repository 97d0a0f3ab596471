//! HBase sink for Tributary, through the HBase Thrift2 gateway.
//!
//! **Not verified against a real HBase**: no HBase server can run where this
//! project is tested. The tests run against a minimal Thrift2 server written
//! for them (`tests/support`), which implements only the four calls used
//! here with HBase's timestamp/delete-marker semantics. The wire format
//! follows HBase's own IDL (`thrift/hbase2.thrift` lists the subset).

#[allow(clippy::all, unused)]
#[rustfmt::skip]
pub mod hbase2;

pub mod encoding;
mod gateway;
pub mod sink;

pub use encoding::{RowKeyEncoding, ValueEncoding};
pub use sink::{HBaseSink, HBaseSinkConfig, HBaseSinkFactory, committed_checkpoint};
