//! Purging MariaDB's binlogs for tests of a lost source position.

use std::time::{Duration, Instant};

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

/// Starts a new binlog file and purges every older one; returns the new
/// file's name. The server keeps files a dump thread still has open (a
/// closed reader's thread ends at its next heartbeat), so it purges until
/// only the newest is left (deadline 30 s). Affects every reader of the
/// server: such tests run in the nextest group `mariadb-binlog`.
pub async fn purge_binlogs(conn: &mut Conn) -> String {
    conn.query_drop("FLUSH BINARY LOGS").await.unwrap();
    let newest: String = conn
        .query_first("SHOW MASTER STATUS")
        .await
        .unwrap()
        .map(|r: mysql_async::Row| r.get(0).unwrap())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        conn.query_drop(format!("PURGE BINARY LOGS TO '{newest}'"))
            .await
            .unwrap();
        let logs: Vec<(String, u64)> = conn.query("SHOW BINARY LOGS").await.unwrap();
        if logs.len() == 1 {
            return newest;
        }
        assert!(
            Instant::now() < deadline,
            "old binlogs still in use: {logs:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
