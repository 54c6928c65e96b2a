//! AK/SK credentials, permanent or temporary (with a security token).
//!
//! Place in the data flow: called by the client for every attempt; signs the
//! request with [`signer`](super::signer) over `host`, `x-project-id` (when the
//! client sets it), `x-sdk-date` and, for temporary credentials,
//! `x-security-token`. Headers an HTTP client may rewrite are not signed.

use std::time::SystemTime;

use super::{AuthError, BoxFuture, Credential, OutgoingRequest, signer};
use crate::hss::settings::Secret;

/// Signs every call with an access key and secret key.
#[derive(Debug)]
pub struct AkSk {
    access_key: String,
    secret_key: Secret,
    security_token: Option<Secret>,
}

impl AkSk {
    /// Credentials from their parts.
    pub fn new(access_key: String, secret_key: Secret, security_token: Option<Secret>) -> Self {
        Self {
            access_key,
            secret_key,
            security_token,
        }
    }

    /// Signs `request` as of `now`.
    pub fn sign(&self, request: &mut OutgoingRequest, now: SystemTime) {
        sign_request(
            request,
            &self.access_key,
            &self.secret_key,
            self.security_token.as_ref(),
            now,
        );
    }
}

/// Signs `request` with an AK/SK pair (and the security token of temporary
/// credentials) as of `now`: adds `X-Sdk-Date`, `X-Security-Token` and
/// `Authorization`. Shared by every credential kind that signs.
pub fn sign_request(
    request: &mut OutgoingRequest,
    access_key: &str,
    secret_key: &Secret,
    security_token: Option<&Secret>,
    now: SystemTime,
) {
    {
        request
            .headers
            .retain(|(name, _)| !name.eq_ignore_ascii_case(signer::DATE_HEADER));
        request
            .headers
            .push(("X-Sdk-Date".to_string(), signer::sdk_date(now)));
        if let Some(token) = security_token {
            request
                .headers
                .push(("X-Security-Token".to_string(), token.expose().to_string()));
        }
        let mut signed: Vec<(String, String)> = request
            .headers
            .iter()
            .filter(|(name, _)| {
                let name = name.to_ascii_lowercase();
                matches!(
                    name.as_str(),
                    "x-project-id" | "x-sdk-date" | "x-security-token"
                )
            })
            .cloned()
            .collect();
        signed.push(("host".to_string(), request.host.clone()));
        let authorization = signer::sign(
            access_key,
            secret_key.expose(),
            &signer::SigningInput {
                method: request.method,
                path: &request.path,
                query: &request.query,
                headers: &signed,
                body: &request.body,
            },
        );
        request
            .headers
            .push(("Authorization".to_string(), authorization));
    }
}

impl Credential for AkSk {
    fn authorize<'a>(
        &'a self,
        request: &'a mut OutgoingRequest,
    ) -> BoxFuture<'a, Result<(), AuthError>> {
        Box::pin(async move {
            self.sign(request, SystemTime::now());
            Ok(())
        })
    }

    fn kind(&self) -> &'static str {
        if self.security_token.is_some() {
            "temporary_aksk"
        } else {
            "aksk"
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn request() -> OutgoingRequest {
        OutgoingRequest {
            method: "GET",
            host: "hss.cn-north-4.myhuaweicloud.com".into(),
            path: "/v5/0123456789abcdef0123456789abcdef/image/swr-repository".into(),
            query: vec![
                ("enterprise_project_id".into(), "all_granted_eps".into()),
                ("image_type".into(), "private_image".into()),
                ("limit".into(), "200".into()),
                ("offset".into(), "0".into()),
            ],
            headers: vec![
                (
                    "X-Project-Id".into(),
                    "0123456789abcdef0123456789abcdef".into(),
                ),
                ("User-Agent".into(), "not signed".into()),
            ],
            body: Vec::new(),
        }
    }

    #[test]
    fn signs_the_listing_call_like_the_official_sdk() {
        let credential = AkSk::new("AccessKey".into(), Secret::new("SecretKey"), None);
        let mut req = request();
        credential.sign(
            &mut req,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_067_200),
        );
        let auth = req
            .headers
            .iter()
            .find(|(n, _)| n == "Authorization")
            .unwrap();
        // The same vector as signer.rs: reference/hss-api.md 5.2, confirmed with the Python SDK.
        assert_eq!(
            auth.1,
            "SDK-HMAC-SHA256 Access=AccessKey, SignedHeaders=host;x-project-id;x-sdk-date, \
             Signature=45dc0838f56442f590806c17ce85c1dfbac1ab8cc54c66be5d8889f1bb0df4b2"
        );
        assert!(
            req.headers
                .contains(&("X-Sdk-Date".into(), "20240101T000000Z".into()))
        );
    }

    #[test]
    fn temporary_credentials_send_and_sign_the_token() {
        let credential = AkSk::new(
            "TMPAK".into(),
            Secret::new("TmpSecret"),
            Some(Secret::new("tok")),
        );
        let mut req = request();
        credential.sign(&mut req, SystemTime::now());
        assert!(
            req.headers
                .contains(&("X-Security-Token".into(), "tok".into()))
        );
        let auth = &req
            .headers
            .iter()
            .find(|(n, _)| n == "Authorization")
            .unwrap()
            .1;
        assert!(auth.contains("SignedHeaders=host;x-project-id;x-sdk-date;x-security-token"));
        assert_eq!(credential.kind(), "temporary_aksk");
        assert!(!format!("{credential:?}").contains("TmpSecret"));
        assert!(!format!("{credential:?}").contains("tok\""));
    }
}
