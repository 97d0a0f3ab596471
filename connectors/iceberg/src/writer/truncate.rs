//! `TRUNCATE` of the source table: every row before it is gone, so what is
//! buffered (and spilled) is dropped, the key index forgets every key, and
//! the next commit removes every file of the table in the same snapshot
//! that adds the rows written after the truncate (`RowDelta::truncate`). A
//! replayed truncate (at or before the committed position) is skipped like
//! any replayed change.

use tributary_core::{Result, SchemaChange};

use super::UpsertWriter;
use super::table::key_index;

impl UpsertWriter {
    pub(super) async fn truncate(&mut self, change: &SchemaChange) -> Result<()> {
        if tributary_core::is_committed(change.position.as_ref(), self.committed.as_ref()) {
            return Ok(());
        }
        for spill in self.spills.drain(..) {
            // Never committed: nothing else names the file.
            let _ = self.table.file_io.delete(spill.file.file_path()).await;
        }
        self.reduction.clear();
        self.index = key_index(&self.table, &self.columns, &self.source)?;
        self.committed_files.clear();
        self.rewritten.clear();
        self.planned_found.clear();
        self.truncate_pending = true;
        // The commit is due at the next checkpoint.
        self.changes_since_commit = self.changes_since_commit.max(self.config.commit_rows);
        Ok(())
    }
}
