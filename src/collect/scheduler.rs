//! The scheduler: runs each scope's lanes, pages through listings, and
//! publishes results.
//!
//! Place in the data flow: below the configuration, above the client. Each
//! scope has two lanes over the same paging code ([`list_all`]):
//!
//! - the **malicious lane** lists only images with malicious files
//!   (`has_malicious_file=true`, usually one page) every `malicious_interval`,
//!   with priority over sweep pages for budget slots, and drives detection, so
//!   a new malicious image is seen within one lane round whatever the
//!   registry's size. A scope whose last sweep found no images at all skips
//!   the call: nothing can be malicious where there is nothing.
//! - the **sweep lane** lists every page every `poll_interval` (a sweep that
//!   overruns starts the next one as soon as it ends) and feeds the rows into
//!   an aggregator.
//!
//! A lane publishes its result in one step when its last page is in; a failed
//! run publishes nothing, and the previous result stays until it is older
//! than `stale_after`. Paging plans the remaining pages from the first page's
//! `total_num` and keeps up to `concurrency` in flight; the shared budget
//! decides when each one is sent.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::aggregate::{MaliciousSnapshot, Snapshot};
use super::detect::{Detection, ImageKey, StateSignal};
use super::keys::row_key;
use super::table::TableBuilder;
use super::{Error, Lane, Published, ScopeHandle};
use crate::collect::source::ImageSource;
use crate::hss::{ListQuery, Page, Priority, RowRef};

/// The largest offset the API accepts.
pub const MAX_OFFSET: u64 = 2_000_000;

/// How lanes run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Sweep period.
    pub poll_interval: Duration,
    /// Malicious-lane period (zero: the lane is off).
    pub malicious_interval: Duration,
    /// How far ahead the malicious lane books its slot: one budget window.
    pub reservation_lead: Duration,
    /// Budget calls per second left for sweeps, for the expected sweep time
    /// in logs.
    pub sweep_calls_per_second: f64,
    /// Rows per page.
    pub page_size: u32,
    /// Pages in flight per listing.
    pub concurrency: usize,
    /// Keep per-image series.
    pub image_metrics: bool,
    /// Cap on per-image series per scope.
    pub max_image_series: usize,
    /// Changes-lane round: `changes_interval`, stretched so that every
    /// scope's changes calls fit the budget (zero: the lane is off).
    pub changes_round: Duration,
    /// How far the changes lane's filters reach back before the newest
    /// server timestamp seen.
    pub changes_overlap: Duration,
}

/// The malicious listing runs as a check every this many changes rounds
/// once a scope's image table is complete (before that, and whenever
/// `malicious_interval` is shorter than the changes round, every
/// `malicious_interval`).
pub const MALICIOUS_CHECK_EVERY: u32 = 10;

/// How far before the start of a scope's first complete sweep the changes
/// lane's first query reaches: covers the exporter's clock being behind the
/// server's by up to this much. Later rounds use the server's own
/// timestamps only.
pub const FIRST_LOOKBACK: Duration = Duration::from_secs(3600);

/// Calls the changes lane plans per scope and round: a scan-time query every
/// round, an update-time query every other round, and the malicious check
/// every [`MALICIOUS_CHECK_EVERY`] rounds.
pub const CHANGES_CALLS_PER_ROUND: f64 = 1.0 + 0.5 + 1.0 / MALICIOUS_CHECK_EVERY as f64;

/// The changes lane's round for `scopes` scopes sharing a budget of
/// `calls_per_second`: `interval`, or longer when the scopes' changes calls
/// would not fit in it.
pub fn changes_round(interval: Duration, scopes: usize, calls_per_second: f64) -> Duration {
    if interval.is_zero() || scopes == 0 {
        return interval;
    }
    let needed = scopes as f64 * CHANGES_CALLS_PER_ROUND / calls_per_second.max(f64::MIN_POSITIVE);
    interval.max(Duration::from_secs_f64(needed.min(86_400.0)))
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
/// one by one until a short page. The first page is asked for not before
/// `not_before`; a page that gets no budget slot by `give_up_at` fails the
/// listing with [`crate::hss::Error::NoSlot`] (calls already sent finish).
pub async fn list_all(
    source: &dyn ImageSource,
    template: &ListQuery,
    priority: Priority,
    not_before: Option<Instant>,
    give_up_at: Option<Instant>,
    concurrency: usize,
    mut on_page: impl FnMut(Page),
) -> Result<ListingStats, Error> {
    let page_size = u64::from(template.limit);
    let fetch = |offset: u64, not_before: Option<Instant>| {
        let query = ListQuery {
            offset,
            ..template.clone()
        };
        async move {
            source
                .list_page(&query, priority, not_before, give_up_at)
                .await
                .map_err(|source| Error::Page { offset, source })
        }
    };
    let first = fetch(0, not_before).await?;
    let mut stats = ListingStats {
        pages: 1,
        first_total: first.total_num,
        total_changes: 0,
    };
    let mut last_total = first.total_num;
    let mut short = (first.len() as u64) < page_size;
    on_page(first);

    if last_total.is_none() {
        let mut offset = page_size;
        while !short {
            if offset > MAX_OFFSET {
                return Err(Error::TooLong(MAX_OFFSET));
            }
            let page = fetch(offset, None).await?;
            stats.pages += 1;
            short = (page.len() as u64) < page_size;
            on_page(page);
            offset += page_size;
        }
        return Ok(stats);
    }

    // Pages are planned up to the largest total any page reported, so a
    // total that shrinks between pages (or is misreported by one page) loses
    // no rows; an empty page marks the real end of the listing.
    let mut plan_until = last_total.unwrap_or(0);
    let mut end: Option<u64> = None;
    let mut next_offset = page_size;
    let mut in_flight = FuturesUnordered::new();
    loop {
        while in_flight.len() < concurrency.max(1)
            && next_offset < plan_until
            && end.is_none_or(|end| next_offset <= end)
        {
            if next_offset > MAX_OFFSET {
                return Err(Error::TooLong(MAX_OFFSET));
            }
            let offset = next_offset;
            let page = fetch(offset, None);
            in_flight.push(async move { page.await.map(|page| (offset, page)) });
            next_offset += page_size;
        }
        let Some(result) = in_flight.next().await else {
            break;
        };
        let (offset, page) = result?;
        stats.pages += 1;
        if let Some(total) = page.total_num {
            if Some(total) != last_total {
                stats.total_changes += 1;
                last_total = Some(total);
            }
            plan_until = plan_until.max(total);
        }
        if page.is_empty() {
            // No row lies beyond an empty page.
            end = Some(end.map_or(offset, |end| end.min(offset)));
        }
        on_page(page);
    }
    Ok(stats)
}

/// What every lane of every scope shares.
#[derive(Clone)]
pub struct LaneContext {
    /// Where pages come from.
    pub source: Arc<dyn ImageSource>,
    /// How lanes run.
    pub settings: Settings,
    /// Says that this scope's detector changed, so the state file's writer
    /// writes it.
    pub state: StateSignal,
}

impl std::fmt::Debug for LaneContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaneContext")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn template(
    handle: &ScopeHandle,
    settings: &Settings,
    has_malicious_file: Option<bool>,
) -> ListQuery {
    let scope = &handle.scope;
    ListQuery {
        enterprise_project_id: scope.enterprise_project_id.clone(),
        image_type: scope.image_type,
        offset: 0,
        limit: settings.page_size,
        latest_version: scope.latest_version_only,
        has_malicious_file,
        scanned_since_ms: None,
        updated_since_ms: None,
    }
}

fn epoch_ms(time: SystemTime) -> i64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// How a run ended, for its lane's status.
enum Outcome {
    Succeeded,
    /// Failed, with the message for the status and the log.
    Failed(String),
}

/// What the end of a run changed, for the logs and the state file after
/// its commit.
struct Ended {
    lane: Lane,
    /// The lane was down and this run succeeded.
    recovered: bool,
    failure: Option<String>,
    detections: Vec<Detection>,
    detector_changed: bool,
}

