//! `tributary sync` end to end, as a user runs it: a pipeline file, a
//! MariaDB database with two tables (one partitioned) under random writes,
//! the process killed with SIGKILL mid-run and started again. The Iceberg
//! tables end equal to `SELECT *` (iceberg-rust and pyiceberg read them), and
//! neither the MariaDB password nor the S3 secret appears in the logs, the
//! status output or any file written to the warehouse.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use arrow_array::{Array, Int32Array};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use tributary_catalog::{CatalogTable, HadoopCatalog, TableName};
use tributary_core::{Column, ColumnType, TableId, TableSchema};
use tributary_testkit::{DevServices, dev_dir, unique_name};

mod common;
use common::fixture::*;
use common::{PASSWORD, S3_SECRET, SyncProcess, tributary};

/// Whether the table's last commit recorded an unfinished snapshot.
async fn snapshot_in_progress_committed(catalog: &HadoopCatalog, name: &TableName) -> bool {
    let Ok(t) = catalog.load_table(name).await else {
        return false;
    };
    let cp = tributary_iceberg::committed_checkpoint(&t).unwrap();
    cp.is_some_and(|c| c.properties.contains_key("mysql.snapshot"))
}

fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if std::fs::read(&path)
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
        {
            found.push(path);
        }
    }
    found
}

#[tokio::test]
async fn sync_survives_sigkill_and_ends_equal_to_the_source() {
    let mut f = Fixture::new("sync").await;
    let (db, warehouse, tables) = (f.db.clone(), f.warehouse(), f.tables());
    let config = f.pipeline(&iceberg_sink(&db, &warehouse));
    let log = f.dir.join("sync.log");
    let catalog = HadoopCatalog::new_local(&warehouse).unwrap();

    // Run 1: a rate-limited snapshot (6000 rows at 3000/s) under writes;
    // SIGKILL once a commit recorded the snapshot half done.
    let mut sync = SyncProcess::start(&config, &log);
    let writes = tokio::spawn(write_randomly(f.url.clone(), tables.clone(), 400, 11));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !snapshot_in_progress_committed(&catalog, &TableName::new(&db, "a")).await {
        sync.assert_running();
        assert!(
            Instant::now() < deadline,
            "no snapshot commit in 60 s:\n{}",
            sync.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sync.kill();
    writes.await.unwrap();

    // Run 2: resumes; more writes; ends equal to the source.
    let mut sync = SyncProcess::start(&config, &log);
    write_randomly(f.url.clone(), tables.clone(), 400, 23).await;
    wait_until_equal(&mut f.conn, &Reader::Iceberg(&catalog), &db, &mut sync).await;
    assert!(
        sync.terminate().success(),
        "clean exit on SIGTERM:\n{}",
        sync.log()
    );
    let text = sync.log();
    assert!(
        text.contains("resuming"),
        "run 2 resumed from a commit:\n{text}"
    );

    // Each table's checkpoint carries its own schema only, not every
    // source table's: its size does not grow with the number of tables.
    let a = catalog.load_table(&TableName::new(&db, "a")).await.unwrap();
    let cp = tributary_iceberg::committed_checkpoint(&a)
        .unwrap()
        .unwrap();
    let scoped: Vec<&String> = cp
        .properties
        .keys()
        .filter(|k| k.starts_with("table:"))
        .collect();
    assert_eq!(scoped, [&format!("table:{db}.a:mysql.schema")], "{cp:?}");

    // pyiceberg reads the same rows; b is partitioned into 4 buckets.
    let b = catalog.load_table(&TableName::new(&db, "b")).await.unwrap();
    let out = DevServices::load().run_python(
        r#"
import sys
from pyiceberg.table import StaticTable
t = StaticTable.from_metadata(sys.argv[1])
print(t.scan().to_arrow().num_rows, len(t.spec().fields))
"#,
        &[&b.metadata_location],
    );
    let expected = source_rows(&mut f.conn, &tables[1]).await;
    assert_eq!(
        out.trim(),
        format!("{} 1", expected.len()),
        "pyiceberg rows, partition fields"
    );
    // So does the reference implementation, row for row.
    let java = DevServices::load().iceberg_java_read(&[&b.metadata_location]);
    let java: Rows = java[0]
        .iter()
        .map(|r| {
            let id = r["id"].as_i64().unwrap() as i32;
            (
                id,
                (
                    r["v"].as_i64().map(|v| v as i32),
                    r["s"].as_str().map(str::to_string),
                ),
            )
        })
        .collect();
    assert!(java == expected, "Iceberg Java differs from SELECT * in b");

    assert!(
        text.contains("maintenance: ") && text.contains("compact "),
        "sync ran maintenance in the background:\n{text}"
    );

    // `tributary maintain` (cron style): one pass, JSON per table, exit 0;
    // the tables still equal the source and are compacted.
    let maintain = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["maintain", "--output", "json", "--orphans", "--config"])
        .arg(&config)
        .env("SYNC_TEST_PASSWORD", PASSWORD)
        .env("SYNC_TEST_S3_SECRET", S3_SECRET)
        .output()
        .unwrap();
    let maintain_text = String::from_utf8_lossy(&maintain.stdout).to_string();
    assert!(
        maintain.status.success(),
        "{maintain_text}{}",
        String::from_utf8_lossy(&maintain.stderr)
    );
    let reports: Vec<serde_json::Value> = maintain_text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(reports.len(), 2, "{maintain_text}");
    for (r, partitions) in reports.iter().zip([1, 4]) {
        assert!(
            r["after"]["data_files"].as_u64().unwrap() <= partitions,
            "compacted to a file per partition: {r}"
        );
        assert_eq!(r["after"]["equality_delete_files"], 0, "{r}");
    }
    for t in [0, 1] {
        let name = tables[t].split('.').nth(1).unwrap();
        assert_eq!(
            Reader::Iceberg(&catalog).rows(&db, name).await.unwrap(),
            source_rows(&mut f.conn, &tables[t]).await,
            "{name} after maintain"
        );
    }
    let dry = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args([
            "maintain",
            "--dry-run",
            "--orphans",
            "--orphans-older-than",
            "1s",
            "--config",
        ])
        .arg(&config)
        .env("SYNC_TEST_PASSWORD", PASSWORD)
        .env("SYNC_TEST_S3_SECRET", S3_SECRET)
        .output()
        .unwrap();
    let dry_err = String::from_utf8_lossy(&dry.stderr);
    assert!(
        !dry.status.success() && dry_err.contains("--force"),
        "an orphan age under an hour needs --force: {dry_err}"
    );

    // `status` names both tables with their committed position.
    let status = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["status", "--config"])
        .arg(&config)
        .env("SYNC_TEST_PASSWORD", PASSWORD)
        .env("SYNC_TEST_S3_SECRET", S3_SECRET)
        .output()
        .unwrap();
    let status_text = String::from_utf8_lossy(&status.stdout).to_string()
        + &String::from_utf8_lossy(&status.stderr);
    assert!(status.status.success(), "{status_text}");
    for t in ["a", "b"] {
        assert!(
            status_text.contains(&format!("{db}.{t} -> {db}.{t}: position ")),
            "{status_text}"
        );
    }

    for secret in [PASSWORD, S3_SECRET] {
        assert!(!text.contains(secret), "a secret is in the log");
        assert!(
            !status_text.contains(secret),
            "a secret is in the status output"
        );
        assert!(
            !maintain_text.contains(secret),
            "a secret is in maintain's output"
        );
        let leaked = files_containing(&warehouse, secret);
        assert!(leaked.is_empty(), "a secret is in {leaked:?}");
    }
    f.drop().await;
}

