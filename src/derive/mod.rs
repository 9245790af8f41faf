//! From a window of snapshots to the gauges an autoscaler reads. Pure: no I/O, no clock.
//!
//! Time is a [`Duration`] on a monotonic axis chosen by the caller (the poller uses time since
//! start; tests use the real capture times of the fixture pages). Every output is finite and
//! non-negative: KEDA reads NaN/Inf as 0 and would scale a pod down at its peak.
//!
//! - this module: the window, the per-model and pod gauges of the page counters;
//! - [`capacity`]: the online capacity estimate from Triton's execution statistics;
//! - [`utilization`]: which capacity a model has, its utilization, and the pod's.

pub mod activity;
pub mod capacity;
pub mod utilization;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::triton::snapshot::{ModelCounters, Snapshot};
use activity::Activity;

/// Gauges of one model over the window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ModelDerived {
    /// Mean queue wait (ms) of the requests completed in the window, or how long requests have
    /// waited with no progress, whichever is larger.
    pub queue_wait_ms: f64,
    /// Requests waiting now (Triton's queue plus TensorRT-LLM's own).
    pub pending: f64,
    /// Successful requests per second.
    pub request_rate: f64,
    /// Failed requests per second.
    pub failure_rate: f64,
    /// Mean compute time (ms) per request.
    pub compute_ms: f64,
    /// Arrivals per second: (Δsuccess + Δfailure + Δpending) / Δt over the window. Unlike the
    /// request rate, not capped by what the model can complete.
    pub offered_load_rps: f64,
    /// TensorRT-LLM KV-cache occupancy, 0 to 1: `fraction` where published, else used / max.
    /// `None` for any other backend.
    pub kv_occupancy: Option<f64>,
    /// TensorRT-LLM active / max requests of the in-flight batcher. `None` for any other
    /// backend.
    pub active_ratio: Option<f64>,
    /// Capacity, requests per second, and where it came from; filled by
    /// [`crate::derive::utilization::assess`]. `None`: no capacity known (no guess).
    pub capacity: Option<crate::derive::utilization::Capacity>,
    /// Offered load / capacity; `None` without a capacity, except 0 for an [`idle`] model.
    /// Not capped at 1.
    ///
    /// [`idle`]: ModelDerived::idle
    pub utilization: Option<f64>,
    /// **Idle**: the window holds two or more pages of the model and, between its oldest and
    /// newest, no request succeeded, failed or executed, no TensorRT-LLM iteration ran, and
    /// nothing is in flight on either (pending, TensorRT-LLM active, vLLM running: one long
    /// stream moves no counter for minutes). Zero offered load is then known, not guessed, and
    /// its utilization is 0 whatever the capacity (a stuck request is pending, so a stall is
    /// never idle).
    pub idle: bool,
}

/// Pod-level aggregates: true totals and request-weighted means, never means of means.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PodDerived {
    /// The queue wait a client sees (ms): the queue time of every model (ensemble steps
    /// included) over the client-facing requests completed, or the longest stall.
    pub queue_wait_ms: f64,
    /// Pending requests summed over all models.
    pub pending: f64,
    /// Client-facing successful requests per second (ensemble steps left out).
    pub request_rate: f64,
    /// Client-facing arrivals per second (ensemble steps left out).
    pub offered_load_rps: f64,
    /// The pod's utilization (see [`crate::derive::utilization::assess`]); `None` when no counted
    /// model has a capacity.
    pub utilization: Option<f64>,
    /// Counted models (not ensembles, not BLS) with no capacity.
    pub models_without_capacity: f64,
}

/// The derived view of one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Derived {
    /// A page is held (not older than the window): the gauges below are published. When
    /// false, every Triton-derived series is absent.
    pub present: bool,
    /// Time of the page the gauges come from.
    pub page_at: Option<Duration>,
    /// Per-model gauges; empty before the first scrape and after the data went stale.
    pub models: BTreeMap<String, ModelDerived>,
    /// Pod-level gauges; 0 until data arrives.
    pub pod: PodDerived,
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Appended to every model's history.
    Appended,
    /// At least one model's counters went down (Triton restarted, or the model was reloaded):
    /// those models start afresh; [`Window::last_resets`] names them. Other models keep their
    /// history.
    Reset,
}

/// One model's pages within the window, and its stall clock.
#[derive(Debug, Clone, Default)]
struct History {
    /// (page time, counters), oldest first, none older than the window.
    entries: VecDeque<(Duration, ModelCounters)>,
    /// Since when requests have been queued with no progress; see [`progressed`].
    stall_since: Option<Duration>,
}

