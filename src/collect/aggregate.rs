//! Aggregation: the per-namespace statistics and the immutable snapshots a
//! scope publishes.
//!
//! Place in the data flow: the scheduler keeps each scope's images in an
//! image table ([`super::table`]) and, after every change, publishes a
//! [`Snapshot`] derived from it, which the metrics module reads. The
//! table's `Aggregator` does the same for a listing that keeps no table. Rows are
//! deduplicated by `id`, or by namespace, name, version, digest and instance
//! when the id is unreadable.
//!
//! What counts: each top-level row is one image version. A multi-arch row's
//! `association_images` (its per-architecture images) are never added: the
//! parser does not keep them (see [`crate::hss::model`]), so an image is
//! counted once whether the listing also returns it as a row of its own or
//! the parent's counts already include it. A failed scan counts under
//! [`Row::scan_failure_reason`]: the `scan_failed_code` of the
//! registry-images API, else `scan_failed_desc`.
//!
//! [`cap_namespaces`] decides which namespaces a scope publishes when it has
//! more than `max_namespaces`: the first ones in key order.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

pub use super::keys::{ImageKey, NamespaceKey, image_key, row_key};
use crate::hss::RowRef;

static NEXT_SNAPSHOT_ID: AtomicU64 = AtomicU64::new(1);

/// A number no other snapshot of this process has: renderings cache by it.
pub fn next_snapshot_id() -> u64 {
    NEXT_SNAPSHOT_ID.fetch_add(1, Ordering::Relaxed)
}

/// The severity levels the registry-images API documents; each is exported
/// for its scopes, at 0 when no image has it.
pub const KNOWN_SEVERITIES: [&str; 4] = ["Security", "Low", "Medium", "High"];

/// The scan statuses the API documents; each is exported, at 0 when no image
/// has it. Other values pass through as they come.
pub const KNOWN_SCAN_STATUSES: [&str; 7] = [
    "unscan",
    "success",
    "scanning",
    "failed",
    "download_failed",
    "image_oversized",
    "waiting_for_scan",
];

/// The `scan_status` label of rows that carry none.
pub const MISSING_SCAN_STATUS: &str = "unknown";

/// What one namespace holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceStats {
    /// Image versions by scan status: the known ones in
    /// [`KNOWN_SCAN_STATUSES`] order.
    pub known_status: [u64; KNOWN_SCAN_STATUSES.len()],
    /// Image versions with statuses the API did not document.
    pub other_status: BTreeMap<String, u64>,
    /// Sum of `vul_num`.
    pub vulnerabilities: u64,
    /// Sum of `malicious_file_num`.
    pub malicious_files: u64,
    /// Sum of `unsafe_setting_num`.
    pub unsafe_settings: u64,
    /// Images with `vul_num > 0`.
    pub vulnerable_images: u64,
    /// Images with `malicious_file_num > 0`.
    pub malicious_images: u64,
    /// Images with `unsafe_setting_num > 0`.
    pub unsafe_images: u64,
    /// Failed scans by [`Row::scan_failure_reason`] (empty reasons left out).
    pub scan_failures: BTreeMap<String, u64>,
    /// Oldest positive `latest_scan_time`, epoch milliseconds.
    pub oldest_scan_ms: Option<i64>,
    /// Images by `severity_level` (registry-images API only).
    pub by_severity: BTreeMap<String, u64>,
}

impl NamespaceStats {
    /// Image versions in the namespace.
    pub fn images(&self) -> u64 {
        self.known_status.iter().sum::<u64>() + self.other_status.values().sum::<u64>()
    }
}

/// One image version, for the opt-in per-image series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSeries {
    /// Where it lives.
    pub namespace: NamespaceKey,
    /// Image name.
    pub image: String,
    /// Version.
    pub version: String,
    /// `vul_num`.
    pub vulnerabilities: u64,
    /// `malicious_file_num`.
    pub malicious_files: u64,
    /// `unsafe_setting_num`.
    pub unsafe_settings: u64,
}

/// The published result of one complete sweep of one scope.
#[derive(Debug)]
pub struct Snapshot {
    /// Unique in this process.
    pub id: u64,
    /// When the sweep ended.
    pub finished_at: SystemTime,
    /// Distinct image versions seen.
    pub images: u64,
    /// Statistics per namespace.
    pub namespaces: BTreeMap<NamespaceKey, NamespaceStats>,
    /// Per-image series, worst first, when `image_metrics` is on.
    pub image_series: Vec<ImageSeries>,
    /// Images left out of `image_series` by the cap.
    pub image_series_dropped: u64,
    /// Every image with malicious files, for detection when the malicious
    /// lane is off.
    pub malicious_images: Vec<(ImageKey, u64)>,
}

