//! What the binlog reader asks the server, outside the dump stream: the
//! current end of the binlog, the GTID state at a file position, the dump
//! request itself, the scan for a start time, and the binlogs it still has.

use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn};
use tributary_core::{
    BinlogFilePos, Error, ErrorKind, MariaDbGtidList, MySqlGtidSet, Result, SourcePosition,
};

use super::cursor::{Cursor, Step};
use crate::config::MySqlSourceConfig;
use crate::conn::{Flavor, connect, map_err};

/// The current end of the binlog, as a position of the server's flavor.
pub(super) async fn current_position(
    conn: &mut Conn,
    config: &MySqlSourceConfig,
    flavor: Flavor,
) -> Result<SourcePosition> {
    let row: Option<mysql_async::Row> = conn
        .query_first("SHOW MASTER STATUS")
        .await
        .map_err(|e| map_err("SHOW MASTER STATUS", e))?;
    let row = row.ok_or_else(|| {
        Error::invalid_config("binary logging is off on the server: start it with --log-bin (or use a snapshot-only source)")
    })?;
    let file: String = row.get(0).unwrap_or_default();
    let pos: u64 = row.get(1).unwrap_or(4);
    let at = BinlogFilePos::new(file, pos);
    match flavor {
        Flavor::MariaDb => mariadb_position_at(conn, config, at).await,
        Flavor::MySql => {
            // MySQL reports the file position and the GTID set in one row.
            let set: String = row.get(4).unwrap_or_default();
            let gtid_set: MySqlGtidSet = set.replace('\n', "").parse()?;
            Ok(if gtid_set.is_empty() {
                SourcePosition::FilePos(at)
            } else {
                SourcePosition::MySqlGtid {
                    gtid_set,
                    file_pos: Some(at),
                }
            })
        }
    }
}

/// The MariaDB position at `at` with the GTID state of exactly that point
/// (`BINLOG_GTID_POS`): reading `@@gtid_binlog_pos` separately could include
/// a transaction committed after `at`, and a GTID resume would then skip it.
/// `BINLOG_GTID_POS` reads the file with the server's `max_allowed_packet`
/// and answers NULL past an event larger than that (an UPDATE of a big
/// BLOB logs two images): then the file is scanned up to `at` over the dump
/// protocol instead, which takes events up to 1 GiB.
pub(crate) async fn mariadb_position_at(
    conn: &mut Conn,
    config: &MySqlSourceConfig,
    at: BinlogFilePos,
) -> Result<SourcePosition> {
    let gtid: Option<Option<String>> = conn
        .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (&at.file, at.pos))
        .await
        .map_err(|e| map_err("BINLOG_GTID_POS", e))?;
    let gtid_list: MariaDbGtidList = match gtid.flatten() {
        Some(g) => g.parse()?,
        None => gtid_state_by_scan(config, &at).await?,
    };
    Ok(if gtid_list.is_empty() {
        SourcePosition::FilePos(at)
    } else {
        SourcePosition::MariaDbGtid {
            gtid_list,
            file_pos: Some(at),
        }
    })
}

/// The replica id of the short non-blocking scans (start time, GTID state):
/// 0, like `mariadb-binlog --read-from-remote-server`, so a scan never
/// replaces a running dump of the same `server_id` (the server drops the
/// older connection of an id).
const SCAN_SERVER_ID: u32 = 0;

/// Starts the dump on `conn` at `position` (None: the oldest binlog).
pub(super) async fn dump(
    mut conn: Conn,
    config: &MySqlSourceConfig,
    flavor: Flavor,
    position: Option<&SourcePosition>,
) -> Result<BinlogStream> {
    let heartbeat_ns = config
        .heartbeat_interval
        .as_nanos()
        .min(u128::from(u32::MAX) * 1_000_000_000);
    let mut setup = vec![format!("SET @master_heartbeat_period = {heartbeat_ns}")];
    let mut file = String::new();
    let mut pos = 4u64;
    let mut mysql_gtids = None;
    match (flavor, position) {
        (Flavor::MariaDb, Some(SourcePosition::MariaDbGtid { gtid_list, .. })) => {
            setup.push(format!("SET @slave_connect_state = '{gtid_list}'"));
            setup.push("SET @slave_gtid_strict_mode = 1".into());
            setup.push("SET @slave_gtid_ignore_duplicates = 0".into());
        }
        (Flavor::MySql, Some(SourcePosition::MySqlGtid { gtid_set, .. })) => {
            // COM_BINLOG_DUMP_GTID (untested: no MySQL server runs here).
            mysql_gtids = Some(mysql_sids(gtid_set)?);
        }
        (_, Some(SourcePosition::FilePos(fp))) => {
            file = fp.file.clone();
            pos = fp.pos;
        }
        (_, Some(other)) => {
            return Err(Error::invalid_config(format!(
                "position {other} does not fit a {flavor:?} server"
            )));
        }
        (_, None) => {}
    }
    if flavor == Flavor::MariaDb {
        // Without it MariaDB replaces GTID events with QUERY "BEGIN".
        setup.push("SET @mariadb_slave_capability = 4".into());
    }
    for sql in setup {
        conn.query_drop(&sql)
            .await
            .map_err(|e| map_err(format!("binlog setup: {sql}"), e))?;
    }
    let mut request = BinlogStreamRequest::new(config.server_id)
        .with_filename(file.as_bytes())
        .with_pos(pos);
    if let Some(sids) = mysql_gtids {
        request = request.with_gtid().with_gtid_set(sids);
    }
    conn.get_binlog_stream(request)
        .await
        .map_err(|e| map_err("cannot start the binlog dump", e))
}

