//! Typed, validated configuration.
//!
//! [`Args`] is what clap parses from flags and `TRITON_SIDECAR_<FLAG>` environment variables;
//! [`Config::from_args`] validates it into a [`Config`]. Tests build a `Config` directly (see
//! [`Config::for_tests`]) and never touch the process environment.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::drain::DrainConfig;
use crate::gpu::{GpuChoice, GpuConfig};
use crate::poller::PollerConfig;
use crate::triton::client::{ApiHeader, ClientConfig};

/// A configuration error. The message names the flag, so the user knows what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value for {flag}: {reason}")]
pub struct ConfigError {
    /// The flag, e.g. `--window`.
    pub flag: &'static str,
    /// What is wrong with the value.
    pub reason: String,
}

fn err(flag: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        flag,
        reason: reason.into(),
    }
}

/// A flag value that is not a duration or a size. clap prints it after the flag's name.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValueError {
    /// Not a duration.
    #[error("'{input}' is not a duration like 250ms, 1s or 2m ({reason})")]
    Duration {
        /// The value as given.
        input: String,
        /// What `humantime` found wrong with it.
        reason: humantime::DurationError,
    },
    /// No number where a size starts.
    #[error("'{0}' is not a size like 8MiB, 512KiB or 1048576")]
    Size(String),
    /// A size with a unit this parser does not know.
    #[error("unknown size unit '{unit}' in '{input}' (use B, KiB, MiB, GiB)")]
    SizeUnit {
        /// The unit as given.
        unit: String,
        /// The value as given.
        input: String,
    },
    /// A size beyond `u64` bytes.
    #[error("'{0}' is too large")]
    TooLarge(String),
}

/// Parse a duration such as `250ms`, `1s` or `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, ValueError> {
    humantime::parse_duration(s.trim()).map_err(|reason| ValueError::Duration {
        input: s.to_owned(),
        reason,
    })
}

