//! Fault injection: the [`Faults`] settings and [`Scripted`] answers, and
//! how one listing call is failed (an error status), delayed (a hang) or cut
//! (a connection reset, a truncated body): a scripted answer first, else a
//! draw by rate.
//!
//! Place in the project: part of the simulator's HTTP side (`server`). A
//! listing call draws its fault after authentication and quota; the faults
//! that shape pages rather than calls (`total_num` drift, repeated rows,
//! loose types, an empty `data_list`) are applied where a page is built
//! (`listing.rs`).

use std::collections::VecDeque;
use std::time::Duration;

use axum::body::{Body, Bytes};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use super::{ApiError, Quota, Simulator, lock, not_found_error};
use crate::auth;
use crate::data;

/// How long a "hang" fault delays an answer when [`Faults::hang`] is unset:
/// longer than any sensible client timeout.
pub const DEFAULT_HANG: Duration = Duration::from_secs(60);

/// How long a "reset" answer waits after its first half before breaking.
const RESET_AFTER: Duration = Duration::from_millis(20);

/// Faults the simulator injects into listing answers. Rates are
/// probabilities per call (0..=1), drawn after authentication and quota, in
/// this order on one draw: fail, throttle, reset, malformed, hang.
///
/// As JSON (`POST /_sim/faults`) every field is optional and unknown fields
/// are refused; `hang` is a humantime string such as `"45s"`.
#[derive(Clone, Default, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Probability of a 500 answer (`HSS.0000`).
    pub fail_rate: f64,
    /// Probability of a 429 answer (`APIGW.0308`), independent of the quota.
    pub throttle_rate: f64,
    /// Probability that the connection breaks mid-answer: status 200 and
    /// headers are sent, then the body stream fails.
    pub reset_rate: f64,
    /// Probability of a 200 whose JSON body is cut off half-way.
    pub malformed_rate: f64,
    /// Probability that the answer is delayed by [`Faults::hang`].
    pub hang_rate: f64,
    /// How long a hang lasts; [`DEFAULT_HANG`] when unset.
    #[serde(with = "humantime_opt")]
    pub hang: Option<Duration>,
    /// When set, 429 answers carry `Retry-After: N` (seconds).
    pub retry_after: Option<u64>,
    /// `enterprise_project_id` values answered 403 `HSS.0013`; they are also
    /// left out of `all_granted_eps`.
    pub forbidden_eps: Vec<String>,
    /// Serve rows as loosely typed as the official example: numeric
    /// strings, nulls, ids like `"1042(私有镜像举例)"`, missing empty strings.
    pub loose_types: bool,
    /// Added to `total_num` on every page after the first (`offset > 0`).
    pub total_num_drift: i64,
    /// Each page after the first starts with the last row of the page
    /// before, as if one row had been inserted ahead of the listing before
    /// each page: page `k` (`offset = k * limit`) starts `k` rows early. A
    /// page never holds more than `limit` rows; the last page has room for
    /// the shift as long as it is not full.
    pub duplicate_rows: bool,
    /// How a page without rows carries `data_list`: `array` (`[]`, the
    /// default), `null`, or `missing` (left out).
    pub empty_data_list: data::EmptyDataList,
}

/// Serde helpers for an optional humantime duration (`"45s"`).
mod humantime_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.serialize_some(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| humantime::parse_duration(&text).map_err(D::Error::custom))
            .transpose()
    }
}

/// A scripted answer for one of the next listing calls (see
/// [`Simulator::fail_next`]); it replaces the random faults for that call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scripted {
    /// Answer this HTTP status with a plausible error body (429 uses the
    /// `APIGW.0308` body, 500 `HSS.0000`, 401 `APIG.0301`, ...). 200 answers
    /// normally.
    Status(u16),
    /// Status 200 and headers, then the body stream breaks.
    Reset,
    /// Status 200 with the JSON body cut off half-way.
    Malformed,
    /// Answer normally after this delay.
    Hang(Duration),
    /// Answer `302 Found` with this `Location`, as a hostile or misrouted
    /// gateway would.
    Redirect(String),
}

/// A fault decided for one call.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Fault {
    Status(u16),
    Reset,
    Malformed,
    Hang(Duration),
    Redirect(String),
}

