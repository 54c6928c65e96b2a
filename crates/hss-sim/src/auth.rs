//! Authentication checks of the simulated API gateway: static and issued
//! `X-Auth-Token` values, `SDK-HMAC-SHA256` AK/SK signatures with permanent
//! keys, and temporary keys that also need a signed `X-Security-Token`.
//!
//! Place in the project: the simulator stands in for the HSS API; it is used
//! by tests, benchmarks and the demo; the exporter's own code never depends
//! on it. The signature is recomputed from what arrived with the gateway's
//! own `SDK-HMAC-SHA256` canonicalisation ([`sdk_hmac`] below), written from
//! reference/hss-api.md section 5 and the Python SDK's `signer.py`, apart
//! from the exporter's signer (`hss_api::signer`): both are held to
//! the official SDK's vectors on their own, so a mistake in one is not copied
//! into the other and hidden. Verification here is pure: the
//! [`Keyring`] holds what is accepted and is read, not changed, by
//! [`verify`]; the lockout after repeated failures is kept by the server,
//! which owns the state. Expiry of issued tokens and temporary keys is on
//! tokio's clock, so paused-time tests can run a credential out.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use axum::http::request::Parts;
use tokio::time::Instant;

/// How far `X-Sdk-Date` may be from the server clock.
pub(crate) const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

/// How long an expired token or temporary key is remembered, so that its
/// use is answered "expires" rather than "unknown".
const REMEMBER_EXPIRED: Duration = Duration::from_secs(24 * 3600);

/// Name of the header that carries a temporary key's security token.
pub(crate) const SECURITY_TOKEN_HEADER: &str = "x-security-token";

/// Message of a bad or mismatching AK/SK signature.
pub(crate) const MSG_SIGNATURE: &str =
    "Incorrect IAM authentication information: verify aksk signature fail";
/// Message when neither a token nor a signature came.
pub(crate) const MSG_TOKEN_MISSING: &str =
    "Incorrect IAM authentication information: x-auth-token not found";
/// Message of an unknown token.
pub(crate) const MSG_TOKEN_BAD: &str =
    "Incorrect IAM authentication information: decrypt token fail";
/// Message of an issued IAM token past its `expires_at`.
pub const MSG_TOKEN_EXPIRED: &str = "Incorrect IAM authentication information: token expires";
/// Message of a temporary access key (and its security token) past its
/// `expires_at`.
pub const MSG_SECURITY_TOKEN_EXPIRED: &str =
    "Incorrect IAM authentication information: security token expires";
/// Message while an access key is locked.
pub(crate) const MSG_LOCKED: &str = "Incorrect IAM authentication information: \
     the access key is locked for 5 minutes after more than 5 consecutive authentication failures";

/// An IAM token issued by `POST /v3/auth/tokens`.
#[derive(Debug, Clone)]
struct IssuedToken {
    /// Quota key of its user (`user:<domain>/<user>`), the same for every
    /// token of that user.
    subject: String,
    expires: Instant,
}

/// A temporary access key issued by the metadata service.
#[derive(Clone)]
struct TemporaryKey {
    secret: String,
    security_token: String,
    expires: Instant,
}

/// Quota key shared by every temporary key of the metadata service (one
/// agency, one user).
const TEMPORARY_SUBJECT: &str = "user:metadata-agency";

/// What the gateway accepts: permanent keys, static tokens, issued tokens
/// and temporary keys (the last two with their expiry).
pub(crate) struct Keyring {
    /// Access key -> secret key.
    credentials: HashMap<String, String>,
    tokens: HashSet<String>,
    issued: HashMap<String, IssuedToken>,
    temporary: HashMap<String, TemporaryKey>,
}

impl Keyring {
    /// Permanent keys and static tokens, accepted forever.
    pub(crate) fn new(
        credentials: impl IntoIterator<Item = (String, String)>,
        tokens: impl IntoIterator<Item = String>,
    ) -> Self {
        Keyring {
            credentials: credentials.into_iter().collect(),
            tokens: tokens.into_iter().collect(),
            issued: HashMap::new(),
            temporary: HashMap::new(),
        }
    }

    /// Accepts `token` as `X-Auth-Token` for `subject` until `expires`.
    pub(crate) fn add_token(&mut self, token: String, subject: String, expires: Instant) {
        self.prune(Instant::now());
        self.issued.insert(token, IssuedToken { subject, expires });
    }

    /// Accepts the temporary key `access_key` with `secret` and a signed
    /// `X-Security-Token: security_token` until `expires`.
    pub(crate) fn add_temporary(
        &mut self,
        access_key: String,
        secret: String,
        security_token: String,
        expires: Instant,
    ) {
        self.prune(Instant::now());
        self.temporary.insert(
            access_key,
            TemporaryKey {
                secret,
                security_token,
                expires,
            },
        );
    }

