//! What the agent reads from `GET /v2/models/<m>/config`: a pure parse of the body into
//! [`ModelInfo`] (ensemble steps, instances, batch sizes, GPUs). The fetch is the client's; the
//! capacity estimate, the pod's utilization and the pod request rate read the result.

/// What the agent uses from a model's config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelInfo {
    /// The model is an ensemble (its steps are models of their own).
    pub ensemble: bool,
    /// Step model names of an ensemble; empty otherwise.
    pub steps: Vec<String>,
    /// Instances that execute in parallel: `count` of every instance group, times its GPUs for
    /// a GPU group (Triton makes `count` instances on each listed GPU). `None` when the config
    /// names no instance group (the capacity estimate then has no instance count).
    pub instances: Option<u32>,
    /// `max_batch_size`; 0 when batching is off.
    pub max_batch_size: u32,
    /// The largest `dynamic_batching.preferred_batch_size`, when the config lists any.
    pub largest_preferred_batch: Option<u32>,
    /// GPU indices the model's instances run on; `None` when it has no GPU placement (CPU
    /// instances, or the config does not say): such a model counts on every GPU.
    pub gpus: Option<Vec<u32>>,
}

impl ModelInfo {
    /// The largest batch the config lets the dynamic batcher form under a deep queue: the
    /// largest preferred batch size when there is one (the batcher forms it in preference),
    /// else `max_batch_size`; 1 when batching is off. A shape limit, not evidence: the
    /// capacity estimate caps it at the largest batch seen.
    pub fn batch_limit(&self) -> u32 {
        let max = self.max_batch_size.max(1);
        self.largest_preferred_batch
            .filter(|p| *p > 0)
            .map_or(max, |p| p.min(max))
    }

    /// Parse a config body; an unreadable body yields the default (no steps, no instances).
    pub fn from_config(body: &[u8]) -> ModelInfo {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
            return ModelInfo::default();
        };
        let steps = steps_of(&v);
        let ensemble =
            !steps.is_empty() || v.get("platform").and_then(|p| p.as_str()) == Some("ensemble");
        let max_batch_size = v
            .get("max_batch_size")
            .and_then(|b| b.as_u64())
            .and_then(|b| u32::try_from(b).ok())
            .unwrap_or(0);
        let largest_preferred_batch = v
            .get("dynamic_batching")
            .and_then(|d| d.get("preferred_batch_size"))
            .and_then(|p| p.as_array())
            .and_then(|a| {
                a.iter()
                    .filter_map(|b| b.as_u64().and_then(|b| u32::try_from(b).ok()))
                    .max()
            });
        let groups = v.get("instance_group").and_then(|g| g.as_array());
        let mut instances: Option<u32> = None;
        let mut gpus: Vec<u32> = Vec::new();
        for g in groups.into_iter().flatten() {
            let count = g
                .get("count")
                .and_then(|c| c.as_u64())
                .and_then(|c| u32::try_from(c).ok())
                .unwrap_or(1);
            let on: Vec<u32> = g
                .get("gpus")
                .and_then(|x| x.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|i| i.as_u64().and_then(|i| u32::try_from(i).ok()))
                        .collect()
                })
                .unwrap_or_default();
            let gpu_kind = g.get("kind").and_then(|k| k.as_str()) == Some("KIND_GPU");
            let n = if gpu_kind && !on.is_empty() {
                gpus.extend(&on);
                count.saturating_mul(on.len() as u32)
            } else {
                count
            };
            instances = Some(instances.unwrap_or(0).saturating_add(n));
        }
        gpus.sort_unstable();
        gpus.dedup();
        ModelInfo {
            ensemble,
            steps,
            instances: instances.filter(|n| *n > 0),
            max_batch_size,
            largest_preferred_batch,
            gpus: (!gpus.is_empty()).then_some(gpus),
        }
    }
}

fn steps_of(v: &serde_json::Value) -> Vec<String> {
    v.get("ensemble_scheduling")
        .and_then(|e| e.get("step"))
        .and_then(|s| s.as_array())
        .map(|steps| {
            steps
                .iter()
                .filter_map(|s| {
                    s.get("model_name")
                        .and_then(|n| n.as_str())
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_info_from_configs() {
        let real = include_bytes!("../../tests/fixtures/stats/lin_config.json");
        let i = ModelInfo::from_config(real);
        assert_eq!(
            i,
            ModelInfo {
                ensemble: false,
                steps: vec![],
                instances: Some(2),
                max_batch_size: 8,
                // The real config lists preferred_batch_size [8].
                largest_preferred_batch: Some(8),
                gpus: None
            }
        );
        assert_eq!(i.batch_limit(), 8);
        let preferred =
            br#"{"max_batch_size": 16, "dynamic_batching": {"preferred_batch_size": [4, 8]}}"#;
        let i = ModelInfo::from_config(preferred);
        assert_eq!(i.largest_preferred_batch, Some(8));
        assert_eq!(i.batch_limit(), 8);
        let off = br#"{"max_batch_size": 0}"#;
        assert_eq!(ModelInfo::from_config(off).batch_limit(), 1);
        let odd = br#"{"max_batch_size": 4, "dynamic_batching": {"preferred_batch_size": [32]}}"#;
        assert_eq!(ModelInfo::from_config(odd).batch_limit(), 4);
        let gpu = br#"{"max_batch_size": 4, "instance_group": [
            {"kind": "KIND_GPU", "count": 2, "gpus": [0, 1]},
            {"kind": "KIND_GPU", "count": 1, "gpus": [1]}]}"#;
        let i = ModelInfo::from_config(gpu);
        assert_eq!(i.instances, Some(5));
        assert_eq!(i.gpus, Some(vec![0, 1]));
        let ens =
            br#"{"platform": "ensemble", "ensemble_scheduling": {"step": [{"model_name": "a"}]}}"#;
        let i = ModelInfo::from_config(ens);
        assert!(i.ensemble);
        assert_eq!(i.steps, vec!["a"]);
        assert_eq!(i.instances, None);
        assert_eq!(
            ModelInfo::from_config(b"\xff garbage"),
            ModelInfo::default()
        );
    }
}