/// Per-model histories over `span`, fed one page at a time.
///
/// Each model has its own history. A model starts afresh when it is new on the page, when it
/// was missing from the previous page (unloaded, or a Triton restart whose first pages list no
/// models), when its own counters went down, and, for every model, after the poller reported a
/// refused connection (see [`Window::scrape_failed`]).
#[derive(Debug, Clone)]
pub struct Window {
    span: Duration,
    models: BTreeMap<String, History>,
    /// Since when requests have been queued somewhere with no model progressing.
    pod_stall_since: Option<Duration>,
    /// Time of the newest page.
    latest: Option<Duration>,
    /// The newest page, as used (a NaN-poisoned model's previous counters substituted).
    latest_page: Option<Arc<Snapshot>>,
    /// Time of the previous poll attempt, good or failed: a stall that shows on this page began
    /// no earlier than that (nothing was known to be waiting with no progress before it).
    prev_attempt: Option<Duration>,
    /// A refused connection since the last page: the next page may come from a new process.
    fresh_next: bool,
    /// Models whose counters went down in the last push.
    resets: Vec<String>,
}

impl Window {
    /// An empty window spanning `span`.
    pub fn new(span: Duration) -> Self {
        Window {
            span,
            models: BTreeMap::new(),
            pod_stall_since: None,
            latest: None,
            latest_page: None,
            prev_attempt: None,
            fresh_next: false,
            resets: Vec::new(),
        }
    }

    /// Time of the newest page.
    pub fn latest_at(&self) -> Option<Duration> {
        self.latest
    }

    /// The newest page and its time.
    pub fn latest(&self) -> Option<(Duration, &Arc<Snapshot>)> {
        self.latest.zip(self.latest_page.as_ref())
    }

    /// Number of pages held for the model with the longest history.
    pub fn len(&self) -> usize {
        self.models
            .values()
            .map(|h| h.entries.len())
            .max()
            .unwrap_or(0)
    }

    /// Whether no page is held.
    pub fn is_empty(&self) -> bool {
        self.latest.is_none()
    }

    /// Whether the next page starts every history afresh (a refused connection came first).
    pub fn starts_afresh(&self) -> bool {
        self.fresh_next
    }

    /// Models whose counters went down in the last push.
    pub fn last_resets(&self) -> &[String] {
        &self.resets
    }

    /// Forget everything (time went backwards).
    pub fn clear(&mut self) {
        self.models.clear();
        self.pod_stall_since = None;
        self.latest = None;
        self.latest_page = None;
        self.fresh_next = false;
    }

    /// A poll at `now` got no page. `refused`: nothing listened, so the process may be gone and
    /// the next page may come from a new one; every history then starts afresh (a restart's
    /// counters can exceed the old ones, so a decrease alone cannot tell). A timeout or a bad
    /// page says Triton is alive: histories stay.
    pub fn scrape_failed(&mut self, now: Duration, refused: bool) {
        self.prev_attempt = Some(now);
        self.fresh_next |= refused;
    }

    /// Add the page read at `now`.
    pub fn push(&mut self, now: Duration, mut snap: Arc<Snapshot>) -> Pushed {
        self.resets.clear();
        if self.latest.is_some_and(|l| now < l) || self.fresh_next {
            self.clear();
        }
        // A model with a NaN/Inf sample keeps its previous counters for this page; on its first
        // page it has none, and it is left out rather than published from partial counters.
        if !snap.poisoned.is_empty() {
            let s = Arc::make_mut(&mut snap);
            for m in s.poisoned.clone() {
                match self.models.get(&m).and_then(|h| h.entries.back()) {
                    Some((_, prev)) => {
                        s.models.insert(m, prev.clone());
                    }
                    None => {
                        s.models.remove(&m);
                    }
                }
            }
        }
        let stall_start = self.prev_attempt.unwrap_or(now).min(now);
        let had_page = self.latest.is_some();
        let (mut any_stalled, mut any_progress) = (false, false);
        let mut models = BTreeMap::new();
        for (name, c) in &snap.models {
            // A model missing from the previous page is not in `self.models` any more.
            let mut h = self.models.remove(name).unwrap_or_default();
            if h.entries.back().is_some_and(|(_, last)| restarted(last, c)) {
                h = History::default();
                self.resets.push(name.clone());
            }
            let progress = h.entries.back().map(|(_, last)| progressed(last, c));
            let pending = c.pending_total() > 0.0;
            // Only a model with a previous page can show a stall: a new or reset one has nothing
            // to compare with.
            any_stalled |= pending && progress == Some(false);
            any_progress |= progress == Some(true);
            h.stall_since = match progress {
                Some(false) if pending => Some(h.stall_since.unwrap_or(stall_start)),
                _ => None,
            };
            h.entries.push_back((now, c.clone()));
            while h
                .entries
                .front()
                .is_some_and(|(t, _)| *t < now.saturating_sub(self.span))
            {
                h.entries.pop_front();
            }
            models.insert(name.clone(), h);
        }
        // Models that left the page lose their history: if they come back, their counters
        // restarted from 0 (a reload) and must not be subtracted from the old ones.
        self.models = models;
        self.pod_stall_since = if had_page && any_stalled && !any_progress {
            Some(self.pod_stall_since.unwrap_or(stall_start))
        } else {
            None
        };
        self.latest = Some(now);
        self.latest_page = Some(snap);
        self.prev_attempt = Some(now);
        if self.resets.is_empty() {
            Pushed::Appended
        } else {
            Pushed::Reset
        }
    }
}

