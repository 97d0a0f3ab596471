//! A long streaming run with default settings: one table, 200 upserts/s
//! over 20k keys, a commit every second, maintenance with the default
//! policy every `LONG_RUN_MAINTENANCE` seconds (default: the policy's
//! interval, 10 s) and its read-cost check every second between, beside the
//! writer, as `tributary sync` runs them. Every minute it prints the
//! table's shape right after a commit (the worst instant) and half a second
//! after the next one (a typical instant): (manifests in the current snapshot, data/delete files, metadata bytes vs
//! data bytes), pyiceberg's full-scan time and the same rows' scan from one
//! file written in the same run (the peer), and the writer's commit
//! latency that minute. The issue's acceptance numbers come from this.
//!
//! `LONG_RUN_MINUTES=30 cargo bench -p tributary-maintenance --bench long_run`
//! (release; needs the dev Python, `dev/services up pyiceberg`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tributary_catalog::{HadoopCatalog, TableName, current_manifests, live_entries};
use tributary_core::{ChangeBatch, ChangeEvent, Checkpoint, Op};
use tributary_iceberg::{UpsertConfig, UpsertWriter};
use tributary_maintenance::{MaintenanceConfig, ReadCostCheck, maintain_table};
use tributary_testkit::kv_workload::{kv_position, kv_row, kv_schema};
use tributary_testkit::{DevServices, dev_dir, unique_name};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// pyiceberg's scan time of the table, of the same rows as a one-file
/// Iceberg table (written by pyiceberg in the same run: the peer), and of
/// that file read by pyarrow alone.
fn pyiceberg_times(metadata: &str, scratch: &str) -> (f64, f64, f64, usize) {
    let out = DevServices::load().run_python(
        r#"
import sys, os, time, shutil, pyarrow.parquet as pq
from pyiceberg.table import StaticTable
from pyiceberg.catalog.sql import SqlCatalog
# pyiceberg's first table load in a process costs ~0.25 s of warm-up.
StaticTable.from_metadata(sys.argv[1])
def timed(f):
    t0 = time.perf_counter()
    out = f()
    return time.perf_counter() - t0, out
_, rows = timed(lambda: StaticTable.from_metadata(sys.argv[1]).scan().to_arrow())
wh = sys.argv[2]
shutil.rmtree(wh, ignore_errors=True)
os.makedirs(wh)
cat = SqlCatalog("peer", uri=f"sqlite:///{wh}/c.db", warehouse=f"file://{wh}")
cat.create_namespace("p")
peer = cat.create_table("p.t", schema=rows.schema)
peer.append(rows)
loc = cat.load_table("p.t").metadata_location
files = [f for f in peer.inspect.files().column("file_path").to_pylist()]
# Reads of a few ms are noisy beside the writer and maintenance: the
# table, the one-file peer and the bare file are read in turn, five times,
# and each keeps its fastest (the read least disturbed).
times = {"table": [], "peer": [], "file": []}
for _ in range(5):
    times["table"].append(timed(lambda: StaticTable.from_metadata(sys.argv[1]).scan().to_arrow())[0])
    times["peer"].append(timed(lambda: StaticTable.from_metadata(loc).scan().to_arrow())[0])
    times["file"].append(timed(lambda: pq.read_table(files[0].removeprefix("file://")))[0])
table, one_table, one_file = (min(times[k]) for k in ("table", "peer", "file"))
print(table, one_table, one_file, rows.num_rows)
"#,
        &[metadata, scratch],
    );
    let v: Vec<&str> = out.split_whitespace().collect();
    (
        v[0].parse().unwrap(),
        v[1].parse().unwrap(),
        v[2].parse().unwrap(),
        v[3].parse().unwrap(),
    )
}

/// One CSV line: the table's shape now and pyiceberg's scan time of this
/// version. The scan runs off the async threads on a copy of the metadata
/// file (the live table keeps only its last 10), so neither the writer nor
/// maintenance pauses for it: spawn it.
async fn sample(
    catalog: Arc<HadoopCatalog>,
    name: TableName,
    root: std::path::PathBuf,
    minute: String,
    when: &'static str,
    commit: String,
) {
    let table = catalog.load_table(&name).await.unwrap();
    let manifests = current_manifests(&table).await.unwrap().len();
    let files = live_entries(&table).await.unwrap();
    let data: Vec<_> = files
        .iter()
        .filter(|f| f.file.content_type() == iceberg::spec::DataContentType::Data)
        .collect();
    let data_bytes: u64 = data.iter().map(|f| f.file.file_size_in_bytes()).sum();
    let meta_dir = root.join(format!("{}/{}/metadata", name.namespace, name.table));
    let metadata_bytes = dir_bytes(&meta_dir);
    let scratch = root.join(format!("peer-{when}-{minute}"));
    std::fs::create_dir_all(&scratch).unwrap();
    let copy = scratch.join("table.metadata.json");
    std::fs::copy(table.metadata_location.trim_start_matches("file://"), &copy).unwrap();
    let (data_files, delete_files) = (data.len(), files.len() - data.len());
    let peer = scratch.join("peer");
    // One scan at a time: samples taken together would slow each other.
    static PYTHON: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let (py, one_table, one_file, rows) = tokio::task::spawn_blocking(move || {
        let _one = PYTHON.lock().unwrap();
        pyiceberg_times(copy.to_str().unwrap(), peer.to_str().unwrap())
    })
    .await
    .unwrap();
    println!(
        "{minute},{when},{manifests},{data_files},{delete_files},{metadata_bytes},{data_bytes},{py:.3},{one_table:.3},{:.1},{one_file:.3},{rows},{commit}",
        py / one_table,
    );
}

