//! Readiness during shutdown, and the signals that start it.
//!
//! A rolling update sends SIGTERM to a replica while the load balancer may
//! still route new requests to it. The server therefore fails `/readyz` at
//! once, keeps serving for `--drain-delay` seconds so that the load
//! balancer notices and stops sending, and only then stops accepting
//! connections and lets in-flight requests finish.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Whether the server has started shutting down.
#[derive(Debug, Default)]
pub struct Lifecycle {
    draining: AtomicBool,
}

impl Lifecycle {
    /// Makes `/readyz` return 503 from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Returns whether shutdown has started.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

/// The signal that asked the process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    Interrupt,
    Terminate,
}

impl StopSignal {
    /// Returns the signal's name, for log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
        }
    }
}

/// The process's SIGINT and SIGTERM handlers.
#[derive(Debug)]
pub struct Signals {
    interrupt: Option<Signal>,
    terminate: Option<Signal>,
}

impl Signals {
    /// Installs the handlers. A handler that cannot be installed is logged
    /// and the other signal still works; without either, the server runs
    /// until killed.
    pub fn install() -> Self {
        let interrupt = signal(SignalKind::interrupt())
            .inspect_err(
                |err| tracing::error!(error = %err, "failed to install the SIGINT handler"),
            )
            .ok();
        let terminate = signal(SignalKind::terminate())
            .inspect_err(
                |err| tracing::error!(error = %err, "failed to install the SIGTERM handler"),
            )
            .ok();
        Self {
            interrupt,
            terminate,
        }
    }

    /// Resolves on the next SIGINT or SIGTERM.
    pub async fn recv(&mut self) -> StopSignal {
        tokio::select! {
            Some(()) = recv(&mut self.interrupt) => StopSignal::Interrupt,
            Some(()) = recv(&mut self.terminate) => StopSignal::Terminate,
            else => std::future::pending().await,
        }
    }
}

async fn recv(signal: &mut Option<Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

/// Resolves when the server should stop accepting connections, and hands
/// the handlers back for [`force_after_signal`].
///
/// The first signal marks `lifecycle` draining. After SIGTERM the future
/// then waits for `drain_delay`, or until a second signal arrives. After
/// SIGINT, which a person at a terminal sends, it resolves at once.
pub async fn stop_after_signal(
    mut signals: Signals,
    lifecycle: &Lifecycle,
    drain_delay: Duration,
) -> Signals {
    let received = signals.recv().await;
    lifecycle.start_draining();

    if received == StopSignal::Interrupt || drain_delay.is_zero() {
        tracing::info!(signal = received.as_str(), "shutting down");
        return signals;
    }

    tracing::info!(
        signal = received.as_str(),
        drain_delay_s = drain_delay.as_secs(),
        "shutting down: /readyz returns 503; serving until the drain delay ends"
    );
    tokio::select! {
        () = tokio::time::sleep(drain_delay) => {}
        again = signals.recv() => {
            tracing::info!(signal = again.as_str(), "second signal; ending the drain delay early");
        }
    }
    signals
}

/// Resolves on the next SIGINT or SIGTERM after the server stopped
/// accepting, which ends the wait for in-flight requests: a person who
/// presses Ctrl-C twice wants the process gone now, not after the
/// shutdown timeout.
pub async fn force_after_signal(mut signals: Signals) {
    let received = signals.recv().await;
    tracing::warn!(
        signal = received.as_str(),
        "another signal during shutdown; closing the open connections now"
    );
}
