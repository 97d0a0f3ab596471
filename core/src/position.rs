//! Source positions (binlog file+pos, MySQL GTID sets, MariaDB GTID lists) and
//! the checkpoint a sink commits.
//!
//! Positions are *partially* ordered: two GTID sets from different servers may
//! each contain transactions the other lacks. `partial_cmp` returns `None`
//! then, and callers must treat that as "not known to be behind".

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A binlog file name and byte offset.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BinlogFilePos {
    pub file: String,
    pub pos: u64,
}

impl BinlogFilePos {
    pub fn new(file: impl Into<String>, pos: u64) -> Self {
        BinlogFilePos {
            file: file.into(),
            pos,
        }
    }

    /// The numeric suffix of `mysql-bin.000042` (42); files of one server sort by it.
    pub fn file_sequence(&self) -> Option<u64> {
        self.file.rsplit_once('.').and_then(|(_, n)| n.parse().ok())
    }
}

impl Ord for BinlogFilePos {
    fn cmp(&self, other: &Self) -> Ordering {
        let by_file = match (self.file_sequence(), other.file_sequence()) {
            (Some(a), Some(b)) => a.cmp(&b).then_with(|| self.file.cmp(&other.file)),
            _ => self.file.cmp(&other.file),
        };
        by_file.then(self.pos.cmp(&other.pos))
    }
}

impl PartialOrd for BinlogFilePos {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for BinlogFilePos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}

/// Combines per-component orderings into a partial order: all equal → Equal,
/// none greater → Less, none less → Greater, otherwise incomparable.
fn combine(orders: impl Iterator<Item = Ordering>) -> Option<Ordering> {
    let (mut less, mut greater) = (false, false);
    for o in orders {
        match o {
            Ordering::Less => less = true,
            Ordering::Greater => greater = true,
            Ordering::Equal => {}
        }
    }
    match (less, greater) {
        (false, false) => Some(Ordering::Equal),
        (true, false) => Some(Ordering::Less),
        (false, true) => Some(Ordering::Greater),
        (true, true) => None,
    }
}

/// A MySQL GTID set (`uuid[:tag]:1-5:7,uuid2:1-3`): for each source id, the
/// executed transaction numbers as sorted, merged, inclusive intervals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct MySqlGtidSet {
    /// Key: lower-case server uuid, with `:tag` for MySQL 8.4 tagged GTIDs.
    sets: BTreeMap<String, Vec<(u64, u64)>>,
}

impl MySqlGtidSet {
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// Adds one transaction (`source` is `uuid` or `uuid:tag`).
    pub fn add(&mut self, source: &str, gno: u64) {
        self.add_interval(source, gno, gno);
    }

    pub fn add_interval(&mut self, source: &str, start: u64, end: u64) {
        let ivs = self.sets.entry(source.to_ascii_lowercase()).or_default();
        ivs.push((start, end));
        ivs.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ivs.len());
        for &(s, e) in ivs.iter() {
            match merged.last_mut() {
                Some(last) if s <= last.1.saturating_add(1) => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        *ivs = merged;
    }

    pub fn contains(&self, source: &str, gno: u64) -> bool {
        self.sets
            .get(&source.to_ascii_lowercase())
            .is_some_and(|ivs| ivs.iter().any(|&(s, e)| s <= gno && gno <= e))
    }

    /// Each source (`uuid` or `uuid:tag`) with its inclusive intervals.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[(u64, u64)])> {
        self.sets.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// Every transaction of `self` is in `other`.
    pub fn is_subset(&self, other: &MySqlGtidSet) -> bool {
        self.sets.iter().all(|(src, ivs)| {
            let Some(theirs) = other.sets.get(src) else {
                return false;
            };
            ivs.iter()
                .all(|&(s, e)| theirs.iter().any(|&(ts, te)| ts <= s && e <= te))
        })
    }
}

impl PartialOrd for MySqlGtidSet {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match (self.is_subset(other), other.is_subset(self)) {
            (true, true) => Some(Ordering::Equal),
            (true, false) => Some(Ordering::Less),
            (false, true) => Some(Ordering::Greater),
            (false, false) => None,
        }
    }
}

