//! Fault injection: the exporter daemon against two simulators on loopback
//! ports, one of which misbehaves. Each case checks what an operator sees
//! (`/metrics`, `/status`, the log), and that:
//!
//! - the daemon stays up: `/-/healthy` and `/metrics` answer at every look;
//! - the affected lanes show `hss_swr_up == 0`, with the reason in `/status`
//!   and in a log line;
//! - unaffected scopes (the other simulator's target, the other enterprise
//!   project) keep publishing fresh sweeps;
//! - nothing partial is ever published: at every look, each scope's
//!   namespace figures equal those of one complete version of the
//!   simulator's data (the data changes while the fault is on, so a mix of
//!   pages would show);
//! - after the fault clears, the published numbers match the simulator's
//!   data again;
//! - budget fidelity: over the whole run, both simulators together never
//!   received more than the budget in any window (refused calls included),
//!   with each simulator's quota equal to the exporter's budget, and every
//!   429 was an injected one.
//!
//! Waits poll a condition until a generous deadline; nothing asserts on
//! elapsed time.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::common::*;
use hss_swr_exporter::collect::Lane;
use hss_swr_exporter::simulator::{
    Call, Faults, IamUser, Quota, SimConfig, SimImage, Simulator, max_calls_in_window,
};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The budget window of every case (the simulators' quota window too). The
/// rig runs on half-second windows and lane intervals: the daemon's time
/// compressed, so that a case waits half as long for the same events.
const WINDOW: Duration = Duration::from_millis(500);
/// Calls per window for most cases: sweeps of both targets need about 16 a
/// window, so the budget is close to saturated.
const LIMIT: u32 = 25;
/// How long a wait may last before the case fails.
const DEADLINE: Duration = Duration::from_secs(90);
/// The image type every case lists.
const TYPE: &str = "private_image";
/// IAM user of the token case.
const IAM_DOMAIN: &str = "acme";
const IAM_USER: &str = "exporter";
const IAM_PASSWORD: &str = "iam-password-for-faults";
/// The least lifetime left when the daemon fetches a token again.
const REFRESH_FLOOR: Duration = Duration::from_millis(700);
/// Padding that makes every page larger than the body cap.
const PAD: usize = 2000;

// ---------------------------------------------------------------------------
// Log capture: every test of this file shares one subscriber writing JSON
// lines (the daemon's `--log.format=json`) into memory; a case reads the lines
// of its own target name.

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "warn,hss_swr_exporter=info",
            ))
            .with_writer(|| LogWriter)
            .event_format(hss_swr_exporter::logging::Lines(
                hss_swr_exporter::logging::Format::Json,
            ))
            .try_init();
    });
}

/// The log lines that name `target`.
fn logs_of(target: &str) -> Vec<Value> {
    let text = String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned();
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["target"] == target)
        .collect()
}

// ---------------------------------------------------------------------------
// Simulators that can be stopped and started again on the same address.