/// Ends a run of `lane` in one step: `change` publishes the run's results
/// (and returns the detections, when it fed the detector), and the lane's
/// status records the outcome. A scrape sees all of it or none of it.
fn end_run(
    handle: &ScopeHandle,
    lane: Lane,
    duration: Duration,
    outcome: Outcome,
    change: impl FnOnce(&mut Published) -> Vec<Detection>,
) -> Ended {
    handle.commit(|p| {
        let (detections, detector_changed) = detecting(p, change);
        let now = SystemTime::now();
        let s = p.lane_mut(lane);
        let was_down = s.runs > 0 && !s.up;
        s.runs += 1;
        s.running_since = None;
        s.last_run_end = Some(now);
        s.last_duration = Some(duration);
        let failure = match outcome {
            Outcome::Succeeded => {
                s.up = true;
                s.last_success = Some(now);
                s.last_success_at = Some(Instant::now());
                s.last_error = None;
                None
            }
            Outcome::Failed(message) => {
                s.failures += 1;
                s.up = false;
                s.last_error = Some(message.clone());
                Some(message)
            }
        };
        Ended {
            lane,
            recovered: was_down && failure.is_none(),
            failure,
            detections,
            detector_changed,
        }
    })
}

/// Applies `change` (which returns its detections) to `p`; returns the
/// detections and whether the detector's state changed.
fn detecting(
    p: &mut Published,
    change: impl FnOnce(&mut Published) -> Vec<Detection>,
) -> (Vec<Detection>, bool) {
    let generation = p.detector.generation;
    let detections = change(p);
    (detections, p.detector.generation != generation)
}

/// Feeds a complete listing of the scope's malicious images to the detector.
fn observe(p: &mut Published, images: &[(ImageKey, u64)]) -> Vec<Detection> {
    p.detector_mut().observe(images.iter().cloned())
}

/// Publishes the snapshot of a complete image table into `p` and feeds its
/// malicious images to detection.
fn publish_table(p: &mut Published, snapshot: &Arc<Snapshot>) -> Vec<Detection> {
    p.snapshot = Some(Arc::clone(snapshot));
    observe(p, &snapshot.malicious_images)
}

/// Publishes the complete image table in the middle of a run of `lane`,
/// detections included (the changes lane's scan-time rows, before its
/// update-time query); the lane's status changes when the run ends.
fn publish_now(handle: &ScopeHandle, ctx: &LaneContext, lane: Lane) {
    let (detections, detector_changed) = {
        let table = handle.table();
        let snapshot = Arc::new(table.snapshot(SystemTime::now(), ctx.settings.max_image_series));
        handle.commit(|p| detecting(p, |p| publish_table(p, &snapshot)))
    };
    let ended = Ended {
        lane,
        recovered: false,
        failure: None,
        detections,
        detector_changed,
    };
    report(handle, ctx, ended);
}

/// Logs what the end of a run changed (a failure, a recovery, every
/// detection) and signals the state file's writer when the detector changed.
fn report(handle: &ScopeHandle, ctx: &LaneContext, ended: Ended) {
    let scope = &handle.scope;
    let lane = ended.lane.as_str();
    if let Some(message) = &ended.failure {
        tracing::warn!(
            target_name = %scope.target,
            enterprise_project_id = %scope.enterprise_project_id,
            image_type = %scope.image_type,
            lane,
            error = %message,
            "lane run failed; the previous result stays published"
        );
    }
    if ended.recovered {
        tracing::info!(
            target_name = %scope.target,
            enterprise_project_id = %scope.enterprise_project_id,
            image_type = %scope.image_type,
            lane,
            "lane recovered"
        );
    }
    for d in &ended.detections {
        tracing::warn!(
            target_name = %scope.target,
            enterprise_project_id = %scope.enterprise_project_id,
            image_type = %scope.image_type,
            instance_name = %d.key.instance_name,
            namespace = %d.key.namespace,
            image = %d.key.image,
            version = %d.key.version,
            digest = %d.key.digest,
            files = d.files,
            previous_files = d.previous.unwrap_or(0),
            "new malicious image detected"
        );
    }
    if ended.detector_changed {
        ctx.state.changed();
    }
}

/// Runs one sweep of a scope and publishes it; returns whether it succeeded.
pub async fn sweep_once(handle: &ScopeHandle, ctx: &LaneContext) -> bool {
    let settings = &ctx.settings;
    let started = Instant::now();
    let started_wall = SystemTime::now();
    handle.update_lane(Lane::Sweep, |s| s.running_since = Some(started_wall));
    if handle.changes_lane {
        // Changes applied while this sweep runs are carried into its table.
        handle.table().begin_sweep();
    }
    let mut builder = TableBuilder::new(settings.image_metrics);
    // The newest server timestamp on the first page: the server's clock had
    // passed it when the sweep began.
    let mut first_page_newest: Option<i64> = None;
    let result = list_all(
        ctx.source.as_ref(),
        &template(handle, settings, None),
        Priority::Low,
        None,
        None,
        settings.concurrency,
        |page| {
            if builder.received() == 0 {
                if let Some(total) = page.total_num {
                    builder.reserve(total);
                }
                first_page_newest = page
                    .rows()
                    .flat_map(|r| [r.latest_scan_time, r.latest_update_time])
                    .max()
                    .flatten();
            }
            for row in page.rows() {
                builder.add(row);
            }
        },
    )
    .await;
    let duration = started.elapsed();
    let scope = &handle.scope;
    let stats = match result {
        Ok(stats) => stats,
        Err(error) => {
            if handle.changes_lane {
                handle.table().abort_sweep();
            }
            let received = builder.received();
            let failure = Outcome::Failed(error.to_string());
            let ended = end_run(handle, Lane::Sweep, duration, failure, |p| {
                p.lane_mut(Lane::Sweep).last_pages =
                    received.div_ceil(u64::from(settings.page_size).max(1));
                if handle.serving_snapshot(p).is_none() {
                    // Free the memory of a result that is no longer served.
                    p.snapshot = None;
                }
                Vec::new()
            });
            report(handle, ctx, ended);
            return false;
        }
    };
    let (table, counts) = builder.finish();
    let images = table.len() as u64;
    let first = handle.lane_status(Lane::Sweep).last_success.is_none();
    let record = |p: &mut Published, namespaces: u64| {
        let s = p.lane_mut(Lane::Sweep);
        s.last_pages = stats.pages;
        s.last_images = images;
        s.last_namespaces = namespaces;
        s.duplicate_rows += counts.duplicates;
        s.total_changes += stats.total_changes;
    };
    let (snapshot, ended) = if handle.changes_lane {
        // The table stays locked until the result is published, so the
        // changes lane starts from the watermarks set here.
        let mut current = handle.table();
        let first_table = !current.is_complete();
        current.replace(table);
        let snapshot = Arc::new(current.snapshot(SystemTime::now(), settings.max_image_series));
        let namespaces = snapshot.namespaces.len() as u64;
        let ended = end_run(handle, Lane::Sweep, duration, Outcome::Succeeded, |p| {
            record(p, namespaces);
            if first_table {
                // The changes lane's first query reaches back to before this
                // sweep started, so nothing changed during it is missed: to
                // the earlier of the exporter's clock less FIRST_LOOKBACK and
                // the newest server timestamp on the first page (for a server
                // clock that is behind).
                let local = epoch_ms(started_wall) - duration_ms(FIRST_LOOKBACK);
                let since = first_page_newest.map_or(local, |newest| newest.min(local));
                let w = &mut p.watermarks;
                w.scan_since_ms.get_or_insert(since);
                w.update_since_ms.get_or_insert(since);
                w.rounds = 0;
            }
            publish_table(p, &snapshot)
        });
        drop(current);
        if first_table {
            handle.announce_table();
        }
        (snapshot, ended)
    } else {
        let snapshot = Arc::new(table.snapshot(SystemTime::now(), settings.max_image_series));
        let namespaces = snapshot.namespaces.len() as u64;
        let ended = end_run(handle, Lane::Sweep, duration, Outcome::Succeeded, |p| {
            record(p, namespaces);
            p.snapshot = Some(Arc::clone(&snapshot));
            if handle.malicious_lane {
                Vec::new()
            } else {
                observe(p, &snapshot.malicious_images)
            }
        });
        (snapshot, ended)
    };
    report(handle, ctx, ended);
    let namespaces = snapshot.namespaces.len() as u64;
    if stats.total_changes > 0 {
        tracing::info!(
            target_name = %scope.target,
            enterprise_project_id = %scope.enterprise_project_id,
            image_type = %scope.image_type,
            changes = stats.total_changes,
            "total_num changed during the sweep; the sweep completed"
        );
    }
    if first {
        let expected = stats.pages as f64 / settings.sweep_calls_per_second.max(f64::MIN_POSITIVE);
        tracing::info!(
            target_name = %scope.target,
            enterprise_project_id = %scope.enterprise_project_id,
            image_type = %scope.image_type,
            images,
            namespaces,
            pages = stats.pages,
            seconds = duration.as_secs_f64(),
            expected_sweep_seconds = expected.round(),
            "first sweep finished; later sweeps of this scope need about expected_sweep_seconds of budget"
        );
    } else {
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
    }
    true
}

