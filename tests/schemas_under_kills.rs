//! `tributary sync` over the schemas real databases have — a primary key,
//! a composite primary key whose values change, a table keyed only by a
//! unique index, and a keyless table kept as a changelog — under a
//! randomized workload with rolled-back transactions and DDL mid-stream
//! (ADD COLUMN, INT→BIGINT on a key column, TRUNCATE), SIGKILLed at
//! random points more than twenty times. Read back by pyiceberg: every
//! keyed table equals `SELECT *`, and the changelog holds every committed
//! change exactly once (replayed in order it rebuilds the table; its
//! change count equals what the workload committed). The same for
//! ClickHouse, read through `FINAL`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use tributary_catalog::{HadoopCatalog, TableName};
use tributary_testkit::{DevServices, dev_dir, unique_name};

mod common;
use common::{PASSWORD, SyncProcess};

const KILLS: usize = 22;
/// The run whose DDL widens a column (see `Target::ddl`).
const WIDEN_RUN: usize = 8;

type Row = BTreeMap<String, Option<String>>;
/// A keyless table's rows as a multiset of (msg, n).
type Bag = BTreeMap<(Option<String>, Option<String>), i64>;

/// A tiny deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The source database, its workload and what the workload committed to
/// the keyless table.
struct Workload {
    conn: Conn,
    db: String,
    rng: Rng,
    /// Changelog rows the committed statements on `logs` must have made
    /// (an update makes two: its before and its after image).
    log_changes: u64,
}

impl Workload {
    async fn sql(&mut self, sql: String) -> u64 {
        self.conn.query_drop(&sql).await.unwrap();
        self.conn.affected_rows()
    }

    /// One transaction of 1–4 random statements; about one in six is
    /// rolled back.
    async fn step(&mut self) {
        let db = self.db.clone();
        self.sql("START TRANSACTION".into()).await;
        let mut log_changes = 0;
        for _ in 0..1 + self.rng.below(4) {
            let (x, y, v) = (
                self.rng.below(400),
                self.rng.below(400),
                self.rng.below(1000),
            );
            let sql = match self.rng.below(16) {
                0 => format!("INSERT IGNORE INTO {db}.pk (id, v, s) VALUES ({x}, {v}, 'i{v}')"),
                1 => format!("UPDATE {db}.pk SET v = {v}, s = NULL WHERE id = {x}"),
                2 => format!("DELETE FROM {db}.pk WHERE id = {x}"),
                3 => format!("UPDATE IGNORE {db}.pk SET id = {y} WHERE id = {x}"),
                4 => format!(
                    "INSERT IGNORE INTO {db}.comp VALUES ({}, {}, {v})",
                    x % 20,
                    y % 20
                ),
                // The key's values change.
                5 => format!(
                    "UPDATE IGNORE {db}.comp SET a = {}, b = b + 1 WHERE a = {} AND b = {}",
                    y % 20,
                    x % 20,
                    v % 20
                ),
                6 => format!(
                    "DELETE FROM {db}.comp WHERE a = {} AND b < {}",
                    x % 20,
                    y % 5
                ),
                7 => format!("UPDATE {db}.comp SET v = {v} WHERE b = {}", x % 20),
                8 => format!("INSERT IGNORE INTO {db}.uk VALUES ('c{x}', {v})"),
                9 => format!("UPDATE IGNORE {db}.uk SET code = 'c{y}' WHERE code = 'c{x}'"),
                10 => format!("DELETE FROM {db}.uk WHERE code = 'c{x}'"),
                11 => format!("UPDATE {db}.uk SET v = {v} WHERE code < 'c{x}' LIMIT 3"),
                12 | 13 => {
                    let n = self
                        .sql(format!(
                            "INSERT INTO {db}.logs VALUES ('m{}', {}), ('m{}', {})",
                            x % 7,
                            y % 7,
                            v % 7,
                            x % 7
                        ))
                        .await;
                    log_changes += n;
                    continue;
                }
                14 => {
                    let n = self
                        .sql(format!(
                            "UPDATE {db}.logs SET n = n + 1 WHERE msg = 'm{}' LIMIT 2",
                            x % 7
                        ))
                        .await;
                    log_changes += 2 * n;
                    continue;
                }
                _ => {
                    let n = self
                        .sql(format!("DELETE FROM {db}.logs WHERE n = {} LIMIT 1", x % 9))
                        .await;
                    log_changes += n;
                    continue;
                }
            };
            self.sql(sql).await;
        }
        if self.rng.below(6) == 0 {
            self.sql("ROLLBACK".into()).await;
        } else {
            self.sql("COMMIT".into()).await;
            self.log_changes += log_changes;
        }
    }
}

