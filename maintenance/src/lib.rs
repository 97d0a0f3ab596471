//! Table maintenance beside a live writer: compaction (`compact`), delete
//! conversion and dangling-delete removal (`convert`), manifest rewriting,
//! snapshot expiry with file cleanup and orphan removal (`cleanup`), run by
//! a per-table policy (`MaintenanceConfig`): one call does what is due.
//!
//! Every step is a table operation committed through the catalog's one
//! retry path; a step that loses to the writer (its files were rewritten
//! meanwhile) fails typed and is planned again on the next run; nothing is
//! ever half-applied.

pub mod cleanup;
pub mod compact;
pub mod convert;
pub mod cost;
pub mod deletes;

use std::time::{Duration, Instant};

use iceberg::spec::DataContentType;
use serde::{Deserialize, Serialize};
use tributary_catalog::{
    Catalog, CatalogTable, LiveFile, RewriteManifests, TableName, commit_operation,
    current_manifests, live_entries,
};
use tributary_core::{Error, Result};

use crate::compact::{CompactionSettings, GroupResult};
pub use crate::cost::ReadCost;
use crate::deletes::TableDeletes;

fn default_true() -> bool {
    true
}

/// `[sink.iceberg.maintenance]` (or a maintenance file): when each step is
/// due, and its settings. Defaults keep a table committed every second
/// healthy; `tributary sync` runs it in the background unless `enabled =
/// false`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaintenanceConfig {
    /// Run by `tributary sync` in the background (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// How often `sync` checks (default 10 s; a check with nothing due
    /// reads the current manifests only).
    #[serde(with = "tributary_core::duration")]
    pub interval: Duration,
    /// How often `sync` estimates each table's read cost between those
    /// checks (default 1 s; reads the metadata and manifest list only) and
    /// compacts when it passes `read_amplification`…
    #[serde(with = "tributary_core::duration")]
    pub check_interval: Duration,
    /// …taking at most this share of the time, all tables of the job
    /// together (default 0.1: after a run that took t, the next such run
    /// waits 9t).
    pub busy_limit: f64,
    /// Compact once a table has this many small data files (default 8)…
    pub small_files: usize,
    /// …a file being small under `target_file_bytes / fragment_ratio`
    /// (default 8, Amoro's fragment ratio): files past it are not rewritten
    /// again and again as the table grows, only their deletes count.
    pub fragment_ratio: u64,
    /// …or this many delete files (default 8)…
    pub delete_files: usize,
    /// …or once a reader's full scan is estimated to cost this many times
    /// the same rows compacted (default 1.5; 0 turns it off; see
    /// [`ReadCost`]).
    pub read_amplification: f64,
    /// What opening one file or manifest costs a reader, in bytes read
    /// (default 1 MiB; measured with pyiceberg, `benches/read_cost.rs`).
    pub open_file_cost: u64,
    /// A data file with this fraction of deleted rows is rewritten (0.2).
    pub delete_ratio: f64,
    /// Target size of compacted files (default 128 MiB).
    pub target_file_bytes: u64,
    /// Bytes read per compaction commit at most (default 256 MiB); a group's
    /// rows are sorted in memory, a few times this in Arrow form.
    pub max_group_bytes: u64,
    /// Convert equality deletes into position deletes (default true).
    #[serde(default = "default_true")]
    pub convert_equality_deletes: bool,
    /// Rewrite manifests once the current snapshot has this many (32).
    pub manifests: usize,
    /// Expire once the table has this many snapshots (default 100)…
    pub snapshots: usize,
    /// …keeping at most this many (default 50; at a commit a second an age
    /// limit alone keeps hundreds, and every commit rewrites them all)…
    pub keep_snapshots: usize,
    /// …but none younger than this goes for the count (default 1 min: a
    /// reader that planned on a snapshot has that long to read its files)…
    #[serde(with = "tributary_core::duration")]
    pub snapshot_min_age: Duration,
    /// …removing those older than this (default: the table's
    /// `history.expire.max-snapshot-age-ms`, else 5 days)…
    #[serde(default, with = "tributary_core::duration::option")]
    pub snapshot_age: Option<Duration>,
    /// …keeping at least this many (default: the table's
    /// `history.expire.min-snapshots-to-keep`, else 1).
    pub retain_last: Option<usize>,
    /// Remove orphan files (default false in the background; `maintain
    /// --orphans` turns it on).
    pub orphans: bool,
    /// Orphans younger than this stay (default 3 days; shorter needs
    /// `force`: a live writer's spills are unreferenced until their commit).
    #[serde(with = "tributary_core::duration")]
    pub orphan_min_age: Duration,
    /// Per source table (`"db.table"`), settings that differ from the rest
    /// (any key above but `tables`).
    #[serde(skip_serializing)]
    pub tables: std::collections::BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        MaintenanceConfig {
            enabled: true,
            interval: Duration::from_secs(10),
            check_interval: Duration::from_secs(1),
            busy_limit: 0.1,
            small_files: 8,
            fragment_ratio: 8,
            delete_files: 8,
            read_amplification: 1.5,
            open_file_cost: 1 << 20,
            delete_ratio: 0.2,
            target_file_bytes: 128 << 20,
            max_group_bytes: 256 << 20,
            convert_equality_deletes: true,
            manifests: 32,
            snapshots: 100,
            keep_snapshots: 50,
            snapshot_min_age: Duration::from_secs(60),
            snapshot_age: None,
            retain_last: None,
            orphans: false,
            orphan_min_age: Duration::from_secs(3 * 24 * 3600),
            tables: Default::default(),
        }
    }
}

