//! The Hive Metastore catalog against HMS 2.3 from `dev/services up hms`:
//! our tables read by pyiceberg's HiveCatalog, pyiceberg's tables loaded by
//! us, compare-and-swap commits under concurrency.

mod common;

use std::collections::HashMap;

use common::*;
use iceberg::spec::UnboundPartitionSpec;
use tributary_catalog::{Catalog, TableName};
use tributary_core::ErrorKind;
use tributary_testkit::{DevServices, unique_name};

const PY_HIVE: &str = r#"
import sys
from pyiceberg.catalog.hive import HiveCatalog
cat = HiveCatalog("hms", **{"uri": sys.argv[1], "hive.hive2-compatible": "true", "warehouse": sys.argv[2]})
"#;

#[tokio::test]
async fn our_hive_tables_read_in_pyiceberg_and_theirs_load_here() {
    let (catalog, warehouse) = hive_catalog();
    let s = DevServices::load();
    let uri = format!("thrift://{}", s.hms());
    let db = unique_name("hive_db");
    let name = TableName::new(db.clone(), "events");
    let t = catalog
        .create_table(
            &name,
            schema(),
            UnboundPartitionSpec::builder().build(),
            HashMap::new(),
        )
        .await
        .unwrap();
    let a = write_data_file(&t, &[1, 2, 3]).await;
    let a_path = a.file_path().to_string();
    let t = append(&catalog, &t, vec![a]).await;
    let _dir = t.metadata.location().to_string();
    let pos = position_deletes(&t, "pos.parquet", vec![(a_path, 2)]).await;
    let t = commit_deletes(&catalog, &t, vec![pos]).await;
    assert_eq!(iceberg_rust_ids(&t, None).await, [1, 2]);
    let out = s.run_python(
        &format!("{PY_HIVE}t = cat.load_table(sys.argv[3])\nprint(sorted(t.scan().to_arrow()['id'].to_pylist()))\n"),
        &[&uri, &warehouse, &format!("{db}.events")],
    );
    assert_eq!(
        out.trim(),
        "[1, 2]",
        "pyiceberg's HiveCatalog reads our table"
    );

    // pyiceberg creates and appends; we load its table and read it.
    let out = s.run_python(
        &format!(
            "{PY_HIVE}import pyarrow as pa\n\
             t = cat.create_table(sys.argv[3], schema=pa.schema([('id', pa.int64())]))\n\
             t.append(pa.table({{'id': [7, 8]}}))\nprint('ok')\n"
        ),
        &[&uri, &warehouse, &format!("{db}.from_py")],
    );
    assert_eq!(out.trim(), "ok");
    let theirs = catalog
        .load_table(&TableName::new(db.clone(), "from_py"))
        .await
        .unwrap();
    assert_eq!(iceberg_rust_ids(&theirs, None).await, [7, 8]);
    let more = write_data_file(&theirs, &[9]).await;
    // Their schema has only `id` (field 1); our extra column is ignored by readers.
    let theirs = append(&catalog, &theirs, vec![more]).await;
    let out = s.run_python(
        &format!("{PY_HIVE}t = cat.load_table(sys.argv[3])\nprint(sorted(t.scan().to_arrow()['id'].to_pylist()))\n"),
        &[&uri, &warehouse, &format!("{db}.from_py")],
    );
    assert_eq!(
        out.trim(),
        "[7, 8, 9]",
        "pyiceberg sees our commit on its table"
    );
    assert!(theirs.metadata_location.ends_with(".metadata.json"));
}

#[tokio::test]
async fn hive_commits_compare_and_swap_under_concurrency() {
    let (catalog, _) = hive_catalog();
    let name = TableName::new(unique_name("hive_db"), "events");
    let t = catalog
        .create_table(
            &name,
            schema(),
            UnboundPartitionSpec::builder().build(),
            HashMap::new(),
        )
        .await
        .unwrap();
    // A stale base loses with CommitConflict.
    let f = write_data_file(&t, &[1]).await;
    let fresh = append(&catalog, &t, vec![f]).await;
    let stale = catalog
        .commit(&t, fresh.metadata.clone())
        .await
        .unwrap_err();
    assert_eq!(stale.kind(), ErrorKind::CommitConflict, "{stale}");

    let mut tasks = Vec::new();
    for i in 0..8i64 {
        let (catalog, t) = (catalog.clone(), fresh.clone());
        tasks.push(tokio::spawn(async move {
            let f = write_data_file(&t, &[100 + i]).await;
            append(&catalog, &t, vec![f]).await
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let last = catalog.load_table(&name).await.unwrap();
    let mut expected = vec![1];
    expected.extend(100..108);
    assert_eq!(iceberg_rust_ids(&last, None).await, expected);
    assert_eq!(
        last.metadata.snapshots().count(),
        9,
        "linear: one snapshot per commit"
    );
}
