//! Model-based randomized test of the position-delete upsert writer: after
//! every commit, iceberg-rust's scan and pyiceberg read exactly the model;
//! a reopened writer resumes from the committed checkpoint and skips what
//! it already committed.

use std::sync::Arc;

use arrow_array::RecordBatch;
use tributary_catalog::{CatalogTable, HadoopCatalog, TableName};
use tributary_core::{
    BinlogFilePos, ChangeBatch, ChangeEvent, Checkpoint, Op, SourcePosition, TableSchema, Value,
};
use tributary_iceberg::{DeleteMode, UpsertConfig, UpsertWriter};
use tributary_testkit::kv_workload::{
    KvModel, KvValue, Rng, kv_read_py, kv_row, kv_rows_of, kv_schema, random_kv_events,
};
use tributary_testkit::{DevServices, dev_dir, unique_name};

type Model = KvModel;

fn source() -> Arc<TableSchema> {
    kv_schema("shop", "items")
}

fn row(id: i32, v: &KvValue) -> Vec<Value> {
    kv_row(id, v)
}

/// Random events consistent with the model (which they update), each its own
/// transaction at the next binlog offset; keys 0..40.
fn random_events(rng: &mut Rng, model: &mut Model, offset: &mut u64, n: usize) -> Vec<ChangeEvent> {
    random_kv_events(&source(), rng, model, offset, 0..40, n)
}

async fn read_rust(table: &CatalogTable) -> Model {
    rows_of(table.scan(None).await.unwrap())
}

fn rows_of(batches: Vec<RecordBatch>) -> Model {
    kv_rows_of(&batches)
}

/// Iceberg Java's reads of several metadata files (one JVM); a key seen
/// twice fails the test.
fn read_java(locations: &[&str]) -> Vec<Model> {
    DevServices::load()
        .iceberg_java_read(locations)
        .into_iter()
        .map(|rows| {
            let mut model = Model::new();
            for r in rows {
                let id = r["id"].as_i64().unwrap() as i32;
                let val = (
                    r["v"].as_i64().map(|x| x as i32),
                    r["s"].as_str().map(str::to_string),
                );
                assert!(model.insert(id, val).is_none(), "duplicate key {id}");
            }
            model
        })
        .collect()
}

fn read_py(locations: &[String]) -> Vec<Model> {
    kv_read_py(locations)
}

/// The writer settings of a seed: position mode writes small touched files
/// again (copy-on-write, the default) for odd seeds and position deletes
/// (merge-on-read) for even ones, so both meet every workload shape.
fn config_of(seed: u64, mode: DeleteMode) -> UpsertConfig {
    let d = UpsertConfig::default();
    UpsertConfig {
        delete_mode: mode,
        copy_on_write_bytes: match seed % 2 {
            1 => d.copy_on_write_bytes,
            _ => 0,
        },
        ..d
    }
}

async fn run_seed(seed: u64, mode: DeleteMode) {
    run_seed_with(seed, config_of(seed, mode)).await
}

/// Spills at every event (a 1-byte file target): every commit adds several
/// data files, and keys changed again after their spill delete their spilled
/// row by position in the same commit.
async fn run_seed_spilling(seed: u64, mode: DeleteMode) {
    let config = UpsertConfig {
        target_file_bytes: 1,
        ..config_of(seed, mode)
    };
    run_seed_with(seed, config).await
}

/// A partitioned table. Position mode partitions by a non-key column that
/// updates change (rows move between partitions: the delete goes to the old
/// row's partition) and a key bucket; equality mode by a key bucket only.
async fn run_seed_partitioned(seed: u64, mode: DeleteMode) {
    let partition_by = match mode {
        DeleteMode::Position => vec!["bucket(4, v)", "bucket(2, id)"],
        DeleteMode::Equality => vec!["bucket(4, id)"],
    };
    let config = UpsertConfig {
        partition_by: partition_by.iter().map(|p| p.parse().unwrap()).collect(),
        ..config_of(seed, mode)
    };
    run_seed_with(seed, config).await
}

/// Filtered scans prune by partition (data and delete files alike): for a
/// few values of `v`, the rows iceberg-rust returns for `v = x` are the
/// model's. A file in the wrong partition loses rows here; a delete in the
/// wrong partition resurrects them.
async fn check_filtered(table: &CatalogTable, model: &Model, what: &str) {
    let values: std::collections::BTreeSet<i32> =
        model.values().filter_map(|r| r.0).take(5).collect();
    for x in values {
        let filter = iceberg::expr::Reference::new("v").equal_to(iceberg::spec::Datum::int(x));
        let got = rows_of(table.scan(Some(filter)).await.unwrap());
        let want: Model = model
            .iter()
            .filter(|(_, r)| r.0 == Some(x))
            .map(|(k, r)| (*k, r.clone()))
            .collect();
        assert_eq!(got, want, "{what}: rows with v = {x}");
    }
}

