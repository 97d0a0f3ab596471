//! Hadoop catalog on the local filesystem: append commits read back by two
//! independent readers (pyiceberg's StaticTable and iceberg-rust's scan), and
//! concurrent committers that all land in one linear history.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema as ArrowSchema};
use common::*;
use iceberg::spec::{DataFile, Struct, UnboundPartitionSpec};
use tributary_catalog::{
    CatalogTable, HadoopCatalog, RewriteFiles, RowDelta, TableName, commit_rewrite,
    commit_row_delta, expire_snapshots, write_equality_deletes, write_position_deletes,
};
use tributary_core::ErrorKind;
use tributary_testkit::{DevServices, dev_dir, unique_name};

async fn catalog_and_table() -> (HadoopCatalog, CatalogTable) {
    let warehouse = dev_dir().join("tmp").join(unique_name("warehouse"));
    let catalog = HadoopCatalog::new_local(&warehouse).unwrap();
    let spec = UnboundPartitionSpec::builder().build();
    let table = catalog
        .create_table(
            &TableName::new("db", "events"),
            schema(),
            spec,
            HashMap::new(),
        )
        .await
        .unwrap();
    (catalog, table)
}

#[tokio::test]
async fn appends_are_read_back_by_pyiceberg_and_iceberg_rust() {
    let (catalog, table) = catalog_and_table().await;
    assert_eq!(table.version, 1);
    let first = write_data_file(&table, &[1, 2, 3]).await;
    let mut props = HashMap::new();
    props.insert(
        "tributary.source-position".to_string(),
        "mysql-bin.000001:1234".to_string(),
    );
    let t2 = commit_row_delta(
        &catalog,
        &table,
        &RowDelta {
            data_files: vec![first],
            properties: props,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(t2.version, 2);
    let second = write_data_file(&t2, &[10, 11]).await;
    let t3 = append(&catalog, &t2, vec![second]).await;
    assert_eq!(t3.version, 3);

    assert_eq!(pyiceberg_read(&t3, "True"), (2, vec![1, 2, 3, 10, 11]));
    assert_eq!(iceberg_rust_ids(&t3, None).await, [1, 2, 3, 10, 11]);
    // The older version still reads as it was (snapshot isolation).
    assert_eq!(pyiceberg_read(&t2, "True"), (1, vec![1, 2, 3]));

    let snap = t3.metadata.current_snapshot().unwrap();
    let summary = &snap.summary().additional_properties;
    assert_eq!(summary["total-records"], "5");
    assert_eq!(summary["total-data-files"], "2");
    let parent = t3
        .metadata
        .snapshot_by_id(snap.parent_snapshot_id().unwrap())
        .unwrap();
    assert_eq!(
        parent.summary().additional_properties["tributary.source-position"],
        "mysql-bin.000001:1234"
    );
    assert_eq!(
        t3.metadata.metadata_log().len(),
        2,
        "v1 and v2 are in the metadata log"
    );
    assert_eq!(snap.sequence_number(), 2);
}

#[tokio::test]
async fn eight_concurrent_committers_all_land_in_one_linear_history() {
    let (catalog, table) = catalog_and_table().await;
    let mut tasks = Vec::new();
    for i in 0..8i64 {
        let (catalog, table) = (catalog.clone(), table.clone());
        tasks.push(tokio::spawn(async move {
            let file = write_data_file(&table, &[i * 100, i * 100 + 1]).await;
            append(&catalog, &table, vec![file]).await
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let last = catalog.load_table(&table.name).await.unwrap();
    assert_eq!(last.version, 9, "one version per commit");
    let mut expected: Vec<i64> = (0..8).flat_map(|i| [i * 100, i * 100 + 1]).collect();
    expected.sort();
    assert_eq!(iceberg_rust_ids(&last, None).await, expected);
    // Linear: every snapshot's parent is the one before it, sequence numbers 1..=8.
    let mut snap = last.metadata.current_snapshot().unwrap().clone();
    let mut seqs = vec![snap.sequence_number()];
    while let Some(p) = snap.parent_snapshot_id() {
        snap = last.metadata.snapshot_by_id(p).unwrap().clone();
        seqs.push(snap.sequence_number());
    }
    assert_eq!(seqs, (1..=8).rev().collect::<Vec<_>>());
    assert_eq!(pyiceberg_read(&last, "True").0, 8);
    // The losers' attempts left nothing behind: every manifest list and
    // manifest in the metadata directory belongs to a snapshot.
    let mut referenced = std::collections::HashSet::new();
    for snap in last.metadata.snapshots() {
        referenced.insert(snap.manifest_list().to_string());
        for m in tributary_catalog::snapshot_manifests(&last, snap)
            .await
            .unwrap()
        {
            referenced.insert(m.manifest_path.clone());
        }
    }
    let dir = format!("{}/metadata", last.metadata.location());
    let stored: Vec<String> = std::fs::read_dir(dir.strip_prefix("file://").unwrap_or(&dir))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".avro"))
        .collect();
    let orphans: Vec<&String> = stored
        .iter()
        .filter(|n| !referenced.iter().any(|r| r.ends_with(&format!("/{n}"))))
        .collect();
    assert!(orphans.is_empty(), "left behind by lost races: {orphans:?}");
}

#[tokio::test]
async fn row_deltas_with_position_deletes_read_back_everywhere_and_equality_deletes_in_iceberg_rust()
 {
    let (catalog, table) = catalog_and_table().await;
    let a = write_data_file(&table, &[1, 2, 3]).await;
    let b = write_data_file(&table, &[4, 5]).await;
    let (a_path, b_path) = (a.file_path().to_string(), b.file_path().to_string());
    let add = RowDelta {
        data_files: vec![a, b],
        ..Default::default()
    };
    let t = commit_row_delta(&catalog, &table, &add).await.unwrap();

    // Delete id 2 (file a, row 1) and id 4 (file b, row 0); add id 6.
    let dir = t.metadata.location().to_string();
    let deletes = vec![(b_path.clone(), 0), (a_path.clone(), 1)];
    let pos = write_position_deletes(
        &t.file_io,
        &format!("{dir}/data/pos-1.parquet"),
        deletes,
        Struct::empty(),
        0,
    )
    .await
    .unwrap();
    let c = write_data_file(&t, &[6]).await;
    let delta = RowDelta {
        data_files: vec![c],
        delete_files: vec![pos],
        ..Default::default()
    };
    let t = commit_row_delta(&catalog, &t, &delta).await.unwrap();
    assert_eq!(
        pyiceberg_read(&t, "True"),
        (2, vec![1, 3, 5, 6]),
        "pyiceberg applies position deletes"
    );
    assert_eq!(iceberg_rust_ids(&t, None).await, [1, 3, 5, 6]);
    let summary = &t.metadata.current_snapshot().unwrap().summary();
    assert_eq!(summary.operation, iceberg::spec::Operation::Overwrite);
    assert_eq!(summary.additional_properties["added-position-deletes"], "2");
    assert_eq!(summary.additional_properties["total-position-deletes"], "2");

    // An equality delete on the key removes id 5 for iceberg-rust; pyiceberg
    // refuses tables with equality deletes (its documented limitation).
    let key = Arc::new(ArrowSchema::new(vec![
        Field::new("id", DataType::Int64, false).with_metadata(HashMap::from([(
            "PARQUET:field_id".to_string(),
            "1".to_string(),
        )])),
    ]));
    let batch =
        RecordBatch::try_new(key, vec![Arc::new(Int64Array::from(vec![5])) as ArrayRef]).unwrap();
    let eq = write_equality_deletes(
        &t.file_io,
        &format!("{dir}/data/eq-1.parquet"),
        &batch,
        vec![1],
        Struct::empty(),
        0,
    )
    .await
    .unwrap();
    let t = commit_deletes(&catalog, &t, vec![eq]).await;
    assert_eq!(
        t.metadata.current_snapshot().unwrap().summary().operation,
        iceberg::spec::Operation::Delete
    );
    assert_eq!(iceberg_rust_ids(&t, None).await, [1, 3, 6]);
    let out = DevServices::load().run_python(
        r#"
import sys
from pyiceberg.table import StaticTable
try:
    StaticTable.from_metadata(sys.argv[1]).scan().to_arrow()
    print("read")
except ValueError as e:
    print("refused:", e)
"#,
        &[&t.metadata_location],
    );
    assert!(
        out.contains("refused") && out.contains("equality deletes"),
        "{out}"
    );
}

/// A table with files a = [1, 2, 3] and b = [4, 5], and a rewrite of both
/// into one file planned at that snapshot.
async fn table_with_planned_rewrite() -> (HadoopCatalog, CatalogTable, DataFile, RewriteFiles) {
    let (catalog, table) = catalog_and_table().await;
    let (a, b) = (
        write_data_file(&table, &[1, 2, 3]).await,
        write_data_file(&table, &[4, 5]).await,
    );
    let add = RowDelta {
        data_files: vec![a.clone(), b.clone()],
        ..Default::default()
    };
    let t = commit_row_delta(&catalog, &table, &add).await.unwrap();
    let merged = write_data_file(&t, &[1, 2, 3, 4, 5]).await;
    let plan = RewriteFiles {
        replaced: vec![a.clone(), b],
        added: vec![merged],
        starting_snapshot_id: t.metadata.current_snapshot_id().unwrap(),
        ..Default::default()
    };
    (catalog, t, a, plan)
}

#[tokio::test]
async fn a_rewrite_replaces_files_and_both_readers_see_the_same_rows() {
    let (catalog, t, _, plan) = table_with_planned_rewrite().await;
    let t = commit_rewrite(&catalog, &t, &plan).await.unwrap();
    assert_eq!(pyiceberg_read(&t, "True"), (2, vec![1, 2, 3, 4, 5]));
    assert_eq!(iceberg_rust_ids(&t, None).await, [1, 2, 3, 4, 5]);
    assert_eq!(iceberg_java_ids(&t), [1, 2, 3, 4, 5]);
    let s = t.metadata.current_snapshot().unwrap().summary();
    assert_eq!(s.operation, iceberg::spec::Operation::Replace);
    assert_eq!(
        (
            s.additional_properties["total-data-files"].as_str(),
            s.additional_properties["deleted-data-files"].as_str()
        ),
        ("1", "2")
    );
}

#[tokio::test]
async fn a_rewrite_fails_typed_when_a_newer_position_delete_hits_a_replaced_file() {
    let (catalog, t, a, plan) = table_with_planned_rewrite().await;
    // After planning, a writer deletes id 1 (file a, row 0) by position.
    let _dir = t.metadata.location().to_string();
    let pos = position_deletes(&t, "pos-late.parquet", vec![(a.file_path().to_string(), 0)]).await;
    let t2 = commit_deletes(&catalog, &t, vec![pos]).await;
    let err = commit_rewrite(&catalog, &t, &plan).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ValidationFailed, "{err}");
    assert!(err.to_string().contains(a.file_path()), "{err}");
    let now = catalog.load_table(&t.name).await.unwrap();
    assert_eq!(now.version, t2.version, "a failed rewrite commits nothing");
    assert_eq!(
        iceberg_rust_ids(&now, None).await,
        [2, 3, 4, 5],
        "id 1 stays deleted"
    );
}

/// With the map of where each old row went, the newer position delete is
/// rebased onto the rewritten file instead of failing: id 1 stays deleted.
#[tokio::test]
async fn a_rewrite_with_a_row_map_rebases_newer_position_deletes() {
    let (catalog, t, a, mut plan) = table_with_planned_rewrite().await;
    // a = [1, 2, 3] → merged rows 0..3; b = [4, 5] → merged rows 3, 4.
    let merged = plan.added[0].file_path().to_string();
    let b = plan.replaced[1].file_path().to_string();
    let mut map = tributary_catalog::RowMap::default();
    map.new_files.push((merged.clone(), Struct::empty()));
    map.moved.insert(
        a.file_path().to_string(),
        (0..3).map(|i| Some((0, i))).collect(),
    );
    map.moved.insert(b, (3..5).map(|i| Some((0, i))).collect());
    plan.rows = Some(Arc::new(map));
    // After planning, a writer deletes ids 1 and 3 (file a, rows 0 and 2).
    let late = vec![
        (a.file_path().to_string(), 0),
        (a.file_path().to_string(), 2),
    ];
    let pos = position_deletes(&t, "pos-late.parquet", late).await;
    commit_deletes(&catalog, &t, vec![pos]).await;
    let done = commit_rewrite(&catalog, &t, &plan).await.unwrap();
    assert_eq!(
        iceberg_rust_ids(&done, None).await,
        [2, 4, 5],
        "no delete lost"
    );
    assert_eq!(pyiceberg_read(&done, "True").1, vec![2, 4, 5]);
    assert_eq!(iceberg_java_ids(&done), [2, 4, 5]);
}

/// A rewrite attempt that loses its race leaves what it read and rebased
/// for the retry: the retry rebases only the delete committed since, and
/// no delete is lost.
#[tokio::test]
async fn a_retried_rewrite_rebases_each_newer_delete_file_once() {
    use tributary_catalog::TableOperation;
    let (catalog, t, a, mut plan) = table_with_planned_rewrite().await;
    let merged = plan.added[0].file_path().to_string();
    let b = plan.replaced[1].file_path().to_string();
    let mut map = tributary_catalog::RowMap::default();
    map.new_files.push((merged, Struct::empty()));
    map.moved.insert(
        a.file_path().to_string(),
        (0..3).map(|i| Some((0, i))).collect(),
    );
    map.moved.insert(b, (3..5).map(|i| Some((0, i))).collect());
    plan.rows = Some(Arc::new(map));
    let late = |pos: i64| vec![(a.file_path().to_string(), pos)];
    let first = position_deletes(&t, "pos-late-1.parquet", late(0)).await;
    commit_deletes(&catalog, &t, vec![first]).await;
    // An attempt on that version, beaten by a second delete before its swap.
    let seen = catalog.load_table(&t.name).await.unwrap();
    plan.apply(&seen).await.unwrap().expect("a new version");
    let second = position_deletes(&t, "pos-late-2.parquet", late(2)).await;
    commit_deletes(&catalog, &t, vec![second]).await;
    let done = commit_rewrite(&catalog, &t, &plan).await.unwrap();
    assert_eq!(
        iceberg_rust_ids(&done, None).await,
        [2, 4, 5],
        "no delete lost"
    );
    let data = std::path::PathBuf::from(
        t.metadata
            .location()
            .trim_start_matches("file://")
            .to_string(),
    )
    .join("data");
    let rebased = std::fs::read_dir(data)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .ends_with("-rebased-deletes.parquet")
        })
        .count();
    assert_eq!(rebased, 2, "one rebased file per newer delete file");
}

#[tokio::test]
async fn a_rewrite_succeeds_past_a_newer_equality_delete_which_still_applies() {
    let (catalog, t, _, plan) = table_with_planned_rewrite().await;
    let key = Arc::new(ArrowSchema::new(vec![
        Field::new("id", DataType::Int64, false).with_metadata(HashMap::from([(
            "PARQUET:field_id".to_string(),
            "1".to_string(),
        )])),
    ]));
    let batch =
        RecordBatch::try_new(key, vec![Arc::new(Int64Array::from(vec![4])) as ArrayRef]).unwrap();
    let dir = t.metadata.location().to_string();
    let eq = write_equality_deletes(
        &t.file_io,
        &format!("{dir}/data/eq-late.parquet"),
        &batch,
        vec![1],
        Struct::empty(),
        0,
    )
    .await
    .unwrap();
    commit_deletes(&catalog, &t, vec![eq]).await;
    let done = commit_rewrite(&catalog, &t, &plan).await.unwrap();
    assert_eq!(
        iceberg_rust_ids(&done, None).await,
        [1, 2, 3, 5],
        "the rewritten file keeps the planning sequence number"
    );
    assert_eq!(
        iceberg_java_ids(&done),
        [1, 2, 3, 5],
        "Iceberg Java applies the newer equality delete to the rewritten file too"
    );
}

/// A table with a = [1, 2, 3] (id 2 deleted by position, in a delete file
/// naming only a) and b = [4, 5]; and a copy-on-write delta planned there
/// that deletes id 3 and adds id 6: a written again as [1], the delete file
/// removed with it.
async fn table_with_planned_copy_on_write() -> (HadoopCatalog, CatalogTable, DataFile, RowDelta) {
    let (catalog, table) = catalog_and_table().await;
    let (a, b) = (
        write_data_file(&table, &[1, 2, 3]).await,
        write_data_file(&table, &[4, 5]).await,
    );
    let t = append(&catalog, &table, vec![a.clone(), b]).await;
    let del = position_deletes(&t, "pos-a.parquet", vec![(a.file_path().to_string(), 1)]).await;
    let t = commit_deletes(&catalog, &t, vec![del.clone()]).await;
    let delta = RowDelta {
        data_files: vec![
            write_data_file(&t, &[1]).await,
            write_data_file(&t, &[6]).await,
        ],
        removed: vec![a.file_path().to_string(), del.file_path().to_string()],
        planned_at_snapshot: t.metadata.current_snapshot_id(),
        // As a consumer-group worker's: other writers' commits are no
        // conflict by themselves (an exclusive delta refuses any).
        exclusive: false,
        ..Default::default()
    };
    (catalog, t, a, delta)
}

#[tokio::test]
async fn a_copy_on_write_delta_replaces_files_in_one_snapshot_that_every_reader_agrees_on() {
    let (catalog, t, _, delta) = table_with_planned_copy_on_write().await;
    let done = commit_row_delta(&catalog, &t, &delta).await.unwrap();
    assert_eq!(iceberg_rust_ids(&done, None).await, [1, 4, 5, 6]);
    assert_eq!(pyiceberg_read(&done, "True").1, vec![1, 4, 5, 6]);
    assert_eq!(iceberg_java_ids(&done), [1, 4, 5, 6]);
    let s = done.metadata.current_snapshot().unwrap().summary();
    assert_eq!(s.operation, iceberg::spec::Operation::Overwrite);
    let p = &s.additional_properties;
    let get = |k: &str| p.get(k).map(String::as_str);
    assert_eq!(get("deleted-data-files"), Some("1"));
    assert_eq!(get("removed-delete-files"), Some("1"));
    assert_eq!(get("total-data-files"), Some("3"));
    assert_eq!(get("total-delete-files"), Some("0"));
    assert_eq!(
        get("total-records"),
        Some("4"),
        "live rows, nothing deleted"
    );
    let (data, deletes) = tributary_catalog::live_files(&done).await.unwrap();
    assert_eq!((data.len(), deletes.len()), (3, 0));
    // One manifest of data: the added files beside b, which the commit
    // rewrote with a; the carried delete manifest is gone.
    let manifests = tributary_catalog::current_manifests(&done).await.unwrap();
    let data_manifests = manifests
        .iter()
        .filter(|m| m.content == iceberg::spec::ManifestContentType::Data)
        .count();
    assert_eq!(data_manifests, 1);
}

/// Rows read for a copy-on-write commit were read with the deletes of its
/// planning snapshot: a delete committed since that applies to a file it
/// removes (by position, or any equality delete) fails the commit typed,
/// as does a removed file another commit already replaced; a newer delete
/// of a file it keeps does not.
#[tokio::test]
async fn a_copy_on_write_delta_fails_typed_when_a_newer_delete_applies_to_a_removed_file() {
    // By position, on a.
    let (catalog, t, a, delta) = table_with_planned_copy_on_write().await;
    let late = position_deletes(&t, "late.parquet", vec![(a.file_path().to_string(), 0)]).await;
    let t2 = commit_deletes(&catalog, &t, vec![late]).await;
    let err = commit_row_delta(&catalog, &t, &delta).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ValidationFailed, "{err}");
    assert!(err.to_string().contains("late.parquet"), "{err}");
    let now = catalog.load_table(&t.name).await.unwrap();
    assert_eq!(now.version, t2.version, "a refused commit commits nothing");

    // An equality delete (of id 4, in b: it could have hit a's rows too).
    let (catalog, t, _, delta) = table_with_planned_copy_on_write().await;
    let key = Arc::new(ArrowSchema::new(vec![
        Field::new("id", DataType::Int64, false).with_metadata(HashMap::from([(
            "PARQUET:field_id".to_string(),
            "1".to_string(),
        )])),
    ]));
    let ids =
        RecordBatch::try_new(key, vec![Arc::new(Int64Array::from(vec![4])) as ArrayRef]).unwrap();
    let dir = t.metadata.location().to_string();
    let eq = write_equality_deletes(
        &t.file_io,
        &format!("{dir}/data/eq-late.parquet"),
        &ids,
        vec![1],
        Struct::empty(),
        0,
    )
    .await
    .unwrap();
    commit_deletes(&catalog, &t, vec![eq]).await;
    let err = commit_row_delta(&catalog, &t, &delta).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ValidationFailed, "{err}");
    assert!(err.to_string().contains("eq-late.parquet"), "{err}");

    // a replaced by a compaction meanwhile.
    let (catalog, t, a, delta) = table_with_planned_copy_on_write().await;
    let compacted = write_data_file(&t, &[1, 3]).await;
    let rewrite = RewriteFiles {
        replaced: vec![a],
        added: vec![compacted],
        starting_snapshot_id: t.metadata.current_snapshot_id().unwrap(),
        ..Default::default()
    };
    commit_rewrite(&catalog, &t, &rewrite).await.unwrap();
    let err = commit_row_delta(&catalog, &t, &delta).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ValidationFailed, "{err}");

    // A newer delete of b only: the commit lands, and both deletes apply.
    let (catalog, t, _, delta) = table_with_planned_copy_on_write().await;
    let (data, _) = tributary_catalog::live_files(&t).await.unwrap();
    let b = data.iter().find(|f| f.record_count() == 2).unwrap();
    let late = position_deletes(&t, "late-b.parquet", vec![(b.file_path().to_string(), 0)]).await;
    commit_deletes(&catalog, &t, vec![late]).await;
    let done = commit_row_delta(&catalog, &t, &delta).await.unwrap();
    assert_eq!(iceberg_rust_ids(&done, None).await, [1, 5, 6]);
    assert_eq!(pyiceberg_read(&done, "True").1, vec![1, 5, 6]);
}

