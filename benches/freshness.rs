//! Benchmark of the changes lane: how fresh the exported figures stay while
//! images are rescanned and pushed, on the built-in simulator over loopback
//! HTTP with the quota scaled from 5 calls a minute to 5 calls a second and
//! every interval scaled by the same 1/60 (`changes_interval: 1s`,
//! `malicious_interval: 1s`, `poll_interval: 5s`, `changes_overlap: 5s`),
//! the three SWR image types (three scopes), simulator latency 5 ms:
//!
//! - at 15,000 and 100,000 images (300 and 2,000 namespaces over the three
//!   scopes): the bootstrap (until every scope's first sweep is complete),
//!   then churn of one namespace per tick, three ticks per round (rescans,
//!   pushes, the first scans of pushed images, a few rescans turning an
//!   image malicious). For every change, the lag until `/metrics` (scraped
//!   over HTTP every tenth of a round) shows the figure it changed; for every
//!   image that turned malicious, the lag until
//!   `hss_swr_malicious_images_detected_total` of its namespace counts it;
//!   listing calls per round and 429s;
//! - for every image that turned malicious: when its scope's next
//!   scan-time and update-time queries reached the simulator and when
//!   `/metrics` counted it, in rounds after the change;
//! - at 15,000 images: deletes too, then churn stops and the benchmark waits
//!   until every scope has completed a sweep that started after the stop
//!   (at most `HSS_BENCH_CONVERGENCE_CAP`, default 20 minutes: sweeps get
//!   only the budget the changes lane leaves, and the private scope's sweep
//!   running at the stop, up to 8 minutes, finishes first), then compares every
//!   namespace's exported figures with a full listing of the simulator
//!   (the deletes need that reconcile sweep); it also reports when they
//!   first matched;
//! - at 1,000,000 images: the image table's footprint per image and the
//!   process's peak RSS, and the CPU of one reconcile sweep of 1,000,000
//!   images done as the daemon does it (5,000 pages through the HTTP client
//!   from a simulator in a separate process, no quota), each in a fresh
//!   process.
//!
//! "Visible": after every change the benchmark keeps the touched namespace's
//! true figures (it mirrors every change it makes). A push changes the image
//! count, a rescan the vulnerability and malicious-file sums: a change made
//! as change number k is visible at the first scrape where that figure of
//! its namespace equals the truth after some change j >= k of that
//! namespace. Per figure rather than for the whole namespace, so a rescan is
//! not held up by a push in the same namespace that the next update-time
//! query will bring.
//!
//! Run: `cargo bench --bench freshness` (about 35 minutes), or
//! `cargo bench --bench freshness -- --quick` (15,000 images, 30 rounds, no
//! 1,000,000).

mod support;

use std::collections::{BTreeMap, HashMap};
use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{AK, SK, cpu_seconds, start_simulator, status_kib};

use hss_swr_exporter::app::{Exporter, run_daemon};
use hss_swr_exporter::collect::scheduler::changes_round;
use hss_swr_exporter::collect::table::TableBuilder;
use hss_swr_exporter::collect::{Lane, ScopeSet};
use hss_swr_exporter::config::Config;
use hss_swr_exporter::hss::Row;
use hss_swr_exporter::simulator::{
    Quota, SimConfig, SimImage, Simulator, generate, max_calls_in_window,
};
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use tokio_util::sync::CancellationToken;

const WINDOW: Duration = Duration::from_secs(1);
const CALLS: u32 = 5;
const TYPES: [&str; 3] = ["private_image", "shared_image", "instance_image"];
/// A target name and an enterprise project id as long as real ones.
const TARGET: &str = "prod-cn-north-4-container-registry";
const ENTERPRISE_PROJECT: &str = "3f2b8c1e-7a4d-4e9b-a6c5-0d1e2f3a4b5c";
/// `changes_interval` (1m scaled by 1/60).
const CHANGES_INTERVAL: Duration = Duration::from_secs(1);
const TICKS_PER_ROUND: u32 = 3;
/// Rescans and pushes a tick makes in its namespace (the first scans of
/// pushed images, due one to three ticks after the push, come on top).
const CHANGES_PER_TICK: usize = 4;
/// Of ten changes, how many are rescans (the rest are pushes).
const RESCANS_OF_TEN: u32 = 6;
/// Probability that a rescan or first scan turns a clean image malicious.
const MALICIOUS_RATE: f64 = 0.04;
/// Rounds to wait, after the churn, for changes not yet visible.
const DRAIN_ROUNDS: u32 = 10;
/// Rounds of deletes (with rescans and pushes) before convergence.
const DELETE_ROUNDS: u32 = 10;
const CONVERGENCE_CAP: Duration = Duration::from_secs(20 * 60);
const LAG_P95_TARGET: f64 = 2.5;
const DETECT_TARGET: f64 = 1.2;
const BYTES_TARGET: f64 = 64.0;
const SWEEP_CPU_TARGET: f64 = 3.0;

// ---------------------------------------------------------------- data

const WORDS: [&str; 12] = [
    "payments",
    "checkout",
    "identity",
    "logistics",
    "search",
    "analytics",
    "billing",
    "catalog",
    "messaging",
    "inventory",
    "risk-engine",
    "media",
];
const ENVS: [&str; 4] = ["prod", "staging", "dev", "platform"];

/// A namespace name as long as real ones, e.g. `billing-staging-svc-0042`.
fn long_name(i: usize) -> String {
    format!(
        "{}-{}-svc-{i:04}",
        WORDS[i % WORDS.len()],
        ENVS[(i / WORDS.len()) % ENVS.len()]
    )
}

/// `images` rows of the three SWR image types over `namespaces` names (the
/// enterprise-edition type spreads each name over two instances, so a scope
/// set holds about four namespace keys per name), all in
/// [`ENTERPRISE_PROJECT`].
fn dataset(images: usize, namespaces: usize, seed: u64) -> Vec<SimImage> {
    let mut rows = generate(&SimConfig {
        seed,
        images: images * 5 / 4 + 64,
        namespaces,
        ..SimConfig::default()
    });
    rows.retain(|r| TYPES.contains(&r.image_type.as_str()));
    rows.truncate(images);
    let mut names: HashMap<String, String> = HashMap::new();
    let mut malicious: HashMap<String, usize> = HashMap::new();
    for row in &mut rows {
        if row.malicious_file_num > 0 {
            let seen = malicious.entry(row.image_type.clone()).or_default();
            *seen += 1;
            if *seen > MALICIOUS_PER_SCOPE {
                row.malicious_file_num = 0;
            }
        }
        row.enterprise_project_id = ENTERPRISE_PROJECT.to_string();
        let next = names.len();
        row.namespace = names
            .entry(std::mem::take(&mut row.namespace))
            .or_insert_with(|| long_name(next))
            .clone();
    }
    rows
}

