//! The `demo` subcommand: the built-in simulator and the exporter in one
//! process (only with the default `simulator` feature).
//!
//! Place in the data flow: on top, with the rest of [`crate::app`].

use super::*;

/// The access key the demo's simulator accepts (not a real credential).
pub const DEMO_ACCESS_KEY: &str = "DEMOACCESSKEY";
/// The secret key the demo's simulator accepts (not a real credential).
pub const DEMO_SECRET_KEY: &str = "demo-secret-key";

/// The configuration the demo runs with, against a simulator at `endpoint`.
/// The quota is 5 calls a second instead of 5 a minute, so a first sweep
/// takes seconds instead of minutes.
pub fn demo_config_yaml(endpoint: &str) -> String {
    format!(
        "api_rate_limit: 5/1s
poll_interval: 30s
request_timeout: 10s
stale_after: 10m
credentials:
  access_key: {DEMO_ACCESS_KEY}
  secret_key: {DEMO_SECRET_KEY}
targets:
  - name: demo
    region: cn-north-4
    project_id: 0123456789abcdef0123456789abcdef
    endpoint: {endpoint}
    enterprise_project_ids: [all_granted_eps]
    image_types: [private_image, shared_image, instance_image]
  - name: demo-finance
    region: cn-north-4
    project_id: 0123456789abcdef0123456789abcdef
    endpoint: {endpoint}
    enterprise_project_ids: [ep-finance]
    image_types: [private_image]
"
    )
}

/// The demo's simulator: 2,400 synthetic images in 12 namespaces, every scan
/// status, failed scans, malicious files and enterprise-edition instances,
/// behind a quota of 5 calls a second.
pub fn demo_simulator_config() -> crate::simulator::SimConfig {
    use crate::simulator::{Quota, SimConfig};
    SimConfig {
        seed: 42,
        images: 2400,
        namespaces: 12,
        quota: Some(Quota {
            calls: 5,
            window: Duration::from_secs(1),
        }),
        latency: Duration::from_millis(20),
        credentials: vec![(DEMO_ACCESS_KEY.to_string(), DEMO_SECRET_KEY.to_string())],
        ..SimConfig::default()
    }
}

/// The churn of the demo's simulator: 30 image changes a minute (rescans,
/// pushes and their scans, deletes), three every 6 seconds in one namespace,
/// so that freshly scanned and pushed images show on `/metrics`.
/// [`demo_simulator_config`] leaves churn off, so its data stays what
/// `generate` makes; [`run_demo`] adds this.
pub fn demo_churn() -> crate::simulator::Churn {
    crate::simulator::Churn::new(30, Duration::from_secs(60))
}

/// Runs the built-in simulator, with [`demo_churn`], and the exporter
/// against it in one process, serving metrics on `listener`, until
/// `shutdown` completes.
pub async fn run_demo(
    listener: TcpListener,
    telemetry_path: &str,
    web_config: Option<std::path::PathBuf>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    run_demo_with(
        crate::simulator::SimConfig {
            churn: Some(demo_churn()),
            ..demo_simulator_config()
        },
        listener,
        telemetry_path,
        web_config,
        shutdown,
    )
    .await
}

/// [`run_demo`] with a simulator of one's choice.
pub async fn run_demo_with(
    simulator: crate::simulator::SimConfig,
    listener: TcpListener,
    telemetry_path: &str,
    web_config: Option<std::path::PathBuf>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let images = simulator.images;
    let churn = crate::simulator::ChurnSetting(simulator.churn).to_string();
    let simulator = crate::simulator::Simulator::new(simulator);
    let sim_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io("cannot start the simulator"))?;
    let sim_address = sim_listener.local_addr().map_err(io("simulator address"))?;
    let stop_simulator = CancellationToken::new();
    let simulator_task =
        tokio::spawn(simulator.serve(sim_listener, stop_simulator.clone().cancelled_owned()));
    let endpoint = format!("http://{sim_address}");
    let yaml = demo_config_yaml(&endpoint);
    let config = Config::parse(&yaml, Path::new("demo"), &|_| None).map_err(|e| Error::Io {
        context: "demo configuration".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let address = listener.local_addr().map_err(io("listener address"))?;
    tracing::info!(
        simulator = %endpoint,
        metrics = %format!("http://localhost:{}{telemetry_path}", address.port()),
        images,
        %churn,
        "demo: the exporter polls the built-in simulator (synthetic images, quota 5 calls/s)"
    );
    let exporter = Exporter::new(config)?;
    let result = run_daemon(
        exporter,
        listener,
        telemetry_path,
        None,
        web_config,
        shutdown,
    )
    .await;
    stop_simulator.cancel();
    let _ = simulator_task.await;
    result
}
