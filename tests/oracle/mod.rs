//! The request-level oracle: a seeded trace generator ([`gen`]), a simulation of Triton 2.51's
//! scheduler and counters that renders the pages a poller would read ([`sim`]), the ground truth
//! from the requests themselves and the check of published gauges against it ([`truth`]), and a
//! driver that runs the production [`Poller`] over a simulated Triton and clock.
//!
//! Used by `tests/oracle_gauges.rs` and by `examples/oracle.rs` (trace and render for the
//! real-Triton replay, `tests/e2e/test_replay.py`).

pub mod gen;
pub mod sim;
pub mod truth;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sim::{Net, Sim};
use triton_sidecar::config::Config;
use triton_sidecar::poller::Poller;
use triton_sidecar::state::PollState;
use triton_sidecar::triton::client::ScrapeError;
use triton_sidecar::triton::model_config::ModelInfo;
use triton_sidecar::triton::transport::{Clock, Transport};
use truth::{ModelGauges, Observed, PodGauges};

/// The simulated clock (seconds), moved by the driver and by the simulated network.
#[derive(Clone, Default)]
pub struct SimClock(Arc<Mutex<f64>>);

impl SimClock {
    /// Set the clock (s).
    pub fn set_secs(&self, t: f64) {
        self.set(t)
    }
    fn set(&self, t: f64) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = t;
    }
    fn add(&self, dt: f64) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) += dt;
    }
    fn get(&self) -> f64 {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Clock for SimClock {
    fn now(&self) -> Duration {
        Duration::from_secs_f64(self.get().max(0.0))
    }
}

/// A Triton whose answers come from a simulation, poll by poll.
#[derive(Clone)]
pub struct SimTriton {
    sim: Arc<Sim>,
    clock: SimClock,
    /// Index of the poll attempt under way.
    poll: Arc<Mutex<usize>>,
    /// Statistics reads that fail: (first poll, last poll, the error), inclusive.
    stats_faults: Arc<Vec<(usize, usize, ScrapeError)>>,
}

impl SimTriton {
    fn plan(&self) -> (f64, Net) {
        let k = *self.poll.lock().unwrap_or_else(|p| p.into_inner());
        self.sim.trace.polls[k]
    }
}

impl Transport for SimTriton {
    async fn metrics(&self) -> Result<String, ScrapeError> {
        let (t, net) = self.plan();
        let tr = &self.sim.trace;
        match net {
            _ if !tr.up(t) => Err(ScrapeError::Refused),
            Net::Refused => Err(ScrapeError::Refused),
            Net::Timeout => {
                self.clock.add(tr.scrape_timeout);
                Err(ScrapeError::Timeout)
            }
            Net::Ok { latency, .. } | Net::HealthTimeout { latency } => {
                let at = t + latency;
                if !tr.up(at) {
                    return Err(ScrapeError::Refused);
                }
                self.clock.set(at);
                Ok(self.sim.page(at))
            }
        }
    }

    async fn server_ready(&self) -> Result<bool, ScrapeError> {
        let (_, net) = self.plan();
        let tr = &self.sim.trace;
        match net {
            Net::Ok { health, .. } => {
                self.clock.add(health);
            }
            Net::HealthTimeout { .. } => {
                self.clock.add(tr.scrape_timeout);
                return Err(ScrapeError::Timeout);
            }
            _ => {}
        }
        if tr.up(self.clock.get()) {
            Ok(true)
        } else {
            Err(ScrapeError::Refused)
        }
    }

    async fn model_ready(&self, _model: &str) -> Result<bool, ScrapeError> {
        Ok(true)
    }

    async fn model_config(&self, model: &str) -> Result<ModelInfo, ScrapeError> {
        let tr = &self.sim.trace;
        match tr.models.iter().position(|m| m.name == model) {
            Some(i) => {
                let spec = &tr.models[i];
                let steps = tr.steps_of(i);
                Ok(ModelInfo {
                    ensemble: matches!(spec.kind, sim::Kind::Ensemble(_)),
                    steps,
                    instances: u32::try_from(spec.instances).ok(),
                    max_batch_size: u32::try_from(spec.max_batch).unwrap_or(0),
                    largest_preferred_batch: None,
                    gpus: None,
                })
            }
            None => Err(ScrapeError::Status(404)),
        }
    }

    /// Read by the statistics worker in the yield after the poll that asked for it: the clock is
    /// then that poll's page time plus its health probes (a timeout's `clock.add` runs between
    /// polls, and the driver sets the next poll's time itself).
    async fn model_stats(&self) -> Result<Vec<u8>, ScrapeError> {
        let k = *self.poll.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, _, e)) = self
            .stats_faults
            .iter()
            .find(|(a, b, _)| (*a..=*b).contains(&k))
        {
            if matches!(e, ScrapeError::Timeout) {
                self.clock.add(self.sim.trace.scrape_timeout);
            }
            return Err(e.clone());
        }
        let t = self.clock.get();
        if self.sim.trace.up(t) {
            Ok(self.sim.stats_json(t).into_bytes())
        } else {
            Err(ScrapeError::Refused)
        }
    }
}

