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
                        Ddl::Alter(name(more, j))
                    } else {
                        Ddl::Other
                    }
                }
                _ => Ddl::Other,
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
        _ => Ddl::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(db: &str, name: &str) -> TableId {
        TableId::new(db, name)
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
