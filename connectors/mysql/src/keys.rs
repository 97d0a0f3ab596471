//! Which columns key a table's rows — in every sink and for snapshot
//! chunks: the configured `key_columns`, else the primary key, else the
//! first unique index whose columns are all NOT NULL (the index InnoDB
//! itself clusters on; Debezium's rule). Resolved once at start for every
//! selected table, so a table with no key at all is refused before
//! anything is written, and the binlog reader (whose table maps carry only
//! a primary key) keys its rows the same way the snapshot does.

use std::collections::HashMap;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use tributary_core::{Error, ErrorKind, Result, TableId};

use crate::config::MySqlSourceConfig;
use crate::conn::map_err;

/// One table's key and where it came from (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableKey {
    pub columns: Vec<String>,
    pub origin: KeyOrigin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    Configured,
    PrimaryKey,
    UniqueIndex(String),
}

/// One row of `SHOW INDEX`: (unique, index, column, nullable), in index order.
type IndexColumn = (bool, String, String, bool);

/// The key of `table` from its indexes (in the server's index order) and
/// the configured columns, or `None` when it has none.
fn choose_key(
    table: &TableId,
    indexes: &[IndexColumn],
    nullable: &HashMap<String, bool>,
    configured: Option<&Vec<String>>,
) -> Result<Option<TableKey>> {
    if let Some(cols) = configured {
        for c in cols {
            match nullable.get(c) {
                None => {
                    return Err(Error::invalid_config(format!(
                        "mysql.key_columns[\"{table}\"] names {c:?}, which is not a column of \
                         {table}: list columns of the table"
                    )));
                }
                Some(true) => {
                    return Err(Error::invalid_config(format!(
                        "mysql.key_columns[\"{table}\"] names {c:?}, which is nullable: a key \
                         column must be NOT NULL (ALTER TABLE {table} MODIFY {c} … NOT NULL, or \
                         key the table by other columns)"
                    )));
                }
                Some(false) => {}
            }
        }
        return Ok(Some(TableKey {
            columns: cols.clone(),
            origin: KeyOrigin::Configured,
        }));
    }
    let mut order: Vec<&str> = Vec::new();
    for (unique, index, _, _) in indexes {
        if *unique && !order.contains(&index.as_str()) {
            order.push(index);
        }
    }
    // PRIMARY first; then unique indexes in index order.
    order.sort_by_key(|i| *i != "PRIMARY");
    for index in order {
        let cols: Vec<&IndexColumn> = indexes.iter().filter(|c| c.1 == index).collect();
        if cols.iter().any(|c| c.3) {
            continue;
        }
        let columns = cols.iter().map(|c| c.2.clone()).collect();
        let origin = if index == "PRIMARY" {
            KeyOrigin::PrimaryKey
        } else {
            KeyOrigin::UniqueIndex(index.to_string())
        };
        return Ok(Some(TableKey { columns, origin }));
    }
    Ok(None)
}

/// Resolves the key of each of `tables`; tables with none are absent.
/// Primary keys come from one query; only tables without one (or with
/// configured columns) are looked at one by one.
pub(crate) async fn resolve_keys(
    conn: &mut Conn,
    config: &MySqlSourceConfig,
    tables: &[TableId],
) -> Result<HashMap<TableId, TableKey>> {
    let mut databases: Vec<&str> = tables.iter().map(|t| t.database.as_str()).collect();
    databases.sort_unstable();
    databases.dedup();
    let mut primary: HashMap<TableId, Vec<String>> = HashMap::new();
    if !databases.is_empty() {
        let marks = vec!["?"; databases.len()].join(",");
        let rows: Vec<(String, String, String)> = conn
            .exec(
                format!(
                    "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME FROM information_schema.STATISTICS \
                     WHERE INDEX_NAME = 'PRIMARY' AND TABLE_SCHEMA IN ({marks}) \
                     ORDER BY TABLE_SCHEMA, TABLE_NAME, SEQ_IN_INDEX"
                ),
                databases,
            )
            .await
            .map_err(|e| map_err("reading primary keys from information_schema.STATISTICS", e))?;
        for (d, t, c) in rows {
            primary.entry(TableId::new(d, t)).or_default().push(c);
        }
    }
    let mut keys = HashMap::new();
    for table in tables {
        let configured = config.configured_key(table);
        if let (None, Some(pk)) = (configured, primary.remove(table)) {
            let key = TableKey {
                columns: pk,
                origin: KeyOrigin::PrimaryKey,
            };
            keys.insert(table.clone(), key);
            continue;
        }
        let (indexes, nullable) = table_indexes(conn, table).await?;
        if let Some(key) = choose_key(table, &indexes, &nullable, configured)? {
            keys.insert(table.clone(), key);
        }
    }
    Ok(keys)
}

