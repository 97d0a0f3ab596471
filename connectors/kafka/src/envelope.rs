//! Change events as the Debezium MySQL connector writes them, so that any
//! consumer of Debezium topics (Flink CDC's `debezium-json`, Kafka Connect
//! sinks, ksqlDB) reads ours unchanged.
//!
//! Key: the primary key columns as a struct. Value: the envelope `before`,
//! `after`, `source`, `op` (`c` insert, `u` update, `d` delete, `r`
//! snapshot read), `ts_ms`. With `schemas_enable` (Kafka's JsonConverter
//! `schemas.enable`) each is `{"schema": …, "payload": …}`, else the
//! payload alone.
//!
//! Column encodings, with the Debezium settings they match:
//!
//! | column | literal type | semantic type (schema name) |
//! |---|---|---|
//! | BOOLEAN, BIT(1) | boolean | |
//! | TINYINT, SMALLINT, TINYINT UNSIGNED | int16 | |
//! | MEDIUMINT, INT, SMALLINT/MEDIUMINT UNSIGNED | int32 | |
//! | BIGINT, INT UNSIGNED | int64 | |
//! | BIGINT UNSIGNED (`bigint.unsigned.handling.mode=precise`) | bytes | `org.apache.kafka.connect.data.Decimal`, scale 0 |
//! | FLOAT / DOUBLE | float / double | |
//! | DECIMAL (`decimal.handling.mode`: `string`, the default here — exact) | string | |
//! | DECIMAL (`precise`) | bytes (two's complement, big-endian, base64) | `org.apache.kafka.connect.data.Decimal` |
//! | DECIMAL (`double`) | double | |
//! | CHAR, VARCHAR, TEXT | string | |
//! | BINARY, VARBINARY, BLOB (`binary.handling.mode=base64`) | string (base64) | |
//! | DATE | int32 (days since the epoch) | `io.debezium.time.Date` |
//! | TIME (`time.precision.mode=adaptive_time_microseconds`) | int64 (µs) | `io.debezium.time.MicroTime` |
//! | DATETIME(0–3) | int64 (ms) | `io.debezium.time.Timestamp` |
//! | DATETIME(4–6) | int64 (µs) | `io.debezium.time.MicroTimestamp` |
//! | TIMESTAMP | string (ISO 8601, UTC) | `io.debezium.time.ZonedTimestamp` |
//! | YEAR | int32 | `io.debezium.time.Year` |
//! | BIT(n > 1) | bytes (little-endian, base64) | `io.debezium.data.Bits` |
//! | ENUM | string | `io.debezium.data.Enum` (`allowed`) |
//! | SET | string | `io.debezium.data.EnumSet` (`allowed`) |
//! | JSON | string | `io.debezium.data.Json` |

use base64::Engine;
use serde_json::{Map, Value as Json, json};
use tributary_core::{
    Column, ColumnType, Decimal, Error, Op, Result, SourcePosition, TableSchema, Value,
};

/// `decimal.handling.mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecimalMode {
    /// Exact text (`"12.50"`); the default here.
    #[default]
    String,
    /// Connect's `Decimal`: the unscaled value's bytes, exact.
    Precise,
    /// A JSON number (may lose digits).
    Double,
}

/// How envelopes are written.
#[derive(Debug, Clone)]
pub struct EnvelopeConfig {
    /// The logical server name (Debezium's `topic.prefix`), in `source.name`
    /// and the schema names.
    pub prefix: String,
    /// Kafka's JsonConverter `schemas.enable`.
    pub schemas_enable: bool,
    pub decimal_mode: DecimalMode,
}

/// Where a change came from: the envelope's `source` block.
#[derive(Debug, Clone, Default)]
pub struct SourceInfo {
    pub server_id: u32,
    pub gtid: Option<String>,
    pub file: String,
    pub pos: u64,
    /// The row's index within its event.
    pub row: u32,
    /// The source commit time (ms since the epoch).
    pub ts_ms: i64,
    /// Whether the row came from the initial read.
    pub snapshot: bool,
}

const CONNECTOR_VERSION: &str = concat!("tributary-", env!("CARGO_PKG_VERSION"));