impl fmt::Display for MySqlGtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (src, ivs)) in self.sets.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(src)?;
            for &(s, e) in ivs {
                if s == e {
                    write!(f, ":{s}")?;
                } else {
                    write!(f, ":{s}-{e}")?;
                }
            }
        }
        Ok(())
    }
}

impl FromStr for MySqlGtidSet {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::invalid_data(format!("bad MySQL GTID set {s:?}: {why}"));
        let mut set = MySqlGtidSet::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let mut fields = part.split(':');
            let uuid = fields.next().unwrap_or_default();
            if uuid.len() != 36 || uuid.bytes().filter(|&b| b == b'-').count() != 4 {
                return Err(bad("expected a server uuid"));
            }
            let mut source = uuid.to_string();
            let mut any = false;
            for field in fields {
                if field.starts_with(|c: char| c.is_ascii_digit()) {
                    let (a, b) = field.split_once('-').unwrap_or((field, field));
                    let (a, b) = (a.parse::<u64>(), b.parse::<u64>());
                    match (a, b) {
                        (Ok(a), Ok(b)) if a >= 1 && a <= b => set.add_interval(&source, a, b),
                        _ => return Err(bad("expected N or N-M with 1 ≤ N ≤ M")),
                    }
                    any = true;
                } else {
                    // A tag (MySQL 8.4): applies to the intervals that follow.
                    source = format!("{uuid}:{field}");
                }
            }
            if !any {
                return Err(bad("a uuid without intervals"));
            }
        }
        Ok(set)
    }
}

impl From<MySqlGtidSet> for String {
    fn from(s: MySqlGtidSet) -> String {
        s.to_string()
    }
}

impl TryFrom<String> for MySqlGtidSet {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

/// One MariaDB GTID: `domain-server-seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MariaDbGtid {
    pub domain: u32,
    pub server_id: u32,
    pub seq: u64,
}

impl fmt::Display for MariaDbGtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server_id, self.seq)
    }
}

impl FromStr for MariaDbGtid {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid_data(format!(
                "bad MariaDB GTID {s:?}: expected domain-server-seq"
            ))
        };
        let mut it = s.trim().splitn(3, '-');
        let mut next = || it.next().ok_or_else(bad);
        let domain = next()?.parse().map_err(|_| bad())?;
        let server_id = next()?.parse().map_err(|_| bad())?;
        let seq = next()?.parse().map_err(|_| bad())?;
        Ok(MariaDbGtid {
            domain,
            server_id,
            seq,
        })
    }
}

/// A MariaDB GTID position (`gtid_slave_pos` form): the last GTID per domain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct MariaDbGtidList {
    domains: BTreeMap<u32, MariaDbGtid>,
}

impl MariaDbGtidList {
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    /// Records `gtid` as the latest of its domain.
    pub fn update(&mut self, gtid: MariaDbGtid) {
        self.domains.insert(gtid.domain, gtid);
    }

    pub fn get(&self, domain: u32) -> Option<MariaDbGtid> {
        self.domains.get(&domain).copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = MariaDbGtid> + '_ {
        self.domains.values().copied()
    }
}

impl PartialOrd for MariaDbGtidList {
    /// Per domain by sequence number; a domain one side lacks counts as behind.
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        let domains = self.domains.keys().chain(other.domains.keys());
        combine(domains.map(|d| {
            let seq = |l: &MariaDbGtidList| l.domains.get(d).map(|g| g.seq);
            seq(self).cmp(&seq(other))
        }))
    }
}

impl fmt::Display for MariaDbGtidList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, g) in self.domains.values().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{g}")?;
        }
        Ok(())
    }
}

impl FromStr for MariaDbGtidList {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let mut list = MariaDbGtidList::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let g: MariaDbGtid = part.parse()?;
            if list.domains.contains_key(&g.domain) {
                return Err(Error::invalid_data(format!(
                    "MariaDB GTID list {s:?} names domain {} twice",
                    g.domain
                )));
            }
            list.update(g);
        }
        Ok(list)
    }
}

