//! Synthetic image rows for the simulator, and their wire form.
//!
//! Place in the project: the simulator stands in for the HSS API; it is used
//! by tests, benchmarks and the demo; the exporter's own code never depends
//! on it. This file makes the rows ([`generate`], deterministic from a seed)
//! and writes a page of them the way the official APIs do, strictly typed or
//! as loosely typed as the official example response: the old listing's
//! `PrivateImageRepositoryInfo` (DESIGN.md section 1), or its successor's
//! `RegistryImagesInfo`, the same fields plus the registry ones
//! (reference/hss-api.md section 2).

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{Api, SimConfig};

/// Every documented `scan_status` value.
pub const SCAN_STATUSES: [&str; 7] = [
    "unscan",
    "success",
    "scanning",
    "failed",
    "download_failed",
    "image_oversized",
    "waiting_for_scan",
];

/// The 15 documented `scan_failed_desc` values (the SDK comment says 14).
pub const SCAN_FAILED_DESCS: [&str; 15] = [
    "unknown_error",
    "authentication_failed",
    "download_failed",
    "image_over_sized",
    "image_oversized",
    "failed_to_scan_vulnerability",
    "failed_to_scan_file",
    "failed_to_scan_software",
    "failed_to_check_sensitive_information",
    "failed_to_check_baseline",
    "failed_to_check_software_compliance",
    "failed_to_query_basic_image_information",
    "response_timed_out",
    "database_error",
    "failed_to_send_the_scan_request",
];

/// The 20 documented `scan_failed_code` values of the successor API
/// (`RegistryImagesInfo`): the old ones but plain `image_oversized`, plus six
/// new ones. Its `scan_failed_desc` has the same value set (and the
/// simulator still serves `image_oversized`, which the docs say to expect).
pub const SCAN_FAILED_CODES: [&str; 20] = [
    "unknown_error",
    "authentication_failed",
    "download_failed",
    "image_over_sized",
    "failed_to_scan_vulnerability",
    "failed_to_scan_file",
    "failed_to_scan_software",
    "failed_to_check_sensitive_information",
    "failed_to_check_baseline",
    "failed_to_check_software_compliance",
    "failed_to_query_basic_image_information",
    "response_timed_out",
    "database_error",
    "failed_to_send_the_scan_request",
    "get_detail_info_not_found",
    "image_layer_over_sized",
    "schema_v1_not_support",
    "access_swr_failed",
    "swr_authentication_error",
    "failed_to_check_build_cmd",
];

/// The human description the successor API's `scan_failed_desc` gives for a
/// failure code (its `scan_failed_code`), after the official SDK's
/// code-to-description table; unknown codes get a generic text. Under the
/// old listing `scan_failed_desc` is the code itself.
pub fn scan_failed_description(code: &str) -> &'static str {
    match code {
        "unknown_error" => "Unknown error.",
        "authentication_failed" => "Authentication failed.",
        "download_failed" => "Image download failed. Contact technical support.",
        "image_over_sized" | "image_oversized" => {
            "The image exceeds the size limit and cannot be scanned. Make the image smaller."
        }
        "get_detail_info_not_found" => {
            "Image details not found; the image may no longer be in the registry. Synchronize the images again."
        }
        "image_layer_over_sized" => {
            "The image has more layers than can be scanned. Make the image smaller."
        }
        "schema_v1_not_support" => "Schema V1 images cannot be scanned. Upgrade to V2.",
        "access_swr_failed" => "Accessing SWR failed. Contact technical support.",
        "swr_authentication_error" => {
            "SWR authorization is missing. Grant it as the image authorization guide describes."
        }
        "failed_to_scan_vulnerability" => "Vulnerability scan failed.",
        "failed_to_scan_file" => "File scan failed.",
        "failed_to_scan_software" => "Software scan failed.",
        "failed_to_check_sensitive_information" => "Sensitive information check failed.",
        "failed_to_check_baseline" => "Baseline check failed.",
        "failed_to_check_software_compliance" => "Software compliance check failed.",
        "failed_to_query_basic_image_information" => "Querying the base image information failed.",
        "failed_to_check_build_cmd" => "Image build command check failed.",
        "response_timed_out" => "Response timed out.",
        "database_error" => "Database error.",
        "failed_to_send_the_scan_request" => "Sending the scan request failed.",
        "" => "",
        _ => "Scan failed.",
    }
}

/// How a page without rows carries `data_list` ([`super::Faults::empty_data_list`]):
/// both SDKs mark the field optional, so an empty answer may leave it out or
/// send `null`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmptyDataList {
    /// `"data_list": []`.
    #[default]
    Array,
    /// `"data_list": null`.
    Null,
    /// No `data_list` key at all.
    Missing,
}

/// Every documented `image_type` request value of the old listing
/// (`image/swr-repository`).
pub const IMAGE_TYPES: [&str; 4] = [
    "private_image",
    "shared_image",
    "instance_image",
    "local_image",
];

/// Every documented `image_type` value of the successor listing
/// (`image/registries/images`).
pub const REGISTRY_IMAGE_TYPES: [&str; 5] = [
    "private_image",
    "shared_image",
    "instance_image",
    "harbor",
    "jfrog",
];

/// Every documented `registry_type` value.
pub const REGISTRY_TYPES: [&str; 6] = [
    "SwrPrivate",
    "SwrShared",
    "SwrEnterprise",
    "Harbor",
    "Jfrog",
    "Other",
];

/// Every documented `severity_level` value, mildest first.
pub const SEVERITY_LEVELS: [&str; 4] = ["Security", "Low", "Medium", "High"];

/// The registries of the generated data other than the SWR Enterprise
/// instances (whose registry is the instance: name, `SwrEnterprise`, id):
/// name, `registry_type`, `registry_id`. Harbor images alternate, per
/// repository, between the two Harbor registries.
pub const REGISTRIES: [(&str, &str, &str); 5] = [
    (
        "swr-private",
        "SwrPrivate",
        "3c0e4a1f-5b2d-4e6f-8a7b-9c0d1e2f3a4b",
    ),
    (
        "swr-shared",
        "SwrShared",
        "7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d",
    ),
    (
        "harbor-prod",
        "Harbor",
        "b1c2d3e4-f5a6-4b7c-8d9e-0f1a2b3c4d5e",
    ),
    (
        "harbor-dev",
        "Harbor",
        "c2d3e4f5-a6b7-4c8d-9e0f-1a2b3c4d5e6f",
    ),
    (
        "jfrog-main",
        "Jfrog",
        "d3e4f5a6-b7c8-4d9e-8f1a-2b3c4d5e6f7a",
    ),
];

