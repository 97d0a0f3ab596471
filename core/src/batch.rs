//! `ChangeBatch`: one table's change events in Arrow arrays — the bulk form
//! readers build directly and sinks consume without a heap value per cell.
//!
//! Layout (row `i` is one event):
//! - `ops[i]`: the [`Op`] as `u8`;
//! - `before`/`after`: struct arrays with one child per table column; the
//!   struct's own validity says whether row `i` has that image. An image no
//!   row has is `None` (an insert-only batch carries no `before` arrays);
//! - `txn[i]`: index into `txns`, each the position and commit time of one
//!   source transaction (positions are per transaction, not per row).

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Decimal256Builder,
    DurationMicrosecondBuilder, Float32Builder, Float64Builder, Int8Builder, Int16Builder,
    Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder, UInt8Builder,
    UInt16Builder, UInt32Builder, UInt64Builder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Decimal256Type, DurationMicrosecondType, Float32Type, Float64Type,
    Int8Type, Int16Type, Int32Type, Int64Type, TimestampMicrosecondType, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, StructArray, UInt8Array, UInt32Array};
use arrow_buffer::{BooleanBufferBuilder, NullBuffer, i256};
use arrow_schema::Fields;

use crate::error::{Error, ErrorKind, Result};
use crate::event::{ChangeEvent, Op, Row};
use crate::position::{Checkpoint, SourcePosition};
use crate::schema::{ColumnType, TableSchema};
use crate::value::{Decimal, Value};

/// Position and commit time shared by the rows of one source transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct TxnMeta {
    pub position: Option<SourcePosition>,
    pub commit_ts_micros: i64,
    /// Added to the position's ordinal in row versions: a source raises it
    /// when its positions go backwards (a failover to a server with lower
    /// binlog numbers, `RESET MASTER`, a new binlog basename), so versions
    /// keep growing. Kept in the source's checkpoint.
    pub version_base: u64,
}

impl TxnMeta {
    /// The version of this transaction's rows (see [`KeyedChange::version`]).
    pub fn version(&self) -> u64 {
        self.version_base
            .saturating_add(row_version(self.position.as_ref()))
    }
}

/// One table's change events at one schema version, as Arrow arrays.
#[derive(Debug, Clone)]
pub struct ChangeBatch {
    schema: Arc<TableSchema>,
    ops: UInt8Array,
    txn: UInt32Array,
    txns: Vec<TxnMeta>,
    before: Option<StructArray>,
    after: Option<StructArray>,
}

/// What one row does to a keyed table (see [`ChangeBatch::keyed_changes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyedChange {
    pub row: usize,
    /// The before image's key goes: a delete, or an update that changed
    /// the key.
    pub delete_before: bool,
    /// The after image becomes its key's row.
    pub upsert_after: bool,
    /// Grows with the source position of the row's transaction (the binlog
    /// ordinal; 0 without a position); equal for a replay, so a replayed
    /// write rewrites the same version.
    pub version: u64,
}

/// The version of a change at `position`: see [`KeyedChange::version`].
pub fn row_version(position: Option<&SourcePosition>) -> u64 {
    position
        .and_then(SourcePosition::binlog_ordinal)
        .unwrap_or(0)
}

/// Whether a change at `position` is already in `committed` (at or before
/// its position): a replay a sink skips. Unknown or incomparable
/// positions are not.
pub fn is_committed(position: Option<&SourcePosition>, committed: Option<&Checkpoint>) -> bool {
    let (Some(done), Some(pos)) = (committed.and_then(|c| c.position.as_ref()), position) else {
        return false;
    };
    matches!(
        pos.partial_cmp(done),
        Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)
    )
}

/// Which row image of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Image {
    Before,
    After,
}

