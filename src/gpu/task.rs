//! Wiring: runs the NVML poller (when GPU gauges are on) and combines its report with Triton's
//! own `nv_gpu_*` series into the published [`GpuState`]. The only writer of the GPU state.
//! It also enforces [`fresh`]'s staleness rules: a stale reading is never published.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;

use super::fresh::{self, stale_nvml_report, NvmlFreshness};
use super::nvml::{
    read_once, spawn_nvml_poller, NvmlConfig, NvmlFailure, NvmlPoller, NvmlReport, Wanted,
};
use super::select::{select, wanted, NO_GPU_CHOSEN};
use super::{format_gpu_line, triton_fallback, GpuReading, GpuState};
use super::{GpuChoice, GpuConfig};
use crate::state::PollState;
use crate::triton::snapshot::TritonGpuSample;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

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

/// Spawn the GPU side: the receiver carries the state to publish, and the task (`None` with
/// `--no-gpu`: nothing runs) lets the agent notice it ending. It stops when `shutdown` is
/// cancelled.
pub fn spawn(
    cfg: &GpuConfig,
    polls: watch::Receiver<Arc<PollState>>,
    shutdown: CancellationToken,
) -> (watch::Receiver<GpuState>, Option<JoinHandle<()>>) {
    spawn_with(cfg, polls, shutdown, spawn_nvml_poller)
}

/// [`spawn`] with the NVML thread's start passed in, so tests can stand in for the thread (a
/// report channel they drive) or make its start fail.
fn spawn_with<F>(
    cfg: &GpuConfig,
    polls: watch::Receiver<Arc<PollState>>,
    shutdown: CancellationToken,
    start_nvml: F,
) -> (watch::Receiver<GpuState>, Option<JoinHandle<()>>)
where
    F: FnOnce(NvmlConfig, watch::Receiver<Wanted>, Arc<AtomicBool>) -> std::io::Result<NvmlPoller>,
{
    let choice = cfg.choice.clone();
    let (tx, rx) = watch::channel(select(&choice, None, None).state);
    let Some(first) = wanted(&choice, None) else {
        return (rx, None); // --no-gpu: nothing to run
    };
    let (wanted_tx, wanted_rx) = watch::channel(first);
    let stop_flag = Arc::new(AtomicBool::new(false));
    // Without the NVML thread, Triton's page is still a source: the task runs either way.
    let reports = match start_nvml(
        NvmlConfig::new(cfg.nvml_lib.clone(), cfg.poll_interval),
        wanted_rx,
        stop_flag.clone(),
    ) {
        Ok(p) => Some(p.reports),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the NVML thread; GPU gauges come from Triton's page only");
            None
        }
    };
    let fresh = NvmlFreshness::new(fresh::nvml_stale_after(cfg.poll_interval), Instant::now());
    let task = GpuTask {
        choice,
        polls,
        reports,
        wanted: wanted_tx,
        out: tx,
        fresh,
        shutdown,
    };
    let task = tokio::spawn(async move {
        task.run().await;
        stop_flag.store(true, Ordering::Relaxed);
    });
    (rx, Some(task))
}

/// The GPU task's inputs and outputs.
struct GpuTask {
    /// The `--gpu`/`--no-gpu` choice.
    choice: GpuChoice,
    /// The poller's states: Triton's `nv_gpu_*` samples, and whether their page is still held.
    polls: watch::Receiver<Arc<PollState>>,
    /// The NVML thread's reports; `None` when the thread could not be started.
    reports: Option<watch::Receiver<NvmlReport>>,
    /// Which GPUs the NVML thread should read.
    wanted: watch::Sender<Wanted>,
    /// The published GPU state.
    out: watch::Sender<GpuState>,
    /// How old the NVML thread's newest report is.
    fresh: NvmlFreshness,
    /// Shutdown.
    shutdown: CancellationToken,
}

