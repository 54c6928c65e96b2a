//! The call quota: [`Quota`] and its command-line form [`QuotaSetting`],
//! the per-user and per-IP sliding windows of each listing API, the
//! `APIGW.0308` body of a 429, and the call log with
//! [`max_calls_in_window`] to count it.
//!
//! Place in the project: part of the simulator's HTTP side (`server`). A
//! listing call is admitted here after authentication and before faults;
//! every listing call, refused ones included, goes into the call log that
//! [`Simulator::stats`] and `/_sim/stats` report.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use tokio::time::Instant;

use super::{ApiError, Simulator, lock};
use crate::{Call, Error};

/// A call quota: at most `calls` admitted calls in any `window` (a sliding
/// window by arrival time). Written `5/1m`, `50/1s`, `5/100ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Calls admitted per window; at least 1.
    pub calls: u32,
    /// Length of the sliding window; not zero.
    pub window: Duration,
}

impl Quota {
    /// The documented HSS per-user limit: 5 calls per minute.
    pub const DOCUMENTED: Quota = Quota {
        calls: 5,
        window: Duration::from_secs(60),
    };

    /// The window as the gateway words it in `APIGW.0308` messages:
    /// `1 minute`, `1 second`, `100 millisecond`.
    pub fn gateway_time(&self) -> String {
        let ms = self.window.as_millis();
        if ms.is_multiple_of(3_600_000) {
            format!("{} hour", ms / 3_600_000)
        } else if ms.is_multiple_of(60_000) {
            format!("{} minute", ms / 60_000)
        } else if ms.is_multiple_of(1000) {
            format!("{} second", ms / 1000)
        } else {
            format!("{ms} millisecond")
        }
    }
}

impl FromStr for Quota {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |reason: &str| Error::Quota {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        let (calls, window) = s.trim().split_once('/').ok_or_else(|| fail("no '/'"))?;
        let calls: u32 = calls
            .trim()
            .parse()
            .map_err(|_| fail("the call count is not a whole number"))?;
        if calls == 0 {
            return Err(fail("the call count must be at least 1"));
        }
        let window = humantime::parse_duration(window.trim()).map_err(|e| fail(&e.to_string()))?;
        if window.is_zero() {
            return Err(fail("the window must not be zero"));
        }
        Ok(Quota { calls, window })
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.calls,
            humantime::format_duration(self.window)
        )
    }
}

/// A quota setting as given on the command line: a [`Quota`] or `none`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaSetting(pub Option<Quota>);

impl FromStr for QuotaSetting {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().eq_ignore_ascii_case("none") {
            Ok(QuotaSetting(None))
        } else {
            s.parse().map(|quota| QuotaSetting(Some(quota)))
        }
    }
}

impl fmt::Display for QuotaSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(quota) => quota.fmt(f),
            None => f.write_str("none"),
        }
    }
}

/// The most calls whose arrival falls inside any window of length `window`
/// (half-open: `[t, t + window)`). A client that keeps a `N/window` budget
/// never makes this exceed `N`.
pub fn max_calls_in_window(calls: &[Call], window: Duration) -> usize {
    let mut times: Vec<tokio::time::Instant> = calls.iter().map(|c| c.at).collect();
    times.sort_unstable();
    let mut best = 0;
    let mut end = 0;
    for (start, &t) in times.iter().enumerate() {
        // The busiest window can always be taken to start at a call.
        let limit = t + window;
        if end < start {
            end = start;
        }
        while end < times.len() && times[end] < limit {
            end += 1;
        }
        best = best.max(end - start);
    }
    best
}

/// The quota of a simulator, the calls it admitted per window, and the log
/// of every listing call.
pub(super) struct QuotaState {
    pub(super) limit: Option<Quota>,
    /// Arrival times of admitted calls per quota key (the API's name, then
    /// `ak:`, `token:` or `ip:`), oldest first, pruned to the window.
    admitted: HashMap<String, VecDeque<Instant>>,
    pub(super) calls: Vec<Call>,
}

impl QuotaState {
    pub(super) fn new(limit: Option<Quota>) -> Self {
        QuotaState {
            limit,
            admitted: HashMap::new(),
            calls: Vec::new(),
        }
    }

    /// Admits a call under the quota for every key, or names the policy
    /// that refuses it. Refused calls are not admitted. Keys name the API,
    /// so each API has windows of its own.
    pub(super) fn admit(&mut self, keys: &[String; 2], now: Instant) -> Result<(), &'static str> {
        let Some(quota) = self.limit else {
            return Ok(());
        };
        for (key, policy) in keys.iter().zip(["user", "ip"]) {
            let times = self.admitted.entry(key.clone()).or_default();
            while times
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= quota.window)
            {
                times.pop_front();
            }
            if times.len() >= quota.calls as usize {
                return Err(policy);
            }
        }
        for key in keys {
            self.admitted.entry(key.clone()).or_default().push_back(now);
        }
        Ok(())
    }

    pub(super) fn record(&mut self, call: Call) {
        // Keep arrival order even when two calls finish deciding out of order.
        let at = self.calls.partition_point(|c| c.at <= call.at);
        self.calls.insert(at, call);
    }
}

