//! Graceful drain: out of rotation first, then done as soon as Triton is truly idle.
//!
//! `machine` is the pure state machine; `controller` owns it and connects it to polls and to
//! the admin endpoints.

pub mod controller;
pub mod machine;
