//! Workers of a consumer group commit to one table (see
//! `tributary_core::partitions`): a claim commits only where its range of
//! each partition starts at the table's committed offset, so a zombie or a
//! replayed range is refused (`Reassigned`), while workers of disjoint
//! partitions commit beside each other.

use std::collections::BTreeMap;
use std::sync::Arc;

use tributary_catalog::{HadoopCatalog, TableName};
use tributary_core::partitions::{CLAIM_PROPERTY, committed_offsets};
use tributary_core::{
    ChangeBatch, ChangeEvent, Checkpoint, Column, ColumnType, ErrorKind, Op, PartitionClaim, Sink,
    TableId, TableSchema, Value,
};
use tributary_iceberg::{UpsertWriter, committed_checkpoint};
use tributary_testkit::{dev_dir, unique_name};

fn schema() -> Arc<TableSchema> {
    let cols = vec![
        Column::new("id", ColumnType::Int32, false),
        Column::new("v", ColumnType::Int32, true),
    ];
    Arc::new(TableSchema::new(TableId::new("shop", "shared"), cols, &["id"], 1).unwrap())
}

/// A worker's checkpoint claiming `next` (from `from`) with watermarks.
fn claim(from: &[(i32, i64)], next: &[(i32, i64)], watermarks: &[(i32, i64)]) -> Checkpoint {
    let claim = PartitionClaim {
        from: from.iter().copied().collect(),
        next: next.iter().copied().collect(),
        watermarks: watermarks.iter().copied().collect(),
        partitions: 2,
    };
    let mut cp = Checkpoint::default();
    cp.properties.insert(
        Checkpoint::table_key(&schema().table, CLAIM_PROPERTY),
        serde_json::to_string(&claim).unwrap(),
    );
    cp
}

async fn upsert(w: &mut UpsertWriter, id: i32, v: i32) {
    let s = schema();
    let event = ChangeEvent {
        table: s.table.clone(),
        op: Op::Insert,
        before: None,
        after: Some(vec![Value::Int32(id), Value::Int32(v)]),
        position: None,
        commit_ts_micros: 0,
        schema_version: 1,
    };
    let batch = ChangeBatch::from_events(s, &[event]).unwrap();
    w.write(&batch).await.unwrap();
}

async fn rows(catalog: &HadoopCatalog, name: &TableName) -> BTreeMap<i32, i32> {
    let t = catalog.load_table(name).await.unwrap();
    let mut out = BTreeMap::new();
    for b in t.scan(None).await.unwrap() {
        let col = |i: usize| {
            b.column(i)
                .as_any()
                .downcast_ref::<arrow_array::Int32Array>()
                .unwrap()
                .clone()
        };
        let (id, v) = (col(0), col(1));
        for i in 0..b.num_rows() {
            assert!(
                out.insert(id.value(i), v.value(i)).is_none(),
                "duplicate key"
            );
        }
    }
    out
}

#[tokio::test]
async fn a_claim_commits_only_where_its_range_starts_and_disjoint_partitions_commit_beside_each_other()
 {
    let dir = dev_dir().join("tmp").join(unique_name("claims"));
    let catalog = Arc::new(HadoopCatalog::new_local(&dir).unwrap());
    let name = TableName::new("shop", "shared");
    let source = schema();
    let open = || UpsertWriter::open(catalog.clone(), name.clone(), &source);
    let (mut a, mut zombie) = (open().await.unwrap(), open().await.unwrap());

    // Both read partition 0 from its beginning: the first commit wins, the
    // second (a zombie after a rebalance) is refused and changes nothing.
    upsert(&mut a, 1, 10).await;
    upsert(&mut zombie, 1, 20).await;
    a.commit(&claim(&[], &[(0, 10)], &[(0, 100)]))
        .await
        .unwrap();
    let e = zombie
        .commit(&claim(&[], &[(0, 12)], &[(0, 110)]))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Reassigned, "{e}");
    assert_eq!(rows(&catalog, &name).await, [(1, 10)].into());

    // The next owner of partition 0 starts at the committed 10; a worker
    // of partition 1 opened before it commits after it.
    let (mut next_owner, mut other) = (open().await.unwrap(), open().await.unwrap());
    upsert(&mut next_owner, 1, 20).await;
    upsert(&mut other, 2, 2).await;
    next_owner
        .commit(&claim(&[(0, 10)], &[(0, 12)], &[(0, 110)]))
        .await
        .unwrap();
    // Its second range starts where its first ended.
    upsert(&mut next_owner, 1, 21).await;
    next_owner
        .commit(&claim(&[(0, 10)], &[(0, 13)], &[(0, 120)]))
        .await
        .unwrap();
    other
        .commit(&claim(&[], &[(1, 5)], &[(1, 90)]))
        .await
        .unwrap();
    assert_eq!(rows(&catalog, &name).await, [(1, 21), (2, 2)].into());
    let t = catalog.load_table(&name).await.unwrap();
    let cp = committed_checkpoint(&t).unwrap().unwrap();
    assert_eq!(
        committed_offsets(&cp, &schema().table),
        [(0, 13), (1, 5)].into()
    );
    assert_eq!(cp.watermark_micros, Some(90), "the lowest partition's");
    assert!(
        !cp.properties.keys().any(|k| k.ends_with(CLAIM_PROPERTY)),
        "claims are merged, not stored"
    );

    // A replay of an already committed range (a restarted worker's stale
    // run) is refused.
    let mut replay = open().await.unwrap();
    upsert(&mut replay, 1, 20).await;
    let e = replay
        .commit(&claim(&[(0, 10)], &[(0, 12)], &[]))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Reassigned, "{e}");
    assert_eq!(rows(&catalog, &name).await, [(1, 21), (2, 2)].into());
    std::fs::remove_dir_all(&dir).ok();
}
