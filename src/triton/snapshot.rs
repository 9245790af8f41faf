//! A parsed Triton metrics page turned into per-model counters and gauges.
//!
//! Values are summed over `version` (and over `reason` for failures): the agent reports per
//! model, and an autoscaler does not care which version served a request. The model label is
//! `model` (not `model_name`, which common recipes use and which Triton never emits).
//!
//! Non-finite values (NaN, ±Inf) are dropped here, at the edge, and counted in
//! [`Snapshot::non_finite`], so nothing downstream can turn them into a gauge.

use std::collections::BTreeMap;

use super::text::{self, ParseError, Sample};

/// Cumulative counters and current gauges of one model, summed over versions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelCounters {
    /// `nv_inference_request_success`.
    pub success: f64,
    /// `nv_inference_request_failure`, summed over `reason`.
    pub failure: f64,
    /// `nv_inference_exec_count`.
    pub exec_count: f64,
    /// `nv_inference_queue_duration_us`; absent with `counter_latencies=false`.
    pub queue_us: Option<f64>,
    /// `nv_inference_compute_infer_duration_us`; absent with `counter_latencies=false`.
    pub compute_infer_us: Option<f64>,
    /// `nv_inference_queue_summary_us_sum` / `_count`, the fallback for `queue_us`.
    pub queue_summary: Option<(f64, f64)>,
    /// `nv_inference_compute_infer_summary_us_sum` / `_count`, the fallback for `compute_infer_us`.
    pub compute_summary: Option<(f64, f64)>,
    /// `nv_inference_pending_request_count`: requests queued, not yet executing.
    pub pending: f64,
    /// TensorRT-LLM `nv_trt_llm_request_metrics{request_type="waiting"}`; the backend holds its
    /// own queue, so Triton's pending count stays near 0 for those models.
    pub trtllm_waiting: Option<f64>,
    /// TensorRT-LLM `nv_trt_llm_request_metrics{request_type="active"}`: in-flight work.
    pub trtllm_active: Option<f64>,
    /// TensorRT-LLM `nv_trt_llm_request_metrics{request_type="max"}`: the most requests the
    /// in-flight batcher runs at once.
    pub trtllm_max: Option<f64>,
    /// TensorRT-LLM `nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="used"}`.
    pub kv_used_blocks: Option<f64>,
    /// TensorRT-LLM `nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="max"}`.
    pub kv_max_blocks: Option<f64>,
    /// TensorRT-LLM `nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction"}`: used
    /// over max, published by newer backends only.
    pub kv_fraction: Option<f64>,
    /// TensorRT-LLM `nv_trt_llm_general_metrics{general_type="iteration_counter"}`: rises with
    /// every batch iteration, so it shows progress while streams are still open.
    pub trtllm_iterations: Option<f64>,
    /// `nv_cache_num_hits_per_model`: successes answered from the response cache, which add no
    /// compute time.
    pub cache_hits: Option<f64>,
    /// vLLM `vllm:num_requests_waiting` of this model (Triton's vLLM backend labels it with
    /// `model`): the backend's own queue. Triton hands a request to vLLM at once, so its pending
    /// count stays 0 for these models and this is their queue.
    pub vllm_waiting: Option<f64>,
    /// vLLM `vllm:num_requests_running` of this model: in flight, not queued.
    pub vllm_running: Option<f64>,
}

impl ModelCounters {
    /// Pending requests as the agent reports them: Triton's queue plus the backend's own
    /// (TensorRT-LLM's `waiting`, vLLM's `num_requests_waiting`). Part of the offered load:
    /// a backend queue left out would cap a model's load at its completions.
    pub fn pending_total(&self) -> f64 {
        self.pending + self.trtllm_waiting.unwrap_or(0.0) + self.vllm_waiting.unwrap_or(0.0)
    }

    /// Summed queue (sum_us, count) from the counter or, failing that, the summary.
    ///
    /// The counter pairs with `success` because Triton adds queue time only for successful
    /// requests; the summary carries its own count.
    pub fn queue_pair(&self) -> Option<(f64, f64)> {
        match self.queue_us {
            Some(q) => Some((q, self.success)),
            None => self.queue_summary,
        }
    }

