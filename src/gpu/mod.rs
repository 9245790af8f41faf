//! GPU gauges for the pod's own GPUs.
//!
//! Data flow: NVML (own blocking thread, `nvml.rs`) and Triton's `nv_gpu_*` series
//! (`triton_fallback.rs`) ──► [`GpuState`] ──► published by the GPU task (`task.rs`), encoded by
//! `metrics.rs`. Which GPUs are reported, and from which source each, is decided by `select.rs`;
//! how old a reading may be, by `fresh.rs`.
//!
//! - [`nvml`]: the blocking NVML poller thread and a one-shot read for `check`;
//! - [`select`]: pure rules that pick the GPU set and each GPU's source;
//! - [`fresh`]: pure staleness rules (a hanging NVML call, a stale Triton page);
//! - [`triton_fallback`]: pure conversion of Triton's `nv_gpu_*` samples into readings.
//!
//! See `docs/gpu.md` for how the sidecar container gets to see the pod's GPUs.

pub mod fresh;
pub mod nvml;
pub mod select;
pub mod task;
pub mod triton_fallback;
pub use task::{check_report, spawn};

use std::path::PathBuf;
use std::time::Duration;

/// Which GPUs to report: the one model of `--gpu`/`--no-gpu`, parsed by
/// `config::gpu_choice` and read by `gpu::select`'s rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuChoice {
    /// `--no-gpu` (or `--gpu none`): no NVML, no GPU gauges.
    Off,
    /// `--gpu all`: every GPU NVML can see.
    All,
    /// `--gpu UUID,...`: these UUIDs, in the order given.
    Uuids(Vec<String>),
    /// `--gpu` not set: the GPUs Triton's own page names.
    FromTriton,
}

/// GPU reporting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuConfig {
    /// Which GPUs.
    pub choice: GpuChoice,
    /// NVML library path; `libnvidia-ml.so.1` from the loader path when `None`.
    pub nvml_lib: Option<PathBuf>,
    /// NVML poll interval.
    pub poll_interval: Duration,
}

/// One GPU's readings. `None` means the value is not available (NotSupported, a missing
/// symbol, or not carried by the source) and the series is omitted, never reported as 0.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuReading {
    /// NVML UUID, e.g. `GPU-5f1c...`; the `gpu_uuid` label.
    pub uuid: String,
    /// Marketing name, e.g. `NVIDIA H100 80GB HBM3`; the `gpu_name` label.
    pub name: String,
    /// Utilization, 0.0 to 1.0.
    pub utilization_ratio: Option<f64>,
    /// Memory used, bytes.
    pub memory_used_bytes: Option<f64>,
    /// Memory total, bytes.
    pub memory_total_bytes: Option<f64>,
    /// Power draw, watts.
    pub power_watts: Option<f64>,
    /// Core temperature, degrees Celsius.
    pub temperature_celsius: Option<f64>,
    /// Where these values came from (`triton_sidecar_gpu_source{gpu_uuid,source}`): set by the
    /// source that read them; [`GpuSource::None`] for a reading built by hand.
    pub source: GpuSource,
}

/// Where a GPU's published readings came from (`triton_sidecar_gpu_source{gpu_uuid,source}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum GpuSource {
    /// Read through NVML by this agent.
    Nvml,
    /// Copied from Triton's own `nv_gpu_*` series (NVML down, stale, or blind to this GPU).
    Triton,
    /// Nothing is reported (the `{source="none"}` series), or a reading not attributed yet.
    #[default]
    None,
}

impl GpuSource {
    /// The `source` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            GpuSource::Nvml => "nvml",
            GpuSource::Triton => "triton",
            GpuSource::None => "none",
        }
    }
}

/// The GPU part of the published state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuState {
    /// Whether NVML is initialised and answering (`triton_sidecar_nvml_up`): false too while its
    /// newest reading is stale (see [`fresh`]).
    pub nvml_up: bool,
    /// One entry per reported GPU, sorted by UUID, each carrying its own source.
    pub readings: Vec<GpuReading>,
}

impl GpuState {
    /// The sources in use, each once, in the order nvml, triton; `[None]` when no GPU is
    /// reported.
    pub fn sources(&self) -> Vec<GpuSource> {
        let mut v: Vec<GpuSource> = self.readings.iter().map(|r| r.source).collect();
        v.sort();
        v.dedup();
        if v.is_empty() {
            v.push(GpuSource::None);
        }
        v
    }

    /// [`Self::sources`] as `check` prints it: `nvml`, `triton`, `nvml+triton` or `none`.
    pub fn sources_label(&self) -> String {
        self.sources()
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("+")
    }
}

