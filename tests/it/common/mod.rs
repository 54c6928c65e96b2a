//! Shared helpers of the integration tests: a simulator and an exporter on
//! loopback ports, and a small parser of the Prometheus text format.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hss_swr_exporter::app::Exporter;
use hss_swr_exporter::config::Config;
use hss_swr_exporter::simulator::{SimConfig, SimImage, Simulator};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const AK: &str = "TESTACCESSKEY";
pub const SK: &str = "test-secret-key-do-not-log";
pub const PROJECT: &str = "0123456789abcdef0123456789abcdef";

/// A simulator serving on a loopback port until dropped.
pub struct RunningSimulator {
    pub sim: Simulator,
    pub endpoint: String,
    stop: CancellationToken,
}

impl Drop for RunningSimulator {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub async fn start_simulator(config: SimConfig) -> RunningSimulator {
    let sim = Simulator::new(SimConfig {
        credentials: vec![(AK.to_string(), SK.to_string())],
        ..config
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(sim.clone().serve(listener, stop.clone().cancelled_owned()));
    RunningSimulator {
        sim,
        endpoint,
        stop,
    }
}

/// A simulator config with fixed data and no quota.
pub fn sim_config(images: usize, namespaces: usize) -> SimConfig {
    SimConfig {
        seed: 7,
        images,
        namespaces,
        quota: None,
        base_time_ms: 1_760_000_000_000,
        ..SimConfig::default()
    }
}

/// A configuration YAML for one target at `endpoint`, with AK/SK credentials.
pub fn config_yaml(endpoint: &str, extra: &str, target_extra: &str) -> String {
    let mut base = String::new();
    for (key, value) in [
        ("api_rate_limit", "1000/1s"),
        ("request_timeout", "5s"),
        ("max_retries", "2"),
    ] {
        if !extra.contains(&format!("{key}:")) {
            base.push_str(&format!("{key}: {value}\n"));
        }
    }
    format!(
        "{base}{extra}
credentials:
  access_key: {AK}
  secret_key: {SK}
targets:
  - name: test
    region: cn-north-4
    project_id: {PROJECT}
    endpoint: {endpoint}
{target_extra}"
    )
}

pub fn parse_config(yaml: &str) -> Config {
    Config::parse(yaml, Path::new("/tmp/test-config.yml"), &|_| None)
        .unwrap_or_else(|e| panic!("config refused: {e}\n{yaml}"))
}

/// Runs every lane once and returns the exporter and its exposition.
pub async fn once(yaml: &str) -> (Exporter, bool, Exposition) {
    let exporter = Exporter::new(parse_config(yaml)).unwrap();
    let ok = exporter.run_once().await;
    let text = exporter.metrics().render();
    (exporter, ok, Exposition::parse(&text))
}

/// One sample of an exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// Parses the text format strictly enough for tests: every line is a
    /// comment or `name{labels} value`, label values with `\\`, `\"`, `\n`.
    pub fn parse(text: &str) -> Self {
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            assert!(!line.is_empty(), "empty line in exposition");
            let (name, rest) = match line.find(['{', ' ']) {
                Some(i) => line.split_at(i),
                None => panic!("bad line {line:?}"),
            };
            let mut labels = BTreeMap::new();
            let mut rest = rest;
            if let Some(body) = rest.strip_prefix('{') {
                let mut chars = body.char_indices().peekable();
                let end;
                loop {
                    // label name
                    let start = chars.peek().map(|(i, _)| *i).unwrap();
                    let mut eq = None;
                    for (i, c) in chars.by_ref() {
                        if c == '=' {
                            eq = Some(i);
                            break;
                        }
                    }
                    let eq = eq.expect("label without =");
                    let key = body[start..eq].trim_start_matches(',').to_string();
                    assert_eq!(
                        chars.next().map(|(_, c)| c),
                        Some('"'),
                        "label value must be quoted: {line}"
                    );
                    let mut value = String::new();
                    loop {
                        match chars.next().expect("unterminated label value") {
                            (_, '\\') => match chars.next().expect("dangling escape").1 {
                                'n' => value.push('\n'),
                                '\\' => value.push('\\'),
                                '"' => value.push('"'),
                                other => panic!("bad escape \\{other} in {line}"),
                            },
                            (_, '"') => break,
                            (_, c) => value.push(c),
                        }
                    }
                    labels.insert(key, value);
                    match chars.next() {
                        Some((_, ',')) => {
                            if let Some((i, '}')) = chars.peek().copied() {
                                end = Some(i);
                                break;
                            }
                        }
                        Some((i, '}')) => {
                            end = Some(i);
                            break;
                        }
                        other => panic!("unexpected {other:?} in {line}"),
                    }
                }
                rest = &body[end.unwrap() + 1..];
            }
            let value_text = rest.trim();
            let value = match value_text {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                "NaN" => f64::NAN,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            samples.push(Sample {
                name: name.to_string(),
                labels,
                value,
            });
        }
        Self {
            text: text.to_string(),
            samples,
        }
    }

    /// Samples of `name` whose labels include every pair of `labels`.
    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The single value of `name` with `labels`; panics when not exactly one.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found = self.find(name, labels);
        assert_eq!(
            found.len(),
            1,
            "expected one {name} {labels:?}, found {found:?}"
        );
        found[0].value
    }

