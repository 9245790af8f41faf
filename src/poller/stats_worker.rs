//! The statistics worker: reads `GET /v2/models/stats` off the poll path, so a slow or hanging
//! statistics API (up to `--scrape-timeout` per read) never delays a poll.
//!
//! The poller asks once per `--stats-interval` ([`Statistics::ask_if_due`]); the worker reads and
//! publishes the outcome; the next poll takes it ([`Statistics::take`]) into the capacity
//! estimator, which the poller owns. A read is dated by the poll that asked for it, so the
//! estimate's age (`triton_sidecar_statistics_age_seconds`, the `--stats-max-age` rule) is
//! measured on the same axis as before the worker existed. Every failed read is counted by reason
//! in `triton_sidecar_statistics_errors_total` and logged once per change; a refusal (401/403:
//! the API is restricted and the access header is missing or wrong) also shows in
//! `triton_sidecar_statistics_refused`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::task::AbortOnDropHandle;

use crate::derive::capacity::Estimator;
use crate::state::PollState;
use crate::triton::client::ScrapeError;
use crate::triton::stats::{ModelStats, StatsFailure};
use crate::triton::transport::Transport;

/// Why a read failed.
#[derive(Debug, Clone)]
struct Problem {
    /// The label of `triton_sidecar_statistics_errors_total`.
    reason: StatsFailure,
    /// Triton answered 401 or 403: the statistics API is restricted.
    refused: bool,
    /// What went wrong, for the log line.
    message: String,
}

/// One read's outcome, published whole.
#[derive(Debug, Clone)]
struct Read {
    /// The time of the poll that asked for it, on the agent's axis.
    asked_at: Duration,
    /// The parsed statistics, or why there are none.
    outcome: Result<Arc<BTreeMap<String, ModelStats>>, Problem>,
}

/// Read whenever asked (the newest ask wins: asks made during a slow read collapse into one),
/// and send each outcome; every outcome reaches the poller, so every failure is counted.
/// Aborted when the poller is dropped, also in the middle of a read.
async fn stats_worker<T: Transport>(
    client: T,
    mut asks: watch::Receiver<Option<Duration>>,
    reads: mpsc::UnboundedSender<Read>,
) {
    while asks.changed().await.is_ok() {
        let Some(asked_at) = *asks.borrow_and_update() else {
            continue;
        };
        let outcome = match client.model_stats().await {
            Ok(body) => crate::triton::stats::parse(&body)
                .map(Arc::new)
                .map_err(|e| Problem {
                    reason: StatsFailure::Invalid,
                    refused: false,
                    message: e.to_string(),
                }),
            Err(e) => Err(Problem {
                reason: StatsFailure::of(&e),
                refused: matches!(e, ScrapeError::Status(401 | 403)),
                message: e.to_string(),
            }),
        };
        if reads.send(Read { asked_at, outcome }).is_err() {
            return;
        }
    }
}

/// The poller's side of the worker: when to ask, and what a read means for the estimate and the
/// published state.
pub(super) struct Statistics {
    asks: watch::Sender<Option<Duration>>,
    /// At most one read per ask and one ask per poll, all taken at the next poll: the queue
    /// stays short.
    reads: mpsc::UnboundedReceiver<Read>,
    /// Aborted when the poller is dropped, so a read under way ends with the agent.
    worker: AbortOnDropHandle<()>,
    /// When the last read was asked for.
    asked_at: Option<Duration>,
    /// When the read now under way was asked for; `None` once its answer was taken.
    outstanding: Option<Duration>,
    /// Why the last read failed, logged once per change; `None` after a good read.
    problem: Option<String>,
    /// `--stats-interval`.
    interval: Duration,
    /// `--stats-max-age`, named in the log lines.
    max_age: Duration,
}

impl Statistics {
    /// Spawn the worker over `client`. Must be called inside a Tokio runtime.
    pub(super) fn spawn<T: Transport>(client: T, interval: Duration, max_age: Duration) -> Self {
        let (asks, asks_rx) = watch::channel(None);
        let (reads_tx, reads) = mpsc::unbounded_channel();
        let worker = AbortOnDropHandle::new(tokio::spawn(stats_worker(client, asks_rx, reads_tx)));
        Statistics {
            asks,
            reads,
            worker,
            asked_at: None,
            outstanding: None,
            problem: None,
            interval,
            max_age,
        }
    }

