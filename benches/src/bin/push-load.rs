//! Push load from otpd's provider clients against a push mock on loopback (`otpd
//! simulate push`), for comparing with other clients against the same server in the
//! same run.
//!
//! ```sh
//! push-load URL CA_FILE apns|fcm|hms COUNT [CONNECTIONS] [IN_FLIGHT]
//! ```
//! Uses the test keys of `adapters/tests/fixtures` (the mock must accept them).
//! Prints one JSON line: provider, pushes accepted, other outcomes, seconds, rate.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use otpd_adapters::apns::{ApnsConfig, ApnsPusher};
use otpd_adapters::fcm::{FcmConfig, FcmPusher, ServiceAccount};
use otpd_adapters::hms::{HmsConfig, HmsPusher};
use otpd_adapters::push::http::HttpOptions;
use otpd_adapters::push::{Notification, Outcome, Pusher};

/// No run goes on longer than this, whatever COUNT says.
const MAX_RUN: Duration = Duration::from_secs(120);

fn fixture(name: &str) -> anyhow::Result<Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../adapters/tests/fixtures")
        .join(name);
    std::fs::read(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn pusher(
    provider: &str,
    url: &str,
    http: HttpOptions,
) -> anyhow::Result<(Arc<dyn Pusher>, &'static str)> {
    Ok(match provider {
        "apns" => (
            Arc::new(ApnsPusher::new(ApnsConfig {
                base_url: url.into(),
                key_pem: fixture("apns-test-key.p8")?,
                key_id: "ABC123DEFG".into(),
                team_id: "TEAM123456".into(),
                default_topic: Some("es.gob.clave".into()),
                http,
            })?),
            "",
        ),
        "fcm" => {
            let key = String::from_utf8(fixture("fcm-test-account.pem")?)?;
            let account = ServiceAccount::from_json(
                serde_json::json!({
                    "project_id": "clave-test",
                    "private_key": key,
                    "client_email": "otpd@clave-test.iam.gserviceaccount.com",
                    "token_uri": format!("{url}/token"),
                })
                .to_string()
                .as_bytes(),
            )?;
            (
                Arc::new(FcmPusher::new(FcmConfig {
                    base_url: url.into(),
                    account,
                    project_id: None,
                    http,
                })?),
                "es.gob.clave.app",
            )
        }
        "hms" => (
            Arc::new(HmsPusher::new(HmsConfig {
                base_url: url.into(),
                token_url: format!("{url}/oauth2/v3/token"),
                app_id: "104523".into(),
                client_id: "104523".into(),
                client_secret: "hms-secret".to_string().into(),
                http,
            })?),
            "",
        ),
        other => anyhow::bail!("unknown provider `{other}`: apns, fcm or hms"),
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: push-load URL CA_FILE apns|fcm|hms COUNT [CONNECTIONS] [IN_FLIGHT]";
    anyhow::ensure!(args.len() >= 4, usage);
    let url = args[0].trim_end_matches('/').to_string();
    let host = url
        .split("://")
        .nth(1)
        .and_then(|h| h.rsplit_once(':'))
        .map(|(h, _)| h.trim_matches(['[', ']']))
        .unwrap_or("");
    anyhow::ensure!(
        matches!(host, "127.0.0.1" | "::1" | "localhost"),
        "loopback targets only"
    );
    let ca = std::fs::read(&args[1])?;
    let provider = args[2].as_str();
    let count: u64 = args[3].parse()?;
    let connections: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let in_flight: usize = args.get(5).map(|s| s.parse()).transpose()?.unwrap_or(500);

    let (pusher, app) = pusher(
        provider,
        &url,
        HttpOptions {
            ca_pem: Some(ca),
            connections,
            max_streams: in_flight,
            timeout: Duration::from_secs(10),
        },
    )?;
    // One push first: connection, TLS and credentials are set up outside the clock.
    let warm = push_one(&*pusher, app, 0).await;
    anyhow::ensure!(
        matches!(warm, Outcome::Accepted { .. }),
        "the first push was not accepted: {warm:?}"
    );

    let next = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let other = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + MAX_RUN;
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let (pusher, next, accepted, other) = (
            pusher.clone(),
            next.clone(),
            accepted.clone(),
            other.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count || Instant::now() >= deadline {
                    return;
                }
                match push_one(&*pusher, app, i + 1).await {
                    Outcome::Accepted { .. } => accepted.fetch_add(1, Ordering::Relaxed),
                    _ => other.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let accepted = accepted.load(Ordering::Relaxed);
    println!(
        "{}",
        serde_json::json!({
            "client": "otpd",
            "provider": provider,
            "connections": connections,
            "in_flight": in_flight,
            "accepted": accepted,
            "other": other.load(Ordering::Relaxed),
            "seconds": seconds,
            "rate": accepted as f64 / seconds,
        })
    );
    pusher.shutdown().await;
    Ok(())
}

async fn push_one(pusher: &dyn Pusher, app: &str, i: u64) -> Outcome {
    // Device tokens as each provider shapes them.
    let token = match pusher.name() {
        "apns" => format!("{i:064x}"),
        _ => format!("bench-device-token-{i:020}"),
    };
    let id = format!("vf_{i:032x}");
    pusher
        .push(
            &Notification {
                token: &token,
                title: "Código de verificación · 427",
                body: "042317 es tu código de verificación. Caduca en 10 min. No lo compartas con nadie.",
                verification_id: &id,
                expires_at: 4_102_444_800,
                ttl_secs: 600,
                match_code: Some("427"),
                approval: None,
                ack_token: None,
            },
            app,
        )
        .await
}
