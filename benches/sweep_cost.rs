//! Benchmark of what one sweep costs the exporter: CPU seconds and peak
//! resident memory (VmHWM) for a sweep round over 1,000, 10,000 and 100,000
//! images (the three SWR image types of one enterprise-project setting,
//! swept together as the daemon does).
//!
//! The simulator runs as a separate process (`hss-swr-exporter simulate`,
//! the release binary, with no quota), so this process holds only the
//! exporter; each size is measured in a fresh child process of this
//! benchmark, so that the peak of one size does not hide the next. CPU is the
//! process's user + system time from /proc/self/stat around the sweep; the
//! budget is generous, so the sweep is bound by CPU and loopback HTTP, not by
//! the quota (benches/lanes.rs measures sweeps against the quota).
//!
//! Run: `cargo bench --bench sweep_cost` (about a minute), or
//! `cargo bench --bench sweep_cost -- --quick` for 1,000 and 10,000 images.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hss_swr_exporter::app::Exporter;
use hss_swr_exporter::collect::Lane;
use hss_swr_exporter::config::Config;
use hss_swr_exporter::simulator::{SimConfig, generate};

const AK: &str = "BENCHAK";
const SK: &str = "bench-secret";
const TYPES: [&str; 3] = ["private_image", "shared_image", "instance_image"];
const NAMESPACES: usize = 100;
const SEED: u64 = 5;
/// Clock ticks per second of /proc/self/stat (`getconf CLK_TCK`).
const TICKS: f64 = 100.0;
const CPU_TARGET: f64 = 0.5;
const RSS_TARGET_MIB: f64 = 48.0;

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields[11].parse().expect("utime");
    let stime: f64 = fields[12].parse().expect("stime");
    (utime + stime) / TICKS
}

/// A `Vm...` line of /proc/self/status, in KiB.
fn status_kib(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{key} in /proc/self/status"))
}

/// How many rows the simulator makes of the listed types for `total` rows
/// (it also makes images of other types).
fn listed(total: usize) -> usize {
    generate(&SimConfig {
        seed: SEED,
        images: total,
        namespaces: NAMESPACES,
        ..SimConfig::default()
    })
    .iter()
    .filter(|r| TYPES.contains(&r.image_type.as_str()))
    .count()
}

/// The simulator size whose listed types hold at least `wanted` images.
fn simulator_size(wanted: usize) -> usize {
    let mut total = wanted;
    loop {
        let have = listed(total);
        if have >= wanted {
            return total;
        }
        total += (wanted - have) * 13 / 10 + 1;
    }
}

