//! The pipeline file: one source and one sink, in TOML.
//!
//! ```toml
//! [source.mysql]
//! host = "127.0.0.1"
//! user = "tributary"
//! password = { env = "MYSQL_PASSWORD" }
//! tables = { include = ["shop.*"] }
//!
//! [sink.iceberg]
//! properties = { warehouse = "s3://lake/wh", "s3.secret-access-key" = "${S3_SECRET}" }
//! ```
//!
//! `${NAME}` in any string value is replaced by the environment variable
//! NAME, after parsing, so a TOML syntax error can only quote the file's own
//! text. Every section is deserialized by its kind in the [`Registry`]
//! with unknown keys refused at every depth; errors name the key. No error
//! shows a value that came from the environment: those are replaced by
//! `<value of ${NAME}>`.

use std::path::Path;

use tributary_core::{Error, Result};

use crate::pipeline::{Pipeline, PipelineOptions};
use crate::registry::Registry;

/// Reads, expands and checks a pipeline file.
pub fn load_pipeline(path: &Path, registry: &Registry) -> Result<Pipeline> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::invalid_config(format!("cannot read {}: {e}", path.display())))?;
    parse_pipeline(&text, registry).map_err(|e| e.map_text(|t| format!("{}: {t}", path.display())))
}

/// A value taken from the environment, remembered so errors never show it.
struct FromEnv {
    key: String,
    var: String,
    value: String,
}

/// Parses, expands and checks a pipeline file's text.
pub fn parse_pipeline(text: &str, registry: &Registry) -> Result<Pipeline> {
    let mut value: toml::Value =
        toml::from_str(text).map_err(|e| Error::invalid_config(e.to_string()))?;
    let mut from_env = Vec::new();
    expand_env(&mut value, &mut Vec::new(), &mut from_env)?;
    build(value, registry).map_err(|e| redact(e, &from_env))
}

fn build(value: toml::Value, registry: &Registry) -> Result<Pipeline> {
    let toml::Value::Table(mut top) = value else {
        return Err(Error::invalid_config("a pipeline file is a TOML table"));
    };
    let mut section = |name: &str, known: Vec<&str>| -> Result<(String, toml::Value)> {
        let kinds: Vec<String> = known.iter().map(|k| format!("[{name}.{k}]")).collect();
        let one = || {
            Error::invalid_config(format!(
                "the pipeline needs exactly one {name}: {}",
                kinds.join(" or ")
            ))
        };
        let Some(toml::Value::Table(t)) = top.remove(name) else {
            return Err(one());
        };
        let mut entries = t.into_iter();
        match (entries.next(), entries.next()) {
            (Some(entry), None) => Ok(entry),
            _ => Err(one()),
        }
    };
    let (source_kind, source) = section("source", registry.source_kinds())?;
    let (sink_kind, sink) = section("sink", registry.sink_kinds())?;
    let options: PipelineOptions = match top.remove("pipeline") {
        None => PipelineOptions::default(),
        Some(v) => crate::registry::deserialize(v, "pipeline")?,
    };
    if let Some(key) = top.keys().next() {
        return Err(Error::invalid_config(format!(
            "unknown top-level key `{key}`: a pipeline file has [source.<kind>], [sink.<kind>] \
             and optionally [pipeline]"
        )));
    }
    let (source, sink) = (
        registry.source(&source_kind, source)?,
        registry.sink(&sink_kind, sink)?,
    );
    fit(&*source, &source_kind, &*sink, &sink_kind)?;
    Ok(Pipeline::new(source, sink)
        .with_kinds(&source_kind, &sink_kind)
        .with_options(options))
}

