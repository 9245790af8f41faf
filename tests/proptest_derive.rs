//! Property tests of the derivation (`Window::push` + `derive`):
//!
//! - arbitrary counter sequences (any f64, including NaN, ±Inf, negative; time that stands
//!   still or goes backwards; models that come and go) give gauges that are all finite and >= 0;
//! - steady traffic gives back the rates and means it was built from;
//! - pod-level values are true totals over models (ensemble steps left out of the rate);
//! - after a counter goes down (a Triton restart) the result is exactly what a fresh window fed
//!   only the post-restart pages gives: nothing of the old process leaks through;
//! - while requests wait and none completes, the queue wait does not fall.
// Test code: a panic here is a failed test, not a crashed agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use triton_sidecar::derive::{derive, Context, Derived, Pushed, Window};
use triton_sidecar::triton::snapshot::{ModelCounters, Snapshot};

fn ok(x: f64) -> bool {
    x.is_finite() && x >= 0.0
}

fn assert_clean(d: &Derived) -> Result<(), TestCaseError> {
    let p = &d.pod;
    prop_assert!(
        ok(p.queue_wait_ms) && ok(p.pending) && ok(p.request_rate) && ok(p.offered_load_rps),
        "pod {:?}",
        p
    );
    for (n, m) in &d.models {
        prop_assert!(
            ok(m.queue_wait_ms)
                && ok(m.pending)
                && ok(m.request_rate)
                && ok(m.failure_rate)
                && ok(m.compute_ms)
                && ok(m.offered_load_rps)
                && m.kv_occupancy.map_or(true, ok)
                && m.active_ratio.map_or(true, ok),
            "{n:?}: {m:?}"
        );
    }
    Ok(())
}

fn wild() -> impl Strategy<Value = f64> {
    prop_oneof![
        6 => (0u32..100_000).prop_map(f64::from),
        1 => any::<f64>(),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(-5.0),
        1 => Just(f64::MAX),
    ]
}

fn counters() -> impl Strategy<Value = ModelCounters> {
    (
        (
            wild(),
            wild(),
            wild(),
            proptest::option::of(wild()),
            proptest::option::of(wild()),
        ),
        (
            proptest::option::of((wild(), wild())),
            proptest::option::of((wild(), wild())),
            wild(),
            proptest::option::of(wild()),
            proptest::option::of(wild()),
        ),
        (
            proptest::option::of(wild()),
            proptest::option::of(wild()),
            proptest::option::of(wild()),
            proptest::option::of(wild()),
        ),
        (proptest::option::of(wild()), proptest::option::of(wild())),
    )
        .prop_map(
            |(
                (success, failure, exec_count, queue_us, compute_infer_us),
                (queue_summary, compute_summary, pending, trtllm_waiting, trtllm_active),
                (trtllm_max, kv_used_blocks, kv_max_blocks, kv_fraction),
                (vllm_waiting, vllm_running),
            )| ModelCounters {
                vllm_waiting,
                vllm_running,
                trtllm_max,
                kv_used_blocks,
                kv_max_blocks,
                kv_fraction,
                success,
                failure,
                exec_count,
                queue_us,
                compute_infer_us,
                queue_summary,
                compute_summary,
                pending,
                trtllm_waiting,
                trtllm_active,
                trtllm_iterations: None,
                cache_hits: None,
            },
        )
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    proptest::collection::btree_map(
        prop_oneof![Just("a"), Just("b"), Just("c")].prop_map(String::from),
        counters(),
        0..4,
    )
    .prop_map(|models| Snapshot {
        models,
        ..Default::default()
    })
}

fn snap(models: &[(&str, ModelCounters)]) -> Arc<Snapshot> {
    Arc::new(Snapshot {
        models: models
            .iter()
            .map(|(n, m)| (n.to_string(), m.clone()))
            .collect(),
        ..Default::default()
    })
}