/// A column's value as its Connect schema and JSON payload.
fn column_schema(c: &Column, mode: DecimalMode) -> Json {
    use ColumnType as T;
    let (kind, name, params): (&str, Option<&str>, Option<Json>) = match &c.data_type {
        T::Bool => ("boolean", None, None),
        T::Bit { width: 1 } => ("boolean", None, None),
        T::Int8 | T::Int16 | T::UInt8 => ("int16", None, None),
        T::Int24 | T::Int32 | T::UInt16 | T::UInt24 => ("int32", None, None),
        T::Int64 | T::UInt32 => ("int64", None, None),
        T::UInt64 => (
            "bytes",
            Some("org.apache.kafka.connect.data.Decimal"),
            Some(json!({"scale": "0", "connect.decimal.precision": "20"})),
        ),
        T::Float => ("float", None, None),
        T::Double => ("double", None, None),
        T::Decimal { precision, scale } => match mode {
            DecimalMode::String => ("string", None, None),
            DecimalMode::Double => ("double", None, None),
            DecimalMode::Precise => (
                "bytes",
                Some("org.apache.kafka.connect.data.Decimal"),
                Some(json!({
                    "scale": scale.to_string(),
                    "connect.decimal.precision": precision.to_string(),
                })),
            ),
        },
        T::String { .. } | T::Bytes { .. } => ("string", None, None),
        T::Date => ("int32", Some("io.debezium.time.Date"), None),
        T::Time { .. } => ("int64", Some("io.debezium.time.MicroTime"), None),
        T::DateTime { fsp } if *fsp <= 3 => ("int64", Some("io.debezium.time.Timestamp"), None),
        T::DateTime { .. } => ("int64", Some("io.debezium.time.MicroTimestamp"), None),
        T::Timestamp { .. } => ("string", Some("io.debezium.time.ZonedTimestamp"), None),
        T::Year => ("int32", Some("io.debezium.time.Year"), None),
        T::Bit { width } => (
            "bytes",
            Some("io.debezium.data.Bits"),
            Some(json!({"length": width.to_string()})),
        ),
        T::Enum { labels } => (
            "string",
            Some("io.debezium.data.Enum"),
            Some(json!({"allowed": labels.join(",")})),
        ),
        T::Set { labels } => (
            "string",
            Some("io.debezium.data.EnumSet"),
            Some(json!({"allowed": labels.join(",")})),
        ),
        T::Json => ("string", Some("io.debezium.data.Json"), None),
    };
    let mut s = Map::new();
    s.insert("type".into(), kind.into());
    s.insert("optional".into(), c.nullable.into());
    if let Some(name) = name {
        s.insert("name".into(), name.into());
        s.insert("version".into(), 1.into());
    }
    if let Some(p) = params {
        s.insert("parameters".into(), p);
    }
    s.insert("field".into(), c.name.clone().into());
    Json::Object(s)
}

fn base64(bytes: &[u8]) -> Json {
    base64::engine::general_purpose::STANDARD
        .encode(bytes)
        .into()
}

