//! SIGTERM and SIGINT, as a stream of `()`: the first starts the drain, a second stops now.

use futures_util::{Stream, StreamExt};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_tokio::Signals;

/// The process's termination signals.
pub fn os_signals() -> std::io::Result<impl Stream<Item = ()> + Unpin + Send> {
    let signals = Signals::new([SIGTERM, SIGINT])?;
    Ok(signals.map(|sig| {
        tracing::info!(
            signal = if sig == SIGTERM { "SIGTERM" } else { "SIGINT" },
            "signal received"
        );
    }))
}
