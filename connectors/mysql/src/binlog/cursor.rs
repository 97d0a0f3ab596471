//! The reader's place in the binlog and the one rule that moves it, shared
//! by streaming (`BinlogReader`) and the start-time scan
//! (`server::position_at_time`): [`Cursor::classify`] says what an event is
//! for the position, [`Cursor::apply`] moves the cursor — ROTATE names the
//! file; GTID events (and a `BEGIN` query) open a transaction; XID, `COMMIT`
//! and a statement outside a transaction (DDL) close one and move the
//! position to the event's end; any other event outside a transaction moves
//! it too, so a checkpoint never points inside a transaction.

use mysql_async::binlog::events::{Event, EventData};
use tributary_core::{
    BinlogFilePos, Error, ErrorKind, MariaDbGtid, MariaDbGtidList, MySqlGtidSet, Result,
    SourcePosition,
};

use super::events::{self, kind};
use crate::conn::Flavor;

/// The reader's place in the binlog and the GTID state that goes with it.
#[derive(Debug, Clone, Default)]
pub(super) struct Cursor {
    pub(super) file: String,
    pub(super) pos: u64,
    pub(super) mariadb: MariaDbGtidList,
    pub(super) mysql: MySqlGtidSet,
    /// Inside a transaction: the position stays at its start.
    pub(super) in_txn: bool,
    /// The open transaction is a `BEGIN`…`COMMIT` one (a MariaDB GTID
    /// without the standalone flag, or a `BEGIN` query): a QUERY inside it
    /// is one of its statements. Otherwise (a standalone GTID, or a MySQL
    /// GTID not followed by `BEGIN`) the next QUERY is DDL, a transaction
    /// of its own.
    pub(super) explicit_txn: bool,
}

/// What one event is, for the position.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Step {
    Rotate {
        file: String,
        pos: u64,
    },
    Heartbeat,
    GtidList(Vec<MariaDbGtid>),
    /// A transaction opens: a MariaDB or MySQL GTID event, or `BEGIN`.
    Begin(Option<Gtid>),
    /// `BEGIN` after the GTID event that opened the transaction.
    ExplicitBegin,
    /// XID or `COMMIT`.
    Commit,
    /// A statement outside `BEGIN`…`COMMIT` (DDL): a transaction of its own.
    Statement,
    /// A statement inside a transaction (`SAVEPOINT`, or DML logged as a
    /// statement): the transaction goes on.
    TxnStatement,
    /// A table map or row event.
    Rows(u8),
    Other,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Gtid {
    /// With the standalone flag: no `BEGIN`…`COMMIT` follows (DDL).
    MariaDb(MariaDbGtid, bool),
    MySql(String, u64),
}

impl Cursor {
    pub(super) fn at(position: Option<&SourcePosition>) -> Cursor {
        let mut c = Cursor::default();
        if let Some(p) = position {
            if let Some(fp) = p.file_pos() {
                c.file = fp.file.clone();
                c.pos = fp.pos;
            }
            match p {
                SourcePosition::MariaDbGtid { gtid_list, .. } => c.mariadb = gtid_list.clone(),
                SourcePosition::MySqlGtid { gtid_set, .. } => c.mysql = gtid_set.clone(),
                SourcePosition::FilePos(_) => {}
            }
        }
        c
    }

    pub(super) fn file_pos(&self) -> Option<BinlogFilePos> {
        (!self.file.is_empty()).then(|| BinlogFilePos::new(self.file.clone(), self.pos))
    }

    /// The position of the cursor, in the server flavor's form.
    pub(super) fn position(&self, flavor: Flavor) -> SourcePosition {
        let file_pos = BinlogFilePos::new(self.file.clone(), self.pos);
        match flavor {
            Flavor::MariaDb if !self.mariadb.is_empty() => SourcePosition::MariaDbGtid {
                gtid_list: self.mariadb.clone(),
                file_pos: Some(file_pos),
            },
            Flavor::MySql if !self.mysql.is_empty() => SourcePosition::MySqlGtid {
                gtid_set: self.mysql.clone(),
                file_pos: Some(file_pos),
            },
            _ => SourcePosition::FilePos(file_pos),
        }
    }

    /// What `ev` is for the position (decoding what the rule needs).
    pub(super) fn classify(&self, ev: &Event) -> Result<Step> {
        let header = ev.header();
        Ok(match header.event_type_raw() {
            kind::ROTATE => {
                let (file, pos) = events::rotate(&header, ev.data())?;
                Step::Rotate { file, pos }
            }
            kind::HEARTBEAT => Step::Heartbeat,
            kind::MARIADB_GTID_LIST => Step::GtidList(events::mariadb_gtid_list(ev.data())?),
            kind::MARIADB_GTID => {
                let (gtid, standalone) = events::mariadb_gtid(ev.data(), header.server_id())?;
                Step::Begin(Some(Gtid::MariaDb(gtid, standalone)))
            }
            kind::MYSQL_GTID => {
                let (uuid, gno) = events::mysql_gtid(ev.data())?;
                Step::Begin(Some(Gtid::MySql(uuid, gno)))
            }
            kind::XID => Step::Commit,
            kind::QUERY => {
                let Ok(Some(EventData::QueryEvent(q))) = ev.read_data() else {
                    return Err(Error::new(ErrorKind::InvalidData, "unreadable QUERY event"));
                };
                let sql = q.query();
                let sql = sql.trim();
                if sql.eq_ignore_ascii_case("BEGIN") {
                    if self.in_txn {
                        Step::ExplicitBegin
                    } else {
                        Step::Begin(None)
                    }
                } else if sql.eq_ignore_ascii_case("COMMIT")
                    || (self.in_txn && sql.eq_ignore_ascii_case("ROLLBACK"))
                {
                    Step::Commit
                } else if self.in_txn && self.explicit_txn {
                    Step::TxnStatement
                } else {
                    Step::Statement
                }
            }
            code @ (kind::TABLE_MAP
            | kind::WRITE_ROWS
            | kind::WRITE_ROWS_V1
            | kind::UPDATE_ROWS
            | kind::UPDATE_ROWS_V1
            | kind::DELETE_ROWS
            | kind::DELETE_ROWS_V1) => Step::Rows(code),
            _ => Step::Other,
        })
    }

    /// Moves the cursor past an event classified as `step` that ends at
    /// `end_pos` (0: unknown).
    pub(super) fn apply(&mut self, step: &Step, end_pos: u64) {
        match step {
            Step::Rotate { file, pos } => {
                (self.file, self.pos) = (file.clone(), *pos);
                return;
            }
            Step::GtidList(list) => list.iter().for_each(|g| self.mariadb.update(*g)),
            Step::Begin(gtid) => {
                self.in_txn = true;
                self.explicit_txn = match gtid {
                    Some(Gtid::MariaDb(g, standalone)) => {
                        self.mariadb.update(*g);
                        !standalone
                    }
                    Some(Gtid::MySql(uuid, gno)) => {
                        self.mysql.add(uuid, *gno);
                        false
                    }
                    None => true,
                };
            }
            Step::ExplicitBegin => self.explicit_txn = true,
            Step::Commit | Step::Statement => (self.in_txn, self.explicit_txn) = (false, false),
            Step::Heartbeat | Step::Rows(_) | Step::TxnStatement | Step::Other => {}
        }
        if !self.in_txn && end_pos > 0 {
            self.pos = end_pos;
        }
    }
}
