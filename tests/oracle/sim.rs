//! The request-level simulation: seeded traces of requests through Triton's scheduler, the
//! pages Triton 2.51 would serve at any moment, and the ground truth computed from the
//! requests themselves.
//!
//! Model of Triton (checked against the real 2.51 by `tests/e2e/test_replay.py`):
//! - every model instance is work-conserving: when it frees up it takes up to `max_batch`
//!   requests from the head of its FIFO queue at once (no batching delay);
//! - an execution costs `a + k·batch`; every request of the batch is credited with the whole
//!   batch's compute time (`nv_inference_compute_infer_duration_us`) and its own queue time
//!   (`nv_inference_queue_duration_us`), both added when the request completes, and only when it
//!   succeeds;
//! - `nv_inference_exec_count` counts executions, failed ones included;
//! - a failed execution counts `nv_inference_request_failure{reason="BACKEND"}`; a request that
//!   finds the queue full counts `reason="REJECTED"` and never waits;
//! - a response-cache hit succeeds at once: it counts in `success` and in
//!   `nv_cache_num_hits_per_model`, adds no queue wait and no compute time;
//! - `nv_inference_pending_request_count` is the queue only: executing requests leave it;
//! - an ensemble queues nothing itself: its request goes through its steps one after the other,
//!   and it completes (success, with no queue or compute time of its own) when the last step
//!   does; a step's failure fails the ensemble request;
//! - a restart loses everything in flight and restarts every counter; an unloaded model is
//!   absent from the page until it is loaded again, with counters from 0.

use std::collections::{BinaryHeap, VecDeque};
use std::fmt::Write as _;

/// A small deterministic PRNG (splitmix64): traces must be reproducible from their seed alone.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.f64()
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }
    /// Exponential with rate `rate` (per second).
    pub fn exp(&mut self, rate: f64) -> f64 {
        -(1.0 - self.f64()).ln() / rate
    }
}

/// What a model is.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A model clients call directly.
    Plain,
    /// An ensemble of the named step models, run one after another.
    Ensemble(Vec<usize>),
    /// A step of an ensemble: only the ensemble calls it.
    Step,
}

/// One model of the trace.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// The `model` label.
    pub name: String,
    /// Plain, ensemble or step.
    pub kind: Kind,
    /// Instances executing in parallel.
    pub instances: usize,
    /// Largest batch one execution takes.
    pub max_batch: usize,
    /// Fixed cost of one execution (s).
    pub cost_a: f64,
    /// Cost per request in the batch (s).
    pub cost_k: f64,
    /// Queue capacity; a request arriving to a full queue is rejected.
    pub max_queue: Option<usize>,
}

/// One client request, as the trace plans it.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    /// Index of the model the client calls (a plain model or an ensemble).
    pub model: usize,
    /// Arrival time (s).
    pub arrival: f64,
    /// The execution of this request raises in the backend.
    pub fail: bool,
    /// The response cache holds this request's answer.
    pub cache_hit: bool,
}

/// A change of Triton itself.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The process dies at `at`, is back at `at + down`, and loads its models `load` later
    /// (explicit model control: the first pages list no models).
    Restart {
        /// When the process dies (s).
        at: f64,
        /// How long nothing listens (s).
        down: f64,
        /// How long after it is back the models become visible (s).
        load: f64,
    },
    /// `model` is unloaded at `at` and loaded again at `at + gone`.
    Reload {
        /// Model index.
        model: usize,
        /// Unload time (s).
        at: f64,
        /// Time until loaded again (s).
        gone: f64,
    },
}

/// `n` poll attempts one second apart (t = 1, 2, ... n s), each answered at once.
pub fn clean_polls(n: usize) -> Vec<(f64, Net)> {
    (1..=n)
        .map(|k| {
            (
                k as f64,
                Net::Ok {
                    latency: 0.0,
                    health: 0.0,
                },
            )
        })
        .collect()
}