async fn setup(conn: &mut Conn, db: &str, user: &str) {
    for sql in [
        format!("CREATE DATABASE {db}"),
        format!("CREATE TABLE {db}.pk (id INT PRIMARY KEY, v INT, s VARCHAR(20))"),
        format!(
            "CREATE TABLE {db}.comp (a INT NOT NULL, b INT NOT NULL, v INT, PRIMARY KEY (a, b))"
        ),
        format!("CREATE TABLE {db}.uk (code VARCHAR(12) NOT NULL, v INT, UNIQUE KEY (code))"),
        format!("CREATE TABLE {db}.logs (msg VARCHAR(20), n INT)"),
        format!("CREATE USER '{user}'@'%' IDENTIFIED BY '{PASSWORD}'"),
        format!("GRANT SELECT, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '{user}'@'%'"),
    ] {
        conn.query_drop(sql).await.unwrap();
    }
    let pk: Vec<String> = (0..300).map(|i| format!("({i}, {i}, 'init')")).collect();
    let comp: Vec<String> = (0..300)
        .map(|i| format!("({}, {}, {i})", i / 20, i % 20))
        .collect();
    let uk: Vec<String> = (0..300).map(|i| format!("('c{i}', {i})")).collect();
    let logs: Vec<String> = (0..300)
        .map(|i| format!("('m{}', {})", i % 7, i % 9))
        .collect();
    for (t, rows) in [("pk", pk), ("comp", comp), ("uk", uk), ("logs", logs)] {
        let sql = format!("INSERT INTO {db}.{t} VALUES {}", rows.join(","));
        conn.query_drop(sql).await.unwrap();
    }
}

/// Where the pipeline writes, and how the test reads it back.
enum Target {
    /// A Hadoop catalog under the work directory; read by pyiceberg.
    Iceberg,
    /// The dev ClickHouse servers as two shards (local mode); read
    /// through the `_live` views (`FINAL`, deleted rows left out).
    ClickHouse,
}

impl Target {
    fn sink(&self, dir: &Path, db: &str) -> String {
        match self {
            Target::Iceberg => format!(
                r#"
[sink.iceberg]
commit_interval = 0.3
properties = {{ warehouse = "{warehouse}" }}
# Expiry keeps what readers polling mid-run may still read.
maintenance = {{ interval = 1, small_files = 4, delete_files = 4, snapshots = 10, snapshot_age = 300, retain_last = 3 }}
"#,
                warehouse = dir.join("warehouse").display()
            ),
            Target::ClickHouse => {
                let ch = DevServices::load().clickhouse();
                let urls: Vec<String> = ch.urls.iter().map(|u| format!("\"{u}\"")).collect();
                format!(
                    "\n[sink.clickhouse]\nurls = [{}]\ncluster = \"{}\"\nmode = \"local\"\ndatabase = \"{db}\"\nflush_interval = 0.3\n",
                    urls.join(", "),
                    ch.cluster
                )
            }
        }
    }

    /// The DDL of the run: ClickHouse cannot ALTER a sorting-key column (the
    /// sink stops with the manual steps, tested elsewhere), so there a
    /// non-key column is widened.
    fn ddl(&self, db: &str) -> [(usize, String); 4] {
        let widen = match self {
            Target::Iceberg => format!("ALTER TABLE {db}.comp MODIFY a BIGINT NOT NULL"),
            Target::ClickHouse => format!("ALTER TABLE {db}.pk MODIFY v BIGINT"),
        };
        [
            (4, format!("ALTER TABLE {db}.pk ADD COLUMN extra INT")),
            (WIDEN_RUN, widen),
            (12, format!("TRUNCATE TABLE {db}.uk")),
            (16, format!("TRUNCATE TABLE {db}.logs")),
        ]
    }

    /// Every table's rows as text (None: not created yet).
    async fn rows(&self, dir: &Path, db: &str, tables: &[&str]) -> Vec<Option<Vec<Row>>> {
        match self {
            Target::Iceberg => pyiceberg_rows(&dir.join("warehouse"), db, tables),
            Target::ClickHouse => {
                let mut out = Vec::new();
                for t in tables {
                    out.push(clickhouse_rows(db, t).await);
                }
                out
            }
        }
    }

