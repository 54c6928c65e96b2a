//! The simulator's HTTP side: the two listing endpoints, the control
//! endpoints and the shared state behind them.
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
//! The IAM and metadata routes are handled in `iam.rs`; they share the
//! gateway's keyring and lockout with the listing but not its quota.
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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use super::auth::{self, Credential, Failure};
use super::churn::{ChurnState, ServerClock};
use super::data::{self, SimImage};
use super::iam::{self, IamState};
use super::{
    Api, Call, Churn, ChurnEvent, DEFAULT_HANG, Faults, Quota, Scripted, SimConfig, Stats,
    max_calls_in_window,
};

/// The old listing's route (axum path syntax), [`Api::SwrRepository`].
pub const LISTING_PATH: &str = "/v5/{project_id}/image/swr-repository";

/// The successor listing's route (axum path syntax), [`Api::RegistryImages`].
pub const REGISTRY_IMAGES_PATH: &str = "/v5/{project_id}/image/registries/images";

/// `Content-Type` of every API answer, as the service sends it.
pub const CONTENT_TYPE_JSON: &str = "application/json;charset=UTF-8";

/// Consecutive authentication failures an access key may have; one more
/// locks it (documented gateway behaviour).
pub const MAX_AUTH_FAILURES: u32 = 5;

/// How long a locked access key stays locked.
pub const AUTH_LOCK: Duration = Duration::from_secs(5 * 60);

/// Largest request body read (the gateway signs bodies up to 12 MB).
const MAX_BODY: usize = 12 * 1024 * 1024;

/// Largest `limit` accepted.
pub const MAX_LIMIT: u64 = 200;

/// Largest `offset` accepted.
pub const MAX_OFFSET: u64 = 2_000_000;

/// How long a "reset" answer waits after its first half before breaking.
const RESET_AFTER: Duration = Duration::from_millis(20);

/// Window of `max_calls_per_window` in `/_sim/stats` when no quota is set.
const DEFAULT_STATS_WINDOW: Duration = Duration::from_secs(60);

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

/// The rows and a version that changes with every modification.
struct Dataset {
    version: u64,
    rows: Arc<Vec<SimImage>>,
}

/// Matching row indices per filter, valid for one [`Dataset`] version.
#[derive(Default)]
struct MatchCache {
    version: u64,
    entries: HashMap<String, Arc<Vec<usize>>>,
}

/// Filters remembered in the [`MatchCache`] before it starts over.
const MATCH_CACHE_ENTRIES: usize = 32;

/// Lockout bookkeeping of one access key.
#[derive(Default)]
struct AuthRecord {
    consecutive_failures: u32,
    locked_until: Option<Instant>,
}

struct MutableState {
    faults: Faults,
    quota: Option<Quota>,
    scripted: VecDeque<Scripted>,
    rng: StdRng,
    /// Arrival times of admitted calls per quota key (the API's name, then
    /// `ak:`, `token:` or `ip:`), oldest first, pruned to the window.
    admitted: HashMap<String, VecDeque<Instant>>,
    auth: HashMap<String, AuthRecord>,
    /// Failed authentications and lockouts of access keys and tokens.
    auth_failures: u64,
    lockouts: u64,
    calls: Vec<Call>,
}

/// A fault decided for one call.
#[derive(Debug, Clone, PartialEq)]
enum Fault {
    Status(u16),
    Reset,
    Malformed,
    Hang(Duration),
    Redirect(String),
}

/// How the body of an answer is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    Whole,
    /// Status 200, half the body, then the stream fails.
    Reset,
    /// Status 200, half the body, complete response.
    Truncated,
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

/// Listing parameters after validation.
#[derive(Debug)]
struct ListQuery {
    offset: usize,
    limit: usize,
    filter: Filter,
}

/// The parameters that select rows.
#[derive(Debug)]
struct Filter {
    api: Api,
    /// `None` = every type of the API.
    image_type: Option<String>,
    /// `None` = `all_granted_eps`.
    enterprise_project_id: Option<String>,
    namespace: Option<String>,
    image_name: Option<String>,
    image_version: Option<String>,
    scan_status: Option<String>,
    instance_name: Option<String>,
    instance_id: Option<String>,
    latest_version: bool,
    has_vul: Option<bool>,
    has_malicious_file: Option<bool>,
    has_unsafe_setting: Option<bool>,
    update_time: (Option<i64>, Option<i64>),
    scan_time: (Option<i64>, Option<i64>),
    /// Successor API only; always unset on the old one.
    registry_name: Option<String>,
    severity_level: Option<String>,
    sync_time: (Option<i64>, Option<i64>),
}

impl Filter {
    fn matches(&self, row: &SimImage, forbidden_eps: &[String]) -> bool {
        fn eq(filter: &Option<String>, value: &str) -> bool {
            filter.as_deref().is_none_or(|f| f == value)
        }
        fn flag(filter: Option<bool>, count: i64) -> bool {
            filter.is_none_or(|wanted| wanted == (count > 0))
        }
        fn within(range: (Option<i64>, Option<i64>), value: i64) -> bool {
            range.0.is_none_or(|start| value >= start) && range.1.is_none_or(|end| value <= end)
        }
        let type_matches = match &self.image_type {
            Some(image_type) => row.image_type == *image_type,
            None => self.api.image_types().contains(&row.image_type.as_str()),
        };
        type_matches
            && match &self.enterprise_project_id {
                Some(ep) => row.enterprise_project_id == *ep,
                None => !forbidden_eps.contains(&row.enterprise_project_id),
            }
            && eq(&self.namespace, &row.namespace)
            && eq(&self.image_name, &row.image_name)
            && eq(&self.image_version, &row.image_version)
            && eq(&self.scan_status, &row.scan_status)
            && eq(&self.instance_name, &row.instance_name)
            && eq(&self.instance_id, &row.instance_id)
            && (!self.latest_version || row.latest_version)
            && flag(self.has_vul, row.vul_num)
            && flag(self.has_malicious_file, row.malicious_file_num)
            && flag(self.has_unsafe_setting, row.unsafe_setting_num)
            && within(self.update_time, row.latest_update_time)
            && within(self.scan_time, row.latest_scan_time)
            && eq(&self.registry_name, &row.registry_name)
            && eq(&self.severity_level, &row.severity_level)
            && within(self.sync_time, row.latest_sync_time)
    }
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