impl From<MariaDbGtidList> for String {
    fn from(s: MariaDbGtidList) -> String {
        s.to_string()
    }
}

impl TryFrom<String> for MariaDbGtidList {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

/// Where a change came from in the source's log. Events carry the position of
/// the *end* of their transaction, so a resume at a position never replays
/// half a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourcePosition {
    /// Binlog file and offset (MySQL or MariaDB without GTIDs).
    FilePos(BinlogFilePos),
    /// MySQL GTID mode: the executed set, plus the file position when known.
    #[serde(rename = "mysql_gtid")]
    MySqlGtid {
        gtid_set: MySqlGtidSet,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file_pos: Option<BinlogFilePos>,
    },
    /// MariaDB GTIDs: the last GTID per domain, plus the file position when known.
    #[serde(rename = "mariadb_gtid")]
    MariaDbGtid {
        gtid_list: MariaDbGtidList,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file_pos: Option<BinlogFilePos>,
    },
}

impl SourcePosition {
    /// The binlog file position as one number that grows with the binlog:
    /// file number × 2³⁴ + offset (file numbers below 2²⁸, offsets below
    /// 16 GiB). Sinks use it as a row version. None without a file
    /// position or with a file name that has no number suffix.
    pub fn binlog_ordinal(&self) -> Option<u64> {
        let fp = self.file_pos()?;
        let number: u64 = fp.file.rsplit('.').next()?.parse().ok()?;
        (number < 1 << 28).then(|| number << 34 | fp.pos.min((1 << 34) - 1))
    }

    pub fn file_pos(&self) -> Option<&BinlogFilePos> {
        match self {
            SourcePosition::FilePos(p) => Some(p),
            SourcePosition::MySqlGtid { file_pos, .. }
            | SourcePosition::MariaDbGtid { file_pos, .. } => file_pos.as_ref(),
        }
    }
}

impl PartialOrd for SourcePosition {
    /// GTIDs decide when both sides have the same kind (file positions break
    /// ties, e.g. heartbeats between transactions); otherwise file positions.
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        use SourcePosition as P;
        let by_gtid = match (self, other) {
            (P::MySqlGtid { gtid_set: a, .. }, P::MySqlGtid { gtid_set: b, .. }) => {
                Some(a.partial_cmp(b))
            }
            (P::MariaDbGtid { gtid_list: a, .. }, P::MariaDbGtid { gtid_list: b, .. }) => {
                Some(a.partial_cmp(b))
            }
            _ => None,
        };
        let by_file = match (self.file_pos(), other.file_pos()) {
            (Some(a), Some(b)) => Some(a.cmp(b)),
            _ => None,
        };
        match by_gtid {
            Some(Some(Ordering::Equal)) => Some(by_file.unwrap_or(Ordering::Equal)),
            Some(order) => order,
            None => by_file,
        }
    }
}

impl fmt::Display for SourcePosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourcePosition::FilePos(p) => write!(f, "{p}"),
            SourcePosition::MySqlGtid { gtid_set, .. } => write!(f, "gtid_set {gtid_set}"),
            SourcePosition::MariaDbGtid { gtid_list, .. } => write!(f, "gtid {gtid_list}"),
        }
    }
}

/// What a sink commits atomically with its data, and what a source resumes
/// from: the position after the last whole transaction, the watermark (all
/// source changes committed at or before this time are included), and
/// free-form properties (relay offsets, snapshot progress) as strings so that
/// they fit an Iceberg snapshot summary or a Kafka header unchanged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<SourcePosition>,
    /// Source commit time, microseconds since the Unix epoch (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark_micros: Option<i64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}

/// Properties of one table are keyed `table:<db>.<table>:<name>` (MySQL
/// names contain no '.'). A sink stores only its own table's, so the
/// checkpoint in each table's snapshot does not grow with the number of
/// tables; a resume gathers each table's from its own sink.
/// Checkpoint property: the commit round of the runner that wrote it
/// (grows across restarts; a resume starts at the lowest of its tables').
pub const ROUND_PROPERTY: &str = "tributary.round";

