//! The `tributary` command line: clap, the pipeline file, and the runtime.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tributary_core::{CheckStatus, MaintainOptions, TableId, TargetState};
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
    /// Checks a pipeline file without connecting anywhere: prints every
    /// error at once, each naming its key and the fix (exit 1), or that it
    /// is valid (exit 0).
    Validate {
        /// The pipeline file.
        file: PathBuf,
    },
    /// Checks the pipeline file, then connects to what it names and reports
    /// every finding at once: the source server's version, binlog settings
    /// and grants, the tables selected and SELECT on each; the sink's
    /// servers, cluster layout, each target table and the catalog's
    /// compare-and-swap. Writes nothing. Exit 1 if anything failed.
    Check {
        file: PathBuf,
        /// `text` (default) or `json` (one object per finding per line).
        #[arg(long, default_value = "text")]
        output: OutputFormat,
    },
    /// Shows what a source table's target holds now: its version, the
    /// committed position and watermark, files by kind and size, manifests
    /// and snapshots, the newest commits, and what maintenance finds due.
    /// Reads only.
    Inspect {
        #[arg(long, short)]
        config: PathBuf,
        /// The source table, `db.table`.
        table: String,
        /// `text` (default) or `json`.
        #[arg(long, default_value = "text")]
        output: OutputFormat,
    },
    /// Checks the pipeline file and prints, per source table, its target
    /// table and the committed source position (and why it is paused).
    Status {
        #[arg(long, short)]
        config: PathBuf,
        /// `text` (default) or `json` (one object per table per line).
        #[arg(long, default_value = "text")]
        output: OutputFormat,
    },
    /// Waits until a table is complete up to a time — every source change
    /// committed before it is in the target (the watermark each commit
    /// records; it also advances on an idle source) — for schedulers
    /// (Airflow, DolphinScheduler): exit 0 when complete, 1 at `--timeout`,
    /// 2 on an error. Needs only the target, not a running job.
    Wait {
        #[arg(long, short)]
        config: PathBuf,
        /// The source table, `db.table`.
        #[arg(long)]
        table: String,
        /// `now` or a UTC time (`2026-12-01T10:00:00Z`, `2026-12-01 10:00:00`).
        #[arg(long)]
        until: String,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
        timeout: std::time::Duration,
        /// How often to look.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
        poll: std::time::Duration,
    },
    /// Empties the targets of the given source tables (`db.table`) so the
    /// next `sync` start reads them in full while the other tables resume —
    /// how a paused table is healed once its cause is fixed. Iceberg
    /// targets are claimed, so a `sync` still running is fenced on them
    /// (restart it); stop the job first for other sinks.
    Resnapshot {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(required = true)]
        tables: Vec<String>,
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
    let waits = matches!(cli.command, Command::Wait { .. });
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
        // `wait`: 1 is "not complete in time", so errors are 2.
        Err(e) if waits && e.kind() == tributary_core::ErrorKind::Timeout => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(if waits { 2 } else { 1 })
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
        Command::Validate { file } => {
            let errors = tributary_runtime::validate_pipeline_file(&file, &registry);
            if errors.is_empty() {
                println!("{}: valid", file.display());
                return Ok(());
            }
            for e in &errors {
                println!("{e}");
            }
            Err(tributary_core::Error::invalid_config(format!(
                "{}: {} error(s)",
                file.display(),
                errors.len()
            )))
        }
        Command::Check { file, output } => {
            let pipeline = load_pipeline(&file, &registry)?;
            let findings = pipeline.check().await;
            for f in &findings {
                match output {
                    OutputFormat::Json => println!("{}", serde_json::to_string(f)?),
                    OutputFormat::Text => {
                        let status = match f.status {
                            CheckStatus::Ok => "ok",
                            CheckStatus::Warning => "WARNING",
                            CheckStatus::Failed => "FAILED",
                        };
                        println!("{status:<8}{:<17}{}: {}", f.component, f.what, f.detail);
                    }
                }
            }
            let failed = findings
                .iter()
                .filter(|f| f.status == CheckStatus::Failed)
                .count();
            if failed > 0 {
                return Err(tributary_core::Error::invalid_config(format!(
                    "{}: {failed} check(s) failed",
                    file.display()
                )));
            }
            Ok(())
        }
        Command::Inspect {
            config,
            table,
            output,
        } => {
            let pipeline = load_pipeline(&config, &registry)?;
            let table = parse_table(&table)?;
            let report = pipeline.sink().inspect(&table).await?;
            match output {
                OutputFormat::Text => println!("{}", report.text),
                OutputFormat::Json => println!("{}", report.json),
            }
            Ok(())
        }
        Command::Status { config, output } => {
            let pipeline = load_pipeline(&config, &registry)?;
            let states = pipeline.table_states().await?;
            let paused = tributary_runtime::paused_tables(&states);
            for s in &states {
                let cause = paused.get(&s.source);
                match output {
                    OutputFormat::Json => println!("{}", status_json(&pipeline, s, cause)),
                    OutputFormat::Text => {
                        let mut line = status_line(&pipeline, s);
                        if let Some(cause) = cause {
                            line.push_str(&format!(", PAUSED: {cause}"));
                        }
                        println!("{line}");
                    }
                }
            }
            Ok(())
        }
        Command::Wait {
            config,
            table,
            until,
            timeout,
            poll,
        } => {
            let pipeline = load_pipeline(&config, &registry)?;
            let table = parse_table(&table)?;
            let until = parse_until(&until)?;
            wait_complete(&pipeline, &table, until, timeout, poll).await
        }
        Command::Resnapshot { config, tables } => {
            let pipeline = load_pipeline(&config, &registry)?;
            let tables = tables
                .iter()
                .map(|t| parse_table(t))
                .collect::<tributary_core::Result<Vec<_>>>()?;
            for line in pipeline.resnapshot(&tables).await? {
                println!("{line}");
            }
            Ok(())
        }
    }
}