/// Refuses a source and a sink that cannot work together.
fn fit(
    source: &dyn tributary_core::SourceFactory,
    source_kind: &str,
    sink: &dyn tributary_core::SinkFactory,
    sink_kind: &str,
) -> Result<()> {
    if source.shared_by_workers() && !sink.merges_partition_claims() {
        return Err(Error::invalid_config(format!(
            "source.{source_kind}.group: workers of a consumer group commit to shared tables, \
             which [sink.{sink_kind}] cannot keep exactly-once; use [sink.iceberg], or leave \
             `group` out and run one consumer"
        )));
    }
    Ok(())
}

/// `tributary validate`: every error of a pipeline file at once (as far as
/// one error does not hide the next), each naming its key and the fix, with
/// no connection made. Empty when the file is good. Errors of one section
/// are found one after another: the key an error names is taken out and
/// the section checked again (a misspelt key also reports a required key
/// it then misses — both are true).
pub fn validate_pipeline_file(path: &Path, registry: &Registry) -> Vec<Error> {
    let at_file = |e: Error| e.map_text(|t| format!("{}: {t}", path.display()));
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            return vec![Error::invalid_config(format!(
                "cannot read {}: {e}",
                path.display()
            ))];
        }
    };
    validate_pipeline(&text, registry)
        .into_iter()
        .map(at_file)
        .collect()
}

/// [`validate_pipeline_file`] on a file's text.
pub fn validate_pipeline(text: &str, registry: &Registry) -> Vec<Error> {
    let mut value: toml::Value = match toml::from_str(text) {
        Ok(v) => v,
        Err(e) => return vec![Error::invalid_config(e.to_string())],
    };
    let mut from_env = Vec::new();
    if let Err(e) = expand_env(&mut value, &mut Vec::new(), &mut from_env) {
        return vec![redact(e, &from_env)];
    }
    let toml::Value::Table(mut top) = value else {
        return vec![Error::invalid_config("a pipeline file is a TOML table")];
    };
    let mut errors = Vec::new();
    let mut one_of =
        |name: &str, kinds: Vec<&str>, top: &mut toml::map::Map<String, toml::Value>| {
            let listed: Vec<String> = kinds.iter().map(|k| format!("[{name}.{k}]")).collect();
            match top.remove(name) {
                Some(toml::Value::Table(t)) if t.len() == 1 => t.into_iter().next(),
                _ => {
                    errors.push(Error::invalid_config(format!(
                        "the pipeline needs exactly one {name}: {}",
                        listed.join(" or ")
                    )));
                    None
                }
            }
        };
    let source = one_of("source", registry.source_kinds(), &mut top);
    let sink = one_of("sink", registry.sink_kinds(), &mut top);
    let options = top.remove("pipeline");
    for key in top.keys() {
        errors.push(Error::invalid_config(format!(
            "unknown top-level key `{key}`: a pipeline file has [source.<kind>], [sink.<kind>] \
             and optionally [pipeline]"
        )));
    }
    let both = match (&source, &sink) {
        (Some((a, x)), Some((b, y))) => Some((a.clone(), x.clone(), b.clone(), y.clone())),
        _ => None,
    };
    if let Some((kind, v)) = source {
        let prefix = format!("source.{kind}");
        errors.extend(section_errors(v, &prefix, |v| {
            registry.source(&kind, v).map(|_| ())
        }));
    }
    if let Some((kind, v)) = sink {
        let prefix = format!("sink.{kind}");
        errors.extend(section_errors(v, &prefix, |v| {
            registry.sink(&kind, v).map(|_| ())
        }));
    }
    if errors.is_empty()
        && let Some((source_kind, source, sink_kind, sink)) = both
        && let (Ok(source), Ok(sink)) = (
            registry.source(&source_kind, source),
            registry.sink(&sink_kind, sink),
        )
        && let Err(e) = fit(&*source, &source_kind, &*sink, &sink_kind)
    {
        errors.push(e);
    }
    if let Some(v) = options {
        errors.extend(section_errors(v, "pipeline", |v| {
            crate::registry::deserialize::<PipelineOptions>(v, "pipeline").map(|_| ())
        }));
    }
    errors.into_iter().map(|e| redact(e, &from_env)).collect()
}