/// Runs one malicious-lane listing of a scope, feeds detection and publishes
/// the result; returns whether it succeeded.
pub async fn malicious_once(handle: &ScopeHandle, ctx: &LaneContext) -> bool {
    malicious_at(handle, ctx, None).await
}

/// [`malicious_once`] with its first call not before `due` (holding a budget
/// reservation until then).
async fn malicious_at(handle: &ScopeHandle, ctx: &LaneContext, due: Option<Instant>) -> bool {
    let settings = &ctx.settings;
    if let Some(due) = due
        && handle.snapshot().is_some_and(|s| s.images == 0)
    {
        // An empty scope makes no call; keep the lane's cadence anyway.
        tokio::time::sleep_until(due).await;
    }
    let started = due.map_or_else(Instant::now, |due| due.max(Instant::now()));
    if handle.snapshot().is_some_and(|s| s.images == 0) {
        // The last sweep found nothing at all, so nothing can be malicious.
        let empty = Arc::new(MaliciousSnapshot::from_rows(
            std::iter::empty::<RowRef<'_>>(),
            SystemTime::now(),
        ));
        let duration = started.elapsed();
        let ended = end_run(handle, Lane::Malicious, duration, Outcome::Succeeded, |p| {
            let s = p.lane_mut(Lane::Malicious);
            s.last_pages = 0;
            s.last_images = 0;
            s.last_namespaces = 0;
            p.malicious = Some(Arc::clone(&empty));
            observe(p, &empty.images)
        });
        report(handle, ctx, ended);
        return true;
    }
    handle.update_lane(Lane::Malicious, |s| {
        s.running_since = Some(SystemTime::now())
    });
    let mut pages: Vec<Page> = Vec::new();
    // Once the changes lane detects, this listing is a check and gives way
    // to the scan-time queries.
    let priority = if handle.changes_lane && handle.table().is_complete() {
        Priority::Medium
    } else {
        Priority::High
    };
    let result = list_all(
        ctx.source.as_ref(),
        &template(handle, settings, Some(true)),
        priority,
        due,
        None,
        settings.concurrency,
        |page| pages.push(page),
    )
    .await;
    let duration = Instant::now().saturating_duration_since(started);
    let stats = match result {
        Ok(stats) => stats,
        Err(error) => {
            let failure = Outcome::Failed(error.to_string());
            let ended = end_run(handle, Lane::Malicious, duration, failure, |_| Vec::new());
            report(handle, ctx, ended);
            return false;
        }
    };
    let rows = || pages.iter().flat_map(Page::rows);
    let snapshot = Arc::new(MaliciousSnapshot::from_rows(rows(), SystemTime::now()));
    let malicious_rows = rows().filter(|r| r.malicious_file_num > 0).count() as u64;
    let duplicates = malicious_rows - snapshot.images.len() as u64;
    let images = snapshot.images.len() as u64;
    let namespaces = snapshot.namespaces.len() as u64;
    let record = |p: &mut Published, applied: u64| {
        let s = p.lane_mut(Lane::Malicious);
        s.last_pages = stats.pages;
        s.last_images = images;
        s.last_namespaces = namespaces;
        s.duplicate_rows += duplicates;
        s.total_changes += stats.total_changes;
        s.rows_applied += applied;
        p.malicious = Some(Arc::clone(&snapshot));
    };
    let ended = {
        let mut table = handle.table();
        if handle.changes_lane && table.is_complete() {
            // With a complete image table, the listing is a check of it: its
            // rows are upserted, images it left out have no malicious files any
            // more, and detection goes by the table.
            let ids: std::collections::HashSet<u64> = rows()
                .filter(|r| r.malicious_file_num > 0)
                .map(|r| row_key(&r))
                .collect();
            let applied = table.upsert(rows().filter(|r| r.malicious_file_num > 0))
                + table.clear_malicious_except(&ids);
            let current = Arc::new(table.snapshot(SystemTime::now(), settings.max_image_series));
            end_run(handle, Lane::Malicious, duration, Outcome::Succeeded, |p| {
                record(p, applied);
                publish_table(p, &current)
            })
        } else {
            end_run(handle, Lane::Malicious, duration, Outcome::Succeeded, |p| {
                record(p, 0);
                observe(p, &snapshot.images)
            })
        }
    };
    report(handle, ctx, ended);
    true
}

/// Runs one round of the changes lane of a scope: asks for what was scanned
/// (and, every other round, pushed) since the watermarks, upserts the rows
/// into the image table, moves the watermarks and publishes. Before the
/// scope's first complete sweep there is no table to stand behind: the round
/// makes no call and returns `None`.
pub async fn changes_once(handle: &ScopeHandle, ctx: &LaneContext) -> Option<bool> {
    changes_at(handle, ctx, None).await
}

/// [`changes_once`] with its scan-time query not before `due`, holding a
/// budget reservation until then, so that sweep pages cannot take the slot
/// detection needs.
async fn changes_at(handle: &ScopeHandle, ctx: &LaneContext, due: Option<Instant>) -> Option<bool> {
    if !handle.changes_lane || !handle.table().is_complete() {
        return None;
    }
    let settings = &ctx.settings;
    let started = due.map_or_else(Instant::now, |due| due.max(Instant::now()));
    handle.update_lane(Lane::Changes, |s| s.running_since = Some(SystemTime::now()));
    let marks = handle.watermarks();
    let mut filters = vec![Filter::Scan];
    // Every other round; scopes take turns (`stagger`), so a round's calls
    // stay near the average rather than all update queries at once.
    if marks.rounds == 0 || (marks.rounds + handle.stagger).is_multiple_of(2) {
        filters.push(Filter::Update);
    }
    let mut applied = 0;
    let mut pages = 0;
    let mut fetched = 0;
    let mut total_changes = 0;
    let mut newest = (marks.newest_scan_ms, marks.newest_update_ms);
    let since = (marks.scan_since_ms, marks.update_since_ms);
    let overlap = duration_ms(settings.changes_overlap);
    // Watermarks are set when the first sweep completes; should one be
    // missing, reach back as after a first sweep rather than list everything.
    let fallback = epoch_ms(SystemTime::now()) - duration_ms(FIRST_LOOKBACK);
    let mut since = (since.0.or(Some(fallback)), since.1.or(Some(fallback)));
    // Rows applied since the table was last published this round.
    let mut unpublished = 0;
    let queries = filters.len();
    // The update-time query waits behind every scope's scan-time queries
    // and may not get a slot before the next round is due. It must not hold
    // that round's scan-time query back (detection waits for it), so it is
    // put off to the next round then: its watermark stays, and the round
    // does not count towards the alternation, so the next one asks again.
    // Only the wait for a slot is cut short: a call once sent is answered
    // and applied, never thrown away.
    let deadline = (!settings.changes_round.is_zero())
        .then(|| started.checked_add(settings.changes_round))
        .flatten();
    let mut deferred = false;
    for (i, filter) in filters.into_iter().enumerate() {
        let mut query = template(handle, settings, None);
        let mut seen: Option<i64> = None;
        match filter {
            Filter::Scan => query.scanned_since_ms = since.0,
            Filter::Update => query.updated_since_ms = since.1,
        }
        // The scan-time query is what detection waits for: it goes first.
        let priority = match filter {
            Filter::Scan => Priority::High,
            Filter::Update => Priority::Medium,
        };
        let result = list_all(
            ctx.source.as_ref(),
            &query,
            priority,
            (filter == Filter::Scan).then_some(due).flatten(),
            (filter == Filter::Update).then_some(deadline).flatten(),
            settings.concurrency,
            |page| {
                fetched += page.len() as u64;
                for row in page.rows() {
                    let time = match filter {
                        Filter::Scan => row.latest_scan_time,
                        Filter::Update => row.latest_update_time,
                    };
                    seen = seen.max(time);
                }
                let changed = handle.table().upsert(page.rows());
                applied += changed;
                unpublished += changed;
            },
        )
        .await;
        if let Err(Error::Page {
            source: crate::hss::Error::NoSlot,
            ..
        }) = result
        {
            deferred = true;
            break;
        }
        match result {
            Ok(stats) => {
                pages += stats.pages;
                total_changes += stats.total_changes;
            }
            Err(error) => {
                // Rows applied so far stay (they are true); the watermarks
                // do not move, so the next round asks for them again.
                let duration = started.elapsed();
                let ended = {
                    let table = handle.table();
                    let current = (applied > 0).then(|| {
                        Arc::new(table.snapshot(SystemTime::now(), settings.max_image_series))
                    });
                    let failure = Outcome::Failed(error.to_string());
                    end_run(handle, Lane::Changes, duration, failure, |p| {
                        let s = p.lane_mut(Lane::Changes);
                        s.last_pages = pages;
                        s.rows_applied += applied;
                        match &current {
                            Some(snapshot) => publish_table(p, snapshot),
                            None => Vec::new(),
                        }
                    })
                };
                report(handle, ctx, ended);
                return Some(false);
            }
        }
        if let Some(seen) = seen {
            // The server's own largest timestamp, less the overlap; never
            // backwards.
            let next = seen.saturating_sub(overlap);
            match filter {
                Filter::Scan => {
                    newest.0 = newest.0.max(Some(seen));
                    since.0 = since.0.max(Some(next));
                }
                Filter::Update => {
                    newest.1 = newest.1.max(Some(seen));
                    since.1 = since.1.max(Some(next));
                }
            }
        }
        // What the scan-time query found is published (and detected) now,
        // not after the update-time query: that one has a lower priority
        // and may wait most of a window for its slot.
        if i + 1 < queries && unpublished > 0 {
            unpublished = 0;
            publish_now(handle, ctx, Lane::Changes);
        }
    }
    let duration = started.elapsed();
    let ended = {
        let table = handle.table();
        let snapshot = Arc::new(table.snapshot(SystemTime::now(), settings.max_image_series));
        end_run(handle, Lane::Changes, duration, Outcome::Succeeded, |p| {
            let w = &mut p.watermarks;
            w.scan_since_ms = since.0;
            w.update_since_ms = since.1;
            w.newest_scan_ms = newest.0;
            w.newest_update_ms = newest.1;
            if !deferred {
                w.rounds += 1;
            }
            let s = p.lane_mut(Lane::Changes);
            s.last_pages = pages;
            s.last_images = fetched;
            s.rows_applied += applied;
            s.total_changes += total_changes;
            s.last_namespaces = snapshot.namespaces.len() as u64;
            publish_table(p, &snapshot)
        })
    };
    report(handle, ctx, ended);
    tracing::debug!(
        target_name = %handle.scope.target,
        enterprise_project_id = %handle.scope.enterprise_project_id,
        image_type = %handle.scope.image_type,
        pages,
        rows = fetched,
        applied,
        deferred,
        "changes round finished"
    );
    Some(true)
}

