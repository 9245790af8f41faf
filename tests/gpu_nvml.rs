//! The NVML poller against the fake `libnvidia-ml.so` (`tests/fake-nvml/`), through the real
//! `nvml-wrapper` loading path: `dlopen`, symbol lookup, calls, `Drop`.
//!
//! Each test copies the fake library into its own directory and writes `fake-nvml.json` beside
//! it. A copy loaded from its own path has its own state, and the config beside it keeps tests
//! independent although they share one process environment (so `FAKE_NVML_CONFIG` stays unset).
//!
//! The library is built once per test binary by `cargo build -p fake-nvml` into
//! `$CARGO_TARGET_DIR/fake-nvml` (or `target/fake-nvml`), and the `minimal` feature into
//! `.../fake-nvml-minimal`. Set `FAKE_NVML_LIB` / `FAKE_NVML_LIB_MINIMAL` to a prebuilt `.so` to
//! skip the build.
// Test code: a panic here is a failed test, not a crashed agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use triton_sidecar::gpu::nvml::{
    read_once, spawn_nvml_poller, NvmlConfig, NvmlPoller, NvmlReport, Wanted,
};
use triton_sidecar::gpu::select;
use triton_sidecar::gpu::GpuChoice;
use triton_sidecar::gpu::{triton_fallback, GpuReading, GpuSource};

mod support;
use support::nvml::fake_lib;

const A: &str = "GPU-aaaaaaaa-0000-0000-0000-000000000001";
const B: &str = "GPU-bbbbbbbb-0000-0000-0000-000000000002";
const GIB: u64 = 1 << 30;

/// A directory holding one copy of the fake library and its config.
struct Fake {
    dir: PathBuf,
    lib: PathBuf,
}