/// Malicious images a scope starts with, at most: the generator makes 1 %
/// of rows malicious, and at 100,000 images that is 3 to 5 pages of the
/// malicious listing per scope and round, which alone needs more than the
/// whole budget before the first sweep is complete (see docs/PERFORMANCE.md).
/// 150 keeps it to one page.
const MALICIOUS_PER_SCOPE: usize = 150;

/// (image type, instance, namespace): one namespace of one scope.
type Key = (String, String, String);

fn key_of(row: &SimImage) -> Key {
    (
        row.image_type.clone(),
        row.instance_name.clone(),
        row.namespace.clone(),
    )
}

/// What the lag is measured on: image count, vulnerability and
/// malicious-file sums.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Fig {
    images: i64,
    vul: i64,
    mal: i64,
}

/// Every figure the convergence check compares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Full {
    statuses: BTreeMap<String, i64>,
    vul: i64,
    mal: i64,
    unsafe_settings: i64,
}

impl Full {
    fn fig(&self) -> Fig {
        Fig {
            images: self.statuses.values().sum(),
            vul: self.vul,
            mal: self.mal,
        }
    }
}

fn truth_of(rows: &[SimImage]) -> BTreeMap<Key, Full> {
    let mut out: BTreeMap<Key, Full> = BTreeMap::new();
    for row in rows
        .iter()
        .filter(|r| TYPES.contains(&r.image_type.as_str()))
    {
        let full = out.entry(key_of(row)).or_default();
        *full.statuses.entry(row.scan_status.clone()).or_default() += 1;
        full.vul += row.vul_num;
        full.mal += row.malicious_file_num;
        full.unsafe_settings += row.unsafe_setting_num;
    }
    out
}

// ---------------------------------------------------------------- scraping

struct Exported {
    figures: BTreeMap<Key, Full>,
    detected: HashMap<Key, u64>,
}

fn label<'a>(labels: &'a str, name: &str) -> &'a str {
    let needle = format!("{name}=\"");
    labels
        .find(&needle)
        .map(|i| {
            let rest = &labels[i + needle.len()..];
            &rest[..rest.find('"').unwrap_or(rest.len())]
        })
        .unwrap_or("")
}

fn parse_metrics(text: &str) -> Exported {
    let mut figures: BTreeMap<Key, Full> = BTreeMap::new();
    let mut detected = HashMap::new();
    for line in text.lines() {
        let Some(brace) = line.find('{') else {
            continue;
        };
        let name = &line[..brace];
        if !matches!(
            name,
            "hss_swr_images"
                | "hss_swr_vulnerabilities"
                | "hss_swr_malicious_files"
                | "hss_swr_unsafe_settings"
                | "hss_swr_malicious_images_detected_total"
        ) {
            continue;
        }
        let Some(close) = line.rfind('}') else {
            continue;
        };
        let labels = &line[brace + 1..close];
        let value: f64 = line[close + 1..].trim().parse().unwrap_or(f64::NAN);
        let key = (
            label(labels, "image_type").to_string(),
            label(labels, "instance_name").to_string(),
            label(labels, "namespace").to_string(),
        );
        let value = value as i64;
        if name == "hss_swr_malicious_images_detected_total" {
            detected.insert(key, value as u64);
            continue;
        }
        let full = figures.entry(key).or_default();
        match name {
            "hss_swr_images" => {
                if value != 0 {
                    full.statuses
                        .insert(label(labels, "scan_status").to_string(), value);
                }
            }
            "hss_swr_vulnerabilities" => full.vul = value,
            "hss_swr_malicious_files" => full.mal = value,
            _ => full.unsafe_settings = value,
        }
    }
    Exported { figures, detected }
}

async fn scrape(client: &reqwest::Client, url: &str) -> Exported {
    let response = client
        .get(url)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("scrape");
    assert!(
        response.status().is_success(),
        "scrape: {}",
        response.status()
    );
    let gzip = response
        .headers()
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes() == b"gzip");
    let body = response.bytes().await.expect("scrape body");
    let text = if gzip {
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(&body[..])
            .read_to_string(&mut text)
            .expect("gzip");
        text
    } else {
        String::from_utf8_lossy(&body).into_owned()
    };
    parse_metrics(&text)
}

// ---------------------------------------------------------------- churn

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Rescan,
    Push,
    /// The first scan of a pushed image.
    Scanned,
}

struct Change {
    kind: Kind,
    key: usize,
    seq: u64,
    at: Instant,
    /// Rounds until visible, once it is.
    lag: Option<f64>,
}

struct Detection {
    key: usize,
    /// The namespace's how-manieth new malicious image (1-based).
    nth: u64,
    /// A rescan, or the first scan of a pushed image.
    kind: Kind,
    id: u64,
    at: Instant,
    wall: std::time::SystemTime,
    lag: Option<f64>,
}

struct Img {
    key: usize,
    vul: i64,
    mal: i64,
}

/// The benchmark's copy of the simulator's rows, kept by applying each
/// change it makes, and what the exporter should show after each change.
struct Truth {
    keys: Vec<Key>,
    index: HashMap<Key, usize>,
    rows: HashMap<u64, Img>,
    /// Ids, for a uniform pick, and where each id is in it.
    ids: Vec<u64>,
    pos: HashMap<u64, usize>,
    by_key: Vec<Vec<u64>>,
    figs: Vec<Fig>,
    /// Per key: (change number, figures after it).
    history: Vec<Vec<(u64, Fig)>>,
    seq: u64,
    changes: Vec<Change>,
    detections: Vec<Detection>,
    new_malicious: Vec<u64>,
    deletes: u64,
}

impl Truth {
    fn new(rows: &[SimImage]) -> Self {
        let mut truth = Truth {
            keys: Vec::new(),
            index: HashMap::new(),
            rows: HashMap::new(),
            ids: Vec::new(),
            pos: HashMap::new(),
            by_key: Vec::new(),
            figs: Vec::new(),
            history: Vec::new(),
            seq: 0,
            changes: Vec::new(),
            detections: Vec::new(),
            new_malicious: Vec::new(),
            deletes: 0,
        };
        for row in rows {
            truth.insert(row);
        }
        truth
    }

    fn key(&mut self, key: Key) -> usize {
        if let Some(&k) = self.index.get(&key) {
            return k;
        }
        self.keys.push(key.clone());
        self.index.insert(key, self.keys.len() - 1);
        self.by_key.push(Vec::new());
        self.figs.push(Fig::default());
        self.history.push(Vec::new());
        self.new_malicious.push(0);
        self.keys.len() - 1
    }

