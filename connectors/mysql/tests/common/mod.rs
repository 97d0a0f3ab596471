//! Shared by the MariaDB tests: a table with every column type and the
//! values its rows must decode to, by binlog and by snapshot alike.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use tributary_core::{ChangeEvent, Checkpoint, Decimal, Source, SourceRecord, Value};
use tributary_mysql::MySqlSourceConfig;
use tributary_testkit::{DevServices, unique_name};

fn dec(s: &str) -> Value {
    Value::Decimal(s.parse::<Decimal>().unwrap())
}

fn micros(ymd: (i32, u32, u32), hms: (u32, u32, u32), us: u32) -> i64 {
    match Value::datetime(ymd, hms, us).unwrap() {
        Value::DateTime(m) => m,
        _ => unreachable!(),
    }
}

fn date(y: i32, m: u32, d: u32) -> Value {
    Value::date(y, m, d).unwrap()
}

pub const TYPES_DDL: &str = "
  id INT NOT NULL PRIMARY KEY,
  t TINYINT, tu TINYINT UNSIGNED, s SMALLINT, su SMALLINT UNSIGNED,
  m MEDIUMINT, mu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, b BIGINT, bu BIGINT UNSIGNED,
  f FLOAT, d DOUBLE, dec1 DECIMAL(10,2), dec2 DECIMAL(38,10), dec3 DECIMAL(65,30),
  c CHAR(10), vc VARCHAR(300), tx TEXT, bn BINARY(4), vb VARBINARY(10), bl BLOB,
  dt DATE, tm TIME, tm6 TIME(6), dtm DATETIME, dtm3 DATETIME(3), ts TIMESTAMP(6) NULL DEFAULT NULL,
  y YEAR, b1 BIT(1), b64 BIT(64), e ENUM('small','médium','🚀'), st SET('a','b','c'),
  j JSON, l1 VARCHAR(20) CHARACTER SET latin1";

pub fn max_row() -> (String, Vec<Value>) {
    let sql = "(1, 127, 255, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295,
        9223372036854775807, 18446744073709551615, 3.5, 1.7976931348623157e308, 99999999.99,
        9999999999999999999999999999.9999999999,
        -99999999999999999999999999999999999.999999999999999999999999999999,
        'héllo', REPEAT('x', 300), '😀 𝄞 text', 'ab', X'DEADBEEF', X'00FF',
        '9999-12-31', '838:59:59', '-838:59:59.999999', '9999-12-31 23:59:59', '1000-01-01 00:00:00.123',
        '2038-01-19 03:14:07.999999', 2155, b'1', b'1111111111111111111111111111111111111111111111111111111111111111',
        '🚀', 'c,a', '{\"k\": [1, 2.5, \"x\"]}', 'café')";
    let values = vec![
        Value::Int32(1),
        Value::Int8(127),
        Value::UInt8(255),
        Value::Int16(32767),
        Value::UInt16(65535),
        Value::Int32(8388607),
        Value::UInt32(16777215),
        Value::Int32(i32::MAX),
        Value::UInt32(u32::MAX),
        Value::Int64(i64::MAX),
        Value::UInt64(u64::MAX),
        Value::Float(3.5),
        Value::Double(1.7976931348623157e308),
        dec("99999999.99"),
        dec("9999999999999999999999999999.9999999999"),
        dec("-99999999999999999999999999999999999.999999999999999999999999999999"),
        Value::String("héllo".into()),
        Value::String("x".repeat(300)),
        Value::String("😀 𝄞 text".into()),
        Value::Bytes(b"ab\0\0".to_vec()),
        Value::Bytes(vec![0xDE, 0xAD, 0xBE, 0xEF]),
        Value::Bytes(vec![0x00, 0xFF]),
        date(9999, 12, 31),
        Value::Time((838 * 3600 + 59 * 60 + 59) * 1_000_000),
        Value::Time(-((838 * 3600 + 59 * 60 + 59) * 1_000_000 + 999_999)),
        Value::DateTime(micros((9999, 12, 31), (23, 59, 59), 0)),
        Value::DateTime(micros((1000, 1, 1), (0, 0, 0), 123_000)),
        Value::Timestamp(2_147_483_647_999_999),
        Value::Year(2155),
        Value::Bit(1),
        Value::Bit(u64::MAX),
        Value::Enum("🚀".into()),
        Value::Set("a,c".into()),
        Value::String("{\"k\": [1, 2.5, \"x\"]}".into()),
        Value::String("café".into()),
    ];
    (sql.into(), values)
}

