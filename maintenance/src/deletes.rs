//! Which rows of a data file are live: the table's position deletes (those
//! whose data sequence number is at least the file's) and equality deletes
//! (strictly newer than the file, same partition or unpartitioned), applied
//! by the spec's rules. Compaction reads through it; conversion uses its
//! equality keys.

use std::collections::{HashMap, HashSet};

use arrow_array::{ArrayRef, RecordBatch};
use iceberg::spec::{DataContentType, Struct};
use tributary_catalog::{CatalogTable, KeyEncoder, LiveFile, read_parquet, read_position_deletes};
use tributary_core::{Error, ErrorKind, Result};

/// One equality-delete file's keys, encoded on its field ids.
pub struct EqualityKeys {
    pub file: LiveFile,
    pub field_ids: Vec<i32>,
    pub keys: HashSet<Vec<u8>>,
}

/// The deletes of one table version.
pub struct TableDeletes {
    /// Data file → (position, sequence of the delete file naming it).
    positions: HashMap<String, Vec<(i64, i64)>>,
    /// Position-delete file → the data files it names.
    pub targets: HashMap<String, HashSet<String>>,
    /// The position-delete files.
    pub position_files: Vec<LiveFile>,
    pub equality: Vec<EqualityKeys>,
}

/// Field ids of the columns of `batch` (Arrow metadata), by position.
pub(crate) fn field_ids(batch: &RecordBatch) -> Vec<Option<i32>> {
    batch
        .schema()
        .fields()
        .iter()
        .map(|f| {
            f.metadata()
                .get("PARQUET:field_id")
                .and_then(|v| v.parse().ok())
        })
        .collect()
}

/// The columns of `batch` with `ids`, in that order, encoded as keys (the
/// canonical encoding of the writer's index: a value before and after a
/// type promotion is the same key).
pub(crate) fn encode(batch: &RecordBatch, ids: &[i32]) -> Result<Option<arrow_row::Rows>> {
    let have = field_ids(batch);
    let mut cols: Vec<ArrayRef> = Vec::new();
    for id in ids {
        match have.iter().position(|h| *h == Some(*id)) {
            Some(i) => cols.push(batch.column(i).clone()),
            None => return Ok(None),
        }
    }
    let encoder = KeyEncoder::new(cols.iter().map(|c| c.data_type()))?;
    Ok(Some(encoder.encode(&cols)?))
}

impl TableDeletes {
    /// Reads every live delete file of `table` (`files` = its live entries).
    pub async fn load(table: &CatalogTable, files: &[LiveFile]) -> Result<TableDeletes> {
        let mut positions: HashMap<String, Vec<(i64, i64)>> = HashMap::new();
        let mut equality = Vec::new();
        let mut targets: HashMap<String, HashSet<String>> = HashMap::new();
        let mut position_files = Vec::new();
        for f in files {
            let path = f.file.file_path();
            let size = Some(f.file.file_size_in_bytes());
            match f.file.content_type() {
                DataContentType::Data => {}
                DataContentType::PositionDeletes => {
                    position_files.push(f.clone());
                    let named = targets.entry(path.to_string()).or_default();
                    for (data, pos) in read_position_deletes(&table.file_io, path, size).await? {
                        named.insert(data.clone());
                        positions.entry(data).or_default().push((pos, f.sequence));
                    }
                }
                DataContentType::EqualityDeletes => {
                    let ids = f.file.equality_ids().unwrap_or_default();
                    let mut keys = HashSet::new();
                    for b in read_parquet(&table.file_io, path, None, size).await? {
                        let rows = encode(&b, &ids)?.ok_or_else(|| {
                            Error::new(
                                ErrorKind::InvalidData,
                                format!("{path}: equality columns {ids:?} missing"),
                            )
                        })?;
                        keys.extend(rows.iter().map(|r| r.as_ref().to_vec()));
                    }
                    equality.push(EqualityKeys {
                        file: f.clone(),
                        field_ids: ids,
                        keys,
                    });
                }
            }
        }
        Ok(TableDeletes {
            positions,
            targets,
            position_files,
            equality,
        })
    }

    /// Positions of `data` deleted by position deletes that apply to it.
    pub fn deleted_positions(&self, data: &LiveFile) -> HashSet<i64> {
        self.positions
            .get(data.file.file_path())
            .into_iter()
            .flatten()
            .filter(|(_, seq)| *seq >= data.sequence)
            .map(|(pos, _)| *pos)
            .collect()
    }

    /// The position-delete files that name only data files of `paths`:
    /// a rewrite of those files applies them all.
    pub fn applied_by(&self, paths: &HashSet<&str>) -> Vec<iceberg::spec::DataFile> {
        self.position_files
            .iter()
            .filter(|d| {
                self.targets
                    .get(d.file.file_path())
                    .is_some_and(|t| !t.is_empty() && t.iter().all(|p| paths.contains(p.as_str())))
            })
            .map(|d| d.file.clone())
            .collect()
    }

    /// Position-delete entries naming `path` (any sequence).
    pub fn position_count(&self, path: &str) -> usize {
        self.positions.get(path).map_or(0, Vec::len)
    }

    /// The equality-delete files that apply to `data`.
    pub fn equality_for<'a>(
        &'a self,
        data: &'a LiveFile,
    ) -> impl Iterator<Item = &'a EqualityKeys> {
        self.equality.iter().filter(move |e| {
            e.file.sequence > data.sequence && same_partition(e.file.file.partition(), data)
        })
    }

    /// Reads `data` and keeps its live rows: the batches, and for every row
    /// position of the file whether it is live.
    pub async fn live_rows(
        &self,
        table: &CatalogTable,
        data: &LiveFile,
    ) -> Result<(Vec<RecordBatch>, Vec<bool>)> {
        let deleted = self.deleted_positions(data);
        let eq: Vec<&EqualityKeys> = self.equality_for(data).collect();
        let size = Some(data.file.file_size_in_bytes());
        let batches = read_parquet(&table.file_io, data.file.file_path(), None, size).await?;
        let (mut live, mut out, mut pos) = (Vec::new(), Vec::new(), 0i64);
        for b in batches {
            let mut keep: Vec<bool> = (0..b.num_rows() as i64)
                .map(|i| !deleted.contains(&(pos + i)))
                .collect();
            for e in &eq {
                if let Some(rows) = encode(&b, &e.field_ids)? {
                    for (i, r) in rows.iter().enumerate() {
                        if keep[i] && e.keys.contains(r.as_ref()) {
                            keep[i] = false;
                        }
                    }
                }
            }
            pos += b.num_rows() as i64;
            let mask = arrow_array::BooleanArray::from(keep.clone());
            out.push(arrow_select::filter::filter_record_batch(&b, &mask)?);
            live.extend(keep);
        }
        Ok((out, live))
    }
}

/// Whether a delete file of `partition` applies to `data`'s partition (an
/// unpartitioned delete applies everywhere).
pub(crate) fn same_partition(partition: &Struct, data: &LiveFile) -> bool {
    partition.fields().is_empty() || partition == data.file.partition()
}
