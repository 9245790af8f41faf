//! Property tests of the agent's own /metrics page: `Metrics::render` on arbitrary derived
//! values (NaN, ±Inf, negative, huge, subnormal; model names with quotes, backslashes, newlines
//! and any Unicode; GPU readings with any value), read back with the agent's own parser.
//!
//! - every sample on the page is finite and >= 0;
//! - each gauge carries exactly `clean(input)` (bit-exact: the encoder prints the shortest
//!   round-trip form) and each label value comes back unescaped to the input;
//! - per-model and per-GPU series are exactly those of the latest state (models that left lose
//!   their series);
//! - counters never go down across renders.
// Test code: a panic here is a failed test, not a crashed agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use proptest::prelude::*;
use triton_sidecar::derive::capacity::Basis;
use triton_sidecar::derive::utilization::{Capacity, CapacitySource};
use triton_sidecar::derive::{clean, Derived, ModelDerived, PodDerived};
use triton_sidecar::drain::controller::DrainView;
use triton_sidecar::drain::machine::{Completion, DrainResult, Trigger};
use triton_sidecar::drain::DrainConfig;
use triton_sidecar::gpu::{GpuReading, GpuSource, GpuState};
use triton_sidecar::metrics::Metrics;
use triton_sidecar::state::Phase;
use triton_sidecar::state::PollState;
use triton_sidecar::triton::client::Reason;
use triton_sidecar::triton::text;

type Key = (String, Vec<(String, String)>);

fn read(page: &str) -> BTreeMap<Key, f64> {
    let mut out = BTreeMap::new();
    text::parse(
        page,
        |_| true,
        |s| {
            let mut labels: Vec<(String, String)> = s
                .labels()
                .map(|(k, v)| (k.to_string(), v.into_owned()))
                .collect();
            labels.sort();
            let prev = out.insert((s.name.to_string(), labels), s.value);
            assert!(prev.is_none(), "duplicate series {} in\n{page}", s.name);
        },
    )
    .unwrap_or_else(|e| panic!("our page does not parse: {e}\n{page}"));
    out
}

fn wild() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => 0.0..1e6f64,
        1 => any::<f64>(),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(-1.0),
        1 => Just(f64::MAX),
        1 => Just(f64::MIN_POSITIVE / 4.0),
        1 => Just(-0.0),
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_]{1,8}",
        any::<String>(),
        Just("q\"uote".to_string()),
        Just("back\\slash\\".to_string()),
        Just("new\nline".to_string()),
        Just("".to_string()),
    ]
}

