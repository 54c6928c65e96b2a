//! Collection: scopes, their lanes, and what each lane publishes.
//!
//! Place in the data flow: between the configuration and the metrics. The
//! [`scheduler`] runs the lanes of every scope, asking an [`ImageSource`] (the
//! HSS client) for pages; [`aggregate`] turns rows into namespace statistics
//! and the immutable [`Snapshot`] a sweep publishes. Each [`ScopeHandle`] holds
//! one scope's image table and what it publishes ([`Published`]: snapshots,
//! lane status, detector, watermarks; changed in one step), which the metrics
//! and web modules read without ever calling the API.

pub mod aggregate;
pub mod detect;
pub mod keys;
pub mod scheduler;
pub mod source;
pub mod table;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

pub use aggregate::{MaliciousSnapshot, NamespaceKey, NamespaceStats, Snapshot};
pub use detect::DetectorState;
pub use source::ImageSource;
pub use table::ImageTable;

use crate::config::{ImageType, ListingApi};

/// Why a lane run failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A page could not be fetched, after retries.
    #[error("page at offset {offset}: {source}")]
    Page {
        /// The page's first row.
        offset: u64,
        /// What the client reported.
        source: crate::hss::Error,
    },
    /// The listing is longer than the API can page through.
    #[error("the listing has more than {0} rows, the most the API can page through")]
    TooLong(u64),
}

/// The unit that is polled, published, marked up or down, and goes stale on
/// its own: one target, enterprise project and image type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    /// The target's name.
    pub target: String,
    /// The enterprise project.
    pub enterprise_project_id: String,
    /// The image type.
    pub image_type: ImageType,
    /// Ask only for the latest version of each image.
    pub latest_version_only: bool,
    /// The listing API the scope's target polls.
    pub api: ListingApi,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.target, self.enterprise_project_id, self.image_type
        )
    }
}

/// A lane: one kind of periodic listing of a scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lane {
    /// Images with malicious files only, every `malicious_interval` (with
    /// the changes lane on: until the first complete sweep, then as a check
    /// every few changes rounds); its calls go before sweep pages.
    Malicious,
    /// The full listing, every `poll_interval`: with the changes lane on, a
    /// reconciliation of the image table.
    Sweep,
    /// What was scanned or pushed since the last look, every
    /// `changes_interval`, upserted into the image table.
    Changes,
}

impl Lane {
    /// Every lane.
    pub const ALL: [Lane; 3] = [Lane::Malicious, Lane::Sweep, Lane::Changes];

    /// The lane's position in [`Lane::ALL`].
    pub fn index(self) -> usize {
        match self {
            Self::Malicious => 0,
            Self::Sweep => 1,
            Self::Changes => 2,
        }
    }

    /// The `lane` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malicious => "malicious",
            Self::Sweep => "sweep",
            Self::Changes => "changes",
        }
    }
}

/// Where the changes lane stands: the largest server timestamps it has seen
/// and the filters it asks with next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Watermarks {
    /// `start_latest_scan_time` of the next scan-time query, epoch ms.
    pub scan_since_ms: Option<i64>,
    /// `start_latest_update_time` of the next update-time query, epoch ms.
    pub update_since_ms: Option<i64>,
    /// The largest `latest_scan_time` seen, epoch ms.
    pub newest_scan_ms: Option<i64>,
    /// The largest `latest_update_time` seen, epoch ms.
    pub newest_update_ms: Option<i64>,
    /// Changes rounds run since the table was built, for the lane's
    /// alternation (update-time query every other round, malicious check
    /// every few rounds).
    pub rounds: u64,
}

/// What a lane has done so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LaneStatus {
    /// Runs finished, successful or not.
    pub runs: u64,
    /// Runs that failed.
    pub failures: u64,
    /// Whether the last finished run succeeded.
    pub up: bool,
    /// Start of the run in progress.
    pub running_since: Option<SystemTime>,
    /// End of the last finished run.
    pub last_run_end: Option<SystemTime>,
    /// Duration of the last finished run.
    pub last_duration: Option<Duration>,
    /// End of the last successful run (wall clock, for metrics).
    pub last_success: Option<SystemTime>,
    /// End of the last successful run (monotonic, for staleness).
    pub last_success_at: Option<Instant>,
    /// Error of the last run, if it failed.
    pub last_error: Option<String>,
    /// Pages fetched by the last finished run.
    pub last_pages: u64,
    /// Distinct images seen by the last successful run.
    pub last_images: u64,
    /// Namespaces seen by the last successful run.
    pub last_namespaces: u64,
    /// Rows dropped as duplicates, over all runs.
    pub duplicate_rows: u64,
    /// Times `total_num` changed between pages of one run, over all runs.
    pub total_changes: u64,
    /// Rows that changed the image table, over all runs (the changes lane
    /// and the malicious check).
    pub rows_applied: u64,
    /// When the next run is due.
    pub next_run: Option<SystemTime>,
}