impl ChangeBatch {
    pub fn schema(&self) -> &Arc<TableSchema> {
        &self.schema
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn op(&self, row: usize) -> Op {
        Op::from_u8(self.ops.value(row)).expect("builders only write valid ops")
    }

    pub fn ops(&self) -> &UInt8Array {
        &self.ops
    }

    /// The row images, one child array per column; `None` if no row has one.
    pub fn image(&self, image: Image) -> Option<&StructArray> {
        match image {
            Image::Before => self.before.as_ref(),
            Image::After => self.after.as_ref(),
        }
    }

    pub fn has_image(&self, image: Image, row: usize) -> bool {
        self.image(image).is_some_and(|a| a.is_valid(row))
    }

    pub fn txns(&self) -> &[TxnMeta] {
        &self.txns
    }

    pub fn txn_indices(&self) -> &UInt32Array {
        &self.txn
    }

    /// This batch in `schema`, a version of its table whose columns are
    /// the same, each of a type this batch's widens to (a replay of rows
    /// from before `INT → BIGINT`, written into a table already widened).
    pub fn widened_to(&self, schema: Arc<TableSchema>) -> Result<ChangeBatch> {
        let same_shape = schema.table == self.schema.table
            && schema.columns.len() == self.schema.columns.len()
            && schema.primary_key == self.schema.primary_key
            && schema
                .columns
                .iter()
                .zip(&self.schema.columns)
                .all(|(to, from)| to.name == from.name && from.data_type.widens_to(&to.data_type));
        if !same_shape {
            return Err(Error::new(
                ErrorKind::SchemaMismatch,
                format!(
                    "rows of {} v{} cannot be read as v{}: not the same columns, each widened",
                    self.schema.table, self.schema.version, schema.version
                ),
            ));
        }
        let fields = schema.arrow_fields();
        let cast = |image: &Option<StructArray>| -> Result<Option<StructArray>> {
            let Some(image) = image else { return Ok(None) };
            let columns = image
                .columns()
                .iter()
                .zip(fields.iter())
                .map(|(c, f)| arrow_cast::cast(c, f.data_type()))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::invalid_data(format!("widening {}: {e}", schema.table)))?;
            StructArray::try_new(fields.clone(), columns, image.nulls().cloned())
                .map(Some)
                .map_err(|e| Error::invalid_data(format!("widening {}: {e}", schema.table)))
        };
        Ok(ChangeBatch {
            before: cast(&self.before)?,
            after: cast(&self.after)?,
            schema,
            ops: self.ops.clone(),
            txn: self.txn.clone(),
            txns: self.txns.clone(),
        })
    }

    /// Sets every transaction's version base (a snapshot chunk takes the
    /// stream's when it is handed out).
    pub fn set_version_base(&mut self, base: u64) {
        for t in &mut self.txns {
            t.version_base = base;
        }
    }

    pub fn txn_of(&self, row: usize) -> &TxnMeta {
        &self.txns[self.txn.value(row) as usize]
    }

    /// Whether row `row` is a change a sink already holds when it has
    /// committed `committed`: a change event at or before the committed
    /// position (its transaction is in). Snapshot reads are state, not
    /// events: never skipped (a chunk re-read after a restart carries a
    /// newer state at the same or a later position).
    pub fn is_committed_in(&self, row: usize, committed: Option<&Checkpoint>) -> bool {
        if self.op(row) == Op::Read {
            return false;
        }
        is_committed(self.txn_of(row).position.as_ref(), committed)
    }

    /// The upsert rule every keyed sink applies (Iceberg, ClickHouse,
    /// HBase, Kafka): rows already in `committed` are left out
    /// (`is_committed_in`); a delete removes its before image's key; an
    /// insert, read or update writes its after image; an update whose key
    /// changed also removes the old key (`same_key(row)` is asked only for
    /// updates carrying both images). Each change has the row's version.
    pub fn keyed_changes(
        &self,
        committed: Option<&Checkpoint>,
        mut same_key: impl FnMut(usize) -> crate::Result<bool>,
    ) -> crate::Result<Vec<KeyedChange>> {
        let mut out = Vec::with_capacity(self.len());
        for row in 0..self.len() {
            if self.is_committed_in(row, committed) {
                continue;
            }
            let op = self.op(row);
            let (before, after) = (
                self.has_image(Image::Before, row),
                self.has_image(Image::After, row),
            );
            let delete_before = before
                && match op {
                    Op::Delete => true,
                    _ => !after || !same_key(row)?,
                };
            out.push(KeyedChange {
                row,
                delete_before,
                upsert_after: after && op != Op::Delete,
                version: self.txn_of(row).version(),
            });
        }
        Ok(out)
    }

    /// Position of the batch's last transaction, if it has one.
    pub fn last_position(&self) -> Option<&SourcePosition> {
        self.txns.last().and_then(|t| t.position.as_ref())
    }

    /// One row image as values (the convenience path).
    pub fn row(&self, image: Image, row: usize) -> Option<Row> {
        let arr = self.image(image).filter(|a| a.is_valid(row))?;
        let cols = self.schema.columns.iter().zip(arr.columns());
        Some(
            cols.map(|(c, a)| value_at(&c.data_type, a.as_ref(), row))
                .collect(),
        )
    }

    pub fn event(&self, row: usize) -> ChangeEvent {
        let txn = self.txn_of(row);
        ChangeEvent {
            table: self.schema.table.clone(),
            op: self.op(row),
            before: self.row(Image::Before, row),
            after: self.row(Image::After, row),
            position: txn.position.clone(),
            commit_ts_micros: txn.commit_ts_micros,
            schema_version: self.schema.version,
        }
    }

    pub fn to_events(&self) -> Vec<ChangeEvent> {
        (0..self.len()).map(|i| self.event(i)).collect()
    }

    /// Builds a batch from events of `schema`'s table and version; consecutive
    /// events with the same position and commit time share a transaction.
    pub fn from_events(schema: Arc<TableSchema>, events: &[ChangeEvent]) -> Result<ChangeBatch> {
        let mut b = ChangeBatchBuilder::with_capacity(schema, events.len());
        for e in events {
            b.push_event(e)?;
        }
        b.finish()
    }
}

