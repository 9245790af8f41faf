//! KV-cache occupancy, active ratio and offered load over fixture pages written from each LLM
//! backend's published format (tests/fixtures/backends, see tests/fixtures/README.md): the
//! TensorRT-LLM backend with and without the `waiting`/`fraction` types, and Triton's vLLM
//! backend, which publishes no KV gauge. A gauge is absent (never 0) where its input is.
// Test code: a panic here is a failed test, not a crashed agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use triton_sidecar::derive::{derive, Context, Window};
use triton_sidecar::triton::snapshot::Snapshot;

fn page(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/backends/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The raw value of `family{...label="value"...}` for `model` on the page, read without the
/// agent's parser, so the expectation does not reuse the code under test.
fn raw(body: &str, family: &str, model: &str, label: &str) -> Option<f64> {
    body.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter(|l| l.contains(&format!("model=\"{model}\"")) && l.contains(label))
        .map(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok()))
        .next()
        .flatten()
}

#[test]
fn kv_occupancy_and_active_ratio_per_backend() {
    // (page, model, expected occupancy, expected active ratio, expected pending)
    type Want = Option<f64>;
    let kv = "nv_trt_llm_kv_cache_block_metrics";
    let rq = "nv_trt_llm_request_metrics";
    let cases: Vec<(&str, &str, Want, Want, f64)> = {
        let new = page("trtllm_new.prom");
        let old = page("trtllm_old.prom");
        let vllm = page("vllm.prom");
        vec![
            (
                "trtllm_new.prom",
                "tensorrt_llm",
                // `fraction` is published: it is the occupancy.
                raw(&new, kv, "tensorrt_llm", "\"fraction\""),
                Some(
                    raw(&new, rq, "tensorrt_llm", "\"active\"").unwrap()
                        / raw(&new, rq, "tensorrt_llm", "\"max\"").unwrap(),
                ),
                // Triton's pending (0) plus TensorRT-LLM's waiting.
                raw(&new, rq, "tensorrt_llm", "\"waiting\"").unwrap(),
            ),
            // The ensemble and its Python steps are not TensorRT-LLM: absent.
            ("trtllm_new.prom", "ensemble", None, None, 0.0),
            ("trtllm_new.prom", "preprocessing", None, None, 0.0),
            (
                "trtllm_old.prom",
                "tensorrt_llm",
                // No `fraction`: used / max.
                Some(
                    raw(&old, kv, "tensorrt_llm", "\"used\"").unwrap()
                        / raw(&old, kv, "tensorrt_llm", "\"max\"").unwrap(),
                ),
                Some(
                    raw(&old, rq, "tensorrt_llm", "\"active\"").unwrap()
                        / raw(&old, rq, "tensorrt_llm", "\"max\"").unwrap(),
                ),
                // No `waiting`: Triton's own pending count alone.
                raw(
                    &old,
                    "nv_inference_pending_request_count",
                    "tensorrt_llm",
                    "",
                )
                .unwrap(),
            ),
            (
                "vllm.prom",
                "vllm_model",
                None,
                None,
                // Triton's pending (0) plus vLLM's own queue, keyed by the `model` label.
                raw(&vllm, "vllm:num_requests_waiting", "vllm_model", "").unwrap()
                    + raw(
                        &vllm,
                        "nv_inference_pending_request_count",
                        "vllm_model",
                        "",
                    )
                    .unwrap(),
            ),
        ]
    };
    for (file, model, occ, active, pending) in cases {
        let snap = Arc::new(Snapshot::parse(&page(file)).expect(file));
        let mut w = Window::new(Duration::from_secs(10));
        w.push(Duration::from_secs(1), snap);
        let d = derive(&w, Duration::from_secs(1), &Context::steps(&HashSet::new()));
        let m = d
            .models
            .get(model)
            .unwrap_or_else(|| panic!("{file}: {model}"));
        assert_eq!(m.kv_occupancy, occ, "{file} {model} occupancy");
        assert_eq!(m.active_ratio, active, "{file} {model} active ratio");
        assert_eq!(m.pending, pending, "{file} {model} pending");
        for v in [m.kv_occupancy, m.active_ratio].into_iter().flatten() {
            assert!(
                v.is_finite() && (0.0..=1.0).contains(&v),
                "{file} {model}: {v}"
            );
        }
    }
}