/// Parse a size such as `8MiB`, `512KiB`, `1GiB`, `10MB` or a plain number of bytes.
pub fn parse_size(s: &str) -> Result<u64, ValueError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| ValueError::Size(s.to_owned()))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "Ki" => 1 << 10,
        "MiB" | "Mi" => 1 << 20,
        "GiB" | "Gi" => 1 << 30,
        "KB" | "kB" | "K" | "k" => 1_000,
        "MB" | "M" => 1_000_000,
        "GB" | "G" => 1_000_000_000,
        other => {
            return Err(ValueError::SizeUnit {
                unit: other.to_owned(),
                input: s.to_owned(),
            })
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| ValueError::TooLarge(s.to_owned()))
}

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "triton-sidecar",
    version,
    about = "Per-pod autoscaling gauges, GPU gauges and graceful drain for NVIDIA Triton"
)]
pub struct Cli {
    /// What to run; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Agent flags for the default `serve`.
    #[command(flatten)]
    pub args: Args,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent (the default).
    Serve(Args),
    /// Scrape Triton twice, one poll interval apart, and print the derived values.
    Check {
        /// Agent flags.
        #[command(flatten)]
        args: Args,
        /// Skip Triton: print only the GPU table (for `tests/gpu/check.sh`).
        #[arg(long)]
        no_triton: bool,
    },
    /// Ask a running agent to drain, and wait until it has (for `exec` preStop hooks).
    Drain {
        /// The agent's admin URL.
        #[arg(
            long,
            default_value = "http://127.0.0.1:8004",
            env = "TRITON_SIDECAR_ADMIN_URL"
        )]
        admin_url: String,
        /// Give up after this long (exit 1).
        #[arg(long, default_value = "120s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Copy this binary into DIR (an init container fills an emptyDir for the exec hook).
    Install {
        /// Target directory.
        dir: PathBuf,
    },
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Agent flags. Every flag also reads `TRITON_SIDECAR_<FLAG>`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Triton's HTTP endpoint, for health and model readiness.
    #[arg(
        long,
        env = "TRITON_SIDECAR_TRITON_URL",
        default_value = "http://127.0.0.1:8000"
    )]
    pub triton_url: String,
    /// Triton's metrics page.
    #[arg(
        long,
        env = "TRITON_SIDECAR_TRITON_METRICS_URL",
        default_value = "http://127.0.0.1:8002/metrics"
    )]
    pub triton_metrics_url: String,
    /// Where the derived gauges are served (`GET /metrics`).
    #[arg(
        long,
        env = "TRITON_SIDECAR_METRICS_ADDR",
        default_value = "0.0.0.0:8003"
    )]
    pub metrics_addr: String,
    /// Probes and drain endpoints.
    #[arg(
        long,
        env = "TRITON_SIDECAR_ADMIN_ADDR",
        default_value = "0.0.0.0:8004"
    )]
    pub admin_addr: String,
    /// How often Triton is polled.
    #[arg(long, env = "TRITON_SIDECAR_POLL_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// Sliding window for averages and rates.
    #[arg(long, env = "TRITON_SIDECAR_WINDOW", default_value = "10s", value_parser = parse_duration)]
    pub window: Duration,
    /// Readiness also requires this model to be ready (repeatable). Needed in explicit
    /// model-control mode, where /v2/health/ready answers 200 before any model is loaded.
    #[arg(
        long = "require-model",
        value_name = "NAME",
        env = "TRITON_SIDECAR_REQUIRE_MODEL",
        value_delimiter = ','
    )]
    pub require_model: Vec<String>,
    /// Timeout of each request to Triton; unchanged while a drain polls faster.
    #[arg(long, env = "TRITON_SIDECAR_SCRAPE_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub scrape_timeout: Duration,
    /// A larger metrics page is refused.
    #[arg(long, env = "TRITON_SIDECAR_MAX_BODY", default_value = "8MiB", value_parser = parse_size)]
    pub max_body: u64,
    /// Log format.
    #[arg(long, env = "TRITON_SIDECAR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Poll interval while draining.
    #[arg(long, env = "TRITON_SIDECAR_DRAIN_POLL_INTERVAL", default_value = "200ms", value_parser = parse_duration)]
    pub drain_poll_interval: Duration,
    /// A drain never completes earlier: covers readiness-probe lag plus endpoint propagation.
    #[arg(long, env = "TRITON_SIDECAR_MIN_DRAIN", default_value = "5s", value_parser = parse_duration)]
    pub min_drain: Duration,
    /// Triton must look idle for this long before the drain completes.
    #[arg(long, env = "TRITON_SIDECAR_DRAIN_QUIET", default_value = "2s", value_parser = parse_duration)]
    pub drain_quiet: Duration,
    /// The drain completes with result `timeout` after this long.
    #[arg(long, env = "TRITON_SIDECAR_DRAIN_TIMEOUT", default_value = "90s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Triton's gRPC port, whose connections the drain watches (with the port of
    /// --triton-url); 0 when Triton serves no gRPC.
    #[arg(long, env = "TRITON_SIDECAR_TRITON_GRPC_PORT", default_value_t = 8001)]
    pub triton_grpc_port: u16,
    /// Triton's own --exit-timeout-secs: how long Triton keeps in-flight work going after its
    /// SIGTERM. Work the agent cannot confirm is handed to it when it fits; 0 hands nothing
    /// (Triton r25.05+ cancels gRPC requests at shutdown).
    #[arg(long, env = "TRITON_SIDECAR_TRITON_EXIT_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub triton_exit_timeout: Duration,
    /// NVML library to load.
    #[arg(long, env = "TRITON_SIDECAR_NVML_LIB", value_name = "PATH")]
    pub nvml_lib: Option<PathBuf>,
    /// Turn GPU gauges off.
    #[arg(long, env = "TRITON_SIDECAR_NO_GPU")]
    pub no_gpu: bool,
    /// GPUs to report: `all`, or a comma-separated list of UUIDs. Default: the GPUs named by
    /// Triton's own nv_gpu_* series.
    #[arg(long, env = "TRITON_SIDECAR_GPU", value_name = "all|UUID,...")]
    pub gpu: Option<String>,
    /// How often NVML is read.
    #[arg(long, env = "TRITON_SIDECAR_GPU_POLL_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub gpu_poll_interval: Duration,
    /// Capacity of a model in requests per second per pod, as measured with perf_analyzer or
    /// Model Analyzer (repeatable). Overrides the online estimate.
    #[arg(
        long = "capacity",
        value_name = "MODEL=RPS",
        env = "TRITON_SIDECAR_CAPACITY",
        value_delimiter = ','
    )]
    pub capacity: Vec<String>,
    /// The header Triton's `--http-restricted-api` demands, sent on every call to Triton's HTTP
    /// API (never logged).
    #[arg(
        long,
        value_name = "NAME=VALUE",
        env = "TRITON_SIDECAR_TRITON_API_HEADER",
        hide_env_values = true,
        value_parser = |s: &str| Ok::<_, std::convert::Infallible>(SecretArg(s.to_string()))
    )]
    pub triton_api_header: Option<SecretArg>,
    /// How often Triton's execution statistics are read for the online capacity estimate.
    #[arg(long, env = "TRITON_SIDECAR_STATS_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub stats_interval: Duration,
    /// How long an online capacity estimate is published after the last good read of Triton's
    /// statistics; past it the estimate is absent (its source stopped answering). At least
    /// --stats-interval.
    #[arg(long, env = "TRITON_SIDECAR_STATS_MAX_AGE", default_value = "30s", value_parser = parse_duration)]
    pub stats_max_age: Duration,
    /// How far back the capacity estimate looks for a drift in execution cost. What it learned
    /// about each batch size is kept while the model stays loaded; this only bounds the
    /// evidence of a change.
    #[arg(long, env = "TRITON_SIDECAR_CAPACITY_HORIZON", default_value = "300s", value_parser = parse_duration)]
    pub capacity_horizon: Duration,
    /// A BLS model (repeatable): its utilization is published but not added into the pod's,
    /// since its children are models of their own and count there.
    #[arg(
        long = "bls-model",
        value_name = "MODEL",
        env = "TRITON_SIDECAR_BLS_MODELS",
        value_delimiter = ','
    )]
    pub bls_model: Vec<String>,
}

