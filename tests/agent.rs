//! The agent against a scripted fake Triton: /metrics, /readyz, and the core failure cases.
// Test code: a panic here is a failed test, not a crashed agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use support::*;

/// The page the metrics router serves: `None` until the first render.
type Page = Option<bytes::Bytes>;
const NOT_RENDERED: Page = None;
fn rendered(text: &'static str) -> Page {
    Some(bytes::Bytes::from_static(text.as_bytes()))
}

async fn metrics_page(a: &RunningAgent) -> String {
    get(a.metrics, "/metrics").await.1
}

#[tokio::test]
async fn serves_derived_gauges_and_readiness() {
    let t = FakeTriton::start(Script {
        metrics: page("m", 0, 0, 0, 0),
        ..Default::default()
    })
    .await;
    t.set(|s| {
        s.model_ready.insert("m".into(), 200);
    });
    let mut cfg = fast_config(&t);
    cfg.poller.require_models = vec!["m".into()];
    let a = start_agent(cfg).await;
    eventually(Duration::from_secs(5), "ready", || async {
        get(a.admin, "/readyz").await == (200, "ready\n".into())
    })
    .await;
    // 100 requests/poll with 20 ms mean queue wait: 2,000,000 µs / 100 = 20 ms.
    let mut n = 0u64;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1500) {
        n += 10;
        t.set(|s| s.metrics = page("m", n, 0, n * 20_000, 7));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let p = metrics_page(&a).await;
    assert_eq!(
        value(&p, "triton_queue_wait_ms{model=\"m\"}"),
        Some(20.0),
        "{p}"
    );
    assert_eq!(value(&p, "triton_pending_requests{model=\"m\"}"), Some(7.0));
    assert_eq!(value(&p, "triton_pod_pending_requests"), Some(7.0));
    assert_eq!(value(&p, "triton_pod_queue_wait_ms"), Some(20.0));
    let rate = value(&p, "triton_request_rate{model=\"m\"}").unwrap();
    // 10 requests per 100 ms poll ≈ 100 /s; scheduling jitter on a loaded machine gives slack.
    assert!((50.0..=200.0).contains(&rate), "rate {rate}");
    assert_eq!(value(&p, "triton_ready"), Some(1.0));
    assert_eq!(value(&p, "triton_up"), Some(1.0));
    assert_eq!(value(&p, "triton_draining"), Some(0.0));
    assert!(p.contains("triton_sidecar_build_info{version=\""));
    assert!(p.contains("# HELP triton_pod_queue_wait_ms "));
    // Model not ready → readiness follows with the reason.
    t.set(|s| {
        s.model_ready.insert("m".into(), 503);
    });
    eventually(Duration::from_secs(5), "model not ready", || async {
        get(a.admin, "/readyz").await == (503, "model not ready: m\n".into())
    })
    .await;
    let p = metrics_page(&a).await;
    assert_eq!(value(&p, "triton_ready"), Some(0.0));
}

#[tokio::test]
async fn content_type_and_routes() {
    let t = FakeTriton::start(Script {
        metrics: page("m", 0, 0, 0, 0),
        ..Default::default()
    })
    .await;
    let a = start_agent(fast_config(&t)).await;
    let r = client()
        .get(format!("http://{}/metrics", a.metrics))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(get(a.metrics, "/nope").await.0, 404);
    assert_eq!(post(a.metrics, "/metrics").await.0, 405);
    assert_eq!(get(a.admin, "/livez").await, (200, "ok\n".into()));
    assert_eq!(get(a.admin, "/metrics").await.0, 404);
    assert_eq!(post(a.admin, "/readyz").await.0, 405);
    assert_eq!(get(a.admin, "/drain").await.0, 405);
}

