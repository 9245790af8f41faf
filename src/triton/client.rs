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

use super::model_config::ModelInfo;
use super::text::ParseError;

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

/// What a [`TritonClient`] needs, assembled from the command line by `config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Triton's HTTP base URL (`--triton-url`), without a trailing slash.
    pub base_url: String,
    /// Triton's metrics page (`--triton-metrics-url`).
    pub metrics_url: String,
    /// Every request's bound, connecting included (`--scrape-timeout`).
    pub timeout: Duration,
    /// The largest body accepted, bytes (`--max-body`).
    pub max_body: u64,
    /// The access header for Triton's restricted HTTP APIs (`--triton-api-header`).
    pub api_header: Option<ApiHeader>,
}

impl TritonClient {
    /// A client with the configured timeout, body cap and access header. Proxies are ignored:
    /// Triton is on localhost, and an `HTTP_PROXY` inherited from the pod must not reroute the
    /// scrape.
    pub fn new(cfg: &ClientConfig) -> Result<Self, ClientBuildError> {
        let builder = || {
            reqwest::Client::builder()
                .no_proxy()
                .timeout(cfg.timeout)
                .connect_timeout(cfg.timeout)
        };
        let built = |r: reqwest::Result<reqwest::Client>| r.map_err(ClientBuildError);
        let http = built(builder().pool_max_idle_per_host(4).build())?;
        // Triton's HTTP port: one connection per request (see `health`), and the access header
        // on every call. Its value is marked sensitive, so HTTP debug logs leave it out.
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::CONNECTION,
            reqwest::header::HeaderValue::from_static("close"),
        );
        if let Some(header) = &cfg.api_header {
            let mut value = header.value.clone();
            value.set_sensitive(true);
            headers.insert(header.name.clone(), value);
        }
        let health = built(
            builder()
                .pool_max_idle_per_host(0)
                .default_headers(headers)
                .build(),
        )?;
        Ok(TritonClient {
            http,
            health,
            base: cfg.base_url.trim_end_matches('/').to_string(),
            metrics_url: cfg.metrics_url.clone(),
            max_body: cfg.max_body,
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

#[cfg(test)]
mod tests {
    use super::*;

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
