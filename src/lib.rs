//! hss-swr-exporter: a Prometheus exporter for Huawei Cloud HSS container-image
//! security results (the SWR image repository listing).
//!
//! # Layout
//!
//! Data flows one way, and no module reaches back up:
//!
//! ```text
//! config -> collect::scheduler -> hss::client (budget, auth, paging) -> rows
//!        -> collect::aggregate -> snapshot -> metrics -> web
//! ```
//!
//! - [`config`]: the YAML schema, defaults, `${ENV}` expansion and validation.
//! - [`hss`]: the API client: its own settings types (which `config` fills in
//!   and re-exports, so `hss` never reads `config`), lenient row model, the
//!   shared request budget, credential kinds and the AK/SK signer, calls with
//!   retries and paging.
//! - [`collect`]: scopes and lanes, aggregation of rows into namespace
//!   statistics, and the published snapshots.
//! - [`metrics`]: snapshots and self-metrics rendered as Prometheus text.
//! - [`web`]: the HTTP endpoints.
//! - `simulator`: the built-in HSS API simulator (the `hss-sim` crate, with the
//!   default `simulator` feature) used by tests, benchmarks and the demo.
//! - [`app`]: wires the pieces together for each subcommand.
//! - [`logging`] and [`fsutil`]: log line formats and atomic file writes,
//!   beside the flow.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod app;
pub mod collect;
pub mod config;
pub mod fsutil;
pub mod hss;
pub mod logging;
pub mod metrics;
#[cfg(feature = "simulator")]
pub use hss_sim as simulator;
pub mod web;

/// The version of this build, from Cargo.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git revision this build came from, or `unknown`.
pub const REVISION: &str = env!("HSS_SWR_REVISION");
