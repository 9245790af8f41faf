//! What one read of Triton's connections costs per drain poll, at N client connections.
//!
//! `cargo run --release --example conn_scan_cost -- 100 1000 4000` opens N loopback connections
//! to a listener (2N established sockets, N on the "Triton" port), half of them with a request
//! that has no answer, then times `scan()` + `classify()` over 20 reads each and prints a table.
//! Needs `ulimit -n` above 2N + 100.
// Test code: a panic here is a failed test, not a crashed agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use triton_sidecar::triton::connections::{classify, own_socket_inodes, scan, Protocol};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let sizes = if sizes.is_empty() {
        vec![100, 1000]
    } else {
        sizes
    };
    println!("| connections | sockets in the table | open requests seen | scan + classify, min / median / max (ms) |");
    println!("|---|---|---|---|");
    for n in sizes {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let mut clients = Vec::with_capacity(n);
        let mut servers = Vec::with_capacity(n);
        for i in 0..n {
            let mut c = TcpStream::connect(("127.0.0.1", port))?;
            let (s, _) = listener.accept()?;
            if i % 2 == 0 {
                c.write_all(b"POST /v2/models/long/infer HTTP/1.1\r\n\r\n")?;
            }
            clients.push(c);
            servers.push(s);
        }
        std::thread::sleep(Duration::from_millis(50));
        let ports = [(port, Protocol::Http)];
        let none = HashSet::new();
        let mut times = Vec::new();
        let mut seen = (0, 0);
        for _ in 0..20 {
            let t = Instant::now();
            let samples = scan()?;
            // Both ends are this process's: pass no own inodes so Triton's side counts.
            let _own = own_socket_inodes();
            let v = classify(&samples, &ports, &none);
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            seen = (samples.len(), v.open_requests);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "| {n} | {} | {} | {:.2} / {:.2} / {:.2} |",
            seen.0,
            seen.1,
            times[0],
            times[times.len() / 2],
            times[times.len() - 1]
        );
    }
    Ok(())
}