async fn run_seed_with(seed: u64, config: UpsertConfig) {
    let catalog = Arc::new(
        HadoopCatalog::new_local(dev_dir().join("tmp").join(unique_name("upsert"))).unwrap(),
    );
    let name = TableName::new("shop", "items");
    let schema = source();
    let (mode, spilling) = (config.delete_mode, config.target_file_bytes == 1);
    let partitioned = !config.partition_by.is_empty();
    let copy_on_write = mode == DeleteMode::Position && config.copy_on_write_bytes > 0;
    let mut position_deletes_seen = false;
    let mut writer =
        UpsertWriter::open_config(catalog.clone(), name.clone(), &schema, config.clone())
            .await
            .unwrap();
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let (mut model, mut offset) = (Model::new(), 0u64);
    let mut snapshots = Vec::new();
    for _ in 0..20 {
        let n = 1 + rng.below(30) as usize;
        let events = random_events(&mut rng, &mut model, &mut offset, n);
        let groups: Vec<&[ChangeEvent]> = if spilling {
            events.chunks(1).collect()
        } else {
            vec![&events]
        };
        for g in groups {
            let batch = ChangeBatch::from_events(schema.clone(), g).unwrap();
            writer.write_batch(&batch).await.unwrap();
        }
        if spilling {
            assert!(writer.spilled_files() > 0, "a 1-byte target spills");
        }
        let cp = Checkpoint {
            position: events.last().unwrap().position.clone(),
            ..Default::default()
        };
        writer.commit_checkpoint(&cp).await.unwrap();
        let t = writer.table().clone();
        assert_eq!(
            read_rust(&t).await,
            model,
            "seed {seed}: iceberg-rust after commit {}",
            snapshots.len() + 1
        );
        if partitioned {
            check_filtered(&t, &model, &format!("seed {seed} {mode:?}")).await;
        }
        let summary = summary_of(&t);
        if mode == DeleteMode::Position {
            assert_eq!(
                summary["total-equality-deletes"], "0",
                "position mode writes no equality deletes"
            );
            position_deletes_seen |= summary["total-position-deletes"] != "0";
            if copy_on_write && !spilling {
                // Every touched file is small: written again, never a
                // delete file; and no row is counted that is not live.
                assert_eq!(summary["total-position-deletes"], "0", "seed {seed}");
                assert_eq!(
                    summary["total-records"],
                    model.len().to_string(),
                    "seed {seed}: copy-on-write keeps only live rows"
                );
            }
        } else if !spilling {
            assert_eq!(
                summary["total-position-deletes"], "0",
                "equality mode writes no position deletes"
            );
        }
        snapshots.push((t.metadata_location.clone(), model.clone()));
    }
    if mode == DeleteMode::Position && !copy_on_write {
        assert!(
            position_deletes_seen,
            "seed {seed}: merge-on-read deletes by position"
        );
    }
    if partitioned {
        let (data, deletes) = tributary_catalog::live_files(writer.table()).await.unwrap();
        let partitions: std::collections::HashSet<_> =
            data.iter().map(|f| f.partition().clone()).collect();
        assert!(partitions.len() > 2, "rows spread over partitions");
        assert!(
            deletes.iter().all(|d| partitions.contains(d.partition())),
            "deletes are in partitions that hold data"
        );
    }
    // The writer's tables keep the last 10 metadata versions (older ones are
    // deleted after each commit); the independent readers read those kept.
    // (iceberg-rust read every version right after its commit.)
    let total = snapshots.len();
    snapshots.retain(|(location, _)| {
        std::path::Path::new(location.strip_prefix("file://").unwrap_or(location)).exists()
    });
    assert!(
        (10..=11).contains(&snapshots.len()) && total == 20,
        "{} of {total} versions kept",
        snapshots.len()
    );
    let locations: Vec<String> = snapshots.iter().map(|s| s.0.clone()).collect();
    // The reference implementation reads every fifth version and the last
    // (a JVM reads a version of these tables in 0.3–2 s, equality deletes
    // being the slow case, so not all twenty).
    let last = snapshots.len() - 1;
    let checked: Vec<usize> = match mode {
        DeleteMode::Position => (0..=last).filter(|i| i % 5 == 4 || *i == last).collect(),
        DeleteMode::Equality => vec![last / 2, last],
    };
    let files: Vec<&str> = checked.iter().map(|&i| locations[i].as_str()).collect();
    for (&i, java) in checked.iter().zip(read_java(&files)) {
        assert_eq!(
            java,
            snapshots[i].1,
            "seed {seed} {mode:?}: Iceberg Java after commit {}",
            i + 1
        );
    }
    if mode == DeleteMode::Equality {
        return; // pyiceberg cannot read equality deletes (its documented limitation)
    }
    for (i, (py, (_, expected))) in read_py(&locations).into_iter().zip(&snapshots).enumerate() {
        assert_eq!(
            &py,
            expected,
            "seed {seed}: pyiceberg after commit {}",
            i + 1
        );
    }

    // Restart: the checkpoint comes back, and replayed events are skipped.
    drop(writer);
    let mut reopened = UpsertWriter::open_config(catalog.clone(), name, &schema, config)
        .await
        .unwrap();
    let committed = tributary_core::Sink::committed(&reopened)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        committed.position,
        Some(SourcePosition::FilePos(BinlogFilePos::new(
            "mysql-bin.000001",
            offset
        )))
    );
    let replay_from = offset;
    let mut replay = random_events(&mut rng, &mut model.clone(), &mut offset.clone(), 5);
    for (i, e) in replay.iter_mut().enumerate() {
        // Old positions: already committed, must be skipped.
        e.position = Some(SourcePosition::FilePos(BinlogFilePos::new(
            "mysql-bin.000001",
            replay_from - i as u64 * 100,
        )));
    }
    let fresh = random_events(&mut rng, &mut model, &mut offset, 10);
    let all: Vec<ChangeEvent> = replay.into_iter().chain(fresh.clone()).collect();
    for e in &all {
        reopened
            .write_batch(
                &ChangeBatch::from_events(schema.clone(), std::slice::from_ref(e)).unwrap(),
            )
            .await
            .unwrap();
    }
    let cp = Checkpoint {
        position: fresh.last().unwrap().position.clone(),
        ..Default::default()
    };
    reopened.commit_checkpoint(&cp).await.unwrap();
    assert_eq!(
        read_rust(reopened.table()).await,
        model,
        "seed {seed}: after restart"
    );
}

