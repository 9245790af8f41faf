//! The metrics listener (`--metrics-addr`, default `:8003`).
//!
//! GET /metrics  the derived gauges, Prometheus text 0.0.4; 503 `metrics not rendered yet` until
//!               the first page exists (an empty 200 would read as every series absent)
//!
//! Any other path is 404, a wrong method 405. The handler serves the page the publisher last
//! rendered: it cannot call Triton or NVML, and a scrape costs one buffer copy. The agent renders
//! its first page before it listens, so in practice a scrape never meets the 503.

use std::sync::Arc;

use bytes::Bytes;
use hyper::Method;
use tokio::sync::watch;

use super::server::{text, with_type, Handler};
use crate::metrics::CONTENT_TYPE;

/// The body of the 503 served before the first render.
pub const NOT_RENDERED: &str = "metrics not rendered yet: the agent is starting\n";

/// The metrics router over the latest rendered page; `None` until the first render.
pub fn handler(page: watch::Receiver<Option<Bytes>>) -> Handler {
    Arc::new(move |req| {
        let resp = match (req.method(), req.uri().path()) {
            (&Method::GET | &Method::HEAD, "/metrics") => match page.borrow().clone() {
                Some(p) => with_type(200, CONTENT_TYPE, p),
                None => text(503, NOT_RENDERED),
            },
            (_, "/metrics") => text(405, "method not allowed\n"),
            _ => text(404, "not found\n"),
        };
        Box::pin(async move { resp })
    })
}
