//! A fake `libnvidia-ml.so` for tests on machines without a GPU.
//!
//! It exports the C symbols that `nvml-wrapper` resolves and calls for the agent's GPU gauges, so
//! tests exercise the real `dlopen` + symbol lookup + call path instead of a trait mock.
//!
//! # Where the devices come from
//! A JSON file, re-read on every call so that a test can change it while the agent runs (a device
//! turns lost, then comes back). Its path is, in order:
//! 1. the environment variable `FAKE_NVML_CONFIG`;
//! 2. `fake-nvml.json` in the directory that holds this library. Tests that load several copies
//!    of the library inside one process use this, because the environment is shared by every
//!    thread while each copy (loaded from its own path) has its own state.
//!
//! No file at all means zero devices. A file that is named but unreadable or invalid makes every
//! call fail with `NVML_ERROR_UNKNOWN`, so a broken test setup is loud.
//!
//! ```json
//! {
//!   "driver_version": "550.54.15",
//!   "fail": { "nvmlInit_v2": 9 },
//!   "devices": [
//!     { "uuid": "GPU-0", "name": "NVIDIA H100 80GB HBM3", "utilization": 37,
//!       "memory_used": 1073741824, "memory_total": 85899345920,
//!       "power_mw": 250000, "temperature": 45,
//!       "fail": { "nvmlDeviceGetUtilizationRates": 3, "*": 15 } }
//!   ]
//! }
//! ```
//! `fail` maps a C function name, or `"*"` for every function, to the NVML return code it answers
//! (3 NOT_SUPPORTED, 9 DRIVER_NOT_LOADED, 12 LIBRARY_NOT_FOUND, 15 GPU_IS_LOST, 999 UNKNOWN). The
//! global map applies to all calls, a device's map to the calls on that device. The key `"init"`
//! fails every init variant. A device field that is absent or `null` answers NOT_SUPPORTED, like
//! utilization on a MIG device.
//!
//! `hang` lists C function names, or `"*"` for every call but `nvmlShutdown` and
//! `nvmlErrorString`: such a call blocks, re-reading the config every 10 ms, until the name leaves
//! the list (or the config can no longer be read), like a driver call that wedges and recovers.
//! `{"hang": ["nvmlDeviceGetUtilizationRates"]}` stalls the poller in the middle of a pass.
//!
//! # Call log
//! Init and shutdown calls append their name as a line to `FAKE_NVML_LOG`, or to
//! `fake-nvml.log` beside the library when the config was found there, so a test can see that
//! the agent re-initialised.
//!
//! # Feature `minimal`
//! Leaves out `nvmlDeviceGetPowerUsage` and `nvmlDeviceGetMemoryInfo_v2`, as an older driver
//! would. `nvmlShutdown` always stays, because `nvml-wrapper`'s `Drop` calls it unguarded.
#![allow(non_snake_case, clippy::missing_safety_doc)]

use serde_json::Value;
use std::ffi::{c_char, c_int, c_uint, c_ulonglong, c_void, CStr};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

type Ret = c_uint;
type Device = *mut c_void;

const SUCCESS: Ret = 0;
const UNINITIALIZED: Ret = 1;
const INVALID_ARGUMENT: Ret = 2;
const NOT_SUPPORTED: Ret = 3;
const NOT_FOUND: Ret = 6;
const INSUFFICIENT_SIZE: Ret = 7;
const GPU_IS_LOST: Ret = 15;
#[cfg(not(feature = "minimal"))]
const ARGUMENT_VERSION_MISMATCH: Ret = 25;
const UNKNOWN: Ret = 999;

/// nvmlInit minus nvmlShutdown, as the real library counts them.
static INIT_COUNT: AtomicU32 = AtomicU32::new(0);

/// UUIDs ever handed out as handles. A handle is its index + 1, so handles stay stable while the
/// config file changes underneath, as real handles do.
static HANDLES: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[repr(C)]
struct DlInfo {
    dli_fname: *const c_char,
    dli_fbase: *mut c_void,
    dli_sname: *const c_char,
    dli_saddr: *mut c_void,
}

extern "C" {
    fn dladdr(addr: *const c_void, info: *mut DlInfo) -> c_int;
}