#[tokio::test]
async fn upserts_match_the_model_seed_1() {
    run_seed(1, DeleteMode::Position).await;
    run_seed(1, DeleteMode::Equality).await;
}
#[tokio::test]
async fn upserts_match_the_model_seed_2() {
    run_seed(2, DeleteMode::Position).await;
    run_seed(2, DeleteMode::Equality).await;
}
#[tokio::test]
async fn upserts_match_the_model_seed_3() {
    run_seed(3, DeleteMode::Position).await;
    run_seed(3, DeleteMode::Equality).await;
}
#[tokio::test]
async fn upserts_match_the_model_seed_4() {
    run_seed(4, DeleteMode::Position).await;
    run_seed(4, DeleteMode::Equality).await;
}
#[tokio::test]
async fn upserts_match_the_model_seed_5() {
    run_seed(5, DeleteMode::Position).await;
    run_seed(5, DeleteMode::Equality).await;
}

#[tokio::test]
async fn upserts_match_the_model_when_spilling_seed_6() {
    run_seed_spilling(6, DeleteMode::Position).await;
    run_seed_spilling(6, DeleteMode::Equality).await;
}
#[tokio::test]
async fn upserts_match_the_model_when_spilling_seed_7() {
    run_seed_spilling(7, DeleteMode::Position).await;
    run_seed_spilling(7, DeleteMode::Equality).await;
}

#[tokio::test]
async fn partitioned_upserts_match_the_model_seed_8() {
    run_seed_partitioned(8, DeleteMode::Position).await;
    run_seed_partitioned(8, DeleteMode::Equality).await;
}
#[tokio::test]
async fn partitioned_upserts_match_the_model_seed_9() {
    run_seed_partitioned(9, DeleteMode::Position).await;
    run_seed_partitioned(9, DeleteMode::Equality).await;
}

