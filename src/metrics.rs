//! The agent's own metrics: a prometheus-client registry filled from the published state.
//!
//! [`Metrics::render`] is called by the publisher whenever the poll state, the drain view or
//! the GPU state changes. It sets every family from those immutable values and encodes the page
//! once; the `/metrics` handler then serves the cached bytes. So a scrape never sees a
//! half-updated registry and never does any work beyond copying a buffer.
//!
//! Counter families are registered under their base names: prometheus-client appends `_total`
//! itself, and panics in debug builds if the name already ends in `_total`.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::derive::capacity::Basis;
use crate::derive::utilization::CapacitySource;
use crate::derive::{clean, ModelDerived, PodDerived};
use crate::drain::controller::DrainView;
use crate::gpu::{GpuReading, GpuSource, GpuState};
use crate::state::Phase;
use crate::state::{readiness, PollState};
use crate::triton::client::Reason;
use crate::triton::stats::StatsFailure;

/// The Content-Type of the page: Prometheus text 0.0.4. Prometheus 3 fails scrapes without a
/// valid one.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// One float gauge series.
type FloatGauge = Gauge<f64, AtomicU64>;
type Labels = Vec<(&'static str, String)>;
/// A family of float gauges keyed by label set.
type FloatGaugeFamily = Family<Labels, FloatGauge>;

/// One per-model gauge: its family, its help, and its value for a model (`None`: the model has
/// no such series now). **A per-model gauge is added here, and only here**: registration,
/// handles, setting and removal all iterate this table. `triton_capacity_rps` and
/// `triton_capacity_largest_batch` are the two exceptions, kept beside it in [`ModelFamilies`]:
/// the capacity's label set changes with its source and basis.
struct ModelGauge {
    name: &'static str,
    help: &'static str,
    value: fn(&ModelDerived) -> Option<f64>,
}

const MODEL_GAUGES: [ModelGauge; 9] = [
    ModelGauge {
        name: "triton_queue_wait_ms",
        help: "Mean queue wait (ms) of the requests completed in the window, per model",
        value: |m| Some(m.queue_wait_ms),
    },
    ModelGauge {
        name: "triton_pending_requests",
        help: "Requests waiting in the queue now, per model (Triton's pending count plus TensorRT-LLM waiting and vLLM num_requests_waiting)",
        value: |m| Some(m.pending),
    },
    ModelGauge {
        name: "triton_request_rate",
        help: "Successful requests per second over the window, per model",
        value: |m| Some(m.request_rate),
    },
    ModelGauge {
        name: "triton_failure_rate",
        help: "Failed requests per second over the window, per model",
        value: |m| Some(m.failure_rate),
    },
    ModelGauge {
        name: "triton_compute_ms",
        help: "Mean compute time (ms) per request over the window, per model",
        value: |m| Some(m.compute_ms),
    },
    ModelGauge {
        name: "triton_offered_load_rps",
        help: "Arrivals per second over the window, per model: completed + failed + change in pending; not capped at capacity",
        value: |m| Some(m.offered_load_rps),
    },
    ModelGauge {
        name: "triton_utilization",
        help: "Offered load over capacity, per model; keeps rising past 1 under overload; 0 when idle (nothing arrived, completed, iterated, waits or runs, from the model's second page on), with or without a capacity; otherwise absent without a capacity",
        value: |m| m.utilization,
    },
    ModelGauge {
        name: "triton_kv_cache_occupancy_ratio",
        help: "TensorRT-LLM KV-cache occupancy, 0 to 1 (fraction, else used over max blocks), per model",
        value: |m| m.kv_occupancy,
    },
    ModelGauge {
        name: "triton_trtllm_active_ratio",
        help: "TensorRT-LLM active over max requests of the in-flight batcher, per model",
        value: |m| m.active_ratio,
    },
];

/// The per-model families: one per [`MODEL_GAUGES`] entry, in its order, and the capacity's two.
struct ModelFamilies {
    /// Parallel to [`MODEL_GAUGES`].
    gauges: Vec<FloatGaugeFamily>,
    /// `triton_capacity_rps{model,source,basis}`; absent without a capacity.
    capacity: FloatGaugeFamily,
    /// `triton_capacity_largest_batch`; absent without an estimated capacity.
    largest_batch: FloatGaugeFamily,
}

impl ModelFamilies {
    /// Register every per-model family.
    fn register(r: &mut Registry) -> Self {
        let mut family = |name: &str, help: &str| {
            let f = FloatGaugeFamily::default();
            r.register(name, help, f.clone());
            f
        };
        ModelFamilies {
            gauges: MODEL_GAUGES.iter().map(|g| family(g.name, g.help)).collect(),
            capacity: family(
                "triton_capacity_rps",
                "Requests per second the pod can serve, per model; source=configured (--capacity) or estimated (from /v2/models/stats, absent past --stats-max-age); basis=configured, fitted (batching gain measured) or proportional (none assumed); absent when neither",
            ),
            largest_batch: family(
                "triton_capacity_largest_batch",
                "Largest batch size executed since the model loaded, per model with an estimated capacity: the estimate is capped at it",
            ),
        }
    }

    /// Remove the model's series from every family.
    fn remove(&self, model: &str) {
        let l = lbl("model", model);
        for f in self.gauges.iter().chain([&self.largest_batch]) {
            f.remove(&l);
        }
        for (src, basis) in CAPACITY_KEYS {
            self.capacity.remove(&capacity_labels(model, src, basis));
        }
    }
}

/// Every (source, basis) a capacity series can carry.
const CAPACITY_KEYS: [(CapacitySource, Basis); 3] = [
    (CapacitySource::Configured, Basis::Configured),
    (CapacitySource::Estimated, Basis::Fitted),
    (CapacitySource::Estimated, Basis::Proportional),
];

fn capacity_labels(model: &str, src: CapacitySource, basis: Basis) -> Labels {
    vec![
        ("model", model.to_string()),
        ("source", src.as_str().to_string()),
        ("basis", basis.as_str().to_string()),
    ]
}

/// One model's gauge handles, shared with their [`ModelFamilies`] series. Looking a label set up
/// in a family hashes it; doing that for every series every poll was a third of the poll cycle
/// at 100 models (callgrind), so a handle is made when its series appears and kept.
struct ModelGauges {
    /// Parallel to [`MODEL_GAUGES`].
    series: Vec<Series>,
    /// `triton_capacity_largest_batch`: an estimate can lose its largest batch without
    /// changing its basis, so it is a series of its own.
    largest_batch: Series,
    /// The model name, for creating and removing series.
    model: String,
    /// The (source, basis) of the capacity series now published, to remove it when it changes.
    capacity_key: Option<(CapacitySource, Basis)>,
}

impl ModelGauges {
    /// A new model's handles, none published yet.
    fn new(model: &str) -> Self {
        ModelGauges {
            series: (0..MODEL_GAUGES.len()).map(|_| Series::default()).collect(),
            largest_batch: Series::default(),
            model: model.to_string(),
            capacity_key: None,
        }
    }

    /// Set every gauge from the model's derived values.
    fn set(&mut self, m: &ModelDerived, f: &ModelFamilies) {
        let labels = || lbl("model", &self.model);
        for ((spec, family), series) in MODEL_GAUGES
            .iter()
            .zip(&f.gauges)
            .zip(self.series.iter_mut())
        {
            series.set(family, labels, (spec.value)(m));
        }
        // The capacity is absent for most models: a label lookup only for the models that have
        // one, or just lost it.
        let key = m.capacity.map(|c| (c.source, c.basis));
        if let Some((src, basis)) = self.capacity_key.filter(|o| Some(*o) != key) {
            f.capacity.remove(&capacity_labels(&self.model, src, basis));
        }
        if let Some(c) = m.capacity {
            f.capacity
                .get_or_create(&capacity_labels(&self.model, c.source, c.basis))
                .set(clean(c.rps));
        }
        let largest_batch = m.capacity.and_then(|c| c.largest_batch).map(|b| b as f64);
        self.largest_batch
            .set(&f.largest_batch, labels, largest_batch);
        self.capacity_key = key;
    }
}

/// One pod gauge (a family with no labels, so it can be absent): its value from the pod's
/// derived values, `None` where it is absent. Every pod gauge is absent while no page is held:
/// a 0 would read as "idle" to an autoscaler. **A pod gauge is added here, and only here.**
struct PodGauge {
    name: &'static str,
    help: &'static str,
    value: fn(&PodDerived) -> Option<f64>,
}

const POD_GAUGES: [PodGauge; 6] = [
    PodGauge {
        name: "triton_pod_queue_wait_ms",
        help: "Queue wait (ms) a client sees: queue time of every model (ensemble steps included) per client-facing request completed in the window, or the longest stall",
        value: |p| Some(p.queue_wait_ms),
    },
    PodGauge {
        name: "triton_pod_pending_requests",
        help: "Requests waiting now, summed over all models",
        value: |p| Some(p.pending),
    },
    PodGauge {
        name: "triton_pod_request_rate",
        help: "Client-facing successful requests per second, summed over models (ensemble steps left out)",
        value: |p| Some(p.request_rate),
    },
    PodGauge {
        name: "triton_pod_offered_load_rps",
        help: "Client-facing arrivals per second, summed over models (ensemble steps left out)",
        value: |p| Some(p.offered_load_rps),
    },
    PodGauge {
        name: "triton_pod_utilization",
        help: "The pod's utilization for the autoscaler: per GPU the sum of its models' utilizations (ensembles and --bls-model left out, unplaced models on every GPU), the max over GPUs; 0 when every counted model is idle; absent when no counted model is idle or has a capacity",
        value: |p| p.utilization,
    },
    PodGauge {
        name: "triton_sidecar_models_without_capacity",
        help: "Models counted in the pod utilization that have no capacity (neither --capacity nor an estimate)",
        value: |p| Some(p.models_without_capacity),
    },
];

/// One GPU gauge, labelled `gpu_uuid` and `gpu_name`: its value from a reading, `None` (or a
/// value that is not finite and non-negative) where it is absent. **Added here, and only here.**
struct GpuGauge {
    name: &'static str,
    help: &'static str,
    value: fn(&GpuReading) -> Option<f64>,
}

const GPU_GAUGES: [GpuGauge; 6] = [
    GpuGauge {
        name: "triton_gpu_utilization_ratio",
        help: "GPU utilization, 0 to 1",
        value: |g| g.utilization_ratio,
    },
    GpuGauge {
        name: "triton_gpu_memory_used_bytes",
        help: "GPU memory used, bytes",
        value: |g| g.memory_used_bytes,
    },
    GpuGauge {
        name: "triton_gpu_memory_total_bytes",
        help: "GPU memory total, bytes",
        value: |g| g.memory_total_bytes,
    },
    GpuGauge {
        name: "triton_gpu_memory_used_ratio",
        help: "GPU memory used over total, 0 to 1",
        value: |g| match (g.memory_used_bytes, g.memory_total_bytes) {
            (Some(u), Some(t)) if t > 0.0 => Some(u / t),
            _ => None,
        },
    },
    GpuGauge {
        name: "triton_gpu_power_watts",
        help: "GPU power draw, watts",
        value: |g| g.power_watts,
    },
    GpuGauge {
        name: "triton_gpu_temperature_celsius",
        help: "GPU temperature, degrees Celsius",
        value: |g| g.temperature_celsius,
    },
];

/// What the agent's own unlabelled gauges read: every producer's published state, and now.
struct Sources<'a> {
    poll: &'a PollState,
    drain: &'a DrainView,
    gpu: &'a GpuState,
    /// On the agent's monotonic axis; dates the drain-elapsed gauge.
    now: Duration,
}

