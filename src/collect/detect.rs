//! Detection of new malicious images, and the state file that carries the
//! baseline across restarts.
//!
//! Place in the data flow: the scheduler hands every complete listing of a
//! scope's malicious images (from the malicious lane, or from sweeps when that
//! lane is off) to the scope's [`DetectorState`]; the detections it returns
//! are logged, and its per-namespace counts become
//! `hss_swr_malicious_images_detected_total` in the metrics module. An image
//! (keyed by instance, namespace, image, version and digest) counts when it
//! appears with malicious files, or when its malicious file count rises. The
//! first listing after start only sets the baseline, unless the
//! [`StateFile`] held one; the file is written atomically (write, fsync,
//! rename) whenever the malicious set changes, by its one writer
//! ([`StateWriter`]: lanes only signal it), and a corrupt or unreadable
//! file is reported and replaced by a fresh baseline, never a crash. The file
//! also carries the request budgets' calls of the last window (written with
//! every save and at shutdown), so a restarted process does not draw 429s
//! for calls its predecessor made.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use super::keys::ImageKey;
use super::keys::NamespaceKey;
use super::{Scope, ScopeSet};
use crate::hss::{Budget, BudgetRecord};

/// A new malicious image, or one with more malicious files than before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    /// Which image.
    pub key: ImageKey,
    /// Malicious files now.
    pub files: u64,
    /// Malicious files before, when the image was known.
    pub previous: Option<u64>,
}

/// What one scope's detector knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DetectorState {
    /// Whether a baseline exists (from a first listing or the state file).
    pub baseline: bool,
    /// Malicious images of the last listing, with their file counts.
    pub images: BTreeMap<ImageKey, u64>,
    /// Detections so far, per namespace: the counter's values.
    pub detected: BTreeMap<NamespaceKey, u64>,
    /// Bumped on every change, so renderings know when to refresh.
    pub generation: u64,
}

impl DetectorState {
    /// Takes a complete listing of the scope's malicious images (images with
    /// `files == 0` are ignored) and returns what is new. The first listing
    /// without a baseline returns nothing and becomes the baseline.
    pub fn observe(
        &mut self,
        listing: impl IntoIterator<Item = (ImageKey, u64)>,
    ) -> Vec<Detection> {
        let mut current: BTreeMap<ImageKey, u64> = BTreeMap::new();
        for (key, files) in listing {
            if files > 0 {
                let entry = current.entry(key).or_default();
                *entry = (*entry).max(files);
            }
        }
        let mut detections = Vec::new();
        if self.baseline {
            for (key, files) in &current {
                let previous = self.images.get(key).copied();
                if previous.is_none_or(|p| *files > p) {
                    *self.detected.entry(key.namespace_key()).or_default() += 1;
                    detections.push(Detection {
                        key: key.clone(),
                        files: *files,
                        previous,
                    });
                }
            }
        }
        let changed = !self.baseline || current != self.images || !detections.is_empty();
        self.baseline = true;
        self.images = current;
        if changed {
            self.generation += 1;
        }
        detections
    }

    /// Namespaces with detections or current malicious images.
    pub fn namespaces(&self) -> BTreeSet<NamespaceKey> {
        self.detected
            .keys()
            .cloned()
            .chain(self.images.keys().map(ImageKey::namespace_key))
            .collect()
    }
}

/// The state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error("state file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a state file this version understands.
    #[error("state file {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The on-disk form.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileContents {
    version: u32,
    scopes: Vec<ScopeState>,
    /// Per listing API, the calls of the last window; files written before
    /// it existed have none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    budgets: BTreeMap<String, BudgetEntry>,
}

/// A budget's record in Unix milliseconds.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetEntry {
    calls_ms: Vec<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    paused_until_ms: Option<u64>,
}

/// Most calls kept per budget: more than any window's limit is of no use.
const MAX_RECORDED_CALLS: usize = 10_000;

fn to_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .unwrap_or(UNIX_EPOCH)
}

impl BudgetEntry {
    fn from_record(record: &BudgetRecord) -> Self {
        Self {
            calls_ms: record
                .calls
                .iter()
                .take(MAX_RECORDED_CALLS)
                .map(|t| to_ms(*t))
                .collect(),
            paused_until_ms: record.paused_until.map(to_ms),
        }
    }

