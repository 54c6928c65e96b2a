//! The simulator's image rows and how they change: the versioned data set
//! the listings read, the changes dated by the server's clock (churn ticks,
//! rescans, pushes, deletes, and the churn log), rows set or added by
//! tests, and images marked malicious ([`MaliciousImage`]).
//!
//! Place in the project: part of the simulator's HTTP side (`server`); the
//! listings read snapshots of these rows, while the churn task, the control
//! endpoints and tests change them. What a change does to the rows is
//! `churn.rs`'s; this file applies it, once per change however many rows it
//! touches.

use std::sync::{Arc, MutexGuard, PoisonError};
use std::time::SystemTime;

use serde::Deserialize;

use super::Simulator;
use crate::ChurnEvent;
use crate::churn::ChurnState;
use crate::data::{self, SimImage};

/// The rows and a version that changes with every modification.
pub(super) struct Dataset {
    version: u64,
    rows: Arc<Vec<SimImage>>,
}

impl Dataset {
    pub(super) fn new(rows: Vec<SimImage>) -> Self {
        Dataset {
            version: 0,
            rows: Arc::new(rows),
        }
    }
}

/// An image to mark malicious ([`Simulator::mark_malicious`]); also the
/// body of `POST /_sim/malicious`, where `image_type` defaults to
/// `private_image`, `enterprise_project_id` to `"0"` and `registry_name` to
/// none.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaliciousImage {
    /// Namespace (organisation, Harbor project, ...).
    pub namespace: String,
    /// Repository name.
    pub image_name: String,
    /// Tag.
    pub image_version: String,
    /// Malicious files to report.
    pub malicious_file_num: i64,
    /// Image type of the row.
    #[serde(default = "default_image_type")]
    pub image_type: String,
    /// Enterprise project of the row.
    #[serde(default = "default_ep")]
    pub enterprise_project_id: String,
    /// Registry of the row: when set, only a row of that registry matches,
    /// and a new row is put there (for `instance_image`, the instance of that
    /// name); when unset, a row of any registry matches, and a new row goes
    /// to the registry the image type maps to ([`data::default_registry`]:
    /// `swr-private`, `swr-shared`, `harbor-prod`, `jfrog-main`; none for
    /// `instance_image`, whose new rows have no instance).
    #[serde(default)]
    pub registry_name: Option<String>,
}

fn default_image_type() -> String {
    "private_image".to_string()
}

fn default_ep() -> String {
    "0".to_string()
}

impl Simulator {
    fn churn_state(&self) -> MutexGuard<'_, ChurnState> {
        self.inner
            .churn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether row `id` exists now.
    fn has_row(&self, id: u64) -> bool {
        self.snapshot()
            .1
            .binary_search_by_key(&id, |r| r.id)
            .is_ok()
    }

    /// The server's clock now, epoch ms: the wall clock plus
    /// [`SimConfig::clock_offset_ms`](crate::SimConfig::clock_offset_ms),
    /// never before the last change.
    pub fn clock_ms(&self) -> i64 {
        self.inner.clock.peek()
    }

    /// One tick of the churn engine ([`SimConfig::churn`](crate::SimConfig::churn), or
    /// [`Churn::default`](crate::Churn) when unset): the scans of pushed rows that are
    /// due, then rescans, pushes and deletes in one namespace, all in one
    /// replacement of the rows and dated by one reading of the server's
    /// clock. The choices follow the seed alone, so two simulators of one
    /// configuration make the same changes tick by tick. Returns the
    /// changes, also added to [`Simulator::churn_log`].
    pub fn churn_tick(&self) -> Vec<ChurnEvent> {
        let churn = self.inner.churn_config.unwrap_or_default();
        let mut state = self.churn_state();
        if state.next_tick_is_empty(&churn) {
            // Count the tick without replacing the rows.
            return self.modify_if(false, |rows| state.tick(&churn, rows, 0, SystemTime::now()));
        }
        let now = self.inner.clock.next();
        let at = SystemTime::now();
        self.modify_if(true, |rows| state.tick(&churn, rows, now, at))
    }

