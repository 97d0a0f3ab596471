//! TABLE_MAP events → the table's schema at that point of the binlog, and the
//! byte layout of each column in row images.
//!
//! With `binlog_row_metadata=FULL` a table map carries names, signedness,
//! charsets, ENUM/SET labels and the primary key, so rows always decode with
//! the schema that was valid when they were written — no DDL parsing needed.

use std::sync::Arc;

use mysql_async::binlog::events::{OptionalMetadataField, TableMapEvent};
use tributary_core::{Column, ColumnType, Error, ErrorKind, Result, TableId, TableSchema};

use crate::charset::{Charset, CharsetMap};

/// MySQL protocol column type codes (the subset that appears in table maps).
pub(crate) mod code {
    pub const DECIMAL: u8 = 0;
    pub const TINY: u8 = 1;
    pub const SHORT: u8 = 2;
    pub const LONG: u8 = 3;
    pub const FLOAT: u8 = 4;
    pub const DOUBLE: u8 = 5;
    pub const TIMESTAMP: u8 = 7;
    pub const LONGLONG: u8 = 8;
    pub const INT24: u8 = 9;
    pub const DATE: u8 = 10;
    pub const TIME: u8 = 11;
    pub const DATETIME: u8 = 12;
    pub const YEAR: u8 = 13;
    /// The 3-byte DATE format; MariaDB's table maps use this code for DATE.
    pub const NEWDATE: u8 = 14;
    pub const VARCHAR: u8 = 15;
    pub const BIT: u8 = 16;
    pub const TIMESTAMP2: u8 = 17;
    pub const DATETIME2: u8 = 18;
    pub const TIME2: u8 = 19;
    pub const JSON: u8 = 245;
    pub const NEWDECIMAL: u8 = 246;
    pub const ENUM: u8 = 247;
    pub const SET: u8 = 248;
    pub const BLOB: u8 = 252;
    pub const VAR_STRING: u8 = 253;
    pub const STRING: u8 = 254;
    pub const GEOMETRY: u8 = 255;
}

/// How one column's value is laid out in a row image.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CellFormat {
    /// Little-endian integer of 1, 2, 3, 4 or 8 bytes.
    Int {
        bytes: u8,
        unsigned: bool,
    },
    Float,
    Double,
    /// MySQL's packed binary DECIMAL.
    Decimal {
        precision: u8,
        scale: u8,
    },
    Year,
    Date,
    /// TIME2 / DATETIME2 / TIMESTAMP2 with fractional-second precision.
    Time2 {
        fsp: u8,
    },
    DateTime2 {
        fsp: u8,
    },
    Timestamp2 {
        fsp: u8,
    },
    /// Pre-5.6 temporal formats (still readable from old tables).
    OldTime,
    OldDateTime,
    OldTimestamp,
    /// A length prefix of `len_bytes` then the bytes; text if `charset` is
    /// set. BINARY(n) loses its trailing zero bytes in the binlog: `pad_to` restores them.
    Var {
        len_bytes: u8,
        charset: Option<Charset>,
        pad_to: Option<usize>,
    },
    Enum {
        bytes: u8,
        labels: Arc<[String]>,
    },
    Set {
        bytes: u8,
        labels: Arc<[String]>,
    },
    Bit {
        bits: u16,
    },
    /// MySQL 8 binary JSON (MariaDB JSON is LONGTEXT and arrives as `Var`).
    MySqlJson {
        len_bytes: u8,
    },
}

/// A decoded table map: the schema plus each column's cell format.
#[derive(Debug)]
pub(crate) struct DecodedTable {
    pub schema: Arc<TableSchema>,
    pub formats: Vec<CellFormat>,
}

/// Optional metadata pulled out of a table map.
#[derive(Default)]
struct Extras {
    names: Vec<String>,
    unsigned: Vec<bool>,
    charsets: Vec<u16>,
    default_charset: Option<(u16, Vec<(usize, u16)>)>,
    enum_set_charsets: Vec<u16>,
    enum_set_default: Option<(u16, Vec<(usize, u16)>)>,
    enum_labels: Vec<Vec<String>>,
    set_labels: Vec<Vec<String>>,
    primary_key: Vec<usize>,
}

fn bad(table: &TableId, msg: String) -> Error {
    Error::new(ErrorKind::InvalidData, msg).with_context("table", table)
}

