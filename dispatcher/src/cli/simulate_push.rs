//! `otpd simulate push`: the push mock (APNs, FCM HTTP v1, HMS and their token
//! endpoints) as a standalone server, for demos and load tests.

use std::path::PathBuf;
use std::time::Duration;

use otpd_simulators::push::{ApnsKey, Behaviour, FcmAccount, HmsClient, MockConfig, PushMock};

#[derive(clap::Args)]
pub struct PushArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: std::net::SocketAddr,
    /// Serve h2c and HTTP/1.1 in the clear instead of TLS.
    #[arg(long)]
    plaintext: bool,
    /// Where to write the self-signed certificate clients must trust (`ca_file`).
    #[arg(long, default_value = "otpd-push-mock-ca.pem")]
    ca_out: PathBuf,
    /// APNs signing key accepted: `KEY_ID:TEAM_ID:PUBLIC_KEY_PEM_FILE` (repeatable).
    #[arg(long = "apns-key")]
    apns_keys: Vec<String>,
    /// APNs topic accepted (repeatable); none accepts any.
    #[arg(long = "apns-topic")]
    apns_topics: Vec<String>,
    /// Google service account accepted: `CLIENT_EMAIL:PUBLIC_KEY_PEM_FILE` (repeatable).
    #[arg(long = "fcm-account")]
    fcm_accounts: Vec<String>,
    /// Huawei OAuth client accepted: `CLIENT_ID:CLIENT_SECRET` (repeatable).
    #[arg(long = "hms-client")]
    hms_clients: Vec<String>,
    /// Answer latency in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Share (0-100) of pushes answered with the provider's rate-limit answer.
    #[arg(long, default_value_t = 0.0)]
    throttle_percent: f64,
    /// Share (0-100) of the other pushes answered with a server error.
    #[arg(long, default_value_t = 0.0)]
    error_percent: f64,
    /// `Retry-After` seconds on rate-limit answers.
    #[arg(long)]
    retry_after: Option<u64>,
    /// Stop by itself after this many seconds (default: run until SIGTERM/Ctrl-C).
    #[arg(long)]
    seconds: Option<u64>,
}

fn split<'a>(flag: &str, value: &'a str, parts: usize) -> anyhow::Result<Vec<&'a str>> {
    let v: Vec<&str> = value.splitn(parts, ':').collect();
    anyhow::ensure!(
        v.len() == parts && v.iter().all(|p| !p.is_empty()),
        "--{flag} `{value}`: expected {parts} parts separated by `:`"
    );
    Ok(v)
}

fn read(flag: &str, path: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("--{flag}: cannot read {path}: {e}"))
}

pub async fn run(args: PushArgs) -> anyhow::Result<()> {
    for (flag, p) in [
        ("throttle-percent", args.throttle_percent),
        ("error-percent", args.error_percent),
    ] {
        anyhow::ensure!((0.0..=100.0).contains(&p), "--{flag} is 0 to 100");
    }
    let apns_keys = args
        .apns_keys
        .iter()
        .map(|v| {
            let p = split("apns-key", v, 3)?;
            Ok(ApnsKey {
                key_id: p[0].into(),
                team_id: p[1].into(),
                public_pem: read("apns-key", p[2])?,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let fcm_accounts = args
        .fcm_accounts
        .iter()
        .map(|v| {
            // The e-mail has no `:`; the path may.
            let p = split("fcm-account", v, 2)?;
            Ok(FcmAccount {
                client_email: p[0].into(),
                public_pem: read("fcm-account", p[1])?,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let hms_clients = args
        .hms_clients
        .iter()
        .map(|v| {
            let p = split("hms-client", v, 2)?;
            Ok(HmsClient {
                client_id: p[0].into(),
                client_secret: p[1].into(),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let mock = PushMock::start(MockConfig {
        listen: args.listen,
        tls: !args.plaintext,
        apns_keys,
        apns_topics: args.apns_topics.clone(),
        fcm_accounts,
        hms_clients,
        behaviour: Behaviour {
            latency_ms: args.latency_ms,
            throttle: args.throttle_percent / 100.0,
            server_error: args.error_percent / 100.0,
            retry_after_secs: args.retry_after,
        },
        // A load test would fill memory with recorded requests; keep the last few.
        keep: 1000,
        ..MockConfig::default()
    })
    .await?;
    if let Some(pem) = mock.ca_pem() {
        std::fs::write(&args.ca_out, pem)
            .map_err(|e| anyhow::anyhow!("--ca-out {}: {e}", args.ca_out.display()))?;
        eprintln!("certificate to trust: {}", args.ca_out.display());
    }
    // The URL goes to stdout so that scripts can read the port of `:0`.
    println!("push mock listening on {}", mock.url());
    match args.seconds {
        Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
        None => crate::shutdown_signal().await,
    }
    for p in otpd_simulators::push::Provider::ALL {
        let c = mock.counts(p);
        eprintln!(
            "{}: {} accepted, {} refused, {} access tokens issued",
            p.as_str(),
            c.accepted,
            c.rejected,
            c.tokens_issued
        );
    }
    Ok(())
}