    /// Rescans row `id`: `scan_status` `success`, `latest_scan_time` the
    /// server's now, the given counts, `severity_level` to match. Logged as
    /// a [`ChurnKind::Rescan`](crate::ChurnKind::Rescan). `None` when there is no such row.
    pub fn rescan(
        &self,
        id: u64,
        vul_num: i64,
        unsafe_setting_num: i64,
        malicious_file_num: i64,
    ) -> Option<SimImage> {
        let mut state = self.churn_state();
        let exists = self.has_row(id);
        let now = self.inner.clock.next();
        let at = SystemTime::now();
        self.modify_if(exists, |rows| {
            state.rescan(
                rows,
                id,
                (vul_num, unsafe_setting_num, malicious_file_num),
                now,
                at,
            )
        })
    }

    /// Pushes a new version into a repository of `namespace` with
    /// `image_type` (picked with the churn engine's random stream), copying
    /// that repository's other fields; with no such repository, into a new
    /// one named `pushed` (enterprise project `"0"`, the type's default
    /// registry). The new row has an id above every id so far, is
    /// `waiting_for_scan` and the latest version (the previous latest one
    /// is not, its times unchanged), and is updated at the server's now; the
    /// churn engine scans it one to three ticks later. Logged as a
    /// [`ChurnKind::Push`](crate::ChurnKind::Push).
    pub fn push(&self, namespace: &str, image_type: &str) -> SimImage {
        let mut state = self.churn_state();
        let now = self.inner.clock.next();
        let at = SystemTime::now();
        self.modify_if(true, |rows| {
            state.push(rows, namespace, image_type, now, at)
        })
    }

    /// Deletes row `id` (when it was the latest version, the newest
    /// remaining version of its repository becomes the latest). Logged as a
    /// [`ChurnKind::Delete`](crate::ChurnKind::Delete). False when there is no such row.
    pub fn delete(&self, id: u64) -> bool {
        let mut state = self.churn_state();
        let exists = self.has_row(id);
        let now = self.inner.clock.next();
        let at = SystemTime::now();
        self.modify_if(exists, |rows| state.delete(rows, id, now, at))
    }

    /// The changes logged so far, oldest first: churn ticks, rescans,
    /// pushes and deletes, at most [`CHURN_LOG_CAPACITY`](crate::CHURN_LOG_CAPACITY) (older ones
    /// are dropped).
    pub fn churn_log(&self) -> Vec<ChurnEvent> {
        self.churn_state().log()
    }

    /// [`Simulator::churn_log`], emptying the log.
    pub fn drain_churn_log(&self) -> Vec<ChurnEvent> {
        self.churn_state().drain_log()
    }

    /// Runs `change` on a new version of the rows when `replace`, else on
    /// an empty list (for changes known to find nothing), so that no
    /// snapshot is copied and no cached match dropped for nothing.
    fn modify_if<T>(&self, replace: bool, change: impl FnOnce(&mut Vec<SimImage>) -> T) -> T {
        if replace {
            self.modify_images(change)
        } else {
            change(&mut Vec::new())
        }
    }

    pub(super) fn snapshot(&self) -> (u64, Arc<Vec<SimImage>>) {
        let guard = self
            .inner
            .images
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        (guard.version, Arc::clone(&guard.rows))
    }

    pub(super) fn modify_images<T>(&self, change: impl FnOnce(&mut Vec<SimImage>) -> T) -> T {
        let mut guard = self
            .inner
            .images
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        guard.version += 1;
        change(Arc::make_mut(&mut guard.rows))
    }

    /// The current rows, in id order.
    pub fn images(&self) -> Vec<SimImage> {
        self.snapshot().1.as_ref().clone()
    }

    /// Replaces all rows.
    pub fn set_images(&self, mut images: Vec<SimImage>) {
        images.sort_by_key(|row| row.id);
        self.modify_images(|rows| *rows = images);
    }

    /// Adds a row, replacing the row with the same id if there is one.
    pub fn add_image(&self, image: SimImage) {
        self.modify_images(|rows| insert_row(rows, image));
    }

