//! Metrics: published snapshots and the exporter's own numbers as Prometheus
//! text.
//!
//! Place in the data flow: after the scheduler, before the web server. Scrapes
//! never call the API: [`Metrics::render`] reads the latest snapshot of each
//! scope and the self-metrics in memory. Self-metrics live in a `prometheus`
//! crate [`Registry`] (the API counters through [`ApiMetrics`], lane health
//! through a collector over the scope handles, process metrics, build info)
//! and are encoded on every scrape. The namespace families are written here,
//! straight from each snapshot: HELP and TYPE once per family, then
//! `name{labels} value` lines streamed through a small buffer into one gzip
//! member per family and scope, with no object per sample. A scope's members
//! are made once per published result and reused until it publishes again;
//! the exposition keeps that compressed form (what Prometheus asks for), and,
//! only while plain scrapes come, a front-coded copy of the plain text (made
//! by the first one after a publication, a tenth of the text's size, dropped
//! a minute after the last) that plain scrapes write out piece by piece. A
//! namespace that vanished from the last sweep, or a scope
//! whose data went stale, simply has no series.
//!
//! Bounds: a scope publishes at most `max_namespaces` namespaces, the first
//! ones in key order of everything it knows (last sweep, last malicious-lane
//! run, detection state), in every family alike;
//! `hss_swr_namespace_series_dropped` says how many were left out. Label
//! values from the API are already cut to 1 KiB by the page parser.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{
    CounterVec, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

use crate::collect::aggregate::{
    KNOWN_SCAN_STATUSES, KNOWN_SEVERITIES, MaliciousStats, NamespaceCap, cap_namespaces,
};
use crate::collect::{
    DetectorState, MaliciousSnapshot, NamespaceKey, Scope, ScopeHandle, ScopeSet, Snapshot,
};
use crate::config::ListingApi;
use crate::hss::ApiObserver;

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The scope labels.
const SCOPE_LABELS: [&str; 3] = ["target", "enterprise_project_id", "image_type"];

/// Could not set the metrics up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A metric was refused by the registry.
    #[error("metric registration failed: {0}")]
    Registry(#[from] prometheus::Error),
}

/// Counters and histograms about API calls, fed by the client.
#[derive(Debug, Clone)]
pub struct ApiMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    retries: IntCounterVec,
    throttled: IntCounterVec,
    budget_wait: CounterVec,
    invalid_fields: IntCounterVec,
}

impl ApiMetrics {
    fn new(registry: &Registry) -> Result<Self, Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "hss_swr_api_requests_total",
                "HSS API calls by HTTP status; code=\"error\" when no answer came.",
            ),
            &["target", "code"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "hss_swr_api_request_duration_seconds",
                "Latency of HSS API calls, body included.",
            )
            .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]),
            &["target"],
        )?;
        let retries = IntCounterVec::new(
            Opts::new(
                "hss_swr_api_retries_total",
                "HSS API calls retried, by the reason of the failed attempt.",
            ),
            &["target", "reason"],
        )?;
        let throttled = IntCounterVec::new(
            Opts::new(
                "hss_swr_api_throttled_total",
                "HTTP 429 answers received from the HSS API.",
            ),
            &["target"],
        )?;
        let budget_wait = CounterVec::new(
            Opts::new(
                "hss_swr_api_budget_wait_seconds_total",
                "Time calls waited for a slot of the shared request budget.",
            ),
            &["target"],
        )?;
        let invalid_fields = IntCounterVec::new(
            Opts::new(
                "hss_swr_invalid_fields_total",
                "Row values the HSS API sent that could not be read; they count as absent.",
            ),
            &["target", "field"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        registry.register(Box::new(throttled.clone()))?;
        registry.register(Box::new(budget_wait.clone()))?;
        registry.register(Box::new(invalid_fields.clone()))?;
        Ok(Self {
            requests,
            duration,
            retries,
            throttled,
            budget_wait,
            invalid_fields,
        })
    }

    /// Makes the per-target series exist at 0 before the first call.
    pub fn init_target(&self, target: &str) {
        self.throttled.with_label_values(&[target]);
        self.budget_wait.with_label_values(&[target]);
    }
}

impl ApiObserver for ApiMetrics {
    fn request(&self, target: &str, code: &str, duration: Duration) {
        self.requests.with_label_values(&[target, code]).inc();
        self.duration
            .with_label_values(&[target])
            .observe(duration.as_secs_f64());
    }
    fn retry(&self, target: &str, reason: &'static str) {
        self.retries.with_label_values(&[target, reason]).inc();
    }
    fn throttled(&self, target: &str) {
        self.throttled.with_label_values(&[target]).inc();
    }
    fn budget_wait(&self, target: &str, waited: Duration) {
        self.budget_wait
            .with_label_values(&[target])
            .inc_by(waited.as_secs_f64());
    }
    fn invalid_field(&self, target: &str, field: &'static str, count: u64) {
        self.invalid_fields
            .with_label_values(&[target, field])
            .inc_by(count);
    }
}

/// The metrics of the whole exporter.
pub struct Metrics {
    registry: Registry,
    api: Arc<ApiMetrics>,
    target_info: GaugeVec,
    /// `hss_swr_poll_interval_seconds`, by lane.
    poll_interval: GaugeVec,
    /// Whether the last configuration reload succeeded, and when one last did.
    reload_successful: prometheus::Gauge,
    reload_success_time: prometheus::Gauge,
    scopes: Arc<ScopeSet>,
    image_metrics: std::sync::atomic::AtomicBool,
    /// Cap on the namespaces one scope publishes.
    max_namespaces: std::sync::atomic::AtomicUsize,
    /// Rendered namespace series per scope, reused until the scope publishes
    /// again.
    cache: Mutex<HashMap<Scope, ScopeCache>>,
    /// The assembled namespace text, with the keys it was assembled from.
    assembled: Mutex<Option<(Vec<ChunkKey>, Arc<NamespaceText>)>>,
}

/// Rendered samples of one scope, one part per family of [`FAMILIES`].
type Chunks = Arc<Vec<Part>>;

/// What one scope's chunks were rendered from.
type ChunkKey = (Scope, Option<u64>, (Option<u64>, Option<u64>, u64));

/// The samples of one family from one scope: one gzip member, and the length
/// of the text it holds (0 when the scope has no sample of the family).
#[derive(Debug, Clone, Default)]
struct Part {
    gzip: bytes::Bytes,
    plain_len: usize,
}

/// The namespace part of the exposition, kept compressed: what Prometheus
/// asks for. It is a series of gzip members (a header and the parts of each
/// scope for every family); gzip members may follow one another in one
/// stream, so a gzip scrape sends the compressed self-metrics and then these
/// bytes as they are. For plain scrapes, the first one after a publication
/// makes a front-coded copy ([`FrontCoded`]: a tenth of the text's size,
/// written out again at memory speed), kept for the next ones until no plain
/// scrape has come for [`PLAIN_KEEP`] ([`NamespaceText::forget_idle_plain`])
/// or a publication replaces this text: a deployment scraped by Prometheus
/// alone never holds it.
#[derive(Debug)]
pub struct NamespaceText {
    gzip: bytes::Bytes,
    plain_len: usize,
    /// The front-coded plain text, and when a plain scrape last took it.
    plain: Mutex<Option<(Arc<FrontCoded>, std::time::Instant)>>,
}

/// How long the plain text is kept after the last plain scrape.
pub const PLAIN_KEEP: Duration = Duration::from_secs(60);

/// Size of the pieces a plain scrape is sent in.
const PLAIN_PIECE: usize = 256 * 1024;

impl NamespaceText {
    /// The text as gzip members, compressed once per publication.
    pub fn gzip(&self) -> bytes::Bytes {
        self.gzip.clone()
    }

