//! The `otpd` command: parse arguments, load and validate config, start logging, run.

use std::path::PathBuf;
use std::process::ExitCode;

mod cli;

use cli::{audit as audit_cli, simulate_push};

/// mimalloc rather than glibc's malloc: under load glibc's allocator (its arenas'
/// consolidation and free-list walks) took over a quarter of otpd's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use otpd::config::{Config, LogFormat};
use otpd::server::Settings;
use otpd::{Deps, Server};

/// Exit status for a configuration that cannot be used (sysexits.h EX_CONFIG).
const EX_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(name = "otpd", version, about = "One-time-code dispatch engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API. Without --config, runs on the embedded defaults: in-memory
    /// store, messages written to the file outbox.
    Serve {
        /// TOML configuration file (see config/otpd.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run a simulator of a carrier's system, for tests, demos and load tests.
    #[command(subcommand)]
    Simulate(Simulate),
    /// Load and validate a configuration, print the effective result as JSON (secret
    /// redacted), and exit: 0 when valid, 78 when not.
    CheckConfig {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Make an API key for a `[[clients]]` entry: prints the key (give it to the
    /// client, once) and its SHA-256 (put it in `key_sha256`). With --key, only hashes
    /// that key.
    HashKey {
        #[arg(long)]
        key: Option<String>,
    },
    /// The audit trail: check it, export a subject's history, make its key.
    #[command(subcommand)]
    Audit(audit_cli::AuditCommand),
}

#[derive(Subcommand)]
enum Simulate {
    /// An SMPP 3.4 SMSC on loopback: accepts binds and submits, sends delivery receipts.
    Smsc(SmscArgs),
    /// APNs, FCM HTTP v1 and Huawei Push Kit (and their token endpoints) on one
    /// HTTP/2 server, validating requests as the providers do.
    Push(simulate_push::PushArgs),
}

#[derive(clap::Args)]
struct SmscArgs {
    /// Address to listen on (loopback only is sensible: it accepts any account unless
    /// --account is given).
    #[arg(long, default_value = "127.0.0.1:2775")]
    listen: std::net::SocketAddr,
    /// `system_id:password` accepted (repeatable); none accepts any.
    #[arg(long = "account")]
    accounts: Vec<String>,
    /// submit_sm per second per bind before ESME_RTHROTTLED.
    #[arg(long)]
    tps: Option<u32>,
    /// Response latency in milliseconds, `MIN` or `MIN-MAX`.
    #[arg(long, default_value = "0")]
    latency_ms: String,
    /// Delay of delivery receipts, in milliseconds.
    #[arg(long, default_value_t = 100)]
    receipt_delay_ms: u64,
    /// Message ids in `decimal` or `hex`; receipts use the other base with --cross-base.
    #[arg(long, default_value = "decimal")]
    ids: String,
    #[arg(long)]
    cross_base: bool,
    /// Share (0-100) of receipts that say UNDELIV instead of DELIVRD.
    #[arg(long, default_value_t = 0)]
    undeliverable_percent: u32,
    /// Stop by itself after this many seconds (default: run until SIGTERM/Ctrl-C).
    #[arg(long)]
    seconds: Option<u64>,
    /// Append every accepted message as a JSON line to this file.
    #[arg(long)]
    record: Option<PathBuf>,
}

fn load(path: Option<&PathBuf>) -> Result<Settings, ExitCode> {
    Settings::load(path.map(PathBuf::as_path), std::env::vars()).map_err(|e| {
        eprintln!("otpd: {e}");
        ExitCode::from(EX_CONFIG)
    })
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::new(&config.log.level);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    otpd_adapters::push::http::install_crypto();
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match load(config.as_ref()) {
            // Credentials print as `<redacted>` (see `otpd_adapters::Secret`).
            Ok(settings) => match config_json(&settings.config) {
                Ok(text) => {
                    println!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("otpd: {e}");
                    ExitCode::FAILURE
                }
            },
            Err(code) => code,
        },
        Command::HashKey { key } => {
            let key = match key {
                Some(k) => k,
                None => match otpd::policy::clients::new_key(&mut otpd::secrets::code::OsRandom) {
                    Ok(k) => {
                        println!("key = {k}");
                        k
                    }
                    Err(e) => {
                        eprintln!("otpd: {e}");
                        return ExitCode::FAILURE;
                    }
                },
            };
            println!("key_sha256 = \"{}\"", otpd::policy::clients::hash_key(&key));
            ExitCode::SUCCESS
        }
        Command::Audit(command) => audit_cli::run(command),
        Command::Simulate(Simulate::Smsc(args)) => block_on(simulate_smsc(args), ExitCode::from(2)),
        Command::Simulate(Simulate::Push(args)) => {
            block_on(simulate_push::run(args), ExitCode::from(2))
        }
        Command::Serve { config } => {
            let file = config;
            let settings = match load(file.as_ref()) {
                Ok(s) => s,
                Err(code) => return code,
            };
            init_logging(&settings.config);
            block_on(serve(settings, file), ExitCode::FAILURE)
        }
    }
}

/// Run `job` on a new runtime; its error is printed and ends the process with `failure`.
fn block_on(
    job: impl std::future::Future<Output = anyhow::Result<()>>,
    failure: ExitCode,
) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("otpd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(job) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("otpd: {}", chain_text(&e));
            failure
        }
    }
}

