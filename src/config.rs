//! The pipeline file: one source and its sink, in TOML.
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
//! NAME, after parsing: a parse error can only quote the file's own text,
//! never an expanded secret.

use std::path::Path;

use serde::Deserialize;
use tributary_clickhouse::ClickHouseSinkConfig;
use tributary_core::{Error, Result};
use tributary_iceberg::IcebergSinkConfig;
use tributary_mysql::MySqlSourceConfig;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    pub source: SourceConfig,
    pub sink: SinkConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub mysql: MySqlSourceConfig,
}

/// Exactly one of the sinks.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    pub iceberg: Option<IcebergSinkConfig>,
    pub clickhouse: Option<ClickHouseSinkConfig>,
}

impl PipelineConfig {
    /// Reads, expands and checks a pipeline file.
    pub fn load(path: &Path) -> Result<PipelineConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::invalid_config(format!("cannot read {}: {e}", path.display())))?;
        let bad =
            |e: &dyn std::fmt::Display| Error::invalid_config(format!("{}: {e}", path.display()));
        let mut value: toml::Value = toml::from_str(&text).map_err(|e| bad(&e))?;
        expand_env(&mut value, &mut Vec::new())?;
        let config: PipelineConfig = value.try_into().map_err(|e| bad(&e))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<()> {
        self.source.mysql.validate()?;
        match (&self.sink.iceberg, &self.sink.clickhouse) {
            (Some(iceberg), None) => iceberg.validate(),
            (None, Some(clickhouse)) => clickhouse.validate(),
            _ => Err(Error::invalid_config(
                "the pipeline needs exactly one sink: [sink.iceberg] or [sink.clickhouse]",
            )),
        }
    }
}

/// Replaces `${NAME}` in string values by the environment variable NAME.
fn expand_env(value: &mut toml::Value, path: &mut Vec<String>) -> Result<()> {
    match value {
        toml::Value::String(s) => *s = expand_string(s, &path.join("."))?,
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(i.to_string());
                expand_env(item, path)?;
                path.pop();
            }
        }
        toml::Value::Table(table) => {
            for (key, item) in table.iter_mut() {
                path.push(key.clone());
                expand_env(item, path)?;
                path.pop();
            }
        }
        _ => {}
    }
    Ok(())
}

fn expand_string(s: &str, key: &str) -> Result<String> {
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
        rest = &rest[start + 3 + len..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_variables_expand_in_strings_and_missing_ones_are_named() {
        // SAFETY: this test alone reads or writes these variables.
        unsafe { std::env::set_var("TRIBUTARY_TEST_SECRET", "s3cr3t") };
        assert_eq!(
            expand_string("a-${TRIBUTARY_TEST_SECRET}-b", "k").unwrap(),
            "a-s3cr3t-b"
        );
        assert_eq!(expand_string("no vars", "k").unwrap(), "no vars");
        let e = expand_string("${TRIBUTARY_TEST_UNSET_VAR}", "sink.x").unwrap_err();
        assert!(
            e.to_string()
                .contains("sink.x uses the environment variable TRIBUTARY_TEST_UNSET_VAR"),
            "{e}"
        );
        assert!(expand_string("${OPEN", "k").is_err());
    }

    #[test]
    fn the_example_pipeline_files_are_valid() {
        for (file, iceberg) in [
            ("mariadb-to-iceberg.toml", true),
            ("mariadb-to-clickhouse.toml", false),
        ] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("examples")
                .join(file);
            let config = PipelineConfig::load(&path).unwrap();
            assert_eq!(config.source.mysql.port, 3307);
            assert_eq!(config.sink.iceberg.is_some(), iceberg, "{file}");
        }
    }
}