struct SimProcess {
    child: Child,
    log: PathBuf,
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn start_simulator(images: usize) -> (SimProcess, String) {
    let log = std::env::temp_dir().join(format!("hss-bench-sim-{}.log", std::process::id()));
    let child = Command::new(env!("CARGO_BIN_EXE_hss-swr-exporter"))
        .args(["simulate", "--listen", "127.0.0.1:0", "--quota", "none"])
        .args(["--images", &images.to_string()])
        .args(["--namespaces", &NAMESPACES.to_string()])
        .args(["--seed", &SEED.to_string(), "--access-key", AK])
        .env("HSS_SWR_SIM_SECRET_KEY", SK)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("simulator log"))
        .spawn()
        .expect("start the simulator");
    let process = SimProcess { child, log };
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(&process.log).unwrap_or_default();
        if let Some(address) = text
            .lines()
            .find(|l| l.contains("HSS simulator listening"))
            .and_then(|l| l.split(" address=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
        {
            return (process, format!("http://{address}"));
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the simulator did not start: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn exporter(endpoint: &str, image_metrics: bool) -> Exporter {
    let yaml = format!(
        "api_rate_limit: 100000/1s
image_metrics: {image_metrics}
malicious_interval: 0
poll_interval: 1h
request_timeout: 60s
credentials: {{access_key: {AK}, secret_key: {SK}}}
targets:
  - name: bench
    region: cn-north-4
    project_id: 0123456789abcdef0123456789abcdef
    endpoint: {endpoint}
    enterprise_project_ids: [all_granted_eps]
    image_types: [{}]
",
        TYPES.join(", ")
    );
    let config = Config::parse(&yaml, Path::new("bench.yml"), &|_| None).expect("config");
    Exporter::new(config).expect("exporter")
}

/// Measures one size in this (fresh) process and prints one `RESULT` line.
fn child(images: usize, simulator_images: usize, image_metrics: bool) {
    let (_sim, endpoint) = start_simulator(simulator_images);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let exporter = exporter(&endpoint, image_metrics);
    let before_rss = status_kib("VmRSS:");
    let mut line = format!("RESULT images={images} rss_before_kib={before_rss}");
    // The first sweep, then enough steady-state sweeps (the previous result
    // still published while the next one is built) that the 10 ms ticks of
    // the CPU clock do not matter.
    let steady = (200_000 / images.max(1)).clamp(3, 50);
    for (round, sweeps) in [(1, 1), (2, steady)] {
        let cpu = cpu_seconds();
        let started = Instant::now();
        for _ in 0..sweeps {
            assert!(
                runtime.block_on(exporter.run_lane_once(Lane::Sweep)),
                "the sweep succeeds"
            );
        }
        let wall = started.elapsed().as_secs_f64() / sweeps as f64;
        let cpu = (cpu_seconds() - cpu) / sweeps as f64;
        let swept: u64 = exporter
            .scopes()
            .list()
            .iter()
            .map(|s| s.lane_status(Lane::Sweep).last_images)
            .sum();
        let pages: u64 = exporter
            .scopes()
            .list()
            .iter()
            .map(|s| s.lane_status(Lane::Sweep).last_pages)
            .sum();
        line.push_str(&format!(
            " swept{round}={swept} pages{round}={pages} cpu{round}={cpu:.4} wall{round}={wall:.4} hwm{round}_kib={} sweeps{round}={sweeps}",
            status_kib("VmHWM:")
        ));
    }
    let renders = 10;
    let cpu = cpu_seconds();
    let mut bytes = 0;
    for _ in 0..renders {
        // Forget the rendered series, as a newly published result does.
        exporter.metrics().set_image_metrics(image_metrics);
        bytes = exporter.metrics().render().len();
    }
    line.push_str(&format!(
        " render_cpu={:.4} render_bytes={bytes} rss_after_kib={}",
        (cpu_seconds() - cpu) / f64::from(renders),
        status_kib("VmRSS:")
    ));
    println!("{line}");
}

fn field(line: &str, key: &str) -> f64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{key} in {line}"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(
            args[i + 1]
                .parse()
                .expect("--child IMAGES SIMULATOR_IMAGES"),
            args[i + 2]
                .parse()
                .expect("--child IMAGES SIMULATOR_IMAGES"),
            args.iter().any(|a| a == "--image-metrics"),
        );
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    // (images, image_metrics): the default configuration, and the 100,000
    // images again with per-image series on.
    let sizes: &[(usize, bool)] = if quick {
        &[(1_000, false), (10_000, false)]
    } else {
        &[
            (1_000, false),
            (10_000, false),
            (100_000, false),
            (100_000, true),
        ]
    };
    println!(
        "sweep cost: the exporter's CPU (user+system, /proc/self/stat) and peak RSS (VmHWM) per sweep round \
         of the three SWR image types, simulator in a separate process, no quota; each size in a fresh process"
    );
    println!(
        "{:>8} {:>9} {:>6} | {:>9} {:>9} {:>8} | {:>9} {:>9} | {:>10} {:>10} | {:>9}",
        "images",
        "per-image",
        "pages",
        "cpu first",
        "cpu next",
        "wall next",
        "RSS start",
        "peak RSS",
        "exposition",
        "render cpu",
        "CPU/1k img"
    );
    let exe = std::env::current_exe().expect("this benchmark");
    let mut largest = String::new();
    for &(images, image_metrics) in sizes {
        let mut command = Command::new(&exe);
        if image_metrics {
            command.arg("--image-metrics");
        }
        let out = command
            // The simulator's size is worked out here, so that the measuring
            // process never holds the generated rows.
            .args(["--child", &images.to_string()])
            .arg(simulator_size(images).to_string())
            .stderr(Stdio::inherit())
            .output()
            .expect("run a measurement");
        assert!(
            out.status.success(),
            "measurement of {images} images failed"
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.starts_with("RESULT"))
            .expect("a RESULT line")
            .to_string();
        let mib = |kib: f64| kib / 1024.0;
        println!(
            "{:>8} {:>9} {:>6} | {:>9.3} {:>9.3} {:>7.3}s | {:>5.1} MiB {:>5.1} MiB | {:>6.0} KiB {:>9.3}s | {:>9.4}",
            field(&line, "swept2"),
            if image_metrics { "on" } else { "off" },
            field(&line, "pages2"),
            field(&line, "cpu1"),
            field(&line, "cpu2"),
            field(&line, "wall2"),
            mib(field(&line, "rss_before_kib")),
            mib(field(&line, "hwm2_kib")),
            field(&line, "render_bytes") / 1024.0,
            field(&line, "render_cpu"),
            field(&line, "cpu2") / field(&line, "swept2") * 1000.0,
        );
        if !image_metrics {
            largest = line;
        }
    }
    let last = largest;
    let cpu = field(&last, "cpu1").max(field(&last, "cpu2"));
    let peak = field(&last, "hwm2_kib") / 1024.0;
    println!(
        "largest size, default configuration: {} images, CPU per sweep {cpu:.3} s (target < {CPU_TARGET} s: {}), peak RSS {peak:.1} MiB (target < {RSS_TARGET_MIB} MiB: {})",
        field(&last, "swept2"),
        if cpu < CPU_TARGET { "met" } else { "MISSED" },
        if peak < RSS_TARGET_MIB {
            "met"
        } else {
            "MISSED"
        },
    );
    println!(
        "reproduce: cargo bench --bench sweep_cost{}",
        if quick { " -- --quick" } else { "" }
    );
}
