//! Hostile or odd upstream data, end to end: the exporter polls a tiny
//! listing server (or the simulator) that answers with pages the API should
//! not send, and what `/metrics` shows is checked. Oversized pages are
//! refused and retried, over-long label values cut to 1 KiB, invalid UTF-8
//! replaced, namespaces capped by `max_namespaces`, pages without
//! `data_list` read as empty, multi-arch images counted once, and failure
//! reasons taken from `scan_failed_code` under the registry-images API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::common::*;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use hss_swr_exporter::simulator::data::{SCAN_FAILED_CODES, SCAN_FAILED_DESCS};
use hss_swr_exporter::simulator::{EmptyDataList, Faults};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// One call the tiny server received.
#[derive(Debug, Clone, PartialEq)]
struct Asked {
    offset: u64,
    limit: u64,
    malicious_only: bool,
    /// Which call this is, from 0.
    n: usize,
}

type Answer = Arc<dyn Fn(&Asked) -> Vec<u8> + Send + Sync>;

#[derive(Clone)]
struct Tiny {
    answer: Answer,
    calls: Arc<Mutex<Vec<Asked>>>,
}

/// A listing server on a loopback port that answers every GET with
/// `answer`'s bytes and status 200, whatever the path and credentials.
struct TinyServer {
    endpoint: String,
    calls: Arc<Mutex<Vec<Asked>>>,
    stop: CancellationToken,
}

impl Drop for TinyServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl TinyServer {
    async fn start(answer: impl Fn(&Asked) -> Vec<u8> + Send + Sync + 'static) -> Self {
        async fn handle(
            State(tiny): State<Tiny>,
            Query(params): Query<HashMap<String, String>>,
        ) -> Response {
            let number = |key: &str, default: u64| {
                params
                    .get(key)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(default)
            };
            let asked = {
                let mut calls = tiny.calls.lock().unwrap();
                let asked = Asked {
                    offset: number("offset", 0),
                    limit: number("limit", 10),
                    malicious_only: params.get("has_malicious_file").map(String::as_str)
                        == Some("true"),
                    n: calls.len(),
                };
                calls.push(asked.clone());
                asked
            };
            let body = (tiny.answer)(&asked);
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response()
        }
        let calls = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new().fallback(handle).with_state(Tiny {
            answer: Arc::new(answer),
            calls: Arc::clone(&calls),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let shutdown = stop.clone().cancelled_owned();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
                .unwrap();
        });
        Self {
            endpoint,
            calls,
            stop,
        }
    }

    fn calls(&self) -> Vec<Asked> {
        self.calls.lock().unwrap().clone()
    }
}

/// A row with a namespace, an id and counts.
fn row(id: u64, namespace: &str, vul: u64, malicious: u64) -> Value {
    json!({
        "id": id,
        "namespace": namespace,
        "image_name": format!("img-{id}"),
        "image_version": "1.0",
        "image_digest": format!("sha256:{id:064x}"),
        "scan_status": "success",
        "vul_num": vul,
        "malicious_file_num": malicious,
        "unsafe_setting_num": 0,
        "latest_scan_time": 1_760_000_000_000_i64,
    })
}

/// The page of `rows` that `asked` asks for (honouring
/// `has_malicious_file=true`).
fn page_of(rows: &[Value], asked: &Asked) -> Vec<u8> {
    let rows: Vec<&Value> = rows
        .iter()
        .filter(|r| !asked.malicious_only || r["malicious_file_num"].as_u64() > Some(0))
        .collect();
    let page: Vec<&Value> = rows
        .iter()
        .skip(asked.offset as usize)
        .take(asked.limit as usize)
        .copied()
        .collect();
    serde_json::to_vec(&json!({"total_num": rows.len(), "data_list": page})).unwrap()
}

const PRIVATE_ONLY: &str = "    image_types: [private_image]\n";
const SCOPE: [(&str, &str); 3] = [
    ("target", "test"),
    ("enterprise_project_id", "all_granted_eps"),
    ("image_type", "private_image"),
];

fn sweep_labels() -> Vec<(&'static str, &'static str)> {
    let mut labels = SCOPE.to_vec();
    labels.push(("lane", "sweep"));
    labels
}

fn namespaces(exposition: &Exposition, family: &str) -> Vec<String> {
    exposition
        .find(family, &SCOPE)
        .iter()
        .map(|s| s.labels["namespace"].clone())
        .collect()
}

