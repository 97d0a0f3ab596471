//! A randomized key/value change workload and the model it keeps, shared by
//! the sinks' model tests: table (id INT PRIMARY KEY, v INT NULL,
//! s VARCHAR(20) NULL); inserts, updates (NULLs included), deletes and
//! primary-key changes, each its own transaction at the next binlog offset.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use arrow_array::{Array, Int32Array, RecordBatch, StringArray};
use tributary_core::{
    BinlogFilePos, ChangeEvent, Column, ColumnType, Op, SourcePosition, TableId, TableSchema, Value,
};

/// A row's non-key columns.
pub type KvValue = (Option<i32>, Option<String>);
/// Key → row, as the source holds it.
pub type KvModel = BTreeMap<i32, KvValue>;

/// xorshift64: deterministic per seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

pub fn kv_schema(database: &str, table: &str) -> Arc<TableSchema> {
    let cols = vec![
        Column::new("id", ColumnType::Int32, false),
        Column::new("v", ColumnType::Int32, true),
        Column::new("s", ColumnType::String { max_len: Some(20) }, true),
    ];
    Arc::new(TableSchema::new(TableId::new(database, table), cols, &["id"], 1).unwrap())
}

pub fn kv_row(id: i32, v: &KvValue) -> Vec<Value> {
    vec![
        Value::Int32(id),
        v.0.map_or(Value::Null, Value::Int32),
        v.1.clone().map_or(Value::Null, Value::String),
    ]
}

/// The insert of row `i` (`v` = i % 1000, `s` = "row-i") at offset
/// 100·(i+1): bulk rows for benchmarks.
pub fn kv_insert(schema: &TableSchema, i: usize) -> tributary_core::ChangeEvent {
    tributary_core::ChangeEvent {
        table: schema.table.clone(),
        op: tributary_core::Op::Insert,
        before: None,
        after: Some(vec![
            Value::Int32(i as i32),
            Value::Int32((i % 1000) as i32),
            Value::String(format!("row-{i}")),
        ]),
        position: kv_position(100 * (i as u64 + 1)),
        commit_ts_micros: i as i64,
        schema_version: 1,
    }
}

/// The position of the transaction at `offset` (one binlog file).
pub fn kv_position(offset: u64) -> Option<SourcePosition> {
    Some(SourcePosition::FilePos(BinlogFilePos::new(
        "mysql-bin.000001",
        offset,
    )))
}

/// `n` random changes on keys in `keys` (a key change moves key k to
/// k + keys.len()), consistent with `model`, which they update; each its own
/// transaction, `offset` advancing by 100.
pub fn random_kv_events(
    schema: &TableSchema,
    rng: &mut Rng,
    model: &mut KvModel,
    offset: &mut u64,
    keys: Range<i32>,
    n: usize,
) -> Vec<ChangeEvent> {
    let span = (keys.end - keys.start) as u64;
    (0..n)
        .map(|_| {
            *offset += 100;
            let key = keys.start + rng.below(span) as i32;
            let value = (
                (rng.below(4) > 0).then(|| rng.below(1000) as i32),
                (rng.below(4) > 0).then(|| format!("s{}", rng.below(100))),
            );
            let moved = key + span as i32;
            let (op, before, after) = match (model.get(&key).cloned(), rng.below(3)) {
                (None, _) => {
                    model.insert(key, value.clone());
                    (Op::Insert, None, Some(kv_row(key, &value)))
                }
                (Some(old), 0) => {
                    model.remove(&key);
                    (Op::Delete, Some(kv_row(key, &old)), None)
                }
                (Some(old), 1) if !model.contains_key(&moved) => {
                    model.remove(&key);
                    model.insert(moved, old.clone());
                    (
                        Op::Update,
                        Some(kv_row(key, &old)),
                        Some(kv_row(moved, &old)),
                    )
                }
                (Some(old), _) => {
                    model.insert(key, value.clone());
                    (
                        Op::Update,
                        Some(kv_row(key, &old)),
                        Some(kv_row(key, &value)),
                    )
                }
            };
            ChangeEvent {
                table: schema.table.clone(),
                op,
                before,
                after,
                position: kv_position(*offset),
                commit_ts_micros: *offset as i64,
                schema_version: 1,
            }
        })
        .collect()
}

/// The rows of scanned batches; a key seen twice fails the test.
pub fn kv_rows_of(batches: &[RecordBatch]) -> KvModel {
    let mut model = KvModel::new();
    for b in batches {
        let id = b
            .column_by_name("id")
            .unwrap()
            .as_any()
            .downcast_ref::<Int32Array>()
            .unwrap()
            .clone();
        let v = b
            .column_by_name("v")
            .unwrap()
            .as_any()
            .downcast_ref::<Int32Array>()
            .unwrap()
            .clone();
        let s = b
            .column_by_name("s")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .clone();
        for i in 0..b.num_rows() {
            let prev = model.insert(
                id.value(i),
                (
                    v.is_valid(i).then(|| v.value(i)),
                    s.is_valid(i).then(|| s.value(i).to_string()),
                ),
            );
            assert!(prev.is_none(), "duplicate key {}", id.value(i));
        }
    }
    model
}

/// pyiceberg reads of several metadata files in one process: one JSON
/// object {id: [v, s]} per file.
pub fn kv_read_py(locations: &[String]) -> Vec<KvModel> {
    let mut args: Vec<&str> = Vec::new();
    args.extend(locations.iter().map(String::as_str));
    let out = crate::DevServices::load().run_python(
        r#"
import sys, json
from pyiceberg.table import StaticTable
for loc in sys.argv[1:]:
    rows = StaticTable.from_metadata(loc).scan().to_arrow().to_pylist()
    print(json.dumps({str(r["id"]): [r["v"], r["s"]] for r in rows}))
"#,
        &args,
    );
    out.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object()
                .unwrap()
                .iter()
                .map(|(k, r)| {
                    let val = (
                        r[0].as_i64().map(|x| x as i32),
                        r[1].as_str().map(str::to_string),
                    );
                    (k.parse().unwrap(), val)
                })
                .collect()
        })
        .collect()
}
