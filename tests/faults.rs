//! The fault matrix of issue 7 that tests/agent.rs, tests/drain.rs, tests/process.rs and
//! tests/gpu_*.rs do not already cover. Each fault: the agent keeps serving `/metrics` and
//! `/livez`, never panics, recovers when the fault ends, and (spawned binary) logs one line
//! about it, not one per poll. Timing bounds are loose: the CI machine has 2 cores and other
//! builds run beside the tests.
//!
//! | fault | test |
//! |---|---|
//! | Triton sends a 100 MiB body (chunked, or with Content-Length) | `hundred_mib_body_refused_with_bounded_memory` |
//! | a page with 100 000 series | `page_with_100k_series_keeps_serving` |
//! | duplicate series, NaN and ±Inf | `duplicates_nan_and_inf_make_no_bad_gauge` |
//! | Triton dies mid-run and comes back | `triton_restart_mid_run_restarts_counters_cleanly` |
//! | 1 000 concurrent `/metrics` calls | `thousand_concurrent_metrics_calls` |
//! | 100 concurrent `/wait-for-drain` calls | `hundred_waiters_released_together` |
//! | slowloris, idle connections | `slowloris_and_idle_connections_are_cut` |
//! | a request body trickled byte by byte | `slow_request_body_is_cut` |
//! | connection cap, per listener | `a_full_admin_listener_does_not_starve_metrics` |
//! | oversized or too many headers | `oversized_headers_are_refused` |
//! | odd methods, paths and request forms | `odd_requests_get_404_or_405_and_never_reach_triton` |
//! | Triton's model-config endpoint hangs | `hanging_model_config_does_not_stall_the_poll_loop` |
// Test code: a panic here is a failed test, not a crashed agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use support::*;
use triton_sidecar::triton::text;

const BIN: &str = env!("CARGO_BIN_EXE_triton-sidecar");

// ------------------------------------------------------------------------------------------
// Helpers

/// The agent binary on port 0, with its stderr read as it arrives (and readable while it runs).
struct Proc {
    child: Child,
    admin: SocketAddr,
    metrics: SocketAddr,
    log: AgentStderr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Start the agent and wait for its start-up line; panics if it exits first.
    fn spawn(triton_url: &str, extra: &[&str]) -> Proc {
        match Proc::try_spawn(triton_url, extra) {
            Ok(p) => p,
            Err((st, log)) => panic!("agent exited before its start-up line: {st:?}\n{log}"),
        }
    }

    /// Start the agent and wait for its start-up line, or for it to exit (a refused flag):
    /// then its exit status and stderr.
    fn try_spawn(
        triton_url: &str,
        extra: &[&str],
    ) -> Result<Proc, (std::process::ExitStatus, String)> {
        let a = spawn_agent(
            Command::new(BIN)
                .args([
                    "--triton-url",
                    triton_url,
                    "--triton-metrics-url",
                    &format!("{triton_url}/metrics"),
                ])
                .args(PORT_ZERO)
                .args(["--poll-interval", "100ms", "--no-gpu"])
                .args(if extra.contains(&"--window") {
                    &[][..]
                } else {
                    &["--window", "2s"][..]
                })
                .args(extra)
                .env_remove("RUST_LOG")
                .stdout(Stdio::null()),
        )?;
        Ok(Proc {
            child: a.child,
            admin: a.admin,
            metrics: a.metrics,
            log: a.stderr,
        })
    }

    fn stderr(&self) -> String {
        self.log.text()
    }

    /// Lines of stderr containing `needle`.
    fn lines_with(&self, needle: &str) -> Vec<String> {
        self.stderr()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }

    /// Peak resident memory (VmHWM) in KiB, from /proc.
    fn vm_hwm_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .expect("VmHWM in /proc/<pid>/status");
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    fn assert_alive(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "agent exited; stderr:\n{}",
            self.stderr()
        );
    }

    /// No panic, no error-level line.
    fn assert_no_panic(&self) {
        let e = self.stderr();
        assert!(
            !e.contains("panicked") && !e.contains("ERROR"),
            "stderr:\n{e}"
        );
    }
}

/// Every sample of our own page is finite and >= 0.
fn assert_page_clean(page: &str) {
    text::parse(
        page,
        |_| true,
        |s| {
            assert!(
                s.value.is_finite() && s.value >= 0.0,
                "bad gauge {} = {} in\n{page}",
                s.name,
                s.value
            );
        },
    )
    .unwrap_or_else(|e| panic!("our page does not parse: {e}\n{page}"));
}

async fn timed_get(addr: SocketAddr, path: &str) -> (u16, Duration) {
    let s = Instant::now();
    let (code, _) = get(addr, path).await;
    (code, s.elapsed())
}

/// Send raw bytes; read one whole response (head plus Content-Length body), or until the peer
/// closes, or until `within` passes. Returns what was read.
async fn raw(addr: SocketAddr, req: &[u8], within: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(req).await;
    let mut buf = Vec::new();
    let read = async {
        let mut tmp = [0u8; 8192];
        loop {
            match s.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    return;
                }
            }
        }
    };
    let _ = tokio::time::timeout(within, read).await;
    String::from_utf8_lossy(&buf).to_string()
}

fn status_of(resp: &str) -> Option<u16> {
    resp.strip_prefix("HTTP/1.1 ")
        .or_else(|| resp.strip_prefix("HTTP/1.0 "))?
        .get(..3)?
        .parse()
        .ok()
}

/// A scripted Triton for the body-size faults: /metrics streams `mode`, other paths answer 200.
#[derive(Clone, Copy, Debug, PartialEq)]
enum BodyMode {
    /// A normal small page.
    Page,
    /// 100 MiB, chunked, no Content-Length.
    Chunked(usize),
    /// Content-Length: n, then the bytes.
    Sized(usize),
}

