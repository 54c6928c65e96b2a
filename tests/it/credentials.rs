//! Every credential kind end to end against the simulator: AK/SK (in
//! tests/exporter.rs), static tokens, IAM password tokens with project lookup
//! and refresh, metadata-service credentials; and the reload of the
//! configuration.

use std::time::Duration;

use crate::common::*;
use hss_swr_exporter::simulator::{IamUser, SimConfig, SimProject};

const DOMAIN: &str = "acme";
const USER: &str = "exporter";
const PASSWORD: &str = "iam-password-never-logged";

fn iam_sim(config: SimConfig) -> SimConfig {
    SimConfig {
        iam_users: vec![IamUser::new(DOMAIN, USER, PASSWORD)],
        ..config
    }
}

/// One target using `credentials`, with no project_id (looked up through IAM).
fn yaml_with(endpoint: &str, credentials: &str, extra: &str) -> String {
    format!(
        "api_rate_limit: 1000/1s
request_timeout: 5s
{extra}
targets:
  - name: test
    region: cn-north-4
    endpoint: {endpoint}
    iam_endpoint: {endpoint}
    image_types: [private_image]
    credentials: {credentials}
"
    )
}

fn iam_credentials() -> String {
    format!("{{iam: {{domain_name: {DOMAIN}, user_name: {USER}, password: {PASSWORD}}}}}")
}

#[tokio::test]
async fn iam_tokens_and_project_lookup_work_end_to_end() {
    let sim = start_simulator(iam_sim(sim_config(900, 4))).await;
    let yaml = yaml_with(&sim.endpoint, &iam_credentials(), "");
    let (exporter, ok, exposition) = once(&yaml).await;
    assert!(ok);
    assert_matches_simulator(&exposition, &sim.sim, "private_image");
    let stats = sim.sim.stats();
    assert_eq!(stats.iam_tokens_issued, 1, "one token serves every call");
    assert_eq!(
        stats.project_lookups + stats.auth_project_lookups,
        0,
        "the token's body names the project: no lookup, no extra permission"
    );
    assert!(stats.calls.iter().all(|c| c.status == 200));
    // Both lanes ran against the token's project.
    assert!(exporter.run_once().await);
    let stats = sim.sim.stats();
    assert_eq!((stats.iam_tokens_issued, stats.project_lookups), (1, 0));
}

#[tokio::test]
async fn a_wrong_iam_password_fails_the_lanes_with_the_reason() {
    let sim = start_simulator(iam_sim(sim_config(100, 2))).await;
    let yaml = yaml_with(
        &sim.endpoint,
        &format!(
            "{{iam: {{domain_name: {DOMAIN}, user_name: {USER}, password: not-the-password}}}}"
        ),
        "",
    );
    let (exporter, ok, exposition) = once(&yaml).await;
    assert!(!ok);
    let error = exporter.scopes().list()[0]
        .lane_status(hss_swr_exporter::collect::Lane::Sweep)
        .last_error
        .unwrap();
    assert!(
        error.contains("IAM refused the credentials: HTTP 401 for user exporter"),
        "{error}"
    );
    assert!(!error.contains("not-the-password"));
    assert!(!exposition.text.contains("not-the-password"));
    assert!(
        sim.sim.stats().calls.is_empty(),
        "no listing call without a token"
    );
}

#[tokio::test]
async fn a_token_is_refreshed_before_it_expires() {
    let mut config = iam_sim(sim_config(300, 3));
    // Tokens live 1 s and are fetched again with 700 ms of it left: a new
    // one every 300 ms, each with ample time for the calls it signs.
    config.iam_token_lifetime = Duration::from_secs(1);
    let sim = start_simulator(config).await;
    let yaml = yaml_with(
        &sim.endpoint,
        &iam_credentials(),
        "malicious_interval: 200ms\npoll_interval: 500ms\n",
    );
    let exporter = start_exporter_timed(&yaml, fast_timing(Duration::from_millis(700))).await;
    let sim_handle = sim.sim.clone();
    eventually("two more tokens were fetched, and used", || {
        let stats = sim_handle.stats();
        stats.iam_tokens_issued >= 3 && stats.calls.len() > 6
    })
    .await;
    let stats = sim.sim.stats();
    assert_eq!(
        stats.count_status(401),
        0,
        "tokens are replaced before the API refuses them"
    );
    assert!(stats.calls.len() > 6);
    exporter.stop().await;
}