/// What a scrape reads of one scope: the published results, the lanes'
/// status, the detector and the changes lane's watermarks. It changes in one
/// step ([`ScopeHandle::commit`]): a lane's run publishes its result, its
/// status and what detection made of it together, so a scrape never sees a
/// new figure with an old status or an old detection count.
#[derive(Debug, Clone, Default)]
pub struct Published {
    /// The image table's (or, without the changes lane, the last sweep's)
    /// published snapshot.
    pub snapshot: Option<Arc<Snapshot>>,
    /// The last malicious-lane result.
    pub malicious: Option<Arc<MaliciousSnapshot>>,
    /// Each lane's status, by [`Lane::index`].
    pub lanes: [LaneStatus; 3],
    /// The detector.
    pub detector: Arc<DetectorState>,
    /// Where the changes lane stands.
    pub watermarks: Watermarks,
}

impl Published {
    /// A lane's status.
    pub fn lane(&self, lane: Lane) -> &LaneStatus {
        &self.lanes[lane.index()]
    }

    /// A lane's status, to change.
    pub fn lane_mut(&mut self, lane: Lane) -> &mut LaneStatus {
        &mut self.lanes[lane.index()]
    }

    /// The detector, to change.
    pub fn detector_mut(&mut self) -> &mut DetectorState {
        Arc::make_mut(&mut self.detector)
    }

    fn fresh(&self, lane: Lane, stale_after: Duration) -> bool {
        self.lane(lane)
            .last_success_at
            .is_some_and(|at| at.elapsed() <= stale_after)
    }
}

/// One scope's shared state: what it publishes ([`Published`], changed in
/// one step), its image table and the table's readiness.
#[derive(Debug)]
pub struct ScopeHandle {
    /// Which scope.
    pub scope: Scope,
    /// How long the last good result is served after failures.
    pub stale_after: Duration,
    /// Whether the malicious lane runs.
    pub malicious_lane: bool,
    /// Whether the changes lane runs.
    pub changes_lane: bool,
    /// Which rounds this scope's changes lane asks for pushes in: scopes
    /// take turns, so their update-time queries do not all fall in one round.
    pub stagger: u64,
    table: Mutex<ImageTable>,
    /// Notified when the image table becomes complete (a first sweep).
    table_ready: tokio::sync::Notify,
    published: RwLock<Arc<Published>>,
}

impl ScopeHandle {
    /// A scope with nothing published yet, without the changes lane.
    pub fn new(scope: Scope, stale_after: Duration, malicious_lane: bool) -> Arc<Self> {
        Self::with_lanes(scope, stale_after, malicious_lane, false, false)
    }

    /// This handle, asking for pushes in the rounds of `stagger`'s parity
    /// (the scope's position among those sharing a budget).
    pub fn staggered(mut self: Arc<Self>, stagger: u64) -> Arc<Self> {
        if let Some(handle) = Arc::get_mut(&mut self) {
            handle.stagger = stagger;
        }
        self
    }

    /// A scope with nothing published yet; `keep_names` keeps every image's
    /// names in the table (for per-image series).
    pub fn with_lanes(
        scope: Scope,
        stale_after: Duration,
        malicious_lane: bool,
        changes_lane: bool,
        keep_names: bool,
    ) -> Arc<Self> {
        Arc::new(Self {
            scope,
            stale_after,
            malicious_lane,
            changes_lane,
            stagger: 0,
            table: Mutex::new(ImageTable::empty(keep_names)),
            table_ready: tokio::sync::Notify::new(),
            published: RwLock::new(Arc::new(Published::default())),
        })
    }

    /// Takes over what `old` (the same scope under the previous
    /// configuration) has: lane status, published results, the image table
    /// and the changes lane's watermarks, and the detector, so a reload keeps
    /// data and counters. The table stays with `old` when the two keep image
    /// names differently; the next sweep builds this one's.
    pub fn carry_over(&self, old: &ScopeHandle) {
        let mut taken = (*old.view()).clone();
        {
            let mut mine = self.table();
            let mut theirs = old.table();
            if self.changes_lane && mine.keeps_names() == theirs.keeps_names() {
                let keep_names = theirs.keeps_names();
                *mine = std::mem::replace(&mut *theirs, ImageTable::empty(keep_names));
                mine.abort_sweep();
            } else {
                taken.watermarks = Watermarks::default();
            }
        }
        for status in &mut taken.lanes {
            status.running_since = None;
            status.next_run = None;
        }
        self.commit(|p| *p = taken);
    }