impl ApiError {
    pub(super) fn throttled(quota: Option<Quota>, policy: &str) -> Self {
        let quota = quota.unwrap_or(Quota::DOCUMENTED);
        ApiError::new(
            429,
            "APIGW.0308",
            format!(
                "The throttling threshold has been reached: policy {policy} over ratelimit,limit:{},time:{}",
                quota.calls,
                quota.gateway_time()
            ),
        )
    }
}

impl Simulator {
    /// Replaces the quota (`None` = unlimited). Calls admitted so far keep
    /// counting against the new quota's window.
    pub fn set_quota(&self, quota: Option<Quota>) {
        lock(&self.inner.state).quota.limit = quota;
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::{API_SWR_REPOSITORY, Faults};
    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};

    #[test]
    fn quota_parses_and_displays() {
        let q: Quota = "5/1m".parse().unwrap();
        assert_eq!(q, Quota::DOCUMENTED);
        assert_eq!(q.to_string(), "5/1m");
        assert_eq!(q.gateway_time(), "1 minute");
        let q: Quota = "50/1s".parse().unwrap();
        assert_eq!((q.calls, q.window), (50, Duration::from_secs(1)));
        assert_eq!(q.gateway_time(), "1 second");
        let q: Quota = " 5 / 100ms ".parse().unwrap();
        assert_eq!(q.window, Duration::from_millis(100));
        assert_eq!(q.to_string(), "5/100ms");
        assert_eq!(q.gateway_time(), "100 millisecond");
        for bad in ["5", "0/1m", "x/1m", "5/0s", "5/soon", "-1/1m"] {
            assert!(
                matches!(bad.parse::<Quota>(), Err(Error::Quota { .. })),
                "{bad}"
            );
        }
        assert_eq!("none".parse::<QuotaSetting>().unwrap(), QuotaSetting(None));
        assert_eq!(QuotaSetting(None).to_string(), "none");
    }

    fn calls_at(offsets_ms: &[u64]) -> Vec<Call> {
        let base = tokio::time::Instant::now();
        offsets_ms
            .iter()
            .map(|ms| Call {
                at: base + Duration::from_millis(*ms),
                status: 200,
                offset: 0,
                limit: 200,
                query: String::new(),
                api: API_SWR_REPOSITORY,
                path: String::new(),
            })
            .collect()
    }

    #[test]
    fn max_calls_in_window_uses_half_open_windows() {
        let minute = Duration::from_secs(60);
        assert_eq!(max_calls_in_window(&[], minute), 0);
        // Five calls at 12 s spacing then one exactly a minute after the first:
        // the window [0, 60 s) holds five, [12 s, 72 s) holds five too.
        let calls = calls_at(&[0, 12_000, 24_000, 36_000, 48_000, 60_000]);
        assert_eq!(max_calls_in_window(&calls, minute), 5);
        // One millisecond earlier and six fall inside one minute.
        let calls = calls_at(&[0, 12_000, 24_000, 36_000, 48_000, 59_999]);
        assert_eq!(max_calls_in_window(&calls, minute), 6);
        // Order of the input does not matter.
        let calls = calls_at(&[59_999, 0, 48_000, 12_000, 36_000, 24_000, 200_000]);
        assert_eq!(max_calls_in_window(&calls, minute), 6);
        // A token bucket's burst: 5 at the start, 5 just before the end.
        let calls = calls_at(&[0, 1, 2, 3, 4, 59_000, 59_001, 59_002, 59_003, 59_004]);
        assert_eq!(max_calls_in_window(&calls, minute), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn quota_refuses_the_sixth_call_in_a_minute() {
        let sim = sim_with(50, Some(Quota::DOCUMENTED));
        let q = "image_type=private_image&limit=200";
        for i in 0..5 {
            assert_eq!(list(&sim, q).await.status, StatusCode::OK, "call {i}");
            tokio::time::advance(Duration::from_secs(10)).await;
        }
        // t = 50 s: the sixth call inside the minute is refused.
        let refused = list(&sim, q).await;
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            refused.json()["error_msg"],
            "The throttling threshold has been reached: policy user over ratelimit,limit:5,time:1 minute"
        );
        assert_eq!(refused.error_code(), "APIGW.0308");
        assert!(refused.headers.get(header::RETRY_AFTER).is_none());
        // Refused calls do not count: at t = 60 s the first call has left the window.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(list(&sim, q).await.status, StatusCode::OK);
        // Now t = 60 s holds calls at 10..=60: full again.
        sim.set_faults(Faults {
            retry_after: Some(30),
            ..Faults::default()
        });
        let refused = list(&sim, q).await;
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.headers[header::RETRY_AFTER], "30");
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(list(&sim, q).await.status, StatusCode::OK);

        let stats = sim.stats();
        assert_eq!(stats.calls.len(), 9);
        assert_eq!(stats.count_status(429), 2);
        assert_eq!(stats.calls[0].limit, 200);
        assert_eq!(stats.calls[0].query, q);
        // Admitted calls never exceed the quota in any window...
        let admitted: Vec<Call> = stats
            .calls
            .iter()
            .filter(|c| c.status == 200)
            .cloned()
            .collect();
        assert_eq!(max_calls_in_window(&admitted, Duration::from_secs(60)), 5);
        // ...but this client sent more than the budget.
        assert_eq!(
            max_calls_in_window(&stats.calls, Duration::from_secs(60)),
            7
        );
    }

