//! Project lookup through IAM, for targets configured without `project_id`.
//!
//! Place in the data flow: called by the client once per target, before its
//! first listing call, when the credential does not know its project itself
//! (an IAM password token carries it in its body). AK/SK credentials use
//! `GET {iam}/v3/projects?name={region}`, as the official SDKs do; a token
//! file uses `GET {iam}/v3/auth/projects`, which needs no IAM permission,
//! filtered by the region name. Either is authorized by the target's own
//! credential. Zero or several matching projects are an error that tells the
//! user to set `project_id`; a 401 is a refusal the client holds on. The
//! answer is read up to [`MAX_AUX_BODY`](super::http::MAX_AUX_BODY) bytes and
//! never followed through a redirect.

use reqwest::Url;
use serde::Deserialize;

use super::auth::{Credential, OutgoingRequest, ProjectSource};
use super::http::{self, request_id_suffix};

/// Why the project id could not be found.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// IAM refused the credentials (401).
    #[error("IAM refused the credentials: {0}")]
    Refused(String),
    /// Anything else: transport, other statuses, no or several projects.
    #[error("{0}")]
    Failed(String),
}

impl LookupError {
    /// Whether the credentials were refused.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Refused(_))
    }
}

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
) -> Result<String, LookupError> {
    let failed = |reason: String| LookupError::Failed(reason);
    let source = credential.project_source();
    let (path, query) = match source {
        ProjectSource::ListProjects => (
            "/v3/projects",
            vec![("name".to_string(), region.to_string())],
        ),
        ProjectSource::AuthProjects => ("/v3/auth/projects", Vec::new()),
    };
    let mut request = OutgoingRequest {
        method: "GET",
        host: super::client::host_header(iam_endpoint),
        path: format!("{}{path}", iam_endpoint.path().trim_end_matches('/')),
        query,
        headers: vec![("Accept".to_string(), "application/json".to_string())],
        body: Vec::new(),
    };
    credential
        .authorize(&mut request)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let mut url = iam_endpoint.clone();
    url.set_path(&request.path);
    let query = super::auth::signer::canonical_query(&request.query);
    url.set_query((!query.is_empty()).then_some(query.as_str()));
    let mut builder = http.get(url.clone());
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let mut response = builder
        .send()
        .await
        .map_err(|e| failed(format!("request failed: {}", http::error_chain(&e))))?;
    let status = response.status().as_u16();
    let request_id = http::request_id(response.headers());
    if let Some(refusal) = http::redirect_refusal(&url, status, response.headers()) {
        return Err(failed(refusal));
    }
    let body = http::read_capped(&mut response, http::MAX_AUX_BODY)
        .await
        .map_err(|e| failed(e.to_string()))?;
    if status != 200 {
        let (code, message) = http::error_details(&body);
        let text = format!(
            "HTTP {status}: {code}: {message}{}",
            request_id_suffix(request_id.as_deref())
        );
        return Err(if status == 401 {
            LookupError::Refused(text)
        } else {
            failed(text)
        });
    }
    let projects: Projects = serde_json::from_slice(&body)
        .map_err(|e| failed(format!("answer is not a project list: {e}")))?;
    let matching: Vec<&Project> = projects
        .projects
        .iter()
        .filter(|p| {
            p.name == region || (source == ProjectSource::ListProjects && p.name.is_empty())
        })
        .collect();
    match matching.as_slice() {
        [one] => Ok(one.id.clone()),
        [] => Err(failed(format!(
            "no project named {region} is visible to these credentials; set project_id"
        ))),
        several => Err(failed(format!(
            "{} projects are named {region} ({}); set project_id to the one to list",
            several.len(),
            several
                .iter()
                .take(10)
                .map(|p| http::cut(&p.id, 64))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}
