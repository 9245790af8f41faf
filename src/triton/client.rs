//! Fetching Triton's metrics page and health API, with a timeout and a body cap.
//!
//! GET {metrics_url}                 the Prometheus page
//! GET {triton_url}/v2/health/ready  server readiness
//! GET {triton_url}/v2/models/M/ready  model readiness
//! GET {triton_url}/v2/models/M/config model config (ensemble steps, instances, batch size,
//!                                   GPUs), fetched once per model load
//! GET {triton_url}/v2/models/stats    execution statistics, every --stats-interval
//!
//! Every request to Triton's HTTP port carries `--triton-api-header` when it is set; the
//! metrics port has no restricted APIs and gets none.

use std::time::Duration;

use crate::config::Config;
use crate::triton::text::ParseError;

/// The HTTP client could not be built (no TLS backend, an unreadable system configuration).
#[derive(Debug, thiserror::Error)]
#[error("building the HTTP client failed: {0}")]
pub struct ClientBuildError(#[source] pub reqwest::Error);

/// Why a request to Triton failed. `reason()` is the `reason` label of
/// `triton_sidecar_scrape_errors_total`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScrapeError {
    /// Nothing listens: Triton is not running (or gone). The drain treats three in a row as
    /// "Triton gone".
    #[error("connection refused")]
    Refused,
    /// No complete answer within `--scrape-timeout`. Never taken for "gone": a busy Triton on
    /// a loaded node answers late.
    #[error("timed out")]
    Timeout,
    /// Another connection-level failure (reset, DNS, ...).
    #[error("connection failed: {0}")]
    Connect(String),
    /// Triton answered with a non-2xx status.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The page is larger than `--max-body`.
    #[error("body larger than --max-body ({limit} bytes)")]
    TooLarge {
        /// The configured cap.
        limit: u64,
    },
    /// The body could not be read to the end (truncated, reset mid-body).
    #[error("reading the body failed: {0}")]
    Body(String),
    /// The body is not UTF-8 (binary garbage).
    #[error("body is not UTF-8")]
    NotUtf8,
    /// The body is not a valid Prometheus text page.
    #[error("bad metrics page: {0}")]
    Parse(#[from] ParseError),
}

impl ScrapeError {
    /// The `reason` label value.
    pub fn reason(&self) -> Reason {
        match self {
            ScrapeError::Refused => Reason::Refused,
            ScrapeError::Timeout => Reason::Timeout,
            ScrapeError::Connect(_) => Reason::Connect,
            ScrapeError::Status(_) => Reason::HttpStatus,
            ScrapeError::TooLarge { .. } => Reason::TooLarge,
            ScrapeError::Body(_) => Reason::Body,
            ScrapeError::NotUtf8 | ScrapeError::Parse(_) => Reason::Parse,
        }
    }
}

/// The `reason` label of `triton_sidecar_scrape_errors_total`: one per kind of
/// [`ScrapeError`]. The label strings live only in [`Reason::as_str`], so the metric and the
/// log cannot drift apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// [`ScrapeError::Refused`].
    Refused,
    /// [`ScrapeError::Timeout`].
    Timeout,
    /// [`ScrapeError::Connect`].
    Connect,
    /// [`ScrapeError::Status`].
    HttpStatus,
    /// [`ScrapeError::TooLarge`].
    TooLarge,
    /// [`ScrapeError::Body`].
    Body,
    /// [`ScrapeError::NotUtf8`] and [`ScrapeError::Parse`].
    Parse,
}

impl Reason {
    /// Every reason, so the counter family exists at 0 from start-up.
    pub const ALL: [Reason; 7] = [
        Reason::Refused,
        Reason::Timeout,
        Reason::Connect,
        Reason::HttpStatus,
        Reason::TooLarge,
        Reason::Body,
        Reason::Parse,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Refused => "refused",
            Reason::Timeout => "timeout",
            Reason::Connect => "connect",
            Reason::HttpStatus => "http_status",
            Reason::TooLarge => "too_large",
            Reason::Body => "body",
            Reason::Parse => "parse",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn classify(e: &reqwest::Error) -> ScrapeError {
    if e.is_timeout() {
        return ScrapeError::Timeout;
    }
    // Walk the source chain for the io::Error kind: reqwest does not expose "refused" itself.
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return ScrapeError::Refused;
            }
            if io.kind() == std::io::ErrorKind::TimedOut {
                return ScrapeError::Timeout;
            }
        }
        src = s.source();
    }
    if e.is_connect() {
        ScrapeError::Connect(e.to_string())
    } else if e.is_body() || e.is_decode() {
        ScrapeError::Body(e.to_string())
    } else {
        ScrapeError::Connect(e.to_string())
    }
}

