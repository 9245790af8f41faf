//! The house's floors (README "Layout"): a module imports only from lower floors, and modules on
//! one floor import each other only where that makes no circle.
//!
//! Every `crate::` path in `src/` counts, inline ones (`crate::derive::utilization::assess(…)`)
//! and the members of `use crate::{a, b::{c, d}}` groups included, not only `use` lines. Comments
//! are left out, since a doc link is not an import. `super::` stays inside one top-level module
//! (the only place it can reach), so it never crosses a floor.
//!
//! The table below is the one the README's layout section shows; `the_readme_shows_this_table`
//! keeps the two together.
// Test code: a panic here is a failed test, not a crashed agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level module → floor. `root` is `lib.rs` (wiring, supervision, shutdown).
const FLOORS: &[(&str, u8)] = &[
    ("triton", 0),
    ("derive", 1),
    ("state", 2),
    ("poller", 3),
    ("gpu", 3),
    ("drain", 3),
    ("config", 4),
    ("metrics", 4),
    ("http", 4),
    ("cli", 4),
    ("root", 5),
    ("signals", 5),
];

fn floor_of(module: &str) -> Option<u8> {
    FLOORS.iter().find(|(m, _)| *m == module).map(|(_, f)| *f)
}

/// The top-level module a file under `src/` belongs to.
fn module_of(relative: &Path) -> String {
    let mut parts = relative.components().map(|c| c.as_os_str().to_string_lossy());
    let first = parts.next().map(|s| s.into_owned()).unwrap_or_default();
    match first.as_str() {
        "lib.rs" | "main.rs" => "root".to_owned(),
        f => f.trim_end_matches(".rs").to_owned(),
    }
}

/// The source without comments (line comments and block comments; strings are kept, and a
/// `//` inside a string literal is rare enough in this code base to be caught by review).
fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let bytes = src.as_bytes();
    let (mut i, mut in_str) = (0, false);
    while i < bytes.len() {
        let c = bytes[i];
        if in_str {
            out.push(c as char);
            if c == b'\\' && i + 1 < bytes.len() {
                out.push(bytes[i + 1] as char);
                i += 2;
                continue;
            }
            if c == b'"' {
                in_str = false;
            }
            i += 1;
            continue;
        }
        if c == b'"' {
            in_str = true;
            out.push('"');
            i += 1;
        } else if c == b'/' && bytes.get(i + 1) == Some(&b'/') {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && bytes.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
        } else {
            out.push(c as char);
            i += 1;
        }
    }
    out
}