    /// Whether the target holds the widened column's new type.
    async fn widened(&self, dir: &Path, db: &str) -> bool {
        match self {
            Target::Iceberg => {
                let catalog = HadoopCatalog::new_local(dir.join("warehouse")).unwrap();
                let Ok(t) = catalog.load_table(&TableName::new(db, "comp")).await else {
                    return false;
                };
                let a = t.metadata.current_schema().field_by_name("a").cloned();
                a.is_some_and(|a| a.field_type.to_string() == "long")
            }
            Target::ClickHouse => {
                let ch = DevServices::load().clickhouse();
                let client = clickhouse::Client::default()
                    .with_url(&ch.urls[0])
                    .with_validation(false);
                let sql = format!(
                    "SELECT type FROM system.columns WHERE database = '{db}' AND table = 'pk' \
                     AND name = 'v'"
                );
                let t: Vec<String> = client.query(&sql).fetch_all().await.unwrap_or_default();
                t.first().is_some_and(|t| t.contains("Int64"))
            }
        }
    }

    /// Whether the snapshot is all in: the source is still as `setup` left it
    /// (300 rows a table), so every table holding 300 rows says so.
    async fn snapshot_done(&self, dir: &Path, db: &str) -> bool {
        let rows = self.rows(dir, db, &["pk", "comp", "uk", "logs"]).await;
        rows.iter()
            .all(|r| r.as_ref().is_some_and(|r| r.len() == 300))
    }
}

fn pipeline(dir: &Path, db: &str, user: &str, target: &Target) -> PathBuf {
    let m = DevServices::load().mariadb();
    let text = format!(
        r#"
[source.mysql]
host = "{host}"
port = {port}
user = "{user}"
password = {{ env = "SYNC_TEST_PASSWORD" }}
server_id = 7301
heartbeat_interval = 0.2
tables = {{ include = ["{db}.*"] }}
keyless = "changelog"
snapshot = {{ chunk_rows = 100 }}
{sink}"#,
        host = m.host,
        port = m.port,
        sink = target.sink(dir, db),
    );
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A ClickHouse table's current rows as text, through its `_live` view.
async fn clickhouse_rows(db: &str, table: &str) -> Option<Vec<Row>> {
    let ch = DevServices::load().clickhouse();
    let client = clickhouse::Client::default()
        .with_url(&ch.urls[0])
        .with_validation(false);
    let sql = format!("SELECT * FROM {db}.{table}_live");
    let bytes = client
        .query(&sql)
        .fetch_bytes("JSONEachRow")
        .ok()?
        .collect()
        .await
        .ok()?;
    let mut rows: Vec<Row> = std::str::from_utf8(&bytes)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(l).unwrap();
            v.into_iter()
                .filter(|(k, _)| k != "_version" && k != "_is_deleted")
                .map(|(k, v)| {
                    let text = match v {
                        serde_json::Value::Null => None,
                        serde_json::Value::String(s) => Some(s),
                        other => Some(other.to_string()),
                    };
                    (k, text)
                })
                .collect()
        })
        .collect();
    rows.sort();
    Some(rows)
}

/// `SELECT *` of a source table as text, sorted (a multiset).
async fn source_rows(conn: &mut Conn, table: &str) -> Vec<Row> {
    let rows: Vec<mysql_async::Row> = conn.query(format!("SELECT * FROM {table}")).await.unwrap();
    let mut out: Vec<Row> = rows
        .into_iter()
        .map(|r| {
            let names: Vec<String> = r
                .columns_ref()
                .iter()
                .map(|c| c.name_str().to_string())
                .collect();
            names
                .into_iter()
                .enumerate()
                .map(|(i, name)| {
                    let v = match r.as_ref(i).unwrap() {
                        mysql_async::Value::NULL => None,
                        mysql_async::Value::Bytes(b) => Some(String::from_utf8(b.clone()).unwrap()),
                        other => Some(other.as_sql(true)),
                    };
                    (name, v)
                })
                .collect()
        })
        .collect();
    out.sort();
    out
}

