//! The drain state machine: `serving` → `draining` → `drained`. Pure: time comes in as an
//! argument, observations come in as values.

use std::time::Duration;

use crate::config::DrainConfig;

/// What started a drain (`trigger` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Trigger {
    /// SIGTERM or SIGINT to the agent.
    Signal,
    /// `GET /wait-for-drain`, Triton's preStop httpGet hook.
    PrestopHttp,
    /// `POST /drain`.
    Post,
    /// `triton-sidecar drain`.
    Cli,
}

impl Trigger {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Signal => "signal",
            Trigger::PrestopHttp => "prestop-http",
            Trigger::Post => "post",
            Trigger::Cli => "cli",
        }
    }
    /// All triggers.
    pub const ALL: [Trigger; 4] = [
        Trigger::Signal,
        Trigger::PrestopHttp,
        Trigger::Post,
        Trigger::Cli,
    ];
}

/// How a drain ended (`result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DrainResult {
    /// Triton was idle for the quiet period after min-drain.
    Idle,
    /// `--drain-timeout` passed first.
    Timeout,
    /// Triton refused connections on three polls in a row.
    TritonGone,
    /// `POST /drain/cancel` returned the pod to serving.
    Cancelled,
    /// A second SIGTERM/SIGINT asked the agent to stop now.
    Aborted,
}

impl DrainResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DrainResult::Idle => "idle",
            DrainResult::Timeout => "timeout",
            DrainResult::TritonGone => "triton-gone",
            DrainResult::Cancelled => "cancelled",
            DrainResult::Aborted => "aborted",
        }
    }
}

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

/// What one poll of Triton saw, as the drain needs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Probe {
    /// The metrics page was read.
    Ok {
        /// (success, failure, exec_count) summed over models.
        counters: (f64, f64, f64),
        /// Pending + backend-reported in-flight work.
        in_flight: f64,
        /// Triton (and every required model) answered ready.
        ready: bool,
    },
    /// Connection refused: nothing listens.
    Refused,
    /// Any other failure (timeout, status, bad page). Never taken for "gone".
    Failed,
}

/// One observation, at a time on the caller's monotonic axis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// When the poll completed.
    pub at: Duration,
    /// What it saw.
    pub probe: Probe,
    /// A counter went down since the previous poll: a new Triton process.
    pub counter_reset: bool,
}

/// A finished drain.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Completion {
    /// Which drain (1, 2, ...).
    pub generation: u64,
    /// What started it.
    pub trigger: Trigger,
    /// How it ended.
    pub result: DrainResult,
    /// How long it took.
    pub duration: Duration,
    /// Requests (success + failure) Triton finished while the drain ran.
    pub requests_seen: f64,
}

impl Completion {
    /// The one-line summary `/wait-for-drain` answers with.
    pub fn summary(&self) -> String {
        format!(
            "drained: result={} trigger={} seconds={:.3} requests_during_drain={}\n",
            self.result.as_str(),
            self.trigger.as_str(),
            self.duration.as_secs_f64(),
            self.requests_seen.max(0.0).round() as u64
        )
    }
}

/// Why a cancel was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CancelError {
    /// A signal arrived: the process is terminating and will not return to serving.
    #[error("the agent is terminating; the drain cannot be cancelled")]
    Terminating,
}

/// The machine.
#[derive(Debug, Clone)]
pub struct DrainMachine {
    cfg: DrainConfig,
    phase: Phase,
    trigger: Option<Trigger>,
    result: Option<DrainResult>,
    started: Option<Duration>,
    quiet_since: Option<Duration>,
    last_counters: Option<(f64, f64, f64)>,
    last_in_flight: f64,
    refused_in_row: u32,
    terminating: bool,
    generation: u64,
    last: Option<Completion>,
    requests_seen: f64,
    /// Since the last drain completed, Triton was unreachable at least once.
    was_unreachable: bool,
}

/// Three refusals in a row mean Triton is gone.
pub const GONE_AFTER_REFUSALS: u32 = 3;

