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

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow_array::RecordBatch;
use iceberg::io::FileIO;
use tributary_catalog::KeyEncoder;
pub use tributary_catalog::files::{FileKeys, sidecar_path};
use tributary_catalog::{read_parquet, read_position_deletes};
use tributary_core::{Error, ErrorKind, Result};

/// Bytes of key → position maps cached by every key index of the process
/// (all tables of a job share it), and the bound on them.
static CACHED_BYTES: AtomicUsize = AtomicUsize::new(0);
static CACHE_BUDGET: AtomicUsize = AtomicUsize::new(256 << 20);

/// Sets the memory budget shared by the key-index caches of every table in
/// this process (default 256 MiB). Each index keeps at least the file it
/// is probing.
pub fn set_key_cache_budget(bytes: usize) {
    CACHE_BUDGET.store(bytes.max(1), Ordering::Relaxed);
}

/// Bytes the key-index caches of this process hold now.
pub fn key_cache_bytes() -> usize {
    CACHED_BYTES.load(Ordering::Relaxed)
}

type ProbeMap = Arc<HashMap<Vec<u8>, i64>>;

/// One index's cached key → position maps, oldest first, accounted in
/// the process-wide budget.
#[derive(Default)]
struct ProbeCache {
    maps: HashMap<Arc<str>, (ProbeMap, usize)>,
    order: VecDeque<Arc<str>>,
    bytes: usize,
}

impl ProbeCache {
    fn get(&self, path: &str) -> Option<ProbeMap> {
        self.maps.get(path).map(|(m, _)| m.clone())
    }

    fn insert(&mut self, path: Arc<str>, map: ProbeMap) {
        let size = map.keys().map(|k| k.len() + 48).sum::<usize>();
        self.remove(&path);
        while !self.order.is_empty()
            && CACHED_BYTES.load(Ordering::Relaxed) + size > CACHE_BUDGET.load(Ordering::Relaxed)
        {
            let oldest = self.order.pop_front().expect("non-empty");
            self.forget(&oldest);
        }
        CACHED_BYTES.fetch_add(size, Ordering::Relaxed);
        self.bytes += size;
        self.maps.insert(path.clone(), (map, size));
        self.order.push_back(path);
    }

    fn remove(&mut self, path: &str) {
        if self.maps.contains_key(path) {
            self.order.retain(|p| &**p != path);
            self.forget(path);
        }
    }

    fn forget(&mut self, path: &str) {
        if let Some((_, size)) = self.maps.remove(path) {
            CACHED_BYTES.fetch_sub(size, Ordering::Relaxed);
            self.bytes -= size;
        }
    }

    fn clear(&mut self) {
        CACHED_BYTES.fetch_sub(self.bytes, Ordering::Relaxed);
        self.bytes = 0;
        self.maps.clear();
        self.order.clear();
    }
}