    fn insert(&mut self, row: &SimImage) -> usize {
        let key = self.key(key_of(row));
        self.rows.insert(
            row.id,
            Img {
                key,
                vul: row.vul_num,
                mal: row.malicious_file_num,
            },
        );
        self.pos.insert(row.id, self.ids.len());
        self.ids.push(row.id);
        self.by_key[key].push(row.id);
        let fig = &mut self.figs[key];
        fig.images += 1;
        fig.vul += row.vul_num;
        fig.mal += row.malicious_file_num;
        key
    }

    fn remove(&mut self, id: u64) -> Option<usize> {
        let img = self.rows.remove(&id)?;
        let at = self.pos.remove(&id).expect("position");
        self.ids.swap_remove(at);
        if let Some(&moved) = self.ids.get(at) {
            self.pos.insert(moved, at);
        }
        self.by_key[img.key].retain(|&i| i != id);
        let fig = &mut self.figs[img.key];
        fig.images -= 1;
        fig.vul -= img.vul;
        fig.mal -= img.mal;
        Some(img.key)
    }

    fn record(&mut self, kind: Option<Kind>, key: usize) {
        self.seq += 1;
        let seq = self.seq;
        self.history[key].push((seq, self.figs[key]));
        if let Some(kind) = kind {
            self.changes.push(Change {
                kind,
                key,
                seq,
                at: Instant::now(),
                lag: None,
            });
        }
    }
}

struct Driver {
    sim: Simulator,
    truth: Arc<Mutex<Truth>>,
    rng: StdRng,
    tick: u64,
    /// (due tick, id) of pushed images waiting for their first scan.
    pending: Vec<(u64, u64)>,
}

impl Driver {
    fn lock(&self) -> std::sync::MutexGuard<'_, Truth> {
        self.truth.lock().expect("truth")
    }

    fn rescan(&mut self, id: u64, kind: Kind) {
        let (old_vul, old_mal) = match self.lock().rows.get(&id) {
            Some(img) => (img.vul, img.mal),
            None => return,
        };
        // Always a new vulnerability count, so every rescan changes a figure.
        let mut vul = self.rng.random_range(0..=300i64);
        if vul == old_vul {
            vul = (vul + 1) % 301;
        }
        let unsafe_settings = self.rng.random_range(0..=10i64);
        let turns_malicious = old_mal == 0 && self.rng.random_bool(MALICIOUS_RATE);
        let mal = if turns_malicious {
            self.rng.random_range(1..=5i64)
        } else {
            old_mal
        };
        let row = self
            .sim
            .rescan(id, vul, unsafe_settings, mal)
            .expect("the rescanned row exists");
        let at = Instant::now();
        let mut truth = self.lock();
        truth.remove(id);
        let key = truth.insert(&row);
        truth.record(Some(kind), key);
        if turns_malicious {
            truth.new_malicious[key] += 1;
            let nth = truth.new_malicious[key];
            truth.detections.push(Detection {
                key,
                nth,
                kind,
                id,
                at,
                wall: std::time::SystemTime::now(),
                lag: None,
            });
        }
    }

    fn push(&mut self, key: &Key) {
        let row = self.sim.push(&key.2, &key.0);
        let mut truth = self.lock();
        let key = truth.insert(&row);
        truth.record(Some(Kind::Push), key);
        drop(truth);
        let due = self.tick + self.rng.random_range(1..=3u64);
        self.pending.push((due, row.id));
    }

    fn delete(&mut self, id: u64) {
        assert!(self.sim.delete(id), "the deleted row exists");
        self.pending.retain(|&(_, p)| p != id);
        let mut truth = self.lock();
        if let Some(key) = truth.remove(id) {
            truth.deletes += 1;
            truth.record(None, key);
        }
    }

    /// One tick: the first scans that are due, then changes in one
    /// namespace (with `deletes` deletes among them).
    fn tick(&mut self, deletes: usize) {
        self.tick += 1;
        let tick = self.tick;
        let due: Vec<u64> = self
            .pending
            .iter()
            .filter(|&&(d, _)| d <= tick)
            .map(|&(_, id)| id)
            .collect();
        self.pending.retain(|&(d, _)| d > tick);
        for id in due {
            self.rescan(id, Kind::Scanned);
        }
        let (key, key_name) = {
            let truth = self.truth.lock().expect("truth");
            let id = truth.ids[self.rng.random_range(0..truth.ids.len())];
            let key = truth.rows[&id].key;
            (key, truth.keys[key].clone())
        };
        for i in 0..CHANGES_PER_TICK {
            let ids = self.lock().by_key[key].clone();
            if ids.is_empty() {
                break;
            }
            let id = ids[self.rng.random_range(0..ids.len())];
            if i < deletes && ids.len() > 1 {
                self.delete(id);
            } else if self.rng.random_range(0..10) < RESCANS_OF_TEN {
                self.rescan(id, Kind::Rescan);
            } else {
                self.push(&key_name);
            }
        }
    }
}

/// Runs `ticks` ticks, `TICKS_PER_ROUND` a round, on a thread of its own
/// (a change to 100,000 rows takes a few milliseconds of the simulator's
/// locks, which should not hold up the runtime).
fn churn(mut driver: Driver, ticks: u32, deletes: usize, round: Duration) -> Driver {
    let every = round / TICKS_PER_ROUND;
    let started = Instant::now();
    for k in 0..ticks {
        let at = started + every * k;
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        driver.tick(deletes);
    }
    driver
}

// ---------------------------------------------------------------- exporter

fn exporter(endpoint: &str) -> Exporter {
    let yaml = format!(
        "api_rate_limit: {CALLS}/{}ms
malicious_interval: 1s
poll_interval: 5s
changes_interval: {}ms
changes_overlap: 5s
request_timeout: 10s
stale_after: 1h
credentials: {{access_key: {AK}, secret_key: {SK}}}
targets:
  - name: {TARGET}
    region: cn-north-4
    project_id: 0123456789abcdef0123456789abcdef
    endpoint: {endpoint}
    enterprise_project_ids: ['{ENTERPRISE_PROJECT}']
    image_types: [{}]
",
        WINDOW.as_millis(),
        CHANGES_INTERVAL.as_millis(),
        TYPES.join(", ")
    );
    let config = Config::parse(&yaml, Path::new("bench.yml"), &|_| None).expect("config");
    Exporter::new(config).expect("exporter")
}

