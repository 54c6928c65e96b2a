//! A built-in simulator of the HSS image listing APIs: the deprecated "list
//! SWR image repository images" (`GET /v5/{project_id}/image/swr-repository`)
//! and its successor "list registry images" (`GET
//! /v5/{project_id}/image/registries/images`), over one synthetic data set.
//!
//! Place in the project: the simulator stands in for the HSS API; it is used
//! by tests, benchmarks and the demo; the exporter's own code never depends
//! on it. It is faithful to what the real API gateway and service do
//! (DESIGN.md sections 1-2, reference/hss-api.md sections 1, 5 and 6): AK/SK
//! signature and token checks with the documented lockout, the per-user and
//! per-IP sliding-window quota answered with `APIGW.0308` and HTTP 429, the
//! documented error bodies, paging limits and filters. Both listings share
//! all of that; what differs between them is [`Api`] alone.
//!
//! - this file: configuration ([`SimConfig`]), the two listings ([`Api`]),
//!   call statistics ([`Stats`], [`Call`]) and the `simulate` subcommand
//!   ([`SimulateArgs`], [`run`]);
//! - [`churn`]: how the rows change over time ([`Churn`], [`ChurnEvent`])
//!   and the server's clock ([`ServerClock`], [`SimConfig::clock_offset_ms`]);
//! - [`data`]: the synthetic image rows ([`SimImage`], [`generate`]) and their
//!   wire form;
//! - [`server`]: the HTTP side ([`Simulator`]): routes, checks in the
//!   gateway's order, the quota ([`Quota`], [`max_calls_in_window`]),
//!   faults ([`Faults`], [`Scripted`]), listings and the rows' changes;
//! - [`iam`]: the IAM side ([`IamUser`], [`SimProject`]): password tokens
//!   (`POST /v3/auth/tokens`), project lookup (`GET /v3/projects`) and the
//!   ECS/CCE metadata service's temporary keys
//!   (`/openstack/latest/securitykey`);
//! - `auth`: signature and token verification;
//! - `gateway`: what the listings and the IAM side share (the JSON content
//!   type, query reading, the lockout's limits).

mod auth;
pub mod churn;
pub mod data;
mod gateway;
pub mod iam;
pub mod server;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use auth::{MSG_SECURITY_TOKEN_EXPIRED, MSG_TOKEN_EXPIRED};
pub use churn::{
    CHURN_LOG_CAPACITY, Churn, ChurnEvent, ChurnKind, ChurnMix, ChurnSetting, ClockOffset,
    ServerClock,
};
pub use data::{EmptyDataList, SimImage, generate, severity_level};
pub use iam::{IamUser, SimProject};
pub use server::{
    DEFAULT_HANG, Faults, MaliciousImage, Quota, QuotaSetting, Scripted, Simulator,
    max_calls_in_window,
};

/// Access key accepted by default (never a real credential).
pub const DEFAULT_ACCESS_KEY: &str = "SIMULATORAK";

/// Secret key accepted by default, paired with [`DEFAULT_ACCESS_KEY`].
pub const DEFAULT_SECRET_KEY: &str = "SIMULATORSK";

/// Address `simulate` listens on unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9930";

/// The quota `simulate` enforces unless told otherwise: the documented HSS
/// limit of 5 calls per minute per user and per source IP for one API.
pub const DEFAULT_QUOTA: &str = "5/1m";
/// Lifetime of an issued IAM token unless told otherwise (the documented
/// 24 hours).
pub const DEFAULT_IAM_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Lifetime of a temporary key from the metadata service unless told
/// otherwise.
pub const DEFAULT_METADATA_CREDENTIAL_LIFETIME: Duration = Duration::from_secs(3600);

/// Id of the project the simulator knows unless told otherwise.
pub const DEFAULT_PROJECT_ID: &str = "0123456789abcdef0123456789abcdef";

/// Name (region) of the project the simulator knows unless told otherwise.
pub const DEFAULT_PROJECT_NAME: &str = "cn-north-4";

/// Environment variable with the password of `--iam-user` values that carry
/// none.
pub const IAM_PASSWORD_ENV: &str = "HSS_SWR_SIM_IAM_PASSWORD";