/// **What counts as progress**: [`Activity::progressed_since`] (the rule, and why failures are
/// left out, is in [`activity`]).
fn progressed(old: &ModelCounters, new: &ModelCounters) -> bool {
    Activity::of_model(new).progressed_since(&Activity::of_model(old))
}

/// **Idle between two pages**: nothing moved (the drain's rule, [`Activity::moved_since`]) and
/// nothing is in flight on either page. See [`ModelDerived::idle`].
fn idle(old: &ModelCounters, new: &ModelCounters) -> bool {
    let (old, new) = (Activity::of_model(old), Activity::of_model(new));
    !new.moved_since(&old) && old.in_flight == 0.0 && new.in_flight == 0.0
}

/// **When a model's counters restarted**: any cumulative counter went down.
fn restarted(old: &ModelCounters, new: &ModelCounters) -> bool {
    let pair_down = |a: Option<(f64, f64)>, b: Option<(f64, f64)>| match (a, b) {
        (Some(a), Some(b)) => b.0 < a.0 || b.1 < a.1,
        _ => false,
    };
    new.success < old.success
        || new.failure < old.failure
        || new.exec_count < old.exec_count
        || matches!((old.cache_hits, new.cache_hits), (Some(a), Some(b)) if b < a)
        || pair_down(old.queue_pair(), new.queue_pair())
        || pair_down(old.compute_pair(), new.compute_pair())
}

/// Mean (ms) of a (sum µs, count) pair between two pages; `None` when nothing completed.
fn mean_ms(old: Option<(f64, f64)>, new: Option<(f64, f64)>) -> Option<(f64, f64, f64)> {
    let ((sn, cn), (so, co)) = (new?, old?);
    let (ds, dc) = (sn - so, cn - co);
    (dc > 0.0 && ds >= 0.0).then(|| (clean(ds / dc / 1000.0), ds, dc))
}

/// `num / den` when both are published and `den > 0`, clamped to a gauge value.
fn ratio(num: Option<f64>, den: Option<f64>) -> Option<f64> {
    match (num, den) {
        (Some(n), Some(d)) if d > 0.0 => Some(clean(n / d)),
        _ => None,
    }
}

/// KV-cache occupancy: TensorRT-LLM's own `fraction` where it publishes one (newer backends),
/// else used / max blocks (older ones). `None` when neither is published (any other backend,
/// Triton's vLLM backend included: it publishes no KV gauge).
fn kv_occupancy(m: &ModelCounters) -> Option<f64> {
    m.kv_fraction
        .map(clean)
        .or_else(|| ratio(m.kv_used_blocks, m.kv_max_blocks))
}

