//! Test support: a scripted fake Triton on 127.0.0.1:0, and helpers to run the agent.
#![allow(dead_code)]

pub mod nvml;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use triton_sidecar::config::Config;
use triton_sidecar::{Agent, AgentError};

/// How the fake answers `/metrics`.
#[derive(Clone, Debug)]
pub enum MetricsMode {
    /// 200 with `Script::metrics`.
    Page,
    /// This status with a short body.
    Status(u16),
    /// 200 with this raw body (HTML, garbage).
    Raw(Vec<u8>),
    /// Content-Length says more than is sent, then the connection closes.
    Truncated,
    /// Accept, read the request, never answer.
    Hang,
    /// Answer after this delay.
    Delay(Duration),
    /// A streamed body of this many bytes (chunked, no Content-Length).
    Huge(usize),
}

/// What the fake serves.
#[derive(Clone, Debug)]
pub struct Script {
    /// The metrics page.
    pub metrics: String,
    /// When not empty, the metrics pages to serve in turn, in place of `metrics`: each GET
    /// /metrics takes the first page off, and the last one is served from then on. A test that
    /// needs "page A, then page B" gets it by request count, not by racing the agent's timer.
    pub metrics_seq: Vec<String>,
    /// How /metrics answers.
    pub mode: MetricsMode,
    /// Status of /v2/health/ready.
    pub ready: u16,
    /// Status of /v2/models/<m>/ready (404 when absent).
    pub model_ready: HashMap<String, u16>,
    /// Bodies of /v2/models/<m>/config.
    pub configs: HashMap<String, String>,
    /// Requests served to /metrics.
    pub metrics_hits: usize,
    /// Requests to /v2/* (Triton's HTTP port), and how many of them left the connection open.
    pub v2_hits: usize,
    /// Of those, requests without `Connection: close`.
    pub v2_keepalive: usize,
    /// Body of /v2/models/stats (404 when `None`).
    pub stats: Option<String>,
    /// /v2/models/stats answers only after this long (a statistics API that hangs).
    pub stats_delay: Option<Duration>,
    /// `(name, value)`: /v2/models/stats answers 403 without this header, as Triton's
    /// `--http-restricted-api=statistics:name=value` does.
    pub restricted: Option<(String, String)>,
    /// Of the /v2 requests, those that carried the `restricted` header.
    pub v2_with_header: usize,
    /// /v2/models/<m>/config answers only after this long.
    pub config_delay: Option<Duration>,
}
impl Default for Script {
    fn default() -> Self {
        Script {
            metrics: String::new(),
            metrics_seq: Vec::new(),
            mode: MetricsMode::Page,
            ready: 200,
            model_ready: HashMap::new(),
            configs: HashMap::new(),
            metrics_hits: 0,
            v2_hits: 0,
            v2_keepalive: 0,
            stats: None,
            stats_delay: None,
            restricted: None,
            v2_with_header: 0,
            config_delay: None,
        }
    }
}

/// A fake Triton.
pub struct FakeTriton {
    pub addr: SocketAddr,
    pub script: Arc<Mutex<Script>>,
    tasks: Option<JoinSet<()>>,
}

fn listener_on(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = TcpSocket::new_v4()?;
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(1024)
}

impl FakeTriton {
    /// Start on a free port.
    pub async fn start(script: Script) -> FakeTriton {
        let l = listener_on(([127, 0, 0, 1], 0).into()).expect("bind fake triton");
        let addr = l.local_addr().unwrap();
        let mut f = FakeTriton {
            addr,
            script: Arc::new(Mutex::new(script)),
            tasks: None,
        };
        f.serve(l);
        f
    }

    /// A port where nothing listens yet (for "Triton absent at start").
    pub async fn reserve() -> FakeTriton {
        let l = listener_on(([127, 0, 0, 1], 0).into()).unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        FakeTriton {
            addr,
            script: Arc::new(Mutex::new(Script::default())),
            tasks: None,
        }
    }

    fn serve(&mut self, l: TcpListener) {
        let mut set = JoinSet::new();
        let script = self.script.clone();
        set.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((s, _)) = l.accept().await else { break };
                let script = script.clone();
                conns.spawn(handle(s, script));
                while conns.try_join_next().is_some() {}
            }
        });
        self.tasks = Some(set);
    }

    /// Base URL, e.g. `http://127.0.0.1:12345`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Change the script.
    pub fn set(&self, f: impl FnOnce(&mut Script)) {
        f(&mut self.script.lock().unwrap());
    }

    /// Stop listening and drop every connection: connections are now refused.
    pub async fn kill(&mut self) {
        if let Some(mut t) = self.tasks.take() {
            t.abort_all();
            while t.join_next().await.is_some() {}
        }
    }

    /// Listen again on the same port.
    pub async fn revive(&mut self) {
        self.kill().await;
        let l = listener_on(self.addr).expect("rebind fake triton");
        self.serve(l);
    }
}