/// Builds a [`ChangeBatch`] row by row. Two ways to fill a row:
/// - values: [`push_row`](Self::push_row) / [`push_event`](Self::push_event),
///   type-checked before anything is appended;
/// - typed, for readers: [`begin_row`](Self::begin_row), then the image's
///   `push_*` calls in column order, then [`end_row`](Self::end_row).
///
/// A failed typed push appends nothing and leaves the row open; such a builder
/// should be dropped (`end_row`/`finish` report the incomplete row).
pub struct ChangeBatchBuilder {
    schema: Arc<TableSchema>,
    ops: Vec<u8>,
    txn: Vec<u32>,
    txns: Vec<TxnMeta>,
    before: RowImageBuilder,
    after: RowImageBuilder,
    open_row: Option<Op>,
    version_base: u64,
}

impl ChangeBatchBuilder {
    pub fn new(schema: Arc<TableSchema>) -> Self {
        Self::with_capacity(schema, 1024)
    }

    pub fn with_capacity(schema: Arc<TableSchema>, rows: usize) -> Self {
        ChangeBatchBuilder {
            before: RowImageBuilder::new(&schema, rows),
            after: RowImageBuilder::new(&schema, rows),
            schema,
            ops: Vec::with_capacity(rows),
            txn: Vec::with_capacity(rows),
            txns: Vec::new(),
            open_row: None,
            version_base: 0,
        }
    }

