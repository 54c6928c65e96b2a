//! Benchmark of the scheduler against the quota, on the built-in simulator
//! over loopback HTTP, with the quota scaled from 5 calls a minute to 5 calls
//! a second (every duration scaled by the same 1/60):
//!
//! - sweep time against the quota's floor (pages / calls per second) and the
//!   429s drawn, at 1,000, 10,000 and 100,000 images;
//! - detection latency: malicious images injected at random moments while
//!   sweeps of 100,000 images keep the budget saturated, measured from the
//!   injection to the counter's increment, in malicious-lane rounds.
//!
//! Run: `cargo bench --bench lanes` (about four minutes), or
//! `cargo bench --bench lanes -- --quick` for 1,000 and 10,000 images only.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hss_swr_exporter::app::Exporter;
use hss_swr_exporter::collect::{Lane, ScopeHandle};
use hss_swr_exporter::config::Config;
use hss_swr_exporter::simulator::{
    Quota, SimConfig, SimImage, Simulator, generate, max_calls_in_window,
};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const AK: &str = "BENCHAK";
const SK: &str = "bench-secret";
const WINDOW: Duration = Duration::from_secs(1);
const CALLS: u32 = 5;

struct Sim {
    sim: Simulator,
    endpoint: String,
    stop: CancellationToken,
}

async fn simulator(images: Vec<SimImage>) -> Sim {
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
    sim.set_images(images);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    let stop = CancellationToken::new();
    tokio::spawn(sim.clone().serve(listener, stop.clone().cancelled_owned()));
    Sim {
        sim,
        endpoint,
        stop,
    }
}

/// `n` private images in 50 namespaces, none malicious.
fn private_images(n: usize) -> Vec<SimImage> {
    let mut images = generate(&SimConfig {
        seed: 3,
        images: n,
        namespaces: 50,
        ..SimConfig::default()
    });
    for (i, image) in images.iter_mut().enumerate() {
        image.image_type = "private_image".into();
        image.enterprise_project_id = "0".into();
        image.instance_name.clear();
        image.instance_id.clear();
        image.malicious_file_num = 0;
        image.namespace = format!("ns-{:02}", i % 50);
    }
    images
}

fn exporter(endpoint: &str, malicious_interval: &str, poll_interval: &str) -> Exporter {
    let yaml = format!(
        "api_rate_limit: {CALLS}/{}ms
malicious_interval: {malicious_interval}
poll_interval: {poll_interval}
request_timeout: 10s
stale_after: 1h
credentials: {{access_key: {AK}, secret_key: {SK}}}
targets:
  - name: bench
    region: cn-north-4
    project_id: 0123456789abcdef0123456789abcdef
    endpoint: {endpoint}
    enterprise_project_ids: ['0']
    image_types: [private_image]
",
        WINDOW.as_millis()
    );
    let config = Config::parse(&yaml, Path::new("bench.yml"), &|_| None).expect("config");
    Exporter::new(config).expect("exporter")
}

async fn sweep_against_floor(images: usize) {
    let sim = simulator(private_images(images)).await;
    let exporter = exporter(&sim.endpoint, "0", "1h");
    let started = Instant::now();
    assert!(
        exporter.run_lane_once(Lane::Sweep).await,
        "the sweep succeeds"
    );
    let elapsed = started.elapsed();
    let calls = sim.sim.stats().calls;
    let pages = calls.len();
    // The floor as the issue defines it (pages / calls per second), and the
    // least a sliding window allows (the first CALLS pages go at once).
    let floor = Duration::from_secs_f64(pages as f64 * WINDOW.as_secs_f64() / f64::from(CALLS));
    let window_minimum = WINDOW * (pages.div_ceil(CALLS as usize) as u32 - 1);
    let throttled = calls.iter().filter(|c| c.status == 429).count();
    let versus_minimum = if window_minimum.is_zero() {
        "n/a (one burst)".to_string()
    } else {
        format!(
            "{:.3}",
            elapsed.as_secs_f64() / window_minimum.as_secs_f64()
        )
    };
    println!(
        "sweep  {images:>7} images  {pages:>4} pages  {:>8.2} s  floor {:>7.2} s  ratio {:.3}  \
         (sliding-window minimum {:>7.2} s, ratio {versus_minimum})  429s {throttled}  max calls in any window {}",
        elapsed.as_secs_f64(),
        floor.as_secs_f64(),
        elapsed.as_secs_f64() / floor.as_secs_f64(),
        window_minimum.as_secs_f64(),
        max_calls_in_window(&calls, WINDOW),
    );
    sim.stop.cancel();
}

fn detected(scope: &ScopeHandle) -> u64 {
    scope.detector().detected.values().sum()
}

async fn detection_latency(images: usize, injections: usize) {
    let sim = simulator(private_images(images)).await;
    let round = WINDOW;
    let exporter = exporter(&sim.endpoint, &format!("{}ms", round.as_millis()), "1s");
    let scope = Arc::clone(&exporter.scopes().list()[0]);
    let cancel = CancellationToken::new();
    let lanes = exporter.spawn(&cancel);
    // Let the first malicious round set the baseline and the sweep start.
    while !scope.detector().baseline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut rounds = Vec::new();
    for i in 0..injections {
        let pause = Duration::from_millis(700 + (i as u64 * 379) % 1300);
        tokio::time::sleep(pause).await;
        let before = detected(&scope);
        let injected = Instant::now();
        sim.sim.set_malicious(
            &format!("ns-{:02}", i % 50),
            &format!("evil-{i}"),
            "1",
            "private_image",
            "0",
            1,
        );
        while detected(&scope) == before {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        rounds.push(injected.elapsed().as_secs_f64() / round.as_secs_f64());
    }
    let sweep = scope.lane_status(Lane::Sweep);
    cancel.cancel();
    drop(lanes);
    let calls = sim.sim.stats().calls;
    let throttled = calls.iter().filter(|c| c.status == 429).count();
    let mean = rounds.iter().sum::<f64>() / rounds.len() as f64;
    let max = rounds.iter().cloned().fold(0.0, f64::max);
    println!(
        "detect {images:>7} images  {injections} injections during sweeps  latency in lane rounds: mean {mean:.3}  max {max:.3}  \
         (round {} ms; sweeps finished {}, running {}; 429s {throttled}; max calls in any window {})",
        round.as_millis(),
        sweep.runs,
        sweep.running_since.is_some(),
        max_calls_in_window(&calls, WINDOW),
    );
    sim.stop.cancel();
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "quota {CALLS} calls per {} ms (5 a minute scaled by 1/60); simulator latency 5 ms; loopback HTTP",
        WINDOW.as_millis()
    );
    runtime.block_on(async {
        let sizes: &[usize] = if quick {
            &[1_000, 10_000]
        } else {
            &[1_000, 10_000, 100_000]
        };
        for &images in sizes {
            sweep_against_floor(images).await;
        }
        let (images, injections) = if quick { (10_000, 5) } else { (100_000, 20) };
        detection_latency(images, injections).await;
    });
}