/// How one poll attempt goes, apart from Triton being down.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Net {
    /// The page arrives after `latency` s; the health probes take `health` s more.
    Ok {
        /// Seconds until the body is read.
        latency: f64,
        /// Seconds the health probes take after that.
        health: f64,
    },
    /// The page arrives, but the server health probe times out (a busy Triton).
    HealthTimeout {
        /// Seconds until the body is read.
        latency: f64,
    },
    /// No answer within the scrape timeout.
    Timeout,
    /// The connection is refused although the process runs (a lost network path).
    Refused,
}

/// A whole trace.
#[derive(Debug, Clone)]
pub struct Trace {
    /// The seed it came from.
    pub seed: u64,
    /// Length (s).
    pub duration: f64,
    /// Models.
    pub models: Vec<ModelSpec>,
    /// Client requests, by arrival.
    pub requests: Vec<RequestSpec>,
    /// Restarts and reloads.
    pub events: Vec<Event>,
    /// Poll attempt times (s) and how each goes.
    pub polls: Vec<(f64, Net)>,
    /// The agent's `--poll-interval` (s).
    pub poll_interval: f64,
    /// The agent's `--window` (s).
    pub window: f64,
    /// The agent's `--scrape-timeout` (s).
    pub scrape_timeout: f64,
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Still queued or executing at the end of the trace.
    Open,
    /// Succeeded after executing.
    Success,
    /// Answered from the response cache.
    CacheHit,
    /// Its execution failed.
    ExecFail,
    /// The queue was full.
    Rejected,
    /// Lost in a restart or an unload (the client sees a connection error; Triton counts nothing).
    Lost,
}

/// One request at one model (an ensemble request makes one job per step plus its own).
#[derive(Debug, Clone)]
pub struct Job {
    /// Model index.
    pub model: usize,
    /// When it entered the model (s).
    pub enq: f64,
    /// When it left the queue for execution (s).
    pub start: Option<f64>,
    /// When it completed, failed or was lost (s).
    pub end: Option<f64>,
    /// How it ended.
    pub outcome: Outcome,
    /// Its batch's compute time (s), credited to each request of the batch.
    pub compute: f64,
    /// The client request it serves.
    pub request: usize,
    /// The failure flag of that request.
    fail: bool,
}

impl Job {
    /// Seconds it waited in the queue (0 for cache hits and rejections).
    pub fn queue(&self) -> f64 {
        match (self.outcome, self.start) {
            (Outcome::Success | Outcome::ExecFail, Some(s)) => s - self.enq,
            _ => 0.0,
        }
    }
    /// Still in the queue at `t`?
    pub fn pending_at(&self, t: f64) -> bool {
        self.enq <= t
            && self.start.map_or(true, |s| s > t)
            && self.end.map_or(true, |e| e > t)
            && !matches!(self.outcome, Outcome::Rejected | Outcome::CacheHit)
    }
}

/// The simulated run: every job and every execution.
#[derive(Debug, Clone)]
pub struct Sim {
    /// The trace.
    pub trace: Trace,
    /// All jobs.
    pub jobs: Vec<Job>,
    /// Executions: (model, end time, batch size).
    pub execs: Vec<(usize, f64, usize)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Ev {
    t: f64,
    seq: u64,
    what: EvKind,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum EvKind {
    Arrive(usize),
    /// (model, instance, epoch)
    ExecEnd(usize, usize, u64),
    Restart(usize),
    Unload(usize, usize),
}

impl Eq for Ev {}
impl Ord for Ev {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        // A min-heap on (t, seq).
        o.t.total_cmp(&self.t).then(o.seq.cmp(&self.seq))
    }
}
impl PartialOrd for Ev {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

struct Inst {
    busy: bool,
    batch: Vec<usize>,
}

struct ModelRt {
    queue: VecDeque<usize>,
    insts: Vec<Inst>,
}

impl Trace {
    /// Is the Triton process up at `t`?
    pub fn up(&self, t: f64) -> bool {
        !self.events.iter().any(|e| match e {
            Event::Restart { at, down, .. } => t >= *at && t < at + down,
            _ => false,
        })
    }

