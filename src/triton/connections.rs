//! The kernel's view of Triton's client connections: which ones are waiting for an answer.
//!
//! Triton's pending count leaves out executing requests, and its counters move only when an
//! execution ends, so a long execution is invisible on the metrics page. The agent shares the
//! pod's network namespace, so the kernel's socket diagnostics (netlink `sock_diag`, what
//! `ss -ti` prints) show every established connection on Triton's HTTP and gRPC ports, with
//! the bytes each way and the milliseconds since data last arrived and was last sent.
//!
//! [`scan`] reads them (I/O); [`classify`] is the pure rule. Measured on tritonserver 2.51
//! (`tests/e2e/test_drain_long.py` and the probe in the README's drain section):
//! - HTTP/1.1 (one request at a time per connection): a connection whose request bytes arrived
//!   after its last response bytes, or that received bytes and never sent any, is waiting for
//!   an answer. That is exact, whatever the backend.
//! - When the last receive and the last send fall in the same kernel tick (a response sent the
//!   instant its request arrived, or a next request that arrived the instant the response
//!   left), the order cannot be told: the connection is *ambiguous*.
//! - gRPC (HTTP/2) sends control frames both ways (settings, window updates, pings): a unary
//!   request in flight showed `lastsnd == lastrcv`, like an idle connection. Every gRPC
//!   connection is ambiguous; a stream that sends is seen by its traffic.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::nlas::Nla;
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket};

/// Which protocol a Triton port speaks, which decides what its timestamps can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Triton's HTTP/REST port (HTTP/1.1: one request at a time per connection).
    Http,
    /// Triton's gRPC port (HTTP/2: control frames flow both ways).
    Grpc,
}

/// One established TCP socket as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketPair {
    /// Local address and port.
    pub local: SocketAddr,
    /// Remote address and port.
    pub peer: SocketAddr,
}

/// One established connection and its `tcp_info` times and byte counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnSample {
    /// Addresses.
    pub addrs: SocketPair,
    /// The socket's inode (0 for sockets without one).
    pub inode: u32,
    /// `tcpi_bytes_received`.
    pub bytes_received: u64,
    /// `tcpi_bytes_acked`: bytes sent and acknowledged.
    pub bytes_sent: u64,
    /// `tcpi_last_data_recv`, milliseconds.
    pub last_recv_ms: u32,
    /// `tcpi_last_data_sent`, milliseconds.
    pub last_send_ms: u32,
}

/// What Triton's client connections show right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectionView {
    /// Established client connections on Triton's ports (the agent's own left out).
    pub connections: u32,
    /// HTTP connections waiting for an answer (exact).
    pub open_requests: u32,
    /// Connections whose state cannot be told (every gRPC one; HTTP ties).
    pub ambiguous: u32,
    /// The newest data on an ambiguous connection arrived this long ago; `None` without one.
    pub ambiguous_recv_age: Option<Duration>,
    /// The newest data on any connection, either way, moved this long ago; `None` without one.
    pub traffic_age: Option<Duration>,
}

/// Why the connections could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConnScanError {
    /// The netlink socket could not be opened, bound or used (seccomp, no permission).
    #[error("netlink sock_diag: {0}")]
    Netlink(#[from] std::io::Error),
    /// The kernel's answer could not be decoded.
    #[error("netlink sock_diag: undecodable answer: {0}")]
    Decode(String),
    /// The kernel answered with an error code.
    #[error("netlink sock_diag: the kernel answered error {0}")]
    Kernel(i32),
}

/// Offsets in the kernel's `struct tcp_info` (`include/uapi/linux/tcp.h`), an append-only ABI.
/// Read by offset rather than through the crate's full struct, which refuses a `tcp_info`
/// shorter than the newest kernel's.
const TCPI_LAST_DATA_SENT: usize = 44;
const TCPI_LAST_DATA_RECV: usize = 52;
const TCPI_BYTES_ACKED: usize = 120;
const TCPI_BYTES_RECEIVED: usize = 128;

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_ne_bytes)
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_ne_bytes)
}

/// Every established TCP socket in this network namespace, with its `tcp_info`. Blocking
/// (a netlink round trip, about a millisecond per thousand sockets): call it off the runtime.
pub fn scan() -> Result<Vec<ConnSample>, ConnScanError> {
    let mut out = Vec::new();
    for family in [AF_INET, AF_INET6] {
        dump_family(family, &mut out)?;
    }
    Ok(out)
}

