//! The NVML poller: loads NVML through `nvml-wrapper` and reads the wanted GPUs on its own
//! blocking thread, every `--gpu-poll-interval`. The `/metrics` handler never calls NVML; it only
//! reads the last [`NvmlReport`] from a `watch` channel.
//!
//! Failure modes, none of which ends the thread or the agent:
//! - a call answers NotSupported, or its symbol is missing from an older driver: that field is
//!   `None` and its series is omitted. `nvml-wrapper`'s safe methods turn a missing symbol into
//!   `NvmlError::FailedToLoadSymbol`; only the raw `nvml-wrapper-sys` functions panic, and this
//!   module never calls those. `catch_unwind` still guards every call into the library as a last
//!   resort, because `Drop for Nvml` calls `nvmlShutdown` unguarded;
//! - the library is missing, or init fails: one warning that says how to give the container
//!   NVML, `nvml_up = false`, and init retried with exponential backoff from the poll interval up
//!   to once every 30 s;
//! - a GPU is lost: the other GPUs are still reported, then the `Nvml` handle is dropped and
//!   NVML re-initialised; while the GPU stays lost, re-initialisation backs off the same way;
//! - a call hangs: this thread cannot notice, since it is the one blocked. The GPU task watches
//!   the age of the newest report instead (`super::fresh`) and stops serving it.

use super::GpuReading;
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml};
use std::collections::HashSet;
use std::ffi::OsStr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The library loaded when `--nvml-lib` is not given. The versioned name is the one the NVIDIA
/// container toolkit mounts; the unversioned `.so` only ships with development packages.
pub const DEFAULT_LIB: &str = "libnvidia-ml.so.1";

/// The longest wait between two init attempts, as the issue asks: "up to one try every 30 s".
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How the poller loads and polls NVML.
#[derive(Debug, Clone)]
pub struct NvmlConfig {
    /// `--nvml-lib`; `None` loads [`DEFAULT_LIB`] through the dynamic loader's search path.
    pub lib_path: Option<PathBuf>,
    /// `--gpu-poll-interval`; also the first init retry delay.
    pub interval: Duration,
    /// Cap of the retry backoff; [`MAX_BACKOFF`] in production, shorter in tests.
    pub max_backoff: Duration,
}

impl NvmlConfig {
    /// A config with the production backoff cap.
    pub fn new(lib_path: Option<PathBuf>, interval: Duration) -> Self {
        NvmlConfig {
            lib_path,
            interval,
            max_backoff: MAX_BACKOFF,
        }
    }

    fn lib(&self) -> &OsStr {
        match &self.lib_path {
            Some(p) => p.as_os_str(),
            None => OsStr::new(DEFAULT_LIB),
        }
    }
}

/// Which GPUs the poller reads. Decided by [`super::select::wanted`] and sent to the thread
/// through a `watch` channel, since Triton's UUIDs only arrive after its page was read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Wanted {
    /// Not decided yet: NVML is still initialised so that `nvml_up` is known, but no device is
    /// read.
    #[default]
    Unknown,
    /// Every GPU NVML can see (`--gpu all`).
    All,
    /// These UUIDs only, looked up by UUID so MIG device UUIDs work too.
    Uuids(Vec<String>),
}

/// Why NVML is not up: what a report carries and `check` prints. Every report is a clone, and
/// `NvmlError` is neither `Clone` nor `PartialEq`, so NVML's own errors are kept as its words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NvmlFailure {
    /// The library could not be loaded (not mounted, wrong `--nvml-lib`, wrong architecture).
    #[error("cannot load the NVML library: {0}")]
    Load(String),
    /// The library lacks a symbol the call needs (a driver older than `nvml-wrapper` expects).
    #[error("NVML library lacks a symbol: {0}")]
    MissingSymbol(String),
    /// Any other error NVML answered, as `nvml-wrapper` words it.
    #[error("{0}")]
    Nvml(String),
    /// NVML was up but could not count its devices: it stopped answering.
    #[error("nvmlDeviceGetCount failed: {0}")]
    DeviceCount(Box<NvmlFailure>),
    /// `nvmlInit` panicked inside `nvml-wrapper`.
    #[error("NVML init panicked")]
    InitPanicked,
    /// A call into NVML panicked.
    #[error("a call into NVML panicked")]
    CallPanicked,
    /// The newest report is this old ([`super::fresh`]): a call hangs.
    #[error("no answer from NVML for {:.1}s (a call hangs?)", .0.as_secs_f64())]
    Stale(Duration),
    /// Not up, with no reason recorded (the session never tried to initialise).
    #[error("NVML is not available")]
    Unavailable,
    /// `check`'s blocking read task did not finish (it panicked or was cancelled).
    #[error("{0}")]
    ReadTask(String),
}

