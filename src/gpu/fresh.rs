//! How old a GPU reading may be before it is no longer served. Pure: times come in as arguments.
//!
//! Two sources, one rule each:
//! - **NVML**: a call that hangs (a wedged driver, a GPU falling off the bus) blocks the NVML
//!   thread, and its last report would stay up with frozen values. Once the newest report is
//!   older than [`nvml_stale_after`] (3 × `--gpu-poll-interval`, at least 1 s), NVML counts as
//!   down: `triton_sidecar_nvml_up` 0, and each GPU falls back to Triton's `nv_gpu_*` values where
//!   Triton's page carries them, else its series go. A frozen value is worse than none: an
//!   autoscaler would act on it, and an absent series is what an alert can see.
//! - **Triton's page**: while scrapes fail the poller keeps the last good page's `nv_gpu_*`
//!   samples. Once that page is older than [`triton_stale_after`] (3 × `--poll-interval` + 2 ×
//!   `--scrape-timeout`, 5 s at the defaults), its values are dropped; its `gpu_uuid` set still
//!   says which GPUs are the pod's, so NVML readings of them stay.
//!
//! The bounds tolerate one slow poll (a poll may take a `--scrape-timeout` for the page and one
//! for the health probes) but not three missed ones.

use std::time::Duration;

use tokio::time::Instant;

use super::nvml::NvmlReport;

/// No NVML bound is shorter than this: thread scheduling on a loaded node must not flap
/// `nvml_up` at a short `--gpu-poll-interval`.
pub const MIN_NVML_STALE_AFTER: Duration = Duration::from_secs(1);

/// The age after which the NVML thread's newest report is stale: 3 × `--gpu-poll-interval`, at
/// least [`MIN_NVML_STALE_AFTER`].
pub fn nvml_stale_after(gpu_poll_interval: Duration) -> Duration {
    gpu_poll_interval
        .saturating_mul(3)
        .max(MIN_NVML_STALE_AFTER)
}

/// The age after which Triton's last good page no longer supplies GPU values:
/// 3 × `--poll-interval` + 2 × `--scrape-timeout`.
pub fn triton_stale_after(poll_interval: Duration, scrape_timeout: Duration) -> Duration {
    poll_interval
        .saturating_mul(3)
        .saturating_add(scrape_timeout.saturating_mul(2))
}

/// Tracks when each source last produced something new. Owned by the GPU task.
#[derive(Debug, Clone)]
pub struct Freshness {
    /// [`nvml_stale_after`] of the configured interval.
    nvml_bound: Duration,
    /// [`triton_stale_after`] of the configured intervals.
    triton_bound: Duration,
    /// When the NVML thread last sent a report (or when it was started, before its first one:
    /// an init that hangs is caught too).
    nvml_at: Instant,
    /// `polls` of the newest NVML report seen; a new count is a new report.
    nvml_polls: u64,
    /// When a poll with a good page was last seen; `None` before the first.
    triton_at: Option<Instant>,
    /// `seq` of the newest poll seen.
    triton_seq: u64,
}

impl Freshness {
    /// A tracker whose NVML clock starts `now`, with no Triton page yet.
    pub fn new(nvml_bound: Duration, triton_bound: Duration, now: Instant) -> Self {
        Freshness {
            nvml_bound,
            triton_bound,
            nvml_at: now,
            nvml_polls: 0,
            triton_at: None,
            triton_seq: 0,
        }
    }

    /// The NVML thread's newest report, seen at `now`.
    pub fn nvml_report(&mut self, report: &NvmlReport, now: Instant) {
        if report.polls != self.nvml_polls {
            self.nvml_polls = report.polls;
            self.nvml_at = now;
        }
    }

    /// The poller's newest state (`seq`, and whether its scrape succeeded), seen at `now`.
    pub fn poll(&mut self, seq: u64, triton_up: bool, now: Instant) {
        if seq != self.triton_seq {
            self.triton_seq = seq;
            if triton_up {
                self.triton_at = Some(now);
            }
        }
    }

