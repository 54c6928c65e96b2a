//! Configuration: the YAML schema, its defaults, `${ENV}` expansion and
//! validation.
//!
//! Place in the data flow: first. The file is read into a loose [`RawConfig`]
//! (every key optional, unknown keys refused), environment references in string
//! values are expanded, and [`validate`](RawConfig::validate) turns it into the
//! typed [`Config`] that every later module sees. Every error names the key
//! (`targets[1].image_types[0]`) and the reason, on one line, and never shows a
//! secret. The settings the HSS client is built from ([`Secret`],
//! [`RateLimit`], [`ImageType`], [`ListingApi`], [`CredentialsConfig`]) are
//! `hss`'s own types, re-exported here: `hss` never reads this module.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;
use serde_yaml_ng::Value;

pub use crate::hss::settings::{CredentialsConfig, ImageType, ListingApi, RateLimit, Secret};

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
        let mut value: Value = serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Syntax {
            path: origin.to_path_buf(),
            message: syntax_without_values(&e.to_string()),
        })?;
        if value.is_null() {
            return Err(ConfigError::invalid(
                "targets",
                "the file is empty; at least one target is required",
            ));
        }
        let mut expansions = Vec::new();
        expand_env(&mut value, &mut String::new(), env, &mut expansions)?;
        let base_dir = origin.parent().unwrap_or(Path::new("."));
        serde_path_to_error::deserialize(value)
            .map_err(|e| {
                let key = e.path().to_string();
                let message = without_values(&e.inner().to_string());
                ConfigError::invalid(if key == "." { "config".into() } else { key }, message)
            })
            .and_then(|raw: RawConfig| raw.validate(base_dir))
            .map_err(|e| conceal_expansions(e, &expansions))
    }

    /// The number of scopes (target, enterprise project, image type).
    pub fn scope_count(&self) -> usize {
        self.targets
            .iter()
            .map(|t| t.enterprise_project_ids.len() * t.image_types.len())
            .sum()
    }
}

/// A value that `${VAR}` references filled in: its key path and each
/// variable's name and the text it put there.
#[derive(Debug)]
struct Expansion {
    path: String,
    variables: Vec<(String, String)>,
}

/// Expands `${VAR}` and `${VAR:-default}` in every string value; `$$` is a
/// literal `$`. An unset variable without a default is an error naming the key.
/// Every expanded value is recorded in `expansions`, so that errors can name
/// the variable instead of showing what it held.
fn expand_env(
    value: &mut Value,
    path: &mut String,
    env: &dyn Fn(&str) -> Option<String>,
    expansions: &mut Vec<Expansion>,
) -> Result<(), ConfigError> {
    match value {
        Value::String(s) if s.contains('$') => {
            let mut variables = Vec::new();
            *s = expand_string(s, env, &mut variables)
                .map_err(|reason| ConfigError::invalid(path.clone(), reason))?;
            if !variables.is_empty() {
                expansions.push(Expansion {
                    path: path.clone(),
                    variables,
                });
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                expand_env(item, path, env, expansions)?;
                path.truncate(len);
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key.as_str().unwrap_or("?"));
                expand_env(item, path, env, expansions)?;
                path.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

/// A deserializer's message without the offending value: serde quotes the
/// scalar it refused (`invalid type: integer `12345`, expected a string`),
/// and that scalar may be a secret key or password. What stays is what was
/// expected and the kind of value found: `expected a string, found an
/// integer`. Messages about keys (unknown, missing, duplicate field) name
/// keys, not values, and stay; anything else unknown loses its quoted parts.
fn without_values(message: &str) -> String {
    for (prefix, lead) in [
        ("invalid type: ", ""),
        ("invalid value: ", "invalid value, "),
    ] {
        if let Some(rest) = message.strip_prefix(prefix) {
            let (found, expected) = match rest.rfind(", expected ") {
                Some(at) => (&rest[..at], Some(&rest[at + ", expected ".len()..])),
                None => (rest, None),
            };
            let found = value_kind(found);
            return match (expected, found) {
                (Some(expected), Some(found)) => {
                    format!("{lead}expected {expected}, found {found}")
                }
                (Some(expected), None) => format!("{lead}expected {expected}"),
                (None, Some(found)) => format!("this value ({found}) is not accepted here"),
                (None, None) => "this value is not accepted here".to_string(),
            };
        }
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        let tail = [", expected ", ", there are no variants"]
            .iter()
            .filter_map(|marker| rest.rfind(marker))
            .max()
            .map_or("", |at| &rest[at..]);
        return format!("unknown variant{tail}");
    }
    if ["unknown field ", "missing field ", "duplicate field "]
        .iter()
        .any(|p| message.starts_with(p))
    {
        return message.to_string();
    }
    unquoted(message, '`', |_| false)
}

/// A YAML parser's message without a value: the parser checks tags while it
/// reads (`secret_key: !!int hunter2` gives `credentials.secret_key: invalid
/// value: string "hunter2", expected an integer at line 1 column 42`) and
/// serde quotes big integers. Such a message goes through
/// [`without_values`]; scanner messages (which quote only punctuation such as
/// `','`) and duplicate keys stay; anything else loses its quoted parts. The
/// position stays.
fn syntax_without_values(message: &str) -> String {
    let (body, position) = match message.rfind(" at line ") {
        Some(at) => message.split_at(at),
        None => (message, ""),
    };
    let body = match ["invalid type: ", "invalid value: "]
        .iter()
        .filter_map(|p| body.find(p))
        .min()
    {
        Some(at) => format!("{}{}", &body[..at], without_values(&body[at..])),
        None if body.contains("duplicate entry with key") => body.to_string(),
        None => unquoted(body, '`', |inner| inner.chars().count() <= 1),
    };
    format!("{body}{position}")
}

/// The kind of a value as serde's `Unexpected` prints it (`integer `5``,
/// `string "x"`, `sequence`), with its article; `None` for anything else.
fn value_kind(found: &str) -> Option<&'static str> {
    let kind = found.split(['`', '"']).next().unwrap_or_default().trim();
    Some(match kind {
        "boolean" => "a boolean",
        "integer" => "an integer",
        "floating point" => "a floating point number",
        "character" => "a character",
        "string" => "a string",
        "byte array" => "a byte array",
        "unit value" => "null",
        "Option value" => "an optional value",
        "sequence" => "a sequence",
        "map" => "a map",
        "enum" | "unit variant" | "newtype variant" | "tuple variant" | "struct variant" => {
            "a tagged value"
        }
        _ => return None,
    })
}

/// `text` with every span between a pair of `quote` characters, and every
/// `"..."` span, replaced by `…` unless `keep` accepts its content.
fn unquoted(text: &str, quote: char, keep: impl Fn(&str) -> bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let Some(open) = rest.find([quote, '"']) else {
            out.push_str(rest);
            return out;
        };
        let mark = rest[open..].chars().next().unwrap_or('"');
        let after = &rest[open + mark.len_utf8()..];
        let Some(close) = after.find(mark) else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..open]);
        let inner = &after[..close];
        out.push(mark);
        out.push_str(if keep(inner) { inner } else { "…" });
        out.push(mark);
        rest = &after[close + mark.len_utf8()..];
    }
}

