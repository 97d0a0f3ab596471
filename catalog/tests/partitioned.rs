//! Partitioned tables (identity, day, bucket): files carry the partition
//! tuples the transforms give, so filtered scans by two independent readers
//! prune to exactly the matching rows, and position deletes apply within
//! their partition.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema as ArrowSchema, TimeUnit};
use common::*;
use iceberg::expr::Reference;
use iceberg::spec::{
    DataFile, Datum, Literal, NestedField, PrimitiveType, Schema, Struct, Transform, Type,
    UnboundPartitionSpec,
};
use iceberg::transform::create_transform_function;
use tributary_catalog::{
    Catalog, CatalogTable, RewriteFiles, RowDelta, TableName, commit_rewrite,
    write_position_deletes,
};
use tributary_testkit::unique_name;

const DAY_US: i64 = 86_400_000_000;

fn schema() -> Schema {
    Schema::builder()
        .with_fields(vec![
            NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
            NestedField::required(2, "category", Type::Primitive(PrimitiveType::String)).into(),
            NestedField::required(3, "ts", Type::Primitive(PrimitiveType::Timestamp)).into(),
        ])
        .build()
        .unwrap()
}

fn spec() -> UnboundPartitionSpec {
    UnboundPartitionSpec::builder()
        .add_partition_field(2, "category", Transform::Identity)
        .unwrap()
        .add_partition_field(3, "ts_day", Transform::Day)
        .unwrap()
        .add_partition_field(1, "id_bucket", Transform::Bucket(4))
        .unwrap()
        .build()
}

type Row = (i64, String, i64);

/// The partition tuple of a row, computed by Iceberg's own transforms.
fn partition_of(row: &Row) -> Struct {
    let apply = |t: Transform, d: Datum| {
        Literal::from(
            create_transform_function(&t)
                .unwrap()
                .transform_literal_result(&d)
                .unwrap(),
        )
    };
    Struct::from_iter([
        Some(apply(Transform::Identity, Datum::string(&row.1))),
        Some(apply(Transform::Day, Datum::timestamp_micros(row.2))),
        Some(apply(Transform::Bucket(4), Datum::long(row.0))),
    ])
}

async fn write_file(table: &CatalogTable, rows: &[Row]) -> DataFile {
    let field = |name: &str, t: DataType, id: &str| {
        Field::new(name, t, false).with_metadata(HashMap::from([(
            "PARQUET:field_id".to_string(),
            id.to_string(),
        )]))
    };
    let arrow = Arc::new(ArrowSchema::new(vec![
        field("id", DataType::Int64, "1"),
        field("category", DataType::Utf8, "2"),
        field("ts", DataType::Timestamp(TimeUnit::Microsecond, None), "3"),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.1.as_str()),
        )),
        Arc::new(TimestampMicrosecondArray::from_iter_values(
            rows.iter().map(|r| r.2),
        )),
    ];
    let batch = RecordBatch::try_new(arrow, columns).unwrap();
    write_batch(table, &batch, partition_of(&rows[0])).await
}