#[tokio::test]
async fn a_page_with_more_rows_than_the_limit_is_refused_and_retried() {
    let rows: Vec<Value> = (1..=5).map(|i| row(i, "team", 1, 0)).collect();
    // The first answer ignores the limit of 2 and sends all five rows.
    let server = TinyServer::start(move |asked| {
        if asked.n == 0 {
            serde_json::to_vec(&json!({"total_num": 5, "data_list": rows})).unwrap()
        } else {
            page_of(&rows, asked)
        }
    })
    .await;
    let yaml = config_yaml(
        &server.endpoint,
        "page_size: 2\nmalicious_interval: 0\nmax_retries: 1\n",
        PRIVATE_ONLY,
    );
    let (_, ok, exposition) = once(&yaml).await;
    assert!(ok);
    // Refused as malformed, retried once, then read page by page.
    assert_eq!(
        exposition.value(
            "hss_swr_api_retries_total",
            &[("target", "test"), ("reason", "malformed")]
        ),
        1.0
    );
    let calls = server.calls();
    let mut offsets: Vec<u64> = calls.iter().map(|c| c.offset).collect();
    offsets.sort_unstable();
    assert_eq!(offsets, vec![0, 0, 2, 4]);
    assert_eq!((calls[0].offset, calls[1].offset), (0, 0));
    assert!(calls.iter().all(|c| c.limit == 2));
    // The five rows count once each: nothing of the refused page was kept.
    assert_eq!(exposition.sum("hss_swr_images", &SCOPE), 5.0);
    assert_eq!(exposition.value("hss_swr_vulnerabilities", &SCOPE), 5.0);
    assert_eq!(exposition.value("hss_swr_up", &sweep_labels()), 1.0);
}

#[tokio::test]
async fn an_oversized_page_every_time_fails_the_sweep() {
    let rows: Vec<Value> = (1..=3).map(|i| row(i, "team", 1, 0)).collect();
    let server = TinyServer::start(move |_| {
        serde_json::to_vec(&json!({"total_num": 3, "data_list": rows})).unwrap()
    })
    .await;
    let yaml = config_yaml(
        &server.endpoint,
        "page_size: 2\nmalicious_interval: 0\nmax_retries: 0\n",
        PRIVATE_ONLY,
    );
    let (exporter, ok, exposition) = once(&yaml).await;
    assert!(!ok);
    assert_eq!(exposition.value("hss_swr_up", &sweep_labels()), 0.0);
    assert_eq!(
        exposition.value("hss_swr_poll_failures_total", &sweep_labels()),
        1.0
    );
    assert!(exposition.find("hss_swr_images", &SCOPE).is_empty());
    let scope = exporter.scopes().list()[0].clone();
    let error = scope
        .lane_status(hss_swr_exporter::collect::Lane::Sweep)
        .last_error
        .unwrap();
    assert!(
        error.contains("3 rows, more than the limit of 2 asked for"),
        "{error}"
    );
}

#[tokio::test]
async fn two_kib_label_values_are_cut_to_one_kib_and_counted() {
    let long_namespace = "n".repeat(2048);
    // Cut inside a 3-byte character: the cut moves back to its start.
    let long_image = format!("{}漢{}", "i".repeat(1022), "j".repeat(1000));
    let mut first = row(1, &long_namespace, 3, 0);
    first["image_name"] = json!(long_image);
    let mut second = row(2, &long_namespace, 4, 0);
    second["scan_status"] = json!("failed");
    second["scan_failed_desc"] = json!("r".repeat(1500));
    let rows = vec![first, second, row(3, "short", 1, 0)];
    let server = TinyServer::start(move |asked| page_of(&rows, asked)).await;
    let yaml = config_yaml(
        &server.endpoint,
        "malicious_interval: 0\nimage_metrics: true\n",
        PRIVATE_ONLY,
    );
    let (_, ok, exposition) = once(&yaml).await;
    assert!(ok);
    let cut = "n".repeat(1024);
    let mut published = namespaces(&exposition, "hss_swr_vulnerabilities");
    published.sort();
    assert_eq!(published, vec![cut.clone(), "short".to_string()]);
    let labels = [SCOPE.as_slice(), &[("namespace", cut.as_str())]].concat();
    // Both rows land in the one cut namespace.
    assert_eq!(exposition.value("hss_swr_vulnerabilities", &labels), 7.0);
    let images: Vec<String> = exposition
        .find("hss_swr_image_vulnerabilities", &labels)
        .iter()
        .map(|s| s.labels["image"].clone())
        .collect();
    assert!(images.contains(&"i".repeat(1022)), "{images:?}");
    let reasons: Vec<String> = exposition
        .find("hss_swr_scan_failures", &labels)
        .iter()
        .map(|s| s.labels["reason"].clone())
        .collect();
    assert_eq!(reasons, vec!["r".repeat(1024)]);
    assert!(
        exposition
            .samples
            .iter()
            .all(|s| s.labels.values().all(|v| v.len() <= 1024))
    );
    for (field, count) in [
        ("namespace", 2.0),
        ("image_name", 1.0),
        ("scan_failed_desc", 1.0),
    ] {
        assert_eq!(
            exposition.value(
                "hss_swr_invalid_fields_total",
                &[("target", "test"), ("field", field)]
            ),
            count,
            "{field}"
        );
    }
}