    /// Forgets every issued token (as when a password changes): their next
    /// use is answered as an unknown token.
    pub(crate) fn revoke_tokens(&mut self) {
        self.issued.clear();
    }

    /// Drops tokens and keys that expired long ago.
    fn prune(&mut self, now: Instant) {
        let keep = |expires: Instant| now.saturating_duration_since(expires) < REMEMBER_EXPIRED;
        self.issued.retain(|_, t| keep(t.expires));
        self.temporary.retain(|_, k| keep(k.expires));
    }
}

/// Who a request authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Credential {
    /// The quota key: `ak:<access key>` or `token:<token>`.
    pub key: String,
    /// The access key, for AK/SK requests (lockout bookkeeping).
    pub access_key: Option<String>,
}

/// Why authentication failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// The `error_msg` to answer.
    pub message: String,
    /// A known access key that failed (counts towards its lockout).
    pub access_key: Option<String>,
    /// A detail for the simulator's own debug log, never sent.
    pub detail: &'static str,
}

impl Failure {
    fn signature(access_key: &str, detail: &'static str) -> Self {
        Failure {
            message: MSG_SIGNATURE.to_string(),
            access_key: Some(access_key.to_string()),
            detail,
        }
    }
}

/// Splits a raw query string the way the gateway reads it for signing: on
/// `&`, then on the first `=`, each side percent-decoded (`+` stays `+`); a
/// key without `=` has an empty value; empty pieces are skipped.
pub(crate) fn signing_query_pairs(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| match piece.split_once('=') {
            Some((key, value)) => (sdk_hmac::unescape(key), sdk_hmac::unescape(value)),
            None => (sdk_hmac::unescape(piece), String::new()),
        })
        .collect()
}

fn header_text(parts: &Parts, name: &str) -> Option<String> {
    parts
        .headers
        .get(name)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
}