/// The time filter of one changes query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Filter {
    /// `start_latest_scan_time`.
    Scan,
    /// `start_latest_update_time`.
    Update,
}

/// Runs one run of `lane`; returns whether it succeeded.
pub async fn run_lane_once(lane: Lane, handle: &ScopeHandle, ctx: &LaneContext) -> bool {
    run_lane_at(lane, handle, ctx, None).await
}

/// [`run_lane_once`] with the first call of the malicious and changes lanes
/// not before `due` (holding a budget reservation until then).
async fn run_lane_at(
    lane: Lane,
    handle: &ScopeHandle,
    ctx: &LaneContext,
    due: Option<Instant>,
) -> bool {
    match lane {
        Lane::Malicious => malicious_at(handle, ctx, due).await,
        Lane::Sweep => sweep_once(handle, ctx).await,
        Lane::Changes => changes_at(handle, ctx, due).await.unwrap_or(true),
    }
}

/// The time from the start of one run of `lane` to the start of the next.
pub fn lane_interval(lane: Lane, handle: &ScopeHandle, settings: &Settings) -> Duration {
    match lane {
        // Once the table is complete the changes lane detects, and the
        // malicious listing becomes a check every few rounds, unless
        // `malicious_interval` asks for it more often than the changes round.
        Lane::Malicious
            if handle.changes_lane
                && !settings.changes_round.is_zero()
                && settings.malicious_interval >= settings.changes_round
                && handle.table().is_complete() =>
        {
            settings.changes_round * MALICIOUS_CHECK_EVERY
        }
        Lane::Malicious => settings.malicious_interval,
        Lane::Sweep => settings.poll_interval,
        Lane::Changes => settings.changes_round,
    }
}

/// Runs `lane` once and catches a panic in it: the run then counts as
/// failed with the panic's message, so the lane shows `hss_swr_up 0` and the
/// reason in `/status`, and its next run starts as usual.
async fn run_lane_guarded(
    lane: Lane,
    handle: &ScopeHandle,
    ctx: &LaneContext,
    due: Option<Instant>,
) -> bool {
    use futures_util::FutureExt as _;
    let started = Instant::now();
    let run = std::panic::AssertUnwindSafe(run_lane_at(lane, handle, ctx, due));
    match run.catch_unwind().await {
        Ok(ok) => ok,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            let message = format!(
                "internal error: the lane run panicked ({}); it runs again at its next interval",
                crate::hss::http::cut(&what, 256)
            );
            let failure = Outcome::Failed(message);
            let ended = end_run(handle, lane, started.elapsed(), failure, |_| Vec::new());
            report(handle, ctx, ended);
            false
        }
    }
}

