//! Drain against the scripted fake Triton. Lower bounds are strict (never drained before
//! min-drain, never while pending > 0); upper bounds have slack for a loaded CI machine.
//! Timings here: min-drain 1 s, quiet 400 ms, drain poll 50 ms, timeout 5 s (support::fast_config).
// Test code: a panic here is a failed test, not a crashed agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

async fn status(a: &RunningAgent) -> serde_json::Value {
    serde_json::from_str(&get(a.admin, "/drain/status").await.1).expect("status is JSON")
}

#[tokio::test]
async fn idle_pod_drains_after_min_drain_plus_quiet() {
    let t = FakeTriton::start(Script {
        metrics: page("m", 10, 0, 0, 0),
        ..Default::default()
    })
    .await;
    let a = start_agent(fast_config(&t)).await;
    eventually(Duration::from_secs(5), "ready", || async {
        get(a.admin, "/readyz").await.0 == 200
    })
    .await;
    let start = Instant::now();
    let waiter = tokio::spawn(get(a.admin, "/wait-for-drain"));
    // The flip is immediate.
    eventually(Duration::from_millis(500), "503 draining", || async {
        get(a.admin, "/readyz").await == (503, "draining\n".into())
    })
    .await;
    let p = get(a.metrics, "/metrics").await.1;
    assert_eq!(value(&p, "triton_ready"), Some(0.0));
    assert_eq!(value(&p, "triton_draining"), Some(1.0));
    let st = status(&a).await;
    assert_eq!(st["state"], "draining");
    assert_eq!(st["trigger"], "prestop-http");
    assert_eq!(st["timeout_ms"], 5000);
    let (code, body) = waiter.await.unwrap();
    let took = start.elapsed();
    assert_eq!(code, 200);
    assert!(
        body.starts_with("drained: result=idle trigger=prestop-http seconds="),
        "{body}"
    );
    assert!(
        took >= Duration::from_millis(1000),
        "never before min-drain: {took:?}"
    );
    assert!(
        took < Duration::from_millis(3000),
        "idle pod drains in about min-drain: {took:?}"
    );
    let p = get(a.metrics, "/metrics").await.1;
    assert_eq!(
        value(
            &p,
            "triton_sidecar_drains_total{trigger=\"prestop-http\",result=\"idle\"}"
        ),
        Some(1.0),
        "{p}"
    );
    assert!(value(&p, "triton_sidecar_drain_seconds").unwrap() >= 1.0);
    assert_eq!(status(&a).await["state"], "drained");
    // Idempotent: a second hook returns at once with the same answer.
    let s = Instant::now();
    let (code2, body2) = get(a.admin, "/wait-for-drain").await;
    assert_eq!((code2, &body2), (200, &body));
    assert!(s.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn backlog_drains_only_after_pending_zero_and_counters_stop() {
    let t = FakeTriton::start(Script {
        metrics: page("m", 10, 0, 0, 5),
        ..Default::default()
    })
    .await;
    let a = start_agent(fast_config(&t)).await;
    eventually(Duration::from_secs(5), "ready", || async {
        get(a.admin, "/readyz").await.0 == 200
    })
    .await;
    let start = Instant::now();
    assert_eq!(post(a.admin, "/drain").await.0, 202);
    // Work goes on for 2 s: pending 5, counters moving.
    let mut n = 10;
    while start.elapsed() < Duration::from_secs(2) {
        n += 1;
        t.set(|s| s.metrics = page("m", n, 0, 0, 5));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            status(&a).await["state"],
            "draining",
            "never drained while pending > 0"
        );
    }
    // Pending reaches 0, but requests still finish for 500 ms.
    let zero_at = Instant::now();
    while zero_at.elapsed() < Duration::from_millis(500) {
        n += 1;
        t.set(|s| s.metrics = page("m", n, 0, 0, 0));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            status(&a).await["state"],
            "draining",
            "never drained while counters move"
        );
    }
    let stopped = Instant::now();
    eventually(Duration::from_secs(5), "drained", || async {
        status(&a).await["state"] == "drained"
    })
    .await;
    let quiet = stopped.elapsed();
    assert!(
        quiet >= Duration::from_millis(400),
        "quiet period respected: {quiet:?}"
    );
    let st = status(&a).await;
    assert_eq!(st["result"], "idle");
    assert_eq!(st["trigger"], "post");
}