/// Malicious files and images of one namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaliciousStats {
    /// Sum of `malicious_file_num`.
    pub files: u64,
    /// Images with `malicious_file_num > 0`.
    pub images: u64,
}

/// The published result of one malicious-lane run of one scope: every image
/// with malicious files, per namespace.
#[derive(Debug)]
pub struct MaliciousSnapshot {
    /// Unique in this process.
    pub id: u64,
    /// When the run ended.
    pub finished_at: SystemTime,
    /// Per namespace.
    pub namespaces: BTreeMap<NamespaceKey, MaliciousStats>,
    /// The images, for detection.
    pub images: Vec<(ImageKey, u64)>,
}

impl MaliciousSnapshot {
    /// Builds the result of a malicious-lane listing from its rows
    /// (deduplicated like a sweep; rows without malicious files ignored).
    pub fn from_rows<'a, R: Into<RowRef<'a>>>(
        rows: impl IntoIterator<Item = R>,
        finished_at: SystemTime,
    ) -> Self {
        let mut seen = HashSet::new();
        let mut namespaces: BTreeMap<NamespaceKey, MaliciousStats> = BTreeMap::new();
        let mut images = Vec::new();
        for row in rows {
            let row = row.into();
            if row.malicious_file_num == 0 {
                continue;
            }
            if !seen.insert(row_key(&row)) {
                continue;
            }
            let stats = namespaces
                .entry(NamespaceKey {
                    instance_name: row.instance_name.into(),
                    registry_name: row.registry_name.into(),
                    namespace: row.namespace.into(),
                })
                .or_default();
            stats.files += row.malicious_file_num;
            stats.images += 1;
            images.push((image_key(&row), row.malicious_file_num));
        }
        Self {
            id: next_snapshot_id(),
            finished_at,
            namespaces,
            images,
        }
    }
}

/// Numbers about a sweep itself, for `/status` and self-metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepCounts {
    /// Rows received, duplicates included.
    pub rows: u64,
    /// Rows dropped as duplicates.
    pub duplicates: u64,
}

/// The namespaces a scope publishes under `max_namespaces`, and how many are
/// left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceCap {
    /// `None` when every namespace is published; else the ones that are.
    pub allowed: Option<std::sync::Arc<std::collections::BTreeSet<NamespaceKey>>>,
    /// Namespaces left out.
    pub dropped: u64,
}

impl NamespaceCap {
    /// Whether `key` is published.
    pub fn allows(&self, key: &NamespaceKey) -> bool {
        self.allowed.as_ref().is_none_or(|set| set.contains(key))
    }
}

