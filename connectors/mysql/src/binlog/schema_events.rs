//! DDL seen in the stream: statements that name selected tables become
//! `SchemaChange` records at their position (drops, truncates, renames; a
//! create or alter is reported with the table's next table map, which
//! carries the new columns).

use std::sync::Arc;

use mysql_async::binlog::events::{Event, EventData};
use tributary_core::{
    Error, ErrorKind, Result, SchemaChange, SchemaChangeKind, SourceRecord, TableId, TableSchema,
};

use super::ddl::{self, Ddl};
use super::reader::BinlogReader;

impl BinlogReader {
    /// A statement outside a transaction (DDL): drops, truncates and
    /// renames of selected tables become schema-change records; creates and
    /// alters are remembered until the table's next table map. The caller
    /// then ends it as a transaction of its own.
    pub(super) fn statement(&mut self, ev: &Event, ts_micros: i64) -> Result<()> {
        let Ok(Some(EventData::QueryEvent(q))) = ev.read_data() else {
            return Err(Error::new(ErrorKind::InvalidData, "unreadable QUERY event"));
        };
        let sql = q.query();
        let schema = q.schema();
        match ddl::classify(&sql, &schema) {
            Ddl::Create(t) | Ddl::Alter(t) if self.filter.matches_id(&t) => {
                self.pending_ddl.insert(t, sql.to_string());
            }
            Ddl::Drop(ts) => {
                let ts: Vec<TableId> = ts
                    .into_iter()
                    .filter(|t| self.filter.matches_id(t))
                    .collect();
                for t in ts {
                    self.flush_table(&t)?;
                    let before = self.schemas.remove(&t).map(|s| (*s).clone());
                    self.schema_event(SchemaChangeKind::Drop, t, before, None, &sql, ts_micros);
                }
            }
            Ddl::Truncate(t) if self.filter.matches_id(&t) => {
                self.flush_table(&t)?;
                let s = self.schemas.get(&t).map(|s| (**s).clone());
                self.schema_event(SchemaChangeKind::Truncate, t, s.clone(), s, &sql, ts_micros);
            }
            Ddl::Rename(pairs) => {
                let pairs: Vec<(TableId, TableId)> = pairs
                    .into_iter()
                    .filter(|(from, to)| self.filter.matches_id(from) || self.filter.matches_id(to))
                    .collect();
                for (from, to) in pairs {
                    self.flush_table(&from)?;
                    let before = self.schemas.remove(&from).map(|s| (*s).clone());
                    let after = before.as_ref().map(|s| TableSchema {
                        table: to.clone(),
                        ..s.clone()
                    });
                    if let Some(a) = &after {
                        self.schemas.insert(to.clone(), Arc::new(a.clone()));
                    }
                    let kind = SchemaChangeKind::Rename { from };
                    self.schema_event(kind, to, before, after, &sql, ts_micros);
                }
            }
            Ddl::Dml(tables) => self.refuse_statement_dml(&tables, ev)?,
            Ddl::RowsRemoved(t, what) if self.filter.matches_id(&t) => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "{what} on {t} at {}: it removes or moves rows without row events, so \
                         the target cannot follow it. Fix: re-snapshot {t} (drop its target \
                         table and restart), or exclude the table",
                        self.position()
                    ),
                )
                .with_context("table", &t)
                .with_context("ddl", sql.to_string()));
            }
            Ddl::DropDatabase(db) => {
                let mut gone: Vec<TableId> = self
                    .schemas
                    .keys()
                    .chain(self.keys.keys())
                    .filter(|t| t.database == db && self.filter.matches_id(t))
                    .cloned()
                    .collect();
                gone.sort_by_key(|t| t.to_string());
                gone.dedup();
                for t in gone {
                    self.flush_table(&t)?;
                    let before = self.schemas.remove(&t).map(|s| (*s).clone());
                    self.schema_event(SchemaChangeKind::Drop, t, before, None, &sql, ts_micros);
                }
            }
            _ => {}
        }
        Ok(())
    }

    pub(super) fn schema_event(
        &mut self,
        kind: SchemaChangeKind,
        table: TableId,
        before: Option<TableSchema>,
        after: Option<TableSchema>,
        sql: &str,
        ts: i64,
    ) {
        let columns = match (&before, &after) {
            (Some(b), Some(a)) => b.diff(a),
            _ => Vec::new(),
        };
        self.out.push_back(SourceRecord::SchemaChange(SchemaChange {
            table,
            kind,
            before,
            after,
            columns,
            ddl: Some(sql.to_string()),
            position: Some(self.position()),
            commit_ts_micros: ts,
        }));
    }
}
