//! The two listing APIs: `swr-repository` (the seed's, deprecated) and its
//! successor `registry-images`, against the same synthetic registry. Switching
//! keeps every series name and figure; only `registry_name` is new.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::*;
use hss_swr_exporter::simulator::{Quota, SimImage, max_calls_in_window};

const SWR_TYPES: [&str; 3] = ["private_image", "shared_image", "instance_image"];

fn with_api(yaml: String, api: &str) -> String {
    yaml.replace("    endpoint:", &format!("    api: {api}\n    endpoint:"))
}

/// Every namespace series of `exposition` (but the severity gauge, which
/// only the successor API can fill), keyed by metric name and every label
/// but `registry_name`.
fn figures(exposition: &Exposition) -> BTreeMap<(String, Vec<(String, String)>), f64> {
    let mut out = BTreeMap::new();
    for s in &exposition.samples {
        if !s.labels.contains_key("namespace") || s.name == "hss_swr_images_by_severity" {
            continue;
        }
        let labels: Vec<(String, String)> = s
            .labels
            .iter()
            .filter(|(k, _)| k.as_str() != "registry_name")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.insert((s.name.clone(), labels), s.value);
    }
    out
}

#[tokio::test]
async fn switching_api_keeps_every_swr_series_and_figure() {
    let sim = start_simulator(sim_config(3000, 10)).await;
    let old = config_yaml(&sim.endpoint, "", "");
    let (_, ok, before) = once(&old).await;
    assert!(ok);
    let (_, ok, after) = once(&with_api(old, "registry-images")).await;
    assert!(ok);
    // Same names, same labels but registry_name, same values; the detection
    // counter starts at 0 on both sides.
    let (before_figures, after_figures) = (figures(&before), figures(&after));
    assert!(before_figures.len() > 100);
    assert_eq!(before_figures, after_figures);
    let images = sim.sim.images();
    for image_type in SWR_TYPES {
        assert_scope_matches(
            &after,
            "test",
            "all_granted_eps",
            image_type,
            &expected(&images, image_type, "all_granted_eps"),
        );
    }
    // The only difference: registry_name, empty (no label) under the old API.
    assert!(
        before
            .samples
            .iter()
            .all(|s| s.labels.get("registry_name").is_none_or(String::is_empty))
    );
    for (image_type, registry) in [
        ("private_image", "swr-private"),
        ("shared_image", "swr-shared"),
    ] {
        assert!(
            after
                .find("hss_swr_vulnerabilities", &[("image_type", image_type)])
                .iter()
                .all(|s| s.labels["registry_name"] == registry),
            "{image_type}"
        );
    }
    assert!(
        after
            .find(
                "hss_swr_vulnerabilities",
                &[("image_type", "instance_image")]
            )
            .iter()
            .all(|s| s.labels["registry_name"] == s.labels["instance_name"])
    );
    assert_eq!(
        before.value(
            "hss_swr_target_info",
            &[("target", "test"), ("api", "swr-repository")]
        ),
        1.0
    );
    assert_eq!(
        after.value(
            "hss_swr_target_info",
            &[("target", "test"), ("api", "registry-images")]
        ),
        1.0
    );
    // Severity exists only where the API reports it.
    assert!(before.find("hss_swr_images_by_severity", &[]).is_empty());
    assert!(!after.find("hss_swr_images_by_severity", &[]).is_empty());
}

/// Harbor and JFrog images per (instance, registry, namespace), as the
/// exporter must publish them.
fn by_registry(
    images: &[SimImage],
    image_type: &str,
) -> BTreeMap<(String, String), (u64, i64, i64)> {
    let mut out: BTreeMap<(String, String), (u64, i64, i64)> = BTreeMap::new();
    for image in images.iter().filter(|i| i.image_type == image_type) {
        let e = out
            .entry((image.registry_name.clone(), image.namespace.clone()))
            .or_default();
        e.0 += 1;
        e.1 += image.vul_num;
        e.2 += image.malicious_file_num;
    }
    out
}

