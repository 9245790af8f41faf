//! Fuzz target `derive`: arbitrary sequences of snapshots through `Window::push` and `derive`,
//! then through `Metrics::render`.
//!
//! Each step starts from the previous snapshot, a real fixture page (tests/fixtures, parsed
//! once) or an empty page, then edits models: counters that jump, stay, go down (a Triton
//! restart), turn NaN/±Inf/negative/huge; models that appear and disappear; latency counters
//! that vanish (counter_latencies=false) or come back. Time moves forward, stands still, jumps
//! far ahead, or goes backwards. `derive` runs at, after, or before the newest sample.
//!
//! Asserted after every step: every gauge of the derived view is finite and >= 0, per-model
//! gauges exist only for models on the newest page, nothing is reported from stale data, and
//! every sample of the rendered /metrics page is finite and >= 0.
#![no_main]

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use triton_sidecar::drain::DrainConfig;
use triton_sidecar::derive::{derive, Context, Derived, Window};
use triton_sidecar::drain::controller::DrainView;
use triton_sidecar::state::Phase;
use triton_sidecar::gpu::GpuState;
use triton_sidecar::metrics::Metrics;
use triton_sidecar::state::PollState;
use triton_sidecar::triton::snapshot::{ModelCounters, Snapshot};
use triton_sidecar::triton::text;

const PAGES: [&str; 10] = [
    include_str!("../../tests/fixtures/idle.prom"),
    include_str!("../../tests/fixtures/load-0.prom"),
    include_str!("../../tests/fixtures/load-1.prom"),
    include_str!("../../tests/fixtures/load-2.prom"),
    include_str!("../../tests/fixtures/after.prom"),
    include_str!("../../tests/fixtures/summary-idle.prom"),
    include_str!("../../tests/fixtures/summary-load-0.prom"),
    include_str!("../../tests/fixtures/summary-load-1.prom"),
    include_str!("../../tests/fixtures/summary-load-2.prom"),
    include_str!("../../tests/fixtures/summary-after.prom"),
];

fn fixtures() -> &'static [Snapshot] {
    static F: OnceLock<Vec<Snapshot>> = OnceLock::new();
    F.get_or_init(|| PAGES.iter().map(|p| Snapshot::parse(p).expect("fixture parses")).collect())
}

const NAMES: [&str; 6] = ["fast", "flaky", "ensemble", "step", "m\"q\\x", ""];

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Num {
    Keep,
    Add(u16),
    Sub(u16),
    Scale(u8),
    Zero,
    Set(u32),
    Raw(f64),
    Nan,
    Inf,
    NegInf,
    Max,
    Tiny,
}

