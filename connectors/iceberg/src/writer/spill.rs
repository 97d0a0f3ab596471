//! Spills: when the buffered rows reach `target_file_bytes`, every key's
//! final buffered row is written as a data file (one per partition) with its
//! key sidecar, before the commit that adds it; row memory stays bounded by
//! one file.

use std::sync::Arc;

use arrow_array::RecordBatch;
use iceberg::spec::{DataFile, Struct};
use tributary_catalog::FileKeys;
use tributary_core::Result;

use super::UpsertWriter;

/// A data file written before its commit.
pub(super) struct Spill {
    pub(super) file: DataFile,
    pub(super) summary: FileKeys,
    /// Encoded keys in row order.
    pub(super) keys: Vec<Vec<u8>>,
}

impl UpsertWriter {
    /// Writes the buffered rows (each key's final row) as data files, one per
    /// partition, that the next commit adds.
    pub(super) async fn spill(&mut self) -> Result<()> {
        if let Some((batch, keys)) = self.reduction.buffered_rows()? {
            let strict =
                RecordBatch::try_new(self.columns.file_schema.clone(), batch.columns().to_vec())?;
            let groups = self.partitioner.group(&strict)?;
            if let [(partition, _)] = &groups[..] {
                self.spill_file(strict, keys, partition.clone()).await?;
            } else {
                for (partition, rows) in groups {
                    let taken = arrow_select::take::take_record_batch(
                        &strict,
                        &arrow_array::UInt32Array::from(rows.clone()),
                    )?;
                    let keys = rows.iter().map(|&r| keys[r as usize].clone()).collect();
                    self.spill_file(taken, keys, partition).await?;
                }
            }
        }
        self.reduction.clear_buffer();
        Ok(())
    }

    /// Writes one spill file (rows of one partition, `keys` in row order)
    /// and its key-index sidecar; its keys now live there.
    async fn spill_file(
        &mut self,
        batch: RecordBatch,
        keys: Vec<Vec<u8>>,
        partition: Struct,
    ) -> Result<()> {
        let file = self.write_data_file(&batch, partition).await?;
        let path = Arc::<str>::from(file.file_path());
        let summary = FileKeys::build(path.clone(), keys.iter().map(Vec::as_slice))?;
        tributary_catalog::write_key_sidecar(&self.table.file_io, &summary).await?;
        self.reduction.spilled(self.spills.len(), &keys);
        self.spills.push(Spill {
            file,
            summary,
            keys,
        });
        Ok(())
    }

    /// Writes `batch` (file schema, strict; rows of one partition) as a
    /// Parquet data file.
    pub(super) async fn write_data_file(
        &self,
        batch: &RecordBatch,
        partition: Struct,
    ) -> Result<DataFile> {
        let path = self.new_file_path("data");
        let spec = self.partitioner.spec_id();
        let file_io = &self.table.file_io;
        let row_group = Some(self.config.row_group_rows);
        tributary_catalog::write_data_file(file_io, &path, batch, partition, spec, row_group).await
    }

    pub(super) fn new_file_path(&self, suffix: &str) -> String {
        format!(
            "{}/data/{}-{suffix}.parquet",
            self.table.metadata.location(),
            uuid::Uuid::new_v4()
        )
    }
}