    /// The plain text, inflated whole, without keeping it (for `once` and
    /// tests).
    pub fn text(&self) -> bytes::Bytes {
        use std::io::Read as _;
        let mut out = Vec::with_capacity(self.plain_len);
        if let Err(error) = flate2::read::MultiGzDecoder::new(&self.gzip[..]).read_to_end(&mut out)
        {
            // Our own members: cannot happen short of a bug.
            tracing::error!(%error, "inflating the cached exposition failed");
        }
        bytes::Bytes::from(out)
    }

    /// The plain text for a plain scrape, in pieces of at most 256 KiB
    /// written out as the body is sent: the first plain scrape after a
    /// publication front-codes the text (inflated piece by piece), the next
    /// ones reuse that (see [`PLAIN_KEEP`]).
    pub fn plain(&self) -> PlainPieces {
        let mut kept = self.plain.lock().unwrap_or_else(PoisonError::into_inner);
        let now = std::time::Instant::now();
        if let Some((coded, used)) = &mut *kept {
            *used = now;
            return PlainPieces::new(Arc::clone(coded));
        }
        let coded = Arc::new(FrontCoded::from_gzip(&self.gzip, self.plain_len));
        *kept = Some((Arc::clone(&coded), now));
        PlainPieces::new(coded)
    }

    /// Drops the kept plain text when no plain scrape has taken it for
    /// `idle`; returns whether a plain text is still kept.
    pub fn forget_idle_plain(&self, idle: Duration) -> bool {
        let mut kept = self.plain.lock().unwrap_or_else(PoisonError::into_inner);
        if kept
            .as_ref()
            .is_some_and(|(_, used)| used.elapsed() >= idle)
        {
            *kept = None;
        }
        kept.is_some()
    }

    /// Length of the plain text in bytes.
    pub fn plain_len(&self) -> usize {
        self.plain_len
    }
}

/// A text front-coded line by line: each line is kept as the length of the
/// prefix it shares with the line before it and the bytes after that. The
/// exposition's lines share their name and labels up to the namespace or
/// status value, so this keeps about a tenth of the bytes, and writing the
/// text out again is copying.
#[derive(Debug, Default)]
pub struct FrontCoded {
    /// Per line: shared prefix length and rest length (LEB128), the rest.
    data: Vec<u8>,
    /// Length of the text.
    len: usize,
}

impl FrontCoded {
    /// The front-coded form of the text in `gzip` (`len` bytes once
    /// inflated), inflated piece by piece: the whole text is never held.
    fn from_gzip(gzip: &[u8], len: usize) -> Self {
        use std::io::Read as _;
        let mut coder = FrontCoder::default();
        let mut decoder = flate2::read::MultiGzDecoder::new(gzip);
        let mut piece = vec![0; PLAIN_PIECE];
        loop {
            match decoder.read(&mut piece) {
                Ok(0) => break,
                Ok(n) => coder.push(&piece[..n]),
                Err(error) => {
                    // Our own members: cannot happen short of a bug.
                    tracing::error!(%error, "inflating the cached exposition failed");
                    break;
                }
            }
        }
        let coded = coder.finish();
        debug_assert_eq!(coded.len, len);
        coded
    }
}

/// Builds a [`FrontCoded`] from the text given in pieces.
#[derive(Debug, Default)]
struct FrontCoder {
    out: FrontCoded,
    previous: Vec<u8>,
    line: Vec<u8>,
}

impl FrontCoder {
    fn push(&mut self, mut bytes: &[u8]) {
        while let Some(end) = bytes.iter().position(|b| *b == b'\n') {
            self.line.extend_from_slice(&bytes[..=end]);
            self.end_line();
            bytes = &bytes[end + 1..];
        }
        self.line.extend_from_slice(bytes);
    }

    fn end_line(&mut self) {
        let shared = self
            .previous
            .iter()
            .zip(&self.line)
            .take_while(|(a, b)| a == b)
            .count();
        let rest = &self.line[shared..];
        write_varint(&mut self.out.data, shared);
        write_varint(&mut self.out.data, rest.len());
        self.out.data.extend_from_slice(rest);
        self.out.len += self.line.len();
        std::mem::swap(&mut self.previous, &mut self.line);
        self.line.clear();
    }

    fn finish(mut self) -> FrontCoded {
        if !self.line.is_empty() {
            self.end_line();
        }
        self.out.data.shrink_to_fit();
        self.out
    }
}

fn write_varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n & 0x7f) as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn read_varint(data: &[u8], at: &mut usize) -> Option<usize> {
    let mut n = 0usize;
    let mut shift = 0;
    loop {
        let byte = *data.get(*at)?;
        *at += 1;
        n |= usize::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            return Some(n);
        }
        shift += 7;
    }
}

/// The pieces of [`NamespaceText::plain`]: the front-coded text written out
/// 256 KiB at a time, as the body is sent.
#[derive(Debug)]
pub struct PlainPieces {
    coded: Arc<FrontCoded>,
    at: usize,
    line: Vec<u8>,
}

impl PlainPieces {
    fn new(coded: Arc<FrontCoded>) -> Self {
        Self {
            coded,
            at: 0,
            line: Vec::new(),
        }
    }
}

impl Iterator for PlainPieces {
    type Item = bytes::Bytes;

    fn next(&mut self) -> Option<bytes::Bytes> {
        let data = &self.coded.data;
        let mut piece = Vec::with_capacity(PLAIN_PIECE + 1024);
        // Where the line before the next one starts in `piece`; the first
        // line of a piece takes its prefix from `self.line`.
        let mut previous: Option<usize> = None;
        while piece.len() < PLAIN_PIECE && self.at < data.len() {
            let (Some(shared), Some(rest)) = (
                read_varint(data, &mut self.at),
                read_varint(data, &mut self.at),
            ) else {
                break;
            };
            let Some(bytes) = data.get(self.at..self.at.saturating_add(rest)) else {
                break;
            };
            self.at += rest;
            let start = piece.len();
            match previous {
                Some(at) => piece.extend_from_within(at..at + shared.min(start - at)),
                None => piece.extend_from_slice(&self.line[..shared.min(self.line.len())]),
            }
            piece.extend_from_slice(bytes);
            previous = Some(start);
        }
        if let Some(at) = previous {
            self.line.clear();
            self.line.extend_from_slice(&piece[at..]);
        }
        (!piece.is_empty()).then(|| bytes::Bytes::from(piece))
    }
}

/// Compresses `data` into one gzip member.
pub fn gzip(data: &[u8]) -> bytes::Bytes {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 8 + 64),
        flate2::Compression::default(),
    );
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(data);
    bytes::Bytes::from(encoder.finish().unwrap_or_default())
}

