//! Row keys and cell values.
//!
//! Row key from the primary key, `row_key = "binary"` (default, sorts like
//! the key):
//! - signed integers, DATE (days), TIME/DATETIME/TIMESTAMP (µs): 8 bytes
//!   big-endian with the sign bit flipped, so negative sorts before positive;
//! - unsigned integers, YEAR, BIT: 8 bytes big-endian; BOOL: 1 byte;
//! - FLOAT/DOUBLE: the 8-byte IEEE-754 double, sign-flipped for positive
//!   values and fully inverted for negative ones (total order);
//! - strings, bytes, ENUM/SET/JSON and DECIMAL (its exact text, not
//!   order-preserving): the raw bytes when the key has one column; in a
//!   composite key each is escaped (0x00 → 0x00 0xFF) and ends with
//!   0x00 0x00, so no component can run into the next.
//!
//! `row_key = "text"`: each key column's text (as `SELECT` shows it) joined
//! by `separator` (default `|`); a key value containing the separator is an
//! error.
//!
//! Cell values (qualifier = column name; NULL = no cell): `values = "text"`
//! (default) stores the text `SELECT` shows (BOOL as 1/0, BIT as its integer,
//! DATETIME `YYYY-MM-DD HH:MM:SS.ffffff`, TIMESTAMP the same in UTC with `Z`,
//! binary columns as raw bytes); `values = "binary"` stores HBase's
//! `Bytes.toBytes` forms: big-endian ints of the column's width (MEDIUMINT 4
//! bytes), IEEE floats, `0xFF`/`0x00` booleans, DATE as a 4-byte day count,
//! TIME/DATETIME/TIMESTAMP as 8-byte µs, strings UTF-8, DECIMAL as text.

use serde::Deserialize;
use tributary_core::{Error, Result, Value};

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", tag = "encoding", deny_unknown_fields)]
pub enum RowKeyEncoding {
    #[default]
    Binary,
    Text {
        #[serde(default = "default_separator")]
        separator: String,
    },
}

fn default_separator() -> String {
    "|".into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueEncoding {
    #[default]
    Text,
    Binary,
}

const SIGN: u64 = 1 << 63;

fn signed(out: &mut Vec<u8>, v: i64) {
    out.extend(((v as u64) ^ SIGN).to_be_bytes());
}

fn escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend([0, 0]);
}

/// The row key of a row's key values (in key column order).
pub fn row_key(key: &[Value], encoding: &RowKeyEncoding) -> Result<Vec<u8>> {
    match encoding {
        RowKeyEncoding::Binary => {
            let mut out = Vec::with_capacity(8 * key.len());
            let single = key.len() == 1;
            for v in key {
                binary_key_part(&mut out, v, single)?;
            }
            Ok(out)
        }
        RowKeyEncoding::Text { separator } => {
            let parts: Vec<String> = key
                .iter()
                .map(|v| String::from_utf8_lossy(&text(v)).into_owned())
                .collect();
            if let Some(p) = parts.iter().find(|p| p.contains(separator.as_str())) {
                return Err(Error::new(
                    tributary_core::ErrorKind::InvalidData,
                    format!(
                        "row key part {p:?} contains the separator {separator:?}: choose another \
                         row_key separator or the binary row key encoding"
                    ),
                ));
            }
            Ok(parts.join(separator).into_bytes())
        }
    }
}

fn binary_key_part(out: &mut Vec<u8>, v: &Value, single: bool) -> Result<()> {
    match v {
        Value::Null => {
            return Err(Error::new(
                tributary_core::ErrorKind::InvalidData,
                "a primary key column is NULL",
            ));
        }
        Value::Bool(b) => out.push(*b as u8),
        Value::Int8(x) => signed(out, *x as i64),
        Value::Int16(x) => signed(out, *x as i64),
        Value::Int32(x) | Value::Date(x) => signed(out, *x as i64),
        Value::Int64(x) | Value::Time(x) | Value::DateTime(x) | Value::Timestamp(x) => {
            signed(out, *x)
        }
        Value::UInt8(x) => out.extend((*x as u64).to_be_bytes()),
        Value::UInt16(x) | Value::Year(x) => out.extend((*x as u64).to_be_bytes()),
        Value::UInt32(x) => out.extend((*x as u64).to_be_bytes()),
        Value::UInt64(x) | Value::Bit(x) => out.extend(x.to_be_bytes()),
        Value::Float(f) => out.extend(float_key(*f as f64)),
        Value::Double(f) => out.extend(float_key(*f)),
        other => {
            let bytes = text(other);
            if single {
                out.extend(bytes);
            } else {
                escaped(out, &bytes);
            }
        }
    }
    Ok(())
}

