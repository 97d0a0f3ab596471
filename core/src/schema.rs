//! Table identity and schemas: ordered typed columns, primary key, version.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Fields, Schema, TimeUnit};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::value::{MAX_DECIMAL_PRECISION, Value};

/// A source table: database (schema) and table name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TableId {
    pub database: String,
    pub table: String,
}

impl TableId {
    pub fn new(database: impl Into<String>, table: impl Into<String>) -> Self {
        TableId {
            database: database.into(),
            table: table.into(),
        }
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.database, self.table)
    }
}

/// The logical type of a column. It keeps what a sink needs to choose its own
/// type (signedness, widths, precision, fractional-second precision, labels).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ColumnType {
    Bool,
    Int8,
    Int16,
    Int24,
    Int32,
    Int64,
    UInt8,
    UInt16,
    UInt24,
    UInt32,
    UInt64,
    Float,
    Double,
    Decimal {
        precision: u8,
        scale: u8,
    },
    /// CHAR/VARCHAR/TEXT, decoded to UTF-8; `max_len` in characters if known.
    String {
        max_len: Option<u32>,
    },
    /// BINARY/VARBINARY/BLOB; `max_len` in bytes if known.
    Bytes {
        max_len: Option<u32>,
    },
    Date,
    /// `fsp`: fractional-second digits (0–6).
    Time {
        fsp: u8,
    },
    DateTime {
        fsp: u8,
    },
    Timestamp {
        fsp: u8,
    },
    Year,
    /// BIT(width), width 1–64.
    Bit {
        width: u8,
    },
    Enum {
        labels: Vec<String>,
    },
    Set {
        labels: Vec<String>,
    },
    Json,
}

/// Arrow's canonical extension name for JSON text columns.
pub const ARROW_JSON_EXTENSION: &str = "arrow.json";

impl ColumnType {
    /// The Arrow type of this column in a [`crate::ChangeBatch`].
    pub fn arrow_type(&self) -> DataType {
        use ColumnType as C;
        match self {
            C::Bool => DataType::Boolean,
            C::Int8 => DataType::Int8,
            C::Int16 => DataType::Int16,
            C::Int24 | C::Int32 => DataType::Int32,
            C::Int64 => DataType::Int64,
            C::UInt8 => DataType::UInt8,
            C::UInt16 | C::Year => DataType::UInt16,
            C::UInt24 | C::UInt32 => DataType::UInt32,
            C::UInt64 | C::Bit { .. } => DataType::UInt64,
            C::Float => DataType::Float32,
            C::Double => DataType::Float64,
            C::Decimal { precision, scale } if *precision <= 38 => {
                DataType::Decimal128(*precision, *scale as i8)
            }
            C::Decimal { precision, scale } => DataType::Decimal256(*precision, *scale as i8),
            C::String { .. } | C::Enum { .. } | C::Set { .. } | C::Json => DataType::Utf8,
            C::Bytes { .. } => DataType::Binary,
            C::Date => DataType::Date32,
            C::Time { .. } => DataType::Duration(TimeUnit::Microsecond),
            C::DateTime { .. } => DataType::Timestamp(TimeUnit::Microsecond, None),
            C::Timestamp { .. } => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        }
    }

    /// Whether `self` can be widened to `to` without loss (the changes sinks
    /// may apply in place: int→wider int, float→double, decimal precision up).
    pub fn widens_to(&self, to: &ColumnType) -> bool {
        use ColumnType as C;
        let signed_rank = |t: &ColumnType| match t {
            C::Int8 => Some(1),
            C::Int16 => Some(2),
            C::Int24 => Some(3),
            C::Int32 => Some(4),
            C::Int64 => Some(5),
            _ => None,
        };
        let unsigned_rank = |t: &ColumnType| match t {
            C::UInt8 => Some(1),
            C::UInt16 => Some(2),
            C::UInt24 => Some(3),
            C::UInt32 => Some(4),
            C::UInt64 => Some(5),
            _ => None,
        };
        match (self, to) {
            (a, b) if a == b => true,
            (C::Float, C::Double) => true,
            (
                C::Decimal {
                    precision: p1,
                    scale: s1,
                },
                C::Decimal {
                    precision: p2,
                    scale: s2,
                },
            ) => s1 == s2 && p2 >= p1,
            (C::String { max_len: a }, C::String { max_len: b })
            | (C::Bytes { max_len: a }, C::Bytes { max_len: b }) => match (a, b) {
                (_, None) => true,
                (Some(a), Some(b)) => b >= a,
                (None, Some(_)) => false,
            },
            _ => match (
                signed_rank(self),
                signed_rank(to),
                unsigned_rank(self),
                unsigned_rank(to),
            ) {
                (Some(a), Some(b), _, _) => b >= a,
                (_, _, Some(a), Some(b)) => b >= a,
                // An unsigned value fits a signed type of the next rank up.
                (_, Some(b), Some(a), _) => b > a,
                _ => false,
            },
        }
    }

