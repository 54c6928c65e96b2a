//! The exporter against the simulator where the official SDKs set the bar:
//! wrong credentials never reach the lockout (one failed authentication per
//! hold, whatever the number of scopes), restarts draw no 429 of the
//! exporter's own making, the project id comes without extra permissions,
//! redirects are not followed, and errors carry the gateway's request id.

use std::time::Duration;

use crate::common::*;
use hss_swr_exporter::app::Exporter;
use hss_swr_exporter::collect::Lane;
use hss_swr_exporter::simulator::{IamUser, Quota, Scripted};

const DOMAIN: &str = "acme";
const USER: &str = "exporter";
const PASSWORD: &str = "right-password";

/// Nine scopes (three enterprise projects x three image types), no
/// `project_id`, with `credentials`.
fn nine_scopes(endpoint: &str, credentials: &str, extra: &str) -> String {
    format!(
        "api_rate_limit: 1000/1s
request_timeout: 5s
{extra}
targets:
  - name: test
    region: cn-north-4
    endpoint: {endpoint}
    iam_endpoint: {endpoint}
    enterprise_project_ids: [all_granted_eps, ep-a, ep-b]
    credentials: {credentials}
"
    )
}

fn every_lane_error(exporter: &Exporter) -> Vec<String> {
    exporter
        .scopes()
        .list()
        .iter()
        .flat_map(|scope| {
            // The changes lane makes no call before a first complete sweep.
            assert_eq!(
                scope
                    .lane_status(hss_swr_exporter::collect::Lane::Changes)
                    .runs,
                0
            );
            scope
                .lanes()
                .iter()
                .filter(|lane| **lane != hss_swr_exporter::collect::Lane::Changes)
                .map(|lane| scope.lane_status(*lane).last_error.unwrap_or_default())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn assert_all_held(exporter: &Exporter) {
    let errors = every_lane_error(exporter);
    assert_eq!(errors.len(), 18, "{errors:?}");
    for error in errors {
        assert!(
            error.contains("authentication failed, held until "),
            "{error}"
        );
    }
}

#[tokio::test]
async fn a_wrong_secret_key_costs_one_failed_authentication_per_hold() {
    let sim = start_simulator(sim_config(300, 3)).await;
    let yaml = nine_scopes(
        &sim.endpoint,
        &format!("{{access_key: {AK}, secret_key: not-the-secret}}"),
        "",
    );
    let (exporter, ok, exposition) = once(&yaml).await;
    assert!(!ok);
    assert_all_held(&exporter);
    // Every lane of every scope again: the hold answers, nothing is sent.
    assert!(!exporter.run_once().await);
    assert!(!exporter.run_once().await);
    let stats = sim.sim.stats();
    assert_eq!(stats.auth_failures, 1, "one failed project lookup in all");
    assert_eq!(stats.lockouts, 0);
    assert!(stats.calls.is_empty(), "no listing call without a project");
    assert!(!exposition.text.contains("not-the-secret"));
    for scope in ["all_granted_eps", "ep-a", "ep-b"] {
        assert_eq!(
            exposition.value(
                "hss_swr_up",
                &[
                    ("enterprise_project_id", scope),
                    ("image_type", "private_image"),
                    ("lane", "sweep")
                ]
            ),
            0.0
        );
    }
}

#[tokio::test]
async fn a_wrong_key_with_a_project_id_costs_one_listing_401() {
    let sim = start_simulator(sim_config(300, 3)).await;
    let yaml = nine_scopes(
        &sim.endpoint,
        &format!("{{access_key: {AK}, secret_key: not-the-secret}}"),
        "",
    )
    .replace(
        "    region: cn-north-4\n",
        &format!("    region: cn-north-4\n    project_id: {PROJECT}\n"),
    );
    let (exporter, ok, _) = once(&yaml).await;
    assert!(!ok);
    assert_all_held(&exporter);
    assert!(!exporter.run_once().await);
    let stats = sim.sim.stats();
    assert_eq!(stats.count_status(401), 1, "{:?}", stats.calls);
    assert_eq!((stats.auth_failures, stats.lockouts), (1, 0));
}

#[tokio::test]
async fn a_reload_with_the_right_key_ends_the_hold() {
    let sim = start_simulator(sim_config(300, 3)).await;
    let wrong = nine_scopes(
        &sim.endpoint,
        &format!("{{access_key: {AK}, secret_key: not-the-secret}}"),
        "",
    );
    let (mut exporter, ok, _) = once(&wrong).await;
    assert!(!ok);
    assert_all_held(&exporter);
    let right = wrong.replace("not-the-secret", SK);
    exporter.apply(parse_config(&right)).await.unwrap();
    assert!(
        exporter.run_once().await,
        "{:?}",
        every_lane_error(&exporter)
    );
    let stats = sim.sim.stats();
    assert_eq!((stats.auth_failures, stats.lockouts), (1, 0));
}

#[tokio::test]
async fn a_wrong_iam_password_costs_one_failed_login_while_the_daemon_runs() {
    let sim = start_simulator(SimConfig {
        iam_users: vec![IamUser::new(DOMAIN, USER, PASSWORD)],
        ..sim_config(300, 3)
    })
    .await;
    let yaml = nine_scopes(
        &sim.endpoint,
        &format!("{{iam: {{domain_name: {DOMAIN}, user_name: {USER}, password: typo}}}}"),
        "malicious_interval: 50ms\npoll_interval: 50ms\n",
    );
    let exporter = start_exporter(&yaml).await;
    let status_url = format!("{}/status", exporter.url);
    // Every lane has run several times: each lane run has been refused.
    let mut runs = 0;
    for _ in 0..600 {
        let status: serde_json::Value = http()
            .get(&status_url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        runs = status["scopes"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["lanes"].as_array().unwrap().clone())
            // The changes lane makes no call before a first complete sweep.
            .filter(|l| l["lane"] != "changes")
            .map(|l| l["runs"].as_u64().unwrap_or(0))
            .min()
            .unwrap_or(0);
        if runs >= 3 {
            let text = status.to_string();
            assert!(text.contains("authentication failed, held until"), "{text}");
            assert!(!text.contains("typo"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(runs >= 3, "every lane ran at least three times");
    exporter.stop().await;
    let stats = sim.sim.stats();
    assert_eq!(stats.auth_failures, 1, "one refused password in all");
    assert_eq!(stats.lockouts, 0);
    assert_eq!(stats.iam_tokens_issued, 0);
    assert!(stats.calls.is_empty());
}

#[tokio::test]
async fn the_user_is_locked_after_more_than_five_wrong_passwords_in_a_row() {
    // The simulator's lockout itself, which the tests above rely on.
    let sim = start_simulator(SimConfig {
        iam_users: vec![IamUser::new(DOMAIN, USER, PASSWORD)],
        ..sim_config(10, 1)
    })
    .await;
    let body = |password: &str| {
        serde_json::json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": USER, "password": password, "domain": {"name": DOMAIN}}}},
            "scope": {"project": {"name": "cn-north-4"}}}})
        .to_string()
    };
    let url = format!("{}/v3/auth/tokens", sim.endpoint);
    for _ in 0..6 {
        let answer = http().post(&url).body(body("wrong")).send().await.unwrap();
        assert_eq!(answer.status(), 401);
    }
    let answer = http().post(&url).body(body(PASSWORD)).send().await.unwrap();
    assert_eq!(
        answer.status(),
        401,
        "locked: even the right password fails"
    );
    assert!(answer.text().await.unwrap().contains("locked"));
    let stats = sim.sim.stats();
    assert_eq!((stats.auth_failures, stats.lockouts), (6, 1));
}

#[tokio::test]
async fn a_token_file_finds_its_project_without_the_list_permission() {
    let token = "static-token-for-parity";
    let sim = start_simulator(SimConfig {
        tokens: vec![token.to_string()],
        ..sim_config(300, 3)
    })
    .await;
    let dir = tempdir();
    let path = dir.join("token");
    std::fs::write(&path, token).unwrap();
    let yaml = nine_scopes(
        &sim.endpoint,
        &format!("{{token_file: {}}}", path.display()),
        "",
    );
    let (_, ok, exposition) = once(&yaml).await;
    assert!(ok);
    assert_matches_simulator(&exposition, &sim.sim, "private_image");
    let stats = sim.sim.stats();
    assert_eq!(stats.auth_project_lookups, 1, "GET /v3/auth/projects, once");
    assert_eq!(stats.project_lookups, 0, "never GET /v3/projects");
}

/// A configuration on a scaled quota (5 calls a second) with a state file.
fn quota_yaml(endpoint: &str, state_file: Option<&std::path::Path>) -> String {
    let state = state_file.map_or_else(String::new, |p| format!("state_file: {}\n", p.display()));
    config_yaml(
        endpoint,
        &format!("api_rate_limit: 5/1s\nconcurrency: 4\n{state}"),
        "    image_types: [private_image]\n",
    )
}

async fn restart_loop(state_file: Option<&std::path::Path>, restarts: usize) -> (usize, usize) {
    let sim = start_simulator(SimConfig {
        quota: Some(Quota {
            calls: 5,
            window: Duration::from_secs(1),
        }),
        ..sim_config(700, 4)
    })
    .await;
    let yaml = quota_yaml(&sim.endpoint, state_file);
    for _ in 0..restarts {
        // Each process: the malicious lane and a four-page sweep, then a
        // graceful stop; the next one starts at once.
        let exporter = Exporter::new(parse_config(&yaml)).unwrap();
        assert!(exporter.run_once().await);
        exporter.persist().await;
    }
    let stats = sim.sim.stats();
    (stats.count_status(429), stats.calls.len())
}

#[tokio::test]
async fn restarts_with_a_state_file_draw_no_429() {
    let dir = tempdir();
    // Three calls a process (the malicious lane, two sweep pages), five
    // allowed a second: every process starts inside its predecessor's window.
    let (throttled, calls) = restart_loop(Some(&dir.join("state.json")), 6).await;
    assert_eq!(throttled, 0, "{calls} calls");
    assert_eq!(calls, 18);
}

#[tokio::test]
async fn restarts_without_a_state_file_draw_at_most_one_429_each() {
    let (throttled, calls) = restart_loop(None, 6).await;
    assert!(throttled <= 6, "{throttled} 429s in {calls} calls");
}

/// The sweep lane's error after one run whose first call gets `scripted`.
async fn sweep_error_after(sim: &RunningSimulator, scripted: Scripted) -> String {
    sim.sim.fail_next(vec![scripted]);
    let yaml = config_yaml(
        &sim.endpoint,
        "max_retries: 0\nmalicious_interval: 0s\n",
        "    image_types: [private_image]\n",
    );
    let (exporter, ok, _) = once(&yaml).await;
    assert!(!ok);
    exporter.scopes().list()[0]
        .lane_status(Lane::Sweep)
        .last_error
        .unwrap()
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_the_error_names_it() {
    let sim = start_simulator(sim_config(300, 3)).await;
    let elsewhere = start_simulator(sim_config(10, 1)).await;
    let location = format!("{}/steal", elsewhere.endpoint);
    let error = sweep_error_after(&sim, Scripted::Redirect(location)).await;
    assert!(
        error.contains("HTTP 302 redirect to 127.0.0.1 not followed"),
        "{error}"
    );
    assert!(
        elsewhere.sim.stats().calls.is_empty(),
        "nothing reached the other host"
    );
}

#[tokio::test]
async fn api_errors_carry_the_request_id() {
    let sim = start_simulator(sim_config(300, 3)).await;
    let error = sweep_error_after(&sim, Scripted::Status(403)).await;
    assert!(error.contains("HTTP 403"), "{error}");
    let id = error
        .split("(request id ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no request id in {error}"));
    assert_eq!(id.len(), 32, "{error}");
}

use hss_swr_exporter::simulator::SimConfig;

/// A fresh directory under the system's temporary directory.
fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "hss-parity-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
