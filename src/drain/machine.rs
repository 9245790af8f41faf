//! The drain state machine: `serving` → `draining` → `drained`. Pure: time comes in as an
//! argument, observations come in as values.

use std::time::Duration;

use super::DrainConfig;
use crate::triton::connections::ConnectionView;

/// What a drain under way is waiting on, as of the last poll: `/drain/status`'s `waiting_on`
/// and the `triton_sidecar_drain_waiting{on}` gauge. Named fields, one per signal, so the log,
/// the JSON and the gauge read the same value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WaitingOn {
    /// Requests pending in Triton, or in flight by a backend's own gauge (TensorRT-LLM
    /// `active`/`waiting`, vLLM `running`/`waiting`).
    pub pending: bool,
    /// Triton's success, failure or execution counters moved since the previous poll.
    pub completions: bool,
    /// HTTP connections to Triton whose request has no answer yet (the kernel's view).
    pub open_requests: bool,
    /// Connections whose state the kernel cannot tell (gRPC, or HTTP whose request and answer
    /// fell in one tick) that received a request more recently than the longest execution
    /// Triton has shown, by more than Triton's own exit timeout would cover.
    pub unconfirmed: bool,
    /// Data moved on a Triton connection within `--drain-quiet` (a stream that still sends).
    pub traffic: bool,
}

impl WaitingOn {
    /// The `on` label values, in the order of [`WaitingOn::flags`].
    pub const LABELS: [&'static str; 5] = [
        "pending",
        "completions",
        "open-requests",
        "unconfirmed-connections",
        "traffic",
    ];
    /// Each signal's value, in the order of [`WaitingOn::LABELS`].
    pub fn flags(&self) -> [bool; 5] {
        [
            self.pending,
            self.completions,
            self.open_requests,
            self.unconfirmed,
            self.traffic,
        ]
    }
    /// The labels of the signals that hold the drain.
    pub fn labels(&self) -> Vec<&'static str> {
        Self::LABELS
            .iter()
            .zip(self.flags())
            .filter_map(|(l, on)| on.then_some(*l))
            .collect()
    }
}

/// Work the kernel cannot confirm is held past what Triton's exit timeout covers by this much:
/// Triton's exit timeout runs from its SIGTERM, which follows the hook by a poll or so, and the
/// longest execution is a mean over the window, not a bound.
pub const HANDOFF_MARGIN: Duration = Duration::from_secs(2);

/// Whether an unconfirmed connection (see [`WaitingOn::unconfirmed`]) holds the drain: its
/// newest request arrived `recv_age` ago, and executions have run up to `longest`. If one is
/// still executing, at most `longest - recv_age` remains; when Triton's exit timeout covers
/// that (with [`HANDOFF_MARGIN`]), it is handed to Triton's own shutdown. Nothing learned yet
/// (`longest` 0) holds nothing: every connection ever opened would otherwise hold every drain.
pub fn unconfirmed_holds(recv_age: Duration, longest: Duration, triton_exit: Duration) -> bool {
    recv_age < longest && longest.saturating_sub(recv_age) + HANDOFF_MARGIN > triton_exit
}

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

use crate::derive::activity::Activity;
use crate::state::Phase;