#[tokio::test]
async fn triton_down_at_start_then_up() {
    let mut t = FakeTriton::reserve().await;
    let a = start_agent(fast_config(&t)).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let p = metrics_page(&a).await;
    // No page yet: no Triton-derived series at all (a 0 would read as "idle"), and no staleness.
    assert_eq!(value(&p, "triton_pod_pending_requests"), None, "{p}");
    assert_eq!(value(&p, "triton_pod_queue_wait_ms"), None);
    assert_eq!(value(&p, "triton_pod_request_rate"), None);
    assert_eq!(value(&p, "triton_sidecar_last_page_age_seconds"), None);
    assert_eq!(value(&p, "triton_up"), Some(0.0));
    assert!(value(&p, "triton_sidecar_scrape_errors_total{reason=\"refused\"}").unwrap() >= 1.0);
    assert!(!p.contains("triton_pending_requests{"));
    assert_eq!(get(a.admin, "/readyz").await.0, 503);
    assert_eq!(get(a.admin, "/livez").await.0, 200);
    // Triton comes up.
    t.set(|s| s.metrics = page("m", 5, 0, 0, 2));
    t.revive().await;
    eventually(Duration::from_secs(5), "recovered", || async {
        let p = get(a.metrics, "/metrics").await.1;
        value(&p, "triton_up") == Some(1.0)
            && value(&p, "triton_pending_requests{model=\"m\"}") == Some(2.0)
    })
    .await;
    assert_eq!(get(a.admin, "/readyz").await.0, 200);
}

#[tokio::test]
async fn triton_going_away_drops_model_series_after_the_window() {
    let mut t = FakeTriton::start(Script {
        metrics: page("m", 5, 0, 0, 3),
        ..Default::default()
    })
    .await;
    let a = start_agent(fast_config(&t)).await;
    eventually(Duration::from_secs(5), "model series", || async {
        value(
            &get(a.metrics, "/metrics").await.1,
            "triton_pending_requests{model=\"m\"}",
        ) == Some(3.0)
    })
    .await;
    t.kill().await;
    eventually(Duration::from_secs(2), "triton_up 0", || async {
        value(&get(a.metrics, "/metrics").await.1, "triton_up") == Some(0.0)
    })
    .await;
    // Within the window (2 s) the series stay; after it they go.
    eventually(Duration::from_secs(5), "series gone", || async {
        !get(a.metrics, "/metrics")
            .await
            .1
            .contains("triton_pending_requests{")
    })
    .await;
    let p = metrics_page(&a).await;
    // Past the hold bound the pod series go too; the staleness gauge says why.
    assert_eq!(value(&p, "triton_pod_pending_requests"), None, "{p}");
    assert!(
        value(&p, "triton_sidecar_last_page_age_seconds").unwrap() > 2.0,
        "{p}"
    );
    assert_eq!(get(a.admin, "/readyz").await.0, 503);
}

#[tokio::test]
async fn hanging_triton_hits_the_scrape_timeout() {
    let t = FakeTriton::start(Script {
        metrics: page("m", 5, 0, 0, 3),
        mode: MetricsMode::Hang,
        ..Default::default()
    })
    .await;
    let a = start_agent(fast_config(&t)).await;
    eventually(Duration::from_secs(5), "timeout counted", || async {
        value(
            &get(a.metrics, "/metrics").await.1,
            "triton_sidecar_scrape_errors_total{reason=\"timeout\"}",
        )
        .unwrap_or(0.0)
            >= 1.0
    })
    .await;
    // The agent's own endpoints answer at once while Triton hangs.
    let s = Instant::now();
    assert_eq!(get(a.admin, "/livez").await.0, 200);
    assert_eq!(get(a.metrics, "/metrics").await.0, 200);
    assert!(
        s.elapsed() < Duration::from_millis(250),
        "{:?}",
        s.elapsed()
    );
    // Recovers when Triton answers again.
    t.set(|s| s.mode = MetricsMode::Page);
    eventually(Duration::from_secs(5), "up again", || async {
        value(&get(a.metrics, "/metrics").await.1, "triton_up") == Some(1.0)
    })
    .await;
}