    /// Sum over the samples of `name` with `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels).iter().map(|s| s.value).sum()
    }
}

/// Per-namespace figures computed straight from simulator rows: what the
/// exporter must publish for one scope.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Expected {
    pub images: u64,
    pub by_status: BTreeMap<String, u64>,
    pub vulnerabilities: u64,
    pub malicious_files: u64,
    pub unsafe_settings: u64,
    pub vulnerable_images: u64,
    pub malicious_images: u64,
    pub unsafe_images: u64,
    pub failures: BTreeMap<String, u64>,
    pub oldest_scan_ms: Option<i64>,
}

/// Groups `images` of one scope by (instance_name, namespace).
pub fn expected(
    images: &[SimImage],
    image_type: &str,
    ep: &str,
) -> BTreeMap<(String, String), Expected> {
    let mut out: BTreeMap<(String, String), Expected> = BTreeMap::new();
    for image in images {
        if image.image_type != image_type
            || (ep != "all_granted_eps" && image.enterprise_project_id != ep)
        {
            continue;
        }
        let e = out
            .entry((image.instance_name.clone(), image.namespace.clone()))
            .or_default();
        e.images += 1;
        *e.by_status.entry(image.scan_status.clone()).or_default() += 1;
        e.vulnerabilities += image.vul_num as u64;
        e.malicious_files += image.malicious_file_num as u64;
        e.unsafe_settings += image.unsafe_setting_num as u64;
        e.vulnerable_images += u64::from(image.vul_num > 0);
        e.malicious_images += u64::from(image.malicious_file_num > 0);
        e.unsafe_images += u64::from(image.unsafe_setting_num > 0);
        if !image.scan_failed_desc.is_empty() {
            *e.failures
                .entry(image.scan_failed_desc.clone())
                .or_default() += 1;
        }
        if image.latest_scan_time > 0 {
            e.oldest_scan_ms = Some(
                e.oldest_scan_ms
                    .map_or(image.latest_scan_time, |o| o.min(image.latest_scan_time)),
            );
        }
    }
    out
}

/// Asserts that the exposition holds exactly `expected` for one scope.
pub fn assert_scope_matches(
    exposition: &Exposition,
    target: &str,
    ep: &str,
    image_type: &str,
    expected: &BTreeMap<(String, String), Expected>,
) {
    let scope = [
        ("target", target),
        ("enterprise_project_id", ep),
        ("image_type", image_type),
    ];
    let published: std::collections::BTreeSet<(String, String)> = exposition
        .find("hss_swr_vulnerabilities", &scope)
        .iter()
        .map(|s| {
            (
                s.labels["instance_name"].clone(),
                s.labels["namespace"].clone(),
            )
        })
        .collect();
    let wanted: std::collections::BTreeSet<(String, String)> = expected.keys().cloned().collect();
    assert_eq!(
        published, wanted,
        "namespaces of {target}/{ep}/{image_type}"
    );
    for ((instance, namespace), e) in expected {
        let mut labels = scope.to_vec();
        labels.push(("instance_name", instance));
        labels.push(("namespace", namespace));
        let v = |name: &str| exposition.value(name, &labels);
        assert_eq!(
            v("hss_swr_vulnerabilities"),
            e.vulnerabilities as f64,
            "{namespace}"
        );
        assert_eq!(
            v("hss_swr_malicious_files"),
            e.malicious_files as f64,
            "{namespace}"
        );
        assert_eq!(
            v("hss_swr_unsafe_settings"),
            e.unsafe_settings as f64,
            "{namespace}"
        );
        assert_eq!(
            v("hss_swr_vulnerable_images"),
            e.vulnerable_images as f64,
            "{namespace}"
        );
        assert_eq!(
            v("hss_swr_malicious_images"),
            e.malicious_images as f64,
            "{namespace}"
        );
        assert_eq!(
            v("hss_swr_unsafe_images"),
            e.unsafe_images as f64,
            "{namespace}"
        );
        assert_eq!(
            exposition.sum("hss_swr_images", &labels),
            e.images as f64,
            "{namespace}"
        );
        for (status, count) in &e.by_status {
            let mut l = labels.clone();
            l.push(("scan_status", status));
            assert_eq!(
                exposition.value("hss_swr_images", &l),
                *count as f64,
                "{namespace} {status}"
            );
        }
        for status in [
            "unscan",
            "success",
            "scanning",
            "failed",
            "download_failed",
            "image_oversized",
            "waiting_for_scan",
        ] {
            let mut l = labels.clone();
            l.push(("scan_status", status));
            assert_eq!(
                exposition.find("hss_swr_images", &l).len(),
                1,
                "{namespace}: status {status} present"
            );
        }
        assert_eq!(
            exposition.sum("hss_swr_scan_failures", &labels),
            e.failures.values().sum::<u64>() as f64
        );
        for (reason, count) in &e.failures {
            let mut l = labels.clone();
            l.push(("reason", reason));
            assert_eq!(
                exposition.value("hss_swr_scan_failures", &l),
                *count as f64,
                "{namespace} {reason}"
            );
        }
        match e.oldest_scan_ms {
            Some(ms) => assert_eq!(
                v("hss_swr_oldest_scan_timestamp_seconds"),
                ms as f64 / 1000.0
            ),
            None => assert!(
                exposition
                    .find("hss_swr_oldest_scan_timestamp_seconds", &labels)
                    .is_empty()
            ),
        }
    }
}

