//! The image table: one scope's last complete listing, kept as one compact
//! entry per image, from which every published figure is derived.
//!
//! Place in the data flow: between the scheduler and the snapshot. A sweep
//! feeds its rows into a [`TableBuilder`]; when the sweep is complete the
//! builder's [`ImageTable`] replaces the scope's table wholesale (deletions
//! and anything the time filters cannot see are corrected that way). Between
//! sweeps the changes lane and the malicious check upsert the rows they get
//! by id ([`ImageTable::upsert`]). After every change the scheduler derives an
//! immutable [`Snapshot`] ([`ImageTable::snapshot`]): namespace statistics,
//! the opt-in per-image series and the malicious images detection needs.
//!
//! Compactness: an entry is 48 bytes with its id, in one vector sorted by id
//! (no hash table, whose load factor would cost a third more). Namespaces and
//! the short texts (scan status, failure reason, severity) are interned once
//! per table. Image names, versions and digests are kept only where a figure
//! needs them: for images with malicious files (detection), and for every
//! image when per-image series are on.
//!
//! Changes that arrive while a sweep runs are remembered by id; when the
//! sweep completes, each of them is carried into the new table unless the
//! sweep saw a newer state of that image (a larger scan or update time), so a
//! long sweep never undoes fresher figures.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::time::SystemTime;

use super::aggregate::{
    ImageSeries, KNOWN_SCAN_STATUSES, MISSING_SCAN_STATUS, NamespaceStats, Snapshot, SweepCounts,
    next_snapshot_id,
};
pub use super::keys::row_key;
use super::keys::{ImageKey, NamespaceKey};
use crate::hss::RowRef;

/// Ids remembered while a sweep runs, at most: beyond that the sweep's own
/// rows win and the next sweep corrects what it missed.
pub const MAX_TOUCHED: usize = 1_000_000;

/// Texts (scan statuses, failure reasons, severities) a table interns at
/// most; further ones are counted under [`OVERFLOW_TEXT`].
const MAX_TEXTS: usize = u16::MAX as usize - 1;

/// What texts beyond [`MAX_TEXTS`] are counted under.
pub const OVERFLOW_TEXT: &str = "other";

/// What the table keeps of one image: 40 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Entry {
    /// `latest_scan_time`, epoch ms; 0 when never scanned.
    pub scan_ms: i64,
    /// `latest_update_time`, epoch ms; 0 when unknown.
    pub update_ms: i64,
    /// Interned namespace.
    ns: u32,
    /// `vul_num`.
    pub vulnerabilities: u32,
    /// `unsafe_setting_num`.
    pub unsafe_settings: u32,
    /// `malicious_file_num`.
    pub malicious_files: u32,
    /// Interned scan status + 1; 0 when missing.
    status: u16,
    /// Interned failure reason + 1; 0 when the scan did not fail.
    reason: u16,
    /// Interned severity + 1; 0 when missing.
    severity: u16,
}

impl Entry {
    /// The state's age order: a later scan or update is a newer state.
    fn version(&self) -> (i64, i64) {
        (self.scan_ms, self.update_ms)
    }
}

/// Image name, version and digest, kept only where a figure needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Names {
    image: Box<str>,
    version: Box<str>,
    digest: Box<str>,
}

impl Names {
    fn of(row: &RowRef<'_>) -> Self {
        Self {
            image: row.image_name.into(),
            version: row.image_version.into(),
            digest: row.image_digest.into(),
        }
    }
}

/// The interned strings of one table.
#[derive(Debug, Default, Clone)]
struct Strings {
    namespaces: Vec<NamespaceKey>,
    /// Namespace index by a hash of its key, so a row is looked up without
    /// copying its strings; a collision falls back to a scan.
    namespace_index: HashMap<u64, u32, FastHash>,
    texts: Vec<Box<str>>,
    text_index: HashMap<Box<str>, u16, FastHash>,
}

/// The hasher of the table's string indexes, which every row of a sweep
/// looks up: FxHash's word step (multiply and rotate, eight bytes at a
/// time), several times faster than SipHash on short keys. Collisions cost
/// only time: every lookup compares the keys themselves.
#[derive(Debug, Default, Clone, Copy)]
struct FastHasher(u64);

