//! Property tests of the change-event model: Arrow round trips for every value
//! kind (nulls and extremes included), position ordering and serde round trips.

use std::cmp::Ordering;
use std::sync::Arc;

use proptest::prelude::*;
use tributary_core::{
    BinlogFilePos, ChangeBatch, ChangeEvent, Checkpoint, Column, ColumnType, Decimal, Image,
    MariaDbGtid, MariaDbGtidList, MySqlGtidSet, Op, SourcePosition, TableId, TableSchema, Value,
};

const MAX_TIME_MICROS: i64 = (838 * 3600 + 59 * 60 + 59) * 1_000_000 + 999_999;
const MIN_DATE: i32 = -719_162; // 0001-01-01
const MAX_DATE: i32 = 2_932_896; // 9999-12-31
const MIN_DATETIME: i64 = -62_135_596_800_000_000;
const MAX_DATETIME: i64 = 253_402_300_799_999_999;

fn column_type() -> impl Strategy<Value = ColumnType> {
    use ColumnType as C;
    let fixed = prop_oneof![
        Just(C::Bool),
        Just(C::Int8),
        Just(C::Int16),
        Just(C::Int24),
        Just(C::Int32),
        Just(C::Int64),
        Just(C::UInt8),
        Just(C::UInt16),
        Just(C::UInt24),
        Just(C::UInt32),
        Just(C::UInt64),
        Just(C::Float),
        Just(C::Double),
        Just(C::Date),
        Just(C::Year),
        Just(C::Json),
    ];
    let param = prop_oneof![
        (1u8..=65)
            .prop_flat_map(|p| (Just(p), 0..=p.min(30)))
            .prop_map(|(precision, scale)| C::Decimal { precision, scale }),
        proptest::option::of(1u32..70_000).prop_map(|max_len| C::String { max_len }),
        proptest::option::of(1u32..70_000).prop_map(|max_len| C::Bytes { max_len }),
        (0u8..=6).prop_map(|fsp| C::Time { fsp }),
        (0u8..=6).prop_map(|fsp| C::DateTime { fsp }),
        (0u8..=6).prop_map(|fsp| C::Timestamp { fsp }),
        (1u8..=64).prop_map(|width| C::Bit { width }),
        Just(C::Enum {
            labels: vec!["small".into(), "médium".into(), "🚀".into()]
        }),
        Just(C::Set {
            labels: vec!["a".into(), "b".into(), "c".into()]
        }),
    ];
    prop_oneof![fixed, param]
}

fn decimal(precision: u8, scale: u8) -> BoxedStrategy<Value> {
    let p = precision as usize;
    let nines = "9".repeat(p);
    let extremes = vec![format!("-{nines}"), nines, "0".into(), "1".into()];
    let digits = prop_oneof![
        proptest::sample::select(extremes),
        (
            any::<bool>(),
            proptest::string::string_regex(&format!("[0-9]{{1,{p}}}")).unwrap()
        )
            .prop_map(|(neg, d)| format!("{}{d}", if neg { "-" } else { "" })),
    ];
    digits
        .prop_map(move |d| {
            let unscaled = arrow_buffer::i256::from_string(&d).unwrap();
            Value::Decimal(Decimal::new(unscaled, scale))
        })
        .boxed()
}

fn string() -> BoxedStrategy<String> {
    prop_oneof![
        Just(String::new()),
        Just("😀 𝄞 ✓ 中文 ﬀ".to_string()),
        "\\PC{0,24}",
    ]
    .boxed()
}