/// Clamp to a value a gauge may carry: finite and non-negative.
pub fn clean(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 {
        x
    } else {
        0.0
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Derive the gauges.
///
/// Everything is computed at the newest page's time, so a failed scrape changes nothing: the
/// gauges hold their last values (no stall grows from a scrape that failed) until `now` is
/// more than the window past the newest page; then nothing is published (`present` is false).
///
/// `ctx.steps` are ensemble step models: their requests are counted by the ensemble already, so
/// the pod's request rate and the pod wait's divisor leave them out, while their queue time
/// counts (it is part of the wait the ensemble's client sees). With `ctx.capacity`, each model's
/// capacity and utilization and the pod's follow ([`utilization`]): the one call the poller
/// makes.
pub fn derive(window: &Window, now: Duration, ctx: &Context<'_>) -> Derived {
    let mut out = page_gauges(window, now, ctx.steps);
    if let Some(inputs) = &ctx.capacity {
        utilization::assess(&mut out, inputs);
    }
    out
}

/// What the derivation reads besides the window and the time: what the model configs said, and
/// the capacity sources.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Ensemble step models, as their ensembles' configs name them.
    pub steps: &'a HashSet<String>,
    /// Capacities (configured, estimated), model configs and BLS models; `None`: the page's
    /// gauges alone, with no capacity and no utilization.
    pub capacity: Option<utilization::Inputs<'a>>,
}

impl<'a> Context<'a> {
    /// The page's gauges alone, with these ensemble steps.
    pub fn steps(steps: &'a HashSet<String>) -> Context<'a> {
        Context {
            steps,
            capacity: None,
        }
    }
}

impl Default for Context<'static> {
    fn default() -> Self {
        static NO_STEPS: std::sync::LazyLock<HashSet<String>> =
            std::sync::LazyLock::new(HashSet::new);
        Context::steps(&NO_STEPS)
    }
}

/// The gauges of the page counters: every rule of this module, before capacity.
fn page_gauges(window: &Window, now: Duration, steps: &HashSet<String>) -> Derived {
    let mut out = Derived::default();
    let Some(t_new) = window.latest else {
        return out;
    };
    // **What is published while Triton is unreachable**: the last values, for one window; then
    // nothing, so that KEDA falls back and the HPA treats the pod as unknown, never as idle.
    if now.saturating_sub(window.span) > t_new {
        return out;
    }
    out.present = true;
    out.page_at = Some(t_new);
    let mut pod_dq = 0.0; // Σ Δqueue_us over every model
    let mut pod_dc = 0.0; // Σ Δcompleted over client-facing models
    let mut stalled_max: f64 = 0.0;
    for (name, h) in &window.models {
        let Some((t_m, new)) = h.entries.back() else {
            continue;
        };
        let client = !steps.contains(name);
        let mut d = ModelDerived {
            pending: clean(new.pending_total()),
            kv_occupancy: kv_occupancy(new),
            active_ratio: ratio(new.trtllm_active, new.trtllm_max),
            ..Default::default()
        };
        let mut window_wait = None;
        if let Some((t_old, old)) = h.entries.front().filter(|(t, _)| t < t_m) {
            let dt = (*t_m - *t_old).as_secs_f64();
            d.request_rate = clean((new.success - old.success) / dt);
            d.failure_rate = clean((new.failure - old.failure) / dt);
            // **Offered load**: every request that arrived in the window either completed,
            // failed, or is still queued; the change in the queue makes up the difference.
            d.offered_load_rps = clean(
                ((new.success - old.success)
                    + (new.failure - old.failure)
                    + (new.pending_total() - old.pending_total()))
                    / dt,
            );
            // Triton adds queue time only for successful requests, so the divisor is
            // Δsuccess (or the summary's own count), never Δ(success + failure).
            if let Some((w, dq, dc)) = mean_ms(old.queue_pair(), new.queue_pair()) {
                window_wait = Some(w);
                pod_dq += dq;
                if client {
                    pod_dc += dc;
                }
            }
            // Triton adds a batch's compute time once per request in the batch, and none for a
            // cache hit: the per-request mean divides by executed requests.
            if let Some((c, _, _)) = mean_ms(old.compute_pair(), new.compute_pair()) {
                d.compute_ms = c;
            }
            d.idle = idle(old, new);
        }
        // **When a remembered wait expires**: nothing is remembered. The wait is the mean of
        // the requests that completed in the window, or, while requests wait with no
        // progress, how long that has lasted, whichever is larger. An old wait cannot come
        // back after an idle spell, because it left the window with its requests.
        let stall_ms = h.stall_since.map_or(0.0, |s| ms(t_m.saturating_sub(s)));
        let usual = window_wait.unwrap_or(0.0);
        d.queue_wait_ms = clean(usual.max(stall_ms));
        // For the pod, a model's stall counts once it outlasts that model's usual wait: a model
        // slower than the poll interval completes nothing in most polls, and its own wait
        // must not replace the pod's weighted mean.
        if stall_ms > usual {
            stalled_max = stalled_max.max(stall_ms);
        }
        out.pod.pending += d.pending;
        if client {
            out.pod.request_rate += d.request_rate;
            out.pod.offered_load_rps += d.offered_load_rps;
        }
        out.models.insert(name.clone(), d);
    }
    let mean = if pod_dc > 0.0 {
        clean(pod_dq / pod_dc / 1000.0)
    } else {
        0.0
    };
    let pod_stall = window
        .pod_stall_since
        .map_or(0.0, |s| ms(t_new.saturating_sub(s)));
    out.pod.queue_wait_ms = clean(mean.max(stalled_max).max(pod_stall));
    out.pod.pending = clean(out.pod.pending);
    out.pod.request_rate = clean(out.pod.request_rate);
    out.pod.offered_load_rps = clean(out.pod.offered_load_rps);
    out
}
