//! Churn: how the simulated service's rows change over time, and the
//! server's clock that dates the changes.
//!
//! Place in the project: the simulator stands in for the HSS API; it is used
//! by tests, benchmarks and the demo; the exporter's own code never depends
//! on it. The exporter's changes lane (DESIGN.md section 2) asks the listings
//! for rows with `start_latest_scan_time` / `start_latest_update_time` at or
//! after a watermark; this file makes rows that such filters find, the way
//! the real service does: images are rescanned and pushed one namespace at a
//! time.
//!
//! - [`ServerClock`]: the server's "now", wall-clock epoch ms plus
//!   [`super::SimConfig::clock_offset_ms`], strictly increasing from one
//!   reading to the next;
//! - [`Churn`] ([`ChurnMix`], [`ChurnSetting`]): the rate and mix of changes,
//!   as configured and as written on the command line (`30/1m`);
//! - [`ChurnEvent`] ([`ChurnKind`]): one change, as logged;
//! - `ChurnState`: the engine's random stream, tick counter, scans pending
//!   for pushed images and the bounded log; its methods apply one tick, or
//!   one rescan, push or delete, to the rows in place (the server batches a
//!   tick's changes into one modification of its row snapshot).
//!
//! Rules the changes follow (those of the real service):
//! - a rescan sets `latest_scan_time` to now, `scan_status` to `success`
//!   (sometimes `failed`, with a failure code) and new counts; a row that
//!   had malicious files keeps them, others become malicious with
//!   [`Churn::malicious_rate`]; `severity_level` follows
//!   [`super::severity_level`];
//! - a push adds a new version to an existing repository: an id larger than
//!   any before (ids of deleted rows are never reused), `latest_update_time`
//!   and `latest_sync_time` now, `waiting_for_scan`, never scanned, zero
//!   counts, `latest_version`; the repository's previous latest version gets
//!   `latest_version = false` and keeps its times, so no time filter finds
//!   that flip (only a full listing does);
//! - a pushed image is scanned one to three ticks later (a `Scanned` event,
//!   the same outcome as a rescan);
//! - a delete removes a row (the engine prefers older versions); when it was
//!   the latest version, the newest remaining version of the repository
//!   becomes the latest, again without a change of its times.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::Error;
use super::data::{self, SimImage};

/// Most events the churn log keeps; older ones are dropped first.
pub const CHURN_LOG_CAPACITY: usize = 100_000;

/// Ticks per period when [`Churn::tick`] is left to [`Churn::new`]: a
/// tenth of the period, so the changes come in ten namespace batches a
/// period whatever the time scale.
pub const TICKS_PER_PERIOD: u32 = 10;

/// The server's clock: wall-clock epoch milliseconds plus an offset, and
/// never the same reading twice ([`ServerClock::next`]).
#[derive(Debug)]
pub struct ServerClock {
    offset_ms: i64,
    last: AtomicI64,
}

impl ServerClock {
    /// A clock `offset_ms` ahead of the wall clock (behind when negative).
    pub fn new(offset_ms: i64) -> Self {
        ServerClock {
            offset_ms,
            last: AtomicI64::new(i64::MIN),
        }
    }

    /// The offset from the wall clock, ms.
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms
    }

    fn wall(&self) -> i64 {
        super::now_ms().saturating_add(self.offset_ms)
    }

    /// The time of a new event: the wall clock plus the offset, or 1 ms
    /// after the previous event if the wall clock has not moved past it.
    pub fn next(&self) -> i64 {
        let wall = self.wall();
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let now = wall.max(last.saturating_add(1));
            match self
                .last
                .compare_exchange_weak(last, now, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return now,
                Err(seen) => last = seen,
            }
        }
    }

    /// The time now, without making an event of it: the wall clock plus the
    /// offset, or the last event's time if that is later.
    pub fn peek(&self) -> i64 {
        self.wall().max(self.last.load(Ordering::Acquire))
    }
}

