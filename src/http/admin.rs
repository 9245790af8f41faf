//! The admin listener (`--admin-addr`, default `:8004`). Probes and the drain; fence it with
//! the NetworkPolicy, since anyone who reaches `/wait-for-drain` can take the pod out of rotation.
//!
//! GET  /livez           200 while the agent runs
//! GET  /readyz          200 `ready`, or 503 with the reason (`draining`, `model not ready: m`, ...)
//! GET  /wait-for-drain  starts the drain (trigger `prestop-http`; `?trigger=cli` for the CLI) and
//!                       answers 200 with a one-line summary once it has completed
//! POST /drain           starts the drain, 202 at once
//! POST /drain/cancel    back to serving; 409 once a signal arrived
//! GET  /drain/status    JSON: state, trigger, result, elapsed_ms, pending, quiet_ms, timeout_ms,
//!                       terminating (a signal arrived: the drain cannot be cancelled)
//!
//! Any other path is 404, a wrong method 405. No handler calls Triton or NVML.

use std::sync::Arc;

use hyper::Method;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use super::server::{text, with_type, Handler, Resp};
use crate::drain::controller::DrainHandle;
use crate::drain::machine::Trigger;
use crate::state::{readiness, PollState};

/// What the admin routes read.
#[derive(Clone)]
pub struct AdminState {
    /// The drain controller.
    pub drain: DrainHandle,
    /// The latest poll.
    pub polls: watch::Receiver<Arc<PollState>>,
    /// `/wait-for-drain` calls held open now: each holds a token of the tracker, and the
    /// agent closes its listeners only once they are all answered (or 1 s has passed).
    pub waiters: TaskTracker,
}

/// The admin router.
pub fn handler(st: AdminState) -> Handler {
    Arc::new(move |req| {
        let st = st.clone();
        Box::pin(async move {
            route(
                st,
                req.method().clone(),
                req.uri().path().to_string(),
                req.uri().query().unwrap_or("").to_string(),
            )
            .await
        })
    })
}

async fn route(st: AdminState, method: Method, path: String, query: String) -> Resp {
    let allowed: &[Method] = match path.as_str() {
        "/livez" | "/readyz" | "/wait-for-drain" | "/drain/status" => &[Method::GET, Method::HEAD],
        "/drain" | "/drain/cancel" => &[Method::POST],
        _ => return text(404, "not found\n"),
    };
    if !allowed.contains(&method) {
        return text(405, "method not allowed\n");
    }
    match path.as_str() {
        "/livez" => text(200, "ok\n"),
        "/readyz" => {
            let poll = st.polls.borrow().clone();
            let (ready, why) = readiness(&poll, st.drain.view().phase);
            text(if ready { 200 } else { 503 }, format!("{why}\n"))
        }
        "/drain/status" => with_type(
            200,
            "application/json",
            st.drain.view().status_json(st.drain.now()),
        ),
        "/drain" => match st.drain.start(Trigger::Post).await {
            Ok(_) => text(202, "draining\n"),
            Err(e) => text(503, format!("{e}\n")),
        },
        "/drain/cancel" => match st.drain.cancel().await {
            Ok(Ok(())) => text(200, "serving\n"),
            Ok(Err(e)) => text(409, format!("{e}\n")),
            Err(e) => text(503, format!("{e}\n")),
        },
        "/wait-for-drain" => {
            let trigger = if query.split('&').any(|kv| kv == "trigger=cli") {
                Trigger::Cli
            } else {
                Trigger::PrestopHttp
            };
            let _waiting = st.waiters.token();
            let generation = match st.drain.start(trigger).await {
                Ok(g) => g,
                Err(e) => return text(503, format!("{e}\n")),
            };
            match st.drain.wait(generation).await {
                Ok(c) => text(200, c.summary()),
                Err(e) => text(503, format!("{e}\n")),
            }
        }
        _ => text(404, "not found\n"),
    }
}