/// A commit built on a version whose metadata file was already deleted
/// (more than `previous-versions-max` behind) could otherwise create that
/// file anew and "win": a version the table left long ago, so the commit
/// lands nowhere while its caller (expiry deleting files) goes on as if it
/// had. It must lose the race instead, and the retry land on the newest.
#[tokio::test]
async fn a_base_older_than_the_kept_versions_loses_its_race_and_never_lands_nowhere() {
    use tributary_catalog::Catalog;
    let warehouse = dev_dir().join("tmp").join(unique_name("warehouse"));
    let catalog = HadoopCatalog::new_local(&warehouse).unwrap();
    let props = HashMap::from([
        (
            "write.metadata.previous-versions-max".to_string(),
            "2".to_string(),
        ),
        (
            "write.metadata.delete-after-commit.enabled".to_string(),
            "true".to_string(),
        ),
    ]);
    let name = TableName::new("db", "stale");
    let mut t = catalog
        .create_table(
            &name,
            schema(),
            UnboundPartitionSpec::builder().build(),
            props,
        )
        .await
        .unwrap();
    let f = write_data_file(&t, &[0]).await;
    t = append(&catalog, &t, vec![f]).await;
    let stale = t.clone();
    for i in 1..5 {
        let f = write_data_file(&t, &[i]).await;
        t = append(&catalog, &t, vec![f]).await;
    }
    assert_eq!((stale.version, t.version), (2, 6));
    let v3 = warehouse.join("db/stale/metadata/v3.metadata.json");
    assert!(!v3.exists(), "v3 fell out of the kept versions");

    let err = Catalog::commit(&catalog, &stale, stale.metadata.clone())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CommitConflict, "{err}");
    assert!(!v3.exists(), "no dead version written");
    let newest = catalog.load_table(&name).await.unwrap();
    assert_eq!(newest.version, 6);
    assert_eq!(iceberg_rust_ids(&newest, None).await, [0, 1, 2, 3, 4]);

    // Through the commit protocol the stale caller's change lands on top.
    let f = write_data_file(&stale, &[5]).await;
    let landed = append(&catalog, &stale, vec![f]).await;
    assert_eq!(landed.version, 7);
    assert_eq!(iceberg_rust_ids(&landed, None).await, [0, 1, 2, 3, 4, 5]);
    std::fs::remove_dir_all(warehouse).unwrap();
}