/// Whether every lane of every scope has finished a run (readiness needs
/// only one lane per scope).
pub fn all_lanes_ran(scopes: &hss_swr_exporter::collect::ScopeSet) -> bool {
    scopes
        .list()
        .iter()
        .all(|s| s.lanes().iter().all(|lane| s.lane_status(*lane).runs > 0))
}

/// Asserts that one scope of target `test` under `all_granted_eps` holds
/// exactly what the simulator holds for `image_type`.
pub fn assert_matches_simulator(exposition: &Exposition, sim: &Simulator, image_type: &str) {
    let want = expected(&sim.images(), image_type, "all_granted_eps");
    assert_scope_matches(exposition, "test", "all_granted_eps", image_type, &want);
}

/// Waits (up to a generous bound) until `check` holds.
pub async fn eventually<F: FnMut() -> bool>(what: &str, mut check: F) {
    for _ in 0..600 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for: {what}");
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// An exporter daemon (lanes and web server) on a loopback port.
pub struct RunningExporter {
    pub url: String,
    pub scopes: Arc<hss_swr_exporter::collect::ScopeSet>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningExporter {
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

impl Drop for RunningExporter {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub async fn start_exporter(yaml: &str) -> RunningExporter {
    start_exporter_from(parse_config(yaml), None).await
}

/// Timing bases for tests: retries back off tens of milliseconds instead of
/// seconds; credentials are fetched again with `refresh_floor` of their
/// lifetime left (the daemon's own margins otherwise).
pub fn fast_timing(refresh_floor: Duration) -> hss_swr_exporter::app::Timing {
    hss_swr_exporter::app::Timing {
        retry_base: Duration::from_millis(20),
        retry_cap: Duration::from_millis(500),
        credential_refresh_floor: refresh_floor,
    }
}

/// [`start_exporter`] with other timing bases than the daemon's.
pub async fn start_exporter_timed(
    yaml: &str,
    timing: hss_swr_exporter::app::Timing,
) -> RunningExporter {
    let exporter = Exporter::with_timing(parse_config(yaml), timing).unwrap();
    start_daemon(exporter, None).await
}

/// A daemon whose configuration comes from `path`, so it can be reloaded.
pub async fn start_exporter_with_file(path: &Path) -> RunningExporter {
    let config = Config::load(path).unwrap();
    start_exporter_from(config, Some(path.to_path_buf())).await
}

async fn start_exporter_from(config: Config, path: Option<std::path::PathBuf>) -> RunningExporter {
    start_daemon(Exporter::new(config).unwrap(), path).await
}

async fn start_daemon(exporter: Exporter, path: Option<std::path::PathBuf>) -> RunningExporter {
    let scopes = exporter.scopes();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let shutdown = stop.clone().cancelled_owned();
    let task = tokio::spawn(async move {
        hss_swr_exporter::app::run_daemon(exporter, listener, "/metrics", path, None, shutdown)
            .await
            .unwrap();
    });
    RunningExporter {
        url,
        scopes,
        stop,
        task: Some(task),
    }
}

pub async fn scrape(url: &str) -> Exposition {
    let text = http()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    Exposition::parse(&text)
}

/// A daemon started with `options` (lifecycle APIs, server limits, the
/// configuration file to reload); its configuration is `config`.
pub async fn start_exporter_with_options(
    config: Config,
    options: hss_swr_exporter::app::DaemonOptions,
) -> RunningExporter {
    let exporter = Exporter::new(config).unwrap();
    let scopes = exporter.scopes();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let shutdown = stop.clone().cancelled_owned();
    let task = tokio::spawn(async move {
        hss_swr_exporter::app::run_daemon_with(exporter, listener, options, shutdown)
            .await
            .unwrap();
    });
    RunningExporter {
        url,
        scopes,
        stop,
        task: Some(task),
    }
}

/// A reloadable daemon (configuration from `path`) with
/// `--web.enable-lifecycle`.
pub async fn start_exporter_with_lifecycle(path: &Path) -> RunningExporter {
    let options = hss_swr_exporter::app::DaemonOptions {
        config_path: Some(path.to_path_buf()),
        enable_lifecycle: true,
        ..hss_swr_exporter::app::DaemonOptions::new("/metrics")
    };
    start_exporter_with_options(Config::load(path).unwrap(), options).await
}
