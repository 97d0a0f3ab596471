//! `[sink.hbase]` through the runtime's registry — the path `tributary sync`
//! takes — from the dev MariaDB (snapshot, then streamed inserts, updates,
//! key changes and deletes) into the dev HBase through its Thrift2 gateway:
//! a scan by HBase's own client ends equal to `SELECT *`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use tributary_runtime::{Registry, config::parse_pipeline};
use tributary_testkit::{DevServices, HBase, unique_name};

type Rows = BTreeMap<String, Option<String>>;

async fn source_rows(conn: &mut Conn, table: &str) -> Rows {
    let rows: Vec<(i32, Option<String>)> = conn
        .query(format!("SELECT id, v FROM {table}"))
        .await
        .unwrap();
    rows.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn hbase_rows(hbase: &HBase, table: &str) -> Rows {
    hbase
        .rows(table)
        .into_iter()
        .map(|(key, cells)| {
            let cell = |q: &str| {
                cells
                    .iter()
                    .find(|(name, _)| name.ends_with(q.as_bytes()))
                    .map(|(_, (_, v))| String::from_utf8(v.clone()).unwrap())
            };
            (String::from_utf8(key).unwrap(), cell(":v"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_file_with_an_hbase_sink_syncs_mariadb_through_the_registry() {
    let hbase = DevServices::load().hbase();
    let m = DevServices::load().mariadb();
    let mut conn = Conn::new(Opts::from_url(&m.url).unwrap()).await.unwrap();
    let db = unique_name("hbpipe");
    conn.query_drop(format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    conn.query_drop(format!(
        "CREATE TABLE {db}.t (id INT PRIMARY KEY, v VARCHAR(20))"
    ))
    .await
    .unwrap();
    let values: Vec<String> = (0..500).map(|i| format!("({i}, 'init{i}')")).collect();
    conn.query_drop(format!("INSERT INTO {db}.t VALUES {}", values.join(",")))
        .await
        .unwrap();

    let text = format!(
        r#"
[source.mysql]
host = "{host}"
port = {port}
user = "{user}"
server_id = 7301
heartbeat_interval = "200ms"
tables = {{ include = ["{db}.*"] }}
snapshot = {{ chunk_rows = 100 }}

[sink.hbase]
address = "{address}"
namespace = "{db}"
row_key = {{ encoding = "text", separator = "|" }}
commit_interval = "200ms"
"#,
        host = m.host,
        port = m.port,
        user = m.user,
        address = hbase.address(),
    );
    let pipeline = parse_pipeline(&text, &Registry::builtin()).unwrap();
    let target = format!("{db}:t");
    hbase.create_tables(&[(&target, "cf")]);
    let table = format!("{db}.t");
    let changes = async {
        let mut conn = Conn::new(Opts::from_url(&m.url).unwrap()).await.unwrap();
        for sql in [
            format!("UPDATE {table} SET v = 'changed' WHERE id < 50"),
            format!("DELETE FROM {table} WHERE id BETWEEN 100 AND 149"),
            format!("UPDATE {table} SET id = id + 1000 WHERE id BETWEEN 200 AND 209"),
            format!("UPDATE {table} SET v = NULL WHERE id = 300"),
            format!("INSERT INTO {table} VALUES (5000, 'new'), (5001, NULL)"),
        ] {
            conn.query_drop(sql).await.unwrap();
        }
        let expected = source_rows(&mut conn, &table).await;
        // Polls until HBase holds exactly the source's rows (a scan is a
        // JVM run, ~2 s).
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if hbase_rows(&hbase, &target) == expected {
                return expected;
            }
            assert!(Instant::now() < deadline, "HBase never matched the source");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let (expected, run) = {
        let mut expected = None;
        let stop = async {
            expected = Some(changes.await);
        };
        let run = pipeline.run(stop).await;
        (expected, run)
    };
    run.unwrap();
    let expected = expected.unwrap();
    assert_eq!(expected.len(), 500 - 50 + 2);
    assert_eq!(expected.get("1200"), Some(&Some("init200".to_string())));
    assert_eq!(expected.get("300"), Some(&None));
    let status = pipeline.status().snapshot();
    let t = status.values().next().expect("the table's status");
    assert_eq!(t.target, target);
    assert!(t.rows_written >= 500, "{t:?}");
    conn.query_drop(format!("DROP DATABASE {db}"))
        .await
        .unwrap();
}