impl GpuTask {
    async fn run(mut self) {
        let mut warned = false;
        let mut reports_open = self.reports.is_some();
        // Last logged staleness of each source, so a change is logged once.
        let mut nvml_was_stale = false;
        let mut page_was_stale = false;
        loop {
            let now = Instant::now();
            let (held, triton) = {
                let p = self.polls.borrow_and_update();
                let t: Option<Vec<GpuReading>> = p.triton_gpu.as_ref().map(|g| triton_readings(g));
                (p.derived.present, t)
            };
            // The GPU set follows even a stale page: it still names Triton's GPUs.
            if let Some(w) = wanted(&self.choice, triton.as_deref()) {
                self.wanted.send_if_modified(|cur| {
                    let changed = *cur != w;
                    *cur = w;
                    changed
                });
            }
            let report = match self.reports.as_mut() {
                Some(r) => {
                    let rep = r.borrow_and_update().clone();
                    self.fresh.report(&rep, now);
                    let stale = !self.fresh.fresh(now);
                    if stale != nvml_was_stale {
                        let age = self.fresh.age(now).as_secs_f64();
                        if stale {
                            tracing::warn!(seconds = age, "NVML has not answered for {age:.1}s (a call hangs, or is very slow): nvml_up is 0, and GPU values come from Triton's nv_gpu_* series where its page has them");
                        } else {
                            tracing::info!("NVML answers again");
                        }
                        nvml_was_stale = stale;
                    }
                    Some(if stale {
                        stale_nvml_report(&rep, self.fresh.age(now))
                    } else {
                        rep
                    })
                }
                None => None,
            };
            // Triton's values follow the rule of every Triton-derived series: served while the
            // derivation holds the last good page (one --window), then gone. The set stays.
            let page_stale = triton.is_some() && !held;
            if page_stale != page_was_stale {
                tracing::debug!(
                    stale = page_stale,
                    "Triton's last good page changed staleness; its nv_gpu_* values are served only while it is held"
                );
                page_was_stale = page_stale;
            }
            let triton = match triton {
                Some(t) if page_stale => Some(triton_fallback::labels_only(&t)),
                t => t,
            };
            let s = select(&self.choice, report.as_ref(), triton.as_deref());
            if s.no_gpu_chosen && !warned {
                tracing::warn!("{NO_GPU_CHOSEN}");
                warned = true;
            }
            self.out.send_if_modified(|cur| {
                let changed = *cur != s.state;
                *cur = s.state;
                changed
            });
            // Look again when NVML's report turns stale even if nothing new arrives: that is
            // exactly what a hanging call looks like. (The poller publishes every poll, so a
            // page going stale arrives as a new state.)
            let expiry = self.fresh.expires(now);
            let wake = expiry.unwrap_or(now);
            let reports = &mut self.reports;
            tokio::select! {
                r = self.polls.changed() => if r.is_err() { break },
                r = async {
                    match reports.as_mut() {
                        Some(r) => r.changed().await,
                        None => std::future::pending().await,
                    }
                }, if reports_open => if r.is_err() { reports_open = false },
                _ = tokio::time::sleep_until(wake), if expiry.is_some() => {}
                _ = self.shutdown.cancelled() => break,
            }
        }
    }
}

