//! The accept loop, connection limits and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::config::Config;
use crate::service::{self, Surface};
use crate::setup::State;

/// Pause after a failed `accept`, which bounds the rate of its log line when
/// the process is out of file descriptors.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Interval of HTTP/2 keep-alive pings, which detect peers that vanished
/// without closing their connection.
const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(30);

/// Time an HTTP/2 peer has to acknowledge a keep-alive ping before its
/// connection is closed.
const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Serves connections until `shutdown` resolves, then drains.
///
/// `surface` selects the routes that this listener serves. At most
/// `--max-connections` connections are served at once; further ones wait in
/// the listen backlog. On shutdown the listener is closed, idle connections
/// are closed, and in-flight requests get up to `--shutdown-timeout` to
/// finish before their connections are dropped, or until `force` resolves.
pub async fn serve(
    listener: TcpListener,
    surface: Surface,
    state: Arc<State>,
    config: &Config,
    shutdown: impl Future<Output = ()>,
    force: impl Future<Output = ()>,
) {
    let builder = connection_builder(config);
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(config.max_connections as usize));
    let mut connections = JoinSet::new();
    let (stopping, stopping_watch) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);

    loop {
        // Reap finished connection tasks, so the set contains open ones only.
        while connections.try_join_next().is_some() {}

        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "failed to accept a connection");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };

        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %err, "failed to set TCP_NODELAY");
        }
        let connection = serve_connection(
            builder.clone(),
            stream,
            peer,
            surface,
            Arc::clone(&state),
            graceful.watcher(),
            stopping_watch.clone(),
            config.header_read_timeout(),
        );
        connections.spawn(async move {
            connection.await;
            drop(permit);
        });
    }

    drop(listener);
    stopping.send_replace(true);
    drain(graceful, connections, config.shutdown_timeout(), force).await;
}

/// Serves one connection until the client closes it or shutdown drains it.
///
/// hyper's header read timeout starts only once the HTTP version is known,
/// so a client that connects and sends nothing would hold a connection slot
/// forever. The first byte must therefore arrive within the header read
/// timeout too, and a connection still waiting for it when shutdown starts
/// is closed at once, because it has no request in flight.
#[expect(
    clippy::too_many_arguments,
    reason = "each argument is a distinct per-connection input"
)]
async fn serve_connection(
    builder: auto::Builder<TokioExecutor>,
    stream: TcpStream,
    peer: SocketAddr,
    surface: Surface,
    state: Arc<State>,
    watcher: Watcher,
    mut stopping: watch::Receiver<bool>,
    first_byte_timeout: Duration,
) {
    let mut probe = [0u8; 1];
    let first_byte = tokio::select! {
        first_byte = tokio::time::timeout(first_byte_timeout, stream.peek(&mut probe)) => first_byte,
        _ = stopping.wait_for(|stopping| *stopping) => return,
    };
    match first_byte {
        Ok(Ok(0)) => return,
        Ok(Ok(_)) => {}
        Ok(Err(err)) => {
            tracing::debug!(%peer, error = %err, "connection failed before its first byte");
            return;
        }
        Err(_elapsed) => {
            tracing::debug!(%peer, "closed a connection that sent nothing in time");
            return;
        }
    }

    let service = service_fn(move |request: http::Request<Incoming>| {
        service::handle(&state, surface, peer.ip(), request)
    });
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    if let Err(err) = watcher.watch(connection).await {
        tracing::debug!(%peer, error = %err, "connection closed with an error");
    }
}

/// Builds the HTTP/1.1 and HTTP/2 connection settings.
///
/// hyper's HTTP/1 header read timeout also closes idle keep-alive
/// connections, because it runs while the next request head is awaited.
// NOTE: HTTP/2 has no such timeout here: an idle HTTP/2 connection stays
// open, holding a connection slot, while its client acknowledges pings. A
// client that stops inside the 24-byte HTTP/2 preface is not timed out
// either, because hyper-util's version detection has no timer.
fn connection_builder(config: &Config) -> auto::Builder<TokioExecutor> {
    let max_header_bytes = usize::try_from(config.max_header_bytes).unwrap_or(usize::MAX);

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout())
        .keep_alive(true)
        // A client may shut down its side of the connection once its
        // request is sent (`nc -N` does). Without half-close support,
        // hyper closes the connection at that end of input, before the
        // response is written.
        .half_close(true)
        .max_buf_size(max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(HTTP2_PING_INTERVAL)
        .keep_alive_timeout(HTTP2_PING_TIMEOUT);
    builder
}

async fn drain(
    graceful: GracefulShutdown,
    mut connections: JoinSet<()>,
    timeout: Duration,
    force: impl Future<Output = ()>,
) {
    let open = graceful.count();
    tracing::info!(
        open_connections = open,
        timeout_s = timeout.as_secs(),
        "stopped accepting connections; draining"
    );

    tokio::select! {
        drained = tokio::time::timeout(timeout, graceful.shutdown()) => match drained {
            Ok(()) => {
                tracing::info!("all connections closed");
                return;
            }
            Err(_elapsed) => tracing::warn!(
                open_connections = connections.len(),
                timeout_s = timeout.as_secs(),
                "connections still open after the shutdown timeout; dropping them"
            ),
        },
        () = force => tracing::warn!(
            open_connections = connections.len(),
            "dropping the connections still open"
        ),
    }
    connections.shutdown().await;
}
