//! The HTTP surface: two listeners, each with its own limits.
//!
//! `metrics` serves `/metrics` on `--metrics-addr`; `admin` serves probes and the drain on
//! `--admin-addr`. Both only read published state.

pub mod admin;
pub mod metrics;
pub mod server;
