//! From a window of snapshots to the gauges an autoscaler reads. Pure: no I/O, no clock.
//!
//! Time is a [`Duration`] on a monotonic axis chosen by the caller (the poller uses time since
//! start; tests use the real capture times of the fixture pages). Every output is finite and
//! non-negative: KEDA reads NaN/Inf as 0 and would scale a pod down at its peak.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::triton::snapshot::{ModelCounters, Snapshot};

/// Gauges of one model over the window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ModelDerived {
    /// Mean queue wait (ms) of the requests completed in the window; never falls while
    /// requests wait and none completes.
    pub queue_wait_ms: f64,
    /// Requests waiting now (Triton's queue plus TensorRT-LLM's own).
    pub pending: f64,
    /// Successful requests per second.
    pub request_rate: f64,
    /// Failed requests per second.
    pub failure_rate: f64,
    /// Mean compute time (ms) per request.
    pub compute_ms: f64,
}

/// Pod-level aggregates: true totals and request-weighted means, never means of means.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PodDerived {
    /// Request-weighted mean queue wait over all models (ms).
    pub queue_wait_ms: f64,
    /// Pending requests summed over all models.
    pub pending: f64,
    /// Client-facing successful requests per second (ensemble steps left out).
    pub request_rate: f64,
}

/// The derived view of one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Derived {
    /// Per-model gauges; empty before the first scrape and after the data went stale.
    pub models: BTreeMap<String, ModelDerived>,
    /// Pod-level gauges; 0 until data arrives.
    pub pod: PodDerived,
}

/// Per-model state carried between pushes, so that `derive` itself stays a pure function.
#[derive(Debug, Clone, Copy, Default)]
struct Track {
    /// The last queue wait computed from completions; reported while requests wait and none
    /// completes, so the signal does not drop to 0 in the middle of a stall.
    last_wait_ms: f64,
    /// Since when requests have been pending with no completion.
    stall_since: Option<Duration>,
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Appended to the window.
    Appended,
    /// A counter went down: Triton restarted (or reloaded a model). The window starts afresh.
    Reset,
}

/// A ring of timestamped snapshots spanning `span`.
#[derive(Debug, Clone)]
pub struct Window {
    span: Duration,
    entries: VecDeque<(Duration, Arc<Snapshot>)>,
    tracks: HashMap<String, Track>,
    /// The same as a model's [`Track`], for the pod as a whole: requests pending somewhere and
    /// no model completing anything.
    pod: Track,
}

impl Window {
    /// An empty window spanning `span`.
    pub fn new(span: Duration) -> Self {
        Window {
            span,
            entries: VecDeque::new(),
            tracks: HashMap::new(),
            pod: Track::default(),
        }
    }

    /// The newest snapshot and its time.
    pub fn latest(&self) -> Option<(Duration, &Arc<Snapshot>)> {
        self.entries.back().map(|(t, s)| (*t, s))
    }