#[tokio::test]
async fn old_metadata_versions_are_trimmed_and_deleted_and_snapshots_expire() {
    let warehouse = dev_dir().join("tmp").join(unique_name("warehouse"));
    let catalog = HadoopCatalog::new_local(&warehouse).unwrap();
    let props = HashMap::from([
        (
            "write.metadata.previous-versions-max".to_string(),
            "2".to_string(),
        ),
        (
            "write.metadata.delete-after-commit.enabled".to_string(),
            "true".to_string(),
        ),
    ]);
    let name = TableName::new("db", "trimmed");
    let mut t = catalog
        .create_table(
            &name,
            schema(),
            UnboundPartitionSpec::builder().build(),
            props,
        )
        .await
        .unwrap();
    for i in 0..5 {
        let f = write_data_file(&t, &[i]).await;
        t = append(&catalog, &t, vec![f]).await;
    }
    assert_eq!(t.version, 6);
    assert_eq!(t.metadata.metadata_log().len(), 2, "previous-versions-max");
    let meta_dir = warehouse.join("db/trimmed/metadata");
    let mut versions: Vec<String> = std::fs::read_dir(&meta_dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".metadata.json"))
        .collect();
    versions.sort();
    assert_eq!(
        versions,
        ["v4.metadata.json", "v5.metadata.json", "v6.metadata.json"]
    );
    assert_eq!(pyiceberg_read(&t, "True"), (5, vec![0, 1, 2, 3, 4]));

    let cutoff = t.metadata.current_snapshot().unwrap().timestamp_ms() + 1;
    let expired = expire_snapshots(&catalog, &t, cutoff, 2).await.unwrap();
    assert_eq!(
        expired.metadata.snapshots().count(),
        2,
        "the current snapshot and one ancestor stay"
    );
    assert_eq!(
        expired.metadata.current_snapshot_id(),
        t.metadata.current_snapshot_id()
    );
    assert_eq!(
        pyiceberg_read(&expired, "True"),
        (2, vec![0, 1, 2, 3, 4]),
        "expiry changes history, not contents"
    );
    assert_eq!(iceberg_rust_ids(&expired, None).await, [0, 1, 2, 3, 4]);
}