#[tokio::main]
async fn main() {
    let minutes = env("LONG_RUN_MINUTES", 30);
    let policy = MaintenanceConfig::default();
    let every = Duration::from_secs(env("LONG_RUN_MAINTENANCE", policy.interval.as_secs()));
    let root = dev_dir().join("tmp").join(unique_name("long-run"));
    let catalog = Arc::new(HadoopCatalog::new_local(&root).unwrap());
    let name = TableName::new("bench", "items");
    let schema = kv_schema("bench", "items");
    let config = UpsertConfig {
        commit_interval: Duration::from_secs(1),
        ..UpsertConfig::default()
    };
    let mut writer = UpsertWriter::open_config(catalog.clone(), name.clone(), &schema, config)
        .await
        .unwrap();
    // The samples taken after maintenance runs, awaited at the end like
    // the others (the warehouse is removed then).
    let maintenance_samples = Arc::new(std::sync::Mutex::new(Vec::new()));
    let maintenance = {
        let (catalog, name, root) = (catalog.clone(), name.clone(), root.clone());
        let maintenance_samples = maintenance_samples.clone();
        tokio::spawn(async move {
            // As `sync` schedules it: the full policy every `every`, the
            // read-cost check every `check_interval` between.
            let (started, mut sampled) = (Instant::now(), 0);
            let check = ReadCostCheck::default();
            let mut next_full = Instant::now() + every;
            loop {
                tokio::time::sleep(policy.check_interval.min(every)).await;
                let run = if Instant::now() >= next_full {
                    next_full = Instant::now() + every;
                    maintain_table(catalog.as_ref(), &name, &policy, false)
                        .await
                        .map(Some)
                } else {
                    check.run(catalog.as_ref(), &name, &policy).await
                };
                match run {
                    // The first compaction of each minute is sampled.
                    Ok(Some(r)) if !r.compacted_groups.is_empty() => {
                        eprintln!("maintenance: {r}");
                        let minutes = started.elapsed().as_secs_f64() / 60.0;
                        if minutes as u64 >= sampled {
                            sampled = minutes as u64 + 1;
                            let at = format!("{minutes:.1}");
                            let (c, n, r) = (catalog.clone(), name.clone(), root.clone());
                            let s = sample(c, n, r, at, "after-maintenance", String::new());
                            maintenance_samples.lock().unwrap().push(tokio::spawn(s));
                        }
                    }
                    Ok(Some(r)) => eprintln!("maintenance: {r}"),
                    Ok(None) => {}
                    Err(e) => eprintln!("maintenance lost a race: {e}"),
                }
            }
        })
    };
    println!(
        "minute,when,manifests,data_files,delete_files,metadata_bytes,data_bytes,pyiceberg_s,one_file_table_s,ratio,pyarrow_one_file_s,rows,commit_ms_p50/max"
    );
    let (start, mut offset, mut key) = (Instant::now(), 0u64, 0u64);
    let mut latencies: Vec<f64> = Vec::new();
    let (mut minute, mut mid_pending) = (1, false);
    let mut samples = Vec::new();
    while start.elapsed() < Duration::from_secs(minutes * 60) {
        let second = Instant::now();
        // 200 upserts spread over 20k keys (insert first, then updates).
        let events: Vec<ChangeEvent> = (0..200)
            .map(|_| {
                key = (key + 7919) % 20_000;
                offset += 100;
                let after = kv_row(
                    key as i32,
                    &(Some(offset as i32), Some(format!("v{offset}"))),
                );
                let before = kv_row(key as i32, &(None, None));
                let op = if offset <= 20_000 * 100 {
                    Op::Insert
                } else {
                    Op::Update
                };
                ChangeEvent {
                    table: schema.table.clone(),
                    op,
                    before: (op == Op::Update).then_some(before),
                    after: Some(after),
                    position: kv_position(offset),
                    commit_ts_micros: 0,
                    schema_version: schema.version,
                }
            })
            .collect();
        let batch = ChangeBatch::from_events(schema.clone(), &events).unwrap();
        writer.write_batch(&batch).await.unwrap();
        let t = Instant::now();
        let cp = Checkpoint {
            position: kv_position(offset),
            ..Default::default()
        };
        writer.commit_checkpoint(&cp).await.unwrap();
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        // Half a second after the commit following each minute's sample:
        // the state a reader meets at a typical instant (the minute sample
        // is the worst one, right after a commit).
        if mid_pending {
            mid_pending = false;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let at = (minute - 1).to_string();
            let (c, n, r) = (catalog.clone(), name.clone(), root.clone());
            samples.push(tokio::spawn(sample(
                c,
                n,
                r,
                at,
                "mid-second",
                String::new(),
            )));
        }
        if start.elapsed() >= Duration::from_secs(minute * 60) {
            mid_pending = true;
            latencies.sort_by(f64::total_cmp);
            let commit = format!(
                "{:.1}/{:.1}",
                latencies[latencies.len() / 2],
                latencies.last().unwrap()
            );
            let (c, n, r) = (catalog.clone(), name.clone(), root.clone());
            let at = minute.to_string();
            samples.push(tokio::spawn(sample(c, n, r, at, "after-commit", commit)));
            latencies.clear();
            minute += 1;
        }
        if let Some(rest) = Duration::from_secs(1).checked_sub(second.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }
    maintenance.abort();
    let taken = std::mem::take(&mut *maintenance_samples.lock().unwrap());
    for s in samples.into_iter().chain(taken) {
        s.await.unwrap();
    }
    let _ = std::fs::remove_dir_all(&root);
}