/// Families that node_exporter (or any Go exporter's default registry)
/// exports itself: never written to a textfile-collector file.
fn is_node_exporter_family(name: &str) -> bool {
    ["process_", "go_", "promhttp_", "node_"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

/// One scope's rendered series: one chunk per family of [`FAMILIES`] (empty
/// for the families of the other source), with what they were made from.
struct ScopeCache {
    sweep_key: Option<u64>,
    /// The namespaces the sweep chunks were rendered for.
    sweep_allowed: Option<Arc<BTreeSet<NamespaceKey>>>,
    sweep_chunks: Chunks,
    /// The scope's namespace cap, decided with the malicious chunks.
    cap: NamespaceCap,
    malicious_key: (Option<u64>, Option<u64>, u64),
    malicious_chunks: Chunks,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Sets up every self-metric; namespace series come from `scopes`.
    pub fn new(scopes: Arc<ScopeSet>, image_metrics: bool) -> Result<Self, Error> {
        let registry = Registry::new();
        let api = Arc::new(ApiMetrics::new(&registry)?);
        let build_info = GaugeVec::new(
            Opts::new(
                "hss_swr_build_info",
                "Version, git revision and branch, rustc version and target of this exporter; always 1.",
            ),
            &["version", "revision", "branch", "rustversion", "target"],
        )?;
        build_info
            .with_label_values(&[
                crate::VERSION,
                crate::REVISION,
                env!("HSS_SWR_BRANCH"),
                env!("HSS_SWR_RUST_VERSION"),
                env!("HSS_SWR_TARGET"),
            ])
            .set(1.0);
        registry.register(Box::new(build_info))?;
        let poll_interval = GaugeVec::new(
            Opts::new(
                "hss_swr_poll_interval_seconds",
                "Configured interval between the starts of a lane's runs (poll_interval for sweeps, malicious_interval, changes_interval); 0 when the lane is off. The changes lane's rounds are stretched when its calls for every scope do not fit the budget (logged at start).",
            ),
            &["lane"],
        )?;
        registry.register(Box::new(poll_interval.clone()))?;
        let target_info = GaugeVec::new(
            Opts::new(
                "hss_swr_target_info",
                "The listing API each target polls (swr-repository or registry-images); always 1.",
            ),
            &["target", "api"],
        )?;
        registry.register(Box::new(target_info.clone()))?;
        let reload_successful = prometheus::Gauge::with_opts(Opts::new(
            "hss_swr_config_last_reload_successful",
            "Whether the last configuration reload (SIGHUP or POST /-/reload) succeeded; 1 at start.",
        ))?;
        let reload_success_time = prometheus::Gauge::with_opts(Opts::new(
            "hss_swr_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully (at start, or by a reload), in Unix seconds.",
        ))?;
        registry.register(Box::new(reload_successful.clone()))?;
        registry.register(Box::new(reload_success_time.clone()))?;
        registry.register(Box::new(LaneCollector::new(Arc::clone(&scopes))?))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let metrics = Self {
            registry,
            api,
            target_info,
            poll_interval,
            reload_successful,
            reload_success_time,
            scopes,
            image_metrics: std::sync::atomic::AtomicBool::new(image_metrics),
            max_namespaces: std::sync::atomic::AtomicUsize::new(
                crate::config::DEFAULT_MAX_NAMESPACES,
            ),
            cache: Mutex::new(HashMap::new()),
            assembled: Mutex::new(None),
        };
        metrics.record_reload(true);
        Ok(metrics)
    }

    /// Records the outcome of a configuration (re)load: a success sets
    /// `hss_swr_config_last_reload_successful` to 1 and its timestamp to now;
    /// a failure sets it to 0 and keeps the timestamp.
    pub fn record_reload(&self, success: bool) {
        if success {
            self.reload_successful.set(1.0);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.reload_success_time.set(now);
        } else {
            self.reload_successful.set(0.0);
        }
    }

    /// Records which API each target polls (replacing what was recorded).
    pub fn set_targets<'a>(&self, targets: impl IntoIterator<Item = (&'a str, &'a str)>) {
        self.target_info.reset();
        for (target, api) in targets {
            self.target_info.with_label_values(&[target, api]).set(1.0);
        }
    }

    /// Records each lane's configured interval (at start and after a
    /// reload), replacing what was recorded; a zero interval means the lane
    /// is off.
    pub fn set_poll_intervals(&self, intervals: &[(crate::collect::Lane, Duration)]) {
        self.poll_interval.reset();
        for (lane, interval) in intervals {
            self.poll_interval
                .with_label_values(&[lane.as_str()])
                .set(interval.as_secs_f64());
        }
    }

    /// Switches per-image series on or off (after a configuration reload).
    pub fn set_image_metrics(&self, on: bool) {
        self.image_metrics
            .store(on, std::sync::atomic::Ordering::Relaxed);
        self.forget_rendered();
    }

    /// Drops every rendering, so the next scrape renders afresh: the
    /// assembled text too, whose keys (the snapshots) have not changed.
    fn forget_rendered(&self) {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        *self
            .assembled
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Sets the cap on the namespaces one scope publishes (`max_namespaces`).
    pub fn set_max_namespaces(&self, max: usize) {
        let old = self
            .max_namespaces
            .swap(max, std::sync::atomic::Ordering::Relaxed);
        if old != max {
            self.forget_rendered();
        }
    }

    /// The observer the HSS clients report to.
    pub fn api(&self) -> Arc<ApiMetrics> {
        Arc::clone(&self.api)
    }

    /// The whole exposition, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = self.self_metrics();
        out.push_str(&String::from_utf8_lossy(&self.namespace_text().text()));
        out
    }

    /// The exposition for node_exporter's textfile collector (`once`): as
    /// [`Metrics::render`], without the families node_exporter exports
    /// itself. Its own `process_*` (and `go_*`) series would collide with
    /// ours and fail the whole gathering of node_exporter's `/metrics`; the
    /// process metrics of a command that has exited mean nothing anyway.
    pub fn render_textfile(&self) -> String {
        let families: Vec<MetricFamily> = self
            .registry
            .gather()
            .into_iter()
            .filter(|family| !is_node_exporter_family(family.name()))
            .collect();
        let mut out = String::with_capacity(64 * 1024);
        if let Err(error) = TextEncoder::new().encode_utf8(&families, &mut out) {
            tracing::error!(%error, "encoding self-metrics failed");
        }
        out.push_str(&String::from_utf8_lossy(&self.namespace_text().text()));
        out
    }

    /// Renders what changed since the last call (the namespace text and its
    /// gzip), so scrapes find it ready. The daemon calls it every second in
    /// the background: the cost of a publication stays off the scrape path.
    /// It also drops the plain text when no plain scrape has come for
    /// [`PLAIN_KEEP`].
    pub fn prerender(&self) {
        self.namespace_text().forget_idle_plain(PLAIN_KEEP);
    }

    /// The exporter's own metrics (registry: API calls, lanes, process, build
    /// info), encoded afresh on every call: they change between scrapes.
    pub fn self_metrics(&self) -> String {
        let mut out = String::with_capacity(64 * 1024);
        let families = self.registry.gather();
        if let Err(error) = TextEncoder::new().encode_utf8(&families, &mut out) {
            tracing::error!(%error, "encoding self-metrics failed");
        }
        out
    }

    /// The namespace families of every scope, assembled once per publication
    /// and shared by every scrape until a scope publishes again.
    pub fn namespace_text(&self) -> Arc<NamespaceText> {
        let (keys, chunks) = self.scope_chunks();
        let mut assembled = self
            .assembled
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((cached_keys, text)) = &*assembled
            && *cached_keys == keys
        {
            return Arc::clone(text);
        }
        // Only the compressed form is kept: header members and the scopes'
        // parts, copied once into one buffer.
        let mut members: Vec<bytes::Bytes> = Vec::new();
        let mut plain_len = 0;
        for (i, family) in FAMILIES.iter().enumerate() {
            let parts: Vec<&Part> = chunks
                .iter()
                .filter_map(|(sweep, malicious)| match family.source {
                    Source::Sweep => sweep.get(i),
                    Source::Malicious => malicious.get(i),
                })
                .filter(|part| part.plain_len > 0)
                .collect();
            if parts.is_empty() {
                continue;
            }
            let mut header = String::with_capacity(256);
            write_header(&mut header, family);
            plain_len += header.len();
            members.push(gzip(header.as_bytes()));
            for part in parts {
                plain_len += part.plain_len;
                members.push(part.gzip.clone());
            }
        }
        let mut joined = Vec::with_capacity(members.iter().map(bytes::Bytes::len).sum());
        for member in &members {
            joined.extend_from_slice(member);
        }
        let text = Arc::new(NamespaceText {
            gzip: bytes::Bytes::from(joined),
            plain_len,
            plain: Mutex::new(None),
        });
        *assembled = Some((keys, Arc::clone(&text)));
        text
    }

    /// Every scope's rendered chunks, from the cache where the scope has not
    /// published since.
    fn scope_chunks(&self) -> (Vec<ChunkKey>, Vec<(Chunks, Chunks)>) {
        let scopes = self.scopes.list();
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache.retain(|scope, _| scopes.iter().any(|h| &h.scope == scope));
        let mut out = Vec::with_capacity(scopes.len());
        let mut keys = Vec::with_capacity(scopes.len());
        for handle in &scopes {
            // One view: the snapshots and the detector come from one
            // publication.
            let view = handle.view();
            let sweep = handle.serving_snapshot(&view);
            let malicious = handle.serving_malicious(&view);
            let sweep_key = sweep.as_ref().map(|s| s.id);
            let malicious_key = (
                sweep_key,
                malicious.as_ref().map(|m| m.id),
                view.detector.generation,
            );
            let entry = cache
                .entry(handle.scope.clone())
                .or_insert_with(|| ScopeCache {
                    sweep_key: None,
                    sweep_allowed: None,
                    sweep_chunks: Arc::new(Vec::new()),
                    cap: NamespaceCap {
                        allowed: None,
                        dropped: 0,
                    },
                    malicious_key: (None, None, u64::MAX),
                    malicious_chunks: Arc::new(Vec::new()),
                });
            // The malicious key covers the sweep too, so the cap (decided
            // over everything the scope knows) is current after this.
            if entry.malicious_key != malicious_key {
                let detector = &view.detector;
                let mut known: Vec<&NamespaceKey> = Vec::new();
                if let Some(sweep) = &sweep {
                    known.extend(sweep.namespaces.keys());
                }
                if let Some(malicious) = &malicious {
                    known.extend(malicious.namespaces.keys());
                }
                let detected = detector.namespaces();
                known.extend(detected.iter());
                entry.cap = cap_namespaces(
                    known,
                    self.max_namespaces
                        .load(std::sync::atomic::Ordering::Relaxed),
                );
                entry.malicious_key = malicious_key;
                entry.malicious_chunks = Arc::new(render_malicious(
                    handle,
                    sweep.as_deref(),
                    malicious.as_deref(),
                    detector,
                    &entry.cap,
                ));
            }
            let same_allowed = match (&entry.sweep_allowed, &entry.cap.allowed) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
                _ => false,
            };
            if entry.sweep_key != sweep_key
                || !same_allowed
                || (sweep_key.is_some() && entry.sweep_chunks.is_empty())
            {
                entry.sweep_key = sweep_key;
                entry.sweep_allowed = entry.cap.allowed.clone();
                entry.sweep_chunks = Arc::new(match &sweep {
                    Some(snapshot) => render_sweep(
                        handle,
                        snapshot,
                        self.image_metrics
                            .load(std::sync::atomic::Ordering::Relaxed),
                        &entry.cap,
                    ),
                    None => Vec::new(),
                });
            }
            out.push((
                Arc::clone(&entry.sweep_chunks),
                Arc::clone(&entry.malicious_chunks),
            ));
            keys.push((handle.scope.clone(), entry.sweep_key, entry.malicious_key));
        }
        (keys, out)
    }
}