/// The directory this copy of the library was loaded from.
fn own_dir() -> Option<PathBuf> {
    let mut info = DlInfo {
        dli_fname: std::ptr::null(),
        dli_fbase: std::ptr::null_mut(),
        dli_sname: std::ptr::null(),
        dli_saddr: std::ptr::null_mut(),
    };
    let addr = own_dir as fn() -> Option<PathBuf> as *const c_void;
    // SAFETY: dladdr only reads `addr` and fills `info`.
    let ok = unsafe { dladdr(addr, &mut info) };
    if ok == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dli_fname is a NUL-terminated string owned by the loader.
    let name = unsafe { CStr::from_ptr(info.dli_fname) };
    let path = PathBuf::from(name.to_string_lossy().into_owned());
    path.parent().map(Path::to_path_buf)
}

enum Source {
    Env(PathBuf),
    Beside(PathBuf),
    Nothing,
}

fn config_source() -> Source {
    if let Some(p) = std::env::var_os("FAKE_NVML_CONFIG") {
        return Source::Env(PathBuf::from(p));
    }
    if let Some(dir) = own_dir() {
        let p = dir.join("fake-nvml.json");
        if p.exists() {
            return Source::Beside(p);
        }
    }
    Source::Nothing
}

/// The current config, re-read on every call. `Err` carries the code every call then returns.
fn config() -> Result<Value, Ret> {
    let path = match config_source() {
        Source::Env(p) | Source::Beside(p) => p,
        Source::Nothing => return Ok(Value::Object(Default::default())),
    };
    let text = std::fs::read_to_string(&path).map_err(|_| UNKNOWN)?;
    serde_json::from_str(&text).map_err(|_| UNKNOWN)
}

fn log_call(name: &str) {
    let path = match std::env::var_os("FAKE_NVML_LOG") {
        Some(p) => PathBuf::from(p),
        None => match config_source() {
            Source::Beside(p) => p.with_file_name("fake-nvml.log"),
            _ => return,
        },
    };
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{name}");
    }
}

fn code_in(map: Option<&Value>, func: &str) -> Option<Ret> {
    let map = map?;
    let code = map.get(func).or_else(|| map.get("*"))?;
    code.as_u64().map(|c| c as Ret)
}

/// The code a global failure rule assigns to `func`, if any.
fn global_fail(cfg: &Value, func: &str) -> Option<Ret> {
    code_in(cfg.get("fail"), func)
}