/// A flag value that is a secret: its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretArg(pub String);

impl std::fmt::Debug for SecretArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Validated agent configuration: each subsystem's own config, assembled here from the command
/// line (as linkerd2-proxy's `app/src/env.rs` does), so that no subsystem depends on clap.
#[derive(Debug, Clone)]
pub struct Config {
    /// Metrics listener address.
    pub metrics_addr: SocketAddr,
    /// Admin listener address.
    pub admin_addr: SocketAddr,
    /// Log format.
    pub log_format: LogFormat,
    /// The way to Triton: URLs, timeout, body cap, access header.
    pub client: ClientConfig,
    /// The poll loop and its workers.
    pub poller: PollerConfig,
    /// Drain timing.
    pub drain: DrainConfig,
    /// GPU reporting.
    pub gpu: GpuConfig,
}

/// The one rule for a model name in a flag (`--require-model`, `--capacity`, `--bls-model`):
/// not empty, nothing that would change the URL it is put in (`/`, `?`, `#`, a space), and no
/// `=`, so that every name can also be written as `--capacity MODEL=RPS`.
fn model_name_ok(m: &str) -> bool {
    !m.is_empty() && !m.contains(['/', '?', '#', ' ', '='])
}

/// Parse `--capacity` values: `MODEL=RPS`, RPS a finite number > 0, each model once.
pub fn parse_capacity(values: &[String]) -> Result<BTreeMap<String, f64>, ConfigError> {
    let mut out = BTreeMap::new();
    for v in values.iter().map(|v| v.trim()).filter(|v| !v.is_empty()) {
        let Some((m, r)) = v.rsplit_once('=') else {
            return Err(err(
                "--capacity",
                format!("'{v}' is not MODEL=RPS (e.g. resnet=120)"),
            ));
        };
        let m = m.trim();
        if !model_name_ok(m) {
            return Err(err(
                "--capacity",
                format!("'{m}' in '{v}' is not a model name"),
            ));
        }
        let rps: f64 = r.trim().parse().map_err(|_| {
            err(
                "--capacity",
                format!("'{r}' in '{v}' is not a number of requests per second"),
            )
        })?;
        if !rps.is_finite() || rps <= 0.0 {
            return Err(err(
                "--capacity",
                format!("'{v}': requests per second must be a finite number greater than 0"),
            ));
        }
        if out.insert(m.to_string(), rps).is_some() {
            return Err(err("--capacity", format!("model '{m}' is given twice")));
        }
    }
    Ok(out)
}