/// Where a family's values come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The last complete sweep.
    Sweep,
    /// The newer of the last sweep and the last malicious-lane run, and the
    /// detector.
    Malicious,
}

/// A family rendered from published results.
struct FamilySpec {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    source: Source,
}

const fn gauge_of(name: &'static str, help: &'static str, source: Source) -> FamilySpec {
    FamilySpec {
        name,
        help,
        kind: MetricType::GAUGE,
        source,
    }
}

const IMAGES: usize = 0;
const VULNERABILITIES: usize = 1;
const MALICIOUS_FILES: usize = 2;
const UNSAFE_SETTINGS: usize = 3;
const VULNERABLE_IMAGES: usize = 4;
const MALICIOUS_IMAGES: usize = 5;
const UNSAFE_IMAGES: usize = 6;
const SCAN_FAILURES: usize = 7;
const OLDEST_SCAN: usize = 8;
const DETECTED: usize = 9;
const IMAGE_VULNERABILITIES: usize = 10;
const IMAGE_MALICIOUS_FILES: usize = 11;
const IMAGE_UNSAFE_SETTINGS: usize = 12;
const IMAGE_SERIES_DROPPED: usize = 13;
const IMAGES_BY_SEVERITY: usize = 14;
const NAMESPACE_SERIES_DROPPED: usize = 15;

const FAMILIES: [FamilySpec; 16] = [
    gauge_of(
        "hss_swr_images",
        "Image versions by scan status, from the last complete sweep of the scope.",
        Source::Sweep,
    ),
    gauge_of(
        "hss_swr_vulnerabilities",
        "Sum of vul_num over the namespace's images, from the last complete sweep.",
        Source::Sweep,
    ),
    gauge_of(
        "hss_swr_malicious_files",
        "Sum of malicious_file_num over the namespace's images, from the newer of the last sweep and the last malicious-lane run.",
        Source::Malicious,
    ),
    gauge_of(
        "hss_swr_unsafe_settings",
        "Sum of unsafe_setting_num (failed baseline checks) over the namespace's images, from the last complete sweep.",
        Source::Sweep,
    ),
    gauge_of(
        "hss_swr_vulnerable_images",
        "Images with vul_num > 0, from the last complete sweep.",
        Source::Sweep,
    ),
    gauge_of(
        "hss_swr_malicious_images",
        "Images with malicious_file_num > 0, from the newer of the last sweep and the last malicious-lane run.",
        Source::Malicious,
    ),
    gauge_of(
        "hss_swr_unsafe_images",
        "Images with unsafe_setting_num > 0, from the last complete sweep.",
        Source::Sweep,
    ),
    gauge_of(
        "hss_swr_scan_failures",
        "Failed scans by reason (scan_failed_code when present, else scan_failed_desc), from the last complete sweep.",
        Source::Sweep,
    ),
    gauge_of(
        "hss_swr_oldest_scan_timestamp_seconds",
        "Oldest latest_scan_time among the namespace's scanned images, from the last complete sweep.",
        Source::Sweep,
    ),
    FamilySpec {
        name: "hss_swr_malicious_images_detected_total",
        help: "Images newly seen with malicious files, or with more than before; the first run after start sets the baseline unless the state file holds one.",
        kind: MetricType::COUNTER,
        source: Source::Malicious,
    },
    gauge_of(
        "hss_swr_image_vulnerabilities",
        "vul_num of one image version (image_metrics), from the last complete sweep.",
        Source::Sweep,
    ),
    gauge_of(
        "hss_swr_image_malicious_files",
        "malicious_file_num of one image version (image_metrics), from the last complete sweep.",
        Source::Sweep,
    ),
    gauge_of(
        "hss_swr_image_unsafe_settings",
        "unsafe_setting_num of one image version (image_metrics), from the last complete sweep.",
        Source::Sweep,
    ),
    gauge_of(
        "hss_swr_image_series_dropped",
        "Image versions left out of the per-image series by max_image_series in the last complete sweep.",
        Source::Sweep,
    ),
    gauge_of(
        "hss_swr_images_by_severity",
        "Image versions by severity_level (registry-images API only), from the last complete sweep.",
        Source::Sweep,
    ),
    gauge_of(
        "hss_swr_namespace_series_dropped",
        "Namespaces of the scope left without series by max_namespaces in the last publication (the first ones in key order are kept).",
        Source::Malicious,
    ),
];

fn label(name: &str, value: &str) -> LabelPair {
    let mut pair = LabelPair::default();
    pair.set_name(name.to_string());
    pair.set_value(value.to_string());
    pair
}

fn gauge(labels: Vec<LabelPair>, value: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(value);
    let mut m = Metric::from_label(labels);
    m.set_gauge(g);
    m
}

