//! The scheduler: runs each scope's lanes, pages through listings, and
//! publishes results.
//!
//! Place in the data flow: below the configuration, above the client. For each
//! scope, the sweep lane lists every page every `poll_interval` (a sweep that
//! overruns starts the next one as soon as it ends), feeds the rows into an
//! aggregator, and publishes the snapshot in one step when the last page is in.
//! A failed run publishes nothing: the previous snapshot stays until it is
//! older than `stale_after`. Paging plans the remaining pages from the first
//! page's `total_num` and keeps up to `concurrency` in flight; the shared
//! budget decides when each one is sent. [`list_all`] is lane-agnostic, so a
//! second lane is another filter and priority over the same code.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::aggregate::Aggregator;
use super::{Error, Lane, ScopeHandle};
use crate::collect::source::ImageSource;
use crate::hss::{ListQuery, Page, Priority};

/// The largest offset the API accepts.
pub const MAX_OFFSET: u64 = 2_000_000;

/// How lanes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Sweep period.
    pub poll_interval: Duration,
    /// Rows per page.
    pub page_size: u32,
    /// Pages in flight per listing.
    pub concurrency: usize,
    /// Keep per-image series.
    pub image_metrics: bool,
    /// Cap on per-image series per scope.
    pub max_image_series: usize,
}

/// What paging through one listing took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListingStats {
    /// Pages fetched.
    pub pages: u64,
    /// `total_num` of the first page.
    pub first_total: Option<u64>,
    /// Times `total_num` differed from the page before.
    pub total_changes: u64,
}

/// Pages through a whole listing: the first page, then the pages its
/// `total_num` calls for (more if a later page reports a larger total), up to
/// `concurrency` at a time. Each page goes to `on_page` as it arrives. Every
/// offset is asked for once; when `total_num` is unreadable, pages are fetched
/// one by one until a short page.
pub async fn list_all(
    source: &dyn ImageSource,
    template: &ListQuery,
    priority: Priority,
    concurrency: usize,
    mut on_page: impl FnMut(Page),
) -> Result<ListingStats, Error> {
    let page_size = u64::from(template.limit);
    let fetch = |offset: u64| {
        let query = ListQuery {
            offset,
            ..template.clone()
        };
        async move {
            source
                .list_page(&query, priority)
                .await
                .map_err(|source| Error::Page { offset, source })
        }
    };
    let first = fetch(0).await?;
    let mut stats = ListingStats {
        pages: 1,
        first_total: first.total_num,
        total_changes: 0,
    };
    let mut last_total = first.total_num;
    let mut short = (first.rows.len() as u64) < page_size;
    on_page(first);

    if last_total.is_none() {
        let mut offset = page_size;
        while !short {
            if offset > MAX_OFFSET {
                return Err(Error::TooLong(MAX_OFFSET));
            }
            let page = fetch(offset).await?;
            stats.pages += 1;
            short = (page.rows.len() as u64) < page_size;
            on_page(page);
            offset += page_size;
        }
        return Ok(stats);
    }

    let mut next_offset = page_size;
    let mut exhausted = false;
    let mut in_flight = FuturesUnordered::new();
    loop {
        while !exhausted
            && in_flight.len() < concurrency.max(1)
            && next_offset < last_total.unwrap_or(0)
        {
            if next_offset > MAX_OFFSET {
                return Err(Error::TooLong(MAX_OFFSET));
            }
            in_flight.push(fetch(next_offset));
            next_offset += page_size;
        }
        let Some(result) = in_flight.next().await else {
            break;
        };
        let page = result?;
        stats.pages += 1;
        if page.total_num.is_some() && page.total_num != last_total {
            stats.total_changes += 1;
            last_total = page.total_num;
        }
        if page.rows.is_empty() {
            // The listing shrank under us: no later page has rows either.
            exhausted = true;
        }
        on_page(page);
    }
    Ok(stats)
}