fn extras(tme: &TableMapEvent<'_>, table: &TableId) -> Result<Extras> {
    let io = |e: std::io::Error| bad(table, format!("malformed table map metadata: {e}"));
    let mut x = Extras::default();
    for field in tme.iter_optional_meta() {
        match field.map_err(io)? {
            OptionalMetadataField::Signedness(bits) => x.unsigned = bits.iter().by_vals().collect(),
            OptionalMetadataField::ColumnName(n) => {
                x.names = n
                    .iter_names()
                    .map(|n| n.map(|n| n.name().into_owned()))
                    .collect::<Result<_, _>>()
                    .map_err(io)?;
            }
            OptionalMetadataField::DefaultCharset(d) => {
                let rest = d
                    .iter_non_default()
                    .map(|c| c.map(|c| (c.column_index() as usize, c.charset())));
                x.default_charset = Some((
                    d.default_charset(),
                    rest.collect::<Result<_, _>>().map_err(io)?,
                ));
            }
            OptionalMetadataField::ColumnCharset(c) => {
                x.charsets = c.iter_charsets().collect::<Result<_, _>>().map_err(io)?;
            }
            OptionalMetadataField::EnumAndSetDefaultCharset(d) => {
                let rest = d
                    .iter_non_default()
                    .map(|c| c.map(|c| (c.column_index() as usize, c.charset())));
                x.enum_set_default = Some((
                    d.default_charset(),
                    rest.collect::<Result<_, _>>().map_err(io)?,
                ));
            }
            OptionalMetadataField::EnumAndSetColumnCharset(c) => {
                x.enum_set_charsets = c.iter_charsets().collect::<Result<_, _>>().map_err(io)?;
            }
            OptionalMetadataField::EnumStrValue(v) => {
                for e in v.iter_values() {
                    let e = e.map_err(io)?;
                    x.enum_labels
                        .push(e.values().iter().map(|l| l.value().into_owned()).collect());
                }
            }
            OptionalMetadataField::SetStrValue(v) => {
                for s in v.iter_values() {
                    let s = s.map_err(io)?;
                    x.set_labels
                        .push(s.values().iter().map(|l| l.value().into_owned()).collect());
                }
            }
            OptionalMetadataField::SimplePrimaryKey(k) => {
                x.primary_key = k
                    .iter_indexes()
                    .map(|i| i.map(|i| i as usize))
                    .collect::<Result<_, _>>()
                    .map_err(io)?;
            }
            OptionalMetadataField::PrimaryKeyWithPrefix(k) => {
                x.primary_key = k
                    .iter_keys()
                    .map(|k| k.map(|k| k.column_index() as usize))
                    .collect::<Result<_, _>>()
                    .map_err(io)?;
            }
            _ => {}
        }
    }
    Ok(x)
}

/// The charset of the `n`-th column of a kind (character, or enum/set), from
/// either the per-column list or the default + exceptions form.
fn nth_charset(
    list: &[u16],
    default: &Option<(u16, Vec<(usize, u16)>)>,
    n: usize,
    col: usize,
) -> Option<u16> {
    if let Some(c) = list.get(n) {
        return Some(*c);
    }
    let (d, exceptions) = default.as_ref()?;
    Some(
        exceptions
            .iter()
            .find(|(i, _)| *i == col)
            .map_or(*d, |(_, c)| *c),
    )
}

