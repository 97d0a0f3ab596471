//! A reader's cost of a full scan, estimated from the current snapshot's
//! summary totals (no manifest read): every data file, delete file and
//! manifest costs `open_file_cost` bytes on top of its size (the idea of
//! Iceberg's `read.split.open-file-cost`), against the same live rows
//! compacted into files of the target size under one manifest. The ratio
//! is the table's read amplification; past the policy's bound compaction is
//! due, however few files that is — a small table read in milliseconds
//! feels every small file, a large one hardly notices a few.

use crate::MaintenanceConfig;
use tributary_catalog::CatalogTable;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReadCost {
    pub data_files: u64,
    pub delete_files: u64,
    pub manifests: u64,
    /// Data and delete bytes.
    pub bytes: u64,
    /// Live rows' share of the data rows (position deletes subtracted;
    /// equality deletes are not counted, their rows are unknown here).
    pub live_fraction: f64,
    pub open_file_cost: u64,
    pub target_file_bytes: u64,
}

impl ReadCost {
    /// The estimate for the current snapshot of `table`, which has
    /// `manifests` manifests.
    pub fn of(table: &CatalogTable, manifests: usize, config: &MaintenanceConfig) -> ReadCost {
        let summary = table
            .metadata
            .current_snapshot()
            .map(|s| &s.summary().additional_properties);
        let total = |key: &str| -> u64 {
            summary
                .and_then(|p| p.get(key))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let records = total("total-records");
        let deleted = total("total-position-deletes").min(records);
        ReadCost {
            data_files: total("total-data-files"),
            delete_files: total("total-delete-files"),
            manifests: manifests as u64,
            bytes: total("total-files-size"),
            live_fraction: if records == 0 {
                1.0
            } else {
                (records - deleted) as f64 / records as f64
            },
            open_file_cost: config.open_file_cost.max(1),
            target_file_bytes: config.target_file_bytes.max(1),
        }
    }

    /// Estimated bytes-equivalent of a full scan as the table is.
    pub fn scan(&self) -> f64 {
        ((self.data_files + self.delete_files + self.manifests) * self.open_file_cost) as f64
            + self.bytes as f64
    }

    /// The same estimate for the live rows compacted: files of the target
    /// size, no delete file, one manifest.
    pub fn compacted(&self) -> f64 {
        let live = self.bytes as f64 * self.live_fraction;
        let files = (live / self.target_file_bytes as f64).ceil().max(1.0);
        (files + 1.0) * self.open_file_cost as f64 + live
    }

    /// How many times the compacted table's scan cost this one costs (1.0
    /// for an empty table).
    pub fn amplification(&self) -> f64 {
        if self.data_files == 0 {
            return 1.0;
        }
        self.scan() / self.compacted()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(data_files: u64, delete_files: u64, manifests: u64, bytes: u64) -> ReadCost {
        ReadCost {
            data_files,
            delete_files,
            manifests,
            bytes,
            live_fraction: 1.0,
            open_file_cost: 1 << 20,
            target_file_bytes: 128 << 20,
        }
    }

    #[test]
    fn small_files_weigh_on_a_small_table_and_hardly_on_a_large_one() {
        // One file under one manifest: nothing to gain.
        assert_eq!(cost(1, 0, 1, 500_000).amplification(), 1.0);
        // A 500 KB table after one commit (a data file, a delete file, two
        // manifests): well past 1.5.
        assert!(cost(2, 1, 3, 510_000).amplification() > 2.0);
        // 1 GB in 8 target-size files, the same four small objects more.
        let large = cost(9, 1, 4, 1 << 30).amplification();
        assert!((1.0..1.01).contains(&large), "{large}");
        // Deleted rows count as cost: the compacted table holds only live rows.
        let half = ReadCost {
            live_fraction: 0.5,
            ..cost(8, 0, 1, 1 << 30)
        };
        assert!(half.amplification() > 1.9, "{}", half.amplification());
        assert_eq!(cost(0, 0, 0, 0).amplification(), 1.0);
    }
}
