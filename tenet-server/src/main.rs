//! The `tenet-server` binary: configuration, logging, and the exit code.

use std::process::ExitCode;

use tenet_server::config::Command;
use tenet_server::error::cause_chain;
use tenet_server::{App, Config, logging};

fn main() -> ExitCode {
    let config = Config::load();
    let log_format = config.log_format;
    let log_guard = logging::init(log_format);
    let failure = if config.command == Some(Command::Migrate) {
        "tenet-server migrate failed"
    } else {
        "tenet-server failed to start"
    };

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            drop(log_guard);
            let error = format!("failed to start the tokio runtime: {err}");
            logging::report_fatal(log_format, failure, &error);
            return ExitCode::FAILURE;
        }
    };

    let result = runtime.block_on(run(config));

    // The runtime goes first, because tasks may log while it stops. Then
    // the guard writes the pending lines, so that an error is the last
    // line on a terminal that shows both streams.
    drop(runtime);
    drop(log_guard);

    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let failure = match err {
                tenet_server::Error::FinalWrite { .. } => {
                    "tenet-server stopped with data unwritten"
                }
                _ => failure,
            };
            logging::report_fatal(log_format, failure, &cause_chain(&err));
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), tenet_server::Error> {
    if config.command == Some(Command::Migrate) {
        return tenet_server::migrate(&config).await;
    }
    let app = App::build(config).await?;
    app.run_until_signal().await
}
