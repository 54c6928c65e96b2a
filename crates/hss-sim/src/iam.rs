//! The simulator's IAM side: password tokens, project lookup and the ECS/CCE
//! metadata service's temporary keys (reference/hss-api.md sections 4 and
//! 5.3).
//!
//! Place in the project: the simulator stands in for the HSS API; it is used
//! by tests, benchmarks and the demo; the exporter's own code never depends
//! on it. What is issued here goes into the gateway's `auth::Keyring`, so
//! the listing endpoint and `GET /v3/projects` accept it until it expires
//! (tokio's clock, so paused-time tests can run a credential out; the
//! `expires_at` texts are wall-clock time plus the lifetime).
//!
//! - `POST /v3/auth/tokens`: password identity, project scope by name or id;
//!   201 with `X-Subject-Token`; Keystone-style errors
//!   (`{"error":{"code","message","title"}}`).
//! - `GET /v3/projects?name=`: AK/SK signature (permanent or temporary key)
//!   or `X-Auth-Token`; gateway-style `APIG.0301` when refused.
//! - `PUT /meta-data/latest/api/token` and `GET
//!   /openstack/latest/securitykey`: plain-text session tokens, then fresh
//!   temporary keys per call.
//!
//! No secret (password, token, secret key, security token) is ever logged.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::MutexGuard;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::time::Instant;

use super::auth::Keyring;
use super::gateway::{AUTH_LOCK, CONTENT_TYPE_JSON, MAX_AUTH_FAILURES, service_params};
use super::{DEFAULT_PROJECT_ID, DEFAULT_PROJECT_NAME, Error, SimConfig};

/// Route of the password token endpoint.
pub const TOKENS_PATH: &str = "/v3/auth/tokens";

/// Route of the project lookup.
pub const PROJECTS_PATH: &str = "/v3/projects";

/// Route of the projects a token's user can reach (no IAM permission needed).
pub const AUTH_PROJECTS_PATH: &str = "/v3/auth/projects";

/// Keystone's answer to a user locked after too many wrong passwords.
pub const MSG_USER_LOCKED: &str =
    "The account is locked for 5 minutes after more than 5 consecutive authentication failures.";

/// Route of the metadata service's session token.
pub const METADATA_TOKEN_PATH: &str = "/meta-data/latest/api/token";

/// Route of the metadata service's temporary keys.
pub const SECURITY_KEY_PATH: &str = "/openstack/latest/securitykey";

/// Id of the simulated account (domain) every project and user belongs to.
pub const SIM_DOMAIN_ID: &str = "d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0";

/// Header that asks the metadata service for a session token's lifetime.
const TTL_HEADER: &str = "x-metadata-token-ttl-seconds";

/// Header that carries the metadata session token.
const SESSION_HEADER: &str = "x-metadata-token";

/// Longest session token lifetime the metadata service grants (6 hours, what
/// the official SDK asks for).
pub const MAX_SESSION_TTL: Duration = Duration::from_secs(6 * 3600);

/// Largest request body read.
const MAX_BODY: usize = 64 * 1024;

/// Keystone's answer to an unknown user, domain or wrong password.
pub const MSG_WRONG_PASSWORD: &str = "The username or password is wrong.";

const ALNUM_UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// An IAM user that may get a token with its password. `Debug` leaves the
/// password out.
#[derive(Clone, PartialEq, Eq)]
pub struct IamUser {
    /// The account (domain) name.
    pub domain_name: String,
    /// The IAM user name.
    pub user_name: String,
    /// The password; an empty one is never accepted.
    pub password: String,
}

impl IamUser {
    /// A user of `domain_name` called `user_name` with `password`.
    pub fn new(
        domain_name: impl Into<String>,
        user_name: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        IamUser {
            domain_name: domain_name.into(),
            user_name: user_name.into(),
            password: password.into(),
        }
    }

    /// `DOMAIN/USER`, for logs.
    pub fn label(&self) -> String {
        format!("{}/{}", self.domain_name, self.user_name)
    }
}

impl fmt::Debug for IamUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IamUser")
            .field("domain_name", &self.domain_name)
            .field("user_name", &self.user_name)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Reads `DOMAIN/USER:PASSWORD`, or `DOMAIN/USER` with an empty password
/// (to be filled from [`super::IAM_PASSWORD_ENV`]). The password may hold
/// any character, `:` and `/` included.
impl FromStr for IamUser {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (who, password) = s.split_once(':').unwrap_or((s, ""));
        let fail = |reason: &str| Error::IamUser {
            input: who.to_string(),
            reason: reason.to_string(),
        };
        let (domain, user) = who.split_once('/').ok_or_else(|| fail("no '/'"))?;
        let (domain, user) = (domain.trim(), user.trim());
        if domain.is_empty() || user.is_empty() {
            return Err(fail("the domain and the user name must not be empty"));
        }
        Ok(IamUser::new(domain, user, password))
    }
}