#[tokio::test]
async fn body_over_max_body_is_refused() {
    let t = FakeTriton::start(Script {
        metrics: page("m", 5, 0, 0, 3),
        mode: MetricsMode::Huge(4 << 20),
        ..Default::default()
    })
    .await;
    let mut cfg = fast_config(&t);
    cfg.client.max_body = 1 << 20;
    cfg.client.timeout = Duration::from_secs(2);
    let a = start_agent(cfg).await;
    eventually(Duration::from_secs(5), "too_large counted", || async {
        value(
            &get(a.metrics, "/metrics").await.1,
            "triton_sidecar_scrape_errors_total{reason=\"too_large\"}",
        )
        .unwrap_or(0.0)
            >= 1.0
    })
    .await;
    let p = metrics_page(&a).await;
    assert_eq!(value(&p, "triton_up"), Some(0.0));
    assert!(!p.contains("triton_pending_requests{"));
}

#[tokio::test]
async fn bad_pages_keep_the_agent_serving() {
    let t = FakeTriton::start(Script {
        metrics: page("m", 5, 0, 0, 3),
        ..Default::default()
    })
    .await;
    let a = start_agent(fast_config(&t)).await;
    // (mode, reason label it must be counted under)
    let cases = vec![
        (MetricsMode::Status(500), "http_status"),
        (
            MetricsMode::Raw(b"<html><body>Service Unavailable</body></html>".to_vec()),
            "parse",
        ),
        (
            MetricsMode::Raw(vec![0xff, 0xfe, 0x00, 0x13, 0x37, 0x80]),
            "parse",
        ),
        (MetricsMode::Truncated, "body"),
    ];
    for (mode, reason) in cases {
        let series = format!("triton_sidecar_scrape_errors_total{{reason=\"{reason}\"}}");
        let before = value(&get(a.metrics, "/metrics").await.1, &series).unwrap_or(0.0);
        t.set(|s| s.mode = mode.clone());
        eventually(
            Duration::from_secs(5),
            &format!("{mode:?} counted as {reason}"),
            || async {
                value(&get(a.metrics, "/metrics").await.1, &series).unwrap_or(0.0) > before
            },
        )
        .await;
        assert_eq!(get(a.admin, "/livez").await.0, 200);
        t.set(|s| s.mode = MetricsMode::Page);
        eventually(Duration::from_secs(5), "up again", || async {
            value(&get(a.metrics, "/metrics").await.1, "triton_up") == Some(1.0)
        })
        .await;
    }
}

#[tokio::test]
async fn port_taken_is_a_clear_error() {
    let t = FakeTriton::reserve().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cfg = fast_config(&t);
    cfg.admin_addr = taken.local_addr().unwrap();
    let err = triton_sidecar::Agent::bind(cfg)
        .await
        .err()
        .expect("bind must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("--admin-addr") && msg.contains(&taken.local_addr().unwrap().to_string()),
        "{msg}"
    );
}

/// `promtool check metrics` (Prometheus's own linter) accepts our page.
#[tokio::test]
async fn promtool_accepts_the_page() {
    let t = FakeTriton::start(Script {
        metrics: page("m", 5, 1, 1000, 3),
        ..Default::default()
    })
    .await;
    let a = start_agent(fast_config(&t)).await;
    eventually(Duration::from_secs(5), "model series", || async {
        get(a.metrics, "/metrics")
            .await
            .1
            .contains("triton_queue_wait_ms{")
    })
    .await;
    let p = metrics_page(&a).await;
    let promtool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let mut child = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{promtool} not found ({e}); `make test` installs Debian's prometheus package")
        });
    use std::io::Write;
    child.stdin.take().unwrap().write_all(p.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Exit 0 is clean; 3 means lint findings only (1 would be a format error). The one lint
    // we accept is promtool's style advice against `_ms`: those names are the product's
    // documented interface (milliseconds is what users set SLOs in). Anything else fails.
    let code = out.status.code();
    assert!(
        code == Some(0) || code == Some(3),
        "promtool exit {code:?}: {text}\n{p}"
    );
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (name, complaint) = line.split_once(' ').unwrap_or((line, ""));
        assert!(
            name.ends_with("_ms")
                && complaint == "metric names should not contain abbreviated units",
            "promtool: {line}"
        );
    }
}