/// Decodes a table map into a schema of version `version`.
pub(crate) fn decode_table_map(
    tme: &TableMapEvent<'_>,
    charsets: &CharsetMap,
    version: u64,
) -> Result<DecodedTable> {
    let table = TableId::new(tme.database_name(), tme.table_name());
    let x = extras(tme, &table)?;
    let n = tme.columns_count() as usize;
    if x.names.len() != n {
        return Err(Error::new(
            ErrorKind::InvalidConfig,
            "the table map carries no column names: set binlog_row_metadata=FULL on the server \
             (SET GLOBAL binlog_row_metadata=FULL, and in the server config)",
        )
        .with_context("table", &table));
    }
    let nulls = tme.null_bitmask();
    let (mut numeric, mut character, mut enum_set, mut enums, mut sets) = (0, 0, 0, 0, 0);
    let mut columns = Vec::with_capacity(n);
    let mut formats = Vec::with_capacity(n);
    for i in 0..n {
        let raw = tme
            .get_column_type(i)
            .ok()
            .flatten()
            .map(|t| t as u8)
            .ok_or_else(|| bad(&table, format!("column {i} has an unknown type")))?;
        let meta = tme.get_column_metadata(i).unwrap_or(&[]);
        let (real, string_len) = resolve_string_type(raw, meta);
        let unsigned = if is_numeric(raw) {
            numeric += 1;
            x.unsigned.get(numeric - 1).copied().unwrap_or(false)
        } else {
            false
        };
        let charset_id = if real == code::ENUM || real == code::SET {
            enum_set += 1;
            nth_charset(&x.enum_set_charsets, &x.enum_set_default, enum_set - 1, i)
        } else if matches!(
            raw,
            code::STRING | code::VAR_STRING | code::VARCHAR | code::BLOB | code::GEOMETRY
        ) {
            character += 1;
            nth_charset(&x.charsets, &x.default_charset, character - 1, i)
        } else {
            None
        };
        let labels = |list: &[Vec<String>], k: &mut usize| -> Result<Arc<[String]>> {
            *k += 1;
            list.get(*k - 1).map(|l| l.clone().into()).ok_or_else(|| {
                bad(
                    &table,
                    format!("column {i}: no ENUM/SET labels in the table map"),
                )
            })
        };
        let (format, data_type) = match real {
            code::ENUM => {
                let l = labels(&x.enum_labels, &mut enums)?;
                let t = ColumnType::Enum { labels: l.to_vec() };
                (
                    CellFormat::Enum {
                        bytes: meta.get(1).copied().unwrap_or(1),
                        labels: l,
                    },
                    t,
                )
            }
            code::SET => {
                let l = labels(&x.set_labels, &mut sets)?;
                let t = ColumnType::Set { labels: l.to_vec() };
                (
                    CellFormat::Set {
                        bytes: meta.get(1).copied().unwrap_or(1),
                        labels: l,
                    },
                    t,
                )
            }
            _ => column_format(real, meta, string_len, unsigned, charset_id, charsets)
                .map_err(|m| bad(&table, format!("column {:?}: {m}", x.names[i])))?,
        };
        let nullable = nulls.get(i).as_deref().copied().unwrap_or(true);
        columns.push(Column::new(x.names[i].clone(), data_type, nullable));
        formats.push(format);
    }
    // A key column is NOT NULL by definition; some servers still flag it nullable.
    for &k in &x.primary_key {
        if let Some(c) = columns.get_mut(k) {
            c.nullable = false;
        }
    }
    let key: Vec<String> = x
        .primary_key
        .iter()
        .filter_map(|&k| x.names.get(k).cloned())
        .collect();
    let key: Vec<&str> = key.iter().map(String::as_str).collect();
    let schema = TableSchema::new(table, columns, &key, version)?;
    Ok(DecodedTable {
        schema: Arc::new(schema),
        formats,
    })
}

/// Numeric columns take one signedness bit each (YEAR does not).
fn is_numeric(raw: u8) -> bool {
    matches!(
        raw,
        code::TINY
            | code::SHORT
            | code::INT24
            | code::LONG
            | code::LONGLONG
            | code::FLOAT
            | code::DOUBLE
            | code::DECIMAL
            | code::NEWDECIMAL
    )
}

/// STRING columns hide their real type (CHAR, ENUM, SET) and a long length
/// in their two metadata bytes.
fn resolve_string_type(raw: u8, meta: &[u8]) -> (u8, usize) {
    if raw != code::STRING || meta.len() < 2 {
        return (raw, 0);
    }
    let (b0, b1) = (meta[0] as usize, meta[1] as usize);
    if b0 & 0x30 != 0x30 {
        // A CHAR longer than 255 bytes keeps two length bits in byte 0.
        ((b0 | 0x30) as u8, b1 | (((b0 & 0x30) ^ 0x30) << 4))
    } else {
        (b0 as u8, b1)
    }
}

