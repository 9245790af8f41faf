//! Every published gauge against a request-level ground truth (see `tests/oracle/`).
//!
//! The production poller and derivation run over a simulated Triton 2.51 (pages rendered from
//! seeded request traces) and a simulated clock. The invariant, for every poll: the published
//! wait never exceeds the larger of the mean wait of the requests completed in the window and
//! the age of the oldest pending request plus one poll interval, never falls below that mean,
//! and no gauge rises because a scrape failed. Pending, rates and compute equal the truth.

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
