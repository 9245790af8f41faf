//! The drain controller: the only owner of the [`DrainMachine`]. It takes commands (start,
//! cancel, terminate, abort) and poll results, and publishes a [`DrainView`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::machine::{
    CancelError, Completion, DrainMachine, DrainResult, Observation, Probe, Trigger, WaitingOn,
};
use super::DrainConfig;
use crate::state::{Phase, PollState};
use crate::triton::client::ScrapeError;

/// The published drain state. Immutable once sent.
#[derive(Debug, Clone)]
pub struct DrainView {
    /// Current phase.
    pub phase: Phase,
    /// Trigger of the current or last drain.
    pub trigger: Option<Trigger>,
    /// Result of the last drain.
    pub result: Option<DrainResult>,
    /// When the current drain started (monotonic axis).
    pub started: Option<Duration>,
    /// Since when Triton has looked idle.
    pub quiet_since: Option<Duration>,
    /// In-flight work at the last poll.
    pub pending: f64,
    /// Generation of the current or last drain.
    pub generation: u64,
    /// The last completed drain.
    pub last: Option<Completion>,
    /// Completed drains by (trigger, result), cumulative.
    pub counts: BTreeMap<(Trigger, DrainResult), u64>,
    /// A signal arrived.
    pub terminating: bool,
    /// The configuration, for `/drain/status`.
    pub config: DrainConfig,
    /// What the drain under way waits on.
    pub waiting_on: WaitingOn,
    /// Open HTTP requests to Triton at the last poll that read the connections.
    pub open_requests: u32,
}

impl DrainView {
    /// Whether drain `generation` has completed.
    pub fn completed(&self, generation: u64) -> Option<Completion> {
        self.last.filter(|c| c.generation >= generation)
    }

    /// `GET /drain/status` as JSON.
    pub fn status_json(&self, now: Duration) -> String {
        let elapsed = match (self.phase, self.started, self.last) {
            (Phase::Draining, Some(s), _) => now.saturating_sub(s),
            (Phase::Drained, _, Some(c)) => c.duration,
            _ => Duration::ZERO,
        };
        let quiet = match (self.phase, self.quiet_since) {
            (Phase::Draining, Some(q)) => now.saturating_sub(q),
            _ => Duration::ZERO,
        };
        let status = DrainStatus {
            elapsed_ms: elapsed.as_millis() as u64,
            open_requests: self.open_requests,
            waiting_on: if self.phase == Phase::Draining {
                self.waiting_on.labels()
            } else {
                Vec::new()
            },
            pending: self.pending,
            quiet_ms: quiet.as_millis() as u64,
            result: self.result.map(DrainResult::as_str),
            state: self.phase.as_str(),
            terminating: self.terminating,
            timeout_ms: self.config.timeout.as_millis() as u64,
            trigger: self.trigger.map(Trigger::as_str),
        };
        // Serialising plain numbers, strings and options cannot fail.
        serde_json::to_string(&status).unwrap_or_default()
    }
}

/// The body of `GET /drain/status`. The README's admin endpoint table lists these keys; a test
/// checks that it does. Fields are in alphabetical order, the order the page had when it was
/// built with `json!`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DrainStatus {
    /// Milliseconds since the drain under way began; the last drain's length once drained; 0
    /// while serving.
    pub elapsed_ms: u64,
    /// HTTP requests to Triton that have no answer yet, by the kernel's view of their
    /// connections, as of the last poll that read them (polls read them only while draining).
    pub open_requests: u32,
    /// Requests Triton reports pending or in flight, as of the last poll.
    pub pending: f64,
    /// Milliseconds the drain under way has seen no work; 0 otherwise.
    pub quiet_ms: u64,
    /// How the last drain ended (`idle`, `timeout`, `triton-gone`, `cancelled`, `aborted`);
    /// null before one ended.
    pub result: Option<&'static str>,
    /// `serving`, `draining` or `drained`.
    pub state: &'static str,
    /// True once a signal arrived, also during a drain a hook started.
    pub terminating: bool,
    /// The configured `--drain-timeout`, milliseconds.
    pub timeout_ms: u64,
    /// What started the drain under way or the last one (`signal`, `prestop-http`, `post`,
    /// `cli`); null before any.
    pub trigger: Option<&'static str>,
    /// What the drain under way waits on: any of `pending`, `completions`, `open-requests`,
    /// `unconfirmed-connections`, `traffic`; empty when nothing holds it or none is under way.
    pub waiting_on: Vec<&'static str>,
}

