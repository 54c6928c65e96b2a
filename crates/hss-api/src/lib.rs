//! What the HSS image listing API is, without any runtime: the page and row
//! model ([`model`], parsed leniently and bounded) and Huawei's AK/SK request
//! signer ([`signer`], `SDK-HMAC-SHA256`).
//!
//! Place in the data flow: the exporter's client (`hss_swr_exporter::hss`)
//! signs each request with [`signer`] and hands each response body to
//! [`model::parse_page_limited`]; the rows go on to the scheduler. This crate
//! has no tokio, axum or reqwest, so the fuzz target and anything else that
//! only needs the model links little. The simulator (`hss-sim`) checks
//! signatures with its own code, never with this signer, so that a
//! canonicalisation bug cannot pass on both sides.

#![forbid(unsafe_code)]

pub mod model;
pub mod signer;

pub use model::{Page, Row, RowOf, RowRef};