/// Every table's rows as pyiceberg reads them, as text (None: no table yet).
fn pyiceberg_rows(catalog_dir: &Path, db: &str, tables: &[&str]) -> Vec<Option<Vec<Row>>> {
    let locations: Vec<String> = tables
        .iter()
        .map(|t| {
            let dir = catalog_dir.join(db).join(t).join("metadata");
            let hint = std::fs::read_to_string(dir.join("version-hint.text")).ok();
            hint.map(|v| {
                dir.join(format!("v{}.metadata.json", v.trim()))
                    .display()
                    .to_string()
            })
            .unwrap_or_default()
        })
        .collect();
    let args: Vec<&str> = locations.iter().map(String::as_str).collect();
    let out = DevServices::load().run_python(
        r#"
import sys, json
from pyiceberg.table import StaticTable
for loc in sys.argv[1:]:
    if not loc:
        print("null")
        continue
    rows = StaticTable.from_metadata(loc).scan().to_arrow().to_pylist()
    print(json.dumps([{k: (None if v is None else str(v)) for k, v in r.items()} for r in rows]))
"#,
        &args,
    );
    out.lines()
        .map(|l| {
            let rows: Option<Vec<Row>> = serde_json::from_str(l).unwrap();
            rows.map(|mut r| {
                r.sort();
                r
            })
        })
        .collect()
}

/// Replays a changelog in change order into a multiset of `(msg, n)`
/// rows; fails on a change identity seen twice or an image removed that
/// was not there. Returns the multiset and the number of non-read changes.
/// Mid-stream either can hold for a moment where the target is not atomic
/// (ClickHouse shards are written one after the other, and a killed run
/// leaves a round on one shard only until its replay), so the caller
/// polls until it holds.
fn replay_changelog(rows: &[Row]) -> Result<(Bag, u64), String> {
    let num = |r: &Row, c: &str| -> i64 { r[c].as_ref().unwrap().parse().unwrap() };
    let mut ordered: Vec<&Row> = rows.iter().collect();
    ordered.sort_by_key(|r| (num(r, "_change_seq"), num(r, "_change_row")));
    let mut ids = std::collections::HashSet::new();
    let mut table = Bag::new();
    let mut changes = 0;
    for r in ordered {
        let op = r["_change_op"].clone().unwrap();
        let id = (num(r, "_change_seq"), num(r, "_change_row"), op.clone());
        if !ids.insert(id.clone()) {
            return Err(format!("change {id:?} twice"));
        }
        let image = (r["msg"].clone(), r["n"].clone());
        match op.as_str() {
            "read" => *table.entry(image).or_default() += 1,
            "insert" | "update_after" => {
                changes += 1;
                *table.entry(image).or_default() += 1;
            }
            "delete" | "update_before" => {
                changes += 1;
                let n = table.entry(image.clone()).or_default();
                if *n == 0 {
                    return Err(format!(
                        "{op} of {image:?}, which the changelog does not hold"
                    ));
                }
                *n -= 1;
            }
            "truncate" => table.clear(),
            other => panic!("op {other}"),
        }
    }
    table.retain(|_, n| *n != 0);
    Ok((table, changes))
}

/// How many runs logged where they start (a resume point, or none).
fn started_runs(log: &str) -> usize {
    log.matches("resuming").count() + log.matches("starting: no committed position").count()
}

fn multiset(rows: &[Row]) -> Bag {
    let mut m = BTreeMap::new();
    for r in rows {
        *m.entry((r["msg"].clone(), r["n"].clone())).or_default() += 1;
    }
    m
}

#[tokio::test]
async fn real_schemas_with_ddl_under_twenty_sigkills_end_equal_in_iceberg() {
    kill_and_compare(Target::Iceberg).await;
}

#[tokio::test]
async fn real_schemas_with_ddl_under_twenty_sigkills_end_equal_in_clickhouse() {
    kill_and_compare(Target::ClickHouse).await;
}