fn steady(
    i: u64,
    rate: u64,
    fail: u64,
    wait_us: u64,
    compute_us: u64,
    pending: u64,
) -> ModelCounters {
    let n = (i * rate) as f64;
    ModelCounters {
        success: n,
        failure: (i * fail) as f64,
        exec_count: n,
        queue_us: Some(n * wait_us as f64),
        compute_infer_us: Some(n * compute_us as f64),
        pending: pending as f64,
        ..Default::default()
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_sequences_give_clean_gauges(
        span_ms in 0u64..20_000,
        steps in proptest::collection::vec((snapshot(), -3_000i64..5_000, 0u64..30_000, any::<bool>()), 1..30),
        ensemble_steps in proptest::collection::hash_set(prop_oneof![Just("a"), Just("b")].prop_map(String::from), 0..2),
    ) {
        let mut w = Window::new(Duration::from_millis(span_ms));
        let mut t: i64 = 1_000_000;
        for (s, dt, lag, push) in steps {
            t = (t + dt).max(0);
            let now = Duration::from_millis(t as u64);
            if push {
                w.push(now, Arc::new(s.clone()));
            }
            let d = derive(&w, now + Duration::from_millis(lag), &Context::steps(&ensemble_steps));
            assert_clean(&d)?;
            if let Some((_, newest)) = w.latest() {
                for name in d.models.keys() {
                    prop_assert!(newest.models.contains_key(name), "{} not on the newest page", name);
                }
            } else {
                prop_assert!(d.models.is_empty());
            }
            // Stale data (older than the window) reports nothing per model.
            if lag > span_ms && push {
                prop_assert!(d.models.is_empty(), "stale: {:?}", d);
            }
        }
    }

    #[test]
    fn steady_traffic_gives_back_its_rates_and_means(
        rate in 1u64..500, fail in 0u64..50, wait_us in 0u64..2_000_000, compute_us in 1u64..500_000,
        pending in 0u64..100, interval_ms in 50u64..=1_000, polls in 2u64..40, span_s in 1u64..30,
    ) {
        let mut w = Window::new(Duration::from_secs(span_s));
        let mut d = Derived::default();
        for i in 0..polls {
            let now = Duration::from_millis(1_000 + i * interval_ms);
            prop_assert_eq!(w.push(now, snap(&[("m", steady(i, rate, fail, wait_us, compute_us, pending))])), Pushed::Appended);
            d = derive(&w, now, &Context::steps(&HashSet::new()));
        }
        let m = d.models["m"];
        let per_s = 1000.0 / interval_ms as f64;
        prop_assert!(close(m.request_rate, rate as f64 * per_s), "rate {} vs {}", m.request_rate, rate as f64 * per_s);
        prop_assert!(close(m.failure_rate, fail as f64 * per_s), "failure {} vs {}", m.failure_rate, fail as f64 * per_s);
        prop_assert!(close(m.queue_wait_ms, wait_us as f64 / 1000.0), "wait {} vs {}", m.queue_wait_ms, wait_us as f64 / 1000.0);
        prop_assert!(close(m.compute_ms, compute_us as f64 / 1000.0), "compute {} vs {}", m.compute_ms, compute_us as f64 / 1000.0);
        prop_assert_eq!(m.pending, pending as f64);
        prop_assert_eq!(d.pod.pending, pending as f64);
        prop_assert!(close(d.pod.request_rate, m.request_rate));
        prop_assert!(close(d.pod.queue_wait_ms, m.queue_wait_ms));
    }

    #[test]
    fn pod_values_are_true_totals(
        models in proptest::collection::btree_map("[a-e]", (1u64..300, 0u64..1_000_000, 0u64..50), 1..5),
        steps_mask in any::<u8>(),
        polls in 2u64..10,
    ) {
        let names: Vec<&String> = models.keys().collect();
        let ensemble_steps: HashSet<String> = names.iter().enumerate().filter(|(i, _)| steps_mask & (1 << i) != 0).map(|(_, n)| (*n).clone()).collect();
        let mut w = Window::new(Duration::from_secs(10));
        let mut d = Derived::default();
        for i in 0..polls {
            let now = Duration::from_secs(i + 1);
            let page: BTreeMap<String, ModelCounters> = models.iter().map(|(n, (r, q, p))| (n.clone(), steady(i, *r, 0, *q, 1, *p))).collect();
            w.push(now, Arc::new(Snapshot { models: page, ..Default::default() }));
            d = derive(&w, now, &Context::steps(&ensemble_steps));
        }
        let rate: f64 = models.iter().filter(|(n, _)| !ensemble_steps.contains(*n)).map(|(_, (r, _, _))| *r as f64).sum();
        prop_assert!(close(d.pod.request_rate, rate), "{} vs {}", d.pod.request_rate, rate);
        let pending: f64 = models.values().map(|(_, _, p)| *p as f64).sum();
        prop_assert_eq!(d.pod.pending, pending);
        // The wait a client sees: Σ queue time over every model (steps included) / Σ requests of
        // the client-facing models (an ensemble request passes through its steps).
        let sq: f64 = models.values().map(|(r, q, _)| (*r * *q) as f64).sum();
        let sn: f64 = models.iter().filter(|(n, _)| !ensemble_steps.contains(*n)).map(|(_, (r, _, _))| *r as f64).sum();
        let want = if sn > 0.0 { sq / sn / 1000.0 } else { 0.0 };
        prop_assert!(close(d.pod.queue_wait_ms, want), "{} vs {}", d.pod.queue_wait_ms, want);
    }

    #[test]
    fn a_restart_leaves_nothing_of_the_old_process(
        before in 1u64..20, after in 1u64..20, rate_a in 1u64..200, rate_b in 1u64..200,
        wait_a in 0u64..1_000_000, wait_b in 0u64..1_000_000, pend_a in 0u64..10, pend_b in 0u64..10,
    ) {
        let mut w = Window::new(Duration::from_secs(30));
        let mut t = 0;
        for i in 1..=before {
            t += 1000;
            w.push(Duration::from_millis(t), snap(&[("m", steady(i, rate_a, 0, wait_a, 1, pend_a))]));
        }
        // The new process starts from 0: its first page is below the old one's last.
        let mut fresh = Window::new(Duration::from_secs(30));
        let mut d_old = Derived::default();
        let mut d_new = Derived::default();
        for i in 0..after {
            t += 1000;
            let s = snap(&[("m", steady(i, rate_b, 0, wait_b, 1, pend_b))]);
            let pushed = w.push(Duration::from_millis(t), s.clone());
            if i == 0 {
                prop_assert_eq!(pushed, Pushed::Reset);
            }
            fresh.push(Duration::from_millis(t), s);
            d_old = derive(&w, Duration::from_millis(t), &Context::steps(&HashSet::new()));
            d_new = derive(&fresh, Duration::from_millis(t), &Context::steps(&HashSet::new()));
        }
        prop_assert_eq!(d_old, d_new);
    }

    /// While requests wait and none completes, the wait is never below the mean of the
    /// completions still in the window, and it grows with the stall (issue 12 replaced issue 2's
    /// "hold the last wait": a held wait outlives the requests that saw it).
    #[test]
    fn queue_wait_does_not_fall_during_a_stall(
        waits in proptest::collection::vec(0u64..2_000_000, 1..10),
        per_poll in 1u64..50,
        pending in 1u64..20,
        stall_polls in 1usize..40,
        span_s in 1u64..10,
    ) {
        let mut w = Window::new(Duration::from_secs(span_s));
        let mut t = 0u64;
        let (mut n, mut q) = (0.0, 0.0);
        let page = |n: f64, q: f64, p: f64| snap(&[("m", ModelCounters { success: n, exec_count: n, queue_us: Some(q), compute_infer_us: Some(n), pending: p, ..Default::default() })]);
        w.push(Duration::from_millis(t), page(n, q, 0.0));
        // Completions with varying waits...
        for wait in &waits {
            t += 1000;
            n += per_poll as f64;
            q += (per_poll * wait) as f64;
            w.push(Duration::from_millis(t), page(n, q, pending as f64));
        }
        let mut last = derive(&w, Duration::from_millis(t), &Context::steps(&HashSet::new()));
        let mut stalled = 0u64;
        // ...then a stall: requests pending, none completes.
        for _ in 0..stall_polls {
            t += 1000;
            w.push(Duration::from_millis(t), page(n, q, pending as f64));
            let d = derive(&w, Duration::from_millis(t), &Context::steps(&HashSet::new()));
            // The stall began at the previous poll at the latest.
            stalled += 1000;
            let m = d.models["m"].queue_wait_ms;
            prop_assert!(m >= stalled as f64 - 1e-6, "model wait {} below the stall's {} ms", m, stalled);
            prop_assert!(d.pod.queue_wait_ms >= stalled as f64 - 1e-6, "pod wait {} below the stall's {} ms", d.pod.queue_wait_ms, stalled);
            prop_assert!(m >= last.models["m"].queue_wait_ms.min(stalled as f64), "model wait fell below both the last wait and the stall");
            last = d;
        }
    }
}

/// Window 2 s, polls 1 s apart. One request completes after a 10 s wait, one after 0 ms; then
/// one request stays pending and none completes. At t=2 s the wait is (10 s + 0) / 2 = 5000 ms.
/// At t=3 s the window has slid past the slow request: no request in the window waited 10 s, so
/// the wait is max(0 ms window mean, 1000 ms stall) = 1000 ms, and it grows 1000 ms per second
/// while the stall lasts. (Issue 2 held 5000 ms here; issue 12's invariant forbids a wait that
/// no request in the window saw and that exceeds the oldest pending request's age.)
#[test]
fn stall_after_a_slow_batch() {
    let page = |n: f64, q: f64, p: f64| {
        snap(&[(
            "m",
            ModelCounters {
                success: n,
                exec_count: n,
                queue_us: Some(q),
                compute_infer_us: Some(n),
                pending: p,
                ..Default::default()
            },
        )])
    };
    let none = HashSet::new();
    let mut w = Window::new(Duration::from_secs(2));
    w.push(Duration::from_secs(0), page(0.0, 0.0, 0.0));
    w.push(Duration::from_secs(1), page(1.0, 10_000_000.0, 1.0)); // one request waited 10 s
    w.push(Duration::from_secs(2), page(2.0, 10_000_000.0, 1.0)); // one waited 0 ms
    let before = derive(&w, Duration::from_secs(2), &Context::steps(&none));
    assert_eq!(before.models["m"].queue_wait_ms, 5000.0);
    w.push(Duration::from_secs(3), page(2.0, 10_000_000.0, 1.0)); // stalled: pending 1, no completion
    let during = derive(&w, Duration::from_secs(3), &Context::steps(&none));
    assert_eq!(during.models["m"].queue_wait_ms, 1000.0);
    assert_eq!(during.pod.queue_wait_ms, 1000.0);
    w.push(Duration::from_secs(4), page(2.0, 10_000_000.0, 1.0));
    let later = derive(&w, Duration::from_secs(4), &Context::steps(&none));
    assert_eq!(later.models["m"].queue_wait_ms, 2000.0);
    assert_eq!(later.pod.queue_wait_ms, 2000.0);
}