type FastHash = BuildHasherDefault<FastHasher>;

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while let Some((word, tail)) = rest.split_first_chunk::<8>() {
            self.add(u64::from_le_bytes(*word));
            rest = tail;
        }
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

fn namespace_hash(instance_name: &str, registry_name: &str, namespace: &str) -> u64 {
    let mut hasher = FastHasher::default();
    (instance_name, registry_name, namespace).hash(&mut hasher);
    hasher.finish()
}

impl Strings {
    fn find_namespace(&mut self, instance_name: &str, registry_name: &str, namespace: &str) -> u32 {
        let same = |k: &NamespaceKey| {
            k.namespace == namespace
                && k.registry_name == registry_name
                && k.instance_name == instance_name
        };
        let hash = namespace_hash(instance_name, registry_name, namespace);
        if let Some(i) = self.namespace_index.get(&hash) {
            if same(&self.namespaces[*i as usize]) {
                return *i;
            }
            // A hash collision: rare enough for a scan.
            if let Some(i) = self.namespaces.iter().position(same) {
                return u32::try_from(i).unwrap_or(u32::MAX);
            }
        }
        let i = u32::try_from(self.namespaces.len()).unwrap_or(u32::MAX);
        self.namespaces.push(NamespaceKey {
            instance_name: instance_name.to_string(),
            registry_name: registry_name.to_string(),
            namespace: namespace.to_string(),
        });
        self.namespace_index.entry(hash).or_insert(i);
        i
    }

    fn namespace(&mut self, key: &NamespaceKey) -> u32 {
        self.find_namespace(&key.instance_name, &key.registry_name, &key.namespace)
    }

    fn namespace_of(&mut self, row: &RowRef<'_>) -> u32 {
        self.find_namespace(row.instance_name, row.registry_name, row.namespace)
    }

    /// Interned `text` + 1; 0 for none.
    fn text(&mut self, text: Option<&str>) -> u16 {
        let Some(text) = text else { return 0 };
        if let Some(i) = self.text_index.get(text) {
            return *i + 1;
        }
        let text = if self.texts.len() >= MAX_TEXTS {
            OVERFLOW_TEXT
        } else {
            text
        };
        if let Some(i) = self.text_index.get(text) {
            return *i + 1;
        }
        let i = self.texts.len() as u16;
        self.texts.push(text.into());
        self.text_index.insert(text.into(), i);
        i + 1
    }

    fn text_of(&self, index: u16) -> Option<&str> {
        index
            .checked_sub(1)
            .and_then(|i| self.texts.get(usize::from(i)))
            .map(|t| &**t)
    }

    fn bytes(&self) -> usize {
        let keys: usize = self
            .namespaces
            .iter()
            .map(|k| k.instance_name.len() + k.registry_name.len() + k.namespace.len())
            .sum();
        let texts: usize = self.texts.iter().map(|t| t.len()).sum();
        // Namespace keys are held once, with an index slot each; texts twice
        // (list and index).
        keys + self.namespaces.capacity() * std::mem::size_of::<NamespaceKey>()
            + self.namespace_index.capacity() * 13
            + 2 * texts
            + self.texts.capacity() * 16
            + self.text_index.capacity() * 24
    }
}

