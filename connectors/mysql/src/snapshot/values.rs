//! Values read by snapshot queries (binary protocol, session time zone UTC,
//! results in utf8mb4) → typed pushes into a row image; and key values back
//! to query parameters for keyset chunking.

use mysql_async::Value as My;
use tributary_core::{ColumnType, Decimal, Error, ErrorKind, Result, RowImageBuilder, Value};

use crate::binlog::rows::zero_date;
use crate::config::ZeroDates;

fn bad(t: &ColumnType, v: &My) -> Error {
    Error::new(
        ErrorKind::InvalidData,
        format!("snapshot value {v:?} does not fit column type {t:?}"),
    )
}

fn text(t: &ColumnType, v: &My, bytes: &[u8]) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| bad(t, v))
}

/// Pushes one cell of a snapshot row.
pub(crate) fn push_cell(
    img: &mut RowImageBuilder,
    t: &ColumnType,
    v: &My,
    nullable: bool,
    zero: ZeroDates,
) -> Result<()> {
    use ColumnType as C;
    match (t, v) {
        (_, My::NULL) => img.push_null(),
        (C::Bit { .. }, My::Bytes(b)) => {
            img.push_uint(b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
        }
        (_, My::Int(i)) => img.push_int(*i),
        (_, My::UInt(u)) => img.push_uint(*u),
        (C::Float | C::Double, My::Float(f)) => img.push_f64(f64::from(*f)),
        (C::Float | C::Double, My::Double(f)) => img.push_f64(*f),
        (C::Decimal { .. }, My::Bytes(b)) => {
            let d: Decimal = text(t, v, b)?.parse()?;
            img.push_decimal(&d)
        }
        (C::Year, My::Bytes(b)) => img.push_uint(text(t, v, b)?.parse().map_err(|_| bad(t, v))?),
        (C::Bytes { .. }, My::Bytes(b)) => img.push_bytes(b),
        (C::String { .. } | C::Enum { .. } | C::Set { .. } | C::Json, My::Bytes(b)) => {
            img.push_str(std::str::from_utf8(b).map_err(|_| bad(t, v))?)
        }
        (C::Date, My::Date(y, m, d, ..)) => {
            match Value::date(i32::from(*y), u32::from(*m), u32::from(*d)) {
                Some(Value::Date(days)) => img.push_date(days),
                _ => zero_date(img, zero, nullable, |img| img.push_date(0)),
            }
        }
        (C::DateTime { .. } | C::Timestamp { .. }, My::Date(y, mo, d, h, mi, s, us)) => {
            let ymd = (i32::from(*y), u32::from(*mo), u32::from(*d));
            match Value::datetime(ymd, (u32::from(*h), u32::from(*mi), u32::from(*s)), *us) {
                Some(Value::DateTime(micros)) => img.push_timestamp_micros(micros),
                _ => zero_date(img, zero, nullable, |img| img.push_timestamp_micros(0)),
            }
        }
        (C::Time { .. }, My::Time(neg, days, h, m, s, us)) => {
            let secs =
                (i64::from(*days) * 24 + i64::from(*h)) * 3600 + i64::from(*m) * 60 + i64::from(*s);
            let micros = secs * 1_000_000 + i64::from(*us);
            img.push_time(if *neg { -micros } else { micros })
        }
        _ => Err(bad(t, v)),
    }
}

/// A key value as a query parameter comparing the same way on the server.
pub(crate) fn to_param(v: &Value) -> My {
    match v {
        Value::Null => My::NULL,
        Value::Bool(b) => My::Int(i64::from(*b)),
        Value::Int8(x) => My::Int((*x).into()),
        Value::Int16(x) => My::Int((*x).into()),
        Value::Int32(x) => My::Int((*x).into()),
        Value::Int64(x) => My::Int(*x),
        Value::UInt8(x) => My::UInt((*x).into()),
        Value::UInt16(x) | Value::Year(x) => My::UInt((*x).into()),
        Value::UInt32(x) => My::UInt((*x).into()),
        Value::UInt64(x) | Value::Bit(x) => My::UInt(*x),
        Value::Float(x) => My::Float(*x),
        Value::Double(x) => My::Double(*x),
        Value::Decimal(d) => My::Bytes(d.to_string().into_bytes()),
        Value::String(s) | Value::Enum(s) | Value::Set(s) | Value::Json(s) => {
            My::Bytes(s.clone().into_bytes())
        }
        Value::Bytes(b) => My::Bytes(b.clone()),
        Value::Date(_) | Value::DateTime(_) | Value::Timestamp(_) => {
            My::Bytes(v.to_string().trim_end_matches('Z').as_bytes().to_vec())
        }
        Value::Time(_) => My::Bytes(v.to_string().into_bytes()),
    }
}