struct BodyServer {
    url: String,
    mode: Arc<Mutex<BodyMode>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for BodyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl BodyServer {
    async fn start(mode: BodyMode) -> BodyServer {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let mode = Arc::new(Mutex::new(mode));
        let hits = Arc::new(AtomicUsize::new(0));
        let (m, h) = (mode.clone(), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                tokio::spawn(body_conn(s, m.clone(), h.clone()));
            }
        });
        BodyServer {
            url,
            mode,
            hits,
            task,
        }
    }
    fn set(&self, m: BodyMode) {
        *self.mode.lock().unwrap() = m;
    }
}

async fn body_conn(mut s: TcpStream, mode: Arc<Mutex<BodyMode>>, hits: Arc<AtomicUsize>) {
    // 1 MiB of valid sample lines, streamed again and again.
    let line = "nv_inference_request_success{model=\"m\",version=\"1\"} 1\n";
    let block = line.repeat((1 << 20) / line.len());
    loop {
        let mut head = Vec::new();
        let mut tmp = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&tmp[..n]),
            }
        }
        let head = String::from_utf8_lossy(&head).to_string();
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
        if path != "/metrics" {
            let body = if path.ends_with("/config") { "{}" } else { "" };
            let r = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if s.write_all(r.as_bytes()).await.is_err() {
                return;
            }
            continue;
        }
        hits.fetch_add(1, Ordering::SeqCst);
        let m = *mode.lock().unwrap();
        match m {
            BodyMode::Page => {
                let body = page("m", 10, 0, 1000, 2);
                let r = format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                if s.write_all(r.as_bytes()).await.is_err() {
                    return;
                }
            }
            BodyMode::Chunked(n) => {
                let h = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n";
                if s.write_all(h.as_bytes()).await.is_err() {
                    return;
                }
                let mut sent = 0;
                while sent < n {
                    let chunk = format!("{:x}\r\n{block}\r\n", block.len());
                    if s.write_all(chunk.as_bytes()).await.is_err() {
                        return; // the agent hung up: what we want
                    }
                    sent += block.len();
                }
                let _ = s.write_all(b"0\r\n\r\n").await;
            }
            BodyMode::Sized(n) => {
                let h = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {n}\r\n\r\n"
                );
                if s.write_all(h.as_bytes()).await.is_err() {
                    return;
                }
                let mut sent = 0;
                while sent < n {
                    let k = block.len().min(n - sent);
                    if s.write_all(&block.as_bytes()[..k]).await.is_err() {
                        return;
                    }
                    sent += k;
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Triton's side

/// 100 MiB bodies, chunked and with a Content-Length, are refused at `--max-body` (8 MiB)
/// without being read: the spawned binary's peak RSS (VmHWM) stays under 64 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_mib_body_refused_with_bounded_memory() {
    let t = BodyServer::start(BodyMode::Chunked(100 << 20)).await;
    let mut p = Proc::spawn(&t.url, &["--max-body", "8MiB", "--scrape-timeout", "3s"]);
    let too_large = "triton_sidecar_scrape_errors_total{reason=\"too_large\"}";
    eventually(
        Duration::from_secs(30),
        "5 chunked 100 MiB pages refused",
        || async { value(&get(p.metrics, "/metrics").await.1, too_large).unwrap_or(0.0) >= 5.0 },
    )
    .await;
    // Declared up front: refused from the header alone.
    t.set(BodyMode::Sized(100 << 20));
    let before = value(&get(p.metrics, "/metrics").await.1, too_large).unwrap();
    eventually(
        Duration::from_secs(30),
        "5 sized 100 MiB pages refused",
        || async {
            value(&get(p.metrics, "/metrics").await.1, too_large).unwrap_or(0.0) >= before + 5.0
        },
    )
    .await;
    p.assert_alive();
    let (code, took) = timed_get(p.admin, "/livez").await;
    assert_eq!(code, 200);
    assert!(took < Duration::from_secs(1), "/livez took {took:?}");
    let page = get(p.metrics, "/metrics").await.1;
    assert_eq!(value(&page, "triton_up"), Some(0.0));
    let hwm = p.vm_hwm_kib();
    eprintln!(
        "VmHWM after {} refused 100 MiB pages: {} KiB",
        t.hits.load(Ordering::SeqCst),
        hwm
    );
    assert!(hwm <= 64 * 1024, "peak RSS {hwm} KiB > 64 MiB");
    // One line about the fault, not one per poll.
    let lines = p.lines_with("max-body");
    assert_eq!(
        lines.len(),
        1,
        "one log line about the refused body, got:\n{}",
        p.stderr()
    );
    // Recovers when the page is normal again, and says so once.
    t.set(BodyMode::Page);
    eventually(Duration::from_secs(10), "up again", || async {
        value(&get(p.metrics, "/metrics").await.1, "triton_up") == Some(1.0)
    })
    .await;
    assert_eq!(
        p.lines_with("Triton metrics reachable").len(),
        1,
        "{}",
        p.stderr()
    );
    p.assert_no_panic();
}

/// A page of 100 000 series of the families the agent reads (100 models × 100 versions × 10
/// families, about 8 MiB): parsed every poll, while /livez and /metrics stay fast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_with_100k_series_keeps_serving() {
    let mut body = String::with_capacity(10 << 20);
    let mut series = 0;
    for m in 0..100 {
        for v in 0..100 {
            let l = format!("{{model=\"model_{m}\",version=\"{v}\"}}");
            for fam in [
                "nv_inference_request_success",
                "nv_inference_exec_count",
                "nv_inference_queue_duration_us",
                "nv_inference_compute_infer_duration_us",
                "nv_inference_pending_request_count",
            ] {
                body.push_str(&format!("{fam}{l} 1\n"));
                series += 1;
            }
            for reason in ["OTHER", "BACKEND", "CANCELED", "REJECTED"] {
                body.push_str(&format!("nv_inference_request_failure{{model=\"model_{m}\",reason=\"{reason}\",version=\"{v}\"}} 0\n"));
                series += 1;
            }
            body.push_str(&format!("nv_inference_count{l} 1\n")); // a family the agent skips
            series += 1;
        }
    }
    assert_eq!(series, 100_000);
    let size = body.len();
    let t = FakeTriton::start(Script {
        metrics: body,
        ..Default::default()
    })
    .await;
    let mut cfg = fast_config(&t);
    cfg.client.max_body = 64 << 20;
    cfg.client.timeout = Duration::from_secs(5);
    cfg.poller.poll_interval = Duration::from_millis(200);
    cfg.poller.window = Duration::from_secs(5);
    let a = start_agent(cfg).await;
    // 100 models, each pending 100 (one per version).
    eventually(
        Duration::from_secs(60),
        "the 100k-series page is read",
        || async {
            let p = get(a.metrics, "/metrics").await.1;
            value(&p, "triton_pod_pending_requests") == Some(10_000.0)
                && value(&p, "triton_pending_requests{model=\"model_99\"}") == Some(100.0)
        },
    )
    .await;
    // While the poller parses ~8 MiB every 200 ms, the agent's own endpoints answer promptly.
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        for (addr, path) in [(a.admin, "/livez"), (a.metrics, "/metrics")] {
            let (code, took) = timed_get(addr, path).await;
            assert_eq!(code, 200);
            worst = worst.max(took);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("100k series ({size} bytes): worst /livez or /metrics latency {worst:?}");
    assert!(worst < Duration::from_secs(1), "worst latency {worst:?}");
    let p = get(a.metrics, "/metrics").await.1;
    assert_page_clean(&p);
    assert_eq!(p.matches("triton_pending_requests{").count(), 100);
    assert_eq!(
        value(
            &p,
            "triton_sidecar_scrape_errors_total{reason=\"too_large\"}"
        ),
        Some(0.0)
    );
}

/// Duplicate series, NaN, +Inf, -Inf and sums that overflow f64: no bad gauge on the page at
/// any moment, and the agent keeps serving and recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_nan_and_inf_make_no_bad_gauge() {
    let t = FakeTriton::start(Script {
        metrics: page("m", 10, 0, 10_000, 1),
        ..Default::default()
    })
    .await;
    let mut p = Proc::spawn(&t.url(), &["--scrape-timeout", "1s"]);
    eventually(Duration::from_secs(10), "model series", || async {
        get(p.metrics, "/metrics")
            .await
            .1
            .contains("triton_pending_requests{model=\"m\"}")
    })
    .await;
    let dup = |s: &str| {
        s.lines()
            .flat_map(|l| [l, l])
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    };
    let nan = "nv_inference_request_success{model=\"m\",version=\"1\"} NaN\n\
               nv_inference_queue_duration_us{model=\"m\",version=\"1\"} NaN\n\
               nv_inference_compute_infer_duration_us{model=\"m\",version=\"1\"} +Inf\n\
               nv_inference_pending_request_count{model=\"m\",version=\"1\"} +Inf\n\
               nv_inference_request_failure{model=\"m\",reason=\"BACKEND\",version=\"1\"} -Inf\n\
               nv_inference_pending_request_count{model=\"n\",version=\"1\"} -Inf\n\
               nv_inference_request_success{model=\"n\",version=\"1\"} 5\n\
               nv_trt_llm_request_metrics{model=\"n\",request_type=\"waiting\",version=\"1\"} NaN\n\
               vllm:num_requests_waiting NaN\n"
        .to_string();
    let overflow = "nv_inference_request_success{model=\"m\",version=\"1\"} 1e308\n\
                    nv_inference_request_success{model=\"m\",version=\"2\"} 1e308\n\
                    nv_inference_queue_duration_us{model=\"m\",version=\"1\"} 1.7e308\n\
                    nv_inference_queue_duration_us{model=\"m\",version=\"2\"} 1.7e308\n\
                    nv_inference_pending_request_count{model=\"m\",version=\"1\"} 1.7e308\n\
                    nv_inference_pending_request_count{model=\"m\",version=\"2\"} 1.7e308\n\
                    nv_inference_pending_request_count{model=\"m\",version=\"3\"} -1e308\n"
        .to_string();
    let mut n = 10;
    let mut pages = 0;
    for round in 0..3 {
        for bad in [
            dup(&page("m", n, 1, n * 1000, 2)),
            nan.clone(),
            overflow.clone(),
        ] {
            // Alternate bad and good pages, with moving counters, and read our page meanwhile.
            for body in [bad, page("m", n, 1, n * 1000, 2)] {
                t.set(|s| s.metrics = body.clone());
                for _ in 0..4 {
                    tokio::time::sleep(Duration::from_millis(60)).await;
                    let page = get(p.metrics, "/metrics").await.1;
                    assert_page_clean(&page);
                    pages += 1;
                }
                n += 10;
            }
        }
        eprintln!("round {round}: {pages} pages checked");
    }
    // Recovers: a steady good page gives a steady rate again.
    let start = n;
    let script = t.script.clone();
    let ticker = tokio::spawn(async move {
        let mut n = start;
        loop {
            n += 10;
            script.lock().unwrap().metrics = page("m", n, 0, n * 1000, 3);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    eventually(Duration::from_secs(10), "steady again", || async {
        let pg = get(p.metrics, "/metrics").await.1;
        let r = value(&pg, "triton_request_rate{model=\"m\"}").unwrap_or(0.0);
        value(&pg, "triton_pending_requests{model=\"m\"}") == Some(3.0)
            && (30.0..300.0).contains(&r)
            && value(&pg, "triton_queue_wait_ms{model=\"m\"}") == Some(1.0)
    })
    .await;
    ticker.abort();
    p.assert_alive();
    p.assert_no_panic();
    // Each flip between a page and its doubled or NaN twin reads as counters going down (a
    // new Triton process) and restarts the window: one info line per flip, by design.
    eprintln!(
        "duplicates/NaN/Inf: {} 'counters went down' lines",
        p.lines_with("counters went down").len()
    );
}

/// Triton dies mid-run and a new process comes back with counters from 0: the agent logs one
/// line for each transition, never reports a negative or spiked rate from mixing the two
/// processes' counters, and reports the new process's rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triton_restart_mid_run_restarts_counters_cleanly() {
    let mut t = FakeTriton::start(Script {
        metrics: page("m", 100_000, 0, 100_000 * 5000, 4),
        ..Default::default()
    })
    .await;
    let mut p = Proc::spawn(&t.url(), &["--scrape-timeout", "300ms"]);
    // Old process: 100 requests/s (2 per 20 ms), 5 ms queue wait. The counters move five times
    // per poll interval: ticking at the poll rate let two polls in a row see the same page
    // whenever the two timers fell in phase, and 4 pending with no progress is a stall, whose
    // wait is not the one under test here.
    let state = Arc::new(Mutex::new((100_000u64, 2u64, 5000u64)));
    let (script, st) = (t.script.clone(), state.clone());
    let ticker = tokio::spawn(async move {
        // An interval, not a sleep per tick: late ticks are caught up, so the rate holds on a
        // loaded machine.
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tick.tick().await;
            let mut s = st.lock().unwrap();
            s.0 += s.1;
            script.lock().unwrap().metrics = page("m", s.0, 0, s.0 * s.2, 4);
        }
    });
    // Sample our page all along: never a bad or spiked value.
    let stop = Arc::new(AtomicBool::new(false));
    let (stop2, metrics) = (stop.clone(), p.metrics);
    let sampler = tokio::spawn(async move {
        let mut max_rate: f64 = 0.0;
        let mut max_wait: f64 = 0.0;
        let mut n = 0;
        while !stop2.load(Ordering::SeqCst) {
            let pg = get(metrics, "/metrics").await.1;
            assert_page_clean(&pg);
            if let Some(r) = value(&pg, "triton_request_rate{model=\"m\"}") {
                max_rate = max_rate.max(r);
            }
            if let Some(w) = value(&pg, "triton_queue_wait_ms{model=\"m\"}") {
                max_wait = max_wait.max(w);
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        (max_rate, max_wait, n)
    });
    eventually(Duration::from_secs(10), "old process rate", || async {
        let r = value(
            &get(p.metrics, "/metrics").await.1,
            "triton_request_rate{model=\"m\"}",
        )
        .unwrap_or(0.0);
        (50.0..200.0).contains(&r)
    })
    .await;
    // Triton dies for 700 ms (less than the 2 s window), then a new process starts from 0 at
    // 50 requests/s with a 20 ms wait.
    t.kill().await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    *state.lock().unwrap() = (0, 1, 20_000);
    t.set(|s| s.metrics = page("m", 0, 0, 0, 4));
    t.revive().await;
    eventually(
        Duration::from_secs(10),
        "new process rate and wait",
        || async {
            let pg = get(p.metrics, "/metrics").await.1;
            let r = value(&pg, "triton_request_rate{model=\"m\"}").unwrap_or(0.0);
            value(&pg, "triton_up") == Some(1.0)
                && (25.0..100.0).contains(&r)
                && value(&pg, "triton_queue_wait_ms{model=\"m\"}") == Some(20.0)
        },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let (max_rate, max_wait, samples) = sampler.await.unwrap();
    ticker.abort();
    eprintln!("restart: {samples} samples, max rate {max_rate}/s, max wait {max_wait} ms");
    // A negative Δ would be clamped to 0; a mix of old and new counters would spike far above.
    assert!(max_rate < 300.0, "rate spiked to {max_rate}");
    assert!(max_wait <= 20.0 + 1e-9, "queue wait spiked to {max_wait}");
    let page = get(p.metrics, "/metrics").await.1;
    assert!(
        value(
            &page,
            "triton_sidecar_scrape_errors_total{reason=\"refused\"}"
        )
        .unwrap()
            >= 1.0
    );
    // One line per transition.
    p.assert_alive();
    p.assert_no_panic();
    let log = p.stderr();
    assert_eq!(p.lines_with("stopped being reachable").len(), 1, "{log}");
    // The refused connections say "maybe a new process": one line, histories start afresh.
    assert_eq!(p.lines_with("afresh").len(), 1, "{log}");
    assert_eq!(p.lines_with("Triton metrics reachable").len(), 2, "{log}");
}

// ------------------------------------------------------------------------------------------
// Clients' side

/// 1 000 connections open at once, each asking for /metrics: all answered with the full page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_metrics_calls() {
    let t = FakeTriton::start(Script {
        metrics: page("m", 10, 0, 1000, 2),
        ..Default::default()
    })
    .await;
    let a = start_agent(fast_config(&t)).await;
    eventually(Duration::from_secs(5), "model series", || async {
        get(a.metrics, "/metrics")
            .await
            .1
            .contains("triton_pending_requests{model=\"m\"}")
    })
    .await;
    let n = 1000;
    // Connect all first, so that 1 000 connections are open together, then ask on each.
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(TcpStream::connect(a.metrics).await.unwrap());
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for mut c in conns {
        let b = barrier.clone();
        tasks.spawn(async move {
            b.wait().await;
            c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut buf = Vec::new();
            c.read_to_end(&mut buf).await.unwrap();
            String::from_utf8(buf).unwrap()
        });
    }
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        let resp = r.unwrap();
        assert_eq!(status_of(&resp), Some(200), "{resp}");
        assert!(
            resp.contains("triton_pending_requests{model=\"m\"} 2"),
            "full page: {resp}"
        );
        ok += 1;
    }
    eprintln!(
        "1000 concurrent /metrics: all answered in {:?}",
        start.elapsed()
    );
    assert_eq!(ok, n);
    assert!(start.elapsed() < Duration::from_secs(30));
    assert_eq!(timed_get(a.admin, "/livez").await.0, 200);
}

/// 100 `/wait-for-drain` calls held open together are all answered, together, with the one
/// drain's answer; probes and /metrics stay fast meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_waiters_released_together() {
    let t = FakeTriton::start(Script {
        metrics: page("m", 10, 0, 0, 1),
        ..Default::default()
    })
    .await;
    let a = start_agent(fast_config(&t)).await;
    eventually(Duration::from_secs(5), "ready", || async {
        get(a.admin, "/readyz").await.0 == 200
    })
    .await;
    let done_at = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for _ in 0..100 {
        let (d, admin) = (done_at.clone(), a.admin);
        handles.push(tokio::spawn(async move {
            let r = get(admin, "/wait-for-drain").await;
            d.lock().unwrap().push(Instant::now());
            r
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (addr, path) in [
        (a.admin, "/livez"),
        (a.admin, "/readyz"),
        (a.admin, "/drain/status"),
        (a.metrics, "/metrics"),
    ] {
        let (_, took) = timed_get(addr, path).await;
        assert!(
            took < Duration::from_millis(500),
            "{path} took {took:?} with 100 held waiters"
        );
    }
    assert_eq!(done_at.lock().unwrap().len(), 0, "held while pending > 0");
    t.set(|s| s.metrics = page("m", 11, 0, 0, 0));
    let mut bodies = Vec::new();
    for h in handles {
        bodies.push(h.await.unwrap());
    }
    assert_eq!(bodies.len(), 100);
    assert!(
        bodies
            .iter()
            .all(|(c, b)| *c == 200 && b == &bodies[0].1 && b.contains("result=idle")),
        "{:?}",
        bodies[0]
    );
    let times = done_at.lock().unwrap().clone();
    let spread = *times.iter().max().unwrap() - *times.iter().min().unwrap();
    eprintln!("100 waiters released within {spread:?}");
    assert!(
        spread < Duration::from_millis(1000),
        "released together: spread {spread:?}"
    );
}

/// Slowloris: clients that send their request head one byte at a time, and clients that send
/// nothing, are disconnected by the 5 s header-read timeout on both listeners, while /livez
/// and /metrics stay fast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_and_idle_connections_are_cut() {
    let t = FakeTriton::start(Script {
        metrics: page("m", 10, 0, 0, 0),
        ..Default::default()
    })
    .await;
    let a = start_agent(fast_config(&t)).await;
    let mut tasks = tokio::task::JoinSet::new();
    for addr in [a.admin, a.metrics] {
        for i in 0..40 {
            tasks.spawn(async move {
                let started = Instant::now();
                let mut s = TcpStream::connect(addr).await.unwrap();
                let slow = i % 2 == 0; // half trickle bytes, half stay silent
                let head = b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
                let mut buf = [0u8; 256];
                for b in head.iter().cycle() {
                    if slow && s.write_all(&[*b]).await.is_err() {
                        break;
                    }
                    // Either the server closes (read 0 / reset) or we keep trickling.
                    match tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        Ok(Ok(_)) => {} // a 408 or similar before the close
                        Err(_) => {}
                    }
                    if started.elapsed() > Duration::from_secs(20) {
                        panic!("{addr}: connection still open after 20 s (slow={slow})");
                    }
                }
                (slow, started.elapsed())
            });
        }
    }
    // Keep-alive: one request answered, then silence; cut 5 s after the answer.
    for addr in [a.admin, a.metrics] {
        tasks.spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let path = if addr == a.admin {
                "/livez"
            } else {
                "/metrics"
            };
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut buf = [0u8; 65536];
            let n = s.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
            let answered = Instant::now();
            loop {
                match tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(_)) => {} // the rest of the first answer
                    Err(_) => panic!("{addr}: idle keep-alive connection still open after 20 s"),
                }
            }
            (false, answered.elapsed())
        });
    }
    // Meanwhile the endpoints answer at once.
    let mut worst = Duration::ZERO;
    let probe_start = Instant::now();
    while probe_start.elapsed() < Duration::from_secs(4) {
        for (addr, path) in [(a.admin, "/livez"), (a.metrics, "/metrics")] {
            let (code, took) = timed_get(addr, path).await;
            assert_eq!(code, 200);
            worst = worst.max(took);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        worst < Duration::from_millis(500),
        "worst probe latency {worst:?} under slowloris"
    );
    let mut cut = Vec::new();
    while let Some(r) = tasks.join_next().await {
        cut.push(r.unwrap());
    }
    let min = cut.iter().map(|c| c.1).min().unwrap();
    let max = cut.iter().map(|c| c.1).max().unwrap();
    eprintln!("80 slow or idle connections and 2 idle keep-alive connections cut after {min:?}..{max:?}; worst probe {worst:?}");
    assert!(
        min >= Duration::from_millis(4500),
        "cut before the 5 s timeout: {min:?}"
    );
    assert!(max < Duration::from_secs(10), "cut late: {max:?}");
}