fn devices(cfg: &Value) -> &[Value] {
    cfg.get("devices")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn uuid_of(dev: &Value) -> &str {
    dev.get("uuid").and_then(Value::as_str).unwrap_or("")
}

fn handle_for(uuid: &str) -> Device {
    let mut handles = HANDLES.lock().unwrap_or_else(|e| e.into_inner());
    let idx = match handles.iter().position(|u| u == uuid) {
        Some(i) => i,
        None => {
            handles.push(uuid.to_owned());
            handles.len() - 1
        }
    };
    (idx + 1) as Device
}

fn uuid_for(handle: Device) -> Option<String> {
    let idx = (handle as usize).checked_sub(1)?;
    let handles = HANDLES.lock().unwrap_or_else(|e| e.into_inner());
    handles.get(idx).cloned()
}

/// Blocks while the config lists `func` (or `"*"`) under `hang`. An unreadable config releases
/// it, so a test that removes its directory never leaves a thread stuck here.
fn hang_while_listed(func: &str) {
    loop {
        let Ok(cfg) = config() else { return };
        let listed = cfg.get("hang").and_then(Value::as_array).is_some_and(|a| {
            a.iter()
                .any(|v| matches!(v.as_str(), Some(f) if f == func || f == "*"))
        });
        if !listed {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Common checks for a system-level call: not hanging, config readable, initialised, no failure
/// rule.
fn system_call(func: &str) -> Result<Value, Ret> {
    hang_while_listed(func);
    let cfg = config()?;
    if let Some(code) = global_fail(&cfg, func) {
        return Err(code);
    }
    if INIT_COUNT.load(Ordering::SeqCst) == 0 {
        return Err(UNINITIALIZED);
    }
    Ok(cfg)
}

/// Runs `f` on the device behind `handle` after the common checks. A device that has left the
/// config answers GPU_IS_LOST, as one that fell off the bus would.
fn device_call(func: &str, handle: Device, f: impl FnOnce(&Value) -> Ret) -> Ret {
    let cfg = match system_call(func) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(uuid) = uuid_for(handle) else {
        return INVALID_ARGUMENT;
    };
    let Some(dev) = devices(&cfg).iter().find(|d| uuid_of(d) == uuid) else {
        return GPU_IS_LOST;
    };
    if let Some(code) = code_in(dev.get("fail"), func) {
        return code;
    }
    f(dev)
}

fn field_u64(dev: &Value, key: &str) -> Option<u64> {
    let v = dev.get(key)?;
    v.as_u64().or_else(|| v.as_f64().map(|f| f as u64))
}

/// Copies `s` with its NUL into a caller's buffer of `len` bytes.
unsafe fn write_str(s: &str, buf: *mut c_char, len: c_uint) -> Ret {
    if buf.is_null() {
        return INVALID_ARGUMENT;
    }
    let bytes = s.as_bytes();
    if bytes.len() + 1 > len as usize {
        return INSUFFICIENT_SIZE;
    }
    std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf as *mut u8, bytes.len());
    *buf.add(bytes.len()) = 0;
    SUCCESS
}

fn init(func: &str) -> Ret {
    log_call(func);
    hang_while_listed(func);
    let cfg = match config() {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(code) = global_fail(&cfg, func).or_else(|| code_in(cfg.get("fail"), "init")) {
        return code;
    }
    INIT_COUNT.fetch_add(1, Ordering::SeqCst);
    SUCCESS
}

#[no_mangle]
pub extern "C" fn nvmlInit_v2() -> Ret {
    init("nvmlInit_v2")
}

#[no_mangle]
pub extern "C" fn nvmlInit() -> Ret {
    init("nvmlInit")
}

#[no_mangle]
pub extern "C" fn nvmlInitWithFlags(_flags: c_uint) -> Ret {
    init("nvmlInitWithFlags")
}

#[no_mangle]
pub extern "C" fn nvmlShutdown() -> Ret {
    log_call("nvmlShutdown");
    if let Ok(cfg) = config() {
        if let Some(code) = global_fail(&cfg, "nvmlShutdown") {
            return code;
        }
    }
    let dec = INIT_COUNT.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    if dec.is_ok() {
        SUCCESS
    } else {
        UNINITIALIZED
    }
}

#[no_mangle]
pub extern "C" fn nvmlErrorString(code: Ret) -> *const c_char {
    let s: &'static CStr = match code {
        0 => c"Success",
        1 => c"Uninitialized",
        2 => c"Invalid Argument",
        3 => c"Not Supported",
        6 => c"Not Found",
        7 => c"Insufficient Size",
        9 => c"Driver Not Loaded",
        12 => c"Library Not Found",
        15 => c"GPU is lost",
        25 => c"Argument version mismatch",
        _ => c"Unknown Error",
    };
    s.as_ptr()
}

#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetDriverVersion(buf: *mut c_char, len: c_uint) -> Ret {
    match system_call("nvmlSystemGetDriverVersion") {
        Ok(cfg) => {
            let v = cfg
                .get("driver_version")
                .and_then(Value::as_str)
                .unwrap_or("550.54.15");
            write_str(v, buf, len)
        }
        Err(code) => code,
    }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetNVMLVersion(buf: *mut c_char, len: c_uint) -> Ret {
    match system_call("nvmlSystemGetNVMLVersion") {
        Ok(_) => write_str("12.550.54.15", buf, len),
        Err(code) => code,
    }
}

unsafe fn get_count(func: &str, count: *mut c_uint) -> Ret {
    if count.is_null() {
        return INVALID_ARGUMENT;
    }
    match system_call(func) {
        Ok(cfg) => {
            *count = devices(&cfg).len() as c_uint;
            SUCCESS
        }
        Err(code) => code,
    }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCount_v2(count: *mut c_uint) -> Ret {
    get_count("nvmlDeviceGetCount_v2", count)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCount(count: *mut c_uint) -> Ret {
    get_count("nvmlDeviceGetCount", count)
}

unsafe fn by_index(func: &str, index: c_uint, out: *mut Device) -> Ret {
    if out.is_null() {
        return INVALID_ARGUMENT;
    }
    let cfg = match system_call(func) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(dev) = devices(&cfg).get(index as usize) else {
        return INVALID_ARGUMENT;
    };
    // A lost device fails its handle lookup too, as the real driver does.
    if let Some(code) = code_in(dev.get("fail"), func) {
        return code;
    }
    *out = handle_for(uuid_of(dev));
    SUCCESS
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex_v2(index: c_uint, out: *mut Device) -> Ret {
    by_index("nvmlDeviceGetHandleByIndex_v2", index, out)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex(index: c_uint, out: *mut Device) -> Ret {
    by_index("nvmlDeviceGetHandleByIndex", index, out)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByUUID(uuid: *const c_char, out: *mut Device) -> Ret {
    const FUNC: &str = "nvmlDeviceGetHandleByUUID";
    if uuid.is_null() || out.is_null() {
        return INVALID_ARGUMENT;
    }
    let cfg = match system_call(FUNC) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let wanted = CStr::from_ptr(uuid).to_string_lossy();
    let Some(dev) = devices(&cfg).iter().find(|d| uuid_of(d) == wanted) else {
        return NOT_FOUND;
    };
    if let Some(code) = code_in(dev.get("fail"), FUNC) {
        return code;
    }
    *out = handle_for(&wanted);
    SUCCESS
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetUUID(dev: Device, buf: *mut c_char, len: c_uint) -> Ret {
    device_call("nvmlDeviceGetUUID", dev, |d| {
        write_str(uuid_of(d), buf, len)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetName(dev: Device, buf: *mut c_char, len: c_uint) -> Ret {
    device_call("nvmlDeviceGetName", dev, |d| {
        match d.get("name").and_then(Value::as_str) {
            Some(n) => write_str(n, buf, len),
            None => NOT_SUPPORTED,
        }
    })
}

#[repr(C)]
pub struct Utilization {
    gpu: c_uint,
    memory: c_uint,
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetUtilizationRates(dev: Device, out: *mut Utilization) -> Ret {
    if out.is_null() {
        return INVALID_ARGUMENT;
    }
    device_call("nvmlDeviceGetUtilizationRates", dev, |d| {
        match field_u64(d, "utilization") {
            Some(gpu) => {
                let memory = field_u64(d, "memory_utilization").unwrap_or(0);
                *out = Utilization {
                    gpu: gpu as c_uint,
                    memory: memory as c_uint,
                };
                SUCCESS
            }
            None => NOT_SUPPORTED,
        }
    })
}

fn memory(d: &Value) -> Option<(u64, u64)> {
    Some((field_u64(d, "memory_used")?, field_u64(d, "memory_total")?))
}

#[repr(C)]
pub struct MemoryV1 {
    total: c_ulonglong,
    free: c_ulonglong,
    used: c_ulonglong,
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo(dev: Device, out: *mut MemoryV1) -> Ret {
    if out.is_null() {
        return INVALID_ARGUMENT;
    }
    device_call("nvmlDeviceGetMemoryInfo", dev, |d| match memory(d) {
        Some((used, total)) => {
            *out = MemoryV1 {
                total,
                free: total.saturating_sub(used),
                used,
            };
            SUCCESS
        }
        None => NOT_SUPPORTED,
    })
}

#[repr(C)]
pub struct MemoryV2 {
    version: c_uint,
    total: c_ulonglong,
    reserved: c_ulonglong,
    free: c_ulonglong,
    used: c_ulonglong,
}

/// `nvmlMemory_v2` = sizeof | 2 << 24, checked like the real library does.
#[cfg(not(feature = "minimal"))]
const MEMORY_V2_VERSION: c_uint = (std::mem::size_of::<MemoryV2>() as c_uint) | (2 << 24);

#[cfg(not(feature = "minimal"))]
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo_v2(dev: Device, out: *mut MemoryV2) -> Ret {
    if out.is_null() {
        return INVALID_ARGUMENT;
    }
    if (*out).version != MEMORY_V2_VERSION {
        return ARGUMENT_VERSION_MISMATCH;
    }
    device_call("nvmlDeviceGetMemoryInfo_v2", dev, |d| match memory(d) {
        Some((used, total)) => {
            *out = MemoryV2 {
                version: MEMORY_V2_VERSION,
                total,
                reserved: 0,
                free: total.saturating_sub(used),
                used,
            };
            SUCCESS
        }
        None => NOT_SUPPORTED,
    })
}

#[cfg(not(feature = "minimal"))]
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPowerUsage(dev: Device, out: *mut c_uint) -> Ret {
    if out.is_null() {
        return INVALID_ARGUMENT;
    }
    device_call("nvmlDeviceGetPowerUsage", dev, |d| {
        match field_u64(d, "power_mw") {
            Some(mw) => {
                *out = mw as c_uint;
                SUCCESS
            }
            None => NOT_SUPPORTED,
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetTemperature(
    dev: Device,
    sensor: c_uint,
    out: *mut c_uint,
) -> Ret {
    // Only NVML_TEMPERATURE_GPU (0) exists.
    if out.is_null() || sensor != 0 {
        return INVALID_ARGUMENT;
    }
    device_call("nvmlDeviceGetTemperature", dev, |d| {
        match field_u64(d, "temperature") {
            Some(t) => {
                *out = t as c_uint;
                SUCCESS
            }
            None => NOT_SUPPORTED,
        }
    })
}
