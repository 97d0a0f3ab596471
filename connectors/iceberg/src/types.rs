//! Source schema → Iceberg schema, and source Arrow columns → the Arrow
//! columns an Iceberg reader expects for that schema.
//!
//! Mapping (lossless; Iceberg has no unsigned or 8/16-bit ints):
//! | source | Iceberg |
//! |---|---|
//! | BOOL | boolean |
//! | TINYINT/SMALLINT/MEDIUMINT/INT, their UNSIGNED up to MEDIUMINT, YEAR | int |
//! | INT UNSIGNED, BIGINT, BIT(1..63) | long |
//! | BIGINT UNSIGNED, BIT(64) | decimal(20, 0) |
//! | FLOAT / DOUBLE | float / double |
//! | DECIMAL(p ≤ 38, s) | decimal(p, s) (p > 38 is refused: Iceberg's maximum) |
//! | CHAR/VARCHAR/TEXT, ENUM, SET, JSON | string |
//! | BINARY/VARBINARY/BLOB | binary |
//! | DATE | date |
//! | TIME | long (signed microseconds: MySQL TIME exceeds a time of day) |
//! | DATETIME | timestamp (no zone) |
//! | TIMESTAMP | timestamptz |
//!
//! A new table's field ids are 1.. in column order; the primary key becomes the
//! identifier fields. Later columns get fresh ids (`evolve`); data files are
//! written with the table's current schema (`ColumnMap`), matched by name.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StructArray};
use arrow_schema::{DataType, Field, Schema as ArrowSchema, SchemaRef, TimeUnit};
use iceberg::spec::{NestedField, PrimitiveType, Schema, Type};
use tributary_core::{ColumnType, Error, ErrorKind, Result, TableSchema};

fn iceberg_type(t: &ColumnType) -> Result<PrimitiveType> {
    use ColumnType as C;
    Ok(match t {
        C::Bool => PrimitiveType::Boolean,
        C::Int8 | C::Int16 | C::Int24 | C::Int32 | C::UInt8 | C::UInt16 | C::UInt24 | C::Year => {
            PrimitiveType::Int
        }
        C::UInt32 | C::Int64 => PrimitiveType::Long,
        C::Bit { width } if *width < 64 => PrimitiveType::Long,
        C::UInt64 | C::Bit { .. } => PrimitiveType::Decimal {
            precision: 20,
            scale: 0,
        },
        C::Float => PrimitiveType::Float,
        C::Double => PrimitiveType::Double,
        C::Decimal { precision, scale } if *precision <= 38 => PrimitiveType::Decimal {
            precision: u32::from(*precision),
            scale: u32::from(*scale),
        },
        C::Decimal { precision, .. } => {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("DECIMAL({precision}) exceeds Iceberg's maximum precision 38"),
            ));
        }
        C::String { .. } | C::Enum { .. } | C::Set { .. } | C::Json => PrimitiveType::String,
        C::Bytes { .. } => PrimitiveType::Binary,
        C::Date => PrimitiveType::Date,
        C::Time { .. } => PrimitiveType::Long,
        C::DateTime { .. } => PrimitiveType::Timestamp,
        C::Timestamp { .. } => PrimitiveType::Timestamptz,
    })
}

fn arrow_type(t: &PrimitiveType) -> DataType {
    match t {
        PrimitiveType::Boolean => DataType::Boolean,
        PrimitiveType::Int => DataType::Int32,
        PrimitiveType::Long => DataType::Int64,
        PrimitiveType::Float => DataType::Float32,
        PrimitiveType::Double => DataType::Float64,
        PrimitiveType::Decimal { precision, scale } => {
            DataType::Decimal128(*precision as u8, *scale as i8)
        }
        PrimitiveType::Date => DataType::Date32,
        PrimitiveType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
        PrimitiveType::Timestamptz => {
            DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))
        }
        PrimitiveType::Binary => DataType::Binary,
        _ => DataType::Utf8,
    }
}