impl DrainMachine {
    /// A machine in `serving`.
    pub fn new(cfg: DrainConfig) -> Self {
        DrainMachine {
            cfg,
            phase: Phase::Serving,
            trigger: None,
            result: None,
            started: None,
            quiet_since: None,
            last_counters: None,
            last_in_flight: 0.0,
            refused_in_row: 0,
            terminating: false,
            generation: 0,
            last: None,
            requests_seen: 0.0,
            was_unreachable: false,
        }
    }

    /// The phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }
    /// What started the current or last drain.
    pub fn trigger(&self) -> Option<Trigger> {
        self.trigger
    }
    /// How the last drain ended.
    pub fn result(&self) -> Option<DrainResult> {
        self.result
    }
    /// The generation of the current (or last) drain.
    pub fn generation(&self) -> u64 {
        self.generation
    }
    /// The last completed drain.
    pub fn last_completion(&self) -> Option<Completion> {
        self.last
    }
    /// Whether a signal arrived.
    pub fn terminating(&self) -> bool {
        self.terminating
    }
    /// When the current drain started.
    pub fn started(&self) -> Option<Duration> {
        self.started
    }
    /// Since when Triton has looked idle during this drain.
    pub fn quiet_since(&self) -> Option<Duration> {
        self.quiet_since
    }
    /// In-flight work at the last observation.
    pub fn last_in_flight(&self) -> f64 {
        self.last_in_flight
    }
    /// The configuration.
    pub fn config(&self) -> DrainConfig {
        self.cfg
    }

    /// Start a drain, unless one is under way or done. Returns the generation whose completion
    /// the caller waits for, and whether this call started it. A drain that already completed
    /// counts: a hook delivered twice gets the same answer at once.
    pub fn start(&mut self, now: Duration, trigger: Trigger) -> (u64, bool) {
        match self.phase {
            Phase::Draining | Phase::Drained => (self.generation, false),
            Phase::Serving => {
                self.generation += 1;
                self.phase = Phase::Draining;
                self.trigger = Some(trigger);
                self.result = None;
                self.started = Some(now);
                self.quiet_since = None;
                self.requests_seen = 0.0;
                (self.generation, true)
            }
        }
    }

    /// A signal arrived: drain (if not already) and never return to serving.
    pub fn terminate(&mut self, now: Duration) -> (u64, Option<Completion>) {
        self.terminating = true;
        let (g, _) = self.start(now, Trigger::Signal);
        // Native-sidecar order: Triton already exited before our SIGTERM.
        let done = if self.phase == Phase::Draining && self.refused_in_row >= GONE_AFTER_REFUSALS {
            self.complete(now, DrainResult::TritonGone)
        } else {
            None
        };
        (g, done)
    }

    /// A second signal: finish now.
    pub fn abort(&mut self, now: Duration) -> Option<Completion> {
        self.terminating = true;
        if self.phase == Phase::Draining {
            self.complete(now, DrainResult::Aborted)
        } else {
            None
        }
    }

    /// `POST /drain/cancel`. Returns the cancelled drain's completion, if one was under way.
    pub fn cancel(&mut self, now: Duration) -> Result<Option<Completion>, CancelError> {
        if self.terminating {
            return Err(CancelError::Terminating);
        }
        let done = match self.phase {
            Phase::Draining => self.complete(now, DrainResult::Cancelled),
            _ => None,
        };
        self.phase = Phase::Serving;
        Ok(done)
    }

    fn complete(&mut self, now: Duration, result: DrainResult) -> Option<Completion> {
        let started = self.started.unwrap_or(now);
        let c = Completion {
            generation: self.generation,
            trigger: self.trigger.unwrap_or(Trigger::Signal),
            result,
            duration: now.saturating_sub(started),
            requests_seen: self.requests_seen,
        };
        self.phase = Phase::Drained;
        self.result = Some(result);
        self.last = Some(c);
        // "Gone" means this process is already dead: whatever answers next is a new one.
        self.was_unreachable = result == DrainResult::TritonGone;
        Some(c)
    }

