//! Benchmark input: the real Triton 2.51 pages of `tests/fixtures`, scaled to N models.
//!
//! Shared by the criterion benches (`#[path = "support/pages.rs"]`) and the examples that the
//! peer comparison and the footprint script run (`#[path = "../benches/support/pages.rs"]`).
//!
//! Scaling keeps the page's shape: every run of consecutive lines that carry a `model` label
//! (one family's block) is repeated once per scaled model, with the lines of fixture model
//! `i % 2` (`flaky`, `fast`) and the label renamed to `<fixture model>-<i, 4 digits>`. Lines
//! without a `model` label (HELP/TYPE, pinned memory, CPU) appear once, as on a real page. So
//! each family stays contiguous, as the Go and Python parsers expect.
#![allow(dead_code)]

/// Triton's default metrics config (`counter_latencies=true`): 61 lines for 2 models.
pub const COUNTERS: &str = include_str!("../../tests/fixtures/load-1.prom");
/// The same server with `--metrics-config summary_latencies=true`: 141 lines for 2 models.
pub const SUMMARY: &str = include_str!("../../tests/fixtures/summary-load-1.prom");

/// The fixture pages by short name.
pub const PAGES: [(&str, &str); 2] = [("counters", COUNTERS), ("summary", SUMMARY)];

/// The model counts every benchmark covers.
pub const SCALES: [usize; 4] = [1, 10, 100, 1000];

/// The value of the `model` label on `line`, if any.
fn model_of(line: &str) -> Option<&str> {
    let at = line.find("model=\"")? + "model=\"".len();
    let len = line[at..].find('"')?;
    Some(&line[at..at + len])
}

/// `page` with its models repeated to `n` models (see the module docs).
pub fn scale(page: &str, n: usize) -> String {
    scale_bumped(page, n, 0)
}

/// Like [`scale`], and every integer sample value `v` becomes `v + k * (v / 50 + 1)`: page `k + 1`
/// is page `k` one poll later (counters never go down), for benchmarks of the poll cycle.
pub fn scale_bumped(page: &str, n: usize, k: u64) -> String {
    let mut out = String::with_capacity(page.len() * n.max(2) / 2 + 1024);
    let lines: Vec<&str> = page.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        if model_of(lines[i]).is_none() {
            push_line(&mut out, lines[i], None, k);
            i += 1;
            continue;
        }
        // A run of model lines: group them by fixture model, in order of first appearance.
        let mut j = i;
        let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
        while j < lines.len() {
            let Some(m) = model_of(lines[j]) else { break };
            match groups.iter_mut().find(|(g, _)| *g == m) {
                Some((_, v)) => v.push(lines[j]),
                None => groups.push((m, vec![lines[j]])),
            }
            j += 1;
        }
        for idx in 0..n {
            let (src, ls) = &groups[idx % groups.len()];
            let renamed = format!("{src}-{idx:04}");
            for l in ls {
                push_line(&mut out, l, Some((src, &renamed)), k);
            }
        }
        i = j;
    }
    out
}

fn push_line(out: &mut String, line: &str, rename: Option<(&str, &str)>, k: u64) {
    let line = match rename {
        Some((from, to)) => {
            line.replacen(&format!("model=\"{from}\""), &format!("model=\"{to}\""), 1)
        }
        None => line.to_string(),
    };
    if k > 0 && !line.starts_with('#') {
        if let Some((head, value)) = line.rsplit_once(' ') {
            if let Ok(v) = value.parse::<u64>() {
                out.push_str(head);
                out.push(' ');
                out.push_str(&(v + k * (v / 50 + 1)).to_string());
                out.push('\n');
                return;
            }
        }
    }
    out.push_str(&line);
    out.push('\n');
}

/// Sample lines on a page: neither blank nor a comment. The denominator of "ns per sample"
/// for every parser compared.
pub fn sample_lines(page: &str) -> usize {
    page.lines()
        .filter(|l| {
            let t = l.trim_start();
            !t.is_empty() && !t.starts_with('#')
        })
        .count()
}

/// Checks that scaling keeps a page intact (run by every bench and example before it measures).
pub fn self_check() {
    for (name, p) in PAGES {
        let back = scale(p, 2)
            .replace("-0000\"", "\"")
            .replace("-0001\"", "\"");
        assert_eq!(
            back, p,
            "{name}: scaling to the fixture's own 2 models must give the page back"
        );
        let no_model = p
            .lines()
            .filter(|l| !l.starts_with('#') && model_of(l).is_none())
            .count();
        let per_model = (sample_lines(p) - no_model) / 2;
        for n in SCALES {
            assert_eq!(
                sample_lines(&scale(p, n)),
                no_model + n * per_model,
                "{name} x{n}"
            );
        }
    }
}
