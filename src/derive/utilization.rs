//! Capacity and utilization: which capacity a model has, its utilization, and the pod's.
//! Pure: fills in a [`Derived`] from the learned inputs.
//!
//! **Capacity** is `--capacity` where given (source `configured`), else the online estimate
//! (source `estimated`: [`crate::derive::capacity`] at the instance count and `max_batch_size` of the
//! model's config), else absent: no guess.
//!
//! **Utilization** is offered load / capacity. It is linear in load by construction and keeps
//! rising past 1 under overload, so the HPA's `ceil(current × value / target)` yields the pods
//! the load needs.
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

use crate::derive::capacity::Estimator;
use crate::derive::{clean, Derived};
use crate::triton::client::ModelInfo;

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
}

/// The capacity of `model`, by the rules in the module doc.
pub fn capacity_of(model: &str, inp: &Inputs<'_>) -> Option<Capacity> {
    if let Some(&rps) = inp.configured.get(model) {
        return Some(Capacity {
            rps,
            source: CapacitySource::Configured,
        });
    }
    let info = inp.info.get(model)?;
    let rps = inp
        .estimator
        .capacity_rps(model, info.instances?, info.max_batch_size)?;
    Some(Capacity {
        rps,
        source: CapacitySource::Estimated,
    })
}

/// Fill in every model's capacity and utilization and the pod's utilization.
pub fn assess(d: &mut Derived, inp: &Inputs<'_>) {
    let mut per_gpu: BTreeMap<u32, f64> = BTreeMap::new();
    let mut everywhere = 0.0;
    let mut any = false;
    let mut without = 0.0;
    for (name, m) in d.models.iter_mut() {
        m.capacity = capacity_of(name, inp);
        m.utilization = m.capacity.map(|c| clean(m.offered_load_rps / c.rps));
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
        assert!((c.rps - 100.0).abs() < 1e-9, "{c:?}");
    }
}
