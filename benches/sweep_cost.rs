//! Benchmark of what the first publication costs the exporter at the size
//! users have: 10,000 and 100,000 images in 2,000 namespaces in each of the
//! three SWR image types, with a target name and an enterprise project id
//! (36 characters) as long as real ones. It reports the CPU seconds from
//! start to the first complete publication (the sweep of the three image
//! types, swept together as the daemon does, then the exposition rendered and
//! compressed, as the daemon's background rendering does), the same for
//! steady-state rounds (the previous result still published), and peak
//! resident memory (VmHWM).
//!
//! The simulator runs in a separate process (this benchmark again, with
//! `--sim`, no quota), so the measuring process holds only the exporter; each
//! size is measured in a fresh child process of this benchmark, so that the
//! peak of one size does not hide the next. CPU is the process's user +
//! system time from /proc/self/stat; the budget is generous, so the sweep is
//! bound by CPU and loopback HTTP, not by the quota (benches/lanes.rs
//! measures sweeps against the quota).
//!
//! Run: `cargo bench --bench sweep_cost` (about a minute), or
//! `cargo bench --bench sweep_cost -- --quick` for 100,000 images only.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use support::{AK, SK, cpu_seconds, start_simulator, status_kib};

use hss_swr_exporter::app::Exporter;
use hss_swr_exporter::collect::Lane;
use hss_swr_exporter::config::Config;
use hss_swr_exporter::simulator::{SimConfig, SimImage, generate};

const TYPES: [&str; 3] = ["private_image", "shared_image", "instance_image"];
/// The size users have: 2,000 namespaces in each of the three image types
/// (`HSS_BENCH_NAMESPACES` sets another number, for comparison).
const NAMESPACES: usize = 2_000;