fn clamp(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn entry_of(row: &RowRef<'_>, strings: &mut Strings) -> Entry {
    let reason = row.scan_failure_reason();
    Entry {
        scan_ms: row.latest_scan_time.unwrap_or(0),
        update_ms: row.latest_update_time.unwrap_or(0),
        ns: strings.namespace_of(row),
        vulnerabilities: clamp(row.vul_num),
        unsafe_settings: clamp(row.unsafe_setting_num),
        malicious_files: clamp(row.malicious_file_num),
        status: strings.text(row.scan_status),
        reason: strings.text((!reason.is_empty()).then_some(reason)),
        severity: strings.text(row.severity_level),
    }
}

/// Collects the rows of one sweep into a table.
#[derive(Debug)]
pub struct TableBuilder {
    strings: Strings,
    rows: Vec<(u64, Entry)>,
    names: HashMap<u64, Names>,
    keep_names: bool,
    received: u64,
}

impl TableBuilder {
    /// An empty builder; `keep_names` keeps every image's names (for
    /// per-image series), else only those of malicious images.
    pub fn new(keep_names: bool) -> Self {
        Self {
            strings: Strings::default(),
            rows: Vec::new(),
            names: HashMap::new(),
            keep_names,
            received: 0,
        }
    }

    /// Makes room for `rows` rows (the listing's `total_num`), so the vector
    /// does not grow by doubling.
    pub fn reserve(&mut self, rows: u64) {
        let rows = usize::try_from(rows).unwrap_or(0).min(4_000_000);
        self.rows
            .reserve_exact(rows.saturating_sub(self.rows.len()));
    }

    /// Adds one row; duplicates are dropped (the first one stays) when the
    /// table is built.
    pub fn add<'r>(&mut self, row: impl Into<RowRef<'r>>) {
        let row = row.into();
        self.received += 1;
        let key = row_key(&row);
        let entry = entry_of(&row, &mut self.strings);
        if self.keep_names || entry.malicious_files > 0 {
            self.names.entry(key).or_insert_with(|| Names::of(&row));
        }
        self.rows.push((key, entry));
    }

    /// Rows received so far, duplicates included.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The table of everything added, and how many rows were duplicates.
    pub fn finish(mut self) -> (ImageTable, SweepCounts) {
        // A stable sort keeps the first of equal ids first.
        self.rows.sort_by_key(|(id, _)| *id);
        let before = self.rows.len();
        self.rows.dedup_by_key(|(id, _)| *id);
        let duplicates = (before - self.rows.len()) as u64;
        self.rows.shrink_to_fit();
        if !self.keep_names {
            let rows = &self.rows;
            self.names.retain(|id, _| {
                rows.binary_search_by_key(id, |(k, _)| *k)
                    .is_ok_and(|i| rows[i].1.malicious_files > 0)
            });
        }
        self.names.shrink_to_fit();
        (
            ImageTable {
                strings: self.strings,
                rows: self.rows,
                names: self.names,
                keep_names: self.keep_names,
                touched: None,
                complete: true,
            },
            SweepCounts {
                rows: self.received,
                duplicates,
            },
        )
    }
}

/// One scope's images: a complete listing, kept current by upserts.
#[derive(Debug, Default)]
pub struct ImageTable {
    strings: Strings,
    /// Sorted by id, ids unique.
    rows: Vec<(u64, Entry)>,
    names: HashMap<u64, Names>,
    keep_names: bool,
    /// Ids changed since the running sweep started.
    touched: Option<HashSet<u64>>,
    /// Whether a complete sweep built it.
    complete: bool,
}

/// Per-namespace sums while a snapshot is built; texts by interned index.
#[derive(Default)]
struct Acc {
    known: [u64; KNOWN_SCAN_STATUSES.len()],
    other: Vec<(u16, u64)>,
    vulnerabilities: u64,
    malicious_files: u64,
    unsafe_settings: u64,
    vulnerable: u64,
    malicious: u64,
    unsafe_images: u64,
    reasons: Vec<(u16, u64)>,
    oldest_scan_ms: Option<i64>,
    severities: Vec<(u16, u64)>,
    images: u64,
}

fn bump(counts: &mut Vec<(u16, u64)>, key: u16) {
    match counts.iter_mut().find(|(k, _)| *k == key) {
        Some((_, n)) => *n += 1,
        None => counts.push((key, 1)),
    }
}

impl ImageTable {
    /// An empty table that no sweep built yet; `keep_names` as in
    /// [`TableBuilder::new`].
    pub fn empty(keep_names: bool) -> Self {
        Self {
            keep_names,
            ..Self::default()
        }
    }

    /// Whether the table keeps every image's names.
    pub fn keeps_names(&self) -> bool {
        self.keep_names
    }

