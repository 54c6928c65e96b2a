//! The simulator's HTTP side: the [`Simulator`] type and its shared state,
//! the router, the listing route and its handler.
//!
//! Place in the project: the simulator stands in for the HSS API; it is used
//! by tests, benchmarks and the demo; the exporter's own code never depends
//! on it. A listing call goes through the checks in the order of the real
//! API gateway and service: authentication (with the AK lockout), quota,
//! scripted then random faults, parameters, data. Both listings
//! (`image/swr-repository` and its successor `image/registries/images`) go
//! through the same handler; what differs is [`Api`]: accepted image types,
//! a few filters, the row form, and a quota window of its own (the documented
//! limit is per API). Every listing call is recorded, refused ones included,
//! so tests can check a client's budget per API.
//! The IAM and metadata routes are handled in `iam.rs`, through the narrow
//! `iam::IamHost` this file implements; they share the gateway's keyring and
//! lockout with the listing but not its quota.
//!
//! - this file: [`Simulator`], the router and [`Simulator::serve`], the
//!   gateway's checks in order (the access key lockout), answers and the
//!   listing handler;
//! - `quota.rs`: [`Quota`], the per-user and per-IP windows, the 429 body,
//!   the call log and [`max_calls_in_window`];
//! - `faults.rs`: [`Faults`], [`Scripted`], and how a call is failed,
//!   delayed or cut;
//! - `listing.rs`: parameters, filters, matching rows and paging;
//! - `rows.rs`: the rows and their changes over time ([`MaliciousImage`]);
//! - `control.rs`: the `/_sim/*` control endpoints.
//!
//! State is kept in `std::sync` locks that are never held across an await;
//! the image rows sit behind an `Arc` so a call filters them by reference
//! and serialises only its page. Changes over time ([`Churn`], `churn.rs`)
//! come from a task that [`Simulator::serve`] runs next to the routes, or
//! from [`Simulator::churn_tick`], [`Simulator::rescan`],
//! [`Simulator::push`] and [`Simulator::delete`]; each replaces the rows
//! once, however many rows it changes, and is dated by the server's clock
//! ([`Simulator::clock_ms`]). Listings filtered by `start_latest_scan_time`
//! or `start_latest_update_time` leave out rows changed within
//! [`SimConfig::index_lag`].

mod control;
mod faults;
mod listing;
mod quota;
mod rows;
#[cfg(test)]
pub(crate) mod testing;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use axum::routing::{any, get, post, put};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use super::auth::{self, Credential, Failure};
use super::churn::{ChurnState, ServerClock};
use super::data;
use super::gateway::service_params;
use super::iam::{self, IamHost, IamState, SimProject};
use super::{Api, Call, Churn, SimConfig, Stats};
use faults::{Delivery, Fault, FaultState};
use listing::{MatchCache, param, parse_list_query};
use quota::QuotaState;
use rows::Dataset;

pub use super::gateway::{AUTH_LOCK, CONTENT_TYPE_JSON, MAX_AUTH_FAILURES};
pub use faults::{DEFAULT_HANG, Faults, Scripted};
pub use listing::{MAX_LIMIT, MAX_OFFSET};
pub use quota::{Quota, QuotaSetting, max_calls_in_window};
pub use rows::MaliciousImage;

/// The old listing's route (axum path syntax), [`Api::SwrRepository`].
pub const LISTING_PATH: &str = "/v5/{project_id}/image/swr-repository";

/// The successor listing's route (axum path syntax), [`Api::RegistryImages`].
pub const REGISTRY_IMAGES_PATH: &str = "/v5/{project_id}/image/registries/images";

/// Largest request body read (the gateway signs bodies up to 12 MB).
const MAX_BODY: usize = 12 * 1024 * 1024;

/// A simulated HSS API. Cheap to clone: clones share one state.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