    /// The timeout rule, for ticks between polls.
    pub fn tick(&mut self, now: Duration) -> Option<Completion> {
        match (self.phase, self.started) {
            (Phase::Draining, Some(s)) if now.saturating_sub(s) >= self.cfg.timeout => {
                self.complete(now, DrainResult::Timeout)
            }
            _ => None,
        }
    }

    /// Feed one poll.
    pub fn observe(&mut self, obs: Observation) -> Option<Completion> {
        let now = obs.at;
        match obs.probe {
            Probe::Refused => {
                self.refused_in_row += 1;
                self.was_unreachable = true;
                self.quiet_since = None;
            }
            Probe::Failed => {
                // A slow or broken answer: we cannot see, so the quiet period restarts, but a
                // busy Triton is not "gone".
                self.refused_in_row = 0;
                self.quiet_since = None;
            }
            Probe::Ok {
                counters,
                in_flight,
                ready,
            } => {
                self.refused_in_row = 0;
                self.last_in_flight = in_flight;
                let moved = match self.last_counters {
                    Some(prev) => prev != counters,
                    None => true,
                };
                if self.phase == Phase::Draining {
                    if let Some(prev) = self.last_counters {
                        let d = (counters.0 - prev.0) + (counters.1 - prev.1);
                        if d > 0.0 && !obs.counter_reset {
                            self.requests_seen += d;
                        }
                    }
                    // The pending count leaves out executing requests, so a counter that moved
                    // means work is still arriving or finishing: the quiet period restarts.
                    if in_flight > 0.0 || moved || obs.counter_reset {
                        self.quiet_since = None;
                    } else if self.quiet_since.is_none() {
                        self.quiet_since = Some(now);
                    }
                }
                self.last_counters = Some(counters);
                if obs.counter_reset && self.phase == Phase::Drained {
                    self.was_unreachable = true; // a new process, even if not ready yet
                }
                // Triton restarted while the pod is not terminating (a failed liveness probe
                // runs the preStop hook, then restarts only Triton's container): go back to
                // serving once the new process is ready, or the pod stays unready forever.
                if self.phase == Phase::Drained
                    && !self.terminating
                    && ready
                    && self.was_unreachable
                    && self.trigger != Some(Trigger::Post)
                    && self.trigger != Some(Trigger::Cli)
                {
                    self.phase = Phase::Serving;
                    self.was_unreachable = false;
                    return None;
                }
            }
        }
        if self.phase != Phase::Draining {
            return None;
        }
        if self.refused_in_row >= GONE_AFTER_REFUSALS {
            return self.complete(now, DrainResult::TritonGone);
        }
        let started = self.started.unwrap_or(now);
        let elapsed = now.saturating_sub(started);
        if let Some(q) = self.quiet_since {
            if elapsed >= self.cfg.min_drain && now.saturating_sub(q) >= self.cfg.quiet {
                return self.complete(now, DrainResult::Idle);
            }
        }
        self.tick(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> DrainConfig {
        DrainConfig {
            poll_interval: Duration::from_millis(200),
            min_drain: Duration::from_secs(5),
            quiet: Duration::from_secs(2),
            timeout: Duration::from_secs(90),
        }
    }
    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }
    fn ok(at: u64, c: f64, in_flight: f64) -> Observation {
        Observation {
            at: ms(at),
            probe: Probe::Ok {
                counters: (c, 0.0, c),
                in_flight,
                ready: true,
            },
            counter_reset: false,
        }
    }

    /// Run polls every 200 ms from `from` to `to` with counters/in-flight given by `f`.
    fn run(
        m: &mut DrainMachine,
        from: u64,
        to: u64,
        f: impl Fn(u64) -> (f64, f64),
    ) -> Option<Completion> {
        let mut t = from;
        while t <= to {
            let (c, p) = f(t);
            if let Some(done) = m.observe(ok(t, c, p)) {
                return Some(done);
            }
            t += 200;
        }
        None
    }

    #[test]
    fn idle_pod_drains_at_min_drain() {
        let mut m = DrainMachine::new(cfg());
        m.observe(ok(0, 10.0, 0.0));
        assert_eq!(m.start(ms(1000), Trigger::Post), (1, true));
        let done = run(&mut m, 1200, 20_000, |_| (10.0, 0.0)).expect("drains");
        assert_eq!(done.result, DrainResult::Idle);
        // Never before min-drain: started at 1 s, so not before 6 s.
        assert_eq!(done.duration, ms(5000));
        assert_eq!(m.phase(), Phase::Drained);
    }

    #[test]
    fn backlog_holds_until_pending_zero_and_counters_stop() {
        let mut m = DrainMachine::new(cfg());
        m.start(ms(0), Trigger::Signal);
        // Pending until 8 s, counters move until 9 s, then idle.
        let done = run(&mut m, 200, 60_000, |t| {
            let pending = if t < 8000 { 3.0 } else { 0.0 };
            let c = (t.min(9000) / 200) as f64;
            (c, pending)
        })
        .expect("drains");
        assert_eq!(done.result, DrainResult::Idle);
        // First idle poll at 9.2 s (counters equal to the 9.0 s value), quiet 2 s → 11.2 s.
        assert_eq!(done.duration, ms(11_200));
    }

    #[test]
    fn late_request_restarts_quiet() {
        let mut m = DrainMachine::new(cfg());
        m.start(ms(0), Trigger::Signal);
        // Idle, but one request completes at 4.4 s (endpoint lag).
        let done = run(&mut m, 200, 60_000, |t| {
            (if t >= 4400 { 11.0 } else { 10.0 }, 0.0)
        })
        .expect("drains");
        // Quiet restarts at 4.6 s → done at 6.6 s, not at min-drain (5 s).
        assert_eq!(done.duration, ms(6600));
        // One success completed during the drain (success + failure; exec_count is not a request).
        assert_eq!(done.requests_seen, 1.0);
    }

    #[test]
    fn timeout() {
        let mut m = DrainMachine::new(cfg());
        m.start(ms(0), Trigger::Signal);
        let done = run(&mut m, 200, 200_000, |_| (1.0, 5.0)).expect("times out");
        assert_eq!(done.result, DrainResult::Timeout);
        assert_eq!(done.duration, ms(90_000));
    }

    #[test]
    fn tick_times_out_without_polls() {
        let mut m = DrainMachine::new(cfg());
        m.start(ms(0), Trigger::Signal);
        assert!(m.tick(ms(89_999)).is_none());
        assert_eq!(
            m.tick(ms(90_000)).map(|c| c.result),
            Some(DrainResult::Timeout)
        );
    }

    #[test]
    fn gone_after_three_refusals_but_not_after_timeouts() {
        let mut m = DrainMachine::new(cfg());
        m.start(ms(0), Trigger::Signal);
        let at = |t| Observation {
            at: ms(t),
            probe: Probe::Failed,
            counter_reset: false,
        };
        for t in 1..50 {
            assert!(
                m.observe(at(t * 200)).is_none(),
                "slow answers never end the drain"
            );
        }
        let r = |t| Observation {
            at: ms(t),
            probe: Probe::Refused,
            counter_reset: false,
        };
        assert!(m.observe(r(10_200)).is_none());
        assert!(m.observe(r(10_400)).is_none());
        let done = m.observe(r(10_600)).expect("gone");
        assert_eq!(done.result, DrainResult::TritonGone);
    }

    #[test]
    fn refusals_interrupted_by_timeout_do_not_count() {
        let mut m = DrainMachine::new(cfg());
        m.start(ms(0), Trigger::Signal);
        let p = |t, probe| Observation {
            at: ms(t),
            probe,
            counter_reset: false,
        };
        assert!(m.observe(p(200, Probe::Refused)).is_none());
        assert!(m.observe(p(400, Probe::Refused)).is_none());
        assert!(m.observe(p(600, Probe::Failed)).is_none());
        assert!(m.observe(p(800, Probe::Refused)).is_none());
    }

    #[test]
    fn native_sidecar_order_completes_at_once() {
        let mut m = DrainMachine::new(cfg());
        for t in 0..3 {
            m.observe(Observation {
                at: ms(t * 1000),
                probe: Probe::Refused,
                counter_reset: false,
            });
        }
        let (_, done) = m.terminate(ms(5000));
        assert_eq!(done.map(|c| c.result), Some(DrainResult::TritonGone));
    }

    #[test]
    fn cancel_and_terminating() {
        let mut m = DrainMachine::new(cfg());
        m.start(ms(0), Trigger::Post);
        let c = m
            .cancel(ms(100))
            .unwrap()
            .expect("cancelled drain completes");
        assert_eq!(c.result, DrainResult::Cancelled);
        assert_eq!(m.phase(), Phase::Serving);
        // A new drain gets a new generation.
        assert_eq!(m.start(ms(200), Trigger::Post), (2, true));
        m.terminate(ms(300));
        assert_eq!(m.cancel(ms(400)), Err(CancelError::Terminating));
        assert_eq!(m.phase(), Phase::Draining);
    }

    #[test]
    fn second_start_joins_the_first() {
        let mut m = DrainMachine::new(cfg());
        assert_eq!(m.start(ms(0), Trigger::PrestopHttp), (1, true));
        assert_eq!(m.start(ms(10), Trigger::Signal), (1, false));
        assert_eq!(m.trigger(), Some(Trigger::PrestopHttp));
    }

    #[test]
    fn triton_restart_returns_to_serving_unless_terminating() {
        let mut m = DrainMachine::new(cfg());
        m.observe(ok(0, 100.0, 0.0));
        m.start(ms(0), Trigger::PrestopHttp);
        let r = |t| Observation {
            at: ms(t),
            probe: Probe::Refused,
            counter_reset: false,
        };
        m.observe(r(200));
        m.observe(r(400));
        assert_eq!(
            m.observe(r(600)).map(|c| c.result),
            Some(DrainResult::TritonGone)
        );
        // Not ready yet: stays drained.
        let not_ready = Observation {
            at: ms(800),
            probe: Probe::Ok {
                counters: (0.0, 0.0, 0.0),
                in_flight: 0.0,
                ready: false,
            },
            counter_reset: true,
        };
        m.observe(not_ready);
        assert_eq!(m.phase(), Phase::Drained);
        m.observe(ok(1000, 0.0, 0.0));
        assert_eq!(m.phase(), Phase::Serving);

        // The same while terminating: stays drained.
        let mut m = DrainMachine::new(cfg());
        m.terminate(ms(0));
        m.observe(r(200));
        m.observe(r(400));
        m.observe(r(600));
        m.observe(ok(1000, 0.0, 0.0));
        assert_eq!(m.phase(), Phase::Drained);
    }

    #[test]
    fn counter_reset_marks_new_process() {
        let mut m = DrainMachine::new(cfg());
        m.observe(ok(0, 100.0, 0.0));
        m.start(ms(0), Trigger::PrestopHttp);
        let done = run(&mut m, 200, 20_000, |_| (100.0, 0.0)).unwrap();
        assert_eq!(done.result, DrainResult::Idle);
        m.observe(ok(21_000, 100.0, 0.0));
        assert_eq!(m.phase(), Phase::Drained, "same process: stays drained");
        m.observe(Observation {
            at: ms(22_000),
            probe: Probe::Ok {
                counters: (0.0, 0.0, 0.0),
                in_flight: 0.0,
                ready: true,
            },
            counter_reset: true,
        });
        assert_eq!(m.phase(), Phase::Serving);
    }
}
