//! Hadoop catalog on the local filesystem: append commits read back by two
//! independent readers (pyiceberg's StaticTable and iceberg-rust's scan), and
//! concurrent committers that all land in one linear history.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema as ArrowSchema};
use futures_util::TryStreamExt;
use iceberg::spec::{
    DataContentType, DataFile, DataFileBuilder, DataFileFormat, NestedField, PrimitiveType, Schema,
    Struct, Type, UnboundPartitionSpec,
};
use iceberg::{NamespaceIdent, TableIdent};
use parquet::arrow::ArrowWriter;
use tributary_catalog::{
    CatalogTable, HadoopCatalog, RewriteFiles, RowDelta, TableName, commit_rewrite,
    commit_row_delta, expire_snapshots, write_equality_deletes, write_position_deletes,
};
use tributary_core::ErrorKind;
use tributary_testkit::{DevServices, dev_dir, unique_name};

fn schema() -> Schema {
    Schema::builder()
        .with_fields(vec![
            NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
            NestedField::optional(2, "name", Type::Primitive(PrimitiveType::String)).into(),
        ])
        .with_identifier_field_ids(vec![1])
        .build()
        .unwrap()
}

/// Writes a Parquet data file with Iceberg field ids (through the table's
/// FileIO, so local and S3 alike) and describes it.
async fn write_data_file(table: &CatalogTable, ids: &[i64]) -> DataFile {
    let field = |name: &str, t: DataType, nullable: bool, id: &str| {
        Field::new(name, t, nullable).with_metadata(HashMap::from([(
            "PARQUET:field_id".to_string(),
            id.to_string(),
        )]))
    };
    let arrow = Arc::new(ArrowSchema::new(vec![
        field("id", DataType::Int64, false, "1"),
        field("name", DataType::Utf8, true, "2"),
    ]));
    let names: Vec<String> = ids.iter().map(|i| format!("name-{i}")).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.to_vec())),
        Arc::new(StringArray::from(names)),
    ];
    let batch = RecordBatch::try_new(arrow.clone(), columns).unwrap();
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, arrow, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let path = format!(
        "{}/data/{}.parquet",
        table.metadata.location(),
        uuid::Uuid::new_v4()
    );
    let size = bytes.len() as u64;
    let out = table.file_io.new_output(&path).unwrap();
    out.write(bytes.into()).await.unwrap();
    DataFileBuilder::default()
        .content(DataContentType::Data)
        .file_path(path)
        .file_format(DataFileFormat::Parquet)
        .record_count(ids.len() as u64)
        .file_size_in_bytes(size)
        .partition(Struct::empty())
        .partition_spec_id(0)
        .build()
        .unwrap()
}

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

/// Properties pyiceberg needs to read a table (S3 endpoint and keys).
fn reader_properties(table: &CatalogTable) -> String {
    if !table.metadata_location.starts_with("s3://") {
        return "{}".into();
    }
    let s3 = DevServices::load().s3();
    serde_json::json!({
        "s3.endpoint": s3.endpoint, "s3.region": s3.region, "s3.access-key-id": s3.access_key_id,
        "s3.secret-access-key": s3.secret_access_key, "s3.path-style-access": "true",
    })
    .to_string()
}

/// Row ids read by pyiceberg from the metadata file, sorted.
fn pyiceberg_ids(table: &CatalogTable) -> String {
    let props = reader_properties(table);
    DevServices::load()
        .run_python(
            r#"
import sys, json
from pyiceberg.table import StaticTable
t = StaticTable.from_metadata(sys.argv[1], properties=json.loads(sys.argv[2]))
ids = sorted(t.scan().to_arrow()["id"].to_pylist())
print(len(t.metadata.snapshots), ids)
"#,
            &[&table.metadata_location, &props],
        )
        .trim()
        .to_string()
}

/// Row ids read by iceberg-rust's own scan, sorted.
async fn iceberg_rust_ids(table: &CatalogTable) -> Vec<i64> {
    let ident = TableIdent::new(
        NamespaceIdent::new(table.name.namespace.clone()),
        table.name.table.clone(),
    );
    let t = iceberg::table::Table::builder()
        .metadata(table.metadata.clone())
        .metadata_location(table.metadata_location.clone())
        .identifier(ident)
        .file_io(table.file_io.clone())
        .readonly(true)
        .runtime(iceberg::Runtime::current())
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = t
        .scan()
        .build()
        .unwrap()
        .to_arrow()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut ids: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            let col = b
                .column_by_name("id")
                .unwrap()
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            col.values().to_vec()
        })
        .collect();
    ids.sort();
    ids
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
    let t3 = commit_row_delta(
        &catalog,
        &t2,
        &RowDelta {
            data_files: vec![second],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(t3.version, 3);

    assert_eq!(pyiceberg_ids(&t3), "2 [1, 2, 3, 10, 11]");
    assert_eq!(iceberg_rust_ids(&t3).await, [1, 2, 3, 10, 11]);
    // The older version still reads as it was (snapshot isolation).
    assert_eq!(pyiceberg_ids(&t2), "1 [1, 2, 3]");

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
            commit_row_delta(
                &catalog,
                &table,
                &RowDelta {
                    data_files: vec![file],
                    ..Default::default()
                },
            )
            .await
            .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let last = catalog.load_table(&table.name).await.unwrap();
    assert_eq!(last.version, 9, "one version per commit");
    let mut expected: Vec<i64> = (0..8).flat_map(|i| [i * 100, i * 100 + 1]).collect();
    expected.sort();
    assert_eq!(iceberg_rust_ids(&last).await, expected);
    // Linear: every snapshot's parent is the one before it, sequence numbers 1..=8.
    let mut snap = last.metadata.current_snapshot().unwrap().clone();
    let mut seqs = vec![snap.sequence_number()];
    while let Some(p) = snap.parent_snapshot_id() {
        snap = last.metadata.snapshot_by_id(p).unwrap().clone();
        seqs.push(snap.sequence_number());
    }
    assert_eq!(seqs, (1..=8).rev().collect::<Vec<_>>());
    let py = pyiceberg_ids(&last);
    assert!(py.starts_with("8 ["), "{py}");
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
        pyiceberg_ids(&t),
        "2 [1, 3, 5, 6]",
        "pyiceberg applies position deletes"
    );
    assert_eq!(iceberg_rust_ids(&t).await, [1, 3, 5, 6]);
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
    let t = commit_row_delta(
        &catalog,
        &t,
        &RowDelta {
            delete_files: vec![eq],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        t.metadata.current_snapshot().unwrap().summary().operation,
        iceberg::spec::Operation::Delete
    );
    assert_eq!(iceberg_rust_ids(&t).await, [1, 3, 6]);
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
    };
    (catalog, t, a, plan)
}