    /// The lanes this scope runs.
    pub fn lanes(&self) -> &'static [Lane] {
        match (self.malicious_lane, self.changes_lane) {
            (true, true) => &[Lane::Malicious, Lane::Sweep, Lane::Changes],
            (true, false) => &[Lane::Malicious, Lane::Sweep],
            (false, true) => &[Lane::Sweep, Lane::Changes],
            (false, false) => &[Lane::Sweep],
        }
    }

    /// The scope's image table.
    pub fn table(&self) -> MutexGuard<'_, ImageTable> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until the image table is complete (a first sweep has built it).
    pub async fn table_complete(&self) {
        loop {
            let ready = self.table_ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            if self.table().is_complete() {
                return;
            }
            ready.await;
        }
    }

    /// Wakes whoever waits in [`table_complete`](Self::table_complete).
    pub fn announce_table(&self) {
        self.table_ready.notify_waiters();
    }

    /// What the scope publishes, as one consistent value: read it once and
    /// take every figure of the scope from it.
    pub fn view(&self) -> Arc<Published> {
        Arc::clone(
            &self
                .published
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Changes what the scope publishes in one step: readers see all of
    /// `change` or none of it.
    pub fn commit<T>(&self, change: impl FnOnce(&mut Published) -> T) -> T {
        let mut published = self
            .published
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        change(Arc::make_mut(&mut published))
    }

    /// The snapshot of `view` to serve: `None` unless the sweep or the
    /// changes lane has succeeded within `stale_after`.
    pub fn serving_snapshot(&self, view: &Published) -> Option<Arc<Snapshot>> {
        if !(view.fresh(Lane::Sweep, self.stale_after)
            || self.changes_lane && view.fresh(Lane::Changes, self.stale_after))
        {
            return None;
        }
        view.snapshot.clone()
    }

    /// The malicious-lane result of `view` to serve: `None` when it is older
    /// than `stale_after`.
    pub fn serving_malicious(&self, view: &Published) -> Option<Arc<MaliciousSnapshot>> {
        if !view.fresh(Lane::Malicious, self.stale_after) {
            return None;
        }
        view.malicious.clone()
    }

    /// The last published state of the image table (a complete sweep, and
    /// the changes applied since), unless neither the sweep nor the changes
    /// lane has succeeded within `stale_after`.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.serving_snapshot(&self.view())
    }

    /// The last malicious-lane result, unless it is older than `stale_after`.
    pub fn malicious_snapshot(&self) -> Option<Arc<MaliciousSnapshot>> {
        self.serving_malicious(&self.view())
    }

    /// A copy of the detector's state.
    pub fn detector(&self) -> DetectorState {
        (*self.view().detector).clone()
    }

    /// A copy of the changes lane's watermarks.
    pub fn watermarks(&self) -> Watermarks {
        self.view().watermarks
    }

    /// A copy of a lane's status.
    pub fn lane_status(&self, lane: Lane) -> LaneStatus {
        self.view().lane(lane).clone()
    }

    /// Changes a lane's status (alone: a run's end goes through
    /// [`commit`](Self::commit) with its result).
    pub fn update_lane(&self, lane: Lane, change: impl FnOnce(&mut LaneStatus)) {
        self.commit(|p| change(p.lane_mut(lane)));
    }

    /// Whether a lane has finished a run, so `/metrics` holds something of
    /// the scope. The malicious lane runs first and fast, so a large registry
    /// is ready within a minute, not after its first hour-long sweep.
    pub fn has_run(&self) -> bool {
        let view = self.view();
        self.lanes().iter().any(|lane| view.lane(*lane).runs > 0)
    }
}

/// The scopes being polled; replaced as a whole when the configuration is
/// reloaded.
#[derive(Debug, Default)]
pub struct ScopeSet {
    scopes: RwLock<Vec<Arc<ScopeHandle>>>,
}

impl ScopeSet {
    /// A set holding `scopes`.
    pub fn new(scopes: Vec<Arc<ScopeHandle>>) -> Arc<Self> {
        Arc::new(Self {
            scopes: RwLock::new(scopes),
        })
    }

    /// The current scopes.
    pub fn list(&self) -> Vec<Arc<ScopeHandle>> {
        self.scopes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the scopes.
    pub fn replace(&self, scopes: Vec<Arc<ScopeHandle>>) {
        *self.scopes.write().unwrap_or_else(PoisonError::into_inner) = scopes;
    }

    /// Whether every scope has finished a first run of one of its lanes.
    pub fn ready(&self) -> bool {
        self.list().iter().all(|scope| scope.has_run())
    }
}