    fn to_record(&self) -> BudgetRecord {
        BudgetRecord {
            calls: self
                .calls_ms
                .iter()
                .take(MAX_RECORDED_CALLS)
                .map(|ms| from_ms(*ms))
                .collect(),
            paused_until: self.paused_until_ms.map(from_ms),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeState {
    target: String,
    enterprise_project_id: String,
    image_type: String,
    /// The listing API; files written before it existed knew only the first.
    #[serde(default = "first_api")]
    api: String,
    images: Vec<ImageEntry>,
    detected: Vec<CountEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageEntry {
    #[serde(flatten)]
    key: ImageKey,
    files: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CountEntry {
    instance_name: String,
    #[serde(default)]
    registry_name: String,
    namespace: String,
    count: u64,
}

const FILE_VERSION: u32 = 1;

/// What a lane holds of the state file: a way to say that its scope's
/// detector changed. The [`StateWriter`] it came from does the writing.
#[derive(Debug, Clone, Default)]
pub struct StateSignal(Arc<Signal>);

#[derive(Debug, Default)]
struct Signal {
    dirty: std::sync::atomic::AtomicBool,
    wake: tokio::sync::Notify,
}

impl StateSignal {
    /// A detector changed: the state file is written soon.
    pub fn changed(&self) {
        self.0
            .dirty
            .store(true, std::sync::atomic::Ordering::Release);
        self.0.wake.notify_one();
    }

    fn take(&self) -> bool {
        self.0
            .dirty
            .swap(false, std::sync::atomic::Ordering::AcqRel)
    }
}

/// The state file's one writer: lanes only signal that a detector changed
/// ([`StateSignal::changed`]); the daemon runs [`StateWriter::run`], which
/// writes every scope's state after each signal, and one-off runs call
/// [`StateWriter::flush`]. With no file configured, signals are ignored.
#[derive(Debug)]
pub struct StateWriter {
    file: std::sync::Mutex<Option<Arc<StateFile>>>,
    scopes: Arc<ScopeSet>,
    signal: StateSignal,
}

impl StateWriter {
    /// A writer of `scopes`' states, with no file yet.
    pub fn new(scopes: Arc<ScopeSet>) -> Arc<Self> {
        Arc::new(Self {
            file: std::sync::Mutex::new(None),
            scopes,
            signal: StateSignal::default(),
        })
    }

    /// The signal lanes are given.
    pub fn signal(&self) -> StateSignal {
        self.signal.clone()
    }

    /// The file written to, if one is configured.
    pub fn file(&self) -> Option<Arc<StateFile>> {
        self.file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Writes to `file` from now on (none: writes nothing).
    pub fn set_file(&self, file: Option<Arc<StateFile>>) {
        *self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = file;
    }

    /// Writes every scope's detector state, with the budgets' calls of the
    /// last window, to the file (when one is configured).
    pub async fn save(&self) -> Result<(), StateError> {
        let Some(file) = self.file() else {
            return Ok(());
        };
        let states = self
            .scopes
            .list()
            .iter()
            .map(|h| (scope_id(&h.scope), h.detector()))
            .collect();
        file.save(states).await
    }

    /// Writes the file if a detector changed since the last write.
    pub async fn flush(&self) {
        if self.signal.take()
            && let Err(error) = self.save().await
        {
            tracing::warn!(%error, "cannot write the state file; detections since start will be counted again after a restart");
        }
    }

    /// Writes the file after every signal until `stop` is cancelled.
    pub async fn run(&self, stop: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.signal.0.wake.notified() => self.flush().await,
            }
        }
    }
}

/// Where detection state persists.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    write_lock: tokio::sync::Mutex<()>,
    /// The budgets whose calls are saved with every write, by API name.
    budgets: Vec<(String, Arc<Budget>)>,
}

fn first_api() -> String {
    crate::config::ListingApi::SwrRepository
        .as_str()
        .to_string()
}

/// The identity of a scope in the state file: target, enterprise project,
/// image type and listing API. The API is part of it because the two APIs
/// key images differently (the successor adds the registry): a target that
/// switches API starts from a fresh baseline instead of counting every
/// malicious image again.
pub type ScopeId = (String, String, String, String);

/// The state file's key for `scope`.
pub fn scope_id(scope: &Scope) -> ScopeId {
    (
        scope.target.clone(),
        scope.enterprise_project_id.clone(),
        scope.image_type.as_str().to_string(),
        scope.api.as_str().to_string(),
    )
}

impl StateFile {
    /// A state file at `path` (not read yet).
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            write_lock: tokio::sync::Mutex::new(()),
            budgets: Vec::new(),
        }
    }

    /// Saves the calls of these budgets (by API name) with every write.
    pub fn with_budgets(mut self, budgets: Vec<(String, Arc<Budget>)>) -> Self {
        self.budgets = budgets;
        self
    }

    /// The budget records the file holds, by API name; none when the file is
    /// missing, unreadable or corrupt (the caller then starts cautiously).
    pub fn load_budgets(&self) -> BTreeMap<String, BudgetRecord> {
        let Ok(text) = std::fs::read(&self.path) else {
            return BTreeMap::new();
        };
        serde_json::from_slice::<FileContents>(&text)
            .map(|contents| {
                contents
                    .budgets
                    .iter()
                    .map(|(api, entry)| (api.clone(), entry.to_record()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads every scope's baseline. A missing file is an empty map.
    pub fn load(&self) -> Result<BTreeMap<ScopeId, DetectorState>, StateError> {
        let text = match std::fs::read(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(source) => {
                return Err(StateError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let corrupt = |reason: String| StateError::Corrupt {
            path: self.path.clone(),
            reason,
        };
        let contents: FileContents =
            serde_json::from_slice(&text).map_err(|e| corrupt(e.to_string()))?;
        if contents.version != FILE_VERSION {
            return Err(corrupt(format!("unknown version {}", contents.version)));
        }
        let mut out = BTreeMap::new();
        for scope in contents.scopes {
            let state = DetectorState {
                baseline: true,
                images: scope.images.into_iter().map(|e| (e.key, e.files)).collect(),
                detected: scope
                    .detected
                    .into_iter()
                    .map(|c| {
                        (
                            NamespaceKey {
                                instance_name: c.instance_name,
                                registry_name: c.registry_name,
                                namespace: c.namespace,
                            },
                            c.count,
                        )
                    })
                    .collect(),
                generation: 1,
            };
            out.insert(
                (
                    scope.target,
                    scope.enterprise_project_id,
                    scope.image_type,
                    scope.api,
                ),
                state,
            );
        }
        Ok(out)
    }

    /// Writes every scope's state atomically: a temporary file in the same
    /// directory, flushed to disk, renamed over the old one.
    pub async fn save(&self, states: Vec<(ScopeId, DetectorState)>) -> Result<(), StateError> {
        let _guard = self.write_lock.lock().await;
        let contents = FileContents {
            version: FILE_VERSION,
            scopes: states
                .into_iter()
                .filter(|(_, state)| state.baseline)
                .map(
                    |((target, enterprise_project_id, image_type, api), state)| ScopeState {
                        target,
                        enterprise_project_id,
                        image_type,
                        api,
                        images: state
                            .images
                            .into_iter()
                            .map(|(key, files)| ImageEntry { key, files })
                            .collect(),
                        detected: state
                            .detected
                            .into_iter()
                            .map(|(ns, count)| CountEntry {
                                instance_name: ns.instance_name,
                                registry_name: ns.registry_name,
                                namespace: ns.namespace,
                                count,
                            })
                            .collect(),
                    },
                )
                .collect(),
            budgets: self
                .budgets
                .iter()
                .map(|(api, budget)| (api.clone(), BudgetEntry::from_record(&budget.record())))
                .filter(|(_, entry)| !entry.calls_ms.is_empty() || entry.paused_until_ms.is_some())
                .collect(),
        };
        let path = self.path.clone();
        let result = tokio::task::spawn_blocking(move || write_atomically(&path, &contents)).await;
        match result {
            Ok(result) => result.map_err(|source| StateError::Io {
                path: self.path.clone(),
                source,
            }),
            Err(join) => Err(StateError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(join.to_string()),
            }),
        }
    }
}

fn write_atomically(path: &Path, contents: &FileContents) -> std::io::Result<()> {
    let mut text = serde_json::to_vec_pretty(contents).map_err(std::io::Error::other)?;
    text.push(b'\n');
    crate::fsutil::write_atomically(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, image: &str) -> ImageKey {
        ImageKey {
            instance_name: String::new(),
            registry_name: String::new(),
            namespace: ns.into(),
            image: image.into(),
            version: "1.0".into(),
            digest: format!("sha256:{image}"),
        }
    }

    fn ns(name: &str) -> NamespaceKey {
        NamespaceKey {
            instance_name: String::new(),
            registry_name: String::new(),
            namespace: name.into(),
        }
    }

    #[test]
    fn the_first_listing_is_the_baseline() {
        let mut state = DetectorState::default();
        assert!(state.observe([(key("a", "x"), 2)]).is_empty());
        assert!(state.baseline);
        assert!(state.detected.is_empty());
        assert_eq!(state.namespaces(), [ns("a")].into());
    }

    #[test]
    fn new_images_and_rising_counts_are_detected() {
        let mut state = DetectorState::default();
        state.observe([(key("a", "x"), 2)]);
        let found = state.observe([(key("a", "x"), 2), (key("b", "y"), 1)]);
        assert_eq!(
            found,
            vec![Detection {
                key: key("b", "y"),
                files: 1,
                previous: None
            }]
        );
        let found = state.observe([(key("a", "x"), 5), (key("b", "y"), 1)]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].previous, Some(2));
        // A falling count is not a detection; rising back again is.
        assert!(
            state
                .observe([(key("a", "x"), 1), (key("b", "y"), 1)])
                .is_empty()
        );
        assert_eq!(
            state
                .observe([(key("a", "x"), 3), (key("b", "y"), 1)])
                .len(),
            1
        );
        assert_eq!(state.detected, [(ns("a"), 2), (ns("b"), 1)].into());
    }

    #[test]
    fn an_image_that_leaves_and_returns_counts_again() {
        let mut state = DetectorState::default();
        state.observe([(key("a", "x"), 1)]);
        assert!(state.observe([]).is_empty());
        assert_eq!(state.observe([(key("a", "x"), 1)]).len(), 1);
        // Images without malicious files are not malicious.
        assert!(
            state
                .observe([(key("a", "x"), 1), (key("a", "clean"), 0)])
                .is_empty()
        );
    }

    #[test]
    fn the_generation_moves_only_on_change() {
        let mut state = DetectorState::default();
        state.observe([(key("a", "x"), 1)]);
        let g = state.generation;
        state.observe([(key("a", "x"), 1)]);
        assert_eq!(state.generation, g);
        state.observe([(key("a", "x"), 2)]);
        assert_eq!(state.generation, g + 1);
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hss-state-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("state.json")
    }

    #[tokio::test]
    async fn state_round_trips_through_the_file() {
        let path = temp("roundtrip");
        let file = StateFile::new(path.clone());
        assert!(
            file.load().unwrap().is_empty(),
            "a missing file is an empty state"
        );
        let mut state = DetectorState::default();
        state.observe([(key("a", "x"), 2)]);
        state.observe([(key("a", "x"), 2), (key("团队 \"q\"", "y"), 1)]);
        let id = (
            "t".to_string(),
            "0".to_string(),
            "private_image".to_string(),
            "swr-repository".to_string(),
        );
        file.save(vec![(id.clone(), state.clone())]).await.unwrap();
        let loaded = file.load().unwrap();
        let back = &loaded[&id];
        assert!(back.baseline);
        assert_eq!(back.images, state.images);
        assert_eq!(back.detected, state.detected);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn files_written_before_the_api_was_recorded_belong_to_the_first_api() {
        let path = temp("before-api");
        std::fs::write(
            &path,
            r#"{"version":1,"scopes":[{"target":"t","enterprise_project_id":"0","image_type":"private_image",
               "images":[{"instance_name":"","namespace":"a","image":"x","version":"1","digest":"d","files":2}],
               "detected":[{"instance_name":"","namespace":"a","count":3}]}]}"#,
        )
        .unwrap();
        let loaded = StateFile::new(path.clone()).load().unwrap();
        let id = (
            "t".into(),
            "0".into(),
            "private_image".into(),
            "swr-repository".into(),
        );
        assert_eq!(loaded[&id].detected.values().sum::<u64>(), 3);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[tokio::test]
    async fn a_corrupt_file_is_reported_and_replaced() {
        let path = temp("corrupt");
        std::fs::write(&path, "{\"version\":1,\"scopes\":[{\"target\":").unwrap();
        let file = StateFile::new(path.clone());
        let error = file.load().unwrap_err().to_string();
        assert!(error.contains("is corrupt"), "{error}");
        std::fs::write(&path, "{\"version\":99,\"scopes\":[]}").unwrap();
        assert!(
            file.load()
                .unwrap_err()
                .to_string()
                .contains("unknown version 99")
        );
        file.save(vec![]).await.unwrap();
        assert!(file.load().unwrap().is_empty());
        let dir = path.parent().unwrap();
        assert_eq!(
            std::fs::read_dir(dir).unwrap().count(),
            1,
            "no temporary file left"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn an_unwritable_place_is_an_error_not_a_crash() {
        let file = StateFile::new(PathBuf::from(
            "/proc/hss-swr-exporter-cannot-write/state.json",
        ));
        assert!(file.save(vec![]).await.is_err());
    }
}