/// Equality mode refuses a partition column outside the key (before it
/// touches the catalog); an existing table keeps its spec, and a different
/// configured spec is refused with both specs named.
#[tokio::test]
async fn partition_specs_are_checked() {
    let catalog = Arc::new(
        HadoopCatalog::new_local(dev_dir().join("tmp").join(unique_name("spec"))).unwrap(),
    );
    let (schema, name) = (source(), TableName::new("shop", "items"));
    let config = |mode, spec: &[&str]| UpsertConfig {
        delete_mode: mode,
        partition_by: spec.iter().map(|p| p.parse().unwrap()).collect(),
        ..UpsertConfig::default()
    };
    let open =
        |c: UpsertConfig| UpsertWriter::open_config(catalog.clone(), name.clone(), &schema, c);
    let e = open(config(DeleteMode::Equality, &["bucket(4, v)"]))
        .await
        .err()
        .unwrap();
    assert_eq!(e.kind(), tributary_core::ErrorKind::InvalidConfig);
    assert!(
        e.to_string().contains("\"v\" is not in the primary key")
            && e.to_string().contains("position"),
        "{e}"
    );
    assert!(
        catalog.load_table(&name).await.is_err(),
        "nothing was created"
    );
    let e = open(config(DeleteMode::Position, &["day(id)"]))
        .await
        .err()
        .unwrap();
    assert_eq!(e.kind(), tributary_core::ErrorKind::InvalidConfig, "{e}");
    let e = open(config(DeleteMode::Position, &["nope"]))
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("no column \"nope\""), "{e}");

    // Created partitioned by s; reopened with no spec, it keeps it.
    drop(open(config(DeleteMode::Position, &["s"])).await.unwrap());
    let w = open(config(DeleteMode::Position, &[])).await.unwrap();
    assert_eq!(
        w.table().metadata.default_partition_spec().fields().len(),
        1
    );
    drop(w);
    let e = open(config(DeleteMode::Position, &["bucket(8, id)"]))
        .await
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("partitioned by [s]") && e.to_string().contains("[bucket(8, id)]"),
        "{e}"
    );
    // The existing spec is checked against equality mode too.
    let e = open(config(DeleteMode::Equality, &[])).await.err().unwrap();
    assert!(
        e.to_string().contains("\"s\" is not in the primary key"),
        "{e}"
    );
}

