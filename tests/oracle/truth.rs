//! The ground truth from the requests themselves, and the check of what an agent published
//! against it.
//!
//! The agent's window for a model at a good page `t_new` is every good page of the model's
//! current history no older than `t_new - window`; its oldest page is `t_old`. A history
//! starts afresh when the model was missing from a page, or when a poll was refused (the
//! process may have restarted). The truth over a window is computed from the jobs that ended
//! in `(t_old, t_new]`, never from counters.
//!
//! **Offered load** is checked against the arrivals in the window. Every request present at
//! `t_old` or arriving after it either ended in the window, is queued at `t_new` or is executing
//! then, so the agent's (Δsuccess + Δfailure + Δpending) equals arrivals + executing(t_old) −
//! executing(t_new): the arrivals, give or take the requests in execution at the window's edges
//! (at most instances × max batch). The truth is built from those three request counts, never
//! from counters. An ensemble holds no queue of its own (its requests wait in its steps'), so
//! its truth is its completions.

use std::collections::BTreeMap;

use super::sim::{Kind, Net, Outcome, Sim};

/// Per-model gauges as published.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ModelGauges {
    /// `triton_queue_wait_ms`.
    pub queue_wait_ms: f64,
    /// `triton_pending_requests`.
    pub pending: f64,
    /// `triton_request_rate`.
    pub request_rate: f64,
    /// `triton_failure_rate`.
    pub failure_rate: f64,
    /// `triton_compute_ms`.
    pub compute_ms: f64,
    /// `triton_offered_load_rps`.
    pub offered_load: f64,
    /// `triton_capacity_rps` (estimated: the oracle gives no `--capacity`).
    pub capacity: Option<f64>,
    /// `triton_utilization`.
    pub utilization: Option<f64>,
}

/// Pod gauges as published.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PodGauges {
    /// `triton_pod_queue_wait_ms`.
    pub queue_wait_ms: f64,
    /// `triton_pod_pending_requests`.
    pub pending: f64,
    /// `triton_pod_request_rate`.
    pub request_rate: f64,
    /// `triton_pod_offered_load_rps`.
    pub offered_load: f64,
    /// `triton_pod_utilization`.
    pub utilization: Option<f64>,
}

/// What the agent published after one poll attempt.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// Per-model gauges (absent models are absent series).
    pub models: BTreeMap<String, ModelGauges>,
    /// Pod gauges; `None` when absent.
    pub pod: Option<PodGauges>,
    /// The age of the last good page (s), as published.
    pub last_good_age: Option<f64>,
}

/// The truth for one model over one window.
#[derive(Debug, Clone, Copy, Default)]
pub struct ModelTruth {
    /// Successes in the window.
    pub success: f64,
    /// Failures (executed and rejected) in the window.
    pub failure: f64,
    /// Sum of queue waits of the successes (s).
    pub queue_sum: f64,
    /// Sum of compute of executed successes (s).
    pub compute_sum: f64,
    /// Executed successes.
    pub executed: f64,
    /// Queued now.
    pub pending: f64,
    /// Age of the oldest queued request now (s).
    pub oldest_age: f64,
    /// Window length (s); 0 with a single page.
    pub dt: f64,
    /// Client-facing (not an ensemble step)?
    pub client: bool,
    /// An ensemble?
    pub ensemble: bool,
    /// Requests that arrived in the window.
    pub arrivals: f64,
    /// Requests executing at the window's first page.
    pub executing_old: f64,
    /// Requests executing at its last page.
    pub executing_new: f64,
}

impl ModelTruth {
    /// Nothing arrived, completed, failed, executed or started executing in the window, and
    /// nothing is queued: zero offered load, known.
    pub fn idle(&self) -> bool {
        self.success == 0.0
            && self.failure == 0.0
            && self.executed == 0.0
            && self.arrivals == 0.0
            && self.pending == 0.0
            && self.executing_new == self.executing_old
    }

    /// Arrivals per second in the window, corrected by the requests in execution at its edges
    /// (see the module doc); an ensemble's completions per second. 0 with a single page.
    pub fn offered_load(&self) -> f64 {
        if self.dt <= 0.0 {
            return 0.0;
        }
        let n = if self.ensemble {
            self.success + self.failure
        } else {
            self.arrivals + self.executing_old - self.executing_new
        };
        n.max(0.0) / self.dt
    }

    /// Mean queue wait (ms) of the requests completed in the window.
    pub fn mean_wait_ms(&self) -> f64 {
        if self.success > 0.0 {
            self.queue_sum / self.success * 1000.0
        } else {
            0.0
        }
    }
}