fn value_for(t: &ColumnType) -> BoxedStrategy<Value> {
    use ColumnType as C;
    fn ext<T: Clone + std::fmt::Debug + 'static>(
        edges: Vec<T>,
        any: BoxedStrategy<T>,
        f: fn(T) -> Value,
    ) -> BoxedStrategy<Value> {
        prop_oneof![proptest::sample::select(edges), any]
            .prop_map(f)
            .boxed()
    }
    match t.clone() {
        C::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        C::Int8 => ext(vec![i8::MIN, i8::MAX, 0], any::<i8>().boxed(), Value::Int8),
        C::Int16 => ext(vec![i16::MIN, i16::MAX], any::<i16>().boxed(), Value::Int16),
        C::Int24 => ext(
            vec![-(1 << 23), (1 << 23) - 1],
            (-(1 << 23)..(1 << 23)).boxed(),
            Value::Int32,
        ),
        C::Int32 => ext(vec![i32::MIN, i32::MAX], any::<i32>().boxed(), Value::Int32),
        C::Int64 => ext(vec![i64::MIN, i64::MAX], any::<i64>().boxed(), Value::Int64),
        C::UInt8 => ext(vec![u8::MAX], any::<u8>().boxed(), Value::UInt8),
        C::UInt16 => ext(vec![u16::MAX], any::<u16>().boxed(), Value::UInt16),
        C::UInt24 => ext(
            vec![(1 << 24) - 1],
            (0u32..(1 << 24)).boxed(),
            Value::UInt32,
        ),
        C::UInt32 => ext(vec![u32::MAX], any::<u32>().boxed(), Value::UInt32),
        C::UInt64 => ext(vec![u64::MAX, 0], any::<u64>().boxed(), Value::UInt64),
        C::Float => ext(
            vec![f32::MAX, f32::MIN, f32::MIN_POSITIVE, -0.0],
            proptest::num::f32::NORMAL.boxed(),
            Value::Float,
        ),
        C::Double => ext(
            vec![f64::MAX, f64::MIN, f64::MIN_POSITIVE, 1e-300],
            proptest::num::f64::NORMAL.boxed(),
            Value::Double,
        ),
        C::Decimal { precision, scale } => decimal(precision, scale),
        C::String { .. } => string().prop_map(Value::String).boxed(),
        C::Bytes { .. } => proptest::collection::vec(any::<u8>(), 0..40)
            .prop_map(Value::Bytes)
            .boxed(),
        C::Date => ext(
            vec![MIN_DATE, MAX_DATE, 0],
            (MIN_DATE..=MAX_DATE).boxed(),
            Value::Date,
        ),
        C::Time { .. } => ext(
            vec![-MAX_TIME_MICROS, MAX_TIME_MICROS, 0],
            (-MAX_TIME_MICROS..=MAX_TIME_MICROS).boxed(),
            Value::Time,
        ),
        C::DateTime { .. } => ext(
            vec![MIN_DATETIME, MAX_DATETIME],
            (MIN_DATETIME..=MAX_DATETIME).boxed(),
            Value::DateTime,
        ),
        C::Timestamp { .. } => ext(
            vec![0, 2_147_483_647_999_999],
            (0i64..=2_147_483_647_999_999).boxed(),
            Value::Timestamp,
        ),
        C::Year => ext(vec![0, 1901, 2155], (1901u16..=2155).boxed(), Value::Year),
        C::Bit { width } => {
            let max = if width == 64 {
                u64::MAX
            } else {
                (1u64 << width) - 1
            };
            ext(vec![0, max], (0..=max).boxed(), Value::Bit)
        }
        C::Enum { labels } => proptest::sample::select(labels)
            .prop_map(Value::Enum)
            .boxed(),
        C::Set { labels } => proptest::sample::subsequence(labels, 0..=3)
            .prop_map(|l| Value::Set(l.join(",")))
            .boxed(),
        C::Json => string()
            .prop_map(|s| Value::Json(serde_json::json!({ "k": s }).to_string()))
            .boxed(),
    }
}

fn schema() -> impl Strategy<Value = Arc<TableSchema>> {
    proptest::collection::vec((column_type(), any::<bool>()), 1..8).prop_map(|cols| {
        let mut columns = vec![Column::new("id", ColumnType::Int64, false)];
        for (i, (t, nullable)) in cols.into_iter().enumerate() {
            columns.push(Column::new(format!("c{i}"), t, nullable));
        }
        Arc::new(TableSchema::new(TableId::new("db", "t"), columns, &["id"], 3).unwrap())
    })
}

fn row(schema: &TableSchema) -> BoxedStrategy<Vec<Value>> {
    let cells: Vec<BoxedStrategy<Value>> = schema
        .columns
        .iter()
        .map(|c| {
            let v = value_for(&c.data_type);
            if c.nullable {
                prop_oneof![1 => Just(Value::Null), 3 => v].boxed()
            } else {
                v
            }
        })
        .collect();
    cells.boxed()
}

