//! The online capacity estimate: from Triton's per-batch-size execution statistics to the
//! requests per second a model's instances can serve. Pure: no I/O, time injected.
//!
//! **The rule.** An execution of a batch of b requests costs about `cost(b) = a + k·b`: a fixed
//! part (launch, Python/ZeroMQ hop, kernel set-up) and a part per request. The estimate fits
//! `a` and `k` by least squares over the mean cost of each batch size seen, weighted by its
//! execution count, and gives `instances × B / cost(B)`: the throughput with every instance
//! busy on batches of B back to back, which is what a saturated dynamic batcher approaches.
//!
//! **Which B: the cap.** `B = min(the batch the config lets the batcher form, the largest batch
//! seen)`. The config's batch is `max_batch_size` (1 when batching is off), or the largest
//! `preferred_batch_size` below it, which the dynamic batcher forms in preference once the queue
//! holds that many. The cap at the largest batch *seen* is the safe side: with `a >= 0` the
//! throughput `B / (a + k·B)` rises with B, so a smaller B never overstates capacity (the
//! autoscaler may add a pod early, never late); extrapolating the line past every batch ever
//! measured could (a memory-bound kernel bends the line up, a batcher held by its queue delay
//! never forms that batch). The largest batch seen is published with the capacity.
//!
//! **One batch size seen** (an unbatched model, or a light load that never formed a batch):
//! `cost(B) = B × cost(b) / b`, no batching gain assumed. That is low for a batched model (a
//! safe error: the autoscaler adds pods early) and exact for an unbatched one.
//!
//! **A fit that makes no physical sense** (`a < 0` or `k < 0`, from noise over close batch
//! sizes) falls back to the same proportional rule at the largest batch size seen.
//!
//! The **basis** (`fitted`: the line, `proportional`: the two rules above) is published with
//! the capacity, so a reader knows whether the batching gain is measured or assumed 1.
//!
//! **Memory and revision.** What was learned about each batch size is kept for as long as the
//! model version stays loaded: light load long after a peak still knows the batch curve the
//! peak measured. It is revised only on evidence: over the last [`Estimator::horizon`] the
//! executions of the batch sizes seen *now* cost more than [`DRIFT`] away from what was learned
//! for those sizes (a model that got slower or faster without a reload: a noisy neighbour, a
//! clock change). Then the sizes seen now take their recent cost, and every other size is
//! scaled by the same ratio, since a drift seen at one batch size is the best evidence there is
//! for the others. A count or time that went down (Triton restarted, the model was reloaded)
//! drops what was learned and starts from the new totals. While the model is idle everything
//! learned is held: capacity does not vanish because no one asked. (How long it may be held
//! when the statistics stop answering is the caller's rule: `--stats-max-age`.)
//!
//! **Rows and requests.** Triton's batch sizes count rows (inferences), and a client request
//! may carry several rows; the offered load counts requests. The capacity in rows per second
//! is divided by the rows per request seen since the model loaded (`inference_count` over
//! the successful requests that executed, both without cache hits; 1 when nothing completed),
//! so that load and capacity share a unit.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::triton::stats::{BatchTotals, ModelBatches, ModelStats};

/// Why no cost model could be fitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FitError {
    /// No execution in the data (an idle or new model).
    #[error("no executions to fit")]
    NoExecutions,
    /// The data gave a cost that is not a positive finite number (zero compute time recorded).
    #[error("the executions recorded no usable compute time")]
    NoCost,
}

/// Execution cost against batch size, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CostModel {
    /// `cost(b) = a + k·b`, fitted over two or more batch sizes.
    Linear {
        /// Fixed cost per execution, seconds (>= 0).
        a: f64,
        /// Cost per request in the batch, seconds (>= 0).
        k: f64,
    },
    /// `cost(b) = b × per_request`: one batch size seen, or a fit with a negative term.
    Proportional {
        /// Seconds per request at the batch size seen (> 0).
        per_request: f64,
    },
}

impl CostModel {
    /// The cost of one execution of a batch of `b`, seconds.
    pub fn cost(&self, b: f64) -> f64 {
        match *self {
            CostModel::Linear { a, k } => a + k * b,
            CostModel::Proportional { per_request } => b * per_request,
        }
    }