    /// Sets `malicious_file_num` on the row matching namespace, name,
    /// version, image type and enterprise project, or adds such a row
    /// (scanned now, the newest of its repository, with a fresh id).
    /// Returns the row as it now is.
    pub fn set_malicious(
        &self,
        namespace: &str,
        image_name: &str,
        image_version: &str,
        image_type: &str,
        enterprise_project_id: &str,
        malicious_file_num: i64,
    ) -> SimImage {
        self.mark_malicious(&MaliciousImage {
            namespace: namespace.to_string(),
            image_name: image_name.to_string(),
            image_version: image_version.to_string(),
            malicious_file_num,
            image_type: image_type.to_string(),
            enterprise_project_id: enterprise_project_id.to_string(),
            registry_name: None,
        })
    }

    /// [`Simulator::set_malicious`] with a choice of registry
    /// ([`MaliciousImage::registry_name`]), e.g. one of two Harbor
    /// registries holding namespaces of the same name.
    pub fn mark_malicious(&self, image: &MaliciousImage) -> SimImage {
        let now = self.inner.clock.next();
        let MaliciousImage {
            namespace,
            image_name,
            image_version,
            malicious_file_num,
            image_type,
            enterprise_project_id,
            registry_name,
        } = image;
        let malicious_file_num = *malicious_file_num;
        let (default_name, registry_type, default_id) = data::default_registry(image_type);
        let (registry_name, registry_id, instance) = match registry_name.as_deref() {
            None => (default_name.to_string(), default_id.to_string(), None),
            Some(name) => {
                let known = data::REGISTRIES
                    .iter()
                    .find(|(known, kind, _)| *known == name && *kind == registry_type)
                    .map(|(_, _, id)| (*id).to_string());
                let instance = (image_type == "instance_image").then(|| {
                    data::INSTANCES
                        .iter()
                        .find(|(known, _, _)| *known == name)
                        .map_or((name, "", ""), |i| *i)
                });
                let id = known
                    .or_else(|| instance.map(|(_, id, _)| id.to_string()))
                    .filter(|id| !id.is_empty())
                    .unwrap_or_else(|| {
                        let h = data::mix(name.bytes().fold(0, |h, b| data::mix(h ^ u64::from(b))));
                        format!("{:016x}{:016x}", h, data::mix(h))
                    });
                (name.to_string(), id, instance)
            }
        };
        let wanted_registry = image.registry_name.as_deref();
        self.modify_images(|rows| {
            let same_repo = |r: &SimImage| {
                r.namespace == *namespace
                    && r.image_name == *image_name
                    && r.image_type == *image_type
                    && r.enterprise_project_id == *enterprise_project_id
                    && wanted_registry.is_none_or(|name| r.registry_name == name)
            };
            if let Some(row) = rows
                .iter_mut()
                .find(|r| same_repo(r) && r.image_version == *image_version)
            {
                row.malicious_file_num = malicious_file_num;
                return row.clone();
            }
            let id = rows.last().map_or(data::FIRST_ID, |r| r.id + 1);
            for row in rows.iter_mut().filter(|r| same_repo(r)) {
                row.latest_version = false;
            }
            let digest = format!("{:016x}", data::mix(id)).repeat(4);
            let row = SimImage {
                id,
                namespace: namespace.to_string(),
                image_name: image_name.to_string(),
                image_id: format!("{:016x}", data::mix(!id)).repeat(4),
                image_digest: format!("sha256:{digest}"),
                image_version: image_version.to_string(),
                image_type: image_type.to_string(),
                latest_version: true,
                scan_status: "success".to_string(),
                image_size: 52_428_800,
                latest_update_time: now,
                latest_scan_time: now,
                malicious_file_num,
                scannable: true,
                enterprise_project_id: enterprise_project_id.to_string(),
                instance_name: instance.map_or("", |i| i.0).to_string(),
                instance_id: instance.map_or("", |i| i.1).to_string(),
                instance_url: instance.map_or("", |i| i.2).to_string(),
                registry_name,
                registry_type: registry_type.to_string(),
                registry_id,
                severity_level: data::severity_level("success", 0).to_string(),
                latest_sync_time: now,
                ..SimImage::default()
            };
            insert_row(rows, row.clone());
            row
        })
    }
}

