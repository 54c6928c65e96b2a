//! Configuration: the validated model every later module sees, its defaults,
//! and the one way in ([`Config::load`], [`Config::parse`]).
//!
//! Place in the data flow: first. The file is parsed as YAML (`schema.rs`),
//! the `${VAR}` references in its string values are expanded (`env.rs`), the
//! result is read into the loose [`RawConfig`] (`schema.rs`: every key
//! optional, unknown keys refused), and `validate.rs` turns that into the
//! typed [`Config`]. Every error names the key (`targets[1].image_types[0]`)
//! and the reason, on one line, and never shows a secret. The settings the
//! HSS client is built from ([`Secret`], [`RateLimit`], [`ImageType`],
//! [`ListingApi`], [`CredentialsConfig`]) are `hss`'s own types, re-exported
//! here: `hss` never reads this module.

mod env;
mod schema;
mod validate;

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;

pub use crate::hss::settings::{CredentialsConfig, ImageType, ListingApi, RateLimit, Secret};
pub use schema::RawConfig;

/// Default address of the HTTP server (the port claimed for this exporter).
pub const DEFAULT_LISTEN_ADDRESS: &str = ":9929";
/// Default path of the metrics endpoint.
pub const DEFAULT_TELEMETRY_PATH: &str = "/metrics";
/// Calls per window the API allows one user and one source IP (5 a minute).
pub const DEFAULT_API_RATE_LIMIT: RateLimit = RateLimit {
    calls: 5,
    window: Duration::from_secs(60),
};
/// How often the malicious lane of each scope runs.
pub const DEFAULT_MALICIOUS_INTERVAL: Duration = Duration::from_secs(60);
/// How often each scope starts a full sweep.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(300);
/// Default `changes_interval`.
pub const DEFAULT_CHANGES_INTERVAL: Duration = Duration::from_secs(60);
/// Default `changes_overlap`.
pub const DEFAULT_CHANGES_OVERLAP: Duration = Duration::from_secs(300);
/// Time limit of one API call, body included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Rows per page: the API's maximum, so a sweep needs the fewest calls.
pub const DEFAULT_PAGE_SIZE: u32 = 200;
/// The largest page size the API accepts.
pub const MAX_PAGE_SIZE: u32 = 200;
/// Calls in flight per target when the budget has tokens to spare.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// Retries of one call after transport errors, timeouts, 429 and 5xx.
pub const DEFAULT_MAX_RETRIES: u32 = 4;
/// How long the last good result of a scope is served after its lane fails.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(3600);
/// Cap on per-image series when `image_metrics` is on.
pub const DEFAULT_MAX_IMAGE_SERIES: usize = 10_000;
/// Cap on the namespaces one scope publishes.
pub const DEFAULT_MAX_NAMESPACES: usize = 20_000;
/// The largest `max_namespaces` accepted.
pub const MAX_MAX_NAMESPACES: usize = 1_000_000;
/// Cap on one response body: a 200-row page is about 200 KiB, so 16 MiB only
/// stops a broken or hostile answer.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// The enterprise-project value that means every project the caller may see.
pub const ALL_GRANTED_EPS: &str = "all_granted_eps";