/// Enterprise projects the generated data uses besides the default `"0"`.
pub const EXTRA_EPS: [&str; 2] = ["ep-finance", "ep-platform"];

/// The two SWR Enterprise Edition instances: name, id, URL.
pub const INSTANCES: [(&str, &str, &str); 2] = [
    (
        "企业实例-生产",
        "6f1c2a4e-8b3d-4c5e-9f70-1a2b3c4d5e6f",
        "https://prod-ee.swr.cn-north-4.myhuaweicloud.com",
    ),
    (
        "swr-ee-staging",
        "0d9e8f7a-6b5c-4d3e-2f1a-0b9c8d7e6f5a",
        "https://staging-ee.swr.cn-north-4.myhuaweicloud.com",
    ),
];

/// Namespace names handed out first; more are `team-NN`. The CJK one is
/// fifth, so it is there whenever there are at least five namespaces.
const NAMESPACES: [&str; 10] = [
    "payments",
    "platform",
    "frontend",
    "data-lake",
    "支付-团队",
    "security",
    "ml-models",
    "infra",
    "mobile",
    "search",
];

const IMAGE_NAMES: [&str; 20] = [
    "nginx",
    "redis",
    "api-gateway",
    "order-service",
    "billing",
    "postgres",
    "kafka",
    "node-base",
    "python-runtime",
    "auth",
    "cart",
    "web-ui",
    "ml-trainer",
    "log-agent",
    "centos7",
    "mysql",
    "envoy",
    "grafana",
    "payment-core",
    "search-indexer",
];

const DAY_MS: i64 = 86_400_000;

/// The first generated id.
pub const FIRST_ID: u64 = 1000;

/// One image version as the simulator keeps it: the official row fields
/// plus `enterprise_project_id`, the simulator's own bookkeeping (the API
/// does not return it). Strings are empty when not applicable.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimImage {
    /// Unique row id; rows are served in id order.
    pub id: u64,
    /// SWR organisation.
    pub namespace: String,
    /// Repository name.
    pub image_name: String,
    /// Image id (64 hex).
    pub image_id: String,
    /// `sha256:` + 64 hex.
    pub image_digest: String,
    /// Tag.
    pub image_version: String,
    /// One of [`IMAGE_TYPES`] or [`REGISTRY_IMAGE_TYPES`].
    pub image_type: String,
    /// Whether this is the newest version of its repository.
    pub latest_version: bool,
    /// One of [`SCAN_STATUSES`].
    pub scan_status: String,
    /// The failure code of a failed scan, else empty: one of
    /// [`SCAN_FAILED_DESCS`] (SWR) or [`SCAN_FAILED_CODES`]. The old listing
    /// serves it as `scan_failed_desc`; the successor as `scan_failed_code`,
    /// with [`scan_failed_description`] as `scan_failed_desc`.
    pub scan_failed_desc: String,
    /// Bytes.
    pub image_size: i64,
    /// Epoch ms of the version's last update.
    pub latest_update_time: i64,
    /// Epoch ms of the last scan; 0 when never scanned.
    pub latest_scan_time: i64,
    /// Vulnerabilities found.
    pub vul_num: i64,
    /// Failed baseline checks.
    pub unsafe_setting_num: i64,
    /// Malicious files found.
    pub malicious_file_num: i64,
    /// Owner of a shared image.
    pub domain_name: String,
    /// `effective` or `expired` for shared images.
    pub shared_status: String,
    /// Whether HSS can scan the image.
    pub scannable: bool,
    /// SWR Enterprise Edition instance name.
    pub instance_name: String,
    /// SWR Enterprise Edition instance id.
    pub instance_id: String,
    /// SWR Enterprise Edition instance URL.
    pub instance_url: String,
    /// Enterprise project the row belongs to (`"0"` = default).
    pub enterprise_project_id: String,
    /// Registry holding the image (successor API only): `swr-private`,
    /// `swr-shared`, the enterprise instance's name, `harbor-prod`, ...
    #[serde(default)]
    pub registry_name: String,
    /// One of [`REGISTRY_TYPES`] (successor API only).
    #[serde(default)]
    pub registry_type: String,
    /// One of [`SEVERITY_LEVELS`] once a scan succeeded ([`severity_level`]);
    /// empty when not scanned or not applicable (successor API only).
    #[serde(default)]
    pub severity_level: String,
    /// Epoch ms of the last sync from the registry (successor API only).
    #[serde(default)]
    pub latest_sync_time: i64,
    /// Id of the registry (successor API only).
    #[serde(default)]
    pub registry_id: String,
}

/// The `severity_level` HSS reports for an image: after a successful scan
/// `High` from 100 vulnerabilities, `Medium` from 20, `Low` from 1, else
/// `Security`; empty (not applicable) for any other scan status.
pub fn severity_level(scan_status: &str, vul_num: i64) -> &'static str {
    match (scan_status, vul_num) {
        ("success", 100..) => "High",
        ("success", 20..) => "Medium",
        ("success", 1..) => "Low",
        ("success", _) => "Security",
        _ => "",
    }
}

/// The registry an image type maps to when nothing more is known: name,
/// `registry_type`, `registry_id`. SWR Enterprise images are in their
/// instance's registry, so their name and id come from the row (empty
/// here); Harbor images default to `harbor-prod`; `local_image` and unknown
/// types have no registry.
pub fn default_registry(image_type: &str) -> (&'static str, &'static str, &'static str) {
    match image_type {
        "private_image" => REGISTRIES[0],
        "shared_image" => REGISTRIES[1],
        "instance_image" => ("", "SwrEnterprise", ""),
        "harbor" => REGISTRIES[2],
        "jfrog" => REGISTRIES[4],
        _ => ("", "", ""),
    }
}

/// Whether `image_type` is one of the SWR types both listings serve.
pub(crate) fn is_swr(image_type: &str) -> bool {
    matches!(
        image_type,
        "private_image" | "shared_image" | "instance_image"
    )
}