fn sweeps(scopes: &ScopeSet) -> Vec<u64> {
    scopes
        .list()
        .iter()
        .map(|s| s.lane_status(Lane::Sweep).runs)
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(values: &[f64]) -> (f64, f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    (
        percentile(&sorted, 50.0),
        percentile(&sorted, 95.0),
        sorted.last().copied().unwrap_or(f64::NAN),
        sorted.iter().sum::<f64>() / sorted.len().max(1) as f64,
    )
}

/// Resolves the changes and detections the scrape shows; returns how many
/// are still waiting.
fn evaluate(truth: &mut Truth, exported: &Exported, seen: Instant, round: Duration) -> usize {
    let mut waiting = 0;
    let Truth {
        keys,
        history,
        changes,
        detections,
        ..
    } = truth;
    for change in changes.iter_mut().filter(|c| c.lag.is_none()) {
        if change.at > seen {
            waiting += 1;
            continue;
        }
        let shown = exported
            .figures
            .get(&keys[change.key])
            .map(Full::fig)
            .unwrap_or_default();
        let visible = history[change.key]
            .iter()
            .filter(|(seq, _)| *seq >= change.seq)
            .any(|(_, fig)| match change.kind {
                Kind::Push => fig.images == shown.images,
                Kind::Rescan | Kind::Scanned => fig.vul == shown.vul && fig.mal == shown.mal,
            });
        if visible {
            change.lag = Some((seen - change.at).as_secs_f64() / round.as_secs_f64());
        } else {
            waiting += 1;
        }
    }
    for detection in detections.iter_mut().filter(|d| d.lag.is_none()) {
        let count = exported
            .detected
            .get(&keys[detection.key])
            .copied()
            .unwrap_or(0);
        if detection.at <= seen && count >= detection.nth {
            detection.lag = Some((seen - detection.at).as_secs_f64() / round.as_secs_f64());
        } else {
            waiting += 1;
        }
    }
    waiting
}

struct Run {
    images: usize,
    keys: usize,
    bootstrap: Duration,
    bootstrap_mismatches: usize,
    rounds: u32,
    changes: usize,
    lag_all: (f64, f64, f64, f64),
    lag_rescan: (f64, f64, f64, f64),
    lag_push: (f64, f64, f64, f64),
    not_visible: usize,
    detections: usize,
    detect: (f64, f64, f64, f64),
    not_detected: usize,
    unexpected_detections: i64,
    calls_per_round: f64,
    calls_split: String,
    scan_gaps: (f64, f64, f64, f64),
    throttled: usize,
    max_in_window: usize,
    scrape_ms: f64,
    convergence: Option<String>,
}

#[allow(clippy::too_many_lines)]
async fn freshness(images: usize, namespaces: usize, rounds: u32, converge: bool) -> Run {
    let round = changes_round(CHANGES_INTERVAL, TYPES.len(), f64::from(CALLS));
    let rows = dataset(images, namespaces, 11);
    let sim = Simulator::new(SimConfig {
        images: 0,
        quota: Some(Quota {
            calls: CALLS,
            window: WINDOW,
        }),
        latency: Duration::from_millis(5),
        credentials: vec![(AK.into(), SK.into())],
        ..SimConfig::default()
    });
    sim.set_images(rows.clone());
    let truth = Arc::new(Mutex::new(Truth::new(&rows)));
    let keys = truth.lock().expect("truth").keys.len();
    drop(rows);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    let sim_stop = CancellationToken::new();
    tokio::spawn(
        sim.clone()
            .serve(listener, sim_stop.clone().cancelled_owned()),
    );

    let exporter = exporter(&endpoint);
    let scopes = exporter.scopes();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/metrics", listener.local_addr().expect("address"));
    let stop = CancellationToken::new();
    let started = Instant::now();
    let daemon = tokio::spawn(run_daemon(
        exporter,
        listener,
        "/metrics",
        None,
        None,
        stop.clone().cancelled_owned(),
    ));
    let mut done_at: Vec<Option<Duration>> = vec![None; scopes.list().len()];
    let mut progress = Instant::now();
    while done_at.iter().any(Option::is_none) {
        if progress.elapsed() >= Duration::from_secs(60) {
            let since = progress;
            progress = Instant::now();
            let calls = sim.stats().calls;
            let recent: Vec<_> = calls.iter().filter(|c| c.at.into_std() >= since).collect();
            let count = |f: &dyn Fn(&str) -> bool| recent.iter().filter(|c| f(&c.query)).count();
            let changes = count(&|q| {
                q.contains("start_latest_scan_time") || q.contains("start_latest_update_time")
            });
            let malicious = count(&|q| q.contains("has_malicious_file=true"));
            let sweep: Vec<String> = TYPES
                .iter()
                .map(|t| {
                    let n = count(&|q| {
                        q.contains(&format!("image_type={t}&"))
                            && !q.contains("start_latest_")
                            && !q.contains("has_malicious_file")
                    });
                    format!("{t} {n}")
                })
                .collect();
            println!(
                "    bootstrap {:.0} s: last 60 s {} calls: changes lane {changes}, malicious {malicious}, sweep pages {}; 429s so far {}; sweeps done {:?}",
                started.elapsed().as_secs_f64(),
                recent.len(),
                sweep.join(", "),
                calls.iter().filter(|c| c.status == 429).count(),
                sweeps(&scopes)
            );
        }
        for (i, runs) in sweeps(&scopes).into_iter().enumerate() {
            if runs > 0 && done_at[i].is_none() {
                done_at[i] = Some(started.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bootstrap = started.elapsed();
    let per_scope: Vec<String> = scopes
        .list()
        .iter()
        .zip(&done_at)
        .map(|(s, d)| {
            format!(
                "{} {} images {:.1} s",
                s.scope.image_type,
                s.lane_status(Lane::Sweep).last_images,
                d.unwrap_or_default().as_secs_f64()
            )
        })
        .collect();
    println!(
        "  {images} images, {keys} namespace keys: bootstrap (every scope's first sweep) {:.1} s  [{}]",
        bootstrap.as_secs_f64(),
        per_scope.join("; ")
    );
    // Two rounds for the changes lanes to start.
    tokio::time::sleep(round * 2).await;
    let client = reqwest::Client::new();
    let first = scrape(&client, &url).await;
    let bootstrap_mismatches = {
        let truth = truth.lock().expect("truth");
        (0..truth.keys.len())
            .filter(|&k| {
                first
                    .figures
                    .get(&truth.keys[k])
                    .map(Full::fig)
                    .unwrap_or_default()
                    != truth.figs[k]
            })
            .count()
    };
    let base_detected: HashMap<Key, u64> = first.detected.clone();

    // The churn, on a thread of its own; scrapes here.
    let driver = Driver {
        sim: sim.clone(),
        truth: Arc::clone(&truth),
        rng: StdRng::seed_from_u64(images as u64),
        tick: 0,
        pending: Vec::new(),
    };
    let churn_start = Instant::now();
    let finished = Arc::new(AtomicBool::new(false));
    let churning = {
        let finished = Arc::clone(&finished);
        std::thread::spawn(move || {
            let driver = churn(driver, rounds * TICKS_PER_ROUND, 0, round);
            finished.store(true, Ordering::Release);
            driver
        })
    };
    let scrape_every = round / 10;
    let mut churn_end: Option<Instant> = None;
    let mut scrape_times = Vec::new();
    let mut next = Instant::now();
    loop {
        next += scrape_every;
        let asked = Instant::now();
        let mut exported = scrape(&client, &url).await;
        let seen = Instant::now();
        scrape_times.push((seen - asked).as_secs_f64() * 1000.0);
        for (key, count) in exported.detected.iter_mut() {
            *count = count.saturating_sub(base_detected.get(key).copied().unwrap_or(0));
        }
        let waiting = evaluate(&mut truth.lock().expect("truth"), &exported, seen, round);
        if churn_end.is_none() && finished.load(Ordering::Acquire) {
            churn_end = Some(Instant::now());
        }
        if let Some(end) = churn_end
            && (waiting == 0 || end.elapsed() > round * DRAIN_ROUNDS)
        {
            break;
        }
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }
    let mut driver = churning.join().expect("churn thread");
    let churn_end = churn_end.expect("churn ended");
    let elapsed_rounds = (churn_end - churn_start).as_secs_f64() / round.as_secs_f64();
    let last = scrape(&client, &url).await;
    let stats = sim.stats();
    let in_phase: Vec<_> = stats
        .calls
        .iter()
        .filter(|c| {
            let at = c.at.into_std();
            at >= churn_start && at <= churn_end
        })
        .collect();
    let count = |f: &dyn Fn(&str) -> bool| in_phase.iter().filter(|c| f(&c.query)).count() as f64;
    let scan = count(&|q| q.contains("start_latest_scan_time"));
    let update = count(&|q| q.contains("start_latest_update_time"));
    let malicious = count(&|q| q.contains("has_malicious_file=true"));
    let all = in_phase.len() as f64;
    let sweep = all - scan - update - malicious;
    // How regularly each scope's scan-time query came: the gap between two
    // of them bounds how long a rescan waits to be asked for.
    let mut gaps = Vec::new();
    for image_type in TYPES {
        let times: Vec<Instant> = in_phase
            .iter()
            .filter(|c| {
                c.query.contains("start_latest_scan_time")
                    && c.query.contains(&format!("image_type={image_type}&"))
            })
            .map(|c| c.at.into_std())
            .collect();
        gaps.extend(
            times
                .windows(2)
                .map(|w| (w[1] - w[0]).as_secs_f64() / round.as_secs_f64()),
        );
    }
    let calls_split = format!(
        "scan {:.2} + update {:.2} + malicious {:.2} + sweep {:.2}",
        scan / elapsed_rounds,
        update / elapsed_rounds,
        malicious / elapsed_rounds,
        sweep / elapsed_rounds
    );
    let scan_gaps = summary(&gaps);

    let (lags, rescans, pushes, not_visible, detect_lags, not_detected, expected_detected) = {
        let truth = truth.lock().expect("truth");
        let lag_of = |f: &dyn Fn(&Change) -> bool| -> Vec<f64> {
            truth
                .changes
                .iter()
                .filter(|c| f(c))
                .filter_map(|c| c.lag)
                .collect()
        };
        (
            lag_of(&|_| true),
            lag_of(&|c| c.kind != Kind::Push),
            lag_of(&|c| c.kind == Kind::Push),
            truth.changes.iter().filter(|c| c.lag.is_none()).count(),
            truth
                .detections
                .iter()
                .filter_map(|d| d.lag)
                .collect::<Vec<f64>>(),
            truth.detections.iter().filter(|d| d.lag.is_none()).count(),
            truth.detections.len() as i64,
        )
    };
    let changes = lags.len() + not_visible;
    let detected_total: i64 = last
        .detected
        .iter()
        .map(|(k, v)| *v as i64 - base_detected.get(k).copied().unwrap_or(0) as i64)
        .sum();
    let unexpected_detections = detected_total - expected_detected;
    println!(
        "  {rounds} rounds of churn, {changes} changes: {}; {not_visible} not visible; {} new malicious images, {}",
        fmt_lags("visible on /metrics", summary(&lags)),
        detect_lags.len() + not_detected,
        fmt_lags("detection", summary(&detect_lags))
    );
    // Per detection: when the change was made, when the scope's next
    // scan-time query (first page) and update-time query arrived at the
    // simulator, and when /metrics counted it; all in rounds after the change.
    {
        let truth = truth.lock().expect("truth");
        let all_calls = &stats.calls;
        let rounds_after = |at: Instant, t: Instant| {
            t.checked_duration_since(at)
                .map_or(f64::NAN, |d| d.as_secs_f64() / round.as_secs_f64())
        };
        for d in &truth.detections {
            let image_type = &truth.keys[d.key].0;
            let of_scope = |filter: &str| -> Option<Instant> {
                all_calls
                    .iter()
                    .filter(|c| {
                        c.offset == 0
                            && c.query.contains(filter)
                            && c.query.contains(&format!("image_type={image_type}&"))
                    })
                    .map(|c| c.at.into_std())
                    .find(|&t| t >= d.at)
            };
            let scan = of_scope("start_latest_scan_time");
            let update = of_scope("start_latest_update_time");
            println!(
                "    detection id {} ({:?}, {image_type}, #{} of its namespace) at {:.2} rounds into the churn ({}): next scan query +{:.2}, next update query +{:.2}, counted +{}",
                d.id,
                d.kind,
                d.nth,
                (d.at - churn_start).as_secs_f64() / round.as_secs_f64(),
                humantime::format_rfc3339_millis(d.wall),
                scan.map_or(f64::NAN, |t| rounds_after(d.at, t)),
                update.map_or(f64::NAN, |t| rounds_after(d.at, t)),
                d.lag.map_or("never".to_string(), |l| format!("{l:.2}")),
            );
        }
    }

    let convergence = if converge {
        // Deletes (one a tick, with rescans and pushes), then stop.
        driver = tokio::task::spawn_blocking(move || {
            churn(driver, DELETE_ROUNDS * TICKS_PER_ROUND, 1, round)
        })
        .await
        .expect("delete phase");
        let stopped = Instant::now();
        let sweeps_at_stop = sweeps(&scopes);
        let want = truth_of(&sim.images());
        let mirrored = {
            let truth = truth.lock().expect("truth");
            (0..truth.keys.len())
                .filter(|&k| {
                    want.get(&truth.keys[k]).map(Full::fig).unwrap_or_default() != truth.figs[k]
                })
                .count()
        };
        assert_eq!(mirrored, 0, "the benchmark's mirror equals the simulator");
        let deletes = truth.lock().expect("truth").deletes;
        // A sweep that started after the stop: the one running at the stop
        // (if any) must end first, then a whole one must run.
        let need: Vec<u64> = scopes
            .list()
            .iter()
            .map(|s| {
                let status = s.lane_status(Lane::Sweep);
                status.runs + if status.running_since.is_some() { 2 } else { 1 }
            })
            .collect();
        let mut swept_at: Vec<Option<Duration>> = vec![None; need.len()];
        let mut mismatched = usize::MAX;
        let mut first_exact = None;
        let mut after_sweeps: Option<(Duration, Vec<String>)> = None;
        let mut last_report = Instant::now();
        let cap = std::env::var("HSS_BENCH_CONVERGENCE_CAP")
            .ok()
            .and_then(|v| humantime::parse_duration(&v).ok())
            .unwrap_or(CONVERGENCE_CAP);
        let differing_keys = |exported: &Exported| -> Vec<String> {
            let keys: std::collections::BTreeSet<&Key> =
                want.keys().chain(exported.figures.keys()).collect();
            keys.into_iter()
                .filter(|k| want.get(*k) != exported.figures.get(*k))
                .map(|k| {
                    format!(
                        "{k:?}: simulator {:?}, exported {:?}",
                        want.get(k),
                        exported.figures.get(k)
                    )
                })
                .collect()
        };
        while stopped.elapsed() < cap {
            for (i, scope) in scopes.list().iter().enumerate() {
                let status = scope.lane_status(Lane::Sweep);
                if swept_at[i].is_none() && status.runs >= need[i] {
                    swept_at[i] = Some(stopped.elapsed());
                }
            }
            if swept_at.iter().all(Option::is_some) {
                // The sweep's status is set just before its table is
                // published: give it a moment.
                tokio::time::sleep(round / 5).await;
                let exported = scrape(&client, &url).await;
                let at = stopped.elapsed();
                let differing = differing_keys(&exported);
                if differing.is_empty() && first_exact.is_none() {
                    first_exact = Some(at);
                }
                after_sweeps = Some((at, differing));
                break;
            }
            let exported = scrape(&client, &url).await;
            let differing = differing_keys(&exported);
            mismatched = differing.len();
            if mismatched == 0 && first_exact.is_none() {
                first_exact = Some(stopped.elapsed());
            }
            if last_report.elapsed() > Duration::from_secs(60) {
                last_report = Instant::now();
                println!(
                    "    {:.0} s after the stop: {mismatched} namespace keys differ; sweeps completed per scope since the stop {:?}; a sweep started after the stop done: {:?}",
                    stopped.elapsed().as_secs_f64(),
                    sweeps(&scopes)
                        .iter()
                        .zip(&sweeps_at_stop)
                        .map(|(a, b)| a - b)
                        .collect::<Vec<_>>(),
                    swept_at
                        .iter()
                        .map(|d| d.map(|d| format!("{:.0} s", d.as_secs_f64())))
                        .collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if let Some((_, differing)) = &after_sweeps {
            for line in differing.iter().take(10) {
                println!("    differs after the sweeps: {line}");
            }
        }
        let waited = stopped.elapsed().as_secs_f64() / round.as_secs_f64();
        let calls = sim.stats().calls;
        let since_stop = |f: &dyn Fn(&str) -> bool| {
            calls
                .iter()
                .filter(|c| c.at.into_std() >= stopped && f(&c.query))
                .count() as f64
                / waited
        };
        let sweep_rate = since_stop(&|q| {
            !q.contains("start_latest_scan_time")
                && !q.contains("start_latest_update_time")
                && !q.contains("has_malicious_file=true")
        });
        let other_rate = since_stop(&|_| true) - sweep_rate;
        let rates = format!(
            "listing calls per round while waiting: {other_rate:.2} changes lane and malicious check, {sweep_rate:.3} sweep pages"
        );
        let completed: Vec<u64> = sweeps(&scopes)
            .iter()
            .zip(&sweeps_at_stop)
            .map(|(a, b)| a - b)
            .collect();
        let exact = match first_exact {
            Some(at) => format!(
                "figures first equal to a full listing {:.1} s ({:.0} rounds) after the stop",
                at.as_secs_f64(),
                at.as_secs_f64() / round.as_secs_f64()
            ),
            None => "figures never equal to a full listing".to_string(),
        };
        let per_scope: Vec<String> = scopes
            .list()
            .iter()
            .zip(&swept_at)
            .map(|(s, d)| {
                format!(
                    "{} {}",
                    s.scope.image_type,
                    d.map_or("not within the cap".to_string(), |d| format!(
                        "{:.0} s",
                        d.as_secs_f64()
                    ))
                )
            })
            .collect();
        Some(match after_sweeps {
            Some((at, differing)) => format!(
                "{deletes} deletes in {DELETE_ROUNDS} rounds, then stop: a sweep that started after the stop completed for every scope {:.1} s ({:.0} rounds) after the stop [{}]; then {} ({} namespace keys differ); {exact}; sweeps completed per scope {completed:?} (last sweep durations: {}); {rates}",
                at.as_secs_f64(),
                at.as_secs_f64() / round.as_secs_f64(),
                per_scope.join(", "),
                if differing.is_empty() {
                    "EXACT: equal to a full listing"
                } else {
                    "NOT exact"
                },
                differing.len(),
                last_sweep_durations(&scopes)
            ),
            None => format!(
                "{deletes} deletes in {DELETE_ROUNDS} rounds, then stop: no sweep that started after the stop completed for every scope within {:.0} s [{}] ({mismatched} namespace keys differ at the cap); {exact}; sweeps completed per scope {completed:?} (last sweep durations: {}); {rates}",
                cap.as_secs_f64(),
                per_scope.join(", "),
                last_sweep_durations(&scopes)
            ),
        })
    } else {
        None
    };
    drop(driver);

    let stats = sim.stats();
    let throttled = stats.count_status(429);
    let max_in_window = max_calls_in_window(&stats.calls, WINDOW);
    for scope in scopes.list() {
        for lane in scope.lanes() {
            let status = scope.lane_status(*lane);
            if status.failures > 0 {
                println!(
                    "  note: {} lane {} failed {} times; last error {:?}",
                    scope.scope.image_type,
                    lane.as_str(),
                    status.failures,
                    status.last_error
                );
            }
        }
    }
    stop.cancel();
    let stopping = Instant::now();
    if tokio::time::timeout(Duration::from_secs(30), daemon)
        .await
        .is_err()
    {
        println!("  note: the daemon did not return within 30 s of its shutdown signal");
    } else {
        println!(
            "  daemon stopped {:.2} s after its shutdown signal",
            stopping.elapsed().as_secs_f64()
        );
    }
    sim_stop.cancel();
    let scrape_ms = summary(&scrape_times).0;
    Run {
        images,
        keys,
        bootstrap,
        bootstrap_mismatches,
        rounds,
        changes,
        lag_all: summary(&lags),
        lag_rescan: summary(&rescans),
        lag_push: summary(&pushes),
        not_visible,
        detections: detect_lags.len() + not_detected,
        detect: summary(&detect_lags),
        not_detected,
        unexpected_detections,
        calls_per_round: all / elapsed_rounds,
        calls_split,
        scan_gaps,
        throttled,
        max_in_window,
        scrape_ms,
        convergence,
    }
}

fn last_sweep_durations(scopes: &ScopeSet) -> String {
    scopes
        .list()
        .iter()
        .map(|s| {
            format!(
                "{} {:.0} s",
                s.scope.image_type,
                s.lane_status(Lane::Sweep)
                    .last_duration
                    .unwrap_or_default()
                    .as_secs_f64()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------- 1,000,000

const BIG_NAMESPACES: usize = 2_000;

/// Row `i` of a synthetic listing of `n` private images, fields as long as
/// real ones (realistic statuses, 1 % malicious).
fn synthetic_row(i: u64, rng: &mut StdRng, names: &[String]) -> Row {
    let roll = rng.random_range(0..100);
    let status = match roll {
        0..80 => "success",
        80..84 => "unscan",
        84..87 => "scanning",
        87..91 => "failed",
        91..93 => "download_failed",
        93..95 => "image_oversized",
        _ => "waiting_for_scan",
    };
    let scanned = status == "success";
    let digest: String = (0..4)
        .map(|_| format!("{:016x}", rng.random::<u64>()))
        .collect();
    Row {
        id: Some(1_000_000_000 + i),
        namespace: names[rng.random_range(0..names.len())].clone(),
        image_name: format!("{}-service-{}", WORDS[(i % 12) as usize], i % 97),
        image_version: format!("{}.{}.{}", i % 4, i % 20, i % 31),
        image_digest: format!("sha256:{digest}"),
        scan_status: Some(status.to_string()),
        scan_failed_desc: if status == "failed" {
            "layer_decompression_failed".to_string()
        } else {
            String::new()
        },
        latest_scan_time: scanned.then(|| 1_760_000_000_000 + rng.random_range(0..2_592_000_000)),
        latest_update_time: Some(1_740_000_000_000 + rng.random_range(0..31_536_000_000)),
        vul_num: if scanned {
            rng.random_range(0..=300)
        } else {
            0
        },
        unsafe_setting_num: if scanned { rng.random_range(0..=10) } else { 0 },
        malicious_file_num: if scanned && rng.random_bool(0.01) {
            rng.random_range(1..=5)
        } else {
            0
        },
        latest_version: Some(i.is_multiple_of(3)),
        ..Row::default()
    }
}

/// In a fresh process: builds a table of `n` rows, prints `RESULT`.
fn table_child(n: u64) {
    let names: Vec<String> = (0..BIG_NAMESPACES).map(long_name).collect();
    let mut rng = StdRng::seed_from_u64(7);
    let cpu = cpu_seconds();
    let mut builder = TableBuilder::new(false);
    builder.reserve(n);
    for i in 0..n {
        builder.add(&synthetic_row(i, &mut rng, &names));
    }
    let (table, _) = builder.finish();
    let build_cpu = cpu_seconds() - cpu;
    let cpu = cpu_seconds();
    let snapshot = table.snapshot(std::time::SystemTime::now(), 0);
    let snapshot_cpu = cpu_seconds() - cpu;
    println!(
        "RESULT rows={} footprint={} hwm_kib={} rss_kib={} build_cpu={build_cpu:.3} snapshot_cpu={snapshot_cpu:.3} namespaces={}",
        table.len(),
        table.footprint_bytes(),
        status_kib("VmHWM:"),
        status_kib("VmRSS:"),
        snapshot.namespaces.len()
    );
}

fn big_rows(n: usize) -> Vec<SimImage> {
    let mut rows = generate(&SimConfig {
        seed: 13,
        images: n,
        namespaces: BIG_NAMESPACES,
        ..SimConfig::default()
    });
    for row in &mut rows {
        row.image_type = "private_image".into();
        row.enterprise_project_id = ENTERPRISE_PROJECT.into();
        row.instance_name.clear();
        row.instance_id.clear();
        row.instance_url.clear();
        row.registry_name = "SWR".into();
    }
    rows
}

/// In a fresh process: sweeps of `n` images with the changes lane on, as
/// the daemon does them; prints `RESULT`.
fn sweep_child(n: usize) {
    let (_sim, endpoint) = start_simulator(n);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let yaml = format!(
        "api_rate_limit: 100000/1s
malicious_interval: 0
changes_interval: 1m
poll_interval: 1h
request_timeout: 60s
credentials: {{access_key: {AK}, secret_key: {SK}}}
targets:
  - name: {TARGET}
    region: cn-north-4
    project_id: 0123456789abcdef0123456789abcdef
    endpoint: {endpoint}
    enterprise_project_ids: ['{ENTERPRISE_PROJECT}']
    image_types: [private_image]
"
    );
    let config = Config::parse(&yaml, Path::new("bench.yml"), &|_| None).expect("config");
    let exporter = Exporter::new(config).expect("exporter");
    let scope = Arc::clone(&exporter.scopes().list()[0]);
    let mut line = String::from("RESULT");
    for (i, name) in ["first", "reconcile", "reconcile2"].iter().enumerate() {
        let cpu = cpu_seconds();
        let started = Instant::now();
        assert!(
            runtime.block_on(exporter.run_lane_once(Lane::Sweep)),
            "the sweep succeeds"
        );
        let status = scope.lane_status(Lane::Sweep);
        line.push_str(&format!(
            " {name}_cpu={:.3} {name}_wall={:.3} {name}_pages={} {name}_images={} {name}_hwm_kib={}",
            cpu_seconds() - cpu,
            started.elapsed().as_secs_f64(),
            status.last_pages,
            status.last_images,
            status_kib("VmHWM:")
        ));
        if i == 0 {
            line.push_str(&format!(" footprint={}", scope.table().footprint_bytes()));
        }
    }
    println!("{line}");
}

fn field(line: &str, key: &str) -> f64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{key} in {line}"))
}

fn child_result(args: &[&str]) -> String {
    let out = Command::new(std::env::current_exe().expect("this benchmark"))
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("run a measurement");
    assert!(out.status.success(), "measurement {args:?} failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("RESULT"))
        .expect("a RESULT line")
        .to_string()
}

fn fmt_lags(label: &str, (p50, p95, max, mean): (f64, f64, f64, f64)) -> String {
    format!("{label} p50 {p50:.2} / p95 {p95:.2} / max {max:.2} (mean {mean:.2})")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--sim") {
        support::serve_simulator(big_rows(args[i + 1].parse().expect("--sim IMAGES")));
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--table") {
        table_child(args[i + 1].parse().expect("--table ROWS"));
        return;
    }
    if args.iter().any(|a| a == "--only-1m") {
        let n = 1_000_000usize;
        println!("{}", child_result(&["--table", &n.to_string()]));
        println!("{}", child_result(&["--sweep", &n.to_string()]));
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--sweep") {
        sweep_child(args[i + 1].parse().expect("--sweep IMAGES"));
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            std::env::var("HSS_BENCH_LOG").unwrap_or_else(|_| "error".into()),
        ))
        .with_writer(std::io::stderr)
        .try_init();
    let began = Instant::now();
    let round = changes_round(CHANGES_INTERVAL, TYPES.len(), f64::from(CALLS));
    println!(
        "freshness: quota {CALLS} calls per {} ms (5 a minute scaled by 1/60), api_rate_limit {CALLS}/1s; \
         changes_interval 1s, malicious_interval 1s, poll_interval 5s, changes_overlap 5s; \
         3 scopes ({}); simulator latency 5 ms; loopback HTTP",
        WINDOW.as_millis(),
        TYPES.join(", ")
    );
    println!(
        "changes round = scheduler::changes_round(1s, 3, 5.0) = {} ms; churn: {TICKS_PER_ROUND} ticks a round, \
         each {CHANGES_PER_TICK} changes in one namespace ({RESCANS_OF_TEN} rescans : {} pushes), plus the first scans \
         of pushed images 1-3 ticks later; {:.0} % of (re)scans of clean images turn them malicious; \
         /metrics scraped every {} ms",
        round.as_millis(),
        10 - RESCANS_OF_TEN,
        MALICIOUS_RATE * 100.0,
        (round / 10).as_millis()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // `--no-15k`: the 100,000 and 1,000,000 parts only.
    let sizes: &[(usize, usize, u32, bool)] = if quick {
        &[(15_000, 75, 30, true)]
    } else if args.iter().any(|a| a == "--no-15k") {
        &[(100_000, 500, 60, false)]
    } else {
        &[(15_000, 75, 60, true), (100_000, 500, 60, false)]
    };
    let mut runs = Vec::new();
    for &(images, namespaces, rounds, converge) in sizes {
        let run = runtime.block_on(freshness(images, namespaces, rounds, converge));
        runs.push(run);
    }
    drop(runtime);
    let big = (!quick).then(|| {
        let n = 1_000_000usize;
        println!("  1,000,000 images: building the table, then sweeping (simulator in a separate process) ...");
        let table = child_result(&["--table", &n.to_string()]);
        let sweep = child_result(&["--sweep", &n.to_string()]);
        (table, sweep)
    });

    println!();
    println!(
        "results (lags in changes rounds of {} ms)",
        round.as_millis()
    );
    for run in &runs {
        println!(
            "{:>7} images, {:>4} namespace keys | bootstrap {:>6.1} s ({} keys differing after it) | {} rounds of churn, {} changes",
            run.images,
            run.keys,
            run.bootstrap.as_secs_f64(),
            run.bootstrap_mismatches,
            run.rounds,
            run.changes
        );
        println!(
            "        visible on /metrics: {}",
            fmt_lags("all", run.lag_all)
        );
        println!(
            "                             {}",
            fmt_lags("rescans and first scans", run.lag_rescan)
        );
        println!(
            "                             {}",
            fmt_lags("pushes", run.lag_push)
        );
        println!(
            "                             not visible within {DRAIN_ROUNDS} rounds after the churn: {}  (target p95 <= {LAG_P95_TARGET}: {})",
            run.not_visible,
            if run.lag_all.1 <= LAG_P95_TARGET && run.not_visible == 0 {
                "met"
            } else {
                "MISSED"
            }
        );
        println!(
            "        detection: {} new malicious images, {}; not detected {}; detections beyond those {}  (target max <= {DETECT_TARGET}: {})",
            run.detections,
            fmt_lags("lag", run.detect),
            run.not_detected,
            run.unexpected_detections,
            if run.detect.2 <= DETECT_TARGET && run.not_detected == 0 {
                "met"
            } else {
                "MISSED"
            }
        );
        println!(
            "        listing calls per round during the churn {:.2} ({}); 429s {}; max calls in any 1 s window {}; scrape p50 {:.1} ms",
            run.calls_per_round, run.calls_split, run.throttled, run.max_in_window, run.scrape_ms
        );
        println!(
            "        {} (between one scope's scan-time queries)",
            fmt_lags("gap", run.scan_gaps)
        );
        if let Some(convergence) = &run.convergence {
            println!("        convergence: {convergence}");
        }
    }
    if let Some((table, sweep)) = &big {
        let rows = field(table, "rows");
        let per_image = field(table, "footprint") / rows;
        println!(
            "1,000,000 images: ImageTable::footprint_bytes / image {per_image:.1} bytes (target <= {BYTES_TARGET}: {}); \
             peak RSS of that process {:.1} MiB; building it {:.2} s CPU, snapshot {:.3} s CPU, {} namespaces",
            if per_image <= BYTES_TARGET {
                "met"
            } else {
                "MISSED"
            },
            field(table, "hwm_kib") / 1024.0,
            field(table, "build_cpu"),
            field(table, "snapshot_cpu"),
            field(table, "namespaces"),
        );
        let reconcile = field(sweep, "reconcile_cpu");
        println!(
            "1,000,000 images, one scope, sweep through the HTTP client as the daemon does it (changes lane on): \
             first {:.2} s CPU ({:.1} s wall, {} pages), reconcile {reconcile:.2} s CPU ({:.1} s wall), again {:.2} s CPU \
             (target < {SWEEP_CPU_TARGET} s: {}); footprint {:.1} bytes/image; peak RSS {:.1} MiB",
            field(sweep, "first_cpu"),
            field(sweep, "first_wall"),
            field(sweep, "first_pages"),
            field(sweep, "reconcile_wall"),
            field(sweep, "reconcile2_cpu"),
            if reconcile < SWEEP_CPU_TARGET {
                "met"
            } else {
                "MISSED"
            },
            field(sweep, "footprint") / field(sweep, "first_images"),
            field(sweep, "reconcile2_hwm_kib") / 1024.0,
        );
    }
    println!(
        "took {:.1} min; reproduce: cargo bench --bench freshness{}",
        began.elapsed().as_secs_f64() / 60.0,
        if quick { " -- --quick" } else { "" }
    );
}