/// The Iceberg schema of a source table.
pub fn iceberg_schema(source: &TableSchema) -> Result<Schema> {
    let mut fields = Vec::with_capacity(source.columns.len());
    for (i, c) in source.columns.iter().enumerate() {
        let t = Type::Primitive(
            iceberg_type(&c.data_type).map_err(|e| e.with_context("column", &c.name))?,
        );
        let id = i as i32 + 1;
        let f = if c.nullable {
            NestedField::optional(id, &c.name, t)
        } else {
            NestedField::required(id, &c.name, t)
        };
        fields.push(Arc::new(f));
    }
    let key: Vec<i32> = source.primary_key.iter().map(|&i| i as i32 + 1).collect();
    Schema::builder()
        .with_fields(fields)
        .with_identifier_field_ids(key)
        .build()
        .map_err(|e| {
            Error::new(
                ErrorKind::SchemaMismatch,
                format!("Iceberg schema for {}: {e}", source.table),
            )
        })
}

/// What to do with a source column Iceberg cannot follow (a type change
/// that is not a promotion, a type Iceberg lacks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnPolicy {
    /// Stop with a `SchemaMismatch` error naming the column (default).
    #[default]
    Fail,
    /// Stop writing the column: its Iceberg field stays, optional, and new
    /// rows hold null there. Key columns are never skipped.
    Skip,
}

/// Where each source column goes in the data files.
#[derive(Debug, Clone)]
pub struct ColumnMap {
    /// Data-file schema: the table's current Iceberg schema, field ids set.
    pub file_schema: SchemaRef,
    /// Source column index → data-file column index (None: skipped).
    pub source_to_file: Vec<Option<usize>>,
}

impl ColumnMap {
    /// Maps `source` onto the table schema `table` by column name.
    pub fn new(table: &Schema, source: &TableSchema, skipped: &[String]) -> Result<ColumnMap> {
        let fields = table.as_struct().fields();
        let arrow: Result<Vec<Field>> = fields
            .iter()
            .map(|f| {
                let Type::Primitive(p) = f.field_type.as_ref() else {
                    return Err(Error::new(
                        ErrorKind::Unsupported,
                        format!(
                            "nested Iceberg field {} is not written by the upsert writer",
                            f.name
                        ),
                    ));
                };
                let meta = HashMap::from([("PARQUET:field_id".to_string(), f.id.to_string())]);
                Ok(Field::new(&f.name, arrow_type(p), !f.required).with_metadata(meta))
            })
            .collect();
        let source_to_file = source
            .columns
            .iter()
            .map(|c| {
                (!skipped.contains(&c.name))
                    .then(|| fields.iter().position(|f| f.name == c.name))
                    .flatten()
            })
            .collect();
        Ok(ColumnMap {
            file_schema: Arc::new(ArrowSchema::new(arrow?)),
            source_to_file,
        })
    }

    /// Data-file column indexes of the source's primary key.
    /// The data-file columns of the primary key, in data-file order (not
    /// key order): every component that encodes keys of a table — the
    /// writer's index, compaction's sidecars — agrees on it from the table
    /// alone, whose identifier fields have no order.
    pub fn key_columns(&self, source: &TableSchema) -> Result<Vec<usize>> {
        let mut columns = source
            .primary_key
            .iter()
            .map(|&i| {
                self.source_to_file[i].ok_or_else(|| {
                    Error::new(
                        ErrorKind::SchemaMismatch,
                        format!("key column {} has no Iceberg field", source.columns[i].name),
                    )
                })
            })
            .collect::<Result<Vec<usize>>>()?;
        columns.sort_unstable();
        Ok(columns)
    }
}

/// The result of matching a source schema against the table's schema.
#[derive(Debug)]
pub struct Evolution {
    /// The table's next schema, when it must change.
    pub schema: Option<Schema>,
    /// Source columns no longer written (`ColumnPolicy::Skip`).
    pub skipped: Vec<String>,
}

