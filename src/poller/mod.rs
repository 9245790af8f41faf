//! The poll loop: fetch → snapshot → window → derive → publish, and its two workers.
//!
//! It is the only writer of [`PollState`]. It polls every `--poll-interval`, and every
//! `--drain-poll-interval` while a drain is under way (the request timeout stays
//! `--scrape-timeout`). It logs one line when Triton becomes reachable and one when it stops
//! being reachable, never one per failed poll. A poll never waits on anything but the page, the
//! health probes and, while draining, the socket table:
//!
//! - [`config_worker`] reads model configs (ensemble steps, instances, batch sizes, GPUs);
//! - [`stats_worker`] reads `GET /v2/models/stats` every `--stats-interval` for the online
//!   capacity estimate ([`crate::derive::capacity`]); past `--stats-max-age` after the last good
//!   read the estimate is no longer published;
//! - [`health`]: the health probes and their hysteresis.

mod config_worker;
mod health;
mod stats_worker;

pub use health::HEALTH_TIMEOUTS_TOLERATED;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::derive::activity::Activity;
use crate::derive::capacity::Estimator;
use crate::derive::{derive, utilization, Context, Pushed, Window};
use crate::state::{Phase, PollState};
use crate::triton::client::{Reason, ScrapeError, TritonClient};
use crate::triton::connections::{self, ConnectionView};
use crate::triton::model_config::ModelInfo;
use crate::triton::snapshot::Snapshot;
use crate::triton::stats::StatsFailure;
use crate::triton::transport::{Clock, MonotonicClock, Transport};
use config_worker::{config_worker, ConfigAsks, EnsembleSteps, Learned};
use stats_worker::Statistics;

/// What the poll loop and its workers need, assembled from the command line by `config`.
#[derive(Debug, Clone)]
pub struct PollerConfig {
    /// Triton's metrics page, named in the reachability log lines.
    pub triton_metrics_url: String,
    /// Poll interval while serving (`--poll-interval`).
    pub poll_interval: Duration,
    /// Poll interval while a drain is under way (`--drain-poll-interval`).
    pub drain_poll_interval: Duration,
    /// The sliding window (`--window`).
    pub window: Duration,
    /// Models that must be ready (`--require-model`).
    pub require_models: Vec<String>,
    /// Capacity per model, requests per second per pod (`--capacity`).
    pub capacity: BTreeMap<String, f64>,
    /// How often `/v2/models/stats` is read (`--stats-interval`).
    pub stats_interval: Duration,
    /// How long an estimate outlives the last good statistics read (`--stats-max-age`).
    pub stats_max_age: Duration,
    /// The capacity estimate's drift horizon (`--capacity-horizon`).
    pub capacity_horizon: Duration,
    /// BLS models, left out of the pod utilization (`--bls-model`).
    pub bls_models: BTreeSet<String>,
    /// Triton's inference ports whose client connections the drain watches: the port of
    /// `--triton-url` (HTTP) and `--triton-grpc-port` (unless 0).
    pub connection_ports: Vec<(u16, connections::Protocol)>,
}

/// The poller's inputs. `T` is the way to Triton and `C` the clock: the real ones in the
/// agent, simulated ones in the oracle tests.
pub struct Poller<T: Transport = TritonClient, C: Clock = MonotonicClock> {
    cfg: PollerConfig,
    client: T,
    clock: C,
    window: Window,
    /// The ensemble steps in use, taken from `learned_rx` at each good page.
    steps: EnsembleSteps,
    /// What the config worker last published.
    learned_rx: watch::Receiver<Learned>,
    /// The models whose configs the worker should read; see [`ConfigAsks`].
    config_asks: watch::Sender<ConfigAsks>,
    /// The next load generation to hand out; see [`ConfigAsks`].
    next_generation: u64,
    /// The config worker. It ends only when the poller is dropped; [`poll_loop`] stops (and the
    /// agent exits) if it ends before, rather than keep a step set that can no longer change.
    /// Aborted when the poller is dropped: a worker must not outlive the agent's exit and keep
    /// asking Triton (a config worker part-way through many models would go on for seconds).
    config_worker: AbortOnDropHandle<()>,
    state: PollState,
    reachable: Option<bool>,
    /// The previous page had NaN/Inf samples: log the onset once, not every poll.
    non_finite_seen: bool,
    /// Health probe timeouts in a row while the verdict stayed ready.
    health_timeouts: u32,
    /// Cost models learned from `/v2/models/stats`.
    estimator: Estimator,
    /// Model configs, as the config worker last published them.
    info: Arc<HashMap<String, ModelInfo>>,
    /// The statistics worker and what its reads mean (see [`stats_worker`]).
    stats: Statistics,
    /// Read Triton's connections on each poll: set by [`poll_loop`] while a drain is under way.
    watch_connections: bool,
    /// Why the last connection read failed, logged once per change.
    connections_problem: Option<String>,
}

