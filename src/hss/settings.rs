//! The settings the HSS client is built from: its own types, so that `hss`
//! needs nothing from the configuration module.
//!
//! Place in the data flow: below the configuration, at the top of `hss`.
//! `config` validates the file into these types (and re-exports them, so
//! `config::ImageType` and `hss::settings::ImageType` are one type); the app
//! turns each configured target into a [`TargetSettings`] and its credentials
//! into a [`CredentialsConfig`] for [`auth::from_config`](super::auth::from_config);
//! the budget takes a [`RateLimit`], the client a [`ListingApi`] and
//! [`ImageType`]s. A [`Secret`] never shows its value, in `Debug` or otherwise.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use reqwest::Url;

/// A secret value: never printed, in `Debug` or otherwise.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it (signing, headers).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A call budget: at most `calls` calls in any window of length `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Calls allowed per window.
    pub calls: u32,
    /// The window length.
    pub window: Duration,
}

impl RateLimit {
    /// Calls per second this budget allows at most.
    pub fn per_second(&self) -> f64 {
        f64::from(self.calls) / self.window.as_secs_f64()
    }
}

impl FromStr for RateLimit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (calls, window) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not of the form CALLS/WINDOW, like 5/1m"))?;
        let calls: u32 = calls
            .trim()
            .parse()
            .map_err(|_| format!("{:?} is not a whole number of calls", calls.trim()))?;
        if calls == 0 {
            return Err("the number of calls must be at least 1".into());
        }
        let window = humantime::parse_duration(window.trim())
            .map_err(|e| format!("{:?} is not a duration: {e}", window.trim()))?;
        if window.is_zero() {
            return Err("the window must be longer than 0".into());
        }
        Ok(Self { calls, window })
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.calls,
            humantime::format_duration(self.window)
        )
    }
}

/// Which listing API a target polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum ListingApi {
    /// `GET /v5/{project_id}/image/swr-repository` (ListSwrImageRepository),
    /// the API page this exporter started from; marked deprecated by Huawei.
    #[default]
    SwrRepository,
    /// `GET /v5/{project_id}/image/registries/images` (ListRegistryImages),
    /// its successor: the same rows plus registry, severity and sync time,
    /// and Harbor and JFrog registries.
    RegistryImages,
}

impl ListingApi {
    /// Both APIs.
    pub const ALL: [ListingApi; 2] = [Self::SwrRepository, Self::RegistryImages];

    /// The value of the `api` key and label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SwrRepository => "swr-repository",
            Self::RegistryImages => "registry-images",
        }
    }

    /// The path after `/v5/{project_id}/`.
    pub fn path(self) -> &'static str {
        match self {
            Self::SwrRepository => "image/swr-repository",
            Self::RegistryImages => "image/registries/images",
        }
    }

    /// Whether this API lists `image_type`.
    pub fn lists(self, image_type: ImageType) -> bool {
        match self {
            Self::SwrRepository => !matches!(image_type, ImageType::Harbor | ImageType::Jfrog),
            Self::RegistryImages => image_type != ImageType::Local,
        }
    }
}

impl FromStr for ListingApi {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("unknown API {s:?}; expected swr-repository or registry-images"))
    }
}

impl fmt::Display for ListingApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The image types the listing APIs know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ImageType {
    /// `private_image`: SWR private images.
    Private,
    /// `shared_image`: images shared with this account.
    Shared,
    /// `instance_image`: SWR enterprise edition instances.
    Instance,
    /// `local_image`: images on the hosts (swr-repository only).
    Local,
    /// `harbor`: Harbor registries connected to HSS (registry-images only).
    Harbor,
    /// `jfrog`: JFrog registries connected to HSS (registry-images only).
    Jfrog,
}

impl ImageType {
    /// Every image type, in the APIs' order.
    pub const ALL: [ImageType; 6] = [
        Self::Private,
        Self::Shared,
        Self::Instance,
        Self::Local,
        Self::Harbor,
        Self::Jfrog,
    ];

    /// The API's name for the type, also the `image_type` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Private => "private_image",
            Self::Shared => "shared_image",
            Self::Instance => "instance_image",
            Self::Local => "local_image",
            Self::Harbor => "harbor",
            Self::Jfrog => "jfrog",
        }
    }
}

impl FromStr for ImageType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown image type {s:?}; expected one of {}",
                    Self::ALL.map(ImageType::as_str).join(", ")
                )
            })
    }
}

impl fmt::Display for ImageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the exporter authenticates to the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialsConfig {
    /// AK/SK request signing; with a security token for temporary credentials.
    AkSk {
        /// The access key (an identifier, not secret).
        access_key: String,
        /// The secret key.
        secret_key: Secret,
        /// The security token of temporary credentials.
        security_token: Option<Secret>,
    },
    /// A static `X-Auth-Token` read from a file, re-read when it changes.
    TokenFile {
        /// The file holding the token.
        path: PathBuf,
    },
    /// An IAM user's password, exchanged for project-scoped tokens.
    Iam {
        /// The account (domain) name.
        domain_name: String,
        /// The IAM user's name.
        user_name: String,
        /// The user's password.
        password: Secret,
    },
    /// Temporary AK/SK from the ECS/CCE metadata service.
    Metadata {
        /// The metadata service's base URL.
        endpoint: Url,
    },
}

/// What the client of one target needs to know about it: the parts of a
/// configured target that are not scopes or credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSettings {
    /// The `target` label value.
    pub name: String,
    /// The region, e.g. `cn-north-4`.
    pub region: String,
    /// The project the listing runs in; looked up through IAM (once) when
    /// not configured.
    pub project_id: Option<String>,
    /// Base URL of the HSS API.
    pub endpoint: Url,
    /// Base URL of IAM (used by IAM credentials and the project lookup).
    pub iam_endpoint: Url,
    /// Which listing API to poll.
    pub api: ListingApi,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_round_trips() {
        let limit: RateLimit = "5/1m".parse().unwrap();
        assert_eq!(limit.to_string(), "5/1m");
        assert!((limit.per_second() - 5.0 / 60.0).abs() < 1e-12);
        assert!("x/1m".parse::<RateLimit>().is_err());
        assert!("5/0s".parse::<RateLimit>().is_err());
    }
}
