//! Capacity and utilization: which capacity a model has, its utilization, and the pod's.
//! Pure: fills in a [`Derived`] from the learned inputs.
//!
//! **Capacity** is `--capacity` where given (source `configured`), else the online estimate
//! (source `estimated`: [`crate::derive::capacity`] at the instance count and batch limit of
//! the model's config, capped at the largest batch seen) while it is fresh, else absent: no
//! guess. **Fresh** means the last good read of Triton's statistics is at most
//! `--stats-max-age` old: past it, the estimate rests on statistics that no longer answer and
//! is not published (the same rule as every gauge: held for a stated bound, then absent). The
//! learned curve itself is kept, so the first good read after an outage publishes it again.
//!
//! **Utilization** is offered load / capacity. It is linear in load by construction and keeps
//! rising past 1 under overload, so the HPA's `ceil(current × value / target)` yields the pods
//! the load needs. **Zero offered load is zero utilization, whatever the capacity**: an idle
//! model ([`crate::derive::ModelDerived::idle`], known from its second page on) reads 0 with or
//! without a capacity, so a fresh or restarted idle pod answers the autoscaler with 0 rather
//! than nothing (nothing fires KEDA's fallback, which runs pods no one asked for). A model with
//! load and no capacity stays absent and is counted in `models_without_capacity`.
//!
//! **The pod's utilization** is what the autoscaler reads:
//! - ensembles and `--bls-model`s are left out: their steps and children are models of their
//!   own, with their own load and capacity, and counting both would count the work twice;
//! - models that share a GPU add up: each one's utilization is a fraction of that device's
//!   time, so two models at 0.5 fill it;
//! - the pod's value is the largest of those sums over its GPUs, so a saturated model is never
//!   hidden behind an idle one (a mean would halve it);
//! - a model without GPU placement (CPU instances, or a config not read) counts on every GPU:
//!   the agent cannot tell which device (or which cores) it competes for, and counting it
//!   everywhere never under-reports.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::derive::capacity::{Basis, Estimator};
use crate::derive::{clean, Derived};
use crate::triton::model_config::ModelInfo;

/// Where a capacity came from: the `source` label of `triton_capacity_rps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CapacitySource {
    /// `--capacity MODEL=RPS`.
    Configured,
    /// The online estimate from Triton's execution statistics.
    Estimated,
}

impl CapacitySource {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CapacitySource::Configured => "configured",
            CapacitySource::Estimated => "estimated",
        }
    }
}

/// A model's capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Capacity {
    /// Requests per second the pod can serve for this model.
    pub rps: f64,
    /// Where the number came from.
    pub source: CapacitySource,
    /// What it rests on: `configured`, or the estimate's `fitted` / `proportional`.
    pub basis: Basis,
    /// The largest batch executed since the model loaded; `None` for a configured capacity.
    pub largest_batch: Option<u64>,
}

/// What [`assess`] reads besides the derived gauges.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// `--capacity`.
    pub configured: &'a BTreeMap<String, f64>,
    /// Learned cost models.
    pub estimator: &'a Estimator,
    /// Model configs as read (ensemble, instances, batch size, GPUs); a model missing here is
    /// counted, without GPU placement and without an estimate.
    pub info: &'a HashMap<String, ModelInfo>,
    /// `--bls-model`.
    pub bls: &'a BTreeSet<String>,
    /// The last good statistics read is at most `--stats-max-age` old; see the module doc.
    pub estimate_fresh: bool,
}

/// The capacity of `model`, by the rules in the module doc.
pub fn capacity_of(model: &str, inp: &Inputs<'_>) -> Option<Capacity> {
    if let Some(&rps) = inp.configured.get(model) {
        return Some(Capacity {
            rps,
            source: CapacitySource::Configured,
            basis: Basis::Configured,
            largest_batch: None,
        });
    }
    if !inp.estimate_fresh {
        return None;
    }
    let info = inp.info.get(model)?;
    let e = inp
        .estimator
        .estimate(model, info.instances?, info.batch_limit())?;
    Some(Capacity {
        rps: e.rps,
        source: CapacitySource::Estimated,
        basis: e.basis,
        largest_batch: Some(e.largest_batch),
    })
}