impl From<&NvmlError> for NvmlFailure {
    fn from(e: &NvmlError) -> Self {
        match e {
            NvmlError::LibloadingError(inner) => NvmlFailure::Load(inner.to_string()),
            NvmlError::FailedToLoadSymbol(s) => NvmlFailure::MissingSymbol(s.clone()),
            other => NvmlFailure::Nvml(other.to_string()),
        }
    }
}

/// What one poll found.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NvmlReport {
    /// NVML is loaded and initialised (`triton_sidecar_nvml_up`).
    pub nvml_up: bool,
    /// The wanted GPUs that answered, sorted by UUID. A lost GPU is left out until it is back.
    pub readings: Vec<GpuReading>,
    /// Why NVML is not up, for `check` to print; `None` while it is up.
    pub error: Option<NvmlFailure>,
    /// Number of polls so far, so a reader can tell a fresh report from an old one.
    pub polls: u64,
}

/// The running poller thread.
#[derive(Debug)]
pub struct NvmlPoller {
    /// The latest report; the initial value has `polls == 0` and `nvml_up == false`.
    pub reports: watch::Receiver<NvmlReport>,
    /// The thread; it ends soon (within about 50 ms plus one NVML call) after `stop` is set, or
    /// when every receiver of `reports` is dropped.
    pub thread: JoinHandle<()>,
}

/// Starts the poller on its own thread. `wanted` may change at any time; a change is picked up
/// within 50 ms rather than at the next interval. Fails only if the OS cannot start a thread.
pub fn spawn_nvml_poller(
    cfg: NvmlConfig,
    mut wanted: watch::Receiver<Wanted>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<NvmlPoller> {
    let (tx, rx) = watch::channel(NvmlReport::default());
    let thread = std::thread::Builder::new()
        .name("nvml-poller".into())
        .spawn(move || {
            let mut state = NvmlSession::new(cfg.clone());
            let step = Duration::from_millis(50);
            while !stop.load(Ordering::Relaxed) {
                let w = wanted.borrow_and_update().clone();
                let report = state.tick(&w, Instant::now());
                tx.send_replace(report);
                if tx.is_closed() {
                    break;
                }
                // Sleep in short steps so that stop and a new `wanted` are seen promptly.
                let deadline = Instant::now() + cfg.interval;
                loop {
                    let now = Instant::now();
                    if now >= deadline
                        || stop.load(Ordering::Relaxed)
                        || wanted.has_changed().unwrap_or(false)
                    {
                        break;
                    }
                    std::thread::sleep(step.min(deadline - now));
                }
            }
            state.close();
        })?;
    Ok(NvmlPoller {
        reports: rx,
        thread,
    })
}

/// Initialises NVML, reads `wanted` once and shuts NVML down again: the `check` command's path.
/// `Err` says why NVML is unavailable.
pub fn read_once(cfg: &NvmlConfig, wanted: &Wanted) -> Result<Vec<GpuReading>, NvmlFailure> {
    let mut state = NvmlSession::new(cfg.clone());
    let report = state.tick(wanted, Instant::now());
    state.close();
    if report.nvml_up {
        Ok(report.readings)
    } else {
        Err(report.error.unwrap_or(NvmlFailure::Unavailable))
    }
}

/// How an error from one NVML call is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Leave that value out (NotSupported, missing symbol, no permission, ...).
    Omit,
    /// The device is gone, or NVML itself needs re-initialising.
    Lost,
}

fn classify(e: &NvmlError) -> Fault {
    match e {
        NvmlError::GpuLost
        | NvmlError::ResetRequired
        | NvmlError::Uninitialized
        | NvmlError::DriverNotLoaded
        | NvmlError::LibRmVersionMismatch => Fault::Lost,
        _ => Fault::Omit,
    }
}

