//! Changelog tables: how a table with no key at all is kept — as an
//! append-only table of its changes instead of an upsert table.
//!
//! Each change of the source table becomes one row (an update two: its
//! before and its after image) holding the change's identity, what it was,
//! where and when, then the source row:
//!
//! | column | type | |
//! |---|---|---|
//! | `_change_seq` | BIGINT | the transaction's row version (grows with the source position) |
//! | `_change_row` | BIGINT | the row's ordinal in its transaction (or snapshot chunk) |
//! | `_change_op` | VARCHAR | `read`, `insert`, `update_before`, `update_after`, `delete`, `truncate` |
//! | `_change_position` | VARCHAR | the source position, as text |
//! | `_change_time` | TIMESTAMP | the source commit time |
//!
//! The source columns follow, all nullable: a `truncate` row (the source
//! emptied the table: a consumer rebuilding it starts over) has no image.
//! The changelog table itself is never emptied.
//!
//! `(_change_seq, _change_row, _change_op)` is the table's key: a replay
//! after a crash recomputes the same identities, so every keyed sink keeps
//! each committed change exactly once (a snapshot row and a transaction
//! at the same position differ by op). Ordering by `_change_seq,
//! _change_row` gives the source's order of changes.

use std::collections::HashMap;
use std::sync::Arc;

use crate::batch::{ChangeBatch, ChangeBatchBuilder, Image};
use crate::error::{Error, ErrorKind, Result};
use crate::event::{Op, SchemaChange};
use crate::schema::{Column, ColumnType, TableId, TableSchema};
use crate::value::Value;

pub const SEQ: &str = "_change_seq";
pub const ROW: &str = "_change_row";
pub const OP: &str = "_change_op";
pub const POSITION: &str = "_change_position";
pub const TIME: &str = "_change_time";

/// The columns a changelog table puts before the source row's.
const LEADING: usize = 5;

/// The changelog table of a keyless `source` table.
pub fn changelog_schema(source: &TableSchema) -> Result<TableSchema> {
    let mut columns = vec![
        Column::new(SEQ, ColumnType::Int64, false),
        Column::new(ROW, ColumnType::Int64, false),
        Column::new(OP, ColumnType::String { max_len: Some(16) }, false),
        Column::new(POSITION, ColumnType::String { max_len: None }, true),
        Column::new(TIME, ColumnType::Timestamp { fsp: 6 }, false),
    ];
    for c in &source.columns {
        if columns[..LEADING].iter().any(|l| l.name == c.name) {
            return Err(Error::new(
                ErrorKind::SchemaMismatch,
                format!(
                    "{} has a column named {:?}, which its changelog table uses for the \
                     change's own data: rename the column, or give the table a key \
                     (key_columns) so it is upserted instead",
                    source.table, c.name
                ),
            ));
        }
        let mut c = c.clone();
        c.nullable = true;
        columns.push(c);
    }
    TableSchema::new(
        source.table.clone(),
        columns,
        &[SEQ, ROW, OP],
        source.version,
    )
}

/// Turns a keyless table's batches and schema changes into its changelog
/// table's. Rows of one transaction are numbered on across batches (a big
/// transaction comes in several), so identities do not depend on how the
/// source split it.
#[derive(Default)]
pub struct ChangelogEncoder {
    tables: HashMap<TableId, TableState>,
}

struct TableState {
    source: Arc<TableSchema>,
    changelog: Arc<TableSchema>,
    /// The last transaction's `_change_seq` and op kind (read or not), and
    /// the next row ordinal in it.
    last: Option<(i64, bool)>,
    next_row: i64,
}

impl ChangelogEncoder {
    /// The changelog schema of `source`, the same `Arc` while it is unchanged.
    pub fn schema(&mut self, source: &Arc<TableSchema>) -> Result<Arc<TableSchema>> {
        if let Some(s) = self.tables.get(&source.table)
            && (Arc::ptr_eq(&s.source, source) || *s.source == **source)
        {
            return Ok(s.changelog.clone());
        }
        let changelog = Arc::new(changelog_schema(source)?);
        let last = self.tables.remove(&source.table);
        self.tables.insert(
            source.table.clone(),
            TableState {
                source: source.clone(),
                changelog: changelog.clone(),
                last: last.as_ref().and_then(|s| s.last),
                next_row: last.map_or(0, |s| s.next_row),
            },
        );
        Ok(changelog)
    }

