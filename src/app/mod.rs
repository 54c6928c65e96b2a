//! Wiring: builds the pipeline from a configuration and runs it for each
//! subcommand (the daemon, `once`, `demo`).
//!
//! Place in the data flow: on top. It reads the [`Config`], creates one shared
//! request budget, one client per target, one scope handle per (target,
//! enterprise project, image type), the metrics over those handles and the
//! web server over the metrics, and starts the lanes. Nothing below calls back
//! into it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::collect::detect::{StateFile, StateSignal, StateWriter, scope_id};
use crate::collect::scheduler::{self, LaneContext, Settings};
use crate::collect::{ImageSource, Lane, Scope, ScopeHandle, ScopeSet};
use crate::config::{Config, ListingApi, RateLimit};
use crate::hss::{self, Budget, ClientSettings};
use crate::metrics::Metrics;
use crate::web::{self, WebState};

mod daemon;
#[cfg(feature = "simulator")]
mod demo;
mod once;

pub use daemon::*;
#[cfg(feature = "simulator")]
pub use demo::*;
pub use once::*;

/// How often the daemon renders newly published results in the background,
/// so that scrapes find them ready.
const PRERENDER_PERIOD: Duration = Duration::from_secs(1);

/// The timing bases of the pipeline that no configuration key sets: how
/// long the client backs off before a retry, and how early credentials are
/// fetched again before they expire. [`Timing::default`] is what the daemon
/// uses; tests inject shorter ones (with [`Exporter::with_timing`]) so that
/// they wait milliseconds where the daemon waits seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// First backoff before a retry; doubles each attempt.
    pub retry_base: Duration,
    /// Longest backoff before a retry.
    pub retry_cap: Duration,
    /// The least time before expiry at which IAM tokens and temporary keys
    /// are fetched again, when their own margin (a fifth of an IAM token's
    /// lifetime, half of a temporary key's) is shorter; zero by default.
    pub credential_refresh_floor: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            retry_base: hss::client::RETRY_BASE,
            retry_cap: hss::client::RETRY_CAP,
            credential_refresh_floor: Duration::ZERO,
        }
    }
}

/// One request budget per listing API: the documented quota is per API, so
/// each endpoint has its own, shared by every scope that polls it.
#[derive(Debug, Clone)]
pub struct Budgets {
    swr_repository: Arc<Budget>,
    registry_images: Arc<Budget>,
}

impl Budgets {
    /// Budgets of a new process: cautious (one call at a time until one
    /// succeeds), since the calls of a predecessor are unknown.
    fn new(limit: RateLimit) -> Self {
        Self {
            swr_repository: Budget::new(limit).cautious(),
            registry_images: Budget::new(limit).cautious(),
        }
    }

    /// Every budget with its API's name, as the state file keeps them.
    fn named(&self) -> Vec<(String, Arc<Budget>)> {
        ListingApi::ALL
            .iter()
            .map(|api| (api.as_str().to_string(), Arc::clone(self.get(*api))))
            .collect()
    }

    /// Counts the calls a predecessor recorded in the state file.
    fn restore(&self, file: &StateFile) {
        let records = file.load_budgets();
        for api in ListingApi::ALL {
            if let Some(record) = records.get(api.as_str()) {
                self.get(api).restore(record);
                tracing::info!(
                    api = api.as_str(),
                    calls = record.calls.len(),
                    "restored the calls of the last window from the state file"
                );
            }
        }
    }

    /// The budget of `api`.
    pub fn get(&self, api: ListingApi) -> &Arc<Budget> {
        match api {
            ListingApi::SwrRepository => &self.swr_repository,
            ListingApi::RegistryImages => &self.registry_images,
        }
    }

    fn set_limit(&self, limit: RateLimit) {
        for api in ListingApi::ALL {
            self.get(api).set_limit(limit);
        }
    }
}

