//! Just enough DDL parsing to know what a QUERY event did to which tables.
//! Row decoding never depends on it (table maps carry the schema); it names
//! drops, renames and truncates, which no later table map reports.

use tributary_core::TableId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ddl {
    Create(TableId),
    Alter(TableId),
    Drop(Vec<TableId>),
    Truncate(TableId),
    /// (from, to) pairs.
    Rename(Vec<(TableId, TableId)>),
    /// DDL that removes or moves rows without row events (`DROP`,
    /// `TRUNCATE` or `EXCHANGE PARTITION`): which table, and what it did.
    RowsRemoved(TableId, String),
    /// `DROP DATABASE`/`DROP SCHEMA`: every table of it goes.
    DropDatabase(String),
    /// DML logged as a statement: every name before its row source or
    /// condition that could be a table it changes (the caller keeps the
    /// ones it reads; over-inclusive on purpose).
    Dml(Vec<TableId>),
    /// Transaction control (BEGIN/COMMIT) or a statement that changes no table.
    Other,
}

/// Splits SQL into words and identifiers (backquotes removed, `db.table`
/// kept together, case kept), skipping comments.
fn tokens(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = sql.chars().peekable();
    let mut cur = String::new();
    let flush = |cur: &mut String, out: &mut Vec<String>| {
        if !cur.is_empty() {
            out.push(std::mem::take(cur));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '`' => {
                for q in chars.by_ref() {
                    if q == '`' {
                        break;
                    }
                    cur.push(q);
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                flush(&mut cur, &mut out);
                let mut prev = ' ';
                for q in chars.by_ref() {
                    if prev == '*' && q == '/' {
                        break;
                    }
                    prev = q;
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                flush(&mut cur, &mut out);
                for q in chars.by_ref() {
                    if q == '\n' {
                        break;
                    }
                }
            }
            c if c.is_whitespace() || c == ',' || c == ';' || c == '(' => {
                flush(&mut cur, &mut out);
                if c == '(' {
                    break; // column definitions follow; names are all before
                }
            }
            c => cur.push(c),
        }
    }
    flush(&mut cur, &mut out);
    out
}

fn table(name: &str, default_db: &str) -> TableId {
    match name.split_once('.') {
        Some((db, t)) => TableId::new(db, t),
        None => TableId::new(default_db, name),
    }
}

/// Classifies one statement; `default_db` is the QUERY event's schema.
pub(crate) fn classify(sql: &str, default_db: &str) -> Ddl {
    let orig = tokens(sql);
    // Keywords match case-insensitively; names keep their case (MySQL table
    // names are case-sensitive on Linux).
    let lower: Vec<String> = orig.iter().map(|w| w.to_ascii_lowercase()).collect();
    let words: Vec<&str> = lower.iter().map(String::as_str).collect();
    let skip =
        |w: &[&str], noise: &[&str]| w.iter().position(|x| !noise.contains(x)).unwrap_or(w.len());
    // The original spelling of `slice[k]`, where `slice` is a tail of `words`.
    let name = |slice: &[&str], k: usize| table(&orig[words.len() - slice.len() + k], default_db);
    match words.as_slice() {
        ["create", rest @ ..] => {
            let i = skip(rest, &["or", "replace", "temporary"]);
            match rest.get(i..) {
                Some(["table", more @ ..]) => {
                    let j = skip(more, &["if", "not", "exists"]);
                    if j < more.len() {
                        Ddl::Create(name(more, j))
                    } else {
                        Ddl::Other
                    }
                }
                _ => Ddl::Other,
            }
        }
        ["alter", rest @ ..] => {
            let i = skip(rest, &["online", "ignore"]);
            match rest.get(i..) {
                Some(["table", more @ ..]) => {
                    let j = skip(more, &["if", "exists"]);
                    if j < more.len() {
                        alter(name(more, j), &more[j + 1..], |k| name(more, j + 1 + k))
                    } else {
                        Ddl::Other
                    }
                }
                _ => Ddl::Other,
            }
        }
        ["drop", "database" | "schema", rest @ ..] => {
            let j = skip(rest, &["if", "exists"]);
            match rest.get(j) {
                Some(_) => Ddl::DropDatabase(orig[words.len() - rest.len() + j].clone()),
                None => Ddl::Other,
            }
        }
        ["drop", rest @ ..] => {
            let i = skip(rest, &["temporary"]);
            match rest.get(i..) {
                Some(["table", more @ ..]) => {
                    let j = skip(more, &["if", "exists"]);
                    let n = more[j..]
                        .iter()
                        .take_while(|w| !matches!(**w, "restrict" | "cascade" | "wait" | "nowait"))
                        .count();
                    Ddl::Drop((j..j + n).map(|k| name(more, k)).collect())
                }
                _ => Ddl::Other,
            }
        }
        ["truncate", "table", rest @ ..] | ["truncate", rest @ ..] if !rest.is_empty() => {
            Ddl::Truncate(name(rest, 0))
        }
        ["rename", "table", rest @ ..] => {
            // "a TO b, c TO d": names alternate around the TO keywords.
            let names: Vec<TableId> = (0..rest.len())
                .filter(|&k| rest[k] != "to")
                .map(|k| name(rest, k))
                .collect();
            Ddl::Rename(
                names
                    .chunks_exact(2)
                    .map(|p| (p[0].clone(), p[1].clone()))
                    .collect(),
            )
        }
        [verb, rest @ ..] if DML_VERBS.contains(verb) => {
            let n = rest.iter().take_while(|w| !DML_STOP.contains(w)).count();
            let names = (0..n)
                .filter(|&k| !DML_NOISE.contains(&rest[k]))
                .map(|k| name(rest, k))
                .collect();
            Ddl::Dml(names)
        }
        _ => Ddl::Other,
    }
}

/// What `ALTER TABLE t <clauses>` does: a rename, a partition operation
/// that removes or moves rows, or another change (reported with the next
/// table map). `name(k)` is `clauses[k]` as a table name.
fn alter(table: TableId, clauses: &[&str], name: impl Fn(usize) -> TableId) -> Ddl {
    for (k, pair) in clauses.windows(2).enumerate() {
        if let [op @ ("drop" | "truncate" | "exchange"), "partition"] = pair {
            return Ddl::RowsRemoved(table, format!("{} partition", op.to_ascii_uppercase()));
        }
        if pair[0] == "rename" && !matches!(pair[1], "column" | "index" | "key" | "constraint") {
            let to = if matches!(pair[1], "to" | "as") {
                k + 2
            } else {
                k + 1
            };
            if to < clauses.len() {
                return Ddl::Rename(vec![(table, name(to))]);
            }
        }
    }
    Ddl::Alter(table)
}

const DML_VERBS: [&str; 5] = ["insert", "replace", "update", "delete", "load"];
/// Words after which a DML statement names no more tables it changes.
const DML_STOP: [&str; 6] = ["select", "values", "value", "set", "where", "using"];
const DML_NOISE: [&str; 14] = [
    "into",
    "from",
    "low_priority",
    "delayed",
    "high_priority",
    "ignore",
    "quick",
    "join",
    "inner",
    "left",
    "right",
    "on",
    "data",
    "table",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn t(db: &str, name: &str) -> TableId {
        TableId::new(db, name)
    }

    #[test]
    fn partition_ddl_renames_by_alter_and_dropped_databases_are_recognized() {
        assert_eq!(
            classify("ALTER TABLE t DROP PARTITION p1, p2", "s"),
            Ddl::RowsRemoved(t("s", "t"), "DROP partition".into())
        );
        assert_eq!(
            classify("alter table x.t truncate partition all", "s"),
            Ddl::RowsRemoved(t("x", "t"), "TRUNCATE partition".into())
        );
        assert_eq!(
            classify("ALTER TABLE t EXCHANGE PARTITION p WITH TABLE t2", "s"),
            Ddl::RowsRemoved(t("s", "t"), "EXCHANGE partition".into())
        );
        assert_eq!(
            classify("ALTER TABLE a RENAME TO b.c", "s"),
            Ddl::Rename(vec![(t("s", "a"), t("b", "c"))])
        );
        assert_eq!(
            classify("ALTER TABLE a RENAME b", "s"),
            Ddl::Rename(vec![(t("s", "a"), t("s", "b"))])
        );
        assert_eq!(
            classify("ALTER TABLE a RENAME COLUMN x TO y", "s"),
            Ddl::Alter(t("s", "a"))
        );
        assert_eq!(
            classify(
                "ALTER TABLE a ADD PARTITION (PARTITION p3 VALUES LESS THAN (30))",
                "s"
            ),
            Ddl::Alter(t("s", "a"))
        );
        assert_eq!(
            classify("DROP DATABASE IF EXISTS `Shop`", "s"),
            Ddl::DropDatabase("Shop".into())
        );
    }

    #[test]
    fn statement_logged_dml_names_the_tables_it_may_change() {
        assert_eq!(
            classify("INSERT INTO `o`(id, v) VALUES (1, 2)", "s"),
            Ddl::Dml(vec![t("s", "o")])
        );
        assert_eq!(
            classify("insert low_priority ignore into x.o select * from s.p", "s"),
            Ddl::Dml(vec![t("x", "o")])
        );
        assert_eq!(
            classify("UPDATE o SET v = v + 1 WHERE id < 10", "s"),
            Ddl::Dml(vec![t("s", "o")])
        );
        assert_eq!(
            classify("DELETE FROM s2.o WHERE id = 1", "s"),
            Ddl::Dml(vec![t("s2", "o")])
        );
        assert_eq!(
            classify(
                "delete a, b from a join b on a.id = b.id where a.v = 1",
                "s"
            ),
            Ddl::Dml(vec![
                t("s", "a"),
                t("s", "b"),
                t("s", "a"),
                t("s", "b"),
                t("a", "id"),
                t("s", "="),
                t("b", "id")
            ])
        );
        assert_eq!(classify("SAVEPOINT sp1", "s"), Ddl::Other);
    }

    #[test]
    fn statements_are_classified_with_their_tables() {
        assert_eq!(
            classify("CREATE TABLE IF NOT EXISTS `a`(id int)", "s"),
            Ddl::Create(t("s", "a"))
        );
        assert_eq!(
            classify("create table x.`My Tab` (id int)", "s"),
            Ddl::Create(t("x", "My Tab"))
        );
        assert_eq!(
            classify("Create Table Orders(id int)", "s"),
            Ddl::Create(t("s", "Orders"))
        );
        assert_eq!(
            classify("/* hint */ ALTER TABLE s2.t ADD COLUMN c INT", "s"),
            Ddl::Alter(t("s2", "t"))
        );
        assert_eq!(
            classify(
                "DROP TABLE IF EXISTS a, `b`.c /* generated by server */",
                "s"
            ),
            Ddl::Drop(vec![t("s", "a"), t("b", "c")])
        );
        assert_eq!(
            classify("TRUNCATE TABLE t", "s"),
            Ddl::Truncate(t("s", "t"))
        );
        assert_eq!(classify("truncate t2", "s"), Ddl::Truncate(t("s", "t2")));
        assert_eq!(
            classify("RENAME TABLE a TO b, x.c TO x.d", "s"),
            Ddl::Rename(vec![(t("s", "a"), t("s", "b")), (t("x", "c"), t("x", "d"))])
        );
        assert_eq!(classify("BEGIN", "s"), Ddl::Other);
        assert_eq!(classify("CREATE DATABASE d", "s"), Ddl::Other);
    }
}