/// An HTTP client bound to one Triton.
#[derive(Debug, Clone)]
pub struct TritonClient {
    /// For the metrics page (Triton's metrics port): connections are reused.
    http: reqwest::Client,
    /// For health, readiness and config on Triton's HTTP port: one connection per request,
    /// closed by `Connection: close`. Triton's SIGTERM handling waits until no HTTP connection
    /// is open; a pooled idle connection from this agent kept it waiting its whole
    /// `--exit-timeout-secs` and exiting 1 (measured in the end-to-end harness).
    health: reqwest::Client,
    base: String,
    metrics_url: String,
    max_body: u64,
}

impl TritonClient {
    /// A client with the configured timeout and body cap. Proxies are ignored: Triton is on
    /// localhost, and an `HTTP_PROXY` inherited from the pod must not reroute the scrape.
    pub fn new(cfg: &Config) -> Result<Self, ClientBuildError> {
        let mut c = Self::with(
            &cfg.triton_url,
            &cfg.triton_metrics_url,
            cfg.scrape_timeout,
            cfg.max_body,
        )?;
        if let Some(h) = &cfg.triton_api_header {
            c = c.with_api_header(h, cfg.scrape_timeout)?;
        }
        Ok(c)
    }

    /// The same client, sending `header` on every call to Triton's HTTP API. The value is
    /// marked sensitive, so HTTP debug logs leave it out.
    pub fn with_api_header(
        mut self,
        header: &ApiHeader,
        timeout: Duration,
    ) -> Result<Self, ClientBuildError> {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::CONNECTION,
            reqwest::header::HeaderValue::from_static("close"),
        );
        let mut value = header.value.clone();
        value.set_sensitive(true);
        headers.insert(header.name.clone(), value);
        self.health = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_max_idle_per_host(0)
            .default_headers(headers)
            .build()
            .map_err(ClientBuildError)?;
        Ok(self)
    }

    /// A client from explicit parts.
    pub fn with(
        base: &str,
        metrics_url: &str,
        timeout: Duration,
        max_body: u64,
    ) -> Result<Self, ClientBuildError> {
        // Proxies are ignored and every request is bounded by the scrape timeout.
        let builder = || {
            reqwest::Client::builder()
                .no_proxy()
                .timeout(timeout)
                .connect_timeout(timeout)
        };
        let built = |r: reqwest::Result<reqwest::Client>| r.map_err(ClientBuildError);
        let http = built(builder().pool_max_idle_per_host(4).build())?;
        let mut close = reqwest::header::HeaderMap::new();
        close.insert(
            reqwest::header::CONNECTION,
            reqwest::header::HeaderValue::from_static("close"),
        );
        let health = built(
            builder()
                .pool_max_idle_per_host(0)
                .default_headers(close)
                .build(),
        )?;
        Ok(TritonClient {
            http,
            health,
            base: base.trim_end_matches('/').to_string(),
            metrics_url: metrics_url.to_string(),
            max_body,
        })
    }

    /// The metrics page, as text. Refused above `max_body` without reading it all.
    pub async fn metrics(&self) -> Result<String, ScrapeError> {
        let buf = self.body_of(&self.http, &self.metrics_url).await?;
        String::from_utf8(buf).map_err(|_| ScrapeError::NotUtf8)
    }

    /// `GET url` through `client`: the body of a 2xx answer, up to `max_body` bytes.
    async fn body_of(
        &self,
        client: &reqwest::Client,
        url: impl reqwest::IntoUrl,
    ) -> Result<Vec<u8>, ScrapeError> {
        let resp = client.get(url).send().await.map_err(|e| classify(&e))?;
        if !resp.status().is_success() {
            return Err(ScrapeError::Status(resp.status().as_u16()));
        }
        read_limited(resp, self.max_body).await
    }

    /// `{base}/v2/models/<model>/<leaf>`, with the model name percent-encoded: names come from
    /// Triton's page and flags, and must not be able to change the path.
    fn model_url(&self, model: &str, leaf: &str) -> Result<reqwest::Url, ScrapeError> {
        let mut url =
            reqwest::Url::parse(&self.base).map_err(|e| ScrapeError::Connect(e.to_string()))?;
        url.path_segments_mut()
            .map_err(|_| ScrapeError::Connect(format!("{} cannot carry a path", self.base)))?
            .pop_if_empty()
            .extend(["v2", "models", model, leaf]);
        Ok(url)
    }

    async fn status_of(&self, url: impl reqwest::IntoUrl) -> Result<u16, ScrapeError> {
        let resp = self
            .health
            .get(url)
            .send()
            .await
            .map_err(|e| classify(&e))?;
        Ok(resp.status().as_u16())
    }

    /// `GET /v2/health/ready`: `Ok(true)` on 200.
    pub async fn server_ready(&self) -> Result<bool, ScrapeError> {
        Ok(self
            .status_of(format!("{}/v2/health/ready", self.base))
            .await?
            == 200)
    }

    /// `GET /v2/models/<m>/ready`: `Ok(true)` on 200.
    pub async fn model_ready(&self, model: &str) -> Result<bool, ScrapeError> {
        Ok(self.status_of(self.model_url(model, "ready")?).await? == 200)
    }

    /// The ensemble steps named by `/v2/models/<m>/config` (`ensemble_scheduling.step[].model_name`).
    pub async fn ensemble_steps(&self, model: &str) -> Result<Vec<String>, ScrapeError> {
        Ok(self.model_config(model).await?.steps)
    }

    /// What the agent uses from `/v2/models/<m>/config`, in one fetch.
    pub async fn model_config(&self, model: &str) -> Result<ModelInfo, ScrapeError> {
        let body = self
            .body_of(&self.health, self.model_url(model, "config")?)
            .await?;
        Ok(ModelInfo::from_config(&body))
    }

    /// The body of `GET /v2/models/stats` (every model, every version).
    pub async fn model_stats(&self) -> Result<Vec<u8>, ScrapeError> {
        self.body_of(&self.health, format!("{}/v2/models/stats", self.base))
            .await
    }
}