/// Errors of the simulator module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A quota specification such as `5/1m` could not be read.
    #[error("invalid quota {input:?}: {reason} (expected CALLS/WINDOW, e.g. 5/1m, or none)")]
    Quota {
        /// The text that was given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A fault probability outside 0..=1.
    #[error("invalid rate {input:?}: expected a probability between 0 and 1")]
    Rate {
        /// The text that was given.
        input: String,
    },
    /// A churn specification such as `30/1m` could not be read.
    #[error("invalid churn {input:?}: {reason} (expected CHANGES/PERIOD, e.g. 30/1m, or none)")]
    Churn {
        /// The text that was given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A clock offset such as `-90s` could not be read.
    #[error(
        "invalid clock offset {input:?}: {reason} (expected a signed duration such as -90s or 5m, or milliseconds)"
    )]
    ClockOffset {
        /// The text that was given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An `--iam-user` value that is not `DOMAIN/USER[:PASSWORD]`.
    #[error("invalid IAM user {input:?}: {reason} (expected DOMAIN/USER:PASSWORD or DOMAIN/USER)")]
    IamUser {
        /// The text that was given, without its password.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Everything that shapes a simulator: data, limits, credentials, faults.
#[derive(Clone)]
pub struct SimConfig {
    /// Seed of the deterministic data and fault random generators.
    pub seed: u64,
    /// Total synthetic image versions (all types, all enterprise projects).
    pub images: usize,
    /// Distinct namespaces the images are spread over.
    pub namespaces: usize,
    /// Call quota per credential and per peer IP, for each listing API
    /// separately; `None` = unlimited.
    pub quota: Option<Quota>,
    /// Delay added to every listing answer.
    pub latency: Duration,
    /// Accepted (access key, secret key) pairs.
    pub credentials: Vec<(String, String)>,
    /// Accepted static `X-Auth-Token` values (valid forever).
    pub tokens: Vec<String>,
    /// IAM users that may get a token from `POST /v3/auth/tokens`.
    pub iam_users: Vec<IamUser>,
    /// How long an issued IAM token is accepted ([`DEFAULT_IAM_TOKEN_LIFETIME`]).
    pub iam_token_lifetime: Duration,
    /// Projects of `GET /v3/projects` and of token scopes; names may repeat.
    pub projects: Vec<SimProject>,
    /// How long a temporary key from the metadata service is accepted
    /// ([`DEFAULT_METADATA_CREDENTIAL_LIFETIME`]).
    pub metadata_credential_lifetime: Duration,
    /// Whether the metadata service wants a session token (`PUT
    /// /meta-data/latest/api/token`) before it hands out keys; when not, that
    /// `PUT` answers 404.
    pub metadata_requires_session_token: bool,
    /// Random and configured faults.
    pub faults: Faults,
    /// "Now" for generated timestamps, epoch milliseconds; tests fix it so
    /// that the data does not depend on the clock.
    pub base_time_ms: i64,
    /// How far the server's clock is ahead of the wall clock, ms (behind
    /// when negative). Every change after the start (churn, rescans, pushes,
    /// malicious marks) is dated by this clock ([`ServerClock`]);
    /// `base_time_ms` is set apart (`simulate` puts it on this clock too).
    pub clock_offset_ms: i64,
    /// How long a changed row stays out of listings filtered by
    /// `start_latest_scan_time` or `start_latest_update_time`, as with a
    /// search index that lags: such a listing leaves out rows whose
    /// `latest_scan_time` or `latest_update_time` is less than this before
    /// the server's now. Unfiltered listings are never behind. Zero = none.
    pub index_lag: Duration,
    /// Changes over time, applied by a task of [`Simulator::serve`]; `None`
    /// = the data only changes when told to.
    pub churn: Option<Churn>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            images: 1000,
            namespaces: 10,
            quota: None,
            latency: Duration::ZERO,
            credentials: vec![(
                DEFAULT_ACCESS_KEY.to_string(),
                DEFAULT_SECRET_KEY.to_string(),
            )],
            tokens: Vec::new(),
            iam_users: Vec::new(),
            iam_token_lifetime: DEFAULT_IAM_TOKEN_LIFETIME,
            projects: vec![SimProject::default()],
            metadata_credential_lifetime: DEFAULT_METADATA_CREDENTIAL_LIFETIME,
            metadata_requires_session_token: true,
            faults: Faults::default(),
            base_time_ms: now_ms(),
            clock_offset_ms: 0,
            index_lag: Duration::ZERO,
            churn: None,
        }
    }
}

