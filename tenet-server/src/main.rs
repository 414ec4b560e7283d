//! The `tenet-server` binary: configuration, logging, and the exit code.

use std::process::ExitCode;

use tenet_server::config::Command;
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
    if config.command == Some(Command::Migrate) {
        return tenet_server::migrate(&config).await;
    }
    let app = App::build(config).await?;
    app.run_until_signal().await;
    Ok(())
}
