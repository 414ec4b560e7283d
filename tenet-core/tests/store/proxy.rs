//! A TCP proxy to Postgres that can lose its connections silently.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Forwards connections on a loopback port to `upstream`.
///
/// After [`CuttingProxy::cut`], each connection that was open at that
/// moment is closed when its client next sends data, and that data is
/// never forwarded. The client therefore sees the loss only as the failure
/// of its next query, like a connection whose server went away while it
/// was idle. Connections opened after the cut are forwarded normally.
pub struct CuttingProxy {
    pub addr: SocketAddr,
    cuts: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl CuttingProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let addr = listener.local_addr().expect("proxy address");
        let cuts = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(accept(listener, upstream, Arc::clone(&cuts)));
        Self { addr, cuts, task }
    }

    /// Marks every connection open now to be closed on its next request.
    pub fn cut(&self) {
        self.cuts.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, upstream: SocketAddr, cuts: Arc<AtomicU64>) {
    while let Ok((client, _)) = listener.accept().await {
        tokio::spawn(forward(client, upstream, Arc::clone(&cuts)));
    }
}

/// Forwards one connection until either side closes it or a cut made
/// after it opened.
async fn forward(client: TcpStream, upstream: SocketAddr, cuts: Arc<AtomicU64>) {
    let opened_at = cuts.load(Ordering::SeqCst);
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let replies =
        tokio::spawn(async move { tokio::io::copy(&mut server_read, &mut client_write).await });

    let mut buffer = vec![0; 16 * 1024];
    loop {
        let read = match client_read.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if cuts.load(Ordering::SeqCst) != opened_at {
            break;
        }
        if server_write.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    // Dropping both halves of each socket closes it.
    replies.abort();
    let _ = replies.await;
}
