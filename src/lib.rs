//! triton-sidecar: per-pod autoscaling gauges, GPU gauges and graceful drain for NVIDIA Triton.
//!
//! ```text
//! Triton /metrics + /v2/health ──► poller ──► PollState ──► publisher ──► cached /metrics page
//! Triton model configs ──► config worker ─┤        │
//! Triton /v2/models/stats ─► stats worker ┘        └──► drain controller ──► DrainView
//!                                  (the poll interval follows the drain phase)
//! NVML thread ──► GPU state ──────────────────────────────► publisher
//! ```
//! Each arrow is one direction; the HTTP handlers only read published state. Shutdown is one
//! `CancellationToken`, cancelled here and handed to every task: nothing below reads a global.
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod derive;
pub mod drain;
pub mod gpu;
pub mod http;
pub mod metrics;
pub mod poller;
pub mod signals;
pub mod state;
pub mod triton;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use config::Config;
use drain::controller::{DrainHandle, DrainView};
use gpu::GpuState;
use poller::Poller;
use state::PollState;
use triton::client::{ClientBuildError, TritonClient};

/// Errors that stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A background task ended on its own (a bug): exit rather than serve frozen gauges.
    #[error("internal task '{0}' stopped unexpectedly")]
    TaskFailed(&'static str),
    /// A listener could not be bound (port taken, no permission).
    #[error("cannot listen on {addr} ({flag}): {source}")]
    Bind {
        /// The flag that names the address.
        flag: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error(transparent)]
    Client(#[from] ClientBuildError),
}

impl AgentError {
    /// The process exit code for this error, as the README's "Exit codes" lists them: 3 only
    /// when a listener cannot be bound, 4 when an internal task stopped, 1 otherwise. (2 is an
    /// invalid flag, decided before the agent is built.)
    pub fn exit_code(&self) -> u8 {
        match self {
            // A port taken or not permitted: the one start-up failure a manifest change fixes.
            AgentError::Bind { .. } => 3,
            // A bug: the kubelet restarts the container; the log line names the task.
            AgentError::TaskFailed(_) => 4,
            AgentError::Client(_) => 1,
        }
    }
}

/// A bound, not yet running agent. Binding first lets tests use port 0 and read the ports.
pub struct Agent {
    config: Config,
    metrics: TcpListener,
    admin: TcpListener,
}

async fn bind(flag: &'static str, addr: SocketAddr) -> Result<TcpListener, AgentError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AgentError::Bind { flag, addr, source })
}

impl Agent {
    /// Bind both listeners.
    pub async fn bind(config: Config) -> Result<Agent, AgentError> {
        let metrics = bind("--metrics-addr", config.metrics_addr).await?;
        let admin = bind("--admin-addr", config.admin_addr).await?;
        Ok(Agent {
            config,
            metrics,
            admin,
        })
    }

    /// The bound metrics address.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics
            .local_addr()
            .unwrap_or(self.config.metrics_addr)
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr().unwrap_or(self.config.admin_addr)
    }

    /// Run until the drain that the first item of `signals` starts has completed and every
    /// `/wait-for-drain` caller has had its answer. A second item stops promptly.
    pub async fn run<S>(self, mut signals: S) -> Result<(), AgentError>
    where
        S: Stream<Item = ()> + Unpin + Send,
    {
        // The bound addresses, not the configured ones: with port 0 only these say where the
        // agent listens (the listeners move into their servers below).
        let (metrics_addr, admin_addr) = (self.metrics_addr(), self.admin_addr());
        let Agent {
            config,
            metrics,
            admin,
        } = self;
        let origin = Instant::now();
        // Cancelled once, when the agent stops: every task below is handed a clone.
        let shutdown = CancellationToken::new();
        let client = TritonClient::new(&config.client)?;

        let (poll_tx, poll_rx) = watch::channel(Arc::new(PollState::default()));
        // Every background task, by name: one that ends before shutdown is a bug, and serving
        // frozen gauges with /livez at 200 would hide it, so the agent exits and the kubelet
        // restarts it.
        let mut tasks = Supervisor::default();
        let (drain, phase_rx, drain_task) =
            drain::controller::spawn(config.drain, origin, poll_rx.clone());
        tasks.watch(DRAIN_CONTROLLER, drain_task);
        let poller = Poller::new(config.poller.clone(), client, origin);
        tasks.spawn(
            "poller",
            poller::poll_loop(poller, poll_tx, phase_rx, shutdown.clone()),
        );
        let (gpu_rx, gpu_task) = gpu::spawn(&config.gpu, poll_rx.clone(), shutdown.clone());
        if let Some(t) = gpu_task {
            tasks.watch(GPU_TASK, t);
        }

        // Render once before serving, so the first scrape already gets the agent's own series
        // (`triton_up` 0, build info) and the handler's "not rendered yet" 503 is never seen.
        let mut registry = metrics::Metrics::new();
        let first = render(
            &mut registry,
            origin.elapsed(),
            &mut poll_rx.clone(),
            &mut drain.subscribe(),
            &mut gpu_rx.clone(),
        );
        let (page_tx, page_rx) = watch::channel(Some(first));
        tasks.spawn(
            "publisher",
            publish(
                origin,
                registry,
                poll_rx.clone(),
                drain.subscribe(),
                gpu_rx,
                page_tx,
                shutdown.clone(),
            ),
        );

        let waiters = TaskTracker::new();
        let limits = http::server::Limits::default();
        let admin_state = http::admin::AdminState {
            drain: drain.clone(),
            polls: poll_rx.clone(),
            waiters: waiters.clone(),
        };
        for (name, listener, handler) in [
            ("metrics server", metrics, http::metrics::handler(page_rx)),
            ("admin server", admin, http::admin::handler(admin_state)),
        ] {
            tasks.spawn(
                name,
                http::server::serve(listener, limits, handler, shutdown.clone()),
            );
        }
        tracing::info!(metrics = %metrics_addr, admin = %admin_addr, triton = %config.client.base_url, "triton-sidecar started");

        let failed = tokio::select! {
            _ = lifecycle(&drain, &mut signals) => None,
            task = tasks.first_to_end() => Some(task),
        };
        if let Some(task) = failed {
            tracing::error!(task, "internal task stopped unexpectedly; exiting");
            shutdown.cancel();
            tasks.wait_for_stopped().await;
            return Err(AgentError::TaskFailed(task));
        }

        // Every /wait-for-drain caller gets its answer before the listeners close.
        waiters.close();
        let _ = tokio::time::timeout(Duration::from_secs(1), waiters.wait()).await;
        shutdown.cancel();
        tasks.wait_for_stopped().await;
        tracing::info!("triton-sidecar stopped");
        Ok(())
    }
}

