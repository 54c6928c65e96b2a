//! What the benchmarks that measure the exporter's own CPU and memory share:
//! the simulator in a separate process (the benchmark binary again, with
//! `--sim`), so that its data and work stay out of the measurement, and the
//! process's CPU seconds and memory from /proc.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};

use hss_swr_exporter::simulator::{SimConfig, SimImage, Simulator};

pub const AK: &str = "BENCHAK";
pub const SK: &str = "bench-secret";
/// Clock ticks per second of /proc/self/stat (`getconf CLK_TCK`).
const TICKS: f64 = 100.0;

/// User + system CPU seconds of this process so far.
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields[11].parse().expect("utime");
    let stime: f64 = fields[12].parse().expect("stime");
    (utime + stime) / TICKS
}

/// A `Vm...` line of /proc/self/status, in KiB.
pub fn status_kib(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{key} in /proc/self/status"))
}

/// The simulator process (`--sim`): serves `rows` without a quota until it
/// is killed, after printing `ADDRESS host:port`.
pub fn serve_simulator(rows: Vec<SimImage>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let sim = Simulator::new(SimConfig {
            images: 0,
            quota: None,
            credentials: vec![(AK.into(), SK.into())],
            ..SimConfig::default()
        });
        sim.set_images(rows);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("ADDRESS {}", listener.local_addr().expect("address"));
        sim.serve(listener, std::future::pending())
            .await
            .expect("serve");
    });
}

/// The simulator's process; killed when dropped.
pub struct SimProcess {
    child: Child,
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts this benchmark again as the simulator of `images` rows
/// (`--sim IMAGES`); returns it and its base URL.
pub fn start_simulator(images: usize) -> (SimProcess, String) {
    let mut child = Command::new(std::env::current_exe().expect("this benchmark"))
        .args(["--sim", &images.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the simulator");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the simulator's address");
    let address = line
        .strip_prefix("ADDRESS ")
        .expect("ADDRESS line")
        .trim()
        .to_string();
    (SimProcess { child }, format!("http://{address}"))
}