async fn handle(mut s: TcpStream, script: Arc<Mutex<Script>>) {
    loop {
        let mut buf = Vec::with_capacity(1024);
        let mut tmp = [0u8; 1024];
        // Read one request head.
        loop {
            match s.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        let head = String::from_utf8_lossy(&buf).to_string();
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
        let close = head.to_ascii_lowercase().contains("\r\nconnection: close");
        let has_header = |r: &Option<(String, String)>| {
            r.as_ref().is_some_and(|(n, v)| {
                head.lines().any(|l| {
                    l.split_once(':')
                        .is_some_and(|(k, x)| k.trim().eq_ignore_ascii_case(n) && x.trim() == v)
                })
            })
        };
        if path.starts_with("/v2/") {
            let mut sc = script.lock().unwrap();
            sc.v2_hits += 1;
            if !close {
                sc.v2_keepalive += 1;
            }
            if has_header(&sc.restricted) {
                sc.v2_with_header += 1;
            }
        }
        let mut sc = script.lock().unwrap().clone();
        let (status, body): (u16, Vec<u8>) = if path == "/metrics" {
            {
                // Count and take the page under one lock, so two concurrent scrapes never get
                // the same page of a sequence.
                let mut live = script.lock().unwrap();
                live.metrics_hits += 1;
                if live.metrics_seq.len() > 1 {
                    sc.metrics = live.metrics_seq.remove(0);
                } else if let Some(last) = live.metrics_seq.first() {
                    sc.metrics = last.clone();
                }
            }
            match sc.mode {
                MetricsMode::Page => (200, sc.metrics.into_bytes()),
                MetricsMode::Status(c) => (c, b"error\n".to_vec()),
                MetricsMode::Raw(b) => (200, b),
                MetricsMode::Truncated => {
                    let body = sc.metrics.as_bytes();
                    let half = &body[..body.len() / 2];
                    let h = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(h.as_bytes()).await;
                    let _ = s.write_all(half).await;
                    return;
                }
                MetricsMode::Hang => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return;
                }
                MetricsMode::Delay(d) => {
                    tokio::time::sleep(d).await;
                    (200, sc.metrics.into_bytes())
                }
                MetricsMode::Huge(n) => {
                    let h = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n";
                    if s.write_all(h.as_bytes()).await.is_err() {
                        return;
                    }
                    let line =
                        "nv_inference_request_success{model=\"m\",version=\"1\"} 1\n".repeat(1000);
                    let mut sent = 0;
                    while sent < n {
                        let chunk = format!("{:x}\r\n{}\r\n", line.len(), line);
                        if s.write_all(chunk.as_bytes()).await.is_err() {
                            return; // the agent hung up: what we want
                        }
                        sent += line.len();
                    }
                    let _ = s.write_all(b"0\r\n\r\n").await;
                    continue;
                }
            }
        } else if path == "/v2/models/stats" {
            if let Some(d) = sc.stats_delay {
                tokio::time::sleep(d).await;
            }
            match (&sc.restricted, &sc.stats) {
                (Some((n, _)), _) if !has_header(&sc.restricted) => (
                    403,
                    format!("{{\"error\":\"This API is restricted, expecting header '{n}'\"}}")
                        .into_bytes(),
                ),
                (_, Some(b)) => (200, b.clone().into_bytes()),
                (_, None) => (404, Vec::new()),
            }
        } else if path == "/v2/health/ready" || path == "/v2/health/live" {
            (sc.ready, Vec::new())
        } else if let Some(rest) = path.strip_prefix("/v2/models/") {
            let mut parts = rest.splitn(2, '/');
            let m = parts.next().unwrap_or("");
            match parts.next() {
                Some("ready") => (*sc.model_ready.get(m).unwrap_or(&404), Vec::new()),
                Some("config") => {
                    if let Some(d) = sc.config_delay {
                        tokio::time::sleep(d).await;
                    }
                    match sc.configs.get(m) {
                        Some(c) => (200, c.clone().into_bytes()),
                        None => (200, format!("{{\"name\":\"{m}\"}}").into_bytes()),
                    }
                }
                _ => (404, Vec::new()),
            }
        } else {
            (404, Vec::new())
        };
        let h = format!("HTTP/1.1 {status} X\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n", body.len());
        if s.write_all(h.as_bytes()).await.is_err() || s.write_all(&body).await.is_err() {
            return;
        }
        if close {
            return;
        }
    }
}