/// Fill in every model's capacity and utilization and the pod's utilization.
pub(crate) fn assess(d: &mut Derived, inp: &Inputs<'_>) {
    let mut per_gpu: BTreeMap<u32, f64> = BTreeMap::new();
    let mut everywhere = 0.0;
    let mut any = false;
    let mut without = 0.0;
    for (name, m) in d.models.iter_mut() {
        m.capacity = capacity_of(name, inp);
        m.utilization = match m.capacity {
            _ if m.idle => Some(0.0),
            Some(c) => Some(clean(m.offered_load_rps / c.rps)),
            None => None,
        };
        let info = inp.info.get(name);
        if info.is_some_and(|i| i.ensemble) || inp.bls.contains(name) {
            continue;
        }
        let Some(u) = m.utilization else {
            without += 1.0;
            continue;
        };
        any = true;
        match info.and_then(|i| i.gpus.as_ref()) {
            Some(gpus) => {
                for g in gpus {
                    *per_gpu.entry(*g).or_default() += u;
                }
            }
            None => everywhere += u,
        }
    }
    let busiest = per_gpu.values().copied().fold(0.0, f64::max);
    d.pod.utilization = any.then(|| clean(everywhere + busiest));
    d.pod.models_without_capacity = without;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::derive::ModelDerived;

    fn model(load: f64) -> ModelDerived {
        ModelDerived {
            offered_load_rps: load,
            ..Default::default()
        }
    }

    fn info(gpus: Option<Vec<u32>>, ensemble: bool) -> ModelInfo {
        ModelInfo {
            ensemble,
            instances: Some(1),
            gpus,
            ..Default::default()
        }
    }

    /// (name, load, configured capacity, GPUs, ensemble, bls)
    type Row = (&'static str, f64, Option<f64>, Option<Vec<u32>>, bool, bool);

    fn run(rows: &[Row]) -> Derived {
        let mut d = Derived {
            present: true,
            ..Default::default()
        };
        let mut configured = BTreeMap::new();
        let mut infos = HashMap::new();
        let mut bls = BTreeSet::new();
        for (n, load, cap, gpus, ens, b) in rows {
            d.models.insert(n.to_string(), model(*load));
            if let Some(c) = cap {
                configured.insert(n.to_string(), *c);
            }
            infos.insert(n.to_string(), info(gpus.clone(), *ens));
            if *b {
                bls.insert(n.to_string());
            }
        }
        let est = Estimator::default();
        assess(
            &mut d,
            &Inputs {
                configured: &configured,
                estimator: &est,
                info: &infos,
                bls: &bls,
                estimate_fresh: true,
            },
        );
        d
    }

    #[test]
    fn pod_utilization_rules() {
        // (case, rows, expected pod utilization, expected models without capacity)
        let cases: Vec<(&str, Vec<Row>, Option<f64>, f64)> = vec![
            (
                "one model",
                vec![("a", 5.0, Some(10.0), None, false, false)],
                Some(0.5),
                0.0,
            ),
            (
                "overload is not capped",
                vec![("a", 30.0, Some(10.0), None, false, false)],
                Some(3.0),
                0.0,
            ),
            (
                "models sharing a GPU add up",
                vec![
                    ("a", 5.0, Some(10.0), Some(vec![0]), false, false),
                    ("b", 3.0, Some(10.0), Some(vec![0]), false, false),
                ],
                Some(0.8),
                0.0,
            ),
            (
                "max over GPUs: a saturated model is not hidden behind an idle one",
                vec![
                    ("a", 9.0, Some(10.0), Some(vec![0]), false, false),
                    ("b", 0.0, Some(10.0), Some(vec![1]), false, false),
                ],
                Some(0.9),
                0.0,
            ),
            (
                "an unplaced model counts on every GPU",
                vec![
                    ("a", 4.0, Some(10.0), Some(vec![0]), false, false),
                    ("b", 6.0, Some(10.0), Some(vec![1]), false, false),
                    ("cpu", 2.0, Some(10.0), None, false, false),
                ],
                Some(0.8),
                0.0,
            ),
            (
                "a model on two GPUs counts on both",
                vec![
                    ("a", 4.0, Some(10.0), Some(vec![0, 1]), false, false),
                    ("b", 3.0, Some(10.0), Some(vec![1]), false, false),
                ],
                Some(0.7),
                0.0,
            ),
            (
                "ensembles and BLS models are left out; their steps count",
                vec![
                    ("ens", 10.0, Some(10.0), None, true, false),
                    ("bls", 10.0, Some(10.0), None, false, true),
                    ("step", 2.0, Some(10.0), None, false, false),
                ],
                Some(0.2),
                0.0,
            ),
            (
                "no capacity: absent, and counted as missing",
                vec![
                    ("a", 5.0, None, None, false, false),
                    ("ens", 5.0, None, None, true, false),
                ],
                None,
                1.0,
            ),
            (
                "a model without capacity does not hide one with",
                vec![
                    ("a", 5.0, None, None, false, false),
                    ("b", 2.5, Some(10.0), None, false, false),
                ],
                Some(0.25),
                1.0,
            ),
        ];
        for (case, rows, pod, without) in cases {
            let d = run(&rows);
            match (d.pod.utilization, pod) {
                (Some(x), Some(y)) => assert!((x - y).abs() < 1e-12, "{case}: {x} != {y}"),
                (x, y) => assert_eq!(x, y, "{case}"),
            }
            assert_eq!(d.pod.models_without_capacity, without, "{case}");
        }
    }

    #[test]
    fn zero_offered_load_is_zero_utilization_whatever_the_capacity() {
        let idle = |cap: Option<f64>| -> Row { ("idle", 0.0, cap, None, false, false) };
        let mut cases: Vec<(&str, Vec<Row>, Option<f64>, f64)> = vec![
            ("idle, no capacity", vec![idle(None)], Some(0.0), 0.0),
            (
                "idle, configured capacity",
                vec![idle(Some(10.0))],
                Some(0.0),
                0.0,
            ),
            (
                "idle beside a loaded model without capacity: that one is still counted",
                vec![idle(None), ("busy", 4.0, None, None, false, false)],
                Some(0.0),
                1.0,
            ),
        ];
        for (case, rows, pod, without) in cases.drain(..) {
            let mut d = Derived {
                present: true,
                ..Default::default()
            };
            let mut configured = BTreeMap::new();
            let mut infos = HashMap::new();
            for (n, load, cap, gpus, ens, _) in &rows {
                let mut m = model(*load);
                m.idle = *n == "idle";
                d.models.insert(n.to_string(), m);
                if let Some(c) = cap {
                    configured.insert(n.to_string(), *c);
                }
                infos.insert(n.to_string(), info(gpus.clone(), *ens));
            }
            let est = Estimator::default();
            assess(
                &mut d,
                &Inputs {
                    configured: &configured,
                    estimator: &est,
                    info: &infos,
                    bls: &BTreeSet::new(),
                    estimate_fresh: true,
                },
            );
            assert_eq!(d.pod.utilization, pod, "{case}");
            assert_eq!(d.pod.models_without_capacity, without, "{case}");
            assert_eq!(d.models["idle"].utilization, Some(0.0), "{case}");
        }
        // Not idle (load 0 on the first page, or a model with load): no capacity, no value.
        let d = run(&[("first", 0.0, None, None, false, false)]);
        assert_eq!(d.pod.utilization, None);
        assert_eq!(d.models["first"].utilization, None);
    }

    /// Idle is read off the window: from the second page of a model whose counters and pending
    /// did not move; one page, a moved counter or a pending request is not idle.
    #[test]
    fn idle_needs_two_pages_with_nothing_moving() {
        use crate::derive::{derive, Window};
        use crate::triton::snapshot::Snapshot;
        use std::sync::Arc;
        use std::time::Duration;
        let page = |ok: u64, pending: u64| {
            let text = format!(
                "nv_inference_request_success{{model=\"m\",version=\"1\"}} {ok}\n\
                 nv_inference_request_failure{{model=\"m\",version=\"1\"}} 0\n\
                 nv_inference_exec_count{{model=\"m\",version=\"1\"}} {ok}\n\
                 nv_inference_pending_request_count{{model=\"m\",version=\"1\"}} {pending}\n"
            );
            Arc::new(Snapshot::parse(&text).expect("page"))
        };
        let s = Duration::from_secs;
        let idle_after = |pages: &[(u64, u64)]| {
            let mut w = Window::new(s(10));
            for (i, (ok, pending)) in pages.iter().enumerate() {
                w.push(s(i as u64), page(*ok, *pending));
            }
            derive(&w, s(pages.len() as u64 - 1), &Default::default()).models["m"].idle
        };
        assert!(!idle_after(&[(5, 0)]), "one page");
        assert!(idle_after(&[(5, 0), (5, 0)]), "two still pages");
        assert!(idle_after(&[(5, 0), (5, 0), (5, 0)]));
        assert!(!idle_after(&[(5, 0), (6, 0)]), "a success");
        assert!(!idle_after(&[(5, 1), (5, 1)]), "a request stuck pending");
        assert!(!idle_after(&[(5, 0), (5, 1)]), "an arrival");
        // The window forgets the busy page: idle again once it is out of the window.
        let mut pages = vec![(5, 0), (6, 0)];
        pages.extend(std::iter::repeat((6, 0)).take(12));
        assert!(idle_after(&pages));
    }

    #[test]
    fn model_utilization_and_sources() {
        let d = run(&[
            ("ens", 10.0, Some(20.0), None, true, false),
            ("none", 10.0, None, None, false, false),
        ]);
        // An ensemble's own utilization is published; it only stays out of the pod's.
        assert_eq!(d.models["ens"].utilization, Some(0.5));
        assert_eq!(
            d.models["ens"].capacity.map(|c| c.source),
            Some(CapacitySource::Configured)
        );
        assert_eq!(d.models["none"].utilization, None);
        assert_eq!(d.models["none"].capacity, None);
    }

    #[test]
    fn the_estimate_needs_the_instance_count() {
        let mut est = Estimator::default();
        let batches = BTreeMap::from([(
            "m".to_string(),
            crate::triton::stats::ModelStats {
                batches: BTreeMap::from([(
                    1,
                    crate::triton::stats::BatchTotals {
                        count: 10.0,
                        ns: 10.0 * 0.02e9,
                    },
                )]),
                inferences: 10.0,
                requests: 10.0,
            },
        )]);
        est.observe(std::time::Duration::ZERO, &batches);
        let configured = BTreeMap::new();
        let bls = BTreeSet::new();
        let mut infos = HashMap::new();
        let inp = |infos: &HashMap<String, ModelInfo>| {
            capacity_of(
                "m",
                &Inputs {
                    configured: &configured,
                    estimator: &est,
                    info: infos,
                    bls: &bls,
                    estimate_fresh: true,
                },
            )
        };
        assert_eq!(inp(&infos), None, "config not read yet");
        infos.insert(
            "m".into(),
            ModelInfo {
                instances: Some(2),
                ..Default::default()
            },
        );
        let c = inp(&infos).unwrap();
        assert_eq!(c.source, CapacitySource::Estimated);
        assert_eq!(c.basis, Basis::Proportional);
        assert_eq!(c.largest_batch, Some(1));
        assert!((c.rps - 100.0).abs() < 1e-9, "{c:?}");
    }

    /// Past `--stats-max-age` the estimate is absent, a configured capacity is not: it does
    /// not rest on the statistics. The model with load then has no utilization and is counted.
    #[test]
    fn a_stale_estimate_is_absent_and_a_configured_capacity_stays() {
        let mut est = Estimator::default();
        let one = |b: u64| crate::triton::stats::ModelStats {
            batches: BTreeMap::from([(
                b,
                crate::triton::stats::BatchTotals {
                    count: 10.0,
                    ns: 10.0 * 0.02e9,
                },
            )]),
            inferences: 10.0 * b as f64,
            requests: 10.0 * b as f64,
        };
        est.observe(
            std::time::Duration::ZERO,
            &BTreeMap::from([("est".to_string(), one(1)), ("conf".to_string(), one(1))]),
        );
        let configured = BTreeMap::from([("conf".to_string(), 7.0)]);
        let infos: HashMap<String, ModelInfo> = ["est", "conf"]
            .iter()
            .map(|n| (n.to_string(), info(None, false)))
            .collect();
        for fresh in [true, false] {
            let mut d = Derived {
                present: true,
                ..Default::default()
            };
            d.models.insert("est".into(), model(4.0));
            d.models.insert("conf".into(), model(3.5));
            assess(
                &mut d,
                &Inputs {
                    configured: &configured,
                    estimator: &est,
                    info: &infos,
                    bls: &BTreeSet::new(),
                    estimate_fresh: fresh,
                },
            );
            assert_eq!(d.models["conf"].utilization, Some(0.5), "fresh={fresh}");
            if fresh {
                assert_eq!(
                    d.models["est"].capacity.map(|c| c.basis),
                    Some(Basis::Proportional)
                );
                assert_eq!(d.pod.models_without_capacity, 0.0);
                assert!((d.pod.utilization.unwrap() - (0.5 + 4.0 / 50.0)).abs() < 1e-9);
            } else {
                assert_eq!(d.models["est"].capacity, None);
                assert_eq!(d.models["est"].utilization, None);
                assert_eq!(d.pod.models_without_capacity, 1.0);
                assert_eq!(d.pod.utilization, Some(0.5));
            }
        }
    }
}
