//! Project lookup through IAM, for targets configured without `project_id`.
//!
//! Place in the data flow: called by the client once per target, before its
//! first listing call: `GET {iam}/v3/projects?name={region}`, authorized by
//! the target's own credential, as the official SDKs do. Zero or several
//! matching projects are an error that tells the user to set `project_id`.

use reqwest::Url;
use serde::Deserialize;

use super::auth::{Credential, OutgoingRequest};
use super::client::error_details;

#[derive(Deserialize)]
struct Projects {
    #[serde(default)]
    projects: Vec<Project>,
}

#[derive(Deserialize)]
struct Project {
    id: String,
    #[serde(default)]
    name: String,
}

/// Finds the id of the project named `region`.
pub async fn lookup_project_id(
    http: &reqwest::Client,
    iam_endpoint: &Url,
    region: &str,
    credential: &dyn Credential,
) -> Result<String, String> {
    let path = format!("{}/v3/projects", iam_endpoint.path().trim_end_matches('/'));
    let mut request = OutgoingRequest {
        method: "GET",
        host: super::client::host_header(iam_endpoint),
        path,
        query: vec![("name".to_string(), region.to_string())],
        headers: vec![("Accept".to_string(), "application/json".to_string())],
        body: Vec::new(),
    };
    credential
        .authorize(&mut request)
        .await
        .map_err(|e| e.to_string())?;
    let mut url = iam_endpoint.clone();
    url.set_path(&request.path);
    url.set_query(Some(&super::auth::signer::canonical_query(&request.query)));
    let mut builder = http.get(url);
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let response = builder
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("answer unreadable: {e}"))?;
    if status != 200 {
        let (code, message) = error_details(&body);
        return Err(format!("HTTP {status}: {code}: {message}"));
    }
    let projects: Projects =
        serde_json::from_slice(&body).map_err(|e| format!("answer is not a project list: {e}"))?;
    let matching: Vec<&Project> = projects
        .projects
        .iter()
        .filter(|p| p.name.is_empty() || p.name == region)
        .collect();
    match matching.as_slice() {
        [one] => Ok(one.id.clone()),
        [] => Err(format!(
            "no project named {region} is visible to these credentials; set project_id"
        )),
        several => Err(format!(
            "{} projects are named {region} ({}); set project_id to the one to list",
            several.len(),
            several
                .iter()
                .map(|p| p.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}