/// The namespace names used for `count` namespaces.
pub fn namespace_names(count: usize) -> Vec<String> {
    (0..count.max(1))
        .map(|i| match NAMESPACES.get(i) {
            Some(name) => (*name).to_string(),
            None => format!("team-{:02}", i - NAMESPACES.len()),
        })
        .collect()
}

fn random_hex(rng: &mut StdRng) -> String {
    let mut bytes = [0u8; 32];
    rng.fill(&mut bytes[..]);
    hex::encode(bytes)
}

/// Sets the scan status and every field that follows from it.
fn apply_scan_status(row: &mut SimImage, status: &str, rng: &mut StdRng, base_time_ms: i64) {
    row.scan_status = status.to_string();
    // Harbor and JFrog images only exist on the successor API, whose list
    // of reasons is longer.
    let reasons: &[&str] = if is_swr(&row.image_type) {
        &SCAN_FAILED_DESCS
    } else {
        &SCAN_FAILED_CODES
    };
    row.scan_failed_desc = match status {
        "failed" => reasons[rng.random_range(0..reasons.len())].to_string(),
        "download_failed" => "download_failed".to_string(),
        "image_oversized" => SCAN_FAILED_DESCS[rng.random_range(3..5)].to_string(),
        _ => String::new(),
    };
    row.scannable = status != "image_oversized";
    if status == "image_oversized" {
        row.image_size = rng.random_range(11_000_000_000..30_000_000_000);
    }
    let scanned = matches!(
        status,
        "success" | "failed" | "download_failed" | "image_oversized"
    );
    row.latest_scan_time = if scanned {
        let mut at = base_time_ms - rng.random_range(0..30 * DAY_MS);
        if at < row.latest_update_time && row.latest_update_time <= base_time_ms {
            at = rng.random_range(row.latest_update_time..=base_time_ms);
        }
        at
    } else {
        0
    };
    if status == "success" {
        row.vul_num = if rng.random_bool(0.2) {
            0
        } else {
            rng.random_range(1..=300)
        };
        row.unsafe_setting_num = rng.random_range(0..=10);
        row.malicious_file_num = if rng.random_bool(0.01) {
            rng.random_range(1..=5)
        } else {
            0
        };
    } else {
        row.vul_num = 0;
        row.unsafe_setting_num = 0;
        row.malicious_file_num = 0;
    }
    row.severity_level = severity_level(&row.scan_status, row.vul_num).to_string();
}

fn roll_scan_status(rng: &mut StdRng) -> &'static str {
    match rng.random_range(0..100) {
        0..80 => "success",
        80..84 => "unscan",
        84..87 => "scanning",
        87..91 => "failed",
        91..93 => "download_failed",
        93..95 => "image_oversized",
        _ => "waiting_for_scan",
    }
}

/// Generates `config.images` rows over `config.namespaces` namespaces,
/// deterministically from `config.seed` and `config.base_time_ms`.
///
/// Repositories get 1 to 8 versions; the newest is `latest_version`. About
/// 48 % of repositories are private, 16 % shared, 16 % on one of two
/// enterprise instances, 10 % `harbor` (alternately in `harbor-prod` and
/// `harbor-dev`, so both hold namespaces of the same names) and 10 % `jfrog`
/// (`jfrog-main`), all over the same namespaces; most rows are in enterprise
/// project `"0"`, some in `ep-finance` or `ep-platform`. Every row carries
/// its registry ([`REGISTRIES`], or the enterprise instance),
/// `latest_sync_time` (up to six hours after `latest_update_time`, never
/// after the base time) and `severity_level` ([`severity_level`]). With at
/// least 7 SWR rows every scan status appears among the SWR rows (with at
/// least 7 rows, among all rows), and with at least 20 rows at least one SWR
/// row (failing that, one row) has malicious files. Ids ascend from
/// [`FIRST_ID`].
pub fn generate(config: &SimConfig) -> Vec<SimImage> {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let namespaces = namespace_names(config.namespaces);
    let base = config.base_time_ms;
    let total = config.images;
    let mut rows: Vec<SimImage> = Vec::with_capacity(total);
    // How often each (namespace, type, instance, base name) was used, so
    // that repository names stay unique.
    let mut repo_names: HashMap<(usize, usize, usize, usize), u32> = HashMap::new();
    // Harbor repositories made so far: even ones go to harbor-prod, odd ones
    // to harbor-dev.
    let mut harbor_repos = 0usize;

    while rows.len() < total {
        let ns = rng.random_range(0..namespaces.len());
        let (kind, image_type) = match rng.random_range(0..100) {
            0..48 => (0, "private_image"),
            48..64 => (1, "shared_image"),
            64..80 => (2, "instance_image"),
            80..90 => (3, "harbor"),
            _ => (4, "jfrog"),
        };
        // The enterprise instance, or which Harbor registry.
        let instance = match kind {
            2 => rng.random_range(0..INSTANCES.len()),
            3 => {
                harbor_repos += 1;
                (harbor_repos - 1) % 2
            }
            _ => 0,
        };
        let base_name = rng.random_range(0..IMAGE_NAMES.len());
        let used = repo_names
            .entry((ns, kind, instance, base_name))
            .or_insert(0);
        *used += 1;
        let image_name = if *used == 1 {
            IMAGE_NAMES[base_name].to_string()
        } else {
            format!("{}-{}", IMAGE_NAMES[base_name], used)
        };
        let enterprise_project_id = match rng.random_range(0..10) {
            0..8 => "0",
            8 => EXTRA_EPS[0],
            _ => EXTRA_EPS[1],
        };
        let (domain_name, shared_status) = if kind == 1 {
            let status = if rng.random_bool(0.85) {
                "effective"
            } else {
                "expired"
            };
            (
                format!("scc_cgs_partner{:02}", rng.random_range(1..=12)),
                status,
            )
        } else {
            (String::new(), "")
        };
        let (instance_name, instance_id, instance_url) = if kind == 2 {
            INSTANCES[instance]
        } else {
            ("", "", "")
        };
        let (registry_name, registry_type, registry_id) = match kind {
            2 => (instance_name, "SwrEnterprise", instance_id),
            3 => REGISTRIES[2 + instance],
            _ => default_registry(image_type),
        };

        let versions = rng.random_range(1..=8usize).min(total - rows.len());
        let mut times: Vec<i64> = (0..versions)
            .map(|_| base - rng.random_range(0..365 * DAY_MS))
            .collect();
        times.sort_unstable();
        let (mut major, mut minor, mut patch) =
            (rng.random_range(0..4u32), rng.random_range(0..10u32), 0u32);
        for (v, time) in times.into_iter().enumerate() {
            if v > 0 {
                if rng.random_bool(0.7) {
                    patch += 1;
                } else {
                    minor += 1;
                    patch = 0;
                }
            }
            if minor >= 20 {
                major += 1;
                minor = 0;
            }
            let mut row = SimImage {
                id: FIRST_ID + rows.len() as u64,
                namespace: namespaces[ns].clone(),
                image_name: image_name.clone(),
                image_id: random_hex(&mut rng),
                image_digest: format!("sha256:{}", random_hex(&mut rng)),
                image_version: format!("{major}.{minor}.{patch}"),
                image_type: image_type.to_string(),
                latest_version: v + 1 == versions,
                image_size: rng.random_range(5_000_000..2_000_000_000),
                latest_update_time: time,
                domain_name: domain_name.clone(),
                shared_status: shared_status.to_string(),
                instance_name: instance_name.to_string(),
                instance_id: instance_id.to_string(),
                instance_url: instance_url.to_string(),
                enterprise_project_id: enterprise_project_id.to_string(),
                registry_name: registry_name.to_string(),
                registry_type: registry_type.to_string(),
                registry_id: registry_id.to_string(),
                latest_sync_time: time
                    .saturating_add(rng.random_range(0..6 * 3_600_000))
                    .min(base.max(time)),
                ..SimImage::default()
            };
            let status = roll_scan_status(&mut rng);
            apply_scan_status(&mut row, status, &mut rng, base);
            rows.push(row);
        }
    }

    // The SWR rows first: they are all the old listing can show.
    let swr: Vec<usize> = (0..rows.len())
        .filter(|&i| is_swr(&rows[i].image_type))
        .collect();
    ensure_every_status(&mut rows, &swr, &mut rng, base);
    let all: Vec<usize> = (0..rows.len()).collect();
    ensure_every_status(&mut rows, &all, &mut rng, base);
    if rows.len() >= 20 && !rows.iter().any(|r| r.malicious_file_num > 0) {
        ensure_malicious(&mut rows, &swr, &mut rng);
        ensure_malicious(&mut rows, &all, &mut rng);
    }
    rows
}