impl Drop for ProbeCache {
    fn drop(&mut self) {
        CACHED_BYTES.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Layout {
    run: Vec<usize>,
    overlapping: Vec<usize>,
}

impl Layout {
    fn of(files: &[FileKeys]) -> Layout {
        let mut order: Vec<usize> = (0..files.len()).collect();
        order.sort_by(|&a, &b| files[a].range().0.cmp(files[b].range().0));
        let mut layout = Layout::default();
        for i in order {
            let fits = layout
                .run
                .last()
                .is_none_or(|&last| files[last].range().1 < files[i].range().0);
            if fits {
                layout.run.push(i)
            } else {
                layout.overlapping.push(i)
            }
        }
        layout
    }

    /// Indices of the files whose range and filter admit `key`.
    /// The files that may hold `key`: its range, then its bloom filter
    /// (counted in `stats`: tests of files whose range holds the key, and
    /// the ones the filter ruled out).
    fn candidates(&self, files: &[FileKeys], key: &[u8], stats: &mut IndexStats) -> Vec<usize> {
        let at = self.run.partition_point(|&i| files[i].range().0 <= key);
        let in_run = at.checked_sub(1).map(|j| self.run[j]);
        let mut out = Vec::new();
        for i in in_run.into_iter().chain(self.overlapping.iter().copied()) {
            let (min, max) = files[i].range();
            if !(min <= key && key <= max) {
                continue;
            }
            stats.bloom_tests += 1;
            if files[i].may_contain(key) {
                out.push(i);
            } else {
                stats.bloom_skips += 1;
            }
        }
        out
    }
}

/// Where a live row is: data file path and row position.
pub type RowLocation = (Arc<str>, i64);

/// Counters that tests and benchmarks read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IndexStats {
    /// Data files whose key column was read (summaries built, probes).
    pub key_columns_read: usize,
    /// Sidecars loaded on open.
    pub sidecars_read: usize,
    /// Lookups' files whose key range held the key, and of those the ones
    /// the bloom filter ruled out.
    pub bloom_tests: u64,
    pub bloom_skips: u64,
}

pub struct KeyIndex {
    file_io: FileIO,
    key_columns: Vec<usize>,
    encoder: KeyEncoder,
    files: Vec<FileKeys>,
    /// Which files a key can be in without testing every file: `run` holds
    /// files with disjoint key ranges in key order (binary-searched; what
    /// inserts of increasing keys and compaction produce), `overlapping`
    /// the rest (tested one by one; compaction keeps them few). Rebuilt
    /// when the files change.
    layout: Option<Layout>,
    deleted: HashMap<Arc<str>, HashSet<i64>>,
    /// Position-delete files already applied to `deleted`, with the live
    /// data files each names (a copy-on-write commit removes the delete
    /// files that name only files it rewrote).
    delete_files: HashMap<String, HashSet<Arc<str>>>,
    probes: ProbeCache,
    pub stats: IndexStats,
}

impl KeyIndex {
    /// An index on the key columns at `key_columns` of the data files, of
    /// `key_types` (any type of each column's promotion family: keys are
    /// encoded canonically, so one written before `ALTER … MODIFY id
    /// BIGINT` and one after are the same key).
    pub fn new(
        file_io: FileIO,
        key_columns: Vec<usize>,
        key_types: &[arrow_schema::DataType],
    ) -> Result<KeyIndex> {
        Ok(KeyIndex {
            file_io,
            key_columns,
            encoder: KeyEncoder::new(key_types)?,
            files: Vec::new(),
            layout: None,
            deleted: HashMap::new(),
            delete_files: HashMap::new(),
            probes: ProbeCache::default(),
            stats: IndexStats::default(),
        })
    }

    /// Brings the index to a table version's live files: summaries of data
    /// files it does not have yet (sidecars, or built from the key column),
    /// files no longer live out (a rewrite removed them), and the positions
    /// new position-delete files remove. Loading from empty is the same call.
    pub async fn load(
        &mut self,
        data_files: &[String],
        position_delete_files: &[String],
    ) -> Result<()> {
        let live: HashSet<&str> = data_files.iter().map(String::as_str).collect();
        self.files.retain(|f| live.contains(&**f.path()));
        self.layout = None;
        self.deleted.retain(|p, _| live.contains(&**p));
        for gone in self.probes.order.clone() {
            if !live.contains(&*gone) {
                self.probes.remove(&gone);
            }
        }
        let known: HashSet<Arc<str>> = self.files.iter().map(|f| f.path().clone()).collect();
        for targets in self.delete_files.values_mut() {
            targets.retain(|p| live.contains(&**p));
        }
        for d in position_delete_files {
            if self.delete_files.contains_key(d) {
                continue;
            }
            let read = read_position_deletes(&self.file_io, d, None).await;
            let read = match read {
                Ok(r) => r,
                Err(e) => return Err(self.if_gone(d, e).await),
            };
            let mut targets = HashSet::new();
            for (path, pos) in read {
                if live.contains(path.as_str()) {
                    let path: Arc<str> = Arc::from(path);
                    self.deleted.entry(path.clone()).or_default().insert(pos);
                    targets.insert(path);
                }
            }
            self.delete_files.insert(d.clone(), targets);
        }
        let listed: HashSet<&str> = position_delete_files.iter().map(String::as_str).collect();
        self.delete_files.retain(|d, _| listed.contains(d.as_str()));
        for f in data_files.iter().filter(|f| !known.contains(f.as_str())) {
            let path: Arc<str> = Arc::from(f.as_str());
            let sidecar = self.file_io.new_input(sidecar_path(f));
            let bytes = match sidecar {
                Ok(input) => input.read().await.ok(),
                Err(_) => None,
            };
            let summary = match bytes {
                Some(bytes) => {
                    self.stats.sidecars_read += 1;
                    FileKeys::from_bytes(path, &bytes)?
                }
                None => {
                    let keys = self.probe(&path).await?;
                    FileKeys::build(path, keys.keys().map(Vec::as_slice))?
                }
            };
            self.files.push(summary);
        }
        self.layout = None;
        Ok(())
    }
    /// Forgets everything loaded (before loading a newer table version).
    pub fn reset(&mut self) {
        self.files.clear();
        self.layout = None;
        self.deleted.clear();
        self.delete_files.clear();
        self.probes.clear();
    }