    /// Whether `change` is of a table kept as a changelog: a keyless one.
    pub fn is_changelog(&self, change: &SchemaChange) -> bool {
        match change.after.as_ref().or(change.before.as_ref()) {
            Some(s) => s.primary_key.is_empty(),
            None => self.tables.contains_key(&change.table),
        }
    }

    /// A schema change of a keyless table, between changelog schemas.
    pub fn schema_change(&mut self, change: &SchemaChange) -> Result<SchemaChange> {
        let map = |s: &Option<TableSchema>, enc: &mut Self| -> Result<Option<TableSchema>> {
            s.as_ref()
                .map(|s| enc.schema(&Arc::new(s.clone())).map(|c| (*c).clone()))
                .transpose()
        };
        let before = map(&change.before, self)?;
        let after = map(&change.after, self)?;
        let mut out = SchemaChange::between(change.kind.clone(), before, after);
        out.ddl = change.ddl.clone();
        out.position = change.position.clone();
        out.commit_ts_micros = change.commit_ts_micros;
        Ok(out)
    }

    /// A TRUNCATE of a keyless table as one `truncate` row (the changelog
    /// keeps its history); `version_base` is the source's at the change.
    pub fn truncate(&mut self, change: &SchemaChange, version_base: u64) -> Result<ChangeBatch> {
        let source = match change.before.as_ref().or(change.after.as_ref()) {
            Some(s) => Arc::new(s.clone()),
            None => match self.tables.get(&change.table) {
                Some(s) => s.source.clone(),
                None => {
                    return Err(Error::new(
                        ErrorKind::Unsupported,
                        format!(
                            "TRUNCATE of keyless {} before any of its rows was seen: its \
                             changelog table's columns are unknown; restart with a snapshot",
                            change.table
                        ),
                    ));
                }
            },
        };
        let schema = self.schema(&source)?;
        let mut out = ChangeBatchBuilder::new(schema);
        out.set_version_base(version_base);
        out.begin_txn(change.position.clone(), change.commit_ts_micros);
        let seq = i64::try_from(out.txns_last_version()).unwrap_or(i64::MAX);
        let state = self.tables.get_mut(&change.table).expect("registered");
        if state.last != Some((seq, false)) {
            state.last = Some((seq, false));
            state.next_row = 0;
        }
        let mut values = vec![
            Value::Int64(seq),
            Value::Int64(state.next_row),
            Value::String("truncate".into()),
            change
                .position
                .as_ref()
                .map_or(Value::Null, |p| Value::String(p.to_string())),
            Value::Timestamp(change.commit_ts_micros),
        ];
        values.resize(LEADING + source.columns.len(), Value::Null);
        state.next_row += 1;
        out.push_row(Op::Insert, None, Some(&values))?;
        out.finish()
    }