/// Whether an error at `key` concerns a value at `path`: the same key, or a
/// key above it (`credentials` for `credentials.secret_key`).
fn concerns(key: &str, path: &str) -> bool {
    key == "config"
        || path == key
        || path
            .strip_prefix(key)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

/// An error about a value that came from `${VAR}`: what the variables held is
/// replaced by their names wherever it shows, any other quoted part of such a
/// value is dropped, and the message says where the value came from
/// (`(value from ${HSS_SECRET_KEY})`). Errors about other keys are unchanged.
fn conceal_expansions(error: ConfigError, expansions: &[Expansion]) -> ConfigError {
    let ConfigError::Invalid { key, mut reason } = error else {
        return error;
    };
    let related: Vec<&Expansion> = expansions
        .iter()
        .filter(|x| concerns(&key, &x.path))
        .collect();
    if related.is_empty() {
        return ConfigError::Invalid { key, reason };
    }
    for (name, value) in related.iter().flat_map(|x| &x.variables) {
        if value.is_empty() {
            continue;
        }
        let reference = format!("${{{name}}}");
        reason = reason.replace(&format!("{value:?}"), &reference);
        let escaped = value.escape_debug().to_string();
        // Very short values would garble the message and are no secrets.
        for form in [value.as_str(), escaped.as_str()] {
            if form.chars().count() >= 3 {
                reason = reason.replace(form, &reference);
            }
        }
    }
    // A part of the value that is still quoted (a duration's unit, say).
    reason = unquoted(&reason, '"', |inner| inner.contains("${"));
    let sources: Vec<String> = related
        .iter()
        .filter(|x| x.path == key)
        .flat_map(|x| x.variables.iter().map(|(name, _)| format!("${{{name}}}")))
        .collect();
    if !sources.is_empty() {
        reason = format!("{reason} (value from {})", sources.join(", "));
    }
    ConfigError::Invalid { key, reason }
}

fn expand_string(
    s: &str,
    env: &dyn Fn(&str) -> Option<String>,
    variables: &mut Vec<(String, String)>,
) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| "unclosed ${ in value".to_string())?;
            let reference = &body[..end];
            let (name, default) = match reference.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (reference, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "${{{reference}}} is not a valid environment reference"
                ));
            }
            match (env(name), default) {
                (Some(v), _) => {
                    out.push_str(&v);
                    variables.push((name.to_string(), v));
                }
                (None, Some(d)) => {
                    out.push_str(d);
                    variables.push((name.to_string(), d.to_string()));
                }
                (None, None) => {
                    return Err(format!("environment variable {name} is not set"));
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// A value written as text, or as a number where text was meant (a duration
/// of 0, or a mistake worth a precise message).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum DurationValue {
    Number(u64),
    Text(String),
}

impl DurationValue {
    fn resolve(&self, key: &str) -> Result<Duration, ConfigError> {
        match self {
            Self::Number(0) => Ok(Duration::ZERO),
            Self::Number(n) => Err(ConfigError::invalid(
                key,
                format!("{n} has no unit; write a duration such as {n}s or {n}m"),
            )),
            Self::Text(text) => humantime::parse_duration(text.trim()).map_err(|e| {
                ConfigError::invalid(
                    key,
                    format!("{text:?} is not a duration (like 30s or 5m): {e}"),
                )
            }),
        }
    }
}

/// The file as written: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    api_rate_limit: Option<DurationValue>,
    malicious_interval: Option<DurationValue>,
    poll_interval: Option<DurationValue>,
    changes_interval: Option<DurationValue>,
    changes_overlap: Option<DurationValue>,
    request_timeout: Option<DurationValue>,
    page_size: Option<u32>,
    concurrency: Option<usize>,
    max_retries: Option<u32>,
    stale_after: Option<DurationValue>,
    image_metrics: Option<bool>,
    max_image_series: Option<usize>,
    max_namespaces: Option<usize>,
    state_file: Option<String>,
    max_response_bytes: Option<usize>,
    credentials: Option<RawCredentials>,
    targets: Option<Vec<RawTarget>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredentials {
    access_key: Option<String>,
    secret_key: Option<String>,
    secret_key_file: Option<String>,
    security_token: Option<String>,
    security_token_file: Option<String>,
    token_file: Option<String>,
    iam: Option<RawIam>,
    metadata: Option<RawMetadata>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIam {
    domain_name: Option<String>,
    user_name: Option<String>,
    password: Option<String>,
    password_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetadata {
    endpoint: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    name: Option<String>,
    region: Option<String>,
    project_id: Option<String>,
    endpoint: Option<String>,
    iam_endpoint: Option<String>,
    enterprise_project_ids: Option<Vec<String>>,
    image_types: Option<Vec<String>>,
    latest_version_only: Option<bool>,
    api: Option<String>,
    credentials: Option<RawCredentials>,
}

fn duration_or(
    value: &Option<DurationValue>,
    key: &str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    value.as_ref().map_or(Ok(default), |v| v.resolve(key))
}

fn positive(value: Duration, key: &str) -> Result<Duration, ConfigError> {
    if value.is_zero() {
        Err(ConfigError::invalid(key, "must be longer than 0"))
    } else {
        Ok(value)
    }
}

fn resolve_path(base_dir: &Path, value: &str) -> PathBuf {
    let path = Path::new(value);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}

fn read_secret_file(base_dir: &Path, value: &str, key: &str) -> Result<Secret, ConfigError> {
    let path = resolve_path(base_dir, value);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ConfigError::invalid(key, format!("cannot read {}: {e}", path.display())))?;
    let secret = text.trim_end_matches(['\r', '\n']).to_string();
    if secret.is_empty() {
        return Err(ConfigError::invalid(
            key,
            format!("{} is empty", path.display()),
        ));
    }
    Ok(Secret::new(secret))
}

fn parse_url(value: &str, key: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value)
        .map_err(|e| ConfigError::invalid(key, format!("{value:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ConfigError::invalid(
            key,
            format!("{value:?} must be an http:// or https:// URL with a host"),
        ));
    }
    Ok(url)
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

impl RawCredentials {
    fn validate(&self, key: &str, base_dir: &Path) -> Result<CredentialsConfig, ConfigError> {
        let aksk = self.access_key.is_some()
            || self.secret_key.is_some()
            || self.secret_key_file.is_some()
            || self.security_token.is_some()
            || self.security_token_file.is_some();
        let kinds = [
            aksk,
            self.token_file.is_some(),
            self.iam.is_some(),
            self.metadata.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() > 1 {
            return Err(ConfigError::invalid(
                key,
                "choose one kind of credentials: access_key/secret_key, token_file, iam or metadata",
            ));
        }
        if let Some(iam) = &self.iam {
            return iam.validate(&format!("{key}.iam"), base_dir);
        }
        if let Some(metadata) = &self.metadata {
            let endpoint = metadata
                .endpoint
                .as_deref()
                .unwrap_or(crate::hss::auth::metadata::DEFAULT_ENDPOINT);
            return Ok(CredentialsConfig::Metadata {
                endpoint: parse_url(endpoint, &format!("{key}.metadata.endpoint"))?,
            });
        }
        match (&self.token_file, aksk) {
            (Some(_), true) => Err(ConfigError::invalid(
                key,
                "token_file and access_key/secret_key are exclusive; choose one",
            )),
            (Some(path), false) => {
                if path.trim().is_empty() {
                    return Err(ConfigError::invalid(
                        format!("{key}.token_file"),
                        "is empty",
                    ));
                }
                let path = resolve_path(base_dir, path);
                std::fs::metadata(&path).map_err(|e| {
                    ConfigError::invalid(
                        format!("{key}.token_file"),
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                Ok(CredentialsConfig::TokenFile { path })
            }
            (None, false) => Err(ConfigError::invalid(
                key,
                "no credentials: set access_key and secret_key (or secret_key_file), token_file, iam or metadata",
            )),
            (None, true) => {
                let access_key = match self.access_key.as_deref().map(str::trim) {
                    Some(ak) if !ak.is_empty() => ak.to_string(),
                    _ => {
                        return Err(ConfigError::invalid(
                            format!("{key}.access_key"),
                            "is required with secret_key and must not be empty",
                        ));
                    }
                };
                let secret_key = match (&self.secret_key, &self.secret_key_file) {
                    (Some(_), Some(_)) => {
                        return Err(ConfigError::invalid(
                            key,
                            "secret_key and secret_key_file are exclusive; choose one",
                        ));
                    }
                    (Some(sk), None) if !sk.is_empty() => Secret::new(sk.clone()),
                    (Some(_), None) => {
                        return Err(ConfigError::invalid(
                            format!("{key}.secret_key"),
                            "is empty",
                        ));
                    }
                    (None, Some(file)) => {
                        read_secret_file(base_dir, file, &format!("{key}.secret_key_file"))?
                    }
                    (None, None) => {
                        return Err(ConfigError::invalid(
                            format!("{key}.secret_key"),
                            "is required with access_key (or set secret_key_file)",
                        ));
                    }
                };
                let security_token = match (&self.security_token, &self.security_token_file) {
                    (Some(_), Some(_)) => {
                        return Err(ConfigError::invalid(
                            key,
                            "security_token and security_token_file are exclusive; choose one",
                        ));
                    }
                    (Some(token), None) if !token.is_empty() => Some(Secret::new(token.clone())),
                    (Some(_), None) => None,
                    (None, Some(file)) => Some(read_secret_file(
                        base_dir,
                        file,
                        &format!("{key}.security_token_file"),
                    )?),
                    (None, None) => None,
                };
                Ok(CredentialsConfig::AkSk {
                    access_key,
                    secret_key,
                    security_token,
                })
            }
        }
    }
}

impl RawIam {
    fn validate(&self, key: &str, base_dir: &Path) -> Result<CredentialsConfig, ConfigError> {
        let required = |value: &Option<String>, name: &str| match value.as_deref().map(str::trim) {
            Some(v) if !v.is_empty() => Ok(v.to_string()),
            _ => Err(ConfigError::invalid(
                format!("{key}.{name}"),
                "is required for IAM tokens",
            )),
        };
        let domain_name = required(&self.domain_name, "domain_name")?;
        let user_name = required(&self.user_name, "user_name")?;
        let password = match (&self.password, &self.password_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    key,
                    "password and password_file are exclusive; choose one",
                ));
            }
            (Some(p), None) if !p.is_empty() => Secret::new(p.clone()),
            (Some(_), None) => {
                return Err(ConfigError::invalid(format!("{key}.password"), "is empty"));
            }
            (None, Some(file)) => {
                read_secret_file(base_dir, file, &format!("{key}.password_file"))?
            }
            (None, None) => {
                return Err(ConfigError::invalid(
                    format!("{key}.password"),
                    "is required for IAM tokens (or set password_file)",
                ));
            }
        };
        Ok(CredentialsConfig::Iam {
            domain_name,
            user_name,
            password,
        })
    }
}

impl RawConfig {
    /// Applies defaults and checks every value.
    pub fn validate(self, base_dir: &Path) -> Result<Config, ConfigError> {
        let api_rate_limit = match &self.api_rate_limit {
            Some(DurationValue::Text(text)) => text
                .parse()
                .map_err(|reason| ConfigError::invalid("api_rate_limit", reason))?,
            Some(DurationValue::Number(n)) => {
                return Err(ConfigError::invalid(
                    "api_rate_limit",
                    format!("{n} is not of the form CALLS/WINDOW, like 5/1m"),
                ));
            }
            None => DEFAULT_API_RATE_LIMIT,
        };
        let malicious_interval = duration_or(
            &self.malicious_interval,
            "malicious_interval",
            DEFAULT_MALICIOUS_INTERVAL,
        )?;
        let poll_interval = positive(
            duration_or(&self.poll_interval, "poll_interval", DEFAULT_POLL_INTERVAL)?,
            "poll_interval",
        )?;
        let changes_interval = duration_or(
            &self.changes_interval,
            "changes_interval",
            DEFAULT_CHANGES_INTERVAL,
        )?;
        let changes_overlap = duration_or(
            &self.changes_overlap,
            "changes_overlap",
            DEFAULT_CHANGES_OVERLAP,
        )?;
        if changes_overlap > Duration::from_secs(24 * 3600) {
            return Err(ConfigError::invalid(
                "changes_overlap",
                "must be at most 24h: every round asks again for everything changed within it",
            ));
        }
        let request_timeout = positive(
            duration_or(
                &self.request_timeout,
                "request_timeout",
                DEFAULT_REQUEST_TIMEOUT,
            )?,
            "request_timeout",
        )?;
        let stale_after = positive(
            duration_or(&self.stale_after, "stale_after", DEFAULT_STALE_AFTER)?,
            "stale_after",
        )?;
        let page_size = self.page_size.unwrap_or(DEFAULT_PAGE_SIZE);
        if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
            return Err(ConfigError::invalid(
                "page_size",
                format!("{page_size} is outside 1..={MAX_PAGE_SIZE}, the range the API accepts"),
            ));
        }
        let concurrency = self.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
        if concurrency == 0 {
            return Err(ConfigError::invalid("concurrency", "must be at least 1"));
        }
        let max_retries = self.max_retries.unwrap_or(DEFAULT_MAX_RETRIES);
        if max_retries > 20 {
            return Err(ConfigError::invalid(
                "max_retries",
                format!("{max_retries} is more than 20; every retry spends the call budget"),
            ));
        }
        let max_response_bytes = self
            .max_response_bytes
            .unwrap_or(DEFAULT_MAX_RESPONSE_BYTES);
        if max_response_bytes < 1024 {
            return Err(ConfigError::invalid(
                "max_response_bytes",
                "must be at least 1024 bytes",
            ));
        }
        let max_namespaces = self.max_namespaces.unwrap_or(DEFAULT_MAX_NAMESPACES);
        if !(1..=MAX_MAX_NAMESPACES).contains(&max_namespaces) {
            return Err(ConfigError::invalid(
                "max_namespaces",
                format!("{max_namespaces} is outside 1..={MAX_MAX_NAMESPACES}"),
            ));
        }
        let state_file = self
            .state_file
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .map(|s| resolve_path(base_dir, s));

        let Some(raw_targets) = self.targets else {
            return Err(ConfigError::invalid(
                "targets",
                "at least one target is required",
            ));
        };
        if raw_targets.is_empty() {
            return Err(ConfigError::invalid(
                "targets",
                "at least one target is required",
            ));
        }
        let mut targets = Vec::with_capacity(raw_targets.len());
        let mut names = BTreeSet::new();
        for (i, raw) in raw_targets.into_iter().enumerate() {
            let key = format!("targets[{i}]");
            let target = raw.validate(&key, base_dir, self.credentials.as_ref())?;
            if !names.insert(target.name.clone()) {
                return Err(ConfigError::invalid(
                    format!("{key}.name"),
                    format!(
                        "target name {:?} is used twice; names must be unique",
                        target.name
                    ),
                ));
            }
            targets.push(target);
        }

        Ok(Config {
            api_rate_limit,
            malicious_interval,
            poll_interval,
            changes_interval,
            changes_overlap,
            request_timeout,
            page_size,
            concurrency,
            max_retries,
            stale_after,
            image_metrics: self.image_metrics.unwrap_or(false),
            max_image_series: self.max_image_series.unwrap_or(DEFAULT_MAX_IMAGE_SERIES),
            max_namespaces,
            state_file,
            max_response_bytes,
            targets,
        })
    }
}

fn non_empty(value: Option<&str>, key: &str) -> Result<Option<String>, ConfigError> {
    match value.map(str::trim) {
        Some("") => Err(ConfigError::invalid(key, "must not be empty")),
        Some(v) => Ok(Some(v.to_string())),
        None => Ok(None),
    }
}

impl RawTarget {
    fn validate(
        self,
        key: &str,
        base_dir: &Path,
        default_credentials: Option<&RawCredentials>,
    ) -> Result<Target, ConfigError> {
        let region =
            non_empty(self.region.as_deref(), &format!("{key}.region"))?.ok_or_else(|| {
                ConfigError::invalid(format!("{key}.region"), "is required, e.g. cn-north-4")
            })?;
        if !region
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ConfigError::invalid(
                format!("{key}.region"),
                format!("{region:?} is not a region id such as cn-north-4"),
            ));
        }
        let name = non_empty(self.name.as_deref(), &format!("{key}.name"))?
            .unwrap_or_else(|| region.clone());
        let project_id = non_empty(self.project_id.as_deref(), &format!("{key}.project_id"))?;
        if let Some(project_id) = &project_id
            && !project_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ConfigError::invalid(
                format!("{key}.project_id"),
                format!("{project_id:?} is not a project id"),
            ));
        }
        let endpoint = parse_url(
            self.endpoint
                .as_deref()
                .map(str::to_string)
                .unwrap_or_else(|| default_endpoint(&region))
                .as_str(),
            &format!("{key}.endpoint"),
        )?;
        let iam_endpoint = parse_url(
            self.iam_endpoint
                .as_deref()
                .map(str::to_string)
                .unwrap_or_else(|| default_iam_endpoint(&region))
                .as_str(),
            &format!("{key}.iam_endpoint"),
        )?;

        let enterprise_project_ids = match self.enterprise_project_ids {
            None => vec![ALL_GRANTED_EPS.to_string()],
            Some(ids) if ids.is_empty() => {
                return Err(ConfigError::invalid(
                    format!("{key}.enterprise_project_ids"),
                    "must list at least one enterprise project (0 is the default one)",
                ));
            }
            Some(ids) => {
                let mut seen = BTreeSet::new();
                let mut out = Vec::with_capacity(ids.len());
                for (j, id) in ids.into_iter().enumerate() {
                    let k = format!("{key}.enterprise_project_ids[{j}]");
                    let id = id.trim().to_string();
                    if id.is_empty() || id.len() > 256 {
                        return Err(ConfigError::invalid(k, "must be 1 to 256 characters"));
                    }
                    if !seen.insert(id.clone()) {
                        return Err(ConfigError::invalid(k, format!("{id:?} is listed twice")));
                    }
                    out.push(id);
                }
                out
            }
        };

        let api = match self.api.as_deref() {
            None => ListingApi::default(),
            Some(text) => text
                .trim()
                .parse()
                .map_err(|reason| ConfigError::invalid(format!("{key}.api"), reason))?,
        };
        let image_types = match self.image_types {
            None => vec![ImageType::Private, ImageType::Shared, ImageType::Instance],
            Some(types) if types.is_empty() => {
                return Err(ConfigError::invalid(
                    format!("{key}.image_types"),
                    "must list at least one image type",
                ));
            }
            Some(types) => {
                let mut out: Vec<ImageType> = Vec::with_capacity(types.len());
                for (j, t) in types.iter().enumerate() {
                    let k = format!("{key}.image_types[{j}]");
                    let parsed: ImageType =
                        t.trim().parse().map_err(|r| ConfigError::invalid(&k, r))?;
                    if !api.lists(parsed) {
                        let hint = match api {
                            ListingApi::SwrRepository => {
                                "; set `api: registry-images` in the target to list Harbor and JFrog registries"
                            }
                            ListingApi::RegistryImages => {
                                "; the registry-images API does not list local images"
                            }
                        };
                        return Err(ConfigError::invalid(
                            k,
                            format!("{parsed} is not listed by the {api} API{hint}"),
                        ));
                    }
                    if out.contains(&parsed) {
                        return Err(ConfigError::invalid(k, format!("{t:?} is listed twice")));
                    }
                    out.push(parsed);
                }
                out
            }
        };

        let credentials = match (&self.credentials, default_credentials) {
            (Some(own), _) => own.validate(&format!("{key}.credentials"), base_dir)?,
            (None, Some(shared)) => shared.validate("credentials", base_dir)?,
            (None, None) => {
                return Err(ConfigError::invalid(
                    format!("{key}.credentials"),
                    "no credentials: set credentials at the top level or in the target",
                ));
            }
        };

        Ok(Target {
            name,
            region,
            project_id,
            endpoint,
            iam_endpoint,
            enterprise_project_ids,
            image_types,
            latest_version_only: self.latest_version_only.unwrap_or(false),
            api,
            credentials,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HSS_ACCESS_KEY" => Some("AKEXAMPLE".into()),
            "HSS_SECRET_KEY" => Some("sk: with #yaml chars".into()),
            _ => None,
        }
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/hss/config.yml"), &env)
    }

    const MINIMAL: &str = "
