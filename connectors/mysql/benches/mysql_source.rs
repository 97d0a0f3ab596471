//! MySQL source throughput against peers measured in the same run, all over
//! the wire from the dev MariaDB (release build):
//! - binlog decode vs `mariadb-binlog -v` on the same binlog range;
//! - snapshot reads vs `mariadb --quick -e 'SELECT *'` on the same table.
//!
//! Run: `dev/services up mariadb && cargo bench -p tributary-mysql --bench mysql_source`.
//! ROWS (default 1_000_000) sets the row count; rows are 6 columns written by
//! 1000-row INSERTs.

use std::process::Command;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use tributary_core::{BinlogFilePos, Source, SourcePosition, SourceRecord};
use tributary_mysql::{BinlogReader, MySqlSource, MySqlSourceConfig, SnapshotMode, StartMode};
use tributary_testkit::{DevServices, unique_name};

async fn master_status(conn: &mut Conn) -> (String, u64) {
    let row: mysql_async::Row = conn
        .query_first("SHOW MASTER STATUS")
        .await
        .unwrap()
        .unwrap();
    (row.get(0).unwrap(), row.get(1).unwrap())
}

#[tokio::main]
async fn main() {
    let rows: usize = std::env::var("ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let m = DevServices::load().mariadb();
    let mut conn = Conn::new(Opts::from_url(&m.url).unwrap()).await.unwrap();
    let db = unique_name("bench");
    conn.query_drop(format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    conn.query_drop(format!(
        "CREATE TABLE {db}.t (id BIGINT PRIMARY KEY, a INT, b VARCHAR(32), c DECIMAL(12,2), d DOUBLE, e DATETIME(6))"
    ))
    .await
    .unwrap();
    conn.query_drop("FLUSH BINARY LOGS").await.unwrap();
    let (file, start) = master_status(&mut conn).await;
    for chunk in 0..rows.div_ceil(1000) {
        let values: Vec<String> = (chunk * 1000..((chunk + 1) * 1000).min(rows))
            .map(|i| {
                format!(
                    "({i},{},'name-{i:08}',{}.25,{}.5,'2024-01-02 03:04:05.{:06}')",
                    i % 1000,
                    i,
                    i,
                    i % 1_000_000
                )
            })
            .collect();
        conn.query_drop(format!("INSERT INTO {db}.t VALUES {}", values.join(",")))
            .await
            .unwrap();
    }
    let (end_file, end) = master_status(&mut conn).await;
    assert_eq!(
        end_file, file,
        "the binlog rotated during the load; lower ROWS"
    );

    // Tributary: decode into ChangeBatches until every row is out.
    let mut config = MySqlSourceConfig::new(m.host.clone(), m.port, m.user.clone());
    config.tables.include = vec![format!("{db}.*")];
    config.start = StartMode::Position {
        position: SourcePosition::FilePos(BinlogFilePos::new(file.clone(), start)),
    };
    let mut reader = BinlogReader::start(config, None).await.unwrap();
    let t = Instant::now();
    let mut seen = 0;
    while seen < rows {
        if let Some(SourceRecord::Changes(b)) = reader.next().await.unwrap() {
            seen += b.len();
        }
    }
    let ours = t.elapsed();

    // The peer: mariadb-binlog decoding rows to text, reading the same range remotely.
    let peer = |verbose: bool| -> Duration {
        let t = Instant::now();
        let mut cmd = Command::new("mariadb-binlog");
        cmd.args([
            "--read-from-remote-server",
            "-h",
            &m.host,
            "-P",
            &m.port.to_string(),
            "-u",
            &m.user,
        ])
        .arg(format!("--start-position={start}"))
        .arg(format!("--stop-position={end}"));
        if verbose {
            cmd.arg("-v");
        }
        let out = cmd
            .arg(&file)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(out.success());
        t.elapsed()
    };
    let verbose = peer(true);
    let raw = peer(false);
    let rate = |d: Duration| rows as f64 / d.as_secs_f64() / 1e6;
    println!("binlog decode, {rows} six-column rows in 1000-row inserts:");
    println!(
        "  tributary BinlogReader → ChangeBatch: {:.2}M rows/s",
        rate(ours)
    );
    println!(
        "  mariadb-binlog -v (peer):             {:.2}M rows/s",
        rate(verbose)
    );
    println!(
        "  mariadb-binlog raw (wire limit):      {:.2}M rows/s",
        rate(raw)
    );
    println!(
        "  ratio tributary / mariadb-binlog -v:  {:.2}",
        verbose.as_secs_f64() / ours.as_secs_f64()
    );

    // Snapshot: the whole table through MySqlSource, alone and with the stream.
    let snapshot = |mode: SnapshotMode| {
        let mut c = MySqlSourceConfig::new(m.host.clone(), m.port, m.user.clone());
        c.tables.include = vec![format!("{db}.*")];
        c.snapshot.mode = mode;
        c
    };
    let mut timings = Vec::new();
    for mode in [SnapshotMode::Only, SnapshotMode::Initial] {
        let mut source = MySqlSource::start(snapshot(mode), None).await.unwrap();
        let t = Instant::now();
        let mut seen = 0;
        while seen < rows {
            if let Some(SourceRecord::Changes(b)) = source.next().await.unwrap() {
                seen += b.len();
            }
        }
        timings.push(t.elapsed());
    }
    let t = Instant::now();
    let port = m.port.to_string();
    let status = Command::new("mariadb")
        .args([
            "--no-defaults",
            "-h",
            &m.host,
            "-P",
            &port,
            "-u",
            &m.user,
            "--quick",
            "--batch",
            "-e",
        ])
        .arg(format!("SELECT * FROM {db}.t"))
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let client = t.elapsed();
    println!("snapshot, the same {rows} rows:");
    println!(
        "  tributary snapshot-only (1 connection):      {:.2}M rows/s",
        rate(timings[0])
    );
    println!(
        "  tributary snapshot + stream (2 connections): {:.2}M rows/s",
        rate(timings[1])
    );
    println!(
        "  mariadb --quick SELECT * (peer):             {:.2}M rows/s",
        rate(client)
    );
    println!(
        "  ratio tributary (2 connections) / client:    {:.2}",
        client.as_secs_f64() / timings[1].as_secs_f64()
    );
    conn.query_drop(format!("DROP DATABASE {db}"))
        .await
        .unwrap();
}
