//! The listings' parameters and rows: reading and checking a query (paging
//! limits [`MAX_LIMIT`] and [`MAX_OFFSET`], filters, enterprise projects),
//! selecting the rows a filter matches (cached per data version, behind a
//! lagging index when [`SimConfig::index_lag`](crate::SimConfig::index_lag)
//! is set), and serialising one page in the API's form, with the faults that
//! shape pages.
//!
//! Place in the project: part of the simulator's HTTP side (`server`); the
//! listing handler comes here once a call has passed authentication, quota
//! and faults.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};

use super::{ApiError, Simulator};
use crate::data::{self, SimImage};
use crate::{Api, Faults};

/// Largest `limit` accepted.
pub const MAX_LIMIT: u64 = 200;

/// Largest `offset` accepted.
pub const MAX_OFFSET: u64 = 2_000_000;

/// Matching row indices per filter, valid for one [`Dataset`](super::rows::Dataset) version.
#[derive(Default)]
pub(super) struct MatchCache {
    version: u64,
    entries: HashMap<String, Arc<Vec<usize>>>,
}

/// Filters remembered in the [`MatchCache`] before it starts over.
const MATCH_CACHE_ENTRIES: usize = 32;

/// Listing parameters after validation.
#[derive(Debug)]
pub(super) struct ListQuery {
    offset: usize,
    limit: usize,
    filter: Filter,
}

/// The parameters that select rows.
#[derive(Debug)]
struct Filter {
    api: Api,
    /// `None` = every type of the API.
    image_type: Option<String>,
    /// `None` = `all_granted_eps`.
    enterprise_project_id: Option<String>,
    namespace: Option<String>,
    image_name: Option<String>,
    image_version: Option<String>,
    scan_status: Option<String>,
    instance_name: Option<String>,
    instance_id: Option<String>,
    latest_version: bool,
    has_vul: Option<bool>,
    has_malicious_file: Option<bool>,
    has_unsafe_setting: Option<bool>,
    update_time: (Option<i64>, Option<i64>),
    scan_time: (Option<i64>, Option<i64>),
    /// Successor API only; always unset on the old one.
    registry_name: Option<String>,
    severity_level: Option<String>,
    sync_time: (Option<i64>, Option<i64>),
}

impl Filter {
    fn matches(&self, row: &SimImage, forbidden_eps: &[String]) -> bool {
        fn eq(filter: &Option<String>, value: &str) -> bool {
            filter.as_deref().is_none_or(|f| f == value)
        }
        fn flag(filter: Option<bool>, count: i64) -> bool {
            filter.is_none_or(|wanted| wanted == (count > 0))
        }
        fn within(range: (Option<i64>, Option<i64>), value: i64) -> bool {
            range.0.is_none_or(|start| value >= start) && range.1.is_none_or(|end| value <= end)
        }
        let type_matches = match &self.image_type {
            Some(image_type) => row.image_type == *image_type,
            None => self.api.image_types().contains(&row.image_type.as_str()),
        };
        type_matches
            && match &self.enterprise_project_id {
                Some(ep) => row.enterprise_project_id == *ep,
                None => !forbidden_eps.contains(&row.enterprise_project_id),
            }
            && eq(&self.namespace, &row.namespace)
            && eq(&self.image_name, &row.image_name)
            && eq(&self.image_version, &row.image_version)
            && eq(&self.scan_status, &row.scan_status)
            && eq(&self.instance_name, &row.instance_name)
            && eq(&self.instance_id, &row.instance_id)
            && (!self.latest_version || row.latest_version)
            && flag(self.has_vul, row.vul_num)
            && flag(self.has_malicious_file, row.malicious_file_num)
            && flag(self.has_unsafe_setting, row.unsafe_setting_num)
            && within(self.update_time, row.latest_update_time)
            && within(self.scan_time, row.latest_scan_time)
            && eq(&self.registry_name, &row.registry_name)
            && eq(&self.severity_level, &row.severity_level)
            && within(self.sync_time, row.latest_sync_time)
    }
}

