//! Binlog events mysql_common does not decode: MariaDB's GTID, GTID_LIST and
//! the fake ROTATE's file name; plus the event type codes the reader uses.

use mysql_common::binlog::events::BinlogEventHeader;
use tributary_core::{Error, ErrorKind, MariaDbGtid, Result};

pub(crate) mod kind {
    pub const QUERY: u8 = 2;
    pub const ROTATE: u8 = 4;
    pub const XID: u8 = 16;
    pub const TABLE_MAP: u8 = 19;
    pub const WRITE_ROWS_V1: u8 = 23;
    pub const UPDATE_ROWS_V1: u8 = 24;
    pub const DELETE_ROWS_V1: u8 = 25;
    pub const HEARTBEAT: u8 = 27;
    pub const WRITE_ROWS: u8 = 30;
    pub const UPDATE_ROWS: u8 = 31;
    pub const DELETE_ROWS: u8 = 32;
    pub const MYSQL_GTID: u8 = 33;
    pub const MARIADB_GTID: u8 = 162;
    pub const MARIADB_GTID_LIST: u8 = 163;
    pub const INCIDENT: u8 = 26;
    pub const MARIADB_QUERY_COMPRESSED: u8 = 165;
    /// MariaDB's compressed row events (`log_bin_compress`), V1 and V2.
    pub const MARIADB_ROWS_COMPRESSED: std::ops::RangeInclusive<u8> = 166..=171;
    pub const MYSQL_PARTIAL_UPDATE_ROWS: u8 = 39;
    pub const MYSQL_TRANSACTION_PAYLOAD: u8 = 40;
    /// Events that carry no row data and move nothing the reader tracks:
    /// STOP, INTVAR, RAND, USER_VAR, FORMAT_DESCRIPTION, IGNORABLE,
    /// ROWS_QUERY, ANONYMOUS_GTID, PREVIOUS_GTIDS, TRANSACTION_CONTEXT,
    /// VIEW_CHANGE, HEARTBEAT_V2, and MariaDB's ANNOTATE_ROWS,
    /// BINLOG_CHECKPOINT, START_ENCRYPTION.
    pub const WITHOUT_ROWS: [u8; 15] =
        [3, 5, 13, 14, 15, 28, 29, 34, 35, 36, 37, 41, 160, 161, 164];
}

/// The table id in a row event's post-header (6 bytes; compressed row
/// events keep it uncompressed).
pub(crate) fn rows_table_id(body: &[u8]) -> Option<u64> {
    let b = body.get(..6)?;
    let mut id = [0u8; 8];
    id[..6].copy_from_slice(b);
    Some(u64::from_le_bytes(id))
}

fn short(what: &str) -> Error {
    Error::new(ErrorKind::InvalidData, format!("{what} event is too short"))
}

fn u32_le(b: &[u8]) -> u32 {
    u32::from_le_bytes(b[..4].try_into().unwrap())
}

fn u64_le(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().unwrap())
}

/// MariaDB GTID event body: seq (u64), domain (u32), flags (u8), …
/// Returns the GTID and whether it is standalone (no BEGIN/COMMIT follows:
/// the transaction is the single next event, e.g. DDL).
pub(crate) fn mariadb_gtid(body: &[u8], server_id: u32) -> Result<(MariaDbGtid, bool)> {
    if body.len() < 13 {
        return Err(short("GTID"));
    }
    const FL_STANDALONE: u8 = 1;
    let gtid = MariaDbGtid {
        domain: u32_le(&body[8..]),
        server_id,
        seq: u64_le(body),
    };
    Ok((gtid, body[12] & FL_STANDALONE != 0))
}

/// MariaDB GTID_LIST body: count (low 28 bits of a u32), then per entry
/// domain (u32), server id (u32), seq (u64).
pub(crate) fn mariadb_gtid_list(body: &[u8]) -> Result<Vec<MariaDbGtid>> {
    if body.len() < 4 {
        return Err(short("GTID_LIST"));
    }
    let count = (u32_le(body) & 0x0fff_ffff) as usize;
    let entries = &body[4..];
    if entries.len() < count * 16 {
        return Err(short("GTID_LIST"));
    }
    Ok(entries
        .chunks_exact(16)
        .take(count)
        .map(|e| MariaDbGtid {
            domain: u32_le(e),
            server_id: u32_le(&e[4..]),
            seq: u64_le(&e[8..]),
        })
        .collect())
}

/// MySQL GTID event body: flags (u8), server uuid (16 bytes), gno (i64).
pub(crate) fn mysql_gtid(body: &[u8]) -> Result<(String, u64)> {
    if body.len() < 25 {
        return Err(short("GTID"));
    }
    let u = &body[1..17];
    let hex =
        |r: std::ops::Range<usize>| u[r].iter().map(|b| format!("{b:02x}")).collect::<String>();
    let uuid = format!(
        "{}-{}-{}-{}-{}",
        hex(0..4),
        hex(4..6),
        hex(6..8),
        hex(8..10),
        hex(10..16)
    );
    Ok((uuid, u64_le(&body[17..])))
}