    /// Summed compute-infer (sum_us, count) from the counter or, failing that, the summary.
    ///
    /// The counter pairs with the successes that executed: Triton adds no compute time for a
    /// response-cache hit, which `success` counts.
    pub fn compute_pair(&self) -> Option<(f64, f64)> {
        match self.compute_infer_us {
            Some(c) => Some((c, self.success - self.cache_hits.unwrap_or(0.0))),
            None => self.compute_summary,
        }
    }
}

/// One GPU series from Triton's own `nv_gpu_*` families.
#[derive(Debug, Clone, PartialEq)]
pub struct TritonGpuSample {
    /// Family name, e.g. `nv_gpu_utilization`.
    pub metric: String,
    /// The `gpu_uuid` label.
    pub gpu_uuid: String,
    /// The value.
    pub value: f64,
}

/// Everything the agent uses from one metrics page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Per-model counters, keyed by the `model` label.
    pub models: BTreeMap<String, ModelCounters>,
    /// `vllm:num_requests_running` summed over series without a `model` label (a vLLM server
    /// of its own, which labels `model_name`); Triton's vLLM backend labels `model`, and those
    /// series are counted per model in [`ModelCounters::vllm_running`].
    pub vllm_running: Option<f64>,
    /// `vllm:num_requests_waiting` without a `model` label; see `vllm_running`.
    pub vllm_waiting: Option<f64>,
    /// Triton's `nv_gpu_*` series (utilization, memory, power), for GPU selection and fallback.
    pub gpu: Vec<TritonGpuSample>,
    /// Samples dropped because their value was NaN or ±Inf.
    pub non_finite: usize,
    /// Models that had such a sample: their counters on this page are not trustworthy, and the
    /// window keeps their previous values instead (a dropped counter would read as 0, which
    /// looks like a Triton restart).
    pub poisoned: std::collections::BTreeSet<String>,
}

impl Snapshot {
    /// Parse a page. Only the families the agent uses are built; the rest are skipped.
    pub fn parse(body: &str) -> Result<Snapshot, ParseError> {
        let mut b = Builder::default();
        text::parse(body, wanted, |s| b.add(&s))?;
        let mut snap = b.snap;
        snap.models = b.models.into_iter().collect();
        Ok(snap)
    }

    /// The distinct `gpu_uuid` values Triton's page names, sorted.
    pub fn gpu_uuids(&self) -> Vec<String> {
        let mut v: Vec<String> = self.gpu.iter().map(|g| g.gpu_uuid.clone()).collect();
        v.sort();
        v.dedup();
        v
    }

    /// Work the backends report as waiting or in flight, each request once: per model its
    /// pending total (Triton's queue, TRT-LLM waiting, vLLM waiting), TRT-LLM active and vLLM
    /// running; and the vLLM series that name no model.
    pub fn in_flight(&self) -> f64 {
        let models: f64 = self
            .models
            .values()
            .map(|m| {
                m.pending_total() + m.trtllm_active.unwrap_or(0.0) + m.vllm_running.unwrap_or(0.0)
            })
            .sum();
        models + self.vllm_running.unwrap_or(0.0) + self.vllm_waiting.unwrap_or(0.0)
    }
}

/// Accumulates a page. Models are kept in page order with a "next expected" hint: Triton lists
/// the same models in the same order in every family, so the hint almost always hits and the
/// per-sample lookup is one string compare (a map lookup per sample was a fifth of the parse).
#[derive(Default)]
struct Builder {
    snap: Snapshot,
    models: Vec<(String, ModelCounters)>,
    index: std::collections::HashMap<String, usize>,
    hint: usize,
}

impl Builder {
    fn slot(&mut self, model: std::borrow::Cow<'_, str>) -> &mut ModelCounters {
        let n = self.models.len();
        let i = if n > 0 && self.models[self.hint % n].0 == model.as_ref() {
            self.hint % n
        } else if let Some(&i) = self.index.get(model.as_ref()) {
            i
        } else {
            let name = model.into_owned();
            self.index.insert(name.clone(), n);
            self.models.push((name, ModelCounters::default()));
            n
        };
        self.hint = i + 1;
        &mut self.models[i].1
    }