/// Checks a request's credentials against `keyring`. `X-Auth-Token`, when
/// present, decides; otherwise an `SDK-HMAC-SHA256` `Authorization` header
/// is verified. `now` is the wall clock (for `X-Sdk-Date`), `clock` tokio's
/// (for the expiry of issued tokens and temporary keys).
pub(crate) fn verify(
    parts: &Parts,
    body: &[u8],
    keyring: &Keyring,
    now: SystemTime,
    clock: Instant,
) -> Result<Credential, Failure> {
    if let Some(token) = header_text(parts, "x-auth-token") {
        let token = token.trim();
        if keyring.tokens.contains(token) {
            return Ok(Credential {
                key: format!("token:{token}"),
                access_key: None,
            });
        }
        return match keyring.issued.get(token) {
            Some(issued) if clock < issued.expires => Ok(Credential {
                key: issued.subject.clone(),
                access_key: None,
            }),
            Some(_) => Err(Failure {
                message: MSG_TOKEN_EXPIRED.to_string(),
                access_key: None,
                detail: "issued token expired",
            }),
            None => Err(Failure {
                message: MSG_TOKEN_BAD.to_string(),
                access_key: None,
                detail: "unknown token",
            }),
        };
    }
    let Some(authorization) = header_text(parts, "authorization") else {
        return Err(Failure {
            message: MSG_TOKEN_MISSING.to_string(),
            access_key: None,
            detail: "no credentials",
        });
    };
    let Some(auth) = sdk_hmac::parse_authorization(authorization.trim()) else {
        return Err(Failure {
            message: MSG_SIGNATURE.to_string(),
            access_key: None,
            detail: "unreadable Authorization header",
        });
    };
    let ak = auth.access_key.as_str();
    let (secret, key) = if let Some(secret) = keyring.credentials.get(ak) {
        (secret.as_str(), format!("ak:{ak}"))
    } else if let Some(temporary) = keyring.temporary.get(ak) {
        if clock >= temporary.expires {
            return Err(Failure {
                message: MSG_SECURITY_TOKEN_EXPIRED.to_string(),
                access_key: Some(ak.to_string()),
                detail: "temporary access key expired",
            });
        }
        let Some(sent) = header_text(parts, SECURITY_TOKEN_HEADER) else {
            return Err(Failure::signature(
                ak,
                "temporary access key without X-Security-Token",
            ));
        };
        if !auth
            .signed_headers
            .iter()
            .any(|name| name.eq_ignore_ascii_case(SECURITY_TOKEN_HEADER))
        {
            return Err(Failure::signature(ak, "X-Security-Token is not signed"));
        }
        if !constant_time_eq(sent.trim().as_bytes(), temporary.security_token.as_bytes()) {
            return Err(Failure::signature(
                ak,
                "X-Security-Token does not belong to the access key",
            ));
        }
        (temporary.secret.as_str(), TEMPORARY_SUBJECT.to_string())
    } else {
        return Err(Failure {
            message: format!(
                "Incorrect IAM authentication information: Get secretKey failed,ak:{ak},err:ak not exist"
            ),
            access_key: None,
            detail: "unknown access key",
        });
    };
    let Some(date) = header_text(parts, "x-sdk-date") else {
        return Err(Failure::signature(ak, "no X-Sdk-Date"));
    };
    let date = date.trim();
    let Some(signed_at) = sdk_hmac::parse_date(date) else {
        return Err(Failure::signature(ak, "unreadable X-Sdk-Date"));
    };
    let skew = match now.duration_since(signed_at) {
        Ok(behind) => behind,
        Err(ahead) => ahead.duration(),
    };
    if skew > MAX_CLOCK_SKEW {
        return Err(Failure::signature(
            ak,
            "X-Sdk-Date more than 15 minutes off",
        ));
    }
    let mut headers = Vec::with_capacity(auth.signed_headers.len());
    for name in &auth.signed_headers {
        match header_text(parts, name) {
            Some(value) => headers.push((name.as_str(), value)),
            None => return Err(Failure::signature(ak, "a signed header is missing")),
        }
    }
    let content_sha = header_text(parts, "x-sdk-content-sha256");
    let canonical = sdk_hmac::canonical_request(
        parts.method.as_str(),
        parts.uri.path(),
        parts.uri.query().unwrap_or(""),
        &headers,
        body,
        content_sha.as_deref(),
    );
    let expected = sdk_hmac::signature(secret, date, &canonical);
    if constant_time_eq(expected.as_bytes(), auth.signature.as_bytes()) {
        Ok(Credential {
            key,
            access_key: Some(ak.to_string()),
        })
    } else {
        Err(Failure::signature(ak, "signature mismatch"))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The gateway's side of `SDK-HMAC-SHA256`, from what arrived on the wire.
///
/// Written from reference/hss-api.md section 5 and the Python SDK's
/// `signer.py` (huaweicloudsdkcore 3.1.219), and deliberately sharing no code
/// with the exporter's signer:
/// - canonical URI: the received path percent-decoded (as UTF-8, invalid
///   bytes replaced), split on `/`, each segment encoded with the RFC 3986
///   unreserved set literal and upper-case `%XY` for everything else, joined
///   with `/`, a `/` appended unless it ends with one;
/// - canonical query: the received query split on `&` and the first `=`,
///   both sides percent-decoded (`+` stays `+`), pairs sorted by key then
///   value, encoded as above, `k=v` joined with `&`;
/// - canonical headers: each name of `SignedHeaders`, in that order, as
///   `name:trimmed value\n`; then the names joined with `;`;
/// - payload: the empty-body hash for an empty body, else the
///   `X-Sdk-Content-Sha256` value when sent, else the body's SHA-256;
/// - signature: hex HMAC-SHA256, keyed with the secret key itself, of
///   `SDK-HMAC-SHA256\n{X-Sdk-Date}\n{hex SHA-256 of the canonical request}`.
pub(crate) mod sdk_hmac {
    use std::time::SystemTime;

    use hmac::{Hmac, KeyInit, Mac};
    use sha2::{Digest, Sha256};

    const ALGORITHM: &str = "SDK-HMAC-SHA256";
    const EMPTY_BODY_SHA256: &str =
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// The parts of an `Authorization: SDK-HMAC-SHA256 ...` header.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) struct Authorization {
        pub access_key: String,
        /// Lower-case names, in the order given.
        pub signed_headers: Vec<String>,
        pub signature: String,
    }

    /// Reads `SDK-HMAC-SHA256 Access=AK, SignedHeaders=a;b, Signature=hex`;
    /// `None` for anything else.
    pub(crate) fn parse_authorization(value: &str) -> Option<Authorization> {
        let rest = value.strip_prefix(ALGORITHM)?.strip_prefix(' ')?;
        let (mut access_key, mut signed_headers, mut signature) = (None, None, None);
        for part in rest.split(", ") {
            match part.split_once('=')? {
                ("Access", v) => access_key = Some(v.to_string()),
                ("SignedHeaders", v) => {
                    signed_headers = Some(v.split(';').map(str::to_ascii_lowercase).collect());
                }
                ("Signature", v) => signature = Some(v.to_string()),
                _ => return None,
            }
        }
        Some(Authorization {
            access_key: access_key?,
            signed_headers: signed_headers?,
            signature: signature?,
        })
    }

    /// Reads an `X-Sdk-Date` (`YYYYMMDDTHHMMSSZ`, UTC).
    pub(crate) fn parse_date(value: &str) -> Option<SystemTime> {
        let b = value.as_bytes();
        let digits = |range: std::ops::Range<usize>| {
            b.get(range.clone())
                .filter(|d| d.iter().all(u8::is_ascii_digit))
                .and_then(|_| value.get(range))
        };
        if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
            return None;
        }
        let text = format!(
            "{}-{}-{}T{}:{}:{}Z",
            digits(0..4)?,
            digits(4..6)?,
            digits(6..8)?,
            digits(9..11)?,
            digits(11..13)?,
            digits(13..15)?
        );
        humantime::parse_rfc3339(&text).ok()
    }

    /// RFC 3986 unreserved bytes literal, every other byte `%XY`.
    fn escape(text: &str) -> String {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let mut out = String::with_capacity(text.len());
        for &byte in text.as_bytes() {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                out.push(char::from(byte));
            } else {
                out.push('%');
                out.push(char::from(HEX[usize::from(byte >> 4)]));
                out.push(char::from(HEX[usize::from(byte & 0x0f)]));
            }
        }
        out
    }

    /// Decodes `%XY` (either case); a `%` not followed by two hex digits is
    /// kept; the bytes are read as UTF-8 with invalid sequences replaced, as
    /// Python's `unquote` does.
    pub(crate) fn unescape(text: &str) -> String {
        let b = text.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            let pair = (b[i] == b'%')
                .then(|| b.get(i + 1..i + 3))
                .flatten()
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| {
                    u8::from_str_radix(h, 16)
                        .ok()
                        .filter(|_| !h.starts_with('+'))
                });
            match pair {
                Some(byte) => {
                    out.push(byte);
                    i += 3;
                }
                None => {
                    out.push(b[i]);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    fn uri(raw_path: &str) -> String {
        let decoded = unescape(raw_path);
        let mut uri = decoded.split('/').map(escape).collect::<Vec<_>>().join("/");
        if !uri.ends_with('/') {
            uri.push('/');
        }
        uri
    }

    fn query(raw_query: &str) -> String {
        let mut pairs = super::signing_query_pairs(raw_query);
        pairs.sort();
        pairs
            .iter()
            .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
            .collect::<Vec<_>>()
            .join("&")
    }

    fn sha256_hex(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    /// The canonical request of what arrived; `headers` are the signed ones,
    /// lower-case names in `SignedHeaders` order, values as received.
    pub(crate) fn canonical_request(
        method: &str,
        raw_path: &str,
        raw_query: &str,
        headers: &[(&str, String)],
        body: &[u8],
        content_sha256: Option<&str>,
    ) -> String {
        let mut canonical_headers = String::new();
        for (name, value) in headers {
            canonical_headers.push_str(name);
            canonical_headers.push(':');
            canonical_headers.push_str(value.trim());
            canonical_headers.push('\n');
        }
        let names = headers
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(";");
        let payload = match (body.is_empty(), content_sha256) {
            (true, _) => EMPTY_BODY_SHA256.to_string(),
            (false, Some(declared)) => declared.trim().to_string(),
            (false, None) => sha256_hex(body),
        };
        format!(
            "{}\n{}\n{}\n{canonical_headers}\n{names}\n{payload}",
            method.to_ascii_uppercase(),
            uri(raw_path),
            query(raw_query),
        )
    }

    /// The hex signature of `canonical` signed at `date` with `secret`.
    pub(crate) fn signature(secret: &str, date: &str, canonical: &str) -> String {
        let string_to_sign = format!("{ALGORITHM}\n{date}\n{}", sha256_hex(canonical.as_bytes()));
        let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        mac.update(string_to_sign.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;
    use hss_api::signer::{self, SigningInput};

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = Request::get(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn keyring(tokens: &[&str]) -> Keyring {
        Keyring::new(
            [("AK".to_string(), "SK".to_string())],
            tokens.iter().map(|t| t.to_string()),
        )
    }

    fn check(
        parts: &Parts,
        body: &[u8],
        keyring: &Keyring,
        now: SystemTime,
    ) -> Result<Credential, Failure> {
        verify(parts, body, keyring, now, Instant::now())
    }

    /// A request exactly as the official Python SDK (huaweicloudsdkcore
    /// 3.1.219) sends it: its `uri` (path and canonical query), its headers
    /// and its `Authorization`, as printed by scripts/signer-vectors.py.
    struct SdkVector {
        ak: &'static str,
        sk: &'static str,
        method: &'static str,
        uri: &'static str,
        headers: &'static [(&'static str, &'static str)],
        body: &'static [u8],
        canonical_sha256: &'static str,
        authorization: &'static str,
    }

    const SDK_VECTORS: &[SdkVector] = &[
        SdkVector {
            ak: "AccessKey",
            sk: "SecretKey",
            method: "GET",
            uri: "/v5/0123456789abcdef0123456789abcdef/image/swr-repository?enterprise_project_id=all_granted_eps&image_type=private_image&limit=200&offset=0",
            headers: &[
                ("host", "hss.cn-north-4.myhuaweicloud.com"),
                ("x-project-id", "0123456789abcdef0123456789abcdef"),
                ("x-sdk-date", "20240101T000000Z"),
            ],
            body: b"",
            canonical_sha256: "ec20cc8b07f14918ac9ef504e66d5e11080c0a7e2af441dd7ede592065bbfc91",
            authorization: "SDK-HMAC-SHA256 Access=AccessKey, SignedHeaders=host;x-project-id;x-sdk-date, Signature=45dc0838f56442f590806c17ce85c1dfbac1ab8cc54c66be5d8889f1bb0df4b2",
        },
        SdkVector {
            ak: "HPUAXXXXXXXXXXXXXXXX",
            sk: "s3cr3t/Key+With=Chars",
            method: "GET",
            uri: "/v5/proj/image/swr-repository?has_malicious_file=true&image_name=my%20image~1&image_type=shared_image&namespace=%E5%9B%A2%E9%98%9F%20a%2Fb&scan_status=",
            headers: &[
                ("host", "127.0.0.1:9930"),
                ("x-project-id", "proj"),
                ("x-sdk-date", "20261127T120000Z"),
            ],
            body: b"",
            canonical_sha256: "c1375f38cea2bf5d250dda462e1ae4dfbae3520c5e10c0b86c205fe54a13977e",
            authorization: "SDK-HMAC-SHA256 Access=HPUAXXXXXXXXXXXXXXXX, SignedHeaders=host;x-project-id;x-sdk-date, Signature=59805a713363bb988560b1946210eaaa808c058a654be96ed3046a86ec5ec51a",
        },
        SdkVector {
            ak: "TMPAK",
            sk: "TmpSecret",
            method: "GET",
            uri: "/v5/p1/image/swr-repository?image_type=instance_image&limit=200&offset=400",
            headers: &[
                ("host", "hss.ap-southeast-1.myhuaweicloud.com"),
                ("x-project-id", "p1"),
                ("x-sdk-date", "20250615T083000Z"),
                ("x-security-token", "gQpjbi1ub3J0aC00jU4ZTZkYmQ"),
            ],
            body: b"",
            canonical_sha256: "3b3c67b8d19f49d9915f0d9cfb6f71d6612147006498e9ca47d2f6846c1d4baa",
            authorization: "SDK-HMAC-SHA256 Access=TMPAK, SignedHeaders=host;x-project-id;x-sdk-date;x-security-token, Signature=a0537696c6464647c2089ab6a790dacfc98960f301c6bf6a40b681fc888a0105",
        },
        // The SDK's uri is `/v3/a b/tokens`; an HTTP client sends the space
        // as `%20`, which the gateway decodes before encoding.
        SdkVector {
            ak: "AK2",
            sk: "SK2",
            method: "POST",
            uri: "/v3/a%20b/tokens",
            headers: &[
                ("host", "iam.example.test"),
                ("x-sdk-date", "20200101T010203Z"),
            ],
            body: br#"{"auth":{"name":"x"}}"#,
            canonical_sha256: "aca3ae1cee504aaf392221d4cd17cc9583f6e1466913dbb2c08955d8b4fc1b21",
            authorization: "SDK-HMAC-SHA256 Access=AK2, SignedHeaders=host;x-sdk-date, Signature=26daa116a53913b5e3f5c5d3681db5887d1389f4429b0841a62d4cb6e5aa71f7",
        },
        // The Go SDK's own test query.
        SdkVector {
            ak: "AccessKey",
            sk: "SecretKey",
            method: "GET",
            uri: "/path?enable=true&limit=1&multi=1&multi=2&multi=3&path=%2Ftmp%2F123&test=%E4%B8%80%20%28%26%3D%3F%21%23%25.%2A%29",
            headers: &[
                ("host", "example.huaweicloud.com"),
                ("x-sdk-date", "20060102T150405Z"),
            ],
            body: b"",
            canonical_sha256: "e8ed2505b124f434774f48548278e66fb20c8c163fcd678925ab2b97e0195d37",
            authorization: "SDK-HMAC-SHA256 Access=AccessKey, SignedHeaders=host;x-sdk-date, Signature=dff80dcf3ff2811f4dee3312ca443cf20492b692a0286835bf5903adda1ba3a3",
        },
        // `+` as a literal plus, a key given three times.
        SdkVector {
            ak: "AK3",
            sk: "SK3+/=",
            method: "GET",
            uri: "/v5/p1/image/registries/images?image_name=c%2B%2B%20lib&namespace=a%2Bb%3Dc&tag=v1%2Brc&tag=v10&tag=v2",
            headers: &[
                ("host", "hss.cn-north-4.myhuaweicloud.com"),
                ("x-project-id", "p1"),
                ("x-sdk-date", "20260301T101500Z"),
            ],
            body: b"",
            canonical_sha256: "fe790b2ae44435977731400993528c3603ab7342bb5c0ae73ea9e9e841d67608",
            authorization: "SDK-HMAC-SHA256 Access=AK3, SignedHeaders=host;x-project-id;x-sdk-date, Signature=e121332565f928d3ab31f9bfbb4ed316a7b11742809efa46ca24465cbe0ab121",
        },
        // An endpoint path holding `%` escapes: `%20` is signed as `%20`.
        SdkVector {
            ak: "AccessKey",
            sk: "SecretKey",
            method: "GET",
            uri: "/hss%20proxy/%E5%9B%A2%7Eq/v5/p1/image/swr-repository?limit=200&offset=0",
            headers: &[
                ("host", "gw.example.test"),
                ("x-project-id", "p1"),
                ("x-sdk-date", "20240101T000000Z"),
            ],
            body: b"",
            canonical_sha256: "22f4754770926529f007432474146367974d6589ea77e2cf25a6b4068db6a9db",
            authorization: "SDK-HMAC-SHA256 Access=AccessKey, SignedHeaders=host;x-project-id;x-sdk-date, Signature=2619abf4cd8c49351ce9cb23780f114c75c1a47c9f40ed713b88b8f678eec9be",
        },
    ];

    fn sdk_request(vector: &SdkVector, uri: &str) -> Parts {
        let mut builder = Request::builder().method(vector.method).uri(uri);
        for (name, value) in vector.headers {
            builder = builder.header(*name, *value);
        }
        builder
            .header("authorization", vector.authorization)
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    fn sdk_keyring(vector: &SdkVector) -> Keyring {
        let mut ring = Keyring::new([(vector.ak.to_string(), vector.sk.to_string())], []);
        if let Some((_, token)) = vector
            .headers
            .iter()
            .find(|(n, _)| *n == SECURITY_TOKEN_HEADER)
        {
            ring = Keyring::new([], []);
            ring.add_temporary(
                vector.ak.to_string(),
                vector.sk.to_string(),
                token.to_string(),
                Instant::now() + Duration::from_secs(60),
            );
        }
        ring
    }

    #[test]
    fn official_sdk_requests_verify_with_the_gateways_own_canonical_form() {
        for vector in SDK_VECTORS {
            let parts = sdk_request(vector, vector.uri);
            let date = vector
                .headers
                .iter()
                .find(|(n, _)| *n == "x-sdk-date")
                .unwrap()
                .1;
            let signed_at = sdk_hmac::parse_date(date).unwrap();
            let headers: Vec<(&str, String)> = vector
                .headers
                .iter()
                .map(|(n, v)| (*n, v.to_string()))
                .collect();
            let canonical = sdk_hmac::canonical_request(
                vector.method,
                parts.uri.path(),
                parts.uri.query().unwrap_or(""),
                &headers,
                vector.body,
                None,
            );
            assert_eq!(
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(canonical.as_bytes())),
                vector.canonical_sha256,
                "{}: {canonical:?}",
                vector.uri
            );
            let ring = sdk_keyring(vector);
            let ok = check(&parts, vector.body, &ring, signed_at);
            assert!(ok.is_ok(), "{}: {ok:?}", vector.uri);
            assert_eq!(ok.unwrap().access_key.as_deref(), Some(vector.ak));
        }
    }

    #[test]
    fn the_gateways_canonical_form_matches_the_sdk_text() {
        let vector = &SDK_VECTORS[4];
        let parts = sdk_request(vector, vector.uri);
        let headers: Vec<(&str, String)> = vector
            .headers
            .iter()
            .map(|(n, v)| (*n, v.to_string()))
            .collect();
        assert_eq!(
            sdk_hmac::canonical_request(
                "GET",
                parts.uri.path(),
                parts.uri.query().unwrap(),
                &headers,
                b"",
                None
            ),
            "GET\n/path/\nenable=true&limit=1&multi=1&multi=2&multi=3&path=%2Ftmp%2F123\
             &test=%E4%B8%80%20%28%26%3D%3F%21%23%25.%2A%29\nhost:example.huaweicloud.com\n\
             x-sdk-date:20060102T150405Z\n\nhost;x-sdk-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        // The same query sent in another order, or unescaped where that is
        // allowed on the wire, reads the same.
        let reordered = "/path?test=%E4%B8%80%20%28%26%3D%3F%21%23%25.%2A%29&path=/tmp/123&multi=3&multi=1&multi=2&limit=1&enable=true";
        let parts = sdk_request(vector, reordered);
        assert!(
            check(
                &parts,
                b"",
                &sdk_keyring(vector),
                sdk_hmac::parse_date("20060102T150405Z").unwrap()
            )
            .is_ok()
        );
    }

    #[test]
    fn sdk_requests_changed_on_the_way_fail() {
        let at = |v: &SdkVector| {
            sdk_hmac::parse_date(
                v.headers
                    .iter()
                    .find(|(n, _)| *n == "x-sdk-date")
                    .unwrap()
                    .1,
            )
            .unwrap()
        };
        // `%2520` is not `%20`: the path is decoded once.
        let escaped = &SDK_VECTORS[6];
        let double = escaped.uri.replace("%20", "%2520");
        let err = check(
            &sdk_request(escaped, &double),
            b"",
            &sdk_keyring(escaped),
            at(escaped),
        )
        .unwrap_err();
        assert_eq!(err.detail, "signature mismatch");
        // `+` in the query is a plus: sent bare it still verifies, and a
        // space in its place does not.
        let plus = &SDK_VECTORS[5];
        let bare = plus.uri.replace("%2B%2B", "++");
        assert!(check(&sdk_request(plus, &bare), b"", &sdk_keyring(plus), at(plus)).is_ok());
        let spaced = plus.uri.replace("%2B%2B", "%20%20");
        let err = check(
            &sdk_request(plus, &spaced),
            b"",
            &sdk_keyring(plus),
            at(plus),
        )
        .unwrap_err();
        assert_eq!(err.detail, "signature mismatch");
        // One repeated value dropped.
        let dropped = plus.uri.replace("&tag=v10", "");
        let err = check(
            &sdk_request(plus, &dropped),
            b"",
            &sdk_keyring(plus),
            at(plus),
        )
        .unwrap_err();
        assert_eq!(err.detail, "signature mismatch");
        // Another body.
        let post = &SDK_VECTORS[3];
        let err = check(
            &sdk_request(post, post.uri),
            b"{}",
            &sdk_keyring(post),
            at(post),
        )
        .unwrap_err();
        assert_eq!(err.detail, "signature mismatch");
    }

    #[test]
    fn unescaping_keeps_malformed_escapes_and_replaces_invalid_utf8() {
        assert_eq!(sdk_hmac::unescape("a%20b%zz%4"), "a b%zz%4");
        assert_eq!(sdk_hmac::unescape("%+1%E5%9B%A2"), "%+1团");
        assert_eq!(sdk_hmac::unescape("%FF"), "\u{FFFD}");
    }

    #[test]
    fn query_pairs_split_on_first_equals_and_decode() {
        assert_eq!(
            signing_query_pairs("a=1&b=x%3Dy=z&flag&&c=%E5%9B%A2+1"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x=y=z".into()),
                ("flag".into(), String::new()),
                ("c".into(), "团+1".into()),
            ]
        );
    }

    #[test]
    fn signature_verifies_and_tampering_fails() {
        let now = SystemTime::now();
        let date = signer::sdk_date(now);
        let query = vec![("namespace".to_string(), "支付 团队".to_string())];
        let headers = vec![
            ("Host".to_string(), "sim.test".to_string()),
            ("X-Sdk-Date".to_string(), date.clone()),
        ];
        let authorization = signer::sign(
            "AK",
            "SK",
            &SigningInput {
                method: "GET",
                path: "/v5/p/image/swr-repository",
                query: &query,
                headers: &headers,
                body: b"",
            },
        );
        let uri = format!(
            "/v5/p/image/swr-repository?{}",
            signer::canonical_query(&query)
        );
        let good = parts(
            &uri,
            &[
                ("host", "sim.test"),
                ("x-sdk-date", &date),
                ("authorization", &authorization),
            ],
        );
        let ok = check(&good, b"", &keyring(&[]), now).unwrap();
        assert_eq!(ok.key, "ak:AK");

        let other_host = parts(
            &uri,
            &[
                ("host", "evil.test"),
                ("x-sdk-date", &date),
                ("authorization", &authorization),
            ],
        );
        let err = check(&other_host, b"", &keyring(&[]), now).unwrap_err();
        assert_eq!(err.message, MSG_SIGNATURE);
        assert_eq!(err.access_key.as_deref(), Some("AK"));

        let missing_host = parts(
            &uri,
            &[("x-sdk-date", &date), ("authorization", &authorization)],
        );
        let err = check(&missing_host, b"", &keyring(&[]), now).unwrap_err();
        assert_eq!(err.detail, "a signed header is missing");

        let later = now + Duration::from_secs(16 * 60);
        let err = check(&good, b"", &keyring(&[]), later).unwrap_err();
        assert_eq!(err.detail, "X-Sdk-Date more than 15 minutes off");
        let err = check(&good, b"x", &keyring(&[]), now).unwrap_err();
        assert_eq!(err.detail, "signature mismatch");
    }

    #[test]
    fn tokens_and_missing_credentials() {
        let tokens = keyring(&["tok"]);
        let ok = check(
            &parts("/x", &[("x-auth-token", "tok")]),
            b"",
            &tokens,
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(ok.key, "token:tok");
        let bad = check(
            &parts("/x", &[("x-auth-token", "nope")]),
            b"",
            &tokens,
            SystemTime::now(),
        )
        .unwrap_err();
        assert_eq!(bad.message, MSG_TOKEN_BAD);
        let none = check(&parts("/x", &[]), b"", &tokens, SystemTime::now()).unwrap_err();
        assert_eq!(none.message, MSG_TOKEN_MISSING);
        let unknown = check(
            &parts(
                "/x",
                &[(
                    "authorization",
                    "SDK-HMAC-SHA256 Access=NOPE, SignedHeaders=x-sdk-date, Signature=00",
                )],
            ),
            b"",
            &tokens,
            SystemTime::now(),
        )
        .unwrap_err();
        assert!(unknown.message.contains("ak not exist"));
        assert_eq!(unknown.access_key, None);
    }

    #[tokio::test(start_paused = true)]
    async fn issued_tokens_share_their_user_quota_key_and_expire() {
        let mut ring = keyring(&[]);
        let expires = Instant::now() + Duration::from_secs(60);
        ring.add_token("t1".into(), "user:acme/alice".into(), expires);
        ring.add_token("t2".into(), "user:acme/alice".into(), expires);
        let with = |token: &str| parts("/x", &[("x-auth-token", token)]);
        let now = SystemTime::now();
        for token in ["t1", "t2"] {
            let ok = verify(&with(token), b"", &ring, now, Instant::now()).unwrap();
            assert_eq!(ok.key, "user:acme/alice");
            assert_eq!(ok.access_key, None);
        }
        let late = verify(&with("t1"), b"", &ring, now, expires).unwrap_err();
        assert_eq!(late.message, MSG_TOKEN_EXPIRED);
        // Long-expired entries are forgotten when something new is issued.
        tokio::time::advance(REMEMBER_EXPIRED + Duration::from_secs(60)).await;
        ring.add_token("t3".into(), "user:acme/alice".into(), Instant::now());
        let gone = verify(&with("t1"), b"", &ring, now, Instant::now()).unwrap_err();
        assert_eq!(gone.message, MSG_TOKEN_BAD);
    }

    #[test]
    fn temporary_keys_need_the_signed_security_token() {
        let mut ring = keyring(&[]);
        let expires = Instant::now() + Duration::from_secs(60);
        ring.add_temporary("TMPAK".into(), "TMPSK".into(), "sts".into(), expires);
        let now = SystemTime::now();
        let date = signer::sdk_date(now);
        let request = |signed: &[(&str, &str)], sent: &[(&str, &str)]| {
            let headers: Vec<(String, String)> = signed
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let authorization = signer::sign(
                "TMPAK",
                "TMPSK",
                &SigningInput {
                    method: "GET",
                    path: "/x",
                    query: &[],
                    headers: &headers,
                    body: b"",
                },
            );
            let mut all = sent.to_vec();
            all.push(("authorization", &authorization));
            parts("/x", &all)
        };
        let dated = [("x-sdk-date", date.as_str())];
        let with_sts = [("x-sdk-date", date.as_str()), ("x-security-token", "sts")];
        let ok = check(&request(&with_sts, &with_sts), b"", &ring, now).unwrap();
        assert_eq!(ok.key, TEMPORARY_SUBJECT);
        assert_eq!(ok.access_key.as_deref(), Some("TMPAK"));
        let err = check(&request(&dated, &dated), b"", &ring, now).unwrap_err();
        assert_eq!(err.detail, "temporary access key without X-Security-Token");
        let err = check(&request(&dated, &with_sts), b"", &ring, now).unwrap_err();
        assert_eq!(err.detail, "X-Security-Token is not signed");
        let other = [("x-sdk-date", date.as_str()), ("x-security-token", "other")];
        let err = check(&request(&other, &other), b"", &ring, now).unwrap_err();
        assert_eq!(
            err.detail,
            "X-Security-Token does not belong to the access key"
        );
        assert_eq!(err.message, MSG_SIGNATURE);
        let late = verify(&request(&with_sts, &with_sts), b"", &ring, now, expires).unwrap_err();
        assert_eq!(late.message, MSG_SECURITY_TOKEN_EXPIRED);
        assert_eq!(late.access_key.as_deref(), Some("TMPAK"));
    }
}