    /// Rows per second of `instances` instances running batches of `batch` (1 when 0:
    /// batching off) back to back; `None` when the cost is not positive and finite.
    pub fn capacity_rps(&self, instances: u32, batch: u32) -> Option<f64> {
        let b = f64::from(batch.max(1));
        let c = self.cost(b);
        let cap = f64::from(instances) * b / c;
        (c > 0.0 && cap.is_finite() && cap > 0.0).then_some(cap)
    }
}

/// Fit a cost model to per-batch-size totals (see the module doc for the rules).
pub fn fit(batches: &ModelBatches) -> Result<CostModel, FitError> {
    // Mean cost (s) and weight of every batch size that executed.
    let points: Vec<(f64, f64, f64)> = batches
        .iter()
        .filter(|(_, t)| t.count > 0.0 && t.ns.is_finite() && t.ns >= 0.0)
        .map(|(b, t)| (*b as f64, t.ns / t.count / 1e9, t.count))
        .collect();
    let Some(&(b_max, c_max, _)) = points.last() else {
        return Err(FitError::NoExecutions);
    };
    let proportional = |b: f64, c: f64| {
        let per_request = c / b;
        if per_request.is_finite() && per_request > 0.0 {
            Ok(CostModel::Proportional { per_request })
        } else {
            Err(FitError::NoCost)
        }
    };
    if points.len() == 1 {
        return proportional(b_max, c_max);
    }
    let (mut w, mut sb, mut sc, mut sbb, mut sbc) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &(b, c, n) in &points {
        w += n;
        sb += n * b;
        sc += n * c;
        sbb += n * b * b;
        sbc += n * b * c;
    }
    let den = w * sbb - sb * sb;
    let k = (w * sbc - sb * sc) / den;
    let a = (sc - k * sb) / w;
    if a.is_finite() && k.is_finite() && a >= 0.0 && k >= 0.0 && a + k > 0.0 {
        Ok(CostModel::Linear { a, k })
    } else {
        proportional(b_max, c_max)
    }
}

/// How far back the drift check looks, by default (`--capacity-horizon`): long enough to hold
/// a few minutes of executions at the batch sizes of the moment, short enough that a model that
/// changed is re-learned within a scale-up.
pub const DEFAULT_HORIZON: Duration = Duration::from_secs(300);

/// How far the recent cost of the batch sizes seen now may depart from what was learned for
/// them before the curve is revised: 20 %, above the run-to-run noise of a mean over many
/// executions and well below the change a neighbour or a clock change makes.
pub const DRIFT: f64 = 0.20;

/// The fewest recent executions a revision is based on: fewer are noise, not evidence.
const DRIFT_MIN_EXECUTIONS: f64 = 10.0;

/// How a capacity was arrived at: the `basis` label of `triton_capacity_rps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Basis {
    /// `--capacity MODEL=RPS`.
    Configured,
    /// The line `a + k·b` fitted over two or more batch sizes: the batching gain is measured.
    Fitted,
    /// One batch size seen, or a fit with a negative term: no batching gain assumed.
    Proportional,
}

impl Basis {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Basis::Configured => "configured",
            Basis::Fitted => "fitted",
            Basis::Proportional => "proportional",
        }
    }
}

impl CostModel {
    /// The basis this cost model gives a capacity.
    pub fn basis(&self) -> Basis {
        match self {
            CostModel::Linear { .. } => Basis::Fitted,
            CostModel::Proportional { .. } => Basis::Proportional,
        }
    }
}

/// An estimated capacity, with what it rests on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// Requests per second.
    pub rps: f64,
    /// Fitted or proportional.
    pub basis: Basis,
    /// The largest batch size executed since the model loaded.
    pub largest_batch: u64,
    /// The batch size the capacity is computed at: the config's, capped at `largest_batch`.
    pub at_batch: u64,
}

/// One model's learning state.
#[derive(Debug, Clone, Default)]
struct Learned {
    /// The cumulative totals of the last read.
    last: ModelStats,
    /// Increments with the time they were read, oldest first, none older than the horizon:
    /// the evidence of the drift check.
    recent: VecDeque<(Duration, ModelStats)>,
    /// What is known of each batch size's cost: the totals since the model loaded, revised on
    /// a drift.
    curve: ModelBatches,
    /// The latest successful fit of `curve`.
    cost: Option<CostModel>,
}

