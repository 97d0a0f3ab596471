//! Source and sink kinds by name. Each kind's configuration is deserialized
//! (unknown keys refused, errors naming the key) and handed to a builder
//! that validates it once and returns the factory the runner holds.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use tributary_core::{Error, Result, SinkFactory, SourceFactory};

type Build<T> = Box<dyn Fn(toml::Value, &str) -> Result<Arc<T>> + Send + Sync>;

/// The kinds a pipeline file may name.
pub struct Registry {
    sources: BTreeMap<&'static str, Build<dyn SourceFactory>>,
    sinks: BTreeMap<&'static str, Build<dyn SinkFactory>>,
}

impl Registry {
    pub fn empty() -> Registry {
        Registry {
            sources: BTreeMap::new(),
            sinks: BTreeMap::new(),
        }
    }

    /// Every kind this build of Tributary has: the one list to extend.
    pub fn builtin() -> Registry {
        use tributary_clickhouse::{ClickHouseSinkConfig, ClickHouseSinkFactory};
        use tributary_hbase::{HBaseSinkConfig, HBaseSinkFactory};
        use tributary_iceberg::{IcebergSinkConfig, IcebergSinkFactory};
        use tributary_kafka::{
            KafkaSinkConfig, KafkaSinkFactory, KafkaSourceConfig, KafkaSourceFactory,
        };
        use tributary_mysql::{MySqlSourceConfig, MySqlSourceFactory};
        Registry::empty()
            .with_source("mysql", |c: MySqlSourceConfig| {
                Ok(Arc::new(MySqlSourceFactory::new(c)?))
            })
            .with_source("kafka", |c: KafkaSourceConfig| {
                Ok(Arc::new(KafkaSourceFactory::new(c)?))
            })
            .with_sink("iceberg", |c: IcebergSinkConfig| {
                Ok(Arc::new(IcebergSinkFactory::new(c)?))
            })
            .with_sink("clickhouse", |c: ClickHouseSinkConfig| {
                Ok(Arc::new(ClickHouseSinkFactory::new(c)?))
            })
            .with_sink("hbase", |c: HBaseSinkConfig| {
                Ok(Arc::new(HBaseSinkFactory::new(c)?))
            })
            .with_sink("kafka", |c: KafkaSinkConfig| {
                Ok(Arc::new(KafkaSinkFactory::new(c)?))
            })
    }

    pub fn with_source<C: DeserializeOwned + 'static>(
        mut self,
        kind: &'static str,
        build: impl Fn(C) -> Result<Arc<dyn SourceFactory>> + Send + Sync + 'static,
    ) -> Registry {
        let build = move |value, key: &str| build(deserialize::<C>(value, key)?);
        self.sources.insert(kind, Box::new(build));
        self
    }

    pub fn with_sink<C: DeserializeOwned + 'static>(
        mut self,
        kind: &'static str,
        build: impl Fn(C) -> Result<Arc<dyn SinkFactory>> + Send + Sync + 'static,
    ) -> Registry {
        let build = move |value, key: &str| build(deserialize::<C>(value, key)?);
        self.sinks.insert(kind, Box::new(build));
        self
    }

    pub fn source_kinds(&self) -> Vec<&'static str> {
        self.sources.keys().copied().collect()
    }

    pub fn sink_kinds(&self) -> Vec<&'static str> {
        self.sinks.keys().copied().collect()
    }

    /// Builds the source of `[source.<kind>]` from its table.
    pub fn source(&self, kind: &str, value: toml::Value) -> Result<Arc<dyn SourceFactory>> {
        let build = self
            .sources
            .get(kind)
            .ok_or_else(|| unknown("source", kind, &self.source_kinds()))?;
        build(value, &format!("source.{kind}"))
    }

    /// Builds the sink of `[sink.<kind>]` from its table.
    pub fn sink(&self, kind: &str, value: toml::Value) -> Result<Arc<dyn SinkFactory>> {
        let build = self
            .sinks
            .get(kind)
            .ok_or_else(|| unknown("sink", kind, &self.sink_kinds()))?;
        build(value, &format!("sink.{kind}"))
    }
}

fn unknown(section: &str, kind: &str, known: &[&str]) -> Error {
    let known: Vec<String> = known.iter().map(|k| format!("[{section}.{k}]")).collect();
    Error::invalid_config(format!(
        "[{section}.{kind}]: unknown {section} kind; this build has {}",
        known.join(", ")
    ))
}

/// Deserializes one section, naming the key of the first error (its full
/// path from the file's top, e.g. `source.mysql.snapshot.chunk_rowz`).
pub(crate) fn deserialize<C: DeserializeOwned>(value: toml::Value, key: &str) -> Result<C> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." || path.is_empty() {
            key.to_string()
        } else {
            format!("{key}.{path}")
        };
        Error::invalid_config(format!("{at}: {}", e.into_inner()))
    })
}
