//! The work `benches/cycle.rs` times, split into stages, for a wall-time breakdown and for
//! `valgrind --tool=callgrind` (instruction counts are stable on a shared machine; wall time
//! is not). Each stage is its own `#[inline(never)]` function, so callgrind's inclusive count of
//! `profile_cycle::stage_*` is that stage's cost:
//!
//! - `stage_full`: `text::parse` with every family wanted (the "full parse" of the benches);
//! - `stage_filter`: `text::parse` with the agent's name filter, samples dropped (the parser's
//!   share of `Snapshot::parse`);
//! - `stage_snapshot`: `Snapshot::parse` (parser + folding samples into per-model counters);
//! - `stage_push`, `stage_derive`, `stage_update`: `Window::push`, `derive`, `Metrics::update`;
//! - `stage_encode`: `Metrics::encode`.
//!
//! `profile_cycle [MODELS] [ITERS]` (default 100 models, 1000 iterations; `PAGE=summary` for the
//! summary page) prints the median of each stage. Command for the profile: see
//! docs/benchmarks.md.
// Test code: a panic here is a failed test, not a crashed agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../benches/support/cycle.rs"]
mod cycle;
#[path = "../benches/support/pages.rs"]
mod pages;

use std::collections::HashSet;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use triton_sidecar::derive::{derive, Context, Derived, Window};
use triton_sidecar::drain::controller::DrainView;
use triton_sidecar::gpu::GpuState;
use triton_sidecar::metrics::Metrics;
use triton_sidecar::state::PollState;
use triton_sidecar::triton::snapshot::{self, Snapshot};
use triton_sidecar::triton::text;

#[inline(never)]
fn stage_full(body: &str) -> usize {
    let mut n = 0;
    text::parse(
        black_box(body),
        |_| true,
        |s| {
            black_box(s);
            n += 1;
        },
    )
    .expect("page parses");
    n
}

#[inline(never)]
fn stage_filter(body: &str) -> usize {
    let mut n = 0;
    text::parse(black_box(body), snapshot::wanted, |s| {
        black_box(s);
        n += 1;
    })
    .expect("page parses");
    n
}

#[inline(never)]
fn stage_snapshot(body: &str) -> Snapshot {
    Snapshot::parse(black_box(body)).expect("page parses")
}

#[inline(never)]
fn stage_push(w: &mut Window, now: Duration, snap: Snapshot) {
    w.push(now, Arc::new(snap));
}

#[inline(never)]
fn stage_derive(w: &Window, now: Duration, steps: &HashSet<String>) -> Derived {
    derive(w, now, &Context::steps(steps))
}

#[inline(never)]
fn stage_update(m: &mut Metrics, poll: &PollState, drain: &DrainView, gpu: &GpuState) {
    m.update(poll, drain, gpu);
}

#[inline(never)]
fn stage_encode(m: &mut Metrics) -> usize {
    m.encode().len()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let iters: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let page = match std::env::var("PAGE").as_deref() {
        Ok("summary") => pages::SUMMARY,
        _ => pages::COUNTERS,
    };
    let (window, body) = cycle::warmed(page, n);
    let now = Duration::from_secs(cycle::HISTORY);
    let steps = HashSet::new();
    let drain = cycle::drain_view();
    let gpu = cycle::gpu_state();
    let mut poll = cycle::poll_state();
    let mut metrics = Metrics::new();
    const STAGES: [&str; 8] = [
        "full parse (text::parse, all)",
        "filter only",
        "Snapshot::parse",
        "Window::push",
        "derive",
        "Metrics::update",
        "cycle (parse+push+derive+update)",
        "Metrics::encode",
    ];
    let mut t: Vec<Vec<Duration>> = vec![Vec::with_capacity(iters); STAGES.len()];
    let mut total = 0usize;
    for _ in 0..iters {
        let mut w = window.clone();
        let tf = Instant::now();
        total += stage_full(&body);
        let t0 = Instant::now();
        total += stage_filter(&body);
        let t1 = Instant::now();
        let snap = stage_snapshot(&body);
        let t2 = Instant::now();
        stage_push(&mut w, now, snap);
        let t3 = Instant::now();
        let d = stage_derive(&w, now, &steps);
        let t4 = Instant::now();
        poll.derived = d;
        stage_update(&mut metrics, &poll, &drain, &gpu);
        let t5 = Instant::now();
        total += stage_encode(&mut metrics);
        let t6 = Instant::now();
        for (i, (a, b)) in [
            (tf, t0),
            (t0, t1),
            (t1, t2),
            (t2, t3),
            (t3, t4),
            (t4, t5),
            (t1, t5),
            (t5, t6),
        ]
        .into_iter()
        .enumerate()
        {
            t[i].push(b - a);
        }
    }
    println!(
        "{iters} iterations at {n} models ({} page, {} bytes); medians:",
        if page == pages::SUMMARY {
            "summary"
        } else {
            "counters"
        },
        body.len()
    );
    for (name, v) in STAGES.iter().zip(t.iter_mut()) {
        v.sort();
        let med = v.get(v.len() / 2).copied().unwrap_or_default();
        println!("  {name:<34} {:>9.1} µs", med.as_secs_f64() * 1e6);
    }
    black_box(total);
}