/// Drops the handle behind a guard: `Drop for Nvml` calls `nvmlShutdown` through `expect`, which
/// panics if that symbol is missing.
fn drop_guarded(nvml: Nvml) {
    if catch_unwind(AssertUnwindSafe(move || drop(nvml))).is_err() {
        tracing::warn!("NVML shutdown panicked (nvmlShutdown missing?); the library stays loaded");
    }
}

/// One NVML session and its retry state between ticks: the handle, the back-off, what was
/// logged. Owned by the NVML thread only (or by one `read_once`).
struct NvmlSession {
    cfg: NvmlConfig,
    nvml: Option<Nvml>,
    /// Earliest time of the next init attempt, and the delay after the next failure.
    next_init: Instant,
    init_backoff: Duration,
    /// The one warning per outage was logged.
    warned: bool,
    /// Why the last init failed; `None` while NVML is up.
    last_error: Option<NvmlFailure>,
    /// Earliest time of the next re-init because of a lost GPU, and its growing delay.
    next_reinit: Instant,
    lost_backoff: Duration,
    /// (uuid, what, why) already logged, so that an omitted series is logged once, not per poll.
    logged: HashSet<(String, &'static str, String)>,
    polls: u64,
}

/// One pass over the devices.
struct Pass {
    readings: Vec<GpuReading>,
    /// Some GPU was lost; re-initialise.
    lost: bool,
    /// NVML as a whole failed (device count); re-initialise with the init backoff.
    fatal: Option<NvmlFailure>,
}

impl NvmlSession {
    fn new(cfg: NvmlConfig) -> Self {
        let now = Instant::now();
        NvmlSession {
            init_backoff: cfg.interval,
            lost_backoff: Duration::ZERO,
            cfg,
            nvml: None,
            next_init: now,
            warned: false,
            last_error: None,
            next_reinit: now,
            logged: HashSet::new(),
            polls: 0,
        }
    }

    fn close(&mut self) {
        if let Some(n) = self.nvml.take() {
            drop_guarded(n);
        }
    }

    fn bump(backoff: Duration, base: Duration, cap: Duration) -> Duration {
        backoff.saturating_mul(2).max(base).min(cap)
    }

    fn report(&self, readings: Vec<GpuReading>) -> NvmlReport {
        NvmlReport {
            nvml_up: self.nvml.is_some(),
            readings,
            error: if self.nvml.is_some() {
                None
            } else {
                self.last_error.clone()
            },
            polls: self.polls,
        }
    }

    fn init_failed(&mut self, why: NvmlFailure, now: Instant) {
        if !self.warned {
            tracing::warn!(
                lib = %self.cfg.lib().to_string_lossy(),
                error = %why,
                "NVML unavailable, GPU gauges come from Triton's nv_gpu_* series if it has them, \
                 else none. To give the sidecar container NVML without requesting nvidia.com/gpu, \
                 set NVIDIA_VISIBLE_DEVICES=all and NVIDIA_DRIVER_CAPABILITIES=utility on it and \
                 runtimeClassName: nvidia on the pod (see docs/gpu.md), point --nvml-lib at \
                 libnvidia-ml.so.1, or pass --no-gpu. Retrying with backoff up to every 30s"
            );
            self.warned = true;
        } else {
            tracing::debug!(error = %why, "NVML init retry failed");
        }
        self.last_error = Some(why);
        self.next_init = now + self.init_backoff;
        self.init_backoff = Self::bump(self.init_backoff, self.cfg.interval, self.cfg.max_backoff);
    }