/// A command to the controller.
#[derive(Debug)]
pub enum Command {
    /// Start a drain (or join the current one); answers the generation to wait for.
    Start(Trigger, oneshot::Sender<u64>),
    /// Cancel a manual drain.
    Cancel(oneshot::Sender<Result<(), CancelError>>),
    /// A first signal: drain and never return to serving.
    Terminate(oneshot::Sender<u64>),
    /// A second signal: finish now.
    Abort,
}

/// A cheap handle for the HTTP layer and the lifecycle.
#[derive(Debug, Clone)]
pub struct DrainHandle {
    tx: mpsc::Sender<Command>,
    view: watch::Receiver<Arc<DrainView>>,
    origin: Instant,
}

/// The controller is gone (the agent is shutting down).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the drain controller has stopped")]
pub struct ControllerGone;

impl DrainHandle {
    /// The current view.
    pub fn view(&self) -> Arc<DrainView> {
        self.view.borrow().clone()
    }
    /// A receiver of views.
    pub fn subscribe(&self) -> watch::Receiver<Arc<DrainView>> {
        self.view.clone()
    }
    /// Now, on the agent's monotonic axis.
    pub fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// Start (or join) a drain; returns its generation.
    pub async fn start(&self, trigger: Trigger) -> Result<u64, ControllerGone> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Start(trigger, tx))
            .await
            .map_err(|_| ControllerGone)?;
        rx.await.map_err(|_| ControllerGone)
    }

    /// Signal-initiated drain.
    pub async fn terminate(&self) -> Result<u64, ControllerGone> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Terminate(tx))
            .await
            .map_err(|_| ControllerGone)?;
        rx.await.map_err(|_| ControllerGone)
    }

    /// Second signal.
    pub async fn abort(&self) {
        let _ = self.tx.send(Command::Abort).await;
    }

    /// Cancel a manual drain.
    pub async fn cancel(&self) -> Result<Result<(), CancelError>, ControllerGone> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Cancel(tx))
            .await
            .map_err(|_| ControllerGone)?;
        rx.await.map_err(|_| ControllerGone)
    }

    /// Wait until drain `generation` has completed.
    pub async fn wait(&self, generation: u64) -> Result<Completion, ControllerGone> {
        let mut rx = self.view.clone();
        let v = rx
            .wait_for(|v| v.completed(generation).is_some())
            .await
            .map_err(|_| ControllerGone)?;
        v.completed(generation).ok_or(ControllerGone)
    }
}

/// Turn a poll into the drain's observation.
pub fn observation(p: &PollState) -> Observation {
    let probe = match (&p.activity, &p.last_error) {
        (Some(a), _) => Probe::Ok {
            activity: *a,
            ready: p.health.is_ready(),
            connections: p.connections,
            longest_execution: p.longest_execution,
        },
        (None, Some(ScrapeError::Refused)) => Probe::Refused,
        _ => Probe::Failed,
    };
    Observation {
        at: p.at,
        probe,
        counter_reset: p.counter_reset,
    }
}

fn view_of(m: &DrainMachine, counts: &BTreeMap<(Trigger, DrainResult), u64>) -> DrainView {
    DrainView {
        phase: m.phase(),
        trigger: m.trigger(),
        result: m.result(),
        started: m.started(),
        quiet_since: m.quiet_since(),
        pending: m.last_in_flight(),
        generation: m.generation(),
        last: m.last_completion(),
        counts: counts.clone(),
        terminating: m.terminating(),
        config: m.config(),
        waiting_on: m.waiting_on(),
        open_requests: m.open_requests(),
    }
}

