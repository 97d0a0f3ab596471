//! Offsets of a partitioned source that several workers read at once (the
//! relay's consumer group), and the rule that keeps their commits to one
//! table exactly-once.
//!
//! A table's committed checkpoint holds the next offset of every partition
//! (`kafka.offsets`, named after the relay, its only such source) and each
//! partition's watermark. A worker owns some partitions; its checkpoint
//! carries a [`PartitionClaim`] per table instead: for the partitions it
//! read, where its range starts and where it ends. A sink merges the claim
//! into the table's newest committed checkpoint inside its compare-and-swap
//! commit, and only if each claimed partition's committed offset is still
//! where the range starts. Otherwise another worker committed that
//! partition meanwhile (the group moved it, or this worker is a zombie):
//! the commit is refused as `Reassigned`, and the worker starts again from
//! the table. So an offset range is committed at most once, and in order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::position::Checkpoint;
use crate::schema::TableId;
use crate::{Error, ErrorKind, Result};

/// Table-scoped checkpoint property: the next offset per partition, JSON
/// `{"0": 42, …}`.
pub const OFFSETS_PROPERTY: &str = "kafka.offsets";
/// Table-scoped: per partition, the watermark (µs) it is complete to.
pub const PARTITION_WATERMARKS_PROPERTY: &str = "kafka.watermarks";
/// Table-scoped: a worker's [`PartitionClaim`] (JSON); never committed as is.
pub const CLAIM_PROPERTY: &str = "kafka.claim";

/// The next offset per partition that `checkpoint` records for `table`.
pub fn committed_offsets(checkpoint: &Checkpoint, table: &TableId) -> BTreeMap<i32, i64> {
    read_map(Some(checkpoint), table, OFFSETS_PROPERTY)
}

fn read_map(cp: Option<&Checkpoint>, table: &TableId, name: &str) -> BTreeMap<i32, i64> {
    cp.and_then(|c| c.properties.get(&Checkpoint::table_key(table, name)))
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default()
}

/// What one worker read of one table since its run started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PartitionClaim {
    /// Per partition read: the committed offset this run started at (absent:
    /// none was committed, it started at the beginning).
    pub from: BTreeMap<i32, i64>,
    /// Per partition read: the next offset to read.
    pub next: BTreeMap<i32, i64>,
    /// Per partition read: the watermark it is complete to, where known.
    #[serde(default)]
    pub watermarks: BTreeMap<i32, i64>,
    /// How many partitions the topic has (the table watermark needs all).
    pub partitions: usize,
}

impl PartitionClaim {
    /// `table`'s claim in a worker's checkpoint, if it is one.
    pub fn of(checkpoint: &Checkpoint, table: &TableId) -> Result<Option<PartitionClaim>> {
        checkpoint
            .properties
            .get(&Checkpoint::table_key(table, CLAIM_PROPERTY))
            .map(|v| serde_json::from_str(v).map_err(Error::from))
            .transpose()
    }