/// With at least as many rows in `among` as statuses, gives each status
/// missing there to one of those rows whose status is shared with another.
fn ensure_every_status(rows: &mut [SimImage], among: &[usize], rng: &mut StdRng, base: i64) {
    let n = among.len();
    if n < SCAN_STATUSES.len() {
        return;
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for &i in among {
        *counts.entry(rows[i].scan_status.clone()).or_insert(0) += 1;
    }
    for (j, status) in SCAN_STATUSES.iter().enumerate() {
        if counts.get(*status).copied().unwrap_or(0) > 0 {
            continue;
        }
        let start = j * n / SCAN_STATUSES.len();
        let found = (0..n)
            .map(|k| among[(start + k) % n])
            .find(|&i| counts.get(&rows[i].scan_status).copied().unwrap_or(0) > 1);
        if let Some(i) = found {
            if let Some(count) = counts.get_mut(&rows[i].scan_status) {
                *count -= 1;
            }
            apply_scan_status(&mut rows[i], status, rng, base);
            counts.insert((*status).to_string(), 1);
        }
    }
}

/// Unless a row already has some, gives malicious files to a successfully
/// scanned row in `among` (the one nearest its middle).
fn ensure_malicious(rows: &mut [SimImage], among: &[usize], rng: &mut StdRng) {
    if rows.iter().any(|r| r.malicious_file_num > 0) {
        return;
    }
    let n = among.len();
    let found = (0..n)
        .map(|k| among[(n / 2 + k) % n])
        .find(|&i| rows[i].scan_status == "success");
    if let Some(i) = found {
        rows[i].malicious_file_num = rng.random_range(1..=5);
    }
}

/// A row in the official, strictly typed wire form.
#[derive(Serialize)]
struct WireRow<'a> {
    id: u64,
    namespace: &'a str,
    image_name: &'a str,
    image_id: &'a str,
    image_digest: &'a str,
    image_version: &'a str,
    image_type: &'a str,
    latest_version: bool,
    scan_status: &'a str,
    scan_failed_desc: &'a str,
    image_size: i64,
    latest_update_time: i64,
    latest_scan_time: i64,
    vul_num: i64,
    unsafe_setting_num: i64,
    malicious_file_num: i64,
    domain_name: &'a str,
    shared_status: &'a str,
    scannable: bool,
    instance_name: &'a str,
    instance_id: &'a str,
    instance_url: &'a str,
    association_images: [(); 0],
    /// The successor API's fields; absent on the old one.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    registry: Option<RegistryFields<'a>>,
}

/// What `RegistryImagesInfo` adds to `PrivateImageRepositoryInfo`.
#[derive(Serialize)]
struct RegistryFields<'a> {
    registry_id: &'a str,
    registry_name: &'a str,
    registry_type: &'a str,
    latest_sync_time: i64,
    is_multiple_arch: bool,
    severity_level: &'a str,
    scan_failed_code: &'a str,
}

impl<'a> RegistryFields<'a> {
    fn of(r: &'a SimImage) -> Self {
        RegistryFields {
            registry_id: &r.registry_id,
            registry_name: &r.registry_name,
            registry_type: &r.registry_type,
            latest_sync_time: r.latest_sync_time,
            is_multiple_arch: false,
            severity_level: &r.severity_level,
            scan_failed_code: &r.scan_failed_desc,
        }
    }
}

