//! The command line: `run`, `check-config`, `demo`, `bench`, `healthcheck`,
//! `fakedog`, `tenants`, `verify`, `store migrate`; the commands that talk
//! to a running relay or work on the store are in `ops.rs`.
//! `anyhow` lives here and in `main.rs` only; library modules return typed
//! errors.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::app::App;
use crate::config::{Config, LogConfig, LogFormat};
use crate::dev::fakedog::{FakeDog, Options};
use crate::telemetry;

/// ddrelay: connect your customers' Datadog accounts through OAuth and
/// forward their metrics, logs, events and service checks to their own site.
#[derive(Debug, Parser)]
#[command(name = "ddrelay", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
    /// A self-contained tour: fakedog and a relay on loopback, three customers
    /// on three sites connected through OAuth + PKCE, every data kind sent and
    /// delivered, a revoked key recovered. Needs no Datadog account.
    Demo {
        /// Log level for the relay and fakedog while the demo runs.
        #[arg(long, default_value = "error")]
        log_level: String,
        /// After the tour, keep the relay and fakedog running to play with:
        /// prints the status page, fakedog's page of what each org received
        /// and a ready-to-paste command per data kind; Ctrl-C stops both.
        #[arg(long)]
        keep_running: bool,
    },
    /// Measure throughput, latency, CPU and memory of the whole path on this
    /// machine (fakedog in counting mode, the relay as a separate process).
    /// The last line printed is one JSON object with every figure.
    Bench {
        /// Tenants to connect (each its own Datadog org, sites round-robin).
        #[arg(long, default_value_t = 1)]
        tenants: usize,
        /// Length of each load phase.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Concurrent keep-alive connections driving load.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Send ingest bodies uncompressed (default: gzip, as Datadog's clients do).
        #[arg(long)]
        plain_ingest: bool,
        /// Compress series to Datadog with zstd (sent as zstd1) instead of gzip.
        #[arg(long)]
        zstd: bool,
        /// A seconds-long run for CI that fails only on gross regressions
        /// (memory bounds, delivery), never on timings.
        #[arg(long)]
        smoke: bool,
        /// Series points/s for the latency phase (default: half load, half
        /// the series rate the relay delivered in the saturation phase).
        #[arg(long)]
        latency_rate: Option<f64>,
        /// MiB/s of uncompressed JSON (all four kinds, spread over every
        /// tenant) for the steady phase, which runs first and reports memory;
        /// 0 skips it.
        #[arg(long, default_value_t = 10.0)]
        steady_mib: f64,
        /// Nice value of fakedog's threads: it stands in for Datadog, which
        /// is not on the relay's machine in production; 0 runs it at the
        /// relay's priority.
        #[arg(long, default_value_t = 19)]
        dog_nice: i32,
        /// Series with two tags and no resource (about 110 bytes of JSON per
        /// point) instead of five tags and a host resource (about 210).
        #[arg(long)]
        light_series: bool,
        /// Also run the loads matrix: light series, series, logs and spans,
        /// for one tenant and for all, at saturation and at 10 %, 50 % and
        /// 90 % of it (several minutes). `--loads=logs,traces` runs only the
        /// loads named (light_series, series, logs, traces).
        #[arg(long, num_args = 0.., require_equals = true, value_delimiter = ',', value_name = "LOADS")]
        loads: Option<Vec<String>>,
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
    /// Run Datadog's "Test the OAuth client" checklist for a connected tenant,
    /// inside the relay that FILE configures (through its admin API).
    ///
    /// Steps: the relay holds the tenant as connected; its site is allowed; a
    /// forced token refresh succeeds; its API key validates; the site's API
    /// and logs hosts resolve and answer; one test item of each kind (series,
    /// log, event, service check), tagged ddrelay:verify, is accepted; the
    /// granted scopes include oauth.scopes and api_keys_write.
    ///
    /// Exit status: 0 when every step passes, 1 when one fails, 2 when the
    /// checklist could not run (bad config, relay unreachable, unknown tenant).
    Verify {
        /// The relay's TOML configuration file (for api_listen and admin_token).
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
        /// The tenant id.
        tenant: String,
        /// Print the admin API's JSON report instead of the checklist.
        #[arg(long)]
        json: bool,
    },
    /// Credential store maintenance (offline: stop the relay first).
    Store {
        #[command(subcommand)]
        action: StoreAction,
    },
    /// Run fakedog, a local Datadog emulator (every site over HTTPS: OAuth,
    /// API keys, intakes) to rehearse the OAuth flow offline. See docs/fakedog.md.
    Fakedog(FakedogArgs),
}