/// A request whose body is trickled byte by byte (the routes read no body) does not hold a
/// connection open for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_body_is_cut() {
    let t = FakeTriton::start(Script {
        metrics: page("m", 10, 0, 0, 0),
        ..Default::default()
    })
    .await;
    let a = start_agent(fast_config(&t)).await;
    let started = Instant::now();
    let mut s = TcpStream::connect(a.metrics).await.unwrap();
    s.write_all(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let closed = loop {
        if s.write_all(b"a").await.is_err() {
            break true;
        }
        match tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if started.elapsed() > Duration::from_secs(15) {
            break false;
        }
    };
    let resp = String::from_utf8_lossy(&got).to_string();
    eprintln!(
        "slow body: closed={closed} after {:?}, answer {:?}",
        started.elapsed(),
        resp.lines().next()
    );
    assert_eq!(status_of(&resp), Some(405), "{resp}");
    assert!(
        closed,
        "a trickled request body kept the connection open for 15 s"
    );
}

/// The connection cap is per listener: 4 096 idle connections fill the admin listener, and
/// /metrics on the other listener still answers at once. Once the header-read timeout cuts
/// the idle ones, the admin listener answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_admin_listener_does_not_starve_metrics() {
    let t = FakeTriton::start(Script {
        metrics: page("m", 10, 0, 0, 0),
        ..Default::default()
    })
    .await;
    let a = start_agent(fast_config(&t)).await;
    let cap = triton_sidecar::http::server::Limits::default().max_connections;
    assert_eq!(cap, 4096, "the documented cap");
    let mut held = Vec::with_capacity(cap);
    let start = Instant::now();
    for _ in 0..cap {
        match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(a.admin)).await {
            Ok(Ok(s)) => held.push(s),
            _ => break, // the backlog is full: the cap is reached
        }
    }
    eprintln!(
        "{} connections opened to the admin listener in {:?}",
        held.len(),
        start.elapsed()
    );
    assert!(held.len() >= cap - 16, "opened only {}", held.len());
    let (code, took) = timed_get(a.metrics, "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        took < Duration::from_millis(500),
        "/metrics took {took:?} with the admin listener full"
    );
    // The idle connections are cut after 5 s; /livez on the admin listener answers again.
    eventually(Duration::from_secs(20), "admin answers again", || async {
        matches!(
            tokio::time::timeout(Duration::from_secs(1), get(a.admin, "/livez")).await,
            Ok((200, _))
        )
    })
    .await;
    eprintln!("admin listener back after {:?}", start.elapsed());
    drop(held);
}