/// The position of the first transaction whose binlog timestamp is at or
/// after `at_micros`: scans the binlogs from the oldest (a non-blocking dump
/// that ends at the current end). None later: the current end.
pub(super) async fn position_at_time(
    config: &MySqlSourceConfig,
    flavor: Flavor,
    at_micros: i64,
) -> Result<SourcePosition> {
    let mut stream = scan(config, flavor, "").await?;
    let mut cursor = Cursor::default();
    while let Some(ev) = stream.next().await {
        let ev = ev.map_err(|e| map_err("scanning the binlog for a start time", e))?;
        let header = ev.header();
        let step = cursor.classify(&ev)?;
        let at_or_after = i64::from(header.timestamp()) * 1_000_000 >= at_micros;
        if matches!(step, Step::Begin(_)) && at_or_after {
            break;
        }
        cursor.apply(&step, u64::from(header.log_pos()));
    }
    drop(stream);
    Ok(cursor.position(flavor))
}

/// A non-blocking dump from the start of `file` (empty: the oldest binlog)
/// to the current end, for a scan.
async fn scan(config: &MySqlSourceConfig, flavor: Flavor, file: &str) -> Result<BinlogStream> {
    let mut conn = crate::conn::connect_for_dump(config).await?;
    if flavor == Flavor::MariaDb {
        conn.query_drop("SET @mariadb_slave_capability = 4")
            .await
            .map_err(|e| map_err("binlog setup", e))?;
    }
    let request = BinlogStreamRequest::new(SCAN_SERVER_ID)
        .with_filename(file.as_bytes())
        .with_pos(4u64)
        .with_non_blocking();
    conn.get_binlog_stream(request)
        .await
        .map_err(|e| map_err("cannot start the binlog scan", e))
}

/// The MariaDB GTID state at `at`, from the binlog itself: the file's
/// GTID_LIST plus every transaction's GTID before `at.pos`.
async fn gtid_state_by_scan(
    config: &MySqlSourceConfig,
    at: &BinlogFilePos,
) -> Result<MariaDbGtidList> {
    let mut stream = scan(config, Flavor::MariaDb, &at.file).await?;
    let mut cursor = Cursor::at(Some(&SourcePosition::FilePos(at.clone())));
    while let Some(ev) = stream.next().await {
        let ev = ev.map_err(|e| map_err("scanning the binlog for its GTID state", e))?;
        let end = u64::from(ev.header().log_pos());
        if end == 0 {
            continue; // the dump's fake events (ROTATE) precede the file's own
        }
        if end > at.pos {
            break;
        }
        let step = cursor.classify(&ev)?;
        cursor.apply(&step, end);
        if end == at.pos {
            break;
        }
    }
    drop(stream);
    Ok(cursor.mariadb)
}

/// A MySQL GTID set in the dump command's form (intervals end-exclusive).
pub(super) fn mysql_sids(set: &MySqlGtidSet) -> Result<Vec<mysql_async::Sid<'static>>> {
    set.iter()
        .map(|(source, intervals)| {
            let hex: String = source.chars().filter(|c| *c != '-').collect();
            let uuid: Option<Vec<u8>> = (hex.len() == 32)
                .then(|| {
                    (0..16)
                        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
                        .collect()
                })
                .flatten();
            let uuid: [u8; 16] = uuid.and_then(|u| u.try_into().ok()).ok_or_else(|| {
                Error::new(
                    ErrorKind::Unsupported,
                    format!("GTID source {source:?}: tagged GTIDs cannot be resumed yet"),
                )
            })?;
            let intervals = intervals
                .iter()
                .map(|&(s, e)| mysql_async::GnoInterval::new(s, e + 1))
                .collect();
            Ok(mysql_async::Sid::new(uuid).with_intervals(intervals))
        })
        .collect()
}