/// The shortest orphan age allowed without `force`.
pub const SAFE_ORPHAN_AGE: Duration = Duration::from_secs(3600);

/// Names the maintenance step and the table version it started from in an
/// error: races with the live writer show up as which step met which version.
fn at(step: &'static str, table: &CatalogTable) -> impl FnOnce(Error) -> Error {
    let version = table.version;
    move |e| {
        e.with_context("step", step)
            .with_context("version", version)
    }
}

impl MaintenanceConfig {
    /// The settings of `table`: these, with its entry in `tables` on top.
    pub fn for_table(&self, table: &str) -> Result<MaintenanceConfig> {
        let Some(overrides) = self.tables.get(table) else {
            return Ok(self.clone());
        };
        let mut value = serde_json::to_value(self)?;
        if let Some(base) = value.as_object_mut() {
            base.extend(overrides.clone());
        }
        let mut config: MaintenanceConfig = serde_json::from_value(value)
            .map_err(|e| Error::invalid_config(format!("maintenance.tables.\"{table}\": {e}")))?;
        config.tables = self.tables.clone();
        Ok(config)
    }

    pub fn validate(&self, force: bool) -> Result<()> {
        for table in self.tables.keys() {
            if table.split_once('.').is_none() {
                return Err(Error::invalid_config(format!(
                    "maintenance.tables: {table:?} is not `database.table`"
                )));
            }
            if self.tables[table].contains_key("tables") {
                return Err(Error::invalid_config(format!(
                    "maintenance.tables.\"{table}\": `tables` cannot nest"
                )));
            }
            let own = self.for_table(table)?;
            own.validate_settings(force).map_err(|e| {
                e.map_text(|t| {
                    t.replacen(
                        "maintenance:",
                        &format!("maintenance.tables.\"{table}\":"),
                        1,
                    )
                })
            })?;
        }
        self.validate_settings(force)
    }

    /// Data files under this size are small (fragments).
    pub fn small_file_bytes(&self) -> u64 {
        self.target_file_bytes / self.fragment_ratio.max(1)
    }