#[tokio::test]
async fn invalid_utf8_is_replaced_and_the_page_applied() {
    let server = TinyServer::start(|asked| {
        if asked.offset > 0 {
            return br#"{"total_num":2,"data_list":[]}"#.to_vec();
        }
        let mut body = br#"{"total_num":2,"data_list":[{"id":1,"namespace":"bad-"#.to_vec();
        body.extend_from_slice(&[0xff, 0xfe]);
        body.extend_from_slice(br#"","scan_status":"success","vul_num":3},"#);
        body.extend_from_slice(
            br#"{"id":2,"namespace":"good","scan_status":"success","vul_num":4}]}"#,
        );
        body
    })
    .await;
    let yaml = config_yaml(&server.endpoint, "malicious_interval: 0\n", PRIVATE_ONLY);
    let (_, ok, exposition) = once(&yaml).await;
    assert!(ok);
    assert_eq!(exposition.value("hss_swr_up", &sweep_labels()), 1.0);
    let bad = [SCOPE.as_slice(), &[("namespace", "bad-\u{fffd}\u{fffd}")]].concat();
    assert_eq!(exposition.value("hss_swr_vulnerabilities", &bad), 3.0);
    let good = [SCOPE.as_slice(), &[("namespace", "good")]].concat();
    assert_eq!(exposition.value("hss_swr_vulnerabilities", &good), 4.0);
    assert_eq!(
        exposition.value(
            "hss_swr_invalid_fields_total",
            &[("target", "test"), ("field", "utf8")]
        ),
        1.0
    );
}

#[tokio::test]
async fn more_namespaces_than_max_namespaces_are_capped_and_counted() {
    // Seven namespaces, out of order; three hold malicious files.
    let names = ["g", "c", "e", "a", "f", "b", "d"];
    let rows: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(i, ns)| row(i as u64 + 1, ns, 1, u64::from(i % 2 == 0)))
        .collect();
    let server = TinyServer::start(move |asked| page_of(&rows, asked)).await;
    let yaml = config_yaml(
        &server.endpoint,
        "max_namespaces: 4\nimage_metrics: true\n",
        PRIVATE_ONLY,
    );
    let (_, ok, exposition) = once(&yaml).await;
    assert!(ok);
    let first_four = vec!["a", "b", "c", "d"];
    for family in [
        "hss_swr_vulnerabilities",
        "hss_swr_malicious_files",
        "hss_swr_malicious_images_detected_total",
    ] {
        let mut published = namespaces(&exposition, family);
        published.sort();
        assert_eq!(published, first_four, "{family}");
    }
    let mut per_image = namespaces(&exposition, "hss_swr_image_vulnerabilities");
    per_image.sort();
    assert_eq!(per_image, first_four);
    assert_eq!(
        exposition.value("hss_swr_namespace_series_dropped", &SCOPE),
        3.0
    );
    // Only the published namespaces' images show.
    assert_eq!(exposition.sum("hss_swr_images", &SCOPE), 4.0);

    // Under the cap nothing is dropped, and the gauge says 0.
    let yaml = config_yaml(&server.endpoint, "max_namespaces: 7\n", PRIVATE_ONLY);
    let (_, ok, exposition) = once(&yaml).await;
    assert!(ok);
    assert_eq!(namespaces(&exposition, "hss_swr_vulnerabilities").len(), 7);
    assert_eq!(
        exposition.value("hss_swr_namespace_series_dropped", &SCOPE),
        0.0
    );
}