    /// `batch` as rows of its table's changelog table.
    pub fn encode(&mut self, batch: &ChangeBatch) -> Result<ChangeBatch> {
        let schema = self.schema(batch.schema())?;
        let state = self
            .tables
            .get_mut(&batch.schema().table)
            .expect("schema() registered the table");
        let mut out = ChangeBatchBuilder::with_capacity(schema, batch.len() + batch.len() / 4);
        let mut txn = None;
        for row in 0..batch.len() {
            let meta = batch.txn_of(row);
            let index = batch.txn_indices().value(row);
            let op = batch.op(row);
            if txn != Some(index) {
                txn = Some(index);
                out.set_version_base(meta.version_base);
                out.begin_txn(meta.position.clone(), meta.commit_ts_micros);
            }
            let seq = i64::try_from(meta.version()).unwrap_or(i64::MAX);
            let read = op == Op::Read;
            if state.last != Some((seq, read)) {
                state.last = Some((seq, read));
                state.next_row = 0;
            }
            let position = meta.position.as_ref().map(|p| p.to_string());
            let images: &[(Image, &str)] = match op {
                Op::Read => &[(Image::After, "read")],
                Op::Insert => &[(Image::After, "insert")],
                Op::Update => &[
                    (Image::Before, "update_before"),
                    (Image::After, "update_after"),
                ],
                Op::Delete => &[(Image::Before, "delete")],
            };
            for &(image, name) in images {
                let source_row = batch.row(image, row).ok_or_else(|| {
                    Error::invalid_data(format!("a {op:?} change without its {image:?} image"))
                })?;
                let mut values = Vec::with_capacity(LEADING + source_row.len());
                values.push(Value::Int64(seq));
                values.push(Value::Int64(state.next_row));
                values.push(Value::String(name.to_string()));
                values.push(position.clone().map_or(Value::Null, Value::String));
                values.push(Value::Timestamp(meta.commit_ts_micros));
                values.extend(source_row);
                state.next_row += 1;
                // Snapshot rows stay reads (never skipped as replays).
                let out_op = if read { Op::Read } else { Op::Insert };
                out.push_row(out_op, None, Some(&values))?;
            }
        }
        out.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::position::{BinlogFilePos, SourcePosition};

    fn source() -> Arc<TableSchema> {
        Arc::new(
            TableSchema::new(
                TableId::new("shop", "log"),
                vec![
                    Column::new("msg", ColumnType::String { max_len: None }, true),
                    Column::new("n", ColumnType::Int32, false),
                ],
                &[],
                1,
            )
            .unwrap(),
        )
    }

    fn at(pos: u64) -> Option<SourcePosition> {
        Some(SourcePosition::FilePos(BinlogFilePos::new("b.000001", pos)))
    }

    #[test]
    fn every_change_becomes_rows_with_a_stable_identity() {
        let s = source();
        let row = |m: &str, n: i32| vec![Value::String(m.into()), Value::Int32(n)];
        let mut b = ChangeBatchBuilder::new(s.clone());
        b.begin_txn(at(100), 7);
        b.push_row(Op::Insert, None, Some(&row("a", 1))).unwrap();
        b.push_row(Op::Update, Some(&row("a", 1)), Some(&row("a", 2)))
            .unwrap();
        let first = b.finish().unwrap();
        // The same transaction goes on in a second batch (a split one).
        b.begin_txn(at(100), 7);
        b.push_row(Op::Delete, Some(&row("a", 2)), None).unwrap();
        b.begin_txn(at(200), 8);
        b.push_row(Op::Insert, None, Some(&row("b", 3))).unwrap();
        let second = b.finish().unwrap();

        let mut enc = ChangelogEncoder::default();
        let out1 = enc.encode(&first).unwrap();
        let out2 = enc.encode(&second).unwrap();
        let rows = |b: &ChangeBatch| -> Vec<(i64, i64, String, i32)> {
            (0..b.len())
                .map(|i| {
                    let r = b.row(Image::After, i).unwrap();
                    match (&r[0], &r[1], &r[2], &r[6]) {
                        (Value::Int64(s), Value::Int64(n), Value::String(o), Value::Int32(v)) => {
                            (*s, *n, o.clone(), *v)
                        }
                        other => panic!("{other:?}"),
                    }
                })
                .collect()
        };
        let v1 = crate::row_version(at(100).as_ref()) as i64;
        let v2 = crate::row_version(at(200).as_ref()) as i64;
        assert_eq!(
            rows(&out1),
            vec![
                (v1, 0, "insert".into(), 1),
                (v1, 1, "update_before".into(), 1),
                (v1, 2, "update_after".into(), 2)
            ]
        );
        assert_eq!(
            rows(&out2),
            vec![(v1, 3, "delete".into(), 2), (v2, 0, "insert".into(), 3)]
        );
        assert!((0..out1.len()).all(|i| out1.op(i) == Op::Insert));
        assert_eq!(out1.schema().primary_key_names(), [SEQ, ROW, OP]);
        assert_eq!(out1.txns()[0].position, at(100));
        // A replay from the start recomputes the same identities.
        let again = ChangelogEncoder::default().encode(&first).unwrap();
        assert_eq!(rows(&again), rows(&out1));
    }

    #[test]
    fn a_column_named_like_a_changelog_column_is_refused_naming_it() {
        let s = TableSchema::new(
            TableId::new("shop", "log"),
            vec![Column::new(OP, ColumnType::Int32, true)],
            &[],
            1,
        )
        .unwrap();
        let err = changelog_schema(&s).unwrap_err().to_string();
        assert!(
            err.contains("\"_change_op\"") && err.contains("key_columns"),
            "{err}"
        );
    }
}