    /// Number of snapshots held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the window holds no snapshot.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forget everything (a new Triton process, or data too old to use).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.tracks.clear();
        self.pod = Track::default();
    }

    /// Add a snapshot taken at `now`.
    pub fn push(&mut self, now: Duration, mut snap: Arc<Snapshot>) -> Pushed {
        let mut outcome = Pushed::Appended;
        // A model with a NaN/Inf sample keeps its previous counters for this page.
        if !snap.poisoned.is_empty() {
            if let Some((_, prev)) = self.entries.back() {
                let prev = prev.clone();
                let s = Arc::make_mut(&mut snap);
                for m in s.poisoned.clone() {
                    if let Some(p) = prev.models.get(&m) {
                        s.models.insert(m, p.clone());
                    }
                }
            }
        }
        if let Some((t_prev, prev)) = self.entries.back() {
            if now < *t_prev || went_down(prev, &snap) {
                self.clear();
                outcome = Pushed::Reset;
            }
        }
        // Stall tracking and the last completed wait, per model.
        let prev = self.entries.back().map(|(t, s)| (*t, s.clone()));
        let mut tracks = HashMap::with_capacity(snap.models.len());
        let mut any_completed = false;
        let mut any_pending = false;
        for (name, m) in &snap.models {
            let mut tr = self.tracks.get(name).copied().unwrap_or_default();
            let prev_m = prev
                .as_ref()
                .and_then(|(t, p)| p.models.get(name).map(|pm| (*t, pm)));
            let completed = match prev_m {
                Some((_, pm)) => m.success > pm.success,
                None => false,
            };
            any_completed |= completed;
            any_pending |= m.pending_total() > 0.0;
            if m.pending_total() > 0.0 && !completed {
                if tr.stall_since.is_none() {
                    tr.stall_since = Some(prev_m.map(|(t, _)| t).unwrap_or(now));
                }
            } else {
                tr.stall_since = None;
            }
            tracks.insert(name.clone(), tr);
        }
        // Models that left the page lose their state.
        self.tracks = tracks;
        if any_pending && !any_completed {
            if self.pod.stall_since.is_none() {
                self.pod.stall_since = Some(prev.as_ref().map(|(t, _)| *t).unwrap_or(now));
            }
        } else {
            self.pod.stall_since = None;
        }
        self.entries.push_back((now, snap));
        while let Some((t, _)) = self.entries.front() {
            if now.saturating_sub(self.span) > *t {
                self.entries.pop_front();
            } else {
                break;
            }
        }
        // Remember the last wait computed from completions.
        let newest = self.entries.back().map(|(t, s)| (*t, s.clone()));
        if let Some((t_new, new)) = newest {
            let (mut pod_dq, mut pod_dc) = (0.0, 0.0);
            for (name, m) in &new.models {
                if let Some((_, old)) = self.oldest_with(name, t_new) {
                    if let (Some(q_new), Some(q_old)) = (m.queue_pair(), old.queue_pair()) {
                        let dc = q_new.1 - q_old.1;
                        if dc > 0.0 {
                            pod_dq += q_new.0 - q_old.0;
                            pod_dc += dc;
                            let w = clean((q_new.0 - q_old.0) / dc / 1000.0);
                            // Frozen during a stall: as the stall goes on, earlier completions
                            // leave the window and its mean could fall; the wait must not.
                            if let Some(tr) = self
                                .tracks
                                .get_mut(name)
                                .filter(|tr| tr.stall_since.is_none())
                            {
                                tr.last_wait_ms = w;
                            }
                        }
                    }
                }
            }
            if pod_dc > 0.0 && self.pod.stall_since.is_none() {
                self.pod.last_wait_ms = clean(pod_dq / pod_dc / 1000.0);
            }
        }
        outcome
    }

    /// The oldest entry in the window that carries `model` (other than the one at `t_new`).
    fn oldest_with(&self, model: &str, t_new: Duration) -> Option<(Duration, &ModelCounters)> {
        self.entries
            .iter()
            .filter(|(t, _)| *t < t_new)
            .find_map(|(t, s)| s.models.get(model).map(|m| (*t, m)))
    }
}