fn counter(labels: Vec<LabelPair>, value: f64) -> Metric {
    let mut c = Counter::default();
    c.set_value(value);
    let mut m = Metric::from_label(labels);
    m.set_counter(c);
    m
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help.to_string());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn scope_labels(scope: &ScopeHandle) -> Vec<LabelPair> {
    let s = &scope.scope;
    vec![
        label("target", &s.target),
        label("enterprise_project_id", &s.enterprise_project_id),
        label("image_type", s.image_type.as_str()),
    ]
}

fn with(mut labels: Vec<LabelPair>, name: &str, value: &str) -> Vec<LabelPair> {
    labels.push(label(name, value));
    labels
}

/// Writes `value` as a label value of the text format: backslash, double
/// quote and line feed escaped as `\\`, `\"` and `\n`. Every label value the
/// exporter writes itself goes through here.
pub(crate) fn write_label_value(out: &mut String, value: &str) {
    let mut rest = value;
    while let Some(i) = rest.find(['\\', '"', '\n']) {
        out.push_str(&rest[..i]);
        out.push_str(match rest.as_bytes()[i] {
            b'\\' => "\\\\",
            b'"' => "\\\"",
            _ => "\\n",
        });
        rest = &rest[i + 1..];
    }
    out.push_str(rest);
}

/// Appends `name="value"` to a label list (with a comma unless it is the
/// first).
fn push_label(out: &mut String, name: &str, value: &str) {
    if !out.is_empty() {
        out.push(',');
    }
    out.push_str(name);
    out.push_str("=\"");
    write_label_value(out, value);
    out.push('"');
}

/// The `# HELP` and `# TYPE` lines of a family.
fn write_header(out: &mut String, family: &FamilySpec) {
    out.push_str("# HELP ");
    out.push_str(family.name);
    out.push(' ');
    out.push_str(family.help);
    out.push_str("\n# TYPE ");
    out.push_str(family.name);
    out.push_str(if family.kind == MetricType::COUNTER {
        " counter\n"
    } else {
        " gauge\n"
    });
}

/// The scope labels, as text: `target="…",enterprise_project_id="…",image_type="…"`.
fn scope_label_text(scope: &ScopeHandle) -> String {
    let s = &scope.scope;
    let mut out = String::with_capacity(128);
    push_label(&mut out, "target", &s.target);
    push_label(&mut out, "enterprise_project_id", &s.enterprise_project_id);
    push_label(&mut out, "image_type", s.image_type.as_str());
    out
}

/// The namespace labels, as text: the scope's, then `instance_name`,
/// `registry_name` (empty under swr-repository, which Prometheus stores as no
/// label at all, so those series are unchanged) and `namespace`. Written into
/// `out`, which is cleared first.
fn namespace_label_text(out: &mut String, scope_labels: &str, key: &NamespaceKey) {
    out.clear();
    out.push_str(scope_labels);
    push_label(out, "instance_name", &key.instance_name);
    push_label(out, "registry_name", &key.registry_name);
    push_label(out, "namespace", &key.namespace);
}

/// Text kept before it goes to the compressor.
const PART_BUFFER: usize = 64 * 1024;

/// Streams the samples of one family of one scope, `name{labels} value`
/// lines, through a small buffer into one gzip member. No sample is held as
/// an object, and the text of a part never exists whole.
struct PartWriter {
    buf: String,
    encoder: Option<flate2::write::GzEncoder<Vec<u8>>>,
    plain_len: usize,
}

impl PartWriter {
    fn new() -> Self {
        Self {
            buf: String::with_capacity(PART_BUFFER + 4096),
            encoder: None,
            plain_len: 0,
        }
    }

    /// Writes `name{labels} value`, or `name{labels,extra="…"} value`.
    fn sample(
        &mut self,
        name: &str,
        labels: &str,
        extra: Option<(&str, &str)>,
        value: impl std::fmt::Display,
    ) {
        use std::fmt::Write as _;
        let start = self.buf.len();
        self.buf.push_str(name);
        self.buf.push('{');
        self.buf.push_str(labels);
        if let Some((name, value)) = extra {
            self.buf.push(',');
            self.buf.push_str(name);
            self.buf.push_str("=\"");
            write_label_value(&mut self.buf, value);
            self.buf.push('"');
        }
        self.buf.push_str("} ");
        // Writing to a String cannot fail.
        let _ = write!(self.buf, "{value}");
        self.buf.push('\n');
        self.plain_len += self.buf.len() - start;
        if self.buf.len() >= PART_BUFFER {
            self.flush();
        }
    }

    fn flush(&mut self) {
        use std::io::Write as _;
        if self.buf.is_empty() {
            return;
        }
        // The fastest level: at 100,000 images it compresses the 24 MB of
        // namespace text in a tenth of the default level's CPU, to 1.5 times
        // its size (docs/PERFORMANCE.md).
        let encoder = self.encoder.get_or_insert_with(|| {
            flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast())
        });
        // Writing to a Vec cannot fail.
        let _ = encoder.write_all(self.buf.as_bytes());
        self.buf.clear();
    }

    /// The part written since the last call.
    fn finish(&mut self) -> Part {
        self.flush();
        let gzip = self
            .encoder
            .take()
            .map(|encoder| encoder.finish().unwrap_or_default())
            .unwrap_or_default();
        let plain_len = std::mem::take(&mut self.plain_len);
        Part {
            gzip: bytes::Bytes::from(gzip),
            plain_len,
        }
    }
}

/// Renders the sweep families of one snapshot, one part per family of
/// [`FAMILIES`] (empty for the malicious families).
fn render_sweep(
    scope: &ScopeHandle,
    snapshot: &Snapshot,
    image_metrics: bool,
    cap: &NamespaceCap,
) -> Vec<Part> {
    let base = scope_label_text(scope);
    let mut n = String::with_capacity(256);
    let mut w = PartWriter::new();
    let mut parts = Vec::with_capacity(FAMILIES.len());
    let namespaces = || snapshot.namespaces.iter().filter(|(k, _)| cap.allows(k));
    for (i, family) in FAMILIES.iter().enumerate() {
        let name = family.name;
        match i {
            IMAGES => {
                for (key, stats) in namespaces() {
                    namespace_label_text(&mut n, &base, key);
                    for (status, count) in KNOWN_SCAN_STATUSES.iter().zip(stats.known_status) {
                        w.sample(name, &n, Some(("scan_status", status)), count);
                    }
                    for (status, count) in &stats.other_status {
                        w.sample(name, &n, Some(("scan_status", status)), count);
                    }
                }
            }
            VULNERABILITIES | UNSAFE_SETTINGS | VULNERABLE_IMAGES | UNSAFE_IMAGES => {
                for (key, stats) in namespaces() {
                    namespace_label_text(&mut n, &base, key);
                    let value = match i {
                        VULNERABILITIES => stats.vulnerabilities,
                        UNSAFE_SETTINGS => stats.unsafe_settings,
                        VULNERABLE_IMAGES => stats.vulnerable_images,
                        _ => stats.unsafe_images,
                    };
                    w.sample(name, &n, None, value);
                }
            }
            SCAN_FAILURES => {
                for (key, stats) in namespaces() {
                    namespace_label_text(&mut n, &base, key);
                    for (reason, count) in &stats.scan_failures {
                        w.sample(name, &n, Some(("reason", reason)), count);
                    }
                }
            }
            IMAGES_BY_SEVERITY if scope.scope.api == ListingApi::RegistryImages => {
                for (key, stats) in namespaces() {
                    namespace_label_text(&mut n, &base, key);
                    for severity in KNOWN_SEVERITIES {
                        let count = stats.by_severity.get(severity).copied().unwrap_or(0);
                        w.sample(name, &n, Some(("severity", severity)), count);
                    }
                    for (severity, count) in &stats.by_severity {
                        if !KNOWN_SEVERITIES.contains(&severity.as_str()) {
                            w.sample(name, &n, Some(("severity", severity)), count);
                        }
                    }
                }
            }
            OLDEST_SCAN => {
                for (key, stats) in namespaces() {
                    if let Some(ms) = stats.oldest_scan_ms {
                        namespace_label_text(&mut n, &base, key);
                        w.sample(name, &n, None, ms as f64 / 1000.0);
                    }
                }
            }
            IMAGE_VULNERABILITIES | IMAGE_MALICIOUS_FILES | IMAGE_UNSAFE_SETTINGS
                if image_metrics =>
            {
                for image in snapshot
                    .image_series
                    .iter()
                    .filter(|i| cap.allows(&i.namespace))
                {
                    namespace_label_text(&mut n, &base, &image.namespace);
                    push_label(&mut n, "image", &image.image);
                    let value = match i {
                        IMAGE_VULNERABILITIES => image.vulnerabilities,
                        IMAGE_MALICIOUS_FILES => image.malicious_files,
                        _ => image.unsafe_settings,
                    };
                    w.sample(name, &n, Some(("version", &image.version)), value);
                }
            }
            IMAGE_SERIES_DROPPED if image_metrics => {
                w.sample(name, &base, None, snapshot.image_series_dropped);
            }
            _ => {}
        }
        parts.push(w.finish());
    }
    parts
}

