//! The per-key reduction between commits: the final state of every key
//! touched since the last commit — deleted, a row of a buffered batch, or a
//! row of a spill file — and the spilled rows a later change superseded.
//! Pure state: no I/O, so the rules are unit-tested here.

use std::collections::HashMap;

use arrow_array::{Array, RecordBatch};
use tributary_core::Result;

/// The final state of a key touched since the last commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyState {
    Deleted,
    /// Row `.1` of buffered batch `.0`.
    Buffered(usize, usize),
    /// Row `.1` of spill file `.0`.
    Spilled(usize, i64),
}

#[derive(Default)]
pub(super) struct Reduction {
    state: HashMap<Vec<u8>, KeyState>,
    buffered: Vec<RecordBatch>,
    buffered_bytes: usize,
    /// (spill file, row) of spilled rows whose key changed again: they are
    /// deleted by position in the same commit.
    superseded: Vec<(usize, i64)>,
}

impl Reduction {
    /// The slot the next `push_batch` gets: `upsert` rows of that batch
    /// with it.
    pub(super) fn next_slot(&self) -> usize {
        self.buffered.len()
    }

    pub(super) fn delete(&mut self, key: Vec<u8>) {
        self.set(key, KeyState::Deleted);
    }

    pub(super) fn upsert(&mut self, key: Vec<u8>, slot: usize, row: usize) {
        self.set(key, KeyState::Buffered(slot, row));
    }

    fn set(&mut self, key: Vec<u8>, state: KeyState) {
        if let Some(KeyState::Spilled(file, pos)) = self.state.insert(key, state) {
            self.superseded.push((file, pos));
        }
    }

    /// Keeps the batch the last `upsert`s pointed into; returns its bytes.
    pub(super) fn push_batch(&mut self, batch: RecordBatch) -> usize {
        let bytes = batch.get_array_memory_size();
        self.buffered_bytes += bytes;
        self.buffered.push(batch);
        bytes
    }

    pub(super) fn buffered_bytes(&self) -> usize {
        self.buffered_bytes
    }

    /// Every key's final buffered row gathered into one batch, with the
    /// keys in row order; None when no key's final state is buffered.
    pub(super) fn buffered_rows(&self) -> Result<Option<(RecordBatch, Vec<Vec<u8>>)>> {
        let (mut rows, mut keys) = (Vec::new(), Vec::new());
        for (k, s) in &self.state {
            if let KeyState::Buffered(b, r) = s {
                rows.push((*b, *r));
                keys.push(k.clone());
            }
        }
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some((interleave_rows(&self.buffered, &rows)?, keys)))
    }

    /// `keys` now live in spill file `file`, row i holding `keys[i]`.
    pub(super) fn spilled(&mut self, file: usize, keys: &[Vec<u8>]) {
        for (pos, k) in keys.iter().enumerate() {
            self.state
                .insert(k.clone(), KeyState::Spilled(file, pos as i64));
        }
    }

    /// Drops the buffered batches (after their final rows were spilled).
    pub(super) fn clear_buffer(&mut self) {
        debug_assert!(
            !self
                .state
                .values()
                .any(|s| matches!(s, KeyState::Buffered(..))),
            "a buffered row would be lost"
        );
        self.buffered.clear();
        self.buffered_bytes = 0;
    }

    /// Rewrites every buffered batch (a schema change).
    pub(super) fn map_buffered(
        &mut self,
        f: impl Fn(&RecordBatch) -> Result<RecordBatch>,
    ) -> Result<()> {
        self.buffered = self.buffered.iter().map(f).collect::<Result<_>>()?;
        Ok(())
    }

    /// Every key touched since the last commit.
    pub(super) fn keys(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.state.keys()
    }

    pub(super) fn superseded(&self) -> &[(usize, i64)] {
        &self.superseded
    }

    pub(super) fn is_empty(&self) -> bool {
        self.state.is_empty()
    }

    /// After a durable commit: nothing is pending any more.
    pub(super) fn clear(&mut self) {
        *self = Reduction::default();
    }

    #[cfg(test)]
    fn state_of(&self, key: &[u8]) -> Option<KeyState> {
        self.state.get(key).copied()
    }
}