fn dump_family(family: u8, out: &mut Vec<ConnSample>) -> Result<(), ConnScanError> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let socket_id = if family == AF_INET {
        SocketId::new_v4()
    } else {
        SocketId::new_v6()
    };
    let mut packet = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::INFO,
            states: StateFlags::ESTABLISHED,
            socket_id,
        })
        .into(),
    );
    packet.finalize();
    let mut buf = vec![0u8; packet.buffer_len()];
    packet.serialize(&mut buf[..]);
    socket.send(&buf[..], 0)?;

    let mut rx = vec![0u8; 64 * 1024];
    loop {
        rx.clear();
        let size = socket.recv(&mut rx, 0)?;
        let mut offset = 0;
        while offset < size {
            let bytes = rx.get(offset..size).unwrap_or_default();
            let msg = <NetlinkMessage<SockDiagMessage>>::deserialize(bytes)
                .map_err(|e| ConnScanError::Decode(e.to_string()))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) => {
                    return Err(ConnScanError::Kernel(e.code.map(|c| c.get()).unwrap_or(0)))
                }
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                    let id = &r.header.socket_id;
                    let info = r.nlas.iter().find_map(|n| match n {
                        Nla::TcpInfo(b) => Some(b.as_slice()),
                        _ => None,
                    });
                    if let Some(info) = info {
                        out.push(ConnSample {
                            addrs: SocketPair {
                                local: SocketAddr::new(unmap(id.source_address), id.source_port),
                                peer: SocketAddr::new(
                                    unmap(id.destination_address),
                                    id.destination_port,
                                ),
                            },
                            inode: r.header.inode,
                            bytes_received: u64_at(info, TCPI_BYTES_RECEIVED).unwrap_or(0),
                            bytes_sent: u64_at(info, TCPI_BYTES_ACKED).unwrap_or(0),
                            last_recv_ms: u32_at(info, TCPI_LAST_DATA_RECV).unwrap_or(u32::MAX),
                            last_send_ms: u32_at(info, TCPI_LAST_DATA_SENT).unwrap_or(u32::MAX),
                        });
                    }
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

/// `::ffff:a.b.c.d` is `a.b.c.d`: a dual-stack listener reports IPv4 peers mapped.
fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The inodes of this process's own sockets (`/proc/self/fd`), so the agent's polls of Triton
/// never count as a client's work. Empty when `/proc` cannot be read.
pub fn own_socket_inodes() -> HashSet<u32> {
    let mut inodes = HashSet::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return inodes;
    };
    for entry in dir.flatten() {
        if let Ok(target) = std::fs::read_link(entry.path()) {
            let t = target.to_string_lossy();
            if let Some(n) = t
                .strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|n| n.parse().ok())
            {
                inodes.insert(n);
            }
        }
    }
    inodes
}