impl Num {
    fn apply(self, old: f64) -> f64 {
        match self {
            Num::Keep => old,
            Num::Add(d) => old + d as f64,
            Num::Sub(d) => old - d as f64,
            Num::Scale(k) => old * k as f64,
            Num::Zero => 0.0,
            Num::Set(v) => v as f64,
            Num::Raw(v) => v,
            Num::Nan => f64::NAN,
            Num::Inf => f64::INFINITY,
            Num::NegInf => f64::NEG_INFINITY,
            Num::Max => f64::MAX,
            Num::Tiny => f64::MIN_POSITIVE,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Opt {
    Keep,
    Remove,
    Edit(Num),
}

impl Opt {
    fn apply(self, old: Option<f64>) -> Option<f64> {
        match self {
            Opt::Keep => old,
            Opt::Remove => None,
            Opt::Edit(n) => Some(n.apply(old.unwrap_or(0.0))),
        }
    }
    fn apply_pair(self, count: Num, old: Option<(f64, f64)>) -> Option<(f64, f64)> {
        match self {
            Opt::Keep => old,
            Opt::Remove => None,
            Opt::Edit(n) => {
                let (s, c) = old.unwrap_or((0.0, 0.0));
                Some((n.apply(s), count.apply(c)))
            }
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Edit {
    /// Index into the page's models, then into NAMES (a model appearing).
    model: u8,
    /// Drop the model from the page (a model unloaded).
    drop: bool,
    success: Num,
    failure: Num,
    exec: Num,
    queue: Opt,
    compute: Opt,
    queue_summary: Opt,
    queue_summary_count: Num,
    compute_summary: Opt,
    compute_summary_count: Num,
    pending: Num,
    trtllm_waiting: Opt,
    trtllm_active: Opt,
}

#[derive(Arbitrary, Debug)]
enum Base {
    Previous,
    Fixture(u8),
    Empty,
}

#[derive(Arbitrary, Debug)]
enum Time {
    Forward(u16),
    Same,
    Back(u16),
    Jump(u32),
}

#[derive(Arbitrary, Debug)]
struct Step {
    base: Base,
    edits: Vec<Edit>,
    time: Time,
    /// Derive this many ms after the newest sample (or before it, with `before`).
    lag_ms: u16,
    before: bool,
    /// A failed poll: derive without pushing.
    skip_push: bool,
}

#[derive(Arbitrary, Debug)]
struct Input {
    span_ms: u16,
    ensemble_steps: Vec<u8>,
    steps: Vec<Step>,
}

fn edit(snap: &mut Snapshot, e: &Edit) {
    let existing: Vec<String> = snap.models.keys().cloned().collect();
    let idx = e.model as usize;
    let name = if idx < existing.len() {
        existing[idx].clone()
    } else {
        NAMES[(idx - existing.len()) % NAMES.len()].to_string()
    };
    if e.drop {
        snap.models.remove(&name);
        return;
    }
    let m: &mut ModelCounters = snap.models.entry(name).or_default();
    m.success = e.success.apply(m.success);
    m.failure = e.failure.apply(m.failure);
    m.exec_count = e.exec.apply(m.exec_count);
    m.queue_us = e.queue.apply(m.queue_us);
    m.compute_infer_us = e.compute.apply(m.compute_infer_us);
    m.queue_summary = e.queue_summary.apply_pair(e.queue_summary_count, m.queue_summary);
    m.compute_summary = e.compute_summary.apply_pair(e.compute_summary_count, m.compute_summary);
    m.pending = e.pending.apply(m.pending);
    m.trtllm_waiting = e.trtllm_waiting.apply(m.trtllm_waiting);
    m.trtllm_active = e.trtllm_active.apply(m.trtllm_active);
}

fn ok(x: f64) -> bool {
    x.is_finite() && x >= 0.0
}

fn check(d: &Derived, newest: Option<(Duration, &Snapshot)>, span: Duration, now: Duration) {
    let p = &d.pod;
    assert!(ok(p.queue_wait_ms) && ok(p.pending) && ok(p.request_rate), "pod {p:?}");
    for (name, m) in &d.models {
        assert!(
            ok(m.queue_wait_ms) && ok(m.pending) && ok(m.request_rate) && ok(m.failure_rate) && ok(m.compute_ms),
            "model {name:?}: {m:?}"
        );
    }
    match newest {
        None => assert!(d.models.is_empty(), "gauges without data: {d:?}"),
        Some((t, s)) => {
            for name in d.models.keys() {
                assert!(s.models.contains_key(name), "model {name:?} is not on the newest page");
            }
            if t + span < now {
                assert!(d.models.is_empty(), "gauges from stale data: {d:?}");
            }
        }
    }
}

fn drain_view() -> DrainView {
    DrainView {
        phase: Phase::Serving,
        trigger: None,
        result: None,
        started: None,
        quiet_since: None,
        pending: 0.0,
        generation: 0,
        last: None,
        counts: Default::default(),
        terminating: false,
        config: DrainConfig {
            min_drain: Duration::from_secs(5),
            quiet: Duration::from_secs(2),
            timeout: Duration::from_secs(90),
            triton_exit_timeout: Duration::from_secs(30),
        },
        waiting_on: Default::default(),
        open_requests: 0,
    }
}

fuzz_target!(|input: Input| {
    let span = Duration::from_millis(input.span_ms as u64);
    let steps: HashSet<String> =
        input.ensemble_steps.iter().map(|i| NAMES[*i as usize % NAMES.len()].to_string()).collect();
    let mut window = Window::new(span);
    let mut t = Duration::from_secs(100_000);
    let mut prev = Snapshot::default();
    let mut metrics = Metrics::new();
    let drain = drain_view();
    let gpu = GpuState::default();
    for step in input.steps.iter().take(64) {
        let mut snap = match step.base {
            Base::Previous => prev.clone(),
            Base::Fixture(i) => fixtures()[i as usize % PAGES.len()].clone(),
            Base::Empty => Snapshot::default(),
        };
        for e in step.edits.iter().take(8) {
            edit(&mut snap, e);
        }
        t = match step.time {
            Time::Forward(ms) => t + Duration::from_millis(ms as u64),
            Time::Same => t,
            Time::Back(ms) => t.saturating_sub(Duration::from_millis(ms as u64)),
            Time::Jump(ms) => t + Duration::from_millis(ms as u64),
        };
        if !step.skip_push {
            window.push(t, Arc::new(snap.clone()));
            prev = snap;
        }
        let lag = Duration::from_millis(step.lag_ms as u64);
        let now = if step.before { t.saturating_sub(lag) } else { t + lag };
        let d = derive(&window, now, &Context::steps(&steps));
        let newest = window.latest().map(|(t, s)| (t, s.as_ref()));
        check(&d, newest, span, now);

        // The rendered page carries no bad value either.
        let poll = PollState { seq: 1, at: now, triton_up: true, derived: d, ..Default::default() };
        let page = metrics.render(&poll, &drain, &gpu).to_string();
        text::parse(&page, |_| true, |s| {
            assert!(ok(s.value), "rendered {} = {} in\n{page}", s.name, s.value);
        })
        .unwrap_or_else(|e| panic!("rendered page does not parse: {e}\n{page}"));
    }
});
