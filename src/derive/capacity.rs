//! The online capacity estimate: from Triton's per-batch-size execution statistics to the
//! requests per second a model's instances can serve. Pure: no I/O, time injected.
//!
//! **The rule.** An execution of a batch of b requests costs about `cost(b) = a + k·b`: a fixed
//! part (launch, Python/ZeroMQ hop, kernel set-up) and a part per request. The estimate fits
//! `a` and `k` by least squares over the mean cost of each batch size seen, weighted by its
//! execution count, and gives `instances × B / cost(B)` at the largest batch the model accepts
//! (`B = max_batch_size`, 1 when batching is off): the throughput with every instance busy on
//! full batches, which is what a saturated dynamic batcher approaches.
//!
//! **One batch size seen** (an unbatched model, or a light load that never forms a batch):
//! `cost(B) = B × cost(b) / b`, no batching gain assumed. That is low for a batched model (a
//! safe error: the autoscaler adds pods early) and exact for an unbatched one.
//!
//! **A fit that makes no physical sense** (`a < 0` or `k < 0`, from noise over close batch
//! sizes) falls back to the same proportional rule at the largest batch size seen.
//!
//! **Re-learning.** The fit reads the *increments* of the cumulative statistics over the last
//! [`Estimator::horizon`], so a model reloaded with different behaviour is re-learned within
//! it; a count or time that went down (Triton restarted, the model was reloaded) drops what was
//! learned and starts from the new totals. While the model is idle the last estimate is held:
//! capacity does not vanish because no one asked.
//!
//! **Rows and requests.** Triton's batch sizes count rows (inferences), and a client request
//! may carry several rows; the offered load counts requests. The capacity in rows per second
//! is divided by the rows per request seen over the same increments (`inference_count` over
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

    /// Rows per second of `instances` instances running batches of `max_batch_size` (1 when
    /// 0: batching off) back to back; `None` when the cost is not positive and finite.
    pub fn capacity_rps(&self, instances: u32, max_batch_size: u32) -> Option<f64> {
        let b = f64::from(max_batch_size.max(1));
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

/// How long increments are kept for the fit, by default: long enough to hold a few minutes of
/// varied batch sizes, short enough that a changed model is re-learned within a scale-up.
pub const DEFAULT_HORIZON: Duration = Duration::from_secs(300);

/// One model's learning state.
#[derive(Debug, Clone, Default)]
struct Learned {
    /// The cumulative totals of the last read.
    last: ModelStats,
    /// Increments with the time they were read, oldest first, none older than the horizon.
    increments: VecDeque<(Duration, ModelStats)>,
    /// The latest successful fit, held while the model is idle.
    cost: Option<CostModel>,
    /// Rows per request over the increments of that fit (>= 1).
    rows_per_request: f64,
}

/// Per-model cost models learned from successive statistics replies.
#[derive(Debug, Clone)]
pub struct Estimator {
    /// How long increments are kept.
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

impl Estimator {
    /// An empty estimator keeping increments for `horizon`.
    pub fn new(horizon: Duration) -> Self {
        Estimator {
            horizon,
            models: BTreeMap::new(),
        }
    }

    /// Take a statistics reply read at `now`. Returns the models whose totals went down (they
    /// start afresh). Models missing from the reply are forgotten (unloaded).
    pub fn observe(&mut self, now: Duration, stats: &BTreeMap<String, ModelStats>) -> Vec<String> {
        let mut restarted = Vec::new();
        self.models.retain(|m, _| stats.contains_key(m));
        for (name, cur) in stats {
            let l = self.models.entry(name.clone()).or_default();
            // A first sighting's totals are the increment since the model loaded.
            let inc: ModelStats = if went_down(&l.last, cur) {
                restarted.push(name.clone());
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
            if !inc.batches.is_empty() {
                l.increments.push_back((now, inc));
            }
            while l
                .increments
                .front()
                .is_some_and(|(t, _)| *t < now.saturating_sub(self.horizon))
            {
                l.increments.pop_front();
            }
            let mut sum = ModelStats::default();
            for (_, inc) in &l.increments {
                sum.inferences += inc.inferences;
                sum.requests += inc.requests;
                for (b, t) in &inc.batches {
                    let s = sum.batches.entry(*b).or_default();
                    s.count += t.count;
                    s.ns += t.ns;
                }
            }
            if let Ok(c) = fit(&sum.batches) {
                l.cost = Some(c);
                let rows = sum.inferences / sum.requests;
                l.rows_per_request = if rows.is_finite() && rows > 1.0 {
                    rows
                } else {
                    1.0
                };
            }
        }
        restarted
    }

    /// The model's cost model, if one was learned.
    pub fn cost(&self, model: &str) -> Option<CostModel> {
        self.models.get(model).and_then(|l| l.cost)
    }

    /// Requests per second of the model's `instances` at `max_batch_size`: the cost model's
    /// rows per second over the rows per request seen.
    pub fn capacity_rps(&self, model: &str, instances: u32, max_batch_size: u32) -> Option<f64> {
        let l = self.models.get(model)?;
        let rows = l.cost?.capacity_rps(instances, max_batch_size)?;
        Some(rows / l.rows_per_request.max(1.0))
    }
    /// Forget everything (statistics unavailable: an estimate must not outlive its source by
    /// more than the caller allows).
    pub fn clear(&mut self) {
        self.models.clear();
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

    #[test]
    fn the_estimator_relearns_from_increments_and_after_a_restart() {
        let s = |d: u64| Duration::from_secs(d);
        let mut e = Estimator::new(s(60));
        // One row per request: requests = executions × batch size.
        let stats = |t: ModelBatches| {
            let rows: f64 = t.iter().map(|(b, x)| *b as f64 * x.count).sum();
            BTreeMap::from([(
                "m".to_string(),
                ModelStats {
                    batches: t,
                    inferences: rows,
                    requests: rows,
                },
            )])
        };
        // Loaded with a = 10 ms, k = 5 ms.
        let first = totals(0.010, 0.005, &[(1, 10.0), (4, 10.0)]);
        assert!(e.observe(s(0), &stats(first.clone())).is_empty());
        assert!(close(e.cost("m").unwrap().cost(8.0), 0.050));
        assert!(close(e.capacity_rps("m", 2, 8).unwrap(), 320.0));
        // Idle: the estimate is held, even past the horizon.
        assert!(e.observe(s(100), &stats(first.clone())).is_empty());
        assert!(close(e.cost("m").unwrap().cost(8.0), 0.050));
        // The model got twice as slow without a reload: after the horizon only the new
        // increments count.
        let mut later = first.clone();
        for (b, t) in totals(0.020, 0.010, &[(1, 10.0), (4, 10.0)]) {
            let x = later.get_mut(&b).unwrap();
            x.count += t.count;
            x.ns += t.ns;
        }
        e.observe(s(200), &stats(later.clone()));
        assert!(close(e.cost("m").unwrap().cost(8.0), 0.100));
        // Reloaded (counters restarted): what was learned goes, the new totals are the data.
        let reloaded = totals(0.001, 0.001, &[(2, 3.0)]);
        assert_eq!(e.observe(s(201), &stats(reloaded)), vec!["m".to_string()]);
        assert!(close(e.cost("m").unwrap().cost(8.0), 8.0 * 0.0015));
        // Unloaded: forgotten.
        e.observe(s(202), &BTreeMap::new());
        assert_eq!(e.cost("m"), None);
    }
}