/// The drain controller's name: it runs until the last [`DrainHandle`] is gone, not until
/// shutdown, so shutdown does not wait for it.
const DRAIN_CONTROLLER: &str = "drain controller";
/// The GPU task's name. Shutdown has never waited for it (it stops on the token by itself).
const GPU_TASK: &str = "GPU task";

/// The agent's background tasks, each under its name, so the one that ends is named in the log.
#[derive(Default)]
struct Supervisor {
    /// One watcher per task; each resolves to its task's name, however the task ended (a panic
    /// included: the watcher holds the task's handle, not the task).
    set: tokio::task::JoinSet<&'static str>,
    /// The tasks not yet ended.
    running: Vec<&'static str>,
}

impl Supervisor {
    /// Spawn `task` under `name`.
    fn spawn<F>(&mut self, name: &'static str, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.watch(name, tokio::spawn(task));
    }

    /// Watch a task spawned elsewhere under `name`.
    fn watch(&mut self, name: &'static str, task: tokio::task::JoinHandle<()>) {
        self.running.push(name);
        self.set.spawn(async move {
            let _ = task.await;
            name
        });
    }

    /// The name of the first task to end. Pending forever when none runs.
    async fn first_to_end(&mut self) -> &'static str {
        match self.set.join_next().await {
            Some(Ok(name)) => {
                self.running.retain(|n| *n != name);
                name
            }
            // Watchers never panic and are never aborted while `self` lives.
            _ => std::future::pending().await,
        }
    }

    /// After the token is cancelled: wait for every task that ends on it (all but the drain
    /// controller and the GPU task).
    async fn wait_for_stopped(&mut self) {
        while self
            .running
            .iter()
            .any(|n| *n != DRAIN_CONTROLLER && *n != GPU_TASK)
        {
            match self.set.join_next().await {
                Some(Ok(name)) => self.running.retain(|n| *n != name),
                _ => break,
            }
        }
    }
}

