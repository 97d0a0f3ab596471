//! Shared by the catalog tests: the catalogs under test (local and S3 Hadoop
//! layout, Hive Metastore), a data-file writer, and the two independent
//! readers (iceberg-rust's scan, pyiceberg).
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema as ArrowSchema};
use iceberg::expr::Predicate;
use iceberg::spec::{DataFile, NestedField, PrimitiveType, Schema, Struct, Type};
use tributary_catalog::{
    Catalog, CatalogTable, HadoopCatalog, HiveCatalog, RowDelta, commit_row_delta,
    write_position_deletes,
};
use tributary_testkit::{DevServices, dev_dir, unique_name};

/// `id long` (the key) and `name string`.
pub fn schema() -> Schema {
    Schema::builder()
        .with_fields(vec![
            NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
            NestedField::optional(2, "name", Type::Primitive(PrimitiveType::String)).into(),
        ])
        .with_identifier_field_ids(vec![1])
        .build()
        .unwrap()
}

/// An Arrow field with its Iceberg field id.
pub fn field(name: &str, t: DataType, nullable: bool, id: i32) -> Field {
    Field::new(name, t, nullable).with_metadata(HashMap::from([(
        "PARQUET:field_id".to_string(),
        id.to_string(),
    )]))
}

/// Writes `batch` as a Parquet data file of `table` (through its FileIO).
pub async fn write_batch(table: &CatalogTable, batch: &RecordBatch, partition: Struct) -> DataFile {
    let path = format!(
        "{}/data/{}.parquet",
        table.metadata.location(),
        uuid::Uuid::new_v4()
    );
    let spec = table.metadata.default_partition_spec_id();
    tributary_catalog::write_data_file(&table.file_io, &path, batch, partition, spec, None)
        .await
        .unwrap()
}

/// A data file of `schema()` rows with these ids, unpartitioned.
pub async fn write_data_file(table: &CatalogTable, ids: &[i64]) -> DataFile {
    let arrow = Arc::new(ArrowSchema::new(vec![
        field("id", DataType::Int64, false, 1),
        field("name", DataType::Utf8, true, 2),
    ]));
    let names: Vec<String> = ids.iter().map(|i| format!("name-{i}")).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.to_vec())),
        Arc::new(StringArray::from(names)),
    ];
    write_batch(
        table,
        &RecordBatch::try_new(arrow, columns).unwrap(),
        Struct::empty(),
    )
    .await
}

/// Sorted ids read by iceberg-rust's own scan, optionally filtered.
pub async fn iceberg_rust_ids(table: &CatalogTable, filter: Option<Predicate>) -> Vec<i64> {
    let batches = table.scan(filter).await.unwrap();
    let mut ids: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("id")
                .unwrap()
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect();
    ids.sort();
    ids
}

/// What pyiceberg's StaticTable reads from the metadata file: the number of
/// snapshots and the sorted ids matching `row_filter`.
/// The sorted ids Iceberg Java (the reference reader) reads.
pub fn iceberg_java_ids(table: &CatalogTable) -> Vec<i64> {
    let versions = DevServices::load().iceberg_java_read(&[&table.metadata_location]);
    let mut ids: Vec<i64> = versions[0]
        .iter()
        .map(|r| r["id"].as_str().unwrap().parse().unwrap()) // longs come as strings
        .collect();
    ids.sort();
    ids
}

pub fn pyiceberg_read(table: &CatalogTable, row_filter: &str) -> (usize, Vec<i64>) {
    let props = if table.metadata_location.starts_with("s3://") {
        serde_json::to_string(&DevServices::load().s3().catalog_properties("")).unwrap()
    } else {
        "{}".to_string()
    };
    let out = DevServices::load().run_python(
        r#"
import sys, json
from pyiceberg.table import StaticTable
t = StaticTable.from_metadata(sys.argv[1], properties=json.loads(sys.argv[2]))
ids = sorted(t.scan(row_filter=sys.argv[3]).to_arrow()["id"].to_pylist())
print(json.dumps({"snapshots": len(t.metadata.snapshots), "ids": ids}))
"#,
        &[&table.metadata_location, &props, row_filter],
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let ids = v["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_i64().unwrap())
        .collect();
    (v["snapshots"].as_u64().unwrap() as usize, ids)
}

/// A Hadoop-layout catalog in a fresh local warehouse.
pub fn local_catalog() -> HadoopCatalog {
    HadoopCatalog::new_local(dev_dir().join("tmp").join(unique_name("warehouse"))).unwrap()
}

/// A Hadoop-layout catalog in a fresh bucket of the dev S3 (moto).
pub async fn s3_catalog() -> HadoopCatalog {
    let s3 = DevServices::load().s3();
    let bucket = s3.new_bucket().await;
    HadoopCatalog::from_properties(&s3.catalog_properties(&format!("s3://{bucket}/wh"))).unwrap()
}

/// A Hive Metastore catalog with a fresh local warehouse; also its warehouse URL.
pub fn hive_catalog() -> (HiveCatalog, String) {
    let uri = format!("thrift://{}", DevServices::load().hms());
    let dir = dev_dir().join("tmp").join(unique_name("hive_wh"));
    std::fs::create_dir_all(&dir).unwrap();
    let warehouse = format!("file://{}", dir.canonicalize().unwrap().display());
    let props = HashMap::from([
        ("uri".to_string(), uri),
        ("warehouse".to_string(), warehouse.clone()),
    ]);
    (HiveCatalog::from_properties(&props).unwrap(), warehouse)
}

/// Commits `files` as an append.
pub async fn append(
    catalog: &dyn Catalog,
    table: &CatalogTable,
    files: Vec<DataFile>,
) -> CatalogTable {
    commit_row_delta(
        catalog,
        table,
        &RowDelta {
            data_files: files,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// Commits delete files (and nothing else) as a row delta.
pub async fn commit_deletes(
    catalog: &dyn Catalog,
    table: &CatalogTable,
    files: Vec<DataFile>,
) -> CatalogTable {
    commit_row_delta(
        catalog,
        table,
        &RowDelta {
            delete_files: files,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// Writes one unpartitioned position-delete file named `file` under the table's data dir.
pub async fn position_deletes(
    table: &CatalogTable,
    file: &str,
    deletes: Vec<(String, i64)>,
) -> DataFile {
    let path = format!("{}/data/{file}", table.metadata.location());
    write_position_deletes(&table.file_io, &path, deletes, Struct::empty(), 0)
        .await
        .unwrap()
}
