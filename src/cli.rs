//! The command line: `run`, `check-config`, `demo`, `fakedog`, `tenants`.
//! `anyhow` lives here and in `main.rs` only; library modules return typed
//! errors.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::App;
use crate::config::Config;
use crate::telemetry;

/// ddrelay: connect your customers' Datadog accounts through OAuth and
/// forward their metrics, logs, events and service checks to their own site.
#[derive(Debug, Parser)]
#[command(name = "ddrelay", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the relay: OAuth callback, ingest API, admin API, /metrics, delivery.
    Run {
        /// The TOML configuration file.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a configuration and print it with every secret redacted.
    CheckConfig {
        /// The TOML configuration file.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
    },
    /// Probe a relay's health endpoint (for container HEALTHCHECKs): exit 0 when it answers 200.
    Healthcheck {
        /// The URL to probe.
        #[arg(long, default_value = "http://127.0.0.1:8126/healthz")]
        url: String,
    },
    /// Operator view of tenants, through the admin API of the relay that FILE configures.
    Tenants {
        /// The relay's TOML configuration file (for api_listen and admin_token).
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
        #[command(subcommand)]
        action: TenantsAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum TenantsAction {
    /// List every tenant with its state, site and queue depth.
    List {
        /// Print the admin API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one tenant (JSON).
    Show {
        /// The tenant id.
        id: String,
    },
    /// Revoke a tenant's tokens at Datadog, delete its secrets and discard its queued data.
    Disconnect {
        /// The tenant id.
        id: String,
    },
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => check_config(&config),
        Command::Run { config } => run_blocking(config),
        Command::Tenants { config, action } => crate::ops::tenants(&config, action),
        Command::Healthcheck { url } => crate::ops::healthcheck(&url),
    }
}

pub(crate) fn print_problems(e: &crate::config::ConfigError) {
    for p in &e.problems {
        eprintln!("error: {p}");
    }
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            println!("# {}: valid", path.display());
            print!("{}", config.redacted_toml());
            ExitCode::SUCCESS
        }
        Err(e) => {
            print_problems(&e);
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ddrelay")
        .build()
}

fn run_blocking(path: PathBuf) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            print_problems(&e);
            return ExitCode::FAILURE;
        }
    };
    let log = telemetry::init_logging(&config.log);
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(path, config, log)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "ddrelay failed");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(path: PathBuf, config: Config, log: telemetry::LogHandle) -> anyhow::Result<()> {
    let app = App::build_with_log(config, Some(log)).await?;
    let reloader = app.reloader();
    spawn_reload_on_sighup(path, reloader)?;
    app.run(terminate_signal()).await
}

/// Resolves on SIGTERM or SIGINT.
async fn terminate_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("sigterm received, draining"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received, draining"),
    }
}

/// Re-reads the config file on SIGHUP; a bad file keeps the old config.
fn spawn_reload_on_sighup(path: PathBuf, reloader: crate::app::Reloader) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match Config::load(&path) {
                Ok(c) => {
                    reloader.reload(c);
                }
                Err(e) => {
                    reloader.failed();
                    for p in &e.problems {
                        tracing::warn!(problem = %p, "reload refused; keeping the running configuration");
                    }
                }
            }
        }
    });
    Ok(())
}
