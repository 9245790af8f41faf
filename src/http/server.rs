//! A small HTTP/1 server with the limits a sidecar needs on every listener:
//! a connection cap, a header-read timeout (slowloris), and caps on header size and count.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Response type of every route.
pub type Resp = Response<Full<Bytes>>;
/// A boxed route future.
pub type RespFuture = Pin<Box<dyn Future<Output = Resp> + Send>>;
/// A request handler.
pub type Handler = Arc<dyn Fn(Request<Incoming>) -> RespFuture + Send + Sync>;

/// Per-listener limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections accepted at once. Per listener, so held `/wait-for-drain` calls on
    /// the admin port can never starve `/metrics`, and the cap is far above what a kubelet,
    /// Prometheus and a few hooks need.
    pub max_connections: usize,
    /// Time allowed to send the request head.
    pub header_read_timeout: Duration,
    /// Maximum number of request headers.
    pub max_headers: usize,
    /// Read buffer cap, which bounds the request head size (hyper's minimum is 8 KiB).
    pub max_buf_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(5),
            max_headers: 64,
            max_buf_size: 16 * 1024,
        }
    }
}

/// A plain-text response.
pub fn text(status: u16, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A response with an explicit content type.
pub fn with_type(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = text(status, body);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    r
}

/// Serve `listener` until `shutdown` is cancelled, then let open connections finish (up to 1 s).
pub async fn serve(
    listener: TcpListener,
    limits: Limits,
    handler: Handler,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    // Tells every open connection to finish its response and close, and says when all have.
    let graceful = GracefulShutdown::new();
    // Owns the connection tasks, so that one still open after the grace period is aborted when
    // `serve` returns rather than outliving its server.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.cancelled() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
        };
        let (stream, _peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let svc = hyper::service::service_fn(move |req| {
            let h = handler.clone();
            async move { Ok::<_, Infallible>(h(req).await) }
        });
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_headers(limits.max_headers)
            .max_buf_size(limits.max_buf_size);
        // Watched before it is spawned, so that a stop right after the accept reaches it too.
        let conn = graceful.watch(b.serve_connection(TokioIo::new(stream), svc));
        conns.spawn(async move {
            let _permit = permit;
            let _ = conn.await;
        });
        // Reap finished connection tasks so the set does not grow.
        while conns.try_join_next().is_some() {}
    }
    // A request under way gets 1 s to finish; an idle keep-alive connection closes at once.
    let _ = tokio::time::timeout(Duration::from_secs(1), graceful.shutdown()).await;
}
