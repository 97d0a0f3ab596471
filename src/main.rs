//! The `tributary` command line.

mod config;
mod sinks;
mod sync;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use config::PipelineConfig;

/// Tributary moves MySQL/MariaDB changes into Kafka, Iceberg and ClickHouse.
///
/// `sync` runs a pipeline file (MySQL/MariaDB snapshot + binlog into Iceberg
/// upsert tables, exactly once); `status` shows what each table holds.
#[derive(Debug, Parser)]
#[command(name = "tributary", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Snapshot and stream the source into the sink until stopped (SIGINT or
    /// SIGTERM). A restart resumes at the last commit.
    Sync {
        /// The pipeline file (TOML; see the README's "Run a pipeline").
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Checks the pipeline file and prints, per source table, its Iceberg
    /// table and the committed source position.
    Status {
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> tributary_core::Result<()> {
    match command {
        Command::Sync { config } => {
            let config = PipelineConfig::load(&config)?;
            sync::SyncJob::run(config, shutdown()).await
        }
        Command::Status { config } => {
            let config = PipelineConfig::load(&config)?;
            for s in sync::table_states(&config).await? {
                println!("{}", status_line(&s));
            }
            Ok(())
        }
    }
}

fn status_line(s: &sync::TableState) -> String {
    let state = match &s.committed {
        None => "not created".to_string(),
        Some(None) => "created, nothing committed".to_string(),
        Some(Some(cp)) => {
            let position = cp.position.as_ref().map_or("-".into(), ToString::to_string);
            let round = cp
                .properties
                .get(sync::ROUND_PROPERTY)
                .map_or("-", String::as_str);
            let snapshot = if cp.properties.contains_key("mysql.snapshot") {
                "snapshot in progress"
            } else {
                "streaming"
            };
            format!("position {position}, round {round}, {snapshot}")
        }
    };
    format!("{} -> {}: {state}", s.source, s.table)
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