/// What one poll of Triton saw, as the drain needs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Probe {
    /// The metrics page was read.
    Ok {
        /// The page's counters and the work in flight (see [`Activity::moved_since`] for what
        /// counts as movement here).
        activity: Activity,
        /// Triton (and every required model) answered ready.
        ready: bool,
        /// The kernel's view of Triton's client connections; `None` when not read (serving,
        /// or the scan failed).
        connections: Option<ConnectionView>,
        /// The longest execution Triton has shown since the agent started (the largest
        /// per-request compute time of any model); zero before any.
        longest_execution: Duration,
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
    last_activity: Option<Activity>,
    last_in_flight: f64,
    refused_in_row: u32,
    terminating: bool,
    generation: u64,
    last: Option<Completion>,
    requests_seen: f64,
    /// Since the last drain completed, Triton was unreachable at least once.
    was_unreachable: bool,
    /// What the drain under way waits on, as of the last poll.
    waiting_on: WaitingOn,
    /// Open HTTP requests at the last poll that read the connections.
    open_requests: u32,
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
            last_activity: None,
            last_in_flight: 0.0,
            refused_in_row: 0,
            terminating: false,
            generation: 0,
            last: None,
            requests_seen: 0.0,
            was_unreachable: false,
            waiting_on: WaitingOn::default(),
            open_requests: 0,
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
    /// What the drain under way waits on (all false when none is, or nothing holds it).
    pub fn waiting_on(&self) -> WaitingOn {
        self.waiting_on
    }
    /// Open HTTP requests to Triton at the last poll that read the connections.
    pub fn open_requests(&self) -> u32 {
        self.open_requests
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
                self.waiting_on = WaitingOn::default();
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
        self.waiting_on = WaitingOn::default();
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
                activity,
                ready,
                connections,
                longest_execution,
            } => {
                self.refused_in_row = 0;
                let in_flight = activity.in_flight;
                self.last_in_flight = in_flight;
                let moved = match &self.last_activity {
                    Some(prev) => activity.moved_since(prev),
                    None => true,
                };
                if self.phase == Phase::Draining {
                    if let Some(prev) = &self.last_activity {
                        let d = activity.requests_since(prev);
                        if d > 0.0 && !obs.counter_reset {
                            self.requests_seen += d;
                        }
                    }
                    // The pending count leaves out executing requests, so a counter that moved
                    // means work is still arriving or finishing; an executing request that
                    // moves no counter shows in the kernel's view of its connection. Either
                    // restarts the quiet period.
                    let mut w = WaitingOn {
                        pending: in_flight > 0.0,
                        completions: moved || obs.counter_reset,
                        ..WaitingOn::default()
                    };
                    if let Some(c) = connections {
                        self.open_requests = c.open_requests;
                        w.open_requests = c.open_requests > 0;
                        w.unconfirmed = c.ambiguous_recv_age.is_some_and(|age| {
                            unconfirmed_holds(age, longest_execution, self.cfg.triton_exit_timeout)
                        });
                        w.traffic = c.traffic_age.is_some_and(|age| age < self.cfg.quiet);
                    }
                    if w.pending || w.completions || w.open_requests || w.unconfirmed {
                        self.quiet_since = None;
                    } else {
                        // Quiet counts from the later of the first idle poll and the newest
                        // byte on any Triton connection: a stream that still sends holds the
                        // drain until it has been silent for the quiet period.
                        let mut since = self.quiet_since.unwrap_or(now);
                        if let Some(age) = connections.and_then(|c| c.traffic_age) {
                            since = since.max(now.saturating_sub(age));
                        }
                        self.quiet_since = Some(since);
                    }
                    self.waiting_on = w;
                }
                self.last_activity = Some(activity);
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
            min_drain: Duration::from_secs(5),
            quiet: Duration::from_secs(2),
            timeout: Duration::from_secs(90),
            triton_exit_timeout: Duration::from_secs(30),
        }
    }
    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }
    fn ok(at: u64, c: f64, in_flight: f64) -> Observation {
        Observation {
            at: ms(at),
            probe: Probe::Ok {
                activity: Activity {
                    success: c,
                    executions: c,
                    in_flight,
                    ..Activity::default()
                },
                ready: true,
                connections: None,
                longest_execution: Duration::ZERO,
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

    /// A poll with the kernel's view of Triton's connections.
    fn with_conns(at: u64, c: f64, view: ConnectionView, longest_s: u64) -> Observation {
        let mut o = ok(at, c, 0.0);
        if let Probe::Ok {
            connections,
            longest_execution,
            ..
        } = &mut o.probe
        {
            *connections = Some(view);
            *longest_execution = Duration::from_secs(longest_s);
        }
        o
    }

    /// Drive polls every 200 ms from `from` until the drain completes, the view given by `f`.
    fn run_conns(
        m: &mut DrainMachine,
        from: u64,
        to: u64,
        longest_s: u64,
        f: impl Fn(u64) -> (f64, ConnectionView),
    ) -> Option<Completion> {
        let mut t = from;
        while t <= to {
            let (c, v) = f(t);
            if let Some(done) = m.observe(with_conns(t, c, v, longest_s)) {
                return Some(done);
            }
            t += 200;
        }
        None
    }

    fn idle_conn(age_ms: u64) -> ConnectionView {
        ConnectionView {
            connections: 1,
            traffic_age: Some(ms(age_ms)),
            ..ConnectionView::default()
        }
    }

    /// An HTTP request that executes for 60 s moves no counter and no pending count: the
    /// kernel's view holds the drain until its answer, then quiet after it. Without the view
    /// (the old rule) the same drain ended at min-drain, cutting the request.
    #[test]
    fn an_open_request_holds_past_quiet_and_exit_timeout_until_answered() {
        let mut m = DrainMachine::new(cfg());
        m.observe(ok(0, 10.0, 0.0));
        m.start(ms(0), Trigger::Signal);
        let answered_at = 60_000;
        let done = run_conns(&mut m, 200, 89_000, 0, |t| {
            if t < answered_at {
                let v = ConnectionView {
                    connections: 1,
                    open_requests: 1,
                    traffic_age: Some(ms(t)),
                    ..ConnectionView::default()
                };
                (10.0, v)
            } else {
                // Answered: the success counter moves once, the connection idles.
                (11.0, idle_conn(t - answered_at))
            }
        })
        .expect("drains");
        assert_eq!(done.result, DrainResult::Idle);
        // Answered at 60 s; the counter moved at the 60.0 s poll; quiet 2 s after that.
        assert_eq!(done.duration, ms(answered_at + 2200));

        let mut old = DrainMachine::new(cfg());
        old.observe(ok(0, 10.0, 0.0));
        old.start(ms(0), Trigger::Signal);
        let blind = run(&mut old, 200, 89_000, |_| (10.0, 0.0)).expect("drains");
        assert_eq!(blind.duration, ms(5000), "the old rule cannot see it");
    }

    #[test]
    fn waiting_on_names_what_holds_the_drain() {
        let mut m = DrainMachine::new(cfg());
        m.observe(ok(0, 10.0, 0.0));
        m.start(ms(0), Trigger::Post);
        let v = ConnectionView {
            connections: 2,
            open_requests: 1,
            traffic_age: Some(ms(50)),
            ..ConnectionView::default()
        };
        m.observe(with_conns(200, 10.0, v, 0));
        assert_eq!(m.waiting_on().labels(), vec!["open-requests", "traffic"]);
        assert_eq!(m.open_requests(), 1);
        // A backend that reports in-flight work (TensorRT-LLM active, vLLM running) holds it.
        m.observe(ok(400, 10.0, 3.0));
        assert_eq!(m.waiting_on().labels(), vec!["pending"]);
        // Counters that moved.
        m.observe(ok(600, 12.0, 0.0));
        assert_eq!(m.waiting_on().labels(), vec!["completions"]);
        // Nothing reported at all (no view, no pending, counters still): nothing holds it.
        m.observe(ok(800, 12.0, 0.0));
        assert!(m.waiting_on().labels().is_empty());
    }

    /// A stream sends as it goes: each poll sees fresh traffic, so the quiet period starts
    /// only once it stops sending. A pause shorter than quiet does not end the drain.
    #[test]
    fn a_stream_that_sends_holds_until_silent_for_quiet() {
        let mut m = DrainMachine::new(cfg());
        m.observe(ok(0, 10.0, 0.0));
        m.start(ms(0), Trigger::Signal);
        let stream_ends = 20_000;
        let done = run_conns(&mut m, 200, 89_000, 0, |t| {
            // Sends every 1.5 s (a pause shorter than the 2 s quiet) until 20 s.
            let last_send = if t < stream_ends {
                t - t % 1500
            } else {
                stream_ends
            };
            (10.0, idle_conn(t - last_send))
        })
        .expect("drains");
        assert_eq!(done.result, DrainResult::Idle);
        assert_eq!(done.duration, ms(stream_ends + 2000));
        assert!(m.waiting_on().labels().is_empty());
    }

    /// Idle keep-alive connections (traffic long ago, nothing open) do not hold the drain.
    #[test]
    fn idle_keep_alive_connections_do_not_hold() {
        let mut m = DrainMachine::new(cfg());
        m.observe(ok(0, 10.0, 0.0));
        m.start(ms(0), Trigger::Signal);
        let done =
            run_conns(&mut m, 200, 89_000, 0, |t| (10.0, idle_conn(30_000 + t))).expect("drains");
        assert_eq!(done.duration, ms(5000));
    }

    fn grpc(recv_age_ms: u64) -> ConnectionView {
        ConnectionView {
            connections: 1,
            ambiguous: 1,
            ambiguous_recv_age: Some(ms(recv_age_ms)),
            traffic_age: Some(ms(recv_age_ms)),
            ..ConnectionView::default()
        }
    }

    /// A gRPC request (the kernel cannot tell it from an idle connection) arrived at the drain's
    /// start; executions have run up to 60 s. With Triton's exit timeout of 30 s the drain holds
    /// until the remaining work fits in it (60 - 30 + 2 = 32 s after the request), then hands
    /// it over; with an exit timeout of 0 (Triton r25.05+ cancels gRPC at shutdown) it holds
    /// the full 60 s; with nothing learned it holds nothing.
    #[test]
    fn unconfirmed_connections_are_held_until_triton_exit_covers_them() {
        for (exit_s, longest_s, want_ms) in [
            (30, 60, 32_000),
            (0, 60, 60_000),
            (30, 0, 5_000),
            (90, 60, 5_000),
        ] {
            let mut c = cfg();
            c.triton_exit_timeout = Duration::from_secs(exit_s);
            let mut m = DrainMachine::new(c);
            m.observe(ok(0, 10.0, 0.0));
            m.start(ms(0), Trigger::Signal);
            let done =
                run_conns(&mut m, 200, 89_000, longest_s, |t| (10.0, grpc(t))).expect("drains");
            // Quiet 2 s after the hold ends, never before min-drain (5 s).
            let held_until = want_ms.max(3_000);
            let want = if want_ms <= 5_000 {
                5_000
            } else {
                held_until + 2_000
            };
            let got = done.duration.as_millis() as u64;
            assert!(
                got >= want && got <= want + 200,
                "exit {exit_s} s, longest {longest_s} s: {got} ms, want {want}"
            );
        }
        assert!(unconfirmed_holds(ms(10_000), ms(60_000), ms(30_000)));
        assert!(!unconfirmed_holds(ms(40_000), ms(60_000), ms(30_000)));
        assert!(!unconfirmed_holds(ms(0), Duration::ZERO, Duration::ZERO));
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
    fn moving_iterations_alone_hold_the_quiet_period() {
        // No request ends, nothing is reported in flight, but TensorRT-LLM iterations run until
        // 9 s (a stream generating tokens): the drain waits for them, then 2 s of quiet.
        let mut m = DrainMachine::new(cfg());
        m.start(ms(0), Trigger::Signal);
        let mut t = 0;
        let done = loop {
            let obs = Observation {
                at: ms(t),
                probe: Probe::Ok {
                    activity: Activity {
                        iterations: Some((t.min(9000) / 200) as f64),
                        ..Activity::default()
                    },
                    ready: true,
                    connections: None,
                    longest_execution: Duration::ZERO,
                },
                counter_reset: false,
            };
            if let Some(done) = m.observe(obs) {
                break done;
            }
            t += 200;
            assert!(t <= 60_000, "never drained");
        };
        assert_eq!(done.result, DrainResult::Idle);
        // First still poll at 9.2 s, quiet 2 s → 11.2 s.
        assert_eq!(done.duration, ms(11_200));
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
                activity: Activity::default(),
                ready: false,
                connections: None,
                longest_execution: Duration::ZERO,
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
                activity: Activity::default(),
                ready: true,
                connections: None,
                longest_execution: Duration::ZERO,
            },
            counter_reset: true,
        });
        assert_eq!(m.phase(), Phase::Serving);
    }
}
