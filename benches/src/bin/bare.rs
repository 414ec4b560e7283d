//! A bare hyper 1 server that responds to every request with 200 and
//! `hello world`: the baseline of `load.sh`.
//!
//! Usage: `bare [ADDR]` (default `127.0.0.1:8090`). It prints
//! `listening on ADDR` once bound and serves until killed.
//!
//! It matches tenet-server where that changes throughput: tokio's
//! multi-thread runtime with the default worker count (one per CPU, as
//! tenet-server's `main` builds it), the same hyper and hyper-util versions
//! through the workspace, hyper-util's auto builder (HTTP/1.1 and h2c) with
//! HTTP/1 keep-alive and a header read timeout, and `TCP_NODELAY`. It has
//! no routing, authentication or request log.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

const DEFAULT_ADDRESS: &str = "127.0.0.1:8090";

/// tenet-server's default `--header-read-timeout`.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let argument = std::env::args().nth(1);
    let text = argument.as_deref().unwrap_or(DEFAULT_ADDRESS);
    let address: SocketAddr = match text.parse() {
        Ok(address) => address,
        Err(err) => {
            eprintln!("bare: invalid listen address {text:?}: {err}; expected IP:PORT");
            return ExitCode::from(2);
        }
    };

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("bare: failed to start the tokio runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(address)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bare: failed to listen on {address}: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(address: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(address).await?;
    println!("listening on {}", listener.local_addr()?);

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);

    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                eprintln!("bare: failed to accept a connection: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Err(err) = stream.set_nodelay(true) {
            eprintln!("bare: failed to set TCP_NODELAY for {peer}: {err}");
        }

        let builder = builder.clone();
        tokio::spawn(async move {
            let connection = builder.serve_connection(TokioIo::new(stream), service_fn(hello));
            // Clients that reset their connection are expected under load.
            let _ = connection.await;
        });
    }
}

async fn hello(_request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"hello world\n")));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(response)
}