    pub fn schema(&self) -> &Arc<TableSchema> {
        &self.schema
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The version base of the transactions begun or closed from now on
    /// (see [`TxnMeta::version_base`]).
    pub fn set_version_base(&mut self, base: u64) {
        self.version_base = base;
    }

    /// The row version of the transaction begun last (0 without one).
    pub fn txns_last_version(&self) -> u64 {
        self.txns.last().map_or(0, TxnMeta::version)
    }

    /// Starts a transaction; the rows after it belong to it.
    pub fn begin_txn(&mut self, position: Option<SourcePosition>, commit_ts_micros: i64) {
        self.txns.push(TxnMeta {
            position,
            commit_ts_micros,
            version_base: self.version_base,
        });
    }

    /// Sets the position and commit time of the transaction begun last: a
    /// reader learns a transaction's end position only after its rows.
    pub fn close_txn(&mut self, position: Option<SourcePosition>, commit_ts_micros: i64) {
        if let Some(t) = self.txns.last_mut() {
            *t = TxnMeta {
                position,
                commit_ts_micros,
                version_base: self.version_base,
            };
        }
    }

    /// Opens a row. Push the op's images (before for update/delete, after for
    /// read/insert/update) before [`end_row`](Self::end_row).
    pub fn begin_row(&mut self, op: Op) -> Result<()> {
        if let Some(open) = self.open_row {
            return Err(Error::new(
                ErrorKind::Unexpected,
                format!("a {open:?} row is still open"),
            ));
        }
        if self.txns.is_empty() {
            self.begin_txn(None, 0);
        }
        let (has_before, has_after) = op.images();
        self.before.open(has_before);
        self.after.open(has_after);
        self.open_row = Some(op);
        Ok(())
    }

    pub fn before(&mut self) -> &mut RowImageBuilder {
        &mut self.before
    }

    pub fn after(&mut self) -> &mut RowImageBuilder {
        &mut self.after
    }

    /// Closes the open row; fails if an image it needs is incomplete.
    pub fn end_row(&mut self) -> Result<()> {
        let op = self
            .open_row
            .ok_or_else(|| Error::new(ErrorKind::Unexpected, "end_row without begin_row"))?;
        self.before.close(&self.schema, "before")?;
        self.after.close(&self.schema, "after")?;
        self.ops.push(op as u8);
        self.txn.push(self.txns.len() as u32 - 1);
        self.open_row = None;
        Ok(())
    }

    /// Appends one row from values; nothing is appended if a value does not
    /// fit its column.
    pub fn push_row(
        &mut self,
        op: Op,
        before: Option<&[Value]>,
        after: Option<&[Value]>,
    ) -> Result<()> {
        let (want_before, want_after) = op.images();
        if want_before != before.is_some() || want_after != after.is_some() {
            return Err(Error::invalid_data(format!(
                "a {op:?} event needs before={want_before} after={want_after} images"
            )));
        }
        for row in [before, after].into_iter().flatten() {
            check_row(&self.schema, row)?;
        }
        self.begin_row(op)?;
        for (image, row) in [(&mut self.before, before), (&mut self.after, after)] {
            for v in row.into_iter().flatten() {
                image.push_value(v)?;
            }
        }
        self.end_row()
    }

    /// Appends an event of this builder's table and schema version; a new
    /// transaction starts when its position or commit time differs from the last.
    pub fn push_event(&mut self, e: &ChangeEvent) -> Result<()> {
        if e.table != self.schema.table || e.schema_version != self.schema.version {
            return Err(Error::new(
                ErrorKind::SchemaMismatch,
                format!(
                    "event for {} v{} pushed into a batch of {} v{}",
                    e.table, e.schema_version, self.schema.table, self.schema.version
                ),
            ));
        }
        let same_txn = self
            .txns
            .last()
            .is_some_and(|t| t.position == e.position && t.commit_ts_micros == e.commit_ts_micros);
        if !same_txn {
            self.begin_txn(e.position.clone(), e.commit_ts_micros);
        }
        self.push_row(e.op, e.before.as_deref(), e.after.as_deref())
    }

    /// Takes the rows built so far as a batch; the builder starts empty again.
    pub fn finish(&mut self) -> Result<ChangeBatch> {
        if self.open_row.is_some() {
            return Err(Error::new(
                ErrorKind::Unexpected,
                "finish with a row still open",
            ));
        }
        let fields = self.schema.arrow_fields();
        let n = self.ops.len();
        let batch = ChangeBatch {
            schema: self.schema.clone(),
            ops: UInt8Array::from(std::mem::take(&mut self.ops)),
            txn: UInt32Array::from(std::mem::take(&mut self.txn)),
            txns: std::mem::take(&mut self.txns),
            before: self.before.finish(&fields, n)?,
            after: self.after.finish(&fields, n)?,
        };
        Ok(batch)
    }
}

fn check_row(schema: &TableSchema, row: &[Value]) -> Result<()> {
    if row.len() != schema.columns.len() {
        return Err(Error::new(
            ErrorKind::SchemaMismatch,
            format!(
                "row has {} values, {} has {} columns",
                row.len(),
                schema.table,
                schema.columns.len()
            ),
        ));
    }
    for (c, v) in schema.columns.iter().zip(row) {
        let fits = match v {
            Value::Null => c.nullable,
            v => value_fits(&c.data_type, v),
        };
        if !fits {
            return Err(Error::invalid_data(format!(
                "value {v:?} does not fit column {} ({:?}{})",
                c.name,
                c.data_type,
                if c.nullable { "" } else { ", NOT NULL" }
            ))
            .with_context("table", &schema.table));
        }
    }
    Ok(())
}

/// Whether a non-null value has the variant (and range) its column type takes.
fn value_fits(t: &ColumnType, v: &Value) -> bool {
    use ColumnType as C;
    match (t, v) {
        (C::Bool, Value::Bool(_))
        | (C::Int8, Value::Int8(_))
        | (C::Int16, Value::Int16(_))
        | (C::Int32, Value::Int32(_))
        | (C::Int64, Value::Int64(_))
        | (C::UInt8, Value::UInt8(_))
        | (C::UInt16, Value::UInt16(_))
        | (C::UInt32, Value::UInt32(_))
        | (C::UInt64, Value::UInt64(_))
        | (C::Float, Value::Float(_))
        | (C::Double, Value::Double(_))
        | (C::String { .. }, Value::String(_))
        | (C::Bytes { .. }, Value::Bytes(_))
        | (C::Date, Value::Date(_))
        | (C::Time { .. }, Value::Time(_))
        | (C::DateTime { .. }, Value::DateTime(_))
        | (C::Timestamp { .. }, Value::Timestamp(_))
        | (C::Year, Value::Year(_))
        | (C::Enum { .. }, Value::Enum(_))
        | (C::Set { .. }, Value::Set(_))
        | (C::Json, Value::Json(_)) => true,
        (C::Int24, Value::Int32(x)) => (-(1 << 23)..(1 << 23)).contains(x),
        (C::UInt24, Value::UInt32(x)) => *x < (1 << 24),
        (C::Bit { width }, Value::Bit(x)) => *width == 64 || *x >> width == 0,
        (C::Decimal { precision, scale }, Value::Decimal(d)) => {
            d.scale() == *scale && d.digits() <= u32::from(*precision)
        }
        _ => false,
    }
}

/// Appends `v` if the builder is of `variant`; says whether it did.
macro_rules! put {
    ($builder:expr, $variant:ident, $v:expr) => {
        match $builder {
            ColumnBuilder::$variant(b) => {
                b.append_value($v);
                true
            }
            _ => false,
        }
    };
}

/// Builds one row image (before or after) column by column.
pub struct RowImageBuilder {
    columns: Vec<ColumnBuilder>,
    nullable: Vec<bool>,
    present: BooleanBufferBuilder,
    /// Absent rows not yet appended to the column builders: an image no row
    /// has costs nothing, and runs of absent rows are appended in one call.
    pending_absent: usize,
    any_present: bool,
    /// Next column of the open row; `None` when this image is not being filled.
    cursor: Option<usize>,
}

impl RowImageBuilder {
    fn new(schema: &TableSchema, rows: usize) -> Self {
        RowImageBuilder {
            columns: schema
                .columns
                .iter()
                .map(|c| ColumnBuilder::new(&c.data_type, rows))
                .collect(),
            nullable: schema.columns.iter().map(|c| c.nullable).collect(),
            present: BooleanBufferBuilder::new(rows),
            pending_absent: 0,
            any_present: false,
            cursor: None,
        }
    }

