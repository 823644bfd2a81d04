//! With its store down — the fake whose every call fails, as a Redis that is gone
//! does — otpd refuses clearly and invents nothing: 503 `store_unavailable` on every
//! route that needs the store, nothing queued or sent, `/healthz` and `/readyz` say why, and `/livez` is
//! still 200.

use std::sync::Arc;

use otpd::store::Stores;
use otpd::store::fake::Unavailable;
use otpd_e2e::TestServer;
use serde_json::json;

#[tokio::test]
async fn a_store_that_is_down_gets_503_everywhere_and_nothing_is_sent() {
    let t = TestServer::start_with_store(Stores::of(Arc::new(Unavailable))).await;
    let id = "vf_0123456789abcdef0123456789abcdef";
    let answers = [
        t.post("/v1/verifications", json!({"to": "+34600000001"}))
            .await,
        t.get(&format!("/v1/verifications/{id}")).await,
        t.check(id, "123456").await,
        t.get("/v1/subscribers/12345678Z").await,
    ];
    for a in answers {
        assert_eq!(a.status, 503, "{}", a.text);
        assert_eq!(a.body["error"]["code"], "store_unavailable", "{}", a.text);
        assert!(a.headers.contains_key("retry-after"), "{}", a.text);
    }
    let health = t.get("/healthz").await;
    assert_eq!(health.status, 503, "{}", health.text);
    assert_eq!(health.body["store"], "unavailable");
    // Not ready — but alive: restarting otpd would not bring its store back.
    let ready = t.get("/readyz").await;
    assert_eq!(ready.status, 503, "{}", ready.text);
    assert_eq!(ready.body["checks"]["store"], "failing", "{}", ready.text);
    assert_eq!(ready.body["checks"]["delivery"], "ok", "{}", ready.text);
    assert_eq!(t.get("/livez").await.status, 200);
    t.queue_drained().await;
    assert!(t.outbox_lines().is_empty(), "nothing was sent");
    t.stop().await;
}
