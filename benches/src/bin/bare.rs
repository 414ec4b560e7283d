//! A bare hyper 1 server that responds to every request with 200 and
//! `hello world`: the baseline of `load.sh`.
//!
//! Usage: `bare [ADDR] [--key-check KEY_FILE]` (default address
//! `127.0.0.1:8090`). It prints `listening on ADDR` once bound and serves
//! until killed.
//!
//! With `--key-check`, it does the floor of key verification on every
//! request instead (see [`Floor`]). It reads the `X-API-Key` header,
//! decodes the key, digests it and looks the digest up among 10,000 keys.
//! Then it responds 200 with the key's tenant and key id as JSON, the body
//! that tenet-server's `/protected` returns, or 401. The keys are those in
//! KEY_FILE (one per line, such as a key that tenet-server issued) and
//! generated ones up to 10,000. This is the minimum work of any server of
//! `/protected`. tenet-server's rate as a ratio to this server's rate thus
//! shows the cost of everything else that tenet-server does per request.
//!
//! It matches tenet-server where that changes throughput: tokio's
//! multi-thread runtime with the default worker count (one per CPU, as
//! tenet-server's `main` builds it), the same hyper and hyper-util versions
//! through the workspace, hyper-util's auto builder (HTTP/1.1 and h2c) with
//! HTTP/1 keep-alive and a header read timeout, and `TCP_NODELAY`. It has
//! no routing, request ids, metrics, limits, usage counts or request log.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tenet_benches::fixture;
use tenet_benches::floor::Floor;
use tenet_core::{KeyId, MemoryStore, Principal, TenantId, Tenet};
use tokio::net::TcpListener;

const DEFAULT_ADDRESS: &str = "127.0.0.1:8090";

/// tenet-server's default `--header-read-timeout`.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Keys that `--key-check` looks a presented key up among, as many as in
/// the criterion floor's smaller map.
const FLOOR_KEYS: usize = 10_000;

/// The length of the JSON body of `--key-check`: two UUIDs in their
/// hyphenated form.
const PRINCIPAL_JSON_LEN: usize = r#"{"tenant_id":"","key_id":""}"#.len() + 2 * 36;

/// The response of every request: hello world, or the key check.
enum Mode {
    Hello,
    KeyCheck(Arc<Floor>),
}

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let (text, key_file) = match arguments.as_slice() {
        [] => (DEFAULT_ADDRESS, None),
        [address] => (address.as_str(), None),
        [address, flag, file] if flag == "--key-check" => (address.as_str(), Some(file.as_str())),
        _ => {
            eprintln!("bare: usage: bare [ADDR] [--key-check KEY_FILE]");
            return ExitCode::from(2);
        }
    };
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
    let mode = match key_file {
        None => Mode::Hello,
        Some(file) => match runtime.block_on(floor_with(Path::new(file))) {
            Ok(floor) => Mode::KeyCheck(Arc::new(floor)),
            Err(message) => {
                eprintln!("bare: {message}");
                return ExitCode::FAILURE;
            }
        },
    };
    match runtime.block_on(serve(address, mode)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bare: failed to listen on {address}: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Builds the floor of `--key-check`: the keys in `file`, each acting for a
/// new tenant and key id, and keys issued by an in-memory [`Tenet`] up to
/// [`FLOOR_KEYS`].
async fn floor_with(file: &Path) -> Result<Floor, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|err| format!("cannot read the key file {}: {err}", file.display()))?;
    let presented: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    if presented.is_empty() {
        return Err(format!("the key file {} holds no key", file.display()));
    }

    let tenet = Tenet::open(Arc::new(MemoryStore::new()), fixture::pepper())
        .await
        .map_err(|err| format!("cannot open an in-memory Tenet: {err}"))?;
    let filler = FLOOR_KEYS.saturating_sub(presented.len());
    let issued = fixture::issue(&tenet, filler, 1)
        .await
        .map_err(|err| format!("cannot issue {filler} keys: {err}"))?;

    let own = presented.iter().map(|&key| {
        let principal = Principal {
            tenant_id: TenantId::generate(),
            key_id: KeyId::generate(),
        };
        (key, principal)
    });
    let floor = Floor::try_new(fixture::pepper(), own.chain(issued.pairs()))
        .map_err(|_| format!("the key file {} holds a malformed key", file.display()))?;
    Ok(floor)
}

async fn serve(address: SocketAddr, mode: Mode) -> std::io::Result<()> {
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
        let io = TokioIo::new(stream);
        // Clients that reset their connection are expected under load, so
        // the connections' errors are dropped.
        match &mode {
            Mode::Hello => {
                tokio::spawn(async move {
                    let _ = builder.serve_connection(io, service_fn(hello)).await;
                });
            }
            Mode::KeyCheck(floor) => {
                let floor = Arc::clone(floor);
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request| std::future::ready(key_check(&floor, &request)));
                    let _ = builder.serve_connection(io, service).await;
                });
            }
        }
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

/// Responds with whom the request's `X-API-Key` acts for, or with 401.
fn key_check(
    floor: &Floor,
    request: &Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let principal = request
        .headers()
        .get("x-api-key")
        .and_then(|value| value.to_str().ok())
        .and_then(|key| floor.lookup(key));
    let Some(principal) = principal else {
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        return Ok(response);
    };

    let mut tenant = [0; 36];
    let mut key = [0; 36];
    let mut body = Vec::with_capacity(PRINCIPAL_JSON_LEN);
    body.extend_from_slice(b"{\"tenant_id\":\"");
    body.extend_from_slice(principal.tenant_id.encode(&mut tenant).as_bytes());
    body.extend_from_slice(b"\",\"key_id\":\"");
    body.extend_from_slice(principal.key_id.encode(&mut key).as_bytes());
    body.extend_from_slice(b"\"}");
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