    /// Whether a complete sweep built the table, so its figures stand.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Images in the table.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the table holds no image.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Bytes the table holds on the heap: entries, kept names, interned
    /// strings and the ids remembered during a sweep.
    pub fn footprint_bytes(&self) -> usize {
        let names: usize = self
            .names
            .values()
            .map(|n| n.image.len() + n.version.len() + n.digest.len())
            .sum();
        self.rows.capacity() * std::mem::size_of::<(u64, Entry)>()
            + self.names.capacity() * (8 + std::mem::size_of::<Names>() + 1)
            + names
            + self.strings.bytes()
            + self.touched.as_ref().map_or(0, |t| t.capacity() * 9)
    }

    fn find(&self, id: u64) -> Result<usize, usize> {
        self.rows.binary_search_by_key(&id, |(k, _)| *k)
    }

    /// Starts remembering the ids that change, for a sweep that starts now.
    pub fn begin_sweep(&mut self) {
        self.touched = Some(HashSet::new());
    }

    /// Stops remembering: the sweep failed.
    pub fn abort_sweep(&mut self) {
        self.touched = None;
    }

    fn touch(&mut self, id: u64) {
        if let Some(touched) = &mut self.touched {
            if touched.len() < MAX_TOUCHED {
                touched.insert(id);
            } else {
                // Too many changes during one sweep to remember: the sweep's
                // rows win, and the next sweep corrects what it missed.
                self.touched = None;
            }
        }
    }

    /// Inserts or replaces images by id (later rows of `rows` win); returns
    /// how many rows changed the table (new images, or images whose figures
    /// or times changed).
    pub fn upsert<'a, R: Into<RowRef<'a>>>(&mut self, rows: impl IntoIterator<Item = R>) -> u64 {
        let mut fresh: Vec<(u64, Entry)> = Vec::new();
        let mut applied = 0;
        for row in rows {
            let row = row.into();
            let id = row_key(&row);
            let entry = entry_of(&row, &mut self.strings);
            let changed = match self.find(id) {
                Ok(i) => {
                    let changed = self.rows[i].1 != entry;
                    self.rows[i].1 = entry;
                    changed
                }
                Err(_) => {
                    fresh.push((id, entry));
                    true
                }
            };
            if self.keep_names || entry.malicious_files > 0 {
                self.names.insert(id, Names::of(&row));
            } else {
                self.names.remove(&id);
            }
            if changed {
                // Rows the overlap reads again change nothing a running
                // sweep needs to keep.
                applied += 1;
                self.touch(id);
            }
        }
        self.merge(fresh);
        applied
    }

    /// Merges new ids into the sorted vector, in place: the later of equal
    /// ids wins.
    fn merge(&mut self, mut fresh: Vec<(u64, Entry)>) {
        if fresh.is_empty() {
            return;
        }
        fresh.sort_by_key(|(id, _)| *id);
        // Keep the last of equal ids: reverse, dedup keeps the first, reverse.
        fresh.reverse();
        fresh.dedup_by_key(|(id, _)| *id);
        fresh.reverse();
        let old = self.rows.len();
        let k = fresh.len();
        if self.rows.capacity() < old + k {
            // Grow by a sixteenth, not by doubling: a large table stays near
            // its size.
            self.rows.reserve_exact(k.max(old / 16));
        }
        self.rows.resize(old + k, (0, Entry::default()));
        let (mut i, mut j, mut w) = (old, k, old + k);
        while j > 0 {
            if i > 0 && self.rows[i - 1].0 > fresh[j - 1].0 {
                self.rows[w - 1] = self.rows[i - 1];
                i -= 1;
            } else {
                self.rows[w - 1] = fresh[j - 1];
                j -= 1;
            }
            w -= 1;
        }
    }