/// Runs one sweep of a scope and publishes it; returns whether it succeeded.
pub async fn sweep_once(
    handle: &ScopeHandle,
    source: &dyn ImageSource,
    settings: &Settings,
) -> bool {
    let started_wall = SystemTime::now();
    let started = Instant::now();
    handle.update_lane(Lane::Sweep, |s| s.running_since = Some(started_wall));
    let scope = &handle.scope;
    let template = ListQuery {
        enterprise_project_id: scope.enterprise_project_id.clone(),
        image_type: scope.image_type,
        offset: 0,
        limit: settings.page_size,
        latest_version: scope.latest_version_only,
        has_malicious_file: None,
    };
    let mut aggregator = Aggregator::new(settings.image_metrics);
    let result = list_all(
        source,
        &template,
        Priority::Low,
        settings.concurrency,
        |page| {
            for row in &page.rows {
                aggregator.add(row);
            }
        },
    )
    .await;
    let duration = started.elapsed();
    let counts = aggregator.counts();
    match result {
        Ok(stats) => {
            let snapshot =
                Arc::new(aggregator.finish(SystemTime::now(), settings.max_image_series));
            let images = snapshot.images;
            let namespaces = snapshot.namespaces.len() as u64;
            let was_down = {
                let status = handle.lane_status(Lane::Sweep);
                status.runs > 0 && !status.up
            };
            // Status first, then the snapshot: a scrape in between sees the old
            // snapshot as fresh, never the new one as stale.
            handle.update_lane(Lane::Sweep, |s| {
                s.runs += 1;
                s.up = true;
                s.running_since = None;
                s.last_run_end = Some(SystemTime::now());
                s.last_duration = Some(duration);
                s.last_success = s.last_run_end;
                s.last_success_at = Some(Instant::now());
                s.last_error = None;
                s.last_pages = stats.pages;
                s.last_images = images;
                s.last_namespaces = namespaces;
                s.duplicate_rows += counts.duplicates;
                s.total_changes += stats.total_changes;
            });
            handle.publish(Some(snapshot));
            if stats.total_changes > 0 {
                tracing::info!(
                    target_name = %scope.target,
                    enterprise_project_id = %scope.enterprise_project_id,
                    image_type = %scope.image_type,
                    changes = stats.total_changes,
                    "total_num changed during the sweep; the sweep completed"
                );
            }
            if was_down {
                tracing::info!(
                    target_name = %scope.target,
                    enterprise_project_id = %scope.enterprise_project_id,
                    image_type = %scope.image_type,
                    lane = Lane::Sweep.as_str(),
                    "lane recovered"
                );
            }
            tracing::debug!(
                target_name = %scope.target,
                enterprise_project_id = %scope.enterprise_project_id,
                image_type = %scope.image_type,
                images,
                namespaces,
                pages = stats.pages,
                duplicates = counts.duplicates,
                seconds = duration.as_secs_f64(),
                "sweep finished"
            );
            true
        }
        Err(error) => {
            let message = error.to_string();
            tracing::warn!(
                target_name = %scope.target,
                enterprise_project_id = %scope.enterprise_project_id,
                image_type = %scope.image_type,
                lane = Lane::Sweep.as_str(),
                error = %message,
                "lane run failed; the previous result stays published"
            );
            let stale = {
                let mut stale = false;
                handle.update_lane(Lane::Sweep, |s| {
                    s.runs += 1;
                    s.failures += 1;
                    s.up = false;
                    s.running_since = None;
                    s.last_run_end = Some(SystemTime::now());
                    s.last_duration = Some(duration);
                    s.last_error = Some(message);
                    s.last_pages = counts.rows.div_ceil(u64::from(settings.page_size).max(1));
                    s.duplicate_rows += counts.duplicates;
                    stale = s
                        .last_success_at
                        .is_some_and(|at| at.elapsed() > handle.stale_after);
                });
                stale
            };
            if stale && handle.snapshot().is_none() {
                // Free the memory of a result that is no longer served.
                handle.publish(None);
            }
            false
        }
    }
}