#[tokio::test]
async fn a_token_revoked_mid_sweep_is_replaced_once() {
    let sim = start_simulator(iam_sim(sim_config(1200, 4))).await;
    let yaml = yaml_with(&sim.endpoint, &iam_credentials(), "malicious_interval: 0\n");
    let exporter = hss_swr_exporter::app::Exporter::new(parse_config(&yaml)).unwrap();
    assert!(exporter.run_once().await);
    // The token dies (as when the user's password changes): the next call
    // gets 401, the credential fetches a new token, and the sweep goes on.
    sim.sim.revoke_iam_tokens();
    assert!(exporter.run_once().await);
    let stats = sim.sim.stats();
    assert_eq!(stats.iam_tokens_issued, 2);
    assert_eq!(
        stats.count_status(401),
        1,
        "one refused call, then the fresh token"
    );
    let exposition = Exposition::parse(&exporter.metrics().render());
    assert_eq!(
        exposition.value("hss_swr_api_retries_total", &[("reason", "unauthorized")]),
        1.0
    );
    assert_matches_simulator(&exposition, &sim.sim, "private_image");
}

#[tokio::test]
async fn project_lookup_needs_exactly_one_match() {
    for (projects, expected_error) in [
        (
            vec![],
            "no project named cn-north-4 is visible to these credentials; set project_id",
        ),
        (
            vec![
                SimProject::new("aaa", "cn-north-4"),
                SimProject::new("bbb", "cn-north-4"),
            ],
            "2 projects are named cn-north-4 (aaa, bbb); set project_id",
        ),
    ] {
        let sim = start_simulator(sim_config(100, 2)).await;
        sim.sim.set_projects(projects);
        let yaml = yaml_with(
            &sim.endpoint,
            &format!("{{access_key: {AK}, secret_key: {SK}}}"),
            "",
        );
        let (exporter, ok, _) = once(&yaml).await;
        assert!(!ok);
        let error = exporter.scopes().list()[0]
            .lane_status(hss_swr_exporter::collect::Lane::Sweep)
            .last_error
            .unwrap();
        assert!(
            error.contains("project_id lookup through IAM for region cn-north-4"),
            "{error}"
        );
        assert!(error.contains(expected_error), "{error}");
        assert!(sim.sim.stats().calls.is_empty());
    }
}

#[tokio::test]
async fn metadata_credentials_sign_with_a_security_token() {
    for requires_session_token in [true, false] {
        let mut config = sim_config(600, 3);
        config.metadata_requires_session_token = requires_session_token;
        let sim = start_simulator(config).await;
        let yaml = yaml_with(
            &sim.endpoint,
            &format!("{{metadata: {{endpoint: '{}'}}}}", sim.endpoint),
            "",
        )
        .replace(
            "    image_types",
            "    project_id: 0123456789abcdef0123456789abcdef\n    image_types",
        );
        let (_, ok, exposition) = once(&yaml).await;
        assert!(ok, "session token required: {requires_session_token}");
        assert_matches_simulator(&exposition, &sim.sim, "private_image");
        let stats = sim.sim.stats();
        assert_eq!(stats.metadata_credentials_issued, 1);
        assert_eq!(
            stats.metadata_session_tokens_issued,
            u64::from(requires_session_token)
        );
    }
}

#[tokio::test]
async fn metadata_credentials_are_refreshed_before_they_expire() {
    let mut config = sim_config(300, 3);
    // Keys live 1 s and are fetched again with 700 ms of it left.
    config.metadata_credential_lifetime = Duration::from_secs(1);
    let sim = start_simulator(config).await;
    let yaml = yaml_with(
        &sim.endpoint,
        &format!("{{metadata: {{endpoint: '{}'}}}}", sim.endpoint),
        "malicious_interval: 200ms\npoll_interval: 500ms\n",
    );
    let exporter = start_exporter_timed(&yaml, fast_timing(Duration::from_millis(700))).await;
    let sim_handle = sim.sim.clone();
    eventually("new temporary credentials were fetched", || {
        sim_handle.stats().metadata_credentials_issued >= 3
    })
    .await;
    assert_eq!(sim.sim.stats().count_status(401), 0);
    exporter.stop().await;
}