pub(super) fn insert_row(rows: &mut Vec<SimImage>, image: SimImage) {
    match rows.binary_search_by_key(&image.id, |row| row.id) {
        Ok(i) => rows[i] = image,
        Err(i) => rows.insert(i, image),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::SimConfig;
    use axum::http::StatusCode;
    use hss_api::signer;
    use serde_json::{Value, json};
    use std::collections::{HashMap, HashSet};
    use std::time::Duration;

    #[tokio::test]
    async fn two_harbor_registries_share_a_namespace_name() {
        let sim = sim_with(2000, None);
        let rows = sim.images();
        let namespace = rows
            .iter()
            .filter(|r| r.registry_name == "harbor-prod" && r.enterprise_project_id == "0")
            .map(|r| r.namespace.clone())
            .find(|ns| {
                rows.iter().any(|r| {
                    r.registry_name == "harbor-dev"
                        && r.namespace == *ns
                        && r.enterprise_project_id == "0"
                })
            })
            .expect("a namespace in both Harbor registries");
        let ns = signer::percent_encode(&namespace);
        let q = format!("image_type=harbor&namespace={ns}");
        let ids = |rows: &[Value]| {
            rows.iter()
                .map(|r| r["id"].as_u64().unwrap())
                .collect::<HashSet<u64>>()
        };
        let (both, _) = sweep(&sim, NEW_PATH, &q).await;
        let (prod, _) = sweep(&sim, NEW_PATH, &format!("{q}&registry_name=harbor-prod")).await;
        let (dev, _) = sweep(&sim, NEW_PATH, &format!("{q}&registry_name=harbor-dev")).await;
        assert!(!prod.is_empty() && !dev.is_empty());
        assert!(prod.iter().all(|r| r["registry_name"] == "harbor-prod"
            && r["registry_type"] == "Harbor"
            && r["namespace"] == namespace.as_str()));
        assert!(dev.iter().all(|r| r["registry_name"] == "harbor-dev"));
        assert!(ids(&prod).is_disjoint(&ids(&dev)));
        assert_eq!(
            ids(&prod)
                .union(&ids(&dev))
                .copied()
                .collect::<HashSet<u64>>(),
            ids(&both)
        );
        assert_ne!(prod[0]["registry_id"], dev[0]["registry_id"]);

        // Malware injected into one of them shows there only.
        let body = json!({
            "namespace": namespace,
            "image_name": "evil",
            "image_version": "1",
            "image_type": "harbor",
            "registry_name": "harbor-dev",
            "malicious_file_num": 3,
        })
        .to_string();
        let reply = send(&sim, post_json("/_sim/malicious", &body)).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json()["registry_name"], "harbor-dev");
        assert_eq!(reply.json()["registry_type"], "Harbor");
        assert_eq!(reply.json()["severity_level"], "Security");
        let id = reply.json()["id"].as_u64().unwrap();
        let found = |registry: &'static str| {
            let q = format!("{q}&has_malicious_file=true&registry_name={registry}");
            let sim = sim.clone();
            async move { sweep(&sim, NEW_PATH, &q).await.0 }
        };
        assert!(ids(&found("harbor-dev").await).contains(&id));
        assert!(!ids(&found("harbor-prod").await).contains(&id));
        // The same image again, in the other registry: a row of its own.
        let other = sim.mark_malicious(&MaliciousImage {
            namespace: namespace.clone(),
            image_name: "evil".into(),
            image_version: "1".into(),
            malicious_file_num: 1,
            image_type: "harbor".into(),
            enterprise_project_id: "0".into(),
            registry_name: Some("harbor-prod".into()),
        });
        assert_ne!(other.id, id);
        assert_eq!(other.registry_id, data::REGISTRIES[2].2);
        // Without a registry: the type's default, or the first matching row.
        let again = sim.set_malicious(&namespace, "evil", "1", "harbor", "0", 9);
        assert_eq!(again.id, id.min(other.id));
        let jfrog = sim.set_malicious("ns", "x", "1", "jfrog", "0", 1);
        assert_eq!(
            (jfrog.registry_name.as_str(), jfrog.registry_type.as_str()),
            ("jfrog-main", "Jfrog")
        );
        let private = sim.set_malicious("ns", "x", "1", "private_image", "0", 1);
        assert_eq!(private.registry_name, "swr-private");
        let instance = sim.set_malicious("ns", "x", "1", "instance_image", "0", 1);
        assert_eq!(
            (
                instance.registry_name.as_str(),
                instance.instance_name.as_str()
            ),
            ("", "")
        );
        let staged = sim.mark_malicious(&MaliciousImage {
            registry_name: Some("swr-ee-staging".into()),
            ..MaliciousImage {
                namespace: "ns".into(),
                image_name: "x".into(),
                image_version: "1".into(),
                malicious_file_num: 2,
                image_type: "instance_image".into(),
                enterprise_project_id: "0".into(),
                registry_name: None,
            }
        });
        assert_ne!(staged.id, instance.id);
        assert_eq!(staged.instance_name, "swr-ee-staging");
        assert_eq!(staged.registry_id, staged.instance_id);
        assert_eq!(staged.registry_id, data::INSTANCES[1].1);
    }

    #[tokio::test]
    async fn a_rescan_is_found_by_a_scan_time_filter_at_its_time_and_not_later() {
        let sim = sim_with(300, None);
        let row = private_row(&sim);
        let rescanned = sim.rescan(row.id, 150, 3, 0).unwrap();
        let t = rescanned.latest_scan_time;
        assert!(t > BASE && t >= sim.clock_ms() - 1000, "{t}");
        assert_eq!(rescanned.scan_status, "success");
        assert_eq!(rescanned.severity_level, "High");
        assert_eq!(
            (
                rescanned.vul_num,
                rescanned.unsafe_setting_num,
                rescanned.malicious_file_num
            ),
            (150, 3, 0)
        );
        assert_eq!(rescanned.latest_update_time, row.latest_update_time);
        for (ids, total) in both(&sim, &format!("{PRIVATE}&start_latest_scan_time={t}")).await {
            assert_eq!((ids, total), (vec![row.id], 1));
        }
        // Inclusive at both ends.
        let exact = format!("{PRIVATE}&start_latest_scan_time={t}&end_latest_scan_time={t}");
        for (ids, total) in both(&sim, &exact).await {
            assert_eq!((ids, total), (vec![row.id], 1));
        }
        let later = format!("{PRIVATE}&start_latest_scan_time={}", t + 1);
        for (ids, total) in both(&sim, &later).await {
            assert_eq!((ids, total), (vec![], 0));
        }
        let before = format!("{PRIVATE}&end_latest_scan_time={}", t - 1);
        for (ids, total) in both(&sim, &before).await {
            assert!(!ids.contains(&row.id));
            assert_eq!(ids.len() as u64, total);
        }
        // The successor without image_type: every type, the same one row.
        let (rows, total) = sweep(&sim, NEW_PATH, &format!("start_latest_scan_time={t}")).await;
        assert_eq!((rows.len(), total), (1, 1));
        assert_eq!(rows[0]["latest_scan_time"], t);
        assert_eq!(rows[0]["severity_level"], "High");
        // A row never scanned (0) never passes a start_latest_scan_time.
        let scanned: Vec<u64> = sim
            .images()
            .iter()
            .filter(|r| r.image_type == "private_image" && r.enterprise_project_id == "0")
            .filter(|r| r.latest_scan_time >= 1)
            .map(|r| r.id)
            .collect();
        assert!(sim.images().iter().any(|r| r.latest_scan_time == 0));
        for (ids, total) in both(&sim, &format!("{PRIVATE}&start_latest_scan_time=1")).await {
            assert_eq!(total, scanned.len() as u64);
            assert_eq!(ids, scanned);
        }
        let log = sim.churn_log();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].kind, crate::ChurnKind::Rescan);
        assert_eq!((log[0].id, log[0].at_ms), (row.id, t));
        assert_eq!(log[0].namespace, row.namespace);
        assert!(sim.rescan(1, 0, 0, 0).is_none());
        // Successive changes never share a time.
        let again = sim.rescan(row.id, 0, 0, 1).unwrap();
        assert!(again.latest_scan_time > t);
        assert_eq!(again.severity_level, "Security");
        assert_eq!(sim.drain_churn_log().len(), 2);
        assert!(sim.churn_log().is_empty());
    }

    #[tokio::test]
    async fn a_push_is_found_by_the_update_time_filter_and_replaces_the_latest_version() {
        let sim = sim_with(300, None);
        let row = private_row(&sim);
        let before = sim.images();
        let pushed = sim.push(&row.namespace, "private_image");
        assert!(before.iter().all(|r| r.id < pushed.id));
        assert_eq!(pushed.namespace, row.namespace);
        assert_eq!(pushed.image_type, "private_image");
        assert_eq!(pushed.scan_status, "waiting_for_scan");
        assert_eq!(pushed.latest_scan_time, 0);
        assert_eq!((pushed.vul_num, pushed.malicious_file_num), (0, 0));
        assert_eq!(pushed.severity_level, "");
        assert!(pushed.latest_version);
        let t = pushed.latest_update_time;
        assert!(t > BASE);
        // The repository's other versions: none is the latest any more, and
        // none changed its times.
        let repo = |r: &SimImage| {
            r.namespace == pushed.namespace
                && r.image_name == pushed.image_name
                && r.image_type == pushed.image_type
                && r.registry_name == pushed.registry_name
                && r.id != pushed.id
        };
        let old: Vec<&SimImage> = before.iter().filter(|r| repo(r)).collect();
        assert!(
            old.iter().any(|r| r.latest_version),
            "a sibling was the latest"
        );
        let now = sim.images();
        for sibling in &old {
            let after = now.iter().find(|r| r.id == sibling.id).unwrap();
            assert!(!after.latest_version);
            assert_eq!(after.latest_update_time, sibling.latest_update_time);
            assert_eq!(after.latest_scan_time, sibling.latest_scan_time);
            assert_ne!(after.image_version, pushed.image_version);
            assert_eq!(after.enterprise_project_id, pushed.enterprise_project_id);
        }
        for (ids, total) in both(&sim, &format!("{PRIVATE}&start_latest_update_time={t}")).await {
            assert_eq!((ids, total), (vec![pushed.id], 1));
        }
        let later = format!("{PRIVATE}&start_latest_update_time={}", t + 1);
        for (ids, total) in both(&sim, &later).await {
            assert_eq!((ids, total), (vec![], 0));
        }
        // Not scanned yet, so no scan-time filter finds it.
        let scanned = format!("{PRIVATE}&start_latest_scan_time={t}");
        for (ids, _) in both(&sim, &scanned).await {
            assert!(ids.is_empty());
        }
        let latest = format!(
            "{PRIVATE}&namespace={}&image_name={}&latest_version=true",
            pushed.namespace, pushed.image_name
        );
        for (ids, total) in both(&sim, &latest).await {
            assert_eq!((ids, total), (vec![pushed.id], 1));
        }
        // A namespace without the type gets a new repository.
        let fresh = sim.push("nowhere", "jfrog");
        assert_eq!(
            (fresh.image_name.as_str(), fresh.registry_name.as_str()),
            ("pushed", "jfrog-main")
        );
        assert!(fresh.id > pushed.id && fresh.latest_version);
        // Ids of deleted rows are never handed out again.
        assert!(sim.delete(fresh.id));
        assert!(sim.push("nowhere", "jfrog").id > fresh.id);
    }

    #[tokio::test]
    async fn a_delete_leaves_every_listing_and_total() {
        let sim = sim_with(300, None);
        let row = private_row(&sim);
        let [(old_ids, old_total), (new_ids, new_total)] = both(&sim, PRIVATE).await;
        assert!(old_ids.contains(&row.id) && new_ids.contains(&row.id));
        let (all, all_total) = sweep(&sim, NEW_PATH, "enterprise_project_id=all_granted_eps").await;
        assert!(sim.delete(row.id));
        assert!(!sim.delete(row.id));
        let [(old_after, old_total_after), (new_after, new_total_after)] =
            both(&sim, PRIVATE).await;
        assert!(!old_after.contains(&row.id) && !new_after.contains(&row.id));
        assert_eq!(
            (old_total_after, new_total_after),
            (old_total - 1, new_total - 1)
        );
        let (rest, rest_total) =
            sweep(&sim, NEW_PATH, "enterprise_project_id=all_granted_eps").await;
        assert_eq!((rest.len(), rest_total), (all.len() - 1, all_total - 1));
        let filtered = format!("{PRIVATE}&namespace={}", row.namespace);
        for (ids, total) in both(&sim, &filtered).await {
            assert!(!ids.contains(&row.id));
            assert_eq!(ids.len() as u64, total);
        }
        // A deleted latest version hands the role to the newest one left.
        let repo = |r: &SimImage, of: &SimImage| {
            r.namespace == of.namespace
                && r.image_name == of.image_name
                && r.image_type == of.image_type
                && r.registry_name == of.registry_name
                && r.enterprise_project_id == of.enterprise_project_id
        };
        let rows = sim.images();
        let latest = rows
            .iter()
            .find(|r| r.latest_version && rows.iter().filter(|o| repo(o, r)).count() > 1)
            .unwrap()
            .clone();
        assert!(sim.delete(latest.id));
        let left: Vec<SimImage> = sim
            .images()
            .into_iter()
            .filter(|r| repo(r, &latest))
            .collect();
        assert_eq!(left.iter().filter(|r| r.latest_version).count(), 1);
        let newest = left
            .iter()
            .max_by_key(|r| (r.latest_update_time, r.id))
            .unwrap();
        assert!(newest.latest_version);
        let kinds: Vec<_> = sim.churn_log().iter().map(|e| e.kind).collect();
        assert_eq!(kinds, vec![crate::ChurnKind::Delete; 2]);
    }

    /// Repositories with more than one latest version, or none.
    fn bad_repositories(rows: &[SimImage]) -> Vec<String> {
        let mut latest: HashMap<String, usize> = HashMap::new();
        for r in rows {
            let key = format!(
                "{}|{}|{}|{}|{}|{}",
                r.namespace,
                r.image_name,
                r.image_type,
                r.enterprise_project_id,
                r.registry_name,
                r.instance_id
            );
            *latest.entry(key).or_insert(0) += usize::from(r.latest_version);
        }
        latest
            .into_iter()
            .filter(|(_, n)| *n != 1)
            .map(|(k, _)| k)
            .collect()
    }

    #[test]
    fn churn_ticks_follow_the_seed_and_keep_the_rows_consistent() {
        use crate::{Churn, ChurnKind};
        type Key = (ChurnKind, u64, String, String, String);
        let config = |seed| SimConfig {
            seed,
            images: 2000,
            namespaces: 20,
            base_time_ms: BASE,
            churn: Some(Churn {
                malicious_rate: 0.5,
                ..Churn::new(60, Duration::from_secs(60))
            }),
            ..SimConfig::default()
        };
        let run = |seed| {
            let sim = Simulator::new(config(seed));
            assert!(bad_repositories(&sim.images()).is_empty());
            let ticks: Vec<Vec<ChurnEvent>> = (0..100).map(|_| sim.churn_tick()).collect();
            (sim, ticks)
        };
        let keys = |ticks: &[Vec<ChurnEvent>]| -> Vec<Vec<Key>> {
            ticks
                .iter()
                .map(|t| {
                    t.iter()
                        .map(|e| {
                            (
                                e.kind,
                                e.id,
                                e.namespace.clone(),
                                e.image_type.clone(),
                                e.enterprise_project_id.clone(),
                            )
                        })
                        .collect()
                })
                .collect()
        };
        let (sim, ticks) = run(7);
        let (twin, twin_ticks) = run(7);
        let (_, other_ticks) = run(8);
        assert_eq!(keys(&ticks), keys(&twin_ticks));
        assert_ne!(keys(&ticks), keys(&other_ticks));
        let strip = |rows: Vec<SimImage>| -> Vec<SimImage> {
            rows.into_iter()
                .map(|r| SimImage {
                    latest_scan_time: 0,
                    latest_update_time: 0,
                    latest_sync_time: 0,
                    ..r
                })
                .collect()
        };
        assert_eq!(strip(sim.images()), strip(twin.images()));

        // 60 a minute in ticks of 6 s: 6 changes every tick.
        assert!(
            ticks.iter().all(|t| t.len() == 6),
            "{:?}",
            ticks.iter().map(Vec::len).collect::<Vec<_>>()
        );
        let mut counts: HashMap<ChurnKind, usize> = HashMap::new();
        let mut last_at = i64::MIN;
        let mut pushed = HashSet::new();
        for tick in &ticks {
            // One time per tick, later than the tick before.
            assert!(tick.iter().all(|e| e.at_ms == tick[0].at_ms));
            assert!(tick[0].at_ms > last_at);
            last_at = tick[0].at_ms;
            // The changes started by a tick are in one namespace.
            let started: HashSet<&str> = tick
                .iter()
                .filter(|e| e.kind != ChurnKind::Scanned)
                .map(|e| e.namespace.as_str())
                .collect();
            assert!(started.len() <= 1, "{started:?}");
            for e in tick {
                *counts.entry(e.kind).or_insert(0) += 1;
                match e.kind {
                    ChurnKind::Push => {
                        pushed.insert(e.id);
                    }
                    ChurnKind::Scanned => assert!(pushed.contains(&e.id)),
                    _ => {}
                }
            }
        }
        for kind in [
            ChurnKind::Rescan,
            ChurnKind::Push,
            ChurnKind::Delete,
            ChurnKind::Scanned,
        ] {
            assert!(counts.get(&kind).copied().unwrap_or(0) > 5, "{counts:?}");
        }
        assert_eq!(sim.churn_log().len(), 600);

        let rows = sim.images();
        assert!(rows.windows(2).all(|w| w[0].id < w[1].id));
        assert!(
            bad_repositories(&rows).is_empty(),
            "{:?}",
            bad_repositories(&rows)
        );
        let log = sim.churn_log();
        let deleted: HashSet<u64> = log
            .iter()
            .filter(|e| e.kind == ChurnKind::Delete)
            .map(|e| e.id)
            .collect();
        assert!(rows.iter().all(|r| !deleted.contains(&r.id)));
        for e in log.iter().filter(|e| e.kind != ChurnKind::Delete) {
            let Some(row) = rows.iter().find(|r| r.id == e.id) else {
                continue;
            };
            if e.kind == ChurnKind::Push {
                assert!(row.latest_update_time >= e.at_ms);
            } else {
                assert!(row.latest_scan_time >= e.at_ms);
                assert!(matches!(row.scan_status.as_str(), "success" | "failed"));
            }
        }
        let mut changed_malicious = 0;
        for row in rows.iter().filter(|r| r.latest_scan_time > BASE) {
            assert_eq!(
                row.severity_level,
                data::severity_level(&row.scan_status, row.vul_num),
                "{row:?}"
            );
            if row.scan_status == "failed" {
                assert!(!row.scan_failed_desc.is_empty());
                assert_eq!(row.vul_num + row.malicious_file_num, 0);
            } else {
                assert!(row.scan_failed_desc.is_empty());
                changed_malicious += usize::from(row.malicious_file_num > 0);
            }
        }
        assert!(changed_malicious > 0);
    }

    #[test]
    fn the_clock_offset_shifts_every_change() {
        for offset in [3_600_000i64, -90_000] {
            let sim = Simulator::new(SimConfig {
                images: 100,
                base_time_ms: BASE,
                clock_offset_ms: offset,
                ..SimConfig::default()
            });
            let row = sim.images()[0].clone();
            let before = crate::now_ms() + offset;
            let rescanned = sim.rescan(row.id, 1, 0, 0).unwrap();
            let pushed = sim.push(&row.namespace, &row.image_type);
            let marked = sim.set_malicious("ns", "img", "1.0", "private_image", "0", 2);
            let after = crate::now_ms() + offset;
            for t in [
                rescanned.latest_scan_time,
                pushed.latest_update_time,
                marked.latest_scan_time,
            ] {
                // + 3: the clock adds 1 ms per change when the wall clock stands still.
                assert!(before <= t && t <= after + 3, "{before} {t} {after}");
            }
            let clock = sim.clock_ms();
            assert!(clock >= marked.latest_scan_time && clock <= crate::now_ms() + offset + 3);
            assert!(sim.churn_log().iter().all(|e| e.at_ms >= before));
        }
    }
}