/// Triton's SIGTERM handling waits until no HTTP connection is open, so the agent must never
/// keep one idle on Triton's HTTP port (health, readiness, config). Measured in the end-to-end
/// harness: with pooled connections, Triton waited its whole exit timeout and exited 1.
#[tokio::test]
async fn health_polls_never_hold_a_connection_open() {
    let t = FakeTriton::start(Script {
        metrics: page("m", 5, 0, 0, 0),
        ..Default::default()
    })
    .await;
    t.set(|s| {
        s.model_ready.insert("m".into(), 200);
    });
    let mut cfg = fast_config(&t);
    cfg.poller.require_models = vec!["m".into()];
    let _a = start_agent(cfg).await;
    eventually(Duration::from_secs(5), "20 requests to /v2", || async {
        t.script.lock().unwrap().v2_hits >= 20
    })
    .await;
    let s = t.script.lock().unwrap().clone();
    assert_eq!(
        s.v2_keepalive, 0,
        "{} of {} /v2 requests kept the connection open",
        s.v2_keepalive, s.v2_hits
    );
}

/// The ensemble's steps are learned from `/v2/models/<m>/config` and left out of the pod rate.
#[tokio::test]
async fn ensemble_steps_are_learned_from_the_config_endpoint() {
    let both = |n: u64| format!("{}{}", page("ens", n, 0, 0, 0), page("pre", n, 0, 0, 0));
    let t = FakeTriton::start(Script {
        metrics: both(0),
        ..Default::default()
    })
    .await;
    t.set(|s| {
        s.configs.insert("ens".into(), r#"{"name":"ens","platform":"ensemble","ensemble_scheduling":{"step":[{"model_name":"pre","model_version":-1}]}}"#.into());
    });
    let a = start_agent(fast_config(&t)).await;
    let mut n = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1500) {
        n += 10;
        t.set(|s| s.metrics = both(n));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let p = get(a.metrics, "/metrics").await.1;
    let ens = value(&p, "triton_request_rate{model=\"ens\"}").unwrap();
    let pre = value(&p, "triton_request_rate{model=\"pre\"}").unwrap();
    let pod = value(&p, "triton_pod_request_rate").unwrap();
    assert!(ens > 0.0 && pre > 0.0, "{p}");
    // Client-facing requests only: the ensemble's, not ensemble + step (which would be 2x).
    assert_eq!(pod, ens, "{p}");
}

/// Serve the metrics router over a page channel the test controls.
async fn serve_page(
    page: tokio::sync::watch::Receiver<Page>,
) -> (std::net::SocketAddr, tokio_util::sync::DropGuard) {
    use triton_sidecar::http;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(http::server::serve(
        l,
        http::server::Limits::default(),
        http::metrics::handler(page),
        shutdown.clone(),
    ));
    (addr, shutdown.drop_guard())
}

#[tokio::test]
async fn metrics_before_the_first_render_is_503_not_an_empty_page() {
    // Every series of an empty 200 reads as absent; a 503 says "not yet" and fails the scrape
    // (`up` 0 in Prometheus) instead.
    let (tx, rx) = tokio::sync::watch::channel(NOT_RENDERED);
    let (addr, _stop) = serve_page(rx).await;
    let (code, body) = get(addr, "/metrics").await;
    assert_eq!(code, 503, "{body:?}");
    assert!(body.contains("not rendered yet"), "{body:?}");
    let head = client()
        .head(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status().as_u16(), 503);
    tx.send_replace(rendered("triton_up 0\n"));
    assert_eq!(get(addr, "/metrics").await, (200, "triton_up 0\n".into()));
}

#[tokio::test]
async fn the_first_scrape_of_a_fresh_agent_is_a_rendered_page() {
    // The agent renders its first page before it listens, so no scrape ever sees the 503.
    let t = FakeTriton::reserve().await;
    let a = start_agent(fast_config(&t)).await;
    let (code, p) = get(a.metrics, "/metrics").await;
    assert_eq!(code, 200, "{p}");
    assert_eq!(value(&p, "triton_up"), Some(0.0), "{p}");
    assert!(p.contains("triton_sidecar_build_info{version=\""), "{p}");
}

/// A statistics reply for `lin`: 10 executions of batch 1 at 15 ms and 10 of batch 4 at 30 ms,
/// one row per request (50 rows, 50 requests). The fit is a = 10 ms, k = 5 ms.
const LIN_STATS: &str = r#"{"model_stats":[{"name":"lin","version":"1","inference_count":50,"execution_count":20,
 "inference_stats":{"success":{"count":50,"ns":0}},
 "batch_stats":[
  {"batch_size":1,"compute_input":{"count":10,"ns":10000000},"compute_infer":{"count":10,"ns":130000000},"compute_output":{"count":10,"ns":10000000}},
  {"batch_size":4,"compute_input":{"count":10,"ns":0},"compute_infer":{"count":10,"ns":300000000},"compute_output":{"count":10,"ns":0}}]},
 {"name":"ens","version":"1","inference_count":0,"execution_count":0,"inference_stats":{"success":{"count":0,"ns":0}},"batch_stats":[]},
 {"name":"cfg","version":"1","inference_count":0,"execution_count":0,"inference_stats":{"success":{"count":0,"ns":0}},"batch_stats":[]}]}"#;