    fn open(&mut self, present: bool) {
        if present {
            self.flush_absent();
            self.cursor = Some(0);
        } else {
            self.cursor = None;
        }
    }

    fn close(&mut self, schema: &TableSchema, which: &str) -> Result<()> {
        match self.cursor.take() {
            Some(n) if n == self.columns.len() => {
                self.present.append(true);
                self.any_present = true;
            }
            Some(n) => {
                self.cursor = Some(n);
                return Err(Error::invalid_data(format!(
                    "{which} image has {n} of {} columns",
                    self.columns.len()
                ))
                .with_context("table", &schema.table));
            }
            None => self.pending_absent += 1,
        }
        Ok(())
    }

    fn flush_absent(&mut self) {
        if self.pending_absent > 0 {
            for c in &mut self.columns {
                c.append_nulls(self.pending_absent);
            }
            self.present.append_n(self.pending_absent, false);
            self.pending_absent = 0;
        }
    }

    fn finish(&mut self, fields: &Fields, rows: usize) -> Result<Option<StructArray>> {
        let any = std::mem::take(&mut self.any_present);
        if !any {
            self.pending_absent = 0;
            for c in &mut self.columns {
                c.finish(); // discard
            }
            self.present = BooleanBufferBuilder::new(0);
            return Ok(None);
        }
        self.flush_absent();
        let arrays: Vec<ArrayRef> = self.columns.iter_mut().map(|c| c.finish()).collect();
        let validity = NullBuffer::new(self.present.finish());
        debug_assert_eq!(validity.len(), rows);
        let nulls = (validity.null_count() > 0).then_some(validity);
        Ok(Some(StructArray::try_new(fields.clone(), arrays, nulls)?))
    }

    /// Next column of the open row, or an error if the row is complete/closed.
    fn next_column(&mut self) -> Result<(usize, &mut ColumnBuilder)> {
        let i = self.cursor.ok_or_else(|| {
            Error::new(
                ErrorKind::Unexpected,
                "push into an image the open row does not have",
            )
        })?;
        let col = self
            .columns
            .get_mut(i)
            .ok_or_else(|| Error::invalid_data(format!("row image already has all {i} columns")))?;
        Ok((i, col))
    }

    fn advance(&mut self) {
        if let Some(i) = self.cursor.as_mut() {
            *i += 1;
        }
    }

    fn typed<T>(
        &mut self,
        what: &str,
        v: T,
        f: impl FnOnce(&mut ColumnBuilder, T) -> bool,
    ) -> Result<()> {
        let (i, col) = self.next_column()?;
        if f(col, v) {
            self.advance();
            Ok(())
        } else {
            Err(Error::invalid_data(format!(
                "column {i} ({}) does not take {what}",
                col.kind_name()
            )))
        }
    }

    pub fn push_null(&mut self) -> Result<()> {
        let i = self.cursor.unwrap_or(0);
        if self.nullable.get(i) == Some(&false) {
            return Err(Error::invalid_data(format!("column {i} is NOT NULL")));
        }
        self.next_column()?.1.append_nulls(1);
        self.advance();
        Ok(())
    }

    /// Any signed or unsigned integer column, range-checked.
    pub fn push_int(&mut self, v: i64) -> Result<()> {
        self.typed("this integer", v, ColumnBuilder::append_int)
    }

    /// Any integer, YEAR or BIT column, range-checked.
    pub fn push_uint(&mut self, v: u64) -> Result<()> {
        self.typed("this unsigned integer", v, ColumnBuilder::append_uint)
    }

    pub fn push_bool(&mut self, v: bool) -> Result<()> {
        self.typed("a bool", v, |c, v| put!(c, Bool, v))
    }

    /// FLOAT (narrowed) or DOUBLE.
    pub fn push_f64(&mut self, v: f64) -> Result<()> {
        self.typed("a float", v, |c, v| match c {
            ColumnBuilder::Float32(b) => {
                b.append_value(v as f32);
                true
            }
            ColumnBuilder::Float64(b) => {
                b.append_value(v);
                true
            }
            _ => false,
        })
    }

    /// DECIMAL by its unscaled value at the column's own scale.
    pub fn push_decimal_unscaled(&mut self, v: i128) -> Result<()> {
        self.typed("a decimal", v, |c, v| match c {
            ColumnBuilder::Decimal128(b, ..) => {
                b.append_value(v);
                true
            }
            ColumnBuilder::Decimal256(b, ..) => {
                b.append_value(i256::from_i128(v));
                true
            }
            _ => false,
        })
    }

    /// DECIMAL of any size; rescaled exactly to the column's scale.
    pub fn push_decimal(&mut self, v: &Decimal) -> Result<()> {
        self.typed("this decimal", v, ColumnBuilder::append_decimal)
    }