impl Fake {
    fn new(test: &str, minimal: bool, config: serde_json::Value) -> Fake {
        let dir =
            std::env::temp_dir().join(format!("triton-sidecar-gpu-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create test dir");
        let lib = dir.join("libnvidia-ml.so.1");
        std::fs::copy(fake_lib(minimal), &lib).expect("copy fake lib");
        let fake = Fake { dir, lib };
        fake.write(config);
        fake
    }

    /// Replaces the config atomically, so the library never reads half a file.
    fn write(&self, config: serde_json::Value) {
        let tmp = self.dir.join("fake-nvml.json.tmp");
        std::fs::write(&tmp, config.to_string()).expect("write config");
        std::fs::rename(&tmp, self.dir.join("fake-nvml.json")).expect("rename config");
    }

    /// Init and shutdown calls the library logged, in order.
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("fake-nvml.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn config(&self) -> NvmlConfig {
        let mut cfg = NvmlConfig::new(Some(self.lib.clone()), Duration::from_millis(20));
        cfg.max_backoff = Duration::from_millis(200);
        cfg
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn device(uuid: &str, name: &str, util: u64) -> serde_json::Value {
    serde_json::json!({
        "uuid": uuid, "name": name, "utilization": util,
        "memory_used": 3 * GIB, "memory_total": 80 * GIB,
        "power_mw": 251_500, "temperature": 45,
    })
}

fn two_gpus() -> serde_json::Value {
    serde_json::json!({ "devices": [device(A, "NVIDIA H100 80GB HBM3", 37), device(B, "NVIDIA A100-SXM4-40GB", 5)] })
}

struct Running {
    poller: Option<NvmlPoller>,
    stop: Arc<AtomicBool>,
    wanted: watch::Sender<Wanted>,
}

impl Running {
    fn start(cfg: NvmlConfig, wanted: Wanted) -> Running {
        let (wtx, wrx) = watch::channel(wanted);
        let stop = Arc::new(AtomicBool::new(false));
        let poller = spawn_nvml_poller(cfg, wrx, stop.clone()).expect("spawn poller");
        Running {
            poller: Some(poller),
            stop,
            wanted: wtx,
        }
    }

    /// Waits up to 5 s for a report that satisfies `pred`, and returns it.
    fn wait_for(&self, what: &str, pred: impl Fn(&NvmlReport) -> bool) -> NvmlReport {
        let rx = &self.poller.as_ref().expect("running").reports;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let r = rx.borrow().clone();
            if r.polls > 0 && pred(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last report {r:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the thread and returns how long it took to end.
    fn stop(&mut self) -> Duration {
        self.stop.store(true, Ordering::Relaxed);
        let t = Instant::now();
        if let Some(p) = self.poller.take() {
            p.thread.join().expect("poller thread must not panic");
        }
        t.elapsed()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.poller.is_some() {
            self.stop();
        }
    }
}

fn uuids(r: &NvmlReport) -> Vec<&str> {
    r.readings.iter().map(|g| g.uuid.as_str()).collect()
}

fn get<'r>(r: &'r NvmlReport, uuid: &str) -> &'r GpuReading {
    r.readings
        .iter()
        .find(|g| g.uuid == uuid)
        .expect("reading for uuid")
}

#[test]
fn gpu_all_reports_both_gpus_with_every_value() {
    let fake = Fake::new("all", false, two_gpus());
    let mut run = Running::start(fake.config(), Wanted::All);
    let r = run.wait_for("two GPUs", |r| r.readings.len() == 2);
    assert!(r.nvml_up);
    assert_eq!(r.error, None);
    assert_eq!(uuids(&r), [A, B]);
    let a = get(&r, A);
    assert_eq!(a.name, "NVIDIA H100 80GB HBM3");
    assert_eq!(a.utilization_ratio, Some(0.37));
    assert_eq!(a.memory_used_bytes, Some((3 * GIB) as f64));
    assert_eq!(a.memory_total_bytes, Some((80 * GIB) as f64));
    assert_eq!(a.power_watts, Some(251.5));
    assert_eq!(a.temperature_celsius, Some(45.0));
    assert_eq!(get(&r, B).utilization_ratio, Some(0.05));

    // Through selection, `--gpu all` publishes both from NVML.
    let s = select::select(&GpuChoice::All, Some(&r), None);
    assert_eq!(s.state.sources(), [GpuSource::Nvml]);
    assert_eq!(s.state.readings.len(), 2);

    // Stopping is prompt although the poller sleeps between polls, and Drop shut NVML down.
    assert!(run.stop() < Duration::from_secs(1));
    assert_eq!(
        fake.calls().last().map(String::as_str),
        Some("nvmlShutdown")
    );
}

#[test]
fn only_the_gpu_tritons_page_names_is_reported() {
    let fake = Fake::new("filter", false, two_gpus());
    let sel = GpuChoice::FromTriton;
    // Before Triton's page was read: NVML is up, nothing is read or published.
    let wanted = select::wanted(&sel, None).expect("a poller runs");
    assert_eq!(wanted, Wanted::Unknown);
    let run = Running::start(fake.config(), wanted);
    let r = run.wait_for("NVML up", |r| r.nvml_up);
    assert!(r.readings.is_empty());
    assert_eq!(
        select::select(&sel, Some(&r), None).state.sources(),
        [GpuSource::None]
    );

    // Triton's page names B only (its nv_gpu_* series), so only B is read and published.
    let labels: &[(&str, &str)] = &[("gpu_uuid", B)];
    let triton = triton_fallback::readings(vec![("nv_gpu_utilization", labels, 0.9)]);
    let wanted = select::wanted(&sel, Some(&triton)).expect("a poller runs");
    assert_eq!(wanted, Wanted::Uuids(vec![B.to_owned()]));
    run.wanted.send_replace(wanted);
    let r = run.wait_for("B", |r| !r.readings.is_empty());
    assert_eq!(uuids(&r), [B]);
    let s = select::select(&sel, Some(&r), Some(&triton));
    assert_eq!(s.state.sources(), [GpuSource::Nvml]);
    assert_eq!(s.state.readings.len(), 1);
    // The values are NVML's, not Triton's.
    assert_eq!(s.state.readings[0].utilization_ratio, Some(0.05));
    assert_eq!(s.state.readings[0].name, "NVIDIA A100-SXM4-40GB");
}

#[test]
fn explicit_uuid_list_and_unknown_uuid() {
    let fake = Fake::new("explicit", false, two_gpus());
    let sel = triton_sidecar::config::gpu_choice(false, Some(&format!("{A},GPU-not-here")))
        .expect("valid flag");
    let run = Running::start(fake.config(), select::wanted(&sel, None).expect("poller"));
    let r = run.wait_for("A", |r| !r.readings.is_empty());
    assert_eq!(uuids(&r), [A]);
    assert!(r.nvml_up);
}

#[test]
fn lost_gpu_is_dropped_then_back_after_reinit() {
    let fake = Fake::new("lost", false, two_gpus());
    let run = Running::start(fake.config(), Wanted::All);
    run.wait_for("two GPUs", |r| r.readings.len() == 2);

    let mut lost = device(B, "NVIDIA A100-SXM4-40GB", 5);
    lost["fail"] = serde_json::json!({ "*": 15 });
    fake.write(serde_json::json!({ "devices": [device(A, "NVIDIA H100 80GB HBM3", 37), lost] }));
    let r = run.wait_for("B lost", |r| r.readings.len() == 1);
    assert_eq!(uuids(&r), [A]);
    assert!(r.nvml_up, "NVML itself still answers");
    // The handle was dropped and NVML initialised again.
    let deadline = Instant::now() + Duration::from_secs(5);
    while fake.calls().iter().filter(|c| *c == "nvmlInit_v2").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "no re-init after GPU lost: {:?}",
            fake.calls()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(fake.calls().contains(&"nvmlShutdown".to_owned()));

    fake.write(two_gpus());
    let r = run.wait_for("B back", |r| r.readings.len() == 2);
    assert_eq!(uuids(&r), [A, B]);
    assert_eq!(get(&r, B).memory_total_bytes, Some((80 * GIB) as f64));
}

#[test]
fn not_supported_omits_only_that_value() {
    let mut mig = device(A, "NVIDIA A100 MIG 1g.5gb", 0);
    mig["fail"] = serde_json::json!({ "nvmlDeviceGetUtilizationRates": 3 });
    let mut odd = device(B, "NVIDIA T4", 10);
    // UNKNOWN on one call, and a value the device does not have (null answers NOT_SUPPORTED).
    odd["fail"] = serde_json::json!({ "nvmlDeviceGetTemperature": 999 });
    odd["power_mw"] = serde_json::Value::Null;
    let fake = Fake::new(
        "notsup",
        false,
        serde_json::json!({ "devices": [mig, odd] }),
    );
    let run = Running::start(fake.config(), Wanted::All);
    let r = run.wait_for("two GPUs", |r| r.readings.len() == 2);
    let a = get(&r, A);
    assert_eq!(a.utilization_ratio, None);
    assert_eq!(a.memory_used_bytes, Some((3 * GIB) as f64));
    assert_eq!(a.power_watts, Some(251.5));
    assert_eq!(a.temperature_celsius, Some(45.0));
    let b = get(&r, B);
    assert_eq!(b.utilization_ratio, Some(0.1));
    assert_eq!(b.temperature_celsius, None);
    assert_eq!(b.power_watts, None);
    assert_eq!(b.memory_total_bytes, Some((80 * GIB) as f64));
    // NotSupported is not a lost GPU: no re-init.
    run.wait_for("more polls", |x| x.polls > r.polls + 5);
    assert_eq!(
        fake.calls().iter().filter(|c| *c == "nvmlInit_v2").count(),
        1
    );
}

#[test]
fn missing_library_keeps_polling_with_nvml_down() {
    let dir = std::env::temp_dir().join(format!("triton-sidecar-gpu-{}-nolib", std::process::id()));
    let mut cfg = NvmlConfig::new(
        Some(dir.join("libnvidia-ml.so.1")),
        Duration::from_millis(10),
    );
    cfg.max_backoff = Duration::from_millis(40);
    let err = read_once(&cfg, &Wanted::All).expect_err("no library there");
    assert!(
        err.to_string().contains("cannot load the NVML library"),
        "{err}"
    );

    let mut run = Running::start(cfg, Wanted::All);
    let r = run.wait_for("several polls", |r| r.polls >= 5);
    assert!(!r.nvml_up);
    assert!(r.readings.is_empty());
    assert!(
        r.error
            .as_ref()
            .is_some_and(|e| e.to_string().contains("cannot load")),
        "{r:?}"
    );
    // With NVML down, Triton's series are the fallback.
    let labels: &[(&str, &str)] = &[("gpu_uuid", B)];
    let triton = triton_fallback::readings(vec![
        ("nv_gpu_utilization", labels, 0.5),
        ("nv_gpu_memory_used_bytes", labels, 1e9),
        ("nv_gpu_memory_total_bytes", labels, 4e10),
    ]);
    let s = select::select(&GpuChoice::FromTriton, Some(&r), Some(&triton));
    assert_eq!(s.state.sources(), [GpuSource::Triton]);
    assert!(!s.state.nvml_up);
    assert_eq!(s.state.readings, triton);
    assert!(run.stop() < Duration::from_secs(1));
}

#[test]
fn init_failure_is_retried_until_it_succeeds() {
    let fake = Fake::new(
        "initfail",
        false,
        serde_json::json!({
            "fail": { "nvmlInit_v2": 9 }, "devices": [device(A, "NVIDIA L4", 20)]
        }),
    );
    let run = Running::start(fake.config(), Wanted::All);
    let r = run.wait_for("a failed init", |r| r.error.is_some());
    assert!(!r.nvml_up);
    assert!(
        r.error
            .as_ref()
            .is_some_and(|e| e.to_string().to_lowercase().contains("driver")),
        "{r:?}"
    );
    fake.write(serde_json::json!({ "devices": [device(A, "NVIDIA L4", 20)] }));
    let r = run.wait_for("NVML up after retry", |r| {
        r.nvml_up && r.readings.len() == 1
    });
    assert_eq!(r.error, None);
    assert!(fake.calls().iter().filter(|c| *c == "nvmlInit_v2").count() >= 2);
}

#[test]
fn minimal_library_omits_power_and_memory_without_panic() {
    let fake = Fake::new("minimal", true, two_gpus());
    let run = Running::start(fake.config(), Wanted::All);
    let r = run.wait_for("two GPUs", |r| r.readings.len() == 2);
    assert!(r.nvml_up);
    for g in &r.readings {
        assert_eq!(g.power_watts, None, "{g:?}");
        assert_eq!(g.memory_used_bytes, None, "{g:?}");
        assert_eq!(g.memory_total_bytes, None, "{g:?}");
        assert_eq!(g.temperature_celsius, Some(45.0), "{g:?}");
        assert!(g.utilization_ratio.is_some(), "{g:?}");
    }
    // A missing symbol is not a lost GPU: the poller keeps its handle.
    run.wait_for("more polls", |x| x.polls > r.polls + 5);
    assert_eq!(
        fake.calls().iter().filter(|c| *c == "nvmlInit_v2").count(),
        1
    );
    // The check command's one-shot path too.
    let one = read_once(&fake.config(), &Wanted::Uuids(vec![B.to_owned()])).expect("NVML up");
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].memory_total_bytes, None);
}

#[test]
fn check_line_from_the_fake() {
    let fake = Fake::new("check", false, two_gpus());
    let got = read_once(&fake.config(), &Wanted::All).expect("NVML up");
    let lines: Vec<String> = got
        .iter()
        .map(triton_sidecar::gpu::format_gpu_line)
        .collect();
    assert_eq!(
        lines[0],
        format!(
            "gpu uuid={A} name=\"NVIDIA H100 80GB HBM3\" util=0.37 mem_used_bytes={} \
             mem_total_bytes={} power_w=251.5 temp_c=45",
            3 * GIB,
            80 * GIB
        )
    );
}