#[derive(Debug, Subcommand)]
pub(crate) enum TenantsAction {
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
    /// Start connecting a tenant: print the URL that authorizes it at
    /// Datadog (open it in a browser signed in to the customer's org). With
    /// --fakedog, the relay is configured for fakedog (docs/fakedog.md) and
    /// this command clicks Authorize itself: one line connects the tenant.
    Connect {
        /// The tenant id.
        id: String,
        /// Where the customer's Datadog account is: a site name (EU1), a
        /// domain (datadoghq.eu) or a web URL; default: US1's region picker.
        #[arg(long)]
        site: Option<String>,
        /// Authorize at fakedog, through the relay's `[datadog]` ca_file and
        /// resolve, and land on the relay's callback.
        #[arg(long)]
        fakedog: bool,
        /// With --fakedog: the fakedog organization to connect (by name)
        /// when its consent page offers a choice; default: the first.
        #[arg(long, requires = "fakedog")]
        org: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum StoreAction {
    /// Copy the store that FILE configures (the embedded SQLite store under
    /// storage.data_dir, or its database_url) into a PostgreSQL database, to
    /// run several replicas on it: every tenant with its sealed tokens and
    /// API key (byte for byte: the same master key opens them) and every
    /// pending connect flow. Refuses a target that already holds tenants
    /// unless --force; verifies the copy (rows read back identical, counts,
    /// every secret opens). Stop the relay first. Then set
    /// storage.database_url to the target and start the replicas.
    Migrate {
        /// The relay's TOML configuration file (source store and master key).
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
        /// The target: `postgres://user[:password]@host:port/database`
        /// (the database must exist; tables are created).
        #[arg(long, value_name = "URL")]
        to: String,
        /// Copy even if the target already holds tenants (same ids are
        /// overwritten, others kept).
        #[arg(long)]
        force: bool,
    },
}

/// `ddrelay fakedog` options.
#[derive(Debug, clap::Args)]
pub(crate) struct FakedogArgs {
    /// HTTPS listener serving every Datadog hostname.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9443")]
    pub(crate) listen: SocketAddr,
    /// Plain-HTTP control listener (inspection, faults, fakeintake API).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9444")]
    pub(crate) control: SocketAddr,
    /// Where to write the generated CA certificate (PEM).
    #[arg(long, value_name = "FILE", default_value = "fakedog-ca.pem")]
    pub(crate) ca_out: PathBuf,
    /// An OAuth client: `id=..,secret=..,redirect=..[,redirect=..][,scopes=a+b][,name=..][,test][,owner=ORG]`.
    /// Repeatable. Default: the demo client (demo-client / demo-secret).
    #[arg(long = "client", value_name = "SPEC")]
    pub(crate) clients: Vec<String>,
    /// An organization: name=..,site=datadoghq.eu[,id=..]. Repeatable.
    /// Default: one org per Datadog site.
    #[arg(long = "org", value_name = "SPEC")]
    pub(crate) orgs: Vec<String>,
    /// Skip the consent page (authorize redirects at once).
    #[arg(long)]
    pub(crate) auto_consent: bool,
    /// Validate and count only; keep no items (benchmarks).
    #[arg(long)]
    pub(crate) counting: bool,
    /// Access-token lifetime, e.g. 1h, 90s.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "1h")]
    pub(crate) token_ttl: Duration,
    /// Log level (RUST_LOG wins when set).
    #[arg(long, default_value = "info")]
    pub(crate) log_level: String,
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => check_config(&config),
        Command::Run { config } => run_blocking(config),
        Command::Tenants { config, action } => {
            crate::ops::tenants(&config, action, crate::dev::sandbox::walk_consent)
        }
        Command::Verify {
            config,
            tenant,
            json,
        } => crate::ops::verify(&config, &tenant, json),
        Command::Healthcheck { url } => crate::ops::healthcheck(&url),
        Command::Demo {
            log_level,
            keep_running,
        } => demo_blocking(&log_level, keep_running),
        Command::Bench {
            tenants,
            duration,
            concurrency,
            plain_ingest,
            zstd,
            smoke,
            latency_rate,
            steady_mib,
            dog_nice,
            light_series,
            loads,
        } => bench_blocking(crate::dev::bench::BenchOptions {
            tenants,
            duration: if smoke {
                duration.min(Duration::from_secs(2))
            } else {
                duration
            },
            concurrency,
            gzip_ingest: !plain_ingest,
            zstd,
            smoke,
            latency_rate,
            steady_mib_per_s: steady_mib,
            dog_nice,
            light_series,
            // The smoke runs the whole matrix, so that it can fail on a
            // gross regression of any load.
            loads: if smoke {
                loads.or(Some(Vec::new()))
            } else {
                loads
            },
        }),
        Command::Store {
            action: StoreAction::Migrate { config, to, force },
        } => crate::ops::store_migrate(&config, &to, force),
        Command::Fakedog(args) => fakedog_blocking(args),
    }
}

/// Memory bounds the CI smoke enforces (generous: they catch leaks and
/// unbounded buffering, not noise). Peak RSS of the relay under load.
/// The peak is the whole run's high-water mark (`VmHWM`), matrix included:
/// 154 MiB in the smoke of BENCHMARKS.md "Where the performance targets
/// stand"; before change 15 the saturation phases alone reached 201 MiB.
const SMOKE_MAX_PEAK_RSS_MIB: f64 = 224.0;
const SMOKE_MAX_IDLE_RSS_MIB: f64 = 64.0;
/// Peak RSS during the steady phase (the target is 64 MiB at 10 MiB/s over
/// 1,000 tenants, BENCHMARKS.md "Where the performance targets stand"; the
/// smoke's bound only catches gross regressions).
const SMOKE_MAX_STEADY_RSS_MIB: f64 = 128.0;

fn bench_blocking(opts: crate::dev::bench::BenchOptions) -> ExitCode {
    telemetry::init_logging(&LogConfig {
        level: "error".into(),
        format: LogFormat::Text,
    });
    let smoke = opts.smoke;
    match block_on(ExitCode::FAILURE, crate::dev::bench::run(opts)) {
        Err(code) => code,
        Ok(Ok(report)) => {
            let mut failed = Vec::new();
            if smoke {
                let peak = report["peak_rss_mib"].as_f64().unwrap_or(f64::MAX);
                let idle = report["idle_rss_mib"].as_f64().unwrap_or(f64::MAX);
                if peak > SMOKE_MAX_PEAK_RSS_MIB {
                    failed.push(format!(
                        "peak RSS {peak:.1} MiB > {SMOKE_MAX_PEAK_RSS_MIB} MiB"
                    ));
                }
                if let Some(steady) = report["steady"]["peak_rss_mib"].as_f64()
                    && steady > SMOKE_MAX_STEADY_RSS_MIB
                {
                    failed.push(format!(
                        "peak RSS in the steady phase {steady:.1} MiB > {SMOKE_MAX_STEADY_RSS_MIB} MiB"
                    ));
                }
                if idle > SMOKE_MAX_IDLE_RSS_MIB {
                    failed.push(format!(
                        "idle RSS {idle:.1} MiB > {SMOKE_MAX_IDLE_RSS_MIB} MiB"
                    ));
                }
                failed.extend(crate::dev::bench::gross_regressions(&report));
            }
            println!("{report}");
            if failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                eprintln!("bench smoke failed: {}", failed.join("; "));
                ExitCode::FAILURE
            }
        }
        Ok(Err(e)) => {
            eprintln!("bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn demo_blocking(level: &str, keep_running: bool) -> ExitCode {
    telemetry::init_logging(&LogConfig {
        level: level.to_string(),
        format: LogFormat::Text,
    });
    match block_on(ExitCode::FAILURE, crate::dev::demo::run(keep_running)) {
        Err(code) => code,
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("demo failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_problems(e: &crate::config::ConfigError) {
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

/// Blocking-pool threads: ingest decodes and validates large bodies there
/// (CPU work, nothing that waits on I/O). Two per core keep every core busy
/// while one thread waits for decoding memory; more would only add
/// allocator arenas and the memory each keeps (BENCHMARKS.md "Change 13:
/// fewer decoding threads, the matrix in the CI smoke (2026-12-07)").
/// Bodies decoded at once are at most this many, whatever
/// `server.decode_memory` allows.
fn max_blocking_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (2 * cores).max(4)
}

pub(crate) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ddrelay")
        .max_blocking_threads(max_blocking_threads())
        .build()
}

/// Runs `job` to completion on a fresh [`runtime`]. When the runtime does
/// not start, says so and gives back `failed`, the exit code to end with.
pub(crate) fn block_on<F: Future>(failed: ExitCode, job: F) -> Result<F::Output, ExitCode> {
    match runtime() {
        Ok(rt) => Ok(rt.block_on(job)),
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            Err(failed)
        }
    }
}

/// The scaffold of every command that works from a config file: loads the
/// file at `path` (printing each problem), runs `job` with it on a fresh
/// runtime and prints its error. Every failure gives back `failed`, the
/// exit code to end with.
pub(crate) fn with_config<T, E, Fut>(
    path: &Path,
    failed: ExitCode,
    job: impl FnOnce(Config) -> Fut,
) -> Result<T, ExitCode>
where
    E: std::fmt::Display,
    Fut: Future<Output = Result<T, E>>,
{
    let config = Config::load(path).map_err(|e| {
        print_problems(&e);
        failed
    })?;
    block_on(failed, job(config))?.map_err(|e| {
        eprintln!("error: {e:#}");
        failed
    })
}

fn run_blocking(path: PathBuf) -> ExitCode {
    let done = with_config(&path.clone(), ExitCode::FAILURE, |config| async move {
        run(path, config)
            .await
            .inspect_err(|e| tracing::error!(error = %format!("{e:#}"), "ddrelay failed"))
    });
    done.map_or_else(|code| code, |()| ExitCode::SUCCESS)
}

async fn run(path: PathBuf, config: Config) -> anyhow::Result<()> {
    let log = telemetry::init_logging(&config.log);
    let app = App::build_with_log(config, Some(log)).await?;
    let reloader = app.reloader();
    spawn_reload_on_sighup(path, reloader)?;
    app.run(terminate_signal()).await
}

fn fakedog_blocking(args: FakedogArgs) -> ExitCode {
    if args.token_ttl.is_zero() {
        eprintln!("error: --token-ttl must be more than zero");
        return ExitCode::FAILURE;
    }
    let options = Options {
        listen: args.listen,
        control: args.control,
        ca_out: Some(args.ca_out),
        auto_consent: args.auto_consent,
        counting: args.counting,
        token_ttl: args.token_ttl,
        ..Options::default()
    }
    .with_cli_specs(&args.clients, &args.orgs);
    let options = match options {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    telemetry::init_logging(&LogConfig {
        level: args.log_level,
        format: LogFormat::Text,
    });
    let served = block_on(ExitCode::FAILURE, async {
        let fakedog = match FakeDog::start(options).await {
            Ok(f) => f,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        // Listen for the signals before printing: whoever reads the banner
        // may signal at once.
        use tokio::signal::unix::{SignalKind, signal};
        let (mut term, mut int) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(t), Ok(i)) => (t, i),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("error: cannot listen for signals: {e}");
                return ExitCode::FAILURE;
            }
        };
        {
            use std::io::Write as _;
            // A closed stdout (a pipe whose reader left) must not stop fakedog.
            let _ = writeln!(std::io::stdout().lock(), "{}", fakedog.banner());
        }
        tokio::select! {
            _ = term.recv() => tracing::info!("sigterm received, stopping fakedog"),
            _ = int.recv() => tracing::info!("interrupt received, stopping fakedog"),
        }
        fakedog.shutdown().await;
        ExitCode::SUCCESS
    });
    served.unwrap_or_else(|code| code)
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
