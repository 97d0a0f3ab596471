//! The files a table's operations write: Parquet data files, position
//! deletes with the spec's reserved `file_path`/`pos` columns (sorted, as
//! the spec requires), equality deletes on a table's key columns, and key
//! sidecars ([`key_sidecar`]).

pub mod key_sidecar;

pub use key_sidecar::{FileKeys, sidecar_path, write_key_sidecar};

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema as ArrowSchema};
use iceberg::io::FileIO;
use iceberg::spec::{DataContentType, DataFile, DataFileBuilder, DataFileFormat, Struct};
use parquet::arrow::ArrowWriter;
use tributary_core::{Error, ErrorKind, Result};

use crate::iceberg_err;

/// Reserved field ids of position-delete files (Iceberg spec).
pub const FILE_PATH_FIELD_ID: i32 = 2147483546;
pub const POS_FIELD_ID: i32 = 2147483545;

fn field(name: &str, t: DataType, id: i32) -> Field {
    Field::new(name, t, false).with_metadata(HashMap::from([(
        "PARQUET:field_id".to_string(),
        id.to_string(),
    )]))
}

fn parquet_bytes(batch: &RecordBatch, row_group_rows: Option<usize>) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    let parquet = |e: parquet::errors::ParquetError| {
        Error::new(ErrorKind::Io, "writing Parquet").with_source(e)
    };
    let props = row_group_rows.map(|n| {
        parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(n.max(1)))
            .build()
    });
    let mut w = ArrowWriter::try_new(&mut buf, batch.schema(), props).map_err(parquet)?;
    w.write(batch).map_err(parquet)?;
    w.close().map_err(parquet)?;
    Ok(buf)
}

async fn put(file_io: &FileIO, path: &str, bytes: Vec<u8>) -> Result<u64> {
    let len = bytes.len() as u64;
    file_io
        .new_output(path)
        .map_err(|e| iceberg_err("delete file output", e))?
        .write(bytes.into())
        .await
        .map_err(|e| iceberg_err(format!("writing {path}"), e))?;
    Ok(len)
}

/// Writes `batch` (Arrow fields carrying Iceberg field ids) as a Parquet
/// data file at `path` for a partition (row groups of at most
/// `row_group_rows` rows; the Parquet default when None).
pub async fn write_data_file(
    file_io: &FileIO,
    path: &str,
    batch: &RecordBatch,
    partition: Struct,
    partition_spec_id: i32,
    row_group_rows: Option<usize>,
) -> Result<DataFile> {
    let size = put(file_io, path, parquet_bytes(batch, row_group_rows)?).await?;
    parquet_entry(
        DataContentType::Data,
        path,
        batch.num_rows(),
        size,
        partition,
        partition_spec_id,
    )
    .build()
    .map_err(|e| Error::new(ErrorKind::Unexpected, format!("data file: {e}")))
}

/// The manifest entry fields every Parquet file we write shares.
fn parquet_entry(
    content: DataContentType,
    path: &str,
    rows: usize,
    size: u64,
    partition: Struct,
    partition_spec_id: i32,
) -> DataFileBuilder {
    let mut builder = DataFileBuilder::default();
    builder
        .content(content)
        .file_path(path.to_string())
        .file_format(DataFileFormat::Parquet)
        .record_count(rows as u64)
        .file_size_in_bytes(size)
        .partition(partition)
        .partition_spec_id(partition_spec_id);
    builder
}

/// Writes `(data file path, row position)` pairs as one position-delete file
/// at `path` for a partition, sorted by path then position.
pub async fn write_position_deletes(
    file_io: &FileIO,
    path: &str,
    mut deletes: Vec<(String, i64)>,
    partition: Struct,
    partition_spec_id: i32,
) -> Result<DataFile> {
    deletes.sort();
    deletes.dedup();
    let schema = Arc::new(ArrowSchema::new(vec![
        field("file_path", DataType::Utf8, FILE_PATH_FIELD_ID),
        field("pos", DataType::Int64, POS_FIELD_ID),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            deletes.iter().map(|(p, _)| p.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(
            deletes.iter().map(|(_, pos)| *pos),
        )),
    ];
    let batch = RecordBatch::try_new(schema, columns)?;
    let size = put(file_io, path, parquet_bytes(&batch, None)?).await?;
    parquet_entry(
        DataContentType::PositionDeletes,
        path,
        deletes.len(),
        size,
        partition,
        partition_spec_id,
    )
    .build()
    .map_err(|e| Error::new(ErrorKind::Unexpected, format!("position delete file: {e}")))
}

/// Writes `batch` (the key columns, with Iceberg field ids in their Arrow
/// metadata) as an equality-delete file on `equality_ids`.
pub async fn write_equality_deletes(
    file_io: &FileIO,
    path: &str,
    batch: &RecordBatch,
    equality_ids: Vec<i32>,
    partition: Struct,
    partition_spec_id: i32,
) -> Result<DataFile> {
    let size = put(file_io, path, parquet_bytes(batch, None)?).await?;
    parquet_entry(
        DataContentType::EqualityDeletes,
        path,
        batch.num_rows(),
        size,
        partition,
        partition_spec_id,
    )
    .equality_ids(Some(equality_ids))
    .build()
    .map_err(|e| Error::new(ErrorKind::Unexpected, format!("equality delete file: {e}")))
}
