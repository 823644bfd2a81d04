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
        ("/v1/admin/carriers", "get"),
        ("/v1/admin/carriers/{name}/suspend", "post"),
        ("/v1/admin/carriers/{name}/resume", "post"),
        ("/v1/admin/subjects/{subject}/unlock", "post"),
        ("/v1/admin/subjects/{subject}/verifications", "get"),
        ("/v1/admin/pumping/unblock", "post"),
        ("/v1/admin/overview", "get"),
        ("/console", "get"),
        ("/livez", "get"),
        ("/readyz", "get"),
        ("/v1/events", "get"),
    ] {
        assert!(
            paths[path][method].is_object(),
            "{method} {path} is not described"
        );
    }
    assert_eq!(
        spec["webhooks"]["event"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Event"
    );
    // Every type otpd tells is documented.
    let kinds = spec["components"]["schemas"]["Event"]["properties"]["type"]["enum"]
        .as_array()
        .unwrap();
    for kind in otpd::events::EventKind::ALL {
        assert!(
            kinds.iter().any(|k| k == kind.as_str()),
            "{}",
            kind.as_str()
        );
    }
    let pattern = paths["/v1/admin/routes"]["get"]["parameters"][0]["schema"]["pattern"]
        .as_str()
        .unwrap();
    assert_eq!(pattern, otpd::numbers::reader::INPUT_PATTERN);
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

/// A backend may pipeline HTTP/1.1 requests: every one gets its answer, in order, and
/// answers that are ready together leave together.
#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = TestServer::start().await;
    let mut s = tokio::net::TcpStream::connect(t.server().addr())
        .await
        .unwrap();
    let mut wire = Vec::new();
    let numbers = ["+34600000071", "+34600000072", "+34600000073"];
    for n in numbers {
        let body = format!(r#"{{"to":"{n}"}}"#);
        wire.extend_from_slice(
            format!(
                "POST /v1/verifications HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }
    wire.extend_from_slice(b"GET /nowhere HTTP/1.1\r\nhost: x\r\n\r\n");
    s.write_all(&wire).await.unwrap();
    let mut got = String::new();
    let mut buf = [0u8; 16384];
    while got.matches("HTTP/1.1 ").count() < 4 {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("answers within 5 s")
            .unwrap();
        assert!(n > 0, "closed after {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let answers: Vec<&str> = got.split("HTTP/1.1 ").skip(1).collect();
    for (answer, n) in answers.iter().zip(numbers) {
        assert!(answer.starts_with("201"), "{answer}");
        assert!(answer.contains(&format!(r#""to":"{n}""#)), "{answer}");
    }
    assert!(answers[3].starts_with("404"), "{}", answers[3]);
}

/// HTTP/2 without TLS (prior knowledge) is served on the same port.
#[tokio::test]
async fn http2_prior_knowledge_is_served() {
    let t = TestServer::start().await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = client.get(t.url("/healthz")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
}

/// Old clients send a CRLF after a POST body. The answer must not wait for more bytes
/// (hyper's `pipeline_flush` held it until the next request, which never comes).
#[tokio::test]
async fn a_stray_crlf_after_a_body_does_not_hold_the_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = TestServer::start().await;
    let mut s = tokio::net::TcpStream::connect(t.server().addr())
        .await
        .unwrap();
    let body = r#"{"to":"+34600000074"}"#;
    let wire = format!(
        "POST /v1/verifications HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}\r\n",
        body.len()
    );
    s.write_all(wire.as_bytes()).await.unwrap();
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("answered within 5 s")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 201"));
}