impl<'a> WireRow<'a> {
    fn new(r: &'a SimImage, api: Api) -> Self {
        WireRow {
            id: r.id,
            namespace: &r.namespace,
            image_name: &r.image_name,
            image_id: &r.image_id,
            image_digest: &r.image_digest,
            image_version: &r.image_version,
            image_type: &r.image_type,
            latest_version: r.latest_version,
            scan_status: &r.scan_status,
            scan_failed_desc: if api.registry_fields() {
                scan_failed_description(&r.scan_failed_desc)
            } else {
                &r.scan_failed_desc
            },
            image_size: r.image_size,
            latest_update_time: r.latest_update_time,
            latest_scan_time: r.latest_scan_time,
            vul_num: r.vul_num,
            unsafe_setting_num: r.unsafe_setting_num,
            malicious_file_num: r.malicious_file_num,
            domain_name: &r.domain_name,
            shared_status: &r.shared_status,
            scannable: r.scannable,
            instance_name: &r.instance_name,
            instance_id: &r.instance_id,
            instance_url: &r.instance_url,
            association_images: [],
            registry: api.registry_fields().then(|| RegistryFields::of(r)),
        }
    }
}

/// A well-mixed 64-bit hash of `x` (splitmix64 finaliser), used to decide
/// deterministically how loosely each row is typed.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A row as loosely typed as the official example response, decided per
/// row from its id:
/// - `id`: a third `"1042(私有镜像举例)"` (unreadable), a third `"1042"`, a
///   third a number;
/// - `image_size`: `"N 单位(Bytes)"` (unreadable), `"N"`, `null` or a number;
/// - `latest_update_time` and `latest_scan_time`: sometimes numeric
///   strings; a never-scanned `latest_scan_time` is sometimes `null`;
/// - the three counters: numeric strings half of the time (always readable,
///   so malicious files are never hidden);
/// - empty `domain_name`, `shared_status` and `scan_failed_desc` are left
///   out, as in the example;
/// - on the successor API, its fields too: empty strings left out,
///   `latest_sync_time` sometimes a numeric string.
fn loose_row(r: &SimImage, api: Api) -> Value {
    let h = mix(r.id);
    let bits = |shift: u32, modulo: u64| (h >> shift) % modulo;
    let label = match r.image_type.as_str() {
        "shared_image" => "共享镜像举例",
        "instance_image" => "企业镜像举例",
        _ => "私有镜像举例",
    };
    let numeric_string = |n: i64| Value::String(n.to_string());
    let mut m = Map::new();
    m.insert(
        "id".into(),
        match bits(0, 3) {
            0 => Value::String(format!("{}({label})", r.id)),
            1 => Value::String(r.id.to_string()),
            _ => json!(r.id),
        },
    );
    for (key, value) in [
        ("namespace", &r.namespace),
        ("image_name", &r.image_name),
        ("image_id", &r.image_id),
        ("image_digest", &r.image_digest),
        ("image_version", &r.image_version),
        ("image_type", &r.image_type),
        ("scan_status", &r.scan_status),
        ("instance_name", &r.instance_name),
        ("instance_id", &r.instance_id),
        ("instance_url", &r.instance_url),
    ] {
        m.insert(key.into(), Value::String(value.clone()));
    }
    let failed_desc = if api.registry_fields() {
        scan_failed_description(&r.scan_failed_desc)
    } else {
        &r.scan_failed_desc
    };
    for (key, value) in [
        ("scan_failed_desc", failed_desc),
        ("domain_name", &r.domain_name),
        ("shared_status", &r.shared_status),
    ] {
        if !value.is_empty() {
            m.insert(key.into(), Value::String(value.to_string()));
        }
    }
    m.insert("latest_version".into(), json!(r.latest_version));
    m.insert("scannable".into(), json!(r.scannable));
    m.insert(
        "image_size".into(),
        match bits(2, 4) {
            0 => Value::String(format!("{} 单位(Bytes)", r.image_size)),
            1 => numeric_string(r.image_size),
            2 => Value::Null,
            _ => json!(r.image_size),
        },
    );
    m.insert(
        "latest_update_time".into(),
        if bits(4, 4) == 0 {
            numeric_string(r.latest_update_time)
        } else {
            json!(r.latest_update_time)
        },
    );
    m.insert(
        "latest_scan_time".into(),
        match (r.latest_scan_time, bits(6, 4)) {
            (0, 0 | 1) => Value::Null,
            (t, 0) => numeric_string(t),
            (t, _) => json!(t),
        },
    );
    for (i, (key, value)) in [
        ("vul_num", r.vul_num),
        ("unsafe_setting_num", r.unsafe_setting_num),
        ("malicious_file_num", r.malicious_file_num),
    ]
    .into_iter()
    .enumerate()
    {
        let value = if bits(8 + i as u32, 2) == 0 {
            numeric_string(value)
        } else {
            json!(value)
        };
        m.insert(key.into(), value);
    }
    m.insert("association_images".into(), json!([]));
    if api.registry_fields() {
        for (key, value) in [
            ("registry_id", &r.registry_id),
            ("registry_name", &r.registry_name),
            ("registry_type", &r.registry_type),
            ("severity_level", &r.severity_level),
            ("scan_failed_code", &r.scan_failed_desc),
        ] {
            if !value.is_empty() {
                m.insert(key.into(), Value::String(value.clone()));
            }
        }
        m.insert(
            "latest_sync_time".into(),
            if bits(11, 4) == 0 {
                numeric_string(r.latest_sync_time)
            } else {
                json!(r.latest_sync_time)
            },
        );
        m.insert("is_multiple_arch".into(), json!(false));
    }
    Value::Object(m)
}

#[derive(Serialize)]
struct Page<T> {
    total_num: i64,
    data_list: Vec<T>,
}

/// Serialises one listing answer, `{"total_num": N, "data_list": [...]}`,
/// with the rows in `api`'s official form (strict or loose); a page without
/// rows carries `data_list` as `empty` says.
pub(crate) fn page_json(
    total_num: i64,
    rows: &[&SimImage],
    loose: bool,
    api: Api,
    empty: EmptyDataList,
) -> Vec<u8> {
    if rows.is_empty() {
        let page = match empty {
            EmptyDataList::Array => json!({"total_num": total_num, "data_list": []}),
            EmptyDataList::Null => json!({"total_num": total_num, "data_list": null}),
            EmptyDataList::Missing => json!({ "total_num": total_num }),
        };
        return page.to_string().into_bytes();
    }
    let result = if loose {
        serde_json::to_vec(&Page {
            total_num,
            data_list: rows.iter().map(|r| loose_row(r, api)).collect(),
        })
    } else {
        serde_json::to_vec(&Page {
            total_num,
            data_list: rows.iter().map(|r| WireRow::new(r, api)).collect(),
        })
    };
    // Serialising plain structs and JSON values into memory cannot fail.
    result.unwrap_or_else(|_| b"{\"total_num\":0,\"data_list\":[]}".to_vec())
}

