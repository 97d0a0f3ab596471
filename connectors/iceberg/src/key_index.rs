//! Finding the live row of a primary key without scanning the table.
//!
//! Every data file has a key summary: the smallest and largest encoded key
//! and a bloom filter over its keys (1 % false positives). A lookup probes
//! only the files whose range and filter admit the key, reading those files'
//! key columns once (cached) to get the row position, and skips positions
//! already deleted. So a commit costs in proportion to the keys it touches
//! and the candidate files left, not the table size.
//!
//! Summaries are persisted as a sidecar next to each data file this writer
//! writes (`<data file>.tki`), so a restart reads kilobytes per file instead
//! of the key columns; files written by others get a summary built on open.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_row::{RowConverter, SortField};
use bytes::Bytes;
use iceberg::io::FileIO;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
pub use tributary_catalog::files::{FileKeys, sidecar_path};
use tributary_core::{Error, ErrorKind, Result};

/// Files whose key → position maps stay cached.
const PROBE_CACHE_FILES: usize = 64;

/// Where a live row is: data file path and row position.
pub type RowLocation = (Arc<str>, i64);

/// Counters that tests and benchmarks read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IndexStats {
    /// Data files whose key column was read (summaries built, probes).
    pub key_columns_read: usize,
    /// Sidecars loaded on open.
    pub sidecars_read: usize,
}

pub struct KeyIndex {
    file_io: FileIO,
    key_columns: Vec<usize>,
    converter: RowConverter,
    files: Vec<FileKeys>,
    deleted: HashMap<Arc<str>, HashSet<i64>>,
    probes: HashMap<Arc<str>, Arc<HashMap<Vec<u8>, i64>>>,
    pub stats: IndexStats,
}

async fn read(file_io: &FileIO, path: &str) -> Result<Bytes> {
    let input = file_io
        .new_input(path)
        .map_err(|e| tributary_catalog::iceberg_err("input", e))?;
    input
        .read()
        .await
        .map_err(|e| tributary_catalog::iceberg_err(format!("reading {path}"), e))
}

fn parquet_batches(bytes: Bytes, columns: Option<&[usize]>) -> Result<Vec<RecordBatch>> {
    let pq = |e: parquet::errors::ParquetError| Error::new(ErrorKind::Io, "Parquet").with_source(e);
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(pq)?;
    let builder = match columns {
        Some(c) => {
            let mask = ProjectionMask::roots(builder.parquet_schema(), c.iter().copied());
            builder.with_projection(mask)
        }
        None => builder,
    };
    builder
        .build()
        .map_err(pq)?
        .map(|b| b.map_err(Error::from))
        .collect()
}

impl KeyIndex {
    pub fn new(
        file_io: FileIO,
        key_columns: Vec<usize>,
        key_fields: Vec<SortField>,
    ) -> Result<KeyIndex> {
        Ok(KeyIndex {
            file_io,
            key_columns,
            converter: RowConverter::new(key_fields)?,
            files: Vec::new(),
            deleted: HashMap::new(),
            probes: HashMap::new(),
            stats: IndexStats::default(),
        })
    }

    /// Loads summaries of the live data files (sidecars, or built from the
    /// key column) and the positions their position-delete files remove.
    pub async fn load(
        &mut self,
        data_files: &[String],
        position_delete_files: &[String],
    ) -> Result<()> {
        for d in position_delete_files {
            for b in parquet_batches(read(&self.file_io, d).await?, None)? {
                let paths = b
                    .column(0)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .expect("file_path column");
                let pos = b
                    .column(1)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .expect("pos column");
                for i in 0..b.num_rows() {
                    self.deleted
                        .entry(Arc::from(paths.value(i)))
                        .or_default()
                        .insert(pos.value(i));
                }
            }
        }
        for f in data_files {
            let path: Arc<str> = Arc::from(f.as_str());
            let summary = match read(&self.file_io, &sidecar_path(f)).await {
                Ok(bytes) => {
                    self.stats.sidecars_read += 1;
                    FileKeys::from_bytes(path, &bytes)?
                }
                Err(_) => {
                    let keys = self.probe(&path).await?;
                    FileKeys::build(path, keys.keys().map(Vec::as_slice))?
                }
            };
            self.files.push(summary);
        }
        Ok(())
    }

    /// Forgets everything loaded (before loading a newer table version).
    pub fn reset(&mut self) {
        self.files.clear();
        self.deleted.clear();
        self.probes.clear();
    }

    /// Encodes the key columns of `batch`.
    pub fn encode(&self, batch: &RecordBatch) -> Result<arrow_row::Rows> {
        let cols: Vec<_> = self
            .key_columns
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        Ok(self.converter.convert_columns(&cols)?)
    }

    /// The key → position map of a data file (read once, then cached).
    async fn probe(&mut self, path: &Arc<str>) -> Result<Arc<HashMap<Vec<u8>, i64>>> {
        if let Some(p) = self.probes.get(path) {
            return Ok(p.clone());
        }
        self.stats.key_columns_read += 1;
        let mut map = HashMap::new();
        let mut pos = 0i64;
        for b in parquet_batches(read(&self.file_io, path).await?, Some(&self.key_columns))? {
            let cols: Vec<_> = b.columns().to_vec();
            for row in self.converter.convert_columns(&cols)?.iter() {
                map.insert(row.as_ref().to_vec(), pos);
                pos += 1;
            }
        }
        let map = Arc::new(map);
        if self.probes.len() >= PROBE_CACHE_FILES {
            self.probes.clear();
        }
        self.probes.insert(path.clone(), map.clone());
        Ok(map)
    }

    /// Whether some data file may hold `key` (range and bloom filter only,
    /// no file is read): the test equality-delete mode relies on.
    pub fn may_exist(&self, key: &[u8]) -> bool {
        self.files.iter().any(|f| f.may_contain(key))
    }

    pub fn key_columns(&self) -> &[usize] {
        &self.key_columns
    }

    /// Key columns back from encoded keys.
    pub fn decode(&self, keys: &[&[u8]]) -> Result<Vec<arrow_array::ArrayRef>> {
        let parser = self.converter.parser();
        let rows: Vec<arrow_row::Row<'_>> = keys.iter().map(|k| parser.parse(k)).collect();
        Ok(self.converter.convert_rows(rows)?)
    }

    /// The live row of `key`, if any.
    pub async fn lookup(&mut self, key: &[u8]) -> Result<Option<RowLocation>> {
        let candidates: Vec<Arc<str>> = self
            .files
            .iter()
            .filter(|f| f.may_contain(key))
            .map(|f| f.path().clone())
            .collect();
        for path in candidates {
            if let Some(&pos) = self.probe(&path).await?.get(key) {
                let gone = self.deleted.get(&path).is_some_and(|d| d.contains(&pos));
                if !gone {
                    return Ok(Some((path, pos)));
                }
            }
        }
        Ok(None)
    }

    /// Records a committed data file whose keys are `keys` in row order.
    pub fn add_file(&mut self, summary: FileKeys, keys: Vec<Vec<u8>>) {
        let map: HashMap<Vec<u8>, i64> = keys
            .into_iter()
            .enumerate()
            .map(|(i, k)| (k, i as i64))
            .collect();
        self.probes.insert(summary.path().clone(), Arc::new(map));
        self.files.push(summary);
    }

    /// Records committed position deletes.
    pub fn mark_deleted(&mut self, path: &Arc<str>, pos: i64) {
        self.deleted.entry(path.clone()).or_default().insert(pos);
    }
}