/// Every field of the machine that [`view_of`] publishes and that can change without a
/// completion: the view is sent again when any of them moved. (`terminating` once was missing,
/// so a signal during a hook's drain never reached `/drain/status`.)
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stamp {
    phase: Phase,
    generation: u64,
    trigger: Option<Trigger>,
    result: Option<DrainResult>,
    started: Option<Duration>,
    quiet_since: Option<Duration>,
    /// Compared by bits, so a NaN never counts as a change on every pass.
    in_flight: u64,
    terminating: bool,
    waiting_on: WaitingOn,
    open_requests: u32,
}

impl Stamp {
    fn of(m: &DrainMachine) -> Stamp {
        Stamp {
            phase: m.phase(),
            generation: m.generation(),
            trigger: m.trigger(),
            result: m.result(),
            started: m.started(),
            quiet_since: m.quiet_since(),
            in_flight: m.last_in_flight().to_bits(),
            terminating: m.terminating(),
            waiting_on: m.waiting_on(),
            open_requests: m.open_requests(),
        }
    }
}

/// Spawn the controller. Returns the handle, a phase receiver for the poller, and the task, so
/// the agent can notice it ending. It runs until the last [`DrainHandle`] is gone.
pub fn spawn(
    cfg: DrainConfig,
    origin: Instant,
    polls: watch::Receiver<Arc<PollState>>,
) -> (DrainHandle, watch::Receiver<Phase>, JoinHandle<()>) {
    spawn_task(cfg, origin, polls, Arc::new(AtomicU64::new(0)))
}

/// [`spawn`], counting the controller loop's wakeups in `wakeups`.
#[cfg(test)]
fn spawn_counted(
    cfg: DrainConfig,
    origin: Instant,
    polls: watch::Receiver<Arc<PollState>>,
    wakeups: Arc<AtomicU64>,
) -> (DrainHandle, watch::Receiver<Phase>) {
    let (handle, phase, _task) = spawn_task(cfg, origin, polls, wakeups);
    (handle, phase)
}

