//! Derivation against the real Triton 2.51 pages in tests/fixtures (see its README).
//! Every expected number is worked out by hand from the raw page values in a comment.
// Test code: a panic here is a failed test, not a crashed agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use triton_sidecar::derive::{derive, Context, Derived, Pushed, Window};
use triton_sidecar::triton::snapshot::Snapshot;
use triton_sidecar::triton::text;

fn page(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Capture times from captured_at.json, relative to load-0 (1795846189.172).
fn t(secs_after_load0: f64) -> Duration {
    Duration::from_secs_f64(10.0 + secs_after_load0)
}

fn snap(body: &str) -> Arc<Snapshot> {
    Arc::new(Snapshot::parse(body).expect("page parses"))
}

fn close(got: f64, want: f64, tol: f64, what: &str) {
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got}, want {want} ± {tol}"
    );
}

fn no_steps() -> HashSet<String> {
    HashSet::new()
}

#[test]
fn every_fixture_page_parses() {
    for name in [
        "idle.prom",
        "load-0.prom",
        "load-1.prom",
        "load-2.prom",
        "after.prom",
        "summary-idle.prom",
        "summary-load-0.prom",
        "summary-load-1.prom",
        "summary-load-2.prom",
        "summary-after.prom",
    ] {
        let body = page(name);
        let all = text::parse_all(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
        // 61 lines each for the plain pages, of which 19 HELP/TYPE pairs ... count samples instead:
        let lines = body
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .count();
        assert_eq!(
            all.len(),
            lines,
            "{name}: every sample line yields one sample"
        );
        let s = Snapshot::parse(&body).unwrap();
        assert_eq!(
            s.models.keys().cloned().collect::<Vec<_>>(),
            vec!["fast".to_string(), "flaky".to_string()],
            "{name}"
        );
        assert_eq!(s.non_finite, 0);
    }
}

#[test]
fn snapshot_sums_failure_reasons() {
    // load-2: flaky failures OTHER 0 + BACKEND 5 + CANCELED 0 + REJECTED 0 = 5.
    let s = Snapshot::parse(&page("load-2.prom")).unwrap();
    assert_eq!(s.models["flaky"].failure, 5.0);
    assert_eq!(s.models["fast"].success, 715.0);
    assert_eq!(s.models["fast"].pending, 17.0);
}

fn load_sequence() -> (Window, Duration) {
    let mut w = Window::new(Duration::from_secs(10));
    // captured_at: load-0 189.172, load-1 190.174, load-2 191.175
    assert_eq!(w.push(t(0.0), snap(&page("load-0.prom"))), Pushed::Appended);
    assert_eq!(
        w.push(t(1.002), snap(&page("load-1.prom"))),
        Pushed::Appended
    );
    assert_eq!(
        w.push(t(2.003), snap(&page("load-2.prom"))),
        Pushed::Appended
    );
    (w, t(2.003))
}

#[test]
fn load_0_to_load_2() {
    let (w, now) = load_sequence();
    let d: Derived = derive(&w, now, &Context::steps(&no_steps()));
    let fast = d.models["fast"];
    // fast queue wait: (51,586,212 − 17,044,237) µs / (715 − 250) = 34,541,975 / 465 = 74,283.8 µs = 74.28 ms
    close(fast.queue_wait_ms, 74.28, 0.01, "fast queue wait");
    // fast compute: (17,548,139 − 5,993,600) / 465 = 11,554,539 / 465 = 24,848.5 µs = 24.85 ms.
    // (Dividing by Δexec_count = 120 − 42 = 78 would give 148 ms: the batch-size error.)
    close(fast.compute_ms, 24.85, 0.01, "fast compute");
    // fast rate: 465 / (191.175 − 189.172 = 2.003 s) = 232.15 /s
    close(fast.request_rate, 232.15, 0.01, "fast rate");
    assert_eq!(fast.failure_rate, 0.0);
    assert_eq!(fast.pending, 17.0);

    let flaky = d.models["flaky"];
    // flaky queue wait: (33,318,571 − 3,360,821) / (24 − 8) = 29,957,750 / 16 = 1,872,359 µs = 1872.36 ms
    close(flaky.queue_wait_ms, 1872.36, 0.01, "flaky queue wait");
    // flaky compute: (2,495,838 − 840,180) / 16 = 1,655,658 / 16 = 103,478.6 µs = 103.48 ms
    close(flaky.compute_ms, 103.48, 0.01, "flaky compute");
    // flaky rates: 16 / 2.003 = 7.99 /s; failures (5 − 1) / 2.003 = 2.00 /s
    close(flaky.request_rate, 7.99, 0.01, "flaky rate");
    close(flaky.failure_rate, 2.00, 0.01, "flaky failure rate");
    assert_eq!(flaky.pending, 23.0);

    // Pod: weighted by completions, not a mean of means:
    // (34,541,975 + 29,957,750) / (465 + 16) = 64,499,725 / 481 = 134,095 µs = 134.10 ms
    // (the mean of means would be (74.28 + 1872.36) / 2 = 973 ms)
    close(d.pod.queue_wait_ms, 134.10, 0.01, "pod queue wait");
    // Pending 17 + 23 = 40; rate 481 / 2.003 = 240.14 /s
    assert_eq!(d.pod.pending, 40.0);
    close(d.pod.request_rate, 240.14, 0.01, "pod rate");
}

#[test]
fn window_span_drops_old_snapshots() {
    // With a 1.5 s window at load-2, load-0 (2.003 s earlier) is out; load-1 → load-2 remains.
    let mut w = Window::new(Duration::from_millis(1500));
    w.push(t(0.0), snap(&page("load-0.prom")));
    w.push(t(1.002), snap(&page("load-1.prom")));
    w.push(t(2.003), snap(&page("load-2.prom")));
    assert_eq!(w.len(), 2);
    let d = derive(&w, t(2.003), &Context::steps(&no_steps()));
    // fast load-1 → load-2: (51,586,212 − 33,952,164) / (715 − 475) = 17,634,048 / 240 = 73,475.2 µs
    close(
        d.models["fast"].queue_wait_ms,
        73.48,
        0.01,
        "fast queue wait over 1 s",
    );
    // rate 240 / (191.175 − 190.174 = 1.001 s) = 239.76 /s
    close(
        d.models["fast"].request_rate,
        239.76,
        0.01,
        "fast rate over 1 s",
    );
}

#[test]
fn counter_reset_starts_afresh() {
    let (mut w, _) = load_sequence();
    // idle.prom has every counter at 0: Triton restarted.
    assert_eq!(w.push(t(3.0), snap(&page("idle.prom"))), Pushed::Reset);
    assert_eq!(w.len(), 1);
    let d = derive(&w, t(3.0), &Context::steps(&no_steps()));
    for m in d.models.values() {
        assert_eq!(m.request_rate, 0.0);
        assert_eq!(m.queue_wait_ms, 0.0);
        assert_eq!(m.failure_rate, 0.0);
    }
    assert_eq!(d.pod.pending, 0.0);
    // The next page derives from the new process only: after.prom against idle.
    w.push(t(4.0), snap(&page("after.prom")));
    let d = derive(&w, t(4.0), &Context::steps(&no_steps()));
    // fast: 68,598,662 / 960 = 71,457 µs = 71.46 ms, rate 960 / 1 s
    close(d.models["fast"].queue_wait_ms, 71.46, 0.01, "after reset");
    close(
        d.models["fast"].request_rate,
        960.0,
        1e-9,
        "rate after reset",
    );
}

fn synthetic(success: u64, queue_us: u64, pending: u64) -> String {
    format!(
        "nv_inference_request_success{{model=\"m\",version=\"1\"}} {success}\n\
         nv_inference_request_failure{{model=\"m\",reason=\"BACKEND\",version=\"1\"}} 0\n\
         nv_inference_exec_count{{model=\"m\",version=\"1\"}} {success}\n\
         nv_inference_queue_duration_us{{model=\"m\",version=\"1\"}} {queue_us}\n\
         nv_inference_compute_infer_duration_us{{model=\"m\",version=\"1\"}} 0\n\
         nv_inference_pending_request_count{{model=\"m\",version=\"1\"}} {pending}\n"
    )
}

#[test]
fn stall_makes_wait_grow() {
    let mut w = Window::new(Duration::from_secs(10));
    let s = |x| Duration::from_secs(x);
    // 10 requests completed with 50 ms mean wait: 500,000 µs / 10.
    w.push(s(0), snap(&synthetic(0, 0, 0)));
    w.push(s(1), snap(&synthetic(10, 500_000, 5)));
    close(
        derive(&w, s(1), &Context::steps(&no_steps())).models["m"].queue_wait_ms,
        50.0,
        1e-9,
        "before stall",
    );
    // Then nothing completes while 5 requests wait.
    w.push(s(2), snap(&synthetic(10, 500_000, 5)));
    w.push(s(3), snap(&synthetic(10, 500_000, 5)));
    // Stalled since the 1 s page; at 3 s that is 2,000 ms > 50 ms.
    close(
        derive(&w, s(3), &Context::steps(&no_steps())).models["m"].queue_wait_ms,
        2000.0,
        1e-9,
        "stall at 3 s",
    );
    // Out of the window (11 s later) the completions are gone but the wait does not fall: 14 s − 1 s.
    for x in 4..=14 {
        w.push(s(x), snap(&synthetic(10, 500_000, 5)));
    }
    let d = derive(&w, s(14), &Context::steps(&no_steps()));
    close(d.models["m"].queue_wait_ms, 13_000.0, 1e-9, "stall at 14 s");
    close(d.pod.queue_wait_ms, 13_000.0, 1e-9, "pod stall at 14 s");
    // A completion ends the stall.
    w.push(s(15), snap(&synthetic(11, 13_500_000, 0)));
    let d = derive(&w, s(15), &Context::steps(&no_steps()));
    // Window now 5 s..15 s: Δqueue = 13,500,000 − 500,000 = 13,000,000 µs over 1 request = 13,000 ms.
    close(d.models["m"].queue_wait_ms, 13_000.0, 1e-9, "after stall");
}

#[test]
fn idle_queue_wait_is_zero_not_last() {
    let mut w = Window::new(Duration::from_secs(2));
    let s = |x| Duration::from_secs(x);
    w.push(s(0), snap(&synthetic(0, 0, 0)));
    w.push(s(1), snap(&synthetic(10, 500_000, 0)));
    for x in 2..6 {
        w.push(s(x), snap(&synthetic(10, 500_000, 0)));
    }
    // No completion in the window and nothing pending: idle, 0.
    assert_eq!(
        derive(&w, s(5), &Context::steps(&no_steps())).models["m"].queue_wait_ms,
        0.0
    );
}

#[test]
fn model_disappearing_loses_its_series() {
    let mut w = Window::new(Duration::from_secs(10));
    w.push(t(0.0), snap(&page("load-0.prom")));
    let only_fast: String = page("load-1.prom")
        .lines()
        .filter(|l| !l.contains("model=\"flaky\""))
        .map(|l| format!("{l}\n"))
        .collect();
    w.push(t(1.002), snap(&only_fast));
    let d = derive(&w, t(1.002), &Context::steps(&no_steps()));
    assert!(d.models.contains_key("fast"));
    assert!(!d.models.contains_key("flaky"));
    // Pod pending is fast's 17 only.
    assert_eq!(d.pod.pending, 17.0);
}

#[test]
fn nan_and_inf_never_reach_a_gauge() {
    let mut w = Window::new(Duration::from_secs(10));
    w.push(t(0.0), snap(&page("load-0.prom")));
    let poisoned = page("load-1.prom")
        .replace(
            "nv_inference_queue_duration_us{model=\"fast\",version=\"1\"} 33952164",
            "nv_inference_queue_duration_us{model=\"fast\",version=\"1\"} NaN",
        )
        .replace(
            "nv_inference_pending_request_count{model=\"fast\",version=\"1\"} 17",
            "nv_inference_pending_request_count{model=\"fast\",version=\"1\"} +Inf",
        );
    let s = Snapshot::parse(&poisoned).unwrap();
    assert_eq!(s.non_finite, 2);
    w.push(t(1.002), Arc::new(s));
    let d = derive(&w, t(1.002), &Context::steps(&no_steps()));
    for (name, m) in &d.models {
        for v in [
            m.queue_wait_ms,
            m.pending,
            m.request_rate,
            m.failure_rate,
            m.compute_ms,
        ] {
            assert!(v.is_finite() && v >= 0.0, "{name}: {m:?}");
        }
    }
    for v in [d.pod.queue_wait_ms, d.pod.pending, d.pod.request_rate] {
        assert!(v.is_finite() && v >= 0.0);
    }
}

#[test]
fn ensemble_steps_leave_the_pod_rate() {
    // An ensemble "ens" with steps "pre" and "infer": 10 client requests made 10 step requests each.
    let p = |n: u64, pend: u64| {
        let mut s = String::new();
        for (m, q) in [("ens", 0), ("pre", 1_000 * n), ("infer", 20_000 * n)] {
            s += &format!("nv_inference_request_success{{model=\"{m}\",version=\"1\"}} {n}\n");
            s += &format!("nv_inference_queue_duration_us{{model=\"{m}\",version=\"1\"}} {q}\n");
            s += &format!(
                "nv_inference_pending_request_count{{model=\"{m}\",version=\"1\"}} {}\n",
                if m == "infer" { pend } else { 0 }
            );
        }
        s
    };
    let mut w = Window::new(Duration::from_secs(10));
    w.push(Duration::from_secs(1), snap(&p(0, 0)));
    w.push(Duration::from_secs(2), snap(&p(10, 4)));
    let steps: HashSet<String> = ["pre".to_string(), "infer".to_string()].into();
    let d = derive(&w, Duration::from_secs(2), &Context::steps(&steps));
    // Client-facing: only ens, 10 /s (not 30 /s).
    close(d.pod.request_rate, 10.0, 1e-9, "pod rate");
    // Pending includes the step's queue.
    assert_eq!(d.pod.pending, 4.0);
    // The wait an ensemble client sees: every step's queue time over the client-facing requests,
    // (0 + 10,000 + 200,000) µs / 10 = 21 ms = 1 ms in "pre" + 20 ms in "infer". (Dividing by all
    // 30 completions gave 7 ms: the ensemble's own near-zero queue diluted its steps' waits.)
    close(d.pod.queue_wait_ms, 21.0, 1e-9, "pod queue wait");
    // The steps' config, as Triton serves it, names them.
    let cfg = br#"{"name":"ens","platform":"ensemble","ensemble_scheduling":{"step":[{"model_name":"pre","model_version":-1},{"model_name":"infer","model_version":-1}]}}"#;
    assert_eq!(
        triton_sidecar::triton::model_config::ModelInfo::from_config(cfg).steps,
        vec!["pre", "infer"]
    );
    let fast_cfg = page("v2_models_fast_config.json");
    assert!(
        triton_sidecar::triton::model_config::ModelInfo::from_config(fast_cfg.as_bytes())
            .steps
            .is_empty()
    );
}

#[test]
fn summary_only_fallback() {
    // counter_latencies=false: take the summary pages and remove every *_duration_us counter.
    let strip = |name: &str| -> String {
        page(name)
            .lines()
            .filter(|l| !l.contains("_duration_us"))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let (a, b) = (strip("summary-load-0.prom"), strip("summary-load-2.prom"));
    assert!(!a.contains("nv_inference_queue_duration_us"));
    let mut w = Window::new(Duration::from_secs(10));
    // summary-captured_at: load-0 327.076, load-2 329.080 → 2.004 s
    w.push(Duration::from_secs_f64(10.0), snap(&a));
    w.push(Duration::from_secs_f64(12.004), snap(&b));
    let d = derive(
        &w,
        Duration::from_secs_f64(12.004),
        &Context::steps(&no_steps()),
    );
    // fast queue: (45,650,853 − 14,921,878) / (940 − 308) = 30,728,975 / 632 = 48,621.8 µs = 48.62 ms
    close(
        d.models["fast"].queue_wait_ms,
        48.62,
        0.01,
        "summary queue wait",
    );
    // fast compute: (23,323,924 − 7,609,716) / 632 = 15,714,208 / 632 = 24,864.2 µs = 24.86 ms
    close(d.models["fast"].compute_ms, 24.86, 0.01, "summary compute");
}

#[test]
fn stale_data_drops_model_series() {
    let (w, _) = load_sequence();
    // 10 s window; 11 s after the last page, the data is stale.
    let d = derive(&w, t(2.003 + 11.0), &Context::steps(&no_steps()));
    assert!(d.models.is_empty());
    assert_eq!(d.pod.pending, 0.0);
}

#[test]
fn a_model_slower_than_the_poll_does_not_take_over_the_pod_wait() {
    // Polls every 200 ms. "fast": 10 requests per poll, 20 ms wait each (200,000 µs per poll).
    // "slow": one request completes every 400 ms (every other poll) after a 400 ms wait; one
    // request is always pending. Slow completes nothing in half the polls: not a stall that
    // should replace the pod's weighted mean.
    let p = |i: u64| {
        let slow_done = i / 2;
        format!(
            "nv_inference_request_success{{model=\"fast\"}} {}\nnv_inference_queue_duration_us{{model=\"fast\"}} {}\nnv_inference_pending_request_count{{model=\"fast\"}} 2\n\
             nv_inference_request_success{{model=\"slow\"}} {}\nnv_inference_queue_duration_us{{model=\"slow\"}} {}\nnv_inference_pending_request_count{{model=\"slow\"}} 1\n",
            10 * i,
            200_000 * i,
            slow_done,
            400_000 * slow_done
        )
    };
    let mut w = Window::new(Duration::from_secs(5));
    for i in 0..=40u64 {
        let now = Duration::from_millis(200 * i);
        w.push(now, snap(&p(i)));
        if i < 26 {
            continue; // let the 5 s window fill
        }
        let d = derive(&w, now, &Context::steps(&no_steps()));
        // Window 5 s = 25 polls: fast 250 requests × 20 ms, slow 12 or 13 requests × 400 ms:
        // weighted mean = (250·20 + 12.5·400) / 262.5 ≈ 38.1 ms (37.8–38.4 by parity).
        assert!(
            d.pod.queue_wait_ms < 40.0,
            "poll {i}: pod {} (slow {})",
            d.pod.queue_wait_ms,
            d.models["slow"].queue_wait_ms
        );
        close(
            d.models["slow"].queue_wait_ms,
            400.0,
            1e-6,
            "slow keeps its own wait",
        );
    }
}
