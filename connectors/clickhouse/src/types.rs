//! Source column types in ClickHouse, and their RowBinary encoding.
//!
//! | source | modern server (≥ 23.2) | 18.16 ("legacy") |
//! |---|---|---|
//! | BOOL/TINYINT(1) | `Bool` | `UInt8` |
//! | TINYINT … BIGINT (MEDIUMINT → Int32), UNSIGNED alike | `Int8` … `UInt64` | same |
//! | YEAR | `UInt16` | same |
//! | BIT(n) | `UInt64` | same |
//! | FLOAT, DOUBLE | `Float32`, `Float64` | same |
//! | DECIMAL(p,s), p ≤ 38 | `Decimal(p,s)` | same |
//! | DECIMAL(p,s), p > 38 | `Decimal(p,s)` (Decimal256) | `String`, the exact decimal text |
//! | CHAR/VARCHAR/TEXT, ENUM (label), SET (labels joined by `,`), JSON (text) | `String` | same |
//! | BINARY/VARBINARY/BLOB | `String` (bytes) | same |
//! | DATE | `Date32` | `Int32`: days since 1970-01-01 (18.16's `Date` cannot hold dates before 1970) |
//! | DATETIME(fsp) | `DateTime64(6)` | `Int64`: microseconds since 1970-01-01 of the wall-clock time (18.16 has no DateTime64) |
//! | TIMESTAMP(fsp) | `DateTime64(6, 'UTC')` | `Int64`: microseconds since the epoch, UTC |
//! | TIME(fsp) | `Int64`: signed microseconds (TIME spans ±838 h) | same |
//!
//! Nullable source columns are `Nullable(T)`. The legacy integer encodings are
//! the same bytes as the modern types (Date32 and DateTime64(6) are Int32 and
//! Int64 in RowBinary), so `toDate(toInt64(d))`-style conversions are not
//! needed on a modern server, and a legacy table converts with
//! `ALTER … MODIFY COLUMN` losslessly.

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Decimal128Array, Decimal256Array, StringArray,
};
use arrow_schema::DataType;
use tributary_core::{Column, ColumnType, Error, ErrorKind, Result};

/// A ClickHouse server version, read at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerVersion {
    pub major: u32,
    pub minor: u32,
}

impl ServerVersion {
    /// Parses `version()` output such as `18.16.1` or `24.8.4.13`.
    pub fn parse(text: &str) -> Result<ServerVersion> {
        let mut parts = text.trim().split('.').map(|p| p.parse::<u32>());
        match (parts.next(), parts.next()) {
            (Some(Ok(major)), Some(Ok(minor))) => Ok(ServerVersion { major, minor }),
            _ => Err(Error::new(
                ErrorKind::Unsupported,
                format!("unrecognized ClickHouse version {text:?}"),
            )),
        }
    }

    /// `ReplacingMergeTree(ver, is_deleted)`, Date32, DateTime64, Decimal256, Bool.
    pub fn is_modern(&self) -> bool {
        (self.major, self.minor) >= (23, 2)
    }
}

/// The ClickHouse type of a source column (without `Nullable`).
pub fn clickhouse_type(t: &ColumnType, modern: bool) -> String {
    use ColumnType as C;
    let s = match t {
        C::Bool if modern => "Bool",
        C::Bool | C::UInt8 => "UInt8",
        C::Int8 => "Int8",
        C::Int16 => "Int16",
        C::Int24 | C::Int32 => "Int32",
        C::Int64 => "Int64",
        C::UInt16 | C::Year => "UInt16",
        C::UInt24 | C::UInt32 => "UInt32",
        C::UInt64 | C::Bit { .. } => "UInt64",
        C::Float => "Float32",
        C::Double => "Float64",
        C::Decimal { precision, scale } if *precision <= 38 || modern => {
            return format!("Decimal({precision}, {scale})");
        }
        C::Decimal { .. } => "String",
        C::String { .. } | C::Bytes { .. } | C::Enum { .. } | C::Set { .. } | C::Json => "String",
        C::Date if modern => "Date32",
        C::Date => "Int32",
        C::DateTime { .. } if modern => "DateTime64(6)",
        C::Timestamp { .. } if modern => "DateTime64(6, 'UTC')",
        C::DateTime { .. } | C::Timestamp { .. } | C::Time { .. } => "Int64",
    };
    s.to_string()
}

