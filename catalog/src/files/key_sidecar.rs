//! Key sidecars (`<data file>.tki`): the key summary of one data file — the
//! smallest and largest encoded key (arrow-row encoding of the key columns)
//! and a bloom filter over its keys (1 % false positives) — written next to
//! every data file the upsert writer (and compaction) writes, so a key
//! lookup or a restart reads kilobytes per file instead of its key column.
//! Keys are encoded by [`KeyEncoder`] (each key column in its canonical
//! type, see [`canonical_key_type`]). Format: `TKI2`, then min and max as u32-LE length + bytes, then the
//! bloom filter's own serialization.

use std::sync::Arc;

use arrow_array::ArrayRef;
use arrow_row::{RowConverter, Rows, SortField};
use arrow_schema::DataType;
use bloomfilter::Bloom;
use iceberg::io::FileIO;
use tributary_core::{Error, ErrorKind, Result};

use crate::iceberg_err;

/// Where the sidecar of `data_file` lives.
pub fn sidecar_path(data_file: &str) -> String {
    format!("{data_file}.tki")
}

/// Version 2: keys in the canonical encoding of [`KeyEncoder`]. Version-1
/// sidecars (keys in each file's own column types) are not read: their
/// files' summaries are built from the key columns again.
const MAGIC: &[u8; 4] = b"TKI2";
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

/// The type a key column is encoded as: the widest of its Iceberg
/// promotion family (int → long, float → double, decimal(P,S) →
/// decimal(38,S)) and one string/binary layout, so a key written before a
/// type promotion and after it encodes to the same bytes — in the writer's
/// index, in sidecars, and when maintenance matches equality deletes.
pub fn canonical_key_type(t: &DataType) -> DataType {
    match t {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => DataType::Int64,
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 => DataType::Int64,
        DataType::Float16 | DataType::Float32 | DataType::Float64 => DataType::Float64,
        DataType::Decimal32(_, s) | DataType::Decimal64(_, s) | DataType::Decimal128(_, s) => {
            DataType::Decimal128(38, *s)
        }
        DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
        DataType::LargeBinary | DataType::BinaryView => DataType::Binary,
        other => other.clone(),
    }
}

/// Encodes key columns as comparable bytes (arrow's row format) after
/// casting each to its [`canonical_key_type`].
pub struct KeyEncoder {
    converter: RowConverter,
    types: Vec<DataType>,
}

impl KeyEncoder {
    /// An encoder for key columns of these types (any member of each
    /// promotion family gives the same encoder).
    pub fn new<'a>(types: impl IntoIterator<Item = &'a DataType>) -> Result<KeyEncoder> {
        let types: Vec<DataType> = types.into_iter().map(canonical_key_type).collect();
        let fields = types.iter().map(|t| SortField::new(t.clone())).collect();
        Ok(KeyEncoder {
            converter: RowConverter::new(fields)?,
            types,
        })
    }

    pub fn encode(&self, columns: &[ArrayRef]) -> Result<Rows> {
        let cast: Vec<ArrayRef> = columns
            .iter()
            .zip(&self.types)
            .map(|(c, t)| {
                if c.data_type() == t {
                    Ok(c.clone())
                } else {
                    arrow_cast::cast(c, t)
                }
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(self.converter.convert_columns(&cast)?)
    }

    /// Key columns back from encoded keys, cast to `types` (the columns'
    /// types in the file to write).
    pub fn decode(&self, keys: &[&[u8]], types: &[DataType]) -> Result<Vec<ArrayRef>> {
        let parser = self.converter.parser();
        let rows: Vec<arrow_row::Row<'_>> = keys.iter().map(|k| parser.parse(k)).collect();
        self.converter
            .convert_rows(rows)?
            .into_iter()
            .zip(types)
            .map(|(c, t)| {
                if c.data_type() == t {
                    Ok(c)
                } else {
                    Ok(arrow_cast::cast(&c, t)?)
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod encoder_tests {
    use std::sync::Arc;

    use arrow_array::{Array, Decimal128Array, Int32Array, Int64Array, StringArray};

    use super::*;

    #[test]
    fn a_key_encodes_the_same_before_and_after_a_type_promotion() {
        let narrow = KeyEncoder::new(&[DataType::Int32, DataType::Decimal128(10, 2)]).unwrap();
        let wide = KeyEncoder::new(&[DataType::Int64, DataType::Decimal128(20, 2)]).unwrap();
        let int32: ArrayRef = Arc::new(Int32Array::from(vec![-5, 0, 7]));
        let int64: ArrayRef = Arc::new(Int64Array::from(vec![-5, 0, 7]));
        let dec = |p| -> ArrayRef {
            Arc::new(
                Decimal128Array::from(vec![1, 250, -3])
                    .with_precision_and_scale(p, 2)
                    .unwrap(),
            )
        };
        let a = narrow.encode(&[int32.clone(), dec(10)]).unwrap();
        let b = wide.encode(&[int64, dec(20)]).unwrap();
        for i in 0..3 {
            assert_eq!(a.row(i).as_ref(), b.row(i).as_ref(), "row {i}");
        }
        // Order is the values' order.
        assert!(a.row(0) < a.row(1) && a.row(1) < a.row(2));
        // Decoded as the file's current types.
        let owned: Vec<Vec<u8>> = (0..3).map(|i| a.row(i).as_ref().to_vec()).collect();
        let keys: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        let back = wide
            .decode(&keys, &[DataType::Int32, DataType::Decimal128(10, 2)])
            .unwrap();
        assert_eq!(back[0].as_ref(), int32.as_ref());
        assert_eq!(back[1].data_type(), &DataType::Decimal128(10, 2));
        // Strings keep their bytes whatever the layout.
        let s = KeyEncoder::new(&[DataType::LargeUtf8]).unwrap();
        let one: ArrayRef = Arc::new(StringArray::from(vec!["k"]));
        assert_eq!(s.encode(&[one]).unwrap().num_rows(), 1);
    }
}
