//! Partitioned tables: the configured partition spec, and the partition of
//! each row the writer writes.
//!
//! Every data file holds one partition. Deletes follow the row they delete:
//! a position delete goes to the partition (and spec) of the data file it
//! points at, so an update that moves a row to another partition writes its
//! new row in the new partition and the delete in the old one. Equality
//! deletes apply only within their own partition, so equality mode needs
//! every partition source column to be a key column: then a key's partition
//! never changes and the delete computed from the key lands where the row is.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StructArray};
use arrow_schema::{Field, Fields};
use iceberg::arrow::{arrow_struct_to_literal, type_to_arrow_type};
use iceberg::spec::{
    Literal, PartitionSpec, Schema, Struct, StructType, Transform, Type, UnboundPartitionSpec,
};
use iceberg::transform::{BoxedTransformFunction, create_transform_function};
use tributary_core::{Error, ErrorKind, Result};

/// One field of a partition spec: an Iceberg transform of a source column.
/// Written as `column`, `identity(column)`, `year(column)`, `month(column)`,
/// `day(column)`, `hour(column)`, `bucket(N, column)` or
/// `truncate(W, column)` (Spark's `years`/`months`/`days`/`hours` too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionField {
    pub column: String,
    pub transform: Transform,
}

impl FromStr for PartitionField {
    type Err = Error;

    fn from_str(text: &str) -> Result<PartitionField> {
        let bad = || {
            Error::invalid_config(format!(
                "partition field {text:?}: expected `column`, `day(column)` (or year, month, \
                 hour, identity), `bucket(N, column)` or `truncate(W, column)`"
            ))
        };
        let text = text.trim();
        let Some((name, rest)) = text.split_once('(') else {
            return plain_column(text).map(|column| PartitionField {
                column,
                transform: Transform::Identity,
            });
        };
        let args = rest.strip_suffix(')').ok_or_else(bad)?;
        let args: Vec<&str> = args.split(',').map(str::trim).collect();
        let number = |s: &str| s.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(bad);
        let (transform, column) = match (name.trim().to_ascii_lowercase().as_str(), &args[..]) {
            ("identity", [c]) => (Transform::Identity, c),
            ("year" | "years", [c]) => (Transform::Year, c),
            ("month" | "months", [c]) => (Transform::Month, c),
            ("day" | "days", [c]) => (Transform::Day, c),
            ("hour" | "hours", [c]) => (Transform::Hour, c),
            ("bucket", [n, c]) => (Transform::Bucket(number(n)?), c),
            ("truncate", [w, c]) => (Transform::Truncate(number(w)?), c),
            _ => return Err(bad()),
        };
        Ok(PartitionField {
            column: plain_column(column).map_err(|_| bad())?,
            transform,
        })
    }
}

fn plain_column(text: &str) -> Result<String> {
    let ok = !text.is_empty() && !text.contains(['(', ')', ',', ' ']);
    ok.then(|| text.to_string()).ok_or_else(|| {
        Error::invalid_config(format!("partition field {text:?} is not a column name"))
    })
}

impl fmt::Display for PartitionField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.transform {
            Transform::Identity => write!(f, "{}", self.column),
            Transform::Bucket(n) => write!(f, "bucket({n}, {})", self.column),
            Transform::Truncate(w) => write!(f, "truncate({w}, {})", self.column),
            t => write!(f, "{t}({})", self.column),
        }
    }
}

impl PartitionField {
    /// The partition field's name, as Spark and pyiceberg name them.
    fn partition_name(&self) -> String {
        let c = &self.column;
        match self.transform {
            Transform::Identity => c.clone(),
            Transform::Bucket(_) => format!("{c}_bucket"),
            Transform::Truncate(_) => format!("{c}_trunc"),
            t => format!("{c}_{t}"),
        }
    }
}

/// The spec of `fields` over `schema`, checked: columns exist and each
/// transform applies to its column's type.
pub fn unbound_spec(fields: &[PartitionField], schema: &Schema) -> Result<UnboundPartitionSpec> {
    let mut builder = UnboundPartitionSpec::builder();
    for f in fields {
        let source = schema.field_by_name(&f.column).ok_or_else(|| {
            Error::invalid_config(format!(
                "partition field {f}: the table has no column {:?}",
                f.column
            ))
        })?;
        builder = builder
            .add_partition_field(source.id, f.partition_name(), f.transform)
            .map_err(|e| Error::invalid_config(format!("partition field {f}: {e}")))?;
    }
    let spec = builder.build();
    spec.clone()
        .bind(Arc::new(schema.clone()))
        .map_err(|e| Error::invalid_config(format!("partition spec: {}", e.message())))?;
    Ok(spec)
}

/// The fields of a bound spec, in the configuration's terms.
pub fn spec_fields(spec: &PartitionSpec, schema: &Schema) -> Vec<PartitionField> {
    spec.fields()
        .iter()
        .map(|f| PartitionField {
            column: schema
                .name_by_field_id(f.source_id)
                .unwrap_or("?")
                .to_string(),
            transform: f.transform,
        })
        .collect()
}

