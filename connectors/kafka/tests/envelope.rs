//! Our envelopes against the shapes of the Debezium MySQL connector's
//! documented example change events (the create event of
//! `inventory.customers` in its tutorial, kept here), and every column type
//! against the documented type mappings.

use serde_json::{Value as Json, json};
use tributary_core::{
    BinlogFilePos, Column, ColumnType, Decimal, ErrorKind, Op, SourcePosition, TableId,
    TableSchema, Value,
};
use tributary_kafka::{
    DecimalMode, DecodedMessage, EnvelopeConfig, SourceInfo, decode_message, decode_value,
    encode_key, encode_truncate, encode_value,
};

/// The payload of Debezium's documented create event (MySQL tutorial).
fn documented_create() -> Json {
    json!({
        "before": null,
        "after": {"id": 1004, "first_name": "Anne", "last_name": "Kretchmar", "email": "annek@noanswer.org"},
        "source": {
            "version": "2.7.0.Final", "connector": "mysql", "name": "dbserver1",
            "ts_ms": 1486500577000_i64, "snapshot": "false", "db": "inventory",
            "table": "customers", "server_id": 223344, "gtid": null,
            "file": "mysql-bin.000003", "pos": 364, "row": 0, "thread": 13, "query": null
        },
        "op": "c",
        "ts_ms": 1486500577691_i64,
        "transaction": null
    })
}

fn customers() -> TableSchema {
    let s = |n: &str| Column::new(n, ColumnType::String { max_len: Some(255) }, false);
    TableSchema::new(
        TableId::new("inventory", "customers"),
        vec![
            Column::new("id", ColumnType::Int32, false),
            s("first_name"),
            s("last_name"),
            s("email"),
        ],
        &["id"],
        1,
    )
    .unwrap()
}

fn config(schemas: bool) -> EnvelopeConfig {
    EnvelopeConfig {
        prefix: "dbserver1".into(),
        schemas_enable: schemas,
        decimal_mode: DecimalMode::String,
    }
}