impl Poller<TritonClient, MonotonicClock> {
    /// A poller for `cfg`; times are measured from `origin`. Must be called inside a Tokio
    /// runtime: it spawns the worker that reads model configs.
    pub fn new(cfg: PollerConfig, client: TritonClient, origin: Instant) -> Self {
        Self::with(cfg, client, MonotonicClock { origin })
    }
}

impl<T: Transport, C: Clock> Poller<T, C> {
    /// A poller over any transport and clock. Must be called inside a Tokio runtime.
    pub fn with(cfg: PollerConfig, client: T, clock: C) -> Self {
        let (config_asks, asks) = watch::channel(ConfigAsks::default());
        let (learned_tx, learned_rx) = watch::channel(Learned::default());
        let config_worker = AbortOnDropHandle::new(tokio::spawn(config_worker(
            client.clone(),
            asks,
            learned_tx,
        )));
        let window = Window::new(cfg.window);
        let mut state = PollState::default();
        for r in Reason::ALL {
            state.scrape_errors.insert(r, 0);
        }
        for r in StatsFailure::ALL {
            state.statistics_errors.insert(r, 0);
        }
        let estimator = Estimator::new(cfg.capacity_horizon);
        let stats = Statistics::spawn(client.clone(), cfg.stats_interval, cfg.stats_max_age);
        Poller {
            cfg,
            client,
            clock,
            window,
            steps: EnsembleSteps::default(),
            learned_rx,
            config_asks,
            next_generation: 0,
            config_worker,
            state,
            reachable: None,
            non_finite_seen: false,
            health_timeouts: 0,
            estimator,
            info: Arc::default(),
            stats,
            watch_connections: false,
            connections_problem: None,
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
            Ok(Snapshot::parse(&body)?)
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
                st.activity = Some(Activity::of_page(&snap));
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
                self.ask_for_configs(&snap, &resets);
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
        // The read asked for by an earlier poll, then a new ask: the poll never waits on it.
        self.stats.take(&mut self.estimator, &mut st);
        if st.triton_up {
            self.stats.ask_if_due(page_at);
        }
        st.connections = if self.watch_connections && st.triton_up {
            self.read_connections(&mut st).await
        } else {
            None
        };
        st.last_page_at = self.window.latest_at();
        let capacity = utilization::Inputs {
            configured: &self.cfg.capacity,
            estimator: &self.estimator,
            info: &self.info,
            bls: &self.cfg.bls_models,
            estimate_fresh: self.stats.estimate_fresh(page_at, st.statistics_read_at),
        };
        let ctx = Context {
            steps: &self.steps,
            capacity: Some(capacity),
        };
        st.derived = derive(&self.window, page_at, &ctx);
        for m in st.derived.models.values() {
            if m.compute_ms.is_finite() && m.compute_ms > 0.0 {
                let d = Duration::from_secs_f64((m.compute_ms / 1000.0).min(86_400.0));
                st.longest_execution = st.longest_execution.max(d);
            }
        }
        self.state = st;
        &self.state
    }

    /// One read of the kernel's socket table, off the runtime (a netlink round trip). A failure
    /// is counted and logged once per change; the drain then goes by Triton's counters alone.
    async fn read_connections(&mut self, st: &mut PollState) -> Option<ConnectionView> {
        if self.cfg.connection_ports.is_empty() {
            return None;
        }
        let ports = self.cfg.connection_ports.clone();
        let read = tokio::task::spawn_blocking(move || {
            let own = connections::own_socket_inodes();
            connections::scan().map(|samples| connections::classify(&samples, &ports, &own))
        })
        .await;
        let problem = match read {
            Ok(Ok(view)) => {
                if self.connections_problem.take().is_some() {
                    tracing::info!("Triton's connections can be read again");
                }
                return Some(view);
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("the connection read stopped: {e}"),
        };
        st.connection_scan_errors += 1;
        if self.connections_problem.as_deref() != Some(problem.as_str()) {
            tracing::warn!(error = %problem, "cannot read Triton's connections: the drain cannot see requests that execute without moving a counter");
            self.connections_problem = Some(problem);
        }
        None
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
    fn ask_for_configs(&mut self, snap: &Snapshot, resets: &[String]) {
        let next_generation = &mut self.next_generation;
        self.config_asks.send_modify(|asks| {
            let reloaded = |m: &String| resets.contains(m) || !asks.contains_key(m);
            let same = asks.len() == snap.models.len() && !snap.models.keys().any(reloaded);
            // Unchanged, the value is left as it is; the send still wakes the worker, which asks
            // again about a config it could not read.
            if !same {
                let models: BTreeMap<String, u64> = snap
                    .models
                    .keys()
                    .map(|m| {
                        let generation = match asks.get(m) {
                            Some(&g) if !resets.contains(m) => g,
                            _ => {
                                *next_generation += 1;
                                *next_generation
                            }
                        };
                        (m.clone(), generation)
                    })
                    .collect();
                *asks = Arc::new(models);
            }
        });
        // `Err`: the worker has ended (it never does while the poller lives); its last answer
        // still stands.
        if self.learned_rx.has_changed().unwrap_or(true) {
            let learned = self.learned_rx.borrow_and_update().clone();
            self.steps = learned.steps;
            self.info = learned.info;
        }
    }
}

/// Run the poll loop until `shutdown` is cancelled, also in the middle of a poll: a Triton that
/// never answers must not hold the agent's exit for the length of its timeouts (up to three
/// `--scrape-timeout`s: the page, then the health probes). The interval follows the drain phase.
pub async fn poll_loop<T: Transport, C: Clock>(
    mut poller: Poller<T, C>,
    tx: watch::Sender<Arc<PollState>>,
    mut drain: watch::Receiver<Phase>,
    shutdown: CancellationToken,
) {
    let (normal, fast) = (poller.cfg.poll_interval, poller.cfg.drain_poll_interval);
    loop {
        let began = Instant::now();
        // Only a drain needs to know what executes; serving polls stay as cheap as before.
        poller.watch_connections = *drain.borrow() == Phase::Draining;
        // A poll dropped half-way leaves nothing behind: the agent is stopping, and the state
        // a poll builds is published only when it completes.
        let st = tokio::select! {
            st = poller.poll_once() => st.clone(),
            _ = shutdown.cancelled() => return,
        };
        tx.send_replace(Arc::new(st));
        for (task, finished) in [
            ("model config worker", poller.config_worker.is_finished()),
            ("statistics worker", poller.stats.worker_finished()),
        ] {
            if finished {
                // The supervisor sees the poller end and exits; this line says why.
                tracing::error!(task, "internal task stopped unexpectedly");
                return;
            }
        }
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
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Mutex;

    type Answer = Result<Vec<String>, ScrapeError>;

    /// A Triton with one page and scripted config answers: model → answers in turn (the last
    /// repeats); every config request is counted.
    #[derive(Clone, Default)]
    struct Configs {
        /// Per model, its answers in turn; the last one repeats.
        answers: Arc<Mutex<HashMap<String, Vec<Answer>>>>,
        /// Every config request, in order.
        asked: Arc<Mutex<Vec<String>>>,
    }

    impl Transport for Configs {
        async fn metrics(&self) -> Result<String, ScrapeError> {
            Ok(
                "nv_inference_request_success{model=\"ens\",version=\"1\"} 1\n\
                nv_inference_request_success{model=\"a\",version=\"1\"} 1\n"
                    .to_owned(),
            )
        }
        async fn server_ready(&self) -> Result<bool, ScrapeError> {
            Ok(true)
        }
        async fn model_ready(&self, _: &str) -> Result<bool, ScrapeError> {
            Ok(true)
        }
        async fn model_config(&self, m: &str) -> Result<ModelInfo, ScrapeError> {
            self.asked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(m.to_owned());
            let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
            let queue = answers.entry(m.to_owned()).or_default();
            let steps = match queue.len() {
                0 => Ok(Vec::new()),
                1 => queue[0].clone(),
                _ => queue.remove(0),
            }?;
            Ok(ModelInfo {
                ensemble: !steps.is_empty(),
                steps,
                ..ModelInfo::default()
            })
        }
    }

    impl Configs {
        fn asked(&self, m: &str) -> usize {
            let asked = self.asked.lock().unwrap_or_else(|p| p.into_inner());
            asked.iter().filter(|x| *x == m).count()
        }
    }

    /// Polls `n` times, letting the config worker run between polls.
    async fn polls(p: &mut Poller<Configs, MonotonicClock>, n: usize) {
        for _ in 0..n {
            p.poll_once().await;
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
        }
    }

    #[tokio::test]
    async fn a_config_is_asked_once_per_load_and_again_after_a_transport_error() {
        let t = Configs::default();
        t.answers.lock().unwrap_or_else(|p| p.into_inner()).extend([
            (
                "ens".to_owned(),
                vec![Err(ScrapeError::Timeout), Ok(vec!["a".to_owned()])],
            ),
            ("a".to_owned(), vec![Err(ScrapeError::Status(404))]),
        ]);
        let clock = MonotonicClock {
            origin: Instant::now(),
        };
        let cfg = PollerConfig {
            triton_metrics_url: "http://127.0.0.1:9/metrics".to_owned(),
            poll_interval: Duration::from_secs(1),
            drain_poll_interval: Duration::from_millis(200),
            window: Duration::from_secs(10),
            require_models: Vec::new(),
            capacity: BTreeMap::new(),
            stats_interval: Duration::from_secs(10),
            stats_max_age: Duration::from_secs(30),
            capacity_horizon: Duration::from_secs(300),
            bls_models: BTreeSet::new(),
            connection_ports: Vec::new(),
        };
        let mut p = Poller::with(cfg, t.clone(), clock);
        polls(&mut p, 1).await;
        // The first answer for ens timed out: asked again at the next page, then learned.
        assert_eq!(t.asked("ens"), 1);
        assert!(p.steps.is_empty());
        polls(&mut p, 3).await;
        assert_eq!(t.asked("ens"), 2);
        assert_eq!(*p.steps, HashSet::from(["a".to_owned()]));
        // An HTTP error is an answer: a is not asked again while it stays loaded.
        assert_eq!(t.asked("a"), 1);
    }
}