#[tokio::test]
async fn late_request_restarts_quiet() {
    let t = FakeTriton::start(Script {
        metrics: page("m", 10, 0, 0, 0),
        ..Default::default()
    })
    .await;
    let a = start_agent(fast_config(&t)).await;
    eventually(Duration::from_secs(5), "ready", || async {
        get(a.admin, "/readyz").await.0 == 200
    })
    .await;
    let start = Instant::now();
    let waiter = tokio::spawn(get(a.admin, "/wait-for-drain"));
    // A late request (endpoint propagation lag) completes at 900 ms: just before min-drain.
    tokio::time::sleep(Duration::from_millis(900)).await;
    t.set(|s| s.metrics = page("m", 11, 0, 0, 0));
    let late = start.elapsed();
    let (code, body) = waiter.await.unwrap();
    let took = start.elapsed();
    assert_eq!(code, 200);
    // Not at min-drain (1 s): the quiet timer restarted at the late request.
    assert!(
        took >= late + Duration::from_millis(400),
        "{took:?} vs late {late:?}"
    );
    assert!(body.contains("requests_during_drain=1"), "{body}");
}

/// A ready agent in front of a Triton whose 3 pending requests never go, so a drain runs to its
/// 2 s timeout.
async fn ready_agent_that_never_idles() -> (FakeTriton, RunningAgent) {
    let t = FakeTriton::start(Script {
        metrics: page("m", 10, 0, 0, 3),
        ..Default::default()
    })
    .await;
    let mut cfg = fast_config(&t);
    cfg.drain.timeout = Duration::from_secs(2);
    let a = start_agent(cfg).await;
    eventually(Duration::from_secs(5), "ready", || async {
        get(a.admin, "/readyz").await.0 == 200
    })
    .await;
    (t, a)
}