/// The JSON kind of every leaf, by path: what a consumer's parser meets.
fn shape(v: &Json, path: &str, out: &mut Vec<(String, &'static str)>) {
    let kind = match v {
        Json::Null => "null",
        Json::Bool(_) => "bool",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(m) => {
            for (k, x) in m {
                shape(x, &format!("{path}.{k}"), out);
            }
            return;
        }
    };
    out.push((path.to_string(), kind));
}

#[test]
fn a_create_event_has_the_documented_fields_and_shapes() {
    let row = vec![
        Value::Int32(1004),
        Value::String("Anne".into()),
        Value::String("Kretchmar".into()),
        Value::String("annek@noanswer.org".into()),
    ];
    let source = SourceInfo {
        server_id: 223344,
        gtid: None,
        file: "mysql-bin.000003".into(),
        pos: 364,
        row: 0,
        ts_ms: 1486500577000,
        snapshot: false,
    };
    let ours = encode_value(
        &config(false),
        &customers(),
        Op::Insert,
        None,
        Some(&row),
        &source,
        1486500577691,
    )
    .unwrap();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    shape(&ours, "", &mut a);
    shape(&documented_create(), "", &mut b);
    // Fields the documented event has that a binlog reader without the
    // session's thread id and query text leaves out.
    b.retain(|(p, _)| p != ".source.thread" && p != ".source.query");
    a.retain(|(p, _)| p != ".source.version");
    b.retain(|(p, _)| p != ".source.version");
    a.sort();
    b.sort();
    assert_eq!(a, b);
    assert_eq!(ours["after"], documented_create()["after"]);
    assert_eq!(ours["op"], "c");

    let key = encode_key(&config(false), &customers(), &row).unwrap();
    assert_eq!(key, json!({"id": 1004}));
    let keyed = encode_key(&config(true), &customers(), &row).unwrap();
    assert_eq!(keyed["schema"]["name"], "dbserver1.inventory.customers.Key");
    assert_eq!(
        keyed["schema"]["fields"][0],
        json!({"type": "int32", "optional": false, "field": "id"})
    );
    assert_eq!(keyed["payload"], key);

    // With schemas: the envelope's schema names the documented parts.
    let full = encode_value(
        &config(true),
        &customers(),
        Op::Delete,
        Some(&row),
        None,
        &source,
        1,
    )
    .unwrap();
    let fields: Vec<&str> = full["schema"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["before", "after", "source", "op", "ts_ms", "transaction"]
    );
    assert_eq!(
        full["schema"]["name"],
        "dbserver1.inventory.customers.Envelope"
    );
    assert_eq!(
        full["schema"]["fields"][0]["name"],
        "dbserver1.inventory.customers.Value"
    );
    assert_eq!(
        full["schema"]["fields"][2]["name"],
        "io.debezium.connector.mysql.Source"
    );
    assert_eq!(full["payload"]["op"], "d");
    assert_eq!(full["payload"]["after"], Json::Null);
    assert_eq!(full["payload"]["before"]["email"], "annek@noanswer.org");
}

/// Every column type: a value, the Connect type and name Debezium
/// documents for it, and the payload it becomes.
type TypeCase = (ColumnType, Value, &'static str, Option<&'static str>, Json);

fn type_cases() -> Vec<TypeCase> {
    use ColumnType as T;
    vec![
        (T::Bool, Value::Bool(true), "boolean", None, json!(true)),
        (
            T::Bit { width: 1 },
            Value::Bit(1),
            "boolean",
            None,
            json!(true),
        ),
        (T::Int8, Value::Int8(-8), "int16", None, json!(-8)),
        (T::UInt8, Value::UInt8(200), "int16", None, json!(200)),
        (T::Int16, Value::Int16(-300), "int16", None, json!(-300)),
        (T::UInt16, Value::UInt16(60000), "int32", None, json!(60000)),
        (
            T::Int24,
            Value::Int32(-8_000_000),
            "int32",
            None,
            json!(-8_000_000),
        ),
        (T::Int32, Value::Int32(7), "int32", None, json!(7)),
        (
            T::UInt32,
            Value::UInt32(4_000_000_000),
            "int64",
            None,
            json!(4_000_000_000_u64),
        ),
        (T::Int64, Value::Int64(-1), "int64", None, json!(-1)),
        // 2^64-1 as Connect Decimal bytes: 00 ff×8.
        (
            T::UInt64,
            Value::UInt64(u64::MAX),
            "bytes",
            Some("org.apache.kafka.connect.data.Decimal"),
            json!("AP//////////"),
        ),
        (T::Float, Value::Float(1.5), "float", None, json!(1.5)),
        (
            T::Double,
            Value::Double(-2.25),
            "double",
            None,
            json!(-2.25),
        ),
        (
            T::Decimal {
                precision: 10,
                scale: 2,
            },
            Value::Decimal(Decimal::new(arrow_buffer::i256::from_i128(123456), 2)),
            "string",
            None,
            json!("1234.56"),
        ),
        (
            T::String { max_len: None },
            Value::String("é".into()),
            "string",
            None,
            json!("é"),
        ),
        (
            T::Bytes { max_len: None },
            Value::Bytes(vec![0, 1, 255]),
            "string",
            None,
            json!("AAH/"),
        ),
        (
            T::Date,
            Value::Date(20000),
            "int32",
            Some("io.debezium.time.Date"),
            json!(20000),
        ),
        (
            T::Time { fsp: 6 },
            Value::Time(-1_500_000),
            "int64",
            Some("io.debezium.time.MicroTime"),
            json!(-1_500_000),
        ),
        (
            T::DateTime { fsp: 0 },
            Value::DateTime(1_000_123_456),
            "int64",
            Some("io.debezium.time.Timestamp"),
            json!(1_000_123),
        ),
        (
            T::DateTime { fsp: 6 },
            Value::DateTime(1_000_123_456),
            "int64",
            Some("io.debezium.time.MicroTimestamp"),
            json!(1_000_123_456),
        ),
        (
            T::Timestamp { fsp: 3 },
            Value::Timestamp(1_529_476_623_000_000),
            "string",
            Some("io.debezium.time.ZonedTimestamp"),
            json!("2018-06-20T06:37:03Z"),
        ),
        (
            T::Year,
            Value::Year(2026),
            "int32",
            Some("io.debezium.time.Year"),
            json!(2026),
        ),
        // b'1000000001' (513): little-endian 01 02.
        (
            T::Bit { width: 10 },
            Value::Bit(513),
            "bytes",
            Some("io.debezium.data.Bits"),
            json!("AQI="),
        ),
        (
            T::Enum {
                labels: vec!["a".into(), "b".into()],
            },
            Value::Enum("b".into()),
            "string",
            Some("io.debezium.data.Enum"),
            json!("b"),
        ),
        (
            T::Set {
                labels: vec!["x".into(), "y".into()],
            },
            Value::Set("x,y".into()),
            "string",
            Some("io.debezium.data.EnumSet"),
            json!("x,y"),
        ),
        (
            T::Json,
            Value::Json("{\"k\":1}".into()),
            "string",
            Some("io.debezium.data.Json"),
            json!("{\"k\":1}"),
        ),
    ]
}

/// A table with one nullable column `c{i}` per case after the key `id`.
fn all_types_schema(cases: &[TypeCase]) -> TableSchema {
    let mut columns = vec![Column::new("id", ColumnType::Int32, false)];
    for (i, (t, ..)) in cases.iter().enumerate() {
        columns.push(Column::new(format!("c{i}"), t.clone(), true));
    }
    TableSchema::new(TableId::new("d", "all_types"), columns, &["id"], 1).unwrap()
}

#[test]
fn every_column_type_is_encoded_as_the_debezium_mapping_documents() {
    let cases = type_cases();
    let schema = all_types_schema(&cases);
    let row: Vec<Value> = std::iter::once(Value::Int32(1))
        .chain(cases.iter().map(|c| c.1.clone()))
        .collect();
    let out = encode_value(
        &config(true),
        &schema,
        Op::Read,
        None,
        Some(&row),
        &SourceInfo::default(),
        0,
    )
    .unwrap();
    let fields = out["schema"]["fields"][1]["fields"].as_array().unwrap();
    for (i, (t, _, kind, name, payload)) in cases.iter().enumerate() {
        let f = &fields[i + 1];
        assert_eq!(f["type"], *kind, "{t:?}: {f}");
        assert_eq!(f["name"].as_str(), *name, "{t:?}: {f}");
        assert_eq!(f["optional"], true);
        assert_eq!(out["payload"]["after"][format!("c{i}")], *payload, "{t:?}");
    }
    assert_eq!(out["payload"]["op"], "r");
    // A NULL is null whatever the type.
    let nulls: Vec<Value> = std::iter::once(Value::Int32(2))
        .chain(cases.iter().map(|_| Value::Null))
        .collect();
    let out = encode_value(
        &config(false),
        &schema,
        Op::Insert,
        None,
        Some(&nulls),
        &SourceInfo::default(),
        0,
    )
    .unwrap();
    assert!((0..cases.len()).all(|i| out["after"][format!("c{i}")].is_null()));
    // Precise decimals: Connect's Decimal with scale and precision.
    let precise = EnvelopeConfig {
        decimal_mode: DecimalMode::Precise,
        ..config(true)
    };
    let out = encode_value(
        &precise,
        &schema,
        Op::Read,
        None,
        Some(&row),
        &SourceInfo::default(),
        0,
    )
    .unwrap();
    let d = &out["schema"]["fields"][1]["fields"][14];
    assert_eq!(d["name"], "org.apache.kafka.connect.data.Decimal");
    assert_eq!(
        d["parameters"],
        json!({"scale": "2", "connect.decimal.precision": "10"})
    );
    // 123456 = 0x01e240.
    assert_eq!(out["payload"]["after"]["c13"], "AeJA");
}

#[test]
fn every_column_type_decodes_back_to_the_row_in_every_mode() {
    let cases = type_cases();
    let schema = all_types_schema(&cases);
    // Values the envelope carries exactly: a DATETIME(0) travels in whole
    // milliseconds, and a double decimal must fit a double's digits.
    let after: Vec<Value> = std::iter::once(Value::Int32(1))
        .chain(cases.iter().map(|(t, v, ..)| match (t, v) {
            (ColumnType::DateTime { fsp: 0 }, _) => Value::DateTime(1_000_123_000),
            _ => v.clone(),
        }))
        .collect();
    let nulls: Vec<Value> = std::iter::once(Value::Int32(1))
        .chain(cases.iter().map(|_| Value::Null))
        .collect();
    let source = SourceInfo {
        server_id: 1,
        gtid: Some("0-1-5".into()),
        file: "mysql-bin.000003".into(),
        pos: 364,
        row: 0,
        ts_ms: 1_486_500_577_000,
        snapshot: false,
    };
    let position = SourcePosition::MariaDbGtid {
        gtid_list: "0-1-5".parse().unwrap(),
        file_pos: Some(BinlogFilePos::new("mysql-bin.000003", 364)),
    };
    for mode in [
        DecimalMode::String,
        DecimalMode::Precise,
        DecimalMode::Double,
    ] {
        for schemas in [false, true] {
            let config = EnvelopeConfig {
                decimal_mode: mode,
                ..config(schemas)
            };
            for (op, before, image) in [
                (Op::Insert, None, Some(&after)),
                (Op::Update, Some(&nulls), Some(&after)),
                (Op::Delete, Some(&after), None),
            ] {
                let json = encode_value(
                    &config,
                    &schema,
                    op,
                    before.map(|r| r.as_slice()),
                    image.map(|r| r.as_slice()),
                    &source,
                    0,
                )
                .unwrap();
                let bytes = serde_json::to_vec(&json).unwrap();
                let decoded = decode_value(&schema, schemas, mode, &bytes)
                    .unwrap_or_else(|e| panic!("{mode:?} schemas={schemas} {op:?}: {e}"));
                let context = format!("{mode:?} schemas={schemas} {op:?}");
                assert_eq!(decoded.op, op, "{context}");
                assert_eq!(decoded.before.as_ref(), before, "{context}");
                assert_eq!(decoded.after.as_ref(), image, "{context}");
                assert_eq!(decoded.position.as_ref(), Some(&position), "{context}");
                assert_eq!(decoded.commit_ts_micros, 1_486_500_577_000_000);
            }
        }
    }
    // A file position alone (no GTIDs) comes back as one.
    let plain = SourceInfo {
        gtid: None,
        ..source.clone()
    };
    let json = encode_value(
        &config(false),
        &schema,
        Op::Read,
        None,
        Some(&after),
        &plain,
        0,
    )
    .unwrap();
    let decoded = decode_value(
        &schema,
        false,
        DecimalMode::String,
        json.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(
        decoded.position,
        Some(SourcePosition::FilePos(BinlogFilePos::new(
            "mysql-bin.000003",
            364
        )))
    );
    // A truncate: Debezium's `op` `t` without row images, read back as one
    // (and refused where a row change is expected).
    for schemas in [false, true] {
        let json = encode_truncate(&config(schemas), &schema, &source, 0).unwrap();
        let payload = if schemas { &json["payload"] } else { &json };
        assert_eq!(payload["op"], "t");
        assert!(payload["before"].is_null() && payload["after"].is_null());
        let bytes = json.to_string().into_bytes();
        let decoded = decode_message(&schema, schemas, DecimalMode::String, &bytes).unwrap();
        assert_eq!(
            decoded,
            DecodedMessage::Truncate {
                position: Some(position.clone()),
                commit_ts_micros: 1_486_500_577_000_000
            }
        );
        let e = decode_value(&schema, schemas, DecimalMode::String, &bytes).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidData);
    }
}

#[test]
fn an_undecodable_message_is_invalid_data_naming_what_is_wrong() {
    let schema = customers();
    let good = json!({
        "before": null,
        "after": {"id": 1, "first_name": "a", "last_name": "b", "email": "c"},
        "source": {"file": "f.000001", "pos": 4},
        "op": "c",
    });
    let decode = |v: &[u8], schemas: bool| decode_value(&schema, schemas, DecimalMode::String, v);
    assert!(decode(good.to_string().as_bytes(), false).is_ok());
    let mut cases: Vec<(Vec<u8>, bool, &str)> = vec![
        (b"{not json".to_vec(), false, "not JSON"),
        (good.to_string().into_bytes(), true, "payload"),
    ];
    let mut unknown_op = good.clone();
    unknown_op["op"] = json!("x");
    cases.push((unknown_op.to_string().into_bytes(), false, "unknown op"));
    let mut wrong_type = good.clone();
    wrong_type["after"]["id"] = json!("one");
    cases.push((wrong_type.to_string().into_bytes(), false, "after.id"));
    let mut missing = good.clone();
    missing["after"].as_object_mut().unwrap().remove("email");
    cases.push((missing.to_string().into_bytes(), false, "email"));
    for (bytes, schemas, needle) in cases {
        let e = decode(&bytes, schemas).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidData, "{e}");
        assert!(e.to_string().contains(needle), "{e} should name {needle}");
    }
}