    /// Does Triton's page list `model` at `t`?
    pub fn loaded(&self, model: usize, t: f64) -> bool {
        if !self.up(t) {
            return false;
        }
        !self.events.iter().any(|e| match e {
            Event::Restart { at, down, load } => t >= *at && t < at + down + load,
            Event::Reload { model: m, at, gone } => *m == model && t >= *at && t < at + gone,
        })
    }

    /// Since when `model`'s counters have been counting at `t` (its last start or load).
    pub fn epoch(&self, model: usize, t: f64) -> f64 {
        let mut e = f64::NEG_INFINITY;
        for ev in &self.events {
            let s = match ev {
                Event::Restart { at, .. } => *at,
                Event::Reload { model: m, at, .. } if *m == model => *at,
                _ => continue,
            };
            if s <= t {
                e = e.max(s);
            }
        }
        e
    }

    /// Names of the steps of ensemble `model`.
    pub fn steps_of(&self, model: usize) -> Vec<String> {
        match &self.models[model].kind {
            Kind::Ensemble(s) => s.iter().map(|&i| self.models[i].name.clone()).collect(),
            _ => Vec::new(),
        }
    }

    /// Run the trace through the scheduler model.
    pub fn simulate(&self) -> Sim {
        let mut jobs: Vec<Job> = Vec::new();
        let mut execs = Vec::new();
        let mut rts: Vec<ModelRt> = self
            .models
            .iter()
            .map(|m| ModelRt {
                queue: VecDeque::new(),
                insts: (0..m.instances.max(1))
                    .map(|_| Inst {
                        busy: false,
                        batch: Vec::new(),
                    })
                    .collect(),
            })
            .collect();
        let mut heap = BinaryHeap::new();
        let mut seq = 0u64;
        let mut push = |heap: &mut BinaryHeap<Ev>, t: f64, what: EvKind| {
            seq += 1;
            heap.push(Ev { t, seq, what });
        };
        for (i, r) in self.requests.iter().enumerate() {
            push(&mut heap, r.arrival, EvKind::Arrive(i));
        }
        for (i, e) in self.events.iter().enumerate() {
            match e {
                Event::Restart { at, .. } => push(&mut heap, *at, EvKind::Restart(i)),
                Event::Reload { model, at, .. } => push(&mut heap, *at, EvKind::Unload(*model, i)),
            }
        }
        // Executions in flight carry their model's epoch: a restart or an unload voids them.
        let mut mep = vec![0u64; self.models.len()];
        while let Some(ev) = heap.pop() {
            let t = ev.t;
            match ev.what {
                EvKind::Arrive(r) => {
                    let req = &self.requests[r];
                    let m = req.model;
                    if !self.loaded(m, t) {
                        // Refused or "model not found": Triton counts nothing.
                        continue;
                    }
                    let j = jobs.len();
                    jobs.push(Job {
                        model: m,
                        enq: t,
                        start: None,
                        end: None,
                        outcome: Outcome::Open,
                        compute: 0.0,
                        request: r,
                        fail: req.fail,
                    });
                    if let Kind::Ensemble(steps) = &self.models[m].kind {
                        let s0 = steps[0];
                        self.enqueue(&mut jobs, &mut rts, s0, t, r, req.fail, false);
                    } else {
                        self.admit(&mut jobs, &mut rts, j, t, req.cache_hit);
                    }
                    let mut starts = Vec::new();
                    self.dispatch(&mut jobs, &mut rts, t, &mut starts);
                    for (mi, ii, end) in starts {
                        push(&mut heap, end, EvKind::ExecEnd(mi, ii, mep[mi]));
                    }
                }
                EvKind::ExecEnd(m, i, ep) => {
                    if ep != mep[m] {
                        continue;
                    }
                    let batch = std::mem::take(&mut rts[m].insts[i].batch);
                    rts[m].insts[i].busy = false;
                    if batch.is_empty() {
                        continue;
                    }
                    execs.push((m, t, batch.len()));
                    for j in batch {
                        if jobs[j].outcome == Outcome::Lost {
                            continue;
                        }
                        jobs[j].end = Some(t);
                        jobs[j].outcome = if jobs[j].fail {
                            Outcome::ExecFail
                        } else {
                            Outcome::Success
                        };
                        self.advance_ensemble(&mut jobs, &mut rts, j, t);
                    }
                    let mut starts = Vec::new();
                    self.dispatch(&mut jobs, &mut rts, t, &mut starts);
                    for (mi, ii, end) in starts {
                        push(&mut heap, end, EvKind::ExecEnd(mi, ii, mep[mi]));
                    }
                }
                EvKind::Restart(_) => {
                    for e in mep.iter_mut() {
                        *e += 1;
                    }
                    for j in jobs.iter_mut() {
                        if j.outcome == Outcome::Open {
                            j.outcome = Outcome::Lost;
                            j.end = Some(t);
                        }
                    }
                    for rt in rts.iter_mut() {
                        rt.queue.clear();
                        for inst in rt.insts.iter_mut() {
                            inst.busy = false;
                            inst.batch.clear();
                        }
                    }
                }
                EvKind::Unload(m, _) => {
                    // Triton waits for in-flight work of an unloaded model; the trace only
                    // unloads idle-ish models, and anything still queued is lost.
                    let mut lost: Vec<usize> = rts[m].queue.drain(..).collect();
                    for inst in rts[m].insts.iter_mut() {
                        lost.append(&mut inst.batch);
                        inst.busy = false;
                    }
                    for j in lost {
                        jobs[j].outcome = Outcome::Lost;
                        jobs[j].end = Some(t);
                    }
                    mep[m] += 1;
                }
            }
        }
        Sim {
            trace: self.clone(),
            jobs,
            execs,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn enqueue(
        &self,
        jobs: &mut Vec<Job>,
        rts: &mut [ModelRt],
        m: usize,
        t: f64,
        r: usize,
        fail: bool,
        cache_hit: bool,
    ) {
        let j = jobs.len();
        jobs.push(Job {
            model: m,
            enq: t,
            start: None,
            end: None,
            outcome: Outcome::Open,
            compute: 0.0,
            request: r,
            fail,
        });
        self.admit(jobs, rts, j, t, cache_hit);
    }

    fn admit(&self, jobs: &mut [Job], rts: &mut [ModelRt], j: usize, t: f64, cache_hit: bool) {
        let m = jobs[j].model;
        if cache_hit {
            jobs[j].outcome = Outcome::CacheHit;
            jobs[j].end = Some(t);
            return;
        }
        if let Some(cap) = self.models[m].max_queue {
            if rts[m].queue.len() >= cap {
                jobs[j].outcome = Outcome::Rejected;
                jobs[j].end = Some(t);
                return;
            }
        }
        rts[m].queue.push_back(j);
    }

    fn dispatch(
        &self,
        jobs: &mut [Job],
        rts: &mut [ModelRt],
        t: f64,
        starts: &mut Vec<(usize, usize, f64)>,
    ) {
        for (m, rt) in rts.iter_mut().enumerate() {
            let spec = &self.models[m];
            for (i, inst) in rt.insts.iter_mut().enumerate() {
                if inst.busy || rt.queue.is_empty() {
                    continue;
                }
                let n = rt.queue.len().min(spec.max_batch.max(1));
                let batch: Vec<usize> = rt.queue.drain(..n).collect();
                let cost = spec.cost_a + spec.cost_k * n as f64;
                for &j in &batch {
                    jobs[j].start = Some(t);
                    jobs[j].compute = cost;
                }
                inst.busy = true;
                inst.batch = batch;
                starts.push((m, i, t + cost));
            }
        }
    }

    /// A step job ended: move its ensemble request on, or end it.
    fn advance_ensemble(&self, jobs: &mut Vec<Job>, rts: &mut [ModelRt], j: usize, t: f64) {
        let r = jobs[j].request;
        let ens = self.requests[r].model;
        let Kind::Ensemble(steps) = &self.models[ens].kind else {
            return;
        };
        let m = jobs[j].model;
        let pos = steps.iter().position(|&s| s == m);
        let Some(pos) = pos else { return };
        // The ensemble's own job is the first job of this request at the ensemble model.
        let Some(e) = jobs
            .iter()
            .position(|x| x.request == r && x.model == ens && x.outcome == Outcome::Open)
        else {
            return;
        };
        if jobs[j].outcome == Outcome::ExecFail {
            jobs[e].outcome = Outcome::ExecFail;
            jobs[e].end = Some(t);
            return;
        }
        if pos + 1 < steps.len() {
            self.enqueue(jobs, rts, steps[pos + 1], t, r, jobs[j].fail, false);
        } else {
            jobs[e].outcome = Outcome::Success;
            jobs[e].end = Some(t);
            jobs[e].start = Some(jobs[e].enq);
        }
    }
}

/// Counters of one model as a page at `t` shows them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    /// `nv_inference_request_success`.
    pub success: u64,
    /// `nv_inference_request_failure{reason="BACKEND"}`.
    pub failure_backend: u64,
    /// `nv_inference_request_failure{reason="REJECTED"}`.
    pub failure_rejected: u64,
    /// `nv_inference_exec_count`.
    pub exec_count: u64,
    /// `nv_inference_queue_duration_us`.
    pub queue_us: u64,
    /// `nv_inference_compute_infer_duration_us`.
    pub compute_us: u64,
    /// `nv_cache_num_hits_per_model`.
    pub cache_hits: u64,
    /// `nv_inference_pending_request_count`.
    pub pending: u64,
}

fn us(s: f64) -> u64 {
    (s * 1e6).round().max(0.0) as u64
}

impl Sim {
    /// Counters of `model` at `t` (only what its current epoch counted).
    pub fn counters(&self, model: usize, t: f64) -> Counters {
        let e = self.trace.epoch(model, t);
        let mut c = Counters::default();
        for j in self.jobs.iter().filter(|j| j.model == model) {
            let ensemble = matches!(self.trace.models[model].kind, Kind::Ensemble(_));
            if !ensemble && j.pending_at(t) && j.enq >= e {
                c.pending += 1;
            }
            let Some(end) = j.end else { continue };
            if end > t || end < e {
                continue;
            }
            match j.outcome {
                Outcome::Success => {
                    c.success += 1;
                    c.queue_us += us(j.queue());
                    if !matches!(self.trace.models[model].kind, Kind::Ensemble(_)) {
                        c.compute_us += us(j.compute);
                    }
                }
                Outcome::CacheHit => {
                    c.success += 1;
                    c.cache_hits += 1;
                }
                Outcome::ExecFail => c.failure_backend += 1,
                Outcome::Rejected => c.failure_rejected += 1,
                Outcome::Open | Outcome::Lost => {}
            }
        }
        if matches!(self.trace.models[model].kind, Kind::Ensemble(_)) {
            c.exec_count = c.success + c.failure_backend;
        } else {
            c.exec_count = self
                .execs
                .iter()
                .filter(|(m, end, _)| *m == model && *end <= t && *end >= e)
                .count() as u64;
        }
        c
    }