struct Inner {
    /// What the gateway accepts, and the IAM side's own state.
    iam: Mutex<IamState>,
    latency: Duration,
    /// Rows sorted by id; replaced copy-on-write so a call can filter a
    /// snapshot without holding the lock.
    images: RwLock<Dataset>,
    /// Indices of the rows matching recent filters, for one data version:
    /// the pages of one sweep share a filter, so only the first page scans
    /// every row.
    matches: Mutex<MatchCache>,
    state: Mutex<MutableState>,
    /// Counter behind the request ids.
    requests: AtomicU64,
    /// Flipped to `true` when a `serve` is shutting down, which cuts short
    /// hangs and latency so graceful shutdown does not wait for them.
    stopping: watch::Sender<bool>,
    /// The server's "now" for every change after the start.
    clock: ServerClock,
    /// See [`SimConfig::index_lag`].
    index_lag: Duration,
    /// See [`SimConfig::churn`].
    churn_config: Option<Churn>,
    /// The churn engine's state; taken before `images`, never after.
    churn: Mutex<ChurnState>,
    /// The `serve` calls running, and the churn task they share.
    churn_task: Mutex<(usize, Option<tokio::task::JoinHandle<()>>)>,
}

/// Lockout bookkeeping of one access key.
#[derive(Default)]
struct AuthRecord {
    consecutive_failures: u32,
    locked_until: Option<Instant>,
}

/// What the listing calls change: faults, quota windows and the call log,
/// and the lockout records, behind one lock.
struct MutableState {
    faults: FaultState,
    quota: QuotaState,
    auth: Lockouts,
}

/// The gateway's access key lockout, and counts of refusals.
#[derive(Default)]
struct Lockouts {
    records: HashMap<String, AuthRecord>,
    /// Failed authentications and lockouts of access keys and tokens.
    failures: u64,
    lockouts: u64,
}

/// An answer decided for a listing call, before it is sent.
struct Answer {
    status: StatusCode,
    body: Vec<u8>,
    retry_after: Option<u64>,
    request_id: String,
    delivery: Delivery,
    delay: Duration,
    /// The `Location` of a redirect.
    location: Option<String>,
}

/// An error answer of the service (`HSS.*`) or the gateway (`APIG*`,
/// which adds `request_id`).
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(400, "HSS.0001", message)
    }

    fn body(&self, request_id: &str) -> Vec<u8> {
        let value = if self.code.starts_with("APIG") {
            json!({"error_code": self.code, "error_msg": self.message, "request_id": request_id})
        } else {
            json!({"error_code": self.code, "error_msg": self.message})
        };
        value.to_string().into_bytes()
    }
}

fn not_found_error() -> ApiError {
    ApiError::new(
        404,
        "APIG.0101",
        "The API does not exist or has not been published in the environment",
    )
}

fn lock(mutex: &Mutex<MutableState>) -> MutexGuard<'_, MutableState> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Lockouts {
    /// Applies the outcome of authentication to the lockout records; the
    /// error to answer when the request is refused.
    fn settle_auth(
        &mut self,
        outcome: Result<Credential, Failure>,
        now: Instant,
    ) -> Result<Credential, ApiError> {
        let access_key = match &outcome {
            Ok(credential) => credential.access_key.clone(),
            Err(failure) => failure.access_key.clone(),
        };
        if let Some(ak) = access_key {
            let record = self.records.entry(ak).or_default();
            if record.locked_until.is_some_and(|until| now < until) {
                return Err(ApiError::new(401, "APIG.0301", auth::MSG_LOCKED));
            }
            record.locked_until = None;
            match &outcome {
                Ok(_) => record.consecutive_failures = 0,
                Err(_) => {
                    self.failures += 1;
                    record.consecutive_failures += 1;
                    if record.consecutive_failures > MAX_AUTH_FAILURES {
                        record.consecutive_failures = 0;
                        record.locked_until = Some(now + AUTH_LOCK);
                        self.lockouts += 1;
                    }
                }
            }
        }
        outcome.map_err(|failure| {
            tracing::debug!(reason = failure.detail, "simulator refused authentication");
            ApiError::new(401, "APIG.0301", failure.message)
        })
    }
}

