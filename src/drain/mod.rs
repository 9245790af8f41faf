//! Graceful drain: out of rotation first, then done as soon as Triton is truly idle.
//!
//! `machine` is the pure state machine; `controller` owns it and connects it to polls and to
//! the admin endpoints.

pub mod controller;
pub mod machine;

use std::time::Duration;

/// Drain timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainConfig {
    /// Lower bound of a drain.
    pub min_drain: Duration,
    /// Required idle time.
    pub quiet: Duration,
    /// Upper bound of a drain.
    pub timeout: Duration,
    /// Triton's `--exit-timeout-secs`: in-flight work it finishes after its SIGTERM.
    pub triton_exit_timeout: Duration,
}