/// Capacity, utilization and the pod's utilization on /metrics; statistics refused without the
/// access header, then read once the API opens, and the header sent on every /v2 call.
#[tokio::test]
async fn capacity_and_utilization_gauges_and_the_refused_statistics_path() {
    fn three(n: u64) -> String {
        format!(
            "{}{}{}",
            page("lin", n, 0, 0, 0),
            page("ens", n, 0, 0, 0),
            page("cfg", n, 0, 0, 0)
        )
    }
    let t = FakeTriton::start(Script {
        metrics: three(0),
        stats: Some(LIN_STATS.into()),
        restricted: Some(("triton-access-token".into(), "tok".into())),
        ..Default::default()
    })
    .await;
    t.set(|s| {
        // 2 CPU instances, max batch 8.
        s.configs.insert(
            "lin".into(),
            r#"{"name":"lin","max_batch_size":8,"instance_group":[{"kind":"KIND_CPU","count":2,"gpus":[]}]}"#.into(),
        );
        s.configs.insert("ens".into(), r#"{"name":"ens","platform":"ensemble","ensemble_scheduling":{"step":[{"model_name":"lin"}]}}"#.into());
    });
    let mut cfg = fast_config(&t);
    cfg.poller.stats_interval = Duration::from_millis(200);
    cfg.poller.capacity.insert("cfg".into(), 40.0);
    let a = start_agent(cfg.clone()).await;
    let mut n = 0;
    // 1.5 s of load: 2 requests per 100 ms poll, about 20 requests per second per model.
    async fn load_for_1500ms(t: &FakeTriton, n: &mut u64) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(1500) {
            t.set(|s| s.metrics = three(*n));
            *n += 2;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    load_for_1500ms(&t, &mut n).await;
    let p = metrics_page(&a).await;
    assert_eq!(
        value(&p, "triton_sidecar_statistics_refused"),
        Some(1.0),
        "{p}"
    );
    assert!(!p.contains("source=\"estimated\""), "{p}");
    // `cfg` has its configured capacity; `lin` (counted) has none; `ens` is not counted.
    assert_eq!(
        value(
            &p,
            "triton_capacity_rps{model=\"cfg\",source=\"configured\",basis=\"configured\"}"
        ),
        Some(40.0),
        "{p}"
    );
    assert_eq!(
        value(&p, "triton_sidecar_models_without_capacity"),
        Some(1.0),
        "{p}"
    );
    assert!(!p.contains("triton_utilization{model=\"lin\"}"), "{p}");
    let offered = value(&p, "triton_offered_load_rps{model=\"cfg\"}").unwrap();
    assert!((10.0..=40.0).contains(&offered), "offered {offered}: {p}");
    let util = value(&p, "triton_utilization{model=\"cfg\"}").unwrap();
    assert!((util - offered / 40.0).abs() < 1e-9, "{p}");

    // Triton opens the statistics API: the refusal clears and the estimate appears.
    t.set(|s| s.restricted = None);
    load_for_1500ms(&t, &mut n).await;
    let p = metrics_page(&a).await;
    assert_eq!(
        value(&p, "triton_sidecar_statistics_refused"),
        Some(0.0),
        "{p}"
    );
    // Capped at the largest batch seen (4, below max_batch_size 8): 2 instances × 4 /
    // (10 ms + 4 × 5 ms) = 266.7 requests per second, on a fitted line.
    let cap = value(
        &p,
        "triton_capacity_rps{model=\"lin\",source=\"estimated\",basis=\"fitted\"}",
    )
    .unwrap();
    assert!((cap - 8.0 / 0.030).abs() < 1e-6, "{p}");
    assert_eq!(
        value(&p, "triton_capacity_largest_batch{model=\"lin\"}"),
        Some(4.0),
        "{p}"
    );
    // The refused reads were counted by reason, and the good ones date the estimate.
    assert!(
        value(
            &p,
            "triton_sidecar_statistics_errors_total{reason=\"forbidden\"}"
        )
        .unwrap()
            >= 1.0,
        "{p}"
    );
    let age = value(&p, "triton_sidecar_statistics_age_seconds").unwrap();
    assert!((0.0..=1.0).contains(&age), "{p}");
    assert_eq!(
        value(&p, "triton_sidecar_models_without_capacity"),
        Some(0.0),
        "{p}"
    );
    // Pod: lin and cfg, both without GPU placement, add up; the ensemble is left out.
    let u = |m: &str| value(&p, &format!("triton_utilization{{model=\"{m}\"}}")).unwrap();
    let pod = value(&p, "triton_pod_utilization").unwrap();
    assert!((pod - (u("lin") + u("cfg"))).abs() < 1e-9, "{p}");
    // The ensemble has no capacity (no --capacity, no batch statistics of its own): no
    // utilization, and it is not counted as a model without one either.
    assert!(!p.contains("triton_utilization{model=\"ens\"}"), "{p}");
    // The pod's offered load leaves the ensemble step (lin) out.
    let pod_load = value(&p, "triton_pod_offered_load_rps").unwrap();
    let ml = |m: &str| value(&p, &format!("triton_offered_load_rps{{model=\"{m}\"}}")).unwrap();
    assert!((pod_load - (ml("ens") + ml("cfg"))).abs() < 1e-9, "{p}");

    // An agent with the header reads the restricted API, and sends the header on every call.
    // It gets a Triton of its own: a request `a` wrote just before it stopped may reach the fake
    // after the count was reset, and would be charged to `b`.
    let _ = a.signal.send(());
    let stopped = tokio::time::timeout(Duration::from_secs(10), a.join).await;
    assert!(stopped.is_ok(), "the first agent did not stop within 10 s");
    let t2 = FakeTriton::start(Script {
        metrics: three(n),
        stats: Some(LIN_STATS.into()),
        restricted: Some(("triton-access-token".into(), "tok".into())),
        ..Default::default()
    })
    .await;
    let configs = t.script.lock().unwrap().configs.clone();
    t2.set(|s| s.configs = configs);
    let mut cfg2 = fast_config(&t2);
    cfg2.poller.stats_interval = cfg.poller.stats_interval;
    cfg2.poller.capacity = cfg.poller.capacity.clone();
    cfg2.client.api_header =
        Some(triton_sidecar::config::parse_api_header("triton-access-token=tok").unwrap());
    let b = start_agent(cfg2).await;
    eventually(
        Duration::from_secs(5),
        "estimate with the header",
        || async {
            metrics_page(&b).await.contains(
                "triton_capacity_rps{model=\"lin\",source=\"estimated\",basis=\"fitted\"}",
            )
        },
    )
    .await;
    let p = metrics_page(&b).await;
    assert_eq!(
        value(&p, "triton_sidecar_statistics_refused"),
        Some(0.0),
        "{p}"
    );
    let s = t2.script.lock().unwrap().clone();
    assert!(s.v2_hits > 0);
    assert_eq!(
        s.v2_with_header, s.v2_hits,
        "every /v2 call carries the header"
    );
}

/// The statistics read runs off the poll path: a `/v2/models/stats` that answers only after the
/// scrape timeout, asked on every poll, delays no poll. A change on the page reaches `/metrics`
/// within a few poll intervals, and every failed read is counted as a timeout. (Read inline, as
/// before issue 20, each poll waited the whole 300 ms timeout for it.)
/// Once `run` has returned, the agent asks Triton nothing more: its workers end with it, also
/// a config worker part-way through a long list of slow configs (20 models at 200 ms each).
#[tokio::test]
async fn a_stopped_agent_asks_triton_nothing_more() {
    let metrics: String = (0..20)
        .map(|i| page(&format!("m{i}"), 1, 0, 0, 0))
        .collect();
    let t = FakeTriton::start(Script {
        metrics,
        config_delay: Some(Duration::from_millis(200)),
        ..Default::default()
    })
    .await;
    let a = start_agent(fast_config(&t)).await;
    // The config worker is under way: the first page asked for all 20 configs (4 s of reads).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = a.signal.send(());
    let stopped = tokio::time::timeout(Duration::from_secs(10), a.join).await;
    assert!(stopped.is_ok(), "the agent did not stop within 10 s");
    // A request written just before the exit is counted once it is read: let it land.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = t.script.lock().unwrap().v2_hits;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = t.script.lock().unwrap().v2_hits;
    assert_eq!(after, before, "requests to Triton after the agent stopped");
}

#[tokio::test]
async fn a_hanging_statistics_api_delays_no_poll() {
    let t = FakeTriton::start(Script {
        metrics: page("m", 10, 0, 0, 1),
        stats: Some(LIN_STATS.into()),
        stats_delay: Some(Duration::from_secs(60)),
        ..Default::default()
    })
    .await;
    let mut cfg = fast_config(&t);
    cfg.poller.stats_interval = cfg.poller.poll_interval;
    cfg.poller.stats_max_age = Duration::from_secs(1);
    let a = start_agent(cfg).await;
    eventually(Duration::from_secs(5), "first page", || async {
        metrics_page(&a)
            .await
            .contains("triton_pending_requests{model=\"m\"} 1")
    })
    .await;
    // Ten changes, one every 100 ms poll: with a poll held 300 ms by each read, at most a third
    // of them could be seen.
    let mut seen = std::collections::BTreeSet::new();
    for pending in 2..12u64 {
        t.set(|s| s.metrics = page("m", 10, 0, 0, pending));
        let deadline = Instant::now() + Duration::from_millis(250);
        while Instant::now() < deadline {
            let p = metrics_page(&a).await;
            if value(&p, "triton_pending_requests{model=\"m\"}") == Some(pending as f64) {
                seen.insert(pending);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert!(seen.len() >= 8, "changes seen within 250 ms: {seen:?}");
    eventually(Duration::from_secs(5), "timeouts counted", || async {
        value(
            &metrics_page(&a).await,
            "triton_sidecar_statistics_errors_total{reason=\"timeout\"}",
        )
        .is_some_and(|n| n >= 2.0)
    })
    .await;
}