/// The column's full ClickHouse type (`Nullable(…)` when the source allows NULL).
/// The types `t` widens to in place (see `ColumnType::widens_to`), narrowest
/// first: what a table column of another type may have been widened to.
pub fn wider_types(t: &ColumnType) -> Vec<ColumnType> {
    use ColumnType as C;
    let mut all = vec![
        C::Int16,
        C::Int24,
        C::Int32,
        C::Int64,
        C::UInt16,
        C::UInt24,
        C::UInt32,
        C::UInt64,
        C::Double,
    ];
    if let C::Decimal { scale, .. } = t {
        all.extend((1..=76).map(|precision| C::Decimal {
            precision,
            scale: *scale,
        }));
    }
    all.into_iter()
        .filter(|w| w != t && t.widens_to(w))
        .collect()
}

pub fn column_type(c: &Column, modern: bool) -> String {
    let t = clickhouse_type(&c.data_type, modern);
    if c.nullable {
        format!("Nullable({t})")
    } else {
        t
    }
}

/// A column's Arrow array, downcast once per batch.
enum Cells<'a> {
    Bool(&'a BooleanArray),
    /// Fixed-width little-endian values: ints, floats, dates, times
    /// (their RowBinary is the Arrow buffer's bytes).
    Fixed(&'a [u8], usize),
    Utf8(&'a StringArray),
    Binary(&'a BinaryArray),
    Decimal128(&'a Decimal128Array),
    Decimal256(&'a Decimal256Array),
}

/// Writes one column's cells in RowBinary, row by row, for one batch.
pub struct CellEncoder<'a> {
    array: &'a ArrayRef,
    cells: Cells<'a>,
    nullable: bool,
    /// Decimal width in bytes (4, 8, 16, 32), or 0: decimal as text.
    decimal_bytes: usize,
}

/// The value bytes of a primitive array (already sliced to the array).
fn values<T: ArrowPrimitiveType>(a: &ArrayRef) -> Cells<'_> {
    let bytes = a.as_primitive::<T>().values().inner().as_slice();
    Cells::Fixed(bytes, std::mem::size_of::<T::Native>())
}

fn cells(a: &ArrayRef) -> Result<Cells<'_>> {
    Ok(match a.data_type() {
        DataType::Boolean => Cells::Bool(a.as_boolean()),
        DataType::Int8 => values::<Int8Type>(a),
        DataType::UInt8 => values::<UInt8Type>(a),
        DataType::Int16 => values::<Int16Type>(a),
        DataType::UInt16 => values::<UInt16Type>(a),
        DataType::Int32 => values::<Int32Type>(a),
        DataType::UInt32 => values::<UInt32Type>(a),
        DataType::Float32 => values::<Float32Type>(a),
        DataType::Date32 => values::<Date32Type>(a),
        DataType::Int64 => values::<Int64Type>(a),
        DataType::UInt64 => values::<UInt64Type>(a),
        DataType::Float64 => values::<Float64Type>(a),
        DataType::Timestamp(_, _) => values::<TimestampMicrosecondType>(a),
        DataType::Duration(_) => values::<DurationMicrosecondType>(a),
        DataType::Utf8 => Cells::Utf8(a.as_string::<i32>()),
        DataType::Binary => Cells::Binary(a.as_binary::<i32>()),
        DataType::Decimal128(_, _) => Cells::Decimal128(a.as_primitive::<Decimal128Type>()),
        DataType::Decimal256(_, _) => Cells::Decimal256(a.as_primitive::<Decimal256Type>()),
        other => {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("no ClickHouse encoding for Arrow type {other}"),
            ));
        }
    })
}