/// Request heads over the caps (16 KiB buffer, 64 headers) are refused with 431 or a closed
/// connection; heads within the caps are served; the agent keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_are_refused() {
    let t = FakeTriton::start(Script {
        metrics: page("m", 10, 0, 0, 0),
        ..Default::default()
    })
    .await;
    let a = start_agent(fast_config(&t)).await;
    let req = |headers: &str| {
        format!("GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n").into_bytes()
    };
    let within = Duration::from_secs(5);
    for addr in [a.admin, a.metrics] {
        let path_ok = if addr == a.admin { 200 } else { 404 };
        // Within the caps.
        let ok_big = format!("X-Big: {}\r\n", "a".repeat(8 * 1024));
        let ok_many: String = (0..50).map(|i| format!("X-H{i}: v\r\n")).collect();
        for h in [ok_big, ok_many] {
            let resp = raw(addr, &req(&h), within).await;
            assert_eq!(status_of(&resp), Some(path_ok), "{addr}: {resp}");
        }
        // Over the caps: a 20 KiB header, 100 headers, a 1 MiB header.
        let cases = [
            format!("X-Big: {}\r\n", "a".repeat(20 * 1024)),
            (0..100).map(|i| format!("X-H{i}: v\r\n")).collect(),
            format!("X-Huge: {}\r\n", "a".repeat(1 << 20)),
        ];
        for h in cases {
            let resp = raw(addr, &req(&h), within).await;
            let st = status_of(&resp);
            assert!(
                st == Some(431) || st.is_none(),
                "{addr}: {} header bytes answered {:?}",
                h.len(),
                resp.lines().next()
            );
        }
        // A 100 KiB request line.
        let resp = raw(
            addr,
            format!(
                "GET /{} HTTP/1.1\r\nHost: x\r\n\r\n",
                "a".repeat(100 * 1024)
            )
            .as_bytes(),
            within,
        )
        .await;
        let st = status_of(&resp);
        assert!(st.is_none() || st.unwrap() >= 400, "{resp}");
    }
    assert_eq!(get(a.admin, "/livez").await.0, 200);
    assert_eq!(get(a.metrics, "/metrics").await.0, 200);
}

