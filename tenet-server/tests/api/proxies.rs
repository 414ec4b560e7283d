//! Client addresses behind trusted proxies: which address the limit of
//! failed authentications counts, with peers on 127.0.0.1 (the trusted
//! proxy) and 127.0.0.2 (an untrusted client).

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

use clap::Parser as _;
use reqwest::StatusCode;
use tenet_server::Config;

use crate::helpers::TestServer;

/// Flags of a server that trusts 127.0.0.1 and lets each client address
/// fail twice, then once a minute.
const FLAGS: [&str; 6] = [
    "--trusted-proxies",
    "127.0.0.1",
    "--auth-failure-rate",
    "1",
    "--auth-failure-burst",
    "2",
];

/// Builds a client that connects from 127.0.0.`last_octet`. Every address
/// in 127.0.0.0/8 is loopback on Linux.
fn client_from(last_octet: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last_octet)))
        .build()
        .expect("HTTP client")
}

/// Sends `GET /protected` with `key` and one `X-Forwarded-For` header per
/// entry of `forwarded`, and returns the status.
async fn attempt(
    server: &TestServer,
    from: &reqwest::Client,
    key: &str,
    forwarded: &[&str],
) -> StatusCode {
    let mut request = from.get(server.url("/protected")).header("X-API-Key", key);
    for value in forwarded {
        request = request.header("X-Forwarded-For", *value);
    }
    request.send().await.expect("request sent").status()
}

