//! Seeded trace generation. The knobs say which ingredients a trace has (so proptest shrinks a
//! failure towards the fewest); the seed decides everything else.

use super::sim::{Event, Kind, ModelSpec, Net, RequestSpec, Rng, Trace};

/// Which ingredients a trace has.
#[derive(Debug, Clone, Copy)]
pub struct Knobs {
    /// Everything random comes from this seed.
    pub seed: u64,
    /// Plain models (1-3).
    pub plain: usize,
    /// An ensemble of two step models.
    pub ensemble: bool,
    /// Number of polls (the trace lasts this many poll intervals).
    pub polls: usize,
    /// A model whose executions fail (all of them or some).
    pub failing: bool,
    /// Response-cache hits.
    pub cache: bool,
    /// Bounded queues, so overload rejects.
    pub bounded: bool,
    /// A Triton restart.
    pub restart: bool,
    /// A model unloaded and loaded again.
    pub reload: bool,
    /// Refused connections, timeouts and slow pages.
    pub net_faults: bool,
    /// Idle gaps longer than the window.
    pub idle: bool,
}

/// Arrival-rate phases: (start, rate per second) pieces.
fn phases(
    rng: &mut Rng,
    duration: f64,
    window: f64,
    idle: bool,
    capacity: f64,
) -> Vec<(f64, f64, f64)> {
    let mut out = Vec::new();
    let mut t = 0.0;
    while t < duration {
        let len = if idle && rng.chance(0.3) {
            // An idle spell longer than the window: the case where stale waits came back.
            window + rng.range(1.0, 4.0)
        } else {
            rng.range(1.0, 8.0)
        };
        let rate = if idle && rng.chance(0.35) {
            0.0
        } else {
            // From light load to twice the model's capacity (a growing queue).
            capacity * rng.range(0.05, 2.0)
        };
        out.push((t, (t + len).min(duration), rate));
        t += len;
    }
    out
}

/// A trace from its knobs.
pub fn generate(k: &Knobs) -> Trace {
    let mut rng = Rng::new(k.seed);
    let poll_interval = 1.0;
    let window = [3.0, 5.0, 10.0][(rng.next_u64() % 3) as usize];
    let scrape_timeout = 0.8;
    let duration = k.polls.max(2) as f64 * poll_interval;
    let mut models = Vec::new();
    let plain = k.plain.clamp(1, 3);
    for i in 0..plain {
        let max_batch = if rng.chance(0.5) {
            1
        } else {
            [4, 8][(rng.next_u64() % 2) as usize]
        };
        models.push(ModelSpec {
            name: format!("m{i}"),
            kind: Kind::Plain,
            instances: 1 + (rng.next_u64() % 2) as usize,
            max_batch,
            // From 5 ms to 1.5 s per execution: slower than the poll interval too.
            cost_a: {
                let hi = if rng.chance(0.3) { 1.5 } else { 0.3 };
                rng.range(0.005, hi)
            },
            cost_k: if max_batch > 1 {
                rng.range(0.0, 0.05)
            } else {
                0.0
            },
            max_queue: if k.bounded && rng.chance(0.6) {
                Some(2 + (rng.next_u64() % 12) as usize)
            } else {
                None
            },
        });
    }
    if k.ensemble {
        let s0 = models.len();
        for (j, name) in ["pre", "infer"].iter().enumerate() {
            models.push(ModelSpec {
                name: name.to_string(),
                kind: Kind::Step,
                instances: 1,
                max_batch: if j == 0 { 1 } else { 4 },
                cost_a: rng.range(0.005, 0.15),
                cost_k: rng.range(0.0, 0.02),
                max_queue: None,
            });
        }
        models.push(ModelSpec {
            name: "ens".to_string(),
            kind: Kind::Ensemble(vec![s0, s0 + 1]),
            instances: 1,
            max_batch: 1,
            cost_a: 0.0,
            cost_k: 0.0,
            max_queue: None,
        });
    }
    // Which client-facing model fails, and how often.
    let failing: Option<(usize, f64)> = if k.failing {
        Some((
            (rng.next_u64() % plain as u64) as usize,
            if rng.chance(0.5) { 1.0 } else { 0.3 },
        ))
    } else {
        None
    };
    let mut requests = Vec::new();
    for (m, spec) in models.iter().enumerate() {
        let capacity = match &spec.kind {
            Kind::Step => continue,
            Kind::Plain => {
                spec.instances as f64 * spec.max_batch as f64
                    / (spec.cost_a + spec.cost_k * spec.max_batch as f64)
            }
            Kind::Ensemble(steps) => steps
                .iter()
                .map(|&s| {
                    let st = &models[s];
                    st.instances as f64 * st.max_batch as f64
                        / (st.cost_a + st.cost_k * st.max_batch as f64)
                })
                .fold(f64::INFINITY, f64::min),
        };
        // Cap the request count: a trace must run in milliseconds.
        let capacity = capacity.min(60.0);
        for (a, b, rate) in phases(&mut rng, duration, window, k.idle, capacity) {
            if rate <= 0.0 {
                continue;
            }
            let mut t = a + rng.exp(rate);
            while t < b {
                let fail = failing.is_some_and(|(fm, p)| fm == m && rng.chance(p));
                let cache_hit = k.cache && matches!(spec.kind, Kind::Plain) && rng.chance(0.3);
                requests.push(RequestSpec {
                    model: m,
                    arrival: t,
                    fail,
                    cache_hit,
                });
                t += rng.exp(rate);
            }
        }
    }
    requests.sort_by(|a, b| a.arrival.total_cmp(&b.arrival));
    let mut events = Vec::new();
    if k.restart {
        events.push(Event::Restart {
            at: rng.range(0.3, 0.8) * duration,
            down: rng.range(1.2, 4.0),
            load: if rng.chance(0.5) {
                rng.range(1.0, 3.0)
            } else {
                0.0
            },
        });
    }
    if k.reload {
        events.push(Event::Reload {
            model: (rng.next_u64() % plain as u64) as usize,
            at: rng.range(0.2, 0.7) * duration,
            gone: rng.range(1.2, 3.0),
        });
    }
    let mut polls = Vec::new();
    let mut t = poll_interval;
    while t <= duration + 1e-9 {
        let net = if k.net_faults && rng.chance(0.15) {
            match rng.next_u64() % 3 {
                0 => Net::Refused,
                1 => Net::Timeout,
                _ => Net::HealthTimeout {
                    latency: rng.range(0.0, 0.3),
                },
            }
        } else {
            Net::Ok {
                latency: if k.net_faults {
                    rng.range(0.0, 0.5)
                } else {
                    rng.range(0.0, 0.02)
                },
                health: rng.range(0.0, 0.05),
            }
        };
        polls.push((t, net));
        t += poll_interval;
    }
    // A reload that no page sees, after which the new counters exceed the old ones, cannot be
    // told apart from traffic (Triton publishes no load time). Real reloads take seconds; the
    // trace lets every page during one arrive, so the agent's rule (a model missing from a page
    // starts afresh) is what is tested. The limit is documented in the README.
    for ev in &events {
        if let Event::Reload { at, gone, .. } = ev {
            for (t, net) in polls.iter_mut() {
                if *t >= *at && *t + 0.1 < at + gone {
                    *net = Net::Ok {
                        latency: 0.0,
                        health: 0.0,
                    };
                }
            }
        }
    }
    Trace {
        seed: k.seed,
        duration,
        models,
        requests,
        events,
        polls,
        poll_interval,
        window,
        scrape_timeout,
    }
}