/// A project (region) of the simulated account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimProject {
    /// The project id (32 hex digits on the real service).
    pub id: String,
    /// The project name: the region id, e.g. `cn-north-4`.
    pub name: String,
}

impl SimProject {
    /// A project `name` with id `id`.
    pub fn new(id: impl Into<String>, name: impl Into<String>) -> Self {
        SimProject {
            id: id.into(),
            name: name.into(),
        }
    }
}

impl Default for SimProject {
    /// [`DEFAULT_PROJECT_ID`] named [`DEFAULT_PROJECT_NAME`].
    fn default() -> Self {
        SimProject::new(DEFAULT_PROJECT_ID, DEFAULT_PROJECT_NAME)
    }
}

/// Counts of what the IAM side handed out.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct IamCounters {
    pub iam_tokens_issued: u64,
    pub metadata_session_tokens_issued: u64,
    pub metadata_credentials_issued: u64,
    pub project_lookups: u64,
    pub auth_project_lookups: u64,
    pub password_failures: u64,
    pub user_lockouts: u64,
}

/// Lockout bookkeeping of one IAM user.
#[derive(Debug, Default)]
struct PasswordRecord {
    consecutive_failures: u32,
    locked_until: Option<Instant>,
}

/// The gateway's keyring and the IAM side's own state, behind one lock that
/// is never held across an await.
pub(super) struct IamState {
    pub keyring: Keyring,
    users: Vec<IamUser>,
    projects: Vec<SimProject>,
    token_lifetime: Duration,
    credential_lifetime: Duration,
    requires_session_token: bool,
    /// Metadata session token -> its expiry.
    sessions: HashMap<String, Instant>,
    /// Password failures per `domain/user`, as IAM locks users.
    passwords: HashMap<String, PasswordRecord>,
    pub counters: IamCounters,
}

impl IamState {
    pub fn new(config: &SimConfig) -> Self {
        IamState {
            keyring: Keyring::new(config.credentials.clone(), config.tokens.clone()),
            users: config.iam_users.clone(),
            projects: config.projects.clone(),
            token_lifetime: config.iam_token_lifetime,
            credential_lifetime: config.metadata_credential_lifetime,
            requires_session_token: config.metadata_requires_session_token,
            sessions: HashMap::new(),
            passwords: HashMap::new(),
            counters: IamCounters::default(),
        }
    }

    /// Checks a password as IAM does, with its lockout: more than
    /// [`MAX_AUTH_FAILURES`] wrong
    /// passwords in a row lock the user for
    /// [`AUTH_LOCK`], during which even the right
    /// one is refused. The user's label when it passes, else the message.
    fn check_password(
        &mut self,
        domain: &str,
        name: &str,
        password: &str,
        now: Instant,
    ) -> Result<String, &'static str> {
        let key = format!("{domain}/{name}");
        let found = self.user(domain, name, password).map(IamUser::label);
        let record = self.passwords.entry(key).or_default();
        if record.locked_until.is_some_and(|until| now < until) {
            return Err(MSG_USER_LOCKED);
        }
        record.locked_until = None;
        match found {
            Some(label) => {
                record.consecutive_failures = 0;
                Ok(label)
            }
            None => {
                self.counters.password_failures += 1;
                record.consecutive_failures += 1;
                if record.consecutive_failures > MAX_AUTH_FAILURES {
                    record.consecutive_failures = 0;
                    record.locked_until = Some(now + AUTH_LOCK);
                    self.counters.user_lockouts += 1;
                }
                Err(MSG_WRONG_PASSWORD)
            }
        }
    }

    /// Replaces the projects of `GET /v3/projects` and of token scopes.
    pub fn set_projects(&mut self, projects: Vec<SimProject>) {
        self.projects = projects;
    }

    /// Whether the metadata service wants a session token before it hands
    /// out keys.
    pub fn set_requires_session_token(&mut self, required: bool) {
        self.requires_session_token = required;
    }

    fn user(&self, domain: &str, name: &str, password: &str) -> Option<&IamUser> {
        self.users.iter().find(|u| {
            u.domain_name == domain
                && u.user_name == name
                && !u.password.is_empty()
                && constant_time_eq(u.password.as_bytes(), password.as_bytes())
        })
    }
}

/// What the IAM routes need from the simulator that mounts them: this
/// module's state, request ids, and the gateway's credential check (whose
/// access key lockout the listings share). The simulator implements it, so
/// that this module never names it.
pub(super) trait IamHost: Clone + Send + Sync + 'static {
    /// The keyring and IAM state (a lock never held across an await).
    fn iam(&self) -> MutexGuard<'_, IamState>;

    /// A fresh request id for the `X-Request-Id` header.
    fn request_id(&self) -> String;

    /// Checks a request's credentials as the gateway does, with the access
    /// key lockout, outside the listing quota: `None` when they pass, else
    /// the `APIG.0301` answer.
    fn refusal(&self, parts: &Parts, body: &[u8]) -> Option<Response>;
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A random text of `len` characters from `alphabet`.
fn random_text(len: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())]))
        .collect()
}