/// Parse `--triton-api-header NAME=VALUE`. The messages never quote the value: it is a secret.
pub fn parse_api_header(s: &str) -> Result<ApiHeader, ConfigError> {
    const FLAG: &str = "--triton-api-header";
    let Some((name, value)) = s.split_once('=') else {
        return Err(err(
            FLAG,
            "expected NAME=VALUE, e.g. triton-access-token=<token> (the value is not shown)",
        ));
    };
    let name = reqwest::header::HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
        err(
            FLAG,
            format!("'{}' is not an HTTP header name", name.trim()),
        )
    })?;
    if value.is_empty() {
        return Err(err(FLAG, format!("the value of header '{name}' is empty")));
    }
    let value = reqwest::header::HeaderValue::from_str(value).map_err(|_| {
        err(
            FLAG,
            format!(
                "the value of header '{name}' holds characters a header cannot carry (not shown)"
            ),
        )
    })?;
    Ok(ApiHeader { name, value })
}

/// The HTTP port of `--triton-url` (its scheme's default when none is written) and the gRPC
/// port, as the drain's connection view needs them.
fn connection_ports(
    triton_url: &str,
    grpc: u16,
) -> Result<Vec<(u16, crate::triton::connections::Protocol)>, ConfigError> {
    use crate::triton::connections::Protocol;
    let url = reqwest::Url::parse(triton_url.trim())
        .map_err(|e| err("--triton-url", format!("'{triton_url}': {e}")))?;
    let mut ports = Vec::new();
    if let Some(p) = url.port_or_known_default() {
        ports.push((p, Protocol::Http));
    }
    if grpc != 0 {
        if ports.iter().any(|(p, _)| *p == grpc) {
            return Err(err(
                "--triton-grpc-port",
                format!("{grpc} is also the port of --triton-url"),
            ));
        }
        ports.push((grpc, Protocol::Grpc));
    }
    Ok(ports)
}

fn check_url(flag: &'static str, s: &str) -> Result<String, ConfigError> {
    let url = reqwest::Url::parse(s).map_err(|e| err(flag, format!("'{s}' is not a URL ({e})")))?;
    if url.scheme() != "http" {
        return Err(err(
            flag,
            format!("'{s}': only http:// is supported (Triton is on localhost)"),
        ));
    }
    Ok(s.trim_end_matches('/').to_string())
}

fn check_addr(flag: &'static str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse()
        .map_err(|_| err(flag, format!("'{s}' is not an address like 0.0.0.0:8003")))
}

/// The longest duration any flag takes. Far above every sensible value, and far below what
/// would overflow time arithmetic.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

fn bounded(flag: &'static str, d: Duration) -> Result<Duration, ConfigError> {
    if d > MAX_DURATION {
        Err(err(
            flag,
            format!(
                "{} is longer than the maximum of 24h",
                humantime::format_duration(d)
            ),
        ))
    } else {
        Ok(d)
    }
}

fn nonzero(flag: &'static str, d: Duration) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        Err(err(flag, "must be greater than 0"))
    } else {
        bounded(flag, d)
    }
}