/// Keeps the first `max` distinct namespaces of `keys` in key order
/// (`instance_name`, `registry_name`, `namespace`), so the choice does not
/// depend on the order rows arrived in; counts the rest.
pub fn cap_namespaces<'a>(
    keys: impl IntoIterator<Item = &'a NamespaceKey>,
    max: usize,
) -> NamespaceCap {
    let keys: Vec<&NamespaceKey> = keys.into_iter().collect();
    if keys.len() <= max {
        // Not even with repeats over the cap: the common case, no sorting.
        return NamespaceCap {
            allowed: None,
            dropped: 0,
        };
    }
    let all: std::collections::BTreeSet<&NamespaceKey> = keys.into_iter().collect();
    if all.len() <= max {
        return NamespaceCap {
            allowed: None,
            dropped: 0,
        };
    }
    let dropped = (all.len() - max) as u64;
    let allowed = all.into_iter().take(max).cloned().collect();
    NamespaceCap {
        allowed: Some(std::sync::Arc::new(allowed)),
        dropped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hss::Row;
    // The statistics are derived through the image table, as published.
    use crate::collect::table::Aggregator;

    fn row(id: Option<u64>, ns: &str, status: &str, vul: u64, mal: u64, unsafe_: u64) -> Row {
        Row {
            id,
            namespace: ns.into(),
            image_name: format!("img-{}", id.unwrap_or(0)),
            image_version: "v1".into(),
            scan_status: (!status.is_empty()).then(|| status.to_string()),
            vul_num: vul,
            malicious_file_num: mal,
            unsafe_setting_num: unsafe_,
            ..Row::default()
        }
    }

    #[test]
    fn rows_add_up_per_namespace() {
        let mut agg = Aggregator::new(false);
        agg.add(&row(Some(1), "a", "success", 10, 0, 1));
        agg.add(&row(Some(2), "a", "success", 0, 3, 0));
        agg.add(&Row {
            scan_failed_desc: "download_failed".into(),
            latest_scan_time: Some(5_000),
            ..row(Some(3), "a", "failed", 0, 0, 0)
        });
        agg.add(&Row {
            latest_scan_time: Some(2_000),
            ..row(Some(4), "b", "brand_new_status", 1, 0, 0)
        });
        agg.add(&row(Some(5), "b", "", 0, 0, 0));
        let snap = agg.finish(SystemTime::UNIX_EPOCH, 10);
        assert_eq!(snap.images, 5);
        let a = &snap.namespaces[&NamespaceKey {
            instance_name: String::new(),
            registry_name: String::new(),
            namespace: "a".into(),
        }];
        assert_eq!(a.known_status, [0, 2, 0, 1, 0, 0, 0]);
        assert_eq!(
            (a.vulnerabilities, a.malicious_files, a.unsafe_settings),
            (10, 3, 1)
        );
        assert_eq!(
            (a.vulnerable_images, a.malicious_images, a.unsafe_images),
            (1, 1, 1)
        );
        assert_eq!(a.scan_failures.get("download_failed"), Some(&1));
        assert_eq!(a.oldest_scan_ms, Some(5_000));
        assert_eq!(a.images(), 3);
        let b = &snap.namespaces[&NamespaceKey {
            instance_name: String::new(),
            registry_name: String::new(),
            namespace: "b".into(),
        }];
        assert_eq!(b.known_status, [0; 7]);
        assert_eq!(b.other_status.get("brand_new_status"), Some(&1));
        assert_eq!(b.other_status.get(MISSING_SCAN_STATUS), Some(&1));
        assert_eq!(b.oldest_scan_ms, Some(2_000));
    }

    #[test]
    fn duplicates_count_once_by_id_or_by_content() {
        let mut agg = Aggregator::new(false);
        agg.add(&row(Some(1), "a", "success", 5, 0, 0));
        agg.add(&row(Some(1), "a", "success", 5, 0, 0));
        let no_id = row(None, "a", "success", 7, 0, 0);
        agg.add(&no_id);
        agg.add(&no_id);
        agg.add(&Row {
            image_version: "v2".into(),
            ..no_id.clone()
        });
        let (snap, counts) = agg.finish_counted(SystemTime::UNIX_EPOCH, 10);
        assert_eq!(
            counts,
            SweepCounts {
                rows: 5,
                duplicates: 2
            }
        );
        assert_eq!(snap.images, 3);
        assert_eq!(snap.namespaces.values().next().unwrap().vulnerabilities, 19);
    }

    #[test]
    fn instances_keep_namespaces_apart() {
        let mut agg = Aggregator::new(false);
        agg.add(&Row {
            instance_name: "i1".into(),
            ..row(Some(1), "a", "success", 1, 0, 0)
        });
        agg.add(&Row {
            instance_name: "i2".into(),
            ..row(Some(2), "a", "success", 1, 0, 0)
        });
        assert_eq!(agg.finish(SystemTime::UNIX_EPOCH, 0).namespaces.len(), 2);
    }

    #[test]
    fn malicious_results_sum_per_namespace() {
        let rows = [
            row(Some(1), "a", "success", 0, 2, 0),
            row(Some(1), "a", "success", 0, 2, 0),
            row(Some(2), "a", "success", 0, 1, 0),
            row(Some(3), "b", "success", 0, 4, 0),
            row(Some(4), "b", "success", 9, 0, 0),
        ];
        let snap = MaliciousSnapshot::from_rows(&rows, SystemTime::UNIX_EPOCH);
        let a = NamespaceKey {
            instance_name: String::new(),
            registry_name: String::new(),
            namespace: "a".into(),
        };
        let b = NamespaceKey {
            instance_name: String::new(),
            registry_name: String::new(),
            namespace: "b".into(),
        };
        assert_eq!(
            snap.namespaces[&a],
            MaliciousStats {
                files: 3,
                images: 2
            }
        );
        assert_eq!(
            snap.namespaces[&b],
            MaliciousStats {
                files: 4,
                images: 1
            }
        );
        assert_eq!(snap.images.len(), 3);
        let mut agg = Aggregator::new(false);
        for r in &rows {
            agg.add(r);
        }
        assert_eq!(
            agg.finish(SystemTime::UNIX_EPOCH, 0).malicious_images.len(),
            3
        );
    }

    fn key(ns: &str) -> NamespaceKey {
        NamespaceKey {
            instance_name: String::new(),
            registry_name: String::new(),
            namespace: ns.into(),
        }
    }

    #[test]
    fn failures_count_under_the_code_else_the_description() {
        let mut agg = Aggregator::new(false);
        // registry-images: the code, whatever the description says.
        agg.add(&Row {
            scan_failed_code: "download_failed".into(),
            scan_failed_desc: "Image download failed. Contact technical support.".into(),
            ..row(Some(1), "a", "failed", 0, 0, 0)
        });
        agg.add(&Row {
            scan_failed_code: "download_failed".into(),
            scan_failed_desc: "another wording".into(),
            ..row(Some(2), "a", "failed", 0, 0, 0)
        });
        // An empty code: the description (swr-repository puts the code there).
        agg.add(&Row {
            scan_failed_desc: "database_error".into(),
            ..row(Some(3), "a", "failed", 0, 0, 0)
        });
        agg.add(&row(Some(4), "a", "success", 0, 0, 0));
        let snap = agg.finish(SystemTime::UNIX_EPOCH, 0);
        let failures = &snap.namespaces[&key("a")].scan_failures;
        assert_eq!(
            failures
                .iter()
                .map(|(k, v)| (k.as_str(), *v))
                .collect::<Vec<_>>(),
            vec![("database_error", 1), ("download_failed", 2)]
        );
    }

    #[test]
    fn a_multi_arch_image_counts_once() {
        // The parser keeps top-level rows only: the parent, and a child the
        // listing also returns as a row of its own (twice, on two pages).
        let page = crate::hss::model::parse_page(
            br#"{"total_num":2,"data_list":[
                {"id":10,"namespace":"a","image_name":"m","image_version":"1","scan_status":"success","vul_num":5,"malicious_file_num":1,
                 "association_images":[{"id":11,"vul_num":2,"malicious_file_num":1},{"id":12,"vul_num":3}]},
                {"id":11,"namespace":"a","image_name":"m","image_version":"1","scan_status":"success","vul_num":2,"malicious_file_num":1},
                {"id":11,"namespace":"a","image_name":"m","image_version":"1","scan_status":"success","vul_num":2,"malicious_file_num":1}
            ]}"#,
        )
        .unwrap();
        let mut agg = Aggregator::new(false);
        for r in page.rows() {
            agg.add(r);
        }
        let snap = agg.finish(SystemTime::UNIX_EPOCH, 0);
        let a = &snap.namespaces[&key("a")];
        assert_eq!(snap.images, 2);
        assert_eq!(a.images(), 2);
        assert_eq!(a.vulnerabilities, 7, "5 + 2: child 12 is not added");
        assert_eq!(a.malicious_files, 2);
        assert_eq!(a.malicious_images, 2);
    }

    #[test]
    fn the_namespace_cap_keeps_the_first_keys_in_order() {
        let keys: Vec<NamespaceKey> = ["d", "b", "e", "a", "c", "b"]
            .into_iter()
            .map(key)
            .collect();
        let cap = cap_namespaces(&keys, 3);
        assert_eq!(cap.dropped, 2, "five distinct namespaces, three kept");
        let kept: Vec<&str> = cap
            .allowed
            .as_ref()
            .unwrap()
            .iter()
            .map(|k| k.namespace.as_str())
            .collect();
        assert_eq!(kept, vec!["a", "b", "c"]);
        assert!(cap.allows(&key("c")) && !cap.allows(&key("d")));
        // The order rows came in does not matter.
        let mut reversed = keys.clone();
        reversed.reverse();
        assert_eq!(cap_namespaces(&reversed, 3), cap);
        // Instances sort before namespaces.
        let other = NamespaceKey {
            instance_name: "i".into(),
            ..key("a")
        };
        let cap = cap_namespaces([&key("z"), &other], 1);
        assert!(cap.allows(&key("z")) && !cap.allows(&other));
        // At or under the cap: everything, nothing dropped.
        let all = cap_namespaces(&keys, 5);
        assert_eq!((all.allowed.is_none(), all.dropped), (true, 0));
        assert!(all.allows(&key("zzz")));
    }

    #[test]
    fn image_series_keep_the_worst_up_to_the_cap() {
        let mut agg = Aggregator::new(true);
        agg.add(&row(Some(1), "a", "success", 100, 0, 0));
        agg.add(&row(Some(2), "a", "success", 1, 2, 0));
        agg.add(&row(Some(3), "a", "success", 5, 0, 0));
        let snap = agg.finish(SystemTime::UNIX_EPOCH, 2);
        let kept: Vec<_> = snap.image_series.iter().map(|s| s.image.as_str()).collect();
        assert_eq!(kept, vec!["img-2", "img-1"]);
        assert_eq!(snap.image_series_dropped, 1);
    }
}