/// Every error of one section: checked, the key the error names removed,
/// checked again (at most 25 rounds).
fn section_errors(
    mut value: toml::Value,
    prefix: &str,
    check: impl Fn(toml::Value) -> Result<()>,
) -> Vec<Error> {
    let mut errors = Vec::new();
    for _ in 0..25 {
        let Err(e) = check(value.clone()) else {
            break;
        };
        let key = failing_key(e.message(), prefix);
        errors.push(e);
        match key {
            Some(key) if remove_key(&mut value, &key) => {}
            _ => break,
        }
    }
    errors
}

/// The key (below `prefix`) an error message names: `prefix.a.b: …`, and
/// for an unknown field its own name below the path.
fn failing_key(message: &str, prefix: &str) -> Option<String> {
    let (path, text) = message.strip_prefix(prefix)?.split_once(": ")?;
    let mut key = path.trim_start_matches('.').to_string();
    if let Some(field) = text
        .strip_prefix("unknown field `")
        .and_then(|t| t.split_once('`'))
        .map(|(f, _)| f)
        && !key.ends_with(field)
    {
        if !key.is_empty() {
            key.push('.');
        }
        key.push_str(field);
    }
    (!key.is_empty()).then_some(key)
}

/// Removes `a.b.c` from `value`; false when it is not there.
fn remove_key(value: &mut toml::Value, key: &str) -> bool {
    let mut parts: Vec<&str> = key.split('.').collect();
    let Some(last) = parts.pop() else {
        return false;
    };
    let mut at = value;
    for p in parts {
        at = match at {
            toml::Value::Table(t) => match t.get_mut(p) {
                Some(v) => v,
                None => return false,
            },
            toml::Value::Array(a) => match p.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match at {
        toml::Value::Table(t) => t.remove(last).is_some(),
        toml::Value::Array(a) => match last.parse::<usize>() {
            Ok(i) if i < a.len() => {
                a.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// Replaces `${NAME}` in string values by the environment variable NAME.
fn expand_env(
    value: &mut toml::Value,
    path: &mut Vec<String>,
    seen: &mut Vec<FromEnv>,
) -> Result<()> {
    match value {
        toml::Value::String(s) => *s = expand_string(s, &path.join("."), seen)?,
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(i.to_string());
                expand_env(item, path, seen)?;
                path.pop();
            }
        }
        toml::Value::Table(table) => {
            for (key, item) in table.iter_mut() {
                path.push(key.clone());
                expand_env(item, path, seen)?;
                path.pop();
            }
        }
        _ => {}
    }
    Ok(())
}

fn expand_string(s: &str, key: &str, seen: &mut Vec<FromEnv>) -> Result<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start + 2..].find('}') else {
            return Err(Error::invalid_config(format!(
                "{key}: unclosed `${{` (write `${{NAME}}` to use the environment variable NAME)"
            )));
        };
        let name = &rest[start + 2..start + 2 + len];
        let value = std::env::var(name).map_err(|_| {
            Error::invalid_config(format!(
                "{key} uses the environment variable {name}, which is not set"
            ))
        })?;
        out.push_str(&value);
        seen.push(FromEnv {
            key: key.to_string(),
            var: name.to_string(),
            value,
        });
        rest = &rest[start + 3 + len..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Removes every value that came from the environment from an error: the
/// values themselves, and any quoted text in an error about a key that
/// holds one (serde quotes the offending value).
fn redact(e: Error, from_env: &[FromEnv]) -> Error {
    e.map_text(|text| {
        let mut text = text.to_string();
        for f in from_env {
            if f.value.chars().count() >= 3 {
                text = text.replace(&f.value, &format!("<value of ${{{}}}>", f.var));
            }
            if text.contains(&format!("{}: ", f.key)) {
                text = strip_quoted(&text, &f.var);
            }
        }
        text
    })
}

/// `invalid type: string "x", expected u16` → `invalid type: string <…>, expected u16`.
fn strip_quoted(text: &str, var: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(['"', '`']) {
        let quote = rest.as_bytes()[i] as char;
        let Some(len) = rest[i + 1..].find(quote) else {
            break;
        };
        out.push_str(&rest[..i]);
        let inner = &rest[i + 1..i + 1 + len];
        if inner.starts_with("<value of ") {
            out.push_str(&rest[i..i + 2 + len]);
        } else {
            out.push_str(&format!("<value of ${{{var}}}>"));
        }
        rest = &rest[i + 2 + len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Pipeline> {
        parse_pipeline(text, &Registry::builtin())
    }

    fn error(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    const SOURCE: &str = "[source.mysql]\nhost = \"h\"\nuser = \"u\"\n";
    const SINK: &str = "[sink.iceberg]\nproperties = { warehouse = \"/w\" }\n";

    #[test]
    fn env_variables_expand_in_strings_and_missing_ones_are_named() {
        let mut seen = Vec::new();
        // SAFETY: this test alone reads or writes these variables.
        unsafe { std::env::set_var("TRIBUTARY_TEST_SECRET", "s3cr3t") };
        assert_eq!(
            expand_string("a-${TRIBUTARY_TEST_SECRET}-b", "k", &mut seen).unwrap(),
            "a-s3cr3t-b"
        );
        assert_eq!(expand_string("no vars", "k", &mut seen).unwrap(), "no vars");
        let e = expand_string("${TRIBUTARY_TEST_UNSET_VAR}", "sink.x", &mut seen).unwrap_err();
        assert!(
            e.to_string()
                .contains("sink.x uses the environment variable TRIBUTARY_TEST_UNSET_VAR"),
            "{e}"
        );
        assert!(expand_string("${OPEN", "k", &mut seen).is_err());
    }

    #[test]
    fn validate_reports_every_error_of_a_file_at_once_each_naming_its_key() {
        let text = format!(
            "{SOURCE}prot = 3307\nsnapshot = {{ chunk_rowz = 1 }}\n\
             [sink.iceberg]\nproperties = {{ warehouse = \"/w\" }}\ncommit_interval = \"soon\"\n\
             [pipeline]\non_table_error = \"skip\"\n[extra]\n"
        );
        let errors: Vec<String> = validate_pipeline(&text, &Registry::builtin())
            .iter()
            .map(ToString::to_string)
            .collect();
        for key in [
            "`prot`",
            "source.mysql.snapshot",
            "`chunk_rowz`",
            "sink.iceberg.commit_interval",
            "pipeline.on_table_error",
            "`extra`",
        ] {
            assert!(
                errors.iter().any(|e| e.contains(key)),
                "{key} in {errors:#?}"
            );
        }
        assert_eq!(errors.len(), 5, "{errors:#?}");
        assert!(validate_pipeline(&format!("{SOURCE}{SINK}"), &Registry::builtin()).is_empty());
    }

    /// Ten malformed files, each refused with its own message.
    #[test]
    fn each_kind_of_malformed_file_gets_its_specific_message() {
        let cases = [
            ("source = 1\n[sink", "expected"),
            (SINK, "exactly one source"),
            (SOURCE, "exactly one sink"),
            (
                "[source.postgres]\nhost = \"h\"\n[sink.iceberg]\nproperties = { warehouse = \"/w\" }\n",
                "unknown source kind",
            ),
            (
                "[source.mysql]\nuser = \"u\"\n[sink.iceberg]\nproperties = { warehouse = \"/w\" }\n",
                "`host`",
            ),
            (
                "[source.mysql]\nhost = \"h\"\nuser = \"u\"\nport = \"x\"\n[sink.iceberg]\nproperties = { warehouse = \"/w\" }\n",
                "source.mysql.port",
            ),
            (
                "[source.mysql]\nhost = \"h\"\nuser = \"${TRIBUTARY_UNSET_VAR_FOR_TEST}\"\n[sink.iceberg]\nproperties = { warehouse = \"/w\" }\n",
                "TRIBUTARY_UNSET_VAR_FOR_TEST, which is not set",
            ),
            (
                "[source.mysql]\nhost = \"h\"\nuser = \"u\"\n[sink.iceberg]\nproperties = {}\n",
                "properties.warehouse is missing",
            ),
            (
                "[source.mysql]\nhost = \"h\"\nuser = \"u\"\n[sink.clickhouse]\nurls = []\n",
                "urls",
            ),
            (
                "[source.mysql]\nhost = \"h\"\nuser = \"u\"\n[sink.iceberg]\nproperties = { warehouse = \"/w\" }\ncommit_interval = 0\n",
                "commit_interval",
            ),
            (
                "[source.mysql]\nhost = \"h\"\nuser = \"u\"\n[sink.iceberg]\nproperties = { warehouse = \"/w\" }\n[pipeline]\non_table_error = \"ignore\"\n",
                "unknown variant `ignore`",
            ),
        ];
        for (text, want) in cases {
            let errors = validate_pipeline(text, &Registry::builtin());
            let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
            assert!(
                shown.iter().any(|e| e.contains(want)),
                "{want:?} in {shown:#?} for\n{text}"
            );
        }
    }

    #[test]
    fn on_table_error_is_stop_by_default_pause_on_request_and_nothing_else() {
        use crate::pipeline::OnTableError;
        assert_eq!(
            parse(&format!("{SOURCE}{SINK}"))
                .unwrap()
                .options()
                .on_table_error,
            OnTableError::Stop
        );
        let p = parse(&format!(
            "{SOURCE}{SINK}[pipeline]\non_table_error = \"pause\"\n"
        ))
        .unwrap();
        assert_eq!(p.options().on_table_error, OnTableError::Pause);
        let e = error(&format!(
            "{SOURCE}{SINK}[pipeline]\non_table_error = \"skip\"\n"
        ));
        assert!(
            e.contains("pipeline.on_table_error") && e.contains("stop") && e.contains("pause"),
            "{e}"
        );
    }

    #[test]
    fn a_misspelt_key_at_any_depth_is_refused_naming_it() {
        for (text, key) in [
            (format!("{SOURCE}prot = 3307\n{SINK}"), "`prot`"),
            (
                format!("{SOURCE}snapshot = {{ chunk_rowz = 8192 }}\n{SINK}"),
                "`chunk_rowz`",
            ),
            (
                format!("{SOURCE}tables = {{ inclde = [\"a.*\"] }}\n{SINK}"),
                "`inclde`",
            ),
            (format!("{SOURCE}{SINK}commit_rowz = 5\n"), "`commit_rowz`"),
            (
                format!("{SOURCE}[sink.clickhouse]\nurls = [\"http://h:8123\"]\nbatch_rowz = 1\n"),
                "`batch_rowz`",
            ),
            (
                format!("{SOURCE}[sink.hbase]\naddress = \"h:9090\"\ncolumn_familly = \"f\"\n"),
                "`column_familly`",
            ),
            (format!("{SOURCE}{SINK}[extra]\na = 1\n"), "`extra`"),
            (
                format!("{SOURCE}{SINK}[pipeline]\non_table_eror = \"pause\"\n"),
                "`on_table_eror`",
            ),
        ] {
            let e = error(&text);
            assert!(e.contains(key) && e.contains("unknown"), "{key} in {e}");
        }
        let e = error(&format!(
            "{SOURCE}snapshot = {{ chunk_rowz = 8192 }}\n{SINK}"
        ));
        assert!(
            e.contains("source.mysql.snapshot"),
            "the path is named: {e}"
        );
    }

    #[test]
    fn a_type_error_names_the_key_and_type_but_never_a_value_from_the_environment() {
        // SAFETY: this test alone reads or writes this variable.
        unsafe { std::env::set_var("TRIBUTARY_TEST_PASSWORD", "hunter2-Secret") };
        let e = error(&format!(
            "[source.mysql]\nhost = \"h\"\nuser = \"u\"\nport = \"${{TRIBUTARY_TEST_PASSWORD}}\"\n{SINK}"
        ));
        assert!(e.contains("source.mysql.port"), "{e}");
        assert!(e.contains("u16"), "{e}");
        assert!(!e.contains("hunter2"), "the value is shown: {e}");
        assert!(e.contains("${TRIBUTARY_TEST_PASSWORD}"), "{e}");
        // A value from the file itself may be shown.
        let e = error(&format!(
            "{SOURCE}[sink.iceberg]\ndelete_mode = \"positon\"\nproperties = {{ warehouse = \"/w\" }}\n"
        ));
        assert!(
            e.contains("sink.iceberg.delete_mode") && e.contains("positon"),
            "{e}"
        );
        // Validation errors too: a short-lived secret in a validated value.
        let e = error(&format!(
            "{SOURCE}[sink.clickhouse]\nurls = [\"${{TRIBUTARY_TEST_PASSWORD}}\"]\n"
        ));
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn exactly_one_source_and_one_sink_of_a_known_kind() {
        let e = error(&format!(
            "{SOURCE}{SINK}[sink.clickhouse]\nurls = [\"http://h:8123\"]\n"
        ));
        assert!(e.contains("exactly one sink"), "{e}");
        assert!(error(SOURCE).contains("exactly one sink"));
        let e = error(&format!("{SOURCE}[sink.kafkaa]\nx = 1\n"));
        assert!(
            e.contains("unknown sink kind") && e.contains("[sink.iceberg]"),
            "{e}"
        );
        assert!(parse(&format!("{SOURCE}[sink.hbase]\naddress = \"h:9090\"\n")).is_ok());
    }

    #[test]
    fn a_consumer_group_needs_a_sink_that_merges_partition_claims() {
        let group = "[source.kafka]\nbrokers = \"k:9092\"\nprefix = \"p\"\ngroup = \"g\"\n";
        let clickhouse = "[sink.clickhouse]\nurls = [\"http://h:8123\"]\n";
        let e = error(&format!("{group}{clickhouse}"));
        assert!(
            e.contains("source.kafka.group") && e.contains("[sink.iceberg]"),
            "{e}"
        );
        let found = validate_pipeline(&format!("{group}{clickhouse}"), &Registry::builtin());
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].to_string().contains("source.kafka.group"));
        assert!(parse(&format!("{group}{SINK}")).is_ok());
        let found = validate_pipeline(&format!("{group}{SINK}"), &Registry::builtin());
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn the_example_pipeline_files_are_valid() {
        for file in [
            "mariadb-to-iceberg.toml",
            "mariadb-to-clickhouse.toml",
            "mariadb-to-hbase.toml",
            "mariadb-to-kafka.toml",
            "kafka-to-iceberg.toml",
        ] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../examples")
                .join(file);
            if let Err(e) = load_pipeline(&path, &Registry::builtin()) {
                panic!("{file}: {e}");
            }
        }
    }

    /// The compose stack's pipeline files, with the environment compose
    /// gives the container.
    #[test]
    fn the_docker_compose_pipeline_files_are_valid() {
        // SAFETY: this test process sets these names only here.
        unsafe {
            std::env::set_var("S3_ACCESS_KEY", "k");
            std::env::set_var("S3_SECRET_KEY", "s");
            std::env::set_var("MYSQL_PASSWORD", "p");
        }
        for file in [
            "pipeline-iceberg.toml",
            "pipeline-hive.toml",
            "pipeline-clickhouse.toml",
        ] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../docker")
                .join(file);
            let errors = validate_pipeline_file(&path, &Registry::builtin());
            assert!(errors.is_empty(), "{file}: {errors:?}");
        }
    }
}
