//! Helpers of the HTTP side's unit tests: a simulator that accepts two
//! static tokens, requests by token or AK/SK signature, and sweeps over both
//! listings.
//!
//! Place in the project: compiled for tests only; the tests of the files of
//! `server/` share it, and the IAM tests use its [`send`] and [`Reply`].

use std::net::SocketAddr;
use std::time::SystemTime;

use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode, header};
use hss_api::signer;
use serde_json::Value;
use tower::ServiceExt;

use super::Simulator;
use crate::data::SimImage;
use crate::{Quota, SimConfig};

pub(super) const BASE: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
pub(super) const PATH: &str = "/v5/proj/image/swr-repository";

pub(super) fn sim_with(images: usize, quota: Option<Quota>) -> Simulator {
    Simulator::new(SimConfig {
        images,
        quota,
        tokens: vec!["tok".to_string(), "tok2".to_string()],
        base_time_ms: BASE,
        ..SimConfig::default()
    })
}

pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Reply {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).unwrap()
    }
    pub(super) fn error_code(&self) -> String {
        self.json()["error_code"].as_str().unwrap().to_string()
    }
    pub(super) fn ids(&self) -> Vec<u64> {
        self.json()["data_list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["id"].as_u64().unwrap())
            .collect()
    }
}

pub(crate) async fn send(sim: &Simulator, request: Request<Body>) -> Reply {
    let response = sim.router().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    Reply {
        status,
        headers,
        body,
    }
}

pub(super) fn token_request(token: &str, query: &str, peer: Option<[u8; 4]>) -> Request<Body> {
    token_request_to(PATH, token, query, peer)
}

pub(super) fn token_request_to(
    path: &str,
    token: &str,
    query: &str,
    peer: Option<[u8; 4]>,
) -> Request<Body> {
    let mut request = Request::get(format!("{path}?{query}"))
        .header("x-auth-token", token)
        .body(Body::empty())
        .unwrap();
    if let Some(ip) = peer {
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((ip, 40000))));
    }
    request
}

pub(super) async fn list(sim: &Simulator, query: &str) -> Reply {
    send(sim, token_request("tok", query, None)).await
}

pub(super) const NEW_PATH: &str = "/v5/proj/image/registries/images";

/// A call to the successor listing.
pub(super) async fn list_new(sim: &Simulator, query: &str) -> Reply {
    send(sim, token_request_to(NEW_PATH, "tok", query, None)).await
}

/// Every row of a listing, page by page, and the first page's total.
pub(super) async fn sweep(sim: &Simulator, path: &str, query: &str) -> (Vec<Value>, u64) {
    let mut rows = Vec::new();
    let mut total = None;
    loop {
        let q = format!("{query}&limit=200&offset={}", rows.len());
        let reply = send(sim, token_request_to(path, "tok", &q, None)).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}?{q}");
        let body = reply.json();
        total.get_or_insert(body["total_num"].as_u64().unwrap());
        let page = body["data_list"].as_array().unwrap().clone();
        if page.is_empty() {
            break;
        }
        rows.extend(page);
    }
    (rows, total.unwrap_or(0))
}

/// The `Authorization` header of a GET of the listing with `query` and
/// `headers`, signed by the exporter's signer.
pub(super) fn authorization(
    access_key: &str,
    secret_key: &str,
    query: &[(String, String)],
    headers: &[(String, String)],
) -> String {
    signer::sign(
        access_key,
        secret_key,
        &signer::SigningInput {
            method: "GET",
            path: PATH,
            query,
            headers,
            body: b"",
        },
    )
}

pub(super) fn signed_request(
    access_key: &str,
    secret_key: &str,
    query: &[(&str, &str)],
) -> Request<Body> {
    let query: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let date = signer::sdk_date(SystemTime::now());
    let headers = vec![
        ("Host".to_string(), "hss.sim.test".to_string()),
        ("X-Project-Id".to_string(), "proj".to_string()),
        ("X-Sdk-Date".to_string(), date.clone()),
    ];
    let authorization = authorization(access_key, secret_key, &query, &headers);
    Request::get(format!("{PATH}?{}", signer::canonical_query(&query)))
        .header("host", "hss.sim.test")
        .header("x-project-id", "proj")
        .header("x-sdk-date", date)
        .header("authorization", authorization)
        .body(Body::empty())
        .unwrap()
}

pub(super) fn post_json(path: &str, body: &str) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// The ids and `total_num` of both listings for `query` (which must
/// carry `image_type`, as the old listing requires).
pub(super) async fn both(sim: &Simulator, query: &str) -> [(Vec<u64>, u64); 2] {
    let mut out = [(Vec::new(), 0), (Vec::new(), 0)];
    for (slot, path) in out.iter_mut().zip([PATH, NEW_PATH]) {
        let (rows, total) = sweep(sim, path, query).await;
        *slot = (
            rows.iter().map(|r| r["id"].as_u64().unwrap()).collect(),
            total,
        );
    }
    out
}

/// A private image of enterprise project "0", the kind both listings show.
pub(super) fn private_row(sim: &Simulator) -> SimImage {
    sim.images()
        .into_iter()
        .find(|r| r.image_type == "private_image" && r.enterprise_project_id == "0")
        .unwrap()
}

pub(super) const PRIVATE: &str = "image_type=private_image&enterprise_project_id=0";
