//! The real binary, real signals: start-up errors and the termination lifecycle.
// Test code: a panic here is a failed test, not a crashed agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_triton-sidecar");

struct Proc {
    child: Child,
    admin: std::net::SocketAddr,
    metrics: std::net::SocketAddr,
    /// Read so the agent never blocks on a full pipe; no test here inspects it yet.
    _stderr: AgentStderr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(triton: &FakeTriton, extra: &[&str]) -> Proc {
    let started = spawn_agent(
        Command::new(BIN)
            .args([
                "--triton-url",
                &triton.url(),
                "--triton-metrics-url",
                &format!("{}/metrics", triton.url()),
            ])
            .args(PORT_ZERO)
            .args([
                "--poll-interval",
                "100ms",
                "--window",
                "2s",
                "--scrape-timeout",
                "300ms",
                "--drain-poll-interval",
                "50ms",
            ])
            .args([
                "--min-drain",
                "1s",
                "--drain-quiet",
                "400ms",
                "--drain-timeout",
                "10s",
                "--no-gpu",
            ])
            .args(extra)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null()),
    );
    let a = started.unwrap_or_else(|(st, log)| panic!("agent exited at start-up: {st:?}\n{log}"));
    Proc {
        child: a.child,
        admin: a.admin,
        metrics: a.metrics,
        _stderr: a.stderr,
    }
}

