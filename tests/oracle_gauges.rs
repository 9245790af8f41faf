//! Every published gauge against a request-level ground truth (see `tests/oracle/`).
//!
//! The production poller and derivation run over a simulated Triton 2.51 (pages rendered from
//! seeded request traces) and a simulated clock. The invariant, for every poll: the published
//! wait never exceeds the larger of the mean wait of the requests completed in the window and
//! the age of the oldest pending request plus one poll interval, never falls below that mean,
//! and no gauge rises because a scrape failed. Pending, rates and compute equal the truth.
// Test code: a panic here is a failed test, not a crashed agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)] // shared with examples/oracle.rs, which uses other parts
mod oracle;

use oracle::gen::{generate, Knobs};
use proptest::prelude::*;

fn knobs() -> impl Strategy<Value = Knobs> {
    (
        any::<u64>(),
        1usize..=3,
        any::<bool>(),
        8usize..40,
        (any::<bool>(), any::<bool>(), any::<bool>()),
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(
                seed,
                plain,
                ensemble,
                polls,
                (failing, cache, bounded),
                (restart, reload, net_faults, idle),
            )| Knobs {
                seed,
                plain,
                ensemble,
                polls,
                failing,
                cache,
                bounded,
                restart,
                reload,
                net_faults,
                idle,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("ORACLE_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(3000),
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn published_gauges_match_the_request_level_truth(k in knobs()) {
        let trace = generate(&k);
        if let Err(e) = oracle::run_and_check(trace) {
            prop_assert!(false, "{k:?}\n{e}");
        }
    }
}

/// `ORACLE_DEBUG_SEED=... cargo test --test oracle_gauges debug_one -- --ignored --nocapture`
/// prints one trace's polls, pages and observations (the knobs come from ORACLE_DEBUG_KNOBS,
/// "plain,ensemble,polls,failing,cache,bounded,restart,reload,net_faults,idle" as 0/1/numbers).
#[test]
#[ignore]
fn debug_one() {
    let seed: u64 = std::env::var("ORACLE_DEBUG_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let k: Vec<usize> = std::env::var("ORACLE_DEBUG_KNOBS")
        .unwrap_or_else(|_| "1,0,12,0,0,0,0,0,0,0".into())
        .split(',')
        .filter_map(|x| x.trim().parse().ok())
        .collect();
    let knobs = Knobs {
        seed,
        plain: k[0],
        ensemble: k[1] == 1,
        polls: k[2],
        failing: k[3] == 1,
        cache: k[4] == 1,
        bounded: k[5] == 1,
        restart: k[6] == 1,
        reload: k[7] == 1,
        net_faults: k[8] == 1,
        idle: k[9] == 1,
    };
    let trace = generate(&knobs);
    println!(
        "models {:#?}\nevents {:?}\nwindow {}",
        trace.models, trace.events, trace.window
    );
    let sim = std::sync::Arc::new(trace.simulate());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let (obs, states) = rt.block_on(oracle::drive(sim.clone()));
    for (i, ((t, net), o)) in sim.trace.polls.iter().zip(&obs).enumerate() {
        println!(
            "--- poll {i} t={t} {net:?} up={} err={:?}\n{o:?}",
            sim.trace.up(*t),
            states[i].last_error
        );
    }
    println!("{:?}", oracle::truth::check(&sim, &obs));
}

// ------------------------------------------------------------------------------------------
// Named cases: the sequences of issue 12, each a deterministic trace through the production
// poller, checked against the request-level truth (and, where it says more, by name).

use oracle::sim::{Event, Kind, ModelSpec, Net, RequestSpec, Trace};
use std::sync::Arc;

fn model(name: &str, cost: f64) -> ModelSpec {
    ModelSpec {
        name: name.into(),
        kind: Kind::Plain,
        instances: 1,
        max_batch: 1,
        cost_a: cost,
        cost_k: 0.0,
        max_queue: None,
    }
}

fn req(model: usize, arrival: f64) -> RequestSpec {
    RequestSpec {
        model,
        arrival,
        fail: false,
        cache_hit: false,
    }
}

fn trace(
    models: Vec<ModelSpec>,
    mut requests: Vec<RequestSpec>,
    polls: usize,
    window: f64,
) -> Trace {
    requests.sort_by(|a, b| a.arrival.total_cmp(&b.arrival));
    Trace {
        seed: 0,
        duration: polls as f64,
        models,
        requests,
        events: Vec::new(),
        polls: oracle::sim::clean_polls(polls),
        poll_interval: 1.0,
        window,
        scrape_timeout: 0.8,
    }
}

/// Run a trace; return the observations after checking them against the truth.
fn checked(tr: Trace) -> Vec<oracle::truth::Observed> {
    let sim = Arc::new(tr.simulate());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let (obs, _) = rt.block_on(oracle::drive(sim.clone()));
    if let Err(e) = oracle::truth::check(&sim, &obs) {
        panic!("{e}");
    }
    obs
}

/// Sequence 1: Heavy load gives a wait of seconds; then the pod is idle for longer than the window, and
///    one request is seen pending (behind another) before it completes. Its wait is its own
///    (under a second), not the old one. (main: 5,071 ms in the run.)
#[test]
fn case1_a_stale_wait_does_not_come_back_after_idle() {
    let mut rs: Vec<RequestSpec> = (0..30).map(|i| req(0, 0.1 + i as f64 * 0.1)).collect();
    rs.push(req(0, 20.8));
    rs.push(req(0, 20.85));
    let obs = checked(trace(vec![model("m", 0.4)], rs, 24, 5.0));
    // During the load the wait really was seconds.
    assert!(obs[7].models["m"].queue_wait_ms > 3000.0, "{:?}", obs[7]);
    // At t=21 one request waits behind another, 0.15 s old.
    let w = obs[20].models["m"].queue_wait_ms;
    assert_eq!(obs[20].models["m"].pending, 1.0);
    assert!(w <= 1400.0, "stale wait came back: {w} ms");
    assert!(obs[20].pod.unwrap().queue_wait_ms <= 1400.0);
}

/// Sequence 2: A backend that fails every request: executions are progress, so the queue's wait does not
///    climb 1000 ms per second. (main: 19,543 ms in the run.)
#[test]
fn case2_failing_executions_are_progress_not_a_stall() {
    let mut rs = Vec::new();
    for k in 1..=20 {
        for j in 0..2 {
            rs.push(RequestSpec {
                fail: true,
                ..req(0, k as f64 - 0.1 + j as f64 * 0.01)
            });
        }
    }
    let obs = checked(trace(vec![model("broken", 0.3)], rs, 20, 10.0));
    for (k, o) in obs.iter().enumerate() {
        let m = o.models["broken"];
        assert!(m.queue_wait_ms <= 1000.0, "poll {k}: {m:?}");
    }
    assert!(obs[10].models["broken"].failure_rate > 1.5);
}

/// Sequence 3: A stall seen on the last good page must not keep growing while scrapes fail; after the
///    hold bound the series are absent, not 0.
#[test]
fn case3_a_lost_connection_does_not_extend_a_stall() {
    // One 30 s execution; requests queue behind it from t=0.5.
    let mut rs = vec![req(0, 0.2)];
    rs.extend((0..5).map(|i| req(0, 0.5 + i as f64 * 0.1)));
    let mut tr = trace(vec![model("m", 30.0)], rs, 20, 5.0);
    for k in 6..20 {
        tr.polls[k].1 = Net::Timeout;
    }
    let obs = checked(tr);
    let held = obs[5].models["m"].queue_wait_ms;
    assert!(held >= 4000.0, "the stall shows before the outage: {held}");
    for o in &obs[6..10] {
        assert_eq!(o.models["m"].queue_wait_ms, held, "held, not grown");
    }
    assert!(
        obs[19].pod.is_none() && obs[19].models.is_empty(),
        "absent after the bound"
    );
    assert!(obs[19].last_good_age.unwrap() > 5.0);
}

/// Sequence 4a: One model's counters restarting (a reload) leaves every other model's rate alone.
/// (main: the other model's rate read 0.)
#[test]
fn case4a_one_models_reset_is_its_own() {
    let rs: Vec<RequestSpec> = (0..200)
        .flat_map(|i| [req(0, 0.05 + i as f64 * 0.1), req(1, 0.07 + i as f64 * 0.1)])
        .collect();
    let mut tr = trace(vec![model("a", 0.01), model("b", 0.01)], rs, 20, 5.0);
    tr.events.push(Event::Reload {
        model: 1,
        at: 10.3,
        gone: 0.5,
    });
    let obs = checked(tr);
    for (k, o) in obs.iter().enumerate().skip(2) {
        assert!(
            (o.models["a"].request_rate - 10.0).abs() < 1.5,
            "poll {k}: {:?}",
            o.models["a"]
        );
    }
}

/// Sequence 4b: A Triton restart whose first pages list no models (explicit model control): old and
/// new counters never mix.
#[test]
fn case4b_a_restart_listing_no_models_first_starts_afresh() {
    let mut rs: Vec<RequestSpec> = (0..8).map(|i| req(0, 0.5 + i as f64)).collect();
    rs.extend((0..150).map(|i| req(0, 12.0 + i as f64 * 0.05)));
    let mut tr = trace(vec![model("m", 0.01)], rs, 20, 10.0);
    tr.events.push(Event::Restart {
        at: 8.5,
        down: 1.2,
        load: 2.5,
    });
    checked(tr);
}

/// Sequence 5: A page's time is when its body was read, not after the health probes: probes that take
///    0 or 0.9 s in turn must not skew the rate.
#[test]
fn case5_samples_are_timestamped_when_the_body_is_read() {
    let rs: Vec<RequestSpec> = (0..400).map(|i| req(0, 0.01 + i as f64 * 0.05)).collect();
    let mut tr = trace(vec![model("m", 0.005)], rs, 20, 3.0);
    for (k, p) in tr.polls.iter_mut().enumerate() {
        p.1 = Net::Ok {
            latency: 0.0,
            health: if k % 2 == 0 { 0.0 } else { 0.9 },
        };
    }
    let obs = checked(tr);
    for o in &obs[4..] {
        assert!((o.models["m"].request_rate - 20.0).abs() < 1.0, "{o:?}");
    }
}

/// Sequence 8: With the response cache on, compute per request counts only the requests that executed.
#[test]
fn case8_compute_leaves_out_cache_hits() {
    let rs: Vec<RequestSpec> = (0..200)
        .map(|i| RequestSpec {
            cache_hit: i % 2 == 0,
            ..req(0, 0.01 + i as f64 * 0.1)
        })
        .collect();
    let obs = checked(trace(vec![model("m", 0.05)], rs, 20, 5.0));
    assert!(
        (obs[10].models["m"].compute_ms - 50.0).abs() < 0.01,
        "{:?}",
        obs[10]
    );
}

/// Sequence 11b: The pod's queue wait is the wait an ensemble's client sees: its steps' waits added up,
/// per ensemble request, not diluted by the ensemble's own near-zero queue and count.
#[test]
fn case11b_pod_wait_is_what_an_ensemble_client_sees() {
    let step = |n: &str, c: f64| ModelSpec {
        kind: Kind::Step,
        ..model(n, c)
    };
    let mut models = vec![step("pre", 0.08), step("infer", 0.09)];
    models.push(ModelSpec {
        kind: Kind::Ensemble(vec![0, 1]),
        ..model("ens", 0.0)
    });
    // Pairs of requests 0.2 s apart: the second of each pair queues in both steps.
    let rs: Vec<RequestSpec> = (0..150)
        .flat_map(|i| {
            [
                req(2, 0.03 + i as f64 * 0.2),
                req(2, 0.031 + i as f64 * 0.2),
            ]
        })
        .collect();
    let tr = trace(models, rs, 30, 10.0);
    let sim = tr.simulate();
    let obs = checked(tr);
    // Truth: mean over ensemble requests completed in (t_old, t_new] of Σ step queue waits.
    let (t_old, t_new) = (19.0, 29.0);
    let mut waits = Vec::new();
    for e in sim
        .jobs
        .iter()
        .filter(|j| j.model == 2 && j.end.is_some_and(|x| x > t_old && x <= t_new))
    {
        let w: f64 = sim
            .jobs
            .iter()
            .filter(|j| j.request == e.request && j.model != 2)
            .map(|j| j.queue())
            .sum();
        waits.push(w * 1000.0);
    }
    let perceived = waits.iter().sum::<f64>() / waits.len() as f64;
    let pod = obs[28].pod.unwrap().queue_wait_ms;
    assert!(perceived > 20.0, "the steps do queue: {perceived}");
    assert!(
        (pod - perceived).abs() <= 0.1 * perceived,
        "pod {pod} ms vs perceived {perceived} ms"
    );
}

/// Sequence 6, readiness hysteresis: a health probe that times out (a busy Triton) keeps a ready pod
/// ready for up to HEALTH_TIMEOUTS_TOLERATED polls in a row; more turn it not ready. An answer
/// resets the count. (main: 503 at the first timeout.)
#[test]
fn case6_one_slow_health_probe_keeps_the_pod_in_rotation() {
    use triton_sidecar::poller::HEALTH_TIMEOUTS_TOLERATED;
    let rs: Vec<RequestSpec> = (0..100).map(|i| req(0, 0.05 + i as f64 * 0.1)).collect();
    let mut tr = trace(vec![model("m", 0.01)], rs, 12, 5.0);
    tr.polls[2].1 = Net::HealthTimeout { latency: 0.0 };
    let n = HEALTH_TIMEOUTS_TOLERATED as usize;
    for k in 5..5 + n + 1 {
        tr.polls[k].1 = Net::HealthTimeout { latency: 0.0 };
    }
    let sim = Arc::new(tr.simulate());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let (_, states) = rt.block_on(oracle::drive(sim));
    let ready: Vec<bool> = states.iter().map(|s| s.health.is_ready()).collect();
    assert!(ready[2], "one timeout: still ready {ready:?}");
    assert!(
        ready[5..5 + n].iter().all(|r| *r),
        "{n} timeouts in a row: still ready {ready:?}"
    );
    assert!(
        !ready[5 + n],
        "the {}th timeout in a row: not ready {ready:?}",
        n + 1
    );
    assert!(ready[5 + n + 1], "an answer: ready again {ready:?}");
}

fn page_trtllm(
    success: u64,
    iterations: u64,
    waiting: u64,
) -> Arc<triton_sidecar::triton::snapshot::Snapshot> {
    let body = format!(
        "nv_inference_request_success{{model=\"llm\",version=\"1\"}} {success}\n\
         nv_inference_exec_count{{model=\"llm\",version=\"1\"}} {success}\n\
         nv_inference_queue_duration_us{{model=\"llm\",version=\"1\"}} {}\n\
         nv_inference_pending_request_count{{model=\"llm\",version=\"1\"}} 0\n\
         nv_trt_llm_request_metrics{{model=\"llm\",request_type=\"waiting\",version=\"1\"}} {waiting}\n\
         nv_trt_llm_request_metrics{{model=\"llm\",request_type=\"active\",version=\"1\"}} 8\n\
         nv_trt_llm_general_metrics{{general_type=\"iteration_counter\",model=\"llm\",version=\"1\"}} {iterations}\n",
        success * 1000
    );
    Arc::new(triton_sidecar::triton::snapshot::Snapshot::parse(&body).expect("page"))
}

/// Sequence 11a: TensorRT-LLM streams complete only at their end: while iterations run, requests
/// waiting in the backend's queue are not a stall. (main: +1000 ms per second.) When the
/// iterations stop too, it is one.
#[test]
fn case11a_streams_in_progress_are_not_a_stall() {
    use std::time::Duration;
    use triton_sidecar::derive::{derive, Context, Window};
    let mut w = Window::new(Duration::from_secs(10));
    let none = std::collections::HashSet::new();
    for s in 0..8u64 {
        w.push(Duration::from_secs(s), page_trtllm(10, 100 + 50 * s, 3));
        let d = derive(&w, Duration::from_secs(s), &Context::steps(&none));
        assert_eq!(d.models["llm"].pending, 3.0);
        assert!(
            d.models["llm"].queue_wait_ms <= 1.0,
            "t={s}: {:?}",
            d.models["llm"]
        );
    }
    for s in 8..12u64 {
        w.push(Duration::from_secs(s), page_trtllm(10, 450, 3));
    }
    let d = derive(&w, Duration::from_secs(11), &Context::steps(&none));
    assert_eq!(
        d.models["llm"].queue_wait_ms, 4000.0,
        "iterations stopped at t=7: a 4 s stall"
    );
}

/// Sequence 10: a NaN on a model's first page: the model is left out for that page, not published from
/// partial counters (main: success NaN dropped, so the model showed 0 requests and its other
/// counters).
#[test]
fn nan_on_a_models_first_page_leaves_it_out() {
    use std::time::Duration;
    use triton_sidecar::derive::{derive, Window};
    use triton_sidecar::triton::snapshot::Snapshot;
    let body = |s: &str| {
        format!(
            "nv_inference_request_success{{model=\"m\",version=\"1\"}} {s}\n\
             nv_inference_pending_request_count{{model=\"m\",version=\"1\"}} 4\n"
        )
    };
    let mut w = Window::new(Duration::from_secs(10));
    w.push(
        Duration::from_secs(1),
        Arc::new(Snapshot::parse(&body("NaN")).expect("page")),
    );
    let d = derive(&w, Duration::from_secs(1), &Default::default());
    assert!(!d.models.contains_key("m"), "{d:?}");
    w.push(
        Duration::from_secs(2),
        Arc::new(Snapshot::parse(&body("7")).expect("page")),
    );
    let d = derive(&w, Duration::from_secs(2), &Default::default());
    assert_eq!(d.models["m"].pending, 4.0);
}

/// A Triton with scripted pages and an ensemble config that changes.
#[derive(Clone)]
struct Scripted {
    page: Arc<std::sync::Mutex<String>>,
    steps: Arc<std::sync::Mutex<Vec<String>>>,
}

impl triton_sidecar::triton::transport::Transport for Scripted {
    async fn metrics(&self) -> Result<String, triton_sidecar::triton::client::ScrapeError> {
        Ok(self.page.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }
    async fn server_ready(&self) -> Result<bool, triton_sidecar::triton::client::ScrapeError> {
        Ok(true)
    }
    async fn model_ready(
        &self,
        _: &str,
    ) -> Result<bool, triton_sidecar::triton::client::ScrapeError> {
        Ok(true)
    }
    async fn model_config(
        &self,
        m: &str,
    ) -> Result<
        triton_sidecar::triton::model_config::ModelInfo,
        triton_sidecar::triton::client::ScrapeError,
    > {
        let steps = if m == "ens" {
            self.steps.lock().unwrap_or_else(|p| p.into_inner()).clone()
        } else {
            Vec::new()
        };
        Ok(triton_sidecar::triton::model_config::ModelInfo {
            ensemble: !steps.is_empty(),
            steps,
            ..Default::default()
        })
    }
}

/// Sequence 10: ensemble steps are learned again after the ensemble is reloaded: a new config that
/// swaps its step is followed. (main: asked once per model, for ever.)
#[test]
fn ensemble_steps_are_relearned_after_a_reload() {
    use triton_sidecar::config::Config;
    use triton_sidecar::poller::Poller;
    let line = |m: &str, n: u64| {
        format!("nv_inference_request_success{{model=\"{m}\",version=\"1\"}} {n}\n")
    };
    let page = |n: u64, with_ens: bool| {
        let mut s = line("a", n) + &line("b", 3 * n);
        if with_ens {
            s += &line("ens", n);
        }
        s
    };
    let t = Scripted {
        page: Arc::new(std::sync::Mutex::new(page(0, true))),
        steps: Arc::new(std::sync::Mutex::new(vec!["a".into()])),
    };
    let clock = oracle::SimClock::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let rates = rt.block_on(async {
        let mut p = Poller::with(
            Config::for_tests("http://127.0.0.1:9").poller,
            t.clone(),
            clock.clone(),
        );
        let mut rates = Vec::new();
        for k in 0..12u64 {
            clock.set_secs(k as f64);
            // ens is reloaded at poll 6 (gone from one page) with a config whose step is b.
            if k == 6 {
                *t.steps.lock().unwrap_or_else(|p| p.into_inner()) = vec!["b".into()];
            }
            *t.page.lock().unwrap_or_else(|p| p.into_inner()) = page(10 * k, k != 6);
            rates.push(p.poll_once().await.derived.pod.request_rate);
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
        }
        rates
    });
    // Before: ens (10 /s) and b (30 /s) are client-facing (a is ens's step): 40 /s. After:
    // ens and a: 20 /s, b is the step now; with the old step set kept it would stay 40 /s.
    assert_eq!(rates[4], 40.0, "{rates:?}");
    assert_eq!(rates[11], 20.0, "{rates:?}");
}

/// Issue 13: offered load counts arrivals, so it keeps rising under overload while completions
/// are capped at capacity. One instance at 100 ms per request serves 10 per second; 30 per
/// second arrive. The checker compares every poll with the arrivals of the window (see
/// `oracle::truth`); by name: the published load reads about 30 while the request rate reads 10,
/// the estimated capacity 10 and the utilization about 3.
#[test]
fn case13_offered_load_is_not_capped_at_capacity() {
    let rs: Vec<RequestSpec> = (0..360).map(|i| req(0, 0.01 + i as f64 / 30.0)).collect();
    let obs = checked(trace(vec![model("m", 0.1)], rs, 14, 5.0));
    for o in &obs[6..12] {
        let m = o.models["m"];
        // The window is 5 s; at most one request executes at each edge.
        assert!((m.offered_load - 30.0).abs() <= 1.0 / 5.0 + 1e-9, "{m:?}");
        assert!((m.request_rate - 10.0).abs() <= 1.0 / 5.0 + 1e-9, "{m:?}");
        assert_eq!(o.pod.unwrap().offered_load, m.offered_load);
        // Estimated from the simulated statistics: 1 instance / 100 ms = 10 per second, and the
        // utilization keeps rising past 1 (about 3).
        let cap = m.capacity.expect("estimated capacity");
        assert!((cap - 10.0).abs() < 1e-6, "{m:?}");
        let u = m.utilization.expect("utilization");
        assert!((u - 3.0).abs() <= 0.2 / 10.0 + 1e-9, "{m:?}");
        assert_eq!(o.pod.unwrap().utilization, Some(u));
    }
}

/// Issue 22: statistics that stop answering. A steady load on an estimated model; the
/// statistics read fails from poll 8 to poll 19 in one way per run (403, 404, a timeout, a
/// refused connection, a 500). Every poll still matches the request-level truth, and by name:
/// the estimate is published while its last good read is at most `--stats-max-age` (3 s)
/// old, absent after (the model is then counted without capacity and its utilization is
/// absent), and back at the first good read; each failed read is counted under its reason.
#[test]
fn case22_an_estimate_lapses_when_the_statistics_stop_answering() {
    use std::time::Duration;
    use triton_sidecar::triton::client::ScrapeError;
    use triton_sidecar::triton::stats::StatsFailure;
    let kinds = [
        (ScrapeError::Status(403), StatsFailure::Forbidden),
        (ScrapeError::Status(404), StatsFailure::NotFound),
        (ScrapeError::Timeout, StatsFailure::Timeout),
        (ScrapeError::Refused, StatsFailure::Connect),
        (ScrapeError::Status(500), StatsFailure::HttpStatus),
    ];
    for (err, reason) in kinds {
        let rs: Vec<RequestSpec> = (0..300).map(|i| req(0, 0.01 + i as f64 / 10.0)).collect();
        let sim = Arc::new(trace(vec![model("m", 0.05)], rs, 30, 5.0).simulate());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let (obs, states) = rt.block_on(oracle::drive_with_stats_faults(
            sim.clone(),
            vec![(8, 19, err.clone())],
            Some(Duration::from_secs(3)),
        ));
        if let Err(e) = oracle::truth::check(&sim, &obs) {
            panic!("{err:?}: {e}");
        }
        for (k, (o, st)) in obs.iter().zip(&states).enumerate() {
            let age = st.statistics_read_at.map(|t| st.at.saturating_sub(t));
            let fresh = age.is_some_and(|a| a <= Duration::from_secs(3));
            let m = o.models["m"];
            if (3..8).contains(&k) || k >= 21 {
                assert!(
                    m.capacity.is_some() && m.utilization.is_some(),
                    "{err:?} poll {k}: {m:?}"
                );
            }
            // The last good read was poll 7: polls 8-10 hold it (age <= 3 s), 11-19 do not.
            if (11..=19).contains(&k) {
                assert!(!fresh, "{err:?} poll {k}: age {age:?}");
                assert_eq!(m.capacity, None, "{err:?} poll {k}");
                assert_eq!(m.utilization, None, "{err:?} poll {k}");
                assert_eq!(
                    st.derived.pod.models_without_capacity, 1.0,
                    "{err:?} poll {k}"
                );
            }
            if m.capacity.is_some() {
                assert!(
                    fresh,
                    "{err:?} poll {k}: a capacity {m:?} from a read {age:?} old"
                );
            }
        }
        let last = states.last().expect("states");
        assert_eq!(
            last.statistics_errors[&reason], 12,
            "{err:?}: {:?}",
            last.statistics_errors
        );
        let others: u64 = last
            .statistics_errors
            .iter()
            .filter(|(r, _)| **r != reason)
            .map(|(_, n)| n)
            .sum();
        assert_eq!(others, 0, "{err:?}");
        assert!(
            !last.statistics_refused,
            "{err:?}: a good read clears the refusal"
        );
    }
}
