//! `cardguard ci`: the guard's rules at merge time. Reads what a service exposes (its test
//! run's `/metrics`), builds the series a scrape of `--instances` replicas would send, runs
//! them through the proxy's own stages (`stages`: relabeling, redaction and the schema, owner
//! lookup, per-metric and per-label limits) and reports, for what the change adds over
//! `--baseline`: unbounded labels (fail), budgets the change would pass (warn, with the
//! arithmetic, current use from `--live` when given) and the route each new series takes.
//!
//! `exposition` parses the text formats, `detect` spots identifier-like values, `input`
//! reads files, stdin, scrapes and `--live`, `verdict` turns the stages' decisions into
//! findings (`report`), `output` writes them as a table, JSON or GitHub annotations.

pub mod detect;
pub mod exposition;
pub mod input;
pub mod output;
pub mod report;
pub mod stages;
pub mod verdict;

use std::path::PathBuf;

pub use input::{Live, LiveService, Source};
pub use report::{Report, Severity};
pub use verdict::{check, expand, Options};

use crate::config::{Config, ConfigErrors};

/// Exit codes: 0 pass, 1 fail, 2 warn (review required), 3 the check could not run.
pub const EXIT_PASS: u8 = 0;
pub const EXIT_FAIL: u8 = 1;
pub const EXIT_WARN: u8 = 2;
pub const EXIT_ERROR: u8 = 3;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// A table for people.
    Table,
    /// One JSON document for bots.
    Json,
    /// GitHub Actions workflow commands (`::error`, `::warning`, `::notice`) and a summary.
    Github,
}

/// `cardguard ci`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct CiArgs {
    /// The cardguard config whose rules apply (relabel_configs, schema, guard, routes).
    #[arg(long, visible_alias = "config.file")]
    pub config: PathBuf,
    /// Expositions to check: Prometheus text or OpenMetrics files, `-` for stdin, or an
    /// http:// URL scraped once.
    #[arg(required = true, value_name = "EXPOSITION")]
    pub expositions: Vec<String>,
    /// Owner of series that carry none of the guard's owner labels (a service's own test
    /// run usually exposes no `service` label).
    #[arg(long)]
    pub owner: Option<String>,
    /// Replicas of the service: each series is sent once per replica (the scrape adds
    /// `instance`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub instances: u32,
    /// The main branch's exposition: only what the change adds is reported.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<String>,
    /// A running cardguard (its base URL): owners' current use from its /api/v1/cardinality.
    #[arg(long, value_name = "URL")]
    pub live: Option<String>,
    /// table, json or github.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

/// Why the check could not run (exit code 3).
#[derive(Debug, thiserror::Error)]
pub enum CiError {
    #[error("{0}")]
    Config(ConfigErrors),
    #[error("{source_name}: {reason}")]
    Read { source_name: String, reason: String },
    /// `file:line: message`, as compilers write it, so editors jump to it.
    #[error("{source_name}:{}: {}", error.line, error.message)]
    Parse {
        source_name: String,
        error: exposition::ParseError,
    },
    #[error("--live {url}: {reason}")]
    Live { url: String, reason: String },
}

/// Run the check: read everything, then report.
pub async fn run(args: &CiArgs) -> Result<Report, CiError> {
    let config = Config::load(&args.config).map_err(CiError::Config)?;
    let mut head = Vec::with_capacity(args.expositions.len());
    for name in &args.expositions {
        head.push(input::read(name).await?);
    }
    let baseline = match &args.baseline {
        Some(b) => Some(input::read(b).await?),
        None => None,
    };
    let live = match &args.live {
        Some(url) => Some(input::live(url).await?),
        None => None,
    };
    let opts = Options {
        owner: args.owner.clone(),
        instances: args.instances,
        now_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
    };
    Ok(check(
        &config,
        &head,
        baseline.as_ref(),
        live.as_ref(),
        &opts,
    ))
}
