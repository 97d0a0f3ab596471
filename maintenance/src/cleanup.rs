//! Snapshot expiry and file cleanup. Expiry follows the table's
//! `history.expire.*` properties and never drops the snapshot holding the
//! writer's checkpoint; afterwards every file that only expired snapshots
//! referenced (manifest lists, manifests, data and delete files, key
//! sidecars) is deleted. Orphan removal deletes stored files that no
//! snapshot and no metadata file names, older than a minimum age, which
//! protects a live writer's spills and sidecars before their commit.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iceberg::spec::{DataContentType, FormatVersion, ManifestList, TableMetadata};
use tributary_catalog::{
    Catalog, CatalogTable, ExpireSnapshots, MAX_SNAPSHOT_AGE_MS, MIN_SNAPSHOTS_TO_KEEP,
    commit_operation, iceberg_err, sidecar_path,
};
use tributary_core::Result;

/// Snapshot-summary property of the writer's checkpoint.
const CHECKPOINT_PROPERTY: &str = "tributary.checkpoint";

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Every file the snapshots of `meta` reference: manifest lists,
/// manifests, data and delete files, and the key sidecars of data files.
pub async fn referenced_files(
    table: &CatalogTable,
    meta: &TableMetadata,
) -> Result<HashSet<String>> {
    let mut files = HashSet::new();
    let mut manifests_seen = HashSet::new();
    for snapshot in meta.snapshots() {
        let list_path = snapshot.manifest_list().to_string();
        let bytes = table
            .file_io
            .new_input(&list_path)
            .map_err(|e| iceberg_err("manifest list", e))?
            .read()
            .await
            .map_err(|e| iceberg_err(format!("reading {list_path}"), e))?;
        files.insert(list_path);
        let list = ManifestList::parse_with_version(&bytes, FormatVersion::V2)
            .map_err(|e| iceberg_err("parsing a manifest list", e))?;
        let manifests: Vec<_> = list.consume_entries().into_iter().collect();
        for m in manifests {
            if !manifests_seen.insert(m.manifest_path.clone()) {
                continue;
            }
            let loaded = m
                .load_manifest(&table.file_io)
                .await
                .map_err(|e| iceberg_err("loading a manifest", e))?;
            for e in loaded.entries() {
                // A deleted entry still names a file older snapshots read.
                let f = e.data_file();
                files.insert(f.file_path().to_string());
                if f.content_type() == DataContentType::Data {
                    files.insert(sidecar_path(f.file_path()));
                }
            }
            files.insert(m.manifest_path);
        }
    }
    Ok(files)
}

/// The snapshot holding the writer's checkpoint: the newest on the
/// current snapshot's ancestry whose summary has it.
fn checkpoint_snapshot(meta: &TableMetadata) -> Option<i64> {
    let mut cur = meta.current_snapshot();
    while let Some(s) = cur {
        if s.summary()
            .additional_properties
            .contains_key(CHECKPOINT_PROPERTY)
        {
            return Some(s.snapshot_id());
        }
        cur = s
            .parent_snapshot_id()
            .and_then(|id| meta.snapshot_by_id(id));
    }
    None
}

/// What expiry did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ExpiryResult {
    pub snapshots_expired: usize,
    pub files_deleted: usize,
    pub bytes_deleted: u64,
}

/// Which snapshots an expiry keeps.
#[derive(Debug, Clone, Default)]
pub struct Retention {
    /// Snapshots older than this go (default: the table's
    /// `history.expire.max-snapshot-age-ms`, else 5 days)…
    pub max_age: Option<Duration>,
    /// …beyond the newest `retain_last` (default: the table's
    /// `history.expire.min-snapshots-to-keep`, else 1).
    pub retain_last: Option<usize>,
    /// At most this many stay, the oldest going first…
    pub max_count: Option<usize>,
    /// …unless younger than this.
    pub min_age: Duration,
}

/// Expires the snapshots `retention` lets go — never the one holding the
/// writer's checkpoint — and deletes the files only they referenced.
pub async fn expire_and_clean(
    catalog: &dyn Catalog,
    table: &CatalogTable,
    retention: &Retention,
) -> Result<(CatalogTable, ExpiryResult)> {
    let props = table.metadata.properties();
    let prop = |k: &str| props.get(k).and_then(|v| v.trim().parse::<u64>().ok());
    let age_ms = retention
        .max_age
        .map(|d| d.as_millis() as u64)
        .or(prop(MAX_SNAPSHOT_AGE_MS))
        .unwrap_or(5 * 24 * 3600 * 1000);
    let retain = retention
        .retain_last
        .or(prop(MIN_SNAPSHOTS_TO_KEEP).map(|n| n as usize))
        .unwrap_or(1);
    let now = now_ms();
    let op = ExpireSnapshots {
        older_than_ms: now - age_ms as i64,
        retain_last: retain,
        keep: checkpoint_snapshot(&table.metadata).into_iter().collect(),
        max_count: retention.max_count,
        count_floor_ms: now - retention.min_age.as_millis() as i64,
    };
    let before_count = table.metadata.snapshots().count();
    let before = referenced_files(table, &table.metadata).await?;
    let next = commit_operation(catalog, table, &op).await?;
    let expired = before_count.saturating_sub(next.metadata.snapshots().count());
    let mut result = ExpiryResult {
        snapshots_expired: expired,
        ..ExpiryResult::default()
    };
    if next.version == table.version {
        return Ok((next, result));
    }
    // Files of snapshots committed meanwhile are in `after`, never deleted.
    let after = referenced_files(&next, &next.metadata).await?;
    for f in before.difference(&after) {
        let size = match table.file_io.new_input(f) {
            Ok(i) => i.metadata().await.map(|m| m.size).unwrap_or(0),
            Err(_) => 0,
        };
        if table.file_io.delete(f).await.is_ok() {
            result.files_deleted += 1;
            result.bytes_deleted += size;
        }
    }
    Ok((next, result))
}

/// What orphan removal found (and removed, unless a dry run).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct OrphanResult {
    pub removed: Vec<String>,
    pub bytes: u64,
}

/// Deletes files under the table's location that no snapshot or metadata
/// file names and that are older than `min_age`.
pub async fn remove_orphans(
    catalog: &dyn Catalog,
    table: &CatalogTable,
    min_age: Duration,
    dry_run: bool,
) -> Result<OrphanResult> {
    let meta = &table.metadata;
    let mut known = referenced_files(table, meta).await?;
    known.insert(table.metadata_location.clone());
    known.extend(meta.metadata_log().iter().map(|l| l.metadata_file.clone()));
    let cutoff = now_ms() - min_age.as_millis() as i64;
    let mut result = OrphanResult::default();
    for f in catalog.list_files(meta.location()).await? {
        // The Hadoop catalog's version hint is named by nothing; a metadata
        // file being committed right now is younger than the cutoff.
        let hint = f.location.ends_with("/metadata/version-hint.text");
        if hint || known.contains(&f.location) || f.modified_ms > cutoff {
            continue;
        }
        if !dry_run {
            table
                .file_io
                .delete(&f.location)
                .await
                .map_err(|e| iceberg_err(format!("deleting {}", f.location), e))?;
        }
        result.bytes += f.size;
        result.removed.push(f.location);
    }
    Ok(result)
}