struct Sim {
    sim: Simulator,
    addr: SocketAddr,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Sim {
    async fn start(sim: Simulator, addr: SocketAddr) -> Sim {
        let mut listener = None;
        for _ in 0..100 {
            match TcpListener::bind(addr).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let listener = listener.unwrap_or_else(|| panic!("cannot bind {addr} again"));
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(sim.clone().serve(listener, stop.clone().cancelled_owned()));
        Sim {
            sim,
            addr,
            stop,
            task: Some(task),
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving (the port is free afterwards) and returns the calls the
    /// simulator received.
    async fn stop(mut self) -> Vec<Call> {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
        self.sim.stats().calls
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A simulator with small fixed data whose quota equals the budget.
fn sim_config_with(seed: u64, limit: u32) -> SimConfig {
    SimConfig {
        seed,
        credentials: vec![(AK.to_string(), SK.to_string())],
        quota: Some(Quota {
            calls: limit,
            window: WINDOW,
        }),
        ..sim_config(700, 6)
    }
}

// ---------------------------------------------------------------------------
// What a scope publishes, reduced to figures that can be compared.

/// Per (instance, namespace): vulnerabilities, unsafe settings, vulnerable
/// images, unsafe images, images.
type Figures = BTreeMap<(String, String), [u64; 5]>;

fn expected_figures(images: &[SimImage], ep: &str) -> Figures {
    expected(images, TYPE, ep)
        .into_iter()
        .map(|(key, e)| {
            let row = [
                e.vulnerabilities,
                e.unsafe_settings,
                e.vulnerable_images,
                e.unsafe_images,
                e.images,
            ];
            (key, row)
        })
        .collect()
}

fn published_figures(metrics: &Exposition, target: &str, ep: &str) -> Figures {
    let scope = [
        ("target", target),
        ("enterprise_project_id", ep),
        ("image_type", TYPE),
    ];
    let mut out = Figures::new();
    for sample in metrics.find("hss_swr_vulnerabilities", &scope) {
        let instance = sample.labels["instance_name"].clone();
        let namespace = sample.labels["namespace"].clone();
        let mut labels = scope.to_vec();
        labels.push(("instance_name", &instance));
        labels.push(("namespace", &namespace));
        let value = |name: &str| metrics.value(name, &labels) as u64;
        let row = [
            sample.value as u64,
            value("hss_swr_unsafe_settings"),
            value("hss_swr_vulnerable_images"),
            value("hss_swr_unsafe_images"),
            metrics.sum("hss_swr_images", &labels) as u64,
        ];
        out.insert((instance.clone(), namespace.clone()), row);
    }
    out
}

// ---------------------------------------------------------------------------
// One look at the daemon, as an operator (or Prometheus) takes it.

struct Obs {
    metrics: Exposition,
    status: Value,
}

impl Obs {
    fn up(&self, target: &str, ep: &str, lane: &str) -> Option<f64> {
        let found = self.metrics.find(
            "hss_swr_up",
            &[
                ("target", target),
                ("enterprise_project_id", ep),
                ("image_type", TYPE),
                ("lane", lane),
            ],
        );
        found.first().map(|s| s.value)
    }

    fn lane(&self, target: &str, ep: &str, lane: &str) -> &Value {
        let scope = self.status["scopes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["target"] == target && s["enterprise_project_id"] == ep)
            .unwrap_or_else(|| panic!("no scope {target}/{ep} in /status"));
        scope["lanes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["lane"] == lane)
            .unwrap_or_else(|| panic!("no lane {lane} of {target}/{ep} in /status"))
    }

    fn last_error(&self, target: &str, ep: &str, lane: &str) -> String {
        self.lane(target, ep, lane)["last_error"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    fn last_success(&self, target: &str, ep: &str, lane: &str) -> f64 {
        self.lane(target, ep, lane)["last_success"]
            .as_f64()
            .unwrap_or(0.0)
    }

    fn down_with(&self, target: &str, ep: &str, lane: &str, reason: &str) -> bool {
        self.up(target, ep, lane) == Some(0.0)
            && self.lane(target, ep, lane)["state"] == "failed"
            && self.last_error(target, ep, lane).contains(reason)
    }

    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.metrics.sum(name, labels)
    }

    fn paused_seconds(&self) -> f64 {
        // The budget of the listing API the targets use.
        let budgets = self.status["budgets"].as_array().unwrap();
        let budget = budgets
            .iter()
            .find(|b| b["api"] == "swr-repository")
            .unwrap_or(&budgets[0]);
        budget["paused_seconds"].as_f64().unwrap_or(0.0)
    }
}

// ---------------------------------------------------------------------------
// The rig: a "faulty" target on one simulator, a "healthy" one on another,
// one daemon polling both under one budget.

/// One scope the rig watches.
#[derive(Clone)]
struct Watched {
    target: String,
    ep: String,
    on_faulty: bool,
}

struct Options {
    /// The faulty target's name, unique per case (log lines are told apart
    /// by it).
    name: &'static str,
    /// Enterprise projects of the faulty target.
    eps: &'static [&'static str],
    /// Extra top-level configuration lines.
    extra: &'static str,
    /// Budget (and quota) calls per window.
    limit: u32,
    /// IAM password credentials for the faulty target, instead of AK/SK.
    iam: bool,
    /// Changes to the faulty simulator's configuration.
    faulty_sim: fn(&mut SimConfig),
}

impl Default for Options {
    fn default() -> Self {
        Options {
            name: "faulty",
            eps: &["0"],
            extra: "",
            limit: LIMIT,
            iam: false,
            faulty_sim: |_| {},
        }
    }
}

struct Rig {
    name: String,
    limit: u32,
    faulty_config: SimConfig,
    faulty: Option<Sim>,
    healthy: Sim,
    /// Calls received by faulty simulators that were stopped.
    retired: Vec<Call>,
    exporter: Option<RunningExporter>,
    client: reqwest::Client,
    watched: Vec<Watched>,
    /// The faulty simulator's data before the last change, and now.
    faulty_prev: Vec<SimImage>,
    faulty_cur: Vec<SimImage>,
    healthy_images: Vec<SimImage>,
    /// Ranges of the faulty simulator's call log while 429s were injected.
    throttled: Vec<(usize, usize)>,
    throttle_from: Option<usize>,
}

impl Rig {
    async fn start(options: Options) -> Rig {
        capture_logs();
        let mut faulty_config = sim_config_with(7, options.limit);
        if options.iam {
            faulty_config.iam_users = vec![IamUser::new(IAM_DOMAIN, IAM_USER, IAM_PASSWORD)];
        }
        (options.faulty_sim)(&mut faulty_config);
        let faulty = Sim::start(Simulator::new(faulty_config.clone()), loopback()).await;
        let healthy = Sim::start(
            Simulator::new(sim_config_with(8, options.limit)),
            loopback(),
        )
        .await;
        let name = options.name;
        let eps = options
            .eps
            .iter()
            .map(|ep| format!("'{ep}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let credentials = if options.iam {
            format!(
                "    iam_endpoint: {}\n    credentials: {{iam: {{domain_name: {IAM_DOMAIN}, user_name: {IAM_USER}, password: {IAM_PASSWORD}}}}}\n",
                faulty.endpoint()
            )
        } else {
            String::new()
        };
        let extra = options.extra;
        let request_timeout = if extra.contains("request_timeout:") {
            ""
        } else {
            "request_timeout: 5s\n"
        };
        let yaml = format!(
            "api_rate_limit: {limit}/500ms
{request_timeout}max_retries: 2
page_size: 50
concurrency: 2
poll_interval: 500ms
malicious_interval: 250ms
changes_interval: 0
stale_after: 1h
{extra}
credentials: {{access_key: {AK}, secret_key: {SK}}}
targets:
  - name: {name}
    region: cn-north-4
    project_id: {PROJECT}
    endpoint: {faulty}
    enterprise_project_ids: [{eps}]
    image_types: [{TYPE}]
{credentials}  - name: {name}-ok
    region: cn-north-4
    project_id: {PROJECT}
    endpoint: {healthy}
    enterprise_project_ids: ['0']
    image_types: [{TYPE}]
",
            limit = options.limit,
            faulty = faulty.endpoint(),
            healthy = healthy.endpoint(),
        );
        let mut watched: Vec<Watched> = options
            .eps
            .iter()
            .map(|ep| Watched {
                target: name.to_string(),
                ep: ep.to_string(),
                on_faulty: true,
            })
            .collect();
        watched.push(Watched {
            target: format!("{name}-ok"),
            ep: "0".to_string(),
            on_faulty: false,
        });
        let faulty_images = faulty.sim.images();
        let healthy_images = healthy.sim.images();
        // Retries back off tens of milliseconds, not seconds; credentials
        // are fetched again with 700 ms of their lifetime left.
        let exporter = start_exporter_timed(&yaml, fast_timing(REFRESH_FLOOR)).await;
        let rig = Rig {
            name: name.to_string(),
            limit: options.limit,
            faulty_config,
            faulty: Some(faulty),
            healthy,
            retired: Vec::new(),
            exporter: Some(exporter),
            client: http(),
            watched,
            faulty_prev: faulty_images.clone(),
            faulty_cur: faulty_images,
            healthy_images,
            throttled: Vec::new(),
            throttle_from: None,
        };
        let scopes = rig.exporter().scopes.clone();
        eventually("every lane of every scope has run", || {
            all_lanes_ran(&scopes)
        })
        .await;
        rig.until("every lane is up and every scope published", |rig, obs| {
            rig.all_up_and_current(obs)
        })
        .await;
        rig
    }

    fn exporter(&self) -> &RunningExporter {
        self.exporter.as_ref().unwrap()
    }

    fn sim(&self) -> &Simulator {
        &self.faulty.as_ref().expect("the faulty simulator runs").sim
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.exporter().url)
    }

    fn faulty_scopes(&self) -> Vec<Watched> {
        self.watched
            .iter()
            .filter(|w| w.on_faulty)
            .cloned()
            .collect()
    }

    /// Whether `published` is what a complete sweep of the scope can show:
    /// every row counted once, each page from one version of the data. The
    /// data only ever changes by adding 1000 to every row's vulnerability
    /// count, so a sweep whose pages straddle a change (which a real sweep
    /// over an hour does too) shows exact image counts and a vulnerability
    /// sum between the two versions, in steps of 1000; a missing or doubled
    /// page shows as wrong image counts.
    fn is_a_complete_sweep(&self, w: &Watched, published: &Figures) -> bool {
        if !w.on_faulty {
            return *published == expected_figures(&self.healthy_images, &w.ep);
        }
        let prev = expected_figures(&self.faulty_prev, &w.ep);
        let cur = expected_figures(&self.faulty_cur, &w.ep);
        if *published == prev || *published == cur {
            return true;
        }
        published.len() == cur.len()
            && published.iter().all(|(key, got)| {
                let (Some(old), Some(new)) = (prev.get(key), cur.get(key)) else {
                    return false;
                };
                let between =
                    |i: usize| old[i].min(new[i]) <= got[i] && got[i] <= old[i].max(new[i]);
                between(0)
                    && got[0].abs_diff(old[0]) % 1000 == 0
                    && between(2)
                    && got[1] == new[1]
                    && got[3] == new[3]
                    && got[4] == new[4]
            })
    }

    fn current(&self, w: &Watched) -> Figures {
        if w.on_faulty {
            expected_figures(&self.faulty_cur, &w.ep)
        } else {
            expected_figures(&self.healthy_images, &w.ep)
        }
    }

    /// One look, with the invariants every look must satisfy.
    async fn observe(&self) -> Obs {
        let healthy = self.client.get(self.url("/-/healthy")).send().await;
        assert_eq!(
            healthy.expect("the daemon answers /-/healthy").status(),
            200
        );
        let response = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("the daemon answers /metrics");
        assert_eq!(response.status(), 200);
        // Parsing checks every line of the exposition.
        let metrics = Exposition::parse(&response.text().await.unwrap());
        let status: Value = self
            .client
            .get(self.url("/status"))
            .send()
            .await
            .expect("the daemon answers /status")
            .json()
            .await
            .expect("/status is JSON");
        for w in &self.watched {
            let published = published_figures(&metrics, &w.target, &w.ep);
            assert!(
                self.is_a_complete_sweep(w, &published),
                "{}/{} published figures of no complete sweep: {published:?}\nexpected: {:?}",
                w.target,
                w.ep,
                self.current(w)
            );
        }
        for scope in status["scopes"].as_array().unwrap() {
            for lane in scope["lanes"].as_array().unwrap() {
                if lane["state"] == "failed" {
                    assert!(
                        lane["last_error"].as_str().is_some_and(|e| !e.is_empty()),
                        "a failed lane names its reason: {lane}"
                    );
                }
            }
        }
        assert!(
            !metrics.text.contains(SK) && !status.to_string().contains(SK),
            "no secret in /metrics or /status"
        );
        Obs { metrics, status }
    }

    /// Looks until `check` holds, checking the invariants at every look.
    async fn until(&self, what: &str, mut check: impl FnMut(&Rig, &Obs) -> bool) -> Obs {
        let started = std::time::Instant::now();
        loop {
            let obs = self.observe().await;
            if check(self, &obs) {
                return obs;
            }
            if started.elapsed() > DEADLINE {
                panic!("timed out waiting for: {what}\n/status: {:#}", obs.status);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every lane up and every scope publishing its current data.
    fn all_up_and_current(&self, obs: &Obs) -> bool {
        self.watched.iter().all(|w| {
            ["malicious", "sweep"]
                .iter()
                .all(|lane| obs.up(&w.target, &w.ep, lane) == Some(1.0))
                && published_figures(&obs.metrics, &w.target, &w.ep) == self.current(w)
        })
    }

    /// Changes the faulty simulator's data (every vulnerability count), so
    /// that a sweep mixing pages from before and after would show.
    fn change_data(&mut self) {
        let mut images = self.sim().images();
        for image in &mut images {
            image.vul_num += 1000;
        }
        self.sim().set_images(images.clone());
        self.faulty_prev = std::mem::replace(&mut self.faulty_cur, images);
    }

    fn start_throttling(&mut self) {
        self.throttle_from = Some(self.sim().stats().calls.len());
    }

    fn stop_throttling(&mut self) {
        let from = self.throttle_from.take().expect("throttling started");
        self.throttled.push((from, self.sim().stats().calls.len()));
    }

    /// After a fault is applied: the data changes, then every lane in
    /// `lanes` of the scopes in `eps` goes down with `reason` in `/status`
    /// and the log, the previous result stays published with its timestamp,
    /// and every other scope keeps publishing fresh sweeps.
    async fn goes_down(&mut self, eps: &[&str], lanes: &[&str], reason: &str) -> Obs {
        self.change_data();
        let name = self.name.clone();
        let down = self
            .until(
                &format!("{lanes:?} of {name} {eps:?} down: {reason}"),
                |_, obs| {
                    eps.iter().all(|ep| {
                        lanes
                            .iter()
                            .all(|lane| obs.down_with(&name, ep, lane, reason))
                    })
                },
            )
            .await;
        // The previous result stays, whole, with its old timestamp.
        for ep in eps {
            if lanes.contains(&"sweep") {
                assert_eq!(
                    published_figures(&down.metrics, &name, ep),
                    expected_figures(&self.faulty_prev, ep),
                    "{name}/{ep}: the last complete sweep stays published"
                );
            }
        }
        // Unaffected scopes keep fresh data: a sweep that ends after the
        // fault was seen, while the fault is still on.
        let unaffected: Vec<Watched> = self
            .watched
            .iter()
            .filter(|w| !(w.target == name && eps.contains(&w.ep.as_str())))
            .cloned()
            .collect();
        let before: Vec<f64> = unaffected
            .iter()
            .map(|w| down.last_success(&w.target, &w.ep, "sweep"))
            .collect();
        let stamps: Vec<(String, f64)> = eps
            .iter()
            .flat_map(|ep| {
                lanes
                    .iter()
                    .map(|lane| (format!("{ep}/{lane}"), down.last_success(&name, ep, lane)))
                    .collect::<Vec<_>>()
            })
            .collect();
        let fresh = self
            .until("unaffected scopes finish a new sweep", |_, obs| {
                unaffected.iter().zip(&before).all(|(w, t)| {
                    obs.up(&w.target, &w.ep, "sweep") == Some(1.0)
                        && obs.last_success(&w.target, &w.ep, "sweep") > *t
                })
            })
            .await;
        for ep in eps {
            for lane in lanes {
                assert!(
                    fresh.down_with(&name, ep, lane, reason),
                    "{name}/{ep} {lane} is still down"
                );
                let stamp = stamps
                    .iter()
                    .find(|(k, _)| *k == format!("{ep}/{lane}"))
                    .unwrap()
                    .1;
                assert_eq!(
                    fresh.last_success(&name, ep, lane),
                    stamp,
                    "{name}/{ep} {lane}: a failed run keeps the last success time"
                );
                let labels = [
                    ("target", name.as_str()),
                    ("enterprise_project_id", *ep),
                    ("image_type", TYPE),
                    ("lane", *lane),
                ];
                assert_eq!(
                    fresh
                        .metrics
                        .value("hss_swr_last_success_timestamp_seconds", &labels)
                        .round(),
                    stamp.round()
                );
            }
        }
        // The log tells the same.
        let logged = logs_of(&name).iter().any(|line| {
            line["msg"] == "lane run failed; the previous result stays published"
                && line["level"] == "warn"
                && lanes.iter().any(|lane| line["lane"] == *lane)
                && line["error"].as_str().is_some_and(|e| e.contains(reason))
        });
        assert!(logged, "a warning with the reason {reason:?} was logged");
        fresh
    }

    /// After a fault is applied that the exporter rides out: the data
    /// changes, and the new data is published in full.
    async fn rides_out(&mut self) -> Obs {
        self.change_data();
        let name = self.name.clone();
        let faulty = self.faulty_scopes();
        self.until(&format!("{name} publishes the changed data"), |rig, obs| {
            faulty.iter().all(|w| {
                obs.up(&w.target, &w.ep, "sweep") == Some(1.0)
                    && published_figures(&obs.metrics, &w.target, &w.ep) == rig.current(w)
            })
        })
        .await
    }

    /// Clears the fault; every lane comes back up with the current data.
    async fn recovers(&mut self) -> Obs {
        let obs = self
            .until("every lane recovers with the current data", |rig, obs| {
                rig.all_up_and_current(obs)
            })
            .await;
        for w in &self.watched {
            let images = if w.on_faulty {
                &self.faulty_cur
            } else {
                &self.healthy_images
            };
            assert_scope_matches(
                &obs.metrics,
                &w.target,
                &w.ep,
                TYPE,
                &expected(images, TYPE, &w.ep),
            );
        }
        let recovered = logs_of(&self.name)
            .iter()
            .any(|line| line["msg"] == "lane recovered");
        let failed_before = obs.counter(
            "hss_swr_poll_failures_total",
            &[("target", self.name.as_str())],
        ) > 0.0;
        assert!(
            recovered || !failed_before,
            "a lane that failed logs its recovery"
        );
        obs
    }

    /// Ends the case: budget fidelity over the whole run, and the daemon
    /// shuts down cleanly.
    async fn finish(mut self) {
        let mut calls = std::mem::take(&mut self.retired);
        let faulty_calls = match self.faulty.take() {
            Some(sim) => sim.sim.stats().calls,
            None => Vec::new(),
        };
        let healthy_calls = self.healthy.sim.stats().calls;
        for (i, call) in faulty_calls.iter().enumerate() {
            if call.status == 429 {
                assert!(
                    self.throttled
                        .iter()
                        .any(|(from, to)| (*from..*to).contains(&i)),
                    "a 429 the exporter caused itself: {call:?}"
                );
            }
        }
        assert_eq!(
            healthy_calls.iter().filter(|c| c.status == 429).count(),
            0,
            "the healthy simulator never throttled"
        );
        calls.extend(faulty_calls);
        calls.extend(healthy_calls);
        let busiest = max_calls_in_window(&calls, WINDOW);
        assert!(
            busiest <= self.limit as usize,
            "{busiest} calls in one window, budget {}",
            self.limit
        );
        if let Some(exporter) = self.exporter.take() {
            exporter.stop().await;
        }
    }
}

// ---------------------------------------------------------------------------
// The cases.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_and_an_outage_shows() {
    let mut rig = Rig::start(Options {
        name: "t-5xx",
        ..Options::default()
    })
    .await;
    // 30 % of calls fail: retries carry the sweeps through.
    rig.sim().set_faults(Faults {
        fail_rate: 0.3,
        ..Faults::default()
    });
    rig.rides_out().await;
    let obs = rig
        .until("retries were counted", |_, obs| {
            obs.counter(
                "hss_swr_api_retries_total",
                &[("target", "t-5xx"), ("reason", "server_error")],
            ) > 0.0
        })
        .await;
    assert!(
        obs.counter(
            "hss_swr_api_requests_total",
            &[("target", "t-5xx"), ("code", "500")]
        ) > 0.0
    );
    // Every call fails: the lanes go down with the API's error.
    rig.sim().set_faults(Faults {
        fail_rate: 1.0,
        ..Faults::default()
    });
    rig.goes_down(&["0"], &["malicious", "sweep"], "HTTP 500: HSS.0000")
        .await;
    rig.sim().set_faults(Faults::default());
    rig.recovers().await;
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_with_retry_after_pauses_the_budget_that_long() {
    let mut rig = Rig::start(Options {
        name: "t-429ra",
        ..Options::default()
    })
    .await;
    rig.start_throttling();
    rig.sim().set_faults(Faults {
        throttle_rate: 1.0,
        retry_after: Some(2),
        ..Faults::default()
    });
    rig.goes_down(&["0"], &["malicious", "sweep"], "HTTP 429: APIGW.0308")
        .await;
    // Retry-After (2 s, within the longest pause of 5 windows), not one
    // window (500 ms), is how long the budget waits.
    rig.until("the budget pauses for longer than one window", |_, obs| {
        obs.paused_seconds() > WINDOW.as_secs_f64()
    })
    .await;
    rig.sim().set_faults(Faults::default());
    rig.stop_throttling();
    let obs = rig.recovers().await;
    assert!(obs.counter("hss_swr_api_throttled_total", &[("target", "t-429ra")]) > 0.0);
    assert!(
        obs.counter(
            "hss_swr_api_retries_total",
            &[("target", "t-429ra"), ("reason", "throttled")]
        ) > 0.0
    );
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_without_retry_after_pauses_one_window() {
    let mut rig = Rig::start(Options {
        name: "t-429",
        ..Options::default()
    })
    .await;
    rig.start_throttling();
    rig.sim().set_faults(Faults {
        throttle_rate: 1.0,
        ..Faults::default()
    });
    let mut longest_pause: f64 = 0.0;
    rig.change_data();
    rig.until("the lanes go down throttled", |_, obs| {
        longest_pause = longest_pause.max(obs.paused_seconds());
        ["malicious", "sweep"]
            .iter()
            .all(|lane| obs.down_with("t-429", "0", lane, "HTTP 429: APIGW.0308"))
    })
    .await;
    rig.until("the budget was seen paused", |_, obs| {
        longest_pause = longest_pause.max(obs.paused_seconds());
        longest_pause > 0.0
    })
    .await;
    assert!(
        longest_pause <= WINDOW.as_secs_f64(),
        "without Retry-After a 429 pauses one window, saw {longest_pause} s"
    );
    rig.sim().set_faults(Faults::default());
    rig.stop_throttling();
    rig.recovers().await;
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_resets_are_retried_then_reported() {
    let mut rig = Rig::start(Options {
        name: "t-reset",
        ..Options::default()
    })
    .await;
    rig.sim().set_faults(Faults {
        reset_rate: 0.3,
        ..Faults::default()
    });
    rig.rides_out().await;
    rig.sim().set_faults(Faults {
        reset_rate: 1.0,
        ..Faults::default()
    });
    let obs = rig
        .goes_down(&["0"], &["malicious", "sweep"], "request failed")
        .await;
    assert!(
        obs.counter(
            "hss_swr_api_retries_total",
            &[("target", "t-reset"), ("reason", "transport")]
        ) > 0.0
    );
    rig.sim().set_faults(Faults::default());
    rig.recovers().await;
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_hanging_past_the_request_timeout_fail_the_lane() {
    let mut rig = Rig::start(Options {
        name: "t-hang",
        extra: "request_timeout: 1s",
        ..Options::default()
    })
    .await;
    rig.sim().set_faults(Faults {
        hang_rate: 1.0,
        hang: Some(Duration::from_secs(10)),
        ..Faults::default()
    });
    let obs = rig
        .goes_down(&["0"], &["malicious", "sweep"], "no answer within 1s")
        .await;
    assert!(
        obs.counter(
            "hss_swr_api_retries_total",
            &[("target", "t-hang"), ("reason", "timeout")]
        ) > 0.0
    );
    rig.sim().set_faults(Faults::default());
    rig.recovers().await;
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_cut_off_mid_json_are_retried_then_reported() {
    let mut rig = Rig::start(Options {
        name: "t-cut",
        ..Options::default()
    })
    .await;
    rig.sim().set_faults(Faults {
        malformed_rate: 0.3,
        ..Faults::default()
    });
    rig.rides_out().await;
    rig.sim().set_faults(Faults {
        malformed_rate: 1.0,
        ..Faults::default()
    });
    let obs = rig
        .goes_down(&["0"], &["malicious", "sweep"], "malformed page")
        .await;
    assert!(
        obs.counter(
            "hss_swr_api_retries_total",
            &[("target", "t-cut"), ("reason", "malformed")]
        ) > 0.0
    );
    rig.sim().set_faults(Faults::default());
    rig.recovers().await;
    rig.finish().await;
}

fn pad_names(sim: &Simulator, pad: bool) {
    let mut images = sim.images();
    for image in &mut images {
        if pad {
            image.image_name.push_str(&"x".repeat(PAD));
        } else {
            let len = image.image_name.len() - PAD;
            image.image_name.truncate(len);
        }
    }
    sim.set_images(images);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_cap_fails_the_sweep_and_is_not_asked_again() {
    let mut rig = Rig::start(Options {
        name: "t-cap",
        extra: "max_response_bytes: 65536",
        ..Options::default()
    })
    .await;
    // Long image names make every 50-row page larger than 64 KiB (the
    // namespace figures do not change); the malicious lane's page of a few
    // rows still fits.
    pad_names(rig.sim(), true);
    let obs = rig
        .goes_down(
            &["0"],
            &["sweep"],
            "response body larger than the 65536-byte cap",
        )
        .await;
    assert_eq!(obs.up("t-cap", "0", "malicious"), Some(1.0));
    assert_eq!(
        obs.counter(
            "hss_swr_api_retries_total",
            &[("target", "t-cap"), ("reason", "too_large")]
        ),
        0.0,
        "a body over the cap is never retried"
    );
    pad_names(rig.sim(), false);
    rig.recovers().await;
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_num_changing_between_pages_is_counted_and_the_sweep_completes() {
    let mut rig = Rig::start(Options {
        name: "t-drift",
        ..Options::default()
    })
    .await;
    // Later pages report more rows than the first: the extra pages are
    // asked for, come back empty, and the sweep completes.
    rig.sim().set_faults(Faults {
        total_num_drift: 130,
        ..Faults::default()
    });
    rig.rides_out().await;
    rig.until("the change of total_num is counted", |_, o| {
        o.counter(
            "hss_swr_total_changes_total",
            &[("target", "t-drift"), ("lane", "sweep")],
        ) > 0.0
            && o.lane("t-drift", "0", "sweep")["total_changes"]
                .as_u64()
                .is_some_and(|n| n > 0)
    })
    .await;
    rig.sim().set_faults(Faults::default());
    let obs = rig.recovers().await;
    assert_eq!(
        obs.counter("hss_swr_poll_failures_total", &[("target", "t-drift")]),
        0.0,
        "a changing total_num never fails a run"
    );
    rig.finish().await;
}

/// Later pages report fewer rows than the first while the rows are all
/// still there (the simulator's `total_num_drift` below zero): the sweep
/// must still list every row: paging plans up to the largest total any page
/// reported, and only an empty page ends the listing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_num_shrinking_between_pages_loses_no_rows() {
    let mut rig = Rig::start(Options {
        name: "t-shrink",
        ..Options::default()
    })
    .await;
    rig.sim().set_faults(Faults {
        total_num_drift: -120,
        ..Faults::default()
    });
    rig.rides_out().await;
    rig.sim().set_faults(Faults::default());
    rig.recovers().await;
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_duplicated_across_pages_count_once() {
    let mut rig = Rig::start(Options {
        name: "t-dup",
        ..Options::default()
    })
    .await;
    rig.sim().set_faults(Faults {
        duplicate_rows: true,
        ..Faults::default()
    });
    rig.rides_out().await;
    rig.until("duplicates are counted", |_, o| {
        o.counter(
            "hss_swr_duplicate_rows_total",
            &[("target", "t-dup"), ("lane", "sweep")],
        ) > 0.0
    })
    .await;
    rig.sim().set_faults(Faults::default());
    let obs = rig.recovers().await;
    assert_eq!(
        obs.counter("hss_swr_poll_failures_total", &[("target", "t-dup")]),
        0.0
    );
    rig.finish().await;
}

fn token_options(name: &'static str) -> Options {
    Options {
        name,
        iam: true,
        // Tokens live 1 s (fetched again 300 ms in, see REFRESH_FLOOR):
        // several expire during a case.
        faulty_sim: |config| config.iam_token_lifetime = Duration::from_secs(1),
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_that_expire_during_sweeps_are_replaced_in_time() {
    let mut rig = Rig::start(token_options("t-token")).await;
    let issued = rig.sim().stats().iam_tokens_issued;
    // Sweeps run back to back while tokens expire every second; the data
    // changes in between.
    rig.rides_out().await;
    rig.until("tokens are replaced as they expire", |rig, _| {
        rig.sim().stats().iam_tokens_issued >= issued + 3
    })
    .await;
    let obs = rig.recovers().await;
    assert_eq!(
        rig.sim().stats().count_status(401),
        0,
        "a token is replaced before it expires, never after a refusal"
    );
    assert_eq!(
        obs.counter("hss_swr_poll_failures_total", &[("target", "t-token")]),
        0.0,
        "no lane run failed while tokens expired"
    );
    assert!(
        !logs_of("t-token")
            .iter()
            .any(|l| l.to_string().contains(IAM_PASSWORD))
    );
    rig.finish().await;
}

/// A token that dies in the middle of a sweep (revoked, as when the password
/// changes): the calls in flight get 401, a new token is fetched, the sweep
/// goes on. Several calls in flight may get the 401 at once: each may fetch
/// a new token once, and none puts the target on hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_mid_sweep_is_replaced_without_a_hold() {
    let mut rig = Rig::start(Options {
        name: "t-revoke",
        iam: true,
        // A budget the sweeps saturate: a retry waits for its slot while
        // the other call in flight gets its 401.
        limit: 6,
        ..Options::default()
    })
    .await;
    let scopes = rig.exporter().scopes.clone();
    let scope = scopes
        .list()
        .into_iter()
        .find(|s| s.scope.target == "t-revoke")
        .unwrap();
    eventually("a sweep of t-revoke is running", || {
        scope.lane_status(Lane::Sweep).running_since.is_some()
    })
    .await;
    rig.sim().revoke_iam_tokens();
    rig.rides_out().await;
    let obs = rig.recovers().await;
    assert!(
        rig.sim().stats().count_status(401) >= 1,
        "the revoked token was refused"
    );
    assert!(
        obs.counter(
            "hss_swr_api_retries_total",
            &[("target", "t-revoke"), ("reason", "unauthorized")]
        ) >= 1.0
    );
    assert_eq!(
        obs.counter("hss_swr_poll_failures_total", &[("target", "t-revoke")]),
        0.0,
        "no lane run failed: the revoked token was replaced"
    );
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_forbidden_enterprise_project_fails_alone() {
    let mut rig = Rig::start(Options {
        name: "t-403",
        eps: &["0", "ep-finance"],
        ..Options::default()
    })
    .await;
    rig.sim().set_faults(Faults {
        forbidden_eps: vec!["ep-finance".into()],
        ..Faults::default()
    });
    rig.goes_down(
        &["ep-finance"],
        &["malicious", "sweep"],
        "HTTP 403: HSS.0013",
    )
    .await;
    rig.sim().set_faults(Faults::default());
    let obs = rig.recovers().await;
    // A 403 is not retried: one refused call per failed run.
    let failures: u64 = ["malicious", "sweep"]
        .iter()
        .map(|lane| {
            obs.lane("t-403", "ep-finance", lane)["failures"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert!(failures >= 2);
    assert_eq!(rig.sim().stats().count_status(403) as u64, failures);
    assert_eq!(
        obs.counter(
            "hss_swr_poll_failures_total",
            &[("target", "t-403"), ("enterprise_project_id", "0")]
        ),
        0.0,
        "the other enterprise project never failed"
    );
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulator_stopped_and_started_again_is_picked_up() {
    let mut rig = Rig::start(Options {
        name: "t-restart",
        ..Options::default()
    })
    .await;
    let running = rig.faulty.take().unwrap();
    let addr = running.addr;
    // The stopped simulator's object still holds the data; the change goes
    // into the new one below.
    let sim = running.sim.clone();
    rig.retired.extend(running.stop().await);
    rig.faulty = Some(Sim {
        sim,
        addr,
        stop: CancellationToken::new(),
        task: None,
    });
    rig.goes_down(&["0"], &["malicious", "sweep"], "request failed")
        .await;
    // Started again on the same address: a new process with the new data.
    let stopped = rig.faulty.take().unwrap();
    let fresh = Simulator::new(rig.faulty_config.clone());
    fresh.set_images(rig.faulty_cur.clone());
    drop(stopped);
    rig.faulty = Some(Sim::start(fresh, addr).await);
    rig.recovers().await;
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_holds_over_a_whole_faulty_run() {
    // A budget the sweeps saturate, and every fault at once.
    let mut rig = Rig::start(Options {
        name: "t-budget",
        limit: 10,
        extra: "request_timeout: 500ms",
        ..Options::default()
    })
    .await;
    rig.start_throttling();
    rig.sim().set_faults(Faults {
        fail_rate: 0.1,
        throttle_rate: 0.1,
        reset_rate: 0.05,
        malformed_rate: 0.05,
        hang_rate: 0.05,
        hang: Some(Duration::from_millis(1500)),
        retry_after: Some(1),
        total_num_drift: 60,
        duplicate_rows: true,
        ..Faults::default()
    });
    rig.change_data();
    let scopes = rig.exporter().scopes.clone();
    let scope = scopes
        .list()
        .into_iter()
        .find(|s| s.scope.target == "t-budget")
        .unwrap();
    let runs = scope.lane_status(Lane::Sweep).runs;
    rig.until("eight sweeps ran under faults", |_, _| {
        scope.lane_status(Lane::Sweep).runs >= runs + 8
    })
    .await;
    rig.sim().set_faults(Faults::default());
    rig.stop_throttling();
    let obs = rig.recovers().await;
    assert!(
        obs.counter(
            "hss_swr_api_budget_wait_seconds_total",
            &[("target", "t-budget-ok")]
        ) > 0.0,
        "the budget was saturated"
    );
    rig.finish().await;
}
