//! The `cardguard` command: parse arguments, run a subcommand, map errors to exit codes. What
//! runs is started by `cardguard::app::App`; this file only adds logging, the runtime and the
//! signals (SIGHUP reloads, SIGTERM and Ctrl-C shut down in order, a second one exits at once).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cardguard::app::App;
use cardguard::config::{Config, Overrides};
use cardguard::duration::PromDuration;
use cardguard::ingest::ConfigSource;
use cardguard::logging::LogFormat;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cardguard",
    version,
    about = "A cardinality-guarding Prometheus remote-write proxy"
)]
struct Cli {
    /// Log level: error, warn, info, debug (or a tracing filter such as `cardguard=debug`).
    #[arg(
        long = "log.level",
        global = true,
        default_value = "info",
        env = "CARDGUARD_LOG"
    )]
    log_level: String,
    /// Log line format: text (colored on a terminal only), logfmt or json.
    #[arg(
        long = "log.format",
        global = true,
        default_value = "text",
        env = "CARDGUARD_LOG_FORMAT",
        value_parser = PossibleValuesParser::new(LogFormat::NAMES)
            .map(|s| s.parse::<LogFormat>().expect("a possible value"))
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve(ServeArgs),
    /// Validate a config file; prints every problem and exits 1 if there is any.
    Check {
        /// The config file to check.
        file: PathBuf,
        /// A web config file (TLS, basic auth) to check too, with the files it names.
        #[arg(long = "web.config.file", value_name = "FILE")]
        web_config: Option<PathBuf>,
    },
    /// Run an embedded demo: cardguard, a traffic generator and an in-process upstream.
    Demo(cardguard::demo::DemoArgs),
    /// Check a change's metrics (what its tests expose) against the config's schema,
    /// budgets and routes. Exit 0 pass, 1 fail, 2 warn (review required), 3 could not check.
    Ci(cardguard::ci::CiArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// YAML config file; flags below override what it says.
    #[arg(long, visible_alias = "config.file")]
    config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:9201).
    #[arg(long, visible_alias = "web.listen-address")]
    listen: Option<SocketAddr>,
    /// Upstream remote-write URL, e.g. http://127.0.0.1:8428/api/v1/write.
    #[arg(long)]
    upstream: Option<String>,
    /// Remote-write version to send upstream: 1.0 or 2.0.
    #[arg(long)]
    upstream_version: Option<String>,
    /// Upstream request timeout, e.g. 30s.
    #[arg(long)]
    upstream_timeout: Option<PromDuration>,
    /// Quick start for the guard: every owner may have this many active series.
    #[arg(long)]
    max_series_per_service: Option<u64>,
    /// The label naming a series' owner (default `service`).
    #[arg(long)]
    owner_label: Option<String>,
    /// A Prometheus rule file of recording rules to evaluate (repeatable), besides the
    /// config's `rule_files:`.
    #[arg(long = "rules", value_name = "FILE")]
    rules: Vec<PathBuf>,
    /// Prometheus's web configuration file: TLS (tls_server_config), basic auth
    /// (basic_auth_users) and response headers on the listener; re-read when it changes.
    #[arg(long = "web.config.file", value_name = "FILE")]
    web_config: Option<PathBuf>,
    /// Answer POST /-/reload (without it: 403, as in Prometheus; SIGHUP always reloads).
    #[arg(long = "web.enable-lifecycle")]
    web_enable_lifecycle: bool,
    /// Directory where state survives restarts (snapshots); without it, state is in memory
    /// only. Overrides `storage.path`.
    #[arg(long = "storage.path", value_name = "DIR")]
    storage_path: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // clap exits 2 on a usage error, which `ci` uses for "warn": a typo in a CI
            // job must not read as "review required".
            return match e.exit_code() {
                0 => ExitCode::SUCCESS,
                _ if subcommand_is_ci() => ExitCode::from(cardguard::ci::EXIT_ERROR),
                code => ExitCode::from(code as u8),
            };
        }
    };
    cardguard::logging::init(
        &cli.log_level,
        cli.log_format,
        std::io::stderr().is_terminal(),
    );
    let result = match cli.command {
        Command::Ci(args) => return ci(&args),
        Command::Serve(args) => serve(args),
        Command::Check { file, web_config } => return check(&file, web_config.as_deref()),
        Command::Demo(args) => {
            runtime().and_then(|rt| Ok(rt.block_on(cardguard::demo::run(args))?))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cardguard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The first argument that is not a global `--log.*` option names the subcommand.
fn subcommand_is_ci() -> bool {
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--log.level" || a == "--log.format" {
            args.next();
        } else if !a.starts_with("--log.level=") && !a.starts_with("--log.format=") {
            return a == "ci";
        }
    }
    false
}