/// An error and its causes, each once: errors that already end with their cause's
/// text (`cannot listen on …: Address already in use`) do not repeat it.
fn chain_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.ends_with(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

fn config_json(config: &Config) -> anyhow::Result<String> {
    let value = serde_json::to_value(config)?;
    Ok(serde_json::to_string_pretty(&value)?)
}

async fn serve(settings: Settings, file: Option<PathBuf>) -> anyhow::Result<()> {
    let server = Server::start(
        settings,
        Deps {
            config_file: file,
            events: None,
            ..Deps::default()
        },
    )
    .await?;
    // SIGHUP reloads routes, templates and carrier caps; the server logs the outcome.
    #[cfg(unix)]
    {
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        loop {
            tokio::select! {
                () = shutdown_signal() => break,
                _ = hangup.recv() => {
                    let _ = server.reload().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    shutdown_signal().await;
    tracing::info!("shutting down");
    server.shutdown();
    server.wait().await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn simulate_smsc(args: SmscArgs) -> anyhow::Result<()> {
    use otpd_adapters::smpp::receipt::MessageState;
    use otpd_simulators::smsc::{Account, IdFormat, ReceiptPolicy, Smsc, SmscConfig};
    use std::time::Duration;

    let accounts = args
        .accounts
        .iter()
        .map(|a| {
            let (system_id, password) = a
                .split_once(':')
                .ok_or_else(|| anyhow::anyhow!("--account `{a}`: expected system_id:password"))?;
            Ok(Account {
                system_id: system_id.into(),
                password: password.into(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (min, max) = match args.latency_ms.split_once('-') {
        Some((a, b)) => (a.trim().parse::<u64>()?, b.trim().parse::<u64>()?),
        None => {
            let v = args.latency_ms.trim().parse::<u64>().map_err(|_| {
                anyhow::anyhow!(
                    "--latency-ms `{}`: expected MIN or MIN-MAX",
                    args.latency_ms
                )
            })?;
            (v, v)
        }
    };
    let ids = match args.ids.as_str() {
        "decimal" => IdFormat::Decimal,
        "hex" => IdFormat::Hex,
        other => anyhow::bail!("--ids `{other}`: expected decimal or hex"),
    };
    let receipt_ids = match (ids, args.cross_base) {
        (IdFormat::Decimal, true) => IdFormat::Hex,
        (IdFormat::Hex, true) => IdFormat::Decimal,
        (same, false) => same,
    };
    anyhow::ensure!(
        args.undeliverable_percent <= 100,
        "--undeliverable-percent is 0 to 100"
    );
    let config = SmscConfig {
        accounts,
        tps_per_bind: args.tps,
        latency: (
            Duration::from_millis(min),
            Duration::from_millis(max.max(min)),
        ),
        message_ids: ids,
        receipts: ReceiptPolicy {
            delay: Duration::from_millis(args.receipt_delay_ms),
            outcomes: vec![
                (MessageState::Delivered, 100 - args.undeliverable_percent),
                (MessageState::Undeliverable, args.undeliverable_percent),
            ],
            id_format: receipt_ids,
            tlvs: true,
        },
        ..SmscConfig::default()
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    let smsc = Smsc::start_on(listener, config).await?;
    // The address goes to stdout so that scripts can read the port of `:0`.
    println!("smsc listening on {}", smsc.addr());
    // How many received messages are in the record file already.
    let mut written = 0usize;
    let until = async {
        match args.seconds {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => shutdown_signal().await,
        }
    };
    tokio::pin!(until);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = &mut until => break,
            _ = tick.tick() => {
                if let Some(path) = &args.record {
                    append_received(&smsc, path, &mut written)?;
                }
            }
        }
    }
    if let Some(path) = &args.record {
        append_received(&smsc, path, &mut written)?;
    }
    smsc.stop();
    eprintln!(
        "smsc: {} submits accepted, {} receipts sent",
        smsc.stats()
            .accepted
            .load(std::sync::atomic::Ordering::Relaxed),
        smsc.stats()
            .receipts_sent
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    Ok(())
}

/// Append the messages accepted since the last call to `path`, one JSON line each.
fn append_received(
    smsc: &otpd_simulators::smsc::Smsc,
    path: &std::path::Path,
    written: &mut usize,
) -> anyhow::Result<()> {
    use std::io::Write;
    let received = smsc.received();
    let from = *written;
    if received.len() <= from {
        return Ok(());
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    for r in &received[from..] {
        let line = serde_json::json!({
            "system_id": r.system_id,
            "message_id": r.message_id,
            "source": {"ton": r.source.ton, "npi": r.source.npi, "addr": r.source.addr},
            "destination": {"ton": r.destination.ton, "npi": r.destination.npi, "addr": r.destination.addr},
            "esm_class": r.esm_class,
            "data_coding": r.data_coding,
            "registered_delivery": r.registered_delivery,
            "body_hex": hex::encode(&r.body),
        });
        writeln!(file, "{line}")?;
    }
    *written = received.len();
    Ok(())
}
