//! End to end: MariaDB snapshot + binlog → Iceberg upsert table, with random
//! writes during the snapshot; the table equals `SELECT *` of the source, read
//! by iceberg-rust and pyiceberg. Local Hadoop catalog, S3 and Hive.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{Array, Int32Array, StringArray};
use iceberg::io::FileIO;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use tributary_catalog::{Catalog, CatalogTable, HadoopCatalog, HiveCatalog, TableName};
use tributary_core::{BinlogFilePos, Sink, Source, SourceRecord};
use tributary_iceberg::UpsertWriter;
use tributary_mysql::{MySqlSource, MySqlSourceConfig};
use tributary_testkit::{DevServices, dev_dir, unique_name};

type Rows = BTreeMap<i32, (Option<i32>, Option<String>)>;

async fn source_rows(conn: &mut Conn, table: &str) -> Rows {
    let rows: Vec<(i32, Option<i32>, Option<String>)> = conn
        .query(format!("SELECT id, v, s FROM {table}"))
        .await
        .unwrap();
    rows.into_iter().map(|(id, v, s)| (id, (v, s))).collect()
}

/// The table as Iceberg Java (the reference reader) reads it: through its
/// HiveCatalog for a metastore table, else from the metadata file.
fn iceberg_java_rows(t: &CatalogTable, from_hive: bool) -> Rows {
    let dev = DevServices::load();
    let versions = match from_hive {
        true => dev.iceberg_java_read_from_hive(&[&t.name.to_string()]),
        false => dev.iceberg_java_read(&[t.metadata_location.as_str()]),
    };
    let mut rows = Rows::new();
    for r in &versions[0] {
        let id = r["id"].as_i64().unwrap() as i32;
        let value = (
            r["v"].as_i64().map(|v| v as i32),
            r["s"].as_str().map(str::to_string),
        );
        assert!(
            rows.insert(id, value).is_none(),
            "Iceberg Java: duplicate key {id}"
        );
    }
    rows
}

async fn iceberg_rows(t: &CatalogTable) -> Rows {
    let batches = t.scan(None).await.unwrap();
    let mut rows = Rows::new();
    for b in batches {
        let col = |n: &str| b.column_by_name(n).unwrap().clone();
        let (id, v, s) = (col("id"), col("v"), col("s"));
        let id = id.as_any().downcast_ref::<Int32Array>().unwrap();
        let v = v.as_any().downcast_ref::<Int32Array>().unwrap();
        let s = s.as_any().downcast_ref::<StringArray>().unwrap();
        for i in 0..b.num_rows() {
            let value = (
                v.is_valid(i).then(|| v.value(i)),
                s.is_valid(i).then(|| s.value(i).to_string()),
            );
            assert!(
                rows.insert(id.value(i), value).is_none(),
                "duplicate key {}",
                id.value(i)
            );
        }
    }
    rows
}

fn pyiceberg_count(t: &CatalogTable, props: &str) -> usize {
    let out = DevServices::load().run_python(
        r#"
import sys, json
from pyiceberg.table import StaticTable
print(StaticTable.from_metadata(sys.argv[1], properties=json.loads(sys.argv[2])).scan().to_arrow().num_rows)
"#,
        &[&t.metadata_location, props],
    );
    out.trim().parse().unwrap()
}

/// `ops` random inserts, updates, deletes and key changes.
async fn write_randomly(url: String, table: String, ops: usize) {
    let mut conn = Conn::new(Opts::from_url(&url).unwrap()).await.unwrap();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    for _ in 0..ops {
        let (a, b, v) = (next(3000), next(3000), next(1000));
        let sql = match next(4) {
            0 => format!("INSERT IGNORE INTO {table} VALUES ({a}, {v}, 'ins-{v}')"),
            1 => format!("UPDATE {table} SET v = {v}, s = NULL WHERE id = {a}"),
            2 => format!("DELETE FROM {table} WHERE id = {a}"),
            _ => format!("UPDATE IGNORE {table} SET id = {b} WHERE id = {a}"),
        };
        conn.query_drop(sql).await.unwrap();
    }
}