/// Iceberg's allowed type promotions.
fn promotable(from: &PrimitiveType, to: &PrimitiveType) -> bool {
    use PrimitiveType as P;
    match (from, to) {
        (P::Int, P::Long) | (P::Float, P::Double) => true,
        (
            P::Decimal {
                precision: p1,
                scale: s1,
            },
            P::Decimal {
                precision: p2,
                scale: s2,
            },
        ) => s1 == s2 && p2 >= p1,
        _ => false,
    }
}

/// How the table schema `table` must change to take rows of `source`: new
/// columns become optional fields with fresh ids (after `last_column_id`),
/// int→long, float→double and wider decimals are promoted, columns the source
/// dropped stay (optional, null from now on). Anything else follows `policy`.
/// The primary key must stay the table's identifier fields.
pub fn evolve(
    table: &Schema,
    last_column_id: i32,
    source: &TableSchema,
    policy: ColumnPolicy,
) -> Result<Evolution> {
    let key: Vec<&str> = source
        .primary_key
        .iter()
        .map(|&i| source.columns[i].name.as_str())
        .collect();
    let mut ident: Vec<&str> = table
        .identifier_field_ids()
        .filter_map(|id| table.name_by_field_id(id))
        .collect();
    let mut sorted_key = key.clone();
    ident.sort();
    sorted_key.sort();
    if ident != sorted_key {
        return Err(Error::new(
            ErrorKind::SchemaMismatch,
            format!(
                "{}: the primary key is now {key:?} but the Iceberg table's identifier fields are \
                 {ident:?}; an upsert table cannot change its key: write to a new table",
                source.table
            ),
        ));
    }
    let mut fields: Vec<NestedField> = table
        .as_struct()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let (mut next_id, mut changed, mut skipped) = (last_column_id, false, Vec::new());
    for c in &source.columns {
        let is_key = key.contains(&c.name.as_str());
        let wanted = iceberg_type(&c.data_type);
        let Some(f) = fields.iter_mut().find(|f| f.name == c.name) else {
            match wanted {
                Ok(t) => {
                    next_id += 1;
                    fields.push(NestedField::optional(next_id, &c.name, Type::Primitive(t)));
                    changed = true;
                }
                Err(e) => skip_or_fail(policy, source, &c.name, is_key, e.to_string())
                    .map(|()| skipped.push(c.name.clone()))?,
            }
            continue;
        };
        let have = match f.field_type.as_ref() {
            Type::Primitive(p) => p.clone(),
            other => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!("field {} is {other}", f.name),
                ));
            }
        };
        match wanted {
            Ok(t) if t == have => {}
            // Key columns too: keys are encoded canonically (see
            // `KeyEncoder`), so a key before and after the promotion is one.
            Ok(t) if promotable(&have, &t) => {
                *f.field_type = Type::Primitive(t);
                changed = true;
            }
            // The table is already wider: a replay of changes from before
            // a widening (a restart resumes behind the ALTER). Rows are
            // cast up as they are written.
            Ok(t) if promotable(&t, &have) => {}
            other => {
                let why = match other {
                    Ok(t) => {
                        format!("its type changed from {have} to {t}, which Iceberg cannot promote")
                    }
                    Err(e) => e.to_string(),
                };
                skip_or_fail(policy, source, &c.name, is_key, why)?;
                skipped.push(c.name.clone());
                changed |= f.required;
                f.required = false;
            }
        }
        if c.nullable && f.required && !is_key {
            f.required = false;
            changed = true;
        }
    }
    // Fields the source dropped stay for older rows; new rows write null.
    for f in fields.iter_mut().filter(|f| f.required) {
        if !source.columns.iter().any(|c| c.name == f.name) {
            f.required = false;
            changed = true;
        }
    }
    let schema = changed
        .then(|| {
            Schema::builder()
                .with_fields(fields.into_iter().map(Arc::new))
                .with_identifier_field_ids(table.identifier_field_ids())
                .build()
                .map_err(|e| {
                    Error::new(
                        ErrorKind::SchemaMismatch,
                        format!("evolving {}: {e}", source.table),
                    )
                })
        })
        .transpose()?;
    Ok(Evolution { schema, skipped })
}