    fn validate_settings(&self, force: bool) -> Result<()> {
        if self.orphans && self.orphan_min_age < SAFE_ORPHAN_AGE && !force {
            return Err(Error::invalid_config(format!(
                "maintenance: orphan_min_age {:?} is under one hour: files a running writer has \
                 written but not committed yet would be deleted; raise it, or pass --force if no \
                 writer is running",
                self.orphan_min_age
            )));
        }
        if !(0.0..=1.0).contains(&self.delete_ratio) {
            return Err(Error::invalid_config(
                "maintenance: delete_ratio must be between 0 and 1",
            ));
        }
        if self.target_file_bytes == 0 || self.interval.is_zero() || self.check_interval.is_zero() {
            return Err(Error::invalid_config(
                "maintenance: target_file_bytes, interval and check_interval must be greater than \
                 zero",
            ));
        }
        if !(self.busy_limit > 0.0 && self.busy_limit <= 1.0) {
            return Err(Error::invalid_config(
                "maintenance: busy_limit must be above 0 and at most 1 (a share of the time)",
            ));
        }
        if self.read_amplification < 0.0
            || (self.read_amplification > 0.0 && self.read_amplification <= 1.0)
        {
            return Err(Error::invalid_config(
                "maintenance: read_amplification must be above 1 (a bound on scan cost against \
                 the compacted table), or 0 to turn the read-cost trigger off",
            ));
        }
        Ok(())
    }
}

/// A table's file counts at one moment.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct TableShape {
    pub data_files: usize,
    pub small_files: usize,
    pub position_delete_files: usize,
    pub equality_delete_files: usize,
    pub manifests: usize,
    pub snapshots: usize,
    pub data_bytes: u64,
    pub delete_bytes: u64,
}

/// What `table` holds now, counting files under `config`'s small-file size.
pub async fn shape(table: &CatalogTable, config: &MaintenanceConfig) -> Result<TableShape> {
    let mut s = TableShape {
        manifests: current_manifests(table).await?.len(),
        snapshots: table.metadata.snapshots().count(),
        ..TableShape::default()
    };
    let small = config.small_file_bytes();
    for f in live_entries(table).await? {
        let size = f.file.file_size_in_bytes();
        match f.file.content_type() {
            DataContentType::Data => {
                s.data_files += 1;
                s.data_bytes += size;
                s.small_files += usize::from(size < small);
            }
            DataContentType::PositionDeletes => {
                s.position_delete_files += 1;
                s.delete_bytes += size;
            }
            DataContentType::EqualityDeletes => {
                s.equality_delete_files += 1;
                s.delete_bytes += size;
            }
        }
    }
    Ok(s)
}

/// What one run did to one table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableReport {
    pub table: String,
    pub dry_run: bool,
    pub before: TableShape,
    pub after: TableShape,
    /// The steps taken (or, in a dry run, planned), in order.
    pub actions: Vec<String>,
    pub compacted_groups: Vec<GroupResult>,
    pub equality_deletes_converted: usize,
    pub deletes_dropped: usize,
    pub deletes_merged: usize,
    pub snapshots_expired: usize,
    pub files_deleted: usize,
    pub bytes_deleted: u64,
    pub orphans: Vec<String>,
    pub millis: u64,
}

impl std::fmt::Display for TableReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (b, a) = (&self.before, &self.after);
        write!(
            f,
            "{}: {} — data files {} → {}, delete files {} → {}, manifests {} → {}, snapshots {} → {}, \
             bytes {} → {}, {} ms",
            self.table,
            if self.actions.is_empty() {
                "nothing due".to_string()
            } else {
                self.actions.join(", ")
            },
            b.data_files,
            a.data_files,
            b.position_delete_files + b.equality_delete_files,
            a.position_delete_files + a.equality_delete_files,
            b.manifests,
            a.manifests,
            b.snapshots,
            a.snapshots,
            b.data_bytes + b.delete_bytes,
            a.data_bytes + a.delete_bytes,
            self.millis
        )
    }
}

/// Runs every step of `config` that is due on `name` (a dry run plans
/// them without committing or deleting anything).
pub async fn maintain_table(
    catalog: &dyn Catalog,
    name: &TableName,
    config: &MaintenanceConfig,
    dry_run: bool,
) -> Result<TableReport> {
    maintain_steps(catalog, name, config, dry_run, true).await
}