/// A table added to `tables.include` after a first run, and a target
/// table dropped by hand (the remedy after a RENAME), are snapshotted in
/// full on the next start while the other tables resume — not only the
/// rows changed after the restart.
#[tokio::test]
async fn a_table_added_to_the_selection_or_dropped_by_hand_is_read_in_full() {
    let mut f = Fixture::new("sync_add").await;
    let (db, warehouse, tables) = (f.db.clone(), f.warehouse(), f.tables());
    let config = f.pipeline(&iceberg_sink(&db, &warehouse));
    let all = std::fs::read_to_string(&config).unwrap();
    let only_a = all.replace(
        &format!("include = [\"{db}.*\"]"),
        &format!("include = [\"{db}.a\"]"),
    );
    std::fs::write(&config, &only_a).unwrap();
    let log = f.dir.join("sync.log");
    let catalog = HadoopCatalog::new_local(&warehouse).unwrap();
    let reader = Reader::Iceberg(&catalog);
    let mut sync = SyncProcess::start(&config, &log);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        sync.assert_running();
        let want = source_rows(&mut f.conn, &tables[0]).await;
        if reader.rows(&db, "a").await.as_ref() == Some(&want) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a not in within 60 s:\n{}",
            sync.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(sync.terminate().success());
    assert!(reader.rows(&db, "b").await.is_none(), "b was not selected");

    // b joins the selection: all 3000 rows, while a resumes.
    std::fs::write(&config, &all).unwrap();
    write_randomly(f.url.clone(), tables.clone(), 100, 41).await;
    let mut sync = SyncProcess::start(&config, &log);
    wait_until_equal(&mut f.conn, &reader, &db, &mut sync).await;
    assert!(sync.terminate().success());
    let text = sync.log();
    assert!(text.contains("not read yet: snapshotted"), "{text}");

    // b's target is dropped by hand: read in full again.
    std::fs::remove_dir_all(warehouse.join(&db).join("b")).unwrap();
    write_randomly(f.url.clone(), tables.clone(), 100, 43).await;
    let mut sync = SyncProcess::start(&config, &log);
    wait_until_equal(&mut f.conn, &reader, &db, &mut sync).await;
    assert!(sync.terminate().success());
    f.drop().await;
}