/// The page time of each attempt that got a page.
pub fn good_pages(sim: &Sim) -> Vec<Option<f64>> {
    sim.trace
        .polls
        .iter()
        .map(|(t, net)| match net {
            Net::Ok { latency, .. } | Net::HealthTimeout { latency } => {
                let at = t + latency;
                (sim.trace.up(*t) && sim.trace.up(at)).then_some(at)
            }
            _ => None,
        })
        .collect()
}

/// Was attempt `j` refused (nothing listening, or the network said no)?
pub fn refused(sim: &Sim, j: usize) -> bool {
    let (t, net) = sim.trace.polls[j];
    match net {
        Net::Refused => true,
        Net::Timeout => !sim.trace.up(t),
        Net::Ok { latency, .. } | Net::HealthTimeout { latency } => {
            !sim.trace.up(t) || !sim.trace.up(t + latency)
        }
    }
}

/// The truth for every model on the page of attempt `k` (which must be good).
pub fn truth_at(sim: &Sim, k: usize) -> BTreeMap<String, ModelTruth> {
    let tr = &sim.trace;
    let pages = good_pages(sim);
    let Some(t_new) = pages[k] else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for (m, spec) in tr.models.iter().enumerate() {
        if !tr.loaded(m, t_new) {
            continue;
        }
        // Walk back through attempts while the model's history is unbroken.
        let mut t_old = None;
        for j in (0..k).rev() {
            if refused(sim, j) {
                break;
            }
            let Some(pt) = pages[j] else { continue };
            if !tr.loaded(m, pt) || tr.epoch(m, pt) != tr.epoch(m, t_new) {
                break;
            }
            if pt < t_new - tr.window - 1e-9 {
                break;
            }
            t_old = Some(pt);
        }
        let mut mt = ModelTruth {
            client: !matches!(spec.kind, Kind::Step),
            ..Default::default()
        };
        let ensemble = matches!(spec.kind, Kind::Ensemble(_));
        mt.ensemble = ensemble;
        let epoch = tr.epoch(m, t_new);
        let executing = |j: &super::sim::Job, t: f64| {
            j.enq >= epoch
                && j.start.is_some_and(|s| s <= t)
                && j.end.map_or(true, |e| e > t)
                && !matches!(j.outcome, Outcome::Rejected | Outcome::CacheHit)
        };
        for j in sim.jobs.iter().filter(|j| j.model == m) {
            if let Some(t_old) = t_old {
                if j.enq >= epoch && j.enq > t_old && j.enq <= t_new {
                    mt.arrivals += 1.0;
                }
                if executing(j, t_old) {
                    mt.executing_old += 1.0;
                }
                if executing(j, t_new) {
                    mt.executing_new += 1.0;
                }
            }
            if !ensemble && j.pending_at(t_new) && j.enq >= tr.epoch(m, t_new) {
                mt.pending += 1.0;
                mt.oldest_age = mt.oldest_age.max(t_new - j.enq);
            }
            let (Some(t_old), Some(end)) = (t_old, j.end) else {
                continue;
            };
            if end <= t_old || end > t_new {
                continue;
            }
            match j.outcome {
                Outcome::Success => {
                    mt.success += 1.0;
                    mt.queue_sum += j.queue();
                    if !ensemble {
                        mt.compute_sum += j.compute;
                        mt.executed += 1.0;
                    }
                }
                Outcome::CacheHit => mt.success += 1.0,
                Outcome::ExecFail | Outcome::Rejected => mt.failure += 1.0,
                _ => {}
            }
        }
        if let Some(t_old) = t_old {
            mt.dt = t_new - t_old;
        }
        out.insert(spec.name.clone(), mt);
    }
    out
}

fn close(a: f64, b: f64, abs: f64) -> bool {
    (a - b).abs() <= abs + 1e-9 * b.abs().max(a.abs())
}