impl fmt::Debug for SimConfig {
    // Written by hand so that secret keys and tokens never reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let access_keys: Vec<&str> = self.credentials.iter().map(|(ak, _)| ak.as_str()).collect();
        f.debug_struct("SimConfig")
            .field("seed", &self.seed)
            .field("images", &self.images)
            .field("namespaces", &self.namespaces)
            .field("quota", &self.quota)
            .field("latency", &self.latency)
            .field("access_keys", &access_keys)
            .field("tokens", &format_args!("<{} redacted>", self.tokens.len()))
            .field("iam_users", &self.iam_users)
            .field("iam_token_lifetime", &self.iam_token_lifetime)
            .field("projects", &self.projects)
            .field(
                "metadata_credential_lifetime",
                &self.metadata_credential_lifetime,
            )
            .field(
                "metadata_requires_session_token",
                &self.metadata_requires_session_token,
            )
            .field("faults", &self.faults)
            .field("base_time_ms", &self.base_time_ms)
            .field("clock_offset_ms", &self.clock_offset_ms)
            .field("index_lag", &self.index_lag)
            .field("churn", &self.churn)
            .finish()
    }
}

/// The current wall-clock time in epoch milliseconds.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// [`Api::name`] of the old listing, `GET /v5/{project_id}/image/swr-repository`.
pub const API_SWR_REPOSITORY: &str = "swr-repository";

/// [`Api::name`] of the successor listing, `GET
/// /v5/{project_id}/image/registries/images`.
pub const API_REGISTRY_IMAGES: &str = "registry-images";

/// The two listing APIs. They share authentication, quota (with a budget
/// of its own per API), faults, paging, filters and data; this is all that
/// differs between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Api {
    /// `ListSwrImageRepository`, deprecated: SWR images only, `image_type`
    /// required, rows as `PrivateImageRepositoryInfo`.
    SwrRepository,
    /// `ListRegistryImages`: SWR, Harbor and JFrog images, `image_type`
    /// optional, `registry_name` and `severity_level` filters, rows as
    /// `RegistryImagesInfo`.
    RegistryImages,
}

impl Api {
    /// Both APIs.
    pub const ALL: [Api; 2] = [Api::SwrRepository, Api::RegistryImages];

    /// [`API_SWR_REPOSITORY`] or [`API_REGISTRY_IMAGES`], as in [`Call::api`].
    pub fn name(self) -> &'static str {
        match self {
            Api::SwrRepository => API_SWR_REPOSITORY,
            Api::RegistryImages => API_REGISTRY_IMAGES,
        }
    }

    /// The route (axum path syntax).
    pub fn route(self) -> &'static str {
        match self {
            Api::SwrRepository => server::LISTING_PATH,
            Api::RegistryImages => server::REGISTRY_IMAGES_PATH,
        }
    }

    /// The `image_type` values accepted; other values are refused (400
    /// `HSS.0001`).
    pub fn image_types(self) -> &'static [&'static str] {
        match self {
            Api::SwrRepository => &data::IMAGE_TYPES,
            Api::RegistryImages => &data::REGISTRY_IMAGE_TYPES,
        }
    }

    /// Whether a call without `image_type` is refused; when it is not, such
    /// a call lists every type of [`Api::image_types`].
    pub fn image_type_required(self) -> bool {
        self == Api::SwrRepository
    }

    /// Whether the API has the registry parts: the `registry_name`,
    /// `severity_level` and `start_/end_latest_sync_time` filters, and the
    /// `RegistryImagesInfo` fields in its rows.
    pub fn registry_fields(self) -> bool {
        self == Api::RegistryImages
    }
}