/// Looks a parameter up (first occurrence); an empty value counts as absent.
pub(super) fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
        .filter(|value| !value.is_empty())
}

fn parse_bool(params: &[(String, String)], name: &str) -> Result<Option<bool>, ApiError> {
    match param(params, name) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(other) => Err(ApiError::invalid(format!(
            "Invalid parameter: {name} must be true or false, got {other:?}"
        ))),
    }
}

fn parse_i64(params: &[(String, String)], name: &str) -> Result<Option<i64>, ApiError> {
    param(params, name)
        .map(|text| {
            text.parse::<i64>().map_err(|_| {
                ApiError::invalid(format!("Invalid parameter: {name} must be an integer"))
            })
        })
        .transpose()
}

fn parse_ranged(
    params: &[(String, String)],
    name: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<usize, ApiError> {
    let value = parse_i64(params, name)?.unwrap_or(default as i64);
    match u64::try_from(value) {
        Ok(v) if range.contains(&v) => Ok(usize::try_from(v).unwrap_or(usize::MAX)),
        _ => Err(ApiError::invalid(format!(
            "Invalid parameter: {name} must be between {} and {}",
            range.start(),
            range.end()
        ))),
    }
}

pub(super) fn parse_list_query(
    api: Api,
    params: &[(String, String)],
    faults: &Faults,
) -> Result<ListQuery, ApiError> {
    let image_type = match param(params, "image_type") {
        Some(t) if api.image_types().contains(&t) => Some(t.to_string()),
        Some(t) => {
            return Err(ApiError::invalid(format!(
                "Invalid parameter: image_type {t:?} is not one of {}",
                api.image_types().join(", ")
            )));
        }
        None if api.image_type_required() => {
            return Err(ApiError::invalid(
                "Invalid parameter: image_type is required",
            ));
        }
        None => None,
    };
    let limit = parse_ranged(params, "limit", 10, 1..=MAX_LIMIT)?;
    let offset = parse_ranged(params, "offset", 0, 0..=MAX_OFFSET)?;
    let own = |name: &str| param(params, name).map(str::to_string);
    // Parameters only the successor knows; the old API ignores them.
    let registry = |name: &str| own(name).filter(|_| api.registry_fields());
    let filter = Filter {
        api,
        image_type,
        enterprise_project_id: match param(params, "enterprise_project_id").unwrap_or("0") {
            "all_granted_eps" => None,
            ep => Some(ep.to_string()),
        },
        namespace: own("namespace"),
        image_name: own("image_name"),
        image_version: own("image_version"),
        scan_status: own("scan_status"),
        instance_name: own("instance_name"),
        instance_id: own("instance_id"),
        latest_version: parse_bool(params, "latest_version")?.unwrap_or(false),
        has_vul: parse_bool(params, "has_vul")?,
        has_malicious_file: parse_bool(params, "has_malicious_file")?,
        has_unsafe_setting: parse_bool(params, "has_unsafe_setting")?,
        update_time: (
            parse_i64(params, "start_latest_update_time")?,
            parse_i64(params, "end_latest_update_time")?,
        ),
        scan_time: (
            parse_i64(params, "start_latest_scan_time")?,
            parse_i64(params, "end_latest_scan_time")?,
        ),
        registry_name: registry("registry_name"),
        severity_level: registry("severity_level"),
        sync_time: if api.registry_fields() {
            (
                parse_i64(params, "start_latest_sync_time")?,
                parse_i64(params, "end_latest_sync_time")?,
            )
        } else {
            (None, None)
        },
    };
    // Documented, validated, but not a filter the simulator applies.
    parse_i64(params, "image_size")?;
    if let Some(ep) = &filter.enterprise_project_id
        && faults.forbidden_eps.contains(ep)
    {
        return Err(ApiError::new(
            403,
            "HSS.0013",
            format!("Insufficient permission for enterprise project {ep}"),
        ));
    }
    Ok(ListQuery {
        offset,
        limit,
        filter,
    })
}

impl Simulator {
    /// Filters the rows by reference and serialises one page in `api`'s
    /// form.
    pub(super) fn page(&self, api: Api, query: &ListQuery, faults: &Faults) -> Vec<u8> {
        let (version, images) = self.snapshot();
        let mut matching = self.matching(version, &images, &query.filter, &faults.forbidden_eps);
        if let Some(cutoff) = self.index_cutoff(&query.filter) {
            // A lagging index has not seen the rows changed after `cutoff`.
            let indexed = |&i: &usize| {
                images
                    .get(i)
                    .is_some_and(|row| row.latest_scan_time.max(row.latest_update_time) <= cutoff)
            };
            matching = Arc::new(matching.iter().copied().filter(indexed).collect());
        }
        let start = if faults.duplicate_rows && query.limit > 0 {
            // Page k starts k rows early, so it repeats the last row of page
            // k - 1 and still holds at most `limit` rows.
            query.offset - query.offset / query.limit
        } else {
            query.offset
        };
        let end = start.saturating_add(query.limit).min(matching.len());
        let rows: Vec<&SimImage> = matching
            .get(start..end)
            .unwrap_or_default()
            .iter()
            .filter_map(|&i| images.get(i))
            .collect();
        let mut total_num = i64::try_from(matching.len()).unwrap_or(i64::MAX);
        if query.offset > 0 {
            total_num = total_num.saturating_add(faults.total_num_drift).max(0);
        }
        data::page_json(
            total_num,
            &rows,
            faults.loose_types,
            api,
            faults.empty_data_list,
        )
    }

    /// With an index lag and a filter that goes through the index (a
    /// `start_latest_scan_time` or `start_latest_update_time`), the latest
    /// change time the index has seen: rows changed after it are left out.
    fn index_cutoff(&self, filter: &Filter) -> Option<i64> {
        let lag = self.inner.index_lag;
        if lag.is_zero() || (filter.scan_time.0.is_none() && filter.update_time.0.is_none()) {
            return None;
        }
        let lag_ms = i64::try_from(lag.as_millis()).unwrap_or(i64::MAX);
        Some(self.inner.clock.peek().saturating_sub(lag_ms))
    }

    /// Indices (into `images`, in id order) of the rows `filter` selects.
    fn matching(
        &self,
        version: u64,
        images: &[SimImage],
        filter: &Filter,
        forbidden_eps: &[String],
    ) -> Arc<Vec<usize>> {
        let key = format!("{filter:?}|{forbidden_eps:?}");
        {
            let cache = self
                .inner
                .matches
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if cache.version == version
                && let Some(hit) = cache.entries.get(&key)
            {
                return Arc::clone(hit);
            }
        }
        let found: Arc<Vec<usize>> = Arc::new(
            images
                .iter()
                .enumerate()
                .filter(|(_, row)| filter.matches(row, forbidden_eps))
                .map(|(i, _)| i)
                .collect(),
        );
        let mut cache = self
            .inner
            .matches
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // A result from older data than the cache holds is not kept.
        if version >= cache.version {
            if cache.version != version || cache.entries.len() >= MATCH_CACHE_ENTRIES {
                cache.entries.clear();
                cache.version = version;
            }
            cache.entries.insert(key, Arc::clone(&found));
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::SimConfig;
    use axum::http::{StatusCode, header};
    use hss_api::signer;
    use serde_json::{Value, json};
    use std::time::Duration;

    #[tokio::test]
    async fn pages_cover_the_listing_in_id_order() {
        let sim = sim_with(1000, None);
        let expected: Vec<u64> = sim
            .images()
            .iter()
            .filter(|r| r.image_type == "private_image" && r.enterprise_project_id == "0")
            .map(|r| r.id)
            .collect();
        assert!(expected.len() > 200, "{}", expected.len());
        let mut seen = Vec::new();
        let mut offset = 0;
        while offset < expected.len() {
            let reply = list(
                &sim,
                &format!("image_type=private_image&limit=200&offset={offset}"),
            )
            .await;
            assert_eq!(reply.status, StatusCode::OK);
            assert_eq!(
                reply.headers[header::CONTENT_TYPE],
                "application/json;charset=UTF-8"
            );
            assert_eq!(reply.json()["total_num"], expected.len());
            let ids = reply.ids();
            assert!(ids.len() <= 200);
            seen.extend(ids);
            offset += 200;
        }
        assert_eq!(seen, expected);
        // Default limit is 10; past the end the page is empty.
        assert_eq!(list(&sim, "image_type=private_image").await.ids().len(), 10);
        let past = list(&sim, "image_type=private_image&offset=2000000").await;
        assert_eq!(past.status, StatusCode::OK);
        assert!(past.ids().is_empty());
        // Changes to the data show on the next call with the same filter.
        sim.add_image(SimImage {
            id: 1,
            image_type: "private_image".into(),
            enterprise_project_id: "0".into(),
            ..SimImage::default()
        });
        let reply = list(&sim, "image_type=private_image&limit=200&offset=0").await;
        assert_eq!(reply.json()["total_num"], expected.len() + 1);
        assert_eq!(reply.ids()[0], 1);
    }

    #[tokio::test]
    async fn bad_parameters_are_refused_with_hss_0001() {
        let sim = sim_with(50, None);
        for query in [
            "image_type=private_image&limit=201",
            "image_type=private_image&limit=0",
            "image_type=private_image&limit=ten",
            "image_type=private_image&offset=-1",
            "image_type=private_image&offset=2000001",
            "limit=10",
            "image_type=harbor",
            "image_type=private_image&has_vul=yes",
            "image_type=private_image&latest_version=1",
            "image_type=private_image&start_latest_scan_time=yesterday",
        ] {
            let reply = list(&sim, query).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
            assert_eq!(reply.error_code(), "HSS.0001", "{query}");
            assert!(reply.json().get("request_id").is_none());
        }
        let ok = list(&sim, "image_type=local_image&limit=200").await;
        assert_eq!(
            (ok.status, ok.json()["total_num"].as_u64()),
            (StatusCode::OK, Some(0))
        );
    }

    #[tokio::test]
    async fn filters_narrow_the_result() {
        let sim = sim_with(1000, None);
        let rows = sim.images();
        let count = |f: &dyn Fn(&SimImage) -> bool| {
            rows.iter()
                .filter(|r| r.image_type == "private_image" && r.enterprise_project_id == "0")
                .filter(|r| f(r))
                .count() as u64
        };
        let total = |reply: Reply| {
            assert_eq!(reply.status, StatusCode::OK);
            reply.json()["total_num"].as_u64().unwrap()
        };
        let p = "image_type=private_image&limit=200";
        let cjk = signer::percent_encode("支付-团队");
        assert_eq!(
            total(list(&sim, &format!("{p}&namespace={cjk}")).await),
            count(&|r| r.namespace == "支付-团队")
        );
        assert!(count(&|r| r.namespace == "支付-团队") > 0);
        assert_eq!(
            total(list(&sim, &format!("{p}&latest_version=true")).await),
            count(&|r| r.latest_version)
        );
        assert_eq!(
            total(list(&sim, &format!("{p}&latest_version=false")).await),
            count(&|_| true)
        );
        assert_eq!(
            total(list(&sim, &format!("{p}&has_vul=false")).await),
            count(&|r| r.vul_num == 0)
        );
        assert_eq!(
            total(
                list(
                    &sim,
                    &format!("{p}&has_unsafe_setting=true&scan_status=success")
                )
                .await
            ),
            count(&|r| r.unsafe_setting_num > 0 && r.scan_status == "success")
        );
        let since = BASE - 7 * 86_400_000;
        assert_eq!(
            total(
                list(
                    &sim,
                    &format!("{p}&start_latest_scan_time={since}&end_latest_scan_time={BASE}")
                )
                .await
            ),
            count(&|r| r.latest_scan_time >= since && r.latest_scan_time <= BASE)
        );
        assert_eq!(
            total(list(&sim, &format!("{p}&end_latest_update_time={since}")).await),
            count(&|r| r.latest_update_time <= since)
        );
        let row = rows
            .iter()
            .find(|r| r.image_type == "private_image" && r.enterprise_project_id == "0")
            .unwrap();
        let exact = list(
            &sim,
            &format!(
                "{p}&namespace={}&image_name={}&image_version={}",
                signer::percent_encode(&row.namespace),
                row.image_name,
                row.image_version
            ),
        )
        .await;
        assert_eq!(exact.ids(), vec![row.id]);

        // Malicious rows, also across every enterprise project.
        let all_malicious = rows
            .iter()
            .filter(|r| r.image_type == "private_image" && r.malicious_file_num > 0)
            .count() as u64;
        let reply = list(
            &sim,
            "image_type=private_image&has_malicious_file=true&enterprise_project_id=all_granted_eps&limit=200",
        )
        .await;
        assert_eq!(total(reply), all_malicious);

        // Instance filters, with a CJK instance name.
        let instance = signer::percent_encode("企业实例-生产");
        let reply = list(
            &sim,
            &format!("image_type=instance_image&enterprise_project_id=all_granted_eps&instance_name={instance}&limit=200"),
        )
        .await;
        let expected = rows
            .iter()
            .filter(|r| r.instance_name == "企业实例-生产")
            .count() as u64;
        assert!(expected > 0);
        assert_eq!(total(reply), expected);
        // `+` reads as a space, as on the real service.
        sim.add_image(SimImage {
            id: 999_999,
            namespace: "a b".into(),
            image_type: "private_image".into(),
            enterprise_project_id: "0".into(),
            ..SimImage::default()
        });
        assert_eq!(
            list(&sim, &format!("{p}&namespace=a+b")).await.ids(),
            vec![999_999]
        );
    }

    #[tokio::test]
    async fn enterprise_projects_select_rows_and_forbidden_ones_get_403() {
        let sim = sim_with(1000, None);
        let rows = sim.images();
        let in_ep = |ep: &str| {
            rows.iter()
                .filter(|r| r.image_type == "shared_image" && r.enterprise_project_id == ep)
                .count() as u64
        };
        let total = |reply: Reply| reply.json()["total_num"].as_u64().unwrap();
        let p = "image_type=shared_image";
        assert_eq!(total(list(&sim, p).await), in_ep("0"));
        assert_eq!(
            total(list(&sim, &format!("{p}&enterprise_project_id=0")).await),
            in_ep("0")
        );
        assert_eq!(
            total(list(&sim, &format!("{p}&enterprise_project_id=ep-finance")).await),
            in_ep("ep-finance")
        );
        let all = in_ep("0") + in_ep("ep-finance") + in_ep("ep-platform");
        let query = format!("{p}&enterprise_project_id=all_granted_eps");
        assert_eq!(total(list(&sim, &query).await), all);

        sim.set_faults(Faults {
            forbidden_eps: vec!["ep-finance".into()],
            ..Faults::default()
        });
        let reply = list(&sim, &format!("{p}&enterprise_project_id=ep-finance")).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        assert_eq!(reply.error_code(), "HSS.0013");
        assert_eq!(total(list(&sim, &query).await), all - in_ep("ep-finance"));
    }

    #[tokio::test]
    async fn empty_pages_carry_data_list_as_the_fault_says() {
        let sim = sim_with(50, None);
        let q = "image_type=private_image&offset=1000";
        assert_eq!(list(&sim, q).await.json()["data_list"], json!([]));
        for (empty, want) in [
            (data::EmptyDataList::Null, Some(Value::Null)),
            (data::EmptyDataList::Missing, None),
        ] {
            sim.set_faults(Faults {
                empty_data_list: empty,
                ..Faults::default()
            });
            let body = list(&sim, q).await.json();
            assert_eq!(body.get("data_list").cloned(), want, "{empty:?}");
            assert!(
                body["total_num"].as_u64().unwrap() > 0,
                "total_num as usual"
            );
            // Pages with rows are unchanged.
            let full = list_new(&sim, "limit=5").await.json();
            assert_eq!(full["data_list"].as_array().unwrap().len(), 5);
        }
    }

    #[tokio::test]
    async fn drift_duplicates_and_loose_types() {
        let sim = sim_with(1000, None);
        sim.set_faults(Faults {
            total_num_drift: 3,
            duplicate_rows: true,
            ..Faults::default()
        });
        let q = "image_type=private_image&limit=50&enterprise_project_id=all_granted_eps";
        let first = list(&sim, q).await;
        let second = list(&sim, &format!("{q}&offset=50")).await;
        let total = first.json()["total_num"].as_i64().unwrap();
        assert_eq!(second.json()["total_num"].as_i64().unwrap(), total + 3);
        let third = list(&sim, &format!("{q}&offset=100")).await;
        let (a, b, c) = (first.ids(), second.ids(), third.ids());
        // Each page repeats the last row of the one before and still holds
        // at most `limit` rows.
        assert_eq!((a.len(), b.len(), c.len()), (50, 50, 50));
        assert_eq!(b[0], a[49]);
        assert_eq!(c[0], b[49]);

        sim.set_faults(Faults {
            loose_types: true,
            ..Faults::default()
        });
        let loose = list(&sim, "image_type=private_image&limit=200")
            .await
            .json();
        let list = loose["data_list"].as_array().unwrap();
        assert!(list.iter().any(|r| r["id"].is_string()));
        assert!(list.iter().any(|r| r["id"].is_u64()));
        assert!(loose["total_num"].is_u64());
    }

    #[tokio::test]
    async fn both_apis_serve_the_same_swr_rows() {
        let sim = sim_with(3000, None);
        for image_type in ["private_image", "shared_image", "instance_image"] {
            for ep in ["0", "ep-finance", "all_granted_eps"] {
                let q = format!("image_type={image_type}&enterprise_project_id={ep}");
                let (old, old_total) = sweep(&sim, PATH, &q).await;
                let (new, new_total) = sweep(&sim, NEW_PATH, &q).await;
                assert!(!old.is_empty(), "{q}");
                assert_eq!(old_total, old.len() as u64, "{q}");
                assert_eq!(new_total, old_total, "{q}");
                assert_eq!(new.len(), old.len(), "{q}");
                for (a, b) in old.iter().zip(&new) {
                    for key in crate::data::OLD_API_FIELDS
                        .iter()
                        .filter(|k| **k != "scan_failed_desc")
                    {
                        assert_eq!(a[*key], b[*key], "{q} {key}");
                    }
                    // The new fields only on the successor.
                    for key in crate::data::NEW_API_FIELDS {
                        assert!(a.get(key).is_none(), "{q} {key}");
                        assert!(b.get(key).is_some(), "{q} {key}");
                    }
                    // The old listing's scan_failed_desc is the code; the
                    // successor's is scan_failed_code, beside a description.
                    assert_eq!(b["scan_failed_code"], a["scan_failed_desc"]);
                    assert_eq!(
                        b["scan_failed_desc"],
                        data::scan_failed_description(a["scan_failed_desc"].as_str().unwrap())
                    );
                    assert_eq!(b["is_multiple_arch"], false);
                }
            }
        }
        // The same filters narrow both the same way.
        let q = "image_type=private_image&has_vul=true&latest_version=true&scan_status=success";
        let (old, _) = sweep(&sim, PATH, q).await;
        let (new, _) = sweep(&sim, NEW_PATH, q).await;
        let ids = |rows: &[Value]| rows.iter().map(|r| r["id"].clone()).collect::<Vec<_>>();
        assert_eq!(ids(&old), ids(&new));
        assert!(!old.is_empty());
    }

    #[tokio::test]
    async fn harbor_and_jfrog_only_on_the_successor() {
        let sim = sim_with(2000, None);
        let rows = sim.images();
        let count = |t: &str| {
            rows.iter()
                .filter(|r| r.image_type == t && r.enterprise_project_id == "0")
                .count() as u64
        };
        for image_type in ["harbor", "jfrog"] {
            let q = format!("image_type={image_type}");
            let (listed, total) = sweep(&sim, NEW_PATH, &q).await;
            assert!(total > 0 && total == count(image_type), "{image_type}");
            assert!(listed.iter().all(|r| r["image_type"] == image_type));
            // The old API refuses these types.
            let refused = list(&sim, &format!("{q}&limit=200")).await;
            assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{image_type}");
            assert_eq!(refused.error_code(), "HSS.0001");
        }
        // local_image exists only on the old API.
        let refused = list_new(&sim, "image_type=local_image").await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
        assert_eq!(refused.error_code(), "HSS.0001");
        assert!(
            refused.json()["error_msg"]
                .as_str()
                .unwrap()
                .contains("private_image, shared_image, instance_image, harbor, jfrog")
        );
        assert_eq!(
            list(&sim, "image_type=local_image").await.status,
            StatusCode::OK
        );
        // Without image_type: every type of the successor (the old API
        // requires it); a local_image row is not among them.
        sim.add_image(SimImage {
            id: 9_000_000,
            image_type: "local_image".into(),
            enterprise_project_id: "0".into(),
            ..SimImage::default()
        });
        let (every, total) = sweep(&sim, NEW_PATH, "enterprise_project_id=0").await;
        let want: u64 = data::REGISTRY_IMAGE_TYPES.iter().map(|t| count(t)).sum();
        assert_eq!((every.len() as u64, total), (want, want));
        let ids: Vec<u64> = every.iter().map(|r| r["id"].as_u64().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "id order");
        assert_eq!(
            list(&sim, "enterprise_project_id=0").await.status,
            StatusCode::BAD_REQUEST
        );
        // The same parameter checks: limit 1..=200.
        for query in [
            "limit=0",
            "limit=201",
            "limit=ten",
            "offset=-1",
            "has_vul=yes",
            "image_type=swr",
            "start_latest_sync_time=soon",
        ] {
            let reply = list_new(&sim, query).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
            assert_eq!(reply.error_code(), "HSS.0001", "{query}");
        }
        assert_eq!(list_new(&sim, "limit=1").await.ids().len(), 1);
        assert_eq!(list_new(&sim, "limit=200").await.ids().len(), 200);
        assert_eq!(list_new(&sim, "").await.ids().len(), 10);
    }

    #[tokio::test]
    async fn registry_and_severity_filters() {
        let sim = sim_with(2000, None);
        let rows = sim.images();
        let all = "enterprise_project_id=all_granted_eps";
        let count = |f: &dyn Fn(&SimImage) -> bool| rows.iter().filter(|r| f(r)).count() as u64;
        let total = |reply: Reply| {
            assert_eq!(reply.status, StatusCode::OK);
            reply.json()["total_num"].as_u64().unwrap()
        };
        for registry in [
            "swr-private",
            "swr-shared",
            "harbor-prod",
            "harbor-dev",
            "jfrog-main",
        ] {
            let want = count(&|r| r.registry_name == registry);
            assert!(want > 0, "{registry}");
            let reply = list_new(&sim, &format!("{all}&registry_name={registry}")).await;
            assert_eq!(total(reply), want, "{registry}");
        }
        let instance = signer::percent_encode("企业实例-生产");
        let reply = list_new(
            &sim,
            &format!("{all}&image_type=instance_image&registry_name={instance}"),
        )
        .await;
        assert_eq!(
            total(reply),
            count(&|r| r.image_type == "instance_image" && r.instance_name == "企业实例-生产")
        );
        // Exact names only, and type and registry together.
        assert_eq!(total(list_new(&sim, "registry_name=harbor").await), 0);
        assert_eq!(
            total(
                list_new(
                    &sim,
                    &format!("{all}&image_type=jfrog&registry_name=harbor-dev")
                )
                .await
            ),
            0
        );
        for level in data::SEVERITY_LEVELS {
            let want = count(&|r| r.severity_level == level);
            assert!(want > 0, "{level}");
            let reply = list_new(&sim, &format!("{all}&severity_level={level}")).await;
            assert_eq!(total(reply), want, "{level}");
            let reply = list_new(
                &sim,
                &format!("{all}&image_type=harbor&registry_name=harbor-dev&severity_level={level}"),
            )
            .await;
            assert_eq!(
                total(reply),
                count(&|r| r.registry_name == "harbor-dev" && r.severity_level == level)
            );
        }
        let (high, _) = sweep(&sim, NEW_PATH, &format!("{all}&severity_level=High")).await;
        assert!(high.iter().all(|r| r["vul_num"].as_i64().unwrap() >= 100));
        // Sync time range.
        let since = BASE - 30 * 86_400_000;
        assert_eq!(
            total(list_new(&sim, &format!("{all}&start_latest_sync_time={since}")).await),
            count(&|r| r.latest_sync_time >= since)
        );
        // The old API knows none of these parameters and ignores them.
        let q = "image_type=private_image&enterprise_project_id=all_granted_eps";
        let plain = total(list(&sim, q).await);
        assert_eq!(
            total(
                list(
                    &sim,
                    &format!("{q}&registry_name=nothing&severity_level=High")
                )
                .await
            ),
            plain
        );
    }

    #[tokio::test]
    async fn index_lag_hides_fresh_rows_from_filtered_listings_only() {
        let sim = Simulator::new(SimConfig {
            images: 300,
            base_time_ms: BASE,
            tokens: vec!["tok".to_string()],
            index_lag: Duration::from_secs(60),
            ..SimConfig::default()
        });
        let row = private_row(&sim);
        let rescanned = sim.rescan(row.id, 5, 0, 0).unwrap();
        let t = rescanned.latest_scan_time;
        let filtered = format!("{PRIVATE}&start_latest_scan_time={t}");
        for (ids, total) in both(&sim, &filtered).await {
            assert_eq!((ids, total), (vec![], 0), "the index has not seen it yet");
        }
        let pushed = sim.push(&row.namespace, "private_image");
        let by_update = format!(
            "{PRIVATE}&start_latest_update_time={}",
            pushed.latest_update_time
        );
        for (ids, total) in both(&sim, &by_update).await {
            assert_eq!((ids, total), (vec![], 0));
        }
        // Listings without a start filter are never behind.
        let plain = format!("{PRIVATE}&namespace={}", row.namespace);
        let ended = format!("{PRIVATE}&end_latest_scan_time={t}");
        for query in [plain.as_str(), ended.as_str(), PRIVATE] {
            for (ids, total) in both(&sim, query).await {
                assert!(ids.contains(&row.id), "{query}");
                assert_eq!(ids.len() as u64, total);
            }
        }
        for (ids, _) in both(&sim, &plain).await {
            assert!(ids.contains(&pushed.id));
        }
        // A change older than the lag is indexed.
        let old_time = sim.clock_ms() - 61_000;
        sim.add_image(SimImage {
            id: 99_999,
            latest_scan_time: old_time,
            latest_update_time: old_time - 1000,
            ..rescanned.clone()
        });
        let old = format!("{PRIVATE}&start_latest_scan_time={}", old_time);
        for (ids, total) in both(&sim, &old).await {
            assert_eq!((ids, total), (vec![99_999], 1));
        }
    }
}
