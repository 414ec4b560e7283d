//! `tenet`: the command-line tool of the Tenet API.
//!
//! Prints tables for people and, with `--json`, JSON for scripts. Any
//! failure prints one line on standard error and exits with status 1;
//! invalid arguments exit with status 2.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser as _;
use tenet_client::Client;
use tracing_subscriber::EnvFilter;

mod args;
mod commands;
mod output;

use args::Cli;
use commands::Failure;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fail(&Failure::Other(format!("failed to start: {err}"))),
    };

    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => fail(&failure),
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let mut builder = Client::builder(&cli.url).timeout(Duration::from_secs(cli.timeout));
    if let Some(token) = cli.token {
        builder = builder.credential(token);
    }
    let client = builder.build()?;

    commands::run(&client, cli.command, cli.json).await
}

/// Logs to standard error, filtered by `RUST_LOG`; warnings only unless
/// set. `RUST_LOG=tenet_client=debug` shows each retry.
fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Prints the failure on one line and returns its exit status.
fn fail(failure: &Failure) -> ExitCode {
    let message = failure.to_string().replace(['\n', '\r'], " ");
    let _ = writeln!(std::io::stderr(), "tenet: {message}");
    ExitCode::from(failure.exit_code())
}