#[tokio::test]
async fn a_page_without_data_list_is_an_empty_page() {
    // The simulator leaving data_list out of an empty answer.
    let sim = start_simulator(sim_config(0, 1)).await;
    sim.sim.set_faults(Faults {
        empty_data_list: EmptyDataList::Missing,
        ..Faults::default()
    });
    let yaml = config_yaml(&sim.endpoint, "", PRIVATE_ONLY);
    let (_, ok, exposition) = once(&yaml).await;
    assert!(ok);
    assert_eq!(exposition.value("hss_swr_up", &sweep_labels()), 1.0);
    assert!(exposition.find("hss_swr_images", &SCOPE).is_empty());
    assert!(
        exposition
            .find("hss_swr_invalid_fields_total", &[])
            .is_empty()
    );

    // A tiny server sending "data_list": null with a total, then an array
    // where a page object belongs.
    let server = TinyServer::start(|asked| match asked.n {
        0 => br#"{"total_num":0,"data_list":null}"#.to_vec(),
        _ => b"[]".to_vec(),
    })
    .await;
    let yaml = config_yaml(
        &server.endpoint,
        "malicious_interval: 0\nmax_retries: 0\n",
        PRIVATE_ONLY,
    );
    let exporter = hss_swr_exporter::app::Exporter::new(parse_config(&yaml)).unwrap();
    assert!(exporter.run_once().await, "null data_list: an empty page");
    let exposition = Exposition::parse(&exporter.metrics().render());
    assert_eq!(exposition.value("hss_swr_up", &sweep_labels()), 1.0);
    assert!(!exporter.run_once().await, "a body that is not an object");
    let exposition = Exposition::parse(&exporter.metrics().render());
    assert_eq!(exposition.value("hss_swr_up", &sweep_labels()), 0.0);
    assert_eq!(
        exposition.value("hss_swr_poll_failures_total", &sweep_labels()),
        1.0
    );
}

#[tokio::test]
async fn a_multi_arch_image_counts_once() {
    // registry-images rows: a multi-arch parent whose per-architecture
    // images carry counts, one of which is also listed as its own row.
    let mut parent = row(10, "team", 5, 1);
    parent["is_multiple_arch"] = json!(true);
    parent["association_images"] = json!([
        {"id": 11, "namespace": "team", "image_name": "img-10", "vul_num": 2, "malicious_file_num": 1},
        {"id": 12, "namespace": "team", "image_name": "img-10", "vul_num": 3, "malicious_file_num": 0},
    ]);
    let child = row(11, "team", 2, 1);
    let rows = vec![parent, child];
    let server = TinyServer::start(move |asked| page_of(&rows, asked)).await;
    let yaml = config_yaml(&server.endpoint, "", PRIVATE_ONLY)
        .replace("    endpoint:", "    api: registry-images\n    endpoint:");
    let (_, ok, exposition) = once(&yaml).await;
    assert!(ok);
    assert_eq!(exposition.sum("hss_swr_images", &SCOPE), 2.0);
    assert_eq!(exposition.value("hss_swr_vulnerabilities", &SCOPE), 7.0);
    assert_eq!(exposition.value("hss_swr_malicious_files", &SCOPE), 2.0);
    assert_eq!(exposition.value("hss_swr_malicious_images", &SCOPE), 2.0);
}

#[tokio::test]
async fn failure_reasons_are_codes_under_registry_images() {
    let sim = start_simulator(sim_config(1500, 5)).await;
    let yaml = config_yaml(&sim.endpoint, "malicious_interval: 0\n", PRIVATE_ONLY)
        .replace("    endpoint:", "    api: registry-images\n    endpoint:");
    let (_, ok, exposition) = once(&yaml).await;
    assert!(ok);
    let failures = exposition.find("hss_swr_scan_failures", &SCOPE);
    assert!(failures.len() > 3, "{failures:?}");
    for sample in &failures {
        let reason = sample.labels["reason"].as_str();
        assert!(
            SCAN_FAILED_CODES.contains(&reason) || SCAN_FAILED_DESCS.contains(&reason),
            "{reason:?} is not a failure code"
        );
    }
    // Exactly what the simulator holds, codes as reasons.
    assert_matches_simulator(&exposition, &sim.sim, "private_image");
}