/// One listing request as the simulator received it.
#[derive(Clone, Debug)]
pub struct Call {
    /// Arrival time (tokio's clock, so paused-time tests see exact values).
    pub at: tokio::time::Instant,
    /// The HTTP status answered (200 for reset and malformed answers too).
    pub status: u16,
    /// The `offset` asked for (0 when absent or unreadable).
    pub offset: u64,
    /// The `limit` asked for (10 when absent, 0 when unreadable).
    pub limit: u64,
    /// The raw query string.
    pub query: String,
    /// Which listing was called: [`API_SWR_REPOSITORY`] or
    /// [`API_REGISTRY_IMAGES`] ([`Api::name`]).
    pub api: &'static str,
    /// The request path, e.g. `/v5/{project_id}/image/registries/images`
    /// with the project id filled in.
    pub path: String,
}

/// Every listing request received so far, refused ones included, in
/// arrival order; and counts of the credentials the IAM side handed out.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// The listing calls.
    pub calls: Vec<Call>,
    /// IAM tokens issued by `POST /v3/auth/tokens` (201 answers).
    pub iam_tokens_issued: u64,
    /// Session tokens issued by `PUT /meta-data/latest/api/token`.
    pub metadata_session_tokens_issued: u64,
    /// Temporary keys issued by `GET /openstack/latest/securitykey`.
    pub metadata_credentials_issued: u64,
    /// `GET /v3/projects` calls answered 200.
    pub project_lookups: u64,
    /// `GET /v3/auth/projects` calls answered 200.
    pub auth_project_lookups: u64,
    /// Failed authentications: AK/SK signatures and tokens refused by the
    /// gateway, passwords refused by IAM.
    pub auth_failures: u64,
    /// Times an access key or an IAM user was locked for 5 minutes after
    /// more than 5 failures in a row.
    pub lockouts: u64,
}

impl Stats {
    /// How many calls were answered with `status`.
    pub fn count_status(&self, status: u16) -> usize {
        self.calls.iter().filter(|c| c.status == status).count()
    }

    /// The calls to one listing API ([`Api::name`]), in arrival order; each
    /// API has a quota of its own, so check budgets with these.
    pub fn calls_to(&self, api: &str) -> Vec<Call> {
        self.calls
            .iter()
            .filter(|c| c.api == api)
            .cloned()
            .collect()
    }
}

fn parse_rate(text: &str) -> Result<f64, Error> {
    match text.trim().parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(Error::Rate {
            input: text.to_string(),
        }),
    }
}

/// Arguments of the `simulate` subcommand: serve a simulated HSS API.
#[derive(Clone, Debug, clap::Args)]
pub struct SimulateArgs {
    /// Address to listen on.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Total synthetic image versions.
    #[arg(long, default_value_t = 1000)]
    pub images: usize,
    /// Distinct namespaces.
    #[arg(long, default_value_t = 10)]
    pub namespaces: usize,
    /// Seed of the synthetic data and of the random faults.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Delay added to every listing answer (e.g. 200ms).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub latency: Duration,
    /// Call quota per user and per source IP, for each listing API
    /// separately, e.g. 5/1m (the documented HSS limit), 50/1s, or none.
    #[arg(long, default_value = DEFAULT_QUOTA)]
    pub quota: QuotaSetting,
    /// Probability of a 500 answer.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub fail_rate: f64,
    /// Probability of a 429 answer besides the quota.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub throttle_rate: f64,
    /// Probability of a connection broken mid-answer.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub reset_rate: f64,
    /// Probability of a truncated JSON body.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub malformed_rate: f64,
    /// `Retry-After` seconds sent with 429 answers.
    #[arg(long)]
    pub retry_after: Option<u64>,
    /// Accepted access key.
    #[arg(long, env = "HSS_SWR_SIM_ACCESS_KEY", default_value = DEFAULT_ACCESS_KEY)]
    pub access_key: String,
    /// Accepted secret key.
    #[arg(
        long,
        env = "HSS_SWR_SIM_SECRET_KEY",
        default_value = DEFAULT_SECRET_KEY,
        hide_env_values = true,
        hide_default_value = true
    )]
    pub secret_key: String,
    /// Accepted static X-Auth-Token value (repeatable).
    #[arg(long = "token")]
    pub tokens: Vec<String>,
    /// The IAM side: users, token and temporary key lifetimes (boxed so
    /// that the `simulate` subcommand stays small).
    #[command(flatten)]
    pub iam: Box<SimulateIamArgs>,
    /// Changes over time and the server's clock (boxed for the same
    /// reason).
    #[command(flatten)]
    pub churn: Box<SimulateChurnArgs>,
}

