//! The oracle's trace generator and renderer, for the real-Triton replay
//! (`tests/e2e/test_replay.py`; interface in that file's docstring).
//!
//! ```text
//! cargo run --release --example oracle -- trace --seed 7 --profile replay > trace.json
//! cargo run --release --example oracle -- render --trace trace.json > rendered.json
//! ```
//! `trace` writes a seeded trace of unbatched requests (one model fails every request it is
//! told to); `render` writes the counters the simulation predicts at each poll time.
#![forbid(unsafe_code)]
// Test code: a panic here is a failed test, not a crashed agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/oracle/mod.rs"]
#[allow(dead_code, unused_imports)]
mod oracle;

use oracle::sim::{Kind, ModelSpec, Net, RequestSpec, Rng, Trace};
use serde_json::{json, Value};

fn replay_trace(seed: u64) -> Trace {
    let mut rng = Rng::new(seed);
    // (name, cost, base rate, overload factor). Peak offered load, as a share of capacity:
    // fast 0.5, slow 1.5 (a queue that keeps growing), broken 0.5. None sits near 1, where a
    // queue's length is a random walk that no two runs of the same arrivals reproduce (the
    // replay measured real pending 31 against a rendered 13-26 for a model at 0.8).
    let models = [
        ("fast", 0.020, 25.0, 1.0),
        ("slow", 0.150, 5.0, 2.0),
        ("broken", 0.040, 8.0, 1.6),
    ];
    let duration = 12.0;
    let specs: Vec<ModelSpec> = models
        .iter()
        .map(|(n, a, _, _)| ModelSpec {
            name: n.to_string(),
            kind: Kind::Plain,
            instances: 1,
            max_batch: 1,
            cost_a: *a,
            cost_k: 0.0,
            max_queue: None,
        })
        .collect();
    let mut requests = Vec::new();
    for (m, (name, _, rate, peak)) in models.iter().enumerate() {
        // Phases: light, peak, idle, light again.
        for (a, b, f) in [
            (0.2, 3.0, 0.5),
            (3.0, 7.0, *peak),
            (7.0, 9.0, 0.0),
            (9.0, 11.0, 0.6),
        ] {
            let r = rate * f;
            if r <= 0.0 {
                continue;
            }
            let mut t = a + rng.exp(r);
            while t < b {
                requests.push(RequestSpec {
                    model: m,
                    arrival: t,
                    fail: *name == "broken" && rng.chance(0.5),
                    cache_hit: false,
                });
                t += rng.exp(r);
            }
        }
    }
    requests.sort_by(|a, b| a.arrival.total_cmp(&b.arrival));
    Trace {
        seed,
        duration,
        models: specs,
        requests,
        events: Vec::new(),
        polls: oracle::sim::clean_polls(duration as usize),
        poll_interval: 1.0,
        window: 10.0,
        scrape_timeout: 1.0,
    }
}

fn to_json(tr: &Trace) -> Value {
    json!({
        "seed": tr.seed,
        "duration_s": tr.duration,
        "models": tr.models.iter().map(|m| json!({
            "name": m.name, "instances": m.instances, "max_batch": m.max_batch,
            "cost_a_ms": m.cost_a * 1000.0, "cost_k_ms": m.cost_k * 1000.0,
        })).collect::<Vec<_>>(),
        "requests": tr.requests.iter().enumerate().map(|(i, r)| json!({
            "id": i, "model": tr.models[r.model].name, "arrival_s": r.arrival, "fail": r.fail,
        })).collect::<Vec<_>>(),
        "polls_s": tr.polls.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
    })
}

fn from_json(v: &Value) -> Result<Trace, String> {
    let f = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_f64)
            .ok_or(format!("missing {k}"))
    };
    let models = v["models"].as_array().ok_or("missing models")?;
    let specs: Vec<ModelSpec> = models
        .iter()
        .map(|m| {
            Ok(ModelSpec {
                name: m["name"].as_str().ok_or("model name")?.to_string(),
                kind: Kind::Plain,
                instances: f(m, "instances")? as usize,
                max_batch: f(m, "max_batch")? as usize,
                cost_a: f(m, "cost_a_ms")? / 1000.0,
                cost_k: f(m, "cost_k_ms")? / 1000.0,
                max_queue: None,
            })
        })
        .collect::<Result<_, String>>()?;
    let requests = v["requests"]
        .as_array()
        .ok_or("missing requests")?
        .iter()
        .map(|r| {
            let name = r["model"].as_str().ok_or("request model")?;
            Ok(RequestSpec {
                model: specs
                    .iter()
                    .position(|m| m.name == name)
                    .ok_or(format!("unknown model {name}"))?,
                arrival: f(r, "arrival_s")?,
                fail: r["fail"].as_bool().unwrap_or(false),
                cache_hit: false,
            })
        })
        .collect::<Result<_, String>>()?;
    let polls = v["polls_s"]
        .as_array()
        .ok_or("missing polls_s")?
        .iter()
        .filter_map(Value::as_f64)
        .map(|t| {
            (
                t,
                Net::Ok {
                    latency: 0.0,
                    health: 0.0,
                },
            )
        })
        .collect();
    Ok(Trace {
        seed: v["seed"].as_u64().unwrap_or(0),
        duration: f(v, "duration_s")?,
        models: specs,
        requests,
        events: Vec::new(),
        polls,
        poll_interval: 1.0,
        window: 10.0,
        scrape_timeout: 1.0,
    })
}

fn render(tr: &Trace) -> Value {
    let sim = tr.simulate();
    json!({
        "polls": tr.polls.iter().map(|(t, _)| {
            let models: serde_json::Map<String, Value> = (0..tr.models.len()).map(|m| {
                let c = sim.counters(m, *t);
                (tr.models[m].name.clone(), json!({
                    "success": c.success, "failure": c.failure_backend + c.failure_rejected,
                    "exec_count": c.exec_count, "queue_us": c.queue_us as f64,
                    "compute_infer_us": c.compute_us as f64, "pending": c.pending,
                }))
            }).collect();
            json!({"t_s": t, "models": models})
        }).collect::<Vec<_>>()
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let out = match args.first().map(String::as_str) {
        Some("trace") => {
            let seed = arg("--seed").and_then(|s| s.parse().ok()).unwrap_or(1);
            match arg("--profile").as_deref() {
                Some("replay") | None => Ok(to_json(&replay_trace(seed))),
                Some(p) => Err(format!("unknown --profile {p} (known: replay)")),
            }
        }
        Some("render") => arg("--trace")
            .ok_or_else(|| "render needs --trace FILE".to_string())
            .and_then(|p| std::fs::read_to_string(&p).map_err(|e| format!("{p}: {e}")))
            .and_then(|s| serde_json::from_str::<Value>(&s).map_err(|e| e.to_string()))
            .and_then(|v| from_json(&v))
            .map(|tr| render(&tr)),
        _ => Err(
            "usage: oracle trace --seed N [--profile replay] | oracle render --trace FILE".into(),
        ),
    };
    match out {
        Ok(v) => {
            use std::io::Write;
            // A reader that stops early (`| head`) closes the pipe: not an error worth a panic.
            let _ = writeln!(std::io::stdout().lock(), "{v}");
        }
        Err(e) => {
            eprintln!("oracle: {e}");
            std::process::exit(2);
        }
    }
}
