//! The integration tests, in one binary so that the whole stack is linked
//! once. Each module is one subject; `common` holds what they share (the
//! in-process simulator and exporter, configuration builders, exposition
//! parsing, waits). Run one subject with `cargo test --test it faults::`.

mod common;

mod apis;
mod changes;
mod cli;
mod credentials;
mod dashboard;
mod demo;
mod exporter;
mod faults;
mod golden;
mod hostile_clients;
mod hostile_upstream;
mod hostile_upstream_data;
mod malicious;
mod properties;
mod reload;
mod sdk_parity;
mod soak;
mod web_config;