    /// The checkpoint to commit for `table` on top of `base` (the table's
    /// newest committed checkpoint): `ours` with the claimed partitions'
    /// offsets and watermarks merged into the base's. `expected` is where
    /// this worker's range of each partition starts — its own last commit in
    /// this run, else the claim's `from`. Fails `Reassigned` when a
    /// partition's committed offset moved away from there.
    pub fn merge(
        &self,
        ours: &Checkpoint,
        base: Option<&Checkpoint>,
        table: &TableId,
        expected: &BTreeMap<i32, i64>,
    ) -> Result<Checkpoint> {
        let mut offsets = read_map(base, table, OFFSETS_PROPERTY);
        let mut watermarks = read_map(base, table, PARTITION_WATERMARKS_PROPERTY);
        for (p, next) in &self.next {
            let start = expected.get(p).or(self.from.get(p));
            let committed = offsets.get(p);
            if committed != start {
                let show = |o: Option<&i64>| o.map_or("none".to_string(), |o| o.to_string());
                return Err(Error::new(
                    ErrorKind::Reassigned,
                    format!(
                        "partition {p} of {table}'s topic was committed up to offset {} by \
                         another worker since this one started it at {}: reading again from the \
                         table's commit",
                        show(committed),
                        show(start)
                    ),
                ));
            }
            offsets.insert(*p, *next);
        }
        for (p, w) in &self.watermarks {
            let w = watermarks.get(p).map_or(*w, |old| (*old).max(*w));
            watermarks.insert(*p, w);
        }
        let mut merged = ours.clone();
        let key = |name| Checkpoint::table_key(table, name);
        merged.properties.remove(&key(CLAIM_PROPERTY));
        merged
            .properties
            .insert(key(OFFSETS_PROPERTY), serde_json::to_string(&offsets)?);
        merged.properties.insert(
            key(PARTITION_WATERMARKS_PROPERTY),
            serde_json::to_string(&watermarks)?,
        );
        // Complete to a time only once every partition is.
        let all = (0..self.partitions as i32).all(|p| watermarks.contains_key(&p));
        let low = watermarks.values().min().copied().filter(|_| all);
        merged.watermark_micros = match (low, base.and_then(|b| b.watermark_micros)) {
            (Some(l), Some(b)) => Some(l.max(b)),
            (l, b) => l.or(b),
        };
        Ok(merged)
    }

    /// After a commit of this claim: where the next range of each claimed
    /// partition starts.
    pub fn committed_to(&self, expected: &mut BTreeMap<i32, i64>) {
        expected.extend(self.next.iter().map(|(p, o)| (*p, *o)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(table: &TableId, offsets: &[(i32, i64)]) -> Checkpoint {
        let mut cp = Checkpoint::default();
        let offsets: BTreeMap<i32, i64> = offsets.iter().copied().collect();
        cp.properties.insert(
            Checkpoint::table_key(table, OFFSETS_PROPERTY),
            serde_json::to_string(&offsets).unwrap(),
        );
        cp
    }

    #[test]
    fn a_claim_merges_only_where_its_range_starts_at_the_committed_offset() {
        let t = TableId::new("shop", "orders");
        let claim = PartitionClaim {
            from: [(0, 10)].into(),
            next: [(0, 20), (1, 5)].into(),
            watermarks: [(0, 100), (1, 90)].into(),
            partitions: 3,
        };
        let base = committed(&t, &[(0, 10), (2, 7)]);
        let merged = claim
            .merge(&Checkpoint::default(), Some(&base), &t, &BTreeMap::new())
            .unwrap();
        let got: BTreeMap<i32, i64> =
            serde_json::from_str(&merged.properties[&Checkpoint::table_key(&t, OFFSETS_PROPERTY)])
                .unwrap();
        assert_eq!(got, [(0, 20), (1, 5), (2, 7)].into());
        assert_eq!(merged.watermark_micros, None, "partition 2 has none yet");
        assert!(
            !merged
                .properties
                .contains_key(&Checkpoint::table_key(&t, CLAIM_PROPERTY))
        );

        // Another worker committed partition 0 past 10: refused.
        let moved = committed(&t, &[(0, 15)]);
        let e = claim
            .merge(&Checkpoint::default(), Some(&moved), &t, &BTreeMap::new())
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Reassigned);
        assert!(e.to_string().contains("partition 0"), "{e}");
        // Nothing committed yet, but the claim started partition 0 at 10.
        assert!(
            claim
                .merge(&Checkpoint::default(), None, &t, &BTreeMap::new())
                .is_err()
        );

        // After its own commit, the next range starts at its own end.
        let mut expected = BTreeMap::new();
        claim.committed_to(&mut expected);
        let later = PartitionClaim {
            next: [(0, 30), (1, 6)].into(),
            watermarks: [(0, 110), (1, 95), (2, 80)].into(),
            ..claim.clone()
        };
        let again = later
            .merge(&Checkpoint::default(), Some(&merged), &t, &expected)
            .unwrap();
        assert_eq!(again.watermark_micros, Some(80), "the lowest partition's");
        // The same range twice (a replayed commit) is refused.
        assert!(
            later
                .merge(&Checkpoint::default(), Some(&again), &t, &expected)
                .is_err()
        );
    }
}