/// `--triton-api-header NAME=VALUE`: the header Triton's `--http-restricted-api` demands. Its
/// `Debug` leaves the value out: it is a secret, and `Config` is printed in debug logs.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiHeader {
    /// Header name.
    pub name: reqwest::header::HeaderName,
    /// Header value (the secret).
    pub value: reqwest::header::HeaderValue,
}

impl std::fmt::Debug for ApiHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiHeader({}=<redacted>)", self.name)
    }
}

/// What the agent uses from a model's config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelInfo {
    /// The model is an ensemble (its steps are models of their own).
    pub ensemble: bool,
    /// Step model names of an ensemble; empty otherwise.
    pub steps: Vec<String>,
    /// Instances that execute in parallel: `count` of every instance group, times its GPUs for
    /// a GPU group (Triton makes `count` instances on each listed GPU). `None` when the config
    /// names no instance group (the capacity estimate then has no instance count).
    pub instances: Option<u32>,
    /// `max_batch_size`; 0 when batching is off.
    pub max_batch_size: u32,
    /// The largest `dynamic_batching.preferred_batch_size`, when the config lists any.
    pub largest_preferred_batch: Option<u32>,
    /// GPU indices the model's instances run on; `None` when it has no GPU placement (CPU
    /// instances, or the config does not say): such a model counts on every GPU.
    pub gpus: Option<Vec<u32>>,
}

impl ModelInfo {
    /// The largest batch the config lets the dynamic batcher form under a deep queue: the
    /// largest preferred batch size when there is one (the batcher forms it in preference),
    /// else `max_batch_size`; 1 when batching is off. A shape limit, not evidence: the
    /// capacity estimate caps it at the largest batch seen.
    pub fn batch_limit(&self) -> u32 {
        let max = self.max_batch_size.max(1);
        self.largest_preferred_batch
            .filter(|p| *p > 0)
            .map_or(max, |p| p.min(max))
    }

    /// Parse a config body; an unreadable body yields the default (no steps, no instances).
    pub fn from_config(body: &[u8]) -> ModelInfo {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
            return ModelInfo::default();
        };
        let steps = steps_of(&v);
        let ensemble =
            !steps.is_empty() || v.get("platform").and_then(|p| p.as_str()) == Some("ensemble");
        let max_batch_size = v
            .get("max_batch_size")
            .and_then(|b| b.as_u64())
            .and_then(|b| u32::try_from(b).ok())
            .unwrap_or(0);
        let largest_preferred_batch = v
            .get("dynamic_batching")
            .and_then(|d| d.get("preferred_batch_size"))
            .and_then(|p| p.as_array())
            .and_then(|a| {
                a.iter()
                    .filter_map(|b| b.as_u64().and_then(|b| u32::try_from(b).ok()))
                    .max()
            });
        let groups = v.get("instance_group").and_then(|g| g.as_array());
        let mut instances: Option<u32> = None;
        let mut gpus: Vec<u32> = Vec::new();
        for g in groups.into_iter().flatten() {
            let count = g
                .get("count")
                .and_then(|c| c.as_u64())
                .and_then(|c| u32::try_from(c).ok())
                .unwrap_or(1);
            let on: Vec<u32> = g
                .get("gpus")
                .and_then(|x| x.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|i| i.as_u64().and_then(|i| u32::try_from(i).ok()))
                        .collect()
                })
                .unwrap_or_default();
            let gpu_kind = g.get("kind").and_then(|k| k.as_str()) == Some("KIND_GPU");
            let n = if gpu_kind && !on.is_empty() {
                gpus.extend(&on);
                count.saturating_mul(on.len() as u32)
            } else {
                count
            };
            instances = Some(instances.unwrap_or(0).saturating_add(n));
        }
        gpus.sort_unstable();
        gpus.dedup();
        ModelInfo {
            ensemble,
            steps,
            instances: instances.filter(|n| *n > 0),
            max_batch_size,
            largest_preferred_batch,
            gpus: (!gpus.is_empty()).then_some(gpus),
        }
    }
}