/// Arguments of the `simulate` subcommand for changes over time: churn,
/// the server's clock and a lagging index.
#[derive(Clone, Debug, clap::Args)]
pub struct SimulateChurnArgs {
    /// How the data changes: image changes (rescans, pushes, scans of
    /// pushed images, deletes) per period, e.g. 30/1m or 5/1s, applied one
    /// namespace at a time; or none.
    #[arg(long = "churn", default_value = "none", value_name = "CHANGES/PERIOD")]
    pub rate: ChurnSetting,
    /// How often a batch of --churn changes is applied (default: a tenth of
    /// the period).
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub churn_tick: Option<Duration>,
    /// Probability that a --churn scan finds malicious files in an image
    /// that had none.
    #[arg(long, default_value_t = 0.02, value_parser = parse_rate)]
    pub churn_malicious_rate: f64,
    /// How far the server's clock is ahead of this machine's (behind when
    /// negative): a signed duration such as -90s or 5m, or milliseconds.
    #[arg(
        long,
        default_value = "0",
        allow_hyphen_values = true,
        value_name = "OFFSET"
    )]
    pub clock_offset: ClockOffset,
    /// How long a changed image stays out of listings filtered by
    /// start_latest_scan_time or start_latest_update_time (a lagging
    /// search index), e.g. 30s.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub index_lag: Duration,
}

impl SimulateChurnArgs {
    /// The churn these arguments describe, if any.
    pub fn churn(&self) -> Option<Churn> {
        self.rate.0.map(|churn| Churn {
            tick: self
                .churn_tick
                .filter(|t| !t.is_zero())
                .unwrap_or(churn.tick),
            malicious_rate: self.churn_malicious_rate,
            ..churn
        })
    }
}

/// Arguments of the `simulate` subcommand for the IAM side: password token
/// users, lifetimes, and the metadata service's session token.
#[derive(Clone, Debug, clap::Args)]
pub struct SimulateIamArgs {
    /// IAM user that may get tokens from `POST /v3/auth/tokens`, as
    /// DOMAIN/USER:PASSWORD, or DOMAIN/USER with the password in
    /// HSS_SWR_SIM_IAM_PASSWORD (repeatable).
    #[arg(long = "iam-user", value_name = "DOMAIN/USER[:PASSWORD]")]
    pub iam_users: Vec<IamUser>,
    /// Password of the `--iam-user` values that carry none.
    #[arg(long, env = IAM_PASSWORD_ENV, hide_env_values = true)]
    pub iam_password: Option<IamPassword>,
    /// How long an issued IAM token is accepted (e.g. 24h, 90s).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub iam_token_lifetime: Duration,
    /// How long a temporary key from the metadata service is accepted.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub metadata_credential_lifetime: Duration,
    /// The metadata service hands out keys without a session token (its
    /// `PUT /meta-data/latest/api/token` answers 404).
    #[arg(long)]
    pub metadata_without_session_token: bool,
}

impl SimulateIamArgs {
    /// The `--iam-user` values, those without a password given
    /// `--iam-password` (or [`IAM_PASSWORD_ENV`]); one left without any
    /// keeps an empty password, which is never accepted.
    pub fn users(&self) -> Vec<IamUser> {
        self.iam_users
            .iter()
            .map(|user| {
                let mut user = user.clone();
                if user.password.is_empty()
                    && let Some(IamPassword(password)) = &self.iam_password
                {
                    user.password.clone_from(password);
                }
                user
            })
            .collect()
    }
}

/// A password given on the command line or in the environment; `Debug`
/// leaves it out.
#[derive(Clone, PartialEq, Eq)]
pub struct IamPassword(pub String);

impl FromStr for IamPassword {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(IamPassword(s.to_string()))
    }
}

impl fmt::Debug for IamPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IamPassword(<redacted>)")
    }
}

