//! The writer's settings (`UpsertConfig`, `DeleteMode`) and their checks.

use std::time::Duration;

use tributary_core::{Error, Result, TableSchema};

use crate::partition::PartitionField;
use crate::types::ColumnPolicy;

/// How replaced and deleted rows are removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteMode {
    /// Position deletes for the exact rows (default; every reader reads them).
    #[default]
    Position,
    /// Flink-compatible equality deletes on the key, written only for keys
    /// the bloom filters say may exist already; new keys get none.
    Equality,
}

/// Writer settings. Sizes are in-memory Arrow bytes (Parquet files come out
/// smaller).
#[derive(Debug, Clone)]
pub struct UpsertConfig {
    pub delete_mode: DeleteMode,
    /// A commit is due this long after the previous one (default 10 s)…
    pub commit_interval: Duration,
    /// …or once this many changes are buffered (default 1 M)…
    pub commit_rows: usize,
    /// …or once this many bytes were buffered or spilled (default 512 MiB).
    pub commit_bytes: usize,
    /// Buffered rows are written out as a data file at this size (default
    /// 128 MiB): the bound on buffered row memory, and the data file size.
    pub target_file_bytes: usize,
    /// Parquet row-group size in rows (default 1 Mi).
    pub row_group_rows: usize,
    /// Source columns Iceberg cannot follow (default: fail).
    pub column_policy: ColumnPolicy,
    /// With nothing to write, a due commit still records the advanced source
    /// position, at most this often (default 5 min), so an idle table's
    /// position never falls behind the source's retention (purged binlogs).
    pub idle_commit_interval: Duration,
    /// Partition spec of a table the writer creates (default: none). An
    /// existing table keeps its spec; a different one here is an error.
    pub partition_by: Vec<PartitionField>,
    /// Copy-on-write budget, in data-file (Parquet) bytes: committed files
    /// a commit deletes rows from are written again without those rows
    /// instead of getting position deletes, smallest first, while their
    /// sizes add up to at most this (default 8 MiB; 0 = always
    /// merge-on-read). Position mode only. Keeps small tables as cheap to
    /// read as compacted ones at every commit (see `copy_on_write`).
    pub copy_on_write_bytes: usize,
}

impl Default for UpsertConfig {
    fn default() -> Self {
        UpsertConfig {
            delete_mode: DeleteMode::Position,
            commit_interval: Duration::from_secs(10),
            commit_rows: 1 << 20,
            commit_bytes: 512 << 20,
            target_file_bytes: 128 << 20,
            row_group_rows: 1 << 20,
            column_policy: ColumnPolicy::Fail,
            idle_commit_interval: Duration::from_secs(300),
            partition_by: Vec::new(),
            copy_on_write_bytes: 8 << 20,
        }
    }
}

impl UpsertConfig {
    /// Checks the settings before anything connects.
    pub fn validate(&self) -> Result<()> {
        let zero = [
            ("commit_interval", self.commit_interval.is_zero()),
            ("commit_rows", self.commit_rows == 0),
            ("commit_bytes", self.commit_bytes == 0),
            ("target_file_bytes", self.target_file_bytes == 0),
            ("row_group_rows", self.row_group_rows == 0),
        ];
        match zero.iter().find(|(_, z)| *z) {
            Some((name, _)) => Err(Error::invalid_config(format!(
                "iceberg sink: {name} must be greater than zero"
            ))),
            None => Ok(()),
        }
    }

    /// Checks the partition spec against the source table: the columns
    /// exist, and in equality mode they are key columns (an equality delete
    /// applies only in its own partition, so a row must never change
    /// partition without changing key).
    pub fn validate_for(&self, source: &TableSchema) -> Result<()> {
        self.validate()?;
        let names: Vec<&str> = self
            .partition_by
            .iter()
            .map(|f| f.column.as_str())
            .collect();
        check_partition_columns(&names, source, self.delete_mode, "partition_by")
    }
}

/// See `UpsertConfig::validate_for`; `what` names the spec in errors.
pub(super) fn check_partition_columns(
    columns: &[&str],
    source: &TableSchema,
    mode: DeleteMode,
    what: &str,
) -> Result<()> {
    for &c in columns {
        let Some(i) = source.columns.iter().position(|col| col.name == c) else {
            return Err(Error::invalid_config(format!(
                "{what}: {} has no column {c:?}",
                source.table
            )));
        };
        if mode == DeleteMode::Equality && !source.primary_key.contains(&i) {
            return Err(Error::invalid_config(format!(
                "{what}: equality delete mode needs every partition column to be a key column, \
                 and {c:?} is not in the primary key of {}: an update of {c} would move the row \
                 to another partition, where the equality delete of its old row does not apply. \
                 Partition by key columns only, or use delete_mode = \"position\"",
                source.table
            )));
        }
    }
    Ok(())
}