    /// The worker has ended (it never does while this side lives): a bug the poll loop reports.
    pub(super) fn worker_finished(&self) -> bool {
        self.worker.is_finished()
    }

    /// Ask for a read if `--stats-interval` has passed since the last ask. One request, not one
    /// per model, so it cannot grow with the model count as config reads would.
    pub(super) fn ask_if_due(&mut self, now: Duration) {
        if matches!(self.asked_at, Some(t) if now.saturating_sub(t) < self.interval) {
            return;
        }
        self.asked_at = Some(now);
        self.outstanding = Some(now);
        self.asks.send_replace(Some(now));
    }

    /// Whether the estimate is published at `now`: the last good read (`read_at`) is at most
    /// `--stats-max-age` old, or a read asked for while it still was is under way. Read inline,
    /// the asking poll itself refreshed the estimate; the worker's answer arrives a poll later,
    /// and that hand-off must not make the estimate lapse for a poll (with `--stats-max-age`
    /// equal to `--stats-interval` it would, every interval). A read that then fails lapses it
    /// at the poll that takes the failure, as the inline read did after its timeout.
    pub(super) fn estimate_fresh(&self, now: Duration, read_at: Option<Duration>) -> bool {
        let Some(read_at) = read_at else {
            return false;
        };
        now.saturating_sub(read_at) <= self.max_age
            || self
                .outstanding
                .is_some_and(|asked| asked.saturating_sub(read_at) <= self.max_age)
    }

    /// Take the reads that arrived since the last poll, in order: a good one into `estimator`,
    /// and each one's date, refusal flag and failure count into `st`.
    pub(super) fn take(&mut self, estimator: &mut Estimator, st: &mut PollState) {
        // `Err`: none waiting, or the worker has ended (the poll loop notices and reports it).
        while let Ok(read) = self.reads.try_recv() {
            self.take_one(read, estimator, st);
        }
    }

    fn take_one(&mut self, read: Read, estimator: &mut Estimator, st: &mut PollState) {
        if self.outstanding.is_some_and(|asked| read.asked_at >= asked) {
            self.outstanding = None;
        }
        let problem = match read.outcome {
            Ok(stats) => {
                let seen = estimator.observe(read.asked_at, &stats);
                if !seen.restarted.is_empty() {
                    tracing::info!(models = ?seen.restarted, "execution statistics went down (Triton restarted or reloaded the model); the capacity estimate starts afresh for those models");
                }
                for (model, ratio) in &seen.revised {
                    tracing::info!(model = %model, cost_ratio = ratio, "execution cost drifted at the batch sizes seen now; the capacity estimate's batch curve is revised");
                }
                st.statistics_refused = false;
                st.statistics_read_at = Some(read.asked_at);
                None
            }
            Err(p) => {
                // A refusal flag already raised stays until a read says otherwise: a timeout
                // says nothing about the header.
                if p.refused {
                    st.statistics_refused = true;
                }
                *st.statistics_errors.entry(p.reason).or_insert(0) += 1;
                Some(format!("{}: {}", p.reason, p.message))
            }
        };
        if problem == self.problem {
            return;
        }
        let max_age = self.max_age.as_secs_f64();
        match (&problem, st.statistics_refused) {
            (None, _) => tracing::info!(
                "Triton's execution statistics are readable; the capacity estimate is on"
            ),
            (Some(why), true) => {
                tracing::warn!(error = %why, max_age_s = max_age, "Triton refuses /v2/models/stats (a restricted API): the capacity estimate lapses --stats-max-age after the last good read. Fix: pass --triton-api-header NAME=VALUE matching Triton's --http-restricted-api (pytriton: the access token of TritonSecurityConfig, header triton-access-token), or open the statistics API, or give --capacity MODEL=RPS")
            }
            (Some(why), false) => {
                tracing::warn!(error = %why, max_age_s = max_age, "Triton's execution statistics are not readable; the capacity estimate lapses --stats-max-age after the last good read")
            }
        }
        self.problem = problem;
    }
}
