//! Everything that talks to, or reads, Triton: the text parser, the snapshot built from a page,
//! and the HTTP client.

pub mod client;
pub mod connections;
pub mod snapshot;
pub mod stats;
pub mod text;
pub mod transport;