/// An address on 127.0.0.1 that refuses connections for as long as this value lives.
///
/// The socket is bound but never listens: connecting gets "connection refused", and no other
/// process can take the port meanwhile (a port bound, read and released could be).
pub struct RefusedAddr {
    pub addr: SocketAddr,
    _held: TcpSocket,
}

impl RefusedAddr {
    pub fn new() -> RefusedAddr {
        let s = TcpSocket::new_v4().expect("socket");
        s.bind(([127, 0, 0, 1], 0).into())
            .expect("bind 127.0.0.1:0");
        RefusedAddr {
            addr: s.local_addr().expect("bound address"),
            _held: s,
        }
    }

    /// e.g. `http://127.0.0.1:12345`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A page with one model `m` and the given counters.
pub fn page(model: &str, success: u64, failure: u64, queue_us: u64, pending: u64) -> String {
    format!(
        "# HELP nv_inference_request_success Number of successful inference requests, all batch sizes\n\
         # TYPE nv_inference_request_success counter\n\
         nv_inference_request_success{{model=\"{model}\",version=\"1\"}} {success}\n\
         nv_inference_request_failure{{model=\"{model}\",reason=\"BACKEND\",version=\"1\"}} {failure}\n\
         nv_inference_exec_count{{model=\"{model}\",version=\"1\"}} {success}\n\
         nv_inference_queue_duration_us{{model=\"{model}\",version=\"1\"}} {queue_us}\n\
         nv_inference_compute_infer_duration_us{{model=\"{model}\",version=\"1\"}} {}\n\
         nv_inference_pending_request_count{{model=\"{model}\",version=\"1\"}} {pending}\n",
        success * 1000
    )
}

/// A running agent.
pub struct RunningAgent {
    pub metrics: SocketAddr,
    pub admin: SocketAddr,
    pub signal: mpsc::UnboundedSender<()>,
    pub join: tokio::task::JoinHandle<Result<(), AgentError>>,
}

/// A config for a fake Triton with fast timings.
pub fn fast_config(triton: &FakeTriton) -> Config {
    let mut c = Config::for_tests(&triton.url());
    c.poller.poll_interval = Duration::from_millis(100);
    c.poller.window = Duration::from_secs(2);
    c.client.timeout = Duration::from_millis(300);
    c.poller.drain_poll_interval = Duration::from_millis(50);
    c.drain.min_drain = Duration::from_millis(1000);
    c.drain.quiet = Duration::from_millis(400);
    c.drain.timeout = Duration::from_secs(5);
    c
}

/// Bind on port 0 and run.
pub async fn start_agent(cfg: Config) -> RunningAgent {
    let agent = Agent::bind(cfg).await.expect("bind agent");
    let (metrics, admin) = (agent.metrics_addr(), agent.admin_addr());
    let (tx, rx) = mpsc::unbounded_channel::<()>();
    let stream = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|x| (x, rx))
    }));
    let join = tokio::spawn(agent.run(stream));
    RunningAgent {
        metrics,
        admin,
        signal: tx,
        join,
    }
}

/// A plain HTTP client (no proxy).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// GET and return (status, body).
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let r = client()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// POST and return (status, body).
pub async fn post(addr: SocketAddr, path: &str) -> (u16, String) {
    let r = client()
        .post(format!("http://{addr}{path}"))
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// The value of one series in a metrics page (exact series text up to the value).
pub fn value(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        let rest = rest.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Poll `f` every 20 ms until it returns true, or panic after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if f().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ------------------------------------------------------------------------------------------
// The agent binary, spawned on port 0.

/// Arguments that make a spawned agent bind port 0 for both listeners; `AgentStderr::started`
/// then reads the ports it got from its start-up line. Choosing a "free" port in the test and
/// passing it on raced with every other test binding port 0 in between.
pub const PORT_ZERO: [&str; 4] = [
    "--metrics-addr",
    "127.0.0.1:0",
    "--admin-addr",
    "127.0.0.1:0",
];

/// A spawned agent that has logged its start-up line.
pub struct SpawnedAgent {
    pub child: std::process::Child,
    pub stderr: AgentStderr,
    /// The bound addresses, from the start-up line.
    pub metrics: SocketAddr,
    pub admin: SocketAddr,
}

/// Spawn the agent `cmd` describes (with `PORT_ZERO` among its arguments) and wait for its
/// start-up line; or, when it exits without one (a refused flag), its exit status and stderr.
/// Its stderr is piped here, and its log filter is the default (`info`), which the start-up line
/// needs.
pub fn spawn_agent(
    cmd: &mut std::process::Command,
) -> Result<SpawnedAgent, (std::process::ExitStatus, String)> {
    let mut child = cmd
        .env_remove("TRITON_SIDECAR_LOG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn agent");
    let stderr = AgentStderr::tee(&mut child);
    // Killed if the wait panics, so no agent outlives its test.
    let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        stderr.started(Duration::from_secs(15))
    }));
    match started {
        Ok(Some((metrics, admin))) => Ok(SpawnedAgent {
            child,
            stderr,
            metrics,
            admin,
        }),
        Ok(None) => {
            let st = child.wait().expect("wait for the agent");
            Err((st, stderr.text()))
        }
        Err(panic) => {
            let _ = child.kill();
            let _ = child.wait();
            std::panic::resume_unwind(panic)
        }
    }
}