/// A clock offset as given on the command line: a signed duration such as
/// `-90s`, `+5m`, `1h30m`, or a plain number of milliseconds (`-1500`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockOffset(pub i64);

impl FromStr for ClockOffset {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |reason: &str| Error::ClockOffset {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        let text = s.trim();
        let (negative, magnitude) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.strip_prefix('+').unwrap_or(text)),
        };
        let magnitude = magnitude.trim();
        if magnitude.is_empty() {
            return Err(fail("empty"));
        }
        let ms: i64 = if magnitude.bytes().all(|b| b.is_ascii_digit()) {
            magnitude
                .parse()
                .map_err(|_| fail("too many milliseconds"))?
        } else {
            let d = humantime::parse_duration(magnitude).map_err(|e| fail(&e.to_string()))?;
            i64::try_from(d.as_millis()).map_err(|_| fail("too long"))?
        };
        Ok(ClockOffset(if negative { -ms } else { ms }))
    }
}

impl fmt::Display for ClockOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let magnitude = Duration::from_millis(self.0.unsigned_abs());
        let sign = if self.0 < 0 { "-" } else { "" };
        write!(f, "{sign}{}", humantime::format_duration(magnitude))
    }
}

/// Relative weights of the changes the engine starts in a namespace; the
/// scans of pushed images come on top of these, within the same rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChurnMix {
    /// Weight of rescans of existing rows.
    pub rescan: u32,
    /// Weight of pushes of new versions.
    pub push: u32,
    /// Weight of deletes.
    pub delete: u32,
}

impl Default for ChurnMix {
    /// 6 rescans, 3 pushes, 1 delete.
    fn default() -> Self {
        ChurnMix {
            rescan: 6,
            push: 3,
            delete: 1,
        }
    }
}

/// How fast and how the data changes: `events` image changes every `every`
/// of the server's (tokio) time, applied in ticks of `tick`, each tick in
/// one namespace. Every change counts: rescans, pushes, deletes and the
/// scans of pushed images.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Churn {
    /// Image changes per period.
    pub events: u32,
    /// The period; not zero.
    pub every: Duration,
    /// How often a batch of changes is applied; not zero. Tick `k` applies
    /// `floor(k * events * tick / every) - floor((k - 1) * events * tick /
    /// every)` changes, so the rate is exact over whole periods.
    pub tick: Duration,
    /// What the changes are, besides scans of pushed images.
    pub mix: ChurnMix,
    /// Probability that a rescan or scan finds malicious files in a row
    /// that had none.
    pub malicious_rate: f64,
    /// Probability that a rescan or scan fails.
    pub failed_rate: f64,
}

impl Churn {
    /// `events` changes every `every`, in ticks of a tenth of `every`
    /// ([`TICKS_PER_PERIOD`], at least 1 ms), with the default mix, 2 %
    /// turning malicious and 5 % failing.
    pub fn new(events: u32, every: Duration) -> Self {
        Churn {
            events,
            every,
            tick: (every / TICKS_PER_PERIOD).max(Duration::from_millis(1)),
            mix: ChurnMix::default(),
            malicious_rate: 0.02,
            failed_rate: 0.05,
        }
    }

    /// How many changes tick `k` (counted from 1) applies.
    pub fn events_in_tick(&self, k: u64) -> u64 {
        let every = self.every.as_nanos().max(1);
        let per_tick = u128::from(self.events) * self.tick.as_nanos();
        let due = |k: u64| u128::from(k) * per_tick / every;
        let n = due(k).saturating_sub(due(k.saturating_sub(1)));
        u64::try_from(n).unwrap_or(u64::MAX)
    }
}

impl Default for Churn {
    /// 30 changes a minute.
    fn default() -> Self {
        Churn::new(30, Duration::from_secs(60))
    }
}

/// A churn setting as given on the command line: `EVENTS/PERIOD` (image
/// changes per period, e.g. `30/1m`, `5/1s`) or `none`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ChurnSetting(pub Option<Churn>);

