//! The `riskmap` binary: parse arguments, set up logging, run.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = riskmap::cli::Cli::parse();
    let filter = EnvFilter::try_from_env("RISKMAP_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.global.log_format == "json" {
        logs.json().init();
    } else {
        logs.init();
    }
    riskmap::cli::run(cli)
}
