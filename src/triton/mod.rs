//! Everything that talks to, or reads, Triton: the text parser, the snapshot built from a page,
//! the statistics and model-config parsers, the HTTP client, and the transport seam.

pub mod client;
pub mod connections;
pub mod model_config;
pub mod snapshot;
pub mod stats;
pub mod text;
pub mod transport;