/// Anything unexpected is 404 or 405; nothing on the metrics listener reaches the admin
/// routes; no request to either listener makes the agent call Triton.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_requests_get_404_or_405_and_never_reach_triton() {
    let t = FakeTriton::start(Script {
        metrics: page("m", 10, 0, 0, 3),
        ..Default::default()
    })
    .await;
    let mut cfg = fast_config(&t);
    cfg.poller.poll_interval = Duration::from_secs(2); // few polls, so extra Triton calls would show
    cfg.poller.window = Duration::from_secs(10);
    let a = start_agent(cfg).await;
    eventually(Duration::from_secs(5), "first poll", || async {
        get(a.admin, "/readyz").await.0 == 200
    })
    .await;
    let hits_before = t.script.lock().unwrap().metrics_hits;
    let started = Instant::now();
    let within = Duration::from_secs(3);
    // (listener, raw request, allowed statuses)
    let m = a.metrics;
    let ad = a.admin;
    let cases: Vec<(SocketAddr, String, &[u16])> = vec![
        (
            m,
            "PUT /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".into(),
            &[405],
        ),
        (
            m,
            "DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            &[405],
        ),
        (
            m,
            "OPTIONS /metrics HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            &[405],
        ),
        (
            m,
            "PATCH /metrics HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            &[405],
        ),
        (
            m,
            "BREW /metrics HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            &[405, 400],
        ),
        (
            m,
            "TRACE /metrics HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            &[405],
        ),
        (
            m,
            "CONNECT 127.0.0.1:8002 HTTP/1.1\r\nHost: 127.0.0.1:8002\r\n\r\n".into(),
            &[404, 405, 400],
        ),
        (m, "GET / HTTP/1.1\r\nHost: x\r\n\r\n".into(), &[404]),
        (
            m,
            "GET /metrics/ HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            &[404],
        ),
        (
            m,
            "GET //metrics HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            &[404],
        ),
        (
            m,
            "GET /metrics/../wait-for-drain HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            &[404],
        ),
        (
            m,
            "GET /wait-for-drain HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            &[404],
        ),
        (
            m,
            "POST /drain HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".into(),
            &[404],
        ),
        (
            m,
            "GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            &[404],
        ),
        (
            m,
            "GET http://127.0.0.1:8002/metrics HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            &[200],
        ), // absolute form: our page, not Triton's
        (
            m,
            "GET /metrics?target=http://127.0.0.1:8002/metrics HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            &[200],
        ),
        (m, "GET /metrics HTTP/1.0\r\n\r\n".into(), &[200]),
        (
            m,
            "GET /%6detrics HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            &[404],
        ),
        (
            m,
            "GET /metrics HTTP/2.0\r\nHost: x\r\n\r\n".into(),
            &[400, 505],
        ),
        (
            m,
            "\x16\x03\x01\x02\x00\x01\x00\x01\x7c\x03\x03".into(),
            &[400],
        ), // a TLS ClientHello's first bytes
        (m, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".into(), &[400, 505]),
        (ad, "GET /drain HTTP/1.1\r\nHost: x\r\n\r\n".into(), &[405]),
        (
            ad,
            "PUT /drain HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".into(),
            &[405],
        ),
        (
            ad,
            "GET /drain/cancel HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            &[405],
        ),
        (
            ad,
            "POST /wait-for-drain HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".into(),
            &[405],
        ),
        (
            ad,
            "DELETE /readyz HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            &[405],
        ),
        (
            ad,
            "POST /livez HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".into(),
            &[405],
        ),
        (
            ad,
            "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            &[404],
        ),
        (
            ad,
            "GET /drain/status/../../drain HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            &[404],
        ),
        (
            ad,
            "GET /wait-for-drain/ HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            &[404],
        ),
        (
            ad,
            "GET /WAIT-FOR-DRAIN HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            &[404],
        ),
        (
            ad,
            "GET /v2/models/m/config HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            &[404],
        ),
        (
            ad,
            "POST /v2/repository/models/m/unload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
                .into(),
            &[404],
        ),
    ];
    for (addr, req, allowed) in &cases {
        let resp = raw(*addr, req.as_bytes(), within).await;
        let st = status_of(&resp);
        assert!(
            st.is_some_and(|s| allowed.contains(&s)) || (st.is_none() && allowed.contains(&400)),
            "{addr} {:?}: got {:?}",
            req.lines().next(),
            resp.lines().next()
        );
    }
    // None of that started a drain...
    let st = get(a.admin, "/drain/status").await.1;
    assert!(st.contains("\"state\":\"serving\""), "{st}");
    assert_eq!(get(a.admin, "/readyz").await.0, 200);
    // ...and /metrics, hammered, costs Triton nothing: only the 2 s poll reaches it.
    let mut scrapes = 0;
    while started.elapsed() < Duration::from_secs(3) {
        assert_eq!(get(a.metrics, "/metrics").await.0, 200);
        scrapes += 1;
    }
    let hits = t.script.lock().unwrap().metrics_hits - hits_before;
    let polls = started.elapsed().as_secs_f64() / 2.0;
    eprintln!(
        "{} odd requests + {scrapes} scrapes in {:?}: {hits} Triton scrapes",
        cases.len(),
        started.elapsed()
    );
    assert!(
        (hits as f64) <= polls + 2.0,
        "{hits} Triton scrapes in {:?}",
        started.elapsed()
    );
}

