//! The poller's view of Triton: a seam, so that tests drive the production poller with
//! scripted pages and a scripted clock instead of a copy of it.
//!
//! [`TritonClient`] is the real transport. The oracle tests (`tests/oracle_gauges.rs`) plug in
//! a simulated Triton whose pages come from request-level traces.

use std::future::Future;
use std::time::{Duration, Instant};

use super::client::{ScrapeError, TritonClient};
use super::model_config::ModelInfo;

/// The requests the poller makes to Triton.
pub trait Transport: Clone + Send + Sync + 'static {
    /// The metrics page, as text.
    fn metrics(&self) -> impl Future<Output = Result<String, ScrapeError>> + Send;
    /// `GET /v2/health/ready`: `Ok(true)` on 200.
    fn server_ready(&self) -> impl Future<Output = Result<bool, ScrapeError>> + Send;
    /// `GET /v2/models/<m>/ready`: `Ok(true)` on 200.
    fn model_ready(&self, model: &str) -> impl Future<Output = Result<bool, ScrapeError>> + Send;
    /// What the agent uses from `model`'s config (its ensemble steps among them).
    fn model_config(
        &self,
        model: &str,
    ) -> impl Future<Output = Result<ModelInfo, ScrapeError>> + Send;
    /// The body of `GET /v2/models/stats`. By default the extension is absent (404).
    fn model_stats(&self) -> impl Future<Output = Result<Vec<u8>, ScrapeError>> + Send {
        async { Err(ScrapeError::Status(404)) }
    }
}

impl Transport for TritonClient {
    fn metrics(&self) -> impl Future<Output = Result<String, ScrapeError>> + Send {
        TritonClient::metrics(self)
    }
    fn server_ready(&self) -> impl Future<Output = Result<bool, ScrapeError>> + Send {
        TritonClient::server_ready(self)
    }
    fn model_ready(&self, model: &str) -> impl Future<Output = Result<bool, ScrapeError>> + Send {
        TritonClient::model_ready(self, model)
    }
    fn model_config(
        &self,
        model: &str,
    ) -> impl Future<Output = Result<ModelInfo, ScrapeError>> + Send {
        TritonClient::model_config(self, model)
    }
    fn model_stats(&self) -> impl Future<Output = Result<Vec<u8>, ScrapeError>> + Send {
        TritonClient::model_stats(self)
    }
}

/// The agent's time axis: a monotonic duration since start. A seam for the same reason as
/// [`Transport`]: every timing rule is then testable without waiting.
pub trait Clock: Clone + Send + Sync + 'static {
    /// Now, on the agent's axis.
    fn now(&self) -> Duration;
}

/// The real clock: time since `origin`.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    /// Time zero of the axis (the drain controller uses the same origin).
    pub origin: Instant,
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}