/// The fields of a row of the old listing (`PrivateImageRepositoryInfo`), as
/// documented; the tests of both sides check the wire form against it.
#[cfg(test)]
pub(crate) const OLD_API_FIELDS: [&str; 23] = [
    "id",
    "namespace",
    "image_name",
    "image_id",
    "image_digest",
    "image_version",
    "image_type",
    "latest_version",
    "scan_status",
    "scan_failed_desc",
    "image_size",
    "latest_update_time",
    "latest_scan_time",
    "vul_num",
    "unsafe_setting_num",
    "malicious_file_num",
    "domain_name",
    "shared_status",
    "scannable",
    "instance_name",
    "instance_id",
    "instance_url",
    "association_images",
];

/// The fields a row of the successor listing (`RegistryImagesInfo`) adds.
#[cfg(test)]
pub(crate) const NEW_API_FIELDS: [&str; 7] = [
    "registry_id",
    "registry_name",
    "registry_type",
    "latest_sync_time",
    "is_multiple_arch",
    "severity_level",
    "scan_failed_code",
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const BASE: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    fn config(images: usize, namespaces: usize, seed: u64) -> SimConfig {
        SimConfig {
            images,
            namespaces,
            seed,
            base_time_ms: BASE,
            ..SimConfig::default()
        }
    }

    #[test]
    fn generation_is_deterministic_and_seed_dependent() {
        let a = generate(&config(500, 10, 7));
        let b = generate(&config(500, 10, 7));
        let c = generate(&config(500, 10, 8));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 500);
    }

    #[test]
    fn generated_rows_cover_the_documented_shapes() {
        let rows = generate(&config(2000, 10, 1));
        assert_eq!(rows.len(), 2000);
        // Ids unique and ascending from FIRST_ID.
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(row.id, FIRST_ID + i as u64);
            assert!(row.image_digest.starts_with("sha256:"));
            assert_eq!(row.image_digest.len(), 7 + 64);
            assert!(row.image_digest[7..].bytes().all(|b| b.is_ascii_hexdigit()));
        }
        let statuses: HashSet<&str> = rows.iter().map(|r| r.scan_status.as_str()).collect();
        for status in SCAN_STATUSES {
            assert!(statuses.contains(status), "{status} missing");
        }
        let success = rows.iter().filter(|r| r.scan_status == "success").count();
        assert!(success > rows.len() / 2);
        let namespaces: HashSet<&str> = rows.iter().map(|r| r.namespace.as_str()).collect();
        assert_eq!(namespaces.len(), 10);
        assert!(namespaces.contains("支付-团队"));
        for (kind, low, high) in [
            ("private_image", 0.35, 0.6),
            ("shared_image", 0.08, 0.25),
            ("instance_image", 0.08, 0.25),
            ("harbor", 0.05, 0.16),
            ("jfrog", 0.05, 0.16),
        ] {
            let share =
                rows.iter().filter(|r| r.image_type == kind).count() as f64 / rows.len() as f64;
            assert!((low..high).contains(&share), "{kind}: {share}");
        }
        let eps: HashSet<&str> = rows
            .iter()
            .map(|r| r.enterprise_project_id.as_str())
            .collect();
        assert_eq!(eps, HashSet::from(["0", "ep-finance", "ep-platform"]));
        let instances: HashSet<&str> = rows
            .iter()
            .filter(|r| r.image_type == "instance_image")
            .map(|r| r.instance_name.as_str())
            .collect();
        assert_eq!(
            instances,
            HashSet::from(["企业实例-生产", "swr-ee-staging"])
        );
        for row in &rows {
            match row.image_type.as_str() {
                "shared_image" => {
                    assert!(!row.domain_name.is_empty());
                    assert!(["effective", "expired"].contains(&row.shared_status.as_str()));
                }
                "instance_image" => assert!(!row.instance_id.is_empty()),
                _ => assert!(row.instance_name.is_empty() && row.domain_name.is_empty()),
            }
            let failed = matches!(
                row.scan_status.as_str(),
                "failed" | "download_failed" | "image_oversized"
            );
            assert_eq!(failed, !row.scan_failed_desc.is_empty(), "{row:?}");
            if failed && is_swr(&row.image_type) {
                assert!(SCAN_FAILED_DESCS.contains(&row.scan_failed_desc.as_str()));
            } else if failed {
                let desc = row.scan_failed_desc.as_str();
                assert!(SCAN_FAILED_CODES.contains(&desc) || desc == "image_oversized");
            }
            // The registry the type maps to.
            let registry = (row.registry_name.as_str(), row.registry_type.as_str());
            match row.image_type.as_str() {
                "private_image" => assert_eq!(registry, ("swr-private", "SwrPrivate")),
                "shared_image" => assert_eq!(registry, ("swr-shared", "SwrShared")),
                "instance_image" => {
                    assert_eq!(registry, (row.instance_name.as_str(), "SwrEnterprise"));
                    assert_eq!(row.registry_id, row.instance_id);
                }
                "harbor" => assert!(
                    registry == ("harbor-prod", "Harbor") || registry == ("harbor-dev", "Harbor")
                ),
                "jfrog" => assert_eq!(registry, ("jfrog-main", "Jfrog")),
                other => panic!("unexpected image type {other}"),
            }
            assert!(!row.registry_id.is_empty());
            assert!(REGISTRY_TYPES.contains(&row.registry_type.as_str()));
            // Severity follows the vulnerability count of successful scans.
            let want = match row.vul_num {
                _ if row.scan_status != "success" => "",
                100.. => "High",
                20..=99 => "Medium",
                1..=19 => "Low",
                _ => "Security",
            };
            assert_eq!(row.severity_level, want, "{row:?}");
            assert!(
                row.latest_sync_time >= row.latest_update_time
                    && row.latest_sync_time < row.latest_update_time + 6 * 3_600_000
                    && row.latest_sync_time <= BASE,
                "{row:?}"
            );
            if row.scan_status == "success" {
                assert!((0..=300).contains(&row.vul_num));
                assert!((0..=10).contains(&row.unsafe_setting_num));
                assert!((0..=5).contains(&row.malicious_file_num));
            } else {
                assert_eq!(
                    (row.vul_num, row.unsafe_setting_num, row.malicious_file_num),
                    (0, 0, 0)
                );
            }
            if matches!(
                row.scan_status.as_str(),
                "unscan" | "scanning" | "waiting_for_scan"
            ) {
                assert_eq!(row.latest_scan_time, 0);
            } else {
                assert!(row.latest_scan_time <= BASE);
                assert!(row.latest_scan_time >= BASE - 30 * DAY_MS);
            }
            assert!(row.latest_update_time <= BASE);
        }
        let malicious = rows.iter().filter(|r| r.malicious_file_num > 0).count();
        assert!((1..=60).contains(&malicious), "{malicious}");
        let severities: HashSet<&str> = rows.iter().map(|r| r.severity_level.as_str()).collect();
        for level in SEVERITY_LEVELS {
            assert!(severities.contains(level), "{level} missing");
        }
    }

    #[test]
    fn two_harbor_registries_hold_namespaces_of_the_same_name() {
        let rows = generate(&config(1000, 6, 1));
        let in_registry = |name: &str| -> HashSet<&str> {
            rows.iter()
                .filter(|r| r.image_type == "harbor" && r.registry_name == name)
                .map(|r| r.namespace.as_str())
                .collect()
        };
        let (prod, dev) = (in_registry("harbor-prod"), in_registry("harbor-dev"));
        assert!(prod.intersection(&dev).count() >= 2, "{prod:?} {dev:?}");
        // Harbor repositories alternate between the two registries.
        let first_versions: Vec<&str> = rows
            .iter()
            .enumerate()
            .filter(|(i, r)| {
                r.image_type == "harbor"
                    && (*i == 0
                        || rows[i - 1].image_type != "harbor"
                        || rows[i - 1].image_name != r.image_name)
            })
            .map(|(_, r)| r.registry_name.as_str())
            .take(4)
            .collect();
        assert_eq!(
            first_versions,
            ["harbor-prod", "harbor-dev", "harbor-prod", "harbor-dev"]
        );
        // The same namespaces as the SWR images.
        let swr: HashSet<&str> = rows
            .iter()
            .filter(|r| is_swr(&r.image_type))
            .map(|r| r.namespace.as_str())
            .collect();
        assert!(prod.is_subset(&swr) && dev.is_subset(&swr));
        let jfrog = rows.iter().filter(|r| r.image_type == "jfrog").count();
        assert!(jfrog > 0);
    }

    #[test]
    fn severity_levels_follow_the_vulnerability_count() {
        assert_eq!(severity_level("success", 0), "Security");
        assert_eq!(severity_level("success", 1), "Low");
        assert_eq!(severity_level("success", 19), "Low");
        assert_eq!(severity_level("success", 20), "Medium");
        assert_eq!(severity_level("success", 99), "Medium");
        assert_eq!(severity_level("success", 100), "High");
        for status in SCAN_STATUSES.iter().filter(|s| **s != "success") {
            assert_eq!(severity_level(status, 150), "");
        }
    }

    #[test]
    fn latest_version_marks_the_newest_version_of_each_repository() {
        let rows = generate(&config(3000, 6, 3));
        let mut repos: HashMap<(&str, &str, &str, &str), Vec<&SimImage>> = HashMap::new();
        for row in &rows {
            repos
                .entry((
                    row.namespace.as_str(),
                    row.image_name.as_str(),
                    row.image_type.as_str(),
                    row.registry_id.as_str(),
                ))
                .or_default()
                .push(row);
        }
        for versions in repos.values() {
            let latest: Vec<_> = versions.iter().filter(|r| r.latest_version).collect();
            assert_eq!(latest.len(), 1, "{versions:?}");
            let newest = versions.iter().map(|r| r.latest_update_time).max();
            assert_eq!(Some(latest[0].latest_update_time), newest);
            let tags: HashSet<&str> = versions.iter().map(|r| r.image_version.as_str()).collect();
            assert_eq!(tags.len(), versions.len(), "duplicate tags");
        }
    }

    #[test]
    fn small_data_sets_still_cover_statuses_and_malware() {
        for seed in 0..20 {
            let rows = generate(&config(20, 2, seed));
            let statuses: HashSet<&str> = rows.iter().map(|r| r.scan_status.as_str()).collect();
            assert_eq!(statuses.len(), 7, "seed {seed}");
            // The SWR rows alone, which the old listing shows, too.
            let swr: Vec<&SimImage> = rows.iter().filter(|r| is_swr(&r.image_type)).collect();
            if swr.len() >= 7 {
                let statuses: HashSet<&str> = swr.iter().map(|r| r.scan_status.as_str()).collect();
                assert_eq!(statuses.len(), 7, "seed {seed}");
            }
            assert!(rows.iter().any(|r| r.malicious_file_num > 0), "seed {seed}");
            assert!(!rows.iter().any(|r| r.namespace == "支付-团队"));
        }
        assert!(generate(&config(0, 10, 1)).is_empty());
        assert_eq!(generate(&config(3, 0, 1)).len(), 3);
    }

    #[test]
    fn large_data_sets_generate() {
        let rows = generate(&config(100_000, 40, 1));
        assert_eq!(rows.len(), 100_000);
        assert!(rows.iter().any(|r| r.namespace == "team-29"));
    }

    #[test]
    fn strict_page_has_the_official_fields_and_types() {
        let rows = generate(&config(30, 3, 1));
        let refs: Vec<&SimImage> = rows.iter().take(2).collect();
        let page: Value = serde_json::from_slice(&page_json(
            30,
            &refs,
            false,
            Api::SwrRepository,
            EmptyDataList::Array,
        ))
        .unwrap();
        assert_eq!(page["total_num"], 30);
        let row = page["data_list"][0].as_object().unwrap();
        let keys: HashSet<&str> = row.keys().map(String::as_str).collect();
        let expected: HashSet<&str> = OLD_API_FIELDS.into();
        assert_eq!(keys, expected);
        assert_eq!(row["id"], rows[0].id);
        assert_eq!(row["association_images"], json!([]));
        assert!(row["image_size"].is_i64());

        // The successor's rows: the same fields and values, plus its own.
        let page: Value = serde_json::from_slice(&page_json(
            30,
            &refs,
            false,
            Api::RegistryImages,
            EmptyDataList::Array,
        ))
        .unwrap();
        let new_row = page["data_list"][0].as_object().unwrap();
        let new_keys: HashSet<&str> = new_row.keys().map(String::as_str).collect();
        let added: HashSet<&str> = NEW_API_FIELDS.into();
        assert_eq!(new_keys, expected.union(&added).copied().collect());
        for key in expected.iter().filter(|k| **k != "scan_failed_desc") {
            assert_eq!(new_row[*key], row[*key], "{key}");
        }
        assert_eq!(new_row["registry_name"], rows[0].registry_name);
        assert_eq!(new_row["registry_type"], rows[0].registry_type);
        assert_eq!(new_row["registry_id"], rows[0].registry_id);
        assert_eq!(new_row["latest_sync_time"], rows[0].latest_sync_time);
        assert_eq!(new_row["severity_level"], rows[0].severity_level);
        assert_eq!(new_row["scan_failed_code"], rows[0].scan_failed_desc);
        assert_eq!(new_row["is_multiple_arch"], false);
    }

    #[test]
    fn loose_page_mixes_types_but_keeps_counters_readable() {
        let rows = generate(&config(300, 3, 1));
        let refs: Vec<&SimImage> = rows.iter().collect();
        let page: Value = serde_json::from_slice(&page_json(
            300,
            &refs,
            true,
            Api::SwrRepository,
            EmptyDataList::Array,
        ))
        .unwrap();
        let list = page["data_list"].as_array().unwrap();
        let ids_with_label = list
            .iter()
            .filter(|r| r["id"].as_str().is_some_and(|s| s.contains("镜像举例")))
            .count();
        assert!(ids_with_label > 50 && ids_with_label < 150);
        assert!(list.iter().any(|r| r["image_size"].is_null()));
        assert!(list.iter().any(|r| r["vul_num"].is_string()));
        for (row, original) in list.iter().zip(&rows) {
            let malicious = &row["malicious_file_num"];
            let value = malicious
                .as_i64()
                .or_else(|| malicious.as_str().and_then(|s| s.parse().ok()));
            assert_eq!(value, Some(original.malicious_file_num));
            assert!(row.get("registry_name").is_none());
        }
        // On the successor, its fields too, non-empty ones at least.
        let page: Value = serde_json::from_slice(&page_json(
            300,
            &refs,
            true,
            Api::RegistryImages,
            EmptyDataList::Array,
        ))
        .unwrap();
        let list = page["data_list"].as_array().unwrap();
        assert!(list.iter().any(|r| r["latest_sync_time"].is_string()));
        for (row, original) in list.iter().zip(&rows) {
            assert_eq!(row["registry_name"], original.registry_name);
            assert_eq!(row["is_multiple_arch"], false);
            assert_eq!(
                row.get("severity_level").is_some(),
                !original.severity_level.is_empty()
            );
            assert_eq!(
                row.get("scan_failed_code").and_then(Value::as_str),
                (!original.scan_failed_desc.is_empty())
                    .then_some(original.scan_failed_desc.as_str())
            );
            assert_eq!(
                row.get("scan_failed_desc").and_then(Value::as_str),
                (!original.scan_failed_desc.is_empty())
                    .then(|| scan_failed_description(&original.scan_failed_desc))
            );
        }
    }

    #[test]
    fn the_successor_serves_the_failure_code_beside_a_description() {
        let mut rows = generate(&config(300, 3, 1));
        rows.retain(|r| !r.scan_failed_desc.is_empty());
        assert!(rows.len() > 5);
        let refs: Vec<&SimImage> = rows.iter().collect();
        for loose in [false, true] {
            let old: Value = serde_json::from_slice(&page_json(
                1,
                &refs,
                loose,
                Api::SwrRepository,
                EmptyDataList::Array,
            ))
            .unwrap();
            let new: Value = serde_json::from_slice(&page_json(
                1,
                &refs,
                loose,
                Api::RegistryImages,
                EmptyDataList::Array,
            ))
            .unwrap();
            for ((o, n), r) in old["data_list"]
                .as_array()
                .unwrap()
                .iter()
                .zip(new["data_list"].as_array().unwrap())
                .zip(&rows)
            {
                // Old: the code in scan_failed_desc, no scan_failed_code.
                assert_eq!(o["scan_failed_desc"], r.scan_failed_desc.as_str());
                assert!(o.get("scan_failed_code").is_none());
                // New: the code in scan_failed_code, a sentence beside it.
                assert_eq!(n["scan_failed_code"], r.scan_failed_desc.as_str());
                let desc = n["scan_failed_desc"].as_str().unwrap();
                assert_ne!(desc, r.scan_failed_desc);
                assert!(desc.ends_with('.') && desc.contains(' '), "{desc}");
            }
        }
        assert_eq!(
            scan_failed_description("download_failed"),
            "Image download failed. Contact technical support."
        );
        for code in SCAN_FAILED_CODES.iter().chain(&SCAN_FAILED_DESCS) {
            assert_ne!(scan_failed_description(code), "Scan failed.", "{code}");
        }
    }

    #[test]
    fn an_empty_page_carries_data_list_as_asked() {
        let rows: Vec<&SimImage> = Vec::new();
        let page = |empty| {
            serde_json::from_slice::<Value>(&page_json(0, &rows, false, Api::RegistryImages, empty))
                .unwrap()
        };
        assert_eq!(
            page(EmptyDataList::Array),
            json!({"total_num": 0, "data_list": []})
        );
        assert_eq!(
            page(EmptyDataList::Null),
            json!({"total_num": 0, "data_list": null})
        );
        assert_eq!(page(EmptyDataList::Missing), json!({"total_num": 0}));
        // Pages with rows always carry them.
        let generated = generate(&config(3, 1, 1));
        let refs: Vec<&SimImage> = generated.iter().collect();
        let full: Value = serde_json::from_slice(&page_json(
            3,
            &refs,
            false,
            Api::SwrRepository,
            EmptyDataList::Missing,
        ))
        .unwrap();
        assert_eq!(full["data_list"].as_array().unwrap().len(), 3);
    }
}