fn skip_or_fail(
    policy: ColumnPolicy,
    source: &TableSchema,
    column: &str,
    is_key: bool,
    why: String,
) -> Result<()> {
    if policy == ColumnPolicy::Skip && !is_key {
        return Ok(());
    }
    let fix = if is_key {
        "key columns cannot be skipped: write to a new table"
    } else {
        "set column_policy = \"skip\" to stop writing the column, or write to a new table"
    };
    Err(Error::new(
        ErrorKind::SchemaMismatch,
        format!("{}.{column}: {why}; {fix}", source.table),
    ))
}

/// A row image of a change batch as a record batch of the data-file schema:
/// each mapped source column cast to its field's type, unmapped fields null.
/// Rows without the image (nulls of the struct) are kept as nulls; callers
/// select the rows they need.
pub fn to_file_batch(image: &StructArray, map: &ColumnMap) -> Result<RecordBatch> {
    let schema = &map.file_schema;
    let mut columns: Vec<Option<ArrayRef>> = vec![None; schema.fields().len()];
    for (col, target) in image.columns().iter().zip(&map.source_to_file) {
        let Some(j) = *target else { continue };
        let col: ArrayRef = match col.data_type() {
            // TIME arrives as a duration; Iceberg stores its microseconds.
            DataType::Duration(TimeUnit::Microsecond) => Arc::new(
                arrow_array::cast::AsArray::as_primitive::<
                    arrow_array::types::DurationMicrosecondType,
                >(col.as_ref())
                .reinterpret_cast::<arrow_array::types::Int64Type>(),
            ),
            _ => col.clone(),
        };
        columns[j] = Some(arrow_cast::cast(&col, schema.field(j).data_type())?);
    }
    let columns: Vec<ArrayRef> = columns
        .into_iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            c.unwrap_or_else(|| {
                arrow_array::new_null_array(f.data_type(), arrow_array::Array::len(image))
            })
        })
        .collect();
    // The struct's children may be non-nullable while absent rows hold nulls.
    let relaxed: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    let relaxed = Arc::new(ArrowSchema::new(relaxed));
    Ok(RecordBatch::try_new(relaxed, columns)?)
}

#[cfg(test)]
mod tests {
    use tributary_core::{Column, ColumnType, TableId};

    use super::*;

    fn schema(id: ColumnType) -> TableSchema {
        TableSchema::new(
            TableId::new("d", "t"),
            vec![
                Column::new("id", id, false),
                Column::new("v", ColumnType::Int32, true),
            ],
            &["id"],
            1,
        )
        .unwrap()
    }

    /// After a widening, a restart replays changes from before the ALTER
    /// with the narrower type: the wider table takes them as they are.
    #[test]
    fn a_narrower_source_type_fits_a_table_already_widened() {
        let wide = iceberg_schema(&schema(ColumnType::Int64)).unwrap();
        let last = wide.highest_field_id();
        let e = evolve(&wide, last, &schema(ColumnType::Int32), ColumnPolicy::Fail).unwrap();
        assert!(e.schema.is_none() && e.skipped.is_empty());
        // And the widening itself promotes in place.
        let narrow = iceberg_schema(&schema(ColumnType::Int32)).unwrap();
        let e = evolve(
            &narrow,
            last,
            &schema(ColumnType::Int64),
            ColumnPolicy::Fail,
        )
        .unwrap();
        let id = e
            .schema
            .unwrap()
            .field_by_name("id")
            .unwrap()
            .field_type
            .to_string();
        assert_eq!(id, "long");
    }
}
