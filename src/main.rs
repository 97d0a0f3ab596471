//! The `tributary` command line.

use clap::Parser;

/// Tributary moves MySQL/MariaDB changes into Kafka, Iceberg and ClickHouse.
///
/// This build has no runnable pipelines yet: the change-event model and the
/// development services are in place, the connectors arrive one by one (see
/// the README's feature-status table).
#[derive(Debug, Parser)]
#[command(name = "tributary", version, about, long_about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    println!(
        "tributary {}: no pipelines are available in this build yet; see --help",
        env!("CARGO_PKG_VERSION")
    );
}