/// One gauge with no labels, about the agent, Triton or a drain: its value from the sources,
/// `None` where it is absent. **Added here, and only here.**
struct AgentGauge {
    name: &'static str,
    help: &'static str,
    value: fn(&Sources<'_>) -> Option<f64>,
}

fn flag(on: bool) -> Option<f64> {
    Some(if on { 1.0 } else { 0.0 })
}

const AGENT_GAUGES: [AgentGauge; 12] = [
    AgentGauge {
        name: "triton_ready",
        help: "1 when Triton is ready, every required model is ready and no drain is under way",
        value: |s| flag(readiness(s.poll, s.drain.phase).0),
    },
    AgentGauge {
        name: "triton_up",
        help: "1 when the last scrape of Triton's metrics succeeded",
        value: |s| flag(s.poll.triton_up),
    },
    AgentGauge {
        name: "triton_draining",
        help: "1 while a drain is under way or done",
        value: |s| flag(s.drain.phase != Phase::Serving),
    },
    AgentGauge {
        name: "triton_sidecar_scrape_duration_seconds",
        help: "Duration of the last scrape of Triton",
        value: |s| Some(s.poll.scrape_seconds),
    },
    AgentGauge {
        name: "triton_sidecar_drain_seconds",
        help: "Length of the last completed drain, seconds",
        value: |s| Some(s.drain.last.map_or(0.0, |c| c.duration.as_secs_f64())),
    },
    // The drain-timeout alert needs a signal Prometheus scrapes while the pod is still alive:
    // the drain counters only appear once a drain has ended, and a drain on pod termination ends
    // about a second before the agent exits, too late for any scrape. Only a drain under way
    // counts: a drained pod stays drained (a manual drain) or exits within a second, and holding
    // the last value would keep a near-timeout alert firing.
    AgentGauge {
        name: "triton_sidecar_drain_elapsed_seconds",
        help: "Seconds since the drain under way began; 0 when none is (serving, or drained)",
        value: |s| {
            let elapsed = match (s.drain.phase, s.drain.started) {
                (Phase::Draining, Some(started)) => s.now.saturating_sub(started),
                _ => Duration::ZERO,
            };
            Some(elapsed.as_secs_f64())
        },
    },
    AgentGauge {
        name: "triton_sidecar_drain_timeout_seconds",
        help: "The configured --drain-timeout, seconds",
        value: |s| Some(s.drain.config.timeout.as_secs_f64()),
    },
    AgentGauge {
        name: "triton_sidecar_statistics_refused",
        help: "1 while Triton refuses /v2/models/stats (401/403: a restricted API without the right --triton-api-header), else 0",
        value: |s| flag(s.poll.statistics_refused),
    },
    AgentGauge {
        name: "triton_sidecar_statistics_age_seconds",
        help: "Age of the last good read of Triton's /v2/models/stats, as of the last poll; absent before the first; the estimate lapses past --stats-max-age",
        value: |s| {
            let read = s.poll.statistics_read_at?;
            Some(s.poll.at.saturating_sub(read).as_secs_f64())
        },
    },
    AgentGauge {
        name: "triton_sidecar_last_page_age_seconds",
        help: "Age of the newest good page of Triton's metrics, as of the last poll; absent before the first",
        value: |s| {
            let page = s.poll.last_page_at?;
            Some(s.poll.at.saturating_sub(page).as_secs_f64())
        },
    },
    AgentGauge {
        name: "triton_sidecar_open_requests",
        help: "HTTP requests to Triton without an answer yet, by the kernel's view of their connections; read while a drain is under way, absent otherwise",
        value: |s| s.poll.connections.map(|c| f64::from(c.open_requests)),
    },
    AgentGauge {
        name: "triton_sidecar_nvml_up",
        help: "1 when NVML is loaded and answering",
        value: |s| flag(s.gpu.nvml_up),
    },
];

/// One series of a family, and its handle while it is published: made when a value appears,
/// removed when the value goes. A handle shares its atomic with the family, so a value that
/// stays costs no label lookup per poll. The one mechanism behind every gauge that can be absent.
#[derive(Default)]
struct Series(Option<FloatGauge>);

impl Series {
    /// Publish `value` under `labels`, or make the series absent.
    fn set(&mut self, family: &FloatGaugeFamily, labels: impl Fn() -> Labels, value: Option<f64>) {
        match (value, &self.0) {
            (Some(v), Some(h)) => {
                h.set(clean(v));
            }
            (Some(v), None) => {
                let h = family.get_or_create_owned(&labels());
                h.set(clean(v));
                self.0 = Some(h);
            }
            (None, Some(_)) => {
                family.remove(&labels());
                self.0 = None;
            }
            (None, None) => {}
        }
    }
}

/// A family with no labels, so that its one series can be absent.
struct Unlabelled {
    family: FloatGaugeFamily,
    series: Series,
}

impl Unlabelled {
    fn new(family: FloatGaugeFamily) -> Self {
        Unlabelled {
            family,
            series: Series::default(),
        }
    }

