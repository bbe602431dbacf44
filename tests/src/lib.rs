//! Shared helpers for the cross-crate tests and the benchmarks.
//!
//! - `district`: the realistic district the benchmarks are built from.
//! - `altered`: changes altered so that they still pass for changes (the tests of what the
//!   server and the core accept from phones).
//!
//! The crate also holds `visit_writer`, the child process that `tests/crash_safety.rs`
//! kills with SIGKILL while it records visits.

pub mod altered;
pub mod district;

/// Member and device the crash-safety writer opens its replica as.
pub const CRASH_MEMBER: &str = "m-crash-writer";
pub const CRASH_DEVICE: &str = "d-crash-writer";

/// Lines `visit_writer` prints on stdout.
pub const HOUSEHOLD_PREFIX: &str = "household ";
pub const VISIT_PREFIX: &str = "visit ";