/// A stable 32-hex-digit id derived from `text`.
fn hex_id(text: &str) -> String {
    // FNV-1a, then the data generator's mixer for spread.
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!(
        "{:016x}{:016x}",
        super::data::mix(hash),
        super::data::mix(!hash)
    )
}

/// Wall-clock `now + lifetime` as IAM writes it:
/// `2026-11-28T10:00:00.000000Z`.
fn wall_time(after: Duration) -> String {
    humantime::format_rfc3339_micros(SystemTime::now() + after).to_string()
}

fn with_request_id(mut response: Response, sim: &impl IamHost) -> Response {
    if let Ok(value) = HeaderValue::from_str(&sim.request_id()) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

fn json_answer(sim: &impl IamHost, status: StatusCode, value: &serde_json::Value) -> Response {
    let response = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(CONTENT_TYPE_JSON),
        )],
        value.to_string(),
    )
        .into_response();
    with_request_id(response, sim)
}

/// A Keystone-style error: `{"error":{"code","message","title"}}`.
fn keystone_error(sim: &impl IamHost, status: StatusCode, message: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    json_answer(
        sim,
        status,
        &json!({"error": {"code": status.as_u16(), "message": message, "title": title}}),
    )
}

/// A plain-text answer of the metadata service.
fn text_answer(status: StatusCode, text: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
        text,
    )
        .into_response()
}

/// Body of `POST /v3/auth/tokens` (only what the simulator reads).
#[derive(Deserialize)]
struct TokenRequest {
    auth: TokenAuth,
}

#[derive(Deserialize)]
struct TokenAuth {
    identity: TokenIdentity,
    scope: Option<TokenScope>,
}

#[derive(Deserialize)]
struct TokenIdentity {
    methods: Vec<String>,
    password: Option<PasswordIdentity>,
}

#[derive(Deserialize)]
struct PasswordIdentity {
    user: PasswordUser,
}

#[derive(Deserialize)]
struct PasswordUser {
    name: String,
    password: String,
    domain: NamedRef,
}

#[derive(Deserialize)]
struct NamedRef {
    name: String,
}

#[derive(Deserialize)]
struct TokenScope {
    project: Option<ProjectRef>,
}

#[derive(Deserialize)]
struct ProjectRef {
    id: Option<String>,
    name: Option<String>,
}

