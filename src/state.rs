//! The published view: what the poller last saw of Triton ([`PollState`]), its health, the
//! drain's phase, and the readiness rule that joins the two.
//!
//! A leaf: it imports only Triton's and the derivation's types. One owner writes each value
//! (the poller its [`PollState`], the drain controller its [`Phase`]), published whole through a
//! `watch` channel; every surface (`/metrics`, `/readyz`, the drain, `check`) reads it from here,
//! so none reaches into the module that produced it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::derive::activity::Activity;
use crate::derive::Derived;
use crate::triton::client::{Reason, ScrapeError};
use crate::triton::connections::ConnectionView;
use crate::triton::snapshot::TritonGpuSample;
use crate::triton::stats::StatsFailure;

/// The drain phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// In rotation.
    #[default]
    Serving,
    /// Out of rotation, waiting for Triton to be idle.
    Draining,
    /// Done; stays out of rotation.
    Drained,
}

impl Phase {
    /// The `state` value of `/drain/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Serving => "serving",
            Phase::Draining => "draining",
            Phase::Drained => "drained",
        }
    }
}

/// Triton's readiness as last seen.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Health {
    /// No poll has completed yet.
    #[default]
    Unknown,
    /// Server and every required model answered 200.
    Ready,
    /// Something answered, but not ready; the text says what.
    NotReady(String),
    /// The health endpoint could not be reached.
    Unreachable(String),
}

impl Health {
    /// Ready?
    pub fn is_ready(&self) -> bool {
        matches!(self, Health::Ready)
    }
}

/// What the poller publishes after every poll. Immutable once sent; swapped whole.
#[derive(Debug, Clone, Default)]
pub struct PollState {
    /// Poll count; 0 before the first poll completed.
    pub seq: u64,
    /// When this poll completed, on the agent's monotonic axis.
    pub at: Duration,
    /// The last metrics scrape succeeded.
    pub triton_up: bool,
    /// Readiness of the server and required models.
    pub health: Health,
    /// The derived gauges.
    pub derived: Derived,
    /// Seconds the last metrics scrape took.
    pub scrape_seconds: f64,
    /// Failed scrapes by reason, cumulative.
    pub scrape_errors: BTreeMap<Reason, u64>,
    /// The error of the last metrics scrape, if it failed.
    pub last_error: Option<ScrapeError>,
    /// The page's activity, when the last scrape succeeded.
    pub activity: Option<Activity>,
    /// A counter went down in this poll: a new Triton process.
    pub counter_reset: bool,
    /// Triton's `nv_gpu_*` series from the newest page; `None` until a page was read.
    pub triton_gpu: Option<Arc<Vec<TritonGpuSample>>>,
    /// When the newest good page was read, on the same axis as `at`; `None` before the first
    /// (and after time went backwards). `at - last_page_at` is the staleness an alert reads.
    pub last_page_at: Option<Duration>,
    /// Triton refused the statistics API (401/403) on the last read.
    pub statistics_refused: bool,
    /// When the last good read of `/v2/models/stats` was made, on the same axis as `at`;
    /// `None` before the first. The estimate is published while `at` minus this is at most
    /// `--stats-max-age`.
    pub statistics_read_at: Option<Duration>,
    /// Failed statistics reads by reason, cumulative.
    pub statistics_errors: BTreeMap<StatsFailure, u64>,
    /// The kernel's view of Triton's client connections, read on every poll while a drain is
    /// under way ([`crate::triton::connections`]); `None` otherwise or when the read failed.
    pub connections: Option<ConnectionView>,
    /// Failed reads of the connections (netlink refused or undecodable), cumulative.
    pub connection_scan_errors: u64,
    /// The longest execution Triton has shown since the agent started: the largest
    /// per-request compute time (`triton_compute_ms`) of any model over any window. A mean
    /// over each window, so a lower bound of the longest single execution.
    pub longest_execution: Duration,
}

/// Why readiness is what it is: `(ready, reason)`; the reason is `/readyz`'s body.
pub fn readiness(poll: &PollState, drain: Phase) -> (bool, String) {
    if drain != Phase::Serving {
        return (false, "draining".to_string());
    }
    match &poll.health {
        Health::Ready => (true, "ready".to_string()),
        Health::Unknown => (false, "waiting for the first poll of Triton".to_string()),
        Health::NotReady(why) => (false, why.clone()),
        Health::Unreachable(why) => (false, format!("triton unreachable: {why}")),
    }
}
