//! The source side of the end-to-end tests: a MariaDB database with two
//! tables under random writes, pipeline files, and readers of each kind of
//! target that compare it with `SELECT *`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arrow_array::{Array, Int32Array, StringArray};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use tributary_catalog::{HadoopCatalog, TableName};
use tributary_testkit::{DevServices, dev_dir, unique_name};

use super::{PASSWORD, SyncProcess};

pub type Rows = BTreeMap<i32, (Option<i32>, Option<String>)>;

pub async fn source_rows(conn: &mut Conn, table: &str) -> Rows {
    let rows: Vec<(i32, Option<i32>, Option<String>)> = conn
        .query(format!("SELECT id, v, s FROM {table}"))
        .await
        .unwrap();
    rows.into_iter().map(|(id, v, s)| (id, (v, s))).collect()
}

/// The table as iceberg-rust reads it (None: not created yet).
pub async fn iceberg_rows(catalog: &HadoopCatalog, name: &TableName) -> Option<Rows> {
    let t = catalog.load_table(name).await.ok()?;
    let mut rows = Rows::new();
    for b in t.scan(None).await.unwrap() {
        let col = |n: &str| b.column_by_name(n).unwrap().clone();
        let (id, v, s) = (col("id"), col("v"), col("s"));
        // A key widened to BIGINT reads back as longs.
        let id: Vec<i32> = match id.as_any().downcast_ref::<Int32Array>() {
            Some(a) => a.values().to_vec(),
            None => {
                let a = id
                    .as_any()
                    .downcast_ref::<arrow_array::Int64Array>()
                    .unwrap();
                a.values()
                    .iter()
                    .map(|&x| i32::try_from(x).unwrap())
                    .collect()
            }
        };
        let v = v.as_any().downcast_ref::<Int32Array>().unwrap();
        let s = s.as_any().downcast_ref::<StringArray>().unwrap();
        for (i, &id) in id.iter().enumerate() {
            let value = (
                v.is_valid(i).then(|| v.value(i)),
                s.is_valid(i).then(|| s.value(i).to_string()),
            );
            assert!(rows.insert(id, value).is_none(), "duplicate key");
        }
    }
    Some(rows)
}

pub async fn write_randomly(url: String, tables: [String; 2], ops: usize, seed: u64) {
    let mut conn = Conn::new(Opts::from_url(&url).unwrap()).await.unwrap();
    let mut x = seed | 1;
    let mut next = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    for _ in 0..ops {
        let table = &tables[next(2) as usize];
        let (a, b, v) = (next(6000), next(6000), next(1000));
        let sql = match next(4) {
            0 => format!("INSERT IGNORE INTO {table} VALUES ({a}, {v}, 'ins-{v}')"),
            1 => format!("UPDATE {table} SET v = {v}, s = NULL WHERE id = {a}"),
            2 => format!("DELETE FROM {table} WHERE id = {a}"),
            _ => format!("UPDATE IGNORE {table} SET id = {b} WHERE id = {a}"),
        };
        conn.query_drop(sql).await.unwrap();
    }
}

pub fn iceberg_sink(db: &str, warehouse: &Path) -> String {
    format!(
        r#"
[sink.iceberg]
commit_interval = 0.3
properties = {{ warehouse = "{warehouse}", "s3.secret-access-key" = "${{SYNC_TEST_S3_SECRET}}" }}
partition_by = {{ "{db}.b" = ["bucket(4, id)"] }}
# Background maintenance every second, due at once: it compacts, drops
# deletes and expires snapshots while the writers commit and get killed.
maintenance = {{ interval = 1, small_files = 2, delete_files = 2, snapshots = 6, snapshot_age = 0, retain_last = 3 }}
"#,
        warehouse = warehouse.display()
    )
}

pub fn pipeline_file(dir: &Path, db: &str, user: &str, sink: &str) -> PathBuf {
    let m = DevServices::load().mariadb();
    let text = format!(
        r#"
[source.mysql]
host = "{host}"
port = {port}
user = "{user}"
password = {{ env = "SYNC_TEST_PASSWORD" }}
server_id = 7101
heartbeat_interval = 0.2
tables = {{ include = ["{db}.*"] }}
snapshot = {{ chunk_rows = 100, max_rows_per_sec = 3000 }}
{sink}"#,
        host = m.host,
        port = m.port,
    );
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    path
}

pub async fn create_source(conn: &mut Conn, db: &str, user: &str) {
    for sql in [
        format!("CREATE DATABASE {db}"),
        format!("CREATE TABLE {db}.a (id INT PRIMARY KEY, v INT, s VARCHAR(20))"),
        format!("CREATE TABLE {db}.b (id INT PRIMARY KEY, v INT, s VARCHAR(20))"),
        format!("CREATE USER '{user}'@'%' IDENTIFIED BY '{PASSWORD}'"),
        format!("GRANT SELECT, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '{user}'@'%'"),
    ] {
        conn.query_drop(sql).await.unwrap();
    }
    for t in ["a", "b"] {
        let values: Vec<String> = (0..3000)
            .map(|i| format!("({}, {i}, 'init')", i * 2))
            .collect();
        let sql = format!("INSERT INTO {db}.{t} VALUES {}", values.join(","));
        conn.query_drop(sql).await.unwrap();
    }
}

