//! Write the benchmark pages (the real fixture pages scaled to 1, 10, 100 and 1000 models) to a
//! directory, for the peer comparison and the footprint script:
//! `cargo run --release --example gen_pages -- DIR` writes `DIR/<counters|summary>-<N>.prom`.
// Test code: a panic here is a failed test, not a crashed agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../benches/support/pages.rs"]
mod pages;

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| {
        eprintln!("usage: gen_pages DIR");
        std::process::exit(2)
    });
    pages::self_check();
    std::fs::create_dir_all(&dir).expect("create the output directory");
    for (name, page) in pages::PAGES {
        for n in pages::SCALES {
            let path = format!("{dir}/{name}-{n}.prom");
            std::fs::write(&path, pages::scale(page, n)).expect("write a page");
            println!("{path}");
        }
    }
}