#[test]
fn fraction_wins_over_used_over_max_and_a_zero_max_gives_no_ratio() {
    // Synthetic variations of the published format: a fraction that disagrees with used/max
    // (the backend's own figure is taken), and max = 0 (a backend still starting).
    let page = |fraction: Option<f64>, used: f64, max: f64, active: f64, rmax: f64| {
        let mut s = String::from("nv_inference_request_success{model=\"t\",version=\"1\"} 1\n");
        if let Some(f) = fraction {
            s += &format!("nv_trt_llm_kv_cache_block_metrics{{kv_cache_block_type=\"fraction\",model=\"t\",version=\"1\"}} {f}\n");
        }
        s += &format!("nv_trt_llm_kv_cache_block_metrics{{kv_cache_block_type=\"used\",model=\"t\",version=\"1\"}} {used}\n");
        s += &format!("nv_trt_llm_kv_cache_block_metrics{{kv_cache_block_type=\"max\",model=\"t\",version=\"1\"}} {max}\n");
        s += &format!("nv_trt_llm_request_metrics{{model=\"t\",request_type=\"active\",version=\"1\"}} {active}\n");
        s += &format!(
            "nv_trt_llm_request_metrics{{model=\"t\",request_type=\"max\",version=\"1\"}} {rmax}\n"
        );
        let mut w = Window::new(Duration::from_secs(10));
        w.push(
            Duration::from_secs(1),
            Arc::new(Snapshot::parse(&s).unwrap()),
        );
        derive(&w, Duration::from_secs(1), &Context::steps(&HashSet::new())).models["t"]
    };
    let m = page(Some(0.5), 10.0, 100.0, 4.0, 16.0);
    assert_eq!(m.kv_occupancy, Some(0.5));
    assert_eq!(m.active_ratio, Some(0.25));
    let m = page(None, 10.0, 0.0, 4.0, 0.0);
    assert_eq!(m.kv_occupancy, None);
    assert_eq!(m.active_ratio, None);
    // A negative fraction (a broken exporter) is clamped, never published below 0.
    let m = page(Some(-0.2), 10.0, 100.0, 0.0, 16.0);
    assert_eq!(m.kv_occupancy, Some(0.0));
}

#[test]
fn offered_load_counts_arrivals_that_did_not_complete() {
    // Two pages 2 s apart: 10 completed, 4 failed, and the queue grew by 6 (TensorRT-LLM's own
    // waiting count): 20 arrivals, 10 per second, while the request rate says 5.
    let body = |success: u64, failure: u64, waiting: u64| {
        format!(
            "nv_inference_request_success{{model=\"t\",version=\"1\"}} {success}\n\
             nv_inference_request_failure{{model=\"t\",reason=\"BACKEND\",version=\"1\"}} {failure}\n\
             nv_inference_pending_request_count{{model=\"t\",version=\"1\"}} 0\n\
             nv_trt_llm_request_metrics{{model=\"t\",request_type=\"waiting\",version=\"1\"}} {waiting}\n"
        )
    };
    let mut w = Window::new(Duration::from_secs(10));
    w.push(
        Duration::from_secs(1),
        Arc::new(Snapshot::parse(&body(100, 1, 2)).unwrap()),
    );
    w.push(
        Duration::from_secs(3),
        Arc::new(Snapshot::parse(&body(110, 5, 8)).unwrap()),
    );
    let d = derive(&w, Duration::from_secs(3), &Context::steps(&HashSet::new()));
    assert_eq!(d.models["t"].request_rate, 5.0);
    assert_eq!(d.models["t"].offered_load_rps, 10.0);
    assert_eq!(d.pod.offered_load_rps, 10.0);
    // A queue that drains is not negative load: 10 completed while the queue fell by 20.
    w.push(
        Duration::from_secs(5),
        Arc::new(Snapshot::parse(&body(120, 5, 0)).unwrap()),
    );
    let d = derive(&w, Duration::from_secs(5), &Context::steps(&HashSet::new()));
    // Over the window (t = 1 to 5): 20 completed + 4 failed − 2 queue = 22 in 4 s.
    assert_eq!(d.models["t"].offered_load_rps, 5.5);
}