    /// Encodes the key columns of `batch`.
    pub fn encode(&self, batch: &RecordBatch) -> Result<arrow_row::Rows> {
        let cols: Vec<_> = self
            .key_columns
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        self.encoder.encode(&cols)
    }

    /// A file this index lists that no longer exists was rewritten by
    /// maintenance and deleted by expiry since the index last followed the
    /// table: the view is stale, not the data bad. A commit conflict (the
    /// run starts again from its last commit, over the current files).
    pub async fn if_gone(&self, path: &str, e: Error) -> Error {
        match self.file_io.exists(path).await {
            Ok(false) => Error::new(
                ErrorKind::CommitConflict,
                format!(
                    "{path} is gone: a rewrite replaced it and expiry deleted it since this \
                     writer last read the table ({e})"
                ),
            ),
            _ => e,
        }
    }

    /// The key → position map of a data file (read once, then cached).
    async fn probe(&mut self, path: &Arc<str>) -> Result<ProbeMap> {
        if let Some(p) = self.probes.get(path) {
            return Ok(p);
        }
        self.stats.key_columns_read += 1;
        let mut map = HashMap::new();
        let mut pos = 0i64;
        // Only the key columns' chunks are fetched (range reads).
        let batches = match read_parquet(&self.file_io, path, Some(&self.key_columns), None).await {
            Ok(b) => b,
            Err(e) => return Err(self.if_gone(path, e).await),
        };
        for b in batches {
            for row in self.encoder.encode(b.columns())?.iter() {
                map.insert(row.as_ref().to_vec(), pos);
                pos += 1;
            }
        }
        let map = Arc::new(map);
        self.probes.insert(path.clone(), map.clone());
        Ok(map)
    }

    /// Whether some data file may hold `key` (range and bloom filter only,
    /// no file is read): the test equality-delete mode relies on.
    pub fn may_exist(&mut self, key: &[u8]) -> bool {
        let layout = self.layout.get_or_insert_with(|| Layout::of(&self.files));
        !layout
            .candidates(&self.files, key, &mut self.stats)
            .is_empty()
    }

    pub fn key_columns(&self) -> &[usize] {
        &self.key_columns
    }

    /// Key columns back from encoded keys, as `types`.
    pub fn decode(
        &self,
        keys: &[&[u8]],
        types: &[arrow_schema::DataType],
    ) -> Result<Vec<arrow_array::ArrayRef>> {
        self.encoder.decode(keys, types)
    }

    /// The live row of `key`, if any.
    pub async fn lookup(&mut self, key: &[u8]) -> Result<Option<RowLocation>> {
        let layout = self.layout.get_or_insert_with(|| Layout::of(&self.files));
        let candidates: Vec<Arc<str>> = layout
            .candidates(&self.files, key, &mut self.stats)
            .into_iter()
            .map(|i| self.files[i].path().clone())
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
        self.layout = None;
    }

    /// Records a position-delete file this writer committed, naming
    /// `targets` (its positions are marked one by one), so a refresh does
    /// not read it again.
    pub fn applied_delete_file(&mut self, path: &str, targets: HashSet<Arc<str>>) {
        self.delete_files.insert(path.to_string(), targets);
    }

