//! Fuzz target: the listing page parser, `hss_api::model::parse_page`, on any
//! bytes, through the checks in `checks.rs` (what they demand is said there;
//! `crates/hss-api/tests/fuzz_seeds.rs` replays the seeds through the same
//! checks in the default test run).
//!
//! Run (needs a nightly toolchain and `cargo install cargo-fuzz`):
//! `cargo +nightly fuzz run --sanitizer none page fuzz/corpus/page fuzz/seeds/page`
//! (see fuzz/README.md).

#![no_main]

mod checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::check(data));
