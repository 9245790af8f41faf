//! The poll loop: fetch → snapshot → window → derive → publish.
//!
//! It is the only writer of [`PollState`]. It polls every `--poll-interval`, and every
//! `--drain-poll-interval` while a drain is under way (the request timeout stays
//! `--scrape-timeout`). It logs one line when Triton becomes reachable and one when it stops
//! being reachable, never one per failed poll.
//!
//! Every `--stats-interval` it also reads `GET /v2/models/stats` for the online capacity
//! estimate ([`crate::capacity`]); a refusal (401/403: the API is restricted and the access
//! header is missing or wrong) shows in `triton_sidecar_statistics_refused` and one log line
//! per change.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::capacity::Estimator;
use crate::config::Config;
use crate::derive::{derive, Derived, Pushed, Window};
use crate::drain::machine::Phase;
use crate::triton::client::{ModelInfo, Reason, ScrapeError, TritonClient};
use crate::triton::snapshot::{Snapshot, TritonGpuSample};
use crate::triton::transport::{Clock, MonotonicClock, Transport};

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

/// Totals the drain's idle test uses, from the newest page.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Activity {
    /// (success, failure, exec_count) summed over models.
    pub counters: (f64, f64, f64),
    /// Pending plus backend-reported in-flight work.
    pub in_flight: f64,
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
    /// Activity totals, when the last scrape succeeded.
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

/// What the config worker has learned. `requested` holds every model asked about (or being
/// asked about); a transport error removes it so the next poll asks again.
#[derive(Debug, Default)]
struct Learn {
    /// Steps per ensemble, as its config last said. An ensemble asked again keeps its old
    /// steps until the new answer arrives, so the pod rate does not jump in between.
    steps_of: HashMap<String, Vec<String>>,
    /// Every config read: instances, batch size and GPUs for the capacity estimate and the
    /// pod's utilization. Same fetch as the ensemble steps.
    info: HashMap<String, ModelInfo>,
    /// Bumped on every change of `info`, so the poller copies it only when it changed.
    generation: u64,
    requested: HashSet<String>,
}

impl Learn {
    fn steps(&self) -> HashSet<String> {
        self.steps_of.values().flatten().cloned().collect()
    }
}

/// Reads model configs one at a time, off the poll path. Ends when the poller is dropped.
async fn learn_worker<T: Transport>(
    client: T,
    learn: Arc<std::sync::Mutex<Learn>>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    while let Some(m) = rx.recv().await {
        let r = client.model_config(&m).await;
        let mut l = match learn.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        match r {
            Ok(info) => {
                let steps = info.steps.clone();
                l.info.insert(m.clone(), info);
                l.generation += 1;
                if !steps.is_empty() {
                    tracing::info!(ensemble = %m, steps = ?steps, "ensemble found; its steps are left out of the pod request rate");
                }
                if steps.is_empty() {
                    l.steps_of.remove(&m);
                } else {
                    l.steps_of.insert(m, steps);
                }
            }
            // An HTTP error answer will not change: the model counts as client-facing and is
            // not asked about again (until it is reloaded).
            Err(e @ ScrapeError::Status(_)) => {
                tracing::debug!(model = %m, error = %e, "model config not available; counted as client-facing")
            }
            // A transport error: ask again on a later poll; until then the old answer stands.
            Err(e) => {
                tracing::debug!(model = %m, error = %e, "model config not readable yet");
                l.requested.remove(&m);
            }
        }
    }
}

/// Health probe timeouts in a row that a ready pod rides out before `/readyz` turns 503.
///
/// **Readiness hysteresis**: a probe that times out says Triton is busy, not that it is not
/// ready; at peak load one slow answer must not take the pod out of rotation. An explicit
/// "not ready" or a refused connection turns readiness off at once. The drain follows the same
/// logic: it never takes a timeout for "gone".
pub const HEALTH_TIMEOUTS_TOLERATED: u32 = 3;

