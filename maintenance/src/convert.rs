//! Delete files: equality deletes converted into position deletes (so
//! readers without equality-delete support read the table, and reads stop
//! joining on keys), delete files that no longer apply to any live data
//! file dropped, and small position-delete files merged per partition. Both commit as rewrites planned at the snapshot they
//! read; a data file the new deletes name that is rewritten meanwhile makes
//! the commit fail typed, and the next run plans again.

use std::collections::{BTreeSet, HashMap, HashSet};

use iceberg::spec::{DataContentType, DataFile, Struct};
use tributary_catalog::{
    Catalog, CatalogTable, LiveFile, RewriteFiles, commit_rewrite, read_parquet,
    read_position_deletes, write_position_deletes,
};
use tributary_core::Result;

use crate::deletes::{TableDeletes, encode, same_partition};

/// Replaces every equality-delete file with position deletes for the rows
/// it deletes. Returns the new version and (equality files removed,
/// position files added).
pub async fn convert_equality_deletes(
    catalog: &dyn Catalog,
    table: &CatalogTable,
    planned_at: i64,
    data: &[LiveFile],
    deletes: &TableDeletes,
) -> Result<(CatalogTable, usize, usize)> {
    if deletes.equality.is_empty() {
        return Ok((table.clone(), 0, 0));
    }
    let mut by_partition: HashMap<Struct, Vec<(String, i64)>> = HashMap::new();
    let mut referenced = BTreeSet::new();
    for d in data {
        let applying: Vec<_> = deletes.equality_for(d).collect();
        if applying.is_empty() {
            continue;
        }
        let size = Some(d.file.file_size_in_bytes());
        let batches = read_parquet(&table.file_io, d.file.file_path(), None, size).await?;
        let mut pos = 0i64;
        for b in batches {
            for e in &applying {
                let Some(rows) = encode(&b, &e.field_ids)? else {
                    continue;
                };
                for (i, r) in rows.iter().enumerate() {
                    if e.keys.contains(r.as_ref()) {
                        let path = d.file.file_path().to_string();
                        referenced.insert(path.clone());
                        by_partition
                            .entry(d.file.partition().clone())
                            .or_default()
                            .push((path, pos + i as i64));
                    }
                }
            }
            pos += b.num_rows() as i64;
        }
    }
    let mut added = Vec::new();
    for (partition, positions) in by_partition {
        added.push(write_deletes(table, "converted", positions, partition).await?);
    }
    let replaced: Vec<DataFile> = deletes
        .equality
        .iter()
        .map(|e| e.file.file.clone())
        .collect();
    let (removed, n_added) = (replaced.len(), added.len());
    let rewrite = RewriteFiles {
        replaced,
        added_deletes: added,
        starting_snapshot_id: planned_at,
        referenced_data_files: referenced.into_iter().collect(),
        ..RewriteFiles::default()
    };
    let table = commit_rewrite(catalog, table, &rewrite).await?;
    Ok((table, removed, n_added))
}

/// Writes one position-delete file of `table` (a fresh `<tag>-deletes` name).
async fn write_deletes(
    table: &CatalogTable,
    tag: &str,
    positions: Vec<(String, i64)>,
    partition: Struct,
) -> Result<DataFile> {
    let path = format!(
        "{}/data/{}-{tag}-deletes.parquet",
        table.metadata.location(),
        uuid::Uuid::new_v4()
    );
    let spec = table.metadata.default_partition_spec_id();
    write_position_deletes(&table.file_io, &path, positions, partition, spec).await
}

/// Delete files that apply to no live data file: position deletes naming
/// only files that are gone, equality deletes no older data file is left
/// for in their partition.
pub fn dangling_deletes(
    data: &[LiveFile],
    deletes_live: &[LiveFile],
    deletes: &TableDeletes,
) -> Vec<DataFile> {
    let live: HashSet<&str> = data.iter().map(|f| f.file.file_path()).collect();
    deletes_live
        .iter()
        .filter(|d| match d.file.content_type() {
            DataContentType::PositionDeletes => deletes
                .targets
                .get(d.file.file_path())
                .is_none_or(|t| t.iter().all(|p| !live.contains(p.as_str()))),
            DataContentType::EqualityDeletes => !data
                .iter()
                .any(|f| f.sequence < d.sequence && same_partition(d.file.partition(), f)),
            DataContentType::Data => false,
        })
        .map(|d| d.file.clone())
        .collect()
}

/// Commits the removal of `files` (delete files that apply to nothing).
pub async fn drop_deletes(
    catalog: &dyn Catalog,
    table: &CatalogTable,
    planned_at: i64,
    files: Vec<DataFile>,
) -> Result<CatalogTable> {
    if files.is_empty() {
        return Ok(table.clone());
    }
    let rewrite = RewriteFiles {
        replaced: files,
        starting_snapshot_id: planned_at,
        ..RewriteFiles::default()
    };
    commit_rewrite(catalog, table, &rewrite).await
}

/// Merges the position-delete files of each partition that has at least
/// two into one, leaving out entries naming data files that are gone.
/// Returns the new version and the number of files merged away.
pub async fn merge_position_deletes(
    catalog: &dyn Catalog,
    table: &CatalogTable,
    planned_at: i64,
    data: &[LiveFile],
    deletes_live: &[LiveFile],
) -> Result<(CatalogTable, usize)> {
    let live: HashSet<&str> = data.iter().map(|f| f.file.file_path()).collect();
    let mut by_partition: HashMap<Struct, Vec<&LiveFile>> = HashMap::new();
    for d in deletes_live
        .iter()
        .filter(|d| d.file.content_type() == DataContentType::PositionDeletes)
    {
        by_partition
            .entry(d.file.partition().clone())
            .or_default()
            .push(d);
    }
    let (mut replaced, mut added, mut referenced) = (Vec::new(), Vec::new(), BTreeSet::new());
    for (partition, files) in by_partition.into_iter().filter(|(_, f)| f.len() > 1) {
        let mut positions = Vec::new();
        for f in &files {
            let size = Some(f.file.file_size_in_bytes());
            for (path, pos) in
                read_position_deletes(&table.file_io, f.file.file_path(), size).await?
            {
                if live.contains(path.as_str()) {
                    referenced.insert(path.clone());
                    positions.push((path, pos));
                }
            }
            replaced.push(f.file.clone());
        }
        added.push(write_deletes(table, "merged", positions, partition).await?);
    }
    if replaced.is_empty() {
        return Ok((table.clone(), 0));
    }
    let merged = replaced.len() - added.len();
    let rewrite = RewriteFiles {
        replaced,
        added_deletes: added,
        starting_snapshot_id: planned_at,
        referenced_data_files: referenced.into_iter().collect(),
        ..RewriteFiles::default()
    };
    Ok((commit_rewrite(catalog, table, &rewrite).await?, merged))
}
