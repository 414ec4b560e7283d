//! A TCP proxy that a test can switch between passing traffic, holding it
//! without a response, and refusing it, to fault a backend for one replica
//! without touching the shared Postgres or Redis.

use std::net::SocketAddr;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with connections, open and new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forwards bytes both ways.
    Pass,
    /// Accepts and keeps connections open but forwards nothing, like a
    /// server that hangs; they are closed when the mode changes again.
    Blackhole,
    /// Closes open connections and every new one at once, like a server
    /// that is down.
    Refuse,
}

/// A proxy on 127.0.0.1 in front of `upstream`; stops when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    task: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let addr = listener.local_addr().expect("proxy address");
        let (mode, watcher) = watch::channel(Mode::Pass);
        let task = tokio::spawn(accept(listener, upstream, watcher));
        Self { addr, mode, task }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, upstream: SocketAddr, mode: watch::Receiver<Mode>) {
    while let Ok((client, _)) = listener.accept().await {
        let mode = mode.clone();
        tokio::spawn(serve(client, upstream, mode));
    }
}

async fn serve(mut client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    let mut server = None;
    loop {
        let current = *mode.borrow_and_update();
        match current {
            Mode::Refuse => return,
            Mode::Blackhole => {
                // Held until the mode changes, then closed: a connection that
                // went silent does not come back, as after a partition.
                let _ = mode.changed().await;
                return;
            }
            Mode::Pass => {
                if server.is_none() {
                    match TcpStream::connect(upstream).await {
                        Ok(stream) => server = Some(stream),
                        Err(_) => return,
                    }
                }
                let Some(upstream) = server.as_mut() else {
                    return;
                };
                tokio::select! {
                    _ = copy_bidirectional(&mut client, upstream) => return,
                    changed = mode.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }
}