/// What the published state says, in the oracle's terms.
pub fn observe(st: &PollState) -> Observed {
    let d = &st.derived;
    Observed {
        models: d
            .models
            .iter()
            .map(|(n, m)| {
                (
                    n.clone(),
                    ModelGauges {
                        queue_wait_ms: m.queue_wait_ms,
                        pending: m.pending,
                        request_rate: m.request_rate,
                        failure_rate: m.failure_rate,
                        compute_ms: m.compute_ms,
                        offered_load: m.offered_load_rps,
                        capacity: m.capacity.map(|c| c.rps),
                        utilization: m.utilization,
                    },
                )
            })
            .collect(),
        pod: d.present.then_some(PodGauges {
            queue_wait_ms: d.pod.queue_wait_ms,
            pending: d.pod.pending,
            request_rate: d.pod.request_rate,
            offered_load: d.pod.offered_load_rps,
            utilization: d.pod.utilization,
        }),
        last_good_age: st
            .last_page_at
            .map(|p| st.at.saturating_sub(p).as_secs_f64()),
    }
}

/// Run the production poller over the simulated Triton; one observation and one poll state per
/// attempt.
pub async fn drive(sim: Arc<Sim>) -> (Vec<Observed>, Vec<PollState>) {
    drive_with_stats_faults(sim, Vec::new(), None).await
}

/// [`drive`], with the statistics reads of some polls failing (first poll, last poll, error)
/// and `--stats-max-age` set (default: the agent's).
pub async fn drive_with_stats_faults(
    sim: Arc<Sim>,
    stats_faults: Vec<(usize, usize, ScrapeError)>,
    stats_max_age: Option<Duration>,
) -> (Vec<Observed>, Vec<PollState>) {
    let tr = &sim.trace;
    let mut cfg = Config::for_tests("http://127.0.0.1:9");
    cfg.poller.poll_interval = Duration::from_secs_f64(tr.poll_interval);
    cfg.poller.window = Duration::from_secs_f64(tr.window);
    cfg.client.timeout = Duration::from_secs_f64(tr.scrape_timeout);
    // The statistics on every poll, so the estimate follows the trace closely.
    cfg.poller.stats_interval = cfg.poller.poll_interval;
    if let Some(age) = stats_max_age {
        cfg.poller.stats_max_age = age;
    }
    let clock = SimClock::default();
    let triton = SimTriton {
        sim: sim.clone(),
        clock: clock.clone(),
        poll: Arc::new(Mutex::new(0)),
        stats_faults: Arc::new(stats_faults),
    };
    let mut poller = Poller::with(cfg.poller, triton.clone(), clock.clone());
    let mut obs = Vec::with_capacity(tr.polls.len());
    let mut states = Vec::with_capacity(tr.polls.len());
    for (k, (t, _)) in tr.polls.iter().enumerate() {
        *triton.poll.lock().unwrap_or_else(|p| p.into_inner()) = k;
        clock.set(*t);
        let st = poller.poll_once().await.clone();
        obs.push(observe(&st));
        states.push(st);
        // Let the config worker answer before the next poll (a real one answers in ms).
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
    }
    (obs, states)
}

/// Simulate, drive and check one trace.
pub fn run_and_check(trace: sim::Trace) -> Result<(), String> {
    let sim = Arc::new(trace.simulate());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| e.to_string())?;
    let (obs, _) = rt.block_on(drive(sim.clone()));
    truth::check(&sim, &obs)
}

/// Names of the models that are ensemble steps in `sim`.
pub fn step_names(sim: &Sim) -> HashSet<String> {
    sim.trace
        .models
        .iter()
        .enumerate()
        .flat_map(|(i, _)| sim.trace.steps_of(i))
        .collect()
}