    /// The reply of `GET /v2/models/stats` at `t`: per loaded model, the executions of its
    /// current epoch by batch size, each costing `a + k·batch` (what the model was told to
    /// cost), in Triton 2.51's schema (`tests/fixtures/stats/`). An ensemble executes nothing
    /// of its own.
    pub fn stats_json(&self, t: f64) -> String {
        let mut models = Vec::new();
        for (m, spec) in self.trace.models.iter().enumerate() {
            if !self.trace.loaded(m, t) {
                continue;
            }
            let e = self.trace.epoch(m, t);
            let c = self.counters(m, t);
            let mut by_size: std::collections::BTreeMap<usize, (u64, u64)> = Default::default();
            if !matches!(spec.kind, Kind::Ensemble(_)) {
                for (_, _, n) in self
                    .execs
                    .iter()
                    .filter(|(x, end, _)| *x == m && *end <= t && *end >= e)
                {
                    let s = by_size.entry(*n).or_default();
                    s.0 += 1;
                    s.1 += ((spec.cost_a + spec.cost_k * *n as f64) * 1e9).round() as u64;
                }
            }
            let batches: Vec<String> = by_size
                .iter()
                .map(|(n, (count, ns))| {
                    format!(
                        "{{\"batch_size\":{n},\"compute_input\":{{\"count\":{count},\"ns\":0}},\
                         \"compute_infer\":{{\"count\":{count},\"ns\":{ns}}},\
                         \"compute_output\":{{\"count\":{count},\"ns\":0}}}}"
                    )
                })
                .collect();
            models.push(format!(
                "{{\"name\":\"{}\",\"version\":\"1\",\"inference_count\":{},\
                 \"inference_stats\":{{\"success\":{{\"count\":{},\"ns\":0}},\
                 \"cache_hit\":{{\"count\":{},\"ns\":0}}}},\"batch_stats\":[{}]}}",
                spec.name,
                c.success - c.cache_hits,
                c.success,
                c.cache_hits,
                batches.join(",")
            ));
        }
        format!("{{\"model_stats\":[{}]}}", models.join(","))
    }

