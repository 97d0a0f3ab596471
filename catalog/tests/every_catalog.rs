//! The same commit sequence through every catalog (local and S3 Hadoop
//! layout, Hive Metastore) on an unpartitioned table (partitioned tables:
//! `partitioned.rs`): append, row delta with position deletes, rewrite; after every commit iceberg-rust and
//! pyiceberg read exactly the expected rows.

mod common;

use std::collections::HashMap;

use common::*;
use iceberg::spec::{Operation, UnboundPartitionSpec};
use tributary_catalog::{
    Catalog, CatalogTable, RewriteFiles, RowDelta, TableName, commit_rewrite, commit_row_delta,
};
use tributary_testkit::unique_name;

async fn expect(table: &CatalogTable, ids: &[i64]) {
    assert_eq!(iceberg_rust_ids(table, None).await, ids, "iceberg-rust");
    assert_eq!(pyiceberg_read(table, "True").1, ids, "pyiceberg");
}

async fn unpartitioned(catalog: &dyn Catalog) {
    let name = TableName::new(unique_name("db"), "plain");
    // A missing table is NotFound (a runner tells it from an unreachable catalog).
    let missing = catalog.load_table(&name).await.unwrap_err();
    assert_eq!(
        missing.kind(),
        tributary_core::ErrorKind::NotFound,
        "{missing}"
    );
    let t = catalog
        .create_table(
            &name,
            schema(),
            UnboundPartitionSpec::builder().build(),
            HashMap::new(),
        )
        .await
        .unwrap();
    let (a, b) = (
        write_data_file(&t, &[1, 2, 3]).await,
        write_data_file(&t, &[4, 5]).await,
    );
    let a_path = a.file_path().to_string();
    let t = append(catalog, &t, vec![a, b.clone()]).await;
    expect(&t, &[1, 2, 3, 4, 5]).await;

    let _dir = t.metadata.location().to_string();
    let del = position_deletes(&t, "del.parquet", vec![(a_path, 1)]).await;
    let c = write_data_file(&t, &[6]).await;
    let delta = RowDelta {
        data_files: vec![c.clone()],
        delete_files: vec![del],
        ..Default::default()
    };
    let t = commit_row_delta(catalog, &t, &delta).await.unwrap();
    expect(&t, &[1, 3, 4, 5, 6]).await;

    let merged = write_data_file(&t, &[4, 5, 6]).await;
    let plan = RewriteFiles {
        replaced: vec![b, c],
        added: vec![merged],
        starting_snapshot_id: t.metadata.current_snapshot_id().unwrap(),
        ..Default::default()
    };
    let t = commit_rewrite(catalog, &t, &plan).await.unwrap();
    assert_eq!(
        t.metadata.current_snapshot().unwrap().summary().operation,
        Operation::Replace
    );
    expect(&t, &[1, 3, 4, 5, 6]).await;
    assert_eq!(pyiceberg_read(&t, "True").0, 3, "three snapshots");
}

#[tokio::test]
async fn hadoop_local_catalog_runs_the_whole_protocol() {
    let catalog = local_catalog();
    unpartitioned(&catalog).await;
}

#[tokio::test]
async fn hadoop_s3_catalog_runs_the_whole_protocol() {
    let catalog = s3_catalog().await;
    unpartitioned(&catalog).await;
}

#[tokio::test]
async fn hive_catalog_runs_the_whole_protocol() {
    let (catalog, _) = hive_catalog();
    unpartitioned(&catalog).await;
}