/// The pure rule: Triton's side of every connection to `ports`, less those whose peer is one
/// of the agent's own sockets (`own`, inodes), classified.
pub fn classify(
    samples: &[ConnSample],
    ports: &[(u16, Protocol)],
    own: &HashSet<u32>,
) -> ConnectionView {
    // The agent's own client sockets, by their local address: Triton's side of each has it as
    // its peer.
    let ours: HashSet<SocketAddr> = samples
        .iter()
        .filter(|s| own.contains(&s.inode) && s.inode != 0)
        .map(|s| s.addrs.local)
        .collect();
    let mut v = ConnectionView::default();
    for s in samples {
        let Some(&(_, proto)) = ports.iter().find(|(p, _)| *p == s.addrs.local.port()) else {
            continue;
        };
        if ours.contains(&s.addrs.peer) || own.contains(&s.inode) {
            continue;
        }
        v.connections += 1;
        let newest = s.last_recv_ms.min(s.last_send_ms);
        let age = Duration::from_millis(u64::from(newest));
        v.traffic_age = Some(v.traffic_age.map_or(age, |a| a.min(age)));
        let awaiting =
            s.bytes_received > 0 && (s.bytes_sent == 0 || s.last_recv_ms < s.last_send_ms);
        let tie = s.bytes_received > 0 && s.last_recv_ms == s.last_send_ms;
        match proto {
            Protocol::Http if awaiting => v.open_requests += 1,
            Protocol::Http if !tie => {}
            _ => {
                if s.bytes_received == 0 {
                    continue; // nothing ever asked on it
                }
                v.ambiguous += 1;
                let recv = Duration::from_millis(u64::from(s.last_recv_ms));
                v.ambiguous_recv_age = Some(v.ambiguous_recv_age.map_or(recv, |a| a.min(recv)));
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(
        local: u16,
        peer: u16,
        inode: u32,
        rcv: u64,
        snt: u64,
        lr: u32,
        ls: u32,
    ) -> ConnSample {
        ConnSample {
            addrs: SocketPair {
                local: SocketAddr::from(([127, 0, 0, 1], local)),
                peer: SocketAddr::from(([127, 0, 0, 1], peer)),
            },
            inode,
            bytes_received: rcv,
            bytes_sent: snt,
            last_recv_ms: lr,
            last_send_ms: ls,
        }
    }
    const PORTS: [(u16, Protocol); 2] = [(8000, Protocol::Http), (8001, Protocol::Grpc)];

    /// Table of single connections on the HTTP port, with the measured shapes of `ss -ti`.
    #[test]
    fn http_connections_table() {
        let none = HashSet::new();
        // (what, received, sent, lastrcv, lastsnd) -> (open, ambiguous)
        let cases: [(&str, u64, u64, u32, u32, u32, u32); 6] = [
            ("idle keep-alive, answered", 220, 183, 6284, 272, 0, 0),
            (
                "first request executing (measured 220 B in, 0 out, equal times)",
                220,
                0,
                1216,
                1216,
                1,
                0,
            ),
            (
                "next request on a keep-alive connection",
                440,
                183,
                1012,
                2512,
                1,
                0,
            ),
            ("answered the same tick it arrived", 4, 4, 2508, 2508, 0, 1),
            ("streaming a response (SSE)", 165, 1400, 5888, 40, 0, 0),
            ("opened, never asked", 0, 0, 900, 900, 0, 0),
        ];
        for (what, rcv, snt, lr, ls, open, amb) in cases {
            let v = classify(&[sample(8000, 40000, 7, rcv, snt, lr, ls)], &PORTS, &none);
            assert_eq!((v.open_requests, v.ambiguous), (open, amb), "{what}: {v:?}");
            assert_eq!(v.connections, 1, "{what}");
            assert_eq!(
                v.traffic_age,
                Some(Duration::from_millis(u64::from(lr.min(ls)))),
                "{what}"
            );
        }
    }

    #[test]
    fn grpc_connections_are_ambiguous_and_other_ports_ignored() {
        let none = HashSet::new();
        let v = classify(
            &[
                // Measured: a unary gRPC request executing, 415 B in, 72 B out, equal times.
                sample(8001, 40001, 8, 415, 72, 1264, 1264),
                sample(8001, 40002, 9, 0, 0, 50, 50),
                sample(8002, 40003, 10, 100, 0, 5, 5), // the metrics port: not inference
                sample(40004, 8000, 11, 100, 0, 5, 5), // a client socket, not Triton's side
            ],
            &PORTS,
            &none,
        );
        assert_eq!(v.connections, 2);
        assert_eq!(v.ambiguous, 1);
        assert_eq!(v.open_requests, 0);
        assert_eq!(v.ambiguous_recv_age, Some(Duration::from_millis(1264)));
        assert_eq!(v.traffic_age, Some(Duration::from_millis(50)));
    }

    #[test]
    fn the_agents_own_connections_never_count() {
        // The agent (inode 42) polls Triton from port 50000; Triton's side has it as its peer.
        let own: HashSet<u32> = [42].into_iter().collect();
        let samples = [
            sample(50000, 8000, 42, 0, 120, 3, 3),
            sample(8000, 50000, 0, 120, 0, 3, 3),
            sample(8000, 50001, 43, 120, 0, 9, 9),
        ];
        let v = classify(&samples, &PORTS, &own);
        assert_eq!(v.connections, 1, "{v:?}");
        assert_eq!(v.open_requests, 1);
        // Without the exclusion the agent's own poll would read as an open request.
        let v = classify(&samples, &PORTS, &HashSet::new());
        assert_eq!(v.open_requests, 2);
    }

    #[test]
    fn nothing_listening_is_an_empty_view() {
        let v = classify(&[], &PORTS, &HashSet::new());
        assert_eq!(v, ConnectionView::default());
    }

    /// The real kernel, on loopback: a server that reads a request and does not answer sees one
    /// open request; once it answers, none; our own client sockets are left out.
    #[test]
    fn the_kernel_reports_an_open_request_on_loopback() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let ports = [(port, Protocol::Http)];
        let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        client.write_all(b"ping").expect("write");
        let mut got = [0u8; 4];
        server.read_exact(&mut got).expect("read");
        std::thread::sleep(Duration::from_millis(30));
        let samples = match scan() {
            Ok(s) => s,
            Err(e) => {
                // A sandbox without netlink: say so rather than pass silently.
                eprintln!("SKIP: {e}");
                return;
            }
        };
        // Both ends are this process's sockets: count them as a client's here by passing no
        // own inodes, then check the exclusion with the real inodes.
        let v = classify(&samples, &ports, &HashSet::new());
        assert_eq!((v.connections, v.open_requests), (1, 1), "{v:?}");
        let v = classify(&samples, &ports, &own_socket_inodes());
        assert_eq!(v.connections, 0, "own sockets must be left out: {v:?}");
        server.write_all(b"pong").expect("answer");
        client.read_exact(&mut got).expect("read answer");
        std::thread::sleep(Duration::from_millis(30));
        let v = classify(&scan().expect("scan"), &ports, &HashSet::new());
        assert_eq!((v.connections, v.open_requests), (1, 0), "{v:?}");
    }
}