impl Simulator {
    /// A simulator serving data generated from `config`.
    pub fn new(config: SimConfig) -> Self {
        let mut images = data::generate(&config);
        images.sort_by_key(|row| row.id);
        let (stopping, _) = watch::channel(false);
        Simulator {
            inner: Arc::new(Inner {
                iam: Mutex::new(IamState::new(&config)),
                latency: config.latency,
                images: RwLock::new(Dataset::new(images)),
                matches: Mutex::new(MatchCache::default()),
                state: Mutex::new(MutableState {
                    faults: FaultState::new(config.faults, config.seed),
                    quota: QuotaState::new(config.quota),
                    auth: Lockouts::default(),
                }),
                requests: AtomicU64::new(0),
                stopping,
                clock: ServerClock::new(config.clock_offset_ms),
                index_lag: config.index_lag,
                churn_config: config.churn,
                churn: Mutex::new(ChurnState::new(config.seed)),
                churn_task: Mutex::new((0, None)),
            }),
        }
    }

    /// All routes: the two listing APIs ([`LISTING_PATH`],
    /// [`REGISTRY_IMAGES_PATH`]), the IAM endpoints (`/v3/auth/tokens`,
    /// `/v3/projects`), the metadata service (`/meta-data/latest/api/token`,
    /// `/openstack/latest/securitykey`), the `/_sim/*` control endpoints, and
    /// a gateway-style 404 (`APIG.0101`) for everything else.
    pub fn router(&self) -> Router {
        let mut router = Router::new();
        for api in Api::ALL {
            router = router.route(
                api.route(),
                any(move |State(sim): State<Simulator>, request: Request| {
                    listing(api, sim, request)
                }),
            );
        }
        router
            .route(
                iam::TOKENS_PATH,
                post(iam::auth_tokens::<Simulator>).fallback(fallback),
            )
            .route(
                iam::PROJECTS_PATH,
                get(iam::projects::<Simulator>).fallback(fallback),
            )
            .route(
                iam::AUTH_PROJECTS_PATH,
                get(iam::auth_projects::<Simulator>).fallback(fallback),
            )
            .route(
                iam::METADATA_TOKEN_PATH,
                put(iam::metadata_token::<Simulator>).fallback(fallback),
            )
            .route(
                iam::SECURITY_KEY_PATH,
                get(iam::security_key::<Simulator>).fallback(fallback),
            )
            .route("/_sim/stats", get(control::stats_endpoint))
            .route("/_sim/faults", post(control::faults_endpoint))
            .route("/_sim/images", post(control::images_endpoint))
            .route("/_sim/malicious", post(control::malicious_endpoint))
            .fallback(fallback)
            .with_state(self.clone())
    }