fn went_down(prev: &Snapshot, new: &Snapshot) -> bool {
    new.models.iter().any(|(name, n)| {
        let Some(p) = prev.models.get(name) else {
            return false;
        };
        let pair_down = |a: Option<(f64, f64)>, b: Option<(f64, f64)>| match (a, b) {
            (Some(a), Some(b)) => b.0 < a.0 || b.1 < a.1,
            _ => false,
        };
        n.success < p.success
            || n.failure < p.failure
            || n.exec_count < p.exec_count
            || pair_down(p.queue_pair(), n.queue_pair())
            || pair_down(p.compute_pair(), n.compute_pair())
    })
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

/// Derive the gauges at `now`.
///
/// `steps` are ensemble step models: their requests are counted by the ensemble already, so the
/// pod's request rate leaves them out (their queues still count for pending and queue wait).
pub fn derive(window: &Window, now: Duration, steps: &HashSet<String>) -> Derived {
    let mut out = Derived::default();
    let Some((t_new, new)) = window.latest() else {
        return out;
    };
    // Data older than the window is stale: Triton has been unreachable for too long.
    if now.saturating_sub(window.span) > t_new {
        return out;
    }
    let mut pod_dq = 0.0; // Σ Δqueue_us
    let mut pod_dc = 0.0; // Σ Δcompleted (queue count)
    let mut stalled_max: f64 = 0.0;
    let mut carried_max: f64 = 0.0;
    for (name, m) in &new.models {
        let tr = window.tracks.get(name).copied().unwrap_or_default();
        let stall_ms = tr
            .stall_since
            .map(|s| ms(now.saturating_sub(s)))
            .unwrap_or(0.0);
        let mut d = ModelDerived {
            pending: clean(m.pending_total()),
            ..Default::default()
        };
        let mut window_wait = None;
        if let Some((t_old, old)) = window.oldest_with(name, t_new) {
            let dt = (t_new - t_old).as_secs_f64();
            if dt > 0.0 {
                d.request_rate = clean((m.success - old.success) / dt);
                d.failure_rate = clean((m.failure - old.failure) / dt);
            }
            if let (Some(qn), Some(qo)) = (m.queue_pair(), old.queue_pair()) {
                let (dq, dc) = (qn.0 - qo.0, qn.1 - qo.1);
                if dc > 0.0 && dq >= 0.0 {
                    // Triton adds queue time only for successful requests, so the divisor is
                    // Δsuccess (or the summary's own count), never Δ(success + failure).
                    window_wait = Some(clean(dq / dc / 1000.0));
                    pod_dq += dq;
                    pod_dc += dc;
                }
            }
            if let (Some(cn), Some(co)) = (m.compute_pair(), old.compute_pair()) {
                let dc = cn.1 - co.1;
                if dc > 0.0 {
                    // Triton adds a batch's compute time once per request in the batch, so the
                    // per-request mean divides by requests, not by exec_count.
                    d.compute_ms = clean((cn.0 - co.0) / dc / 1000.0);
                }
            }
        }
        let base = match (window_wait, tr.stall_since) {
            // Stalled: never below the wait seen when the stall began.
            (w, Some(_)) => w.unwrap_or(0.0).max(tr.last_wait_ms),
            (Some(w), None) => w,
            (None, None) if d.pending > 0.0 => tr.last_wait_ms,
            (None, None) => 0.0,
        };
        d.queue_wait_ms = clean(base.max(stall_ms));
        // For the pod, a stall counts only once it outlasts the model's usual wait: a model
        // slower than the poll interval (350 ms per request, polled every 200 ms) completes
        // nothing in most polls, and its own wait must not replace the pod's weighted mean.
        let usual = window_wait.unwrap_or(0.0);
        if stall_ms > usual {
            // A real stall: the pod reports at least this model's wait, which holds its
            // pre-stall value, so the pod's wait does not fall while the stall lasts.
            stalled_max = stalled_max.max(d.queue_wait_ms);
        }
        if window_wait.is_none() {
            carried_max = carried_max.max(d.queue_wait_ms);
        }
        out.pod.pending += d.pending;
        if !steps.contains(name) {
            out.pod.request_rate += d.request_rate;
        }
        out.models.insert(name.clone(), d);
    }
    let mut pod_wait = if pod_dc > 0.0 {
        clean(pod_dq / pod_dc / 1000.0).max(stalled_max)
    } else {
        carried_max
    };
    // The whole pod stalled (requests pending, no model completing): like a model, the pod's
    // wait holds its pre-stall value and grows with the stall.
    if let Some(since) = window.pod.stall_since {
        pod_wait = pod_wait
            .max(window.pod.last_wait_ms)
            .max(ms(now.saturating_sub(since)));
    }
    out.pod.queue_wait_ms = clean(pod_wait);
    out.pod.pending = clean(out.pod.pending);
    out.pod.request_rate = clean(out.pod.request_rate);
    out
}
