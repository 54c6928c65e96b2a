//! The `/_sim/*` control endpoints: call statistics (`GET /_sim/stats`),
//! faults (`POST /_sim/faults`), rows (`POST /_sim/images`) and malicious
//! images (`POST /_sim/malicious`), for the demo and for tests that drive a
//! simulator over HTTP.
//!
//! Place in the project: part of the simulator's HTTP side (`server`); these
//! routes pass no gateway check and are not recorded as listing calls.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::faults::valid_rates;
use super::rows::insert_row;
use super::{CONTENT_TYPE_JSON, MaliciousImage, Simulator, lock};
use crate::data::SimImage;
use crate::{Api, Call, Faults, max_calls_in_window};

/// Window of `max_calls_per_window` in `/_sim/stats` when no quota is set.
const DEFAULT_STATS_WINDOW: Duration = Duration::from_secs(60);

/// Body of a control endpoint's error.
fn control_error(message: impl std::fmt::Display) -> Response {
    let body = json!({"error_code": "SIM.0001", "error_msg": message.to_string()});
    json_response(StatusCode::BAD_REQUEST, &body)
}

/// A JSON answer of a control endpoint.
fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(CONTENT_TYPE_JSON),
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// `GET /_sim/stats`.
pub(super) async fn stats_endpoint(State(sim): State<Simulator>) -> Response {
    let (calls, window) = {
        let state = lock(&sim.inner.state);
        let window = state.quota.limit.map_or(DEFAULT_STATS_WINDOW, |q| q.window);
        (state.quota.calls.clone(), window)
    };
    let stats = sim.stats();
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for call in &calls {
        *by_status.entry(call.status.to_string()).or_insert(0) += 1;
    }
    // Each API has its own quota, so its own figures.
    let by_api: serde_json::Map<String, serde_json::Value> = Api::ALL
        .iter()
        .map(|api| {
            let of_api: Vec<Call> = calls
                .iter()
                .filter(|c| c.api == api.name())
                .cloned()
                .collect();
            let value = json!({
                "calls": of_api.len(),
                "max_calls_per_window": max_calls_in_window(&of_api, window),
            });
            (api.name().to_string(), value)
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "calls": calls.len(),
            "by_status": by_status,
            "by_api": by_api,
            "max_calls_per_window": max_calls_in_window(&calls, window),
            "iam_tokens_issued": stats.iam_tokens_issued,
            "metadata_session_tokens_issued": stats.metadata_session_tokens_issued,
            "metadata_credentials_issued": stats.metadata_credentials_issued,
            "project_lookups": stats.project_lookups,
            "auth_project_lookups": stats.auth_project_lookups,
            "auth_failures": stats.auth_failures,
            "lockouts": stats.lockouts,
        }),
    )
}

/// `POST /_sim/faults` with a [`Faults`] JSON body.
pub(super) async fn faults_endpoint(State(sim): State<Simulator>, body: Bytes) -> Response {
    match serde_json::from_slice::<Faults>(&body) {
        Ok(faults) if valid_rates(&faults) => {
            sim.set_faults(faults.clone());
            json_response(StatusCode::OK, &faults)
        }
        Ok(_) => control_error("rates must be between 0 and 1"),
        Err(error) => control_error(error),
    }
}

/// `POST /_sim/images` with a JSON array of [`SimImage`].
pub(super) async fn images_endpoint(State(sim): State<Simulator>, body: Bytes) -> Response {
    match serde_json::from_slice::<Vec<SimImage>>(&body) {
        Ok(images) => {
            let added = images.len();
            let total = sim.modify_images(|rows| {
                for image in images {
                    insert_row(rows, image);
                }
                rows.len()
            });
            json_response(StatusCode::OK, &json!({"added": added, "total": total}))
        }
        Err(error) => control_error(error),
    }
}

/// `POST /_sim/malicious`.
pub(super) async fn malicious_endpoint(State(sim): State<Simulator>, body: Bytes) -> Response {
    match serde_json::from_slice::<MaliciousImage>(&body) {
        Ok(image) => json_response(StatusCode::OK, &sim.mark_malicious(&image)),
        Err(error) => control_error(error),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::Quota;
    use axum::body::Body;
    use axum::http::Request;

    #[tokio::test]
    async fn control_endpoints_change_data_and_faults() {
        let sim = sim_with(100, Some(Quota::DOCUMENTED));
        // Mark an existing row malicious.
        let row = sim
            .images()
            .into_iter()
            .find(|r| r.image_type == "private_image" && r.enterprise_project_id == "0")
            .unwrap();
        let body = json!({
            "namespace": row.namespace,
            "image_name": row.image_name,
            "image_version": row.image_version,
            "malicious_file_num": 7,
        })
        .to_string();
        let reply = send(&sim, post_json("/_sim/malicious", &body)).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json()["id"], row.id);
        assert_eq!(reply.json()["malicious_file_num"], 7);
        // A new row when none matches.
        let body = r#"{"namespace":"new-ns","image_name":"evil","image_version":"1.0",
            "malicious_file_num":2,"image_type":"shared_image","enterprise_project_id":"ep-x"}"#;
        let reply = send(&sim, post_json("/_sim/malicious", body)).await;
        let new_id = reply.json()["id"].as_u64().unwrap();
        assert!(new_id > row.id);
        let found = list(
            &sim,
            "image_type=shared_image&enterprise_project_id=ep-x&has_malicious_file=true",
        )
        .await;
        assert_eq!(found.ids(), vec![new_id]);
        assert_eq!(found.json()["data_list"][0]["scan_status"], "success");
        let bad = send(&sim, post_json("/_sim/malicious", r#"{"namespace":"x"}"#)).await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);

        // Add rows, replacing by id.
        let images = json!([
            {"id": row.id, "namespace": "moved", "image_name": "n", "image_version": "v",
             "image_type": "private_image", "enterprise_project_id": "0"},
            {"id": 5_000_000, "namespace": "moved", "image_name": "m", "image_version": "v",
             "image_type": "private_image", "enterprise_project_id": "0"}
        ])
        .to_string();
        let reply = send(&sim, post_json("/_sim/images", &images)).await;
        assert_eq!(reply.json()["added"], 2);
        assert_eq!(reply.json()["total"], 102);
        let moved = list(&sim, "image_type=private_image&namespace=moved").await;
        assert_eq!(moved.ids(), vec![row.id, 5_000_000]);

        // Faults.
        let reply = send(&sim, post_json("/_sim/faults", r#"{"fail_rate": 1.0}"#)).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            list(&sim, "image_type=private_image").await.status.as_u16(),
            500
        );
        let reply = send(&sim, post_json("/_sim/faults", r#"{"fail_rate": 2}"#)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        let reply = send(&sim, post_json("/_sim/faults", r#"{"nonsense": 1}"#)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.error_code(), "SIM.0001");

        // Stats: 3 listing calls (200, 200, 500) so far, then quota refusals.
        for _ in 0..5 {
            list(&sim, "image_type=private_image").await;
        }
        let stats = send(
            &sim,
            Request::get("/_sim/stats").body(Body::empty()).unwrap(),
        )
        .await;
        let stats = stats.json();
        assert_eq!(stats["calls"], 8);
        assert_eq!(stats["by_status"]["200"], 2);
        assert_eq!(stats["by_status"]["500"], 3);
        assert_eq!(stats["by_status"]["429"], 3);
        assert_eq!(stats["max_calls_per_window"], 8);
    }
}
