//! The same commit sequence through every catalog (local and S3 Hadoop
//! layout, Hive Metastore): unpartitioned and partitioned tables; append, row
//! delta with position deletes, rewrite; after every commit iceberg-rust and
//! pyiceberg read exactly the expected rows.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Schema as ArrowSchema};
use common::*;
use iceberg::expr::Reference;
use iceberg::spec::{Datum, Literal, Operation, Struct, Transform, UnboundPartitionSpec};
use iceberg::transform::create_transform_function;
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
    };
    let t = commit_rewrite(catalog, &t, &plan).await.unwrap();
    assert_eq!(
        t.metadata.current_snapshot().unwrap().summary().operation,
        Operation::Replace
    );
    expect(&t, &[1, 3, 4, 5, 6]).await;
    assert_eq!(pyiceberg_read(&t, "True").0, 3, "three snapshots");
}

/// identity(name) and bucket(4, id), computed by Iceberg's transforms.
fn partition_of(id: i64, name: &str) -> Struct {
    let apply = |t: Transform, d: Datum| {
        Literal::from(
            create_transform_function(&t)
                .unwrap()
                .transform_literal_result(&d)
                .unwrap(),
        )
    };
    Struct::from_iter([
        Some(apply(Transform::Identity, Datum::string(name))),
        Some(apply(Transform::Bucket(4), Datum::long(id))),
    ])
}

async fn partitioned(catalog: &dyn Catalog) {
    let spec = UnboundPartitionSpec::builder()
        .add_partition_field(2, "name", Transform::Identity)
        .unwrap()
        .add_partition_field(1, "id_bucket", Transform::Bucket(4))
        .unwrap()
        .build();
    let name = TableName::new(unique_name("db"), "parted");
    let t = catalog
        .create_table(&name, schema(), spec, HashMap::new())
        .await
        .unwrap();
    let mut groups: BTreeMap<String, (Struct, Vec<(i64, String)>)> = BTreeMap::new();
    for id in 0..24i64 {
        let label = if id % 3 == 0 { "x" } else { "y" }.to_string();
        let p = partition_of(id, &label);
        groups
            .entry(format!("{p:?}"))
            .or_insert_with(|| (p, Vec::new()))
            .1
            .push((id, label));
    }
    let arrow = Arc::new(ArrowSchema::new(vec![
        field("id", DataType::Int64, false, 1),
        field("name", DataType::Utf8, true, 2),
    ]));
    let mut files = Vec::new();
    for (p, rows) in groups.values() {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.1.as_str()),
            )),
        ];
        files.push(
            write_batch(
                &t,
                &RecordBatch::try_new(arrow.clone(), columns).unwrap(),
                p.clone(),
            )
            .await,
        );
    }
    let t = commit_row_delta(
        catalog,
        &t,
        &RowDelta {
            data_files: files,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let xs: Vec<i64> = (0..24).filter(|i| i % 3 == 0).collect();
    let filter = Reference::new("name").equal_to(Datum::string("x"));
    assert_eq!(iceberg_rust_ids(&t, Some(filter)).await, xs);
    assert_eq!(pyiceberg_read(&t, "name == 'x'").1, xs);
    expect(&t, &(0..24).collect::<Vec<_>>()).await;
}

#[tokio::test]
async fn hadoop_local_catalog_runs_the_whole_protocol() {
    let catalog = local_catalog();
    unpartitioned(&catalog).await;
    partitioned(&catalog).await;
}

#[tokio::test]
async fn hadoop_s3_catalog_runs_the_whole_protocol() {
    let catalog = s3_catalog().await;
    unpartitioned(&catalog).await;
    partitioned(&catalog).await;
}

#[tokio::test]
async fn hive_catalog_runs_the_whole_protocol() {
    let (catalog, _) = hive_catalog();
    unpartitioned(&catalog).await;
    partitioned(&catalog).await;
}