impl Learned {
    /// The recent increments summed per batch size.
    fn recent_batches(&self) -> ModelBatches {
        let mut sum = ModelBatches::new();
        for (_, inc) in &self.recent {
            for (b, t) in &inc.batches {
                let s = sum.entry(*b).or_default();
                s.count += t.count;
                s.ns += t.ns;
            }
        }
        sum
    }

    /// The drift check and revision of the module doc. Returns the ratio applied, if any.
    fn revise_on_drift(&mut self) -> Option<f64> {
        let recent = self.recent_batches();
        let (mut now_ns, mut learned_ns, mut execs) = (0.0, 0.0, 0.0);
        for (b, r) in &recent {
            // What was learned before the recent executions: the curve holds both.
            let Some(c) = self.curve.get(b) else {
                continue;
            };
            let (count, ns) = (c.count - r.count, c.ns - r.ns);
            if count <= 0.0 || ns <= 0.0 {
                continue;
            }
            now_ns += r.ns;
            learned_ns += r.count * ns / count;
            execs += r.count;
        }
        let ratio = now_ns / learned_ns;
        if execs < DRIFT_MIN_EXECUTIONS || !ratio.is_finite() || ratio <= 0.0 {
            return None;
        }
        if (ratio - 1.0).abs() <= DRIFT {
            return None;
        }
        for (b, c) in self.curve.iter_mut() {
            match recent.get(b) {
                Some(r) if r.count > 0.0 => *c = *r,
                _ => c.ns *= ratio,
            }
        }
        Some(ratio)
    }
}

/// Per-model cost models learned from successive statistics replies.
#[derive(Debug, Clone)]
pub struct Estimator {
    /// How far back the drift check looks.
    pub horizon: Duration,
    models: BTreeMap<String, Learned>,
}

impl Default for Estimator {
    fn default() -> Self {
        Estimator::new(DEFAULT_HORIZON)
    }
}

/// True when any total of `old` is larger in `new` or gone: counters restarted.
fn went_down(old: &ModelStats, new: &ModelStats) -> bool {
    new.inferences < old.inferences
        || new.requests < old.requests
        || old.batches.iter().any(|(b, o)| match new.batches.get(b) {
            Some(n) => n.count < o.count || n.ns < o.ns,
            None => o.count > 0.0,
        })
}

/// What one [`Estimator::observe`] changed, for the caller's log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// Models whose totals went down: they start afresh.
    pub restarted: Vec<String>,
    /// Models whose curve was revised on a drift, with the cost ratio applied.
    pub revised: Vec<(String, f64)>,
}

impl Estimator {
    /// An empty estimator whose drift check looks back `horizon`.
    pub fn new(horizon: Duration) -> Self {
        Estimator {
            horizon,
            models: BTreeMap::new(),
        }
    }

    /// Take a statistics reply read at `now`. Models missing from the reply are forgotten
    /// (unloaded).
    pub fn observe(&mut self, now: Duration, stats: &BTreeMap<String, ModelStats>) -> Observed {
        let mut out = Observed::default();
        self.models.retain(|m, _| stats.contains_key(m));
        for (name, cur) in stats {
            let l = self.models.entry(name.clone()).or_default();
            // A first sighting's totals are the increment since the model loaded.
            let inc: ModelStats = if went_down(&l.last, cur) {
                out.restarted.push(name.clone());
                *l = Learned::default();
                cur.clone()
            } else {
                let batches = cur
                    .batches
                    .iter()
                    .map(|(b, n)| {
                        let o = l.last.batches.get(b).copied().unwrap_or_default();
                        (
                            *b,
                            BatchTotals {
                                count: n.count - o.count,
                                ns: n.ns - o.ns,
                            },
                        )
                    })
                    .filter(|(_, t)| t.count > 0.0)
                    .collect();
                ModelStats {
                    batches,
                    inferences: cur.inferences - l.last.inferences,
                    requests: cur.requests - l.last.requests,
                }
            };
            l.last = cur.clone();
            for (b, t) in &inc.batches {
                let c = l.curve.entry(*b).or_default();
                c.count += t.count;
                c.ns += t.ns;
            }
            if !inc.batches.is_empty() {
                l.recent.push_back((now, inc));
            }
            while l
                .recent
                .front()
                .is_some_and(|(t, _)| *t < now.saturating_sub(self.horizon))
            {
                l.recent.pop_front();
            }
            if let Some(ratio) = l.revise_on_drift() {
                out.revised.push((name.clone(), ratio));
            }
            if let Ok(c) = fit(&l.curve) {
                l.cost = Some(c);
            }
        }
        out
    }