/// A table that stays idle across restarts no longer pins the resume
/// point: each run records its position (it had no change since the
/// resume point), so the next run resumes after the last one's commits
/// instead of replaying from the idle table's first commit for ever.
#[tokio::test]
async fn an_idle_table_across_three_restarts_does_not_hold_back_the_resume_position() {
    let mut f = Fixture::new("sync_idle").await;
    let (db, warehouse, tables) = (f.db.clone(), f.warehouse(), f.tables());
    let config = f.pipeline(&iceberg_sink(&db, &warehouse));
    let log = f.dir.join("sync.log");
    let catalog = HadoopCatalog::new_local(&warehouse).unwrap();
    let reader = Reader::Iceberg(&catalog);
    let committed = async |t: &str| {
        let table = catalog.load_table(&TableName::new(&db, t)).await.unwrap();
        tributary_iceberg::committed_checkpoint(&table)
            .unwrap()
            .unwrap()
    };
    let mut sync = SyncProcess::start(&config, &log);
    wait_until_equal(&mut f.conn, &reader, &db, &mut sync).await;
    assert!(sync.terminate().success());
    let mut rounds = vec![committed("b").await.round().unwrap()];
    for seed in [51, 53, 57] {
        // Only a changes; b stays idle.
        let only_a = [tables[0].clone(), tables[0].clone()];
        write_randomly(f.url.clone(), only_a, 60, seed).await;
        let mut sync = SyncProcess::start(&config, &log);
        wait_until_equal(&mut f.conn, &reader, &db, &mut sync).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while committed("b").await.round() <= rounds.last().copied() {
            sync.assert_running();
            assert!(
                Instant::now() < deadline,
                "b's position not recorded:\n{}",
                sync.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(sync.terminate().success());
        rounds.push(committed("b").await.round().unwrap());
    }
    assert!(rounds.windows(2).all(|w| w[0] < w[1]), "{rounds:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.matches("recorded the position of idle tables").count(),
        3,
        "once per restart:\n{text}"
    );
    f.drop().await;
}

/// Two `tributary sync` processes on one pipeline (a rolling deploy with
/// surge; distinct server ids): the second claims the tables at start and
/// the first is fenced at its next commit — it exits naming the new owner
/// — while the writes go on. The tables end equal to the source, no key
/// twice (before: 1,909 rows for 1,096 keys).
#[tokio::test]
async fn a_second_process_on_the_same_pipeline_fences_the_first_and_no_key_is_duplicated() {
    let mut f = Fixture::new("sync_two").await;
    let (db, warehouse, tables) = (f.db.clone(), f.warehouse(), f.tables());
    let config = f.pipeline(&iceberg_sink(&db, &warehouse));
    let second_config = f.dir.join("pipeline-2.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &second_config,
        text.replace("server_id = 7101", "server_id = 7102"),
    )
    .unwrap();
    let catalog = HadoopCatalog::new_local(&warehouse).unwrap();
    let reader = Reader::Iceberg(&catalog);
    let mut first = SyncProcess::start(&config, &f.dir.join("first.log"));
    wait_until_equal(&mut f.conn, &reader, &db, &mut first).await;
    let writes = tokio::spawn(write_randomly(f.url.clone(), tables.clone(), 1500, 61));
    let mut second = SyncProcess::start(&second_config, &f.dir.join("second.log"));
    let status = first.wait_exit(Duration::from_secs(60)).await;
    assert!(!status.success());
    let log = first.log();
    assert!(
        log.contains("fenced") && log.contains("was taken over by tributary sync on"),
        "{log}"
    );
    writes.await.unwrap();
    wait_until_equal(&mut f.conn, &reader, &db, &mut second).await;
    assert!(second.terminate().success());
    f.drop().await;
}

/// Two jobs with the same `server_id` (a copied pipeline file): MariaDB
/// refuses the second replica. The second job says which setting to fix
/// and keeps retrying instead of exiting; once the first stops, it takes
/// the binlog and its tables catch up.
#[tokio::test]
async fn a_second_job_on_the_same_server_id_names_the_fix_and_retries_until_it_is_free() {
    let mut first_db = Fixture::new("sync_sid").await;
    let mut f = Fixture::new("sync_sid").await;
    let first_config = first_db.pipeline(&iceberg_sink(&first_db.db, &first_db.warehouse()));
    let config = f.pipeline(&iceberg_sink(&f.db, &f.warehouse()));
    let catalog = HadoopCatalog::new_local(f.warehouse()).unwrap();
    let first_catalog = HadoopCatalog::new_local(first_db.warehouse()).unwrap();
    let mut first = SyncProcess::start(&first_config, &first_db.dir.join("first.log"));
    let first_db_name = first_db.db.clone();
    wait_until_equal(
        &mut first_db.conn,
        &Reader::Iceberg(&first_catalog),
        &first_db_name,
        &mut first,
    )
    .await;
    let mut second = SyncProcess::start(&config, &f.dir.join("second.log"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !second
        .log()
        .contains("another replica is reading the binlog with server_id 7101")
    {
        second.assert_running();
        first.assert_running();
        assert!(Instant::now() < deadline, "{}", second.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(second.log().contains("[source.mysql] server_id"));
    assert!(first.terminate().success());
    write_randomly(f.url.clone(), f.tables(), 100, 67).await;
    let db = f.db.clone();
    wait_until_equal(&mut f.conn, &Reader::Iceberg(&catalog), &db, &mut second).await;
    assert!(second.terminate().success());
    for fixture in [first_db, f] {
        fixture.drop().await;
    }
}

/// The source connection goes dead without closing (a black-holed
/// network): the binlog stream notices the missing heartbeats within its
/// deadline, the job starts again from its last commit over a new
/// connection, and the tables catch up — instead of stalling silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_source_connection_times_out_and_the_job_reconnects() {
    let mut f = Fixture::new("sync_hole").await;
    let (db, warehouse, tables) = (f.db.clone(), f.warehouse(), f.tables());
    let m = DevServices::load().mariadb();
    let proxy = tributary_testkit::FaultProxy::start(format!("{}:{}", m.host, m.port)).await;
    let config = f.pipeline(&iceberg_sink(&db, &warehouse));
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("port = {}", m.port),
        &format!("port = {}", proxy.port()),
    );
    std::fs::write(&config, text).unwrap();
    let log = f.dir.join("sync.log");
    let catalog = HadoopCatalog::new_local(&warehouse).unwrap();
    let reader = Reader::Iceberg(&catalog);
    let mut sync = SyncProcess::start(&config, &log);
    wait_until_equal(&mut f.conn, &reader, &db, &mut sync).await;
    proxy.black_hole();
    let holed_at = Instant::now();
    write_randomly(f.url.clone(), tables.clone(), 200, 71).await;
    wait_until_equal(&mut f.conn, &reader, &db, &mut sync).await;
    let text = sync.log();
    assert!(text.contains("the binlog connection is dead"), "{text}");
    assert!(
        text.contains("starting again from the last commit"),
        "{text}"
    );
    // Heartbeats every 0.2 s: dead after 2.6 s, back after a 1 s backoff.
    assert!(holed_at.elapsed() < Duration::from_secs(60));
    assert!(sync.terminate().success());
    f.drop().await;
}

/// `on_table_error = "pause"`: a DDL the Iceberg table cannot follow (INT
/// to VARCHAR) pauses that table at its last commit while the other keeps
/// flowing — across a restart too, without holding back the resume point —
/// and `status` names the cause. Once the cause is reverted, `tributary
/// resnapshot` empties it and the next start reads it in full.
#[tokio::test]
async fn a_paused_table_stays_at_its_commit_while_the_others_flow_and_resnapshot_heals_it() {
    let mut f = Fixture::new("sync_pause").await;
    let (db, warehouse, tables) = (f.db.clone(), f.warehouse(), f.tables());
    let sink = format!(
        "{}\n[pipeline]\non_table_error = \"pause\"\n",
        iceberg_sink(&db, &warehouse)
    );
    let config = f.pipeline(&sink);
    let config_arg = config.to_str().unwrap();
    let log = f.dir.join("sync.log");
    let catalog = HadoopCatalog::new_local(&warehouse).unwrap();
    let reader = Reader::Iceberg(&catalog);
    let mut sync = SyncProcess::start(&config, &log);
    wait_until_equal(&mut f.conn, &reader, &db, &mut sync).await;
    let a_before = reader.rows(&db, "a").await.unwrap();

    let (a, b) = (&tables[0], &tables[1]);
    f.conn
        .query_drop(format!("ALTER TABLE {a} MODIFY v VARCHAR(20)"))
        .await
        .unwrap();
    write_randomly(f.url.clone(), tables.clone(), 300, 91).await;
    wait_until_tables_equal(&mut f.conn, &reader, &db, &["b"], &mut sync).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !sync
        .log()
        .contains("paused: the table stays at its last commit")
    {
        sync.assert_running();
        assert!(Instant::now() < deadline, "not paused:\n{}", sync.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        reader.rows(&db, "a").await.unwrap(),
        a_before,
        "a stays at its commit"
    );
    let (ok, out) = tributary(&["status", "--config", config_arg]);
    assert!(ok.success(), "{out}");
    let a_line = out
        .lines()
        .find(|l| l.starts_with(&format!("{a} ")))
        .unwrap();
    assert!(
        a_line.contains("PAUSED") && a_line.contains("cannot promote"),
        "{out}"
    );
    assert!(
        !out.lines()
            .any(|l| l.starts_with(&format!("{b} ")) && l.contains("PAUSED"))
    );
    assert!(sync.terminate().success());

    // A restart keeps a paused and b flowing; b's commits move on past a's.
    let b_round = |t: CatalogTable| {
        tributary_iceberg::committed_checkpoint(&t)
            .unwrap()
            .unwrap()
            .round()
    };
    let round_before = b_round(catalog.load_table(&TableName::new(&db, "b")).await.unwrap());
    write_randomly(f.url.clone(), tables.clone(), 200, 93).await;
    let mut sync = SyncProcess::start(&config, &log);
    wait_until_tables_equal(&mut f.conn, &reader, &db, &["b"], &mut sync).await;
    assert!(
        sync.log().contains("paused: its changes are skipped"),
        "{}",
        sync.log()
    );
    assert_eq!(reader.rows(&db, "a").await.unwrap(), a_before);
    let round_after = b_round(catalog.load_table(&TableName::new(&db, "b")).await.unwrap());
    assert!(
        round_after > round_before,
        "{round_before:?} -> {round_after:?}"
    );

    // Heal while the job runs: the type change is reverted, and both the
    // paused a and the flowing b are re-read in full (the job notices at
    // its next round and starts again from its commits).
    f.conn
        .query_drop(format!("ALTER TABLE {a} MODIFY v INT"))
        .await
        .unwrap();
    let (ok, out) = tributary(&["resnapshot", "--config", config_arg, a, b]);
    assert!(
        ok.success() && out.matches("emptied;").count() == 2,
        "{out}"
    );
    let (ok, out) = tributary(&["resnapshot", "--config", config_arg, &format!("{db}.nope")]);
    assert!(
        !ok.success() && out.contains("not among the pipeline's selected tables"),
        "{out}"
    );
    write_randomly(f.url.clone(), tables.clone(), 100, 97).await;
    wait_until_equal(&mut f.conn, &reader, &db, &mut sync).await;
    assert!(
        sync.log().contains("emptied by `tributary resnapshot`"),
        "{}",
        sync.log()
    );
    assert!(sync.terminate().success());
    let (_, out) = tributary(&["status", "--config", config_arg]);
    assert!(!out.contains("PAUSED"), "healed:\n{out}");
    f.drop().await;
}

/// Completeness for schedulers: each Iceberg snapshot carries the
/// watermark W (`tributary.watermark-ms`), W never goes back, and every
/// source row committed before W is in that snapshot; `tributary wait`
/// exits 0 once W passes `--until` (also on an idle source), 1 at its
/// timeout, 2 on an error.
#[tokio::test]
async fn the_watermark_is_monotonic_and_true_and_wait_exits_by_it() {
    let mut f = Fixture::new("sync_wm").await;
    let (db, warehouse) = (f.db.clone(), f.warehouse());
    let c = format!("{db}.c");
    f.conn
        .query_drop(format!(
            "CREATE TABLE {c} (id INT AUTO_INCREMENT PRIMARY KEY, ts DATETIME(6) NOT NULL)"
        ))
        .await
        .unwrap();
    let sink = iceberg_sink(&db, &warehouse).replace(
        "commit_interval = 0.3",
        "commit_interval = 0.3\nidle_commit_interval = 1",
    );
    let config = f.pipeline(&sink);
    let config_arg = config.to_str().unwrap().to_string();
    let log = f.dir.join("sync.log");
    let catalog = HadoopCatalog::new_local(&warehouse).unwrap();
    let mut sync = SyncProcess::start(&config, &log);
    let writer = {
        let url = f.url.clone();
        let c = c.clone();
        tokio::spawn(async move {
            let mut conn = Conn::new(Opts::from_url(&url).unwrap()).await.unwrap();
            for _ in 0..400 {
                let sql = format!("INSERT INTO {c} (ts) VALUES (NOW(6))");
                conn.query_drop(sql).await.unwrap();
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        })
    };
    let name = TableName::new(&db, "c");
    let (mut seen, mut checks) = (Vec::<i64>::new(), 0);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !writer.is_finished() || checks < 5 {
        sync.assert_running();
        assert!(Instant::now() < deadline, "{}", sync.log());
        tokio::time::sleep(Duration::from_millis(150)).await;
        let Ok(t) = catalog.load_table(&name).await else {
            continue;
        };
        let Some(w) = t.metadata.current_snapshot().and_then(|s| {
            let props = &s.summary().additional_properties;
            props
                .get(tributary_iceberg::WATERMARK_PROPERTY)?
                .parse::<i64>()
                .ok()
        }) else {
            continue;
        };
        let mut held = std::collections::BTreeSet::new();
        for b in t.scan(None).await.unwrap() {
            let id = b.column_by_name("id").unwrap();
            held.extend(
                id.as_any()
                    .downcast_ref::<Int32Array>()
                    .unwrap()
                    .values()
                    .iter()
                    .copied(),
            );
        }
        let before: Vec<i32> = f
            .conn
            .query(format!(
                "SELECT id FROM {c} WHERE ts < FROM_UNIXTIME({w} / 1000)"
            ))
            .await
            .unwrap();
        let missing: Vec<&i32> = before.iter().filter(|id| !held.contains(id)).collect();
        assert!(
            missing.is_empty(),
            "committed before W={w} but not in its snapshot: {missing:?}"
        );
        if seen.last() != Some(&w) {
            seen.push(w);
            checks += usize::from(!before.is_empty());
        }
    }
    assert!(
        seen.windows(2).all(|p| p[0] <= p[1]),
        "W went back: {seen:?}"
    );
    writer.await.unwrap();

    // The source idles: W passes `now` through heartbeats and idle commits.
    let (ok, out) = tributary(&[
        "wait",
        "--config",
        &config_arg,
        "--table",
        &c,
        "--until",
        "now",
        "--timeout",
        "60s",
        "--poll",
        "200ms",
    ]);
    assert!(ok.success(), "{out}\n{}", sync.log());
    assert!(out.contains("complete up to"), "{out}");
    let (ok, out) = tributary(&[
        "wait",
        "--config",
        &config_arg,
        "--table",
        &c,
        "--until",
        "2099-01-01T00:00:00Z",
        "--timeout",
        "1s",
        "--poll",
        "200ms",
    ]);
    assert_eq!(ok.code(), Some(1), "{out}");
    assert!(out.contains("not complete up to 2099-01-01"), "{out}");
    let (ok, out) = tributary(&[
        "wait",
        "--config",
        &config_arg,
        "--table",
        &format!("{db}.nope"),
        "--until",
        "now",
    ]);
    assert_eq!(ok.code(), Some(2), "{out}");
    let (ok, out) = tributary(&["status", "--config", &config_arg, "--output", "json"]);
    assert!(ok.success(), "{out}");
    let line = out
        .lines()
        .find(|l| l.contains(&format!("\"{c}\"")))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["phase"], "streaming", "{v}");
    assert!(
        v["watermark_ms"].as_i64().unwrap() >= *seen.last().unwrap(),
        "{v}"
    );
    assert!(sync.terminate().success());

    // `inspect` shows the same commit, and the files the table's own
    // snapshot summary counts.
    let (ok, out) = tributary(&["inspect", "--config", &config_arg, &c, "--output", "json"]);
    assert!(ok.success(), "{out}");
    let inspected: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let t = catalog.load_table(&name).await.unwrap();
    let summary = &t
        .metadata
        .current_snapshot()
        .unwrap()
        .summary()
        .additional_properties;
    let total = |k: &str| summary[k].parse::<u64>().unwrap();
    assert_eq!(inspected["position"], v["position"], "{inspected}");
    assert_eq!(inspected["version"], t.version, "{inspected}");
    assert_eq!(
        inspected["shape"]["data_files"].as_u64(),
        Some(total("total-data-files")),
        "{inspected}"
    );
    assert_eq!(
        inspected["shape"]["position_delete_files"]
            .as_u64()
            .unwrap()
            + inspected["shape"]["equality_delete_files"]
                .as_u64()
                .unwrap(),
        total("total-delete-files"),
        "{inspected}"
    );
    assert!(
        inspected["watermark"].as_str().unwrap().starts_with("20"),
        "{inspected}"
    );
    let newest = inspected["newest_snapshots"].as_array().unwrap();
    assert_eq!(
        newest[0]["snapshot_id"],
        t.metadata.current_snapshot_id().unwrap(),
        "{inspected}"
    );
    let (ok, text) = tributary(&["inspect", "--config", &config_arg, &c]);
    assert!(ok.success(), "{text}");
    assert!(
        text.contains(&format!("{db}.c (from {c}), version {}", t.version))
            && text.contains("  health: "),
        "{text}"
    );
    let (ok, text) = tributary(&["inspect", "--config", &config_arg, &format!("{db}.nope")]);
    assert!(!ok.success() && text.contains("nope"), "{text}");
    f.drop().await;
}

/// A source that goes silent (its connection black-holed) is caught by
/// `restart_on_heartbeat_age` before the stream's own dead-connection
/// deadline (3 heartbeats + 2 s = 3.5 s here): the run starts again and the
/// tables catch up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_source_past_restart_on_heartbeat_age_starts_the_run_again() {
    let mut f = Fixture::new("sync_quiet").await;
    let (db, warehouse, tables) = (f.db.clone(), f.warehouse(), f.tables());
    let m = DevServices::load().mariadb();
    let proxy = tributary_testkit::FaultProxy::start(format!("{}:{}", m.host, m.port)).await;
    let sink = format!(
        "{}\n[pipeline]\nrestart_on_heartbeat_age = 1.5\n",
        iceberg_sink(&db, &warehouse)
    );
    let config = f.pipeline(&sink);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(
            &format!("port = {}", m.port),
            &format!("port = {}", proxy.port()),
        )
        .replace("heartbeat_interval = 0.2", "heartbeat_interval = 0.5");
    std::fs::write(&config, text).unwrap();
    let log = f.dir.join("sync.log");
    let catalog = HadoopCatalog::new_local(&warehouse).unwrap();
    let reader = Reader::Iceberg(&catalog);
    let mut sync = SyncProcess::start(&config, &log);
    wait_until_equal(&mut f.conn, &reader, &db, &mut sync).await;
    assert!(
        !sync.log().contains("restart_on_heartbeat_age"),
        "a healthy stream hands out a heartbeat every 0.5 s:\n{}",
        sync.log()
    );
    proxy.black_hole();
    write_randomly(f.url.clone(), tables.clone(), 200, 73).await;
    wait_until_equal(&mut f.conn, &reader, &db, &mut sync).await;
    let text = sync.log();
    assert!(
        text.contains("handed out nothing (no change, no heartbeat) for 1s 500ms"),
        "{text}"
    );
    assert!(!text.contains("the binlog connection is dead"), "{text}");
    assert!(sync.terminate().success());
    f.drop().await;
}

/// On a terminal the initial read draws a progress bar (rows, rows/s)
/// instead of log lines: `sync` under a pseudo-terminal (util-linux
/// `script`), the bar read back from what the terminal received.
#[tokio::test]
async fn on_a_terminal_the_snapshot_draws_a_progress_bar() {
    let f = Fixture::new("sync_tty").await;
    let (db, warehouse) = (f.db.clone(), f.warehouse());
    // Log lines would come every 0.2 s; a terminal gets the bar instead.
    let sink = format!(
        "{}\n[pipeline]\nprogress_interval = 0.2\n",
        iceberg_sink(&db, &warehouse)
    );
    let config = f.pipeline(&sink);
    let screen = f.dir.join("terminal.txt");
    let command = format!(
        "{} sync --config {}",
        env!("CARGO_BIN_EXE_tributary"),
        config.display()
    );
    let mut script = Command::new("script")
        .args(["--quiet", "--return", "--flush", "--command", &command])
        .arg(&screen)
        .env("SYNC_TEST_PASSWORD", PASSWORD)
        .env("SYNC_TEST_S3_SECRET", S3_SECRET)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("script (util-linux)");
    let deadline = Instant::now() + Duration::from_secs(90);
    let seen = loop {
        let text = std::fs::read_to_string(&screen).unwrap_or_default();
        if text.contains("snapshot done") {
            break text;
        }
        if Instant::now() > deadline || script.try_wait().unwrap().is_some() {
            let _ = script.kill();
            panic!("no \"snapshot done\" on the terminal:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The pseudo-terminal closes with `script`: the job gets SIGHUP.
    let _ = script.kill();
    let _ = script.wait();
    let bar = seen
        .split("snapshot ")
        .find(|part| part.contains(" rows, ") && part.contains("/s"))
        .unwrap_or_else(|| panic!("no progress bar on the terminal:\n{seen}"));
    assert!(
        !bar.starts_with("progress:"),
        "a bar, not log lines:\n{seen}"
    );
    assert!(!seen.contains("snapshot progress:"), "{seen}");
    assert!(!seen.contains(PASSWORD));
    f.drop().await;
}

/// The job's HTTP listener: `/metrics` parses with Prometheus' own parser
/// and counts what was written, `/status` lists every table with its
/// lineage, `ready` answers 200 once the table is complete up to a time and
/// 404 before, the page shows every table — and no secret is in any of it.
#[tokio::test]
async fn metrics_status_completeness_and_the_page_are_served_without_secrets() {
    let mut f = Fixture::new("sync_http").await;
    let (db, warehouse, tables) = (f.db.clone(), f.warehouse(), f.tables());
    let port = tributary_testkit::free_port();
    let sink = format!(
        "{}\n[pipeline]\nhttp_listen = \"127.0.0.1:{port}\"\nprogress_interval = 0.2\n",
        iceberg_sink(&db, &warehouse).replace(
            "commit_interval = 0.3",
            "commit_interval = 0.3\nidle_commit_interval = 1"
        )
    );
    let config = f.pipeline(&sink);
    let log = f.dir.join("sync.log");
    let catalog = HadoopCatalog::new_local(&warehouse).unwrap();
    let reader = Reader::Iceberg(&catalog);
    let mut sync = SyncProcess::start(&config, &log);
    wait_until_equal(&mut f.conn, &reader, &db, &mut sync).await;
    write_randomly(f.url.clone(), tables.clone(), 200, 61).await;
    wait_until_equal(&mut f.conn, &reader, &db, &mut sync).await;

    // Complete up to a time after the last write: 404 until the watermark
    // passes it (heartbeats and idle commits move it), then 200.
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let ready = format!("/v1/tables/{}/ready?until={until}", tables[0]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        sync.assert_running();
        if http_get(port, &ready)
            .await
            .is_some_and(|(code, _)| code == 200)
        {
            break;
        }
        assert!(Instant::now() < deadline, "never ready:\n{}", sync.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, _) = http_get(
        port,
        &format!("/v1/tables/{}/ready?until=2100-01-01T00:00:00Z", tables[0]),
    )
    .await
    .unwrap();
    assert_eq!(code, 404);
    let (code, body) = http_get(port, &format!("/v1/tables/{}/completeness", tables[1]))
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["watermark_ms"]
            .as_i64()
            .is_some()
    );

    let (code, metrics) = http_get(port, "/metrics").await.unwrap();
    assert_eq!(code, 200);
    let parsed = DevServices::load().run_python(
        r#"
import sys, json
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read() if len(sys.argv) < 2 else sys.argv[1]):
    for s in family.samples:
        out.setdefault(s.name, []).append([s.labels, s.value])
print(json.dumps(out))
"#,
        &[&metrics],
    );
    let parsed: serde_json::Value = serde_json::from_str(parsed.trim()).unwrap();
    let sample = |name: &str, table: &str, op: Option<&str>| -> f64 {
        parsed[name]
            .as_array()
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
            .iter()
            .filter(|s| s[0]["table"] == table && op.is_none_or(|op| s[0]["op"] == op))
            .map(|s| s[1].as_f64().unwrap())
            .sum()
    };
    for t in &tables {
        assert_eq!(
            sample("tributary_events_total", t, Some("read")),
            3000.0,
            "{metrics}"
        );
        assert_eq!(sample("tributary_snapshot_rows_total", t, None), 3000.0);
        let lag = sample("tributary_source_lag_seconds", t, None);
        assert!((0.0..60.0).contains(&lag), "lag {lag}");
        assert!(sample("tributary_table_watermark_timestamp_seconds", t, None) > 1.7e9);
        assert!(sample("tributary_sink_commit_duration_seconds_count", t, None) >= 1.0);
    }
    let changed: f64 = ["insert", "update", "delete"]
        .iter()
        .map(|op| {
            sample("tributary_events_total", &tables[0], Some(op))
                + sample("tributary_events_total", &tables[1], Some(op))
        })
        .sum();
    assert!(changed > 0.0, "{metrics}");
    // The writers' own counters: updates and deletes wrote the small files
    // holding the old rows again (copy-on-write, the default for small
    // files; no equality delete), key lookups tested bloom filters, every
    // batch's per-record time was observed.
    let both = |name: &str, kind: Option<&str>| -> f64 {
        tables
            .iter()
            .map(|t| {
                parsed[name]
                    .as_array()
                    .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
                    .iter()
                    .filter(|s| s[0]["table"] == *t && kind.is_none_or(|k| s[0]["kind"] == k))
                    .map(|s| s[1].as_f64().unwrap())
                    .sum::<f64>()
            })
            .sum()
    };
    assert!(
        both("tributary_copy_on_write_files_total", None) > 0.0,
        "{metrics}"
    );
    assert_eq!(
        both("tributary_delete_files_total", Some("equality")),
        0.0,
        "{metrics}"
    );
    assert!(
        both("tributary_bloom_filter_tests_total", None) > 0.0,
        "{metrics}"
    );
    assert!(
        both("tributary_bloom_filter_skips_total", None)
            <= both("tributary_bloom_filter_tests_total", None)
    );
    assert!(
        both("tributary_record_processing_seconds_count", None) >= 2.0,
        "{metrics}"
    );

    let (code, status) = http_get(port, "/status").await.unwrap();
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["tables"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(
        v["lineage"][0]["from"],
        format!("mysql:{}", tables[0]),
        "{v}"
    );
    assert_eq!(
        v["lineage"][0]["to"],
        format!("iceberg:{}", tables[0]),
        "{v}"
    );
    let (code, page) = http_get(port, "/").await.unwrap();
    assert_eq!(code, 200);
    for t in &tables {
        assert!(page.contains(&format!("data-table=\"{t}\"")), "{page}");
    }
    // The page as a browser renders it: a row per table, streaming.
    let shot = f.dir.join("status.png");
    let dom = DevServices::load().chromium_render(&format!("http://127.0.0.1:{port}/"), &shot);
    for t in &tables {
        let row = dom
            .split(&format!("<tr data-table=\"{t}\">"))
            .nth(1)
            .unwrap_or_else(|| panic!("no row of {t} in the rendered page:\n{dom}"));
        let row = row.split("</tr>").next().unwrap();
        assert!(row.contains("<td class=\"phase\">streaming</td>"), "{row}");
    }
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5000,
        "a screenshot of the page"
    );
    for text in [&metrics, &status, &page, &dom] {
        assert!(!text.contains(PASSWORD) && !text.contains(S3_SECRET));
    }
    // The initial read logged its progress (not a terminal: plain lines,
    // against the server's row estimate) and its end.
    let text = sync.log();
    assert!(
        text.contains("snapshot progress: ") && text.contains(" rows/s"),
        "{text}"
    );
    assert!(text.contains("snapshot done: 6000 rows in "), "{text}");
    assert!(sync.terminate().success());
    f.drop().await;
}

/// Binlogs purged past the committed position: by default the job stops
/// naming the fixes; with `on_position_lost = "resnapshot"` every target is
/// emptied and read again in full, and the tables end equal to the source
/// (rows changed while the job was down included).
#[tokio::test]
async fn a_lost_binlog_position_stops_or_resnapshots_every_table_by_policy() {
    let mut f = Fixture::new("sync_lostpos").await;
    let (db, warehouse, tables) = (f.db.clone(), f.warehouse(), f.tables());
    let config = f.pipeline(&iceberg_sink(&db, &warehouse));
    let log = f.dir.join("sync.log");
    let catalog = HadoopCatalog::new_local(&warehouse).unwrap();
    let reader = Reader::Iceberg(&catalog);
    let mut sync = SyncProcess::start(&config, &log);
    wait_until_equal(&mut f.conn, &reader, &db, &mut sync).await;
    assert!(sync.terminate().success());

    write_randomly(f.url.clone(), tables.clone(), 200, 73).await;
    tributary_testkit::purge_binlogs(&mut f.conn).await;

    let mut sync = SyncProcess::start(&config, &log);
    let status = sync.wait_exit(Duration::from_secs(60)).await;
    assert!(!status.success());
    let text = sync.log();
    assert!(
        text.contains("position lost") && text.contains("on_position_lost = \"resnapshot\""),
        "{text}"
    );

    let with_policy = std::fs::read_to_string(&config).unwrap()
        + "\n[pipeline]\non_position_lost = \"resnapshot\"\n";
    std::fs::write(&config, with_policy).unwrap();
    let mut sync = SyncProcess::start(&config, &log);
    wait_until_equal(&mut f.conn, &reader, &db, &mut sync).await;
    assert!(
        sync.log()
            .contains("emptying every target and reading every table again")
    );
    write_randomly(f.url.clone(), tables.clone(), 100, 79).await;
    wait_until_equal(&mut f.conn, &reader, &db, &mut sync).await;
    assert!(sync.terminate().success());
    f.drop().await;
}

/// The object store under the warehouse goes dead without closing its
/// connections: the sink call that waits on it fails at `sink_timeout`
/// (data files go through FileIO, which has no deadline of its own), the
/// job starts again from its commits, and the tables catch up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_object_store_fails_the_sink_call_in_time_and_the_job_recovers() {
    black_holed_object_store(
        "sink_timeout = 3",
        &["no answer within", "may or may not have been applied"],
    )
    .await;
}

/// The same stuck store with a long sink deadline: `restart_on_lag` sees
/// the watermark stand still while the lag grows, and starts the run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watermark_standing_still_past_restart_on_lag_starts_the_run_again() {
    black_holed_object_store(
        "sink_timeout = 600\nrestart_on_lag = 3",
        &["(restart_on_lag)"],
    )
    .await;
}

/// Streams into an S3 warehouse behind a proxy, black-holes every
/// connection to the store (new ones too), waits for the run to start
/// again with one of `expected` in the log, lifts the hole and waits until
/// equal.
async fn black_holed_object_store(pipeline: &str, expected: &[&str]) {
    let mut f = Fixture::new("sync_s3hole").await;
    let (db, tables) = (f.db.clone(), f.tables());
    let s3 = DevServices::load().s3();
    let bucket = s3.new_bucket().await;
    let proxy =
        tributary_testkit::FaultProxy::start(s3.endpoint.trim_start_matches("http://")).await;
    let sink = format!(
        r#"
[sink.iceberg]
commit_interval = 0.3
properties = {{ warehouse = "s3://{bucket}/wh", "s3.endpoint" = "http://{addr}", "s3.region" = "{region}", "s3.access-key-id" = "{key}", "s3.secret-access-key" = "${{SYNC_TEST_S3_SECRET}}", "s3.path-style-access" = "true", "timeout-ms" = "2000" }}
maintenance = {{ enabled = false }}

[pipeline]
{pipeline}
"#,
        addr = proxy.addr(),
        region = s3.region,
        key = s3.access_key_id,
    );
    let config = f.pipeline(&sink);
    let log = f.dir.join("sync.log");
    let catalog =
        HadoopCatalog::from_properties(&s3.catalog_properties(&format!("s3://{bucket}/wh")))
            .unwrap();
    let reader = Reader::Iceberg(&catalog);
    let mut sync = SyncProcess::start(&config, &log);
    wait_until_equal(&mut f.conn, &reader, &db, &mut sync).await;
    proxy.black_hole_all();
    write_randomly(f.url.clone(), tables.clone(), 200, 83).await;
    // The stuck call is cut short and the run starts again (and again,
    // while the store stays dead) instead of hanging.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !expected.iter().any(|e| sync.log().contains(e)) {
        sync.assert_running();
        assert!(
            Instant::now() < deadline,
            "no {expected:?}:\n{}",
            sync.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.lift();
    wait_until_equal(&mut f.conn, &reader, &db, &mut sync).await;
    let text = sync.log();
    assert!(
        text.contains("starting again from the last commit"),
        "{text}"
    );
    assert!(!text.contains(S3_SECRET));
    assert!(sync.terminate().success());
    f.drop().await;
}

/// A target table that exists without any checkpoint (its first commit never
/// happened) holds nothing committed: the next run empties it and snapshots
/// it again, while the other tables resume from their commits — so rows the
/// source deleted meanwhile disappear from them too (a restart of
/// everything from a new snapshot would keep those).
#[tokio::test]
async fn a_table_without_a_checkpoint_is_snapshotted_again_and_the_rest_resume() {
    let mut f = Fixture::new("sync_lost").await;
    let (db, warehouse) = (f.db.clone(), f.warehouse());
    let config = f.pipeline(&iceberg_sink(&db, &warehouse));
    let log = f.dir.join("sync.log");
    let catalog = HadoopCatalog::new_local(&warehouse).unwrap();
    let reader = Reader::Iceberg(&catalog);

    let mut sync = SyncProcess::start(&config, &log);
    wait_until_equal(&mut f.conn, &reader, &db, &mut sync).await;
    assert!(sync.terminate().success());

    // b loses its state: an empty table without a snapshot replaces it.
    std::fs::remove_dir_all(warehouse.join(&db).join("b")).unwrap();
    let cols = vec![
        Column::new("id", ColumnType::Int32, false),
        Column::new("v", ColumnType::Int32, true),
        Column::new("s", ColumnType::String { max_len: Some(20) }, true),
    ];
    let b = TableSchema::new(TableId::new(&db, "b"), cols, &["id"], 1).unwrap();
    let schema = tributary_iceberg::types::iceberg_schema(&b).unwrap();
    let spec =
        tributary_iceberg::partition::unbound_spec(&["bucket(4, id)".parse().unwrap()], &schema)
            .unwrap();
    catalog
        .create_table(&TableName::new(&db, "b"), schema, spec, Default::default())
        .await
        .unwrap();
    // While nothing runs, the source deletes rows of both tables.
    for t in ["a", "b"] {
        f.conn
            .query_drop(format!("DELETE FROM {db}.{t} WHERE id < 1000"))
            .await
            .unwrap();
    }

    let mut sync = SyncProcess::start(&config, &log);
    wait_until_equal(&mut f.conn, &reader, &db, &mut sync).await;
    assert!(sync.terminate().success());
    let text = sync.log();
    assert!(text.contains("to be snapshotted again"), "{text}");
    assert!(text.contains("resuming"), "{text}");
    f.drop().await;
}

/// `TRUNCATE` of a source table while streaming: its Iceberg table is
/// emptied at that position (the other table is untouched) and the rows
/// written after it land; a `kill -9` right after, and the restart replays
/// the truncate without losing the later rows. `ALTER TABLE … MODIFY id
/// BIGINT` on the key of the other table is followed in place.
#[tokio::test]
async fn a_truncate_and_a_widened_key_while_streaming_end_equal_to_the_source() {
    let mut f = Fixture::new("sync_trunc").await;
    let (db, warehouse) = (f.db.clone(), f.warehouse());
    let config = f.pipeline(&iceberg_sink(&db, &warehouse));
    let log = f.dir.join("sync.log");
    let catalog = HadoopCatalog::new_local(&warehouse).unwrap();
    let reader = Reader::Iceberg(&catalog);
    let mut sync = SyncProcess::start(&config, &log);
    wait_until_equal(&mut f.conn, &reader, &db, &mut sync).await;
    for sql in [
        format!("TRUNCATE TABLE {db}.a"),
        format!("INSERT INTO {db}.a VALUES (1, 1, 'after'), (2, 2, 'after')"),
        format!("ALTER TABLE {db}.b MODIFY id BIGINT NOT NULL"),
        format!("UPDATE {db}.b SET s = 'widened' WHERE id < 100"),
        format!("DELETE FROM {db}.b WHERE id >= 5000"),
    ] {
        f.conn.query_drop(sql).await.unwrap();
    }
    wait_until_equal(&mut f.conn, &reader, &db, &mut sync).await;
    sync.kill();
    f.conn
        .query_drop(format!("INSERT INTO {db}.a VALUES (3, 3, 'restart')"))
        .await
        .unwrap();
    let mut sync = SyncProcess::start(&config, &log);
    wait_until_equal(&mut f.conn, &reader, &db, &mut sync).await;
    assert!(sync.terminate().success());
    let a = catalog.load_table(&TableName::new(&db, "a")).await.unwrap();
    assert_eq!(
        iceberg_rows(&catalog, &TableName::new(&db, "a"))
            .await
            .unwrap()
            .len(),
        3
    );
    let ops: Vec<String> = a
        .metadata
        .snapshots()
        .map(|s| format!("{:?}", s.summary().operation))
        .collect();
    assert!(ops.iter().any(|o| o == "Overwrite"), "{ops:?}");
    f.drop().await;
}

/// A single transaction of 100k rows (~100 MB of row images) streams
/// through with the job's peak memory bounded by the batch settings
/// (reader batches of 2000 rows, 8 MiB data files), not by the
/// transaction: its rows arrive in several batches with no checkpoint
/// inside, and the writer spills them to files as they come. Background
/// maintenance is off: a compaction sorts its group in memory (bounded by
/// `max_group_bytes`, not by the batch settings), and the read-cost check
/// compacts this table's well-compressed files within a second of the
/// commit — under load before the test reads the peak.
#[tokio::test]
async fn a_100k_row_transaction_streams_with_memory_bounded_by_the_batch_settings() {
    let mut f = Fixture::new("sync_big").await;
    let (db, warehouse) = (f.db.clone(), f.warehouse());
    f.conn
        .query_drop(format!(
            "CREATE TABLE {db}.big (id INT PRIMARY KEY, payload VARCHAR(1000))"
        ))
        .await
        .unwrap();
    let sink = format!(
        "\n[sink.iceberg]\ncommit_interval = 0.3\ntarget_file_bytes = 8388608\nmaintenance = {{ enabled = false }}\nproperties = {{ warehouse = \"{}\" }}\n",
        warehouse.display()
    );
    let config = f.pipeline(&sink);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[source.mysql]", "[source.mysql]\nmax_batch_rows = 2000");
    std::fs::write(&config, text).unwrap();
    let log = f.dir.join("sync.log");
    let catalog = HadoopCatalog::new_local(&warehouse).unwrap();
    let reader = Reader::Iceberg(&catalog);
    let mut sync = SyncProcess::start(&config, &log);
    wait_until_equal(&mut f.conn, &reader, &db, &mut sync).await;
    let before = sync.peak_rss();
    let rows = 100_000;
    f.conn
        .query_drop(format!(
            "INSERT INTO {db}.big SELECT seq, REPEAT(CHAR(65 + seq % 26), 1000) FROM {db}.seq_1_to_{rows}"
        ))
        .await
        .unwrap();
    let name = TableName::new(&db, "big");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        sync.assert_running();
        if let Ok(t) = catalog.load_table(&name).await {
            let n: usize = t
                .scan(None)
                .await
                .unwrap()
                .iter()
                .map(|b| b.num_rows())
                .sum();
            if n == rows {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "100k rows not in within 120 s:\n{}",
            sync.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let after = sync.peak_rss();
    let txn_bytes = rows as u64 * 1000;
    eprintln!(
        "peak RSS of the job: {} MiB before, {} MiB after a {} MiB transaction",
        before >> 20,
        after >> 20,
        txn_bytes >> 20
    );
    assert!(
        after - before < txn_bytes / 2,
        "peak RSS grew by {} MiB for a {} MiB transaction",
        (after - before) >> 20,
        txn_bytes >> 20
    );
    assert!(sync.terminate().success());
    f.drop().await;
}

/// The same pipeline into ClickHouse (both dev servers as shards, local
/// mode): killed mid-snapshot, restarted, equal to the source through the
/// `_live` views.
/// Run 1 under writes, SIGKILLed once `snapshot_committed` says a commit
/// recorded the snapshot half done (rows alone can be visible before their
/// checkpoint: ClickHouse and HBase show flushed rows); run 2 under more
/// writes until `reader` equals the source, then SIGTERM. The log shows the
/// resume and never the password.
async fn kill_mid_snapshot_and_resume(
    f: &mut Fixture,
    config: &Path,
    reader: &Reader<'_>,
    seeds: (u64, u64),
    snapshot_committed: impl AsyncFn() -> bool,
) {
    let (db, tables) = (f.db.clone(), f.tables());
    let log = f.dir.join("sync.log");
    let mut sync = SyncProcess::start(config, &log);
    let writes = tokio::spawn(write_randomly(f.url.clone(), tables.clone(), 400, seeds.0));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !snapshot_committed().await {
        sync.assert_running();
        assert!(
            Instant::now() < deadline,
            "no snapshot commit in 60 s:\n{}",
            sync.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sync.kill();
    writes.await.unwrap();

    let mut sync = SyncProcess::start(config, &log);
    write_randomly(f.url.clone(), tables.clone(), 400, seeds.1).await;
    wait_until_equal(&mut f.conn, reader, &db, &mut sync).await;
    assert!(
        sync.terminate().success(),
        "clean exit on SIGTERM:\n{}",
        sync.log()
    );
    let text = sync.log();
    assert!(
        text.contains("resuming"),
        "run 2 resumed from a commit:\n{text}"
    );
    assert!(!text.contains(PASSWORD), "the password is in the log");
}

#[tokio::test]
async fn sync_to_clickhouse_survives_sigkill_and_ends_equal_to_the_source() {
    let ch = DevServices::load().clickhouse();
    let mut f = Fixture::new("sync_ch").await;
    let db = f.db.clone();
    let urls: Vec<String> = ch.urls.iter().map(|u| format!("\"{u}\"")).collect();
    let sink = format!(
        "\n[sink.clickhouse]\nurls = [{}]\ncluster = \"{}\"\nmode = \"local\"\ndatabase = \"{db}\"\nflush_interval = 0.3\n",
        urls.join(", "),
        ch.cluster
    );
    let config = f.pipeline(&sink);
    let reader = Reader::ClickHouse(ch.urls[0].clone());
    let checkpoint_of_a =
        format!("SELECT checkpoint FROM {db}._tributary_checkpoints FINAL WHERE table = 'a'");
    let client = clickhouse::Client::default()
        .with_url(&ch.urls[0])
        .with_validation(false);
    let snapshot_committed = async || {
        let cp: Vec<String> = client
            .query(&checkpoint_of_a)
            .fetch_all()
            .await
            .unwrap_or_default();
        cp.iter().any(|c| c.contains("mysql.snapshot"))
    };
    kill_mid_snapshot_and_resume(&mut f, &config, &reader, (31, 37), snapshot_committed).await;
    f.drop().await;
}

#[tokio::test]
async fn sync_to_hbase_survives_sigkill_and_ends_equal_to_the_source() {
    let mut f = Fixture::new("synchb").await;
    let db = f.db.clone();
    let hbase = DevServices::load().hbase();
    hbase.create_tables(&[(&format!("{db}:a"), "cf"), (&format!("{db}:b"), "cf")]);
    let sink = format!(
        "\n[sink.hbase]\naddress = \"{}\"\nnamespace = \"{db}\"\ncommit_interval = \"300ms\"\n",
        hbase.address()
    );
    let config = f.pipeline(&sink);
    let sink_config = tributary_hbase::HBaseSinkConfig::new(hbase.address());
    let table_a = format!("{db}:a");
    let snapshot_committed = async || {
        let cp = tributary_hbase::committed_checkpoint(&sink_config, &table_a).await;
        cp.unwrap()
            .is_some_and(|c| c.properties.contains_key("mysql.snapshot"))
    };
    let reader = Reader::HBase(hbase);
    kill_mid_snapshot_and_resume(&mut f, &config, &reader, (41, 43), snapshot_committed).await;
    f.drop().await;
}

/// `tributary check` connects to what the file names and reports every
/// finding at once, each failure naming its fix, without a secret: a ready
/// MariaDB and Iceberg pass (a missing grant is a warning naming the
/// GRANT); a ClickHouse cluster that is not defined and HBase tables that
/// do not exist fail (exit 1).
#[tokio::test]
async fn check_connects_and_reports_every_finding_naming_the_fix() {
    let mut f = Fixture::new("sync_check").await;
    let db = f.db.clone();
    let check = |config: &Path, json: bool| {
        let path = config.to_str().unwrap().to_string();
        let mut args = vec!["check", path.as_str()];
        if json {
            args.extend(["--output", "json"]);
        }
        let (status, out) = tributary(&args);
        assert!(!out.contains(PASSWORD), "the password is in:\n{out}");
        (status.success(), out)
    };
    let config = f.pipeline(&iceberg_sink(&db, &f.warehouse()));
    let (ok, out) = check(&config, false);
    assert!(ok, "{out}");
    for needle in [
        "ok      source.mysql     server: MariaDB ".to_string(),
        format!("tables: 2 selected: {db}.a, {db}.b"),
        format!("ok      sink.iceberg     table {db}.a: not created yet"),
        "WARNING sink.iceberg     compare-and-swap: no target table exists yet".to_string(),
    ] {
        assert!(out.contains(&needle), "{needle:?} in:\n{out}");
    }

    let revoke = format!("REVOKE REPLICATION SLAVE ON *.* FROM '{}'@'%'", f.user);
    f.conn.query_drop(revoke).await.unwrap();
    let (ok, out) = check(&config, true);
    assert!(
        ok,
        "a grant that may come through a role only warns:\n{out}"
    );
    let findings: Vec<serde_json::Value> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let grant = findings
        .iter()
        .find(|f| f["what"] == "privilege REPLICATION SLAVE")
        .unwrap_or_else(|| panic!("no grant finding in:\n{out}"));
    assert_eq!(grant["status"], "warning");
    assert!(
        grant["detail"]
            .as_str()
            .unwrap()
            .contains("GRANT REPLICATION SLAVE")
    );

    let ch = DevServices::load().clickhouse();
    let urls: Vec<String> = ch.urls.iter().map(|u| format!("\"{u}\"")).collect();
    let sink = format!(
        "\n[sink.clickhouse]\nurls = [{}]\ncluster = \"no_such_cluster\"\nmode = \"local\"\ndatabase = \"{db}\"\n",
        urls.join(", ")
    );
    let (ok, out) = check(&f.pipeline(&sink), false);
    assert!(!ok, "{out}");
    assert!(
        out.contains("ok      sink.clickhouse  server http://"),
        "{out}"
    );
    assert!(
        out.contains("FAILED  sink.clickhouse  cluster no_such_cluster: ")
            && out.contains("has 0 shards"),
        "{out}"
    );
    assert!(out.contains("1 check(s) failed"), "{out}");

    let hbase = DevServices::load().hbase();
    let sink = format!(
        "\n[sink.hbase]\naddress = \"{}\"\nnamespace = \"{db}\"\n",
        hbase.address()
    );
    let (ok, out) = check(&f.pipeline(&sink), false);
    assert!(!ok, "{out}");
    assert!(out.contains("ok      sink.hbase       gateway "), "{out}");
    assert!(
        out.contains(&format!("FAILED  sink.hbase       table {db}:a: "))
            && out.contains(&format!("create '{db}:a', 'cf'")),
        "{out}"
    );
    assert!(out.contains("2 check(s) failed"), "{out}");
    f.drop().await;
}

/// MariaDB → Kafka relay topics through `tributary sync`, SIGKILLed once
/// its snapshot has committed and started again under writes: each topic,
/// replayed per key by rdkafka's consumer, equals `SELECT *` — nothing
/// lost across the kill (duplicates of the replayed round are absorbed by
/// key). On Apache Kafka 4 with 3 partitions.
#[tokio::test]
async fn sync_to_kafka_survives_sigkill_and_the_topics_replay_to_the_source() {
    let mut f = Fixture::new("synckf").await;
    let db = f.db.clone();
    let brokers = DevServices::load().apache_kafka();
    let prefix = unique_name("relay");
    let sink = format!(
        "\n[sink.kafka]\nbrokers = \"{brokers}\"\nprefix = \"{prefix}\"\npartitions = 3\nschemas_enable = false\ncommit_interval = 0.3\n"
    );
    let config = f.pipeline(&sink);
    let sink_config = tributary_kafka::KafkaSinkConfig::new(&brokers, &prefix);
    let table_a = format!("{db}.a");
    let snapshot_committed = async || {
        let cp = tributary_kafka::committed_checkpoint(&sink_config, &table_a).await;
        cp.unwrap()
            .is_some_and(|c| c.properties.contains_key("mysql.snapshot"))
    };
    let reader = Reader::Kafka(brokers.clone(), prefix.clone());
    kill_mid_snapshot_and_resume(&mut f, &config, &reader, (47, 53), snapshot_committed).await;
    // DDL while streaming reaches the schema-change topic `<prefix>`.
    let log = f.dir.join("sync2.log");
    let mut sync = SyncProcess::start(&config, &log);
    add_extra_column(&mut f.conn, &db).await;
    // Then writes to b only: write_randomly's INSERTs name three columns.
    let b = f.tables()[1].clone();
    write_randomly(f.url.clone(), [b.clone(), b], 50, 59).await;
    wait_until_equal(&mut f.conn, &reader, &db, &mut sync).await;
    // Delivered with a's next commit round.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (key, value) = loop {
        let changes = kafka_messages(&brokers, &prefix).unwrap_or_default();
        let alter = changes.into_iter().find_map(|(k, v)| {
            let v = v?;
            let ddl = v["ddl"].as_str()?;
            ddl.contains("ADD COLUMN extra").then_some((k, v))
        });
        if let Some(found) = alter {
            break found;
        }
        sync.assert_running();
        assert!(
            Instant::now() < deadline,
            "no ALTER on {prefix}:\n{}",
            sync.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let alter = (&key, &value);
    assert_eq!(alter.0["databaseName"], db.as_str());
    assert_eq!(alter.1["tableChanges"][0]["type"], "ALTER");
    let columns = &alter.1["tableChanges"][0]["table"]["columns"];
    assert_eq!(columns[3]["name"], "extra", "{columns}");
    assert!(sync.terminate().success());
    let (ok, out) = tributary(&["check", config.to_str().unwrap()]);
    assert!(ok.success(), "{out}");
    assert!(
        out.contains(&format!("topic {prefix}.{db}.a: exists, 3 partitions")),
        "{out}"
    );
    f.drop().await;
}

/// A table glob with a typo matches nothing: `sync` refuses to start a
/// job that would do nothing, listing the databases the user can see.
#[tokio::test]
async fn a_selection_that_matches_no_table_is_refused_listing_the_databases() {
    let f = Fixture::new("sync_none").await;
    let config = f.pipeline(&iceberg_sink(&f.db, &f.warehouse()));
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("include = [\"{}.*\"]", f.db),
        &format!("include = [\"{}x.*\"]", f.db),
    );
    std::fs::write(&config, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["sync", "--config"])
        .arg(&config)
        .env("SYNC_TEST_PASSWORD", PASSWORD)
        .env("SYNC_TEST_S3_SECRET", S3_SECRET)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let seen = stderr
        .split("the databases it can see:")
        .nth(1)
        .unwrap_or("");
    assert!(
        stderr.contains("matches no table") && seen.contains(&f.db),
        "{stderr}"
    );
    assert!(!stderr.contains(PASSWORD));
    f.drop().await;
}

#[test]
fn a_bad_pipeline_file_fails_with_the_cause_and_no_secret() {
    let dir = dev_dir().join("tmp").join(unique_name("sync_bad"));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        // A missing environment variable is named.
        (
            "[source.mysql]\nhost = \"h\"\nuser = \"u\"\n[sink.iceberg]\nproperties = { warehouse = \"${SYNC_TEST_UNSET}\" }\n",
            "SYNC_TEST_UNSET, which is not set",
        ),
        // A misspelt key is refused, not ignored.
        (
            "[source.mysql]\nhost = \"h\"\nuser = \"u\"\n[sink.iceberg]\nwarehouse = \"/w\"\n",
            "unknown field `warehouse`",
        ),
        // Two sinks at once are refused.
        (
            "[source.mysql]\nhost = \"h\"\nuser = \"u\"\n[sink.iceberg]\nproperties = { warehouse = \"/w\" }\n[sink.clickhouse]\nurls = [\"http://h:8123\"]\n",
            "exactly one sink",
        ),
        // A misspelt key deep inside the source is named with its path.
        (
            "[source.mysql]\nhost = \"h\"\nuser = \"u\"\nsnapshot = { chunk_rowz = 5 }\n[sink.iceberg]\nproperties = { warehouse = \"/w\" }\n",
            "source.mysql.snapshot.chunk_rowz: unknown field `chunk_rowz`",
        ),
        // A secret from the environment in a key of the wrong type: the key
        // and the expected type are named, the value never.
        (
            "[source.mysql]\nhost = \"h\"\nuser = \"u\"\nport = \"${SYNC_TEST_S3_SECRET}\"\n[sink.iceberg]\nproperties = { warehouse = \"/w\" }\n",
            "source.mysql.port: invalid type",
        ),
        // The HBase sink is a pipeline kind like the others.
        (
            "[source.mysql]\nhost = \"h\"\nuser = \"u\"\n[sink.hbase]\naddress = \"nocolon\"\n",
            "sink.hbase: address must be host:port",
        ),
        // A partition field that is no Iceberg transform is named.
        (
            "[source.mysql]\nhost = \"h\"\nuser = \"u\"\n[sink.iceberg]\nproperties = { warehouse = \"/w\" }\npartition_by = { \"d.t\" = [\"week(ts)\"] }\n",
            "week(ts)",
        ),
    ];
    for (text, expected) in cases {
        let path = dir.join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_tributary"))
            .args(["sync", "--config"])
            .arg(&path)
            .env("SYNC_TEST_S3_SECRET", S3_SECRET)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(!stderr.contains(S3_SECRET), "a secret in:\n{stderr}");
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in:\n{stderr}"
        );
    }
}
