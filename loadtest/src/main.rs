//! `otpd-loadtest run SCENARIO`: see the library's documentation and
//! `config/loadtest/`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use otpd_loadtest::{Options, Scenario};

/// mimalloc rather than glibc's malloc: under load glibc's allocator (its arenas'
/// consolidation and free-list walks) took over a quarter of otpd's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "otpd-loadtest",
    version,
    about = "Open-loop load tests of otpd, with SMSC and push simulators and an HTML report"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario: start the simulators and otpd (or drive --url), send the load,
    /// write report.json, report.html and summary.txt. Exits 1 if the tool's own
    /// accounting does not hold, 2 on errors.
    Run {
        /// The scenario file (config/loadtest/*.toml).
        scenario: PathBuf,
        /// Directory for the report, otpd's configuration and its log
        /// (default: target/loadtest/<scenario>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The otpd binary to start (default: the one beside this tool, built if absent).
        #[arg(long)]
        otpd: Option<PathBuf>,
        /// Drive an otpd already running at this loopback URL instead of starting one.
        #[arg(long)]
        url: Option<String>,
        /// Override the scenario's duration (e.g. "30s").
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<std::time::Duration>,
        /// Run otpd on this store instead of the scenario's: embedded (kept on disk
        /// in the output directory), memory (nothing on disk), or redis (the tool
        /// starts a redis-server of its own unless the scenario names one).
        #[arg(long)]
        store: Option<String>,
        /// Print no progress lines.
        #[arg(long)]
        quiet: bool,
        /// Call otpd as a configured client with a webhook, and take every event on
        /// a receiver of the tool's (counted in the report, bodies kept in
        /// webhook-events.jsonl).
        #[arg(long)]
        webhooks: bool,
        /// Call otpd as a configured client without a webhook: the baseline that
        /// `--webhooks` is compared with (both authenticate every request).
        #[arg(long, conflicts_with = "webhooks")]
        client: bool,
        /// Have otpd keep its audit trail (in the output directory's audit/).
        #[arg(long)]
        audit: bool,
    },
    /// Read and check a scenario, print how many arrivals it offers, and exit.
    Check { scenario: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { scenario } => match Scenario::load(&scenario) {
            Ok(s) => {
                println!(
                    "{}: valid; {} arrivals over {:?}",
                    s.name,
                    s.planned_arrivals(),
                    s.duration
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Run {
            scenario,
            out,
            otpd,
            url,
            duration,
            store,
            quiet,
            webhooks,
            client,
            audit,
        } => {
            let result = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the runtime")
                .and_then(|rt| {
                    rt.block_on(async move {
                        let mut s = Scenario::load(&scenario)?;
                        if let Some(store) = store {
                            anyhow::ensure!(
                                ["embedded", "memory", "redis"].contains(&store.as_str()),
                                "--store is embedded, memory or redis, not `{store}`"
                            );
                            s.otpd.store = store;
                        }
                        if let Some(d) = duration {
                            s.duration = d;
                            s.rate.fit(d);
                        }
                        let out =
                            out.unwrap_or_else(|| PathBuf::from("target/loadtest").join(&s.name));
                        let report = otpd_loadtest::run(
                            s,
                            Options {
                                out: out.clone(),
                                otpd,
                                url,
                                progress: !quiet,
                                webhooks,
                                client,
                                audit,
                            },
                        )
                        .await?;
                        print!("{}", report.summary());
                        println!("report: {}", out.join("report.html").display());
                        anyhow::Ok(report.invariants_hold())
                    })
                });
            match result {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => {
                    eprintln!("the tool's accounting does not hold: see the checks above");
                    ExitCode::from(1)
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