/// The shortest two's-complement big-endian form (Java's
/// `BigInteger.toByteArray`, what Connect's `Decimal` carries).
fn twos_complement(be: &[u8]) -> &[u8] {
    let mut start = 0;
    while start + 1 < be.len() {
        let (b, next) = (be[start], be[start + 1]);
        if (b == 0x00 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    &be[start..]
}

/// A value as the payload `column`'s schema describes.
fn column_value(c: &Column, v: &Value, mode: DecimalMode) -> Result<Json> {
    use ColumnType as T;
    Ok(match (v, &c.data_type) {
        (Value::Null, _) => Json::Null,
        (Value::Bool(b), _) => (*b).into(),
        (Value::Bit(bits), T::Bit { width: 1 }) => (*bits != 0).into(),
        (Value::Bit(bits), T::Bit { width }) => {
            let n = usize::from(*width).div_ceil(8);
            base64(&bits.to_le_bytes()[..n])
        }
        (Value::Int8(x), _) => (*x).into(),
        (Value::Int16(x), _) => (*x).into(),
        (Value::Int32(x), _) => (*x).into(),
        (Value::Int64(x), _) => (*x).into(),
        (Value::UInt8(x), _) => (*x).into(),
        (Value::UInt16(x), _) => (*x).into(),
        (Value::UInt32(x), _) => (*x).into(),
        (Value::UInt64(x), _) => base64(twos_complement(&i128::from(*x).to_be_bytes())),
        (Value::Float(x), _) => Json::from(f64::from(*x)),
        (Value::Double(x), _) => Json::from(*x),
        (Value::Decimal(d), _) => match mode {
            DecimalMode::String => d.to_string().into(),
            DecimalMode::Double => d
                .to_string()
                .parse::<f64>()
                .map(Json::from)
                .map_err(|e| Error::invalid_data(format!("{}: {e}", c.name)))?,
            DecimalMode::Precise => base64(twos_complement(&d.unscaled().to_be_bytes())),
        },
        (Value::String(s), _) => s.clone().into(),
        (Value::Bytes(b), _) => base64(b),
        (Value::Date(days), _) => (*days).into(),
        (Value::Time(micros), _) => (*micros).into(),
        (Value::DateTime(micros), T::DateTime { fsp }) if *fsp <= 3 => {
            micros.div_euclid(1000).into()
        }
        (Value::DateTime(micros), _) => (*micros).into(),
        (Value::Timestamp(micros), _) => {
            let t = chrono::DateTime::from_timestamp_micros(*micros).ok_or_else(|| {
                Error::invalid_data(format!("{}: timestamp {micros} µs out of range", c.name))
            })?;
            t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                .into()
        }
        (Value::Year(y), _) => (*y).into(),
        (Value::Bit(bits), _) => (*bits).into(),
        (Value::Enum(s) | Value::Set(s) | Value::Json(s), _) => s.clone().into(),
    })
}

/// A row of `schema` (or only `columns` of it) as a struct payload.
fn row_payload(
    schema: &TableSchema,
    columns: &[usize],
    row: &[Value],
    mode: DecimalMode,
) -> Result<Json> {
    let mut out = Map::new();
    for &i in columns {
        let c = &schema.columns[i];
        let v = row.get(i).ok_or_else(|| {
            Error::invalid_data(format!("{}: a row without column {}", schema.table, c.name))
        })?;
        out.insert(c.name.clone(), column_value(c, v, mode)?);
    }
    Ok(Json::Object(out))
}

fn row_schema(
    schema: &TableSchema,
    columns: &[usize],
    name: String,
    optional: bool,
    field: Option<&str>,
    mode: DecimalMode,
) -> Json {
    let fields: Vec<Json> = columns
        .iter()
        .map(|&i| column_schema(&schema.columns[i], mode))
        .collect();
    let mut s = json!({"type": "struct", "fields": fields, "optional": optional, "name": name});
    if let Some(f) = field {
        s["field"] = f.into();
    }
    s
}

fn wrap(config: &EnvelopeConfig, schema: Json, payload: Json) -> Json {
    if config.schemas_enable {
        json!({"schema": schema, "payload": payload})
    } else {
        payload
    }
}

/// The message key of a row: its primary key columns (Debezium's
/// `<prefix>.<db>.<table>.Key` struct).
pub fn encode_key(config: &EnvelopeConfig, schema: &TableSchema, row: &[Value]) -> Result<Json> {
    let t = &schema.table;
    let name = format!("{}.{}.{}.Key", config.prefix, t.database, t.table);
    let payload = row_payload(schema, &schema.primary_key, row, config.decimal_mode)?;
    let key_schema = row_schema(
        schema,
        &schema.primary_key,
        name,
        false,
        None,
        config.decimal_mode,
    );
    Ok(wrap(config, key_schema, payload))
}

/// The message value of one change: the Debezium envelope.
pub fn encode_value(
    config: &EnvelopeConfig,
    schema: &TableSchema,
    op: Op,
    before: Option<&[Value]>,
    after: Option<&[Value]>,
    source: &SourceInfo,
    now_ms: i64,
) -> Result<Json> {
    let t = &schema.table;
    let all: Vec<usize> = (0..schema.columns.len()).collect();
    let mode = config.decimal_mode;
    let image = |row: Option<&[Value]>| -> Result<Json> {
        row.map_or(Ok(Json::Null), |r| row_payload(schema, &all, r, mode))
    };
    let op_code = match op {
        Op::Read => "r",
        Op::Insert => "c",
        Op::Update => "u",
        Op::Delete => "d",
    };
    let snapshot = if source.snapshot { "true" } else { "false" };
    let source_payload = json!({
        "version": CONNECTOR_VERSION,
        "connector": "mysql",
        "name": config.prefix,
        "ts_ms": source.ts_ms,
        "snapshot": snapshot,
        "db": t.database,
        "table": t.table,
        "server_id": source.server_id,
        "gtid": source.gtid,
        "file": source.file,
        "pos": source.pos,
        "row": source.row,
    });
    let payload = json!({
        "before": image(before)?,
        "after": image(after)?,
        "source": source_payload,
        "op": op_code,
        "ts_ms": now_ms,
        "transaction": null,
    });
    if !config.schemas_enable {
        return Ok(payload);
    }
    let value_name = format!("{}.{}.{}.Value", config.prefix, t.database, t.table);
    let field = |f: &str, kind: &str, optional: bool| json!({"type": kind, "optional": optional, "field": f});
    let source_schema = json!({
        "type": "struct",
        "name": "io.debezium.connector.mysql.Source",
        "optional": false,
        "field": "source",
        "fields": [
            field("version", "string", false),
            field("connector", "string", false),
            field("name", "string", false),
            field("ts_ms", "int64", false),
            {"type": "string", "optional": true, "name": "io.debezium.data.Enum", "version": 1,
             "parameters": {"allowed": "true,last,false,incremental"}, "default": "false",
             "field": "snapshot"},
            field("db", "string", false),
            field("table", "string", true),
            field("server_id", "int64", false),
            field("gtid", "string", true),
            field("file", "string", false),
            field("pos", "int64", false),
            field("row", "int32", false),
        ],
    });
    let schema_json = json!({
        "type": "struct",
        "name": format!("{}.{}.{}.Envelope", config.prefix, t.database, t.table),
        "optional": false,
        "version": 1,
        "fields": [
            row_schema(schema, &all, value_name.clone(), true, Some("before"), mode),
            row_schema(schema, &all, value_name, true, Some("after"), mode),
            source_schema,
            field("op", "string", false),
            field("ts_ms", "int64", true),
            {"type": "struct", "optional": true, "name": "event.block", "version": 1,
             "field": "transaction", "fields": [
                field("id", "string", false),
                field("total_order", "int64", false),
                field("data_collection_order", "int64", false),
             ]},
        ],
    });
    Ok(wrap(config, schema_json, payload))
}

/// A table's truncation as a message of its topic (the relay sends one to
/// every partition): Debezium's truncate event shape, `op` `t` with no
/// row images.
pub fn encode_truncate(
    config: &EnvelopeConfig,
    schema: &TableSchema,
    source: &SourceInfo,
    now_ms: i64,
) -> Result<Json> {
    let mut value = encode_value(config, schema, Op::Delete, None, None, source, now_ms)?;
    let payload = match config.schemas_enable {
        true => &mut value["payload"],
        false => &mut value,
    };
    payload["op"] = json!("t");
    Ok(value)
}

/// What a message of a table's topic says.
#[derive(Debug, Clone, PartialEq)]
pub enum DecodedMessage {
    Change(DecodedChange),
    /// The table was truncated at `position` (`encode_truncate`).
    Truncate {
        position: Option<SourcePosition>,
        commit_ts_micros: i64,
    },
}

/// One change message read back: what `encode_value` wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedChange {
    pub op: Op,
    pub before: Option<Vec<Value>>,
    pub after: Option<Vec<Value>>,
    /// The source position of the row's transaction (from `source`'s
    /// `gtid`, `file` and `pos`).
    pub position: Option<SourcePosition>,
    /// `source.ts_ms`, in microseconds.
    pub commit_ts_micros: i64,
}

/// Reads a change message of `schema`'s table written with
/// `schemas_enable` and `mode`. Every problem names the column and the value.
pub fn decode_value(
    schema: &TableSchema,
    schemas_enable: bool,
    mode: DecimalMode,
    value: &[u8],
) -> Result<DecodedChange> {
    match decode_message(schema, schemas_enable, mode, value)? {
        DecodedMessage::Change(c) => Ok(c),
        DecodedMessage::Truncate { .. } => Err(Error::invalid_data("a truncate, not a row change")),
    }
}

/// Reads any message of `schema`'s table: a row change or a truncate.
///
/// The message is deserialized straight into its parts (`wire`), not into
/// a JSON tree: only each column's own value becomes a JSON scalar, then
/// `decode_column` turns it into our type.
pub fn decode_message(
    schema: &TableSchema,
    schemas_enable: bool,
    mode: DecimalMode,
    value: &[u8],
) -> Result<DecodedMessage> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(value);
    let seed = wire::MessageSeed {
        columns: &schema.columns,
        schemas_enable,
    };
    let message = seed
        .deserialize(&mut de)
        .and_then(|m| de.end().map(|()| m))
        .map_err(|e| Error::invalid_data(format!("not JSON of a change: {e}")))?;
    let Some(payload) = message else {
        return Err(Error::invalid_data(
            "no \"payload\" (written without schemas?)",
        ));
    };
    let op = match payload.op.as_deref() {
        Some("r") => Op::Read,
        Some("c") => Op::Insert,
        Some("u") => Op::Update,
        Some("d") => Op::Delete,
        Some("t") => {
            let source = payload
                .source
                .ok_or_else(|| Error::invalid_data("no \"source\" block"))?;
            return Ok(DecodedMessage::Truncate {
                position: source.position()?,
                commit_ts_micros: source.ts_micros(),
            });
        }
        other => return Err(Error::invalid_data(format!("unknown op {other:?}"))),
    };
    let image = |name: &str, image: Option<wire::Image>| -> Result<Option<Vec<Value>>> {
        let Some(image) = image else {
            return Ok(None);
        };
        let wire::Image::Columns(values) = image else {
            return Err(Error::invalid_data(format!("{name} is not an object")));
        };
        schema
            .columns
            .iter()
            .zip(values)
            .map(|(c, j)| {
                let j = j.ok_or_else(|| {
                    Error::invalid_data(format!("{name} has no column {}", c.name))
                })?;
                decode_column(c, &j, mode)
                    .map_err(|e| e.with_context("column", format!("{name}.{}", c.name)))
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    };
    let (before, after) = (
        image("before", payload.before)?,
        image("after", payload.after)?,
    );
    let source = payload
        .source
        .ok_or_else(|| Error::invalid_data("no \"source\" block"))?;
    Ok(DecodedMessage::Change(DecodedChange {
        op,
        before,
        after,
        position: source.position()?,
        commit_ts_micros: source.ts_micros(),
    }))
}

/// The parts of a change message as they come off the wire.
mod wire {
    use std::borrow::Cow;
    use std::fmt;

    use serde::Deserialize;
    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
    use serde_json::Value as Json;
    use tributary_core::{BinlogFilePos, Column, Result, SourcePosition};

    /// The envelope (`schemas.enable`: `{"schema", "payload"}`) or the bare
    /// payload; None when an envelope has no payload.
    pub struct MessageSeed<'a> {
        pub columns: &'a [Column],
        pub schemas_enable: bool,
    }

    pub struct Payload<'de> {
        pub op: Option<Cow<'de, str>>,
        pub before: Option<Image>,
        pub after: Option<Image>,
        pub source: Option<Source<'de>>,
    }

    /// A row image: each column's JSON value in schema order (None: the
    /// column is missing), or something that is not an object.
    pub enum Image {
        Columns(Vec<Option<Json>>),
        NotAnObject,
    }

    #[derive(Deserialize)]
    pub struct Source<'a> {
        #[serde(borrow, default)]
        file: Option<Cow<'a, str>>,
        #[serde(default)]
        pos: Option<u64>,
        #[serde(borrow, default)]
        gtid: Option<Cow<'a, str>>,
        #[serde(default)]
        ts_ms: Option<i64>,
    }

    impl Source<'_> {
        /// `source.ts_ms`, in microseconds.
        pub fn ts_micros(&self) -> i64 {
            self.ts_ms.unwrap_or(0).saturating_mul(1000)
        }

        /// The position the producer wrote: GTIDs (a MariaDB list or a
        /// MySQL set) with the file position, or the file position alone.
        pub fn position(&self) -> Result<Option<SourcePosition>> {
            let file = self.file.as_deref().unwrap_or("");
            let file_pos =
                (!file.is_empty()).then(|| BinlogFilePos::new(file, self.pos.unwrap_or(0)));
            Ok(match self.gtid.as_deref() {
                Some(g) if !g.is_empty() => match g.parse() {
                    Ok(gtid_list) => Some(SourcePosition::MariaDbGtid {
                        gtid_list,
                        file_pos,
                    }),
                    Err(_) => Some(SourcePosition::MySqlGtid {
                        gtid_set: g.parse()?,
                        file_pos,
                    }),
                },
                _ => file_pos.map(SourcePosition::FilePos),
            })
        }
    }

    impl<'de> DeserializeSeed<'de> for MessageSeed<'_> {
        type Value = Option<Payload<'de>>;

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            let payload = PayloadSeed(self.columns);
            if !self.schemas_enable {
                return payload.deserialize(d).map(Some);
            }
            d.deserialize_map(EnvelopeVisitor(payload))
        }
    }

    struct EnvelopeVisitor<'a>(PayloadSeed<'a>);

    impl<'de> Visitor<'de> for EnvelopeVisitor<'_> {
        type Value = Option<Payload<'de>>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object with \"schema\" and \"payload\"")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut payload = None;
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                if key == "payload" {
                    payload = Some(map.next_value_seed(PayloadSeed(self.0.0))?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(payload)
        }
    }

    #[derive(Clone, Copy)]
    struct PayloadSeed<'a>(&'a [Column]);

    impl<'de> DeserializeSeed<'de> for PayloadSeed<'_> {
        type Value = Payload<'de>;

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
    }

    impl<'de> Visitor<'de> for PayloadSeed<'_> {
        type Value = Payload<'de>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a change payload object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut p = Payload {
                op: None,
                before: None,
                after: None,
                source: None,
            };
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                match &*key {
                    "op" => p.op = map.next_value()?,
                    "before" => p.before = map.next_value_seed(ImageSeed(self.0))?,
                    "after" => p.after = map.next_value_seed(ImageSeed(self.0))?,
                    "source" => p.source = map.next_value()?,
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(p)
        }
    }

    /// `null` → None; an object → its columns by name; anything else →
    /// `NotAnObject`.
    struct ImageSeed<'a>(&'a [Column]);

    impl<'de> DeserializeSeed<'de> for ImageSeed<'_> {
        type Value = Option<Image>;

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for ImageSeed<'_> {
        type Value = Option<Image>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a row image object or null")
        }

        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut values: Vec<Option<Json>> = vec![None; self.0.len()];
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                match self.0.iter().position(|c| c.name == *key) {
                    Some(i) => values[i] = Some(map.next_value()?),
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(Some(Image::Columns(values)))
        }

        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Some(Image::NotAnObject))
        }

        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(Some(Image::NotAnObject))
        }

        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(Some(Image::NotAnObject))
        }

        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(Some(Image::NotAnObject))
        }

        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(Some(Image::NotAnObject))
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Some(Image::NotAnObject))
        }
    }
}