/// Could not start or finish a subcommand.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The HTTP client could not be built.
    #[error(transparent)]
    Client(#[from] hss::Error),
    /// The metrics could not be set up.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::Error),
    /// The web server failed.
    #[error(transparent)]
    Web(#[from] web::Error),
    /// The listen address is not an address.
    #[error("invalid listen address {address:?}: {reason}")]
    ListenAddress {
        /// What was given.
        address: String,
        /// Why it was refused.
        reason: String,
    },
    /// A file or socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// Everything a scope's lanes depend on: a reload that leaves it equal keeps
/// the scope's lanes running (a sweep in progress included).
#[derive(Debug, Clone, PartialEq)]
struct LaneKey {
    target: crate::config::Target,
    settings: Settings,
    client: ClientSettings,
    stale_after: Duration,
    state_file: Option<std::path::PathBuf>,
    malicious_lane: bool,
    changes_lane: bool,
}

/// A scope's handle and what its lanes share.
type ScopeLanes = (Arc<ScopeHandle>, LaneContext);

/// The running lanes of one scope.
#[derive(Debug)]
struct Running {
    cancel: CancellationToken,
    tracker: tokio_util::task::TaskTracker,
}

/// The whole pipeline for one configuration.
pub struct Exporter {
    config: Config,
    scopes: Arc<ScopeSet>,
    metrics: Arc<Metrics>,
    budgets: Budgets,
    lanes: Vec<(Arc<ScopeHandle>, LaneContext)>,
    /// What each entry of `lanes` depends on.
    keys: Vec<LaneKey>,
    /// The lanes started by [`spawn`](Self::spawn), per scope.
    running: std::sync::Mutex<std::collections::HashMap<Scope, Running>>,
    /// The state file's one writer.
    state: Arc<StateWriter>,
    /// Backoff and refresh bases.
    timing: Timing,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("scopes", &self.lanes.len())
            .finish_non_exhaustive()
    }
}

impl Exporter {
    /// Builds every part from `config`; nothing runs yet.
    pub fn new(config: Config) -> Result<Self, Error> {
        Self::with_timing(config, Timing::default())
    }

    /// [`new`](Self::new) with other timing bases than the daemon's.
    pub fn with_timing(config: Config, timing: Timing) -> Result<Self, Error> {
        let budgets = Budgets::new(config.api_rate_limit);
        let scopes = ScopeSet::new(Vec::new());
        let metrics = Arc::new(Metrics::new(Arc::clone(&scopes), config.image_metrics)?);
        let state = StateWriter::new(Arc::clone(&scopes));
        let (lanes, keys) = build_lanes(&config, &timing, &metrics, &budgets, &state.signal())?;
        announce_apis(&config, &metrics);
        reserve_slots(&config, &budgets);
        scopes.replace(lanes.iter().map(|(h, _)| Arc::clone(h)).collect());
        state.set_file(state_file(&config, &budgets));
        if let Some(file) = state.file() {
            restore_baselines(&file, &lanes);
            budgets.restore(&file);
        }
        Ok(Self {
            config,
            scopes,
            metrics,
            budgets,
            lanes,
            keys,
            running: std::sync::Mutex::default(),
            state,
            timing,
        })
    }

    fn running(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<Scope, Running>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Switches to `config` (after a reload). A scope whose target and lane
    /// settings are unchanged keeps its lanes running, a sweep in progress
    /// included. The lanes of a changed scope are stopped (and waited for);
    /// its new lanes take over its data, lane status, image table and
    /// detection counters. Removed scopes stop. The budget keeps counting the
    /// calls already made. Returns the scopes whose lanes are to be started
    /// (with [`spawn_scopes`](Self::spawn_scopes)).
    pub async fn apply(&mut self, config: Config) -> Result<Vec<Scope>, Error> {
        let (mut lanes, keys) = build_lanes(
            &config,
            &self.timing,
            &self.metrics,
            &self.budgets,
            &self.state.signal(),
        )?;
        let mut start = Vec::new();
        for (i, (handle, context)) in lanes.iter_mut().enumerate() {
            let old = self
                .lanes
                .iter()
                .zip(&self.keys)
                .find(|((old, _), _)| old.scope == handle.scope);
            match old {
                Some(((old, old_context), old_key)) if *old_key == keys[i] => {
                    // Unchanged: the running lanes go on with their handle.
                    *handle = Arc::clone(old);
                    *context = old_context.clone();
                }
                _ => start.push(handle.scope.clone()),
            }
        }
        // Stop the lanes of every scope that is not kept, before their data
        // is carried over, so that no stopped lane writes to it afterwards.
        let stopping: Vec<Running> = {
            let mut running = self.running();
            let kept: Vec<&Scope> = lanes
                .iter()
                .map(|(h, _)| &h.scope)
                .filter(|s| !start.contains(s))
                .collect();
            let stop: Vec<Scope> = running
                .keys()
                .filter(|s| !kept.contains(s))
                .cloned()
                .collect();
            stop.iter().filter_map(|s| running.remove(s)).collect()
        };
        for run in stopping {
            run.cancel.cancel();
            run.tracker.close();
            run.tracker.wait().await;
        }
        for (handle, _) in &lanes {
            if !start.contains(&handle.scope) {
                continue;
            }
            if let Some((old, _)) = self.lanes.iter().find(|(old, _)| old.scope == handle.scope) {
                handle.carry_over(old);
            }
        }
        self.budgets.set_limit(config.api_rate_limit);
        reserve_slots(&config, &self.budgets);
        self.metrics.set_image_metrics(config.image_metrics);
        announce_apis(&config, &self.metrics);
        self.scopes
            .replace(lanes.iter().map(|(h, _)| Arc::clone(h)).collect());
        if config.state_file != self.config.state_file {
            self.state.set_file(state_file(&config, &self.budgets));
        }
        self.lanes = lanes;
        self.keys = keys;
        self.config = config;
        Ok(start)
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The metrics over this pipeline's scopes.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// The scopes.
    pub fn scopes(&self) -> Arc<ScopeSet> {
        Arc::clone(&self.scopes)
    }

    /// What the web server needs.
    pub fn web_state(&self, telemetry_path: &str) -> WebState {
        WebState {
            metrics: self.metrics(),
            scopes: self.scopes(),
            budgets: self.budgets.named(),
            telemetry_path: telemetry_path.to_string(),
            reload: None,
            lifecycle: false,
        }
    }

    /// Logs what the budget allows, once at start: the calls a minute the
    /// malicious lane needs, with a warning when that alone exceeds the budget.
    pub fn log_plan(&self) {
        let limit = self.config.api_rate_limit;
        let per_minute = limit.per_second() * 60.0;
        let malicious = self.config.malicious_interval;
        for api in ListingApi::ALL {
            let scopes = self
                .lanes
                .iter()
                .filter(|(h, _)| h.scope.api == api)
                .count();
            if scopes == 0 {
                continue;
            }
            let malicious_per_minute = if malicious.is_zero() {
                0.0
            } else {
                scopes as f64 * 60.0 / malicious.as_secs_f64()
            };
            tracing::info!(
                api = api.as_str(),
                budget = %limit,
                budget_calls_per_minute = per_minute,
                scopes,
                malicious_interval = %humantime::format_duration(malicious),
                malicious_calls_per_minute = malicious_per_minute,
                sweep_calls_per_minute = (per_minute - malicious_per_minute).max(0.0),
                poll_interval = %humantime::format_duration(self.config.poll_interval),
                "request budget plan: the malicious lane (one call per scope and round when few images are malicious) goes first; sweeps share the rest, one call per 200 images"
            );
            if !self.config.changes_interval.is_zero() {
                let round = changes_round_of(&self.config, api);
                let changes_per_minute =
                    scopes as f64 * scheduler::CHANGES_CALLS_PER_ROUND * 60.0 / round.as_secs_f64();
                tracing::info!(
                    api = api.as_str(),
                    scopes,
                    changes_interval = %humantime::format_duration(self.config.changes_interval),
                    changes_round = %humantime::format_duration(round),
                    changes_calls_per_minute = changes_per_minute,
                    malicious_check_every = %humantime::format_duration(round * scheduler::MALICIOUS_CHECK_EVERY),
                    sweep_calls_per_minute = (per_minute - changes_per_minute).max(0.0),
                    "changes lane plan: once a scope's first sweep is complete, each round asks for what was scanned (every round) and pushed (every other round) since the last look; the malicious listing becomes a check; sweeps reconcile with the rest of the budget"
                );
                if round > self.config.changes_interval {
                    tracing::warn!(
                        api = api.as_str(),
                        scopes,
                        changes_interval = %humantime::format_duration(self.config.changes_interval),
                        changes_round = %humantime::format_duration(round),
                        "the changes lane's calls for every scope do not fit in changes_interval at this budget: its rounds are stretched to changes_round, and sweeps get little budget; configure fewer scopes or a longer changes_interval"
                    );
                }
            }
            if malicious_per_minute >= per_minute {
                tracing::warn!(
                    api = api.as_str(),
                    malicious_calls_per_minute = malicious_per_minute,
                    budget_calls_per_minute = per_minute,
                    "the malicious lane alone needs the whole budget: its rounds will take longer than malicious_interval and sweeps will starve; raise malicious_interval or configure fewer scopes"
                );
            }
        }
    }

    /// Starts every lane; they stop when `cancel` fires.
    pub fn spawn(&self, cancel: &CancellationToken) -> tokio::task::JoinSet<()> {
        let mut tasks = tokio::task::JoinSet::new();
        let all: Vec<Scope> = self.lanes.iter().map(|(h, _)| h.scope.clone()).collect();
        self.spawn_scopes(cancel, &mut tasks, &all);
        tasks
    }

    /// Starts the lanes of `scopes` into `tasks`; they stop when `cancel`
    /// fires, or when a reload stops their scope.
    pub fn spawn_scopes(
        &self,
        cancel: &CancellationToken,
        tasks: &mut tokio::task::JoinSet<()>,
        scopes: &[Scope],
    ) {
        let mut running = self.running();
        for (handle, context) in self.lanes.iter().filter(|(h, _)| scopes.contains(&h.scope)) {
            let scope_cancel = cancel.child_token();
            let tracker = tokio_util::task::TaskTracker::new();
            for lane in handle.lanes() {
                tasks.spawn(tracker.track_future(scheduler::run_lane(
                    *lane,
                    Arc::clone(handle),
                    context.clone(),
                    scope_cancel.clone(),
                )));
            }
            if let Some(old) = running.insert(
                handle.scope.clone(),
                Running {
                    cancel: scope_cancel,
                    tracker,
                },
            ) {
                old.cancel.cancel();
            }
        }
    }

    /// Runs one run of `lane` in every scope that has it, together; returns
    /// whether all succeeded.
    pub async fn run_lane_once(&self, lane: Lane) -> bool {
        let mut tasks = tokio::task::JoinSet::new();
        for (handle, context) in &self.lanes {
            if handle.lanes().contains(&lane) {
                let handle = Arc::clone(handle);
                let context = context.clone();
                tasks.spawn(async move { scheduler::run_lane_once(lane, &handle, &context).await });
            }
        }
        let mut all = true;
        while let Some(result) = tasks.join_next().await {
            all &= result.unwrap_or(false);
        }
        self.state.flush().await;
        all
    }

    /// Runs every lane of every scope once (the malicious lane first, so its
    /// run sets the baseline), scopes together; returns whether all succeeded.
    pub async fn run_once(&self) -> bool {
        let mut tasks = tokio::task::JoinSet::new();
        for (handle, context) in &self.lanes {
            let handle = Arc::clone(handle);
            let context = context.clone();
            tasks.spawn(async move {
                let mut ok = true;
                for lane in [Lane::Malicious, Lane::Sweep] {
                    if handle.lanes().contains(&lane) {
                        ok &= scheduler::run_lane_once(lane, &handle, &context).await;
                    }
                }
                ok
            });
        }
        let mut all = true;
        while let Some(result) = tasks.join_next().await {
            all &= result.unwrap_or(false);
        }
        self.state.flush().await;
        all
    }

    /// Writes the state file (baselines and the budgets' calls of the last
    /// window), when one is configured: at shutdown, so the next process
    /// knows what this one sent.
    pub async fn persist(&self) {
        if let Err(error) = self.state.save().await {
            tracing::warn!(%error, "cannot write the state file at shutdown");
        }
    }
}

/// Builds one client per target and one scope handle (with its lane
/// context) per target, enterprise project and image type.
fn build_lanes(
    config: &Config,
    timing: &Timing,
    metrics: &Metrics,
    budgets: &Budgets,
    state: &StateSignal,
) -> Result<(Vec<ScopeLanes>, Vec<LaneKey>), Error> {
    let http = hss::client::http_client(config.request_timeout)?;
    let api = metrics.api();
    let client_settings = ClientSettings {
        request_timeout: config.request_timeout,
        max_retries: config.max_retries,
        max_response_bytes: config.max_response_bytes,
        retry_base: timing.retry_base,
        retry_cap: timing.retry_cap,
    };
    let malicious_lane = !config.malicious_interval.is_zero();
    let changes_lane = !config.changes_interval.is_zero();
    // The budget left for sweeps of one API, for the expected sweep time.
    let sweep_calls_per_second = |listing: ListingApi| {
        let scopes = scopes_of(config, listing);
        let rate = config.api_rate_limit.per_second();
        let lanes_per_second = if changes_lane {
            let round = changes_round_of(config, listing);
            scopes as f64 * scheduler::CHANGES_CALLS_PER_ROUND / round.as_secs_f64()
        } else if malicious_lane {
            scopes as f64 / config.malicious_interval.as_secs_f64()
        } else {
            0.0
        };
        (rate - lanes_per_second).max(rate / 100.0)
    };
    let mut lanes: Vec<(Arc<ScopeHandle>, LaneContext)> = Vec::new();
    let mut keys = Vec::new();
    // Each API's scopes take turns asking for pushes.
    let mut position = [0u64; 2];
    for target in &config.targets {
        api.init_target(&target.name);
        let target_settings = target_settings(target);
        let client: Arc<dyn ImageSource> = Arc::new(hss::Client::new(
            &target_settings,
            http.clone(),
            hss::auth::from_config(
                &target.credentials,
                &http,
                &target_settings,
                timing.credential_refresh_floor,
            ),
            Arc::clone(budgets.get(target.api)),
            api.clone(),
            client_settings,
        ));
        let context = LaneContext {
            source: client,
            settings: Settings {
                poll_interval: config.poll_interval,
                malicious_interval: config.malicious_interval,
                reservation_lead: config.api_rate_limit.window,
                sweep_calls_per_second: sweep_calls_per_second(target.api),
                page_size: config.page_size,
                concurrency: config.concurrency,
                image_metrics: config.image_metrics,
                max_image_series: config.max_image_series,
                changes_round: changes_round_of(config, target.api),
                changes_overlap: config.changes_overlap,
            },
            state: state.clone(),
        };
        for enterprise_project_id in &target.enterprise_project_ids {
            for image_type in &target.image_types {
                let handle = ScopeHandle::with_lanes(
                    Scope {
                        target: target.name.clone(),
                        enterprise_project_id: enterprise_project_id.clone(),
                        image_type: *image_type,
                        latest_version_only: target.latest_version_only,
                        api: target.api,
                    },
                    config.stale_after,
                    malicious_lane,
                    changes_lane,
                    config.image_metrics,
                );
                let turn = &mut position[usize::from(target.api == ListingApi::RegistryImages)];
                let handle = handle.staggered(*turn);
                *turn += 1;
                keys.push(LaneKey {
                    // The target as this scope sees it: the other image types
                    // and enterprise projects of the target are other scopes.
                    target: crate::config::Target {
                        image_types: vec![*image_type],
                        enterprise_project_ids: vec![enterprise_project_id.clone()],
                        ..target.clone()
                    },
                    // The sweeps' share of the budget only feeds a log line;
                    // a scope more or less elsewhere restarts nothing here.
                    settings: Settings {
                        sweep_calls_per_second: 0.0,
                        ..context.settings
                    },
                    client: client_settings,
                    stale_after: config.stale_after,
                    state_file: config.state_file.clone(),
                    malicious_lane,
                    changes_lane,
                });
                lanes.push((handle, context.clone()));
            }
        }
    }
    Ok((lanes, keys))
}

/// What the HSS client of a configured target needs to know about it.
fn target_settings(target: &crate::config::Target) -> hss::TargetSettings {
    hss::TargetSettings {
        name: target.name.clone(),
        region: target.region.clone(),
        project_id: target.project_id.clone(),
        endpoint: target.endpoint.clone(),
        iam_endpoint: target.iam_endpoint.clone(),
        api: target.api,
    }
}

/// Keeps one slot of every budget window per scope whose malicious or
/// changes lane must run on time, out of reach of sweep pages.
fn reserve_slots(config: &Config, budgets: &Budgets) {
    let lanes = !config.changes_interval.is_zero() || !config.malicious_interval.is_zero();
    for api in ListingApi::ALL {
        let scopes = if lanes { scopes_of(config, api) } else { 0 };
        budgets
            .get(api)
            .set_reserve(u32::try_from(scopes).unwrap_or(u32::MAX));
    }
}

/// The scopes whose targets poll `listing`.
fn scopes_of(config: &Config, listing: ListingApi) -> usize {
    config
        .targets
        .iter()
        .filter(|t| t.api == listing)
        .map(|t| t.enterprise_project_ids.len() * t.image_types.len())
        .sum()
}

/// The changes lane's round for the scopes of `listing`: `changes_interval`,
/// stretched so that their changes calls fit the budget.
fn changes_round_of(config: &Config, listing: ListingApi) -> std::time::Duration {
    scheduler::changes_round(
        config.changes_interval,
        scopes_of(config, listing),
        config.api_rate_limit.per_second(),
    )
}

/// Says which API each target polls: `hss_swr_target_info` (and records the
/// lanes' intervals, `hss_swr_poll_interval_seconds`), and a warning
/// for every target still on the deprecated endpoint.
fn announce_apis(config: &Config, metrics: &Metrics) {
    metrics.set_max_namespaces(config.max_namespaces);
    metrics.set_poll_intervals(&[
        (Lane::Sweep, config.poll_interval),
        (Lane::Malicious, config.malicious_interval),
        (Lane::Changes, config.changes_interval),
    ]);
    metrics.set_targets(
        config
            .targets
            .iter()
            .map(|t| (t.name.as_str(), t.api.as_str())),
    );
    for target in config
        .targets
        .iter()
        .filter(|t| t.api == ListingApi::SwrRepository)
    {
        tracing::warn!(
            target_name = %target.name,
            api = target.api.as_str(),
            "this target polls the swr-repository listing API, which Huawei marks deprecated in favour of \
             registry-images; to switch, set `api: registry-images` in the target: every metric keeps its name \
             and figures, namespace series gain the registry_name label"
        );
    }
}

/// The state file `config` names, saving `budgets`' calls with every write.
fn state_file(config: &Config, budgets: &Budgets) -> Option<Arc<StateFile>> {
    config
        .state_file
        .as_ref()
        .map(|path| Arc::new(StateFile::new(path.clone()).with_budgets(budgets.named())))
}

/// Loads the baselines the state file holds into the matching scopes; a
/// corrupt or unreadable file is reported and left to be replaced.
fn restore_baselines(file: &StateFile, lanes: &[(Arc<ScopeHandle>, LaneContext)]) {
    match file.load() {
        Ok(mut states) => {
            let mut restored = 0;
            for (handle, _) in lanes {
                if let Some(state) = states.remove(&scope_id(&handle.scope)) {
                    handle.commit(|p| p.detector = Arc::new(state));
                    restored += 1;
                }
            }
            tracing::info!(
                path = %file.path().display(),
                scopes = restored,
                "restored detection baselines from the state file"
            );
        }
        Err(error) => tracing::warn!(
            %error,
            "cannot use the state file; starting from a fresh baseline, and the file will be replaced"
        ),
    }
}