    fn throttled(quota: Option<Quota>, policy: &str) -> Self {
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

    /// A plausible error for a scripted or random status.
    fn for_status(status: u16, quota: Option<Quota>) -> Self {
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

/// Query parameters as the service reads them: split on `&` and the first
/// `=`, `+` read as a space, percent-decoded.
pub(super) fn service_params(raw: &str) -> Vec<(String, String)> {
    auth::signing_query_pairs(&raw.replace('+', "%20"))
}

/// Looks a parameter up (first occurrence); an empty value counts as absent.
fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
        .filter(|value| !value.is_empty())
}

fn parse_bool(params: &[(String, String)], name: &str) -> Result<Option<bool>, ApiError> {
    match param(params, name) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(other) => Err(ApiError::invalid(format!(
            "Invalid parameter: {name} must be true or false, got {other:?}"
        ))),
    }
}

fn parse_i64(params: &[(String, String)], name: &str) -> Result<Option<i64>, ApiError> {
    param(params, name)
        .map(|text| {
            text.parse::<i64>().map_err(|_| {
                ApiError::invalid(format!("Invalid parameter: {name} must be an integer"))
            })
        })
        .transpose()
}

fn parse_ranged(
    params: &[(String, String)],
    name: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<usize, ApiError> {
    let value = parse_i64(params, name)?.unwrap_or(default as i64);
    match u64::try_from(value) {
        Ok(v) if range.contains(&v) => Ok(usize::try_from(v).unwrap_or(usize::MAX)),
        _ => Err(ApiError::invalid(format!(
            "Invalid parameter: {name} must be between {} and {}",
            range.start(),
            range.end()
        ))),
    }
}

fn parse_list_query(
    api: Api,
    params: &[(String, String)],
    faults: &Faults,
) -> Result<ListQuery, ApiError> {
    let image_type = match param(params, "image_type") {
        Some(t) if api.image_types().contains(&t) => Some(t.to_string()),
        Some(t) => {
            return Err(ApiError::invalid(format!(
                "Invalid parameter: image_type {t:?} is not one of {}",
                api.image_types().join(", ")
            )));
        }
        None if api.image_type_required() => {
            return Err(ApiError::invalid(
                "Invalid parameter: image_type is required",
            ));
        }
        None => None,
    };
    let limit = parse_ranged(params, "limit", 10, 1..=MAX_LIMIT)?;
    let offset = parse_ranged(params, "offset", 0, 0..=MAX_OFFSET)?;
    let own = |name: &str| param(params, name).map(str::to_string);
    // Parameters only the successor knows; the old API ignores them.
    let registry = |name: &str| own(name).filter(|_| api.registry_fields());
    let filter = Filter {
        api,
        image_type,
        enterprise_project_id: match param(params, "enterprise_project_id").unwrap_or("0") {
            "all_granted_eps" => None,
            ep => Some(ep.to_string()),
        },
        namespace: own("namespace"),
        image_name: own("image_name"),
        image_version: own("image_version"),
        scan_status: own("scan_status"),
        instance_name: own("instance_name"),
        instance_id: own("instance_id"),
        latest_version: parse_bool(params, "latest_version")?.unwrap_or(false),
        has_vul: parse_bool(params, "has_vul")?,
        has_malicious_file: parse_bool(params, "has_malicious_file")?,
        has_unsafe_setting: parse_bool(params, "has_unsafe_setting")?,
        update_time: (
            parse_i64(params, "start_latest_update_time")?,
            parse_i64(params, "end_latest_update_time")?,
        ),
        scan_time: (
            parse_i64(params, "start_latest_scan_time")?,
            parse_i64(params, "end_latest_scan_time")?,
        ),
        registry_name: registry("registry_name"),
        severity_level: registry("severity_level"),
        sync_time: if api.registry_fields() {
            (
                parse_i64(params, "start_latest_sync_time")?,
                parse_i64(params, "end_latest_sync_time")?,
            )
        } else {
            (None, None)
        },
    };
    // Documented, validated, but not a filter the simulator applies.
    parse_i64(params, "image_size")?;
    if let Some(ep) = &filter.enterprise_project_id
        && faults.forbidden_eps.contains(ep)
    {
        return Err(ApiError::new(
            403,
            "HSS.0013",
            format!("Insufficient permission for enterprise project {ep}"),
        ));
    }
    Ok(ListQuery {
        offset,
        limit,
        filter,
    })
}

fn lock(mutex: &Mutex<MutableState>) -> MutexGuard<'_, MutableState> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MutableState {
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
            let record = self.auth.entry(ak).or_default();
            if record.locked_until.is_some_and(|until| now < until) {
                return Err(ApiError::new(401, "APIG.0301", auth::MSG_LOCKED));
            }
            record.locked_until = None;
            match &outcome {
                Ok(_) => record.consecutive_failures = 0,
                Err(_) => {
                    self.auth_failures += 1;
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

    /// Admits a call under the quota for every key, or names the policy
    /// that refuses it. Refused calls are not admitted. Keys name the API,
    /// so each API has windows of its own.
    fn admit(&mut self, keys: &[String; 2], now: Instant) -> Result<(), &'static str> {
        let Some(quota) = self.quota else {
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

    /// The scripted answer for this call, else a random fault by rate.
    fn next_fault(&mut self) -> Option<Fault> {
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
        let f = &self.faults;
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

    fn record(&mut self, call: Call) {
        // Keep arrival order even when two calls finish deciding out of order.
        let at = self.calls.partition_point(|c| c.at <= call.at);
        self.calls.insert(at, call);
    }
}

/// Body of a control endpoint's error.
fn control_error(message: impl std::fmt::Display) -> Response {
    let body = json!({"error_code": "SIM.0001", "error_msg": message.to_string()});
    json_response(StatusCode::BAD_REQUEST, &body)
}

/// A JSON answer of a control endpoint.
fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(CONTENT_TYPE_JSON),
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn valid_rates(faults: &Faults) -> bool {
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

/// An image to mark malicious ([`Simulator::mark_malicious`]); also the
/// body of `POST /_sim/malicious`, where `image_type` defaults to
/// `private_image`, `enterprise_project_id` to `"0"` and `registry_name` to
/// none.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaliciousImage {
    /// Namespace (organisation, Harbor project, ...).
    pub namespace: String,
    /// Repository name.
    pub image_name: String,
    /// Tag.
    pub image_version: String,
    /// Malicious files to report.
    pub malicious_file_num: i64,
    /// Image type of the row.
    #[serde(default = "default_image_type")]
    pub image_type: String,
    /// Enterprise project of the row.
    #[serde(default = "default_ep")]
    pub enterprise_project_id: String,
    /// Registry of the row: when set, only a row of that registry matches,
    /// and a new row is put there (for `instance_image`, the instance of that
    /// name); when unset, a row of any registry matches, and a new row goes
    /// to the registry the image type maps to ([`data::default_registry`]:
    /// `swr-private`, `swr-shared`, `harbor-prod`, `jfrog-main`; none for
    /// `instance_image`, whose new rows have no instance).
    #[serde(default)]
    pub registry_name: Option<String>,
}

fn default_image_type() -> String {
    "private_image".to_string()
}

fn default_ep() -> String {
    "0".to_string()
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
                images: RwLock::new(Dataset {
                    version: 0,
                    rows: Arc::new(images),
                }),
                matches: Mutex::new(MatchCache::default()),
                state: Mutex::new(MutableState {
                    faults: config.faults,
                    quota: config.quota,
                    scripted: VecDeque::new(),
                    // Distinct from the data generator's stream.
                    rng: StdRng::seed_from_u64(config.seed ^ 0x5EED_FA17_0000_0001),
                    admitted: HashMap::new(),
                    auth: HashMap::new(),
                    auth_failures: 0,
                    lockouts: 0,
                    calls: Vec::new(),
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
            .route(iam::TOKENS_PATH, post(iam::auth_tokens).fallback(fallback))
            .route(iam::PROJECTS_PATH, get(iam::projects).fallback(fallback))
            .route(
                iam::AUTH_PROJECTS_PATH,
                get(iam::auth_projects).fallback(fallback),
            )
            .route(
                iam::METADATA_TOKEN_PATH,
                put(iam::metadata_token).fallback(fallback),
            )
            .route(
                iam::SECURITY_KEY_PATH,
                get(iam::security_key).fallback(fallback),
            )
            .route("/_sim/stats", get(stats_endpoint))
            .route("/_sim/faults", post(faults_endpoint))
            .route("/_sim/images", post(images_endpoint))
            .route("/_sim/malicious", post(malicious_endpoint))
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

    fn churn_state(&self) -> MutexGuard<'_, ChurnState> {
        self.inner
            .churn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether row `id` exists now.
    fn has_row(&self, id: u64) -> bool {
        self.snapshot()
            .1
            .binary_search_by_key(&id, |r| r.id)
            .is_ok()
    }

    /// The server's clock now, epoch ms: the wall clock plus
    /// [`SimConfig::clock_offset_ms`], never before the last change.
    pub fn clock_ms(&self) -> i64 {
        self.inner.clock.peek()
    }

    /// One tick of the churn engine ([`SimConfig::churn`], or
    /// [`Churn::default`] when unset): the scans of pushed rows that are
    /// due, then rescans, pushes and deletes in one namespace, all in one
    /// replacement of the rows and dated by one reading of the server's
    /// clock. The choices follow the seed alone, so two simulators of one
    /// configuration make the same changes tick by tick. Returns the
    /// changes, also added to [`Simulator::churn_log`].
    pub fn churn_tick(&self) -> Vec<ChurnEvent> {
        let churn = self.inner.churn_config.unwrap_or_default();
        let mut state = self.churn_state();
        if state.next_tick_is_empty(&churn) {
            // Count the tick without replacing the rows.
            return self.modify_if(false, |rows| state.tick(&churn, rows, 0, SystemTime::now()));
        }
        let now = self.inner.clock.next();
        let at = SystemTime::now();
        self.modify_if(true, |rows| state.tick(&churn, rows, now, at))
    }

    /// Rescans row `id`: `scan_status` `success`, `latest_scan_time` the
    /// server's now, the given counts, `severity_level` to match. Logged as
    /// a [`super::ChurnKind::Rescan`]. `None` when there is no such row.
    pub fn rescan(
        &self,
        id: u64,
        vul_num: i64,
        unsafe_setting_num: i64,
        malicious_file_num: i64,
    ) -> Option<SimImage> {
        let mut state = self.churn_state();
        let exists = self.has_row(id);
        let now = self.inner.clock.next();
        let at = SystemTime::now();
        self.modify_if(exists, |rows| {
            state.rescan(
                rows,
                id,
                (vul_num, unsafe_setting_num, malicious_file_num),
                now,
                at,
            )
        })
    }

    /// Pushes a new version into a repository of `namespace` with
    /// `image_type` (picked with the churn engine's random stream), copying
    /// that repository's other fields; with no such repository, into a new
    /// one named `pushed` (enterprise project `"0"`, the type's default
    /// registry). The new row has an id above every id so far, is
    /// `waiting_for_scan` and the latest version (the previous latest one
    /// is not, its times unchanged), and is updated at the server's now; the
    /// churn engine scans it one to three ticks later. Logged as a
    /// [`super::ChurnKind::Push`].
    pub fn push(&self, namespace: &str, image_type: &str) -> SimImage {
        let mut state = self.churn_state();
        let now = self.inner.clock.next();
        let at = SystemTime::now();
        self.modify_if(true, |rows| {
            state.push(rows, namespace, image_type, now, at)
        })
    }

    /// Deletes row `id` (when it was the latest version, the newest
    /// remaining version of its repository becomes the latest). Logged as a
    /// [`super::ChurnKind::Delete`]. False when there is no such row.
    pub fn delete(&self, id: u64) -> bool {
        let mut state = self.churn_state();
        let exists = self.has_row(id);
        let now = self.inner.clock.next();
        let at = SystemTime::now();
        self.modify_if(exists, |rows| state.delete(rows, id, now, at))
    }

    /// The changes logged so far, oldest first: churn ticks, rescans,
    /// pushes and deletes, at most [`super::CHURN_LOG_CAPACITY`] (older ones
    /// are dropped).
    pub fn churn_log(&self) -> Vec<ChurnEvent> {
        self.churn_state().log()
    }

    /// [`Simulator::churn_log`], emptying the log.
    pub fn drain_churn_log(&self) -> Vec<ChurnEvent> {
        self.churn_state().drain_log()
    }

    /// Runs `change` on a new version of the rows when `replace`, else on
    /// an empty list (for changes known to find nothing), so that no
    /// snapshot is copied and no cached match dropped for nothing.
    fn modify_if<T>(&self, replace: bool, change: impl FnOnce(&mut Vec<SimImage>) -> T) -> T {
        if replace {
            self.modify_images(change)
        } else {
            change(&mut Vec::new())
        }
    }

    fn snapshot(&self) -> (u64, Arc<Vec<SimImage>>) {
        let guard = self
            .inner
            .images
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        (guard.version, Arc::clone(&guard.rows))
    }

    fn modify_images<T>(&self, change: impl FnOnce(&mut Vec<SimImage>) -> T) -> T {
        let mut guard = self
            .inner
            .images
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        guard.version += 1;
        change(Arc::make_mut(&mut guard.rows))
    }

    /// The current rows, in id order.
    pub fn images(&self) -> Vec<SimImage> {
        self.snapshot().1.as_ref().clone()
    }

    /// Replaces all rows.
    pub fn set_images(&self, mut images: Vec<SimImage>) {
        images.sort_by_key(|row| row.id);
        self.modify_images(|rows| *rows = images);
    }

    /// Adds a row, replacing the row with the same id if there is one.
    pub fn add_image(&self, image: SimImage) {
        self.modify_images(|rows| insert_row(rows, image));
    }

    /// Replaces the faults.
    pub fn set_faults(&self, faults: Faults) {
        lock(&self.inner.state).faults = faults;
    }

    /// Replaces the quota (`None` = unlimited). Calls admitted so far keep
    /// counting against the new quota's window.
    pub fn set_quota(&self, quota: Option<Quota>) {
        lock(&self.inner.state).quota = quota;
    }

    /// Scripts the answers of the next listing calls that pass
    /// authentication and quota, in order, before any random fault; appended
    /// to answers still pending.
    pub fn fail_next(&self, scripted: Vec<Scripted>) {
        lock(&self.inner.state).scripted.extend(scripted);
    }

    /// Every listing request received so far, refused ones included, and
    /// the counts of credentials issued and projects looked up.
    pub fn stats(&self) -> Stats {
        let (calls, auth_failures, lockouts) = {
            let state = lock(&self.inner.state);
            (state.calls.clone(), state.auth_failures, state.lockouts)
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

    /// The keyring and IAM state (a lock never held across an await).
    pub(super) fn iam(&self) -> MutexGuard<'_, IamState> {
        self.inner
            .iam
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Checks a request's credentials as the gateway does, with the access
    /// key lockout, outside the listing quota: `None` when they pass, else
    /// the `APIG.0301` answer.
    pub(super) fn refusal(&self, parts: &Parts, body: &[u8]) -> Option<Response> {
        let outcome = self.verify(parts, body);
        let settled = lock(&self.inner.state).settle_auth(outcome, Instant::now());
        settled
            .err()
            .map(|error| api_error_response(&error, self.request_id()))
    }

    fn verify(&self, parts: &Parts, body: &[u8]) -> Result<Credential, Failure> {
        let iam = self.iam();
        auth::verify(parts, body, &iam.keyring, SystemTime::now(), Instant::now())
    }

    /// Sets `malicious_file_num` on the row matching namespace, name,
    /// version, image type and enterprise project, or adds such a row
    /// (scanned now, the newest of its repository, with a fresh id).
    /// Returns the row as it now is.
    pub fn set_malicious(
        &self,
        namespace: &str,
        image_name: &str,
        image_version: &str,
        image_type: &str,
        enterprise_project_id: &str,
        malicious_file_num: i64,
    ) -> SimImage {
        self.mark_malicious(&MaliciousImage {
            namespace: namespace.to_string(),
            image_name: image_name.to_string(),
            image_version: image_version.to_string(),
            malicious_file_num,
            image_type: image_type.to_string(),
            enterprise_project_id: enterprise_project_id.to_string(),
            registry_name: None,
        })
    }

    /// [`Simulator::set_malicious`] with a choice of registry
    /// ([`MaliciousImage::registry_name`]), e.g. one of two Harbor
    /// registries holding namespaces of the same name.
    pub fn mark_malicious(&self, image: &MaliciousImage) -> SimImage {
        let now = self.inner.clock.next();
        let MaliciousImage {
            namespace,
            image_name,
            image_version,
            malicious_file_num,
            image_type,
            enterprise_project_id,
            registry_name,
        } = image;
        let malicious_file_num = *malicious_file_num;
        let (default_name, registry_type, default_id) = data::default_registry(image_type);
        let (registry_name, registry_id, instance) = match registry_name.as_deref() {
            None => (default_name.to_string(), default_id.to_string(), None),
            Some(name) => {
                let known = data::REGISTRIES
                    .iter()
                    .find(|(known, kind, _)| *known == name && *kind == registry_type)
                    .map(|(_, _, id)| (*id).to_string());
                let instance = (image_type == "instance_image").then(|| {
                    data::INSTANCES
                        .iter()
                        .find(|(known, _, _)| *known == name)
                        .map_or((name, "", ""), |i| *i)
                });
                let id = known
                    .or_else(|| instance.map(|(_, id, _)| id.to_string()))
                    .filter(|id| !id.is_empty())
                    .unwrap_or_else(|| {
                        let h = data::mix(name.bytes().fold(0, |h, b| data::mix(h ^ u64::from(b))));
                        format!("{:016x}{:016x}", h, data::mix(h))
                    });
                (name.to_string(), id, instance)
            }
        };
        let wanted_registry = image.registry_name.as_deref();
        self.modify_images(|rows| {
            let same_repo = |r: &SimImage| {
                r.namespace == *namespace
                    && r.image_name == *image_name
                    && r.image_type == *image_type
                    && r.enterprise_project_id == *enterprise_project_id
                    && wanted_registry.is_none_or(|name| r.registry_name == name)
            };
            if let Some(row) = rows
                .iter_mut()
                .find(|r| same_repo(r) && r.image_version == *image_version)
            {
                row.malicious_file_num = malicious_file_num;
                return row.clone();
            }
            let id = rows.last().map_or(data::FIRST_ID, |r| r.id + 1);
            for row in rows.iter_mut().filter(|r| same_repo(r)) {
                row.latest_version = false;
            }
            let digest = format!("{:016x}", data::mix(id)).repeat(4);
            let row = SimImage {
                id,
                namespace: namespace.to_string(),
                image_name: image_name.to_string(),
                image_id: format!("{:016x}", data::mix(!id)).repeat(4),
                image_digest: format!("sha256:{digest}"),
                image_version: image_version.to_string(),
                image_type: image_type.to_string(),
                latest_version: true,
                scan_status: "success".to_string(),
                image_size: 52_428_800,
                latest_update_time: now,
                latest_scan_time: now,
                malicious_file_num,
                scannable: true,
                enterprise_project_id: enterprise_project_id.to_string(),
                instance_name: instance.map_or("", |i| i.0).to_string(),
                instance_id: instance.map_or("", |i| i.1).to_string(),
                instance_url: instance.map_or("", |i| i.2).to_string(),
                registry_name,
                registry_type: registry_type.to_string(),
                registry_id,
                severity_level: data::severity_level("success", 0).to_string(),
                latest_sync_time: now,
                ..SimImage::default()
            };
            insert_row(rows, row.clone());
            row
        })
    }

    pub(super) fn request_id(&self) -> String {
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
        let faults = state.faults.clone();
        let quota = state.quota;

        let gate = (|| {
            let credential = state.settle_auth(auth_outcome, arrival)?;
            let ip = peer.map_or_else(|| "unknown".to_string(), |ip| ip.to_string());
            // The documented limit is per API: one window per API and key.
            let keys = [
                format!("{}|{}", api.name(), credential.key),
                format!("{}|ip:{ip}", api.name()),
            ];
            state
                .admit(&keys, arrival)
                .map_err(|policy| ApiError::throttled(quota, policy))?;
            Ok::<_, ApiError>(state.next_fault())
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
        state.record(call);
        answer
    }

    /// Filters the rows by reference and serialises one page in `api`'s
    /// form.
    fn page(&self, api: Api, query: &ListQuery, faults: &Faults) -> Vec<u8> {
        let (version, images) = self.snapshot();
        let mut matching = self.matching(version, &images, &query.filter, &faults.forbidden_eps);
        if let Some(cutoff) = self.index_cutoff(&query.filter) {
            // A lagging index has not seen the rows changed after `cutoff`.
            let indexed = |&i: &usize| {
                images
                    .get(i)
                    .is_some_and(|row| row.latest_scan_time.max(row.latest_update_time) <= cutoff)
            };
            matching = Arc::new(matching.iter().copied().filter(indexed).collect());
        }
        let start = if faults.duplicate_rows && query.limit > 0 {
            // Page k starts k rows early, so it repeats the last row of page
            // k - 1 and still holds at most `limit` rows.
            query.offset - query.offset / query.limit
        } else {
            query.offset
        };
        let end = start.saturating_add(query.limit).min(matching.len());
        let rows: Vec<&SimImage> = matching
            .get(start..end)
            .unwrap_or_default()
            .iter()
            .filter_map(|&i| images.get(i))
            .collect();
        let mut total_num = i64::try_from(matching.len()).unwrap_or(i64::MAX);
        if query.offset > 0 {
            total_num = total_num.saturating_add(faults.total_num_drift).max(0);
        }
        data::page_json(
            total_num,
            &rows,
            faults.loose_types,
            api,
            faults.empty_data_list,
        )
    }

    /// With an index lag and a filter that goes through the index (a
    /// `start_latest_scan_time` or `start_latest_update_time`), the latest
    /// change time the index has seen: rows changed after it are left out.
    fn index_cutoff(&self, filter: &Filter) -> Option<i64> {
        let lag = self.inner.index_lag;
        if lag.is_zero() || (filter.scan_time.0.is_none() && filter.update_time.0.is_none()) {
            return None;
        }
        let lag_ms = i64::try_from(lag.as_millis()).unwrap_or(i64::MAX);
        Some(self.inner.clock.peek().saturating_sub(lag_ms))
    }

    /// Indices (into `images`, in id order) of the rows `filter` selects.
    fn matching(
        &self,
        version: u64,
        images: &[SimImage],
        filter: &Filter,
        forbidden_eps: &[String],
    ) -> Arc<Vec<usize>> {
        let key = format!("{filter:?}|{forbidden_eps:?}");
        {
            let cache = self
                .inner
                .matches
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if cache.version == version
                && let Some(hit) = cache.entries.get(&key)
            {
                return Arc::clone(hit);
            }
        }
        let found: Arc<Vec<usize>> = Arc::new(
            images
                .iter()
                .enumerate()
                .filter(|(_, row)| filter.matches(row, forbidden_eps))
                .map(|(i, _)| i)
                .collect(),
        );
        let mut cache = self
            .inner
            .matches
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // A result from older data than the cache holds is not kept.
        if version >= cache.version {
            if cache.version != version || cache.entries.len() >= MATCH_CACHE_ENTRIES {
                cache.entries.clear();
                cache.version = version;
            }
            cache.entries.insert(key, Arc::clone(&found));
        }
        found
    }
}

fn insert_row(rows: &mut Vec<SimImage>, image: SimImage) {
    match rows.binary_search_by_key(&image.id, |row| row.id) {
        Ok(i) => rows[i] = image,
        Err(i) => rows.insert(i, image),
    }
}

fn render(answer: Answer) -> Response {
    let Answer {
        status,
        mut body,
        retry_after,
        request_id,
        delivery,
        location,
        ..
    } = answer;
    let body = match delivery {
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
    };
    let mut response = Response::new(body);
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

/// `GET /_sim/stats`.
async fn stats_endpoint(State(sim): State<Simulator>) -> Response {
    let (calls, window) = {
        let state = lock(&sim.inner.state);
        let window = state.quota.map_or(DEFAULT_STATS_WINDOW, |q| q.window);
        (state.calls.clone(), window)
    };
    let stats = sim.stats();
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for call in &calls {
        *by_status.entry(call.status.to_string()).or_insert(0) += 1;
    }
    // Each API has its own quota, so its own figures.
    let by_api: serde_json::Map<String, serde_json::Value> = Api::ALL
        .iter()
        .map(|api| {
            let of_api: Vec<Call> = calls
                .iter()
                .filter(|c| c.api == api.name())
                .cloned()
                .collect();
            let value = json!({
                "calls": of_api.len(),
                "max_calls_per_window": max_calls_in_window(&of_api, window),
            });
            (api.name().to_string(), value)
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "calls": calls.len(),
            "by_status": by_status,
            "by_api": by_api,
            "max_calls_per_window": max_calls_in_window(&calls, window),
            "iam_tokens_issued": stats.iam_tokens_issued,
            "metadata_session_tokens_issued": stats.metadata_session_tokens_issued,
            "metadata_credentials_issued": stats.metadata_credentials_issued,
            "project_lookups": stats.project_lookups,
            "auth_project_lookups": stats.auth_project_lookups,
            "auth_failures": stats.auth_failures,
            "lockouts": stats.lockouts,
        }),
    )
}

/// `POST /_sim/faults` with a [`Faults`] JSON body.
async fn faults_endpoint(State(sim): State<Simulator>, body: Bytes) -> Response {
    match serde_json::from_slice::<Faults>(&body) {
        Ok(faults) if valid_rates(&faults) => {
            sim.set_faults(faults.clone());
            json_response(StatusCode::OK, &faults)
        }
        Ok(_) => control_error("rates must be between 0 and 1"),
        Err(error) => control_error(error),
    }
}

/// `POST /_sim/images` with a JSON array of [`SimImage`].
async fn images_endpoint(State(sim): State<Simulator>, body: Bytes) -> Response {
    match serde_json::from_slice::<Vec<SimImage>>(&body) {
        Ok(images) => {
            let added = images.len();
            let total = sim.modify_images(|rows| {
                for image in images {
                    insert_row(rows, image);
                }
                rows.len()
            });
            json_response(StatusCode::OK, &json!({"added": added, "total": total}))
        }
        Err(error) => control_error(error),
    }
}

/// `POST /_sim/malicious`.
async fn malicious_endpoint(State(sim): State<Simulator>, body: Bytes) -> Response {
    match serde_json::from_slice::<MaliciousImage>(&body) {
        Ok(image) => json_response(StatusCode::OK, &sim.mark_malicious(&image)),
        Err(error) => control_error(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, Request};
    use hss_api::signer;
    use serde_json::Value;
    use std::collections::HashSet;
    use tower::ServiceExt;

    const BASE: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    const PATH: &str = "/v5/proj/image/swr-repository";

    fn sim_with(images: usize, quota: Option<Quota>) -> Simulator {
        Simulator::new(SimConfig {
            images,
            quota,
            tokens: vec!["tok".to_string(), "tok2".to_string()],
            base_time_ms: BASE,
            ..SimConfig::default()
        })
    }

    struct Reply {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    }

    impl Reply {
        fn json(&self) -> Value {
            serde_json::from_slice(&self.body).unwrap()
        }
        fn error_code(&self) -> String {
            self.json()["error_code"].as_str().unwrap().to_string()
        }
        fn ids(&self) -> Vec<u64> {
            self.json()["data_list"]
                .as_array()
                .unwrap()
                .iter()
                .map(|row| row["id"].as_u64().unwrap())
                .collect()
        }
    }

    async fn send(sim: &Simulator, request: Request<Body>) -> Reply {
        let response = sim.router().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        Reply {
            status,
            headers,
            body,
        }
    }

    fn token_request(token: &str, query: &str, peer: Option<[u8; 4]>) -> Request<Body> {
        token_request_to(PATH, token, query, peer)
    }

    fn token_request_to(
        path: &str,
        token: &str,
        query: &str,
        peer: Option<[u8; 4]>,
    ) -> Request<Body> {
        let mut request = Request::get(format!("{path}?{query}"))
            .header("x-auth-token", token)
            .body(Body::empty())
            .unwrap();
        if let Some(ip) = peer {
            request
                .extensions_mut()
                .insert(ConnectInfo(SocketAddr::from((ip, 40000))));
        }
        request
    }

    async fn list(sim: &Simulator, query: &str) -> Reply {
        send(sim, token_request("tok", query, None)).await
    }

    const NEW_PATH: &str = "/v5/proj/image/registries/images";

    /// A call to the successor listing.
    async fn list_new(sim: &Simulator, query: &str) -> Reply {
        send(sim, token_request_to(NEW_PATH, "tok", query, None)).await
    }

    /// Every row of a listing, page by page, and the first page's total.
    async fn sweep(sim: &Simulator, path: &str, query: &str) -> (Vec<Value>, u64) {
        let mut rows = Vec::new();
        let mut total = None;
        loop {
            let q = format!("{query}&limit=200&offset={}", rows.len());
            let reply = send(sim, token_request_to(path, "tok", &q, None)).await;
            assert_eq!(reply.status, StatusCode::OK, "{path}?{q}");
            let body = reply.json();
            total.get_or_insert(body["total_num"].as_u64().unwrap());
            let page = body["data_list"].as_array().unwrap().clone();
            if page.is_empty() {
                break;
            }
            rows.extend(page);
        }
        (rows, total.unwrap_or(0))
    }

    fn signed_request(access_key: &str, secret_key: &str, query: &[(&str, &str)]) -> Request<Body> {
        let query: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let date = signer::sdk_date(SystemTime::now());
        let headers = vec![
            ("Host".to_string(), "hss.sim.test".to_string()),
            ("X-Project-Id".to_string(), "proj".to_string()),
            ("X-Sdk-Date".to_string(), date.clone()),
        ];
        let authorization = signer::sign(
            access_key,
            secret_key,
            &signer::SigningInput {
                method: "GET",
                path: PATH,
                query: &query,
                headers: &headers,
                body: b"",
            },
        );
        Request::get(format!("{PATH}?{}", signer::canonical_query(&query)))
            .header("host", "hss.sim.test")
            .header("x-project-id", "proj")
            .header("x-sdk-date", date)
            .header("authorization", authorization)
            .body(Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn pages_cover_the_listing_in_id_order() {
        let sim = sim_with(1000, None);
        let expected: Vec<u64> = sim
            .images()
            .iter()
            .filter(|r| r.image_type == "private_image" && r.enterprise_project_id == "0")
            .map(|r| r.id)
            .collect();
        assert!(expected.len() > 200, "{}", expected.len());
        let mut seen = Vec::new();
        let mut offset = 0;
        while offset < expected.len() {
            let reply = list(
                &sim,
                &format!("image_type=private_image&limit=200&offset={offset}"),
            )
            .await;
            assert_eq!(reply.status, StatusCode::OK);
            assert_eq!(
                reply.headers[header::CONTENT_TYPE],
                "application/json;charset=UTF-8"
            );
            assert_eq!(reply.json()["total_num"], expected.len());
            let ids = reply.ids();
            assert!(ids.len() <= 200);
            seen.extend(ids);
            offset += 200;
        }
        assert_eq!(seen, expected);
        // Default limit is 10; past the end the page is empty.
        assert_eq!(list(&sim, "image_type=private_image").await.ids().len(), 10);
        let past = list(&sim, "image_type=private_image&offset=2000000").await;
        assert_eq!(past.status, StatusCode::OK);
        assert!(past.ids().is_empty());
        // Changes to the data show on the next call with the same filter.
        sim.add_image(SimImage {
            id: 1,
            image_type: "private_image".into(),
            enterprise_project_id: "0".into(),
            ..SimImage::default()
        });
        let reply = list(&sim, "image_type=private_image&limit=200&offset=0").await;
        assert_eq!(reply.json()["total_num"], expected.len() + 1);
        assert_eq!(reply.ids()[0], 1);
    }

    #[tokio::test]
    async fn bad_parameters_are_refused_with_hss_0001() {
        let sim = sim_with(50, None);
        for query in [
            "image_type=private_image&limit=201",
            "image_type=private_image&limit=0",
            "image_type=private_image&limit=ten",
            "image_type=private_image&offset=-1",
            "image_type=private_image&offset=2000001",
            "limit=10",
            "image_type=harbor",
            "image_type=private_image&has_vul=yes",
            "image_type=private_image&latest_version=1",
            "image_type=private_image&start_latest_scan_time=yesterday",
        ] {
            let reply = list(&sim, query).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
            assert_eq!(reply.error_code(), "HSS.0001", "{query}");
            assert!(reply.json().get("request_id").is_none());
        }
        let ok = list(&sim, "image_type=local_image&limit=200").await;
        assert_eq!(
            (ok.status, ok.json()["total_num"].as_u64()),
            (StatusCode::OK, Some(0))
        );
    }

    #[tokio::test]
    async fn filters_narrow_the_result() {
        let sim = sim_with(1000, None);
        let rows = sim.images();
        let count = |f: &dyn Fn(&SimImage) -> bool| {
            rows.iter()
                .filter(|r| r.image_type == "private_image" && r.enterprise_project_id == "0")
                .filter(|r| f(r))
                .count() as u64
        };
        let total = |reply: Reply| {
            assert_eq!(reply.status, StatusCode::OK);
            reply.json()["total_num"].as_u64().unwrap()
        };
        let p = "image_type=private_image&limit=200";
        let cjk = signer::percent_encode("支付-团队");
        assert_eq!(
            total(list(&sim, &format!("{p}&namespace={cjk}")).await),
            count(&|r| r.namespace == "支付-团队")
        );
        assert!(count(&|r| r.namespace == "支付-团队") > 0);
        assert_eq!(
            total(list(&sim, &format!("{p}&latest_version=true")).await),
            count(&|r| r.latest_version)
        );
        assert_eq!(
            total(list(&sim, &format!("{p}&latest_version=false")).await),
            count(&|_| true)
        );
        assert_eq!(
            total(list(&sim, &format!("{p}&has_vul=false")).await),
            count(&|r| r.vul_num == 0)
        );
        assert_eq!(
            total(
                list(
                    &sim,
                    &format!("{p}&has_unsafe_setting=true&scan_status=success")
                )
                .await
            ),
            count(&|r| r.unsafe_setting_num > 0 && r.scan_status == "success")
        );
        let since = BASE - 7 * 86_400_000;
        assert_eq!(
            total(
                list(
                    &sim,
                    &format!("{p}&start_latest_scan_time={since}&end_latest_scan_time={BASE}")
                )
                .await
            ),
            count(&|r| r.latest_scan_time >= since && r.latest_scan_time <= BASE)
        );
        assert_eq!(
            total(list(&sim, &format!("{p}&end_latest_update_time={since}")).await),
            count(&|r| r.latest_update_time <= since)
        );
        let row = rows
            .iter()
            .find(|r| r.image_type == "private_image" && r.enterprise_project_id == "0")
            .unwrap();
        let exact = list(
            &sim,
            &format!(
                "{p}&namespace={}&image_name={}&image_version={}",
                signer::percent_encode(&row.namespace),
                row.image_name,
                row.image_version
            ),
        )
        .await;
        assert_eq!(exact.ids(), vec![row.id]);

        // Malicious rows, also across every enterprise project.
        let all_malicious = rows
            .iter()
            .filter(|r| r.image_type == "private_image" && r.malicious_file_num > 0)
            .count() as u64;
        let reply = list(
            &sim,
            "image_type=private_image&has_malicious_file=true&enterprise_project_id=all_granted_eps&limit=200",
        )
        .await;
        assert_eq!(total(reply), all_malicious);

        // Instance filters, with a CJK instance name.
        let instance = signer::percent_encode("企业实例-生产");
        let reply = list(
            &sim,
            &format!("image_type=instance_image&enterprise_project_id=all_granted_eps&instance_name={instance}&limit=200"),
        )
        .await;
        let expected = rows
            .iter()
            .filter(|r| r.instance_name == "企业实例-生产")
            .count() as u64;
        assert!(expected > 0);
        assert_eq!(total(reply), expected);
        // `+` reads as a space, as on the real service.
        sim.add_image(SimImage {
            id: 999_999,
            namespace: "a b".into(),
            image_type: "private_image".into(),
            enterprise_project_id: "0".into(),
            ..SimImage::default()
        });
        assert_eq!(
            list(&sim, &format!("{p}&namespace=a+b")).await.ids(),
            vec![999_999]
        );
    }

    #[tokio::test]
    async fn enterprise_projects_select_rows_and_forbidden_ones_get_403() {
        let sim = sim_with(1000, None);
        let rows = sim.images();
        let in_ep = |ep: &str| {
            rows.iter()
                .filter(|r| r.image_type == "shared_image" && r.enterprise_project_id == ep)
                .count() as u64
        };
        let total = |reply: Reply| reply.json()["total_num"].as_u64().unwrap();
        let p = "image_type=shared_image";
        assert_eq!(total(list(&sim, p).await), in_ep("0"));
        assert_eq!(
            total(list(&sim, &format!("{p}&enterprise_project_id=0")).await),
            in_ep("0")
        );
        assert_eq!(
            total(list(&sim, &format!("{p}&enterprise_project_id=ep-finance")).await),
            in_ep("ep-finance")
        );
        let all = in_ep("0") + in_ep("ep-finance") + in_ep("ep-platform");
        let query = format!("{p}&enterprise_project_id=all_granted_eps");
        assert_eq!(total(list(&sim, &query).await), all);

        sim.set_faults(Faults {
            forbidden_eps: vec!["ep-finance".into()],
            ..Faults::default()
        });
        let reply = list(&sim, &format!("{p}&enterprise_project_id=ep-finance")).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        assert_eq!(reply.error_code(), "HSS.0013");
        assert_eq!(total(list(&sim, &query).await), all - in_ep("ep-finance"));
    }

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

    #[tokio::test]
    async fn empty_pages_carry_data_list_as_the_fault_says() {
        let sim = sim_with(50, None);
        let q = "image_type=private_image&offset=1000";
        assert_eq!(list(&sim, q).await.json()["data_list"], json!([]));
        for (empty, want) in [
            (data::EmptyDataList::Null, Some(Value::Null)),
            (data::EmptyDataList::Missing, None),
        ] {
            sim.set_faults(Faults {
                empty_data_list: empty,
                ..Faults::default()
            });
            let body = list(&sim, q).await.json();
            assert_eq!(body.get("data_list").cloned(), want, "{empty:?}");
            assert!(
                body["total_num"].as_u64().unwrap() > 0,
                "total_num as usual"
            );
            // Pages with rows are unchanged.
            let full = list_new(&sim, "limit=5").await.json();
            assert_eq!(full["data_list"].as_array().unwrap().len(), 5);
        }
    }

    #[tokio::test]
    async fn drift_duplicates_and_loose_types() {
        let sim = sim_with(1000, None);
        sim.set_faults(Faults {
            total_num_drift: 3,
            duplicate_rows: true,
            ..Faults::default()
        });
        let q = "image_type=private_image&limit=50&enterprise_project_id=all_granted_eps";
        let first = list(&sim, q).await;
        let second = list(&sim, &format!("{q}&offset=50")).await;
        let total = first.json()["total_num"].as_i64().unwrap();
        assert_eq!(second.json()["total_num"].as_i64().unwrap(), total + 3);
        let third = list(&sim, &format!("{q}&offset=100")).await;
        let (a, b, c) = (first.ids(), second.ids(), third.ids());
        // Each page repeats the last row of the one before and still holds
        // at most `limit` rows.
        assert_eq!((a.len(), b.len(), c.len()), (50, 50, 50));
        assert_eq!(b[0], a[49]);
        assert_eq!(c[0], b[49]);

        sim.set_faults(Faults {
            loose_types: true,
            ..Faults::default()
        });
        let loose = list(&sim, "image_type=private_image&limit=200")
            .await
            .json();
        let list = loose["data_list"].as_array().unwrap();
        assert!(list.iter().any(|r| r["id"].is_string()));
        assert!(list.iter().any(|r| r["id"].is_u64()));
        assert!(loose["total_num"].is_u64());
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

    fn post_json(path: &str, body: &str) -> Request<Body> {
        Request::post(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    }

    #[tokio::test]
    async fn control_endpoints_change_data_and_faults() {
        let sim = sim_with(100, Some(Quota::DOCUMENTED));
        // Mark an existing row malicious.
        let row = sim
            .images()
            .into_iter()
            .find(|r| r.image_type == "private_image" && r.enterprise_project_id == "0")
            .unwrap();
        let body = json!({
            "namespace": row.namespace,
            "image_name": row.image_name,
            "image_version": row.image_version,
            "malicious_file_num": 7,
        })
        .to_string();
        let reply = send(&sim, post_json("/_sim/malicious", &body)).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json()["id"], row.id);
        assert_eq!(reply.json()["malicious_file_num"], 7);
        // A new row when none matches.
        let body = r#"{"namespace":"new-ns","image_name":"evil","image_version":"1.0",
            "malicious_file_num":2,"image_type":"shared_image","enterprise_project_id":"ep-x"}"#;
        let reply = send(&sim, post_json("/_sim/malicious", body)).await;
        let new_id = reply.json()["id"].as_u64().unwrap();
        assert!(new_id > row.id);
        let found = list(
            &sim,
            "image_type=shared_image&enterprise_project_id=ep-x&has_malicious_file=true",
        )
        .await;
        assert_eq!(found.ids(), vec![new_id]);
        assert_eq!(found.json()["data_list"][0]["scan_status"], "success");
        let bad = send(&sim, post_json("/_sim/malicious", r#"{"namespace":"x"}"#)).await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);

        // Add rows, replacing by id.
        let images = json!([
            {"id": row.id, "namespace": "moved", "image_name": "n", "image_version": "v",
             "image_type": "private_image", "enterprise_project_id": "0"},
            {"id": 5_000_000, "namespace": "moved", "image_name": "m", "image_version": "v",
             "image_type": "private_image", "enterprise_project_id": "0"}
        ])
        .to_string();
        let reply = send(&sim, post_json("/_sim/images", &images)).await;
        assert_eq!(reply.json()["added"], 2);
        assert_eq!(reply.json()["total"], 102);
        let moved = list(&sim, "image_type=private_image&namespace=moved").await;
        assert_eq!(moved.ids(), vec![row.id, 5_000_000]);

        // Faults.
        let reply = send(&sim, post_json("/_sim/faults", r#"{"fail_rate": 1.0}"#)).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            list(&sim, "image_type=private_image").await.status.as_u16(),
            500
        );
        let reply = send(&sim, post_json("/_sim/faults", r#"{"fail_rate": 2}"#)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        let reply = send(&sim, post_json("/_sim/faults", r#"{"nonsense": 1}"#)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.error_code(), "SIM.0001");

        // Stats: 3 listing calls (200, 200, 500) so far, then quota refusals.
        for _ in 0..5 {
            list(&sim, "image_type=private_image").await;
        }
        let stats = send(
            &sim,
            Request::get("/_sim/stats").body(Body::empty()).unwrap(),
        )
        .await;
        let stats = stats.json();
        assert_eq!(stats["calls"], 8);
        assert_eq!(stats["by_status"]["200"], 2);
        assert_eq!(stats["by_status"]["500"], 3);
        assert_eq!(stats["by_status"]["429"], 3);
        assert_eq!(stats["max_calls_per_window"], 8);
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
            let authorization = signer::sign(
                "SIMULATORAK",
                secret,
                &signer::SigningInput {
                    method: "GET",
                    path: PATH,
                    query: &query,
                    headers: &headers,
                    body: b"",
                },
            );
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

    const OLD_FIELDS: [&str; 23] = [
        "id",
        "namespace",
        "image_name",
        "image_id",
        "image_digest",
        "image_version",
        "image_type",
        "latest_version",
        "scan_status",
        "scan_failed_desc",
        "image_size",
        "latest_update_time",
        "latest_scan_time",
        "vul_num",
        "unsafe_setting_num",
        "malicious_file_num",
        "domain_name",
        "shared_status",
        "scannable",
        "instance_name",
        "instance_id",
        "instance_url",
        "association_images",
    ];

    const NEW_FIELDS: [&str; 7] = [
        "registry_id",
        "registry_name",
        "registry_type",
        "latest_sync_time",
        "is_multiple_arch",
        "severity_level",
        "scan_failed_code",
    ];

    #[tokio::test]
    async fn both_apis_serve_the_same_swr_rows() {
        let sim = sim_with(3000, None);
        for image_type in ["private_image", "shared_image", "instance_image"] {
            for ep in ["0", "ep-finance", "all_granted_eps"] {
                let q = format!("image_type={image_type}&enterprise_project_id={ep}");
                let (old, old_total) = sweep(&sim, PATH, &q).await;
                let (new, new_total) = sweep(&sim, NEW_PATH, &q).await;
                assert!(!old.is_empty(), "{q}");
                assert_eq!(old_total, old.len() as u64, "{q}");
                assert_eq!(new_total, old_total, "{q}");
                assert_eq!(new.len(), old.len(), "{q}");
                for (a, b) in old.iter().zip(&new) {
                    for key in OLD_FIELDS.iter().filter(|k| **k != "scan_failed_desc") {
                        assert_eq!(a[*key], b[*key], "{q} {key}");
                    }
                    // The new fields only on the successor.
                    for key in NEW_FIELDS {
                        assert!(a.get(key).is_none(), "{q} {key}");
                        assert!(b.get(key).is_some(), "{q} {key}");
                    }
                    // The old listing's scan_failed_desc is the code; the
                    // successor's is scan_failed_code, beside a description.
                    assert_eq!(b["scan_failed_code"], a["scan_failed_desc"]);
                    assert_eq!(
                        b["scan_failed_desc"],
                        data::scan_failed_description(a["scan_failed_desc"].as_str().unwrap())
                    );
                    assert_eq!(b["is_multiple_arch"], false);
                }
            }
        }
        // The same filters narrow both the same way.
        let q = "image_type=private_image&has_vul=true&latest_version=true&scan_status=success";
        let (old, _) = sweep(&sim, PATH, q).await;
        let (new, _) = sweep(&sim, NEW_PATH, q).await;
        let ids = |rows: &[Value]| rows.iter().map(|r| r["id"].clone()).collect::<Vec<_>>();
        assert_eq!(ids(&old), ids(&new));
        assert!(!old.is_empty());
    }

    #[tokio::test]
    async fn harbor_and_jfrog_only_on_the_successor() {
        let sim = sim_with(2000, None);
        let rows = sim.images();
        let count = |t: &str| {
            rows.iter()
                .filter(|r| r.image_type == t && r.enterprise_project_id == "0")
                .count() as u64
        };
        for image_type in ["harbor", "jfrog"] {
            let q = format!("image_type={image_type}");
            let (listed, total) = sweep(&sim, NEW_PATH, &q).await;
            assert!(total > 0 && total == count(image_type), "{image_type}");
            assert!(listed.iter().all(|r| r["image_type"] == image_type));
            // The old API refuses these types.
            let refused = list(&sim, &format!("{q}&limit=200")).await;
            assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{image_type}");
            assert_eq!(refused.error_code(), "HSS.0001");
        }
        // local_image exists only on the old API.
        let refused = list_new(&sim, "image_type=local_image").await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
        assert_eq!(refused.error_code(), "HSS.0001");
        assert!(
            refused.json()["error_msg"]
                .as_str()
                .unwrap()
                .contains("private_image, shared_image, instance_image, harbor, jfrog")
        );
        assert_eq!(
            list(&sim, "image_type=local_image").await.status,
            StatusCode::OK
        );
        // Without image_type: every type of the successor (the old API
        // requires it); a local_image row is not among them.
        sim.add_image(SimImage {
            id: 9_000_000,
            image_type: "local_image".into(),
            enterprise_project_id: "0".into(),
            ..SimImage::default()
        });
        let (every, total) = sweep(&sim, NEW_PATH, "enterprise_project_id=0").await;
        let want: u64 = data::REGISTRY_IMAGE_TYPES.iter().map(|t| count(t)).sum();
        assert_eq!((every.len() as u64, total), (want, want));
        let ids: Vec<u64> = every.iter().map(|r| r["id"].as_u64().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "id order");
        assert_eq!(
            list(&sim, "enterprise_project_id=0").await.status,
            StatusCode::BAD_REQUEST
        );
        // The same parameter checks: limit 1..=200.
        for query in [
            "limit=0",
            "limit=201",
            "limit=ten",
            "offset=-1",
            "has_vul=yes",
            "image_type=swr",
            "start_latest_sync_time=soon",
        ] {
            let reply = list_new(&sim, query).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
            assert_eq!(reply.error_code(), "HSS.0001", "{query}");
        }
        assert_eq!(list_new(&sim, "limit=1").await.ids().len(), 1);
        assert_eq!(list_new(&sim, "limit=200").await.ids().len(), 200);
        assert_eq!(list_new(&sim, "").await.ids().len(), 10);
    }

    #[tokio::test]
    async fn registry_and_severity_filters() {
        let sim = sim_with(2000, None);
        let rows = sim.images();
        let all = "enterprise_project_id=all_granted_eps";
        let count = |f: &dyn Fn(&SimImage) -> bool| rows.iter().filter(|r| f(r)).count() as u64;
        let total = |reply: Reply| {
            assert_eq!(reply.status, StatusCode::OK);
            reply.json()["total_num"].as_u64().unwrap()
        };
        for registry in [
            "swr-private",
            "swr-shared",
            "harbor-prod",
            "harbor-dev",
            "jfrog-main",
        ] {
            let want = count(&|r| r.registry_name == registry);
            assert!(want > 0, "{registry}");
            let reply = list_new(&sim, &format!("{all}&registry_name={registry}")).await;
            assert_eq!(total(reply), want, "{registry}");
        }
        let instance = signer::percent_encode("企业实例-生产");
        let reply = list_new(
            &sim,
            &format!("{all}&image_type=instance_image&registry_name={instance}"),
        )
        .await;
        assert_eq!(
            total(reply),
            count(&|r| r.image_type == "instance_image" && r.instance_name == "企业实例-生产")
        );
        // Exact names only, and type and registry together.
        assert_eq!(total(list_new(&sim, "registry_name=harbor").await), 0);
        assert_eq!(
            total(
                list_new(
                    &sim,
                    &format!("{all}&image_type=jfrog&registry_name=harbor-dev")
                )
                .await
            ),
            0
        );
        for level in data::SEVERITY_LEVELS {
            let want = count(&|r| r.severity_level == level);
            assert!(want > 0, "{level}");
            let reply = list_new(&sim, &format!("{all}&severity_level={level}")).await;
            assert_eq!(total(reply), want, "{level}");
            let reply = list_new(
                &sim,
                &format!("{all}&image_type=harbor&registry_name=harbor-dev&severity_level={level}"),
            )
            .await;
            assert_eq!(
                total(reply),
                count(&|r| r.registry_name == "harbor-dev" && r.severity_level == level)
            );
        }
        let (high, _) = sweep(&sim, NEW_PATH, &format!("{all}&severity_level=High")).await;
        assert!(high.iter().all(|r| r["vul_num"].as_i64().unwrap() >= 100));
        // Sync time range.
        let since = BASE - 30 * 86_400_000;
        assert_eq!(
            total(list_new(&sim, &format!("{all}&start_latest_sync_time={since}")).await),
            count(&|r| r.latest_sync_time >= since)
        );
        // The old API knows none of these parameters and ignores them.
        let q = "image_type=private_image&enterprise_project_id=all_granted_eps";
        let plain = total(list(&sim, q).await);
        assert_eq!(
            total(
                list(
                    &sim,
                    &format!("{q}&registry_name=nothing&severity_level=High")
                )
                .await
            ),
            plain
        );
    }

    #[tokio::test]
    async fn two_harbor_registries_share_a_namespace_name() {
        let sim = sim_with(2000, None);
        let rows = sim.images();
        let namespace = rows
            .iter()
            .filter(|r| r.registry_name == "harbor-prod" && r.enterprise_project_id == "0")
            .map(|r| r.namespace.clone())
            .find(|ns| {
                rows.iter().any(|r| {
                    r.registry_name == "harbor-dev"
                        && r.namespace == *ns
                        && r.enterprise_project_id == "0"
                })
            })
            .expect("a namespace in both Harbor registries");
        let ns = signer::percent_encode(&namespace);
        let q = format!("image_type=harbor&namespace={ns}");
        let ids = |rows: &[Value]| {
            rows.iter()
                .map(|r| r["id"].as_u64().unwrap())
                .collect::<HashSet<u64>>()
        };
        let (both, _) = sweep(&sim, NEW_PATH, &q).await;
        let (prod, _) = sweep(&sim, NEW_PATH, &format!("{q}&registry_name=harbor-prod")).await;
        let (dev, _) = sweep(&sim, NEW_PATH, &format!("{q}&registry_name=harbor-dev")).await;
        assert!(!prod.is_empty() && !dev.is_empty());
        assert!(prod.iter().all(|r| r["registry_name"] == "harbor-prod"
            && r["registry_type"] == "Harbor"
            && r["namespace"] == namespace.as_str()));
        assert!(dev.iter().all(|r| r["registry_name"] == "harbor-dev"));
        assert!(ids(&prod).is_disjoint(&ids(&dev)));
        assert_eq!(
            ids(&prod)
                .union(&ids(&dev))
                .copied()
                .collect::<HashSet<u64>>(),
            ids(&both)
        );
        assert_ne!(prod[0]["registry_id"], dev[0]["registry_id"]);

        // Malware injected into one of them shows there only.
        let body = json!({
            "namespace": namespace,
            "image_name": "evil",
            "image_version": "1",
            "image_type": "harbor",
            "registry_name": "harbor-dev",
            "malicious_file_num": 3,
        })
        .to_string();
        let reply = send(&sim, post_json("/_sim/malicious", &body)).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json()["registry_name"], "harbor-dev");
        assert_eq!(reply.json()["registry_type"], "Harbor");
        assert_eq!(reply.json()["severity_level"], "Security");
        let id = reply.json()["id"].as_u64().unwrap();
        let found = |registry: &'static str| {
            let q = format!("{q}&has_malicious_file=true&registry_name={registry}");
            let sim = sim.clone();
            async move { sweep(&sim, NEW_PATH, &q).await.0 }
        };
        assert!(ids(&found("harbor-dev").await).contains(&id));
        assert!(!ids(&found("harbor-prod").await).contains(&id));
        // The same image again, in the other registry: a row of its own.
        let other = sim.mark_malicious(&MaliciousImage {
            namespace: namespace.clone(),
            image_name: "evil".into(),
            image_version: "1".into(),
            malicious_file_num: 1,
            image_type: "harbor".into(),
            enterprise_project_id: "0".into(),
            registry_name: Some("harbor-prod".into()),
        });
        assert_ne!(other.id, id);
        assert_eq!(other.registry_id, data::REGISTRIES[2].2);
        // Without a registry: the type's default, or the first matching row.
        let again = sim.set_malicious(&namespace, "evil", "1", "harbor", "0", 9);
        assert_eq!(again.id, id.min(other.id));
        let jfrog = sim.set_malicious("ns", "x", "1", "jfrog", "0", 1);
        assert_eq!(
            (jfrog.registry_name.as_str(), jfrog.registry_type.as_str()),
            ("jfrog-main", "Jfrog")
        );
        let private = sim.set_malicious("ns", "x", "1", "private_image", "0", 1);
        assert_eq!(private.registry_name, "swr-private");
        let instance = sim.set_malicious("ns", "x", "1", "instance_image", "0", 1);
        assert_eq!(
            (
                instance.registry_name.as_str(),
                instance.instance_name.as_str()
            ),
            ("", "")
        );
        let staged = sim.mark_malicious(&MaliciousImage {
            registry_name: Some("swr-ee-staging".into()),
            ..MaliciousImage {
                namespace: "ns".into(),
                image_name: "x".into(),
                image_version: "1".into(),
                malicious_file_num: 2,
                image_type: "instance_image".into(),
                enterprise_project_id: "0".into(),
                registry_name: None,
            }
        });
        assert_ne!(staged.id, instance.id);
        assert_eq!(staged.instance_name, "swr-ee-staging");
        assert_eq!(staged.registry_id, staged.instance_id);
        assert_eq!(staged.registry_id, data::INSTANCES[1].1);
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

    // ---- churn: the server's clock, rescans, pushes, deletes, ticks ----

    /// The ids and `total_num` of both listings for `query` (which must
    /// carry `image_type`, as the old listing requires).
    async fn both(sim: &Simulator, query: &str) -> [(Vec<u64>, u64); 2] {
        let mut out = [(Vec::new(), 0), (Vec::new(), 0)];
        for (slot, path) in out.iter_mut().zip([PATH, NEW_PATH]) {
            let (rows, total) = sweep(sim, path, query).await;
            *slot = (
                rows.iter().map(|r| r["id"].as_u64().unwrap()).collect(),
                total,
            );
        }
        out
    }

    /// A private image of enterprise project "0", the kind both listings show.
    fn private_row(sim: &Simulator) -> SimImage {
        sim.images()
            .into_iter()
            .find(|r| r.image_type == "private_image" && r.enterprise_project_id == "0")
            .unwrap()
    }

    const PRIVATE: &str = "image_type=private_image&enterprise_project_id=0";

    #[tokio::test]
    async fn a_rescan_is_found_by_a_scan_time_filter_at_its_time_and_not_later() {
        let sim = sim_with(300, None);
        let row = private_row(&sim);
        let rescanned = sim.rescan(row.id, 150, 3, 0).unwrap();
        let t = rescanned.latest_scan_time;
        assert!(t > BASE && t >= sim.clock_ms() - 1000, "{t}");
        assert_eq!(rescanned.scan_status, "success");
        assert_eq!(rescanned.severity_level, "High");
        assert_eq!(
            (
                rescanned.vul_num,
                rescanned.unsafe_setting_num,
                rescanned.malicious_file_num
            ),
            (150, 3, 0)
        );
        assert_eq!(rescanned.latest_update_time, row.latest_update_time);
        for (ids, total) in both(&sim, &format!("{PRIVATE}&start_latest_scan_time={t}")).await {
            assert_eq!((ids, total), (vec![row.id], 1));
        }
        // Inclusive at both ends.
        let exact = format!("{PRIVATE}&start_latest_scan_time={t}&end_latest_scan_time={t}");
        for (ids, total) in both(&sim, &exact).await {
            assert_eq!((ids, total), (vec![row.id], 1));
        }
        let later = format!("{PRIVATE}&start_latest_scan_time={}", t + 1);
        for (ids, total) in both(&sim, &later).await {
            assert_eq!((ids, total), (vec![], 0));
        }
        let before = format!("{PRIVATE}&end_latest_scan_time={}", t - 1);
        for (ids, total) in both(&sim, &before).await {
            assert!(!ids.contains(&row.id));
            assert_eq!(ids.len() as u64, total);
        }
        // The successor without image_type: every type, the same one row.
        let (rows, total) = sweep(&sim, NEW_PATH, &format!("start_latest_scan_time={t}")).await;
        assert_eq!((rows.len(), total), (1, 1));
        assert_eq!(rows[0]["latest_scan_time"], t);
        assert_eq!(rows[0]["severity_level"], "High");
        // A row never scanned (0) never passes a start_latest_scan_time.
        let scanned: Vec<u64> = sim
            .images()
            .iter()
            .filter(|r| r.image_type == "private_image" && r.enterprise_project_id == "0")
            .filter(|r| r.latest_scan_time >= 1)
            .map(|r| r.id)
            .collect();
        assert!(sim.images().iter().any(|r| r.latest_scan_time == 0));
        for (ids, total) in both(&sim, &format!("{PRIVATE}&start_latest_scan_time=1")).await {
            assert_eq!(total, scanned.len() as u64);
            assert_eq!(ids, scanned);
        }
        let log = sim.churn_log();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].kind, super::super::ChurnKind::Rescan);
        assert_eq!((log[0].id, log[0].at_ms), (row.id, t));
        assert_eq!(log[0].namespace, row.namespace);
        assert!(sim.rescan(1, 0, 0, 0).is_none());
        // Successive changes never share a time.
        let again = sim.rescan(row.id, 0, 0, 1).unwrap();
        assert!(again.latest_scan_time > t);
        assert_eq!(again.severity_level, "Security");
        assert_eq!(sim.drain_churn_log().len(), 2);
        assert!(sim.churn_log().is_empty());
    }

    #[tokio::test]
    async fn a_push_is_found_by_the_update_time_filter_and_replaces_the_latest_version() {
        let sim = sim_with(300, None);
        let row = private_row(&sim);
        let before = sim.images();
        let pushed = sim.push(&row.namespace, "private_image");
        assert!(before.iter().all(|r| r.id < pushed.id));
        assert_eq!(pushed.namespace, row.namespace);
        assert_eq!(pushed.image_type, "private_image");
        assert_eq!(pushed.scan_status, "waiting_for_scan");
        assert_eq!(pushed.latest_scan_time, 0);
        assert_eq!((pushed.vul_num, pushed.malicious_file_num), (0, 0));
        assert_eq!(pushed.severity_level, "");
        assert!(pushed.latest_version);
        let t = pushed.latest_update_time;
        assert!(t > BASE);
        // The repository's other versions: none is the latest any more, and
        // none changed its times.
        let repo = |r: &SimImage| {
            r.namespace == pushed.namespace
                && r.image_name == pushed.image_name
                && r.image_type == pushed.image_type
                && r.registry_name == pushed.registry_name
                && r.id != pushed.id
        };
        let old: Vec<&SimImage> = before.iter().filter(|r| repo(r)).collect();
        assert!(
            old.iter().any(|r| r.latest_version),
            "a sibling was the latest"
        );
        let now = sim.images();
        for sibling in &old {
            let after = now.iter().find(|r| r.id == sibling.id).unwrap();
            assert!(!after.latest_version);
            assert_eq!(after.latest_update_time, sibling.latest_update_time);
            assert_eq!(after.latest_scan_time, sibling.latest_scan_time);
            assert_ne!(after.image_version, pushed.image_version);
            assert_eq!(after.enterprise_project_id, pushed.enterprise_project_id);
        }
        for (ids, total) in both(&sim, &format!("{PRIVATE}&start_latest_update_time={t}")).await {
            assert_eq!((ids, total), (vec![pushed.id], 1));
        }
        let later = format!("{PRIVATE}&start_latest_update_time={}", t + 1);
        for (ids, total) in both(&sim, &later).await {
            assert_eq!((ids, total), (vec![], 0));
        }
        // Not scanned yet, so no scan-time filter finds it.
        let scanned = format!("{PRIVATE}&start_latest_scan_time={t}");
        for (ids, _) in both(&sim, &scanned).await {
            assert!(ids.is_empty());
        }
        let latest = format!(
            "{PRIVATE}&namespace={}&image_name={}&latest_version=true",
            pushed.namespace, pushed.image_name
        );
        for (ids, total) in both(&sim, &latest).await {
            assert_eq!((ids, total), (vec![pushed.id], 1));
        }
        // A namespace without the type gets a new repository.
        let fresh = sim.push("nowhere", "jfrog");
        assert_eq!(
            (fresh.image_name.as_str(), fresh.registry_name.as_str()),
            ("pushed", "jfrog-main")
        );
        assert!(fresh.id > pushed.id && fresh.latest_version);
        // Ids of deleted rows are never handed out again.
        assert!(sim.delete(fresh.id));
        assert!(sim.push("nowhere", "jfrog").id > fresh.id);
    }

    #[tokio::test]
    async fn a_delete_leaves_every_listing_and_total() {
        let sim = sim_with(300, None);
        let row = private_row(&sim);
        let [(old_ids, old_total), (new_ids, new_total)] = both(&sim, PRIVATE).await;
        assert!(old_ids.contains(&row.id) && new_ids.contains(&row.id));
        let (all, all_total) = sweep(&sim, NEW_PATH, "enterprise_project_id=all_granted_eps").await;
        assert!(sim.delete(row.id));
        assert!(!sim.delete(row.id));
        let [(old_after, old_total_after), (new_after, new_total_after)] =
            both(&sim, PRIVATE).await;
        assert!(!old_after.contains(&row.id) && !new_after.contains(&row.id));
        assert_eq!(
            (old_total_after, new_total_after),
            (old_total - 1, new_total - 1)
        );
        let (rest, rest_total) =
            sweep(&sim, NEW_PATH, "enterprise_project_id=all_granted_eps").await;
        assert_eq!((rest.len(), rest_total), (all.len() - 1, all_total - 1));
        let filtered = format!("{PRIVATE}&namespace={}", row.namespace);
        for (ids, total) in both(&sim, &filtered).await {
            assert!(!ids.contains(&row.id));
            assert_eq!(ids.len() as u64, total);
        }
        // A deleted latest version hands the role to the newest one left.
        let repo = |r: &SimImage, of: &SimImage| {
            r.namespace == of.namespace
                && r.image_name == of.image_name
                && r.image_type == of.image_type
                && r.registry_name == of.registry_name
                && r.enterprise_project_id == of.enterprise_project_id
        };
        let rows = sim.images();
        let latest = rows
            .iter()
            .find(|r| r.latest_version && rows.iter().filter(|o| repo(o, r)).count() > 1)
            .unwrap()
            .clone();
        assert!(sim.delete(latest.id));
        let left: Vec<SimImage> = sim
            .images()
            .into_iter()
            .filter(|r| repo(r, &latest))
            .collect();
        assert_eq!(left.iter().filter(|r| r.latest_version).count(), 1);
        let newest = left
            .iter()
            .max_by_key(|r| (r.latest_update_time, r.id))
            .unwrap();
        assert!(newest.latest_version);
        let kinds: Vec<_> = sim.churn_log().iter().map(|e| e.kind).collect();
        assert_eq!(kinds, vec![super::super::ChurnKind::Delete; 2]);
    }

    /// Repositories with more than one latest version, or none.
    fn bad_repositories(rows: &[SimImage]) -> Vec<String> {
        let mut latest: HashMap<String, usize> = HashMap::new();
        for r in rows {
            let key = format!(
                "{}|{}|{}|{}|{}|{}",
                r.namespace,
                r.image_name,
                r.image_type,
                r.enterprise_project_id,
                r.registry_name,
                r.instance_id
            );
            *latest.entry(key).or_insert(0) += usize::from(r.latest_version);
        }
        latest
            .into_iter()
            .filter(|(_, n)| *n != 1)
            .map(|(k, _)| k)
            .collect()
    }

    #[test]
    fn churn_ticks_follow_the_seed_and_keep_the_rows_consistent() {
        use super::super::{Churn, ChurnKind};
        type Key = (ChurnKind, u64, String, String, String);
        let config = |seed| SimConfig {
            seed,
            images: 2000,
            namespaces: 20,
            base_time_ms: BASE,
            churn: Some(Churn {
                malicious_rate: 0.5,
                ..Churn::new(60, Duration::from_secs(60))
            }),
            ..SimConfig::default()
        };
        let run = |seed| {
            let sim = Simulator::new(config(seed));
            assert!(bad_repositories(&sim.images()).is_empty());
            let ticks: Vec<Vec<ChurnEvent>> = (0..100).map(|_| sim.churn_tick()).collect();
            (sim, ticks)
        };
        let keys = |ticks: &[Vec<ChurnEvent>]| -> Vec<Vec<Key>> {
            ticks
                .iter()
                .map(|t| {
                    t.iter()
                        .map(|e| {
                            (
                                e.kind,
                                e.id,
                                e.namespace.clone(),
                                e.image_type.clone(),
                                e.enterprise_project_id.clone(),
                            )
                        })
                        .collect()
                })
                .collect()
        };
        let (sim, ticks) = run(7);
        let (twin, twin_ticks) = run(7);
        let (_, other_ticks) = run(8);
        assert_eq!(keys(&ticks), keys(&twin_ticks));
        assert_ne!(keys(&ticks), keys(&other_ticks));
        let strip = |rows: Vec<SimImage>| -> Vec<SimImage> {
            rows.into_iter()
                .map(|r| SimImage {
                    latest_scan_time: 0,
                    latest_update_time: 0,
                    latest_sync_time: 0,
                    ..r
                })
                .collect()
        };
        assert_eq!(strip(sim.images()), strip(twin.images()));

        // 60 a minute in ticks of 6 s: 6 changes every tick.
        assert!(
            ticks.iter().all(|t| t.len() == 6),
            "{:?}",
            ticks.iter().map(Vec::len).collect::<Vec<_>>()
        );
        let mut counts: HashMap<ChurnKind, usize> = HashMap::new();
        let mut last_at = i64::MIN;
        let mut pushed = HashSet::new();
        for tick in &ticks {
            // One time per tick, later than the tick before.
            assert!(tick.iter().all(|e| e.at_ms == tick[0].at_ms));
            assert!(tick[0].at_ms > last_at);
            last_at = tick[0].at_ms;
            // The changes started by a tick are in one namespace.
            let started: HashSet<&str> = tick
                .iter()
                .filter(|e| e.kind != ChurnKind::Scanned)
                .map(|e| e.namespace.as_str())
                .collect();
            assert!(started.len() <= 1, "{started:?}");
            for e in tick {
                *counts.entry(e.kind).or_insert(0) += 1;
                match e.kind {
                    ChurnKind::Push => {
                        pushed.insert(e.id);
                    }
                    ChurnKind::Scanned => assert!(pushed.contains(&e.id)),
                    _ => {}
                }
            }
        }
        for kind in [
            ChurnKind::Rescan,
            ChurnKind::Push,
            ChurnKind::Delete,
            ChurnKind::Scanned,
        ] {
            assert!(counts.get(&kind).copied().unwrap_or(0) > 5, "{counts:?}");
        }
        assert_eq!(sim.churn_log().len(), 600);

        let rows = sim.images();
        assert!(rows.windows(2).all(|w| w[0].id < w[1].id));
        assert!(
            bad_repositories(&rows).is_empty(),
            "{:?}",
            bad_repositories(&rows)
        );
        let log = sim.churn_log();
        let deleted: HashSet<u64> = log
            .iter()
            .filter(|e| e.kind == ChurnKind::Delete)
            .map(|e| e.id)
            .collect();
        assert!(rows.iter().all(|r| !deleted.contains(&r.id)));
        for e in log.iter().filter(|e| e.kind != ChurnKind::Delete) {
            let Some(row) = rows.iter().find(|r| r.id == e.id) else {
                continue;
            };
            if e.kind == ChurnKind::Push {
                assert!(row.latest_update_time >= e.at_ms);
            } else {
                assert!(row.latest_scan_time >= e.at_ms);
                assert!(matches!(row.scan_status.as_str(), "success" | "failed"));
            }
        }
        let mut changed_malicious = 0;
        for row in rows.iter().filter(|r| r.latest_scan_time > BASE) {
            assert_eq!(
                row.severity_level,
                data::severity_level(&row.scan_status, row.vul_num),
                "{row:?}"
            );
            if row.scan_status == "failed" {
                assert!(!row.scan_failed_desc.is_empty());
                assert_eq!(row.vul_num + row.malicious_file_num, 0);
            } else {
                assert!(row.scan_failed_desc.is_empty());
                changed_malicious += usize::from(row.malicious_file_num > 0);
            }
        }
        assert!(changed_malicious > 0);
    }

    #[test]
    fn the_clock_offset_shifts_every_change() {
        for offset in [3_600_000i64, -90_000] {
            let sim = Simulator::new(SimConfig {
                images: 100,
                base_time_ms: BASE,
                clock_offset_ms: offset,
                ..SimConfig::default()
            });
            let row = sim.images()[0].clone();
            let before = super::super::now_ms() + offset;
            let rescanned = sim.rescan(row.id, 1, 0, 0).unwrap();
            let pushed = sim.push(&row.namespace, &row.image_type);
            let marked = sim.set_malicious("ns", "img", "1.0", "private_image", "0", 2);
            let after = super::super::now_ms() + offset;
            for t in [
                rescanned.latest_scan_time,
                pushed.latest_update_time,
                marked.latest_scan_time,
            ] {
                // + 3: the clock adds 1 ms per change when the wall clock stands still.
                assert!(before <= t && t <= after + 3, "{before} {t} {after}");
            }
            let clock = sim.clock_ms();
            assert!(
                clock >= marked.latest_scan_time && clock <= super::super::now_ms() + offset + 3
            );
            assert!(sim.churn_log().iter().all(|e| e.at_ms >= before));
        }
    }

    #[tokio::test]
    async fn index_lag_hides_fresh_rows_from_filtered_listings_only() {
        let sim = Simulator::new(SimConfig {
            images: 300,
            base_time_ms: BASE,
            tokens: vec!["tok".to_string()],
            index_lag: Duration::from_secs(60),
            ..SimConfig::default()
        });
        let row = private_row(&sim);
        let rescanned = sim.rescan(row.id, 5, 0, 0).unwrap();
        let t = rescanned.latest_scan_time;
        let filtered = format!("{PRIVATE}&start_latest_scan_time={t}");
        for (ids, total) in both(&sim, &filtered).await {
            assert_eq!((ids, total), (vec![], 0), "the index has not seen it yet");
        }
        let pushed = sim.push(&row.namespace, "private_image");
        let by_update = format!(
            "{PRIVATE}&start_latest_update_time={}",
            pushed.latest_update_time
        );
        for (ids, total) in both(&sim, &by_update).await {
            assert_eq!((ids, total), (vec![], 0));
        }
        // Listings without a start filter are never behind.
        let plain = format!("{PRIVATE}&namespace={}", row.namespace);
        let ended = format!("{PRIVATE}&end_latest_scan_time={t}");
        for query in [plain.as_str(), ended.as_str(), PRIVATE] {
            for (ids, total) in both(&sim, query).await {
                assert!(ids.contains(&row.id), "{query}");
                assert_eq!(ids.len() as u64, total);
            }
        }
        for (ids, _) in both(&sim, &plain).await {
            assert!(ids.contains(&pushed.id));
        }
        // A change older than the lag is indexed.
        let old_time = sim.clock_ms() - 61_000;
        sim.add_image(SimImage {
            id: 99_999,
            latest_scan_time: old_time,
            latest_update_time: old_time - 1000,
            ..rescanned.clone()
        });
        let old = format!("{PRIVATE}&start_latest_scan_time={}", old_time);
        for (ids, total) in both(&sim, &old).await {
            assert_eq!((ids, total), (vec![99_999], 1));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_churn_task_keeps_the_configured_rate_in_tokio_time() {
        use super::super::{Churn, ChurnKind};
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
