//! Health, metrics and the OpenAPI description.

use otpd_e2e::TestServer;

#[tokio::test]
async fn healthz_reports_ready() {
    let t = TestServer::start().await;
    let a = t.get("/healthz").await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["status"], "ok");
}

#[tokio::test]
async fn metrics_cover_requests_checks_sends_and_latency() {
    let t = TestServer::start().await;
    let id = t.issue("+34600000050").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let code = t.code(&id, 1).await;
    t.check(&id, &code).await;
    let a = t.get("/metrics").await;
    assert_eq!(a.status, 200);
    assert!(a.header("content-type").unwrap().starts_with("text/plain"));
    for series in [
        "otpd_http_requests_total{route=\"/v1/verifications\",method=\"POST\",status=\"201\"}",
        "otpd_http_request_duration_seconds_bucket{route=\"/v1/verifications\",method=\"POST\"",
        "otpd_verifications_total{outcome=\"created\"}",
        "otpd_checks_total{outcome=\"approved\"}",
        "otpd_sends_total{channel=\"sms\",outcome=\"sent\"}",
        "otpd_send_duration_seconds_bucket",
        "otpd_delivery_queue_depth",
    ] {
        assert!(a.text.contains(series), "missing {series} in\n{}", a.text);
    }
}

#[tokio::test]
async fn openapi_describes_every_route() {
    let t = TestServer::start().await;
    let a = t.get("/openapi.json").await;
    assert_eq!(a.status, 200);
    let spec = &a.body;
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    let paths = &spec["paths"];
    for (path, method) in [
        ("/v1/verifications", "post"),
        ("/v1/verifications/{id}", "get"),
        ("/v1/verifications/{id}", "delete"),
        ("/v1/verifications/{id}/check", "post"),
        ("/v1/subscribers/{subject}", "put"),
        ("/v1/subscribers/{subject}", "get"),
        ("/v1/subscribers/{subject}", "delete"),
        ("/v1/subscribers/{subject}/devices", "post"),
        (
            "/v1/subscribers/{subject}/devices/{platform}/{token}",
            "delete",
        ),
        ("/healthz", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
        ("/v1/verifications/{id}/ack", "post"),
        ("/v1/admin/routes", "get"),
        ("/v1/admin/reload", "post"),
        ("/v1/admin/limits", "get"),
    ] {
        assert!(
            paths[path][method].is_object(),
            "{method} {path} is not described"
        );
    }
    let pattern = paths["/v1/admin/routes"]["get"]["parameters"][0]["schema"]["pattern"]
        .as_str()
        .unwrap();
    assert_eq!(pattern, otpd::number::INPUT_PATTERN);
    // Every documented status of the create call is one the API really uses.
    let responses = paths["/v1/verifications"]["post"]["responses"]
        .as_object()
        .unwrap();
    for status in [
        "200", "201", "400", "401", "403", "409", "413", "415", "422", "429", "503",
    ] {
        assert!(
            responses.contains_key(status),
            "create does not document {status}"
        );
    }
    let check = paths["/v1/verifications/{id}/check"]["post"]["responses"]
        .as_object()
        .unwrap();
    for status in ["200", "400", "404", "409", "410", "429"] {
        assert!(
            check.contains_key(status),
            "check does not document {status}"
        );
    }
}
