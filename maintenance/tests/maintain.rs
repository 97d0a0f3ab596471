//! Maintenance against tables the upsert writer wrote (local Hadoop
//! catalog; contents read back by iceberg-rust's scan and pyiceberg).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tributary_catalog::{Catalog, CatalogTable, HadoopCatalog, TableName, live_entries};
use tributary_core::{ChangeBatch, ChangeEvent, Checkpoint, Op, TableSchema};
use tributary_iceberg::{DeleteMode, UpsertConfig, UpsertWriter};
use tributary_maintenance::{MaintenanceConfig, cleanup, maintain_table};
use tributary_testkit::kv_workload::{
    KvModel, Rng, kv_read_py, kv_row, kv_rows_of, kv_schema, random_kv_events,
};
use tributary_testkit::{dev_dir, unique_name};

struct Fixture {
    dir: std::path::PathBuf,
    catalog: Arc<HadoopCatalog>,
    name: TableName,
    schema: Arc<TableSchema>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = dev_dir().join("tmp").join(unique_name("maintain"));
        Fixture {
            catalog: Arc::new(HadoopCatalog::new_local(&dir).unwrap()),
            dir,
            name: TableName::new("shop", "items"),
            schema: kv_schema("shop", "items"),
        }
    }

    /// A merge-on-read writer: it leaves the delete files these tests give
    /// maintenance to work on (copy-on-write, the default for small files,
    /// would write a touched file again instead).
    async fn writer(&self, mode: DeleteMode) -> UpsertWriter {
        let config = UpsertConfig {
            delete_mode: mode,
            copy_on_write_bytes: 0,
            ..UpsertConfig::default()
        };
        UpsertWriter::open_config(
            self.catalog.clone(),
            self.name.clone(),
            &self.schema,
            config,
        )
        .await
        .unwrap()
    }

    async fn table(&self) -> CatalogTable {
        self.catalog.load_table(&self.name).await.unwrap()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn write(writer: &mut UpsertWriter, schema: &Arc<TableSchema>, events: &[ChangeEvent]) {
    let batch = ChangeBatch::from_events(schema.clone(), events).unwrap();
    writer.write_batch(&batch).await.unwrap();
    let cp = Checkpoint {
        position: events.last().unwrap().position.clone(),
        ..Default::default()
    };
    writer.commit_checkpoint(&cp).await.unwrap();
}

/// `write`, as the runtime handles a commit conflict: a file the writer's
/// index lists was rewritten and expired under it, so the writer opens
/// again over the current files and the round is written once more (its
/// events are after the committed checkpoint).
async fn write_or_reopen(
    writer: &mut UpsertWriter,
    reopen: impl AsyncFn() -> UpsertWriter,
    schema: &Arc<TableSchema>,
    events: &[ChangeEvent],
) -> bool {
    let batch = ChangeBatch::from_events(schema.clone(), events).unwrap();
    let cp = Checkpoint {
        position: events.last().unwrap().position.clone(),
        ..Default::default()
    };
    let written = match writer.write_batch(&batch).await {
        Ok(()) => writer.commit_checkpoint(&cp).await,
        Err(e) => Err(e),
    };
    match written {
        Ok(()) => false,
        Err(e) if e.kind() == tributary_core::ErrorKind::CommitConflict => {
            *writer = reopen().await;
            writer.write_batch(&batch).await.unwrap();
            writer.commit_checkpoint(&cp).await.unwrap();
            true
        }
        Err(e) => panic!("commit failed: {e}"),
    }
}

async fn read_rust(t: &CatalogTable) -> KvModel {
    kv_rows_of(&t.scan(None).await.unwrap())
}

/// The table's current rows, read while maintenance runs. With expiry at
/// age 0 a scan can lose its race with a compaction: a newer snapshot
/// replaced the one it planned and cleanup deleted that one's files, as it
/// would under any reader. It then reads the new snapshot — but a file
/// missing from the snapshot that is still current fails.
async fn read_current(catalog: &HadoopCatalog, name: &TableName) -> KvModel {
    for _ in 0..10 {
        let t = catalog.load_table(name).await.unwrap();
        match t.scan(None).await {
            Ok(batches) => return kv_rows_of(&batches),
            Err(e) => {
                let now = catalog.load_table(name).await.unwrap();
                assert_ne!(
                    now.metadata.current_snapshot_id(),
                    t.metadata.current_snapshot_id(),
                    "the current snapshot is unreadable: {e}"
                );
            }
        }
    }
    panic!("ten scans in a row lost their race with maintenance");
}

/// A change of the kv table with `v` set and `s` NULL.
fn kv_event(
    schema: &TableSchema,
    op: Op,
    before: Option<(i32, i32)>,
    after: Option<(i32, i32)>,
    offset: u64,
) -> ChangeEvent {
    ChangeEvent {
        table: schema.table.clone(),
        op,
        before: before.map(|(k, v)| kv_row(k, &(Some(v), None))),
        after: after.map(|(k, v)| kv_row(k, &(Some(v), None))),
        position: tributary_testkit::kv_workload::kv_position(offset),
        commit_ts_micros: 0,
        schema_version: schema.version,
    }
}

/// Keys 0..20 (v = 0) in four commits of five: four small files.
async fn four_commits_of_five_rows(
    writer: &mut UpsertWriter,
    schema: &Arc<TableSchema>,
) -> KvModel {
    let mut model = KvModel::new();
    for i in 0..4u64 {
        let rows: Vec<ChangeEvent> = (0..5)
            .map(|j| {
                let key = (i * 5 + j) as i32;
                model.insert(key, (Some(0), None));
                kv_event(schema, Op::Insert, None, Some((key, 0)), 100 * i + j + 1)
            })
            .collect();
        write(writer, schema, &rows).await;
    }
    model
}

/// Compaction on every run, expiry down to the newest 3 snapshots.
fn aggressive() -> MaintenanceConfig {
    MaintenanceConfig {
        small_files: 2,
        delete_files: 1,
        manifests: 4,
        snapshots: 4,
        snapshot_age: Some(Duration::ZERO),
        retain_last: Some(3),
        ..MaintenanceConfig::default()
    }
}

async fn counts(t: &CatalogTable) -> (usize, usize, usize) {
    let (mut data, mut pos, mut eq) = (0, 0, 0);
    for f in live_entries(t).await.unwrap() {
        match f.file.content_type() {
            iceberg::spec::DataContentType::Data => data += 1,
            iceberg::spec::DataContentType::PositionDeletes => pos += 1,
            iceberg::spec::DataContentType::EqualityDeletes => eq += 1,
        }
    }
    (data, pos, eq)
}

#[tokio::test]
async fn compaction_and_conversion_keep_the_rows_and_leave_no_equality_deletes() {
    let fx = Fixture::new();
    let mut writer = fx.writer(DeleteMode::Equality).await;
    let (mut rng, mut model, mut offset) = (Rng(7), KvModel::new(), 0u64);
    for _ in 0..12 {
        let events = random_kv_events(&fx.schema, &mut rng, &mut model, &mut offset, 0..30, 8);
        write(&mut writer, &fx.schema, &events).await;
    }
    let before = fx.table().await;
    let (data, _, eq) = counts(&before).await;
    assert!(
        data >= 10 && eq > 0,
        "a table of small files and equality deletes: {data} {eq}"
    );
    assert_eq!(read_rust(&before).await, model);

    let dry = maintain_table(fx.catalog.as_ref(), &fx.name, &aggressive(), true)
        .await
        .unwrap();
    assert!(!dry.actions.is_empty(), "{dry}");
    assert_eq!(
        fx.table().await.version,
        before.version,
        "a dry run commits nothing"
    );

    let report = maintain_table(fx.catalog.as_ref(), &fx.name, &aggressive(), false)
        .await
        .unwrap();
    let after = fx.table().await;
    let (data, pos, eq) = counts(&after).await;
    assert_eq!((data, eq), (1, 0), "{report}");
    assert_eq!(pos, 0, "deletes of rewritten files are dropped: {report}");
    assert_eq!(report.compacted_groups.len(), 1, "{report}");
    assert_eq!(
        read_rust(&after).await,
        model,
        "iceberg-rust after maintenance"
    );
    // pyiceberg refuses equality deletes: it reads the table only now.
    assert_eq!(
        kv_read_py(std::slice::from_ref(&after.metadata_location)),
        [model.clone()]
    );

    // The writer resumes from its checkpoint although the newest snapshot
    // is maintenance's, and goes on on top of the compacted file.
    let committed = tributary_core::Sink::committed(&writer).await.unwrap();
    let reopened = fx.writer(DeleteMode::Equality).await;
    assert_eq!(
        tributary_core::Sink::committed(&reopened).await.unwrap(),
        committed
    );
    drop(reopened);
    let events = random_kv_events(&fx.schema, &mut rng, &mut model, &mut offset, 0..30, 20);
    write(&mut writer, &fx.schema, &events).await;
    assert_eq!(read_rust(writer.table()).await, model);
}

#[tokio::test]
async fn expiry_deletes_exactly_the_files_no_snapshot_references_and_orphans_go_by_age() {
    let fx = Fixture::new();
    let mut writer = fx.writer(DeleteMode::Position).await;
    let (mut rng, mut model, mut offset) = (Rng(3), KvModel::new(), 0u64);
    for _ in 0..8 {
        let events = random_kv_events(&fx.schema, &mut rng, &mut model, &mut offset, 0..30, 10);
        write(&mut writer, &fx.schema, &events).await;
    }
    let t = fx.table().await;
    let listed = |t: &CatalogTable| {
        let catalog = fx.catalog.clone();
        let location = t.metadata.location().to_string();
        async move {
            catalog
                .list_files(&location)
                .await
                .unwrap()
                .into_iter()
                .map(|f| f.location)
                .collect::<HashSet<String>>()
        }
    };
    let stored_before = listed(&t).await;
    let (t2, r) = cleanup::expire_and_clean(
        fx.catalog.as_ref(),
        &t,
        &cleanup::Retention {
            max_age: Some(Duration::ZERO),
            retain_last: Some(2),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(t2.metadata.snapshots().count(), 2);
    assert!(r.snapshots_expired >= 6 && r.files_deleted > 0, "{r:?}");
    let referenced = cleanup::referenced_files(&t2, &t2.metadata).await.unwrap();
    let stored_after = listed(&t2).await;
    let gone: HashSet<&String> = stored_before.difference(&stored_after).collect();
    assert_eq!(gone.len(), r.files_deleted, "deleted as reported");
    for f in &gone {
        assert!(
            !referenced.contains(*f),
            "{f} was deleted but is still referenced"
        );
    }
    for f in &referenced {
        assert!(stored_after.contains(f), "{f} is referenced but missing");
    }
    // What stays unreferenced: metadata files and the hint only.
    for f in stored_after.difference(&referenced) {
        assert!(
            f.contains("/metadata/")
                && (f.ends_with(".metadata.json") || f.ends_with("version-hint.text")),
            "{f}"
        );
    }
    assert_eq!(read_rust(&t2).await, model);

    // An orphan: removed only once older than the minimum age.
    let stray = format!("{}/data/stray.parquet", t2.metadata.location());
    std::fs::write(stray.strip_prefix("file://").unwrap(), b"x").unwrap();
    let young = cleanup::remove_orphans(fx.catalog.as_ref(), &t2, Duration::from_secs(3600), false)
        .await
        .unwrap();
    assert!(young.removed.is_empty(), "{young:?}");
    let old = cleanup::remove_orphans(fx.catalog.as_ref(), &t2, Duration::ZERO, false)
        .await
        .unwrap();
    let expected: Vec<String> = stored_after
        .iter()
        .filter(|f| {
            !referenced.contains(*f)
                && f.ends_with(".metadata.json")
                && !t2
                    .metadata
                    .metadata_log()
                    .iter()
                    .any(|l| &l.metadata_file == *f)
                && **f != t2.metadata_location
        })
        .cloned()
        .chain([stray.clone()])
        .collect();
    let mut got = old.removed.clone();
    got.sort();
    let mut want = expected;
    want.sort();
    assert_eq!(got, want, "exactly the unreferenced files");
    assert_eq!(read_rust(&fx.table().await).await, model);
}

/// A rewrite the writer's next commit does not touch must not leave a
/// duplicate when a later commit updates a key of a rewritten file.
#[tokio::test]
async fn the_writer_follows_a_rewrite_it_did_not_conflict_with() {
    let fx = Fixture::new();
    let mut writer = fx.writer(DeleteMode::Position).await;
    let schema = fx.schema.clone();
    let ev = |op, before, after, offset| kv_event(&schema, op, before, after, offset);
    let mut model = four_commits_of_five_rows(&mut writer, &schema).await;
    // Compaction rewrites the four files into one.
    let r = maintain_table(fx.catalog.as_ref(), &fx.name, &aggressive(), false)
        .await
        .unwrap();
    assert_eq!(r.compacted_groups.len(), 1, "{r}");
    // The writer's next commit touches no rewritten row…
    write(
        &mut writer,
        &schema,
        &[ev(Op::Insert, None, Some((100, 1)), 1000)],
    )
    .await;
    model.insert(100, (Some(1), None));
    // …and a later one updates a row that now lives in the compacted file.
    write(
        &mut writer,
        &schema,
        &[ev(Op::Update, Some((3, 0)), Some((3, 33)), 1100)],
    )
    .await;
    model.insert(3, (Some(33), None));
    assert_eq!(
        read_rust(&fx.table().await).await,
        model,
        "no duplicate of key 3"
    );
}

/// Compaction and expiry (keeping only the newest snapshot) between a
/// writer's start and its first commit: the files its index lists are
/// deleted. Its
/// next write of a key in them must not fail as bad data (that stopped a
/// relay job behind a broker restart): either it goes through, or it is a
/// commit conflict — transient, so the run starts again from its last
/// commit — and a writer opened again then ends equal to the model.
#[tokio::test]
async fn files_deleted_under_the_writer_are_a_commit_conflict_not_bad_data() {
    let fx = Fixture::new();
    let mut writer = fx.writer(DeleteMode::Position).await;
    let schema = fx.schema.clone();
    let ev = |op, before, after, offset| kv_event(&schema, op, before, after, offset);
    let mut model = four_commits_of_five_rows(&mut writer, &schema).await;
    // Opened again (a run restarted): its index knows the files, but no
    // key → position map of them is cached yet.
    drop(writer);
    let mut writer = fx.writer(DeleteMode::Position).await;
    let only_the_newest = MaintenanceConfig {
        retain_last: Some(1),
        snapshot_min_age: Duration::ZERO,
        keep_snapshots: 1,
        snapshots: 1,
        ..aggressive()
    };
    let r = maintain_table(fx.catalog.as_ref(), &fx.name, &only_the_newest, false)
        .await
        .unwrap();
    assert_eq!(r.compacted_groups.len(), 1, "{r}");
    let t = fx.table().await;
    assert_eq!(t.metadata.snapshots().count(), 1, "{r}");
    // Updates of keys in every old file, which no longer exist.
    let updates: Vec<ChangeEvent> = (0..4)
        .map(|i| {
            ev(
                Op::Update,
                Some((i * 5, 0)),
                Some((i * 5, 9)),
                1000 + i as u64,
            )
        })
        .collect();
    for i in 0..4 {
        model.insert(i * 5, (Some(9), None));
    }
    let batch = ChangeBatch::from_events(schema.clone(), &updates).unwrap();
    let cp = Checkpoint {
        position: updates.last().unwrap().position.clone(),
        ..Default::default()
    };
    let outcome = match writer.write_batch(&batch).await {
        Ok(()) => writer.commit_checkpoint(&cp).await.map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(e) = outcome {
        assert!(e.kind().is_transient(), "{e}");
        drop(writer);
        let mut again = fx.writer(DeleteMode::Position).await;
        again.write_batch(&batch).await.unwrap();
        again.commit_checkpoint(&cp).await.unwrap();
    }
    assert_eq!(read_rust(&fx.table().await).await, model);
}

/// A schema change commits on the newest table version, which may hold a
/// compaction the writer's index has not seen: an update after it must
/// still delete the row where it now lives (the deletes are planned at the
/// index's snapshot, so the commit checks that their files are live and
/// plans again). Found by `schemas_under_kills`: every position delete of
/// the commit pointed at replaced files, deleting nothing.
#[tokio::test]
async fn an_update_after_a_schema_change_over_an_unseen_compaction_leaves_no_duplicate() {
    let fx = Fixture::new();
    let mut writer = fx.writer(DeleteMode::Position).await;
    let v1 = fx.schema.clone();
    let mut cols = v1.columns.clone();
    cols.push(tributary_core::Column::new(
        "note",
        tributary_core::ColumnType::String { max_len: None },
        true,
    ));
    let v2 = Arc::new(TableSchema::new(v1.table.clone(), cols, &["id"], 2).unwrap());
    let ev = |schema: &Arc<TableSchema>,
              op,
              before: Option<(i32, i32)>,
              after: Option<(i32, i32)>,
              offset: u64| {
        let row = |(k, v): (i32, i32)| {
            let mut r = kv_row(k, &(Some(v), None));
            r.resize(schema.columns.len(), tributary_core::Value::Null);
            r
        };
        ChangeEvent {
            table: schema.table.clone(),
            op,
            before: before.map(row),
            after: after.map(row),
            position: tributary_testkit::kv_workload::kv_position(offset),
            commit_ts_micros: 0,
            schema_version: schema.version,
        }
    };
    let mut model = KvModel::new();
    for i in 0..4u64 {
        let rows: Vec<ChangeEvent> = (0..5)
            .map(|j| {
                ev(
                    &v1,
                    Op::Insert,
                    None,
                    Some(((i * 5 + j) as i32, 0)),
                    100 * i + j + 1,
                )
            })
            .collect();
        for j in 0..5 {
            model.insert((i * 5 + j) as i32, (Some(0), None));
        }
        write(&mut writer, &v1, &rows).await;
    }
    let r = maintain_table(fx.catalog.as_ref(), &fx.name, &aggressive(), false)
        .await
        .unwrap();
    assert_eq!(r.compacted_groups.len(), 1, "{r}");
    // ADD COLUMN, then an update of a row that now lives in the compacted file.
    writer.apply_schema(&v2).await.unwrap();
    write(
        &mut writer,
        &v2,
        &[ev(&v2, Op::Update, Some((3, 0)), Some((3, 33)), 1100)],
    )
    .await;
    model.insert(3, (Some(33), None));
    assert_eq!(
        read_rust(&fx.table().await).await,
        model,
        "no duplicate of key 3"
    );
}

/// A writer streams random upserts while compaction, conversion and expiry
/// run beside it (another task, as in `sync`): every retained snapshot
/// stays readable and the final table is the model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_loops_beside_a_streaming_writer_and_loses_nothing() {
    let fx = Fixture::new();
    // Position mode merge-on-read and copy-on-write (each commit writes the
    // touched files again, racing compaction for the same files), and
    // equality mode.
    let cow = UpsertConfig::default().copy_on_write_bytes;
    for (mode, copy_on_write_bytes) in [
        (DeleteMode::Position, 0),
        (DeleteMode::Position, cow),
        (DeleteMode::Equality, 0),
    ] {
        let writes = match copy_on_write_bytes {
            0 => "",
            _ => "_cow",
        };
        let name = TableName::new("shop", format!("items_{mode:?}{writes}").to_lowercase());
        let config = UpsertConfig {
            delete_mode: mode,
            copy_on_write_bytes,
            ..UpsertConfig::default()
        };
        let reopen = async || {
            UpsertWriter::open_config(fx.catalog.clone(), name.clone(), &fx.schema, config.clone())
                .await
                .unwrap()
        };
        let mut writer = reopen().await;
        let mut reopened = 0;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let landed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // A step that hangs fails naming itself (a stuck test is only a
        // timeout in CI's log).
        let limit = Duration::from_secs(120);
        let maint = {
            let (catalog, name) = (fx.catalog.clone(), name.clone());
            let (stop, landed) = (stop.clone(), landed.clone());
            tokio::spawn(async move {
                let (mut rounds, mut compactions) = (0usize, 0usize);
                // At least 100 rounds and 10 compactions while the writer
                // streams (it goes on until then, up to 2000 commits).
                let more = |rounds: usize, compactions: usize| {
                    (rounds < 100 || compactions < 10) && rounds < 5000
                };
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || more(rounds, compactions)
                {
                    // A run that lost its race to the writer (files rewritten
                    // under it, or every commit attempt beaten) applied
                    // nothing; the next run plans again.
                    let policy = aggressive();
                    let run = maintain_table(catalog.as_ref(), &name, &policy, false);
                    let run = match tokio::time::timeout(limit, run).await {
                        Ok(run) => run,
                        Err(_) => panic!("maintenance round {rounds} did not finish in 120 s"),
                    };
                    match run {
                        Ok(r) => compactions += r.compacted_groups.len(),
                        Err(e) => assert!(
                            matches!(
                                e.kind(),
                                tributary_core::ErrorKind::ValidationFailed
                                    | tributary_core::ErrorKind::CommitConflict
                            ),
                            "maintenance failed: {e}"
                        ),
                    }
                    landed.store(compactions, std::sync::atomic::Ordering::Relaxed);
                    rounds += 1;
                    // A run on local files may never wait for anything.
                    tokio::task::yield_now().await;
                }
                (rounds, compactions)
            })
        };
        let (mut rng, mut model, mut offset) = (Rng(11), KvModel::new(), 0u64);
        let (mut commits, mut seen, mut since) = (0, 0, 0u32);
        while commits < 150 || !maint.is_finished() && commits < 2000 {
            let n = 1 + rng.below(10) as usize;
            let events = random_kv_events(&fx.schema, &mut rng, &mut model, &mut offset, 0..60, n);
            let write = write_or_reopen(&mut writer, &reopen, &fx.schema, &events);
            match tokio::time::timeout(limit, write).await {
                Ok(again) => reopened += usize::from(again),
                Err(_) => panic!("{mode:?}{writes}: commit {commits} did not finish in 120 s"),
            }
            commits += 1;
            // The writer's commit interval: 5 ms (in production seconds),
            // longer while no compaction lands. Under load a 5 ms writer
            // wins nearly every race (CI once ran it 2000 commits per mode
            // past its 5-minute limit); a slower one lets them through, as
            // real intervals do.
            let now = landed.load(std::sync::atomic::Ordering::Relaxed);
            (seen, since) = if now > seen {
                (now, 0)
            } else {
                (seen, since + 1)
            };
            let interval = Duration::from_millis(5 << (since / 25).min(5));
            tokio::time::sleep(interval).await;
            if commits == 150 {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            if commits % 25 == 0 {
                assert_eq!(
                    read_current(fx.catalog.as_ref(), &name).await,
                    model,
                    "{mode:?} after {commits} commits"
                );
            }
        }
        let (rounds, compactions) = maint.await.unwrap();
        assert!(rounds >= 100, "{rounds} maintenance rounds");
        assert!(compactions >= 10, "{compactions} compactions landed");
        let t = fx.catalog.load_table(&name).await.unwrap();
        assert_eq!(read_rust(&t).await, model, "{mode:?}: final, iceberg-rust");
        // Every retained snapshot is readable (its files were not deleted).
        let reader = t.to_iceberg_table().unwrap();
        for s in t.metadata.snapshots() {
            let scan = reader.scan().snapshot_id(s.snapshot_id()).build().unwrap();
            let batches: Vec<_> =
                futures_util::TryStreamExt::try_collect(scan.to_arrow().await.unwrap())
                    .await
                    .unwrap();
            kv_rows_of(&batches);
        }
        let final_maint = maintain_table(fx.catalog.as_ref(), &name, &aggressive(), false)
            .await
            .unwrap();
        let t = fx.catalog.load_table(&name).await.unwrap();
        assert_eq!(counts(&t).await.2, 0, "{final_maint}");
        assert_eq!(
            kv_read_py(std::slice::from_ref(&t.metadata_location)),
            [model.clone()],
            "{mode:?}: pyiceberg"
        );
        eprintln!(
            "{mode:?}{writes}: {commits} commits beside {rounds} maintenance rounds, {compactions} compactions, {reopened} reopened after a conflict"
        );
    }
}

/// Manifest merging and metadata bounds hold after many commits with the
/// properties the writer gives new tables.
#[tokio::test]
async fn manifests_and_metadata_files_stay_bounded_without_maintenance() {
    let fx = Fixture::new();
    let mut writer = fx.writer(DeleteMode::Position).await;
    let (mut rng, mut model, mut offset) = (Rng(5), KvModel::new(), 0u64);
    let mut max_manifests = 0;
    for _ in 0..80 {
        let events = random_kv_events(&fx.schema, &mut rng, &mut model, &mut offset, 0..40, 5);
        write(&mut writer, &fx.schema, &events).await;
        let t = writer.table();
        max_manifests =
            max_manifests.max(tributary_catalog::current_manifests(t).await.unwrap().len());
    }
    // Two contents (data, deletes), each merged once 16 have accumulated.
    assert!(max_manifests <= 2 * 16 + 2, "{max_manifests} manifests");
    let meta_dir = fx.dir.join("shop/items/metadata");
    let versions = std::fs::read_dir(&meta_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".metadata.json"))
        .count();
    assert!(
        versions <= 21,
        "{versions} metadata files kept (previous-versions-max 20)"
    );
    let t = fx.table().await;
    assert_eq!(read_rust(&t).await, model);
    assert_eq!(
        kv_read_py(std::slice::from_ref(&t.metadata_location)),
        [model]
    );
    // Statistics: data files carry bounds of the key for readers to prune.
    let data = live_entries(&t).await.unwrap();
    let f = data
        .iter()
        .find(|f| f.file.content_type() == iceberg::spec::DataContentType::Data)
        .unwrap();
    assert!(f.file.lower_bounds().contains_key(&1) && f.file.value_counts().contains_key(&1));
}

/// Files too big to compact keep their deletes: the small position-delete
/// files are merged into one per partition, rows unchanged.
#[tokio::test]
async fn small_position_delete_files_are_merged() {
    let fx = Fixture::new();
    let mut writer = fx.writer(DeleteMode::Position).await;
    let (mut rng, mut model, mut offset) = (Rng(9), KvModel::new(), 0u64);
    for _ in 0..10 {
        let events = random_kv_events(&fx.schema, &mut rng, &mut model, &mut offset, 0..30, 10);
        write(&mut writer, &fx.schema, &events).await;
    }
    let before = counts(&fx.table().await).await;
    assert!(before.1 >= 3, "{before:?}");
    let config = MaintenanceConfig {
        // No data file counts as small; only wholly deleted ones are heavy.
        target_file_bytes: 1,
        delete_ratio: 1.0,
        delete_files: 2,
        ..MaintenanceConfig::default()
    };
    let r = maintain_table(fx.catalog.as_ref(), &fx.name, &config, false)
        .await
        .unwrap();
    let t = fx.table().await;
    let after = counts(&t).await;
    // (A file whose every row is deleted is still rewritten — to nothing.)
    assert!(r.compacted_groups.iter().all(|g| g.rows == 0), "{r}");
    assert_eq!(after.1, 1, "{r}");
    let applied: usize = r.compacted_groups.iter().map(|g| g.deletes_applied).sum();
    assert_eq!(
        r.deletes_merged,
        before.1 - r.deletes_dropped - applied - 1,
        "{r}"
    );
    assert_eq!(read_rust(&t).await, model);
    assert_eq!(
        kv_read_py(std::slice::from_ref(&t.metadata_location)),
        [model]
    );
}

/// The same maintenance on S3 (moto, listing by ListObjectsV2) and through
/// the Hive Metastore: contents unchanged for iceberg-rust and Iceberg Java,
/// no equality deletes left, a stray object removed as an orphan and
/// nothing else.
#[tokio::test]
async fn maintenance_on_s3_and_through_the_hive_metastore() {
    let s3 = tributary_testkit::DevServices::load().s3();
    let bucket = s3.new_bucket().await;
    let s3_catalog: Arc<dyn Catalog> = Arc::new(
        HadoopCatalog::from_properties(&s3.catalog_properties(&format!("s3://{bucket}/wh")))
            .unwrap(),
    );
    let hive_dir = dev_dir().join("tmp").join(unique_name("maintain_hive"));
    std::fs::create_dir_all(&hive_dir).unwrap();
    let hive = tributary_catalog::HiveCatalog::from_properties(&std::collections::HashMap::from([
        (
            "uri".to_string(),
            format!("thrift://{}", tributary_testkit::DevServices::load().hms()),
        ),
        (
            "warehouse".to_string(),
            format!("file://{}", hive_dir.canonicalize().unwrap().display()),
        ),
    ]))
    .unwrap();
    let db = unique_name("maint");
    hive.ensure_database(&db).await.unwrap();
    let hive: Arc<dyn Catalog> = Arc::new(hive);
    let schema = kv_schema("shop", "items");
    for (catalog, name) in [
        (s3_catalog, TableName::new("shop", "items")),
        (hive, TableName::new(&db, "items")),
    ] {
        let config = UpsertConfig {
            delete_mode: DeleteMode::Equality,
            ..UpsertConfig::default()
        };
        let mut writer = UpsertWriter::open_config(catalog.clone(), name.clone(), &schema, config)
            .await
            .unwrap();
        let (mut rng, mut model, mut offset) = (Rng(21), KvModel::new(), 0u64);
        for _ in 0..6 {
            let events = random_kv_events(&schema, &mut rng, &mut model, &mut offset, 0..30, 10);
            write(&mut writer, &schema, &events).await;
        }
        let r = maintain_table(catalog.as_ref(), &name, &aggressive(), false)
            .await
            .unwrap();
        let t = catalog.load_table(&name).await.unwrap();
        assert_eq!(counts(&t).await.2, 0, "{name}: {r}");
        assert_eq!(counts(&t).await.0, 1, "{name}: {r}");
        assert_eq!(read_rust(&t).await, model, "{name}: iceberg-rust");
        let java =
            tributary_testkit::DevServices::load().iceberg_java_read(&[&t.metadata_location]);
        assert_eq!(java[0].len(), model.len(), "{name}: Iceberg Java");
        // A stray file: an orphan once old enough, and the only one.
        let stray = format!("{}/data/stray.parquet", t.metadata.location());
        t.file_io
            .new_output(&stray)
            .unwrap()
            .write(bytes::Bytes::from_static(b"x"))
            .await
            .unwrap();
        let orphans = cleanup::remove_orphans(catalog.as_ref(), &t, Duration::ZERO, true)
            .await
            .unwrap();
        let unexpected: Vec<&String> = orphans
            .removed
            .iter()
            .filter(|f| **f != stray && !f.ends_with(".metadata.json"))
            .collect();
        assert!(
            orphans.removed.contains(&stray) && unexpected.is_empty(),
            "{name}: {orphans:?}"
        );
        cleanup::remove_orphans(catalog.as_ref(), &t, Duration::ZERO, false)
            .await
            .unwrap();
        assert!(!t.file_io.exists(&stray).await.unwrap(), "{name}");
        assert_eq!(
            read_rust(&catalog.load_table(&name).await.unwrap()).await,
            model,
            "{name}"
        );
    }
    let _ = std::fs::remove_dir_all(&hive_dir);
}

/// Compaction sorts a group by key: its files have disjoint key ranges
/// (the writer's index binary-searches them), rows unchanged.
#[tokio::test]
async fn compacted_files_have_disjoint_key_ranges() {
    let fx = Fixture::new();
    let mut writer = fx.writer(DeleteMode::Position).await;
    let (mut rng, mut model, mut offset) = (Rng(13), KvModel::new(), 0u64);
    for _ in 0..10 {
        let events = random_kv_events(&fx.schema, &mut rng, &mut model, &mut offset, 0..5000, 600);
        write(&mut writer, &fx.schema, &events).await;
    }
    let config = MaintenanceConfig {
        target_file_bytes: 3000,
        small_files: 2,
        // At a 3 kB target no file is small: all are taken by their deletes.
        delete_ratio: 0.0,
        ..MaintenanceConfig::default()
    };
    let r = maintain_table(fx.catalog.as_ref(), &fx.name, &config, false)
        .await
        .unwrap();
    let t = fx.table().await;
    let mut ranges: Vec<(i32, i32)> = live_entries(&t)
        .await
        .unwrap()
        .iter()
        .filter(|f| f.file.content_type() == iceberg::spec::DataContentType::Data)
        .map(|f| {
            let bound =
                |m: &std::collections::HashMap<i32, iceberg::spec::Datum>| match m[&1].literal() {
                    iceberg::spec::PrimitiveLiteral::Int(v) => *v,
                    other => panic!("{other:?}"),
                };
            (bound(f.file.lower_bounds()), bound(f.file.upper_bounds()))
        })
        .collect();
    ranges.sort();
    assert!(ranges.len() >= 3, "several files at a small target: {r}");
    for w in ranges.windows(2) {
        assert!(w[0].1 < w[1].0, "overlapping key ranges {ranges:?}");
    }
    assert_eq!(read_rust(&t).await, model);
    // The writer goes on over the sorted files.
    let events = random_kv_events(&fx.schema, &mut rng, &mut model, &mut offset, 0..5000, 300);
    write(&mut writer, &fx.schema, &events).await;
    assert_eq!(read_rust(writer.table()).await, model);
}

/// At a high commit rate the age limit alone keeps hundreds of snapshots:
/// the count bound expires the oldest beyond it, but none younger than the
/// minimum age, and never the checkpoint's.
#[tokio::test]
async fn expiry_bounds_the_snapshot_count_but_spares_young_snapshots() {
    let fx = Fixture::new();
    let mut writer = fx.writer(DeleteMode::Position).await;
    let (mut rng, mut model, mut offset) = (Rng(11), KvModel::new(), 0u64);
    for _ in 0..12 {
        let events = random_kv_events(&fx.schema, &mut rng, &mut model, &mut offset, 0..30, 10);
        write(&mut writer, &fx.schema, &events).await;
    }
    let t = fx.table().await;
    let total = t.metadata.snapshots().count();
    assert!(total >= 12, "{total}");
    let bound = |min_age| cleanup::Retention {
        max_age: Some(Duration::from_secs(3600)),
        retain_last: Some(1),
        max_count: Some(5),
        min_age,
    };
    // All of them are young: the count does not expire any.
    let (t, r) =
        cleanup::expire_and_clean(fx.catalog.as_ref(), &t, &bound(Duration::from_secs(3600)))
            .await
            .unwrap();
    assert_eq!(
        (r.snapshots_expired, t.metadata.snapshots().count()),
        (0, total)
    );
    // Old enough: down to the bound, the newest kept, the rows unchanged.
    let newest = t.metadata.current_snapshot_id();
    let (t, r) = cleanup::expire_and_clean(fx.catalog.as_ref(), &t, &bound(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(t.metadata.snapshots().count(), 5, "{r:?}");
    assert_eq!(r.snapshots_expired, total - 5);
    assert_eq!(t.metadata.current_snapshot_id(), newest);
    assert_eq!(read_rust(&t).await, model);
    assert_eq!(
        kv_read_py(std::slice::from_ref(&t.metadata_location)),
        vec![model]
    );
}

async fn assert_read_cost_due(f: &Fixture, policy: &MaintenanceConfig) {
    let cost = tributary_maintenance::read_cost(&f.table().await, policy)
        .await
        .unwrap();
    assert!(
        cost.amplification() >= policy.read_amplification,
        "{cost:?}"
    );
}

/// A small table read in milliseconds feels each small file: two commits
/// leave it far under the count triggers (8 small files, 8 delete files)
/// yet past the read-cost bound, so `sync`'s cheap check compacts it —
/// and then waits its turn (`busy_limit`) before doing so again.
#[tokio::test]
async fn the_read_cost_check_compacts_a_small_table_the_counts_would_leave() {
    let f = Fixture::new();
    let mut writer = f.writer(DeleteMode::Position).await;
    let mut model = four_commits_of_five_rows(&mut writer, &f.schema).await;
    // Defaults but the share of time: a run of milliseconds waits seconds.
    let policy = MaintenanceConfig {
        busy_limit: 0.001,
        ..MaintenanceConfig::default()
    };
    let check = tributary_maintenance::ReadCostCheck::default();
    let update = |key: i32, v: i32, offset: u64| {
        kv_event(
            &f.schema,
            Op::Update,
            Some((key, 0)),
            Some((key, v)),
            offset,
        )
    };
    // Read cost off: nothing, whatever the table looks like.
    let off = MaintenanceConfig {
        read_amplification: 0.0,
        ..MaintenanceConfig::default()
    };
    assert!(
        check
            .run(f.catalog.as_ref(), &f.name, &off)
            .await
            .unwrap()
            .is_none()
    );
    write(&mut writer, &f.schema, &[update(3, 7, 1000)]).await;
    model.insert(3, (Some(7), None));
    let before = tributary_maintenance::shape(&f.table().await, &policy)
        .await
        .unwrap();
    assert!(
        before.small_files < policy.small_files && before.position_delete_files == 1,
        "{before:?}"
    );
    assert_read_cost_due(&f, &policy).await;
    let report = check
        .run(f.catalog.as_ref(), &f.name, &policy)
        .await
        .unwrap()
        .expect("the read cost is past the bound");
    assert_eq!(report.compacted_groups.len(), 1, "{report}");
    let t = f.table().await;
    assert_eq!(counts(&t).await, (1, 0, 0), "{report}");
    let cost = tributary_maintenance::read_cost(&t, &policy).await.unwrap();
    assert!(cost.amplification() < policy.read_amplification, "{cost:?}");
    // The rewrite wrote one manifest per content (the emptied ones merged),
    // and the next commit carries none that holds only deleted entries.
    assert!(cost.manifests <= 2, "{cost:?}");
    assert_eq!(read_rust(&t).await, model);
    assert_eq!(
        kv_read_py(std::slice::from_ref(&t.metadata_location)),
        vec![model.clone()]
    );
    // Due again at once, but the last run's share of the time says wait
    // (the default policy otherwise: only `busy_limit` differs).
    write(&mut writer, &f.schema, &[update(4, 8, 1001)]).await;
    let t = f.table().await;
    for m in tributary_catalog::current_manifests(&t).await.unwrap() {
        assert!(m.has_added_files() || m.has_existing_files(), "{m:?}");
    }
    assert_read_cost_due(&f, &policy).await;
    assert!(
        check
            .run(f.catalog.as_ref(), &f.name, &policy)
            .await
            .unwrap()
            .is_none(),
        "a second run right after the first keeps to busy_limit"
    );
    // A fresh check (another process) has no such memory: it compacts.
    let again = tributary_maintenance::ReadCostCheck::default()
        .run(f.catalog.as_ref(), &f.name, &policy)
        .await
        .unwrap()
        .expect("due");
    assert_eq!(again.compacted_groups.len(), 1, "{again}");
}