fn float_key(f: f64) -> [u8; 8] {
    let bits = f.to_bits();
    let ordered = if bits & SIGN == 0 { bits ^ SIGN } else { !bits };
    ordered.to_be_bytes()
}

/// A value as `SELECT` shows it (binary columns raw).
pub fn text(v: &Value) -> Vec<u8> {
    match v {
        Value::Bytes(b) => b.clone(),
        Value::Bool(b) => {
            if *b {
                b"1".to_vec()
            } else {
                b"0".to_vec()
            }
        }
        Value::Bit(b) => b.to_string().into_bytes(),
        other => other.to_string().into_bytes(),
    }
}

/// A cell value (None for NULL: no cell).
pub fn cell(v: &Value, encoding: ValueEncoding) -> Option<Vec<u8>> {
    if v.is_null() {
        return None;
    }
    Some(match encoding {
        ValueEncoding::Text => text(v),
        ValueEncoding::Binary => match v {
            Value::Bool(b) => vec![if *b { 0xFF } else { 0 }],
            Value::Int8(x) => x.to_be_bytes().to_vec(),
            Value::Int16(x) => x.to_be_bytes().to_vec(),
            Value::Int32(x) | Value::Date(x) => x.to_be_bytes().to_vec(),
            Value::Int64(x) | Value::Time(x) | Value::DateTime(x) | Value::Timestamp(x) => {
                x.to_be_bytes().to_vec()
            }
            Value::UInt8(x) => vec![*x],
            Value::UInt16(x) | Value::Year(x) => x.to_be_bytes().to_vec(),
            Value::UInt32(x) => x.to_be_bytes().to_vec(),
            Value::UInt64(x) | Value::Bit(x) => x.to_be_bytes().to_vec(),
            Value::Float(f) => f.to_be_bytes().to_vec(),
            Value::Double(f) => f.to_be_bytes().to_vec(),
            other => text(other),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_row_keys_sort_like_the_key() {
        let key = |v: Vec<Value>| row_key(&v, &RowKeyEncoding::Binary).unwrap();
        let ints = [i64::MIN, -5, -1, 0, 1, 300, i64::MAX];
        let keys: Vec<_> = ints.iter().map(|&i| key(vec![Value::Int64(i)])).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "signed ints");
        let floats = [f64::NEG_INFINITY, -2.5, -0.0, 0.0, 1e-9, 3.0, f64::INFINITY];
        let keys: Vec<_> = floats
            .iter()
            .map(|&f| key(vec![Value::Double(f)]))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] <= w[1]), "doubles");
        // Composite: ("a", 2) < ("a\0", 1) < ("ab", 0) — escaping keeps the order
        // and no component bleeds into the next.
        let c = |s: &str, i: i32| key(vec![Value::String(s.into()), Value::Int32(i)]);
        assert!(c("a", 2) < c("a\0", 1) && c("a\0", 1) < c("ab", 0));
        assert_ne!(c("a\0\0", 1), c("a", 0));
        assert_eq!(key(vec![Value::String("plain".into())]), b"plain");
        assert_eq!(key(vec![Value::Int32(1)]), [0x80, 0, 0, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn text_row_keys_join_and_refuse_the_separator() {
        let enc = RowKeyEncoding::Text {
            separator: "|".into(),
        };
        let k = row_key(&[Value::String("eu".into()), Value::Int32(-7)], &enc).unwrap();
        assert_eq!(k, b"eu|-7");
        let e = row_key(&[Value::String("a|b".into())], &enc).unwrap_err();
        assert!(e.to_string().contains("separator"), "{e}");
    }

    #[test]
    fn binary_cells_are_hbase_bytes_forms() {
        let b = |v: Value| cell(&v, ValueEncoding::Binary).unwrap();
        assert_eq!(b(Value::Int32(1)), [0, 0, 0, 1]);
        assert_eq!(b(Value::Int64(-1)), [0xFF; 8]);
        assert_eq!(b(Value::Bool(true)), [0xFF]);
        assert_eq!(b(Value::Double(1.0)), 1.0f64.to_be_bytes());
        assert_eq!(b(Value::String("é".into())), "é".as_bytes());
        assert_eq!(cell(&Value::Null, ValueEncoding::Text), None);
        assert_eq!(cell(&Value::Bool(true), ValueEncoding::Text).unwrap(), b"1");
        assert_eq!(
            cell(&Value::Date(0), ValueEncoding::Text).unwrap(),
            b"1970-01-01"
        );
    }
}
