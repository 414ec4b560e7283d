//! The `tenet-server` binary: configuration, logging, and the exit code.

use std::process::ExitCode;

use tenet_server::error::cause_chain;
use tenet_server::{App, Config, logging};

fn main() -> ExitCode {
    let config = Config::load();
    let _log_guard = logging::init(config.log_format);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("tenet-server: failed to start the tokio runtime: {err}");
            return ExitCode::FAILURE;
        }
    };

    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tenet-server: {}", cause_chain(&err));
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), tenet_server::Error> {
    let app = App::build(config).await?;
    app.run_until(shutdown_signal()).await;
    Ok(())
}

/// Resolves on the first SIGINT or SIGTERM.
///
/// If a handler cannot be installed, the error is logged and the other
/// signal still works; without either, the server runs until killed.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};

    let mut interrupt = signal(SignalKind::interrupt())
        .inspect_err(|err| tracing::error!(error = %err, "failed to install the SIGINT handler"))
        .ok();
    let mut terminate = signal(SignalKind::terminate())
        .inspect_err(|err| tracing::error!(error = %err, "failed to install the SIGTERM handler"))
        .ok();

    let received = tokio::select! {
        Some(()) = recv(&mut interrupt) => "SIGINT",
        Some(()) = recv(&mut terminate) => "SIGTERM",
        else => std::future::pending().await,
    };
    tracing::info!(signal = received, "shutting down");
}

async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}
