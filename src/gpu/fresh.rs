//! How old a GPU reading may be before it is no longer served. Pure: times come in as arguments.
//!
//! A frozen value is worse than none: an autoscaler acts on it, while an absent series is what an
//! alert (and KEDA's fallback) can see. One rule per source:
//! - **NVML**: a call that hangs (a wedged driver, a GPU falling off the bus) blocks the NVML
//!   thread, and its last report would stay up with frozen values. Once the newest report is
//!   older than [`nvml_stale_after`] (3 × `--gpu-poll-interval`, at least 1 s), NVML counts as
//!   down: `triton_sidecar_nvml_up` 0, and each GPU falls back to Triton's `nv_gpu_*` values where
//!   Triton's page carries them, else its series go. [`NvmlFreshness`] tracks it.
//! - **Triton's page**: its `nv_gpu_*` values are Triton-derived series like every other, so they
//!   follow the README's one rule for an unreachable Triton: they hold while the derivation holds
//!   the last page ([`crate::derive::Derived::present`], one `--window`), then go. The page's
//!   `gpu_uuid` set still says which GPUs are the pod's, so NVML readings of them stay.

use std::time::Duration;

use tokio::time::Instant;

use super::nvml::{NvmlFailure, NvmlReport};

/// No NVML bound is shorter than this: thread scheduling on a loaded node must not flap
/// `nvml_up` at a short `--gpu-poll-interval`.
pub const MIN_NVML_STALE_AFTER: Duration = Duration::from_secs(1);

/// The age after which the NVML thread's newest report is stale: 3 × `--gpu-poll-interval`, at
/// least [`MIN_NVML_STALE_AFTER`]. Three missed polls, not one slow call.
pub fn nvml_stale_after(gpu_poll_interval: Duration) -> Duration {
    gpu_poll_interval
        .saturating_mul(3)
        .max(MIN_NVML_STALE_AFTER)
}

/// Tracks when the NVML thread last produced a report. Owned by the GPU task.
#[derive(Debug, Clone)]
pub struct NvmlFreshness {
    /// [`nvml_stale_after`] of the configured interval.
    bound: Duration,
    /// When the NVML thread last sent a report (or when it was started, before its first one:
    /// an init that hangs is caught too).
    at: Instant,
    /// `polls` of the newest report seen; a new count is a new report.
    polls: u64,
}

impl NvmlFreshness {
    /// A tracker whose clock starts `now`, before the thread's first report.
    pub fn new(bound: Duration, now: Instant) -> Self {
        NvmlFreshness {
            bound,
            at: now,
            polls: 0,
        }
    }

    /// The thread's newest report, seen at `now`. The same report seen again is not an answer.
    pub fn report(&mut self, report: &NvmlReport, now: Instant) {
        if report.polls != self.polls {
            self.polls = report.polls;
            self.at = now;
        }
    }

    /// How old the newest report is.
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.at)
    }

    /// Whether the newest report may still be served.
    pub fn fresh(&self, now: Instant) -> bool {
        self.age(now) < self.bound
    }

    /// When a fresh report turns stale: when the GPU task must look again even if nothing new
    /// arrives. `None` when it is stale already.
    pub fn expires(&self, now: Instant) -> Option<Instant> {
        self.fresh(now).then(|| self.at + self.bound)
    }
}

/// What a stale NVML report is replaced with: down, no readings, and why.
pub fn stale_nvml_report(report: &NvmlReport, age: Duration) -> NvmlReport {
    NvmlReport {
        nvml_up: false,
        readings: Vec::new(),
        error: Some(NvmlFailure::Stale(age)),
        polls: report.polls,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    fn report(polls: u64) -> NvmlReport {
        NvmlReport {
            nvml_up: true,
            polls,
            ..Default::default()
        }
    }

    #[test]
    fn bound() {
        assert_eq!(nvml_stale_after(ms(1000)), ms(3000));
        assert_eq!(nvml_stale_after(ms(100)), ms(1000), "never under 1 s");
        assert_eq!(nvml_stale_after(ms(24 * 3_600_000)), ms(3 * 24 * 3_600_000));
    }

    #[test]
    fn goes_stale_without_new_reports_and_recovers_with_one() {
        let t0 = Instant::now();
        let mut f = NvmlFreshness::new(ms(3000), t0);
        // Before the first report: fresh until the bound (a hanging init is caught too).
        assert!(f.fresh(t0 + ms(2999)));
        assert!(!f.fresh(t0 + ms(3000)));
        f.report(&report(1), t0 + ms(1000));
        f.report(&report(2), t0 + ms(2000));
        assert!(f.fresh(t0 + ms(4999)));
        assert_eq!(f.expires(t0 + ms(4000)), Some(t0 + ms(5000)));
        // The same report again (a re-read of the channel) is not a new answer.
        f.report(&report(2), t0 + ms(4000));
        assert!(!f.fresh(t0 + ms(5000)));
        assert_eq!(f.expires(t0 + ms(5000)), None);
        assert_eq!(f.age(t0 + ms(5500)), ms(3500));
        f.report(&report(3), t0 + ms(9000));
        assert!(f.fresh(t0 + ms(9000)));
    }

    #[test]
    fn a_stale_report_is_down_with_a_reason() {
        let r = stale_nvml_report(&report(7), ms(3200));
        assert!(!r.nvml_up);
        assert!(r.readings.is_empty());
        assert_eq!(r.polls, 7);
        assert!(
            r.error
                .as_ref()
                .is_some_and(|e| e.to_string().contains("3.2s")),
            "{:?}",
            r.error
        );
    }
}
