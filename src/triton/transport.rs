//! The poller's view of Triton: a seam, so that tests drive the production poller with
//! scripted pages and a scripted clock instead of a copy of it.
//!
//! [`TritonClient`] is the real transport. The oracle tests (`tests/oracle_gauges.rs`) plug in
//! a simulated Triton whose pages come from request-level traces.

use std::future::Future;
use std::time::{Duration, Instant};

use super::client::{ScrapeError, TritonClient};

/// The requests the poller makes to Triton.
pub trait Transport: Clone + Send + Sync + 'static {
    /// The metrics page, as text.
    fn metrics(&self) -> impl Future<Output = Result<String, ScrapeError>> + Send;
    /// `GET /v2/health/ready`: `Ok(true)` on 200.
    fn server_ready(&self) -> impl Future<Output = Result<bool, ScrapeError>> + Send;
    /// `GET /v2/models/<m>/ready`: `Ok(true)` on 200.
    fn model_ready(&self, model: &str) -> impl Future<Output = Result<bool, ScrapeError>> + Send;
    /// The ensemble steps of `model` (empty for any other model).
    fn ensemble_steps(
        &self,
        model: &str,
    ) -> impl Future<Output = Result<Vec<String>, ScrapeError>> + Send;
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
    fn ensemble_steps(
        &self,
        model: &str,
    ) -> impl Future<Output = Result<Vec<String>, ScrapeError>> + Send {
        TritonClient::ensemble_steps(self, model)
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