fn unbase64(s: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| Error::invalid_data(format!("not base64: {e}")))
}

/// Big-endian two's complement of any length (Connect's `Decimal`) as i256.
fn from_twos_complement(bytes: &[u8]) -> Result<arrow_buffer::i256> {
    if bytes.is_empty() || bytes.len() > 32 {
        return Err(Error::invalid_data(format!(
            "a decimal of {} bytes",
            bytes.len()
        )));
    }
    let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0x00 };
    let mut be = [fill; 32];
    be[32 - bytes.len()..].copy_from_slice(bytes);
    Ok(arrow_buffer::i256::from_be_bytes(be))
}

/// A column's JSON payload as the value `column_value` encoded.
fn decode_column(c: &Column, j: &Json, mode: DecimalMode) -> Result<Value> {
    use ColumnType as T;
    if j.is_null() {
        return Ok(Value::Null);
    }
    let bad = || Error::invalid_data(format!("{j} does not fit {:?}", c.data_type));
    let int = || j.as_i64().ok_or_else(bad);
    let uint = || j.as_u64().ok_or_else(bad);
    let text = || j.as_str().ok_or_else(bad);
    Ok(match &c.data_type {
        T::Bool => Value::Bool(j.as_bool().ok_or_else(bad)?),
        T::Bit { width: 1 } => Value::Bit(u64::from(j.as_bool().ok_or_else(bad)?)),
        T::Bit { .. } => {
            let bytes = unbase64(text()?)?;
            if bytes.len() > 8 {
                return Err(bad());
            }
            let mut le = [0u8; 8];
            le[..bytes.len()].copy_from_slice(&bytes);
            Value::Bit(u64::from_le_bytes(le))
        }
        T::Int8 => Value::Int8(i8::try_from(int()?).map_err(|_| bad())?),
        T::Int16 => Value::Int16(i16::try_from(int()?).map_err(|_| bad())?),
        T::Int24 | T::Int32 => Value::Int32(i32::try_from(int()?).map_err(|_| bad())?),
        T::Int64 => Value::Int64(int()?),
        T::UInt8 => Value::UInt8(u8::try_from(uint()?).map_err(|_| bad())?),
        T::UInt16 => Value::UInt16(u16::try_from(uint()?).map_err(|_| bad())?),
        T::UInt24 | T::UInt32 => Value::UInt32(u32::try_from(uint()?).map_err(|_| bad())?),
        T::UInt64 => {
            let v = from_twos_complement(&unbase64(text()?)?)?;
            Value::UInt64(
                v.to_i128()
                    .and_then(|v| u64::try_from(v).ok())
                    .ok_or_else(bad)?,
            )
        }
        T::Float => Value::Float(j.as_f64().ok_or_else(bad)? as f32),
        T::Double => Value::Double(j.as_f64().ok_or_else(bad)?),
        T::Decimal { scale, .. } => {
            let d = match mode {
                DecimalMode::String => text()?.parse::<Decimal>()?,
                DecimalMode::Double => j.as_f64().ok_or_else(bad)?.to_string().parse()?,
                DecimalMode::Precise => {
                    Decimal::new(from_twos_complement(&unbase64(text()?)?)?, *scale)
                }
            };
            Value::Decimal(d.rescale(*scale).ok_or_else(bad)?)
        }
        T::String { .. } => Value::String(text()?.to_string()),
        T::Bytes { .. } => Value::Bytes(unbase64(text()?)?),
        T::Date => Value::Date(i32::try_from(int()?).map_err(|_| bad())?),
        T::Time { .. } => Value::Time(int()?),
        T::DateTime { fsp } if *fsp <= 3 => {
            Value::DateTime(int()?.checked_mul(1000).ok_or_else(bad)?)
        }
        T::DateTime { .. } => Value::DateTime(int()?),
        T::Timestamp { .. } => Value::Timestamp(
            chrono::DateTime::parse_from_rfc3339(text()?)
                .map_err(|_| bad())?
                .timestamp_micros(),
        ),
        T::Year => Value::Year(u16::try_from(uint()?).map_err(|_| bad())?),
        T::Enum { .. } => Value::Enum(text()?.to_string()),
        T::Set { .. } => Value::Set(text()?.to_string()),
        T::Json => Value::Json(text()?.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_core::Decimal;

    #[test]
    fn decimals_carry_javas_shortest_twos_complement() {
        let be = |x: i128| twos_complement(&x.to_be_bytes()).to_vec();
        assert_eq!(be(0), [0x00]);
        assert_eq!(be(127), [0x7f]);
        assert_eq!(be(128), [0x00, 0x80]);
        assert_eq!(be(-1), [0xff]);
        assert_eq!(be(-129), [0xff, 0x7f]);
        let d = Decimal::new(arrow_buffer::i256::from_i128(-1250), 2);
        let c = Column::new(
            "d",
            ColumnType::Decimal {
                precision: 10,
                scale: 2,
            },
            true,
        );
        let v = Value::Decimal(d);
        assert_eq!(column_value(&c, &v, DecimalMode::String).unwrap(), "-12.50");
        assert_eq!(column_value(&c, &v, DecimalMode::Double).unwrap(), -12.5);
        // -1250 = 0xfb1e.
        assert_eq!(column_value(&c, &v, DecimalMode::Precise).unwrap(), "+x4=");
    }
}
