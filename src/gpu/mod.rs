//! GPU gauges for the pod's own GPUs.
//!
//! Data flow: NVML (own blocking thread, `nvml.rs`) or Triton's `nv_gpu_*` series
//! (`triton_fallback.rs`) ──► [`GpuState`] ──► published by the poller, encoded by `metrics.rs`.
//! Which GPUs are reported is decided by `select.rs`.

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
}

/// Where the published GPU readings came from (`triton_sidecar_gpu_source{source}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GpuSource {
    /// Read through NVML by this agent.
    Nvml,
    /// Copied from Triton's own `nv_gpu_*` series (NVML unavailable here).
    Triton,
    /// Nothing is reported.
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
    /// Which source the readings come from.
    pub source: GpuSource,
    /// Whether NVML is initialised and answering (`triton_sidecar_nvml_up`).
    pub nvml_up: bool,
    /// One entry per reported GPU, sorted by UUID.
    pub readings: Vec<GpuReading>,
}
