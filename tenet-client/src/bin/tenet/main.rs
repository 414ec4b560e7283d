//! `tenet`: the command-line tool of the Tenet API.
//!
//! Prints tables for people and, with `--json`, JSON for scripts. Any
//! failure prints one line on standard error and exits with status 1;
//! invalid arguments exit with status 2. A reader that closes standard
//! output early, such as `head`, ends the command quietly with status 0.

use std::io::{self, IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use tenet_client::Client;
use tracing_subscriber::EnvFilter;

mod args;
mod commands;
mod output;

use args::{Cli, Command};
use commands::Failure;

fn main() -> ExitCode {
    let cli = args::parse();
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
    let token = admin_token(cli.token, &cli.command)?;
    let mut builder = Client::builder(&cli.url).timeout(Duration::from_secs(cli.timeout));
    if let Some(token) = token {
        builder = builder.credential(token);
    }
    // An unusable `--url` is an argument error, like a missing token.
    let client = builder.build().map_err(|err| match err {
        tenet_client::Error::InvalidUrl { .. } => Failure::Usage(err.to_string()),
        other => Failure::Api(other),
    })?;

    commands::run(&client, cli.command, cli.json).await
}

/// Returns the admin token, treating an empty one as none, and fails
/// before any request when `command` needs a token and has none.
fn admin_token(token: Option<String>, command: &Command) -> Result<Option<String>, Failure> {
    let needed = commands::needs_admin(command);
    match token {
        Some(token) if token.trim().is_empty() => {
            if needed {
                return Err(Failure::Usage(
                    "the admin token is empty: set TENET_ADMIN_TOKEN or --token to the token"
                        .to_owned(),
                ));
            }
            Ok(None)
        }
        Some(token) => Ok(Some(token)),
        None if needed => Err(Failure::Usage(
            "missing admin token: set TENET_ADMIN_TOKEN or pass --token".to_owned(),
        )),
        None => Ok(None),
    }
}

/// Logs to standard error, filtered by `RUST_LOG`; warnings only unless
/// set. `RUST_LOG=tenet_client=debug` shows each retry.
fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .init();
}

/// Prints the failure on one line and returns its exit status. A closed
/// standard output is no failure, as for other Unix tools.
fn fail(failure: &Failure) -> ExitCode {
    if let Failure::Output(err) = failure
        && err.kind() == io::ErrorKind::BrokenPipe
    {
        return ExitCode::SUCCESS;
    }
    let message = failure.to_string().replace(['\n', '\r'], " ");
    let _ = writeln!(io::stderr(), "tenet: {message}");
    ExitCode::from(failure.exit_code())
}