/// Runs a scope's sweep lane until `cancel` fires.
pub async fn run_sweep_lane(
    handle: Arc<ScopeHandle>,
    source: Arc<dyn ImageSource>,
    settings: Settings,
    cancel: CancellationToken,
) {
    loop {
        let started = Instant::now();
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = sweep_once(&handle, source.as_ref(), &settings) => {}
        }
        let next = (started + settings.poll_interval).max(Instant::now());
        let wait = next - Instant::now();
        handle.update_lane(Lane::Sweep, |s| s.next_run = Some(SystemTime::now() + wait));
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep_until(next) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;
    use crate::collect::{NamespaceKey, Scope};
    use crate::config::ImageType;
    use crate::hss::Row;
    use crate::hss::auth::BoxFuture;

    /// Rows in memory, with scripted failures and a call log.
    #[derive(Default)]
    struct FakeSource {
        rows: Mutex<Vec<Row>>,
        total_override: Mutex<VecDeque<Option<u64>>>,
        failures: Mutex<VecDeque<crate::hss::Error>>,
        calls: Mutex<Vec<(u64, u32)>>,
        latency: Duration,
    }

    impl FakeSource {
        fn with_rows(n: u64, namespaces: u64) -> Self {
            let rows = (0..n)
                .map(|i| Row {
                    id: Some(i),
                    namespace: format!("ns-{}", i % namespaces),
                    image_name: format!("img-{i}"),
                    image_version: "v1".into(),
                    scan_status: Some("success".into()),
                    vul_num: i % 7,
                    malicious_file_num: u64::from(i % 50 == 0),
                    ..Row::default()
                })
                .collect();
            Self {
                rows: Mutex::new(rows),
                ..Self::default()
            }
        }

        fn offsets(&self) -> Vec<u64> {
            let mut o: Vec<u64> = self.calls.lock().unwrap().iter().map(|c| c.0).collect();
            o.sort_unstable();
            o
        }
    }

    fn forbidden() -> crate::hss::Error {
        crate::hss::Error::Api {
            status: 403,
            code: "HSS.0013".into(),
            message: "insufficient permissions".into(),
            retry_after: None,
        }
    }

    impl ImageSource for FakeSource {
        fn list_page<'a>(
            &'a self,
            query: &'a ListQuery,
            _: Priority,
        ) -> BoxFuture<'a, Result<Page, crate::hss::Error>> {
            Box::pin(async move {
                self.calls.lock().unwrap().push((query.offset, query.limit));
                tokio::time::sleep(self.latency).await;
                if let Some(error) = self.failures.lock().unwrap().pop_front() {
                    return Err(error);
                }
                let rows = self.rows.lock().unwrap();
                let total = match self.total_override.lock().unwrap().pop_front() {
                    Some(total) => total,
                    None => Some(rows.len() as u64),
                };
                let start = (query.offset as usize).min(rows.len());
                let end = (start + query.limit as usize).min(rows.len());
                Ok(Page {
                    total_num: total,
                    rows: rows[start..end].to_vec(),
                    invalid_fields: Vec::new(),
                })
            })
        }
    }

    fn settings() -> Settings {
        Settings {
            poll_interval: Duration::from_secs(300),
            page_size: 200,
            concurrency: 4,
            image_metrics: false,
            max_image_series: 10,
        }
    }

    fn handle() -> Arc<ScopeHandle> {
        ScopeHandle::new(
            Scope {
                target: "t".into(),
                enterprise_project_id: "0".into(),
                image_type: ImageType::Private,
                latest_version_only: false,
            },
            Duration::from_secs(3600),
        )
    }

    fn ns(name: &str) -> NamespaceKey {
        NamespaceKey {
            instance_name: String::new(),
            namespace: name.into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn page_boundaries_fetch_each_page_once() {
        for (rows, expected_offsets) in [
            (0, vec![0]),
            (1, vec![0]),
            (200, vec![0]),
            (201, vec![0, 200]),
            (1000, vec![0, 200, 400, 600, 800]),
        ] {
            let source = FakeSource::with_rows(rows, 3);
            let h = handle();
            assert!(sweep_once(&h, &source, &settings()).await);
            assert_eq!(source.offsets(), expected_offsets, "{rows} rows");
            assert!(source.calls.lock().unwrap().iter().all(|c| c.1 == 200));
            let snap = h.snapshot().unwrap();
            assert_eq!(snap.images, rows, "{rows} rows");
            let status = h.lane_status(Lane::Sweep);
            assert_eq!(status.last_pages, expected_offsets.len() as u64);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_total_pages_until_a_short_page() {
        let source = FakeSource::with_rows(450, 3);
        source
            .total_override
            .lock()
            .unwrap()
            .extend([None, None, None, None]);
        let h = handle();
        assert!(sweep_once(&h, &source, &settings()).await);
        assert_eq!(source.offsets(), vec![0, 200, 400]);
        assert_eq!(h.snapshot().unwrap().images, 450);
    }

    #[tokio::test(start_paused = true)]
    async fn a_growing_total_is_followed_and_counted() {
        let source = FakeSource::with_rows(500, 3);
        // The first page says 300; the second says 500.
        source
            .total_override
            .lock()
            .unwrap()
            .extend([Some(300), Some(500), Some(500)]);
        let h = handle();
        let s = Settings {
            concurrency: 1,
            ..settings()
        };
        assert!(sweep_once(&h, &source, &s).await);
        assert_eq!(source.offsets(), vec![0, 200, 400]);
        assert_eq!(h.snapshot().unwrap().images, 500);
        assert_eq!(h.lane_status(Lane::Sweep).total_changes, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_sweep_keeps_the_previous_result() {
        let source = FakeSource::with_rows(300, 2);
        let h = handle();
        assert!(sweep_once(&h, &source, &settings()).await);
        let before = h.snapshot().unwrap();
        // The data changes, but the next sweep fails on its second page.
        source.rows.lock().unwrap().truncate(10);
        source
            .rows
            .lock()
            .unwrap()
            .extend(FakeSource::with_rows(600, 5).rows.into_inner().unwrap());
        source.failures.lock().unwrap().extend([]);
        let source_failing = FakeSource::with_rows(600, 5);
        source_failing
            .failures
            .lock()
            .unwrap()
            .push_back(forbidden());
        assert!(!sweep_once(&h, &source_failing, &settings()).await);
        let after = h.snapshot().unwrap();
        assert!(
            Arc::ptr_eq(&before, &after),
            "the old snapshot must stay published"
        );
        assert_eq!(after.images, 300);
        let status = h.lane_status(Lane::Sweep);
        assert!(!status.up);
        assert_eq!((status.runs, status.failures), (2, 1));
        assert_eq!(
            status.last_error.as_deref(),
            Some("page at offset 0: HTTP 403: HSS.0013: insufficient permissions")
        );
        assert!(status.last_success.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_mid_sweep_publishes_nothing_partial() {
        let source = FakeSource::with_rows(1000, 4);
        let h = handle();
        assert!(sweep_once(&h, &source, &settings()).await);
        let first = h.snapshot().unwrap();
        // Second sweep: page 1 works, a later page fails.
        let failing = FakeSource::with_rows(1000, 4);
        failing
            .rows
            .lock()
            .unwrap()
            .iter_mut()
            .for_each(|r| r.vul_num = 1000);
        {
            let mut f = failing.failures.lock().unwrap();
            f.push_back(crate::hss::Error::Timeout(Duration::from_secs(30)));
        }
        // First call (offset 0) fails -> nothing; use a fresh one failing later instead.
        failing.failures.lock().unwrap().clear();
        struct FailAt<'a>(&'a FakeSource, u64);
        impl ImageSource for FailAt<'_> {
            fn list_page<'a>(
                &'a self,
                q: &'a ListQuery,
                p: Priority,
            ) -> BoxFuture<'a, Result<Page, crate::hss::Error>> {
                Box::pin(async move {
                    if q.offset == self.1 {
                        return Err(crate::hss::Error::Timeout(Duration::from_secs(30)));
                    }
                    self.0.list_page(q, p).await
                })
            }
        }
        assert!(!sweep_once(&h, &FailAt(&failing, 600), &settings()).await);
        let after = h.snapshot().unwrap();
        assert!(Arc::ptr_eq(&first, &after));
        assert!(
            after
                .namespaces
                .values()
                .all(|n| n.vulnerabilities < 1000 * 250)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stale_results_are_dropped_after_stale_after() {
        let source = FakeSource::with_rows(10, 2);
        let h = handle();
        assert!(sweep_once(&h, &source, &settings()).await);
        assert!(h.snapshot().is_some());
        tokio::time::advance(Duration::from_secs(3599)).await;
        assert!(h.snapshot().is_some());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(h.snapshot().is_none(), "older than stale_after");
        source.failures.lock().unwrap().push_back(forbidden());
        assert!(!sweep_once(&h, &source, &settings()).await);
        assert!(h.snapshot().is_none());
        // A success brings the scope back at once.
        assert!(sweep_once(&h, &source, &settings()).await);
        assert_eq!(h.snapshot().unwrap().namespaces.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_vanished_namespace_loses_its_series_at_once() {
        let source = FakeSource::with_rows(10, 2);
        let h = handle();
        assert!(sweep_once(&h, &source, &settings()).await);
        assert!(h.snapshot().unwrap().namespaces.contains_key(&ns("ns-1")));
        source
            .rows
            .lock()
            .unwrap()
            .retain(|r| r.namespace == "ns-0");
        assert!(sweep_once(&h, &source, &settings()).await);
        let snap = h.snapshot().unwrap();
        assert!(!snap.namespaces.contains_key(&ns("ns-1")));
        assert_eq!(snap.namespaces[&ns("ns-0")].images(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn sweeps_repeat_every_poll_interval_and_overruns_start_at_once() {
        let source = Arc::new(FakeSource {
            latency: Duration::from_secs(100),
            ..FakeSource::with_rows(400, 2)
        });
        let h = handle();
        let cancel = CancellationToken::new();
        let s = Settings {
            concurrency: 1,
            ..settings()
        };
        let task = tokio::spawn(run_sweep_lane(
            Arc::clone(&h),
            source.clone(),
            s,
            cancel.clone(),
        ));
        // Each sweep takes 2 pages x 100 s = 200 s; the interval is 300 s.
        tokio::time::sleep(Duration::from_secs(1000)).await;
        assert_eq!(
            h.lane_status(Lane::Sweep).runs,
            3,
            "sweeps at 0, 300 and 600 s"
        );
        cancel.cancel();
        task.await.unwrap();

        // With 4 pages (400 s), the next sweep starts as soon as one ends.
        let slow = Arc::new(FakeSource {
            latency: Duration::from_secs(100),
            ..FakeSource::with_rows(800, 2)
        });
        let h = handle();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run_sweep_lane(Arc::clone(&h), slow, s, cancel.clone()));
        tokio::time::sleep(Duration::from_secs(1250)).await;
        assert_eq!(
            h.lane_status(Lane::Sweep).runs,
            3,
            "sweeps end at 400, 800 and 1200 s"
        );
        cancel.cancel();
        task.await.unwrap();
    }
}
