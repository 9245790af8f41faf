//! One poll cycle, and encoding `/metrics`.
//!
//! - `poll_cycle/<page>/<models>`: what the agent does with one fetched page: `Snapshot::parse`,
//!   `Window::push` into a 10 s window that already holds ten earlier polls (1 s apart, counters
//!   rising), `derive`, and `Metrics::update` of the registry the agent keeps across polls. Each
//!   iteration gets its own clone of that window, made and dropped outside the timed part
//!   (`BatchSize::PerIteration`: like the agent, each cycle frees what the last one left).
//! - `encode/<models>`: `Metrics::encode` of the registry after an update (the `/metrics` page;
//!   the handler serves those bytes from a cache).
//!
//! Run: `cargo bench --bench cycle`.
// Test code: a panic here is a failed test, not a crashed agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/cycle.rs"]
mod cycle;
#[path = "support/pages.rs"]
mod pages;
#[path = "support/summary.rs"]
mod summary;

use std::collections::HashSet;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion};
use triton_sidecar::derive::{derive, Context};
use triton_sidecar::metrics::Metrics;
use triton_sidecar::triton::snapshot::Snapshot;

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1500))
        .configure_from_args()
}

fn main() {
    summary::run_started();
    pages::self_check();
    let mut c = config();
    let mut rows = Vec::new();
    let steps = HashSet::new();
    let drain = cycle::drain_view();
    let gpu = cycle::gpu_state();

    let mut g = c.benchmark_group("poll_cycle");
    let cases: Vec<(&str, &str, usize)> = pages::SCALES
        .iter()
        .map(|&n| ("counters", pages::COUNTERS, n))
        .chain([("summary", pages::SUMMARY, 100)])
        .collect();
    for (page_name, page, n) in cases {
        let (window, body) = cycle::warmed(page, n);
        let now = Duration::from_secs(cycle::HISTORY);
        let mut metrics = Metrics::new();
        let mut poll = cycle::poll_state();
        // Sanity: the cycle yields non-zero rates for every model.
        {
            let mut w = window.clone();
            w.push(now, Arc::new(Snapshot::parse(&body).unwrap()));
            let d = derive(&w, now, &Context::steps(&steps));
            assert_eq!(d.models.len(), n);
            assert!(
                d.pod.request_rate > 0.0,
                "rates must be non-zero: {:?}",
                d.pod
            );
            poll.derived = d;
            metrics.update(&poll, &drain, &gpu);
        }
        g.bench_function(BenchmarkId::new(page_name, n), |b| {
            b.iter_batched(
                || window.clone(),
                |mut w| {
                    let snap = Snapshot::parse(black_box(&body)).expect("page parses");
                    w.push(now, Arc::new(snap));
                    poll.derived = derive(&w, now, &Context::steps(&steps));
                    metrics.update(&poll, &drain, &gpu);
                    w // dropped outside the timed part
                },
                BatchSize::PerIteration,
            )
        });
        rows.push(summary::Row {
            id: format!("poll_cycle/{page_name}/{n}"),
            bytes: body.len(),
            samples: pages::sample_lines(&body),
        });
    }
    g.finish();

    let mut g = c.benchmark_group("encode");
    for n in [1, 10, 100, 1000] {
        let (mut w, body) = cycle::warmed(pages::COUNTERS, n);
        let now = Duration::from_secs(cycle::HISTORY);
        w.push(now, Arc::new(Snapshot::parse(&body).unwrap()));
        let mut poll = cycle::poll_state();
        poll.derived = derive(&w, now, &Context::steps(&steps));
        let mut metrics = Metrics::new();
        metrics.update(&poll, &drain, &gpu);
        let len = metrics.encode().len();
        let series = metrics
            .encode()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .count();
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| black_box(metrics.encode().len()))
        });
        rows.push(summary::Row {
            id: format!("encode/{n}"),
            bytes: len,
            samples: series,
        });
    }
    g.finish();
    c.final_summary();
    summary::print(
        "poll cycle (bytes/samples: the Triton page) and encode (bytes/samples: the /metrics page)",
        &rows,
    );
}