#[tokio::test]
async fn harbor_and_jfrog_registries_are_scopes_of_their_own() {
    let sim = start_simulator(sim_config(4000, 6)).await;
    let yaml = with_api(
        config_yaml(&sim.endpoint, "", "    image_types: [harbor, jfrog]\n"),
        "registry-images",
    );
    let (_, ok, exposition) = once(&yaml).await;
    assert!(ok);
    let images = sim.sim.images();
    for image_type in ["harbor", "jfrog"] {
        let want = by_registry(&images, image_type);
        assert!(
            !want.is_empty(),
            "the synthetic data has {image_type} images"
        );
        let published: BTreeMap<(String, String), f64> = exposition
            .find("hss_swr_vulnerabilities", &[("image_type", image_type)])
            .iter()
            .map(|s| {
                (
                    (
                        s.labels["registry_name"].clone(),
                        s.labels["namespace"].clone(),
                    ),
                    s.value,
                )
            })
            .collect();
        assert_eq!(
            published.len(),
            want.len(),
            "{image_type}: one series per registry and namespace"
        );
        for ((registry, namespace), (count, vul, mal)) in &want {
            let labels = [
                ("image_type", image_type),
                ("registry_name", registry.as_str()),
                ("namespace", namespace.as_str()),
            ];
            assert_eq!(exposition.sum("hss_swr_images", &labels), *count as f64);
            assert_eq!(
                exposition.value("hss_swr_vulnerabilities", &labels),
                *vul as f64
            );
            assert_eq!(
                exposition.value("hss_swr_malicious_files", &labels),
                *mal as f64
            );
        }
    }
    // Two Harbor registries hold namespaces of the same name: separate series.
    let harbor = by_registry(&images, "harbor");
    let shared_namespace = harbor
        .keys()
        .find(|(r, ns)| {
            r == "harbor-prod" && harbor.contains_key(&("harbor-dev".to_string(), ns.clone()))
        })
        .expect("a namespace in both Harbor registries");
    assert_eq!(
        exposition
            .find(
                "hss_swr_vulnerabilities",
                &[
                    ("image_type", "harbor"),
                    ("namespace", shared_namespace.1.as_str())
                ]
            )
            .len(),
        2
    );
}

#[tokio::test]
async fn images_by_severity_shows_every_documented_level() {
    let sim = start_simulator(sim_config(2000, 5)).await;
    let yaml = with_api(
        config_yaml(&sim.endpoint, "", "    image_types: [private_image]\n"),
        "registry-images",
    );
    let (_, ok, exposition) = once(&yaml).await;
    assert!(ok);
    let images = sim.sim.images();
    let namespaces: std::collections::BTreeSet<&str> = exposition
        .find("hss_swr_vulnerabilities", &[])
        .iter()
        .map(|s| s.labels["namespace"].as_str())
        .collect();
    for namespace in namespaces {
        for severity in ["Security", "Low", "Medium", "High"] {
            let want = images
                .iter()
                .filter(|i| {
                    i.image_type == "private_image"
                        && i.namespace == namespace
                        && i.severity_level == severity
                })
                .count();
            assert_eq!(
                exposition.value(
                    "hss_swr_images_by_severity",
                    &[("namespace", namespace), ("severity", severity)]
                ),
                want as f64,
                "{namespace} {severity}"
            );
        }
    }
}

#[tokio::test]
async fn each_api_has_its_own_budget() {
    let mut config = sim_config(3000, 6);
    config.quota = Some(Quota {
        calls: 5,
        window: Duration::from_millis(500),
    });
    let sim = start_simulator(config).await;
    let yaml = format!(
        "api_rate_limit: 5/500ms\nmalicious_interval: 0\ncredentials: {{access_key: {AK}, secret_key: {SK}}}\ntargets:\n\
         - {{name: old, region: cn-north-4, project_id: {PROJECT}, endpoint: '{e}', image_types: [private_image]}}\n\
         - {{name: new, region: cn-north-4, project_id: {PROJECT}, endpoint: '{e}', api: registry-images, image_types: [private_image]}}\n",
        e = sim.endpoint
    );
    let (_, ok, exposition) = once(&yaml).await;
    assert!(ok);
    let calls = sim.sim.stats().calls;
    assert!(
        calls.iter().all(|c| c.status == 200),
        "no call was throttled"
    );
    for api in ["swr-repository", "registry-images"] {
        let of_api: Vec<_> = calls.iter().filter(|c| c.api == api).cloned().collect();
        assert!(of_api.len() >= 5, "{api}: {} calls", of_api.len());
        assert!(
            max_calls_in_window(&of_api, Duration::from_millis(500)) <= 5,
            "{api}"
        );
    }
    assert_eq!(exposition.sum("hss_swr_api_throttled_total", &[]), 0.0);
}

#[tokio::test]
async fn switching_api_with_a_state_file_counts_nothing_again() {
    let sim = start_simulator(sim_config(1500, 5)).await;
    let dir = std::env::temp_dir().join(format!("hss-apis-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let extra = format!("state_file: {}\n", dir.join("state.json").display());
    let old = config_yaml(&sim.endpoint, &extra, "    image_types: [private_image]\n");
    let (_, ok, before) = once(&old).await;
    assert!(ok);
    assert!(
        before.sum("hss_swr_malicious_images", &[]) > 0.0,
        "the data has malicious images"
    );
    // The same malicious images, now keyed with their registry: a fresh
    // baseline for the switched scope, not a wave of detections.
    let (_, ok, after) = once(&with_api(old, "registry-images")).await;
    assert!(ok);
    assert_eq!(
        after.sum("hss_swr_malicious_images_detected_total", &[]),
        0.0
    );
    std::fs::remove_dir_all(dir).unwrap();
}