    fn tick(&mut self, wanted: &Wanted, now: Instant) -> NvmlReport {
        self.polls += 1;
        if self.nvml.is_none() {
            if now < self.next_init {
                return self.report(Vec::new());
            }
            let lib = self.cfg.lib().to_owned();
            match catch_unwind(AssertUnwindSafe(|| Nvml::builder().lib_path(&lib).init())) {
                Ok(Ok(n)) => {
                    if self.warned {
                        tracing::info!(lib = %lib.to_string_lossy(), "NVML is up");
                    } else {
                        tracing::debug!(lib = %lib.to_string_lossy(), "NVML is up");
                    }
                    self.nvml = Some(n);
                    self.warned = false;
                    self.last_error = None;
                    self.init_backoff = self.cfg.interval;
                }
                Ok(Err(e)) => {
                    self.init_failed(NvmlFailure::from(&e), now);
                    return self.report(Vec::new());
                }
                Err(_) => {
                    self.init_failed(NvmlFailure::InitPanicked, now);
                    return self.report(Vec::new());
                }
            }
        }
        let Some(nvml) = self.nvml.as_ref() else {
            return self.report(Vec::new());
        };
        let mut logged = std::mem::take(&mut self.logged);
        let pass = catch_unwind(AssertUnwindSafe(|| read_devices(nvml, wanted, &mut logged)));
        self.logged = logged;
        match pass {
            Ok(Pass {
                fatal: Some(why), ..
            }) => {
                tracing::warn!(error = %why, "NVML stopped answering; re-initialising");
                self.close();
                self.init_failed(why, now);
                self.report(Vec::new())
            }
            Ok(Pass {
                mut readings,
                lost,
                fatal: None,
            }) => {
                readings.sort_by(|a, b| a.uuid.cmp(&b.uuid));
                readings.dedup_by(|a, b| a.uuid == b.uuid);
                let report = self.report(readings);
                if lost {
                    if now >= self.next_reinit {
                        // Re-initialise at the next tick, after publishing what the other GPUs
                        // said. The report still says up: NVML answered this poll.
                        tracing::info!("a GPU is lost; re-initialising NVML");
                        self.close();
                        self.next_init = now;
                        self.lost_backoff =
                            Self::bump(self.lost_backoff, self.cfg.interval, self.cfg.max_backoff);
                        self.next_reinit = now + self.lost_backoff;
                    }
                } else {
                    self.lost_backoff = Duration::ZERO;
                    self.next_reinit = now;
                }
                report
            }
            Err(_) => {
                tracing::error!("a call into NVML panicked; re-initialising");
                self.close();
                self.init_failed(NvmlFailure::CallPanicked, now);
                self.report(Vec::new())
            }
        }
    }
}

/// Logs a device problem once per (uuid, what, why).
fn log_once(
    logged: &mut HashSet<(String, &'static str, String)>,
    uuid: &str,
    what: &'static str,
    e: &NvmlError,
) {
    let why = e.to_string();
    if logged.insert((uuid.to_owned(), what, why.clone())) {
        match e {
            NvmlError::NotSupported
            | NvmlError::FailedToLoadSymbol(_)
            | NvmlError::FunctionNotFound => {
                tracing::info!(gpu_uuid = %uuid, field = what, reason = %why, "GPU series omitted")
            }
            NvmlError::NotFound => tracing::warn!(
                gpu_uuid = %uuid,
                "GPU not visible to NVML in this container; it is not reported"
            ),
            _ => {
                tracing::warn!(gpu_uuid = %uuid, field = what, error = %why, "NVML call failed; series omitted")
            }
        }
    }
}

fn read_devices(
    nvml: &Nvml,
    wanted: &Wanted,
    logged: &mut HashSet<(String, &'static str, String)>,
) -> Pass {
    let mut pass = Pass {
        readings: Vec::new(),
        lost: false,
        fatal: None,
    };
    match wanted {
        Wanted::Unknown => {}
        Wanted::All => {
            let count = match nvml.device_count() {
                Ok(c) => c,
                Err(e) => {
                    pass.fatal = Some(NvmlFailure::DeviceCount(Box::new(NvmlFailure::from(&e))));
                    return pass;
                }
            };
            for i in 0..count {
                match nvml.device_by_index(i) {
                    Ok(dev) => read_one(&dev, None, logged, &mut pass),
                    Err(e) if classify(&e) == Fault::Lost => pass.lost = true,
                    Err(e) => log_once(logged, &format!("index {i}"), "handle", &e),
                }
            }
        }
        Wanted::Uuids(uuids) => {
            for uuid in uuids {
                match nvml.device_by_uuid(uuid.as_str()) {
                    Ok(dev) => read_one(&dev, Some(uuid), logged, &mut pass),
                    Err(e) if classify(&e) == Fault::Lost => pass.lost = true,
                    Err(e) => log_once(logged, uuid, "handle", &e),
                }
            }
        }
    }
    pass
}

/// Reads one device into `pass`. A lost device adds nothing and sets `pass.lost`.
fn read_one(
    dev: &Device<'_>,
    known_uuid: Option<&str>,
    logged: &mut HashSet<(String, &'static str, String)>,
    pass: &mut Pass,
) {
    let uuid = match known_uuid {
        Some(u) => u.to_owned(),
        None => match dev.uuid() {
            Ok(u) => u,
            Err(e) if classify(&e) == Fault::Lost => {
                pass.lost = true;
                return;
            }
            Err(e) => {
                // No UUID means no label to report under.
                log_once(logged, "?", "uuid", &e);
                return;
            }
        },
    };
    let mut lost = false;
    let mut field = |what: &'static str, r: Result<f64, NvmlError>| -> Option<f64> {
        match r {
            Ok(v) if v.is_finite() => Some(v),
            Ok(_) => None,
            Err(e) if classify(&e) == Fault::Lost => {
                lost = true;
                None
            }
            Err(e) => {
                log_once(logged, &uuid, what, &e);
                None
            }
        }
    };
    // Each value is read independently: one unsupported call must not hide the others.
    let utilization = field(
        "utilization",
        dev.utilization_rates().map(|u| f64::from(u.gpu) / 100.0),
    );
    let memory = dev.memory_info();
    let (mem_used, mem_total) = match memory {
        Ok(m) => (Some(m.used as f64), Some(m.total as f64)),
        Err(e) => {
            field("memory", Err(e));
            (None, None)
        }
    };
    // NVML reports milliwatts.
    let power = field("power", dev.power_usage().map(|mw| f64::from(mw) / 1000.0));
    let temperature = field(
        "temperature",
        dev.temperature(TemperatureSensor::Gpu).map(f64::from),
    );
    let name = match dev.name() {
        Ok(n) => n,
        Err(e) => {
            // Unknown name: report under an empty gpu_name rather than drop the GPU.
            field("name", Err(e));
            String::new()
        }
    };
    if lost {
        pass.lost = true;
        return;
    }
    pass.readings.push(GpuReading {
        uuid,
        name,
        utilization_ratio: utilization,
        memory_used_bytes: mem_used,
        memory_total_bytes: mem_total,
        power_watts: power,
        temperature_celsius: temperature,
        source: super::GpuSource::Nvml,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects formatted log lines.
    #[derive(Clone, Default)]
    struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    // One test only reaches the init-failure log callsites: tracing caches a callsite's interest
    // process-wide, and a parallel test without a subscriber could make this one miss its events.
    #[test]
    fn init_failure_backs_off_to_the_cap_and_warns_once_with_the_fix() {
        let logs = Logs::default();
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let mut cfg =
                NvmlConfig::new(Some("/nonexistent/lib.so".into()), Duration::from_secs(1));
            cfg.max_backoff = Duration::from_secs(30);
            let mut s = NvmlSession::new(cfg.clone());
            let mut waits = Vec::new();
            let mut now = Instant::now();
            for _ in 0..8 {
                let r = s.tick(&Wanted::All, now);
                assert!(!r.nvml_up);
                assert!(matches!(r.error, Some(NvmlFailure::Load(_))), "{r:?}");
                waits.push((s.next_init - now).as_secs());
                // A tick before next_init does not try again.
                let before = s.next_init;
                s.tick(&Wanted::All, now + Duration::from_millis(1));
                assert_eq!(s.next_init, before);
                now = s.next_init;
            }
            assert_eq!(waits, vec![1, 2, 4, 8, 16, 30, 30, 30]);

            let err = read_once(&cfg, &Wanted::All).unwrap_err();
            assert!(
                err.to_string().contains("cannot load the NVML library"),
                "{err}"
            );
        });
        let text =
            String::from_utf8_lossy(&logs.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
        // The poller warned once; `read_once` is a fresh state and warns once more.
        let warnings: Vec<&str> = text.lines().filter(|l| l.contains("WARN")).collect();
        assert_eq!(warnings.len(), 2, "{text}");
        for needle in [
            "NVIDIA_VISIBLE_DEVICES=all",
            "NVIDIA_DRIVER_CAPABILITIES=utility",
            "runtimeClassName: nvidia",
        ] {
            assert!(
                warnings[0].contains(needle),
                "{needle} missing from {}",
                warnings[0]
            );
        }
    }
}
