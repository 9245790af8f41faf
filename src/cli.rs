//! The one-shot subcommands: `check`, `drain` and `install`.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::config::Config;
use crate::poller::Poller;
use crate::state::Phase;
use crate::state::{readiness, PollState};
use crate::triton::client::TritonClient;

/// Format the per-model table `check` prints: the gauges, then the scaling signal (offered
/// load, capacity with its source and basis, utilization); `-` where a value is absent.
pub fn format_table(st: &PollState) -> String {
    let opt = |v: Option<f64>, prec: usize| v.map_or("-".to_string(), |v| format!("{v:.prec$}"));
    let mut out = String::new();
    out.push_str(&format!(
        "{:<24} {:>14} {:>9} {:>10} {:>10} {:>11} {:>11} {:>10} {:<23} {:>6}\n",
        "MODEL",
        "QUEUE_WAIT_MS",
        "PENDING",
        "REQ_PER_S",
        "FAIL_PER_S",
        "COMPUTE_MS",
        "LOAD_PER_S",
        "CAPACITY",
        "CAPACITY_FROM",
        "UTIL"
    ));
    for (name, m) in &st.derived.models {
        let from = m.capacity.map_or("-".to_string(), |c| {
            let batch = c
                .largest_batch
                .map_or(String::new(), |b| format!(", batch<={b}"));
            if c.source.as_str() == c.basis.as_str() {
                c.source.as_str().to_string()
            } else {
                format!("{}/{}{batch}", c.source.as_str(), c.basis.as_str())
            }
        });
        out.push_str(&format!(
            "{:<24} {:>14.2} {:>9.0} {:>10.2} {:>10.2} {:>11.2} {:>11.2} {:>10} {:<23} {:>6}\n",
            name,
            m.queue_wait_ms,
            m.pending,
            m.request_rate,
            m.failure_rate,
            m.compute_ms,
            m.offered_load_rps,
            opt(m.capacity.map(|c| c.rps), 1),
            from,
            opt(m.utilization, 2),
        ));
    }
    let p = st.derived.pod;
    out.push_str(&format!(
        "{:<24} {:>14.2} {:>9.0} {:>10.2} {:>10} {:>11} {:>11.2} {:>10} {:<23} {:>6}\n",
        "(pod)",
        p.queue_wait_ms,
        p.pending,
        p.request_rate,
        "-",
        "-",
        p.offered_load_rps,
        "-",
        "-",
        opt(p.utilization, 2),
    ));
    if p.models_without_capacity > 0.0 {
        out.push_str(&format!(
            "models with load and no capacity: {} (give --capacity MODEL=RPS, or let the agent read /v2/models/stats)\n",
            p.models_without_capacity
        ));
    }
    let (ready, why) = readiness(st, Phase::Serving);
    out.push_str(&format!(
        "ready: {} ({})\n",
        if ready { "yes" } else { "no" },
        why
    ));
    out
}

/// `triton-sidecar check`: scrape twice, one poll interval apart, print the derived values.
/// Returns the process exit code.
pub async fn check(cfg: Config, no_triton: bool) -> i32 {
    let mut triton_gpu = None;
    if !no_triton {
        let client = match TritonClient::new(&cfg.client) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        };
        let mut poller = Poller::new(cfg.poller.clone(), client, std::time::Instant::now());
        // Two scrapes, one poll interval apart: rates and waits need a difference.
        for scrape in 0..2 {
            if scrape == 1 {
                tokio::time::sleep(cfg.poller.poll_interval).await;
            }
            if let Some(e) = &poller.poll_once().await.last_error {
                eprintln!(
                    "error: cannot read Triton's metrics at {}: {e}",
                    cfg.client.metrics_url
                );
                return 1;
            }
        }
        let st = poller.state();
        println!(
            "triton: {}  (two scrapes {} apart)",
            cfg.client.metrics_url,
            humantime::format_duration(cfg.poller.poll_interval)
        );
        print!("{}", format_table(st));
        triton_gpu = st.triton_gpu.clone();
    }
    crate::gpu::check_report(&cfg.gpu, triton_gpu.as_deref().map(|v| v.as_slice())).await
}

/// `triton-sidecar drain`: call `/wait-for-drain` and print progress every second.
pub async fn drain(admin_url: &str, timeout: Duration) -> i32 {
    let base = admin_url.trim_end_matches('/').to_string();
    let client = match reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let wait = client
        .get(format!("{base}/wait-for-drain?trigger=cli"))
        .send();
    tokio::pin!(wait);
    let started = std::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            r = &mut wait => {
                return match r {
                    Ok(resp) if resp.status().is_success() => {
                        let body = resp.text().await.unwrap_or_default();
                        print!("{body}");
                        0
                    }
                    Ok(resp) => {
                        eprintln!("error: {base}/wait-for-drain answered {}", resp.status());
                        1
                    }
                    Err(e) if e.is_timeout() => {
                        eprintln!("error: not drained after {} (--timeout)", humantime::format_duration(timeout));
                        1
                    }
                    Err(e) => {
                        eprintln!("error: cannot reach the agent at {base}: {e}");
                        1
                    }
                };
            }
            _ = tick.tick() => {
                let status = client.get(format!("{base}/drain/status")).timeout(Duration::from_millis(900)).send().await;
                let line = match status {
                    Ok(r) => r.text().await.unwrap_or_default(),
                    Err(_) => "status unavailable".to_string(),
                };
                eprintln!("draining ({:.0}s): {}", started.elapsed().as_secs_f64(), line.trim());
            }
        }
    }
}

/// `triton-sidecar install DIR`: copy this binary into DIR. The distroless image has no `cp`.
pub fn install(dir: &Path) -> i32 {
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: cannot find this binary: {e}");
            return 1;
        }
    };
    let target = dir.join("triton-sidecar");
    let tmp = dir.join(".triton-sidecar.tmp");
    let result = std::fs::copy(&exe, &tmp).and_then(|_| {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
        }
        std::fs::rename(&tmp, &target)
    });
    match result {
        Ok(()) => {
            println!("installed {}", target.display());
            let _ = std::io::stdout().flush();
            0
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            eprintln!("error: cannot install into {}: {e}", dir.display());
            1
        }
    }
}