    /// Serves the routes on `listener` until `shutdown` completes, then
    /// finishes the calls in flight (cutting hangs short). Peer addresses
    /// are passed on, so the per-IP quota sees them. With
    /// [`SimConfig::churn`] set, a task applies a churn tick every
    /// [`Churn::tick`] of tokio time (so paused-time tests drive it) while
    /// any `serve` of the simulator runs: a second `serve` starts no second
    /// task, and the task stops when the last one returns.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let inner = Arc::clone(&self.inner);
        let signal = async move {
            shutdown.await;
            inner.stopping.send_replace(true);
        };
        /// Stops the churn task when the last `serve` ends, however it ends.
        struct Serving(Simulator);
        impl Drop for Serving {
            fn drop(&mut self) {
                let mut task = self.0.churn_task();
                task.0 = task.0.saturating_sub(1);
                if task.0 == 0
                    && let Some(handle) = task.1.take()
                {
                    handle.abort();
                }
            }
        }
        let serving = Serving(self.start_churn());
        let app = self
            .router()
            .into_make_service_with_connect_info::<SocketAddr>();
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(signal)
            .await;
        drop(serving);
        result
    }

    fn churn_task(&self) -> MutexGuard<'_, (usize, Option<tokio::task::JoinHandle<()>>)> {
        self.inner
            .churn_task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a `serve` in, and spawns the churn task unless there is no
    /// churn or the task runs already.
    fn start_churn(&self) -> Simulator {
        let mut task = self.churn_task();
        task.0 += 1;
        if let Some(churn) = self.inner.churn_config
            && !churn.tick.is_zero()
            && task.1.is_none()
        {
            let sim = self.clone();
            task.1 = Some(tokio::spawn(async move {
                let mut ticks = tokio::time::interval_at(Instant::now() + churn.tick, churn.tick);
                loop {
                    ticks.tick().await;
                    sim.churn_tick();
                }
            }));
        }
        self.clone()
    }

    /// Every listing request received so far, refused ones included, and
    /// the counts of credentials issued and projects looked up.
    pub fn stats(&self) -> Stats {
        let (calls, auth_failures, lockouts) = {
            let state = lock(&self.inner.state);
            (
                state.quota.calls.clone(),
                state.auth.failures,
                state.auth.lockouts,
            )
        };
        let counters = self.iam().counters;
        Stats {
            calls,
            iam_tokens_issued: counters.iam_tokens_issued,
            metadata_session_tokens_issued: counters.metadata_session_tokens_issued,
            metadata_credentials_issued: counters.metadata_credentials_issued,
            project_lookups: counters.project_lookups,
            auth_project_lookups: counters.auth_project_lookups,
            auth_failures: auth_failures + counters.password_failures,
            lockouts: lockouts + counters.user_lockouts,
        }
    }

    /// Replaces the projects of `GET /v3/projects` and of token scopes.
    pub fn set_projects(&self, projects: Vec<SimProject>) {
        self.iam().set_projects(projects);
    }

    /// Forgets every issued IAM token, as IAM does when a password changes:
    /// their next use is answered 401 `APIG.0301` "decrypt token fail".
    pub fn revoke_iam_tokens(&self) {
        self.iam().keyring.revoke_tokens();
    }

    /// Whether the metadata service wants a session token before it hands
    /// out keys (when not, `PUT /meta-data/latest/api/token` answers 404).
    pub fn set_metadata_requires_session_token(&self, required: bool) {
        self.iam().set_requires_session_token(required);
    }

    /// The keyring and IAM state (a lock never held across an await).
    fn iam(&self) -> MutexGuard<'_, IamState> {
        self.inner
            .iam
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Checks a request's credentials as the gateway does, with the access
    /// key lockout, outside the listing quota: `None` when they pass, else
    /// the `APIG.0301` answer.
    fn refusal(&self, parts: &Parts, body: &[u8]) -> Option<Response> {
        let outcome = self.verify(parts, body);
        let settled = lock(&self.inner.state)
            .auth
            .settle_auth(outcome, Instant::now());
        settled
            .err()
            .map(|error| api_error_response(&error, self.request_id()))
    }

    fn verify(&self, parts: &Parts, body: &[u8]) -> Result<Credential, Failure> {
        let iam = self.iam();
        auth::verify(parts, body, &iam.keyring, SystemTime::now(), Instant::now())
    }

    fn request_id(&self) -> String {
        let n = self.inner.requests.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}{:016x}", data::mix(n), data::mix(n ^ 0xA5A5))
    }

    /// Sleeps, but wakes early when the server is shutting down.
    async fn pause(&self, delay: Duration) {
        if delay.is_zero() {
            return;
        }
        let mut stopping = self.inner.stopping.subscribe();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopping.wait_for(|stop| *stop) => {}
        }
    }

    /// Decides the answer to one call to `api` and records the call.
    fn decide(
        &self,
        api: Api,
        path: &str,
        raw_query: &str,
        auth_outcome: Result<Credential, Failure>,
        peer: Option<IpAddr>,
    ) -> Answer {
        let request_id = self.request_id();
        let params = service_params(raw_query);
        let mut answer = Answer {
            status: StatusCode::OK,
            body: Vec::new(),
            retry_after: None,
            request_id,
            delivery: Delivery::Whole,
            delay: self.inner.latency,
            location: None,
        };

        let mut state = lock(&self.inner.state);
        let arrival = Instant::now();
        let mut call = Call {
            at: arrival,
            status: 0,
            offset: param(&params, "offset")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            limit: match param(&params, "limit") {
                None => 10,
                Some(v) => v.parse().unwrap_or(0),
            },
            query: raw_query.to_string(),
            api: api.name(),
            path: path.to_string(),
        };
        let faults = state.faults.settings.clone();
        let quota = state.quota.limit;

        let gate = (|| {
            let credential = state.auth.settle_auth(auth_outcome, arrival)?;
            let ip = peer.map_or_else(|| "unknown".to_string(), |ip| ip.to_string());
            // The documented limit is per API: one window per API and key.
            let keys = [
                format!("{}|{}", api.name(), credential.key),
                format!("{}|ip:{ip}", api.name()),
            ];
            state
                .quota
                .admit(&keys, arrival)
                .map_err(|policy| ApiError::throttled(quota, policy))?;
            Ok::<_, ApiError>(state.faults.next())
        })();

        let outcome = match gate {
            Err(error) => Err(error),
            Ok(Some(Fault::Status(code))) => Err(ApiError::for_status(code, quota)),
            Ok(Some(Fault::Redirect(location))) => {
                answer.location = Some(location);
                Ok(Vec::new())
            }
            Ok(fault) => {
                match fault {
                    Some(Fault::Hang(d)) => answer.delay += d,
                    Some(Fault::Reset) => answer.delivery = Delivery::Reset,
                    Some(Fault::Malformed) => answer.delivery = Delivery::Truncated,
                    _ => {}
                }
                // Parameters and data need no lock.
                drop(state);
                let result = parse_list_query(api, &params, &faults)
                    .map(|query| self.page(api, &query, &faults));
                state = lock(&self.inner.state);
                result
            }
        };

        match outcome {
            Ok(_) if answer.location.is_some() => answer.status = StatusCode::FOUND,
            Ok(body) => answer.body = body,
            Err(error) => {
                if error.status == StatusCode::TOO_MANY_REQUESTS {
                    answer.retry_after = faults.retry_after;
                }
                answer.status = error.status;
                answer.body = error.body(&answer.request_id);
            }
        }
        if answer.delivery != Delivery::Whole {
            // A broken answer always starts as a 200.
            answer.status = StatusCode::OK;
        }
        call.status = answer.status.as_u16();
        state.quota.record(call);
        answer
    }
}