// ------------------------------------------------------------------------------------------
// Regressions for the bugs these tests found in src/ (docs/reliability.md, "Findings"); each
// is fixed, and its test runs with the rest.

/// A Triton whose /metrics names `models` models with `pending` each, and whose
/// /v2/models/<m>/config hangs (`hang`) or answers `{}` at once.
struct ConfigTriton {
    url: String,
    pending: Arc<AtomicUsize>,
    config_calls: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ConfigTriton {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ConfigTriton {
    async fn start(models: usize, hang: bool) -> ConfigTriton {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let pending = Arc::new(AtomicUsize::new(1));
        let config_calls = Arc::new(AtomicUsize::new(0));
        let (p, c) = (pending.clone(), config_calls.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                let (p, c) = (p.clone(), c.clone());
                tokio::spawn(async move {
                    loop {
                        let mut head = Vec::new();
                        let mut tmp = [0u8; 1024];
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut tmp).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&tmp[..n]),
                            }
                        }
                        let path = String::from_utf8_lossy(&head)
                            .split_whitespace()
                            .nth(1)
                            .unwrap_or("/")
                            .to_string();
                        let body = if path == "/metrics" {
                            let n = p.load(Ordering::SeqCst);
                            (0..models).map(|m| format!("nv_inference_request_success{{model=\"m{m}\",version=\"1\"}} 1\nnv_inference_pending_request_count{{model=\"m{m}\",version=\"1\"}} {n}\n")).collect()
                        } else if path.ends_with("/config") {
                            c.fetch_add(1, Ordering::SeqCst);
                            if hang {
                                tokio::time::sleep(Duration::from_secs(3600)).await;
                                return;
                            }
                            "{}".to_string()
                        } else {
                            String::new()
                        };
                        let r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(r.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        ConfigTriton {
            url,
            pending,
            config_calls,
            task,
        }
    }
}

fn config_for(url: &str) -> triton_sidecar::config::Config {
    let mut c = triton_sidecar::config::Config::for_tests(url);
    c.poller.poll_interval = Duration::from_millis(100);
    c.poller.window = Duration::from_secs(2);
    c.client.timeout = Duration::from_millis(300);
    c.client.max_body = 64 << 20;
    c
}

/// Regression (fixed in 78039ed): model configs are read by a background worker, so a hanging
/// config endpoint cannot stretch a poll to (models × --scrape-timeout) and leave the gauges,
/// /readyz and the drain's idle test stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_model_config_does_not_stall_the_poll_loop() {
    let t = ConfigTriton::start(10, true).await;
    let a = start_agent(config_for(&t.url)).await;
    let s = Instant::now();
    eventually(Duration::from_secs(30), "first poll", || async {
        get(a.metrics, "/metrics")
            .await
            .1
            .contains("triton_pending_requests{model=\"m9\"} 1")
    })
    .await;
    let first = s.elapsed();
    t.pending.store(7, Ordering::SeqCst);
    let s = Instant::now();
    eventually(Duration::from_secs(30), "pending 7 seen", || async {
        value(
            &get(a.metrics, "/metrics").await.1,
            "triton_pending_requests{model=\"m9\"}",
        ) == Some(7.0)
    })
    .await;
    let change = s.elapsed();
    eprintln!("hanging config: first poll after {first:?}, a change seen after {change:?}, {} config calls", t.config_calls.load(Ordering::SeqCst));
    assert!(
        first < Duration::from_millis(1500),
        "first poll after {first:?}"
    );
    assert!(
        change < Duration::from_millis(1500),
        "a change reached /metrics after {change:?} (poll interval 100 ms)"
    );
}

/// Regression (fixed in 9023266): a NaN sample is logged once and the model keeps its previous
/// counters, so a counter whose only sample was NaN does not read as 0 and is not taken for a
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nan_counter_is_logged_once_and_is_not_a_restart() {
    let t = FakeTriton::start(Script {
        metrics: page("m", 100, 0, 1000, 1),
        ..Default::default()
    })
    .await;
    let mut p = Proc::spawn(&t.url(), &["--scrape-timeout", "1s"]);
    eventually(Duration::from_secs(10), "model series", || async {
        get(p.metrics, "/metrics")
            .await
            .1
            .contains("triton_pending_requests{model=\"m\"} 1")
    })
    .await;
    // For 1.5 s (15 polls) the success counter is NaN; the rest of the page is normal.
    let nan_page = page("m", 100, 0, 1000, 1).replace(
        "nv_inference_request_success{model=\"m\",version=\"1\"} 100",
        "nv_inference_request_success{model=\"m\",version=\"1\"} NaN",
    );
    assert!(nan_page.contains("NaN"));
    t.set(|s| s.metrics = nan_page);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    t.set(|s| s.metrics = page("m", 110, 0, 1100, 1));
    tokio::time::sleep(Duration::from_millis(500)).await;
    p.assert_alive();
    let log = p.stderr();
    assert_eq!(
        p.lines_with("counters went down").len(),
        0,
        "a NaN sample is not a Triton restart:\n{log}"
    );
    let nan_lines = log
        .lines()
        .filter(|l| l.contains("NaN") || l.contains("non-finite"))
        .count();
    assert_eq!(
        nan_lines, 1,
        "one line about the non-finite samples:\n{log}"
    );
}

/// Regression (fixed in 9023266): an absurd `--window` is refused at start-up or harmless; it
/// once overflowed `Duration` in the window arithmetic and froze the poller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_window_is_refused_or_harmless() {
    let t = FakeTriton::start(Script {
        metrics: page("m", 10, 0, 0, 1),
        ..Default::default()
    })
    .await;
    let mut p = match Proc::try_spawn(&t.url(), &["--window", "18446744073709551615s"]) {
        Ok(p) => p,
        Err((st, log)) => {
            assert_eq!(st.code(), Some(2), "{log}");
            assert!(log.contains("--window"), "{log}");
            return;
        }
    };
    // Accepted: the window arithmetic runs for a while, then the agent must still be polling.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    p.assert_alive();
    t.set(|s| s.metrics = page("m", 10, 0, 0, 7));
    eventually(Duration::from_secs(5), "still polling", || async {
        value(
            &get(p.metrics, "/metrics").await.1,
            "triton_pending_requests{model=\"m\"}",
        ) == Some(7.0)
    })
    .await;
    p.assert_no_panic();
}
