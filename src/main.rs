//! The `tributary` command line: clap, the pipeline file, and the runtime.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tributary_core::{MaintainOptions, TableId, TargetState};
use tributary_runtime::{
    Pipeline, ROUND_PROPERTY, Registry, TableState, load_pipeline, maintain_once,
};

/// `db.table` as a source table.
fn parse_table(s: &str) -> tributary_core::Result<TableId> {
    match s.split_once('.') {
        Some((db, t)) if !db.is_empty() && !t.is_empty() => Ok(TableId::new(db, t)),
        _ => Err(tributary_core::Error::invalid_config(format!(
            "--table {s:?}: expected database.table"
        ))),
    }
}

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
    /// Keeps the pipeline's target tables healthy: compaction, equality to
    /// position delete conversion, manifest rewrite, snapshot expiry and
    /// file cleanup, each when `[sink.iceberg.maintenance]` finds it due.
    /// One run does what is due and exits (0 unless a step failed), for
    /// cron; `--daemon` repeats it every `--interval`. Safe beside a running
    /// `sync`.
    Maintain {
        #[arg(long, short)]
        config: PathBuf,
        /// Only these source tables (`db.table`; default: all selected).
        #[arg(long = "table")]
        tables: Vec<String>,
        /// Print the plan; commit and delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also remove orphan files older than `--orphans-older-than`.
        #[arg(long)]
        orphans: bool,
        /// Minimum orphan age (default 3 days; under 1 hour needs --force).
        #[arg(long, value_parser = humantime::parse_duration)]
        orphans_older_than: Option<std::time::Duration>,
        /// Allow an orphan age under 1 hour (no writer may be running).
        #[arg(long)]
        force: bool,
        /// Run again every `--interval` until stopped.
        #[arg(long)]
        daemon: bool,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
        interval: std::time::Duration,
        /// `text` (default) or `json` (one object per table per line).
        #[arg(long, default_value = "text")]
        output: OutputFormat,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum OutputFormat {
    Text,
    Json,
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
        Command::Maintain {
            config,
            tables,
            dry_run,
            orphans,
            orphans_older_than,
            force,
            daemon,
            interval,
            output,
        } => {
            let pipeline = load_pipeline(&config, &registry)?;
            let tables = tables
                .iter()
                .map(|t| parse_table(t))
                .collect::<tributary_core::Result<Vec<_>>>()?;
            let options = MaintainOptions {
                dry_run,
                orphans,
                orphan_min_age: orphans_older_than,
                force,
            };
            let stop = shutdown();
            tokio::pin!(stop);
            loop {
                let reports =
                    maintain_once(pipeline.source(), pipeline.sink(), &tables, &options).await?;
                for r in reports {
                    match output {
                        OutputFormat::Text => println!("{}", r.text),
                        OutputFormat::Json => println!("{}", r.json),
                    }
                }
                if !daemon {
                    return Ok(());
                }
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = &mut stop => return Ok(()),
                }
            }
        }
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