impl FromStr for ChurnSetting {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |reason: &str| Error::Churn {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        if s.trim().eq_ignore_ascii_case("none") {
            return Ok(ChurnSetting(None));
        }
        let (events, every) = s.trim().split_once('/').ok_or_else(|| fail("no '/'"))?;
        let events: u32 = events
            .trim()
            .parse()
            .map_err(|_| fail("the change count is not a whole number"))?;
        let every = humantime::parse_duration(every.trim()).map_err(|e| fail(&e.to_string()))?;
        if every.is_zero() {
            return Err(fail("the period must not be zero"));
        }
        Ok(ChurnSetting(
            (events > 0).then(|| Churn::new(events, every)),
        ))
    }
}

impl fmt::Display for ChurnSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(churn) => write!(
                f,
                "{}/{}",
                churn.events,
                humantime::format_duration(churn.every)
            ),
            None => f.write_str("none"),
        }
    }
}

/// What a change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChurnKind {
    /// An existing row was scanned again.
    Rescan,
    /// A new version was pushed (a new row, waiting for its scan).
    Push,
    /// A row was removed.
    Delete,
    /// A pushed row's first scan completed.
    Scanned,
}

/// One change, as the churn log keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct ChurnEvent {
    /// What happened.
    pub kind: ChurnKind,
    /// The row's id.
    pub id: u64,
    /// The row's namespace.
    pub namespace: String,
    /// The row's image type.
    pub image_type: String,
    /// The row's enterprise project.
    pub enterprise_project_id: String,
    /// Server time of the change, epoch ms: the row's new
    /// `latest_scan_time` (rescan, scan) or `latest_update_time` (push), or
    /// when the row was deleted. The changes of one tick share it; other
    /// changes never do.
    pub at_ms: i64,
    /// Wall-clock time (the exporter's side) when the change was applied,
    /// for measuring how long it takes to reach `/metrics`.
    pub at: SystemTime,
}

/// The engine's state: random stream, tick count, pending scans, log.
pub(super) struct ChurnState {
    rng: StdRng,
    ticks: u64,
    /// Smallest id a pushed row may get: above every id seen, deleted ones
    /// included.
    next_id: u64,
    /// Pushed rows waiting for their first scan: (due tick, id).
    pending: BTreeSet<(u64, u64)>,
    log: VecDeque<ChurnEvent>,
}

/// The repository a row belongs to.
fn same_repo(a: &SimImage, b: &SimImage) -> bool {
    a.namespace == b.namespace
        && a.image_name == b.image_name
        && a.image_type == b.image_type
        && a.enterprise_project_id == b.enterprise_project_id
        && a.registry_name == b.registry_name
        && a.instance_id == b.instance_id
}

/// The next tag after `version`: `a.b.c` -> `a.b.(c+1)`, else `version.1`.
fn bump_version(version: &str) -> String {
    if let Some((head, last)) = version.rsplit_once('.')
        && let Ok(n) = last.parse::<u64>()
    {
        return format!("{head}.{}", n + 1);
    }
    format!("{version}.1")
}

/// One tick's work on the rows: changes are applied in place, deletes at
/// the end in one pass.
struct Batch<'a> {
    rows: &'a mut Vec<SimImage>,
    deleted: BTreeSet<u64>,
    now: i64,
    at: SystemTime,
    events: Vec<ChurnEvent>,
}

impl Batch<'_> {
    fn event(&mut self, kind: ChurnKind, i: usize) {
        let row = &self.rows[i];
        self.events.push(ChurnEvent {
            kind,
            id: row.id,
            namespace: row.namespace.clone(),
            image_type: row.image_type.clone(),
            enterprise_project_id: row.enterprise_project_id.clone(),
            at_ms: self.now,
            at: self.at,
        });
    }

    fn live(&self, i: usize) -> bool {
        !self.deleted.contains(&self.rows[i].id)
    }

    fn finish(self) -> Vec<ChurnEvent> {
        if !self.deleted.is_empty() {
            let deleted = &self.deleted;
            self.rows.retain(|row| !deleted.contains(&row.id));
        }
        self.events
    }
}