fn model_derived() -> impl Strategy<Value = ModelDerived> {
    (
        (wild(), wild(), wild(), wild(), wild()),
        (
            wild(),
            opt_wild(),
            opt_wild(),
            opt_wild(),
            opt_wild(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (queue_wait_ms, pending, request_rate, failure_rate, compute_ms),
                (offered_load_rps, kv_occupancy, active_ratio, capacity, utilization, configured),
            )| ModelDerived {
                queue_wait_ms,
                pending,
                request_rate,
                failure_rate,
                compute_ms,
                offered_load_rps,
                kv_occupancy,
                active_ratio,
                capacity: capacity.map(|rps| Capacity {
                    rps,
                    source: if configured {
                        CapacitySource::Configured
                    } else {
                        CapacitySource::Estimated
                    },
                    basis: if configured {
                        Basis::Configured
                    } else if rps.is_finite() && rps > 100.0 {
                        Basis::Fitted
                    } else {
                        Basis::Proportional
                    },
                    largest_batch: (!configured).then_some(8),
                }),
                utilization,
                idle: utilization == Some(0.0),
            },
        )
}

fn derived() -> impl Strategy<Value = Derived> {
    (
        proptest::collection::btree_map(name(), model_derived(), 0..6),
        (wild(), wild(), wild()),
        (wild(), opt_wild(), wild()),
    )
        .prop_map(|(models, (q, p, r), (o, u, w))| Derived {
            present: true,
            page_at: None,
            models,
            pod: PodDerived {
                queue_wait_ms: q,
                pending: p,
                request_rate: r,
                offered_load_rps: o,
                utilization: u,
                models_without_capacity: w,
            },
        })
}

fn opt_wild() -> impl Strategy<Value = Option<f64>> {
    proptest::option::of(wild())
}

fn gpu() -> impl Strategy<Value = GpuState> {
    (
        proptest::collection::btree_map(
            "GPU-[a-f0-9]{4}",
            (
                name(),
                opt_wild(),
                opt_wild(),
                opt_wild(),
                opt_wild(),
                opt_wild(),
            ),
            0..4,
        ),
        any::<bool>(),
    )
        .prop_map(|(m, nvml_up)| GpuState {
            nvml_up,
            readings: m
                .into_iter()
                .map(|(uuid, (n, u, mu, mt, p, t))| {
                    let mut g = GpuReading::new(uuid, n);
                    // Mixed sources, as when NVML sees only some of Triton's GPUs.
                    g.source = if nvml_up && u.is_some() {
                        GpuSource::Nvml
                    } else {
                        GpuSource::Triton
                    };
                    g.utilization_ratio = u;
                    g.memory_used_bytes = mu;
                    g.memory_total_bytes = mt;
                    g.power_watts = p;
                    g.temperature_celsius = t;
                    g
                })
                .collect(),
        })
}

fn drain_view(
    phase: Phase,
    last_secs: Option<f64>,
    counts: BTreeMap<(Trigger, DrainResult), u64>,
) -> DrainView {
    DrainView {
        waiting_on: Default::default(),
        open_requests: 0,
        phase,
        trigger: None,
        result: None,
        started: None,
        quiet_since: None,
        pending: 0.0,
        generation: 1,
        last: last_secs.map(|s| Completion {
            generation: 1,
            trigger: Trigger::Post,
            result: DrainResult::Idle,
            duration: Duration::from_secs_f64(s),
            requests_seen: 0.0,
        }),
        counts,
        terminating: false,
        config: DrainConfig {
            min_drain: Duration::from_secs(5),
            quiet: Duration::from_secs(2),
            timeout: Duration::from_secs(90),
            triton_exit_timeout: Duration::from_secs(30),
        },
    }
}

fn poll(d: Derived, scrape_seconds: f64, errors: &[(&'static str, u64)]) -> PollState {
    let mut p = PollState {
        seq: 1,
        triton_up: true,
        derived: d,
        scrape_seconds,
        ..Default::default()
    };
    for (r, n) in errors {
        let r = Reason::ALL
            .into_iter()
            .find(|x| x.as_str() == *r)
            .expect("a known reason");
        p.scrape_errors.insert(r, *n);
    }
    p
}

fn m(model: &str) -> Vec<(String, String)> {
    vec![("model".to_string(), model.to_string())]
}

fn check_page(page: &str, d: &Derived, g: &GpuState) -> Result<(), TestCaseError> {
    let got = read(page);
    for ((n, l), v) in &got {
        prop_assert!(v.is_finite() && *v >= 0.0, "{n}{l:?} = {v}");
    }
    let exact =
        |series: &str, labels: Vec<(String, String)>, want: f64| -> Result<(), TestCaseError> {
            let v = got.get(&(series.to_string(), labels.clone()));
            prop_assert_eq!(
                v.map(|v| v.to_bits()),
                Some(want.to_bits()),
                "{}{:?}: got {:?}, want {}",
                series,
                labels,
                v,
                want
            );
            Ok(())
        };
    for (model, md) in &d.models {
        exact("triton_queue_wait_ms", m(model), clean(md.queue_wait_ms))?;
        exact("triton_pending_requests", m(model), clean(md.pending))?;
        exact("triton_request_rate", m(model), clean(md.request_rate))?;
        exact("triton_failure_rate", m(model), clean(md.failure_rate))?;
        exact("triton_compute_ms", m(model), clean(md.compute_ms))?;
    }
    exact(
        "triton_pod_queue_wait_ms",
        vec![],
        clean(d.pod.queue_wait_ms),
    )?;
    exact("triton_pod_pending_requests", vec![], clean(d.pod.pending))?;
    exact("triton_pod_request_rate", vec![], clean(d.pod.request_rate))?;
    // Exactly the latest models, once each per family.
    for fam in [
        "triton_queue_wait_ms",
        "triton_pending_requests",
        "triton_request_rate",
        "triton_failure_rate",
        "triton_compute_ms",
    ] {
        let models: BTreeSet<&str> = got
            .keys()
            .filter(|(n, _)| n == fam)
            .map(|(_, l)| l[0].1.as_str())
            .collect();
        let want: BTreeSet<&str> = d.models.keys().map(String::as_str).collect();
        prop_assert_eq!(models, want, "{}", fam);
    }
    // GPU gauges: present with the input value when finite and >= 0, absent otherwise.
    for r in &g.readings {
        let mut l = vec![
            ("gpu_name".to_string(), r.name.clone()),
            ("gpu_uuid".to_string(), r.uuid.clone()),
        ];
        l.sort();
        for (fam, v) in [
            ("triton_gpu_utilization_ratio", r.utilization_ratio),
            ("triton_gpu_memory_used_bytes", r.memory_used_bytes),
            ("triton_gpu_memory_total_bytes", r.memory_total_bytes),
            ("triton_gpu_power_watts", r.power_watts),
            ("triton_gpu_temperature_celsius", r.temperature_celsius),
        ] {
            let got_v = got.get(&(fam.to_string(), l.clone())).copied();
            match v.filter(|v| v.is_finite() && *v >= 0.0) {
                Some(v) => prop_assert_eq!(
                    got_v.map(f64::to_bits),
                    Some(v.to_bits()),
                    "{} {:?}",
                    fam,
                    l
                ),
                None => prop_assert_eq!(got_v, None, "{} {:?}", fam, l),
            }
        }
    }
    let gpus: BTreeSet<String> = got
        .keys()
        .filter(|(n, _)| n == "triton_gpu_memory_used_ratio" || n == "triton_gpu_utilization_ratio")
        .flat_map(|(_, l)| {
            l.iter()
                .filter(|(k, _)| k == "gpu_uuid")
                .map(|(_, v)| v.clone())
        })
        .collect();
    let known: BTreeSet<String> = g.readings.iter().map(|r| r.uuid.clone()).collect();
    prop_assert!(gpus.is_subset(&known));
    // One source series per GPU, saying where its values came from; `none` alone without GPUs.
    let sources: BTreeMap<Vec<(String, String)>, f64> = got
        .iter()
        .filter(|((n, _), _)| n == "triton_sidecar_gpu_source")
        .map(|((_, l), v)| (l.clone(), *v))
        .collect();
    let mut want: BTreeMap<Vec<(String, String)>, f64> = g
        .readings
        .iter()
        .map(|r| {
            (
                vec![
                    ("gpu_uuid".to_string(), r.uuid.clone()),
                    ("source".to_string(), r.source.as_str().to_string()),
                ],
                1.0,
            )
        })
        .collect();
    if g.readings.is_empty() {
        want.insert(vec![("source".to_string(), "none".to_string())], 1.0);
    }
    prop_assert_eq!(sources, want);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn rendered_page_reads_back_clean_values(d in derived(), g in gpu(), scrape in wild(), last in proptest::option::of(0.0..1e6f64)) {
        let mut metrics = Metrics::new();
        let page = metrics.render(&poll(d.clone(), scrape, &[]), &drain_view(Phase::Serving, last, BTreeMap::new()), &g).to_string();
        check_page(&page, &d, &g)?;
        let got = read(&page);
        prop_assert_eq!(got.get(&("triton_sidecar_scrape_duration_seconds".to_string(), vec![])).map(|v| v.to_bits()), Some(clean(scrape).to_bits()));
        if let Some(s) = last {
            let v = got[&("triton_sidecar_drain_seconds".to_string(), vec![])];
            prop_assert!((v - s).abs() <= 1e-9 * s.max(1.0), "{} vs {}", v, s);
        }
    }

    #[test]
    fn a_sequence_of_renders_tracks_the_latest_state(
        states in proptest::collection::vec((derived(), gpu(), 0u64..1000, 0u64..1000), 1..6),
    ) {
        let mut metrics = Metrics::new();
        let mut max_refused = 0;
        let mut max_drains = 0;
        for (d, g, refused, drains) in states {
            let mut counts = BTreeMap::new();
            counts.insert((Trigger::Signal, DrainResult::Idle), drains);
            let phase = if drains % 2 == 0 { Phase::Serving } else { Phase::Draining };
            let page = metrics.render(&poll(d.clone(), 0.01, &[("refused", refused)]), &drain_view(phase, None, counts), &g).to_string();
            check_page(&page, &d, &g)?;
            let got = read(&page);
            // Counters never go down, whatever the input does.
            max_refused = max_refused.max(refused);
            max_drains = max_drains.max(drains);
            let refused_v = got[&("triton_sidecar_scrape_errors_total".to_string(), vec![("reason".to_string(), "refused".to_string())])];
            prop_assert_eq!(refused_v, max_refused as f64);
            let key = ("triton_sidecar_drains_total".to_string(), vec![("result".to_string(), "idle".to_string()), ("trigger".to_string(), Trigger::Signal.as_str().to_string())]);
            let drains_v = got.get(&key).copied().unwrap_or(0.0);
            prop_assert_eq!(drains_v, max_drains as f64);
            prop_assert_eq!(got[&("triton_draining".to_string(), vec![])], if phase == Phase::Serving { 0.0 } else { 1.0 });
        }
    }
}