/// "mysql-bin.000003 … mysql-bin.000007 (gtid 0-1-1…)" for PositionLost messages.
pub(super) async fn available_binlogs(config: &MySqlSourceConfig) -> Result<String> {
    let mut conn = connect(config).await?;
    let logs: Vec<(String, u64)> = conn
        .query("SHOW BINARY LOGS")
        .await
        .map_err(|e| map_err("SHOW BINARY LOGS", e))?;
    let range = match (logs.first(), logs.last()) {
        (Some(a), Some(b)) => format!("binlogs {} to {}", a.0, b.0),
        _ => "no binlogs".to_string(),
    };
    let gtid: Option<String> = conn
        .query_first("SELECT @@gtid_binlog_state")
        .await
        .ok()
        .flatten();
    Ok(match gtid {
        Some(g) if !g.is_empty() => format!("{range} (gtid_binlog_state {g})"),
        _ => range,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_gtid_sets_become_dump_sids_with_exclusive_ends() {
        let set: MySqlGtidSet = "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7"
            .parse()
            .unwrap();
        let sids = mysql_sids(&set).unwrap();
        assert_eq!(sids.len(), 1);
        assert_eq!(sids[0].uuid()[..2], [0x3e, 0x11]);
        let ivs: Vec<(u64, u64)> = sids[0]
            .intervals()
            .iter()
            .map(|i| (i.start(), i.end()))
            .collect();
        assert_eq!(ivs, [(1, 6), (7, 8)]);
        let tagged: MySqlGtidSet = "3e11fa47-71ca-11e1-9e33-c80aa9429562:etl:1-2"
            .parse()
            .unwrap();
        assert!(mysql_sids(&tagged).is_err());
    }

    /// A Latest start's GTID state and file position name the same point even
    /// while other sessions commit (a GTID resume would otherwise skip or
    /// repeat the transactions in between). Needs the dev MariaDB.
    #[tokio::test]
    async fn mariadb_current_position_is_consistent_under_concurrent_commits() {
        use mysql_async::Opts;
        let m = tributary_testkit::DevServices::load().mariadb();
        let opts = Opts::from_url(&m.url).unwrap();
        let db = tributary_testkit::unique_name("curpos");
        let config = MySqlSourceConfig::new(m.host.clone(), m.port, m.user.clone());
        let mut conn = Conn::new(opts.clone()).await.unwrap();
        conn.query_drop(format!("CREATE DATABASE {db}"))
            .await
            .unwrap();
        conn.query_drop(format!("CREATE TABLE {db}.t (id INT PRIMARY KEY)"))
            .await
            .unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = tokio::spawn({
            let (opts, db, stop) = (opts.clone(), db.clone(), stop.clone());
            async move {
                let mut w = Conn::new(opts).await.unwrap();
                let mut id = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    w.query_drop(format!("INSERT INTO {db}.t VALUES ({id})"))
                        .await
                        .unwrap();
                    id += 1;
                }
                id
            }
        });
        for i in 0..200 {
            let SourcePosition::MariaDbGtid {
                gtid_list,
                file_pos: Some(at),
            } = current_position(&mut conn, &config, Flavor::MariaDb)
                .await
                .unwrap()
            else {
                panic!("a GTID position with its file position");
            };
            // The server's own GTID state at that file position, asked for
            // after the fact: it cannot depend on later commits.
            let truth: Option<Option<String>> = conn
                .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (&at.file, at.pos))
                .await
                .unwrap();
            // NULL while another test's big event is in the file (see
            // `mariadb_position_at`): then the scan answered, checked below.
            let Some(truth) = truth.flatten() else {
                continue;
            };
            let truth: MariaDbGtidList = truth.parse().unwrap();
            assert_eq!(gtid_list, truth, "at {at:?}");
            // The fallback scan finds the server's own answer.
            if i % 40 == 0 {
                assert_eq!(
                    gtid_state_by_scan(&config, &at).await.unwrap(),
                    truth,
                    "scan at {at:?}"
                );
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(writer.await.unwrap() > 0, "the writer committed nothing");
        conn.query_drop(format!("DROP DATABASE {db}"))
            .await
            .unwrap();
    }
}