impl ChurnState {
    /// A state whose choices follow `seed`.
    pub(super) fn new(seed: u64) -> Self {
        ChurnState {
            // Distinct from the data generator's and the faults' streams.
            rng: StdRng::seed_from_u64(seed ^ 0xC4A2_0000_5EED_0003),
            ticks: 0,
            next_id: data::FIRST_ID,
            pending: BTreeSet::new(),
            log: VecDeque::new(),
        }
    }

    /// Copies of the logged events, oldest first.
    pub(super) fn log(&self) -> Vec<ChurnEvent> {
        self.log.iter().cloned().collect()
    }

    /// Takes the logged events, oldest first, leaving the log empty.
    pub(super) fn drain_log(&mut self) -> Vec<ChurnEvent> {
        self.log.drain(..).collect()
    }

    fn record(&mut self, events: &[ChurnEvent]) {
        for event in events {
            if self.log.len() >= CHURN_LOG_CAPACITY {
                self.log.pop_front();
            }
            self.log.push_back(event.clone());
        }
    }

    /// Whether the next tick changes anything (so the server can skip a
    /// modification of its rows when it does not).
    pub(super) fn next_tick_is_empty(&self, churn: &Churn) -> bool {
        churn.events_in_tick(self.ticks + 1) == 0
    }

    /// Sets the outcome of a scan completed at `now`.
    fn scan(&mut self, row: &mut SimImage, churn: &Churn, now: i64) {
        let rng = &mut self.rng;
        row.latest_scan_time = now;
        row.scannable = true;
        if rng.random_bool(churn.failed_rate.clamp(0.0, 1.0)) {
            let reasons: &[&str] = if data::is_swr(&row.image_type) {
                &data::SCAN_FAILED_DESCS
            } else {
                &data::SCAN_FAILED_CODES
            };
            row.scan_status = "failed".to_string();
            row.scan_failed_desc = reasons[rng.random_range(0..reasons.len())].to_string();
            row.vul_num = 0;
            row.unsafe_setting_num = 0;
            row.malicious_file_num = 0;
        } else {
            row.scan_status = "success".to_string();
            row.scan_failed_desc = String::new();
            row.vul_num = if rng.random_bool(0.2) {
                0
            } else {
                rng.random_range(1..=300)
            };
            row.unsafe_setting_num = rng.random_range(0..=10);
            if row.malicious_file_num == 0 && rng.random_bool(churn.malicious_rate.clamp(0.0, 1.0))
            {
                row.malicious_file_num = rng.random_range(1..=5);
            }
        }
        row.severity_level = data::severity_level(&row.scan_status, row.vul_num).to_string();
    }

    /// The id the next pushed row gets.
    fn take_id(&mut self, rows: &[SimImage]) -> u64 {
        let id = self
            .next_id
            .max(rows.last().map_or(data::FIRST_ID, |r| r.id + 1));
        self.next_id = id + 1;
        id
    }

