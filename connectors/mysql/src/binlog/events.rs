//! Binlog events mysql_common does not decode: MariaDB's GTID, GTID_LIST and
//! the heartbeat's file name; plus the event type codes the reader uses.

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

/// A binlog file name from a ROTATE or HEARTBEAT body. The first (fake)
/// ROTATE of a dump may carry 4 checksum bytes after the name
/// (mysql_async #189): keep `base.digits` and drop anything after the digits.
pub(crate) fn file_name(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    match s.rfind('.') {
        Some(dot) => {
            let digits = s[dot + 1..].bytes().take_while(u8::is_ascii_digit).count();
            s[..dot + 1 + digits].to_string()
        }
        None => s.into_owned(),
    }
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

    #[test]
    fn file_names_lose_trailing_checksum_bytes() {
        assert_eq!(file_name(b"mysql-bin.000012"), "mysql-bin.000012");
        assert_eq!(
            file_name(b"mysql-bin.000012\x9a\x01\xff\x31"),
            "mysql-bin.000012"
        );
    }
}
