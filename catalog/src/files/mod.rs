//! The files a table's operations write: Parquet data files, position
//! deletes with the spec's reserved `file_path`/`pos` columns (sorted, as
//! the spec requires), equality deletes on a table's key columns, and key
//! sidecars ([`key_sidecar`]).

pub mod key_sidecar;
pub mod read;

pub use key_sidecar::{FileKeys, KeyEncoder, canonical_key_type, sidecar_path, write_key_sidecar};
pub use read::{project_to_arrow, project_to_schema, read_parquet, read_position_deletes};

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema as ArrowSchema};
use iceberg::io::FileIO;
use iceberg::spec::{DataContentType, DataFile, DataFileBuilder, DataFileFormat, Struct};
use iceberg::writer::CurrentFileStatus;
use iceberg::writer::file_writer::{
    FileWriter, FileWriterBuilder, ParquetWriter, ParquetWriterBuilder,
};
use parquet::file::properties::WriterProperties;
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

/// A Parquet file being written through iceberg-rust's `ParquetWriter`, so
/// every file carries Iceberg's column statistics (value, null and NaN
/// counts, lower/upper bounds, column sizes, split offsets) for readers to
/// prune by. The Arrow fields must carry their Iceberg field ids.
pub struct ParquetFile {
    writer: ParquetWriter,
}

impl ParquetFile {
    /// Starts a file at `path` for batches of `schema` (row groups of at
    /// most `row_group_rows` rows; the Parquet default when None).
    pub async fn create(
        file_io: &FileIO,
        path: &str,
        schema: &ArrowSchema,
        row_group_rows: Option<usize>,
    ) -> Result<ParquetFile> {
        let iceberg_schema = iceberg::arrow::arrow_schema_to_schema(schema)
            .map_err(|e| iceberg_err(format!("the Iceberg schema of {path}"), e))?;
        let mut props = WriterProperties::builder();
        if let Some(n) = row_group_rows {
            props = props.set_max_row_group_row_count(Some(n.max(1)));
        }
        let output = file_io
            .new_output(path)
            .map_err(|e| iceberg_err("file output", e))?;
        let writer = ParquetWriterBuilder::new(props.build(), Arc::new(iceberg_schema))
            .build(output)
            .await
            .map_err(|e| iceberg_err(format!("writing {path}"), e))?;
        Ok(ParquetFile { writer })
    }

    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let path = self.writer.current_file_path();
        self.writer
            .write(batch)
            .await
            .map_err(|e| iceberg_err(format!("writing {path}"), e))
    }

    /// Bytes written so far (flushed plus buffered), to roll files at a size.
    pub fn written_bytes(&self) -> usize {
        self.writer.current_written_size()
    }

    pub fn rows(&self) -> usize {
        self.writer.current_row_num()
    }

    /// Finishes the file: its manifest entry with statistics; None when no
    /// row was written (then no file is left behind).
    pub async fn finish(
        self,
        content: DataContentType,
        partition: Struct,
        partition_spec_id: i32,
    ) -> Result<Option<DataFile>> {
        let path = self.writer.current_file_path();
        let entry = self.entry(content, partition, partition_spec_id).await?;
        entry.map(|b| built(&path, &b)).transpose()
    }

    async fn entry(
        self,
        content: DataContentType,
        partition: Struct,
        partition_spec_id: i32,
    ) -> Result<Option<DataFileBuilder>> {
        let path = self.writer.current_file_path();
        let mut builders = self
            .writer
            .close()
            .await
            .map_err(|e| iceberg_err(format!("finishing {path}"), e))?;
        Ok(builders.pop().map(|mut b| {
            b.content(content)
                .partition(partition)
                .partition_spec_id(partition_spec_id);
            b
        }))
    }
}

/// Writes `batch` as one Parquet file of `content`; an empty batch still
/// gives a (header-only) file, as the commit protocol names it.
async fn write_one(
    file_io: &FileIO,
    path: &str,
    batch: &RecordBatch,
    row_group_rows: Option<usize>,
    content: DataContentType,
    partition: Struct,
    partition_spec_id: i32,
) -> Result<DataFileBuilder> {
    if batch.num_rows() == 0 {
        return empty_file(file_io, path, batch, content, partition, partition_spec_id).await;
    }
    let mut file = ParquetFile::create(file_io, path, &batch.schema(), row_group_rows).await?;
    file.write(batch).await?;
    file.entry(content, partition, partition_spec_id)
        .await?
        .ok_or_else(|| Error::new(ErrorKind::Unexpected, format!("{path}: no rows written")))
}

/// A Parquet file of no rows (iceberg-rust's writer leaves none behind).
async fn empty_file(
    file_io: &FileIO,
    path: &str,
    batch: &RecordBatch,
    content: DataContentType,
    partition: Struct,
    partition_spec_id: i32,
) -> Result<DataFileBuilder> {
    let mut buf = Vec::new();
    let parquet = |e: parquet::errors::ParquetError| {
        Error::new(ErrorKind::Io, "writing Parquet").with_source(e)
    };
    let w =
        parquet::arrow::ArrowWriter::try_new(&mut buf, batch.schema(), None).map_err(parquet)?;
    w.close().map_err(parquet)?;
    let size = buf.len() as u64;
    file_io
        .new_output(path)
        .map_err(|e| iceberg_err("file output", e))?
        .write(buf.into())
        .await
        .map_err(|e| iceberg_err(format!("writing {path}"), e))?;
    let mut builder = DataFileBuilder::default();
    builder
        .content(content)
        .file_path(path.to_string())
        .file_format(DataFileFormat::Parquet)
        .record_count(0)
        .file_size_in_bytes(size)
        .partition(partition)
        .partition_spec_id(partition_spec_id);
    Ok(builder)
}

fn built(what: &str, b: &DataFileBuilder) -> Result<DataFile> {
    b.build()
        .map_err(|e| Error::new(ErrorKind::Unexpected, format!("{what}: {e}")))
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
    let content = DataContentType::Data;
    let b = write_one(
        file_io,
        path,
        batch,
        row_group_rows,
        content,
        partition,
        partition_spec_id,
    )
    .await?;
    built("data file", &b)
}

/// The Arrow schema of position-delete files (the spec's reserved fields).
pub fn position_delete_schema() -> Arc<ArrowSchema> {
    Arc::new(ArrowSchema::new(vec![
        field("file_path", DataType::Utf8, FILE_PATH_FIELD_ID),
        field("pos", DataType::Int64, POS_FIELD_ID),
    ]))
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
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            deletes.iter().map(|(p, _)| p.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(
            deletes.iter().map(|(_, pos)| *pos),
        )),
    ];
    let batch = RecordBatch::try_new(position_delete_schema(), columns)?;
    // The file_path bounds in the statistics tell readers which data files
    // these deletes can apply to.
    let content = DataContentType::PositionDeletes;
    let b = write_one(
        file_io,
        path,
        &batch,
        None,
        content,
        partition,
        partition_spec_id,
    )
    .await?;
    built("position delete file", &b)
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
    let content = DataContentType::EqualityDeletes;
    let mut b = write_one(
        file_io,
        path,
        batch,
        None,
        content,
        partition,
        partition_spec_id,
    )
    .await?;
    b.equality_ids(Some(equality_ids));
    built("equality delete file", &b)
}