/// Gathers `(batch, row)` rows of `batches` into one record batch.
fn interleave_rows(batches: &[RecordBatch], rows: &[(usize, usize)]) -> Result<RecordBatch> {
    let schema = batches[0].schema();
    let mut columns = Vec::with_capacity(schema.fields().len());
    for c in 0..schema.fields().len() {
        let arrays: Vec<&dyn Array> = batches.iter().map(|b| b.column(c).as_ref()).collect();
        columns.push(arrow_select::interleave::interleave(&arrays, rows)?);
    }
    Ok(RecordBatch::try_new(schema, columns)?)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::Int32Array;

    use super::*;

    fn batch(values: &[i32]) -> RecordBatch {
        let schema = Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
            "v",
            arrow_schema::DataType::Int32,
            false,
        )]));
        RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from(values.to_vec()))]).unwrap()
    }

    fn values(b: &RecordBatch) -> Vec<i32> {
        let a = b.column(0).as_any().downcast_ref::<Int32Array>().unwrap();
        a.values().to_vec()
    }

    #[test]
    fn the_last_change_of_a_key_wins_and_deletes_leave_no_row() {
        let mut r = Reduction::default();
        let slot = r.next_slot();
        r.upsert(b"a".to_vec(), slot, 0);
        r.upsert(b"b".to_vec(), slot, 1);
        r.upsert(b"a".to_vec(), slot, 2); // a updated again in the same batch
        r.push_batch(batch(&[10, 20, 11]));
        let slot = r.next_slot();
        r.delete(b"b".to_vec());
        r.upsert(b"c".to_vec(), slot, 0);
        r.push_batch(batch(&[30]));
        assert_eq!(r.state_of(b"b"), Some(KeyState::Deleted));
        let (rows, keys) = r.buffered_rows().unwrap().unwrap();
        let mut got: Vec<(Vec<u8>, i32)> = keys.into_iter().zip(values(&rows)).collect();
        got.sort();
        assert_eq!(got, [(b"a".to_vec(), 11), (b"c".to_vec(), 30)]);
        assert_eq!(r.keys().count(), 3, "the delete of b is still to apply");
        assert!(r.superseded().is_empty());
    }

    #[test]
    fn a_key_changed_after_its_spill_supersedes_the_spilled_row() {
        let mut r = Reduction::default();
        for (i, k) in [b"a", b"b", b"c"].iter().enumerate() {
            r.upsert(k.to_vec(), 0, i);
        }
        r.push_batch(batch(&[1, 2, 3]));
        let (_, keys) = r.buffered_rows().unwrap().unwrap();
        r.spilled(0, &keys);
        r.clear_buffer();
        assert_eq!(r.buffered_bytes(), 0);
        assert!(
            r.buffered_rows().unwrap().is_none(),
            "nothing left to spill"
        );
        let pos_of = |k: &[u8]| keys.iter().position(|x| x == k).unwrap() as i64;
        assert_eq!(r.state_of(b"a"), Some(KeyState::Spilled(0, pos_of(b"a"))));

        // a updated, b deleted after the spill: both spilled rows go.
        r.upsert(b"a".to_vec(), r.next_slot(), 0);
        r.push_batch(batch(&[100]));
        r.delete(b"b".to_vec());
        let mut superseded = r.superseded().to_vec();
        superseded.sort();
        let mut want = vec![(0, pos_of(b"a")), (0, pos_of(b"b"))];
        want.sort();
        assert_eq!(superseded, want);
        // c is untouched since its spill: its spilled row is its final row.
        assert_eq!(r.state_of(b"c"), Some(KeyState::Spilled(0, pos_of(b"c"))));
        let (rows, keys) = r.buffered_rows().unwrap().unwrap();
        assert_eq!((keys, values(&rows)), (vec![b"a".to_vec()], vec![100]));

        r.clear();
        assert!(r.is_empty() && r.superseded().is_empty());
    }
}