fn namespaces() -> usize {
    std::env::var("HSS_BENCH_NAMESPACES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(NAMESPACES)
}
const SEED: u64 = 5;
/// A target name and an enterprise project id as long as real ones.
const TARGET: &str = "prod-cn-north-4-container-registry";
const ENTERPRISE_PROJECT: &str = "3f2b8c1e-7a4d-4e9b-a6c5-0d1e2f3a4b5c";
const CPU_TARGET: f64 = 0.5;
const RSS_TARGET_MIB: f64 = 48.0;

/// The simulator's rows for `total` rows, every one in [`ENTERPRISE_PROJECT`].
fn rows(total: usize) -> Vec<SimImage> {
    let mut rows = generate(&SimConfig {
        seed: SEED,
        images: total,
        namespaces: namespaces(),
        ..SimConfig::default()
    });
    for row in &mut rows {
        row.enterprise_project_id = ENTERPRISE_PROJECT.to_string();
    }
    rows
}

/// How many rows the simulator makes of the listed types for `total` rows
/// (it also makes images of other types).
fn listed(total: usize) -> usize {
    rows(total)
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

fn exporter(endpoint: &str, image_metrics: bool) -> Exporter {
    let yaml = format!(
        "api_rate_limit: 100000/1s
image_metrics: {image_metrics}
malicious_interval: 0
poll_interval: 1h
request_timeout: 60s
credentials: {{access_key: {AK}, secret_key: {SK}}}
targets:
  - name: {TARGET}
    region: cn-north-4
    project_id: 0123456789abcdef0123456789abcdef
    endpoint: {endpoint}
    enterprise_project_ids: ['{ENTERPRISE_PROJECT}']
    image_types: [{}]
",
        TYPES.join(", ")
    );
    let config = Config::parse(&yaml, Path::new("bench.yml"), &|_| None).expect("config");
    Exporter::new(config).expect("exporter")
}

fn swept(exporter: &Exporter, what: impl Fn(&hss_swr_exporter::collect::LaneStatus) -> u64) -> u64 {
    exporter
        .scopes()
        .list()
        .iter()
        .map(|s| what(&s.lane_status(Lane::Sweep)))
        .sum()
}

/// Measures one size in this (fresh) process and prints one `RESULT` line.
fn child(images: usize, simulator_images: usize, image_metrics: bool) {
    let (_sim, endpoint) = start_simulator(simulator_images);
    let before_rss = status_kib("VmRSS:");
    // From start to the first complete publication: the sweep of the three
    // image types, then the exposition rendered and compressed, as the
    // daemon's background rendering does within a second.
    let cpu = cpu_seconds();
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let exporter = exporter(&endpoint, image_metrics);
    assert!(
        runtime.block_on(exporter.run_lane_once(Lane::Sweep)),
        "the sweep succeeds"
    );
    exporter.metrics().prerender();
    let mut line = format!(
        "RESULT images={images} rss_before_kib={before_rss} swept1={} pages1={} cpu1={:.4} wall1={:.4} hwm1_kib={}",
        swept(&exporter, |s| s.last_images),
        swept(&exporter, |s| s.last_pages),
        cpu_seconds() - cpu,
        started.elapsed().as_secs_f64(),
        status_kib("VmHWM:")
    );
    // Steady state: the previous result stays published (and rendered)
    // while the next one is built, rendered and compressed.
    let sweeps = (200_000 / images.max(1)).clamp(3, 20);
    let cpu = cpu_seconds();
    let started = Instant::now();
    for _ in 0..sweeps {
        assert!(
            runtime.block_on(exporter.run_lane_once(Lane::Sweep)),
            "the sweep succeeds"
        );
        exporter.metrics().prerender();
    }
    line.push_str(&format!(
        " swept2={} pages2={} cpu2={:.4} wall2={:.4} hwm2_kib={} sweeps2={sweeps}",
        swept(&exporter, |s| s.last_images),
        swept(&exporter, |s| s.last_pages),
        (cpu_seconds() - cpu) / sweeps as f64,
        started.elapsed().as_secs_f64() / sweeps as f64,
        status_kib("VmHWM:")
    ));
    let renders = 10;
    let cpu = cpu_seconds();
    for _ in 0..renders {
        // Forget the rendered series, as a newly published result does.
        exporter.metrics().set_image_metrics(image_metrics);
        exporter.metrics().prerender();
    }
    let render_cpu = (cpu_seconds() - cpu) / f64::from(renders);
    // A plain scrape front-codes the text (kept for the next plain
    // scrapes) and writes it out piece by piece.
    let namespace = exporter.metrics().namespace_text();
    let sent: usize = namespace.plain().map(|piece| piece.len()).sum();
    assert_eq!(sent, namespace.plain_len());
    line.push_str(&format!(" hwm3_kib={}", status_kib("VmHWM:")));
    let text = exporter.metrics().render();
    line.push_str(&format!(
        " render_cpu={render_cpu:.4} render_bytes={} series={} gzip_bytes={} rss_after_kib={}",
        text.len(),
        text.lines().filter(|l| !l.starts_with('#')).count(),
        namespace.gzip().len(),
        status_kib("VmRSS:")
    ));
    drop(text);
    let plain = namespace.text();
    // What the compression level costs: the namespace text compressed
    // whole, at the fastest level and at the default one.
    for (name, level) in [
        ("fast", flate2::Compression::fast()),
        ("default", flate2::Compression::default()),
    ] {
        use std::io::Write as _;
        let cpu = cpu_seconds();
        let started = Instant::now();
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), level);
        encoder.write_all(&plain).expect("gzip");
        let bytes = encoder.finish().expect("gzip").len();
        line.push_str(&format!(
            " gzip_{name}_cpu={:.4} gzip_{name}_wall={:.4} gzip_{name}_bytes={bytes}",
            cpu_seconds() - cpu,
            started.elapsed().as_secs_f64()
        ));
    }
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
    if let Some(i) = args.iter().position(|a| a == "--sim") {
        support::serve_simulator(rows(args[i + 1].parse().expect("--sim IMAGES")));
        return;
    }
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
        &[(100_000, false)]
    } else {
        &[(10_000, false), (100_000, false), (100_000, true)]
    };
    println!(
        "sweep cost: the exporter's CPU (user+system, /proc/self/stat) and peak RSS (VmHWM), {} namespaces \
         in each of the three SWR image types, target {TARGET:?}, enterprise project {ENTERPRISE_PROJECT:?}; \
         simulator in a separate process, no quota; each size in a fresh process",
        namespaces()
    );
    println!(
        "{:>8} {:>9} {:>6} | {:>11} {:>9} {:>9} | {:>9} {:>9} {:>9} | {:>7} {:>10} {:>8} {:>10}",
        "images",
        "per-image",
        "pages",
        "cpu to pub",
        "cpu next",
        "wall next",
        "RSS start",
        "peak 1st",
        "peak",
        "series",
        "exposition",
        "gzip",
        "render+gz"
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
            "{:>8} {:>9} {:>6} | {:>10.3}s {:>8.3}s {:>8.3}s | {:>5.1} MiB {:>5.1} MiB {:>5.1} MiB | {:>7} {:>6.0} KiB {:>4.0} KiB {:>9.3}s",
            field(&line, "swept2"),
            if image_metrics { "on" } else { "off" },
            field(&line, "pages2"),
            field(&line, "cpu1"),
            field(&line, "cpu2"),
            field(&line, "wall2"),
            mib(field(&line, "rss_before_kib")),
            mib(field(&line, "hwm1_kib")),
            mib(field(&line, "hwm2_kib")),
            field(&line, "series"),
            field(&line, "render_bytes") / 1024.0,
            field(&line, "gzip_bytes") / 1024.0,
            field(&line, "render_cpu"),
        );
        println!(
            "{:>8} peak RSS after a plain scrape too: {:.1} MiB",
            "",
            mib(field(&line, "hwm3_kib")),
        );
        println!(
            "{:>8} compressing the namespace text whole: fastest level {:.3} s CPU ({:.3} s wall), {:.0} KiB; default level {:.3} s CPU ({:.3} s wall), {:.0} KiB",
            "",
            field(&line, "gzip_fast_cpu"),
            field(&line, "gzip_fast_wall"),
            field(&line, "gzip_fast_bytes") / 1024.0,
            field(&line, "gzip_default_cpu"),
            field(&line, "gzip_default_wall"),
            field(&line, "gzip_default_bytes") / 1024.0,
        );
        if !image_metrics {
            largest = line;
        }
    }
    let last = largest;
    let cpu = field(&last, "cpu1");
    let peak = field(&last, "hwm2_kib") / 1024.0;
    println!(
        "largest size, default configuration: {} images, CPU from start to first publication {cpu:.3} s (target < {CPU_TARGET} s: {}), peak RSS {peak:.1} MiB (target < {RSS_TARGET_MIB} MiB: {})",
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
