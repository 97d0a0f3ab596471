//! The tables the sink creates for a source table `t`:
//!
//! - `t` on every shard: the source columns, then `_version UInt64` (from the
//!   source position, see `sink::row_version`) and `_is_deleted UInt8`;
//!   `ReplacingMergeTree(_version, _is_deleted)` on modern servers, and on
//!   18.16, which lacks the second argument, `ReplacingMergeTree(_version)`
//!   (deleted keys stay as flagged rows until read through the view);
//!   `ORDER BY` the primary key.
//! - `t_all` (cluster modes): `Distributed(cluster, db, t, cityHash64(key))`.
//! - `t_live`: `SELECT * FROM t[_all] FINAL WHERE _is_deleted = 0`, the
//!   current rows on every server version. FINAL collapses versions per
//!   shard, which is exact because a key lives on one shard in both modes.

use tributary_core::{Column, TableSchema};

use crate::types::column_type;

pub const VERSION_COLUMN: &str = "_version";
pub const DELETED_COLUMN: &str = "_is_deleted";
pub const CHECKPOINT_TABLE: &str = "_tributary_checkpoints";

/// A backquoted identifier.
pub fn ident(name: &str) -> String {
    format!("`{}`", name.replace('\\', "\\\\").replace('`', "\\`"))
}

/// A single-quoted string literal.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn key_list(schema: &TableSchema) -> String {
    let keys: Vec<String> = schema
        .primary_key
        .iter()
        .map(|&i| ident(&schema.columns[i].name))
        .collect();
    keys.join(", ")
}

pub fn column_def(c: &Column, modern: bool) -> String {
    format!("{} {}", ident(&c.name), column_type(c, modern))
}

/// The replacing table on one server.
pub fn local_table(name: &str, schema: &TableSchema, modern: bool) -> String {
    let mut cols: Vec<String> = schema
        .columns
        .iter()
        .map(|c| column_def(c, modern))
        .collect();
    cols.push(format!("{VERSION_COLUMN} UInt64"));
    cols.push(format!("{DELETED_COLUMN} UInt8"));
    let engine = if modern {
        format!("ReplacingMergeTree({VERSION_COLUMN}, {DELETED_COLUMN})")
    } else {
        format!("ReplacingMergeTree({VERSION_COLUMN})")
    };
    format!(
        "CREATE TABLE IF NOT EXISTS {} ({}) ENGINE = {engine} ORDER BY ({})",
        ident(name),
        cols.join(", "),
        key_list(schema)
    )
}

/// The Distributed table over every shard's `local`.
pub fn distributed_table(
    name: &str,
    local: &str,
    database: &str,
    cluster: &str,
    schema: &TableSchema,
) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} AS {} ENGINE = Distributed({}, {}, {}, cityHash64({}))",
        ident(name),
        ident(local),
        ident(cluster),
        ident(database),
        ident(local),
        key_list(schema)
    )
}

/// The view of current rows over `source`.
pub fn live_view(name: &str, source: &str) -> String {
    format!(
        "CREATE VIEW IF NOT EXISTS {} AS SELECT * FROM {} FINAL WHERE {DELETED_COLUMN} = 0",
        ident(name),
        ident(source)
    )
}

pub fn add_column(table: &str, c: &Column, modern: bool) -> String {
    format!(
        "ALTER TABLE {} ADD COLUMN {}",
        ident(table),
        column_def(c, modern)
    )
}

pub fn checkpoint_table() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {CHECKPOINT_TABLE} (table String, checkpoint String, \
         {VERSION_COLUMN} UInt64) ENGINE = ReplacingMergeTree({VERSION_COLUMN}) ORDER BY table"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_core::{ColumnType, TableId};

    #[test]
    fn identifiers_and_literals_are_escaped() {
        assert_eq!(ident("we`ird"), "`we\\`ird`");
        assert_eq!(literal("it's"), "'it\\'s'");
    }

    #[test]
    fn legacy_and_modern_engines_differ_only_in_the_deleted_flag() {
        let cols = vec![
            Column::new("id", ColumnType::Int64, false),
            Column::new("at", ColumnType::DateTime { fsp: 3 }, true),
        ];
        let s = TableSchema::new(TableId::new("d", "t"), cols, &["id"], 1).unwrap();
        assert_eq!(
            local_table("t", &s, false),
            "CREATE TABLE IF NOT EXISTS `t` (`id` Int64, `at` Nullable(Int64), _version UInt64, \
             _is_deleted UInt8) ENGINE = ReplacingMergeTree(_version) ORDER BY (`id`)"
        );
        assert!(local_table("t", &s, true).contains(
            "`at` Nullable(DateTime64(6)), _version UInt64, _is_deleted UInt8) ENGINE = \
             ReplacingMergeTree(_version, _is_deleted)"
        ));
    }
}
