//! Row-level change events and schema-change events.

use serde::{Deserialize, Serialize};

use crate::position::SourcePosition;
use crate::schema::{ColumnChange, TableId, TableSchema};
use crate::value::Value;

/// One row image: values in the table schema's column order.
pub type Row = Vec<Value>;

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Op {
    /// A row read by a snapshot (an insert of state, not of an event).
    Read = 0,
    Insert = 1,
    Update = 2,
    Delete = 3,
}

impl Op {
    pub fn from_u8(v: u8) -> Option<Op> {
        Some(match v {
            0 => Op::Read,
            1 => Op::Insert,
            2 => Op::Update,
            3 => Op::Delete,
            _ => return None,
        })
    }

    /// Which row images this op carries: (before, after).
    pub fn images(self) -> (bool, bool) {
        match self {
            Op::Read | Op::Insert => (false, true),
            Op::Update => (true, true),
            Op::Delete => (true, false),
        }
    }
}

/// One row change, convenient for tests and small paths; bulk paths use
/// [`crate::ChangeBatch`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent {
    pub table: TableId,
    pub op: Op,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Row>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Row>,
    /// Position of the end of the event's transaction (`None` for reads by a
    /// snapshot that runs without a binlog).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<SourcePosition>,
    /// Source commit time, microseconds since the Unix epoch (UTC).
    pub commit_ts_micros: i64,
    /// Version of the table schema the rows are decoded with.
    pub schema_version: u64,
}

impl ChangeEvent {
    /// The row image that identifies the row now: `after`, or `before` for deletes.
    pub fn key_image(&self) -> Option<&Row> {
        self.after.as_ref().or(self.before.as_ref())
    }
}

/// What kind of DDL a [`SchemaChange`] reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SchemaChangeKind {
    Create,
    Alter,
    Drop,
    Truncate,
    /// The table was renamed from `from` to the change's `table`.
    Rename {
        from: TableId,
    },
}

/// A table's schema changed at `position`. Rows after it use `after`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaChange {
    pub table: TableId,
    pub kind: SchemaChangeKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<TableSchema>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<TableSchema>,
    /// Column-level differences (empty for create/drop/truncate).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<ColumnChange>,
    /// The DDL statement as the source logged it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ddl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<SourcePosition>,
    pub commit_ts_micros: i64,
}

impl SchemaChange {
    /// The schema a sink follows for this change: the new schema of a
    /// create or an alter. Dropping, truncating or renaming the source table
    /// is refused (`Unsupported`, naming `target`): no sink can follow those
    /// silently, a person decides.
    pub fn followed_schema(&self, target: &str) -> crate::Result<&TableSchema> {
        match (&self.kind, &self.after) {
            (SchemaChangeKind::Create | SchemaChangeKind::Alter, Some(after)) => Ok(after),
            (kind, _) => Err(crate::Error::new(
                crate::ErrorKind::Unsupported,
                format!(
                    "{kind:?} of {} cannot be applied to {target}: stop the pipeline, handle \
                     the table by hand (or re-snapshot into a new table), then resume",
                    self.table
                ),
            )),
        }
    }

    /// A change between two schema versions, with the column diff filled in.
    pub fn between(
        kind: SchemaChangeKind,
        before: Option<TableSchema>,
        after: Option<TableSchema>,
    ) -> Self {
        let table = after
            .as_ref()
            .or(before.as_ref())
            .map(|s| s.table.clone())
            .expect("a schema change needs a before or an after schema");
        let columns = match (&before, &after) {
            (Some(b), Some(a)) => b.diff(a),
            _ => Vec::new(),
        };
        SchemaChange {
            table,
            kind,
            before,
            after,
            columns,
            ddl: None,
            position: None,
            commit_ts_micros: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Column, ColumnType};

    #[test]
    fn sinks_follow_creates_and_alters_and_refuse_drops_truncates_and_renames() {
        let schema = |v| {
            let cols = vec![Column::new("id", ColumnType::Int32, false)];
            TableSchema::new(TableId::new("d", "t"), cols, &["id"], v).unwrap()
        };
        let change =
            |kind, after: Option<TableSchema>| SchemaChange::between(kind, Some(schema(1)), after);
        for kind in [SchemaChangeKind::Create, SchemaChangeKind::Alter] {
            let c = change(kind, Some(schema(2)));
            assert_eq!(c.followed_schema("T").unwrap().version, 2);
        }
        let renamed = SchemaChangeKind::Rename {
            from: TableId::new("d", "old"),
        };
        for (kind, after) in [
            (SchemaChangeKind::Drop, None),
            (SchemaChangeKind::Truncate, None),
            (renamed, Some(schema(2))),
        ] {
            let e = change(kind, after)
                .followed_schema("the sink's table")
                .unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Unsupported);
            assert!(e.to_string().contains("the sink's table"), "{e}");
        }
    }
}