/// [`spawn`], counting the controller loop's wakeups in `wakeups`: the tests use it to check
/// that the task parks instead of spinning.
fn spawn_task(
    cfg: DrainConfig,
    origin: Instant,
    mut polls: watch::Receiver<Arc<PollState>>,
    wakeups: Arc<AtomicU64>,
) -> (DrainHandle, watch::Receiver<Phase>, JoinHandle<()>) {
    let mut m = DrainMachine::new(cfg);
    let mut counts: BTreeMap<(Trigger, DrainResult), u64> = BTreeMap::new();
    let (view_tx, view_rx) = watch::channel(Arc::new(view_of(&m, &counts)));
    let (phase_tx, phase_rx) = watch::channel(Phase::Serving);
    let (tx, mut rx) = mpsc::channel::<Command>(256);
    let task = tokio::spawn(async move {
        // Polls stop once the poller has ended (shutdown, or a failure the agent is about to
        // report). The controller then stops listening for them, and keeps answering commands
        // and firing the drain timeout. (Listening to a closed channel, or to a replacement
        // without a sender, fails at once on every pass: the loop would spin a core.)
        let mut polls_open = true;
        loop {
            wakeups.fetch_add(1, Ordering::Relaxed);
            let mut done: Option<Completion> = None;
            let before = Stamp::of(&m);
            // The only timed rule is the drain timeout, and it must fire even when polls stall:
            // sleep until that deadline rather than tick, so a serving controller never wakes.
            let deadline = match (m.phase(), m.started()) {
                (Phase::Draining, Some(s)) => s
                    .checked_add(m.config().timeout)
                    .and_then(|d| origin.checked_add(d))
                    .map(tokio::time::Instant::from_std),
                _ => None,
            };
            // Never polled while `deadline` is `None` (the branch below is disabled).
            let wake = deadline.unwrap_or_else(tokio::time::Instant::now);
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    None => return,
                    Some(Command::Start(trigger, reply)) => {
                        let (g, started) = m.start(origin.elapsed(), trigger);
                        if started {
                            tracing::info!(trigger = trigger.as_str(), "drain started: readiness is now 503");
                        }
                        let _ = reply.send(g);
                    }
                    Some(Command::Terminate(reply)) => {
                        let (g, d) = m.terminate(origin.elapsed());
                        tracing::info!("termination signal: draining before exit");
                        done = d;
                        let _ = reply.send(g);
                    }
                    Some(Command::Abort) => {
                        tracing::warn!("second signal: stopping now");
                        done = m.abort(origin.elapsed());
                    }
                    Some(Command::Cancel(reply)) => {
                        let r = m.cancel(origin.elapsed());
                        if let Ok(d) = &r {
                            done = *d;
                            tracing::info!("drain cancelled: back to serving");
                        }
                        let _ = reply.send(r.map(|_| ()));
                    }
                },
                changed = polls.changed(), if polls_open => {
                    if changed.is_err() {
                        polls_open = false;
                        continue;
                    }
                    let p = polls.borrow_and_update().clone();
                    let phase_before = m.phase();
                    done = m.observe(observation(&p));
                    if phase_before == Phase::Drained && m.phase() == Phase::Serving {
                        tracing::info!("a new Triton process is ready and no termination is under way: back to serving");
                    }
                }
                _ = tokio::time::sleep_until(wake), if deadline.is_some() => {
                    // Timer rounding can wake a hair early: then the next pass sleeps again.
                    done = m.tick(origin.elapsed());
                }
            }
            if let Some(c) = done {
                *counts.entry((c.trigger, c.result)).or_insert(0) += 1;
                match c.result {
                    DrainResult::Timeout => tracing::warn!(
                        trigger = c.trigger.as_str(),
                        seconds = c.duration.as_secs_f64(),
                        "drain timed out; Triton may still have work in flight"
                    ),
                    r => tracing::info!(
                        trigger = c.trigger.as_str(),
                        result = r.as_str(),
                        seconds = c.duration.as_secs_f64(),
                        requests = c.requests_seen,
                        "drain completed"
                    ),
                }
            }
            let after = Stamp::of(&m);
            if done.is_some() || before != after {
                view_tx.send_replace(Arc::new(view_of(&m, &counts)));
                phase_tx.send_if_modified(|p| {
                    let changed = *p != m.phase();
                    *p = m.phase();
                    changed
                });
            }
        }
    });
    (
        DrainHandle {
            tx,
            view: view_rx,
            origin,
        },
        phase_rx,
        task,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's admin endpoint table names exactly the keys `/drain/status` serves.
    #[test]
    fn the_readme_lists_every_drain_status_field() {
        let readme = include_str!("../../README.md");
        let row = readme
            .lines()
            .find(|l| l.starts_with("| `GET /drain/status` |"))
            .expect("the README documents /drain/status");
        let cell = row.split('|').nth(2).expect("a description column");
        let documented: std::collections::BTreeSet<&str> =
            cell.split('`').skip(1).step_by(2).collect();
        let status = DrainStatus {
            elapsed_ms: 0,
            pending: 0.0,
            quiet_ms: 0,
            result: None,
            state: "serving",
            terminating: false,
            timeout_ms: 0,
            trigger: None,
            open_requests: 0,
            waiting_on: Vec::new(),
        };
        let value = serde_json::to_value(&status).expect("serialisable");
        let served: std::collections::BTreeSet<&str> = value
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(documented, served);
    }

    fn cfg(timeout: Duration) -> DrainConfig {
        DrainConfig {
            min_drain: Duration::ZERO,
            quiet: Duration::from_millis(10),
            timeout,
            triton_exit_timeout: Duration::from_secs(30),
        }
    }

    /// A multi-thread runtime the test can abandon: a controller that never yields (the bug)
    /// would otherwise block the runtime's shutdown, and the test would hang instead of fail.
    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn parks_once_the_poll_channel_closes_and_still_answers() {
        let rt = runtime();
        let outcome = rt.block_on(async {
            let wakeups = Arc::new(AtomicU64::new(0));
            let (poll_tx, poll_rx) = watch::channel(Arc::new(PollState::default()));
            let (h, _phase) = spawn_counted(
                cfg(Duration::from_millis(300)),
                Instant::now(),
                poll_rx,
                wakeups.clone(),
            );
            // The poller stops (shutdown, or a crash the agent is about to report).
            drop(poll_tx);
            tokio::time::sleep(Duration::from_millis(300)).await;
            let idle = wakeups.load(Ordering::Relaxed);
            // Still answers: a drain started now ends by its timeout, with no poll to see.
            let drained = tokio::time::timeout(Duration::from_secs(3), async {
                let g = h.start(Trigger::Post).await?;
                h.wait(g).await
            })
            .await;
            (idle, drained)
        });
        rt.shutdown_background();
        let (idle, drained) = outcome;
        // Serving with nothing to do: one pass when the channel closes, then parked. The bug
        // spun here (millions of passes in 300 ms).
        assert!(idle <= 3, "{idle} wakeups in 300 ms while serving and idle");
        let c = drained
            .expect("answered within 3 s")
            .expect("controller alive");
        assert_eq!(c.result, DrainResult::Timeout);
        assert!(c.duration >= Duration::from_millis(300), "{c:?}");
    }

    #[test]
    fn timeout_fires_at_the_deadline_without_periodic_ticks() {
        let rt = runtime();
        let (wakes, c, took) = rt.block_on(async {
            let wakeups = Arc::new(AtomicU64::new(0));
            // The poller runs but has nothing new to say.
            let (_poll_tx, poll_rx) = watch::channel(Arc::new(PollState::default()));
            let (h, _phase) = spawn_counted(
                cfg(Duration::from_millis(1000)),
                Instant::now(),
                poll_rx,
                wakeups.clone(),
            );
            let t0 = Instant::now();
            let g = h.start(Trigger::Post).await.expect("alive");
            let c = tokio::time::timeout(Duration::from_secs(5), h.wait(g))
                .await
                .expect("completes")
                .expect("alive");
            (wakeups.load(Ordering::Relaxed), c, t0.elapsed())
        });
        rt.shutdown_background();
        assert_eq!(c.result, DrainResult::Timeout);
        assert!(c.duration >= Duration::from_millis(1000), "{c:?}");
        assert!(took < Duration::from_millis(1500), "{took:?}");
        // The start command and the deadline; a 50 ms tick made it about 20.
        assert!(wakes <= 4, "{wakes} wakeups for one 1 s drain");
    }

    #[tokio::test]
    async fn a_signal_during_a_hook_drain_is_published() {
        let (_poll_tx, poll_rx) = watch::channel(Arc::new(PollState::default()));
        let (h, _phase, _task) = spawn(cfg(Duration::from_secs(60)), Instant::now(), poll_rx);
        let g = h.start(Trigger::PrestopHttp).await.expect("alive");
        let mut views = h.subscribe();
        views
            .wait_for(|v| v.phase == Phase::Draining)
            .await
            .expect("alive");
        assert!(!h.view().terminating);
        // SIGTERM arrives while the preStop hook's drain runs: same drain, same phase.
        assert_eq!(h.terminate().await.expect("alive"), g);
        let seen =
            tokio::time::timeout(Duration::from_secs(2), views.wait_for(|v| v.terminating)).await;
        assert!(seen.is_ok(), "terminating never published: {:?}", h.view());
        let status: serde_json::Value =
            serde_json::from_str(&h.view().status_json(h.now())).expect("JSON");
        assert_eq!(status["terminating"], true);
        assert_eq!(status["trigger"], "prestop-http");
        // And the published view refuses what the machine refuses: cancel is 409 now.
        assert!(matches!(
            h.cancel().await,
            Ok(Err(CancelError::Terminating))
        ));
    }
}