    /// After a complete listing of the scope's malicious images (`ids`):
    /// images the table holds as malicious that the listing left out have no
    /// malicious files any more (or are gone; the next sweep removes them).
    /// Returns how many changed.
    pub fn clear_malicious_except(&mut self, ids: &HashSet<u64>) -> u64 {
        let mut cleared = Vec::new();
        for (id, entry) in &mut self.rows {
            if entry.malicious_files > 0 && !ids.contains(id) {
                entry.malicious_files = 0;
                cleared.push(*id);
            }
        }
        for id in &cleared {
            if !self.keep_names {
                self.names.remove(id);
            }
            // Not remembered for a running sweep: an image the listing left
            // out may be gone, and must not be carried back into the table
            // a sweep builds without it.
        }
        cleared.len() as u64
    }

    /// Replaces the table by `new`, a complete sweep's, carrying over every
    /// image changed since the sweep started unless the sweep saw a newer
    /// state of it.
    pub fn replace(&mut self, mut new: ImageTable) {
        if let Some(touched) = self.touched.take() {
            let mut fresh = Vec::new();
            for id in touched {
                let Ok(i) = self.find(id) else { continue };
                let old = self.rows[i].1;
                let entry = Entry {
                    ns: new
                        .strings
                        .namespace(&self.strings.namespaces[old.ns as usize]),
                    status: new.strings.text(self.strings.text_of(old.status)),
                    reason: new.strings.text(self.strings.text_of(old.reason)),
                    severity: new.strings.text(self.strings.text_of(old.severity)),
                    ..old
                };
                let take = match new.find(id) {
                    Ok(j) => {
                        let swept = new.rows[j].1;
                        if entry.version() >= swept.version() {
                            new.rows[j].1 = entry;
                            true
                        } else {
                            false
                        }
                    }
                    Err(_) => {
                        fresh.push((id, entry));
                        true
                    }
                };
                if take {
                    match self.names.get(&id) {
                        Some(names) if new.keep_names || entry.malicious_files > 0 => {
                            new.names.insert(id, names.clone());
                        }
                        _ if entry.malicious_files == 0 && !new.keep_names => {
                            new.names.remove(&id);
                        }
                        _ => {}
                    }
                }
            }
            new.merge(fresh);
        }
        new.touched = None;
        new.complete = true;
        *self = new;
    }

    /// Every image with malicious files, with its count, for detection.
    pub fn malicious_images(&self) -> Vec<(ImageKey, u64)> {
        self.rows
            .iter()
            .filter(|(_, e)| e.malicious_files > 0)
            .map(|(id, e)| (self.image_key(*id, e), u64::from(e.malicious_files)))
            .collect()
    }

    fn image_key(&self, id: u64, entry: &Entry) -> ImageKey {
        let ns = &self.strings.namespaces[entry.ns as usize];
        let names = self.names.get(&id);
        ImageKey {
            instance_name: ns.instance_name.clone(),
            registry_name: ns.registry_name.clone(),
            namespace: ns.namespace.clone(),
            image: names.map(|n| n.image.to_string()).unwrap_or_default(),
            version: names.map(|n| n.version.to_string()).unwrap_or_default(),
            digest: names.map(|n| n.digest.to_string()).unwrap_or_default(),
        }
    }

