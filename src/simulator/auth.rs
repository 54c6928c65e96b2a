//! Authentication checks of the simulated API gateway: static and issued
//! `X-Auth-Token` values, `SDK-HMAC-SHA256` AK/SK signatures with permanent
//! keys, and temporary keys that also need a signed `X-Security-Token`.
//!
//! Place in the project: the simulator stands in for the HSS API; it is used
//! by tests, benchmarks and the demo; the exporter's own code never depends
//! on it. The signature is recomputed from what arrived, with the exporter's
//! own signer (`crate::hss::auth::signer`), whose canonical form is checked
//! against the official SDKs' vectors. Verification here is pure: the
//! [`Keyring`] holds what is accepted and is read, not changed, by
//! [`verify`]; the lockout after repeated failures is kept by the server,
//! which owns the state. Expiry of issued tokens and temporary keys is on
//! tokio's clock, so paused-time tests can run a credential out.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use axum::http::request::Parts;
use tokio::time::Instant;

use crate::hss::auth::signer::{
    self, SigningInput, canonical_request, parse_authorization, parse_sdk_date, percent_decode,
};

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
            Some((key, value)) => (percent_decode(key), percent_decode(value)),
            None => (percent_decode(piece), String::new()),
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
    let Some(auth) = parse_authorization(authorization.trim()) else {
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
    let Some(date) = header_text(parts, signer::DATE_HEADER) else {
        return Err(Failure::signature(ak, "no X-Sdk-Date"));
    };
    let date = date.trim();
    let Some(signed_at) = parse_sdk_date(date) else {
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
            Some(value) => headers.push((name.clone(), value)),
            None => return Err(Failure::signature(ak, "a signed header is missing")),
        }
    }
    let path = percent_decode(parts.uri.path());
    let query = signing_query_pairs(parts.uri.query().unwrap_or(""));
    let (mut canonical, _) = canonical_request(&SigningInput {
        method: parts.method.as_str(),
        path: &path,
        query: &query,
        headers: &headers,
        body,
    });
    // The SDKs send `X-Sdk-Content-Sha256` (e.g. UNSIGNED-PAYLOAD) in place
    // of the body hash for some content types.
    if let Some(content_sha) = header_text(parts, "x-sdk-content-sha256")
        && let Some(cut) = canonical.rfind('\n')
    {
        canonical.truncate(cut + 1);
        canonical.push_str(content_sha.trim());
    }
    let expected = signer::signature(secret, date, &canonical);
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

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