    /// How old the NVML thread's newest report is.
    pub fn nvml_age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.nvml_at)
    }

    /// Whether the NVML thread's newest report may still be served.
    pub fn nvml_fresh(&self, now: Instant) -> bool {
        self.nvml_age(now) < self.nvml_bound
    }

    /// Whether the values of Triton's last good page may still be served.
    pub fn triton_fresh(&self, now: Instant) -> bool {
        self.triton_at
            .is_some_and(|t| now.saturating_duration_since(t) < self.triton_bound)
    }

    /// The next moment a source that is fresh at `now` turns stale: when the GPU task must look
    /// again even if nothing new arrives. `None` when both are stale already.
    pub fn next_expiry(&self, now: Instant) -> Option<Instant> {
        let nvml = self.nvml_fresh(now).then(|| self.nvml_at + self.nvml_bound);
        let triton = match self.triton_at {
            Some(t) if self.triton_fresh(now) => Some(t + self.triton_bound),
            _ => None,
        };
        match (nvml, triton) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// What a stale NVML report is replaced with: down, no readings, and why.
pub fn stale_nvml_report(report: &NvmlReport, age: Duration) -> NvmlReport {
    NvmlReport {
        nvml_up: false,
        readings: Vec::new(),
        error: Some(format!(
            "no answer from NVML for {:.1}s (a call hangs?)",
            age.as_secs_f64()
        )),
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
    fn bounds() {
        assert_eq!(nvml_stale_after(ms(1000)), ms(3000));
        assert_eq!(nvml_stale_after(ms(100)), ms(1000), "never under 1 s");
        assert_eq!(triton_stale_after(ms(1000), ms(1000)), ms(5000));
        assert_eq!(triton_stale_after(ms(100), ms(300)), ms(900));
    }

    #[test]
    fn nvml_goes_stale_without_new_reports_and_recovers_with_one() {
        let t0 = Instant::now();
        let mut f = Freshness::new(ms(3000), ms(5000), t0);
        // Before the first report: fresh until the bound (a hanging init is caught too).
        assert!(f.nvml_fresh(t0 + ms(2999)));
        assert!(!f.nvml_fresh(t0 + ms(3000)));
        f.nvml_report(&report(1), t0 + ms(1000));
        f.nvml_report(&report(2), t0 + ms(2000));
        assert!(f.nvml_fresh(t0 + ms(4999)));
        // The same report again (a re-read of the channel) is not a new answer.
        f.nvml_report(&report(2), t0 + ms(4000));
        assert!(!f.nvml_fresh(t0 + ms(5000)));
        assert_eq!(f.nvml_age(t0 + ms(5500)), ms(3500));
        f.nvml_report(&report(3), t0 + ms(9000));
        assert!(f.nvml_fresh(t0 + ms(9000)));
    }

    #[test]
    fn triton_is_fresh_only_after_a_good_page_and_for_the_bound() {
        let t0 = Instant::now();
        let mut f = Freshness::new(ms(3000), ms(5000), t0);
        assert!(!f.triton_fresh(t0), "no page yet");
        f.poll(1, false, t0 + ms(100));
        assert!(!f.triton_fresh(t0 + ms(100)));
        f.poll(2, true, t0 + ms(1000));
        assert!(f.triton_fresh(t0 + ms(1000)));
        // Failed polls do not refresh it.
        f.poll(3, false, t0 + ms(2000));
        f.poll(4, false, t0 + ms(5000));
        assert!(f.triton_fresh(t0 + ms(5999)));
        assert!(!f.triton_fresh(t0 + ms(6000)));
        // Seeing the same good poll again later does not refresh it either.
        f.poll(4, true, t0 + ms(7000));
        assert!(!f.triton_fresh(t0 + ms(7000)));
        f.poll(5, true, t0 + ms(8000));
        assert!(f.triton_fresh(t0 + ms(8000)));
    }

    #[test]
    fn next_expiry_is_the_earliest_fresh_deadline() {
        let t0 = Instant::now();
        let mut f = Freshness::new(ms(3000), ms(5000), t0);
        assert_eq!(f.next_expiry(t0), Some(t0 + ms(3000)));
        f.poll(1, true, t0 + ms(500));
        f.nvml_report(&report(1), t0 + ms(4000));
        assert_eq!(f.next_expiry(t0 + ms(4000)), Some(t0 + ms(5500)));
        assert_eq!(f.next_expiry(t0 + ms(5500)), Some(t0 + ms(7000)));
        assert_eq!(f.next_expiry(t0 + ms(7000)), None);
    }

    #[test]
    fn a_stale_report_is_down_with_a_reason() {
        let r = stale_nvml_report(&report(7), ms(3200));
        assert!(!r.nvml_up);
        assert!(r.readings.is_empty());
        assert_eq!(r.polls, 7);
        assert!(
            r.error.as_deref().unwrap_or("").contains("3.2s"),
            "{:?}",
            r.error
        );
    }
}
