//! The metrics listener (`--metrics-addr`, default `:8003`).
//!
//! GET /metrics  the derived gauges, Prometheus text 0.0.4
//!
//! Any other path is 404, a wrong method 405. The handler serves the page the publisher last
//! rendered: it cannot call Triton or NVML, and a scrape costs one buffer copy.

use std::sync::Arc;

use bytes::Bytes;
use hyper::Method;
use tokio::sync::watch;

use super::server::{text, with_type, Handler};
use crate::metrics::CONTENT_TYPE;

/// The metrics router over the latest rendered page.
pub fn handler(page: watch::Receiver<Bytes>) -> Handler {
    Arc::new(move |req| {
        let resp = match (req.method(), req.uri().path()) {
            (&Method::GET | &Method::HEAD, "/metrics") => {
                with_type(200, CONTENT_TYPE, page.borrow().clone())
            }
            (_, "/metrics") => text(405, "method not allowed\n"),
            _ => text(404, "not found\n"),
        };
        Box::pin(async move { resp })
    })
}