    /// Pushes a new version of the repository of `rows[sibling]` (or, when
    /// there is none, of a new repository `pushed` in `namespace`); `repo`
    /// lists the indices worth searching for the repository's rows. Returns
    /// the new row's index.
    fn push_at(
        &mut self,
        batch: &mut Batch<'_>,
        repo: &mut Vec<usize>,
        sibling: Option<usize>,
        namespace: &str,
        image_type: &str,
    ) -> usize {
        let id = self.take_id(batch.rows);
        let now = batch.now;
        let mut row = match sibling {
            Some(s) => batch.rows[s].clone(),
            None => {
                let (registry_name, registry_type, registry_id) =
                    data::default_registry(image_type);
                SimImage {
                    namespace: namespace.to_string(),
                    image_name: "pushed".to_string(),
                    image_version: "0.0.0".to_string(),
                    image_type: image_type.to_string(),
                    enterprise_project_id: "0".to_string(),
                    registry_name: registry_name.to_string(),
                    registry_type: registry_type.to_string(),
                    registry_id: registry_id.to_string(),
                    ..SimImage::default()
                }
            }
        };
        // The repository's rows, and its newest tag.
        let siblings: Vec<usize> = repo
            .iter()
            .copied()
            .filter(|&i| batch.live(i) && same_repo(&batch.rows[i], &row))
            .collect();
        let newest = siblings
            .iter()
            .copied()
            .max_by_key(|&i| (batch.rows[i].latest_version, batch.rows[i].id));
        let mut version = match newest {
            Some(i) => bump_version(&batch.rows[i].image_version),
            None if sibling.is_some() => bump_version(&row.image_version),
            None => row.image_version.clone(),
        };
        while siblings
            .iter()
            .any(|&i| batch.rows[i].image_version == version)
        {
            version = bump_version(&version);
        }
        for &i in &siblings {
            batch.rows[i].latest_version = false;
        }
        let digest = format!("{:016x}", data::mix(id)).repeat(4);
        row.id = id;
        row.image_id = format!("{:016x}", data::mix(!id)).repeat(4);
        row.image_digest = format!("sha256:{digest}");
        row.image_version = version;
        row.latest_version = true;
        row.scan_status = "waiting_for_scan".to_string();
        row.scan_failed_desc = String::new();
        row.scannable = true;
        row.latest_update_time = now;
        row.latest_sync_time = now;
        row.latest_scan_time = 0;
        row.vul_num = 0;
        row.unsafe_setting_num = 0;
        row.malicious_file_num = 0;
        row.severity_level = data::severity_level("waiting_for_scan", 0).to_string();
        if row.image_size <= 0 {
            row.image_size = 52_428_800;
        }
        // Ids only grow, so the row goes last and the rows stay in id order.
        batch.rows.push(row);
        let index = batch.rows.len() - 1;
        repo.push(index);
        let due = self.ticks + self.rng.random_range(1..=3u64);
        self.pending.insert((due, id));
        batch.event(ChurnKind::Push, index);
        index
    }

    /// Deletes `rows[i]`; when it was its repository's latest version, the
    /// newest remaining one (among `repo`) becomes the latest.
    fn delete_at(batch: &mut Batch<'_>, repo: &[usize], i: usize) {
        batch.event(ChurnKind::Delete, i);
        batch.deleted.insert(batch.rows[i].id);
        if batch.rows[i].latest_version {
            let newest = repo
                .iter()
                .copied()
                .filter(|&j| j != i && batch.live(j) && same_repo(&batch.rows[j], &batch.rows[i]))
                .max_by_key(|&j| (batch.rows[j].latest_update_time, batch.rows[j].id));
            if let Some(j) = newest {
                batch.rows[j].latest_version = true;
            }
        }
    }