/// Wait for the first signal, drain, and return when the drain has completed or a second
/// signal asks to stop now.
async fn lifecycle<S: Stream<Item = ()> + Unpin + Send>(drain: &DrainHandle, signals: &mut S) {
    if signals.next().await.is_none() {
        // No signal source: run until the process is killed.
        std::future::pending::<()>().await;
    }
    let Ok(generation) = drain.terminate().await else {
        return;
    };
    let second = async {
        match signals.next().await {
            Some(()) => (),
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = drain.wait(generation) => {}
        _ = second => {
            drain.abort().await;
            let _ = tokio::time::timeout(Duration::from_millis(500), drain.wait(generation)).await;
        }
    }
}

/// Render the current inputs into a page, marking them seen; `now` is on the agent's
/// monotonic axis and dates the drain-elapsed gauge.
fn render(
    m: &mut metrics::Metrics,
    now: Duration,
    polls: &mut watch::Receiver<Arc<PollState>>,
    drains: &mut watch::Receiver<Arc<DrainView>>,
    gpus: &mut watch::Receiver<GpuState>,
) -> Bytes {
    let p = polls.borrow_and_update().clone();
    let d = drains.borrow_and_update().clone();
    let g = gpus.borrow_and_update().clone();
    Bytes::copy_from_slice(m.render_at(&p, &d, &g, now).as_bytes())
}

/// Re-render the page whenever an input changes, and every second while a drain is under way
/// (the drain-elapsed gauge must keep moving even if a poll hangs). The only writer of the
/// registry.
async fn publish(
    origin: Instant,
    mut m: metrics::Metrics,
    mut polls: watch::Receiver<Arc<PollState>>,
    mut drains: watch::Receiver<Arc<DrainView>>,
    mut gpus: watch::Receiver<GpuState>,
    page: watch::Sender<Option<Bytes>>,
    shutdown: CancellationToken,
) {
    // The GPU side may have nothing to send (GPU gauges off): its closing is not an exit.
    let mut gpu_open = true;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        page.send_replace(Some(render(
            &mut m,
            origin.elapsed(),
            &mut polls,
            &mut drains,
            &mut gpus,
        )));
        // A drain that changes phase meanwhile wakes `drains.changed()` at once.
        let draining = drains.borrow().phase == state::Phase::Draining;
        tokio::select! {
            r = polls.changed() => if r.is_err() { return },
            r = drains.changed() => if r.is_err() { return },
            r = gpus.changed(), if gpu_open => if r.is_err() { gpu_open = false },
            _ = tick.tick(), if draining => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Bind and run: what the binary calls.
pub async fn run<S>(config: Config, signals: S) -> Result<(), AgentError>
where
    S: Stream<Item = ()> + Unpin + Send,
{
    Agent::bind(config).await?.run(signals).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_supervisor_names_the_task_that_ended() {
        let mut tasks = Supervisor::default();
        tasks.spawn("forever", std::future::pending());
        tasks.spawn("quick", async {});
        tasks.spawn("panics", async { panic!("a bug") });
        let mut ended = vec![tasks.first_to_end().await, tasks.first_to_end().await];
        ended.sort_unstable();
        assert_eq!(ended, ["panics", "quick"]);
        assert_eq!(tasks.running, ["forever"]);
    }

    #[test]
    fn each_error_has_its_documented_exit_code() {
        let bind = AgentError::Bind {
            flag: "--metrics-addr",
            addr: ([127, 0, 0, 1], 8003).into(),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        assert_eq!(bind.exit_code(), 3, "the README's promise: 3 is a port");
        assert_eq!(AgentError::TaskFailed("poller").exit_code(), 4);
        // Any reqwest builder error stands in for a client that cannot be built.
        let bad = reqwest::Proxy::http("http://[").expect_err("not a URL");
        assert_eq!(AgentError::Client(ClientBuildError(bad)).exit_code(), 1);
    }
}
