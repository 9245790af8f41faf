//! The house's floors (README "Layout"): a module imports only from lower floors, and modules on
//! one floor import each other only where that makes no circle.
//!
//! Every path that names another module counts: `crate::a::…` and `$crate::a::…`, inline ones
//! (`crate::derive::utilization::assess(…)`), each member of `use crate::{a, b::{c, d}}`, and
//! `super::…` chains, resolved against the module they are written in (inline `mod x { … }`
//! blocks included), so `super::poller::X` in a top-level file is caught. The source is read as
//! the compiler's tokenizer reads it (`proc-macro2`), so comments, strings, raw strings and char
//! literals can neither hide an import nor invent one.
//!
//! The table below is the one the README's layout section shows; `the_readme_shows_this_table`
//! keeps the two equal.
// Test code: a panic here is a failed test, not a crashed agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proc_macro2::{Delimiter, TokenStream, TokenTree};

/// Top-level module → floor. `root` is `lib.rs` and `main.rs` (wiring, supervision, shutdown).
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

/// The module path of a file under `src/`: `a.rs` and `a/mod.rs` are `[a]`, `a/b.rs` is
/// `[a, b]`, `lib.rs` and `main.rs` are the root `[]`.
fn module_path(relative: &Path) -> Vec<String> {
    let parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let mut path: Vec<String> = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        if !last {
            path.push(p.clone());
        } else if p != "mod.rs" && p != "lib.rs" && p != "main.rs" {
            path.push(p.trim_end_matches(".rs").to_owned());
        }
    }
    path
}

/// What one file names, as `(module path it is written in, absolute path it names)`: the
/// absolute path is the module path after `crate` (or after resolving `super`), and its first
/// segment is what the floors are about.
struct Scan {
    named: Vec<(Vec<String>, Vec<String>)>,
}

fn is_punct(t: Option<&TokenTree>, ch: char) -> bool {
    matches!(t, Some(TokenTree::Punct(p)) if p.as_char() == ch)
}

fn ident(t: Option<&TokenTree>) -> Option<String> {
    match t {
        Some(TokenTree::Ident(i)) => Some(i.to_string()),
        _ => None,
    }
}

/// `::` at `tokens[i..]`.
fn colons(tokens: &[TokenTree], i: usize) -> bool {
    is_punct(tokens.get(i), ':') && is_punct(tokens.get(i + 1), ':')
}

impl Scan {
    fn stream(&mut self, ts: TokenStream, scope: &[String]) {
        let tokens: Vec<TokenTree> = ts.into_iter().collect();
        let mut i = 0;
        while i < tokens.len() {
            // `mod name { … }`: the block is a module of its own.
            if ident(tokens.get(i)).as_deref() == Some("mod") {
                if let (Some(name), Some(TokenTree::Group(g))) =
                    (ident(tokens.get(i + 1)), tokens.get(i + 2))
                {
                    if g.delimiter() == Delimiter::Brace {
                        let mut inner = scope.to_vec();
                        inner.push(name);
                        self.stream(g.stream(), &inner);
                        i += 3;
                        continue;
                    }
                }
            }
            let word = ident(tokens.get(i));
            let start = match word.as_deref() {
                Some("crate") if colons(&tokens, i + 1) => Some((Vec::new(), i + 3)),
                Some("super") if colons(&tokens, i + 1) => {
                    let mut base = scope.to_vec();
                    base.pop();
                    let mut j = i + 3;
                    while ident(tokens.get(j)).as_deref() == Some("super") && colons(&tokens, j + 1)
                    {
                        base.pop();
                        j += 3;
                    }
                    Some((base, j))
                }
                _ => None,
            };
            if let Some((base, j)) = start {
                self.members(&tokens, j, &base, scope);
                i = j;
                continue;
            }
            if let TokenTree::Group(g) = &tokens[i] {
                self.stream(g.stream(), scope);
            }
            i += 1;
        }
    }

    /// The path members at `tokens[j]`, after `base::`: one segment, or a `{…}` group of them.
    fn members(&mut self, tokens: &[TokenTree], j: usize, base: &[String], scope: &[String]) {
        match tokens.get(j) {
            Some(TokenTree::Ident(seg)) => {
                let mut full = base.to_vec();
                full.push(seg.to_string());
                self.named.push((scope.to_vec(), full));
            }
            Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace => {
                let inner: Vec<TokenTree> = g.stream().into_iter().collect();
                let mut at_start = true;
                for (k, t) in inner.iter().enumerate() {
                    if at_start {
                        if let TokenTree::Ident(seg) = t {
                            let seg = seg.to_string();
                            if seg == "self" {
                                self.named.push((scope.to_vec(), base.to_vec()));
                            } else {
                                self.members(&inner, k, base, scope);
                            }
                        }
                        at_start = false;
                    }
                    if is_punct(Some(t), ',') {
                        at_start = true;
                    }
                }
            }
            _ => {}
        }
    }
}

/// The top-level module an absolute path lands in: its first segment when that is a module, the
/// root otherwise (an item of `lib.rs`).
fn landing(path: &[String], modules: &BTreeSet<String>) -> String {
    match path.first() {
        Some(m) if modules.contains(m) => m.clone(),
        _ => "root".to_owned(),
    }
}