/// Check every published value against the truth. `Err` names the first violation.
pub fn check(sim: &Sim, observed: &[Observed]) -> Result<(), String> {
    let tr = &sim.trace;
    let pages = good_pages(sim);
    // The stall bound's slack: one poll interval, plus the slowest page and probes.
    let gap = tr.poll_interval + tr.scrape_timeout + 0.5;
    let mut last_good: Option<(usize, f64)> = None;
    for (k, obs) in observed.iter().enumerate() {
        let t = tr.polls[k].0;
        let at = |what: &str| format!("poll {k} at t={t:.3}s: {what}\nobserved: {obs:?}");
        match pages[k] {
            Some(t_new) => {
                last_good = Some((k, t_new));
                let truth = truth_at(sim, k);
                let pod = obs
                    .pod
                    .ok_or_else(|| at("pod gauges absent after a good page"))?;
                let (mut pq, mut pc, mut pend, mut prate, mut p_oldest, mut pload) =
                    (0.0, 0.0, 0.0, 0.0, 0.0f64, 0.0);
                let mut putil: Option<f64> = None;
                for (name, mt) in &truth {
                    let g = obs
                        .models
                        .get(name)
                        .ok_or_else(|| at(&format!("model {name} absent")))?;
                    let ctx = |w: &str| at(&format!("model {name}: {w}; truth {mt:?}"));
                    if g.pending != mt.pending {
                        return Err(ctx("pending"));
                    }
                    let rate = if mt.dt > 0.0 { mt.success / mt.dt } else { 0.0 };
                    let frate = if mt.dt > 0.0 { mt.failure / mt.dt } else { 0.0 };
                    if !close(g.request_rate, rate, 1e-6) {
                        return Err(ctx(&format!("request_rate {} != {rate}", g.request_rate)));
                    }
                    if !close(g.failure_rate, frate, 1e-6) {
                        return Err(ctx(&format!("failure_rate {} != {frate}", g.failure_rate)));
                    }
                    let load = mt.offered_load();
                    if !close(g.offered_load, load, 1e-6) {
                        return Err(ctx(&format!("offered_load {} != {load}", g.offered_load)));
                    }
                    // The estimate: instances × B / (a + k·B) once two batch sizes executed,
                    // instances × b / cost(b) while one size b alone has.
                    let spec = tr.models.iter().find(|s| &s.name == name);
                    match (g.capacity, spec) {
                        (Some(cap), Some(s)) => {
                            let inst = s.instances as f64;
                            let cost = |b: f64| s.cost_a + s.cost_k * b;
                            let big = s.max_batch.max(1) as f64;
                            let ok = close(cap, inst * big / cost(big), 1e-6 * cap)
                                || (1..=s.max_batch.max(1)).any(|b| {
                                    close(cap, inst * b as f64 / cost(b as f64), 1e-6 * cap)
                                });
                            if !ok {
                                return Err(ctx(&format!(
                                    "capacity {cap} is neither {inst}×{big}/cost({big}) nor one batch size's"
                                )));
                            }
                            let u = g
                                .utilization
                                .ok_or_else(|| ctx("capacity without utilization"))?;
                            if !close(u, g.offered_load / cap, 1e-9) {
                                return Err(ctx(&format!("utilization {u} != load / capacity")));
                            }
                            if !ensemble(sim, name) {
                                *putil.get_or_insert(0.0) += u;
                            }
                        }
                        // Zero offered load is zero utilization, capacity or not: only a
                        // model whose offered load is 0 by the truth, with nothing queued, may
                        // read 0 without one. (A request that arrived and is still executing
                        // offers no load in this window by the definition of offered load:
                        // it is counted in the window where it completes.)
                        (None, _) if g.utilization.is_some() => {
                            if g.utilization != Some(0.0)
                                || mt.offered_load() != 0.0
                                || mt.pending != 0.0
                            {
                                return Err(ctx(&format!(
                                    "utilization {:?} without capacity, not idle",
                                    g.utilization
                                )));
                            }
                            if !ensemble(sim, name) {
                                *putil.get_or_insert(0.0) += 0.0;
                            }
                        }
                        _ => {}
                    }
                    // And the converse: a window of two or more pages over an idle model
                    // publishes 0, so an idle pod answers the autoscaler.
                    if mt.idle() && mt.dt > 0.0 && g.utilization != Some(0.0) {
                        return Err(ctx(&format!(
                            "idle over {} s but utilization {:?}",
                            mt.dt, g.utilization
                        )));
                    }
                    if !ensemble(sim, name) {
                        let compute = if mt.executed > 0.0 {
                            mt.compute_sum / mt.executed * 1000.0
                        } else {
                            0.0
                        };
                        if !close(g.compute_ms, compute, 0.002) {
                            return Err(ctx(&format!("compute_ms {} != {compute}", g.compute_ms)));
                        }
                    }
                    let mean = mt.mean_wait_ms();
                    let bound = mean.max((mt.oldest_age + gap) * 1000.0);
                    // Triton's counters are whole microseconds per request.
                    if g.queue_wait_ms > bound + 0.002 {
                        return Err(ctx(&format!(
                            "queue_wait_ms {} above max(mean {mean}, oldest pending + gap)",
                            g.queue_wait_ms
                        )));
                    }
                    if g.queue_wait_ms < mean - 0.002 {
                        return Err(ctx(&format!(
                            "queue_wait_ms {} below the window mean {mean}",
                            g.queue_wait_ms
                        )));
                    }
                    pend += mt.pending;
                    pq += mt.queue_sum;
                    p_oldest = p_oldest.max(mt.oldest_age);
                    if mt.client {
                        pc += mt.success;
                        prate += rate;
                        pload += load;
                    }
                }
                for name in obs.models.keys() {
                    if !truth.contains_key(name) {
                        return Err(at(&format!("model {name} published but not on the page")));
                    }
                }
                let pmean = if pc > 0.0 { pq / pc * 1000.0 } else { 0.0 };
                if pod.pending != pend {
                    return Err(at(&format!("pod pending {} != {pend}", pod.pending)));
                }
                if !close(pod.request_rate, prate, 1e-6) {
                    return Err(at(&format!(
                        "pod request_rate {} != {prate}",
                        pod.request_rate
                    )));
                }
                // No GPU placement in the simulation: every counted model is on the one device.
                match (pod.utilization, putil) {
                    (Some(a), Some(b)) if close(a, b, 1e-9) => {}
                    (None, None) => {}
                    (a, b) => return Err(at(&format!("pod utilization {a:?} != {b:?}"))),
                }
                if !close(pod.offered_load, pload, 1e-6) {
                    return Err(at(&format!(
                        "pod offered_load {} != {pload}",
                        pod.offered_load
                    )));
                }
                let bound = pmean.max((p_oldest + gap) * 1000.0);
                if pod.queue_wait_ms > bound + 0.002 * pc.max(1.0) {
                    return Err(at(&format!(
                        "pod queue_wait_ms {} above max(mean {pmean}, oldest pending {p_oldest}s + gap)",
                        pod.queue_wait_ms
                    )));
                }
                if let Some(age) = obs.last_good_age {
                    if age > tr.poll_interval {
                        return Err(at(&format!("staleness {age} s right after a good page")));
                    }
                }
            }
            None => {
                // A failed scrape: nothing may rise; after the hold bound, everything is absent.
                let Some(prev) = k.checked_sub(1).map(|p| &observed[p]) else {
                    continue;
                };
                // The agent's clock when the scrape failed: a timeout takes the whole timeout.
                let t_fail = match tr.polls[k].1 {
                    Net::Timeout if tr.up(t) => t + tr.scrape_timeout,
                    _ => t,
                };
                let since = last_good.map(|(_, pt)| t_fail - pt);
                let expired = since.map_or(true, |s| s > tr.window + 1e-6);
                if since.is_some_and(|s| s <= tr.window - 1e-6) && obs.pod.is_none() {
                    return Err(at("gauges dropped before the hold bound"));
                }
                if expired && (obs.pod.is_some() || !obs.models.is_empty()) {
                    return Err(at("gauges still published after the hold bound"));
                }
                if let (Some(p), Some(q)) = (obs.pod, prev.pod) {
                    if p.queue_wait_ms > q.queue_wait_ms
                        || p.pending > q.pending
                        || p.request_rate > q.request_rate
                        || p.offered_load > q.offered_load
                    {
                        return Err(at("a pod gauge rose because a scrape failed"));
                    }
                }
                for (name, g) in &obs.models {
                    let Some(q) = prev.models.get(name) else {
                        return Err(at(&format!("model {name} appeared on a failed scrape")));
                    };
                    if g.queue_wait_ms > q.queue_wait_ms
                        || g.pending > q.pending
                        || g.request_rate > q.request_rate
                        || g.failure_rate > q.failure_rate
                        || g.compute_ms > q.compute_ms
                        || g.offered_load > q.offered_load
                    {
                        return Err(at(&format!(
                            "model {name}: a gauge rose because a scrape failed"
                        )));
                    }
                }
                if let (Some(age), Some(s)) = (obs.last_good_age, since) {
                    if (age - s).abs() > tr.scrape_timeout + 1e-6 {
                        return Err(at(&format!(
                            "staleness {age} s, but the last good page is {s} s old"
                        )));
                    }
                }
            }
        }
    }
    Ok(())
}

fn ensemble(sim: &Sim, name: &str) -> bool {
    sim.trace
        .models
        .iter()
        .any(|m| m.name == name && matches!(m.kind, Kind::Ensemble(_)))
}
