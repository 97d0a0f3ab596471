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

/// A data file's batch in the table's current `schema`: columns matched by
/// field id (a rename keeps its id), promoted types cast (int→long,
/// float→double, a wider decimal), columns added after the file was
/// written as nulls, columns dropped since left out. Files of one table
/// written before and after a schema change can then be merged.
pub fn project_to_schema(
    batch: &RecordBatch,
    schema: &iceberg::spec::Schema,
) -> Result<RecordBatch> {
    let target = iceberg::arrow::schema_to_arrow_schema(schema)
        .map_err(|e| iceberg_err("the table's Arrow schema", e))?;
    project_to_arrow(batch, &std::sync::Arc::new(target))
}

/// `project_to_schema` onto an Arrow schema whose fields carry Iceberg
/// field ids (`PARQUET:field_id`), such as a writer's data-file schema.
pub fn project_to_arrow(
    batch: &RecordBatch,
    target: &arrow_schema::SchemaRef,
) -> Result<RecordBatch> {
    let field_id = |f: &arrow_schema::Field| f.metadata().get("PARQUET:field_id").cloned();
    let mut columns = Vec::with_capacity(target.fields().len());
    for f in target.fields() {
        let found = batch
            .schema()
            .fields()
            .iter()
            .position(|c| field_id(c).is_some() && field_id(c) == field_id(f));
        let column = match found {
            Some(i) if batch.column(i).data_type() == f.data_type() => batch.column(i).clone(),
            Some(i) => arrow_cast::cast(batch.column(i), f.data_type()).map_err(|e| {
                Error::new(
                    ErrorKind::SchemaMismatch,
                    format!(
                        "column {} cannot be read as {}: {e}",
                        f.name(),
                        f.data_type()
                    ),
                )
            })?,
            None => arrow_array::new_null_array(f.data_type(), batch.num_rows()),
        };
        columns.push(column);
    }
    RecordBatch::try_new(target.clone(), columns).map_err(|e| {
        Error::new(
            ErrorKind::SchemaMismatch,
            format!("a data file's rows in the current schema: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use arrow_array::{Array, Int32Array, Int64Array};
    use arrow_schema::{DataType, Field, Schema};
    use iceberg::spec::{NestedField, PrimitiveType, Type};

    use super::*;

    #[test]
    fn a_file_from_before_a_widening_and_an_added_column_reads_in_the_current_schema() {
        let old = Schema::new(vec![
            Field::new("id", DataType::Int32, false).with_metadata(HashMap::from([(
                "PARQUET:field_id".to_string(),
                "1".to_string(),
            )])),
        ]);
        let batch =
            RecordBatch::try_new(Arc::new(old), vec![Arc::new(Int32Array::from(vec![1, 2]))])
                .unwrap();
        let now = iceberg::spec::Schema::builder()
            .with_fields(vec![
                Arc::new(NestedField::required(
                    1,
                    "id",
                    Type::Primitive(PrimitiveType::Long),
                )),
                Arc::new(NestedField::optional(
                    2,
                    "note",
                    Type::Primitive(PrimitiveType::String),
                )),
            ])
            .build()
            .unwrap();
        let out = project_to_schema(&batch, &now).unwrap();
        let id = out.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(id.values(), &[1, 2]);
        assert_eq!(out.column(1).null_count(), 2);
        assert_eq!(out.schema().field(1).name(), "note");
    }
}