/// Runs one of a scope's lanes until `cancel` fires: a run at once, then one
/// every interval (at once when a run overran it). A run that panics counts
/// as a failed run; the lane goes on.
pub async fn run_lane(
    lane: Lane,
    handle: Arc<ScopeHandle>,
    ctx: LaneContext,
    cancel: CancellationToken,
) {
    // Rounds do not book their slots ahead (`acquire_at` reservations): the
    // budget keeps a slot free per pending reservation over a whole window,
    // which, with one always pending per scope, left sweeps a fifth of the
    // budget (measured with benches/freshness.rs). The lanes' priority over
    // sweep pages keeps their rounds on time instead.
    loop {
        if lane == Lane::Changes && !handle.table().is_complete() {
            // Its first round comes as soon as the first sweep is complete.
            tokio::select! {
                () = cancel.cancelled() => return,
                () = handle.table_complete() => {}
            }
        }
        let started = Instant::now();
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = run_lane_guarded(lane, &handle, &ctx, None) => {}
        }
        let interval = lane_interval(lane, &handle, &ctx.settings);
        let next = started
            .checked_add(interval)
            .unwrap_or_else(Instant::now)
            .max(Instant::now());
        let wait = next - Instant::now();
        handle.update_lane(lane, |s| s.next_run = Some(SystemTime::now() + wait));
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
    use crate::config::{ImageType, RateLimit};
    use crate::hss::auth::BoxFuture;
    use crate::hss::{Budget, Row};

    /// Rows in memory, with scripted failures and a call log; optionally
    /// drawing on a real budget with a per-call latency.
    #[derive(Default)]
    struct FakeSource {
        rows: Mutex<Vec<Row>>,
        total_override: Mutex<VecDeque<Option<u64>>>,
        failures: Mutex<VecDeque<crate::hss::Error>>,
        fail_at_offset: Mutex<Option<u64>>,
        calls: Mutex<Vec<Call>>,
        queries: Mutex<Vec<ListQuery>>,
        latency: Duration,
        budget: Option<Arc<Budget>>,
        /// Calls that panic, as a bug in parsing might.
        panics: std::sync::atomic::AtomicU32,
    }

    /// One call: offset, limit, the malicious filter, when.
    type Call = (u64, u32, Option<bool>, Instant);

    impl FakeSource {
        fn with_rows(n: u64, namespaces: u64) -> Self {
            Self {
                rows: Mutex::new(rows(n, namespaces)),
                ..Self::default()
            }
        }

        fn offsets(&self) -> Vec<u64> {
            let mut o: Vec<u64> = self.calls.lock().unwrap().iter().map(|c| c.0).collect();
            o.sort_unstable();
            o
        }
    }

    fn rows(n: u64, namespaces: u64) -> Vec<Row> {
        (0..n)
            .map(|i| Row {
                id: Some(i),
                namespace: format!("ns-{}", i % namespaces),
                image_name: format!("img-{i}"),
                image_version: "v1".into(),
                image_digest: format!("sha256:{i:064x}"),
                scan_status: Some("success".into()),
                vul_num: i % 7,
                malicious_file_num: u64::from(i % 50 == 0),
                ..Row::default()
            })
            .collect()
    }

    fn forbidden() -> crate::hss::Error {
        crate::hss::Error::Api {
            status: 403,
            code: "HSS.0013".into(),
            message: "insufficient permissions".into(),
            retry_after: None,
            request_id: None,
        }
    }

    impl ImageSource for FakeSource {
        fn list_page<'a>(
            &'a self,
            query: &'a ListQuery,
            priority: Priority,
            not_before: Option<Instant>,
            give_up_at: Option<Instant>,
        ) -> BoxFuture<'a, Result<Page, crate::hss::Error>> {
            Box::pin(async move {
                let permit = match &self.budget {
                    Some(budget) => {
                        match budget.acquire_until(priority, not_before, give_up_at).await {
                            Some((permit, _)) => Some(permit),
                            None => return Err(crate::hss::Error::NoSlot),
                        }
                    }
                    None => {
                        if let Some(at) = not_before {
                            tokio::time::sleep_until(at).await;
                        }
                        None
                    }
                };
                self.queries.lock().unwrap().push(query.clone());
                self.calls.lock().unwrap().push((
                    query.offset,
                    query.limit,
                    query.has_malicious_file,
                    Instant::now(),
                ));
                tokio::time::sleep(self.latency).await;
                if let Some(p) = permit {
                    p.finish();
                }
                if self
                    .panics
                    .fetch_update(
                        std::sync::atomic::Ordering::SeqCst,
                        std::sync::atomic::Ordering::SeqCst,
                        |n| n.checked_sub(1),
                    )
                    .is_ok()
                {
                    panic!("simulated bug in a page");
                }
                if let Some(error) = self.failures.lock().unwrap().pop_front() {
                    return Err(error);
                }
                if *self.fail_at_offset.lock().unwrap() == Some(query.offset) {
                    return Err(crate::hss::Error::Timeout(Duration::from_secs(30)));
                }
                let all = self.rows.lock().unwrap();
                let selected: Vec<&Row> = all
                    .iter()
                    .filter(|r| {
                        query
                            .has_malicious_file
                            .is_none_or(|m| (r.malicious_file_num > 0) == m)
                            && query
                                .scanned_since_ms
                                .is_none_or(|t| r.latest_scan_time.is_some_and(|s| s >= t))
                            && query
                                .updated_since_ms
                                .is_none_or(|t| r.latest_update_time.is_some_and(|u| u >= t))
                    })
                    .collect();
                let total = match self.total_override.lock().unwrap().pop_front() {
                    Some(total) => total,
                    None => Some(selected.len() as u64),
                };
                let start = (query.offset as usize).min(selected.len());
                let end = (start + query.limit as usize).min(selected.len());
                Ok(Page::from_rows(total, selected[start..end].iter().copied()))
            })
        }
    }

    fn settings() -> Settings {
        Settings {
            poll_interval: Duration::from_secs(300),
            malicious_interval: Duration::from_secs(60),
            reservation_lead: Duration::from_secs(60),
            sweep_calls_per_second: 5.0 / 60.0,
            page_size: 200,
            concurrency: 4,
            image_metrics: false,
            max_image_series: 10,
            changes_round: Duration::ZERO,
            changes_overlap: Duration::from_secs(300),
        }
    }

    fn ctx(source: &Arc<FakeSource>, settings: Settings) -> LaneContext {
        LaneContext {
            source: Arc::clone(source) as Arc<dyn ImageSource>,
            settings,
            state: StateSignal::default(),
        }
    }

    fn handle_with(malicious_lane: bool) -> Arc<ScopeHandle> {
        ScopeHandle::new(
            Scope {
                target: "t".into(),
                enterprise_project_id: "0".into(),
                image_type: ImageType::Private,
                latest_version_only: false,
                api: crate::config::ListingApi::SwrRepository,
            },
            Duration::from_secs(3600),
            malicious_lane,
        )
    }

    fn handle() -> Arc<ScopeHandle> {
        handle_with(false)
    }

    fn ns(name: &str) -> NamespaceKey {
        NamespaceKey {
            instance_name: String::new(),
            registry_name: String::new(),
            namespace: name.into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lane_run_that_panics_fails_and_the_lane_goes_on() {
        let source = Arc::new(FakeSource::with_rows(500, 5));
        source.panics.store(1, std::sync::atomic::Ordering::SeqCst);
        let handle = handle();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run_lane(
            Lane::Sweep,
            Arc::clone(&handle),
            ctx(&source, settings()),
            cancel.clone(),
        ));
        tokio::time::sleep(Duration::from_secs(10)).await;
        let status = handle.lane_status(Lane::Sweep);
        assert!(!status.up);
        assert_eq!((status.runs, status.failures), (1, 1));
        let error = status.last_error.unwrap();
        assert!(
            error.contains("the lane run panicked (simulated bug in a page)"),
            "{error}"
        );
        assert!(!task.is_finished(), "the lane task is still alive");
        // The next run, one poll interval later, succeeds.
        tokio::time::sleep(settings().poll_interval).await;
        let status = handle.lane_status(Lane::Sweep);
        assert!(status.up, "{:?}", status.last_error);
        assert_eq!((status.runs, status.failures), (2, 1));
        cancel.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn page_boundaries_fetch_each_page_once() {
        for (n, expected_offsets) in [
            (0, vec![0]),
            (1, vec![0]),
            (200, vec![0]),
            (201, vec![0, 200]),
            (1000, vec![0, 200, 400, 600, 800]),
        ] {
            let source = Arc::new(FakeSource::with_rows(n, 3));
            let h = handle();
            assert!(sweep_once(&h, &ctx(&source, settings())).await);
            assert_eq!(source.offsets(), expected_offsets, "{n} rows");
            assert!(source.calls.lock().unwrap().iter().all(|c| c.1 == 200));
            assert_eq!(h.snapshot().unwrap().images, n, "{n} rows");
            assert_eq!(
                h.lane_status(Lane::Sweep).last_pages,
                expected_offsets.len() as u64
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_total_pages_until_a_short_page() {
        let source = Arc::new(FakeSource::with_rows(450, 3));
        source
            .total_override
            .lock()
            .unwrap()
            .extend([None, None, None, None]);
        let h = handle();
        assert!(sweep_once(&h, &ctx(&source, settings())).await);
        assert_eq!(source.offsets(), vec![0, 200, 400]);
        assert_eq!(h.snapshot().unwrap().images, 450);
    }

    #[tokio::test(start_paused = true)]
    async fn a_growing_total_is_followed_and_counted() {
        let source = Arc::new(FakeSource::with_rows(500, 3));
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
        assert!(sweep_once(&h, &ctx(&source, s)).await);
        assert_eq!(source.offsets(), vec![0, 200, 400]);
        assert_eq!(h.snapshot().unwrap().images, 500);
        assert_eq!(h.lane_status(Lane::Sweep).total_changes, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_sweep_keeps_the_previous_result() {
        let source = Arc::new(FakeSource::with_rows(300, 2));
        let h = handle();
        assert!(sweep_once(&h, &ctx(&source, settings())).await);
        let before = h.snapshot().unwrap();
        *source.rows.lock().unwrap() = rows(600, 5);
        source.failures.lock().unwrap().push_back(forbidden());
        assert!(!sweep_once(&h, &ctx(&source, settings())).await);
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

    /// A scrape reads a scope's result, lane status and detections as one
    /// value: a reader running beside the sweeps never sees a snapshot from
    /// one run with the status or the detection count of another.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_scrape_sees_a_run_with_its_status_and_detections_together() {
        const RUNS: u64 = 150;
        let source = Arc::new(FakeSource::default());
        let h = handle_with(false);
        let c = ctx(&source, settings());
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (h, done) = (Arc::clone(&h), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut views = 0u64;
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    let view = h.view();
                    if let Some(snapshot) = &view.snapshot {
                        let runs = view.lane(Lane::Sweep).runs;
                        let detected: u64 = view.detector.detected.values().sum();
                        assert_eq!(snapshot.images, runs, "images vs runs");
                        assert_eq!(detected, runs - 1, "detections vs runs");
                        views += 1;
                    }
                }
                views
            })
        };
        for run in 1..=RUNS {
            // Run k lists k images, every one malicious: the first run is
            // the baseline, and every later one detects one new image.
            *source.rows.lock().unwrap() = rows(run, 3)
                .into_iter()
                .map(|r| Row {
                    malicious_file_num: 1,
                    ..r
                })
                .collect();
            assert!(sweep_once(&h, &c).await);
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let views = reader.join().expect("the reader saw an inconsistent view");
        assert!(views > 0);
        assert_eq!(h.lane_status(Lane::Sweep).runs, RUNS);
        assert_eq!(h.detector().detected.values().sum::<u64>(), RUNS - 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_mid_sweep_publishes_nothing_partial() {
        let source = Arc::new(FakeSource::with_rows(1000, 4));
        let h = handle();
        assert!(sweep_once(&h, &ctx(&source, settings())).await);
        let first = h.snapshot().unwrap();
        source
            .rows
            .lock()
            .unwrap()
            .iter_mut()
            .for_each(|r| r.vul_num = 1000);
        *source.fail_at_offset.lock().unwrap() = Some(600);
        assert!(!sweep_once(&h, &ctx(&source, settings())).await);
        let after = h.snapshot().unwrap();
        assert!(Arc::ptr_eq(&first, &after));
        assert!(after.namespaces.values().all(|n| n.vulnerabilities < 1000));
    }

    #[tokio::test(start_paused = true)]
    async fn stale_results_are_dropped_after_stale_after() {
        let source = Arc::new(FakeSource::with_rows(10, 2));
        let h = handle();
        let c = ctx(&source, settings());
        assert!(sweep_once(&h, &c).await);
        assert!(h.snapshot().is_some());
        tokio::time::advance(Duration::from_secs(3599)).await;
        assert!(h.snapshot().is_some());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(h.snapshot().is_none(), "older than stale_after");
        source.failures.lock().unwrap().push_back(forbidden());
        assert!(!sweep_once(&h, &c).await);
        assert!(h.snapshot().is_none());
        // A success brings the scope back at once.
        assert!(sweep_once(&h, &c).await);
        assert_eq!(h.snapshot().unwrap().namespaces.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_vanished_namespace_loses_its_series_at_once() {
        let source = Arc::new(FakeSource::with_rows(10, 2));
        let h = handle();
        let c = ctx(&source, settings());
        assert!(sweep_once(&h, &c).await);
        assert!(h.snapshot().unwrap().namespaces.contains_key(&ns("ns-1")));
        source
            .rows
            .lock()
            .unwrap()
            .retain(|r| r.namespace == "ns-0");
        assert!(sweep_once(&h, &c).await);
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
        let task = tokio::spawn(run_lane(
            Lane::Sweep,
            Arc::clone(&h),
            ctx(&source, s),
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
        let task = tokio::spawn(run_lane(
            Lane::Sweep,
            Arc::clone(&h),
            ctx(&slow, s),
            cancel.clone(),
        ));
        tokio::time::sleep(Duration::from_secs(1250)).await;
        assert_eq!(
            h.lane_status(Lane::Sweep).runs,
            3,
            "sweeps end at 400, 800 and 1200 s"
        );
        cancel.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_malicious_lane_baselines_then_detects() {
        let source = Arc::new(FakeSource::with_rows(500, 5));
        let h = handle_with(true);
        let c = ctx(&source, settings());
        assert!(malicious_once(&h, &c).await);
        // Only images with malicious files were asked for.
        assert!(
            source
                .calls
                .lock()
                .unwrap()
                .iter()
                .all(|c| c.2 == Some(true))
        );
        let snap = h.malicious_snapshot().unwrap();
        assert_eq!(snap.images.len(), 10, "every 50th row is malicious");
        let detector = h.detector();
        assert!(detector.baseline);
        assert!(
            detector.detected.is_empty(),
            "the first run only sets the baseline"
        );

        // A new malicious image appears in a namespace nobody has seen.
        source.rows.lock().unwrap().push(Row {
            id: Some(9999),
            namespace: "brand-new".into(),
            image_name: "evil".into(),
            image_version: "1".into(),
            malicious_file_num: 3,
            ..Row::default()
        });
        assert!(malicious_once(&h, &c).await);
        assert_eq!(h.detector().detected, [(ns("brand-new"), 1)].into());
        assert_eq!(
            h.malicious_snapshot().unwrap().namespaces[&ns("brand-new")].files,
            3
        );
        // Seen again, unchanged: no new detection.
        assert!(malicious_once(&h, &c).await);
        assert_eq!(h.detector().detected, [(ns("brand-new"), 1)].into());
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_scope_skips_its_malicious_calls() {
        let source = Arc::new(FakeSource::with_rows(0, 1));
        let h = handle_with(true);
        let c = ctx(&source, settings());
        assert!(malicious_once(&h, &c).await);
        assert!(sweep_once(&h, &c).await);
        assert_eq!(source.calls.lock().unwrap().len(), 2);
        for _ in 0..5 {
            assert!(malicious_once(&h, &c).await);
        }
        assert_eq!(
            source.calls.lock().unwrap().len(),
            2,
            "no call while the scope is empty"
        );
        assert_eq!(h.lane_status(Lane::Malicious).runs, 6);
        assert!(h.lane_status(Lane::Malicious).up);
        // Once a sweep finds images, the lane calls again.
        *source.rows.lock().unwrap() = rows(10, 1);
        assert!(sweep_once(&h, &c).await);
        assert!(malicious_once(&h, &c).await);
        assert_eq!(source.calls.lock().unwrap().len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn without_the_malicious_lane_sweeps_drive_detection() {
        let source = Arc::new(FakeSource::with_rows(100, 2));
        let h = handle_with(false);
        let c = ctx(&source, settings());
        assert!(sweep_once(&h, &c).await);
        source.rows.lock().unwrap()[1].malicious_file_num = 2;
        assert!(sweep_once(&h, &c).await);
        assert_eq!(h.detector().detected, [(ns("ns-1"), 1)].into());
    }

    /// A new malicious image is seen within one lane round even while a large
    /// sweep keeps the budget busy: its calls go first.
    #[tokio::test(start_paused = true)]
    async fn detection_does_not_wait_for_a_sweep() {
        let budget = Budget::new(RateLimit {
            calls: 5,
            window: Duration::from_secs(60),
        });
        let source = Arc::new(FakeSource {
            latency: Duration::from_millis(300),
            budget: Some(budget),
            ..FakeSource::with_rows(20_000, 40)
        });
        let h = handle_with(true);
        let c = ctx(&source, settings());
        let cancel = CancellationToken::new();
        let sweep = tokio::spawn(run_lane(
            Lane::Sweep,
            Arc::clone(&h),
            c.clone(),
            cancel.clone(),
        ));
        let malicious = tokio::spawn(run_lane(
            Lane::Malicious,
            Arc::clone(&h),
            c.clone(),
            cancel.clone(),
        ));
        // 20,000 images are 100 pages: a sweep needs 20 minutes of budget.
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert!(h.detector().baseline);
        assert!(h.snapshot().is_none(), "the first sweep is still running");
        let injected = Instant::now();
        source.rows.lock().unwrap().push(Row {
            id: Some(1_000_000),
            namespace: "ns-3".into(),
            image_name: "evil".into(),
            image_version: "2".into(),
            malicious_file_num: 1,
            ..Row::default()
        });
        while h.detector().detected.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let latency = injected.elapsed();
        assert!(
            latency <= Duration::from_secs(72),
            "seen within one round (60 s) plus one budget slot: {latency:?}"
        );
        cancel.cancel();
        sweep.await.unwrap();
        malicious.await.unwrap();
    }

    /// A server clock: epoch ms far from the exporter's, so that only the
    /// server's own timestamps can drive the watermarks.
    const SERVER_NOW: i64 = 1_600_000_000_000;

    fn timed(id: u64, ns: &str, vul: u64, mal: u64, at: i64) -> Row {
        Row {
            id: Some(id),
            namespace: ns.into(),
            image_name: format!("img-{id}"),
            image_version: "v1".into(),
            image_digest: format!("sha256:{id:064x}"),
            scan_status: Some("success".into()),
            latest_scan_time: Some(at),
            latest_update_time: Some(at - 1_000),
            vul_num: vul,
            malicious_file_num: mal,
            ..Row::default()
        }
    }

    fn changes_handle() -> Arc<ScopeHandle> {
        ScopeHandle::with_lanes(
            Scope {
                target: "t".into(),
                enterprise_project_id: "0".into(),
                image_type: ImageType::Private,
                latest_version_only: false,
                api: crate::config::ListingApi::SwrRepository,
            },
            Duration::from_secs(3600),
            true,
            true,
            false,
        )
    }

    fn changes_settings() -> Settings {
        Settings {
            changes_round: Duration::from_secs(60),
            ..settings()
        }
    }

    /// 450 images in 3 namespaces, last scanned an hour or more before the
    /// server's now, the oldest ids most recently.
    fn registry() -> Arc<FakeSource> {
        let rows = (1..=450)
            .map(|i| {
                timed(
                    i,
                    &format!("ns-{}", i % 3),
                    1,
                    0,
                    SERVER_NOW - 3_600_000 - i as i64,
                )
            })
            .collect();
        Arc::new(FakeSource {
            rows: Mutex::new(rows),
            ..FakeSource::default()
        })
    }

    fn vulnerabilities(handle: &ScopeHandle, namespace: &str) -> u64 {
        handle.snapshot().unwrap().namespaces[&ns(namespace)].vulnerabilities
    }

    #[tokio::test(start_paused = true)]
    async fn the_changes_lane_waits_for_a_complete_table_then_applies_a_rescan() {
        let source = registry();
        let handle = changes_handle();
        let ctx = ctx(&source, changes_settings());
        assert_eq!(changes_once(&handle, &ctx).await, None);
        assert!(
            source.queries.lock().unwrap().is_empty(),
            "no call before the first sweep"
        );
        assert!(sweep_once(&handle, &ctx).await);
        assert_eq!(vulnerabilities(&handle, "ns-1"), 150);
        // Image 4 (in ns-1) is rescanned on the server, an hour after the
        // newest scan the sweep saw.
        source.rows.lock().unwrap()[3] = timed(4, "ns-1", 41, 0, SERVER_NOW);
        source.queries.lock().unwrap().clear();
        assert_eq!(changes_once(&handle, &ctx).await, Some(true));
        assert_eq!(vulnerabilities(&handle, "ns-1"), 190);
        let status = handle.lane_status(Lane::Changes);
        assert_eq!(status.rows_applied, 1);
        // The first round asks with both filters, from the lookback before
        // the sweep's start (the exporter's clock); then the watermark is the
        // server's newest scan time less the overlap.
        let queries = source.queries.lock().unwrap().clone();
        assert_eq!(queries.len(), 2);
        assert!(queries[0].scanned_since_ms.is_some() && queries[0].updated_since_ms.is_none());
        assert!(queries[1].updated_since_ms.is_some() && queries[1].scanned_since_ms.is_none());
        let marks = handle.watermarks();
        assert_eq!(marks.newest_scan_ms, Some(SERVER_NOW));
        assert_eq!(marks.scan_since_ms, Some(SERVER_NOW - 300_000));
        // The next round asks from the watermark, with the scan filter only.
        source.queries.lock().unwrap().clear();
        assert_eq!(changes_once(&handle, &ctx).await, Some(true));
        let queries = source.queries.lock().unwrap().clone();
        assert_eq!(queries.len(), 1);
        assert_eq!(queries[0].scanned_since_ms, Some(SERVER_NOW - 300_000));
        assert_eq!(
            handle.lane_status(Lane::Changes).rows_applied,
            1,
            "the overlap re-reads a known row"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_push_and_a_burst_of_changes_larger_than_a_page_are_applied() {
        let source = registry();
        let handle = changes_handle();
        let ctx = ctx(&source, changes_settings());
        assert!(sweep_once(&handle, &ctx).await);
        assert!(changes_once(&handle, &ctx).await.unwrap());
        // A burst: 250 rescans (more than one page of 200), and a push of a
        // new, not yet scanned image.
        {
            let mut rows = source.rows.lock().unwrap();
            for row in rows.iter_mut().take(250) {
                row.vul_num = 2;
                row.latest_scan_time = Some(SERVER_NOW + 1_000);
            }
            rows.push(Row {
                scan_status: Some("waiting_for_scan".into()),
                latest_scan_time: None,
                latest_update_time: Some(SERVER_NOW + 2_000),
                ..timed(1_000, "ns-new", 0, 0, 0)
            });
        }
        source.queries.lock().unwrap().clear();
        // Round 1 asks for scans only: the burst, in two pages.
        assert!(changes_once(&handle, &ctx).await.unwrap());
        assert_eq!(source.queries.lock().unwrap().len(), 2);
        let snapshot = handle.snapshot().unwrap();
        assert_eq!(
            snapshot
                .namespaces
                .values()
                .map(|n| n.vulnerabilities)
                .sum::<u64>(),
            450 + 250
        );
        assert!(!snapshot.namespaces.contains_key(&ns("ns-new")));
        // Round 2 asks for pushes too.
        assert!(changes_once(&handle, &ctx).await.unwrap());
        let snapshot = handle.snapshot().unwrap();
        assert_eq!(snapshot.images, 451);
        assert_eq!(
            snapshot.namespaces[&ns("ns-new")].known_status[6],
            1,
            "waiting_for_scan"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_sweep_corrects_deletions_and_keeps_changes_made_while_it_ran() {
        let source = registry();
        let handle = changes_handle();
        let ctx = ctx(&source, changes_settings());
        assert!(sweep_once(&handle, &ctx).await);
        assert!(changes_once(&handle, &ctx).await.unwrap());
        // Image 1 is deleted: the changes lane cannot see that.
        source.rows.lock().unwrap().remove(0);
        assert!(changes_once(&handle, &ctx).await.unwrap());
        assert_eq!(handle.snapshot().unwrap().images, 450);
        // A sweep that fails halfway publishes nothing and loses nothing.
        *source.fail_at_offset.lock().unwrap() = Some(200);
        assert!(!sweep_once(&handle, &ctx).await);
        *source.fail_at_offset.lock().unwrap() = None;
        assert_eq!(handle.snapshot().unwrap().images, 450);
        // During the next sweep, after its first page, image 2 is rescanned;
        // the sweep's own row for it is older, the change stays.
        let sweep = {
            let handle = Arc::clone(&handle);
            let ctx = ctx.clone();
            tokio::spawn(async move { sweep_once(&handle, &ctx).await })
        };
        tokio::task::yield_now().await;
        source.rows.lock().unwrap()[0] = timed(2, "ns-2", 100, 0, SERVER_NOW + 5_000);
        assert!(changes_once(&handle, &ctx).await.unwrap());
        assert!(sweep.await.unwrap());
        let snapshot = handle.snapshot().unwrap();
        assert_eq!(snapshot.images, 449, "the deleted image is gone");
        assert_eq!(snapshot.namespaces[&ns("ns-2")].vulnerabilities, 149 + 100);
    }

    #[tokio::test(start_paused = true)]
    async fn a_malicious_image_seen_by_the_changes_lane_is_detected_once() {
        let source = registry();
        let handle = changes_handle();
        let ctx = ctx(&source, changes_settings());
        assert!(
            malicious_once(&handle, &ctx).await,
            "the baseline before the sweep"
        );
        assert!(sweep_once(&handle, &ctx).await);
        assert!(changes_once(&handle, &ctx).await.unwrap());
        source.rows.lock().unwrap()[9] = timed(10, "ns-1", 0, 3, SERVER_NOW);
        assert!(changes_once(&handle, &ctx).await.unwrap());
        assert_eq!(handle.detector().detected.get(&ns("ns-1")), Some(&1));
        assert_eq!(
            handle.snapshot().unwrap().namespaces[&ns("ns-1")].malicious_files,
            3
        );
        // The overlap and the malicious check see it again: no new count.
        assert!(changes_once(&handle, &ctx).await.unwrap());
        assert!(malicious_once(&handle, &ctx).await);
        assert_eq!(handle.detector().detected.get(&ns("ns-1")), Some(&1));
        // Rescanned clean: the check agrees, the gauges drop.
        source.rows.lock().unwrap()[9] = timed(10, "ns-1", 0, 0, SERVER_NOW + 1);
        assert!(malicious_once(&handle, &ctx).await);
        assert_eq!(
            handle.snapshot().unwrap().namespaces[&ns("ns-1")].malicious_files,
            0
        );
    }

    /// A round that also asks for pushes publishes (and detects) what its
    /// scan-time query found at once: the update-time query may wait most of
    /// a window for a budget slot, and detection must not wait with it.
    #[tokio::test(start_paused = true)]
    async fn a_round_detects_before_its_update_time_query_gets_a_slot() {
        // A window shorter than the round (60 s): the update-time query's
        // slot comes before the next round is due.
        let window = Duration::from_secs(50);
        let budget = Budget::new(RateLimit { calls: 1, window });
        let source = registry();
        let source = Arc::new(FakeSource {
            rows: Mutex::new(source.rows.lock().unwrap().clone()),
            budget: Some(budget),
            ..FakeSource::default()
        });
        let handle = changes_handle();
        let ctx = ctx(&source, changes_settings());
        assert!(malicious_once(&handle, &ctx).await, "the baseline");
        assert!(sweep_once(&handle, &ctx).await);
        // Round 0 asks with both filters, round 1 with the scan filter only;
        // each starts once the slots used before it are free again.
        for _ in 0..2 {
            tokio::time::sleep(window).await;
            assert!(changes_once(&handle, &ctx).await.unwrap());
        }
        assert_eq!(handle.watermarks().rounds, 2);
        // The budget's one slot is free again when round 2 starts; its
        // update-time query has to wait a whole window for the next one.
        tokio::time::sleep(window).await;
        source.rows.lock().unwrap()[9] = timed(10, "ns-1", 0, 3, SERVER_NOW);
        let round = {
            let handle = Arc::clone(&handle);
            let ctx = ctx.clone();
            tokio::spawn(async move { changes_once(&handle, &ctx).await })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!round.is_finished(), "the update-time query waits");
        assert_eq!(
            source
                .queries
                .lock()
                .unwrap()
                .last()
                .map(|q| q.scanned_since_ms.is_some()),
            Some(true),
            "the scan-time query went out"
        );
        assert_eq!(handle.detector().detected.get(&ns("ns-1")), Some(&1));
        assert_eq!(
            handle.snapshot().unwrap().namespaces[&ns("ns-1")].malicious_files,
            3
        );
        assert_eq!(round.await.unwrap(), Some(true));
        assert_eq!(handle.detector().detected.get(&ns("ns-1")), Some(&1));
        assert_eq!(handle.watermarks().rounds, 3);
    }

    /// An update-time query whose slot does not come before the next round
    /// is due is put off to that round: the round ends on time (so the next
    /// scan-time query is not held back), the update watermark stays, and
    /// the next round asks for pushes again.
    /// The registry on `budget`, swept, two changes rounds run, then a push
    /// that the next update-time query finds.
    async fn a_push_after_two_rounds(budget: Arc<Budget>) -> (Arc<FakeSource>, Arc<ScopeHandle>) {
        let source = Arc::new(FakeSource {
            rows: Mutex::new(registry().rows.lock().unwrap().clone()),
            budget: Some(budget),
            ..FakeSource::default()
        });
        let handle = changes_handle();
        let ctx = ctx(&source, changes_settings());
        assert!(sweep_once(&handle, &ctx).await);
        assert!(changes_once(&handle, &ctx).await.unwrap());
        assert!(changes_once(&handle, &ctx).await.unwrap());
        source.rows.lock().unwrap().push(Row {
            scan_status: Some("waiting_for_scan".into()),
            latest_scan_time: None,
            latest_update_time: Some(SERVER_NOW + 2_000),
            ..timed(1_000, "ns-new", 0, 0, 0)
        });
        (source, handle)
    }

    #[tokio::test(start_paused = true)]
    async fn an_update_time_query_without_a_slot_by_the_next_round_waits_for_it() {
        let window = Duration::from_secs(50);
        let budget = Budget::new(RateLimit { calls: 1, window });
        // A push, and round 2 at once: its scan-time query waits for the
        // slot round 1 used, its update-time query would wait a window more.
        let (source, handle) = a_push_after_two_rounds(budget).await;
        let ctx = ctx(&source, changes_settings());
        let before = handle.watermarks();
        source.queries.lock().unwrap().clear();
        let started = Instant::now();
        assert_eq!(changes_once(&handle, &ctx).await, Some(true));
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(60),
            "the round ends when the next is due"
        );
        let queries = source.queries.lock().unwrap().clone();
        assert_eq!(queries.len(), 1);
        assert!(queries[0].scanned_since_ms.is_some());
        let marks = handle.watermarks();
        assert_eq!(marks.rounds, before.rounds, "the round does not count");
        assert_eq!(marks.update_since_ms, before.update_since_ms);
        assert_eq!(handle.snapshot().unwrap().images, 450);
        // The next round, once a slot is free again, asks for the push.
        tokio::time::sleep(window).await;
        source.queries.lock().unwrap().clear();
        assert_eq!(changes_once(&handle, &ctx).await, Some(true));
        let queries = source.queries.lock().unwrap().clone();
        assert_eq!(queries.len(), 2);
        assert!(queries[1].updated_since_ms.is_some());
        assert_eq!(handle.snapshot().unwrap().images, 451);
        assert_eq!(handle.watermarks().rounds, before.rounds + 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_update_time_query_sent_before_the_next_round_is_answered_and_applied() {
        // Calls take 40 s: the update-time query gets its slot at 40 s, before
        // the next round is due (60 s), and its answer comes at 80 s. The
        // call was made: it is applied, not thrown away at the deadline.
        let budget = Budget::new(RateLimit {
            calls: 5,
            window: Duration::from_secs(1),
        });
        let (source, handle) = a_push_after_two_rounds(Arc::clone(&budget)).await;
        let before = handle.watermarks();
        // Slow calls from now on (the fake's latency is read per call).
        let slow = Arc::new(FakeSource {
            rows: Mutex::new(source.rows.lock().unwrap().clone()),
            budget: Some(budget),
            latency: Duration::from_secs(40),
            ..FakeSource::default()
        });
        let slow_ctx = ctx(&slow, changes_settings());
        let started = Instant::now();
        assert_eq!(changes_once(&handle, &slow_ctx).await, Some(true));
        assert_eq!(started.elapsed(), Duration::from_secs(80));
        let queries = slow.queries.lock().unwrap().clone();
        assert_eq!(queries.len(), 2);
        assert!(queries[1].updated_since_ms.is_some());
        assert_eq!(
            handle.snapshot().unwrap().images,
            451,
            "the push is applied"
        );
        assert_eq!(handle.watermarks().rounds, before.rounds + 1);
        assert!(handle.watermarks().update_since_ms > before.update_since_ms);
    }

    #[test]
    fn the_changes_round_stretches_to_fit_the_budget() {
        let minute = Duration::from_secs(60);
        // 3 scopes at 5 calls a minute: 4.8 calls a round fit in a minute.
        assert_eq!(changes_round(minute, 3, 5.0 / 60.0), minute);
        // 30 scopes need 48 calls: a round of 9.6 minutes.
        assert_eq!(changes_round(minute, 30, 5.0 / 60.0).as_secs(), 576);
        assert_eq!(
            changes_round(Duration::ZERO, 30, 5.0 / 60.0),
            Duration::ZERO
        );
    }

    /// While sweeps keep the budget saturated, the changes lane's scan-time
    /// queries (first in the budget's queue) still go out every round on
    /// the dot.
    #[tokio::test(start_paused = true)]
    async fn changes_rounds_start_on_time_while_sweeps_saturate_the_budget() {
        let budget = Budget::new(RateLimit {
            calls: 5,
            window: Duration::from_secs(60),
        });
        let rows = (1..=20_000)
            .map(|i| {
                timed(
                    i,
                    &format!("ns-{}", i % 40),
                    1,
                    0,
                    SERVER_NOW - 3_600_000 - i as i64,
                )
            })
            .collect();
        let source = Arc::new(FakeSource {
            rows: Mutex::new(rows),
            latency: Duration::from_millis(300),
            budget: Some(budget),
            ..FakeSource::default()
        });
        let h = changes_handle();
        let c = ctx(&source, changes_settings());
        assert!(sweep_once(&h, &c).await, "the table is complete");
        let cancel = CancellationToken::new();
        let lanes: Vec<_> = [Lane::Sweep, Lane::Changes]
            .into_iter()
            .map(|lane| tokio::spawn(run_lane(lane, Arc::clone(&h), c.clone(), cancel.clone())))
            .collect();
        tokio::time::sleep(Duration::from_secs(15 * 60)).await;
        cancel.cancel();
        for lane in lanes {
            lane.await.unwrap();
        }
        let queries = source.queries.lock().unwrap().clone();
        let calls = source.calls.lock().unwrap().clone();
        let scans: Vec<Instant> = queries
            .iter()
            .zip(&calls)
            .filter(|(q, _)| q.scanned_since_ms.is_some() && q.offset == 0)
            .map(|(_, c)| c.3)
            .collect();
        assert!(scans.len() >= 14, "{} rounds", scans.len());
        let sweep_pages = queries
            .iter()
            .filter(|q| q.scanned_since_ms.is_none() && q.updated_since_ms.is_none())
            .count();
        assert!(
            sweep_pages > 20,
            "sweeps used the rest of the budget: {sweep_pages}"
        );
        // The first round waited for the slots the first sweep had used, so
        // the second one follows at once; from then on, every round is on time.
        for pair in scans[1..].windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= Duration::from_millis(59_500) && gap <= Duration::from_millis(60_500),
                "a round started {gap:?} after the one before"
            );
        }
    }
}
