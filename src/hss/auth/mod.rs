//! Credentials: how each call proves who sends it.
//!
//! Place in the data flow: the client builds an [`OutgoingRequest`] for every
//! attempt and hands it to the target's [`Credential`], which adds the headers
//! its kind needs; the client then sends exactly those parts. Each kind lives
//! in its own file behind the one trait, and [`from_config`] picks the kind in
//! one `match`. Kinds hide their own refreshing. Secrets stay inside the kinds:
//! errors and `Debug` output never carry them.

pub mod aksk;
pub mod iam_token;
pub mod metadata;
pub use hss_api::signer;
pub mod token_file;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::settings::{CredentialsConfig, TargetSettings};

/// How long nothing is sent with credentials that were refused: more than 5
/// failed authentications in a row lock an AK/SK or an IAM user for 5
/// minutes.
pub const AUTH_HOLD: Duration = Duration::from_secs(300);

/// A boxed future, as trait objects need.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A credential could not produce its headers.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token file could not be read, or is empty.
    #[error("cannot read token file {path}: {reason}")]
    TokenFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// IAM did not give a token.
    #[error("IAM token: {0}")]
    Iam(String),
    /// IAM refused the credentials themselves (wrong password, unknown or
    /// locked user): asking again only adds failed authentications.
    #[error("IAM refused the credentials: {0}")]
    Refused(String),
    /// The metadata service did not give credentials.
    #[error("metadata credentials: {0}")]
    Metadata(String),
}

impl AuthError {
    /// Whether the credentials were refused, so that the target must hold.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Refused(_))
    }
}

/// Where the project id comes from when it is not configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectSource {
    /// `GET /v3/projects?name={region}`, as the SDKs do with AK/SK (needs
    /// the IAM permission to list projects).
    ListProjects,
    /// `GET /v3/auth/projects`, the projects the token's user can reach (no
    /// extra permission), filtered by the region name.
    AuthProjects,
}

/// The parts of a request that credentials may read and extend.
#[derive(Debug, Clone)]
pub struct OutgoingRequest {
    /// HTTP method.
    pub method: &'static str,
    /// The `Host` header the HTTP client will send (`host[:port]`).
    pub host: String,
    /// The path, not percent-encoded.
    pub path: String,
    /// Query parameters, not encoded.
    pub query: Vec<(String, String)>,
    /// Headers to send (the client adds none of its own that are signed).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// One way of authenticating calls.
pub trait Credential: Send + Sync + std::fmt::Debug {
    /// Adds the authentication headers to `request`.
    fn authorize<'a>(
        &'a self,
        request: &'a mut OutgoingRequest,
    ) -> BoxFuture<'a, Result<(), AuthError>>;

    /// A short name of the kind, for logs and `/status`.
    fn kind(&self) -> &'static str;

    /// Called after the API answered 401: drops what the credential cached
    /// (a token, temporary keys) and says whether one more try with fresh
    /// credentials makes sense. Kinds with nothing to refresh say no, so a
    /// 401 is never retried in a loop.
    fn refresh_after_unauthorized(&self) -> BoxFuture<'_, bool> {
        Box::pin(async { false })
    }

    /// The project this credential is scoped to, when it knows it without a
    /// lookup (a project-scoped IAM token carries it in its body).
    fn scoped_project_id(&self) -> BoxFuture<'_, Result<Option<String>, AuthError>> {
        Box::pin(async { Ok(None) })
    }

    /// How to look the project id up otherwise.
    fn project_source(&self) -> ProjectSource {
        ProjectSource::ListProjects
    }
}

/// When credentials fetched at `now` and living `lifetime` are fetched
/// again: `after` (the kind's own choice) from now, or earlier so that at
/// least `floor` of their lifetime is left (at once when they live less).
pub fn refresh_at(
    now: tokio::time::Instant,
    lifetime: Duration,
    after: Duration,
    floor: Duration,
) -> tokio::time::Instant {
    let after = after.min(lifetime.saturating_sub(floor));
    now.checked_add(after).unwrap_or(now)
}

/// Builds the credential a target's configuration asks for. Kinds that
/// refresh (IAM tokens, temporary keys) do so at least `refresh_floor`
/// before expiry (see [`refresh_at`]).
pub fn from_config(
    config: &CredentialsConfig,
    http: &reqwest::Client,
    target: &TargetSettings,
    refresh_floor: Duration,
) -> Arc<dyn Credential> {
    match config {
        CredentialsConfig::AkSk {
            access_key,
            secret_key,
            security_token,
        } => Arc::new(aksk::AkSk::new(
            access_key.clone(),
            secret_key.clone(),
            security_token.clone(),
        )),
        CredentialsConfig::TokenFile { path } => Arc::new(token_file::TokenFile::new(path.clone())),
        CredentialsConfig::Iam {
            domain_name,
            user_name,
            password,
        } => Arc::new(
            iam_token::IamToken::new(
                http.clone(),
                target.iam_endpoint.clone(),
                domain_name.clone(),
                user_name.clone(),
                password.clone(),
                match &target.project_id {
                    Some(id) => iam_token::ProjectScope::Id(id.clone()),
                    None => iam_token::ProjectScope::Name(target.region.clone()),
                },
            )
            .with_refresh_floor(refresh_floor),
        ),
        CredentialsConfig::Metadata { endpoint } => Arc::new(
            metadata::Metadata::new(http.clone(), endpoint.clone())
                .with_refresh_floor(refresh_floor),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refresh_floor_only_ever_brings_a_refresh_forward() {
        let now = tokio::time::Instant::now();
        let secs = Duration::from_secs;
        // No floor: the kind's own choice.
        assert_eq!(
            refresh_at(now, secs(10), secs(8), Duration::ZERO),
            now + secs(8)
        );
        // A floor shorter than the kind's margin changes nothing.
        assert_eq!(refresh_at(now, secs(10), secs(8), secs(1)), now + secs(8));
        // A longer one brings the refresh forward.
        assert_eq!(refresh_at(now, secs(10), secs(8), secs(7)), now + secs(3));
        // Credentials living less than the floor are due at once.
        assert_eq!(refresh_at(now, secs(1), secs(1), secs(2)), now);
    }
}
