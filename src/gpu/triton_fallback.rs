//! GPU readings from Triton's own `nv_gpu_*` series: the fallback for hardened clusters where the
//! sidecar cannot see GPUs, and the source of the `gpu_uuid` set that names the pod's GPUs.
//!
//! Triton's documented format (server `docs/user_guide/metrics.md`), one series per GPU, labelled
//! with `gpu_uuid` only:
//! ```text
//! nv_gpu_utilization{gpu_uuid="GPU-c06b..."} 0.000000          # ratio, 0.0 to 1.0
//! nv_gpu_memory_total_bytes{gpu_uuid="GPU-c06b..."} 42949672960.000000
//! nv_gpu_memory_used_bytes{gpu_uuid="GPU-c06b..."} 33763098624.000000
//! nv_gpu_power_usage{gpu_uuid="GPU-c06b..."} 51.091000          # watts
//! nv_gpu_power_limit{gpu_uuid="GPU-c06b..."} 400.000000
//! nv_energy_consumption{gpu_uuid="GPU-c06b..."} 3594017.400000
//! ```
//! Triton publishes no temperature, so `temperature_celsius` is always `None`, and no GPU name,
//! so `name` is empty. An empty label value is what Prometheus treats as an absent label, which
//! is honest: the series stay identified by `gpu_uuid`.

use super::{GpuReading, GpuSource};

/// Builds one reading per `gpu_uuid` found on any `nv_gpu_*` or `nv_energy_*` series, sorted by
/// UUID. Samples are `(metric name, labels, value)`. Series other than utilization, memory and
/// power still contribute their UUID, since they also say which GPUs Triton sees. Non-finite
/// values are ignored; when a series repeats, the last sample wins.
pub fn readings<'s, I>(samples: I) -> Vec<GpuReading>
where
    I: IntoIterator<Item = (&'s str, &'s [(&'s str, &'s str)], f64)>,
{
    let mut out: Vec<GpuReading> = Vec::new();
    for (name, labels, value) in samples {
        if !(name.starts_with("nv_gpu_") || name.starts_with("nv_energy_")) {
            continue;
        }
        let Some(uuid) = labels
            .iter()
            .find(|(k, _)| *k == "gpu_uuid")
            .map(|(_, v)| *v)
        else {
            continue;
        };
        if uuid.is_empty() {
            continue;
        }
        let idx = match out.iter().position(|r| r.uuid == uuid) {
            Some(i) => i,
            None => {
                out.push(GpuReading {
                    source: GpuSource::Triton,
                    ..GpuReading::new(uuid, "")
                });
                out.len() - 1
            }
        };
        let r = &mut out[idx];
        let v = value.is_finite().then_some(value);
        match name {
            "nv_gpu_utilization" => r.utilization_ratio = v.or(r.utilization_ratio),
            "nv_gpu_memory_total_bytes" => r.memory_total_bytes = v.or(r.memory_total_bytes),
            "nv_gpu_memory_used_bytes" => r.memory_used_bytes = v.or(r.memory_used_bytes),
            "nv_gpu_power_usage" => r.power_watts = v.or(r.power_watts),
            _ => {}
        }
    }
    out.sort_by(|a, b| a.uuid.cmp(&b.uuid));
    out
}

/// The same GPUs with every value forgotten: what a stale page still says (which GPUs are
/// Triton's) once its values may no longer be served.
pub fn labels_only(readings: &[GpuReading]) -> Vec<GpuReading> {
    readings
        .iter()
        .map(|r| GpuReading {
            source: r.source,
            ..GpuReading::new(r.uuid.clone(), r.name.clone())
        })
        .collect()
}

/// Whether `r` carries the three series the fallback needs: utilization, memory used and
/// memory total.
pub fn usable(r: &GpuReading) -> bool {
    r.utilization_ratio.is_some() && r.memory_used_bytes.is_some() && r.memory_total_bytes.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "GPU-c06bbf33-c250-ca45-579b-19134b518844";
    const B: &str = "GPU-11111111-2222-3333-4444-555555555555";

    #[test]
    fn documented_page_becomes_readings() {
        let la: &[(&str, &str)] = &[("gpu_uuid", A)];
        let lb: &[(&str, &str)] = &[("gpu_uuid", B)];
        let other: &[(&str, &str)] = &[("model", "m"), ("version", "1")];
        let samples = vec![
            ("nv_gpu_utilization", la, 0.25),
            ("nv_gpu_memory_total_bytes", la, 42949672960.0),
            ("nv_gpu_memory_used_bytes", la, 33763098624.0),
            ("nv_gpu_power_usage", la, 51.091),
            ("nv_gpu_power_limit", la, 400.0),
            ("nv_energy_consumption", la, 3594017.4),
            ("nv_energy_consumption", lb, 1.0),
            ("nv_inference_count", other, 7.0),
            ("nv_gpu_utilization", &[][..], 0.5),
        ];
        let r = readings(samples);
        assert_eq!(r.len(), 2);
        // Sorted by UUID: B < A.
        assert_eq!(
            r[0],
            GpuReading {
                source: GpuSource::Triton,
                ..GpuReading::new(B, "")
            }
        );
        assert_eq!(r[1].source, GpuSource::Triton);
        let bare = labels_only(&r);
        assert_eq!(bare[1].uuid, A);
        assert!(!usable(&bare[1]) && bare[1].power_watts.is_none());
        assert_eq!(r[1].uuid, A);
        assert_eq!(r[1].name, "");
        assert_eq!(r[1].utilization_ratio, Some(0.25));
        assert_eq!(r[1].memory_total_bytes, Some(42949672960.0));
        assert_eq!(r[1].memory_used_bytes, Some(33763098624.0));
        assert_eq!(r[1].power_watts, Some(51.091));
        assert_eq!(r[1].temperature_celsius, None);
        assert!(usable(&r[1]));
        assert!(!usable(&r[0]));
    }

    #[test]
    fn nan_is_ignored() {
        let la: &[(&str, &str)] = &[("gpu_uuid", A)];
        let r = readings(vec![
            ("nv_gpu_utilization", la, 0.5),
            ("nv_gpu_utilization", la, f64::NAN),
        ]);
        assert_eq!(r[0].utilization_ratio, Some(0.5));
    }

    #[test]
    fn no_gpu_series_means_no_readings() {
        let l: &[(&str, &str)] = &[("model", "m")];
        assert!(readings(vec![("nv_inference_count", l, 1.0)]).is_empty());
    }
}