/// A configuration error: the key it concerns and the reason, on one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid YAML.
    #[error("config file {path} is not valid YAML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A key has a wrong type, is unknown, or its value is refused.
    #[error("{key}: {reason}")]
    Invalid {
        /// The key path, e.g. `targets[0].page_size`.
        key: String,
        /// Why it was refused.
        reason: String,
    },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// One configured account and region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The `target` label value; defaults to the region.
    pub name: String,
    /// The region, e.g. `cn-north-4`.
    pub region: String,
    /// The project the listing runs in; looked up through IAM (once) when
    /// not configured.
    pub project_id: Option<String>,
    /// Base URL of the HSS API.
    pub endpoint: Url,
    /// Base URL of IAM (used by IAM credentials).
    pub iam_endpoint: Url,
    /// Enterprise projects to list, each a scope.
    pub enterprise_project_ids: Vec<String>,
    /// Image types to list, each a scope.
    pub image_types: Vec<ImageType>,
    /// Ask only for the latest version of each image.
    pub latest_version_only: bool,
    /// Which listing API to poll.
    pub api: ListingApi,
    /// How to authenticate.
    pub credentials: CredentialsConfig,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The shared request budget.
    pub api_rate_limit: RateLimit,
    /// Malicious-lane period; zero turns the lane off.
    pub malicious_interval: Duration,
    /// Sweep period of each scope.
    pub poll_interval: Duration,
    /// Changes-lane period; zero turns the lane off.
    pub changes_interval: Duration,
    /// How far the changes lane's time filters reach back before the newest
    /// server timestamp it has seen (clock skew and index lag).
    pub changes_overlap: Duration,
    /// Time limit of one call.
    pub request_timeout: Duration,
    /// Rows per page.
    pub page_size: u32,
    /// Calls in flight per target.
    pub concurrency: usize,
    /// Retries per call.
    pub max_retries: u32,
    /// How long a failing scope keeps serving its last good data.
    pub stale_after: Duration,
    /// Export per-image series.
    pub image_metrics: bool,
    /// Cap on per-image series.
    pub max_image_series: usize,
    /// Cap on the namespaces one scope publishes; the first ones in key
    /// order are kept.
    pub max_namespaces: usize,
    /// Where detections persist, if anywhere.
    pub state_file: Option<PathBuf>,
    /// Cap on one response body, in bytes.
    pub max_response_bytes: usize,
    /// The targets.
    pub targets: Vec<Target>,
}

impl Config {
    /// Reads, expands and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path, &|name| std::env::var(name).ok())
    }

    /// Parses `text` (named `origin` in messages) with `env` resolving
    /// `${VAR}` references.
    pub fn parse(
        text: &str,
        origin: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut value = schema::read_yaml(text, origin)?;
        if value.is_null() {
            return Err(ConfigError::invalid(
                "targets",
                "the file is empty; at least one target is required",
            ));
        }
        let mut expansions = Vec::new();
        env::expand_env(&mut value, &mut String::new(), env, &mut expansions)?;
        let base_dir = origin.parent().unwrap_or(Path::new("."));
        schema::deserialize(value)
            .and_then(|raw| raw.validate(base_dir))
            .map_err(|e| env::conceal_expansions(e, &expansions))
    }

    /// The number of scopes (target, enterprise project, image type).
    pub fn scope_count(&self) -> usize {
        self.targets
            .iter()
            .map(|t| t.enterprise_project_ids.len() * t.image_types.len())
            .sum()
    }
}

/// The default HSS endpoint of a region.
pub fn default_endpoint(region: &str) -> String {
    if region == "eu-west-101" {
        format!("https://hss.{region}.myhuaweicloud.eu")
    } else {
        format!("https://hss.{region}.myhuaweicloud.com")
    }
}

/// The global IAM endpoint, for regions the SDKs' table does not list.
pub const GLOBAL_IAM_ENDPOINT: &str = "https://iam.myhuaweicloud.com";