    /// The figures of every image in the table, as one immutable snapshot:
    /// namespace statistics, per-image series (when names are kept; at most
    /// `max_image_series`, those with the most malicious files, then the
    /// most vulnerabilities) and the malicious images.
    pub fn snapshot(&self, finished_at: SystemTime, max_image_series: usize) -> Snapshot {
        let known: Vec<Option<usize>> = self
            .strings
            .texts
            .iter()
            .map(|t| KNOWN_SCAN_STATUSES.iter().position(|s| **s == **t))
            .collect();
        let mut accs: Vec<Acc> = Vec::new();
        accs.resize_with(self.strings.namespaces.len(), Acc::default);
        for (_, e) in &self.rows {
            let Some(acc) = accs.get_mut(e.ns as usize) else {
                continue;
            };
            acc.images += 1;
            match e.status.checked_sub(1) {
                Some(i) => match known.get(usize::from(i)).copied().flatten() {
                    Some(k) => acc.known[k] += 1,
                    None => bump(&mut acc.other, e.status),
                },
                None => bump(&mut acc.other, 0),
            }
            acc.vulnerabilities += u64::from(e.vulnerabilities);
            acc.malicious_files += u64::from(e.malicious_files);
            acc.unsafe_settings += u64::from(e.unsafe_settings);
            acc.vulnerable += u64::from(e.vulnerabilities > 0);
            acc.malicious += u64::from(e.malicious_files > 0);
            acc.unsafe_images += u64::from(e.unsafe_settings > 0);
            if e.reason != 0 {
                bump(&mut acc.reasons, e.reason);
            }
            if e.scan_ms > 0 {
                acc.oldest_scan_ms =
                    Some(acc.oldest_scan_ms.map_or(e.scan_ms, |o| o.min(e.scan_ms)));
            }
            if e.severity != 0 {
                bump(&mut acc.severities, e.severity);
            }
        }
        let text = |i: u16| {
            self.strings
                .text_of(i)
                .unwrap_or(MISSING_SCAN_STATUS)
                .to_string()
        };
        let namespaces = accs
            .into_iter()
            .enumerate()
            .filter(|(_, acc)| acc.images > 0)
            .map(|(i, acc)| {
                let stats = NamespaceStats {
                    known_status: acc.known,
                    other_status: acc.other.iter().map(|(k, n)| (text(*k), *n)).collect(),
                    vulnerabilities: acc.vulnerabilities,
                    malicious_files: acc.malicious_files,
                    unsafe_settings: acc.unsafe_settings,
                    vulnerable_images: acc.vulnerable,
                    malicious_images: acc.malicious,
                    unsafe_images: acc.unsafe_images,
                    scan_failures: acc.reasons.iter().map(|(k, n)| (text(*k), *n)).collect(),
                    oldest_scan_ms: acc.oldest_scan_ms,
                    by_severity: acc.severities.iter().map(|(k, n)| (text(*k), *n)).collect(),
                };
                (self.strings.namespaces[i].clone(), stats)
            })
            .collect();
        let (image_series, image_series_dropped) = if self.keep_names {
            self.image_series(max_image_series)
        } else {
            (Vec::new(), 0)
        };
        Snapshot {
            id: next_snapshot_id(),
            finished_at,
            images: self.rows.len() as u64,
            namespaces,
            image_series,
            image_series_dropped,
            malicious_images: self.malicious_images(),
        }
    }

    fn image_series(&self, max: usize) -> (Vec<ImageSeries>, u64) {
        let mut order: Vec<&(u64, Entry)> = self.rows.iter().collect();
        let dropped = order.len().saturating_sub(max) as u64;
        if order.len() > max {
            order.sort_by(|(_, a), (_, b)| {
                (b.malicious_files, b.vulnerabilities, b.unsafe_settings).cmp(&(
                    a.malicious_files,
                    a.vulnerabilities,
                    a.unsafe_settings,
                ))
            });
            order.truncate(max);
        }
        let series = order
            .into_iter()
            .map(|(id, e)| {
                let names = self.names.get(id);
                ImageSeries {
                    namespace: self.strings.namespaces[e.ns as usize].clone(),
                    image: names.map(|n| n.image.to_string()).unwrap_or_default(),
                    version: names.map(|n| n.version.to_string()).unwrap_or_default(),
                    vulnerabilities: u64::from(e.vulnerabilities),
                    malicious_files: u64::from(e.malicious_files),
                    unsafe_settings: u64::from(e.unsafe_settings),
                }
            })
            .collect();
        (series, dropped)
    }
}

/// Collects the rows of one sweep into a snapshot: a [`TableBuilder`] whose
/// table is turned into a snapshot at once, for callers that keep no table.
#[derive(Debug)]
pub struct Aggregator {
    builder: TableBuilder,
}

impl Aggregator {
    /// An empty aggregation; `image_series` keeps per-image data.
    pub fn new(image_series: bool) -> Self {
        Self {
            builder: TableBuilder::new(image_series),
        }
    }

