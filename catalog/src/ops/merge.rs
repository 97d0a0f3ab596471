//! Manifest merging in the commit path, with Iceberg's semantics and
//! property names, so a table committed every second keeps a bounded number
//! of manifests without any maintenance run:
//!
//! - `commit.manifest-merge.enabled` (default true);
//! - `commit.manifest.target-size-bytes` (default 8 MiB): manifests of one
//!   content (data or deletes) and partition spec are bin-packed from the
//!   oldest end toward this size, so the remainder bin is the newest one;
//! - `commit.manifest.min-count-to-merge` (default 100): the bin holding the
//!   manifests this commit wrote is merged only once it has this many
//!   manifests (other bins as soon as they have two).
//!
//! A merged manifest keeps this snapshot's added and deleted entries as they
//! are, turns older live entries into existing ones (snapshot id and
//! sequence numbers kept, so validations by snapshot still see them), and
//! drops older deleted entries.

use iceberg::spec::{ManifestContentType, ManifestFile, ManifestStatus, TableMetadata};
use tributary_core::Result;

use super::producer::{close_manifest, manifest_writer};
use crate::{CatalogTable, iceberg_err};

pub const MERGE_ENABLED: &str = "commit.manifest-merge.enabled";
pub const MIN_COUNT_TO_MERGE: &str = "commit.manifest.min-count-to-merge";
pub const TARGET_SIZE_BYTES: &str = "commit.manifest.target-size-bytes";

/// The merge settings of a table, from its properties (Iceberg's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergePolicy {
    pub enabled: bool,
    pub min_count: usize,
    pub target_bytes: u64,
}

impl MergePolicy {
    pub fn of(meta: &TableMetadata) -> MergePolicy {
        let props = meta.properties();
        let get = |k: &str| props.get(k).and_then(|v| v.trim().parse::<u64>().ok());
        MergePolicy {
            enabled: props.get(MERGE_ENABLED).is_none_or(|v| v.trim() != "false"),
            min_count: get(MIN_COUNT_TO_MERGE).unwrap_or(100).max(1) as usize,
            target_bytes: get(TARGET_SIZE_BYTES).unwrap_or(8 << 20).max(1),
        }
    }
}

/// Bins of consecutive items (indices), packed from the end toward
/// `target` by `weight` (Iceberg's `ListPacker.packEnd` with lookback 1).
fn pack_end(weights: &[u64], target: u64) -> Vec<Vec<usize>> {
    let mut bins: Vec<Vec<usize>> = Vec::new();
    let (mut current, mut size) = (Vec::new(), 0u64);
    for i in (0..weights.len()).rev() {
        if !current.is_empty() && size + weights[i] > target {
            bins.push(std::mem::take(&mut current));
            size = 0;
        }
        current.push(i);
        size += weights[i];
    }
    if !current.is_empty() {
        bins.push(current);
    }
    bins.reverse();
    for b in &mut bins {
        b.reverse();
    }
    bins
}

/// The manifests of snapshot `snapshot_id`: `written` (this commit's own,
/// newest first) then `carried` (the parent's), merged per `policy`.
pub(crate) async fn merge_manifests(
    base: &CatalogTable,
    snapshot_id: i64,
    written: Vec<ManifestFile>,
    carried: Vec<ManifestFile>,
    policy: MergePolicy,
) -> Result<Vec<ManifestFile>> {
    let all: Vec<ManifestFile> = written.into_iter().chain(carried).collect();
    if !policy.enabled {
        return Ok(all);
    }
    let spec = base.metadata.default_partition_spec_id();
    let mut out = Vec::new();
    for content in [ManifestContentType::Data, ManifestContentType::Deletes] {
        // Only manifests of the current spec can be rewritten with it.
        let (group, other): (Vec<ManifestFile>, Vec<ManifestFile>) = all
            .iter()
            .filter(|m| m.content == content)
            .cloned()
            .partition(|m| m.partition_spec_id == spec);
        let weights: Vec<u64> = group.iter().map(|m| m.manifest_length as u64).collect();
        for bin in pack_end(&weights, policy.target_bytes) {
            let holds_new = bin
                .iter()
                .any(|&i| group[i].added_snapshot_id == snapshot_id);
            let members: Vec<&ManifestFile> = bin.iter().map(|&i| &group[i]).collect();
            if bin.len() == 1 || (holds_new && bin.len() < policy.min_count) {
                out.extend(members.into_iter().cloned());
            } else {
                let deletes = content == ManifestContentType::Deletes;
                out.push(merge_bin(base, snapshot_id, deletes, &members).await?);
            }
        }
        out.extend(other);
    }
    Ok(out)
}

/// One manifest holding the entries of `members` (see the module docs).
async fn merge_bin(
    base: &CatalogTable,
    snapshot_id: i64,
    deletes: bool,
    members: &[&ManifestFile],
) -> Result<ManifestFile> {
    let mut w = manifest_writer(base, snapshot_id, deletes, "merged")?;
    for manifest in members {
        let loaded = manifest
            .load_manifest(&base.file_io)
            .await
            .map_err(|e| iceberg_err("loading a manifest to merge", e))?;
        let ours = manifest.added_snapshot_id == snapshot_id;
        for e in loaded.entries() {
            let df = e.data_file().clone();
            let seq = e.sequence_number().unwrap_or(manifest.sequence_number);
            let file_seq = e.file_sequence_number.or(Some(manifest.sequence_number));
            let added = match (ours, e.status()) {
                (true, ManifestStatus::Added) => w.add_file(df, seq),
                (true, ManifestStatus::Deleted) => w.add_delete_file(df, seq, file_seq),
                (_, ManifestStatus::Deleted) => continue,
                _ => {
                    let snap = e.snapshot_id().unwrap_or(manifest.added_snapshot_id);
                    w.add_existing_file(df, snap, seq, file_seq)
                }
            };
            added.map_err(|e| iceberg_err("merging manifests", e))?;
        }
    }
    close_manifest(w).await
}

#[cfg(test)]
mod tests {
    use super::pack_end;

    #[test]
    fn packing_starts_from_the_oldest_end_so_the_newest_bin_holds_the_remainder() {
        // Newest first: three small new ones, then two that fill a bin.
        assert_eq!(
            pack_end(&[1, 1, 1, 5, 5], 10),
            vec![vec![0, 1, 2], vec![3, 4]]
        );
        assert_eq!(pack_end(&[20, 1], 10), vec![vec![0], vec![1]]);
        assert_eq!(pack_end(&[], 10), Vec::<Vec<usize>>::new());
        assert_eq!(pack_end(&[3, 3, 3], 10), vec![vec![0, 1, 2]]);
    }
}