fn signal(p: &Proc, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

async fn wait_exit(p: &mut Proc, within: Duration) -> (std::process::ExitStatus, Duration) {
    let s = Instant::now();
    loop {
        if let Some(st) = p.child.try_wait().unwrap() {
            return (st, s.elapsed());
        }
        assert!(s.elapsed() < within, "agent did not exit within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn ready(p: &Proc) {
    eventually(Duration::from_secs(10), "agent ready", || async {
        match reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!("http://{}/readyz", p.admin))
            .send()
            .await
        {
            Ok(r) => r.status().as_u16() == 200,
            Err(_) => false,
        }
    })
    .await;
}

#[tokio::test]
async fn sigterm_while_idle() {
    let t = FakeTriton::start(Script {
        metrics: page("m", 10, 0, 0, 0),
        ..Default::default()
    })
    .await;
    let mut p = spawn(&t, &[]);
    ready(&p).await;
    signal(&p, "TERM");
    // It keeps serving while it drains.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(get(p.admin, "/readyz").await, (503, "draining\n".into()));
    assert_eq!(get(p.metrics, "/metrics").await.0, 200);
    let (st, took) = wait_exit(&mut p, Duration::from_secs(5)).await;
    assert!(st.success(), "{st:?}");
    assert!(
        took >= Duration::from_millis(700),
        "not before min-drain: {took:?}"
    );
}

#[tokio::test]
async fn sigterm_while_busy_waits_for_idle_and_answers_the_hook() {
    let t = FakeTriton::start(Script {
        metrics: page("m", 10, 0, 0, 6),
        ..Default::default()
    })
    .await;
    let mut p = spawn(&t, &[]);
    ready(&p).await;
    // Regular sidecar: the preStop hook and SIGTERM arrive together.
    let hook = tokio::spawn(get(p.admin, "/wait-for-drain"));
    signal(&p, "TERM");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "still busy: must not exit"
    );
    let idle_at = Instant::now();
    t.set(|s| s.metrics = page("m", 16, 0, 0, 0));
    let (code, body) = hook.await.unwrap();
    assert_eq!(code, 200, "the hook got its answer before the agent exited");
    assert!(body.contains("result=idle"), "{body}");
    let (st, _) = wait_exit(&mut p, Duration::from_secs(5)).await;
    assert!(st.success());
    assert!(idle_at.elapsed() >= Duration::from_millis(400));
}

#[tokio::test]
async fn double_sigterm_exits_promptly() {
    let t = FakeTriton::start(Script {
        metrics: page("m", 10, 0, 0, 6),
        ..Default::default()
    })
    .await;
    let mut p = spawn(&t, &[]);
    ready(&p).await;
    signal(&p, "TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&p, "TERM");
    let (st, took) = wait_exit(&mut p, Duration::from_secs(3)).await;
    assert!(st.success(), "{st:?}");
    assert!(
        took < Duration::from_secs(1),
        "second signal: exit within 1 s, took {took:?}"
    );
}

#[tokio::test]
async fn native_sidecar_order_exits_within_a_second() {
    let mut t = FakeTriton::start(Script {
        metrics: page("m", 10, 0, 0, 0),
        ..Default::default()
    })
    .await;
    let mut p = spawn(&t, &[]);
    ready(&p).await;
    // Triton has already exited when the agent's SIGTERM comes.
    t.kill().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&p, "TERM");
    let (st, took) = wait_exit(&mut p, Duration::from_secs(3)).await;
    assert!(st.success());
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[tokio::test]
async fn sigterm_during_startup_exits_cleanly() {
    let t = FakeTriton::reserve().await;
    let mut p = spawn(&t, &[]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    signal(&p, "TERM");
    let (st, took) = wait_exit(&mut p, Duration::from_secs(3)).await;
    assert!(st.success(), "{st:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[test]
fn invalid_flag_is_one_line_naming_the_flag_exit_2() {
    for (args, flag) in [
        (vec!["--poll-interval", "soon"], "--poll-interval"),
        (vec!["--window", "100ms"], "--window"),
        (vec!["--max-body", "lots"], "--max-body"),
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(flag), "{err}");
    }
    // The environment variable form is validated the same way.
    let out = Command::new(BIN)
        .env("TRITON_SIDECAR_POLL_INTERVAL", "x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--poll-interval"));
}

#[test]
fn gpu_list_without_uuid_and_quiet_not_under_timeout_exit_2() {
    // Both used to start: `--gpu ,` as "no GPUs", and a quiet period no drain can reach.
    for (args, flags) in [
        (vec!["--gpu", ","], vec!["--gpu"]),
        (
            vec!["--drain-quiet", "90s", "--drain-timeout", "90s"],
            vec!["--drain-quiet", "--drain-timeout"],
        ),
    ] {
        // The error comes before any listener is bound or Triton is polled. An agent that
        // accepts the flags runs on: stop it and fail, rather than wait for it forever.
        let mut child = Command::new(BIN)
            .args(&args)
            .args([
                "--metrics-addr",
                "127.0.0.1:0",
                "--admin-addr",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break Some(st);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        let status = status.unwrap_or_else(|| panic!("{args:?} was accepted: the agent ran on"));
        assert_eq!(status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        for f in flags {
            assert!(err.contains(f), "{args:?} names {f}: {err}");
        }
    }
}

#[test]
fn port_taken_exits_with_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(BIN)
        .args([
            "--metrics-addr",
            &addr,
            "--admin-addr",
            "127.0.0.1:0",
            "--no-gpu",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot listen on") && err.contains("--metrics-addr") && err.contains(&addr),
        "{err}"
    );
}

#[test]
fn check_against_absent_triton_exits_1() {
    let absent = RefusedAddr::new();
    let out = Command::new(BIN)
        .args([
            "check",
            "--triton-url",
            &absent.url(),
            "--triton-metrics-url",
            &format!("{}/metrics", absent.url()),
            "--no-gpu",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read Triton's metrics") && err.contains("connection refused"),
        "{err}"
    );
}

#[tokio::test]
async fn check_prints_the_table() {
    // The check scrapes twice, one poll interval apart; the fake serves the first page to the
    // first scrape and the second page to the second, whatever the timing: 10 more requests,
    // with 40 ms mean wait.
    let t = FakeTriton::start(Script {
        metrics_seq: vec![
            page("m", 10, 0, 1_000_000, 4),
            page("m", 20, 0, 1_400_000, 4),
        ],
        model_ready: [("m".to_string(), 200)].into(),
        ..Default::default()
    })
    .await;
    let url = t.url();
    let metrics = format!("{url}/metrics");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args([
                "check",
                "--triton-url",
                &url,
                "--triton-metrics-url",
                &metrics,
                "--poll-interval",
                "500ms",
                "--require-model",
                "m",
                "--capacity",
                "m=40",
                "--no-gpu",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        t.script.lock().unwrap().metrics_hits,
        2,
        "one scrape per page: {stdout}"
    );
    let row = stdout
        .lines()
        .find(|l| l.starts_with("m "))
        .expect("row for m");
    let cols: Vec<&str> = row.split_whitespace().collect();
    // queue wait (1,400,000 − 1,000,000) / 10 = 40,000 µs = 40.00 ms; pending 4
    assert_eq!(cols[1], "40.00", "{stdout}");
    assert_eq!(cols[2], "4");
    // The scaling signal: offered load (10 completions over the interval, pending steady),
    // the configured capacity and their ratio.
    let load: f64 = cols[6].parse().expect("load");
    assert!(load > 0.0, "{stdout}");
    assert_eq!((cols[7], cols[8]), ("40.0", "configured"), "{stdout}");
    let util: f64 = cols[9].parse().expect("util");
    assert!((util - load / 40.0).abs() <= 0.006, "{stdout}");
    let pod = stdout
        .lines()
        .find(|l| l.starts_with("(pod)"))
        .expect("pod row");
    assert_eq!(pod.split_whitespace().last(), Some(cols[9]), "{stdout}");
    assert!(stdout.contains("ready: yes (ready)"), "{stdout}");
}

#[test]
fn install_copies_the_binary() {
    let dir = std::env::temp_dir().join(format!("ts-install-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(BIN)
        .args(["install", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let copied = dir.join("triton-sidecar");
    let v = Command::new(&copied).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&v.stdout).contains("triton-sidecar"));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(BIN)
        .args(["install", "/nonexistent/dir"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test]
async fn drain_cli_waits_and_reports() {
    let t = FakeTriton::start(Script {
        metrics: page("m", 10, 0, 0, 0),
        ..Default::default()
    })
    .await;
    let mut p = spawn(&t, &[]);
    ready(&p).await;
    let url = format!("http://{}", p.admin);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["drain", "--admin-url", &url, "--timeout", "10s"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("result=idle trigger=cli"));
    // Unreachable agent: exit 1 with a clear message.
    let absent = RefusedAddr::new();
    let out = Command::new(BIN)
        .args(["drain", "--admin-url", &absent.url()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the agent"));
    signal(&p, "TERM");
    let (st, _) = wait_exit(&mut p, Duration::from_secs(5)).await;
    assert!(st.success());
}

/// The start-up line that `spawn` reads the bound ports from, in both log formats.
#[test]
fn start_up_line_parses_in_both_formats() {
    let text = "\u{1b}[2m2026-01-01T00:00:00Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m triton-sidecar started \u{1b}[3mmetrics\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:38643 \u{1b}[3madmin\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:33593 \u{1b}[3mtriton\u{1b}[0m\u{1b}[2m=\u{1b}[0mhttp://127.0.0.1:1";
    let json = r#"{"timestamp":"x","level":"INFO","fields":{"message":"triton-sidecar started","metrics":"127.0.0.1:38643","admin":"127.0.0.1:33593","triton":"http://127.0.0.1:1"},"target":"triton_sidecar"}"#;
    let want = Some((
        "127.0.0.1:38643".parse().unwrap(),
        "127.0.0.1:33593".parse().unwrap(),
    ));
    assert_eq!(parse_started(&strip_ansi(text)), want);
    assert_eq!(parse_started(json), want);
    assert_eq!(
        parse_started("triton-sidecar started metrics=0.0.0.0:8003"),
        None
    );
}

/// A Triton that accepts every connection and never answers (a hung process, a full accept
/// queue behind a stuck event loop): the agent's poll is then inside a request for up to three
/// `--scrape-timeout`s (the page, then the health probes). A stop must reach the poll in
/// progress: the second signal still exits within 1 s, as the README promises.
#[tokio::test]
async fn double_sigterm_exits_within_a_second_while_triton_never_answers() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    let url = format!("http://{addr}");
    let started = spawn_agent(
        Command::new(BIN)
            .args([
                "--triton-url",
                &url,
                "--triton-metrics-url",
                &format!("{url}/metrics"),
            ])
            .args(PORT_ZERO)
            .args(["--poll-interval", "100ms", "--window", "2s"])
            // Far longer than the promise: a stop that waits for the request fails the test.
            .args([
                "--scrape-timeout",
                "20s",
                "--drain-timeout",
                "60s",
                "--no-gpu",
            ])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null()),
    );
    let a = started.unwrap_or_else(|(st, log)| panic!("agent exited at start-up: {st:?}\n{log}"));
    let mut p = Proc {
        child: a.child,
        admin: a.admin,
        metrics: a.metrics,
        _stderr: a.stderr,
    };
    // The first poll is under way and hanging by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&p, "TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "one signal starts a drain; it must not exit"
    );
    signal(&p, "TERM");
    let (st, took) = wait_exit(&mut p, Duration::from_secs(30)).await;
    held.abort();
    assert!(st.success(), "{st:?}");
    assert!(
        took < Duration::from_secs(1),
        "second signal with a hung Triton: exit within 1 s, took {took:?}"
    );
}