/// A source database with tables `a` and `b` (3000 rows each), a
/// replication user with a password, and a work directory.
pub struct Fixture {
    pub url: String,
    pub conn: Conn,
    pub db: String,
    pub user: String,
    pub dir: PathBuf,
}

impl Fixture {
    pub async fn new(prefix: &str) -> Fixture {
        let url = DevServices::load().mariadb().url;
        let mut conn = Conn::new(Opts::from_url(&url).unwrap()).await.unwrap();
        let (db, user) = (unique_name(prefix), unique_name("syncu"));
        create_source(&mut conn, &db, &user).await;
        let dir = dev_dir()
            .join("tmp")
            .join(unique_name(&format!("{prefix}_cli")));
        std::fs::create_dir_all(dir.join("warehouse")).unwrap();
        Fixture {
            url,
            conn,
            db,
            user,
            dir,
        }
    }

    pub fn warehouse(&self) -> PathBuf {
        self.dir.join("warehouse")
    }

    pub fn pipeline(&self, sink: &str) -> PathBuf {
        pipeline_file(&self.dir, &self.db, &self.user, sink)
    }

    pub fn tables(&self) -> [String; 2] {
        [format!("{}.a", self.db), format!("{}.b", self.db)]
    }

    /// Drops the database and the user, and removes the work directory.
    pub async fn drop(mut self) {
        for sql in [
            format!("DROP DATABASE {}", self.db),
            format!("DROP USER '{}'@'%'", self.user),
        ] {
            self.conn.query_drop(sql).await.unwrap();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls until both Iceberg tables equal the source (deadline 120 s).
/// Reads a target table back with a reader independent of the sink.
pub enum Reader<'a> {
    Iceberg(&'a HadoopCatalog),
    ClickHouse(String),
    /// HBase tables `<db>:<table>`, scanned by HBase's own client.
    HBase(tributary_testkit::HBase),
    /// Relay topics `<prefix>.<db>.<table>` (brokers, prefix), replayed by
    /// rdkafka's consumer: per key, the last change wins.
    Kafka(String, String),
}

/// Every message of `topic` from the beginning, per partition in offset
/// order, as (key, value) JSON (None: no such topic yet).
pub type Messages = Vec<(serde_json::Value, Option<serde_json::Value>)>;

pub fn kafka_messages(brokers: &str, topic: &str) -> Option<Messages> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique_name("relay_reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(topic), timeout).ok()?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return None;
    }
    let (mut list, mut ends) = (TopicPartitionList::new(), BTreeMap::new());
    for p in partitions {
        let (_, high) = consumer.fetch_watermarks(topic, p, timeout).ok()?;
        if high > 0 {
            ends.insert(p, high);
            list.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
    }
    let mut per_partition: BTreeMap<i32, Messages> = BTreeMap::new();
    if !ends.is_empty() {
        consumer.assign(&list).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ends.is_empty() {
        assert!(Instant::now() < deadline, "{topic} not read in time");
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.unwrap();
        let key = serde_json::from_slice(m.key().unwrap()).unwrap();
        let value = m.payload().map(|p| serde_json::from_slice(p).unwrap());
        per_partition
            .entry(m.partition())
            .or_default()
            .push((key, value));
        if ends
            .get(&m.partition())
            .is_some_and(|&e| m.offset() + 1 >= e)
        {
            ends.remove(&m.partition());
        }
    }
    Some(per_partition.into_values().flatten().collect())
}

/// A relay topic replayed into the rows it describes: per key (one
/// partition each, so in order), the last change wins.
pub fn kafka_rows(brokers: &str, topic: &str) -> Option<Rows> {
    let mut rows = Rows::new();
    for (key, value) in kafka_messages(brokers, topic)? {
        let id = key["id"].as_i64().unwrap() as i32;
        match value {
            Some(v) if v["op"] != "d" => {
                let a = &v["after"];
                let row = (
                    a["v"].as_i64().map(|x| x as i32),
                    a["s"].as_str().map(str::to_string),
                );
                rows.insert(id, row);
            }
            _ => {
                rows.remove(&id);
            }
        }
    }
    Some(rows)
}

impl Reader<'_> {
    pub async fn rows(&self, db: &str, table: &str) -> Option<Rows> {
        match self {
            Reader::Iceberg(catalog) => iceberg_rows(catalog, &TableName::new(db, table)).await,
            Reader::ClickHouse(url) => {
                let client = clickhouse::Client::default()
                    .with_url(url)
                    .with_validation(false);
                let sql = format!("SELECT id, v, s FROM {db}.{table}_live");
                let rows: Vec<(i32, Option<i32>, Option<String>)> =
                    client.query(&sql).fetch_all().await.ok()?;
                let mut out = Rows::new();
                for (id, v, s) in rows {
                    assert!(out.insert(id, (v, s)).is_none(), "duplicate key {id}");
                }
                Some(out)
            }
            Reader::HBase(hbase) => {
                let text = |cells: &tributary_testkit::HBaseCells, q: &str| {
                    let cell = cells.get(q.as_bytes())?;
                    Some(String::from_utf8(cell.1.clone()).unwrap())
                };
                let rows = hbase.rows(&format!("{db}:{table}"));
                let decoded = rows.into_iter().map(|(key, cells)| {
                    // The default row key: an INT as order-preserving binary.
                    let key: [u8; 8] = key.try_into().unwrap();
                    let id = (u64::from_be_bytes(key) ^ (1 << 63)) as i64 as i32;
                    let v = text(&cells, "cf:v").map(|v| v.parse().unwrap());
                    (id, (v, text(&cells, "cf:s")))
                });
                Some(decoded.collect())
            }
            Reader::Kafka(brokers, prefix) => {
                let (brokers, topic) = (brokers.clone(), format!("{prefix}.{db}.{table}"));
                tokio::task::spawn_blocking(move || kafka_rows(&brokers, &topic))
                    .await
                    .unwrap()
            }
        }
    }
}

pub async fn wait_until_equal(
    conn: &mut Conn,
    reader: &Reader<'_>,
    db: &str,
    sync: &mut SyncProcess,
) {
    wait_until_tables_equal(conn, reader, db, &["a", "b"], sync).await;
}

/// Polls until every one of `tables` equals the source at the same time
/// (deadline 120 s).
pub async fn wait_until_tables_equal(
    conn: &mut Conn,
    reader: &Reader<'_>,
    db: &str,
    tables: &[&str],
    sync: &mut SyncProcess,
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        sync.assert_running();
        let mut equal = true;
        for t in tables {
            let expected = source_rows(conn, &format!("{db}.{t}")).await;
            equal &= reader.rows(db, t).await.as_ref() == Some(&expected);
        }
        if equal {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{tables:?} of {db} did not reach SELECT * within 120 s:\n{}",
            sync.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `GET path` on 127.0.0.1:`port`: status code and body.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    conn.write_all(request.as_bytes()).await.ok()?;
    let mut text = String::new();
    conn.read_to_string(&mut text).await.ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// `ALTER TABLE <db>.a ADD COLUMN extra INT`, then a row of a with it
/// (100001, 1, 'after-ddl', 7): a source learns a table's new shape from
/// its next row.
pub async fn add_extra_column(conn: &mut Conn, db: &str) {
    for sql in [
        format!("ALTER TABLE {db}.a ADD COLUMN extra INT"),
        format!("INSERT INTO {db}.a VALUES (100001, 1, 'after-ddl', 7)"),
    ] {
        conn.query_drop(sql).await.unwrap();
    }
}

/// The broker the relay tests run on: Apache Kafka from `dev/services`, or
/// tansu with `TRIBUTARY_RELAY_BROKER=tansu` (a parity run).
pub fn relay_brokers() -> String {
    match std::env::var("TRIBUTARY_RELAY_BROKER").as_deref() {
        Ok("tansu") => DevServices::load().kafka(),
        _ => DevServices::load().apache_kafka(),
    }
}

/// Waits until the producer has committed a round of each table (so both
/// are in the relay's schema registry).
pub async fn wait_relayed(brokers: &str, prefix: &str, f: &Fixture, producer: &mut SyncProcess) {
    let config = tributary_kafka::KafkaSinkConfig::new(brokers, prefix);
    let deadline = Instant::now() + Duration::from_secs(60);
    for table in f.tables() {
        while tributary_kafka::committed_checkpoint(&config, &table)
            .await
            .unwrap()
            .is_none()
        {
            producer.assert_running();
            assert!(
                Instant::now() < deadline,
                "{table} not relayed in 60 s:\n{}",
                producer.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A fixture whose tables a producing `tributary sync` relays (`sink`, a
/// `[sink.kafka]` section of `brokers` and `prefix`), started and waited
/// for until both tables are in the relay.
pub async fn relayed_fixture(
    name: &str,
    brokers: &str,
    prefix: &str,
    sink: &str,
) -> (Fixture, SyncProcess) {
    let f = Fixture::new(name).await;
    let producing = f.pipeline(sink);
    let mut producer = SyncProcess::start(&producing, &f.dir.join("producer.log"));
    wait_relayed(brokers, prefix, &f, &mut producer).await;
    (f, producer)
}
