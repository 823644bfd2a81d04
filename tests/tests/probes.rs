//! Kubernetes' probes over a real otpd process and its SMPP carrier: `/livez` says
//! the process serves, whatever else fails; `/readyz` follows the carrier — not
//! ready while it has no live bind, ready again once it is back — and names the
//! check that fails.

use std::time::{Duration, Instant};

use otpd::config::ClientConfig;
use otpd::policy::clients::hash_key;
use otpd_e2e::TestServer;
use otpd_e2e::process::{OtpdProcess, smsc_for_carrier, with_carrier};
use otpd_simulators::smsc::Smsc;
use serde_json::Value;

async fn probe(otpd: &OtpdProcess, path: &str) -> (u16, Value) {
    let answer = otpd_e2e::client()
        .get(format!("{}{path}", otpd.base))
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap())
}

/// `/readyz` until it answers `status`, within `within`.
async fn ready_becomes(otpd: &OtpdProcess, status: u16, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (got, body) = probe(otpd, "/readyz").await;
        if got == status {
            return body;
        }
        assert!(Instant::now() < deadline, "/readyz stayed {got}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_carrier_and_liveness_does_not() {
    let smsc = Smsc::start(smsc_for_carrier()).await.unwrap();
    let port = smsc.addr().port();
    let otpd = OtpdProcess::start(&with_carrier(
        port,
        "",
        "binds = 1\nreconnect_min = \"50ms\"\nreconnect_max = \"200ms\"",
    ))
    .await;
    let body = ready_becomes(&otpd, 200, Duration::from_secs(10)).await;
    assert_eq!(body["checks"]["carriers"], "ok", "{body}");
    assert_eq!(body["carriers_live"], 1, "{body}");

    // The carrier goes away: not ready, still alive.
    smsc.stop();
    drop(smsc);
    let body = ready_becomes(&otpd, 503, Duration::from_secs(10)).await;
    assert_eq!(body["status"], "unavailable", "{body}");
    assert_eq!(body["checks"]["carriers"], "failing", "{body}");
    assert_eq!(body["checks"]["store"], "ok", "{body}");
    assert_eq!(body["carriers_live"], 0, "{body}");
    let (live, body) = probe(&otpd, "/livez").await;
    assert_eq!(live, 200, "{body}");

    // It comes back on the same port: ready again, once a bind is up.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the carrier's port is free again");
    let _smsc = Smsc::start_on(listener, smsc_for_carrier()).await.unwrap();
    let body = ready_becomes(&otpd, 200, Duration::from_secs(10)).await;
    assert_eq!(body["checks"]["carriers"], "ok", "{body}");
}

#[tokio::test]
async fn the_probes_answer_without_an_api_key() {
    let t = TestServer::start_with(
        |c| c.clients = vec![ClientConfig::new("backend", hash_key("key-of-backend"))],
        None,
    )
    .await;
    let unnamed = t
        .get("/v1/verifications/vf_0123456789abcdef0123456789abcdef")
        .await;
    assert_eq!(
        unnamed.status, 401,
        "clients are configured: {}",
        unnamed.text
    );
    let live = t.get("/livez").await;
    assert_eq!(live.status, 200, "{}", live.text);
    assert_eq!(live.body["status"], "ok");
    let ready = t.get("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    for check in ["store", "delivery", "carriers", "serving"] {
        assert_eq!(ready.body["checks"][check], "ok", "{}", ready.text);
    }
}