#[tokio::test]
async fn a_rewrite_replaces_files_and_both_readers_see_the_same_rows() {
    let (catalog, t, _, plan) = table_with_planned_rewrite().await;
    let t = commit_rewrite(&catalog, &t, &plan).await.unwrap();
    assert_eq!(pyiceberg_ids(&t), "2 [1, 2, 3, 4, 5]");
    assert_eq!(iceberg_rust_ids(&t).await, [1, 2, 3, 4, 5]);
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
    let dir = t.metadata.location().to_string();
    let pos = write_position_deletes(
        &t.file_io,
        &format!("{dir}/data/pos-late.parquet"),
        vec![(a.file_path().to_string(), 0)],
        Struct::empty(),
        0,
    )
    .await
    .unwrap();
    let t2 = commit_row_delta(
        &catalog,
        &t,
        &RowDelta {
            delete_files: vec![pos],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let err = commit_rewrite(&catalog, &t, &plan).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ValidationFailed, "{err}");
    assert!(err.to_string().contains(a.file_path()), "{err}");
    let now = catalog.load_table(&t.name).await.unwrap();
    assert_eq!(now.version, t2.version, "a failed rewrite commits nothing");
    assert_eq!(
        iceberg_rust_ids(&now).await,
        [2, 3, 4, 5],
        "id 1 stays deleted"
    );
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
    commit_row_delta(
        &catalog,
        &t,
        &RowDelta {
            delete_files: vec![eq],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let done = commit_rewrite(&catalog, &t, &plan).await.unwrap();
    assert_eq!(
        iceberg_rust_ids(&done).await,
        [1, 2, 3, 5],
        "the rewritten file keeps the planning sequence number"
    );
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
        t = commit_row_delta(
            &catalog,
            &t,
            &RowDelta {
                data_files: vec![f],
                ..Default::default()
            },
        )
        .await
        .unwrap();
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
    assert_eq!(pyiceberg_ids(&t), "5 [0, 1, 2, 3, 4]");

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
        pyiceberg_ids(&expired),
        "2 [0, 1, 2, 3, 4]",
        "expiry changes history, not contents"
    );
    assert_eq!(iceberg_rust_ids(&expired).await, [0, 1, 2, 3, 4]);
}

/// A Hadoop-layout catalog in a fresh bucket of the dev S3 (moto).
async fn s3_catalog() -> HadoopCatalog {
    let s3 = DevServices::load().s3();
    let bucket = unique_name("warehouse").replace('_', "-");
    let creds = aws_sdk_s3::config::Credentials::new(
        &s3.access_key_id,
        &s3.secret_access_key,
        None,
        None,
        "test",
    );
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .region(aws_sdk_s3::config::Region::new(s3.region.clone()))
        .endpoint_url(&s3.endpoint)
        .force_path_style(true)
        .credentials_provider(creds)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let props = HashMap::from([
        ("warehouse".to_string(), format!("s3://{bucket}/wh")),
        ("s3.endpoint".to_string(), s3.endpoint),
        ("s3.region".to_string(), s3.region),
        ("s3.access-key-id".to_string(), s3.access_key_id),
        ("s3.secret-access-key".to_string(), s3.secret_access_key),
        ("s3.path-style-access".to_string(), "true".to_string()),
    ]);
    HadoopCatalog::from_properties(&props).unwrap()
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
    let t = commit_row_delta(
        &catalog,
        &table,
        &RowDelta {
            data_files: vec![a],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let dir = t.metadata.location().to_string();
    let pos = write_position_deletes(
        &t.file_io,
        &format!("{dir}/data/pos.parquet"),
        vec![(a_path, 1)],
        Struct::empty(),
        0,
    )
    .await
    .unwrap();
    let t = commit_row_delta(
        &catalog,
        &t,
        &RowDelta {
            delete_files: vec![pos],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(pyiceberg_ids(&t), "2 [1, 3]");
    assert_eq!(iceberg_rust_ids(&t).await, [1, 3]);

    let mut tasks = Vec::new();
    for i in 0..8i64 {
        let (catalog, t) = (catalog.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            let file = write_data_file(&t, &[100 + i]).await;
            commit_row_delta(
                &catalog,
                &t,
                &RowDelta {
                    data_files: vec![file],
                    ..Default::default()
                },
            )
            .await
            .unwrap()
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let last = catalog.load_table(&name).await.unwrap();
    assert_eq!(last.version, 11, "create + 2 + 8 commits, one version each");
    let mut expected = vec![1, 3];
    expected.extend(100..108);
    assert_eq!(iceberg_rust_ids(&last).await, expected);
}