/// vLLM's queue is pending per model (Triton's vLLM backend labels `model`), and each request
/// is counted once in the in-flight total the drain reads: waiting in pending, running beside
/// it, series without a `model` label (a vLLM server of its own) once, pod-wide.
#[test]
fn vllm_waiting_is_pending_per_model_and_counted_once_in_flight() {
    let body = page("vllm.prom");
    let snap = Snapshot::parse(&body).expect("vllm.prom");
    let m = &snap.models["vllm_model"];
    let waiting = raw(&body, "vllm:num_requests_waiting", "vllm_model", "").unwrap();
    let running = raw(&body, "vllm:num_requests_running", "vllm_model", "").unwrap();
    let pending = raw(
        &body,
        "nv_inference_pending_request_count",
        "vllm_model",
        "",
    )
    .unwrap();
    assert_eq!(m.pending_total(), pending + waiting);
    assert_eq!(snap.in_flight(), pending + waiting + running);

    let two = "vllm:num_requests_waiting{model=\"a\",version=\"1\"} 3\n\
               vllm:num_requests_running{model=\"a\",version=\"1\"} 1\n\
               vllm:num_requests_waiting{model=\"b\",version=\"1\"} 0\n\
               vllm:num_requests_running{model=\"b\",version=\"1\"} 2\n\
               nv_inference_pending_request_count{model=\"b\",version=\"1\"} 4\n\
               vllm:num_requests_waiting{model_name=\"standalone\"} 5\n\
               vllm:num_requests_running{model_name=\"standalone\"} 6\n";
    let snap = Snapshot::parse(two).unwrap();
    assert_eq!(snap.models["a"].pending_total(), 3.0);
    assert_eq!(snap.models["b"].pending_total(), 4.0);
    assert!(!snap.models.contains_key("standalone"));
    assert_eq!(snap.in_flight(), 3.0 + 1.0 + 4.0 + 2.0 + 5.0 + 6.0);
    // Offered load counts the queue: a model with waiting requests and no completions is loaded.
    let mut w = Window::new(Duration::from_secs(10));
    w.push(Duration::from_secs(1), Arc::new(snap));
    let d = derive(&w, Duration::from_secs(1), &Context::steps(&HashSet::new()));
    assert_eq!(d.models["a"].pending, 3.0);
}

/// A long stream moves no counter for minutes: a model whose TensorRT-LLM backend holds one
/// active request, or whose vLLM backend runs one, is not idle (its utilization is not the idle
/// 0), and neither is one whose iteration counter moves. Only a model with nothing in flight and
/// nothing moving is.
#[test]
fn a_stream_in_flight_is_never_idle() {
    let page = |extra: &str| {
        format!(
            "nv_inference_request_success{{model=\"t\",version=\"1\"}} 10\n\
             nv_inference_request_failure{{model=\"t\",version=\"1\"}} 0\n\
             nv_inference_exec_count{{model=\"t\",version=\"1\"}} 10\n\
             nv_inference_pending_request_count{{model=\"t\",version=\"1\"}} 0\n{extra}"
        )
    };
    let idle_after = |first: &str, second: &str| {
        let mut w = Window::new(Duration::from_secs(10));
        w.push(
            Duration::from_secs(1),
            Arc::new(Snapshot::parse(&page(first)).unwrap()),
        );
        w.push(
            Duration::from_secs(2),
            Arc::new(Snapshot::parse(&page(second)).unwrap()),
        );
        derive(&w, Duration::from_secs(2), &Context::steps(&HashSet::new())).models["t"].idle
    };
    let active =
        "nv_trt_llm_request_metrics{model=\"t\",request_type=\"active\",version=\"1\"} 1\n";
    let running = "vllm:num_requests_running{model=\"t\",version=\"1\"} 1\n";
    let iterations = |n: u32| {
        format!("nv_trt_llm_general_metrics{{model=\"t\",general_type=\"iteration_counter\",version=\"1\"}} {n}\n")
    };
    assert!(
        idle_after("", ""),
        "the control: nothing in flight, nothing moved"
    );
    assert!(!idle_after(active, active), "TensorRT-LLM active request");
    assert!(!idle_after(running, running), "vLLM running request");
    assert!(
        !idle_after(&iterations(5), &iterations(9)),
        "iterations ran"
    );
    assert!(
        idle_after(&iterations(5), &iterations(5)),
        "iterations still"
    );
}