/// `maintain_table`, with expiry and orphan removal only when `retention`
/// (the read-cost runs leave them to the full checks: they do not change
/// what a scan reads, and at a commit a second expiry would otherwise run
/// on every run to trim a few snapshots).
async fn maintain_steps(
    catalog: &dyn Catalog,
    name: &TableName,
    config: &MaintenanceConfig,
    dry_run: bool,
    retention: bool,
) -> Result<TableReport> {
    let started = Instant::now();
    let mut table = catalog.load_table(name).await?;
    let before = shape(&table, config)
        .await
        .map_err(at("shape before", &table))?;
    let mut report = TableReport {
        table: name.to_string(),
        dry_run,
        before,
        ..TableReport::default()
    };
    let Some((planned_at, data, dels)) =
        live_split(&table).await.map_err(at("live files", &table))?
    else {
        report.after = before;
        return Ok(report);
    };
    let delete_files = before.position_delete_files + before.equality_delete_files;
    let read_due = read_cost_due(&ReadCost::of(&table, before.manifests, config), config);
    let compaction_due =
        before.small_files >= config.small_files || delete_files >= config.delete_files || read_due;
    if compaction_due || (config.convert_equality_deletes && before.equality_delete_files > 0) {
        let deletes = TableDeletes::load(&table, &dels)
            .await
            .map_err(at("deletes", &table))?;
        if compaction_due {
            let settings = CompactionSettings {
                target_file_bytes: config.target_file_bytes,
                small_bytes: config.small_file_bytes(),
                delete_ratio: config.delete_ratio,
                max_group_bytes: config.max_group_bytes,
            };
            let groups = compact::plan(&data, &deletes, &settings);
            for g in &groups {
                report.actions.push(format!(
                    "compact {} files ({} bytes)",
                    g.files.len(),
                    g.bytes
                ));
                if dry_run {
                    continue;
                }
                let (next, result) = compact::rewrite_group(
                    catalog,
                    &table,
                    planned_at,
                    &deletes,
                    g,
                    config.target_file_bytes,
                )
                .await
                .map_err(at("compaction", &table))?;
                table = next;
                report.compacted_groups.push(result);
            }
        }
        if config.convert_equality_deletes && !deletes.equality.is_empty() {
            report.actions.push(format!(
                "convert {} equality-delete files",
                deletes.equality.len()
            ));
            if !dry_run {
                // Converted against the files as they are now (compaction
                // may have rewritten some).
                table = convert_now(catalog, &table, &mut report)
                    .await
                    .map_err(at("conversion", &table))?;
            }
        }
    }
    if !dry_run && delete_files > 0 {
        table = drop_dangling(catalog, &table, &mut report)
            .await
            .map_err(at("dangling deletes", &table))?;
        table = merge_deletes(catalog, &table, config, read_due, &mut report)
            .await
            .map_err(at("delete merge", &table))?;
    }
    let manifests = current_manifests(&table)
        .await
        .map_err(at("manifests", &table))?
        .len();
    if manifests >= config.manifests {
        report
            .actions
            .push(format!("rewrite {manifests} manifests"));
        if !dry_run {
            table = commit_operation(catalog, &table, &RewriteManifests)
                .await
                .map_err(at("manifest rewrite", &table))?;
        }
    }
    if retention && expiry_due(&table, config) {
        report.actions.push("expire snapshots".to_string());
        if !dry_run {
            let (next, r) = cleanup::expire_and_clean(catalog, &table, &config.retention())
                .await
                .map_err(at("expiry", &table))?;
            table = next;
            report.snapshots_expired = r.snapshots_expired;
            report.files_deleted += r.files_deleted;
            report.bytes_deleted += r.bytes_deleted;
        }
    }
    if retention && config.orphans {
        let r = cleanup::remove_orphans(catalog, &table, config.orphan_min_age, dry_run).await?;
        if !r.removed.is_empty() {
            report
                .actions
                .push(format!("remove {} orphan files", r.removed.len()));
        }
        report.files_deleted += if dry_run { 0 } else { r.removed.len() };
        report.bytes_deleted += if dry_run { 0 } else { r.bytes };
        report.orphans = r.removed;
    }
    report.after = shape(&table, config)
        .await
        .map_err(at("shape after", &table))?;
    report.millis = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// Whether `cost` passes the policy's read-amplification bound.
fn read_cost_due(cost: &ReadCost, config: &MaintenanceConfig) -> bool {
    config.read_amplification > 0.0 && cost.amplification() >= config.read_amplification
}

/// The table's read-cost estimate now (reads its manifest list).
pub async fn read_cost(table: &CatalogTable, config: &MaintenanceConfig) -> Result<ReadCost> {
    let manifests = current_manifests(table).await?.len();
    Ok(ReadCost::of(table, manifests, config))
}

/// The cheap check `sync` runs every `check_interval` between full runs,
/// per table: reads the table's metadata and manifest list only, and runs
/// what is due (as [`maintain_table`], but for expiry and orphans, left to
/// the full runs) when the read cost passes the bound
/// — keeping those runs, of all tables together, under `busy_limit` of the
/// time, and a table waiting a full `interval` after a run that found
/// nothing to improve.
#[derive(Debug, Default)]
pub struct ReadCostCheck {
    /// Per table: its turn after a run that changed nothing.
    not_before: std::sync::Mutex<std::collections::HashMap<TableName, Instant>>,
    /// The next run of any table (`busy_limit` bounds the share of the
    /// time of all tables together: a job of a hundred small tables must
    /// not spend a core compacting them).
    busy_until: std::sync::Mutex<Option<Instant>>,
}

impl ReadCostCheck {
    /// None when nothing was due (or the table's turn has not come).
    pub async fn run(
        &self,
        catalog: &dyn Catalog,
        name: &TableName,
        config: &MaintenanceConfig,
    ) -> Result<Option<TableReport>> {
        let now = Instant::now();
        let not_before = || self.not_before.lock().expect("not poisoned");
        let busy_until = || self.busy_until.lock().expect("not poisoned");
        if config.read_amplification <= 0.0
            || not_before().get(name).is_some_and(|t| *t > now)
            || busy_until().is_some_and(|t| t > now)
        {
            return Ok(None);
        }
        let table = catalog.load_table(name).await?;
        if !read_cost_due(&read_cost(&table, config).await?, config) {
            return Ok(None);
        }
        let report = maintain_steps(catalog, name, config, false, false).await;
        // A failed run (every attempt beaten by the writer) spent the time
        // too: it waits its share like any other.
        let idle = now.elapsed().mul_f64(1.0 / config.busy_limit - 1.0);
        *busy_until() = Some(Instant::now() + idle);
        let report = report?;
        if report.actions.is_empty() {
            not_before().insert(name.clone(), Instant::now() + config.interval);
        }
        Ok(Some(report))
    }
}

impl MaintenanceConfig {
    /// The snapshot retention this policy asks for.
    pub fn retention(&self) -> cleanup::Retention {
        cleanup::Retention {
            max_age: self.snapshot_age,
            retain_last: self.retain_last,
            max_count: Some(self.keep_snapshots),
            min_age: self.snapshot_min_age,
        }
    }
}

/// Expiry is due once the table has `snapshots` snapshots, or its oldest
/// is older than the retention age (`snapshot_age`, else the table's
/// `history.expire.max-snapshot-age-ms`) while more than one is kept.
fn expiry_due(table: &CatalogTable, config: &MaintenanceConfig) -> bool {
    let meta = &table.metadata;
    let count = meta.snapshots().count();
    let age_ms = config
        .snapshot_age
        .map(|d| d.as_millis() as i64)
        .or_else(|| {
            meta.properties()
                .get(tributary_catalog::MAX_SNAPSHOT_AGE_MS)
                .and_then(|v| v.trim().parse().ok())
        });
    let oldest = meta.snapshots().map(|s| s.timestamp_ms()).min();
    let too_old = matches!((age_ms, oldest), (Some(age), Some(t)) if cleanup::now_ms() - t > age);
    count >= config.snapshots || (count > config.retain_last.unwrap_or(1) && too_old)
}

/// The current snapshot and its live data and delete files (None: no
/// snapshot yet).
async fn live_split(table: &CatalogTable) -> Result<Option<(i64, Vec<LiveFile>, Vec<LiveFile>)>> {
    let Some(at) = table.metadata.current_snapshot_id() else {
        return Ok(None);
    };
    let (data, dels) = live_entries(table)
        .await?
        .into_iter()
        .partition(|f| f.file.content_type() == DataContentType::Data);
    Ok(Some((at, data, dels)))
}

async fn convert_now(
    catalog: &dyn Catalog,
    table: &CatalogTable,
    report: &mut TableReport,
) -> Result<CatalogTable> {
    let Some((at, data, dels)) = live_split(table).await? else {
        return Ok(table.clone());
    };
    let deletes = TableDeletes::load(table, &dels).await?;
    let (next, removed, _) =
        convert::convert_equality_deletes(catalog, table, at, &data, &deletes).await?;
    report.equality_deletes_converted = removed;
    Ok(next)
}

/// Merges position-delete files once compaction left `delete_files` or
/// more (files it did not rewrite, e.g. large ones with few deletes).
async fn merge_deletes(
    catalog: &dyn Catalog,
    table: &CatalogTable,
    config: &MaintenanceConfig,
    read_due: bool,
    report: &mut TableReport,
) -> Result<CatalogTable> {
    let Some((at, data, dels)) = live_split(table).await? else {
        return Ok(table.clone());
    };
    let positional = dels
        .iter()
        .filter(|d| d.file.content_type() == DataContentType::PositionDeletes)
        .count();
    // A table whose read cost is due merges any two.
    if positional < config.delete_files && !(read_due && positional > 1) {
        return Ok(table.clone());
    }
    let (next, merged) = convert::merge_position_deletes(catalog, table, at, &data, &dels).await?;
    if merged > 0 {
        report
            .actions
            .push(format!("merge {positional} position-delete files"));
        report.deletes_merged = merged;
    }
    Ok(next)
}

async fn drop_dangling(
    catalog: &dyn Catalog,
    table: &CatalogTable,
    report: &mut TableReport,
) -> Result<CatalogTable> {
    let Some((at, data, dels)) = live_split(table).await? else {
        return Ok(table.clone());
    };
    let deletes = TableDeletes::load(table, &dels).await?;
    let dangling = convert::dangling_deletes(&data, &dels, &deletes);
    if dangling.is_empty() {
        return Ok(table.clone());
    }
    report.actions.push(format!(
        "drop {} delete files that apply to nothing",
        dangling.len()
    ));
    report.deletes_dropped = dangling.len();
    convert::drop_deletes(catalog, table, at, dangling).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_can_override_the_policy_and_a_typo_there_is_named() {
        let config: MaintenanceConfig = serde_json::from_value(serde_json::json!({
            "small_files": 10,
            "tables": {"shop.orders": {"small_files": 3, "interval": "30s"}}
        }))
        .unwrap();
        config.validate(false).unwrap();
        let orders = config.for_table("shop.orders").unwrap();
        assert_eq!(
            (orders.small_files, orders.interval),
            (3, Duration::from_secs(30))
        );
        assert_eq!(config.for_table("shop.other").unwrap().small_files, 10);
        let typo: MaintenanceConfig = serde_json::from_value(serde_json::json!({
            "tables": {"shop.orders": {"small_filez": 3}}
        }))
        .unwrap();
        let err = typo.validate(false).unwrap_err().to_string();
        assert!(
            err.contains("shop.orders") && err.contains("small_filez"),
            "{err}"
        );
        let young: MaintenanceConfig = serde_json::from_value(serde_json::json!({
            "orphans": true, "orphan_min_age": "10m"
        }))
        .unwrap();
        let err = young.validate(false).unwrap_err().to_string();
        assert!(err.contains("--force"), "{err}");
        young.validate(true).unwrap();
    }
}