#[tokio::test]
async fn snapshot_reads_at_the_committed_position_are_applied_but_replayed_changes_are_not() {
    let catalog = Arc::new(
        HadoopCatalog::new_local(dev_dir().join("tmp").join(unique_name("upsert"))).unwrap(),
    );
    let schema = source();
    let mut writer = UpsertWriter::open(catalog, TableName::new("shop", "items"), &schema)
        .await
        .unwrap();
    let at = SourcePosition::FilePos(BinlogFilePos::new("mysql-bin.000001", 500));
    let event = |op: Op, id: i32, v: i32| ChangeEvent {
        table: schema.table.clone(),
        op,
        before: None,
        after: Some(row(id, &(Some(v), None))),
        position: Some(at.clone()),
        commit_ts_micros: 0,
        schema_version: 1,
    };
    writer
        .write_batch(
            &ChangeBatch::from_events(schema.clone(), &[event(Op::Insert, 1, 10)]).unwrap(),
        )
        .await
        .unwrap();
    writer
        .commit_checkpoint(&Checkpoint {
            position: Some(at.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    // A snapshot chunk read at exactly the committed position is new state…
    let read = ChangeBatch::from_events(schema.clone(), &[event(Op::Read, 2, 20)]).unwrap();
    writer.write_batch(&read).await.unwrap();
    // …while a change event at that position is a replay of what is committed.
    let replay = ChangeBatch::from_events(schema.clone(), &[event(Op::Insert, 3, 30)]).unwrap();
    writer.write_batch(&replay).await.unwrap();
    writer
        .commit_checkpoint(&Checkpoint {
            position: Some(at),
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<i32> = read_rust(writer.table()).await.into_keys().collect();
    assert_eq!(ids, [1, 2]);
}

#[tokio::test]
async fn a_reopened_writer_reads_sidecars_not_key_columns_and_probes_only_candidate_files() {
    let catalog = Arc::new(
        HadoopCatalog::new_local(dev_dir().join("tmp").join(unique_name("upsert"))).unwrap(),
    );
    let (schema, name) = (source(), TableName::new("shop", "items"));
    let mut writer = UpsertWriter::open(catalog.clone(), name.clone(), &schema)
        .await
        .unwrap();
    let mut model = Model::new();
    for file in 0..20 {
        let events: Vec<ChangeEvent> = (0..50)
            .map(|i| {
                let id = file * 1000 + i;
                model.insert(id, (Some(i), None));
                ChangeEvent {
                    table: schema.table.clone(),
                    op: Op::Insert,
                    before: None,
                    after: Some(row(id, &(Some(i), None))),
                    position: Some(SourcePosition::FilePos(BinlogFilePos::new(
                        "mysql-bin.000001",
                        (file * 100 + i) as u64,
                    ))),
                    commit_ts_micros: 0,
                    schema_version: 1,
                }
            })
            .collect();
        writer
            .write_batch(&ChangeBatch::from_events(schema.clone(), &events).unwrap())
            .await
            .unwrap();
        writer
            .commit_checkpoint(&Checkpoint {
                position: events.last().unwrap().position.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    drop(writer);
    let mut reopened = UpsertWriter::open(catalog, name, &schema).await.unwrap();
    let stats = reopened.index_stats();
    assert_eq!(
        (stats.sidecars_read, stats.key_columns_read),
        (20, 0),
        "restart reads summaries, not the table"
    );

    // Updating one key of file 7 probes that file (plus at most a rare bloom false positive).
    let update = ChangeEvent {
        table: schema.table.clone(),
        op: Op::Update,
        before: Some(row(7005, &(Some(5), None))),
        after: Some(row(7005, &(Some(-1), Some("new".into())))),
        position: Some(SourcePosition::FilePos(BinlogFilePos::new(
            "mysql-bin.000002",
            4,
        ))),
        commit_ts_micros: 0,
        schema_version: 1,
    };
    model.insert(7005, (Some(-1), Some("new".into())));
    reopened
        .write_batch(&ChangeBatch::from_events(schema.clone(), &[update]).unwrap())
        .await
        .unwrap();
    reopened
        .commit_checkpoint(&Checkpoint::default())
        .await
        .unwrap();
    let probed = reopened.index_stats().key_columns_read;
    assert!((1..=2).contains(&probed), "probed {probed} of 20 files");
    assert_eq!(read_rust(reopened.table()).await, model);
}

/// 100k upserts into 50k existing keys, half of them new: equality mode writes
/// equality deletes only for keys that existed (plus rare bloom false
/// positives), where Flink's writer writes one per upsert; position mode
/// writes none.
#[tokio::test]
async fn delete_accounting_half_new_keys() {
    let mut figures = Vec::new();
    for mode in [DeleteMode::Position, DeleteMode::Equality] {
        let catalog = Arc::new(
            HadoopCatalog::new_local(dev_dir().join("tmp").join(unique_name("acct"))).unwrap(),
        );
        let schema = source();
        // Merge-on-read: the accounting of delete files (the 50k-row file
        // would otherwise be small enough to be written again).
        let config = UpsertConfig {
            copy_on_write_bytes: 0,
            ..config_of(0, mode)
        };
        let mut w =
            UpsertWriter::open_config(catalog, TableName::new("shop", "items"), &schema, config)
                .await
                .unwrap();
        let insert = |id: i32, v: i32, op: Op| ChangeEvent {
            table: schema.table.clone(),
            op,
            before: None,
            after: Some(row(id, &(Some(v), None))),
            position: None,
            commit_ts_micros: 0,
            schema_version: 1,
        };
        let existing: Vec<ChangeEvent> =
            (0..50_000).map(|i| insert(2 * i, 0, Op::Insert)).collect();
        w.write_batch(&ChangeBatch::from_events(schema.clone(), &existing).unwrap())
            .await
            .unwrap();
        w.commit_checkpoint(&Checkpoint::default()).await.unwrap();
        // 100k upserts over keys 0..100k: the even ones exist, the odd ones
        // are new and inside the files' key ranges (only the bloom filters
        // can tell them apart).
        let upserts: Vec<ChangeEvent> = (0..100_000).map(|i| insert(i, 1, Op::Read)).collect();
        let keys: std::collections::BTreeSet<i32> = upserts
            .iter()
            .map(|e| match e.after.as_ref().unwrap()[0] {
                Value::Int32(k) => k,
                _ => 0,
            })
            .collect();
        let existed = keys.iter().filter(|k| **k % 2 == 0).count();
        w.write_batch(&ChangeBatch::from_events(schema.clone(), &upserts).unwrap())
            .await
            .unwrap();
        w.commit_checkpoint(&Checkpoint::default()).await.unwrap();
        let s = summary_of(w.table());
        let get = |k: &str| s.get(k).map_or(0, |v| v.parse::<usize>().unwrap());
        let (eq, pos) = (get("added-equality-deletes"), get("added-position-deletes"));
        match mode {
            DeleteMode::Position => assert_eq!((eq, pos), (0, existed)),
            DeleteMode::Equality => {
                assert_eq!(pos, 0);
                assert!(
                    eq >= existed && eq <= existed + (keys.len() - existed) / 20,
                    "{eq} equality deletes for {existed} existing of {} keys",
                    keys.len()
                );
            }
        }
        let model_rows = read_rust(w.table()).await.len();
        assert_eq!(model_rows, 50_000 + (keys.len() - existed));
        figures.push(format!("{mode:?}: {} upserted keys ({existed} existing) → {eq} equality / {pos} position deletes", keys.len()));
    }
    println!("{}", figures.join("\n"));
}

/// A compaction rewrites the file the writer's index points at; the writer's
/// next commit must not aim position deletes at the vanished file (the row
/// would survive in the rewritten one), nor write it again (copy-on-write:
/// its rows would be there twice): it re-plans against the new files.
#[tokio::test]
async fn position_deletes_are_replanned_after_a_concurrent_rewrite() {
    for copy_on_write_bytes in [0, UpsertConfig::default().copy_on_write_bytes] {
        replanned_after_a_concurrent_rewrite(copy_on_write_bytes).await;
    }
}

async fn replanned_after_a_concurrent_rewrite(copy_on_write_bytes: usize) {
    let config = UpsertConfig {
        copy_on_write_bytes,
        ..UpsertConfig::default()
    };
    let (catalog, mut writer) = ten_rows("replan", config).await;
    let (schema, name) = (source(), TableName::new("shop", "items"));

    // Maintenance rewrites the only data file into a copy (same rows).
    let t = catalog.load_table(&name).await.unwrap();
    let (data, _) = tributary_catalog::live_files(&t).await.unwrap();
    let batch = arrow_select_concat(&t.scan(None).await.unwrap());
    let path = format!("{}/data/compacted.parquet", t.metadata.location());
    let copy = tributary_catalog::write_data_file(
        &t.file_io,
        &path,
        &with_field_ids(&batch),
        iceberg::spec::Struct::empty(),
        0,
        None,
    )
    .await
    .unwrap();
    let plan = tributary_catalog::RewriteFiles {
        replaced: data,
        added: vec![copy],
        starting_snapshot_id: t.metadata.current_snapshot_id().unwrap(),
        ..Default::default()
    };
    tributary_catalog::commit_rewrite(catalog.as_ref(), &t, &plan)
        .await
        .unwrap();

    // The writer still believes rows live in the old file.
    let update = ev(Op::Update, Some((3, 3)), Some((3, 300)));
    let delete = ev(Op::Delete, Some((4, 4)), None);
    writer
        .write_batch(&ChangeBatch::from_events(schema.clone(), &[update, delete]).unwrap())
        .await
        .unwrap();
    writer
        .commit_checkpoint(&Checkpoint::default())
        .await
        .unwrap();
    let mut expected: Model = (0..10)
        .filter(|&i| i != 4)
        .map(|i| (i, (Some(i), None)))
        .collect();
    expected.insert(3, (Some(300), None));
    assert_eq!(
        read_rust(writer.table()).await,
        expected,
        "no duplicate or resurrected keys (copy_on_write_bytes {copy_on_write_bytes})"
    );
}

/// A copy-on-write commit writes a touched file again from the rows it
/// read when planning: a row another engine deletes between planning and
/// the commit stays deleted (the commit re-plans on the newer files), and
/// the old file leaves with the delete file that named only it.
#[tokio::test]
async fn a_copy_on_write_commit_replans_past_a_delete_committed_after_planning() {
    use tributary_core::Sink;
    let (catalog, mut writer) = ten_rows("cow", UpsertConfig::default()).await;
    let (schema, name) = (source(), TableName::new("shop", "items"));
    let t = catalog.load_table(&name).await.unwrap();
    let (data, _) = tributary_catalog::live_files(&t).await.unwrap();
    let file = data[0].file_path().to_string();
    // Rows are in no particular key order: where key 5 is.
    let ids = tributary_catalog::read_parquet(&t.file_io, &file, Some(&[0]), None)
        .await
        .unwrap();
    let ids = ids[0]
        .column(0)
        .as_any()
        .downcast_ref::<arrow_array::Int32Array>()
        .unwrap();
    let row_of_5 = ids.values().iter().position(|&id| id == 5).unwrap() as i64;

    // Key 3 updated: planned (the file written again without its row)…
    let update = ev(Op::Update, Some((3, 3)), Some((3, 300)));
    writer
        .write_batch(&ChangeBatch::from_events(schema.clone(), &[update]).unwrap())
        .await
        .unwrap();
    let prepared = writer.prepare(&Checkpoint::default()).await.unwrap();
    // …then another engine deletes key 5 by position…
    let path = format!("{}/data/other-engine.parquet", t.metadata.location());
    let del = tributary_catalog::write_position_deletes(
        &t.file_io,
        &path,
        vec![(file.clone(), row_of_5)],
        iceberg::spec::Struct::empty(),
        0,
    )
    .await
    .unwrap();
    let delta = tributary_catalog::RowDelta {
        delete_files: vec![del],
        ..Default::default()
    };
    tributary_catalog::commit_row_delta(catalog.as_ref(), &t, &delta)
        .await
        .unwrap();
    // …before the commit.
    writer.commit_prepared(vec![prepared]).await.unwrap();

    let mut expected: Model = (0..10)
        .filter(|&i| i != 5)
        .map(|i| (i, (Some(i), None)))
        .collect();
    expected.insert(3, (Some(300), None));
    let t = writer.table().clone();
    assert_eq!(read_rust(&t).await, expected, "key 5 stays deleted");
    assert_eq!(
        read_py(std::slice::from_ref(&t.metadata_location)),
        [expected]
    );
    let (data, deletes) = tributary_catalog::live_files(&t).await.unwrap();
    assert!(
        deletes.is_empty() && data.iter().all(|f| f.file_path() != file),
        "the old file and the delete file naming only it left"
    );
    assert_eq!(summary_of(&t)["total-records"], "9");
}

/// A change of key `id`'s `v` (images as `(id, v)`), at no position.
fn ev(op: Op, before: Option<(i32, i32)>, after: Option<(i32, i32)>) -> ChangeEvent {
    ChangeEvent {
        table: source().table.clone(),
        op,
        before: before.map(|(id, v)| row(id, &(Some(v), None))),
        after: after.map(|(id, v)| row(id, &(Some(v), None))),
        position: None,
        commit_ts_micros: 0,
        schema_version: 1,
    }
}

/// A new local table `shop.items` with keys 0..10 (`v` = key) committed by
/// a writer of `config`, which is returned.
async fn ten_rows(prefix: &str, config: UpsertConfig) -> (Arc<HadoopCatalog>, UpsertWriter) {
    let catalog = Arc::new(
        HadoopCatalog::new_local(dev_dir().join("tmp").join(unique_name(prefix))).unwrap(),
    );
    let name = TableName::new("shop", "items");
    let mut writer = UpsertWriter::open_config(catalog.clone(), name, &source(), config)
        .await
        .unwrap();
    let inserts: Vec<ChangeEvent> = (0..10)
        .map(|i| ev(Op::Insert, None, Some((i, i))))
        .collect();
    writer
        .write_batch(&ChangeBatch::from_events(source(), &inserts).unwrap())
        .await
        .unwrap();
    writer
        .commit_checkpoint(&Checkpoint::default())
        .await
        .unwrap();
    (catalog, writer)
}

/// The current snapshot's summary properties.
fn summary_of(t: &CatalogTable) -> &std::collections::HashMap<String, String> {
    &t.metadata
        .current_snapshot()
        .unwrap()
        .summary()
        .additional_properties
}

fn arrow_select_concat(batches: &[RecordBatch]) -> RecordBatch {
    arrow_select::concat::concat_batches(&batches[0].schema(), batches).unwrap()
}

/// The scan's Arrow schema with the Iceberg field ids (1.. in column order).
fn with_field_ids(batch: &RecordBatch) -> RecordBatch {
    let fields: Vec<arrow_schema::Field> = batch
        .schema()
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            f.as_ref()
                .clone()
                .with_metadata(std::collections::HashMap::from([(
                    "PARQUET:field_id".to_string(),
                    (i + 1).to_string(),
                )]))
        })
        .collect();
    RecordBatch::try_new(
        Arc::new(arrow_schema::Schema::new(fields)),
        batch.columns().to_vec(),
    )
    .unwrap()
}

/// Polls a future until it has been pending `pendings` times, then drops it:
/// the writer "dies" at that await point (mid-commit: after some files are
/// written, or after the catalog commit but before the writer hears of it).
struct KillAfter<F: std::future::Future> {
    inner: std::pin::Pin<Box<F>>,
    pendings: u64,
}

impl<F: std::future::Future> std::future::Future for KillAfter<F> {
    type Output = Option<F::Output>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match self.inner.as_mut().poll(cx) {
            std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
            std::task::Poll::Pending if self.pendings == 0 => std::task::Poll::Ready(None),
            std::task::Poll::Pending => {
                self.pendings -= 1;
                std::task::Poll::Pending
            }
        }
    }
}

/// The model after the events at or before `position` (None: empty).
fn model_at(log: &[(ChangeEvent, Model)], position: Option<&SourcePosition>) -> Model {
    let Some(p) = position else {
        return Model::new();
    };
    log.iter()
        .rev()
        .find(|(e, _)| e.position.as_ref() <= Some(p))
        .map_or_else(Model::new, |(_, m)| m.clone())
}

/// Kills the writer at random points — between batches, and at a random
/// await point inside a commit — and restarts it from the checkpoint it finds
/// in the table, with the source replaying a few events before it. After
/// every restart the table equals the model at the committed position; at
/// the end, the whole model; never a duplicate key (`read_rust` checks).
async fn kill_and_restart(seed: u64, mode: DeleteMode) -> (usize, usize) {
    // On S3 (moto): every file operation is a network round trip, so a
    // commit has many await points to die at (local files complete at once).
    let s3 = DevServices::load().s3();
    let props = s3.catalog_properties(&format!("s3://{}/wh", s3.new_bucket().await));
    let catalog = Arc::new(HadoopCatalog::from_properties(&props).unwrap());
    let name = TableName::new("shop", "items");
    let schema = source();
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let (mut model, mut offset) = (Model::new(), 0u64);
    let log: Vec<(ChangeEvent, Model)> = (0..200)
        .map(|_| {
            let e = random_events(&mut rng, &mut model, &mut offset, 1).remove(0);
            (e, model.clone())
        })
        .collect();
    let (mut kills, mut mid_commit_kills) = (0usize, 0usize);
    // Commits killed after the catalog had them (the writer never heard).
    let (mut killed_commit, mut landed_unacknowledged) = (None, 0);
    'restart: loop {
        let config = config_of(seed, mode);
        let mut writer = UpsertWriter::open_config(catalog.clone(), name.clone(), &schema, config)
            .await
            .unwrap();
        let committed = tributary_core::Sink::committed(&writer).await.unwrap();
        let at = committed.as_ref().and_then(|c| c.position.clone());
        if killed_commit.take().is_some_and(|k| Some(k) == at) {
            landed_unacknowledged += 1;
        }
        assert_eq!(
            read_rust(writer.table()).await,
            model_at(&log, at.as_ref()),
            "seed {seed} {mode:?}: after restart {kills} the table is the model at {at:?}"
        );
        // The source resumes a little before the checkpoint (replays).
        let resume = log
            .iter()
            .position(|(e, _)| at.is_none() || e.position > at)
            .unwrap_or(log.len());
        let mut next = resume.saturating_sub(rng.below(4) as usize);
        while next < log.len() {
            let n = (1 + rng.below(12) as usize).min(log.len() - next);
            let events: Vec<ChangeEvent> =
                log[next..next + n].iter().map(|(e, _)| e.clone()).collect();
            next += n;
            let batch = ChangeBatch::from_events(schema.clone(), &events).unwrap();
            writer.write_batch(&batch).await.unwrap();
            if rng.below(10) == 0 {
                kills += 1;
                continue 'restart; // killed between batches: the buffer is lost
            }
            if rng.below(3) > 0 && next < log.len() {
                continue; // no commit yet
            }
            let cp = Checkpoint {
                position: events.last().unwrap().position.clone(),
                ..Default::default()
            };
            // Two in three commits are killed somewhere in their first 60 polls
            // (a commit takes ~20–150 on S3), the others run to the end.
            let pendings = match rng.below(3) {
                0 | 1 => rng.below(60),
                _ => u64::MAX,
            };
            let done = KillAfter {
                inner: Box::pin(writer.commit_checkpoint(&cp)),
                pendings,
            }
            .await;
            match done {
                Some(r) => {
                    r.unwrap();
                    if rng.below(8) == 0 {
                        kills += 1;
                        continue 'restart; // killed before the runner heard of the commit
                    }
                }
                None => {
                    (kills, mid_commit_kills) = (kills + 1, mid_commit_kills + 1);
                    killed_commit = cp.position.clone();
                    continue 'restart;
                }
            }
        }
        assert_eq!(
            read_rust(writer.table()).await,
            model,
            "seed {seed} {mode:?}: final"
        );
        // The reference implementation agrees (the table is on S3).
        let location = writer.table().metadata_location.clone();
        assert_eq!(
            read_java(&[&location]).pop().unwrap(),
            model,
            "seed {seed} {mode:?}: Iceberg Java, final"
        );
        break;
    }
    eprintln!(
        "seed {seed} {mode:?}: {kills} kills, {mid_commit_kills} mid-commit, \
         {landed_unacknowledged} of them after the catalog commit"
    );
    (kills - mid_commit_kills, mid_commit_kills)
}

#[tokio::test]
async fn killed_at_random_points_the_writer_restarts_to_exactly_the_model_seed_1() {
    let a = kill_and_restart(11, DeleteMode::Position).await;
    let b = kill_and_restart(11, DeleteMode::Equality).await;
    assert!(
        a.0 + b.0 > 0 && a.1 + b.1 > 0,
        "kills between batches and mid-commit"
    );
}

#[tokio::test]
async fn killed_at_random_points_the_writer_restarts_to_exactly_the_model_seed_2() {
    let a = kill_and_restart(12, DeleteMode::Position).await;
    let b = kill_and_restart(12, DeleteMode::Equality).await;
    assert!(
        a.0 + b.0 > 0 && a.1 + b.1 > 0,
        "kills between batches and mid-commit"
    );
}
