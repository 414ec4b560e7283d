//! Rolling-update shutdown of the real binary: SIGTERM fails `/readyz` at
//! once, requests keep being served for the drain delay, then the server
//! stops accepting and exits 0.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::helpers::{ADMIN_TOKEN, BINARY_TIMEOUT, BinaryServer, stalled_request};

/// Drain delay of the server under test.
const DRAIN_DELAY: Duration = Duration::from_secs(3);

/// How long the clients go on sending after they saw `/readyz` fail, like
/// a load balancer whose health checks take a while to notice. Well under
/// [`DRAIN_DELAY`], so that they stop before the server stops accepting.
const BALANCER_LAG: Duration = Duration::from_millis(1500);

/// Concurrent clients, each with its own connection pool.
const CLIENTS: usize = 4;

/// What the clients and the readiness poller observed.
#[derive(Default)]
struct Observed {
    /// Requests that got a response, and how many of them were sent after
    /// `/readyz` had returned 503.
    served: AtomicUsize,
    served_while_not_ready: AtomicUsize,
    /// Every request that failed, with the reason.
    failures: Mutex<Vec<String>>,
    /// When the poller first saw `/readyz` return 503.
    not_ready_at: Mutex<Option<Instant>>,
    /// Set once the balancer lag after that has passed.
    stop_sending: AtomicBool,
}

impl Observed {
    fn not_ready_at(&self) -> Option<Instant> {
        *self.not_ready_at.lock().expect("not ready time")
    }

    fn fail(&self, reason: String) {
        self.failures.lock().expect("failures").push(reason);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_without_failing_requests() {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let drain_delay = DRAIN_DELAY.as_secs().to_string();
    let mut server = BinaryServer::start(
        data_dir.path(),
        &[
            ("TENET_ADMIN_TOKEN", ADMIN_TOKEN),
            ("TENET_DRAIN_DELAY", &drain_delay),
        ],
    );
    let observed = Arc::new(Observed::default());
    let deadline = Instant::now() + BINARY_TIMEOUT;

    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            tokio::spawn(send_until_told(
                server.url("/tenants"),
                Arc::clone(&observed),
                deadline,
            ))
        })
        .collect();
    let poller = tokio::spawn(poll_readiness(
        server.url(""),
        Arc::clone(&observed),
        deadline,
    ));

    // Terminate under load.
    while observed.served.load(Ordering::SeqCst) < 50 {
        assert!(Instant::now() < deadline, "the clients got no responses");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let terminated_at = Instant::now();
    server.terminate();

    for client in clients {
        client.await.expect("client task ends");
    }
    poller.await.expect("poller task ends");
    let status = tokio::task::spawn_blocking(move || server.wait())
        .await
        .expect("wait ends");

    let failures = observed.failures.lock().expect("failures");
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(
        observed.not_ready_at().is_some(),
        "/readyz never returned 503"
    );
    assert!(
        observed.served_while_not_ready.load(Ordering::SeqCst) > 0,
        "no request was served after /readyz returned 503"
    );
    assert!(
        terminated_at.elapsed() >= DRAIN_DELAY,
        "the server exited before the drain delay ended"
    );
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

/// Sends `GET /tenants` in a loop and checks each response, until
/// `stop_sending` is set or a request fails.
async fn send_until_told(url: String, observed: Arc<Observed>, deadline: Instant) {
    let client = reqwest::Client::new();
    while !observed.stop_sending.load(Ordering::SeqCst) && Instant::now() < deadline {
        let sent_at = Instant::now();
        let sent_while_not_ready = observed.not_ready_at().is_some_and(|at| at < sent_at);

        match client.get(&url).bearer_auth(ADMIN_TOKEN).send().await {
            Ok(response) if response.status() == StatusCode::OK => {
                observed.served.fetch_add(1, Ordering::SeqCst);
                if sent_while_not_ready {
                    observed
                        .served_while_not_ready
                        .fetch_add(1, Ordering::SeqCst);
                }
            }
            // One failure fails the test; stopping here keeps a client from
            // spinning on a closed port.
            Ok(response) => return observed.fail(format!("status {}", response.status())),
            Err(err) => return observed.fail(format!("request failed: {err}")),
        }
    }
}

/// Polls `/readyz` like a load balancer's health check. Once it returns
/// 503, checks that `/healthz` still passes, and sets `stop_sending` after
/// [`BALANCER_LAG`].
async fn poll_readiness(base: String, observed: Arc<Observed>, deadline: Instant) {
    let client = reqwest::Client::new();
    let not_ready_at = loop {
        assert!(Instant::now() < deadline, "/readyz kept returning 200");
        let response = client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("/readyz answers while draining");
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            break Instant::now();
        }
        assert_eq!(response.status(), StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    *observed.not_ready_at.lock().expect("not ready time") = Some(not_ready_at);

    let live = client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("/healthz answers while draining");
    assert_eq!(
        live.status(),
        StatusCode::OK,
        "liveness fails while draining"
    );

    tokio::time::sleep(BALANCER_LAG).await;
    observed.stop_sending.store(true, Ordering::SeqCst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_close_connections_while_draining() {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let drain_delay = DRAIN_DELAY.as_secs().to_string();
    let mut server = BinaryServer::start(
        data_dir.path(),
        &[
            ("TENET_ADMIN_TOKEN", ADMIN_TOKEN),
            ("TENET_DRAIN_DELAY", &drain_delay),
        ],
    );
    let client = reqwest::Client::new();
    let connection_header = |response: &reqwest::Response| {
        response
            .headers()
            .get("connection")
            .map(|value| value.to_str().unwrap_or_default().to_owned())
    };
    let before = client
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("served");
    assert_eq!(connection_header(&before), None);

    server.terminate();
    let deadline = Instant::now() + DRAIN_DELAY;
    let during = loop {
        let response = client
            .get(server.url("/readyz"))
            .send()
            .await
            .expect("served");
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            break client
                .get(server.url("/healthz"))
                .send()
                .await
                .expect("served");
        }
        assert!(Instant::now() < deadline, "/readyz never returned 503");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    assert_eq!(during.status(), StatusCode::OK);
    assert_eq!(connection_header(&during).as_deref(), Some("close"));
    let status = tokio::task::spawn_blocking(move || server.wait())
        .await
        .expect("wait ends");
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_signal_ends_wait_for_requests() {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    // Both far longer than the test may take, so that only the second
    // signal can end the wait for the stalled request.
    let mut server = BinaryServer::start(
        data_dir.path(),
        &[
            ("TENET_ADMIN_TOKEN", ADMIN_TOKEN),
            ("TENET_SHUTDOWN_TIMEOUT", "600"),
            ("TENET_HEADER_READ_TIMEOUT", "3600"),
        ],
    );

    let stalled = stalled_request(server.addr).await;
    // Time for the server to read the head and start the handler.
    tokio::time::sleep(Duration::from_millis(500)).await;

    server.interrupt();
    server.wait_for_line("stopped accepting connections; draining");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        server.try_wait().is_none(),
        "the server exited with a request in flight"
    );

    server.interrupt();
    let status = tokio::task::spawn_blocking(move || {
        let status = server.wait();
        server.wait_for_line("dropping the connections still open");
        status
    })
    .await
    .expect("wait ends");
    assert_eq!(status.code(), Some(0), "exit status {status}");
    drop(stalled);
}
