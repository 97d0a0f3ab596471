//! Tributary's pipeline runtime: what `tributary sync` runs, as a library.
//!
//! - [`Registry`]: source and sink kinds by the name a pipeline file uses
//!   (`[source.mysql]`, `[sink.iceberg]`, …); adding a kind is one crate
//!   implementing `SourceFactory`/`SinkFactory` plus one line in
//!   [`Registry::builtin`].
//! - [`config`]: the pipeline file — `${NAME}` expansion, unknown keys
//!   refused at every depth, type errors naming the key, and values that
//!   came from the environment never shown.
//! - [`Pipeline`]: commit rounds, resume from the oldest round, tables that
//!   lost their state re-read, shutdown.
//! - [`HaSink`]: any sink as a primary/standby pair.
//! - [`PipelineStatus`]: what the runner knows per table, for status output
//!   and (later) metrics.

pub mod config;
pub mod ha;
mod http;
pub mod maintenance;
pub mod metrics;
pub mod pipeline;
mod progress;
pub mod registry;
pub mod status;

pub use config::{load_pipeline, validate_pipeline, validate_pipeline_file};
pub use ha::{HaConfig, HaSink, HaStats, Side};
pub use maintenance::maintain_once;
pub use metrics::Metrics;
pub use pipeline::{
    OnPositionLost, OnTableError, Pipeline, PipelineOptions, ROUND_PROPERTY, TableState,
    paused_tables,
};
pub use registry::Registry;
pub use status::{PipelineStatus, TableStatus};