/// The poller's inputs. `T` is the way to Triton and `C` the clock: the real ones in the
/// agent, simulated ones in the oracle tests.
pub struct Poller<T: Transport = TritonClient, C: Clock = MonotonicClock> {
    cfg: Config,
    client: T,
    clock: C,
    window: Window,
    steps: HashSet<String>,
    learn: Arc<std::sync::Mutex<Learn>>,
    learn_tx: tokio::sync::mpsc::UnboundedSender<String>,
    state: PollState,
    reachable: Option<bool>,
    /// The previous page had NaN/Inf samples: log the onset once, not every poll.
    non_finite_seen: bool,
    /// Models on the previous good page: one that comes back is asked for its config again.
    on_page: HashSet<String>,
    /// Health probe timeouts in a row while the verdict stayed ready.
    health_timeouts: u32,
    /// Cost models learned from `/v2/models/stats`.
    estimator: Estimator,
    /// Model configs, copied from the config worker when they change.
    info: HashMap<String, ModelInfo>,
    /// The config worker's generation `info` was copied at.
    info_generation: u64,
    /// When the statistics were last read (or tried).
    stats_at: Option<Duration>,
    /// Why the last statistics read failed, logged once per change; `None` after a good read.
    stats_problem: Option<String>,
}

impl Poller<TritonClient, MonotonicClock> {
    /// A poller for `cfg`; times are measured from `origin`. Must be called inside a Tokio
    /// runtime: it spawns the worker that reads model configs.
    pub fn new(cfg: Config, client: TritonClient, origin: Instant) -> Self {
        Self::with(cfg, client, MonotonicClock { origin })
    }
}

