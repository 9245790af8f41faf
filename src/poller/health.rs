//! Triton's health as the poller sees it: the server's and each required model's readiness,
//! with the hysteresis that keeps a busy Triton in rotation.

use super::Poller;
use crate::state::Health;
use crate::triton::client::ScrapeError;
use crate::triton::transport::{Clock, Transport};

/// Health probe timeouts in a row that a ready pod rides out before `/readyz` turns 503.
///
/// **Readiness hysteresis**: a probe that times out says Triton is busy, not that it is not
/// ready; at peak load one slow answer must not take the pod out of rotation. An explicit
/// "not ready" or a refused connection turns readiness off at once. The drain follows the same
/// logic: it never takes a timeout for "gone".
pub const HEALTH_TIMEOUTS_TOLERATED: u32 = 3;

impl<T: Transport, C: Clock> Poller<T, C> {
    /// Apply [`HEALTH_TIMEOUTS_TOLERATED`].
    pub(super) fn settle_health(&mut self, probe: Health, timed_out: bool) -> Health {
        if !timed_out {
            self.health_timeouts = 0;
            return probe;
        }
        if self.state.health.is_ready() && self.health_timeouts < HEALTH_TIMEOUTS_TOLERATED {
            self.health_timeouts += 1;
            if self.health_timeouts == 1 {
                tracing::info!(
                    "Triton's health probe timed out; staying ready unless it keeps timing out"
                );
            }
            return Health::Ready;
        }
        probe
    }

    /// Server and required-model readiness, and whether a probe timed out (rather than
    /// answering "not ready" or being refused).
    pub(super) async fn health(&self) -> (Health, bool) {
        let server = self.client.server_ready();
        let models = futures_util::future::join_all(
            self.cfg
                .require_models
                .iter()
                .map(|m| async move { (m, self.client.model_ready(m).await) }),
        );
        let (server, models) = tokio::join!(server, models);
        match server {
            Err(e) => {
                let timed_out = matches!(e, ScrapeError::Timeout);
                return (Health::Unreachable(e.to_string()), timed_out);
            }
            Ok(false) => {
                return (
                    Health::NotReady("triton not ready (/v2/health/ready)".to_string()),
                    false,
                )
            }
            Ok(true) => {}
        }
        let not_ready: Vec<&str> = models
            .iter()
            .filter(|(_, r)| !matches!(r, Ok(true)))
            .map(|(m, _)| m.as_str())
            .collect();
        if not_ready.is_empty() {
            (Health::Ready, false)
        } else {
            // Only timeouts: Triton is busy, not saying no.
            let timed_out = models
                .iter()
                .all(|(_, r)| matches!(r, Ok(true) | Err(ScrapeError::Timeout)));
            (
                Health::NotReady(format!("model not ready: {}", not_ready.join(","))),
                timed_out,
            )
        }
    }
}