impl<'a> CellEncoder<'a> {
    /// Fails for an Arrow type with no ClickHouse encoding.
    pub fn new(array: &'a ArrayRef, column: &Column, modern: bool) -> Result<CellEncoder<'a>> {
        let decimal_bytes = match column.data_type {
            ColumnType::Decimal { precision, .. } => match precision {
                0..=9 => 4,
                10..=18 => 8,
                19..=38 => 16,
                _ if modern => 32,
                _ => 0,
            },
            _ => 0,
        };
        Ok(CellEncoder {
            array,
            cells: cells(array)?,
            nullable: column.nullable,
            decimal_bytes,
        })
    }

    /// Appends row `row`'s cell.
    pub fn encode(&self, out: &mut Vec<u8>, row: usize) -> Result<()> {
        if self.nullable {
            let null = self.array.is_null(row);
            out.push(null as u8);
            if null {
                return Ok(());
            }
        } else if self.array.is_null(row) {
            // A NOT NULL column without a value: the delete image of a
            // row whose before image lacks it. The type's zero keeps the
            // row well-formed; deleted rows are never read as data.
            return self.encode_zero(out);
        }
        match &self.cells {
            Cells::Bool(a) => out.push(a.value(row) as u8),
            Cells::Fixed(bytes, w) => out.extend_from_slice(&bytes[row * w..(row + 1) * w]),
            Cells::Utf8(a) => string(out, a.value(row).as_bytes()),
            Cells::Binary(a) => string(out, a.value(row)),
            Cells::Decimal128(a) => {
                let v = a.value(row);
                self.decimal(out, &v.to_le_bytes(), || a.value_as_string(row))
            }
            Cells::Decimal256(a) => {
                let v = a.value(row);
                self.decimal(out, &v.to_le_bytes(), || a.value_as_string(row))
            }
        }
        Ok(())
    }

    /// Two's-complement little-endian bytes cut to the column's width (the
    /// value fits: its precision bounds it), or the text on legacy servers.
    fn decimal(&self, out: &mut Vec<u8>, le: &[u8], text: impl FnOnce() -> String) {
        if self.decimal_bytes == 0 {
            string(out, text().as_bytes());
        } else if le.len() >= self.decimal_bytes {
            out.extend(&le[..self.decimal_bytes]);
        } else {
            let fill = if le.last().is_some_and(|b| b & 0x80 != 0) {
                0xFF
            } else {
                0
            };
            out.extend(le);
            out.extend(std::iter::repeat_n(fill, self.decimal_bytes - le.len()));
        }
    }

    fn encode_zero(&self, out: &mut Vec<u8>) -> Result<()> {
        let width = match self.array.data_type() {
            DataType::Boolean | DataType::Int8 | DataType::UInt8 => 1,
            DataType::Int16 | DataType::UInt16 => 2,
            DataType::Int32 | DataType::UInt32 | DataType::Float32 | DataType::Date32 => 4,
            DataType::Utf8 | DataType::Binary => 1, // empty string: length 0
            DataType::Decimal128(_, _) | DataType::Decimal256(_, _) => self.decimal_bytes.max(1),
            _ => 8,
        };
        out.extend(std::iter::repeat_n(0u8, width));
        Ok(())
    }
}

/// RowBinary String: LEB128 length, then the bytes.
pub fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut n = bytes.len() as u64;
    loop {
        let b = (n & 0x7F) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_modern_starts_at_23_2() {
        assert!(!ServerVersion::parse("18.16.1").unwrap().is_modern());
        assert!(!ServerVersion::parse("23.1.9").unwrap().is_modern());
        assert!(ServerVersion::parse("23.2.1.5").unwrap().is_modern());
        assert!(ServerVersion::parse("26.9").unwrap().is_modern());
        assert!(ServerVersion::parse("dev").is_err());
    }

    #[test]
    fn strings_carry_leb128_lengths() {
        let mut out = Vec::new();
        string(&mut out, &[7u8; 300]);
        assert_eq!(&out[..2], &[0xAC, 0x02]);
        assert_eq!(out.len(), 302);
    }
}