/// The top-level modules a source names through `crate::`: `crate::a::…`, and each member of a
/// group `crate::{a::…, b}` (nested groups stay under their member, so only the first segment
/// of each member counts).
fn crate_paths(src: &str) -> BTreeSet<String> {
    let code = strip_comments(src);
    let mut found = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        // `crate::` preceded by an identifier character is another word (`my_crate::`).
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest_trim = rest.trim_start();
        if let Some(group) = rest_trim.strip_prefix('{') {
            // Members at depth 0 of the group.
            let (mut depth, mut member, mut start) = (0i32, String::new(), true);
            for ch in group.chars() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        start = true;
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 && start {
                    if ch.is_alphanumeric() || ch == '_' {
                        member.push(ch);
                    } else if !member.is_empty() {
                        found.insert(std::mem::take(&mut member));
                        start = false;
                    }
                }
            }
            if !member.is_empty() {
                found.insert(member);
            }
        } else {
            let name: String = rest_trim
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

/// `crate::x` names a top-level module, or else an item of `lib.rs` (the root).
fn target_module(name: &str, modules: &BTreeSet<String>) -> String {
    if modules.contains(name) {
        name.to_owned()
    } else {
        "root".to_owned()
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Module → the modules it imports (itself left out), from `(relative path, source)` pairs.
fn edges(files: &[(PathBuf, String)]) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<String> = files
        .iter()
        .map(|(p, _)| module_of(p))
        .filter(|m| m != "root")
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, src) in files {
        let from = module_of(path);
        let to = graph.entry(from.clone()).or_default();
        for name in crate_paths(src) {
            let target = target_module(&name, &modules);
            if target != from {
                to.insert(target);
            }
        }
    }
    graph
}

/// Every rule broken: an arrow up, a module missing from the table, a circle within a floor.
fn violations(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut bad = Vec::new();
    for (from, tos) in graph {
        let Some(f) = floor_of(from) else {
            bad.push(format!("module `{from}` has no floor in the table"));
            continue;
        };
        for to in tos {
            match floor_of(to) {
                None => bad.push(format!("module `{to}` has no floor in the table")),
                Some(t) if t > f => bad.push(format!(
                    "`{from}` (floor {f}) imports `{to}` (floor {t}): an arrow up"
                )),
                Some(_) => {}
            }
        }
    }
    // Circles: a path back to the start along arrows that do not go down (within one floor).
    for start in graph.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        while let Some((at, path)) = stack.pop() {
            for next in graph.get(&at).into_iter().flatten() {
                if floor_of(next) != floor_of(start) {
                    continue;
                }
                if next == start {
                    let mut circle = path.clone();
                    circle.push(next.clone());
                    bad.push(format!("a circle: {}", circle.join(" → ")));
                } else if !path.contains(next) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    bad.sort();
    bad.dedup();
    bad
}

fn src_files() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    rust_files(&root, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let src = std::fs::read_to_string(&p).unwrap_or_default();
            let rel = p.strip_prefix(&root).map(Path::to_path_buf).unwrap_or(p);
            (rel, src)
        })
        .collect()
}

#[test]
fn every_arrow_points_down_or_across_without_a_circle() {
    let files = src_files();
    assert!(files.len() > 20, "src/ not found: {} files", files.len());
    let graph = edges(&files);
    let bad = violations(&graph);
    assert!(
        bad.is_empty(),
        "the floors are broken:\n  {}\n(imports: {graph:?})",
        bad.join("\n  ")
    );
}

#[test]
fn the_scan_sees_inline_paths_groups_and_not_comments() {
    let src = "use crate::{triton::client::X, derive::{a, b}, state};\n\
               fn f() { crate::poller::go(); let _ = my_crate::nothing; }\n\
               // crate::cli in a comment\n/* crate::http too */\n\
               async fn g() { crate::stopped(&mut s).await }";
    let got: Vec<String> = crate_paths(src).into_iter().collect();
    assert_eq!(got, ["derive", "poller", "state", "stopped", "triton"]);
}

#[test]
fn the_check_fails_on_an_arrow_up_and_on_a_circle() {
    // The two circles and an arrow up that the house had before issue 20.
    let files = vec![
        (PathBuf::from("config.rs"), "use crate::triton::client::ApiHeader;".to_owned()),
        (PathBuf::from("triton/client.rs"), "use crate::config::Config;".to_owned()),
        (PathBuf::from("poller/mod.rs"), "use crate::drain::machine::Phase;".to_owned()),
        (PathBuf::from("drain/controller.rs"), "use crate::poller::PollState;".to_owned()),
        (PathBuf::from("gpu/task.rs"), "fn f() { crate::stopped(&mut s); }".to_owned()),
        (PathBuf::from("lib.rs"), "pub mod config;".to_owned()),
    ];
    let bad = violations(&edges(&files));
    let text = bad.join("\n");
    assert!(text.contains("`triton` (floor 0) imports `config` (floor 4)"), "{text}");
    assert!(text.contains("`gpu` (floor 3) imports `root` (floor 5)"), "{text}");
    assert!(text.contains("a circle: drain → poller → drain"), "{text}");
    assert!(text.contains("a circle: poller → drain → poller"), "{text}");
}

#[test]
fn the_readme_shows_this_table() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .unwrap_or_default();
    let layout = readme
        .split("## Layout")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .unwrap_or_default();
    for floor in 0..=5u8 {
        let mut names: Vec<&str> = FLOORS
            .iter()
            .filter(|(_, f)| *f == floor)
            .map(|(m, _)| *m)
            .collect();
        names.sort_unstable();
        let row = layout
            .lines()
            .find(|l| l.starts_with(&format!("| {floor} |")))
            .unwrap_or_else(|| panic!("README's layout has no row for floor {floor}"));
        for n in names {
            let shown = if n == "root" { "lib.rs" } else { n };
            assert!(
                row.contains(&format!("`{shown}")),
                "README's floor {floor} row does not name `{shown}`: {row}"
            );
        }
    }
}