impl<T: Transport, C: Clock> Poller<T, C> {
    /// A poller over any transport and clock. Must be called inside a Tokio runtime.
    pub fn with(cfg: Config, client: T, clock: C) -> Self {
        let learn = Arc::new(std::sync::Mutex::new(Learn::default()));
        let (learn_tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(learn_worker(client.clone(), learn.clone(), rx));
        let window = Window::new(cfg.window);
        let mut state = PollState::default();
        for r in Reason::ALL {
            state.scrape_errors.insert(r, 0);
        }
        Poller {
            cfg,
            client,
            clock,
            window,
            steps: HashSet::new(),
            learn,
            learn_tx,
            state,
            reachable: None,
            non_finite_seen: false,
            on_page: HashSet::new(),
            health_timeouts: 0,
            estimator: Estimator::default(),
            info: HashMap::new(),
            info_generation: 0,
            stats_at: None,
            stats_problem: None,
        }
    }

    /// The state the poller would publish now.
    pub fn state(&self) -> &PollState {
        &self.state
    }

    /// Poll once and return the new state.
    pub async fn poll_once(&mut self) -> &PollState {
        let started = self.clock.now();
        // The page first, then health: the health probes open connections to Triton's HTTP
        // port, and the page should describe Triton as it is without them.
        let page = async {
            let body = self.client.metrics().await?;
            Snapshot::parse(&body).map_err(|e| ScrapeError::Parse(e.to_string()))
        }
        .await;
        // The page's time is when its body was read: the health probes that follow can take up
        // to --scrape-timeout, and rates over a 10 s window would be off by up to 10 %.
        let page_at = self.clock.now();
        let scrape_seconds = page_at.saturating_sub(started).as_secs_f64();
        let (probe, timed_out) = self.health().await;
        let health = self.settle_health(probe, timed_out);
        let mut st = self.state.clone();
        st.seq += 1;
        st.at = self.clock.now();
        st.health = health;
        st.scrape_seconds = scrape_seconds;
        st.counter_reset = false;
        match page {
            Ok(snap) => {
                self.log_reachable(true, None);
                st.triton_up = true;
                st.last_error = None;
                st.activity = Some(Activity {
                    counters: snap.activity_counters(),
                    in_flight: snap.in_flight(),
                });
                st.triton_gpu = Some(Arc::new(snap.gpu.clone()));
                if snap.non_finite > 0 && !self.non_finite_seen {
                    tracing::warn!(samples = snap.non_finite, models = ?snap.poisoned, "Triton's page carries NaN/Inf values in families the agent uses; they are ignored and the last good values kept");
                } else if snap.non_finite == 0 && self.non_finite_seen {
                    tracing::debug!("Triton's page is free of NaN/Inf again");
                }
                self.non_finite_seen = snap.non_finite > 0;
                let fresh = self.window.starts_afresh();
                let snap = Arc::new(snap);
                if self.window.push(page_at, snap.clone()) == Pushed::Reset {
                    tracing::info!(
                        models = ?self.window.last_resets(),
                        "model counters went down (Triton restarted or reloaded the model); those models start afresh"
                    );
                    st.counter_reset = true;
                }
                if fresh {
                    tracing::info!("Triton refused connections before this page (it may have restarted); every model's history starts afresh");
                    st.counter_reset = true;
                }
                let resets: Vec<String> = self.window.last_resets().to_vec();
                self.learn_steps(&snap, &resets);
            }
            Err(e) => {
                self.log_reachable(false, Some(&e));
                *st.scrape_errors.entry(e.reason()).or_insert(0) += 1;
                self.window
                    .scrape_failed(page_at, matches!(e, ScrapeError::Refused));
                st.triton_up = false;
                st.activity = None;
                st.last_error = Some(e);
            }
        }
        if st.triton_up && self.stats_due(page_at) {
            self.read_stats(page_at, &mut st).await;
        }
        st.last_page_at = self.window.latest_at();
        st.derived = derive(&self.window, page_at, &self.steps);
        crate::utilization::assess(
            &mut st.derived,
            &crate::utilization::Inputs {
                configured: &self.cfg.capacity,
                estimator: &self.estimator,
                info: &self.info,
                bls: &self.cfg.bls_models,
            },
        );
        self.state = st;
        &self.state
    }

    fn stats_due(&self, now: Duration) -> bool {
        !matches!(self.stats_at, Some(t) if now.saturating_sub(t) < self.cfg.stats_interval)
    }

    /// Read `/v2/models/stats` into the estimator. On the poll path, once per
    /// `--stats-interval` (10 s by default) and bounded by `--scrape-timeout`: one request, not
    /// one per model, so it cannot grow with the model count as config reads would.
    async fn read_stats(&mut self, now: Duration, st: &mut PollState) {
        self.stats_at = Some(now);
        let problem = match self.client.model_stats().await {
            Ok(body) => match crate::triton::stats::parse(&body) {
                Ok(stats) => {
                    let restarted = self.estimator.observe(now, &stats);
                    if !restarted.is_empty() {
                        tracing::info!(models = ?restarted, "execution statistics went down (Triton restarted or reloaded the model); the capacity estimate starts afresh for those models");
                    }
                    st.statistics_refused = false;
                    None
                }
                Err(e) => Some(e.to_string()),
            },
            Err(ScrapeError::Status(code @ (401 | 403))) => {
                st.statistics_refused = true;
                Some(format!("HTTP {code}"))
            }
            // 404 (the extension is not built in), a timeout, a refused connection: no
            // estimate from this read; a refusal flag already raised stays until a read says
            // otherwise.
            Err(e) => Some(e.to_string()),
        };
        if problem == self.stats_problem {
            return;
        }
        match (&problem, st.statistics_refused) {
            (None, _) => tracing::info!(
                "Triton's execution statistics are readable; the capacity estimate is on"
            ),
            (Some(why), true) => {
                tracing::warn!(error = %why, "Triton refuses /v2/models/stats (a restricted API): no capacity estimate. Fix: pass --triton-api-header NAME=VALUE matching Triton's --http-restricted-api (pytriton: the access token of TritonSecurityConfig, header triton-access-token), or open the statistics API, or give --capacity MODEL=RPS")
            }
            (Some(why), false) => {
                tracing::warn!(error = %why, "Triton's execution statistics are not readable; no new capacity estimate until they are")
            }
        }
        self.stats_problem = problem;
    }

    /// Apply [`HEALTH_TIMEOUTS_TOLERATED`].
    fn settle_health(&mut self, probe: Health, timed_out: bool) -> Health {
        if !timed_out {
            self.health_timeouts = 0;
            return probe;
        }
        if self.state.health.is_ready() && self.health_timeouts < HEALTH_TIMEOUTS_TOLERATED {
            self.health_timeouts += 1;
            if self.health_timeouts == 1 {
                tracing::info!(
                    "Triton's health probe timed out; staying ready unless it keeps timing out"
                );
            }
            return Health::Ready;
        }
        probe
    }

    fn log_reachable(&mut self, ok: bool, e: Option<&ScrapeError>) {
        if self.reachable == Some(ok) {
            return;
        }
        let first = self.reachable.is_none();
        self.reachable = Some(ok);
        match (ok, e) {
            (true, _) => {
                tracing::info!(url = %self.cfg.triton_metrics_url, "Triton metrics reachable")
            }
            (false, Some(e)) if first => {
                tracing::warn!(url = %self.cfg.triton_metrics_url, reason = e.reason().as_str(), error = %e, "Triton metrics not reachable yet; will keep polling")
            }
            (false, Some(e)) => {
                tracing::warn!(url = %self.cfg.triton_metrics_url, reason = e.reason().as_str(), error = %e, "Triton metrics stopped being reachable")
            }
            (false, None) => {}
        }
    }

    /// Ask, once per model load, whether it is an ensemble. A model is asked again when its
    /// counters restarted or it came back to the page: a reload may have changed its config.
    /// The answers come from a background worker: a slow or hanging config endpoint must never
    /// hold up the poll (with N models and a 1 s timeout, a poll could otherwise take N seconds).
    fn learn_steps(&mut self, snap: &Snapshot, resets: &[String]) {
        let mut l = match self.learn.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        for m in snap.models.keys() {
            let reloaded = resets.contains(m) || !self.on_page.contains(m);
            if reloaded {
                l.requested.remove(m);
            }
            if !l.requested.contains(m) {
                l.requested.insert(m.clone());
                let _ = self.learn_tx.send(m.clone());
            }
        }
        self.on_page = snap.models.keys().cloned().collect();
        let steps = l.steps();
        if steps != self.steps {
            self.steps = steps;
        }
        if l.generation != self.info_generation {
            self.info = l.info.clone();
            self.info_generation = l.generation;
        }
    }

    /// Server and required-model readiness, and whether a probe timed out (rather than
    /// answering "not ready" or being refused).
    async fn health(&self) -> (Health, bool) {
        let server = self.client.server_ready();
        let models = futures_util::future::join_all(
            self.cfg
                .require_models
                .iter()
                .map(|m| async move { (m, self.client.model_ready(m).await) }),
        );
        let (server, models) = tokio::join!(server, models);
        match server {
            Err(e) => {
                let timed_out = matches!(e, ScrapeError::Timeout);
                return (Health::Unreachable(e.to_string()), timed_out);
            }
            Ok(false) => {
                return (
                    Health::NotReady("triton not ready (/v2/health/ready)".to_string()),
                    false,
                )
            }
            Ok(true) => {}
        }
        let not_ready: Vec<&str> = models
            .iter()
            .filter(|(_, r)| !matches!(r, Ok(true)))
            .map(|(m, _)| m.as_str())
            .collect();
        if not_ready.is_empty() {
            (Health::Ready, false)
        } else {
            // Only timeouts: Triton is busy, not saying no.
            let timed_out = models
                .iter()
                .all(|(_, r)| matches!(r, Ok(true) | Err(ScrapeError::Timeout)));
            (
                Health::NotReady(format!("model not ready: {}", not_ready.join(","))),
                timed_out,
            )
        }
    }
}

/// Run the poll loop until `stop` turns true. The interval follows the drain phase.
pub async fn poll_loop<T: Transport, C: Clock>(
    mut poller: Poller<T, C>,
    tx: watch::Sender<Arc<PollState>>,
    mut drain: watch::Receiver<Phase>,
    mut stop: watch::Receiver<bool>,
) {
    let (normal, fast) = (poller.cfg.poll_interval, poller.cfg.drain.poll_interval);
    loop {
        let began = Instant::now();
        let st = poller.poll_once().await.clone();
        tx.send_replace(Arc::new(st));
        let interval = if *drain.borrow() == Phase::Draining {
            fast
        } else {
            normal
        };
        let sleep = interval.saturating_sub(began.elapsed());
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            // A drain just started: poll now, at the fast rate.
            Ok(()) = drain.changed() => {}
            _ = crate::stopped(&mut stop) => return,
        }
    }
}