/// The target (file, position) of a ROTATE event.
///
/// The first, fake ROTATE of a dump comes before the format description, so
/// mysql_async cannot know it carries a CRC32 and leaves the 4 checksum bytes
/// at the end of the file name (mysql_async #189). They are dropped only when
/// they are the event's CRC32: trimming "non-digits" once turned
/// `mysql-bin.000105` into `mysql-bin.0001051` (its CRC began with `1`), which
/// put the reader's cursor past every snapshot chunk.
pub(crate) fn rotate(header: &BinlogEventHeader, body: &[u8]) -> Result<(String, u64)> {
    if body.len() < 8 {
        return Err(short("ROTATE"));
    }
    let mut name = &body[8..];
    if body.len() >= 12 {
        let (data, crc) = body.split_at(body.len() - 4);
        if crc32(header, data) == u32_le(crc) {
            name = &data[8..];
        }
    }
    let pos = u64::from_le_bytes(body[..8].try_into().unwrap());
    Ok((String::from_utf8_lossy(name).into_owned(), pos))
}

/// CRC32 of an event as the server computes it: header bytes, then body.
fn crc32(header: &BinlogEventHeader, body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&header.timestamp().to_le_bytes());
    h.update(&[header.event_type_raw()]);
    h.update(&header.server_id().to_le_bytes());
    h.update(&header.event_size().to_le_bytes());
    h.update(&header.log_pos().to_le_bytes());
    h.update(&header.flags_raw().to_le_bytes());
    h.update(body);
    h.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gtid_events_decode() {
        let mut body = 42u64.to_le_bytes().to_vec();
        body.extend(7u32.to_le_bytes());
        body.push(1);
        let (g, standalone) = mariadb_gtid(&body, 3).unwrap();
        assert_eq!(g.to_string(), "7-3-42");
        assert!(standalone);
        let mut list = 2u32.to_le_bytes().to_vec();
        for (d, s, n) in [(0u32, 1u32, 100u64), (5, 2, 9)] {
            list.extend(d.to_le_bytes());
            list.extend(s.to_le_bytes());
            list.extend(n.to_le_bytes());
        }
        let gs = mariadb_gtid_list(&list).unwrap();
        assert_eq!(
            gs.iter().map(|g| g.to_string()).collect::<Vec<_>>(),
            ["0-1-100", "5-2-9"]
        );
        assert!(mariadb_gtid_list(&list[..20]).is_err());
        let mut my = vec![0u8];
        my.extend((0..16).collect::<Vec<u8>>());
        my.extend(77u64.to_le_bytes());
        let (uuid, gno) = mysql_gtid(&my).unwrap();
        assert_eq!(
            (uuid.as_str(), gno),
            ("00010203-0405-0607-0809-0a0b0c0d0e0f", 77)
        );
    }

    fn fake_rotate(file: &str, pos: u64, with_crc: bool) -> (BinlogEventHeader, Vec<u8>) {
        let mut body = pos.to_le_bytes().to_vec();
        body.extend(file.as_bytes());
        let size = 19 + body.len() as u32 + 4;
        let header = BinlogEventHeader::new(
            0,
            mysql_common::binlog::consts::EventType::ROTATE_EVENT,
            1,
            size,
            0,
            mysql_common::binlog::consts::EventFlags::LOG_EVENT_ARTIFICIAL_F,
        );
        if with_crc {
            let crc = crc32(&header, &body);
            body.extend(crc.to_le_bytes());
        }
        (header, body)
    }

    #[test]
    fn rotate_drops_only_a_real_checksum() {
        // A position whose checksum starts with an ASCII digit: the case a
        // "trim after the digits" rule got wrong.
        let (header, body) = (4..10_000)
            .map(|pos| fake_rotate("mysql-bin.000105", pos, true))
            .find(|(_, b)| b[b.len() - 4].is_ascii_digit())
            .expect("some checksum starts with a digit");
        let pos = u64::from_le_bytes(body[..8].try_into().unwrap());
        assert_eq!(
            rotate(&header, &body).unwrap(),
            ("mysql-bin.000105".to_string(), pos)
        );
        let (header, body) = fake_rotate("mysql-bin.000012", 4, false);
        assert_eq!(
            rotate(&header, &body).unwrap(),
            ("mysql-bin.000012".to_string(), 4)
        );
        let (header, _) = fake_rotate("x", 4, false);
        assert!(rotate(&header, &[1, 2, 3]).is_err());
    }
}