/// The GPU choice from `--no-gpu` and `--gpu`. `--no-gpu` wins, so that a deployment can turn
/// gauges off without removing `--gpu`. The error names `--gpu`.
pub fn gpu_choice(no_gpu: bool, gpu: Option<&str>) -> Result<GpuChoice, ConfigError> {
    if no_gpu {
        return Ok(GpuChoice::Off);
    }
    let list = match gpu.map(str::trim) {
        // An empty value stays "not set" (an env var set to "" in a manifest).
        None | Some("") => return Ok(GpuChoice::FromTriton),
        Some("all") => return Ok(GpuChoice::All),
        Some("none") => return Ok(GpuChoice::Off),
        Some(list) => list,
    };
    let uuids: Vec<String> = list.split(',').map(|u| u.trim().to_string()).collect();
    // `,` once meant "no GPUs", and `GPU-a,,GPU-b` dropped a GPU silently (an unset
    // template variable, say): refuse both. `--no-gpu` turns gauges off.
    if uuids.iter().any(String::is_empty) {
        return Err(err(
            "--gpu",
            format!(
                "'{list}' holds an empty UUID; expected 'all' or UUIDs like \
                 GPU-xxxxxxxx separated by commas (--no-gpu turns GPU gauges off)"
            ),
        ));
    }
    if uuids
        .iter()
        .any(|u| !u.starts_with("GPU-") && !u.starts_with("MIG-"))
    {
        return Err(err(
            "--gpu",
            format!("'{list}': expected 'all' or UUIDs like GPU-xxxxxxxx"),
        ));
    }
    Ok(GpuChoice::Uuids(uuids))
}

impl Config {
    /// Validate parsed flags.
    pub fn from_args(a: &Args) -> Result<Config, ConfigError> {
        let poll_interval = nonzero("--poll-interval", a.poll_interval)?;
        let window = nonzero("--window", a.window)?;
        if window < poll_interval {
            return Err(err(
                "--window",
                format!(
                    "{} is shorter than --poll-interval ({})",
                    humantime::format_duration(window),
                    humantime::format_duration(poll_interval)
                ),
            ));
        }
        if a.max_body == 0 {
            return Err(err("--max-body", "must be greater than 0"));
        }
        let require_models: Vec<String> = a
            .require_model
            .iter()
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty())
            .collect();
        for m in &require_models {
            if !model_name_ok(m) {
                return Err(err("--require-model", format!("'{m}' is not a model name")));
            }
        }
        let drain = DrainConfig {
            min_drain: bounded("--min-drain", a.min_drain)?,
            quiet: bounded("--drain-quiet", a.drain_quiet)?,
            timeout: nonzero("--drain-timeout", a.drain_timeout)?,
            triton_exit_timeout: a.triton_exit_timeout,
        };
        if drain.timeout < drain.min_drain {
            return Err(err("--drain-timeout", "is shorter than --min-drain"));
        }
        // Quiet time counts from a poll after the drain started, so a quiet period as long as
        // the timeout can never be reached: every drain would end in `timeout`.
        if drain.quiet >= drain.timeout {
            return Err(err(
                "--drain-quiet",
                format!(
                    "{} is not shorter than --drain-timeout ({}): every drain would time out",
                    humantime::format_duration(drain.quiet),
                    humantime::format_duration(drain.timeout)
                ),
            ));
        }
        let mut bls_models = BTreeSet::new();
        for m in a
            .bls_model
            .iter()
            .map(|m| m.trim())
            .filter(|m| !m.is_empty())
        {
            if !model_name_ok(m) {
                return Err(err("--bls-model", format!("'{m}' is not a model name")));
            }
            bls_models.insert(m.to_string());
        }
        let triton_api_header = match &a.triton_api_header {
            Some(SecretArg(s)) if !s.trim().is_empty() => Some(parse_api_header(s)?),
            _ => None,
        };
        let choice = gpu_choice(a.no_gpu, a.gpu.as_deref())?;
        let stats_interval = nonzero("--stats-interval", a.stats_interval)?;
        let stats_max_age = nonzero("--stats-max-age", a.stats_max_age)?;
        if stats_max_age < stats_interval {
            return Err(err(
                "--stats-max-age",
                "must be at least --stats-interval: an estimate would lapse between two reads",
            ));
        }
        let triton_url = check_url("--triton-url", &a.triton_url)?;
        let client = ClientConfig {
            base_url: triton_url.clone(),
            metrics_url: check_url("--triton-metrics-url", &a.triton_metrics_url)?,
            timeout: nonzero("--scrape-timeout", a.scrape_timeout)?,
            max_body: a.max_body,
            api_header: triton_api_header,
        };
        let poller = PollerConfig {
            triton_metrics_url: client.metrics_url.clone(),
            poll_interval,
            drain_poll_interval: nonzero("--drain-poll-interval", a.drain_poll_interval)?,
            window,
            require_models,
            capacity: parse_capacity(&a.capacity)?,
            stats_interval,
            stats_max_age,
            capacity_horizon: nonzero("--capacity-horizon", a.capacity_horizon)?,
            bls_models,
            connection_ports: connection_ports(&triton_url, a.triton_grpc_port)?,
        };
        Ok(Config {
            metrics_addr: check_addr("--metrics-addr", &a.metrics_addr)?,
            admin_addr: check_addr("--admin-addr", &a.admin_addr)?,
            log_format: a.log_format,
            client,
            poller,
            drain,
            gpu: GpuConfig {
                choice,
                nvml_lib: a.nvml_lib.clone(),
                poll_interval: nonzero("--gpu-poll-interval", a.gpu_poll_interval)?,
            },
        })
    }

    /// Defaults, with both listeners on `127.0.0.1:0` and GPU gauges off: the base for tests
    /// (the `testing` feature, which the integration tests turn on).
    #[cfg(any(test, feature = "testing"))]
    #[allow(clippy::expect_used)] // a test seam: the defaults are checked by the tests below
    pub fn for_tests(triton: &str) -> Config {
        let mut c = Config::from_args(&default_args()).expect("defaults are valid");
        c.client.base_url = triton.trim_end_matches('/').to_string();
        c.client.metrics_url = format!("{}/metrics", c.client.base_url);
        c.poller.triton_metrics_url = c.client.metrics_url.clone();
        c.poller.connection_ports = connection_ports(&c.client.base_url, 0).unwrap_or_default();
        c.metrics_addr = ([127, 0, 0, 1], 0).into();
        c.admin_addr = ([127, 0, 0, 1], 0).into();
        c.gpu.choice = GpuChoice::Off;
        c
    }
}