    fn validate(&self) -> Result<()> {
        let problem = match self {
            ColumnType::Decimal { precision, scale }
                if *precision == 0 || *precision > MAX_DECIMAL_PRECISION || scale > precision =>
            {
                format!(
                    "DECIMAL({precision},{scale}) is out of range (precision 1–76, scale ≤ precision)"
                )
            }
            ColumnType::Bit { width } if *width == 0 || *width > 64 => {
                format!("BIT({width}) is out of range 1–64")
            }
            ColumnType::Time { fsp }
            | ColumnType::DateTime { fsp }
            | ColumnType::Timestamp { fsp }
                if *fsp > 6 =>
            {
                format!("fractional-second precision {fsp} is over 6")
            }
            _ => return Ok(()),
        };
        Err(Error::new(ErrorKind::SchemaMismatch, problem))
    }
}

/// A column default: a typed literal, or an expression such as CURRENT_TIMESTAMP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DefaultValue {
    Literal(Value),
    Expression(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    pub data_type: ColumnType,
    pub nullable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<DefaultValue>,
    /// The source's own type text (e.g. `mediumint(8) unsigned`), for sinks
    /// that map types more finely and for error messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_type: Option<String>,
}

impl Column {
    pub fn new(name: impl Into<String>, data_type: ColumnType, nullable: bool) -> Self {
        Column {
            name: name.into(),
            data_type,
            nullable,
            default: None,
            source_type: None,
        }
    }

    pub fn with_default(mut self, default: DefaultValue) -> Self {
        self.default = Some(default);
        self
    }

    pub fn arrow_field(&self) -> Field {
        let field = Field::new(&self.name, self.data_type.arrow_type(), self.nullable);
        if self.data_type == ColumnType::Json {
            let meta = HashMap::from([(
                "ARROW:extension:name".to_string(),
                ARROW_JSON_EXTENSION.to_string(),
            )]);
            field.with_metadata(meta)
        } else {
            field
        }
    }
}

/// A table's schema at one version: ordered columns and the primary key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableSchema {
    pub table: TableId,
    pub columns: Vec<Column>,
    /// Indices into `columns`, in key order. Empty: the table has no key.
    pub primary_key: Vec<usize>,
    /// Increases with every change the source sees to this table.
    pub version: u64,
}

