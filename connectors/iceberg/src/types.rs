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
//! Field ids are 1.. in column order; the primary key becomes the identifier fields.

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

/// The Arrow schema of data files: Iceberg-mapped types with field ids.
pub fn file_schema(source: &TableSchema) -> Result<SchemaRef> {
    let fields: Result<Vec<Field>> = source
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let t = arrow_type(&iceberg_type(&c.data_type)?);
            let meta = HashMap::from([("PARQUET:field_id".to_string(), (i + 1).to_string())]);
            Ok(Field::new(&c.name, t, c.nullable).with_metadata(meta))
        })
        .collect();
    Ok(Arc::new(ArrowSchema::new(fields?)))
}

/// A row image of a change batch as a record batch of `file_schema` types.
/// Rows without the image (nulls of the struct) are kept as nulls; callers
/// select the rows they need.
pub fn to_file_batch(image: &StructArray, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns: Result<Vec<ArrayRef>> = image
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(col, f)| {
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
            arrow_cast::cast(&col, f.data_type()).map_err(Error::from)
        })
        .collect();
    // The struct's children may be non-nullable while absent rows hold nulls.
    let relaxed: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    let relaxed = Arc::new(ArrowSchema::new(relaxed));
    Ok(RecordBatch::try_new(relaxed, columns?)?)
}