fn ci(args: &cardguard::ci::CiArgs) -> ExitCode {
    let report = runtime().and_then(|rt| Ok(rt.block_on(cardguard::ci::run(args))?));
    match report {
        Ok(r) => {
            print!("{}", cardguard::ci::output::render(&r, args.format));
            ExitCode::from(r.exit_code)
        }
        Err(e) => {
            eprintln!("cardguard ci: {e:#}");
            ExitCode::from(cardguard::ci::EXIT_ERROR)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn check(file: &std::path::Path, web: Option<&std::path::Path>) -> ExitCode {
    let web_ok = match web.map(cardguard::ingest::web::Loaded::load) {
        None => true,
        Some(Ok(_)) => {
            println!("{}: OK", web.unwrap_or(file).display());
            true
        }
        Some(Err(e)) => {
            println!("{e}");
            false
        }
    };
    let config = match Config::load(file) {
        Ok(c) => {
            let groups = &c.rules.groups;
            let rules: usize = groups.iter().map(|g| g.rules.len()).sum();
            if groups.is_empty() {
                println!("{}: OK", file.display());
            } else {
                println!(
                    "{}: OK ({} rule groups, {rules} recording rules)",
                    file.display(),
                    groups.len()
                );
            }
            true
        }
        Err(e) => {
            println!("{e}");
            false
        }
    };
    if config && web_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// How often idle threads' buffers and freed heap memory go back to the OS (see
/// [`return_idle_memory`]).
const RETURN_IDLE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Every `RETURN_IDLE_EVERY`, worker threads that served no request since the last round
/// let go of their scratch buffers (`pipeline::release_idle`), and then glibc's malloc hands
/// freed memory back to the OS.
///
/// glibc's malloc returns memory to the OS only from the top of a heap: what is freed below
/// stays resident until reused. The guard's admission tables free their old array at every
/// growth step and a smaller one whenever series expire, so those holes were 2–2.6 MB of RSS at
/// 1M admitted series (2–2.6 bytes a series, issue 16; `benches/README.md`). `malloc_trim` hands
/// their whole pages back (`MADV_DONTNEED`): a walk over the free lists under each arena's
/// lock, well under a millisecond at these heap sizes, and a page fault when a page is reused.
/// Other C libraries (musl) return freed memory themselves.
fn return_idle_memory() {
    let spawned = std::thread::Builder::new()
        .name("idle-memory".into())
        .spawn(|| loop {
            std::thread::sleep(RETURN_IDLE_EVERY);
            cardguard::pipeline::release_idle();
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: `malloc_trim` takes no pointers and only glibc's own arena locks; the
            // memory it returns is free, owned by no one.
            unsafe {
                libc::malloc_trim(0);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no thread to return idle memory to the OS");
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    return_idle_memory();
    let source = ConfigSource {
        file: args.config,
        overrides: Overrides {
            listen_address: args.listen,
            upstream_url: args.upstream,
            upstream_version: args.upstream_version,
            upstream_timeout: args.upstream_timeout.map(|d| d.0),
            max_series_per_service: args.max_series_per_service,
            owner_label: args.owner_label,
            rule_files: args.rules,
            storage_path: args.storage_path,
        },
        web: cardguard::ingest::web::WebSource {
            config_file: args.web_config,
            enable_lifecycle: args.web_enable_lifecycle,
        },
    };
    let config = source.load()?;
    let Some(routing) = config.routing.clone() else {
        anyhow::bail!(
            "no upstream: set upstream.url (or upstreams:) in the config file or pass --upstream URL"
        );
    };
    let rt = runtime()?;
    rt.block_on(async move {
        let up = if routing.single {
            routing.upstreams[0].url.to_string()
        } else {
            routing
                .upstreams
                .iter()
                .map(|u| format!("{}={}", u.name, u.url))
                .collect::<Vec<_>>()
                .join(",")
        };
        // Before anything is announced: a SIGTERM sent as soon as cardguard says it serves must
        // find the handler in place (else it kills the process without the orderly stop).
        let mut signals = ShutdownSignals::install()?;
        let mut app = App::start(config, source).await?;
        tracing::info!(listen = %app.local_addr(), upstream = %up, "cardguard serving");
        let served = reload_on_sighup_until_shutdown(&mut app, &mut signals).await;
        tokio::select! {
            () = app.shutdown() => {}
            name = signals.recv() => {
                tracing::warn!("{name} received during shutdown: exiting now");
                std::process::exit(1);
            }
        }
        tracing::info!("cardguard stopped");
        served
    })
}

/// Reload the config on SIGHUP until SIGTERM or Ctrl-C.
async fn reload_on_sighup_until_shutdown(
    app: &mut App,
    signals: &mut ShutdownSignals,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())
        .inspect_err(|_| tracing::warn!("cannot listen for SIGHUP; reload with POST /-/reload"))
        .ok();
    loop {
        tokio::select! {
            name = signals.recv() => {
                tracing::info!("{name} received: shutting down");
                return Ok(());
            }
            () = app.server_ended() => anyhow::bail!("the HTTP server stopped unexpectedly"),
            got = async {
                match &mut hup {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => match got {
                Some(()) => {
                    tracing::info!("SIGHUP: reloading configuration");
                    let _ = app.state().reload().await;
                }
                // The signal stream ended (only as the runtime stops): stop polling it.
                None => hup = None,
            }
        }
    }
}

/// SIGTERM and SIGINT, listened for from `install` on (each `recv` takes one).
struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(ShutdownSignals {
            term: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
        })
    }

    /// The name of the next signal.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