impl TableSchema {
    /// Builds and validates a schema: unique column names, key columns that
    /// exist, are unique and are not nullable, valid type parameters.
    pub fn new(
        table: TableId,
        columns: Vec<Column>,
        primary_key: &[&str],
        version: u64,
    ) -> Result<Self> {
        let mismatch =
            |msg: String| Error::new(ErrorKind::SchemaMismatch, msg).with_context("table", &table);
        let mut seen = HashMap::new();
        for (i, c) in columns.iter().enumerate() {
            if seen.insert(c.name.as_str(), i).is_some() {
                return Err(mismatch(format!("column {:?} appears twice", c.name)));
            }
            c.data_type
                .validate()
                .map_err(|e| e.with_context("column", &c.name))?;
        }
        let mut key = Vec::with_capacity(primary_key.len());
        for name in primary_key {
            let i = *seen
                .get(name)
                .ok_or_else(|| mismatch(format!("primary key column {name:?} is not a column")))?;
            if key.contains(&i) {
                return Err(mismatch(format!("primary key names {name:?} twice")));
            }
            if columns[i].nullable {
                return Err(mismatch(format!("primary key column {name:?} is nullable")));
            }
            key.push(i);
        }
        Ok(TableSchema {
            table,
            columns,
            primary_key: key,
            version,
        })
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    pub fn primary_key_names(&self) -> Vec<&str> {
        self.primary_key
            .iter()
            .map(|&i| self.columns[i].name.as_str())
            .collect()
    }

    /// The Arrow schema of one row image (the columns, in order).
    pub fn arrow_schema(&self) -> Arc<Schema> {
        Arc::new(Schema::new(self.arrow_fields()))
    }

    pub fn arrow_fields(&self) -> Fields {
        self.columns.iter().map(Column::arrow_field).collect()
    }

    /// A stable 64-bit hash of the table id, columns and key (not the version):
    /// equal fingerprints mean the same shape, across processes and releases.
    pub fn fingerprint(&self) -> u64 {
        let canonical = serde_json::to_vec(&(&self.table, &self.columns, &self.primary_key))
            .expect("schemas always serialize");
        xxhash_rust::xxh3::xxh3_64(&canonical)
    }

    /// Column-level differences from `self` to `new`, in column order.
    pub fn diff(&self, new: &TableSchema) -> Vec<ColumnChange> {
        let mut changes = Vec::new();
        for old in &self.columns {
            match new.columns.iter().find(|c| c.name == old.name) {
                None => changes.push(ColumnChange::Dropped {
                    name: old.name.clone(),
                }),
                Some(c) if c != old => changes.push(ColumnChange::Modified {
                    before: old.clone(),
                    after: c.clone(),
                }),
                Some(_) => {}
            }
        }
        for (index, c) in new.columns.iter().enumerate() {
            if self.column_index(&c.name).is_none() {
                changes.push(ColumnChange::Added {
                    column: c.clone(),
                    index,
                });
            }
        }
        if self.primary_key_names() != new.primary_key_names() {
            changes.push(ColumnChange::PrimaryKeyChanged {
                before: self
                    .primary_key_names()
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                after: new
                    .primary_key_names()
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            });
        }
        changes
    }
}

/// One difference between two versions of a table schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum ColumnChange {
    Added {
        column: Column,
        index: usize,
    },
    Dropped {
        name: String,
    },
    /// Type, nullability, default or source type changed.
    Modified {
        before: Column,
        after: Column,
    },
    PrimaryKeyChanged {
        before: Vec<String>,
        after: Vec<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(version: u64, extra: Option<Column>) -> TableSchema {
        let mut cols = vec![
            Column::new("id", ColumnType::Int64, false),
            Column::new("name", ColumnType::String { max_len: Some(64) }, true),
            Column::new("score", ColumnType::Int32, true),
        ];
        cols.extend(extra);
        TableSchema::new(TableId::new("shop", "users"), cols, &["id"], version).unwrap()
    }

    #[test]
    fn validation_rejects_bad_schemas() {
        let t = TableId::new("d", "t");
        let id = Column::new("id", ColumnType::Int64, false);
        let dup = TableSchema::new(t.clone(), vec![id.clone(), id.clone()], &["id"], 1);
        assert!(dup.unwrap_err().to_string().contains("appears twice"));
        let missing = TableSchema::new(t.clone(), vec![id.clone()], &["nope"], 1);
        assert!(missing.unwrap_err().to_string().contains("not a column"));
        let nullable = Column::new("k", ColumnType::Int32, true);
        let e = TableSchema::new(t.clone(), vec![nullable], &["k"], 1).unwrap_err();
        assert!(e.to_string().contains("nullable"));
        let dec = Column::new(
            "d",
            ColumnType::Decimal {
                precision: 80,
                scale: 2,
            },
            true,
        );
        assert!(TableSchema::new(t, vec![id, dec], &["id"], 1).is_err());
    }

    #[test]
    fn fingerprint_ignores_version_but_not_shape() {
        let a = users(1, None);
        assert_eq!(a.fingerprint(), users(7, None).fingerprint());
        let b = users(2, Some(Column::new("email", ColumnType::Json, true)));
        assert_ne!(a.fingerprint(), b.fingerprint());
        // Stable across processes and releases: pinned value.
        assert_eq!(
            a.fingerprint(),
            15_894_543_021_057_877_984,
            "pinned fingerprint changed"
        );
    }

    #[test]
    fn diff_reports_adds_drops_and_modifications() {
        let a = users(1, None);
        let mut b = users(2, Some(Column::new("email", ColumnType::Json, true)));
        b.columns[2].data_type = ColumnType::Int64;
        b.columns.remove(1);
        let changes = a.diff(&b);
        assert_eq!(changes.len(), 3, "{changes:?}");
        assert!(matches!(&changes[0], ColumnChange::Dropped { name } if name == "name"));
        assert!(
            matches!(&changes[1], ColumnChange::Modified { after, .. } if after.data_type == ColumnType::Int64)
        );
        assert!(matches!(&changes[2], ColumnChange::Added { index: 2, .. }));
    }

    #[test]
    fn widening_rules() {
        use ColumnType as C;
        assert!(C::Int32.widens_to(&C::Int64));
        assert!(!C::Int64.widens_to(&C::Int32));
        assert!(C::UInt32.widens_to(&C::Int64));
        assert!(!C::UInt64.widens_to(&C::Int64));
        assert!(C::Float.widens_to(&C::Double));
        let d = |p, s| C::Decimal {
            precision: p,
            scale: s,
        };
        assert!(d(10, 2).widens_to(&d(12, 2)));
        assert!(!d(10, 2).widens_to(&d(12, 3)));
        assert!(!C::Int32.widens_to(&C::String { max_len: None }));
    }

    #[test]
    fn arrow_types_follow_the_documented_mapping() {
        use ColumnType as C;
        assert_eq!(
            C::Decimal {
                precision: 38,
                scale: 10
            }
            .arrow_type(),
            DataType::Decimal128(38, 10)
        );
        assert_eq!(
            C::Decimal {
                precision: 65,
                scale: 30
            }
            .arrow_type(),
            DataType::Decimal256(65, 30)
        );
        assert_eq!(
            C::Time { fsp: 6 }.arrow_type(),
            DataType::Duration(TimeUnit::Microsecond)
        );
        let json = Column::new("j", C::Json, true).arrow_field();
        assert_eq!(json.metadata()["ARROW:extension:name"], "arrow.json");
    }
}