fn status_line(pipeline: &Pipeline, s: &TableState) -> String {
    let state = match &s.state {
        TargetState::Missing => "not created".to_string(),
        TargetState::CreatedWithoutCheckpoint => "created, nothing committed".to_string(),
        TargetState::Committed(cp) if cp.is_resnapshot() => {
            "emptied by `tributary resnapshot`: read in full at the next start".to_string()
        }
        TargetState::Committed(cp) => {
            let position = pipeline
                .source()
                .describe_position(cp, &s.source)
                .unwrap_or_else(|| "-".into());
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

/// One table's status as JSON (`status --output json`).
fn status_json(pipeline: &Pipeline, s: &TableState, paused: Option<&String>) -> serde_json::Value {
    let (phase, position, round, watermark) = match &s.state {
        TargetState::Missing => ("not created", None, None, None),
        TargetState::CreatedWithoutCheckpoint => ("nothing committed", None, None, None),
        TargetState::Committed(cp) if cp.is_resnapshot() => {
            ("resnapshot requested", None, None, None)
        }
        TargetState::Committed(cp) => (
            if pipeline.source().snapshot_in_progress(cp) {
                "snapshot"
            } else {
                "streaming"
            },
            pipeline.source().describe_position(cp, &s.source),
            cp.round(),
            cp.watermark_micros.map(|w| w.div_euclid(1000)),
        ),
    };
    serde_json::json!({
        "table": s.source.to_string(),
        "target": s.target,
        "phase": if paused.is_some() { "paused" } else { phase },
        "paused_cause": paused,
        "position": position,
        "round": round,
        "watermark_ms": watermark,
    })
}

/// `--until`: `now`, or a UTC time in RFC 3339 (a space instead of the T,
/// no zone, and fractions allowed). Microseconds since the epoch.
fn parse_until(text: &str) -> tributary_core::Result<i64> {
    let at = if text == "now" {
        std::time::SystemTime::now()
    } else {
        humantime::parse_rfc3339_weak(text.trim_end_matches('Z')).map_err(|e| {
            tributary_core::Error::invalid_config(format!(
                "--until {text:?}: {e}; expected `now` or a UTC time like 2026-12-01T10:00:00Z"
            ))
        })?
    };
    let micros = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    Ok(i64::try_from(micros).unwrap_or(i64::MAX))
}

/// Polls `table`'s committed watermark until it reaches `until`.
async fn wait_complete(
    pipeline: &Pipeline,
    table: &TableId,
    until: i64,
    timeout: std::time::Duration,
    poll: std::time::Duration,
) -> tributary_core::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let states = pipeline.table_states().await?;
        let Some(state) = states.iter().find(|s| &s.source == table) else {
            return Err(tributary_core::Error::invalid_config(format!(
                "{table} is not among the pipeline's selected tables"
            )));
        };
        let watermark = state
            .state
            .checkpoint()
            .filter(|cp| !cp.is_resnapshot())
            .and_then(|cp| cp.watermark_micros);
        if watermark.is_some_and(|w| w >= until) {
            println!(
                "{table}: complete up to {}",
                format_micros(watermark.unwrap_or(0))
            );
            return Ok(());
        }
        if tokio::time::Instant::now() + poll > deadline {
            let at = watermark.map_or("nothing yet".to_string(), format_micros);
            return Err(tributary_core::Error::new(
                tributary_core::ErrorKind::Timeout,
                format!(
                    "{table}: not complete up to {} within {}: complete up to {at}",
                    format_micros(until),
                    humantime::format_duration(timeout)
                ),
            ));
        }
        tokio::time::sleep(poll).await;
    }
}

fn format_micros(micros: i64) -> String {
    let at = std::time::UNIX_EPOCH
        + std::time::Duration::from_micros(u64::try_from(micros).unwrap_or(0));
    humantime::format_rfc3339_millis(at).to_string()
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
