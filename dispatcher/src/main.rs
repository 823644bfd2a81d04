//! The `otpd` command: parse arguments, load and validate config, start logging, run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use otpd::config::{Config, LogFormat};
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
    /// Load and validate a configuration, print the effective result as JSON (secret
    /// redacted), and exit: 0 when valid, 78 when not.
    CheckConfig {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn load(path: Option<&PathBuf>) -> Result<Config, ExitCode> {
    Config::load(path.map(PathBuf::as_path), std::env::vars()).map_err(|e| {
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
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match load(config.as_ref()) {
            Ok(mut config) => {
                if config.codes.secret.is_some() {
                    config.codes.secret = Some("<redacted>".into());
                }
                match config_json(&config) {
                    Ok(text) => {
                        println!("{text}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("otpd: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            Err(code) => code,
        },
        Command::Serve { config } => {
            let config = match load(config.as_ref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            init_logging(&config);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("otpd: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("otpd: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn config_json(config: &Config) -> anyhow::Result<String> {
    let value = serde_json::to_value(config)?;
    Ok(serde_json::to_string_pretty(&value)?)
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let server = Server::start(config, Deps::default()).await?;
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