    /// The page Triton serves at `t`, in Triton 2.51's format (`tests/fixtures/*.prom`).
    pub fn page(&self, t: f64) -> String {
        let cs: Vec<(&str, Counters)> = (0..self.trace.models.len())
            .filter(|&m| self.trace.loaded(m, t))
            .map(|m| (self.trace.models[m].name.as_str(), self.counters(m, t)))
            .collect();
        let cache = self.trace.requests.iter().any(|r| r.cache_hit);
        // (family, type, help, value per model); failures carry a `reason` label of their own.
        type Value = fn(&Counters) -> u64;
        let families: [(&str, &str, &str, Value); 7] = [
            ("nv_inference_request_success", "counter", "Number of successful inference requests, all batch sizes", |c| c.success),
            ("nv_inference_count", "counter", "Number of inferences performed (does not include cached requests)", |c| c.success - c.cache_hits),
            ("nv_inference_exec_count", "counter", "Number of model executions performed (does not include cached requests)", |c| c.exec_count),
            ("nv_inference_queue_duration_us", "counter", "Cumulative inference queuing duration in microseconds (includes cached requests)", |c| c.queue_us),
            ("nv_inference_compute_infer_duration_us", "counter", "Cumulative compute inference duration in microseconds (does not include cached requests)", |c| c.compute_us),
            ("nv_inference_pending_request_count", "gauge", "Instantaneous number of pending requests awaiting execution per-model.", |c| c.pending),
            ("nv_cache_num_hits_per_model", "counter", "Number of cache hits per model", |c| c.cache_hits),
        ];
        let mut out = String::with_capacity(4096);
        for (fam, ty, help, value) in families {
            if fam == "nv_cache_num_hits_per_model" && !cache {
                continue;
            }
            let _ = writeln!(out, "# HELP {fam} {help}\n# TYPE {fam} {ty}");
            for (name, c) in &cs {
                let _ = writeln!(out, "{fam}{{model=\"{name}\",version=\"1\"}} {}", value(c));
            }
        }
        let fam = "nv_inference_request_failure";
        let _ = writeln!(out, "# HELP {fam} Number of failed inference requests, all batch sizes\n# TYPE {fam} counter");
        for (name, c) in &cs {
            for (reason, v) in [
                ("OTHER", 0),
                ("BACKEND", c.failure_backend),
                ("CANCELED", 0),
                ("REJECTED", c.failure_rejected),
            ] {
                let _ = writeln!(
                    out,
                    "{fam}{{model=\"{name}\",reason=\"{reason}\",version=\"1\"}} {v}"
                );
            }
        }
        out
    }
}