/// Read a body up to `limit` bytes; refused beyond it without reading the rest.
async fn read_limited(mut resp: reqwest::Response, limit: u64) -> Result<Vec<u8>, ScrapeError> {
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(ScrapeError::TooLarge { limit });
    }
    let mut buf: Vec<u8> =
        Vec::with_capacity(resp.content_length().unwrap_or(16 * 1024).min(limit) as usize);
    while let Some(chunk) = resp.chunk().await.map_err(|e| match classify(&e) {
        ScrapeError::Timeout => ScrapeError::Timeout,
        other => ScrapeError::Body(other.to_string()),
    })? {
        if buf.len() as u64 + chunk.len() as u64 > limit {
            return Err(ScrapeError::TooLarge { limit });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// Step model names of an ensemble config; empty for any other model or an unreadable body.
pub fn ensemble_steps_from_config(body: &[u8]) -> Vec<String> {
    ModelInfo::from_config(body).steps
}

fn steps_of(v: &serde_json::Value) -> Vec<String> {
    v.get("ensemble_scheduling")
        .and_then(|e| e.get("step"))
        .and_then(|s| s.as_array())
        .map(|steps| {
            steps
                .iter()
                .filter_map(|s| {
                    s.get("model_name")
                        .and_then(|n| n.as_str())
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_info_from_configs() {
        let real = include_bytes!("../../tests/fixtures/stats/lin_config.json");
        let i = ModelInfo::from_config(real);
        assert_eq!(
            i,
            ModelInfo {
                ensemble: false,
                steps: vec![],
                instances: Some(2),
                max_batch_size: 8,
                // The real config lists preferred_batch_size [8].
                largest_preferred_batch: Some(8),
                gpus: None
            }
        );
        assert_eq!(i.batch_limit(), 8);
        let preferred =
            br#"{"max_batch_size": 16, "dynamic_batching": {"preferred_batch_size": [4, 8]}}"#;
        let i = ModelInfo::from_config(preferred);
        assert_eq!(i.largest_preferred_batch, Some(8));
        assert_eq!(i.batch_limit(), 8);
        let off = br#"{"max_batch_size": 0}"#;
        assert_eq!(ModelInfo::from_config(off).batch_limit(), 1);
        let odd = br#"{"max_batch_size": 4, "dynamic_batching": {"preferred_batch_size": [32]}}"#;
        assert_eq!(ModelInfo::from_config(odd).batch_limit(), 4);
        let gpu = br#"{"max_batch_size": 4, "instance_group": [
            {"kind": "KIND_GPU", "count": 2, "gpus": [0, 1]},
            {"kind": "KIND_GPU", "count": 1, "gpus": [1]}]}"#;
        let i = ModelInfo::from_config(gpu);
        assert_eq!(i.instances, Some(5));
        assert_eq!(i.gpus, Some(vec![0, 1]));
        let ens =
            br#"{"platform": "ensemble", "ensemble_scheduling": {"step": [{"model_name": "a"}]}}"#;
        let i = ModelInfo::from_config(ens);
        assert!(i.ensemble);
        assert_eq!(i.steps, vec!["a"]);
        assert_eq!(i.instances, None);
        assert_eq!(
            ModelInfo::from_config(b"\xff garbage"),
            ModelInfo::default()
        );
    }

    #[test]
    fn the_api_header_value_is_never_printed() {
        let h = ApiHeader {
            name: reqwest::header::HeaderName::from_static("triton-access-token"),
            value: reqwest::header::HeaderValue::from_static("s3cret"),
        };
        let s = format!("{h:?}");
        assert!(
            s.contains("triton-access-token") && !s.contains("s3cret"),
            "{s}"
        );
    }

    #[test]
    fn every_reason_has_its_own_label() {
        let labels: std::collections::HashSet<&str> =
            Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), Reason::ALL.len());
    }
}
