//! The state one poll cycle works on, shared by `benches/cycle.rs` and
//! `examples/profile_cycle.rs` (which callgrind runs). Include after `mod pages;`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use triton_sidecar::derive::{Pushed, Window};
use triton_sidecar::drain::controller::DrainView;
use triton_sidecar::drain::DrainConfig;
use triton_sidecar::gpu::{GpuReading, GpuSource, GpuState};
use triton_sidecar::state::Phase;
use triton_sidecar::state::{Health, PollState};
use triton_sidecar::triton::snapshot::Snapshot;

pub const WINDOW: Duration = Duration::from_secs(10);
pub const HISTORY: u64 = 10;

pub fn drain_view() -> DrainView {
    DrainView {
        waiting_on: Default::default(),
        open_requests: 0,
        phase: Phase::Serving,
        trigger: None,
        result: None,
        started: None,
        quiet_since: None,
        pending: 0.0,
        generation: 0,
        last: None,
        counts: BTreeMap::new(),
        terminating: false,
        config: DrainConfig {
            min_drain: Duration::from_secs(5),
            quiet: Duration::from_secs(2),
            timeout: Duration::from_secs(90),
            triton_exit_timeout: Duration::from_secs(30),
        },
    }
}

/// One GPU, every reading present: a typical inference pod.
pub fn gpu_state() -> GpuState {
    let mut g = GpuReading::new(
        "GPU-5f1c0a4e-2b7d-4c1e-9a3f-0e1d2c3b4a59",
        "NVIDIA H100 80GB HBM3",
    );
    g.utilization_ratio = Some(0.73);
    g.memory_used_bytes = Some(41.5e9);
    g.memory_total_bytes = Some(85.0e9);
    g.power_watts = Some(412.0);
    g.temperature_celsius = Some(61.0);
    g.source = GpuSource::Nvml;
    GpuState {
        nvml_up: true,
        readings: vec![g],
    }
}

pub fn poll_state() -> PollState {
    let mut p = PollState {
        seq: 1,
        triton_up: true,
        health: Health::Ready,
        scrape_seconds: 0.002,
        ..Default::default()
    };
    for r in triton_sidecar::triton::client::Reason::ALL {
        p.scrape_errors.insert(r, 0);
    }
    p
}

/// A window holding `HISTORY` polls of `page` scaled to `n` models, and the next page.
pub fn warmed(page: &str, n: usize) -> (Window, String) {
    let mut w = Window::new(WINDOW);
    for k in 0..HISTORY {
        let snap = Snapshot::parse(&super::pages::scale_bumped(page, n, k)).expect("page parses");
        assert_eq!(
            w.push(Duration::from_secs(k), Arc::new(snap)),
            Pushed::Appended
        );
    }
    (w, super::pages::scale_bumped(page, n, HISTORY))
}