fn events(schema: Arc<TableSchema>) -> impl Strategy<Value = Vec<ChangeEvent>> {
    let op = prop_oneof![
        Just(Op::Read),
        Just(Op::Insert),
        Just(Op::Update),
        Just(Op::Delete)
    ];
    let one = (op, row(&schema), row(&schema), 0u64..3, any::<i64>());
    proptest::collection::vec(one, 0..40).prop_map(move |evs| {
        evs.into_iter()
            .map(|(op, before, after, txn, ts)| {
                let (b, a) = op.images();
                ChangeEvent {
                    table: schema.table.clone(),
                    op,
                    before: b.then_some(before),
                    after: a.then_some(after),
                    position: (txn > 0).then(|| {
                        SourcePosition::FilePos(BinlogFilePos::new("mysql-bin.000001", txn * 100))
                    }),
                    commit_ts_micros: ts,
                    schema_version: schema.version,
                }
            })
            .collect()
    })
}

fn schema_and_events() -> impl Strategy<Value = (Arc<TableSchema>, Vec<ChangeEvent>)> {
    schema().prop_flat_map(|s| (Just(s.clone()), events(s)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn change_batch_round_trips_every_value_kind((schema, events) in schema_and_events()) {
        let batch = ChangeBatch::from_events(schema.clone(), &events).unwrap();
        prop_assert_eq!(batch.len(), events.len());
        prop_assert_eq!(batch.to_events(), events.clone());
        // The Arrow arrays carry the schema's declared types.
        for image in [Image::Before, Image::After] {
            if let Some(arr) = batch.image(image) {
                for (c, a) in schema.columns.iter().zip(arr.columns()) {
                    prop_assert_eq!(a.data_type(), &c.data_type.arrow_type());
                }
            }
        }
        let has_before = events.iter().any(|e| e.before.is_some());
        prop_assert_eq!(batch.image(Image::Before).is_some(), has_before);
    }

    #[test]
    fn events_survive_json((schema, events) in schema_and_events()) {
        let _ = schema;
        let json = serde_json::to_string(&events).unwrap();
        let back: Vec<ChangeEvent> = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, events);
    }

    #[test]
    fn file_positions_order_like_file_number_then_offset(a in (0u64..5, 0u64..1000), b in (0u64..5, 0u64..1000)) {
        let pa = BinlogFilePos::new(format!("mysql-bin.{:06}", a.0 + 9), a.1);
        let pb = BinlogFilePos::new(format!("mysql-bin.{:06}", b.0 + 9), b.1);
        prop_assert_eq!(pa.cmp(&pb), a.cmp(&b));
        let sa = SourcePosition::FilePos(pa.clone());
        let sb = SourcePosition::FilePos(pb.clone());
        prop_assert_eq!(sa.partial_cmp(&sb), Some(a.cmp(&b)));
    }

    #[test]
    fn mysql_gtid_sets_round_trip_and_order_by_inclusion(
        a in proptest::collection::vec((0usize..3, 1u64..60), 0..20),
        extra in proptest::collection::vec((0usize..3, 1u64..60), 0..5),
    ) {
        const UUIDS: [&str; 3] = [
            "3e11fa47-71ca-11e1-9e33-c80aa9429562",
            "4e11fa47-71ca-11e1-9e33-c80aa9429563",
            "5e11fa47-71ca-11e1-9e33-c80aa9429564",
        ];
        let mut small = MySqlGtidSet::default();
        for (u, g) in &a { small.add(UUIDS[*u], *g); }
        let mut big = small.clone();
        for (u, g) in &extra { big.add(UUIDS[*u], *g); }
        // Text and serde round trips.
        if !small.is_empty() {
            prop_assert_eq!(small.to_string().parse::<MySqlGtidSet>().unwrap(), small.clone());
        }
        let pos = SourcePosition::MySqlGtid { gtid_set: big.clone(), file_pos: None };
        let json = serde_json::to_string(&pos).unwrap();
        prop_assert_eq!(serde_json::from_str::<SourcePosition>(&json).unwrap(), pos);
        // A subset is never after its superset; the order is antisymmetric.
        let ord = small.partial_cmp(&big);
        prop_assert!(matches!(ord, Some(Ordering::Less | Ordering::Equal)), "{:?}", ord);
        prop_assert_eq!(big.partial_cmp(&small), ord.map(Ordering::reverse));
        for (u, g) in a.iter().chain(&extra) { prop_assert!(big.contains(UUIDS[*u], *g)); }
    }

    #[test]
    fn mariadb_gtid_lists_round_trip_and_order_per_domain(
        seqs in proptest::collection::btree_map(0u32..4, 1u64..1_000_000, 1..4),
        bump in 0u32..4,
        by in 0u64..3,
    ) {
        let mut a = MariaDbGtidList::default();
        for (d, s) in &seqs { a.update(MariaDbGtid { domain: *d, server_id: 7, seq: *s }); }
        prop_assert_eq!(a.to_string().parse::<MariaDbGtidList>().unwrap(), a.clone());
        let mut b = a.clone();
        let base = a.get(bump).map_or(0, |g| g.seq);
        b.update(MariaDbGtid { domain: bump, server_id: 8, seq: base + by });
        let grew = a.get(bump).is_none() || by > 0;
        let expect = if grew { Ordering::Less } else { Ordering::Equal };
        prop_assert_eq!(a.partial_cmp(&b), Some(expect));
        prop_assert_eq!(b.partial_cmp(&a), Some(expect.reverse()));
        let cp = Checkpoint {
            position: Some(SourcePosition::MariaDbGtid { gtid_list: b.clone(), file_pos: Some(BinlogFilePos::new("mysql-bin.000003", 77)) }),
            watermark_micros: Some(1_700_000_000_000_000),
            properties: [("kafka.offsets".to_string(), "0:12,1:40".to_string())].into(),
        };
        let json = serde_json::to_string(&cp).unwrap();
        prop_assert_eq!(serde_json::from_str::<Checkpoint>(&json).unwrap(), cp);
    }
}

#[test]
fn values_that_do_not_fit_are_rejected_and_nothing_is_appended() {
    let schema = Arc::new(
        TableSchema::new(
            TableId::new("db", "t"),
            vec![
                Column::new("id", ColumnType::Int64, false),
                Column::new(
                    "d",
                    ColumnType::Decimal {
                        precision: 5,
                        scale: 2,
                    },
                    true,
                ),
                Column::new("b", ColumnType::Bit { width: 3 }, true),
            ],
            &["id"],
            1,
        )
        .unwrap(),
    );
    let mut b = tributary_core::ChangeBatchBuilder::new(schema.clone());
    let ok = [
        Value::Int64(1),
        Value::Decimal("123.45".parse().unwrap()),
        Value::Bit(7),
    ];
    b.push_row(Op::Insert, None, Some(&ok)).unwrap();
    for bad in [
        vec![Value::Null, Value::Null, Value::Null], // NULL key
        vec![Value::Int32(1), Value::Null, Value::Null], // wrong variant
        vec![
            Value::Int64(2),
            Value::Decimal("1234.56".parse().unwrap()),
            Value::Null,
        ], // too many digits
        vec![
            Value::Int64(2),
            Value::Decimal("1.5".parse().unwrap()),
            Value::Null,
        ], // wrong scale
        vec![Value::Int64(2), Value::Null, Value::Bit(8)], // over BIT(3)
        vec![Value::Int64(2)],                       // short row
    ] {
        let e = b.push_row(Op::Insert, None, Some(&bad)).unwrap_err();
        use tributary_core::ErrorKind::{InvalidData, SchemaMismatch};
        assert!(matches!(e.kind(), InvalidData | SchemaMismatch), "{e}");
    }
    assert!(
        b.push_row(Op::Update, None, Some(&ok)).is_err(),
        "update needs a before image"
    );
    let batch = b.finish().unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(batch.row(Image::After, 0).unwrap(), ok.to_vec());
}

#[test]
fn typed_pushes_range_check_and_report_incomplete_rows() {
    let schema = Arc::new(
        TableSchema::new(
            TableId::new("db", "t"),
            vec![
                Column::new("id", ColumnType::Int64, false),
                Column::new("small", ColumnType::UInt8, true),
            ],
            &["id"],
            1,
        )
        .unwrap(),
    );
    let mut b = tributary_core::ChangeBatchBuilder::new(schema);
    b.begin_row(Op::Insert).unwrap();
    b.after().push_int(1).unwrap();
    assert!(b.after().push_int(256).is_err(), "256 does not fit UINT8");
    assert!(b.after().push_str("x").is_err());
    assert!(
        b.before().push_int(1).is_err(),
        "an insert has no before image"
    );
    assert!(b.end_row().is_err(), "row is missing a column");
    b.after().push_uint(255).unwrap();
    b.end_row().unwrap();
    let batch = b.finish().unwrap();
    assert_eq!(
        batch.row(Image::After, 0).unwrap(),
        vec![Value::Int64(1), Value::UInt8(255)]
    );
    assert!(batch.image(Image::Before).is_none());
}
