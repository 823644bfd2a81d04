//! Serve otpd's API and a trivial handler side by side, on the same stack (tokio,
//! hyper, axum) and in the same process, so a load tool can compare them in one run:
//!
//! ```sh
//! cargo run --release -p otpd-benches --bin http-pair -- 60
//! wrk -t2 -c64 -d10s -s benches/wrk/issue.lua http://127.0.0.1:PORT/v1/verifications
//! ```
//!
//! Both listen on loopback ports chosen by the OS and printed on stdout. The process
//! exits by itself after the given number of seconds (default 60).

use std::time::Duration;

use otpd::config::Config;
use otpd::domain::clock::SystemClock;
use otpd::server::Settings;
use otpd::{Deps, Server};
use otpd_benches::discard_channels;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(60);
    let mut config = Config::default();
    config.codes.secret = Some(String::from_utf8(otpd_benches::SECRET.to_vec())?.into());
    config.delivery.queue_capacity = 1 << 20;
    // What HTTP costs, not a disk: the embedded store in memory only.
    config.store.kind = otpd::config::StoreKind::Memory;
    config.log.level = "warn".into();
    let otpd_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = Server::start_on(
        otpd_listener,
        Settings::new(config)?.route_to("discard")?,
        Deps {
            clock: std::sync::Arc::new(SystemClock),
            channels: Some(discard_channels()),
            store: None,
            config_file: None,
            events: None,
        },
    )
    .await?;

    let trivial_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let trivial_addr = trivial_listener.local_addr()?;
    let trivial = axum::Router::new().route(
        "/v1/verifications",
        axum::routing::post(|body: axum::body::Bytes| async move {
            (axum::http::StatusCode::CREATED, body)
        }),
    );
    tokio::spawn(async move { axum::serve(trivial_listener, trivial).await });

    println!("otpd    http://{}", server.addr());
    println!("trivial http://{trivial_addr}");
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    server.shutdown();
    server.wait().await?;
    Ok(())
}