/// `POST /v3/auth/tokens[?nocatalog=true]`.
pub(super) async fn auth_tokens<S: IamHost>(State(sim): State<S>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bad = |message: &str| keystone_error(&sim, StatusCode::BAD_REQUEST, message);
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return bad("The request body could not be read.");
    };
    let Ok(request) = serde_json::from_slice::<TokenRequest>(&body) else {
        return bad("The request body is not a valid token request.");
    };
    let auth = request.auth;
    if !auth.identity.methods.iter().any(|m| m == "password") {
        return bad("Only the password method is supported by the simulator.");
    }
    let Some(identity) = auth.identity.password else {
        return bad("The password identity is missing.");
    };
    let Some(scope) = auth.scope.and_then(|s| s.project) else {
        return bad("A project scope (scope.project.name or scope.project.id) is required.");
    };
    let nocatalog = service_params(parts.uri.query().unwrap_or(""))
        .iter()
        .any(|(key, value)| key == "nocatalog" && !value.is_empty());
    let user = &identity.user;

    let token = format!("MIIT{}", random_text(252, ALNUM));
    let now = Instant::now();
    let (body, label) = {
        let mut iam = sim.iam();
        let label = match iam.check_password(&user.domain.name, &user.name, &user.password, now) {
            Ok(label) => label,
            Err(message) => {
                drop(iam);
                tracing::debug!(
                    domain = %user.domain.name,
                    user = %user.name,
                    message,
                    "simulator refused an IAM password"
                );
                return keystone_error(&sim, StatusCode::UNAUTHORIZED, message);
            }
        };
        let project = iam
            .projects
            .iter()
            .find(|p| match (&scope.id, &scope.name) {
                (Some(id), _) => p.id == *id,
                (None, Some(name)) => p.name == *name,
                (None, None) => false,
            })
            .cloned();
        let Some(project) = project else {
            drop(iam);
            let wanted = scope.id.or(scope.name).unwrap_or_default();
            return bad(&format!(
                "The project {wanted:?} in the scope does not exist."
            ));
        };
        let lifetime = iam.token_lifetime;
        iam.keyring
            .add_token(token.clone(), format!("user:{label}"), now + lifetime);
        iam.counters.iam_tokens_issued += 1;
        let domain = json!({"id": SIM_DOMAIN_ID, "name": user.domain.name});
        let mut token_body = json!({
            "expires_at": wall_time(lifetime),
            "issued_at": wall_time(Duration::ZERO),
            "methods": ["password"],
            "project": {"id": project.id, "name": project.name, "domain": domain},
            "roles": [{"id": hex_id("te_admin"), "name": "te_admin"}],
            "user": {
                "id": hex_id(&label),
                "name": user.name,
                "domain": domain,
                "password_expires_at": "",
            },
        });
        if !nocatalog {
            token_body["catalog"] = json!([]);
        }
        (json!({"token": token_body}), label)
    };
    tracing::debug!(user = %label, "simulator issued an IAM token");
    let mut response = json_answer(&sim, StatusCode::CREATED, &body);
    match HeaderValue::from_str(&token) {
        Ok(value) => {
            response.headers_mut().insert("x-subject-token", value);
            response
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// `GET /v3/projects[?name=REGION]`.
pub(super) async fn projects<S: IamHost>(State(sim): State<S>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY)
        .await
        .unwrap_or_default();
    if let Some(refused) = sim.refusal(&parts, &body) {
        return refused;
    }
    let params = service_params(parts.uri.query().unwrap_or(""));
    let name = params
        .iter()
        .find(|(key, _)| key == "name")
        .map(|(_, value)| value.clone())
        .filter(|value| !value.is_empty());
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("iam.sim.test")
        .to_string();
    let found: Vec<SimProject> = {
        let mut iam = sim.iam();
        iam.counters.project_lookups += 1;
        iam.projects
            .iter()
            .filter(|p| name.as_deref().is_none_or(|n| p.name == n))
            .cloned()
            .collect()
    };
    let projects: Vec<serde_json::Value> = found
        .iter()
        .map(|p| {
            json!({
                "id": p.id,
                "name": p.name,
                "domain_id": SIM_DOMAIN_ID,
                "parent_id": SIM_DOMAIN_ID,
                "description": "",
                "enabled": true,
                "is_domain": false,
                "links": {"self": format!("http://{host}{PROJECTS_PATH}/{}", p.id)},
            })
        })
        .collect();
    let self_link = match parts.uri.query() {
        Some(query) => format!("http://{host}{PROJECTS_PATH}?{query}"),
        None => format!("http://{host}{PROJECTS_PATH}"),
    };
    json_answer(
        &sim,
        StatusCode::OK,
        &json!({
            "projects": projects,
            "links": {"self": self_link, "previous": null, "next": null},
        }),
    )
}

/// `GET /v3/auth/projects`: the projects the caller's user can reach, which
/// needs no IAM permission (the simulator's users reach every project).
pub(super) async fn auth_projects<S: IamHost>(State(sim): State<S>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY)
        .await
        .unwrap_or_default();
    if let Some(refused) = sim.refusal(&parts, &body) {
        return refused;
    }
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("iam.sim.test")
        .to_string();
    let projects: Vec<serde_json::Value> = {
        let mut iam = sim.iam();
        iam.counters.auth_project_lookups += 1;
        iam.projects
            .iter()
            .map(|p| {
                json!({
                    "id": p.id,
                    "name": p.name,
                    "domain_id": SIM_DOMAIN_ID,
                    "enabled": true,
                    "is_domain": false,
                    "links": {"self": format!("http://{host}{PROJECTS_PATH}/{}", p.id)},
                })
            })
            .collect()
    };
    json_answer(
        &sim,
        StatusCode::OK,
        &json!({
            "projects": projects,
            "links": {"self": format!("http://{host}{AUTH_PROJECTS_PATH}")},
        }),
    )
}

/// `PUT /meta-data/latest/api/token` with `X-Metadata-Token-Ttl-Seconds`.
pub(super) async fn metadata_token<S: IamHost>(
    State(sim): State<S>,
    headers: HeaderMap,
) -> Response {
    let max = MAX_SESSION_TTL.as_secs();
    let ttl = headers
        .get(TTL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ttl| (1..=max).contains(ttl));
    let mut iam = sim.iam();
    if !iam.requires_session_token {
        return text_answer(StatusCode::NOT_FOUND, "404 Not Found\n".to_string());
    }
    let Some(ttl) = ttl else {
        return text_answer(
            StatusCode::BAD_REQUEST,
            format!("X-Metadata-Token-Ttl-Seconds must be a whole number from 1 to {max}\n"),
        );
    };
    let now = Instant::now();
    iam.sessions.retain(|_, expires| now < *expires);
    let session = random_text(56, ALNUM);
    iam.sessions
        .insert(session.clone(), now + Duration::from_secs(ttl));
    iam.counters.metadata_session_tokens_issued += 1;
    drop(iam);
    tracing::debug!(
        ttl_seconds = ttl,
        "simulator issued a metadata session token"
    );
    text_answer(StatusCode::OK, session)
}