/// Region -> IAM endpoint, as the official SDKs map it. Copied from
/// huaweicloudsdkcore 3.1.219, `huaweicloudsdkcore/auth/endpoint.py`
/// (`__IAM_ENDPOINT_DICT`; the Go SDK's `core/auth/internal/iam_endpoint.go`
/// holds the same list without cn-north-12). eu-west-101 (Huawei Cloud Europe)
/// is not in that table; the SDKs' IAM region file lists
/// `https://iam.eu-west-101.myhuaweicloud.eu` for it and their README tells
/// users of that site to set it, so it is added here.
const IAM_ENDPOINTS: &[(&str, &str)] = &[
    ("cn-north-2", "https://iam.cn-north-2.myhuaweicloud.com"),
    ("cn-north-4", "https://iam.cn-north-4.myhuaweicloud.com"),
    ("cn-north-1", "https://iam.cn-north-1.myhuaweicloud.com"),
    ("cn-east-2", "https://iam.cn-east-2.myhuaweicloud.com"),
    ("cn-east-3", "https://iam.cn-east-3.myhuaweicloud.com"),
    ("cn-south-1", "https://iam.cn-south-1.myhuaweicloud.com"),
    ("cn-south-2", "https://iam.cn-south-2.myhuaweicloud.com"),
    (
        "cn-southwest-2",
        "https://iam.cn-southwest-2.myhuaweicloud.com",
    ),
    (
        "ap-southeast-1",
        "https://iam.ap-southeast-1.myhuaweicloud.com",
    ),
    (
        "ap-southeast-2",
        "https://iam.ap-southeast-2.myhuaweicloud.com",
    ),
    (
        "ap-southeast-3",
        "https://iam.ap-southeast-3.myhuaweicloud.com",
    ),
    ("af-south-1", "https://iam.af-south-1.myhuaweicloud.com"),
    ("sa-brazil-1", "https://iam.sa-brazil-1.myhuaweicloud.com"),
    ("la-south-2", "https://iam.la-south-2.myhuaweicloud.com"),
    ("na-mexico-1", "https://iam.na-mexico-1.myhuaweicloud.com"),
    ("la-north-2", "https://iam.la-north-2.myhuaweicloud.com"),
    ("cn-north-9", "https://iam.cn-north-9.myhuaweicloud.com"),
    ("eu-west-0", "https://iam.eu-west-0.myhuaweicloud.com"),
    (
        "my-kualalumpur-1",
        "https://iam.my-kualalumpur-1.myhuaweicloud.com",
    ),
    ("ru-moscow-1", "https://iam.ru-moscow-1.myhuaweicloud.com"),
    ("me-east-1", "https://iam.me-east-1.myhuaweicloud.com"),
    (
        "ap-southeast-4",
        "https://iam.ap-southeast-4.myhuaweicloud.com",
    ),
    ("ae-ad-1", "https://iam.ae-ad-1.myhuaweicloud.com"),
    ("cn-east-4", "https://iam.cn-east-4.myhuaweicloud.com"),
    ("cn-east-5", "https://iam.cn-east-5.myhuaweicloud.com"),
    ("tr-west-1", "https://iam.tr-west-1.myhuaweicloud.com"),
    ("cn-north-12", "https://iam.cn-north-12.myhuaweicloud.com"),
    ("eu-west-101", "https://iam.eu-west-101.myhuaweicloud.eu"),
];

/// The default IAM endpoint of a region: the SDKs' table, or the global
/// endpoint for a region missing from it (as the SDKs do). `iam_endpoint` in
/// a target overrides it.
pub fn default_iam_endpoint(region: &str) -> String {
    IAM_ENDPOINTS
        .iter()
        .find(|(r, _)| *r == region)
        .map_or(GLOBAL_IAM_ENDPOINT, |(_, endpoint)| endpoint)
        .to_string()
}

#[cfg(test)]
mod tests {
    //! The helpers here serve the tests of the submodules too.

    use super::*;

    pub(super) fn env(name: &str) -> Option<String> {
        match name {
            "HSS_ACCESS_KEY" => Some("AKEXAMPLE".into()),
            "HSS_SECRET_KEY" => Some("sk: with #yaml chars".into()),
            _ => None,
        }
    }

    pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/hss/config.yml"), &env)
    }

    pub(super) const MINIMAL: &str = "
credentials:
  access_key: ${HSS_ACCESS_KEY}
  secret_key: ${HSS_SECRET_KEY}
targets:
  - region: cn-north-4
    project_id: 0123abcd