/// Runs source → writer until the snapshot is done and the stream has
/// passed `end` (set once writes stop), committing at checkpoints.
async fn sync(
    source: &mut MySqlSource,
    writer: &mut UpsertWriter,
    end: impl Fn() -> Option<BinlogFilePos>,
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut since_commit = 0;
    loop {
        assert!(Instant::now() < deadline, "sync did not finish in 120 s");
        let record = tokio::time::timeout(Duration::from_secs(30), source.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match record {
            SourceRecord::Changes(b) if b.schema().table.table == "kv" => {
                since_commit += b.len();
                writer.write(&b).await.unwrap();
            }
            SourceRecord::Checkpoint(cp) => {
                let done = !cp.properties.contains_key("mysql.snapshot");
                let past = match (end(), cp.position.as_ref().and_then(|p| p.file_pos())) {
                    (Some(end), Some(at)) => at >= &end,
                    _ => false,
                };
                // A row bound, as a runner's commit policy would have.
                if since_commit > 500 || (done && past) {
                    writer.commit(&cp).await.unwrap();
                    since_commit = 0;
                }
                if done && past {
                    return;
                }
            }
            _ => {}
        }
    }
}

/// The source table: keyed by its primary key, or — the habit of many
/// production schemas — only by a unique index on a NOT NULL column.
const PK_TABLE: &str = "id INT PRIMARY KEY, v INT, s VARCHAR(20)";
const UK_TABLE: &str =
    "id INT NOT NULL, v INT, s VARCHAR(20), UNIQUE KEY by_vs (v, s), UNIQUE KEY by_id (id)";

async fn pipeline(catalog: Arc<dyn Catalog>, reader_props: &str, hive: bool, columns: &str) {
    let m = DevServices::load().mariadb();
    let mut conn = Conn::new(Opts::from_url(&m.url).unwrap()).await.unwrap();
    let db = unique_name("e2e");
    let table = format!("{db}.kv");
    conn.query_drop(format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    conn.query_drop(format!("CREATE TABLE {table} ({columns})"))
        .await
        .unwrap();
    let values: Vec<String> = (0..1500)
        .map(|i| format!("({}, {i}, 'init-{i}')", i * 2))
        .collect();
    conn.query_drop(format!("INSERT INTO {table} VALUES {}", values.join(",")))
        .await
        .unwrap();

    let mut config = MySqlSourceConfig::new(m.host.clone(), m.port, m.user.clone());
    config.tables.include = vec![format!("{db}.*")];
    config.snapshot.chunk_rows = 100;
    config.heartbeat_interval = Duration::from_millis(200);
    let mut source = MySqlSource::start(config, None).await.unwrap();

    // The writer's table is created from the first batch's schema.
    let first = loop {
        match source.next().await.unwrap().unwrap() {
            SourceRecord::Changes(b) => break b,
            _ => continue,
        }
    };
    let name = TableName::new(db.clone(), "kv");
    let mut writer = UpsertWriter::open(catalog.clone(), name.clone(), first.schema())
        .await
        .unwrap();
    writer.write(&first).await.unwrap();

    // Writes run while the snapshot is read; once they are done, the binlog
    // end marks how far the stream must get.
    let end: Arc<std::sync::Mutex<Option<BinlogFilePos>>> = Arc::default();
    let mut stopper_conn = Conn::new(Opts::from_url(&m.url).unwrap()).await.unwrap();
    let end_for_sync = end.clone();
    let (url, t) = (m.url.clone(), table.clone());
    let stopper = tokio::spawn(async move {
        write_randomly(url, t, 600).await;
        let row: mysql_async::Row = stopper_conn
            .query_first("SHOW MASTER STATUS")
            .await
            .unwrap()
            .unwrap();
        *end_for_sync.lock().unwrap() = Some(BinlogFilePos::new(
            row.get::<String, _>(0).unwrap(),
            row.get::<u64, _>(1).unwrap(),
        ));
    });
    sync(&mut source, &mut writer, || end.lock().unwrap().clone()).await;
    stopper.await.unwrap();

    let expected = source_rows(&mut conn, &table).await;
    let t = catalog.load_table(&name).await.unwrap();
    let actual = iceberg_rows(&t).await;
    let differ: Vec<_> = expected
        .keys()
        .chain(actual.keys())
        .filter(|k| expected.get(k) != actual.get(k))
        .map(|k| (*k, expected.get(k).cloned(), actual.get(k).cloned()))
        .collect();
    assert!(
        differ.is_empty(),
        "iceberg-rust differs from SELECT * at (key, source, iceberg): {differ:?}"
    );
    assert_eq!(
        pyiceberg_count(&t, reader_props),
        expected.len(),
        "pyiceberg row count"
    );
    assert!(
        iceberg_java_rows(&t, hive) == expected,
        "Iceberg Java differs from SELECT *"
    );
    conn.query_drop(format!("DROP DATABASE {db}"))
        .await
        .unwrap();
}

#[tokio::test]
async fn mariadb_to_iceberg_on_a_local_hadoop_catalog() {
    let catalog =
        HadoopCatalog::new_local(dev_dir().join("tmp").join(unique_name("e2e_wh"))).unwrap();
    pipeline(Arc::new(catalog), "{}", false, PK_TABLE).await;
}

/// A table whose only key is a unique index (`by_vs` has nullable columns and does not
/// qualify, `by_id` does): snapshot, stream and every reader key it by `id`.
#[tokio::test]
async fn mariadb_to_iceberg_of_a_table_keyed_only_by_a_unique_index() {
    let catalog =
        HadoopCatalog::new_local(dev_dir().join("tmp").join(unique_name("e2e_uk"))).unwrap();
    pipeline(Arc::new(catalog), "{}", false, UK_TABLE).await;
}

#[tokio::test]
async fn mariadb_to_iceberg_on_a_hive_catalog() {
    let dir = dev_dir().join("tmp").join(unique_name("e2e_hive"));
    std::fs::create_dir_all(&dir).unwrap();
    let warehouse = format!("file://{}", dir.canonicalize().unwrap().display());
    let addr = DevServices::load().hms().parse().unwrap();
    pipeline(
        Arc::new(HiveCatalog::new(addr, warehouse, FileIO::new_with_fs())),
        "{}",
        true,
        PK_TABLE,
    )
    .await;
}

#[tokio::test]
async fn mariadb_to_iceberg_on_s3() {
    let s3 = DevServices::load().s3();
    let props = s3.catalog_properties(&format!("s3://{}/wh", s3.new_bucket().await));
    let reader = serde_json::to_string(&props).unwrap();
    pipeline(
        Arc::new(HadoopCatalog::from_properties(&props).unwrap()),
        &reader,
        false,
        PK_TABLE,
    )
    .await;
}