fn column_format(
    real: u8,
    meta: &[u8],
    string_len: usize,
    unsigned: bool,
    charset_id: Option<u16>,
    charsets: &CharsetMap,
) -> std::result::Result<(CellFormat, ColumnType), String> {
    use CellFormat as F;
    use ColumnType as C;
    let m0 = meta.first().copied().unwrap_or(0);
    let int = |bytes: u8, s: C, u: C| (F::Int { bytes, unsigned }, if unsigned { u } else { s });
    let text = |max_bytes: usize| -> std::result::Result<(Option<Charset>, C), String> {
        let id = charset_id.ok_or("no charset in the table map")?;
        let cs = charsets.get(id)?;
        Ok(match cs {
            Charset::Binary => (
                None,
                C::Bytes {
                    max_len: Some(max_bytes as u32),
                },
            ),
            cs => (
                Some(cs),
                C::String {
                    max_len: Some((max_bytes / cs.max_bytes_per_char()) as u32),
                },
            ),
        })
    };
    let len_bytes = |max: usize| if max < 256 { 1 } else { 2 };
    Ok(match real {
        code::TINY => int(1, C::Int8, C::UInt8),
        code::SHORT => int(2, C::Int16, C::UInt16),
        code::INT24 => int(3, C::Int24, C::UInt24),
        code::LONG => int(4, C::Int32, C::UInt32),
        code::LONGLONG => int(8, C::Int64, C::UInt64),
        code::FLOAT => (F::Float, C::Float),
        code::DOUBLE => (F::Double, C::Double),
        code::NEWDECIMAL => {
            let (precision, scale) = (m0, meta.get(1).copied().unwrap_or(0));
            (
                F::Decimal { precision, scale },
                C::Decimal { precision, scale },
            )
        }
        code::YEAR => (F::Year, C::Year),
        code::DATE | code::NEWDATE => (F::Date, C::Date),
        code::TIME2 => (F::Time2 { fsp: m0 }, C::Time { fsp: m0 }),
        code::DATETIME2 => (F::DateTime2 { fsp: m0 }, C::DateTime { fsp: m0 }),
        code::TIMESTAMP2 => (F::Timestamp2 { fsp: m0 }, C::Timestamp { fsp: m0 }),
        code::TIME => (F::OldTime, C::Time { fsp: 0 }),
        code::DATETIME => (F::OldDateTime, C::DateTime { fsp: 0 }),
        code::TIMESTAMP => (F::OldTimestamp, C::Timestamp { fsp: 0 }),
        code::VARCHAR | code::VAR_STRING => {
            let max = u16::from_le_bytes([m0, meta.get(1).copied().unwrap_or(0)]) as usize;
            let (charset, t) = text(max)?;
            (
                F::Var {
                    len_bytes: len_bytes(max),
                    charset,
                    pad_to: None,
                },
                t,
            )
        }
        code::STRING => {
            let (charset, t) = text(string_len)?;
            let pad_to = charset.is_none().then_some(string_len);
            (
                F::Var {
                    len_bytes: len_bytes(string_len),
                    charset,
                    pad_to,
                },
                t,
            )
        }
        code::BLOB | code::GEOMETRY => {
            let (charset, t) = if real == code::GEOMETRY {
                (None, C::Bytes { max_len: None })
            } else {
                text(0)?
            };
            let t = match t {
                C::String { .. } => C::String { max_len: None },
                _ => C::Bytes { max_len: None },
            };
            (
                F::Var {
                    len_bytes: m0,
                    charset,
                    pad_to: None,
                },
                t,
            )
        }
        code::JSON => (F::MySqlJson { len_bytes: m0 }, C::Json),
        code::BIT => {
            let bits = u16::from(meta.get(1).copied().unwrap_or(0)) * 8 + u16::from(m0);
            (F::Bit { bits }, C::Bit { width: bits as u8 })
        }
        other => return Err(format!("column type {other} is not supported")),
    })
}

/// `schema` keyed by `key` instead of what the table map said (table maps
/// carry only a primary key; a unique-key or configured key comes from
/// `keys`). Key columns are NOT NULL by the key's own rule.
pub(crate) fn rekey(schema: &TableSchema, key: &[String]) -> Result<TableSchema> {
    let mut columns = schema.columns.clone();
    for name in key {
        match columns.iter_mut().find(|c| &c.name == name) {
            Some(c) => c.nullable = false,
            None => {
                return Err(Error::new(
                    ErrorKind::SchemaMismatch,
                    format!(
                        "key column {name:?} is no longer a column of {}: configure its new \
                         key in the source's key_columns and restart",
                        schema.table
                    ),
                )
                .with_context("table", &schema.table));
            }
        }
    }
    let key: Vec<&str> = key.iter().map(String::as_str).collect();
    TableSchema::new(schema.table.clone(), columns, &key, schema.version)
}