    /// STRING, ENUM, SET or JSON text.
    pub fn push_str(&mut self, v: &str) -> Result<()> {
        self.typed("a string", v, |c, v| put!(c, Utf8, v))
    }

    pub fn push_bytes(&mut self, v: &[u8]) -> Result<()> {
        self.typed("bytes", v, |c, v| put!(c, Binary, v))
    }

    /// DATE as days since 1970-01-01.
    pub fn push_date(&mut self, days: i32) -> Result<()> {
        self.typed("a date", days, |c, v| put!(c, Date32, v))
    }

    /// TIME as signed microseconds.
    pub fn push_time(&mut self, micros: i64) -> Result<()> {
        self.typed("a time", micros, |c, v| put!(c, Duration, v))
    }

    /// DATETIME (wall clock) or TIMESTAMP (UTC) as epoch microseconds.
    pub fn push_timestamp_micros(&mut self, micros: i64) -> Result<()> {
        self.typed("a datetime", micros, |c, v| put!(c, Timestamp, v))
    }

    /// Any value whose variant the column takes (see the module docs).
    pub fn push_value(&mut self, v: &Value) -> Result<()> {
        match v {
            Value::Null => self.push_null(),
            Value::Bool(x) => self.push_bool(*x),
            Value::Int8(x) => self.push_int((*x).into()),
            Value::Int16(x) => self.push_int((*x).into()),
            Value::Int32(x) => self.push_int((*x).into()),
            Value::Int64(x) => self.push_int(*x),
            Value::UInt8(x) => self.push_uint((*x).into()),
            Value::UInt16(x) | Value::Year(x) => self.push_uint((*x).into()),
            Value::UInt32(x) => self.push_uint((*x).into()),
            Value::UInt64(x) | Value::Bit(x) => self.push_uint(*x),
            Value::Float(x) => self.push_f64((*x).into()),
            Value::Double(x) => self.push_f64(*x),
            Value::Decimal(d) => self.push_decimal(d),
            Value::String(s) | Value::Enum(s) | Value::Set(s) | Value::Json(s) => self.push_str(s),
            Value::Bytes(b) => self.push_bytes(b),
            Value::Date(d) => self.push_date(*d),
            Value::Time(t) => self.push_time(*t),
            Value::DateTime(t) | Value::Timestamp(t) => self.push_timestamp_micros(*t),
        }
    }
}

/// One column's Arrow builder.
enum ColumnBuilder {
    Bool(BooleanBuilder),
    Int8(Int8Builder),
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    UInt8(UInt8Builder),
    UInt16(UInt16Builder),
    UInt32(UInt32Builder),
    UInt64(UInt64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    /// With the column's (precision, scale).
    Decimal128(Decimal128Builder, u8, u8),
    Decimal256(Decimal256Builder, u8, u8),
    Utf8(StringBuilder),
    Binary(BinaryBuilder),
    Date32(Date32Builder),
    Duration(DurationMicrosecondBuilder),
    Timestamp(TimestampMicrosecondBuilder),
}

macro_rules! each_builder {
    ($self:expr, $b:ident => $body:expr) => {
        match $self {
            ColumnBuilder::Bool($b) => $body,
            ColumnBuilder::Int8($b) => $body,
            ColumnBuilder::Int16($b) => $body,
            ColumnBuilder::Int32($b) => $body,
            ColumnBuilder::Int64($b) => $body,
            ColumnBuilder::UInt8($b) => $body,
            ColumnBuilder::UInt16($b) => $body,
            ColumnBuilder::UInt32($b) => $body,
            ColumnBuilder::UInt64($b) => $body,
            ColumnBuilder::Float32($b) => $body,
            ColumnBuilder::Float64($b) => $body,
            ColumnBuilder::Decimal128($b, ..) => $body,
            ColumnBuilder::Decimal256($b, ..) => $body,
            ColumnBuilder::Utf8($b) => $body,
            ColumnBuilder::Binary($b) => $body,
            ColumnBuilder::Date32($b) => $body,
            ColumnBuilder::Duration($b) => $body,
            ColumnBuilder::Timestamp($b) => $body,
        }
    };
}

impl ColumnBuilder {
    fn new(t: &ColumnType, rows: usize) -> Self {
        use ColumnType as C;
        match t {
            C::Bool => Self::Bool(BooleanBuilder::with_capacity(rows)),
            C::Int8 => Self::Int8(Int8Builder::with_capacity(rows)),
            C::Int16 => Self::Int16(Int16Builder::with_capacity(rows)),
            C::Int24 | C::Int32 => Self::Int32(Int32Builder::with_capacity(rows)),
            C::Int64 => Self::Int64(Int64Builder::with_capacity(rows)),
            C::UInt8 => Self::UInt8(UInt8Builder::with_capacity(rows)),
            C::UInt16 | C::Year => Self::UInt16(UInt16Builder::with_capacity(rows)),
            C::UInt24 | C::UInt32 => Self::UInt32(UInt32Builder::with_capacity(rows)),
            C::UInt64 | C::Bit { .. } => Self::UInt64(UInt64Builder::with_capacity(rows)),
            C::Float => Self::Float32(Float32Builder::with_capacity(rows)),
            C::Double => Self::Float64(Float64Builder::with_capacity(rows)),
            C::Decimal { precision, scale } if *precision <= 38 => Self::Decimal128(
                Decimal128Builder::with_capacity(rows)
                    .with_precision_and_scale(*precision, *scale as i8)
                    .expect("validated by TableSchema::new"),
                *precision,
                *scale,
            ),
            C::Decimal { precision, scale } => Self::Decimal256(
                Decimal256Builder::with_capacity(rows)
                    .with_precision_and_scale(*precision, *scale as i8)
                    .expect("validated by TableSchema::new"),
                *precision,
                *scale,
            ),
            C::String { .. } | C::Enum { .. } | C::Set { .. } | C::Json => {
                Self::Utf8(StringBuilder::with_capacity(rows, rows * 16))
            }
            C::Bytes { .. } => Self::Binary(BinaryBuilder::with_capacity(rows, rows * 16)),
            C::Date => Self::Date32(Date32Builder::with_capacity(rows)),
            C::Time { .. } => Self::Duration(DurationMicrosecondBuilder::with_capacity(rows)),
            C::DateTime { .. } => Self::Timestamp(TimestampMicrosecondBuilder::with_capacity(rows)),
            C::Timestamp { .. } => Self::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            ),
        }
    }

