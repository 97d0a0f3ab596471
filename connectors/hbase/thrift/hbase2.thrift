// The part of HBase's Thrift2 gateway interface (service THBaseService) that
// the Tributary HBase sink calls. Field ids, types and exception ids follow
// HBase's own IDL, which defines the wire format; fields and calls the sink
// does not use are left out (Thrift readers skip fields they do not know).
//
// Regenerate src/hbase2.rs after editing (Debian package thrift-compiler 0.17):
//   thrift --gen rs -out connectors/hbase/src connectors/hbase/thrift/hbase2.thrift

struct TColumn {
  1: required binary family,
  2: optional binary qualifier,
  3: optional i64 timestamp
}

struct TColumnValue {
  1: required binary family,
  2: required binary qualifier,
  3: required binary value,
  4: optional i64 timestamp
}

struct TResult {
  1: optional binary row,
  2: required list<TColumnValue> columnValues
}

enum TDeleteType {
  DELETE_COLUMN = 0,
  DELETE_COLUMNS = 1,
  DELETE_FAMILY = 2,
  DELETE_FAMILY_VERSION = 3
}

struct TGet {
  1: required binary row,
  2: optional list<TColumn> columns
}

struct TPut {
  1: required binary row,
  2: required list<TColumnValue> columnValues,
  3: optional i64 timestamp
}

struct TDelete {
  1: required binary row,
  2: optional list<TColumn> columns,
  3: optional i64 timestamp,
  4: optional TDeleteType deleteType = 1
}

exception TIOError {
  1: optional string message
}

struct TTableName {
  1: optional binary ns,
  2: required binary qualifier
}

service THBaseService {
  bool exists(1: required binary table, 2: required TGet tget) throws (1: TIOError io)
  TResult get(1: required binary table, 2: required TGet tget) throws (1: TIOError io)
  void putMultiple(1: required binary table, 2: required list<TPut> tputs) throws (1: TIOError io)
  list<TDelete> deleteMultiple(1: required binary table, 2: required list<TDelete> tdeletes) throws (1: TIOError io)
  bool tableExists(1: required TTableName tableName) throws (1: TIOError io)
}
