//! Commits whose outcome the committer cannot see, and catalogs whose
//! compare-and-swap is not enforced, through a fault-injecting proxy in
//! front of the real servers (moto S3, HMS 2.3): a lost reply to a
//! successful commit leaves the table readable with the commit applied
//! exactly once; a store or metastore that ignores the condition is refused
//! at start, naming the fix; a black-holed metastore fails in time.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use iceberg::spec::UnboundPartitionSpec;
use tributary_catalog::{Catalog, CatalogTable, HadoopCatalog, HiveCatalog, TableName};
use tributary_core::ErrorKind;
use tributary_testkit::{DevServices, FaultProxy, dev_dir, unique_name};

async fn create(catalog: &dyn Catalog, namespace: &str) -> CatalogTable {
    let name = TableName::new(namespace, "events");
    catalog
        .create_table(
            &name,
            schema(),
            UnboundPartitionSpec::builder().build(),
            HashMap::new(),
        )
        .await
        .unwrap()
}

/// A Hadoop catalog on a fresh moto bucket, reached through `proxy`.
async fn s3_catalog_via(proxy: &FaultProxy) -> HadoopCatalog {
    let s3 = DevServices::load().s3();
    let bucket = s3.new_bucket().await;
    let mut props = s3.catalog_properties(&format!("s3://{bucket}/wh"));
    props.insert("s3.endpoint".into(), format!("http://{}", proxy.addr()));
    HadoopCatalog::from_properties(&props).unwrap()
}

/// A Hive catalog (fresh local warehouse) whose metastore is behind `proxy`.
fn hive_catalog_via(proxy: &FaultProxy, timeout_ms: u64) -> HiveCatalog {
    let dir = dev_dir().join("tmp").join(unique_name("hive_wh"));
    std::fs::create_dir_all(&dir).unwrap();
    let warehouse = format!("file://{}", dir.canonicalize().unwrap().display());
    let props = HashMap::from([
        ("uri".to_string(), format!("thrift://{}", proxy.addr())),
        ("warehouse".to_string(), warehouse),
        ("timeout-ms".to_string(), timeout_ms.to_string()),
    ]);
    HiveCatalog::from_properties(&props).unwrap()
}

fn s3_target() -> String {
    DevServices::load()
        .s3()
        .endpoint
        .trim_start_matches("http://")
        .to_string()
}

/// The PUT of the next metadata version reaches the store and its reply is
/// lost: the SDK's retry meets our own object (412). Before, that was a lost
/// race: the commit rebased and added its rows a second time.
#[tokio::test]
async fn s3_a_lost_reply_to_a_successful_metadata_put_commits_exactly_once() {
    let proxy = FaultProxy::start(s3_target()).await;
    let catalog = s3_catalog_via(&proxy).await;
    let t = create(&catalog, &unique_name("amb_s3")).await;
    let a = write_data_file(&t, &[1, 2, 3]).await;
    proxy.drop_reply_of(b"/metadata/v2.metadata.json", 1);
    let t = append(&catalog, &t, vec![a]).await;
    assert_eq!(proxy.dropped(), 1, "the reply of the PUT was dropped");
    let fresh = catalog.load_table(&t.name).await.unwrap();
    assert_eq!(fresh.version, 2, "one new metadata version");
    assert_eq!(fresh.metadata.snapshots().count(), 1, "one snapshot");
    assert_eq!(iceberg_rust_ids(&fresh, None).await, [1, 2, 3]);
    assert_eq!(pyiceberg_read(&fresh, "True"), (1, vec![1, 2, 3]));
}

/// The metastore applies the swap and the reply is lost (the connection
/// closes): the committer finds its snapshot in the table instead of
/// deleting the metadata file the metastore now points to, or applying the
/// commit again.
#[tokio::test]
async fn hive_a_lost_reply_to_a_successful_alter_table_commits_exactly_once() {
    let proxy = FaultProxy::start(DevServices::load().hms()).await;
    let catalog = hive_catalog_via(&proxy, 30_000);
    let db = unique_name("amb_hive");
    catalog.ensure_database(&db).await.unwrap();
    let t = create(&catalog, &db).await;
    let a = write_data_file(&t, &[4, 5]).await;
    proxy.drop_reply_of(b"alter_table_with_environment_context", 1);
    let t = append(&catalog, &t, vec![a]).await;
    assert_eq!(proxy.dropped(), 1, "the reply of alter_table was dropped");
    let fresh = catalog.load_table(&t.name).await.unwrap();
    assert_eq!(fresh.metadata.snapshots().count(), 1, "applied once");
    assert_eq!(iceberg_rust_ids(&fresh, None).await, [4, 5]);
    assert_eq!(pyiceberg_read(&fresh, "True"), (1, vec![4, 5]));
    // And the next commit builds on it normally.
    let b = write_data_file(&fresh, &[6]).await;
    let t = append(&catalog, &fresh, vec![b]).await;
    assert_eq!(iceberg_rust_ids(&t, None).await, [4, 5, 6]);
}

/// The probe passes on the real servers and refuses when the condition is
/// stripped on the way (what a store or metastore ignoring it does).
#[tokio::test]
async fn catalogs_whose_compare_and_swap_is_not_enforced_are_refused_naming_the_fix() {
    // S3: If-None-Match renamed to a header the store ignores.
    let proxy = FaultProxy::start(s3_target()).await;
    let catalog = s3_catalog_via(&proxy).await;
    let t = create(&catalog, &unique_name("cas_s3")).await;
    catalog.verify_compare_and_swap(&t).await.unwrap();
    let catalog = s3_catalog_via(&proxy).await; // a new catalog probes again
    let t = create(&catalog, &unique_name("cas_s3")).await;
    proxy.rewrite(b"if-none-match", b"x-ignore-this");
    let e = catalog.verify_compare_and_swap(&t).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
    assert!(e.to_string().contains("If-None-Match"), "{e}");

    // HMS: the expected-parameter key renamed, so the metastore ignores it.
    let proxy = FaultProxy::start(DevServices::load().hms()).await;
    let catalog = hive_catalog_via(&proxy, 30_000);
    let db = unique_name("cas_hive");
    catalog.ensure_database(&db).await.unwrap();
    let t = create(&catalog, &db).await;
    catalog.verify_compare_and_swap(&t).await.unwrap();
    let catalog = hive_catalog_via(&proxy, 30_000);
    proxy.rewrite(b"expected_parameter_key", b"expected_parameter_kez");
    let e = catalog.verify_compare_and_swap(&t).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
    assert!(
        e.to_string().contains("does not enforce compare-and-swap"),
        "{e}"
    );
}

/// A metastore connection that goes dead without closing fails the call at
/// the catalog's deadline (transient), instead of hanging the job.
#[tokio::test]
async fn a_black_holed_metastore_fails_at_the_deadline() {
    let proxy = FaultProxy::start(DevServices::load().hms()).await;
    let catalog = hive_catalog_via(&proxy, 1_500);
    let db = unique_name("hole_hive");
    catalog.ensure_database(&db).await.unwrap();
    let t = create(&catalog, &db).await;
    proxy.black_hole();
    let start = Instant::now();
    let e = catalog.load_table(&t.name).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(e.kind().is_transient());
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
}