    /// The model's cost model, if one was learned.
    pub fn cost(&self, model: &str) -> Option<CostModel> {
        self.models.get(model).and_then(|l| l.cost)
    }

    /// The capacity of the model's `instances` when the config lets the batcher form batches of
    /// `config_batch` (see [`crate::triton::model_config::ModelInfo::batch_limit`]), capped at the
    /// largest batch seen: the cost model's rows per second over the rows per request seen.
    pub fn estimate(&self, model: &str, instances: u32, config_batch: u32) -> Option<Estimate> {
        let l = self.models.get(model)?;
        let cost = l.cost?;
        let largest_batch = l
            .curve
            .iter()
            .filter(|(_, t)| t.count > 0.0)
            .map(|(b, _)| *b)
            .max()?;
        let at_batch = u64::from(config_batch.max(1)).min(largest_batch.max(1));
        let rows = cost.capacity_rps(instances, u32::try_from(at_batch).unwrap_or(u32::MAX))?;
        let per_request = l.last.inferences / l.last.requests;
        let per_request = if per_request.is_finite() && per_request > 1.0 {
            per_request
        } else {
            1.0
        };
        Some(Estimate {
            rps: rows / per_request,
            basis: cost.basis(),
            largest_batch,
            at_batch,
        })
    }

    /// Requests per second of the model's `instances` at `config_batch`; see
    /// [`Estimator::estimate`].
    pub fn capacity_rps(&self, model: &str, instances: u32, config_batch: u32) -> Option<f64> {
        self.estimate(model, instances, config_batch).map(|e| e.rps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Totals for executions of cost `a + k·b` seconds, `n` of each batch size.
    fn totals(a: f64, k: f64, sizes: &[(u64, f64)]) -> ModelBatches {
        sizes
            .iter()
            .map(|&(b, n)| {
                (
                    b,
                    BatchTotals {
                        count: n,
                        ns: n * (a + k * b as f64) * 1e9,
                    },
                )
            })
            .collect()
    }

    fn close(x: f64, y: f64) -> bool {
        (x - y).abs() <= 1e-9 * y.abs().max(1.0)
    }

    #[test]
    fn a_linear_cost_is_recovered_and_capacity_is_instances_b_over_cost_b() {
        let t = totals(0.010, 0.005, &[(1, 10.0), (2, 3.0), (4, 7.0)]);
        let c = fit(&t).unwrap();
        let CostModel::Linear { a, k } = c else {
            panic!("{c:?}")
        };
        assert!(close(a, 0.010) && close(k, 0.005), "{a} {k}");
        // 2 instances, B = 8: 2 × 8 / (0.010 + 0.040) = 320 rps.
        assert!(close(c.capacity_rps(2, 8).unwrap(), 320.0));
        // Batching off: B = 1.
        assert!(close(c.capacity_rps(1, 0).unwrap(), 1.0 / 0.015));
    }

    #[test]
    fn one_batch_size_assumes_no_batching_gain() {
        let c = fit(&totals(0.010, 0.005, &[(2, 5.0)])).unwrap();
        // cost(2) = 20 ms, so 10 ms per request: 1 instance serves 100 rps at any B.
        assert!(close(c.capacity_rps(1, 8).unwrap(), 100.0));
        assert!(close(c.capacity_rps(3, 1).unwrap(), 300.0));
    }

    #[test]
    fn zero_counts_and_zero_cost_give_no_estimate() {
        assert_eq!(fit(&ModelBatches::new()), Err(FitError::NoExecutions));
        let zero: ModelBatches = [(
            1,
            BatchTotals {
                count: 0.0,
                ns: 5.0,
            },
        )]
        .into();
        assert_eq!(fit(&zero), Err(FitError::NoExecutions));
        let free: ModelBatches = [(
            1,
            BatchTotals {
                count: 4.0,
                ns: 0.0,
            },
        )]
        .into();
        assert_eq!(fit(&free), Err(FitError::NoCost));
        let free2: ModelBatches = [
            (
                1,
                BatchTotals {
                    count: 4.0,
                    ns: 0.0,
                },
            ),
            (
                2,
                BatchTotals {
                    count: 4.0,
                    ns: 0.0,
                },
            ),
        ]
        .into();
        assert_eq!(fit(&free2), Err(FitError::NoCost));
    }

    #[test]
    fn a_cost_falling_with_batch_size_falls_back_to_proportional() {
        // Bigger batches measured cheaper (noise): k < 0. The largest batch seen decides.
        let t: ModelBatches = [
            (
                1,
                BatchTotals {
                    count: 10.0,
                    ns: 10.0 * 0.030e9,
                },
            ),
            (
                4,
                BatchTotals {
                    count: 10.0,
                    ns: 10.0 * 0.020e9,
                },
            ),
        ]
        .into();
        let c = fit(&t).unwrap();
        assert_eq!(c, CostModel::Proportional { per_request: 0.005 });
    }

    #[test]
    fn requests_of_several_rows_lower_the_capacity_in_requests() {
        let mut e = Estimator::default();
        let batches = totals(0.010, 0.005, &[(2, 10.0), (8, 10.0)]);
        // 100 rows came in 25 requests: 4 rows per request.
        let s = BTreeMap::from([(
            "m".to_string(),
            ModelStats {
                batches,
                inferences: 100.0,
                requests: 25.0,
            },
        )]);
        e.observe(Duration::ZERO, &s);
        // 1 instance, B = 8: 8 / 0.050 = 160 rows/s = 40 requests/s.
        assert!(close(e.capacity_rps("m", 1, 8).unwrap(), 40.0));
    }

    /// One row per request: requests = executions × batch size.
    fn stats(t: ModelBatches) -> BTreeMap<String, ModelStats> {
        let rows: f64 = t.iter().map(|(b, x)| *b as f64 * x.count).sum();
        BTreeMap::from([(
            "m".to_string(),
            ModelStats {
                batches: t,
                inferences: rows,
                requests: rows,
            },
        )])
    }

    /// `base` plus executions of cost `a + k·b`.
    fn plus(base: &ModelBatches, a: f64, k: f64, sizes: &[(u64, f64)]) -> ModelBatches {
        let mut out = base.clone();
        for (b, t) in totals(a, k, sizes) {
            let x = out.entry(b).or_default();
            x.count += t.count;
            x.ns += t.ns;
        }
        out
    }

    #[test]
    fn the_estimator_revises_on_drift_and_starts_afresh_after_a_restart() {
        let s = |d: u64| Duration::from_secs(d);
        let mut e = Estimator::new(s(60));
        // Loaded with a = 10 ms, k = 5 ms.
        let first = totals(0.010, 0.005, &[(1, 10.0), (4, 10.0)]);
        assert_eq!(e.observe(s(0), &stats(first.clone())), Observed::default());
        assert!(close(e.cost("m").unwrap().cost(8.0), 0.050));
        // Capped at the largest batch seen (4): 2 × 4 / 0.030.
        assert!(close(e.capacity_rps("m", 2, 8).unwrap(), 2.0 * 4.0 / 0.030));
        // Idle: the estimate is held, even past the horizon.
        assert_eq!(
            e.observe(s(100), &stats(first.clone())),
            Observed::default()
        );
        assert!(close(e.cost("m").unwrap().cost(8.0), 0.050));
        // The model got twice as slow without a reload: a drift of 2 at the sizes seen now,
        // against what was learned before them, and the curve takes the recent cost.
        let later = plus(&first, 0.020, 0.010, &[(1, 10.0), (4, 10.0)]);
        let seen = e.observe(s(200), &stats(later.clone()));
        assert_eq!(seen.revised.len(), 1, "{seen:?}");
        assert!(close(e.cost("m").unwrap().cost(8.0), 0.100));
        // Reloaded (counters restarted): what was learned goes, the new totals are the data.
        let reloaded = totals(0.001, 0.001, &[(2, 3.0)]);
        assert_eq!(
            e.observe(s(201), &stats(reloaded)).restarted,
            vec!["m".to_string()]
        );
        assert!(close(e.cost("m").unwrap().cost(8.0), 8.0 * 0.0015));
        // Unloaded: forgotten.
        e.observe(s(202), &BTreeMap::new());
        assert_eq!(e.cost("m"), None);
    }

    /// Light load long after a peak: only batch size 1 executes now, at the cost learned for it,
    /// so the batch curve of the peak is kept; and the capacity keeps its basis and cap.
    #[test]
    fn light_load_after_a_peak_keeps_the_batch_curve() {
        let s = |d: u64| Duration::from_secs(d);
        let mut e = Estimator::new(s(60));
        let peak = totals(0.160, 0.030, &[(1, 20.0), (4, 50.0), (8, 200.0)]);
        e.observe(s(0), &stats(peak.clone()));
        let at_peak = e.estimate("m", 2, 8).unwrap();
        assert_eq!(at_peak.basis, Basis::Fitted);
        assert_eq!((at_peak.largest_batch, at_peak.at_batch), (8, 8));
        // 2 × 8 / (0.160 + 0.240) = 40 rps.
        assert!(close(at_peak.rps, 40.0), "{at_peak:?}");
        // Ten horizons of light load at batch 1, with 3 % noise on its cost.
        let mut cur = peak;
        for i in 1..=60u64 {
            cur = plus(&cur, 0.160 * 1.03, 0.030 * 1.03, &[(1, 5.0)]);
            let seen = e.observe(s(10 * i), &stats(cur.clone()));
            assert!(seen.revised.is_empty(), "noise is no drift: {seen:?}");
        }
        let light = e.estimate("m", 2, 8).unwrap();
        assert_eq!(light.basis, Basis::Fitted);
        assert!((light.rps / 40.0 - 1.0).abs() < 0.03, "{light:?}");
        // The same light load on a fresh estimator knows no batching gain: proportional, low.
        let mut fresh = Estimator::new(s(60));
        fresh.observe(s(0), &stats(totals(0.160, 0.030, &[(1, 5.0)])));
        let f = fresh.estimate("m", 2, 8).unwrap();
        assert_eq!(f.basis, Basis::Proportional);
        assert_eq!(f.largest_batch, 1);
        assert!(close(f.rps, 2.0 / 0.190), "{f:?}");
    }

    /// The capacity is computed at the config's batch limit, capped at the largest batch seen;
    /// evaluating lower never raises it (the safe side).
    #[test]
    fn capacity_is_capped_at_the_largest_batch_seen() {
        let mut e = Estimator::default();
        e.observe(
            Duration::ZERO,
            &stats(totals(0.010, 0.005, &[(1, 10.0), (2, 10.0)])),
        );
        let capped = e.estimate("m", 1, 32).unwrap();
        assert_eq!((capped.largest_batch, capped.at_batch), (2, 2));
        assert!(close(capped.rps, 2.0 / 0.020));
        // The config limit below the largest seen wins.
        let below = e.estimate("m", 1, 1).unwrap();
        assert_eq!(below.at_batch, 1);
        assert!(close(below.rps, 1.0 / 0.015));
        // Extrapolating to 32 would have claimed 32 / 0.170 = 188 rps: more, the unsafe side.
        let c = e.cost("m").unwrap();
        assert!(c.capacity_rps(1, 32).unwrap() > capped.rps);
    }

    /// A drift seen at the sizes executing now scales the sizes not seen by the same ratio.
    #[test]
    fn a_drift_at_small_batches_scales_the_large_ones() {
        let s = |d: u64| Duration::from_secs(d);
        let mut e = Estimator::new(s(60));
        let peak = totals(0.010, 0.005, &[(1, 100.0), (8, 100.0)]);
        e.observe(s(0), &stats(peak.clone()));
        // Later, only batch 1 runs, 50 % slower (a noisy neighbour).
        let slow = plus(&peak, 0.015, 0.0075, &[(1, 200.0)]);
        let seen = e.observe(s(120), &stats(slow));
        assert_eq!(seen.revised.len(), 1, "{seen:?}");
        // Both points now cost 1.5× what they did: 2 instances × 8 / (1.5 × 0.050).
        assert!(close(e.capacity_rps("m", 2, 8).unwrap(), 16.0 / 0.075));
    }
}