/// Renders the malicious families of one scope: the malicious gauges from the
/// newer of the last sweep and the last malicious-lane run, and the detection
/// counter at 0 for every namespace the scope knows, and the number of
/// namespaces `cap` leaves out. One part per family of [`FAMILIES`] (empty
/// for the sweep families).
fn render_malicious(
    scope: &ScopeHandle,
    sweep: Option<&Snapshot>,
    malicious: Option<&MaliciousSnapshot>,
    detector: &DetectorState,
    cap: &NamespaceCap,
) -> Vec<Part> {
    let base = scope_label_text(scope);
    let mut known: BTreeSet<&NamespaceKey> = BTreeSet::new();
    if let Some(sweep) = sweep {
        known.extend(sweep.namespaces.keys());
    }
    let lane_is_newer = match (sweep, malicious) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(s), Some(m)) => m.finished_at >= s.finished_at,
    };
    let mut current: BTreeMap<&NamespaceKey, MaliciousStats> = BTreeMap::new();
    if lane_is_newer {
        if let Some(m) = malicious {
            known.extend(m.namespaces.keys());
            for key in &known {
                current.insert(key, m.namespaces.get(*key).copied().unwrap_or_default());
            }
        }
    } else if let Some(s) = sweep {
        for (key, stats) in &s.namespaces {
            current.insert(
                key,
                MaliciousStats {
                    files: stats.malicious_files,
                    images: stats.malicious_images,
                },
            );
        }
    }
    let detected = detector.namespaces();
    known.extend(detected.iter());
    let mut n = String::with_capacity(256);
    let mut w = PartWriter::new();
    let mut parts = Vec::with_capacity(FAMILIES.len());
    for (i, family) in FAMILIES.iter().enumerate() {
        let name = family.name;
        match i {
            MALICIOUS_FILES | MALICIOUS_IMAGES => {
                for (key, stats) in current.iter().filter(|(k, _)| cap.allows(k)) {
                    namespace_label_text(&mut n, &base, key);
                    let value = if i == MALICIOUS_FILES {
                        stats.files
                    } else {
                        stats.images
                    };
                    w.sample(name, &n, None, value);
                }
            }
            NAMESPACE_SERIES_DROPPED if sweep.is_some() || malicious.is_some() => {
                w.sample(name, &base, None, cap.dropped);
            }
            DETECTED => {
                for key in known.iter().filter(|k| cap.allows(k)) {
                    let count = detector.detected.get(*key).copied().unwrap_or(0);
                    namespace_label_text(&mut n, &base, key);
                    w.sample(name, &n, None, count);
                }
            }
            _ => {}
        }
        parts.push(w.finish());
    }
    parts
}

/// Lane health, read from the scope handles on every scrape.
struct LaneCollector {
    scopes: Arc<ScopeSet>,
    descs: Vec<Desc>,
}

const LANE_FAMILIES: [(&str, &str, MetricType); 8] = [
    (
        "hss_swr_up",
        "1 if the lane's last run succeeded, 0 if it failed; absent until the first run ends.",
        MetricType::GAUGE,
    ),
    (
        "hss_swr_last_success_timestamp_seconds",
        "End of the lane's last successful run, seconds since the epoch.",
        MetricType::GAUGE,
    ),
    (
        "hss_swr_poll_duration_seconds",
        "Duration of the lane's last run, including waits for the request budget.",
        MetricType::GAUGE,
    ),
    (
        "hss_swr_polls_total",
        "Lane runs finished, successful or not.",
        MetricType::COUNTER,
    ),
    (
        "hss_swr_poll_failures_total",
        "Lane runs that failed.",
        MetricType::COUNTER,
    ),
    (
        "hss_swr_duplicate_rows_total",
        "Rows dropped because an earlier page of the same run had them.",
        MetricType::COUNTER,
    ),
    (
        "hss_swr_total_changes_total",
        "Times total_num changed between pages of one run (the run still completes).",
        MetricType::COUNTER,
    ),
    (
        "hss_swr_rows_applied_total",
        "Rows that changed the scope's image table (new images, or new figures or times), by the changes lane and the malicious check.",
        MetricType::COUNTER,
    ),
];

/// `hss_swr_changes_watermark_age_seconds`: how far back the changes lane's
/// next query reaches, by filter.
const WATERMARK_AGE: (&str, &str) = (
    "hss_swr_changes_watermark_age_seconds",
    "Seconds from the changes lane's watermark (the start_latest_scan_time or start_latest_update_time of its next query: the newest server timestamp seen, less changes_overlap) to now, by filter.",
);

