//! Which GPUs are reported, and from which source. Pure: values in, values out.
//!
//! The GPU set is the first of these that applies:
//! 1. `--gpu UUID,...` or `--gpu all`: right only when the sidecar sees what Triton sees;
//! 2. the `gpu_uuid` labels of Triton's `nv_gpu_*` series, which name exactly Triton's GPUs.
//!    With `NVIDIA_VISIBLE_DEVICES=all` NVML sees every GPU on the node, so reporting all of them
//!    would credit this pod with its neighbours' GPUs. Nothing is reported until Triton's page
//!    was read once;
//! 3. otherwise none, and the caller logs [`NO_GPU_CHOSEN`] once.
//!
//! The source is chosen per GPU of the set. NVML's reading when NVML is up and answers for that
//! GPU. Otherwise Triton's, when its page carries utilization, memory used and memory total for
//! it: hardened clusters do not let a sidecar see GPUs, and NVML in a container may see only some
//! of Triton's GPUs. Otherwise the GPU is not reported. Each reading carries its source. Stale
//! readings never get here: the caller turns a stale NVML report into "down" and a stale page
//! into labels only ([`super::fresh`]).

use super::nvml::{NvmlReport, Wanted};
use super::GpuChoice;
use super::{triton_fallback, GpuReading, GpuSource, GpuState};

/// The warning the caller logs once when no GPU could be chosen.
pub const NO_GPU_CHOSEN: &str = "no GPU gauges: Triton's page carries no nv_gpu_* series with a \
    gpu_uuid label (GPU metrics off, or no GPU), and --gpu is not set. Pass --gpu UUID,... or \
    --gpu all (only when the sidecar sees exactly Triton's GPUs), or --no-gpu to silence this";

/// What the NVML poller should read, or `None` when no poller should run (`--no-gpu`).
/// `triton` is the readings from Triton's page, `None` until the page was read once.
pub fn wanted(sel: &GpuChoice, triton: Option<&[GpuReading]>) -> Option<Wanted> {
    Some(match sel {
        GpuChoice::Off => return None,
        GpuChoice::All => Wanted::All,
        GpuChoice::Uuids(u) => Wanted::Uuids(u.clone()),
        GpuChoice::FromTriton => match triton {
            Some(r) if !r.is_empty() => Wanted::Uuids(r.iter().map(|g| g.uuid.clone()).collect()),
            _ => Wanted::Unknown,
        },
    })
}

/// The outcome of [`select`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Selection {
    /// The GPU part of the published state.
    pub state: GpuState,
    /// No GPU could be chosen: the caller logs [`NO_GPU_CHOSEN`], once.
    pub no_gpu_chosen: bool,
}