    fn kind_name(&self) -> &'static str {
        match self {
            Self::Bool(_) => "bool",
            Self::Int8(_) | Self::Int16(_) | Self::Int32(_) | Self::Int64(_) => "signed integer",
            Self::UInt8(_) | Self::UInt16(_) | Self::UInt32(_) | Self::UInt64(_) => {
                "unsigned integer"
            }
            Self::Float32(_) | Self::Float64(_) => "float",
            Self::Decimal128(..) | Self::Decimal256(..) => "decimal",
            Self::Utf8(_) => "string",
            Self::Binary(_) => "bytes",
            Self::Date32(_) => "date",
            Self::Duration(_) => "time",
            Self::Timestamp(_) => "datetime",
        }
    }

    fn append_nulls(&mut self, n: usize) {
        each_builder!(self, b => b.append_nulls(n))
    }

    fn finish(&mut self) -> ArrayRef {
        each_builder!(self, b => Arc::new(b.finish()) as ArrayRef)
    }

    fn append_int(&mut self, v: i64) -> bool {
        fn put<T: TryFrom<i64>>(v: i64, f: impl FnOnce(T)) -> bool {
            T::try_from(v).map(f).is_ok()
        }
        match self {
            Self::Int8(b) => put(v, |x| b.append_value(x)),
            Self::Int16(b) => put(v, |x| b.append_value(x)),
            Self::Int32(b) => put(v, |x| b.append_value(x)),
            Self::Int64(b) => put(v, |x| b.append_value(x)),
            Self::UInt8(b) => put(v, |x| b.append_value(x)),
            Self::UInt16(b) => put(v, |x| b.append_value(x)),
            Self::UInt32(b) => put(v, |x| b.append_value(x)),
            Self::UInt64(b) => put(v, |x| b.append_value(x)),
            _ => false,
        }
    }

    fn append_uint(&mut self, v: u64) -> bool {
        match i64::try_from(v) {
            Ok(x) => self.append_int(x),
            Err(_) => put!(self, UInt64, v),
        }
    }

    fn append_decimal(&mut self, d: &Decimal) -> bool {
        let fit = |d: &Decimal, precision: u8, scale: u8| {
            d.rescale(scale)
                .filter(|d| d.digits() <= u32::from(precision))
        };
        match self {
            Self::Decimal128(b, p, s) => match fit(d, *p, *s).and_then(|d| d.unscaled_i128()) {
                Some(v) => {
                    b.append_value(v);
                    true
                }
                None => false,
            },
            Self::Decimal256(b, p, s) => match fit(d, *p, *s) {
                Some(d) => {
                    b.append_value(d.unscaled());
                    true
                }
                None => false,
            },
            _ => false,
        }
    }
}