async fn scenario(catalog: &dyn Catalog) {
    let name = TableName::new(unique_name("db"), "parted");
    let table = catalog
        .create_table(&name, schema(), spec(), HashMap::new())
        .await
        .unwrap();
    let day0 = 19_000 * DAY_US;
    let rows: Vec<Row> = (0..40)
        .map(|i| {
            (
                i,
                if i % 2 == 0 { "a" } else { "b" }.to_string(),
                day0 + (i % 3) * DAY_US + i,
            )
        })
        .collect();
    // One file per partition tuple.
    let mut groups: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for r in &rows {
        groups
            .entry(format!("{:?}", partition_of(r)))
            .or_default()
            .push(r.clone());
    }
    let mut files = Vec::new();
    for g in groups.values() {
        files.push(write_file(&table, g).await);
    }
    assert!(files.len() >= 12, "{} partitions", files.len());
    // A prepared row delta (files of many partitions) survives its JSON
    // form unchanged: a commit made from it is the same commit.
    let delta = RowDelta {
        data_files: files.clone(),
        ..RowDelta::default()
    };
    let decoded =
        RowDelta::decode(&delta.encode(&table.metadata).unwrap(), &table.metadata).unwrap();
    assert_eq!(decoded.data_files, files);
    let t = append(catalog, &table, files.clone()).await;

    let evens: Vec<i64> = (0..40).filter(|i| i % 2 == 0).collect();
    assert_eq!(
        iceberg_rust_ids(
            &t,
            Some(Reference::new("category").equal_to(Datum::string("a")))
        )
        .await,
        evens
    );
    assert_eq!(pyiceberg_read(&t, "category == \'a\'").1, evens);
    let day1: Vec<i64> = (0..40).filter(|i| i % 3 == 1).collect();
    let from = "2022-01-09T00:00:00"; // day 19001 (day 19000 is 2022-01-08)
    let to = "2022-01-10T00:00:00";
    assert_eq!(
        pyiceberg_read(&t, &format!("ts >= \'{from}\' and ts < \'{to}\'")).1,
        day1
    );

    // Delete id 4 by position, in its own partition.
    let target = files
        .iter()
        .find(|f| f.partition() == &partition_of(&rows[4]))
        .unwrap();
    let in_file: Vec<i64> = groups[&format!("{:?}", partition_of(&rows[4]))]
        .iter()
        .map(|r| r.0)
        .collect();
    let pos = in_file.iter().position(|&id| id == 4).unwrap() as i64;
    let dir = t.metadata.location().to_string();
    let del = write_position_deletes(
        &t.file_io,
        &format!("{dir}/data/del.parquet"),
        vec![(target.file_path().to_string(), pos)],
        partition_of(&rows[4]),
        0,
    )
    .await
    .unwrap();
    let t = commit_deletes(catalog, &t, vec![del]).await;
    let without4: Vec<i64> = evens.iter().copied().filter(|&i| i != 4).collect();
    assert_eq!(
        iceberg_rust_ids(
            &t,
            Some(Reference::new("category").equal_to(Datum::string("a")))
        )
        .await,
        without4
    );
    assert_eq!(pyiceberg_read(&t, "category == \'a\'").1, without4);
    assert_eq!(iceberg_rust_ids(&t, None).await.len(), 39);

    // Rewrite the file of id 5 into a new one in the same partition.
    let p5 = partition_of(&rows[5]);
    let old = files.iter().find(|f| f.partition() == &p5).unwrap().clone();
    let group = groups[&format!("{p5:?}")].clone();
    let copy = write_file(&t, &group).await;
    let plan = RewriteFiles {
        replaced: vec![old],
        added: vec![copy],
        starting_snapshot_id: t.metadata.current_snapshot_id().unwrap(),
        ..Default::default()
    };
    let t = commit_rewrite(catalog, &t, &plan).await.unwrap();
    assert_eq!(iceberg_rust_ids(&t, None).await.len(), 39);
    assert_eq!(pyiceberg_read(&t, "True").1.len(), 39);
    // The reference reader after the rewrite.
    let all: Vec<i64> = (0..40).filter(|&i| i != 4).collect();
    assert_eq!(iceberg_java_ids(&t), all);
    let odds: Vec<i64> = (0..40).filter(|i| i % 2 == 1).collect();
    assert_eq!(pyiceberg_read(&t, "category == 'b'").1, odds);
}

#[tokio::test]
async fn partitioned_tables_on_a_local_hadoop_catalog() {
    scenario(&local_catalog()).await;
}

#[tokio::test]
async fn partitioned_tables_on_an_s3_hadoop_catalog() {
    scenario(&s3_catalog().await).await;
}

#[tokio::test]
async fn partitioned_tables_on_a_hive_catalog() {
    scenario(&hive_catalog().0).await;
}
