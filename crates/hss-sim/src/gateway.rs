//! What the simulated API gateway applies alike to every route it serves,
//! the listings (`server`) and the IAM side (`iam`): the JSON content type,
//! how a query string is read, and the limits of the lockout after failed
//! authentications.
//!
//! Place in the project: the simulator stands in for the HSS API; it is used
//! by tests, benchmarks and the demo; the exporter's own code never depends
//! on it. This module sits below both `server` and `iam`, so that neither
//! needs the other for these; `server` re-exports its constants.

use std::time::Duration;

use super::auth;

/// `Content-Type` of every API answer, as the service sends it.
pub const CONTENT_TYPE_JSON: &str = "application/json;charset=UTF-8";

/// Consecutive authentication failures an access key may have; one more
/// locks it (documented gateway behaviour).
pub const MAX_AUTH_FAILURES: u32 = 5;

/// How long a locked access key stays locked.
pub const AUTH_LOCK: Duration = Duration::from_secs(5 * 60);

/// Query parameters as the service reads them: split on `&` and the first
/// `=`, `+` read as a space, percent-decoded.
pub(super) fn service_params(raw: &str) -> Vec<(String, String)> {
    auth::signing_query_pairs(&raw.replace('+', "%20"))
}