/// How the body of an answer is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Delivery {
    Whole,
    /// Status 200, half the body, then the stream fails.
    Reset,
    /// Status 200, half the body, complete response.
    Truncated,
}

/// The fault settings of a simulator, the scripted answers pending, and the
/// random stream the rates are drawn from.
pub(super) struct FaultState {
    pub(super) settings: Faults,
    scripted: VecDeque<Scripted>,
    rng: StdRng,
}

impl FaultState {
    pub(super) fn new(settings: Faults, seed: u64) -> Self {
        FaultState {
            settings,
            scripted: VecDeque::new(),
            // Distinct from the data generator's stream.
            rng: StdRng::seed_from_u64(seed ^ 0x5EED_FA17_0000_0001),
        }
    }

    /// The scripted answer for this call, else a random fault by rate.
    pub(super) fn next(&mut self) -> Option<Fault> {
        if let Some(scripted) = self.scripted.pop_front() {
            return match scripted {
                Scripted::Status(200) => None,
                Scripted::Status(code) => Some(Fault::Status(code)),
                Scripted::Reset => Some(Fault::Reset),
                Scripted::Malformed => Some(Fault::Malformed),
                Scripted::Hang(d) => Some(Fault::Hang(d)),
                Scripted::Redirect(location) => Some(Fault::Redirect(location)),
            };
        }
        let f = &self.settings;
        let rate = |r: f64| {
            if r.is_finite() {
                r.clamp(0.0, 1.0)
            } else {
                0.0
            }
        };
        let hang = f.hang.unwrap_or(DEFAULT_HANG);
        let table = [
            (rate(f.fail_rate), Fault::Status(500)),
            (rate(f.throttle_rate), Fault::Status(429)),
            (rate(f.reset_rate), Fault::Reset),
            (rate(f.malformed_rate), Fault::Malformed),
            (rate(f.hang_rate), Fault::Hang(hang)),
        ];
        if table.iter().all(|(r, _)| *r == 0.0) {
            return None;
        }
        let draw: f64 = self.rng.random();
        let mut threshold = 0.0;
        for (r, fault) in table {
            threshold += r;
            if draw < threshold {
                return Some(fault);
            }
        }
        None
    }
}

impl ApiError {
    /// A plausible error for a scripted or random status.
    pub(super) fn for_status(status: u16, quota: Option<Quota>) -> Self {
        match status {
            400 => ApiError::invalid("Invalid parameter"),
            401 => ApiError::new(401, "APIG.0301", auth::MSG_SIGNATURE),
            403 => ApiError::new(403, "HSS.0013", "Insufficient permission"),
            404 => not_found_error(),
            429 => ApiError::throttled(quota, "user"),
            502 | 503 => ApiError::new(status, "APIG.0201", "Backend unavailable"),
            504 => ApiError::new(504, "APIG.0202", "Backend timeout"),
            402..=499 => ApiError::new(status, "HSS.0002", "Failed to parse request"),
            _ => ApiError::new(status, "HSS.0000", "Internal server error"),
        }
    }
}

pub(super) fn valid_rates(faults: &Faults) -> bool {
    [
        faults.fail_rate,
        faults.throttle_rate,
        faults.reset_rate,
        faults.malformed_rate,
        faults.hang_rate,
    ]
    .iter()
    .all(|r| (0.0..=1.0).contains(r))
}

/// The body of an answer delivered as `delivery`.
pub(super) fn deliver(delivery: Delivery, mut body: Vec<u8>) -> Body {
    match delivery {
        Delivery::Whole => Body::from(body),
        Delivery::Truncated => {
            body.truncate(body.len() / 2);
            Body::from(body)
        }
        Delivery::Reset => {
            use futures_util::StreamExt as _;
            body.truncate(body.len() / 2);
            let first = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(body))]);
            // The pause lets the server flush status, headers and the first
            // half before the stream fails and the connection is dropped.
            let broken = futures_util::stream::once(async {
                tokio::time::sleep(RESET_AFTER).await;
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "simulated connection reset",
                ))
            });
            Body::from_stream(first.chain(broken))
        }
    }
}

impl Simulator {
    /// Replaces the faults.
    pub fn set_faults(&self, faults: Faults) {
        lock(&self.inner.state).faults.settings = faults;
    }