/// The message of the agent's start-up line, which carries the bound addresses.
const STARTED: &str = "triton-sidecar started";

#[derive(Default)]
struct Tee {
    /// Everything read from the agent's stderr so far, as it was written.
    text: String,
    /// The start-up line, escape sequences removed.
    started: Option<String>,
    /// The agent closed its stderr (it exited).
    eof: bool,
}

/// A spawned agent's stderr, read line by line by a thread as it arrives: the test learns the
/// bound addresses from the start-up line, and a copy of every line stays readable (the pipe is
/// also kept drained, so a chatty agent never blocks on a full pipe).
pub struct AgentStderr {
    shared: Arc<(Mutex<Tee>, std::sync::Condvar)>,
}

impl AgentStderr {
    /// Take `child`'s stderr, which must be `Stdio::piped()`, and start reading it.
    pub fn tee(child: &mut std::process::Child) -> AgentStderr {
        use std::io::BufRead;
        let pipe = child
            .stderr
            .take()
            .expect("the agent's stderr must be piped");
        let shared = Arc::new((Mutex::new(Tee::default()), std::sync::Condvar::new()));
        let s = shared.clone();
        std::thread::spawn(move || {
            let mut r = std::io::BufReader::new(pipe);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                let n = r.read_until(b'\n', &mut buf).unwrap_or(0);
                let (lock, cv) = &*s;
                let mut t = lock.lock().unwrap();
                if n == 0 {
                    t.eof = true;
                    cv.notify_all();
                    return;
                }
                let line = String::from_utf8_lossy(&buf);
                t.text.push_str(&line);
                if t.started.is_none() {
                    let plain = strip_ansi(&line);
                    if plain.contains(STARTED) {
                        t.started = Some(plain.trim_end().to_string());
                        cv.notify_all();
                    }
                }
            }
        });
        AgentStderr { shared }
    }

    /// The bound (metrics, admin) addresses from the start-up line, or `None` when the agent
    /// exited without one (a refused flag). Panics if neither happens `within`.
    pub fn started(&self, within: Duration) -> Option<(SocketAddr, SocketAddr)> {
        let (lock, cv) = &*self.shared;
        let deadline = std::time::Instant::now() + within;
        let mut t = lock.lock().unwrap();
        while t.started.is_none() && !t.eof {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(
                !left.is_zero(),
                "no start-up line within {within:?}; stderr:\n{}",
                t.text
            );
            t = cv.wait_timeout(t, left).unwrap().0;
        }
        let line = t.started.clone()?;
        let (metrics, admin) = parse_started(&line).unwrap_or_else(|| {
            panic!("cannot read the bound addresses from the start-up line: {line}")
        });
        // Port 0 there would be the configured address, not the one the agent listens on.
        assert!(
            metrics.port() != 0 && admin.port() != 0,
            "the start-up line must name the bound ports: {line}"
        );
        Some((metrics, admin))
    }

    /// Everything the agent wrote to stderr so far.
    pub fn text(&self) -> String {
        self.shared.0.lock().unwrap().text.clone()
    }
}

/// Remove terminal escape sequences (`ESC [ ... letter`): the text log format colours field
/// names even when stderr is a pipe.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// (metrics, admin) from a start-up line in either log format: text
/// (`... triton-sidecar started metrics=127.0.0.1:1 admin=127.0.0.1:2 triton=...`) or JSON
/// (`{"fields":{"message":"triton-sidecar started","metrics":"...","admin":"..."},...}`).
pub fn parse_started(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let (metrics, admin) = if line.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let f = &v["fields"];
        (
            f["metrics"].as_str()?.to_string(),
            f["admin"].as_str()?.to_string(),
        )
    } else {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
                .map(str::to_string)
        };
        (field("metrics")?, field("admin")?)
    };
    Some((metrics.parse().ok()?, admin.parse().ok()?))
}