    /// One tick: the scans of pushed rows that are due, then changes in one
    /// namespace, picked at random (a namespace with more rows more often),
    /// `churn.events_in_tick` changes in all, all dated `now`.
    pub(super) fn tick(
        &mut self,
        churn: &Churn,
        rows: &mut Vec<SimImage>,
        now: i64,
        at: SystemTime,
    ) -> Vec<ChurnEvent> {
        self.ticks += 1;
        let mut left = churn.events_in_tick(self.ticks);
        let mut batch = Batch {
            rows,
            deleted: BTreeSet::new(),
            now,
            at,
            events: Vec::new(),
        };
        while left > 0 {
            let Some(&(due, id)) = self.pending.first() else {
                break;
            };
            if due > self.ticks {
                break;
            }
            self.pending.remove(&(due, id));
            if let Ok(i) = batch.rows.binary_search_by_key(&id, |r| r.id) {
                let mut row = std::mem::take(&mut batch.rows[i]);
                self.scan(&mut row, churn, now);
                batch.rows[i] = row;
                batch.event(ChurnKind::Scanned, i);
                left -= 1;
            }
        }
        if left > 0 && !batch.rows.is_empty() {
            let pick = self.rng.random_range(0..batch.rows.len());
            let namespace = batch.rows[pick].namespace.clone();
            let mut in_namespace: Vec<usize> = (0..batch.rows.len())
                .filter(|&i| batch.rows[i].namespace == namespace)
                .collect();
            let weights = [churn.mix.rescan, churn.mix.push, churn.mix.delete];
            let total: u32 = weights.iter().sum();
            for _ in 0..left {
                let live: Vec<usize> = in_namespace
                    .iter()
                    .copied()
                    .filter(|&i| batch.live(i))
                    .collect();
                if live.is_empty() || total == 0 {
                    break;
                }
                let roll = self.rng.random_range(0..total);
                let chosen = live[self.rng.random_range(0..live.len())];
                if roll < weights[0] {
                    let mut row = std::mem::take(&mut batch.rows[chosen]);
                    self.scan(&mut row, churn, now);
                    self.pending.retain(|&(_, id)| id != row.id);
                    batch.rows[chosen] = row;
                    batch.event(ChurnKind::Rescan, chosen);
                } else if roll < weights[0] + weights[1] {
                    let image_type = batch.rows[chosen].image_type.clone();
                    self.push_at(
                        &mut batch,
                        &mut in_namespace,
                        Some(chosen),
                        &namespace,
                        &image_type,
                    );
                } else {
                    // Retention policies delete old tags first.
                    let old: Vec<usize> = live
                        .iter()
                        .copied()
                        .filter(|&i| !batch.rows[i].latest_version)
                        .collect();
                    let victim = if old.is_empty() {
                        chosen
                    } else {
                        old[self.rng.random_range(0..old.len())]
                    };
                    let id = batch.rows[victim].id;
                    self.pending.retain(|&(_, pending)| pending != id);
                    self.next_id = self.next_id.max(id + 1);
                    Self::delete_at(&mut batch, &in_namespace, victim);
                }
            }
        }
        let events = batch.finish();
        self.record(&events);
        events
    }

    /// Rescans row `id` with the given counts: `success`, scanned `now`.
    pub(super) fn rescan(
        &mut self,
        rows: &mut [SimImage],
        id: u64,
        counts: (i64, i64, i64),
        now: i64,
        at: SystemTime,
    ) -> Option<SimImage> {
        let i = rows.binary_search_by_key(&id, |r| r.id).ok()?;
        let row = &mut rows[i];
        row.latest_scan_time = now;
        row.scan_status = "success".to_string();
        row.scan_failed_desc = String::new();
        row.scannable = true;
        (row.vul_num, row.unsafe_setting_num, row.malicious_file_num) = counts;
        row.severity_level = data::severity_level("success", row.vul_num).to_string();
        let row = row.clone();
        self.pending.retain(|&(_, pending)| pending != id);
        let event = ChurnEvent {
            kind: ChurnKind::Rescan,
            id,
            namespace: row.namespace.clone(),
            image_type: row.image_type.clone(),
            enterprise_project_id: row.enterprise_project_id.clone(),
            at_ms: now,
            at,
        };
        self.record(&[event]);
        Some(row)
    }

    /// Pushes a new version into a repository of `namespace` and
    /// `image_type`, picked at random among those there; with none, into a
    /// new repository `pushed` (enterprise project `"0"`, the type's default
    /// registry).
    pub(super) fn push(
        &mut self,
        rows: &mut Vec<SimImage>,
        namespace: &str,
        image_type: &str,
        now: i64,
        at: SystemTime,
    ) -> SimImage {
        let mut candidates: Vec<usize> = (0..rows.len())
            .filter(|&i| rows[i].namespace == namespace && rows[i].image_type == image_type)
            .collect();
        let sibling = (!candidates.is_empty())
            .then(|| candidates[self.rng.random_range(0..candidates.len())]);
        let mut batch = Batch {
            rows,
            deleted: BTreeSet::new(),
            now,
            at,
            events: Vec::new(),
        };
        let index = self.push_at(&mut batch, &mut candidates, sibling, namespace, image_type);
        let row = batch.rows[index].clone();
        let events = batch.finish();
        self.record(&events);
        row
    }