    /// Publish `value`, or make the series absent.
    fn set(&mut self, value: Option<f64>) {
        self.series.set(&self.family, Vec::new, value);
    }
}

/// Every family the agent exports.
pub struct Metrics {
    registry: Registry,
    /// The per-model families.
    models: ModelFamilies,
    /// Parallel to [`POD_GAUGES`].
    pod: Vec<Unlabelled>,
    /// Parallel to [`AGENT_GAUGES`].
    agent: Vec<Unlabelled>,
    statistics_errors: Family<Labels, Counter>,
    scrape_errors: Family<Labels, Counter>,
    drains: Family<Labels, Counter>,
    drain_waiting: FloatGaugeFamily,
    connection_scan_errors: Counter,
    /// Parallel to [`GPU_GAUGES`].
    gpu: Vec<FloatGaugeFamily>,
    gpu_source: FloatGaugeFamily,
    /// Per-model gauge handles (see [`ModelGauges`]); only models that left Triton's page are
    /// removed.
    per_model: HashMap<String, ModelGauges>,
    buf: String,
}

/// Brings counter `c` up to the total `n` the published state holds. The state keeps totals (it
/// is swapped whole and may skip polls), and a Prometheus counter can only go up.
fn catch_up(c: &Counter, n: u64) {
    let cur = c.get();
    if n > cur {
        c.inc_by(n - cur);
    }
}

fn lbl(k: &'static str, v: &str) -> Labels {
    vec![(k, v.to_string())]
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Register every family.
    pub fn new() -> Self {
        let mut r = Registry::default();
        let models = ModelFamilies::register(&mut r);
        let mut gf = |name: &str, help: &str| {
            let f = FloatGaugeFamily::default();
            r.register(name, help, f.clone());
            f
        };
        let gpu_source = gf(
            "triton_sidecar_gpu_source",
            "1 per reported GPU, labelled with the source of its values (nvml or triton); source=none alone when no GPU is reported",
        );
        let gpu: Vec<FloatGaugeFamily> = GPU_GAUGES.iter().map(|g| gf(g.name, g.help)).collect();
        let pod: Vec<Unlabelled> = POD_GAUGES
            .iter()
            .map(|g| Unlabelled::new(gf(g.name, g.help)))
            .collect();
        let agent: Vec<Unlabelled> = AGENT_GAUGES
            .iter()
            .map(|g| Unlabelled::new(gf(g.name, g.help)))
            .collect();
        let drain_waiting = gf(
            "triton_sidecar_drain_waiting",
            "1 for each signal that holds the drain under way (on: pending, completions, open-requests, unconfirmed-connections, traffic), else 0",
        );
        let scrape_errors = Family::<Labels, Counter>::default();
        r.register(
            "triton_sidecar_scrape_errors",
            "Failed scrapes of Triton, by reason",
            scrape_errors.clone(),
        );
        let statistics_errors = Family::<Labels, Counter>::default();
        r.register(
            "triton_sidecar_statistics_errors",
            "Failed reads of Triton's /v2/models/stats, by reason",
            statistics_errors.clone(),
        );
        for reason in StatsFailure::ALL {
            let _ = statistics_errors.get_or_create(&lbl("reason", reason.as_str()));
        }
        let connection_scan_errors = Counter::default();
        r.register(
            "triton_sidecar_connection_scan_errors",
            "Failed reads of Triton's connections from the kernel (netlink sock_diag) during drains",
            connection_scan_errors.clone(),
        );
        let drains = Family::<Labels, Counter>::default();
        r.register(
            "triton_sidecar_drains",
            "Completed drains, by trigger and result",
            drains.clone(),
        );
        let build = FloatGaugeFamily::default();
        r.register(
            "triton_sidecar_build_info",
            "Build information; always 1",
            build.clone(),
        );
        build
            .get_or_create(&lbl("version", env!("CARGO_PKG_VERSION")))
            .set(1.0);
        // Pre-create the error counters so a rate() over them has a starting point.
        for reason in Reason::ALL {
            let _ = scrape_errors.get_or_create(&lbl("reason", reason.as_str()));
        }
        Metrics {
            registry: r,
            models,
            pod,
            agent,
            statistics_errors,
            scrape_errors,
            drains,
            drain_waiting,
            connection_scan_errors,
            gpu,
            gpu_source,
            per_model: HashMap::new(),
            buf: String::with_capacity(16 * 1024),
        }
    }

    /// Set every family from the published state (no encoding), with the time of the poll as
    /// "now" for the drain clock: a seam for tests, benches and the fuzz target (the `testing`
    /// feature). The agent's publisher uses [`Metrics::render_at`].
    #[cfg(any(test, feature = "testing"))]
    pub fn update(&mut self, poll: &PollState, drain: &DrainView, gpu: &GpuState) {
        self.update_at(poll, drain, gpu, poll.at);
    }

    /// Set every family from the published state; `now` is on the agent's monotonic axis (the
    /// one `DrainView::started` uses) and dates the drain-elapsed gauge.
    pub fn update_at(
        &mut self,
        poll: &PollState,
        drain: &DrainView,
        gpu: &GpuState,
        now: Duration,
    ) {
        let d = &poll.derived;
        // Models that left Triton's page lose their series.
        let families = &self.models;
        self.per_model.retain(|model, _| {
            let keep = d.models.contains_key(model);
            if !keep {
                families.remove(model);
            }
            keep
        });
        for (model, m) in &d.models {
            // Not `entry`: that would clone the name on every poll, not once per model.
            if !self.per_model.contains_key(model) {
                self.per_model
                    .insert(model.clone(), ModelGauges::new(model));
            }
            if let Some(g) = self.per_model.get_mut(model) {
                g.set(m, families);
            }
        }
        let sources = Sources {
            poll,
            drain,
            gpu,
            now,
        };
        for (spec, gauge) in AGENT_GAUGES.iter().zip(&mut self.agent) {
            gauge.set((spec.value)(&sources));
        }
        // With no page held, the pod gauges are absent like the per-model ones: a 0 would read
        // as "idle" to an autoscaler.
        for (spec, gauge) in POD_GAUGES.iter().zip(&mut self.pod) {
            gauge.set((spec.value)(&d.pod).filter(|_| d.present));
        }
        for (reason, n) in &poll.statistics_errors {
            catch_up(
                &self
                    .statistics_errors
                    .get_or_create(&lbl("reason", reason.as_str())),
                *n,
            );
        }
        for (reason, n) in &poll.scrape_errors {
            catch_up(
                &self
                    .scrape_errors
                    .get_or_create(&lbl("reason", reason.as_str())),
                *n,
            );
        }
        let draining = drain.phase == Phase::Draining;
        let flags = drain.waiting_on.flags();
        for (label, on) in crate::drain::machine::WaitingOn::LABELS.iter().zip(flags) {
            self.drain_waiting
                .get_or_create(&lbl("on", label))
                .set(if draining && on { 1.0 } else { 0.0 });
        }
        catch_up(&self.connection_scan_errors, poll.connection_scan_errors);
        for ((t, r), n) in &drain.counts {
            let l: Labels = vec![
                ("trigger", t.as_str().to_string()),
                ("result", r.as_str().to_string()),
            ];
            catch_up(&self.drains.get_or_create(&l), *n);
        }
        self.update_gpu(gpu);
    }

    fn update_gpu(&mut self, gpu: &GpuState) {
        for f in &self.gpu {
            f.clear();
        }
        for g in &gpu.readings {
            let l: Labels = vec![("gpu_uuid", g.uuid.clone()), ("gpu_name", g.name.clone())];
            for (spec, family) in GPU_GAUGES.iter().zip(&self.gpu) {
                if let Some(v) = (spec.value)(g).filter(|v| v.is_finite() && *v >= 0.0) {
                    family.get_or_create(&l).set(v);
                }
            }
        }
        // One series per reported GPU saying where its values came from, since NVML may answer
        // for some of Triton's GPUs and the fallback fill in the rest; `{source="none"}` alone
        // when no GPU is reported, so "no GPU gauges" is a series an alert can match.
        self.gpu_source.clear();
        for g in &gpu.readings {
            let l: Labels = vec![
                ("gpu_uuid", g.uuid.clone()),
                ("source", g.source.as_str().to_string()),
            ];
            self.gpu_source.get_or_create(&l).set(1.0);
        }
        if gpu.readings.is_empty() {
            self.gpu_source
                .get_or_create(&lbl("source", GpuSource::None.as_str()))
                .set(1.0);
        }
    }

    /// Encode the registry as Prometheus text.
    pub fn encode(&mut self) -> &str {
        self.buf.clear();
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut self.buf, &self.registry);
        &self.buf
    }