/// Checkpoint properties: the owner epoch of the process that committed it
/// (each `sync` start takes the next one and claims its tables with it; a
/// commit below a table's epoch is fenced) and a description of that
/// process (host and pid), for the message that names it.
pub const EPOCH_PROPERTY: &str = "tributary.epoch";
pub const OWNER_PROPERTY: &str = "tributary.owner";

/// Checkpoint property: the tables paused by `on_table_error = "pause"` and
/// why, as a JSON object `{"db.table": "cause"}`. Every healthy table's
/// commit carries it, so a restart keeps them paused without writing to the
/// troubled tables, and the resume point ignores them.
pub const PAUSED_PROPERTY: &str = "tributary.paused";

/// Checkpoint property: set on the checkpoint `tributary resnapshot` commits
/// into an emptied target — nothing is committed there, the next start
/// reads the table in full.
pub const RESNAPSHOT_PROPERTY: &str = "tributary.resnapshot";

impl Checkpoint {
    /// The owner epoch of the process that committed this checkpoint.
    pub fn epoch(&self) -> Option<u64> {
        self.properties.get(EPOCH_PROPERTY)?.parse().ok()
    }

    /// The paused tables this checkpoint records, with their causes.
    pub fn paused(&self) -> std::collections::BTreeMap<String, String> {
        self.properties
            .get(PAUSED_PROPERTY)
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or_default()
    }

    /// Whether this is the checkpoint of a target emptied by `tributary
    /// resnapshot` (nothing committed; read the table again).
    pub fn is_resnapshot(&self) -> bool {
        self.properties.contains_key(RESNAPSHOT_PROPERTY)
    }

    /// The runner's commit round this checkpoint was committed in.
    pub fn round(&self) -> Option<u64> {
        self.properties.get(ROUND_PROPERTY)?.parse().ok()
    }

    fn scope(table: &crate::TableId) -> String {
        format!("table:{}.{}:", table.database, table.table)
    }

    /// The key of property `name` of `table`.
    pub fn table_key(table: &crate::TableId, name: &str) -> String {
        format!("{}{name}", Self::scope(table))
    }

