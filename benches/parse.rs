//! Parsing Triton's metrics page: bytes/s and ns per sample, at 1, 10, 100 and 1000 models.
//!
//! - `parse_full/<page>/<models>`: `text::parse` with every family wanted (labels validated,
//!   values parsed, every sample handed to the callback).
//! - `parse_skip/<page>/<models>`: `Snapshot::parse`, what the poller runs: families the agent
//!   does not use are skipped after the name, the rest are folded into per-model counters.
//!
//! `<page>` is `counters` (Triton's default metrics config) or `summary`
//! (`summary_latencies=true`); see `support/pages.rs`. Run: `cargo bench --bench parse`.
// Test code: a panic here is a failed test, not a crashed agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/pages.rs"]
mod pages;
#[path = "support/summary.rs"]
mod summary;

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use triton_sidecar::triton::snapshot::Snapshot;
use triton_sidecar::triton::text;

fn config() -> Criterion {
    // Short runs: the machine has 2 cores and is often shared.
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1200))
        .configure_from_args()
}

fn main() {
    summary::run_started();
    pages::self_check();
    let mut c = config();
    let mut rows = Vec::new();
    for mode in ["parse_full", "parse_skip"] {
        let mut g = c.benchmark_group(mode);
        for (page_name, page) in pages::PAGES {
            for n in pages::SCALES {
                let body = pages::scale(page, n);
                let samples = pages::sample_lines(&body);
                // Sanity: both parses accept the page, and the snapshot has every model.
                let stats = text::parse(&body, |_| true, |_| {}).expect("page parses");
                assert_eq!(stats.samples, samples);
                assert_eq!(Snapshot::parse(&body).expect("page parses").models.len(), n);

                g.throughput(Throughput::Bytes(body.len() as u64));
                let id = BenchmarkId::new(page_name, n);
                match mode {
                    "parse_full" => g.bench_with_input(id, &body, |b, body| {
                        b.iter(|| {
                            let mut sum = 0.0;
                            let st = text::parse(
                                black_box(body),
                                |_| true,
                                |s| sum += black_box(s).value,
                            );
                            black_box((st, sum))
                        })
                    }),
                    _ => g.bench_with_input(id, &body, |b, body| {
                        b.iter(|| black_box(Snapshot::parse(black_box(body))))
                    }),
                };
                rows.push(summary::Row {
                    id: format!("{mode}/{page_name}/{n}"),
                    bytes: body.len(),
                    samples,
                });
            }
        }
        g.finish();
    }
    c.final_summary();
    summary::print(
        "parse: ns/sample counts every sample line of the page, skipped or not",
        &rows,
    );
}
