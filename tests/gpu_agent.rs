//! The whole agent (real binary) with `--nvml-lib` pointing at the fake NVML library: the real
//! nvml-wrapper loading path, GPU selection from Triton's page, the Triton fallback, and
//! `check --no-triton`.
// Test code: a panic here is a failed test, not a crashed agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_triton-sidecar");
const A: &str = "GPU-aaaaaaaa-1111-2222-3333-444444444444";
const B: &str = "GPU-bbbbbbbb-1111-2222-3333-444444444444";
const GIB: u64 = 1 << 30;

/// A private copy of the fake library with its config beside it.
fn fake_dir(test: &str, config: serde_json::Value) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ts-gpu-agent-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        support::nvml::fake_lib(false),
        dir.join("libnvidia-ml.so.1"),
    )
    .unwrap();
    std::fs::write(dir.join("fake-nvml.json"), config.to_string()).unwrap();
    dir
}

fn two_gpus() -> serde_json::Value {
    let d = |uuid: &str, name: &str, util: u64| serde_json::json!({"uuid": uuid, "name": name, "utilization": util, "memory_used": 3 * GIB, "memory_total": 80 * GIB, "power_mw": 251_500, "temperature": 45});
    serde_json::json!({"devices": [d(A, "NVIDIA H100 80GB HBM3", 37), d(B, "NVIDIA A100-SXM4-40GB", 5)]})
}

struct Agent {
    child: Child,
    metrics: std::net::SocketAddr,
    /// Read so the agent never blocks on a full pipe.
    _stderr: AgentStderr,
}
impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(t: &FakeTriton, args: &[&str]) -> Agent {
    let started = spawn_agent(
        Command::new(BIN)
            .args([
                "--triton-url",
                &t.url(),
                "--triton-metrics-url",
                &format!("{}/metrics", t.url()),
            ])
            .args(PORT_ZERO)
            .args(["--poll-interval", "100ms", "--gpu-poll-interval", "100ms"])
            .args(args)
            .stdout(Stdio::null()),
    );
    let a = started.unwrap_or_else(|(st, log)| panic!("agent exited at start-up: {st:?}\n{log}"));
    Agent {
        child: a.child,
        metrics: a.metrics,
        _stderr: a.stderr,
    }
}

fn triton_gpu_page(uuids: &[&str]) -> String {
    let mut p = page("m", 1, 0, 0, 0);
    for u in uuids {
        // Triton's documented GPU families (metrics.md): utilization 0..1, bytes, watts.
        p += &format!("nv_gpu_utilization{{gpu_uuid=\"{u}\"}} 0.25\n");
        p += &format!("nv_gpu_memory_total_bytes{{gpu_uuid=\"{u}\"}} 85899345920\n");
        p += &format!("nv_gpu_memory_used_bytes{{gpu_uuid=\"{u}\"}} 4294967296\n");
        p += &format!("nv_gpu_power_usage{{gpu_uuid=\"{u}\"}} 120.5\n");
    }
    p
}

