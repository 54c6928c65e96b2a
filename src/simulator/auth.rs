//! Authentication checks of the simulated API gateway: static
//! `X-Auth-Token` values and `SDK-HMAC-SHA256` AK/SK signatures.
//!
//! Place in the project: the simulator stands in for the HSS API; it is used
//! by tests, benchmarks and the demo; the exporter's own code never depends
//! on it. The signature is recomputed from what arrived, with the exporter's
//! own signer (`crate::hss::auth::signer`), whose canonical form is checked
//! against the official SDKs' vectors. Verification here is pure; the
//! lockout after repeated failures is kept by the server, which owns the
//! state.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use axum::http::request::Parts;

use crate::hss::auth::signer::{
    self, SigningInput, canonical_request, parse_authorization, parse_sdk_date, percent_decode,
};

/// How far `X-Sdk-Date` may be from the server clock.
pub(crate) const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

/// Message of a bad or mismatching AK/SK signature.
pub(crate) const MSG_SIGNATURE: &str =
    "Incorrect IAM authentication information: verify aksk signature fail";
/// Message when neither a token nor a signature came.
pub(crate) const MSG_TOKEN_MISSING: &str =
    "Incorrect IAM authentication information: x-auth-token not found";
/// Message of an unknown token.
pub(crate) const MSG_TOKEN_BAD: &str =
    "Incorrect IAM authentication information: decrypt token fail";
/// Message while an access key is locked.
pub(crate) const MSG_LOCKED: &str = "Incorrect IAM authentication information: \
     the access key is locked for 5 minutes after more than 5 consecutive authentication failures";

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

/// Checks a request's credentials. `X-Auth-Token`, when present, decides;
/// otherwise an `SDK-HMAC-SHA256` `Authorization` header is verified.
pub(crate) fn verify(
    parts: &Parts,
    body: &[u8],
    credentials: &HashMap<String, String>,
    tokens: &HashSet<String>,
    now: SystemTime,
) -> Result<Credential, Failure> {
    if let Some(token) = header_text(parts, "x-auth-token") {
        return if tokens.contains(token.trim()) {
            Ok(Credential {
                key: format!("token:{}", token.trim()),
                access_key: None,
            })
        } else {
            Err(Failure {
                message: MSG_TOKEN_BAD.to_string(),
                access_key: None,
                detail: "unknown token",
            })
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
    let Some(secret) = credentials.get(ak) else {
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
            key: format!("ak:{ak}"),
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

    fn creds() -> HashMap<String, String> {
        HashMap::from([("AK".to_string(), "SK".to_string())])
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
        let ok = verify(&good, b"", &creds(), &HashSet::new(), now).unwrap();
        assert_eq!(ok.key, "ak:AK");

        let other_host = parts(
            &uri,
            &[
                ("host", "evil.test"),
                ("x-sdk-date", &date),
                ("authorization", &authorization),
            ],
        );
        let err = verify(&other_host, b"", &creds(), &HashSet::new(), now).unwrap_err();
        assert_eq!(err.message, MSG_SIGNATURE);
        assert_eq!(err.access_key.as_deref(), Some("AK"));

        let missing_host = parts(
            &uri,
            &[("x-sdk-date", &date), ("authorization", &authorization)],
        );
        let err = verify(&missing_host, b"", &creds(), &HashSet::new(), now).unwrap_err();
        assert_eq!(err.detail, "a signed header is missing");

        let later = now + Duration::from_secs(16 * 60);
        let err = verify(&good, b"", &creds(), &HashSet::new(), later).unwrap_err();
        assert_eq!(err.detail, "X-Sdk-Date more than 15 minutes off");
        let err = verify(&good, b"x", &creds(), &HashSet::new(), now).unwrap_err();
        assert_eq!(err.detail, "signature mismatch");
    }

    #[test]
    fn tokens_and_missing_credentials() {
        let tokens = HashSet::from(["tok".to_string()]);
        let ok = verify(
            &parts("/x", &[("x-auth-token", "tok")]),
            b"",
            &creds(),
            &tokens,
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(ok.key, "token:tok");
        let bad = verify(
            &parts("/x", &[("x-auth-token", "nope")]),
            b"",
            &creds(),
            &tokens,
            SystemTime::now(),
        )
        .unwrap_err();
        assert_eq!(bad.message, MSG_TOKEN_BAD);
        let none =
            verify(&parts("/x", &[]), b"", &creds(), &tokens, SystemTime::now()).unwrap_err();
        assert_eq!(none.message, MSG_TOKEN_MISSING);
        let unknown = verify(
            &parts(
                "/x",
                &[(
                    "authorization",
                    "SDK-HMAC-SHA256 Access=NOPE, SignedHeaders=x-sdk-date, Signature=00",
                )],
            ),
            b"",
            &creds(),
            &tokens,
            SystemTime::now(),
        )
        .unwrap_err();
        assert!(unknown.message.contains("ak not exist"));
        assert_eq!(unknown.access_key, None);
    }
}
