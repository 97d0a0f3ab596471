//! A table's current schema from `information_schema`, mapped to exactly the
//! `ColumnType`s the binlog's table maps produce, so snapshot rows and binlog
//! rows of the same table share one schema (and fingerprint).

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use tributary_core::{Column, ColumnType, Error, ErrorKind, Result, TableId, TableSchema};

use crate::conn::map_err;

type ColumnRow = (String, String, String, String, Option<u64>, Option<String>);

/// Reads `table`'s columns, keyed by `key` (the resolved key, see `keys`)
/// or else its primary key; `version` is the schema version to give it.
pub(crate) async fn load_table_schema(
    conn: &mut Conn,
    table: &TableId,
    key: Option<&[String]>,
    version: u64,
) -> Result<TableSchema> {
    let rows: Vec<ColumnRow> = conn
        .exec(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, CHARACTER_MAXIMUM_LENGTH, CHARACTER_SET_NAME \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (&table.database, &table.table),
        )
        .await
        .map_err(|e| map_err("reading information_schema.COLUMNS", e))?;
    if rows.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidConfig,
            format!("table {table} does not exist or is not readable"),
        ));
    }
    let primary: Vec<String> = conn
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX",
            (&table.database, &table.table),
        )
        .await
        .map_err(|e| map_err("reading information_schema.STATISTICS", e))?;
    let key = key.map_or(primary, <[String]>::to_vec);
    let mut columns = Vec::with_capacity(rows.len());
    for (name, data_type, column_type, nullable, max_len, charset) in rows {
        let t =
            column_type_of(&data_type, &column_type, max_len, charset.as_deref()).map_err(|m| {
                Error::new(
                    ErrorKind::Unsupported,
                    format!("column {name} ({column_type}): {m}"),
                )
                .with_context("table", table)
            })?;
        let nullable = nullable == "YES" && !key.contains(&name);
        columns.push(Column::new(name, t, nullable));
    }
    let key: Vec<&str> = key.iter().map(String::as_str).collect();
    TableSchema::new(table.clone(), columns, &key, version)
}

fn paren_numbers(column_type: &str) -> Vec<u32> {
    column_type
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(inside, _)| {
            inside
                .split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// `enum('a','it''s')` → ["a", "it's"].
fn labels(column_type: &str) -> Vec<String> {
    let inside = column_type
        .split_once('(')
        .map_or("", |(_, r)| r.strip_suffix(')').unwrap_or(r));
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = inside.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('\'', false) => quoted = true,
            ('\'', true) if chars.peek() == Some(&'\'') => {
                chars.next();
                cur.push('\'');
            }
            ('\'', true) => {
                quoted = false;
                out.push(std::mem::take(&mut cur));
            }
            ('\\', true) => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            (c, true) => cur.push(c),
            _ => {}
        }
    }
    out
}

fn column_type_of(
    data_type: &str,
    column_type: &str,
    max_len: Option<u64>,
    charset: Option<&str>,
) -> std::result::Result<ColumnType, String> {
    use ColumnType as C;
    let unsigned = column_type.contains("unsigned");
    let nums = paren_numbers(column_type);
    let fsp = nums.first().copied().unwrap_or(0) as u8;
    let int = |s: C, u: C| if unsigned { u } else { s };
    let binary = charset.is_none() || charset == Some("binary");
    Ok(match data_type {
        "tinyint" => int(C::Int8, C::UInt8),
        "smallint" => int(C::Int16, C::UInt16),
        "mediumint" => int(C::Int24, C::UInt24),
        "int" | "integer" => int(C::Int32, C::UInt32),
        "bigint" => int(C::Int64, C::UInt64),
        "float" => C::Float,
        "double" | "real" => C::Double,
        "decimal" | "numeric" => C::Decimal {
            precision: nums.first().copied().unwrap_or(10) as u8,
            scale: nums.get(1).copied().unwrap_or(0) as u8,
        },
        "year" => C::Year,
        "date" => C::Date,
        "time" => C::Time { fsp },
        "datetime" => C::DateTime { fsp },
        "timestamp" => C::Timestamp { fsp },
        "bit" => C::Bit {
            width: nums.first().copied().unwrap_or(1) as u8,
        },
        "enum" => C::Enum {
            labels: labels(column_type),
        },
        "set" => C::Set {
            labels: labels(column_type),
        },
        "json" => C::Json,
        "char" | "varchar" if !binary => C::String {
            max_len: max_len.map(|n| n as u32),
        },
        "binary" | "varbinary" => C::Bytes {
            max_len: max_len.map(|n| n as u32),
        },
        "char" | "varchar" => C::Bytes {
            max_len: max_len.map(|n| n as u32),
        },
        "tinytext" | "text" | "mediumtext" | "longtext" if !binary => C::String { max_len: None },
        "tinyblob" | "blob" | "mediumblob" | "longblob" | "tinytext" | "text" | "mediumtext"
        | "longtext" => C::Bytes { max_len: None },
        "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
        | "multipolygon" | "geometrycollection" => C::Bytes { max_len: None },
        other => return Err(format!("type {other} is not supported")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_types_map_like_the_table_map() {
        use ColumnType as C;
        let t = |d, c, l, cs| column_type_of(d, c, l, cs).unwrap();
        assert_eq!(
            t("mediumint", "mediumint(8) unsigned", None, None),
            C::UInt24
        );
        assert_eq!(
            t("decimal", "decimal(65,30)", None, None),
            C::Decimal {
                precision: 65,
                scale: 30
            }
        );
        assert_eq!(
            t("varchar", "varchar(20)", Some(20), Some("latin1")),
            C::String { max_len: Some(20) }
        );
        assert_eq!(
            t("binary", "binary(4)", Some(4), None),
            C::Bytes { max_len: Some(4) }
        );
        assert_eq!(
            t("longtext", "longtext", Some(4294967295), Some("utf8mb4")),
            C::String { max_len: None }
        );
        assert_eq!(t("time", "time(3)", None, None), C::Time { fsp: 3 });
        assert_eq!(t("bit", "bit(5)", None, None), C::Bit { width: 5 });
        assert_eq!(
            t("enum", "enum('a','it''s','x,y')", Some(4), Some("utf8mb4")),
            C::Enum {
                labels: vec!["a".into(), "it's".into(), "x,y".into()]
            }
        );
        assert!(column_type_of("vector", "vector(3)", None, None).is_err());
    }
}