/// `GET /openstack/latest/securitykey`.
pub(super) async fn security_key<S: IamHost>(State(sim): State<S>, headers: HeaderMap) -> Response {
    let now = Instant::now();
    let access = random_text(20, ALNUM_UPPER);
    let secret = random_text(40, ALNUM);
    let security_token = format!("gQ{}", random_text(318, ALNUM));
    let lifetime = {
        let mut iam = sim.iam();
        if iam.requires_session_token {
            let valid = headers
                .get(SESSION_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|session| iam.sessions.get(session.trim()))
                .is_some_and(|expires| now < *expires);
            if !valid {
                drop(iam);
                return text_answer(
                    StatusCode::UNAUTHORIZED,
                    "401 Unauthorized: a valid X-Metadata-Token is required\n".to_string(),
                );
            }
        }
        let lifetime = iam.credential_lifetime;
        iam.keyring.add_temporary(
            access.clone(),
            secret.clone(),
            security_token.clone(),
            now + lifetime,
        );
        iam.counters.metadata_credentials_issued += 1;
        lifetime
    };
    tracing::debug!(access_key = %access, "simulator issued a temporary access key");
    let body = json!({"credential": {
        "access": access,
        "secret": secret,
        "securitytoken": security_token,
        "expires_at": wall_time(lifetime),
    }});
    with_request_id(
        (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            Body::from(body.to_string()),
        )
            .into_response(),
        &sim,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Simulator;
    use crate::auth::{MSG_SIGNATURE, MSG_TOKEN_BAD};
    use crate::server::testing::{Reply, send};
    use crate::{MSG_SECURITY_TOKEN_EXPIRED, MSG_TOKEN_EXPIRED};
    use hss_api::signer;
    use serde_json::Value;

    const LISTING: &str = "/v5/proj/image/swr-repository";

    fn sim(config: SimConfig) -> Simulator {
        Simulator::new(SimConfig {
            images: 20,
            tokens: vec!["static".to_string()],
            iam_users: vec![IamUser::new("acme", "alice", "s3cret:/pw")],
            base_time_ms: 1_767_225_600_000,
            ..config
        })
    }

    fn token_body(domain: &str, user: &str, password: &str, project: Value) -> String {
        json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": user, "password": password, "domain": {"name": domain}}}},
            "scope": {"project": project}}})
        .to_string()
    }

    fn post_tokens(query: &str, body: String) -> Request {
        Request::post(format!("{TOKENS_PATH}{query}"))
            .header(header::CONTENT_TYPE, "application/json;charset=utf8")
            .body(Body::from(body))
            .unwrap()
    }

    async fn issue(sim: &Simulator) -> Reply {
        let body = token_body("acme", "alice", "s3cret:/pw", json!({"name": "cn-north-4"}));
        send(sim, post_tokens("?nocatalog=true", body)).await
    }

    fn with_token(path_and_query: &str, token: &str) -> Request {
        Request::get(path_and_query)
            .header("x-auth-token", token)
            .body(Body::empty())
            .unwrap()
    }

    fn listing_query() -> String {
        format!("{LISTING}?image_type=private_image")
    }

    /// How a temporary key's security token travels.
    #[derive(Clone, Copy, PartialEq)]
    enum Sts {
        None,
        Signed,
        SentUnsigned,
    }

    /// A GET signed with `ak`/`sk`, optionally with `X-Security-Token`.
    fn signed(
        path: &str,
        query: &[(&str, &str)],
        ak: &str,
        sk: &str,
        sts: Sts,
        security_token: &str,
    ) -> Request {
        let query: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let date = signer::sdk_date(SystemTime::now());
        let mut headers = vec![
            ("Host".to_string(), "sim.test".to_string()),
            ("X-Sdk-Date".to_string(), date.clone()),
        ];
        if sts == Sts::Signed {
            headers.push(("X-Security-Token".to_string(), security_token.to_string()));
        }
        let authorization = signer::sign(
            ak,
            sk,
            &signer::SigningInput {
                method: "GET",
                path,
                query: &query,
                headers: &headers,
                body: b"",
            },
        );
        let mut builder = Request::get(format!("{path}?{}", signer::canonical_query(&query)))
            .header("host", "sim.test")
            .header("x-sdk-date", date)
            .header("authorization", authorization);
        if sts != Sts::None {
            builder = builder.header("x-security-token", security_token);
        }
        builder.body(Body::empty()).unwrap()
    }

    fn assert_micros_z(text: &str) {
        // 2026-11-28T10:00:00.000000Z
        assert_eq!(text.len(), 27, "{text}");
        assert!(text.ends_with('Z') && text.as_bytes()[19] == b'.', "{text}");
        assert!(humantime::parse_rfc3339(text).is_ok(), "{text}");
    }

    fn seconds_from_now(text: &str) -> i64 {
        let at = humantime::parse_rfc3339(text).unwrap();
        match at.duration_since(SystemTime::now()) {
            Ok(ahead) => ahead.as_secs() as i64,
            Err(behind) => -(behind.duration().as_secs() as i64),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn iam_token_is_issued_used_and_expires() {
        let sim = sim(SimConfig {
            iam_token_lifetime: Duration::from_secs(3600),
            ..SimConfig::default()
        });
        let reply = issue(&sim).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
        let token = reply.headers["x-subject-token"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(token.len() > 100);
        let body = reply.json();
        let t = &body["token"];
        assert_micros_z(t["expires_at"].as_str().unwrap());
        assert_micros_z(t["issued_at"].as_str().unwrap());
        let ahead = seconds_from_now(t["expires_at"].as_str().unwrap());
        assert!((3590..=3600).contains(&ahead), "{ahead}");
        assert_eq!(t["methods"], json!(["password"]));
        assert_eq!(t["project"]["id"], DEFAULT_PROJECT_ID);
        assert_eq!(t["project"]["name"], "cn-north-4");
        assert_eq!(t["project"]["domain"]["name"], "acme");
        assert_eq!(t["project"]["domain"]["id"], SIM_DOMAIN_ID);
        assert_eq!(t["user"]["name"], "alice");
        assert_eq!(t["user"]["domain"]["name"], "acme");
        assert!(t.get("catalog").is_none(), "nocatalog leaves it out");
        assert!(!reply.text().contains("s3cret"));

        // Accepted by the listing and the project lookup.
        let ok = send(&sim, with_token(&listing_query(), &token)).await;
        assert_eq!(ok.status, StatusCode::OK);
        let ok = send(&sim, with_token("/v3/projects?name=cn-north-4", &token)).await;
        assert_eq!(ok.status, StatusCode::OK);
        assert_eq!(ok.json()["projects"][0]["id"], DEFAULT_PROJECT_ID);

        tokio::time::advance(Duration::from_secs(3599)).await;
        let ok = send(&sim, with_token(&listing_query(), &token)).await;
        assert_eq!(ok.status, StatusCode::OK);
        // A refresh gives another token.
        let second = issue(&sim).await;
        let second = second.headers["x-subject-token"]
            .to_str()
            .unwrap()
            .to_string();
        assert_ne!(second, token);

        tokio::time::advance(Duration::from_secs(1)).await;
        for path in [listing_query(), "/v3/projects".to_string()] {
            let expired = send(&sim, with_token(&path, &token)).await;
            assert_eq!(expired.status, StatusCode::UNAUTHORIZED, "{path}");
            assert_eq!(expired.json()["error_code"], "APIG.0301");
            assert_eq!(expired.json()["error_msg"], MSG_TOKEN_EXPIRED);
        }
        // The refreshed token and the static token still work.
        let ok = send(&sim, with_token(&listing_query(), &second)).await;
        assert_eq!(ok.status, StatusCode::OK);
        tokio::time::advance(Duration::from_secs(365 * 86_400)).await;
        let ok = send(&sim, with_token(&listing_query(), "static")).await;
        assert_eq!(ok.status, StatusCode::OK);

        let stats = sim.stats();
        assert_eq!(stats.iam_tokens_issued, 2);
        assert_eq!(stats.project_lookups, 1);
        // Listing calls (refused ones included) are still the only `calls`.
        assert_eq!(stats.calls.len(), 5);

        // Revoked tokens are unknown.
        sim.revoke_iam_tokens();
        let gone = send(&sim, with_token(&listing_query(), &second)).await;
        assert_eq!(gone.status, StatusCode::UNAUTHORIZED);
        assert_eq!(gone.json()["error_msg"], MSG_TOKEN_BAD);
    }

    #[tokio::test]
    async fn wrong_passwords_projects_and_bodies_are_refused() {
        let sim = sim(SimConfig::default());
        let wrong = json!({"error": {"code": 401,
            "message": "The username or password is wrong.", "title": "Unauthorized"}});
        for (domain, user, password) in [
            ("acme", "alice", "wrong"),
            ("acme", "bob", "s3cret:/pw"),
            ("other", "alice", "s3cret:/pw"),
            ("acme", "alice", ""),
        ] {
            let body = token_body(domain, user, password, json!({"name": "cn-north-4"}));
            let reply = send(&sim, post_tokens("", body)).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{domain}/{user}");
            assert_eq!(reply.json(), wrong);
            assert!(reply.headers.get("x-subject-token").is_none());
        }
        let body = token_body(
            "acme",
            "alice",
            "s3cret:/pw",
            json!({"name": "eu-west-101"}),
        );
        let reply = send(&sim, post_tokens("", body)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.json()["error"]["code"], 400);
        assert_eq!(reply.json()["error"]["title"], "Bad Request");
        for malformed in [
            "not json".to_string(),
            "{}".to_string(),
            json!({"auth": {"identity": {"methods": ["token"]}}}).to_string(),
            json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
                "name": "alice", "password": "s3cret:/pw", "domain": {"name": "acme"}}}}}})
            .to_string(),
        ] {
            let reply = send(&sim, post_tokens("", malformed.clone())).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{malformed}");
            assert_eq!(reply.json()["error"]["code"], 400, "{malformed}");
        }
        // Scope by id; without nocatalog the catalog is there.
        let body = token_body(
            "acme",
            "alice",
            "s3cret:/pw",
            json!({"id": DEFAULT_PROJECT_ID}),
        );
        let reply = send(&sim, post_tokens("", body)).await;
        assert_eq!(reply.status, StatusCode::CREATED);
        assert_eq!(reply.json()["token"]["project"]["name"], "cn-north-4");
        assert!(reply.json()["token"]["catalog"].is_array());
        // Other methods on the path get the gateway's 404.
        let get = Request::get(TOKENS_PATH).body(Body::empty()).unwrap();
        let reply = send(&sim, get).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert_eq!(reply.json()["error_code"], "APIG.0101");
        assert_eq!(sim.stats().iam_tokens_issued, 1);
    }

    #[tokio::test]
    async fn projects_are_looked_up_by_name() {
        let sim = sim(SimConfig {
            projects: vec![
                SimProject::new("aaaa", "cn-north-4"),
                SimProject::new("bbbb", "cn-north-4"),
                SimProject::new("cccc", "ap-southeast-1"),
            ],
            ..SimConfig::default()
        });
        let lookup = |name: Option<&'static str>| {
            let query: Vec<(&str, &str)> = name.map(|n| ("name", n)).into_iter().collect();
            signed(
                PROJECTS_PATH,
                &query,
                super::super::DEFAULT_ACCESS_KEY,
                super::super::DEFAULT_SECRET_KEY,
                Sts::None,
                "",
            )
        };
        let ids = |reply: &Reply| -> Vec<String> {
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
            reply.json()["projects"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["id"].as_str().unwrap().to_string())
                .collect()
        };
        let two = send(&sim, lookup(Some("cn-north-4"))).await;
        assert_eq!(ids(&two), vec!["aaaa", "bbbb"]);
        let project = &two.json()["projects"][0];
        assert_eq!(project["name"], "cn-north-4");
        assert_eq!(project["domain_id"], SIM_DOMAIN_ID);
        assert_eq!(project["enabled"], true);
        assert!(two.json()["links"]["self"].is_string());
        let one = send(&sim, lookup(Some("ap-southeast-1"))).await;
        assert_eq!(ids(&one), vec!["cccc"]);
        let none = send(&sim, lookup(Some("eu-west-101"))).await;
        assert!(ids(&none).is_empty());
        let all = send(&sim, lookup(None)).await;
        assert_eq!(ids(&all).len(), 3);

        // Refused without credentials or with a bad signature.
        let bare = Request::get(PROJECTS_PATH).body(Body::empty()).unwrap();
        let reply = send(&sim, bare).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.json()["error_code"], "APIG.0301");
        let bad = signed(PROJECTS_PATH, &[], "SIMULATORAK", "wrong", Sts::None, "");
        let reply = send(&sim, bad).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.json()["error_msg"], MSG_SIGNATURE);

        sim.set_projects(Vec::new());
        let empty = send(&sim, lookup(Some("cn-north-4"))).await;
        assert!(ids(&empty).is_empty());
        let stats = sim.stats();
        assert_eq!(stats.project_lookups, 5);
        assert!(stats.calls.is_empty());
    }

    fn put_session(ttl: Option<&str>) -> Request {
        let mut builder = Request::put(METADATA_TOKEN_PATH);
        if let Some(ttl) = ttl {
            builder = builder.header("X-Metadata-Token-Ttl-Seconds", ttl);
        }
        builder.body(Body::empty()).unwrap()
    }

    fn get_key(session: Option<&str>) -> Request {
        let mut builder = Request::get(SECURITY_KEY_PATH);
        if let Some(session) = session {
            builder = builder.header("X-Metadata-Token", session);
        }
        builder.body(Body::empty()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn metadata_wants_a_session_token() {
        let sim = sim(SimConfig {
            metadata_credential_lifetime: Duration::from_secs(900),
            ..SimConfig::default()
        });
        for ttl in [None, Some("0"), Some("21601"), Some("soon")] {
            let reply = send(&sim, put_session(ttl)).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{ttl:?}");
        }
        let reply = send(&sim, put_session(Some("60"))).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.headers[header::CONTENT_TYPE], "text/plain");
        let session = reply.text();
        assert!(session.len() >= 32);

        for header in [None, Some("not-a-session")] {
            let reply = send(&sim, get_key(header)).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{header:?}");
            assert!(
                !reply
                    .text()
                    .contains("Please configure Cloud Service Agency first")
            );
        }
        let first = send(&sim, get_key(Some(&session))).await;
        assert_eq!(first.status, StatusCode::OK, "{}", first.text());
        let first = first.json()["credential"].clone();
        for field in ["access", "secret", "securitytoken"] {
            assert!(first[field].as_str().unwrap().len() >= 20, "{field}");
        }
        let expires_at = first["expires_at"].as_str().unwrap();
        assert_micros_z(expires_at);
        assert!((890..=900).contains(&seconds_from_now(expires_at)));
        let second = send(&sim, get_key(Some(&session))).await.json()["credential"].clone();
        for field in ["access", "secret", "securitytoken"] {
            assert_ne!(first[field], second[field], "{field}");
        }
        // The session token expires after its TTL.
        tokio::time::advance(Duration::from_secs(60)).await;
        let reply = send(&sim, get_key(Some(&session))).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        let stats = sim.stats();
        assert_eq!(stats.metadata_session_tokens_issued, 1);
        assert_eq!(stats.metadata_credentials_issued, 2);
    }

    #[tokio::test]
    async fn metadata_without_session_tokens() {
        let sim = sim(SimConfig {
            metadata_requires_session_token: false,
            ..SimConfig::default()
        });
        let reply = send(&sim, put_session(Some("21600"))).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        let reply = send(&sim, get_key(None)).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.json()["credential"]["access"].is_string());
        // Switched on at run time, the header is needed again.
        sim.set_metadata_requires_session_token(true);
        assert_eq!(
            send(&sim, get_key(None)).await.status,
            StatusCode::UNAUTHORIZED
        );
        let stats = sim.stats();
        assert_eq!(stats.metadata_credentials_issued, 1);
        assert_eq!(stats.metadata_session_tokens_issued, 0);
        // The control endpoint shows the same counts.
        let stats = send(
            &sim,
            Request::get("/_sim/stats").body(Body::empty()).unwrap(),
        )
        .await;
        let stats = stats.json();
        assert_eq!(stats["metadata_credentials_issued"], 1);
        assert_eq!(stats["metadata_session_tokens_issued"], 0);
        assert_eq!(stats["iam_tokens_issued"], 0);
        assert_eq!(stats["project_lookups"], 0);
    }

    #[tokio::test(start_paused = true)]
    async fn temporary_keys_need_their_signed_security_token() {
        let sim = sim(SimConfig {
            metadata_credential_lifetime: Duration::from_secs(900),
            metadata_requires_session_token: false,
            ..SimConfig::default()
        });
        let credential = send(&sim, get_key(None)).await.json()["credential"].clone();
        let ak = credential["access"].as_str().unwrap();
        let sk = credential["secret"].as_str().unwrap();
        let sts = credential["securitytoken"].as_str().unwrap();
        let list = [("image_type", "private_image")];

        let ok = send(&sim, signed(LISTING, &list, ak, sk, Sts::Signed, sts)).await;
        assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
        let ok = send(
            &sim,
            signed(
                PROJECTS_PATH,
                &[("name", "cn-north-4")],
                ak,
                sk,
                Sts::Signed,
                sts,
            ),
        )
        .await;
        assert_eq!(ok.status, StatusCode::OK);
        assert_eq!(ok.json()["projects"][0]["id"], DEFAULT_PROJECT_ID);

        for (how, token) in [
            (Sts::None, sts),
            (Sts::SentUnsigned, sts),
            (Sts::Signed, "another-token"),
        ] {
            let reply = send(&sim, signed(LISTING, &list, ak, sk, how, token)).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
            assert_eq!(reply.json()["error_code"], "APIG.0301");
            assert_eq!(reply.json()["error_msg"], MSG_SIGNATURE);
        }
        let reply = send(&sim, signed(LISTING, &list, ak, "wrong", Sts::Signed, sts)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

        tokio::time::advance(Duration::from_secs(899)).await;
        let ok = send(&sim, signed(LISTING, &list, ak, sk, Sts::Signed, sts)).await;
        assert_eq!(ok.status, StatusCode::OK);
        tokio::time::advance(Duration::from_secs(1)).await;
        for path in [LISTING, PROJECTS_PATH] {
            let reply = send(&sim, signed(path, &list, ak, sk, Sts::Signed, sts)).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{path}");
            assert_eq!(reply.json()["error_code"], "APIG.0301");
            assert_eq!(reply.json()["error_msg"], MSG_SECURITY_TOKEN_EXPIRED);
        }
        // A fresh key works again.
        let fresh = send(&sim, get_key(None)).await.json()["credential"].clone();
        let ok = send(
            &sim,
            signed(
                LISTING,
                &list,
                fresh["access"].as_str().unwrap(),
                fresh["secret"].as_str().unwrap(),
                Sts::Signed,
                fresh["securitytoken"].as_str().unwrap(),
            ),
        )
        .await;
        assert_eq!(ok.status, StatusCode::OK);
        assert_eq!(sim.stats().metadata_credentials_issued, 2);
    }

    #[test]
    fn iam_users_parse_and_hide_their_password() {
        let user: IamUser = "acme/alice:pa:ss/w".parse().unwrap();
        assert_eq!(user, IamUser::new("acme", "alice", "pa:ss/w"));
        assert_eq!(user.label(), "acme/alice");
        let bare: IamUser = "acme/bob".parse().unwrap();
        assert_eq!(bare.password, "");
        for bad in ["alice:pw", "/alice:pw", "acme/:pw", ""] {
            let err = bad.parse::<IamUser>().unwrap_err().to_string();
            assert!(!err.contains("pw"), "{err}");
        }
        let debug = format!("{user:?}");
        assert!(
            debug.contains("alice") && !debug.contains("pa:ss"),
            "{debug}"
        );
    }
}
