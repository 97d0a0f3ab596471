//! What each file and manifest costs a reader: the calibration behind the
//! policy's read-cost estimate (`open_file_cost`). A `READ_COST_ROWS`-row
//! table (default 20k) is compacted to one file, its history expired; then
//! `READ_COST_COMMITS` commits (default 12) of 200 updates each follow,
//! without maintenance. After each commit pyiceberg's full scan of that
//! version is timed (best of 5, one warmed-up process), beside the table's
//! counts and the policy's estimate of its read amplification.
//!
//! `cargo bench -p tributary-maintenance --bench read_cost` (needs the dev
//! Python, `dev/services up pyiceberg`; `READ_COST_KEEP=1` keeps the
//! versions for a closer look).

use std::sync::Arc;
use std::time::Duration;

use tributary_catalog::{HadoopCatalog, TableName, current_manifests};
use tributary_core::{ChangeBatch, ChangeEvent, Checkpoint, Op};
use tributary_iceberg::{UpsertConfig, UpsertWriter};
use tributary_maintenance::{MaintenanceConfig, ReadCost, maintain_table};
use tributary_testkit::kv_workload::{kv_position, kv_row, kv_schema};
use tributary_testkit::{DevServices, dev_dir, unique_name};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn commit(writer: &mut UpsertWriter, batch: &ChangeBatch, cp: &Checkpoint) {
    writer.write_batch(batch).await.unwrap();
    writer.commit_checkpoint(cp).await.unwrap();
}

#[tokio::main]
async fn main() {
    let (rows, commits) = (env("READ_COST_ROWS", 20_000), env("READ_COST_COMMITS", 12));
    let root = dev_dir().join("tmp").join(unique_name("read-cost"));
    let catalog = Arc::new(HadoopCatalog::new_local(&root).unwrap());
    let name = TableName::new("bench", "items");
    let schema = kv_schema("bench", "items");
    let mut writer = UpsertWriter::open_config(
        catalog.clone(),
        name.clone(),
        &schema,
        UpsertConfig::default(),
    )
    .await
    .unwrap();
    let mut offset = 0u64;
    let mut change = |op: Op, keys: Vec<u64>| {
        let events: Vec<ChangeEvent> = keys
            .into_iter()
            .map(|key| {
                offset += 100;
                ChangeEvent {
                    table: schema.table.clone(),
                    op,
                    before: (op == Op::Update).then(|| kv_row(key as i32, &(None, None))),
                    after: Some(kv_row(
                        key as i32,
                        &(Some(offset as i32), Some(format!("v{offset}"))),
                    )),
                    position: kv_position(offset),
                    commit_ts_micros: 0,
                    schema_version: schema.version,
                }
            })
            .collect();
        let batch = ChangeBatch::from_events(schema.clone(), &events).unwrap();
        let cp = Checkpoint {
            position: kv_position(offset),
            ..Default::default()
        };
        (batch, cp)
    };
    let (batch, cp) = change(Op::Insert, (0..rows).collect());
    commit(&mut writer, &batch, &cp).await;
    // One file, one snapshot: the baseline.
    let squash = MaintenanceConfig {
        small_files: 1,
        snapshots: 1,
        keep_snapshots: 1,
        snapshot_min_age: Duration::ZERO,
        snapshot_age: Some(Duration::ZERO),
        retain_last: Some(1),
        ..MaintenanceConfig::default()
    };
    maintain_table(catalog.as_ref(), &name, &squash, false)
        .await
        .unwrap();
    let mut versions = Vec::new();
    let mut key = 0u64;
    let policy = MaintenanceConfig::default();
    for k in 0..=commits {
        if k > 0 {
            let keys = (0..200)
                .map(|_| {
                    key = (key + 7919) % rows;
                    key
                })
                .collect();
            let (batch, cp) = change(Op::Update, keys);
            commit(&mut writer, &batch, &cp).await;
        }
        let table = catalog.load_table(&name).await.unwrap();
        // Old metadata files are deleted after 10 commits: kept aside.
        let kept = root.join(format!("v{k}.metadata.json"));
        std::fs::copy(table.metadata_location.trim_start_matches("file://"), &kept).unwrap();
        let manifests = current_manifests(&table).await.unwrap().len();
        let cost = ReadCost::of(&table, manifests, &policy);
        versions.push(format!(
            "{k},{},{},{manifests},{:.2},{}",
            cost.data_files,
            cost.delete_files,
            cost.amplification(),
            kept.display()
        ));
    }
    drop(writer);
    let out = DevServices::load().run_python(
        r#"
import sys, time
from pyiceberg.table import StaticTable
StaticTable.from_metadata(sys.argv[1].split(",")[-1]).scan().to_arrow()
print("commits,data_files,delete_files,manifests,estimate,pyiceberg_s,ratio")
base = None
for line in sys.argv[1:]:
    k, d, dl, m, est, loc = line.split(",")
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        StaticTable.from_metadata(loc).scan().to_arrow()
        times.append(time.perf_counter() - t0)
    t = min(times)
    base = base or t
    print(f"{k},{d},{dl},{m},{est},{t:.4f},{t / base:.2f}")
"#,
        &versions.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    print!("{out}");
    if std::env::var_os("READ_COST_KEEP").is_some() {
        eprintln!("kept {}", root.display());
    } else {
        let _ = std::fs::remove_dir_all(&root);
    }
}