/// `check`'s GPU part: print the source in use and one line per GPU. `triton` is Triton's
/// `nv_gpu_*` series when `check` read the page. Returns an exit code: 1 when GPUs were asked
/// for explicitly and none could be read.
pub async fn check_report(cfg: &GpuConfig, triton: Option<&[TritonGpuSample]>) -> i32 {
    let choice = &cfg.choice;
    let triton = triton.map(triton_readings);
    let Some(w) = wanted(choice, triton.as_deref()) else {
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
                error: Some(NvmlFailure::ReadTask(e.to_string())),
                polls: 1,
            },
        }
    };
    let s = select(choice, Some(&report), triton.as_deref());
    let why = match (&report.error, s.no_gpu_chosen) {
        (Some(e), _) => format!(" (NVML: {e})"),
        (None, true) => format!(" ({NO_GPU_CHOSEN})"),
        _ => String::new(),
    };
    println!("gpu source: {}{}", s.state.sources_label(), why);
    for g in &s.state.readings {
        println!("{}", format_gpu_line(g));
    }
    let explicit = matches!(choice, GpuChoice::All | GpuChoice::Uuids(_));
    if explicit && s.state.readings.is_empty() {
        eprintln!("error: no GPU could be read{why}");
        return 1;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::GpuSource;
    use std::time::Duration;

    const A: &str = "GPU-aaaa";
    const B: &str = "GPU-bbbb";

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    /// Triton's `nv_gpu_*` samples for `uuids`, with utilization `util`.
    fn page_gpus(uuids: &[&str], util: f64) -> Vec<TritonGpuSample> {
        let mut v = Vec::new();
        for u in uuids {
            for (metric, value) in [
                ("nv_gpu_utilization", util),
                ("nv_gpu_memory_used_bytes", 1.0),
                ("nv_gpu_memory_total_bytes", 4.0),
            ] {
                v.push(TritonGpuSample {
                    metric: metric.into(),
                    gpu_uuid: (*u).into(),
                    value,
                });
            }
        }
        v
    }

    /// A poll whose scrape succeeded (`up`) or not, and whose last good page is still held
    /// (`up` or a failure within the window: the derivation's `present`).
    fn poll_held(seq: u64, up: bool, held: bool, gpus: &[&str], util: f64) -> Arc<PollState> {
        let mut p = PollState {
            seq,
            triton_up: up,
            triton_gpu: Some(Arc::new(page_gpus(gpus, util))),
            ..Default::default()
        };
        p.derived.present = held;
        Arc::new(p)
    }

    fn poll(seq: u64, up: bool, gpus: &[&str], util: f64) -> Arc<PollState> {
        poll_held(seq, up, up, gpus, util)
    }

    fn nvml_reading(uuid: &str, util: f64) -> GpuReading {
        GpuReading::for_tests(uuid, util)
    }

    fn report(polls: u64, readings: Vec<GpuReading>) -> NvmlReport {
        NvmlReport {
            nvml_up: true,
            readings,
            error: None,
            polls,
        }
    }

    /// The GPU config the tests use: Triton's GPUs, NVML read every second.
    fn cfg() -> GpuConfig {
        GpuConfig {
            choice: GpuChoice::FromTriton,
            nvml_lib: None,
            poll_interval: Duration::from_secs(1),
        }
    }

    /// A stand-in NVML thread whose reports the test sends.
    fn fake_nvml(
        reports: watch::Receiver<NvmlReport>,
    ) -> impl FnOnce(NvmlConfig, watch::Receiver<Wanted>, Arc<AtomicBool>) -> std::io::Result<NvmlPoller>
    {
        move |_, _, _| {
            Ok(NvmlPoller {
                reports,
                thread: std::thread::spawn(|| {}),
            })
        }
    }

    /// Waits (on the paused clock) until `pred` holds; panics with the last state after `within`.
    async fn until(
        rx: &mut watch::Receiver<GpuState>,
        within: Duration,
        what: &str,
        pred: impl Fn(&GpuState) -> bool,
    ) {
        let r = tokio::time::timeout(within, async {
            loop {
                if pred(&rx.borrow_and_update()) {
                    return;
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
        .await;
        assert!(
            r.is_ok(),
            "{what}: not within {within:?}; last {:?}",
            *rx.borrow()
        );
    }

    fn util(s: &GpuState, uuid: &str) -> Option<f64> {
        s.readings
            .iter()
            .find(|r| r.uuid == uuid)
            .and_then(|r| r.utilization_ratio)
    }

    fn source(s: &GpuState, uuid: &str) -> Option<GpuSource> {
        s.readings.iter().find(|r| r.uuid == uuid).map(|r| r.source)
    }

    fn uuids(s: &GpuState) -> Vec<&str> {
        s.readings.iter().map(|r| r.uuid.as_str()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn nvml_that_stops_answering_goes_down_and_triton_fills_in() {
        let (poll_tx, poll_rx) = watch::channel(poll(1, true, &[A], 0.25));
        let (rep_tx, rep_rx) = watch::channel(report(1, vec![nvml_reading(A, 0.75)]));
        let shutdown = CancellationToken::new();
        let mut gpu = spawn_with(&cfg(), poll_rx, shutdown, fake_nvml(rep_rx)).0;
        until(&mut gpu, ms(100), "NVML's reading", |s| {
            s.nvml_up && util(s, A) == Some(0.75) && source(s, A) == Some(GpuSource::Nvml)
        })
        .await;
        // NVML answers every second for 5 s, Triton too: nothing changes.
        let t0 = Instant::now();
        let mut n = 1;
        while t0.elapsed() < ms(5000) {
            tokio::time::sleep(ms(1000)).await;
            n += 1;
            rep_tx.send_replace(report(n, vec![nvml_reading(A, 0.75)]));
            poll_tx.send_replace(poll(n, true, &[A], 0.25));
            let s = gpu.borrow().clone();
            assert!(s.nvml_up && util(&s, A) == Some(0.75), "{s:?}");
        }
        // Now a call hangs: no report arrives. Triton keeps answering.
        let hung = Instant::now();
        let keep_polling = async {
            loop {
                tokio::time::sleep(ms(1000)).await;
                n += 1;
                poll_tx.send_replace(poll(n, true, &[A], 0.25));
            }
        };
        tokio::select! {
            _ = keep_polling => {}
            _ = until(&mut gpu, ms(10_000), "NVML down, Triton's value", |s| {
                !s.nvml_up && util(s, A) == Some(0.25) && source(s, A) == Some(GpuSource::Triton)
            }) => {}
        }
        let took = hung.elapsed();
        // 3 × the 1 s interval after the last report.
        assert!(took >= ms(3000) && took <= ms(3100), "{took:?}");
        // It answers again.
        rep_tx.send_replace(report(n + 1, vec![nvml_reading(A, 0.5)]));
        until(&mut gpu, ms(100), "NVML back", |s| {
            s.nvml_up && util(s, A) == Some(0.5) && source(s, A) == Some(GpuSource::Nvml)
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn tritons_values_go_once_its_last_good_page_is_no_longer_held() {
        // No NVML at all: the values come from Triton's page.
        let (poll_tx, poll_rx) = watch::channel(poll(1, true, &[A], 0.25));
        let shutdown = CancellationToken::new();
        let no_nvml = |_: NvmlConfig, _: watch::Receiver<Wanted>, _: Arc<AtomicBool>| {
            let (_tx, rx) = watch::channel(NvmlReport::default());
            // The sender is dropped: a thread that has ended, reporting NVML down.
            Ok(NvmlPoller {
                reports: rx,
                thread: std::thread::spawn(|| {}),
            })
        };
        let mut gpu = spawn_with(&cfg(), poll_rx, shutdown, no_nvml).0;
        until(&mut gpu, ms(100), "Triton's value", |s| {
            util(s, A) == Some(0.25) && source(s, A) == Some(GpuSource::Triton)
        })
        .await;
        // Scrapes fail; within the window the last page is held, and so are its GPU values.
        poll_tx.send_replace(poll_held(2, false, true, &[A], 0.25));
        tokio::time::sleep(ms(1000)).await;
        assert_eq!(util(&gpu.borrow(), A), Some(0.25));
        // Past the window the derivation lets the page go: its GPU values go with it.
        poll_tx.send_replace(poll_held(3, false, false, &[A], 0.25));
        until(&mut gpu, ms(100), "no frozen values", |s| {
            s.readings.is_empty() && s.sources() == [GpuSource::None]
        })
        .await;
        // A good page brings them back.
        poll_tx.send_replace(poll(4, true, &[A], 0.5));
        until(&mut gpu, ms(100), "Triton's new value", |s| {
            util(s, A) == Some(0.5)
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn gpus_nvml_cannot_see_are_filled_from_tritons_page() {
        let (_poll_tx, poll_rx) = watch::channel(poll(1, true, &[A, B], 0.25));
        // NVML sees A only (B is not visible in this container).
        let (_rep_tx, rep_rx) = watch::channel(report(1, vec![nvml_reading(A, 0.75)]));
        let shutdown = CancellationToken::new();
        let mut gpu = spawn_with(&cfg(), poll_rx, shutdown, fake_nvml(rep_rx)).0;
        until(&mut gpu, ms(100), "A from NVML, B from Triton", |s| {
            uuids(s) == [A, B]
                && util(s, A) == Some(0.75)
                && source(s, A) == Some(GpuSource::Nvml)
                && util(s, B) == Some(0.25)
                && source(s, B) == Some(GpuSource::Triton)
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_nvml_thread_spawn_still_falls_back_to_triton() {
        let (_poll_tx, poll_rx) = watch::channel(poll(1, true, &[A], 0.25));
        let shutdown = CancellationToken::new();
        let cannot_spawn = |_: NvmlConfig, _: watch::Receiver<Wanted>, _: Arc<AtomicBool>| {
            Err(std::io::Error::other("no more threads"))
        };
        let mut gpu = spawn_with(&cfg(), poll_rx, shutdown, cannot_spawn).0;
        until(&mut gpu, ms(100), "Triton's value", |s| {
            !s.nvml_up && util(s, A) == Some(0.25) && source(s, A) == Some(GpuSource::Triton)
        })
        .await;
    }
}
