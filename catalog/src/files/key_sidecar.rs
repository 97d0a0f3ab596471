//! Key sidecars (`<data file>.tki`): the key summary of one data file — the
//! smallest and largest encoded key (arrow-row encoding of the key columns)
//! and a bloom filter over its keys (1 % false positives) — written next to
//! every data file the upsert writer (and compaction) writes, so a key
//! lookup or a restart reads kilobytes per file instead of its key column.
//! Format: `TKI1`, then min and max as u32-LE length + bytes, then the
//! bloom filter's own serialization.

use std::sync::Arc;

use bloomfilter::Bloom;
use iceberg::io::FileIO;
use tributary_core::{Error, ErrorKind, Result};

use crate::iceberg_err;

/// Where the sidecar of `data_file` lives.
pub fn sidecar_path(data_file: &str) -> String {
    format!("{data_file}.tki")
}

const MAGIC: &[u8; 4] = b"TKI1";
const SEED: [u8; 32] = *b"tributary key index bloom seed!!";
const FALSE_POSITIVE_RATE: f64 = 0.01;
/// The key summary of one data file.
pub struct FileKeys {
    path: Arc<str>,
    min: Vec<u8>,
    max: Vec<u8>,
    bloom: Bloom<[u8]>,
}

impl FileKeys {
    pub fn path(&self) -> &Arc<str> {
        &self.path
    }

    /// Summarizes `keys` (encoded, any order) of the file at `path`.
    pub fn build<'a>(
        path: Arc<str>,
        keys: impl Iterator<Item = &'a [u8]> + Clone,
    ) -> Result<FileKeys> {
        let n = keys.clone().count().max(1);
        let mut bloom = Bloom::new_for_fp_rate_with_seed(n, FALSE_POSITIVE_RATE, &SEED)
            .map_err(|e| Error::new(ErrorKind::Unexpected, format!("bloom filter: {e}")))?;
        let (mut min, mut max): (Option<&[u8]>, Option<&[u8]>) = (None, None);
        for k in keys {
            bloom.set(k);
            min = Some(min.map_or(k, |m| m.min(k)));
            max = Some(max.map_or(k, |m| m.max(k)));
        }
        Ok(FileKeys {
            path,
            min: min.unwrap_or_default().to_vec(),
            max: max.unwrap_or_default().to_vec(),
            bloom,
        })
    }

    /// The smallest and largest key of the file.
    pub fn range(&self) -> (&[u8], &[u8]) {
        (&self.min, &self.max)
    }

    pub fn may_contain(&self, key: &[u8]) -> bool {
        self.min.as_slice() <= key && key <= self.max.as_slice() && self.bloom.check(key)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for part in [&self.min, &self.max] {
            out.extend((part.len() as u32).to_le_bytes());
            out.extend(part);
        }
        out.extend(self.bloom.to_bytes());
        out
    }

    pub fn from_bytes(path: Arc<str>, bytes: &[u8]) -> Result<FileKeys> {
        let bad = || {
            Error::new(
                ErrorKind::InvalidData,
                format!("corrupt key index sidecar of {path}"),
            )
        };
        let rest = bytes.strip_prefix(MAGIC.as_slice()).ok_or_else(bad)?;
        let mut parts = Vec::new();
        let mut rest = rest;
        for _ in 0..2 {
            let len =
                u32::from_le_bytes(rest.get(..4).ok_or_else(bad)?.try_into().unwrap()) as usize;
            parts.push(rest.get(4..4 + len).ok_or_else(bad)?.to_vec());
            rest = &rest[4 + len..];
        }
        let bloom = Bloom::from_bytes(rest.to_vec()).map_err(|_| bad())?;
        let max = parts.pop().unwrap();
        let min = parts.pop().unwrap();
        Ok(FileKeys {
            path,
            min,
            max,
            bloom,
        })
    }
}

/// Writes `keys`' sidecar next to its data file.
pub async fn write_key_sidecar(file_io: &FileIO, keys: &FileKeys) -> Result<()> {
    let path = sidecar_path(keys.path());
    file_io
        .new_output(&path)
        .map_err(|e| iceberg_err("sidecar output", e))?
        .write(keys.to_bytes().into())
        .await
        .map_err(|e| iceberg_err(format!("writing the key sidecar {path}"), e))
}
