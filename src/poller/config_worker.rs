//! The config worker: reads model configs one at a time, off the poll path, and publishes what
//! it learned (ensemble steps; instances, batch sizes and GPUs for the capacity estimate).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::watch;

use crate::triton::client::ScrapeError;
use crate::triton::model_config::ModelInfo;
use crate::triton::transport::Transport;

/// The models whose configs the poller wants read: every model on the newest good page, each
/// with the generation of its load. A model gets a new generation when its counters restart or it
/// comes back to the page (a reload may have changed its config), so the worker asks about it
/// again. Generations are never reused, so a model that left and came back is never mistaken
/// for the load already asked about. Swapped whole when it changes; the worker may skip
/// intermediate values, since only the newest generation of each model matters.
pub(super) type ConfigAsks = Arc<BTreeMap<String, u64>>;

/// The step models of every ensemble, as their configs last said: what `derive` leaves out of
/// the pod request rate.
pub(super) type EnsembleSteps = Arc<HashSet<String>>;

/// What the config worker has learned, published whole when it changes.
#[derive(Debug, Clone, Default)]
pub(super) struct Learned {
    /// See [`EnsembleSteps`].
    pub(super) steps: EnsembleSteps,
    /// Every config read: instances, batch size and GPUs for the capacity estimate and the
    /// pod's utilization (same fetch as the ensemble steps).
    pub(super) info: Arc<HashMap<String, ModelInfo>>,
}

/// Reads model configs one at a time, off the poll path, and publishes what it learned (the
/// ensemble steps, each model's instances, batch size and GPUs) when it changes. Woken by every
/// good page (see [`super::Poller`]'s `ask_for_configs`), so a config that could not be read is
/// asked again at the next one. Aborted when the poller is dropped, also part-way through its
/// list.
pub(super) async fn config_worker<T: Transport>(
    client: T,
    mut asks: watch::Receiver<ConfigAsks>,
    learned_tx: watch::Sender<Learned>,
) {
    // Steps per ensemble. An ensemble asked again keeps its old steps until the new answer
    // arrives, so the pod rate does not jump in between.
    let mut steps_of: HashMap<String, Vec<String>> = HashMap::new();
    let mut info: HashMap<String, ModelInfo> = HashMap::new();
    // The generation of each model's last answer: a model is asked once per load.
    let mut answered: HashMap<String, u64> = HashMap::new();
    while asks.changed().await.is_ok() {
        let models = asks.borrow_and_update().clone();
        for (m, &generation) in models.iter() {
            if answered.get(m) == Some(&generation) {
                continue;
            }
            match client.model_config(m).await {
                Ok(model_info) => {
                    if model_info.steps.is_empty() {
                        steps_of.remove(m);
                    } else {
                        tracing::info!(ensemble = %m, steps = ?model_info.steps, "ensemble found; its steps are left out of the pod request rate");
                        steps_of.insert(m.clone(), model_info.steps.clone());
                    }
                    info.insert(m.clone(), model_info);
                    answered.insert(m.clone(), generation);
                    let steps: HashSet<String> = steps_of.values().flatten().cloned().collect();
                    learned_tx.send_if_modified(|old| {
                        let changed = *old.steps != steps || *old.info != info;
                        if changed {
                            *old = Learned {
                                steps: Arc::new(steps),
                                info: Arc::new(info.clone()),
                            };
                        }
                        changed
                    });
                }
                // An HTTP error answer will not change: the model counts as client-facing and is
                // not asked about again (until it is reloaded).
                Err(e @ ScrapeError::Status(_)) => {
                    tracing::debug!(model = %m, error = %e, "model config not available; counted as client-facing");
                    answered.insert(m.clone(), generation);
                }
                // A transport error: ask again at the next page; until then the old answer stands.
                Err(e) => {
                    tracing::debug!(model = %m, error = %e, "model config not readable yet");
                }
            }
        }
    }
}