/// Reads one cell back as a [`Value`] of the variant its column type takes.
pub fn value_at(t: &ColumnType, array: &dyn Array, i: usize) -> Value {
    use ColumnType as C;
    if array.is_null(i) {
        return Value::Null;
    }
    let a = array;
    match t {
        C::Bool => Value::Bool(a.as_boolean().value(i)),
        C::Int8 => Value::Int8(a.as_primitive::<Int8Type>().value(i)),
        C::Int16 => Value::Int16(a.as_primitive::<Int16Type>().value(i)),
        C::Int24 | C::Int32 => Value::Int32(a.as_primitive::<Int32Type>().value(i)),
        C::Int64 => Value::Int64(a.as_primitive::<Int64Type>().value(i)),
        C::UInt8 => Value::UInt8(a.as_primitive::<UInt8Type>().value(i)),
        C::UInt16 => Value::UInt16(a.as_primitive::<UInt16Type>().value(i)),
        C::Year => Value::Year(a.as_primitive::<UInt16Type>().value(i)),
        C::UInt24 | C::UInt32 => Value::UInt32(a.as_primitive::<UInt32Type>().value(i)),
        C::UInt64 => Value::UInt64(a.as_primitive::<UInt64Type>().value(i)),
        C::Bit { .. } => Value::Bit(a.as_primitive::<UInt64Type>().value(i)),
        C::Float => Value::Float(a.as_primitive::<Float32Type>().value(i)),
        C::Double => Value::Double(a.as_primitive::<Float64Type>().value(i)),
        C::Decimal { precision, scale } if *precision <= 38 => Value::Decimal(Decimal::from_i128(
            a.as_primitive::<Decimal128Type>().value(i),
            *scale,
        )),
        C::Decimal { scale, .. } => Value::Decimal(Decimal::new(
            a.as_primitive::<Decimal256Type>().value(i),
            *scale,
        )),
        C::String { .. } => Value::String(a.as_string::<i32>().value(i).to_string()),
        C::Enum { .. } => Value::Enum(a.as_string::<i32>().value(i).to_string()),
        C::Set { .. } => Value::Set(a.as_string::<i32>().value(i).to_string()),
        C::Json => Value::Json(a.as_string::<i32>().value(i).to_string()),
        C::Bytes { .. } => Value::Bytes(a.as_binary::<i32>().value(i).to_vec()),
        C::Date => Value::Date(a.as_primitive::<Date32Type>().value(i)),
        C::Time { .. } => Value::Time(a.as_primitive::<DurationMicrosecondType>().value(i)),
        C::DateTime { .. } => {
            Value::DateTime(a.as_primitive::<TimestampMicrosecondType>().value(i))
        }
        C::Timestamp { .. } => {
            Value::Timestamp(a.as_primitive::<TimestampMicrosecondType>().value(i))
        }
    }
}

#[cfg(test)]
mod keyed_change_tests {
    use super::*;
    use crate::position::BinlogFilePos;
    use crate::schema::{Column, TableId};

    fn schema() -> Arc<TableSchema> {
        Arc::new(
            TableSchema::new(
                TableId::new("d", "t"),
                vec![
                    Column::new("id", ColumnType::Int32, false),
                    Column::new("v", ColumnType::Int32, true),
                ],
                &["id"],
                1,
            )
            .unwrap(),
        )
    }

    fn event(
        op: Op,
        before: Option<(i32, i32)>,
        after: Option<(i32, i32)>,
        pos: u64,
    ) -> ChangeEvent {
        let row = |(k, v): (i32, i32)| vec![Value::Int32(k), Value::Int32(v)];
        ChangeEvent {
            table: TableId::new("d", "t"),
            op,
            before: before.map(row),
            after: after.map(row),
            position: Some(SourcePosition::FilePos(BinlogFilePos::new("b.000002", pos))),
            commit_ts_micros: 0,
            schema_version: 1,
        }
    }

    #[test]
    fn the_upsert_rule_deletes_old_keys_upserts_new_rows_and_skips_committed_ones() {
        let events = [
            event(Op::Insert, None, Some((1, 10)), 100),
            event(Op::Update, Some((1, 10)), Some((1, 11)), 200),
            event(Op::Update, Some((1, 11)), Some((2, 11)), 300),
            event(Op::Delete, Some((2, 11)), None, 400),
            event(Op::Read, None, Some((3, 30)), 100),
        ];
        let batch = ChangeBatch::from_events(schema(), &events).unwrap();
        let key = |image, row| batch.row(image, row).map(|r| r[0].clone());
        let same = |row| Ok(key(Image::Before, row) == key(Image::After, row));
        let changes = batch.keyed_changes(None, same).unwrap();
        let rule: Vec<(usize, bool, bool)> = changes
            .iter()
            .map(|c| (c.row, c.delete_before, c.upsert_after))
            .collect();
        assert_eq!(
            rule,
            [
                (0, false, true),
                (1, false, true), // same key: an upsert only
                (2, true, true),  // key change: the old key goes
                (3, true, false),
                (4, false, true),
            ]
        );
        assert!(
            changes[0].version < changes[1].version,
            "versions grow with the binlog"
        );
        assert_eq!(changes[0].version, row_version(events[0].position.as_ref()));

        // Committed at position 200: events up to it are skipped, the
        // snapshot read (state, not an event) is not.
        let committed = Checkpoint {
            position: events[1].position.clone(),
            ..Checkpoint::default()
        };
        let left: Vec<usize> = batch
            .keyed_changes(Some(&committed), same)
            .unwrap()
            .iter()
            .map(|c| c.row)
            .collect();
        assert_eq!(left, [2, 3, 4]);
    }
}
