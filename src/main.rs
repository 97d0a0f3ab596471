//! The `tributary` command line: clap, the pipeline file, and the runtime.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tributary_core::TargetState;
use tributary_runtime::{Pipeline, ROUND_PROPERTY, Registry, TableState, load_pipeline};

/// Tributary moves MySQL/MariaDB changes into Kafka, Iceberg and ClickHouse.
///
/// `sync` runs a pipeline file (MySQL/MariaDB snapshot + binlog into Iceberg
/// upsert tables, ClickHouse or HBase, exactly once); `status` shows what each
/// table holds.
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
    /// Checks the pipeline file and prints, per source table, its target
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
    let registry = Registry::builtin();
    match command {
        Command::Sync { config } => load_pipeline(&config, &registry)?.run(shutdown()).await,
        Command::Status { config } => {
            let pipeline = load_pipeline(&config, &registry)?;
            for s in pipeline.table_states().await? {
                println!("{}", status_line(&pipeline, &s));
            }
            Ok(())
        }
    }
}

fn status_line(pipeline: &Pipeline, s: &TableState) -> String {
    let state = match &s.state {
        TargetState::Missing => "not created".to_string(),
        TargetState::CreatedWithoutCheckpoint => "created, nothing committed".to_string(),
        TargetState::Committed(cp) => {
            let position = cp.position.as_ref().map_or("-".into(), ToString::to_string);
            let round = cp
                .properties
                .get(ROUND_PROPERTY)
                .map_or("-", String::as_str);
            let snapshot = if pipeline.source().snapshot_in_progress(cp) {
                "snapshot in progress"
            } else {
                "streaming"
            };
            format!("position {position}, round {round}, {snapshot}")
        }
    };
    format!("{} -> {}: {state}", s.source, s.target)
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