#[tokio::test]
async fn reports_only_the_gpu_tritons_page_names() {
    let dir = fake_dir("names-one", two_gpus());
    let t = FakeTriton::start(Script {
        metrics: triton_gpu_page(&[A]),
        ..Default::default()
    })
    .await;
    let a = spawn(
        &t,
        &[
            "--nvml-lib",
            dir.join("libnvidia-ml.so.1").to_str().unwrap(),
        ],
    );
    let l = format!("{{gpu_uuid=\"{A}\",gpu_name=\"NVIDIA H100 80GB HBM3\"}}");
    eventually(Duration::from_secs(10), "GPU A from NVML", || async {
        value(
            &get(a.metrics, "/metrics").await.1,
            &format!("triton_gpu_utilization_ratio{l}"),
        ) == Some(0.37)
    })
    .await;
    let p = get(a.metrics, "/metrics").await.1;
    assert!(
        !p.contains(B),
        "the neighbour's GPU must not be reported:\n{p}"
    );
    assert_eq!(
        value(&p, &format!("triton_gpu_memory_used_bytes{l}")),
        Some((3 * GIB) as f64)
    );
    assert_eq!(
        value(&p, &format!("triton_gpu_memory_total_bytes{l}")),
        Some((80 * GIB) as f64)
    );
    assert_eq!(
        value(&p, &format!("triton_gpu_memory_used_ratio{l}")),
        Some(0.0375)
    );
    assert_eq!(
        value(&p, &format!("triton_gpu_power_watts{l}")),
        Some(251.5)
    );
    assert_eq!(
        value(&p, &format!("triton_gpu_temperature_celsius{l}")),
        Some(45.0)
    );
    assert_eq!(
        value(
            &p,
            &format!("triton_sidecar_gpu_source{{gpu_uuid=\"{A}\",source=\"nvml\"}}")
        ),
        Some(1.0),
        "{p}"
    );
    assert_eq!(
        p.matches("triton_sidecar_gpu_source{").count(),
        1,
        "one source series per reported GPU: {p}"
    );
    assert_eq!(value(&p, "triton_sidecar_nvml_up"), Some(1.0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn falls_back_to_tritons_series_without_nvml() {
    let t = FakeTriton::start(Script {
        metrics: triton_gpu_page(&[A]),
        ..Default::default()
    })
    .await;
    let a = spawn(&t, &["--nvml-lib", "/nonexistent/libnvidia-ml.so.1"]);
    let l = format!("{{gpu_uuid=\"{A}\",gpu_name=\"\"}}");
    eventually(Duration::from_secs(10), "fallback source", || async {
        value(
            &get(a.metrics, "/metrics").await.1,
            &format!("triton_sidecar_gpu_source{{gpu_uuid=\"{A}\",source=\"triton\"}}"),
        ) == Some(1.0)
    })
    .await;
    let p = get(a.metrics, "/metrics").await.1;
    assert_eq!(
        value(&p, &format!("triton_gpu_utilization_ratio{l}")),
        Some(0.25),
        "{p}"
    );
    assert_eq!(
        value(&p, &format!("triton_gpu_memory_used_ratio{l}")),
        Some(0.05)
    );
    assert_eq!(
        value(&p, &format!("triton_gpu_power_watts{l}")),
        Some(120.5)
    );
    assert!(
        !p.contains("triton_gpu_temperature_celsius{"),
        "Triton publishes no temperature"
    );
    assert_eq!(value(&p, "triton_sidecar_nvml_up"), Some(0.0));
    assert_eq!(get(a.metrics, "/metrics").await.0, 200);
}

#[tokio::test]
async fn default_with_no_gpu_on_tritons_page_reports_none_and_gpu_all_reports_both() {
    let dir = fake_dir("none-all", two_gpus());
    let lib = dir.join("libnvidia-ml.so.1");
    let t = FakeTriton::start(Script {
        metrics: page("m", 1, 0, 0, 0),
        ..Default::default()
    })
    .await;
    let a = spawn(&t, &["--nvml-lib", lib.to_str().unwrap()]);
    eventually(Duration::from_secs(10), "nvml up", || async {
        value(
            &get(a.metrics, "/metrics").await.1,
            "triton_sidecar_nvml_up",
        ) == Some(1.0)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let p = get(a.metrics, "/metrics").await.1;
    assert_eq!(
        value(&p, "triton_sidecar_gpu_source{source=\"none\"}"),
        Some(1.0),
        "{p}"
    );
    assert!(!p.contains("triton_gpu_utilization_ratio{"));
    drop(a);
    let a = spawn(&t, &["--nvml-lib", lib.to_str().unwrap(), "--gpu", "all"]);
    eventually(Duration::from_secs(10), "both GPUs", || async {
        let p = get(a.metrics, "/metrics").await.1;
        p.contains(A) && p.contains(B)
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_no_triton_prints_gpu_lines() {
    let dir = fake_dir("check", two_gpus());
    let out = Command::new(BIN)
        .args([
            "check",
            "--no-triton",
            "--gpu",
            "all",
            "--nvml-lib",
            dir.join("libnvidia-ml.so.1").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("gpu source: nvml"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with(&format!("gpu uuid={A} "))
                && l.contains(&format!("mem_total_bytes={}", 80 * GIB))),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with(&format!("gpu uuid={B} "))),
        "{stdout}"
    );
    // A missing library with an explicit --gpu: exit 1 and say why.
    let out = Command::new(BIN)
        .args([
            "check",
            "--no-triton",
            "--gpu",
            "all",
            "--nvml-lib",
            "/nonexistent/libnvidia-ml.so.1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("gpu source: none (NVML:"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Triton's page naming `uuids`, each at utilization 0.25 (NVML's fake says 0.37 and 0.05).
fn tritons_gpus(uuids: &[&str]) -> Script {
    Script {
        metrics: triton_gpu_page(uuids),
        ..Default::default()
    }
}

async fn page_of(a: &Agent) -> String {
    get(a.metrics, "/metrics").await.1
}

#[tokio::test]
async fn a_hanging_nvml_call_turns_nvml_down_and_tritons_values_fill_in() {
    let dir = fake_dir("hang", two_gpus());
    let t = FakeTriton::start(tritons_gpus(&[A])).await;
    let a = spawn(
        &t,
        &[
            "--nvml-lib",
            dir.join("libnvidia-ml.so.1").to_str().unwrap(),
        ],
    );
    let nvml = format!(
        "triton_gpu_utilization_ratio{{gpu_uuid=\"{A}\",gpu_name=\"NVIDIA H100 80GB HBM3\"}}"
    );
    let triton = format!("triton_gpu_utilization_ratio{{gpu_uuid=\"{A}\",gpu_name=\"\"}}");
    eventually(Duration::from_secs(10), "A from NVML", || async {
        value(&page_of(&a).await, &nvml) == Some(0.37)
    })
    .await;
    // The driver wedges in the middle of a pass: the NVML thread blocks in that call.
    let mut hung = two_gpus();
    hung["hang"] = serde_json::json!(["nvmlDeviceGetUtilizationRates"]);
    std::fs::write(dir.join("fake-nvml.json"), hung.to_string()).unwrap();
    let t0 = std::time::Instant::now();
    eventually(
        Duration::from_secs(10),
        "nvml_up 0 and Triton's value",
        || async {
            let p = page_of(&a).await;
            value(&p, "triton_sidecar_nvml_up") == Some(0.0)
                && value(&p, &triton) == Some(0.25)
                && value(&p, &nvml).is_none()
        },
    )
    .await;
    // The bound is 3 × --gpu-poll-interval (100 ms), at least 1 s.
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(900), "{took:?}");
    let p = page_of(&a).await;
    assert_eq!(
        value(
            &p,
            &format!("triton_sidecar_gpu_source{{gpu_uuid=\"{A}\",source=\"triton\"}}")
        ),
        Some(1.0),
        "{p}"
    );
    // The call returns: NVML is back.
    std::fs::write(dir.join("fake-nvml.json"), two_gpus().to_string()).unwrap();
    eventually(Duration::from_secs(10), "NVML back", || async {
        let p = page_of(&a).await;
        value(&p, "triton_sidecar_nvml_up") == Some(1.0) && value(&p, &nvml) == Some(0.37)
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_gpu_nvml_cannot_see_is_filled_from_tritons_page() {
    // NVML in this container sees A only; Triton uses A and B.
    let one = serde_json::json!({"devices": [two_gpus()["devices"][0].clone()]});
    let dir = fake_dir("fill", one);
    let t = FakeTriton::start(tritons_gpus(&[A, B])).await;
    let a = spawn(
        &t,
        &[
            "--nvml-lib",
            dir.join("libnvidia-ml.so.1").to_str().unwrap(),
        ],
    );
    let a_nvml = format!("{{gpu_uuid=\"{A}\",gpu_name=\"NVIDIA H100 80GB HBM3\"}}");
    let b_triton = format!("{{gpu_uuid=\"{B}\",gpu_name=\"\"}}");
    eventually(
        Duration::from_secs(10),
        "A from NVML and B from Triton",
        || async {
            let p = page_of(&a).await;
            value(&p, &format!("triton_gpu_utilization_ratio{a_nvml}")) == Some(0.37)
                && value(&p, &format!("triton_gpu_utilization_ratio{b_triton}")) == Some(0.25)
        },
    )
    .await;
    let p = page_of(&a).await;
    assert_eq!(
        value(&p, &format!("triton_gpu_memory_used_ratio{b_triton}")),
        Some(0.05),
        "{p}"
    );
    assert_eq!(value(&p, "triton_sidecar_nvml_up"), Some(1.0));
    // Each GPU says where its values came from.
    for (uuid, source) in [(A, "nvml"), (B, "triton")] {
        assert_eq!(
            value(
                &p,
                &format!("triton_sidecar_gpu_source{{gpu_uuid=\"{uuid}\",source=\"{source}\"}}")
            ),
            Some(1.0),
            "{p}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn tritons_gpu_values_go_with_its_last_good_page() {
    let mut t = FakeTriton::start(tritons_gpus(&[A])).await;
    let a = spawn(
        &t,
        &[
            "--nvml-lib",
            "/nonexistent/libnvidia-ml.so.1",
            "--window",
            "2s",
        ],
    );
    let series = format!("triton_gpu_utilization_ratio{{gpu_uuid=\"{A}\",gpu_name=\"\"}}");
    eventually(Duration::from_secs(10), "fallback", || async {
        value(&page_of(&a).await, &series) == Some(0.25)
    })
    .await;
    // Triton goes away: its last page's values must not be served as current for long.
    t.kill().await;
    let t0 = std::time::Instant::now();
    eventually(
        Duration::from_secs(15),
        "frozen GPU values gone",
        || async { !page_of(&a).await.contains("triton_gpu_utilization_ratio{") },
    )
    .await;
    // The rule of every Triton-derived series: held for one --window (2 s) after the last good
    // page (at most one 100 ms poll before the kill), then absent.
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(1800), "{took:?}");
    let p = page_of(&a).await;
    assert_eq!(value(&p, "triton_up"), Some(0.0), "{p}");
    assert_eq!(
        value(&p, "triton_sidecar_gpu_source{source=\"none\"}"),
        Some(1.0),
        "{p}"
    );
    t.revive().await;
    eventually(Duration::from_secs(10), "back with Triton", || async {
        value(&page_of(&a).await, &series) == Some(0.25)
    })
    .await;
}
