//! The HTTP path without a socket: the whole router (JSON parsing, validation,
//! engine, serialisation, metrics middleware) for `POST /v1/verifications`, beside a
//! trivial handler on the same stack as the baseline.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use otpd::api::{self, AppState};
use otpd::domain::clock::SystemClock;
use otpd_benches::engine_with;
use tower::ServiceExt;

fn http(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let router = rt.block_on(async {
        // The limits of the default configuration, as a deployment has them.
        let (engine, _keys, _store, stop) = engine_with(
            Arc::new(SystemClock),
            Duration::from_secs(600),
            Duration::ZERO,
            1 << 20,
            otpd::policy::admission::Rules::new(&otpd::Config::default()),
        );
        std::mem::forget(stop);
        let state = Arc::new(AppState {
            engine,
            prometheus: None,
            http_metrics: Default::default(),
            channels: Vec::new(),
            push_providers: Vec::new(),
            reloader: None,
            app: Default::default(),
            trusted_proxies: Default::default(),
            body_read_timeout: Duration::from_secs(10),
            body_limit: 16 * 1024,
            stopping: tokio::sync::watch::channel(false).1,
            openapi: Default::default(),
        });
        api::router(state)
    });
    let trivial = axum::Router::new().route(
        "/trivial",
        axum::routing::post(|body: axum::body::Bytes| async move {
            (axum::http::StatusCode::CREATED, body)
        }),
    );
    let mut i = 0u64;
    let mut group = c.benchmark_group("http");
    group.throughput(Throughput::Elements(1));
    group.bench_function("trivial handler (baseline)", |b| {
        b.to_async(&rt).iter(|| {
            let request = Request::post("/trivial")
                .header("content-type", "application/json")
                .body(Body::from(r#"{"to":"+34600000000"}"#))
                .unwrap();
            trivial.clone().oneshot(request)
        })
    });
    group.bench_function("POST /v1/verifications", |b| {
        b.to_async(&rt).iter(|| {
            i += 1;
            let body = format!(r#"{{"to":"+34{}"}}"#, 600_000_000 + i % 100_000_000);
            let request = Request::post("/v1/verifications")
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap();
            let router = router.clone();
            async move {
                let response = router.oneshot(request).await.unwrap();
                assert_eq!(response.status(), 201);
                // Yield now and then so the delivery worker keeps the queue short.
                tokio::task::yield_now().await;
                response
            }
        })
    });
    group.finish();
}

criterion_group!(benches, http);
criterion_main!(benches);