/// Computes the partition of rows of batches whose Arrow fields carry
/// Iceberg field ids (data files, or the key columns of equality deletes).
pub struct Partitioner {
    spec_id: i32,
    /// (source field id, transform) per partition field.
    fields: Vec<(i32, BoxedTransformFunction)>,
    partition_type: StructType,
    arrow_fields: Fields,
}

impl Partitioner {
    pub fn new(spec: &PartitionSpec, schema: &Schema) -> Result<Partitioner> {
        let err = |e: iceberg::Error| {
            Error::new(ErrorKind::InvalidConfig, "partition spec").with_source(e)
        };
        let partition_type = spec.partition_type(schema).map_err(err)?;
        let arrow_fields = match type_to_arrow_type(&Type::Struct(partition_type.clone())) {
            Ok(arrow_schema::DataType::Struct(f)) => f,
            Ok(_) => unreachable!("a struct type maps to an Arrow struct"),
            Err(e) => return Err(err(e)),
        };
        let fields = spec
            .fields()
            .iter()
            .map(|f| Ok((f.source_id, create_transform_function(&f.transform)?)))
            .collect::<iceberg::Result<_>>()
            .map_err(err)?;
        Ok(Partitioner {
            spec_id: spec.spec_id(),
            fields,
            partition_type,
            arrow_fields,
        })
    }

    pub fn spec_id(&self) -> i32 {
        self.spec_id
    }

    pub fn is_unpartitioned(&self) -> bool {
        self.fields.is_empty()
    }

    /// The rows of `batch` grouped by partition (row indices ascending).
    pub fn group(&self, batch: &RecordBatch) -> Result<Vec<(Struct, Vec<u32>)>> {
        if self.is_unpartitioned() {
            return Ok(vec![(
                Struct::empty(),
                (0..batch.num_rows() as u32).collect(),
            )]);
        }
        let mut groups: HashMap<Struct, Vec<u32>> = HashMap::new();
        let mut order = Vec::new();
        for (row, p) in self.partitions(batch)?.into_iter().enumerate() {
            let rows = groups.entry(p.clone()).or_default();
            if rows.is_empty() {
                order.push(p);
            }
            rows.push(row as u32);
        }
        Ok(order
            .into_iter()
            .map(|p| {
                let rows = groups.remove(&p).unwrap_or_default();
                (p, rows)
            })
            .collect())
    }

    /// The partition of every row of `batch`.
    fn partitions(&self, batch: &RecordBatch) -> Result<Vec<Struct>> {
        let err = |e: iceberg::Error| {
            Error::new(ErrorKind::InvalidData, "computing partition values").with_source(e)
        };
        let mut values: Vec<ArrayRef> = Vec::with_capacity(self.fields.len());
        for (source_id, transform) in &self.fields {
            let column = column_with_field_id(batch, *source_id)?;
            values.push(transform.transform(column).map_err(err)?);
        }
        let array: ArrayRef = Arc::new(StructArray::try_new(
            self.arrow_fields.clone(),
            values,
            None,
        )?);
        arrow_struct_to_literal(&array, &self.partition_type)
            .map_err(err)?
            .into_iter()
            .map(|s| match s {
                Some(Literal::Struct(s)) => Ok(s),
                _ => Err(Error::new(
                    ErrorKind::Unexpected,
                    "partition value is not a struct",
                )),
            })
            .collect()
    }
}

fn column_with_field_id(batch: &RecordBatch, id: i32) -> Result<ArrayRef> {
    let has_id = |f: &Arc<Field>| {
        f.metadata()
            .get("PARQUET:field_id")
            .is_some_and(|v| v == &id.to_string())
    };
    let schema = batch.schema();
    let index = schema.fields().iter().position(has_id).ok_or_else(|| {
        Error::new(
            ErrorKind::Unexpected,
            format!("partition source field {id} is not among the written columns"),
        )
    })?;
    Ok(batch.column(index).clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_fields_parse_and_print_back() {
        for (text, column, transform) in [
            ("category", "category", Transform::Identity),
            ("identity(category)", "category", Transform::Identity),
            ("day(created_at)", "created_at", Transform::Day),
            ("days( created_at )", "created_at", Transform::Day),
            ("bucket(16, id)", "id", Transform::Bucket(16)),
            ("truncate(4,name)", "name", Transform::Truncate(4)),
            ("HOUR(ts)", "ts", Transform::Hour),
        ] {
            let f: PartitionField = text.parse().unwrap();
            assert_eq!(
                (f.column.as_str(), f.transform),
                (column, transform),
                "{text}"
            );
            assert_eq!(f.to_string().parse::<PartitionField>().unwrap(), f);
        }
        for bad in [
            "",
            "day()",
            "bucket(id)",
            "bucket(0, id)",
            "week(ts)",
            "day(ts",
            "a b",
        ] {
            let e = bad.parse::<PartitionField>().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{bad}");
        }
    }
}