credentials:
  access_key: ${HSS_ACCESS_KEY}
  secret_key: ${HSS_SECRET_KEY}
targets:
  - region: cn-north-4
    project_id: 0123abcd
";

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

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn a_typo_in_a_key_is_refused_naming_it() {
        let message = error(
            "
credentials: {access_key: a, secret_key: b}
targets:
  - regoin: cn-north-4
    project_id: p
",
        );
        assert!(
            message.starts_with("targets[0].regoin: unknown field `regoin`"),
            "{message}"
        );
        assert!(!message.contains('\n'));
        let message = error("poll_intreval: 5m\ntargets: []\n");
        assert!(
            message.contains("unknown field `poll_intreval`"),
            "{message}"
        );
    }

    #[test]
    fn bad_values_name_the_key_and_reason() {
        let cases = [
            ("page_size: 201", "page_size: 201 is outside 1..=200"),
            ("page_size: -1", "page_size: invalid value"),
            ("api_rate_limit: 5", "api_rate_limit: 5 is not of the form"),
            (
                "api_rate_limit: 5 per minute",
                "api_rate_limit: \"5 per minute\" is not of the form",
            ),
            (
                "api_rate_limit: 0/1m",
                "api_rate_limit: the number of calls",
            ),
            (
                "poll_interval: 5 minutes please",
                "poll_interval: \"5 minutes please\" is not a duration",
            ),
            ("poll_interval: 300", "poll_interval: 300 has no unit"),
            ("poll_interval: 0", "poll_interval: must be longer than 0"),
            ("concurrency: 0", "concurrency: must be at least 1"),
            (
                "image_metrics: maybe",
                "image_metrics: expected a boolean, found a string",
            ),
        ];
        for (line, expected) in cases {
            let text = format!("{line}\n{MINIMAL}");
            let message = error(&text);
            assert!(message.starts_with(expected), "{line}: got {message}");
        }
    }

    #[test]
    fn target_errors_name_the_target() {
        let base = "credentials: {access_key: a, secret_key: b}\ntargets:\n";
        let cases = [
            ("  - project_id: p\n", "targets[0].region: is required"),
            (
                "  - {region: r, project_id: 'a/b'}\n",
                "targets[0].project_id: \"a/b\" is not a project id",
            ),
            (
                "  - {region: r, project_id: p, image_types: [private_image, harbour]}\n",
                "targets[0].image_types[1]: unknown image type \"harbour\"",
            ),
            (
                "  - {region: r, project_id: p, image_types: [private_image, harbor]}\n",
                "targets[0].image_types[1]: harbor is not listed by the swr-repository API; set `api: registry-images`",
            ),
            (
                "  - {region: r, project_id: p, api: registry-images, image_types: [local_image]}\n",
                "targets[0].image_types[0]: local_image is not listed by the registry-images API",
            ),
            (
                "  - {region: r, project_id: p, api: registries}\n",
                "targets[0].api: unknown API \"registries\"; expected swr-repository or registry-images",
            ),
            (
                "  - {region: r, project_id: p, image_types: [private_image, private_image]}\n",
                "targets[0].image_types[1]: \"private_image\" is listed twice",
            ),
            (
                "  - {region: r, project_id: p, endpoint: 'ftp://x'}\n",
                "targets[0].endpoint: \"ftp://x\" must be an http",
            ),
            (
                "  - {region: r, project_id: p}\n  - {region: r, project_id: q}\n",
                "targets[1].name: target name \"r\" is used twice",
            ),
            (
                "  - {region: r, project_id: p, enterprise_project_ids: []}\n",
                "targets[0].enterprise_project_ids: must list at least one",
            ),
        ];
        for (targets, expected) in cases {
            let message = error(&format!("{base}{targets}"));
            assert!(message.starts_with(expected), "got {message}");
        }
        assert!(
            error("credentials: {access_key: a, secret_key: b}\n")
                .starts_with("targets: at least one")
        );
        assert!(error("").starts_with("targets:"));
    }

    #[test]
    fn credential_errors_never_show_secrets() {
        let message = error(
            "credentials: {access_key: AK, secret_key: SUPERSECRET, token_file: /x}\ntargets: [{region: r, project_id: p}]\n",
        );
        assert!(
            message.contains("choose one kind of credentials"),
            "{message}"
        );
        assert!(!message.contains("SUPERSECRET"));
        let message = error(
            "credentials: {secret_key: SUPERSECRET}\ntargets: [{region: r, project_id: p}]\n",
        );
        assert!(
            message.starts_with("credentials.access_key: is required"),
            "{message}"
        );
        assert!(!message.contains("SUPERSECRET"));
        let message = error("targets: [{region: r, project_id: p}]\n");
        assert!(
            message.starts_with("targets[0].credentials: no credentials"),
            "{message}"
        );
        let message = error(
            "credentials: {iam: {domain_name: d, password: SUPERSECRET}}\ntargets: [{region: r, project_id: p}]\n",
        );
        assert!(
            message.starts_with("credentials.iam.user_name: is required for IAM tokens"),
            "{message}"
        );
        assert!(!message.contains("SUPERSECRET"));
        let config = parse("credentials: {access_key: AK, secret_key: SUPERSECRET}\ntargets: [{region: r, project_id: p}]\n").unwrap();
        assert!(!format!("{config:?}").contains("SUPERSECRET"));
    }

    #[test]
    fn a_secret_of_the_wrong_type_is_named_not_shown() {
        let cases = [
            (
                "credentials: {access_key: AK, secret_key: 12345}\n",
                "credentials.secret_key: expected a string, found an integer",
                "12345",
            ),
            (
                "credentials: {iam: {domain_name: d, user_name: u, password: 98765}}\n",
                "credentials.iam.password: expected a string, found an integer",
                "98765",
            ),
            (
                "credentials: {access_key: AK, secret_key: s, security_token: 3.14159}\n",
                "credentials.security_token: expected a string, found a floating point number",
                "3.14159",
            ),
            (
                "credentials: {access_key: AK, secret_key: [hunter2, x]}\n",
                "credentials.secret_key: expected a string, found a sequence",
                "hunter2",
            ),
            (
                "credentials: {access_key: AK, secret_key: {hunter2: x}}\n",
                "credentials.secret_key: expected a string, found a map",
                "hunter2",
            ),
        ];
        let dir = tempfile::tempdir().unwrap();
        for (credentials, expected, secret) in cases {
            let path = dir.path().join("config.yml");
            std::fs::write(
                &path,
                format!("{credentials}targets: [{{region: r, project_id: p}}]\n"),
            )
            .unwrap();
            let message = Config::load(&path).unwrap_err().to_string();
            assert_eq!(message, expected);
            assert!(!message.contains(secret), "{message}");
        }
        // Within a target too, and with booleans.
        let message = error(
            "targets: [{region: r, project_id: p, credentials: {access_key: AK, secret_key: true}}]\n",
        );
        assert_eq!(
            message,
            "targets[0].credentials.secret_key: expected a string, found a boolean"
        );
    }

    fn parse_with(text: &str, name: &str, value: &str) -> String {
        let with = |n: &str| {
            if n == name {
                Some(value.to_string())
            } else {
                env(n)
            }
        };
        Config::parse(text, Path::new("/etc/hss/config.yml"), &with)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_value_from_the_environment_is_named_by_its_variable_not_shown() {
        let secret = "hunter2 x/y!";
        let cases = [
            (
                format!("page_size: ${{SECRET}}\n{MINIMAL}"),
                "page_size: expected u32, found a string (value from ${SECRET})",
            ),
            (
                format!("poll_interval: ${{SECRET}}\n{MINIMAL}"),
                "poll_interval: ${SECRET} is not a duration",
            ),
            (
                format!("api_rate_limit: '5/${{SECRET}}'\n{MINIMAL}"),
                "api_rate_limit: ",
            ),
            (
                "credentials: {access_key: a, secret_key: b}\n\
                 targets: [{region: '${SECRET}', project_id: p}]\n"
                    .to_string(),
                "targets[0].region: ${SECRET} is not a region id",
            ),
            (
                "credentials: {access_key: a, secret_key: b}\n\
                 targets: [{region: r, project_id: p, endpoint: 'ftp://${SECRET}/x'}]\n"
                    .to_string(),
                "targets[0].endpoint: ",
            ),
            (
                "credentials: {access_key: a, secret_key: b}\n\
                 targets: [{region: r, project_id: p, latest_version_only: '${SECRET}'}]\n"
                    .to_string(),
                "targets[0].latest_version_only: expected a boolean, found a string \
                 (value from ${SECRET})",
            ),
            (
                "credentials: {access_key: a, secret_key: b}\n\
                 targets: [{region: r, project_id: p, image_types: ['${SECRET}']}]\n"
                    .to_string(),
                "targets[0].image_types[0]: unknown image type ${SECRET}",
            ),
        ];
        for (text, expected) in &cases {
            let message = parse_with(text, "SECRET", secret);
            assert!(message.starts_with(expected), "got {message}");
            assert!(message.ends_with("(value from ${SECRET})"), "{message}");
            assert!(!message.contains("hunter2"), "{message}");
        }
        let message = parse_with(
            &format!("page_size: ${{SECRET}}\n{MINIMAL}"),
            "SECRET",
            "hunter2-xyz",
        );
        assert_eq!(
            message,
            "page_size: expected u32, found a string (value from ${SECRET})"
        );
        // A part of the value quoted by a parser (a duration's unit) goes too.
        let message = parse_with(
            &format!("stale_after: ${{STALE}}\n{MINIMAL}"),
            "STALE",
            "5hunter2xyz",
        );
        assert!(message.starts_with("stale_after: "), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        // The key path and the variable are named; errors elsewhere are not
        // touched.
        let message = parse_with(
            &format!("page_size: 500\nstate_file: ${{SECRET}}\n{MINIMAL}"),
            "SECRET",
            secret,
        );
        assert_eq!(
            message,
            "page_size: 500 is outside 1..=200, the range the API accepts"
        );
    }

    #[test]
    fn yaml_tags_and_huge_numbers_do_not_show_the_value() {
        let cases = [
            (
                "credentials: {access_key: a, secret_key: !!int hunter2}\n",
                "config file /etc/hss/config.yml is not valid YAML: credentials.secret_key: \
                 invalid value, expected an integer, found a string at line 2 column 42",
            ),
            (
                "credentials: {access_key: a, secret_key: !!float hunter2}\n",
                "config file /etc/hss/config.yml is not valid YAML: credentials.secret_key: \
                 invalid value, expected a float, found a string at line 2 column 42",
            ),
            (
                "credentials: {access_key: a, secret_key: 'hunter2}\n",
                "config file /etc/hss/config.yml is not valid YAML: found unexpected end of stream",
            ),
            (
                "credentials: {access_key: a, secret_key: hunter2, secret_key: hunter3}\n",
                "config file /etc/hss/config.yml is not valid YAML: credentials: \
                 duplicate entry with key \"secret_key\"",
            ),
        ];
        for (credentials, expected) in cases {
            let message = error(&format!(
                "\n{credentials}targets: [{{region: r, project_id: p}}]\n"
            ));
            assert!(message.starts_with(expected), "got {message}");
            assert!(!message.contains("hunter"), "{message}");
        }
        let message = error(&format!(
            "page_size: 123456789012345678901234567890\n{MINIMAL}"
        ));
        assert!(
            message.contains("page_size: expected any YAML value, found an integer at line 1"),
            "{message}"
        );
        assert!(!message.contains("123456"), "{message}");
        assert_eq!(
            syntax_without_values("did not find expected ',' or '}' at line 1 column 50"),
            "did not find expected ',' or '}' at line 1 column 50"
        );
    }

    #[test]
    fn serde_messages_lose_the_value_and_keep_the_expectation() {
        assert_eq!(
            without_values("invalid type: string \"a, expected b\", expected u32"),
            "expected u32, found a string"
        );
        assert_eq!(
            without_values("invalid value: integer `-1`, expected u32"),
            "invalid value, expected u32, found an integer"
        );
        assert_eq!(
            without_values("unknown variant `hunter2, expected x`, expected one of `a`, `b`"),
            "unknown variant, expected one of `a`, `b`"
        );
        assert_eq!(
            without_values("unknown field `regoin`, expected one of `name`, `region`"),
            "unknown field `regoin`, expected one of `name`, `region`"
        );
        assert_eq!(
            without_values("something about `hunter2` and \"hunter3\""),
            "something about `…` and \"…\""
        );
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

    #[test]
    fn the_successor_api_lists_harbor_and_jfrog() {
        let config = parse(
            "credentials: {access_key: a, secret_key: b}\ntargets:\n  - {region: r, project_id: p, api: registry-images, image_types: [private_image, harbor, jfrog]}\n  - {name: old, region: r, project_id: p}\n",
        )
        .unwrap();
        assert_eq!(config.targets[0].api, ListingApi::RegistryImages);
        assert_eq!(
            config.targets[0].image_types,
            vec![ImageType::Private, ImageType::Harbor, ImageType::Jfrog]
        );
        assert_eq!(
            config.targets[1].api,
            ListingApi::SwrRepository,
            "the default"
        );
    }

    #[test]
    fn iam_and_metadata_credentials_are_read() {
        let config = parse(
            "credentials: {iam: {domain_name: acct, user_name: exporter, password: pw}}\n\
             targets:\n  - {region: cn-north-4}\n  - {name: b, region: cn-north-4, credentials: {metadata: {}}}\n  \
             - {name: c, region: cn-north-4, credentials: {metadata: {endpoint: 'http://127.0.0.1:1'}}}\n",
        )
        .unwrap();
        assert_eq!(
            config.targets[0].credentials,
            CredentialsConfig::Iam {
                domain_name: "acct".into(),
                user_name: "exporter".into(),
                password: Secret::new("pw"),
            }
        );
        assert_eq!(config.targets[0].project_id, None, "looked up through IAM");
        assert_eq!(
            config.targets[1].credentials,
            CredentialsConfig::Metadata {
                endpoint: Url::parse("http://169.254.169.254").unwrap()
            }
        );
        assert_eq!(
            config.targets[2].credentials,
            CredentialsConfig::Metadata {
                endpoint: Url::parse("http://127.0.0.1:1").unwrap()
            }
        );
        let message =
            error("credentials: {iam: {domain_name: a, user_name: b}}\ntargets: [{region: r}]\n");
        assert!(
            message.starts_with("credentials.iam.password: is required"),
            "{message}"
        );
        let message = error(
            "credentials: {iam: {domain_name: a, user_name: b, password: c, pasword: d}}\ntargets: [{region: r}]\n",
        );
        assert!(
            message.starts_with("credentials.iam.pasword: unknown field"),
            "{message}"
        );
    }

    #[test]
    fn unset_environment_variable_is_named() {
        let message = error(
            "credentials: {access_key: a, secret_key: '${MISSING_SK}'}\ntargets: [{region: r, project_id: p}]\n",
        );
        assert_eq!(
            message,
            "credentials.secret_key: environment variable MISSING_SK is not set"
        );
    }

    #[test]
    fn env_expansion_handles_defaults_and_escapes() {
        assert_eq!(
            expand_string("a${MISSING:-b}c", &env, &mut Vec::new()).unwrap(),
            "abc"
        );
        assert_eq!(
            expand_string("$$HOME", &env, &mut Vec::new()).unwrap(),
            "$HOME"
        );
        assert_eq!(
            expand_string("cost $5", &env, &mut Vec::new()).unwrap(),
            "cost $5"
        );
        assert!(expand_string("${BAD NAME}", &env, &mut Vec::new()).is_err());
        assert!(expand_string("${OPEN", &env, &mut Vec::new()).is_err());
    }

    #[test]
    fn secret_files_are_read_and_trimmed() {
        let dir = std::env::temp_dir().join(format!("hss-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("sk"), "from-file\n").unwrap();
        std::fs::write(dir.join("token"), "tok").unwrap();
        let text = "credentials: {access_key: AK, secret_key_file: sk}\ntargets:\n  - {region: r, project_id: p}\n  - {region: s, project_id: p, credentials: {token_file: token}}\n";
        let config = Config::parse(text, &dir.join("config.yml"), &env).unwrap();
        match &config.targets[0].credentials {
            CredentialsConfig::AkSk { secret_key, .. } => {
                assert_eq!(secret_key.expose(), "from-file")
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            config.targets[1].credentials,
            CredentialsConfig::TokenFile {
                path: dir.join("token")
            }
        );
        let message = Config::parse(
            "credentials: {access_key: AK, secret_key_file: nope}\ntargets: [{region: r, project_id: p}]\n",
            &dir.join("config.yml"),
            &env,
        )
        .unwrap_err()
        .to_string();
        assert!(
            message.starts_with("credentials.secret_key_file: cannot read"),
            "{message}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn syntax_errors_give_the_position() {
        let message = error("targets: [\n");
        assert!(
            message.starts_with("config file /etc/hss/config.yml is not valid YAML"),
            "{message}"
        );
        assert!(message.contains("line"), "{message}");
    }

    #[test]
    fn max_namespaces_defaults_and_bounds() {
        assert_eq!(parse(MINIMAL).unwrap().max_namespaces, 20_000);
        for n in [1, 1_000_000] {
            let config = parse(&format!("max_namespaces: {n}\n{MINIMAL}")).unwrap();
            assert_eq!(config.max_namespaces, n);
        }
        for (line, expected) in [
            (
                "max_namespaces: 0",
                "max_namespaces: 0 is outside 1..=1000000",
            ),
            (
                "max_namespaces: 1000001",
                "max_namespaces: 1000001 is outside 1..=1000000",
            ),
            ("max_namespaces: -3", "max_namespaces: invalid value"),
        ] {
            let message = error(&format!("{line}\n{MINIMAL}"));
            assert!(message.starts_with(expected), "{line}: got {message}");
        }
    }
}
