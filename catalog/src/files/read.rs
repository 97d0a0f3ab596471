//! Reading Parquet files through the table's FileIO with range reads
//! (iceberg-rust's `ArrowFileReader`), so reading a few columns of a file
//! fetches those column chunks, not the whole object.

use arrow_array::{Int64Array, RecordBatch, StringArray};
use futures_util::TryStreamExt;
use iceberg::arrow::ArrowFileReader;
use iceberg::io::{FileIO, FileMetadata};
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use tributary_core::{Error, ErrorKind, Result};

use crate::iceberg_err;

fn parquet_err(path: &str) -> impl Fn(parquet::errors::ParquetError) -> Error + '_ {
    move |e| Error::new(ErrorKind::Io, format!("reading Parquet file {path}")).with_source(e)
}

/// The batches of the Parquet file at `path`: every column, or only the
/// top-level columns `columns` (by index). `size` is the file's length when
/// known (a manifest entry has it), saving a request.
pub async fn read_parquet(
    file_io: &FileIO,
    path: &str,
    columns: Option<&[usize]>,
    size: Option<u64>,
) -> Result<Vec<RecordBatch>> {
    let input = file_io
        .new_input(path)
        .map_err(|e| iceberg_err(format!("opening {path}"), e))?;
    let size = match size {
        Some(s) => s,
        None => {
            input
                .metadata()
                .await
                .map_err(|e| iceberg_err(format!("reading {path}"), e))?
                .size
        }
    };
    let reader = input
        .reader()
        .await
        .map_err(|e| iceberg_err(format!("reading {path}"), e))?;
    let file = ArrowFileReader::new(FileMetadata { size }, reader);
    let mut builder = ParquetRecordBatchStreamBuilder::new(file)
        .await
        .map_err(parquet_err(path))?;
    if let Some(c) = columns {
        let mask = ProjectionMask::roots(builder.parquet_schema(), c.iter().copied());
        builder = builder.with_projection(mask);
    }
    let stream = builder.build().map_err(parquet_err(path))?;
    stream.try_collect().await.map_err(parquet_err(path))
}

/// The `(data file path, position)` pairs of a position-delete file.
pub async fn read_position_deletes(
    file_io: &FileIO,
    path: &str,
    size: Option<u64>,
) -> Result<Vec<(String, i64)>> {
    let bad = || {
        Error::new(
            ErrorKind::InvalidData,
            format!("{path} is not a position-delete file (file_path, pos)"),
        )
    };
    let mut out = Vec::new();
    for b in read_parquet(file_io, path, Some(&[0, 1]), size).await? {
        let paths = b.column(0).as_any().downcast_ref::<StringArray>();
        let pos = b.column(1).as_any().downcast_ref::<Int64Array>();
        let (Some(paths), Some(pos)) = (paths, pos) else {
            return Err(bad());
        };
        for i in 0..b.num_rows() {
            out.push((paths.value(i).to_string(), pos.value(i)));
        }
    }
    Ok(out)
}
