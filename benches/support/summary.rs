//! After criterion has run: read its estimates back and print one table with the derived
//! figures criterion does not print (ns per sample, MiB/s from the median).
#![allow(dead_code)]

use std::path::PathBuf;

/// One row: criterion's `group/function/param` and the work one iteration does.
pub struct Row {
    pub id: String,
    pub bytes: usize,
    pub samples: usize,
}

fn criterion_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(d);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    target.join("criterion")
}

/// When this process started measuring: estimates older than this are from an earlier run.
pub fn run_started() -> std::time::SystemTime {
    static START: std::sync::OnceLock<std::time::SystemTime> = std::sync::OnceLock::new();
    *START.get_or_init(std::time::SystemTime::now)
}

/// The median time per iteration (ns) criterion stored for `id`, if this run measured it.
pub fn median_ns(id: &str) -> Option<f64> {
    let path = criterion_dir().join(id).join("new").join("estimates.json");
    if std::fs::metadata(&path).ok()?.modified().ok()? < run_started() {
        return None; // filtered out of this run: its figure is from an earlier one
    }
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("median")?.get("point_estimate")?.as_f64()
}

/// Print the table for every row criterion measured in this run (rows filtered out are left out).
pub fn print(title: &str, rows: &[Row]) {
    let measured: Vec<(&Row, f64)> = rows
        .iter()
        .filter_map(|r| median_ns(&r.id).map(|t| (r, t)))
        .collect();
    if measured.is_empty() {
        return;
    }
    println!();
    println!("== {title} (criterion medians) ==");
    println!(
        "{:<40} {:>10} {:>8} {:>12} {:>10} {:>10}",
        "benchmark", "bytes", "samples", "time/iter", "MiB/s", "ns/sample"
    );
    for (r, ns) in measured {
        let mib_s = if r.bytes > 0 {
            r.bytes as f64 / (ns * 1e-9) / (1024.0 * 1024.0)
        } else {
            f64::NAN
        };
        let per_sample = if r.samples > 0 {
            ns / r.samples as f64
        } else {
            f64::NAN
        };
        println!(
            "{:<40} {:>10} {:>8} {:>12} {:>10.0} {:>10.1}",
            r.id,
            r.bytes,
            r.samples,
            fmt_ns(ns),
            mib_s,
            per_sample
        );
    }
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}