pub fn min_row() -> (String, Vec<Value>) {
    let sql = "(2, -128, 0, -32768, 0, -8388608, 0, -2147483648, 0, -9223372036854775808, 0,
        -1.25, -2.5e-300, -99999999.99, -0.0000000001, 0.000000000000000000000000000001,
        '', '', '', '', '', '', '1000-01-01', '-838:59:59', '00:00:00.000001', '1000-01-01 00:00:00',
        '2024-02-29 12:34:56.789', '1970-01-01 00:00:01', 1901, b'0', b'0', 'small', '', 'null', '')";
    let values = vec![
        Value::Int32(2),
        Value::Int8(-128),
        Value::UInt8(0),
        Value::Int16(-32768),
        Value::UInt16(0),
        Value::Int32(-8388608),
        Value::UInt32(0),
        Value::Int32(i32::MIN),
        Value::UInt32(0),
        Value::Int64(i64::MIN),
        Value::UInt64(0),
        Value::Float(-1.25),
        Value::Double(-2.5e-300),
        dec("-99999999.99"),
        dec("-0.0000000001"),
        dec("0.000000000000000000000000000001"),
        Value::String(String::new()),
        Value::String(String::new()),
        Value::String(String::new()),
        Value::Bytes(vec![0, 0, 0, 0]),
        Value::Bytes(vec![]),
        Value::Bytes(vec![]),
        date(1000, 1, 1),
        Value::Time(-(838 * 3600 + 59 * 60 + 59) * 1_000_000),
        Value::Time(1),
        Value::DateTime(micros((1000, 1, 1), (0, 0, 0), 0)),
        Value::DateTime(micros((2024, 2, 29), (12, 34, 56), 789_000)),
        Value::Timestamp(1_000_000),
        Value::Year(1901),
        Value::Bit(0),
        Value::Bit(0),
        Value::Enum("small".into()),
        Value::Set(String::new()),
        Value::String("null".into()),
        Value::String(String::new()),
    ];
    (sql.into(), values)
}

pub struct Db {
    pub conn: Conn,
    pub name: String,
    pub config: MySqlSourceConfig,
}

impl Db {
    /// Runs one statement, failing the test on error.
    pub async fn sql(&mut self, sql: impl AsRef<str>) {
        self.conn.query_drop(sql.as_ref()).await.unwrap();
    }

    pub async fn drop(mut self) {
        let name = self.name.clone();
        self.sql(format!("DROP DATABASE {name}")).await;
    }
}

pub async fn database() -> Db {
    let m = DevServices::load().mariadb();
    let mut conn = Conn::new(Opts::from_url(&m.url).unwrap()).await.unwrap();
    let name = unique_name("binlog");
    conn.query_drop(format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    conn.query_drop("SET time_zone = '+00:00'").await.unwrap();
    let mut config = MySqlSourceConfig::new(m.host, m.port, m.user);
    config.tables.include = vec![format!("{name}.*")];
    config.heartbeat_interval = Duration::from_millis(200);
    config.server_id = 6000 + (std::process::id() % 1000);
    Db { conn, name, config }
}

/// Reads records until `done` says enough, failing after 30 s.
pub async fn read_until(
    reader: &mut impl Source,
    mut done: impl FnMut(&[SourceRecord]) -> bool,
) -> Vec<SourceRecord> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    while !done(&out) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "timed out; got {} records: {:#?}",
            out.len(),
            summary(&out)
        );
        match tokio::time::timeout(left, reader.next()).await {
            Ok(r) => out.push(r.unwrap().expect("binlog never ends")),
            Err(_) => panic!("timed out; got {:#?}", summary(&out)),
        }
    }
    out
}

pub fn summary(records: &[SourceRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| match r {
            SourceRecord::Changes(b) => format!("{} rows of {}", b.len(), b.schema().table),
            SourceRecord::SchemaChange(c) => format!("{:?} {}", c.kind, c.table),
            SourceRecord::Checkpoint(c) => format!(
                "checkpoint {:?}",
                c.position.as_ref().map(|p| p.to_string())
            ),
        })
        .collect()
}

pub fn events(records: &[SourceRecord]) -> Vec<ChangeEvent> {
    records
        .iter()
        .filter_map(|r| match r {
            SourceRecord::Changes(b) => Some(b.to_events()),
            _ => None,
        })
        .flatten()
        .collect()
}

pub fn count_events(records: &[SourceRecord]) -> usize {
    records
        .iter()
        .map(|r| {
            if let SourceRecord::Changes(b) = r {
                b.len()
            } else {
                0
            }
        })
        .sum()
}

pub fn last_checkpoint(records: &[SourceRecord]) -> Option<Checkpoint> {
    records.iter().rev().find_map(|r| match r {
        SourceRecord::Checkpoint(c) => Some(c.clone()),
        _ => None,
    })
}
