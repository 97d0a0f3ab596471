//! `VersionClock`: row versions that keep growing when positions go back.

use tributary_core::{Checkpoint, Error, ErrorKind, Result, SourcePosition};

use super::VERSION_BASE_PROPERTY;

/// Keeps row versions growing when binlog positions go backwards: a
/// failover to a server whose binlog numbers are lower, `RESET MASTER`,
/// or a new binlog basename would otherwise give later changes lower
/// versions than earlier ones (ClickHouse would keep the old row). The
/// base is raised so the first transaction after the jump gets the last
/// version + 1; it travels in the checkpoint, so a replay from the same
/// checkpoint recomputes the same versions.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct VersionClock {
    base: u64,
    last_ordinal: Option<u64>,
}

impl VersionClock {
    pub(crate) fn resume(checkpoint: Option<&Checkpoint>) -> Result<VersionClock> {
        let Some(cp) = checkpoint else {
            return Ok(VersionClock::default());
        };
        let base = match cp.properties.get(VERSION_BASE_PROPERTY) {
            Some(v) => v.parse().map_err(|_| {
                Error::new(
                    ErrorKind::InvalidData,
                    format!("checkpoint property {VERSION_BASE_PROPERTY} = {v:?} is not a number"),
                )
            })?,
            None => 0,
        };
        let last_ordinal = cp
            .position
            .as_ref()
            .and_then(SourcePosition::binlog_ordinal);
        Ok(VersionClock { base, last_ordinal })
    }

    /// The base for a transaction ending at `position`, raised first if
    /// the position went backwards.
    pub(crate) fn advance(&mut self, position: Option<&SourcePosition>) -> u64 {
        if let Some(o) = position.and_then(SourcePosition::binlog_ordinal) {
            // Equal is no jump: the parts of a split transaction share a
            // provisional position.
            if let Some(last) = self.last_ordinal
                && o < last
            {
                self.base = self.base.saturating_add(last - o + 1);
            }
            self.last_ordinal = Some(o);
        }
        self.base
    }

    pub(crate) fn base(&self) -> u64 {
        self.base
    }
}

#[cfg(test)]
mod version_tests {
    use super::*;
    use tributary_core::BinlogFilePos;

    fn at(file: &str, pos: u64) -> SourcePosition {
        SourcePosition::FilePos(BinlogFilePos::new(file, pos))
    }

    #[test]
    fn versions_keep_growing_when_positions_go_backwards() {
        let version = |c: &mut VersionClock, p: &SourcePosition| {
            c.advance(Some(p)) + tributary_core::row_version(Some(p))
        };
        let mut c = VersionClock::default();
        let a = version(&mut c, &at("mysql-bin.000105", 900));
        let b = version(&mut c, &at("mysql-bin.000105", 1200));
        assert!(b > a);
        // A failover to a server at binlog 3, then RESET MASTER.
        let c1 = version(&mut c, &at("other-bin.000003", 400));
        let c2 = version(&mut c, &at("other-bin.000003", 800));
        let d = version(&mut c, &at("mysql-bin.000001", 4));
        assert!(c1 > b && c2 > c1 && d > c2, "{b} {c1} {c2} {d}");
        // A replay from a checkpoint taken after the jump computes the same.
        let mut resumed = VersionClock::resume(Some(&Checkpoint {
            position: Some(at("other-bin.000003", 400)),
            watermark_micros: None,
            properties: [(
                VERSION_BASE_PROPERTY.to_string(),
                (c1 - tributary_core::row_version(Some(&at("other-bin.000003", 400)))).to_string(),
            )]
            .into_iter()
            .collect(),
        }))
        .unwrap();
        assert_eq!(version(&mut resumed, &at("other-bin.000003", 800)), c2);
        assert_eq!(version(&mut resumed, &at("mysql-bin.000001", 4)), d);
        // Parts of a split transaction share a provisional position: no jump.
        let mut c = VersionClock::default();
        let p = at("mysql-bin.000002", 50);
        assert_eq!(c.advance(Some(&p)), c.advance(Some(&p)));
    }
}
