//! Our side of the peer comparison (`benches/peers/run.sh`): parse each page file given on the
//! command line, repeatedly, and print one line per file and mode:
//! `<parser>\t<file>\t<bytes>\t<sample lines>\t<best ns per parse>`.
//!
//! Modes:
//! - `rust`: `text::parse` with every family wanted (labels validated, value parsed).
//! - `rust+labels`: the same, and each sample's labels iterated (names and values sliced out),
//!   closer to the label pairs Go's and Python's parsers build.
//! - `rust-skip`: `Snapshot::parse`, what the agent runs.
//!
//! Timing: ROUNDS rounds of at least MIN_ROUND_S each (after one warm-up round); the best
//! round's mean time per parse is printed, the usual choice on a shared machine.
// Test code: a panic here is a failed test, not a crashed agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../benches/support/pages.rs"]
mod pages;

use std::hint::black_box;
use std::time::{Duration, Instant};

use triton_sidecar::triton::snapshot::Snapshot;
use triton_sidecar::triton::text;

fn env_f64(k: &str, d: f64) -> f64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn best_ns(mut f: impl FnMut()) -> f64 {
    let rounds = env_f64("ROUNDS", 5.0) as usize;
    let min_round = Duration::from_secs_f64(env_f64("MIN_ROUND_S", 0.2));
    let mut best = f64::INFINITY;
    for r in 0..=rounds {
        let t0 = Instant::now();
        let mut iters = 0u64;
        while t0.elapsed() < min_round {
            f();
            iters += 1;
        }
        let per = t0.elapsed().as_nanos() as f64 / iters as f64;
        if r > 0 {
            best = best.min(per);
        }
    }
    best
}

fn main() {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.is_empty() {
        eprintln!("usage: parse_files PAGE.prom...");
        std::process::exit(2);
    }
    for path in files {
        let body = std::fs::read_to_string(&path).expect("read page");
        let samples = pages::sample_lines(&body);
        let st = text::parse(&body, |_| true, |_| {}).expect("page parses");
        assert_eq!(st.samples, samples, "{path}");
        let full = best_ns(|| {
            let mut sum = 0.0;
            let st = text::parse(black_box(&body), |_| true, |s| sum += black_box(s).value);
            black_box((st.ok(), sum));
        });
        let labels = best_ns(|| {
            let mut n = 0usize;
            let st = text::parse(
                black_box(&body),
                |_| true,
                |s| {
                    for (k, v) in s.labels() {
                        n += k.len() + v.len();
                    }
                    black_box(s.value);
                },
            );
            black_box((st.ok(), n));
        });
        let skip = best_ns(|| {
            black_box(Snapshot::parse(black_box(&body)).expect("page parses"));
        });
        for (mode, ns) in [("rust", full), ("rust+labels", labels), ("rust-skip", skip)] {
            println!("{mode}\t{path}\t{}\t{samples}\t{ns:.0}", body.len());
        }
    }
}