    /// The deleted positions of a live data file.
    pub fn deleted_in(&self, path: &str) -> Option<&HashSet<i64>> {
        self.deleted.get(path)
    }

    /// The live position-delete files that name no live data file but
    /// those in `files`: they leave the table with them.
    pub fn delete_files_naming_only(&self, files: &HashSet<&str>) -> Vec<String> {
        self.delete_files
            .iter()
            .filter(|(_, targets)| targets.iter().all(|t| files.contains(&**t)))
            .map(|(d, _)| d.clone())
            .collect()
    }

    /// Forgets a data file (a copy-on-write commit replaced it) or a
    /// position-delete file (removed with the files it named).
    pub fn remove_file(&mut self, path: &str) {
        if self.delete_files.remove(path).is_some() {
            return;
        }
        self.files.retain(|f| &**f.path() != path);
        self.layout = None;
        self.deleted.remove(path);
        self.probes.remove(path);
        for targets in self.delete_files.values_mut() {
            targets.remove(path);
        }
    }

    /// Records committed position deletes.
    pub fn mark_deleted(&mut self, path: &Arc<str>, pos: i64) {
        self.deleted.entry(path.clone()).or_default().insert(pos);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, keys: std::ops::Range<u32>) -> FileKeys {
        let keys: Vec<Vec<u8>> = keys.map(|k| k.to_be_bytes().to_vec()).collect();
        FileKeys::build(Arc::from(name), keys.iter().map(Vec::as_slice)).unwrap()
    }

    #[test]
    fn a_lookup_tests_one_file_of_a_disjoint_run_plus_the_overlapping_ones() {
        // 100 files of increasing keys (inserts, compaction output) and two
        // commits of keys all over the range.
        let mut files: Vec<FileKeys> = (0..100)
            .map(|i| file(&format!("run-{i}"), i * 10..i * 10 + 10))
            .collect();
        files.push(file("wide-a", 0..1000));
        files.push(file("wide-b", 5..995));
        let layout = Layout::of(&files);
        assert_eq!((layout.run.len(), layout.overlapping.len()), (100, 2));
        let key = 437u32.to_be_bytes();
        let mut stats = IndexStats::default();
        let found: Vec<&str> = layout
            .candidates(&files, &key, &mut stats)
            .into_iter()
            .map(|i| &**files[i].path())
            .map(|p| if p.starts_with("run") { "run" } else { "wide" })
            .collect();
        assert!(found.contains(&"run") && found.len() <= 3, "{found:?}");
        // The bloom filters were tested on the three files whose range
        // holds the key; those that ruled it out were counted as skips.
        assert_eq!(stats.bloom_tests, 3);
        assert_eq!(stats.bloom_skips, 3 - found.len() as u64);
        let hit = layout
            .candidates(&files, &key, &mut stats)
            .into_iter()
            .find(|&i| files[i].path().starts_with("run"));
        assert_eq!(&**files[hit.unwrap()].path(), "run-43");
        // Before the first file and after the last.
        assert_eq!(
            layout
                .candidates(&files, &5000u32.to_be_bytes(), &mut stats)
                .len(),
            0,
            "outside every range"
        );
    }

    #[test]
    fn the_cache_stays_under_the_process_budget_for_new_files_too() {
        let before = key_cache_bytes();
        let mut cache = ProbeCache::default();
        set_key_cache_budget(before + 10_000);
        for i in 0..50 {
            let map: HashMap<Vec<u8>, i64> = (0..20u32)
                .map(|k| (k.to_be_bytes().to_vec(), k as i64))
                .collect();
            cache.insert(Arc::from(format!("f{i}").as_str()), Arc::new(map));
            assert!(
                key_cache_bytes() <= before + 10_000,
                "over budget after {i}"
            );
        }
        assert!(cache.maps.len() > 1 && cache.maps.len() < 50);
        drop(cache);
        assert_eq!(
            key_cache_bytes(),
            before,
            "dropping an index gives its bytes back"
        );
        set_key_cache_budget(256 << 20);
    }
}