impl IamHost for Simulator {
    fn iam(&self) -> MutexGuard<'_, IamState> {
        Simulator::iam(self)
    }

    fn request_id(&self) -> String {
        Simulator::request_id(self)
    }

    fn refusal(&self, parts: &Parts, body: &[u8]) -> Option<Response> {
        Simulator::refusal(self, parts, body)
    }
}

fn render(answer: Answer) -> Response {
    let Answer {
        status,
        body,
        retry_after,
        request_id,
        delivery,
        location,
        ..
    } = answer;
    let mut response = Response::new(faults::deliver(delivery, body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(CONTENT_TYPE_JSON),
    );
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert("x-request-id", value);
    }
    if let Some(seconds) = retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if let Some(value) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        headers.insert(header::LOCATION, value);
    }
    response
}

fn api_error_response(error: &ApiError, request_id: String) -> Response {
    render(Answer {
        status: error.status,
        body: error.body(&request_id),
        retry_after: None,
        request_id,
        delivery: Delivery::Whole,
        delay: Duration::ZERO,
        location: None,
    })
}

async fn fallback(State(sim): State<Simulator>) -> Response {
    api_error_response(&not_found_error(), sim.request_id())
}

/// `GET /v5/{project_id}/image/swr-repository` and `GET
/// /v5/{project_id}/image/registries/images`.
async fn listing(api: Api, sim: Simulator, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if parts.method != Method::GET {
        return api_error_response(&not_found_error(), sim.request_id());
    }
    let body = axum::body::to_bytes(body, MAX_BODY)
        .await
        .unwrap_or_default();
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    let auth_outcome = sim.verify(&parts, &body);
    let raw_query = parts.uri.query().unwrap_or("");
    let answer = sim.decide(api, parts.uri.path(), raw_query, auth_outcome, peer);
    sim.pause(answer.delay).await;
    render(answer)
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use hss_api::signer;
    use serde_json::Value;
    use std::collections::HashSet;

    #[tokio::test]
    async fn signed_requests_are_verified() {
        let sim = sim_with(200, None);
        let query = [
            ("image_type", "private_image"),
            ("namespace", "支付-团队"),
            ("image_name", "my image (1)"),
            ("limit", "200"),
        ];
        let reply = send(&sim, signed_request("SIMULATORAK", "SIMULATORSK", &query)).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        assert_eq!(reply.json()["total_num"], 0);
        let query = [("image_type", "private_image"), ("limit", "200")];
        let reply = send(&sim, signed_request("SIMULATORAK", "SIMULATORSK", &query)).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(!reply.ids().is_empty());

        let reply = send(&sim, signed_request("SIMULATORAK", "wrong", &query)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        let body = reply.json();
        assert_eq!(body["error_code"], "APIG.0301");
        assert_eq!(
            body["error_msg"],
            "Incorrect IAM authentication information: verify aksk signature fail"
        );
        assert_eq!(body["request_id"].as_str().unwrap().len(), 32);
        let reply = send(&sim, signed_request("OTHERAK", "SIMULATORSK", &query)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert!(
            reply.json()["error_msg"]
                .as_str()
                .unwrap()
                .contains("ak not exist")
        );

        // Tampering with the query after signing breaks the signature.
        let mut request = signed_request("SIMULATORAK", "SIMULATORSK", &query);
        *request.uri_mut() = format!("{PATH}?image_type=private_image&limit=199")
            .parse()
            .unwrap();
        assert_eq!(send(&sim, request).await.status, StatusCode::UNAUTHORIZED);
        // Refused calls are recorded too.
        let stats = sim.stats();
        assert_eq!(stats.calls.len(), 5);
        assert_eq!(stats.count_status(401), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn access_key_locks_after_more_than_five_failures() {
        let sim = sim_with(50, None);
        let query = [("image_type", "private_image")];
        // Five failures, then a success, reset the count.
        for _ in 0..5 {
            let reply = send(&sim, signed_request("SIMULATORAK", "bad", &query)).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        }
        let ok = send(&sim, signed_request("SIMULATORAK", "SIMULATORSK", &query)).await;
        assert_eq!(ok.status, StatusCode::OK);
        for _ in 0..6 {
            let reply = send(&sim, signed_request("SIMULATORAK", "bad", &query)).await;
            assert_eq!(reply.json()["error_msg"], auth::MSG_SIGNATURE);
        }
        // The sixth failure in a row locked the key: correct signatures fail.
        let locked = send(&sim, signed_request("SIMULATORAK", "SIMULATORSK", &query)).await;
        assert_eq!(locked.status, StatusCode::UNAUTHORIZED);
        assert_eq!(locked.error_code(), "APIG.0301");
        assert_eq!(locked.json()["error_msg"], auth::MSG_LOCKED);
        // Tokens are not affected.
        assert_eq!(
            list(&sim, "image_type=private_image").await.status,
            StatusCode::OK
        );
        tokio::time::advance(AUTH_LOCK - Duration::from_secs(1)).await;
        let still = send(&sim, signed_request("SIMULATORAK", "SIMULATORSK", &query)).await;
        assert_eq!(still.status, StatusCode::UNAUTHORIZED);
        tokio::time::advance(Duration::from_secs(1)).await;
        let ok = send(&sim, signed_request("SIMULATORAK", "SIMULATORSK", &query)).await;
        assert_eq!(ok.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn tokens_are_checked() {
        let sim = sim_with(50, None);
        let ok = send(&sim, token_request("tok2", "image_type=shared_image", None)).await;
        assert_eq!(ok.status, StatusCode::OK);
        let bad = send(&sim, token_request("nope", "image_type=shared_image", None)).await;
        assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
        assert_eq!(bad.json()["error_msg"], auth::MSG_TOKEN_BAD);
        let request = Request::get(format!("{PATH}?image_type=shared_image"))
            .body(Body::empty())
            .unwrap();
        let none = send(&sim, request).await;
        assert_eq!(none.status, StatusCode::UNAUTHORIZED);
        assert_eq!(none.json()["error_msg"], auth::MSG_TOKEN_MISSING);
    }

    #[tokio::test]
    async fn unknown_paths_and_methods_get_apig_0101() {
        let sim = sim_with(10, None);
        for request in [
            Request::get("/v5/proj/image/nothing")
                .body(Body::empty())
                .unwrap(),
            Request::post(PATH).body(Body::empty()).unwrap(),
        ] {
            let reply = send(&sim, request).await;
            assert_eq!(reply.status, StatusCode::NOT_FOUND);
            assert_eq!(reply.error_code(), "APIG.0101");
            assert_eq!(
                reply.json()["error_msg"],
                "The API does not exist or has not been published in the environment"
            );
        }
        assert!(sim.stats().calls.is_empty());
    }

    /// Over a real socket: AK/SK signing by the exporter's signer with
    /// reqwest, the peer address reaching the quota, a broken body and
    /// graceful shutdown.
    #[tokio::test]
    async fn serves_over_tcp() {
        let sim = sim_with(500, Some("3/1h".parse().unwrap()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(sim.clone().serve(listener, async {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::new();
        let query: Vec<(String, String)> = [
            ("image_type", "private_image"),
            ("namespace", "支付-团队"),
            ("limit", "200"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let get = |secret: &'static str| {
            let date = signer::sdk_date(SystemTime::now());
            let host = addr.to_string();
            let headers = vec![
                ("host".to_string(), host.clone()),
                ("x-sdk-date".to_string(), date.clone()),
            ];
            let authorization = authorization("SIMULATORAK", secret, &query, &headers);
            client
                .get(format!(
                    "http://{addr}{PATH}?{}",
                    signer::canonical_query(&query)
                ))
                .header("x-sdk-date", date)
                .header("authorization", authorization)
                .send()
        };
        let response = get("SIMULATORSK").await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert!(body["total_num"].as_u64().unwrap() > 0);
        assert_eq!(get("wrong").await.unwrap().status().as_u16(), 401);

        sim.fail_next(vec![Scripted::Reset]);
        let response = get("SIMULATORSK").await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert!(response.bytes().await.is_err());

        // The per-IP policy sees 127.0.0.1: a token from the same host is
        // refused after the two signed calls admitted above.
        let response = client
            .get(format!("http://{addr}{PATH}?image_type=private_image"))
            .header("x-auth-token", "tok")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let response = client
            .get(format!("http://{addr}{PATH}?image_type=private_image"))
            .header("x-auth-token", "tok2")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 429);
        let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert!(
            body["error_msg"]
                .as_str()
                .unwrap()
                .contains("policy ip over ratelimit,limit:3,time:1 hour")
        );

        let response = client
            .get(format!("http://{addr}/_sim/stats"))
            .send()
            .await
            .unwrap();
        let stats: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert_eq!(stats["calls"], 5);
        assert_eq!(stats["by_status"]["401"], 1);

        // A hanging call is cut short by shutdown.
        sim.fail_next(vec![Scripted::Hang(Duration::from_secs(3600))]);
        let hanging = tokio::spawn(
            client
                .get(format!("http://{addr}{PATH}?image_type=shared_image"))
                .header("x-auth-token", "tok")
                .header("x-forwarded-for", "ignored")
                .send(),
        );
        while sim.stats().calls.len() < 6 {
            tokio::task::yield_now().await;
        }
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
        let _ = hanging.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_successor_shares_faults_paging_and_auth() {
        let sim = sim_with(1000, None);
        // Authentication: a wrong token is refused and recorded.
        let bad = send(&sim, token_request_to(NEW_PATH, "nope", "", None)).await;
        assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
        assert_eq!(bad.json()["error_code"], "APIG.0301");
        // Scripted faults apply to whichever API is called next.
        sim.fail_next(vec![Scripted::Status(500), Scripted::Malformed]);
        assert_eq!(
            list_new(&sim, "image_type=harbor").await.status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let truncated = list_new(&sim, "image_type=harbor&limit=200").await;
        assert_eq!(truncated.status, StatusCode::OK);
        assert!(serde_json::from_slice::<Value>(&truncated.body).is_err());
        // Drift and duplicated rows.
        sim.set_faults(Faults {
            total_num_drift: -2,
            duplicate_rows: true,
            ..Faults::default()
        });
        let q = "enterprise_project_id=all_granted_eps&limit=50";
        let first = list_new(&sim, q).await;
        let second = list_new(&sim, &format!("{q}&offset=50")).await;
        let total = first.json()["total_num"].as_i64().unwrap();
        assert_eq!(second.json()["total_num"].as_i64().unwrap(), total - 2);
        assert_eq!(second.ids().len(), 50);
        assert_eq!(second.ids()[0], first.ids()[49]);
        // Loose types.
        sim.set_faults(Faults {
            loose_types: true,
            ..Faults::default()
        });
        let loose = list_new(&sim, "image_type=jfrog&limit=200").await.json();
        let rows = loose["data_list"].as_array().unwrap();
        assert!(rows.iter().any(|r| r["id"].is_string()));
        assert!(rows.iter().all(|r| r["registry_name"] == "jfrog-main"));
        // Other methods: the gateway's 404, not recorded.
        let calls = sim.stats().calls.len();
        let post = send(&sim, Request::post(NEW_PATH).body(Body::empty()).unwrap()).await;
        assert_eq!(post.status, StatusCode::NOT_FOUND);
        assert_eq!(post.error_code(), "APIG.0101");
        assert_eq!(sim.stats().calls.len(), calls);
        assert_eq!(sim.stats().count_status(401), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_churn_task_keeps_the_configured_rate_in_tokio_time() {
        use crate::{Churn, ChurnKind};
        let sim = Simulator::new(SimConfig {
            images: 1000,
            base_time_ms: BASE,
            churn: Some(Churn::new(30, Duration::from_secs(60))),
            ..SimConfig::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let started = Instant::now();
        let stop = tokio::time::sleep(Duration::from_secs(600) + Duration::from_millis(500));
        // A second server of the same simulator starts no second task.
        let second = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (first, other) = tokio::join!(
            sim.clone().serve(listener, stop),
            sim.clone()
                .serve(second, tokio::time::sleep(Duration::from_secs(300)))
        );
        first.unwrap();
        other.unwrap();
        assert!(started.elapsed() >= Duration::from_secs(600));
        let log = sim.churn_log();
        // Ten minutes at 30 a minute: 100 ticks of 3.
        assert_eq!(log.len(), 300, "{}", log.len());
        let kinds: HashSet<ChurnKind> = log.iter().map(|e| e.kind).collect();
        assert!(kinds.contains(&ChurnKind::Rescan) && kinds.contains(&ChurnKind::Push));
        // The task stopped with the server.
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert_eq!(sim.churn_log().len(), 300);
    }
}