    /// Adds one row (duplicates are dropped when the snapshot is made).
    pub fn add<'r>(&mut self, row: impl Into<RowRef<'r>>) {
        self.builder.add(row);
    }

    /// The snapshot of everything added, with the sweep's counts, keeping at
    /// most `max_image_series` per-image series (those with the most
    /// malicious files, then the most vulnerabilities).
    pub fn finish_counted(
        self,
        finished_at: SystemTime,
        max_image_series: usize,
    ) -> (Snapshot, SweepCounts) {
        let (table, counts) = self.builder.finish();
        (table.snapshot(finished_at, max_image_series), counts)
    }

    /// [`finish_counted`](Self::finish_counted) without the counts.
    pub fn finish(self, finished_at: SystemTime, max_image_series: usize) -> Snapshot {
        self.finish_counted(finished_at, max_image_series).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hss::Row;

    fn row(id: u64, ns: &str, vul: u64, mal: u64, scan: i64) -> Row {
        Row {
            id: Some(id),
            namespace: ns.into(),
            image_name: format!("img-{id}"),
            image_version: "v1".into(),
            image_digest: format!("sha256:{id:064x}"),
            scan_status: Some("success".into()),
            latest_scan_time: Some(scan),
            latest_update_time: Some(1_000),
            vul_num: vul,
            malicious_file_num: mal,
            ..Row::default()
        }
    }

    fn ns(name: &str) -> NamespaceKey {
        NamespaceKey {
            instance_name: String::new(),
            registry_name: String::new(),
            namespace: name.into(),
        }
    }

    fn built(rows: &[Row]) -> ImageTable {
        let mut builder = TableBuilder::new(false);
        for r in rows {
            builder.add(r);
        }
        builder.finish().0
    }

    #[test]
    fn an_entry_with_its_id_takes_48_bytes() {
        assert_eq!(std::mem::size_of::<(u64, Entry)>(), 48);
    }

    #[test]
    fn upserts_replace_by_id_and_add_new_images() {
        let mut table = built(&[row(1, "a", 5, 0, 10), row(3, "b", 1, 0, 10)]);
        let applied = table.upsert(&[
            row(3, "b", 9, 0, 20),
            row(2, "a", 0, 2, 20),
            row(1, "a", 5, 0, 10),
        ]);
        assert_eq!(applied, 2, "the unchanged row is not counted");
        let snap = table.snapshot(SystemTime::UNIX_EPOCH, 0);
        assert_eq!(snap.images, 3);
        assert_eq!(snap.namespaces[&ns("a")].vulnerabilities, 5);
        assert_eq!(snap.namespaces[&ns("a")].malicious_images, 1);
        assert_eq!(snap.namespaces[&ns("b")].vulnerabilities, 9);
        assert_eq!(snap.malicious_images.len(), 1);
        assert_eq!(snap.malicious_images[0].0.image, "img-2");
        let ids: Vec<u64> = table.rows.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [1, 2, 3]);
    }

    #[test]
    fn the_table_gives_the_same_figures_as_the_rows() {
        // The same rows as aggregate's own test, through the table.
        let rows = vec![
            row(1, "a", 10, 0, 5),
            Row {
                scan_status: Some("failed".into()),
                scan_failed_desc: "download_failed".into(),
                ..row(2, "a", 0, 0, 7)
            },
            Row {
                scan_status: Some("brand_new".into()),
                severity_level: Some("High".into()),
                ..row(3, "b", 1, 0, 2)
            },
            Row {
                scan_status: None,
                latest_scan_time: None,
                ..row(4, "b", 0, 0, 0)
            },
        ];
        let snap = built(&rows).snapshot(SystemTime::UNIX_EPOCH, 0);
        let a = &snap.namespaces[&ns("a")];
        assert_eq!(a.known_status, [0, 1, 0, 1, 0, 0, 0]);
        assert_eq!(a.scan_failures.get("download_failed"), Some(&1));
        assert_eq!(a.oldest_scan_ms, Some(5));
        let b = &snap.namespaces[&ns("b")];
        assert_eq!(b.other_status.get("brand_new"), Some(&1));
        assert_eq!(b.other_status.get(MISSING_SCAN_STATUS), Some(&1));
        assert_eq!(b.by_severity.get("High"), Some(&1));
        assert_eq!(b.oldest_scan_ms, Some(2));
    }

    #[test]
    fn duplicates_in_a_sweep_keep_the_first_row() {
        let mut builder = TableBuilder::new(false);
        builder.add(&row(1, "a", 5, 0, 10));
        builder.add(&row(1, "a", 7, 0, 10));
        builder.add(&row(2, "a", 1, 0, 10));
        let (table, counts) = builder.finish();
        assert_eq!(
            counts,
            SweepCounts {
                rows: 3,
                duplicates: 1
            }
        );
        assert_eq!(
            table.snapshot(SystemTime::UNIX_EPOCH, 0).namespaces[&ns("a")].vulnerabilities,
            6
        );
    }

    #[test]
    fn a_sweep_keeps_changes_it_did_not_see_and_drops_what_it_did_not_list() {
        let mut table = built(&[
            row(1, "a", 5, 0, 10),
            row(2, "a", 5, 0, 10),
            row(3, "a", 5, 0, 10),
        ]);
        table.begin_sweep();
        // While the sweep runs: image 1 is rescanned, image 4 appears.
        table.upsert(&[row(1, "a", 50, 0, 30), row(4, "a", 4, 0, 30)]);
        // The sweep saw image 1 before its rescan, image 2 after a later one,
        // and not image 3 (deleted).
        let swept = built(&[row(1, "a", 5, 0, 10), row(2, "a", 20, 0, 40)]);
        table.replace(swept);
        let snap = table.snapshot(SystemTime::UNIX_EPOCH, 0);
        assert_eq!(snap.images, 3, "1, 2 and 4; 3 is gone");
        assert_eq!(snap.namespaces[&ns("a")].vulnerabilities, 50 + 20 + 4);
    }

    #[test]
    fn a_complete_malicious_listing_clears_images_it_left_out() {
        let mut table = built(&[row(1, "a", 0, 2, 10), row(2, "a", 0, 1, 10)]);
        let cleared = table.clear_malicious_except(&HashSet::from([1]));
        assert_eq!(cleared, 1);
        let snap = table.snapshot(SystemTime::UNIX_EPOCH, 0);
        assert_eq!(snap.namespaces[&ns("a")].malicious_images, 1);
        assert_eq!(snap.malicious_images.len(), 1);
    }

    #[test]
    fn rows_without_an_id_are_told_apart_by_content() {
        let mut a = row(0, "a", 1, 0, 10);
        a.id = None;
        let b = Row {
            image_version: "v2".into(),
            ..a.clone()
        };
        let mut table = built(&[a.clone(), b]);
        assert_eq!(table.len(), 2);
        table.upsert(&[Row { vul_num: 9, ..a }]);
        assert_eq!(table.len(), 2);
        assert_eq!(
            table.snapshot(SystemTime::UNIX_EPOCH, 0).namespaces[&ns("a")].vulnerabilities,
            10
        );
    }

    #[test]
    fn per_image_series_come_from_kept_names() {
        let mut builder = TableBuilder::new(true);
        builder.add(&row(1, "a", 5, 0, 10));
        builder.add(&row(2, "a", 9, 1, 10));
        builder.add(&row(3, "a", 1, 0, 10));
        let snap = builder.finish().0.snapshot(SystemTime::UNIX_EPOCH, 2);
        let names: Vec<&str> = snap.image_series.iter().map(|s| s.image.as_str()).collect();
        assert_eq!(names, ["img-2", "img-1"]);
        assert_eq!(snap.image_series_dropped, 1);
    }

    #[test]
    fn a_sweep_drops_a_deleted_image_the_malicious_check_cleared_while_it_ran() {
        let mut table = built(&[row(1, "a", 0, 2, 10), row(2, "a", 1, 0, 10)]);
        table.begin_sweep();
        // Image 1 is deleted: the check no longer lists it.
        table.clear_malicious_except(&HashSet::new());
        let swept = built(&[row(2, "a", 1, 0, 10)]);
        table.replace(swept);
        assert_eq!(table.len(), 1, "the deleted image stays gone");
    }
}