/// The flags' defaults, as clap would produce them with no flag and no environment variable.
pub fn default_args() -> Args {
    #[derive(Parser)]
    struct Only {
        #[command(flatten)]
        args: Args,
    }
    // Parsing an empty command line cannot fail: every flag has a default. Use
    // `try_parse_from` anyway and fall back to a panic message that says why.
    match Only::try_parse_from(["triton-sidecar"]) {
        Ok(o) => o.args,
        Err(e) => panic!("built-in defaults failed to parse: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> Result<Config, String> {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            args: Args,
        }
        let mut full = vec!["triton-sidecar"];
        full.extend_from_slice(argv);
        let o = Only::try_parse_from(full).map_err(|e| e.to_string())?;
        Config::from_args(&o.args).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.client.base_url, "http://127.0.0.1:8000");
        assert_eq!(c.client.metrics_url, "http://127.0.0.1:8002/metrics");
        assert_eq!(c.metrics_addr.to_string(), "0.0.0.0:8003");
        assert_eq!(c.admin_addr.to_string(), "0.0.0.0:8004");
        assert_eq!(c.poller.poll_interval, Duration::from_secs(1));
        assert_eq!(c.poller.window, Duration::from_secs(10));
        assert_eq!(c.client.timeout, Duration::from_secs(1));
        assert_eq!(c.client.max_body, 8 << 20);
        assert_eq!(c.poller.drain_poll_interval, Duration::from_millis(200));
        assert_eq!(c.drain.min_drain, Duration::from_secs(5));
        assert_eq!(c.drain.quiet, Duration::from_secs(2));
        assert_eq!(c.drain.timeout, Duration::from_secs(90));
        assert_eq!(c.gpu.choice, GpuChoice::FromTriton);
    }

    #[test]
    fn values() {
        let c = parse(&[
            "--poll-interval",
            "250ms",
            "--window",
            "2m",
            "--max-body",
            "512KiB",
            "--require-model",
            "a",
            "--require-model",
            "b",
            "--gpu",
            "GPU-1,GPU-2",
        ])
        .unwrap();
        assert_eq!(c.poller.poll_interval, Duration::from_millis(250));
        assert_eq!(c.poller.window, Duration::from_secs(120));
        assert_eq!(c.client.max_body, 512 * 1024);
        assert_eq!(c.poller.require_models, vec!["a", "b"]);
        assert_eq!(
            c.gpu.choice,
            GpuChoice::Uuids(vec!["GPU-1".into(), "GPU-2".into()])
        );
        assert_eq!(parse(&["--no-gpu"]).unwrap().gpu.choice, GpuChoice::Off);
        assert_eq!(parse(&["--gpu", "all"]).unwrap().gpu.choice, GpuChoice::All);
    }

    #[test]
    fn errors_name_the_flag() {
        // (argv, flag expected in the message)
        let table: &[(&[&str], &str)] = &[
            (&["--poll-interval", "fast"], "--poll-interval"),
            (&["--poll-interval", "0s"], "--poll-interval"),
            (&["--window", "500ms"], "--window"),
            (&["--max-body", "8 parsecs"], "--max-body"),
            (&["--max-body", "0"], "--max-body"),
            (&["--triton-url", "not a url"], "--triton-url"),
            (
                &["--triton-metrics-url", "https://x/metrics"],
                "--triton-metrics-url",
            ),
            (&["--metrics-addr", "8003"], "--metrics-addr"),
            (&["--admin-addr", "localhost"], "--admin-addr"),
            (&["--gpu", "0,1"], "--gpu"),
            (&["--drain-timeout", "1s"], "--drain-timeout"),
            (&["--log-format", "xml"], "--log-format"),
            (&["--window", "18446744073709551615s"], "--window"),
            (&["--drain-quiet", "25h"], "--drain-quiet"),
        ];
        for (argv, flag) in table {
            let e = parse(argv).expect_err(&format!("{argv:?} should fail"));
            assert!(e.contains(flag), "{argv:?}: {e}");
        }
    }

    #[test]
    fn gpu_list_without_a_uuid_is_refused() {
        for list in [",", " , ", ",,", "GPU-a,,GPU-b", "GPU-a,"] {
            let e = parse(&["--gpu", list]).expect_err(list);
            assert!(e.contains("--gpu"), "{list:?}: {e}");
            assert!(e.contains("empty"), "{list:?}: {e}");
        }
        // An empty value stays "not set" (an env var set to "" in a manifest).
        assert_eq!(
            parse(&["--gpu", ""]).unwrap().gpu.choice,
            GpuChoice::FromTriton
        );
    }

    #[test]
    fn drain_quiet_must_be_shorter_than_drain_timeout() {
        for (quiet, timeout) in [("90s", "90s"), ("2m", "90s")] {
            let e = parse(&["--drain-quiet", quiet, "--drain-timeout", timeout]).expect_err(quiet);
            assert!(
                e.contains("--drain-quiet") && e.contains("--drain-timeout"),
                "names both flags: {e}"
            );
            assert_eq!(e.lines().count(), 1, "{e}");
        }
        let c = parse(&["--drain-quiet", "89s", "--drain-timeout", "90s"]).unwrap();
        assert_eq!(c.drain.quiet, Duration::from_secs(89));
    }

    #[test]
    fn capacity_header_stats_and_bls_flags() {
        let c = parse(&[]).unwrap();
        assert!(c.poller.capacity.is_empty() && c.poller.bls_models.is_empty());
        assert_eq!(c.client.api_header, None);
        assert_eq!(c.poller.stats_interval, Duration::from_secs(10));
        let c = parse(&[
            "--capacity",
            "a=10",
            "--capacity",
            "b=20.5,c=1e3",
            "--triton-api-header",
            "triton-access-token=abc=def",
            "--stats-interval",
            "30s",
            "--bls-model",
            "x,y",
            "--bls-model",
            "z",
        ])
        .unwrap();
        assert_eq!(
            c.poller.capacity,
            BTreeMap::from([("a".into(), 10.0), ("b".into(), 20.5), ("c".into(), 1000.0)])
        );
        let h = c.client.api_header.unwrap();
        assert_eq!(h.name.as_str(), "triton-access-token");
        assert_eq!(h.value.to_str().unwrap(), "abc=def");
        assert_eq!(c.poller.stats_interval, Duration::from_secs(30));
        assert_eq!(c.poller.stats_max_age, Duration::from_secs(30));
        let c = parse(&["--stats-max-age", "2m", "--capacity-horizon", "20s"]).unwrap();
        assert_eq!(c.poller.stats_max_age, Duration::from_secs(120));
        assert_eq!(c.poller.capacity_horizon, Duration::from_secs(20));
        let c = parse(&[]).unwrap();
        assert_eq!(c.poller.capacity_horizon, Duration::from_secs(300));
        let c = parse(&[
            "--stats-interval",
            "30s",
            "--bls-model",
            "x,y",
            "--bls-model",
            "z",
        ])
        .unwrap();
        assert_eq!(
            c.poller.bls_models,
            BTreeSet::from(["x".into(), "y".into(), "z".into()])
        );
    }

    #[test]
    fn bad_capacity_header_stats_and_bls_values_are_refused() {
        let table: &[(&[&str], &str, &str)] = &[
            (&["--capacity", "a"], "--capacity", "MODEL=RPS"),
            (&["--capacity", "a=fast"], "--capacity", "not a number"),
            (&["--capacity", "a=0"], "--capacity", "greater than 0"),
            (&["--capacity", "a=-3"], "--capacity", "greater than 0"),
            (&["--capacity", "a=NaN"], "--capacity", "finite"),
            (&["--capacity", "a=inf"], "--capacity", "finite"),
            (&["--capacity", "=5"], "--capacity", "model name"),
            (&["--capacity", "a=1,a=2"], "--capacity", "twice"),
            (
                &["--triton-api-header", "token"],
                "--triton-api-header",
                "NAME=VALUE",
            ),
            (
                &["--triton-api-header", "bad name=v"],
                "--triton-api-header",
                "header name",
            ),
            (
                &["--triton-api-header", "x-token="],
                "--triton-api-header",
                "empty",
            ),
            (
                &["--triton-api-header", "x-token=a\u{7f}b"],
                "--triton-api-header",
                "cannot carry",
            ),
            (
                &["--stats-interval", "0s"],
                "--stats-interval",
                "greater than 0",
            ),
            (
                &["--stats-interval", "soon"],
                "--stats-interval",
                "duration",
            ),
            (&["--bls-model", "a/b"], "--bls-model", "model name"),
            // One name rule for every flag that takes one.
            (&["--require-model", "a/b"], "--require-model", "model name"),
            (&["--require-model", "a=b"], "--require-model", "model name"),
            (&["--bls-model", "a=b"], "--bls-model", "model name"),
            (
                &["--stats-interval", "20s", "--stats-max-age", "10s"],
                "--stats-max-age",
                "at least --stats-interval",
            ),
            (
                &["--stats-max-age", "0s"],
                "--stats-max-age",
                "greater than 0",
            ),
            (
                &["--capacity-horizon", "0s"],
                "--capacity-horizon",
                "greater than 0",
            ),
        ];
        for (argv, flag, why) in table {
            let e = parse(argv).expect_err(&format!("{argv:?} should fail"));
            assert!(e.contains(flag) && e.contains(why), "{argv:?}: {e}");
        }
        // The secret never appears in an error.
        let e = parse(&["--triton-api-header", "bad name=s3cret"]).unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
    }
}