#[tokio::test]
async fn timeout_path() {
    let (_t, a) = ready_agent_that_never_idles().await;
    let start = Instant::now();
    let (code, body) = get(a.admin, "/wait-for-drain").await;
    let took = start.elapsed();
    assert_eq!(code, 200);
    assert!(body.contains("result=timeout"), "{body}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "{took:?}"
    );
    let p = get(a.metrics, "/metrics").await.1;
    assert_eq!(
        value(
            &p,
            "triton_sidecar_drains_total{trigger=\"prestop-http\",result=\"timeout\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn triton_vanishing_ends_the_drain_but_slowness_does_not() {
    // Slow: answers after 500 ms, past the 300 ms scrape timeout. Must not count as gone.
    let t = FakeTriton::start(Script {
        metrics: page("m", 10, 0, 0, 0),
        ..Default::default()
    })
    .await;
    let mut cfg = fast_config(&t);
    cfg.drain.timeout = Duration::from_secs(3);
    let a = start_agent(cfg).await;
    eventually(Duration::from_secs(5), "ready", || async {
        get(a.admin, "/readyz").await.0 == 200
    })
    .await;
    t.set(|s| s.mode = MetricsMode::Delay(Duration::from_millis(500)));
    let (code, body) = get(a.admin, "/wait-for-drain").await;
    assert_eq!(code, 200);
    assert!(
        body.contains("result=timeout"),
        "a slow Triton is not gone: {body}"
    );

    // Vanishing: refused three times in a row.
    let mut t2 = FakeTriton::start(Script {
        metrics: page("m", 10, 0, 0, 4),
        ..Default::default()
    })
    .await;
    let a2 = start_agent(fast_config(&t2)).await;
    eventually(Duration::from_secs(5), "ready", || async {
        get(a2.admin, "/readyz").await.0 == 200
    })
    .await;
    let waiter = tokio::spawn(get(a2.admin, "/wait-for-drain"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = Instant::now();
    t2.kill().await;
    let (code, body) = waiter.await.unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("result=triton-gone"), "{body}");
    // Three polls at 50 ms, plus slack.
    assert!(
        killed.elapsed() < Duration::from_secs(2),
        "{:?}",
        killed.elapsed()
    );
}

#[tokio::test]
async fn cancel_returns_to_serving_unless_terminating() {
    let t = FakeTriton::start(Script {
        metrics: page("m", 10, 0, 0, 2),
        ..Default::default()
    })
    .await;
    let a = start_agent(fast_config(&t)).await;
    eventually(Duration::from_secs(5), "ready", || async {
        get(a.admin, "/readyz").await.0 == 200
    })
    .await;
    assert_eq!(post(a.admin, "/drain").await.0, 202);
    assert_eq!(get(a.admin, "/readyz").await.0, 503);
    assert_eq!(post(a.admin, "/drain/cancel").await.0, 200);
    assert_eq!(get(a.admin, "/readyz").await, (200, "ready\n".into()));
    let p = get(a.metrics, "/metrics").await.1;
    assert_eq!(
        value(
            &p,
            "triton_sidecar_drains_total{trigger=\"post\",result=\"cancelled\"}"
        ),
        Some(1.0)
    );
    assert_eq!(value(&p, "triton_draining"), Some(0.0));
    // A signal: terminating, so cancel is refused.
    a.signal.send(()).unwrap();
    eventually(Duration::from_secs(2), "draining", || async {
        status(&a).await["state"] == "draining"
    })
    .await;
    assert_eq!(post(a.admin, "/drain/cancel").await.0, 409);
    assert_eq!(get(a.admin, "/readyz").await.0, 503);
}

#[tokio::test]
async fn fifty_waiters_released_together_and_probes_stay_fast() {
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
    let done_at = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for _ in 0..50 {
        let d = done_at.clone();
        let admin = a.admin;
        handles.push(tokio::spawn(async move {
            let r = get(admin, "/wait-for-drain").await;
            d.lock().unwrap().push(Instant::now());
            r
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // While 50 calls are held open, probes answer at once.
    for path in ["/livez", "/readyz", "/drain/status"] {
        let s = Instant::now();
        get(a.admin, path).await;
        assert!(
            s.elapsed() < Duration::from_millis(200),
            "{path}: {:?}",
            s.elapsed()
        );
    }
    let s = Instant::now();
    assert_eq!(get(a.metrics, "/metrics").await.0, 200);
    assert!(s.elapsed() < Duration::from_millis(200));
    t.set(|s| s.metrics = page("m", 11, 0, 0, 0));
    let mut bodies = Vec::new();
    for h in handles {
        bodies.push(h.await.unwrap());
    }
    assert!(
        bodies.iter().all(|(c, b)| *c == 200 && b == &bodies[0].1),
        "all get the one drain's answer"
    );
    let times = done_at.lock().unwrap().clone();
    let spread = *times.iter().max().unwrap() - *times.iter().min().unwrap();
    assert!(
        spread < Duration::from_millis(500),
        "released together: spread {spread:?}"
    );
}

#[tokio::test]
async fn triton_restart_returns_to_serving() {
    // Liveness failure: the kubelet runs the preStop hook, then restarts only Triton.
    let mut t = FakeTriton::start(Script {
        metrics: page("m", 100, 0, 0, 0),
        ..Default::default()
    })
    .await;
    let a = start_agent(fast_config(&t)).await;
    eventually(Duration::from_secs(5), "ready", || async {
        get(a.admin, "/readyz").await.0 == 200
    })
    .await;
    let waiter = tokio::spawn(get(a.admin, "/wait-for-drain"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    t.kill().await;
    let (_, body) = waiter.await.unwrap();
    assert!(body.contains("result=triton-gone"), "{body}");
    assert_eq!(get(a.admin, "/readyz").await.0, 503);
    // The new process: counters from 0, not ready at first.
    t.set(|s| {
        s.metrics = page("m", 0, 0, 0, 0);
        s.ready = 503;
    });
    t.revive().await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        get(a.admin, "/readyz").await.0,
        503,
        "not before the new Triton is ready"
    );
    t.set(|s| s.ready = 200);
    eventually(Duration::from_secs(3), "back to serving", || async {
        get(a.admin, "/readyz").await == (200, "ready\n".into())
    })
    .await;
    assert_eq!(status(&a).await["state"], "serving");
}

/// The drain-elapsed gauge is what the near-timeout alert reads while the pod is still scraped:
/// 0 when serving, growing with the drain, back to 0 once it ended; the timeout beside it.
#[tokio::test]
async fn drain_elapsed_gauge_grows_while_draining() {
    let (_t, a) = ready_agent_that_never_idles().await;
    let p = get(a.metrics, "/metrics").await.1;
    assert_eq!(
        value(&p, "triton_sidecar_drain_elapsed_seconds"),
        Some(0.0),
        "{p}"
    );
    assert_eq!(
        value(&p, "triton_sidecar_drain_timeout_seconds"),
        Some(2.0),
        "{p}"
    );

    let start = Instant::now();
    let waiter = tokio::spawn(get(a.admin, "/wait-for-drain"));
    let mut seen = Vec::new();
    for at in [Duration::from_millis(600), Duration::from_millis(1500)] {
        tokio::time::sleep(at.saturating_sub(start.elapsed())).await;
        let p = get(a.metrics, "/metrics").await.1;
        let v = value(&p, "triton_sidecar_drain_elapsed_seconds").expect("gauge present");
        let wall = start.elapsed().as_secs_f64();
        // Never ahead of the wall clock; behind it by at most one re-render (the 1 s tick, or
        // a poll every 50 ms here) plus scheduling slack on a loaded machine.
        assert!(
            v <= wall + 0.05 && v >= wall - 1.3,
            "gauge {v} at {wall:.2}s"
        );
        seen.push(v);
    }
    assert!(
        seen[1] > seen[0],
        "the gauge grows while draining: {seen:?}"
    );
    let (code, body) = waiter.await.unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("result=timeout"), "{body}");
    eventually(Duration::from_secs(2), "gauge back to 0", || async {
        let p = get(a.metrics, "/metrics").await.1;
        value(&p, "triton_sidecar_drain_elapsed_seconds") == Some(0.0)
    })
    .await;
}
