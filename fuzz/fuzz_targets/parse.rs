//! Fuzz target `parse`: the Prometheus text parser and `Snapshot::parse` on arbitrary bytes.
//!
//! Must never panic. Beyond that it checks properties that tie the pieces together:
//! - a page the full parser accepts is accepted by the filtered `Snapshot::parse` too, and the
//!   filtered parse never fails on an earlier line than the full one;
//! - every sample re-rendered in canonical form (label values re-escaped) parses back to the
//!   same name, labels, value and timestamp (the label iterator agrees with the validator);
//! - a snapshot never carries NaN (non-finite samples are dropped at the edge).
#![no_main]

use libfuzzer_sys::fuzz_target;
use triton_sidecar::triton::snapshot::Snapshot;
use triton_sidecar::triton::text;

fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v:?}")
    }
}

fn same_value(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

fn check(body: &str) {
    let all = text::parse_all(body);
    let snap = Snapshot::parse(body);
    match (&all, &snap) {
        (Ok(_), Err(e)) => panic!("full parse accepted the page, filtered parse failed: {e}"),
        (Err(full), Err(filtered)) => assert!(
            full.line <= filtered.line,
            "filtered parse failed on line {} before the full parse's line {}",
            filtered.line,
            full.line
        ),
        _ => {}
    }
    if let Ok(samples) = &all {
        for s in samples {
            let labels: Vec<(String, String)> =
                s.labels().map(|(k, v)| (k.to_string(), v.into_owned())).collect();
            let mut line = String::from(s.name);
            if !labels.is_empty() {
                line.push('{');
                let parts: Vec<String> =
                    labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
                line.push_str(&parts.join(","));
                line.push('}');
            }
            line.push(' ');
            line.push_str(&fmt_value(s.value));
            if let Some(ts) = s.timestamp {
                line.push_str(&format!(" {ts}"));
            }
            let again = text::parse_all(&line)
                .unwrap_or_else(|e| panic!("canonical line {line:?} does not parse: {e}"));
            assert_eq!(again.len(), 1, "{line:?}");
            let t = again[0];
            assert_eq!(t.name, s.name);
            let labels2: Vec<(String, String)> =
                t.labels().map(|(k, v)| (k.to_string(), v.into_owned())).collect();
            assert_eq!(labels2, labels, "labels of {line:?}");
            assert!(same_value(t.value, s.value), "{line:?}: {} vs {}", t.value, s.value);
            assert_eq!(t.timestamp, s.timestamp);
            // Every label lookup agrees with iteration (first occurrence wins).
            for (k, v) in &labels {
                let first = labels.iter().find(|(k2, _)| k2 == k).map(|(_, v)| v);
                assert_eq!(s.label(k).as_deref(), first.map(String::as_str), "label {k}={v}");
            }
        }
    }
    if let Ok(snap) = &snap {
        for (name, m) in &snap.models {
            let vals = [
                Some(m.success),
                Some(m.failure),
                Some(m.exec_count),
                m.queue_us,
                m.compute_infer_us,
                m.queue_summary.map(|p| p.0),
                m.queue_summary.map(|p| p.1),
                m.compute_summary.map(|p| p.0),
                m.compute_summary.map(|p| p.1),
                Some(m.pending),
                m.trtllm_waiting,
                m.trtllm_active,
            ];
            for v in vals.into_iter().flatten() {
                assert!(!v.is_nan(), "NaN in snapshot of model {name:?}: {m:?}");
            }
        }
        for g in &snap.gpu {
            assert!(g.value.is_finite(), "{g:?}");
        }
        let _ = snap.gpu_uuids();
        let _ = triton_sidecar::derive::activity::Activity::of_page(&snap);
        let _ = snap.in_flight();
    }
}

fuzz_target!(|data: &[u8]| {
    match std::str::from_utf8(data) {
        Ok(body) => check(body),
        // The agent refuses a non-UTF-8 page before parsing; still exercise the parser on the
        // lossy text so the fuzzer's byte-level mutations are not wasted.
        Err(_) => check(&String::from_utf8_lossy(data)),
    }
});
