//! Logs and metrics: the tracing subscriber (text or JSON, level reloadable
//! on SIGHUP), the Prometheus registry in [`metrics`], the process metrics
//! read at each scrape ([`process`]) and the per-minute rate windows the
//! status page shows ([`rate`]).
//!
//! Log lines are lowercase with structured fields (`tenant = %id`). ERROR is
//! reserved for data loss or what needs an operator. No secret is ever a
//! field: secrets are [`crate::secret::Secret`]s and print as `[redacted]`.

pub(crate) mod metrics;
pub(crate) mod process;
pub(crate) mod rate;

use std::sync::Arc;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{LogConfig, LogFormat};

type SetLevel = dyn Fn(&str) -> Result<(), String> + Send + Sync;

/// Changes the log filter of the running process.
#[derive(Clone)]
pub(crate) struct LogHandle {
    set: Arc<SetLevel>,
}

impl std::fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHandle").finish_non_exhaustive()
    }
}

impl LogHandle {
    /// Applies `level` unless `RUST_LOG` is set (it wins, as `[log] level` in
    /// `config/ddrelay.toml` says).
    pub(crate) fn set_level(&self, level: &str) -> Result<(), String> {
        if std::env::var_os("RUST_LOG").is_some() {
            return Ok(());
        }
        (self.set)(level)
    }
}

/// Installs the global subscriber. Call once, from the CLI.
pub(crate) fn init_logging(config: &LogConfig) -> LogHandle {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| {
            EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info"))
        });
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let result = match config.format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_target(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    if let Err(e) = result {
        eprintln!("ddrelay: logging already initialised: {e}");
    }
    LogHandle {
        set: Arc::new(move |level: &str| {
            let f = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
            handle.reload(f).map_err(|e| e.to_string())
        }),
    }
}