fn top(scope: &[String]) -> String {
    scope.first().cloned().unwrap_or_else(|| "root".to_owned())
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
fn edges(files: &[(PathBuf, String)]) -> Result<BTreeMap<String, BTreeSet<String>>, String> {
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|(p, _)| module_path(p).first().cloned())
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, src) in files {
        let ts: TokenStream = src
            .parse()
            .map_err(|e| format!("{}: cannot tokenize: {e:?}", path.display()))?;
        let scope = module_path(path);
        graph.entry(top(&scope)).or_default();
        let mut scan = Scan { named: Vec::new() };
        scan.stream(ts, &scope);
        for (from_scope, named) in scan.named {
            let (from, to) = (top(&from_scope), landing(&named, &modules));
            if from != to {
                graph.entry(from).or_default().insert(to);
            }
        }
    }
    Ok(graph)
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
    // Circles: a path back to the start along arrows within one floor.
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

fn files(list: &[(&str, &str)]) -> Vec<(PathBuf, String)> {
    list.iter()
        .map(|(p, s)| (PathBuf::from(p), (*s).to_owned()))
        .collect()
}

#[test]
fn every_arrow_points_down_or_across_without_a_circle() {
    let files = src_files();
    assert!(files.len() > 20, "src/ not found: {} files", files.len());
    let graph = edges(&files).unwrap();
    let bad = violations(&graph);
    assert!(
        bad.is_empty(),
        "the floors are broken:\n  {}\n(imports: {graph:?})",
        bad.join("\n  ")
    );
}

#[test]
fn the_scan_sees_every_form_of_path_and_nothing_in_comments_or_literals() {
    let src = r##"
        use crate::{triton::client::X, derive::{a, b}, state};
        fn f() { crate::poller::go(); let _ = my_crate::nothing; }
        // crate::cli in a comment
        /* crate::http too, /* nested */ crate::http */
        const A: &str = "crate::metrics"; const B: &str = r#"crate::config"#;
        const Q: char = '"'; const R: u8 = b'"';
        async fn g() { crate::stopped(&mut s).await }
        macro_rules! m { () => { $crate::gpu::x() } }
        mod tests { use super::Y; }
    "##;
    let graph = edges(&files(&[
        ("drain/machine.rs", src),
        ("triton/mod.rs", ""),
        ("derive/mod.rs", ""),
        ("state.rs", ""),
        ("poller/mod.rs", ""),
        ("gpu/mod.rs", ""),
        ("cli.rs", ""),
        ("http/mod.rs", ""),
        ("metrics.rs", ""),
        ("config.rs", ""),
    ]))
    .unwrap();
    let got: Vec<&str> = graph["drain"].iter().map(String::as_str).collect();
    // `super::Y` in `drain::machine::tests` is `drain::machine::Y`: within `drain`.
    assert_eq!(got, ["derive", "gpu", "poller", "root", "state", "triton"]);
}

#[test]
fn super_is_resolved_against_the_file_it_is_written_in() {
    let graph = edges(&files(&[
        // In a top-level file, `super` is the crate root.
        ("metrics.rs", "use super::poller::X;"),
        // Two levels up from `poller::health` is the root too.
        (
            "poller/health.rs",
            "fn f() { super::super::stopped(); super::Poller::x(); }",
        ),
        ("poller/mod.rs", ""),
        ("lib.rs", ""),
    ]))
    .unwrap();
    assert_eq!(graph["metrics"], BTreeSet::from(["poller".to_owned()]));
    assert_eq!(graph["poller"], BTreeSet::from(["root".to_owned()]));
}

#[test]
fn the_check_fails_on_an_arrow_up_and_on_a_circle() {
    // The two circles and the arrow up that the house had before issue 20.
    let bad = violations(
        &edges(&files(&[
            ("config.rs", "use crate::triton::client::ApiHeader;"),
            ("triton/client.rs", "use crate::config::Config;"),
            ("poller/mod.rs", "use crate::drain::machine::Phase;"),
            ("drain/controller.rs", "use crate::poller::PollState;"),
            ("gpu/task.rs", "fn f() { crate::stopped(&mut s); }"),
            ("lib.rs", "pub mod config;"),
        ]))
        .unwrap(),
    );
    let text = bad.join("\n");
    assert!(
        text.contains("`triton` (floor 0) imports `config` (floor 4)"),
        "{text}"
    );
    assert!(
        text.contains("`gpu` (floor 3) imports `root` (floor 5)"),
        "{text}"
    );
    assert!(text.contains("a circle: drain → poller → drain"), "{text}");
    assert!(text.contains("a circle: poller → drain → poller"), "{text}");
}

/// The modules a README layout row names: its second column's backticked names, `a/` and
/// `a.rs` as `a`, `lib.rs` and `main.rs` as the root.
fn row_modules(row: &str) -> BTreeSet<String> {
    let column = row.split('|').nth(2).unwrap_or_default();
    column
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|name| {
            let name = name.trim_end_matches('/').trim_end_matches(".rs");
            match name {
                "lib" | "main" => "root".to_owned(),
                n => n.to_owned(),
            }
        })
        .collect()
}

#[test]
fn the_readme_shows_this_table() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .unwrap_or_default();
    let layout = readme
        .split("\n## Layout\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has a `## Layout` section");
    for floor in 0..=5u8 {
        let want: BTreeSet<String> = FLOORS
            .iter()
            .filter(|(_, f)| *f == floor)
            .map(|(m, _)| (*m).to_owned())
            .collect();
        let rows: Vec<&str> = layout
            .lines()
            .filter(|l| l.starts_with(&format!("| {floor} |")))
            .collect();
        assert_eq!(rows.len(), 1, "README's layout: one row for floor {floor}");
        assert_eq!(
            row_modules(rows[0]),
            want,
            "README's floor {floor} row: {}",
            rows[0]
        );
    }
    assert_eq!(
        row_modules("| 5 | `lib.rs`, `signals.rs`, `main.rs` | x |"),
        BTreeSet::from(["root".to_owned(), "signals".to_owned()]),
        "the row parser itself"
    );
}