    fn add(&mut self, s: &Sample<'_>) {
        if !s.value.is_finite() {
            self.snap.non_finite += 1;
            if let Some(m) = s.label("model") {
                self.snap.poisoned.insert(m.into_owned());
            }
            return;
        }
        let v = s.value;
        match s.name {
            "vllm:num_requests_running" | "vllm:num_requests_waiting" => {
                let running = s.name == "vllm:num_requests_running";
                let slot = match s.label("model") {
                    Some(model) => {
                        let m = self.slot(model);
                        if running {
                            &mut m.vllm_running
                        } else {
                            &mut m.vllm_waiting
                        }
                    }
                    None if running => &mut self.snap.vllm_running,
                    None => &mut self.snap.vllm_waiting,
                };
                *slot.get_or_insert(0.0) += v;
            }
            n if n.starts_with("nv_gpu_") => {
                if let Some(uuid) = s.label("gpu_uuid") {
                    self.snap.gpu.push(TritonGpuSample {
                        metric: n.to_string(),
                        gpu_uuid: uuid.into_owned(),
                        value: v,
                    });
                }
            }
            n => {
                let Some(model) = s.label("model") else {
                    return;
                };
                let m = self.slot(model);
                match n {
                    "nv_inference_request_success" => m.success += v,
                    "nv_inference_request_failure" => m.failure += v,
                    "nv_inference_exec_count" => m.exec_count += v,
                    "nv_inference_queue_duration_us" => *m.queue_us.get_or_insert(0.0) += v,
                    "nv_inference_compute_infer_duration_us" => {
                        *m.compute_infer_us.get_or_insert(0.0) += v
                    }
                    "nv_inference_queue_summary_us_sum" => add_pair(&mut m.queue_summary, v, 0.0),
                    "nv_inference_queue_summary_us_count" => add_pair(&mut m.queue_summary, 0.0, v),
                    "nv_inference_compute_infer_summary_us_sum" => {
                        add_pair(&mut m.compute_summary, v, 0.0)
                    }
                    "nv_inference_compute_infer_summary_us_count" => {
                        add_pair(&mut m.compute_summary, 0.0, v)
                    }
                    "nv_inference_pending_request_count" => m.pending += v,
                    "nv_cache_num_hits_per_model" => *m.cache_hits.get_or_insert(0.0) += v,
                    "nv_trt_llm_general_metrics"
                        if s.label("general_type").as_deref() == Some("iteration_counter") =>
                    {
                        *m.trtllm_iterations.get_or_insert(0.0) += v
                    }
                    "nv_trt_llm_request_metrics" => match s.label("request_type").as_deref() {
                        Some("waiting") => *m.trtllm_waiting.get_or_insert(0.0) += v,
                        Some("active") => *m.trtllm_active.get_or_insert(0.0) += v,
                        Some("max") => *m.trtllm_max.get_or_insert(0.0) += v,
                        _ => {}
                    },
                    // Summed over versions like every family: TensorRT-LLM serves one version.
                    "nv_trt_llm_kv_cache_block_metrics" => {
                        match s.label("kv_cache_block_type").as_deref() {
                            Some("used") => *m.kv_used_blocks.get_or_insert(0.0) += v,
                            Some("max") => *m.kv_max_blocks.get_or_insert(0.0) += v,
                            Some("fraction") => *m.kv_fraction.get_or_insert(0.0) += v,
                            _ => {}
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

fn add_pair(p: &mut Option<(f64, f64)>, sum: f64, count: f64) {
    let e = p.get_or_insert((0.0, 0.0));
    e.0 += sum;
    e.1 += count;
}

/// The name filter: the families the agent reads. Everything else is skipped unparsed.
pub fn wanted(name: &str) -> bool {
    if let Some(rest) = name.strip_prefix("nv_inference_") {
        matches!(
            rest,
            "request_success"
                | "request_failure"
                | "exec_count"
                | "queue_duration_us"
                | "compute_infer_duration_us"
                | "queue_summary_us_sum"
                | "queue_summary_us_count"
                | "compute_infer_summary_us_sum"
                | "compute_infer_summary_us_count"
                | "pending_request_count"
        )
    } else if let Some(rest) = name.strip_prefix("nv_gpu_") {
        matches!(
            rest,
            "utilization" | "memory_total_bytes" | "memory_used_bytes" | "power_usage"
        )
    } else {
        matches!(
            name,
            "nv_trt_llm_request_metrics"
                | "nv_trt_llm_kv_cache_block_metrics"
                | "nv_trt_llm_general_metrics"
                | "nv_cache_num_hits_per_model"
                | "vllm:num_requests_running"
                | "vllm:num_requests_waiting"
        )
    }
}