";

    pub(super) fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn minimal_file_gets_every_default() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.api_rate_limit, DEFAULT_API_RATE_LIMIT);
        assert_eq!(config.malicious_interval, Duration::from_secs(60));
        assert_eq!(config.poll_interval, Duration::from_secs(300));
        assert_eq!(config.page_size, 200);
        assert_eq!(config.concurrency, 4);
        assert_eq!(config.max_retries, 4);
        assert_eq!(config.stale_after, Duration::from_secs(3600));
        assert!(!config.image_metrics);
        assert_eq!(config.max_image_series, 10_000);
        assert_eq!(config.state_file, None);
        assert_eq!(config.max_response_bytes, 16 * 1024 * 1024);
        let target = &config.targets[0];
        assert_eq!(target.name, "cn-north-4");
        assert_eq!(
            target.endpoint.as_str(),
            "https://hss.cn-north-4.myhuaweicloud.com/"
        );
        assert_eq!(target.enterprise_project_ids, vec!["all_granted_eps"]);
        assert_eq!(
            target.image_types,
            vec![ImageType::Private, ImageType::Shared, ImageType::Instance]
        );
        assert_eq!(config.scope_count(), 3);
        assert_eq!(
            target.credentials,
            CredentialsConfig::AkSk {
                access_key: "AKEXAMPLE".into(),
                secret_key: Secret::new("sk: with #yaml chars"),
                security_token: None,
            }
        );
    }

    #[test]
    fn every_key_is_read() {
        let config = parse(
            "
api_rate_limit: 10/30s
malicious_interval: 0
poll_interval: 15m
request_timeout: 10s
page_size: 50
concurrency: 2
max_retries: 1
stale_after: 2h
image_metrics: true
max_image_series: 5
state_file: state.json
max_response_bytes: 4096
credentials:
  access_key: AK
  secret_key: SK
  security_token: TOKEN
targets:
  - name: prod
    region: eu-west-101
    project_id: p1
    endpoint: http://127.0.0.1:9930
    enterprise_project_ids: ['0', ep-1]
    image_types: [instance_image, local_image]
    latest_version_only: true
",
        )
        .unwrap();
        assert_eq!(
            config.api_rate_limit,
            RateLimit {
                calls: 10,
                window: Duration::from_secs(30)
            }
        );
        assert_eq!(config.malicious_interval, Duration::ZERO);
        assert_eq!(
            config.state_file,
            Some(PathBuf::from("/etc/hss/state.json"))
        );
        let t = &config.targets[0];
        assert_eq!(t.name, "prod");
        assert_eq!(
            t.iam_endpoint.as_str(),
            "https://iam.eu-west-101.myhuaweicloud.eu/"
        );
        assert_eq!(t.image_types, vec![ImageType::Instance, ImageType::Local]);
        assert_eq!(config.scope_count(), 4);
        assert!(t.latest_version_only);
    }

    #[test]
    fn the_iam_endpoint_comes_from_the_sdks_table() {
        assert_eq!(
            default_iam_endpoint("cn-north-4"),
            "https://iam.cn-north-4.myhuaweicloud.com"
        );
        assert_eq!(
            default_iam_endpoint("ap-southeast-3"),
            "https://iam.ap-southeast-3.myhuaweicloud.com"
        );
        assert_eq!(
            default_iam_endpoint("eu-west-101"),
            "https://iam.eu-west-101.myhuaweicloud.eu"
        );
        // Regions the SDKs do not list use the global endpoint.
        for region in ["cn-south-4", "cn-southwest-3", "af-north-1", "xx-nowhere-9"] {
            assert_eq!(
                default_iam_endpoint(region),
                "https://iam.myhuaweicloud.com"
            );
        }
        let config = parse(
            "credentials: {access_key: a, secret_key: b}\ntargets:\n  - {region: cn-south-4}\n  \
             - {name: own, region: cn-south-4, iam_endpoint: 'https://iam.example.test'}\n",
        )
        .unwrap();
        assert_eq!(
            config.targets[0].iam_endpoint.as_str(),
            "https://iam.myhuaweicloud.com/"
        );
        assert_eq!(
            config.targets[1].iam_endpoint.as_str(),
            "https://iam.example.test/",
            "iam_endpoint overrides the table"
        );
    }
}