/// `table`'s index columns (`SHOW INDEX`: the server's index order) and
/// which of its columns are nullable.
async fn table_indexes(
    conn: &mut Conn,
    table: &TableId,
) -> Result<(Vec<IndexColumn>, HashMap<String, bool>)> {
    let quoted = format!(
        "{}.{}",
        crate::snapshot::quote(&table.database),
        crate::snapshot::quote(&table.table)
    );
    let rows: Vec<mysql_async::Row> = conn
        .query(format!("SHOW INDEX FROM {quoted}"))
        .await
        .map_err(|e| map_err("reading the table's indexes (SHOW INDEX)", e))?;
    let indexes = rows
        .iter()
        .map(|r| {
            let text = |name: &str| -> String {
                r.get_opt::<String, _>(name)
                    .and_then(|v| v.ok())
                    .unwrap_or_default()
            };
            let non_unique: i64 = r
                .get_opt::<i64, _>("Non_unique")
                .and_then(|v| v.ok())
                .unwrap_or(1);
            (
                non_unique == 0,
                text("Key_name"),
                text("Column_name"),
                text("Null") == "YES",
            )
        })
        .collect();
    let columns: Vec<(String, String)> = conn
        .exec(
            "SELECT COLUMN_NAME, IS_NULLABLE FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (&table.database, &table.table),
        )
        .await
        .map_err(|e| map_err("reading information_schema.COLUMNS", e))?;
    let nullable = columns.into_iter().map(|(c, n)| (c, n == "YES")).collect();
    Ok((indexes, nullable))
}

/// The refusal for selected tables without any key: every such table and
/// the fixes, before anything is written.
pub(crate) fn refuse_keyless(keyless: &[TableId]) -> Result<()> {
    if keyless.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = keyless.iter().map(|t| t.to_string()).collect();
    Err(Error::new(
        ErrorKind::InvalidConfig,
        format!(
            "{} selected table(s) have no primary key and no unique index on NOT NULL columns, so \
             their rows cannot be upserted: {}. Fix: add a primary key (ALTER TABLE … ADD PRIMARY \
             KEY (…)), or name the columns that identify a row in the source's key_columns \
             (e.g. key_columns = {{ \"{}\" = [\"id\"] }}), or leave the tables out with \
             tables.exclude",
            names.len(),
            names.join(", "),
            names[0],
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(unique: bool, index: &str, column: &str, nullable: bool) -> IndexColumn {
        (unique, index.into(), column.into(), nullable)
    }

    #[test]
    fn primary_key_then_the_first_unique_index_on_not_null_columns() {
        let t = TableId::new("shop", "t");
        let nullable: HashMap<String, bool> = [("a", false), ("b", true), ("c", false)]
            .into_iter()
            .map(|(c, n)| (c.to_string(), n))
            .collect();
        let key = |indexes: &[IndexColumn], configured: Option<&Vec<String>>| {
            choose_key(&t, indexes, &nullable, configured)
        };
        // A unique index with a nullable column does not qualify; the next does.
        let uk = [
            idx(false, "ix_c", "c", false),
            idx(true, "uk_ab", "a", false),
            idx(true, "uk_ab", "b", true),
            idx(true, "uk_c", "c", false),
        ];
        assert_eq!(
            key(&uk, None).unwrap(),
            Some(TableKey {
                columns: vec!["c".into()],
                origin: KeyOrigin::UniqueIndex("uk_c".into())
            })
        );
        let pk = [
            idx(true, "uk_c", "c", false),
            idx(true, "PRIMARY", "a", false),
        ];
        assert_eq!(
            key(&pk, None).unwrap().unwrap().origin,
            KeyOrigin::PrimaryKey
        );
        assert_eq!(key(&[idx(false, "ix", "a", false)], None).unwrap(), None);
        // Configured columns win, and must be NOT NULL columns of the table.
        let cols = vec!["a".to_string(), "c".to_string()];
        assert_eq!(key(&pk, Some(&cols)).unwrap().unwrap().columns, cols);
        let err = key(&[], Some(&vec!["b".to_string()]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"b\", which is nullable"), "{err}");
        let err = key(&[], Some(&vec!["zz".to_string()]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a column of shop.t"), "{err}");
    }

    #[test]
    fn the_refusal_names_every_keyless_table_and_the_fixes() {
        let err = refuse_keyless(&[TableId::new("a", "x"), TableId::new("b", "y")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a.x, b.y") && err.contains("key_columns"),
            "{err}"
        );
        refuse_keyless(&[]).unwrap();
    }
}
