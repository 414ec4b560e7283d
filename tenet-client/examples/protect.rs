//! A small hyper service behind `VerifyLayer`: only requests with a valid
//! Tenet API key reach it, and it greets the key's tenant.
//!
//! ```sh
//! cargo run -p tenet-client --example protect --features tower
//! curl -s http://127.0.0.1:3000/ -H "X-API-Key: $KEY"
//! ```
//!
//! `TENET_URL` sets the Tenet server (default `http://127.0.0.1:8080`) and
//! `LISTEN` this service's address (default `127.0.0.1:3000`); empty
//! values count as unset.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tenet_client::{Client, Principal, VerifyLayer};
use tokio::net::TcpListener;
use tower::{Layer as _, service_fn};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Empty variables count as unset, as they do for `tenet` and
    // tenet-server.
    let setting = |name: &str, default: &str| {
        std::env::var(name)
            .ok()
            .filter(|value| !value.is_empty())
            .unwrap_or_else(|| default.to_owned())
    };
    let tenet_url = setting("TENET_URL", "http://127.0.0.1:8080");
    let listen = setting("LISTEN", "127.0.0.1:3000");

    let client = Client::builder(&tenet_url)
        .timeout(Duration::from_secs(2))
        .build()?;
    let layer = VerifyLayer::new(client)
        .cache_ttl(Duration::from_secs(5))
        .cache_capacity(1_000);

    let listener = TcpListener::bind(&listen).await?;
    println!("listening on {}", listener.local_addr()?);

    loop {
        let (stream, _) = listener.accept().await?;
        let service = TowerToHyperService::new(layer.layer(service_fn(greet)));

        tokio::spawn(async move {
            let served = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(err) = served {
                eprintln!("connection failed: {err}");
            }
        });
    }
}

/// Greets the tenant of the verified key, which the layer put into the
/// request's extensions.
async fn greet(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let text = match request.extensions().get::<Principal>() {
        Some(principal) => format!(
            "hello, tenant {} (key {})\n",
            principal.tenant_id, principal.key_id
        ),
        // Unreachable behind the layer, which rejects requests without a
        // verified key.
        None => "hello, stranger\n".to_owned(),
    };
    Ok(Response::new(Full::new(Bytes::from(text))))
}