fn guess() -> tenet_core::ApiKey {
    tenet_core::ApiKey::generate()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_peer_cannot_spoof_header() {
    let server = TestServer::start_with(&FLAGS).await;
    let client = client_from(2);
    let proxy = client_from(1);
    let guess = guess();

    // A new forwarded address on every attempt would give each attempt a
    // fresh budget if the header counted.
    let first = attempt(&server, &client, guess.expose_secret(), &["198.51.100.1"]).await;
    let second = attempt(&server, &client, guess.expose_secret(), &["198.51.100.2"]).await;
    let third = attempt(&server, &client, guess.expose_secret(), &["198.51.100.3"]).await;
    let via_proxy = attempt(&server, &proxy, guess.expose_secret(), &["127.0.0.2"]).await;
    let spoofed_address = attempt(&server, &proxy, guess.expose_secret(), &["198.51.100.1"]).await;

    assert_eq!(first, StatusCode::UNAUTHORIZED);
    assert_eq!(second, StatusCode::UNAUTHORIZED);
    assert_eq!(third, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        via_proxy,
        StatusCode::TOO_MANY_REQUESTS,
        "the failures counted against the peer 127.0.0.2"
    );
    assert_eq!(
        spoofed_address,
        StatusCode::UNAUTHORIZED,
        "the spoofed address was never charged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_peer_uses_rightmost_untrusted_entry() {
    let server = TestServer::start_with(&FLAGS).await;
    let proxy = client_from(1);
    let guess = guess();
    let key = guess.expose_secret();

    let first = attempt(&server, &proxy, key, &["198.51.100.1, 203.0.113.5"]).await;
    let second = attempt(&server, &proxy, key, &["198.51.100.2, 203.0.113.5"]).await;
    let other_prefix = attempt(&server, &proxy, key, &["198.51.100.3, 203.0.113.5"]).await;
    let behind_trusted_hop = attempt(&server, &proxy, key, &["203.0.113.5, 127.0.0.1"]).await;
    let split_headers = attempt(&server, &proxy, key, &["198.51.100.4", "203.0.113.5"]).await;
    let with_port = attempt(&server, &proxy, key, &["203.0.113.5:40000"]).await;
    let left_entry = attempt(&server, &proxy, key, &["198.51.100.1"]).await;
    let proxy_itself = attempt(&server, &proxy, key, &[]).await;

    assert_eq!(first, StatusCode::UNAUTHORIZED);
    assert_eq!(second, StatusCode::UNAUTHORIZED);
    assert_eq!(
        other_prefix,
        StatusCode::TOO_MANY_REQUESTS,
        "prepended entries do not change the client"
    );
    assert_eq!(behind_trusted_hop, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(split_headers, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(with_port, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        left_entry,
        StatusCode::UNAUTHORIZED,
        "entries left of the client were never charged"
    );
    assert_eq!(
        proxy_itself,
        StatusCode::UNAUTHORIZED,
        "the proxy's own address was never charged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_behind_one_proxy_have_separate_budgets() {
    let server = TestServer::start_with(&FLAGS).await;
    let tenant = server.admin().create_tenant("Acme").await;
    let issued = server.admin().issue_key(&tenant).await;
    let proxy = client_from(1);
    let guess = guess();
    let guesser = ["203.0.113.66"];
    let owner = ["203.0.113.77"];

    let guesses = [
        attempt(&server, &proxy, guess.expose_secret(), &guesser).await,
        attempt(&server, &proxy, guess.expose_secret(), &guesser).await,
        attempt(&server, &proxy, guess.expose_secret(), &guesser).await,
    ];
    let guesser_valid = attempt(&server, &proxy, &issued.api_key, &guesser).await;
    let owner_valid = attempt(&server, &proxy, &issued.api_key, &owner).await;
    let owner_wrong = attempt(&server, &proxy, guess.expose_secret(), &owner).await;
    let other_ipv6 = attempt(
        &server,
        &proxy,
        guess.expose_secret(),
        &["[2001:db8::9]:80"],
    )
    .await;

    assert_eq!(
        guesses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    assert_eq!(
        guesser_valid,
        StatusCode::TOO_MANY_REQUESTS,
        "an address over the limit is rejected before its key is checked"
    );
    assert_eq!(owner_valid, StatusCode::OK);
    assert_eq!(owner_wrong, StatusCode::UNAUTHORIZED);
    assert_eq!(other_ipv6, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_header_falls_back_to_the_peer() {
    let server = TestServer::start_with(&FLAGS).await;
    let proxy = client_from(1);
    let guess = guess();
    let key = guess.expose_secret();

    let unknown = attempt(&server, &proxy, key, &["unknown"]).await;
    let hostname = attempt(&server, &proxy, key, &["203.0.113.5, client.example"]).await;
    let empty = attempt(&server, &proxy, key, &[""]).await;
    let no_header = attempt(&server, &proxy, key, &[]).await;
    let named_client = attempt(&server, &proxy, key, &["203.0.113.5"]).await;

    assert_eq!(unknown, StatusCode::UNAUTHORIZED);
    assert_eq!(hostname, StatusCode::UNAUTHORIZED);
    assert_eq!(
        empty,
        StatusCode::TOO_MANY_REQUESTS,
        "both malformed headers counted against the proxy"
    );
    assert_eq!(no_header, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        named_client,
        StatusCode::UNAUTHORIZED,
        "the entry left of a malformed one was never charged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_is_ignored_without_trusted_proxies() {
    let server =
        TestServer::start_with(&["--auth-failure-rate", "1", "--auth-failure-burst", "2"]).await;
    let proxy = client_from(1);
    let guess = guess();
    let key = guess.expose_secret();

    let first = attempt(&server, &proxy, key, &["203.0.113.1"]).await;
    let second = attempt(&server, &proxy, key, &["203.0.113.2"]).await;
    let third = attempt(&server, &proxy, key, &["203.0.113.3"]).await;

    assert_eq!(first, StatusCode::UNAUTHORIZED);
    assert_eq!(second, StatusCode::UNAUTHORIZED);
    assert_eq!(third, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_limit_is_on_by_default() {
    let server = TestServer::start().await;
    let client = client_from(3);
    let guess = guess();
    let burst = tenet_server::config::DEFAULT_AUTH_FAILURE_BURST;

    let mut within_burst = Vec::new();
    for _ in 0..burst {
        within_burst.push(attempt(&server, &client, guess.expose_secret(), &[]).await);
    }
    let over_burst = attempt(&server, &client, guess.expose_secret(), &[]).await;
    let other_address = attempt(&server, &server.client, guess.expose_secret(), &[]).await;

    assert!(burst > 1, "a burst of {burst} fails legitimate retries");
    assert!(
        within_burst
            .iter()
            .all(|status| *status == StatusCode::UNAUTHORIZED),
        "{within_burst:?}"
    );
    assert_eq!(over_burst, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(other_address, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_rate_turns_the_limit_off() {
    let server = TestServer::start_with(&["--auth-failure-rate", "0"]).await;
    let guess = guess();
    let attempts = tenet_server::config::DEFAULT_AUTH_FAILURE_BURST + 5;

    let mut statuses = Vec::new();
    for _ in 0..attempts {
        statuses.push(attempt(&server, &server.client, guess.expose_secret(), &[]).await);
    }

    assert!(
        statuses
            .iter()
            .all(|status| *status == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
}

#[test]
fn invalid_trusted_proxies_are_rejected() {
    let cases = [
        ("10.0.0.0/8,10.0.0.300", "10.0.0.300"),
        ("10.0.0.0/40", "10.0.0.0/40"),
        ("proxy.internal", "proxy.internal"),
        ("10.0.0.0/8,,127.0.0.1", "empty entry"),
    ];

    for (value, expected) in cases {
        let error = Config::try_parse_from(["tenet-server", "--trusted-proxies", value])
            .err()
            .unwrap_or_else(|| panic!("{value} was accepted"));
        let message = error.to_string();

        assert!(message.contains("--trusted-proxies"), "{value}: {message}");
        assert!(message.contains(expected), "{value}: {message}");
    }
}

#[test]
fn invalid_trusted_proxies_env_stops_the_binary() {
    let output = Command::new(env!("CARGO_BIN_EXE_tenet-server"))
        .env("TENET_TRUSTED_PROXIES", "10.0.0.0/8, 300.1.2.3")
        .env_remove("TENET_ADMIN_TOKEN")
        .env_remove("TENET_KEY_PEPPER")
        .output()
        .expect("binary runs");

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--trusted-proxies"), "{stderr}");
    assert!(stderr.contains("300.1.2.3"), "{stderr}");
}