    /// Scripts the answers of the next listing calls that pass
    /// authentication and quota, in order, before any random fault; appended
    /// to answers still pending.
    pub fn fail_next(&self, scripted: Vec<Scripted>) {
        lock(&self.inner.state).faults.scripted.extend(scripted);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::SimConfig;
    use axum::http::StatusCode;
    use serde_json::Value;
    use tokio::time::Instant;
    use tower::ServiceExt;

    #[test]
    fn faults_read_humantime_and_refuse_unknown_fields() {
        let faults: Faults =
            serde_json::from_str(r#"{"hang_rate": 0.5, "hang": "45s", "forbidden_eps": ["ep-x"]}"#)
                .unwrap();
        assert_eq!(faults.hang, Some(Duration::from_secs(45)));
        assert_eq!(faults.forbidden_eps, vec!["ep-x"]);
        assert_eq!(faults.fail_rate, 0.0);
        let json = serde_json::to_value(&faults).unwrap();
        assert_eq!(json["hang"], "45s");
        assert!(serde_json::from_str::<Faults>(r#"{"fail_rat": 0.1}"#).is_err());
        assert!(serde_json::from_str::<Faults>(r#"{"hang": "soon"}"#).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn scripted_faults_come_first_and_in_order() {
        let sim = sim_with(300, None);
        sim.fail_next(vec![
            Scripted::Status(500),
            Scripted::Status(429),
            Scripted::Reset,
            Scripted::Malformed,
            Scripted::Hang(Duration::from_secs(30)),
            Scripted::Status(503),
        ]);
        let q = "image_type=private_image&limit=200";
        let reply = list(&sim, q).await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(reply.error_code(), "HSS.0000");
        let reply = list(&sim, q).await;
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(reply.error_code(), "APIGW.0308");

        // Reset: 200 and headers, then the body fails.
        let response = sim
            .router()
            .oneshot(token_request("tok", q, None))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .is_err()
        );

        let reply = list(&sim, q).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.body.len() > 100);
        assert!(serde_json::from_slice::<Value>(&reply.body).is_err());

        let started = Instant::now();
        let reply = list(&sim, q).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(started.elapsed() >= Duration::from_secs(30));
        assert!(!reply.ids().is_empty());

        let reply = list(&sim, q).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.error_code(), "APIG.0201");
        assert_eq!(list(&sim, q).await.status, StatusCode::OK);

        let statuses: Vec<u16> = sim.stats().calls.iter().map(|c| c.status).collect();
        assert_eq!(statuses, vec![500, 429, 200, 200, 200, 503, 200]);
    }

    #[tokio::test(start_paused = true)]
    async fn random_faults_follow_rates_and_seed() {
        async fn run(seed: u64) -> Vec<u16> {
            let sim = Simulator::new(SimConfig {
                seed,
                images: 20,
                tokens: vec!["tok".into()],
                base_time_ms: BASE,
                latency: Duration::from_millis(250),
                faults: Faults {
                    fail_rate: 0.3,
                    throttle_rate: 0.2,
                    ..Faults::default()
                },
                ..SimConfig::default()
            });
            let mut statuses = Vec::new();
            for _ in 0..200 {
                statuses.push(list(&sim, "image_type=private_image").await.status.as_u16());
            }
            statuses
        }
        let started = Instant::now();
        let a = run(5).await;
        // Latency applies to every answer.
        assert!(started.elapsed() >= Duration::from_millis(250 * 200));
        assert_eq!(a, run(5).await);
        assert_ne!(a, run(6).await);
        let share = |code| a.iter().filter(|s| **s == code).count();
        assert!((40..=80).contains(&share(500)), "{}", share(500));
        assert!((20..=60).contains(&share(429)), "{}", share(429));
        assert_eq!(share(500) + share(429) + share(200), 200);
    }

    #[tokio::test(start_paused = true)]
    async fn random_hang_uses_the_configured_delay() {
        let sim = sim_with(20, None);
        sim.set_faults(Faults {
            hang_rate: 1.0,
            hang: Some(Duration::from_secs(45)),
            ..Faults::default()
        });
        let started = Instant::now();
        assert_eq!(
            list(&sim, "image_type=private_image").await.status,
            StatusCode::OK
        );
        assert_eq!(started.elapsed().as_secs(), 45);
    }
}