async fn kill_and_compare(target: Target) {
    let url = DevServices::load().mariadb().url;
    let mut conn = Conn::new(Opts::from_url(&url).unwrap()).await.unwrap();
    let (db, user) = (unique_name("rs"), unique_name("rsu"));
    setup(&mut conn, &db, &user).await;
    let dir = dev_dir().join("tmp").join(unique_name("rs_cli"));
    std::fs::create_dir_all(dir.join("warehouse")).unwrap();
    let config = pipeline(&dir, &db, &user, &target);
    let log = dir.join("sync.log");

    // The snapshot first, so every workload change reaches the changelog
    // as a change (not as part of a snapshot read).
    let mut sync = SyncProcess::start(&config, &log);
    let deadline = Instant::now() + Duration::from_secs(90);
    while !target.snapshot_done(&dir, &db).await {
        sync.assert_running();
        assert!(
            Instant::now() < deadline,
            "no snapshot in 90 s:\n{}",
            sync.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut w = Workload {
        conn: Conn::new(Opts::from_url(&url).unwrap()).await.unwrap(),
        db: db.clone(),
        rng: Rng(0x5eed_2026),
        log_changes: 0,
    };
    let ddl = target.ddl(&db);
    for kill in 0..KILLS {
        if kill > 0 {
            sync = SyncProcess::start(&config, &log);
        }
        // Work for a random 0.2–1.5 s, then SIGKILL at once. This run's
        // DDL (if any) comes once, between random steps. After the
        // widening, the kill comes as soon as the target shows the wider
        // type: the round after it is then most likely uncommitted, and
        // the next run replays narrower rows into the widened table.
        let until = Instant::now() + Duration::from_millis(200 + w.rng.below(1300));
        let mut due = ddl.iter().find(|(at, _)| *at == kill).map(|d| d.1.clone());
        while Instant::now() < until {
            w.step().await;
            if due.is_some() && w.rng.below(3) == 0 {
                w.sql(due.take().unwrap()).await;
            }
        }
        if let Some(sql) = due {
            w.sql(sql).await;
        }
        if kill == WIDEN_RUN {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !target.widened(&dir, &db).await {
                sync.assert_running();
                assert!(
                    Instant::now() < deadline,
                    "no widening in 30 s:\n{}",
                    sync.log()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        // The run has decided where it starts before it dies (under load a
        // start can take longer than the work above): every run after the
        // first must resume, which is asserted at the end.
        let deadline = Instant::now() + Duration::from_secs(30);
        while started_runs(&sync.log()) < kill + 1 {
            sync.assert_running();
            assert!(
                Instant::now() < deadline,
                "run {kill} did not start in 30 s:\n{}",
                sync.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sync.assert_running();
        sync.kill();
    }
    // A last run under a few more writes, until every table is equal.
    let mut sync = SyncProcess::start(&config, &log);
    for _ in 0..50 {
        w.step().await;
    }
    let tables = ["pk", "comp", "uk", "logs"];
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        sync.assert_running();
        let mut expected = Vec::new();
        for t in tables {
            expected.push(source_rows(&mut w.conn, &format!("{db}.{t}")).await);
        }
        let actual = target.rows(&dir, &db, &tables).await;
        let keyed_equal = (0..3).all(|i| actual[i].as_ref() == Some(&expected[i]));
        let log_rows = actual[3].clone().unwrap_or_default();
        let replayed = replay_changelog(&log_rows);
        if keyed_equal
            && replayed.as_ref().is_ok_and(|(rebuilt, changes)| {
                *rebuilt == multiset(&expected[3]) && *changes == w.log_changes
            })
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not equal to the source within 120 s (changelog: {:?} changes of {}; keyed \
             equal {keyed_equal}):\n{}",
            replayed.map(|(_, changes)| changes),
            w.log_changes,
            sync.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The DDL reached the targets: the new column, the widened column, and
    // the changelog's TRUNCATE.
    let actual = target.rows(&dir, &db, &tables).await;
    assert!(
        actual[0]
            .as_ref()
            .unwrap()
            .iter()
            .all(|r| r.contains_key("extra"))
    );
    let logs = actual[3].as_ref().unwrap();
    assert!(
        logs.iter()
            .any(|r| r["_change_op"].as_deref() == Some("truncate"))
    );
    if let Target::Iceberg = target {
        let catalog = HadoopCatalog::new_local(dir.join("warehouse")).unwrap();
        let comp = catalog
            .load_table(&TableName::new(&db, "comp"))
            .await
            .unwrap();
        let a = comp.metadata.current_schema().field_by_name("a").unwrap();
        assert_eq!(a.field_type.to_string(), "long", "comp.a widened in place");
    }
    eprintln!(
        "{KILLS} kills; changelog: {} rows, {} changes; rows: pk {}, comp {}, uk {}",
        logs.len(),
        w.log_changes,
        actual[0].as_ref().unwrap().len(),
        actual[1].as_ref().unwrap().len(),
        actual[2].as_ref().unwrap().len()
    );
    assert!(sync.terminate().success(), "{}", sync.log());
    let text = sync.log();
    assert!(!text.contains(PASSWORD), "the password is in the log");
    assert_eq!(
        text.matches("starting: no committed position").count(),
        1,
        "only the first run starts without a committed position"
    );
    assert!(
        text.matches("resuming").count() >= KILLS,
        "every run after the first resumed"
    );
    for sql in [
        format!("DROP DATABASE {db}"),
        format!("DROP USER '{user}'@'%'"),
    ] {
        conn.query_drop(sql).await.unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