impl LaneCollector {
    fn new(scopes: Arc<ScopeSet>) -> Result<Self, Error> {
        let mut labels: Vec<String> = SCOPE_LABELS.iter().map(|s| s.to_string()).collect();
        labels.push("lane".to_string());
        let descs = LANE_FAMILIES
            .iter()
            .map(|(name, help, _)| {
                Desc::new(
                    name.to_string(),
                    help.to_string(),
                    labels.clone(),
                    Default::default(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut descs = descs;
        let mut labels: Vec<String> = SCOPE_LABELS.iter().map(|s| s.to_string()).collect();
        labels.push("filter".to_string());
        descs.push(Desc::new(
            WATERMARK_AGE.0.to_string(),
            WATERMARK_AGE.1.to_string(),
            labels,
            Default::default(),
        )?);
        Ok(Self { scopes, descs })
    }
}

fn seconds_since_epoch(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Collector for LaneCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut per_family: Vec<Vec<Metric>> =
            (0..LANE_FAMILIES.len()).map(|_| Vec::new()).collect();
        let mut ages = Vec::new();
        for scope in self.scopes.list() {
            // One view: every lane's status from one publication.
            let view = scope.view();
            for lane in scope.lanes() {
                let status = view.lane(*lane);
                let labels = with(scope_labels(&scope), "lane", lane.as_str());
                if status.runs > 0 {
                    per_family[0].push(gauge(labels.clone(), if status.up { 1.0 } else { 0.0 }));
                }
                if let Some(t) = status.last_success {
                    per_family[1].push(gauge(labels.clone(), seconds_since_epoch(t)));
                }
                if let Some(d) = status.last_duration {
                    per_family[2].push(gauge(labels.clone(), d.as_secs_f64()));
                }
                per_family[3].push(counter(labels.clone(), status.runs as f64));
                per_family[4].push(counter(labels.clone(), status.failures as f64));
                per_family[5].push(counter(labels.clone(), status.duplicate_rows as f64));
                per_family[6].push(counter(labels.clone(), status.total_changes as f64));
                if scope.changes_lane
                    && matches!(
                        lane,
                        crate::collect::Lane::Changes | crate::collect::Lane::Malicious
                    )
                {
                    per_family[7].push(counter(labels, status.rows_applied as f64));
                }
            }
            if scope.changes_lane {
                let marks = view.watermarks;
                let now = seconds_since_epoch(SystemTime::now());
                for (filter, since) in [
                    ("scan", marks.scan_since_ms),
                    ("update", marks.update_since_ms),
                ] {
                    if let Some(ms) = since {
                        ages.push(gauge(
                            with(scope_labels(&scope), "filter", filter),
                            now - ms as f64 / 1000.0,
                        ));
                    }
                }
            }
        }
        let mut families: Vec<MetricFamily> = per_family
            .into_iter()
            .zip(LANE_FAMILIES.iter())
            .filter(|(metrics, _)| !metrics.is_empty())
            .map(|(metrics, (name, help, kind))| family(name, help, *kind, metrics))
            .collect();
        if !ages.is_empty() {
            families.push(family(
                WATERMARK_AGE.0,
                WATERMARK_AGE.1,
                MetricType::GAUGE,
                ages,
            ));
        }
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::table::Aggregator;
    use crate::collect::{Lane, Scope};
    use crate::config::ImageType;
    use crate::hss::Row;

    fn published(rows: &[Row], image_metrics: bool) -> (Metrics, Arc<ScopeHandle>) {
        let handle = ScopeHandle::new(
            Scope {
                target: "prod".into(),
                enterprise_project_id: "0".into(),
                image_type: ImageType::Private,
                latest_version_only: false,
                api: crate::config::ListingApi::SwrRepository,
            },
            Duration::from_secs(3600),
            false,
        );
        let mut agg = Aggregator::new(image_metrics);
        for row in rows {
            agg.add(row);
        }
        handle.update_lane(Lane::Sweep, |s| {
            s.runs = 1;
            s.up = true;
            s.last_success = Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
            s.last_success_at = Some(tokio::time::Instant::now());
            s.last_duration = Some(Duration::from_millis(1500));
        });
        handle.commit(|p| p.snapshot = Some(Arc::new(agg.finish(SystemTime::now(), 100))));
        let metrics =
            Metrics::new(ScopeSet::new(vec![Arc::clone(&handle)]), image_metrics).unwrap();
        (metrics, handle)
    }

    fn row(ns: &str, vul: u64, mal: u64) -> Row {
        Row {
            id: None,
            namespace: ns.into(),
            image_name: format!("{ns}-img"),
            image_version: "1.0".into(),
            scan_status: Some("success".into()),
            vul_num: vul,
            malicious_file_num: mal,
            latest_scan_time: Some(1_690_000_000_500),
            ..Row::default()
        }
    }

    #[test]
    fn namespace_series_carry_the_published_numbers() {
        let (metrics, _) = published(&[row("team-a", 7, 2)], false);
        let text = metrics.render();
        let n = r#"target="prod",enterprise_project_id="0",image_type="private_image",instance_name="",registry_name="",namespace="team-a""#;
        for line in [
            format!("hss_swr_images{{{n},scan_status=\"success\"}} 1"),
            format!("hss_swr_images{{{n},scan_status=\"unscan\"}} 0"),
            format!("hss_swr_images{{{n},scan_status=\"waiting_for_scan\"}} 0"),
            format!("hss_swr_vulnerabilities{{{n}}} 7"),
            format!("hss_swr_malicious_files{{{n}}} 2"),
            format!("hss_swr_malicious_images{{{n}}} 1"),
            format!("hss_swr_oldest_scan_timestamp_seconds{{{n}}} 1690000000.5"),
            "hss_swr_up{target=\"prod\",enterprise_project_id=\"0\",image_type=\"private_image\",lane=\"sweep\"} 1".to_string(),
            "hss_swr_last_success_timestamp_seconds{target=\"prod\",enterprise_project_id=\"0\",image_type=\"private_image\",lane=\"sweep\"} 1700000000".to_string(),
            "hss_swr_polls_total{target=\"prod\",enterprise_project_id=\"0\",image_type=\"private_image\",lane=\"sweep\"} 1".to_string(),
            format!(
                "hss_swr_build_info{{branch=\"{}\",revision=\"{}\",rustversion=\"{}\",target=\"{}\",version=\"{}\"}} 1",
                env!("HSS_SWR_BRANCH"),
                crate::REVISION,
                env!("HSS_SWR_RUST_VERSION"),
                env!("HSS_SWR_TARGET"),
                crate::VERSION
            ),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        assert_eq!(text.matches("# TYPE hss_swr_images gauge").count(), 1);
        assert!(
            !text.contains("hss_swr_image_vulnerabilities"),
            "per-image series are opt-in"
        );
    }

    #[test]
    fn awkward_label_values_are_escaped() {
        let (metrics, _) = published(&[row("q\"uote\\back\nline 团队", 1, 0)], true);
        let text = metrics.render();
        assert!(
            text.contains(r#"namespace="q\"uote\\back\nline 团队""#),
            "{text}"
        );
        assert!(
            text.contains(r#"image="q\"uote\\back\nline 团队-img",version="1.0"} 1"#),
            "{text}"
        );
        for line in text.lines() {
            assert!(!line.is_empty());
        }
    }

    #[test]
    fn label_values_are_escaped_as_the_text_format_says() {
        let mut out = String::new();
        write_label_value(&mut out, "a\\b\"c\nd 团队\t");
        assert_eq!(out, "a\\\\b\\\"c\\nd 团队\t");
        out.clear();
        write_label_value(&mut out, "plain");
        assert_eq!(out, "plain");
    }

    #[test]
    fn gzip_and_plain_forms_carry_the_same_text() {
        use std::io::Read as _;
        let rows: Vec<Row> = (0..50)
            .map(|i| row(&format!("ns-{i:03}"), i, i % 3))
            .collect();
        let (metrics, _) = published(&rows, true);
        let text = metrics.namespace_text();
        let mut inflated = String::new();
        flate2::read::MultiGzDecoder::new(&text.gzip()[..])
            .read_to_string(&mut inflated)
            .unwrap();
        assert_eq!(inflated.as_bytes(), &text.text()[..]);
        assert_eq!(inflated.len(), text.plain_len());
        assert_eq!(inflated.matches("# TYPE hss_swr_images gauge\n").count(), 1);
        assert!(
            inflated.contains("namespace=\"ns-049\"} 49\n"),
            "{inflated}"
        );
        assert!(render_is_whole(&metrics.render()));
    }

    #[test]
    fn the_plain_text_is_kept_front_coded_only_while_plain_scrapes_come() {
        let rows: Vec<Row> = (0..300)
            .map(|i| row(&format!("namespace-{i:04}"), i, 0))
            .collect();
        let (metrics, _) = published(&rows, false);
        let text = metrics.namespace_text();
        assert!(
            !text.forget_idle_plain(PLAIN_KEEP),
            "nothing kept before a plain scrape"
        );
        let pieces: Vec<bytes::Bytes> = text.plain().collect();
        assert!(pieces.len() >= 2, "{} bytes in one piece", text.plain_len());
        assert!(
            pieces
                .iter()
                .all(|p| !p.is_empty() && p.len() <= PLAIN_PIECE + 1024)
        );
        let first: Vec<u8> = pieces.concat();
        assert_eq!(first.len(), text.plain_len(), "Content-Length is exact");
        assert_eq!(&first[..], &text.text()[..]);
        assert!(std::str::from_utf8(&first).unwrap().ends_with("} 0\n"));
        let kept = text.plain.lock().unwrap().as_ref().unwrap().0.data.len();
        assert!(
            kept * 5 < text.plain_len(),
            "{kept} bytes kept for {}",
            text.plain_len()
        );
        let second: Vec<u8> = text.plain().flat_map(|p| p.to_vec()).collect();
        assert_eq!(second, first, "the second scrape reuses it");
        assert!(
            text.forget_idle_plain(PLAIN_KEEP),
            "kept while scrapes come"
        );
        assert!(!text.forget_idle_plain(Duration::ZERO), "dropped when idle");
        let again: Vec<u8> = text.plain().flat_map(|p| p.to_vec()).collect();
        assert_eq!(again, first, "made again on demand");
    }

    #[test]
    fn front_coding_gives_back_any_text() {
        for text in [
            "",
            "a",
            "\n",
            "no newline at the end",
            "a\na\nab\nabc\nb\n\n\nx",
            "é\n\u{1F600}\nêtre\n",
        ] {
            let mut coder = FrontCoder::default();
            // In pieces that cut lines (and characters) anywhere.
            for chunk in text.as_bytes().chunks(2) {
                coder.push(chunk);
            }
            let coded = Arc::new(coder.finish());
            assert_eq!(coded.len, text.len());
            let back: Vec<u8> = PlainPieces::new(coded).flat_map(|p| p.to_vec()).collect();
            assert_eq!(back, text.as_bytes(), "{text:?}");
        }
    }

    /// Every line of an exposition is a comment or a sample with a value.
    fn render_is_whole(text: &str) -> bool {
        text.ends_with('\n')
            && text.lines().all(|l| {
                l.starts_with('#')
                    || l.rsplit_once(' ')
                        .is_some_and(|(_, v)| v.parse::<f64>().is_ok())
            })
    }

    #[test]
    fn textfile_output_has_no_process_series_but_everything_else() {
        let (metrics, _) = published(&[row("team-a", 7, 2)], false);
        let text = metrics.render_textfile();
        let full = metrics.render();
        let names = |t: &str| -> BTreeSet<String> {
            t.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split(['{', ' ']).next().map(str::to_string))
                .collect()
        };
        let (textfile, daemon) = (names(&text), names(&full));
        #[cfg(target_os = "linux")]
        assert!(daemon.iter().any(|n| n.starts_with("process_")), "{full}");
        assert!(
            textfile.iter().all(|n| n.starts_with("hss_swr_")),
            "{textfile:?}"
        );
        let hss: BTreeSet<String> = daemon
            .into_iter()
            .filter(|n| n.starts_with("hss_swr_"))
            .collect();
        assert_eq!(textfile, hss);
        assert!(text.contains("# TYPE hss_swr_malicious_files gauge"));
    }

    #[test]
    fn per_image_series_when_enabled() {
        let (metrics, _) = published(&[row("a", 3, 1)], true);
        let text = metrics.render();
        assert!(text.contains("hss_swr_image_malicious_files{target=\"prod\",enterprise_project_id=\"0\",image_type=\"private_image\",instance_name=\"\",registry_name=\"\",namespace=\"a\",image=\"a-img\",version=\"1.0\"} 1"));
        assert!(text.contains("hss_swr_image_series_dropped{target=\"prod\",enterprise_project_id=\"0\",image_type=\"private_image\"} 0"));
    }

    fn namespaces_of(text: &str, family: &str) -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{family}{{")))
            .filter_map(|l| l.split("namespace=\"").nth(1))
            .filter_map(|rest| rest.split('"').next())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn a_scope_publishes_at_most_max_namespaces() {
        let rows: Vec<Row> = ["e", "c", "a", "d", "b"]
            .iter()
            .map(|ns| row(ns, 1, 1))
            .collect();
        let (metrics, handle) = published(&rows, true);
        let dropped = |text: &str| {
            text.lines()
                .find_map(|l| {
                    l.strip_prefix("hss_swr_namespace_series_dropped{target=\"prod\",enterprise_project_id=\"0\",image_type=\"private_image\"} ")
                })
                .map(str::to_string)
        };
        let text = metrics.render();
        assert_eq!(dropped(&text).as_deref(), Some("0"), "{text}");
        assert_eq!(namespaces_of(&text, "hss_swr_vulnerabilities").len(), 5);

        metrics.set_max_namespaces(3);
        let text = metrics.render();
        assert_eq!(dropped(&text).as_deref(), Some("2"), "{text}");
        for family in [
            "hss_swr_vulnerabilities",
            "hss_swr_malicious_files",
            "hss_swr_malicious_images_detected_total",
            "hss_swr_image_vulnerabilities",
        ] {
            // Per-image series come worst first, not by namespace.
            let mut namespaces = namespaces_of(&text, family);
            namespaces.sort();
            assert_eq!(namespaces, vec!["a", "b", "c"], "{family}\n{text}");
        }
        let images = namespaces_of(&text, "hss_swr_images");
        assert_eq!(images.len(), 3 * KNOWN_SCAN_STATUSES.len());
        assert!(
            images
                .iter()
                .all(|ns| ["a", "b", "c"].contains(&ns.as_str()))
        );
        assert!(text.contains("# TYPE hss_swr_namespace_series_dropped gauge"));

        // A namespace the detector knows but no sweep has (restored state)
        // counts among what the scope knows: "0" sorts first.
        handle.commit(|p| {
            p.detector_mut().detected.insert(
                NamespaceKey {
                    instance_name: String::new(),
                    registry_name: String::new(),
                    namespace: "0".into(),
                },
                1,
            );
            p.detector_mut().generation += 1;
        });
        let text = metrics.render();
        assert_eq!(dropped(&text).as_deref(), Some("3"), "{text}");
        assert_eq!(
            namespaces_of(&text, "hss_swr_malicious_images_detected_total"),
            vec!["0", "a", "b"]
        );
        assert_eq!(
            namespaces_of(&text, "hss_swr_vulnerabilities"),
            vec!["a", "b"],
            "every family publishes the same namespaces"
        );

        // Raising the cap brings them all back.
        metrics.set_max_namespaces(1_000);
        let text = metrics.render();
        assert_eq!(dropped(&text).as_deref(), Some("0"));
        assert_eq!(namespaces_of(&text, "hss_swr_vulnerabilities").len(), 5);
    }

    #[test]
    fn stale_or_unpublished_scopes_have_no_namespace_series() {
        let (metrics, handle) = published(&[row("a", 3, 1)], false);
        handle.commit(|p| p.snapshot = None);
        let text = metrics.render();
        assert!(!text.contains("hss_swr_vulnerabilities"));
        assert!(text.contains("hss_swr_up{"));
    }

    #[test]
    fn api_observations_become_counters() {
        let (metrics, _) = published(&[], false);
        let api = metrics.api();
        api.init_target("prod");
        api.request("prod", "200", Duration::from_millis(20));
        api.request("prod", "429", Duration::from_millis(20));
        api.throttled("prod");
        api.retry("prod", "throttled");
        api.invalid_field("prod", "vul_num", 3);
        let text = metrics.render();
        for line in [
            "hss_swr_api_requests_total{code=\"200\",target=\"prod\"} 1",
            "hss_swr_api_requests_total{code=\"429\",target=\"prod\"} 1",
            "hss_swr_api_throttled_total{target=\"prod\"} 1",
            "hss_swr_api_retries_total{reason=\"throttled\",target=\"prod\"} 1",
            "hss_swr_invalid_fields_total{field=\"vul_num\",target=\"prod\"} 3",
            "hss_swr_api_budget_wait_seconds_total{target=\"prod\"} 0",
            "hss_swr_api_request_duration_seconds_count{target=\"prod\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
    }
}