    /// Deletes row `id`; false when there is none.
    pub(super) fn delete(
        &mut self,
        rows: &mut Vec<SimImage>,
        id: u64,
        now: i64,
        at: SystemTime,
    ) -> bool {
        let Ok(i) = rows.binary_search_by_key(&id, |r| r.id) else {
            return false;
        };
        self.next_id = self.next_id.max(id + 1);
        let repo: Vec<usize> = (0..rows.len())
            .filter(|&j| same_repo(&rows[j], &rows[i]))
            .collect();
        self.pending.retain(|&(_, pending)| pending != id);
        let mut batch = Batch {
            rows,
            deleted: BTreeSet::new(),
            now,
            at,
            events: Vec::new(),
        };
        Self::delete_at(&mut batch, &repo, i);
        let events = batch.finish();
        self.record(&events);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_offsets_parse_and_display() {
        for (text, ms) in [
            ("0", 0),
            ("-90s", -90_000),
            ("+5m", 300_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("-1500", -1500),
            (" 250 ", 250),
            ("-100ms", -100),
        ] {
            assert_eq!(
                text.parse::<ClockOffset>().unwrap(),
                ClockOffset(ms),
                "{text}"
            );
        }
        for bad in ["", "-", "soon", "5 parsecs", "--5s"] {
            assert!(
                matches!(bad.parse::<ClockOffset>(), Err(Error::ClockOffset { .. })),
                "{bad}"
            );
        }
        assert_eq!(ClockOffset(-90_000).to_string(), "-1m 30s");
        assert_eq!(ClockOffset(300_000).to_string(), "5m");
    }

    #[test]
    fn churn_settings_parse_and_display() {
        let ChurnSetting(Some(churn)) = "30/1m".parse().unwrap() else {
            panic!("a churn")
        };
        assert_eq!(churn.events, 30);
        assert_eq!(churn.every, Duration::from_secs(60));
        assert_eq!(churn.tick, Duration::from_secs(6));
        assert_eq!(ChurnSetting(Some(churn)).to_string(), "30/1m");
        assert_eq!("none".parse::<ChurnSetting>().unwrap(), ChurnSetting(None));
        assert_eq!("0/1m".parse::<ChurnSetting>().unwrap(), ChurnSetting(None));
        assert_eq!(ChurnSetting(None).to_string(), "none");
        for bad in ["30", "x/1m", "30/0s", "30/soon", "-1/1m"] {
            assert!(
                matches!(bad.parse::<ChurnSetting>(), Err(Error::Churn { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn ticks_spread_the_rate_exactly() {
        // 30 a minute in ticks of 6 s: 3 a tick.
        let churn = Churn::default();
        assert!((1..=10).all(|k| churn.events_in_tick(k) == 3));
        // 7 a second in ticks of 100 ms: 0 or 1 a tick, 7 a period.
        let churn = Churn::new(7, Duration::from_secs(1));
        let per_period: Vec<u64> = (0..5)
            .map(|p| (1..=10).map(|k| churn.events_in_tick(p * 10 + k)).sum())
            .collect();
        assert_eq!(per_period, vec![7; 5]);
        // More than one a millisecond.
        let churn = Churn::new(6000, Duration::from_secs(1));
        assert_eq!((1..=10).map(|k| churn.events_in_tick(k)).sum::<u64>(), 6000);
    }

    #[test]
    fn the_clock_never_repeats_and_keeps_its_offset() {
        let clock = ServerClock::new(3_600_000);
        let before = super::super::now_ms();
        let times: Vec<i64> = (0..1000).map(|_| clock.next()).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]));
        assert!(times[0] >= before + 3_600_000);
        assert!(clock.peek() >= times[999]);
        let behind = ServerClock::new(-90_000);
        let t = behind.next();
        assert!(t <= super::super::now_ms() - 90_000 + 1);
    }

    #[test]
    fn versions_bump() {
        assert_eq!(bump_version("1.2.3"), "1.2.4");
        assert_eq!(bump_version("latest"), "latest.1");
        assert_eq!(bump_version("v1.9"), "v1.10");
    }
}