    /// [`Metrics::update`], then encode (the `testing` feature).
    #[cfg(any(test, feature = "testing"))]
    pub fn render(&mut self, poll: &PollState, drain: &DrainView, gpu: &GpuState) -> &str {
        self.update(poll, drain, gpu);
        self.encode()
    }

    /// [`Metrics::update_at`], then encode.
    pub fn render_at(
        &mut self,
        poll: &PollState,
        drain: &DrainView,
        gpu: &GpuState,
        now: Duration,
    ) -> &str {
        self.update_at(poll, drain, gpu, now);
        self.encode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::derive::ModelDerived;
    use crate::drain::machine::DrainMachine;
    use crate::drain::DrainConfig;
    use std::time::Duration;

    fn view() -> DrainView {
        let cfg = DrainConfig {
            min_drain: Duration::from_secs(5),
            quiet: Duration::from_secs(2),
            timeout: Duration::from_secs(90),
            triton_exit_timeout: Duration::from_secs(30),
        };
        let m = DrainMachine::new(cfg);
        DrainView {
            waiting_on: Default::default(),
            open_requests: 0,
            phase: m.phase(),
            trigger: None,
            result: None,
            started: None,
            quiet_since: None,
            pending: 0.0,
            generation: 0,
            last: None,
            counts: Default::default(),
            terminating: false,
            config: cfg,
        }
    }

    #[test]
    fn drain_elapsed_counts_only_a_drain_under_way() {
        let mut m = Metrics::new();
        let poll = PollState::default();
        let gpu = GpuState::default();
        let serving = view();
        let page = m
            .render_at(&poll, &serving, &gpu, Duration::from_secs(50))
            .to_string();
        assert!(
            page.contains("triton_sidecar_drain_elapsed_seconds 0.0"),
            "{page}"
        );
        assert!(
            page.contains("triton_sidecar_drain_timeout_seconds 90.0"),
            "{page}"
        );
        let draining = DrainView {
            waiting_on: Default::default(),
            open_requests: 0,
            phase: Phase::Draining,
            started: Some(Duration::from_millis(10_500)),
            ..view()
        };
        let page = m
            .render_at(&poll, &draining, &gpu, Duration::from_secs(40))
            .to_string();
        assert!(
            page.contains("triton_sidecar_drain_elapsed_seconds 29.5"),
            "{page}"
        );
        // A clock read before the start (a view published between two reads) is never negative.
        let page = m
            .render_at(&poll, &draining, &gpu, Duration::from_secs(10))
            .to_string();
        assert!(
            page.contains("triton_sidecar_drain_elapsed_seconds 0.0"),
            "{page}"
        );
        // Drained: back to 0, the drain's length moves to triton_sidecar_drain_seconds.
        let drained = DrainView {
            waiting_on: Default::default(),
            open_requests: 0,
            phase: Phase::Drained,
            ..draining
        };
        let page = m
            .render_at(&poll, &drained, &gpu, Duration::from_secs(95))
            .to_string();
        assert!(
            page.contains("triton_sidecar_drain_elapsed_seconds 0.0"),
            "{page}"
        );
    }

    #[test]
    fn a_model_that_leaves_loses_its_series_and_values_follow() {
        let mut m = Metrics::new();
        let mut poll = PollState::default();
        poll.derived.models.insert(
            "a".into(),
            ModelDerived {
                pending: 3.0,
                ..Default::default()
            },
        );
        poll.derived.models.insert(
            "b".into(),
            ModelDerived {
                pending: 4.0,
                queue_wait_ms: f64::NAN,
                ..Default::default()
            },
        );
        let page = m.render(&poll, &view(), &GpuState::default()).to_string();
        assert!(
            page.contains("triton_pending_requests{model=\"a\"} 3.0"),
            "{page}"
        );
        assert!(page.contains("triton_pending_requests{model=\"b\"} 4.0"));
        assert!(
            page.contains("triton_queue_wait_ms{model=\"b\"} 0.0"),
            "NaN is never encoded"
        );
        poll.derived.models.remove("b");
        poll.derived.models.insert(
            "a".into(),
            ModelDerived {
                pending: 9.0,
                ..Default::default()
            },
        );
        let page = m.render(&poll, &view(), &GpuState::default()).to_string();
        assert!(
            page.contains("triton_pending_requests{model=\"a\"} 9.0"),
            "{page}"
        );
        assert!(!page.contains("model=\"b\""), "{page}");
    }

    #[test]
    fn optional_series_come_and_go_with_their_values() {
        use crate::derive::utilization::Capacity;
        let mut m = Metrics::new();
        let mut poll = PollState::default();
        let estimated = |largest_batch| Capacity {
            rps: 50.0,
            source: CapacitySource::Estimated,
            basis: Basis::Fitted,
            largest_batch,
        };
        let with = |utilization, capacity| ModelDerived {
            utilization,
            capacity,
            ..Default::default()
        };
        let mut page_for = |m: &mut Metrics, d: ModelDerived| {
            poll.derived.models.insert("a".into(), d);
            m.render(&poll, &view(), &GpuState::default()).to_string()
        };
        let page = page_for(&mut m, with(Some(0.5), Some(estimated(Some(8)))));
        assert!(
            page.contains("triton_utilization{model=\"a\"} 0.5"),
            "{page}"
        );
        assert!(
            page.contains(
                "triton_capacity_rps{model=\"a\",source=\"estimated\",basis=\"fitted\"} 50.0"
            ),
            "{page}"
        );
        assert!(
            page.contains("triton_capacity_largest_batch{model=\"a\"} 8"),
            "{page}"
        );
        // The estimate keeps its basis but loses its largest batch, then the capacity goes.
        let page = page_for(&mut m, with(Some(0.5), Some(estimated(None))));
        assert!(!page.contains("triton_capacity_largest_batch{"), "{page}");
        let page = page_for(&mut m, with(None, None));
        assert!(!page.contains("triton_utilization{"), "{page}");
        assert!(!page.contains("triton_capacity_rps{"), "{page}");
        // And back: one series each, with the new values.
        let page = page_for(&mut m, with(Some(1.5), Some(estimated(Some(4)))));
        assert_eq!(
            page.matches("triton_utilization{model=\"a\"}").count(),
            1,
            "{page}"
        );
        assert!(
            page.contains("triton_utilization{model=\"a\"} 1.5"),
            "{page}"
        );
        assert!(
            page.contains("triton_capacity_largest_batch{model=\"a\"} 4"),
            "{page}"
        );
    }
}