#[tokio::test]
async fn on_s3_appends_and_row_deltas_read_back_and_concurrent_commits_all_land() {
    let catalog = s3_catalog().await;
    let name = TableName::new("db", "events");
    let table = catalog
        .create_table(
            &name,
            schema(),
            UnboundPartitionSpec::builder().build(),
            HashMap::new(),
        )
        .await
        .unwrap();
    assert!(
        table.metadata_location.starts_with("s3://"),
        "{}",
        table.metadata_location
    );
    let again = catalog
        .create_table(
            &name,
            schema(),
            UnboundPartitionSpec::builder().build(),
            HashMap::new(),
        )
        .await;
    assert!(again.unwrap_err().to_string().contains("already exists"));

    let a = write_data_file(&table, &[1, 2, 3]).await;
    let a_path = a.file_path().to_string();
    let t = append(&catalog, &table, vec![a]).await;
    let _dir = t.metadata.location().to_string();
    let pos = position_deletes(&t, "pos.parquet", vec![(a_path, 1)]).await;
    let t = commit_deletes(&catalog, &t, vec![pos]).await;
    assert_eq!(pyiceberg_read(&t, "True"), (2, vec![1, 3]));
    assert_eq!(iceberg_rust_ids(&t, None).await, [1, 3]);

    let mut tasks = Vec::new();
    for i in 0..8i64 {
        let (catalog, t) = (catalog.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            let file = write_data_file(&t, &[100 + i]).await;
            append(&catalog, &t, vec![file]).await
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let last = catalog.load_table(&name).await.unwrap();
    assert_eq!(last.version, 11, "create + 2 + 8 commits, one version each");
    let mut expected = vec![1, 3];
    expected.extend(100..108);
    assert_eq!(iceberg_rust_ids(&last, None).await, expected);
}