/// Picks the GPU set and the source. `nvml` is the poller's latest report (`None` when no poller
/// runs); `triton` is [`triton_fallback::readings`] of Triton's latest page, `None` until the page
/// was read once.
pub fn select(
    sel: &GpuChoice,
    nvml: Option<&NvmlReport>,
    triton: Option<&[GpuReading]>,
) -> Selection {
    let nvml_up = nvml.is_some_and(|r| r.nvml_up);
    let none = |no_gpu_chosen| Selection {
        state: GpuState {
            nvml_up,
            readings: Vec::new(),
        },
        no_gpu_chosen,
    };
    // `None` = every GPU.
    let set: Option<Vec<&str>> = match sel {
        GpuChoice::Off => {
            return Selection {
                state: GpuState::default(),
                no_gpu_chosen: false,
            };
        }
        GpuChoice::All => None,
        GpuChoice::Uuids(u) => Some(u.iter().map(String::as_str).collect()),
        GpuChoice::FromTriton => match triton {
            None => return none(false),
            Some([]) => return none(true),
            Some(r) => Some(r.iter().map(|g| g.uuid.as_str()).collect()),
        },
    };
    let in_set = |g: &&GpuReading| set.as_ref().map_or(true, |s| s.contains(&g.uuid.as_str()));
    let pick = |rs: &[GpuReading]| -> Vec<GpuReading> {
        let mut v: Vec<GpuReading> = rs.iter().filter(in_set).cloned().collect();
        v.sort_by(|a, b| a.uuid.cmp(&b.uuid));
        v
    };

    let mut readings: Vec<GpuReading> = match nvml.filter(|r| r.nvml_up) {
        Some(report) => pick(&report.readings),
        None => Vec::new(),
    };
    for r in &mut readings {
        r.source = GpuSource::Nvml;
    }
    // Fill every GPU NVML did not answer for from Triton's page, where it has usable values.
    if let Some(t) = triton {
        for g in pick(t) {
            if triton_fallback::usable(&g) && !readings.iter().any(|r| r.uuid == g.uuid) {
                readings.push(GpuReading {
                    source: GpuSource::Triton,
                    ..g
                });
            }
        }
    }
    readings.sort_by(|a, b| a.uuid.cmp(&b.uuid));
    Selection {
        state: GpuState { nvml_up, readings },
        no_gpu_chosen: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::nvml::NvmlFailure;

    fn g(uuid: &str, util: f64) -> GpuReading {
        GpuReading::for_tests(uuid, util)
    }

    fn up(readings: Vec<GpuReading>) -> NvmlReport {
        NvmlReport {
            nvml_up: true,
            readings,
            error: None,
            polls: 1,
        }
    }

    fn down() -> NvmlReport {
        NvmlReport {
            nvml_up: false,
            readings: vec![],
            error: Some(NvmlFailure::Unavailable),
            polls: 1,
        }
    }

    fn uuids(s: &Selection) -> Vec<&str> {
        s.state.readings.iter().map(|r| r.uuid.as_str()).collect()
    }

    #[test]
    fn wanted_follows_the_rules() {
        let t = [g("GPU-b", 0.1)];
        assert_eq!(wanted(&GpuChoice::Off, Some(&t)), None);
        assert_eq!(wanted(&GpuChoice::All, None), Some(Wanted::All));
        assert_eq!(wanted(&GpuChoice::FromTriton, None), Some(Wanted::Unknown));
        assert_eq!(
            wanted(&GpuChoice::FromTriton, Some(&[])),
            Some(Wanted::Unknown)
        );
        assert_eq!(
            wanted(&GpuChoice::FromTriton, Some(&t)),
            Some(Wanted::Uuids(vec!["GPU-b".into()]))
        );
        let explicit = GpuChoice::Uuids(vec!["GPU-a".into()]);
        assert_eq!(
            wanted(&explicit, Some(&t)),
            Some(Wanted::Uuids(vec!["GPU-a".into()]))
        );
    }

    #[test]
    fn off_reports_nothing() {
        let s = select(&GpuChoice::Off, Some(&up(vec![g("GPU-a", 0.1)])), None);
        assert_eq!(s, Selection::default());
    }

    #[test]
    fn all_reports_every_nvml_gpu() {
        let s = select(
            &GpuChoice::All,
            Some(&up(vec![g("GPU-b", 0.2), g("GPU-a", 0.1)])),
            None,
        );
        assert_eq!(s.state.sources(), [GpuSource::Nvml]);
        assert!(s.state.nvml_up);
        assert_eq!(uuids(&s), ["GPU-a", "GPU-b"]);
    }

    #[test]
    fn explicit_list_filters_nvml() {
        let sel = GpuChoice::Uuids(vec!["GPU-b".into()]);
        let s = select(
            &sel,
            Some(&up(vec![g("GPU-a", 0.1), g("GPU-b", 0.2)])),
            None,
        );
        assert_eq!(uuids(&s), ["GPU-b"]);
        assert_eq!(s.state.sources(), [GpuSource::Nvml]);
    }

    #[test]
    fn auto_waits_for_tritons_page() {
        let s = select(
            &GpuChoice::FromTriton,
            Some(&up(vec![g("GPU-a", 0.1)])),
            None,
        );
        assert_eq!(s.state.sources(), [GpuSource::None]);
        assert!(s.state.readings.is_empty());
        assert!(s.state.nvml_up);
        assert!(!s.no_gpu_chosen);
    }

    #[test]
    fn auto_reports_only_tritons_gpus_from_nvml() {
        // NVML sees the whole node; Triton names one GPU.
        let nvml = up(vec![g("GPU-a", 0.1), g("GPU-b", 0.2)]);
        let triton = [GpuReading::new("GPU-b", "")];
        let s = select(&GpuChoice::FromTriton, Some(&nvml), Some(&triton));
        assert_eq!(s.state.sources(), [GpuSource::Nvml]);
        assert_eq!(uuids(&s), ["GPU-b"]);
        assert_eq!(s.state.readings[0].name, "NVIDIA T");
    }

    #[test]
    fn auto_without_triton_gpus_warns() {
        let s = select(
            &GpuChoice::FromTriton,
            Some(&up(vec![g("GPU-a", 0.1)])),
            Some(&[]),
        );
        assert_eq!(s.state.sources(), [GpuSource::None]);
        assert!(s.state.readings.is_empty());
        assert!(s.no_gpu_chosen);
    }

    #[test]
    fn falls_back_to_triton_when_nvml_is_down() {
        let triton = [g("GPU-b", 0.3)];
        let s = select(&GpuChoice::FromTriton, Some(&down()), Some(&triton));
        assert_eq!(s.state.sources(), [GpuSource::Triton]);
        assert!(!s.state.nvml_up);
        let want: Vec<GpuReading> = triton
            .iter()
            .map(|r| GpuReading {
                source: GpuSource::Triton,
                ..r.clone()
            })
            .collect();
        assert_eq!(s.state.readings, want);
        // Also with no poller at all, and with --gpu all.
        let s = select(&GpuChoice::All, None, Some(&triton));
        assert_eq!(s.state.sources(), [GpuSource::Triton]);
    }

    #[test]
    fn falls_back_when_nvml_sees_none_of_the_set() {
        let triton = [g("GPU-b", 0.3)];
        let s = select(
            &GpuChoice::FromTriton,
            Some(&up(vec![g("GPU-a", 0.1)])),
            Some(&triton),
        );
        assert_eq!(s.state.sources(), [GpuSource::Triton]);
        assert!(s.state.nvml_up);
        assert_eq!(uuids(&s), ["GPU-b"]);
    }

    #[test]
    fn fallback_needs_utilization_and_memory() {
        let mut partial = g("GPU-b", 0.3);
        partial.memory_total_bytes = None;
        let s = select(&GpuChoice::FromTriton, Some(&down()), Some(&[partial]));
        assert_eq!(s.state.sources(), [GpuSource::None]);
        assert!(s.state.readings.is_empty());
        assert!(!s.no_gpu_chosen);
    }

    #[test]
    fn explicit_list_filters_the_fallback_too() {
        let sel = GpuChoice::Uuids(vec!["GPU-a".into()]);
        let s = select(
            &sel,
            Some(&down()),
            Some(&[g("GPU-a", 0.1), g("GPU-b", 0.2)]),
        );
        assert_eq!(s.state.sources(), [GpuSource::Triton]);
        assert_eq!(uuids(&s), ["GPU-a"]);
    }

    #[test]
    fn gpus_nvml_does_not_answer_for_are_filled_from_triton() {
        // Triton uses A, B and C; NVML sees A only; Triton's page lacks memory for C.
        let mut c = g("GPU-c", 0.4);
        c.memory_total_bytes = None;
        let triton = [g("GPU-a", 0.9), g("GPU-b", 0.3), c];
        let s = select(
            &GpuChoice::FromTriton,
            Some(&up(vec![g("GPU-a", 0.1)])),
            Some(&triton),
        );
        assert_eq!(uuids(&s), ["GPU-a", "GPU-b"]);
        let a = &s.state.readings[0];
        assert_eq!(
            (a.source, a.utilization_ratio),
            (GpuSource::Nvml, Some(0.1))
        );
        let b = &s.state.readings[1];
        assert_eq!(
            (b.source, b.utilization_ratio),
            (GpuSource::Triton, Some(0.3))
        );
        assert_eq!(s.state.sources(), [GpuSource::Nvml, GpuSource::Triton]);
        // The same with an explicit list and with --gpu all.
        let sel = GpuChoice::Uuids(vec!["GPU-a".into(), "GPU-b".into()]);
        let s = select(&sel, Some(&up(vec![g("GPU-a", 0.1)])), Some(&triton));
        assert_eq!(uuids(&s), ["GPU-a", "GPU-b"]);
        let s = select(
            &GpuChoice::All,
            Some(&up(vec![g("GPU-a", 0.1)])),
            Some(&triton),
        );
        assert_eq!(uuids(&s), ["GPU-a", "GPU-b"]);
    }

    #[test]
    fn a_stale_page_keeps_the_set_but_gives_no_values() {
        let triton = triton_fallback::labels_only(&[g("GPU-a", 0.9), g("GPU-b", 0.3)]);
        // NVML answers for A: A stays; B has nothing fresh and goes.
        let s = select(
            &GpuChoice::FromTriton,
            Some(&up(vec![g("GPU-a", 0.1), g("GPU-z", 0.2)])),
            Some(&triton),
        );
        assert_eq!(uuids(&s), ["GPU-a"]);
        assert_eq!(s.state.sources(), [GpuSource::Nvml]);
        // NVML down too: nothing, and no "no GPU chosen" warning (the set is known).
        let s = select(&GpuChoice::FromTriton, Some(&down()), Some(&triton));
        assert!(s.state.readings.is_empty());
        assert!(!s.no_gpu_chosen);
    }
}