    /// Every table-scoped property named `name`, by its table's key prefix.
    pub fn table_properties<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a String> + 'a {
        self.properties
            .iter()
            .filter(move |(k, _)| {
                k.starts_with("table:") && k.strip_suffix(name).is_some_and(|p| p.ends_with(':'))
            })
            .map(|(_, v)| v)
    }

    /// This checkpoint as `table`'s sink stores it: other tables'
    /// table-scoped properties left out.
    pub fn for_table(&self, table: &crate::TableId) -> Checkpoint {
        let own = Self::scope(table);
        let mut cp = self.clone();
        cp.properties
            .retain(|k, _| !k.starts_with("table:") || k.starts_with(&own));
        cp
    }

    /// Takes `table`'s table-scoped properties from `from` (its own sink's
    /// checkpoint), replacing any this checkpoint had.
    pub fn adopt_table_state(&mut self, table: &crate::TableId, from: &Checkpoint) {
        let own = Self::scope(table);
        self.properties.retain(|k, _| !k.starts_with(&own));
        for (k, v) in from.properties.iter().filter(|(k, _)| k.starts_with(&own)) {
            self.properties.insert(k.clone(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U1: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    const U2: &str = "4e11fa47-71ca-11e1-9e33-c80aa9429563";

    #[test]
    fn a_tables_checkpoint_keeps_only_its_own_table_state() {
        let (a, b) = (
            crate::TableId::new("shop", "a"),
            crate::TableId::new("shop", "b"),
        );
        let mut cp = Checkpoint::default();
        cp.properties.insert("round".into(), "7".into());
        cp.properties
            .insert(Checkpoint::table_key(&a, "mysql.schema"), "A".into());
        cp.properties
            .insert(Checkpoint::table_key(&b, "mysql.schema"), "B".into());
        let only_a = cp.for_table(&a);
        assert_eq!(only_a.properties.len(), 2);
        assert_eq!(
            only_a.table_properties("mysql.schema").collect::<Vec<_>>(),
            ["A"]
        );
        assert_eq!(cp.table_properties("mysql.schema").count(), 2);
        assert_eq!(cp.table_properties("schema").count(), 0, "whole names only");
        let mut resume = cp.for_table(&b);
        let mut newer_a = only_a.clone();
        newer_a
            .properties
            .insert(Checkpoint::table_key(&a, "mysql.schema"), "A2".into());
        resume.adopt_table_state(&a, &newer_a);
        let mut got: Vec<_> = resume.table_properties("mysql.schema").collect();
        got.sort();
        assert_eq!(got, ["A2", "B"]);
    }

    #[test]
    fn file_positions_order_by_file_number_then_offset() {
        let a = BinlogFilePos::new("mysql-bin.000009", 900);
        let b = BinlogFilePos::new("mysql-bin.000010", 4);
        assert!(a < b);
        assert!(BinlogFilePos::new("mysql-bin.000010", 5) > b);
        assert_eq!(b.file_sequence(), Some(10));
    }

    #[test]
    fn mysql_gtid_sets_parse_merge_and_compare() {
        let s: MySqlGtidSet = format!("{},{U2}:1-3", U1.to_uppercase() + ":1-5:7:6")
            .parse()
            .unwrap();
        assert_eq!(s.to_string(), format!("{U1}:1-7,{U2}:1-3"));
        assert!(s.contains(U1, 6) && !s.contains(U1, 8));
        let smaller: MySqlGtidSet = format!("{U1}:1-5").parse().unwrap();
        assert_eq!(smaller.partial_cmp(&s), Some(Ordering::Less));
        let other: MySqlGtidSet = format!("{U1}:1-9").parse().unwrap();
        assert_eq!(other.partial_cmp(&s), None);
        let tagged: MySqlGtidSet = format!("{U1}:1-2:etl:1-4").parse().unwrap();
        assert!(tagged.contains(&format!("{U1}:etl"), 3));
        assert!(tagged.contains(U1, 2) && !tagged.contains(U1, 3));
        for bad in ["nope:1", U1, &format!("{U1}:0"), &format!("{U1}:5-2")] {
            assert!(bad.parse::<MySqlGtidSet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn mariadb_gtid_lists_compare_per_domain() {
        let a: MariaDbGtidList = "0-1-100,1-2-5".parse().unwrap();
        let b: MariaDbGtidList = "0-1-101,1-2-5".parse().unwrap();
        let c: MariaDbGtidList = "0-1-99,1-2-6".parse().unwrap();
        let d: MariaDbGtidList = "0-1-100,1-2-5,2-3-1".parse().unwrap();
        assert_eq!(a.partial_cmp(&b), Some(Ordering::Less));
        assert_eq!(a.partial_cmp(&c), None);
        assert_eq!(a.partial_cmp(&d), Some(Ordering::Less));
        assert_eq!(a.to_string(), "0-1-100,1-2-5");
        assert!("0-1-1,0-2-2".parse::<MariaDbGtidList>().is_err());
        assert!("0-1".parse::<MariaDbGtidList>().is_err());
    }

    #[test]
    fn positions_serialize_as_readable_json() {
        let p = SourcePosition::MariaDbGtid {
            gtid_list: "0-1-42".parse().unwrap(),
            file_pos: Some(BinlogFilePos::new("mysql-bin.000001", 1234)),
        };
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"mariadb_gtid","gtid_list":"0-1-42","file_pos":{"file":"mysql-bin.000001","pos":1234}}"#
        );
        assert_eq!(serde_json::from_str::<SourcePosition>(&json).unwrap(), p);
        assert!(
            serde_json::from_str::<SourcePosition>(r#"{"kind":"mariadb_gtid","gtid_list":"x"}"#)
                .is_err()
        );
    }
}