#[cfg(test)]
impl GpuReading {
    /// A reading named `NVIDIA T` with utilization `util` and memory (2 of 8 bytes): enough for
    /// the Triton fallback to use it. The GPU modules' tests start from it.
    pub(crate) fn for_tests(uuid: &str, util: f64) -> Self {
        GpuReading {
            utilization_ratio: Some(util),
            memory_used_bytes: Some(2.0),
            memory_total_bytes: Some(8.0),
            ..GpuReading::new(uuid, "NVIDIA T")
        }
    }
}

impl GpuReading {
    /// A reading with only the labels set, every value unknown.
    pub fn new(uuid: impl Into<String>, name: impl Into<String>) -> Self {
        GpuReading {
            uuid: uuid.into(),
            name: name.into(),
            utilization_ratio: None,
            memory_used_bytes: None,
            memory_total_bytes: None,
            power_watts: None,
            temperature_celsius: None,
            source: GpuSource::None,
        }
    }

    /// `triton_gpu_memory_used_ratio`: used / total, `None` unless both are known and total > 0,
    /// so the gauge is never NaN or infinite.
    pub fn memory_used_ratio(&self) -> Option<f64> {
        match (self.memory_used_bytes, self.memory_total_bytes) {
            (Some(used), Some(total)) if total > 0.0 && used.is_finite() && total.is_finite() => {
                Some(used / total)
            }
            _ => None,
        }
    }
}

/// One line of `triton-sidecar check`'s GPU table. `tests/gpu/check.sh` parses exactly this
/// shape, so change both together:
///
/// `gpu uuid=<UUID> name="<NAME>" util=<ratio|NA> mem_used_bytes=<N|NA> mem_total_bytes=<N|NA>
/// power_w=<x|NA> temp_c=<x|NA>`
///
/// Bytes are printed as integers because nvidia-smi is compared in whole MiB; `"` and `\` in the
/// name are escaped with a backslash.
pub fn format_gpu_line(r: &GpuReading) -> String {
    fn num(v: Option<f64>) -> String {
        match v {
            Some(x) if x.is_finite() => format!("{x}"),
            _ => "NA".to_owned(),
        }
    }
    fn bytes(v: Option<f64>) -> String {
        match v {
            Some(x) if x.is_finite() => format!("{x:.0}"),
            _ => "NA".to_owned(),
        }
    }
    let name = r.name.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        "gpu uuid={} name=\"{}\" util={} mem_used_bytes={} mem_total_bytes={} power_w={} temp_c={}",
        r.uuid,
        name,
        num(r.utilization_ratio),
        bytes(r.memory_used_bytes),
        bytes(r.memory_total_bytes),
        num(r.power_watts),
        num(r.temperature_celsius),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_line_has_the_shape_check_sh_parses() {
        let mut r = GpuReading::new("GPU-1", "NVIDIA \"A\" 100");
        r.utilization_ratio = Some(0.37);
        r.memory_used_bytes = Some(1073741824.0);
        r.memory_total_bytes = Some(85899345920.0);
        r.temperature_celsius = Some(45.0);
        assert_eq!(
            format_gpu_line(&r),
            "gpu uuid=GPU-1 name=\"NVIDIA \\\"A\\\" 100\" util=0.37 mem_used_bytes=1073741824 \
             mem_total_bytes=85899345920 power_w=NA temp_c=45"
        );
    }

    #[test]
    fn sources_are_listed_once_each() {
        let mut s = GpuState::default();
        assert_eq!(s.sources(), [GpuSource::None]);
        assert_eq!(s.sources_label(), "none");
        for (uuid, src) in [
            ("GPU-c", GpuSource::Triton),
            ("GPU-a", GpuSource::Nvml),
            ("GPU-b", GpuSource::Triton),
        ] {
            s.readings.push(GpuReading {
                source: src,
                ..GpuReading::new(uuid, "")
            });
        }
        assert_eq!(s.sources(), [GpuSource::Nvml, GpuSource::Triton]);
        assert_eq!(s.sources_label(), "nvml+triton");
    }

    #[test]
    fn memory_ratio_is_never_nan() {
        let mut r = GpuReading::new("GPU-1", "");
        assert_eq!(r.memory_used_ratio(), None);
        r.memory_used_bytes = Some(1.0);
        r.memory_total_bytes = Some(0.0);
        assert_eq!(r.memory_used_ratio(), None);
        r.memory_total_bytes = Some(4.0);
        assert_eq!(r.memory_used_ratio(), Some(0.25));
    }
}