    #[tokio::test(start_paused = true)]
    async fn quota_applies_per_credential_and_per_ip() {
        let sim = sim_with(50, Some("2/1s".parse().unwrap()));
        let q = "image_type=private_image";
        let status = |reply: Reply| (reply.status, reply.json()["error_msg"].clone());
        for _ in 0..2 {
            let reply = send(&sim, token_request("tok", q, Some([10, 0, 0, 1]))).await;
            assert_eq!(reply.status, StatusCode::OK);
        }
        // Same IP, other token: the IP policy refuses.
        let (code, msg) = status(send(&sim, token_request("tok2", q, Some([10, 0, 0, 1]))).await);
        assert_eq!(code, StatusCode::TOO_MANY_REQUESTS);
        assert!(
            msg.as_str()
                .unwrap()
                .contains("policy ip over ratelimit,limit:2,time:1 second")
        );
        // Same token, other IP: the user policy refuses.
        let (code, msg) = status(send(&sim, token_request("tok", q, Some([10, 0, 0, 2]))).await);
        assert_eq!(code, StatusCode::TOO_MANY_REQUESTS);
        assert!(msg.as_str().unwrap().contains("policy user over ratelimit"));
        // Other token and other IP are free.
        let reply = send(&sim, token_request("tok2", q, Some([10, 0, 0, 2]))).await;
        assert_eq!(reply.status, StatusCode::OK);
        // Removing the quota admits everything.
        sim.set_quota(None);
        let reply = send(&sim, token_request("tok", q, Some([10, 0, 0, 1]))).await;
        assert_eq!(reply.status, StatusCode::OK);
    }

    #[tokio::test(start_paused = true)]
    async fn each_api_has_its_own_quota() {
        let sim = sim_with(300, Some(Quota::DOCUMENTED));
        let q = "image_type=private_image&limit=200";
        let peer = Some([10, 0, 0, 1]);
        for i in 0..5 {
            let reply = send(&sim, token_request_to(PATH, "tok", q, peer)).await;
            assert_eq!(reply.status, StatusCode::OK, "old call {i}");
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        let refused = send(&sim, token_request_to(PATH, "tok", q, peer)).await;
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        // Same credential, same IP, same minute: the successor has a budget
        // of its own.
        for i in 0..5 {
            let reply = send(&sim, token_request_to(NEW_PATH, "tok", q, peer)).await;
            assert_eq!(reply.status, StatusCode::OK, "new call {i}");
        }
        let refused = send(&sim, token_request_to(NEW_PATH, "tok", q, peer)).await;
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(
            refused.json()["error_msg"]
                .as_str()
                .unwrap()
                .contains("policy user over ratelimit,limit:5,time:1 minute")
        );
        // The per-IP window is per API too.
        let other_token = send(&sim, token_request_to(NEW_PATH, "tok2", q, peer)).await;
        assert_eq!(other_token.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(
            other_token.json()["error_msg"]
                .as_str()
                .unwrap()
                .contains("policy ip over ratelimit")
        );
        // A minute after the first old call, the old API admits again.
        tokio::time::advance(Duration::from_secs(55)).await;
        let reply = send(&sim, token_request_to(PATH, "tok", q, peer)).await;
        assert_eq!(reply.status, StatusCode::OK);

        let stats = sim.stats();
        let (old, new) = (
            stats.calls_to(crate::API_SWR_REPOSITORY),
            stats.calls_to(crate::API_REGISTRY_IMAGES),
        );
        assert_eq!((old.len(), new.len()), (7, 7));
        assert!(
            old.iter()
                .all(|c| c.path == PATH && c.api == "swr-repository")
        );
        assert!(
            new.iter()
                .all(|c| c.path == NEW_PATH && c.api == "registry-images")
        );
        let admitted = |calls: &[Call]| -> Vec<Call> {
            calls.iter().filter(|c| c.status == 200).cloned().collect()
        };
        let minute = Duration::from_secs(60);
        assert_eq!(max_calls_in_window(&admitted(&old), minute), 5);
        assert_eq!(max_calls_in_window(&admitted(&new), minute), 5);
        assert_eq!(max_calls_in_window(&admitted(&stats.calls), minute), 10);

        let stats = send(
            &sim,
            Request::get("/_sim/stats").body(Body::empty()).unwrap(),
        )
        .await
        .json();
        assert_eq!(stats["calls"], 14);
        assert_eq!(stats["by_api"]["swr-repository"]["calls"], 7);
        assert_eq!(stats["by_api"]["registry-images"]["calls"], 7);
        assert_eq!(
            stats["by_api"]["registry-images"]["max_calls_per_window"],
            7
        );
    }
}
