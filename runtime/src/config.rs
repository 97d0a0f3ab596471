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

use crate::pipeline::Pipeline;
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
    if let Some(key) = top.keys().next() {
        return Err(Error::invalid_config(format!(
            "unknown top-level key `{key}`: a pipeline file has [source.<kind>] and [sink.<kind>]"
        )));
    }
    Ok(Pipeline::new(
        registry.source(&source_kind, source)?,
        registry.sink(&sink_kind, sink)?,
    ))
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
    fn the_example_pipeline_files_are_valid() {
        for file in [
            "mariadb-to-iceberg.toml",
            "mariadb-to-clickhouse.toml",
            "mariadb-to-hbase.toml",
        ] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../examples")
                .join(file);
            if let Err(e) = load_pipeline(&path, &Registry::builtin()) {
                panic!("{file}: {e}");
            }
        }
    }
}