impl SimulateArgs {
    /// The simulator configuration these arguments describe.
    pub fn config(&self) -> SimConfig {
        SimConfig {
            seed: self.seed,
            images: self.images,
            namespaces: self.namespaces,
            quota: self.quota.0,
            latency: self.latency,
            credentials: vec![(self.access_key.clone(), self.secret_key.clone())],
            tokens: self.tokens.clone(),
            iam_users: self.iam.users(),
            iam_token_lifetime: self.iam.iam_token_lifetime,
            projects: vec![SimProject::default()],
            metadata_credential_lifetime: self.iam.metadata_credential_lifetime,
            metadata_requires_session_token: !self.iam.metadata_without_session_token,
            faults: Faults {
                fail_rate: self.fail_rate,
                throttle_rate: self.throttle_rate,
                reset_rate: self.reset_rate,
                malformed_rate: self.malformed_rate,
                retry_after: self.retry_after,
                ..Faults::default()
            },
            // The data is as old as the server's clock says.
            base_time_ms: now_ms().saturating_add(self.churn.clock_offset.0),
            clock_offset_ms: self.churn.clock_offset.0,
            index_lag: self.churn.index_lag,
            churn: self.churn.churn(),
        }
    }
}

/// Runs the `simulate` subcommand: binds `args.listen`, logs the address,
/// the accepted access keys and IAM user names (never a secret), and serves
/// until `shutdown`. An `--iam-user` left without a password is refused.
pub async fn run(
    args: SimulateArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let config = args.config();
    if let Some(user) = config.iam_users.iter().find(|u| u.password.is_empty()) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "--iam-user {} has no password: write DOMAIN/USER:PASSWORD or set {IAM_PASSWORD_ENV}",
                user.label()
            ),
        ));
    }
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let address = listener.local_addr()?;
    let access_keys: Vec<&str> = config
        .credentials
        .iter()
        .map(|(ak, _)| ak.as_str())
        .collect();
    let quota = QuotaSetting(config.quota).to_string();
    let iam_users: Vec<String> = config.iam_users.iter().map(IamUser::label).collect();
    let iam_token_lifetime = humantime::format_duration(config.iam_token_lifetime).to_string();
    let metadata_credential_lifetime =
        humantime::format_duration(config.metadata_credential_lifetime).to_string();
    let churn = ChurnSetting(config.churn).to_string();
    let churn_tick = config
        .churn
        .map(|c| humantime::format_duration(c.tick).to_string())
        .unwrap_or_default();
    let clock_offset = ClockOffset(config.clock_offset_ms).to_string();
    let index_lag = humantime::format_duration(config.index_lag).to_string();
    tracing::info!(
        %address,
        ?access_keys,
        tokens = config.tokens.len(),
        ?iam_users,
        %iam_token_lifetime,
        %metadata_credential_lifetime,
        metadata_session_token = config.metadata_requires_session_token,
        images = config.images,
        namespaces = config.namespaces,
        seed = config.seed,
        %quota,
        %churn,
        %churn_tick,
        %clock_offset,
        %index_lag,
        "HSS simulator listening"
    );
    Simulator::new(config).serve(listener, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[tokio::test]
    async fn run_serves_until_shutdown() {
        let cli = Cli::try_parse_from(["x", "--listen", "127.0.0.1:0", "--images", "5"]).unwrap();
        run(cli.args, async {}).await.unwrap();
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: SimulateArgs,
    }

    #[test]
    fn simulate_args_build_a_config() {
        let cli = Cli::try_parse_from([
            "x",
            "--images",
            "50",
            "--quota",
            "none",
            "--fail-rate",
            "0.25",
            "--token",
            "t1",
            "--token",
            "t2",
            "--latency",
            "150ms",
        ])
        .unwrap();
        let config = cli.args.config();
        assert_eq!(config.images, 50);
        assert_eq!(config.quota, None);
        assert_eq!(config.faults.fail_rate, 0.25);
        assert_eq!(config.tokens, vec!["t1", "t2"]);
        assert_eq!(config.latency, Duration::from_millis(150));
        assert_eq!(
            config.credentials,
            vec![(
                DEFAULT_ACCESS_KEY.to_string(),
                DEFAULT_SECRET_KEY.to_string()
            )]
        );
        let defaults = Cli::try_parse_from(["x"]).unwrap().args;
        assert_eq!(defaults.config().quota, Some(Quota::DOCUMENTED));
        assert_eq!(defaults.listen.to_string(), DEFAULT_LISTEN);
        assert!(Cli::try_parse_from(["x", "--fail-rate", "1.5"]).is_err());
        assert!(Cli::try_parse_from(["x", "--quota", "5/"]).is_err());
        // Secrets never reach Debug output.
        let debug = format!("{config:?}");
        assert!(!debug.contains(DEFAULT_SECRET_KEY) && !debug.contains("t1"));
    }

    #[test]
    fn simulate_args_read_iam_users_and_lifetimes() {
        let cli = Cli::try_parse_from([
            "x",
            "--iam-user",
            "acme/alice:pa:ss",
            "--iam-user",
            "acme/bob",
            "--iam-password",
            "from-env",
            "--iam-token-lifetime",
            "90s",
            "--metadata-credential-lifetime",
            "20m",
            "--metadata-without-session-token",
        ])
        .unwrap();
        let config = cli.args.config();
        assert_eq!(
            config.iam_users,
            vec![
                IamUser::new("acme", "alice", "pa:ss"),
                IamUser::new("acme", "bob", "from-env"),
            ]
        );
        assert_eq!(config.iam_token_lifetime, Duration::from_secs(90));
        assert_eq!(
            config.metadata_credential_lifetime,
            Duration::from_secs(1200)
        );
        assert!(!config.metadata_requires_session_token);
        assert_eq!(config.projects, vec![SimProject::default()]);
        for debug in [format!("{config:?}"), format!("{:?}", cli.args)] {
            assert!(debug.contains("alice"), "{debug}");
            assert!(
                !debug.contains("pa:ss") && !debug.contains("from-env"),
                "{debug}"
            );
        }
        let defaults = SimConfig::default();
        assert_eq!(defaults.iam_token_lifetime, DEFAULT_IAM_TOKEN_LIFETIME);
        assert_eq!(
            defaults.metadata_credential_lifetime,
            DEFAULT_METADATA_CREDENTIAL_LIFETIME
        );
        assert!(defaults.metadata_requires_session_token);
        assert_eq!(defaults.projects[0].id, DEFAULT_PROJECT_ID);
        assert_eq!(defaults.projects[0].name, "cn-north-4");
        assert!(Cli::try_parse_from(["x", "--iam-user", "alice"]).is_err());
    }

    #[test]
    fn simulate_args_read_churn_clock_offset_and_index_lag() {
        let cli = Cli::try_parse_from([
            "x",
            "--churn",
            "30/1m",
            "--churn-tick",
            "2s",
            "--churn-malicious-rate",
            "0.5",
            "--clock-offset",
            "-90s",
            "--index-lag",
            "30s",
        ])
        .unwrap();
        let config = cli.args.config();
        let churn = config.churn.unwrap();
        assert_eq!((churn.events, churn.every), (30, Duration::from_secs(60)));
        assert_eq!(churn.tick, Duration::from_secs(2));
        assert_eq!(churn.malicious_rate, 0.5);
        assert_eq!(churn.mix, ChurnMix::default());
        assert_eq!(config.clock_offset_ms, -90_000);
        // The generated data is dated by the server's clock too.
        assert!(config.base_time_ms <= now_ms() - 90_000);
        assert!(config.base_time_ms > now_ms() - 100_000);
        assert_eq!(config.index_lag, Duration::from_secs(30));
        let cli = Cli::try_parse_from(["x", "--churn=5/1s", "--clock-offset=1500"]).unwrap();
        let config = cli.args.config();
        assert_eq!(config.churn.unwrap().tick, Duration::from_millis(100));
        assert_eq!(config.clock_offset_ms, 1500);
        let defaults = Cli::try_parse_from(["x"]).unwrap().args.config();
        assert_eq!(defaults.churn, None);
        assert_eq!(
            (defaults.clock_offset_ms, defaults.index_lag),
            (0, Duration::ZERO)
        );
        for bad in [
            ["x", "--churn", "30"],
            ["x", "--clock-offset", "soon"],
            ["x", "--churn-malicious-rate", "2"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn run_refuses_an_iam_user_without_password() {
        let mut args = Cli::try_parse_from(["x", "--listen", "127.0.0.1:0", "--images", "5"])
            .unwrap()
            .args;
        args.iam.iam_users = vec![IamUser::new("acme", "alice", "")];
        args.iam.iam_password = None;
        let err = run(args, async {}).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("acme/alice"));
    }
}
