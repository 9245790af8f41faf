//! Wiring: runs the NVML poller (when GPU gauges are on) and combines its report with Triton's
//! own `nv_gpu_*` series into the published [`GpuState`]. The only writer of the GPU state.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

use super::nvml::{read_once, spawn_nvml_poller, NvmlConfig, NvmlReport, Wanted};
use super::select::{select, wanted, GpuSelection, NO_GPU_CHOSEN};
use super::{format_gpu_line, triton_fallback, GpuReading, GpuState};
use crate::config::{GpuChoice, GpuConfig};
use crate::poller::PollState;
use crate::triton::snapshot::TritonGpuSample;

/// The selection rules' view of the `--gpu`/`--no-gpu` choice.
pub fn selection(choice: &GpuChoice) -> GpuSelection {
    match choice {
        GpuChoice::Off => GpuSelection::Off,
        GpuChoice::All => GpuSelection::All,
        GpuChoice::Uuids(u) => GpuSelection::Uuids(u.clone()),
        GpuChoice::FromTriton => GpuSelection::Auto,
    }
}

/// Triton's `nv_gpu_*` samples as GPU readings (utilization, memory, power; no name, no
/// temperature: Triton does not publish them).
pub fn triton_readings(samples: &[TritonGpuSample]) -> Vec<GpuReading> {
    let labels: Vec<[(&str, &str); 1]> = samples
        .iter()
        .map(|s| [("gpu_uuid", s.gpu_uuid.as_str())])
        .collect();
    triton_fallback::readings(
        samples
            .iter()
            .zip(labels.iter())
            .map(|(s, l)| (s.metric.as_str(), &l[..], s.value)),
    )
}

/// Spawn the GPU side; the receiver carries the state to publish.
pub fn spawn(
    cfg: &GpuConfig,
    mut polls: watch::Receiver<Arc<PollState>>,
    mut stop: watch::Receiver<bool>,
) -> watch::Receiver<GpuState> {
    let sel = selection(&cfg.choice);
    let (tx, rx) = watch::channel(select(&sel, None, None).state);
    let Some(first) = wanted(&sel, None) else {
        return rx; // --no-gpu: nothing to run
    };
    let (wanted_tx, wanted_rx) = watch::channel(first);
    let stop_flag = Arc::new(AtomicBool::new(false));
    let poller = match spawn_nvml_poller(
        NvmlConfig::new(cfg.nvml_lib.clone(), cfg.poll_interval),
        wanted_rx,
        stop_flag.clone(),
    ) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the NVML thread; GPU gauges come from Triton's page only");
            return rx;
        }
    };
    let mut reports = poller.reports;
    tokio::spawn(async move {
        let mut warned = false;
        let mut reports_open = true;
        loop {
            let triton: Option<Vec<GpuReading>> = polls
                .borrow()
                .triton_gpu
                .as_ref()
                .map(|g| triton_readings(g));
            if let Some(w) = wanted(&sel, triton.as_deref()) {
                wanted_tx.send_if_modified(|cur| {
                    let changed = *cur != w;
                    *cur = w;
                    changed
                });
            }
            let report = reports.borrow().clone();
            let s = select(&sel, Some(&report), triton.as_deref());
            if s.no_gpu_chosen && !warned {
                tracing::warn!("{NO_GPU_CHOSEN}");
                warned = true;
            }
            tx.send_if_modified(|cur| {
                let changed = *cur != s.state;
                *cur = s.state;
                changed
            });
            tokio::select! {
                r = polls.changed() => if r.is_err() { break },
                r = reports.changed(), if reports_open => if r.is_err() { reports_open = false },
                _ = crate::stopped(&mut stop) => break,
            }
        }
        stop_flag.store(true, Ordering::Relaxed);
    });
    rx
}

/// `check`'s GPU part: print the source in use and one line per GPU. `triton` is Triton's
/// `nv_gpu_*` series when `check` read the page. Returns an exit code: 1 when GPUs were asked
/// for explicitly and none could be read.
pub async fn check_report(cfg: &GpuConfig, triton: Option<&[TritonGpuSample]>) -> i32 {
    let sel = selection(&cfg.choice);
    let triton = triton.map(triton_readings);
    let Some(w) = wanted(&sel, triton.as_deref()) else {
        println!("gpu source: none (--no-gpu)");
        return 0;
    };
    let nvml_cfg = NvmlConfig::new(cfg.nvml_lib.clone(), cfg.poll_interval);
    let report = if w == Wanted::Unknown {
        NvmlReport::default()
    } else {
        let w2 = w.clone();
        match tokio::task::spawn_blocking(move || read_once(&nvml_cfg, &w2)).await {
            Ok(Ok(readings)) => NvmlReport {
                nvml_up: true,
                readings,
                error: None,
                polls: 1,
            },
            Ok(Err(e)) => NvmlReport {
                nvml_up: false,
                readings: Vec::new(),
                error: Some(e),
                polls: 1,
            },
            Err(e) => NvmlReport {
                nvml_up: false,
                readings: Vec::new(),
                error: Some(e.to_string()),
                polls: 1,
            },
        }
    };
    let s = select(&sel, Some(&report), triton.as_deref());
    let why = match (&report.error, s.no_gpu_chosen) {
        (Some(e), _) => format!(" (NVML: {e})"),
        (None, true) => format!(" ({NO_GPU_CHOSEN})"),
        _ => String::new(),
    };
    println!("gpu source: {}{}", s.state.source.as_str(), why);
    for g in &s.state.readings {
        println!("{}", format_gpu_line(g));
    }
    let explicit = matches!(sel, GpuSelection::All | GpuSelection::Uuids(_));
    if explicit && s.state.readings.is_empty() {
        eprintln!("error: no GPU could be read{why}");
        return 1;
    }
    0
}
