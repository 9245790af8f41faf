//! The README's metrics and configuration tables name every family the agent exports and every
//! flag it takes, and nothing the code lacks.
// Test code: a panic here is a failed test, not a crashed agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use clap::CommandFactory;
use triton_sidecar::config::Cli;
use triton_sidecar::metrics::Metrics;

const README: &str = include_str!("../README.md");

/// The first column of every table row under `heading`, up to the next `## `.
fn first_column(heading: &str) -> Vec<String> {
    let start = README
        .find(heading)
        .unwrap_or_else(|| panic!("README has {heading}"));
    let rest = &README[start + heading.len()..];
    let end = rest.find("\n## ").unwrap_or(rest.len());
    rest[..end]
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| l.split('`').nth(1).map(str::to_string))
        .collect()
}

/// Every family name registered in src/metrics.rs (the quoted `triton_*` literals outside its
/// tests); counters get the `_total` prometheus-client appends.
fn registered_families() -> Vec<String> {
    let src = include_str!("../src/metrics.rs");
    let code = &src[..src.find("#[cfg(test)]").unwrap_or(src.len())];
    let counters = [
        "triton_sidecar_scrape_errors",
        "triton_sidecar_drains",
        "triton_sidecar_connection_scan_errors",
        "triton_sidecar_statistics_errors",
    ];
    let mut out: Vec<String> = code
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.starts_with("triton_") && s.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        })
        .map(|s| {
            if counters.contains(&s) {
                format!("{s}_total")
            } else {
                s.to_string()
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[test]
fn every_metric_family_is_in_the_metrics_table_and_back() {
    // The counters really are counters (so the `_total` above is right).
    let page = Metrics::new().encode().to_string();
    assert!(
        page.contains("# TYPE triton_sidecar_scrape_errors_total counter"),
        "{page}"
    );
    let mut table = first_column("## Metrics (`GET :8003/metrics`)");
    table.sort();
    assert_eq!(registered_families(), table);
}

#[test]
fn every_flag_is_in_the_configuration_table_and_back() {
    let cmd = Cli::command();
    let mut flags: Vec<String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .filter(|f| f != "--help" && f != "--version")
        .collect();
    flags.sort();
    let mut table: Vec<String> = first_column("## Configuration")
        .into_iter()
        .map(|c| c.split(' ').next().unwrap_or_default().to_string())
        .collect();
    table.sort();
    assert_eq!(flags, table);
}
